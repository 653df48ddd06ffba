"""The accounts back office through Django's test client: actions and refusals."""

import datetime
import re
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts import selectors, services
from accounts.admin import SENT_BEFORE, format_money, parse_money
from accounts.domain import Account, TransferStep
from accounts.models import AccountBalance
from accounts.projections import balances
from eventstore import subscriptions
from eventstore.models import Checkpoint, Event
from eventstore.store import head_sequence, partition_for
from eventstore.subscriptions import catch_up, ensure_checkpoints
from eventstore.tests.plans import analyze, get_captured, run_sql, whole_table_reads

from .bulk_rows import seed_accounts, seed_ledger
from .conftest import make_user
from .test_api import store_an_event_of_a_newer_release

CHANGELIST = reverse("admin:accounts_accountbalance_changelist")
LEDGER = reverse("admin:accounts_ledgerentry_changelist")
SENT_ONCE_FORM = re.compile(r'<form method="post"[^>]* autocomplete="off"')


@pytest.fixture
def teller(db):
    return make_user("tina", "teller", is_staff=True)


@pytest.fixture
def auditor(db):
    return make_user("aude", "auditor", is_staff=True)


@pytest.fixture
def operator(db):
    return make_user("otto", "operations", is_staff=True)


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="pw")


@pytest.fixture
def account(alice, teller):
    opened = services.open_account(owner=alice, currency="EUR", actor=teller)
    services.deposit(account_id=opened.id, amount=123456, actor=teller)
    catch_up()
    return AccountBalance.objects.get(id=opened.id)


def url(action: str, account) -> str:
    return reverse(f"admin:accounts_accountbalance_{action}", args=[account.id])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def last_event(account) -> Event:
    return Event.objects.filter(stream_id=f"account-{account.id}").latest("version")


class TestMoney:
    @pytest.mark.parametrize(
        ("amount", "currency", "text"),
        [
            (123456, "EUR", "1,234.56 EUR"),
            (5, "EUR", "0.05 EUR"),
            (-100000, "USD", "-1,000.00 USD"),
            (1234, "JPY", "1,234 JPY"),
        ],
    )
    def test_minor_units_show_as_money(self, amount, currency, text):
        assert format_money(amount, currency) == text

    @pytest.mark.parametrize(
        ("text", "currency", "minor"),
        [
            ("1,234.5", "EUR", 123450),
            ("1234.50", "EUR", 123450),
            (" 12,345,678.00 ", "EUR", 1234567800),
            ("0.05", "EUR", 5),
            ("1.500", "EUR", 150),
            ("007", "JPY", 7),
            ("1,000", "JPY", 1000),
        ],
    )
    def test_typed_amounts_become_minor_units(self, text, currency, minor):
        assert parse_money(text, currency) == minor

    @pytest.mark.parametrize(
        "text",
        [
            *["0", "-1", "1.234", "abc", "NaN", "sNaN", "1e999999999", "1e3"],
            "10,000,000,000.01",
            # A decimal comma is not a thousands separator: 1,50 is not 150.
            *["1,50", "12,5", "0,99", "1,2,3", "1,0000", ",100", "1,000,00"],
            # Past a decimal context's 28 digits, which would round it to 1.00.
            "1.0000000000000000000000000001",
            *["1_000", "\uff11\uff12", "+1", "1.", "", "9" * 5000],
        ],
    )
    def test_bad_amounts_are_refused(self, text):
        from django import forms

        with pytest.raises(forms.ValidationError):
            parse_money(text, "EUR")


