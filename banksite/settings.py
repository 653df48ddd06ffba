"""Settings for the bank, read once from the environment.

Every value has a default that works on a developer machine (PostgreSQL and
Redis on localhost). ``DATABASE_URL=sqlite:///...`` selects the embedded
fallback; ``CELERY_TASK_ALWAYS_EAGER=1`` runs tasks in-process.
"""

import logging
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Connection

BASE_DIR = Path(__file__).resolve().parent.parent


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def env_bool(name: str, default: bool) -> bool:
    """Return the boolean in the environment variable ``name``, or ``default``.

    A word that is neither on nor off is refused rather than taken as off:
    ``DEBUG=ture`` must not start the site in production mode.
    """
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is neither on nor off: use {', '.join(TRUE_WORDS)} or"
        f" {', '.join(FALSE_WORDS)} (any case)."
    )


def env_int(
    name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    """Return the whole number in the environment variable ``name``, or ``default``.

    Refuse anything else at start-up, naming the variable, instead of a bare
    ``ValueError`` (or, pasted into the connection options, a database that
    refuses every connection).
    """
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a whole number (the default is {default})."
        ) from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} is below its minimum, {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={value!r} is above its maximum, {maximum}.")
    return number


def database_from_url(url: str) -> dict:
    """Return the ``DATABASES`` entry for ``DATABASE_URL``, refusing a malformed one.

    The URL is not quoted back: it may hold a password.
    """
    try:
        return dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except dj_database_url.UnknownSchemeError:
        problem = (
            "it is empty (unset it for the default)"
            if not url.strip()
            else "it does not start with a scheme it knows and ://"
        )
    except ValueError:
        problem = (
            "it is not a valid URL (is the port a number? does the password"
            " need %-quoting?)"
        )
    raise ImproperlyConfigured(
        f"DATABASE_URL is malformed: {problem}. Give one such as"
        " postgres://USER:PASSWORD@HOST:5432/NAME or sqlite:///PATH."
    )


def refuse_malformed_broker_url(url: str) -> None:
    """Refuse a ``CELERY_BROKER_URL`` whose transport or port kombu cannot use.

    kombu resolves both when given the URL, without connecting; otherwise a
    typo shows only when the first task is sent.
    """
    try:
        Connection(url)
    except (KeyError, ValueError, ImportError) as error:
        reason = error.args[0] if error.args else type(error).__name__
        raise ImproperlyConfigured(
            f"CELERY_BROKER_URL is malformed: {reason}"
        ) from None


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "eventstore",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "transfers",
]

