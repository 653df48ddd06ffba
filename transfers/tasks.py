"""Celery tasks of transfers.

There are none of its own: the process manager and the read models run as
event store subscriptions, driven by ``eventstore.tasks`` (a nudge after each
append, and the periodic sweep).
"""
