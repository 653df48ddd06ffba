"""The bank's settings plus the baseline app (``python -m bench.api`` only)."""

from banksite.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench.apibaseline"]  # noqa: F405
ROOT_URLCONF = "bench.apibaseline.urls"
