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

from django.db.models import F

from accounts.events import AccountOpened, Deposited, Withdrawn
from eventstore.store import RecordedEvent
from eventstore.subscriptions import subscription

from .events import Credited, Debited, Failed, Refunded, TransferRequested
from .models import Totals, TotalsAccount, TransferSummary

# Summary


def reset_summary() -> None:
    TransferSummary.objects.all().delete()


summary = subscription("transfers.summary", batch_size=500, reset=reset_summary)


def _transfer_id(recorded: RecordedEvent):
    from .domain import Transfer

    return Transfer.id_from_stream(recorded.stream_id)


@summary.handles(TransferRequested)
def on_transfer_requested(recorded: RecordedEvent) -> None:
    event: TransferRequested = recorded.event
    TransferSummary.objects.create(
        id=_transfer_id(recorded),
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


def _update(recorded: RecordedEvent, **values) -> None:
    TransferSummary.objects.filter(id=_transfer_id(recorded)).update(
        version=recorded.version, **values
    )


@summary.handles(Debited)
def on_debited(recorded: RecordedEvent) -> None:
    _update(
        recorded, status=TransferSummary.Status.DEBITED, debited_at=recorded.recorded_at
    )


@summary.handles(Credited)
def on_credited(recorded: RecordedEvent) -> None:
    _update(
        recorded,
        status=TransferSummary.Status.COMPLETED,
        completed_at=recorded.recorded_at,
    )


@summary.handles(Refunded)
def on_refunded(recorded: RecordedEvent) -> None:
    _update(recorded, refunded_at=recorded.recorded_at)


@summary.handles(Failed)
def on_failed(recorded: RecordedEvent) -> None:
    _update(
        recorded,
        status=TransferSummary.Status.FAILED,
        failure_reason=recorded.event.reason,
        failed_at=recorded.recorded_at,
    )


# Totals (the trial balance)


def reset_totals() -> None:
    Totals.objects.all().delete()
    TotalsAccount.objects.all().delete()
    _currencies.clear()


totals = subscription("transfers.totals", batch_size=500, reset=reset_totals)

# An account's currency never changes once its opening is stored, so a cache
# filled from committed or about-to-commit rows is never wrong.
_currencies: dict[str, str] = {}


def _currency_of(stream_id: str) -> str:
    currency = _currencies.get(stream_id)
    if currency is None:
        currency = TotalsAccount.objects.get(stream_id=stream_id).currency
        _currencies[stream_id] = currency
    return currency


@totals.handles(AccountOpened)
def on_account_opened(recorded: RecordedEvent) -> None:
    TotalsAccount.objects.create(
        stream_id=recorded.stream_id, currency=recorded.event.currency
    )


def _add(recorded: RecordedEvent, *, balances: int, **changes: int) -> None:
    currency = _currency_of(recorded.stream_id)
    # One partition is handled by one worker at a time, so this row has one
    # writer and the update-or-create below cannot race.
    row = Totals.objects.filter(currency=currency, partition=recorded.partition)
    increments = {"balances": F("balances") + balances}
    increments.update({name: F(name) + value for name, value in changes.items()})
    if not row.update(**increments):
        Totals.objects.create(
            currency=currency,
            partition=recorded.partition,
            balances=balances,
            **changes,
        )


@totals.handles(Deposited)
def on_deposited(recorded: RecordedEvent) -> None:
    event: Deposited = recorded.event
    if event.transfer_id is None:
        _add(recorded, balances=event.amount, deposited=event.amount)
    else:  # a transfer's credit or refund: the amount arrives from transit
        _add(recorded, balances=event.amount, in_transit=-event.amount)


@totals.handles(Withdrawn)
def on_withdrawn(recorded: RecordedEvent) -> None:
    event: Withdrawn = recorded.event
    if event.transfer_id is None:
        _add(recorded, balances=-event.amount, withdrawn=event.amount)
    else:  # a transfer's debit: the amount leaves for transit
        _add(recorded, balances=-event.amount, in_transit=event.amount)
