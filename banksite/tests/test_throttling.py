"""Too many logins from one address answer 429; so do too many API calls.

Throttling fails open: with the cache (Redis) unreachable or hung, requests
go through, with a warning, instead of failing.
"""

import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import override_settings
from rest_framework.throttling import UserRateThrottle

from .servers import closed_port, hung_port, returns_within, settings_from_environment

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()
    yield
    cache.clear()


def test_admin_logins_beyond_the_rate_answer_429(client, settings):
    settings.LOGIN_THROTTLE_RATE = "3/min"
    attempt = {"username": "nobody", "password": "wrong"}

    answers = [client.post("/admin/login/", attempt).status_code for _ in range(4)]

    assert answers == [200, 200, 200, 429]  # the form shown again, then refused


def test_a_throttled_login_says_when_to_come_back(client, settings):
    settings.LOGIN_THROTTLE_RATE = "1/min"
    client.post("/admin/login/", {"username": "a", "password": "b"})

    response = client.post("/admin/login/", {"username": "a", "password": "b"})

    assert response.status_code == 429
    assert response["Content-Type"] == "text/plain"  # read in a browser
    assert response.content.decode().startswith("Too many login attempts.")
    assert 0 < int(response["Retry-After"]) <= 60


def test_logins_are_counted_per_client_address(client, settings):
    settings.LOGIN_THROTTLE_RATE = "1/min"
    client.post(
        "/admin/login/", {"username": "a", "password": "b"}, REMOTE_ADDR="10.0.0.1"
    )

    response = client.post(
        "/admin/login/", {"username": "a", "password": "b"}, REMOTE_ADDR="10.0.0.2"
    )

    assert response.status_code == 200


def test_logins_at_one_username_are_counted_from_any_address(client, settings):
    """Guesses at one staff member's password, spread over many addresses."""
    settings.LOGIN_USERNAME_THROTTLE_RATE = "3/hour"

    answers = [
        client.post(
            "/admin/login/",
            {"username": name, "password": "guess"},
            REMOTE_ADDR=f"10.0.0.{n}",
        ).status_code
        for n, name in enumerate(["tina", "Tina", " TINA", "tina"])
    ]
    other = client.post(
        "/admin/login/", {"username": "otto", "password": "x"}, REMOTE_ADDR="10.0.0.9"
    )

    assert answers == [200, 200, 200, 429]
    assert other.status_code == 200


def test_a_forged_x_forwarded_for_does_not_bypass_the_login_throttle(client, settings):
    settings.LOGIN_THROTTLE_RATE = "3/min"
    attempt = {"username": "nobody", "password": "wrong"}

    answers = [
        client.post(
            "/admin/login/",
            attempt,
            REMOTE_ADDR="203.0.113.9",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{i}",
        ).status_code
        for i in range(4)
    ]

    assert answers == [200, 200, 200, 429]


def test_showing_the_login_form_is_not_throttled(client, settings):
    settings.LOGIN_THROTTLE_RATE = "1/min"

    answers = [client.get("/admin/login/").status_code for _ in range(3)]

    assert answers == [200, 200, 200]


@pytest.mark.urls("banksite.tests.token_urls")
def test_token_logins_beyond_the_rate_answer_429(client, settings):
    settings.LOGIN_THROTTLE_RATE = "2/min"
    attempt = {"username": "nobody", "password": "wrong"}

    answers = [
        client.post("/api/auth/token/", attempt, content_type="application/json")
        for _ in range(3)
    ]

    assert [answer.status_code for answer in answers] == [400, 400, 429]
    assert answers[-1].json()["code"] == "throttled"


def test_api_calls_beyond_the_user_rate_answer_429(client, monkeypatch):
    monkeypatch.setattr(UserRateThrottle, "rate", "2/min", raising=False)
    client.force_login(get_user_model().objects.create_user("busy"))

    answers = [client.get("/api/accounts/") for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[-1].json()["code"] == "throttled"
    assert int(answers[-1]["Retry-After"]) > 0


def redis_cache_at(port: int) -> dict:
    """Return CACHES as the settings configure them for a Redis on ``port``."""
    return settings_from_environment(CACHE_URL=f"redis://127.0.0.1:{port}/13")["CACHES"]


def test_api_calls_go_through_when_the_cache_cannot_be_reached(client, caplog):
    client.force_login(get_user_model().objects.create_user("teller"))

    with closed_port() as port, override_settings(CACHES=redis_cache_at(port)):
        response = client.get("/api/accounts/")

    assert response.status_code == 200
    assert "cache unreachable" in caplog.text
    assert any(record.levelno == logging.WARNING for record in caplog.records)


def test_logins_go_through_when_the_cache_cannot_be_reached(client):
    attempt = {"username": "nobody", "password": "wrong"}

    with closed_port() as port, override_settings(CACHES=redis_cache_at(port)):
        response = client.post("/admin/login/", attempt)

    assert response.status_code == 200  # the form shown again


def test_logins_go_through_when_the_cache_hangs(client):
    attempt = {"username": "nobody", "password": "wrong"}

    with hung_port() as port, override_settings(CACHES=redis_cache_at(port)):
        response = returns_within(30, lambda: client.post("/admin/login/", attempt))

    assert response.status_code == 200
