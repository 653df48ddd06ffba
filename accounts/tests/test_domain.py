"""The Account aggregate's rules, one test each, without a database."""

import uuid

import pytest

from accounts.domain import (
    MAX_AMOUNT,
    MAX_BALANCE,
    Account,
    Status,
    TransferStep,
    check_digits,
    generate_account_number,
    is_valid_account_number,
)
from accounts.errors import (
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
    UnsupportedCurrency,
)
from accounts.events import AccountOpened, Closed, Deposited, Frozen, Withdrawn


def opened(balance: int = 0) -> Account:
    account = Account.open(
        id=uuid.uuid4(), number=generate_account_number(), currency="EUR", owner_id=1
    )
    if balance:
        account.deposit(balance)
    return account


def recorded(account: Account) -> list:
    return [new.event for new in account.pending_events]


def test_opening_records_number_currency_and_owner():
    account = Account.open(
        id=uuid.uuid4(), number="000000000195", currency="EUR", owner_id=7
    )
    assert recorded(account) == [
        AccountOpened(number="000000000195", currency="EUR", owner_id=7)
    ]
    assert (account.balance, account.status) == (0, Status.OPEN)


def test_opening_with_an_unsupported_currency_is_refused():
    with pytest.raises(UnsupportedCurrency):
        Account.open(id=uuid.uuid4(), number="000000000195", currency="XYZ", owner_id=1)


def test_opening_with_a_lowercase_currency_is_refused():
    with pytest.raises(UnsupportedCurrency):
        Account.open(id=uuid.uuid4(), number="000000000195", currency="eur", owner_id=1)


def test_opening_with_wrong_check_digits_is_refused():
    with pytest.raises(InvalidAccountNumber):
        Account.open(id=uuid.uuid4(), number="000000000196", currency="EUR", owner_id=1)


@pytest.mark.parametrize("number", ["", "12345", "00000000019x", "0000000001950", 196])
def test_malformed_account_numbers_are_invalid(number):
    assert not is_valid_account_number(number)


def test_generated_account_numbers_carry_valid_check_digits():
    numbers = {generate_account_number() for _ in range(200)}
    assert len(numbers) == 200
    assert all(is_valid_account_number(number) for number in numbers)
    assert all(len(number) == 12 for number in numbers)


def test_check_digits_follow_iso_7064_mod_97_10():
    base = "1234567890"
    assert int(base + check_digits(base)) % 97 == 1


def test_deposit_adds_to_the_balance():
    account = opened()
    account.deposit(500, reference="cash")
    assert account.balance == 500
    assert recorded(account)[-1] == Deposited(amount=500, reference="cash")


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT + 1, 1.5, 10.0, "10", True, None])
def test_amounts_that_are_not_positive_integers_up_to_the_maximum_are_refused(amount):
    account = opened(balance=100)
    with pytest.raises(InvalidAmount):
        account.deposit(amount)
    with pytest.raises(InvalidAmount):
        account.withdraw(amount)


def test_the_maximum_amount_is_accepted():
    account = opened()
    account.deposit(MAX_AMOUNT)
    assert account.balance == MAX_AMOUNT


def test_a_reference_longer_than_140_characters_is_refused():
    with pytest.raises(InvalidReference):
        opened().deposit(1, reference="x" * 141)


@pytest.mark.parametrize("reference", ["rent\x00", "rent \ud800"])
def test_a_reference_the_event_store_cannot_hold_is_refused(reference):
    # A NUL or a lone surrogate would fail in PostgreSQL, after the rules.
    with pytest.raises(InvalidReference):
        opened().deposit(1, reference=reference)


def test_deposit_beyond_the_maximum_balance_is_refused():
    account = opened()
    account.balance = MAX_BALANCE - 1  # as if after many deposits
    with pytest.raises(BalanceLimitExceeded):
        account.deposit(2)


def test_withdraw_takes_from_the_balance():
    account = opened(balance=500)
    account.withdraw(200)
    assert account.balance == 300
    assert recorded(account)[-1] == Withdrawn(amount=200)


def test_withdraw_of_the_whole_balance_leaves_zero():
    account = opened(balance=500)
    account.withdraw(500)
    assert account.balance == 0


def test_withdraw_beyond_balance_is_refused():
    account = opened(balance=500)
    with pytest.raises(InsufficientFunds):
        account.withdraw(501)
    assert account.balance == 500
    assert len(account.pending_events) == 2  # opened, deposited: nothing new


