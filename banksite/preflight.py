"""Decide how ``run.sh`` runs: on PostgreSQL and Redis, or embedded.

``python -m banksite.preflight`` checks that the database in ``DATABASE_URL``
and the broker in ``CELERY_BROKER_URL`` (localhost defaults) answer, creating
the PostgreSQL database if the server is up but the database is missing. It
exits 0 when both are usable, and 1 with the reason on stdout otherwise. But
first it reads the settings module (not Django's apps: it runs before the
first migration), and exits 2 with the settings' message if a setting is
malformed: a typo in ``DATABASE_URL`` must stop ``run.sh``, not send it to
the embedded mode as if PostgreSQL were down.
"""

import importlib
import os
import sys

import dj_database_url
import psycopg
from django.core.exceptions import ImproperlyConfigured
from kombu import Connection
from kombu.utils.url import maybe_sanitize_url
from psycopg import sql

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bank"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
TIMEOUT_SECONDS = 3


class Unreachable(Exception):
    pass


def ensure_database(url: str) -> str:
    """Connect to the PostgreSQL database, creating it if missing; describe it."""
    config = dj_database_url.parse(url)
    if config["ENGINE"] != "django.db.backends.postgresql":
        raise Unreachable(f"DATABASE_URL is not PostgreSQL ({config['ENGINE']})")
    where = f"{config['HOST'] or 'localhost'}:{config['PORT'] or 5432}"
    params = {
        "host": config["HOST"] or None,
        "port": config["PORT"] or None,
        "user": config["USER"] or None,
        "password": config["PASSWORD"] or None,
        "connect_timeout": TIMEOUT_SECONDS,
    }
    try:
        psycopg.connect(dbname=config["NAME"], **params).close()
        return f"PostgreSQL {where}/{config['NAME']}"
    except psycopg.OperationalError as error:
        if "does not exist" not in str(error):
            raise Unreachable(f"PostgreSQL at {where}: {_first_line(error)}") from None
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"]))
            )
    except psycopg.Error as error:
        raise Unreachable(
            f"cannot create database {config['NAME']!r}: {_first_line(error)}"
        ) from None
    return f"PostgreSQL {where}/{config['NAME']} (created)"


def check_broker(url: str) -> str:
    """Connect to the Celery broker once; describe it, never with its password."""
    try:
        with Connection(
            url,
            connect_timeout=TIMEOUT_SECONDS,
            # A broker that takes the connection and never answers is down too.
            transport_options={"socket_timeout": TIMEOUT_SECONDS},
        ) as broker:
            broker.ensure_connection(max_retries=1, timeout=TIMEOUT_SECONDS)
            return f"broker {broker.as_uri()}"
    except Exception as error:  # any failure means: not usable here
        raise Unreachable(
            f"broker {maybe_sanitize_url(url)}: {_first_line(error)}"
        ) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main() -> int:
    try:
        importlib.import_module(
            os.environ.get("DJANGO_SETTINGS_MODULE", "banksite.settings")
        )
    except ImproperlyConfigured as error:
        print(f"the settings are wrong: {error}")
        return 2
    try:
        database = ensure_database(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
        broker = check_broker(os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL))
    except Unreachable as reason:
        print(reason)
        return 1
    print(f"{database} and {broker}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
