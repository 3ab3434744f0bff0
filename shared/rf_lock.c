/* Service lock on Redis: NX + lease, compare-and-delete, fencing counter (Lua scripts). */
#include "rf_lock.h"

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rf_lock {
    redisContext *rc;
    char *host;
    int port;
    char *password;
    int db;
    char renew_sha[48];   /* the scripts as loaded on this connection ("" = send them) */
    char release_sha[48];
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

/* Loads a script for EVALSHA; sha stays "" (send the script) if that fails. */
static void lock_load(rf_lock_t *lock, const char *script, char *sha, size_t size)
{
    redisReply *r = redisCommand(lock->rc, "SCRIPT LOAD %s", script);

    sha[0] = '\0';
    if (r && r->type == REDIS_REPLY_STRING && r->len < size)
        snprintf(sha, size, "%s", r->str);
    freeReplyObject(r);
}

static rf_err_t lock_connect(rf_lock_t *lock, char *errstr, size_t errstr_size)
{
    struct timeval tv = {2, 0};
    redisReply *r;

    if (lock->rc && !lock->rc->err)
        return RF_OK;
    if (lock->rc)
        redisFree(lock->rc);
    lock->rc = redisConnectWithTimeout(lock->host, lock->port, tv);
    if (!lock->rc || lock->rc->err) {
        rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot connect to redis at %s:%d: %s",
                lock->host, lock->port, lock->rc ? lock->rc->errstr : "out of memory");
        redisFree(lock->rc);
        lock->rc = NULL;
        return RF_ERR_RETRY;
    }
    redisSetTimeout(lock->rc, tv);
    if (lock->password) {
        r = redisCommand(lock->rc, "AUTH %s", lock->password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            rf_errf(r ? RF_ERR_PERM : RF_ERR_RETRY, errstr, errstr_size,
                    "redis refused authentication: %s", r ? r->str : lock->rc->errstr);
            freeReplyObject(r);
            redisFree(lock->rc);
            lock->rc = NULL;
            return RF_ERR_RETRY;
        }
        freeReplyObject(r);
    }
    if (lock->db) {
        r = redisCommand(lock->rc, "SELECT %d", lock->db);
        freeReplyObject(r);
    }
    lock_load(lock, lock_renew_lua, lock->renew_sha, sizeof(lock->renew_sha));
    lock_load(lock, lock_release_lua, lock->release_sha, sizeof(lock->release_sha));
    return RF_OK;
}

rf_lock_t *rf_lock_new(const char *redis_url, char *errstr, size_t errstr_size)
{
    rf_lock_t *lock = calloc(1, sizeof(*lock));
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *pass = NULL, *path = NULL;

    if (!lock || !u)
        abort();
    if (curl_url_set(u, CURLUPART_URL, redis_url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad redis url: expected redis://host:port/db");
        goto fail;
    }
    lock->host = strdup(host);
    lock->port = 6379;
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
        lock->port = atoi(port);
    if (curl_url_get(u, CURLUPART_PASSWORD, &pass, CURLU_URLDECODE) == CURLUE_OK && *pass)
        lock->password = strdup(pass);
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && path[0] == '/' && path[1])
        lock->db = atoi(path + 1);
    curl_free(host);
    curl_free(port);
    curl_free(pass);
    curl_free(path);
    curl_url_cleanup(u);
    if (lock_connect(lock, errstr, errstr_size) != RF_OK) {
        rf_lock_destroy(lock);
        return NULL;
    }
    return lock;
fail:
    curl_free(host);
    curl_url_cleanup(u);
    rf_lock_destroy(lock);
    return NULL;
}

void rf_lock_destroy(rf_lock_t *lock)
{
    if (!lock)
        return;
    if (lock->rc)
        redisFree(lock->rc);
    free(lock->host);
    free(lock->password);
    free(lock);
}

