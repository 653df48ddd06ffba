"""Settings read from the environment, as README's "Configuration" lists them."""

import re

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured

from .servers import ROOT, settings_from_environment


def test_with_no_proxies_x_forwarded_for_is_not_trusted():
    settings = settings_from_environment()

    assert settings["REST_FRAMEWORK"]["NUM_PROXIES"] == 0


def test_the_number_of_proxies_is_read_from_the_environment():
    settings = settings_from_environment(NUM_PROXIES="2")

    assert settings["REST_FRAMEWORK"]["NUM_PROXIES"] == 2


def test_alert_mail_is_configured_from_the_environment():
    settings = settings_from_environment(
        EMAIL_HOST="smtp.example.com",
        EMAIL_PORT="587",
        EMAIL_HOST_USER="bank",
        EMAIL_HOST_PASSWORD="mail-secret",
        EMAIL_USE_TLS="1",
        DEFAULT_FROM_EMAIL="bank@example.com",
        SERVER_EMAIL="alerts@example.com",
    )

    assert settings["EMAIL_HOST"] == "smtp.example.com"
    assert settings["EMAIL_PORT"] == 587
    assert settings["EMAIL_HOST_USER"] == "bank"
    assert settings["EMAIL_HOST_PASSWORD"] == "mail-secret"
    assert settings["EMAIL_USE_TLS"] is True
    assert settings["DEFAULT_FROM_EMAIL"] == "bank@example.com"
    assert settings["SERVER_EMAIL"] == "alerts@example.com"


def test_alert_mail_settings_keep_django_defaults():
    from django.conf import global_settings

    settings = settings_from_environment()

    for name in (
        "EMAIL_HOST",
        "EMAIL_PORT",
        "EMAIL_HOST_USER",
        "EMAIL_HOST_PASSWORD",
        "EMAIL_USE_TLS",
        "DEFAULT_FROM_EMAIL",
        "SERVER_EMAIL",
    ):
        assert settings[name] == getattr(global_settings, name), name


def test_when_a_transfer_is_stuck_is_read_from_the_environment():
    default = settings_from_environment()
    configured = settings_from_environment(TRANSFERS_STUCK_AFTER_SECONDS="60")

    assert default["TRANSFERS_STUCK_AFTER_SECONDS"] == 300
    assert configured["TRANSFERS_STUCK_AFTER_SECONDS"] == 60


def database_options(**env: str) -> dict:
    return settings_from_environment(**env)["DATABASES"]["default"]["OPTIONS"]


def test_database_url_options_are_kept_beside_the_timeouts():
    options = database_options(
        DATABASE_URL="postgres://bank@db.example.com/bank"
        "?options=-c%20search_path%3Dbank&connect_timeout=10&sslmode=require"
    )

    assert options["options"].startswith("-c search_path=bank ")
    assert "-c statement_timeout=60000" in options["options"]
    assert "-c idle_in_transaction_session_timeout=60000" in options["options"]
    assert options["connect_timeout"] == 10
    assert options["sslmode"] == "require"


def test_database_connect_timeout_from_the_environment_wins_over_the_url():
    options = database_options(
        DATABASE_URL="postgres://bank@db.example.com/bank?connect_timeout=10",
        DATABASE_CONNECT_TIMEOUT="3",
    )

    assert options["connect_timeout"] == 3


def test_test_workers_get_the_database_url_with_its_password_and_options(
    settings,
):
    from conftest import database_url

    settings.DATABASE_URL = (
        "postgres://bank:p%40ss@db.example.com:5433/bank?sslmode=require"
    )

    assert database_url("test_bank_gw1") == (
        "postgres://bank:p%40ss@db.example.com:5433/test_bank_gw1?sslmode=require"
    )


def test_session_timeouts_are_read_from_the_environment():
    options = database_options(
        DATABASE_STATEMENT_TIMEOUT_MS="1500",
        DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS="0",
    )

    assert "-c statement_timeout=1500" in options["options"]
    assert "-c idle_in_transaction_session_timeout=0" in options["options"]


def test_how_long_a_session_waits_for_a_lock_is_read_from_the_environment():
    # A hung worker holds its partitions' locks for up to a minute: a
    # request waiting for one answers 503 after this, not a minute later.
    default = database_options()["options"]
    configured = database_options(DATABASE_LOCK_TIMEOUT_MS="500")["options"]
    off = database_options(DATABASE_LOCK_TIMEOUT_MS="0")["options"]

    assert "-c lock_timeout=10000" in default
    assert "-c lock_timeout=500" in configured
    assert "-c lock_timeout=0" in off


@pytest.mark.parametrize(
    ("value", "refusal"),
    [("-1", "is below its minimum, 0"), (str(2**31), "is above its maximum")],
)
def test_a_lock_timeout_postgresql_cannot_take_is_refused_naming_it(value, refusal):
    with pytest.raises(
        ImproperlyConfigured, match=f"^DATABASE_LOCK_TIMEOUT_MS='{value}' {refusal}"
    ):
        settings_from_environment(DATABASE_LOCK_TIMEOUT_MS=value)


