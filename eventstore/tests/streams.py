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
