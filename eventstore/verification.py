"""Keep read models honest: verify them against the events, repair them, check.

Verification. A subscription that can be rebuilt (it has ``reset``) and names
its ``read_models`` is verified at a cut: its checkpoints are locked, so the
live read model stays exactly at the events up to them while the
verification runs. The live rows are copied into temporary tables; inside a
savepoint the read model is reset and every event up to the cut is replayed
into it (the shadow copy); the two are compared in SQL (``EXCEPT ALL`` both
ways, so memory stays flat however big the tables; on SQLite, which lacks
it, each distinct row's counts); and the savepoint is rolled back, so nobody
ever sees the shadow. Columns that do not come from the events (an
auto-increment key, ``auto_now`` times) are not compared.

Repair rebuilds the live read model in one transaction
(``subscriptions.rebuild``), so readers see the old rows until the new ones
are complete; ``repair_together`` rebuilds several in one pass over the
events.

Checks are functions registered by the apps that know what to compare (the
bank's trial balance is one). A verification or check that finds a difference
is recorded as an alert and mailed to the operations staff through Django's
mail settings.

Every run is recorded as a ``CheckRun``; the operations page shows the
latest ones. A job that cannot run, whatever stops it (a statement timeout, a
lost connection, a bug), is recorded as an error and mailed in the same way,
and a scheduled task goes on with its next job.
"""

import contextlib
import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import Callable, Iterator

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.mail import send_mail
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from . import subscriptions
from .errors import EventStoreError
from .models import Checkpoint, CheckRun
from .store import create_partitions, partition_heads

logger = logging.getLogger(__name__)

OPERATE_PERMISSION = "eventstore.operate_subscriptions"
# Differing rows kept in a run's details, each way, per table.
SAMPLE_ROWS = 5
# Rounds of catching up before a check gives up on a cut (new events keep
# arriving between the last round and the reading of the heads).
CUT_ATTEMPTS = 20


class CheckNotPossible(Exception):
    """A check could not reach a state where its figures can be compared."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What a check found: ``differences`` is 0 when the figures agree."""

    rows_checked: int
    differences: int
    summary: str
    details: dict = dataclasses.field(default_factory=dict)


_checks: dict[str, Callable[[], CheckResult]] = {}


def register_check(name: str, check: Callable[[], CheckResult]) -> None:
    """Register a check under a name (at import time; once per name)."""
    _checks[name] = check


def checks() -> list[str]:
    return sorted(_checks)


def verifiable() -> list[subscriptions.Subscription]:
    """Return the subscriptions that can be rebuilt and name their read models."""
    return [
        sub
        for sub in subscriptions.all_subscriptions()
        if sub.reset is not None and sub.read_models
    ]


def rebuildable() -> list[subscriptions.Subscription]:
    return [sub for sub in subscriptions.all_subscriptions() if sub.reset]


def _use_job_timeouts() -> None:
    """Give the rest of the current transaction the jobs' statement and lock timeouts.

    Verification, repair and checks copy, compare and empty whole read models
    and sum over the event table, single statements that take longer as the
    store grows; the sessions' timeout (``DATABASE_STATEMENT_TIMEOUT_MS``),
    there to free a hung worker's lease, would fail them for good on a big
    store. They also wait for the runners' batches (their checkpoints'
    locks), longer than the sessions' ``DATABASE_LOCK_TIMEOUT_MS`` may allow,
    so the same timeout bounds their lock waits. ``SET LOCAL`` ends with the
    transaction.
    """
    if connection.vendor != "postgresql":
        return
    timeout_ms = int(settings.DATABASE_JOB_STATEMENT_TIMEOUT_MS)
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
        cursor.execute(f"SET LOCAL lock_timeout = {timeout_ms}")


def latest_runs() -> dict[tuple[str, str], CheckRun]:
    """Return the latest run of each (name, kind) the code knows.

    Runs pile up (a check every 15 minutes is 35,000 a year) and nothing
    prunes them, so each (name, kind) is looked up on its own, in the index
    that leads with them: a ``DISTINCT ON`` would read every run.
    """
    rebuilt = (CheckRun.Kind.VERIFY, CheckRun.Kind.REPAIR)
    known = [
        *(
            (sub.name, kind)
            for sub in subscriptions.all_subscriptions()
            for kind in rebuilt
        ),
        *((name, CheckRun.Kind.CHECK) for name in checks()),
    ]
    latest = {}
    for name, kind in known:
        run = CheckRun.objects.filter(name=name, kind=kind).first()
        if run is not None:
            latest[(name, kind)] = run
    return latest


