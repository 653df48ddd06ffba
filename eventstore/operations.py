"""The operations page of the admin: subscriptions, projections and checks.

Staff who may read it (``eventstore.view_checkpoint``) see each
subscription's partitions with position, lag and last error, the latest
verification, repair and check results, and a chart of events per minute.
Operations staff (``eventstore.operate_subscriptions``; superusers) also
retry or skip a stopped partition, verify or repair a read model, and run a
check now. Every such action is written to Django's admin log.

The event store knows nothing of the bank: the apps add their own panels
(the trial balance, transfer outcomes) with ``register_panel``.
"""

import dataclasses
import logging
from collections.abc import Callable
from itertools import groupby

import kombu.exceptions
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from . import charts, subscriptions, verification
from .adminlog import log_staff_action
from .models import Checkpoint, CheckRun, SkippedEvent

logger = logging.getLogger(__name__)

VIEW_PERMISSION = "eventstore.view_checkpoint"


def may_view(user) -> bool:
    return (
        user.is_active
        and user.is_staff
        and (user.has_perm(VIEW_PERMISSION) or may_operate(user))
    )


def may_operate(user) -> bool:
    return user.is_active and user.has_perm(verification.OPERATE_PERMISSION)


def operator_named(username: str):
    """Return the active user ``username`` who may operate, for a command's record.

    A management command runs with the shell's power; ``--by`` names the
    staff member who decided, as the operations page records who clicked.
    Raise ``ValueError`` naming what is wrong.
    """
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValueError(f"--by: no user is named {username!r}")
    if not may_operate(user):
        raise ValueError(f"--by: {username} is not an active operations user")
    return user


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    template: str
    context: Callable[[HttpRequest], dict]
    order: int = 100


_panels: dict[str, Panel] = {}


def register_panel(
    title: str,
    template: str,
    context: Callable[[HttpRequest], dict],
    *,
    order: int = 100,
) -> None:
    """Show a panel on the operations page (an app's figures, charts ...)."""
    _panels[title] = Panel(title, template, context, order)


class PartitionForm(forms.Form):
    subscription = forms.CharField()
    partition = forms.IntegerField(min_value=0)


class SkipForm(PartitionForm):
    # The failed event the operator saw: a skip of any other is refused.
    sequence = forms.IntegerField(min_value=1)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 40}),
        help_text="Why this event may be passed over; recorded with your name.",
    )

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason


@dataclasses.dataclass(frozen=True)
class SubscriptionRow:
    name: str
    partitions: list[subscriptions.PartitionStatus]
    verifiable: bool
    rebuildable: bool
    verification: CheckRun | None
    repair: CheckRun | None
    skip_advice: str

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def stopped(self) -> list[subscriptions.PartitionStatus]:
        return [p for p in self.partitions if p.failed_sequence is not None]


def index(request):
    if not may_view(request.user):
        raise PermissionDenied
    latest = verification.latest_runs()
    verifiable = {sub.name for sub in verification.verifiable()}
    rebuildable = {sub.name for sub in verification.rebuildable()}
    statuses = sorted(
        subscriptions.subscription_status(),
        key=lambda s: (s.subscription, s.partition),
    )
    rows = [
        SubscriptionRow(
            name=name,
            partitions=list(parts),
            verifiable=name in verifiable,
            rebuildable=name in rebuildable,
            verification=latest.get((name, CheckRun.Kind.VERIFY)),
            repair=latest.get((name, CheckRun.Kind.REPAIR)),
            skip_advice=subscriptions.get_subscription(name).skip_advice,
        )
        for name, parts in groupby(statuses, key=lambda s: s.subscription)
    ]
    panels = [
        {"title": panel.title, "template": panel.template, **panel.context(request)}
        for panel in sorted(_panels.values(), key=lambda p: (p.order, p.title))
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Operations",
        "subtitle": None,
        "subscriptions": rows,
        "checks": [
            (name, latest.get((name, CheckRun.Kind.CHECK)))
            for name in verification.checks()
        ],
        "panels": panels,
        "events_chart": charts.events_per_minute(),
        "may_operate": may_operate(request.user),
        "skip_form": SkipForm(),
        "recent_runs": CheckRun.objects.select_related("requested_by")[:10],
    }
    return TemplateResponse(request, "eventstore/operations.html", context)


def _operator_only(request) -> None:
    if not may_operate(request.user):
        raise PermissionDenied


def _back(request) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:operations"))


def _form_errors(form: forms.Form) -> str:
    return "; ".join(
        f"{field}: {' '.join(error)}" for field, error in form.errors.items()
    )


