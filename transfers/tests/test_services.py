"""Requesting a transfer, and each step of the process, through the services."""

import pytest

from accounts import services as accounts
from accounts.errors import CurrencyMismatch, InvalidAmount, InvalidReference
from eventstore import verification
from eventstore.store import partition_for, read_stream
from eventstore.subscriptions import all_subscriptions, process_partition
from transfers import services, trial_balance
from transfers.domain import Status, Transfer
from transfers.errors import SameAccount, TransferAccountUnknown

from .factories import make_user, open_account, run_process, run_projections

pytestmark = pytest.mark.django_db


def balance(account) -> int:
    return accounts.get_account(account.id).balance


@pytest.fixture
def alice():
    return make_user()


@pytest.fixture
def bob():
    return make_user()


def test_a_requested_transfer_is_pending_until_the_process_runs(alice, bob):
    source = open_account(alice, balance=1000)
    target = open_account(bob)

    transfer = services.request_transfer(
        actor=alice,
        from_account=source.id,
        to_account=target.id,
        amount=300,
        reference="rent",
    )

    assert transfer.status == Status.PENDING
    assert transfer.currency == "EUR"
    assert transfer.requested_at is not None
    assert balance(source) == 1000


def test_the_process_debits_then_credits(alice, bob):
    source = open_account(alice, balance=1000)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )

    run_process()

    assert services.get_transfer(transfer.id).status == Status.COMPLETED
    assert (balance(source), balance(target)) == (700, 300)


def test_one_pass_over_the_transfers_partition_debits_and_credits(alice, bob):
    source = open_account(alice, balance=1000)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )

    # What a worker's task does with the nudge: the process manager runs
    # first, and its credit step does not wait for another nudge.
    subscriptions = all_subscriptions()
    process_partition(partition_for(Transfer.stream_id_for(transfer.id)))

    assert subscriptions[0].name == "transfers.process"
    assert services.get_transfer(transfer.id).status == Status.COMPLETED


def test_the_reference_goes_into_both_ledgers_events(alice, bob):
    source = open_account(alice, balance=1000)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice,
        from_account=source.id,
        to_account=target.id,
        amount=300,
        reference="invoice 42",
    )

    run_process()

    for account, step in ((source, "debit"), (target, "credit")):
        last = list(read_stream(account.stream_id))[-1].event
        assert (last.transfer_id, last.step, last.reference) == (
            transfer.id,
            step,
            "invoice 42",
        )


def test_a_transfer_beyond_the_balance_fails_without_moving_money(alice, bob):
    source = open_account(alice, balance=100)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )

    run_process()

    failed = services.get_transfer(transfer.id)
    assert (failed.status, failed.failure_reason) == (
        Status.FAILED,
        "insufficient_funds",
    )
    assert (balance(source), balance(target)) == (100, 0)


@pytest.mark.parametrize(
    ("action", "reason"), [("freeze", "source_frozen"), ("close", "source_closed")]
)
def test_a_transfer_from_a_frozen_or_closed_source_fails(alice, bob, action, reason):
    source = open_account(alice, balance=0 if action == "close" else 500)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    getattr(accounts, action)(account_id=source.id, actor=None)

    run_process()

    failed = services.get_transfer(transfer.id)
    assert (failed.status, failed.failure_reason) == (Status.FAILED, reason)
    assert balance(target) == 0


@pytest.mark.parametrize(
    ("action", "reason"), [("freeze", "target_frozen"), ("close", "target_closed")]
)
def test_a_refused_credit_refunds_the_source(alice, bob, action, reason):
    source = open_account(alice, balance=500)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    services.transfer_debit(transfer_id=transfer.id)
    getattr(accounts, action)(account_id=target.id, actor=None)

    run_process()

    failed = services.get_transfer(transfer.id)
    assert (failed.status, failed.failure_reason) == (Status.FAILED, reason)
    assert failed.refunded
    assert (balance(source), balance(target)) == (500, 0)


