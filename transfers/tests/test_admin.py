"""The transfers back office and the trial balance, through Django's test client."""

import datetime
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.urls import reverse

from accounts.models import AccountBalance
from eventstore import verification
from eventstore.models import CheckRun, Event
from eventstore.subscriptions import catch_up, get_subscription
from transfers import trial_balance
from transfers.models import TransferSummary
from transfers.tests.factories import make_user, open_account, run_process

CHANGELIST = reverse("admin:transfers_transfersummary_changelist")
ADD = reverse("admin:transfers_transfersummary_add")


@pytest.fixture
def teller(db):
    return make_user("teller", username="tina", is_staff=True)


@pytest.fixture
def auditor(db):
    return make_user("auditor", username="aude", is_staff=True)


@pytest.fixture
def accounts(db):
    alice = User.objects.create_user("alice", password="pw")
    bob = User.objects.create_user("bob", password="pw")
    source = open_account(alice, balance=10_000)
    target = open_account(bob)
    dollars = open_account(bob, currency="USD")
    catch_up()
    return [AccountBalance.objects.get(id=a.id) for a in (source, target, dollars)]


def start(client, source, target, amount="12.50", reference="rent", form_id=None):
    return client.post(
        ADD,
        {
            "from_account": source.number,
            "to_account": target.number,
            "amount": amount,
            "reference": reference,
            "form_id": form_id or uuid.uuid4(),
        },
        follow=True,
    )


def finish() -> None:
    run_process()
    catch_up()


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
class TestNewTransfer:
    def test_a_teller_starts_a_transfer_by_account_numbers(
        self, client, teller, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)

        response = start(client, source, target)
        finish()
        transfer = TransferSummary.objects.get()
        page = client.get(
            reverse("admin:transfers_transfersummary_change", args=[transfer.id])
        )

        assert "Requested a transfer of 12.50 EUR" in messages_of(response)[0]
        assert (transfer.amount, transfer.status, transfer.reference) == (
            1250,
            "completed",
            "rent",
        )
        assert LogEntry.objects.get(user=teller).object_id == str(transfer.id)
        steps = [step["what"] for step in page.context["timeline"]]
        assert steps[0] == "TransferRequested"
        assert {"account debit", "account credit", "Credited"} <= set(steps)
        assert "completed" in page.content.decode()

    def test_a_form_sent_twice_starts_one_transfer_and_shows_it(
        self, client, teller, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)
        form_id = uuid.uuid4()

        start(client, source, target, form_id=form_id)
        again = start(client, source, target, form_id=form_id)

        assert (
            Event.objects.filter(event_type="transfers.TransferRequested").count() == 1
        )
        assert again.redirect_chain[-1][0] == reverse(
            "admin:transfers_transfersummary_change", args=[form_id]
        )
        assert messages_of(again) == [
            "This form was sent already; nothing was done again."
        ]

    def test_a_transfer_just_requested_is_shown_from_its_events(
        self, client, teller, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)

        response = start(client, source, target)

        assert b'http-equiv="refresh"' in response.content
        assert b"pending" in response.content

    def test_an_unknown_number_is_a_form_error(self, client, teller, accounts):
        client.force_login(teller)

        response = client.post(
            ADD, {"from_account": accounts[0].number, "to_account": "1", "amount": "1"}
        )

        assert "No account has this number." in response.content.decode()
        assert not TransferSummary.objects.exists()

    def test_an_amount_above_the_largest_is_a_form_error(
        self, client, teller, accounts
    ):
        client.force_login(teller)

        response = client.post(
            ADD,
            {
                "from_account": accounts[0].number,
                "to_account": accounts[1].number,
                "amount": "10000000000.01",
            },
        )

        assert "at most 10,000,000,000.00 EUR" in response.content.decode()
        assert not Event.objects.filter(event_type="transfers.TransferRequested")

    def test_a_refusal_is_an_error_message(self, client, teller, accounts):
        source, _, dollars = accounts
        client.force_login(teller)

        response = start(client, source, dollars)

        assert messages_of(response)[0].startswith("Refused: The source account")

    def test_an_auditor_may_not_start_transfers(self, client, auditor, accounts):
        client.force_login(auditor)

        assert client.get(ADD).status_code == 403
        assert client.get(CHANGELIST).status_code == 200


