/* The object store of kubesim: objects per kind, resourceVersions, and the watch event rings. */
#include "ks_store.h"
#include "rf_json.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const ks_kind_info_t ks_kinds[KS_KIND_COUNT] = {
    [KS_NAMESPACE] = {"Namespace", "namespaces", "", "v1", "NamespaceList", 0, 0},
    [KS_DEPLOYMENT] = {"Deployment", "deployments", "apps", "apps/v1", "DeploymentList", 1, 1},
    [KS_REPLICASET] = {"ReplicaSet", "replicasets", "apps", "apps/v1", "ReplicaSetList", 1, 1},
    [KS_POD] = {"Pod", "pods", "", "v1", "PodList", 1, 0},
    [KS_SERVICE] = {"Service", "services", "", "v1", "ServiceList", 1, 0},
    [KS_EVENT] = {"Event", "events", "", "v1", "EventList", 1, 0},
    [KS_INGRESS] = {"Ingress", "ingresses", "networking.k8s.io", "networking.k8s.io/v1",
                    "IngressList", 1, 1},
    [KS_CONFIGMAP] = {"ConfigMap", "configmaps", "", "v1", "ConfigMapList", 1, 0},
    [KS_SECRET] = {"Secret", "secrets", "", "v1", "SecretList", 1, 0},
    [KS_SERVICEACCOUNT] = {"ServiceAccount", "serviceaccounts", "", "v1", "ServiceAccountList", 1, 0},
    [KS_PDB] = {"PodDisruptionBudget", "poddisruptionbudgets", "policy", "policy/v1",
                "PodDisruptionBudgetList", 1, 1},
    [KS_ROLE] = {"Role", "roles", "rbac.authorization.k8s.io", "rbac.authorization.k8s.io/v1",
                 "RoleList", 1, 0},
    [KS_ROLEBINDING] = {"RoleBinding", "rolebindings", "rbac.authorization.k8s.io",
                        "rbac.authorization.k8s.io/v1", "RoleBindingList", 1, 0},
    [KS_CLUSTERROLE] = {"ClusterRole", "clusterroles", "rbac.authorization.k8s.io",
                        "rbac.authorization.k8s.io/v1", "ClusterRoleList", 0, 0},
    [KS_CLUSTERROLEBINDING] = {"ClusterRoleBinding", "clusterrolebindings",
                               "rbac.authorization.k8s.io", "rbac.authorization.k8s.io/v1",
                               "ClusterRoleBindingList", 0, 0},
};

/* Slots of kept texts, by the member's address: with 512, a bench run of 300 releases found
 * 1,846 of 9,373 texts kept (the others taken by another member between two writes of one
 * object's versions); with 4,096, 2,168 of 8,888. Each holds its member (a subtree of a
 * stored version, shared with the next) until taken. */
#define KS_FRAGS 4096
#define KS_FRAG_MIN 64 /* shorter texts are written again, not kept */

struct ks_frag {
    json_t *j; /* held */
    char *text;
    size_t len;
};

static void frag_release(struct ks_frag *f)
{
    json_decref(f->j);
    free(f->text);
    memset(f, 0, sizeof(*f));
}

int64_t ks_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Each thread's last formatted second: the controller and a request stamp many objects in
 * the same second, and gmtime_r with strftime costs ~1,400 instructions a call. */
static _Thread_local struct {
    time_t t;
    size_t len; /* 0: nothing kept */
    char text[32];
} time_last;

