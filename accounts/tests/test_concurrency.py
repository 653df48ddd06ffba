"""Accounts written at once from many threads, on PostgreSQL."""

import itertools
import threading
import time
import types
import uuid

import pytest
from django.db import connection

from accounts import services
from accounts.domain import Account, check_digits
from accounts.events import Withdrawn
from eventstore.store import partition_for, read_stream

from .test_api import client_for, post, url

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8
REQUESTS_PER_THREAD = 3
INITIAL = 1_000


def test_a_busy_account_takes_every_concurrent_deposit(teller, customer, open_account):
    """Each deposit that loses the race reruns first (it locks the stream's
    partition), so none runs out of reruns: no 409 however busy the account."""
    account = open_account(customer)
    threads_, deposits = 8, 25
    start = threading.Barrier(threads_)
    statuses = []

    def deposit_many():
        try:
            client = client_for(teller)
            start.wait()
            for _ in range(deposits):
                response = post(client, url(account.id, "deposit"), {"amount": 1})
                statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deposit_many) for _ in range(threads_)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * (threads_ * deposits)
    assert services.get_account(account.id).balance == threads_ * deposits


def test_concurrent_withdrawals_never_overdraw_and_add_up(
    teller, customer, open_account
):
    account = open_account(customer, balance=INITIAL)
    # 24 requests of 70..93: about twice what the balance covers.
    amounts = [
        [70 + t * REQUESTS_PER_THREAD + r for r in range(REQUESTS_PER_THREAD)]
        for t in range(THREADS)
    ]
    start = threading.Barrier(THREADS)
    answers: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def withdraw_many(mine):
        try:
            client = client_for(teller)
            start.wait()
            for amount in mine:
                response = post(client, url(account.id, "withdraw"), {"amount": amount})
                with lock:
                    answers.append(
                        (response.status_code, amount, response.json().get("balance"))
                    )
        finally:
            connection.close()

    threads = [threading.Thread(target=withdraw_many, args=(a,)) for a in amounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = {status for status, _, _ in answers}
    assert len(answers) == THREADS * REQUESTS_PER_THREAD
    assert statuses <= {200, 422, 409}, answers
    succeeded = [amount for status, amount, _ in answers if status == 200]
    final = services.get_account(account.id).balance
    assert final >= 0
    assert final == INITIAL - sum(succeeded)
    assert 422 in statuses  # more was asked than the balance covered
    assert all(balance >= 0 for status, _, balance in answers if status == 200)
    withdrawn = [
        e.event.amount
        for e in read_stream(f"account-{account.id}")
        if isinstance(e.event, Withdrawn)
    ]
    assert sorted(withdrawn) == sorted(succeeded)


def _number_in(partition: int) -> str:
    for n in itertools.count(1000):
        base = f"{n:010d}"
        number = base + check_digits(base)
        if partition_for(f"account-number-{number}") == partition:
            return number
    raise AssertionError("unreachable")


def _account_id_in(partition: int) -> uuid.UUID:
    while True:
        account_id = uuid.uuid4()
        if partition_for(Account.stream_id_for(account_id)) == partition:
            return account_id


def test_two_openings_whose_partitions_cross_both_succeed(
    customer, other_customer, monkeypatch
):
    """An opening appends to its number's stream, then to its account's.

    Here one writes to partitions 1 then 2, the other 2 then 1: taken one by
    one, the partition locks would deadlock and PostgreSQL would fail one.
    """
    plans = {
        customer: (_number_in(1), _account_id_in(2)),
        other_customer: (_number_in(2), _account_id_in(1)),
    }
    planned = threading.local()
    monkeypatch.setattr(
        services, "uuid", types.SimpleNamespace(uuid4=lambda: planned.account_id)
    )
    save = services._accounts.save

    def save_later(*args, **kwargs):
        time.sleep(0.3)  # both have appended to their number's stream by now
        return save(*args, **kwargs)

    monkeypatch.setattr(services._accounts, "save", save_later)
    start = threading.Barrier(len(plans))
    opened, failed = [], []

    def open_planned(owner):
        number, planned.account_id = plans[owner]
        try:
            start.wait()
            opened.append(
                services.open_account(
                    owner=owner, currency="EUR", number=number, actor=owner
                ).number
            )
        except Exception as error:
            failed.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=open_planned, args=(o,)) for o in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert failed == []
    assert sorted(opened) == sorted(number for number, _ in plans.values())
