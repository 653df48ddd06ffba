"""A NUL character in a query or form value answers 400, never a 500.

PostgreSQL text cannot hold NUL, so such a value reaching a filter or a form
would fail in the database. A cookie holding one is dropped.
"""

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def root_client(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.mark.parametrize(
    ("changelist", "parameter"),
    [
        ("eventstore_event", "stream"),
        ("eventstore_event", "kind"),
        ("eventstore_event", "event_type"),
        ("accounts_accountbalance", "currency"),
        ("transfers_transfersummary", "failure_reason"),
        ("eventstore_checkrun", "name"),
    ],
)
def test_a_nul_in_an_admin_filter_answers_400(root_client, changelist, parameter):
    response = root_client.get(
        reverse(f"admin:{changelist}_changelist"), {parameter: "a\x00b"}
    )

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")


def test_a_nul_in_a_parameter_name_answers_400(root_client):
    response = root_client.get(
        reverse("admin:eventstore_event_changelist"), {"stream\x00": "a"}
    )

    assert response.status_code == 400


def test_a_nul_in_a_posted_form_value_answers_400(root_client):
    response = root_client.post(
        reverse("admin:operations_retry"), {"subscription": "\x00", "partition": "3"}
    )

    assert response.status_code == 400


def test_a_nul_in_an_api_query_answers_400_in_the_api_error_format(root_client):
    response = root_client.get("/api/transfers/", {"account": "a\x00b"})

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "detail"}
    assert body["code"] == "parse_error"


def test_an_uploaded_file_holding_nul_bytes_is_not_refused(root_client):
    """Only names and values are checked: a file's bytes are its own business."""
    response = root_client.post(
        reverse("admin:operations_retry"),
        {
            "subscription": "testapp.tallies",
            "partition": "3",
            "attachment": SimpleUploadedFile("data.bin", b"a\x00b"),
        },
    )

    assert response.status_code == 302


# Django unquotes a quoted cookie value, octal escapes included: this
# printable header (which proxies pass on) is a session key holding a NUL.
NUL_SESSION_COOKIE = 'sessionid="aaaaaaaa\\000bbbb"'


@pytest.mark.parametrize("path", ["/api/accounts/", "/api/transfers/"])
def test_a_session_cookie_holding_nul_is_ignored_by_the_api(client, path):
    response = client.get(path, HTTP_COOKIE=NUL_SESSION_COOKIE)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("path", "answers"), [("/healthz", {200, 503}), ("/admin/", {302})]
)
def test_a_session_cookie_holding_nul_is_ignored_by_pages(client, path, answers):
    response = client.get(path, HTTP_COOKIE=NUL_SESSION_COOKIE)

    assert response.status_code in answers


def test_a_good_session_cookie_beside_a_nul_one_still_signs_in(root_client):
    root_client.cookies["other"] = "a\x00b"

    assert root_client.get(reverse("admin:index")).status_code == 200