def test_frozen_account_refuses_deposits():
    account = opened(balance=100)
    account.freeze()
    with pytest.raises(AccountFrozen):
        account.deposit(1)


def test_frozen_account_refuses_withdrawals():
    account = opened(balance=100)
    account.freeze()
    with pytest.raises(AccountFrozen):
        account.withdraw(1)


def test_frozen_account_refuses_a_transfer_credit():
    account = opened()
    account.freeze()
    with pytest.raises(AccountFrozen):
        account.deposit(1, transfer=TransferStep(uuid.uuid4(), "credit"))


def test_unfrozen_account_moves_money_again():
    account = opened(balance=100)
    account.freeze()
    account.unfreeze()
    account.withdraw(100)
    assert (account.balance, account.status) == (0, Status.OPEN)


def test_freezing_a_frozen_account_records_nothing():
    account = opened()
    account.freeze()
    account.freeze()
    assert recorded(account).count(Frozen()) == 1


def test_closed_account_refuses_deposits_withdrawals_and_freezing():
    account = opened()
    account.close()
    with pytest.raises(AccountClosed):
        account.deposit(1)
    with pytest.raises(AccountClosed):
        account.withdraw(1)
    with pytest.raises(AccountClosed):
        account.freeze()
    with pytest.raises(AccountClosed):
        account.unfreeze()
    with pytest.raises(AccountClosed):
        account.close()


def test_a_refund_is_never_refused_by_a_closed_account():
    account = opened()
    account.close()
    transfer = TransferStep(uuid.uuid4(), "refund")
    account.deposit(300, transfer=transfer)
    assert (account.balance, account.status) == (300, Status.CLOSED)


def test_a_closed_account_pays_out_a_refund_that_reached_it():
    account = opened()
    account.close()
    account.deposit(300, transfer=TransferStep(uuid.uuid4(), "refund"))

    account.pay_out(reference="cheque 12")

    assert recorded(account)[-1] == Withdrawn(amount=300, reference="cheque 12")
    assert (account.balance, account.status) == (0, Status.CLOSED)


def test_only_a_closed_account_holding_money_is_paid_out():
    account = opened(balance=300)
    with pytest.raises(AccountNotClosed):
        account.pay_out()
    account.withdraw(300)
    account.close()
    with pytest.raises(NothingToPayOut):
        account.pay_out()


def test_a_refund_is_never_refused_by_a_frozen_account():
    account = opened()
    account.freeze()
    account.deposit(300, transfer=TransferStep(uuid.uuid4(), "refund"))
    assert account.balance == 300


def test_closing_needs_a_zero_balance():
    account = opened(balance=1)
    with pytest.raises(AccountNotEmpty):
        account.close()
    account.withdraw(1)
    account.close()
    assert recorded(account)[-1] == Closed()
    assert account.status == Status.CLOSED


def test_a_frozen_empty_account_can_be_closed():
    account = opened()
    account.freeze()
    account.close()
    assert account.status == Status.CLOSED


def test_a_transfer_step_derives_a_stable_event_id():
    transfer_id = uuid.uuid4()
    debit = TransferStep(transfer_id, "debit")
    assert debit.event_id() == TransferStep(transfer_id, "debit").event_id()
    assert debit.event_id() != TransferStep(transfer_id, "credit").event_id()
    assert debit.event_id() != TransferStep(uuid.uuid4(), "debit").event_id()


def test_a_money_event_carries_its_transfer_and_derived_event_id():
    account = opened(balance=100)
    step = TransferStep(uuid.uuid4(), "debit")
    account.withdraw(40, reference="rent", transfer=step)
    new = account.pending_events[-1]
    assert new.event == Withdrawn(
        amount=40, reference="rent", transfer_id=step.transfer_id, step="debit"
    )
    assert new.event_id == step.event_id()


def test_an_unknown_transfer_step_is_refused():
    with pytest.raises(InvalidTransferStep):
        TransferStep(uuid.uuid4(), "steal")


def test_replaying_history_applies_events_without_checking_rules():
    account = Account(uuid.uuid4())
    for event in [
        AccountOpened(number="000000000195", currency="EUR", owner_id=1),
        Deposited(amount=5),
        Closed(),
        Withdrawn(amount=5),  # history is history, even if odd
    ]:
        account.apply(event)
    assert (account.balance, account.status) == (0, Status.CLOSED)
