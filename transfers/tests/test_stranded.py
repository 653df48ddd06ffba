"""Transfers stranded by a skipped step, and how operations staff finish them.

The process manager runs a transfer's next step when it handles the
transfer's latest event. An operator who skips that event (a step that kept
failing) leaves the transfer ``pending`` or, worse, ``debited`` with its
amount in transit; ``transfer_resume`` and ``transfer_refund`` finish it.
"""

import threading
import uuid
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from accounts import services as accounts
from eventstore.models import Event
from transfers import selectors, services
from transfers.domain import Status, Transfer
from transfers.errors import TransferNotStranded, UnknownTransfer

from .factories import (
    make_user,
    open_account,
    run_process,
    run_projections,
    strand,
    strand_at_an_unreadable_event,
)


def balance(account) -> int:
    return accounts.get_account(account.id).balance


def request(source, target, amount=300):
    owner = get_user_model().objects.get(pk=source.owner_id)
    return services.request_transfer(
        actor=owner, from_account=source.id, to_account=target.id, amount=amount
    )


def transfer_money_events(*accounts_) -> list[tuple[str, str]]:
    """Return (type, step) of every transfer money event of these accounts."""
    return sorted(
        (event.event_type, event.data["step"])
        for event in Event.objects.filter(
            stream_id__in=[account.stream_id for account in accounts_],
            event_type__in=["accounts.Deposited", "accounts.Withdrawn"],
        )
        if event.data.get("transfer_id")
    )


@pytest.fixture
def alice(db):
    return make_user()


@pytest.fixture
def bob(db):
    return make_user()


@pytest.mark.django_db
class TestStranding:
    def test_a_skipped_credit_leaves_the_amount_in_transit_for_good(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)

        strand("credit")
        run_process()
        run_projections()

        assert services.get_transfer(transfer.id).status == Status.DEBITED
        assert (balance(source), balance(target)) == (700, 0)
        assert selectors.totals_snapshot()["currencies"]["EUR"]["in_transit"] == 300
        assert [row.id for row in selectors.stranded_transfers()] == [transfer.id]

    def test_a_transfer_that_moved_on_since_it_was_loaded_is_not_stranded(
        self, alice, bob
    ):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        loaded = services.get_transfer(transfer.id)  # pending, at version 1

        run_process()  # the worker debits and credits meanwhile

        assert selectors.skipped_step(loaded) is None

    def test_a_skipped_debit_leaves_the_transfer_pending_for_good(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)

        strand("debit")
        run_process()
        run_projections()

        assert services.get_transfer(transfer.id).status == Status.PENDING
        assert (balance(source), balance(target)) == (1000, 0)
        assert [row.id for row in selectors.stranded_transfers()] == [transfer.id]


