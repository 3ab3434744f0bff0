-- The release record and the result message, built in one place for every reader.

CREATE OR REPLACE FUNCTION relfleet_iso(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- The timeline of a release, oldest first.
CREATE OR REPLACE FUNCTION relfleet_timeline(rid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
               'at', relfleet_iso(t.at), 'stage', t.stage, 'event', t.event,
               'status', t.status, 'message', t.message, 'data', t.data)) ORDER BY t.id),
           '[]'::jsonb)
    FROM timeline t WHERE t.release_id = rid
$$;

-- The record as `relctl show --output json` prints it.
CREATE OR REPLACE FUNCTION relfleet_release_record(rid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'service', r.service, 'env', r.env, 'version', r.version,
        'kind', r.kind, 'parent', r.parent, 'status', r.status, 'operator', r.operator,
        'description', r.description, 'created_at', relfleet_iso(r.created_at),
        'started_at', relfleet_iso(r.started_at), 'finished_at', relfleet_iso(r.finished_at),
        'duration_ms', r.duration_ms, 'error', r.error, 'params', r.params,
        'template_id', r.template_id, 'template_version', r.template_version,
        'manifests_sha256', r.manifests_sha256, 'fence', r.fence,
        'progress', r.track -> 'progress',
        'timeline', relfleet_timeline(r.id),
        'pods', coalesce(r.pods, '[]'::jsonb),
        'notifications', '[]'::jsonb)
    FROM releases r WHERE r.id = rid
$$;

-- The one message on `results` of a release in a terminal state (schema relfleet.result.v1).
CREATE OR REPLACE FUNCTION relfleet_result(rid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'schema', 'relfleet.result.v1', 'event_id', r.id, 'release_id', r.id,
        'service', r.service, 'env', r.env, 'version', r.version, 'kind', r.kind,
        'parent', r.parent, 'status', r.status, 'operator', r.operator,
        'description', r.description, 'created_at', relfleet_iso(r.created_at),
        'started_at', relfleet_iso(r.started_at), 'finished_at', relfleet_iso(r.finished_at),
        'duration_ms', r.duration_ms, 'error', r.error,
        'pods', coalesce(r.pods, '[]'::jsonb))
    FROM releases r
    WHERE r.id = rid AND r.status IN ('succeeded', 'failed', 'cancelled', 'superseded', 'rejected')
$$;
