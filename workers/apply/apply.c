/* The apply stage: `rendered` -> server-side apply of each manifest, fenced -> `applied`. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <math.h>
#include <time.h>

#include "common.h"
#include "track/gray.h"
#include "rf_buf.h"
#include "rf_json.h"
#include "rf_kube.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_msg.h"
#include "rf_store.h"
#include "rf_strategy.h"
#include "worker.h"

#define APPLY_THREADS 8 /* messages of a poll batch whose objects are applied at once */
/* Closing statements gather cluster parts that end close together: one waits for more
 * until this many have ended or APPLY_CLOSE_WAIT_MS have passed since it was seen ended. */
#define APPLY_CLOSE_GROUP 16
#define APPLY_CLOSE_WAIT_MS 3
#define APPLY_FENCE_ANNOTATION "relfleet.io/fence"
#define APPLY_SHARD_LABEL "relfleet.io/shard" /* track watches by it (workers/track) */

typedef struct apply_cluster {
    char *name; /* context; "" for the kubeconfig's current one */
    rf_kube_t *kube;
} apply_cluster_t;

/* Where a message's time goes, in order (relfleet_apply_part_seconds{part}; they add up
 * to `rendered` produced -> the poll batch handled; the delivery wait of the batch's
 * `applied` messages is relfleet_delivery_wait_seconds of the poll loop). */
enum {
    APPLY_T_BATCH,    /* the poll batch is handed to the stage */
    APPLY_T_ROUND,    /* its round starts: the read of PostgreSQL */
    APPLY_T_LOADED,   /* read; the round's checks and lock renewals (Redis) follow */
    APPLY_T_CLUSTER,  /* the round's cluster parts start */
    APPLY_T_APPLIED,  /* its own cluster part ended */
    APPLY_T_FINISH,   /* its closing statement starts */
    APPLY_T_FINISHED, /* closing statement done, `applied` queued */
    APPLY_T_N
};

/* Fine enough for a p99 of a few ms (ops/bench figure 2 reads them). */
static const double apply_part_bounds[] = {0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004,
                                           0.005,   0.006,  0.008, 0.010,  0.012, 0.015, 0.020,
                                           0.025,   0.030,  0.040, 0.050,  0.075, 0.1,   0.15,
                                           0.25,    0.5,    1,     2.5,    5,     10};

static const char *const apply_part_names[APPLY_T_N + 1] = {
    "queue",     /* `rendered` CreateTime -> the batch handed to the stage (Kafka, consumer
                  * queue, earlier batches) */
    "batch",     /* -> its round (earlier rounds of the batch) */
    "pg_read",   /* the round's read of PostgreSQL */
    "lock",      /* the round's fence checks and lock renewals (Redis) */
    "api",       /* its API round trips (namespace, gray, server-side applies) */
    "round",     /* waiting for the closing statements of those whose cluster part ended
                  * before its own */
    "pg_finish", /* its closing statement (rf_store_apply_finish, or _many with those whose
                  * cluster part ended at the same time) and the produce call */
    "after",     /* -> the batch handled (later closing statements, later rounds) */
};

typedef struct apply_stage {
    rf_worker_t *w;
    rf_metric_t *parts; /* relfleet_apply_part_seconds{part} */
    apply_cluster_t clusters[16];
    rf_kube_t *probe; /* readiness: the default cluster answers */
    int nclusters;
    pthread_mutex_t ns_lock;
    json_t *namespaces; /* "<client>|<namespace>" seen to exist: not asked again */
} apply_stage_t;

/* One `rendered` message on its way: what PostgreSQL said, what the cluster said. */
typedef struct apply_msg {
    const rf_input_t *in;
    const char *id, *service, *env, *ns;
    int64_t fence;
    int shard; /* the partition of the message (-1 unknown): label and track state */
    char key[300], fence_s[24];
    rf_err_t result; /* final */
    char *errstr;
    size_t errstr_size;
    /* apply_load */
    int found;
    char *status, *track, *cluster, *strategy_text;
    long long timeout_s;
    int64_t release_fence, service_fence;
    int gray_ever; /* the service has (had) a strategy: gray leftovers are possible */
    /* apply_start, apply_cluster_work */
    rf_kube_t *kube;
    json_t *strategy;
    json_t *manifests; /* what gray_prepare reads: the body's, or whole (apply_whole) */
    /* the text of the other members of manifests' objects while manifests is the body's
     * own (parsed lean): NULL when whole */
    const rf_msg_lean_t *lean;
    int fail;        /* end the release failed, errstr the reason */
    json_t *objects; /* applied: kind, namespace, name, generation, resourceVersion */
    json_t *events;  /* timeline rows: event, message, data */
    json_t *gray;
    double t[APPLY_T_N]; /* apply_clock() at each APPLY_T_ point */
    int timed;           /* went through the cluster part and its closing statement */
} apply_msg_t;

static double apply_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds from the message's Kafka CreateTime to now (its wait upstream of the stage);
 * NaN without a creation time. */
static double apply_queued_s(const rd_kafka_message_t *m)
{
    rd_kafka_timestamp_type_t type;
    int64_t ts = rd_kafka_message_timestamp(m, &type);
    struct timespec now;
    double s;

    if (ts <= 0 || type != RD_KAFKA_TIMESTAMP_CREATE_TIME)
        return NAN;
    clock_gettime(CLOCK_REALTIME, &now);
    s = (double)now.tv_sec + (double)now.tv_nsec / 1e9 - (double)ts / 1000.0;
    return s < 0 ? 0 : s;
}

