"""Transfers run by a real Celery worker on the real Redis and PostgreSQL.

A worker is another process: it sees only committed data, so these tests use
real transactions. Each test settles (every transfer finished, every
subscription caught up) before it checks the money.
"""

import collections
import contextlib
import json
import random
import socketserver
import threading

import pytest
import redis
from django.conf import settings
from django.db import connection

from accounts import services as accounts
from accounts.errors import InsufficientFunds
from accounts.models import AccountBalance, LedgerEntry
from eventstore import verification
from eventstore.models import Checkpoint, CheckRun, Event
from eventstore.store import read_stream
from eventstore.subscriptions import catch_up, subscription_status
from eventstore.tests.test_verification import (
    a_session_waits_for_a_lock,
    checkpoint_locked,
)
from transfers import process, selectors, services, trial_balance
from transfers.models import TotalsAccount, TransferSummary

from .factories import make_user, open_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

SETTLE_SECONDS = 90


def purge_broker_queue() -> None:
    """Drop every message waiting in this test run's queue: lost nudges."""
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(
        settings.CELERY_TASK_DEFAULT_QUEUE
    )


def settled() -> bool:
    """Tell whether every transfer finished and every read model caught up."""
    requested = Event.objects.filter(event_type="transfers.TransferRequested").count()
    finished = Event.objects.filter(
        event_type__in=["transfers.Credited", "transfers.Failed"]
    ).count()
    return requested == finished and all(s.lag == 0 for s in subscription_status())


def request(actor, source, target, amount):
    return services.request_transfer(
        actor=actor, from_account=source.id, to_account=target.id, amount=amount
    )


def expected_balances(initial: dict) -> dict:
    """Return each account's balance from the transfers' outcomes."""
    balances = dict(initial)
    for row in TransferSummary.objects.filter(status="completed"):
        balances[row.from_account] -= row.amount
        balances[row.to_account] += row.amount
    return balances


def assert_money_exact(expected: dict) -> None:
    aggregates = {a: accounts.get_account(a).balance for a in expected}
    projected = dict(
        AccountBalance.objects.filter(id__in=expected).values_list("id", "balance")
    )
    assert aggregates == expected
    assert projected == expected
    snapshot = selectors.totals_snapshot()
    for figures in snapshot["currencies"].values():
        assert figures["in_transit"] == 0
        assert figures["balances"] == figures["deposited"] - figures["withdrawn"]
    assert snapshot["currencies"]["EUR"]["balances"] == sum(expected.values())


def assert_each_step_once() -> None:
    """Each completed transfer is one debit and one credit in the ledgers;
    each failed one left no net movement."""
    steps = collections.defaultdict(list)
    for transfer_id, step, amount in LedgerEntry.objects.filter(
        transfer_id__isnull=False
    ).values_list("transfer_id", "transfer_step", "amount"):
        steps[transfer_id].append((step, amount))
    for row in TransferSummary.objects.all():
        moves = sorted(steps.get(row.id, []))
        if row.status == "completed":
            assert moves == [("credit", row.amount), ("debit", -row.amount)]
        else:
            assert row.status == "failed"
            assert moves in ([], [("debit", -row.amount), ("refund", row.amount)])
            assert sum(amount for _, amount in moves) == 0


def test_a_worker_killed_mid_batch_then_restarted_leaves_every_transfer_done(
    start_celery_worker, wait_for
):
    # Given accounts with money, and a hundred transfers among them
    owner = make_user()
    funded = [open_account(owner, balance=10_000) for _ in range(4)]
    initial = {a.id: 10_000 for a in funded}
    rng = random.Random(4)
    worker = start_celery_worker()
    transfers = []
    for _ in range(100):
        source, target = rng.sample(funded, 2)
        transfers.append(request(owner, source, target, rng.randint(1, 3000)))

    # When the worker dies while it is moving them
    wait_for(
        lambda: Event.objects.filter(event_type="transfers.Debited").exists(),
        timeout=30,
    )
    worker.kill()
    unfinished = (
        len(transfers)
        - Event.objects.filter(
            event_type__in=["transfers.Credited", "transfers.Failed"]
        ).count()
    )
    assert unfinished > 0, "the worker finished before it was killed"
    start_celery_worker(beat=True)

    # Then every transfer ends, and every balance is exact
    wait_for(settled, timeout=SETTLE_SECONDS, message="transfers to settle")
    assert set(TransferSummary.objects.values_list("status", flat=True)) <= {
        "completed",
        "failed",
    }
    assert TransferSummary.objects.count() == len(transfers)
    assert_money_exact(expected_balances(initial))
    assert_each_step_once()


