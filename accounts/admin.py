"""The back office's accounts: the read models shown, changes made by services.

The pages show the read models (``AccountBalance``, ``LedgerEntry``) and
the account's events; nothing here writes a model. Every staff action (open,
deposit, withdraw, freeze, unfreeze, close) is a form that calls the
service, with the reason typed by the staff member put into the event's
metadata beside the acting user, and is written to Django's admin log.
Refusals (insufficient funds, a frozen account ...) come back as error
messages on the form.

Who may do what is DESIGN.md's table, checked with the API's permissions:
tellers open accounts and move cash, operations freeze, unfreeze and close,
auditors (and every other role) only read.
"""

import datetime
import re
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Sum
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import urlencode

from eventstore import operations, subscriptions
from eventstore.admin import KnownValuesFilter, ReadOnlyAdmin
from eventstore.adminlog import log_staff_action
from eventstore.context import metadata_context
from eventstore.models import Event

from . import idempotency, selectors, services
from .domain import MAX_AMOUNT, MAX_REFERENCE_LENGTH, SUPPORTED_CURRENCIES, Account
from .errors import BankError
from .models import AccountBalance, LedgerEntry
from .permissions import (
    MOVE_CASH,
    OPEN_ACCOUNT_FOR_OTHERS,
    OPERATE_ACCOUNT,
    VIEW_ANY_ACCOUNT,
)
from .projections import balances

# Digits after the decimal point, where a currency has other than two.
MINOR_DIGITS = {"JPY": 0}
HISTORY_ROWS = 100


def minor_digits(currency: str) -> int:
    return MINOR_DIGITS.get(currency, 2)


def format_money(amount: int | None, currency: str) -> str:
    """Show minor units as money: ``123456, "EUR"`` is ``1,234.56 EUR``."""
    if amount is None:
        return "-"
    digits = minor_digits(currency)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits)
    text = f"{whole:,}" + (f".{fraction:0{digits}d}" if digits else "")
    return f"{sign}{text} {currency}"


# An amount as staff type it: ASCII digits, commas only between groups of
# three (1,234,567), a point before the fraction. A comma anywhere else (1,50:
# a decimal comma) is refused, not read as 150.
MONEY_TEXT = re.compile(
    r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<fraction>[0-9]+))?"
)


def parse_money(text: str, currency: str) -> int:
    """Read an amount typed in major units (``1,234.56``) as minor units.

    The arithmetic is on integers: a decimal context would round an amount
    with many digits (1.0000000000000000000000000001) to a whole one.
    """
    text = text.strip()
    if text.startswith("-"):
        raise forms.ValidationError("The amount must be positive.")
    match = MONEY_TEXT.fullmatch(text)
    if match is None:
        raise forms.ValidationError(
            "Type an amount such as 1234.56 or 1,234.56: a point before the"
            " cents, commas only between thousands."
        )
    digits = minor_digits(currency)
    fraction = (match["fraction"] or "").rstrip("0")
    if len(fraction) > digits:
        raise forms.ValidationError(f"{currency} has {digits} digits after the point.")
    whole = match["whole"].replace(",", "").lstrip("0")
    if len(whole) > len(str(MAX_AMOUNT)):  # no need to make a huge integer
        raise forms.ValidationError(_too_much(currency))
    minor = int(whole or "0") * 10**digits + int(fraction.ljust(digits, "0") or "0")
    if minor <= 0:
        raise forms.ValidationError("The amount must be positive.")
    if minor > MAX_AMOUNT:
        raise forms.ValidationError(_too_much(currency))
    return minor


def _too_much(currency: str) -> str:
    return f"The amount may be at most {format_money(MAX_AMOUNT, currency)}."


class SentOnceForm(forms.Form):
    """A form that acts once, however often it is sent (a double click, a reload).

    Each page carries a new ``form_id``; the view claims it in the transaction
    that acts (``first_sending``).
    """

    form_id = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


def first_sending(request, form_id: uuid.UUID | None) -> bool:
    """Claim a sent form's id in this transaction; False if it was sent before."""
    return form_id is None or idempotency.claim_form(request.user.pk, form_id)


