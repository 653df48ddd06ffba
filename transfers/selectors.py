"""The read side of transfers: the transfer read model and the trial balance.

A customer sees the transfers from or to their own accounts; staff who see
every account (tellers, auditors, operations) see every transfer and the
trial balance.
"""

import dataclasses
import datetime
import uuid

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Q, QuerySet, Sum

from accounts import selectors as accounts_selectors
from accounts.errors import UnknownAccount
from accounts.models import AccountBalance
from accounts.permissions import VIEW_ANY_ACCOUNT
from eventstore import events as event_registry
from eventstore.models import Checkpoint, Event, SkippedEvent
from eventstore.store import read_stream
from eventstore.verification import CheckNotPossible

from .domain import Transfer
from .errors import UnknownTransfer
from .events import Credited, Refunded, TransferRequested
from .models import Totals, TransferSummary
from .process import process
from .projections import totals as totals_subscription


@dataclasses.dataclass(frozen=True)
class TransferRecord:
    """What the API shows of a transfer."""

    id: uuid.UUID
    from_account: uuid.UUID
    to_account: uuid.UUID
    amount: int
    currency: str
    reference: str
    status: str
    failure_reason: str
    created_at: datetime.datetime | None
    completed_at: datetime.datetime | None = None
    refunded_at: datetime.datetime | None = None


def may_see_every_transfer(user) -> bool:
    return user.has_perm(VIEW_ANY_ACCOUNT)


def transfers_visible_to(user) -> QuerySet[TransferSummary]:
    """Return the transfers ``user`` may see: all for staff, else own accounts'.

    A customer's account ids are read first: PostgreSQL cannot look up an OR
    of two ``IN (subquery)`` in the from and to indexes, and would scan
    every transfer for each customer's list; with the ids as values it reads
    the customer's transfers from both indexes.
    """
    transfers = TransferSummary.objects.all()
    if may_see_every_transfer(user):
        return transfers
    own = list(
        AccountBalance.objects.filter(owner_id=user.pk)
        .order_by()
        .values_list("id", flat=True)
    )
    return transfers.filter(Q(from_account__in=own) | Q(to_account__in=own))


def transfer_list(
    *, user, status: str | None = None, account: uuid.UUID | None = None
) -> QuerySet[TransferSummary]:
    """Return the transfers ``user`` may see, newest first, optionally filtered."""
    transfers = transfers_visible_to(user)
    if status is not None:
        if status not in TransferSummary.Status.values:
            raise ValidationError(
                {"status": [f"Use one of {', '.join(TransferSummary.Status.values)}."]}
            )
        transfers = transfers.filter(status=status)
    if account is not None:
        transfers = transfers.filter(Q(from_account=account) | Q(to_account=account))
    return transfers


def transfer_detail(*, user, transfer_id) -> TransferRecord:
    """Return a transfer ``user`` may see; ``UnknownTransfer`` if none or not theirs.

    A transfer requested a moment ago may not be projected yet: it is then
    shown from its events.
    """
    try:
        transfer_id = uuid.UUID(str(transfer_id))
    except ValueError:
        raise UnknownTransfer() from None
    # get(), not first(): first() would compile the model's ordering into a
    # one-row lookup (as in accounts.selectors.account_detail).
    try:
        row = transfers_visible_to(user).get(id=transfer_id)
    except TransferSummary.DoesNotExist:
        row = None
    if row is not None:
        return record_from_summary(row)
    try:
        # Projected, but not among the visible ones: perhaps the user's
        # account is not projected yet (_may_see reads it from its events).
        record = record_from_summary(TransferSummary.objects.get(id=transfer_id))
    except TransferSummary.DoesNotExist:
        record = record_from_events(transfer_id)
    if record is None or not _may_see(user, record):
        raise UnknownTransfer()
    return record


def _may_see(user, record: TransferRecord) -> bool:
    """Tell whether ``user`` sees either account (projected or not yet)."""
    for account_id in (record.from_account, record.to_account):
        try:
            accounts_selectors.require_visible(user=user, account_id=account_id)
        except UnknownAccount:
            continue
        return True
    return False


def record_from_summary(row: TransferSummary) -> TransferRecord:
    return TransferRecord(
        id=row.id,
        from_account=row.from_account,
        to_account=row.to_account,
        amount=row.amount,
        currency=row.currency,
        reference=row.reference,
        status=row.status,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        completed_at=row.completed_at,
        refunded_at=row.refunded_at,
    )