void ks_time_format(int64_t ms, char *out, size_t out_size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (!time_last.len || time_last.t != t) {
        time_last.len = gmtime_r(&t, &tm)
                            ? strftime(time_last.text, sizeof(time_last.text), "%Y-%m-%dT%H:%M:%SZ", &tm)
                            : 0;
        time_last.t = t;
    }
    if (time_last.len && time_last.len < out_size) {
        memcpy(out, time_last.text, time_last.len + 1);
        return;
    }
    /* a buffer too small for it (or a time strftime cannot write): as before */
    gmtime_r(&t, &tm);
    strftime(out, out_size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int64_t ks_time_parse(const char *s)
{
    struct tm tm;
    const char *end;

    memset(&tm, 0, sizeof(tm));
    if (!s)
        return -1;
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -1;
    return (int64_t)timegm(&tm) * 1000;
}

static uint64_t store_hash(const char *ns, const char *name)
{
    uint64_t h = 1469598103934665603ULL;

    for (const char *p = ns; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ '/') * 1099511628211ULL;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static void table_grow(ks_table_t *t)
{
    size_t n = t->nslots ? t->nslots * 2 : 1024;
    ks_obj_t **slots = calloc(n, sizeof(*slots));

    if (!slots)
        abort();
    for (size_t i = 0; i < t->nslots; i++) {
        ks_obj_t *o = t->slots[i];
        while (o) {
            ks_obj_t *next = o->hnext;
            size_t j = store_hash(o->ns, o->name) & (n - 1);
            o->hnext = slots[j];
            slots[j] = o;
            o = next;
        }
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = n;
}

ks_store_t *ks_store_new(size_t ring_size)
{
    ks_store_t *st = calloc(1, sizeof(*st));

    if (!st)
        return NULL;
    st->frags = calloc(KS_FRAGS, sizeof(*st->frags));
    if (!st->frags)
        abort();
    pthread_mutex_init(&st->lock, NULL);
    for (int k = 0; k < KS_KIND_COUNT; k++)
        pthread_cond_init(&st->changed[k], NULL);
    for (int k = 0; k < KS_KIND_COUNT; k++) {
        table_grow(&st->tables[k]);
        st->rings[k].cap = ring_size ? ring_size : 1;
        st->rings[k].ev = calloc(st->rings[k].cap, sizeof(ks_event_t));
        if (!st->rings[k].ev)
            abort();
    }
    return st;
}

static void event_release(ks_event_t *e)
{
    json_decref(e->obj);
    json_decref(e->prev);
    free(e->line);
    memset(e, 0, sizeof(*e));
}

static void obj_free(ks_obj_t *o)
{
    json_decref(o->json);
    json_decref(o->tmpl_own);
    json_decref(o->tmpl_dep);
    free(o->ns);
    free(o->name);
    free(o->kids);
    free(o->sim);
    free(o);
}

void ks_store_destroy(ks_store_t *st)
{
    if (!st)
        return;
    for (int k = 0; k < KS_KIND_COUNT; k++) {
        ks_table_t *t = &st->tables[k];
        for (size_t i = 0; i < t->nslots; i++) {
            ks_obj_t *o = t->slots[i];
            while (o) {
                ks_obj_t *next = o->hnext;
                obj_free(o);
                o = next;
            }
        }
        free(t->slots);
        ks_ring_t *r = &st->rings[k];
        for (size_t i = 0; i < r->len; i++)
            event_release(&r->ev[(r->start + i) % r->cap]);
        free(r->ev);
    }
    for (size_t i = 0; i < KS_FRAGS; i++)
        frag_release(&st->frags[i]);
    free(st->frags);
    pthread_mutex_destroy(&st->lock);
    for (int k = 0; k < KS_KIND_COUNT; k++)
        pthread_cond_destroy(&st->changed[k]);
    free(st);
}

void ks_store_lock(ks_store_t *st)
{
    pthread_mutex_lock(&st->lock);
}

void ks_store_unlock(ks_store_t *st)
{
    pthread_mutex_unlock(&st->lock);
}

ks_obj_t *ks_store_get(ks_store_t *st, ks_kind_t kind, const char *ns, const char *name)
{
    ks_table_t *t = &st->tables[kind];
    ks_obj_t *o;

    if (!ks_kinds[kind].namespaced)
        ns = "";
    o = t->slots[store_hash(ns, name) & (t->nslots - 1)];
    while (o && (strcmp(o->name, name) != 0 || strcmp(o->ns, ns) != 0))
        o = o->hnext;
    return o;
}

int ks_store_random(ks_store_t *st, unsigned char *out, size_t n)
{
    if (n > 64)
        return -1;
    if (st->rand_left < n) {
        if (RAND_bytes(st->rand_pool, sizeof(st->rand_pool)) != 1) {
            st->rand_left = 0;
            return -1;
        }
        st->rand_left = sizeof(st->rand_pool);
    }
    st->rand_left -= n;
    memcpy(out, st->rand_pool + st->rand_left, n);
    /* a byte handed out is not kept */
    memset(st->rand_pool + st->rand_left, 0, n);
    return 0;
}

/* The decimal digits of v and a NUL at out (at least 21 bytes). */
static void store_u64(char *out, uint64_t v)
{
    char num[24], *p = num + sizeof(num);

    *--p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(out, p, (size_t)(num + sizeof(num) - p));
}

/* A version 4 uid ("%02x" of each byte, dashes after bytes 4, 6, 8 and 10); out has 37 bytes. */
static void store_uid(ks_store_t *st, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    char *p = out;

    if (ks_store_random(st, b, sizeof(b)) != 0) {
        memset(b, 0, sizeof(b));
        memcpy(b, &st->uid_counter, sizeof(st->uid_counter));
    }
    st->uid_counter++;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}

static const char *const event_names[] = {"ADDED", "MODIFIED", "DELETED"};

static void store_record(ks_store_t *st, ks_kind_t kind, ks_event_type_t type, json_t *obj,
                         json_t *prev)
{
    ks_ring_t *r = &st->rings[kind];
    ks_event_t *e;

    if (r->len == r->cap) {
        e = &r->ev[r->start];
        r->evicted_rv = e->rv;
        event_release(e);
        r->start = (r->start + 1) % r->cap;
        r->len--;
    }
    e = &r->ev[(r->start + r->len) % r->cap];
    r->len++;
    e->rv = st->rv;
    e->type = type;
    e->obj = json_incref(obj);
    e->prev = json_incref(prev);
    /* the line is written when a watcher first needs it: most events are never watched */
    e->line = NULL;
    e->line_len = 0;
}

int ks_json_equal(const json_t *a, const json_t *b)
{
    if (a == b)
        return a != NULL;
    if (json_is_object(a) && json_is_object(b)) {
        void *ia = json_object_iter((json_t *)a), *ib = json_object_iter((json_t *)b);
        if (json_object_size(a) != json_object_size(b))
            return 0;
        for (; ia && ib; ia = json_object_iter_next((json_t *)a, ia),
                         ib = json_object_iter_next((json_t *)b, ib)) {
            size_t n = json_object_iter_key_len(ia);
            if (n != json_object_iter_key_len(ib) ||
                memcmp(json_object_iter_key(ia), json_object_iter_key(ib), n) != 0)
                return json_equal(a, b); /* another order: by key */
            if (!ks_json_equal(json_object_iter_value(ia), json_object_iter_value(ib)))
                return 0;
        }
        return 1;
    }
    if (json_is_array(a) && json_is_array(b)) {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (!ks_json_equal(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    return json_equal(a, b);
}

json_t *ks_json_copy(const json_t *j)
{
    json_t *out;

    switch (j ? json_typeof(j) : JSON_NULL) {
    case JSON_OBJECT:
        out = json_object();
        for (void *it = json_object_iter((json_t *)j); it;
             it = json_object_iter_next((json_t *)j, it))
            json_object_setn_new_nocheck(out, json_object_iter_key(it),
                                         json_object_iter_key_len(it),
                                         ks_json_copy(json_object_iter_value(it)));
        return out;
    case JSON_ARRAY:
        out = json_array();
        for (size_t i = 0; i < json_array_size(j); i++)
            json_array_append_new(out, ks_json_copy(json_array_get(j, i)));
        return out;
    case JSON_STRING:
        return json_stringn_nocheck(json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return json_integer(json_integer_value(j));
    case JSON_REAL:
        return json_real(json_real_value(j));
    case JSON_TRUE:
        return json_true();
    case JSON_FALSE:
        return json_false();
    default:
        return j ? json_null() : NULL;
    }
}

/* Byte for byte what json_dump_callback(j, ..., JSON_COMPACT) writes (keys in insertion
 * order): rf_json_append, without jansson 2.14's loop check, which costs a snprintf("%p")
 * and a hash table entry for every object and array dumped (dumping was ~30% of kubesim's
 * instructions per release, watch lines above all: issue 20). -1 when b's cap is reached
 * or j is not an object or array (as json_dump_callback without JSON_ENCODE_ANY). */
int ks_json_append(rf_buf_t *b, const json_t *j)
{
    if (!json_is_object(j) && !json_is_array(j))
        return -1;
    return rf_json_append(b, j, 0);
}

int ks_json_append_sorted(rf_buf_t *b, const json_t *j)
{
    if (!json_is_object(j) && !json_is_array(j))
        return -1;
    return rf_json_append(b, j, RF_JSON_SORT_KEYS);
}

int ks_json_append_value(rf_buf_t *b, const json_t *j)
{
    return rf_json_append(b, j, 0);
}

static int store_put_frag(ks_store_t *st, rf_buf_t *b, const json_t *j, int depth, int managed);

/* A managedFields list (arr) as rf_json_append writes it, each entry's fieldsV1 from its
 * kept text when there is one: server-side apply keeps a manager's tree from one version to
 * the next when its field set is the same (ks_apply), and the other entries' trees are
 * shared as they are, so most versions of an object carry the trees of the one before. */
static int store_put_managed(ks_store_t *st, rf_buf_t *b, const json_t *arr)
{
    size_t i;
    json_t *e;
    int rc = rf_buf_addc(b, '[');

    json_array_foreach(arr, i, e) {
        int first = 1;
        if (rc == 0 && i > 0)
            rc = rf_buf_addc(b, ',');
        if (rc != 0)
            break;
        if (!json_is_object(e)) {
            rc = rf_json_append(b, e, 0);
            continue;
        }
        rc = rf_buf_addc(b, '{');
        for (void *it = json_object_iter(e); it && rc == 0; it = json_object_iter_next(e, it)) {
            const char *key = json_object_iter_key(it);
            size_t klen = json_object_iter_key_len(it);
            json_t *v = json_object_iter_value(it);
            rc = rf_json_append_key(b, key, klen, first ? 0 : ',');
            if (rc == 0)
                rc = klen == 8 && memcmp(key, "fieldsV1", 8) == 0 && json_is_object(v)
                         ? store_put_frag(st, b, v, 3, 0)
                         : rf_json_append(b, v, 0);
            first = 0;
        }
        if (rc == 0)
            rc = rf_buf_addc(b, '}');
    }
    if (rc == 0)
        rc = rf_buf_addc(b, ']');
    return rc;
}

/* j (a member at depth 1 or 2 of a stored object, or a managedFields entry's fieldsV1 at 3)
 * as rf_json_append writes it, from its kept text when there is one; members of a depth 1
 * member go the same way, and a depth 2 managedFields list (managed) by store_put_managed. */
static int store_put_frag(ks_store_t *st, rf_buf_t *b, const json_t *j, int depth, int managed)
{
    struct ks_frag *f;
    size_t start = b->len;
    int rc;

    if (!json_is_object(j) && !json_is_array(j))
        return rf_json_append(b, j, 0);
    f = &st->frags[((uintptr_t)j >> 4) % KS_FRAGS];
    if (f->j == j)
        return rf_buf_add(b, f->text, f->len);
    if (depth == 2 && managed && json_is_array(j)) {
        rc = store_put_managed(st, b, j);
    } else if (depth >= 2 || json_is_array(j)) {
        rc = rf_json_append(b, j, 0);
    } else {
        int first = 1;
        rc = rf_buf_addc(b, '{');
        for (void *it = json_object_iter((json_t *)j); it && rc == 0;
             it = json_object_iter_next((json_t *)j, it)) {
            size_t klen = json_object_iter_key_len(it);
            rc = rf_json_append_key(b, json_object_iter_key(it), klen, first ? 0 : ',');
            if (rc == 0)
                rc = store_put_frag(st, b, json_object_iter_value(it), depth + 1,
                                    klen == 13 &&
                                        memcmp(json_object_iter_key(it), "managedFields", 13) == 0);
            first = 0;
        }
        if (rc == 0)
            rc = rf_buf_addc(b, '}');
    }
    if (rc == 0 && b->len - start >= KS_FRAG_MIN) {
        /* the member's slot may have been taken while its members were written */
        f = &st->frags[((uintptr_t)j >> 4) % KS_FRAGS];
        frag_release(f);
        f->text = malloc(b->len - start);
        if (!f->text)
            abort();
        memcpy(f->text, b->data + start, b->len - start);
        f->len = b->len - start;
        f->j = json_incref((json_t *)j);
    }
    return rc;
}

int ks_store_append_stored(ks_store_t *st, rf_buf_t *b, const json_t *obj)
{
    int first = 1;

    if (!json_is_object(obj))
        return ks_json_append(b, obj);
    if (rf_buf_addc(b, '{') != 0)
        return -1;
    for (void *it = json_object_iter((json_t *)obj); it;
         it = json_object_iter_next((json_t *)obj, it)) {
        if (rf_json_append_key(b, json_object_iter_key(it), json_object_iter_key_len(it),
                               first ? 0 : ',') != 0 ||
            store_put_frag(st, b, json_object_iter_value(it), 1, 0) != 0)
            return -1;
        first = 0;
    }
    return rf_buf_addc(b, '}');
}

const char *ks_store_event_line(ks_store_t *st, ks_event_t *e, size_t *len)
{
    if (!e->line) {
        rf_buf_t b = RF_BUF_INIT;
        /* as json_pack("{s:s, s:O}", "type", ..., "object", obj) dumps it */
        rf_buf_adds(&b, "{\"type\":\"");
        rf_buf_adds(&b, event_names[e->type]);
        rf_buf_adds(&b, "\",\"object\":");
        if (ks_store_append_stored(st, &b, e->obj) != 0)
            abort();
        rf_buf_adds(&b, "}\n");
        e->line_len = b.len;
        e->line = rf_buf_detach(&b);
    }
    *len = e->line_len;
    return e->line;
}

ks_obj_t *ks_store_put(ks_store_t *st, ks_kind_t kind, json_t *obj)
{
    json_t *meta = json_object_get(obj, "metadata");
    const char *name = json_string_value(json_object_get(meta, "name"));
    const char *ns = ks_kinds[kind].namespaced
                         ? json_string_value(json_object_get(meta, "namespace"))
                         : "";
    ks_obj_t *o = ks_store_get(st, kind, ns ? ns : "", name ? name : "");
    ks_table_t *t = &st->tables[kind];
    char rvs[32];
    json_t *prev = NULL;

    st->rv++;
    store_u64(rvs, st->rv);
    json_object_set_new(meta, "resourceVersion", json_stringn_nocheck(rvs, strlen(rvs)));
    if (!o) {
        char uid[40], ts[32];
        if (!json_object_get(meta, "uid")) {
            store_uid(st, uid);
            json_object_set_new(meta, "uid", json_string(uid));
        }
        if (!json_object_get(meta, "creationTimestamp") ||
            json_is_null(json_object_get(meta, "creationTimestamp"))) {
            ks_time_format(ks_now_ms(), ts, sizeof(ts));
            json_object_set_new(meta, "creationTimestamp", json_string(ts));
        }
        o = calloc(1, sizeof(*o));
        if (!o)
            abort();
        o->kind = kind;
        o->ns = strdup(ns ? ns : "");
        o->name = strdup(name ? name : "");
        o->seq = ++st->seq;
        if (t->count + 1 > t->nslots)
            table_grow(t);
        size_t j = store_hash(o->ns, o->name) & (t->nslots - 1);
        o->hnext = t->slots[j];
        t->slots[j] = o;
        t->count++;
    } else {
        prev = o->json;
    }
    o->json = obj;
    o->rv = st->rv;
    store_record(st, kind, prev ? KS_EV_MODIFIED : KS_EV_ADDED, obj, prev);
    json_decref(prev);
    if (st->on_change)
        st->on_change(st->on_change_cls, o, prev ? KS_EV_MODIFIED : KS_EV_ADDED);
    pthread_cond_broadcast(&st->changed[kind]);
    return o;
}

static void kid_remove(ks_obj_t *owner, ks_obj_t *kid)
{
    for (size_t i = 0; i < owner->nkids; i++) {
        if (owner->kids[i] == kid) {
            owner->kids[i] = owner->kids[--owner->nkids];
            return;
        }
    }
}

void ks_store_link(ks_obj_t *owner, ks_obj_t *kid)
{
    if (kid->owner == owner)
        return;
    if (kid->owner)
        kid_remove(kid->owner, kid);
    kid->owner = owner;
    if (owner->nkids == owner->kids_cap) {
        owner->kids_cap = owner->kids_cap ? owner->kids_cap * 2 : 4;
        owner->kids = realloc(owner->kids, owner->kids_cap * sizeof(*owner->kids));
        if (!owner->kids)
            abort();
    }
    owner->kids[owner->nkids++] = kid;
}

void ks_store_delete(ks_store_t *st, ks_obj_t *o)
{
    ks_kind_t kind = o->kind;
    ks_table_t *t = &st->tables[o->kind];
    size_t j = store_hash(o->ns, o->name) & (t->nslots - 1);
    ks_obj_t **pp = &t->slots[j];
    json_t *gone;
    char rvs[32];

    while (*pp && *pp != o)
        pp = &(*pp)->hnext;
    if (!*pp)
        return;
    *pp = o->hnext;
    t->count--;
    st->rv++;
    store_u64(rvs, st->rv);
    gone = ks_obj_copy(o->json);
    json_object_set_new(json_object_get(gone, "metadata"), "resourceVersion", json_string(rvs));
    store_record(st, o->kind, KS_EV_DELETED, gone, o->json);
    json_decref(gone);
    if (st->on_change)
        st->on_change(st->on_change_cls, o, KS_EV_DELETED);
    if (o->owner)
        kid_remove(o->owner, o);
    for (size_t i = 0; i < o->nkids; i++)
        o->kids[i]->owner = NULL;
    obj_free(o);
    pthread_cond_broadcast(&st->changed[kind]);
}

static int obj_cmp(const void *a, const void *b)
{
    const ks_obj_t *x = *(ks_obj_t *const *)a, *y = *(ks_obj_t *const *)b;
    int c = strcmp(x->ns, y->ns);

    return c ? c : strcmp(x->name, y->name);
}

ks_obj_t **ks_store_list(ks_store_t *st, ks_kind_t kind, const char *ns, size_t *n)
{
    ks_table_t *t = &st->tables[kind];
    ks_obj_t **out = malloc((t->count + 1) * sizeof(*out));
    size_t k = 0;

    if (!out)
        abort();
    for (size_t i = 0; i < t->nslots; i++)
        for (ks_obj_t *o = t->slots[i]; o; o = o->hnext)
            if (!ns || !*ns || strcmp(o->ns, ns) == 0)
                out[k++] = o;
    qsort(out, k, sizeof(*out), obj_cmp);
    *n = k;
    return out;
}

size_t ks_store_ring_seek(ks_store_t *st, ks_kind_t kind, uint64_t rv, int *expired)
{
    ks_ring_t *r = &st->rings[kind];
    size_t lo = 0, hi = r->len;

    *expired = r->evicted_rv > rv;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->ev[(r->start + mid) % r->cap].rv <= rv)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

ks_event_t *ks_store_ring_at(ks_store_t *st, ks_kind_t kind, size_t i)
{
    ks_ring_t *r = &st->rings[kind];

    if (i >= r->len)
        return NULL;
    return &r->ev[(r->start + i) % r->cap];
}

void ks_store_wait(ks_store_t *st, ks_kind_t kind, int64_t deadline_ms)
{
    struct timespec ts;

    ts.tv_sec = deadline_ms / 1000;
    ts.tv_nsec = (deadline_ms % 1000) * 1000000;
    pthread_cond_timedwait(&st->changed[kind], &st->lock, &ts);
}

void ks_store_stop(ks_store_t *st)
{
    pthread_mutex_lock(&st->lock);
    st->stopping = 1;
    for (int k = 0; k < KS_KIND_COUNT; k++)
        pthread_cond_broadcast(&st->changed[k]);
    pthread_mutex_unlock(&st->lock);
}

json_t *ks_obj_copy(const json_t *obj)
{
    json_t *copy = json_copy((json_t *)obj);

    if (copy)
        ks_jcow(copy, "metadata");
    return copy;
}

json_t *ks_jcow(json_t *parent, const char *key)
{
    json_t *v = json_object_get(parent, key), *copy;

    if (!json_is_object(v) && !json_is_array(v))
        return NULL;
    copy = json_copy(v);
    if (!copy)
        abort();
    json_object_set_new(parent, key, copy);
    return copy;
}

json_t *ks_jget(const json_t *obj, const char *dotted)
{
    const json_t *cur = obj;
    const char *p = dotted;

    while (*p && cur) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= 128) /* as the segment buffer this had */
            return NULL;
        cur = json_object_getn(cur, p, n);
        p += n;
        if (*p == '.')
            p++;
    }
    return (json_t *)cur;
}

int64_t ks_jint(const json_t *obj, const char *dotted, int64_t def)
{
    json_t *v = ks_jget(obj, dotted);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

const char *ks_jstr(const json_t *obj, const char *dotted)
{
    return json_string_value(ks_jget(obj, dotted));
}

void ks_jset(json_t *obj, const char *dotted, json_t *value)
{
    json_t *cur = obj;
    const char *p = dotted;
    char seg[128];

    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof(seg))
            n = sizeof(seg) - 1;
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (!dot) {
            json_object_set_new(cur, seg, value);
            return;
        }
        json_t *next = json_object_get(cur, seg);
        if (!json_is_object(next)) {
            next = json_object();
            json_object_set_new(cur, seg, next);
        }
        cur = next;
        p = dot + 1;
    }
}
