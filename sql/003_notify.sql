-- Notifications: who wants to hear of which outcomes, and one row per (release, channel, target).

-- A subscription of one service in one env. secret_name names a secret in the secrets file
-- or the environment (RELFLEET_SECRET_<NAME>); the secret itself is never stored here.
CREATE TABLE notify_subscriptions (
    id           bigserial   PRIMARY KEY,
    service      text        NOT NULL CHECK (service ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    env          text        NOT NULL CHECK (env ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    channel      text        NOT NULL CHECK (channel IN ('email', 'dingtalk', 'webhook')),
    target       text        NOT NULL CHECK (length(target) BETWEEN 1 AND 2048
                                             AND target !~ '[[:cntrl:][:space:]]'),
    on_status    text[]      NOT NULL
                             DEFAULT '{succeeded,failed,cancelled,superseded,rejected}'
                             CHECK (cardinality(on_status) > 0 AND on_status <@
                                    '{succeeded,failed,cancelled,superseded,rejected}'::text[]),
    secret_name  text        CHECK (secret_name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL DEFAULT '',
    UNIQUE (service, env, channel, target)
);

-- One notification: created pending when the result is consumed, then sent by whichever
-- notify worker claims it (state sending, with a lease). Sent once per (release, channel,
-- target): a redelivered result inserts nothing, a crash inside the send window is the
-- only repeat (same event id), after the lease lapses.
CREATE TABLE notifications (
    id               bigserial   PRIMARY KEY,
    release_id       uuid        NOT NULL REFERENCES releases (id),
    subscription_id  bigint      REFERENCES notify_subscriptions (id) ON DELETE SET NULL,
    event_id         uuid        NOT NULL,
    channel          text        NOT NULL,
    target           text        NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
                                 CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    owner            text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    UNIQUE (release_id, channel, target),
    CHECK ((state = 'sending') = (lease_until IS NOT NULL))
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_leased ON notifications (lease_until) WHERE state = 'sending';

-- Sends to each DingTalk robot in the last minute (client-side limit, shared by workers).
CREATE TABLE notify_rate (
    robot  text        NOT NULL,
    at     timestamptz NOT NULL
);
CREATE INDEX notify_rate_by_robot ON notify_rate (robot, at);

-- Claims up to p_limit due notifications for p_owner: pending ones whose time has come and
-- sending ones whose lease lapsed (their worker died). Each claimed row is `sending` with
-- attempts + 1 and a lease of p_lease_ms. A DingTalk row whose robot already had p_rate
-- sends in the last minute stays pending until a slot frees (no attempt counted); a row
-- past p_max attempts, or whose subscription was removed, ends failed.
CREATE OR REPLACE FUNCTION relfleet_notify_claim(p_owner text, p_limit int, p_lease_ms int,
                                                 p_rate int, p_max int)
RETURNS TABLE (id bigint, release_id uuid, event_id uuid, channel text, target text,
               attempts int, secret_name text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n      notifications;
    secret text;
    used   int;
    oldest timestamptz;
    taken  int := 0;
BEGIN
    FOR n IN
        SELECT * FROM notifications x
        WHERE (x.state = 'pending' AND x.next_attempt_at <= clock_timestamp())
           OR (x.state = 'sending' AND x.lease_until < clock_timestamp())
        ORDER BY x.next_attempt_at, x.id
        FOR UPDATE SKIP LOCKED
    LOOP
        EXIT WHEN taken >= p_limit;
        IF n.subscription_id IS NULL THEN
            UPDATE notifications x SET state = 'failed', lease_until = NULL, owner = NULL,
                last_error = 'subscription removed', updated_at = clock_timestamp()
            WHERE x.id = n.id;
            CONTINUE;
        END IF;
        IF n.attempts >= p_max THEN
            UPDATE notifications x SET state = 'failed', lease_until = NULL, owner = NULL,
                last_error = coalesce(x.last_error || '; ', '') || 'gave up after '
                             || x.attempts || ' attempts (the last one was cut off)',
                updated_at = clock_timestamp()
            WHERE x.id = n.id;
            CONTINUE;
        END IF;
        IF n.channel = 'dingtalk' AND p_rate > 0 THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('relfleet.dingtalk ' || n.target, 0));
            SELECT count(*), min(r.at) INTO used, oldest FROM (
                SELECT q.at FROM notify_rate q
                WHERE q.robot = n.target AND q.at > clock_timestamp() - interval '60 seconds'
                ORDER BY q.at DESC LIMIT p_rate) r;
            IF used >= p_rate THEN
                UPDATE notifications x SET state = 'pending', lease_until = NULL, owner = NULL,
                    next_attempt_at = oldest + interval '60.05 seconds',
                    updated_at = clock_timestamp()
                WHERE x.id = n.id;
                CONTINUE;
            END IF;
            INSERT INTO notify_rate (robot, at) VALUES (n.target, clock_timestamp());
        END IF;
        SELECT s.secret_name INTO secret FROM notify_subscriptions s WHERE s.id = n.subscription_id;
        UPDATE notifications x SET state = 'sending', attempts = x.attempts + 1, owner = p_owner,
            lease_until = clock_timestamp() + make_interval(secs => p_lease_ms / 1000.0),
            updated_at = clock_timestamp()
        WHERE x.id = n.id;
        id := n.id; release_id := n.release_id; event_id := n.event_id;
        channel := n.channel; target := n.target; attempts := n.attempts + 1;
        secret_name := secret;
        RETURN NEXT;
        taken := taken + 1;
    END LOOP;
    DELETE FROM notify_rate q WHERE q.at < clock_timestamp() - interval '2 minutes';
END
$$;

-- The notifications of a release, oldest first, as the record lists them.
CREATE OR REPLACE FUNCTION relfleet_notifications(rid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'channel', n.channel, 'target', n.target, 'state', n.state,
               'attempts', n.attempts, 'last_error', n.last_error,
               'sent_at', relfleet_iso(n.sent_at),
               'next_attempt_at', CASE WHEN n.state = 'pending'
                                       THEN relfleet_iso(n.next_attempt_at) END)
               ORDER BY n.id), '[]'::jsonb)
    FROM notifications n WHERE n.release_id = rid
$$;

-- The record as `relctl show --output json` prints it (002's, with its notifications).
-- Whoever redefines this function keeps the 'notifications' line.
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
        'notifications', relfleet_notifications(r.id))
    FROM releases r WHERE r.id = rid
$$;
