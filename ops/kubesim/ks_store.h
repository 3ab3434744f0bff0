/* The object store of kubesim: objects per kind, resourceVersions, and the watch event rings. */
#ifndef KS_STORE_H
#define KS_STORE_H

#include "rf_buf.h"

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ks_kind {
    KS_NAMESPACE = 0,
    KS_DEPLOYMENT,
    KS_REPLICASET,
    KS_POD,
    KS_SERVICE,
    KS_EVENT,
    KS_INGRESS,
    KS_CONFIGMAP,
    KS_SECRET,
    KS_SERVICEACCOUNT,
    KS_PDB,
    KS_ROLE,
    KS_ROLEBINDING,
    KS_CLUSTERROLE,
    KS_CLUSTERROLEBINDING,
    KS_KIND_COUNT,
} ks_kind_t;

typedef struct ks_kind_info {
    const char *kind;       /* "Deployment" */
    const char *resource;   /* "deployments" */
    const char *group;      /* "" for core, "apps", "networking.k8s.io", "policy", ... */
    const char *api_version; /* "v1", "apps/v1" */
    const char *list_kind;  /* "DeploymentList" */
    int namespaced;
    int has_generation;
} ks_kind_info_t;

extern const ks_kind_info_t ks_kinds[KS_KIND_COUNT];

typedef enum ks_event_type {
    KS_EV_ADDED = 0,
    KS_EV_MODIFIED,
    KS_EV_DELETED,
} ks_event_type_t;

/* The written text of a member of stored objects (ks_store_append_stored). */
struct ks_frag;

/* One pod's simulated life, owned by the controller. */
struct ks_podsim;

/* A stored object. Its json is immutable once stored: writers copy, change, and put. */
typedef struct ks_obj {
    ks_kind_t kind;
    char *ns;   /* "" for cluster-scoped kinds */
    char *name;
    json_t *json;
    uint64_t rv;
    uint64_t seq; /* creation order */
    struct ks_obj *hnext;
    /* controller bookkeeping: the controlling owner and the owned objects */
    struct ks_obj *owner;
    struct ks_obj **kids;
    size_t nkids, kids_cap;
    int queued;
    struct ks_podsim *sim;
    int64_t progress_ms; /* deployments: when the Progressing condition last changed */
    int64_t ready_ms;    /* pods: when the Ready condition became true, 0 when not ready */
    int64_t expire_ms;   /* events: when the Event expires (--event-ttl), 0 never */
    /* replicasets: the controller's last comparison of this one's template (tmpl_own) with
     * its Deployment's (tmpl_dep), both held (so neither address is reused while kept:
     * stored trees never change), and its answer */
    json_t *tmpl_own, *tmpl_dep;
    int tmpl_match;
} ks_obj_t;

/* One event in a kind's ring: shared by every watcher, read under the store lock. */
typedef struct ks_event {
    uint64_t rv;
    ks_event_type_t type;
    json_t *obj;  /* the object after the change (or as deleted) */
    json_t *prev; /* the object before, NULL for ADDED */
    char *line;   /* {"type":..,"object":..}\n, NULL until ks_store_event_line */
    size_t line_len;
} ks_event_t;

typedef struct ks_ring {
    ks_event_t *ev;
    size_t cap, start, len;
    uint64_t evicted_rv; /* newest rv dropped from the ring; 0 when none */
} ks_ring_t;

typedef struct ks_table {
    ks_obj_t **slots;
    size_t nslots, count;
} ks_table_t;

typedef struct ks_store {
    pthread_mutex_t lock;
    /* broadcast after every write of the kind: a watcher wakes for its own kind's events
     * only, not for each write of a Pod, a ReplicaSet or an Event */
    pthread_cond_t changed[KS_KIND_COUNT];
    uint64_t rv;
    uint64_t seq;
    uint64_t uid_counter;
    ks_table_t tables[KS_KIND_COUNT];
    ks_ring_t rings[KS_KIND_COUNT];
    int stopping;
    /* random bytes for uids and generated names, drawn from RAND_bytes a pool at a time */
    unsigned char rand_pool[4096];
    size_t rand_left;
    struct ks_frag *frags; /* KS_FRAGS slots, by the member's address */
    /* hook called (lock held) after every stored change, for the controller */
    void (*on_change)(void *cls, ks_obj_t *obj, ks_event_type_t type);
    void *on_change_cls;
} ks_store_t;

/* ring_size: events kept per kind for watch resume. */
ks_store_t *ks_store_new(size_t ring_size);
void ks_store_destroy(ks_store_t *st);

void ks_store_lock(ks_store_t *st);
void ks_store_unlock(ks_store_t *st);

/* Lock held. NULL when absent. ns is "" for cluster-scoped kinds. */
ks_obj_t *ks_store_get(ks_store_t *st, ks_kind_t kind, const char *ns, const char *name);

/* Lock held. Stores obj (steals the reference) as a new object or the new version of an
 * existing one: sets metadata.resourceVersion, and on creation uid and
 * creationTimestamp; records the event for watchers. Returns the stored entry. */
