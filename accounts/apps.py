from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        # Registers the event classes and the read-model subscription, so the
        # web process and every Celery worker know them, and the signal that
        # revokes tokens.
        from . import authentication, events, projections  # noqa: F401
