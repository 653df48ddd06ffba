"""``./run.sh`` with neither PostgreSQL nor Redis reachable: the embedded mode."""

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from .servers import (
    ROOT,
    clean_environment,
    closed_port,
    free_port,
    request,
    start,
    stop,
    wait_for_http,
)


def test_run_sh_falls_back_to_sqlite_serves_and_stops_cleanly(tmp_path):
    """Bring it up with closed ports, use the API as the teller, press Ctrl-C."""
    port = free_port()
    log = tmp_path / "run.log"
    with closed_port() as database_port, closed_port() as broker_port:
        env = clean_environment(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{database_port}/bank",
            CELERY_BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
            SQLITE_PATH=str(tmp_path / "bank.sqlite3"),
            DEMO_TRANSFERS="3",
        )
        process = start([str(ROOT / "run.sh"), "--port", str(port)], env, log)
        try:
            status, _, body = wait_for_http(
                f"http://127.0.0.1:{port}/healthz", process, log
            )
            assert status == 200, body
            health = json.loads(body)
            assert health["database"]["vendor"] == "sqlite"
            assert "eager" in health["broker"]["mode"]
            banner = wait_for_output(log, "Ctrl-C stops everything", process)
            deposited = deposit_as_the_teller(f"http://127.0.0.1:{port}", banner)
        finally:
            # Ctrl-C: SIGINT to the whole foreground process group.
            returncode = stop(process, signal.SIGINT)

    output = log.read_text()
    assert "installing" not in output  # the existing .venv is reused
    embedded = [line for line in output.splitlines() if "embedded mode" in line]
    assert len(embedded) == 1 and "SQLite" in embedded[0]
    assert f"http://127.0.0.1:{port}/admin/" in banner
    assert f"http://127.0.0.1:{port}/api/docs/" in banner
    assert output.rstrip().endswith("==> stopped"), output[-2000:]
    assert returncode == 130
    assert not processes_in_group(process.pid)
    assert deposited["balance"] == 1234


def deposit_as_the_teller(base: str, banner: str) -> dict:
    """Open an account for a demo customer and deposit into it, as the teller."""
    token = re.search(r"teller .* token (\w+)", banner).group(1)
    headers = {"Authorization": f"Token {token}"}
    status, _, body = request(
        f"{base}/api/accounts/",
        method="POST",
        data={"currency": "EUR", "owner": "alice"},
        headers=headers,
    )
    assert status == 201, body
    account = json.loads(body)
    status, _, body = request(
        f"{base}/api/accounts/{account['id']}/deposit/",
        method="POST",
        data={"amount": 1234},
        headers=headers,
    )
    assert status == 200, body
    return json.loads(body)