def test_a_lost_nudge_still_gets_the_transfer_done_by_the_sweep(
    start_celery_worker, wait_for
):
    owner = make_user()
    source = open_account(owner, balance=500)
    target = open_account(owner)
    transfer = request(owner, source, target, 200)
    purge_broker_queue()  # every nudge so far is lost

    start_celery_worker(beat=True)

    wait_for(settled, timeout=SETTLE_SECONDS, message="the sweep to finish it")
    assert TransferSummary.objects.get(id=transfer.id).status == "completed"
    assert_money_exact({source.id: 300, target.id: 200})


def test_handlers_run_again_for_the_same_events_move_money_once(
    start_celery_worker, wait_for
):
    # Given transfers completed and failed by a worker
    owner = make_user()
    source = open_account(owner, balance=500)
    target = open_account(owner)
    refused = open_account(owner)
    request(owner, source, target, 200)
    request(owner, source, target, 900)  # insufficient funds
    request(owner, source, refused, 100)
    accounts.freeze(account_id=refused.id, actor=None)
    worker = start_celery_worker()
    wait_for(settled, timeout=SETTLE_SECONDS)
    expected = {source.id: 300, target.id: 200, refused.id: 0}
    assert_money_exact(expected)

    # When every event is delivered to the process manager again
    handled = list(
        Event.objects.filter(
            event_type__in=["transfers.TransferRequested", "transfers.Debited"]
        ).values_list("stream_id", flat=True)
    )
    for stream_id in handled:
        for recorded in read_stream(stream_id):
            handler = process.process.handlers.get(recorded.event_type)
            if handler is not None:
                handler(recorded)  # in this process, outside any batch
    Checkpoint.objects.filter(subscription="transfers.process").update(sequence=0)
    worker.stop()
    start_celery_worker(beat=True)  # and by a worker, from the start
    wait_for(
        lambda: not Checkpoint.objects.filter(
            subscription="transfers.process", sequence=0
        )
        .exclude(partition__in=_empty_partitions())
        .exists()
        and settled(),
        timeout=SETTLE_SECONDS,
    )

    # Then no money moved twice
    assert_money_exact(expected)
    assert_each_step_once()


def _empty_partitions() -> list[int]:
    used = set(Event.objects.values_list("partition", flat=True).distinct())
    return [p for p in range(settings.EVENTSTORE_PARTITIONS) if p not in used]


def test_concurrent_transfers_deposits_and_withdrawals_conserve_money(
    start_celery_worker, wait_for
):
    # Given a few accounts and a worker
    owner = make_user()
    funded = [open_account(owner, balance=2_000) for _ in range(4)]
    ids = [a.id for a in funded]
    start_celery_worker()
    external = collections.Counter()
    lock = threading.Lock()

    # When four clients mix transfers, deposits and withdrawals
    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                kind = rng.random()
                account = rng.choice(ids)
                amount = rng.randint(1, 1500)
                if kind < 0.7:
                    target = rng.choice([a for a in ids if a != account])
                    services.request_transfer(
                        actor=owner,
                        from_account=account,
                        to_account=target,
                        amount=amount,
                    )
                elif kind < 0.85:
                    accounts.deposit(account_id=account, amount=amount, actor=None)
                    with lock:
                        external[account] += amount
                else:
                    try:
                        accounts.withdraw(account_id=account, amount=amount, actor=None)
                    except InsufficientFunds:
                        continue
                    with lock:
                        external[account] -= amount
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then, once settled, money is conserved and never went below zero
    wait_for(settled, timeout=SETTLE_SECONDS, message="transfers to settle")
    initial = {a: 2_000 + external[a] for a in ids}
    assert_money_exact(expected_balances(initial))
    assert_each_step_once()
    assert not LedgerEntry.objects.filter(balance_after__lt=0).exists()
    for account in ids:
        balance = 0
        for recorded in read_stream(f"account-{account}"):
            amount = getattr(recorded.event, "amount", 0)
            balance += (
                -amount if type(recorded.event).__name__ == "Withdrawn" else amount
            )
            assert balance >= 0
    assert TransferSummary.objects.filter(status="completed").exists()


