"""Stream ids for tests, chosen by partition."""

import itertools
import uuid

from eventstore.store import partition_for


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
