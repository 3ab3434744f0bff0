/* rf_kafka against librdkafka's own mock cluster, in process: the consumer's wake-up
 * descriptor turns readable when a message arrives, and clearing it before taking
 * messages loses no wake-up. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wake_fd_turns_readable_when_a_message_arrives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
