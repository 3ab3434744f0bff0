/* rf_kafka against librdkafka's own mock cluster, in process: the consumer's wake-up
 * descriptor turns readable when a message arrives, and clearing it before taking
 * messages loses no wake-up; on three brokers with every partition replicated three times,
 * leader moves and a broker going down and up lose, duplicate and reorder nothing, and
 * cost no permanent error; refusals of a produce below min.insync.replicas are retried,
 * and retriable when they outlast message.timeout.ms; kafka_options cannot turn off
 * idempotence or acks=all; the consumer's prefetch is kafka_queued_max_kbytes. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "rf_config.h"
#include "rf_kafka.h"

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int readable(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};

    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

/* Polls until a message comes (joining the group takes a few seconds on the mock). */
static rd_kafka_message_t *first_message(rf_consumer_t *c, int64_t deadline)
{
    rd_kafka_message_t *m = NULL;

    while (!m && now_ms() < deadline)
        m = rf_consumer_poll(c, 100);
    return m;
}

static void test_wake_fd_turns_readable_when_a_message_arrives(void **state)
{
    static const char *const topics[] = {"wake", NULL};
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mc;
    rf_producer_t *p;
    rf_consumer_t *c;
    rf_config_t conf;
    rd_kafka_message_t *m;
    char errstr[512];
    int fd;
    int64_t deadline = now_ms() + 30000;

    (void)state;
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
    assert_non_null(mock_rk);
    mc = rd_kafka_mock_cluster_new(mock_rk, 1);
    assert_non_null(mc);
    assert_int_equal(rd_kafka_mock_topic_create(mc, "t.wake", 1, 1), 0);
    rf_config_init(&conf);
    assert_int_equal(rf_config_set(&conf, "kafka_brokers", rd_kafka_mock_cluster_bootstraps(mc),
                                   errstr, sizeof(errstr)),
                     RF_OK);
    assert_int_equal(rf_config_set(&conf, "topic_prefix", "t.", errstr, sizeof(errstr)), RF_OK);
    assert_int_equal(rf_config_set(&conf, "kafka_fetch_wait_ms", "5", errstr, sizeof(errstr)),
                     RF_OK);
    p = rf_producer_new(&conf, errstr, sizeof(errstr));
    assert_non_null(p);
    c = rf_consumer_new(&conf, "wake-test", topics, errstr, sizeof(errstr));
    assert_non_null(c);
    fd = rf_consumer_wake_fd(c);
    assert_true(fd >= 0);
    assert_int_equal(rf_consumer_wake_fd(c), fd); /* one per consumer */

    /* A first message, taken by polling: the consumer has joined and fetches. */
    assert_int_equal(rf_producer_send(p, "wake", "k", "one", 3, errstr, sizeof(errstr)), RF_OK);
    m = first_message(c, deadline);
    assert_non_null(m);
    assert_memory_equal(m->payload, "one", 3);
    rd_kafka_message_destroy(m);

    /* Empty now: cleared, then nothing to take, the descriptor stays quiet. */
    rf_consumer_wake_clear(c);
    while ((m = rf_consumer_poll(c, 0)) != NULL)
        rd_kafka_message_destroy(m);
    assert_false(readable(fd, 200));

    /* A message arrives: the descriptor wakes the wait, and the message is there. */
    assert_int_equal(rf_producer_send(p, "wake", "k", "two", 3, errstr, sizeof(errstr)), RF_OK);
    assert_true(readable(fd, 20000));
    rf_consumer_wake_clear(c);
    m = first_message(c, now_ms() + 5000);
    assert_non_null(m);
    assert_memory_equal(m->payload, "two", 3);
    rd_kafka_message_destroy(m);

    rf_consumer_destroy(c);
    rf_producer_destroy(p);
    rf_config_release(&conf);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mock_rk);
}

/* ---------------------------------------------------------------------------------------
 * Failovers on a cluster of three brokers */

