"""The trial-balance check and verification of the bank's read models on SQLite.

The run command's embedded fallback: SQLite, Celery tasks run in-process.
"""

import json

import pytest

from eventstore.tests.test_sqlite import run_on_sqlite


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Run ``sqlite_checks`` once; return what it found."""
    result = run_on_sqlite(
        "transfers.tests.sqlite_checks", tmp_path_factory.mktemp("embedded")
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert out["transfer"] == "completed", out
    return out


def test_the_trial_balance_check_from_the_operations_page_records_a_result(
    embedded,
):
    # The page used to say "queued" while the check failed unrecorded.
    (run,) = embedded["runs"]

    assert run["outcome"] == "ok", run
    assert run["summary"] == "balanced: EUR"
    assert run["details"]["currencies"]["EUR"] == {
        "balances": 900,
        "in_transit": 0,
        "deposited": 1000,
        "withdrawn": 100,
        "difference": 0,
    }
    assert embedded["page_messages"] == [
        "The check of transfers.trial_balance has run: OK; its result is below."
    ]


def test_the_figures_stop_at_the_cut(embedded):
    # A cut at sequence 0 everywhere: the balances are there, no event counts.
    figures = embedded["before_any_event"]

    assert isinstance(figures, dict), figures
    assert figures["EUR"]["balances"] == 900
    assert (figures["EUR"]["deposited"], figures["EUR"]["withdrawn"]) == (0, 0)


def test_the_bank_read_models_verify_clean(embedded):
    assert embedded["verify_command"] == "ok"
    assert embedded["verify_runs"] == {
        "accounts.balances": "ok",
        "transfers.summary": "ok",
        "transfers.totals": "ok",
    }
