"""The event store in the back office: read-only, for everyone.

Events are the source of truth and append-only, so the admin shows them and
never offers to add, change or delete one: not even to superusers (the
permission methods say no before Django looks at any user's permissions).
Checkpoints and skipped events are shown read-only too: they change only
through the operations page (``eventstore.operations``), which calls
``eventstore.subscriptions``.
"""

import json
import re

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from . import operations
from .models import Checkpoint, CheckRun, Event, SkippedEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Show rows; never add, change or delete them, whoever asks."""

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LastYearSafeDateHierarchy:
    """Answer a date drill-down into the year 9999 as bad input, not a 500.

    Django bounds a drill-down by the next year, month or day, which the last
    date Python has does not have; its ``ValueError`` or ``OverflowError``
    becomes the error the changelist answers with a redirect to ``?e=1``.
    """

    def get_changelist_instance(self, request):
        try:
            return super().get_changelist_instance(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error


_STREAM_ID_SUFFIX = re.compile(r"-([0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|\d+)$")


def pretty_json(value) -> str:
    return format_html(
        '<pre style="margin:0;white-space:pre-wrap">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False),
    )


class StreamFilter(admin.SimpleListFilter):
    """Narrow the list to one stream (linked from each row's stream id)."""

    title = _("stream")
    parameter_name = "stream"

    def lookups(self, request, model_admin):
        stream = request.GET.get(self.parameter_name)
        return [(stream, stream)] if stream else []

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(stream_id=self.value())
        return queryset


class StreamKindFilter(admin.SimpleListFilter):
    """Narrow the list to the streams of one aggregate (``account-``, ...)."""

    title = _("stream kind")
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        # Stream ids are "<prefix>-<id>". Listing every prefix would scan the
        # whole table, so the choices come from the latest events.
        recent = Event.objects.order_by("-id").values_list("stream_id", flat=True)[
            :2000
        ]
        prefixes = sorted({_STREAM_ID_SUFFIX.sub("", stream) for stream in recent})
        return [(prefix, prefix) for prefix in prefixes]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(stream_id__startswith=f"{self.value()}-")
        return queryset


@admin.register(Event)
class EventAdmin(LastYearSafeDateHierarchy, ReadOnlyAdmin):
    list_display = (
        "id",
        "recorded_at",
        "stream",
        "version",
        "event_type",
        "schema_version",
        "partition",
        "sequence",
        "actor",
    )
    list_display_links = ("id",)
    list_filter = (
        StreamFilter,
        StreamKindFilter,
        "event_type",
        ("recorded_at", admin.DateFieldListFilter),
        "partition",
    )
    search_fields = ("=stream_id", "=event_id")
    search_help_text = _("An exact stream id (account-…, transfer-…) or event id.")
    date_hierarchy = "recorded_at"
    ordering = ("-id",)
    list_per_page = 100
    # Counting a big event table on every page costs more than it tells.
    show_full_result_count = False
    fields = (
        "id",
        "event_id",
        "stream_link",
        "version",
        "event_type",
        "schema_version",
        "partition",
        "sequence",
        "recorded_at",
        "data_json",
        "metadata_json",
    )
    readonly_fields = fields

    @admin.display(description=_("stream"), ordering="stream_id")
    def stream(self, event: Event) -> str:
        url = reverse("admin:eventstore_event_changelist")
        return format_html(
            '<a href="{}?{}">{}</a>',
            url,
            urlencode({"stream": event.stream_id}),
            event.stream_id,
        )

    @admin.display(description=_("stream"))
    def stream_link(self, event: Event) -> str:
        return self.stream(event)

    @admin.display(description=_("acting user"))
    def actor(self, event: Event) -> str:
        metadata = event.metadata or {}
        return str(metadata.get("actor_id") or metadata.get("actor") or "")

    @admin.display(description=_("data"))
    def data_json(self, event: Event) -> str:
        return pretty_json(event.data)

    @admin.display(description=_("metadata"))
    def metadata_json(self, event: Event) -> str:
        return pretty_json(event.metadata)


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = (
        "subscription",
        "partition",
        "sequence",
        "stopped_at",
        "attempts",
        "retry_at",
        "updated_at",
    )
    list_filter = ("subscription",)
    ordering = ("subscription", "partition")

    @admin.display(description=_("stopped at"), ordering="failed_sequence")
    def stopped_at(self, checkpoint: Checkpoint):
        return checkpoint.failed_sequence


@admin.register(SkippedEvent)
class SkippedEventAdmin(ReadOnlyAdmin):
    list_display = (
        "skipped_at",
        "subscription",
        "partition",
        "sequence",
        "event_link",
        "skipped_by",
        "reason",
    )
    list_filter = ("subscription",)
    search_fields = ("reason", "=event_id")

    @admin.display(description=_("event"))
    def event_link(self, skipped: SkippedEvent) -> str:
        event = Event.objects.filter(
            Q(event_id=skipped.event_id)
            | Q(partition=skipped.partition, sequence=skipped.sequence)
        ).first()
        if event is None:
            return "-"
        url = reverse("admin:eventstore_event_change", args=[event.pk])
        return format_html('<a href="{}">{}</a>', url, event)


@admin.register(CheckRun)
class CheckRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "kind",
        "name",
        "outcome",
        "rows_checked",
        "differences",
        "duration",
        "requested_by",
        "alerted_at",
    )
    list_filter = ("kind", "outcome", "name", ("started_at", admin.DateFieldListFilter))
    fields = (
        "name",
        "kind",
        "outcome",
        "started_at",
        "duration",
        "rows_checked",
        "differences",
        "summary",
        "details_json",
        "requested_by",
        "alerted_at",
        "alert_error",
    )
    readonly_fields = fields

    @admin.display(description=_("details"))
    def details_json(self, run: CheckRun) -> str:
        return pretty_json(run.details)


def _add_operations_urls(site: admin.AdminSite) -> None:
    """Serve the operations page under the default site (``admin:operations``)."""
    get_urls = site.get_urls

    def get_urls_with_operations():
        return operations.urls(site) + get_urls()

    site.get_urls = get_urls_with_operations


_add_operations_urls(admin.site)


class ScheduleAdmin(PeriodicTaskAdmin):
    """django-celery-beat's schedules, whose actions need the change permission.

    Its enable, disable, toggle and run actions declare no permission, and
    Django offers such actions to anyone who may see the list: a read-only
    auditor could switch the nightly verification off.
    """

    def get_actions(self, request):
        if not self.has_change_permission(request):
            return {}
        return super().get_actions(request)


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, ScheduleAdmin)
