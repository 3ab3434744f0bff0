/* The render stage: request -> release row, service lock, manifests -> `rendered`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_auth.h"
#include "rf_buf.h"
#include "rf_json.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_msg.h"
#include "rf_release.h"
#include "rf_render.h"
#include "rf_store.h"
#include "common.h"
#include "gate.h"
#include "wave.h"
#include "rf_clock.h"
#include "validate.h"
#include "worker.h"

#define RENDER_CACHE 64
#define RENDER_WAVE_MS 200    /* how often the wave driver runs (workers/render/wave.c) */
#define RENDER_WAVE_LIMIT 200 /* most releases it creates in one round */

/* A compiled template, keyed by id and content version. */
typedef struct render_cached {
    char key[256];
    rf_render_template_t *tpl;
} render_cached_t;

typedef struct render_stage {
    rf_worker_t *w;
    long last_sweep_ms;
    long last_wave_ms;
    render_cached_t cache[RENDER_CACHE];
    int cache_next;
    render_validator_t *validator; /* manifests against the cluster's schema (validate.c) */
} render_stage_t;

/* The compiled template version id@version if this worker has it. A version is the
 * SHA-256 of the body (relctl template sync), so it never changes once stored. */
static rf_render_template_t *render_template_cached(render_stage_t *rs, const char *id,
                                                    const char *version)
{
    char key[256];

    snprintf(key, sizeof(key), "%s@%s", id, version);
    for (int i = 0; i < RENDER_CACHE; i++)
        if (rs->cache[i].tpl && strcmp(rs->cache[i].key, key) == 0)
            return rs->cache[i].tpl;
    return NULL;
}

/* The compiled form of a template version, compiled once per worker. */
static const rf_render_template_t *render_template(render_stage_t *rs, const char *id,
                                                   const char *version, const char *body,
                                                   size_t len, char *errstr, size_t errstr_size)
{
    char key[256];
    render_cached_t *slot;
    rf_render_template_t *tpl;

    tpl = render_template_cached(rs, id, version);
    if (tpl)
        return tpl;
    snprintf(key, sizeof(key), "%s@%s", id, version);
    tpl = rf_render_compile(id, body, len, errstr, errstr_size);
    if (!tpl)
        return NULL;
    slot = &rs->cache[rs->cache_next];
    rs->cache_next = (rs->cache_next + 1) % RENDER_CACHE;
    rf_render_template_destroy(slot->tpl);
    snprintf(slot->key, sizeof(slot->key), "%s", key);
    slot->tpl = tpl;
    return tpl;
}

/* Policy supersede: ends the running release of the service so that id can start. */
static rf_err_t render_supersede(render_stage_t *rs, const char *id, const char *service,
                                 const char *env, char *errstr, size_t errstr_size)
{
    const char *params[2] = {service, env};
    PGresult *res = NULL;
    char reason[200], active[64];
    int64_t fence;
    rf_err_t result;

    result = rf_db_exec(rs->w->db,
                        "SELECT id, fence FROM releases WHERE service = $1 AND env = $2"
                        " AND status IN (" RF_RELEASE_ACTIVE_SQL ")",
                        2, params, &res, errstr, errstr_size);
    if (result != RF_OK || PQntuples(res) == 0) {
        PQclear(res);
        return result; /* nothing active: the lock is stale and lapses by itself */
    }
    snprintf(active, sizeof(active), "%s", PQgetvalue(res, 0, 0));
    fence = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    snprintf(reason, sizeof(reason), "superseded by release %s", id);
    rf_log_info("superseding release %s", active);
    /* owed until this batch is delivered: a redelivered request finds nothing to supersede */
    result = rf_worker_end_other(rs->w, active, service, env, fence, "superseded", reason,
                                 errstr, errstr_size);
    return result == RF_ERR_FENCED ? RF_OK : result;
}

/* Ends a release that never started as rejected, and publishes its result. */
static rf_err_t render_reject(render_stage_t *rs, const char *id, const char *reason,
                              char *errstr, size_t errstr_size)
{
    rf_err_t result;

    rf_log_info("rejected: %s", reason);
    result = rf_store_finish(rs->w->db, id, 0, "rejected", reason, "render", reason, errstr,
                             errstr_size);
    if (result == RF_ERR_NOTFOUND || result == RF_ERR_FENCED)
        return RF_OK; /* ended (or started) meanwhile: whoever did that publishes */
    if (result == RF_OK)
        rf_metrics_add(rf_metrics_counter("relfleet_releases_finished_total",
                                          "Releases that reached a terminal state", "status"),
                       RF_LABELS("rejected"), 1);
    return result;
}

/* Publishes `rendered` from what the release row holds. */
static rf_err_t render_publish_rendered(render_stage_t *rs, const char *id, const char *key,
                                        char *errstr, size_t errstr_size)
{
    const char *params[1] = {id};
    PGresult *res = NULL;
    rf_err_t result;
    const char *text;

    result = rf_db_exec(rs->w->db,
                        "SELECT jsonb_build_object('schema', 'relfleet.rendered.v1',"
                        " 'release_id', r.id, 'service', r.service, 'env', r.env,"
                        " 'version', r.version, 'fence', r.fence, 'namespace', s.namespace,"
                        " 'manifests', r.manifests, 'manifests_sha256', r.manifests_sha256)"
                        " FROM releases r JOIN services s USING (service, env) WHERE r.id = $1",
                        1, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no release '%s'", id);
    }
    text = PQgetvalue(res, 0, 0);
    result = rf_producer_send(rs->w->producer, "rendered", key, text, strlen(text), errstr,
                              errstr_size);
    PQclear(res);
    return result;
}


/* The values a template sees: the service configuration, the release, its overrides. */
static json_t *render_values(PGresult *res, int row, const char *id)
{
    json_t *v = json_object();
    json_error_t jerr;
    json_t *extra, *overrides;
    const char *repo = rf_db_value(res, row, 9);
    char image[512];
    const char *version = rf_db_value(res, row, 2);

    json_object_set_new(v, "service", json_string(rf_db_value(res, row, 0)));
    json_object_set_new(v, "env", json_string(rf_db_value(res, row, 1)));
    json_object_set_new(v, "version", json_string(version));
    json_object_set_new(v, "namespace", json_string(rf_db_value(res, row, 4)));
    json_object_set_new(v, "replicas", json_integer(atoi(rf_db_value(res, row, 5))));
    json_object_set_new(v, "health_path", json_string(rf_db_value(res, row, 6)));
    json_object_set_new(v, "group", json_string(rf_db_value(res, row, 7)));
    json_object_set_new(v, "port", json_integer(atoi(rf_db_value(res, row, 8))));
    snprintf(image, sizeof(image), "%s:%s", repo ? repo : rf_db_value(res, row, 0), version);
    json_object_set_new(v, "image", json_string(image));
    json_object_set_new(v, "release_id", json_string(id));
    json_object_set_new(v, "operator", json_string(rf_db_value(res, row, 3)));
    extra = json_loads(rf_db_value(res, row, 10), 0, &jerr);
    if (json_is_object(extra))
        json_object_update_missing(v, extra);
    json_decref(extra);
    overrides = json_loads(rf_db_value(res, row, 11) ? rf_db_value(res, row, 11) : "null",
                           JSON_DECODE_ANY, &jerr);
    if (json_is_object(overrides))
        json_object_update(v, overrides);
    json_decref(overrides);
    return v;
}

/* A queued release q that may start: not one of a wave that is not running (a paused
 * wave's releases wait and step aside for the others of their service; sql/009_waves.sql). */
#define RENDER_WAVE_STARTABLE_SQL                                                                  \
    "(q.wave_id IS NULL OR EXISTS (SELECT 1 FROM waves wv WHERE wv.id = q.wave_id"                \
    " AND wv.status = 'running'))"

/* Loads, for each of the services $1 in the envs $2 (text arrays of the same length), the
 * oldest queued release with its service configuration and template (column 24: the release
 * id; 25-28 the promotion rules: requires, soak, approvals, and the approvals the release
 * waited for; 29 its wave; 31 which pair of $1/$2 it is, from 1). No row for a pair that has
 * none queued. */
