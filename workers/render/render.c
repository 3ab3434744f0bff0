/* The render stage: request -> release row, service lock, manifests -> `rendered`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_auth.h"
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
    result = rf_worker_end_release(rs->w, active, service, env, fence, "superseded", reason, NULL,
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
static json_t *render_values(PGresult *res, const char *id)
{
    json_t *v = json_object();
    json_error_t jerr;
    json_t *extra, *overrides;
    const char *repo = rf_db_value(res, 0, 9);
    char image[512];
    const char *version = rf_db_value(res, 0, 2);

    json_object_set_new(v, "service", json_string(rf_db_value(res, 0, 0)));
    json_object_set_new(v, "env", json_string(rf_db_value(res, 0, 1)));
    json_object_set_new(v, "version", json_string(version));
    json_object_set_new(v, "namespace", json_string(rf_db_value(res, 0, 4)));
    json_object_set_new(v, "replicas", json_integer(atoi(rf_db_value(res, 0, 5))));
    json_object_set_new(v, "health_path", json_string(rf_db_value(res, 0, 6)));
    json_object_set_new(v, "group", json_string(rf_db_value(res, 0, 7)));
    json_object_set_new(v, "port", json_integer(atoi(rf_db_value(res, 0, 8))));
    snprintf(image, sizeof(image), "%s:%s", repo ? repo : rf_db_value(res, 0, 0), version);
    json_object_set_new(v, "image", json_string(image));
    json_object_set_new(v, "release_id", json_string(id));
    json_object_set_new(v, "operator", json_string(rf_db_value(res, 0, 3)));
    extra = json_loads(rf_db_value(res, 0, 10), 0, &jerr);
    if (json_is_object(extra))
        json_object_update_missing(v, extra);
    json_decref(extra);
    overrides = json_loads(rf_db_value(res, 0, 11) ? rf_db_value(res, 0, 11) : "null",
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

/* Loads the oldest queued release of env/service with its service configuration and
 * template (column 24: the release id; 25-28 the promotion rules: requires, soak,
 * approvals, and the approvals the release waited for; 29 its wave). */
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
    " s.cluster AS service_cluster"
    " FROM releases r LEFT JOIN services s USING (service, env)"
    " LEFT JOIN template_heads h ON h.id = s.template_id"
    " LEFT JOIN releases p ON p.id = r.parent"
    " WHERE r.id = (SELECT q.id FROM releases q WHERE q.service = $1 AND q.env = $2"
    " AND q.status = 'queued' AND " RENDER_WAVE_STARTABLE_SQL
    " ORDER BY q.created_at, q.id LIMIT 1)";

/* The start of a release in one statement: the fence becomes the service's newest ($2),
 * the queued release $1 becomes `applying` with what was rendered, and gets its two
 * timeline rows. Rows: how many services and releases it changed (1, 1 or nothing
 * happened that may stay: see render_record). */
