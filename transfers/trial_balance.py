"""The scheduled trial-balance check (run by ``eventstore.verification``).

The totals read model keeps ``balances + in_transit == deposited -
withdrawn`` by construction, so the check does not trust it. At a cut where
the account-balance and transfer read models are caught up (their
checkpoints locked at the partitions' heads), it compares figures kept
independently: the sum of the account balances, the transfers in
``debited``, and external deposits and withdrawals summed in SQL over the
events up to that cut (``selectors.independent_trial_balance``). Any
currency whose figures do not add up is a difference, recorded and mailed
to the operations staff.
"""

from accounts.projections import balances
from eventstore import verification

from .projections import summary
from .selectors import independent_trial_balance

NAME = "transfers.trial_balance"


def check_trial_balance() -> verification.CheckResult:
    with verification.caught_up_cut([balances.name, summary.name]) as cut:
        figures = independent_trial_balance(cut)
    wrong = {c: f for c, f in figures.items() if f["difference"]}
    summary_text = (
        "balanced: " + ", ".join(figures)
        if not wrong
        else "NOT balanced: "
        + "; ".join(
            f"{currency} balances {f['balances']} + in transit {f['in_transit']}"
            f" != deposited {f['deposited']} - withdrawn {f['withdrawn']}"
            for currency, f in wrong.items()
        )
    )
    return verification.CheckResult(
        rows_checked=len(figures),
        differences=len(wrong),
        summary=summary_text if figures else "balanced: no money yet",
        details={
            "cut": {str(p): s for p, s in sorted(cut.items())},
            "currencies": figures,
        },
    )


verification.register_check(NAME, check_trial_balance)
