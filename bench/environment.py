"""The bench's own database and broker queue, set up before Django and removed after.

The bench never touches the developer's database or queue: it points
``DATABASE_URL`` at a database of its own on the same server (created here,
migrated, dropped at the end) and Celery at a Redis database and queue of its
own, before ``django.setup()`` reads the settings. Child processes inherit the
environment, so they find the same database and queue.
"""

import contextlib
import os
import sys
import urllib.parse
import uuid

import psycopg

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bank"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
# Tests use Redis database 14; the bench keeps to its own.
BENCH_REDIS_DB = 15
RAW_TABLE = "bench_raw_event"


def point_at_bench_database(bench: str = "eventstore") -> str:
    """Set ``DATABASE_URL`` to a new database ``bench_<bench>_<pid>``.

    Return its URL. It lives on the configured server; refuse anything but
    PostgreSQL: the figures are about it.
    """
    configured = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    parts = urllib.parse.urlsplit(configured)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise SystemExit(
            f"the bench needs PostgreSQL; DATABASE_URL is {parts.scheme}://..."
        )
    name = f"bench_{bench}_{os.getpid()}"
    url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}", query=""))
    os.environ["DATABASE_URL"] = url
    return url


def point_at_bench_queue(bench: str = "eventstore") -> tuple[str, str]:
    """Send Celery's messages to a Redis database and queue of the bench's own."""
    configured = os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    parts = urllib.parse.urlsplit(configured)
    broker = urllib.parse.urlunsplit(parts._replace(path=f"/{BENCH_REDIS_DB}"))
    queue = f"bench-{bench}-{uuid.uuid4().hex[:12]}"
    os.environ["CELERY_BROKER_URL"] = broker
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = queue
    return broker, queue


@contextlib.contextmanager
def own_database_and_queue(bench: str):
    """Run a bench on a database and queue of its own; drop both at the end.

    Set the environment Django reads (DEBUG off: Django would otherwise keep
    every query it ran), create ``bench_<bench>_<pid>`` and yield
    ``(database_url, broker, queue)``. The caller sets Django up and
    migrates. On the way out, even after an error, close Django's
    connections, drop the database and clear the queue.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "banksite.settings")
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", f"bench-{uuid.uuid4().hex}")
    database_url = point_at_bench_database(bench)
    broker, queue = point_at_bench_queue(bench)
    print(f"creating {_database_name(database_url)} ...", file=sys.stderr, flush=True)
    create_database(database_url)
    try:
        yield database_url, broker, queue
    finally:
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        drop_database(database_url)
        clear_queue(broker, queue, everything=True)
        print("dropped the bench database and queue", file=sys.stderr, flush=True)


def _maintenance_url(database_url: str) -> str:
    parts = urllib.parse.urlsplit(database_url)
    return urllib.parse.urlunsplit(parts._replace(path="/postgres"))


def _database_name(database_url: str) -> str:
    return urllib.parse.urlsplit(database_url).path.lstrip("/")


def create_database(database_url: str) -> None:
    name = _database_name(database_url)
    with psycopg.connect(_maintenance_url(database_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(database_url: str) -> None:
    name = _database_name(database_url)
    with psycopg.connect(_maintenance_url(database_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate() -> None:
    """Migrate the event store and the contrib apps it leans on, nothing else.

    Other apps may be half-written while the bench runs; it needs only the
    event store's tables and its ``eventstore_append`` function. ``auth`` goes
    to its latest migration first: the event store depends only on its first,
    where permission names are too short for the permissions apps declare.
    """
    from django.core.management import call_command

    for app in ("contenttypes", "auth", "eventstore"):
        call_command("migrate", app, verbosity=0, interactive=False)


def create_raw_table(conn: psycopg.Connection) -> None:
    """Create the raw baseline's table: the event table's columns, constraints, indexes.

    ``INCLUDING ALL`` copies the identity column with a sequence of its own; it
    does not copy the append-only trigger, which fires only on UPDATE and
    DELETE and so costs an INSERT nothing.
    """
    conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
    conn.execute(f"CREATE TABLE {RAW_TABLE} (LIKE eventstore_event INCLUDING ALL)")
    (identity,) = conn.execute(
        "SELECT pg_get_serial_sequence(%s, 'id')", [RAW_TABLE]
    ).fetchone()
    (event_identity,) = conn.execute(
        "SELECT pg_get_serial_sequence('eventstore_event', 'id')"
    ).fetchone()
    if identity is None or identity == event_identity:
        raise RuntimeError(f"{RAW_TABLE} must have an id sequence of its own")


def clear_queue(broker: str, queue: str, *, everything: bool = False) -> None:
    """Drop the nudges piled up in the bench queue (and its bindings at the end)."""
    import redis

    client = redis.Redis.from_url(broker)
    with contextlib.closing(client):
        keys = [queue]
        if everything:
            keys += [key for key in client.scan_iter(match=f"*{queue}*")]
        client.delete(*keys)