static const char render_load_sql[] =
    "SELECT r.service, r.env, r.version, r.operator, s.namespace, s.replicas, s.health_path,"
    " s.group_name, s.port, s.image_repo, s.extra, r.request -> 'params',"
    " CASE WHEN r.kind IN ('rollback', 'deploy') AND r.request ? 'template_version'"
    " AND p.template_id IS NOT NULL THEN p.template_id ELSE s.template_id END,"
    " coalesce(r.request ->> 'template_version', h.version), s.fence, r.status,"
    " s.policy, (SELECT count(*) FROM images i WHERE i.service = r.service),"
    " (SELECT count(*) FROM images i WHERE i.service = r.service AND i.tag = r.version),"
    " (s.service IS NOT NULL), (r.request ->> 'restart')::boolean, r.kind, r.request::text,"
    " (extract(epoch FROM r.created_at) * 1000)::bigint, r.id,"
    " s.requires_env, s.soak_s, s.approvals, r.approvals_needed, r.wave_id,"
    " s.cluster AS service_cluster, k.n"
    " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(service, env, n)"
    " CROSS JOIN LATERAL (SELECT q.id FROM releases q WHERE q.service = k.service"
    " AND q.env = k.env AND q.status = 'queued' AND " RENDER_WAVE_STARTABLE_SQL
    " ORDER BY q.created_at, q.id LIMIT 1) o"
    " JOIN releases r ON r.id = o.id"
    " LEFT JOIN services s ON s.service = r.service AND s.env = r.env"
    " LEFT JOIN template_heads h ON h.id = s.template_id"
    " LEFT JOIN releases p ON p.id = r.parent"
    " ORDER BY k.n";
#define RENDER_LOAD_KEY 31

/* The start of a release in one statement: the fence becomes the service's newest ($2),
 * the queued release $1 becomes `applying` with what was rendered, and gets its two
 * timeline rows. Rows: how many services and releases it changed (1, 1 or nothing
 * happened that may stay: see render_record). Used one release at a time for a wave's
 * release (its slot trigger may refuse it) and when the batch statement failed. */
static const char render_start_sql[] =
    "WITH f AS (UPDATE services SET fence = $2::bigint WHERE service = $3 AND env = $4"
    " AND fence < $2::bigint RETURNING 1),"
    " u AS (UPDATE releases SET status = 'applying', fence = $2::bigint,"
    " started_at = clock_timestamp(), params = $5::jsonb, template_id = $6,"
    " template_version = $7, manifests = $8::json, manifests_sha256 = $9"
    " WHERE id = $1 AND status = 'queued' AND EXISTS (SELECT 1 FROM f) RETURNING id),"
    " t AS (INSERT INTO timeline (release_id, stage, event, status, message, data)"
    " SELECT u.id, 'render', e.event, e.event, e.message, e.data FROM u,"
    " (VALUES (1, 'rendering', $10, NULL::jsonb), (2, 'applying', $11, $12::jsonb))"
    " AS e (n, event, message, data) ORDER BY e.n)"
    " SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM u)";

/* The start of many releases (of distinct services, none of a wave) in one statement, so in
 * one transaction: $1 is a JSON array of {n, id, fence, service, env, params, template_id,
 * template_version, manifests, manifests_sha256, started, message, data}, as json: the
 * manifests go to their json column (sql/018) as the text render wrote, checked once,
 * instead of the whole array parsed into jsonb and the manifests written out again
 * (params and data, small, are each parsed into jsonb by themselves). Each release
 * that is still queued, of a service whose fence is older than its own, is locked with its
 * service row; the service takes its fence, the release becomes `applying` with its two
 * timeline rows; the others change nothing. Rows, in the order of n: id, whether it
 * started, and why not. A second active release of a service (23505) fails it all: the
 * caller then starts them one by one. The planner takes c, f and u for one row each, so
 * a join between two of them is a nested loop over a CTE scan, quadratic in the batch
 * (auto_explain: 38 of 100 ms for 256 releases): u finds f's ids as an array, and u
 * returns what t needs instead of t joining c to u. u tests the status as
 * `(r.status || '')`, which the predicate of releases_queued does not match, so that it
 * finds each row of c's by primary key: with `r.status = 'queued'` the planner took the
 * queued releases (guessed 1) from releases_queued as the outer side and scanned c again
 * for each, a filter of c's 200 ids over f's 200 each time (39,800 rows removed per
 * batch; 60 of 106 ms for 200 releases in a bench stack). */
static const char render_start_many_sql[] =
    "WITH x AS (SELECT * FROM json_to_recordset($1::json) AS x(n int, id uuid, fence bigint,"
    " service text, env text, params jsonb, template_id text, template_version text,"
    " manifests json, manifests_sha256 text, started text, message text, data jsonb)),"
    " c AS (SELECT x.* FROM x JOIN releases r ON r.id = x.id AND r.status = 'queued'"
    " JOIN services s ON s.service = x.service AND s.env = x.env AND s.fence < x.fence"
    " FOR UPDATE OF r, s),"
    " f AS (UPDATE services s SET fence = c.fence FROM c WHERE s.service = c.service"
    " AND s.env = c.env AND s.fence < c.fence RETURNING c.id),"
    " u AS (UPDATE releases r SET status = 'applying', fence = c.fence,"
    " started_at = clock_timestamp(), params = c.params, template_id = c.template_id,"
    " template_version = c.template_version, manifests = c.manifests,"
    " manifests_sha256 = c.manifests_sha256 FROM c WHERE r.id = c.id"
    " AND c.id = ANY (ARRAY(SELECT id FROM f)) AND (r.status || '') = 'queued'"
    " RETURNING r.id, c.n, c.started, c.message, c.data),"
    " t AS (INSERT INTO timeline (release_id, stage, event, status, message, data)"
    " SELECT u.id, 'render', e.event, e.event, e.message, e.data FROM u,"
    " LATERAL (VALUES (1, 'rendering', u.started, NULL::jsonb), (2, 'applying', u.message,"
    " u.data)) AS e (k, event, message, data) ORDER BY u.n, e.k)"
    " SELECT x.id, u.id IS NOT NULL, CASE WHEN u.id IS NOT NULL THEN ''"
    " WHEN s.fence >= x.fence THEN format('fence %s is older than the service''s', x.fence)"
    " ELSE 'release left ''queued'' meanwhile' END"
    " FROM x LEFT JOIN u ON u.id = x.id LEFT JOIN services s ON s.service = x.service"
    " AND s.env = x.env ORDER BY x.n";

/* The same for a release whose rendering failed after it took the lock: it started and
 * failed ($5: the reason). */
static const char render_fail_sql[] =
    "WITH f AS (UPDATE services SET fence = $2::bigint WHERE service = $3 AND env = $4"
    " AND fence < $2::bigint RETURNING 1),"
    " u AS (UPDATE releases SET status = 'failed', fence = $2::bigint, error = $5,"
    " started_at = clock_timestamp(), finished_at = clock_timestamp(), duration_ms = 0"
    " WHERE id = $1 AND status = 'queued' AND EXISTS (SELECT 1 FROM f) RETURNING id),"
    " t AS (INSERT INTO timeline (release_id, stage, event, status, message)"
    " SELECT u.id, 'render', e.event, e.event, e.message FROM u,"
    " (VALUES (1, 'rendering', $6), (2, 'failed', $5)) AS e (n, event, message) ORDER BY e.n)"
    " SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM u)";

/* Runs render_start_sql or render_fail_sql in a transaction of its own: all of it or,
 * when the fence is older than the service's, the release left 'queued' meanwhile or its
 * wave has no slot for it, nothing (RF_ERR_FENCED). */
