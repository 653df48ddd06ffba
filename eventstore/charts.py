"""Small charts drawn on the server as inline SVG (no script, no CDN)."""

import dataclasses
import datetime

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .models import Event


@dataclasses.dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: list[int]


def bar_chart(
    series: list[Series],
    *,
    ticks: dict[int, str],
    title: str,
    width: int = 720,
    height: int = 140,
) -> SafeString:
    """Draw stacked bars, one per bucket, with a legend and labelled ticks."""
    buckets = max((len(s.values) for s in series), default=0)
    top = max((sum(s.values[i] for s in series) for i in range(buckets)), default=0)
    left, bottom, legend = 40, 18, 16
    plot_w, plot_h = width - left - 4, height - bottom - legend
    step = plot_w / buckets if buckets else plot_w
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="10" class="ops-chart">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{legend + plot_h}" x2="{width - 4}" '
        f'y2="{legend + plot_h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{legend + 8}" text-anchor="end">{top}</text>',
        f'<text x="{left - 4}" y="{legend + plot_h}" text-anchor="end">0</text>',
    ]
    x = left
    for s in series:
        parts.append(
            f'<rect x="{x}" y="2" width="10" height="10" fill="{escape(s.color)}"/>'
            f'<text x="{x + 14}" y="11">{escape(s.label)} '
            f"({sum(s.values)})</text>"
        )
        x += 30 + 7 * len(s.label)
    if top:
        for i in range(buckets):
            y = legend + plot_h
            for s in series:
                value = s.values[i] if i < len(s.values) else 0
                if not value:
                    continue
                h = value / top * plot_h
                y -= h
                parts.append(
                    f'<rect x="{left + i * step:.2f}" y="{y:.2f}" '
                    f'width="{max(step, 0.5):.2f}" height="{h:.2f}" '
                    f'fill="{escape(s.color)}" shape-rendering="crispEdges"/>'
                )
    for i, label in ticks.items():
        tx = left + i * step
        parts.append(
            f'<line x1="{tx:.2f}" y1="{legend + plot_h}" x2="{tx:.2f}" '
            f'y2="{legend + plot_h + 3}" stroke="#999"/>'
            f'<text x="{tx:.2f}" y="{height - 4}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    # Every interpolated text above is escaped; numbers are formatted here.
    return mark_safe("".join(parts))  # noqa: S308


def hourly_ticks(start: datetime.datetime, buckets: int, per_hour: int) -> dict:
    """Label every fourth hour of a 24-hour axis that starts at ``start``."""
    ticks = {}
    for i in range(0, buckets + 1, per_hour):
        moment = start + datetime.timedelta(hours=i // per_hour)
        if moment.hour % 4 == 0:
            ticks[i] = f"{moment:%H:%M}"
    return ticks


def events_per_minute(hours: int = 24) -> SafeString:
    """Chart the number of events recorded in each minute of the last hours."""
    end = timezone.now().replace(second=0, microsecond=0) + datetime.timedelta(
        minutes=1
    )
    start = end - datetime.timedelta(hours=hours)
    counts = dict(
        Event.objects.filter(recorded_at__gte=start)
        .annotate(minute=TruncMinute("recorded_at"))
        .values_list("minute")
        .annotate(n=Count("id"))
        .values_list("minute", "n")
    )
    values = [
        counts.get(start + datetime.timedelta(minutes=m), 0) for m in range(hours * 60)
    ]
    return bar_chart(
        [Series("events", "#417690", values)],
        ticks=hourly_ticks(start, hours * 60, 60),
        title=f"Events per minute, last {hours} hours",
    )