/* Counts the parts of a message that went through its closing statement. */
static void apply_observe(apply_stage_t *as, const apply_msg_t *m, double queued_s, double end)
{
    if (!m->timed)
        return;
    rf_metrics_observe(as->parts, RF_LABELS(apply_part_names[0]), queued_s);
    for (int i = 1; i < APPLY_T_N; i++)
        rf_metrics_observe(as->parts, RF_LABELS(apply_part_names[i]), m->t[i] - m->t[i - 1]);
    rf_metrics_observe(as->parts, RF_LABELS(apply_part_names[APPLY_T_N]),
                       end - m->t[APPLY_T_N - 1]);
}

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
                       const char *fence_s, int shard)
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
    if (shard >= 0) {
        char num[16];
        snprintf(num, sizeof(num), "%d", shard);
        json_object_set_new(labels, APPLY_SHARD_LABEL, json_string(num));
    }
    ann = json_object_get(meta, "annotations");
    if (!json_is_object(ann)) {
        ann = json_object();
        json_object_set_new(meta, "annotations", ann);
    }
    json_object_set_new(ann, "relfleet.io/release", json_string(release_id));
    json_object_set_new(ann, APPLY_FENCE_ANNOTATION, json_string(fence_s));
}

/* Drops a namespace from those seen to exist; 1 when it was there (ops/bench: the GET
 * per release cost a sixth of the stage's time). */
static int apply_namespace_forget(apply_stage_t *as, rf_kube_t *kube, const char *ns)
{
    char key[600];
    int was;

    snprintf(key, sizeof(key), "%p|%s", (void *)kube, ns);
    pthread_mutex_lock(&as->ns_lock);
    was = json_object_del(as->namespaces, key) == 0;
    pthread_mutex_unlock(&as->ns_lock);
    return was;
}

/* Creates the service's namespace when it does not exist yet; asks the API server once
 * per namespace (apply_namespace_forget asks again). */
static rf_err_t apply_namespace(apply_stage_t *as, rf_kube_t *kube, const char *ns,
                                char *errstr, size_t errstr_size)
{
    char path[512], key[600];
    json_t *live = NULL, *obj;
    rf_err_t result;
    int known;

    snprintf(key, sizeof(key), "%p|%s", (void *)kube, ns);
    pthread_mutex_lock(&as->ns_lock);
    known = json_object_get(as->namespaces, key) != NULL;
    pthread_mutex_unlock(&as->ns_lock);
    if (known)
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
    if (result == RF_OK) {
        pthread_mutex_lock(&as->ns_lock);
        json_object_set_new(as->namespaces, key, json_true());
        pthread_mutex_unlock(&as->ns_lock);
    }
    return result;
}

/* Re-publishes `applied` of a release that is past the apply (redelivery). */
static rf_err_t apply_republish(rf_worker_t *w, const char *track, const char *key, char *errstr,
                                size_t errstr_size)
{
    json_t *t = json_loads(track ? track : "{}", 0, NULL);
    json_t *msg = json_object_get(t, "applied");
    char *text;
    rf_err_t result = RF_OK;

    if (json_is_object(msg)) {
        text = rf_json_dumps(msg, 0);
        result = rf_producer_send(w->producer, "applied", key, text, strlen(text), errstr,
                                  errstr_size);
        free(text);
    }
    json_decref(t);
    return result;
}

static void apply_msg_init(apply_msg_t *m, const rf_input_t *in, char *errstr, size_t errstr_size)
{
    json_t *b = in->body;

    memset(m, 0, sizeof(*m));
    m->in = in;
    m->id = json_string_value(json_object_get(b, "release_id"));
    m->service = json_string_value(json_object_get(b, "service"));
    m->env = json_string_value(json_object_get(b, "env"));
    m->ns = json_string_value(json_object_get(b, "namespace"));
    m->fence = json_integer_value(json_object_get(b, "fence"));
    snprintf(m->key, sizeof(m->key), "%s/%s", m->env, m->service);
    snprintf(m->fence_s, sizeof(m->fence_s), "%lld", (long long)m->fence);
    /* The key is <env>/<service> on every topic: with equal partition counts (the normal
     * layout) the release's `applied` message, hence its track worker, has this partition. */
    m->shard = in->m ? (int)in->m->partition : -1;
    m->errstr = errstr;
    m->errstr_size = errstr_size;
    m->errstr[0] = '\0';
}

static void apply_msg_release(apply_msg_t *m)
{
    free(m->status);
    free(m->track);
    free(m->cluster);
    free(m->strategy_text);
    json_decref(m->strategy);
    json_decref(m->manifests);
    json_decref(m->objects);
    json_decref(m->events);
    json_decref(m->gray);
}

static int apply_is_uuid(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

    if (!s || strlen(s) != sizeof(shape) - 1)
        return 0;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == '-' ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
            return 0;
    return 1;
}

static char *apply_dup(const char *s)
{
    char *p = strdup(s ? s : "");

    if (!p)
        abort();
    return p;
}

/* Reads the releases of the messages and their services in one statement: status, what
 * the track stage needs, and both fences (the one PostgreSQL check per message). An
 * error fails every message with it. */
