/* The apply stage: `rendered` -> server-side apply of each manifest, fenced -> `applied`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "track/gray.h"
#include "rf_kube.h"
#include "rf_log.h"
#include "rf_msg.h"
#include "rf_store.h"
#include "rf_strategy.h"
#include "worker.h"

#define APPLY_MAX_CONFLICTS 8

typedef struct apply_cluster {
    char *name; /* context; "" for the kubeconfig's current one */
    rf_kube_t *kube;
} apply_cluster_t;

typedef struct apply_stage {
    rf_worker_t *w;
    apply_cluster_t clusters[16];
    rf_kube_t *probe; /* readiness: the default cluster answers */
    int nclusters;
    json_t *namespaces; /* "<client>|<namespace>" seen to exist: not asked again */
} apply_stage_t;

/* The client of a cluster (a kubeconfig context), created on first use. */
static rf_kube_t *apply_kube(apply_stage_t *as, const char *cluster, char *errstr,
                             size_t errstr_size)
{
    const char *name = cluster ? cluster : "";
    rf_kubeconfig_t *cfg;
    rf_kube_t *k;

    for (int i = 0; i < as->nclusters; i++)
        if (strcmp(as->clusters[i].name, name) == 0)
            return as->clusters[i].kube;
    if (as->nclusters == (int)(sizeof(as->clusters) / sizeof(as->clusters[0]))) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "too many clusters");
        return NULL;
    }
    if (!as->w->conf->kubeconfig) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "no kubeconfig configured (RELFLEET_KUBECONFIG)");
        return NULL;
    }
    cfg = rf_kubeconfig_load(as->w->conf->kubeconfig,
                             *name ? name : as->w->conf->kube_context, errstr, errstr_size);
    if (!cfg)
        return NULL;
    k = rf_kube_new(cfg, errstr, errstr_size);
    rf_kubeconfig_destroy(cfg);
    if (!k)
        return NULL;
    as->clusters[as->nclusters].name = strdup(name);
    as->clusters[as->nclusters].kube = k;
    as->nclusters++;
    return k;
}

/* Labels and annotations Relfleet puts on everything it applies. */
static void apply_mark(json_t *manifest, const char *ns, const char *release_id,
                       const char *fence_s)
{
    json_t *meta = json_object_get(manifest, "metadata");
    json_t *labels, *ann;

    if (!json_object_get(meta, "namespace") &&
        strcmp(json_string_value(json_object_get(manifest, "kind")), "Namespace") != 0)
        json_object_set_new(meta, "namespace", json_string(ns));
    labels = json_object_get(meta, "labels");
    if (!json_is_object(labels)) {
        labels = json_object();
        json_object_set_new(meta, "labels", labels);
    }
    json_object_set_new(labels, "app.kubernetes.io/managed-by", json_string("relfleet"));
    ann = json_object_get(meta, "annotations");
    if (!json_is_object(ann)) {
        ann = json_object();
        json_object_set_new(meta, "annotations", ann);
    }
    json_object_set_new(ann, "relfleet.io/release", json_string(release_id));
    json_object_set_new(ann, "relfleet.io/fence", json_string(fence_s));
}

