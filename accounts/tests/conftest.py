"""Fixtures of the accounts tests: users in each role, built as users are."""

import pytest
from django.contrib.auth.models import Group, User

from accounts import services


def make_user(username: str, *groups: str, **extra) -> User:
    user = User.objects.create_user(username=username, password="pw", **extra)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


@pytest.fixture
def customer(db):
    return make_user("alice")


@pytest.fixture
def other_customer(db):
    return make_user("bob")


@pytest.fixture
def teller(db):
    return make_user("tina", "teller")


@pytest.fixture
def auditor(db):
    return make_user("aude", "auditor")


@pytest.fixture
def operator(db):
    return make_user("otto", "operations")


@pytest.fixture
def open_account(teller):
    """Open an account through the service, optionally with money in it."""

    def open_(owner, *, currency="EUR", balance=0):
        account = services.open_account(owner=owner, currency=currency, actor=owner)
        if balance:
            account = services.deposit(
                account_id=account.id, amount=balance, actor=teller
            )
        return account

    return open_
