"""Events of the Transfer aggregate.

A transfer records its request and the outcome of each step; the money
itself moves in the accounts' streams (Withdrawn / Deposited tagged with the
transfer id and step).
"""

import uuid
from dataclasses import dataclass

from eventstore.events import register_event


@register_event("transfers.TransferRequested")
@dataclass(frozen=True)
class TransferRequested:
    from_account: uuid.UUID
    to_account: uuid.UUID
    amount: int
    currency: str
    reference: str = ""
    # The id of the user who asked; never personal data.
    requested_by: int | None = None


@register_event("transfers.Debited")
@dataclass(frozen=True)
class Debited:
    """The amount left the source account and is in transit.

    It names both accounts so that the process manager knows, from the batch
    alone, which account streams the next step writes to (it locks their
    partitions before handling the batch).
    """

    from_account: uuid.UUID
    to_account: uuid.UUID


@register_event("transfers.Credited")
@dataclass(frozen=True)
class Credited:
    """The amount reached the target account: the transfer is completed."""


@register_event("transfers.Refunded")
@dataclass(frozen=True)
class Refunded:
    """The amount in transit went back to the source account."""


@register_event("transfers.Failed")
@dataclass(frozen=True)
class Failed:
    reason: str
