"""The back office's transfers: list, timeline, and a form to start one.

The pages show the read models; a new transfer is requested through
``services.request_transfer`` (tellers: ``transfers.transfer_from_any_account``)
and then runs on the Celery workers like any other. A transfer still
``pending`` or ``debited`` after ``TRANSFERS_STUCK_AFTER_SECONDS`` is stuck:
highlighted in the list, filterable, and counted on the operations page.

This module also adds the trial balance and the transfer outcomes chart to
the operations page, and registers the scheduled trial-balance check.
"""

import datetime
import uuid

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import TruncHour
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.admin import (
    SENT_BEFORE,
    AnyAccountViewer,
    SentOnceForm,
    first_sending,
    format_money,
    parse_money,
)
from accounts.domain import MAX_REFERENCE_LENGTH
from accounts.errors import BankError
from accounts.models import AccountBalance, LedgerEntry
from eventstore import charts, operations, verification
from eventstore.admin import LastYearSafeDateHierarchy, ReadOnlyAdmin
from eventstore.adminlog import log_staff_action
from eventstore.context import metadata_context
from eventstore.models import CheckRun, Event

from . import selectors, services, trial_balance
from .domain import Transfer
from .models import Totals, TransferSummary

START_TRANSFER = "transfers.transfer_from_any_account"
UNFINISHED = (TransferSummary.Status.PENDING, TransferSummary.Status.DEBITED)


def stuck_after() -> datetime.timedelta:
    return datetime.timedelta(
        seconds=getattr(settings, "TRANSFERS_STUCK_AFTER_SECONDS", 300)
    )


def stuck_transfers():
    return TransferSummary.objects.filter(
        status__in=UNFINISHED, created_at__lt=timezone.now() - stuck_after()
    )


def _number_of(field: str) -> Subquery:
    return Subquery(
        AccountBalance.objects.filter(id=OuterRef(field)).values("number")[:1]
    )


class StuckFilter(admin.SimpleListFilter):
    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request, model_admin):
        return [("yes", "Stuck"), ("no", "Not stuck")]

    def queryset(self, request, queryset):
        stuck = Q(status__in=UNFINISHED, created_at__lt=timezone.now() - stuck_after())
        if self.value() == "yes":
            return queryset.filter(stuck)
        if self.value() == "no":
            return queryset.exclude(stuck)
        return queryset


class NewTransferForm(SentOnceForm):
    from_account = forms.CharField(max_length=12, label="From account number")
    to_account = forms.CharField(max_length=12, label="To account number")
    amount = forms.CharField(max_length=30, help_text="In major units, e.g. 12.50")
    reference = forms.CharField(
        max_length=MAX_REFERENCE_LENGTH,
        required=False,
        help_text="Shown in both ledgers.",
    )

    def _account(self, field: str) -> AccountBalance:
        number = self.cleaned_data[field].strip()
        account = AccountBalance.objects.filter(number=number).first()
        if account is None:
            raise forms.ValidationError("No account has this number.")
        return account

    def clean_from_account(self):
        return self._account("from_account")

    def clean_to_account(self):
        return self._account("to_account")

    def clean(self):
        data = super().clean()
        source, amount = data.get("from_account"), self.data.get("amount", "")
        if source is not None and "amount" not in self.errors:
            try:
                data["amount"] = parse_money(amount, source.currency)
            except forms.ValidationError as error:
                self.add_error("amount", error)
        return data


