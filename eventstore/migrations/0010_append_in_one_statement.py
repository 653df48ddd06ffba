"""An append of one event is one INSERT; partitions are locked with advisory locks.

Instruction counts (``python -m bench.instructions``) put the backend's share
of an append at 1.9x a raw BEGIN/INSERT/COMMIT, most of it in running the
plpgsql function's statements (each one's executor start-up) rather than in
their work. So:

- One event (the common case) goes in one ``INSERT ... SELECT`` (the
  statement is in ``store.py``) that calls two small functions from here:
  ``eventstore_next_sequence`` locks the partition and reads its last
  sequence, ``eventstore_claim_nudge`` claims the partition's nudge. Both are
  volatile plpgsql, so each query in them takes a new snapshot: they see what
  the partition's previous writer committed while this one waited for the
  lock, which the INSERT's own snapshot (taken before the wait) may not. The
  INSERT's version check may be that old; a stream that moved meanwhile
  meets the unique (stream, version) index, and ``ON CONFLICT DO NOTHING``
  turns that into no row instead of an error, so the caller's transaction
  stays usable. Several events still go through ``eventstore_append``:
  ``DO NOTHING`` on one of them would store the others.
- The partition lock is a transaction-level advisory lock on (the event
  store's class id, partition) instead of a lock on the partition's head
  row: the same ordering (held until commit), without reading the row or
  writing its lock into the page and the WAL. ``eventstore_lock_partition``
  is the one place that names the key; ``eventstore_lock_partitions`` takes
  several in ascending order (``store.lock_partitions``). The head rows stay
  as the list of partitions the sweep visits.
"""

from django.db import migrations

# 0x65767374, "evst": the first key of every advisory lock the event store takes.
FUNCTIONS_SQL = """
CREATE FUNCTION eventstore_lock_partition(p_partition integer) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(1702261620, p_partition)
$$;

CREATE FUNCTION eventstore_lock_partitions(p_partitions integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_partition integer;
BEGIN
    -- Always in ascending order, so two transactions queue, never deadlock.
    FOR v_partition IN SELECT DISTINCT x FROM unnest(p_partitions) x ORDER BY x LOOP
        PERFORM eventstore_lock_partition(v_partition);
    END LOOP;
END
$$;

-- Lock the partition until the transaction ends and return the sequence its
-- next event takes. The lock orders the partition's writers by commit; the
-- read runs after the lock is granted, in a snapshot of its own.
CREATE FUNCTION eventstore_next_sequence(p_partition integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    PERFORM eventstore_lock_partition(p_partition);
    -- ORDER BY ... LIMIT 1, not max(): a plan made while the table was
    -- empty (plpgsql keeps it) would otherwise read the whole partition.
    SELECT e.sequence INTO v_last FROM eventstore_event e
        WHERE e.partition = p_partition ORDER BY e.sequence DESC LIMIT 1;
    RETURN coalesce(v_last, 0) + 1;
END
$$;

-- Claim the partition's nudge unless one younger than 10 seconds is waiting
-- (eventstore.nudges); return whether this transaction took it. Called with
-- the partition locked. The UPDATE checks again under the row lock: a runner
-- may have cleared the claim, or another writer taken it, since the read.
CREATE FUNCTION eventstore_claim_nudge(p_partition integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_claimed_at timestamptz;
BEGIN
    SELECT c.claimed_at INTO v_claimed_at FROM eventstore_nudgeclaim c
        WHERE c.partition = p_partition;
    IF NOT FOUND THEN
        -- The partition's first append: the sweep lists partitions by head row.
        INSERT INTO eventstore_partitionhead (partition)
            VALUES (p_partition) ON CONFLICT (partition) DO NOTHING;
        INSERT INTO eventstore_nudgeclaim (partition)
            VALUES (p_partition) ON CONFLICT (partition) DO NOTHING;
    ELSIF v_claimed_at >= clock_timestamp() - interval '10 seconds' THEN
        RETURN false;
    END IF;
    UPDATE eventstore_nudgeclaim c SET claimed_at = clock_timestamp()
        WHERE c.partition = p_partition
          AND (c.claimed_at IS NULL
               OR c.claimed_at < clock_timestamp() - interval '10 seconds');
    RETURN FOUND;
END
$$;

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
    v_head bigint := eventstore_next_sequence(p_partition) - 1;
    v_nudge boolean := eventstore_claim_nudge(p_partition);
    v_stored integer := 0;
    v_current integer;
    v_stream_partition integer;
    v_event_id uuid;
BEGIN
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

DROP_SQL = """
DROP FUNCTION eventstore_claim_nudge(integer);
DROP FUNCTION eventstore_next_sequence(integer);
DROP FUNCTION eventstore_lock_partitions(integer[]);
DROP FUNCTION eventstore_lock_partition(integer);
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTIONS_SQL, params=None)


def restore_0008(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        from importlib import import_module

        previous = import_module(
            "eventstore.migrations.0008_append_refuses_another_partition"
        )
        schema_editor.execute(previous.APPEND_SQL, params=None)
        schema_editor.execute(DROP_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0009_checkrun_started_index")]

    operations = [migrations.RunPython(create, restore_0008)]