SENT_BEFORE = "This form was sent already; nothing was done again."


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why; kept in the event's metadata with your name.",
    )


class CashForm(SentOnceForm, ReasonForm):
    amount = forms.CharField(
        max_length=30, help_text="In major units, e.g. 1234.56", label="Amount"
    )
    reference = forms.CharField(max_length=MAX_REFERENCE_LENGTH, required=False)
    field_order = ["amount", "reference", "reason"]

    def __init__(self, *args, currency: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.fields["amount"].label = f"Amount ({currency})"

    def clean_amount(self) -> int:
        return parse_money(self.cleaned_data["amount"], self.currency)


class PayOutForm(SentOnceForm, ReasonForm):
    reference = forms.CharField(
        max_length=MAX_REFERENCE_LENGTH,
        required=False,
        help_text="How it was paid, e.g. a cheque or transfer number.",
    )
    field_order = ["reference", "reason"]


class OpenAccountForm(SentOnceForm):
    owner = forms.CharField(max_length=150, help_text="The owner's username.")
    currency = forms.ChoiceField(
        choices=[(c, c) for c in SUPPORTED_CURRENCIES], initial="EUR"
    )
    number = forms.CharField(
        max_length=12, required=False, help_text="Leave empty to generate one."
    )
    reason = forms.CharField(
        max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )

    def clean_owner(self):
        owner = selectors.user_by_username(self.cleaned_data["owner"])
        if owner is None:
            raise forms.ValidationError("No user has this username.")
        return owner


class BalanceAtForm(forms.Form):
    at = forms.DateTimeField(
        label="Balance at",
        # The field sits inside the change form; it belongs to the page's
        # balance-at form (HTML forms do not nest).
        widget=forms.DateTimeInput(
            attrs={"type": "datetime-local", "step": 1, "form": "balance-at-form"}
        ),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"],
        help_text="Date and time (UTC); the balance is computed from the events.",
    )

    def clean_at(self) -> datetime.datetime:
        """Return the moment in UTC; refuse one UTC cannot hold (year 1, 9999).

        The field reads a moment without an offset in ``TIME_ZONE`` (UTC).
        """
        moment = self.cleaned_data["at"]
        try:
            return moment.astimezone(datetime.UTC)
        except OverflowError:
            raise forms.ValidationError(
                "Out of range: the moment must lie between 0001-01-01 00:00:00"
                " and 9999-12-31 23:59:59 UTC."
            ) from None


class StatusForm(SentOnceForm, ReasonForm):
    """Freeze, unfreeze or close: sent again later, it must not act again."""


# What each action needs, does, and says.
ACTIONS = {
    "deposit": (MOVE_CASH, CashForm, services.deposit, "Deposited"),
    "withdraw": (MOVE_CASH, CashForm, services.withdraw, "Withdrew"),
    "freeze": (OPERATE_ACCOUNT, StatusForm, services.freeze, "Froze"),
    "unfreeze": (OPERATE_ACCOUNT, StatusForm, services.unfreeze, "Unfroze"),
    "close": (OPERATE_ACCOUNT, StatusForm, services.close, "Closed"),
    "payout": (OPERATE_ACCOUNT, PayOutForm, services.pay_out, "Paid out"),
}


def staff_metadata(request, reason: str):
    """Add the staff member's reason to every event the action appends."""
    return metadata_context(reason=reason or None, via="admin")


class AnyAccountViewer:
    """Admin permission to see: the API's, whoever may view every account."""

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_ANY_ACCOUNT)

    def has_module_permission(self, request):
        return request.user.has_perm(VIEW_ANY_ACCOUNT)


class CurrencyFilter(KnownValuesFilter):
    title = "currency"
    parameter_name = "currency"

    def known_values(self):
        return list(SUPPORTED_CURRENCIES)