def test_gunicorn_lets_a_request_outlast_its_longest_statement():
    # Killed by gunicorn first (30 s by default), a request waiting on a slow
    # statement answers gunicorn's HTML 500 instead of the API's JSON 503.
    options = database_options()["options"]
    statement_seconds = int(re.search(r"statement_timeout=(\d+)", options)[1]) / 1000
    run_sh = (ROOT / "run.sh").read_text()
    readme_line = next(
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.strip().startswith("gunicorn ")
    )

    for command in (run_sh, readme_line):
        timeout = re.search(r"--timeout (\d+)", command)
        assert timeout, command
        assert int(timeout[1]) > statement_seconds


@pytest.mark.parametrize(
    "name",
    [
        "DATABASE_CONNECT_TIMEOUT",
        "DATABASE_JOB_STATEMENT_TIMEOUT_MS",
        "EVENTSTORE_PARTITIONS",
        "SECURE_HSTS_SECONDS",
        "TRANSFERS_STUCK_AFTER_SECONDS",
        "NUM_PROXIES",
        "API_MAX_BODY_BYTES",
        "IDEMPOTENCY_KEY_TTL_HOURS",
        "EMAIL_PORT",
    ],
)
def test_a_number_setting_that_is_not_a_whole_number_is_refused_naming_it(name):
    with pytest.raises(ImproperlyConfigured, match=f"^{name}='5s' is not a whole"):
        settings_from_environment(**{name: "5s"})


@pytest.mark.parametrize(
    "name",
    [
        "DATABASE_STATEMENT_TIMEOUT_MS",
        "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        "DATABASE_LOCK_TIMEOUT_MS",
    ],
)
def test_a_session_timeout_that_is_not_a_number_is_refused_naming_it(name):
    # Pasted into the connection options, it would pass the start and then
    # have PostgreSQL refuse every connection.
    with pytest.raises(ImproperlyConfigured, match=f"^{name}='1min'"):
        settings_from_environment(**{name: "1min"})


@pytest.mark.parametrize(
    ("name", "beyond"),
    [
        # Each would end past the year 9999: every keyed POST, or the
        # operations page, answered 500.
        ("IDEMPOTENCY_KEY_TTL_HOURS", str(10 * 365 * 24 + 1)),
        ("TRANSFERS_STUCK_AFTER_SECONDS", "100000000000"),
        ("SESSION_HOURS", str(14 * 24 + 1)),
    ],
)
def test_a_duration_setting_beyond_its_maximum_is_refused_naming_it(name, beyond):
    with pytest.raises(ImproperlyConfigured, match=f"^{name}='{beyond}' is above"):
        settings_from_environment(**{name: beyond})


def test_a_back_office_login_lasts_a_working_day_unless_set():
    assert settings_from_environment()["SESSION_COOKIE_AGE"] == 8 * 3600
    assert settings_from_environment(SESSION_HOURS="2")["SESSION_COOKIE_AGE"] == 7200


@pytest.mark.parametrize("count", ["0", "-4"])
def test_a_partition_count_below_one_is_refused(count):
    with pytest.raises(ImproperlyConfigured, match="^EVENTSTORE_PARTITIONS="):
        settings_from_environment(EVENTSTORE_PARTITIONS=count)


@pytest.mark.parametrize("seconds", ["5s", "0", "0.5", "2.5", "nan", "inf"])
def test_a_sweep_interval_that_is_not_whole_seconds_is_refused(seconds):
    # django-celery-beat stores intervals in whole seconds: 0.5 would be 0.
    with pytest.raises(ImproperlyConfigured, match="^EVENTSTORE_SWEEP_SECONDS="):
        settings_from_environment(EVENTSTORE_SWEEP_SECONDS=seconds)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "postgres//postgres@127.0.0.1:5432/bank",
        "postgres://bank:s3cret@db.example.com:port/bank",
    ],
)
def test_a_malformed_database_url_is_refused_naming_it_without_its_password(url):
    with pytest.raises(
        ImproperlyConfigured, match="^DATABASE_URL is malformed"
    ) as refused:
        settings_from_environment(DATABASE_URL=url)

    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("value", ["ture", "enabled", "2", ""])
def test_debug_that_is_neither_on_nor_off_is_refused(value):
    with pytest.raises(ImproperlyConfigured, match="^DEBUG=") as refused:
        settings_from_environment(DEBUG=value, SECRET_KEY="k" * 50)

    assert "1, true, yes, on or 0, false, no, off" in str(refused.value)


def test_a_broker_url_with_an_unknown_transport_is_refused():
    with pytest.raises(ImproperlyConfigured, match="^CELERY_BROKER_URL .*reddis"):
        settings_from_environment(CELERY_BROKER_URL="reddis://127.0.0.1:6379/0")


def test_the_broker_url_is_not_checked_when_tasks_run_in_process():
    settings = settings_from_environment(
        CELERY_BROKER_URL="reddis://127.0.0.1:6379/0", CELERY_TASK_ALWAYS_EAGER="1"
    )

    assert settings["CELERY_TASK_ALWAYS_EAGER"] is True


@pytest.mark.django_db
@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/"])
def test_a_login_whose_next_is_off_the_site_goes_to_the_back_office(client, next_url):
    User.objects.create_user("tina", password="teller-pw-42", is_staff=True)

    response = client.post(
        f"/admin/login/?next={next_url}",
        {"username": "tina", "password": "teller-pw-42", "next": next_url},
    )

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
