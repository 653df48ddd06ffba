"""The embedded mode's stand-in for Celery beat: catch up every few seconds.

With ``CELERY_TASK_ALWAYS_EAGER`` (SQLite, no broker) appends run their
subscription handlers in-process right after commit, so events are handled
at once. What is left for a periodic job is a partition stopped by a failing
handler, whose retry is due later: ``python -m banksite.sweeper`` runs the
in-process runner (``eventstore.subscriptions.catch_up``) every
``EVENTSTORE_SWEEP_SECONDS`` until SIGTERM or SIGINT.
"""

import logging
import os
import signal
import threading

import django

logger = logging.getLogger("banksite.sweeper")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "banksite.settings")
    django.setup()
    from django.db import DatabaseError, close_old_connections

    from eventstore.subscriptions import catch_up

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    interval = float(os.environ.get("EVENTSTORE_SWEEP_SECONDS", "5"))
    logger.info("sweeping every %ss in-process", interval)
    while not stop.wait(interval):
        try:
            handled = catch_up()
        except DatabaseError:
            # Locked or briefly unavailable: the next round tries again.
            logger.exception("sweep failed")
            handled = 0
        finally:
            close_old_connections()
        if handled:
            logger.info("sweep handled %s events", handled)


if __name__ == "__main__":
    main()
