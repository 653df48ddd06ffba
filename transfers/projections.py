"""Read models of transfers, kept up to date by event store subscriptions.

``transfers.summary`` follows the transfer streams into ``TransferSummary``.
``transfers.totals`` follows the accounts' streams into the trial balance.
Every money event keeps ``balances + in_transit - deposited + withdrawn``
unchanged on its own, so the equation holds after any set of events handled
exactly once, whatever their order across partitions:

    external deposit     balances += a, deposited += a
    external withdrawal  balances -= a, withdrawn += a
    transfer debit       balances -= a, in_transit += a
    transfer credit      balances += a, in_transit -= a
    transfer refund      balances += a, in_transit -= a
"""

import uuid

from accounts.events import AccountOpened, Deposited, Withdrawn
from eventstore.readmodels import insert_rows
from eventstore.store import RecordedEvent
from eventstore.subscriptions import subscription

from .events import Credited, Debited, Failed, Refunded, TransferRequested
from .models import Totals, TotalsAccount, TransferSummary

# Each handler takes whole batches: it reads the rows the batch touches in one
# query per table, applies the events in order in Python and writes the rows
# back in bulk, so a batch costs the same few queries however many events it
# holds. One partition has one writer at a time and a stream lives in one
# partition, so nobody else writes these rows meanwhile (the trial balance is
# kept per partition for that reason).

# Summary


def reset_summary() -> None:
    TransferSummary.objects.all().delete()


summary = subscription(
    "transfers.summary",
    batch_size=1000,
    reset=reset_summary,
    read_models=(TransferSummary,),
)

_SUMMARY_FIELDS = [field.attname for field in TransferSummary._meta.concrete_fields]
# The columns an event after the request may change.
_SUMMARY_CHANGING = [
    "status",
    "failure_reason",
    "version",
    "debited_at",
    "completed_at",
    "refunded_at",
    "failed_at",
]


def _transfer_id(recorded: RecordedEvent) -> uuid.UUID:
    from .domain import Transfer

    return Transfer.id_from_stream(recorded.stream_id)


class TransferAlreadyRequested(ValueError):
    """A second request of a transfer already projected."""


@summary.handles_batch(TransferRequested, Debited, Credited, Refunded, Failed)
def on_transfer_batch(batch: list[RecordedEvent]) -> None:
    ids = [_transfer_id(recorded) for recorded in batch]
    rows = TransferSummary.objects.in_bulk(set(ids))
    # Rows requested in this batch are inserted; rows stored before, updated.
    created: dict[uuid.UUID, TransferSummary] = {}
    changed: dict[uuid.UUID, TransferSummary] = {}
    for transfer_id, recorded in zip(ids, batch, strict=True):
        event = recorded.event
        cls = type(event)
        row = rows.get(transfer_id)
        if cls is TransferRequested:
            if row is not None:
                raise TransferAlreadyRequested(f"transfer {transfer_id} exists")
            rows[transfer_id] = created[transfer_id] = TransferSummary(
                id=transfer_id,
                from_account=event.from_account,
                to_account=event.to_account,
                amount=event.amount,
                currency=event.currency,
                reference=event.reference,
                requested_by=event.requested_by,
                status=TransferSummary.Status.PENDING,
                version=recorded.version,
                created_at=recorded.recorded_at,
            )
            continue
        if row is None:
            # A step of an unknown transfer changes nothing.
            continue
        row.version = recorded.version
        if cls is Debited:
            row.status = TransferSummary.Status.DEBITED
            row.debited_at = recorded.recorded_at
        elif cls is Credited:
            row.status = TransferSummary.Status.COMPLETED
            row.completed_at = recorded.recorded_at
        elif cls is Refunded:
            row.refunded_at = recorded.recorded_at
        else:
            row.status = TransferSummary.Status.FAILED
            row.failure_reason = event.reason
            row.failed_at = recorded.recorded_at
        if transfer_id not in created:
            changed[transfer_id] = row
    if created:
        insert_rows(
            TransferSummary,
            _SUMMARY_FIELDS,
            [
                tuple(getattr(row, name) for name in _SUMMARY_FIELDS)
                for row in created.values()
            ],
        )
    if changed:
        TransferSummary.objects.bulk_create(
            changed.values(),
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=_SUMMARY_CHANGING,
        )


