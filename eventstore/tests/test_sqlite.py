"""The store also works on SQLite, the run command's embedded fallback."""

import os
import subprocess
import sys
from pathlib import Path


def test_append_read_load_and_subscriptions_work_on_sqlite(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "banksite.test_settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bank.sqlite3'}",
        "CELERY_TASK_ALWAYS_EAGER": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "eventstore.tests.sqlite_smoke"],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "sqlite smoke ok" in result.stdout
