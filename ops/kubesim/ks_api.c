/* The Kubernetes REST API of kubesim: get, list, watch, create, update, patch, apply, delete. */
#include "ks_api.h"
#include "ks_discovery.h"
#include "ks_patch.h"
#include "ks_print.h"
#include "ks_proto.h"
#include "ks_schema.h"
#include "ks_sel.h"
#include "ks_validate.h"
#include "rf_log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_BODY_MAX (3 * 1024 * 1024)
#define RBAC_GROUP "rbac.authorization.k8s.io"
#define WATCH_BOOKMARK_MS 10000
#define WATCH_PENDING_MAX (4 * 1024 * 1024)

struct ks_api {
    ks_store_t *st;
    ks_ctrl_t *ctrl;
    char address[64];
    pthread_mutex_t applies_lock;
    json_t *applies;
    unsigned next_cluster_ip;
    const ks_schema_t *schema;
};

struct ks_watch {
    ks_api_t *api;
    ks_kind_t kind;
    char *ns;
    ks_sel_t *labels, *fields;
    uint64_t last_rv;
    int table, bookmarks, ended, sent_columns;
    int64_t deadline_ms, next_bookmark_ms;
    char *include_object;
    rf_buf_t pending;
    size_t pending_off;
};

typedef struct route {
    int group_ok;
    ks_kind_t kind;
    const char *ns; /* NULL: every namespace */
    char *name;
    char *sub;
    char nsbuf[256];
} route_t;

/* ---- statuses ---- */

void ks_api_status(ks_resp_t *resp, int code, const char *reason, const char *message,
                   json_t *details)
{
    json_t *s = json_pack("{s:s, s:s, s:{}, s:s, s:s, s:s, s:i}", "kind", "Status", "apiVersion",
                          "v1", "metadata", "status", "Failure", "message", message, "reason",
                          reason, "code", code);
    char *txt;

    if (details)
        json_object_set_new(s, "details", details);
    txt = json_dumps(s, JSON_COMPACT);
    rf_buf_reset(&resp->body);
    rf_buf_adds(&resp->body, txt ? txt : "{}");
    free(txt);
    json_decref(s);
    resp->status = code;
    resp->content_type = "application/json";
}

static json_t *details_for(ks_kind_t kind, const char *name)
{
    json_t *d = json_pack("{s:s, s:s}", "name", name ? name : "", "kind", ks_kinds[kind].resource);

    if (*ks_kinds[kind].group)
        json_object_set_new(d, "group", json_string(ks_kinds[kind].group));
    return d;
}

/* "deployments.apps" or "pods" */
static void qualified(ks_kind_t kind, char *out, size_t n)
{
    if (*ks_kinds[kind].group)
        snprintf(out, n, "%s.%s", ks_kinds[kind].resource, ks_kinds[kind].group);
    else
        snprintf(out, n, "%s", ks_kinds[kind].resource);
}

static void status_not_found(ks_resp_t *resp, ks_kind_t kind, const char *name)
{
    char q[64], msg[512];

    qualified(kind, q, sizeof(q));
    snprintf(msg, sizeof(msg), "%s \"%s\" not found", q, name);
    ks_api_status(resp, 404, "NotFound", msg, details_for(kind, name));
}

void ks_api_respond_json(ks_resp_t *resp, int code, const json_t *j)
{
    rf_buf_reset(&resp->body);
    if (!j || ks_json_append(&resp->body, j) != 0) {
        rf_buf_reset(&resp->body);
        rf_buf_adds(&resp->body, "{}");
    }
    resp->status = code;
    resp->content_type = "application/json";
}

/* Store lock held. ks_api_respond_json of a stored object (ks_store_append_stored). */
static void respond_stored(ks_api_t *api, ks_resp_t *resp, int code, const json_t *j)
{
    rf_buf_reset(&resp->body);
    if (ks_store_append_stored(api->st, &resp->body, j) != 0) {
        rf_buf_reset(&resp->body);
        rf_buf_adds(&resp->body, "{}");
    }
    resp->status = code;
    resp->content_type = "application/json";
}

/* ---- routing ---- */

static int kind_by_resource(const char *group, const char *res, ks_kind_t *kind)
{
    for (int k = 0; k < KS_KIND_COUNT; k++) {
        if (strcmp(ks_kinds[k].resource, res) == 0 && strcmp(ks_kinds[k].group, group) == 0) {
            *kind = (ks_kind_t)k;
            return 0;
        }
    }
    return -1;
}

/* Splits /api/v1/... or /apis/<group>/v1/... of a group served; 0 on success. */
static int api_route(const char *path, route_t *r)
{
    char *copy = strdup(path), *seg[16], *save, *tok;
    int n = 0, i, result = -1;
    const char *group;

    memset(r, 0, sizeof(*r));
    for (tok = strtok_r(copy, "/", &save); tok && n < 16; tok = strtok_r(NULL, "/", &save))
        seg[n++] = tok;
    if (n >= 3 && strcmp(seg[0], "api") == 0 && strcmp(seg[1], "v1") == 0) {
        group = "";
        i = 2;
    } else if (n >= 4 && strcmp(seg[0], "apis") == 0 &&
               ks_api_group_find(seg[1], strlen(seg[1])) && strcmp(seg[2], "v1") == 0) {
        group = ks_api_group_find(seg[1], strlen(seg[1]))->name;
        i = 3;
    } else {
        goto cleanup;
    }
    if (strcmp(seg[i], "namespaces") == 0 && n - i >= 3) {
        snprintf(r->nsbuf, sizeof(r->nsbuf), "%s", seg[i + 1]);
        r->ns = r->nsbuf;
        i += 2;
        if (kind_by_resource(group, seg[i], &r->kind) != 0 || !ks_kinds[r->kind].namespaced)
            goto cleanup;
    } else if (kind_by_resource(group, seg[i], &r->kind) != 0) {
        goto cleanup;
    }
    if (n - i > 3)
        goto cleanup;
    if (n - i >= 2)
        r->name = strdup(seg[i + 1]);
    if (n - i == 3)
        r->sub = strdup(seg[i + 2]);
    if (!ks_kinds[r->kind].namespaced && r->ns)
        goto cleanup;
    result = 0;
cleanup:
    free(copy);
    return result;
}

/* ---- request helpers ---- */

static const char *q(const ks_req_t *req, const char *key)
{
    return req->query ? req->query(req->query_cls, key) : NULL;
}

