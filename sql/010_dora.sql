-- DORA metrics over the release records (docs/dora.md): deployment frequency, lead time,
-- change failure rate and time to restore, per service/env, env, group and for the fleet.

-- Releases by the time they ended: every statistic is over a window of finished_at.
CREATE INDEX releases_by_finish ON releases (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX releases_finished_by_service ON releases (service, env, finished_at)
    WHERE finished_at IS NOT NULL;

-- One row per ended release with what the metrics need. Attempts are the releases that
-- reached the cluster's verdict (succeeded or failed), in the order they ended per
-- service/env; the others (cancelled, superseded, rejected) are counted by status only.
--   lead_ms:       a succeeded deploy: from the image's registration (relctl image add) or
--                  else the request to the end; rollbacks and redos are no new change
--   change:        a deploy that succeeded or failed (the change failure rate's base)
--   rolled_back:   a succeeded release whose next attempt is a rollback
--   change_failed: a change that failed or was rolled back
--   outage:        a failed release after a success (or first): where a failure begins;
--                  failures in a row are one outage
--   restore_ms:    an outage's end to the end of the next succeeded release (NULL while
--                  none has succeeded since)
CREATE OR REPLACE VIEW relfleet_release_facts AS
WITH attempts AS (
    SELECT a.id,
           lag(a.status) OVER w AS prev_status,
           lead(a.kind) OVER w AS next_kind,
           min(a.finished_at) FILTER (WHERE a.status = 'succeeded')
               OVER (w ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_success_at
    FROM releases a
    WHERE a.status IN ('succeeded', 'failed')
    WINDOW w AS (PARTITION BY a.service, a.env ORDER BY a.finished_at, a.id)
)
SELECT r.id, r.service, r.env, coalesce(s.group_name, 'default') AS group_name, r.kind,
       r.status, r.created_at, r.finished_at, r.duration_ms,
       CASE WHEN r.status = 'succeeded' AND r.kind = 'deploy'
            THEN (extract(epoch FROM r.finished_at - least(r.created_at, i.added_at))
                  * 1000)::bigint END AS lead_ms,
       (r.kind = 'deploy' AND r.status IN ('succeeded', 'failed')) AS change,
       (r.status = 'succeeded' AND a.next_kind IS NOT DISTINCT FROM 'rollback') AS rolled_back,
       (r.kind = 'deploy' AND (r.status = 'failed' OR (r.status = 'succeeded'
            AND a.next_kind IS NOT DISTINCT FROM 'rollback'))) AS change_failed,
       (r.status = 'failed' AND a.prev_status IS DISTINCT FROM 'failed') AS outage,
       CASE WHEN r.status = 'failed' AND a.prev_status IS DISTINCT FROM 'failed'
            THEN (extract(epoch FROM a.next_success_at - r.finished_at) * 1000)::bigint
       END AS restore_ms
FROM releases r
LEFT JOIN attempts a ON a.id = r.id
LEFT JOIN services s ON s.service = r.service AND s.env = r.env
LEFT JOIN images i ON i.service = r.service AND i.tag = r.version
WHERE r.finished_at IS NOT NULL;

-- The statistics of the releases that ended in [p_since, p_until), narrowed to a service,
-- an env and a group (NULL: any), and to what p_user may view (NULL: everything). One
-- jsonb: since, until, days, filters, fleet, envs[], groups[], services[] (each with the
-- metrics of relfleet_stats_metrics) and daily[] (per UTC day: counts by status, duration
-- p50/p90 of the attempts, failure rate), for the console's charts.
CREATE OR REPLACE FUNCTION relfleet_stats(p_since timestamptz, p_until timestamptz,
                                          p_service text, p_env text, p_group text,
                                          p_user text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
WITH f AS (
    SELECT * FROM relfleet_release_facts x
    WHERE x.finished_at >= p_since AND x.finished_at < p_until
      AND (p_service IS NULL OR x.service = p_service)
      AND (p_env IS NULL OR x.env = p_env)
      AND (p_group IS NULL OR x.group_name = p_group)
      AND (p_user IS NULL OR relfleet_has_role(p_user, 'viewer', x.service, x.env))
),
span AS (
    SELECT greatest(extract(epoch FROM p_until - p_since) / 86400.0, 1.0 / 1440) AS days
),
g AS (
    SELECT GROUPING(f.service, f.env, f.group_name) AS level, f.service, f.env, f.group_name,
        jsonb_build_object(
            'releases', count(*),
            'succeeded', count(*) FILTER (WHERE f.status = 'succeeded'),
            'failed', count(*) FILTER (WHERE f.status = 'failed'),
            'cancelled', count(*) FILTER (WHERE f.status = 'cancelled'),
            'superseded', count(*) FILTER (WHERE f.status = 'superseded'),
            'rejected', count(*) FILTER (WHERE f.status = 'rejected'),
            'deployments', count(*) FILTER (WHERE f.status = 'succeeded'),
            'deployment_frequency_per_day',
                round(count(*) FILTER (WHERE f.status = 'succeeded') / (SELECT days FROM span)
                      ::numeric, 3),
            'lead_time_ms', jsonb_build_object(
                'count', count(f.lead_ms),
                'p50', (percentile_cont(0.5) WITHIN GROUP (ORDER BY f.lead_ms))::bigint,
                'p90', (percentile_cont(0.9) WITHIN GROUP (ORDER BY f.lead_ms))::bigint,
                'mean', round(avg(f.lead_ms))::bigint),
            'changes', count(*) FILTER (WHERE f.change),
            'failed_changes', count(*) FILTER (WHERE f.change_failed),
            'rolled_back', count(*) FILTER (WHERE f.rolled_back),
            'change_failure_rate',
                CASE WHEN count(*) FILTER (WHERE f.change) > 0
                     THEN round(count(*) FILTER (WHERE f.change_failed)::numeric
                                / count(*) FILTER (WHERE f.change), 4) END,
            'outages', count(*) FILTER (WHERE f.outage),
            'unrestored', count(*) FILTER (WHERE f.outage AND f.restore_ms IS NULL),
            'time_to_restore_ms', jsonb_build_object(
                'count', count(f.restore_ms),
                'p50', (percentile_cont(0.5) WITHIN GROUP (ORDER BY f.restore_ms))::bigint,
                'p90', (percentile_cont(0.9) WITHIN GROUP (ORDER BY f.restore_ms))::bigint,
                'mean', round(avg(f.restore_ms))::bigint)) AS m
    FROM f
    GROUP BY GROUPING SETS ((), (f.env), (f.group_name), (f.service, f.env, f.group_name))
),
empty AS (
    -- The fleet's metrics when nothing ended in the window (GROUPING SETS gives no row).
    SELECT jsonb_build_object('releases', 0, 'succeeded', 0, 'failed', 0, 'cancelled', 0,
        'superseded', 0, 'rejected', 0, 'deployments', 0, 'deployment_frequency_per_day', 0,
        'lead_time_ms', jsonb_build_object('count', 0, 'p50', NULL, 'p90', NULL, 'mean', NULL),
        'changes', 0, 'failed_changes', 0, 'rolled_back', 0, 'change_failure_rate', NULL,
        'outages', 0, 'unrestored', 0,
        'time_to_restore_ms', jsonb_build_object('count', 0, 'p50', NULL, 'p90', NULL,
                                                 'mean', NULL)) AS m
),
days AS (
    SELECT d::date AS day
    FROM generate_series(date_trunc('day', p_since AT TIME ZONE 'UTC'),
                         (p_until - interval '1 microsecond') AT TIME ZONE 'UTC',
                         interval '1 day') AS d
),
daily AS (
    SELECT d.day,
        count(f.id) FILTER (WHERE f.status = 'succeeded') AS succeeded,
        count(f.id) FILTER (WHERE f.status = 'failed') AS failed,
        count(f.id) FILTER (WHERE f.status = 'cancelled') AS cancelled,
        count(f.id) FILTER (WHERE f.status = 'superseded') AS superseded,
        count(f.id) FILTER (WHERE f.status = 'rejected') AS rejected,
        (percentile_cont(0.5) WITHIN GROUP (ORDER BY f.duration_ms)
            FILTER (WHERE f.status IN ('succeeded', 'failed')))::bigint AS p50,
        (percentile_cont(0.9) WITHIN GROUP (ORDER BY f.duration_ms)
            FILTER (WHERE f.status IN ('succeeded', 'failed')))::bigint AS p90,
        (percentile_cont(0.5) WITHIN GROUP (ORDER BY f.lead_ms))::bigint AS lead_p50,
        count(f.id) FILTER (WHERE f.change) AS changes,
        count(f.id) FILTER (WHERE f.change_failed) AS failed_changes
    FROM days d
    LEFT JOIN f ON (f.finished_at AT TIME ZONE 'UTC')::date = d.day
    GROUP BY d.day
)
SELECT jsonb_build_object(
    'since', relfleet_iso(p_since), 'until', relfleet_iso(p_until),
    'days', round((SELECT days FROM span)::numeric, 3),
    'filters', jsonb_build_object('service', p_service, 'env', p_env, 'group', p_group),
    'fleet', coalesce((SELECT m FROM g WHERE level = 7), (SELECT m FROM empty)),
    'envs', coalesce((SELECT jsonb_agg(jsonb_build_object('env', env) || m ORDER BY env)
                      FROM g WHERE level = 5), '[]'),
    'groups', coalesce((SELECT jsonb_agg(jsonb_build_object('group', group_name) || m
                                         ORDER BY group_name)
                        FROM g WHERE level = 6), '[]'),
    'services', coalesce((SELECT jsonb_agg(jsonb_build_object('service', service, 'env', env,
                                                               'group', group_name) || m
                                           ORDER BY service, env)
                          FROM g WHERE level = 0), '[]'),
    'daily', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                  'date', to_char(day, 'YYYY-MM-DD'), 'succeeded', succeeded,
                  'failed', failed, 'cancelled', cancelled, 'superseded', superseded,
                  'rejected', rejected, 'duration_p50_ms', p50, 'duration_p90_ms', p90,
                  'lead_time_p50_ms', lead_p50,
                  'change_failure_rate', CASE WHEN changes > 0 THEN
                      round(failed_changes::numeric / changes, 4) END) ORDER BY day), '[]')
              FROM daily))
$$;

-- CloudEvents (docs/notifications.md): a webhook subscription's format. json: the result as
-- it is with Relfleet's headers; cloudevents: the same request plus the CloudEvents HTTP
-- binding's binary mode (ce-specversion, ce-id, ce-source, ce-type, ce-time, ce-subject).
ALTER TABLE notify_subscriptions ADD COLUMN format text NOT NULL DEFAULT 'json'
    CHECK (format IN ('json', 'cloudevents') AND (format = 'json' OR channel = 'webhook'));