/* Runs a script; a connection failure drops the connection so the next call reconnects. */
static rf_err_t lock_eval(rf_lock_t *lock, const char *script, int argc, const char **argv,
                          redisReply **reply, char *errstr, size_t errstr_size)
{
    rf_err_t result = lock_connect(lock, errstr, errstr_size);
    const char *args[8];
    size_t lens[8];
    redisReply *r;

    *reply = NULL;
    if (result != RF_OK)
        return result;
    args[0] = "EVAL";
    args[1] = script;
    for (int i = 0; i < argc && i < 6; i++)
        args[2 + i] = argv[i];
    for (int i = 0; i < argc + 2; i++)
        lens[i] = strlen(args[i]);
    r = redisCommandArgv(lock->rc, argc + 2, args, lens);
    if (!r) {
        rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis: %s", lock->rc->errstr);
        redisFree(lock->rc);
        lock->rc = NULL;
        return RF_ERR_RETRY;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* LOADING, BUSY, READONLY and the like clear up by themselves */
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
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis: unexpected lock reply");
    }
    *acquired = (int)r->element[0]->integer;
    if (*acquired)
        *fence = strtoll(r->element[1]->str, NULL, 10);
    else if (holder)
        snprintf(holder, 64, "%s", r->element[1]->str);
    freeReplyObject(r);
    return RF_OK;
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

rf_err_t rf_lock_break(rf_lock_t *lock, const char *env, const char *service, char *errstr,
                       size_t errstr_size)
{
    char lkey[300];
    const char *argv[2] = {"1", lkey};
    redisReply *r;
    rf_err_t result;

    lock_key(lkey, sizeof(lkey), "lock", env, service);
    result = lock_eval(lock, "return redis.call('DEL', KEYS[1])", 2, argv, &r, errstr,
                       errstr_size);
    if (result == RF_OK)
        freeReplyObject(r);
    return result;
}

/* Renews (renew = 1) or releases n locks, LOCK_PIPELINE commands per round trip. A script
 * the server lost (NOSCRIPT: SCRIPT FLUSH) is sent whole, now and from then on. */
static rf_err_t lock_pipeline(rf_lock_t *lock, rf_lock_item_t *items, const rf_lock_item_t *citems,
                              size_t n, int lease_ms, int renew, char *errstr, size_t errstr_size)
{
    const char *script = renew ? lock_renew_lua : lock_release_lua;
    char lkey[300], lease[24];
    unsigned char lost[LOCK_PIPELINE];
    rf_err_t result = RF_OK;

    snprintf(lease, sizeof(lease), "%d", lease_ms);
    for (size_t start = 0; start < n && result == RF_OK; start += LOCK_PIPELINE) {
        size_t end = n - start > LOCK_PIPELINE ? start + LOCK_PIPELINE : n;
        char *sha;
        int nlost = 0;

        result = lock_connect(lock, errstr, errstr_size);
        if (result != RF_OK)
            return result;
        sha = renew ? lock->renew_sha : lock->release_sha;
        for (size_t i = start; i < end; i++) {
            const rf_lock_item_t *it = &citems[i];
            const char *args[6] = {*sha ? "EVALSHA" : "EVAL", *sha ? sha : script, "1", lkey,
                                   it->release_id, lease};
            size_t lens[6];
            int argc = renew ? 6 : 5;

            lock_key(lkey, sizeof(lkey), "lock", it->env, it->service);
            for (int a = 0; a < argc; a++)
                lens[a] = strlen(args[a]);
            redisAppendCommandArgv(lock->rc, argc, args, lens);
        }
        for (size_t i = start; i < end; i++) {
            redisReply *r = NULL;

            lost[i - start] = 0;
            if (redisGetReply(lock->rc, (void **)&r) != REDIS_OK || !r) {
                rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis: %s", lock->rc->errstr);
                redisFree(lock->rc);
                lock->rc = NULL;
                return RF_ERR_RETRY;
            }
            if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
                lost[i - start] = 1;
                nlost++;
            } else if (r->type == REDIS_REPLY_ERROR) {
                result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis: %s", r->str);
            } else if (renew) {
                items[i].held = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
            }
            freeReplyObject(r);
        }
        if (nlost)
            sha[0] = '\0';
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
