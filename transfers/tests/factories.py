"""Test data built through the services, as a user would create it."""

import itertools

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from accounts import services as accounts
from eventstore.models import Checkpoint, SkippedEvent
from eventstore.subscriptions import (
    all_subscriptions,
    catch_up,
    get_subscription,
    skip_failed_event,
)
from eventstore.tests.streams import store_as_other_code
from transfers import services
from transfers.process import process

_names = itertools.count()


def make_user(*groups: str, username: str | None = None, **extra):
    user = get_user_model().objects.create_user(
        username=username or f"user{next(_names)}", password="pw-unused-123", **extra
    )
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


def open_account(owner, *, currency: str = "EUR", balance: int = 0):
    account = accounts.open_account(owner=owner, currency=currency, actor=owner)
    if balance:
        accounts.deposit(account_id=account.id, amount=balance, actor=None)
    return account


def run_process() -> None:
    """Run the process manager in this process until it has nothing left to do.

    A step's outcome (Debited) is a new event for the next round, which a
    worker would get from the nudge after commit.
    """
    while catch_up([get_subscription("transfers.process")]):
        pass


def run_projections() -> None:
    """Bring every read model (the accounts' too) up to date in this process."""
    catch_up([s for s in all_subscriptions() if s.name != "transfers.process"])


def strand(step: str) -> SkippedEvent:
    """Make the process manager fail at ``step``, then skip it as an operator does.

    ``debit`` fails on ``TransferRequested``, ``credit`` on ``Debited``.
    """

    def broken(**kwargs):
        raise RuntimeError(f"the {step} step is broken")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, f"transfer_{step}", broken)
        run_process()
    stopped = Checkpoint.objects.get(
        subscription=process.name, failed_sequence__isnull=False
    )
    return skip_failed_event(
        process.name,
        stopped.partition,
        sequence=stopped.failed_sequence,
        reason=f"the {step} step keeps failing",
    )


def strand_at_an_unreadable_event(transfer) -> SkippedEvent:
    """Store an event of the transfer this code cannot read, and skip it.

    As a ``Debited`` of a newer schema, left by a deploy rolled back, would
    stop the process manager until an operator skipped it.
    """
    store_as_other_code(
        transfer.stream_id, transfer.version + 1, "transfers.Debited", 99, {}
    )
    run_process()
    stopped = Checkpoint.objects.get(
        subscription=process.name, failed_sequence__isnull=False
    )
    return skip_failed_event(
        process.name,
        stopped.partition,
        sequence=stopped.failed_sequence,
        reason="this code cannot read it",
    )
