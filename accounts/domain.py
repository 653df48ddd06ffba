"""The Account aggregate: plain Python, rules checked before events recorded.

Rules (each has its own test in ``tests/test_domain.py``):

- An amount is an ``int`` of minor units (cents), at least 1 and at most
  ``MAX_AMOUNT`` (10**12 minor units: ten billion in a two-decimal
  currency). Never a float, never a ``bool``.
- A balance stays between 0 and ``MAX_BALANCE`` (10**15 minor units, well
  inside a PostgreSQL ``bigint``): a withdrawal never takes it below zero. A
  refund, never refused, may take it above (by at most what the transfer
  took out); a payout empties a closed account in one withdrawal, however
  far its refunds took it above ``MAX_AMOUNT``.
- A frozen account refuses deposits and withdrawals; a closed account
  refuses everything; except a transfer's refund (a deposit with step
  ``refund``), which is never refused, so money is never stranded in transit.
- Closing needs a zero balance.
- The currency is an ISO 4217 code from ``SUPPORTED_CURRENCIES``.
- An account number is ten digits followed by two ISO 7064 MOD 97-10 check
  digits (as IBANs use): ``int(number) % 97 == 1``.
"""

import dataclasses
import re
import secrets
import uuid
from typing import ClassVar, Literal

from eventstore.aggregates import Aggregate

from .errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotClosed,
    AccountNotEmpty,
    BalanceLimitExceeded,
    InsufficientFunds,
    InvalidAccountNumber,
    InvalidAmount,
    InvalidReference,
    InvalidTransferStep,
    NothingToPayOut,
    UnknownAccount,
    UnsupportedCurrency,
)
from .events import AccountOpened, Closed, Deposited, Frozen, Unfrozen, Withdrawn

MAX_AMOUNT = 10**12
MAX_BALANCE = 10**15
MAX_REFERENCE_LENGTH = 140
SUPPORTED_CURRENCIES = (
    "AUD",
    "CAD",
    "CHF",
    "CZK",
    "DKK",
    "EUR",
    "GBP",
    "JPY",
    "NOK",
    "PLN",
    "SEK",
    "USD",
)
ACCOUNT_NUMBER_LENGTH = 12
_ACCOUNT_NUMBER = re.compile(rf"[0-9]{{{ACCOUNT_NUMBER_LENGTH}}}")

# Fixed forever: the event ids of every stored transfer step derive from it.
TRANSFER_STEP_NAMESPACE = uuid.UUID("8f0c4d7e-2b1a-4c55-9a57-3f1e6b2d9c10")
TRANSFER_STEPS = ("debit", "credit", "refund")

Step = Literal["debit", "credit", "refund"]


class Status:
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True)
class TransferStep:
    """The transfer and the step of it that a money movement serves."""

    transfer_id: uuid.UUID
    step: Step

    def __post_init__(self):
        if self.step not in TRANSFER_STEPS:
            raise InvalidTransferStep(step=self.step)
        if not isinstance(self.transfer_id, uuid.UUID):
            raise InvalidTransferStep("transfer_id must be a UUID.")

    def event_id(self) -> uuid.UUID:
        """Return the event id of this step: the same however often it runs."""
        return uuid.uuid5(TRANSFER_STEP_NAMESPACE, f"{self.transfer_id}:{self.step}")


def check_digits(base: str) -> str:
    """Return the two MOD 97-10 check digits that complete ``base``."""
    return f"{98 - int(base) * 100 % 97:02d}"


def generate_account_number() -> str:
    """Return a random, well-formed account number (uniqueness is checked later)."""
    base = f"{secrets.randbelow(10 ** (ACCOUNT_NUMBER_LENGTH - 2)):010d}"
    return base + check_digits(base)


def is_valid_account_number(number: object) -> bool:
    return (
        isinstance(number, str)
        and _ACCOUNT_NUMBER.fullmatch(number) is not None
        and int(number) % 97 == 1
    )


def validate_account_number(number: object) -> str:
    if not is_valid_account_number(number):
        raise InvalidAccountNumber(number=number)
    return number


def parse_account_id(account_id: object) -> uuid.UUID:
    """Return an account id as a UUID; a malformed one names no account."""
    if isinstance(account_id, uuid.UUID):
        return account_id
    try:
        return uuid.UUID(str(account_id))
    except ValueError:
        raise UnknownAccount(account=account_id) from None


def validate_currency(currency: object) -> str:
    if currency not in SUPPORTED_CURRENCIES:
        raise UnsupportedCurrency(
            f"Unsupported currency {currency!r}; use one of "
            f"{', '.join(SUPPORTED_CURRENCIES)}.",
            currency=currency,
        )
    return currency


def validate_amount(amount: object) -> int:
    if (
        not isinstance(amount, int)
        or isinstance(amount, bool)
        or not 1 <= amount <= MAX_AMOUNT
    ):
        raise InvalidAmount(
            f"The amount must be an integer from 1 to {MAX_AMOUNT} minor units.",
            amount=amount,
        )
    return amount


