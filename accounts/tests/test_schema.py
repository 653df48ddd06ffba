"""Property-based run of schemathesis over the accounts endpoints' OpenAPI.

Every generated request (valid and invalid data, including malformed path
ids, bodies and query strings) must answer something other than 5xx, with a
status code, content type, headers and body that the schema documents.
Bounded: a few dozen examples per operation, no deadline per example.
"""

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from accounts import services
from banksite.wsgi import application

from .conftest import make_user

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def wsgi_in_test_transaction(db):
    """Keep the test's connection open across in-process WSGI calls.

    Django closes connections when a request ends; its test client switches
    that off, and so must a test that calls the WSGI app directly.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield application
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def accounts_api_schema(wsgi_in_test_transaction):
    config = SchemathesisConfig()
    config.projects.default.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    )
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", wsgi_in_test_transaction, config=config
    )


# The transfers API runs its own copy of this test over its paths.
schema = schemathesis.pytest.from_fixture("accounts_api_schema").include(
    path_regex=r"^/api/accounts"
)


@pytest.fixture
def superuser_token(db):
    from rest_framework.authtoken.models import Token

    user = make_user("root", is_superuser=True, is_staff=True)
    return Token.objects.create(user=user).key


@pytest.fixture
def existing_account(superuser_token):
    owner = make_user("carol")
    account = services.open_account(owner=owner, currency="EUR", actor=owner)
    return services.deposit(account_id=account.id, amount=10_000, actor=None)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
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