@admin.register(AccountBalance)
class AccountAdmin(AnyAccountViewer, admin.ModelAdmin):
    list_display = (
        "number",
        "owner",
        "balance_money",
        "currency",
        "status",
        "opened_at",
        "updated_at",
    )
    list_filter = ("status", CurrencyFilter)
    search_fields = ("number", "owner__username", "=id")
    search_help_text = "An account number or the owner's username."
    list_select_related = ("owner",)
    ordering = ("-opened_at",)
    sortable_by = ("number", "owner", "balance_money", "currency", "status")
    fields = (
        "number",
        "id",
        "owner",
        "currency",
        "balance_money",
        "status",
        "version",
        "opened_at",
        "updated_at",
    )
    readonly_fields = fields
    change_form_template = "admin/accounts/account/change_form.html"
    actions = None

    @admin.display(description="balance", ordering="balance")
    def balance_money(self, account: AccountBalance) -> str:
        return format_money(account.balance, account.currency)

    # Permissions: the API's, whatever the model permissions say.

    def has_add_permission(self, request):
        return request.user.has_perm(OPEN_ACCOUNT_FOR_OTHERS)

    def has_change_permission(self, request, obj=None):
        return False  # domain fields are read-only; actions are separate pages

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                f"<path:object_id>/{action}/",
                wrap(self.action_view),
                {"action": action},
                name=f"accounts_accountbalance_{action}",
            )
            for action in ACTIONS
        ] + super().get_urls()

    # Opening an account

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = OpenAccountForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                with transaction.atomic(), staff_metadata(request, data["reason"]):
                    if not first_sending(request, data["form_id"]):
                        messages.warning(request, SENT_BEFORE)
                        return HttpResponseRedirect(
                            reverse("admin:accounts_accountbalance_changelist")
                        )
                    account = services.open_account(
                        owner=data["owner"],
                        currency=data["currency"],
                        number=data["number"] or None,
                        actor=request.user,
                    )
            except BankError as refusal:
                messages.error(request, refusal.detail)
            else:
                log_opened(request, account)
                messages.success(
                    request,
                    f"Opened account {account.number} ({account.currency}) for "
                    f"{data['owner'].username}.",
                )
                return HttpResponseRedirect(self._change_url(account.id))
        return self._form_page(request, form, title="Open an account")

    # Staff actions on an account

    def action_view(self, request, object_id, action):
        permission, form_class, service, done = ACTIONS[action]
        if not request.user.has_perm(permission):
            raise PermissionDenied
        account = self._account_or_404(object_id)
        kwargs = {"currency": account.currency} if form_class is CashForm else {}
        form = form_class(request.POST or None, **kwargs)
        if request.method == "POST" and form.is_valid():
            data = dict(form.cleaned_data)
            reason = data.pop("reason")
            form_id = data.pop("form_id", None)
            try:
                with transaction.atomic(), staff_metadata(request, reason):
                    if not first_sending(request, form_id):
                        messages.warning(request, SENT_BEFORE)
                        # The first sending is saved: show the account with it.
                        saved = services.get_account(account.id)
                        return HttpResponseRedirect(self._saved_url(saved))
                    before = services.get_account(account.id).version
                    after = service(account_id=account.id, actor=request.user, **data)
            except BankError as refusal:
                messages.error(request, f"Refused: {refusal.detail}")
            else:
                if after.version == before:
                    # Freezing a frozen account (or unfreezing an open one)
                    # records nothing: say so, and log nothing.
                    messages.warning(
                        request,
                        f"Nothing was done: account {account.number} is already"
                        f" {after.status}.",
                    )
                    return HttpResponseRedirect(self._saved_url(after))
                amount = data.get("amount")
                what = (
                    f"{done} {format_money(amount, account.currency)}"
                    if amount
                    else f"{done} the account"
                )
                message = f"{what}. Reason: {reason}"
                log_staff_action(
                    request,
                    AccountBalance,
                    object_id=account.id,
                    object_repr=f"{account.number} {account.currency}",
                    message=message,
                )
                messages.success(
                    request,
                    f"{what} {account.number}: balance "
                    f"{format_money(after.balance, after.currency)}, "
                    f"status {after.status}.",
                )
                return HttpResponseRedirect(self._saved_url(after))
        return self._form_page(
            request,
            form,
            title=f"{action.capitalize()} — account {account.number}",
            account=account,
        )

    # The account's page

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        account_id = self._account_id(object_id)
        projected = _projected_version(account_id)
        seen = _version_after(request)
        if projected is None or projected < seen:
            # Opened, or changed by this staff member, a moment ago: show it
            # from its events until the read model has caught up. Only up to
            # the saved version (a hand-made ?after= must not wait for ever),
            # and only while the read model is catching up at all.
            account = self._account_or_404(object_id)
            wanted = min(seen, account.version)
            if projected is None or projected < wanted:
                stalled = not subscriptions.catching_up(
                    balances.name, account.stream_id
                )
                if stalled:  # or its runner caught up since the read above
                    projected = _projected_version(account_id)
                if projected is None or projected < wanted:
                    if projected is None or not stalled:
                        return self._pending_page(request, account, stalled=stalled)
                    messages.warning(request, _behind(account, projected))
        extra = {**(extra_context or {}), **self._history(request, account_id)}
        return super().change_view(request, object_id, form_url, extra)

    def _history(self, request, account_id: uuid.UUID) -> dict:
        row = AccountBalance.objects.get(id=account_id)
        ledger = list(
            LedgerEntry.objects.filter(account_id=account_id).order_by("-position")[
                :HISTORY_ROWS
            ]
        )
        for entry in ledger:
            entry.amount_money = format_money(entry.amount, row.currency)
            entry.balance_after_money = format_money(entry.balance_after, row.currency)
        events = list(
            Event.objects.filter(stream_id=Account.stream_id_for(account_id)).order_by(
                "-version"
            )[:HISTORY_ROWS]
        )
        users = usernames(event.metadata.get("actor_id") for event in events)
        for event in events:
            actor = event.metadata.get("actor_id")
            event.actor_name = users.get(actor, event.metadata.get("actor", actor))
        balance_form = BalanceAtForm(request.GET if "at" in request.GET else None)
        balance_at = None
        if balance_form.is_bound and balance_form.is_valid():
            moment = balance_form.cleaned_data["at"]
            found = selectors.balance_at(account_id, moment)
            balance_at = {
                "at": moment,
                "balance": format_money(found.balance, row.currency),
                "version": found.version,
            }
        user = request.user
        return {
            "ledger": ledger,
            "ledger_url": reverse("admin:accounts_ledgerentry_changelist")
            + "?"
            + urlencode({"account__id__exact": account_id}),
            "events": events,
            "events_url": reverse("admin:eventstore_event_changelist")
            + "?"
            + urlencode({"stream": Account.stream_id_for(account_id)}),
            "balance_form": balance_form,
            "balance_at": balance_at,
            "account_actions": [
                (
                    action,
                    reverse(
                        f"admin:accounts_accountbalance_{action}", args=[account_id]
                    ),
                )
                for action, (permission, *_) in ACTIONS.items()
                if user.has_perm(permission) and _offers(row, action)
            ],
        }

    def _pending_page(self, request, account, *, stalled: bool):
        return TemplateResponse(
            request,
            "admin/accounts/account/pending.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Account {account.number}",
                "account": account,
                "balance": format_money(account.balance, account.currency),
                "stalled": _behind(account, None) if stalled else "",
                "opts": self.opts,
            },
        )

    def _form_page(self, request, form, *, title: str, account=None):
        return TemplateResponse(
            request,
            "admin/accounts/account/action.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "form": form,
                "account": account,
                "opts": self.opts,
                "cancel_url": self._change_url(account.id)
                if account
                else reverse("admin:accounts_accountbalance_changelist"),
            },
        )

    def _account_id(self, object_id) -> uuid.UUID:
        try:
            return uuid.UUID(unquote(str(object_id)))
        except ValueError:
            raise Http404("No such account.") from None

    def _account_or_404(self, object_id):
        try:
            return services.get_account(self._account_id(object_id))
        except BankError:
            raise Http404("No such account.") from None

    def _change_url(self, account_id) -> str:
        return reverse("admin:accounts_accountbalance_change", args=[account_id])

    def _saved_url(self, account: Account) -> str:
        """Return the account's page, to show no older state than ``account``."""
        return f"{self._change_url(account.id)}?after={account.version}"


