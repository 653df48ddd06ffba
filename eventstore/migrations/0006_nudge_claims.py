"""A leaner ``eventstore_append`` that also claims the partition's nudge.

- It returns ``nudge``: whether this append took the partition's nudge claim
  (``eventstore.nudges``), so its transaction must send a nudge after
  commit. The claim rides on the statement that locks the partition head; a
  Redis round trip per append cost as much as the append.
- The events come as one JSON array instead of five arrays: psycopg adapts
  arrays element by element in Python, which cost more than the whole call.
- Stored event ids are looked up only when the caller gave ids, one equality
  lookup each: a single query over all ids kept a plan made while the table
  was empty (a sequential scan) as the table grew.
"""

from django.db import migrations, models

APPEND_SQL = """
DROP FUNCTION eventstore_append(
    text, integer, integer, uuid[], text[], integer[], jsonb[], jsonb[]);

-- p_events: a JSON array of {"event_id", "event_type", "schema_version",
-- "data", "metadata"}, which Python encodes in one call. p_check_ids: some
-- event ids came from the caller and may be stored already; ids the store
-- made itself (random UUIDs) are new, and the unique index stands behind that.
CREATE FUNCTION eventstore_append(
    p_stream_id text,
    p_partition integer,
    p_expected_version integer,
    p_events jsonb,
    p_check_ids boolean
) RETURNS TABLE (
    outcome text,
    id bigint,
    event_id uuid,
    version integer,
    sequence bigint,
    recorded_at timestamptz,
    nudge boolean
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_count integer := jsonb_array_length(p_events);
    v_head bigint;
    v_nudge boolean;
    v_stored integer := 0;
    v_current integer;
    v_event_id uuid;
BEGIN
    FOR attempt IN 1..2 LOOP
        -- Lock the head and take the numbers; the lock orders all writers
        -- of this partition by commit. With it, claim the partition's nudge
        -- unless one younger than 10 seconds is waiting (eventstore.nudges).
        WITH claim AS (
            UPDATE eventstore_nudgeclaim c SET claimed_at = clock_timestamp()
            WHERE c.partition = p_partition
              AND (c.claimed_at IS NULL
                   OR c.claimed_at < clock_timestamp() - interval '10 seconds')
            RETURNING true
        )
        UPDATE eventstore_partitionhead h SET sequence = h.sequence + v_count
            WHERE h.partition = p_partition
            RETURNING h.sequence - v_count, EXISTS (SELECT FROM claim)
            INTO v_head, v_nudge;
        EXIT WHEN FOUND;
        -- The partition's first append.
        INSERT INTO eventstore_partitionhead (partition, sequence)
            VALUES (p_partition, 0) ON CONFLICT (partition) DO NOTHING;
        INSERT INTO eventstore_nudgeclaim (partition)
            VALUES (p_partition) ON CONFLICT (partition) DO NOTHING;
    END LOOP;

    -- One lookup per event id: a query over all of them at once can keep a
    -- plan made while the table was empty (a sequential scan).
    IF p_check_ids THEN
        FOR i IN 0 .. v_count - 1 LOOP
            v_event_id := (p_events->i->>'event_id')::uuid;
            IF EXISTS (
                SELECT FROM eventstore_event e WHERE e.event_id = v_event_id
            ) THEN
                v_stored := v_stored + 1;
            END IF;
        END LOOP;
    END IF;
    SELECT coalesce(max(e.version), 0) INTO v_current
        FROM eventstore_event e WHERE e.stream_id = p_stream_id;

    IF v_stored = 0 AND v_current = p_expected_version THEN
        RETURN QUERY
            INSERT INTO eventstore_event AS e (
                stream_id, version, partition, sequence, event_type,
                schema_version, data, metadata, event_id, recorded_at)
            SELECT p_stream_id, p_expected_version + r.n, p_partition,
                   v_head + r.n, r.x->>'event_type',
                   (r.x->>'schema_version')::smallint, r.x->'data',
                   r.x->'metadata', (r.x->>'event_id')::uuid, clock_timestamp()
            FROM jsonb_array_elements(p_events) WITH ORDINALITY AS r(x, n)
            RETURNING 'appended'::text, e.id, e.event_id, e.version::integer,
                      e.sequence, e.recorded_at, v_nudge;
        RETURN;
    END IF;

    -- Refused: give the numbers back. A claim taken stays with the
    -- transaction, which then nudges (harmless) if it commits.
    UPDATE eventstore_partitionhead h SET sequence = h.sequence - v_count
        WHERE h.partition = p_partition;
    IF v_stored = v_count THEN
        RETURN QUERY
            SELECT 'duplicate'::text, e.id, e.event_id, e.version::integer,
                   e.sequence, e.recorded_at, v_nudge
            FROM eventstore_event e
            WHERE e.event_id IN (
                SELECT (x->>'event_id')::uuid FROM jsonb_array_elements(p_events) x)
            ORDER BY e.id;
    ELSIF v_stored > 0 THEN
        RETURN QUERY SELECT 'partial_duplicate'::text, NULL::bigint, NULL::uuid,
            NULL::integer, NULL::bigint, NULL::timestamptz, v_nudge;
    ELSE
        RETURN QUERY SELECT 'conflict'::text, NULL::bigint, NULL::uuid,
            v_current, NULL::bigint, NULL::timestamptz, v_nudge;
    END IF;
END
$$;
"""

RESTORE_SQL = """
DROP FUNCTION eventstore_append(text, integer, integer, jsonb, boolean);
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_SQL, params=None)


def restore_0005(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        from importlib import import_module

        previous = import_module(
            "eventstore.migrations.0005_append_with_one_head_update"
        )
        schema_editor.execute(RESTORE_SQL, params=None)
        schema_editor.execute(
            previous.APPEND_SQL.replace("CREATE OR REPLACE", "CREATE"), params=None
        )


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0005_append_with_one_head_update")]

    operations = [
        migrations.CreateModel(
            name="NudgeClaim",
            fields=[
                (
                    "partition",
                    models.PositiveSmallIntegerField(primary_key=True, serialize=False),
                ),
                ("claimed_at", models.DateTimeField(null=True)),
            ],
        ),
        # Every partition that has a head gets its claim row.
        migrations.RunSQL(
            "INSERT INTO eventstore_nudgeclaim (partition)"
            " SELECT partition FROM eventstore_partitionhead",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RunPython(create, restore_0005),
    ]