static const char render_start_sql[] =
    "WITH f AS (UPDATE services SET fence = $2::bigint WHERE service = $3 AND env = $4"
    " AND fence < $2::bigint RETURNING 1),"
    " u AS (UPDATE releases SET status = 'applying', fence = $2::bigint,"
    " started_at = clock_timestamp(), params = $5::jsonb, template_id = $6,"
    " template_version = $7, manifests = $8::jsonb, manifests_sha256 = $9"
    " WHERE id = $1 AND status = 'queued' AND EXISTS (SELECT 1 FROM f) RETURNING id),"
    " t AS (INSERT INTO timeline (release_id, stage, event, status, message, data)"
    " SELECT u.id, 'render', e.event, e.event, e.message, e.data FROM u,"
    " (VALUES (1, 'rendering', $10, NULL::jsonb), (2, 'applying', $11, $12::jsonb))"
    " AS e (n, event, message, data) ORDER BY e.n)"
    " SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM u)";

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
static rf_err_t render_authorize(render_stage_t *rs, PGresult *res, const char *id, int *allowed,
                                 char *reason, size_t reason_size, char *errstr,
                                 size_t errstr_size)
{
    json_t *request = json_loads(rf_db_value(res, 0, 22), 0, NULL);
    rf_err_t result;

    if (!request)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "stored request of '%s' is not JSON", id);
    if (rf_db_value(res, 0, 29)) {
        /* A wave's release: only the wave driver writes wave_id (no request from Kafka
         * can), from the wave its creator made after relctl or relfleet-api checked them;
         * the creator must still be a releaser of the service (docs/waves.md). */
        json_decref(request);
        *allowed = 1;
        if (strcmp(rs->w->conf->auth_required, "on") != 0)
            return RF_OK;
        result = rf_auth_has_role(rs->w->db, rf_db_value(res, 0, 3), RF_ROLE_RELEASER,
                                  rf_db_value(res, 0, 0), rf_db_value(res, 0, 1), allowed,
                                  errstr, errstr_size);
        if (result == RF_OK && !*allowed)
            snprintf(reason, reason_size,
                     "user '%s' has no releaser role for service '%s' in env '%s'",
                     rf_db_value(res, 0, 3), rf_db_value(res, 0, 0), rf_db_value(res, 0, 1));
        return result;
    }
    result = rf_auth_check(rs->w->db, rs->w->conf, request, id,
                           strtoll(rf_db_value(res, 0, 23), NULL, 10), RF_ROLE_RELEASER,
                           rf_db_value(res, 0, 0), rf_db_value(res, 0, 1), allowed, reason,
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

/* Tries to start the oldest queued release of env/service: lock, render, record, hand on.
 * RF_OK also when none is queued or it stays queued behind a busy service. */
static rf_err_t render_start(render_stage_t *rs, const char *service_of, const char *env_of,
                             char *errstr, size_t errstr_size)
{
    rf_worker_t *w = rs->w;
    const char *params[2] = {service_of, env_of};
    PGresult *res = NULL, *tres = NULL;
    const rf_render_template_t *tpl = NULL;
    json_t *values = NULL, *manifests = NULL, *rendered = NULL;
    char reason[1024], key[300], holder[64], digest[65], fence_s[24], msg[512], id[64];
    char *manifests_text = NULL, *values_text = NULL, *data_text = NULL, *text = NULL;
    char *warnings = NULL, invalid[4800];
    const char *service, *env, *tpl_id, *tpl_version;
    int acquired = 0, supersede_active = 0, awaited = 0;
    int64_t fence = 0, floor;
    rf_err_t result;

    result = rf_db_exec(w->db, render_load_sql, 2, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) != 1)
        goto out; /* none queued */
    snprintf(id, sizeof(id), "%s", rf_db_value(res, 0, 24));
    service = rf_db_value(res, 0, 0);
    env = rf_db_value(res, 0, 1);
    snprintf(key, sizeof(key), "%s/%s", env, service);
    rf_log_ctx_set("release", id);
    rf_log_ctx_set("service", service);
    rf_log_ctx_set("env", env);

    {
        int allowed = 0;
        result = render_authorize(rs, res, id, &allowed, reason, sizeof(reason), errstr,
                                  errstr_size);
        if (result != RF_OK)
            goto out;
        if (!allowed)
            goto reject;
    }
    if (strcmp(rf_db_value(res, 0, 19), "t") != 0) {
        snprintf(reason, sizeof(reason), "unknown service '%s' in env '%s'", service, env);
        goto reject;
    }
    /* A rollback goes back to what ran then, even a version since dropped from the list. */
    if (atoi(rf_db_value(res, 0, 17)) > 0 && atoi(rf_db_value(res, 0, 18)) == 0 &&
        strcmp(rf_db_value(res, 0, 21), "rollback") != 0) {
        snprintf(reason, sizeof(reason), "unknown version '%s' of service '%s'",
                 rf_db_value(res, 0, 2), service);
        goto reject;
    }
    /* Promotion rules (gate.c): requires/soak reject here, approvals make it wait. */
    {
        render_gate_rules_t rules = {service,
                                     env,
                                     rf_db_value(res, 0, 2),
                                     rf_db_value(res, 0, 21),
                                     rf_db_value(res, 0, 25),
                                     rf_db_value(res, 0, 26) ? atol(rf_db_value(res, 0, 26)) : 0,
                                     rf_db_value(res, 0, 27) ? atoi(rf_db_value(res, 0, 27)) : 0,
                                     rf_db_value(res, 0, 28) != NULL};
        int verdict = RENDER_GATE_PASS;
        result = render_gate_check(w->db, &rules, &verdict, reason, sizeof(reason), errstr,
                                   errstr_size);
        if (result != RF_OK)
            goto out;
        if (verdict == RENDER_GATE_REJECT)
            goto reject;
        if (verdict == RENDER_GATE_AWAIT) {
            /* Holds no lock: the next queued release of the service may start instead. */
            result = render_gate_await(w->db, id, &rules, errstr, errstr_size);
            awaited = result == RF_OK;
            goto out;
        }
    }
    tpl_id = rf_db_value(res, 0, 12);
    tpl_version = rf_db_value(res, 0, 13);
    if (tpl_version)
        tpl = render_template_cached(rs, tpl_id, tpl_version);
    if (tpl_version && !tpl) {
        const char *tp[2] = {tpl_id, tpl_version};
        result = rf_db_exec(w->db, "SELECT body FROM templates WHERE id = $1 AND version = $2",
                            2, tp, &tres, errstr, errstr_size);
        if (result != RF_OK)
            goto out;
    }
    if (!tpl_version || (!tpl && PQntuples(tres) != 1)) {
        snprintf(reason, sizeof(reason), "template '%s'%s%s is missing", tpl_id,
                 tpl_version ? " version " : "", tpl_version ? tpl_version : "");
        goto reject;
    }

    /* The lock: Redis is the gate, PostgreSQL the authority (DESIGN.md). */
    floor = strtoll(rf_db_value(res, 0, 14), NULL, 10);
    result = rf_lock_acquire(w->lock, env, service, id, w->conf->lock_lease_ms, floor, &acquired,
                             &fence, holder, errstr, errstr_size);
    if (result != RF_OK)
        goto out;
    if (!acquired && strcmp(rf_db_value(res, 0, 16), "supersede") == 0) {
        result = render_supersede(rs, id, service, env, errstr, errstr_size);
        if (result == RF_OK)
            result = rf_lock_acquire(w->lock, env, service, id, w->conf->lock_lease_ms, floor,
                                     &acquired, &fence, holder, errstr, errstr_size);
        if (result != RF_OK)
            goto out;
    }
    rf_metrics_add(rf_metrics_counter("relfleet_lock_waits_total",
                                      "Attempts to take a service lock, by outcome", "outcome"),
                   RF_LABELS(acquired ? "acquired" : "busy"), 1);
    if (!acquired) {
        rf_log_info("service busy with release %s; staying queued", holder);
        goto out;
    }
    snprintf(fence_s, sizeof(fence_s), "%lld", (long long)fence);

    values = render_values(res, id);
    if (!tpl)
        tpl = render_template(rs, tpl_id, tpl_version, PQgetvalue(tres, 0, 0),
                              (size_t)PQgetlength(tres, 0, 0), reason, sizeof(reason));
    if (tpl)
        result = rf_render_exec(tpl, values, &manifests, reason, sizeof(reason));
    if (!tpl || result != RF_OK) {
        result = RF_OK;
        goto fail_release;
    }
    if (rf_db_value(res, 0, 20) && strcmp(rf_db_value(res, 0, 20), "t") == 0)
        render_add_restart(manifests);
    /* What the cluster would refuse is refused here, before anything is applied: the
     * release goes from queued to rejected naming each error (render_validation). */
    result = render_validate(rs->validator, tpl, tpl_id, values, manifests, env,
                             rf_db_value(res, 0, PQfnumber(res, "service_cluster")), &warnings,
                             invalid, sizeof(invalid), errstr, errstr_size);
    if (result == RF_ERR_PERM)
        goto reject_invalid;
    if (result != RF_OK)
        goto unlock; /* the cluster's schema is out of reach: stays queued, retried */
    if (rf_render_canonical(manifests, &manifests_text, digest) != RF_OK) {
        snprintf(reason, sizeof(reason), "cannot serialise the manifests");
        goto fail_release;
    }
    /* What the apply stage will receive must be valid (Kubernetes names above all): a
     * release whose template produced a bad name fails here, with the reason. */
    {
        char why[768];
        rendered = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:O, s:s}", "schema",
                             "relfleet.rendered.v1", "release_id", id, "service", service, "env",
                             env, "version", rf_db_value(res, 0, 2), "fence", (json_int_t)fence,
                             "namespace", rf_db_value(res, 0, 4), "manifests", manifests,
                             "manifests_sha256", digest);
        if (rf_schema_validate(w->schemas, "relfleet.rendered.v1", rendered, why, sizeof(why)) !=
            RF_OK) {
            snprintf(reason, sizeof(reason), "cannot render template '%s': %s", tpl_id, why);
            goto fail_release;
        }
    }
    values_text = json_dumps(values, JSON_COMPACT | JSON_SORT_KEYS);
    {
        json_t *data = json_pack("{s:s, s:s, s:s, s:I}", "template", tpl_id, "template_version",
                                 tpl_version, "sha256", digest, "objects",
                                 (json_int_t)json_array_size(manifests));
        data_text = json_dumps(data, JSON_COMPACT);
        json_decref(data);
    }
    {
        char started[100];
        const char *up[12] = {id,     fence_s,     service,        env,    values_text,
                              tpl_id, tpl_version, manifests_text, digest, started,
                              msg,    data_text};
        snprintf(started, sizeof(started), "lock acquired (fence %s)", fence_s);
        snprintf(msg, sizeof(msg), "rendered %zu objects from template '%s' (sha256 %.12s)%s%s",
                 json_array_size(manifests), tpl_id, digest, warnings ? "; " : "",
                 warnings ? warnings : "");
        result = render_record(w, render_start_sql, 12, up, errstr, errstr_size);
    }
    if (result == RF_ERR_PERM && strcmp(rf_db_sqlstate(w->db), "23505") == 0) {
        /* Redis let us in but PostgreSQL still has an active release (the lock lapsed or
         * Redis lost it): under supersede it is ended first, then we retry. */
        supersede_active = strcmp(rf_db_value(res, 0, 16), "supersede") == 0;
        result = rf_errf(RF_ERR_FENCED, errstr, errstr_size,
                         "another release of the service is active in the database");
    }
    if (result != RF_OK)
        goto unlock;
    rf_log_info("rendered %zu objects, fence %s", json_array_size(manifests), fence_s);
    /* `rendered` is what the row now holds: built here, not read back. */
    text = json_dumps(rendered, JSON_COMPACT);
    result = rf_producer_send(w->producer, "rendered", key, text, strlen(text), errstr,
                              errstr_size);
    goto out;

