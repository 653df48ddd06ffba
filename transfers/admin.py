"""The back office's transfers: list, timeline, and a form to start one.

The pages show the read models; a new transfer is requested through
``services.request_transfer`` (tellers: ``transfers.transfer_from_any_account``)
and then runs on the Celery workers like any other. A transfer still
``pending`` or ``debited`` after ``TRANSFERS_STUCK_AFTER_SECONDS`` is stuck:
highlighted in the list, filterable, and counted on the operations page.
A stuck transfer whose next step an operator skipped in the process manager
is stranded: nothing will ever drive it on, so operations staff resume it
(``services.transfer_resume``) or refund it (``services.transfer_refund``)
from its page.

This module also adds the trial balance and the transfer outcomes chart to
the operations page, and registers the scheduled trial-balance check.
"""

import datetime
import logging
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
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts import selectors as accounts_selectors
from accounts.admin import (
    SENT_BEFORE,
    AnyAccountViewer,
    CurrencyFilter,
    SentOnceForm,
    first_sending,
    format_money,
    parse_money,
    usernames,
)
from accounts.domain import MAX_REFERENCE_LENGTH, Account
from accounts.errors import BankError, UnknownAccount
from accounts.models import AccountBalance
from accounts.services import get_account_by_number
from eventstore import charts, operations, verification
from eventstore import events as event_registry
from eventstore.admin import KnownValuesFilter, ReadOnlyAdmin
from eventstore.adminlog import log_staff_action
from eventstore.context import metadata_context
from eventstore.errors import ConcurrencyError, EventStoreError
from eventstore.models import CheckRun, Event

from . import selectors, services, trial_balance
from .domain import FailureReason, Status, Transfer
from .models import Totals, TransferSummary

logger = logging.getLogger(__name__)

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
        return [
            ("yes", "Stuck"),
            ("stranded", "Stranded (step skipped)"),
            ("no", "Not stuck"),
        ]

    def queryset(self, request, queryset):
        stuck = Q(status__in=UNFINISHED, created_at__lt=timezone.now() - stuck_after())
        if self.value() == "yes":
            return queryset.filter(stuck)
        if self.value() == "stranded":
            return queryset.filter(id__in=selectors.stranded_transfers().values("id"))
        if self.value() == "no":
            return queryset.exclude(stuck)
        return queryset


class FailureReasonFilter(KnownValuesFilter):
    title = "failure reason"
    parameter_name = "failure_reason"

    def known_values(self):
        return [reason.value for reason in FailureReason]


class StrandedForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why; kept in the events' metadata with your name.",
    )


# What finishing a stranded transfer can do, and what the page says of it.
STRANDED_ACTIONS = {
    "resume": (
        services.transfer_resume,
        "Resume",
        "Resumed",
        "Run the steps left, as the process manager would: debit the source "
        "if that is still to do, then credit the target (or refund the source "
        "if the target refuses).",
    ),
    "refund": (
        services.transfer_refund,
        "Refund",
        "Refunded",
        "Give the amount in transit back to the source; the transfer ends "
        "failed (refunded_by_operations).",
    ),
}


class NewTransferForm(SentOnceForm):
    from_account = forms.CharField(max_length=12, label="From account number")
    to_account = forms.CharField(max_length=12, label="To account number")
    amount = forms.CharField(max_length=30, help_text="In major units, e.g. 12.50")
    reference = forms.CharField(
        max_length=MAX_REFERENCE_LENGTH,
        required=False,
        help_text="Shown in both ledgers.",
    )

    def _account(self, field: str) -> Account:
        # From the events, as the API's request does: an account opened a
        # moment ago has no read-model row yet.
        try:
            return get_account_by_number(self.cleaned_data[field].strip())
        except UnknownAccount:
            raise forms.ValidationError("No account has this number.") from None

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
class TransferAdmin(AnyAccountViewer, admin.ModelAdmin):
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
        CurrencyFilter,
        FailureReasonFilter,
    )
    search_fields = ("=id", "reference")
    search_help_text = "An account number, a transfer id or a reference."
    # No date hierarchy: listing the years, months or days that hold
    # transfers reads every transfer of the period on each view. The date
    # filter beside the list narrows by date on the created_at index.
    ordering = ("-created_at",)
    # A filtered list counts its own rows; the total beside them would count
    # every transfer a second time on each view.
    show_full_result_count = False
    actions = None
    fields = (
        "id",
        "status_badge",
        "failure_reason",
        "from_number",
        "to_number",
        "amount_money",
        "reference",
        "requester",
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

    @admin.display(description="requested by")
    def requester(self, transfer: TransferSummary) -> str | None:
        """Name the user who requested it; a user since deleted keeps the id."""
        if transfer.requested_by is None:
            return None
        known = usernames([transfer.requested_by])
        return known.get(transfer.requested_by, str(transfer.requested_by))

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
            except ConcurrencyError:
                # Another staff member sent this same form (its id is the
                # transfer's) first: that transfer stands, nothing more is done.
                messages.warning(request, SENT_BEFORE)
                return HttpResponseRedirect(page)
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
        transfer_id = _transfer_id(object_id)
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
        extra = {
            **(extra_context or {}),
            "timeline": timeline,
            "stranded": _stranded(request, transfer_id),
        }
        return super().change_view(request, object_id, form_url, extra)

    # Finishing a stranded transfer (operations staff)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                f"<path:object_id>/{action}/",
                wrap(self.stranded_view),
                {"action": action},
                name=f"transfers_transfersummary_{action}",
            )
            for action in STRANDED_ACTIONS
        ] + super().get_urls()

    def stranded_view(self, request, object_id, action):
        if not operations.may_operate(request.user):
            raise PermissionDenied
        service, label, done, explanation = STRANDED_ACTIONS[action]
        transfer_id = _transfer_id(object_id)
        page = reverse("admin:transfers_transfersummary_change", args=[transfer_id])
        stranded = _stranded(request, transfer_id)
        if stranded is None:
            messages.error(
                request,
                f"Transfer {transfer_id} is not stranded: there is nothing to "
                f"{action}.",
            )
            return HttpResponseRedirect(page)
        if stranded.get("unreadable"):
            messages.error(request, f"Not done: {stranded['summary']}")
            return HttpResponseRedirect(page)
        form = StrandedForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"]
            try:
                with metadata_context(reason=reason, via="admin"):
                    transfer = service(transfer_id=transfer_id, actor=request.user)
            except BankError as refusal:
                messages.error(request, f"Not done: {refusal.detail}")
                return HttpResponseRedirect(page)
            except Exception as error:
                # The step failed before, which is why it was skipped, and may
                # fail again with any error: it rolled back. Logged with its
                # traceback, and said, instead of a 500.
                logger.exception("could not %s transfer %s", action, transfer_id)
                messages.error(
                    request, f"Not done, nothing was changed: {error}. Try again."
                )
                return HttpResponseRedirect(page)
            outcome = f" ({transfer.failure_reason})" if transfer.failure_reason else ""
            message = (
                f"{done} the stranded transfer: it is {transfer.status}{outcome} "
                f"now. Reason: {reason}"
            )
            log_staff_action(
                request,
                TransferSummary,
                object_id=transfer.id,
                object_repr=str(transfer.id),
                message=message,
            )
            messages.success(request, message)
            return HttpResponseRedirect(page)
        return TemplateResponse(
            request,
            "admin/accounts/account/action.html",
            {
                **self.admin_site.each_context(request),
                "title": f"{label} stranded transfer {str(transfer_id)[:8]}",
                "intro": f"{stranded['summary']} {explanation}",
                "form": form,
                "opts": self.opts,
                "submit_label": label,
                "cancel_url": page,
            },
        )


