/* The service lock: a Redis key per (env, service) with a lease, plus a fencing token. */
#ifndef RF_LOCK_H
#define RF_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "rf_config.h"
#include "rf_err.h"

typedef struct rf_lock rf_lock_t;

/* Connects to Redis as conf says (redis_url and the redis_* settings: see rf_redis.h, which
 * also follows a Sentinel failover). NULL on failure, with *err (if not NULL) RF_ERR_RETRY
 * when a server or every Sentinel is unreachable, RF_ERR_PERM for a bad URL, a refused
 * AUTH, an unknown master name, a TLS certificate not verified. */
rf_lock_t *rf_lock_new(const rf_config_t *conf, rf_err_t *err, char *errstr,
                       size_t errstr_size);
void rf_lock_destroy(rf_lock_t *lock);

/* Tries to take the lock of env/service for release_id with a lease of lease_ms.
 * *acquired is 1 when this release holds it (also when it already did: redelivery),
 * 0 when another release does (holder, if not NULL, gets its id: 64 bytes).
 * On acquisition *fence gets a token larger than every earlier one of this service
 * and larger than floor (the fence PostgreSQL knows, so a Redis that lost its data
 * never hands out an old token again). */
rf_err_t rf_lock_acquire(rf_lock_t *lock, const char *env, const char *service,
                         const char *release_id, int lease_ms, int64_t floor, int *acquired,
                         int64_t *fence, char *holder, char *errstr, size_t errstr_size);

/* Extends the lease while release_id holds the lock, or takes it back if the key was
 * lost (Redis restarted); *held is 0 when another release holds it now. */
rf_err_t rf_lock_renew(rf_lock_t *lock, const char *env, const char *service,
                       const char *release_id, int lease_ms, int *held, char *errstr,
                       size_t errstr_size);

/* One lock of a pipelined call: which one, and (renew) whether its release holds it. */
typedef struct rf_lock_item {
    const char *env;
    const char *service;
    const char *release_id;
    int held; /* set by rf_lock_renew_many */
} rf_lock_item_t;

/* rf_lock_renew for n locks in pipelined round trips (a few hundred commands each):
 * items[i].held as rf_lock_renew's *held. On an error the items not yet answered keep
 * held 0 and the call can be repeated as a whole. */
rf_err_t rf_lock_renew_many(rf_lock_t *lock, rf_lock_item_t *items, size_t n, int lease_ms,
                            char *errstr, size_t errstr_size);

/* One lock to take in a pipelined call: which one, the PostgreSQL floor, and the answer. */
typedef struct rf_lock_take {
    const char *env;
    const char *service;
    const char *release_id;
    int64_t floor;   /* as rf_lock_acquire's floor */
    int acquired;    /* set by rf_lock_acquire_many, as rf_lock_acquire's *acquired */
    int64_t fence;   /* on acquisition, the token (larger than floor) */
    char holder[64]; /* when not acquired, the release that holds it */
} rf_lock_take_t;

/* rf_lock_acquire for n locks (of distinct services) in pipelined round trips, each with
 * the same script, so the fencing token and the floor rule are those of rf_lock_acquire.
 * On an error the items not yet answered keep acquired 0 and the call can be repeated as
 * a whole (acquisition by the holder is idempotent: the same token again). */
rf_err_t rf_lock_acquire_many(rf_lock_t *lock, rf_lock_take_t *items, size_t n, int lease_ms,
                              char *errstr, size_t errstr_size);

/* rf_lock_release for n locks in pipelined round trips. */
rf_err_t rf_lock_release_many(rf_lock_t *lock, const rf_lock_item_t *items, size_t n,
                              char *errstr, size_t errstr_size);

/* Deletes the lock only if release_id holds it (compare-and-delete), so running it twice
 * (rf_redis repeats a command after a failover) never frees a lock another release took
 * meanwhile. There is no unconditional delete: supersede ends the running release, whose
 * end releases its lock this way (rf_worker_end_release). */
rf_err_t rf_lock_release(rf_lock_t *lock, const char *env, const char *service,
                         const char *release_id, char *errstr, size_t errstr_size);

#endif
