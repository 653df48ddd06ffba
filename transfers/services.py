"""The write side of transfers: the request, and each step of the process.

``request_transfer`` is called by the API; the steps are called by the
process manager (``process.py``) inside a subscription's transaction, so
that the money event on the account, the outcome on the transfer and the
checkpoint commit together or not at all. Each step is idempotent: it acts
only on a transfer in the state it expects, and the accounts services move
money at most once per (transfer, step) whatever happens.
"""

import uuid

from django.db import transaction

from accounts import services as accounts
from accounts.domain import Account, TransferStep
from accounts.errors import (
    AccountClosed,
    AccountFrozen,
    BalanceLimitExceeded,
    CurrencyMismatch,
    InsufficientFunds,
    UnknownAccount,
)
from accounts.permissions import VIEW_ANY_ACCOUNT
from eventstore.aggregates import Repository, run_command
from eventstore.context import metadata_context
from eventstore.errors import AggregateNotFound
from eventstore.store import lock_partitions

from .domain import FailureReason, Status, Transfer
from .errors import (
    TransferAccountUnknown,
    TransferNotAllowed,
    TransferNotStranded,
    UnknownTransfer,
)

_transfers: Repository[Transfer] = Repository(Transfer)

_DEBIT_REFUSALS = {
    InsufficientFunds: FailureReason.INSUFFICIENT_FUNDS,
    AccountFrozen: FailureReason.SOURCE_FROZEN,
    AccountClosed: FailureReason.SOURCE_CLOSED,
}
_CREDIT_REFUSALS = {
    AccountFrozen: FailureReason.TARGET_FROZEN,
    AccountClosed: FailureReason.TARGET_CLOSED,
    BalanceLimitExceeded: FailureReason.TARGET_BALANCE_LIMIT,
}


def may_send_from_any_account(actor) -> bool:
    return actor is not None and actor.has_perm("transfers.transfer_from_any_account")


def request_transfer(
    *,
    actor,
    from_account: uuid.UUID,
    to_account: uuid.UUID,
    amount: int,
    reference: str = "",
    transfer_id: uuid.UUID | None = None,
) -> Transfer:
    """Start a transfer; the process manager moves the money after commit.

    Refuse a transfer between an account and itself, from an account that is
    unknown or not the actor's (one answer for both), to an unknown account,
    or between currencies. Staff who may see any account but not send from
    it (operations) are told so: ``TransferNotAllowed`` (403).
    """
    if from_account == to_account:
        Transfer.request(  # raises SameAccount, with the domain's wording
            id=uuid.uuid4(),
            from_account=from_account,
            to_account=to_account,
            amount=amount,
            currency="",
        )
    try:
        source = accounts.get_account(from_account)
    except UnknownAccount:
        raise TransferAccountUnknown("No such source account.") from None
    if source.owner_id != getattr(actor, "pk", None) and not (
        may_send_from_any_account(actor)
    ):
        if actor is not None and actor.has_perm(VIEW_ANY_ACCOUNT):
            # They can see the account (operations, say): no need to hide it.
            raise TransferNotAllowed()
        raise TransferAccountUnknown("No such source account.")
    try:
        target = accounts.get_account(to_account)
    except UnknownAccount:
        raise TransferAccountUnknown("No such target account.") from None
    if target.currency != source.currency:
        raise CurrencyMismatch(
            f"The source account holds {source.currency}, "
            f"the target account {target.currency}."
        )
    transfer = Transfer.request(
        id=transfer_id or uuid.uuid4(),
        from_account=source.id,
        to_account=target.id,
        amount=amount,
        currency=source.currency,
        reference=reference,
        requested_by=getattr(actor, "pk", None),
    )
    [requested] = _transfers.save(transfer, metadata=accounts.actor_metadata(actor))
    transfer.requested_at = requested.recorded_at
    return transfer


def get_transfer(transfer_id: uuid.UUID) -> Transfer:
    """Load a transfer from its events; raise ``UnknownTransfer`` if none."""
    try:
        return _transfers.load(transfer_id)
    except AggregateNotFound:
        raise UnknownTransfer() from None


def transfer_debit(*, transfer_id: uuid.UUID) -> Transfer:
    """Take a pending transfer's amount from its source, or fail the transfer."""

    def once() -> Transfer:
        transfer = _transfers.load(transfer_id)
        if transfer.status != Status.PENDING:
            return transfer  # already done: a redelivery
        try:
            accounts.withdraw(
                account_id=transfer.from_account,
                amount=transfer.amount,
                actor=None,
                reference=transfer.reference,
                transfer=TransferStep(transfer.id, "debit"),
            )
        except tuple(_DEBIT_REFUSALS) as refusal:
            transfer.record_refused(_DEBIT_REFUSALS[type(refusal)])
        else:
            transfer.record_debited()
        _transfers.save(transfer)
        return transfer

    return run_command(once)


