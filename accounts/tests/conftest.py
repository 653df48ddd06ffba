"""Fixtures of the accounts tests: users in each role, built as users are."""

import pytest
from django.contrib.auth.models import Group, Permission, User

from accounts import services
from accounts.permissions import GROUP_PERMISSIONS


def group(name: str) -> Group:
    """Return a role's group (a transactional test's flush empties the table)."""
    found, created = Group.objects.get_or_create(name=name)
    if created:
        found.permissions.set(
            Permission.objects.filter(
                content_type__app_label="accounts",
                codename__in=GROUP_PERMISSIONS[name],
            )
        )
    return found


def make_user(username: str, *groups: str, **extra) -> User:
    user = User.objects.create_user(username=username, password="pw", **extra)
    for name in groups:
        user.groups.add(group(name))
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
