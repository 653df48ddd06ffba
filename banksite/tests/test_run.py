"""``./run.sh`` with neither PostgreSQL nor Redis reachable: the embedded mode."""

import json
import re
import signal
import subprocess
import time

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