/* The release and its service still hold fence, and the release is still applying. */
static rf_err_t apply_check_fence(rf_worker_t *w, const char *id, const char *fence_s,
                                  char *errstr, size_t errstr_size)
{
    const char *params[2] = {id, fence_s};
    PGresult *res = NULL;
    rf_err_t result;
    int ok;

    result = rf_db_exec(w->db,
                        "SELECT 1 FROM releases r JOIN services s USING (service, env)"
                        " WHERE r.id = $1 AND r.status = 'applying' AND r.fence = $2::bigint"
                        " AND s.fence = $2::bigint",
                        2, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    ok = PQntuples(res) == 1;
    PQclear(res);
    if (!ok)
        return rf_errf(RF_ERR_FENCED, errstr, errstr_size,
                       "release '%s' no longer holds fence %s (or left applying)", id, fence_s);
    return RF_OK;
}

/* Server-side apply of one object, fenced twice: PostgreSQL says the release still holds
 * the service, and the object in the cluster was last written by no newer fence. The
 * apply carries the resourceVersion just read, so a newer writer in between makes it
 * fail with 409 and the check runs again: a stalled worker never applies late. */
static rf_err_t apply_object(rf_worker_t *w, rf_kube_t *kube, json_t *manifest, const char *id,
                             int64_t fence, const char *fence_s, json_t **stored, char *errstr,
                             size_t errstr_size)
{
    char path[1024];
    rf_err_t result;

    *stored = NULL;
    result = rf_kube_object_path(manifest, NULL, path, sizeof(path), errstr, errstr_size);
    if (result != RF_OK)
        return result;
    for (int attempt = 0; attempt < APPLY_MAX_CONFLICTS; attempt++) {
        json_t *live = NULL;
        json_t *meta = json_object_get(manifest, "metadata");
        result = apply_check_fence(w, id, fence_s, errstr, errstr_size);
        if (result != RF_OK)
            return result;
        result = rf_kube_get(kube, path, &live, errstr, errstr_size);
        if (result == RF_ERR_NOTFOUND) {
            json_object_del(meta, "resourceVersion");
        } else if (result != RF_OK) {
            return result;
        } else {
            json_t *lmeta = json_object_get(live, "metadata");
            const char *lf = json_string_value(
                json_object_get(json_object_get(lmeta, "annotations"), "relfleet.io/fence"));
            if (lf && strtoll(lf, NULL, 10) > fence) {
                result = rf_errf(RF_ERR_FENCED, errstr, errstr_size,
                                 "'%s' was written by newer fence %s (ours %s)", path, lf,
                                 fence_s);
                json_decref(live);
                return result;
            }
            json_object_set(meta, "resourceVersion", json_object_get(lmeta, "resourceVersion"));
            json_decref(live);
        }
        result = rf_kube_apply(kube, manifest, "relfleet", stored, errstr, errstr_size);
        json_object_del(meta, "resourceVersion");
        if (result == RF_OK)
            return RF_OK;
        if (!(result == RF_ERR_PERM && strstr(errstr, ": 409 ")) &&
            !(result == RF_ERR_NOTFOUND && attempt == 0))
            return result;
        rf_log_debug("conflict on '%s', checking the fence again", path);
    }
    return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "'%s' kept changing while applying", path);
}

/* Drops a namespace from those seen to exist; 1 when it was there (ops/bench: the GET
 * per release cost a sixth of the stage's time). */
static int apply_namespace_forget(apply_stage_t *as, rf_kube_t *kube, const char *ns)
{
    char key[600];

    snprintf(key, sizeof(key), "%p|%s", (void *)kube, ns);
    return json_object_del(as->namespaces, key) == 0;
}

/* Creates the service's namespace when it does not exist yet; asks the API server once
 * per namespace (apply_namespace_forget asks again). */
static rf_err_t apply_namespace(apply_stage_t *as, rf_kube_t *kube, const char *ns,
                                char *errstr, size_t errstr_size)
{
    char path[512], key[600];
    json_t *live = NULL, *obj;
    rf_err_t result;

    snprintf(key, sizeof(key), "%p|%s", (void *)kube, ns);
    if (json_object_get(as->namespaces, key))
        return RF_OK;
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s", ns);
    result = rf_kube_get(kube, path, &live, errstr, errstr_size);
    json_decref(live);
    if (result == RF_ERR_NOTFOUND) {
        obj = json_pack("{s:s, s:s, s:{s:s, s:{s:s}}}", "apiVersion", "v1", "kind", "Namespace",
                        "metadata", "name", ns, "labels", "app.kubernetes.io/managed-by",
                        "relfleet");
        result = rf_kube_apply(kube, obj, "relfleet", NULL, errstr, errstr_size);
        json_decref(obj);
    }
    if (result == RF_OK)
        json_object_set_new(as->namespaces, key, json_true());
    return result;
}

