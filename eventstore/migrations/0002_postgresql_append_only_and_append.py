"""PostgreSQL: make the event table append-only, and the append function.

The trigger rejects UPDATE and DELETE row by row. TRUNCATE is a different
statement that row triggers do not see: the test runner's flush uses it, and
production forbids it by granting the application role only INSERT and
SELECT on the table (see README, "Production database role").

``eventstore_append`` does a whole append in one round trip. It locks the
partition's head row first, and only then (each statement of a plpgsql
function takes a fresh snapshot under READ COMMITTED) looks for stored event
ids and the stream's current version. So a writer that waited for the head
sees what the previous holder committed, refuses cleanly instead of raising
a unique violation, and never leaves a gap in a partition's sequence.
"""

from django.db import migrations

CREATE_SQL = """
CREATE FUNCTION eventstore_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eventstore_event is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER eventstore_event_append_only
    BEFORE UPDATE OR DELETE ON eventstore_event
    FOR EACH ROW EXECUTE FUNCTION eventstore_reject_change();

CREATE FUNCTION eventstore_append(
    p_stream_id text,
    p_partition integer,
    p_expected_version integer,
    p_event_ids uuid[],
    p_event_types text[],
    p_schema_versions integer[],
    p_data jsonb[],
    p_metadata jsonb[]
) RETURNS TABLE (
    outcome text,
    id bigint,
    event_id uuid,
    version integer,
    sequence bigint,
    recorded_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_count integer := cardinality(p_event_ids);
    v_head bigint;
    v_stored integer;
    v_current integer;
BEGIN
    -- The head row's lock orders all writers of this partition by commit.
    INSERT INTO eventstore_partitionhead AS h (partition, sequence)
        VALUES (p_partition, 0)
        ON CONFLICT (partition) DO UPDATE SET sequence = h.sequence
        RETURNING h.sequence INTO v_head;

    SELECT count(*) INTO v_stored
        FROM eventstore_event e WHERE e.event_id = ANY (p_event_ids);
    IF v_stored = v_count THEN
        RETURN QUERY
            SELECT 'duplicate'::text, e.id, e.event_id, e.version::integer,
                   e.sequence, e.recorded_at
            FROM eventstore_event e
            WHERE e.event_id = ANY (p_event_ids)
            ORDER BY e.id;
        RETURN;
    ELSIF v_stored > 0 THEN
        RETURN QUERY SELECT 'partial_duplicate'::text, NULL::bigint, NULL::uuid,
            NULL::integer, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;

    SELECT coalesce(max(e.version), 0) INTO v_current
        FROM eventstore_event e WHERE e.stream_id = p_stream_id;
    IF v_current <> p_expected_version THEN
        RETURN QUERY SELECT 'conflict'::text, NULL::bigint, NULL::uuid,
            v_current, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;

    UPDATE eventstore_partitionhead h SET sequence = h.sequence + v_count
        WHERE h.partition = p_partition;

    RETURN QUERY
        INSERT INTO eventstore_event AS e (
            stream_id, version, partition, sequence, event_type,
            schema_version, data, metadata, event_id, recorded_at)
        SELECT p_stream_id, p_expected_version + r.n, p_partition, v_head + r.n,
               r.event_type, r.schema_version, r.data, r.metadata, r.event_id,
               clock_timestamp()
        FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_data,
                    p_metadata)
             WITH ORDINALITY AS r(event_id, event_type, schema_version, data,
                                  metadata, n)
        RETURNING 'appended'::text, e.id, e.event_id, e.version::integer,
                  e.sequence, e.recorded_at;
END
$$;
"""

DROP_SQL = """
DROP FUNCTION IF EXISTS eventstore_append(
    text, integer, integer, uuid[], text[], integer[], jsonb[], jsonb[]);
DROP TRIGGER IF EXISTS eventstore_event_append_only ON eventstore_event;
DROP FUNCTION IF EXISTS eventstore_reject_change();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE_SQL, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
