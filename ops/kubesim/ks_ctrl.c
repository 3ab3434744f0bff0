/* The controllers of kubesim: Deployments, ReplicaSets and simulated pods, as kube-controller-manager and the kubelet run them. */
#include "ks_ctrl.h"
#include "ks_lru.h"
#include "rf_log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTRL_BATCH 64
#define REVISION_ANN "deployment.kubernetes.io/revision"
#define REVISION_HISTORY_ANN "deployment.kubernetes.io/revision-history"
#define DESIRED_ANN "deployment.kubernetes.io/desired-replicas"
#define MAX_ANN "deployment.kubernetes.io/max-replicas"
#define HASH_LABEL "pod-template-hash"
#define NODE_NAME "kubesim-node"

typedef struct ctrl_item {
    ks_kind_t kind;
    char *ns, *name;
    int64_t due; /* timers only */
} ctrl_item_t;

struct ks_podsim {
    int64_t start_ms; /* real ms when the pod was scheduled */
    unsigned ip;
    size_t nrules;
    const ks_rule_t *rules[16];
};

#define EV_SHARED 32

struct ks_ctrl {
    ks_store_t *st;
    const ks_rules_t *rules;
    double scale;
    pthread_t thread;
    pthread_cond_t wake;
    int started;
    int stop;
    ctrl_item_t *q;
    size_t qhead, qlen, qcap;
    ctrl_item_t *heap;
    size_t hlen, hcap;
    unsigned next_ip;
    int64_t event_ttl_ms; /* simulated ms, 0: events never expire */
    /* the events recorded last, by what makes them the same (the recorder's EventLogger) */
    ks_lru_t *seen;
    /* the string values of the literals Events are made of (type, reason, component, ...) by
     * the literal's address, and each component's source object: a stored tree is never
     * changed in place, so every Event holds the same ones (ev_lit, ev_source) */
    struct ev_shared {
        const char *lit;
        json_t *str, *source;
    } ev_shared[EV_SHARED];
    size_t nev_shared;
};

#define EVENT_CACHE 4096 /* client-go's maxLruCacheEntries */

/* ---- pure helpers ---- */

int ks_ctrl_scaled(const json_t *v, int total, int round_up, int def)
{
    const char *s;
    double pct;

    if (json_is_integer(v))
        return (int)json_integer_value(v);
    s = json_string_value(v);
    if (!s)
        return def;
    if (s[0] && s[strlen(s) - 1] == '%') {
        pct = strtod(s, NULL);
        return round_up ? (int)ceil(pct * total / 100.0) : (int)floor(pct * total / 100.0);
    }
    return atoi(s);
}

void ks_ctrl_fenceposts(const json_t *rolling, int replicas, int *surge, int *unavailable)
{
    *surge = ks_ctrl_scaled(json_object_get(rolling, "maxSurge"), replicas, 1, 0);
    *unavailable = ks_ctrl_scaled(json_object_get(rolling, "maxUnavailable"), replicas, 0, 0);
    if (*surge == 0 && *unavailable == 0)
        *unavailable = 1;
}