#define KAFKA_API_PRODUCE 0 /* ApiKey of Produce, for rd_kafka_mock_push_request_errors */
#define SEQ_BATCHES 8
#define SEQ_BATCH 50
#define SEQ_TOTAL (2 * SEQ_BATCHES * SEQ_BATCH)

typedef struct cluster3 {
    rd_kafka_t *rk; /* the handle that owns the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    rf_config_t conf;
    int leader; /* broker id leading partition 0 */
} cluster3_t;

/* A fault done to the cluster while topic t.<name> is in use. */
typedef void (*failover_fn)(cluster3_t *c, const char *name);

/* Three brokers (ids 1-3), topic t.<name> of one partition on all three, led by broker 1;
 * the consumer group's coordinator is broker 3. extra: "name=value" settings or NULL. */
static void cluster3_init(cluster3_t *c, const char *name, const char *group,
                          const char *const *extra)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char errstr[512], topic[64];

    snprintf(topic, sizeof(topic), "t.%s", name);
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
    assert_non_null(c->rk);
    c->mc = rd_kafka_mock_cluster_new(c->rk, 3);
    assert_non_null(c->mc);
    assert_int_equal(rd_kafka_mock_topic_create(c->mc, topic, 1, 3), 0);
    assert_int_equal(rd_kafka_mock_partition_set_leader(c->mc, topic, 0, 1), 0);
    c->leader = 1;
    if (group)
        assert_int_equal(rd_kafka_mock_coordinator_set(c->mc, "group", group, 3), 0);
    rf_config_init(&c->conf);
    assert_int_equal(rf_config_set(&c->conf, "kafka_brokers",
                                   rd_kafka_mock_cluster_bootstraps(c->mc), errstr, sizeof(errstr)),
                     RF_OK);
    assert_int_equal(rf_config_set(&c->conf, "topic_prefix", "t.", errstr, sizeof(errstr)), RF_OK);
    assert_int_equal(rf_config_set(&c->conf, "kafka_fetch_wait_ms", "5", errstr, sizeof(errstr)),
                     RF_OK);
    for (; extra && *extra; extra++) {
        char *copy = strdup(*extra), *eq = strchr(copy, '=');
        *eq = '\0';
        assert_int_equal(rf_config_set(&c->conf, copy, eq + 1, errstr, sizeof(errstr)), RF_OK);
        free(copy);
    }
}

static void cluster3_release(cluster3_t *c)
{
    rf_config_release(&c->conf);
    rd_kafka_mock_cluster_destroy(c->mc);
    rd_kafka_destroy(c->rk);
}

/* The partition's leader moves to the next broker, as a controller would elect it. */
static void cluster3_move_leader(cluster3_t *c, const char *name)
{
    char topic[64];

    snprintf(topic, sizeof(topic), "t.%s", name);
    c->leader = c->leader % 3 + 1;
    assert_int_equal(rd_kafka_mock_partition_set_leader(c->mc, topic, 0, c->leader), 0);
}

/* Produces seq numbers [from, from + SEQ_BATCH) in one batch scope (all in flight
 * together, as a worker's poll batch) and calls `during` (may be NULL) after the half. */
static void produce_batch(rf_producer_t *p, const char *name, int from, failover_fn during,
                          cluster3_t *c)
{
    char payload[32], errstr[512];

    rf_producer_batch_begin(p);
    for (int i = from; i < from + SEQ_BATCH; i++) {
        if (i == from + SEQ_BATCH / 2 && during)
            during(c, name);
        snprintf(payload, sizeof(payload), "seq-%05d", i);
        assert_int_equal(
            rf_producer_send(p, name, "prod/web", payload, strlen(payload), errstr, sizeof(errstr)),
            RF_OK);
    }
    if (rf_producer_batch_end(p, errstr, sizeof(errstr)) != RF_OK)
        fail_msg("batch from %d not delivered: %s", from, errstr);
}

