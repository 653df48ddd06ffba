"""The write side: one function per command.

Each loads the Account from its events, acts, and saves at the version it
loaded, rerunning the whole command when another writer got there first
(``eventstore.aggregates.run_command``). Each runs inside the caller's
transaction when there is one (a subscription handler calls these inside its
own), and is never ``durable``. Refusals raise ``accounts.errors`` before
anything is written.

``actor`` is a Django user, or ``None`` for the system; its id is recorded in
the events' metadata (ids only: no personal data in events).
"""

import uuid

from django.db import transaction

from eventstore.aggregates import Repository, run_command
from eventstore.context import current_metadata
from eventstore.errors import AggregateNotFound, ConcurrencyError
from eventstore.store import append, event_exists, lock_partitions, read_stream

from .domain import (
    Account,
    TransferStep,
    generate_account_number,
    is_valid_account_number,
    parse_account_id,
)
from .errors import AccountNumberTaken, UnknownAccount
from .events import AccountNumberClaimed

# A generated number is random over 10**10 values; a clash is rare, and a few
# fresh draws make a failure practically impossible.
NUMBER_ATTEMPTS = 5

_accounts: Repository[Account] = Repository(Account)


def actor_metadata(actor) -> dict:
    """Return the metadata naming who acts: a user's id, or the system.

    With no ``actor`` here, one the context names (a transfer step an
    operator resumed, say) stands, rather than "system" beside it.
    """
    actor_id = getattr(actor, "pk", None) if actor is not None else None
    if actor_id is not None:
        return {"actor_id": actor_id}
    if "actor_id" in current_metadata():
        return {}
    return {"actor": "system"}


def get_account(account_id) -> Account:
    """Load an account from its events; raise ``UnknownAccount`` if none."""
    try:
        return _accounts.load(parse_account_id(account_id))
    except AggregateNotFound:
        raise UnknownAccount(account=account_id) from None


def get_account_by_number(number: str) -> Account:
    """Load the account with this number; raise ``UnknownAccount`` if none.

    The number's stream names the account that claimed it, so an account
    opened a moment ago is found before its read model catches up.
    """
    if not is_valid_account_number(number):
        raise UnknownAccount(account=number)
    for recorded in read_stream(_number_stream(number)):
        return get_account(recorded.event.account_id)
    raise UnknownAccount(account=number)


def _number_stream(number: str) -> str:
    return f"account-number-{number}"


def open_account(*, owner, currency: str, number: str | None = None, actor) -> Account:
    """Open an account for ``owner`` (a user) with a given or generated number."""
    for _ in range(NUMBER_ATTEMPTS if number is None else 1):
        try:
            return _open_once(owner, currency, number, actor)
        except AccountNumberTaken:
            if number is not None:
                raise
    raise AccountNumberTaken("Could not find a free account number; try again.")


def _open_once(owner, currency, number, actor) -> Account:
    account = Account.open(
        id=uuid.uuid4(),
        number=number or generate_account_number(),
        currency=currency,
        owner_id=owner.pk,
    )
    number_stream = _number_stream(account.number)
    with transaction.atomic():
        # Two streams, two partitions: locked in the shared order first, so
        # two openings queue instead of deadlocking.
        lock_partitions([number_stream, account.stream_id])
        try:
            # Version 0 expected: the number's stream exists once at most.
            append(
                number_stream,
                [AccountNumberClaimed(account_id=account.id)],
                0,
                metadata=actor_metadata(actor),
            )
        except ConcurrencyError:
            raise AccountNumberTaken(number=account.number) from None
        _accounts.save(account, metadata=actor_metadata(actor))
    return account


def deposit(
    *,
    account_id: uuid.UUID,
    amount: int,
    actor,
    reference: str = "",
    transfer: TransferStep | None = None,
) -> Account:
    """Put money into an account, at most once per transfer step."""
    return _move_money(
        account_id,
        actor,
        transfer,
        lambda account: account.deposit(amount, reference=reference, transfer=transfer),
    )


def withdraw(
    *,
    account_id: uuid.UUID,
    amount: int,
    actor,
    reference: str = "",
    transfer: TransferStep | None = None,
) -> Account:
    """Take money out of an account, at most once per transfer step."""
    return _move_money(
        account_id,
        actor,
        transfer,
        lambda account: account.withdraw(
            amount, reference=reference, transfer=transfer
        ),
    )


def freeze(*, account_id: uuid.UUID, actor) -> Account:
    """Stop money moving in or out (a transfer's refund still comes in)."""
    return _change(account_id, actor, Account.freeze)


def unfreeze(*, account_id: uuid.UUID, actor) -> Account:
    """Let money move again."""
    return _change(account_id, actor, Account.unfreeze)


def close(*, account_id: uuid.UUID, actor) -> Account:
    """Close an empty account for good."""
    return _change(account_id, actor, Account.close)


def pay_out(*, account_id: uuid.UUID, actor, reference: str = "") -> Account:
    """Pay out the money a refund brought to a closed account."""
    return _change(
        account_id, actor, lambda account: account.pay_out(reference=reference)
    )


def _move_money(account_id, actor, transfer: TransferStep | None, act) -> Account:
    def once() -> Account:
        # A repeat of a transfer step is found before any rule runs: the
        # step's event id is derived, not kept in the aggregate.
        if transfer is not None and event_exists(transfer.event_id()):
            return get_account(account_id)
        account = get_account(account_id)
        act(account)
        _accounts.save(account, metadata=actor_metadata(actor))
        return account

    return run_command(once)


def _change(account_id, actor, act) -> Account:
    def once() -> Account:
        account = get_account(account_id)
        act(account)
        _accounts.save(account, metadata=actor_metadata(actor))
        return account

    return run_command(once)