static rf_err_t render_record(rf_worker_t *w, const char *sql, int nparams,
                              const char *const *params, char *errstr, size_t errstr_size)
{
    PGresult *res = NULL;
    rf_err_t result;

    result = rf_db_begin(w->db, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    result = rf_db_exec(w->db, sql, nparams, params, &res, errstr, errstr_size);
    if (result == RF_ERR_PERM && strcmp(rf_db_sqlstate(w->db), "RFW01") == 0)
        result = RF_ERR_FENCED; /* its wave is full or not running: it stays queued */
    if (result == RF_OK && strcmp(PQgetvalue(res, 0, 0), "1") != 0)
        result = rf_errf(RF_ERR_FENCED, errstr, errstr_size,
                         "fence %s is older than the service's", params[1]);
    else if (result == RF_OK && strcmp(PQgetvalue(res, 0, 1), "1") != 0)
        result = rf_errf(RF_ERR_FENCED, errstr, errstr_size, "release left 'queued' meanwhile");
    PQclear(res);
    if (result != RF_OK) {
        rf_db_rollback(w->db);
        return result;
    }
    return rf_db_commit(w->db, errstr, errstr_size);
}

/* Signature and role (docs/permissions.md): RF_OK with *allowed, reason filled when not. */
static rf_err_t render_authorize(render_stage_t *rs, PGresult *res, int row, const char *id,
                                 int *allowed, char *reason, size_t reason_size, char *errstr,
                                 size_t errstr_size)
{
    json_t *request = json_loads(rf_db_value(res, row, 22), 0, NULL);
    rf_err_t result;

    if (!request)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "stored request of '%s' is not JSON", id);
    if (rf_db_value(res, row, 29)) {
        /* A wave's release: only the wave driver writes wave_id (no request from Kafka
         * can), from the wave its creator made after relctl or relfleet-api checked them;
         * the creator must still be a releaser of the service (docs/waves.md). */
        json_decref(request);
        *allowed = 1;
        if (strcmp(rs->w->conf->auth_required, "on") != 0)
            return RF_OK;
        result = rf_auth_has_role(rs->w->db, rf_db_value(res, row, 3), RF_ROLE_RELEASER,
                                  rf_db_value(res, row, 0), rf_db_value(res, row, 1), allowed,
                                  errstr, errstr_size);
        if (result == RF_OK && !*allowed)
            snprintf(reason, reason_size,
                     "user '%s' has no releaser role for service '%s' in env '%s'",
                     rf_db_value(res, row, 3), rf_db_value(res, row, 0),
                     rf_db_value(res, row, 1));
        return result;
    }
    result = rf_auth_check(rs->w->db, rs->w->conf, request, id,
                           strtoll(rf_db_value(res, row, 23), NULL, 10), RF_ROLE_RELEASER,
                           rf_db_value(res, row, 0), rf_db_value(res, row, 1), allowed, reason,
                           reason_size, errstr, errstr_size);
    json_decref(request);
    return result;
}

/* Restarts the pods of every Deployment even when nothing else changed, as
 * `kubectl rollout restart` does: an annotation on the pod template. */
static void render_add_restart(json_t *manifests)
{
    char now[40];
    size_t i;
    json_t *m;

    rf_msg_now_iso(now, sizeof(now));
    json_array_foreach(manifests, i, m) {
        json_t *tpl, *meta, *ann;
        if (!json_is_string(json_object_get(m, "kind")) ||
            strcmp(json_string_value(json_object_get(m, "kind")), "Deployment") != 0)
            continue;
        tpl = json_object_get(json_object_get(m, "spec"), "template");
        if (!json_is_object(tpl))
            continue;
        meta = json_object_get(tpl, "metadata");
        if (!json_is_object(meta)) {
            meta = json_object();
            json_object_set_new(tpl, "metadata", meta);
        }
        ann = json_object_get(meta, "annotations");
        if (!json_is_object(ann)) {
            ann = json_object();
            json_object_set_new(meta, "annotations", ann);
        }
        json_object_set_new(ann, "kubectl.kubernetes.io/restartedAt", json_string(now));
    }
}

/* Where a release being started stands. */
typedef enum render_step {
    RENDER_DONE = 0, /* result says what became of it */
    RENDER_LOCK,     /* passed its checks: takes the lock */
    RENDER_RECORD,   /* locked and rendered: recorded as started */
} render_step_t;

/* One queued release being started: its row of render_load_sql and what became of it. The
 * outcome goes to the errstr and result of its service (the caller's key). */
typedef struct render_job {
    PGresult *res;
    int row;
    size_t k; /* index of its service in the caller's arrays */
    render_step_t step;
    int awaited; /* it went to awaiting_approval: the next queued one may start */
    char id[64], key[300], fence_s[24], digest[65], msg[512], started[100];
    const char *service, *env, *tpl_id, *tpl_version;
    PGresult *tres; /* the template's body when this worker had not compiled it */
    int64_t floor, fence;
    json_t *values, *manifests, *rendered;
    char *manifests_text, *values_text, *data_text, *warnings;
    rf_err_t result;
    char *errstr;
    size_t errstr_size;
} render_job_t;

static void render_job_release(render_job_t *j)
{
    PQclear(j->tres);
    free(j->warnings);
    free(j->data_text);
    free(j->manifests_text);
    free(j->values_text);
    json_decref(j->rendered);
    json_decref(j->values);
    json_decref(j->manifests);
}

static void render_job_ctx(const render_job_t *j)
{
    rf_log_ctx_set("release", j->id);
    rf_log_ctx_set("service", j->service);
    rf_log_ctx_set("env", j->env);
}

/* Not started: frees the gate for whoever may start instead (a failure here only leaves
 * the lock to lapse). */
static void render_unlock(render_stage_t *rs, render_job_t *j)
{
    char err[256];

    rf_lock_release(rs->w->lock, j->env, j->service, j->id, err, sizeof(err));
}

/* The body of the job's template version unless this worker has it compiled (j->tres: no
 * row when there is no such version). */
static rf_err_t render_template_body(render_stage_t *rs, render_job_t *j)
{
    const char *tp[2] = {j->tpl_id, j->tpl_version};

    if (!j->tpl_version || j->tres || render_template_cached(rs, j->tpl_id, j->tpl_version))
        return RF_OK;
    return rf_db_exec(rs->w->db, "SELECT body FROM templates WHERE id = $1 AND version = $2", 2,
                      tp, &j->tres, j->errstr, j->errstr_size);
}

/* The checks before the lock: signature and role, service and version known, promotion
 * rules, template. Passed: step RENDER_LOCK; otherwise ended here (rejected, awaiting
 * approval) or an error, in result. */
static void render_check(render_stage_t *rs, render_job_t *j)
{
    rf_worker_t *w = rs->w;
    PGresult *res = j->res;
    const int row = j->row;
    char reason[1024];
    int allowed = 0;
    rf_err_t result;

    j->step = RENDER_DONE;
    result = render_authorize(rs, res, row, j->id, &allowed, reason, sizeof(reason), j->errstr,
                              j->errstr_size);
    if (result != RF_OK)
        goto out;
    if (!allowed)
        goto reject;
    if (strcmp(rf_db_value(res, row, 19), "t") != 0) {
        snprintf(reason, sizeof(reason), "unknown service '%s' in env '%s'", j->service, j->env);
        goto reject;
    }
    /* A rollback goes back to what ran then, even a version since dropped from the list. */
    if (atoi(rf_db_value(res, row, 17)) > 0 && atoi(rf_db_value(res, row, 18)) == 0 &&
        strcmp(rf_db_value(res, row, 21), "rollback") != 0) {
        snprintf(reason, sizeof(reason), "unknown version '%s' of service '%s'",
                 rf_db_value(res, row, 2), j->service);
        goto reject;
    }
    /* Promotion rules (gate.c): requires/soak reject here, approvals make it wait. */
    {
        render_gate_rules_t rules = {
            j->service,
            j->env,
            rf_db_value(res, row, 2),
            rf_db_value(res, row, 21),
            rf_db_value(res, row, 25),
            rf_db_value(res, row, 26) ? atol(rf_db_value(res, row, 26)) : 0,
            rf_db_value(res, row, 27) ? atoi(rf_db_value(res, row, 27)) : 0,
            rf_db_value(res, row, 28) != NULL};
        int verdict = RENDER_GATE_PASS;
        result = render_gate_check(w->db, &rules, &verdict, reason, sizeof(reason), j->errstr,
                                   j->errstr_size);
        if (result != RF_OK)
            goto out;
        if (verdict == RENDER_GATE_REJECT)
            goto reject;
        if (verdict == RENDER_GATE_AWAIT) {
            /* Holds no lock: the next queued release of the service may start instead. */
            result = render_gate_await(w->db, j->id, &rules, j->errstr, j->errstr_size);
            j->awaited = result == RF_OK;
            goto out;
        }
    }
    j->tpl_id = rf_db_value(res, row, 12);
    j->tpl_version = rf_db_value(res, row, 13);
    result = render_template_body(rs, j);
    if (result != RF_OK)
        goto out;
    if (!j->tpl_version || (j->tres && PQntuples(j->tres) != 1)) {
        snprintf(reason, sizeof(reason), "template '%s'%s%s is missing", j->tpl_id,
                 j->tpl_version ? " version " : "", j->tpl_version ? j->tpl_version : "");
        goto reject;
    }
    /* Compiled now, so that the batch's other releases of it find it cached; one that does
     * not compile fails its release after the lock (render_build compiles it again). */
    if (j->tres)
        render_template(rs, j->tpl_id, j->tpl_version, PQgetvalue(j->tres, 0, 0),
                        (size_t)PQgetlength(j->tres, 0, 0), reason, sizeof(reason));
    /* The lock: Redis is the gate, PostgreSQL the authority (DESIGN.md). */
    j->floor = strtoll(rf_db_value(res, row, 14), NULL, 10);
    j->step = RENDER_LOCK;
    goto out;
reject:
    result = render_reject(rs, j->id, reason, j->errstr, j->errstr_size);
    if (result == RF_OK)
        result = rf_worker_publish_result(rs->w, j->id, j->key, j->errstr, j->errstr_size);
out:
    j->result = result;
}