@pytest.mark.django_db
class TestList:
    def test_lists_accounts_with_money_search_and_filters(
        self, client, auditor, account, alice
    ):
        other = services.open_account(owner=alice, currency="USD", actor=alice)
        catch_up()
        client.force_login(auditor)

        everything = client.get(CHANGELIST)
        by_number = client.get(CHANGELIST, {"q": account.number})
        by_owner = client.get(CHANGELIST, {"q": "alice"})
        dollars = client.get(CHANGELIST, {"currency": "USD"})
        by_balance = client.get(CHANGELIST, {"o": "3"})

        assert "1,234.56 EUR" in everything.content.decode()
        assert [a.number for a in by_number.context["cl"].result_list] == [
            account.number
        ]
        assert by_owner.context["cl"].result_count == 2
        assert [a.number for a in dollars.context["cl"].result_list] == [other.number]
        assert by_balance.status_code == 200

    def test_staff_without_a_role_and_customers_are_kept_out(self, client, alice):
        client.force_login(make_user("nobody", is_staff=True))
        no_role = client.get(CHANGELIST)
        client.force_login(alice)
        customer = client.get(CHANGELIST)

        assert no_role.status_code == 403
        assert customer.status_code == 302  # to the admin login

    def test_account_changelist_reads_a_page_not_every_account(self, client, auditor):
        """A page of 100 accounts, newest first: only the counts read them all.

        The page is read on the (opened_at, id) index, not sorted from every
        account; the currency filter offers the supported currencies instead
        of looking for those in use with a ``SELECT DISTINCT`` over the table.
        """
        seed_accounts()  # a year of accounts, newest numbered 1
        client.force_login(auditor)

        page, captured = get_captured(client, CHANGELIST)

        shown = [a.number for a in page.context["cl"].result_list]
        assert shown[:2] == ["000000000001", "000000000002"]
        assert (
            whole_table_reads(captured, "accounts_accountbalance", counts=False) == []
        )


@pytest.mark.django_db
class TestAccountPage:
    def test_shows_fields_read_only_with_ledger_history_and_actions(
        self, client, teller, account
    ):
        client.force_login(teller)

        page = client.get(
            reverse("admin:accounts_accountbalance_change", args=[account.id])
        )

        content = page.content.decode()
        assert page.status_code == 200
        assert 'name="_save"' not in content
        assert "accounts.AccountOpened" in content and "accounts.Deposited" in content
        assert "tina" in content  # the acting user
        assert [action for action, _ in page.context["account_actions"]] == [
            "deposit",
            "withdraw",
        ]

    def test_operations_are_offered_freeze_and_close(self, client, operator, account):
        client.force_login(operator)

        page = client.get(
            reverse("admin:accounts_accountbalance_change", args=[account.id])
        )

        assert [action for action, _ in page.context["account_actions"]] == [
            "freeze",
            "close",
        ]

    def test_balance_at_a_past_moment_comes_from_the_events(
        self, client, auditor, account, teller
    ):
        before_deposit = Event.objects.get(
            stream_id=f"account-{account.id}", version=1
        ).recorded_at + datetime.timedelta(microseconds=1)
        services.withdraw(account_id=account.id, amount=456, actor=teller)
        client.force_login(auditor)
        page_url = reverse("admin:accounts_accountbalance_change", args=[account.id])

        then = client.get(
            page_url, {"at": before_deposit.strftime("%Y-%m-%d %H:%M:%S")}
        )
        now = client.get(
            page_url,
            {
                "at": (timezone.now() + datetime.timedelta(seconds=2)).strftime(
                    "%Y-%m-%dT%H:%M:%S"
                )
            },
        )

        assert then.context["balance_at"]["balance"] in ("0.00 EUR", "1,234.56 EUR")
        assert now.context["balance_at"]["balance"] == "1,230.00 EUR"
        assert "1,230.00 EUR" in now.content.decode()

    @pytest.mark.parametrize(
        "moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
    )
    def test_a_moment_utc_cannot_hold_is_a_form_error_not_a_500(
        self, client, auditor, account, moment
    ):
        client.force_login(auditor)
        page_url = reverse("admin:accounts_accountbalance_change", args=[account.id])

        page = client.get(page_url, {"at": moment})

        assert page.status_code == 200
        assert page.context["balance_at"] is None
        assert "Out of range" in str(page.context["balance_form"].errors)

    def test_a_moment_with_an_offset_is_shown_in_utc(self, client, auditor, account):
        client.force_login(auditor)
        page_url = reverse("admin:accounts_accountbalance_change", args=[account.id])

        page = client.get(page_url, {"at": "2100-01-01T02:00:00+02:00"})

        shown = page.context["balance_at"]
        assert shown["at"] == datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)
        assert shown["at"].utcoffset() == datetime.timedelta(0)
        assert shown["balance"] == "1,234.56 EUR"

    def test_an_account_not_yet_projected_is_shown_from_its_events(
        self, client, teller, alice
    ):
        opened = services.open_account(owner=alice, currency="EUR", actor=teller)
        client.force_login(teller)

        page = client.get(
            reverse("admin:accounts_accountbalance_change", args=[opened.id])
        )

        assert page.status_code == 200
        assert opened.number in page.content.decode()
        assert b'http-equiv="refresh"' in page.content