def test_a_repaired_trial_balance_stays_repaired_in_a_running_worker(
    start_celery_worker, wait_for
):
    """A worker process must not go on trusting read-model rows a repair rewrote.

    The totals projection once kept each account's currency in the process,
    read from its ``TotalsAccount`` row: after a repair of a wrong row the
    worker went on counting the account's money under the wrong currency.
    """
    account = open_account(make_user(), balance=100)
    catch_up()
    # The read model goes wrong (the damage verify and repair are for) before
    # the worker reads it.
    TotalsAccount.objects.filter(stream_id=account.stream_id).update(currency="USD")

    def subscriptions_caught_up() -> bool:
        return all(status.lag == 0 for status in subscription_status())

    start_celery_worker(concurrency=1)  # one process handles every deposit
    accounts.deposit(account_id=account.id, amount=50, actor=None)
    wait_for(subscriptions_caught_up, message="the worker to project the deposit")
    assert verification.verify("transfers.totals").outcome == CheckRun.Outcome.DRIFT

    assert verification.repair("transfers.totals").outcome == CheckRun.Outcome.OK
    accounts.deposit(account_id=account.id, amount=25, actor=None)
    wait_for(subscriptions_caught_up, message="the worker to project the deposit")

    assert set(selectors.totals_snapshot()["currencies"]) == {"EUR"}
    assert verification.verify("transfers.totals").outcome == CheckRun.Outcome.OK


class _SilentMailRelay(socketserver.BaseRequestHandler):
    """Takes the connection and never says a word (a hung mail relay)."""

    def handle(self):
        self.server.connections += 1
        with contextlib.suppress(OSError):
            while self.request.recv(1024):
                pass


@pytest.fixture
def silent_mail_relay(monkeypatch):
    """A hung relay, and the settings of the workers started after: 2 s timeout."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SilentMailRelay)
    server.daemon_threads = True
    server.connections = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("EMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("EMAIL_PORT", str(server.server_address[1]))
    monkeypatch.setenv("EMAIL_TIMEOUT", "2")
    yield server
    server.shutdown()
    server.server_close()


def trial_balance_that_differs() -> None:
    """Money in the books, projected, then a read-model row gone wrong."""
    account = open_account(make_user(), balance=100)
    catch_up()
    AccountBalance.objects.filter(id=account.id).update(balance=101)
    make_user(username="ops", email="ops@example.com", is_superuser=True)


def unacknowledged_in_this_queue() -> list[bytes]:
    """The messages of this run's queue a worker took and has not acknowledged."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        return [
            tag
            for tag, entry in client.hscan_iter("unacked")
            if json.loads(entry)[2] == settings.CELERY_TASK_DEFAULT_QUEUE
        ]
    finally:
        client.close()


def test_a_running_check_leaves_nothing_for_redis_to_hand_out_again(
    start_celery_worker, wait_for
):
    """Redis gives an unacknowledged message to another worker after an hour.

    A check held up (here by the checkpoint lock a verification would hold)
    must not be run a second time beside the first: two runs, two mails.
    """
    trial_balance_that_differs()
    with checkpoint_locked("accounts.balances"):
        start_celery_worker(concurrency=1)
        # Messages of workers killed by earlier tests may still be there (and
        # may go while this runs): only a new one would be the check's.
        before = set(unacknowledged_in_this_queue())
        verification.run_checks_task.delay()
        wait_for(a_session_waits_for_a_lock, message="the check to wait")

        assert set(unacknowledged_in_this_queue()) - before == set()
    wait_for(
        lambda: CheckRun.objects.filter(name=trial_balance.NAME).exists(),
        message="the check to end",
    )


def test_a_mail_relay_that_never_answers_does_not_take_the_worker(
    start_celery_worker, silent_mail_relay, wait_for
):
    trial_balance_that_differs()
    start_celery_worker(concurrency=1)
    verification.run_checks_task.delay()
    wait_for(lambda: silent_mail_relay.connections, message="the check to mail")

    account = open_account(make_user(), balance=7)  # after the check got stuck

    def subscriptions_caught_up() -> bool:
        return all(status.lag == 0 for status in subscription_status())

    wait_for(subscriptions_caught_up, message="the worker to project the deposit")
    assert AccountBalance.objects.get(id=account.id).balance == 7
    check = CheckRun.objects.get(name=trial_balance.NAME)
    assert check.outcome == CheckRun.Outcome.DRIFT and check.alert_error