static int q_true(const ks_req_t *req, const char *key)
{
    const char *v = q(req, key);

    return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

static int wants_table(const ks_req_t *req)
{
    return req->accept && strstr(req->accept, "as=Table") != NULL;
}

/* The field manager: the query parameter, else the user agent up to '/'. */
static void manager_of(const ks_req_t *req, char *out, size_t n)
{
    const char *fm = q(req, "fieldManager");
    size_t len;

    if (fm && *fm) {
        snprintf(out, n, "%s", fm);
        return;
    }
    fm = req->user_agent ? req->user_agent : "unknown";
    len = strcspn(fm, "/");
    snprintf(out, n, "%.*s", (int)len, fm);
}

/* The request's object: JSON, YAML or protobuf (then *code may be 415). */
static json_t *parse_body(const ks_req_t *req, int yaml, char *errstr, size_t n, int *code)
{
    json_error_t jerr;
    json_t *j;

    *code = 400;
    if (!req->body || req->body_len == 0) {
        snprintf(errstr, n, "the body of the request was empty");
        return NULL;
    }
    if (req->content_type && strstr(req->content_type, "application/vnd.kubernetes.protobuf"))
        return ks_proto_decode(req->body, req->body_len, code, errstr, n);
    if (yaml)
        return ks_yaml_parse(req->body, req->body_len, errstr, n);
    j = ks_json_loadb(req->body, req->body_len, &jerr);
    if (!j)
        snprintf(errstr, n, "couldn't get version/kind; json parse error: %s", jerr.text);
    return j;
}

/* ---- defaulting and validation ---- */

static void default_podspec(json_t *spec)
{
    json_t *ct;
    size_t i;

    if (!json_is_object(spec))
        return;
#define DEF(obj, key, val)                                                                         \
    do {                                                                                           \
        if (!json_object_get(obj, key))                                                            \
            json_object_set_new(obj, key, val);                                                    \
    } while (0)
    DEF(spec, "restartPolicy", json_string("Always"));
    DEF(spec, "terminationGracePeriodSeconds", json_integer(30));
    DEF(spec, "dnsPolicy", json_string("ClusterFirst"));
    DEF(spec, "securityContext", json_object());
    DEF(spec, "schedulerName", json_string("default-scheduler"));
    json_array_foreach(json_object_get(spec, "containers"), i, ct) {
        const char *img = ks_jstr(ct, "image");
        json_t *p;
        size_t k;
        if (!json_is_object(ct))
            continue;
        DEF(ct, "terminationMessagePath", json_string("/dev/termination-log"));
        DEF(ct, "terminationMessagePolicy", json_string("File"));
        DEF(ct, "resources", json_object());
        if (img) {
            const char *slash = strrchr(img, '/');
            const char *colon = strrchr(slash ? slash : img, ':');
            int latest = !strchr(img, '@') && (!colon || strcmp(colon, ":latest") == 0);
            DEF(ct, "imagePullPolicy", json_string(latest ? "Always" : "IfNotPresent"));
        }
        json_array_foreach(json_object_get(ct, "ports"), k, p) {
            if (json_is_object(p))
                DEF(p, "protocol", json_string("TCP"));
        }
    }
}

static void api_default(ks_api_t *api, ks_kind_t kind, json_t *o)
{
    json_t *spec = json_object_get(o, "spec");

    switch (kind) {
    case KS_DEPLOYMENT: {
        json_t *strategy;
        if (!json_is_object(spec))
            return;
        DEF(spec, "replicas", json_integer(1));
        DEF(spec, "strategy", json_object());
        strategy = json_object_get(spec, "strategy");
        DEF(strategy, "type", json_string("RollingUpdate"));
        if (strcmp(ks_jstr(strategy, "type") ?: "", "RollingUpdate") == 0) {
            DEF(strategy, "rollingUpdate", json_object());
            DEF(json_object_get(strategy, "rollingUpdate"), "maxSurge", json_string("25%"));
            DEF(json_object_get(strategy, "rollingUpdate"), "maxUnavailable", json_string("25%"));
        }
        DEF(spec, "revisionHistoryLimit", json_integer(10));
        DEF(spec, "progressDeadlineSeconds", json_integer(600));
        default_podspec(ks_jget(spec, "template.spec"));
        /* a template's metadata carries a null creationTimestamp, as the Go types write it */
        if (json_is_object(ks_jget(spec, "template.metadata")))
            json_object_set_new(ks_jget(spec, "template.metadata"), "creationTimestamp", json_null());
        break;
    }
    case KS_REPLICASET:
        if (json_is_object(spec)) {
            DEF(spec, "replicas", json_integer(1));
            default_podspec(ks_jget(spec, "template.spec"));
            if (json_is_object(ks_jget(spec, "template.metadata")))
                json_object_set_new(ks_jget(spec, "template.metadata"), "creationTimestamp", json_null());
        }
        break;
    case KS_POD:
        default_podspec(spec);
        break;
    case KS_INGRESS:
        DEF(o, "status", json_pack("{s:{}}", "loadBalancer"));
        break;
    case KS_SECRET:
        DEF(o, "type", json_string("Opaque"));
        break;
    case KS_PDB:
        /* no disruption controller: the status the API server writes on creation */
        DEF(o, "status", json_pack("{s:i, s:i, s:i, s:i}", "disruptionsAllowed", 0,
                                   "currentHealthy", 0, "desiredHealthy", 0, "expectedPods", 0));
        break;
    case KS_ROLEBINDING:
    case KS_CLUSTERROLEBINDING: {
        json_t *s;
        size_t i;
        if (json_is_object(json_object_get(o, "roleRef")) &&
            !*(ks_jstr(o, "roleRef.apiGroup") ?: ""))
            ks_jset(o, "roleRef.apiGroup", json_string(RBAC_GROUP));
        json_array_foreach(json_object_get(o, "subjects"), i, s) {
            const char *k = ks_jstr(s, "kind") ?: "";
            if (json_is_object(s) && !*(ks_jstr(s, "apiGroup") ?: "") &&
                (strcmp(k, "User") == 0 || strcmp(k, "Group") == 0))
                json_object_set_new(s, "apiGroup", json_string(RBAC_GROUP));
        }
        break;
    }
    case KS_SERVICE: {
        json_t *p;
        size_t i;
        char ip[32];
        if (!json_is_object(spec))
            return;
        DEF(spec, "type", json_string("ClusterIP"));
        DEF(spec, "sessionAffinity", json_string("None"));
        if (!json_object_get(spec, "clusterIP")) {
            api->next_cluster_ip++;
            snprintf(ip, sizeof(ip), "10.96.%u.%u", (api->next_cluster_ip / 250) % 250,
                     api->next_cluster_ip % 250 + 2);
            json_object_set_new(spec, "clusterIP", json_string(ip));
        }
        DEF(spec, "clusterIPs", json_pack("[O]", json_object_get(spec, "clusterIP")));
        DEF(spec, "ipFamilies", json_pack("[s]", "IPv4"));
        DEF(spec, "ipFamilyPolicy", json_string("SingleStack"));
        DEF(spec, "internalTrafficPolicy", json_string("Cluster"));
        json_array_foreach(json_object_get(spec, "ports"), i, p) {
            if (!json_is_object(p))
                continue;
            DEF(p, "protocol", json_string("TCP"));
            if (json_object_get(p, "port"))
                DEF(p, "targetPort", ks_json_copy(json_object_get(p, "port")));
        }
        DEF(o, "status", json_pack("{s:{}}", "loadBalancer"));
        break;
    }
    case KS_NAMESPACE:
        DEF(o, "spec", json_pack("{s:[s]}", "finalizers", "kubernetes"));
        DEF(o, "status", json_pack("{s:s}", "phase", "Active"));
        if (!json_is_object(ks_jget(o, "metadata.labels")))
            ks_jset(o, "metadata.labels", json_object());
        json_object_set_new(ks_jget(o, "metadata.labels"), "kubernetes.io/metadata.name",
                            json_string(ks_jstr(o, "metadata.name") ?: ""));
        break;
    default:
        break;
    }
#undef DEF
}

/* ---- applies log ---- */

static void applies_record(ks_api_t *api, const char *op, const char *manager, const json_t *o)
{
    char ts[64];
    int64_t now = ks_now_ms();
    json_t *images = json_array(), *ct, *rec;
    const json_t *ann = ks_jget(o, "metadata.annotations");
    const char *fence = json_string_value(json_object_get(ann, "relfleet.io/fence"));
    const char *release = json_string_value(json_object_get(ann, "relfleet.io/release"));
    size_t i;

    ks_time_format(now, ts, sizeof(ts));
    snprintf(ts + 19, sizeof(ts) - 19, ".%03dZ", (int)(now % 1000));
    json_array_foreach(ks_jget(o, "spec.template.spec.containers"), i, ct) {
        if (ks_jstr(ct, "image"))
            json_array_append_new(images, json_string(ks_jstr(ct, "image")));
    }
    rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:s}", "time", ts, "namespace",
                    ks_jstr(o, "metadata.namespace") ?: "", "name",
                    ks_jstr(o, "metadata.name") ?: "", "fieldManager", manager, "operation", op,
                    "images", images, "replicas", (json_int_t)ks_jint(o, "spec.replicas", 1),
                    "generation", (json_int_t)ks_jint(o, "metadata.generation", 0),
                    "resourceVersion", ks_jstr(o, "metadata.resourceVersion") ?: "");
    /* Who wrote it, as Relfleet marks its objects: the overlap checks read these. */
    if (fence)
        json_object_set_new(rec, "fence", json_string(fence));
    if (release)
        json_object_set_new(rec, "release", json_string(release));
    pthread_mutex_lock(&api->applies_lock);
    json_array_append_new(api->applies, rec);
    pthread_mutex_unlock(&api->applies_lock);
}

