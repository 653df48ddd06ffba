"""The transfers back office and the trial balance, through Django's test client."""

import dataclasses
import datetime
import re
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db.models import F
from django.urls import reverse

from accounts.models import AccountBalance
from eventstore import events as event_registry
from eventstore import verification
from eventstore.errors import EventDecodeError
from eventstore.models import CheckRun, Event
from eventstore.store import NewEvent, append
from eventstore.subscriptions import catch_up, get_subscription
from eventstore.tests.plans import get_captured, whole_table_reads
from eventstore.tests.test_verification import checkpoint_locked
from transfers import services, trial_balance
from transfers.events import Failed
from transfers.models import Totals, TransferSummary
from transfers.tests.bulk_rows import seed_transfers
from transfers.tests.factories import (
    make_user,
    open_account,
    run_process,
    run_projections,
    strand,
    strand_at_an_unreadable_event,
)

CHANGELIST = reverse("admin:transfers_transfersummary_changelist")
ADD = reverse("admin:transfers_transfersummary_add")
CHANGE = "admin:transfers_transfersummary_change"


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

    def test_the_same_form_sent_by_another_teller_starts_no_second_transfer(
        self, client, teller, accounts
    ):
        source, target, _ = accounts
        form_id = uuid.uuid4()
        client.force_login(teller)
        start(client, source, target, form_id=form_id)
        client.force_login(make_user("teller", username="theo", is_staff=True))

        again = start(client, source, target, form_id=form_id)

        assert (
            Event.objects.filter(event_type="transfers.TransferRequested").count() == 1
        )
        assert again.redirect_chain[-1][0] == reverse(CHANGE, args=[form_id])
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

    def test_accounts_opened_a_moment_ago_are_found_by_number(self, client, teller):
        alice = User.objects.create_user("alice", password="pw")
        source = open_account(alice, balance=10_000)
        target = open_account(alice)  # neither is projected yet
        assert not AccountBalance.objects.exists()
        client.force_login(teller)

        response = start(client, source, target)
        finish()

        assert messages_of(response)[0].startswith("Requested a transfer of 12.50 EUR")
        assert TransferSummary.objects.get().status == "completed"

    def test_an_unknown_number_is_a_form_error(self, client, teller, accounts):
        client.force_login(teller)

        response = client.post(
            ADD, {"from_account": accounts[0].number, "to_account": "1", "amount": "1"}
        )
        # Well-formed, but nobody opened it.
        unopened = client.post(
            ADD,
            {
                "from_account": accounts[0].number,
                "to_account": "000000000098",
                "amount": "1",
            },
        )

        assert "No account has this number." in response.content.decode()
        assert "No account has this number." in unopened.content.decode()
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

    def test_the_form_is_not_filled_in_again_by_the_browser(self, client, teller):
        """Back to a sent form fetches a new one (a new ``form_id``): keep it empty.

        Were the browser to restore the typed numbers and amount, "Start
        transfer" would start a second one.
        """
        client.force_login(teller)

        form = client.get(ADD).content.decode()

        assert re.search(r'<form method="post"[^>]* autocomplete="off"', form)

    def test_a_transfers_page_names_who_requested_it(
        self, client, teller, auditor, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)
        start(client, source, target)
        finish()
        page = reverse(CHANGE, args=[TransferSummary.objects.get().id])

        named = client.get(page).content.decode()
        client.force_login(auditor)
        teller_id = teller.pk
        teller.delete()
        unnamed = client.get(page).content.decode()

        assert '<div class="readonly">tina</div>' in named
        # A user since deleted keeps their id.
        assert f'<div class="readonly">{teller_id}</div>' in unnamed

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
    def test_an_old_drill_down_link_into_the_last_year_is_not_a_500(
        self, client, teller, drill_down
    ):
        """The list has no date hierarchy now; a link of it is a plain filter."""
        client.force_login(teller)

        response = client.get(CHANGELIST, drill_down)

        assert response.status_code == 200
        assert response.context["cl"].result_count == 0

    def test_the_currency_and_failure_reason_filters_narrow_the_list(
        self, client, teller, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)
        start(client, source, target)
        start(client, source, target, amount="1000")  # more than the balance
        finish()

        everything = client.get(CHANGELIST)
        euros = client.get(CHANGELIST, {"currency": "EUR"})
        dollars = client.get(CHANGELIST, {"currency": "USD"})
        refused = client.get(CHANGELIST, {"failure_reason": "insufficient_funds"})

        offered = {
            spec.title: [
                choice["display"] for choice in spec.choices(everything.context["cl"])
            ]
            for spec in everything.context["cl"].filter_specs
        }
        assert {"EUR", "USD"} <= set(offered["currency"])
        assert "insufficient_funds" in offered["failure reason"]
        assert euros.context["cl"].result_count == 2
        assert dollars.context["cl"].result_count == 0
        assert [t.amount for t in refused.context["cl"].result_list] == [100_000]

    def test_transfer_changelist_reads_a_page_not_every_transfer(self, client, auditor):
        """A page of 100 transfers, newest first: only the counts read them all.

        The page is read on the (created_at, id) index, not sorted from every
        transfer; the currency and failure reason filters offer the values
        the code knows instead of a ``SELECT DISTINCT`` over the table; and
        no date hierarchy lists the years or months that hold transfers.
        """
        seed_transfers()  # a year of transfers, 150 seconds apart
        client.force_login(auditor)

        page, captured = get_captured(client, CHANGELIST)

        times = [t.created_at for t in page.context["cl"].result_list]
        assert len(times) == 100 and times == sorted(times, reverse=True)
        assert (
            whole_table_reads(captured, "transfers_transfersummary", counts=False) == []
        )


