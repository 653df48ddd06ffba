"""Verify, repair and rebuild the bank's read models on a few thousand events."""

import contextlib
import random
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import models

from accounts import services as accounts
from accounts.errors import InsufficientFunds
from accounts.models import AccountBalance, LedgerEntry
from eventstore import subscriptions, verification
from eventstore.models import Checkpoint, CheckRun, Event
from eventstore.store import partition_heads
from eventstore.subscriptions import catch_up
from transfers import services as transfers
from transfers import trial_balance
from transfers.models import Totals, TransferSummary
from transfers.tests.factories import run_process

PROJECTIONS = ["accounts.balances", "transfers.summary", "transfers.totals"]


@pytest.fixture
def bank(db):
    """About 2,500 events: accounts, cash, and transfers of every outcome."""
    rng = random.Random(5)
    owner = User.objects.create_user("owner", password="pw")
    ids = [
        accounts.open_account(owner=owner, currency="EUR", actor=owner).id
        for _ in range(20)
    ]
    for _ in range(1300):
        accounts.deposit(
            account_id=rng.choice(ids), amount=rng.randint(1, 900), actor=None
        )
    for _ in range(250):
        with contextlib.suppress(InsufficientFunds):  # a refusal records nothing
            accounts.withdraw(
                account_id=rng.choice(ids), amount=rng.randint(1, 3000), actor=None
            )
    accounts.freeze(account_id=ids[0], actor=None)
    for _ in range(200):
        source, target = rng.sample(ids, 2)
        transfers.request_transfer(
            actor=owner,
            from_account=source,
            to_account=target,
            amount=rng.randint(1, 5000),
        )
    run_process()
    catch_up()
    return ids


@pytest.mark.django_db
def test_verification_finds_corruption_repair_and_rebuild_fix_it(bank):
    assert Event.objects.count() > 2000
    clean = {name: verification.verify(name) for name in PROJECTIONS}
    AccountBalance.objects.filter(id=bank[1]).update(balance=7)
    LedgerEntry.objects.filter(account_id=bank[2]).order_by("position").first().delete()
    TransferSummary.objects.filter(
        id=TransferSummary.objects.order_by("id").values("id")[:1]
    ).update(status="pending")
    Totals.objects.update(deposited=0)

    found = {name: verification.verify(name) for name in PROJECTIONS}
    repaired = {name: verification.repair(name) for name in PROJECTIONS}
    again = {name: verification.verify(name) for name in PROJECTIONS}

    assert {name: run.outcome for name, run in clean.items()} == dict.fromkeys(
        PROJECTIONS, CheckRun.Outcome.OK
    )
    assert {name: run.outcome for name, run in found.items()} == dict.fromkeys(
        PROJECTIONS, CheckRun.Outcome.DRIFT
    )
    assert found["accounts.balances"].differences == 3  # a row changed, one gone
    assert found["transfers.summary"].differences == 2
    assert all(run.ok for run in repaired.values())
    assert {name: run.outcome for name, run in again.items()} == dict.fromkeys(
        PROJECTIONS, CheckRun.Outcome.OK
    )
    assert verification.run_check(trial_balance.NAME).ok

    # The command rebuilds every read model from scratch, with a progress bar.
    balances = dict(AccountBalance.objects.values_list("id", "balance"))
    LedgerEntry.objects.all().delete()
    AccountBalance.objects.all().delete()
    out, err = StringIO(), StringIO()

    call_command("rebuild_projections", stdout=out, stderr=err)

    assert dict(AccountBalance.objects.values_list("id", "balance")) == balances
    assert "accounts.balances: 100%" in err.getvalue()  # tqdm's bar
    for name in PROJECTIONS:
        assert f"{name}: OK" in out.getvalue()


def read_model_rows() -> dict[str, list[tuple]]:
    """Return every row of the bank's read models, without auto-increment keys."""
    rows = {}
    for name in PROJECTIONS:
        for model in subscriptions.get_subscription(name).read_models:
            fields = [
                field.attname
                for field in model._meta.concrete_fields
                if not isinstance(field, models.AutoField)
            ]
            rows[model._meta.label] = sorted(
                model.objects.values_list(*fields), key=repr
            )
    return rows


@pytest.mark.django_db
def test_one_pass_rebuilds_the_same_rows_as_separate_rebuilds(bank, monkeypatch):
    counts = {name: subscriptions.rebuild(name) for name in PROJECTIONS}
    separately = read_model_rows()
    Totals.objects.update(deposited=0)
    LedgerEntry.objects.filter(account_id=bank[2]).delete()
    # Small batches, so that every partition takes several.
    monkeypatch.setattr(subscriptions, "REBUILD_BATCH_SIZE", 7)

    handled = subscriptions.rebuild_together(PROJECTIONS)

    assert read_model_rows() == separately
    assert handled == counts
    heads = partition_heads()
    for name in PROJECTIONS:
        checkpoints = Checkpoint.objects.filter(subscription=name)
        assert dict(checkpoints.values_list("partition", "sequence")) == heads
        assert not checkpoints.exclude(failed_sequence=None).exists()


@pytest.mark.django_db
def test_a_failing_read_model_leaves_every_read_model_of_the_pass_as_it_was(
    bank, monkeypatch
):
    before = read_model_rows()
    summary = subscriptions.get_subscription("transfers.summary")

    def fail(batch):
        raise ValueError("broken handler")

    monkeypatch.setattr(summary, "batch_handler", fail)

    runs = verification.repair_together(PROJECTIONS)

    assert [run.outcome for run in runs] == [CheckRun.Outcome.ERROR] * 3
    assert "rebuild of transfers.summary failed" in runs[0].summary
    assert read_model_rows() == before
