/* The track stage: follows every active rollout through a watch per shard, ends each release once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common.h"
#include "rf_clock.h"
#include "gray.h"
#include "rf_auth.h"
#include "rf_buf.h"
#include "rf_jtext.h"
#include "rf_json.h"
#include "rf_kube.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_msg.h"
#include "rf_release.h"
#include "rf_store.h"
#include "worker.h"

#define TRACK_CLAIM_MS 1000      /* look for releases nobody follows */
#define TRACK_CLAIM_GRACE_MS 10000 /* a release never claimed waits this long for its worker */
#define TRACK_OWED_MS 2000       /* look for results messages a dead worker owes */
#define TRACK_PROGRESS_MS 250    /* record progress at most this often (ends: at once) */
#define TRACK_RETRY_END_MS 1000  /* an end that could not be stored is tried again */
#define TRACK_BATCH 1000         /* releases per statement of progress or ends */
#define TRACK_POLL_ROUNDS 64     /* watch reads per tick at most */
#define TRACK_RENEW_PASS_MS 250  /* look for due renewals this often */
#define TRACK_RENEW_SLICE 500    /* renewals per pass at least (else a tenth of all) */
#define TRACK_RENEW_MS 5000      /* renew our claims and service locks */
#define TRACK_LEASE_S 15         /* a claim lapses this long after its last renewal */
#define TRACK_LOG_LINES 100
#define TRACK_MAX_PODS 10
#define TRACK_LOG_BYTES 8000 /* the result schema's log_tail limit, with room to spare */
#define TRACK_SELECTOR "app.kubernetes.io%2Fmanaged-by%3Drelfleet"
#define TRACK_SHARD_LABEL "relfleet.io%2Fshard" /* set by apply: the release's partition */
#define TRACK_SHARD_SWEEP_MS 1000 /* look for shards without releases this often */
#define TRACK_SHARD_IDLE_MS 10000 /* a shard's watch ends this long after its last release */

/* What a list page leaves out of each Deployment, unparsed (its events come as text,
 * rf_kube_watch_set_raw): track_summarize reads the rest (metadata's name, namespace,
 * generation, resourceVersion; spec's replicas and selector; status). The pod template is
 * most of what is left once managedFields are gone. */
static const char *const track_watch_drop[] = {
    "metadata.managedFields", "metadata.annotations", "metadata.labels",
    "metadata.uid", "metadata.creationTimestamp", "spec.template", "spec.strategy",
    "spec.revisionHistoryLimit", "spec.progressDeadlineSeconds", "spec.minReadySeconds",
    NULL};

typedef struct track_stage track_stage_t;
typedef struct track_cluster track_cluster_t;

/* One informer of a cluster's Deployments: those of one shard (label relfleet.io/shard,
 * which apply sets to the partition of the release's messages and records in its track
 * state), or, shard -1, those without the label (applied before it existed). A worker
 * watches only the shards it follows releases in, so n track workers share the events
 * instead of each decoding all of them (issue 20). */
typedef struct track_shard {
    struct track_shard *next;
    track_stage_t *ts;
    track_cluster_t *tc;
    int shard;
    rf_kube_watch_t *watch;
    json_t *cache; /* "cluster|ns/name" -> summary of the Deployment */
    long used_ms;  /* when a release of the shard was last followed */
} track_shard_t;

struct track_cluster {
    char *name; /* "" for the current context */
    rf_kube_t *kube;
    track_shard_t *shards; /* the watches open */
};

struct track_stage {
    rf_worker_t *w;
    char owner[128];
    rf_kube_multi_t *multi;
    track_cluster_t clusters[16];
    int nclusters;
    json_t *tracked;  /* release id -> {service, env, fence, cluster, shard, deadline_ms,
                       * deploys, message} */
    json_t *by_deploy; /* "cluster|ns/name" -> release id */
    json_t *dirty;     /* release id -> true: progress not recorded yet ("pmessage") */
    json_t *ending;    /* release id -> true: decided, to end at the next flush ("end") */
    rf_kube_t *probe;  /* readiness: the default cluster answers */
    long last_claim, last_renew, last_timeouts, last_progress, last_owed, last_shards;
    rf_metric_t *timed_out; /* releases this worker ended for passing their timeout */
};

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static json_int_t jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* 1 when the text s[b..e) is the JSON string of name (quotes included, no escapes). */
static int track_text_is(const char *s, size_t b, size_t e, const char *name)
{
    size_t n = strlen(name);

    return e - b == n + 2 && s[b] == '"' && memcmp(s + b + 1, name, n) == 0;
}

/* The current member's value as a string: its bytes when it has no escapes, else as jansson
 * decodes it; NULL when it is not a string (or not valid UTF-8). */
