"""With the database unreachable the site answers 503 JSON, never a 500."""

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .servers import (
    clean_environment,
    closed_port,
    free_port,
    gunicorn,
    request,
    stop,
    wait_for_http,
)


@pytest.fixture(scope="module")
def site_without_database(tmp_path_factory):
    """A real gunicorn whose DATABASE_URL points at a closed port."""
    log = tmp_path_factory.mktemp("unavailable") / "gunicorn.log"
    port = free_port()
    with closed_port() as database_port:
        env = clean_environment(
            DJANGO_SETTINGS_MODULE="banksite.settings",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{database_port}/bank",
            CACHE_URL="locmem://",
        )
        process = gunicorn(port, env, log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{base}/healthz", process, log)
            yield base
        finally:
            stop(process)


def test_health_answers_503_when_the_database_is_unreachable(site_without_database):
    status, headers, body = request(f"{site_without_database}/healthz")

    assert status == 503
    assert headers["Content-Type"] == "application/json"
    report = json.loads(body)
    assert report["status"] == "unavailable"
    assert report["database"]["ok"] is False


def test_an_admin_login_answers_503_json(site_without_database):
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
    assert json.loads(answer.value.read())["code"] == "database_unavailable"


def test_the_api_answers_503_json(site_without_database):
    status, headers, body = request(
        f"{site_without_database}/api/accounts/",
        headers={"Authorization": "Token 0123456789abcdef0123456789abcdef01234567"},
    )

    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"]
    assert json.loads(body)["code"] == "database_unavailable"
