"""The Celery app: ``celery -A banksite worker`` and ``celery -A banksite beat``.

Workers log through Django's ``LOGGING`` (the same line format as the web,
JSON with ``LOG_FORMAT=json``) instead of Celery's own. A task carries the
request id and correlation id of whoever sent it in its message headers and
runs inside them, so its log lines and any event it appends can be traced
back to the request; a subscription handler narrows that to the correlation
id of the event it handles.
"""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "banksite.settings")

app = Celery("banksite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Message header for each metadata key (prefixed: Celery has its own
# ``correlation_id``, the task id).
TRACE_HEADERS = {
    "request_id": "trace_request_id",
    "correlation_id": "trace_correlation_id",
}


@signals.setup_logging.connect
def use_django_logging(**kwargs) -> None:
    """Keep Django's logging configuration (connecting stops Celery's own)."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@signals.before_task_publish.connect
def send_trace_headers(headers: dict, **kwargs) -> None:
    """Put the sender's request and correlation ids in the task's headers."""
    from eventstore.context import current_metadata

    metadata = current_metadata()
    for key, header in TRACE_HEADERS.items():
        if metadata.get(key):
            headers.setdefault(header, metadata[key])


@signals.task_prerun.connect
def enter_trace_context(task, **kwargs) -> None:
    """Run the task inside the ids its sender put in the headers."""
    from eventstore.context import metadata_context

    values = {
        key: getattr(task.request, header, None)
        for key, header in TRACE_HEADERS.items()
    }
    if not any(values.values()):
        return
    context = metadata_context(**values)
    context.__enter__()
    task.request.trace_context = context


@signals.task_postrun.connect
def leave_trace_context(task, **kwargs) -> None:
    context = getattr(task.request, "trace_context", None)
    if context is not None:
        task.request.trace_context = None
        context.__exit__(None, None, None)