/* Takes the locks of the jobs at RENDER_LOCK in one pipelined round trip. A busy service
 * under policy supersede ends its running release and is tried again, alone. Acquired:
 * still RENDER_LOCK with its fence; busy or an error: done. */
static void render_lock(render_stage_t *rs, render_job_t *jobs, size_t n)
{
    rf_worker_t *w = rs->w;
    rf_lock_take_t *takes = calloc(n ? n : 1, sizeof(*takes));
    render_job_t **of = calloc(n ? n : 1, sizeof(*of));
    size_t m = 0;
    rf_err_t result;

    if (!takes || !of)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].step != RENDER_LOCK)
            continue;
        takes[m] = (rf_lock_take_t){jobs[i].env, jobs[i].service, jobs[i].id, jobs[i].floor,
                                    0, 0, ""};
        of[m++] = &jobs[i];
    }
    if (m == 0)
        goto out;
    result = rf_lock_acquire_many(w->lock, takes, m, w->conf->lock_lease_ms, of[0]->errstr,
                                  of[0]->errstr_size);
    if (result != RF_OK) {
        /* Some may be ours now: freed (compare-and-delete), else they lapse. */
        rf_lock_item_t *items = calloc(m, sizeof(*items));
        char err[256];
        if (!items)
            abort();
        for (size_t i = 0; i < m; i++) {
            items[i] = (rf_lock_item_t){takes[i].env, takes[i].service, takes[i].release_id, 0};
            of[i]->step = RENDER_DONE;
            of[i]->result = result;
            if (i > 0)
                snprintf(of[i]->errstr, of[i]->errstr_size, "%s", of[0]->errstr);
        }
        rf_lock_release_many(w->lock, items, m, err, sizeof(err));
        free(items);
        goto out;
    }
    for (size_t i = 0; i < m; i++) {
        render_job_t *j = of[i];
        int acquired = takes[i].acquired;
        int64_t fence = takes[i].fence;

        render_job_ctx(j);
        if (!acquired && strcmp(rf_db_value(j->res, j->row, 16), "supersede") == 0) {
            result = render_supersede(rs, j->id, j->service, j->env, j->errstr, j->errstr_size);
            if (result == RF_OK)
                result = rf_lock_acquire(w->lock, j->env, j->service, j->id,
                                         w->conf->lock_lease_ms, j->floor, &acquired, &fence,
                                         takes[i].holder, j->errstr, j->errstr_size);
            if (result != RF_OK) {
                j->step = RENDER_DONE;
                j->result = result;
                continue;
            }
        }
        rf_metrics_add(rf_metrics_counter("relfleet_lock_waits_total",
                                          "Attempts to take a service lock, by outcome",
                                          "outcome"),
                       RF_LABELS(acquired ? "acquired" : "busy"), 1);
        if (!acquired) {
            rf_log_info("service busy with release %s; staying queued", takes[i].holder);
            j->step = RENDER_DONE;
            j->result = RF_OK;
            continue;
        }
        j->fence = fence;
        snprintf(j->fence_s, sizeof(j->fence_s), "%lld", (long long)fence);
    }
out:
    rf_log_ctx_clear();
    free(takes);
    free(of);
}

/* Rendering failed after the lock was taken: the release started and failed. */
static void render_fail(render_stage_t *rs, render_job_t *j, const char *reason)
{
    char msg[512];
    const char *up[6] = {j->id, j->fence_s, j->service, j->env, reason, msg};
    rf_err_t result;

    snprintf(msg, sizeof(msg), "lock acquired (fence %s)", j->fence_s);
    result = render_record(rs->w, render_fail_sql, 6, up, j->errstr, j->errstr_size);
    rf_log_info("render failed: %s", reason);
    render_unlock(rs, j);
    if (result == RF_OK)
        result = rf_worker_publish_result(rs->w, j->id, j->key, j->errstr, j->errstr_size);
    else if (result == RF_ERR_FENCED)
        result = RF_OK;
    j->step = RENDER_DONE;
    j->result = result;
}

/* Renders a locked job and checks what it rendered. Ready: RENDER_RECORD with the texts
 * the start statement takes; else failed, rejected (invalid manifests) or, when the
 * cluster's schema is out of reach, unlocked and retried. */