/* Re-publishes `applied` of a release that is past the apply (redelivery). */
static rf_err_t apply_republish(rf_worker_t *w, const char *track, const char *key, char *errstr,
                                size_t errstr_size)
{
    json_t *t = json_loads(track, 0, NULL);
    json_t *msg = json_object_get(t, "applied");
    char *text;
    rf_err_t result = RF_OK;

    if (json_is_object(msg)) {
        text = json_dumps(msg, JSON_COMPACT);
        result = rf_producer_send(w->producer, "applied", key, text, strlen(text), errstr,
                                  errstr_size);
        free(text);
    }
    json_decref(t);
    return result;
}

static rf_err_t apply_handle(void *state, const rf_input_t *in, char *errstr, size_t errstr_size)
{
    apply_stage_t *as = state;
    rf_worker_t *w = as->w;
    json_t *b = in->body;
    const char *id = json_string_value(json_object_get(b, "release_id"));
    const char *service = json_string_value(json_object_get(b, "service"));
    const char *env = json_string_value(json_object_get(b, "env"));
    const char *ns = json_string_value(json_object_get(b, "namespace"));
    int64_t fence = json_integer_value(json_object_get(b, "fence"));
    const char *params[1] = {id};
    PGresult *res = NULL;
    json_t *objects = json_array(), *applied = NULL, *track = NULL, *manifest;
    json_t *strategy = NULL, *to_apply = NULL, *gray = NULL, *notes = json_array();
    char key[300], fence_s[24], now[40], msg[1024], cluster[256];
    const char *status;
    char *track_text = NULL, *applied_text = NULL;
    rf_kube_t *kube;
    rf_err_t result;
    int held = 0;
    size_t i;

    snprintf(key, sizeof(key), "%s/%s", env, service);
    snprintf(fence_s, sizeof(fence_s), "%lld", (long long)fence);
    result = rf_db_exec(w->db,
                        "SELECT r.status, r.track::text, s.cluster, s.timeout_s, s.strategy::text"
                        " FROM releases r"
                        " JOIN services s USING (service, env) WHERE r.id = $1",
                        1, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        goto out;
    if (PQntuples(res) != 1) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "unknown release '%s'", id);
        goto out;
    }
    status = PQgetvalue(res, 0, 0);
    if (strcmp(status, "progressing") == 0 || strcmp(status, "paused") == 0) {
        result = apply_republish(w, PQgetvalue(res, 0, 1), key, errstr, errstr_size);
        goto out;
    }
    if (strcmp(status, "applying") != 0)
        goto out; /* ended meanwhile (cancelled, superseded): nothing to apply */
    kube = apply_kube(as, rf_worker_cluster(w, env, rf_db_value(res, 0, 2), cluster,
                                            sizeof(cluster)),
                      errstr, errstr_size);
    if (!kube) {
        char reason[1100];
        snprintf(reason, sizeof(reason), "cannot reach the cluster: %s", errstr);
        result = rf_worker_end_release(w, id, service, env, fence, "failed", reason, NULL, errstr,
                                       errstr_size);
        goto out;
    }
    rf_lock_renew(w->lock, env, service, id, w->conf->lock_lease_ms, &held, msg, sizeof(msg));
    result = apply_namespace(as, kube, ns, errstr, errstr_size);
    if (result == RF_ERR_PERM) {
        char reason[1100];
        snprintf(reason, sizeof(reason), "%s", errstr);
        result = rf_worker_end_release(w, id, service, env, fence, "failed", reason, NULL, errstr,
                                       errstr_size);
        goto out;
    }
    if (result != RF_OK)
        goto out;

    /* A canary or blue-green release applies a canary or preview beside the stable
     * Deployment instead of the Deployment itself (gray.c). */
    strategy = rf_strategy_parse_text(rf_db_value(res, 0, 4), msg, sizeof(msg));
    if (!strategy) {
        char reason[1100];
        snprintf(reason, sizeof(reason), "invalid strategy of the service: %s", msg);
        result = rf_worker_end_release(w, id, service, env, fence, "failed", reason, NULL, errstr,
                                       errstr_size);
        goto out;
    }
    result = apply_check_fence(w, id, fence_s, errstr, errstr_size);
    if (result == RF_OK)
        result = gray_prepare(kube, strategy, json_object_get(b, "manifests"), ns,
                              atoll(PQgetvalue(res, 0, 3)), &to_apply, &gray, notes, errstr,
                              errstr_size);
    if (result == RF_ERR_PERM) { /* a stable ingress missing or without the service's path */
        char reason[1100];
        snprintf(reason, sizeof(reason), "%s", errstr);
        result = rf_worker_end_release(w, id, service, env, fence, "failed", reason, NULL, errstr,
                                       errstr_size);
        goto out;
    }
    if (result != RF_OK)
        goto out;
    if (gray)
        apply_mark(json_object_get(gray, "stable_manifest"), ns, id, fence_s);
    json_array_foreach(notes, i, manifest) {
        result = rf_store_event(w->db, id, "apply", "gray", NULL, json_string_value(manifest),
                                NULL, errstr, errstr_size);
        if (result != RF_OK)
            goto out;
    }
    json_array_foreach(to_apply, i, manifest) {
        json_t *m = json_deep_copy(manifest);
        json_t *stored = NULL, *meta, *obj;
        apply_mark(m, ns, id, fence_s);
        result = apply_object(w, kube, m, id, fence, fence_s, &stored, errstr, errstr_size);
        json_decref(m);
        if (result == RF_ERR_NOTFOUND && apply_namespace_forget(as, kube, ns)) {
            result = RF_ERR_RETRY; /* the namespace may be gone since: look again */
            goto out;
        }
        if (result == RF_ERR_PERM || result == RF_ERR_NOTFOUND) {
            char reason[1100];
            snprintf(reason, sizeof(reason), "%s", errstr);
            result = rf_worker_end_release(w, id, service, env, fence, "failed", reason, NULL,
                                           errstr, errstr_size);
            goto out;
        }
        if (result != RF_OK)
            goto out;
        meta = json_object_get(stored, "metadata");
        obj = json_pack("{s:O, s:O, s:s, s:O, s:I, s:O}", "apiVersion",
                        json_object_get(stored, "apiVersion"), "kind",
                        json_object_get(stored, "kind"), "namespace",
                        json_string_value(json_object_get(meta, "namespace"))
                            ? json_string_value(json_object_get(meta, "namespace"))
                            : "",
                        "name", json_object_get(meta, "name"), "generation",
                        json_integer_value(json_object_get(meta, "generation")),
                        "resourceVersion", json_object_get(meta, "resourceVersion"));
        json_array_append_new(objects, obj);
        snprintf(msg, sizeof(msg), "applied %s %s/%s: generation %lld, resourceVersion %s",
                 json_string_value(json_object_get(obj, "kind")),
                 json_string_value(json_object_get(obj, "namespace")),
                 json_string_value(json_object_get(obj, "name")),
                 (long long)json_integer_value(json_object_get(obj, "generation")),
                 json_string_value(json_object_get(obj, "resourceVersion")));
        json_decref(stored);
        result = rf_store_event(w->db, id, "apply", "applied", NULL, msg, obj, errstr,
                                errstr_size);
        if (result != RF_OK)
            goto out;
    }

    rf_msg_now_iso(now, sizeof(now));
    applied = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:O, s:s}", "schema",
                        "relfleet.applied.v1", "release_id", id, "service", service, "env", env,
                        "fence", (json_int_t)fence, "namespace", ns, "objects", objects,
                        "applied_at", now);
    track = json_pack("{s:O, s:I, s:O}", "objects", objects, "timeout_s",
                      (json_int_t)atoi(PQgetvalue(res, 0, 3)), "applied", applied);
    if (gray)
        json_object_set(track, "gray", gray);
    track_text = json_dumps(track, JSON_COMPACT);
    {
        const char *up[3] = {id, fence_s, track_text};
        PGresult *u = NULL;
        int n;
        result = rf_db_begin(w->db, errstr, errstr_size);
        if (result != RF_OK)
            goto out;
        result = rf_db_exec(w->db,
                            "UPDATE releases r SET status = 'progressing', track = coalesce(r.track,"
                            " '{}'::jsonb) || $3::jsonb ||"
                            " jsonb_build_object('deadline_ms', (extract(epoch FROM"
                            " clock_timestamp()) * 1000)::bigint + 1000 *"
                            " ($3::jsonb ->> 'timeout_s')::bigint)"
                            " WHERE r.id = $1 AND r.status = 'applying' AND r.fence = $2::bigint"
                            " AND EXISTS (SELECT 1 FROM services s WHERE s.service = r.service"
                            " AND s.env = r.env AND s.fence = $2::bigint) RETURNING 1",
                            3, up, &u, errstr, errstr_size);
        n = result == RF_OK ? PQntuples(u) : 0;
        PQclear(u);
        if (result == RF_OK && n == 0)
            result = rf_errf(RF_ERR_FENCED, errstr, errstr_size,
                             "release '%s' lost fence %s before progressing", id, fence_s);
        if (result == RF_OK) {
            snprintf(msg, sizeof(msg), "applied %zu objects; following the rollout",
                     json_array_size(objects));
            result = rf_store_event(w->db, id, "apply", "progressing", "progressing", msg, NULL,
                                    errstr, errstr_size);
        }
        if (result != RF_OK) {
            rf_db_rollback(w->db);
            goto out;
        }
        result = rf_db_commit(w->db, errstr, errstr_size);
        if (result != RF_OK)
            goto out;
    }
    applied_text = json_dumps(applied, JSON_COMPACT);
    result = rf_producer_send(w->producer, "applied", key, applied_text, strlen(applied_text),
                              errstr, errstr_size);