@pytest.fixture
def operator(db):
    return make_user("operations", username="otto", is_staff=True)


def stranded_transfer(client, teller, source, target) -> TransferSummary:
    """Start a transfer whose credit step an operator skipped; return its row."""
    client.force_login(teller)
    start(client, source, target)
    strand("credit")
    run_projections()
    client.logout()
    return TransferSummary.objects.get()


def action_url(action: str, transfer_id) -> str:
    return reverse(f"admin:transfers_transfersummary_{action}", args=[transfer_id])


@pytest.mark.django_db
class TestStranded:
    def test_an_operator_finds_a_stranded_transfer_and_resumes_it(
        self, client, teller, operator, accounts
    ):
        source, target, _ = accounts
        transfer = stranded_transfer(client, teller, source, target)
        client.force_login(operator)

        listed = client.get(CHANGELIST, {"stuck": "stranded"})
        operations = client.get(reverse("admin:operations"))
        page = client.get(reverse(CHANGE, args=[transfer.id]))
        form = client.get(action_url("resume", transfer.id))
        done = client.post(
            action_url("resume", transfer.id), {"reason": "credit fixed"}, follow=True
        )
        run_projections()

        assert [row.id for row in listed.context["cl"].result_list] == [transfer.id]
        assert 'id="stranded-transfers">1 stranded<' in operations.content.decode()
        assert "skipped" in page.context["stranded"]["summary"]
        assert 'id="stranded-resume"' in page.content.decode()
        assert 'id="stranded-refund"' in page.content.decode()
        assert "is debited, and nothing will drive it on" in form.content.decode()
        assert messages_of(done) == [
            "Resumed the stranded transfer: it is completed now. Reason: credit fixed"
        ]
        assert TransferSummary.objects.get().status == "completed"
        assert AccountBalance.objects.get(id=target.id).balance == 1250
        assert LogEntry.objects.get(user=operator).object_id == str(transfer.id)
        credited = Event.objects.get(event_type="transfers.Credited")
        assert (credited.metadata["actor_id"], credited.metadata["reason"]) == (
            operator.pk,
            "credit fixed",
        )

    def test_an_operator_refunds_a_stranded_transfer(
        self, client, teller, operator, accounts
    ):
        source, target, _ = accounts
        transfer = stranded_transfer(client, teller, source, target)
        client.force_login(operator)

        done = client.post(
            action_url("refund", transfer.id), {"reason": "target gone"}, follow=True
        )
        run_projections()

        assert messages_of(done)[0].startswith(
            "Refunded the stranded transfer: it is failed (refunded_by_operations)"
        )
        assert AccountBalance.objects.get(id=source.id).balance == 10_000

    def test_a_transfer_not_stranded_is_refused_with_a_message(
        self, client, teller, operator, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)
        start(client, source, target)  # pending: the process manager will run it
        run_projections()
        transfer = TransferSummary.objects.get()
        client.force_login(operator)

        page = client.get(reverse(CHANGE, args=[transfer.id]))
        response = client.post(
            action_url("resume", transfer.id), {"reason": "why not"}, follow=True
        )

        assert page.context["stranded"] is None
        assert messages_of(response) == [
            f"Transfer {transfer.id} is not stranded: there is nothing to resume."
        ]
        assert Event.objects.filter(stream_id=f"transfer-{transfer.id}").count() == 1

    @pytest.mark.parametrize(
        "error",
        [
            EventDecodeError("the target's stream cannot be read"),
            # Whatever made the step fail before, as in factories.strand.
            RuntimeError("the target's stream cannot be read"),
        ],
    )
    def test_a_step_that_still_fails_is_an_error_message_not_a_500(
        self, client, teller, operator, accounts, monkeypatch, error
    ):
        source, target, _ = accounts
        transfer = stranded_transfer(client, teller, source, target)
        client.force_login(operator)

        def still_failing(**kwargs):
            raise error

        monkeypatch.setattr(services, "transfer_credit", still_failing)
        response = client.post(
            action_url("resume", transfer.id), {"reason": "try"}, follow=True
        )

        assert response.status_code == 200
        assert messages_of(response) == [
            "Not done, nothing was changed: the target's stream cannot be read. "
            "Try again."
        ]
        assert not LogEntry.objects.filter(user=operator).exists()
        assert TransferSummary.objects.get().status == "debited"

    def test_a_transfer_whose_events_cannot_be_read_says_so_and_is_no_500(
        self, client, teller, operator, accounts
    ):
        source, target, _ = accounts
        client.force_login(teller)
        start(client, source, target)
        run_projections()
        transfer = TransferSummary.objects.get()
        strand_at_an_unreadable_event(services.get_transfer(transfer.id))
        client.force_login(operator)

        page = client.get(
            reverse("admin:transfers_transfersummary_change", args=[transfer.id])
        )
        resumed = client.post(
            action_url("resume", transfer.id), {"reason": "try"}, follow=True
        )

        assert page.status_code == 200
        assert "events cannot be read by this code" in page.content.decode()
        assert resumed.status_code == 200
        assert messages_of(resumed)[0].startswith("Not done: This transfer's events")

    def test_a_resume_without_a_reason_is_a_form_error(
        self, client, teller, operator, accounts
    ):
        source, target, _ = accounts
        transfer = stranded_transfer(client, teller, source, target)
        client.force_login(operator)

        response = client.post(action_url("resume", transfer.id), {"reason": "  "})

        assert response.status_code == 200
        assert "This field is required." in response.content.decode()
        assert TransferSummary.objects.get().status == "debited"

    def test_only_operations_staff_may_finish_a_stranded_transfer(
        self, client, teller, auditor, accounts
    ):
        source, target, _ = accounts
        transfer = stranded_transfer(client, teller, source, target)

        for user in (teller, auditor):
            client.force_login(user)
            page = client.get(reverse(CHANGE, args=[transfer.id]))
            assert page.context["stranded"]["actions"] == []
            assert client.get(action_url("resume", transfer.id)).status_code == 403
            assert (
                client.post(
                    action_url("refund", transfer.id), {"reason": "x"}
                ).status_code
                == 403
            )
        assert TransferSummary.objects.get().status == "debited"

    def test_an_unknown_or_malformed_transfer_is_404(self, client, operator):
        client.force_login(operator)

        assert client.get(action_url("resume", uuid.uuid4())).status_code == 404
        assert client.get(action_url("refund", "nope")).status_code == 404


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

    def test_the_totals_list_shows_all_four_figures_of_the_books(
        self, client, teller, accounts
    ):
        client.force_login(teller)

        page = client.get(reverse("admin:transfers_totals_changelist"))

        assert page.status_code == 200
        assert list(page.context["cl"].list_display)[-4:] == [
            "balances",
            "in_transit",
            "deposited",
            "withdrawn",
        ]
        assert "column-withdrawn" in page.content.decode()

    def test_a_wrong_totals_read_model_is_a_difference_and_shown(
        self, client, teller, accounts, mailoutbox
    ):
        # Wrong, yet balanced on its own: only the events can tell.
        make_user("operations", username="otto", is_staff=True, email="ops@example.com")
        Totals.objects.filter(currency="EUR").update(
            balances=F("balances") + 500, deposited=F("deposited") + 500
        )
        client.force_login(teller)

        run = verification.run_check(trial_balance.NAME)
        page = client.get(reverse("admin:operations")).content.decode()

        assert run.outcome == CheckRun.Outcome.DRIFT
        assert run.differences == 1
        assert run.summary == (
            "the totals read model disagrees:"
            " EUR balances 10500 in it != 10000 kept independently;"
            " EUR deposited 10500 in it != 10000 kept independently"
        )
        assert run.details["currencies"]["EUR"]["difference"] == 0
        assert mailoutbox[0].to == ["ops@example.com"]
        assert 'id="trial-balance-drift"' in page
        assert "105.00 EUR" in page

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