json_t *ks_api_applies(ks_api_t *api)
{
    json_t *out;

    pthread_mutex_lock(&api->applies_lock);
    out = ks_json_copy(api->applies);
    pthread_mutex_unlock(&api->applies_lock);
    return out;
}

/* ---- writes ---- */

/* o as compared for a no-op write: without resourceVersion and the times of its
 * managedFields entries (copies of the path to them only). */
static json_t *without_times(const json_t *o)
{
    json_t *x = ks_obj_copy(o), *mf, *e;
    size_t i;

    json_object_del(json_object_get(x, "metadata"), "resourceVersion");
    mf = ks_jcow(json_object_get(x, "metadata"), "managedFields");
    json_array_foreach(mf, i, e) {
        if (json_is_object(e)) {
            json_t *copy = json_copy(e);
            json_object_del(copy, "time");
            json_array_set_new(mf, i, copy);
        }
    }
    return x;
}

/* json_equal of a and b with the member skip (when not NULL) left out of both. */
static int equal_without(const json_t *a, const json_t *b, const char *skip,
                         int (*member_equal)(const char *, const json_t *, const json_t *))
{
    const char *key;
    json_t *v;
    size_t na = json_object_size(a), nb = json_object_size(b);

    if (skip) {
        na -= json_object_get(a, skip) != NULL;
        nb -= json_object_get(b, skip) != NULL;
    }
    if (na != nb)
        return 0;
    json_object_foreach((json_t *)a, key, v) {
        json_t *bv;
        if (skip && strcmp(key, skip) == 0)
            continue;
        bv = json_object_get(b, key);
        if (!bv || !(member_equal ? member_equal(key, v, bv) : ks_json_equal(v, bv)))
            return 0;
    }
    return 1;
}

/* metadata.managedFields: entries compared without their "time" */
static int managed_equal(const json_t *a, const json_t *b)
{
    size_t i;

    if (!json_is_array(a) || !json_is_array(b))
        return json_equal(a, b);
    if (json_array_size(a) != json_array_size(b))
        return 0;
    for (i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i), *y = json_array_get(b, i);
        if (!(json_is_object(x) && json_is_object(y) ? equal_without(x, y, "time", NULL)
                                                     : json_equal(x, y)))
            return 0;
    }
    return 1;
}

static int meta_member_equal(const char *key, const json_t *a, const json_t *b)
{
    return strcmp(key, "managedFields") == 0 ? managed_equal(a, b) : ks_json_equal(a, b);
}

static int top_member_equal(const char *key, const json_t *a, const json_t *b)
{
    return strcmp(key, "metadata") == 0 ? equal_without(a, b, "resourceVersion", meta_member_equal)
                                        : ks_json_equal(a, b);
}

/* Equal but for the timestamps of managedFields entries, which alone make no write: what
 * json_equal says of the two without_times copies, compared member by member instead
 * (a write's every commit asks). */
static int same_ignoring_times(const json_t *a, const json_t *b)
{
    json_t *x, *y;
    int eq;

    if (json_is_object(a) && json_is_object(b) && json_is_object(json_object_get(a, "metadata")) &&
        json_is_object(json_object_get(b, "metadata")))
        return equal_without(a, b, NULL, top_member_equal);
    x = without_times(a);
    y = without_times(b);
    eq = json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return eq;
}

/* Store lock held. 1 with resp filled (409 Conflict) when meta carries a resourceVersion
 * as a precondition that is not old's, else 0. */
static int stale_precondition(const ks_obj_t *old, const json_t *meta, ks_resp_t *resp)
{
    const char *want_rv = json_string_value(json_object_get(meta, "resourceVersion"));
    char q_[64], msg[512];

    if (!want_rv || !*want_rv ||
        strcmp(want_rv, ks_jstr(old->json, "metadata.resourceVersion") ?: "") == 0)
        return 0;
    qualified(old->kind, q_, sizeof(q_));
    snprintf(msg, sizeof(msg),
             "Operation cannot be fulfilled on %s \"%s\": the object has been modified; "
             "please apply your changes to the latest version and try again",
             q_, old->name);
    ks_api_status(resp, 409, "Conflict", msg, details_for(old->kind, old->name));
    return 1;
}

/* Store lock held. Finishes a write of o (stolen) over old (NULL: create): defaults,
 * validates, keeps what the server owns, stores. Returns the stored object (borrowed)
 * or NULL with resp filled. */
static const json_t *api_commit(ks_api_t *api, ks_kind_t kind, json_t *o, ks_obj_t *old,
                                int status_write, const char *op, const char *manager,
                                json_t **dry_run, ks_fieldval_t fv, ks_resp_t *resp)
{
    json_t *meta;
    const json_t *oldj = old ? old->json : NULL;
    ks_obj_t *stored;

    if (!json_is_object(o)) {
        ks_api_status(resp, 400, "BadRequest", "the object is not a JSON object", NULL);
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "apiVersion", json_string(ks_kinds[kind].api_version));
    json_object_set_new(o, "kind", json_string(ks_kinds[kind].kind));
    meta = json_object_get(o, "metadata");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(o, "metadata", meta);
    }
    if (oldj) {
        if (stale_precondition(old, meta, resp)) {
            json_decref(o);
            return NULL;
        }
        json_object_set(meta, "uid", ks_jget(oldj, "metadata.uid"));
        json_object_set(meta, "creationTimestamp", ks_jget(oldj, "metadata.creationTimestamp"));
        if (ks_jget(oldj, "metadata.ownerReferences") && !json_object_get(meta, "ownerReferences"))
            json_object_set(meta, "ownerReferences", ks_jget(oldj, "metadata.ownerReferences"));
        if (status_write) {
            json_t *st = json_incref(json_object_get(o, "status"));
            json_t *copy = ks_json_copy(oldj);
            if (st)
                json_object_set_new(copy, "status", st);
            json_decref(o);
            o = copy;
            meta = json_object_get(o, "metadata");
        } else if (json_object_get(oldj, "status") && kind != KS_NAMESPACE) {
            json_object_set(o, "status", json_object_get(oldj, "status"));
        }
    } else {
        json_object_del(meta, "uid");
        json_object_del(meta, "creationTimestamp");
        json_object_del(meta, "resourceVersion");
        json_object_del(o, "status");
    }
    json_object_del(meta, "resourceVersion");
    json_object_del(meta, "selfLink");
    if (ks_kinds[kind].namespaced && !json_object_get(meta, "namespace"))
        json_object_set_new(meta, "namespace", json_string("default"));
    else if (!ks_kinds[kind].namespaced)
        json_object_del(meta, "namespace");
    if (ks_decode(api->schema, kind, o, fv, resp) != 0 || ks_convert(kind, o, resp) != 0) {
        json_decref(o);
        return NULL;
    }
    api_default(api, kind, o);
    if (ks_validate(kind, o, oldj, resp) != 0) {
        json_decref(o);
        return NULL;
    }
    if (ks_kinds[kind].has_generation) {
        int64_t gen = oldj ? ks_jint(oldj, "metadata.generation", 1) : 1;
        if (oldj && !ks_json_equal(json_object_get(o, "spec"), json_object_get(oldj, "spec")))
            gen++;
        json_object_set_new(meta, "generation", json_integer(gen));
    }
    if (!status_write && strcmp(op, "apply") != 0)
        ks_apply_record_update(o, oldj, manager, ks_kinds[kind].api_version);
    if (oldj && same_ignoring_times(o, oldj)) {
        /* a no-op write keeps the resourceVersion, as the real server does */
        json_decref(o);
        return oldj;
    }
    if (dry_run) {
        /* what would be stored, answered as usual and not stored: the caller owns it */
        if (oldj)
            json_object_set(meta, "resourceVersion", ks_jget(oldj, "metadata.resourceVersion"));
        *dry_run = o;
        return o;
    }
    stored = ks_store_put(api->st, kind, o);
    if (kind == KS_DEPLOYMENT && !status_write)
        applies_record(api, op, manager, stored->json);
    return stored->json;
}

