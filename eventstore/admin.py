"""The event store in the back office: read-only, for everyone.

Events are the source of truth and append-only, so the admin shows them and
never offers to add, change or delete one: not even to superusers (the
permission methods say no before Django looks at any user's permissions).
Checkpoints and skipped events are shown read-only too: they change only
through the operations page (``eventstore.operations``), which calls
``eventstore.subscriptions``.
"""

import datetime
import json
import re

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import Max, Min, Q
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from . import events as event_registry
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


# A stream id is "<kind>-<id>", the id a UUID or a number. The pattern suits
# Python and PostgreSQL alike.
_STREAM_ID_SUFFIX_PATTERN = r"-([0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|[0-9]+)$"
_STREAM_ID_SUFFIX = re.compile(_STREAM_ID_SUFFIX_PATTERN)


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
            # Not a prefix match: "account-" also starts "account-number-1".
            return queryset.filter(
                stream_id__regex=f"^{re.escape(self.value())}{_STREAM_ID_SUFFIX_PATTERN}"
            )
        return queryset


class KnownValuesFilter(admin.SimpleListFilter):
    """Narrow a list to one value of the field ``parameter_name``.

    Django's filter of a plain field lists the values in use with a ``SELECT
    DISTINCT`` over the whole table on every view of the list; the code knows
    them instead (``known_values``).
    """

    def known_values(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [(value, value) for value in self.known_values()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class EventTypeFilter(KnownValuesFilter):
    title = _("event type")
    parameter_name = "event_type"

    def known_values(self):
        # Every stored type is registered: an event of another could not be read.
        return event_registry.registered_names()


class PartitionFilter(KnownValuesFilter):
    title = _("partition")
    parameter_name = "partition"

    def known_values(self):
        return [str(n) for n in range(settings.EVENTSTORE_PARTITIONS)]


class CappedPaginator(Paginator):
    """Count the rows up to a bound: offer that many pages, and say there are more.

    Counting every event reads the whole table on each view (and a filter by
    type or partition a good part of it), and a page deep in the list costs
    as much (its OFFSET reads every row it skips). Staff want the latest
    events and a way to narrow down the rest, not their number: past the
    bound, they narrow the list by date, stream, type or partition.
    """

    max_pages = 20

    @property
    def bound(self) -> int:
        return self.per_page * self.max_pages

    @cached_property
    def _counted(self) -> int:
        # One row past the bound says there are more. Ordering does not change
        # a count; without it, any index may serve.
        return self.object_list.order_by()[: self.bound + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._counted, self.bound)

    @property
    def has_more(self) -> bool:
        return self._counted > self.bound


class EventChangeList(ChangeList):
    """The event list, whose date drill-down reads two events, not all of them.

    Django's date hierarchy lists the years, months or days that hold events
    with a ``SELECT DISTINCT date_trunc(...)`` over every event shown: the
    whole table, at the top. Events arrive all the time, so this lists every
    period from the first event shown to the last (both ends of the index on
    ``recorded_at``); a period without events shows an empty list.
    """

    def date_drill_down(self) -> dict:
        """Return what Django's ``date_hierarchy`` tag gives its template."""
        field = self.date_hierarchy
        year, month, day = (
            self.params.get(f"{field}__{part}") for part in ("year", "month", "day")
        )

        def link(**parts) -> str:
            filters = {f"{field}__{part}": value for part, value in parts.items()}
            return self.get_query_string(filters, [f"{field}__"])

        def title(date: datetime.date, date_format: str) -> str:
            return capfirst(formats.date_format(date, date_format))

        if year and month and day:
            shown = datetime.date(int(year), int(month), int(day))
            return {
                "show": True,
                "back": {
                    "link": link(year=year, month=month),
                    "title": title(shown, "YEAR_MONTH_FORMAT"),
                },
                "choices": [{"title": title(shown, "MONTH_DAY_FORMAT")}],
            }
        span = self.queryset.aggregate(first=Min(field), last=Max(field))
        if span["first"] is None:
            first = last = None
        else:
            first, last = map(timezone.localtime, (span["first"], span["last"]))
            if not year and first.year == last.year:
                # As Django does: start at the months (or days) of the only year.
                year = first.year
                if first.month == last.month:
                    month = first.month
        if year and month:
            days = range(first.day, last.day + 1) if first else ()
            return {
                "show": True,
                "back": {"link": link(year=year), "title": str(year)},
                "choices": [
                    {
                        "link": link(year=year, month=month, day=d),
                        "title": title(
                            datetime.date(int(year), int(month), d), "MONTH_DAY_FORMAT"
                        ),
                    }
                    for d in days
                ],
            }
        if year:
            months = range(first.month, last.month + 1) if first else ()
            return {
                "show": True,
                "back": {"link": link(), "title": _("All dates")},
                "choices": [
                    {
                        "link": link(year=year, month=m),
                        "title": title(
                            datetime.date(int(year), m, 1), "YEAR_MONTH_FORMAT"
                        ),
                    }
                    for m in months
                ],
            }
        years = range(first.year, last.year + 1) if first else ()
        return {
            "show": True,
            "choices": [{"link": link(year=y), "title": str(y)} for y in years],
        }


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
        EventTypeFilter,
        ("recorded_at", admin.DateFieldListFilter),
        PartitionFilter,
    )
    search_fields = ("=stream_id", "=event_id")
    search_help_text = _("An exact stream id (account-…, transfer-…) or event id.")
    # Its choices are EventChangeList's, which reads two events for them.
    date_hierarchy = "recorded_at"
    ordering = ("-id",)
    list_per_page = 100
    # Counting a big event table on every page costs more than it tells: the
    # paginator counts up to its bound, and there is no second, full count.
    paginator = CappedPaginator
    show_full_result_count = False
    # Counts beside the filters' choices would count every event, once each.
    show_facets = admin.ShowFacets.NEVER
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

    def get_changelist(self, request, **kwargs):
        return EventChangeList

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
    list_select_related = ("skipped_by",)
    search_fields = ("reason", "=event_id")

    def get_changelist_instance(self, request):
        """Look the page's events up in one query, not one per row."""
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)  # the page's rows, kept by the queryset
        wanted = Q(event_id__in=[row.event_id for row in rows if row.event_id])
        for row in rows:
            wanted |= Q(partition=row.partition, sequence=row.sequence)
        events = list(Event.objects.filter(wanted)) if rows else []
        by_id = {event.event_id: event for event in events}
        by_position = {(event.partition, event.sequence): event for event in events}
        for row in rows:
            row.event = by_id.get(row.event_id) or by_position.get(
                (row.partition, row.sequence)
            )
        return changelist

    @admin.display(description=_("event"))
    def event_link(self, skipped: SkippedEvent) -> str:
        if skipped.event is None:
            return "-"
        url = reverse("admin:eventstore_event_change", args=[skipped.event.pk])
        return format_html('<a href="{}">{}</a>', url, skipped.event)


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


class ScheduleAdmin(LastYearSafeDateHierarchy, PeriodicTaskAdmin):
    """django-celery-beat's schedules, whose actions need the change permission.

    Its enable, disable, toggle and run actions declare no permission, and
    Django offers such actions to anyone who may see the list: a read-only
    auditor could switch the nightly verification off. Its list drills down
    by start time.
    """

    def get_actions(self, request):
        if not self.has_change_permission(request):
            return {}
        return super().get_actions(request)


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, ScheduleAdmin)
