from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        # Registers the event classes and the read-model subscription, so the
        # web process and every Celery worker know them.
        from . import events, projections  # noqa: F401
