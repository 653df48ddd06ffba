"""With the database unreachable, or the data a request needs held too long
by another session, the site answers 503 JSON, never a 500."""

import contextlib
import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse
from rest_framework.authtoken.models import Token

from accounts.domain import Account
from conftest import database_url
from eventstore.store import partition_for
from eventstore.subscriptions import catch_up
from transfers.tests.factories import make_user, open_account

from .servers import (
    clean_environment,
    closed_port,
    free_port,
    gunicorn,
    request,
    stop,
    wait_for_http,
)


@contextlib.contextmanager
def gunicorn_without_database(log, **env):
    """Yield the address of a real gunicorn whose DATABASE_URL is a closed port."""
    port = free_port()
    with closed_port() as database_port:
        env = clean_environment(
            DJANGO_SETTINGS_MODULE="banksite.settings",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{database_port}/bank",
            CACHE_URL="locmem://",
            **env,
        )
        process = gunicorn(port, env, log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{base}/healthz", process, log)
            yield base
        finally:
            stop(process)


@pytest.fixture(scope="module")
def site_without_database(tmp_path_factory):
    log = tmp_path_factory.mktemp("unavailable") / "gunicorn.log"
    with gunicorn_without_database(log) as base:
        yield base


def test_health_answers_503_when_the_database_is_unreachable(site_without_database):
    status, headers, body = request(f"{site_without_database}/healthz")

    assert status == 503
    assert headers["Content-Type"] == "application/json"
    report = json.loads(body)
    assert report["status"] == "unavailable"
    assert report["database"]["ok"] is False


def test_health_reports_the_outage_to_a_browser_with_a_session_cookie(tmp_path):
    # An operator signed in to the back office looks at it because the bank
    # is down. Deciding whether to show why a check failed must not load the
    # session from the unreachable database (DEBUG off: it shows it anyway).
    with gunicorn_without_database(
        tmp_path / "gunicorn.log", DEBUG="0", SECRET_KEY="unavailable-" + "k" * 50
    ) as base:
        status, headers, body = request(
            f"{base}/healthz",
            headers={"Cookie": "sessionid=abcdefghijklmnopqrstuvwxyz012345"},
        )

    assert status == 503
    assert headers["Content-Type"] == "application/json"
    report = json.loads(body)
    assert report["status"] == "unavailable", report
    assert report["database"]["ok"] is False
    assert "error" not in report["database"]  # not known to be staff
    assert "broker" in report


def test_an_admin_login_answers_503_in_plain_text(site_without_database):
    # The form and its CSRF cookie need no database; checking the password does.
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = f"{site_without_database}/admin/login/"
    form = opener.open(url, timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode(
        {"username": "staff", "password": "secret", "csrfmiddlewaretoken": token}
    ).encode()

    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(
            urllib.request.Request(url, data=data, headers={"Referer": url}), timeout=10
        )

    assert answer.value.code == 503
    assert answer.value.headers["Retry-After"]
    assert answer.value.headers["Content-Type"] == "text/plain"
    assert answer.value.read().decode() == (
        "The database is unavailable. Try again shortly."
    )


def test_the_api_answers_503_json(site_without_database):
    status, headers, body = request(
        f"{site_without_database}/api/accounts/",
        headers={"Authorization": "Token 0123456789abcdef0123456789abcdef01234567"},
    )

    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"]
    assert json.loads(body)["code"] == "database_unavailable"


BUSY = {"code": "busy", "detail": "Another operation holds this data; try again."}


@contextlib.contextmanager
def partition_held(account_id):
    """Hold the lock of the account's partition from another session.

    As a worker that hangs in the middle of its batch does, until the server
    ends its session (DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS, a minute).
    """
    partition = partition_for(Account.stream_id_for(account_id))
    with psycopg.connect(database_url(connection.settings_dict["NAME"])) as holder:
        holder.execute("SELECT eventstore_lock_partition(%s)", [partition])
        yield
        holder.rollback()


@pytest.mark.django_db(transaction=True)
def test_an_api_write_to_a_held_partition_answers_503_busy_in_time(tmp_path):
    # Waiting for the lock up to the statement timeout (a minute), the request
    # outlived gunicorn's worker timeout: gunicorn's HTML 500.
    owner = make_user(is_superuser=True, is_staff=True)
    token = Token.objects.create(user=owner).key
    account = open_account(owner)
    port = free_port()
    env = clean_environment(
        DJANGO_SETTINGS_MODULE="banksite.test_settings",
        DATABASE_URL=database_url(connection.settings_dict["NAME"]),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CELERY_TASK_DEFAULT_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
        DATABASE_LOCK_TIMEOUT_MS="500",
    )
    log = tmp_path / "gunicorn.log"
    web = gunicorn(port, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", web, log)
        with partition_held(account.id):
            started = time.monotonic()
            status, headers, body = request(
                f"{base}/api/accounts/{account.id}/deposit/",
                method="POST",
                data={"amount": 5},
                headers={"Authorization": f"Token {token}"},
                timeout=20,
            )
            waited = time.monotonic() - started
    finally:
        stop(web)

    assert (status, headers["Content-Type"]) == (503, "application/json"), body[:200]
    assert headers["Retry-After"]
    assert json.loads(body) == BUSY
    assert waited < 5


@pytest.mark.django_db(transaction=True)
def test_a_back_office_write_to_a_held_partition_answers_503_busy(client):
    staff = make_user(is_superuser=True, is_staff=True)
    account = open_account(staff)
    catch_up()  # the back office shows the account's read model
    client.force_login(staff)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = 500")  # this session's, for the test
    try:
        with partition_held(account.id):
            response = client.post(
                reverse("admin:accounts_accountbalance_deposit", args=[account.id]),
                {"amount": "1", "reason": "counter", "form_id": uuid.uuid4()},
            )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    assert response.status_code == 503
    assert response["Content-Type"] == "text/plain"  # read in a browser
    assert response["Retry-After"]
    assert response.content.decode() == BUSY["detail"]
