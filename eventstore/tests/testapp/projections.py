import time

from django.db.models import F

from eventstore.subscriptions import subscription

from .events import Counted
from .models import Handled, Tally


class DeliberateFailure(Exception):
    pass


def reset():
    Tally.objects.all().delete()
    Handled.objects.all().delete()


tallies = subscription(
    "testapp.tallies",
    batch_size=50,
    reset=reset,
    skip_advice="A skipped count is missing from the tallies until a rebuild.",
)


@tallies.handles(Counted)
def on_counted(recorded):
    event = recorded.event
    if event.fail:
        raise DeliberateFailure(f"refusing {recorded.stream_id}@{recorded.version}")
    if event.sleep_seconds:
        time.sleep(event.sleep_seconds)
    Handled.objects.create(
        event_id=recorded.event_id,
        stream_id=recorded.stream_id,
        version=recorded.version,
        partition=recorded.partition,
        sequence=recorded.sequence,
    )
    updated = Tally.objects.filter(stream_id=recorded.stream_id).update(
        total=F("total") + event.amount, events=F("events") + 1
    )
    if not updated:
        Tally.objects.create(stream_id=recorded.stream_id, total=event.amount, events=1)
