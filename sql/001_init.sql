-- Relfleet schema, version 1: services, templates, images, releases, timeline, rejects.

-- Release configuration per (service, env). `fence` is the newest fencing token handed
-- out for the service: every state change of a release checks it (DESIGN.md).
CREATE TABLE services (
    service      text        NOT NULL CHECK (service ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    env          text        NOT NULL CHECK (env ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    namespace    text        NOT NULL CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    replicas     integer     NOT NULL DEFAULT 1 CHECK (replicas BETWEEN 0 AND 10000),
    health_path  text        NOT NULL DEFAULT '/healthz',
    group_name   text        NOT NULL DEFAULT 'default',
    port         integer     NOT NULL DEFAULT 8080 CHECK (port BETWEEN 1 AND 65535),
    template_id  text        NOT NULL,
    strategy     jsonb,
    policy       text        NOT NULL DEFAULT 'queue' CHECK (policy IN ('queue', 'supersede')),
    timeout_s    integer     NOT NULL DEFAULT 600 CHECK (timeout_s BETWEEN 1 AND 86400),
    image_repo   text,
    cluster      text,
    extra        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    fence        bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text        NOT NULL DEFAULT '',
    PRIMARY KEY (service, env)
);

-- Every change of a service's configuration: who, when, old and new value.
CREATE TABLE service_history (
    id          bigserial   PRIMARY KEY,
    service     text        NOT NULL,
    env         text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text        NOT NULL,
    key         text        NOT NULL,
    old_value   text,
    new_value   text
);
CREATE INDEX service_history_by_service ON service_history (service, env, id);

-- Shared deployment templates; every version is kept, since releases point at theirs.
CREATE TABLE templates (
    id         text        NOT NULL CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    version    text        NOT NULL CHECK (version ~ '^[0-9a-f]{64}$'),
    source     text        NOT NULL,
    body       text        NOT NULL,
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version)
);
CREATE TABLE template_heads (
    id          text        PRIMARY KEY,
    version     text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (id, version) REFERENCES templates (id, version)
);

-- Image versions known per service (recorded by CI).
CREATE TABLE images (
    service   text        NOT NULL,
    tag       text        NOT NULL CHECK (tag ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'),
    digest    text,
    added_at  timestamptz NOT NULL DEFAULT now(),
    added_by  text        NOT NULL DEFAULT '',
    PRIMARY KEY (service, tag)
);

-- One row per release. The status set is kept in step with rf_release_status_t by
-- tests/unit/test_release.c.
CREATE TABLE releases (
    id                uuid        PRIMARY KEY,
    service           text        NOT NULL,
    env               text        NOT NULL,
    version           text        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('deploy', 'rollback', 'redo')),
    parent            uuid,
    operator          text        NOT NULL,
    description       text        NOT NULL DEFAULT '',
    status            text        NOT NULL CHECK (status IN ('queued', 'rendering', 'applying',
                          'progressing', 'paused', 'succeeded', 'failed', 'cancelled',
                          'superseded', 'rejected')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    duration_ms       bigint,
    request           jsonb       NOT NULL,
    params            jsonb,
    template_id       text,
    template_version  text,
    manifests         jsonb,
    manifests_sha256  text,
    fence             bigint,
    error             text,
    track             jsonb,       -- tracking state: objects, deadline, progress, canary step
    track_owner       text,        -- the track worker following it now
    track_until       timestamptz, -- its claim lapses then; another worker takes over
    pods              jsonb,
    CHECK ((status IN ('succeeded', 'failed', 'cancelled', 'superseded', 'rejected'))
           = (finished_at IS NOT NULL))
);
-- DESIGN.md: no two active releases of one service.
CREATE UNIQUE INDEX releases_one_active ON releases (service, env)
    WHERE status IN ('rendering', 'applying', 'progressing', 'paused');
CREATE INDEX releases_by_service ON releases (service, env, created_at DESC);
CREATE INDEX releases_by_time ON releases (created_at DESC);
CREATE INDEX releases_queued ON releases (service, env, created_at) WHERE status = 'queued';
CREATE INDEX releases_tracked ON releases (track_until)
    WHERE status IN ('progressing', 'paused');

-- The timeline: one row per event of a release (every state change is one).
CREATE TABLE timeline (
    id          bigserial   PRIMARY KEY,
    release_id  uuid        NOT NULL REFERENCES releases (id),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    stage       text        NOT NULL,
    event       text        NOT NULL,
    status      text,
    message     text        NOT NULL,
    data        jsonb
);
CREATE INDEX timeline_by_release ON timeline (release_id, id);

-- Messages a stage refused, with the reason (also sent to the dlq topic).
CREATE TABLE rejected_messages (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    stage        text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    key          bytea,
    reason       text        NOT NULL,
    payload      bytea       NOT NULL,
    UNIQUE (topic, partition, "offset")
);
