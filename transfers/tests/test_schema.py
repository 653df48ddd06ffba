"""The OpenAPI schema describes what the transfers endpoints really answer.

The same checks as accounts/tests/test_schema.py, over /api/transfers and
/api/totals: no 5xx, and every answer as the schema documents it. That
module also checks the headers every operation shares (``Retry-After``,
``Idempotent-Replayed``, ``Idempotency-Key``).
"""

import json

import pytest
import schemathesis

from conftest import SCHEMA_CHECKS as CHECKS
from conftest import schema_test_settings
from transfers import services

from .factories import make_user, open_account
from .test_api import client_for, post_transfer

schema = schemathesis.pytest.from_fixture("api_schema").include(
    path_regex=r"^/api/(transfers|totals)"
)


@pytest.fixture
def existing_transfer(superuser_token):
    owner = make_user()
    source = open_account(owner, balance=10_000)
    target = open_account(owner)
    return services.request_transfer(
        from_account=source.id, to_account=target.id, amount=100, actor=owner
    )


@schema.parametrize()
@schema_test_settings
def test_the_transfers_api_answers_as_its_schema_says(
    case, superuser_token, existing_transfer
):
    transfer_id = (case.path_parameters or {}).get("transfer_id")
    if isinstance(transfer_id, str) and len(transfer_id) == 36:
        # A well-formed id: point it at a real transfer, so that successes
        # are generated too and not only 404s.
        case.path_parameters["transfer_id"] = str(existing_transfer.id)
    case.call_and_validate(
        headers={"Authorization": f"Token {superuser_token}"}, checks=CHECKS
    )


@pytest.mark.django_db
def test_the_location_of_a_requested_transfer_is_documented():
    owner = make_user()
    source, target = open_account(owner, balance=1000), open_account(owner)
    response = post_transfer(owner, source, target)
    assert response.status_code == 202
    assert response["Location"] == f"/api/transfers/{response.json()['id']}/"

    schema = json.loads(client_for(owner).get("/api/schema/?format=json").content)

    created = schema["paths"]["/api/transfers/"]["post"]["responses"]["202"]
    assert "Location" in created.get("headers", {})
