-- Promotion between environments and approvals (docs/promotion.md): the settings requires,
-- soak and approvals of a service, the state awaiting_approval, and the approvals given.

-- requires_env: the env a version must have succeeded in before it is deployed here;
-- soak_s: how long it must have run there since, with no failed release or rollback;
-- approvals: how many approvers (role approver, never the requester) a release needs.
ALTER TABLE services
    ADD COLUMN requires_env text CHECK (requires_env ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    ADD COLUMN soak_s integer CHECK (soak_s BETWEEN 0 AND 31622400),
    ADD COLUMN approvals integer CHECK (approvals BETWEEN 0 AND 10);

-- A release that needs approvals waits in awaiting_approval before queued, holding no lock
-- (DESIGN.md). approvals_needed is the service's setting when it began to wait,
-- awaiting_since when that was (approval_timeout counts from it).
ALTER TABLE releases DROP CONSTRAINT releases_status_check;
ALTER TABLE releases ADD CONSTRAINT releases_status_check CHECK (status IN ('queued',
    'rendering', 'applying', 'progressing', 'paused', 'succeeded', 'failed', 'cancelled',
    'superseded', 'rejected', 'awaiting_approval'));
ALTER TABLE releases
    ADD COLUMN approvals_needed integer,
    ADD COLUMN awaiting_since timestamptz;
CREATE INDEX releases_awaiting ON releases (awaiting_since) WHERE status = 'awaiting_approval';

-- One decision per user and release: approved, or denied (which cancels it).
CREATE TABLE release_approvals (
    release_id  uuid        NOT NULL REFERENCES releases (id),
    user_name   text        NOT NULL,
    decision    text        NOT NULL CHECK (decision IN ('approved', 'denied')),
    comment     text        NOT NULL DEFAULT '' CHECK (length(comment) <= 4096),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (release_id, user_name)
);

-- The role approver: granted per service and env pattern like the others, but outside their
-- order: it includes viewer and nothing else, and no other role includes it (an admin
-- approves only with a grant of approver).
ALTER TABLE role_grants DROP CONSTRAINT role_grants_role_check;
ALTER TABLE role_grants ADD CONSTRAINT role_grants_role_check
    CHECK (role IN ('viewer', 'releaser', 'admin', 'approver'));

CREATE OR REPLACE FUNCTION relfleet_role_rank(role text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE role WHEN 'viewer' THEN 1 WHEN 'approver' THEN 1 WHEN 'releaser' THEN 2
                     WHEN 'admin' THEN 3 ELSE 0 END
$$;

CREATE OR REPLACE FUNCTION relfleet_has_role(u text, need text, svc text, e text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM role_grants g JOIN users us ON us.name = g.user_name
        WHERE g.user_name = u AND NOT us.disabled
          AND CASE WHEN need = 'approver' THEN g.role = 'approver'
                   ELSE relfleet_role_rank(g.role) >= relfleet_role_rank(need) END
          AND svc LIKE replace(g.service_pattern, '*', '%')
          AND (e IS NULL OR e LIKE replace(g.env_pattern, '*', '%')))
$$;

-- Subscribers may hear of awaiting_approval. Such a notification is not a result: its row
-- carries its own message (payload) and event id, so a release has one notification per
-- subscription for its wait and one for its result.
ALTER TABLE notify_subscriptions DROP CONSTRAINT notify_subscriptions_on_status_check;
ALTER TABLE notify_subscriptions ADD CONSTRAINT notify_subscriptions_on_status_check
    CHECK (cardinality(on_status) > 0 AND on_status <@
           '{succeeded,failed,cancelled,superseded,rejected,awaiting_approval}'::text[]);
ALTER TABLE notifications DROP CONSTRAINT notifications_release_id_channel_target_key;
ALTER TABLE notifications ADD CONSTRAINT notifications_release_id_channel_target_event_key
    UNIQUE (release_id, channel, target, event_id);
ALTER TABLE notifications ADD COLUMN payload jsonb;

-- The decisions on a release, oldest first.
CREATE OR REPLACE FUNCTION relfleet_approvals(rid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('user', a.user_name, 'decision', a.decision,
               'comment', a.comment, 'at', relfleet_iso(a.at)) ORDER BY a.at, a.user_name),
           '[]'::jsonb)
    FROM release_approvals a WHERE a.release_id = rid
$$;

-- The record as `relctl show --output json` prints it (003's, with the approvals).
-- Whoever redefines this function keeps the 'notifications' and 'approvals' lines.
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
        'notifications', relfleet_notifications(r.id),
        'approvals_needed', r.approvals_needed,
        'approvals', relfleet_approvals(r.id))
    FROM releases r WHERE r.id = rid
$$;

-- The one `results` message of a terminal release (002's), with its decisions when it
-- waited for approval; the message of a release that never waited is unchanged.
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
        || CASE WHEN r.approvals_needed IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('approvals_needed', r.approvals_needed,
                                        'approvals', relfleet_approvals(r.id)) END
    FROM releases r
    WHERE r.id = rid AND r.status IN ('succeeded', 'failed', 'cancelled', 'superseded', 'rejected')
$$;

-- The message a subscriber to awaiting_approval gets (schema relfleet.approval.v1): not a
-- result, since the release has not ended; an event id of its own, the same every time.
CREATE OR REPLACE FUNCTION relfleet_awaiting_event(rid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'schema', 'relfleet.approval.v1',
        'event_id', md5(r.id::text || '/awaiting_approval')::uuid, 'release_id', r.id,
        'service', r.service, 'env', r.env, 'version', r.version, 'kind', r.kind,
        'parent', r.parent, 'status', 'awaiting_approval', 'operator', r.operator,
        'description', r.description, 'created_at', relfleet_iso(r.created_at),
        'awaiting_since', relfleet_iso(r.awaiting_since),
        'approvals_needed', r.approvals_needed,
        'message', format('needs %s approval%s from approvers of service ''%s'' in env ''%s''',
                          r.approvals_needed, CASE WHEN r.approvals_needed = 1 THEN '' ELSE 's' END,
                          r.service, r.env))
    FROM releases r WHERE r.id = rid
$$;

-- A decision of user p_user on release p_rid (relctl approve|deny, the API): checks and
-- effect in one transaction. Returns {"code": not_found|conflict|forbidden|invalid,
-- "error": "..."} when refused, else {"decision",
-- "status" (the release's status after it), "approvals" (given), "needed", "message",
-- "request" (the stored request, when it is queued now and should be handed to render)}.
-- A denial ends the release cancelled with its results message owed (results_owed, claim
-- lapsed): a track worker's sweep publishes it, so it has its one result even if the
-- caller dies right after.
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
            duration_ms = 0, results_owed = true, track_until = clock_timestamp()
        WHERE id = p_rid;
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
