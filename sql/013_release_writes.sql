-- The cost of a release's writes (issue 20): one NOTIFY call per release and statement of
-- timeline rows, the release row's claim and lease updates HOT (heap-only: no index
-- entries), and the result of a release built from a row the caller already has.

-- Timeline rows: one trigger call per statement (not per row) and one pg_notify per
-- distinct release in it, with the payload relfleet-api LISTENs for: the release id
-- (006). A statement that ends ten releases and writes their ten rows calls it once.
CREATE OR REPLACE FUNCTION relfleet_notify_timeline_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relfleet_timeline', d.release_id::text)
    FROM (SELECT DISTINCT n.release_id FROM timeline_new n) d;
    RETURN NULL;
END
$$;

DROP TRIGGER timeline_notify ON timeline;
CREATE TRIGGER timeline_notify AFTER INSERT ON timeline
    REFERENCING NEW TABLE AS timeline_new
    FOR EACH STATEMENT EXECUTE FUNCTION relfleet_notify_timeline_rows();

-- An UPDATE is HOT only when no indexed column changes (keys and partial predicates) and
-- the new version fits on the old one's page. track_until changes with every claim and
-- renewal of track and of the owed-results sweep, so no index keys it any more:
-- - track's claim (status progressing or paused, nobody's or a lapsed claim) reads the
--   active releases through releases_one_active, whose predicate its status implies: at
--   most one row per service and env, sorted by track_until in memory;
-- - the owed-results sweep reads the owed releases (few: those ended in the last
--   seconds, or all whose delivery failed) and sorts them by track_until likewise.
DROP INDEX releases_tracked;
DROP INDEX releases_results_owed;
CREATE INDEX releases_results_owed ON releases (id) WHERE results_owed;

-- Room on each page for the versions of a release's updates, so that those that change
-- no indexed column (claims, renewals, progress) stay on their page. New pages only: an
-- existing database keeps its full pages until they are rewritten.
ALTER TABLE releases SET (fillfactor = 50);

-- The one `results` message of a terminal release (008's relfleet_result) from a row of
-- releases, NULL when that row is not terminal: a statement that ends releases builds
-- their messages from its RETURNING rows, which its own snapshot would not show yet.
-- Whoever redefines the message redefines this function; relfleet_result calls it.
CREATE OR REPLACE FUNCTION relfleet_result_of(r releases) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.status IN ('succeeded', 'failed', 'cancelled', 'superseded', 'rejected')
    THEN jsonb_build_object(
        'schema', 'relfleet.result.v1', 'event_id', r.id, 'release_id', r.id,
        'service', r.service, 'env', r.env, 'version', r.version, 'kind', r.kind,
        'parent', r.parent, 'status', r.status, 'operator', r.operator,
        'description', r.description, 'created_at', relfleet_iso(r.created_at),
        'started_at', relfleet_iso(r.started_at), 'finished_at', relfleet_iso(r.finished_at),
        'duration_ms', r.duration_ms, 'error', r.error,
        'pods', coalesce(r.pods, '[]'::jsonb))
        || CASE WHEN r.approvals_needed IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('approvals_needed', r.approvals_needed,
                                        'approvals', relfleet_approvals(r.id)) END
    END
$$;

CREATE OR REPLACE FUNCTION relfleet_result(rid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT relfleet_result_of(r) FROM releases r WHERE r.id = rid
$$;

-- 002's relfleet_iso, STABLE as to_char is: an IMMUTABLE SQL function over a STABLE one is
-- never inlined, so each timestamp of a result or record was a function call of its own.
-- Same text (the format has no locale-dependent field).
CREATE OR REPLACE FUNCTION relfleet_iso(t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;
