-- Waves (docs/waves.md): one change rolled across many services as ordinary releases, in
-- steps, with at most max_parallel of them running at once and a failure budget.
--
-- The limit is state here, taken in the transaction that starts a release (DESIGN.md): a
-- trigger on releases counts the wave's running releases on the wave's row, refuses a start
-- beyond max_parallel or while the wave is not running, and frees the slot in the
-- transaction that ends the release. The row's CHECK (running <= max_parallel) holds it
-- even against a bug in that trigger.

CREATE TABLE waves (
    id                 uuid        PRIMARY KEY,
    env                text        NOT NULL CHECK (env ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    status             text        NOT NULL DEFAULT 'running'
                                   CHECK (status IN ('running', 'paused', 'halted', 'aborted',
                                                     'succeeded')),
    selector           jsonb       NOT NULL,  -- {"group": G} | {"services": [..]} | {"template": T}
    mode               text        NOT NULL CHECK (mode IN ('version', 'redo', 'template')),
    version            text,                  -- mode version: the version every release deploys
    max_parallel       integer     NOT NULL CHECK (max_parallel BETWEEN 1 AND 100000),
    max_failures       integer     NOT NULL DEFAULT 0 CHECK (max_failures >= 0),
    max_failures_spec  text        NOT NULL DEFAULT '0',  -- as given: "2" or "10%"
    steps              jsonb       NOT NULL,  -- the steps as given
    step_ends          integer[]   NOT NULL,  -- items up to and including each step
    pause_between_ms   bigint      NOT NULL DEFAULT 0 CHECK (pause_between_ms >= 0),
    operator           text        NOT NULL,
    description        text        NOT NULL DEFAULT '',
    step               integer     NOT NULL DEFAULT 0,  -- the current step, from 0
    step_started_at    timestamptz,
    step_ended_at      timestamptz,           -- the current step's last release ended then
    total              integer     NOT NULL CHECK (total > 0),
    running            integer     NOT NULL DEFAULT 0 CHECK (running >= 0),
    ended              integer     NOT NULL DEFAULT 0,
    failed             integer     NOT NULL DEFAULT 0,
    reason             text,                  -- why it halted, was paused or aborted
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at        timestamptz,           -- ended and none of its releases is open
    CHECK (running <= max_parallel)
);
CREATE INDEX waves_open ON waves (created_at) WHERE finished_at IS NULL;
CREATE INDEX waves_by_time ON waves (created_at DESC);

-- The plan: one item per service, in order; release_id is set in the transaction that
-- creates the item's release, so a driver killed at any point creates it once.
CREATE TABLE wave_items (
    wave_id           uuid    NOT NULL REFERENCES waves (id),
    position          integer NOT NULL,
    step              integer NOT NULL,
    service           text    NOT NULL,
    version           text,   -- modes redo, template: the version found at creation
    template_version  text,   -- mode template: the template version to render
    release_id        uuid    UNIQUE,
    PRIMARY KEY (wave_id, service),
    UNIQUE (wave_id, position)
);
CREATE INDEX wave_items_pending ON wave_items (wave_id, position) WHERE release_id IS NULL;

-- What happened to a wave: created, steps, pause/resume/abort (who, why), halt, end.
CREATE TABLE wave_events (
    id       bigserial   PRIMARY KEY,
    wave_id  uuid        NOT NULL REFERENCES waves (id),
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    event    text        NOT NULL,
    actor    text,
    message  text        NOT NULL
);
CREATE INDEX wave_events_by_wave ON wave_events (wave_id, id);

ALTER TABLE releases ADD COLUMN wave_id uuid REFERENCES waves (id);
CREATE INDEX releases_by_wave ON releases (wave_id) WHERE wave_id IS NOT NULL;
CREATE INDEX releases_wave_open ON releases (wave_id)
    WHERE wave_id IS NOT NULL AND status NOT IN ('succeeded', 'failed', 'cancelled',
                                                 'superseded', 'rejected');

-- The slot of a wave's release. A start (into a state that holds the service, or a start
-- that failed at once, started_at set) takes a slot only while the wave is running and has
-- one free; otherwise the whole statement fails with SQLSTATE RFW01 and the release stays
-- queued. An end frees the slot, counts failures (failed, rejected) and halts the wave
-- when they pass its budget, all in the ending transaction. Row locks are always taken
-- release first, then wave.
CREATE OR REPLACE FUNCTION relfleet_wave_slot() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    hold    constant text[] := '{rendering,applying,progressing,paused}';
    final   constant text[] := '{succeeded,failed,cancelled,superseded,rejected}';
    was_on  boolean := OLD.status = ANY (hold);
    is_on   boolean := NEW.status = ANY (hold);
    is_start boolean := NOT (OLD.status = ANY (hold)) AND (NEW.status = ANY (hold)
                       OR (NEW.status = ANY (final) AND OLD.started_at IS NULL
                           AND NEW.started_at IS NOT NULL));
    is_end  boolean := NOT (OLD.status = ANY (final)) AND NEW.status = ANY (final);
    bad     boolean := NEW.status IN ('failed', 'rejected');
    w       waves;