@pytest.mark.django_db
def test_operations_outcomes_chart_reads_the_last_day_not_every_transfer(
    client, operator
):
    """The "transfer outcomes, last 24 hours" panel reads a day of transfers.

    Found on the completed_at and failed_at indexes: a year of transfers is
    not scanned to chart one day, on each view of the operations page.
    """
    seed_transfers()  # a year of transfers, 150 seconds apart
    client.force_login(operator)

    page, captured = get_captured(client, reverse("admin:operations"))

    assert "Transfer outcomes" in page.content.decode()
    assert whole_table_reads(captured, "transfers_transfersummary") == []


# Real transactions: a runner's batch holds a checkpoint from another connection.
@pytest.mark.django_db(transaction=True)
def test_a_check_that_hits_the_jobs_timeout_is_recorded_shown_and_mailed(
    client, accounts, settings, mailoutbox
):
    # A superuser: the flush of an earlier transactional test took the groups.
    otto = User.objects.create_superuser("otto", "o@x.org", "pw")
    assert verification.run_check(trial_balance.NAME).ok
    settings.DATABASE_JOB_STATEMENT_TIMEOUT_MS = 300

    with checkpoint_locked("accounts.balances"):
        run = verification.run_check(trial_balance.NAME)
    client.force_login(otto)
    page = client.get(reverse("admin:operations")).content.decode()

    assert run.outcome == CheckRun.Outcome.ERROR
    assert "statement timeout" in run.summary
    assert 'id="trial-balance-result">could not run<' in page
    assert [m.to for m in mailoutbox] == [["o@x.org"]]


@dataclasses.dataclass(frozen=True)
class FailedV1:
    """A failure as an earlier release stored it: the reason under ``code``."""

    code: str


@pytest.mark.django_db
def test_the_timeline_shows_the_reason_of_a_failure_stored_at_an_older_schema(
    client, auditor, a_release
):
    alice = make_user()
    source, target = open_account(alice, balance=10), open_account(alice)
    transfer = services.request_transfer(
        actor=alice, from_account=source.id, to_account=target.id, amount=300
    )
    a_release("transfers.Failed", 1, FailedV1)
    append(
        transfer.stream_id,
        [NewEvent(FailedV1(code="insufficient_funds"), uuid.uuid4())],
        1,
    )
    a_release("transfers.Failed", 2, Failed)
    event_registry.upcaster("transfers.Failed", from_version=1)(
        lambda data: {"reason": data["code"]}
    )
    client.force_login(auditor)

    page = client.get(reverse(CHANGE, args=[transfer.id]))

    [failed] = [step for step in page.context["timeline"] if step["what"] == "Failed"]
    assert failed["detail"] == "insufficient_funds"
