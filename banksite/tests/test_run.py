"""``./run.sh`` with neither PostgreSQL nor Redis reachable: the embedded mode."""

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import termios
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

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


@contextlib.contextmanager
def embedded_environment(tmp_path, **overrides):
    """Yield the environment of a run.sh that runs embedded, without demo data:
    PostgreSQL and Redis on ports that refuse connections."""
    with closed_port() as database_port, closed_port() as broker_port:
        yield clean_environment(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{database_port}/bank",
            CELERY_BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
            SQLITE_PATH=str(tmp_path / "bank.sqlite3"),
            DEMO_DATA="0",
            **overrides,
        )


class AlwaysHealthy(BaseHTTPRequestHandler):
    """Another server on the port: answers 200 to anything."""

    def do_GET(self):
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def another_server(port=0):
    """Serve AlwaysHealthy on 127.0.0.1:``port`` (any free one for 0); yield it."""
    server = HTTPServer(("127.0.0.1", port), AlwaysHealthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_run_sh_on_a_port_in_use_refuses_before_starting_anything(tmp_path):
    """Another server (say a first ./run.sh) already serves on the port."""
    log = tmp_path / "run.log"
    with another_server() as other, embedded_environment(tmp_path) as env:
        port = other.server_address[1]
        process = start([str(ROOT / "run.sh"), "--port", str(port)], env, log)
        try:
            returncode = process.wait(timeout=60)
        finally:
            stop(process, signal.SIGINT)

    output = log.read_text()
    assert returncode == 1, output[-3000:]
    assert output.splitlines()[-1:] == [
        f"==> port {port} on 127.0.0.1 is in use (is the bank running already?):"
        " choose another with --port"
    ], output[-3000:]
    assert "The bank is up" not in output
    assert "migrating" not in output
    assert not (tmp_path / "bank.sqlite3").exists()
    assert not processes_in_group(process.pid)


def test_run_sh_whose_web_server_cannot_bind_does_not_trust_another_server(
    tmp_path,
):
    """The port is free when run.sh looks, taken by the time gunicorn binds.

    gunicorn retries for seconds before it gives up; meanwhile /healthz on the
    port answers 200, from the other server.
    """
    port = free_port()
    log = tmp_path / "run.log"
    with embedded_environment(tmp_path, HEALTH_WAIT_SECONDS="30") as env:
        process = start([str(ROOT / "run.sh"), "--port", str(port)], env, log)
        try:
            wait_for_output(log, "==> migrating", process)
            with another_server(port):
                returncode = process.wait(timeout=120)
        finally:
            stop(process, signal.SIGINT)

    output = log.read_text()
    assert "The bank is up" not in output, output[-3000:]
    assert "==> gunicorn exited before it was healthy" in output, output[-3000:]
    assert output.rstrip().endswith("==> stopped"), output[-3000:]
    assert returncode == 1
    assert not processes_in_group(process.pid)


@pytest.mark.parametrize(
    ("arguments", "environment", "port"),
    [
        (["--port", "99999"], {}, "99999"),
        (["--port", "65536"], {}, "65536"),
        (["--port=0"], {}, "0"),
        (["--port", "abc"], {}, "abc"),
        ([], {"PORT": "99999"}, "99999"),
    ],
)
def test_run_sh_refuses_a_port_that_is_not_one(tmp_path, arguments, environment, port):
    """One line that says why, before anything starts (not gunicorn's traceback)."""
    log = tmp_path / "run.log"
    with embedded_environment(tmp_path, HEALTH_WAIT_SECONDS="5", **environment) as env:
        process = start([str(ROOT / "run.sh"), *arguments], env, log)
        try:
            returncode = process.wait(timeout=60)
        finally:
            stop(process)  # one that took the port started things: stop them

    assert returncode == 2, log.read_text()[-3000:]
    assert log.read_text().splitlines() == [
        "run.sh: the port (--port or PORT) must be a number from 1 to 65535,"
        f" not {port}"
    ]
    assert not (tmp_path / "bank.sqlite3").exists()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("0.0.0.0", "127.0.0.1"),
        pytest.param(
            "::",
            "[::1]",
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 ::1"),
        ),
    ],
)
def test_run_sh_listening_on_all_addresses_probes_and_shows_the_loopback(
    tmp_path, host, shown
):
    """``HOST=0.0.0.0 ./run.sh``: http://0.0.0.0:PORT/ is no URL to use, and
    its Host header is not an allowed host (every probe would answer 400)."""
    port = free_port()
    log = tmp_path / "run.log"
    with embedded_environment(tmp_path, HOST=host, HEALTH_WAIT_SECONDS="30") as env:
        process = start([str(ROOT / "run.sh"), "--port", str(port)], env, log)
        try:
            banner = wait_for_output(log, "Ctrl-C stops everything", process, 120)
            status, _, body = request(f"http://{shown}:{port}/healthz")
        finally:
            returncode = stop(process, signal.SIGINT)

    assert status == 200, body
    assert f"Admin:     http://{shown}:{port}/admin/" in banner
    assert f"Health:    http://{shown}:{port}/healthz" in banner
    output = log.read_text()
    assert "not healthy" not in output
    assert "DisallowedHost" not in output
    assert returncode == 130, output[-3000:]


def test_run_sh_stops_everything_when_its_terminal_closes(tmp_path):
    """SIGHUP, and a terminal that is gone: saying "stopping" fails.

    gunicorn would reload on the SIGHUP that follows, and nothing would stop
    it and the sweeper any more.
    """
    terminal, run_sh_side = os.openpty()
    with embedded_environment(tmp_path) as env:
        process = subprocess.Popen(
            [str(ROOT / "run.sh"), "--port", str(free_port())],
            cwd=ROOT,
            env=env,
            stdin=run_sh_side,
            stdout=run_sh_side,
            stderr=run_sh_side,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
    os.close(run_sh_side)
    try:
        output = read_terminal_until(terminal, b"Ctrl-C stops everything", 120)
        os.close(terminal)  # the terminal window closes: a hangup
        terminal = None
        returncode = process.wait(timeout=60)
        time.sleep(1)  # for what run.sh left behind to show in ps
        left = processes_in_group(process.pid)
    finally:
        if terminal is not None:
            os.close(terminal)
        stop(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what it left behind

    assert not left, output.decode(errors="replace")[-3000:]
    assert returncode == 129


def read_terminal_until(terminal: int, text: bytes, timeout: float) -> bytes:
    """Return what was written to the terminal up to ``text``."""
    output = b""
    deadline = time.monotonic() + timeout
    while text not in output:
        assert time.monotonic() < deadline, output.decode(errors="replace")
        if select.select([terminal], [], [], 0.2)[0]:
            try:
                output += os.read(terminal, 65536)
            except OSError:  # EIO: everything on its side closed it
                raise AssertionError(output.decode(errors="replace")) from None
    return output