static rf_err_t apply_load(rf_worker_t *w, apply_msg_t **msgs, size_t n, char *errstr,
                           size_t errstr_size)
{
    rf_buf_t ids = RF_BUF_INIT;
    const char *params[1];
    PGresult *res = NULL;
    rf_err_t result;

    rf_buf_addc(&ids, '{');
    for (size_t i = 0; i < n; i++)
        if (apply_is_uuid(msgs[i]->id))
            rf_buf_addf(&ids, "%s%s", ids.len > 1 ? "," : "", msgs[i]->id);
    rf_buf_addc(&ids, '}');
    params[0] = rf_buf_str(&ids);
    result = rf_db_exec(w->db,
                        "SELECT r.id::text, r.status, r.track::text, s.cluster, s.timeout_s,"
                        " s.strategy::text, r.fence, s.fence, s.strategy IS NOT NULL OR EXISTS"
                        " (SELECT 1 FROM service_history h WHERE h.service = s.service AND"
                        " h.env = s.env AND h.key = 'strategy') FROM releases r"
                        " JOIN services s USING (service, env) WHERE r.id = ANY($1::uuid[])",
                        1, params, &res, errstr, errstr_size);
    rf_buf_release(&ids);
    if (result != RF_OK)
        return result;
    for (int row = 0; row < PQntuples(res); row++)
        for (size_t i = 0; i < n; i++) {
            apply_msg_t *m = msgs[i];
            if (m->found || strcasecmp(m->id, PQgetvalue(res, row, 0)) != 0)
                continue;
            m->found = 1;
            m->status = apply_dup(PQgetvalue(res, row, 1));
            m->track = rf_db_value(res, row, 2) ? apply_dup(PQgetvalue(res, row, 2)) : NULL;
            m->cluster = rf_db_value(res, row, 3) ? apply_dup(PQgetvalue(res, row, 3)) : NULL;
            m->timeout_s = atoll(PQgetvalue(res, row, 4));
            m->strategy_text =
                rf_db_value(res, row, 5) ? apply_dup(PQgetvalue(res, row, 5)) : NULL;
            m->release_fence = rf_db_value(res, row, 6) ? atoll(PQgetvalue(res, row, 6)) : -1;
            m->service_fence = rf_db_value(res, row, 7) ? atoll(PQgetvalue(res, row, 7)) : -1;
            m->gray_ever = strcmp(PQgetvalue(res, row, 8), "t") == 0;
        }
    PQclear(res);
    return RF_OK;
}

/* Adds a timeline row of the message (data may be NULL). */
static void apply_event(apply_msg_t *m, const char *event, const char *message, const json_t *data)
{
    json_t *row = json_pack("{s:s, s:s}", "event", event, "message", message);

    if (data)
        json_object_set(row, "data", (json_t *)data);
    json_array_append_new(m->events, row);
}

/* The cluster part of a message, on any thread: the namespace, gray_prepare, then each
 * object through rf_kube_apply_fenced (its fence annotation and resourceVersion
 * precondition fence every object; PostgreSQL was checked once before). Sets m->result,
 * m->fail (end the release failed with m->errstr), m->objects, m->events, m->gray. */
