"""Accounts and ledger rows by the hundred thousand, inserted in SQL.

Only for the scale tests (see ``eventstore.tests.plans``): opening that many accounts
through the services would take the whole test run. The rows are the read
models' as the projection writes them, inside the test's transaction.
"""

from eventstore.tests.plans import analyze, run_sql

ACCOUNTS = 100_000
LEDGER = 200_000


def seed_accounts(n: int = ACCOUNTS, owner_id=None, first: int = 1) -> None:
    """Insert ``n`` open, empty accounts opened over the last year or so.

    Numbered from ``first``; a call after another needs a ``first`` past its
    numbers.
    """
    run_sql(
        "INSERT INTO accounts_accountbalance (id, number, owner_id, currency,"
        " balance, status, version, opened_at, updated_at)"
        " SELECT gen_random_uuid(), lpad(g::text, 12, '0'), %s,"
        " (ARRAY['EUR','USD','GBP'])[1 + g %% 3], 0, 'open', 1,"
        " now() - make_interval(secs => g * 300), now()"
        " FROM generate_series(%s, %s) AS g",
        [owner_id, first, first + n - 1],
    )
    analyze("accounts_accountbalance")


def seed_ledger(n: int = LEDGER) -> None:
    """Insert ``n`` ledger rows, 100 per account, over accounts inserted here."""
    accounts = n // 100
    run_sql(
        "INSERT INTO accounts_accountbalance (id, number, owner_id, currency,"
        " balance, status, version, opened_at, updated_at)"
        " SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid,"
        " lpad((900000000 + g)::text, 12, '0'), NULL, 'EUR', 0, 'open', 100,"
        " now() - interval '400 days', now()"
        " FROM generate_series(1, %s) AS g",
        [accounts],
    )
    run_sql(
        "INSERT INTO accounts_ledgerentry (account_id, position, event_id, type,"
        " amount, balance_after, transfer_id, transfer_step, reference, recorded_at)"
        " SELECT ('00000000-0000-0000-0000-' || lpad((1 + g %% %s)::text, 12,"
        " '0'))::uuid, 1 + g / %s, gen_random_uuid(), 'deposit', 100, 100, NULL,"
        " '', '', now() - make_interval(secs => g * 150)"
        " FROM generate_series(0, %s - 1) AS g",
        [accounts, accounts, n],
    )
    analyze("accounts_accountbalance", "accounts_ledgerentry")
