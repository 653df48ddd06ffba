"""``Idempotency-Key`` on the API's POSTs."""

import datetime
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from accounts import services
from accounts.errors import InsufficientFunds
from accounts.events import Deposited, Withdrawn
from accounts.models import IdempotencyKey
from accounts.tasks import purge_idempotency_keys
from eventstore.store import read_stream

from .test_api import client_for, post, url


def deposits(account_id) -> int:
    return sum(
        isinstance(e.event, Deposited) for e in read_stream(f"account-{account_id}")
    )


def withdrawals(account_id) -> int:
    return sum(
        isinstance(e.event, Withdrawn) for e in read_stream(f"account-{account_id}")
    )


@pytest.mark.django_db
def test_a_repeat_with_the_same_key_returns_the_first_answer_and_changes_nothing(
    teller, customer, open_account
):
    account = open_account(customer)
    client = client_for(teller)
    headers = {"HTTP_IDEMPOTENCY_KEY": "dep-1"}
    first = post(client, url(account.id, "deposit"), {"amount": 10}, **headers)
    second = post(client, url(account.id, "deposit"), {"amount": 10}, **headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert services.get_account(account.id).balance == 10
    assert deposits(account.id) == 1


@pytest.mark.django_db
def test_the_key_is_recorded_in_the_events_metadata(teller, customer, open_account):
    account = open_account(customer)
    post(
        client_for(teller),
        url(account.id, "deposit"),
        {"amount": 10},
        HTTP_IDEMPOTENCY_KEY="dep-meta",
    )
    last = list(read_stream(f"account-{account.id}"))[-1]
    assert last.metadata["idempotency_key"] == "dep-meta"


@pytest.mark.django_db
def test_a_repeated_create_returns_the_same_account_and_location(customer):
    client = client_for(customer)
    first = post(
        client, "/api/accounts/", {"currency": "EUR"}, HTTP_IDEMPOTENCY_KEY="open-1"
    )
    second = post(
        client, "/api/accounts/", {"currency": "EUR"}, HTTP_IDEMPOTENCY_KEY="open-1"
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert first["Location"] == second["Location"]


@pytest.mark.django_db
def test_the_same_key_with_another_body_answers_409(teller, customer, open_account):
    account = open_account(customer)
    client = client_for(teller)
    headers = {"HTTP_IDEMPOTENCY_KEY": "dep-2"}
    post(client, url(account.id, "deposit"), {"amount": 10}, **headers)
    response = post(client, url(account.id, "deposit"), {"amount": 11}, **headers)
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"
    other_endpoint = post(
        client, url(account.id, "withdraw"), {"amount": 10}, **headers
    )
    assert other_endpoint.status_code == 409
    assert services.get_account(account.id).balance == 10


@pytest.mark.django_db
def test_keys_belong_to_one_user(teller, customer, open_account):
    from .conftest import make_user

    account = open_account(customer)
    other_teller = make_user("tom", "teller")
    headers = {"HTTP_IDEMPOTENCY_KEY": "same"}
    post(client_for(teller), url(account.id, "deposit"), {"amount": 1}, **headers)
    post(client_for(other_teller), url(account.id, "deposit"), {"amount": 1}, **headers)
    assert services.get_account(account.id).balance == 2


@pytest.mark.django_db
def test_a_repeat_of_a_refused_withdrawal_replays_the_refusal_and_moves_no_money(
    teller, customer, open_account
):
    account = open_account(customer, balance=100)
    client = client_for(teller)
    headers = {"HTTP_IDEMPOTENCY_KEY": "wd-1"}
    refused = post(client, url(account.id, "withdraw"), {"amount": 500}, **headers)
    without_key = post(client, url(account.id, "withdraw"), {"amount": 500})
    assert (refused.status_code, refused.json()) == (422, without_key.json())
    services.deposit(account_id=account.id, amount=1000, actor=teller)

    repeat = post(client, url(account.id, "withdraw"), {"amount": 500}, **headers)

    assert (repeat.status_code, repeat.json()) == (422, refused.json())
    assert repeat["Idempotent-Replayed"] == "true"
    assert withdrawals(account.id) == 0
    assert services.get_account(account.id).balance == 1100


@pytest.mark.django_db
@pytest.mark.parametrize(
    "action, body, status",
    [("withdraw", {"amount": 0}, 400), ("freeze", {}, 403)],
)
def test_an_error_other_than_a_refusal_leaves_the_key_free_for_a_retry(
    teller, customer, open_account, action, body, status
):
    account = open_account(customer, balance=5)
    client = client_for(teller)
    headers = {"HTTP_IDEMPOTENCY_KEY": "wd-2"}
    failed = post(client, url(account.id, action), body, **headers)
    assert failed.status_code == status
    assert not IdempotencyKey.objects.filter(key="wd-2").exists()
    retried = post(client, url(account.id, "withdraw"), {"amount": 5}, **headers)
    assert retried.status_code == 200
    assert not retried.has_header("Idempotent-Replayed")


@pytest.mark.django_db
def test_an_expired_key_is_claimed_afresh(teller, customer, open_account):
    account = open_account(customer)
    client = client_for(teller)
    headers = {"HTTP_IDEMPOTENCY_KEY": "old"}
    post(client, url(account.id, "deposit"), {"amount": 1}, **headers)
    IdempotencyKey.objects.filter(key="old").update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    again = post(client, url(account.id, "deposit"), {"amount": 1}, **headers)
    assert again.status_code == 200
    assert again.json()["balance"] == 2


@pytest.mark.django_db
def test_the_scheduled_purge_deletes_only_expired_keys(teller, customer, open_account):
    account = open_account(customer)
    client = client_for(teller)
    for key in ("stale", "fresh"):
        post(
            client, url(account.id, "deposit"), {"amount": 1}, HTTP_IDEMPOTENCY_KEY=key
        )
    IdempotencyKey.objects.filter(key="stale").update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    purged = purge_idempotency_keys.apply().get()

    assert purged == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]


@pytest.mark.django_db
def test_keys_expire_after_the_documented_time(
    teller, customer, open_account, settings
):
    account = open_account(customer)
    post(
        client_for(teller),
        url(account.id, "deposit"),
        {"amount": 1},
        HTTP_IDEMPOTENCY_KEY="ttl",
    )
    stored = IdempotencyKey.objects.get(key="ttl")
    assert stored.expires_at - stored.created_at == datetime.timedelta(
        hours=settings.IDEMPOTENCY_KEY_TTL_HOURS
    )


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "ünï"])
def test_a_malformed_key_answers_400(teller, customer, open_account, key):
    account = open_account(customer)
    response = post(
        client_for(teller),
        url(account.id, "deposit"),
        {"amount": 1},
        HTTP_IDEMPOTENCY_KEY=key,
    )
    assert response.status_code == 400
    assert services.get_account(account.id).balance == 0


