"""The transfers API: status codes, answers and who may do what."""

import datetime
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts import services as accounts
from accounts.models import AccountBalance
from accounts.tests.bulk_rows import seed_accounts
from eventstore.subscriptions import catch_up, get_subscription
from eventstore.tests.plans import whole_table_reads
from transfers.models import TransferSummary

from .bulk_rows import seed_transfers, seed_transfers_from
from .factories import make_user, open_account, run_process, run_projections

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def alice():
    return make_user()


@pytest.fixture
def bob():
    return make_user()


@pytest.fixture
def pair(alice, bob):
    return open_account(alice, balance=1000), open_account(bob)


def post_transfer(user, source, target, amount=300, **extra):
    body = {
        "from_account": str(source.id),
        "to_account": str(target.id),
        "amount": amount,
        **extra,
    }
    return client_for(user).post("/api/transfers/", body, format="json")


def test_a_request_answers_202_with_the_pending_transfer_and_its_location(alice, pair):
    source, target = pair

    response = post_transfer(alice, source, target, reference="rent")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert (body["amount"], body["currency"], body["reference"]) == (300, "EUR", "rent")
    assert body["created_at"] is not None
    assert response["Location"] == f"/api/transfers/{body['id']}/"


def test_the_transfer_is_readable_at_once_and_after_it_completes(alice, pair):
    source, target = pair
    location = post_transfer(alice, source, target)["Location"]

    assert client_for(alice).get(location).json()["status"] == "pending"

    run_process()
    run_projections()
    body = client_for(alice).get(location).json()
    assert body["status"] == "completed"
    assert body["completed_at"] is not None
    assert body["failure_reason"] == ""


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda s, t: {"to_account": str(s.id)}, "same_account"),
        (lambda s, t: {"to_account": str(uuid.uuid4())}, "unknown_account"),
        (lambda s, t: {"from_account": str(uuid.uuid4())}, "unknown_account"),
    ],
)
def test_refusals_at_request_time_answer_422(alice, pair, change, code):
    source, target = pair

    response = post_transfer(alice, source, target, **change(source, target))

    assert response.status_code == 422
    assert response.json()["code"] == code


def test_a_transfer_between_currencies_answers_422(alice, bob):
    source = open_account(alice, balance=100)
    target = open_account(bob, currency="USD")

    response = post_transfer(alice, source, target, amount=10)

    assert (response.status_code, response.json()["code"]) == (
        422,
        "currency_mismatch",
    )


def test_someone_elses_source_answers_like_an_unknown_one(bob, pair):
    source, target = pair
    own = open_account(bob, balance=10)

    foreign = post_transfer(bob, source, own)
    unknown = post_transfer(bob, type(source)(uuid.uuid4()), own)

    assert foreign.status_code == unknown.status_code == 422
    assert foreign.json() == unknown.json()


@pytest.mark.parametrize("amount", [0, -5, 1.5, "10", True, 10**13, None])
def test_an_amount_that_is_not_a_positive_integer_answers_400(alice, pair, amount):
    source, target = pair

    response = post_transfer(alice, source, target, amount=amount)

    assert response.status_code == 400
    assert "amount" in response.json()["fields"]


@pytest.mark.parametrize("field", ["from_account", "to_account"])
def test_an_account_id_that_is_not_a_json_string_answers_400(alice, pair, field):
    # DRF's UUIDField takes an integer as the UUID's 128-bit value.
    source, target = pair
    account = {"from_account": source, "to_account": target}[field]

    for value in [0, True, account.id.int]:
        response = post_transfer(alice, source, target, **{field: value})

        assert response.status_code == 400, (value, response.json())
        assert field in response.json()["fields"]


def test_a_long_reference_and_unknown_fields_answer_400(alice, pair):
    source, target = pair
    assert post_transfer(alice, source, target, reference="x" * 141).status_code == 400
    assert post_transfer(alice, source, target, colour="red").status_code == 400


def test_no_credentials_answer_401(pair):
    source, target = pair
    assert post_transfer(None, source, target).status_code == 401
    assert client_for(None).get("/api/transfers/").status_code == 401
    assert client_for(None).get("/api/totals/").status_code == 401


def test_an_auditor_may_not_request_a_transfer(pair):
    source, target = pair
    assert post_transfer(make_user("auditor"), source, target).status_code == 403


def test_an_auditors_malformed_request_answers_403_not_400(pair):
    source, target = pair
    response = post_transfer(make_user("auditor"), source, target, amount="lots")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_operations_staff_who_see_the_source_are_refused_403_not_told_it_is_unknown(
    pair,
):
    source, target = pair
    operator = make_user("operations")
    assert client_for(operator).get(f"/api/accounts/{source.id}/").status_code == 200

    response = post_transfer(operator, source, target)

    assert response.status_code == 403
    assert response.json() == {
        "code": "permission_denied",
        "detail": "Only tellers start transfers from others' accounts.",
    }


def test_a_teller_may_transfer_between_any_accounts(pair):
    source, target = pair
    assert post_transfer(make_user("teller"), source, target).status_code == 202


def test_the_same_idempotency_key_and_body_gives_the_first_answer(alice, pair):
    source, target = pair
    client = client_for(alice)
    body = {"from_account": str(source.id), "to_account": str(target.id), "amount": 5}
    headers = {"HTTP_IDEMPOTENCY_KEY": "transfer-1"}

    first = client.post("/api/transfers/", body, format="json", **headers)
    again = client.post("/api/transfers/", body, format="json", **headers)
    other = client.post(
        "/api/transfers/", {**body, "amount": 6}, format="json", **headers
    )

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert other.status_code == 409
    run_projections()
    assert TransferSummary.objects.count() == 1