static void apply_cluster_work(apply_stage_t *as, apply_msg_t *m)
{
    json_t *to_apply = NULL, *notes = json_array(), *manifest;
    const rf_msg_lean_t *lean;
    char msg[1024];
    rf_err_t result;
    size_t i;

    m->objects = json_array();
    m->events = json_array();
    result = apply_namespace(as, m->kube, m->ns, m->errstr, m->errstr_size);
    if (result == RF_OK) /* a canary or blue-green release applies beside the stable one */
        result = gray_prepare(m->kube, m->strategy, m->manifests, m->ns, m->timeout_s,
                              m->gray_ever, &to_apply, &m->gray, notes, m->errstr,
                              m->errstr_size);
    if (result == RF_ERR_PERM) /* a stable ingress missing or without the service's path */
        m->fail = 1;
    if (result != RF_OK)
        goto out;
    if (m->gray)
        apply_mark(json_object_get(m->gray, "stable_manifest"), m->ns, m->id, m->fence_s,
                   m->shard);
    json_array_foreach(notes, i, manifest)
        apply_event(m, "gray", json_string_value(manifest), NULL);
    /* Marked in place, no copy: to_apply holds the message's own manifests (or copies,
     * variants and the stable manifest of m->gray, marked alike above), which nothing
     * reads after this; rf_kube_apply_fenced leaves them without resourceVersion. The
     * message's own, parsed lean, go with the text of their other members as it came. */
    lean = m->lean && to_apply == m->manifests ? m->lean : NULL;
    if (lean && lean->n != json_array_size(to_apply)) {
        result = rf_errf(RF_ERR_PERM, m->errstr, m->errstr_size,
                         "%zu manifests, but the text of %zu", json_array_size(to_apply), lean->n);
        goto out;
    }
    json_array_foreach(to_apply, i, manifest) {
        json_t *stored = NULL, *meta, *obj;
        apply_mark(manifest, m->ns, m->id, m->fence_s, m->shard);
        result = rf_kube_apply_fenced_rest(m->kube, manifest, lean ? lean->rest[i] : NULL,
                                           lean ? lean->rest_len[i] : 0, "relfleet",
                                           APPLY_FENCE_ANNOTATION, m->fence, &stored, m->errstr,
                                           m->errstr_size);
        if (result == RF_ERR_NOTFOUND && apply_namespace_forget(as, m->kube, m->ns)) {
            result = RF_ERR_RETRY; /* the namespace may be gone since: look again */
            goto out;
        }
        if (result == RF_ERR_PERM || result == RF_ERR_NOTFOUND) {
            m->fail = 1;
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
        json_array_append_new(m->objects, obj);
        snprintf(msg, sizeof(msg), "applied %s %s/%s: generation %lld, resourceVersion %s",
                 json_string_value(json_object_get(obj, "kind")),
                 json_string_value(json_object_get(obj, "namespace")),
                 json_string_value(json_object_get(obj, "name")),
                 (long long)json_integer_value(json_object_get(obj, "generation")),
                 json_string_value(json_object_get(obj, "resourceVersion")));
        json_decref(stored);
        apply_event(m, "applied", msg, obj);
    }
out:
    m->result = result;
    json_decref(to_apply);
    json_decref(notes);
}

/* Ends the release of m as failed with m->errstr as the reason. */
static rf_err_t apply_fail(rf_worker_t *w, apply_msg_t *m, const char *prefix)
{
    char reason[1100];

    snprintf(reason, sizeof(reason), "%s%s", prefix, m->errstr);
    return rf_worker_end_release(w, m->id, m->service, m->env, m->fence, "failed", reason, NULL,
                                 m->errstr, m->errstr_size);
}

/* Checks what apply_load read and finds the cluster client (main thread: PostgreSQL,
 * the cluster clients). Returns 1 when the message goes on (its lock renewed, then
 * apply_prepare), else 0 with m->result set. */
static int apply_start(apply_stage_t *as, apply_msg_t *m)
{
    rf_worker_t *w = as->w;
    char cluster[256];

    if (!m->found) {
        m->result = rf_errf(RF_ERR_PERM, m->errstr, m->errstr_size, "unknown release '%s'",
                            m->id ? m->id : "");
        return 0;
    }
    if (strcmp(m->status, "progressing") == 0 || strcmp(m->status, "paused") == 0) {
        m->result = apply_republish(w, m->track, m->key, m->errstr, m->errstr_size);
        return 0;
    }
    if (strcmp(m->status, "applying") != 0) {
        m->result = RF_OK; /* ended meanwhile (cancelled, superseded): nothing to apply */
        return 0;
    }
    if (m->release_fence != m->fence || m->service_fence != m->fence) {
        m->result = rf_errf(RF_ERR_FENCED, m->errstr, m->errstr_size,
                            "release '%s' no longer holds fence %s", m->id, m->fence_s);
        return 0;
    }
    m->kube = apply_kube(as, rf_worker_cluster(w, m->env, m->cluster, cluster, sizeof(cluster)),
                         m->errstr, m->errstr_size);
    if (!m->kube) {
        m->result = apply_fail(w, m, "cannot reach the cluster: ");
        return 0;
    }
    return 1;
}

/* Renews the service locks of the n messages apply_start let through, in pipelined round
 * trips (the lease runs from here on; the fence, not the lock, guards the writes). */
static void apply_renew(apply_stage_t *as, apply_msg_t **ms, size_t n)
{
    rf_lock_item_t *items = calloc(n ? n : 1, sizeof(*items));
    size_t renewed = 0, lost = 0;
    char errstr[512];
    rf_err_t result;

    if (!items)
        abort();
    for (size_t i = 0; i < n; i++) {
        items[i].env = ms[i]->env;
        items[i].service = ms[i]->service;
        items[i].release_id = ms[i]->id;
    }
    result = rf_lock_renew_many(as->w->lock, items, n, as->w->conf->lock_lease_ms, errstr,
                                sizeof(errstr));
    for (size_t i = 0; i < n; i++) {
        if (items[i].held)
            renewed++;
        else if (result == RF_OK)
            lost++;
    }
    if (result != RF_OK) {
        rf_log_ctx_clear(); /* about the round, not one message */
        rf_log_warn("cannot renew %zu service locks: %s", n - renewed, errstr);
    }
    rf_worker_count_lock_renewals(renewed, lost, n - renewed - lost);
    free(items);
}

/* The manifests of a message parsed lean, whole: each one's kept members with the text of
 * the others, parsed as rf_msg_parse would have (NULL with errstr when that refuses it). */
static json_t *apply_whole(const json_t *manifests, const rf_msg_lean_t *lean, char *errstr,
                           size_t errstr_size)
{
    json_t *whole = json_array(), *item;
    rf_buf_t text = RF_BUF_INIT;
    json_error_t jerr;
    size_t i;

    json_array_foreach(manifests, i, item) {
        json_t *one = NULL;
        rf_buf_reset(&text);
        if (i < lean->n && rf_json_append(&text, item, 0) == 0 && text.len > 2) {
            text.data[--text.len] = '\0'; /* its '}': the other members go before it */
            if (lean->rest_len[i] > 0)
                rf_buf_addc(&text, ',');
            rf_buf_add(&text, lean->rest[i], lean->rest_len[i]);
            rf_buf_addc(&text, '}');
            one = json_loadb(rf_buf_str(&text), text.len, JSON_REJECT_DUPLICATES, &jerr);
        } else {
            snprintf(jerr.text, sizeof(jerr.text), "no text of its other members");
        }
        if (!one) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "manifest %zu is not JSON: %s", i,
                    jerr.text);
            json_decref(whole);
            whole = NULL;
            break;
        }
        json_array_append_new(whole, one);
    }
    if (whole && json_array_size(whole) != lean->n) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "%zu manifests, but the text of %zu",
                json_array_size(whole), lean->n);
        json_decref(whole);
        whole = NULL;
    }
    rf_buf_release(&text);
    return whole;
}

