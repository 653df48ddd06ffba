"""Settings for the test suite: the real PostgreSQL and Redis, isolated.

The broker uses its own Redis database and a queue named per test run, so a
test worker never takes another run's (or a developer's) tasks.
"""

import os
import uuid

os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"test-{uuid.uuid4().hex[:12]}")

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EVENTSTORE_PARTITIONS = 8

INSTALLED_APPS = [*INSTALLED_APPS, "eventstore.tests.testapp"]  # noqa: F405

# Each test process counts its own throttling (tests reset it), and static
# files need no `collectstatic` manifest (nor a warning about its directory).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True