static void render_build(render_stage_t *rs, render_job_t *j)
{
    rf_worker_t *w = rs->w;
    PGresult *res = j->res;
    const int row = j->row;
    const rf_render_template_t *tpl;
    char reason[1024], invalid[4800];
    rf_err_t result = RF_OK;

    j->values = render_values(res, row, j->id);
    /* The compiled template, looked up (or compiled) here and used at once: compiling
     * another job's template may push it out of the cache. */
    result = render_template_body(rs, j);
    if (result != RF_OK) {
        render_unlock(rs, j);
        j->step = RENDER_DONE;
        j->result = result;
        return;
    }
    tpl = render_template_cached(rs, j->tpl_id, j->tpl_version);
    if (!tpl && j->tres && PQntuples(j->tres) == 1)
        tpl = render_template(rs, j->tpl_id, j->tpl_version, PQgetvalue(j->tres, 0, 0),
                              (size_t)PQgetlength(j->tres, 0, 0), reason, sizeof(reason));
    else if (!tpl)
        snprintf(reason, sizeof(reason), "template '%s' version %s is missing", j->tpl_id,
                 j->tpl_version);
    if (!tpl) {
        render_fail(rs, j, reason);
        return;
    }
    result = rf_render_exec(tpl, j->values, &j->manifests, reason, sizeof(reason));
    if (result != RF_OK) {
        render_fail(rs, j, reason);
        return;
    }
    if (rf_db_value(res, row, 20) && strcmp(rf_db_value(res, row, 20), "t") == 0)
        render_add_restart(j->manifests);
    /* What the cluster would refuse is refused here, before anything is applied: the
     * release goes from queued to rejected naming each error (render_validation). */
    result = render_validate(rs->validator, tpl, j->tpl_id, j->values, j->manifests, j->env,
                             rf_db_value(res, row, PQfnumber(res, "service_cluster")),
                             &j->warnings, invalid, sizeof(invalid), j->errstr, j->errstr_size);
    if (result == RF_ERR_PERM) {
        /* Still queued: it ends rejected without starting, the lock taken for it is freed
         * and the service's next queued release may start. */
        result = render_reject(rs, j->id, invalid, j->errstr, j->errstr_size);
        render_unlock(rs, j);
        if (result == RF_OK)
            result = rf_worker_publish_result(rs->w, j->id, j->key, j->errstr, j->errstr_size);
        if (result == RF_OK)
            result = rf_worker_kick_next(w, j->service, j->env, j->errstr, j->errstr_size);
        j->step = RENDER_DONE;
        j->result = result;
        return;
    }
    if (result != RF_OK) {
        /* the cluster's schema is out of reach: stays queued, retried */
        render_unlock(rs, j);
        j->step = RENDER_DONE;
        j->result = result;
        return;
    }
    if (rf_render_canonical(j->manifests, &j->manifests_text, j->digest) != RF_OK) {
        render_fail(rs, j, "cannot serialise the manifests");
        return;
    }
    /* What the apply stage will receive must be valid (Kubernetes names above all): a
     * release whose template produced a bad name fails here, with the reason. */
    {
        char why[768];
        j->rendered = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:O, s:s}", "schema",
                                "relfleet.rendered.v1", "release_id", j->id, "service",
                                j->service, "env", j->env, "version", rf_db_value(res, row, 2),
                                "fence", (json_int_t)j->fence, "namespace",
                                rf_db_value(res, row, 4), "manifests", j->manifests,
                                "manifests_sha256", j->digest);
        if (rf_schema_validate(w->schemas, "relfleet.rendered.v1", j->rendered, why,
                               sizeof(why)) != RF_OK) {
            snprintf(reason, sizeof(reason), "cannot render template '%s': %s", j->tpl_id, why);
            render_fail(rs, j, reason);
            return;
        }
    }
    j->values_text = rf_json_dumps(j->values, RF_JSON_SORT_KEYS);
    {
        json_t *data = json_pack("{s:s, s:s, s:s, s:I}", "template", j->tpl_id,
                                 "template_version", j->tpl_version, "sha256", j->digest,
                                 "objects", (json_int_t)json_array_size(j->manifests));
        j->data_text = rf_json_dumps(data, 0);
        json_decref(data);
    }
    snprintf(j->started, sizeof(j->started), "lock acquired (fence %s)", j->fence_s);
    snprintf(j->msg, sizeof(j->msg), "rendered %zu objects from template '%s' (sha256 %.12s)%s%s",
             json_array_size(j->manifests), j->tpl_id, j->digest, j->warnings ? "; " : "",
             j->warnings ? j->warnings : "");
    j->step = RENDER_RECORD;
}

/* Started: `rendered` is what the row now holds, built here, not read back: the message
 * less its manifests through jansson, then the manifests as the row holds them (their
 * canonical text: the same JSON, keys sorted), so they are not written out twice. */
static void render_started(render_stage_t *rs, render_job_t *j)
{
    rf_buf_t text = RF_BUF_INIT;
    char *head;

    rf_log_info("rendered %zu objects, fence %s", json_array_size(j->manifests), j->fence_s);
    json_object_del(j->rendered, "manifests");
    head = rf_json_dumps(j->rendered, 0);
    if (!head)
        abort();
    rf_buf_add(&text, head, strlen(head) - 1); /* without its closing brace */
    rf_buf_adds(&text, ",\"manifests\":");
    rf_buf_adds(&text, j->manifests_text);
    rf_buf_addc(&text, '}');
    free(head);
    j->result = rf_producer_send(rs->w->producer, "rendered", j->key, rf_buf_str(&text),
                                 text.len, j->errstr, j->errstr_size);
    rf_buf_release(&text);
    j->step = RENDER_DONE;
}

/* Records one job as started in a transaction of its own (render_start_sql): a wave's
 * release, or each of a batch whose statement failed. */
static void render_record_one(render_stage_t *rs, render_job_t *j)
{
    const char *up[12] = {j->id,          j->fence_s,      j->service,      j->env,
                          j->values_text, j->tpl_id,       j->tpl_version,  j->manifests_text,
                          j->digest,      j->started,      j->msg,          j->data_text};
    int supersede_active = 0;
    rf_err_t result;

    render_job_ctx(j);
    result = render_record(rs->w, render_start_sql, 12, up, j->errstr, j->errstr_size);
    if (result == RF_ERR_PERM && strcmp(rf_db_sqlstate(rs->w->db), "23505") == 0) {
        /* Redis let us in but PostgreSQL still has an active release (the lock lapsed or
         * Redis lost it): under supersede it is ended first, then we retry. */
        supersede_active = strcmp(rf_db_value(j->res, j->row, 16), "supersede") == 0;
        result = rf_errf(RF_ERR_FENCED, j->errstr, j->errstr_size,
                         "another release of the service is active in the database");
    }
    if (result == RF_OK) {
        render_started(rs, j);
        return;
    }
    render_unlock(rs, j);
    j->step = RENDER_DONE;
    if (supersede_active) {
        result = render_supersede(rs, j->id, j->service, j->env, j->errstr, j->errstr_size);
        if (result == RF_OK)
            result = rf_errf(RF_ERR_RETRY, j->errstr, j->errstr_size,
                             "superseded the active release; starting this one next");
    } else if (result == RF_ERR_FENCED) {
        rf_log_warn("not started: %s", j->errstr);
        result = RF_OK;
    }
    j->result = result;
}

/* Appends one job's row of render_start_many_sql's $1: the small fields through jansson,
 * the rendered texts (already JSON) as they are. */
static void render_record_row(rf_buf_t *b, const render_job_t *j, size_t n)
{
    json_t *o = json_pack("{s:I, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "n",
                          (json_int_t)n, "id", j->id, "fence", (json_int_t)j->fence, "service",
                          j->service, "env", j->env, "template_id", j->tpl_id,
                          "template_version", j->tpl_version, "manifests_sha256", j->digest,
                          "started", j->started, "message", j->msg);
    char *text = rf_json_dumps(o, 0);

    if (!o || !text)
        abort();
    /* text ends with '}': the JSON values follow before it */
    rf_buf_add(b, text, strlen(text) - 1);
    rf_buf_adds(b, ",\"params\":");
    rf_buf_adds(b, j->values_text);
    rf_buf_adds(b, ",\"manifests\":");
    rf_buf_adds(b, j->manifests_text);
    rf_buf_adds(b, ",\"data\":");
    rf_buf_adds(b, j->data_text);
    rf_buf_addc(b, '}');
    free(text);
    json_decref(o);
}

/* Records the jobs at RENDER_RECORD as started: those of no wave in one statement over
 * arrays, a wave's release alone (its slot trigger may refuse it, which would fail the
 * statement for all). A failed statement is done again one job at a time (render_record_one:
 * a second active release, an error of one row), except a retriable error: then every job
 * is unlocked and retried. */
static void render_record_all(render_stage_t *rs, render_job_t *jobs, size_t n)
{
    rf_worker_t *w = rs->w;
    render_job_t **batch = calloc(n ? n : 1, sizeof(*batch));
    rf_buf_t rows = RF_BUF_INIT;
    PGresult *res = NULL;
    size_t m = 0;
    rf_err_t result;

    if (!batch)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].step != RENDER_RECORD)
            continue;
        if (rf_db_value(jobs[i].res, jobs[i].row, 29)) {
            render_record_one(rs, &jobs[i]); /* a wave's release, in its place */
            continue;
        }
        batch[m++] = &jobs[i];
    }
    if (m == 0)
        goto out;
    rf_buf_addc(&rows, '[');
    for (size_t i = 0; i < m; i++) {
        if (i > 0)
            rf_buf_addc(&rows, ',');
        render_record_row(&rows, batch[i], i);
    }
    rf_buf_addc(&rows, ']');
    {
        const char *params[1] = {rf_buf_str(&rows)};
        result = rf_db_exec(w->db, render_start_many_sql, 1, params, &res, batch[0]->errstr,
                            batch[0]->errstr_size);
    }
    if (result == RF_OK && PQntuples(res) != (int)m)
        result = rf_errf(RF_ERR_RETRY, batch[0]->errstr, batch[0]->errstr_size,
                         "the start of %zu releases answered %d rows", m, PQntuples(res));
    if (result == RF_ERR_RETRY) {
        for (size_t i = 0; i < m; i++) {
            render_unlock(rs, batch[i]);
            batch[i]->step = RENDER_DONE;
            batch[i]->result = result;
            if (i > 0)
                snprintf(batch[i]->errstr, batch[i]->errstr_size, "%s", batch[0]->errstr);
        }
        goto out;
    }
    if (result != RF_OK) {
        rf_log_info("the start of %zu releases at once failed (%s): one by one", m,
                    batch[0]->errstr);
        for (size_t i = 0; i < m; i++)
            render_record_one(rs, batch[i]);
        goto out;
    }
    /* rows in the order of n: the jobs' order */
    for (size_t i = 0; i < m; i++) {
        render_job_t *j = batch[i];
        render_job_ctx(j);
        if (strcmp(PQgetvalue(res, (int)i, 1), "t") == 0) {
            render_started(rs, j);
            continue;
        }
        render_unlock(rs, j);
        rf_log_warn("not started: %s", PQgetvalue(res, (int)i, 2));
        j->step = RENDER_DONE;
        j->result = RF_OK;
    }