/* The last check before the cluster part: the service's strategy. Returns 1 when the
 * message goes on to the cluster, else 0 with m->result set. */
static int apply_prepare(apply_stage_t *as, apply_msg_t *m)
{
    const char *kind;
    char msg[1024];

    m->strategy = rf_strategy_parse_text(m->strategy_text, msg, sizeof(msg));
    if (!m->strategy) {
        snprintf(m->errstr, m->errstr_size, "%s", msg);
        m->result = apply_fail(as->w, m, "invalid strategy of the service: ");
        return 0;
    }
    m->manifests = json_incref(json_object_get(m->in->body, "manifests"));
    m->lean = m->in->lean;
    kind = json_string_value(json_object_get(m->strategy, "kind"));
    /* A canary or blue-green step reads and copies the Deployment's and Service's specs
     * (and may hand back the array it was given: then whole, without the texts). */
    if (m->lean && (!kind || strcmp(kind, "rolling") != 0)) {
        json_t *whole = apply_whole(m->manifests, m->lean, m->errstr, m->errstr_size);
        json_decref(m->manifests);
        m->manifests = whole;
        m->lean = NULL;
        if (!whole) {
            m->result = RF_ERR_PERM;
            return 0;
        }
    }
    return 1;
}

/* What the closing statement of a message writes and what it then sends. */
typedef struct apply_fin {
    char *applied_text; /* the `applied` message */
    char *track_text;   /* merged into the release's track: objects, timeout_s, applied, ... */
    char *events_text;  /* its timeline rows */
    char msg[200];      /* the "progressing" row's message */
} apply_fin_t;

/* The texts of the closing statement and `applied`, the objects written out once: the
 * bytes json_dumps(JSON_COMPACT) made of {schema .. namespace, objects, applied_at} and of
 * {objects, timeout_s, applied, gray, shard}, without building and dumping them whole. */
static void apply_fin_init(apply_fin_t *f, const apply_msg_t *m)
{
    rf_buf_t applied = RF_BUF_INIT, track = RF_BUF_INIT;
    char now[40], *objects, *head_text, *gray = NULL;
    json_t *head;

    rf_msg_now_iso(now, sizeof(now));
    head = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "schema", "relfleet.applied.v1",
                     "release_id", m->id, "service", m->service, "env", m->env, "fence",
                     (json_int_t)m->fence, "namespace", m->ns);
    head_text = head ? rf_json_dumps(head, 0) : NULL;
    objects = rf_json_dumps(m->objects, 0);
    if (m->gray)
        gray = rf_json_dumps(m->gray, 0);
    f->events_text = rf_json_dumps(m->events, 0);
    if (!head_text || !objects || (m->gray && !gray) || !f->events_text)
        abort();
    /* head_text ends with '}': the members that follow go before it */
    rf_buf_add(&applied, head_text, strlen(head_text) - 1);
    rf_buf_adds(&applied, ",\"objects\":");
    rf_buf_adds(&applied, objects);
    rf_buf_addf(&applied, ",\"applied_at\":\"%s\"}", now); /* ISO 8601: nothing to escape */
    rf_buf_adds(&track, "{\"objects\":");
    rf_buf_adds(&track, objects);
    rf_buf_addf(&track, ",\"timeout_s\":%lld,\"applied\":", m->timeout_s);
    rf_buf_adds(&track, rf_buf_str(&applied));
    if (gray) {
        rf_buf_adds(&track, ",\"gray\":");
        rf_buf_adds(&track, gray);
    }
    if (m->shard >= 0) /* the track stage watches the Deployments of its shards only */
        rf_buf_addf(&track, ",\"shard\":%d", m->shard);
    rf_buf_addc(&track, '}');
    f->applied_text = rf_buf_detach(&applied);
    f->track_text = rf_buf_detach(&track);
    if (!f->applied_text || !f->track_text)
        abort();
    snprintf(f->msg, sizeof(f->msg), "applied %zu objects; following the rollout",
             json_array_size(m->objects));
    free(gray);
    free(objects);
    free(head_text);
    json_decref(head);
}

static void apply_fin_release(apply_fin_t *f)
{
    free(f->applied_text);
    free(f->track_text);
    free(f->events_text);
}

/* After the closing statement: `applied` when the release moved, else its lost fence. */
static rf_err_t apply_fin_send(rf_worker_t *w, apply_msg_t *m, const apply_fin_t *f, int moved)
{
    if (!moved)
        return rf_errf(RF_ERR_FENCED, m->errstr, m->errstr_size,
                       "release '%s' lost fence %s before progressing", m->id, m->fence_s);
    return rf_producer_send(w->producer, "applied", m->key, f->applied_text,
                            strlen(f->applied_text), m->errstr, m->errstr_size);
}

/* The closing statement of one message: progressing (fenced) and every timeline row of
 * the message, the objects' and gray notes' rows even when the fence was lost meanwhile. */