static int namespace_exists(ks_api_t *api, const char *ns, ks_resp_t *resp)
{
    char msg[400];

    if (!ns || ks_store_get(api->st, KS_NAMESPACE, "", ns))
        return 1;
    snprintf(msg, sizeof(msg), "namespaces \"%s\" not found", ns);
    ks_api_status(resp, 404, "NotFound", msg,
                  json_pack("{s:s, s:s}", "name", ns, "kind", "namespaces"));
    return 0;
}

static void api_create(ks_api_t *api, const ks_req_t *req, route_t *r, ks_resp_t *resp)
{
    char err[512], manager[128], name[300];
    int code;
    json_t *o = parse_body(req, req->content_type && strstr(req->content_type, "yaml"), err, sizeof(err), &code);
    const json_t *out;
    const char *gen;
    ks_fieldval_t fv;
    int dry;
    json_t *dry_obj = NULL;

    if (!o) {
        ks_api_status(resp, code, code == 415 ? "UnsupportedMediaType" : "BadRequest", err, NULL);
        return;
    }
    if (ks_fieldval_parse(q(req, "fieldValidation"), &fv, resp) != 0 ||
        ks_dryrun_parse(q(req, "dryRun"), "CreateOptions", &dry, resp) != 0) {
        json_decref(o);
        return;
    }
    manager_of(req, manager, sizeof(manager));
    if (!json_is_object(json_object_get(o, "metadata")))
        json_object_set_new(o, "metadata", json_object());
    if (r->ns)
        ks_jset(o, "metadata.namespace", json_string(r->ns));
    ks_store_lock(api->st);
    if (!namespace_exists(api, r->ns, resp))
        goto cleanup;
    gen = ks_jstr(o, "metadata.generateName");
    if (!ks_jstr(o, "metadata.name") && gen) {
        static const char alphabet[] = "bcdfghjklmnpqrstvwxz2456789";
        do {
            unsigned v = (unsigned)(ks_now_ms() ^ (api->st->rv * 2654435761u));
            snprintf(name, sizeof(name), "%s", gen);
            size_t l = strlen(name);
            for (int i = 0; i < 5 && l + 1 < sizeof(name); i++, l++) {
                name[l] = alphabet[v % 27];
                v = v / 27 + 7919u * (unsigned)i;
                name[l + 1] = '\0';
            }
            api->st->rv++;
        } while (ks_store_get(api->st, r->kind, r->ns ? r->ns : "", name));
        ks_jset(o, "metadata.name", json_string(name));
    }
    if (ks_jstr(o, "metadata.name") &&
        ks_store_get(api->st, r->kind, r->ns ? r->ns : "", ks_jstr(o, "metadata.name"))) {
        char q_[64], msg[512];
        qualified(r->kind, q_, sizeof(q_));
        snprintf(msg, sizeof(msg), "%s \"%s\" already exists", q_, ks_jstr(o, "metadata.name"));
        ks_api_status(resp, 409, "AlreadyExists", msg, details_for(r->kind, ks_jstr(o, "metadata.name")));
        goto cleanup;
    }
    out = api_commit(api, r->kind, o, NULL, 0, "create", manager, dry ? &dry_obj : NULL, fv, resp);
    o = NULL;
    if (out)
        ks_api_respond_json(resp, 201, out);
cleanup:
    ks_store_unlock(api->st);
    json_decref(o);
    json_decref(dry_obj);
}

static json_t *scale_of(ks_kind_t kind, const json_t *o)
{
    char *sel = ks_sel_string(ks_jget(o, "spec.selector"));
    json_t *s = json_pack("{s:s, s:s, s:{s:O, s:O, s:O, s:O, s:O}, s:{s:I}, s:{s:I, s:s}}", "kind",
                          "Scale", "apiVersion", "autoscaling/v1", "metadata", "name",
                          ks_jget(o, "metadata.name"), "namespace", ks_jget(o, "metadata.namespace"),
                          "uid", ks_jget(o, "metadata.uid"), "resourceVersion",
                          ks_jget(o, "metadata.resourceVersion"), "creationTimestamp",
                          ks_jget(o, "metadata.creationTimestamp"), "spec", "replicas",
                          (json_int_t)ks_jint(o, "spec.replicas", 1), "status", "replicas",
                          (json_int_t)ks_jint(o, "status.replicas", 0), "selector", sel ? sel : "");
    (void)kind;
    free(sel);
    return s;
}

/* PUT and PATCH of an object or its status / scale subresource; PATCH with
 * application/apply-patch+yaml may create. */