@admin.register(TransferSummary)
class TransferAdmin(AnyAccountViewer, LastYearSafeDateHierarchy, admin.ModelAdmin):
    list_display = (
        "short_id",
        "created_at",
        "from_number",
        "to_number",
        "amount_money",
        "status_badge",
        "failure_reason",
        "reference",
    )
    list_display_links = ("short_id",)
    list_filter = (
        "status",
        StuckFilter,
        ("created_at", admin.DateFieldListFilter),
        "currency",
        "failure_reason",
    )
    search_fields = ("=id", "reference")
    search_help_text = "An account number, a transfer id or a reference."
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = None
    fields = (
        "id",
        "status_badge",
        "failure_reason",
        "from_number",
        "to_number",
        "amount_money",
        "reference",
        "requested_by",
        "created_at",
        "debited_at",
        "completed_at",
        "refunded_at",
        "failed_at",
        "version",
    )
    readonly_fields = fields
    change_form_template = "admin/transfers/transfer/change_form.html"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                from_number=_number_of("from_account"),
                to_number=_number_of("to_account"),
            )
        )

    def get_search_results(self, request, queryset, search_term):
        """Find transfers by either account's number, besides id and reference."""
        term = search_term.strip()
        by_number = Q()
        accounts = list(
            AccountBalance.objects.filter(number=term).values_list("id", flat=True)
        )
        if accounts:
            by_number = Q(from_account__in=accounts) | Q(to_account__in=accounts)
            return queryset.filter(by_number), False
        try:
            uuid.UUID(term)
        except ValueError:
            return queryset.filter(
                reference__icontains=term
            ) if term else queryset, False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="transfer")
    def short_id(self, transfer: TransferSummary) -> str:
        return str(transfer.id)[:8]

    @admin.display(description="from", ordering="from_number")
    def from_number(self, transfer: TransferSummary) -> str:
        return _account_link(transfer.from_account, transfer.from_number)

    @admin.display(description="to", ordering="to_number")
    def to_number(self, transfer: TransferSummary) -> str:
        return _account_link(transfer.to_account, transfer.to_number)

    @admin.display(description="amount", ordering="amount")
    def amount_money(self, transfer: TransferSummary) -> str:
        return format_money(transfer.amount, transfer.currency)

    @admin.display(description="status", ordering="status")
    def status_badge(self, transfer: TransferSummary) -> str:
        colors = {"completed": "#2e7d32", "failed": "#c62828"}
        if transfer.status in UNFINISHED and (
            transfer.created_at < timezone.now() - stuck_after()
        ):
            return format_html(
                '<span class="transfer-stuck" style="background:#c62828;color:#fff;'
                'padding:1px 6px;border-radius:3px" title="unfinished for more '
                'than {}">STUCK: {}</span>',
                stuck_after(),
                transfer.status,
            )
        return format_html(
            '<span class="transfer-status" style="color:{}">{}</span>',
            colors.get(transfer.status, "inherit"),
            transfer.status,
        )

    # Permissions: the API's.

    def has_add_permission(self, request):
        return request.user.has_perm(START_TRANSFER)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # A new transfer, by account numbers

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = NewTransferForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            # The form's id is the transfer's: a repeat shows the first.
            page = reverse(
                "admin:transfers_transfersummary_change", args=[data["form_id"]]
            )
            try:
                with transaction.atomic(), metadata_context(via="admin"):
                    if not first_sending(request, data["form_id"]):
                        messages.warning(request, SENT_BEFORE)
                        return HttpResponseRedirect(page)
                    transfer = services.request_transfer(
                        actor=request.user,
                        from_account=data["from_account"].id,
                        to_account=data["to_account"].id,
                        amount=data["amount"],
                        reference=data["reference"],
                        transfer_id=data["form_id"],
                    )
            except BankError as refusal:
                messages.error(request, f"Refused: {refusal.detail}")
            else:
                message = (
                    f"Requested a transfer of "
                    f"{format_money(transfer.amount, transfer.currency)} from "
                    f"{data['from_account'].number} to {data['to_account'].number}."
                )
                log_staff_action(
                    request,
                    TransferSummary,
                    object_id=transfer.id,
                    object_repr=str(transfer.id),
                    message=message,
                    flag=ADDITION,
                )
                messages.success(request, message)
                return HttpResponseRedirect(page)
        return TemplateResponse(
            request,
            "admin/accounts/account/action.html",
            {
                **self.admin_site.each_context(request),
                "title": "New transfer",
                "form": form,
                "opts": self.opts,
                "submit_label": "Start transfer",
                "cancel_url": reverse("admin:transfers_transfersummary_changelist"),
            },
        )

    # A transfer's page: its fields and its timeline

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            transfer_id = uuid.UUID(unquote(str(object_id)))
        except ValueError:
            raise Http404("No such transfer.") from None
        timeline = _timeline(transfer_id)
        if not TransferSummary.objects.filter(id=transfer_id).exists():
            record = selectors.record_from_events(transfer_id)
            if record is None:
                raise Http404("No such transfer.")
            return TemplateResponse(
                request,
                "admin/transfers/transfer/pending.html",
                {
                    **self.admin_site.each_context(request),
                    "title": f"Transfer {str(transfer_id)[:8]}",
                    "transfer": record,
                    "amount": format_money(record.amount, record.currency),
                    "timeline": timeline,
                    "opts": self.opts,
                },
            )
        extra = {**(extra_context or {}), "timeline": timeline}
        return super().change_view(request, object_id, form_url, extra)


