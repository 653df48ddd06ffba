"""``python -m banksite.preflight``: run.sh's choice between PostgreSQL and
Redis or the embedded mode, without hanging and without printing secrets."""

import os
import subprocess
import sys

import pytest

from banksite.preflight import Unreachable, check_broker

from .servers import ROOT, closed_port, hung_port, returns_within


def test_an_unreachable_broker_is_named_without_its_password():
    with closed_port() as port, pytest.raises(Unreachable) as reason:
        check_broker(f"redis://:s3cret-pw@127.0.0.1:{port}/0")

    assert "s3cret-pw" not in str(reason.value)
    assert f"redis://:**@127.0.0.1:{port}/0" in str(reason.value)


def test_a_hung_broker_is_unreachable():
    with hung_port() as port, pytest.raises(Unreachable) as reason:
        returns_within(30, lambda: check_broker(f"redis://127.0.0.1:{port}/0"))

    assert "timeout" in str(reason.value).lower()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:port/bank"),
        ("CELERY_BROKER_URL", "reddis://127.0.0.1:6379/0"),
    ],
)
def test_a_malformed_setting_exits_2_naming_it_not_1_as_unreachable(name, value):
    result = subprocess.run(
        [sys.executable, "-m", "banksite.preflight"],
        env={**os.environ, name: value, "DJANGO_SETTINGS_MODULE": "banksite.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stdout.startswith(f"the settings are wrong: {name} is malformed")