out:
    rf_log_ctx_clear();
    PQclear(res);
    rf_buf_release(&rows);
    free(batch);
}

/* Appends s to a PostgreSQL array literal as a quoted element. */
static void render_array_add(rf_buf_t *b, const char *s)
{
    rf_buf_addc(b, b->len == 0 ? '{' : ',');
    rf_buf_addc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            rf_buf_addc(b, '\\');
        rf_buf_addc(b, *s);
    }
    rf_buf_addc(b, '"');
}

/*
 * Tries to start the oldest queued release of each of n services (services[i] in envs[i],
 * distinct pairs), as many at once as can be: one load of them all, the checks of each, the
 * locks in one pipelined round trip, the renders, one statement that starts them (fences,
 * `applying`, timelines), then their `rendered` messages (queued when inside a poll batch).
 * results[i] and errstrs[i] are that service's outcome: RF_OK also when none is queued or
 * it stays queued behind a busy service. A release that went to awaiting approval lets the
 * next queued one of its service be tried, as if it had been asked again.
 */
static void render_start_many(render_stage_t *rs, const char *const *services,
                              const char *const *envs, size_t n, rf_err_t *results,
                              char *const *errstrs, size_t errstr_size)
{
    rf_worker_t *w = rs->w;
    rf_buf_t sv = RF_BUF_INIT, ev = RF_BUF_INIT;
    render_job_t *jobs = NULL;
    PGresult *res = NULL;
    const char **again_s = NULL, **again_e = NULL;
    size_t *again_k = NULL, nagain = 0;
    int rows;
    rf_err_t result;

    for (size_t i = 0; i < n; i++)
        results[i] = RF_OK;
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        render_array_add(&sv, services[i]);
        render_array_add(&ev, envs[i]);
    }
    rf_buf_addc(&sv, '}');
    rf_buf_addc(&ev, '}');
    {
        const char *params[2] = {rf_buf_str(&sv), rf_buf_str(&ev)};
        result = rf_db_exec(w->db, render_load_sql, 2, params, &res, errstrs[0], errstr_size);
    }
    rf_buf_release(&sv);
    rf_buf_release(&ev);
    if (result != RF_OK) {
        for (size_t i = 0; i < n; i++) {
            results[i] = result;
            if (i > 0)
                snprintf(errstrs[i], errstr_size, "%s", errstrs[0]);
        }
        return;
    }
    rows = PQntuples(res);
    jobs = calloc(rows ? (size_t)rows : 1, sizeof(*jobs));
    if (!jobs)
        abort();
    for (int r = 0; r < rows; r++) {
        render_job_t *j = &jobs[r];
        long k = strtol(PQgetvalue(res, r, RENDER_LOAD_KEY), NULL, 10) - 1;

        j->res = res;
        j->row = r;
        j->k = k >= 0 && (size_t)k < n ? (size_t)k : 0;
        j->errstr = errstrs[j->k];
        j->errstr_size = errstr_size;
        snprintf(j->id, sizeof(j->id), "%s", rf_db_value(res, r, 24));
        j->service = rf_db_value(res, r, 0);
        j->env = rf_db_value(res, r, 1);
        snprintf(j->key, sizeof(j->key), "%s/%s", j->env, j->service);
        render_job_ctx(j);
        render_check(rs, j);
        rf_log_ctx_clear();
    }
    render_lock(rs, jobs, (size_t)rows);
    for (int r = 0; r < rows; r++) {
        if (jobs[r].step != RENDER_LOCK)
            continue;
        render_job_ctx(&jobs[r]);
        render_build(rs, &jobs[r]);
        rf_log_ctx_clear();
    }
    render_record_all(rs, jobs, (size_t)rows);
    for (int r = 0; r < rows; r++) {
        results[jobs[r].k] = jobs[r].result;
        if (jobs[r].awaited)
            nagain++;
    }
    if (nagain > 0) {
        again_s = calloc(nagain, sizeof(*again_s));
        again_e = calloc(nagain, sizeof(*again_e));
        again_k = calloc(nagain, sizeof(*again_k));
        if (!again_s || !again_e || !again_k)
            abort();
        nagain = 0;
        for (int r = 0; r < rows; r++) {
            if (!jobs[r].awaited)
                continue;
            again_s[nagain] = services[jobs[r].k];
            again_e[nagain] = envs[jobs[r].k];
            again_k[nagain++] = jobs[r].k;
        }
    }
    for (int r = 0; r < rows; r++)
        render_job_release(&jobs[r]);
    free(jobs);
    PQclear(res);
    if (nagain > 0) {
        rf_err_t *res2 = calloc(nagain, sizeof(*res2));
        char **errs2 = calloc(nagain, sizeof(*errs2));
        if (!res2 || !errs2)
            abort();
        for (size_t i = 0; i < nagain; i++)
            errs2[i] = errstrs[again_k[i]];
        render_start_many(rs, again_s, again_e, nagain, res2, errs2, errstr_size);
        for (size_t i = 0; i < nagain; i++)
            results[again_k[i]] = res2[i];
        free(res2);
        free(errs2);
    }
    free(again_s);
    free(again_e);
    free(again_k);
}

/* Tries to start the oldest queued release of env/service (render_start_many for one). */
static rf_err_t render_start(render_stage_t *rs, const char *service, const char *env,
                             char *errstr, size_t errstr_size)
{
    rf_err_t result;
    char *errs[1] = {errstr};

    render_start_many(rs, &service, &env, 1, &result, errs, errstr_size);
    return result;
}

/* A request message of a poll batch and what became of it. */
typedef struct render_msg {
    const rf_input_t *in;
    const char *id, *service, *env;
    char key[300];
    char status[32]; /* of its release once recorded; "" until then */
    rf_err_t result;
    char *errstr;
    size_t errstr_size;
} render_msg_t;

/* Records requests once each, with their `queued` timeline rows, in one statement; then
 * says, in the order of n, what each row holds: status and whether its request is this
 * one (a redelivery) or not (another request with the same id). Status NULL: another
 * worker is recording the same id right now. A request's created_at is the statement's
 * time plus n microseconds, so that two requests of one service in one batch queue in
 * their order, as two statements would. A request refused here (its id already holds
 * other content, recorded or earlier in the batch) is dead-lettered once the hook
 * returns: the requests of its service after it are not recorded ('deferred') but
 * redelivered after the dead letter, so that a service's effects keep their order. The
 * queued rows take each id's first message by a join (a subquery per row scanned x once
 * per row: 30 of 42 ms for 256 requests). */
