/* rf_cloudevents: the attributes of a result (table of results and what each must give),
 * the default and configured source, the Kafka headers, and rf_producer_send_headers
 * delivering them on librdkafka's mock cluster with the body unchanged. */
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

#include "rf_cloudevents.h"
#include "rf_config.h"
#include "rf_kafka.h"

#define RESULT_OK                                                                                  \
    "{\"schema\":\"relfleet.result.v1\",\"event_id\":\"0b9c5a2e-1f6f-4c1e-9a53-3d1b8c7e6f01\","    \
    "\"release_id\":\"0b9c5a2e-1f6f-4c1e-9a53-3d1b8c7e6f01\",\"service\":\"shop-web\","            \
    "\"env\":\"prod\",\"version\":\"1.4.2\",\"status\":\"%s\","                                    \
    "\"finished_at\":\"2026-11-23T23:10:05.123Z\"}"

static void test_attributes_of_results(void **state)
{
    static const struct {
        const char *text;   /* the result message */
        const char *status; /* substituted for %s in text, if any */
        const char *type;   /* expected ce type; NULL: refused */
        const char *error;  /* part of the refusal */
    } cases[] = {
        {RESULT_OK, "succeeded", "io.relfleet.release.succeeded", NULL},
        {RESULT_OK, "failed", "io.relfleet.release.failed", NULL},
        {RESULT_OK, "cancelled", "io.relfleet.release.cancelled", NULL},
        {RESULT_OK, "superseded", "io.relfleet.release.superseded", NULL},
        {RESULT_OK, "rejected", "io.relfleet.release.rejected", NULL},
        {"{\"event_id\":\"e1\",\"status\":\"failed\",\"service\":\"a\",\"env\":\"b\"}", NULL, NULL,
         "no string 'finished_at'"},
        {"{\"event_id\":\"e1\",\"status\":\"failed\",\"finished_at\":\"t\",\"env\":\"b\"}", NULL,
         NULL, "no string 'service'"},
        {"{\"event_id\":\"e 1\",\"status\":\"failed\",\"finished_at\":\"t\",\"service\":\"a\","
         "\"env\":\"b\"}",
         NULL, NULL, "'event_id' is not a short ascii token"},
        {"{\"event_id\":\"e1\",\"status\":\"f\xc3\xa9\",\"finished_at\":\"t\",\"service\":\"a\","
         "\"env\":\"b\"}",
         NULL, NULL, "'status' is not a short ascii token"},
        {"[1]", NULL, NULL, "not a json object"},
        {"{\"event_id\":", NULL, NULL, "cannot describe the result as a cloudevent"},
    };
    char text[1024], errstr[256];
    rf_cloudevent_t ev;
    const char *value;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), cases[i].text, cases[i].status ? cases[i].status : "");
        errstr[0] = '\0';
        rf_err_t r = rf_cloudevent_from_text(text, strlen(text), "/relfleet/test", &ev, errstr,
                                             sizeof(errstr));
        if (!cases[i].type) {
            assert_int_equal(r, RF_ERR_PERM);
            if (!strstr(errstr, cases[i].error))
                fail_msg("case %zu: '%s' lacks '%s'", i, errstr, cases[i].error);
            continue;
        }
        assert_int_equal(r, RF_OK);
        assert_string_equal(ev.type, cases[i].type);
        assert_string_equal(ev.id, "0b9c5a2e-1f6f-4c1e-9a53-3d1b8c7e6f01");
        assert_string_equal(ev.source, "/relfleet/test");
        assert_string_equal(ev.time, "2026-11-23T23:10:05.123Z");
        assert_string_equal(ev.subject, "shop-web/prod");
        assert_string_equal(rf_cloudevent_attr(&ev, 0, &value), "specversion");
        assert_string_equal(value, "1.0");
        assert_string_equal(rf_cloudevent_attr(&ev, 5, &value), "subject");
        assert_string_equal(value, "shop-web/prod");
        assert_null(rf_cloudevent_attr(&ev, RF_CLOUDEVENT_ATTRS, &value));
    }
    /* A bad source is refused too. */
    snprintf(text, sizeof(text), RESULT_OK, "failed");
    assert_int_equal(
        rf_cloudevent_from_text(text, strlen(text), "/a b", &ev, errstr, sizeof(errstr)),
        RF_ERR_PERM);
    assert_non_null(strstr(errstr, "bad source '/a b'"));
}

static void test_source_defaults_to_the_topic_prefix(void **state)
{
    static const struct {
        const char *prefix;  /* topic_prefix; NULL: the default */
        const char *setting; /* cloudevents_source; NULL: unset */
        const char *source;  /* expected */
    } cases[] = {
        {NULL, NULL, "/relfleet/relfleet"},
        {"acme.prod.", NULL, "/relfleet/acme.prod"},
        {"eu-", NULL, "/relfleet/eu"},
        {"", NULL, "/relfleet/relfleet"},
        {"...", NULL, "/relfleet/relfleet"},
        {"x.", "/relfleet/prod-eu", "/relfleet/prod-eu"},
        {NULL, "urn:relfleet:cluster-a", "urn:relfleet:cluster-a"},
    };
    char buf[256], errstr[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_config_t conf;
        rf_config_init(&conf);
        if (cases[i].prefix)
            assert_int_equal(
                rf_config_set(&conf, "topic_prefix", cases[i].prefix, errstr, sizeof(errstr)),
                RF_OK);
        if (cases[i].setting)
            assert_int_equal(rf_config_set(&conf, "cloudevents_source", cases[i].setting, errstr,
                                           sizeof(errstr)),
                             RF_OK);
        assert_string_equal(rf_cloudevents_source(&conf, buf, sizeof(buf)), cases[i].source);
        rf_config_release(&conf);
    }
}

