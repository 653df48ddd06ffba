"""For tests: the real web server or ``run.sh`` in a subprocess, closed and
hung ports to point things at, and the settings an environment makes."""

import contextlib
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def closed_port():
    """Yield a port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def hung_port():
    """Yield a port that takes connections and never answers: a hung server.

    The kernel completes the handshakes into the listen backlog; nothing ever
    reads what is sent.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def returns_within(seconds: float, call):
    """Return ``call()``, failing if it has not returned after ``seconds``.

    The call runs in a thread, so a hang fails the test instead of blocking
    it; the thread's database connection is closed when it ends.
    """
    from django.db import connections

    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed back to the test
            outcome["error"] = error
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def settings_from_environment(**env: str) -> dict:
    """Return the names ``banksite/settings.py`` defines with only ``env`` set."""
    with mock.patch.dict(os.environ, env, clear=True):
        return runpy.run_path(str(ROOT / "banksite" / "settings.py"))


def clean_environment(**overrides) -> dict:
    """Return the environment for a process run as a user would run it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "CELERY_TASK_DEFAULT_QUEUE"}
    }
    env.update(overrides)
    return env


def request(url: str, *, method="GET", data=None, headers=None, timeout=10):
    """Return (status, headers, body) for one HTTP request; errors included."""
    body = None
    headers = dict(headers or {})
    if data is not None:
        body = json.dumps(data).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}:\n{log.read_text()}")
        try:
            return request(url, timeout=2)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not up in {timeout}s:\n{log.read_text()}")


def stop(process: subprocess.Popen, sig=signal.SIGTERM, timeout=30) -> int:
    """Signal a process's whole group and wait; kill it if it hangs."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    return process.returncode


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def gunicorn(port: int, env: dict, log: Path) -> subprocess.Popen:
    return start(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "banksite.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--no-control-socket",
        ],
        env,
        log,
    )