@pytest.mark.django_db
class TestList:
    def test_search_by_account_number_and_filter_by_status(
        self, client, teller, accounts
    ):
        source, target, dollars = accounts
        client.force_login(teller)
        start(client, source, target)
        start(client, source, target, amount="1000")  # more than the balance
        finish()

        by_number = client.get(CHANGELIST, {"q": target.number})
        by_other = client.get(CHANGELIST, {"q": dollars.number})
        failed = client.get(CHANGELIST, {"status": "failed"})

        assert by_number.context["cl"].result_count == 2
        assert by_other.context["cl"].result_count == 0
        [refused] = failed.context["cl"].result_list
        assert refused.failure_reason == "insufficient_funds"
        assert "12.50 EUR" in by_number.content.decode()

    def test_stuck_transfers_are_highlighted_and_filterable(
        self, client, teller, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)
        start(client, source, target)
        catch_up([get_subscription("transfers.summary")])  # no process manager
        TransferSummary.objects.update(
            created_at=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        )

        stuck = client.get(CHANGELIST, {"stuck": "yes"})
        not_stuck = client.get(CHANGELIST, {"stuck": "no"})

        assert stuck.context["cl"].result_count == 1
        assert "STUCK: pending" in stuck.content.decode()
        assert not_stuck.context["cl"].result_count == 0

    @pytest.mark.parametrize(
        "drill_down",
        [
            {"created_at__year": "9999"},
            {"created_at__year": "9999", "created_at__month": "12"},
            {
                "created_at__year": "9999",
                "created_at__month": "12",
                "created_at__day": "31",
            },
        ],
    )
    def test_a_drill_down_into_the_last_year_is_bad_input_not_a_500(
        self, client, teller, drill_down
    ):
        """Django bounds the date by the next one, which 9999-12-31 does not have."""
        client.force_login(teller)

        response = client.get(CHANGELIST, drill_down)

        assert response.status_code == 302
        assert response["Location"] == f"{CHANGELIST}?e=1"


@pytest.mark.django_db
class TestTrialBalance:
    def test_the_check_finds_the_books_balanced_after_transfers(
        self, client, teller, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)
        start(client, source, target)
        start(client, source, target, amount="3")
        run_process()

        run = verification.run_check(trial_balance.NAME)

        assert run.ok, run.summary
        assert run.details["currencies"]["EUR"] == {
            "balances": 10_000,
            "in_transit": 0,
            "deposited": 10_000,
            "withdrawn": 0,
            "difference": 0,
        }

    def test_a_wrong_read_model_is_not_balanced_and_mailed(
        self, client, accounts, mailoutbox
    ):
        make_user("operations", username="otto", is_staff=True, email="ops@example.com")
        AccountBalance.objects.filter(id=accounts[0].id).update(balance=1)

        run = verification.run_check(trial_balance.NAME)

        assert run.outcome == CheckRun.Outcome.DRIFT
        assert run.summary.startswith("NOT balanced: EUR balances 1")
        assert mailoutbox[0].to == ["ops@example.com"]

    def test_the_operations_page_shows_the_trial_balance_and_outcomes(
        self, client, teller, accounts
    ):
        verification.run_check(trial_balance.NAME)
        client.force_login(teller)

        page = client.get(reverse("admin:operations"))

        content = page.content.decode()
        assert 'id="trial-balance-result">balanced<' in content
        assert "100.00 EUR" in content
        assert "Transfer outcomes" in content
        assert "Closed accounts holding money" in content