def record_from_saved(transfer: Transfer) -> TransferRecord:
    """Show a just-saved transfer (never a possibly stale read model)."""
    return TransferRecord(
        id=transfer.id,
        from_account=transfer.from_account,
        to_account=transfer.to_account,
        amount=transfer.amount,
        currency=transfer.currency,
        reference=transfer.reference,
        status=str(transfer.status),
        failure_reason=transfer.failure_reason or "",
        created_at=transfer.requested_at,
    )


def record_from_events(transfer_id: uuid.UUID) -> TransferRecord | None:
    """Replay a transfer's stream into what the API shows; None if it has none."""
    transfer = Transfer(transfer_id)
    times: dict[type, datetime.datetime] = {}
    for recorded in read_stream(Transfer.stream_id_for(transfer_id)):
        transfer.apply(recorded.event)
        times[type(recorded.event)] = recorded.recorded_at
    if TransferRequested not in times:
        return None
    return dataclasses.replace(
        record_from_saved(transfer),
        created_at=times[TransferRequested],
        completed_at=times.get(Credited),
        refunded_at=times.get(Refunded),
    )


# Stranded transfers: the process manager runs a transfer's next step when it
# handles the transfer's latest event (``TransferRequested``: the debit;
# ``Debited``: the credit, or the refund). An operator who skips that event
# leaves the transfer ``pending`` (no money moved) or ``debited`` (its amount
# in transit) for good: nothing else drives it on.


def skipped_step(transfer: Transfer) -> SkippedEvent | None:
    """Return the skip that stranded an unfinished transfer; None if none did."""
    if transfer.is_finished:
        return None
    # The event at the version loaded: the transfer may have moved on since.
    latest = Event.objects.filter(
        stream_id=transfer.stream_id, version=transfer.version
    ).values("event_id")
    return (
        SkippedEvent.objects.filter(subscription=process.name, event_id__in=latest)
        .select_related("skipped_by")
        .first()
    )


def stranded_transfers() -> QuerySet[TransferSummary]:
    """Return the unfinished transfers whose next step the process manager skipped.

    ``services.transfer_resume`` (or ``transfer_refund``) finishes them.
    """
    skipped = SkippedEvent.objects.filter(
        subscription=process.name, event_id__isnull=False
    ).values("event_id")
    streams = Event.objects.filter(event_id__in=skipped).values_list(
        "stream_id", flat=True
    )
    return TransferSummary.objects.filter(
        id__in=[Transfer.id_from_stream(stream_id) for stream_id in streams],
        status__in=(TransferSummary.Status.PENDING, TransferSummary.Status.DEBITED),
    )


def totals_snapshot() -> dict:
    """Return the trial balance per currency and the position it reflects.

    One SQL statement reads the totals and the totals subscription's
    checkpoints, so both come from one snapshot of the database: the figures
    are exactly those of the events up to ``position`` (a sequence number
    per partition), and ``balances + in_transit == deposited - withdrawn``
    holds in every answer.
    """
    totals_table = Totals._meta.db_table
    checkpoint_table = Checkpoint._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT currency, sum(balances), sum(in_transit), sum(deposited),"
            f" sum(withdrawn) FROM {totals_table} GROUP BY currency"
            " UNION ALL"
            " SELECT NULL, partition, sequence, NULL, NULL"
            f" FROM {checkpoint_table} WHERE subscription = %s",
            [totals_subscription.name],
        )
        rows = cursor.fetchall()
    currencies = {}
    position = {}
    for currency, first, second, deposited, withdrawn in rows:
        if currency is None:
            position[str(first)] = second
        else:
            currencies[currency] = {
                "balances": int(first),
                "in_transit": int(second),
                "deposited": int(deposited),
                "withdrawn": int(withdrawn),
            }
    return {
        "position": dict(sorted(position.items(), key=lambda item: int(item[0]))),
        "currencies": dict(sorted(currencies.items())),
    }


def independent_trial_balance(cut: dict[int, int] | None = None) -> dict:
    """Return the trial balance per currency from figures kept independently.

    Not the totals read model: the sum of the accounts' balance read model,
    the amounts of the transfers ``debited`` in the transfer read model, and
    external deposits and withdrawals summed in SQL over the events (up to
    ``cut``, a sequence per partition, when given). Only meaningful at a cut
    where those read models are caught up; each currency's ``difference``
    is ``balances + in_transit - (deposited - withdrawn)`` and must be 0.
    """
    figures: dict[str, dict[str, int]] = {}

    def add(currency: str, name: str, amount) -> None:
        row = figures.setdefault(
            currency,
            {"balances": 0, "in_transit": 0, "deposited": 0, "withdrawn": 0},
        )
        row[name] += int(amount or 0)

    for currency, total in AccountBalance.objects.values_list("currency").annotate(
        Sum("balance")
    ):
        add(currency, "balances", total)
    for currency, total in (
        TransferSummary.objects.filter(status=TransferSummary.Status.DEBITED)
        .values_list("currency")
        .annotate(Sum("amount"))
    ):
        add(currency, "in_transit", total)
    for currency, event_type, total in _external_cash(cut):
        name = "deposited" if event_type == "accounts.Deposited" else "withdrawn"
        add(currency, name, total)
    for row in figures.values():
        row["difference"] = books_difference(row)
    return dict(sorted(figures.items()))