ks_obj_t *ks_store_put(ks_store_t *st, ks_kind_t kind, json_t *obj);

/* Lock held. Removes the entry (and frees it) with a DELETED event. */
void ks_store_delete(ks_store_t *st, ks_obj_t *o);

/* Lock held. All objects of a kind (in namespace ns, or every namespace when ns is NULL)
 * sorted by namespace and name; free() the array. */
ks_obj_t **ks_store_list(ks_store_t *st, ks_kind_t kind, const char *ns, size_t *n);

/* Lock held. The first ring index holding an event newer than rv; sets *expired when
 * events newer than rv were already dropped. */
size_t ks_store_ring_seek(ks_store_t *st, ks_kind_t kind, uint64_t rv, int *expired);
/* Lock held. The i-th event of the ring (0 = oldest kept), NULL past the end. */
ks_event_t *ks_store_ring_at(ks_store_t *st, ks_kind_t kind, size_t i);
/* Lock held. The watch line of e ({"type":..,"object":..} and a newline), serialised on
 * first use (ks_store_append_stored) and kept with the event; *len is its length. */
const char *ks_store_event_line(ks_store_t *st, ks_event_t *e, size_t *len);

/* Lock held. ks_json_append of obj, a stored object (or a version of one in a ring): the
 * same bytes, but the members of obj and of its members that are objects or arrays are
 * written once and their text kept (a few hundred, by address, each member held so its
 * address is not reused: stored trees never change), since the versions of an object
 * share most of them (a Deployment's status write shares spec and managedFields with the
 * version before; the answer to a write and the watch line of it share everything). */
int ks_store_append_stored(ks_store_t *st, rf_buf_t *b, const json_t *obj);

/* Appends the compact JSON of j to b (as json_dumps(j, JSON_COMPACT) writes it); 0 or -1. */
int ks_json_append(rf_buf_t *b, const json_t *j);
/* The same with every object's keys sorted (json_dumps with JSON_COMPACT | JSON_SORT_KEYS). */
int ks_json_append_sorted(rf_buf_t *b, const json_t *j);
/* The same for any value (a string, a number, ... as json_dumps with JSON_ENCODE_ANY). */
int ks_json_append_value(rf_buf_t *b, const json_t *j);

/* A deep copy of j (NULL for NULL), as json_deep_copy makes it but without jansson 2.14's
 * loop check (a snprintf and a hash table entry per object and array); objects and arrays
 * here are trees. */
json_t *ks_json_copy(const json_t *j);

/* json_equal(a, b), without a hash lookup per member where two objects have their members in
 * the same order (a version and its changed copy: the controller's every commit asks). */
int ks_json_equal(const json_t *a, const json_t *b);

/* Lock held. Fills out with n (at most 64) random bytes from OpenSSL's RAND_bytes, which
 * fills a pool of them at a time (a call costs ~6,600 instructions whatever its size);
 * -1 when RAND_bytes fails. */
int ks_store_random(ks_store_t *st, unsigned char *out, size_t n);

/* Lock held. Waits for a change of kind, ks_store_stop or until deadline_ms
 * (CLOCK_REALTIME ms). */
void ks_store_wait(ks_store_t *st, ks_kind_t kind, int64_t deadline_ms);

/* Wakes every waiter and makes them see st->stopping. */
void ks_store_stop(ks_store_t *st);

/* Lock held. Owner links used by the controller. */
void ks_store_link(ks_obj_t *owner, ks_obj_t *kid);

/* Stored objects share members between versions: a writer never changes a stored tree
 * in place. ks_obj_copy is the new version to change and put: a shallow copy of obj with
 * a metadata object of its own (put sets resourceVersion there); every other member is
 * shared with obj until replaced, or copied with ks_jcow before it is changed. */
json_t *ks_obj_copy(const json_t *obj);
/* Copy on write of one level: replaces parent[key] (an object or array) by a shallow
 * copy of itself and returns it (borrowed); NULL, and nothing changed, otherwise. */
json_t *ks_jcow(json_t *parent, const char *key);

/* The value at a dotted path ("spec.template.metadata.labels"), NULL when absent. */
json_t *ks_jget(const json_t *obj, const char *dotted);
/* Integer / string at a dotted path, or def / NULL. */
int64_t ks_jint(const json_t *obj, const char *dotted, int64_t def);
const char *ks_jstr(const json_t *obj, const char *dotted);
/* Sets value (stolen) at a dotted path, creating the objects on the way. */
void ks_jset(json_t *obj, const char *dotted, json_t *value);

/* Wall-clock milliseconds (CLOCK_REALTIME). */
int64_t ks_now_ms(void);
/* RFC 3339 UTC timestamp of ms, at second precision as metav1.Time ("2024-01-02T03:04:05Z"). */
void ks_time_format(int64_t ms, char *out, size_t out_size);
/* Parses an RFC 3339 timestamp; -1 on error. */
int64_t ks_time_parse(const char *s);

#endif