static void test_bad_sources_are_refused_by_name(void **state)
{
    static const char *const bad[] = {"", "/relfleet/a b", "/relfleet/\x01", "/relfleet/\xc3\xa9",
                                      "/relfleet/tab\there"};
    char errstr[256], big[300];
    rf_config_t conf;

    (void)state;
    rf_config_init(&conf);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(rf_config_set(&conf, "cloudevents_source", bad[i], errstr, sizeof(errstr)),
                         RF_ERR_PERM);
        assert_non_null(strstr(errstr, "setting 'cloudevents_source'"));
    }
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(rf_config_set(&conf, "cloudevents_source", big, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_true(rf_cloudevents_source_ok("/relfleet/prod-eu"));
    rf_config_release(&conf);
}

/* The header named name of m as a string, or NULL. */
static const char *header(rd_kafka_headers_t *h, const char *name, char *buf, size_t size)
{
    const void *v;
    size_t n;

    if (rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    snprintf(buf, size, "%.*s", (int)n, (const char *)v);
    return buf;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_headers_are_delivered_with_the_body_unchanged(void **state)
{
    static const char *const topics[] = {"results", NULL};
    static const char *const expect[][2] = {
        {"ce_specversion", "1.0"},
        {"ce_id", "0b9c5a2e-1f6f-4c1e-9a53-3d1b8c7e6f01"},
        {"ce_source", "/relfleet/t"},
        {"ce_type", "io.relfleet.release.failed"},
        {"ce_time", "2026-11-23T23:10:05.123Z"},
        {"ce_subject", "shop-web/prod"},
        {"content-type", "application/json"},
    };
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mc;
    rd_kafka_message_t *m = NULL;
    rd_kafka_headers_t *h = NULL;
    rf_producer_t *p;
    rf_consumer_t *c;
    rf_config_t conf;
    rf_cloudevent_t ev;
    char text[1024], errstr[512], source[256], buf[256];
    int64_t deadline = now_ms() + 30000;

    (void)state;
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
    assert_non_null(mock_rk);
    mc = rd_kafka_mock_cluster_new(mock_rk, 1);
    assert_non_null(mc);
    assert_int_equal(rd_kafka_mock_topic_create(mc, "t.results", 1, 1), 0);
    rf_config_init(&conf);
    assert_int_equal(rf_config_set(&conf, "kafka_brokers", rd_kafka_mock_cluster_bootstraps(mc),
                                   errstr, sizeof(errstr)),
                     RF_OK);
    assert_int_equal(rf_config_set(&conf, "topic_prefix", "t.", errstr, sizeof(errstr)), RF_OK);
    p = rf_producer_new(&conf, errstr, sizeof(errstr));
    assert_non_null(p);
    c = rf_consumer_new(&conf, "ce-test", topics, errstr, sizeof(errstr));
    assert_non_null(c);

    snprintf(text, sizeof(text), RESULT_OK, "failed");
    assert_int_equal(rf_cloudevent_from_text(text, strlen(text),
                                             rf_cloudevents_source(&conf, source, sizeof(source)),
                                             &ev, errstr, sizeof(errstr)),
                     RF_OK);
    assert_int_equal(rf_producer_send_headers(p, "results", "prod/shop-web", text, strlen(text),
                                              rf_cloudevent_kafka_headers(&ev), errstr,
                                              sizeof(errstr)),
                     RF_OK);
    while (!m && now_ms() < deadline)
        m = rf_consumer_poll(c, 100);
    assert_non_null(m);
    assert_int_equal(m->len, strlen(text));
    assert_memory_equal(m->payload, text, m->len);
    assert_int_equal(rd_kafka_message_headers(m, &h), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_header_cnt(h), sizeof(expect) / sizeof(expect[0]));
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        const char *v = header(h, expect[i][0], buf, sizeof(buf));
        if (!v || strcmp(v, expect[i][1]) != 0)
            fail_msg("header %s: '%s', want '%s'", expect[i][0], v ? v : "(none)", expect[i][1]);
    }
    rd_kafka_message_destroy(m);

    /* Without headers (NULL) a send still works, and carries none. */
    assert_int_equal(rf_producer_send(p, "results", "k", "{}", 2, errstr, sizeof(errstr)), RF_OK);
    m = NULL;
    while (!m && now_ms() < deadline)
        m = rf_consumer_poll(c, 100);
    assert_non_null(m);
    assert_int_equal(rd_kafka_message_headers(m, &h), RD_KAFKA_RESP_ERR__NOENT);
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
        cmocka_unit_test(test_attributes_of_results),
        cmocka_unit_test(test_source_defaults_to_the_topic_prefix),
        cmocka_unit_test(test_bad_sources_are_refused_by_name),
        cmocka_unit_test(test_headers_are_delivered_with_the_body_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