def books_difference(figures: dict[str, int]) -> int:
    """Return how far a currency's books are off: 0 when they balance."""
    return (
        figures["balances"]
        + figures["in_transit"]
        - figures["deposited"]
        + figures["withdrawn"]
    )


# The sum reads these events' stored JSON (amount, transfer_id; currency) as
# these schema versions store it: upcasters serve decoded reads, not SQL. A
# release that stores another version must teach the sum to read it; until
# then the check cannot run, rather than count an old field as missing or a
# transfer's leg as cash.
SUMMED_SCHEMA_VERSIONS = {
    "accounts.AccountOpened": 1,
    "accounts.Deposited": 1,
    "accounts.Withdrawn": 1,
}


def _external_cash(cut: dict[int, int] | None) -> list[tuple[str, str, int]]:
    """Sum the deposits and withdrawals no transfer made, per currency and type.

    Summed in SQL over the events (up to ``cut`` when given), each with the
    currency of its account's ``AccountOpened``. PostgreSQL joins the cut as
    two arrays, one statement text whatever the number of partitions; SQLite
    (the embedded mode) has neither arrays nor ``::`` casts, so there the cut
    is a list of ``VALUES`` and the JSON is read with ``json_extract``.
    Raise ``CheckNotPossible`` if an event summed is stored, or its class now
    written, at a schema version other than ``SUMMED_SCHEMA_VERSIONS`` says.
    """
    for name, version in SUMMED_SCHEMA_VERSIONS.items():
        current = event_registry.current_version(name)
        if current != version:
            raise CheckNotPossible(_unread_schema(name, current))
    if cut is not None and not cut:
        return []  # no partition, so no event is up to the cut
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        field = "{}.data->>'{}'".format
        amount = "(e.data->>'amount')::bigint"
    else:
        field = "json_extract({}.data, '$.{}')".format
        amount = "CAST(json_extract(e.data, '$.amount') AS INTEGER)"
    with_cut, cut_join, params = "", "", []
    if cut is not None:
        if postgresql:
            rows = "unnest(%s::integer[], %s::bigint[]) AS c(partition, sequence)"
            params = [list(cut), list(cut.values())]
        else:
            values = ", ".join(["(%s, %s)"] * len(cut))
            with_cut = f"WITH c(partition, sequence) AS (VALUES {values}) "
            rows = "c"
            params = [value for item in cut.items() for value in item]
        cut_join = (
            f" JOIN {rows} ON c.partition = e.partition AND e.sequence <= c.sequence"
        )
    events = Event._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"{with_cut}SELECT {field('o', 'currency')}, e.event_type, sum({amount}),"
            " e.schema_version, o.schema_version"
            f" FROM {events} e{cut_join}"
            f" JOIN {events} o"
            " ON o.stream_id = e.stream_id AND o.version = 1"
            " AND o.event_type = 'accounts.AccountOpened'"
            " WHERE e.event_type IN ('accounts.Deposited', 'accounts.Withdrawn')"
            f" AND {field('e', 'transfer_id')} IS NULL"
            " GROUP BY 1, 2, 4, 5",
            params,
        )
        rows = cursor.fetchall()
    for _, event_type, _, version, opened_version in rows:
        for name, stored in (
            (event_type, version),
            ("accounts.AccountOpened", opened_version),
        ):
            if stored != SUMMED_SCHEMA_VERSIONS[name]:
                raise CheckNotPossible(_unread_schema(name, stored))
    return [(currency, event_type, total) for currency, event_type, total, _, _ in rows]


def _unread_schema(name: str, version: int) -> str:
    return (
        f"{name} at schema version {version}: the trial balance's sum over the"
        f" events reads only version {SUMMED_SCHEMA_VERSIONS[name]}"
        " (transfers.selectors.SUMMED_SCHEMA_VERSIONS)"
    )