static rf_err_t apply_finish(rf_worker_t *w, apply_msg_t *m, const apply_fin_t *f)
{
    const char *params[5] = {m->id, m->fence_s, f->track_text, f->events_text, f->msg};
    PGresult *res = NULL;
    rf_err_t result;

    result = rf_store_apply_finish(w->db, params, &res, m->errstr, m->errstr_size);
    if (result == RF_OK)
        result = apply_fin_send(w, m, f, strcmp(PQgetvalue(res, 0, 0), "1") == 0);
    PQclear(res);
    return result;
}

/* The closing statements of n messages (2 or more, of distinct releases) in one
 * (rf_store_apply_finish_many): each release's fence is checked in its own row, so each
 * message has its own outcome. A retriable failure retries them all; another (a row the
 * statement refuses) closes each alone, so the others go on. */
static void apply_finish_many(rf_worker_t *w, apply_msg_t **ms, const apply_fin_t *fins,
                              size_t n)
{
    rf_buf_t rows = RF_BUF_INIT;
    PGresult *res = NULL;
    rf_err_t result;

    rf_buf_addc(&rows, '[');
    for (size_t i = 0; i < n; i++) {
        /* the id is a release's (apply_load found it), the rest numbers and our texts */
        rf_buf_addf(&rows, "%s{\"n\":%zu,\"id\":\"%s\",\"fence\":%s,\"message\":\"%s\",\"track\":",
                    i ? "," : "", i, ms[i]->id, ms[i]->fence_s, fins[i].msg);
        rf_buf_adds(&rows, fins[i].track_text);
        rf_buf_adds(&rows, ",\"events\":");
        rf_buf_adds(&rows, fins[i].events_text);
        rf_buf_addc(&rows, '}');
    }
    rf_buf_addc(&rows, ']');
    result = rf_store_apply_finish_many(w->db, rf_buf_str(&rows), &res, ms[0]->errstr,
                                        ms[0]->errstr_size);
    rf_buf_release(&rows);
    if (result == RF_OK && PQntuples(res) != (int)n)
        result = rf_errf(RF_ERR_RETRY, ms[0]->errstr, ms[0]->errstr_size,
                         "the closing statement of %zu releases answered %d rows", n,
                         PQntuples(res));
    if (result == RF_OK) {
        for (size_t i = 0; i < n; i++) { /* rows in the order of n */
            rf_worker_log_ctx(ms[i]->in->m, ms[i]->in->body);
            ms[i]->result = apply_fin_send(w, ms[i], &fins[i],
                                           strcmp(PQgetvalue(res, (int)i, 1), "t") == 0);
        }
    } else if (result == RF_ERR_RETRY) {
        for (size_t i = 0; i < n; i++) {
            ms[i]->result = result;
            if (i > 0)
                snprintf(ms[i]->errstr, ms[i]->errstr_size, "%s", ms[0]->errstr);
        }
    } else {
        rf_log_ctx_clear(); /* about the round's messages, not one of them */
        rf_log_info("the closing statement of %zu releases failed (%s): one by one", n,
                    ms[0]->errstr);
        for (size_t i = 0; i < n; i++) {
            rf_worker_log_ctx(ms[i]->in->m, ms[i]->in->body);
            ms[i]->result = apply_finish(w, ms[i], &fins[i]);
        }
    }
    PQclear(res);
}

/* After a cluster part that did not complete: its timeline rows, then the outcome. */
static rf_err_t apply_unfinished(rf_worker_t *w, apply_msg_t *m)
{
    char keep[1024];

    if (json_array_size(m->events) > 0) {
        snprintf(keep, sizeof(keep), "%s", m->errstr);
        rf_err_t r = rf_store_events(w->db, m->id, "apply", m->events, m->errstr, m->errstr_size);
        if (r != RF_OK)
            return r;
        snprintf(m->errstr, m->errstr_size, "%s", keep);
    }
    if (m->fail)
        return apply_fail(w, m, "");
    return m->result;
}

typedef struct apply_pool {
    apply_stage_t *as;
    apply_msg_t **todo;
    size_t n;
    size_t next;        /* the next message to take */
    apply_msg_t **done; /* those whose cluster part ended, in that order */
    size_t ndone;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled at each one done */
} apply_pool_t;

static void *apply_pool_run(void *arg)
{
    apply_pool_t *p = arg;

    for (;;) {
        size_t i;
        pthread_mutex_lock(&p->lock);
        i = p->next++;
        pthread_mutex_unlock(&p->lock);
        if (i >= p->n)
            return NULL;
        rf_worker_log_ctx(p->todo[i]->in->m, p->todo[i]->in->body);
        apply_cluster_work(p->as, p->todo[i]);
        p->todo[i]->t[APPLY_T_APPLIED] = apply_clock();
        pthread_mutex_lock(&p->lock);
        p->done[p->ndone++] = p->todo[i];
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
    }
}

/* The closing statements of messages whose cluster parts ended (main thread): those that
 * completed together in one statement, each of the others alone in its place (its
 * timeline rows, then its outcome), a release met twice alone after the rest. */
