"""Request and correlation ids: on responses, on log lines, across processes."""

import json
import logging
import logging.config
import subprocess
import sys
import uuid

import pytest
from django.conf import settings
from django.db import transaction

from banksite.logs import ContextFilter, JsonFormatter, TextFormatter
from eventstore.context import metadata_context
from eventstore.store import append, read_stream
from eventstore.tests.testapp.events import Counted
from eventstore.tests.testapp.models import Tally

from .servers import ROOT, clean_environment


@pytest.mark.django_db
def test_a_request_gets_ids_and_answers_with_them(client):
    response = client.get("/healthz", headers={"X-Correlation-ID": "corr-1"})

    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert response["X-Correlation-ID"] == "corr-1"


@pytest.mark.django_db
def test_the_correlation_id_defaults_to_the_request_id(client):
    response = client.get("/healthz", headers={"X-Request-ID": "req-1"})

    assert response["X-Request-ID"] == "req-1"
    assert response["X-Correlation-ID"] == "req-1"


@pytest.mark.django_db
@pytest.mark.parametrize("unusable", ["x" * 129, "abc\n", "a b"])
def test_an_unusable_id_header_is_replaced(client, unusable):
    response = client.get("/healthz", headers={"X-Request-ID": unusable})

    assert response.status_code in (200, 503)
    assert response["X-Request-ID"] != unusable


def _record(message="hello", **extra) -> logging.LogRecord:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_log_records_carry_the_ids_of_the_metadata_context():
    record = _record()
    with metadata_context(request_id="req-2", correlation_id="corr-2"):
        ContextFilter().filter(record)

    assert (record.request_id, record.correlation_id) == ("req-2", "corr-2")


def test_log_records_outside_any_context_say_so():
    record = _record()
    ContextFilter().filter(record)

    assert (record.request_id, record.correlation_id) == ("-", "-")


def test_json_lines_hold_the_message_ids_and_extra_fields():
    record = _record("paid %s", status=200)
    record.args = ("once",)
    with metadata_context(request_id="req-3", correlation_id="corr-3"):
        ContextFilter().filter(record)

    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "paid once"
    assert entry["level"] == "INFO"
    assert entry["request_id"] == "req-3"
    assert entry["correlation_id"] == "corr-3"
    assert entry["status"] == 200


def text_line(record: logging.LogRecord) -> str:
    """Format a record as the text log configured in settings does."""
    configured = logging.config.DictConfigurator(settings.LOGGING)
    formatter = configured.configure_formatter(
        dict(settings.LOGGING["formatters"]["text"])
    )
    assert isinstance(formatter, TextFormatter)
    ContextFilter().filter(record)
    return formatter.format(record)


def test_a_text_line_holds_a_message_on_one_line_whatever_it_holds():
    forged = "x\r\n2026-01-01 INFO banksite.request [request=a] POST\x1b[2K"

    line = text_line(_record(forged))

    assert line.endswith(
        "x\\r\\n2026-01-01 INFO banksite.request [request=a] POST\\x1b[2K"
    )
    assert "\n" not in line and "\r" not in line and "\x1b" not in line


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029"])
def test_what_log_viewers_take_for_a_line_break_is_escaped_too(separator):
    line = text_line(_record(f"GET /a{separator}2026-01-01 INFO forged"))

    assert len(line.splitlines()) == 1


@pytest.mark.django_db
def test_a_request_path_cannot_forge_a_line_of_the_request_log(client, caplog):
    caplog.set_level(logging.INFO, logger="banksite.request")

    client.get("/api/x%0D%0A2026-01-01%20INFO%20banksite.request%20POST")

    (record,) = [r for r in caplog.records if r.name == "banksite.request"]
    assert "\n" not in text_line(record)


def test_a_traceback_still_follows_on_lines_of_its_own():
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()

    line = text_line(record)

    assert line.splitlines()[0].endswith("failed")
    assert "Traceback (most recent call last):" in line.splitlines()[1]


def worker_log_entries(worker) -> list[dict]:
    return [
        json.loads(line)
        for line in worker.output().splitlines()
        if line.startswith("{")
    ]


@pytest.mark.django_db(transaction=True)
def test_the_correlation_id_travels_to_the_worker_that_handles_the_events(
    start_celery_worker, wait_for, monkeypatch
):
    # Given a worker that writes JSON log lines
    monkeypatch.setenv("LOG_FORMAT", "json")
    worker = start_celery_worker()
    stream = f"tally-{uuid.uuid4()}"
    correlation_id = f"corr-{uuid.uuid4().hex}"

    # When events are appended inside a request's context
    with (
        metadata_context(request_id="req-4", correlation_id=correlation_id),
        transaction.atomic(),
    ):
        append(stream, [Counted(amount=3)], 0)
    wait_for(lambda: Tally.objects.filter(stream_id=stream, events=1).exists())

    # Then the events carry the ids, and so do the worker's lines for the task
    # that the append nudged.
    (recorded,) = read_stream(stream)
    assert recorded.metadata["correlation_id"] == correlation_id
    assert recorded.metadata["request_id"] == "req-4"
    lines = wait_for(
        lambda: [
            entry
            for entry in worker_log_entries(worker)
            if entry["correlation_id"] == correlation_id
        ],
        message="a worker log line with the correlation id",
    )
    assert any("process_partition_task" in entry["message"] for entry in lines)
    assert all(entry["request_id"] == "req-4" for entry in lines)


def log_one_line(**env: str) -> subprocess.CompletedProcess:
    """Start Django as every process does and log one warning."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, logging; django.setup();"
            " logging.getLogger('banksite').warning('started')",
        ],
        cwd=ROOT,
        env=clean_environment(DJANGO_SETTINGS_MODULE="banksite.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_lowercase_log_level_is_understood():
    result = log_one_line(LOG_LEVEL="info")

    assert result.returncode == 0, result.stderr
    assert "WARNING banksite" in result.stderr


def test_an_unknown_log_level_is_refused_with_a_clear_message():
    result = log_one_line(LOG_LEVEL="loud")

    assert result.returncode != 0
    assert "LOG_LEVEL='loud' is not a log level" in result.stderr


def test_log_format_json_is_understood_in_any_case():
    result = log_one_line(LOG_FORMAT="JSON", LOG_LEVEL="INFO")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr.splitlines()[-1])["message"] == "started"
