"""The accounts read models, kept up to date by one subscription.

``accounts.balances`` writes ``AccountBalance`` and ``LedgerEntry`` together,
so a ledger row's ``balance_after`` is always the balance the account row
shows after it. Every value comes from the event (times are the events'
recorded times), so a rebuild from zero gives exactly the same rows.

The handler takes whole batches: it reads the batch's accounts in one query,
applies the events to them in order in Python, and writes the accounts in
one upsert and the new ledger rows in one insert, so a batch costs the same
few queries however many events it holds. One partition has one writer at a
time and an account's stream lives in one partition, so nobody else writes
these rows meanwhile.
"""

import uuid

from django.db import connection

from eventstore.readmodels import insert_rows
from eventstore.store import RecordedEvent
from eventstore.subscriptions import subscription

from .events import AccountOpened, Closed, Deposited, Frozen, Unfrozen, Withdrawn
from .models import AccountBalance, LedgerEntry


def reset() -> None:
    """Empty both read models in SQL, the ledger first, loading no row.

    ``AccountBalance.objects.all().delete()`` would read every account into
    Python to cascade to its ledger rows (the foreign key's CASCADE) and
    delete them a hundred at a time, though the ledger, emptied first, leaves
    nothing to cascade to.
    """
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model in (LedgerEntry, AccountBalance):
            cursor.execute(f"DELETE FROM {quote(model._meta.db_table)}")


balances = subscription(
    "accounts.balances",
    batch_size=1000,
    reset=reset,
    read_models=(AccountBalance, LedgerEntry),
)

# The columns an event after the opening may change.
_CHANGING = ["balance", "status", "version", "updated_at"]
_LEDGER_COLUMNS = (
    "account_id",
    "position",
    "event_id",
    "type",
    "amount",
    "balance_after",
    "transfer_id",
    "transfer_step",
    "reference",
    "recorded_at",
)
_DEPOSIT = LedgerEntry.Type.DEPOSIT.value
_WITHDRAWAL = LedgerEntry.Type.WITHDRAWAL.value
_STATUS_OF = {
    Frozen: AccountBalance.Status.FROZEN,
    Unfrozen: AccountBalance.Status.OPEN,
    Closed: AccountBalance.Status.CLOSED,
}


def account_id_of(recorded: RecordedEvent) -> uuid.UUID:
    return uuid.UUID(recorded.stream_id.removeprefix("account-"))


def _account_ids(batch: list[RecordedEvent]) -> list[uuid.UUID]:
    """Return each event's account id, parsing each stream id once.

    A batch holds many events of few accounts, and a rebuild's batches are
    large: parsing a UUID per event is a measurable part of a rebuild.
    """
    parsed: dict[str, uuid.UUID] = {}
    for recorded in batch:
        if recorded.stream_id not in parsed:
            parsed[recorded.stream_id] = account_id_of(recorded)
    return [parsed[recorded.stream_id] for recorded in batch]


class AccountNotProjected(LookupError):
    """A money event for an account whose opening was never projected."""


class AccountAlreadyOpened(ValueError):
    """A second opening of an account already projected."""


@balances.handles_batch(AccountOpened, Deposited, Withdrawn, Frozen, Unfrozen, Closed)
def on_batch(batch: list[RecordedEvent]) -> None:
    ids = _account_ids(batch)
    accounts = AccountBalance.objects.in_bulk(set(ids))
    changed: dict[uuid.UUID, AccountBalance] = {}
    ledger: list[tuple] = []
    for account_id, recorded in zip(ids, batch, strict=True):
        event = recorded.event
        cls = type(event)
        account = accounts.get(account_id)
        if cls is AccountOpened:
            if account is not None:
                raise AccountAlreadyOpened(f"account {account_id} is already open")
            account = accounts[account_id] = AccountBalance(
                id=account_id,
                number=event.number,
                owner_id=event.owner_id,
                currency=event.currency,
                balance=0,
                status=AccountBalance.Status.OPEN,
                version=recorded.version,
                opened_at=recorded.recorded_at,
                updated_at=recorded.recorded_at,
            )
        elif cls is Deposited or cls is Withdrawn:
            if account is None:
                raise AccountNotProjected(
                    f"no account {account_id} for {recorded.event_id}"
                )
            deposit = cls is Deposited
            signed = event.amount if deposit else -event.amount
            account.balance += signed
            account.version = recorded.version
            account.updated_at = recorded.recorded_at
            ledger.append(
                (
                    account_id,
                    recorded.version,
                    recorded.event_id,
                    _DEPOSIT if deposit else _WITHDRAWAL,
                    signed,
                    account.balance,
                    event.transfer_id,
                    event.step or "",
                    event.reference,
                    recorded.recorded_at,
                )
            )
        elif account is None:
            # A status change of an unknown account changes nothing.
            continue
        else:
            account.status = _STATUS_OF[cls]
            account.version = recorded.version
            account.updated_at = recorded.recorded_at
        changed[account_id] = account
    if changed:
        AccountBalance.objects.bulk_create(
            changed.values(),
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=_CHANGING,
        )
    if ledger:
        insert_rows(LedgerEntry, _LEDGER_COLUMNS, ledger)