MIDDLEWARE = [
    "banksite.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "banksite.middleware.NulCharacterMiddleware",
    "banksite.middleware.ApiNeverCacheMiddleware",
    "banksite.middleware.DatabaseUnavailableMiddleware",
    "banksite.middleware.LoginThrottleMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "banksite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "banksite.wsgi.application"

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bank")
# PostgreSQL's largest timeout, in milliseconds (0 turns a timeout off).
POSTGRESQL_MAX_TIMEOUT_MS = 2**31 - 1
DATABASES = {"default": database_from_url(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes SQLite's write lock at BEGIN, so concurrent writers queue
    # instead of failing half-way through a transaction.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get(
        "TEST_DATABASE_NAME", "test_bank"
    )
    database_options = DATABASES["default"].setdefault("OPTIONS", {})
    # Fail fast (and answer 503) instead of hanging on an unreachable server
    # (libpq waits forever with 0). The variable wins over the URL's option.
    database_options["connect_timeout"] = env_int(
        "DATABASE_CONNECT_TIMEOUT",
        database_options.get("connect_timeout", 5),
        minimum=1,
    )
    # psycopg's default, which Django turns off for connection poolers (none
    # here): a server-side bound statement run a few times on a connection is
    # prepared. That is the event store's append; Django binds its own
    # queries client-side, and those are never prepared.
    database_options["prepare_threshold"] = 5
    # A hung worker must not hold a partition's lease (its checkpoint row
    # lock) or a partition head forever: the server ends such sessions.
    idle_in_transaction_timeout_ms = env_int(
        "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        60000,
        minimum=0,
        maximum=POSTGRESQL_MAX_TIMEOUT_MS,
    )
    statement_timeout_ms = env_int(
        "DATABASE_STATEMENT_TIMEOUT_MS",
        60000,
        minimum=0,
        maximum=POSTGRESQL_MAX_TIMEOUT_MS,
    )
    # A statement waiting for a lock (a partition head a hung worker holds
    # until its session ends, above) gives up sooner than the statement
    # timeout, well within gunicorn's: the request answers 503 ``busy``.
    lock_timeout_ms = env_int(
        "DATABASE_LOCK_TIMEOUT_MS",
        10000,
        minimum=0,
        maximum=POSTGRESQL_MAX_TIMEOUT_MS,
    )
    session_timeouts = (
        f"-c idle_in_transaction_session_timeout={idle_in_transaction_timeout_ms}"
        f" -c statement_timeout={statement_timeout_ms}"
        f" -c lock_timeout={lock_timeout_ms}"
    )
    # After the URL's own ``options`` (a search_path, say), not instead.
    database_options["options"] = " ".join(
        filter(None, [database_options.get("options"), session_timeouts])
    )

# The read-model jobs (verify, repair, the scheduled checks) run statements
# over whole read models and the event table, which take longer as the store
# grows, and wait for the runners' batches: in their own transactions they get
# this statement timeout, and as their lock timeout, instead of the sessions'
# ones above (eventstore.verification, SET LOCAL).
DATABASE_JOB_STATEMENT_TIMEOUT_MS = env_int(
    "DATABASE_JOB_STATEMENT_TIMEOUT_MS",
    3600000,
    minimum=0,
    maximum=POSTGRESQL_MAX_TIMEOUT_MS,
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves static files from the WSGI app (after `collectstatic`);
# with DEBUG on it serves them straight from the apps.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Production hardening (see README, "Configuration"). Cookies are secure
# whenever DEBUG is off; HSTS and the HTTPS redirect are opt-in flags because
# they must match how TLS is terminated in front of the app.
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
# A back-office session moves money: it lasts a working day, not Django's
# two weeks.
SESSION_COOKIE_AGE = env_int("SESSION_HOURS", 8, minimum=1, maximum=14 * 24) * 3600
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    # Only behind a proxy that sets this header and strips it from clients.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = [
    origin.strip()
    for origin in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",")
    if origin.strip()
]

# Redis (the cache and the broker) that stops answering must not hang a
# request or a write: give up after a few seconds (throttling then fails
# open; a nudge not sent is left to the sweep).
REDIS_TIMEOUT_SECONDS = 3

# The cache holds throttling counters, so every web process must share it:
# Redis (by default the broker's) in production, `locmem://` for one process.
CACHE_URL = os.environ.get(
    "CACHE_URL", os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
)
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        if CACHE_URL.startswith("locmem:")
        else {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "bank-cache",
            "OPTIONS": {
                "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                "socket_timeout": REDIS_TIMEOUT_SECONDS,
            },
        }
    )
}

# Logins (admin and the API token endpoint) per client address.
# Where a login goes when its "next" is missing or points off the site: the
# back office, not Django's default /accounts/profile/ (a 404 here).
LOGIN_REDIRECT_URL = "admin:index"
LOGIN_THROTTLE_RATE = os.environ.get("LOGIN_THROTTLE_RATE", "10/min")
LOGIN_USERNAME_THROTTLE_RATE = os.environ.get("LOGIN_USERNAME_THROTTLE_RATE", "30/hour")
LOGIN_THROTTLE_VIEWS = ["admin:login"]