def test_a_customer_lists_only_transfers_of_their_accounts(alice, bob, pair):
    source, target = pair
    carol = make_user()
    carols = open_account(carol, balance=100)
    dave = open_account(make_user())
    post_transfer(alice, source, target, amount=1)
    post_transfer(carol, carols, dave, amount=2)
    run_projections()

    def amounts(user, query=""):
        response = client_for(user).get(f"/api/transfers/{query}")
        assert response.status_code == 200
        return sorted(row["amount"] for row in response.json()["results"])

    assert amounts(alice) == [1]
    assert amounts(bob) == [1]
    assert amounts(carol) == [2]
    assert amounts(make_user("auditor")) == [1, 2]
    assert amounts(make_user("auditor"), f"?account={dave.id}") == [2]


def created_at(row: dict) -> datetime.datetime:
    return datetime.datetime.fromisoformat(row["created_at"])


def test_customer_transfer_list_does_not_scan_every_transfer():
    """A customer's list reads their transfers, not every transfer.

    Here a customer with 3 accounts and 10 transfers among 200,000: both the
    count and the page are read from the from and to indexes.
    """
    seed_transfers()
    customer = make_user()
    seed_accounts(3, owner_id=customer.pk, first=700_000)
    mine = AccountBalance.objects.filter(owner=customer).values_list("id", flat=True)
    seed_transfers_from(mine[0], 10)

    with CaptureQueriesContext(connection) as captured:
        response = client_for(customer).get("/api/transfers/")

    assert response.status_code == 200
    assert response.json()["count"] == 10
    times = [created_at(row) for row in response.json()["results"]]
    assert times == sorted(times, reverse=True)
    assert whole_table_reads(captured, "transfers_transfersummary") == []


def test_staff_transfer_list_page_does_not_sort_every_transfer():
    """Staff's page of every transfer, newest first, is read on an index.

    Not a scan and a sort of every transfer on each request (the ``count``
    of the page-number contract reads them all, and is not looked at here).
    """
    seed_transfers()  # a year of transfers, 150 seconds apart

    with CaptureQueriesContext(connection) as captured:
        response = client_for(make_user("auditor")).get("/api/transfers/")

    assert response.status_code == 200
    times = [created_at(row) for row in response.json()["results"]]
    assert len(times) == 50 and times == sorted(times, reverse=True)
    assert whole_table_reads(captured, "transfers_transfersummary", counts=False) == []


def test_the_list_filters_by_status_and_refuses_bad_filters(alice, pair):
    source, target = pair
    post_transfer(alice, source, target, amount=100)
    post_transfer(alice, source, target, amount=5000)
    run_process()
    run_projections()
    client = client_for(alice)

    failed = client.get("/api/transfers/?status=failed").json()["results"]
    completed = client.get(f"/api/transfers/?status=completed&account={source.id}")

    assert [(row["amount"], row["failure_reason"]) for row in failed] == [
        (5000, "insufficient_funds")
    ]
    assert [row["amount"] for row in completed.json()["results"]] == [100]
    assert client.get("/api/transfers/?status=lost").status_code == 400
    assert client.get("/api/transfers/?account=nope").status_code == 400


def test_empty_list_filters_count_as_absent(alice, pair):
    source, target = pair
    post_transfer(alice, source, target, amount=100)
    run_projections()
    client = client_for(alice)

    for query in ["?status=", "?account=", "?status=&account="]:
        response = client.get(f"/api/transfers/{query}")
        assert response.status_code == 200, query
        assert [row["amount"] for row in response.json()["results"]] == [100]


def test_another_customers_transfer_answers_404(alice, bob, pair):
    source, target = pair
    location = post_transfer(alice, source, target)["Location"]
    stranger = make_user()

    assert client_for(stranger).get(location).status_code == 404
    run_projections()
    assert client_for(stranger).get(location).status_code == 404
    assert client_for(bob).get(location).status_code == 200
    assert client_for(alice).get("/api/transfers/nope/").status_code == 404


def test_the_target_owner_sees_the_transfer_before_their_account_is_projected(
    alice, bob, pair
):
    source, target = pair  # bob's account, opened a moment ago: not projected
    location = post_transfer(alice, source, target)["Location"]
    # The transfers' read model is ahead of the accounts' (another
    # subscription, another partition).
    catch_up([get_subscription("transfers.summary")])
    assert TransferSummary.objects.filter(id=location.split("/")[-2]).exists()
    assert not AccountBalance.objects.filter(id=target.id).exists()

    assert client_for(bob).get(location).status_code == 200
    assert client_for(make_user()).get(location).status_code == 404


def test_the_totals_are_for_staff_and_balance(alice, pair):
    source, target = pair
    post_transfer(alice, source, target)
    accounts.withdraw(account_id=source.id, amount=50, actor=None)
    run_process()
    run_projections()

    assert client_for(alice).get("/api/totals/").status_code == 403
    response = client_for(make_user("auditor")).get("/api/totals/")

    assert response.status_code == 200
    body = response.json()
    assert body["currencies"] == {
        "EUR": {"balances": 950, "in_transit": 0, "deposited": 1000, "withdrawn": 50}
    }
    assert body["position"]
