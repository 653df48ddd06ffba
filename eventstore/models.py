"""Tables of the event store.

``Event`` is the source of truth and append-only. ``PartitionHead`` lists
the partitions (the sweep visits them); appends lock a partition with an
advisory lock (``eventstore.store``), not with its row. ``NudgeClaim`` says
that a nudge for a partition is waiting for a worker. ``Snapshot`` rows are
disposable caches of aggregate state.
``Checkpoint`` is a subscription's position in one partition, and the row
whose lock is the lease on it.
"""

from django.conf import settings
from django.db import models


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    stream_id = models.CharField(max_length=200)
    version = models.PositiveIntegerField()
    partition = models.PositiveSmallIntegerField()
    sequence = models.BigIntegerField()
    event_type = models.CharField(max_length=200)
    schema_version = models.PositiveSmallIntegerField()
    data = models.JSONField()
    metadata = models.JSONField(default=dict)
    event_id = models.UUIDField(unique=True)
    # Set by the database at the moment of the write (clock_timestamp() on
    # PostgreSQL), never by the application.
    recorded_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["stream_id", "version"], name="eventstore_event_stream_version"
            ),
            models.UniqueConstraint(
                fields=["partition", "sequence"], name="eventstore_event_partition_seq"
            ),
        ]
        indexes = [
            models.Index(
                fields=["event_type", "recorded_at"], name="eventstore_event_type_time"
            ),
            models.Index(fields=["recorded_at"], name="eventstore_event_time"),
        ]

    def __str__(self):
        return f"{self.stream_id}@{self.version} {self.event_type}"


class PartitionHead(models.Model):
    """A partition of the event table; its last sequence is its last event's."""

    partition = models.PositiveSmallIntegerField(primary_key=True)

    def __str__(self):
        return f"partition {self.partition}"


class NudgeClaim(models.Model):
    """A partition's nudge sent and not yet picked up (see ``eventstore.nudges``)."""

    partition = models.PositiveSmallIntegerField(primary_key=True)
    claimed_at = models.DateTimeField(null=True)

    def __str__(self):
        return f"partition {self.partition} nudged at {self.claimed_at}"


class Snapshot(models.Model):
    stream_id = models.CharField(max_length=200, primary_key=True)
    version = models.PositiveIntegerField()
    schema_version = models.PositiveSmallIntegerField()
    state = models.JSONField()
    taken_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.stream_id}@{self.version}"


class Checkpoint(models.Model):
    subscription = models.CharField(max_length=100)
    partition = models.PositiveSmallIntegerField()
    sequence = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    # The event this partition is stopped at, if a handler raised on it. The
    # error is written after the handler's transaction rolled back.
    failed_sequence = models.BigIntegerField(null=True, blank=True)
    failed_event_id = models.UUIDField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    failed_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "partition"],
                name="eventstore_checkpoint_unique",
            )
        ]
        ordering = ["subscription", "partition"]

    def __str__(self):
        return f"{self.subscription}[{self.partition}] at {self.sequence}"

    @property
    def is_stopped(self) -> bool:
        return self.failed_sequence is not None


class SkippedEvent(models.Model):
    """An event an operator told a subscription to pass over, and why."""

    subscription = models.CharField(max_length=100)
    partition = models.PositiveSmallIntegerField()
    sequence = models.BigIntegerField()
    event_id = models.UUIDField(null=True)
    error = models.TextField(blank=True)
    reason = models.TextField()
    skipped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    skipped_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-skipped_at"]

    def __str__(self):
        return f"{self.subscription}[{self.partition}] skipped {self.sequence}"


class CheckRun(models.Model):
    """The result of one verification, repair or check (``eventstore.verification``).

    A verification rebuilds a read model from the events into a shadow copy
    and counts the rows that differ from the live one; a repair rebuilds the
    live one; a check (such as the bank's trial balance) compares figures
    kept independently. The operations page shows the latest of each.
    """

    class Kind(models.TextChoices):
        VERIFY = "verify", "Verification"
        REPAIR = "repair", "Repair"
        CHECK = "check", "Check"

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        DRIFT = "drift", "Differences found"
        ERROR = "error", "Could not run"

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind)
    outcome = models.CharField(max_length=10, choices=Outcome)
    started_at = models.DateTimeField()
    duration = models.DurationField()
    rows_checked = models.BigIntegerField(default=0)
    differences = models.BigIntegerField(default=0)
    summary = models.TextField(blank=True)
    # Figures, the cut (sequence per partition) and sample differing rows.
    details = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Set when the operations staff were mailed about a failed check.
    alerted_at = models.DateTimeField(null=True, blank=True)
    alert_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["name", "kind", "-started_at"]),
            # The latest runs of all (the operations page, the admin's list).
            models.Index(
                fields=["-started_at", "-id"], name="eventstore_checkrun_started"
            ),
        ]
        permissions = [
            (
                "operate_subscriptions",
                "Can retry or skip stopped partitions, verify, repair and "
                "rebuild projections",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} of {self.name}: {self.outcome}"

    @property
    def ok(self) -> bool:
        return self.outcome == self.Outcome.OK
