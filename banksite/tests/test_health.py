"""``/healthz``: database, broker and subscription lag, for load balancers."""

import uuid

import pytest

from eventstore.store import append
from eventstore.tests.testapp.events import Counted

from .servers import closed_port, hung_port, returns_within

pytestmark = pytest.mark.django_db


def test_health_is_ok_with_database_and_broker_reachable(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert body["subscriptions"]["stopped_partitions"] == 0
    assert response["Cache-Control"].startswith("max-age=0")


def test_health_reports_subscription_lag(client):
    # Appended in the test's transaction, which never commits: no worker is
    # nudged, so the test app's subscription stays behind.
    append(f"tally-{uuid.uuid4()}", [Counted(amount=1), Counted(amount=2)], 0)

    body = client.get("/healthz").json()

    assert body["subscriptions"]["lag"] >= 2
    assert body["status"] == "ok"


def test_health_is_unavailable_when_the_broker_is_unreachable(admin_client, settings):
    with closed_port() as port:
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
        response = admin_client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is False
    assert "refused" in body["broker"]["error"].lower()


def test_why_a_check_failed_is_logged_not_shown_to_anyone_who_asks(
    client, settings, caplog
):
    with closed_port() as port:
        settings.CELERY_BROKER_URL = f"redis://:s3cret@127.0.0.1:{port}/0"
        response = client.get("/healthz")

    assert response.status_code == 503
    assert set(response.json()["broker"]) == {"ok", "ms"}
    assert "health check _ping_broker failed" in caplog.text


def test_health_is_unavailable_when_the_broker_hangs(client, settings):
    settings.DEBUG = True  # shows why; the request runs in another thread
    with hung_port() as port:
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
        response = returns_within(30, lambda: client.get("/healthz"))

    assert response.status_code == 503
    body = response.json()
    assert body["broker"]["ok"] is False
    assert "timeout" in body["broker"]["error"].lower()


@pytest.mark.parametrize(
    "broker_url",
    ["redis://127.0.0.1:6379/notanumber", "reddis://127.0.0.1:6379/0"],
)
def test_health_is_unavailable_when_the_broker_url_is_malformed(
    admin_client, settings, broker_url
):
    settings.CELERY_BROKER_URL = broker_url

    response = admin_client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is False
    assert body["broker"]["error"]


def test_health_is_unavailable_when_the_partition_count_is_not_the_stores(
    admin_client, settings, unchecked_partition_count
):
    from eventstore.tests.streams import count_placing_apart

    stream = f"tally-{uuid.uuid4()}"
    append(stream, [Counted(amount=1)], 0)
    settings.EVENTSTORE_PARTITIONS = count_placing_apart(
        stream, settings.EVENTSTORE_PARTITIONS
    )

    response = admin_client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"]["ok"] is False
    assert "EVENTSTORE_PARTITIONS is" in body["database"]["error"]


def test_health_answers_get_and_head_only(client):
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405