static const char render_insert_sql[] =
    "WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(n int, id uuid, service text,"
    " env text, version text, kind text, parent uuid, operator text, description text,"
    " request jsonb, message text)),"
    " refused AS (SELECT x.service, x.env, min(x.n) AS n FROM x"
    " JOIN (SELECT DISTINCT ON (id) id, request FROM x ORDER BY id, n) fi ON fi.id = x.id"
    " LEFT JOIN releases r ON r.id = x.id WHERE coalesce(r.request, fi.request) <> x.request"
    " GROUP BY x.service, x.env),"
    " ins AS (INSERT INTO releases (id, service, env, version, kind, parent, operator,"
    " description, status, request, created_at) SELECT DISTINCT ON (x.id) x.id, x.service,"
    " x.env, x.version, x.kind, x.parent, x.operator, x.description, 'queued', x.request,"
    " now() + x.n * interval '1 microsecond' FROM x LEFT JOIN refused f ON"
    " f.service = x.service AND f.env = x.env WHERE f.n IS NULL OR x.n < f.n ORDER BY x.id, x.n"
    " ON CONFLICT (id) DO NOTHING RETURNING id, request),"
    " ev AS (INSERT INTO timeline (release_id, stage, event, status, message)"
    " SELECT i.id, 'render', 'queued', 'queued', m.message FROM ins i"
    " JOIN (SELECT DISTINCT ON (id) id, message FROM x ORDER BY id, n) m ON m.id = i.id"
    " ORDER BY i.id)"
    " SELECT x.n, CASE WHEN f.n < x.n THEN 'deferred' WHEN i.id IS NOT NULL THEN 'queued'"
    " ELSE r.status END, coalesce(i.request, r.request) = x.request"
    " FROM x LEFT JOIN ins i ON i.id = x.id LEFT JOIN releases r ON r.id = x.id"
    " LEFT JOIN refused f ON f.service = x.service AND f.env = x.env ORDER BY x.n";

/* The row of render_insert_sql's $1 for one request. */
static json_t *render_insert_row(const render_msg_t *m, size_t n)
{
    const json_t *b = m->in->body;
    const char *desc = json_string_value(json_object_get(b, "description"));
    const char *kind = json_string_value(json_object_get(b, "kind"));
    const char *version = json_string_value(json_object_get(b, "version"));
    const char *op = json_string_value(json_object_get(b, "operator"));
    char msg[1200];

    snprintf(msg, sizeof(msg), "%s of version %s requested by %s%s%s", kind, version, op,
             desc && *desc ? ": " : "", desc ? desc : "");
    return json_pack("{s:I, s:s, s:s, s:s, s:s?, s:s?, s:O, s:s?, s:s, s:O, s:s}", "n",
                     (json_int_t)n, "id", m->id, "service", m->service, "env", m->env,
                     "version", version, "kind", kind, "parent",
                     json_object_get(b, "parent") ? json_object_get(b, "parent") : json_null(),
                     "operator", op, "description", desc ? desc : "", "request", b,
                     "message", msg);
}

/* Records msgs[from, to) with one statement; each gets its status, or its result when it
 * cannot go on (another request under its id: permanent; recorded by another worker right
 * now: retried). */
static rf_err_t render_insert(render_stage_t *rs, render_msg_t **msgs, size_t n, char *errstr,
                              size_t errstr_size)
{
    json_t *rows = json_array();
    char *text;
    PGresult *res = NULL;
    rf_err_t result;

    for (size_t i = 0; i < n; i++)
        json_array_append_new(rows, render_insert_row(msgs[i], i));
    text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    if (!text)
        abort();
    {
        const char *params[1] = {text};
        result = rf_db_exec(rs->w->db, render_insert_sql, 1, params, &res, errstr, errstr_size);
    }
    free(text);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) != (int)n) {
        PQclear(res);
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                       "the record of %zu requests answered %d rows", n, PQntuples(res));
    }
    for (size_t i = 0; i < n; i++) {
        render_msg_t *m = msgs[i];
        if (strcmp(PQgetvalue(res, (int)i, 1), "deferred") == 0)
            m->result = rf_errf(RF_ERR_RETRY, m->errstr, m->errstr_size,
                                "an earlier request of '%s' is refused", m->key);
        else if (PQgetisnull(res, (int)i, 1))
            m->result = rf_errf(RF_ERR_RETRY, m->errstr, m->errstr_size,
                                "release '%s' is being recorded by another worker", m->id);
        else if (strcmp(PQgetvalue(res, (int)i, 2), "t") != 0)
            /* Redelivery: same content changes nothing twice and re-emits what comes next. */
            m->result = rf_errf(RF_ERR_PERM, m->errstr, m->errstr_size,
                                "release id '%s' already exists with other content", m->id);
        else
            snprintf(m->status, sizeof(m->status), "%s", PQgetvalue(res, (int)i, 1));
    }
    PQclear(res);
    return RF_OK;
}

/* One round of a poll batch: messages of distinct services, each recorded. The queued ones
 * start together (render_start_many); a redelivered one re-emits what its release's state
 * calls for. */
static void render_round(render_stage_t *rs, render_msg_t **round, size_t k)
{
    const char **services = calloc(k ? k : 1, sizeof(*services));
    const char **envs = calloc(k ? k : 1, sizeof(*envs));
    char **errs = calloc(k ? k : 1, sizeof(*errs));
    rf_err_t *results = calloc(k ? k : 1, sizeof(*results));
    render_msg_t **starting = calloc(k ? k : 1, sizeof(*starting));
    size_t ns = 0;

    if (!services || !envs || !errs || !results || !starting)
        abort();
    for (size_t i = 0; i < k; i++) {
        render_msg_t *m = round[i];
        if (m->result != RF_OK)
            continue;
        if (strcmp(m->status, "queued") == 0) {
            services[ns] = m->service;
            envs[ns] = m->env;
            errs[ns] = m->errstr;
            starting[ns++] = m;
            continue;
        }
        rf_worker_log_ctx(m->in->m, m->in->body);
        if (strcmp(m->status, "applying") == 0)
            m->result = render_publish_rendered(rs, m->id, m->key, m->errstr, m->errstr_size);
        else if (strcmp(m->status, "rejected") == 0 || strcmp(m->status, "failed") == 0)
            m->result = rf_worker_publish_result(rs->w, m->id, m->key, m->errstr,
                                                 m->errstr_size);
    }
    if (ns > 0) {
        render_start_many(rs, services, envs, ns, results, errs, starting[0]->errstr_size);
        for (size_t i = 0; i < ns; i++)
            starting[i]->result = results[i];
    }
    rf_log_ctx_clear();
    free(services);
    free(envs);
    free(errs);
    free(results);
    free(starting);
}

/*
 * A poll batch of requests: all recorded in one statement, then rounds of messages of
 * distinct services (env/service, the message key), each service's messages in their order:
 * the first round starts the first queued release of every service at once, a second one
 * (two requests of one service in the batch) tries again behind it, as one message after
 * the other would. A message after one of its service that is retried or refused is
 * retried too (after the dead letter, for a refused one).
 */