BEGIN
    IF is_start THEN
        UPDATE waves SET running = running + is_on::int, updated_at = clock_timestamp()
        WHERE id = NEW.wave_id AND status = 'running' AND running < max_parallel
        RETURNING * INTO w;
        IF NOT FOUND THEN
            SELECT * INTO w FROM waves WHERE id = NEW.wave_id;
            RAISE EXCEPTION USING ERRCODE = 'RFW01', MESSAGE = CASE
                WHEN w.status <> 'running' THEN format('wave %s is %s: release %s stays queued',
                                                       w.id, w.status, NEW.id)
                ELSE format('wave %s runs %s of %s releases already: release %s stays queued',
                            w.id, w.running, w.max_parallel, NEW.id) END;
        END IF;
    END IF;
    IF is_end THEN
        UPDATE waves SET running = running - was_on::int, ended = ended + 1,
            failed = failed + bad::int, updated_at = clock_timestamp()
        WHERE id = NEW.wave_id RETURNING * INTO w;
        IF bad AND w.failed > w.max_failures AND w.status IN ('running', 'paused') THEN
            UPDATE waves SET status = 'halted', reason = format(
                '%s of %s releases failed, more than the budget of %s; the last: %s (%s: %s)',
                w.failed, w.total, w.max_failures_spec, NEW.service, NEW.status,
                coalesce(NEW.error, 'no reason given'))
            WHERE id = w.id;
            INSERT INTO wave_events (wave_id, event, message)
            SELECT w.id, 'halted', x.reason FROM waves x WHERE x.id = w.id;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER releases_wave_slot AFTER UPDATE OF status ON releases
    FOR EACH ROW WHEN (NEW.wave_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION relfleet_wave_slot();

-- A release never enters a wave in a state that holds a service: it is created queued.
CREATE OR REPLACE FUNCTION relfleet_wave_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'queued' THEN
        RAISE EXCEPTION USING ERRCODE = 'RFW01',
            MESSAGE = format('release %s of wave %s must be created queued, not %s', NEW.id,
                             NEW.wave_id, NEW.status);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER releases_wave_insert BEFORE INSERT ON releases
    FOR EACH ROW WHEN (NEW.wave_id IS NOT NULL) EXECUTE FUNCTION relfleet_wave_insert();

-- The driver, run by the render workers' tick: for each open wave not paused (rows locked
-- SKIP LOCKED, so workers share them), it moves steps on (after pause_between), ends the
-- wave succeeded, marks a halted or aborted one finished once none of its releases is
-- open, and creates queued releases for the current step while the wave has fewer than
-- max_parallel open ones (at most p_limit in all). Rows: action 'start' (a release it
-- created; the caller starts it) or 'cancel' (a queued release of a halted or aborted
-- wave; the caller ends it cancelled with the reason).
CREATE OR REPLACE FUNCTION relfleet_wave_drive(p_limit int)
RETURNS TABLE (wave_id uuid, release_id uuid, service text, env text, action text,
               reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    final  constant text[] := '{succeeded,failed,cancelled,superseded,rejected}';
    w      waves;
    it     wave_items;
    nsteps int;
    open   int;
    made   int := 0;
    rid    uuid;
    ver    text;
    par    uuid;
    knd    text;
    req    jsonb;
    descr  text;
    msg    text;
BEGIN
    FOR w IN SELECT * FROM waves x WHERE x.finished_at IS NULL AND x.status <> 'paused'
             ORDER BY x.created_at FOR NO KEY UPDATE SKIP LOCKED LOOP
        nsteps := array_length(w.step_ends, 1);
        IF w.status IN ('halted', 'aborted') THEN
            RETURN QUERY SELECT w.id, r.id, r.service, r.env, 'cancel'::text,
                format('wave %s %s: %s', w.id, w.status, w.reason)
                FROM releases r WHERE r.wave_id = w.id AND r.status = 'queued';
            IF NOT EXISTS (SELECT 1 FROM releases r WHERE r.wave_id = w.id
                           AND NOT (r.status = ANY (final))) THEN
                UPDATE waves x SET finished_at = clock_timestamp(), updated_at = clock_timestamp()
                WHERE x.id = w.id;
            END IF;
            CONTINUE;
        END IF;
        IF w.status <> 'running' THEN
            CONTINUE;
        END IF;
        -- The current step has ended: on to the next one (after the pause), or the end.
        WHILE w.ended >= w.step_ends[w.step + 1] LOOP
            IF w.step + 1 >= nsteps THEN
                UPDATE waves x SET status = 'succeeded', finished_at = clock_timestamp(),
                    updated_at = clock_timestamp(), reason = NULL WHERE x.id = w.id;
                INSERT INTO wave_events (wave_id, event, message) VALUES (w.id, 'succeeded',
                    format('%s releases ended, %s failed (budget %s)', w.ended, w.failed,
                           w.max_failures_spec));
                w.status := 'succeeded';
                EXIT;
            END IF;
            IF w.step_ended_at IS NULL THEN
                w.step_ended_at := clock_timestamp();
                UPDATE waves x SET step_ended_at = w.step_ended_at WHERE x.id = w.id;
                IF w.pause_between_ms > 0 THEN
                    INSERT INTO wave_events (wave_id, event, message) VALUES (w.id, 'pause',
                        format('step %s of %s ended; step %s starts in %s ms', w.step + 1,
                               nsteps, w.step + 2, w.pause_between_ms));
                END IF;
            END IF;
            IF clock_timestamp() < w.step_ended_at + make_interval(secs => w.pause_between_ms
                                                                          / 1000.0) THEN
                EXIT;
            END IF;
            w.step := w.step + 1;
            w.step_ended_at := NULL;
            UPDATE waves x SET step = w.step, step_started_at = clock_timestamp(),
                step_ended_at = NULL, updated_at = clock_timestamp() WHERE x.id = w.id;
            INSERT INTO wave_events (wave_id, event, message) VALUES (w.id, 'step',
                format('step %s of %s started: %s releases', w.step + 1, nsteps,
                       w.step_ends[w.step + 1] - w.step_ends[w.step]));
        END LOOP;
        IF w.status <> 'running' OR made >= p_limit THEN
            CONTINUE;
        END IF;
        SELECT count(*) INTO open FROM releases r
        WHERE r.wave_id = w.id AND NOT (r.status = ANY (final));
        FOR it IN SELECT * FROM wave_items i WHERE i.wave_id = w.id AND i.release_id IS NULL
                  AND i.step <= w.step ORDER BY i.position
                  LIMIT greatest(0, least(w.max_parallel - open, p_limit - made)) LOOP
            rid := gen_random_uuid();
            ver := coalesce(w.version, it.version);
            par := NULL;
            knd := CASE w.mode WHEN 'version' THEN 'deploy' ELSE 'redo' END;
            IF w.mode <> 'version' THEN
                -- What runs now: the newest release that rendered (as relctl redo).
                SELECT r.id, r.version INTO par, ver FROM releases r
                WHERE r.service = it.service AND r.env = w.env AND r.manifests IS NOT NULL
                ORDER BY r.created_at DESC, r.id DESC LIMIT 1;
                ver := coalesce(ver, it.version);
            END IF;
            descr := CASE WHEN w.description <> '' THEN w.description
                          ELSE format('wave %s, step %s of %s', left(w.id::text, 8),
                                      it.step + 1, nsteps) END;
            req := jsonb_strip_nulls(jsonb_build_object('schema', 'relfleet.request.v1',
                'release_id', rid, 'service', it.service, 'env', w.env, 'version', ver,
                'kind', knd, 'parent', par, 'operator', w.operator, 'description', descr,
                'requested_at', relfleet_iso(clock_timestamp()),
                'template_version', it.template_version,
                'restart', CASE WHEN w.mode = 'redo' THEN true END));
            msg := format('%s of version %s requested by %s in wave %s (step %s of %s): %s',
                          knd, ver, w.operator, w.id, it.step + 1, nsteps, descr);
            INSERT INTO releases (id, service, env, version, kind, parent, operator, description,
                                  status, request, created_at, wave_id)
            VALUES (rid, it.service, w.env, ver, knd, par, w.operator, descr, 'queued', req,
                    clock_timestamp(), w.id);
            INSERT INTO timeline (release_id, stage, event, status, message)
            VALUES (rid, 'wave', 'queued', 'queued', msg);
            UPDATE wave_items i SET release_id = rid
            WHERE i.wave_id = it.wave_id AND i.service = it.service;
            made := made + 1;
            wave_id := w.id; release_id := rid; service := it.service; env := w.env;
            action := 'start'; reason := NULL;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

-- pause (running -> paused), resume (paused -> running), abort (running, paused, halted ->
-- aborted), by p_actor with p_why. NULL when done, else why not. A paused wave starts no
-- release (its queued ones wait, and step aside for other releases of their service); an
-- aborted one starts none again, its queued ones end cancelled; running ones finish.
CREATE OR REPLACE FUNCTION relfleet_wave_command(p_id uuid, p_action text, p_actor text,
                                                 p_why text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    w    waves;
    goal text;
    why  text := nullif(p_why, '');
BEGIN
    SELECT * INTO w FROM waves WHERE id = p_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN format('no wave ''%s''', p_id);
    END IF;
    IF p_action = 'pause' AND w.status = 'running' THEN
        goal := 'paused';
    ELSIF p_action = 'resume' AND w.status = 'paused' THEN
        goal := 'running';
    ELSIF p_action = 'abort' AND w.status IN ('running', 'paused', 'halted') THEN
        goal := 'aborted';
    ELSIF p_action NOT IN ('pause', 'resume', 'abort') THEN
        RETURN format('unknown wave action ''%s''', p_action);
    ELSE
        RETURN format('cannot %s wave %s: it is %s', p_action, p_id, w.status);
    END IF;
    UPDATE waves SET status = goal, updated_at = clock_timestamp(),
        reason = CASE WHEN goal = 'running' THEN NULL
                      ELSE format('%s by %s%s', CASE goal WHEN 'paused' THEN 'paused'
                                  ELSE 'aborted' END, p_actor, coalesce(': ' || why, '')) END
    WHERE id = p_id;
    INSERT INTO wave_events (wave_id, event, actor, message)
    VALUES (p_id, p_action, p_actor, format('%s by %s%s', CASE p_action WHEN 'pause' THEN
            'paused' WHEN 'resume' THEN 'resumed' ELSE 'aborted' END, p_actor,
            coalesce(': ' || why, '')));
    RETURN NULL;
END
$$;

-- A wave as `relctl wave show --output json` prints it; with_releases false leaves the
-- releases out (watch, lists).
CREATE OR REPLACE FUNCTION relfleet_wave_record(p_id uuid, with_releases boolean)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', w.id, 'env', w.env, 'status', w.status, 'reason', w.reason,
        'selector', w.selector, 'mode', w.mode, 'version', w.version,
        'max_parallel', w.max_parallel, 'max_failures', w.max_failures,
        'max_failures_spec', w.max_failures_spec, 'pause_between_ms', w.pause_between_ms,
        'operator', w.operator, 'description', w.description,
        'created_at', relfleet_iso(w.created_at), 'updated_at', relfleet_iso(w.updated_at),
        'finished_at', relfleet_iso(w.finished_at),
        'step', w.step + 1, 'total', w.total, 'running', w.running, 'ended', w.ended,
        'failed', w.failed,
        'counts', (SELECT jsonb_build_object(
                'pending', count(*) FILTER (WHERE i.release_id IS NULL),
                'queued', count(*) FILTER (WHERE r.status IN ('queued', 'awaiting_approval')),
                'running', count(*) FILTER (WHERE r.status IN ('rendering', 'applying',
                                                               'progressing', 'paused')),
                'succeeded', count(*) FILTER (WHERE r.status = 'succeeded'),
                'failed', count(*) FILTER (WHERE r.status IN ('failed', 'rejected')),
                'cancelled', count(*) FILTER (WHERE r.status IN ('cancelled', 'superseded')))
            FROM wave_items i LEFT JOIN releases r ON r.id = i.release_id
            WHERE i.wave_id = w.id),
        'steps', (SELECT jsonb_agg(jsonb_build_object(
                'step', s.n, 'spec', w.steps -> (s.n - 1)::int, 'size', s.size,
                'status', CASE WHEN s.n - 1 < w.step THEN 'ended'
                               WHEN s.n - 1 = w.step AND w.status = 'succeeded' THEN 'ended'
                               WHEN s.n - 1 = w.step THEN 'current' ELSE 'waiting' END,
                'pending', coalesce(c.pending, 0), 'queued', coalesce(c.queued, 0),
                'running', coalesce(c.running, 0), 'succeeded', coalesce(c.succeeded, 0),
                'failed', coalesce(c.failed, 0), 'cancelled', coalesce(c.cancelled, 0))
                ORDER BY s.n)
            FROM (SELECT n, w.step_ends[n] - coalesce(w.step_ends[n - 1], 0) AS size
                  FROM generate_series(1, array_length(w.step_ends, 1)) AS n) s
            LEFT JOIN (SELECT i.step + 1 AS n,
                    count(*) FILTER (WHERE i.release_id IS NULL) AS pending,
                    count(*) FILTER (WHERE r.status IN ('queued', 'awaiting_approval')) AS queued,
                    count(*) FILTER (WHERE r.status IN ('rendering', 'applying', 'progressing',
                                                        'paused')) AS running,
                    count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded,
                    count(*) FILTER (WHERE r.status IN ('failed', 'rejected')) AS failed,
                    count(*) FILTER (WHERE r.status IN ('cancelled', 'superseded')) AS cancelled
                FROM wave_items i LEFT JOIN releases r ON r.id = i.release_id
                WHERE i.wave_id = w.id GROUP BY i.step) c ON c.n = s.n),
        'failures', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'service', r.service, 'release_id', r.id, 'status', r.status,
                'error', r.error, 'finished_at', relfleet_iso(r.finished_at))
                ORDER BY r.finished_at), '[]'::jsonb)
            FROM releases r WHERE r.wave_id = w.id AND r.status IN ('failed', 'rejected')),
        'events', (SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                'at', relfleet_iso(e.at), 'event', e.event, 'actor', e.actor,
                'message', e.message)) ORDER BY e.id), '[]'::jsonb)
            FROM wave_events e WHERE e.wave_id = w.id),
        'releases', CASE WHEN with_releases THEN (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'service', i.service, 'step', i.step + 1, 'release_id', i.release_id,
                'status', coalesce(r.status, 'pending'), 'version', r.version,
                'started_at', relfleet_iso(r.started_at),
                'finished_at', relfleet_iso(r.finished_at), 'error', r.error)
                ORDER BY i.position), '[]'::jsonb)
            FROM wave_items i LEFT JOIN releases r ON r.id = i.release_id
            WHERE i.wave_id = w.id) END)
    FROM waves w WHERE w.id = p_id
$$;