def validate_reference(reference: object) -> str:
    if not isinstance(reference, str) or len(reference) > MAX_REFERENCE_LENGTH:
        raise InvalidReference(
            f"The reference must be text of at most {MAX_REFERENCE_LENGTH} characters."
        )
    # PostgreSQL's JSON cannot hold NUL, nor a UTF-8 encoder a lone surrogate:
    # refused here, whoever calls, not as a database error after the rules.
    if "\x00" in reference or _unencodable(reference):
        raise InvalidReference("The reference may not hold NUL or lone surrogates.")
    return reference


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class Account(Aggregate):
    """A bank account: its balance and status, rebuilt from its events."""

    stream_prefix: ClassVar[str] = "account"
    snapshot_every: ClassVar[int | None] = 50
    snapshot_schema_version: ClassVar[int] = 1

    def __init__(self, id: uuid.UUID):
        super().__init__(id)
        self.number = ""
        self.currency = ""
        self.owner_id: int | None = None
        self.balance = 0
        self.status = Status.OPEN

    # Commands: check every rule, then record.

    @classmethod
    def open(
        cls, *, id: uuid.UUID, number: str, currency: str, owner_id: int
    ) -> "Account":
        """Open a new account (the number's uniqueness is the service's job)."""
        validate_account_number(number)
        validate_currency(currency)
        account = cls(id)
        account._record(
            AccountOpened(number=number, currency=currency, owner_id=owner_id)
        )
        return account

    def deposit(
        self, amount: int, *, reference: str = "", transfer: TransferStep | None = None
    ) -> None:
        """Put money in; a transfer's refund is never refused."""
        validate_amount(amount)
        validate_reference(reference)
        # A refund returns money this account sent: it is never refused.
        if transfer is None or transfer.step != "refund":
            self._require_open()
            if self.balance + amount > MAX_BALANCE:
                raise BalanceLimitExceeded(account=self.id, balance=self.balance)
        self._record_money(Deposited, amount, reference, transfer)

    def withdraw(
        self, amount: int, *, reference: str = "", transfer: TransferStep | None = None
    ) -> None:
        """Take money out; refuse to go below zero."""
        validate_amount(amount)
        validate_reference(reference)
        self._require_open()
        if amount > self.balance:
            raise InsufficientFunds(
                account=self.id, balance=self.balance, amount=amount
            )
        self._record_money(Withdrawn, amount, reference, transfer)

    def freeze(self) -> None:
        """Stop money moving; freezing a frozen account records nothing."""
        self._require_not_closed()
        if self.status != Status.FROZEN:
            self._record(Frozen())

    def unfreeze(self) -> None:
        """Let money move again; unfreezing an open account records nothing."""
        self._require_not_closed()
        if self.status == Status.FROZEN:
            self._record(Unfrozen())

    def close(self) -> None:
        """Close for good; only an empty account can be closed."""
        self._require_not_closed()
        if self.balance != 0:
            raise AccountNotEmpty(account=self.id, balance=self.balance)
        self._record(Closed())

    def pay_out(self, *, reference: str = "") -> None:
        """Pay out the whole balance of a closed account.

        Only a transfer's refund puts money into a closed account; staff pay
        it out to the owner (a withdrawal, so the books still balance).
        """
        validate_reference(reference)
        if self.status != Status.CLOSED:
            raise AccountNotClosed(account=self.id)
        if self.balance == 0:
            raise NothingToPayOut(account=self.id)
        self._record_money(Withdrawn, self.balance, reference, None)

    def _require_not_closed(self) -> None:
        if self.status == Status.CLOSED:
            raise AccountClosed(account=self.id)

    def _require_open(self) -> None:
        self._require_not_closed()
        if self.status == Status.FROZEN:
            raise AccountFrozen(account=self.id)

    def _record_money(self, event_class, amount, reference, transfer) -> None:
        self._record(
            event_class(
                amount=amount,
                reference=reference,
                transfer_id=transfer.transfer_id if transfer else None,
                step=transfer.step if transfer else None,
            ),
            event_id=transfer.event_id() if transfer else None,
        )

    # Events: change state, never check.

    def _when_account_opened(self, event: AccountOpened) -> None:
        self.number = event.number
        self.currency = event.currency
        self.owner_id = event.owner_id
        self.status = Status.OPEN

    def _when_deposited(self, event: Deposited) -> None:
        self.balance += event.amount

    def _when_withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.amount

    def _when_frozen(self, event: Frozen) -> None:
        self.status = Status.FROZEN

    def _when_unfrozen(self, event: Unfrozen) -> None:
        self.status = Status.OPEN

    def _when_closed(self, event: Closed) -> None:
        self.status = Status.CLOSED