def transfer_credit(*, transfer_id: uuid.UUID) -> Transfer:
    """Give a debited transfer's amount to its target, or refund the source."""

    def once() -> Transfer:
        transfer = _transfers.load(transfer_id)
        if transfer.status != Status.DEBITED:
            return transfer  # already done: a redelivery
        try:
            accounts.deposit(
                account_id=transfer.to_account,
                amount=transfer.amount,
                actor=None,
                reference=transfer.reference,
                transfer=TransferStep(transfer.id, "credit"),
            )
        except tuple(_CREDIT_REFUSALS) as refusal:
            _refund(transfer, _CREDIT_REFUSALS[type(refusal)])
        else:
            transfer.record_credited()
        _transfers.save(transfer)
        return transfer

    return run_command(once)


def _refund(transfer: Transfer, reason: FailureReason) -> None:
    # A refund is never refused: the money goes back to the source, even one
    # frozen or closed since.
    accounts.deposit(
        account_id=transfer.from_account,
        amount=transfer.amount,
        actor=None,
        reference=transfer.reference,
        transfer=TransferStep(transfer.id, "refund"),
    )
    transfer.record_refunded(reason)


# Finishing a stranded transfer (see ``selectors.skipped_step``). Both
# commands run the same steps as the process manager, so a repeat, a second
# operator or a worker racing them moves no money twice: the accounts find a
# step's derived event id already stored, and the transfer's expected version
# lets one outcome in. They also lock the partitions of the transfer and both
# accounts first, in the process manager's order, so the check that the
# transfer is stranded and the steps see one state.


def transfer_resume(*, transfer_id: uuid.UUID, actor) -> Transfer:
    """Run the steps left of a stranded transfer, as the process manager would.

    A ``pending`` one is debited (or fails, if the source refuses) and then
    credited (or refunded, if the target refuses); a ``debited`` one is
    credited or refunded. Refuse a transfer that is not stranded.
    """
    with transaction.atomic(), metadata_context(**accounts.actor_metadata(actor)):
        transfer = _lock_stranded(transfer_id)
        if transfer.status == Status.PENDING:
            transfer = transfer_debit(transfer_id=transfer.id)
        if transfer.status == Status.DEBITED:
            transfer = transfer_credit(transfer_id=transfer.id)
    return transfer


def transfer_refund(*, transfer_id: uuid.UUID, actor) -> Transfer:
    """Give a stranded ``debited`` transfer's amount back to its source.

    The transfer ends ``failed`` (``refunded_by_operations``). Refuse one that
    is not stranded, or is ``pending`` (no money left its source).
    """
    with transaction.atomic(), metadata_context(**accounts.actor_metadata(actor)):
        transfer = _lock_stranded(transfer_id)
        if transfer.status != Status.DEBITED:
            raise TransferNotStranded(
                f"Transfer {transfer.id} is {transfer.status}: no money has left "
                "its source, so there is nothing to refund. Resume it instead."
            )

        def once() -> Transfer:
            transfer = _transfers.load(transfer_id)
            if transfer.status != Status.DEBITED:
                return transfer  # finished meanwhile (the locks prevent it)
            _refund(transfer, FailureReason.REFUNDED_BY_OPERATIONS)
            _transfers.save(transfer)
            return transfer

        return run_command(once)


def _lock_stranded(transfer_id: uuid.UUID) -> Transfer:
    """Lock a transfer's partitions and return it; refuse it if not stranded."""
    from .selectors import skipped_step  # the selectors import the process

    transfer = get_transfer(transfer_id)
    lock_partitions(
        [
            transfer.stream_id,
            Account.stream_id_for(transfer.from_account),
            Account.stream_id_for(transfer.to_account),
        ]
    )
    transfer = get_transfer(transfer_id)  # as it is now, under the locks
    if transfer.is_finished:
        raise TransferNotStranded(
            f"Transfer {transfer.id} is {transfer.status}: there is nothing left to do."
        )
    if skipped_step(transfer) is None:
        raise TransferNotStranded(
            f"Transfer {transfer.id} is {transfer.status} and not stranded: the "
            "process manager has not skipped its next step and will run it. "
            "If it is stuck, see the transfers.process subscription on the "
            "operations page."
        )
    return transfer
