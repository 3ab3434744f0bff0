/* Service lock on Redis: NX + lease, compare-and-delete, fencing counter (Lua scripts). */
#include "rf_lock.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_redis.h"

struct rf_lock {
    rf_redis_t *redis;
    char renew_sha[41]; /* SHA1 of the scripts, for EVALSHA */
    char release_sha[41];
    char acquire_sha[41];
};

#define LOCK_PIPELINE 512 /* commands per round trip of the *_many calls */

/* KEYS: lock, fence. ARGV: release id, lease ms, floor. */
static const char lock_acquire_lua[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return {1, redis.call('GET', KEYS[2]) or '0'}\n"
    "end\n"
    "if cur then return {0, cur} end\n"
    "local f = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "if f < tonumber(ARGV[3]) then redis.call('SET', KEYS[2], ARGV[3]) end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "return {1, tostring(redis.call('INCR', KEYS[2]))}\n";

/* KEYS: lock. ARGV: release id, lease ms. */
static const char lock_renew_lua[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == ARGV[1] or not cur then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

static const char lock_release_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* The hex SHA1 of a script, as EVALSHA names it. */
static void lock_sha(const char *script, char sha[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    EVP_Digest(script, strlen(script), md, &n, EVP_sha1(), NULL);
    for (unsigned int i = 0; i < n && i < 20; i++)
        snprintf(sha + 2 * i, 3, "%02x", md[i]);
}

rf_lock_t *rf_lock_new(const rf_config_t *conf, rf_err_t *err, char *errstr,
                       size_t errstr_size)
{
    rf_lock_t *lock = calloc(1, sizeof(*lock));
    char peer[768];
    rf_err_t result = RF_ERR_PERM;

    if (!lock)
        abort();
    lock_sha(lock_renew_lua, lock->renew_sha);
    lock_sha(lock_release_lua, lock->release_sha);
    lock_sha(lock_acquire_lua, lock->acquire_sha);
    lock->redis = rf_redis_new(conf, errstr, errstr_size);
    if (lock->redis)
        result = rf_redis_check(lock->redis, peer, sizeof(peer));
    if (lock->redis && result != RF_OK)
        snprintf(errstr, errstr_size, "%s", peer);
    if (err)
        *err = result;
    if (result != RF_OK) {
        rf_lock_destroy(lock);
        return NULL;
    }
    return lock;
}

void rf_lock_destroy(rf_lock_t *lock)
{
    if (!lock)
        return;
    rf_redis_destroy(lock->redis);
    free(lock);
}

/* Runs a script. rf_redis follows a failover (a lost connection, READONLY, LOADING,
 * +switch-master) and runs the script once more on the new master: every script here is
 * idempotent per release id (acquire by the holder only extends its lease and returns
 * its token, renew and release compare the id), so running it twice is safe. */
static rf_err_t lock_eval(rf_lock_t *lock, const char *script, int argc, const char **argv,
                          redisReply **reply, char *errstr, size_t errstr_size)
{
    const char *args[8];
    size_t lens[8];
    redisReply *r = NULL;
    rf_err_t result;

    *reply = NULL;
    args[0] = "EVAL";
    args[1] = script;
    for (int i = 0; i < argc && i < 6; i++)
        args[2 + i] = argv[i];
    for (int i = 0; i < argc + 2; i++)
        lens[i] = strlen(args[i]);
    result = rf_redis_command(lock->redis, argc + 2, args, lens, &r, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (r->type == REDIS_REPLY_ERROR) {
        /* BUSY and the like clear up by themselves */
        rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis: %s", r->str);
        freeReplyObject(r);
        return RF_ERR_RETRY;
    }
    *reply = r;
    return RF_OK;
}

static void lock_key(char *buf, size_t size, const char *kind, const char *env,
                     const char *service)
{
    snprintf(buf, size, "relfleet:%s:%s/%s", kind, env, service);
}

/* The acquire script's answer: {1, token} or {0, holder}. */
static rf_err_t lock_acquire_reply(const redisReply *r, int *acquired, int64_t *fence,
                                   char *holder, char *errstr, size_t errstr_size)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis: unexpected lock reply");
    *acquired = (int)r->element[0]->integer;
    if (*acquired)
        *fence = strtoll(r->element[1]->str, NULL, 10);
    else if (holder)
        snprintf(holder, 64, "%s", r->element[1]->str);
    return RF_OK;
}

rf_err_t rf_lock_acquire(rf_lock_t *lock, const char *env, const char *service,
                         const char *release_id, int lease_ms, int64_t floor, int *acquired,
                         int64_t *fence, char *holder, char *errstr, size_t errstr_size)
{
    char lkey[300], fkey[300], lease[24], floor_s[24];
    const char *argv[6] = {"2", lkey, fkey, release_id, lease, floor_s};
    redisReply *r;
    rf_err_t result;

    lock_key(lkey, sizeof(lkey), "lock", env, service);
    lock_key(fkey, sizeof(fkey), "fence", env, service);
    snprintf(lease, sizeof(lease), "%d", lease_ms);
    snprintf(floor_s, sizeof(floor_s), "%lld", (long long)floor);
    *acquired = 0;
    *fence = 0;
    result = lock_eval(lock, lock_acquire_lua, 6, argv, &r, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    result = lock_acquire_reply(r, acquired, fence, holder, errstr, errstr_size);
    freeReplyObject(r);
    return result;
}

rf_err_t rf_lock_renew(rf_lock_t *lock, const char *env, const char *service,
                       const char *release_id, int lease_ms, int *held, char *errstr,
                       size_t errstr_size)
{
    char lkey[300], lease[24];
    const char *argv[4] = {"1", lkey, release_id, lease};
    redisReply *r;
    rf_err_t result;

    lock_key(lkey, sizeof(lkey), "lock", env, service);
    snprintf(lease, sizeof(lease), "%d", lease_ms);
    *held = 0;
    result = lock_eval(lock, lock_renew_lua, 4, argv, &r, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    *held = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return RF_OK;
}

rf_err_t rf_lock_release(rf_lock_t *lock, const char *env, const char *service,
                         const char *release_id, char *errstr, size_t errstr_size)
{
    char lkey[300];
    const char *argv[3] = {"1", lkey, release_id};
    redisReply *r;
    rf_err_t result;

    lock_key(lkey, sizeof(lkey), "lock", env, service);
    result = lock_eval(lock, lock_release_lua, 3, argv, &r, errstr, errstr_size);
    if (result == RF_OK)
        freeReplyObject(r);
    return result;
}

/* Renews (renew = 1) or releases the locks [start, end) in one round trip. A script the
 * server lacks (NOSCRIPT: SCRIPT FLUSH, a new master after a failover) is sent whole for
 * those locks, which caches it there for the next EVALSHA. */
static rf_err_t lock_chunk(rf_lock_t *lock, rf_lock_item_t *items, const rf_lock_item_t *citems,
                           size_t start, size_t end, int lease_ms, int renew, char *errstr,
                           size_t errstr_size)
{
    const char *sha = renew ? lock->renew_sha : lock->release_sha;
    char lkey[300], lease[24];
    unsigned char lost[LOCK_PIPELINE];
    rf_err_t result = RF_OK, fatal = RF_OK;
    size_t sent = 0;
    int nlost = 0;

    snprintf(lease, sizeof(lease), "%d", lease_ms);
    /* sent counts what was queued: a failed append (no connection) queued nothing, and
     * its error is the one to report */
    for (size_t i = start; i < end && result == RF_OK; i++) {
        const rf_lock_item_t *it = &citems[i];
        const char *args[6] = {"EVALSHA", sha, "1", lkey, it->release_id, lease};
        size_t lens[6];
        int argc = renew ? 6 : 5;

        lock_key(lkey, sizeof(lkey), "lock", it->env, it->service);
        for (int a = 0; a < argc; a++)
            lens[a] = strlen(args[a]);
        result = rf_redis_append(lock->redis, argc, args, lens, errstr, errstr_size);
        if (result == RF_OK)
            sent++;
    }
    /* every reply is read, so the connection stays in step after an error reply */
    for (size_t i = start; i < start + sent && !fatal; i++) {
        redisReply *r = NULL;

        lost[i - start] = 0;
        fatal = rf_redis_get_reply(lock->redis, &r, errstr, errstr_size);
        if (fatal != RF_OK)
            result = fatal;
        else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
            lost[i - start] = 1;
            nlost++;
        } else if (r->type == REDIS_REPLY_ERROR && result == RF_OK) {
            result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis: %s", r->str);
        } else if (renew) {
            items[i].held = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        }
        freeReplyObject(r);
    }
    for (size_t i = start; i < end && nlost && result == RF_OK; i++) {
        const rf_lock_item_t *it = &citems[i];
        if (!lost[i - start])
            continue;
        if (renew)
            result = rf_lock_renew(lock, it->env, it->service, it->release_id, lease_ms,
                                   &items[i].held, errstr, errstr_size);
        else
            result = rf_lock_release(lock, it->env, it->service, it->release_id, errstr,
                                     errstr_size);
    }
    return result;
}

/* Renews or releases n locks, LOCK_PIPELINE commands per round trip. A round trip that a
 * failover interrupted (rf_redis gave up a working connection) runs once more on the new
 * master: renew and release are idempotent per release id. */
static rf_err_t lock_pipeline(rf_lock_t *lock, rf_lock_item_t *items, const rf_lock_item_t *citems,
                              size_t n, int lease_ms, int renew, char *errstr, size_t errstr_size)
{
    rf_err_t result = RF_OK;

    for (size_t start = 0; start < n && result == RF_OK; start += LOCK_PIPELINE) {
        size_t end = n - start > LOCK_PIPELINE ? start + LOCK_PIPELINE : n;

        for (int attempt = 0; attempt < 2; attempt++) {
            unsigned drops = rf_redis_drops(lock->redis);
            result = lock_chunk(lock, items, citems, start, end, lease_ms, renew, errstr,
                                errstr_size);
            if (result != RF_ERR_RETRY || rf_redis_drops(lock->redis) == drops)
                break;
        }
    }
    return result;
}

rf_err_t rf_lock_renew_many(rf_lock_t *lock, rf_lock_item_t *items, size_t n, int lease_ms,
                            char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < n; i++)
        items[i].held = 0;
    return lock_pipeline(lock, items, items, n, lease_ms, 1, errstr, errstr_size);
}

rf_err_t rf_lock_release_many(rf_lock_t *lock, const rf_lock_item_t *items, size_t n,
                              char *errstr, size_t errstr_size)
{
    return lock_pipeline(lock, NULL, items, n, 0, 0, errstr, errstr_size);
}

/* Takes the locks [start, end) in one round trip (EVALSHA; a NOSCRIPT answer is run again
 * with the whole script, as lock_chunk does). */
static rf_err_t lock_acquire_chunk(rf_lock_t *lock, rf_lock_take_t *items, size_t start,
                                   size_t end, int lease_ms, char *errstr, size_t errstr_size)
{
    char lkey[300], fkey[300], lease[24], floor_s[24];
    unsigned char lost[LOCK_PIPELINE];
    rf_err_t result = RF_OK, fatal = RF_OK;
    size_t sent = 0;
    int nlost = 0;

    snprintf(lease, sizeof(lease), "%d", lease_ms);
    for (size_t i = start; i < end && result == RF_OK; i++) {
        rf_lock_take_t *it = &items[i];
        const char *args[7] = {"EVALSHA", lock->acquire_sha, "2", lkey, fkey, it->release_id,
                               lease};
        const char *all[8];
        size_t lens[8];

        lock_key(lkey, sizeof(lkey), "lock", it->env, it->service);
        lock_key(fkey, sizeof(fkey), "fence", it->env, it->service);
        snprintf(floor_s, sizeof(floor_s), "%lld", (long long)it->floor);
        for (int a = 0; a < 7; a++)
            all[a] = args[a];
        all[7] = floor_s;
        for (int a = 0; a < 8; a++)
            lens[a] = strlen(all[a]);
        result = rf_redis_append(lock->redis, 8, all, lens, errstr, errstr_size);
        if (result == RF_OK)
            sent++;
    }
    /* every reply is read, so the connection stays in step after an error reply */
    for (size_t i = start; i < start + sent && !fatal; i++) {
        redisReply *r = NULL;

        lost[i - start] = 0;
        fatal = rf_redis_get_reply(lock->redis, &r, errstr, errstr_size);
        if (fatal != RF_OK) {
            result = fatal;
        } else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
            lost[i - start] = 1;
            nlost++;
        } else if (r->type == REDIS_REPLY_ERROR) {
            if (result == RF_OK)
                result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis: %s", r->str);
        } else if (result == RF_OK) {
            result = lock_acquire_reply(r, &items[i].acquired, &items[i].fence, items[i].holder,
                                        errstr, errstr_size);
        }
        freeReplyObject(r);
    }
    for (size_t i = start; i < end && nlost && result == RF_OK; i++) {
        rf_lock_take_t *it = &items[i];
        if (!lost[i - start])
            continue;
        result = rf_lock_acquire(lock, it->env, it->service, it->release_id, lease_ms, it->floor,
                                 &it->acquired, &it->fence, it->holder, errstr, errstr_size);
    }
    return result;
}

rf_err_t rf_lock_acquire_many(rf_lock_t *lock, rf_lock_take_t *items, size_t n, int lease_ms,
                              char *errstr, size_t errstr_size)
{
    rf_err_t result = RF_OK;

    for (size_t i = 0; i < n; i++) {
        items[i].acquired = 0;
        items[i].fence = 0;
        items[i].holder[0] = '\0';
    }
    /* A round trip a failover interrupted runs once more on the new master: the holder's
     * acquisition only extends its lease and answers its token again. */
    for (size_t start = 0; start < n && result == RF_OK; start += LOCK_PIPELINE) {
        size_t end = n - start > LOCK_PIPELINE ? start + LOCK_PIPELINE : n;

        for (int attempt = 0; attempt < 2; attempt++) {
            unsigned drops = rf_redis_drops(lock->redis);
            result = lock_acquire_chunk(lock, items, start, end, lease_ms, errstr, errstr_size);
            if (result != RF_ERR_RETRY || rf_redis_drops(lock->redis) == drops)
                break;
        }
    }
    return result;
}