static void apply_close_many(apply_stage_t *as, apply_msg_t **ms, size_t n)
{
    rf_worker_t *w = as->w;
    apply_msg_t **ok = calloc(n, sizeof(*ok)), **again = calloc(n, sizeof(*again));
    apply_fin_t *fins = calloc(n, sizeof(*fins));
    size_t nok = 0, nagain = 0;
    double t0 = apply_clock(), t1;

    if (!ok || !again || !fins)
        abort();
    for (size_t i = 0; i < n; i++) {
        apply_msg_t *m = ms[i];
        int dup = 0;
        m->t[APPLY_T_FINISH] = t0;
        if (m->result != RF_OK) {
            rf_worker_log_ctx(m->in->m, m->in->body);
            m->result = apply_unfinished(w, m);
            m->t[APPLY_T_FINISHED] = apply_clock();
            continue;
        }
        for (size_t j = 0; j < nok && !dup; j++)
            dup = strcasecmp(ok[j]->id, m->id) == 0;
        if (dup)
            again[nagain++] = m;
        else
            ok[nok++] = m;
    }
    for (size_t i = 0; i < nok; i++)
        apply_fin_init(&fins[i], ok[i]);
    if (nok == 1) {
        rf_worker_log_ctx(ok[0]->in->m, ok[0]->in->body);
        ok[0]->result = apply_finish(w, ok[0], &fins[0]);
    } else if (nok > 1) {
        apply_finish_many(w, ok, fins, nok);
    }
    t1 = apply_clock();
    for (size_t i = 0; i < nok; i++) {
        ok[i]->timed = ok[i]->result == RF_OK;
        ok[i]->t[APPLY_T_FINISHED] = t1;
        apply_fin_release(&fins[i]);
    }
    for (size_t i = 0; i < nagain; i++) {
        apply_msg_t *m = again[i];
        rf_worker_log_ctx(m->in->m, m->in->body);
        apply_fin_init(&fins[0], m);
        m->result = apply_finish(w, m, &fins[0]);
        apply_fin_release(&fins[0]);
        m->timed = m->result == RF_OK;
        m->t[APPLY_T_FINISHED] = apply_clock();
    }
    free(fins);
    free(again);
    free(ok);
}

/* The cluster parts of messages of distinct keys, up to APPLY_THREADS at once (the
 * client shares its connections between threads), and the closing statements on this
 * thread as cluster parts end: those that ended while it was busy (the statement before,
 * the wait) or within APPLY_CLOSE_WAIT_MS of the first of them close together in one
 * statement (up to APPLY_CLOSE_GROUP; all that are left, if fewer). Distinct keys, so no
 * order among them to keep, and a message waits at most APPLY_CLOSE_WAIT_MS for others,
 * not for the round's slowest. */
static void apply_cluster_all(apply_stage_t *as, apply_msg_t **todo, size_t n)
{
    apply_pool_t p = {as, todo, n, 0, calloc(n ? n : 1, sizeof(*p.done)), 0,
                      PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
    pthread_condattr_t ca;
    pthread_t threads[APPLY_THREADS];
    size_t started = 0;

    if (!p.done)
        abort();
    /* timed waits on the monotonic clock: a step of the wall clock does not stretch one */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p.cond, &ca);
    pthread_condattr_destroy(&ca);
    while (n > 1 && started < n && started < APPLY_THREADS) {
        if (pthread_create(&threads[started], NULL, apply_pool_run, &p) != 0)
            break;
        started++;
    }
    if (started == 0) /* one message, or no thread to be had: all here, then close */
        apply_pool_run(&p);
    for (size_t k = 0; k < n;) {
        size_t ndone;
        size_t want;
        struct timespec until;
        pthread_mutex_lock(&p.lock);
        while (p.ndone <= k)
            pthread_cond_wait(&p.cond, &p.lock);
        want = n - k < APPLY_CLOSE_GROUP ? n - k : APPLY_CLOSE_GROUP;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += APPLY_CLOSE_WAIT_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (p.ndone - k < want && pthread_cond_timedwait(&p.cond, &p.lock, &until) == 0)
            ;
        ndone = p.ndone; /* p.done[k .. ndone) stay as they are: read without the lock */
        pthread_mutex_unlock(&p.lock);
        apply_close_many(as, p.done + k, ndone - k);
        k = ndone;
    }
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_cond_destroy(&p.cond);
    pthread_mutex_destroy(&p.lock);
    free(p.done);
}

/* Messages of distinct keys: one read of PostgreSQL, the cluster parts together, the
 * closing statements and `applied` messages as their cluster parts end. */
static void apply_round(apply_stage_t *as, apply_msg_t **msgs, size_t n)
{
    apply_msg_t **todo = calloc(n, sizeof(*todo));
    char errstr[512];
    size_t ntodo = 0, k;
    rf_err_t result;
    double t0, t1;

    if (!todo)
        abort();
    t0 = apply_clock();
    result = apply_load(as->w, msgs, n, errstr, sizeof(errstr));
    t1 = apply_clock();
    for (size_t i = 0; i < n; i++) {
        msgs[i]->t[APPLY_T_ROUND] = t0;
        msgs[i]->t[APPLY_T_LOADED] = t1;
        if (result != RF_OK) {
            msgs[i]->result = result;
            snprintf(msgs[i]->errstr, msgs[i]->errstr_size, "%s", errstr);
        } else {
            rf_worker_log_ctx(msgs[i]->in->m, msgs[i]->in->body);
            if (apply_start(as, msgs[i]))
                todo[ntodo++] = msgs[i];
        }
    }
    if (ntodo > 0)
        apply_renew(as, todo, ntodo);
    k = 0;
    for (size_t i = 0; i < ntodo; i++) {
        rf_worker_log_ctx(todo[i]->in->m, todo[i]->in->body);
        if (apply_prepare(as, todo[i]))
            todo[k++] = todo[i];
    }
    ntodo = k;
    t0 = apply_clock();
    for (size_t i = 0; i < ntodo; i++)
        todo[i]->t[APPLY_T_CLUSTER] = t0;
    apply_cluster_all(as, todo, ntodo);
    free(todo);
}