# Totals (the trial balance)


def reset_totals() -> None:
    Totals.objects.all().delete()
    TotalsAccount.objects.all().delete()


totals = subscription(
    "transfers.totals",
    batch_size=1000,
    reset=reset_totals,
    read_models=(Totals, TotalsAccount),
)

_FIGURES = ["balances", "in_transit", "deposited", "withdrawn"]


def _currencies_of(batch: list[RecordedEvent]) -> dict[str, str]:
    """Return the currency of every account the batch moves money on.

    Read for each batch, not kept in the process: a repair rewrites the read
    model under the other worker processes, which would go on trusting what
    they read before it.
    """
    moved = {
        recorded.stream_id
        for recorded in batch
        if type(recorded.event) is not AccountOpened
    }
    return dict(
        TotalsAccount.objects.filter(stream_id__in=moved).values_list(
            "stream_id", "currency"
        )
    )


def _changes(event) -> dict[str, int]:
    """Return what a money event adds to its currency's figures."""
    amount = event.amount
    if type(event) is Deposited:
        if event.transfer_id is None:
            return {"balances": amount, "deposited": amount}
        # A transfer's credit or refund: the amount arrives from transit.
        return {"balances": amount, "in_transit": -amount}
    if event.transfer_id is None:
        return {"balances": -amount, "withdrawn": amount}
    # A transfer's debit: the amount leaves for transit.
    return {"balances": -amount, "in_transit": amount}


@totals.handles_batch(AccountOpened, Deposited, Withdrawn)
def on_account_batch(batch: list[RecordedEvent]) -> None:
    opened = [
        TotalsAccount(stream_id=recorded.stream_id, currency=recorded.event.currency)
        for recorded in batch
        if type(recorded.event) is AccountOpened
    ]
    currencies = _currencies_of(batch)
    # (currency, partition) -> figures to add, in order of first appearance.
    sums: dict[tuple[str, int], dict[str, int]] = {}
    opening: dict[str, str] = {}
    for recorded in batch:
        event = recorded.event
        if type(event) is AccountOpened:
            opening[recorded.stream_id] = event.currency
            continue
        currency = opening.get(recorded.stream_id) or currencies.get(recorded.stream_id)
        if currency is None:
            raise TotalsAccount.DoesNotExist(
                f"no currency known for {recorded.stream_id}"
            )
        figures = sums.setdefault(
            (currency, recorded.partition), dict.fromkeys(_FIGURES, 0)
        )
        for name, value in _changes(event).items():
            figures[name] += value
    if opened:
        # A second opening of a counted account breaks the primary key here.
        TotalsAccount.objects.bulk_create(opened)
    if sums:
        _add(sums)


def _add(sums: dict[tuple[str, int], dict[str, int]]) -> None:
    """Add figures to the trial balance rows, creating the missing ones."""
    partitions = {partition for _, partition in sums}
    stored = {
        (row.currency, row.partition): row
        for row in Totals.objects.filter(
            currency__in={currency for currency, _ in sums},
            partition__in=partitions,
        )
    }
    updated, created = [], []
    for key, figures in sums.items():
        row = stored.get(key)
        if row is None:
            created.append(Totals(currency=key[0], partition=key[1], **figures))
            continue
        for name, value in figures.items():
            setattr(row, name, getattr(row, name) + value)
        updated.append(row)
    if updated:
        Totals.objects.bulk_update(updated, _FIGURES)
    if created:
        Totals.objects.bulk_create(created)
