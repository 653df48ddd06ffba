"""The one hierarchy of bank errors.

Each error carries a stable ``code`` and the HTTP ``status`` the API answers
with; ``accounts.api_errors.exception_handler`` turns them into
``{"code": ..., "detail": ...}``. Business refusals are 422, malformed input
400. This module imports nothing from Django: the domain raises these.
"""


class BankError(Exception):
    code = "bank_error"
    status = 422
    default_detail = "The bank refused the request."

    def __init__(self, detail: str | None = None, **context):
        self.detail = detail or self.default_detail
        self.context = context
        super().__init__(self.detail)


# 400: malformed input the domain refuses (the API's serializers catch most
# of it first, with per-field messages).


class InvalidAmount(BankError):
    code = "invalid_amount"
    status = 400
    default_detail = "The amount must be a positive integer of minor units."


class InvalidReference(BankError):
    code = "invalid_reference"
    status = 400
    default_detail = "The reference is too long."


class UnsupportedCurrency(BankError):
    code = "unsupported_currency"
    status = 400
    default_detail = "This currency is not supported."


class InvalidAccountNumber(BankError):
    code = "invalid_account_number"
    status = 400
    default_detail = "The account number is malformed or its check digits are wrong."


class InvalidTransferStep(BankError):
    code = "invalid_transfer_step"
    status = 400
    default_detail = "A transfer step is one of debit, credit, refund."


# 404: looked up and not found (or not yours).


class UnknownAccount(BankError):
    code = "unknown_account"
    status = 404
    default_detail = "No such account."


# 409: a conflict.


class AccountNumberTaken(BankError):
    code = "account_number_taken"
    status = 409
    default_detail = "This account number is already in use."


# 422: a business rule said no.


class InsufficientFunds(BankError):
    code = "insufficient_funds"
    default_detail = "The balance does not cover this withdrawal."


class AccountFrozen(BankError):
    code = "account_frozen"
    default_detail = "The account is frozen."


class AccountClosed(BankError):
    code = "account_closed"
    default_detail = "The account is closed."


class AccountNotEmpty(BankError):
    code = "account_not_empty"
    default_detail = "Only an account with a zero balance can be closed."


class AccountNotClosed(BankError):
    code = "account_not_closed"
    default_detail = "Only a closed account is paid out; withdraw from an open one."


class NothingToPayOut(BankError):
    code = "nothing_to_pay_out"
    default_detail = "The account holds no money to pay out."


class CurrencyMismatch(BankError):
    code = "currency_mismatch"
    default_detail = "The currencies do not match."


class BalanceLimitExceeded(BankError):
    code = "balance_limit_exceeded"
    default_detail = "The deposit would take the balance above the maximum."
