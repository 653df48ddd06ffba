"""The append refuses a stream whose events are in another partition.

A process configured with another ``EVENTSTORE_PARTITIONS`` than the one the
stream's events were written with would put its new events in another
partition, where a runner could handle them before the old ones.
``store.partition_count`` checks a sample of the latest events once per
process; this makes the rule exact for the stream being appended to, at the
cost of reading the partition of the stream's last event beside its version
(the same row, in the same subquery). The refusal is the outcome ``wrong_partition``, with the
stream's partition in ``sequence``.
"""

from django.db import migrations

APPEND_SQL = """
CREATE OR REPLACE FUNCTION eventstore_append(
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
    v_claimed_at timestamptz;
    v_nudge boolean := false;
    v_stored integer := 0;
    v_current integer;
    v_stream_partition integer;
    v_event_id uuid;
BEGIN
    -- Lock the partition's head row until commit: the lock orders the
    -- partition's writers by commit. Locking writes no new row version.
    PERFORM FROM eventstore_partitionhead h
        WHERE h.partition = p_partition FOR UPDATE;
    IF NOT FOUND THEN
        -- The partition's first append.
        INSERT INTO eventstore_partitionhead (partition)
            VALUES (p_partition) ON CONFLICT (partition) DO NOTHING;
        INSERT INTO eventstore_nudgeclaim (partition)
            VALUES (p_partition) ON CONFLICT (partition) DO NOTHING;
        PERFORM FROM eventstore_partitionhead h
            WHERE h.partition = p_partition FOR UPDATE;
        IF NOT FOUND THEN  -- never without the lock that orders the partition
            RAISE EXCEPTION 'partition % has no head row to lock', p_partition;
        END IF;
    END IF;
    -- The partition's last committed sequence, and its nudge claim. The
    -- last rows are asked for with ORDER BY ... LIMIT 1, not max(): a plan
    -- made while the table was empty (plpgsql keeps it) would otherwise
    -- read every row of the partition.
    SELECT coalesce((SELECT e.sequence FROM eventstore_event e
                     WHERE e.partition = p_partition
                     ORDER BY e.sequence DESC LIMIT 1), 0),
           (SELECT c.claimed_at FROM eventstore_nudgeclaim c
            WHERE c.partition = p_partition)
        INTO v_head, v_claimed_at;

    -- Claim the partition's nudge unless one younger than 10 seconds is
    -- waiting (eventstore.nudges). The UPDATE checks again under the row
    -- lock: another writer may have claimed it since the read above.
    IF v_claimed_at IS NULL
       OR v_claimed_at < clock_timestamp() - interval '10 seconds' THEN
        UPDATE eventstore_nudgeclaim c SET claimed_at = clock_timestamp()
            WHERE c.partition = p_partition
              AND (c.claimed_at IS NULL
                   OR c.claimed_at < clock_timestamp() - interval '10 seconds');
        v_nudge := FOUND;
    END IF;

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

    IF v_stored = 0 THEN
        RETURN QUERY
            INSERT INTO eventstore_event AS e (
                stream_id, version, partition, sequence, event_type,
                schema_version, data, metadata, event_id, recorded_at)
            SELECT p_stream_id, p_expected_version + r.n, p_partition,
                   v_head + r.n, r.x->>'event_type',
                   (r.x->>'schema_version')::smallint, r.x->'data',
                   r.x->'metadata', (r.x->>'event_id')::uuid, clock_timestamp()
            FROM jsonb_array_elements(p_events) WITH ORDINALITY AS r(x, n)
            -- The stream's last event is at the expected version and in this
            -- partition; a new stream is expected at version 0.
            WHERE coalesce((SELECT s.version = p_expected_version
                                   AND s.partition = p_partition
                            FROM eventstore_event s
                            WHERE s.stream_id = p_stream_id
                            ORDER BY s.version DESC LIMIT 1),
                           p_expected_version = 0)
            RETURNING 'appended'::text, e.id, e.event_id, e.version::integer,
                      e.sequence, e.recorded_at, v_nudge;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    -- Refused. A claim taken stays with the transaction, which then nudges
    -- (harmless) if it commits.
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
        SELECT e.version, e.partition INTO v_current, v_stream_partition
            FROM eventstore_event e WHERE e.stream_id = p_stream_id
            ORDER BY e.version DESC LIMIT 1;
        IF v_stream_partition <> p_partition THEN
            -- The caller numbers partitions with another count than the one
            -- the stream's events were written with.
            RETURN QUERY SELECT 'wrong_partition'::text, NULL::bigint,
                NULL::uuid, v_current, v_stream_partition::bigint,
                NULL::timestamptz, v_nudge;
        ELSE
            RETURN QUERY SELECT 'conflict'::text, NULL::bigint, NULL::uuid,
                coalesce(v_current, 0), NULL::bigint, NULL::timestamptz,
                v_nudge;
        END IF;
    END IF;
END
$$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_SQL, params=None)


def restore_0007(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        from importlib import import_module

        previous = import_module("eventstore.migrations.0007_append_locks_head_row")
        schema_editor.execute(previous.APPEND_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0007_append_locks_head_row")]

    operations = [migrations.RunPython(create, restore_0007)]
