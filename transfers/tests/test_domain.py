"""The Transfer aggregate's rules, without a database."""

import uuid

import pytest

from accounts.domain import MAX_AMOUNT
from accounts.errors import InvalidAmount, InvalidReference
from transfers.domain import FailureReason, Status, Transfer, outcome_event_id
from transfers.errors import SameAccount, TransferStateError
from transfers.events import Credited, Debited, Failed, Refunded, TransferRequested


def requested(**overrides) -> Transfer:
    values = {
        "id": uuid.uuid4(),
        "from_account": uuid.uuid4(),
        "to_account": uuid.uuid4(),
        "amount": 500,
        "currency": "EUR",
        "reference": "rent",
        "requested_by": 7,
    }
    return Transfer.request(**{**values, **overrides})


def recorded_events(transfer: Transfer) -> list:
    return [new.event for new in transfer.pending_events]


def test_a_requested_transfer_is_pending_and_records_the_request():
    transfer = requested(amount=250)

    assert transfer.status == Status.PENDING
    [event] = recorded_events(transfer)
    assert isinstance(event, TransferRequested)
    assert (event.amount, event.currency, event.reference) == (250, "EUR", "rent")


def test_a_transfer_to_the_same_account_is_refused():
    account = uuid.uuid4()
    with pytest.raises(SameAccount):
        requested(from_account=account, to_account=account)


@pytest.mark.parametrize("amount", [0, -1, 1.5, True, "10", MAX_AMOUNT + 1])
def test_an_amount_that_is_not_a_positive_integer_is_refused(amount):
    with pytest.raises(InvalidAmount):
        requested(amount=amount)


def test_the_largest_amount_is_accepted():
    assert requested(amount=MAX_AMOUNT).amount == MAX_AMOUNT


def test_a_reference_longer_than_140_characters_is_refused():
    requested(reference="x" * 140)
    with pytest.raises(InvalidReference):
        requested(reference="x" * 141)


def test_debited_then_credited_completes_the_transfer():
    transfer = requested()
    transfer.record_debited()
    transfer.record_credited()

    assert transfer.status == Status.COMPLETED
    assert [type(e) for e in recorded_events(transfer)] == [
        TransferRequested,
        Debited,
        Credited,
    ]


def test_a_refused_debit_fails_the_pending_transfer_with_its_reason():
    transfer = requested()
    transfer.record_refused(FailureReason.INSUFFICIENT_FUNDS)

    assert transfer.status == Status.FAILED
    assert transfer.failure_reason == "insufficient_funds"
    assert not transfer.refunded


def test_a_refused_credit_refunds_then_fails_the_debited_transfer():
    transfer = requested()
    transfer.record_debited()
    transfer.record_refunded(FailureReason.TARGET_FROZEN)

    assert transfer.status == Status.FAILED
    assert transfer.refunded
    assert transfer.failure_reason == "target_frozen"
    assert [type(e) for e in recorded_events(transfer)][-2:] == [Refunded, Failed]


@pytest.mark.parametrize(
    "steps",
    [
        ["record_credited"],
        ["record_debited", "record_debited"],
        ["record_debited", "record_credited", "record_credited"],
        ["record_debited", "record_credited", "record_refunded"],
        ["record_refused", "record_debited"],
        ["record_debited", "record_refused"],
    ],
)
def test_steps_out_of_order_are_bugs_not_refusals(steps):
    transfer = requested()
    *before, last = steps
    for step in before:
        _do(transfer, step)
    with pytest.raises(TransferStateError):
        _do(transfer, last)


def _do(transfer: Transfer, step: str) -> None:
    method = getattr(transfer, step)
    if step in ("record_refused", "record_refunded"):
        method(FailureReason.TARGET_CLOSED)
    else:
        method()


def test_outcome_events_have_ids_derived_from_the_transfer():
    transfer = requested()
    transfer.record_debited()

    debited = transfer.pending_events[-1]
    assert debited.event_id == outcome_event_id(transfer.id, "debited")
    assert outcome_event_id(transfer.id, "debited") != outcome_event_id(
        uuid.uuid4(), "debited"
    )


def test_replaying_the_events_rebuilds_the_same_state():
    transfer = requested()
    transfer.record_debited()
    transfer.record_refunded(FailureReason.TARGET_CLOSED)

    replayed = Transfer(transfer.id)
    for event in recorded_events(transfer):
        replayed.apply(event)

    assert vars(replayed) | {"_pending": []} == vars(transfer) | {"_pending": []}
    assert Transfer.id_from_stream(transfer.stream_id) == transfer.id
