"""The store also works on SQLite, the run command's embedded fallback."""

import json
import os
import subprocess
import sys
from pathlib import Path

from eventstore.tests.testapp.models import Handled, Tally


def run_on_sqlite(module: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``python -m module`` on a new SQLite database, tasks in-process."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "banksite.test_settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bank.sqlite3'}",
        "CELERY_TASK_ALWAYS_EAGER": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )


def test_append_read_load_and_subscriptions_work_on_sqlite(tmp_path):
    result = run_on_sqlite("eventstore.tests.sqlite_smoke", tmp_path)

    assert result.returncode == 0, result.stderr
    assert "sqlite smoke ok" in result.stdout


def test_verification_compares_read_models_on_sqlite(tmp_path):
    # SQLite has no EXCEPT ALL: the command, "Verify now" and the comparison
    # must work (and count duplicates) without it.
    result = run_on_sqlite("eventstore.tests.sqlite_verification", tmp_path)

    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert out["clean"]["outcome"] == "ok", out["clean"]
    assert out["command"] == "ok"
    assert out["page_runs"] == ["ok"]
    assert out["page_messages"] == [
        "The verification of testapp.tallies has run: OK; its result is below."
    ]
    drift = out["drift"]
    assert drift["outcome"] == "drift", drift
    assert drift["differences"] == 4  # one row changed (both ways), one gone, one twice
    tally = drift["tables"][Tally._meta.db_table]
    assert (tally["live_only"], tally["shadow_only"]) == (1, 2)
    assert tally["live_only_sample"][0]["total"] == -1
    handled = drift["tables"][Handled._meta.db_table]
    assert (handled["live_only"], handled["shadow_only"]) == (1, 0)