/* Produces seq numbers [from, from + SEQ_BATCH) one by one, each waiting for its report. */
static void produce_each(rf_producer_t *p, const char *name, int from, failover_fn during,
                         cluster3_t *c)
{
    char payload[32], errstr[512];
    rf_err_t err;

    for (int i = from; i < from + SEQ_BATCH; i++) {
        if (i == from + SEQ_BATCH / 2 && during)
            during(c, name);
        snprintf(payload, sizeof(payload), "seq-%05d", i);
        err =
            rf_producer_send(p, name, "prod/web", payload, strlen(payload), errstr, sizeof(errstr));
        if (err != RF_OK)
            fail_msg("seq %d: %s error: %s", i, err == RF_ERR_PERM ? "permanent" : "retriable",
                     errstr);
    }
}

/* Reads the topic back until SEQ_TOTAL messages came or 60 s passed, calling `during`
 * once half of them came: each number once, in order, nothing else. */
static void consume_sequence(cluster3_t *c, const char *name, const char *group, failover_fn during)
{
    const char *const topics[] = {name, NULL};
    char errstr[512], want[32];
    rf_consumer_t *cons = rf_consumer_new(&c->conf, group, topics, errstr, sizeof(errstr));
    int64_t deadline = now_ms() + 60000, quiet;
    int next = 0;
    rd_kafka_message_t *m;

    assert_non_null(cons);
    while (next < SEQ_TOTAL && now_ms() < deadline) {
        m = rf_consumer_poll(cons, 100);
        if (!m)
            continue;
        snprintf(want, sizeof(want), "seq-%05d", next);
        if (m->len != strlen(want) || memcmp(m->payload, want, m->len) != 0)
            fail_msg("offset %lld: '%.*s' where '%s' was due (lost, duplicated or reordered)",
                     (long long)m->offset, (int)m->len, (const char *)m->payload, want);
        assert_int_equal(rf_consumer_store(cons, m), RF_OK);
        rd_kafka_message_destroy(m);
        if (++next == SEQ_TOTAL / 2 && during)
            during(c, name);
    }
    assert_int_equal(next, SEQ_TOTAL);
    /* Nothing after the last: no duplicate at the end either. */
    quiet = now_ms() + 1000;
    while (now_ms() < quiet) {
        m = rf_consumer_poll(cons, 100);
        if (m)
            fail_msg("a message after the last: '%.*s' at offset %lld", (int)m->len,
                     (const char *)m->payload, (long long)m->offset);
    }
    rf_consumer_destroy(cons);
}

/* SEQ_TOTAL numbers through rf_producer_send on topic t.<name>: half in batch scopes (all
 * of a batch in flight together, as a worker's poll batch), half one by one, calling even
 * or odd (by the batch's number) after each batch's half; then consumed back, calling
 * consuming after the half: each number once, in order, and no error on the way. */
static void sequence_through_failovers(const char *name, failover_fn even, failover_fn odd,
                                       failover_fn consuming)
{
    cluster3_t c;
    rf_producer_t *p;
    char errstr[512], group[64];

    snprintf(group, sizeof(group), "%s-test", name);
    cluster3_init(&c, name, group, NULL);
    p = rf_producer_new(&c.conf, errstr, sizeof(errstr));
    assert_non_null(p);
    for (int b = 0; b < SEQ_BATCHES; b++)
        produce_batch(p, name, b * SEQ_BATCH, b % 2 == 0 ? even : odd, &c);
    for (int b = SEQ_BATCHES; b < 2 * SEQ_BATCHES; b++)
        produce_each(p, name, b * SEQ_BATCH, b % 2 == 0 ? even : odd, &c);
    rf_producer_destroy(p);
    consume_sequence(&c, name, group, consuming);
    cluster3_release(&c);
}

static void test_leader_moves_lose_duplicate_and_reorder_nothing(void **state)
{
    (void)state;
    /* The consumer follows the leader too. */
    sequence_through_failovers("moves", cluster3_move_leader, cluster3_move_leader,
                               cluster3_move_leader);
}