def _projected_version(account_id) -> int | None:
    """Return the account's version in the read model (None: not there yet)."""
    return (
        AccountBalance.objects.filter(id=account_id)
        .values_list("version", flat=True)
        .first()
    )


def _behind(account: Account, projected: int | None) -> str:
    """Say that the account's read model is behind, and will not catch up alone."""
    shown = "is not" if projected is None else f"is at version {projected} and not"
    return (
        f"The read model of account {account.number} {shown} at its version"
        f" {account.version}, and is not catching up: the {balances.name}"
        " subscription is stopped, or passed over an event of the account."
        " See the operations page."
    )


def _version_after(request) -> int:
    """Return the version the page must show at least (``?after=``), else 0."""
    try:
        return int(request.GET.get("after", 0))
    except ValueError:
        return 0


def _offers(account: AccountBalance, action: str) -> bool:
    """Offer only the actions that make sense now (the service decides)."""
    closed = account.status == AccountBalance.Status.CLOSED
    if action == "payout":
        return closed and account.balance > 0
    if closed:
        return False
    if action == "unfreeze":
        return account.status == AccountBalance.Status.FROZEN
    if action == "freeze":
        return account.status == AccountBalance.Status.OPEN
    return True


def usernames(user_ids) -> dict[int, str]:
    """Return the usernames of these user ids; a user deleted since is left out."""
    return dict(
        get_user_model()
        .objects.filter(pk__in=set(user_ids) - {None})
        .values_list("pk", "username")
    )


