-- The owed results (007) as rows of a table of their own (issue 20). As a column of
-- releases, the flag cost every release one more update of its ~2 KB row when the delivery
-- was confirmed, and not a HOT one (the column is in releases_results_owed's predicate):
-- a new version with an entry in each of the table's eleven indexes, and one more dead
-- version for autovacuum. Now the end of a release inserts its id here in the same
-- statement (so the mark is as durable as the end), the confirmed delivery deletes it,
-- and the sweep reads the few rows here. The claim that holds a sweep off for the ending
-- worker's delivery stays releases.track_until (HOT: no index keys it).
CREATE TABLE release_results_owed (
    release_id  uuid  PRIMARY KEY REFERENCES releases (id)
);

INSERT INTO release_results_owed (release_id) SELECT id FROM releases WHERE results_owed;
DROP INDEX releases_results_owed;
-- A worker built before this migration cannot end a release on this schema (the column is
-- gone: its statement fails and is retried) rather than mark a result owed where no sweep
-- looks.
ALTER TABLE releases DROP COLUMN results_owed;

-- 008's relfleet_decide with the denial's result owed here; otherwise unchanged.
CREATE OR REPLACE FUNCTION relfleet_decide(p_rid uuid, p_user text, p_decision text,
                                           p_comment text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r    releases;
    n    integer;
    why  text := CASE WHEN coalesce(p_comment, '') = '' THEN '' ELSE ': ' || p_comment END;
    msg  text;
BEGIN
    IF p_decision NOT IN ('approved', 'denied') THEN
        RETURN jsonb_build_object('code', 'invalid', 'error', format('unknown decision ''%s''', p_decision));
    END IF;
    SELECT * INTO r FROM releases WHERE id = p_rid FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('code', 'not_found', 'error', format('no release ''%s''', p_rid));
    END IF;
    IF r.status <> 'awaiting_approval' THEN
        RETURN jsonb_build_object('code', 'conflict', 'error', format('release %s is not awaiting approval (it is %s)',
                                                  p_rid, r.status));
    END IF;
    IF p_user = r.operator THEN
        RETURN jsonb_build_object('code', 'forbidden', 'error', format(
            'user ''%s'' requested release %s: a release is %s by someone else (four eyes)',
            p_user, p_rid, p_decision));
    END IF;
    IF NOT relfleet_has_role(p_user, 'approver', r.service, r.env) THEN
        RETURN jsonb_build_object('code', 'forbidden', 'error', format(
            'user ''%s'' has no approver role for service ''%s'' in env ''%s''',
            p_user, r.service, r.env));
    END IF;
    IF EXISTS (SELECT 1 FROM release_approvals a WHERE a.release_id = p_rid
               AND a.user_name = p_user) THEN
        RETURN jsonb_build_object('code', 'conflict', 'error', format('user ''%s'' has already decided on release %s',
                                                  p_user, p_rid));
    END IF;
    INSERT INTO release_approvals (release_id, user_name, decision, comment)
    VALUES (p_rid, p_user, p_decision, coalesce(p_comment, ''));
    IF p_decision = 'denied' THEN
        msg := format('denied by %s%s', p_user, why);
        UPDATE releases SET status = 'cancelled', error = msg, finished_at = clock_timestamp(),
            duration_ms = 0, track_until = clock_timestamp()
        WHERE id = p_rid;
        INSERT INTO release_results_owed (release_id) VALUES (p_rid);
        INSERT INTO timeline (release_id, stage, event, status, message, data) VALUES
            (p_rid, 'approval', 'denied', NULL, msg,
             jsonb_build_object('user', p_user, 'comment', coalesce(p_comment, ''))),
            (p_rid, 'approval', 'cancelled', 'cancelled', 'cancelled: ' || msg, NULL);
        RETURN jsonb_build_object('decision', p_decision, 'status', 'cancelled',
                                  'message', msg);
    END IF;
    SELECT count(*) INTO n FROM release_approvals a
    WHERE a.release_id = p_rid AND a.decision = 'approved';
    msg := format('approved by %s (%s of %s)%s', p_user, n, r.approvals_needed, why);
    INSERT INTO timeline (release_id, stage, event, status, message, data) VALUES
        (p_rid, 'approval', 'approved', NULL, msg,
         jsonb_build_object('user', p_user, 'comment', coalesce(p_comment, ''),
                            'approvals', n, 'needed', r.approvals_needed));
    IF n < r.approvals_needed THEN
        RETURN jsonb_build_object('decision', p_decision, 'status', 'awaiting_approval',
                                  'approvals', n, 'needed', r.approvals_needed, 'message', msg);
    END IF;
    UPDATE releases SET status = 'queued' WHERE id = p_rid;
    INSERT INTO timeline (release_id, stage, event, status, message) VALUES
        (p_rid, 'approval', 'queued', 'queued',
         format('approved (%s of %s): queued', n, r.approvals_needed));
    RETURN jsonb_build_object('decision', p_decision, 'status', 'queued', 'approvals', n,
                              'needed', r.approvals_needed, 'message', msg,
                              'request', r.request);
END
$$;