# Verification


def verify(name: str, *, requested_by=None) -> CheckRun:
    """Compare a subscription's live read model with one rebuilt from events.

    Record the run; drift is mailed to the operations staff, as a check's
    difference is.
    """
    started, clock = timezone.now(), time.monotonic()
    sub = subscriptions.get_subscription(name)
    try:
        if sub.reset is None or not sub.read_models:
            raise CheckNotPossible(f"{name} has no reset or names no read models")
        if not sub.event_types:  # its shadow would be empty, whatever the events
            raise CheckNotPossible(subscriptions.no_handlers_message(sub))
        result = _verify(sub)
    except Exception as error:  # recorded, logged and mailed: see _failed
        (run,) = _failed(
            [name], CheckRun.Kind.VERIFY, started, clock, requested_by, error
        )
        return run
    return _record(name, CheckRun.Kind.VERIFY, started, clock, requested_by, result)


def _verify(sub: subscriptions.Subscription) -> CheckResult:
    tables = [_Table.of(model) for model in sub.read_models]
    with transaction.atomic():
        _use_job_timeouts()
        cut = _freeze(sub)
        for table in tables:
            table.copy_live()
        savepoint = transaction.savepoint()
        try:
            replayed = _replay(sub, cut)
            compared = [table.compare() for table in tables]
        finally:
            transaction.savepoint_rollback(savepoint)
            for table in tables:
                table.drop_copy()
    differences = sum(c["live_only"] + c["shadow_only"] for c in compared)
    rows = sum(max(c["live_rows"], c["shadow_rows"]) for c in compared)
    summary = f"{rows} rows checked against {replayed} events: " + (
        "no differences" if not differences else f"{differences} rows differ"
    )
    return CheckResult(
        rows_checked=rows,
        differences=differences,
        summary=summary,
        details={
            "events": replayed,
            "cut": {str(p): s for p, s in sorted(cut.items())},
            "tables": compared,
        },
    )


def _freeze(sub: subscriptions.Subscription) -> dict[int, int]:
    """Lock the subscription's checkpoints; return the cut they hold."""
    subscriptions.ensure_checkpoints([sub], subscriptions.partitions())
    return dict(
        Checkpoint.objects.select_for_update()
        .filter(subscription=sub.name)
        .order_by("partition")
        .values_list("partition", "sequence")
    )


def _replay(sub: subscriptions.Subscription, cut: dict[int, int]) -> int:
    """Reset the read model and handle every event up to the cut; return the count.

    Events an operator skipped are skipped again, as the live model did, and
    not even read if they cannot be decoded; neither are events after the cut.
    """
    sub.reset()
    skipped = subscriptions.skipped_events([sub.name])
    handled = 0
    for partition, last in sorted(cut.items()):
        after = 0
        for events, read_to in subscriptions.read_for_replay(
            partition, [sub], skipped, limit=sub.batch_size, up_to=last
        ):
            replayed = [e for e in events if not skipped(sub.name, e)]
            try:
                subscriptions.handle(sub, replayed)
            except Exception as error:
                reason = getattr(error, "error", None) or repr(error)
                raise CheckNotPossible(
                    f"replaying partition {partition} after sequence {after} "
                    f"failed: {reason}"
                ) from error
            handled += len(replayed)
            after = read_to
    return handled