def _account_link(account_id, number) -> str:
    return format_html(
        '<a href="{}">{}</a>',
        reverse("admin:accounts_accountbalance_change", args=[account_id]),
        number or str(account_id)[:8],
    )


def _timeline(transfer_id: uuid.UUID) -> list[dict]:
    """Return the transfer's events and its money movements, in time order."""
    steps = [
        {
            "at": event.recorded_at,
            "what": event.event_type.removeprefix("transfers."),
            "detail": event.data.get("reason", ""),
            "url": reverse("admin:eventstore_event_change", args=[event.pk]),
        }
        for event in Event.objects.filter(
            stream_id=Transfer.stream_id_for(transfer_id)
        ).order_by("version")
    ]
    for entry in LedgerEntry.objects.filter(transfer_id=transfer_id).select_related(
        "account"
    ):
        steps.append(
            {
                "at": entry.recorded_at,
                "what": f"account {entry.transfer_step}",
                "detail": f"{entry.account.number}: "
                f"{format_money(entry.amount, entry.account.currency)}",
                "url": reverse(
                    "admin:accounts_accountbalance_change", args=[entry.account_id]
                ),
            }
        )
    return sorted(steps, key=lambda step: step["at"])


@admin.register(Totals)
class TotalsAdmin(AnyAccountViewer, ReadOnlyAdmin):
    list_display = ("currency", "partition", "balances", "in_transit", "deposited")
    list_filter = ("currency",)


# The operations page


def _trial_balance_panel(request) -> dict:
    live = selectors.totals_snapshot()
    rows = []
    for currency, f in live["currencies"].items():
        difference = f["balances"] + f["in_transit"] - f["deposited"] + f["withdrawn"]
        rows.append(
            {
                "currency": currency,
                **{
                    name: format_money(f[name], currency)
                    for name in ("balances", "in_transit", "deposited", "withdrawn")
                },
                "balanced": difference == 0,
            }
        )
    last = (
        CheckRun.objects.filter(name=trial_balance.NAME, kind=CheckRun.Kind.CHECK)
        .order_by("-started_at", "-id")
        .first()
    )
    checked = []
    if last is not None:
        for currency, f in last.details.get("currencies", {}).items():
            checked.append(
                {
                    "currency": currency,
                    **{
                        name: format_money(f[name], currency)
                        for name in ("balances", "in_transit", "deposited", "withdrawn")
                    },
                    "difference": format_money(f["difference"], currency),
                    "balanced": f["difference"] == 0,
                }
            )
    return {
        "rows": rows,
        "last": last,
        "checked": checked,
        "may_run": operations.may_operate(request.user),
        "check_name": trial_balance.NAME,
        "verification_checks": verification.checks(),
    }


def _outcomes_panel(request) -> dict:
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    end += datetime.timedelta(hours=1)
    start = end - datetime.timedelta(hours=24)
    series = {}
    for status, field in (("completed", "completed_at"), ("failed", "failed_at")):
        counts = dict(
            TransferSummary.objects.filter(**{f"{field}__gte": start})
            .annotate(hour=TruncHour(field))
            .values_list("hour")
            .annotate(n=Count("id"))
            .values_list("hour", "n")
        )
        series[status] = [
            counts.get(start + datetime.timedelta(hours=h), 0) for h in range(24)
        ]
    chart = charts.bar_chart(
        [
            charts.Series("completed", "#2e7d32", series["completed"]),
            charts.Series("failed", "#c62828", series["failed"]),
        ],
        ticks=charts.hourly_ticks(start, 24, 1),
        title="Transfer outcomes per hour, last 24 hours",
    )
    return {
        "chart": chart,
        "stuck": stuck_transfers().count(),
        "stuck_url": reverse("admin:transfers_transfersummary_changelist")
        + "?stuck=yes",
        "unfinished": TransferSummary.objects.filter(status__in=UNFINISHED).count(),
    }


operations.register_panel(
    "Trial balance",
    "admin/transfers/transfer/trial_balance_panel.html",
    _trial_balance_panel,
    order=10,
)
operations.register_panel(
    "Transfer outcomes (last 24 hours)",
    "admin/transfers/transfer/outcomes_panel.html",
    _outcomes_panel,
    order=20,
)