/* A poll batch: rounds of messages of distinct keys (env/service), each key's messages in
 * their order; a message after one of its key that is retried or refused is retried too
 * (after the dead letter, for a refused one). */
static void apply_handle_batch(void *state, rf_input_t *const *in, size_t n, rf_err_t *results,
                               char *const *errstrs, size_t errstr_size)
{
    apply_stage_t *as = state;
    apply_msg_t *msgs = calloc(n, sizeof(*msgs));
    apply_msg_t **round = calloc(n, sizeof(*round));
    char *done = calloc(n, 1);
    double *queued = calloc(n, sizeof(*queued));
    json_t *blocked = json_object(), *used = json_object();
    size_t left = n;
    double t0 = apply_clock();

    if (!msgs || !round || !done || !queued)
        abort();
    for (size_t i = 0; i < n; i++) {
        apply_msg_init(&msgs[i], in[i], errstrs[i], errstr_size);
        msgs[i].t[APPLY_T_BATCH] = t0;
        queued[i] = apply_queued_s(in[i]->m);
    }
    while (left > 0) {
        size_t k = 0;
        json_object_clear(used);
        for (size_t i = 0; i < n; i++) {
            apply_msg_t *m = &msgs[i];
            if (done[i] || json_object_get(used, m->key))
                continue;
            json_object_set_new(used, m->key, json_true());
            done[i] = 1;
            left--;
            if (json_object_get(blocked, m->key)) {
                m->result = rf_errf(RF_ERR_RETRY, m->errstr, m->errstr_size,
                                    "an earlier message of '%s' is %s", m->key,
                                    json_string_value(json_object_get(blocked, m->key)));
                continue;
            }
            round[k++] = m;
        }
        apply_round(as, round, k);
        /* A message refused for good is dead-lettered once the hook returns: its key's
         * later messages come again after the dead letter, as they would one by one. */
        for (size_t i = 0; i < k; i++)
            if (round[i]->result == RF_ERR_RETRY || round[i]->result == RF_ERR_PERM)
                json_object_set_new(blocked, round[i]->key,
                                    json_string(round[i]->result == RF_ERR_PERM ? "refused"
                                                                                : "retried"));
    }
    t0 = apply_clock();
    for (size_t i = 0; i < n; i++) {
        results[i] = msgs[i].result;
        apply_observe(as, &msgs[i], queued[i], t0);
        apply_msg_release(&msgs[i]);
    }
    free(queued);
    json_decref(blocked);
    json_decref(used);
    free(done);
    free(round);
    free(msgs);
}

static rf_err_t apply_handle(void *state, const rf_input_t *in, char *errstr, size_t errstr_size)
{
    rf_input_t *one[1] = {(rf_input_t *)in};
    rf_err_t result;
    char *errs[1] = {errstr};

    apply_handle_batch(state, one, 1, &result, errs, errstr_size);
    return result;
}

static rf_err_t apply_init(rf_worker_t *w, void **state, char *errstr, size_t errstr_size)
{
    apply_stage_t *as = calloc(1, sizeof(*as));

    if (!as)
        abort();
    as->w = w;
    as->parts = rf_metrics_histogram(
        "relfleet_apply_part_seconds",
        "Where an applied release's time went, per part in order: queue (`rendered` created"
        " -> its poll batch handed to the stage), batch (earlier rounds of the batch),"
        " pg_read (the round's read), lock (the round's checks and lock renewals), api (its"
        " API round trips), round (waiting for the closing statements of those whose cluster"
        " part ended before), pg_finish (its closing statement and produce), after (later closing"
        " statements and rounds of the batch)",
        "part", apply_part_bounds, sizeof(apply_part_bounds) / sizeof(apply_part_bounds[0]));
    pthread_mutex_init(&as->ns_lock, NULL);
    as->namespaces = json_object();
    /* Fail at start, not at the first release, when the cluster is not configured. */
    as->probe = rf_worker_kube_probe_new(w, errstr, errstr_size);
    if (!as->probe || !apply_kube(as, NULL, errstr, errstr_size)) {
        rf_kube_destroy(as->probe);
        json_decref(as->namespaces);
        pthread_mutex_destroy(&as->ns_lock);
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
    pthread_mutex_destroy(&as->ns_lock);
    free(as);
}

static int apply_ready(void *state)
{
    return rf_worker_kube_ready(((apply_stage_t *)state)->probe);
}

static const char *const apply_topics[] = {"rendered", NULL};
/* What apply reads of a manifest (rf_kube_object_path, the fence, apply_mark) and what the
 * schema constrains: the rest goes to the API server as it came (apply_whole for a gray
 * strategy's copies). */
static const char *const apply_lean_keep[] = {"apiVersion", "kind", "metadata", NULL};

const rf_stage_t rf_stage_apply = {
    .name = "apply",
    .topics = apply_topics,
    .poll_ms = 100,
    .needs_lock = 1,
    .lean_array = "manifests",
    .lean_keep = apply_lean_keep,
    .init = apply_init,
    .handle = apply_handle,
    .handle_batch = apply_handle_batch,
    .tick = NULL,
    .destroy = apply_destroy,
    .ready = apply_ready,
};