@dataclasses.dataclass
class _Table:
    """One table of a read model, its compared columns and its live copy."""

    name: str
    columns: list[str]
    copy: str = ""

    @classmethod
    def of(cls, model: type[models.Model]) -> "_Table":
        columns = [
            field.column
            for field in model._meta.concrete_fields
            if not isinstance(field, models.AutoField)
            and not getattr(field, "auto_now", False)
            and not getattr(field, "auto_now_add", False)
        ]
        return cls(name=model._meta.db_table, columns=columns)

    @property
    def select(self) -> str:
        quote = connection.ops.quote_name
        return ", ".join(quote(column) for column in self.columns)

    def copy_live(self) -> None:
        self.copy = f"verify_{uuid.uuid4().hex[:12]}"
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMPORARY TABLE {self.copy} AS "
                f"SELECT {self.select} FROM {connection.ops.quote_name(self.name)}"
            )

    def drop_copy(self) -> None:
        if self.copy:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {self.copy}")

    def compare(self) -> dict:
        """Count and sample the rows found in one of live and shadow, not the other.

        As multisets, both ways: a row twice in one and once in the other is
        one row that differs.
        """
        table = connection.ops.quote_name(self.name)
        if connection.vendor == "postgresql":
            differ = self._except_all(table)
        else:
            differ = self._tallied(table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT (SELECT count(*) FROM {self.copy}),"
                f" (SELECT count(*) FROM {table}), {differ['counts']}"
            )
            live_rows, shadow_rows, live_only, shadow_only = cursor.fetchone()
            samples = {}
            for side in ("live", "shadow"):
                cursor.execute(f"{differ[side]} LIMIT %s", [SAMPLE_ROWS])
                samples[f"{side}_only_sample"] = [
                    dict(zip(self.columns, map(_jsonable, row), strict=True))
                    for row in cursor.fetchall()
                ]
        return {
            "table": self.name,
            "live_rows": live_rows,
            "shadow_rows": shadow_rows,
            "live_only": live_only,
            "shadow_only": shadow_only,
            **samples,
        }

    def _except_all(self, table: str) -> dict[str, str]:
        """Return SQL for the differences, with PostgreSQL's ``EXCEPT ALL``."""
        live = f"SELECT {self.select} FROM {self.copy}"
        shadow = f"SELECT {self.select} FROM {table}"
        live_only = f"{live} EXCEPT ALL {shadow}"
        shadow_only = f"{shadow} EXCEPT ALL {live}"
        return {
            "counts": f"(SELECT count(*) FROM ({live_only}) AS a),"
            f" (SELECT count(*) FROM ({shadow_only}) AS b)",
            "live": f"SELECT * FROM ({live_only}) AS d",
            "shadow": f"SELECT * FROM ({shadow_only}) AS d",
        }

    def _tallied(self, table: str) -> dict[str, str]:
        """Return SQL for the differences, from each distinct row's two counts.

        For SQLite (the embedded mode), which has no ``EXCEPT ALL``: each
        distinct row (``GROUP BY`` takes NULLs as equal, as ``EXCEPT`` does)
        is tallied +1 per live copy and -1 per shadow copy, so a positive
        tally is that many rows only live, a negative one only in the shadow.
        A sample shows each differing row once.
        """
        tally = (
            f"SELECT {self.select}, sum(verify_n) AS verify_n FROM"
            f" (SELECT {self.select}, 1 AS verify_n FROM {self.copy}"
            f" UNION ALL SELECT {self.select}, -1 FROM {table}) AS u"
            f" GROUP BY {self.select} HAVING sum(verify_n) <> 0"
        )
        return {
            "counts": "(SELECT coalesce(sum(verify_n), 0)"
            f" FROM ({tally}) AS a WHERE verify_n > 0),"
            " (SELECT coalesce(-sum(verify_n), 0)"
            f" FROM ({tally}) AS b WHERE verify_n < 0)",
            "live": f"SELECT {self.select} FROM ({tally}) AS d WHERE verify_n > 0",
            "shadow": f"SELECT {self.select} FROM ({tally}) AS d WHERE verify_n < 0",
        }


def _jsonable(value):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# Repair


def repair(name: str, *, requested_by=None) -> CheckRun:
    """Rebuild a subscription's live read model from the events."""
    (run,) = repair_together([name], requested_by=requested_by)
    return run


def repair_together(
    names: list[str],
    *,
    requested_by=None,
    progress: Callable[[str, int], None] | None = None,
) -> list[CheckRun]:
    """Rebuild several live read models in one pass over the events.

    One transaction for all (``subscriptions.rebuild_together``): they are
    all rebuilt, or none is. Record a run for each, in the order given.
    """
    started, clock = timezone.now(), time.monotonic()
    try:
        # Committed first, as the rebuild itself does: a runner creating the
        # same rows would otherwise wait for the whole rebuild.
        subscriptions.ensure_checkpoints(
            [subscriptions.get_subscription(n) for n in names],
            subscriptions.partitions(),
        )
        with transaction.atomic():
            _use_job_timeouts()
            handled = subscriptions.rebuild_together(names, progress=progress)
    except Exception as error:  # recorded, logged and mailed: see _failed
        return _failed(names, CheckRun.Kind.REPAIR, started, clock, requested_by, error)
    # All or none, as the rebuild was.
    with transaction.atomic():
        return [
            _record(
                name,
                CheckRun.Kind.REPAIR,
                started,
                clock,
                requested_by,
                CheckResult(
                    rows_checked=handled[name],
                    differences=0,
                    summary=f"rebuilt from {handled[name]} events",
                    details={"events": handled[name]},
                ),
            )
            for name in names
        ]


