"""The back office in a real browser: a teller's day, end to end.

Playwright drives Debian's Chromium against pytest-django's live server,
with a real Celery worker running the transfer and the projections. The
screenshots are kept in ``test-artifacts/screenshots/``.
"""

import importlib
import os
import shutil

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, User
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from conftest import ARTIFACTS, wait_until
from eventstore.models import CheckRun
from eventstore.verification import run_checks_task
from transfers import trial_balance

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ARTIFACTS / "screenshots"
ROLE_MIGRATIONS = [
    ("accounts.migrations.0002_groups", "create_groups"),
    ("transfers.migrations.0002_teller_transfers", "grant"),
    ("eventstore.migrations.0004_operations_roles_and_schedules", "grant"),
]

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason="needs Debian's chromium package"
    ),
]


@pytest.fixture
def roles(transactional_db):
    """The staff groups (a transactional test's flush removed the migrated ones)."""
    for module, function in ROLE_MIGRATIONS:
        getattr(importlib.import_module(module), function)(apps, None)


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own
    # ORM calls stay synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        yield page
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def shot(page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def open_account(page, base: str, owner: str) -> str:
    """Open a EUR account for ``owner``; return its number once it is projected."""
    page.goto(f"{base}/admin/accounts/accountbalance/add/")
    page.fill("#id_owner", owner)
    page.select_option("#id_currency", "EUR")
    page.fill("#id_reason", f"new customer {owner}")
    page.click("input[type=submit]")
    # The page reloads itself until the read model has the account.
    page.wait_for_selector("#ledger")
    return page.locator(".field-number .readonly").inner_text().strip()


@pytest.mark.django_db(transaction=True)
def test_a_teller_runs_a_transfer_and_the_books_balance(
    live_server, celery_worker, roles, browser_page
):
    page, base = browser_page, live_server.url
    teller = User.objects.create_user("tina", password="teller-pw-42", is_staff=True)
    teller.groups.add(Group.objects.get(name="teller"))
    for name in ("alice", "bob"):
        User.objects.create_user(name, password="customer-pw-42")

    # Log in as a teller.
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "tina")
    page.fill("#id_password", "teller-pw-42")
    page.click("input[type=submit]")
    page.wait_for_selector("#operations-link")
    shot(page, "01-admin-index")

    # Open two accounts and deposit cash into the first.
    alice_number = open_account(page, base, "alice")
    shot(page, "02-account-opened")
    bob_number = open_account(page, base, "bob")
    page.goto(f"{base}/admin/accounts/accountbalance/?q={alice_number}")
    page.click(f"text={alice_number}")
    page.click("#action-deposit")
    page.fill("#id_amount", "250.00")
    page.fill("#id_reference", "cash at the counter")
    page.fill("#id_reason", "customer paid in cash")
    shot(page, "03-deposit-form")
    page.click("input[type=submit]")
    assert "Deposited 250.00 EUR" in page.locator(".messagelist").inner_text()
    shot(page, "04-deposited")
    # The page it lands on waits for the read model to have the deposit (it
    # reloads itself): it never shows the balance from before.
    balance = page.locator(".field-balance_money .readonly")
    expect(balance).to_have_text("250.00 EUR", timeout=15_000)

    # Back to the sent form: the browser does not fill it in again (to the
    # server it is a new form), so Confirm cannot deposit a second time.
    page.go_back()
    expect(page.locator("#id_amount")).to_have_value("")
    expect(page.locator("#id_reason")).to_have_value("")
    page.click("input[type=submit]")
    expect(page.locator(".errorlist").first).to_be_visible()
    page.click("text=Cancel")
    expect(balance).to_have_text("250.00 EUR")

    # The balance at a moment, from the same page (its form is not the
    # change form's: "Show" once posted that one and answered 403).
    page.fill("#id_at", "2100-01-01T00:00:00")
    with page.expect_navigation():
        page.click("#balance-at input[type=submit]")
    assert "250.00 EUR" in page.locator("#balance-at-result").inner_text()

    # Start a transfer by account numbers and watch it complete.
    page.goto(f"{base}/admin/transfers/transfersummary/add/")
    page.fill("#id_from_account", alice_number)
    page.fill("#id_to_account", bob_number)
    page.fill("#id_amount", "100.00")
    page.fill("#id_reference", "rent for May")
    page.click("input[type=submit]")

    # The status and the ledgers are separate read models, caught up by
    # separate tasks: wait for the debit and the credit in the timeline too.
    def completed_with_both_ledger_rows() -> bool:
        try:
            status = _reloaded(page).locator(".transfer-status").inner_text()
            timeline = page.locator("#timeline")
            return (
                "completed" in status
                and timeline.get_by_text("account debit").count() == 1
                and timeline.get_by_text("account credit").count() == 1
            )
        except PlaywrightError:
            return False  # the pending page was refreshing itself; look again

    wait_until(
        completed_with_both_ledger_rows,
        timeout=60,
        interval=0.5,
        message="the transfer completes with a debit and a credit in the ledgers",
    )
    shot(page, "05-transfer-completed")
    assert page.locator(".field-requester .readonly").inner_text() == "tina"
    page.goto(f"{base}/admin/transfers/transfersummary/")
    assert "100.00 EUR" in page.locator("#result_list").inner_text()
    shot(page, "06-transfer-list")

    # The scheduled trial-balance check (run now by the worker) finds the
    # books balanced, and the operations page says so.
    run_checks_task.delay()
    wait_until(
        lambda: CheckRun.objects.filter(name=trial_balance.NAME).exists(),
        timeout=60,
        message="the trial-balance check ran",
    )
    page.goto(f"{base}/admin/operations/")
    assert page.locator("#trial-balance-result").inner_text() == "balanced"
    checked = page.locator("#trial-balance-checked").inner_text()
    assert "250.00 EUR" in checked and "NOT balanced" not in checked
    assert page.locator("#activity svg").count() == 1
    shot(page, "07-operations")


def _reloaded(page):
    page.reload()
    page.wait_for_selector(".transfer-status")
    return page