def log_opened(request, account) -> None:
    """Write an opening to the admin log (the read-model row may lag behind)."""
    log_staff_action(
        request,
        AccountBalance,
        object_id=account.id,
        object_repr=f"{account.number} {account.currency}",
        message=f"Opened account {account.number} ({account.currency}).",
        flag=ADDITION,
    )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(AnyAccountViewer, ReadOnlyAdmin):
    list_display = (
        "recorded_at",
        "account",
        "position",
        "type",
        "amount_money",
        "balance_after_money",
        "transfer_id",
        "reference",
    )
    list_filter = ("type", ("recorded_at", admin.DateFieldListFilter))
    search_fields = ("account__number", "reference")
    search_help_text = "An account number, a reference, or a transfer id."
    list_select_related = ("account",)
    ordering = ("-recorded_at",)
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        """Find a transfer's rows by its id (on its index), else search as usual.

        Django's ``=transfer_id`` would compare the id as upper-case text,
        ORed with the other fields: a scan of the whole ledger every time.
        """
        try:
            transfer_id = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(transfer_id=transfer_id), False

    @admin.display(description="amount", ordering="amount")
    def amount_money(self, entry: LedgerEntry) -> str:
        return format_money(entry.amount, entry.account.currency)

    @admin.display(description="balance after", ordering="balance_after")
    def balance_after_money(self, entry: LedgerEntry) -> str:
        return format_money(entry.balance_after, entry.account.currency)


# The operations page: money stranded on closed accounts (a refund of a
# transfer reaches a closed account), for staff to pay out.


def _stranded(request) -> dict:
    closed = AccountBalance.objects.filter(
        status=AccountBalance.Status.CLOSED, balance__gt=0
    ).select_related("owner")
    rows = [
        {
            "number": account.number,
            "owner": account.owner,
            "balance": format_money(account.balance, account.currency),
            "url": reverse("admin:accounts_accountbalance_change", args=[account.id]),
        }
        for account in closed[:50]
    ]
    totals = {
        currency: format_money(total, currency)
        for currency, total in closed.values_list("currency").annotate(Sum("balance"))
    }
    return {"rows": rows, "totals": totals}


operations.register_panel(
    "Closed accounts holding money",
    "admin/accounts/account/stranded_panel.html",
    _stranded,
    order=30,
)


class StaffKeepingUserAdmin(UserAdmin):
    """Django's users, but one who acted in the back office is not deleted.

    Django deletes a user's admin log entries with the user: the record of
    who deposited, froze or skipped what would go. Such a user is made
    inactive instead (events keep the user's id, never personal data).
    """

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and LogEntry.objects.filter(user=obj).exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        # The bulk delete would pass over the check above.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), StaffKeepingUserAdmin)
