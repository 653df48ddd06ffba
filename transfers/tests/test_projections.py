"""The transfer read model and the trial balance, kept from the events."""

import dataclasses

import pytest

from accounts import services as accounts
from accounts.events import Deposited, Withdrawn
from eventstore import events as event_registry
from eventstore import verification
from eventstore.models import CheckRun
from eventstore.store import append, stream_version
from eventstore.subscriptions import catch_up, get_subscription, rebuild
from eventstore.verification import CheckNotPossible
from transfers import selectors, services, trial_balance
from transfers.models import Totals, TotalsAccount, TransferSummary

from .factories import make_user, open_account, run_process, run_projections

pytestmark = pytest.mark.django_db


def project() -> None:
    catch_up(
        [get_subscription("transfers.summary"), get_subscription("transfers.totals")]
    )


def totals(currency: str = "EUR") -> dict:
    return selectors.totals_snapshot()["currencies"].get(currency)


def assert_balanced(snapshot: dict) -> None:
    for figures in snapshot["currencies"].values():
        assert (
            figures["balances"] + figures["in_transit"]
            == figures["deposited"] - figures["withdrawn"]
        ), figures


@pytest.fixture
def accounts_pair():
    alice, bob = make_user(), make_user()
    return alice, open_account(alice, balance=1000), open_account(bob)


def test_the_summary_follows_a_transfer_to_completion(accounts_pair):
    alice, source, target = accounts_pair
    transfer = services.request_transfer(
        actor=alice,
        from_account=source.id,
        to_account=target.id,
        amount=300,
        reference="rent",
    )
    project()
    row = TransferSummary.objects.get(id=transfer.id)
    assert (row.status, row.amount, row.reference, row.requested_by) == (
        "pending",
        300,
        "rent",
        alice.pk,
    )

    run_process()
    project()

    row.refresh_from_db()
    assert row.status == "completed"
    assert row.created_at <= row.debited_at <= row.completed_at
    assert row.refunded_at is None


def test_a_summary_names_itself_without_its_amount_in_minor_units(accounts_pair):
    alice, source, target = accounts_pair
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=500
    )
    run_projections()

    assert str(TransferSummary.objects.get(id=transfer.id)) == f"Transfer {transfer.id}"


def test_the_summary_shows_a_refund_and_the_failure_reason(accounts_pair):
    alice, source, target = accounts_pair
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    services.transfer_debit(transfer_id=transfer.id)
    accounts.close(account_id=target.id, actor=None)

    run_process()
    project()

    row = TransferSummary.objects.get(id=transfer.id)
    assert (row.status, row.failure_reason) == ("failed", "target_closed")
    assert row.refunded_at is not None


def test_money_in_transit_is_counted_between_debit_and_credit(accounts_pair):
    alice, source, target = accounts_pair
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    services.transfer_debit(transfer_id=transfer.id)
    project()

    assert totals() == {
        "balances": 700,
        "in_transit": 300,
        "deposited": 1000,
        "withdrawn": 0,
    }

    services.transfer_credit(transfer_id=transfer.id)
    project()
    assert totals()["balances"] == 1000
    assert totals()["in_transit"] == 0


def test_the_trial_balance_holds_through_every_kind_of_movement(accounts_pair):
    alice, source, target = accounts_pair
    usd = open_account(alice, currency="USD", balance=50)
    accounts.withdraw(account_id=source.id, amount=100, actor=None)
    accounts.withdraw(account_id=usd.id, amount=20, actor=None)
    transfers = [
        services.request_transfer(
            actor=alice, from_account=source.id, to_account=target.id, amount=amount
        )
        for amount in (200, 300, 5000)
    ]
    services.transfer_debit(transfer_id=transfers[0].id)
    accounts.freeze(account_id=target.id, actor=None)
    project()
    snapshot = selectors.totals_snapshot()
    assert_balanced(snapshot)
    assert snapshot["currencies"]["EUR"]["in_transit"] == 200

    run_process()
    project()

    snapshot = selectors.totals_snapshot()
    assert_balanced(snapshot)
    assert snapshot["currencies"] == {
        "EUR": {"balances": 900, "in_transit": 0, "deposited": 1000, "withdrawn": 100},
        "USD": {"balances": 30, "in_transit": 0, "deposited": 50, "withdrawn": 20},
    }
    assert {int(p) for p in snapshot["position"]} >= set(
        Totals.objects.values_list("partition", flat=True)
    )