static void api_update(ks_api_t *api, const ks_req_t *req, route_t *r, ks_resp_t *resp)
{
    const char *ct = req->content_type ? req->content_type : "application/json";
    int is_patch = strcmp(req->method, "PATCH") == 0;
    int is_apply = is_patch && strstr(ct, "apply-patch") != NULL;
    int status_write = r->sub && strcmp(r->sub, "status") == 0;
    int scale = r->sub && strcmp(r->sub, "scale") == 0;
    char err[4096], manager[128];
    int code;
    json_t *body, *o = NULL, *base = NULL, *conflicts = NULL, *dry_obj = NULL;
    ks_obj_t *old;
    const json_t *out;
    ks_fieldval_t fv;
    int dry;

    if (ks_fieldval_parse(q(req, "fieldValidation"), &fv, resp) != 0 ||
        ks_dryrun_parse(q(req, "dryRun"), is_patch ? "PatchOptions" : "UpdateOptions", &dry, resp) != 0)
        return;
    if (r->sub && !status_write && !(scale && (r->kind == KS_DEPLOYMENT || r->kind == KS_REPLICASET))) {
        ks_api_status(resp, 404, "NotFound", "the server could not find the requested resource", NULL);
        return;
    }
    if (is_patch && !is_apply && !strstr(ct, "merge-patch") && !strstr(ct, "json-patch")) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml");
        ks_api_status(resp, 415, "UnsupportedMediaType", msg, NULL);
        return;
    }
    body = parse_body(req, is_apply || strstr(ct, "yaml") != NULL, err, sizeof(err), &code);
    if (!body) {
        ks_api_status(resp, code, code == 415 ? "UnsupportedMediaType" : "BadRequest", err, NULL);
        return;
    }
    if (is_apply && !(q(req, "fieldManager") && *q(req, "fieldManager"))) {
        ks_api_status(resp, 422, "Invalid",
                      "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is "
                      "required for apply patch",
                      json_pack("{s:s, s:s, s:[{s:s, s:s, s:s}]}", "group", "meta.k8s.io", "kind",
                                "PatchOptions", "causes", "reason", "FieldValueRequired",
                                "message", "Required value: is required for apply patch", "field",
                                "fieldManager"));
        json_decref(body);
        return;
    }
    manager_of(req, manager, sizeof(manager));
    ks_store_lock(api->st);
    if (!namespace_exists(api, r->ns, resp))
        goto cleanup;
    old = ks_store_get(api->st, r->kind, r->ns ? r->ns : "", r->name);
    if (!old && !(is_apply && !r->sub)) {
        status_not_found(resp, r->kind, r->name);
        goto cleanup;
    }
    if (scale) {
        json_t *cur = scale_of(r->kind, old->json), *ns;
        if (!is_patch)
            ns = json_incref(body);
        else if (strstr(ct, "json-patch"))
            ns = ks_json_patch(cur, body, err, sizeof(err));
        else
            ns = ks_merge_patch(cur, body, 0);
        json_decref(cur);
        if (!ns || !json_is_integer(ks_jget(ns, "spec.replicas"))) {
            json_decref(ns);
            ks_api_status(resp, 422, "Invalid", "Scale.autoscaling \"\" is invalid: spec.replicas: Required value", NULL);
            goto cleanup;
        }
        o = ks_json_copy(old->json);
        ks_jset(o, "spec.replicas", json_incref(ks_jget(ns, "spec.replicas")));
        json_decref(ns);
        out = api_commit(api, r->kind, o, old, 0, "scale", manager, dry ? &dry_obj : NULL,
                         KS_FV_IGNORE, resp);
        o = NULL;
        if (out) {
            json_t *s = scale_of(r->kind, out);
            ks_api_respond_json(resp, 200, s);
            json_decref(s);
        }
        goto cleanup;
    }
    if (is_apply) {
        const char *bn = ks_jstr(body, "metadata.name");
        const char *bk = ks_jstr(body, "kind");
        if (!bn || strcmp(bn, r->name) != 0 || (bk && strcmp(bk, ks_kinds[r->kind].kind) != 0)) {
            char msg[600];
            snprintf(msg, sizeof(msg), "the name of the object (%s) does not match the name on the URL (%s)",
                     bn ? bn : "", r->name);
            ks_api_status(resp, 400, "BadRequest", msg, NULL);
            goto cleanup;
        }
        /* A forced apply never conflicts on fields, so a stale resourceVersion is the
         * answer (api_commit's 409) before the merge and its field sets are worked out. */
        if (old && q_true(req, "force") &&
            stale_precondition(old, json_object_get(body, "metadata"), resp))
            goto cleanup;
        if (r->ns)
            ks_jset(body, "metadata.namespace", json_string(r->ns));
        o = ks_apply(old ? old->json : NULL, body, manager, ks_kinds[r->kind].api_version,
                     q_true(req, "force"), &conflicts, err, sizeof(err));
        if (!o) {
            json_t *causes = json_array(), *c;
            size_t i;
            json_array_foreach(conflicts, i, c) {
                char m[300];
                snprintf(m, sizeof(m), "conflict with \"%s\"", ks_jstr(c, "manager") ?: "");
                json_array_append_new(causes, json_pack("{s:s, s:s, s:O}", "reason", "FieldManagerConflict",
                                                        "message", m, "field", json_object_get(c, "field")));
            }
            json_t *det = details_for(r->kind, r->name);
            json_object_set_new(det, "causes", causes);
            ks_api_status(resp, 409, "Conflict", err, det);
            goto cleanup;
        }
        /* An applied configuration carries a resourceVersion only as a precondition
         * (api_commit answers 409 when it is not the stored one); creating ignores it. */
        json_object_del(json_object_get(o, "metadata"), "resourceVersion");
        if (old && ks_jstr(body, "metadata.resourceVersion") &&
            *ks_jstr(body, "metadata.resourceVersion"))
            ks_jset(o, "metadata.resourceVersion",
                    json_string(ks_jstr(body, "metadata.resourceVersion")));
    } else if (!is_patch) {
        o = json_incref(body);
    } else {
        base = ks_json_copy(old->json);
        if (strstr(ct, "json-patch"))
            o = ks_json_patch(base, body, err, sizeof(err));
        else
            o = ks_merge_patch(base, body, strstr(ct, "strategic") != NULL);
        if (!o) {
            ks_api_status(resp, 422, "Invalid", err, NULL);
            goto cleanup;
        }
        /* a patch carries a resourceVersion only as a precondition */
        if (!json_object_get(json_object_get(body, "metadata"), "resourceVersion"))
            json_object_del(json_object_get(o, "metadata"), "resourceVersion");
    }
    if (r->ns)
        ks_jset(o, "metadata.namespace", json_string(r->ns));
    ks_jset(o, "metadata.name", json_string(r->name));
    out = api_commit(api, r->kind, o, old, status_write, is_apply ? "apply" : (is_patch ? "patch" : "update"),
                     manager, dry ? &dry_obj : NULL, fv, resp);
    o = NULL;
    if (out && dry_obj)
        ks_api_respond_json(resp, old ? 200 : 201, out);
    else if (out)
        respond_stored(api, resp, old ? 200 : 201, out);
cleanup:
    ks_store_unlock(api->st);
    json_decref(body);
    json_decref(o);
    json_decref(base);
    json_decref(conflicts);
    json_decref(dry_obj);
}

static void delete_tree(ks_api_t *api, ks_obj_t *o, int orphan)
{
    if (orphan) {
        while (o->nkids > 0) {
            ks_obj_t *k = o->kids[0];
            json_t *copy = ks_json_copy(k->json);
            json_object_del(json_object_get(copy, "metadata"), "ownerReferences");
            ks_store_put(api->st, k->kind, copy);
            o->kids[0] = o->kids[--o->nkids];
            k->owner = NULL;
        }
    }
    ks_store_delete(api->st, o);
}

static void delete_cascade(ks_api_t *api, ks_obj_t *o)
{
    ks_obj_t **kids = malloc((o->nkids + 1) * sizeof(*kids));
    size_t n = o->nkids;

    if (n)
        memcpy(kids, o->kids, n * sizeof(*kids));
    ks_store_delete(api->st, o);
    for (size_t i = 0; i < n; i++)
        delete_cascade(api, kids[i]);
    free(kids);
}

static void api_delete(ks_api_t *api, const ks_req_t *req, route_t *r, ks_resp_t *resp)
{
    ks_obj_t *o;
    char manager[128];
    const char *policy = q(req, "propagationPolicy");
    json_t *body_opts = NULL;
    int dry;

    if (ks_dryrun_parse(q(req, "dryRun"), "DeleteOptions", &dry, resp) != 0)
        return;
    if (req->body_len)
        body_opts = json_loadb(req->body, req->body_len, 0, NULL);
    if (!policy)
        policy = json_string_value(json_object_get(body_opts, "propagationPolicy"));
    manager_of(req, manager, sizeof(manager));
    ks_store_lock(api->st);
    o = ks_store_get(api->st, r->kind, r->ns ? r->ns : "", r->name);
    if (!o) {
        status_not_found(resp, r->kind, r->name);
        goto cleanup;
    }
    if (r->kind == KS_POD) {
        json_t *copy = ks_json_copy(o->json);
        char ts[32];
        ks_time_format(ks_now_ms(), ts, sizeof(ts));
        ks_jset(copy, "metadata.deletionTimestamp", json_string(ts));
        ks_jset(copy, "metadata.deletionGracePeriodSeconds", json_integer(0));
        ks_api_respond_json(resp, 200, copy);
        json_decref(copy);
    } else {
        json_t *st = json_pack("{s:s, s:s, s:{}, s:s, s:o}", "kind", "Status", "apiVersion", "v1",
                               "metadata", "status", "Success", "details",
                               details_for(r->kind, r->name));
        json_object_set(json_object_get(st, "details"), "uid", ks_jget(o->json, "metadata.uid"));
        ks_api_respond_json(resp, 200, st);
        json_decref(st);
    }
    if (dry)
        goto cleanup;
    if (r->kind == KS_DEPLOYMENT)
        applies_record(api, "delete", manager, o->json);
    if (r->kind == KS_NAMESPACE) {
        for (int k = 0; k < KS_KIND_COUNT; k++) {
            size_t n;
            ks_obj_t **all;
            if (!ks_kinds[k].namespaced)
                continue;
            all = ks_store_list(api->st, (ks_kind_t)k, o->name, &n);
            for (size_t i = 0; i < n; i++) {
                if (all[i]->owner)
                    all[i]->owner = NULL;
            }
            for (size_t i = 0; i < n; i++) {
                all[i]->nkids = 0;
                ks_store_delete(api->st, all[i]);
            }
            free(all);
        }
        ks_store_delete(api->st, o);
    } else if (policy && strcmp(policy, "Orphan") == 0) {
        delete_tree(api, o, 1);
    } else {
        delete_cascade(api, o);
    }
cleanup:
    ks_store_unlock(api->st);
    json_decref(body_opts);
}