# Celery: Redis is the broker; results are not kept (tasks report through the
# database). Acks come late and are only nudges: correctness never depends on
# a message being delivered exactly once.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    "socket_timeout": REDIS_TIMEOUT_SECONDS,
}
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "bank")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
if not CELERY_TASK_ALWAYS_EAGER:  # eager tasks never reach the broker
    refuse_malformed_broker_url(CELERY_BROKER_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# How long a verification, repair or check job may run (eventstore.verification):
# then it is stopped, recorded as an error and mailed, and its worker process
# is free again. Each of its statements has DATABASE_JOB_STATEMENT_TIMEOUT_MS.
JOB_TIME_LIMIT_SECONDS = env_int("JOB_TIME_LIMIT_SECONDS", 3 * 3600, minimum=60)
# Whole seconds: django-celery-beat stores an interval in an integer column,
# where 0.5 would become 0, a sweep sent on every turn of beat's loop.
EVENTSTORE_SWEEP_SECONDS = env_int("EVENTSTORE_SWEEP_SECONDS", 5, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "eventstore-sweep": {
        "task": "eventstore.tasks.sweep_partitions",
        "schedule": float(EVENTSTORE_SWEEP_SECONDS),
        # A sweep not taken before the next is due is dropped: after the
        # workers were down they would otherwise run every one they missed.
        "options": {"expire_seconds": EVENTSTORE_SWEEP_SECONDS},
    },
    "accounts-purge-idempotency-keys": {
        "task": "accounts.tasks.purge_idempotency_keys",
        "schedule": 3600.0,
    },
}

# REST API (accounts.api and transfers.api). Token authentication comes first
# so that a request without credentials answers 401. Every error is JSON
# {"code", "detail", "fields"?} from one exception handler; bodies are JSON
# only (415 otherwise) and at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes (413).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["accounts.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "accounts.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["banksite.throttling.FailOpenUserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": os.environ.get("API_THROTTLE_RATE", "6000/min"),
    },
    "EXCEPTION_HANDLER": "accounts.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "accounts.api_schema.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # Throttles count per client address. Behind NUM_PROXIES proxies that each
    # append to X-Forwarded-For it is taken from there; with none (0) it is
    # the connection's and the header is ignored: a client may write anything
    # in it, and would pass the login throttle.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0, minimum=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Bank back office API",
    "DESCRIPTION": "Accounts and transfers. Money is an integer of minor units.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The docs page's Swagger UI comes from this site's static files (the
    # pinned drf-spectacular-sidecar), not from a CDN's latest release.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# Django's model backend with a user's permissions loaded in one query.
AUTHENTICATION_BACKENDS = ["accounts.permissions.PermissionBackend"]
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("API_MAX_BODY_BYTES", 262144, minimum=1)
# How long an Idempotency-Key's first answer is kept and replayed.
# At most ten years (a longer one would end past the year 9999).
IDEMPOTENCY_KEY_TTL_HOURS = env_int(
    "IDEMPOTENCY_KEY_TTL_HOURS", 24, minimum=1, maximum=10 * 365 * 24
)

# Transfers pending or debited for longer than this are shown as stuck.
TRANSFERS_STUCK_AFTER_SECONDS = env_int(
    "TRANSFERS_STUCK_AFTER_SECONDS", 300, minimum=1, maximum=10 * 365 * 24 * 3600
)

# Mail, for the alerts to operations staff; Django's defaults otherwise.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# A mail relay that never answers must not hold a job (and its worker) forever.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "webmaster@localhost")
SERVER_EMAIL = os.environ.get("SERVER_EMAIL", "root@localhost")
EMAIL_SUBJECT_PREFIX = "[bank] "

# Event store: the number of partitions is fixed for the life of the event
# table (changing it is an offline operation, see README).
EVENTSTORE_PARTITIONS = env_int("EVENTSTORE_PARTITIONS", 16, minimum=1)

# One line per record with the request id and correlation id of the request
# or event being handled; JSON lines with LOG_FORMAT=json.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text").strip().lower()
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(
        f"LOG_LEVEL={os.environ['LOG_LEVEL']!r} is not a log level: use DEBUG,"
        " INFO, WARNING, ERROR or CRITICAL."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "banksite.logs.ContextFilter"}},
    "formatters": {
        "text": {
            "()": "banksite.logs.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s "
            "[request=%(request_id)s correlation=%(correlation_id)s] %(message)s",
        },
        "json": {"()": "banksite.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            "formatter": "json" if LOG_FORMAT == "json" else "text",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # Django logs 4xx/5xx itself; our request log line already says it.
    "loggers": {"django.request": {"level": "ERROR"}},
}
