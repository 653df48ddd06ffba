"""Log records that say which request and which correlation they belong to.

``ContextFilter`` stamps every record with the request id and correlation id
of the event-store metadata context in force where it was logged: the web
request's (set by ``RequestContextMiddleware``), the Celery task's (carried in
the task's headers, see ``banksite.celery``), or the event being handled
(``eventstore.subscriptions.handling_context``). ``TextFormatter`` writes a
record's message on one line; ``JsonFormatter`` writes one JSON object per
line for log collectors (``LOG_FORMAT=json``).
"""

import datetime
import json
import logging
import re

from eventstore.context import current_metadata

NO_ID = "-"

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD_ATTRIBUTES = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "correlation_id",
    "taskName",
}


class ContextFilter(logging.Filter):
    """Add ``request_id`` and ``correlation_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        metadata = current_metadata()
        for key in ("request_id", "correlation_id"):
            if not getattr(record, key, None):
                setattr(record, key, metadata.get(key) or NO_ID)
        return True


# Control characters but the tab, and what log viewers take for line breaks:
# a newline in a message (from a URL path or a username, say) would start
# what reads as another record, with any ids.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


class TextFormatter(logging.Formatter):
    """Format a record as text, its message on one line (``LOG_FORMAT=text``).

    Control characters in the message are written escaped (``\\n``); a
    traceback still follows on lines of its own.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(
            lambda match: repr(match.group())[1:-1], record.message
        )
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(
                record.created, tz=datetime.UTC
            ).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", NO_ID),
            "correlation_id": getattr(record, "correlation_id", NO_ID),
            "process": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
