"""Transfer rows by the hundred thousand, inserted in SQL.

Only for the scale tests (see ``eventstore.tests.plans``): requesting
that many transfers through the services would take the whole test run. The
rows are the read model's as the projection writes them, inside the test's
transaction.
"""

from eventstore.tests.plans import analyze, run_sql

TRANSFERS = 200_000


def seed_transfers(n: int = TRANSFERS) -> None:
    """Insert ``n`` finished transfers over the last year between random accounts.

    One in ten failed (insufficient funds), the others completed.
    """
    run_sql(
        "INSERT INTO transfers_transfersummary (id, from_account, to_account,"
        " amount, currency, reference, status, failure_reason, requested_by,"
        " version, created_at, debited_at, completed_at, refunded_at, failed_at)"
        " SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),"
        " 100, 'EUR', '', CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'completed' END,"
        " CASE WHEN g %% 10 = 0 THEN 'insufficient_funds' ELSE '' END, NULL, 3,"
        " t, t, CASE WHEN g %% 10 = 0 THEN NULL ELSE t END, NULL,"
        " CASE WHEN g %% 10 = 0 THEN t ELSE NULL END"
        " FROM (SELECT g, now() - make_interval(secs => g * 150) AS t"
        " FROM generate_series(1, %s) AS g) s",
        [n],
    )
    analyze("transfers_transfersummary")


def seed_transfers_from(account_id, n: int) -> None:
    """Insert ``n`` completed transfers from one account, a second apart."""
    run_sql(
        "INSERT INTO transfers_transfersummary (id, from_account, to_account,"
        " amount, currency, reference, status, failure_reason, version, created_at)"
        " SELECT gen_random_uuid(), %s, gen_random_uuid(), 1, 'EUR', '',"
        " 'completed', '', 3, now() - make_interval(secs => g)"
        " FROM generate_series(1, %s) AS g",
        [account_id, n],
    )