# Checks


def run_check(name: str, *, requested_by=None) -> CheckRun:
    """Run a registered check and record it (alerting on a difference)."""
    started, clock = timezone.now(), time.monotonic()
    check = _checks.get(name)
    try:
        if check is None:
            raise CheckNotPossible(f"no check named {name!r}")
        result = check()
    except Exception as error:  # recorded, logged and mailed: see _failed
        (run,) = _failed(
            [name], CheckRun.Kind.CHECK, started, clock, requested_by, error
        )
        return run
    return _record(name, CheckRun.Kind.CHECK, started, clock, requested_by, result)


@contextlib.contextmanager
def caught_up_cut(names: list[str]) -> Iterator[dict[int, int]]:
    """Hold these subscriptions caught up with every partition; yield the cut.

    Inside, in one transaction, the subscriptions' checkpoints are locked (so
    their read models do not move) and equal the partitions' heads as read
    in one statement (so the cut splits no transaction's events). Each round
    catches the subscriptions up and reads the heads again, until no event
    arrived in between; ``CheckNotPossible`` if that never happens or a
    partition is stopped.
    """
    subs = [subscriptions.get_subscription(name) for name in names]
    create_partitions(subscriptions.partitions())
    with transaction.atomic():
        _use_job_timeouts()
        # In the order a rebuild locks checkpoints, so the two queue, not deadlock.
        for sub in sorted(subs, key=lambda sub: sub.name):
            _freeze(sub)
        for _ in range(CUT_ATTEMPTS):
            for partition in subscriptions.partitions():
                subscriptions.process_partition(partition, subs)
            heads = partition_heads()
            positions = list(
                Checkpoint.objects.filter(subscription__in=names).values_list(
                    "subscription", "partition", "sequence", "failed_sequence"
                )
            )
            behind = [
                (name, partition)
                for name, partition, sequence, _ in positions
                if sequence != heads.get(partition, 0)
            ]
            stopped = [(n, p) for n, p, _, failed in positions if failed is not None]
            if stopped:
                raise CheckNotPossible(
                    "stopped partitions: "
                    + ", ".join(f"{name}[{partition}]" for name, partition in stopped)
                )
            if not behind:
                yield heads
                return
        raise CheckNotPossible(
            f"the projections did not catch up in {CUT_ATTEMPTS} rounds"
        )


def operations_staff():
    """Return the active users who operate the subscriptions (and get alerts)."""
    app_label, codename = OPERATE_PERMISSION.split(".")
    permission = Permission.objects.filter(
        content_type__app_label=app_label, codename=codename
    ).first()
    holds = Q(is_superuser=True)
    if permission is not None:
        holds |= Q(user_permissions=permission) | Q(groups__permissions=permission)
    return get_user_model().objects.filter(holds, is_active=True).distinct()


def alert(run: CheckRun) -> None:
    """Mail the operations staff about a failed check or job; record that it was.

    The subject starts with Django's ``EMAIL_SUBJECT_PREFIX``: the site's
    name for itself, which the event store does not know.
    """
    recipients = sorted({user.email for user in operations_staff() if user.email})
    subject = f"{settings.EMAIL_SUBJECT_PREFIX}{run.name}: {run.get_outcome_display()}"
    body = (
        f"{run.get_kind_display()} {run.name} at {run.started_at:%Y-%m-%d %H:%M:%S %Z}"
        f"\n\n{run.summary}\n\nSee the operations page in the admin for details."
    )
    try:
        if recipients:
            send_mail(subject, body, None, recipients)
        run.alert_error = "" if recipients else "no operations staff with an email"
    except Exception as error:  # the alert is recorded and logged either way
        logger.exception("could not mail the alert about %s", run)
        run.alert_error = f"mail failed: {error}"
    run.alerted_at = timezone.now()
    run.save(update_fields=["alerted_at", "alert_error"])


# Errors that say in their own words why a job could not run; any other
# (a statement timeout, a lost connection, a bug) is also named by its type.
_EXPLAINED = (CheckNotPossible, EventStoreError)


