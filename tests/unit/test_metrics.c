/* Metrics registry, Prometheus text exposition, and the /metrics, /healthz, /readyz endpoint. */
#include <curl/curl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>

#include "rf_buf.h"
#include "rf_http.h"
#include "rf_metrics.h"

static int teardown(void **state)
{
    (void)state;
    rf_metrics_reset();
    return 0;
}

/* Asserts that the rendered registry contains line (a whole line). */
static void assert_has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    }
    fail_msg("line '%s' not found in:\n%s", line, text);
}

static void assert_no_text(const char *text, const char *part)
{
    if (strstr(text, part))
        fail_msg("'%s' unexpectedly found in:\n%s", part, text);
}

static void test_counter_exposition(void **state)
{
    rf_metric_t *c = rf_metrics_counter("rf_test_total", "Things counted", "topic,reason");
    rf_metric_t *plain = rf_metrics_counter("rf_plain_total", "No labels", NULL);
    char *text;

    (void)state;
    assert_non_null(c);
    assert_non_null(plain);
    rf_metrics_add(c, RF_LABELS("t1", "bad"), 1);
    rf_metrics_add(c, RF_LABELS("t1", "bad"), 2);
    rf_metrics_add(c, RF_LABELS("t2", NULL), 1);
    rf_metrics_add(c, RF_LABELS("t2", NULL), -5); /* a counter never goes down */
    text = rf_metrics_render();
    assert_has_line(text, "# HELP rf_test_total Things counted");
    assert_has_line(text, "# TYPE rf_test_total counter");
    assert_has_line(text, "rf_test_total{topic=\"t1\",reason=\"bad\"} 3");
    assert_has_line(text, "rf_test_total{topic=\"t2\",reason=\"\"} 1");
    /* A family without labels shows its 0 from the start. */
    assert_has_line(text, "rf_plain_total 0");
    assert_true(strstr(text, "rf_test_total{") < strstr(text, "rf_plain_total 0"));
    free(text);
    assert_true(rf_metrics_value(c, RF_LABELS("t1", "bad")) == 3);
    assert_true(rf_metrics_value(c, RF_LABELS("nope", "bad")) == 0);
}

static void test_escaping_and_const_labels(void **state)
{
    rf_metric_t *g = rf_metrics_gauge("rf_gauge", "Help with \\ and\nnewline", "v");
    char *text;

    (void)state;
    rf_metrics_const_label("stage", "render");
    rf_metrics_const_label("stage", "apply"); /* replaces */
    rf_metrics_set(g, RF_LABELS("a\"b\\c\nd"), -2.5);
    rf_metrics_add(g, RF_LABELS("a\"b\\c\nd"), 1);
    text = rf_metrics_render();
    assert_has_line(text, "# HELP rf_gauge Help with \\\\ and\\nnewline");
    assert_has_line(text, "rf_gauge{stage=\"apply\",v=\"a\\\"b\\\\c\\nd\"} -1.5");
    assert_no_text(text, "render");
    free(text);
}

static void test_histogram(void **state)
{
    static const double bounds[] = {0.1, 1, 10};
    static const double obs[] = {0.05, 0.1, 0.5, 5, 50, 0.2};
    rf_metric_t *h = rf_metrics_histogram("rf_seconds", "Time", "topic", bounds, 3);
    char *text;

    (void)state;
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        rf_metrics_observe(h, RF_LABELS("t"), obs[i]);
    text = rf_metrics_render();
    assert_has_line(text, "# TYPE rf_seconds histogram");
    assert_has_line(text, "rf_seconds_bucket{topic=\"t\",le=\"0.1\"} 2");
    assert_has_line(text, "rf_seconds_bucket{topic=\"t\",le=\"1\"} 4");
    assert_has_line(text, "rf_seconds_bucket{topic=\"t\",le=\"10\"} 5");
    assert_has_line(text, "rf_seconds_bucket{topic=\"t\",le=\"+Inf\"} 6");
    assert_has_line(text, "rf_seconds_sum{topic=\"t\"} 55.85");
    assert_has_line(text, "rf_seconds_count{topic=\"t\"} 6");
    free(text);
    assert_true(rf_metrics_value(h, RF_LABELS("t")) == 6);
}

static void test_default_buckets(void **state)
{
    rf_metric_t *h = rf_metrics_histogram("rf_default_seconds", "Time", NULL, NULL, 0);
    char *text;

    (void)state;
    rf_metrics_observe(h, NULL, 0.003);
    text = rf_metrics_render();
    assert_has_line(text, "rf_default_seconds_bucket{le=\"0.005\"} 1");
    assert_has_line(text, "rf_default_seconds_bucket{le=\"60\"} 1");
    assert_has_line(text, "rf_default_seconds_count 1");
    free(text);
}

