"""The Celery app: ``celery -A banksite worker`` and ``celery -A banksite beat``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "banksite.settings")

app = Celery("banksite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