static json_t *track_member_string(rf_jtext_it_t *m)
{
    size_t ve = rf_jtext_it_value_end(m), n;
    const char *v = m->s + m->vs;
    json_t *j;

    if (ve > m->len || (n = ve - m->vs) < 2 || v[0] != '"')
        return NULL;
    if (!memchr(v + 1, '\\', n - 2))
        return json_stringn(v + 1, n - 2);
    j = json_loadb(v, n, JSON_DECODE_ANY, NULL);
    if (!json_is_string(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* The current member's value as an integer (up to 18 digits), else dflt. */
static json_int_t track_member_int(rf_jtext_it_t *m, json_int_t dflt)
{
    size_t ve = rf_jtext_it_value_end(m), n, i;
    const char *v = m->s + m->vs;
    json_int_t x = 0;

    if (ve > m->len)
        return dflt;
    n = ve - m->vs;
    i = v[0] == '-';
    if (i >= n || n - i > 18)
        return dflt;
    for (; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return dflt;
        x = x * 10 + (v[i] - '0');
    }
    return v[0] == '-' ? -x : x;
}

/* The Progressing condition's reason, of the conditions array that is m's value, into sum
 * (its message, which nothing read, is no longer kept). */
static void track_conditions(json_t *sum, rf_jtext_it_t *m)
{
    const char *s = m->s;
    size_t ve = rf_jtext_it_value_end(m), j, ee;

    if (ve > m->len || s[m->vs] != '[')
        return;
    for (j = rf_jtext_ws(s, ve, m->vs + 1); j < ve && s[j] != ']'; j = rf_jtext_ws(s, ve, j)) {
        rf_jtext_it_t c;
        json_t *reason = NULL;
        int progressing = 0;
        ee = rf_jtext_skip(s, ve, j);
        if (ee > ve)
            return;
        rf_jtext_it_init(&c, s, ee, j);
        while (rf_jtext_it_next(&c)) {
            if (rf_jtext_it_key_is(&c, "type"))
                progressing = track_text_is(s, c.vs, rf_jtext_it_value_end(&c), "Progressing");
            else if (rf_jtext_it_key_is(&c, "reason") && !reason)
                reason = track_member_string(&c);
        }
        if (progressing)
            json_object_set_new(sum, "reason", reason ? reason : json_string(""));
        else
            json_decref(reason);
        j = rf_jtext_ws(s, ve, ee);
        if (j < ve && s[j] == ',')
            j++;
    }
}

/* The fields of a Deployment that decide its rollout, kept per object, from its JSON text
 * s[0..len) (the watch hands events over as text, rf_kube_watch_set_raw: parsing each into
 * a tree for a dozen members was most of the stage's CPU, issue 20), read in one pass
 * (rf_jtext_it); *key is "cluster|namespace/name". */
static json_t *track_summarize(const char *s, size_t len, const char *cluster, char *key,
                               size_t key_size)
{
    json_t *sum = json_object(), *name = NULL, *ns = NULL;
    json_int_t generation = 0, observed = 0, desired = 1, replicas = 0, updated = 0, ready = 0,
               available = 0;
    rf_jtext_it_t root, a, b, c;
    rf_buf_t sel = RF_BUF_INIT;

    rf_jtext_it_init(&root, s, len, 0);
    while (rf_jtext_it_next(&root)) {
        if (rf_jtext_it_key_is(&root, "metadata")) {
            rf_jtext_it_enter(&a, &root);
            while (rf_jtext_it_next(&a)) {
                if (rf_jtext_it_key_is(&a, "name") && !name)
                    name = track_member_string(&a);
                else if (rf_jtext_it_key_is(&a, "namespace") && !ns)
                    ns = track_member_string(&a);
                else if (rf_jtext_it_key_is(&a, "generation"))
                    generation = track_member_int(&a, 0);
            }
        } else if (rf_jtext_it_key_is(&root, "spec")) {
            rf_jtext_it_enter(&a, &root);
            while (rf_jtext_it_next(&a)) {
                if (rf_jtext_it_key_is(&a, "replicas")) {
                    desired = track_member_int(&a, 1);
                } else if (rf_jtext_it_key_is(&a, "selector")) {
                    rf_jtext_it_enter(&b, &a);
                    while (rf_jtext_it_next(&b)) {
                        if (!rf_jtext_it_key_is(&b, "matchLabels"))
                            continue;
                        rf_jtext_it_enter(&c, &b);
                        while (rf_jtext_it_next(&c)) {
                            json_t *v = track_member_string(&c);
                            rf_buf_addf(&sel, "%s%.*s=%s", sel.len ? "," : "",
                                        (int)(c.ke - c.ks - 2), s + c.ks + 1,
                                        v ? json_string_value(v) : "");
                            json_decref(v);
                        }
                    }
                }
            }
        } else if (rf_jtext_it_key_is(&root, "status")) {
            rf_jtext_it_enter(&a, &root);
            while (rf_jtext_it_next(&a)) {
                if (rf_jtext_it_key_is(&a, "observedGeneration"))
                    observed = track_member_int(&a, 0);
                else if (rf_jtext_it_key_is(&a, "replicas"))
                    replicas = track_member_int(&a, 0);
                else if (rf_jtext_it_key_is(&a, "updatedReplicas"))
                    updated = track_member_int(&a, 0);
                else if (rf_jtext_it_key_is(&a, "readyReplicas"))
                    ready = track_member_int(&a, 0);
                else if (rf_jtext_it_key_is(&a, "availableReplicas"))
                    available = track_member_int(&a, 0);
                else if (rf_jtext_it_key_is(&a, "conditions"))
                    track_conditions(sum, &a);
            }
        }
    }
    snprintf(key, key_size, "%s|%s/%s", cluster, ns ? json_string_value(ns) : "",
             name ? json_string_value(name) : "");
    json_decref(name);
    json_decref(ns);
    json_object_set_new(sum, "generation", json_integer(generation));
    json_object_set_new(sum, "observed", json_integer(observed));
    json_object_set_new(sum, "desired", json_integer(desired));
    json_object_set_new(sum, "replicas", json_integer(replicas));
    json_object_set_new(sum, "updated", json_integer(updated));
    json_object_set_new(sum, "ready", json_integer(ready));
    json_object_set_new(sum, "available", json_integer(available));
    json_object_set_new(sum, "selector", json_string(rf_buf_str(&sel)));
    rf_buf_release(&sel);
    return sum;
}

/* kubectl's rollout status for one Deployment: 1 done, -1 failed, 0 going on; msg says how. */
static int track_rollout_status(const json_t *sum, json_int_t min_generation, const char *name,
                                char *msg, size_t size)
{
    json_int_t desired, updated, replicas, available;

    if (!sum || jint(sum, "generation") < min_generation ||
        jint(sum, "generation") > jint(sum, "observed")) {
        snprintf(msg, size, "deployment %s: waiting for the spec update to be observed", name);
        return 0;
    }
    if (strcmp(jstr(sum, "reason"), "ProgressDeadlineExceeded") == 0) {
        snprintf(msg, size, "deployment \"%s\" exceeded its progress deadline", name);
        return -1;
    }
    desired = jint(sum, "desired");
    updated = jint(sum, "updated");
    replicas = jint(sum, "replicas");
    available = jint(sum, "available");
    if (updated < desired) {
        snprintf(msg, size, "deployment %s: %lld of %lld new replicas have been updated", name,
                 (long long)updated, (long long)desired);
        return 0;
    }
    if (replicas > updated) {
        snprintf(msg, size, "deployment %s: %lld old replicas are pending termination", name,
                 (long long)(replicas - updated));
        return 0;
    }
    if (available < updated) {
        snprintf(msg, size, "deployment %s: %lld of %lld updated replicas are available", name,
                 (long long)available, (long long)updated);
        return 0;
    }
    snprintf(msg, size, "deployment %s successfully rolled out (%lld of %lld available)", name,
             (long long)available, (long long)desired);
    return 1;
}

static track_cluster_t *track_cluster(track_stage_t *ts, const char *name, char *errstr,
                                      size_t errstr_size);

/* The watch of a cluster's shard, if open. */
static track_shard_t *track_shard_find(track_stage_t *ts, const char *cluster, int shard)
{
    track_shard_t *sh;

    for (int i = 0; i < ts->nclusters; i++) {
        if (strcmp(ts->clusters[i].name, cluster) != 0)
            continue;
        for (sh = ts->clusters[i].shards; sh; sh = sh->next)
            if (sh->shard == shard)
                return sh;
    }
    return NULL;
}

/* The shard of a followed release: -1 when applied without one (before the label). */
static int track_release_shard(const json_t *t)
{
    const json_t *v = json_object_get(t, "shard");

    return json_is_integer(v) ? (int)json_integer_value(v) : -1;
}

/* The summary of a Deployment of a followed release (NULL: not seen yet). */
static const json_t *track_summary(track_stage_t *ts, const json_t *t, const char *key)
{
    track_shard_t *sh = track_shard_find(ts, jstr(t, "cluster"), track_release_shard(t));

    return sh ? json_object_get(sh->cache, key) : NULL;
}

/* The pods of a failed Deployment that are not running well, with their last log lines. */
static json_t *track_failing_pods(track_stage_t *ts, const char *cluster, const char *ns,
                                  const json_t *sum)
{
    track_cluster_t *tc = track_cluster(ts, cluster, NULL, 0);
    json_t *pods = json_array(), *list = NULL, *pod;
    char path[2048], errstr[512];
    char *sel;
    size_t i;

    if (!tc || !*jstr(sum, "selector"))
        return pods;
    sel = curl_easy_escape(NULL, jstr(sum, "selector"), 0);
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods?labelSelector=%s", ns,
             sel ? sel : "");
    curl_free(sel);
    if (rf_kube_list(tc->kube, path, &list, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("cannot list pods: %s", errstr);
        return pods;
    }
    json_array_foreach(json_object_get(list, "items"), i, pod) {
        const json_t *meta = json_object_get(pod, "metadata");
        const json_t *st = json_object_get(pod, "status");
        const json_t *cs = json_array_get(json_object_get(st, "containerStatuses"), 0);
        const json_t *waiting = json_object_get(json_object_get(cs, "state"), "waiting");
        const char *phase = jstr(st, "phase");
        char *log = NULL;
        json_t *p;
        if (json_object_get(meta, "deletionTimestamp"))
            continue; /* terminating */
        if (strcmp(phase, "Running") == 0 && json_is_true(json_object_get(cs, "ready")))
            continue;
        if (json_array_size(pods) >= TRACK_MAX_PODS)
            break;
        p = json_pack("{s:s, s:s, s:I, s:n, s:n}", "name", jstr(meta, "name"), "phase",
                      *phase ? phase : "Unknown", "restarts", jint(cs, "restartCount"), "reason",
                      "log_tail");
        if (waiting)
            json_object_set_new(p, "reason", json_string(jstr(waiting, "reason")));
        if (rf_kube_pod_logs(tc->kube, ns, jstr(meta, "name"), NULL, TRACK_LOG_LINES, &log, errstr,
                             sizeof(errstr)) == RF_OK) {
            /* Keep the end of the log, cut at a line start, within the size limit. */
            const char *tail = log;
            size_t len = strlen(log);
            if (len > TRACK_LOG_BYTES) {
                tail = log + len - TRACK_LOG_BYTES;
                if (strchr(tail, '\n'))
                    tail = strchr(tail, '\n') + 1;
            }
            json_object_set_new(p, "log_tail", json_string(tail));
        }
        free(log);
        json_array_append_new(pods, p);
    }
    json_decref(list);
    return pods;
}

/* Stops following a release (ended here or elsewhere). */
static void track_forget(track_stage_t *ts, const char *id)
{
    json_t *t = json_object_get(ts->tracked, id);
    json_t *d;
    size_t i;

    if (!t)
        return;
    json_array_foreach(json_object_get(t, "deploys"), i, d) {
        const char *k = jstr(d, "key");
        const char *owner = json_string_value(json_object_get(ts->by_deploy, k));
        if (owner && strcmp(owner, id) == 0)
            json_object_del(ts->by_deploy, k);
    }
    json_object_del(ts->dirty, id);
    json_object_del(ts->ending, id);
    json_object_del(ts->tracked, id);
}

/* Decides the end of a release: stored, published and forgotten at the next flush
 * (track_flush_ends), together with every other release that ends meanwhile. */
static void track_end(track_stage_t *ts, const char *id, const char *status, const char *error,
                      const json_t *pods)
{
    json_t *t = json_object_get(ts->tracked, id);

    if (!t || json_object_get(t, "end"))
        return;
    json_object_set_new(t, "end", json_pack("{s:s, s:s?, s:O?}", "status", status, "error", error,
                                            "pods", (json_t *)pods));
    json_object_set_new(ts->ending, id, json_true());
}

static const char track_progress_sql[] =
    "WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, fence bigint,"
    "  progress jsonb, message text)),"
    " u AS (UPDATE releases r SET track = CASE WHEN x.progress IS NULL THEN r.track ELSE"
    "  jsonb_set(r.track, '{progress}', coalesce(r.track -> 'progress', '{}'::jsonb) ||"
    "  x.progress) END FROM x WHERE r.id = x.id AND r.id = ANY (ARRAY(SELECT id FROM x)) AND"
    "  r.fence = x.fence AND r.status IN"
    "  ('progressing', 'paused') RETURNING r.id, x.progress, x.message)"
    " INSERT INTO timeline (release_id, stage, event, message, data) SELECT id, 'track',"
    " 'progress', message, progress FROM u";

/* Records the latest unrecorded progress of every release, TRACK_BATCH per statement
 * (track.progress and one timeline row each); kept for the next flush on an error. The rows
 * are found by their ids as an array (rf_store_end_many says why). */
static void track_flush_progress(track_stage_t *ts)
{
    json_t *ids = json_array(), *v, *t;
    const char *id;
    char errstr[1024];
    size_t start, end, i;

    ts->last_progress = rf_clock_mono_ms();
    json_object_foreach(ts->dirty, id, v) json_array_append_new(ids, json_string(id));
    for (start = 0; start < json_array_size(ids); start = end) {
        json_t *rows = json_array();
        char *text;
        int ok;

        end = start + TRACK_BATCH < json_array_size(ids) ? start + TRACK_BATCH
                                                           : json_array_size(ids);
        for (i = start; i < end; i++) {
            id = json_string_value(json_array_get(ids, i));
            t = json_object_get(ts->tracked, id);
            if (t && json_object_get(t, "pmessage"))
                json_array_append_new(rows, json_pack("{s:s, s:I, s:O?, s:O}", "id", id, "fence",
                                                      jint(t, "fence"), "progress",
                                                      json_object_get(t, "progress"), "message",
                                                      json_object_get(t, "pmessage")));
        }
        text = json_dumps(rows, JSON_COMPACT);
        ok = json_array_size(rows) == 0 ||
             rf_db_exec(ts->w->db, track_progress_sql, 1, (const char *const *)&text, NULL, errstr,
                        sizeof(errstr)) == RF_OK;
        free(text);
        json_decref(rows);
        if (!ok) {
            rf_log_warn("cannot record progress: %s", errstr); /* kept for the next flush */
            break;
        }
        for (i = start; i < end; i++) {
            id = json_string_value(json_array_get(ids, i));
            t = json_object_get(ts->tracked, id);
            json_object_del(t, "pmessage");
            json_object_del(t, "progress");
            json_object_del(ts->dirty, id);
        }
    }
    json_decref(ids);
}

/* Ends every decided release, TRACK_BATCH at a time (rf_worker_end_releases): one
 * statement for the ends with their last progress not yet recorded, one for their results,
 * the locks in pipelined round trips, one wait for all deliveries. An end that fails is
 * tried again after TRACK_RETRY_END_MS (its progress meanwhile goes with the others'). */
static void track_flush_ends(track_stage_t *ts)
{
    long now = rf_clock_mono_ms();
    rf_worker_end_t *ends = calloc(TRACK_BATCH, sizeof(*ends));
    json_t *batch = json_array(), *v, *t;
    const char *id;
    char errstr[1024];
    size_t n = 0, i;

    if (!ends)
        abort();
    json_object_foreach(ts->ending, id, v) {
        t = json_object_get(ts->tracked, id);
        if (t && json_object_get(t, "end") && jint(t, "retry_at") <= now)
            json_array_append_new(batch, json_string(id));
    }
    for (size_t start = 0; start < json_array_size(batch); start += n) {
        n = 0;
        for (i = start; i < json_array_size(batch) && n < TRACK_BATCH; i++) {
            const json_t *e;
            v = json_array_get(batch, i);
            t = json_object_get(ts->tracked, json_string_value(v));
            e = json_object_get(t, "end");
            ends[n++] = (rf_worker_end_t){json_string_value(v), jstr(t, "service"), jstr(t, "env"),
                                          jint(t, "fence"), jstr(e, "status"),
                                          json_string_value(json_object_get(e, "error")),
                                          json_object_get(e, "pods"), RF_OK,
                                          json_string_value(json_object_get(t, "pmessage")),
                                          json_object_get(t, "progress")};
        }
        if (rf_worker_end_releases(ts->w, ends, n, errstr, sizeof(errstr)) != RF_OK)
            rf_log_warn("cannot end %zu releases yet: %s", n, errstr);
        for (i = 0; i < n; i++) {
            char idbuf[64];
            snprintf(idbuf, sizeof(idbuf), "%s", ends[i].release_id);
            if (ends[i].result == RF_OK || ends[i].result == RF_ERR_FENCED) {
                track_forget(ts, idbuf);
            } else {
                t = json_object_get(ts->tracked, idbuf);
                json_object_set_new(t, "retry_at", json_integer(now + TRACK_RETRY_END_MS));
            }
        }
    }
    rf_log_ctx_clear();
    json_decref(batch);
    free(ends);
}

/* The step engine's view of a release (kube NULL when its cluster is unreachable). */
static void track_gray_ctx(track_stage_t *ts, const char *id, json_t *t, gray_ctx_t *g)
{
    track_cluster_t *tc = track_cluster(ts, jstr(t, "cluster"), NULL, 0);

    memset(g, 0, sizeof(*g));
    g->w = ts->w;
    g->kube = tc ? tc->kube : NULL;
    g->id = id;
    g->t = t;
    g->now_ms = rf_clock_epoch_ms();
}

/* Follows the Deployments that the current gray step waits for. */
static void track_gray_follow(track_stage_t *ts, const char *id)
{
    json_t *t = json_object_get(ts->tracked, id);
    json_t *gs = json_object_get(t, "gray");
    json_t *deploys = json_array(), *d, *f;
    char key[600];
    size_t i;

    json_array_foreach(json_object_get(t, "deploys"), i, d) {
        const char *owner = json_string_value(json_object_get(ts->by_deploy, jstr(d, "key")));
        if (owner && strcmp(owner, id) == 0)
            json_object_del(ts->by_deploy, jstr(d, "key"));
    }
    json_array_foreach(json_object_get(gs, "follow"), i, f) {
        snprintf(key, sizeof(key), "%s|%s/%s", jstr(t, "cluster"), jstr(gs, "namespace"),
                 jstr(f, "name"));
        json_array_append_new(deploys, json_pack("{s:s, s:s, s:s, s:I}", "key", key, "namespace",
                                                 jstr(gs, "namespace"), "name", jstr(f, "name"),
                                                 "generation", jint(f, "generation")));
        json_object_set_new(ts->by_deploy, key, json_string(id));
    }
    json_object_set_new(t, "deploys", deploys);
    json_object_set_new(t, "message", json_string(""));
}

/* Acts on what the step engine decided about a release. */
static void track_gray_outcome(track_stage_t *ts, const char *id, gray_outcome_t outcome,
                               gray_ctx_t *g)
{
    char errstr[1024];
    const char *params[2] = {id, ts->owner};

    switch (outcome) {
    case GRAY_GOING:
        track_gray_follow(ts, id);
        json_object_set_new(json_object_get(ts->tracked, id), "reeval", json_true());
        break;
    case GRAY_SUCCEEDED:
        track_end(ts, id, "succeeded", NULL, NULL);
        break;
    case GRAY_FAILED:
        if (gray_undo(g, errstr, sizeof(errstr)) != RF_OK) {
            rf_log_warn("cannot undo the gray release yet: %s", errstr); /* next tick */
            break;
        }
        track_end(ts, id, "failed", g->reason, NULL);
        break;
    case GRAY_LOST:
        /* Let whoever claims it next (maybe us) read the state PostgreSQL has. */
        track_forget(ts, id);
        rf_db_exec(ts->w->db,
                   "UPDATE releases SET track_owner = NULL WHERE id = $1 AND track_owner = $2",
                   2, params, NULL, errstr, sizeof(errstr));
        break;
    }
}

/* Undoes a gray release before it ends failed; 0 when that has to be tried again. */
static int track_gray_undo(track_stage_t *ts, const char *id)
{
    json_t *t = json_object_get(ts->tracked, id);
    char errstr[1024];
    gray_ctx_t g;

    if (!json_object_get(t, "gray"))
        return 1;
    track_gray_ctx(ts, id, t, &g);
    if (!g.kube || gray_undo(&g, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("cannot undo the gray release yet: %s", g.kube ? errstr : "no cluster");
        return 0;
    }
    return 1;
}

static void track_evaluate(track_stage_t *ts, const char *id);

/* Gray releases: pending commands, timed pauses, analysis, re-evaluations. */
static void track_gray_tick(track_stage_t *ts)
{
    json_t *commands = json_object(), *ids = json_array(), *t, *v;
    rf_buf_t arr = RF_BUF_INIT;
    PGresult *res = NULL;
    char errstr[1024], idbuf[64];
    const char *id;
    size_t k;

    /* Once followed, only gray releases take commands (gray_queue_command; the others'
     * were answered when claimed). Nothing to ask about, no query. */
    json_object_foreach(ts->tracked, id, t) {
        if (!json_object_get(t, "end") && json_object_get(t, "gray")) {
            json_array_append_new(ids, json_string(id));
            rf_buf_addf(&arr, "%s%s", arr.len ? "," : "{", id);
        }
    }
    if (json_array_size(ids) > 0) {
        const char *params[2] = {ts->owner, NULL};
        rf_buf_add(&arr, "}", 1);
        params[1] = rf_buf_str(&arr);
        if (rf_db_exec(ts->w->db,
                       "SELECT id, track -> 'commands' -> 0 FROM releases WHERE"
                       " id = ANY($2::uuid[]) AND track_owner = $1 AND status IN ('progressing', 'paused') AND"
                       " jsonb_array_length(coalesce(track -> 'commands', '[]'::jsonb)) > 0",
                       2, params, &res, errstr, sizeof(errstr)) == RF_OK) {
            for (int i = 0; i < PQntuples(res); i++)
                json_object_set_new(commands, PQgetvalue(res, i, 0),
                                    json_loads(PQgetvalue(res, i, 1), 0, NULL));
            PQclear(res);
        } else {
            rf_log_warn("cannot read commands: %s", errstr);
        }
    }
    rf_buf_release(&arr);
    json_array_foreach(ids, k, v) {
        json_t *cmd;
        json_int_t rev;
        gray_outcome_t outcome;
        gray_ctx_t g;

        snprintf(idbuf, sizeof(idbuf), "%s", json_string_value(v));
        t = json_object_get(ts->tracked, idbuf);
        if (!t || json_object_get(t, "end"))
            continue; /* ended meanwhile */
        cmd = json_object_get(commands, idbuf);
        rf_log_ctx_set("release", idbuf);
        if (json_object_get(t, "reeval")) {
            json_object_del(t, "reeval");
            track_evaluate(ts, idbuf);
            t = json_object_get(ts->tracked, idbuf);
            if (!t || json_object_get(t, "end")) {
                rf_log_ctx_clear();
                continue;
            }
        }
        track_gray_ctx(ts, idbuf, t, &g);
        if (!g.kube) {
            rf_log_ctx_clear();
            continue;
        }
        rev = jint(json_object_get(t, "gray"), "rev");
        outcome = gray_tick(&g, cmd);
        if (outcome != GRAY_GOING || rev != jint(json_object_get(t, "gray"), "rev"))
            track_gray_outcome(ts, idbuf, outcome, &g);
        rf_log_ctx_clear();
    }
    json_decref(ids);
    json_decref(commands);
}

/* Looks at every Deployment of a release and records what changed. */
static void track_evaluate(track_stage_t *ts, const char *id)
{
    json_t *t = json_object_get(ts->tracked, id);
    json_t *d;
    char msg[512], all[2048] = "";
    int done = 1;
    json_int_t desired = 0, updated = 0, available = 0;
    size_t i;

    if (!t || json_object_get(t, "end"))
        return; /* decided already */
    json_array_foreach(json_object_get(t, "deploys"), i, d) {
        const json_t *sum = track_summary(ts, t, jstr(d, "key"));
        int st = track_rollout_status(sum, jint(d, "generation"), jstr(d, "name"), msg,
                                      sizeof(msg));
        if (st < 0) {
            json_t *pods = track_failing_pods(ts, jstr(t, "cluster"), jstr(d, "namespace"), sum);
            json_object_set_new(t, "pmessage", json_string(msg));
            json_object_set_new(ts->dirty, id, json_true());
            if (track_gray_undo(ts, id))
                track_end(ts, id, "failed", msg, pods);
            json_decref(pods);
            return;
        }
        if (st == 0)
            done = 0;
        desired += jint(sum, "desired");
        updated += jint(sum, "updated");
        available += jint(sum, "available");
        snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s", *all ? "; " : "", msg);
    }
    if (strcmp(all, jstr(t, "message")) != 0) {
        /* Recorded at the next flush: only the latest progress of a release is written. */
        json_object_set_new(t, "message", json_string(all));
        json_object_set_new(t, "pmessage", json_string(all));
        json_object_set_new(t, "progress", json_pack("{s:I, s:I, s:I}", "desired", desired,
                                                     "updated", updated, "available",
                                                     available));
        json_object_set_new(ts->dirty, id, json_true());
        if (json_object_get(t, "gray"))
            track_flush_progress(ts); /* before the step engine writes what follows */
    }
    if (json_object_get(t, "gray")) {
        /* The step engine decides what a finished rollout means. */
        if (done && json_array_size(json_object_get(t, "deploys")) > 0) {
            json_int_t rev = jint(json_object_get(t, "gray"), "rev");
            gray_outcome_t outcome;
            gray_ctx_t g;
            track_gray_ctx(ts, id, t, &g);
            if (!g.kube)
                return;
            outcome = gray_rolled_out(&g);
            if (outcome != GRAY_GOING || rev != jint(json_object_get(t, "gray"), "rev"))
                track_gray_outcome(ts, id, outcome, &g);
        }
        return;
    }
    if (done && json_array_size(json_object_get(t, "deploys")) > 0)
        track_end(ts, id, "succeeded", NULL, NULL);
    else if (json_array_size(json_object_get(t, "deploys")) == 0)
        track_end(ts, id, "succeeded", NULL, NULL); /* nothing to roll out (Services only) */
}

static void track_on_event(rf_kube_watch_t *wch, const rf_watch_event_t *ev, void *opaque)
{
    track_shard_t *sh = opaque;
    track_stage_t *ts = sh->ts;
    const json_t *t;
    json_t *sum;
    char key[600], *text;
    const char *id;

    if (sh->watch != wch)
        return;
    if (ev->type == RF_WATCH_ERROR || ev->type == RF_WATCH_EXPIRED) {
        rf_metrics_add(rf_metrics_counter("relfleet_watch_reconnects_total",
                                          "Watch errors and expiries that made a watch reconnect"
                                          " or relist",
                                          "reason"),
                       RF_LABELS(ev->type == RF_WATCH_EXPIRED ? "expired" : "error"), 1);
        rf_log_info("deployment watch of shard %d: %s (%d)", sh->shard,
                    ev->message ? ev->message : "", ev->code);
        return;
    }
    if ((!ev->object && !ev->text) || ev->type == RF_WATCH_BOOKMARK)
        return;
    /* events come as text (rf_kube_watch_set_raw); list items, and a line the watch could
     * not read plainly, as trees: written back to text, the same members */
    text = ev->object ? rf_json_dumps(ev->object, 0) : NULL;
    sum = text ? track_summarize(text, strlen(text), sh->tc->name, key, sizeof(key))
               : track_summarize(ev->text, ev->len, sh->tc->name, key, sizeof(key));
    free(text);
    if (ev->type == RF_WATCH_DELETED) {
        json_decref(sum);
        json_object_del(sh->cache, key);
    } else {
        json_object_set_new(sh->cache, key, sum);
    }
    id = json_string_value(json_object_get(ts->by_deploy, key));
    t = id ? json_object_get(ts->tracked, id) : NULL;
    /* Only the watch of the release's own shard speaks for it (a Deployment whose shard
     * changed leaves one watch and enters another). */
    if (t && track_release_shard(t) == sh->shard) {
        char idbuf[64];
        snprintf(idbuf, sizeof(idbuf), "%s", id);
        rf_log_ctx_set("release", idbuf);
        track_evaluate(ts, idbuf);
        rf_log_ctx_clear();
    }
}

static void track_shards_gauge(track_stage_t *ts)
{
    rf_metric_t *g = rf_metrics_gauge("relfleet_track_watches",
                                      "Deployment watches open, by cluster and shard (none:"
                                      " the Deployments without a shard label)",
                                      "cluster,shard");
    char num[16];

    rf_metrics_clear(g);
    for (int i = 0; i < ts->nclusters; i++) {
        for (track_shard_t *sh = ts->clusters[i].shards; sh; sh = sh->next) {
            snprintf(num, sizeof(num), "%d", sh->shard);
            rf_metrics_set(g, RF_LABELS(ts->clusters[i].name, sh->shard < 0 ? "none" : num), 1);
        }
    }
}

/* The watch of a cluster's shard, opened when not yet: a list, then the watch, of the
 * managed Deployments with that shard's label (shard -1: without any). */
static track_shard_t *track_shard_open(track_stage_t *ts, track_cluster_t *tc, int shard,
                                       char *errstr, size_t errstr_size)
{
    track_shard_t *sh = track_shard_find(ts, tc->name, shard);
    char path[256];

    if (sh)
        return sh;
    if (shard < 0) /* managed-by=relfleet,!relfleet.io/shard */
        snprintf(path, sizeof(path), "/apis/apps/v1/deployments?labelSelector=%s%%2C%%21%s",
                 TRACK_SELECTOR, TRACK_SHARD_LABEL);
    else /* managed-by=relfleet,relfleet.io/shard=N */
        snprintf(path, sizeof(path), "/apis/apps/v1/deployments?labelSelector=%s%%2C%s%%3D%d",
                 TRACK_SELECTOR, TRACK_SHARD_LABEL, shard);
    sh = calloc(1, sizeof(*sh));
    if (!sh)
        abort();
    sh->ts = ts;
    sh->tc = tc;
    sh->shard = shard;
    sh->cache = json_object();
    sh->watch = rf_kube_watch_new(ts->multi, tc->kube, path, track_on_event, sh, errstr,
                                  errstr_size);
    if (!sh->watch) {
        json_decref(sh->cache);
        free(sh);
        return NULL;
    }
    /* Lists of 100 Deployments: a page is parsed at once (less track_watch_drop), so its
     * size bounds the memory a (re)list of a large cluster takes (500 of ~12 KiB parsed
     * whole each: ~60 MiB). */
    rf_kube_watch_set_page_size(sh->watch, 100);
    rf_kube_watch_set_drop(sh->watch, track_watch_drop);
    rf_kube_watch_set_raw(sh->watch, 1);
    sh->next = tc->shards;
    tc->shards = sh;
    rf_log_info("watching the deployments of shard %d of cluster '%s'", shard, tc->name);
    {
        char num[16];
        snprintf(num, sizeof(num), "%d", shard);
        rf_metrics_add(rf_metrics_counter("relfleet_track_watch_opens_total",
                                          "Deployment watches opened, by cluster and shard"
                                          " (none: the Deployments without a shard label)",
                                          "cluster,shard"),
                       RF_LABELS(tc->name, shard < 0 ? "none" : num), 1);
    }
    track_shards_gauge(ts);
    return sh;
}

static void track_shard_destroy(track_shard_t *sh)
{
    rf_kube_watch_destroy(sh->watch);
    json_decref(sh->cache);
    free(sh);
}

/* Ends the watches of shards that have had no release to follow for TRACK_SHARD_IDLE_MS. */
static void track_shards_sweep(track_stage_t *ts, long now)
{
    json_t *t;
    const char *id;
    int closed = 0;

    json_object_foreach(ts->tracked, id, t) {
        track_shard_t *sh = track_shard_find(ts, jstr(t, "cluster"), track_release_shard(t));
        if (sh)
            sh->used_ms = now;
    }
    for (int i = 0; i < ts->nclusters; i++) {
        track_shard_t **link = &ts->clusters[i].shards;
        while (*link) {
            track_shard_t *sh = *link;
            if (now - sh->used_ms < TRACK_SHARD_IDLE_MS) {
                link = &sh->next;
                continue;
            }
            rf_log_info("no release of shard %d of cluster '%s' to follow: its watch ends",
                        sh->shard, ts->clusters[i].name);
            *link = sh->next;
            track_shard_destroy(sh);
            closed = 1;
        }
    }
    if (closed)
        track_shards_gauge(ts);
}

static track_cluster_t *track_cluster(track_stage_t *ts, const char *name, char *errstr,
                                      size_t errstr_size)
{
    char err[512];
    track_cluster_t *tc;
    rf_kubeconfig_t *cfg;

    if (!errstr) {
        errstr = err;
        errstr_size = sizeof(err);
    }
    name = name ? name : "";
    for (int i = 0; i < ts->nclusters; i++)
        if (strcmp(ts->clusters[i].name, name) == 0)
            return &ts->clusters[i];
    if (ts->nclusters == (int)(sizeof(ts->clusters) / sizeof(ts->clusters[0])) ||
        !ts->w->conf->kubeconfig) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "no kubeconfig for cluster '%s'", name);
        return NULL;
    }
    cfg = rf_kubeconfig_load(ts->w->conf->kubeconfig, *name ? name : ts->w->conf->kube_context,
                             errstr, errstr_size);
    if (!cfg)
        return NULL;
    tc = &ts->clusters[ts->nclusters];
    tc->kube = rf_kube_new(cfg, errstr, errstr_size);
    rf_kubeconfig_destroy(cfg);
    if (!tc->kube)
        return NULL;
    tc->shards = NULL; /* opened by the releases that need them (track_shard_open) */
    tc->name = strdup(name);
    ts->nclusters++;
    return tc;
}

/* Answers the commands queued while a release was applying (a service with a strategy)
 * when it rolls out without gray steps after all: one timeline row each. */
static void track_ignore_commands(track_stage_t *ts, const char *id, const json_t *commands)
{
    char *text = json_dumps(commands, JSON_COMPACT);
    const char *params[3] = {id, ts->owner, text};
    char errstr[1024];

    if (rf_db_exec(ts->w->db,
                   "WITH u AS (UPDATE releases SET track = track - 'commands' WHERE id = $1 AND"
                   " track_owner = $2 RETURNING id) INSERT INTO timeline (release_id, stage,"
                   " event, message) SELECT u.id, 'track', c ->> 'action', (c ->> 'action') ||"
                   " ' ignored: this release rolls out without gray steps' FROM u,"
                   " jsonb_array_elements($3::jsonb) c",
                   3, params, NULL, errstr, sizeof(errstr)) != RF_OK)
        rf_log_warn("cannot answer the commands queued while applying: %s", errstr);
    free(text);
}

/* Starts following a release claimed from PostgreSQL. */
static void track_adopt(track_stage_t *ts, PGresult *res, int row)
{
    const char *id = PQgetvalue(res, row, 0);
    char cluster_buf[256];
    const char *cluster = rf_worker_cluster(ts->w, PQgetvalue(res, row, 2),
                                            rf_db_value(res, row, 5), cluster_buf,
                                            sizeof(cluster_buf));
    json_t *track = json_loads(rf_db_value(res, row, 4) ? rf_db_value(res, row, 4) : "{}", 0, NULL);
    json_t *deploys = json_array(), *t, *o;
    char errstr[512], key[600];
    track_cluster_t *tc;
    track_shard_t *sh;
    int shard;
    size_t i;

    if (json_object_get(ts->tracked, id)) {
        json_decref(track);
        json_decref(deploys);
        return;
    }
    /* The shard apply recorded (none: applied before shards, watched by the absence of the
     * label); its watch is opened now if this worker has none yet. */
    shard = track_release_shard(track);
    tc = track_cluster(ts, cluster, errstr, sizeof(errstr));
    sh = tc ? track_shard_open(ts, tc, shard, errstr, sizeof(errstr)) : NULL;
    if (!sh)
        rf_log_warn("cannot watch cluster '%s': %s", cluster, errstr);
    else
        sh->used_ms = rf_clock_mono_ms();
    json_array_foreach(json_object_get(track, "objects"), i, o) {
        if (strcmp(jstr(o, "kind"), "Deployment") != 0)
            continue;
        snprintf(key, sizeof(key), "%s|%s/%s", cluster, jstr(o, "namespace"), jstr(o, "name"));
        json_array_append_new(deploys,
                              json_pack("{s:s, s:s, s:s, s:I}", "key", key, "namespace",
                                        jstr(o, "namespace"), "name", jstr(o, "name"),
                                        "generation", jint(o, "generation")));
        json_object_set_new(ts->by_deploy, key, json_string(id));
    }
    t = json_pack("{s:s, s:s, s:I, s:s, s:I, s:o, s:s, s:I}", "service", PQgetvalue(res, row, 1),
                  "env", PQgetvalue(res, row, 2), "fence",
                  (json_int_t)strtoll(PQgetvalue(res, row, 3), NULL, 10), "cluster", cluster,
                  "deadline_ms", jint(track, "deadline_ms"), "deploys", deploys, "message", "",
                  "renewed", (json_int_t)0); /* the lock's lease: renewed at the next pass */
    if (shard >= 0)
        json_object_set_new(t, "shard", json_integer(shard));
    json_object_set_new(ts->tracked, id, t);
    if (!json_is_object(json_object_get(track, "gray")) &&
        json_array_size(json_object_get(track, "commands")) > 0)
        track_ignore_commands(ts, id, json_object_get(track, "commands"));
    if (json_is_object(json_object_get(track, "gray"))) {
        /* A gray release: its steps say which Deployments to follow; a timed pause resumes
         * at the time PostgreSQL keeps, whoever claimed it before. */
        json_object_set(t, "gray", json_object_get(track, "gray"));
        track_gray_follow(ts, id);
    }
    rf_log_info("following release %s of %s/%s", id, jstr(t, "env"), jstr(t, "service"));
    json_decref(track);
    track_evaluate(ts, id);
}

/* Two statements, so each is planned once (a prepared statement's generic plan): a claim
 * of given releases ($3, those of applied messages) by their ids; the sweep over the
 * active releases. One statement for both (`$3 IS NULL OR id = ANY($3)`) had no generic
 * plan fit for either and was planned again at every call. The claim by ids reads its $3
 * as `ARRAY(SELECT unnest($3))`, whose length no plan knows: with `= ANY($3)` a custom plan
 * counted the 4 or 5 ids given against the generic plan's guess of 10, came out cheaper,
 * and the claim was planned again at every call all the same (pg_stat_statements with
 * track_planning in a bench stack: 90 plans for 90 calls, 1.3 ms each, more than its
 * execution). The claim by ids tests the
 * status as `(status || '')`, which no partial index's predicate matches, so that it
 * finds its releases by primary key: with `status IN (...)` it read the whole partial
 * index releases_one_active, whose dead entries (each status change leaves one) grow
 * until a vacuum (auto_explain in a bench stack). */
#define TRACK_CLAIM_SQL(status, filter)                                                        \
    "UPDATE releases r SET track_owner = $1, track_until = clock_timestamp() + make_interval("  \
    "secs => $2::int) FROM services s WHERE s.service = r.service AND s.env = r.env AND r.id"   \
    " IN (SELECT id FROM releases WHERE " status " IN ('progressing', 'paused') AND (track_owner" \
    " IS NULL OR track_until < clock_timestamp()) AND " filter " ORDER BY track_until NULLS"    \
    " FIRST LIMIT 1000 FOR UPDATE SKIP LOCKED)"                                                 \
    " RETURNING r.id, r.service, r.env, r.fence, (r.track - 'applied' - 'progress')::text,"      \
    " s.cluster"

static const char track_claim_ids_sql[] =
    TRACK_CLAIM_SQL("(status || '')", "id = ANY (ARRAY(SELECT unnest($3::uuid[])))");

static const char track_claim_sweep_sql[] = TRACK_CLAIM_SQL("status",
    "(track_until IS NOT NULL OR (track ->> 'shard')::int = ANY($3::int[]) OR coalesce((track"
    " ->> 'deadline_ms')::bigint - 1000 * (track ->> 'timeout_s')::bigint, 0) < extract(epoch"
    " FROM clock_timestamp()) * 1000 - $4::bigint)");

/* Sends the results messages that ended releases still owe (their ending worker died
 * or the broker did not confirm in time; sql/007_results_owed.sql), byte for byte. */
static void track_send_owed(track_stage_t *ts)
{
    int hold = rf_worker_results_hold_s(ts->w);
    const char **ids = NULL;
    PGresult *res = NULL;
    char errstr[1024];
    rf_err_t result = RF_OK;
    int n;

    if (rf_store_results_owed(ts->w->db, ts->owner, hold, 100, &res, errstr, sizeof(errstr)) !=
        RF_OK) {
        rf_log_warn("cannot look for owed results: %s", errstr);
        return;
    }
    n = PQntuples(res);
    if (n > 0) {
        ids = calloc((size_t)n, sizeof(*ids));
        if (!ids)
            abort();
        rf_producer_batch_begin(ts->w->producer);
        for (int i = 0; i < n && result == RF_OK; i++) {
            ids[i] = PQgetvalue(res, i, 0);
            rf_log_ctx_set("release", ids[i]);
            rf_log_warn("sending the results message again: the worker that ended the release "
                        "did not confirm its delivery");
            result = rf_worker_send_result(ts->w, PQgetvalue(res, i, 2), PQgetvalue(res, i, 1),
                                           (size_t)PQgetlength(res, i, 1), errstr,
                                           sizeof(errstr));
        }
        rf_log_ctx_clear();
        if (result == RF_OK)
            result = rf_producer_batch_end(ts->w->producer, errstr, sizeof(errstr));
        else
            rf_producer_batch_end(ts->w->producer, NULL, 0);
        if (result == RF_OK)
            result = rf_store_results_delivered(ts->w->db, ids, (size_t)n, errstr, sizeof(errstr));
        if (result != RF_OK) /* our claim lapses; the next sweep tries again */
            rf_log_warn("owed results not sent yet: %s", errstr);
        else
            rf_metrics_add(rf_metrics_counter("relfleet_results_resent_total",
                                              "results messages sent again by the sweep for "
                                              "a worker that did not confirm them",
                                              NULL),
                           NULL, n);
    }
    free(ids);
    PQclear(res);
}

/* Claims releases nobody follows (or only those of only_ids, a PostgreSQL array literal
 * of ids), and follows them. Our own claims are extended by track_renew, not here. The
 * sweep (only_ids NULL) takes lapsed and handed-back claims at once, and a release that was
 * never claimed at once only if this worker watches its shard already: else it is left to
 * the worker its `applied` message goes to for TRACK_CLAIM_GRACE_MS after it started
 * progressing (apply's deadline_ms less its timeout), since taken here it would open a watch
 * of another shard (track_shard_open) for one release. */
static void track_claim(track_stage_t *ts, const char *only_ids)
{
    char lease[16], grace[16], errstr[1024];
    const char *params[4] = {ts->owner, lease, only_ids, grace};
    rf_buf_t shards = RF_BUF_INIT;
    PGresult *res = NULL;
    rf_err_t result;

    snprintf(lease, sizeof(lease), "%d", TRACK_LEASE_S);
    if (only_ids) {
        result = rf_db_exec(ts->w->db, track_claim_ids_sql, 3, params, &res, errstr,
                            sizeof(errstr));
    } else {
        snprintf(grace, sizeof(grace), "%d", TRACK_CLAIM_GRACE_MS);
        rf_buf_addc(&shards, '{');
        for (int i = 0; i < ts->nclusters; i++)
            for (track_shard_t *sh = ts->clusters[i].shards; sh; sh = sh->next)
                if (sh->shard >= 0)
                    rf_buf_addf(&shards, "%s%d", shards.len > 1 ? "," : "", sh->shard);
        rf_buf_addc(&shards, '}');
        params[2] = rf_buf_str(&shards);
        result = rf_db_exec(ts->w->db, track_claim_sweep_sql, 4, params, &res, errstr,
                            sizeof(errstr));
    }
    rf_buf_release(&shards);
    if (result != RF_OK) {
        rf_log_warn("cannot claim releases: %s", errstr);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++)
        track_adopt(ts, res, i);
    PQclear(res);
}

/* Renews the claims and service locks that are due (every TRACK_RENEW_MS, or a third of
 * the lock lease if shorter), at most a tenth of the releases (TRACK_RENEW_SLICE at least)
 * per call, so that thousands of renewals do not stall the loop all at once; forgets
 * releases that ended elsewhere (cancel, supersede). */
static void track_renew(track_stage_t *ts, long now)
{
    long period = ts->w->conf->lock_lease_ms / 3 < TRACK_RENEW_MS ? ts->w->conf->lock_lease_ms / 3
                                                                  : TRACK_RENEW_MS;
    size_t cap = json_object_size(ts->tracked) / 10 > TRACK_RENEW_SLICE
                     ? json_object_size(ts->tracked) / 10
                     : TRACK_RENEW_SLICE;
    char lease[16], errstr[1024];
    const char *params[3] = {ts->owner, lease, NULL};
    rf_buf_t arr = RF_BUF_INIT;
    PGresult *res = NULL;
    json_t *alive = json_object(), *due = json_array(), *t, *v;
    rf_lock_item_t *locks = NULL;
    size_t n = 0, i;
    const char *id;

    json_object_foreach(ts->tracked, id, t) {
        if (json_array_size(due) == cap)
            break;
        if (json_object_get(t, "end") || now - jint(t, "renewed") < period)
            continue;
        json_array_append_new(due, json_string(id));
        rf_buf_addf(&arr, "%s%s", arr.len ? "," : "{", id);
    }
    if (json_array_size(due) == 0)
        goto out;
    rf_buf_add(&arr, "}", 1);
    params[2] = rf_buf_str(&arr);
    snprintf(lease, sizeof(lease), "%d", TRACK_LEASE_S);
    if (rf_db_exec(ts->w->db,
                   "UPDATE releases SET track_until = clock_timestamp() + make_interval(secs =>"
                   " $2::int) WHERE id = ANY($3::uuid[]) AND track_owner = $1 AND status IN"
                   " ('progressing', 'paused') RETURNING id",
                   3, params, &res, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("cannot renew claims: %s", errstr); /* due again at the next call */
        goto out;
    }
    for (int r = 0; r < PQntuples(res); r++)
        json_object_set_new(alive, PQgetvalue(res, r, 0), json_true());
    PQclear(res);
    locks = calloc(json_array_size(due), sizeof(*locks));
    if (!locks)
        abort();
    json_array_foreach(due, i, v) {
        id = json_string_value(v);
        t = json_object_get(ts->tracked, id);
        if (!json_object_get(alive, id)) {
            rf_log_info("release %s is no longer ours to follow", id);
            track_forget(ts, id);
            continue;
        }
        json_object_set_new(t, "renewed", json_integer(now));
        locks[n++] = (rf_lock_item_t){jstr(t, "env"), jstr(t, "service"), id, 0};
    }
    /* The service locks, in pipelined round trips. */
    if (n > 0 && rf_lock_renew_many(ts->w->lock, locks, n, ts->w->conf->lock_lease_ms, errstr,
                                    sizeof(errstr)) != RF_OK) {
        rf_log_warn("cannot renew service locks: %s", errstr);
        rf_worker_count_lock_renewals(0, 0, n);
    } else if (n > 0) {
        size_t held = 0;
        for (i = 0; i < n; i++)
            held += locks[i].held != 0;
        rf_worker_count_lock_renewals(held, n - held, 0);
    }
out:
    free(locks);
    rf_buf_release(&arr);
    json_decref(due);
    json_decref(alive);
}

static void track_timeouts(track_stage_t *ts)
{
    long long now = rf_clock_epoch_ms();
    const char *id;
    json_t *t, *tmp;
    char reason[1024], idbuf[64];

    json_object_foreach_safe(ts->tracked, tmp, id, t) {
        if (json_object_get(t, "end"))
            continue;
        if (jint(t, "deadline_ms") > 0 && now > jint(t, "deadline_ms")) {
            json_t *pods = json_array(), *d;
            size_t i;
            snprintf(idbuf, sizeof(idbuf), "%s", id);
            snprintf(reason, sizeof(reason), "timed out: %s",
                     *jstr(t, "message") ? jstr(t, "message") : "the rollout did not finish");
            json_array_foreach(json_object_get(t, "deploys"), i, d) {
                json_t *more = track_failing_pods(ts, jstr(t, "cluster"), jstr(d, "namespace"),
                                                  track_summary(ts, t, jstr(d, "key")));
                json_array_extend(pods, more);
                json_decref(more);
            }
            if (track_gray_undo(ts, idbuf)) {
                track_end(ts, idbuf, "failed", reason, pods);
                rf_metrics_add(ts->timed_out, NULL, 1);
            }
            json_decref(pods);
        }
    }
}

static void track_tick(void *state)
{
    track_stage_t *ts = state;
    long now;

    /* Every event that is there: one poll takes what one read of each stream brings,
     * which falls behind when thousands of rollouts move at once. */
    for (int i = 0; i < TRACK_POLL_ROUNDS && rf_kube_multi_poll(ts->multi, 0) > 0; i++)
        ;
    now = rf_clock_mono_ms();
    if (now - ts->last_owed >= TRACK_OWED_MS) {
        ts->last_owed = now;
        track_send_owed(ts);
    }
    if (now - ts->last_claim >= TRACK_CLAIM_MS) {
        ts->last_claim = now;
        track_claim(ts, NULL);
    }
    if (now - ts->last_shards >= TRACK_SHARD_SWEEP_MS) {
        ts->last_shards = now;
        track_shards_sweep(ts, now);
    }
    /* Renew claims and service locks well inside their lease, however short it is. */
    if (now - ts->last_renew >= TRACK_RENEW_PASS_MS) {
        ts->last_renew = now;
        track_renew(ts, now);
        rf_metrics_set(rf_metrics_gauge("relfleet_rollouts_tracked",
                                        "Active releases this track worker follows", NULL),
                       NULL, (double)json_object_size(ts->tracked));
    }
    if (now - ts->last_timeouts >= 250) {
        ts->last_timeouts = now;
        track_timeouts(ts);
        track_gray_tick(ts);
        rf_metrics_set(rf_metrics_gauge("relfleet_analysis_measurements_running",
                                        "Analysis measurements of gray releases in flight "
                                        "(each on a thread of its own)",
                                        NULL),
                       NULL, (double)gray_probes_reap(rf_clock_epoch_ms()));
    }
    /* What this tick decided: ends at once, progress every TRACK_PROGRESS_MS. */
    if (json_object_size(ts->ending) > 0)
        track_flush_ends(ts);
    if (json_object_size(ts->dirty) > 0 && now - ts->last_progress >= TRACK_PROGRESS_MS)
        track_flush_progress(ts);
}

/* cancel ends a queued or running release; promote and abort belong to gray releases. */
static rf_err_t track_command(track_stage_t *ts, const json_t *b, char *errstr,
                              size_t errstr_size)
{
    const char *id = jstr(b, "release_id");
    const char *action = jstr(b, "action");
    const char *params[1] = {id};
    PGresult *res = NULL;
    char reason[512], service[128], env[128];
    rf_err_t result;
    int64_t fence;
    const char *status;

    result = rf_db_exec(ts->w->db, "SELECT status, coalesce(fence, 0), service, env FROM releases"
                                   " WHERE id = $1",
                        1, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s of unknown release '%s'", action, id);
    }
    status = PQgetvalue(res, 0, 0);
    fence = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    snprintf(service, sizeof(service), "%s", PQgetvalue(res, 0, 2));
    snprintf(env, sizeof(env), "%s", PQgetvalue(res, 0, 3));
    if (rf_release_status_terminal(rf_release_status_parse(status))) {
        PQclear(res);
        return RF_OK; /* already ended: a repeated or late command changes nothing */
    }
    /* Only a releaser of the service may end or steer its release (docs/permissions.md);
     * a refusal is on the release's record. */
    {
        char refusal[384];
        struct timespec now;
        int allowed = 0;
        clock_gettime(CLOCK_REALTIME, &now);
        result = rf_auth_check(ts->w->db, ts->w->conf, b, jstr(b, "command_id"),
                               (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
                               RF_ROLE_RELEASER, service, env, &allowed, refusal,
                               sizeof(refusal), errstr, errstr_size);
        if (result != RF_OK || !allowed) {
            PQclear(res);
            if (result != RF_OK)
                return result;
            snprintf(reason, sizeof(reason), "%s by %s refused: %s", action, jstr(b, "operator"),
                     refusal);
            rf_log_warn("%s", reason);
            return rf_store_event(ts->w->db, id, "track", "refused", NULL, reason, NULL, errstr,
                                  errstr_size);
        }
    }
    if (strcmp(action, "cancel") == 0) {
        snprintf(reason, sizeof(reason), "cancelled by %s", jstr(b, "operator"));
        if (strcmp(status, "queued") == 0 || strcmp(status, "awaiting_approval") == 0)
            fence = 0;
        PQclear(res);
        result = rf_worker_end_release(ts->w, id, service, env, fence, "cancelled", reason, NULL,
                                       errstr, errstr_size);
        if (result == RF_OK || result == RF_ERR_FENCED)
            track_forget(ts, id);
        return result == RF_ERR_FENCED ? RF_OK : result;
    }
    PQclear(res);
    if (strcmp(action, "promote") == 0 || strcmp(action, "abort") == 0) {
        int queued = 0;
        /* The worker that follows the release acts on it (gray.c). */
        result = gray_queue_command(ts->w->db, b, &queued, errstr, errstr_size);
        if (result != RF_OK || queued)
            return result;
    }
    snprintf(reason, sizeof(reason), "%s by %s ignored: the release has no gray steps", action,
             jstr(b, "operator"));
    return rf_store_event(ts->w->db, id, "track", action, NULL, reason, NULL, errstr,
                          errstr_size);
}

static rf_err_t track_handle(void *state, const rf_input_t *in, char *errstr, size_t errstr_size)
{
    track_stage_t *ts = state;
    char ids[64];

    if (strcmp(in->topic_suffix, "commands") == 0)
        return track_command(ts, in->body, errstr, errstr_size);
    /* applied: the tracking state is already in PostgreSQL; follow it now if nobody does. */
    snprintf(ids, sizeof(ids), "{%s}", jstr(in->body, "release_id"));
    track_claim(ts, ids);
    return RF_OK;
}

/* A poll batch: the releases of its applied messages are claimed in one statement;
 * commands are handled one by one in their place (the claims before them first). After a
 * message to retry, the rest of its partition waits for the redelivery (order kept). */
static void track_handle_batch(void *state, rf_input_t *const *in, size_t n, rf_err_t *results,
                               char *const *errstrs, size_t errstr_size)
{
    track_stage_t *ts = state;
    rf_buf_t ids = RF_BUF_INIT;

    for (size_t i = 0; i < n; i++) {
        int blocked = 0;

        /* After a message to retry, or one refused for good (the loop dead-letters it
         * once the hook returns), the rest of its partition waits for the redelivery, so
         * a partition's effects keep their order. */
        for (size_t j = 0; j < i && !blocked; j++)
            blocked = (results[j] == RF_ERR_RETRY || results[j] == RF_ERR_PERM) &&
                      rf_worker_same_partition(in[j]->m, in[i]->m);
        if (blocked) {
            results[i] = rf_errf(RF_ERR_RETRY, errstrs[i], errstr_size,
                                 "an earlier message of its partition is retried or refused");
            continue;
        }
        if (strcmp(in[i]->topic_suffix, "commands") != 0) {
            rf_buf_addf(&ids, "%s%s", ids.len ? "," : "{", jstr(in[i]->body, "release_id"));
            results[i] = RF_OK;
            continue;
        }
        if (ids.len > 0) {
            rf_buf_add(&ids, "}", 1);
            track_claim(ts, rf_buf_str(&ids));
            rf_buf_release(&ids);
        }
        rf_log_ctx_set("release", jstr(in[i]->body, "release_id"));
        results[i] = track_command(ts, in[i]->body, errstrs[i], errstr_size);
        rf_log_ctx_clear();
    }
    if (ids.len > 0) {
        rf_buf_add(&ids, "}", 1);
        track_claim(ts, rf_buf_str(&ids));
    }
    rf_buf_release(&ids);
}

static rf_err_t track_init(rf_worker_t *w, void **state, char *errstr, size_t errstr_size)
{
    track_stage_t *ts = calloc(1, sizeof(*ts));
    char host[64] = "host", id[37];

    if (!ts)
        abort();
    ts->w = w;
    gethostname(host, sizeof(host) - 1);
    rf_msg_uuid4(id);
    snprintf(ts->owner, sizeof(ts->owner), "%s/%d/%.8s", host, (int)getpid(), id);
    ts->multi = rf_kube_multi_new();
    ts->tracked = json_object();
    ts->by_deploy = json_object();
    ts->dirty = json_object();
    ts->ending = json_object();
    ts->timed_out = rf_metrics_counter("relfleet_releases_timed_out_total",
                                       "Releases ended failed for passing their timeout", NULL);
    rf_metrics_add(ts->timed_out, NULL, 0); /* the series exists before the first one */
    ts->probe = rf_worker_kube_probe_new(w, errstr, errstr_size);
    if (!ts->probe || !track_cluster(ts, NULL, errstr, errstr_size)) {
        rf_kube_destroy(ts->probe);
        rf_kube_multi_destroy(ts->multi);
        json_decref(ts->tracked);
        json_decref(ts->by_deploy);
        json_decref(ts->dirty);
        json_decref(ts->ending);
        free(ts);
        return RF_ERR_PERM;
    }
    *state = ts;
    return RF_OK;
}

static void track_destroy(void *state)
{
    track_stage_t *ts = state;
    char lease[16] = "0", errstr[256];
    const char *params[2] = {ts->owner, lease};

    /* What was decided is stored (one try), then our releases are handed back at once,
     * so another worker takes them without waiting. */
    if (json_object_size(ts->ending) > 0)
        track_flush_ends(ts);
    if (json_object_size(ts->dirty) > 0)
        track_flush_progress(ts);
    rf_db_exec(ts->w->db, "UPDATE releases SET track_owner = NULL WHERE track_owner = $1", 1,
               params, NULL, errstr, sizeof(errstr));
    for (int i = 0; i < ts->nclusters; i++) {
        while (ts->clusters[i].shards) {
            track_shard_t *sh = ts->clusters[i].shards;
            ts->clusters[i].shards = sh->next;
            track_shard_destroy(sh);
        }
    }
    rf_kube_multi_destroy(ts->multi);
    for (int i = 0; i < ts->nclusters; i++) {
        rf_kube_destroy(ts->clusters[i].kube);
        free(ts->clusters[i].name);
    }
    json_decref(ts->tracked);
    json_decref(ts->by_deploy);
    json_decref(ts->dirty);
    json_decref(ts->ending);
    rf_kube_destroy(ts->probe);
    gray_probes_shutdown();
    free(ts);
}

static int track_ready(void *state)
{
    return rf_worker_kube_ready(((track_stage_t *)state)->probe);
}

/* Between polls: the watches and the consumer, whichever has something first. */
static void track_wait(void *state, int fd, int timeout_ms)
{
    track_stage_t *ts = state;

    rf_kube_multi_poll_fd(ts->multi, timeout_ms, fd);
}

static const char *const track_topics[] = {"applied", "commands", NULL};

const rf_stage_t rf_stage_track = {
    .name = "track",
    .topics = track_topics,
    .poll_ms = 20,
    .needs_lock = 1,
    .init = track_init,
    .handle = track_handle,
    .handle_batch = track_handle_batch,
    .tick = track_tick,
    .wait = track_wait,
    .destroy = track_destroy,
    .ready = track_ready,
};
