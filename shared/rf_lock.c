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
};

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
