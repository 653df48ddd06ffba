"""The accounts read models, fed by the subscription."""

import datetime
import time
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import selectors, services
from accounts.domain import TransferStep
from accounts.models import AccountBalance, LedgerEntry
from accounts.projections import reset
from eventstore.subscriptions import catch_up, get_subscription, rebuild

from .bulk_rows import seed_accounts

pytestmark = pytest.mark.django_db

BALANCE_FIELDS = [f.attname for f in AccountBalance._meta.fields]
LEDGER_FIELDS = [f.attname for f in LedgerEntry._meta.fields if f.name != "id"]


def project():
    catch_up([get_subscription("accounts.balances")])


def rows():
    return (
        list(AccountBalance.objects.order_by("id").values_list(*BALANCE_FIELDS)),
        list(
            LedgerEntry.objects.order_by("account_id", "position").values_list(
                *LEDGER_FIELDS
            )
        ),
    )


def test_balance_and_ledger_follow_the_events(customer, teller, open_account):
    account = open_account(customer, balance=1000)
    services.withdraw(account_id=account.id, amount=250, actor=teller, reference="r")
    project()

    row = AccountBalance.objects.get(id=account.id)
    assert (row.balance, row.version, row.status, row.owner_id) == (
        750,
        3,
        "open",
        customer.pk,
    )
    ledger = list(
        LedgerEntry.objects.filter(account=row).values_list(
            "position", "type", "amount", "balance_after", "reference"
        )
    )
    assert ledger == [
        (2, "deposit", 1000, 1000, ""),
        (3, "withdrawal", -250, 750, "r"),
    ]


def test_rows_name_themselves_without_minor_units_read_as_money(customer, open_account):
    """The admin shows these in titles and breadcrumbs: 1000 cents is not 1000 EUR."""
    account = open_account(customer, balance=1000)
    project()

    row = AccountBalance.objects.get(id=account.id)
    entry = LedgerEntry.objects.get(account=row)
    assert str(row) == f"{account.number} EUR"
    assert str(entry) == f"{account.id}#2"


def test_status_changes_are_projected(customer, operator, open_account):
    account = open_account(customer)
    services.freeze(account_id=account.id, actor=operator)
    project()
    assert AccountBalance.objects.get(id=account.id).status == "frozen"
    services.unfreeze(account_id=account.id, actor=operator)
    services.close(account_id=account.id, actor=operator)
    project()
    row = AccountBalance.objects.get(id=account.id)
    assert (row.status, row.version) == ("closed", 4)


def test_ledger_rows_carry_the_transfer(customer, open_account):
    account = open_account(customer, balance=100)
    step = TransferStep(uuid.uuid4(), "debit")
    services.withdraw(account_id=account.id, amount=30, actor=None, transfer=step)
    project()
    entry = LedgerEntry.objects.get(account_id=account.id, position=3)
    assert (entry.transfer_id, entry.transfer_step) == (step.transfer_id, "debit")


def test_rebuild_from_zero_gives_exactly_the_same_rows(
    customer, other_customer, teller, operator, open_account
):
    first = open_account(customer, balance=500)
    second = open_account(other_customer, currency="USD", balance=70)
    services.withdraw(account_id=first.id, amount=120, actor=teller)
    services.withdraw(account_id=second.id, amount=70, actor=teller)
    services.close(account_id=second.id, actor=operator)
    project()
    live = rows()
    assert len(live[0]) == 2 and len(live[1]) == 4

    rebuild("accounts.balances")

    assert rows() == live


def test_balance_at_a_past_moment_is_computed_from_events(
    customer, teller, open_account
):
    before_opening = timezone.now()
    account = open_account(customer, balance=100)
    time.sleep(0.01)
    after_deposit = timezone.now()
    time.sleep(0.01)
    services.withdraw(account_id=account.id, amount=40, actor=teller)

    assert selectors.balance_at(account.id, before_opening).balance == 0
    then = selectors.balance_at(account.id, after_deposit)
    assert (then.balance, then.version) == (100, 2)
    now = selectors.balance_at(account.id, timezone.now())
    assert (now.balance, now.version) == (60, 3)


def test_balance_at_refuses_a_moment_without_time_zone(customer, open_account):
    account = open_account(customer)
    with pytest.raises(ValueError):
        selectors.balance_at(account.id, datetime.datetime(2024, 1, 1))


def test_ledger_selector_filters_by_time(customer, teller, open_account):
    account = open_account(customer, balance=10)
    time.sleep(0.01)
    middle = timezone.now()
    time.sleep(0.01)
    services.deposit(account_id=account.id, amount=5, actor=teller)
    project()
    entries = selectors.account_ledger(user=teller, account_id=account.id, since=middle)
    assert [entry.amount for entry in entries] == [5]
    entries = selectors.account_ledger(user=teller, account_id=account.id, until=middle)
    assert [entry.amount for entry in entries] == [10]


def test_a_customer_sees_only_their_own_accounts(
    customer, other_customer, auditor, open_account
):
    mine = open_account(customer)
    open_account(other_customer)
    project()
    assert [a.id for a in selectors.account_list(user=customer)] == [mine.id]
    assert selectors.account_list(user=auditor).count() == 2


def test_a_batch_of_mixed_events_gives_the_rows_of_one_event_per_batch(
    customer, other_customer, teller, operator, open_account, monkeypatch
):
    # Given accounts that go through every kind of event, several at once.
    first = open_account(customer, balance=500)
    second = open_account(other_customer, currency="USD", balance=70)
    services.withdraw(account_id=first.id, amount=120, actor=teller, reference="x")
    services.freeze(account_id=first.id, actor=operator)
    services.deposit(
        account_id=first.id,
        amount=30,
        actor=None,
        transfer=TransferStep(uuid.uuid4(), "refund"),
    )
    services.unfreeze(account_id=first.id, actor=operator)
    services.deposit(
        account_id=second.id,
        amount=5,
        actor=None,
        transfer=TransferStep(uuid.uuid4(), "credit"),
    )
    services.withdraw(account_id=second.id, amount=75, actor=teller)
    services.close(account_id=second.id, actor=operator)
    third = open_account(customer, balance=1)
    sub = get_subscription("accounts.balances")

    # When the read model is built one event per batch, then in one batch.
    monkeypatch.setattr(sub, "batch_size", 1)
    rebuild(sub.name)
    one_by_one = rows()
    monkeypatch.setattr(sub, "batch_size", 1000)
    rebuild(sub.name)

    # Then the rows are exactly the same.
    assert rows() == one_by_one
    assert len(one_by_one[0]) == 3 and len(one_by_one[1]) == 7
    assert AccountBalance.objects.get(id=third.id).balance == 1


def test_accounts_projection_reset_does_not_load_every_account():
    """Resetting the read model costs the same few queries for 2 or 2,000 accounts.

    The nightly verification, every rebuild and every repair reset it: the
    accounts must be deleted in SQL, not loaded into Python to cascade to
    their ledger rows.
    """
    seed_accounts(2)
    with CaptureQueriesContext(connection) as two:
        reset()
    seed_accounts(2_000)

    with CaptureQueriesContext(connection) as many:
        reset()

    assert len(many.captured_queries) == len(two.captured_queries)
    assert not AccountBalance.objects.exists()
