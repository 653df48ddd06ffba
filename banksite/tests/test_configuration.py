"""Settings read from the environment, as README's "Configuration" lists them."""

from .servers import settings_from_environment


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
