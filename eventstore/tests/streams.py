"""Stream ids for tests, chosen by partition; events stored as other code would."""

import itertools
import uuid

from django.utils import timezone

from eventstore.models import Event
from eventstore.store import head_sequence, partition_for


def streams_in_partition(
    partition: int, count: int, prefix: str = "tally"
) -> list[str]:
    """Return ``count`` new stream ids that all live in ``partition``."""
    found = []
    for _ in itertools.count():
        stream = f"{prefix}-{uuid.uuid4()}"
        if partition_for(stream) == partition:
            found.append(stream)
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


def count_placing_apart(stream_id: str, count: int) -> int:
    """Return a partition count under which the stream is in another partition."""
    for other in itertools.count(count + 1):
        if partition_for(stream_id, other) != partition_for(stream_id, count):
            return other
    raise AssertionError("unreachable")


def stream_placed_apart(count: int, other: int, prefix: str = "tally") -> str:
    """Return a new stream id whose partition differs under the two counts."""
    while True:
        stream = f"{prefix}-{uuid.uuid4()}"
        if partition_for(stream, count) != partition_for(stream, other):
            return stream


def store_as_other_code(
    stream_id: str, version: int, event_type: str, schema_version: int, data: dict
) -> Event:
    """Store an event row as other code (a newer or older release) wrote it.

    Next in its stream's partition, with whatever type, schema version and
    data: this code's append would refuse what it cannot read back.
    """
    partition = partition_for(stream_id)
    return Event.objects.create(
        stream_id=stream_id,
        version=version,
        partition=partition,
        sequence=head_sequence(partition) + 1,
        event_type=event_type,
        schema_version=schema_version,
        data=data,
        event_id=uuid.uuid4(),
        recorded_at=timezone.now(),
    )
