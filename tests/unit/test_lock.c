/* The service lock against a real redis-server: exclusion, fencing, renew, compare-and-delete. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "rf_config.h"
#include "rf_lock.h"
#include "unit_ports.h"

static pid_t redis_pid;
static char redis_url[64];
static int redis_port;

/* A lock on url with the other settings at their defaults. */
static rf_lock_t *lock_at(const char *url, char *err, size_t err_size)
{
    rf_config_t conf;
    rf_lock_t *l;

    rf_config_init(&conf);
    rf_config_set(&conf, "redis_url", url, err, err_size);
    l = rf_lock_new(&conf, NULL, err, err_size);
    rf_config_release(&conf);
    return l;
}

static void redis_start(void)
{
    char port[16];
    struct timespec pause = {0, 20 * 1000000L};
    char err[256];

    snprintf(port, sizeof(port), "%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    /* Wait until it answers (bounded). */
    for (int i = 0; i < 250; i++) {
        rf_lock_t *l = lock_at(redis_url, err, sizeof(err));
        if (l) {
            rf_lock_destroy(l);
            return;
        }
        nanosleep(&pause, NULL);
    }
    fail_msg("redis-server did not start: %s", err);
}

static void redis_stop(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
}

static int setup(void **state)
{
    (void)state;
    redis_port = free_port();
    snprintf(redis_url, sizeof(redis_url), "redis://127.0.0.1:%d/0", redis_port);
    redis_start();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    redis_stop();
    return 0;
}

static void test_exclusion_and_fence(void **state)
{
    char err[256], holder[64];
    int acquired;
    int64_t f1, f2, f3;
    rf_lock_t *l = lock_at(redis_url, err, sizeof(err));

    (void)state;
    assert_non_null(l);
    assert_int_equal(rf_lock_acquire(l, "prod", "web", "A", 10000, 0, &acquired, &f1, holder, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(acquired, 1);
    /* Busy for another release, which learns who holds it. */
    assert_int_equal(rf_lock_acquire(l, "prod", "web", "B", 10000, 0, &acquired, &f2, holder, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(acquired, 0);
    assert_string_equal(holder, "A");
    /* Redelivery of A: still A's, same token. */
    assert_int_equal(rf_lock_acquire(l, "prod", "web", "A", 10000, 0, &acquired, &f2, holder, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(acquired, 1);
    assert_int_equal(f2, f1);
    /* Another service is independent. */
    assert_int_equal(rf_lock_acquire(l, "test", "web", "C", 10000, 0, &acquired, &f3, holder, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(acquired, 1);
    /* Compare-and-delete: B cannot free A's lock, A can; then B gets a larger token. */
    assert_int_equal(rf_lock_release(l, "prod", "web", "B", err, sizeof(err)), RF_OK);
    assert_int_equal(rf_lock_acquire(l, "prod", "web", "B", 10000, 0, &acquired, &f2, holder, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(acquired, 0);
    assert_int_equal(rf_lock_release(l, "prod", "web", "A", err, sizeof(err)), RF_OK);
    assert_int_equal(rf_lock_acquire(l, "prod", "web", "B", 10000, 0, &acquired, &f2, holder, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(acquired, 1);
    assert_true(f2 > f1);
    rf_lock_destroy(l);
}

static void test_lease_expiry_and_renew(void **state)
{
    char err[256];
    int acquired, held;
    int64_t f1, f2;
    struct timespec pause = {0, 10 * 1000000L};
    rf_lock_t *l = lock_at(redis_url, err, sizeof(err));

    (void)state;
    assert_int_equal(rf_lock_acquire(l, "prod", "api", "A", 1000, 0, &acquired, &f1, NULL, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(acquired, 1);
    assert_int_equal(rf_lock_renew(l, "prod", "api", "A", 1000, &held, err, sizeof(err)), RF_OK);
    assert_int_equal(held, 1);
    /* Past the lease B takes over (poll until the key expired, bounded). */
    acquired = 0;
    for (int i = 0; i < 500 && !acquired; i++) {
        assert_int_equal(rf_lock_acquire(l, "prod", "api", "B", 10000, 0, &acquired, &f2, NULL,
                                         err, sizeof(err)), RF_OK);
        if (!acquired)
            nanosleep(&pause, NULL);
    }
    assert_int_equal(acquired, 1);
    assert_true(f2 > f1);
    /* The stale holder finds out on renew. */
    assert_int_equal(rf_lock_renew(l, "prod", "api", "A", 1000, &held, err, sizeof(err)), RF_OK);
    assert_int_equal(held, 0);
    rf_lock_destroy(l);
}

static void test_restart_keeps_fence_growing(void **state)
{
    char err[256];
    int acquired;
    int64_t f1, f2;
    rf_lock_t *l = lock_at(redis_url, err, sizeof(err));

    (void)state;
    assert_int_equal(rf_lock_acquire(l, "prod", "db", "A", 10000, 41, &acquired, &f1, NULL, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(f1, 42); /* the floor from PostgreSQL wins over an empty counter */
    /* Redis loses everything: the next token still passes the floor PostgreSQL keeps. */
    redis_stop();
    assert_int_not_equal(rf_lock_acquire(l, "prod", "db", "B", 10000, f1, &acquired, &f2, NULL,
                                         err, sizeof(err)), RF_OK);
    redis_start();
    assert_int_equal(rf_lock_acquire(l, "prod", "db", "B", 10000, f1, &acquired, &f2, NULL, err,
                                     sizeof(err)), RF_OK);
    assert_int_equal(acquired, 1);
    assert_true(f2 > f1);
    rf_lock_destroy(l);
}

/* The remaining lease of a lock, straight from Redis (-2: no key). */
static long long lock_pttl(redisContext *rc, const char *env, const char *service)
{
    redisReply *r = redisCommand(rc, "PTTL relfleet:lock:%s/%s", env, service);
    long long ms;

    assert_non_null(r);
    ms = r->integer;
    freeReplyObject(r);
    return ms;
}

/* More locks than one pipelined round trip holds: renewals extend ours, report the one
 * another release holds, take back a lost key; a SCRIPT FLUSH on the way is survived;
 * release_many deletes only ours. */
static void test_pipelined_renew_and_release(void **state)
{
    enum { N = 1300 };
    static char services[N][16], ids[N][16];
    rf_lock_item_t items[N];
    redisContext *rc = redisConnect("127.0.0.1", redis_port);
    char err[256];
    int acquired;
    int64_t fence;
    rf_lock_t *l = lock_at(redis_url, err, sizeof(err));
    redisReply *r;

    (void)state;
    assert_non_null(l);
    assert_true(rc && !rc->err);
    for (int i = 0; i < N; i++) {
        snprintf(services[i], sizeof(services[i]), "svc%d", i);
        snprintf(ids[i], sizeof(ids[i]), "R%d", i);
        items[i] = (rf_lock_item_t){"pipe", services[i], ids[i], -1};
        if (i == 700)
            continue; /* lost key: renew takes it back */
        assert_int_equal(rf_lock_acquire(l, "pipe", services[i], i == 5 ? "X" : ids[i], 5000, 0,
                                         &acquired, &fence, NULL, err, sizeof(err)), RF_OK);
        assert_int_equal(acquired, 1);
    }
    assert_int_equal(rf_lock_renew_many(l, items, N, 600000, err, sizeof(err)), RF_OK);
    for (int i = 0; i < N; i++) {
        assert_int_equal(items[i].held, i != 5);
        if (i == 5)
            assert_true(lock_pttl(rc, "pipe", services[i]) <= 5000);
        else
            assert_true(lock_pttl(rc, "pipe", services[i]) > 5000);
    }
    /* The server forgets its scripts: the calls send them again. */
    r = redisCommand(rc, "SCRIPT FLUSH");
    freeReplyObject(r);
    assert_int_equal(rf_lock_renew_many(l, items, N, 700000, err, sizeof(err)), RF_OK);
    assert_int_equal(items[1299].held, 1);
    assert_true(lock_pttl(rc, "pipe", services[1299]) > 600000);
    assert_int_equal(rf_lock_release_many(l, items, N, err, sizeof(err)), RF_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(lock_pttl(rc, "pipe", services[i]) == -2, i != 5);
    /* A connection Redis dropped: the call reconnects and runs its round trip again. */
    r = redisCommand(rc, "CLIENT KILL TYPE normal SKIPME yes");
    freeReplyObject(r);
    assert_int_equal(rf_lock_renew_many(l, items, 3, 1000, err, sizeof(err)), RF_OK);
    assert_int_equal(items[0].held, 1);
    redisFree(rc);
    rf_lock_destroy(l);
}

/* More locks than one round trip holds, taken at once: each free one acquired with a token
 * above its floor, a busy one names its holder, the holder's own again gets the same token
 * (a redelivered batch), after a SCRIPT FLUSH and a dropped connection too. */
static void test_pipelined_acquire(void **state)
{
    enum { N = 600 };
    static char services[N][16], ids[N][16];
    static rf_lock_take_t items[N];
    redisContext *rc = redisConnect("127.0.0.1", redis_port);
    char err[256];
    int acquired;
    int64_t fence, first[N];
    rf_lock_t *l = lock_at(redis_url, err, sizeof(err));
    redisReply *r;

    (void)state;
    assert_non_null(l);
    assert_true(rc && !rc->err);
    assert_int_equal(rf_lock_acquire(l, "take", "svc7", "OTHER", 60000, 0, &acquired, &fence, NULL,
                                     err, sizeof(err)), RF_OK);
    for (int i = 0; i < N; i++) {
        snprintf(services[i], sizeof(services[i]), "svc%d", i);
        snprintf(ids[i], sizeof(ids[i]), "R%d", i);
        items[i] = (rf_lock_take_t){"take", services[i], ids[i], i == 3 ? 1000 : 0, -1, -1, "x"};
    }
    assert_int_equal(rf_lock_acquire_many(l, items, N, 60000, err, sizeof(err)), RF_OK);
    for (int i = 0; i < N; i++) {
        assert_int_equal(items[i].acquired, i != 7);
        first[i] = items[i].fence;
    }
    assert_string_equal(items[7].holder, "OTHER");
    assert_int_equal(items[7].fence, 0);
    assert_int_equal(items[3].fence, 1001); /* the floor from PostgreSQL wins */
    assert_int_equal(items[599].fence, 1);
    /* The same again (a redelivery): the same tokens, nothing incremented. */
    r = redisCommand(rc, "SCRIPT FLUSH");
    freeReplyObject(r);
    assert_int_equal(rf_lock_acquire_many(l, items, N, 60000, err, sizeof(err)), RF_OK);
    for (int i = 0; i < N; i++)
        assert_true(items[i].acquired == (i != 7) && items[i].fence == first[i]);
    r = redisCommand(rc, "CLIENT KILL TYPE normal SKIPME yes");
    freeReplyObject(r);
    assert_int_equal(rf_lock_acquire_many(l, items, 2, 60000, err, sizeof(err)), RF_OK);
    assert_int_equal(items[1].acquired, 1);
    assert_int_equal(items[1].fence, first[1]);
    /* Freed, the next release of a service gets a larger token. */
    assert_int_equal(rf_lock_release(l, "take", "svc3", "R3", err, sizeof(err)), RF_OK);
    items[3].release_id = "R3b";
    assert_int_equal(rf_lock_acquire_many(l, &items[3], 1, 60000, err, sizeof(err)), RF_OK);
    assert_int_equal(items[3].acquired, 1);
    assert_true(items[3].fence > first[3]);
    redisFree(rc);
    rf_lock_destroy(l);
}

/* Redis gone at a pipelined renewal: the error says why the connection could not be made
 * again (the first command's own error), not a generic "connection lost". */
static void test_renew_many_reports_why_redis_is_unreachable(void **state)
{
    rf_lock_item_t items[2] = {{"gone", "a", "R1", -1}, {"gone", "b", "R2", -1}};
    char err[256];
    int acquired;
    int64_t fence;
    rf_lock_t *l = lock_at(redis_url, err, sizeof(err));

    (void)state;
    assert_non_null(l);
    assert_int_equal(rf_lock_acquire(l, "gone", "a", "R1", 10000, 0, &acquired, &fence, NULL, err,
                                     sizeof(err)), RF_OK);
    redis_stop();
    assert_int_equal(rf_lock_renew_many(l, items, 2, 10000, err, sizeof(err)), RF_ERR_RETRY);
    if (!strstr(err, "cannot connect to redis at 127.0.0.1:"))
        fail_msg("renew_many with redis down: %s", err);
    redis_start();
    rf_lock_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exclusion_and_fence),
        cmocka_unit_test(test_lease_expiry_and_renew),
        cmocka_unit_test(test_restart_keeps_fence_growing),
        cmocka_unit_test(test_pipelined_renew_and_release),
        cmocka_unit_test(test_pipelined_acquire),
        cmocka_unit_test(test_renew_many_reports_why_redis_is_unreachable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
