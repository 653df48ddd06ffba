"""Tables of the accounts app.

``AccountBalance`` and ``LedgerEntry`` are read models: written only by
``projections.py``, rebuilt from the events at will. ``IdempotencyKey`` is
the API's record of answered POSTs (see ``idempotency.py``); it is not
derived from events and is written only by ``idempotency.py``.
"""

from django.conf import settings
from django.db import models


class AccountBalance(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        FROZEN = "frozen", "Frozen"
        CLOSED = "closed", "Closed"

    id = models.UUIDField(primary_key=True)
    number = models.CharField(max_length=12, unique=True)
    # No database constraint: erasing a person must never break a rebuild.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    currency = models.CharField(max_length=3)
    balance = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status, default=Status.OPEN)
    version = models.PositiveIntegerField()
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["opened_at", "id"]
        indexes = [
            models.Index(fields=["owner", "opened_at"]),
            # Staff's account list (the API's and the back office's) is a
            # page of every account in this order, newest or oldest first.
            models.Index(fields=["opened_at", "id"], name="accounts_opened"),
            # The operations page lists the closed accounts that still hold
            # money, to pay it out: a handful among every account.
            models.Index(
                fields=["opened_at", "id"],
                condition=models.Q(status="closed", balance__gt=0),
                name="accounts_closed_with_money",
            ),
        ]
        permissions = [
            ("view_any_account", "Can see every account, ledger and event"),
            ("open_account_for_others", "Can open accounts for other users"),
            ("move_cash", "Can deposit and withdraw cash"),
            ("operate_account", "Can freeze, unfreeze and close accounts"),
        ]

    def __str__(self):
        # The page's title and breadcrumbs: no balance, which is in minor
        # units here (83.00 EUR read as "8300 EUR") and changes anyway.
        return f"{self.number} {self.currency}"


class LedgerEntry(models.Model):
    """One money movement of an account and the balance after it."""

    class Type(models.TextChoices):
        DEPOSIT = "deposit", "Deposit"
        WITHDRAWAL = "withdrawal", "Withdrawal"

    # No index of its own: the unique (account, position) serves lookups by
    # account, and every index slows the ledger's bulk inserts in a rebuild.
    # No database constraint either: its check of every row at commit was a
    # twentieth of a rebuild, and the projection, the only writer, writes an
    # account's row before its ledger rows (verification compares both).
    account = models.ForeignKey(
        AccountBalance,
        on_delete=models.CASCADE,
        related_name="ledger",
        db_index=False,
        db_constraint=False,
    )
    # The event's version in the account's stream: oldest first.
    position = models.PositiveIntegerField()
    event_id = models.UUIDField(unique=True)
    type = models.CharField(max_length=10, choices=Type)
    # Signed: credits positive, debits negative.
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    transfer_id = models.UUIDField(null=True, blank=True)
    transfer_step = models.CharField(max_length=10, blank=True)
    reference = models.CharField(max_length=140, blank=True)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["account", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "position"], name="accounts_ledger_position"
            )
        ]
        indexes = [
            models.Index(fields=["account", "recorded_at"]),
            # The back office's ledger list: the latest movements of every
            # account, a page at a time. Worth its cost in a rebuild: without
            # it, each view of the list sorts the whole ledger.
            models.Index(fields=["recorded_at", "id"], name="accounts_ledger_recorded"),
            # A transfer's page shows its ledger rows (``selectors.
            # transfer_ledger``): without it, a scan of the whole ledger.
            # Partial: cash movements, never looked up by transfer, add
            # nothing to it, so rebuilds pay for transfer rows only.
            models.Index(
                fields=["transfer_id"],
                condition=models.Q(transfer_id__isnull=False),
                name="accounts_ledger_transfer",
            ),
        ]
        verbose_name_plural = "ledger entries"

    def __str__(self):
        return f"{self.account_id}#{self.position}"


class IdempotencyKey(models.Model):
    """The first answer to a POST sent with an ``Idempotency-Key`` header."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    response_headers = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "key"], name="accounts_idempotency_user_key"
            )
        ]
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self):
        return f"{self.user_id}:{self.key}"