void ks_ctrl_template_hash(const json_t *tmpl, int64_t collision_count, char *out,
                           size_t out_size)
{
    static const char alphabet[] = "bcdfghjklmnpqrstvwxz2456789";
    rf_buf_t s = RF_BUF_INIT;
    uint32_t h = 2166136261u;
    char dec[16];
    size_t i;

    if (ks_json_append_sorted(&s, tmpl) != 0)
        rf_buf_reset(&s);
    for (const char *p = rf_buf_str(&s); *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    if (collision_count > 0) {
        char cc[24];
        snprintf(cc, sizeof(cc), "%lld", (long long)collision_count);
        for (const char *p = cc; *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
    }
    rf_buf_release(&s);
    snprintf(dec, sizeof(dec), "%u", h);
    for (i = 0; dec[i] && i + 1 < out_size; i++)
        out[i] = alphabet[(unsigned char)dec[i] % (sizeof(alphabet) - 1)];
    out[i] = '\0';
}

/* ---- queue and timers (store lock held) ---- */

static void ctrl_enqueue(ks_ctrl_t *c, ks_obj_t *o)
{
    ctrl_item_t *it;

    if (!o || o->queued)
        return;
    o->queued = 1;
    if (c->qlen == c->qcap) {
        size_t ncap = c->qcap ? c->qcap * 2 : 256;
        ctrl_item_t *nq = malloc(ncap * sizeof(*nq));
        if (!nq)
            abort();
        for (size_t i = 0; i < c->qlen; i++)
            nq[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = nq;
        c->qcap = ncap;
        c->qhead = 0;
    }
    it = &c->q[(c->qhead + c->qlen) % c->qcap];
    c->qlen++;
    it->kind = o->kind;
    it->ns = strdup(o->ns);
    it->name = strdup(o->name);
    pthread_cond_signal(&c->wake);
}

static void ctrl_timer(ks_ctrl_t *c, ks_obj_t *o, int64_t due)
{
    size_t i;

    if (c->hlen == c->hcap) {
        c->hcap = c->hcap ? c->hcap * 2 : 256;
        c->heap = realloc(c->heap, c->hcap * sizeof(*c->heap));
        if (!c->heap)
            abort();
    }
    i = c->hlen++;
    c->heap[i].kind = o->kind;
    c->heap[i].ns = strdup(o->ns);
    c->heap[i].name = strdup(o->name);
    c->heap[i].due = due;
    while (i > 0 && c->heap[(i - 1) / 2].due > c->heap[i].due) {
        ctrl_item_t t = c->heap[i];
        c->heap[i] = c->heap[(i - 1) / 2];
        c->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    pthread_cond_signal(&c->wake);
}

static ctrl_item_t heap_pop(ks_ctrl_t *c)
{
    ctrl_item_t top = c->heap[0];
    size_t i = 0;

    c->heap[0] = c->heap[--c->hlen];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->hlen && c->heap[l].due < c->heap[m].due)
            m = l;
        if (r < c->hlen && c->heap[r].due < c->heap[m].due)
            m = r;
        if (m == i)
            break;
        ctrl_item_t t = c->heap[i];
        c->heap[i] = c->heap[m];
        c->heap[m] = t;
        i = m;
    }
    return top;
}

/* Real ms for a span of simulated ms. */
static int64_t ctrl_real(const ks_ctrl_t *c, double sim_ms)
{
    return (int64_t)ceil(sim_ms / c->scale);
}

/* ---- object helpers ---- */

static int spec_replicas(const json_t *o)
{
    return (int)ks_jint(o, "spec.replicas", 1);
}

static int status_int(const json_t *o, const char *field)
{
    json_t *v = json_object_get(json_object_get(o, "status"), field);

    return json_is_integer(v) ? (int)json_integer_value(v) : 0;
}

/* Annotation keys hold dots, so they are looked up directly. */
static const char *annotation(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(ks_jget(o, "metadata.annotations"), key));
}

static int64_t revision_of(const json_t *rs)
{
    const char *r = annotation(rs, REVISION_ANN);

    return r ? strtoll(r, NULL, 10) : 0;
}

/* o is a copy of its own metadata (ks_obj_copy); the annotations are copied on write. */
static void set_annotation(json_t *o, const char *key, const char *value)
{
    json_t *meta = json_object_get(o, "metadata");
    json_t *ann = json_object_get(json_object_get(meta, "annotations"), key);

    /* the same value already: nothing to write (and the annotations stay shared) */
    if (json_is_string(ann) && json_string_length(ann) == strlen(value) &&
        strcmp(json_string_value(ann), value) == 0)
        return;
    ann = ks_jcow(meta, "annotations");
    if (!json_is_object(ann)) {
        ann = json_object();
        json_object_set_new_nocheck(meta, "annotations", ann);
    }
    json_object_set_new(ann, key, json_string(value));
}

/* Stores copy when it differs from o's current json; steals copy. */
static void ctrl_commit(ks_ctrl_t *c, ks_obj_t *o, json_t *copy)
{
    if (ks_json_equal(copy, o->json))
        json_decref(copy);
    else
        ks_store_put(c->st, o->kind, copy);
}

static void random_suffix(ks_ctrl_t *c, char *out, size_t n)
{
    static const char alphabet[] = "bcdfghjklmnpqrstvwxz2456789";
    unsigned char b[16];

    if (ks_store_random(c->st, b, sizeof(b)) != 0)
        memset(b, 7, sizeof(b));
    for (size_t i = 0; i < n && i < sizeof(b); i++)
        out[i] = alphabet[b[i] % (sizeof(alphabet) - 1)];
    out[n] = '\0';
}

/* Sets key (a literal) to the string v; 0 when v is not UTF-8, as json_pack refuses it. */
static int ev_str(json_t *o, const char *key, const char *v)
{
    json_t *s = json_string(v);

    return s && json_object_set_new_nocheck(o, key, s) == 0;
}

/* Sets key (a literal) to a new reference of value (held by the caller). */
static int ev_ref(json_t *o, const char *key, json_t *value)
{
    return json_object_set_new_nocheck(o, key, json_incref(value)) == 0;
}

/* Sets key (a literal) to v, a string member of a stored object (the Event's subject), shared
 * when it is what json_string of its text makes (a string of no NUL byte), else as ev_str. */
static int ev_member(json_t *o, const char *key, json_t *v)
{
    const char *text = json_string_value(v);

    if (!text)
        return ev_str(o, key, "");
    if (strlen(text) == json_string_length(v))
        return ev_ref(o, key, v);
    return ev_str(o, key, text);
}

/* The shared entry of lit (a literal of ASCII), NULL when the table is full. */
static struct ev_shared *ev_shared_of(ks_ctrl_t *c, const char *lit)
{
    struct ev_shared *e;

    for (size_t i = 0; i < c->nev_shared; i++)
        if (c->ev_shared[i].lit == lit)
            return &c->ev_shared[i];
    if (c->nev_shared == EV_SHARED)
        return NULL;
    e = &c->ev_shared[c->nev_shared];
    e->str = json_string_nocheck(lit);
    if (!e->str)
        abort();
    e->lit = lit;
    e->source = NULL;
    c->nev_shared++;
    return e;
}

/* Sets key (a literal) to the literal v of ASCII: its shared string. */
static int ev_lit(ks_ctrl_t *c, json_t *o, const char *key, const char *v)
{
    struct ev_shared *e = ev_shared_of(c, v);

    if (!e)
        return json_object_set_new_nocheck(o, key, json_string_nocheck(v)) == 0;
    return ev_ref(o, key, e->str);
}

/* Sets "source" to {"component": component, "host": NODE_NAME}, shared per component. */
static int ev_source(ks_ctrl_t *c, json_t *o, const char *component)
{
    struct ev_shared *e = ev_shared_of(c, component);
    json_t *src;

    if (e && e->source)
        return ev_ref(o, "source", e->source);
    src = json_object();
    if (!src || !ev_lit(c, src, "component", component) || !ev_lit(c, src, "host", NODE_NAME)) {
        json_decref(src);
        return 0;
    }
    if (e)
        e->source = json_incref(src);
    return json_object_set_new_nocheck(o, "source", src) == 0;
}

/* Records a v1 Event about obj, as the controllers' event recorders do; type, reason and
 * component are literals of ASCII. Store lock held. */
static void ctrl_event(ks_ctrl_t *c, const json_t *obj, const char *type, const char *reason,
                       const char *message, const char *component)
{
    char name[300], hex[17], ts[32];
    unsigned char b[8];
    json_t *ev;
    json_t *ometa = json_object_get(obj, "metadata");
    json_t *ns_v = json_object_get(ometa, "namespace"), *uid_v = json_object_get(ometa, "uid");
    json_t *name_v = json_object_get(ometa, "name");
    const char *ns = json_string_value(ns_v), *oname = json_string_value(name_v);

    if (!ks_store_get(c->st, KS_NAMESPACE, "", ns ? ns : "default"))
        return;
    /* an event like one recorded before (same object, type, reason, message, source) is that
     * event again: its count grows and its lastTimestamp moves, as the recorder does */
    {
        const char *parts[] = {ns ? ns : "default", json_string_value(uid_v) ?: "",
                               oname ?: "", type, reason, message, component};
        uint64_t key = 1469598103934665603ULL;
        const char *was;
        ks_obj_t *old;

        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
            for (const char *p = parts[i]; *p; p++)
                key = (key ^ (unsigned char)*p) * 1099511628211ULL;
            key = (key ^ 0xff) * 1099511628211ULL;
        }
        was = c->seen ? ks_lru_get(c->seen, key) : NULL;
        old = was ? ks_store_get(c->st, KS_EVENT, ns ? ns : "default", was) : NULL;
        if (old) {
            json_t *copy = ks_obj_copy(old->json);
            ks_time_format(ks_now_ms(), ts, sizeof(ts));
            json_object_set_new_nocheck(copy, "count", json_integer(ks_jint(old->json, "count", 1) + 1));
            json_object_set_new_nocheck(copy, "lastTimestamp", json_string_nocheck(ts));
            ks_store_put(c->st, KS_EVENT, copy);
            return;
        }
        if (ks_store_random(c->st, b, sizeof(b)) != 0)
            memset(b, 1, sizeof(b));
        for (int i = 0; i < 8; i++) {
            hex[2 * i] = "0123456789abcdef"[b[i] >> 4];
            hex[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
        }
        hex[16] = '\0';
        snprintf(name, sizeof(name), "%.200s.%s", oname, hex);
        if (c->seen)
            ks_lru_put(c->seen, key, name);
    }
    ks_time_format(ks_now_ms(), ts, sizeof(ts));
    /* what json_pack of the Event writes, in its order, without parsing a format per event;
     * the subject's strings, the literals and the source are shared, not copied */
    {
        json_t *meta = json_object(), *inv = json_object(), *nsj, *tsj = json_string_nocheck(ts);
        int ok = oname != NULL && tsj != NULL;

        nsj = ns ? json_incref(ns_v) : json_string_nocheck("default");
        if (nsj && ns && strlen(ns) != json_string_length(nsj)) {
            json_decref(nsj); /* a NUL in it: json_pack's copy ends there */
            nsj = json_string(ns);
        }
        ok = ok && nsj != NULL;
        ev = json_object();
        ok = ok && ev_lit(c, ev, "apiVersion", "v1") && ev_lit(c, ev, "kind", "Event") &&
             ev_str(meta, "name", name) && ev_ref(meta, "namespace", nsj) &&
             json_object_set_new_nocheck(ev, "metadata", meta) == 0 &&
             ev_member(inv, "kind", json_object_get(obj, "kind")) &&
             ev_ref(inv, "namespace", nsj) && ev_member(inv, "name", name_v) &&
             ev_member(inv, "uid", uid_v) &&
             ev_member(inv, "apiVersion", json_object_get(obj, "apiVersion")) &&
             ev_member(inv, "resourceVersion", json_object_get(ometa, "resourceVersion")) &&
             json_object_set_new_nocheck(ev, "involvedObject", inv) == 0 &&
             ev_lit(c, ev, "reason", reason) && ev_str(ev, "message", message) &&
             ev_source(c, ev, component) && ev_ref(ev, "firstTimestamp", tsj) &&
             ev_ref(ev, "lastTimestamp", tsj) &&
             json_object_set_new_nocheck(ev, "count", json_integer(1)) == 0 &&
             ev_lit(c, ev, "type", type) &&
             json_object_set_new_nocheck(ev, "eventTime", json_null()) == 0 &&
             ev_lit(c, ev, "reportingComponent", component) &&
             ev_lit(c, ev, "reportingInstance", NODE_NAME);
        json_decref(nsj);
        json_decref(tsj);
        if (!ok) {
            /* as json_pack fails (a NULL name, a string that is not UTF-8): no Event */
            if (!json_object_get(ev, "metadata"))
                json_decref(meta);
            if (!json_object_get(ev, "involvedObject"))
                json_decref(inv);
            json_decref(ev);
            ev = NULL;
        }
    }
    if (ev)
        ks_store_put(c->st, KS_EVENT, ev);
}

/* ---- pods (the kubelet) ---- */

static void pod_sim_init(ks_ctrl_t *c, ks_obj_t *pod)
{
    struct ks_podsim *sim = calloc(1, sizeof(*sim));
    json_t *containers = ks_jget(pod->json, "spec.containers"), *ct;
    size_t i;

    if (!sim)
        abort();
    sim->start_ms = ks_now_ms();
    sim->ip = ++c->next_ip;
    json_array_foreach(containers, i, ct) {
        if (i >= 16)
            break;
        sim->rules[sim->nrules++] = ks_rules_match(c->rules, json_string_value(json_object_get(ct, "image")));
    }
    pod->sim = sim;
}

static int64_t pod_age(const ks_ctrl_t *c, const ks_obj_t *pod, int64_t now)
{
    return (int64_t)floor((double)(now - pod->sim->start_ms) * c->scale);
}

static void sim_time(const ks_ctrl_t *c, const ks_obj_t *pod, int64_t age, char *out, size_t n)
{
    ks_time_format(pod->sim->start_ms + ctrl_real(c, (double)age), out, n);
}

/* {"<key>":value} (value stolen): what json_pack("{s:o}") makes, without a format to read
 * (a pod's status is built at each of its changes: issue 20). */
static json_t *pod_obj1(const char *key, json_t *value)
{
    json_t *o = json_object();

    json_object_set_new_nocheck(o, key, value);
    return o;
}

/* A pod condition as json_pack("{s:s, s:s, s:n, s:s}", "type", ...) makes it (type and
 * status are literals, when a time: ASCII). */
static json_t *pod_cond(const char *type, const char *status, const char *when)
{
    json_t *o = json_object();

    json_object_set_new_nocheck(o, "type", json_string_nocheck(type));
    json_object_set_new_nocheck(o, "status", json_string_nocheck(status));
    json_object_set_new_nocheck(o, "lastProbeTime", json_null());
    json_object_set_new_nocheck(o, "lastTransitionTime", json_string_nocheck(when));
    return o;
}

/* Builds the pod status for now; *next is the real ms of the next change or -1. Literals,
 * times and addresses (ASCII) go in with json_string_nocheck, literal keys with _nocheck:
 * the same values json_string and json_object_set_new make of them, without the UTF-8 walk. */
static json_t *pod_status(ks_ctrl_t *c, ks_obj_t *pod, int64_t now, int64_t *next,
                          int64_t *ready_since_ms)
{
    json_t *status = json_object(), *statuses = json_array(), *conds = json_array();
    json_t *containers = ks_jget(pod->json, "spec.containers"), *ct;
    char t0[32], ip[32], ts[32];
    int all_ready = 1, any_started = 0, all_started = 1;
    int64_t age = pod_age(c, pod, now), ready_since = 0, next_age = -1;
    size_t i;

    sim_time(c, pod, 0, t0, sizeof(t0));
    json_array_foreach(containers, i, ct) {
        ks_cstate_t cs;
        json_t *st, *state;
        const ks_rule_t *rule = i < pod->sim->nrules ? pod->sim->rules[i] : pod->sim->rules[0];
        ks_rules_state(rule, age, &cs);
        if (cs.next_change >= 0 && (next_age < 0 || cs.next_change < next_age))
            next_age = cs.next_change;
        if (cs.running) {
            sim_time(c, pod, cs.started_at, ts, sizeof(ts));
            state = pod_obj1("running", pod_obj1("startedAt", json_string_nocheck(ts)));
            any_started = 1;
        } else if (strcmp(cs.waiting, "ContainerCreating") == 0) {
            state = pod_obj1("waiting", pod_obj1("reason", json_string_nocheck(cs.waiting)));
            all_started = 0;
        } else if (strcmp(cs.waiting, "CrashLoopBackOff") == 0) {
            char msg[256];
            snprintf(msg, sizeof(msg), "back-off %llds restarting failed container=%s pod=%s_%s(%s)",
                     (long long)(cs.backoff_ms / 1000), json_string_value(json_object_get(ct, "name")) ?: "",
                     pod->name, pod->ns, ks_jstr(pod->json, "metadata.uid") ?: "");
            state = json_pack("{s:{s:s, s:s}}", "waiting", "reason", cs.waiting, "message", msg);
            any_started = 1;
        } else {
            char msg[512];
            const char *img = json_string_value(json_object_get(ct, "image")) ?: "";
            if (strcmp(cs.waiting, "ImagePullBackOff") == 0)
                snprintf(msg, sizeof(msg), "Back-off pulling image \"%s\"", img);
            else if (strcmp(cs.waiting, "ErrImagePull") == 0)
                snprintf(msg, sizeof(msg), "rpc error: code = NotFound desc = failed to pull and unpack image \"%s\": not found", img);
            else
                snprintf(msg, sizeof(msg), "%s", cs.waiting);
            state = json_pack("{s:{s:s, s:s}}", "waiting", "reason", cs.waiting, "message", msg);
            all_started = 0;
        }
        /* as json_pack("{s:s, s:o, s:b, s:i, s:s, s:s, s:s, s:b}", ...) makes it (the name
         * and image come from a parsed tree: UTF-8) */
        st = json_object();
        json_object_set_new_nocheck(st, "name",
                                    json_string(json_string_value(json_object_get(ct, "name")) ?: ""));
        json_object_set_new_nocheck(st, "state", state);
        json_object_set_new_nocheck(st, "ready", json_boolean(cs.ready));
        json_object_set_new_nocheck(st, "restartCount", json_integer(cs.restarts));
        json_object_set_new_nocheck(st, "image",
                                    json_string(json_string_value(json_object_get(ct, "image")) ?: ""));
        json_object_set_new_nocheck(st, "imageID",
                                    json_string_nocheck(cs.running || cs.restarts
                                                    ? "docker-pullable://kubesim/image@sha256:0"
                                                    : ""));
        json_object_set_new_nocheck(st, "containerID",
                                    json_string_nocheck(cs.running || cs.restarts ? "containerd://kubesim" : ""));
        json_object_set_new_nocheck(st, "started", json_boolean(cs.running));
        if (!cs.running && !cs.restarts) {
            json_object_del(st, "imageID");
            json_object_set_new_nocheck(st, "imageID", json_string_nocheck(""));
            json_object_del(st, "containerID");
        }
        if (cs.restarts > 0) {
            char a[32], b[32];
            sim_time(c, pod, cs.term_started_at, a, sizeof(a));
            sim_time(c, pod, cs.term_finished_at, b, sizeof(b));
            json_object_set_new_nocheck(st, "lastState",
                                json_pack("{s:{s:i, s:s, s:s, s:s, s:s}}", "terminated", "exitCode",
                                          1, "reason", "Error", "startedAt", a, "finishedAt", b,
                                          "containerID", "containerd://kubesim"));
        } else {
            json_object_set_new_nocheck(st, "lastState", json_object());
        }
        json_array_append_new(statuses, st);
        if (!cs.ready)
            all_ready = 0;
        else if (cs.ready_since > ready_since)
            ready_since = cs.ready_since;
    }
    if (json_array_size(containers) == 0)
        all_ready = 0;
    {
        char ready_t[32];
        if (all_ready)
            sim_time(c, pod, ready_since, ready_t, sizeof(ready_t));
        else
            snprintf(ready_t, sizeof(ready_t), "%s", t0);
        json_array_append_new(conds, pod_cond("PodReadyToStartContainers", any_started ? "True" : "False", t0));
        json_array_append_new(conds, pod_cond("Initialized", "True", t0));
        json_array_append_new(conds, pod_cond("Ready", all_ready ? "True" : "False", ready_t));
        json_array_append_new(conds, pod_cond("ContainersReady", all_ready ? "True" : "False", ready_t));
        json_array_append_new(conds, pod_cond("PodScheduled", "True", t0));
        if (!all_ready) {
            for (size_t k = 2; k <= 3; k++) {
                json_t *cd = json_array_get(conds, k);
                json_object_set_new_nocheck(cd, "reason", json_string_nocheck("ContainersNotReady"));
                json_object_set_new_nocheck(cd, "message",
                                            json_string_nocheck("containers with unready status: [all]"));
            }
        }
    }
    snprintf(ip, sizeof(ip), "10.244.%u.%u", (pod->sim->ip / 250) % 250, pod->sim->ip % 250 + 2);
    json_object_set_new_nocheck(status, "phase", json_string_nocheck(any_started && all_started ? "Running" : (any_started ? "Running" : "Pending")));
    json_object_set_new_nocheck(status, "conditions", conds);
    json_object_set_new_nocheck(status, "hostIP", json_string_nocheck("10.0.0.1"));
    json_object_set_new_nocheck(status, "hostIPs", json_array());
    json_array_append_new(json_object_get(status, "hostIPs"), pod_obj1("ip", json_string_nocheck("10.0.0.1")));
    json_object_set_new_nocheck(status, "podIP", json_string_nocheck(ip));
    json_object_set_new_nocheck(status, "podIPs", json_array());
    json_array_append_new(json_object_get(status, "podIPs"), pod_obj1("ip", json_string_nocheck(ip)));
    json_object_set_new_nocheck(status, "startTime", json_string_nocheck(t0));
    json_object_set_new_nocheck(status, "containerStatuses", statuses);
    json_object_set_new_nocheck(status, "qosClass", json_string_nocheck("BestEffort"));
    *next = next_age < 0 ? -1 : pod->sim->start_ms + ctrl_real(c, (double)next_age);
    *ready_since_ms = all_ready ? pod->sim->start_ms + ctrl_real(c, (double)ready_since) : 0;
    return status;
}

static void sync_pod(ks_ctrl_t *c, ks_obj_t *pod)
{
    int64_t now = ks_now_ms(), next, ready_since;
    json_t *copy, *status;
    const char *old_phase;

    if (!pod->sim)
        pod_sim_init(c, pod);
    status = pod_status(c, pod, now, &next, &ready_since);
    pod->ready_ms = ready_since;
    old_phase = ks_jstr(pod->json, "status.phase");
    if (!old_phase) {
        char msg[256];
        snprintf(msg, sizeof(msg), "Successfully assigned %s/%s to %s", pod->ns, pod->name, NODE_NAME);
        ctrl_event(c, pod->json, "Normal", "Scheduled", msg, "default-scheduler");
    }
    {
        json_t *cs = json_array_get(ks_jget(status, "containerStatuses"), 0);
        const char *reason = ks_jstr(cs, "state.waiting.reason");
        const char *old_reason = ks_jstr(json_array_get(ks_jget(pod->json, "status.containerStatuses"), 0), "state.waiting.reason");
        if (reason && (!old_reason || strcmp(reason, old_reason) != 0)) {
            char msg[512];
            if (strcmp(reason, "CrashLoopBackOff") == 0) {
                snprintf(msg, sizeof(msg), "Back-off restarting failed container %s in pod %s_%s(%s)",
                         ks_jstr(cs, "name") ?: "", pod->name, pod->ns, ks_jstr(pod->json, "metadata.uid") ?: "");
                ctrl_event(c, pod->json, "Warning", "BackOff", msg, "kubelet");
            } else if (strcmp(reason, "ContainerCreating") != 0) {
                snprintf(msg, sizeof(msg), "Error: %s", reason);
                ctrl_event(c, pod->json, "Warning", "Failed", msg, "kubelet");
            }
        }
    }
    /* the copy differs from the pod only at its status and nodeName: none when neither would */
    if (ks_jstr(pod->json, "spec.nodeName") &&
        ks_json_equal(status, json_object_get(pod->json, "status"))) {
        json_decref(status);
    } else {
        copy = ks_obj_copy(pod->json);
        json_object_set_new_nocheck(copy, "status", status);
        if (!ks_jstr(copy, "spec.nodeName")) {
            ks_jcow(copy, "spec");
            ks_jset(copy, "spec.nodeName", json_string(NODE_NAME));
        }
        ctrl_commit(c, pod, copy);
    }
    if (next >= 0)
        ctrl_timer(c, pod, next);
}

/* ---- ReplicaSets ---- */

static int pod_active(const ks_obj_t *p)
{
    const char *phase = ks_jstr(p->json, "status.phase");

    return !ks_jget(p->json, "metadata.deletionTimestamp") &&
           !(phase && (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0));
}

static int pod_ready(const ks_obj_t *p)
{
    return p->ready_ms > 0;
}

/* Deletion order of the ReplicaSet controller: not ready before ready, then newest first. */
static int pod_delete_cmp(const void *a, const void *b)
{
    const ks_obj_t *x = *(ks_obj_t *const *)a, *y = *(ks_obj_t *const *)b;

    if (pod_ready(x) != pod_ready(y))
        return pod_ready(x) - pod_ready(y);
    return x->seq < y->seq ? 1 : -1;
}

/* [{"apiVersion":"apps/v1","kind":kind,"name":name,"uid":uid,"controller":true,
 * "blockOwnerDeletion":true}]: json_pack("[{s:s, s:s, s:s, s:s, s:b, s:b}]", ...)'s list;
 * kind is a literal, name and uid stored strings */
static json_t *owner_refs(const char *kind, const char *name, const char *uid)
{
    json_t *ref = json_object(), *refs = json_array();

    json_object_set_new_nocheck(ref, "apiVersion", json_string_nocheck("apps/v1"));
    json_object_set_new_nocheck(ref, "kind", json_string_nocheck(kind));
    json_object_set_new_nocheck(ref, "name", json_string(name));
    json_object_set_new_nocheck(ref, "uid", json_string(uid));
    json_object_set_new_nocheck(ref, "controller", json_true());
    json_object_set_new_nocheck(ref, "blockOwnerDeletion", json_true());
    json_array_append_new(refs, ref);
    return refs;
}

static void create_pod(ks_ctrl_t *c, ks_obj_t *rs)
{
    json_t *tmpl = ks_jget(rs->json, "spec.template"), *pod;
    char name[300], suffix[6];

    do {
        random_suffix(c, suffix, 5);
        snprintf(name, sizeof(name), "%s-%s", rs->name, suffix);
    } while (ks_store_get(c->st, KS_POD, rs->ns, name));
    /* as json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:o}", ...) made it, then generateName,
     * labels, annotations, ownerReferences, spec.nodeName and status set on it (in that order) */
    {
        char gen[300];
        json_t *meta = json_object();
        snprintf(gen, sizeof(gen), "%s-", rs->name);
        pod = json_object();
        json_object_set_new_nocheck(pod, "apiVersion", json_string_nocheck("v1"));
        json_object_set_new_nocheck(pod, "kind", json_string_nocheck("Pod"));
        json_object_set_new_nocheck(meta, "name", json_string(name));
        json_object_set_new_nocheck(meta, "generateName", json_string(gen));
        json_object_set_new_nocheck(meta, "namespace", json_string(rs->ns));
        json_object_set_new_nocheck(pod, "metadata", meta);
        json_object_set_new_nocheck(pod, "spec", ks_jget(tmpl, "spec") ? json_copy(ks_jget(tmpl, "spec"))
                                                                       : json_object());
        if (ks_jget(tmpl, "metadata.labels"))
            json_object_set_new_nocheck(meta, "labels", ks_json_copy(ks_jget(tmpl, "metadata.labels")));
        if (ks_jget(tmpl, "metadata.annotations"))
            json_object_set_new_nocheck(meta, "annotations",
                                        ks_json_copy(ks_jget(tmpl, "metadata.annotations")));
        json_object_set_new_nocheck(meta, "ownerReferences",
                                    owner_refs("ReplicaSet", rs->name, ks_jstr(rs->json, "metadata.uid") ?: ""));
        json_object_set_new_nocheck(json_object_get(pod, "spec"), "nodeName", json_string_nocheck(NODE_NAME));
        json_t *st = json_object();
        json_object_set_new_nocheck(st, "phase", json_string_nocheck("Pending"));
        json_object_set_new_nocheck(st, "qosClass", json_string_nocheck("BestEffort"));
        json_object_set_new_nocheck(pod, "status", st);
    }
    ks_obj_t *p = ks_store_put(c->st, KS_POD, pod);
    ks_store_link(rs, p);
    {
        char msg[400];
        snprintf(msg, sizeof(msg), "Created pod: %s", name);
        ctrl_event(c, rs->json, "Normal", "SuccessfulCreate", msg, "replicaset-controller");
    }
    sync_pod(c, p);
}

static void sync_replicaset(ks_ctrl_t *c, ks_obj_t *rs)
{
    int want = spec_replicas(rs->json), have = 0, ready = 0, available = 0, labeled = 0;
    int64_t min_ready = ks_jint(rs->json, "spec.minReadySeconds", 0), now = ks_now_ms();
    int64_t next_avail = -1;
    ks_obj_t **pods;
    size_t n = 0;
    json_t *copy, *status;

    pods = malloc((rs->nkids + 1) * sizeof(*pods));
    if (!pods)
        abort();
    for (size_t i = 0; i < rs->nkids; i++)
        if (rs->kids[i]->kind == KS_POD && pod_active(rs->kids[i]))
            pods[n++] = rs->kids[i];
    if ((int)n < want) {
        for (int i = (int)n; i < want && i - (int)n < 500; i++)
            create_pod(c, rs);
    } else if ((int)n > want) {
        qsort(pods, n, sizeof(*pods), pod_delete_cmp);
        for (size_t i = 0; i < n - (size_t)want; i++) {
            char msg[400];
            snprintf(msg, sizeof(msg), "Deleted pod: %s", pods[i]->name);
            ctrl_event(c, rs->json, "Normal", "SuccessfulDelete", msg, "replicaset-controller");
            ks_store_delete(c->st, pods[i]);
        }
    }
    free(pods);
    for (size_t i = 0; i < rs->nkids; i++) {
        ks_obj_t *p = rs->kids[i];
        if (p->kind != KS_POD || !pod_active(p))
            continue;
        have++;
        labeled++;
        if (!pod_ready(p))
            continue;
        ready++;
        int64_t avail_at = p->ready_ms + ctrl_real(c, (double)min_ready * 1000.0);
        if (min_ready == 0 || avail_at <= now)
            available++;
        else if (next_avail < 0 || avail_at < next_avail)
            next_avail = avail_at;
    }
    status = json_object();
    json_object_set_new_nocheck(status, "replicas", json_integer(have));
    if (labeled)
        json_object_set_new_nocheck(status, "fullyLabeledReplicas", json_integer(labeled));
    if (ready)
        json_object_set_new_nocheck(status, "readyReplicas", json_integer(ready));
    if (available)
        json_object_set_new_nocheck(status, "availableReplicas", json_integer(available));
    json_object_set_new_nocheck(status, "observedGeneration",
                        json_integer(ks_jint(rs->json, "metadata.generation", 1)));
    /* the copy differs from rs only at its status: none when that is the same */
    if (ks_json_equal(status, json_object_get(rs->json, "status"))) {
        json_decref(status);
    } else {
        copy = ks_obj_copy(rs->json);
        json_object_set_new_nocheck(copy, "status", status);
        ctrl_commit(c, rs, copy);
    }
    if (next_avail >= 0)
        ctrl_timer(c, rs, next_avail);
}

/* ---- Deployments ---- */

typedef struct dep_ctx {
    ks_ctrl_t *c;
    ks_obj_t *d;
    json_t *dj; /* working copy of the deployment */
    ks_obj_t *new_rs;
    ks_obj_t **old;
    size_t nold;
    int replicas, surge, unavailable;
} dep_ctx_t;

static int template_matches(const json_t *rs_tmpl, const json_t *d_tmpl)
{
    /* the ReplicaSet's template without its hash label: copies of the path to it only */
    json_t *a = json_copy((json_t *)rs_tmpl);
    json_t *labels;
    int eq;

    ks_jcow(ks_jcow(a, "metadata"), "labels");
    labels = ks_jget(a, "metadata.labels");

    json_object_del(labels, HASH_LABEL);
    if (labels && json_object_size(labels) == 0 && !ks_jget(d_tmpl, "metadata.labels"))
        json_object_del(json_object_get(a, "metadata"), "labels");
    eq = ks_json_equal(a, d_tmpl);
    json_decref(a);
    return eq;
}

/* template_matches of rs's template and d_tmpl, answered from rs's last comparison
 * when it was of these two trees (a sync compares the same ones again and again) */
static int rs_template_matches(ks_obj_t *rs, json_t *d_tmpl)
{
    json_t *own = ks_jget(rs->json, "spec.template");

    if (!own || !d_tmpl || own != rs->tmpl_own || d_tmpl != rs->tmpl_dep) {
        json_decref(rs->tmpl_own);
        json_decref(rs->tmpl_dep);
        rs->tmpl_own = json_incref(own);
        rs->tmpl_dep = json_incref(d_tmpl);
        rs->tmpl_match = template_matches(own, d_tmpl);
    }
    return rs->tmpl_match;
}

static int rs_cmp_created(const void *a, const void *b)
{
    const ks_obj_t *x = *(ks_obj_t *const *)a, *y = *(ks_obj_t *const *)b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int rs_cmp_revision(const void *a, const void *b)
{
    const ks_obj_t *x = *(ks_obj_t *const *)a, *y = *(ks_obj_t *const *)b;
    int64_t rx = revision_of(x->json), ry = revision_of(y->json);

    if (rx != ry)
        return rx < ry ? -1 : 1;
    return rs_cmp_created(a, b);
}

static void dep_classify(dep_ctx_t *x)
{
    ks_obj_t *d = x->d;
    json_t *tmpl = ks_jget(x->dj, "spec.template");

    free(x->old);
    x->old = malloc((d->nkids + 1) * sizeof(*x->old));
    x->nold = 0;
    x->new_rs = NULL;
    ks_obj_t **all = malloc((d->nkids + 1) * sizeof(*all));
    size_t n = 0;
    for (size_t i = 0; i < d->nkids; i++)
        if (d->kids[i]->kind == KS_REPLICASET)
            all[n++] = d->kids[i];
    qsort(all, n, sizeof(*all), rs_cmp_created);
    for (size_t i = 0; i < n; i++) {
        if (!x->new_rs && rs_template_matches(all[i], tmpl))
            x->new_rs = all[i];
        else
            x->old[x->nold++] = all[i];
    }
    free(all);
}

/* ks_jstr of a key without dots: the member itself, no path to walk */
static const char *cond_str(const json_t *cd, const char *key)
{
    return json_string_value(json_object_get(cd, key));
}

static void dep_set_condition(json_t *status, const char *type, const char *cstatus,
                              const char *reason, const char *message, int *changed_update)
{
    json_t *conds = json_object_get(status, "conditions"), *cur = NULL, *cd, *out;
    char ts[32];
    size_t i;

    if (!json_is_array(conds)) {
        conds = json_array();
        json_object_set_new_nocheck(status, "conditions", conds);
    }
    json_array_foreach(conds, i, cd) {
        if (strcmp(cond_str(cd, "type") ?: "", type) == 0)
            cur = cd;
    }
    if (cur && strcmp(cond_str(cur, "status") ?: "", cstatus) == 0 &&
        strcmp(cond_str(cur, "reason") ?: "", reason) == 0)
        return;
    ks_time_format(ks_now_ms(), ts, sizeof(ts));
    /* what json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", ...) makes, in its order: type, status
     * and reason are literals of ASCII, ts is ASCII; a message that is not UTF-8 makes none */
    cd = json_string(message);
    if (cd) {
        json_t *m = cd;
        cd = json_object();
        json_object_set_new_nocheck(cd, "type", json_string_nocheck(type));
        json_object_set_new_nocheck(cd, "status", json_string_nocheck(cstatus));
        json_object_set_new_nocheck(cd, "lastUpdateTime", json_string_nocheck(ts));
        json_object_set_new_nocheck(cd, "lastTransitionTime", json_string_nocheck(ts));
        json_object_set_new_nocheck(cd, "reason", json_string_nocheck(reason));
        json_object_set_new_nocheck(cd, "message", m);
    }
    if (cur && strcmp(cond_str(cur, "status") ?: "", cstatus) == 0)
        json_object_set(cd, "lastTransitionTime", json_object_get(cur, "lastTransitionTime"));
    out = json_array();
    json_array_foreach(conds, i, cur) {
        if (strcmp(cond_str(cur, "type") ?: "", type) != 0)
            json_array_append(out, cur);
    }
    json_array_append_new(out, cd);
    json_object_set_new_nocheck(status, "conditions", out);
    if (changed_update)
        *changed_update = 1;
}

static void dep_remove_condition(json_t *status, const char *type)
{
    json_t *conds = json_object_get(status, "conditions"), *cd, *out = json_array();
    size_t i;

    json_array_foreach(conds, i, cd) {
        if (strcmp(cond_str(cd, "type") ?: "", type) != 0)
            json_array_append(out, cd);
    }
    json_object_set_new_nocheck(status, "conditions", out);
}

static json_t *dep_condition(const json_t *status, const char *type)
{
    json_t *cd;
    size_t i;

    json_array_foreach(json_object_get(status, "conditions"), i, cd) {
        if (strcmp(cond_str(cd, "type") ?: "", type) == 0)
            return cd;
    }
    return NULL;
}

static void scale_rs(dep_ctx_t *x, ks_obj_t *rs, int to)
{
    json_t *copy = ks_obj_copy(rs->json);
    int from = spec_replicas(rs->json);
    char buf[32], msg[512];

    ks_jcow(copy, "spec");
    ks_jset(copy, "spec.replicas", json_integer(to));
    snprintf(buf, sizeof(buf), "%d", x->replicas);
    set_annotation(copy, DESIRED_ANN, buf);
    snprintf(buf, sizeof(buf), "%d", x->replicas + x->surge);
    set_annotation(copy, MAX_ANN, buf);
    if (from != to) {
        json_object_set_new_nocheck(json_object_get(copy, "metadata"), "generation",
                            json_integer(ks_jint(rs->json, "metadata.generation", 1) + 1));
        snprintf(msg, sizeof(msg), "Scaled %s replica set %s to %d from %d",
                 to > from ? "up" : "down", rs->name, to, from);
        ctrl_event(x->c, x->dj, "Normal", "ScalingReplicaSet", msg, "deployment-controller");
    }
    ctrl_commit(x->c, rs, copy);
}

static int64_t max_old_revision(dep_ctx_t *x)
{
    int64_t m = 0;

    for (size_t i = 0; i < x->nold; i++)
        if (revision_of(x->old[i]->json) > m)
            m = revision_of(x->old[i]->json);
    return m;
}

static int sum_spec(ks_obj_t **rss, size_t n)
{
    int s = 0;

    for (size_t i = 0; i < n; i++)
        s += spec_replicas(rss[i]->json);
    return s;
}

static int sum_status(ks_obj_t **rss, size_t n, const char *field)
{
    int s = 0;

    for (size_t i = 0; i < n; i++)
        s += status_int(rss[i]->json, field);
    return s;
}

/* getAllReplicaSetsAndSyncRevision: revision annotations, and the new RS when asked. */
static void dep_sync_revision(dep_ctx_t *x, int create)
{
    int64_t new_rev = max_old_revision(x) + 1;
    char rev[32], buf[32];
    json_t *status = json_object_get(x->dj, "status");

    snprintf(rev, sizeof(rev), "%lld", (long long)new_rev);
    if (x->new_rs) {
        int64_t cur = revision_of(x->new_rs->json);
        int64_t min_ready = ks_jint(x->dj, "spec.minReadySeconds", 0);
        /* a copy only when it would differ (else ctrl_commit would drop it as equal) */
        json_t *copy = cur < new_rev || json_integer_value(ks_jget(x->new_rs->json,
                                                                   "spec.minReadySeconds")) != min_ready
                           ? ks_obj_copy(x->new_rs->json)
                           : NULL;
        if (copy && cur < new_rev) {
            if (cur > 0) {
                const char *hist = annotation(copy, REVISION_HISTORY_ANN);
                char h[512];
                snprintf(h, sizeof(h), "%s%s%lld", hist ? hist : "", hist ? "," : "", (long long)cur);
                set_annotation(copy, REVISION_HISTORY_ANN, h);
            }
            set_annotation(copy, REVISION_ANN, rev);
        }
        if (copy && json_integer_value(ks_jget(copy, "spec.minReadySeconds")) != min_ready) {
            ks_jcow(copy, "spec");
            ks_jset(copy, "spec.minReadySeconds", json_integer(min_ready));
        }
        if (copy)
            ctrl_commit(x->c, x->new_rs, copy);
        set_annotation(x->dj, REVISION_ANN, annotation(x->new_rs->json, REVISION_ANN) ?: rev);
        if (json_is_integer(ks_jget(x->dj, "spec.progressDeadlineSeconds")) &&
            !dep_condition(status, "Progressing")) {
            char msg[400];
            snprintf(msg, sizeof(msg), "Found new replica set \"%s\"", x->new_rs->name);
            dep_set_condition(status, "Progressing", "True", "FoundNewReplicaSet", msg, NULL);
            x->d->progress_ms = ks_now_ms();
        }
        return;
    }
    if (!create)
        return;
    /* create the new ReplicaSet */
    {
        /* the Deployment's template, but for the labels (the hash label goes there): a
         * copy of the path to them, the rest (spec above all) shared, so that this
         * template and the Deployment's compare equal at their spec's pointer */
        json_t *tmpl = json_copy(ks_jget(x->dj, "spec.template"));
        int64_t collisions = ks_jint(x->dj, "status.collisionCount", 0);
        char hash[32], name[300];
        json_t *rs, *sel, *ann, *dann, *v;
        const char *k;
        int n;
        ks_time_format(0, buf, sizeof(buf));
        ks_ctrl_template_hash(tmpl, collisions, hash, sizeof(hash));
        snprintf(name, sizeof(name), "%s-%s", x->d->name, hash);
        if (ks_store_get(x->c->st, KS_REPLICASET, x->d->ns, name)) {
            /* a hash collision: count it and retry on the next sync */
            ks_jset(x->dj, "status.collisionCount", json_integer(collisions + 1));
            json_decref(tmpl);
            ctrl_enqueue(x->c, x->d);
            return;
        }
        ks_jcow(ks_jcow(tmpl, "metadata"), "labels");
        ks_jset(tmpl, "metadata.labels." HASH_LABEL, json_string(hash));
        sel = ks_json_copy(ks_jget(x->dj, "spec.selector"));
        ks_jset(sel, "matchLabels." HASH_LABEL, json_string(hash));
        ann = json_object();
        dann = ks_jget(x->dj, "metadata.annotations");
        json_object_foreach(dann, k, v) {
            if (strcmp(k, "kubectl.kubernetes.io/last-applied-configuration") == 0 ||
                strcmp(k, REVISION_ANN) == 0 || strcmp(k, REVISION_HISTORY_ANN) == 0 ||
                strcmp(k, DESIRED_ANN) == 0 || strcmp(k, MAX_ANN) == 0)
                continue;
            json_object_set(ann, k, v);
        }
        json_object_set_new(ann, REVISION_ANN, json_string(rev));
        snprintf(buf, sizeof(buf), "%d", x->replicas);
        json_object_set_new(ann, DESIRED_ANN, json_string(buf));
        snprintf(buf, sizeof(buf), "%d", x->replicas + x->surge);
        json_object_set_new(ann, MAX_ANN, json_string(buf));
        if (json_is_object(ks_jget(tmpl, "metadata.labels")) && json_is_object(sel)) {
            /* what the json_pack below makes of these (stored strings, literals), in its order */
            json_t *meta = json_object(), *spec = json_object();
            rs = json_object();
            json_object_set_new_nocheck(rs, "apiVersion", json_string_nocheck("apps/v1"));
            json_object_set_new_nocheck(rs, "kind", json_string_nocheck("ReplicaSet"));
            json_object_set_new_nocheck(meta, "name", json_string(name));
            json_object_set_new_nocheck(meta, "namespace", json_string(x->d->ns));
            json_object_set_nocheck(meta, "labels", ks_jget(tmpl, "metadata.labels"));
            json_object_set_new_nocheck(meta, "annotations", ann);
            json_object_set_new_nocheck(meta, "ownerReferences",
                                        owner_refs("Deployment", x->d->name,
                                                   ks_jstr(x->dj, "metadata.uid") ?: ""));
            json_object_set_new_nocheck(meta, "generation", json_integer(1));
            json_object_set_new_nocheck(rs, "metadata", meta);
            json_object_set_new_nocheck(spec, "replicas", json_integer(0));
            json_object_set_new_nocheck(spec, "minReadySeconds",
                                        json_integer((int)ks_jint(x->dj, "spec.minReadySeconds", 0)));
            json_object_set_new_nocheck(spec, "selector", sel);
            json_object_set_new_nocheck(spec, "template", tmpl);
            json_object_set_new_nocheck(rs, "spec", spec);
        } else {
            rs = json_pack("{s:s, s:s, s:{s:s, s:s, s:O, s:o, s:[{s:s, s:s, s:s, s:s, s:b, s:b}], s:i},"
                           " s:{s:i, s:i, s:o, s:o}}",
                           "apiVersion", "apps/v1", "kind", "ReplicaSet", "metadata", "name", name,
                           "namespace", x->d->ns, "labels", ks_jget(tmpl, "metadata.labels"),
                           "annotations", ann, "ownerReferences", "apiVersion", "apps/v1", "kind",
                           "Deployment", "name", x->d->name, "uid", ks_jstr(x->dj, "metadata.uid") ?: "",
                           "controller", 1, "blockOwnerDeletion", 1, "generation", 1, "spec",
                           "replicas", 0, "minReadySeconds",
                           (int)ks_jint(x->dj, "spec.minReadySeconds", 0), "selector", sel,
                           "template", tmpl);
        }
        /* NewRSNewReplicas: Recreate creates it only once the old pods are gone, at full size */
        if (strcmp(ks_jstr(x->dj, "spec.strategy.type") ?: "RollingUpdate", "Recreate") == 0) {
            n = x->replicas;
        } else {
            int current = sum_spec(x->old, x->nold);
            int max_total = x->replicas + x->surge;
            n = current >= max_total ? 0 : max_total - current;
            if (n > x->replicas)
                n = x->replicas;
        }
        ks_jset(rs, "spec.replicas", json_integer(n));
        ks_jset(rs, "status", json_pack("{s:i}", "replicas", 0));
        x->new_rs = ks_store_put(x->c->st, KS_REPLICASET, rs);
        ks_store_link(x->d, x->new_rs);
        if (n > 0) { /* getNewReplicaSet: only "if !alreadyExists && newReplicasCount > 0" */
            char msg[512];
            snprintf(msg, sizeof(msg), "Scaled up replica set %s from 0 to %d", name, n);
            ctrl_event(x->c, x->dj, "Normal", "ScalingReplicaSet", msg, "deployment-controller");
        }
        set_annotation(x->dj, REVISION_ANN, rev);
        if (json_is_integer(ks_jget(x->dj, "spec.progressDeadlineSeconds"))) {
            char msg[400];
            snprintf(msg, sizeof(msg), "Created new replica set \"%s\"", name);
            dep_set_condition(status, "Progressing", "True", "NewReplicaSetCreated", msg, NULL);
            x->d->progress_ms = ks_now_ms();
        }
    }
}

static int dep_complete(dep_ctx_t *x, const json_t *st)
{
    return ks_jint(st, "updatedReplicas", 0) == x->replicas &&
           ks_jint(st, "replicas", 0) == x->replicas &&
           ks_jint(st, "availableReplicas", 0) == x->replicas &&
           ks_jint(st, "observedGeneration", 0) >= ks_jint(x->dj, "metadata.generation", 1);
}

static int dep_progressing(const json_t *old, const json_t *st)
{
    int64_t old_old = ks_jint(old, "replicas", 0) - ks_jint(old, "updatedReplicas", 0);
    int64_t new_old = ks_jint(st, "replicas", 0) - ks_jint(st, "updatedReplicas", 0);

    return ks_jint(st, "updatedReplicas", 0) > ks_jint(old, "updatedReplicas", 0) ||
           new_old < old_old || ks_jint(st, "readyReplicas", 0) > ks_jint(old, "readyReplicas", 0) ||
           ks_jint(st, "availableReplicas", 0) > ks_jint(old, "availableReplicas", 0);
}

static int64_t dep_deadline_ms(dep_ctx_t *x)
{
    return ctrl_real(x->c, (double)ks_jint(x->dj, "spec.progressDeadlineSeconds", 600) * 1000.0);
}

static int dep_timed_out(dep_ctx_t *x, const json_t *st)
{
    json_t *cd = dep_condition(st, "Progressing");
    const char *reason;
    int64_t from;

    if (!json_is_integer(ks_jget(x->dj, "spec.progressDeadlineSeconds")) || !cd)
        return 0;
    reason = ks_jstr(cd, "reason") ?: "";
    if (strcmp(reason, "NewReplicaSetAvailable") == 0)
        return 0;
    if (strcmp(reason, "ProgressDeadlineExceeded") == 0)
        return 1;
    from = x->d->progress_ms ? x->d->progress_ms : ks_time_parse(ks_jstr(cd, "lastUpdateTime"));
    return from + dep_deadline_ms(x) < ks_now_ms();
}

static int max_unavailable(dep_ctx_t *x)
{
    if (strcmp(ks_jstr(x->dj, "spec.strategy.type") ?: "RollingUpdate", "RollingUpdate") != 0 ||
        x->replicas == 0)
        return 0;
    return x->unavailable > x->replicas ? x->replicas : x->unavailable;
}

/* calculateStatus + syncRolloutStatus; writes the deployment when it changed. */
static void dep_sync_status(dep_ctx_t *x, int rollout)
{
    ks_obj_t **all = malloc((x->nold + 2) * sizeof(*all));
    size_t n = 0;
    json_t *old_status = json_object_get(x->d->json, "status");
    /* x->dj's status is its own (a copy of one level, or a new object: sync_deployment,
     * dep_rolling's probe), so it is changed in place */
    json_t *st = json_object_get(x->dj, "status");
    int available, total_spec, unavail;

    if (json_is_object(st)) {
        json_incref(st);
    } else {
        st = json_object();
    }
    for (size_t i = 0; i < x->nold; i++)
        all[n++] = x->old[i];
    if (x->new_rs)
        all[n++] = x->new_rs;
    available = sum_status(all, n, "availableReplicas");
    total_spec = sum_spec(all, n);
    unavail = total_spec - available;
    if (unavail < 0)
        unavail = 0;
    json_object_set_new_nocheck(st, "observedGeneration", json_integer(ks_jint(x->dj, "metadata.generation", 1)));
#define SET_OR_DEL(key, val)                                                                       \
    do {                                                                                           \
        int v_ = (val);                                                                            \
        if (v_)                                                                                    \
            json_object_set_new_nocheck(st, key, json_integer(v_));                                \
        else                                                                                       \
            json_object_del(st, key);                                                              \
    } while (0)
    SET_OR_DEL("replicas", sum_status(all, n, "replicas"));
    SET_OR_DEL("updatedReplicas", x->new_rs ? status_int(x->new_rs->json, "replicas") : 0);
    SET_OR_DEL("readyReplicas", sum_status(all, n, "readyReplicas"));
    SET_OR_DEL("availableReplicas", available);
    SET_OR_DEL("unavailableReplicas", unavail);
#undef SET_OR_DEL
    if (available >= x->replicas - max_unavailable(x))
        dep_set_condition(st, "Available", "True", "MinimumReplicasAvailable",
                          "Deployment has minimum availability.", NULL);
    else
        dep_set_condition(st, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", NULL);
    if (rollout) {
        json_t *cur = dep_condition(st, "Progressing");
        int has_deadline = json_is_integer(ks_jget(x->dj, "spec.progressDeadlineSeconds"));
        int complete_before = ks_jint(st, "replicas", 0) == ks_jint(st, "updatedReplicas", 0) && cur &&
                              strcmp(ks_jstr(cur, "reason") ?: "", "NewReplicaSetAvailable") == 0;
        char msg[400];
        if (!has_deadline)
            dep_remove_condition(st, "Progressing");
        if (has_deadline && !complete_before) {
            if (dep_complete(x, st)) {
                if (x->new_rs) {
                    snprintf(msg, sizeof(msg), "ReplicaSet \"%s\" has successfully progressed.", x->new_rs->name);
                    dep_set_condition(st, "Progressing", "True", "NewReplicaSetAvailable", msg, NULL);
                }
            } else if (dep_progressing(old_status, st)) {
                json_t *keep = NULL;
                snprintf(msg, sizeof(msg), "ReplicaSet \"%s\" is progressing.", x->new_rs ? x->new_rs->name : "");
                cur = dep_condition(st, "Progressing");
                if (cur && strcmp(ks_jstr(cur, "status") ?: "", "True") == 0)
                    keep = json_incref(json_object_get(cur, "lastTransitionTime"));
                dep_remove_condition(st, "Progressing");
                dep_set_condition(st, "Progressing", "True", "ReplicaSetUpdated", msg, NULL);
                if (keep)
                    json_object_set_new_nocheck(dep_condition(st, "Progressing"), "lastTransitionTime", keep);
                x->d->progress_ms = ks_now_ms();
            } else if (dep_timed_out(x, st)) {
                snprintf(msg, sizeof(msg), "ReplicaSet \"%s\" has timed out progressing.", x->new_rs ? x->new_rs->name : "");
                dep_set_condition(st, "Progressing", "False", "ProgressDeadlineExceeded", msg, NULL);
                ctrl_event(x->c, x->dj, "Warning", "ProgressDeadlineExceeded", msg, "deployment-controller");
            }
        }
    }
    json_object_set_new_nocheck(x->dj, "status", st);
    /* requeueStuckDeployment */
    {
        json_t *cur = dep_condition(st, "Progressing");
        if (rollout && cur && !dep_complete(x, st) &&
            strcmp(ks_jstr(cur, "reason") ?: "", "ProgressDeadlineExceeded") != 0 &&
            json_is_integer(ks_jget(x->dj, "spec.progressDeadlineSeconds"))) {
            int64_t from = x->d->progress_ms ? x->d->progress_ms : ks_now_ms();
            ctrl_timer(x->c, x->d, from + dep_deadline_ms(x) + 1);
        }
    }
    free(all);
}

static void dep_cleanup(dep_ctx_t *x)
{
    int64_t limit;
    ks_obj_t **cand;
    size_t n = 0;

    if (!json_is_integer(ks_jget(x->dj, "spec.revisionHistoryLimit")))
        return;
    limit = ks_jint(x->dj, "spec.revisionHistoryLimit", 10);
    if ((int64_t)x->nold <= limit)
        return;
    cand = malloc((x->nold + 1) * sizeof(*cand));
    for (size_t i = 0; i < x->nold; i++)
        cand[n++] = x->old[i];
    qsort(cand, n, sizeof(*cand), rs_cmp_revision);
    for (size_t i = 0; i < n - (size_t)limit; i++) {
        json_t *r = cand[i]->json;
        if (status_int(r, "replicas") != 0 || spec_replicas(r) != 0 ||
            ks_jint(r, "metadata.generation", 1) > ks_jint(r, "status.observedGeneration", 0))
            continue;
        /* delete the ReplicaSet with its pods (none should be left) */
        while (cand[i]->nkids > 0)
            ks_store_delete(x->c->st, cand[i]->kids[0]);
        ks_store_delete(x->c->st, cand[i]);
    }
    free(cand);
    dep_classify(x);
}

static int rs_desired_differs(dep_ctx_t *x)
{
    ks_obj_t *rss[2];

    for (size_t i = 0; i <= x->nold; i++) {
        ks_obj_t *rs = i < x->nold ? x->old[i] : x->new_rs;
        const char *ann;
        if (!rs || spec_replicas(rs->json) == 0)
            continue;
        ann = annotation(rs->json, DESIRED_ANN);
        if (ann && atoi(ann) != x->replicas)
            return 1;
    }
    (void)rss;
    return 0;
}

/* dc.scale: keep the sum of the active ReplicaSets in line with spec.replicas. */
static void dep_scale(dep_ctx_t *x)
{
    ks_obj_t *active[256];
    size_t na = 0;
    int total, allowed, to_add, added = 0;

    for (size_t i = 0; i <= x->nold; i++) {
        ks_obj_t *rs = i < x->nold ? x->old[i] : x->new_rs;
        if (rs && spec_replicas(rs->json) > 0 && na < 256)
            active[na++] = rs;
    }
    if (na <= 1) {
        ks_obj_t *rs = na ? active[0] : x->new_rs;
        if (!rs && x->nold)
            rs = x->old[x->nold - 1];
        if (rs)
            scale_rs(x, rs, x->replicas);
        return;
    }
    if (x->new_rs && spec_replicas(x->new_rs->json) == x->replicas &&
        status_int(x->new_rs->json, "availableReplicas") == x->replicas) {
        for (size_t i = 0; i < x->nold; i++)
            if (spec_replicas(x->old[i]->json) > 0)
                scale_rs(x, x->old[i], 0);
        return;
    }
    total = 0;
    for (size_t i = 0; i < na; i++)
        total += spec_replicas(active[i]->json);
    allowed = x->replicas + x->surge;
    to_add = allowed - total;
    for (size_t i = 0; i < na; i++) {
        int cur = spec_replicas(active[i]->json);
        int share = total ? (int)lround((double)cur * to_add / total) : 0;
        if (i == na - 1)
            share = to_add - added;
        added += share;
        if (cur + share < 0)
            share = -cur;
        scale_rs(x, active[i], cur + share);
    }
}

static void dep_rolling(dep_ctx_t *x)
{
    ks_obj_t **all;
    size_t n = 0;
    int changed = 0;

    dep_sync_revision(x, 1);
    if (!x->new_rs) {
        dep_sync_status(x, 1);
        return;
    }
    all = malloc((x->nold + 2) * sizeof(*all));
    for (size_t i = 0; i < x->nold; i++)
        all[n++] = x->old[i];
    all[n++] = x->new_rs;
    /* reconcileNewReplicaSet */
    {
        int cur = spec_replicas(x->new_rs->json);
        if (cur > x->replicas) {
            scale_rs(x, x->new_rs, x->replicas);
            changed = 1;
        } else if (cur < x->replicas) {
            int current = sum_spec(all, n), max_total = x->replicas + x->surge;
            if (current < max_total) {
                int up = max_total - current;
                if (up > x->replicas - cur)
                    up = x->replicas - cur;
                scale_rs(x, x->new_rs, cur + up);
                changed = 1;
            }
        }
    }
    /* reconcileOldReplicaSets */
    if (!changed && sum_spec(x->old, x->nold) > 0) {
        int all_pods = sum_spec(all, n);
        int min_available = x->replicas - max_unavailable(x);
        int new_unavail = spec_replicas(x->new_rs->json) - status_int(x->new_rs->json, "availableReplicas");
        int max_scaled_down = all_pods - min_available - new_unavail;
        if (max_scaled_down > 0) {
            int cleaned = 0;
            qsort(x->old, x->nold, sizeof(*x->old), rs_cmp_created);
            /* cleanupUnhealthyReplicas */
            for (size_t i = 0; i < x->nold && cleaned < max_scaled_down; i++) {
                int r = spec_replicas(x->old[i]->json), av = status_int(x->old[i]->json, "availableReplicas");
                if (r == 0 || r == av)
                    continue;
                int down = max_scaled_down - cleaned;
                if (down > r - av)
                    down = r - av;
                scale_rs(x, x->old[i], r - down);
                cleaned += down;
                changed = 1;
            }
            /* scaleDownOldReplicaSetsForRollingUpdate */
            int avail = sum_status(all, n, "availableReplicas");
            if (avail > min_available) {
                int total_down = avail - min_available, done = 0;
                for (size_t i = 0; i < x->nold && done < total_down; i++) {
                    int r = spec_replicas(x->old[i]->json);
                    if (r == 0)
                        continue;
                    int down = total_down - done < r ? total_down - done : r;
                    scale_rs(x, x->old[i], r - down);
                    done += down;
                    changed = 1;
                }
            }
        }
    }
    free(all);
    if (!changed) {
        json_t *probe = json_copy(json_object_get(x->dj, "status"));
        dep_sync_status(x, 0);
        if (dep_complete(x, json_object_get(x->dj, "status")))
            dep_cleanup(x);
        json_object_set_new_nocheck(x->dj, "status", probe ? probe : json_object());
    }
    dep_sync_status(x, 1);
}

static void dep_recreate(dep_ctx_t *x)
{
    int scaled = 0, running = 0;

    dep_sync_revision(x, 0);
    for (size_t i = 0; i < x->nold; i++) {
        if (spec_replicas(x->old[i]->json) > 0) {
            scale_rs(x, x->old[i], 0);
            scaled = 1;
        }
    }
    if (scaled) {
        dep_sync_status(x, 1);
        return;
    }
    for (size_t i = 0; i < x->nold; i++)
        for (size_t k = 0; k < x->old[i]->nkids; k++)
            if (pod_active(x->old[i]->kids[k]))
                running = 1;
    if (running) {
        dep_sync_status(x, 1);
        return;
    }
    if (!x->new_rs)
        dep_sync_revision(x, 1);
    if (x->new_rs && spec_replicas(x->new_rs->json) != x->replicas)
        scale_rs(x, x->new_rs, x->replicas);
    {
        json_t *probe = json_copy(json_object_get(x->dj, "status"));
        dep_sync_status(x, 0);
        if (dep_complete(x, json_object_get(x->dj, "status")))
            dep_cleanup(x);
        json_object_set_new_nocheck(x->dj, "status", probe ? probe : json_object());
    }
    dep_sync_status(x, 1);
}

static void sync_deployment(ks_ctrl_t *c, ks_obj_t *d)
{
    dep_ctx_t x;

    memset(&x, 0, sizeof(x));
    x.c = c;
    x.d = d;
    /* the working copy: status and annotations change, spec is shared with d; status is a
     * copy of one level (each change of it replaces a member: conditions are written as a
     * new array, a changed condition as a new object), so members are shared with d */
    x.dj = ks_obj_copy(d->json);
    if (json_is_object(json_object_get(x.dj, "status")))
        json_object_set_new_nocheck(x.dj, "status", json_copy(json_object_get(x.dj, "status")));
    else
        json_object_set_new_nocheck(x.dj, "status", json_object());
    x.replicas = spec_replicas(d->json);
    if (strcmp(ks_jstr(d->json, "spec.strategy.type") ?: "RollingUpdate", "RollingUpdate") == 0)
        ks_ctrl_fenceposts(ks_jget(d->json, "spec.strategy.rollingUpdate"), x.replicas, &x.surge,
                           &x.unavailable);
    dep_classify(&x);
    if (json_is_true(ks_jget(d->json, "spec.paused"))) {
        dep_sync_revision(&x, 0);
        if (rs_desired_differs(&x))
            dep_scale(&x);
        dep_sync_status(&x, 0);
        if (json_is_integer(ks_jget(x.dj, "spec.progressDeadlineSeconds")))
            dep_set_condition(json_object_get(x.dj, "status"), "Progressing", "Unknown",
                              "DeploymentPaused", "Deployment is paused", NULL);
    } else {
        json_t *cur = dep_condition(json_object_get(x.dj, "status"), "Progressing");
        if (cur && strcmp(ks_jstr(cur, "reason") ?: "", "DeploymentPaused") == 0) {
            dep_set_condition(json_object_get(x.dj, "status"), "Progressing", "Unknown",
                              "DeploymentResumed", "Deployment is resumed", NULL);
            d->progress_ms = ks_now_ms();
        }
        if (rs_desired_differs(&x) && x.new_rs) {
            dep_sync_revision(&x, 0);
            dep_scale(&x);
            dep_sync_status(&x, 0);
        } else if (strcmp(ks_jstr(d->json, "spec.strategy.type") ?: "RollingUpdate", "Recreate") == 0) {
            dep_recreate(&x);
        } else {
            dep_rolling(&x);
        }
    }
    ctrl_commit(c, d, x.dj);
    free(x.old);
}

/* ---- the loop ---- */

static void ctrl_on_change(void *cls, ks_obj_t *o, ks_event_type_t type)
{
    ks_ctrl_t *c = cls;
    json_t *refs, *ref;
    size_t i;

    if (type == KS_EV_DELETED) {
        if ((o->kind == KS_POD || o->kind == KS_REPLICASET) && o->owner)
            ctrl_enqueue(c, o->owner);
        return;
    }
    if (type == KS_EV_ADDED && !o->owner && (o->kind == KS_POD || o->kind == KS_REPLICASET)) {
        refs = ks_jget(o->json, "metadata.ownerReferences");
        json_array_foreach(refs, i, ref) {
            ks_kind_t ok = o->kind == KS_POD ? KS_REPLICASET : KS_DEPLOYMENT;
            ks_obj_t *owner;
            if (!json_is_true(json_object_get(ref, "controller")) ||
                strcmp(ks_jstr(ref, "kind") ?: "", ks_kinds[ok].kind) != 0)
                continue;
            owner = ks_store_get(c->st, ok, o->ns, ks_jstr(ref, "name") ?: "");
            if (owner && strcmp(ks_jstr(owner->json, "metadata.uid") ?: "", ks_jstr(ref, "uid") ?: "") == 0)
                ks_store_link(owner, o);
        }
    }
    switch (o->kind) {
    case KS_DEPLOYMENT:
        ctrl_enqueue(c, o);
        break;
    case KS_REPLICASET:
        ctrl_enqueue(c, o);
        ctrl_enqueue(c, o->owner);
        break;
    case KS_POD:
        if (type == KS_EV_ADDED && !o->sim)
            ctrl_enqueue(c, o);
        ctrl_enqueue(c, o->owner);
        break;
    case KS_EVENT:
        /* every write renews the Event's time to live, as the API server's lease does */
        if (c->event_ttl_ms > 0) {
            o->expire_ms = ks_now_ms() + ctrl_real(c, (double)c->event_ttl_ms);
            ctrl_timer(c, o, o->expire_ms);
        }
        break;
    default:
        break;
    }
}

static void ctrl_sync(ks_ctrl_t *c, ctrl_item_t *it)
{
    ks_obj_t *o = ks_store_get(c->st, it->kind, it->ns, it->name);

    if (!o)
        return;
    o->queued = 0;
    switch (o->kind) {
    case KS_DEPLOYMENT:
        sync_deployment(c, o);
        break;
    case KS_REPLICASET:
        sync_replicaset(c, o);
        break;
    case KS_POD:
        sync_pod(c, o);
        break;
    case KS_EVENT:
        /* a timer of an older write finds the expiry moved on */
        if (o->expire_ms > 0 && o->expire_ms <= ks_now_ms())
            ks_store_delete(c->st, o);
        break;
    default:
        break;
    }
}

static void *ctrl_main(void *arg)
{
    ks_ctrl_t *c = arg;

    rf_log_ctx_set("thread", "controller");
    ks_store_lock(c->st);
    while (!c->stop) {
        int64_t now = ks_now_ms();
        int done = 0;
        while (c->hlen > 0 && c->heap[0].due <= now) {
            ctrl_item_t t = heap_pop(c);
            ks_obj_t *o = ks_store_get(c->st, t.kind, t.ns, t.name);
            if (o)
                ctrl_enqueue(c, o);
            free(t.ns);
            free(t.name);
        }
        while (c->qlen > 0 && done < CTRL_BATCH) {
            ctrl_item_t it = c->q[c->qhead];
            c->qhead = (c->qhead + 1) % c->qcap;
            c->qlen--;
            ctrl_sync(c, &it);
            free(it.ns);
            free(it.name);
            done++;
        }
        if (done) {
            /* let the API threads in between batches */
            ks_store_unlock(c->st);
            ks_store_lock(c->st);
            continue;
        }
        if (c->qlen == 0) {
            struct timespec ts;
            int64_t until = c->hlen ? c->heap[0].due : ks_now_ms() + 1000;
            ts.tv_sec = until / 1000;
            ts.tv_nsec = (until % 1000) * 1000000;
            pthread_cond_timedwait(&c->wake, &c->st->lock, &ts);
        }
    }
    ks_store_unlock(c->st);
    return NULL;
}

ks_ctrl_t *ks_ctrl_new(ks_store_t *st, const ks_rules_t *rules, double scale)
{
    ks_ctrl_t *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->st = st;
    c->rules = rules;
    c->scale = scale > 0 ? scale : 1;
    c->event_ttl_ms = KS_EVENT_TTL_DEFAULT_MS;
    c->seen = ks_lru_new(EVENT_CACHE); /* NULL: every event is a new one */
    pthread_cond_init(&c->wake, NULL);
    st->on_change = ctrl_on_change;
    st->on_change_cls = c;
    return c;
}

void ks_ctrl_set_event_ttl(ks_ctrl_t *c, int64_t ttl_ms)
{
    c->event_ttl_ms = ttl_ms > 0 ? ttl_ms : 0;
}

int ks_ctrl_start(ks_ctrl_t *c)
{
    if (pthread_create(&c->thread, NULL, ctrl_main, c) != 0)
        return -1;
    c->started = 1;
    return 0;
}

void ks_ctrl_stop(ks_ctrl_t *c)
{
    if (!c || !c->started)
        return;
    ks_store_lock(c->st);
    c->stop = 1;
    pthread_cond_signal(&c->wake);
    ks_store_unlock(c->st);
    pthread_join(c->thread, NULL);
    c->started = 0;
}

void ks_ctrl_destroy(ks_ctrl_t *c)
{
    if (!c)
        return;
    ks_ctrl_stop(c);
    c->st->on_change = NULL;
    for (size_t i = 0; i < c->qlen; i++) {
        free(c->q[(c->qhead + i) % c->qcap].ns);
        free(c->q[(c->qhead + i) % c->qcap].name);
    }
    free(c->q);
    for (size_t i = 0; i < c->hlen; i++) {
        free(c->heap[i].ns);
        free(c->heap[i].name);
    }
    free(c->heap);
    ks_lru_free(c->seen);
    for (size_t i = 0; i < c->nev_shared; i++) {
        json_decref(c->ev_shared[i].str);
        json_decref(c->ev_shared[i].source);
    }
    pthread_cond_destroy(&c->wake);
    free(c);
}

json_t *ks_ctrl_pod_logs(ks_ctrl_t *c, ks_obj_t *pod, const char *container, int previous,
                         char *errstr, size_t errstr_size)
{
    json_t *containers = ks_jget(pod->json, "spec.containers"), *ct, *out;
    size_t i, idx = 0;
    int found = 0;
    ks_cstate_t cs;
    const ks_rule_t *rule;

    json_array_foreach(containers, i, ct) {
        if (!container || strcmp(ks_jstr(ct, "name") ?: "", container) == 0) {
            idx = i;
            found = 1;
            break;
        }
    }
    if (!found || !pod->sim) {
        snprintf(errstr, errstr_size, "container %s is not valid for pod %s", container ? container : "", pod->name);
        return NULL;
    }
    rule = idx < pod->sim->nrules ? pod->sim->rules[idx] : pod->sim->rules[0];
    ks_rules_state(rule, pod_age(c, pod, ks_now_ms()), &cs);
    if (previous && cs.restarts == 0) {
        snprintf(errstr, errstr_size, "previous terminated container \"%s\" in pod \"%s\" not found",
                 ks_jstr(json_array_get(containers, idx), "name") ?: "", pod->name);
        return NULL;
    }
    if (!cs.running && cs.restarts == 0) {
        snprintf(errstr, errstr_size, "container \"%s\" in pod \"%s\" is waiting to start: %s",
                 ks_jstr(json_array_get(containers, idx), "name") ?: "", pod->name,
                 strcmp(cs.waiting, "ImagePullBackOff") == 0 || strcmp(cs.waiting, "ErrImagePull") == 0
                     ? "trying and failing to pull image"
                     : cs.waiting);
        return NULL;
    }
    out = json_array();
    for (size_t k = 0; k < rule->nlogs; k++)
        json_array_append_new(out, json_string(rule->logs[k]));
    return out;
}
