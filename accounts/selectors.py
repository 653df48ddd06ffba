"""The read side: queries over the read models, and time travel over events.

Read models lag the event table by a moment. Where an answer must show a
write's result (read-your-writes), ``account_record`` builds it from the
saved aggregate instead.
"""

import dataclasses
import datetime
import uuid

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from eventstore import events as event_registry
from eventstore.models import Event
from eventstore.store import read_stream

from .domain import Account, parse_account_id
from .errors import UnknownAccount
from .events import Deposited, Withdrawn
from .models import AccountBalance, LedgerEntry
from .permissions import VIEW_ANY_ACCOUNT


@dataclasses.dataclass(frozen=True)
class AccountRecord:
    """What the API shows of an account."""

    id: uuid.UUID
    number: str
    owner_id: int | None
    owner: str | None
    currency: str
    balance: int
    status: str
    version: int
    opened_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class BalanceAt:
    balance: int
    at: datetime.datetime
    version: int


def accounts_visible_to(user) -> QuerySet[AccountBalance]:
    """Return the accounts ``user`` may see: all for staff, else their own."""
    accounts = AccountBalance.objects.select_related("owner")
    if user.has_perm(VIEW_ANY_ACCOUNT):
        return accounts
    return accounts.filter(owner_id=user.pk)


def account_list(*, user, filters: dict | None = None) -> QuerySet[AccountBalance]:
    """Return the accounts ``user`` may see, filtered, oldest first."""
    from .filters import AccountFilter

    filterset = AccountFilter(filters or {}, queryset=accounts_visible_to(user))
    if not filterset.is_valid():
        raise ValidationError(filterset.errors.get_json_data())
    return filterset.qs


def record_from_row(row: AccountBalance) -> AccountRecord:
    return AccountRecord(
        id=row.id,
        number=row.number,
        owner_id=row.owner_id,
        owner=row.owner.username if row.owner else None,
        currency=row.currency,
        balance=row.balance,
        status=row.status,
        version=row.version,
        opened_at=row.opened_at,
    )


def user_by_username(username: str):
    """Return the user with this username, or None."""
    return get_user_model().objects.filter(username=username).first()


def account_record(account: Account) -> AccountRecord:
    """Show a just-saved aggregate (never a possibly stale read model)."""
    known = (
        AccountBalance.objects.filter(id=account.id)
        .values_list("owner__username", "opened_at")
        .first()
    )
    if known is None:  # not projected yet: ask the events and the users
        opened_at = (
            Event.objects.filter(stream_id=account.stream_id, version=1)
            .values_list("recorded_at", flat=True)
            .get()
        )
        username = (
            get_user_model()
            .objects.filter(pk=account.owner_id)
            .values_list("username", flat=True)
            .first()
        )
    else:
        username, opened_at = known
    return AccountRecord(
        id=account.id,
        number=account.number,
        owner_id=account.owner_id,
        owner=username,
        currency=account.currency,
        balance=account.balance,
        status=account.status,
        version=account.version,
        opened_at=opened_at,
    )


def account_detail(*, user, account_id) -> AccountRecord:
    """Return an account ``user`` may see; ``UnknownAccount`` if not theirs.

    An account opened a moment ago may not be projected yet: it is then
    shown from its events.
    """
    account_id = parse_account_id(account_id)
    # get(), not first(): first() would compile the model's ordering into a
    # one-row primary key lookup, a tenth of this request's time.
    try:
        row = AccountBalance.objects.select_related("owner").get(id=account_id)
    except AccountBalance.DoesNotExist:
        row = None
    # The owner needs no permission lookup (the common case, and a cheap one).
    if row is not None and (row.owner_id == user.pk or user.has_perm(VIEW_ANY_ACCOUNT)):
        return record_from_row(row)
    if row is not None:
        raise UnknownAccount(account=account_id)
    from .services import get_account

    account = get_account(account_id)
    if not (user.has_perm(VIEW_ANY_ACCOUNT) or account.owner_id == user.pk):
        raise UnknownAccount(account=account_id)
    return account_record(account)