fail_release:
    /* Rendering failed after the lock was taken: the release started and failed. */
    snprintf(msg, sizeof(msg), "lock acquired (fence %s)", fence_s);
    {
        const char *up[6] = {id, fence_s, service, env, reason, msg};
        result = render_record(w, render_fail_sql, 6, up, errstr, errstr_size);
    }
    rf_log_info("render failed: %s", reason);
    rf_lock_release(w->lock, env, service, id, msg, sizeof(msg));
    if (result == RF_OK)
        result = rf_worker_publish_result(rs->w, id, key, errstr, errstr_size);
    else if (result == RF_ERR_FENCED)
        result = RF_OK;
    goto out;
unlock:
    /* Not started: free the gate for whoever may start instead. */
    rf_lock_release(w->lock, env, service, id, msg, sizeof(msg));
    if (supersede_active) {
        result = render_supersede(rs, id, service, env, errstr, errstr_size);
        if (result == RF_OK)
            result = rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                             "superseded the active release; starting this one next");
        goto out;
    }
    if (result == RF_ERR_FENCED) {
        rf_log_warn("not started: %s", errstr);
        result = RF_OK;
    }
    goto out;
reject_invalid:
    /* Still queued: it ends rejected without starting, the lock taken for it is freed and
     * the service's next queued release may start. */
    result = render_reject(rs, id, invalid, errstr, errstr_size);
    rf_lock_release(w->lock, env, service, id, msg, sizeof(msg));
    if (result == RF_OK)
        result = rf_worker_publish_result(rs->w, id, key, errstr, errstr_size);
    if (result == RF_OK)
        result = rf_worker_kick_next(w, service, env, errstr, errstr_size);
    goto out;