static void test_registration_rules(void **state)
{
    static const struct {
        const char *name;
        const char *labels;
        int ok;
    } cases[] = {
        {"rf_ok_total", "a,b_c", 1},
        {"rf:colon_total", NULL, 1},
        {"9starts_with_digit", NULL, 0},
        {"has-dash", NULL, 0},
        {"", NULL, 0},
        {"rf_bad_label", "a-b", 0},
        {"rf_reserved", "__x", 0},
        {"rf_le", "le", 0},
        {"rf_empty_label", "a,,b", 0},
        {"rf_many", "a,b,c,d,e,f,g,h,i", 0},
    };
    static const double down[] = {1, 0.5};

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_metric_t *m = rf_metrics_counter(cases[i].name, "x", cases[i].labels);
        if (cases[i].ok != (m != NULL))
            fail_msg("case %zu '%s' labels '%s': expected %s", i, cases[i].name,
                     cases[i].labels ? cases[i].labels : "", cases[i].ok ? "ok" : "refused");
    }
    /* Same name and shape: the same family; another type or labels: refused. */
    assert_ptr_equal(rf_metrics_counter("rf_ok_total", "other help", "a,b_c"),
                     rf_metrics_counter("rf_ok_total", "x", "a,b_c"));
    assert_null(rf_metrics_gauge("rf_ok_total", "x", "a,b_c"));
    assert_null(rf_metrics_counter("rf_ok_total", "x", "a"));
    assert_null(rf_metrics_histogram("rf_down", "x", NULL, down, 2));
    /* NULL families are accepted everywhere. */
    rf_metrics_add(NULL, NULL, 1);
    rf_metrics_set(NULL, NULL, 1);
    rf_metrics_observe(NULL, NULL, 1);
    rf_metrics_clear(NULL);
    assert_true(rf_metrics_value(NULL, NULL) == 0);
}

static void test_wrong_label_count_is_ignored(void **state)
{
    rf_metric_t *c = rf_metrics_counter("rf_two_total", "x", "a,b");
    char *text;

    (void)state;
    rf_metrics_add(c, RF_LABELS("only-one"), 1);
    rf_metrics_add(c, RF_LABELS("1", "2", "3"), 1);
    rf_metrics_add(c, NULL, 1);
    rf_metrics_set(c, RF_LABELS("1", "2"), 7); /* not a gauge */
    rf_metrics_observe(c, RF_LABELS("1", "2"), 7);
    text = rf_metrics_render();
    assert_no_text(text, "rf_two_total{");
    free(text);
}

static void test_clear(void **state)
{
    rf_metric_t *lag = rf_metrics_gauge("rf_lag", "x", "partition");
    rf_metric_t *up = rf_metrics_gauge("rf_up", "x", NULL);
    char *text;

    (void)state;
    rf_metrics_set(lag, RF_LABELS("0"), 5);
    rf_metrics_set(lag, RF_LABELS("1"), 6);
    rf_metrics_set(up, NULL, 1);
    rf_metrics_clear(lag);
    rf_metrics_clear(up);
    rf_metrics_set(lag, RF_LABELS("1"), 2);
    text = rf_metrics_render();
    assert_no_text(text, "partition=\"0\"");
    assert_has_line(text, "rf_lag{partition=\"1\"} 2");
    assert_has_line(text, "rf_up 0");
    free(text);
}

static void test_numbers(void **state)
{
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0, "rf_num 0"},
        {42, "rf_num 42"},
        {0.1, "rf_num 0.1"},
        {1e21, "rf_num 1e+21"},
        {-3.25, "rf_num -3.25"},
        {1.0 / 0.0, "rf_num +Inf"},
        {-1.0 / 0.0, "rf_num -Inf"},
        {9007199254740993.0, "rf_num 9007199254740992"},
    };
    rf_metric_t *g = rf_metrics_gauge("rf_num", "x", NULL);

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text;
        rf_metrics_set(g, NULL, cases[i].v);
        text = rf_metrics_render();
        assert_has_line(text, cases[i].text);
        free(text);
    }
}

static void *count_thread(void *arg)
{
    rf_metric_t *c = arg;

    for (int i = 0; i < 20000; i++) {
        rf_metrics_add(c, RF_LABELS(i % 2 ? "odd" : "even"), 1);
        if (i % 1000 == 0)
            free(rf_metrics_render());
    }
    return NULL;
}

static void test_threads(void **state)
{
    rf_metric_t *c = rf_metrics_counter("rf_threads_total", "x", "kind");
    pthread_t t[4];

    (void)state;
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, count_thread, c), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(rf_metrics_value(c, RF_LABELS("odd")) == 40000);
    assert_true(rf_metrics_value(c, RF_LABELS("even")) == 40000);
}

static void test_series_cap(void **state)
{
    rf_metric_t *c = rf_metrics_counter("rf_cap_total", "x", "id");
    char id[32];

    (void)state;
    for (int i = 0; i < 2500; i++) {
        snprintf(id, sizeof(id), "%d", i);
        rf_metrics_add(c, RF_LABELS(id), 1);
    }
    assert_true(rf_metrics_value(c, RF_LABELS("1999")) == 1);
    assert_true(rf_metrics_value(c, RF_LABELS("2000")) == 0);
}

