"""The Transfer aggregate: a request to move money and the outcome of each step.

Plain Python. The process manager (``process.py``) moves the money through
the accounts services and records each outcome here; the checks below keep
the states in order: ``pending -> debited -> completed``, ``pending ->
failed`` and ``debited -> failed`` (after a refund).
"""

import datetime
import enum
import uuid

from accounts.domain import validate_amount, validate_reference
from eventstore.aggregates import Aggregate

from .errors import SameAccount, TransferStateError
from .events import Credited, Debited, Failed, Refunded, TransferRequested

# Namespace of the event ids derived from (transfer id, outcome), so that a
# step recorded twice is an idempotent repeat in the event store.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c1d1e-4b0a-4a53-9a53-7c1c5e1f0b27")


class Status(enum.StrEnum):
    PENDING = "pending"
    DEBITED = "debited"
    COMPLETED = "completed"
    FAILED = "failed"


class FailureReason(enum.StrEnum):
    INSUFFICIENT_FUNDS = "insufficient_funds"
    SOURCE_FROZEN = "source_frozen"
    SOURCE_CLOSED = "source_closed"
    TARGET_FROZEN = "target_frozen"
    TARGET_CLOSED = "target_closed"
    TARGET_BALANCE_LIMIT = "target_balance_limit"
    # Operations staff gave a stranded transfer's amount back to its source.
    REFUNDED_BY_OPERATIONS = "refunded_by_operations"


def outcome_event_id(transfer_id: uuid.UUID, outcome: str) -> uuid.UUID:
    """Return the event id of a transfer's outcome event (debited, credited...)."""
    return uuid.uuid5(_EVENT_ID_NAMESPACE, f"{transfer_id}:{outcome}")


class Transfer(Aggregate):
    stream_prefix = "transfer"

    def __init__(self, id: uuid.UUID):
        super().__init__(id)
        self.status: Status | None = None
        self.from_account: uuid.UUID | None = None
        self.to_account: uuid.UUID | None = None
        self.amount = 0
        self.currency = ""
        self.reference = ""
        self.requested_by: int | None = None
        self.failure_reason: str | None = None
        self.refunded = False
        # When the request was stored, if this object saved it: the event
        # store records the time beside each event, not in the aggregate.
        self.requested_at: datetime.datetime | None = None

    # Commands

    @classmethod
    def request(
        cls,
        *,
        id: uuid.UUID,
        from_account: uuid.UUID,
        to_account: uuid.UUID,
        amount: int,
        currency: str,
        reference: str = "",
        requested_by: int | None = None,
    ) -> "Transfer":
        """Start a transfer; refuse one between an account and itself."""
        if from_account == to_account:
            raise SameAccount()
        validate_amount(amount)
        validate_reference(reference)
        transfer = cls(id)
        transfer._record(
            TransferRequested(
                from_account=from_account,
                to_account=to_account,
                amount=amount,
                currency=currency,
                reference=reference,
                requested_by=requested_by,
            )
        )
        return transfer

    def record_debited(self) -> None:
        """Note that the amount left the source account."""
        self._require(Status.PENDING, "debited")
        self._record(
            Debited(from_account=self.from_account, to_account=self.to_account),
            event_id=outcome_event_id(self.id, "debited"),
        )

    def record_credited(self) -> None:
        """Note that the amount reached the target account."""
        self._require(Status.DEBITED, "credited")
        self._record(Credited(), event_id=outcome_event_id(self.id, "credited"))

    def record_refused(self, reason: FailureReason) -> None:
        """End a transfer whose source refused the debit."""
        self._require(Status.PENDING, "refused")
        self._record(
            Failed(reason=reason), event_id=outcome_event_id(self.id, "failed")
        )

    def record_refunded(self, reason: FailureReason) -> None:
        """End a transfer whose target refused the credit, after the refund."""
        self._require(Status.DEBITED, "refunded")
        self._record(Refunded(), event_id=outcome_event_id(self.id, "refunded"))
        self._record(
            Failed(reason=reason), event_id=outcome_event_id(self.id, "failed")
        )

    @classmethod
    def id_from_stream(cls, stream_id: str) -> uuid.UUID:
        return uuid.UUID(stream_id.removeprefix(f"{cls.stream_prefix}-"))

    @property
    def is_finished(self) -> bool:
        return self.status in (Status.COMPLETED, Status.FAILED)

    def _require(self, status: Status, outcome: str) -> None:
        if self.status != status:
            raise TransferStateError(
                f"transfer {self.id} is {self.status}, cannot be {outcome}"
            )

    # Applying events (never checks anything: history is history)

    def _when_transfer_requested(self, event: TransferRequested) -> None:
        self.status = Status.PENDING
        self.from_account = event.from_account
        self.to_account = event.to_account
        self.amount = event.amount
        self.currency = event.currency
        self.reference = event.reference
        self.requested_by = event.requested_by

    def _when_debited(self, event: Debited) -> None:
        self.status = Status.DEBITED

    def _when_credited(self, event: Credited) -> None:
        self.status = Status.COMPLETED

    def _when_refunded(self, event: Refunded) -> None:
        self.refunded = True

    def _when_failed(self, event: Failed) -> None:
        self.status = Status.FAILED
        self.failure_reason = event.reason