@pytest.mark.django_db
class TestOpening:
    def test_a_teller_opens_an_account_for_a_customer(self, client, teller, alice):
        client.force_login(teller)

        response = client.post(
            reverse("admin:accounts_accountbalance_add"),
            {
                "owner": "alice",
                "currency": "GBP",
                "number": "",
                "reason": "walk-in",
                "form_id": uuid.uuid4(),
            },
        )

        opened = Event.objects.get(event_type="accounts.AccountOpened")
        assert response.status_code == 302
        assert opened.data["owner_id"] == alice.pk
        assert opened.metadata["actor_id"] == teller.pk
        assert opened.metadata["reason"] == "walk-in"
        assert LogEntry.objects.get(user=teller).change_message.startswith("Opened")

    def test_an_opening_form_sent_twice_opens_one_account(self, client, teller, alice):
        client.force_login(teller)
        form = {"owner": "alice", "currency": "EUR", "form_id": uuid.uuid4()}

        client.post(reverse("admin:accounts_accountbalance_add"), form)
        client.post(reverse("admin:accounts_accountbalance_add"), form)

        assert Event.objects.filter(event_type="accounts.AccountOpened").count() == 1

    def test_an_unknown_owner_is_a_form_error(self, client, teller):
        client.force_login(teller)

        response = client.post(
            reverse("admin:accounts_accountbalance_add"),
            {"owner": "nobody", "currency": "EUR"},
        )

        assert response.status_code == 200
        assert "No user has this username." in response.content.decode()
        assert not Event.objects.exists()

    @pytest.mark.parametrize("role", ["auditor", "operator"])
    def test_only_tellers_open_accounts(self, client, request, role, alice):
        client.force_login(request.getfixturevalue(role))

        response = client.post(
            reverse("admin:accounts_accountbalance_add"),
            {"owner": "alice", "currency": "EUR"},
        )

        assert response.status_code == 403


@pytest.mark.django_db
class TestCash:
    def test_a_deposit_records_amount_reason_and_actor(self, client, teller, account):
        client.force_login(teller)

        response = client.post(
            url("deposit", account),
            {
                "amount": "10.50",
                "reference": "cash",
                "reason": "counter deposit",
                "form_id": uuid.uuid4(),
            },
            follow=True,
        )

        event = last_event(account)
        assert event.event_type == "accounts.Deposited"
        assert event.data["amount"] == 1050
        assert event.metadata["reason"] == "counter deposit"
        assert event.metadata["actor_id"] == teller.pk
        assert "balance 1,245.06 EUR" in messages_of(response)[0]
        assert "Deposited 10.50 EUR" in LogEntry.objects.get().change_message

    def test_a_deposit_form_sent_twice_deposits_once(self, client, teller, account):
        client.force_login(teller)
        form = {"amount": "10", "reason": "counter", "form_id": uuid.uuid4()}

        client.post(url("deposit", account), form)
        again = client.post(url("deposit", account), form, follow=True)

        assert last_event(account).version == 3
        assert services.get_account(account.id).balance == 123456 + 1000
        assert messages_of(again)[-1] == (
            "This form was sent already; nothing was done again."
        )

    def test_a_refused_form_may_be_sent_again_corrected(self, client, teller, account):
        client.force_login(teller)
        form = {"amount": "5000", "reason": "counter", "form_id": uuid.uuid4()}

        refused = client.post(url("withdraw", account), form)
        client.post(url("withdraw", account), {**form, "amount": "50"})

        assert messages_of(refused)[0].startswith("Refused")
        assert services.get_account(account.id).balance == 123456 - 5000

    def test_a_withdrawal_beyond_the_balance_is_an_error_message(
        self, client, teller, account
    ):
        client.force_login(teller)

        response = client.post(
            url("withdraw", account),
            {"amount": "5000", "reason": "too much", "form_id": uuid.uuid4()},
        )

        assert response.status_code == 200
        assert messages_of(response) == [
            "Refused: The balance does not cover this withdrawal."
        ]
        assert last_event(account).event_type == "accounts.Deposited"
        assert not LogEntry.objects.exists()

    @pytest.mark.parametrize("typed", ["1,50", "0,99"])
    def test_a_decimal_comma_is_a_form_error_not_a_hundredfold_deposit(
        self, client, teller, account, typed
    ):
        client.force_login(teller)

        response = client.post(
            url("deposit", account),
            {"amount": typed, "reason": "counter", "form_id": uuid.uuid4()},
        )

        assert "commas only between thousands" in str(
            response.context["form"].errors["amount"]
        )
        assert last_event(account).version == 2

    def test_a_reason_and_a_valid_amount_are_required(self, client, teller, account):
        client.force_login(teller)

        response = client.post(
            url("deposit", account), {"amount": "1.234", "form_id": uuid.uuid4()}
        )

        errors = response.context["form"].errors
        assert set(errors) == {"amount", "reason"}
        assert last_event(account).version == 2

    @pytest.mark.parametrize("role", ["auditor", "operator"])
    def test_only_tellers_move_cash(self, client, request, role, account):
        client.force_login(request.getfixturevalue(role))

        response = client.post(url("deposit", account), {"amount": "1", "reason": "x"})

        assert response.status_code == 403
        assert last_event(account).version == 2