static void render_handle_batch(void *state, rf_input_t *const *in, size_t n, rf_err_t *results,
                                char *const *errstrs, size_t errstr_size)
{
    render_stage_t *rs = state;
    render_msg_t *msgs = calloc(n ? n : 1, sizeof(*msgs));
    render_msg_t **round = calloc(n ? n : 1, sizeof(*round));
    char *done = calloc(n ? n : 1, 1);
    json_t *blocked = json_object(), *used = json_object();
    size_t left = n;
    rf_err_t result;

    if (!msgs || !round || !done || !blocked || !used)
        abort();
    for (size_t i = 0; i < n; i++) {
        render_msg_t *m = &msgs[i];
        m->in = in[i];
        m->id = json_string_value(json_object_get(in[i]->body, "release_id"));
        m->service = json_string_value(json_object_get(in[i]->body, "service"));
        m->env = json_string_value(json_object_get(in[i]->body, "env"));
        snprintf(m->key, sizeof(m->key), "%s/%s", m->env, m->service);
        m->errstr = errstrs[i];
        m->errstr_size = errstr_size;
        m->result = RF_OK;
        round[i] = m;
    }
    result = render_insert(rs, round, n, errstrs[0], errstr_size);
    if (result == RF_ERR_PERM && n > 1) {
        /* A request the statement cannot take (a value PostgreSQL refuses) fails it for
         * all: each is recorded alone, so that only that one is dead-lettered. */
        rf_log_warn("the record of %zu requests at once failed (%s): one by one", n, errstrs[0]);
        result = RF_OK;
        for (size_t i = 0; i < n; i++) {
            rf_err_t one;

            if (json_object_get(blocked, msgs[i].key)) {
                msgs[i].result = rf_errf(RF_ERR_RETRY, msgs[i].errstr, errstr_size,
                                         "an earlier request of '%s' is refused", msgs[i].key);
                continue;
            }
            one = render_insert(rs, &round[i], 1, msgs[i].errstr, errstr_size);
            if (one != RF_OK)
                msgs[i].result = one;
            if (msgs[i].result == RF_ERR_PERM)
                json_object_set_new(blocked, msgs[i].key, json_true());
        }
    } else if (result != RF_OK) {
        for (size_t i = 0; i < n; i++) {
            msgs[i].result = result;
            if (i > 0)
                snprintf(errstrs[i], errstr_size, "%s", errstrs[0]);
        }
        left = 0;
    }
    while (left > 0) {
        size_t k = 0;
        json_object_clear(used);
        for (size_t i = 0; i < n; i++) {
            render_msg_t *m = &msgs[i];
            if (done[i] || json_object_get(used, m->key))
                continue;
            json_object_set_new(used, m->key, json_true());
            done[i] = 1;
            left--;
            if (m->result == RF_OK && json_object_get(blocked, m->key)) {
                m->result = rf_errf(RF_ERR_RETRY, m->errstr, m->errstr_size,
                                    "an earlier message of '%s' is retried or refused",
                                    m->key);
                continue;
            }
            round[k++] = m;
        }
        render_round(rs, round, k);
        for (size_t i = 0; i < k; i++)
            if (round[i]->result == RF_ERR_RETRY || round[i]->result == RF_ERR_PERM)
                json_object_set_new(blocked, round[i]->key, json_true());
    }
    for (size_t i = 0; i < n; i++)
        results[i] = msgs[i].result;
    json_decref(blocked);
    json_decref(used);
    free(done);
    free(round);
    free(msgs);
}

/* A request alone: a poll batch of one. */
static rf_err_t render_handle(void *state, const rf_input_t *in, char *errstr,
                              size_t errstr_size)
{
    rf_input_t *one[1] = {(rf_input_t *)in};
    char *errs[1] = {errstr};
    rf_err_t result;

    render_handle_batch(state, one, 1, &result, errs, errstr_size);
    return result;
}

static rf_err_t render_wave_start(void *arg, const char *service, const char *env,
                                  char *errstr, size_t errstr_size)
{
    return render_start(arg, service, env, errstr, errstr_size);
}

/* The sweep: starts queued releases whose service is free, so none is ever stranded. */
static void render_tick(void *state)
{
    render_stage_t *rs = state;
    PGresult *res = NULL;
    char errstr[1024], interval[16];
    const char *interval_param[1] = {interval};
    long now = rf_clock_mono_ms();

    if (now - rs->last_wave_ms >= RENDER_WAVE_MS) {
        rs->last_wave_ms = now;
        render_wave_drive(rs->w, RENDER_WAVE_LIMIT, render_wave_start, rs);
        now = rf_clock_mono_ms();
    }
    if (now - rs->last_sweep_ms < rs->w->conf->sweep_interval_ms)
        return;
    rs->last_sweep_ms = now;
    if (rf_db_exec(rs->w->db, "SELECT count(*) FROM releases WHERE status = 'queued'", 0, NULL,
                   &res, errstr, sizeof(errstr)) == RF_OK)
        rf_metrics_set(rf_metrics_gauge("relfleet_releases_queued",
                                        "Releases waiting for their service", NULL),
                       NULL, atof(PQgetvalue(res, 0, 0)));
    PQclear(res);
    res = NULL;
    /* Only releases queued for a sweep interval: a younger one is most likely in the poll
     * batch of a render worker right now, queued by its insert and about to be started by
     * the same batch. With two render workers the other's sweep found 9 to 17 of those a
     * call (the one-worker stack: none), at 9 to 55 ms a call, waited on their row locks
     * and sometimes rendered them a second time (the losing start is fenced). A stranded
     * release is started one interval later than before. */
    snprintf(interval, sizeof(interval), "%d", rs->w->conf->sweep_interval_ms);
    if (rf_db_exec(rs->w->db,
                   "SELECT DISTINCT q.service, q.env FROM releases q WHERE q.status = 'queued'"
                   " AND q.created_at < clock_timestamp() - make_interval(secs => $1::int /"
                   " 1000.0) AND " RENDER_WAVE_STARTABLE_SQL
                   " AND NOT EXISTS (SELECT 1 FROM releases a WHERE a.service = q.service"
                   " AND a.env = q.env AND a.status IN (" RF_RELEASE_ACTIVE_SQL ")) LIMIT 200",
                   1, interval_param, &res, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("sweep: %s", errstr);
        return;
    }
    /* all at once, as a poll batch's requests */
    if (PQntuples(res) > 0 && *rs->w->run) {
        size_t n = (size_t)PQntuples(res);
        const char **services = calloc(n, sizeof(*services)), **envs = calloc(n, sizeof(*envs));
        rf_err_t *results = calloc(n, sizeof(*results));
        char **errs = calloc(n, sizeof(*errs)), *texts = calloc(n, sizeof(errstr));

        if (!services || !envs || !results || !errs || !texts)
            abort();
        for (size_t i = 0; i < n; i++) {
            services[i] = PQgetvalue(res, (int)i, 0);
            envs[i] = PQgetvalue(res, (int)i, 1);
            errs[i] = texts + i * sizeof(errstr);
        }
        render_start_many(rs, services, envs, n, results, errs, sizeof(errstr));
        for (size_t i = 0; i < n; i++)
            if (results[i] != RF_OK)
                rf_log_warn("sweep: %s", errs[i]);
        rf_log_ctx_clear();
        free(services);
        free(envs);
        free(results);
        free(errs);
        free(texts);
    }
    PQclear(res);
    res = NULL;
    render_gate_expire(rs->w);
    /* A release still applying long after it was rendered lost its `rendered` message (a
     * broker that lost data): publish it again; the apply stage is idempotent. */
    {
        char lease[24];
        const char *params[1] = {lease};
        snprintf(lease, sizeof(lease), "%d", rs->w->conf->lock_lease_ms);
        if (rf_db_exec(rs->w->db,
                       "SELECT id, env || '/' || service FROM releases WHERE status = 'applying'"
                       " AND started_at < clock_timestamp() - make_interval(secs => $1::int /"
                       " 1000.0) AND NOT EXISTS (SELECT 1 FROM timeline t WHERE t.release_id ="
                       " releases.id AND t.at > clock_timestamp() - make_interval(secs =>"
                       " $1::int / 1000.0)) LIMIT 100",
                       1, params, &res, errstr, sizeof(errstr)) != RF_OK) {
            rf_log_warn("sweep: %s", errstr);
            return;
        }
        for (int i = 0; i < PQntuples(res) && *rs->w->run; i++) {
            rf_log_warn("release %s is still applying; publishing `rendered` again",
                        PQgetvalue(res, i, 0));
            if (render_publish_rendered(rs, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), errstr,
                                        sizeof(errstr)) != RF_OK)
                rf_log_warn("sweep: %s", errstr);
        }
        PQclear(res);
    }
}

static rf_err_t render_init(rf_worker_t *w, void **state, char *errstr, size_t errstr_size)
{
    render_stage_t *rs = calloc(1, sizeof(*rs));

    (void)errstr;
    (void)errstr_size;
    if (!rs)
        abort();
    rs->w = w;
    rs->validator = render_validator_new(w);
    *state = rs;
    return RF_OK;
}

static void render_destroy(void *state)
{
    render_stage_t *rs = state;

    for (int i = 0; i < RENDER_CACHE; i++)
        rf_render_template_destroy(rs->cache[i].tpl);
    render_validator_destroy(rs->validator);
    free(rs);
}

static const char *const render_topics[] = {"requests", NULL};

const rf_stage_t rf_stage_render = {
    .name = "render",
    .topics = render_topics,
    .poll_ms = 100,
    .needs_lock = 1,
    .init = render_init,
    .handle = render_handle,
    .handle_batch = render_handle_batch,
    .tick = render_tick,
    .destroy = render_destroy,
};
