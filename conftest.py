"""Fixtures shared by every app's tests.

``celery_worker`` starts a real ``celery -A banksite worker`` process pointed
at the test database and at this test run's own queue. A worker is another
process: it sees only committed data, so tests that use it need
``@pytest.mark.django_db(transaction=True)``.
"""

import json
import os
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from banksite.worker_process import WorkerProcess
from eventstore import events as event_registry
from eventstore import nudges

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "test-artifacts"
# pytest-django renames the database when (and only when) it creates the
# test database.
DATABASE_BEFORE_TESTS = settings.DATABASES["default"]["NAME"]


def database_url(database_name: str) -> str:
    """Return the configured DATABASE_URL naming another database.

    The password and the query options (``sslmode``, say) are kept.
    """
    url = urllib.parse.urlsplit(settings.DATABASE_URL)
    return url._replace(path="/" + urllib.parse.quote(database_name)).geturl()


def start_worker(
    database_name: str, *, concurrency: int = 2, beat: bool = False, timeout=60
) -> WorkerProcess:
    """Start a real worker on the test database and queue; return it when ready."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "banksite.test_settings",
        "DATABASE_URL": database_url(database_name),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "EVENTSTORE_SWEEP_SECONDS": "1",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    worker = WorkerProcess(
        queue=settings.CELERY_TASK_DEFAULT_QUEUE,
        env=env,
        log_path=ARTIFACTS / f"celery-worker-{uuid.uuid4().hex[:8]}.log",
        name="test",
        concurrency=concurrency,
        beat=beat,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "ready." in worker.output():
            return worker
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited:\n{worker.output()}")
        time.sleep(0.1)
    worker.stop(timeout=20)
    raise RuntimeError(f"worker not ready in {timeout}s:\n{worker.output()}")


@pytest.fixture(scope="session", autouse=True)
def delete_this_runs_queue():
    """Delete this run's Celery queue, and kombu's keys for it, at the end.

    A worker a test killed leaves the messages it held in kombu's ``unacked``
    hash; an hour later any worker on this Redis database would put them back,
    recreating the queue. So this run's entries there go too.
    """
    yield
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for tag, entry in client.hscan_iter("unacked"):
        _message, _exchange, routing_key = json.loads(entry)
        if routing_key == queue:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    client.delete(queue, f"_kombu.binding.{queue}")
    client.close()


@pytest.fixture
def unchecked_partition_count(monkeypatch):
    """Make this process check its partition count against the store again.

    As a process started now would: the check is remembered per process.
    """
    from eventstore import store

    monkeypatch.setattr(store, "_checked_partition_counts", set())


@pytest.fixture
def start_celery_worker(transactional_db):
    """Return a function that starts a real worker; every one is stopped after."""
    workers: list[WorkerProcess] = []

    def start(**options) -> WorkerProcess:
        nudges.release_all()  # the worker reads the queue from scratch
        worker = start_worker(connection.settings_dict["NAME"], **options)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=20)


@pytest.fixture
def celery_worker(start_celery_worker) -> WorkerProcess:
    return start_celery_worker()


def wait_until(condition, *, timeout: float = 30, interval: float = 0.1, message=""):
    """Poll ``condition`` until it returns a true value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting: {message or condition}")


@pytest.fixture
def wait_for():
    return wait_until


@pytest.fixture(scope="session", autouse=True)
def end_other_sessions_on_the_test_database(django_db_setup, django_db_blocker):
    """Before the test database is dropped, end sessions other processes left.

    Worker processes and server subprocesses started by tests are stopped,
    but PostgreSQL may not have noticed a killed one's connection yet; the
    drop would then fail with "being accessed by other users".
    """
    yield
    if connection.settings_dict["NAME"] == DATABASE_BEFORE_TESTS:
        return  # no test of this run needed a database: none was created
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


# schemathesis over the OpenAPI schema (accounts/ and transfers/ test_schema.py)


def schema_test_settings(test):
    """Bound a schemathesis test: a few dozen examples, no deadline or database."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(test)


def _schema_checks():
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]


SCHEMA_CHECKS = _schema_checks()


@pytest.fixture
def wsgi_in_test_transaction(db):
    """Keep the test's connection open across in-process WSGI calls.

    Django closes connections when a request ends; its test client switches
    that off, and so must a test that calls the WSGI app directly.
    """
    from django.core import signals
    from django.db import close_old_connections

    from banksite.wsgi import application

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield application
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(wsgi_in_test_transaction):
    """The API's OpenAPI schema, served in-process, for schemathesis."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.config import SchemathesisConfig

    config = SchemathesisConfig()
    config.projects.default.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    )
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", wsgi_in_test_transaction, config=config
    )


@pytest.fixture
def superuser_token(db):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user(
        "root", password="pw", is_superuser=True, is_staff=True
    )
    return Token.objects.create(user=user).key


@pytest.fixture
def a_release(monkeypatch):
    """Return a function that makes a class current for an event type name.

    As a release's code would; what a test registers (upcasters too) is undone
    after it.
    """
    for registry in ("_by_name", "_by_class", "_upcasters"):
        monkeypatch.setattr(
            event_registry, registry, dict(getattr(event_registry, registry))
        )

    def make_current(name: str, version: int, cls: type) -> None:
        event_type = event_registry.EventType(name=name, version=version, cls=cls)
        event_registry._by_name[name] = event_type
        event_registry._by_class[cls] = event_type

    return make_current
