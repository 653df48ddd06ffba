"""Events of the Account aggregate.

Money is an ``int`` of minor units. A money event may carry the transfer and
the step (``debit``, ``credit``, ``refund``) that caused it; such an event's
id is derived from the two (see ``domain.TransferStep``), so a repeat of the
same step is found before any rule runs. Users are referred to by id only:
no personal data is written into events.
"""

import uuid
from dataclasses import dataclass

from eventstore.events import register_event


@register_event("accounts.AccountOpened")
@dataclass(frozen=True)
class AccountOpened:
    number: str
    currency: str
    owner_id: int


@register_event("accounts.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int
    reference: str = ""
    transfer_id: uuid.UUID | None = None
    step: str | None = None


@register_event("accounts.Withdrawn")
@dataclass(frozen=True)
class Withdrawn:
    amount: int
    reference: str = ""
    transfer_id: uuid.UUID | None = None
    step: str | None = None


@register_event("accounts.Frozen")
@dataclass(frozen=True)
class Frozen:
    pass


@register_event("accounts.Unfrozen")
@dataclass(frozen=True)
class Unfrozen:
    pass


@register_event("accounts.Closed")
@dataclass(frozen=True)
class Closed:
    pass


@register_event("accounts.AccountNumberClaimed")
@dataclass(frozen=True)
class AccountNumberClaimed:
    """The first (and only) event of an ``account-number-<number>`` stream.

    The event store's unique (stream, version) makes the claim the guard that
    keeps account numbers unique, in the same transaction as the opening.
    """

    account_id: uuid.UUID
