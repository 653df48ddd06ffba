"""Many withdrawals at once from one account, through the API, on PostgreSQL."""

import threading

import pytest
from django.db import connection

from accounts import services
from accounts.events import Withdrawn
from eventstore.store import read_stream

from .test_api import client_for, post, url

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8
REQUESTS_PER_THREAD = 3
INITIAL = 1_000


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
