"""The accounts read models, kept up to date by one subscription.

``accounts.balances`` writes ``AccountBalance`` and ``LedgerEntry`` together,
so a ledger row's ``balance_after`` is always the balance the account row
shows after it. Every value comes from the event (times are the events'
recorded times), so a rebuild from zero gives exactly the same rows.
"""

from django.db import connection

from eventstore.store import RecordedEvent
from eventstore.subscriptions import subscription

from .events import AccountOpened, Closed, Deposited, Frozen, Unfrozen, Withdrawn
from .models import AccountBalance, LedgerEntry


def reset() -> None:
    LedgerEntry.objects.all().delete()
    AccountBalance.objects.all().delete()


balances = subscription("accounts.balances", batch_size=500, reset=reset)


def account_id_of(recorded: RecordedEvent):
    return recorded.stream_id.removeprefix("account-")


@balances.handles(AccountOpened)
def on_account_opened(recorded: RecordedEvent) -> None:
    event = recorded.event
    AccountBalance.objects.create(
        id=account_id_of(recorded),
        number=event.number,
        owner_id=event.owner_id,
        currency=event.currency,
        balance=0,
        status=AccountBalance.Status.OPEN,
        version=recorded.version,
        opened_at=recorded.recorded_at,
        updated_at=recorded.recorded_at,
    )


@balances.handles(Deposited, Withdrawn)
def on_money_moved(recorded: RecordedEvent) -> None:
    event = recorded.event
    deposit = isinstance(event, Deposited)
    signed = event.amount if deposit else -event.amount
    account_id = account_id_of(recorded)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {AccountBalance._meta.db_table}"
            " SET balance = balance + %s, version = %s, updated_at = %s"
            " WHERE id = %s RETURNING balance",
            [signed, recorded.version, recorded.recorded_at, account_id],
        )
        (balance_after,) = cursor.fetchone()
    LedgerEntry.objects.create(
        account_id=account_id,
        position=recorded.version,
        event_id=recorded.event_id,
        type=LedgerEntry.Type.DEPOSIT if deposit else LedgerEntry.Type.WITHDRAWAL,
        amount=signed,
        balance_after=balance_after,
        transfer_id=event.transfer_id,
        transfer_step=event.step or "",
        reference=event.reference,
        recorded_at=recorded.recorded_at,
    )


def _set_status(recorded: RecordedEvent, status: str) -> None:
    AccountBalance.objects.filter(id=account_id_of(recorded)).update(
        status=status, version=recorded.version, updated_at=recorded.recorded_at
    )


@balances.handles(Frozen)
def on_frozen(recorded: RecordedEvent) -> None:
    _set_status(recorded, AccountBalance.Status.FROZEN)


@balances.handles(Unfrozen)
def on_unfrozen(recorded: RecordedEvent) -> None:
    _set_status(recorded, AccountBalance.Status.OPEN)


@balances.handles(Closed)
def on_closed(recorded: RecordedEvent) -> None:
    _set_status(recorded, AccountBalance.Status.CLOSED)
