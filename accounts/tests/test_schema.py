"""The OpenAPI schema describes what the accounts endpoints really answer.

First a property-based run of schemathesis: every generated request (valid
and invalid data, including malformed path ids, bodies and query strings)
must answer something other than 5xx, with a status code, content type,
headers and body that the schema documents. Bounded: a few dozen examples per
operation, no deadline per example.

Then what generated requests rarely meet (a throttled client, a database
outage, a replayed ``Idempotency-Key``): each test shows the real answer,
then that the schema documents it.
"""

import json
import re

import pytest
import schemathesis
from django.core.cache import cache
from django.db import OperationalError
from rest_framework.throttling import UserRateThrottle

from accounts import selectors, services
from conftest import SCHEMA_CHECKS as CHECKS
from conftest import schema_test_settings

from .conftest import make_user
from .test_api import client_for, post, url

# transfers/tests/test_schema.py runs the same over the transfers paths.
schema = schemathesis.pytest.from_fixture("api_schema").include(
    path_regex=r"^/api/accounts"
)


@pytest.fixture
def existing_account(superuser_token):
    owner = make_user("carol")
    account = services.open_account(owner=owner, currency="EUR", actor=owner)
    return services.deposit(account_id=account.id, amount=10_000, actor=None)


@schema.parametrize()
@schema_test_settings
def test_the_accounts_api_answers_as_its_schema_says(
    case, superuser_token, existing_account
):
    account_id = (case.path_parameters or {}).get("account_id")
    if isinstance(account_id, str) and len(account_id) == 36:
        # A well-formed id: point it at a real account, so that successes
        # are generated too and not only 404s.
        case.path_parameters["account_id"] = str(existing_account.id)
    case.call_and_validate(
        headers={"Authorization": f"Token {superuser_token}"}, checks=CHECKS
    )


# Headers and parameters


def schema_of(client) -> dict:
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def documented_headers(schema: dict, path: str, method: str, status: str) -> set:
    response = schema["paths"][path][method]["responses"][status]
    return {name.lower() for name in response.get("headers", {})}


def operations(schema: dict):
    """Yield ``(path, method, operation)`` for every operation in the schema."""
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


@pytest.fixture
def fresh_throttle_counts():
    cache.clear()
    yield
    cache.clear()


def test_the_location_of_an_opened_account_is_documented(customer):
    response = post(client_for(customer), "/api/accounts/", {"currency": "EUR"})
    assert response.status_code == 201
    assert response["Location"] == url(response.json()["id"])

    headers = documented_headers(
        schema_of(client_for(customer)), "/api/accounts/", "post", "201"
    )

    assert "location" in headers


def test_every_429_documents_retry_after(customer, monkeypatch, fresh_throttle_counts):
    schema = schema_of(client_for(customer))
    monkeypatch.setattr(UserRateThrottle, "rate", "1/min", raising=False)
    client_for(customer).get("/api/accounts/")

    throttled = client_for(customer).get("/api/accounts/")

    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    undocumented = [
        f"{method.upper()} {path}"
        for path, method, _ in operations(schema)
        if "retry-after" not in documented_headers(schema, path, method, "429")
    ]
    assert undocumented == []


def test_every_503_documents_retry_after(customer, monkeypatch):
    schema = schema_of(client_for(customer))

    def unreachable(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(selectors, "account_list", unreachable)

    response = client_for(customer).get("/api/accounts/")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    undocumented = [
        f"{method.upper()} {path}"
        for path, method, _ in operations(schema)
        if "retry-after" not in documented_headers(schema, path, method, "503")
    ]
    assert undocumented == []


def test_every_answer_a_key_replays_documents_idempotent_replayed(
    teller, customer, open_account
):
    # Given a replayed success (201) and a replayed refusal (422)
    account = open_account(customer)
    opened, opened_again = (
        post(
            client_for(customer),
            "/api/accounts/",
            {"currency": "EUR"},
            HTTP_IDEMPOTENCY_KEY="open-1",
        )
        for _ in range(2)
    )
    refused, refused_again = (
        post(
            client_for(teller),
            url(account.id, "withdraw"),
            {"amount": 500},
            HTTP_IDEMPOTENCY_KEY="wd-1",
        )
        for _ in range(2)
    )
    assert (opened.status_code, refused.status_code) == (201, 422)
    assert opened_again.json()["id"] == opened.json()["id"]
    assert opened_again["Idempotent-Replayed"] == "true"
    assert refused_again["Idempotent-Replayed"] == "true"

    # When the schema is read
    schema = schema_of(client_for(customer))

    # Then every POST takes the key, and its 2xx and 422 document the header
    posts = [
        (path, operation)
        for path, method, operation in operations(schema)
        if method == "post"
    ]
    without_key = [
        path
        for path, operation in posts
        if "Idempotency-Key" not in {p["name"] for p in operation["parameters"]}
    ]
    undocumented = [
        f"{status} of POST {path}"
        for path, operation in posts
        for status in operation["responses"]
        if (status.startswith("2") or status == "422")
        and "idempotent-replayed"
        not in documented_headers(schema, path, "post", status)
    ]
    assert "idempotent-replayed" in documented_headers(
        schema, "/api/accounts/", "post", "201"
    )
    assert (without_key, undocumented) == ([], [])


def test_the_idempotency_key_parameter_declares_the_servers_rule(customer):
    schema = schema_of(client_for(customer))

    declared = [
        parameter["schema"]
        for _, _, operation in operations(schema)
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "Idempotency-Key"
    ]

    rule = {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": r"^[\x21-\x7e]{1,255}$",
    }
    assert declared
    assert [each for each in declared if each != rule] == []


@pytest.mark.parametrize(
    "key, accepted",
    [
        ("k" * 255, True),
        ("order-42/~!", True),
        ("k" * 256, False),
        ("order 42", False),
        ("", False),
        ("ünï", False),
    ],
    ids=["255-chars", "punctuation", "256-chars", "with-space", "empty", "non-ascii"],
)
def test_the_schema_allows_exactly_the_idempotency_keys_the_server_accepts(
    customer, key, accepted
):
    response = post(
        client_for(customer),
        "/api/accounts/",
        {"currency": "EUR"},
        HTTP_IDEMPOTENCY_KEY=key,
    )
    assert response.status_code == (201 if accepted else 400)
    if not accepted:
        assert "Idempotency-Key" in response.json()["fields"]

    schema = schema_of(client_for(customer))
    [declared] = [
        parameter["schema"]
        for parameter in schema["paths"]["/api/accounts/"]["post"]["parameters"]
        if parameter["name"] == "Idempotency-Key"
    ]
    allowed = (
        declared.get("minLength", 0) <= len(key) <= declared.get("maxLength", len(key))
        and re.search(declared.get("pattern", ""), key) is not None
    )

    assert allowed == accepted, f"the schema's {declared} and the server disagree"
