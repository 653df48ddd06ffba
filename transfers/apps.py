from django.apps import AppConfig


class TransfersConfig(AppConfig):
    name = "transfers"
    verbose_name = "Transfers"

    def ready(self):
        # Register the subscriptions (the process manager and the read models)
        # in every process, workers included.
        from . import process, projections  # noqa: F401
