import datetime
import uuid
from dataclasses import dataclass

from eventstore.events import register_event, upcaster


@register_event("testapp.Counted", version=2)
@dataclass(frozen=True)
class Counted:
    amount: int
    note: str = ""
    # Test hooks, read by the handler: fail on purpose or hold the lease.
    fail: bool = False
    sleep_seconds: float = 0


@upcaster("testapp.Counted", from_version=1)
def counted_v1_to_v2(data: dict) -> dict:
    return {"amount": data.pop("count"), **data}


@register_event("testapp.Ignored")
@dataclass(frozen=True)
class Ignored:
    pass


@register_event("testapp.Shelved")
@dataclass(frozen=True)
class Shelved:
    item: str
    owner: uuid.UUID
    size: int
    colour: str
    at: datetime.datetime
