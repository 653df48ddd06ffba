"""Writing read models in bulk.

Projections that handle whole batches insert their new rows here: on
PostgreSQL through COPY, because a model instance and an INSERT parameter
per column cost more than the rest of a rebuild (see ``bench.rebuild``).
"""

from collections.abc import Sequence

from django.db import connection, models


def insert_rows(
    model: type[models.Model], fields: Sequence[str], rows: list[tuple]
) -> None:
    """Insert rows (tuples of the values of ``fields``) into a model's table."""
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            model(**dict(zip(fields, row, strict=True))) for row in rows
        )
        return
    quote = connection.ops.quote_name
    columns = ", ".join(quote(model._meta.get_field(name).column) for name in fields)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)