@pytest.mark.django_db
class TestOperations:
    def test_operations_freeze_and_a_frozen_account_refuses_cash(
        self, client, operator, teller, account
    ):
        client.force_login(operator)
        frozen = client.post(
            url("freeze", account),
            {"reason": "fraud check", "form_id": uuid.uuid4()},
            follow=True,
        )
        client.force_login(teller)
        refused = client.post(
            url("deposit", account),
            {"amount": "1", "reason": "counter", "form_id": uuid.uuid4()},
        )

        assert last_event(account).event_type == "accounts.Frozen"
        assert last_event(account).metadata["reason"] == "fraud check"
        assert "status frozen" in messages_of(frozen)[0]
        assert messages_of(refused) == ["Refused: The account is frozen."]

    def test_unfreeze_then_close_needs_an_empty_account(
        self, client, operator, account
    ):
        client.force_login(operator)

        client.post(
            url("freeze", account), {"reason": "check", "form_id": uuid.uuid4()}
        )
        client.post(
            url("unfreeze", account), {"reason": "cleared", "form_id": uuid.uuid4()}
        )
        refused = client.post(
            url("close", account), {"reason": "customer left", "form_id": uuid.uuid4()}
        )

        types = list(
            Event.objects.filter(stream_id=f"account-{account.id}")
            .order_by("version")
            .values_list("event_type", flat=True)
        )
        assert types[-2:] == ["accounts.Frozen", "accounts.Unfrozen"]
        assert messages_of(refused)[-1] == (
            "Refused: Only an account with a zero balance can be closed."
        )

    def test_freezing_a_frozen_account_says_nothing_was_done_and_logs_nothing(
        self, client, operator, account
    ):
        client.force_login(operator)
        client.post(
            url("freeze", account), {"reason": "alert", "form_id": uuid.uuid4()}
        )
        events, logged = last_event(account).version, LogEntry.objects.count()

        again = client.post(
            url("freeze", account),
            {"reason": "the same alert", "form_id": uuid.uuid4()},
            follow=True,
        )

        assert last_event(account).version == events
        assert LogEntry.objects.count() == logged
        assert messages_of(again)[-1] == (
            f"Nothing was done: account {account.number} is already frozen."
        )

    def test_unfreezing_an_open_account_says_nothing_was_done(
        self, client, operator, account
    ):
        client.force_login(operator)

        response = client.post(
            url("unfreeze", account),
            {"reason": "cleared", "form_id": uuid.uuid4()},
            follow=True,
        )

        assert last_event(account).version == 2
        assert not LogEntry.objects.exists()
        assert messages_of(response) == [
            f"Nothing was done: account {account.number} is already open."
        ]

    def test_a_freeze_form_sent_again_after_an_unfreeze_does_not_freeze_again(
        self, client, operator, account
    ):
        client.force_login(operator)
        freeze = {"reason": "fraud alert", "form_id": uuid.uuid4()}
        client.post(url("freeze", account), freeze)
        client.post(
            url("unfreeze", account), {"reason": "cleared", "form_id": uuid.uuid4()}
        )

        again = client.post(url("freeze", account), freeze, follow=True)

        assert services.get_account(account.id).status == "open"
        assert messages_of(again)[-1] == SENT_BEFORE

    def test_operations_pay_out_a_refund_that_reached_a_closed_account(
        self, client, operator, teller, alice
    ):
        opened = services.open_account(owner=alice, currency="EUR", actor=teller)
        services.close(account_id=opened.id, actor=operator)
        refund = TransferStep(uuid.uuid4(), "refund")
        services.deposit(account_id=opened.id, amount=300, actor=None, transfer=refund)
        catch_up()
        client.force_login(operator)

        page = client.get(url("change", opened)).content.decode()
        response = client.post(
            url("payout", opened),
            {"reference": "cheque 12", "reason": "owner", "form_id": uuid.uuid4()},
            follow=True,
        )
        catch_up()

        assert 'id="action-payout"' in page
        assert last_event(opened).event_type == "accounts.Withdrawn"
        assert last_event(opened).data["amount"] == 300
        assert "Paid out the account" in messages_of(response)[0]
        assert AccountBalance.objects.get(id=opened.id).balance == 0
        after = client.get(url("change", opened)).content.decode()
        assert 'id="action-payout"' not in after

    @pytest.mark.parametrize("action", ["freeze", "unfreeze", "close", "payout"])
    def test_tellers_and_auditors_may_not_operate(
        self, client, teller, auditor, account, action
    ):
        statuses = []
        for user in (teller, auditor):
            client.force_login(user)
            statuses.append(
                client.post(url(action, account), {"reason": "x"}).status_code
            )

        assert statuses == [403, 403]

    def test_an_unknown_account_is_404(self, client, operator):
        client.force_login(operator)

        response = client.post(
            reverse(
                "admin:accounts_accountbalance_freeze",
                args=["6c1d3f0e-0000-4000-8000-000000000000"],
            ),
            {"reason": "x"},
        )

        assert response.status_code == 404

    @pytest.mark.parametrize(
        ("view", "role"),
        [("change", "auditor"), ("deposit", "teller"), ("freeze", "operator")],
    )
    @pytest.mark.parametrize("odd", ["abc", "1.5", "0"])
    def test_a_malformed_account_id_is_404_like_an_unknown_one(
        self, client, request, view, role, odd
    ):
        client.force_login(request.getfixturevalue(role))

        response = client.get(f"{CHANGELIST}{odd}/{view}/")

        assert response.status_code == 404


