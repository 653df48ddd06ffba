"""The write side against the real event store on PostgreSQL."""

import uuid

import pytest
from django.db import transaction

from accounts import services
from accounts.domain import TransferStep
from accounts.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNumberTaken,
    InsufficientFunds,
    UnknownAccount,
)
from accounts.events import Deposited, Withdrawn
from eventstore.store import read_stream

pytestmark = pytest.mark.django_db


def events_of(account_id):
    return list(read_stream(f"account-{account_id}"))


def test_open_account_stores_the_opening_and_generates_a_number(customer):
    account = services.open_account(owner=customer, currency="EUR", actor=customer)
    loaded = services.get_account(account.id)
    assert (loaded.owner_id, loaded.currency, loaded.version) == (customer.pk, "EUR", 1)
    assert len(loaded.number) == 12


def test_open_account_records_the_acting_user(customer, teller):
    account = services.open_account(owner=customer, currency="EUR", actor=teller)
    (opened,) = events_of(account.id)
    assert opened.metadata["actor_id"] == teller.pk


def test_an_account_number_is_used_once(customer, other_customer):
    services.open_account(
        owner=customer, currency="EUR", number="000000000195", actor=customer
    )
    with pytest.raises(AccountNumberTaken):
        services.open_account(
            owner=other_customer, currency="USD", number="000000000195", actor=None
        )


def test_get_account_of_an_unknown_id_raises_unknown_account():
    with pytest.raises(UnknownAccount):
        services.get_account(uuid.uuid4())
    with pytest.raises(UnknownAccount):
        services.get_account("not-a-uuid")


def test_deposit_and_withdraw_move_money(customer, teller, open_account):
    account = open_account(customer, balance=1000)
    account = services.withdraw(
        account_id=account.id, amount=300, actor=teller, reference="atm"
    )
    assert (account.balance, account.version) == (700, 3)
    assert services.get_account(account.id).balance == 700


def test_withdraw_beyond_balance_is_refused_and_stores_nothing(
    customer, teller, open_account
):
    account = open_account(customer, balance=100)
    with pytest.raises(InsufficientFunds):
        services.withdraw(account_id=account.id, amount=101, actor=teller)
    assert len(events_of(account.id)) == 2


def test_a_transfer_step_moves_money_once_however_often_it_runs(customer, open_account):
    account = open_account(customer, balance=100)
    debit = TransferStep(uuid.uuid4(), "debit")
    for _ in range(3):
        after = services.withdraw(
            account_id=account.id, amount=60, actor=None, transfer=debit
        )
    assert after.balance == 40
    withdrawals = [e for e in events_of(account.id) if isinstance(e.event, Withdrawn)]
    assert len(withdrawals) == 1
    assert withdrawals[0].event_id == debit.event_id()


def test_a_repeated_transfer_step_is_found_before_any_rule_runs(
    customer, operator, open_account
):
    """A repeat of a debit that emptied the account must not fail as 'no funds'."""
    account = open_account(customer, balance=100)
    debit = TransferStep(uuid.uuid4(), "debit")
    services.withdraw(account_id=account.id, amount=100, actor=None, transfer=debit)
    services.freeze(account_id=account.id, actor=operator)

    again = services.withdraw(
        account_id=account.id, amount=100, actor=None, transfer=debit
    )

    assert again.balance == 0


def test_a_refund_reaches_a_closed_account(customer, operator, open_account):
    account = open_account(customer, balance=100)
    transfer_id = uuid.uuid4()
    services.withdraw(
        account_id=account.id,
        amount=100,
        actor=None,
        transfer=TransferStep(transfer_id, "debit"),
    )
    services.close(account_id=account.id, actor=operator)
    refunded = services.deposit(
        account_id=account.id,
        amount=100,
        actor=None,
        transfer=TransferStep(transfer_id, "refund"),
    )
    assert (refunded.balance, refunded.status) == (100, "closed")
    with pytest.raises(AccountClosed):
        services.deposit(account_id=account.id, amount=1, actor=None)


def test_freeze_and_unfreeze(customer, teller, operator, open_account):
    account = open_account(customer, balance=100)
    services.freeze(account_id=account.id, actor=operator)
    with pytest.raises(AccountFrozen):
        services.deposit(account_id=account.id, amount=1, actor=teller)
    account = services.unfreeze(account_id=account.id, actor=operator)
    assert account.status == "open"


def test_services_run_inside_the_callers_transaction(customer, teller, open_account):
    account = open_account(customer)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.deposit(account_id=account.id, amount=5, actor=teller)
        raise RuntimeError("the caller changes its mind")
    assert services.get_account(account.id).balance == 0
    assert not [e for e in events_of(account.id) if isinstance(e.event, Deposited)]


def test_snapshots_change_no_result(customer, teller, open_account):
    from eventstore.models import Snapshot

    account = open_account(customer)
    for _ in range(55):
        services.deposit(account_id=account.id, amount=2, actor=teller)
    assert Snapshot.objects.filter(stream_id=f"account-{account.id}").exists()
    with_snapshot = services.get_account(account.id)
    Snapshot.objects.all().delete()
    assert vars(services.get_account(account.id)) == vars(with_snapshot)
    assert with_snapshot.balance == 110
