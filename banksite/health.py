"""``GET /healthz``: is this web process fit to take traffic?

Answers 200 when the database and the Celery broker are reachable and 503
when either is not, or when this process's partition count is not the event
store's, with a JSON body saying which. It also reports how far
the subscriptions (projections and the transfer process) lag behind the
event table and how many partitions are stopped by an error; those do not
change the status code, because taking web processes out of a load balancer
would not make workers catch up. Unauthenticated and cheap: meant to be
polled every few seconds.

Why a check failed (the error's text, which names hosts, ports, the
database role or a stream) is logged, and shown only to signed-in staff,
or to anyone with DEBUG on: otherwise a caller sees ``ok: false``.
"""

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from eventstore.errors import PartitionCountMismatch
from eventstore.store import partition_count
from eventstore.subscriptions import subscription_status

from .celery import app as celery_app

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2


@never_cache
@require_safe  # GET, and HEAD for load balancers that probe with it
def healthz(request: HttpRequest) -> JsonResponse:
    """Report the database, the broker and the subscriptions' lag."""
    database = _check(_ping_database)
    broker = (
        {"ok": True, "mode": "eager (tasks run in-process)"}
        if settings.CELERY_TASK_ALWAYS_EAGER
        # Whatever stops kombu from connecting (a URL it cannot parse raises
        # ValueError or KeyError) makes the broker unusable from here.
        else _check(_ping_broker, failures=(Exception,))
    )
    body = {"database": database, "broker": broker}
    if database["ok"]:
        body["subscriptions"] = _check(_subscription_lag)
    healthy = database["ok"] and broker["ok"]
    body["status"] = "ok" if healthy else "unavailable"
    if not (settings.DEBUG or _is_staff(request)):
        for check in body.values():
            if isinstance(check, dict):
                check.pop("error", None)
    return JsonResponse(body, status=200 if healthy else 503)


def _is_staff(request: HttpRequest) -> bool:
    """Whether the caller is signed-in staff: not known, so not, while the
    database (where the session and the user are read) fails."""
    try:
        return request.user.is_staff
    except DatabaseError:
        return False


def _check(probe, failures=(DatabaseError, OSError, PartitionCountMismatch)) -> dict:
    started = time.monotonic()
    try:
        result = {"ok": True, **probe()}
    except failures as error:
        logger.warning("health check %s failed: %s", probe.__name__, error)
        result = {
            "ok": False,
            "error": (str(error).strip() or repr(error)).splitlines()[0],
        }
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _ping_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        partitions = partition_count()
    except DatabaseError:
        # Drop a broken connection so the next probe reconnects.
        connection.close()
        raise
    return {"vendor": connection.vendor, "partitions": partitions}


def _ping_broker() -> dict:
    with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as broker:
        broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    return {}


def _subscription_lag() -> dict:
    statuses = subscription_status()
    lags = [status.lag for status in statuses]
    return {
        "lag": sum(lags),
        "max_partition_lag": max(lags, default=0),
        "stopped_partitions": sum(1 for s in statuses if s.failed_sequence is not None),
    }