/* -- the HTTP endpoint ------------------------------------------------------------------ */

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    rf_buf_add(arg, data, size * n);
    return size * n;
}

/* GETs path; returns the status and fills body. */
static long http_get(int port, const char *path, const char *method, rf_buf_t *body)
{
    CURL *curl = curl_easy_init();
    char url[256];
    long status = 0;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    if (method)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    return status;
}

static int fake_ready;

static int fake_ready_fn(void *arg, rf_buf_t *why)
{
    assert_ptr_equal(arg, &fake_ready);
    if (!fake_ready)
        rf_buf_adds(why, "postgres: connection refused\n");
    return fake_ready;
}

static void test_http_endpoints(void **state)
{
    static const struct {
        const char *path;
        const char *method;
        int ready;
        long status;
        const char *body_part;
    } cases[] = {
        {"/healthz", NULL, 0, 200, "ok"},
        {"/readyz", NULL, 0, 503, "postgres: connection refused"},
        {"/readyz", NULL, 1, 200, "ready"},
        {"/metrics", NULL, 1, 200, "rf_http_test_total{x=\"y\"} 2\n"},
        {"/nope", NULL, 1, 404, "not found"},
        {"/metrics", "POST", 1, 405, "method not allowed"},
    };
    char err[256];
    rf_http_t *h;
    rf_metric_t *c = rf_metrics_counter("rf_http_test_total", "x", "x");

    (void)state;
    rf_metrics_add(c, RF_LABELS("y"), 2);
    h = rf_http_new("127.0.0.1:0", fake_ready_fn, &fake_ready, err, sizeof(err));
    assert_non_null(h);
    assert_true(rf_http_port(h) > 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_buf_t body = RF_BUF_INIT;
        long status;
        fake_ready = cases[i].ready;
        status = http_get(rf_http_port(h), cases[i].path, cases[i].method, &body);
        if (status != cases[i].status || !strstr(rf_buf_str(&body), cases[i].body_part))
            fail_msg("case %zu %s: status %ld body '%s'", i, cases[i].path, status,
                     rf_buf_str(&body));
        rf_buf_release(&body);
    }
    rf_http_destroy(h);
    rf_http_destroy(NULL);
}

static void test_http_addresses(void **state)
{
    static const struct {
        const char *addr;
        const char *err_part; /* NULL: accepted */
    } cases[] = {
        {"127.0.0.1:0", NULL},
        {"[::1]:0", NULL},
        {"localhost:0", NULL},
        {"127.0.0.1", "expected host:port"},
        {"127.0.0.1:", "expected host:port"},
        {"127.0.0.1:http", "bad metrics address"},
        {"no.such.host.invalid:0", "bad metrics address"},
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_http_t *h;
        err[0] = '\0';
        h = rf_http_new(cases[i].addr, NULL, NULL, err, sizeof(err));
        if (!cases[i].err_part && !h) {
            /* An IPv6-less host may refuse ::1; everything else must work. */
            if (strcmp(cases[i].addr, "[::1]:0") == 0 && strstr(err, "cannot listen"))
                continue;
            fail_msg("case %zu '%s' refused: %s", i, cases[i].addr, err);
        }
        if (cases[i].err_part && (h || !strstr(err, cases[i].err_part)))
            fail_msg("case %zu '%s': expected '%s', got '%s'", i, cases[i].addr, cases[i].err_part,
                     h ? "accepted" : err);
        rf_http_destroy(h);
    }
}

static void test_http_port_in_use(void **state)
{
    char err[256], addr[64];
    rf_http_t *a, *b;

    (void)state;
    a = rf_http_new("127.0.0.1:0", NULL, NULL, err, sizeof(err));
    assert_non_null(a);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", rf_http_port(a));
    b = rf_http_new(addr, NULL, NULL, err, sizeof(err));
    assert_null(b);
    assert_non_null(strstr(err, "cannot listen on metrics address"));
    assert_non_null(strstr(err, "in use"));
    rf_http_destroy(a);
    /* Once freed, the port can be taken again. */
    b = rf_http_new(addr, NULL, NULL, err, sizeof(err));
    assert_non_null(b);
    rf_http_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_counter_exposition, teardown),
        cmocka_unit_test_teardown(test_escaping_and_const_labels, teardown),
        cmocka_unit_test_teardown(test_histogram, teardown),
        cmocka_unit_test_teardown(test_default_buckets, teardown),
        cmocka_unit_test_teardown(test_registration_rules, teardown),
        cmocka_unit_test_teardown(test_wrong_label_count_is_ignored, teardown),
        cmocka_unit_test_teardown(test_clear, teardown),
        cmocka_unit_test_teardown(test_numbers, teardown),
        cmocka_unit_test_teardown(test_threads, teardown),
        cmocka_unit_test_teardown(test_series_cap, teardown),
        cmocka_unit_test_teardown(test_http_endpoints, teardown),
        cmocka_unit_test_teardown(test_http_addresses, teardown),
        cmocka_unit_test_teardown(test_http_port_in_use, teardown),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