def _failed(
    names: list[str], kind, started, clock, requested_by, error: Exception
) -> list[CheckRun]:
    """Record that a job could not run (a run per name) and alert; return the runs.

    Whatever stopped it, the job ends as an ``ERROR`` run on the operations
    page and a mail to the operations staff, and a scheduled task goes on
    with its next job. The job's own transaction has rolled back by now (or,
    when even the rollback failed, Django dropped the connection); a
    connection that broke outside a transaction is dropped here, so the runs
    are recorded on a working one, in a transaction of their own: all of
    them or, if that fails too, none.
    """
    if isinstance(error, _EXPLAINED):
        summary = str(error)
        logger.warning("%s of %s could not run: %s", kind, ", ".join(names), error)
    else:
        summary = f"{type(error).__name__}: {error}" if str(error) else repr(error)
        logger.error("%s of %s failed", kind, ", ".join(names), exc_info=error)
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()
    duration = datetime.timedelta(seconds=time.monotonic() - clock)
    with transaction.atomic():
        runs = [
            CheckRun.objects.create(
                name=name,
                kind=kind,
                outcome=CheckRun.Outcome.ERROR,
                started_at=started,
                duration=duration,
                summary=summary,
                requested_by=requested_by,
            )
            for name in names
        ]
    for run in runs:
        alert(run)
    return runs


def _record(name, kind, started, clock, requested_by, result) -> CheckRun:
    """Record a job that ran; alert on a difference (a verification's drift too)."""
    duration = datetime.timedelta(seconds=time.monotonic() - clock)
    outcome = CheckRun.Outcome.OK if not result.differences else CheckRun.Outcome.DRIFT
    if outcome != CheckRun.Outcome.OK:
        logger.warning("%s of %s: %s", kind, name, result.summary)
    run = CheckRun.objects.create(
        name=name,
        kind=kind,
        outcome=outcome,
        started_at=started,
        duration=duration,
        rows_checked=result.rows_checked,
        differences=result.differences,
        summary=result.summary,
        details=result.details,
        requested_by=requested_by,
    )
    if not run.ok:
        alert(run)
    return run


# Celery tasks: thin. A job that fails is recorded as a run and does not
# raise, so the scheduled ones go on to the next.


class _Job(DjangoTask):  # the app's own task class, with delay_on_commit
    """A job's task: ``JOB_TIME_LIMIT_SECONDS`` stops one that runs too long.

    The soft limit raises in the job (recorded as an error and mailed, like
    any failure); the hard one, a minute later, kills a job that ignores it
    and frees its worker. Both are read from the settings when asked for
    (a worker asks as it starts), not when this module is imported.
    """

    @property
    def soft_time_limit(self) -> int:
        return settings.JOB_TIME_LIMIT_SECONDS

    @property
    def time_limit(self) -> int:
        return settings.JOB_TIME_LIMIT_SECONDS + 60


def job(name: str):
    """Declare a verification, repair or check task: run at most once, for a time.

    Acknowledged when a worker takes it, unlike the other tasks: Redis hands
    a message not yet acknowledged after its visibility timeout (an hour) to
    another worker while the first may still run it, and a job may take
    longer than that (two verifications of one read model, two mails for one
    difference). A job lost with its worker is run by the next schedule, or
    asked for again. Its time limits are ``_Job``'s.
    """
    return shared_task(
        name=name,
        base=_Job,
        ignore_result=True,
        acks_late=False,
        reject_on_worker_lost=False,
    )


def _user(user_id):
    return get_user_model().objects.filter(pk=user_id).first() if user_id else None


@job("eventstore.verify_projections")
def verify_projections_task() -> list[str]:
    return [verify(sub.name).outcome for sub in verifiable()]


@job("eventstore.verify_projection")
def verify_projection_task(name: str, user_id: int | None = None) -> str:
    return verify(name, requested_by=_user(user_id)).outcome


@job("eventstore.repair_projection")
def repair_projection_task(name: str, user_id: int | None = None) -> str:
    return repair(name, requested_by=_user(user_id)).outcome


@job("eventstore.run_checks")
def run_checks_task() -> list[str]:
    return [run_check(name).outcome for name in checks()]


@job("eventstore.run_check")
def run_check_task(name: str, user_id: int | None = None) -> str:
    return run_check(name, requested_by=_user(user_id)).outcome
