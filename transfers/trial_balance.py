"""The scheduled trial-balance check (run by ``eventstore.verification``).

The totals read model keeps ``balances + in_transit == deposited -
withdrawn`` by construction, so the check does not trust it. At a cut where
the account-balance, transfer and totals read models are caught up (their
checkpoints locked at the partitions' heads), it compares figures kept
independently: the sum of the account balances, the transfers in
``debited``, and external deposits and withdrawals summed in SQL over the
events up to that cut (``selectors.independent_trial_balance``). Any
currency whose figures do not add up is a difference. So is any currency
where the totals read model (what ``GET /api/totals/`` and the operations
page show, ``selectors.totals_snapshot``) says other than those figures: it
balances by construction, so a wrong row there would otherwise go unseen.
Differences are recorded and mailed to the operations staff.
"""

from accounts.projections import balances
from eventstore import verification

from .projections import summary, totals
from .selectors import independent_trial_balance, totals_snapshot

NAME = "transfers.trial_balance"
FIGURES = ("balances", "in_transit", "deposited", "withdrawn")


def check_trial_balance() -> verification.CheckResult:
    with verification.caught_up_cut([balances.name, summary.name, totals.name]) as cut:
        figures = independent_trial_balance(cut)
        read_model = totals_snapshot()["currencies"]
    unbalanced = {c: f for c, f in figures.items() if f["difference"]}
    drift = totals_drift(figures, read_model)
    problems = []
    if unbalanced:
        problems.append(
            "NOT balanced: "
            + "; ".join(
                f"{currency} balances {f['balances']} + in transit {f['in_transit']}"
                f" != deposited {f['deposited']} - withdrawn {f['withdrawn']}"
                for currency, f in unbalanced.items()
            )
        )
    if drift:
        problems.append(
            "the totals read model disagrees: "
            + "; ".join(
                f"{currency} {name} {values['read_model']} in it"
                f" != {values['independent']} kept independently"
                for currency, names in drift.items()
                for name, values in names.items()
            )
        )
    if problems:
        summary_text = ". ".join(problems)
    elif figures:
        summary_text = "balanced: " + ", ".join(figures)
    else:
        summary_text = "balanced: no money yet"
    return verification.CheckResult(
        rows_checked=len(figures.keys() | read_model.keys()),
        differences=len(unbalanced.keys() | drift.keys()),
        summary=summary_text,
        details={
            "cut": {str(p): s for p, s in sorted(cut.items())},
            "currencies": figures,
            "totals_read_model": read_model,
            "totals_drift": drift,
        },
    )


def totals_drift(figures: dict, read_model: dict) -> dict:
    """Return, per currency and figure, where the totals read model is wrong.

    A currency missing on one side counts as zeros there (accounts opened,
    no money moved yet).
    """
    zeros = dict.fromkeys(FIGURES, 0)
    drift = {}
    for currency in sorted(figures.keys() | read_model.keys()):
        independent = figures.get(currency, zeros)
        found = read_model.get(currency, zeros)
        wrong = {
            name: {"read_model": found[name], "independent": independent[name]}
            for name in FIGURES
            if found[name] != independent[name]
        }
        if wrong:
            drift[currency] = wrong
    return drift


verification.register_check(NAME, check_trial_balance)
