-- The HTTP API (producer/api): browser sessions, and the notifications that feed the live
-- progress of a release (Server-Sent Events) without polling.

-- A browser session after login: the cookie holds a random id, PostgreSQL its SHA-256 only;
-- csrf_token must come back in the X-CSRF-Token header of every state-changing call.
CREATE TABLE api_sessions (
    session_sha256  text        PRIMARY KEY CHECK (session_sha256 ~ '^[0-9a-f]{64}$'),
    user_name       text        NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token      text        NOT NULL CHECK (csrf_token ~ '^[0-9a-f]{64}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX api_sessions_by_expiry ON api_sessions (expires_at);

-- NOTIFY relfleet_timeline '<release id>' whenever a release's timeline grows or its status,
-- progress or failing pods change: the API LISTENs and pushes the change to the release's
-- event streams. Delivered at commit, so a listener that reads then sees the change.
CREATE OR REPLACE FUNCTION relfleet_notify_timeline() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'timeline' THEN
        PERFORM pg_notify('relfleet_timeline', NEW.release_id::text);
    ELSE
        PERFORM pg_notify('relfleet_timeline', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER timeline_notify AFTER INSERT ON timeline
    FOR EACH ROW EXECUTE FUNCTION relfleet_notify_timeline();

CREATE TRIGGER releases_notify AFTER UPDATE ON releases
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.track -> 'progress' IS DISTINCT FROM NEW.track -> 'progress'
                       OR OLD.pods IS DISTINCT FROM NEW.pods)
    EXECUTE FUNCTION relfleet_notify_timeline();