/* ---- reads ---- */

static void api_get(ks_api_t *api, const ks_req_t *req, route_t *r, ks_resp_t *resp)
{
    ks_obj_t *o;
    json_t *j;

    ks_store_lock(api->st);
    o = ks_store_get(api->st, r->kind, r->ns ? r->ns : "", r->name);
    if (!o) {
        status_not_found(resp, r->kind, r->name);
        ks_store_unlock(api->st);
        return;
    }
    if (!r->sub && !wants_table(req)) {
        respond_stored(api, resp, 200, o->json);
        ks_store_unlock(api->st);
        return;
    }
    j = json_incref(o->json);
    ks_store_unlock(api->st);
    if (r->sub && strcmp(r->sub, "scale") == 0) {
        json_t *s = scale_of(r->kind, j);
        ks_api_respond_json(resp, 200, s);
        json_decref(s);
    } else if (wants_table(req)) {
        json_t *t = json_pack("{s:s, s:s, s:{s:O}, s:o, s:[o]}", "kind", "Table", "apiVersion",
                              "meta.k8s.io/v1", "metadata", "resourceVersion",
                              ks_jget(j, "metadata.resourceVersion"), "columnDefinitions",
                              ks_print_columns(r->kind), "rows",
                              ks_print_row(r->kind, j, q(req, "includeObject"), ks_now_ms()));
        ks_api_respond_json(resp, 200, t);
        json_decref(t);
    } else {
        ks_api_respond_json(resp, 200, j);
    }
    json_decref(j);
}

static void api_logs(ks_api_t *api, const ks_req_t *req, route_t *r, ks_resp_t *resp)
{
    ks_obj_t *o;
    json_t *lines, *cts;
    const char *container = q(req, "container"), *tail = q(req, "tailLines");
    char err[512];
    size_t n, start = 0;

    ks_store_lock(api->st);
    o = ks_store_get(api->st, KS_POD, r->ns, r->name);
    if (!o) {
        status_not_found(resp, KS_POD, r->name);
        ks_store_unlock(api->st);
        return;
    }
    cts = ks_jget(o->json, "spec.containers");
    if (!container && json_array_size(cts) > 1) {
        rf_buf_t names = RF_BUF_INIT;
        json_t *ct;
        size_t i;
        json_array_foreach(cts, i, ct) {
            rf_buf_addf(&names, "%s%s", i ? " " : "", ks_jstr(ct, "name") ?: "");
        }
        snprintf(err, sizeof(err), "a container name must be specified for pod %s, choose one of: [%s]",
                 r->name, rf_buf_str(&names));
        rf_buf_release(&names);
        ks_api_status(resp, 400, "BadRequest", err, NULL);
        ks_store_unlock(api->st);
        return;
    }
    lines = ks_ctrl_pod_logs(api->ctrl, o, container, q_true(req, "previous"), err, sizeof(err));
    ks_store_unlock(api->st);
    if (!lines) {
        ks_api_status(resp, 400, "BadRequest", err, NULL);
        return;
    }
    n = json_array_size(lines);
    if (tail) {
        long t = strtol(tail, NULL, 10);
        if (t >= 0 && (size_t)t < n)
            start = n - (size_t)t;
    }
    for (size_t i = start; i < n; i++)
        rf_buf_addf(&resp->body, "%s\n", json_string_value(json_array_get(lines, i)));
    json_decref(lines);
    resp->status = 200;
    resp->content_type = "text/plain";
}

static int obj_matches(const ks_watch_t *w, const json_t *o)
{
    if (w->ns && *w->ns && strcmp(ks_jstr(o, "metadata.namespace") ?: "", w->ns) != 0)
        return 0;
    return ks_sel_match(w->labels, ks_jget(o, "metadata.labels")) &&
           ks_sel_match_fields(w->fields, o);
}

static int selectors_parse(const ks_req_t *req, ks_sel_t **labels, ks_sel_t **fields,
                           ks_resp_t *resp)
{
    char err[512];

    *labels = ks_sel_parse(q(req, "labelSelector"), err, sizeof(err));
    if (!*labels) {
        ks_api_status(resp, 400, "BadRequest", err, NULL);
        return -1;
    }
    *fields = ks_sel_parse_fields(q(req, "fieldSelector"), err, sizeof(err));
    if (!*fields) {
        ks_sel_destroy(*labels);
        *labels = NULL;
        ks_api_status(resp, 400, "BadRequest", err, NULL);
        return -1;
    }
    return 0;
}

static int obj_key_cmp(const void *a, const void *b)
{
    const ks_obj_t *x = *(ks_obj_t *const *)a, *y = *(ks_obj_t *const *)b;
    int c = strcmp(x->ns, y->ns);

    return c ? c : strcmp(x->name, y->name);
}

/* 1 when o comes after the continue position "NS/NAME". */
static int obj_after(const ks_obj_t *o, const char *after_ns, size_t ns_len, const char *after_name)
{
    int c = strncmp(o->ns, after_ns, ns_len);

    if (c == 0 && o->ns[ns_len] != '\0')
        c = 1;
    return c > 0 || (c == 0 && strcmp(o->name, after_name) > 0);
}

/* A list, paged with limit and continue as the API server does: items in namespace/name
 * order, a continue token "RV/NS/NAME" naming the resourceVersion of the first page (so a
 * watch from it replays whatever changed while the pages were read) and the last item. */
