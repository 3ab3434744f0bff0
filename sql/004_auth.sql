-- Users, API tokens, roles and request signing keys (docs/permissions.md).

-- A person or an upstream system (a CI pipeline, chat-ops).
CREATE TABLE users (
    name        text        PRIMARY KEY
                            CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.@:+/-]{0,127}$'),
    disabled    boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL DEFAULT ''
);

-- API tokens, stored as their SHA-256 only: the token itself is shown once, at creation.
CREATE TABLE api_tokens (
    token_sha256  text        PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    user_name     text        NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    label         text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL DEFAULT ''
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_name);

-- Roles per service and env pattern ('*' matches any run of characters). Each role
-- includes the ones below it: viewer < releaser < admin.
CREATE TABLE role_grants (
    user_name        text        NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    role             text        NOT NULL CHECK (role IN ('viewer', 'releaser', 'admin')),
    service_pattern  text        NOT NULL CHECK (service_pattern ~ '^[a-z0-9*-]{1,63}$'),
    env_pattern      text        NOT NULL CHECK (env_pattern ~ '^[a-z0-9*-]{1,63}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text        NOT NULL DEFAULT '',
    PRIMARY KEY (user_name, role, service_pattern, env_pattern)
);

-- Request signing keys: the key itself lives in the secrets file of whoever signs or
-- verifies (`signing_key.<key_id>`); here only who it belongs to and its SHA-256, so a
-- worker holding another key under the same id says so. An upstream key may name any
-- operator in what it signs; a user's key signs for that user only.
CREATE TABLE signing_keys (
    key_id      text        PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$'),
    user_name   text        NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    upstream    boolean     NOT NULL DEFAULT false,
    key_sha256  text        NOT NULL CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL DEFAULT ''
);

-- Every signature accepted, with the message (release or command id) it signed: the same
-- signature on another message is a replay.
CREATE TABLE request_signatures (
    key_id     text        NOT NULL,
    signature  text        NOT NULL,
    message_id uuid        NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, signature)
);
CREATE INDEX request_signatures_by_time ON request_signatures (seen_at);

CREATE OR REPLACE FUNCTION relfleet_role_rank(role text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE role WHEN 'viewer' THEN 1 WHEN 'releaser' THEN 2 WHEN 'admin' THEN 3 ELSE 0 END
$$;

-- Whether user u (enabled) holds role need or a higher one for service svc in env e.
-- e NULL: in any env. svc '*' and e '*' ask for a grant on every service and env (the
-- patterns hold neither '%' nor '_', so LIKE sees only the wildcards '*' became).
CREATE OR REPLACE FUNCTION relfleet_has_role(u text, need text, svc text, e text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM role_grants g JOIN users us ON us.name = g.user_name
        WHERE g.user_name = u AND NOT us.disabled
          AND relfleet_role_rank(g.role) >= relfleet_role_rank(need)
          AND svc LIKE replace(g.service_pattern, '*', '%')
          AND (e IS NULL OR e LIKE replace(g.env_pattern, '*', '%')))
$$;