/* The leader's broker goes down and another broker is elected; the old one comes back
 * and leads again. */
static int bounced = -1;

static void cluster3_leader_down(cluster3_t *c, const char *name)
{
    bounced = c->leader;
    assert_int_equal(rd_kafka_mock_broker_set_down(c->mc, bounced), 0);
    cluster3_move_leader(c, name);
}

static void cluster3_bounced_up(cluster3_t *c, const char *name)
{
    char topic[64];

    snprintf(topic, sizeof(topic), "t.%s", name);
    assert_int_equal(rd_kafka_mock_broker_set_up(c->mc, bounced), 0);
    c->leader = bounced;
    assert_int_equal(rd_kafka_mock_partition_set_leader(c->mc, topic, 0, c->leader), 0);
}

static void cluster3_bounce(cluster3_t *c, const char *name)
{
    int64_t back;

    cluster3_leader_down(c, name);
    back = now_ms() + 1000; /* down for a second while messages flow */
    while (now_ms() < back)
        rd_kafka_poll(c->rk, 50);
    cluster3_bounced_up(c, name);
}

static void test_a_broker_down_and_up_loses_duplicates_and_reorders_nothing(void **state)
{
    (void)state;
    sequence_through_failovers("bounce", cluster3_leader_down, cluster3_bounced_up,
                               cluster3_bounce);
}

/* acks=all below min.insync.replicas: the broker answers NOT_ENOUGH_REPLICAS. librdkafka
 * retries it; past message.timeout.ms the send fails as retriable, never permanent. Same
 * for a leader that moved (NOT_LEADER_OR_FOLLOWER) and a leader being elected. */
