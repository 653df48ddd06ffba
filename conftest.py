"""Fixtures shared by every app's tests.

``celery_worker`` starts a real ``celery -A banksite worker`` process pointed
at the test database and at this test run's own queue. A worker is another
process: it sees only committed data, so tests that use it need
``@pytest.mark.django_db(transaction=True)``.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from eventstore import nudges

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "test-artifacts"


class CeleryWorker:
    """A real Celery worker process for tests: start, stop, or kill it."""

    def __init__(self, database_name: str, *, concurrency: int = 2, beat: bool = False):
        self.database_name = database_name
        self.concurrency = concurrency
        self.beat = beat
        self.process: subprocess.Popen | None = None
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"celery-worker-{uuid.uuid4().hex[:8]}.log"

    def start(self, timeout: float = 60) -> "CeleryWorker":
        database = settings.DATABASES["default"]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "banksite.test_settings",
            "DATABASE_URL": (
                f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
                f"/{self.database_name}"
            ),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_TASK_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "EVENTSTORE_SWEEP_SECONDS": "1",
        }
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "banksite",
            "worker",
            "--pool=prefork",
            f"--concurrency={self.concurrency}",
            f"--queues={settings.CELERY_TASK_DEFAULT_QUEUE}",
            f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        if self.beat:
            # An embedded beat with the plain in-memory scheduler: the sweep
            # entry from settings, without touching the test database's
            # schedule tables.
            command += ["--beat", "--scheduler=celery.beat:PersistentScheduler"]
            command += [f"--schedule={self.log_path.with_suffix('.beat')}"]
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log_path.read_text():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log_path.read_text()}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"worker not ready in {timeout}s:\n{self.log_path.read_text()}"
        )

    def kill(self) -> None:
        """SIGKILL the worker and all its pool processes at once."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def start_celery_worker(transactional_db):
    """Return a function that starts a real worker; every one is stopped after."""
    workers: list[CeleryWorker] = []

    def start(**options) -> CeleryWorker:
        nudges.release_all()  # the worker reads the queue from scratch
        worker = CeleryWorker(connection.settings_dict["NAME"], **options).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def celery_worker(start_celery_worker) -> CeleryWorker:
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