def _transfer_id(object_id) -> uuid.UUID:
    try:
        return uuid.UUID(unquote(str(object_id)))
    except ValueError:
        raise Http404("No such transfer.") from None


def _stranded(request, transfer_id: uuid.UUID) -> dict | None:
    """Say why a transfer is stranded and what staff may do; None if it is not."""
    try:
        transfer = services.get_transfer(transfer_id)
    except BankError:
        raise Http404("No such transfer.") from None
    except EventStoreError as error:
        # An event this code cannot read: often the very step that was
        # skipped. Nothing can run until code that reads it is deployed.
        return {
            "summary": (
                f"This transfer's events cannot be read by this code ({error}). "
                "Deploy code that reads them, then resume or refund it here."
            ),
            "actions": [],
            "unreadable": True,
        }
    skip = selectors.skipped_step(transfer)
    if skip is None:
        return None
    actions = ["resume"] + (["refund"] if transfer.status == Status.DEBITED else [])
    return {
        "summary": (
            f"Transfer of {format_money(transfer.amount, transfer.currency)} "
            f"is {transfer.status}, and nothing will drive it on: the process "
            f"manager's step was skipped at {skip.skipped_at:%Y-%m-%d %H:%M:%S} "
            f"by {skip.skipped_by or 'a command'} ({skip.reason})."
        ),
        "actions": [
            (
                STRANDED_ACTIONS[action][1],
                reverse(
                    f"admin:transfers_transfersummary_{action}", args=[transfer_id]
                ),
            )
            for action in actions
        ]
        if operations.may_operate(request.user)
        else [],
    }


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
            "detail": _reason_of(event),
            "url": reverse("admin:eventstore_event_change", args=[event.pk]),
        }
        for event in Event.objects.filter(
            stream_id=Transfer.stream_id_for(transfer_id)
        ).order_by("version")
    ]
    for entry in accounts_selectors.transfer_ledger(transfer_id):
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


def _reason_of(event: Event) -> str:
    """Return a failed transfer's reason, read as the code reads the event.

    Upcast like any read (an older schema may keep it elsewhere); an event
    this code cannot read shows its stored reason, if any.
    """
    try:
        decoded = event_registry.decode(
            event.event_type, event.schema_version, event.data, position=str(event)
        )
    except EventStoreError:
        return event.data.get("reason", "") if isinstance(event.data, dict) else ""
    return getattr(decoded, "reason", "")


@admin.register(Totals)
class TotalsAdmin(AnyAccountViewer, ReadOnlyAdmin):
    list_display = (
        "currency",
        "partition",
        "balances",
        "in_transit",
        "deposited",
        "withdrawn",
    )
    list_filter = ("currency",)


# The operations page


def _trial_balance_panel(request) -> dict:
    live = selectors.totals_snapshot()
    rows = []
    for currency, f in live["currencies"].items():
        rows.append(
            {
                "currency": currency,
                **{
                    name: format_money(f[name], currency)
                    for name in ("balances", "in_transit", "deposited", "withdrawn")
                },
                "balanced": selectors.books_difference(f) == 0,
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
    drift = []
    if last is not None:
        for currency, names in last.details.get("totals_drift", {}).items():
            for name, values in names.items():
                drift.append(
                    {
                        "currency": currency,
                        "figure": name,
                        "read_model": format_money(values["read_model"], currency),
                        "independent": format_money(values["independent"], currency),
                    }
                )
    return {
        "rows": rows,
        "last": last,
        "checked": checked,
        "drift": drift,
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
        "stranded": selectors.stranded_transfers().count(),
        "stranded_url": reverse("admin:transfers_transfersummary_changelist")
        + "?stuck=stranded",
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
