"""Writing read models in bulk.

Projections that handle whole batches insert their new rows here: on
PostgreSQL through COPY, because a model instance and an INSERT parameter
per column cost more than the rest of a rebuild (see ``bench.rebuild``).
Elsewhere (SQLite) through ``bulk_create``, and COPY writes what it would: a
projection tested on one database must not fail on the other.
"""

import types
from collections.abc import Callable, Sequence
from operator import itemgetter

from django.db import connection, models


def insert_rows(
    model: type[models.Model], fields: Sequence[str], rows: list[tuple]
) -> None:
    """Insert rows (tuples of the values of ``fields``) into a model's table.

    As ``bulk_create`` would: the fields not given take their defaults,
    ``auto_now`` and ``auto_now_add`` fields the time of the insert, each
    value is prepared by its field (a dict for a ``JSONField``), and a
    failure raises Django's ``DatabaseError`` (``IntegrityError``, ...).
    """
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            model(**dict(zip(fields, row, strict=True))) for row in rows
        )
        return
    columns = _columns(model, fields)
    quote = connection.ops.quote_name
    names = ", ".join(quote(field.column) for field, _ in columns)
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(
            f"COPY {quote(model._meta.db_table)} ({names}) FROM STDIN"
        ) as copy,
    ):
        prepared = [(_preparer(field), value_of) for field, value_of in columns]
        given = [model._meta.get_field(name) for name in fields]
        if [field for field, _ in columns] == given and all(
            prepare is _as_given for prepare, _ in prepared
        ):
            # The rows are the columns, written as they are: the usual case.
            for row in rows:
                copy.write_row(row)
            return
        # The connection itself, not the django.db.connection proxy, whose
        # every attribute read would more than double the preparing's cost.
        db = cursor.db
        for row in rows:
            copy.write_row(
                [prepare(value_of(row), db) for prepare, value_of in prepared]
            )


# Fields whose values psycopg writes as they are (what their preparing would
# give): preparing them costs a rebuild a fifth of its speed, for nothing.
_WRITTEN_AS_GIVEN = {
    models.AutoField,
    models.BigAutoField,
    models.BigIntegerField,
    models.BooleanField,
    models.CharField,
    models.DateTimeField,
    models.IntegerField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
    models.SmallIntegerField,
    models.TextField,
    models.UUIDField,
}


def _preparer(field: models.Field) -> Callable[[object, object], object]:
    target = field.target_field if field.is_relation else field
    if type(target) in _WRITTEN_AS_GIVEN:
        return _as_given
    return field.get_db_prep_save


def _as_given(value, connection):
    return value


def _columns(
    model: type[models.Model], fields: Sequence[str]
) -> list[tuple[models.Field, Callable[[tuple], object]]]:
    """Return each column to write, with how to find its value in a row.

    The columns left out are left to the database: an auto-increment key, a
    ``db_default``, or a field with no default (NULL, as ``bulk_create``).
    """
    given = {model._meta.get_field(name): index for index, name in enumerate(fields)}
    columns = []
    for field in model._meta.concrete_fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            # The time of the insert, from the field's own pre_save, given a
            # value or not: bulk_create's pre_save replaces one given too.
            now = field.pre_save(types.SimpleNamespace(), add=True)
            columns.append((field, lambda row, now=now: now))
        elif field in given:
            columns.append((field, itemgetter(given[field])))
        elif field.has_default():
            columns.append((field, lambda row, field=field: field.get_default()))
    return columns