static void api_list(ks_api_t *api, const ks_req_t *req, route_t *r, ks_resp_t *resp)
{
    ks_watch_t filter;
    ks_obj_t **all, **match;
    json_t *out, *items, *meta;
    size_t n, k = 0, first = 0, end;
    char rv[32], token[600];
    const char *cont = q(req, "continue"), *after_ns = NULL, *after_name = NULL;
    long limit = q(req, "limit") ? strtol(q(req, "limit"), NULL, 10) : 0;
    int table = wants_table(req);

    memset(&filter, 0, sizeof(filter));
    filter.ns = (char *)r->ns;
    if (cont && *cont) {
        char *slash1 = strchr(cont, '/'), *slash2 = slash1 ? strchr(slash1 + 1, '/') : NULL;
        if (!slash1 || !slash2 || slash1 == cont || (size_t)(slash1 - cont) >= sizeof(rv)) {
            ks_api_status(resp, 400, "BadRequest", "invalid continue token", NULL);
            return;
        }
        after_ns = slash1 + 1;
        after_name = slash2 + 1;
    }
    if (selectors_parse(req, &filter.labels, &filter.fields, resp) != 0)
        return;
    ks_store_lock(api->st);
    all = ks_store_list(api->st, r->kind, r->ns, &n);
    match = malloc((n + 1) * sizeof(*match));
    for (size_t i = 0; i < n; i++)
        if (obj_matches(&filter, all[i]->json))
            match[k++] = all[i];
    qsort(match, k, sizeof(*match), obj_key_cmp);
    if (after_ns)
        while (first < k && !obj_after(match[first], after_ns,
                                       (size_t)(after_name - 1 - after_ns), after_name))
            first++;
    end = limit > 0 && (size_t)limit < k - first ? first + (size_t)limit : k;
    if (cont && *cont)
        snprintf(rv, sizeof(rv), "%.*s", (int)(strchr(cont, '/') - cont), cont);
    else
        snprintf(rv, sizeof(rv), "%llu", (unsigned long long)api->st->rv);
    token[0] = '\0';
    if (end < k)
        snprintf(token, sizeof(token), "%s/%s/%s", rv, match[end - 1]->ns, match[end - 1]->name);
    items = json_array();
    if (table) {
        int64_t now = ks_now_ms();
        for (size_t i = first; i < end; i++)
            json_array_append_new(items, ks_print_row(r->kind, match[i]->json,
                                                      q(req, "includeObject"), now));
    } else {
        for (size_t i = first; i < end; i++)
            json_array_append(items, match[i]->json);
    }
    ks_store_unlock(api->st);
    free(all);
    free(match);
    meta = json_pack("{s:s}", "resourceVersion", rv);
    if (token[0]) {
        json_object_set_new(meta, "continue", json_string(token));
        json_object_set_new(meta, "remainingItemCount", json_integer((json_int_t)(k - end)));
    }
    if (table)
        out = json_pack("{s:s, s:s, s:o, s:o, s:o}", "kind", "Table", "apiVersion",
                        "meta.k8s.io/v1", "metadata", meta, "columnDefinitions",
                        ks_print_columns(r->kind), "rows", items);
    else
        out = json_pack("{s:s, s:s, s:o, s:o}", "kind", ks_kinds[r->kind].list_kind,
                        "apiVersion", ks_kinds[r->kind].api_version, "metadata", meta, "items",
                        items);
    ks_api_respond_json(resp, 200, out);
    json_decref(out);
    ks_sel_destroy(filter.labels);
    ks_sel_destroy(filter.fields);
}

/* ---- watch ---- */

static void watch_emit(ks_watch_t *w, const char *type, const json_t *obj)
{
    json_t *ev, *o;

    if (w->table) {
        char rv[32];
        snprintf(rv, sizeof(rv), "%s", ks_jstr(obj, "metadata.resourceVersion") ?: "");
        o = json_pack("{s:s, s:s, s:{s:s}, s:o, s:[o]}", "kind", "Table", "apiVersion",
                      "meta.k8s.io/v1", "metadata", "resourceVersion", rv, "columnDefinitions",
                      w->sent_columns ? json_array() : ks_print_columns(w->kind), "rows",
                      ks_print_row(w->kind, obj, w->include_object, ks_now_ms()));
        w->sent_columns = 1;
        ev = json_pack("{s:s, s:o}", "type", type, "object", o);
    } else {
        ev = json_pack("{s:s, s:O}", "type", type, "object", obj);
    }
    if (ks_json_append(&w->pending, ev) != 0)
        rf_buf_adds(&w->pending, "{}");
    rf_buf_addc(&w->pending, '\n');
    json_decref(ev);
}

static void watch_expired(ks_watch_t *w, uint64_t rv, uint64_t oldest)
{
    char msg[128];
    json_t *st;

    snprintf(msg, sizeof(msg), "too old resource version: %llu (%llu)", (unsigned long long)rv,
             (unsigned long long)oldest);
    st = json_pack("{s:s, s:s, s:{}, s:s, s:s, s:s, s:i}", "kind", "Status", "apiVersion", "v1",
                   "metadata", "status", "Failure", "message", msg, "reason", "Expired", "code",
                   410);
    watch_emit(w, "ERROR", st);
    json_decref(st);
    w->ended = 1;
}

/* Store lock held: moves the ring's events after last_rv into pending. */
static void watch_collect(ks_watch_t *w)
{
    ks_store_t *st = w->api->st;
    int expired;
    size_t i = ks_store_ring_seek(st, w->kind, w->last_rv, &expired);
    ks_event_t *e;
    const char *line;
    size_t line_len;

    if (expired) {
        const ks_event_t *first = ks_store_ring_at(st, w->kind, 0);
        watch_expired(w, w->last_rv, first ? first->rv - 1 : st->rv);
        return;
    }
    while ((e = ks_store_ring_at(st, w->kind, i++)) != NULL && w->pending.len < WATCH_PENDING_MAX) {
        int now_in = obj_matches(w, e->obj);
        int was_in = e->prev ? obj_matches(w, e->prev) : 0;
        w->last_rv = e->rv;
        if (e->type == KS_EV_DELETED) {
            if (was_in || now_in) {
                if (w->table) {
                    watch_emit(w, "DELETED", e->obj);
                } else {
                    line = ks_store_event_line(st, e, &line_len);
                    rf_buf_add(&w->pending, line, line_len);
                }
            }
        } else if (now_in) {
            const char *type = e->type == KS_EV_ADDED || !was_in ? "ADDED" : "MODIFIED";
            if (!w->table && ((e->type == KS_EV_ADDED) == (type[0] == 'A'))) {
                line = ks_store_event_line(st, e, &line_len);
                rf_buf_add(&w->pending, line, line_len);
            } else {
                watch_emit(w, type, e->obj);
            }
        } else if (was_in) {
            watch_emit(w, "DELETED", e->obj);
        }
    }
}

static void watch_bookmark(ks_watch_t *w, int initial_end)
{
    char rv[32];
    json_t *o;

    snprintf(rv, sizeof(rv), "%llu", (unsigned long long)w->last_rv);
    o = json_pack("{s:s, s:s, s:{s:s, s:n}}", "kind", ks_kinds[w->kind].kind, "apiVersion",
                  ks_kinds[w->kind].api_version, "metadata", "resourceVersion", rv,
                  "creationTimestamp");
    if (initial_end)
        ks_jset(o, "metadata.annotations", json_pack("{s:s}", "k8s.io/initial-events-end", "true"));
    {
        int table = w->table;
        w->table = 0;
        watch_emit(w, "BOOKMARK", o);
        w->table = table;
    }
    json_decref(o);
}

static void api_watch(ks_api_t *api, const ks_req_t *req, route_t *r, ks_resp_t *resp)
{
    ks_watch_t *w = calloc(1, sizeof(*w));
    const char *rv = q(req, "resourceVersion"), *timeout = q(req, "timeoutSeconds");
    int initial = !rv || !*rv || strcmp(rv, "0") == 0 || q_true(req, "sendInitialEvents");
    int64_t tmo = timeout ? strtoll(timeout, NULL, 10) : 1800 + (ks_now_ms() % 1800);

    w->api = api;
    w->kind = r->kind;
    w->ns = r->ns ? strdup(r->ns) : NULL;
    w->table = wants_table(req);
    w->bookmarks = q_true(req, "allowWatchBookmarks");
    w->include_object = q(req, "includeObject") ? strdup(q(req, "includeObject")) : NULL;
    w->deadline_ms = ks_now_ms() + (tmo > 0 ? tmo : 1800) * 1000;
    w->next_bookmark_ms = ks_now_ms() + WATCH_BOOKMARK_MS;
    rf_buf_init(&w->pending, 0);
    if (selectors_parse(req, &w->labels, &w->fields, resp) != 0) {
        ks_watch_destroy(w);
        return;
    }
    ks_store_lock(api->st);
    if (initial) {
        size_t n;
        ks_obj_t **all = ks_store_list(api->st, r->kind, r->ns, &n);
        for (size_t i = 0; i < n; i++)
            if (obj_matches(w, all[i]->json))
                watch_emit(w, "ADDED", all[i]->json);
        free(all);
        w->last_rv = api->st->rv;
        if (q_true(req, "sendInitialEvents") && w->bookmarks)
            watch_bookmark(w, 1);
    } else {
        char *end;
        w->last_rv = strtoull(rv, &end, 10);
        if (*end) {
            ks_store_unlock(api->st);
            ks_api_status(resp, 400, "BadRequest", "invalid resource version", NULL);
            ks_watch_destroy(w);
            return;
        }
        watch_collect(w);
    }
    ks_store_unlock(api->st);
    resp->status = 200;
    resp->content_type = "application/json";
    resp->watch = w;
}