def test_the_refund_reaches_a_source_frozen_meanwhile(alice, bob):
    source = open_account(alice, balance=500)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    services.transfer_debit(transfer_id=transfer.id)
    accounts.freeze(account_id=target.id, actor=None)
    accounts.freeze(account_id=source.id, actor=None)

    run_process()

    assert services.get_transfer(transfer.id).refunded
    assert balance(source) == 500


def test_a_refund_to_a_source_closed_meanwhile_is_paid_out_by_staff(alice, bob):
    source = open_account(alice, balance=300)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    services.transfer_debit(transfer_id=transfer.id)
    accounts.close(account_id=source.id, actor=None)  # empty now: allowed
    accounts.freeze(account_id=target.id, actor=None)
    run_process()
    assert balance(source) == 300

    accounts.pay_out(account_id=source.id, actor=None, reference="cheque 12")
    run_projections()

    assert (balance(source), balance(target)) == (0, 0)
    assert verification.run_check(trial_balance.NAME).ok


def test_each_step_run_twice_moves_money_once(alice, bob):
    source = open_account(alice, balance=500)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )

    for _ in range(2):
        services.transfer_debit(transfer_id=transfer.id)
    for _ in range(2):
        services.transfer_credit(transfer_id=transfer.id)
    services.transfer_debit(transfer_id=transfer.id)

    assert (balance(source), balance(target)) == (200, 300)
    assert services.get_transfer(transfer.id).version == 3


def test_a_step_never_runs_again_on_a_finished_transfer(alice, bob):
    source = open_account(alice, balance=100)
    target = open_account(bob)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    services.transfer_debit(transfer_id=transfer.id)  # fails: 100 < 300
    accounts.deposit(account_id=source.id, amount=1000, actor=None)

    services.transfer_debit(transfer_id=transfer.id)  # a redelivery

    assert services.get_transfer(transfer.id).status == Status.FAILED
    assert balance(source) == 1100


def test_a_transfer_to_the_same_account_is_refused(alice):
    source = open_account(alice, balance=500)
    with pytest.raises(SameAccount):
        services.request_transfer(
            actor=alice, from_account=source.id, to_account=source.id, amount=1
        )


def test_an_unknown_and_a_foreign_source_get_the_same_answer(alice, bob):
    import uuid

    foreign = open_account(bob, balance=500)
    target = open_account(alice)
    answers = []
    for source_id in (uuid.uuid4(), foreign.id):
        with pytest.raises(TransferAccountUnknown) as refused:
            services.request_transfer(
                actor=alice, from_account=source_id, to_account=target.id, amount=1
            )
        answers.append((refused.value.code, refused.value.status, str(refused.value)))

    assert (
        answers[0]
        == answers[1]
        == (
            "unknown_account",
            422,
            "No such source account.",
        )
    )


def test_an_unknown_target_is_refused(alice):
    import uuid

    source = open_account(alice, balance=500)
    with pytest.raises(TransferAccountUnknown, match="target"):
        services.request_transfer(
            actor=alice, from_account=source.id, to_account=uuid.uuid4(), amount=1
        )


def test_a_transfer_between_currencies_is_refused(alice, bob):
    source = open_account(alice, balance=500)
    target = open_account(bob, currency="USD")
    with pytest.raises(CurrencyMismatch):
        services.request_transfer(
            actor=alice, from_account=source.id, to_account=target.id, amount=1
        )


def test_bad_amounts_and_references_are_refused(alice, bob):
    source = open_account(alice, balance=500)
    target = open_account(bob)
    with pytest.raises(InvalidAmount):
        services.request_transfer(
            actor=alice, from_account=source.id, to_account=target.id, amount=0
        )
    with pytest.raises(InvalidReference):
        services.request_transfer(
            actor=alice,
            from_account=source.id,
            to_account=target.id,
            amount=1,
            reference="x" * 141,
        )


def test_a_teller_may_send_from_anyones_account(alice, bob):
    teller = make_user("teller")
    source = open_account(alice, balance=500)
    target = open_account(bob)

    transfer = services.request_transfer(
        actor=teller, from_account=source.id, to_account=target.id, amount=200
    )
    run_process()

    assert services.get_transfer(transfer.id).status == Status.COMPLETED
    assert Transfer.id_from_stream(transfer.stream_id) == transfer.id
