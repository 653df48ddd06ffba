"""Read models of transfers, written only by ``projections.py``.

``TransferSummary`` is one row per transfer. ``Totals`` is the trial balance:
one row per currency and partition of the event store, so that each row is
written only by the worker holding that partition's lease (no hot row, no
lock order to keep) and the API sums the rows of a currency.
``TotalsAccount`` is the totals projection's own record of each account's
currency (money events do not carry it).
"""

from django.db import models

from .domain import Status as DomainStatus


class TransferSummary(models.Model):
    class Status(models.TextChoices):
        PENDING = DomainStatus.PENDING, "Pending"
        DEBITED = DomainStatus.DEBITED, "Debited"
        COMPLETED = DomainStatus.COMPLETED, "Completed"
        FAILED = DomainStatus.FAILED, "Failed"

    id = models.UUIDField(primary_key=True)
    from_account = models.UUIDField()
    to_account = models.UUIDField()
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reference = models.CharField(max_length=140, blank=True)
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    failure_reason = models.CharField(max_length=40, blank=True)
    # A user id, not a foreign key: erasing a person must never break a rebuild.
    requested_by = models.IntegerField(null=True, blank=True)
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    debited_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["from_account", "created_at"]),
            models.Index(fields=["to_account", "created_at"]),
            models.Index(fields=["status", "created_at"]),
            # Staff's transfer list (the API's and the back office's): a page
            # of every transfer, newest first, in ``ordering``'s order.
            models.Index(fields=["-created_at", "id"], name="transfers_created"),
            # The operations page charts the last day's outcomes. Partial:
            # a transfer has one outcome, and unfinished ones have none.
            models.Index(
                fields=["completed_at"],
                condition=models.Q(completed_at__isnull=False),
                name="transfers_completed",
            ),
            models.Index(
                fields=["failed_at"],
                condition=models.Q(failed_at__isnull=False),
                name="transfers_failed",
            ),
        ]
        permissions = [
            ("transfer_from_any_account", "Can start transfers between any accounts"),
        ]
        verbose_name_plural = "transfer summaries"

    def __str__(self):
        # The page's title and breadcrumbs: no amount, which is in minor units
        # here (5.00 EUR read as "500 EUR").
        return f"Transfer {self.id}"


class Totals(models.Model):
    currency = models.CharField(max_length=3)
    partition = models.PositiveSmallIntegerField()
    balances = models.BigIntegerField(default=0)
    in_transit = models.BigIntegerField(default=0)
    deposited = models.BigIntegerField(default=0)
    withdrawn = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["currency", "partition"], name="transfers_totals_unique"
            )
        ]
        ordering = ["currency", "partition"]
        verbose_name_plural = "totals"

    def __str__(self):
        return f"{self.currency}[{self.partition}]"


class TotalsAccount(models.Model):
    stream_id = models.CharField(max_length=200, primary_key=True)
    currency = models.CharField(max_length=3)

    def __str__(self):
        return f"{self.stream_id} {self.currency}"