out:
    free(track_text);
    free(applied_text);
    json_decref(track);
    json_decref(applied);
    json_decref(objects);
    json_decref(strategy);
    json_decref(to_apply);
    json_decref(gray);
    json_decref(notes);
    PQclear(res);
    return result;
}

static rf_err_t apply_init(rf_worker_t *w, void **state, char *errstr, size_t errstr_size)
{
    apply_stage_t *as = calloc(1, sizeof(*as));

    if (!as)
        abort();
    as->w = w;
    as->namespaces = json_object();
    /* Fail at start, not at the first release, when the cluster is not configured. */
    as->probe = rf_worker_kube_probe_new(w, errstr, errstr_size);
    if (!as->probe || !apply_kube(as, NULL, errstr, errstr_size)) {
        rf_kube_destroy(as->probe);
        json_decref(as->namespaces);
        free(as);
        return RF_ERR_PERM;
    }
    *state = as;
    return RF_OK;
}

static void apply_destroy(void *state)
{
    apply_stage_t *as = state;

    for (int i = 0; i < as->nclusters; i++) {
        rf_kube_destroy(as->clusters[i].kube);
        free(as->clusters[i].name);
    }
    rf_kube_destroy(as->probe);
    json_decref(as->namespaces);
    free(as);
}

static int apply_ready(void *state)
{
    return rf_worker_kube_ready(((apply_stage_t *)state)->probe);
}

static const char *const apply_topics[] = {"rendered", NULL};

const rf_stage_t rf_stage_apply = {
    .name = "apply",
    .topics = apply_topics,
    .poll_ms = 100,
    .needs_lock = 1,
    .init = apply_init,
    .handle = apply_handle,
    .tick = NULL,
    .destroy = apply_destroy,
    .ready = apply_ready,
};