ssize_t ks_watch_read(ks_watch_t *w, char *buf, size_t max)
{
    ks_store_t *st = w->api->st;

    for (;;) {
        if (w->pending_off < w->pending.len) {
            size_t n = w->pending.len - w->pending_off;
            if (n > max)
                n = max;
            memcpy(buf, w->pending.data + w->pending_off, n);
            w->pending_off += n;
            if (w->pending_off == w->pending.len) {
                rf_buf_reset(&w->pending);
                w->pending_off = 0;
            }
            return (ssize_t)n;
        }
        if (w->ended)
            return -1;
        ks_store_lock(st);
        for (;;) {
            int64_t now = ks_now_ms(), until;
            if (st->stopping || now >= w->deadline_ms) {
                w->ended = 1;
                break;
            }
            watch_collect(w);
            if (w->pending.len || w->ended)
                break;
            if (w->bookmarks && now >= w->next_bookmark_ms) {
                watch_bookmark(w, 0);
                w->next_bookmark_ms = now + WATCH_BOOKMARK_MS;
                break;
            }
            until = w->deadline_ms;
            if (w->bookmarks && w->next_bookmark_ms < until)
                until = w->next_bookmark_ms;
            ks_store_wait(st, w->kind, until);
        }
        ks_store_unlock(st);
    }
}

void ks_watch_destroy(ks_watch_t *w)
{
    if (!w)
        return;
    free(w->ns);
    free(w->include_object);
    ks_sel_destroy(w->labels);
    ks_sel_destroy(w->fields);
    rf_buf_release(&w->pending);
    free(w);
}

/* ---- entry ---- */

static void api_handle(ks_api_t *api, const ks_req_t *req, ks_resp_t *resp);

/* A client whose first choice is protobuf (client-go's typed clients:
 * "application/vnd.kubernetes.protobuf,application/json") gets the kinds ks_proto encodes in
 * protobuf, everything else (lists, Status, other kinds) in JSON, which it accepts too. */
static void answer_protobuf(const ks_req_t *req, ks_resp_t *resp)
{
    static const char pb[] = "application/vnd.kubernetes.protobuf";
    json_t *o;
    char *out;
    size_t len;

    if (!req->accept || strncmp(req->accept, pb, sizeof(pb) - 1) != 0 ||
        (req->accept[sizeof(pb) - 1] != '\0' && req->accept[sizeof(pb) - 1] != ',') ||
        resp->watch || !resp->content_type || strcmp(resp->content_type, "application/json") != 0 ||
        resp->status >= 300 || !resp->body.len)
        return;
    o = json_loadb(rf_buf_str(&resp->body), resp->body.len, 0, NULL);
    if (o && ks_proto_encode(o, &out, &len) == 0) {
        rf_buf_reset(&resp->body);
        rf_buf_add(&resp->body, out, len);
        resp->content_type = pb;
        free(out);
    }
    json_decref(o);
}

void ks_api_handle(ks_api_t *api, const ks_req_t *req, ks_resp_t *resp)
{
    api_handle(api, req, resp);
    answer_protobuf(req, resp);
}

static void api_handle(ks_api_t *api, const ks_req_t *req, ks_resp_t *resp)
{
    route_t r;
    const char *m = req->method;

    resp->status = 200;
    resp->content_type = "application/json";
    resp->watch = NULL;
    if (req->body_len > API_BODY_MAX) {
        ks_api_status(resp, 413, "RequestEntityTooLarge", "the request body is too large", NULL);
        return;
    }
    if (strcmp(m, "GET") == 0 && ks_discovery_answer(api->address, req->path, req->accept, resp))
        return;
    if (api_route(req->path, &r) != 0) {
        if (strncmp(req->path, "/api", 4) == 0 && strncmp(req->path, "/apis/", 6) != 0)
            ks_api_status(resp, 404, "NotFound", "the server could not find the requested resource",
                          json_object());
        else {
            rf_buf_adds(&resp->body, "404 page not found\n");
            resp->status = 404;
            resp->content_type = "text/plain; charset=utf-8";
        }
        return;
    }
    if (!r.name && strcmp(m, "GET") == 0) {
        if (q_true(req, "watch"))
            api_watch(api, req, &r, resp);
        else
            api_list(api, req, &r, resp);
    } else if (!r.name && strcmp(m, "POST") == 0) {
        api_create(api, req, &r, resp);
    } else if (r.name && strcmp(m, "GET") == 0 && r.sub && strcmp(r.sub, "log") == 0 &&
               r.kind == KS_POD) {
        api_logs(api, req, &r, resp);
    } else if (r.name && strcmp(m, "GET") == 0 &&
               (!r.sub || strcmp(r.sub, "status") == 0 ||
                (strcmp(r.sub, "scale") == 0 && (r.kind == KS_DEPLOYMENT || r.kind == KS_REPLICASET)))) {
        api_get(api, req, &r, resp);
    } else if (r.name && (strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0)) {
        api_update(api, req, &r, resp);
    } else if (r.name && !r.sub && strcmp(m, "DELETE") == 0) {
        api_delete(api, req, &r, resp);
    } else {
        char msg[128];
        snprintf(msg, sizeof(msg), "the server does not allow this method on the requested resource");
        ks_api_status(resp, r.sub ? 404 : 405, r.sub ? "NotFound" : "MethodNotAllowed", msg, NULL);
    }
    free(r.name);
    free(r.sub);
}

/* ---- lifecycle ---- */

ks_api_t *ks_api_new(ks_store_t *st, ks_ctrl_t *ctrl)
{
    ks_api_t *api = calloc(1, sizeof(*api));
    static const char *const namespaces[] = {"default", "kube-system", "kube-public",
                                             "kube-node-lease", NULL};

    if (!api)
        return NULL;
    api->schema = ks_schema_builtin();
    if (!api->schema) {
        free(api);
        return NULL;
    }
    api->st = st;
    api->ctrl = ctrl;
    api->applies = json_array();
    pthread_mutex_init(&api->applies_lock, NULL);
    snprintf(api->address, sizeof(api->address), "127.0.0.1:0");
    ks_store_lock(st);
    for (int i = 0; namespaces[i]; i++) {
        json_t *ns = json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind", "Namespace",
                               "metadata", "name", namespaces[i]);
        api_default(api, KS_NAMESPACE, ns);
        ks_store_put(st, KS_NAMESPACE, ns);
    }
    {
        json_t *svc = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}}, s:{s:s, s:[{s:s, s:i, s:s, s:i}]}}",
                                "apiVersion", "v1", "kind", "Service", "metadata", "name",
                                "kubernetes", "namespace", "default", "labels", "component",
                                "apiserver", "provider", "kubernetes", "spec", "clusterIP",
                                "10.96.0.1", "ports", "name", "https", "port", 443, "protocol",
                                "TCP", "targetPort", 6443);
        api_default(api, KS_SERVICE, svc);
        ks_store_put(st, KS_SERVICE, svc);
    }
    ks_store_unlock(st);
    return api;
}

void ks_api_set_address(ks_api_t *api, const char *host_port)
{
    snprintf(api->address, sizeof(api->address), "%s", host_port);
}

void ks_api_destroy(ks_api_t *api)
{
    if (!api)
        return;
    json_decref(api->applies);
    pthread_mutex_destroy(&api->applies_lock);
    free(api);
}