def wait_for_output(log, text: str, process, timeout=30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log.read_text()
        if text in output:
            return output
        assert process.poll() is None, output
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not printed:\n{log.read_text()}")


def processes_in_group(pgid: int) -> list[str]:
    listing = subprocess.run(
        ["ps", "-o", "pid=,pgid=,args=", "-e"], capture_output=True, text=True
    ).stdout
    return [line for line in listing.splitlines() if int(line.split()[1]) == pgid]


@pytest.fixture(scope="module")
def run_sh_on_a_sqlite_url_never_healthy(tmp_path_factory):
    """Run ./run.sh on a SQLite DATABASE_URL, where /healthz never answers 200.

    127.0.0.1 is not an allowed host, so every health probe answers 400.
    Return (status, output, the given database, the default embedded one).
    """
    directory = tmp_path_factory.mktemp("never-healthy")
    given = directory / "given.sqlite3"
    fallback = directory / "fallback.sqlite3"
    log = directory / "run.log"
    with closed_port() as broker_port:
        env = clean_environment(
            DATABASE_URL=f"sqlite:///{given}",
            CELERY_BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
            SQLITE_PATH=str(fallback),
            ALLOWED_HOSTS="bank.example.com",
            HEALTH_WAIT_SECONDS="3",
            DEMO_DATA="0",
        )
        process = start([str(ROOT / "run.sh"), "--port", str(free_port())], env, log)
        try:
            deadline = time.monotonic() + 120
            while process.poll() is None and time.monotonic() < deadline:
                if "Ctrl-C stops everything" in log.read_text():
                    break  # it says the bank is up: no reason to wait longer
                time.sleep(0.2)
        finally:
            returncode = stop(process, signal.SIGINT)
    return returncode, log.read_text(), given, fallback, process.pid


def test_run_sh_keeps_a_sqlite_database_url_as_given(
    run_sh_on_a_sqlite_url_never_healthy,
):
    _, output, given, fallback, _ = run_sh_on_a_sqlite_url_never_healthy

    with sqlite3.connect(given) as database:
        (migrations,) = database.execute(
            "SELECT count(*) FROM django_migrations"
        ).fetchone()
    assert migrations > 0
    assert not fallback.exists()
    embedded = [line for line in output.splitlines() if "embedded mode" in line]
    assert len(embedded) == 1 and str(given) in embedded[0], output[-2000:]


def test_run_sh_that_never_gets_healthy_says_so_stops_and_fails(
    run_sh_on_a_sqlite_url_never_healthy,
):
    returncode, output, _, _, pid = run_sh_on_a_sqlite_url_never_healthy

    assert "The bank is up" not in output
    assert "not healthy" in output, output[-2000:]
    assert output.rstrip().endswith("==> stopped"), output[-2000:]
    assert returncode == 1
    assert not processes_in_group(pid)


def run_sh_function(name: str, **env: str) -> subprocess.CompletedProcess:
    """Run one function of run.sh by itself, cut out of the script."""
    return subprocess.run(
        ["bash", "-c", f'source <(sed -n "/^{name}() {{/,/^}}/p" run.sh) && {name}'],
        cwd=ROOT,
        env=clean_environment(PY=sys.executable, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("debug", ["0", "False", "no", "OFF", " false "])
def test_run_sh_reads_debug_as_off_as_the_settings_do(debug):
    result = run_sh_function("debug_is_off", DEBUG=debug, SECRET_KEY="k" * 50)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("debug", ["1", "True", "yes", "on"])
def test_run_sh_reads_debug_as_on_as_the_settings_do(debug):
    result = run_sh_function("debug_is_off", DEBUG=debug)

    assert result.returncode == 1, result.stderr


def test_run_sh_with_debug_off_skips_the_demo_data_and_goes_on(tmp_path):
    """The demo data's passwords are known: load_demo_data refuses with DEBUG off.

    Only run.sh's demo-data step (and ``debug_is_off``, which it calls) runs.
    """
    steps = '/^debug_is_off() {/,/^}/p; /^credentials=""$/,/^fi$/p'
    result = subprocess.run(
        [
            "bash",
            "-c",
            'set -euo pipefail; say() { echo "==> $*"; }; '
            f"source <(sed -n '{steps}' run.sh); echo went-on",
        ],
        cwd=ROOT,
        env=clean_environment(
            PY=sys.executable,
            DEBUG="0",
            SECRET_KEY="k" * 50,
            DATABASE_URL=f"sqlite:///{tmp_path / 'bank.sqlite3'}",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )

    lines = result.stdout.splitlines()
    assert lines[-1:] == ["went-on"], result.stdout + result.stderr
    (said,) = lines[:-1]
    assert said.startswith("==> no demo data") and "DEBUG off" in said, said
    assert "DEBUG=1" in said  # how to get it


def test_run_sh_stops_on_a_malformed_database_url_instead_of_running_embedded(
    tmp_path,
):
    sqlite_path = tmp_path / "bank.sqlite3"
    env = clean_environment(
        DATABASE_URL="postgres//postgres@127.0.0.1:5432/bank",  # no colon
        SQLITE_PATH=str(sqlite_path),
    )

    log = tmp_path / "run.log"
    process = start([str(ROOT / "run.sh"), "--port", str(free_port())], env, log)
    try:
        returncode = process.wait(timeout=120)
    finally:
        stop(process)  # one that went embedded serves on: stop its whole group

    output = log.read_text()
    assert returncode == 1
    assert "the settings are wrong: DATABASE_URL is malformed" in output
    assert "embedded mode" not in output
    assert not sqlite_path.exists()