def account_exists(account_id: uuid.UUID) -> bool:
    """Tell whether the account exists, projected yet or not."""
    return (
        AccountBalance.objects.filter(id=account_id).exists()
        or Event.objects.filter(
            stream_id=Account.stream_id_for(account_id), version=1
        ).exists()
    )


def require_visible(*, user, account_id) -> uuid.UUID:
    """Return the account id if ``user`` may see it; else ``UnknownAccount``."""
    account_id = parse_account_id(account_id)
    if user.has_perm(VIEW_ANY_ACCOUNT):
        if not account_exists(account_id):
            raise UnknownAccount(account=account_id)
        return account_id
    if AccountBalance.objects.filter(id=account_id, owner_id=user.pk).exists():
        return account_id
    account_detail(user=user, account_id=account_id)  # not projected yet?
    return account_id


def account_ledger(
    *,
    user,
    account_id,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> QuerySet[LedgerEntry]:
    """Return an account's statement rows, oldest first, in [since, until)."""
    account_id = require_visible(user=user, account_id=account_id)
    entries = LedgerEntry.objects.filter(account_id=account_id)
    if since is not None:
        entries = entries.filter(recorded_at__gte=since)
    if until is not None:
        entries = entries.filter(recorded_at__lt=until)
    return entries.order_by("position")


def transfer_ledger(transfer_id: uuid.UUID) -> QuerySet[LedgerEntry]:
    """Return the statement rows a transfer's steps wrote, with their accounts."""
    return LedgerEntry.objects.filter(transfer_id=transfer_id).select_related("account")


@dataclasses.dataclass(frozen=True)
class EventRecord:
    version: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    data: dict
    metadata: dict
    recorded_at: datetime.datetime


def account_events(*, user, account_id) -> QuerySet[Event]:
    """Return the stored events of an account's stream, in version order."""
    account_id = require_visible(user=user, account_id=account_id)
    return Event.objects.filter(stream_id=Account.stream_id_for(account_id)).order_by(
        "version"
    )


# Metadata every reader may see; the rest (acting user, request and
# correlation ids, idempotency key) is for staff only. The correlation id is
# the request id unless the caller sent one.
PUBLIC_METADATA = ("causation_id",)


def event_records(events, *, user) -> list[EventRecord]:
    """Show stored events upcast to their current class, metadata per role."""
    staff = user.has_perm(VIEW_ANY_ACCOUNT)
    records = []
    for event in events:
        position = f"event {event.id}"
        current = event_registry.decode(
            event.event_type, event.schema_version, event.data, position=position
        )
        name, schema_version, data = event_registry.encode(current)
        metadata = (
            event.metadata
            if staff
            else {
                key: value
                for key, value in event.metadata.items()
                if key in PUBLIC_METADATA
            }
        )
        records.append(
            EventRecord(
                version=event.version,
                event_id=event.event_id,
                type=name,
                schema_version=schema_version,
                data=data,
                metadata=metadata,
                recorded_at=event.recorded_at,
            )
        )
    return records


def balance_at(account_id, moment: datetime.datetime) -> BalanceAt:
    """Return an account's balance at a past moment, computed from its events.

    Before the account was opened the balance is 0 at version 0.
    """
    if moment.tzinfo is None:
        raise ValueError("the moment must carry a time zone")
    balance = 0
    version = 0
    for recorded in read_stream(Account.stream_id_for(parse_account_id(account_id))):
        if recorded.recorded_at > moment:
            break
        if isinstance(recorded.event, Deposited):
            balance += recorded.event.amount
        elif isinstance(recorded.event, Withdrawn):
            balance -= recorded.event.amount
        version = recorded.version
    return BalanceAt(balance=balance, at=moment, version=version)


def account_balance_at(*, user, account_id, moment: datetime.datetime) -> BalanceAt:
    """Return the balance at a moment of an account ``user`` may see."""
    account_id = require_visible(user=user, account_id=account_id)
    return balance_at(account_id, moment)
