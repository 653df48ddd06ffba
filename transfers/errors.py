"""Refusals of transfers, in the bank's one hierarchy of errors."""

from accounts.errors import BankError


class SameAccount(BankError):
    code = "same_account"
    default_detail = "A transfer needs two different accounts."


class TransferNotAllowed(BankError):
    """Staff who see the source account may not send from it (operations)."""

    code = "permission_denied"
    status = 403
    default_detail = "Only tellers start transfers from others' accounts."


class TransferAccountUnknown(BankError):
    """An account named in a transfer request does not exist (or is not yours).

    Unlike looking an account up (404), naming one in a request is a business
    refusal of the request: 422, with the code the accounts use.
    """

    code = "unknown_account"
    default_detail = "No such account."


class UnknownTransfer(BankError):
    code = "unknown_transfer"
    status = 404
    default_detail = "No such transfer."


class TransferStateError(Exception):
    """A step was recorded out of order: a bug, never a business refusal."""


class TransferNotStranded(BankError):
    """An operator asked to finish a transfer that nothing has stranded."""

    code = "transfer_not_stranded"
    status = 409
    default_detail = "This transfer is not stranded."
