"""How many rows of a table a page's queries read, from PostgreSQL's plans.

A page of 20 to 100 rows must not read a whole table. The proof is never a
timing: each query the page made is run again under ``EXPLAIN (ANALYZE,
FORMAT JSON)``, and the rows its scans of the table read (kept or filtered
out) are added up. Tables are seeded in SQL, big enough for PostgreSQL to
plan as it would in production (then ``ANALYZE``d), inside the test's
transaction. The accounts and transfers tests use these too.
"""

import json

from django.db import connection
from django.test.utils import CaptureQueriesContext

# Generous for a page of at most 100 rows: reading the whole seeded table
# (10^5 rows and more) is what the tests refuse.
PAGE_BOUND = 5_000

SCANS = {
    "Seq Scan",
    "Index Scan",
    "Index Only Scan",
    "Bitmap Heap Scan",
    "Bitmap Index Scan",
}


def run_sql(statement: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def analyze(*tables: str) -> None:
    for table in tables:
        run_sql(f"ANALYZE {table}")


def get_captured(client, url, data=None):
    """GET ``url``; return the response and the queries it ran."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, data or {})
    assert response.status_code == 200, response.status_code
    return response, captured


def plan_of(sql: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        (value,) = cursor.fetchone()
    if isinstance(value, str):
        value = json.loads(value)
    return value[0]["Plan"]


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def rows_read(sql: str, table: str) -> int:
    """Return how many rows of ``table`` the scans of the plan of ``sql`` read."""
    return sum(
        (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0))
        * node.get("Actual Loops", 1)
        for node in _nodes(plan_of(sql))
        if node["Node Type"] in SCANS and node.get("Relation Name") == table
    )


def node_types(sql: str) -> list[str]:
    return [
        f"{n['Node Type']}({n.get('Relation Name') or n.get('Index Name', '')})"
        for n in _nodes(plan_of(sql))
    ]


def selects_on(captured: CaptureQueriesContext, table: str) -> list[str]:
    return [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"].lstrip().upper().startswith("SELECT")
        and (f'"{table}"' in query["sql"] or f" {table} " in query["sql"])
    ]


def reads(captured: CaptureQueriesContext, table: str) -> dict[str, int]:
    """Return the rows of ``table`` each captured SELECT on it read."""
    return {sql: rows_read(sql, table) for sql in selects_on(captured, table)}


def whole_table_reads(
    captured: CaptureQueriesContext, table: str, *, counts: bool = True
) -> list[str]:
    """Describe each captured SELECT that read more than a page of ``table``.

    With ``counts=False``, a ``COUNT(*)`` (a page-number paginator's, which
    reads every row it counts) is not looked at.
    """
    found = []
    for sql, read in reads(captured, table).items():
        if not counts and "COUNT(*)" in sql.upper():
            continue
        if read > PAGE_BOUND:
            found.append(
                f"{read} rows of {table} read by: {sql[:400]} | plan: {node_types(sql)}"
            )
    return found