@pytest.mark.django_db
def stop_the_balances_of(account) -> None:
    """Stop the balances read model in the account's partition, at its head."""
    partition = partition_for(Account.stream_id_for(account.id))
    ensure_checkpoints([balances], [partition])
    Checkpoint.objects.filter(subscription=balances.name, partition=partition).update(
        failed_sequence=head_sequence(partition), error="boom", attempts=1
    )


class TestThePageAfterAnAction:
    """Staff never see the account older than what they just did.

    The account's page reads the read model, which lags the events: until it
    has the action, the page an action lands on shows the saved account and
    reloads itself, as the page of an account just opened does.
    """

    @pytest.mark.parametrize(
        ("role", "action", "form", "shown"),
        [
            ("teller", "deposit", {"amount": "10.00"}, "Balance 1,244.56 EUR"),
            ("teller", "withdraw", {"amount": "4.56"}, "Balance 1,230.00 EUR"),
            ("operator", "freeze", {}, "status frozen"),
        ],
    )
    def test_the_page_waits_for_the_read_model_to_have_the_action(
        self, client, request, account, role, action, form, shown
    ):
        client.force_login(request.getfixturevalue(role))

        response = client.post(
            url(action, account), {**form, "reason": "x", "form_id": uuid.uuid4()}
        )
        waiting = client.get(response.url).content.decode()
        catch_up()
        projected = client.get(response.url).content.decode()

        assert 'http-equiv="refresh"' in waiting
        assert shown in waiting
        assert 'http-equiv="refresh"' not in projected
        assert 'id="ledger"' in projected

    def test_a_form_sent_twice_lands_on_the_account_with_the_first_sending(
        self, client, teller, account
    ):
        client.force_login(teller)
        form = {"amount": "10", "reason": "counter", "form_id": uuid.uuid4()}
        client.post(url("deposit", account), form)

        again = client.post(url("deposit", account), form)

        page = client.get(again.url).content.decode()
        assert 'http-equiv="refresh"' in page
        assert "Balance 1,244.56 EUR" in page

    def test_a_version_beyond_the_saved_events_waits_only_for_those(
        self, client, auditor, teller, account
    ):
        """A hand-made ``?after=`` does not keep the page reloading for ever."""
        services.deposit(account_id=account.id, amount=100, actor=teller)
        client.force_login(auditor)

        waiting = client.get(url("change", account), {"after": "99"})
        catch_up()
        projected = client.get(url("change", account), {"after": "99"})

        assert b'http-equiv="refresh"' in waiting.content
        assert b'http-equiv="refresh"' not in projected.content
        assert b'id="ledger"' in projected.content

    def test_a_read_model_that_will_not_catch_up_is_said_not_waited_for(
        self, client, teller, account
    ):
        """Its partition stopped (or the event passed over): no reload for ever."""
        client.force_login(teller)
        response = client.post(
            url("deposit", account),
            {"amount": "10", "reason": "x", "form_id": uuid.uuid4()},
        )
        stop_the_balances_of(account)

        page = client.get(response.url)

        assert b'http-equiv="refresh"' not in page.content
        assert b'id="ledger"' in page.content
        assert any("is not catching up" in m for m in messages_of(page))

    def test_a_new_account_whose_read_model_will_not_catch_up_is_said(
        self, client, teller, alice
    ):
        opened = services.open_account(owner=alice, currency="EUR", actor=teller)
        stop_the_balances_of(opened)
        client.force_login(teller)

        page = client.get(
            reverse("admin:accounts_accountbalance_change", args=[opened.id])
        )

        assert b'http-equiv="refresh"' not in page.content
        assert b'id="read-model-stalled"' in page.content

    def test_a_read_model_that_caught_up_while_the_page_asked_is_shown(
        self, client, monkeypatch, teller, alice
    ):
        """Its runner finished between the page's two reads: not "stalled".

        The page read the read model (no account yet), then asked whether its
        subscription is still catching up, after the runner had handled the
        account: "not catching up", and a page that never reloads.
        """
        opened = services.open_account(owner=alice, currency="EUR", actor=teller)
        asked = subscriptions.catching_up

        def runner_finishes_first(name, stream_id):
            catch_up()
            return asked(name, stream_id)

        monkeypatch.setattr(subscriptions, "catching_up", runner_finishes_first)
        client.force_login(teller)

        page = client.get(
            reverse("admin:accounts_accountbalance_change", args=[opened.id])
        )

        assert b'id="read-model-stalled"' not in page.content
        assert b'id="ledger"' in page.content