@require_POST
def retry(request):
    _operator_only(request)
    form = PartitionForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not retried. {_form_errors(form)}")
        return _back(request)
    data = form.cleaned_data
    try:
        with transaction.atomic():
            # Read the stop being retried before the retry: the runner it
            # wakes may clear it as soon as it commits. Locked, as the retry
            # locks it, so the stop read is the one retried.
            checkpoint = (
                Checkpoint.objects.select_for_update()
                .filter(subscription=data["subscription"], partition=data["partition"])
                .first()
            )
            subscriptions.retry_partition(data["subscription"], data["partition"])
    except (LookupError, ValueError) as error:
        messages.error(request, f"Not retried: {error}")
        return _back(request)
    log_staff_action(
        request,
        Checkpoint,
        object_id=checkpoint.pk,
        object_repr=str(checkpoint),
        message=f"Retried {checkpoint} stopped at sequence "
        f"{checkpoint.failed_sequence}.",
    )
    messages.success(
        request,
        f"{checkpoint.subscription}[{checkpoint.partition}] will retry its "
        "failed event now.",
    )
    return _back(request)


@require_POST
def skip(request):
    _operator_only(request)
    form = SkipForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not skipped. {_form_errors(form)}")
        return _back(request)
    data = form.cleaned_data
    try:
        skipped = subscriptions.skip_failed_event(
            data["subscription"],
            data["partition"],
            sequence=data["sequence"],
            reason=data["reason"],
            actor=request.user,
        )
    except (LookupError, ValueError) as error:
        messages.error(request, f"Not skipped: {error}")
        return _back(request)
    log_staff_action(
        request,
        SkippedEvent,
        object_id=skipped.pk,
        object_repr=str(skipped),
        message=f"Skipped: {data['reason']}",
        flag=ADDITION,
    )
    advice = subscriptions.get_subscription(skipped.subscription).skip_advice
    messages.success(
        request,
        f"{skipped.subscription}[{skipped.partition}] skipped sequence "
        f"{skipped.sequence}. {advice}".strip(),
    )
    return _back(request)


_JOBS = {
    "verify": (
        verification.verify_projection_task,
        "verification",
        CheckRun.Kind.VERIFY,
    ),
    "repair": (verification.repair_projection_task, "repair", CheckRun.Kind.REPAIR),
    "check": (verification.run_check_task, "check", CheckRun.Kind.CHECK),
}


@require_POST
def start_job(request, job: str):
    """Queue a verification, repair or check; its result appears on the page.

    With tasks run in-process (the embedded mode) the job has ended when the
    task is sent, so the message says how it ended instead.
    """
    _operator_only(request)
    task, label, kind = _JOBS[job]
    name = request.POST.get("name", "")
    known = (
        verification.checks()
        if job == "check"
        else [
            sub.name
            for sub in (
                verification.verifiable()
                if job == "verify"
                else verification.rebuildable()
            )
        ]
    )
    if name not in known:
        messages.error(request, f"There is no {label} named {name!r}.")
        return _back(request)
    asked_at = timezone.now()
    try:
        task.delay_on_commit(name, request.user.pk)
    except kombu.exceptions.OperationalError as error:
        # Nothing was queued, so nothing is logged as started; the run's
        # CheckRun is only ever written by the job itself, when it ends.
        logger.error("could not queue the %s of %s: %s", label, name, error)
        messages.error(request, f"Could not queue the {label} of {name}; try again.")
        return _back(request)
    # The run is recorded when it ends; the log says who asked for it.
    log_staff_action(
        request,
        CheckRun,
        object_repr=f"{label} of {name}"[:200],
        message=f"Started a {label} of {name}.",
        flag=ADDITION,
    )
    if task.app.conf.task_always_eager and not connection.in_atomic_block:
        # Tasks run in-process (the embedded mode): the job has ended already.
        _report_run(request, label, name, kind, asked_at)
    else:
        messages.success(
            request,
            f"The {label} of {name} is queued; its result appears below when done.",
        )
    return _back(request)


def _report_run(request, label: str, name: str, kind: str, asked_at) -> None:
    """Say how a job that ran in this request ended."""
    run = CheckRun.objects.filter(
        kind=kind, name=name, started_at__gte=asked_at
    ).first()
    if run is None:
        # The job raised before it recorded anything (Celery logs the error).
        messages.error(
            request, f"The {label} of {name} recorded no result; see the log."
        )
        return
    level = messages.SUCCESS if run.ok else messages.ERROR
    messages.add_message(
        request,
        level,
        f"The {label} of {name} has run: {run.get_outcome_display()}; "
        "its result is below.",
    )


def urls(site: admin.AdminSite) -> list:
    return [
        path("operations/", site.admin_view(index), name="operations"),
        path("operations/retry/", site.admin_view(retry), name="operations_retry"),
        path("operations/skip/", site.admin_view(skip), name="operations_skip"),
        *(
            path(
                f"operations/{job}/",
                site.admin_view(start_job),
                {"job": job},
                name=f"operations_{job}",
            )
            for job in _JOBS
        ),
    ]
