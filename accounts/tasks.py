"""Celery tasks of the accounts app: thin, safe to run twice.

The read models are kept by the event store's subscription runner
(``eventstore.tasks``); nothing here moves money.
"""

from celery import shared_task

from . import idempotency


@shared_task(name="accounts.tasks.purge_idempotency_keys", ignore_result=True)
def purge_idempotency_keys() -> int:
    return idempotency.purge_expired_keys()