reject:
    result = render_reject(rs, id, reason, errstr, errstr_size);
    if (result == RF_OK)
        result = rf_worker_publish_result(rs->w, id, key, errstr, errstr_size);
out:
    free(warnings);
    free(text);
    free(data_text);
    free(manifests_text);
    free(values_text);
    json_decref(rendered);
    json_decref(values);
    json_decref(manifests);
    PQclear(tres);
    PQclear(res);
    if (awaited)
        return render_start(rs, service_of, env_of, errstr, errstr_size);
    return result;
}

/* Records a request once, with its `queued` timeline row, in one statement; then says
 * what the row holds: status and whether its request is this one (a redelivery) or
 * not (another request with the same id). No row: another worker is recording the same
 * id right now. */
static const char render_insert_sql[] =
    "WITH ins AS (INSERT INTO releases (id, service, env, version, kind, parent, operator,"
    " description, status, request) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued',"
    " $9::jsonb) ON CONFLICT (id) DO NOTHING RETURNING id),"
    " ev AS (INSERT INTO timeline (release_id, stage, event, status, message)"
    " SELECT id, 'render', 'queued', 'queued', $10 FROM ins)"
    " SELECT 'queued', true FROM ins"
    " UNION ALL SELECT status, request = $9::jsonb FROM releases"
    " WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM ins)";