@pytest.mark.django_db
class TestResume:
    def test_resume_credits_a_stranded_debited_transfer(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("credit")
        operator = make_user("operations")

        resumed = services.transfer_resume(transfer_id=transfer.id, actor=operator)
        run_process()
        run_projections()

        assert resumed.status == Status.COMPLETED
        assert (balance(source), balance(target)) == (700, 300)
        assert selectors.totals_snapshot()["currencies"]["EUR"]["in_transit"] == 0
        assert not selectors.stranded_transfers().exists()
        credited = Event.objects.get(event_type="transfers.Credited")
        deposited = Event.objects.get(
            event_type="accounts.Deposited", data__step="credit"
        )
        for event in (credited, deposited):
            assert event.metadata["actor_id"] == operator.pk
            assert "actor" not in event.metadata  # not "system" beside it

    def test_resume_debits_and_credits_a_stranded_pending_transfer(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("debit")

        resumed = services.transfer_resume(transfer_id=transfer.id, actor=None)
        run_process()  # the worker then handles the Debited the resume appended

        assert resumed.status == Status.COMPLETED
        assert services.get_transfer(transfer.id).version == 3
        assert (balance(source), balance(target)) == (700, 300)
        assert transfer_money_events(source, target) == [
            ("accounts.Deposited", "credit"),
            ("accounts.Withdrawn", "debit"),
        ]

    def test_resume_refunds_when_the_target_refuses_meanwhile(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("credit")
        accounts.freeze(account_id=target.id, actor=None)

        resumed = services.transfer_resume(transfer_id=transfer.id, actor=None)

        assert (resumed.status, resumed.failure_reason) == (
            Status.FAILED,
            "target_frozen",
        )
        assert (balance(source), balance(target)) == (1000, 0)

    def test_a_second_resume_is_refused_and_moves_nothing(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("credit")
        services.transfer_resume(transfer_id=transfer.id, actor=None)

        with pytest.raises(TransferNotStranded, match="is completed: there is nothing"):
            services.transfer_resume(transfer_id=transfer.id, actor=None)
        with pytest.raises(TransferNotStranded, match="is completed"):
            services.transfer_refund(transfer_id=transfer.id, actor=None)

        assert (balance(source), balance(target)) == (700, 300)

    def test_a_transfer_the_process_manager_will_still_run_is_refused(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)  # pending, its step still to come

        with pytest.raises(TransferNotStranded, match="is pending and not stranded"):
            services.transfer_resume(transfer_id=transfer.id, actor=None)

        assert services.get_transfer(transfer.id).version == 1
        assert balance(source) == 1000

    def test_a_transfer_stopped_at_its_step_but_not_skipped_is_refused(
        self, alice, bob, monkeypatch
    ):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)

        def broken(**kwargs):
            raise RuntimeError("the credit step is broken")

        monkeypatch.setattr(services, "transfer_credit", broken)
        run_process()  # stopped at Debited; a retry may still succeed
        monkeypatch.undo()

        with pytest.raises(TransferNotStranded, match="is debited and not stranded"):
            services.transfer_resume(transfer_id=transfer.id, actor=None)
        assert (balance(source), balance(target)) == (700, 0)

    def test_an_unknown_transfer_is_refused(self, db):
        with pytest.raises(UnknownTransfer):
            services.transfer_resume(transfer_id=uuid.uuid4(), actor=None)


@pytest.mark.django_db
class TestRefund:
    def test_refund_gives_a_stranded_amount_back_to_its_source(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("credit")

        refunded = services.transfer_refund(transfer_id=transfer.id, actor=None)
        run_projections()

        assert (refunded.status, refunded.failure_reason, refunded.refunded) == (
            Status.FAILED,
            "refunded_by_operations",
            True,
        )
        assert (balance(source), balance(target)) == (1000, 0)
        assert selectors.totals_snapshot()["currencies"]["EUR"]["in_transit"] == 0
        assert not selectors.stranded_transfers().exists()

    def test_a_pending_transfer_has_nothing_to_refund(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("debit")

        with pytest.raises(TransferNotStranded, match="nothing to refund"):
            services.transfer_refund(transfer_id=transfer.id, actor=None)

        assert services.get_transfer(transfer.id).status == Status.PENDING


NO_SUCH = str(uuid.UUID(int=1))


@pytest.fixture
def operator(db):
    return make_user("operations", username="otto")


@pytest.mark.django_db
class TestCommand:
    def test_it_lists_stranded_transfers_and_resumes_one(self, alice, bob, operator):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("credit")
        run_projections()
        listed, done = StringIO(), StringIO()

        call_command("stranded_transfers", stdout=listed)
        call_command(
            "stranded_transfers",
            "--resume",
            str(transfer.id),
            "--reason",
            "credit fixed",
            "--by",
            "otto",
            stdout=done,
        )

        assert str(transfer.id) in listed.getvalue()
        assert "the credit step keeps failing" in listed.getvalue()
        assert f"{transfer.id} is completed" in done.getvalue()
        assert (balance(source), balance(target)) == (700, 300)
        credited = Event.objects.get(event_type="transfers.Credited")
        assert credited.metadata["reason"] == "credit fixed"
        assert credited.metadata["actor_id"] == operator.pk

    def test_it_refunds_one(self, alice, bob, operator):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("credit")
        out = StringIO()

        call_command(
            "stranded_transfers",
            "--refund",
            str(transfer.id),
            "--reason",
            "target gone",
            "--by",
            "otto",
            stdout=out,
        )

        assert f"{transfer.id} is failed (refunded_by_operations)" in out.getvalue()
        assert balance(source) == 1000

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (["--resume", "nope", "--reason", "x"], "not a transfer id"),
            (
                ["--resume", NO_SUCH, "--reason", "x", "--by", "otto"],
                "No such transfer",
            ),
            (["--resume", NO_SUCH, "--by", "otto"], "--reason is required"),
            (["--refund", NO_SUCH, "--reason", " ", "--by", "otto"], "--reason is"),
            (["--resume", "", "--reason", "x"], "not a transfer id"),
            (["--refund", NO_SUCH, "--reason", "\udcff", "--by", "otto"], "UTF-8"),
            (["--resume", NO_SUCH, "--reason", "x"], "--by USERNAME is required"),
            (["--resume", NO_SUCH, "--reason", "x", "--by", "eve"], "no user is named"),
            (["--refund", NO_SUCH, "--reason", "x", "--by", "teller"], "not an active"),
            (["--reason", "x"], "--reason and --by go with --resume or --refund"),
            (["--by", "otto"], "--reason and --by go with --resume or --refund"),
        ],
    )
    def test_bad_input_is_a_clear_error(self, operator, arguments, message):
        make_user("teller", username="teller")

        with pytest.raises(CommandError, match=message):
            call_command("stranded_transfers", *arguments)

    def test_a_step_that_still_fails_is_a_clear_error(
        self, alice, bob, operator, monkeypatch
    ):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        strand("credit")
        run_process()

        def still_failing(**kwargs):
            raise RuntimeError("the credit step is broken")

        monkeypatch.setattr(services, "transfer_credit", still_failing)
        with pytest.raises(CommandError, match="Not done, nothing was changed"):
            call_command(
                "stranded_transfers",
                *("--resume", str(transfer.id), "--reason", "x", "--by", "otto"),
            )
        assert services.get_transfer(transfer.id).status == Status.DEBITED

    def test_it_lists_a_transfer_whose_events_cannot_be_read(self, alice, bob):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)
        run_projections()
        strand_at_an_unreadable_event(transfer)
        out = StringIO()

        call_command("stranded_transfers", stdout=out)

        assert f"{transfer.id} pending: its events cannot be read" in out.getvalue()

    def test_a_transfer_not_stranded_is_a_clear_error(self, alice, bob, operator):
        source = open_account(alice, balance=1000)
        target = open_account(bob)
        transfer = request(source, target)

        with pytest.raises(CommandError, match="not stranded"):
            call_command(
                "stranded_transfers",
                *("--resume", str(transfer.id), "--reason", "x", "--by", "otto"),
            )


# Concurrency: operators and the worker at once, on PostgreSQL.

THREADS = 6


def race(calls) -> list:
    """Run each call in its own thread, all at once; return outcomes in order."""
    start = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def run(index, call):
        try:
            start.wait()
            outcomes[index] = call()
        except Exception as error:  # the outcome under test
            outcomes[index] = error
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(index, call))
        for index, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_operators_and_the_worker_racing_on_a_stranded_transfer_move_money_once(
    alice, bob
):
    source = open_account(alice, balance=1000)
    target = open_account(bob)
    transfer = request(source, target)
    strand("credit")

    def resume():
        return services.transfer_resume(transfer_id=transfer.id, actor=None)

    def refund():
        return services.transfer_refund(transfer_id=transfer.id, actor=None)

    def worker():
        run_process()
        return "worker"

    outcomes = race([resume, refund] * (THREADS // 2) + [worker])

    finished = [o for o in outcomes if isinstance(o, Transfer)]
    refused = [o for o in outcomes if isinstance(o, TransferNotStranded)]
    assert len(finished) == 1, outcomes
    assert len(refused) == THREADS - 1, outcomes
    assert outcomes[-1] == "worker"
    assert balance(source) + balance(target) == 1000
    assert len(transfer_money_events(source, target)) == 2  # the debit, then one
    assert services.get_transfer(transfer.id).is_finished


@pytest.mark.django_db(transaction=True)
def test_resumes_racing_the_worker_on_a_pending_transfer_debit_and_credit_once(
    alice, bob
):
    source = open_account(alice, balance=1000)
    target = open_account(bob)
    transfer = request(source, target)
    strand("debit")

    def resume():
        return services.transfer_resume(transfer_id=transfer.id, actor=None)

    def worker():
        for _ in range(20):
            run_process()
        return "worker"

    outcomes = race([resume] * THREADS + [worker, worker])

    finished = [o for o in outcomes if isinstance(o, Transfer)]
    refused = [o for o in outcomes if isinstance(o, TransferNotStranded)]
    assert len(finished) == 1, outcomes
    assert len(refused) == THREADS - 1, outcomes
    assert (balance(source), balance(target)) == (700, 300)
    assert transfer_money_events(source, target) == [
        ("accounts.Deposited", "credit"),
        ("accounts.Withdrawn", "debit"),
    ]
    assert services.get_transfer(transfer.id).version == 3