def test_a_rebuild_gives_the_same_read_models(accounts_pair):
    alice, source, target = accounts_pair
    for amount in (100, 200, 5000):
        services.request_transfer(
            actor=alice, from_account=source.id, to_account=target.id, amount=amount
        )
    run_process()
    project()
    before = (
        selectors.totals_snapshot()["currencies"],
        sorted(TransferSummary.objects.values_list("id", "status", "failure_reason")),
    )

    rebuild("transfers.totals")
    rebuild("transfers.summary")

    after = (
        selectors.totals_snapshot()["currencies"],
        sorted(TransferSummary.objects.values_list("id", "status", "failure_reason")),
    )
    assert after == before


def test_the_independent_trial_balance_agrees_with_the_totals(accounts_pair):
    alice, source, target = accounts_pair
    accounts.withdraw(account_id=source.id, amount=100, actor=None)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    services.transfer_debit(transfer_id=transfer.id)
    run_projections()

    figures = selectors.independent_trial_balance()

    assert figures == {
        "EUR": {
            "balances": 600,
            "in_transit": 300,
            "deposited": 1000,
            "withdrawn": 100,
            "difference": 0,
        }
    }
    totals = selectors.totals_snapshot()["currencies"]["EUR"]
    assert {k: figures["EUR"][k] for k in totals} == totals


def test_the_independent_sum_reads_the_schema_versions_the_events_are_written_at():
    """A release bumping one of these versions must teach the SQL sum first."""
    assert {
        name: event_registry.current_version(name)
        for name in selectors.SUMMED_SCHEMA_VERSIONS
    } == selectors.SUMMED_SCHEMA_VERSIONS


@dataclasses.dataclass(frozen=True)
class DepositedV0:
    """A deposit as an earlier release might have stored it."""

    value: int


def test_an_event_stored_at_a_schema_the_sum_cannot_read_stops_the_check(
    accounts_pair, a_release
):
    """Its amount (here ``value``) would sum as nothing, or a transfer's leg
    stored under another key as cash: the check says it cannot run instead."""
    _, source, _ = accounts_pair
    a_release("accounts.Deposited", 0, DepositedV0)
    append(source.stream_id, [DepositedV0(value=5)], stream_version(source.stream_id))
    a_release("accounts.Deposited", 1, Deposited)
    event_registry.upcaster("accounts.Deposited", from_version=0)(
        lambda data: {"amount": data["value"]}
    )

    with pytest.raises(CheckNotPossible, match="Deposited at schema version 0"):
        selectors.independent_trial_balance()

    run = verification.run_check(trial_balance.NAME)
    assert run.outcome == CheckRun.Outcome.ERROR
    assert "reads only version 1" in run.summary


def test_a_money_event_class_at_another_version_stops_the_check(db, a_release):
    a_release("accounts.Withdrawn", 2, Withdrawn)

    with pytest.raises(CheckNotPossible, match="Withdrawn at schema version 2"):
        selectors.independent_trial_balance()


def _summary_rows() -> list[tuple]:
    fields = [f.attname for f in TransferSummary._meta.fields]
    return list(TransferSummary.objects.order_by("id").values_list(*fields))


def _totals_rows() -> tuple[list[tuple], list[tuple]]:
    return (
        list(
            Totals.objects.order_by("currency", "partition").values_list(
                *[f.attname for f in Totals._meta.fields if f.name != "id"]
            )
        ),
        list(TotalsAccount.objects.order_by("stream_id").values_list()),
    )


@pytest.mark.parametrize(
    ("name", "read"),
    [("transfers.summary", _summary_rows), ("transfers.totals", _totals_rows)],
)
def test_a_batch_of_mixed_events_gives_the_rows_of_one_event_per_batch(
    accounts_pair, monkeypatch, name, read
):
    # Given transfers that complete, fail at the debit, fail after it (refunded)
    # and stay in transit, beside cash movements in two currencies.
    alice, source, target = accounts_pair
    usd = open_account(alice, currency="USD", balance=50)
    accounts.withdraw(account_id=usd.id, amount=20, actor=None)
    for amount in (100, 5000):
        services.request_transfer(
            actor=alice, from_account=source.id, to_account=target.id, amount=amount
        )
    run_process()
    refunded = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=200
    )
    in_transit = services.request_transfer(
        actor=alice, from_account=source.id, to_account=open_account(alice).id, amount=1
    )
    services.transfer_debit(transfer_id=refunded.id)
    accounts.freeze(account_id=target.id, actor=None)
    run_process()
    services.transfer_debit(transfer_id=in_transit.id)
    sub = get_subscription(name)

    # When the read model is built one event per batch, then in one batch.
    monkeypatch.setattr(sub, "batch_size", 1)
    rebuild(name)
    one_by_one = read()
    monkeypatch.setattr(sub, "batch_size", 1000)
    rebuild(name)

    # Then the rows are exactly the same.
    assert read() == one_by_one
    assert one_by_one[0]