@pytest.mark.django_db
def test_sent_once_forms_are_not_filled_in_again_by_the_browser(
    client, teller, account
):
    """Back to a sent form fetches a new one (a new ``form_id``): keep it empty.

    Were the browser to restore the typed amount, Confirm would act again.
    """
    client.force_login(teller)
    pages = [CHANGELIST + "add/", url("deposit", account), url("withdraw", account)]

    forms = [client.get(page).content.decode() for page in pages]

    assert all(SENT_ONCE_FORM.search(form) for form in forms)


@pytest.mark.django_db
class TestLedgerList:
    def test_ledger_changelist_does_not_sort_the_whole_ledger(self, client, auditor):
        """A page of the latest 100 movements is read on the recorded_at index.

        The ledger is the biggest read model (a row per money movement):
        sorting all of it for each view of the list is what is refused.
        """
        seed_ledger()  # 200,000 rows over the last year, newest first
        client.force_login(auditor)

        page, captured = get_captured(client, LEDGER)

        times = [entry.recorded_at for entry in page.context["cl"].result_list]
        assert times == sorted(times, reverse=True)
        assert whole_table_reads(captured, "accounts_ledgerentry", counts=False) == []


@pytest.mark.django_db
class TestClosedAccountsHoldingMoney:
    def test_the_operations_panel_reads_those_accounts_not_every_account(
        self, client, operator
    ):
        """The panel lists the closed accounts with money among all, on an index.

        A handful among every account: the panel must not scan the whole
        table on each view of the operations page to find them.
        """
        seed_accounts()
        run_sql(
            "UPDATE accounts_accountbalance SET status = 'closed', balance = 500"
            " WHERE number IN ('000000000007', '000000000070')"
        )
        analyze("accounts_accountbalance")
        client.force_login(operator)

        page, captured = get_captured(client, reverse("admin:operations"))

        content = page.content.decode()
        assert "000000000007" in content and "000000000070" in content
        assert content.count("5.00 USD") == 2
        assert whole_table_reads(captured, "accounts_accountbalance") == []


