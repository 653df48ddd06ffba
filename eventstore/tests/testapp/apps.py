from django.apps import AppConfig


class EventStoreTestAppConfig(AppConfig):
    """A tiny app that uses the event store, for the event store's own tests.

    It is installed only by ``banksite.test_settings``, so the Celery worker
    that the tests start knows its events and its subscription.
    """

    name = "eventstore.tests.testapp"
    label = "eventstore_testapp"

    def ready(self):
        from . import projections  # noqa: F401
