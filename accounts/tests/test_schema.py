"""Property-based run of schemathesis over the accounts endpoints' OpenAPI.

Every generated request (valid and invalid data, including malformed path
ids, bodies and query strings) must answer something other than 5xx, with a
status code, content type, headers and body that the schema documents.
Bounded: a few dozen examples per operation, no deadline per example.
"""

import pytest
import schemathesis

from accounts import services
from conftest import SCHEMA_CHECKS as CHECKS
from conftest import schema_test_settings

from .conftest import make_user

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