@pytest.mark.django_db
class TestLedgerByTransfer:
    """A transfer's ledger rows are looked up on an index, not a scan."""

    @pytest.fixture
    def transfer_id(self, alice, account):
        transfer_id = uuid.uuid4()
        target = services.open_account(owner=alice, currency="EUR", actor=alice)
        services.withdraw(
            account_id=account.id,
            amount=100,
            actor=None,
            transfer=TransferStep(transfer_id, "debit"),
        )
        services.deposit(
            account_id=target.id,
            amount=100,
            actor=None,
            transfer=TransferStep(transfer_id, "credit"),
        )
        catch_up()
        return transfer_id

    @staticmethod
    def plan(queryset) -> str:
        # Tables this small are read whole whatever the indexes; with scans
        # made dear, the plan says whether an index can serve the query.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
        return queryset.explain()

    def test_a_transfers_rows_are_found_on_the_transfer_index(self, transfer_id):
        rows = selectors.transfer_ledger(transfer_id)

        assert sorted(row.transfer_step for row in rows) == ["credit", "debit"]
        assert "accounts_ledger_transfer" in self.plan(rows)

    def test_the_ledger_search_by_transfer_id_uses_the_index(
        self, client, teller, transfer_id
    ):
        client.force_login(teller)

        page = client.get(
            reverse("admin:accounts_ledgerentry_changelist"), {"q": str(transfer_id)}
        )
        by_number = client.get(
            reverse("admin:accounts_ledgerentry_changelist"), {"q": "no such thing"}
        )

        found = page.context["cl"].queryset
        assert sorted(row.transfer_step for row in found) == ["credit", "debit"]
        assert "accounts_ledger_transfer" in self.plan(found)
        assert by_number.context["cl"].result_count == 0


@pytest.mark.parametrize("object_id", ["not-a-uuid", "12", "%00"])
def test_the_view_on_site_shortcut_answers_404_to_a_malformed_id(
    client, teller, object_id
):
    client.force_login(teller)
    content_type = ContentType.objects.get_for_model(AccountBalance)

    response = client.get(f"/admin/r/{content_type.pk}/{object_id}/")

    assert response.status_code == 404


def test_the_view_on_site_shortcut_is_for_staff_only(client, alice, account):
    client.force_login(alice)
    content_type = ContentType.objects.get_for_model(AccountBalance)

    response = client.get(f"/admin/r/{content_type.pk}/{account.id}/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_pages_of_an_account_with_an_event_this_code_cannot_read_answer_503(
    client, teller, account
):
    """Time travel and actions read the events: 503, not 500, until code that
    reads the newer release's event is deployed."""
    saved = services.get_account(account.id)
    store_an_event_of_a_newer_release(saved)
    client.force_login(teller)

    answers = [
        client.get(url("change", account), {"at": "2099-01-01T00:00"}),
        client.get(url("deposit", account)),
        client.post(
            url("deposit", account),
            {"amount": "1.00", "reason": "cash", "form_id": str(uuid.uuid4())},
        ),
    ]

    assert [answer.status_code for answer in answers] == [503, 503, 503]
    assert {answer.content.decode() for answer in answers} == {
        "This data holds an event this version of the bank cannot read;"
        " try again later."
    }
    assert Event.objects.filter(stream_id=saved.stream_id).count() == saved.version + 1


def test_a_user_who_acted_in_the_back_office_is_not_deleted(client, teller, account):
    """Django would delete their admin log entries with them."""
    client.force_login(teller)
    client.post(
        url("deposit", account), {"amount": "1", "reason": "x", "form_id": uuid.uuid4()}
    )
    assert LogEntry.objects.filter(user=teller).exists()
    root = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)

    page = client.get(reverse("admin:auth_user_delete", args=[teller.pk]))
    client.post(reverse("admin:auth_user_delete", args=[teller.pk]), {"post": "yes"})
    listed = client.get(reverse("admin:auth_user_changelist"))

    assert page.status_code == 403
    assert User.objects.filter(pk=teller.pk).exists()
    assert listed.status_code == 200
    assert b"delete_selected" not in listed.content  # no bulk delete either


def test_a_user_who_never_acted_may_be_deleted(client, alice):
    root = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)

    client.post(reverse("admin:auth_user_delete", args=[alice.pk]), {"post": "yes"})

    assert not User.objects.filter(pk=alice.pk).exists()