def sent_twice_at_once(user, path: str, body: dict, *, key: str) -> list:
    """POST the same body with the same key from two threads at once."""
    start = threading.Barrier(2)
    answers = []

    def send():
        try:
            client = client_for(user)
            start.wait()
            answers.append(post(client, path, body, HTTP_IDEMPOTENCY_KEY=key))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_one_key_run_once(
    teller, customer, open_account, monkeypatch
):
    account = open_account(customer)
    real_deposit = services.deposit

    def slow_deposit(**kwargs):
        # Hold the first request's transaction open while the second arrives.
        time.sleep(0.5)
        return real_deposit(**kwargs)

    monkeypatch.setattr(services, "deposit", slow_deposit)
    answers = sent_twice_at_once(
        teller, url(account.id, "deposit"), {"amount": 25}, key="race"
    )

    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert sorted(a.has_header("Idempotent-Replayed") for a in answers) == [False, True]
    assert deposits(account.id) == 1
    assert services.get_account(account.id).balance == 25


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_one_key_both_answer_the_first_refusal(
    teller, customer, open_account, monkeypatch
):
    account = open_account(customer, balance=100)
    real_withdraw = services.withdraw

    def fund_in_another_transaction():
        try:
            services.deposit(account_id=account.id, amount=1000, actor=teller)
        finally:
            connection.close()

    def refused_then_funded(**kwargs):
        try:
            return real_withdraw(**kwargs)
        except InsufficientFunds:
            # Money arrives while the refused request still holds the key (and
            # the other request waits on it): running the command again would
            # now take it.
            funding = threading.Thread(target=fund_in_another_transaction)
            funding.start()
            funding.join()
            time.sleep(0.5)
            raise

    monkeypatch.setattr(services, "withdraw", refused_then_funded)
    answers = sent_twice_at_once(
        teller, url(account.id, "withdraw"), {"amount": 500}, key="refused-race"
    )

    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].json() == answers[1].json()
    assert answers[0].json()["code"] == "insufficient_funds"
    assert sorted(a.has_header("Idempotent-Replayed") for a in answers) == [False, True]
    assert withdrawals(account.id) == 0
    assert services.get_account(account.id).balance == 1100
