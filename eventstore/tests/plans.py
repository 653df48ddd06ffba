"""How many rows of a table a page's queries read, from PostgreSQL's plans.

A page of 20 to 100 rows must not read a whole table. The proof is never a
timing: each query the page made is run again under ``EXPLAIN (ANALYZE,
FORMAT JSON)``, and the rows its scans of the table read (kept or filtered
out) are added up. Tables are seeded in SQL, big enough for PostgreSQL to
plan as it would in production, inside the test's transaction.
"""

import json

from django.db import connection
from django.test.utils import CaptureQueriesContext

SCANS = {
    "Seq Scan",
    "Index Scan",
    "Index Only Scan",
    "Bitmap Heap Scan",
    "Bitmap Index Scan",
}


def rows_read(sql: str, table: str) -> int:
    """Return how many rows of ``table`` the scans of the plan of ``sql`` read."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        (plan,) = cursor.fetchone()
    if isinstance(plan, str):
        plan = json.loads(plan)
    return sum(
        (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0))
        * node.get("Actual Loops", 1)
        for node in _nodes(plan[0]["Plan"])
        if node["Node Type"] in SCANS and node.get("Relation Name") == table
    )


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def reads(captured: CaptureQueriesContext, table: str) -> dict[str, int]:
    """Return the rows of ``table`` each captured SELECT on it read."""
    return {
        query["sql"]: rows_read(query["sql"], table)
        for query in captured.captured_queries
        if query["sql"].lstrip().upper().startswith("SELECT")
        and (f'"{table}"' in query["sql"] or f" {table} " in query["sql"])
    }