static void test_not_enough_replicas_is_retried_and_at_worst_retriable(void **state)
{
    static const char *const fast[] = {"kafka_timeout_ms=1500", NULL};
    static const rd_kafka_resp_err_t passing[] = {
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
    };
    cluster3_t c;
    rf_producer_t *p;
    char errstr[512];
    rf_err_t err;

    (void)state;
    cluster3_init(&c, "isr", NULL, fast);
    p = rf_producer_new(&c.conf, errstr, sizeof(errstr));
    assert_non_null(p);
    assert_int_equal(rf_producer_send(p, "isr", "k", "0", 1, errstr, sizeof(errstr)), RF_OK);
    for (size_t i = 0; i < sizeof(passing) / sizeof(passing[0]); i++) {
        rd_kafka_mock_push_request_errors(c.mc, KAFKA_API_PRODUCE, 2, passing[i], passing[i]);
        err = rf_producer_send(p, "isr", "k", "1", 1, errstr, sizeof(errstr));
        if (err != RF_OK)
            fail_msg("%s twice: %s", rd_kafka_err2name(passing[i]), errstr);
    }
    /* Below min.insync.replicas for longer than message.timeout.ms. */
    for (int i = 0; i < 100; i++)
        rd_kafka_mock_push_request_errors(c.mc, KAFKA_API_PRODUCE, 1,
                                          RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
    err = rf_producer_send(p, "isr", "k", "2", 1, errstr, sizeof(errstr));
    assert_int_equal(err, RF_ERR_RETRY);
    assert_non_null(strstr(errstr, "not delivered"));
    rd_kafka_mock_clear_request_errors(c.mc, KAFKA_API_PRODUCE);
    /* The producer carries on once the replicas are back. */
    assert_int_equal(rf_producer_send(p, "isr", "k", "3", 1, errstr, sizeof(errstr)), RF_OK);
    rf_producer_destroy(p);
    cluster3_release(&c);
}

/* kafka_options may tune the producer, not turn off idempotence or acks=all. */
static void test_kafka_options_cannot_weaken_delivery(void **state)
{
    static const struct {
        const char *options;
        const char *error; /* NULL: accepted */
    } cases[] = {
        {"acks=1", "'acks=1' would weaken delivery"},
        {"acks = 0", "'acks=0' would weaken delivery"},
        {"request.required.acks=1", "'request.required.acks=1' would weaken delivery"},
        {"linger.ms=1; enable.idempotence=false", "'enable.idempotence=false' would weaken"},
        {"acks=all;enable.idempotence=true", NULL},
        {"acks=-1", NULL},
        {"retry.backoff.ms=50", NULL},
    };
    rf_config_t conf;
    rf_producer_t *p;
    char errstr[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_config_init(&conf);
        assert_int_equal(
            rf_config_set(&conf, "kafka_brokers", "127.0.0.1:1", errstr, sizeof(errstr)), RF_OK);
        assert_int_equal(
            rf_config_set(&conf, "kafka_options", cases[i].options, errstr, sizeof(errstr)), RF_OK);
        errstr[0] = '\0';
        p = rf_producer_new(&conf, errstr, sizeof(errstr));
        if (cases[i].error) {
            if (p || !strstr(errstr, cases[i].error))
                fail_msg("'%s': %s", cases[i].options, p ? "accepted" : errstr);
        } else if (!p) {
            fail_msg("'%s' refused: %s", cases[i].options, errstr);
        }
        rf_producer_destroy(p);
        rf_config_release(&conf);
    }
}

/* The consumer's prefetch (queued.max.messages.kbytes) is kafka_queued_max_kbytes: 4096 by
 * default, the value set otherwise, also over kafka_options; out of bounds is refused by
 * name. */
static void test_consumer_prefetch_is_kafka_queued_max_kbytes(void **state)
{
    static const char *const topics[] = {"prefetch", NULL};
    static const struct {
        const char *setting;  /* NULL: the default */
        const char *options;  /* kafka_options or NULL */
        const char *expected; /* the consumer's queued.max.messages.kbytes */
    } cases[] = {
        {NULL, NULL, "4096"},
        {"512", NULL, "512"},
        {"2048", "queued.max.messages.kbytes=65536", "2048"},
    };
    rf_config_t conf;
    rf_consumer_t *c;
    char errstr[512], value[64];
    size_t size;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_config_init(&conf);
        assert_int_equal(
            rf_config_set(&conf, "kafka_brokers", "127.0.0.1:1", errstr, sizeof(errstr)), RF_OK);
        if (cases[i].setting)
            assert_int_equal(rf_config_set(&conf, "kafka_queued_max_kbytes", cases[i].setting,
                                           errstr, sizeof(errstr)),
                             RF_OK);
        if (cases[i].options)
            assert_int_equal(
                rf_config_set(&conf, "kafka_options", cases[i].options, errstr, sizeof(errstr)),
                RF_OK);
        c = rf_consumer_new(&conf, "prefetch-test", topics, errstr, sizeof(errstr));
        if (!c)
            fail_msg("consumer refused: %s", errstr);
        size = sizeof(value);
        assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(rf_consumer_handle(c)),
                                           "queued.max.messages.kbytes", value, &size),
                         RD_KAFKA_CONF_OK);
        assert_string_equal(value, cases[i].expected);
        rf_consumer_destroy(c);
        rf_config_release(&conf);
    }
    rf_config_init(&conf);
    assert_int_not_equal(rf_config_set(&conf, "kafka_queued_max_kbytes", "0", errstr,
                                       sizeof(errstr)),
                         RF_OK);
    assert_non_null(strstr(errstr, "kafka_queued_max_kbytes"));
    rf_config_release(&conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wake_fd_turns_readable_when_a_message_arrives),
        cmocka_unit_test(test_leader_moves_lose_duplicate_and_reorder_nothing),
        cmocka_unit_test(test_a_broker_down_and_up_loses_duplicates_and_reorders_nothing),
        cmocka_unit_test(test_not_enough_replicas_is_retried_and_at_worst_retriable),
        cmocka_unit_test(test_kafka_options_cannot_weaken_delivery),
        cmocka_unit_test(test_consumer_prefetch_is_kafka_queued_max_kbytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