/* A request: record it (once), then start it or the service's older queued one. */
static rf_err_t render_handle(void *state, const rf_input_t *in, char *errstr,
                              size_t errstr_size)
{
    render_stage_t *rs = state;
    rf_worker_t *w = rs->w;
    json_t *b = in->body;
    const char *id = json_string_value(json_object_get(b, "release_id"));
    const char *service = json_string_value(json_object_get(b, "service"));
    const char *env = json_string_value(json_object_get(b, "env"));
    const char *parent = json_string_value(json_object_get(b, "parent"));
    const char *desc = json_string_value(json_object_get(b, "description"));
    char *request = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
    char key[300], msg[1200];
    const char *params[10] = {id,
                              service,
                              env,
                              json_string_value(json_object_get(b, "version")),
                              json_string_value(json_object_get(b, "kind")),
                              parent,
                              json_string_value(json_object_get(b, "operator")),
                              desc ? desc : "",
                              request,
                              msg};
    PGresult *res = NULL;
    rf_err_t result;
    const char *status;

    snprintf(key, sizeof(key), "%s/%s", env, service);
    snprintf(msg, sizeof(msg), "%s of version %s requested by %s%s%s", params[4], params[3],
             params[6], desc && *desc ? ": " : "", desc ? desc : "");
    result = rf_db_exec(w->db, render_insert_sql, 10, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        goto out;
    if (PQntuples(res) != 1) {
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                         "release '%s' is being recorded by another worker", id);
        goto out;
    }
    /* Redelivery: same content changes nothing twice and re-emits what comes next. */
    if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "release id '%s' already exists with other content", id);
        goto out;
    }
    status = PQgetvalue(res, 0, 0);
    if (strcmp(status, "queued") == 0)
        result = render_start(rs, service, env, errstr, errstr_size);
    else if (strcmp(status, "applying") == 0)
        result = render_publish_rendered(rs, id, key, errstr, errstr_size);
    else if (strcmp(status, "rejected") == 0 || strcmp(status, "failed") == 0)
        result = rf_worker_publish_result(rs->w, id, key, errstr, errstr_size);
out:
    PQclear(res);
    free(request);
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
    char errstr[1024];
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
    if (rf_db_exec(rs->w->db,
                   "SELECT DISTINCT q.service, q.env FROM releases q WHERE q.status = 'queued'"
                   " AND " RENDER_WAVE_STARTABLE_SQL
                   " AND NOT EXISTS (SELECT 1 FROM releases a WHERE a.service = q.service"
                   " AND a.env = q.env AND a.status IN (" RF_RELEASE_ACTIVE_SQL ")) LIMIT 200",
                   0, NULL, &res, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("sweep: %s", errstr);
        return;
    }
    for (int i = 0; i < PQntuples(res) && *rs->w->run; i++) {
        rf_err_t result = render_start(rs, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                            errstr, sizeof(errstr));
        if (result != RF_OK)
            rf_log_warn("sweep: %s", errstr);
        rf_log_ctx_clear();
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
    .tick = render_tick,
    .destroy = render_destroy,
};
