"""Migration operations of the event store, for any app's migrations to use."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db.migrations import AddIndex


class PortableAddIndexConcurrently(AddIndexConcurrently):
    """Add an index without blocking writes on PostgreSQL; plainly elsewhere.

    ``CREATE INDEX CONCURRENTLY`` lets appends and updates go on while a big
    table is indexed, but it cannot run in a transaction: the migration must
    say ``atomic = False``. Django's operation refuses every other database,
    and SQLite (the embedded mode) runs the same migrations; there the index
    is built as ``AddIndex`` builds it. A concurrent build that fails leaves
    an invalid index behind: drop it before migrating again.
    """

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(
                self, app_label, schema_editor, from_state, to_state
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(
                self, app_label, schema_editor, from_state, to_state
            )
