/* Unit tests of the notification senders: signatures, content, verdicts, and real requests to an
 * in-process HTTP server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "rf_buf.h"
#include "rf_notify.h"
#include "rf_notify_format.h"
#include "rf_notify_sign.h"

static const char result_text[] =
    "{\"schema\":\"relfleet.result.v1\",\"event_id\":\"0b9f3c1e-8a0b-4a55-9b7e-2f1d2c3b4a59\","
    "\"release_id\":\"0b9f3c1e-8a0b-4a55-9b7e-2f1d2c3b4a59\",\"service\":\"payments\","
    "\"env\":\"prod\",\"version\":\"2.1.0\",\"kind\":\"deploy\",\"status\":\"failed\","
    "\"operator\":\"alice\",\"description\":\"支付服务：修复回调重复扣款，并且把这一行写得足够长"
    "以便需要多个编码字\",\"created_at\":\"2026-11-23T23:10:05.123Z\","
    "\"started_at\":\"2026-11-23T23:10:06.000Z\",\"finished_at\":\"2026-11-23T23:12:06.500Z\","
    "\"duration_ms\":120500,\"error\":\"deployment \\\"payments\\\" exceeded its progress "
    "deadline\","
    "\"pods\":[{\"name\":\"payments-7d9-abc\",\"phase\":\"Running\",\"reason\":"
    "\"CrashLoopBackOff\","
    "\"restarts\":4,\"log_tail\":\"line 1\\nline 2\\nfatal: cannot connect to database\\n\"}]}";

/* -- signatures --------------------------------------------------------------------- */

static void test_dingtalk_sign_matches_documented_samples(void **state)
{
    /* Expected values computed with DingTalk's own Python sample (hmac, base64, quote_plus). */
    static const struct {
        const char *secret;
        long long ts;
        const char *sign;
    } cases[] = {
        {"this is secret", 1700000000000LL, "sSFWELbV2YwjdDQhWZwTcWlX5BWUx5J6TPpsZmuPii0%3D"},
        {"SEC0123456789abcdef", 1577836800123LL,
         "WdWSDil9DxOL5qGjmXz1xTVccf%2FzF7yT7j6v5%2BJRyaI%3D"},
    };
    char out[RF_NOTIFY_DINGTALK_SIGN_SIZE];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_notify_dingtalk_sign(cases[i].secret, cases[i].ts, out);
        assert_string_equal(out, cases[i].sign);
    }
}

static void test_webhook_sign_matches_python_hmac(void **state)
{
    char out[RF_NOTIFY_WEBHOOK_SIGN_SIZE];

    (void)state;
    rf_notify_webhook_sign("wh-key", 1700000000LL, "{\"a\":1}", 7, out);
    assert_string_equal(out,
                        "sha256=d264d7b82ac3ac0e0751c55435a2802cd622b4944c9feda5b4bd7ef538a167aa");
}

static void test_url_encode_is_java_urlencoder(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"abcXYZ019.-_*", "abcXYZ019.-_*"},
        {"a+b/c=", "a%2Bb%2Fc%3D"},
        {"a b", "a+b"},
        {"中", "%E4%B8%AD"},
        {"", ""},
    };
    char out[64], small[4];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(rf_notify_url_encode(cases[i].in, out, sizeof(out)), 0);
        assert_string_equal(out, cases[i].out);
    }
    assert_int_equal(rf_notify_url_encode("a/b", small, sizeof(small)), -1);
    assert_string_equal(small, "");
}

/* -- content ------------------------------------------------------------------------ */

/* Decodes a folded run of =?UTF-8?B?...?= words back to UTF-8, checking each word's size. */
static void decode_words(const char *v, rf_buf_t *out)
{
    while (*v) {
        const char *start = strstr(v, "=?UTF-8?B?");
        const char *end;
        unsigned char bin[128];
        int n;
        assert_non_null(start);
        end = strstr(start + 10, "?=");
        assert_non_null(end);
        assert_true(end + 2 - start <= 75);
        n = EVP_DecodeBlock(bin, (const unsigned char *)start + 10, (int)(end - start - 10));
        assert_true(n >= 0);
        while (n > 0 && end[-1] == '=' && bin[n - 1] == 0) { /* padding */
            n--;
            end--;
            if (end[-1] != '=')
                break;
        }
        rf_buf_add(out, bin, (size_t)n);
        v = strstr(start + 10, "?=") + 2;
        if (*v) {
            assert_memory_equal(v, "\r\n ", 3);
            v += 3;
        }
    }
}

static void test_header_value_plain_or_rfc2047(void **state)
{
    static const char *const cases[] = {
        "[relfleet] web 1.0 succeeded in prod",
        "[relfleet] a-rather-long-service-name 1.0.0 succeeded in prod: plain ascii words",
        "[relfleet] payments 2.1.0 failed in prod: 支付服务：修复回调重复扣款",
        "a line\r\nBcc: victim@example.test",
        "ascii but =?looks?= encoded",
        "€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_buf_t out = RF_BUF_INIT, back = RF_BUF_INIT;
        rf_notify_format_header_value(cases[i], &out);
        if (i == 0) {
            assert_string_equal(rf_buf_str(&out), cases[i]);
        } else {
            const char *s = rf_buf_str(&out);
            for (const char *p = s; *p; p++) /* CR only in folding, LF only after CR */
                if (*p == '\r')
                    assert_memory_equal(p, "\r\n ", 3);
            decode_words(s, &back);
            assert_string_equal(rf_buf_str(&back), cases[i]);
        }
        rf_buf_release(&out);
        rf_buf_release(&back);
    }
}

static void test_email_is_a_complete_message(void **state)
{
    json_t *result = json_loads(result_text, 0, NULL);
    rf_buf_t mail = RF_BUF_INIT, text = RF_BUF_INIT;
    const char *m, *body;
    char *decoded;
    size_t n = 0;

    (void)state;
    assert_non_null(result);
    rf_notify_format_email(result, "Relfleet <relfleet@example.test>", "a@x.test,b@y.test",
                           "id.1@example.test", 1795477363LL, &mail);
    m = rf_buf_str(&mail);
    assert_non_null(strstr(m, "From: Relfleet <relfleet@example.test>\r\n"));
    assert_non_null(strstr(m, "To: a@x.test,b@y.test\r\n"));
    assert_non_null(strstr(m, "Subject: =?UTF-8?B?"));
    assert_non_null(strstr(m, "Date: "));
    assert_non_null(strstr(m, " +0000\r\n"));
    assert_non_null(strstr(m, "Message-ID: <id.1@example.test>\r\n"));
    assert_non_null(strstr(m, "MIME-Version: 1.0\r\n"));
    assert_non_null(strstr(m, "Content-Type: text/plain; charset=UTF-8\r\n"));
    assert_non_null(strstr(m, "Content-Transfer-Encoding: base64\r\n"));
    for (const char *p = m; *p; p++) {
        if (*p == '\n')
            assert_int_equal(p[-1], '\r');
        assert_true((unsigned char)*p < 0x80); /* 7-bit clean */
    }
    for (const char *line = m; *line;) { /* RFC 5322: at most 78 characters a line */
        const char *eol = strstr(line, "\r\n");
        assert_non_null(eol);
        assert_true(eol - line <= 78);
        line = eol + 2;
    }
    body = strstr(m, "\r\n\r\n") + 4;
    decoded = malloc(strlen(body));
    for (const char *line = body; *line;) {
        const char *eol = strstr(line, "\r\n");
        int got = EVP_DecodeBlock((unsigned char *)decoded + n, (const unsigned char *)line,
                                  (int)(eol - line));
        assert_true(got >= 0);
        n += (size_t)got;
        line = eol + 2;
    }
    while (n > 0 && decoded[n - 1] == '\0')
        n--;
    rf_buf_add(&text, decoded, n);
    free(decoded);
    for (const char *want = "Service:     payments\0Env:         prod\0Version:     2.1.0\0"
                            "Operator:    alice\0Description: 支付服务\0Status:      failed\0"
                            "Duration:    2m 00s\0Reason:      deployment \"payments\" exceeded\0"
                            "payments-7d9-abc: Running CrashLoopBackOff, restarts 4\0"
                            "    | fatal: cannot connect to database\0"
                            "relctl show 0b9f3c1e-8a0b-4a55-9b7e-2f1d2c3b4a59\0";
         *want; want += strlen(want) + 1)
        assert_non_null(strstr(rf_buf_str(&text), want));
    rf_buf_release(&text);
    rf_buf_release(&mail);
    json_decref(result);
}

static void test_dingtalk_markdown(void **state)
{
    json_t *result = json_loads(result_text, 0, NULL);
    char *text = rf_notify_format_dingtalk(result);
    json_t *msg = json_loads(text, 0, NULL);
    const char *md = json_string_value(json_object_get(json_object_get(msg, "markdown"), "text"));

    (void)state;
    assert_string_equal(json_string_value(json_object_get(msg, "msgtype")), "markdown");
    assert_non_null(md);
    assert_non_null(strstr(md, "[relfleet] payments 2.1.0: failed"));
    assert_non_null(strstr(md, "> fatal: cannot connect to database"));
    assert_non_null(strstr(md, "relctl show 0b9f3c1e"));
    json_decref(msg);
    free(text);
    json_decref(result);
}

static void test_address_target_outcome_checks(void **state)
{
    static const struct {
        int channel;
        const char *target;
        rf_err_t want;
    } targets[] = {
        {RF_NOTIFY_EMAIL, "a@b.test", RF_OK},
        {RF_NOTIFY_EMAIL, "a@b.test, c@d.test", RF_OK},
        {RF_NOTIFY_EMAIL, "a@b.test,", RF_ERR_PERM},
        {RF_NOTIFY_EMAIL, "ab.test", RF_ERR_PERM},
        {RF_NOTIFY_EMAIL, "a@b@c", RF_ERR_PERM},
        {RF_NOTIFY_EMAIL, "a@b.test\r\nBcc: x@y", RF_ERR_PERM},
        {RF_NOTIFY_DINGTALK, "https://oapi.dingtalk.com/robot/send?access_token=x", RF_OK},
        {RF_NOTIFY_WEBHOOK, "http://127.0.0.1:9/hook", RF_OK},
        {RF_NOTIFY_WEBHOOK, "ftp://127.0.0.1/hook", RF_ERR_PERM},
        {RF_NOTIFY_WEBHOOK, "file:///etc/passwd", RF_ERR_PERM},
        {RF_NOTIFY_WEBHOOK, "not a url", RF_ERR_PERM},
    };
    static const struct {
        const char *list;
        rf_err_t want;
    } outcomes[] = {
        {"succeeded", RF_OK},
        {"failed, cancelled,superseded,rejected", RF_OK},
        {"progressing", RF_ERR_PERM},
        {"failed,failed", RF_ERR_PERM},
        {"", RF_ERR_PERM},
        {"failed,,", RF_ERR_PERM},
    };
    char errstr[256], out[128];

    (void)state;
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
        assert_int_equal(rf_notify_target_check((rf_notify_channel_t)targets[i].channel,
                                                targets[i].target, errstr, sizeof(errstr)),
                         targets[i].want);
    for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
        assert_int_equal(rf_notify_outcomes_check(outcomes[i].list, errstr, sizeof(errstr)),
                         outcomes[i].want);
    assert_int_equal(rf_notify_format_address("Relfleet <r@x.test>", out, sizeof(out)), 0);
    assert_string_equal(out, "r@x.test");
    assert_int_equal(rf_notify_format_address("r@x.test", out, sizeof(out)), 0);
    assert_int_equal(rf_notify_format_address("Relfleet <r x@x.test>", out, sizeof(out)), -1);
    rf_notify_target_redact("https://h/robot/send?access_token=s3cr3t&x=1", out, sizeof(out));
    assert_string_equal(out, "https://h/robot/send?access_token=***&x=***");
}

/* -- verdicts and back-off ---------------------------------------------------------- */

static void test_verdicts(void **state)
{
    static const struct {
        long status;
        const char *body;
        rf_err_t want;
        const char *says;
    } dt[] = {
        {200, "{\"errcode\":0,\"errmsg\":\"ok\"}", RF_OK, ""},
        {200, "{\"errcode\":130101,\"errmsg\":\"send too fast\"}", RF_ERR_RETRY, "130101"},
        {200, "{\"errcode\":310000,\"errmsg\":\"sign not match\"}", RF_ERR_PERM, "sign not match"},
        {200, "{\"errcode\":-1,\"errmsg\":\"busy\"}", RF_ERR_RETRY, "busy"},
        {200, "{\"errcode\":300001,\"errmsg\":\"token is not exist\"}", RF_ERR_PERM, "300001"},
        {200, "<html>proxy</html>", RF_ERR_RETRY, "no errcode"},
        {500, "", RF_ERR_RETRY, "HTTP 500"},
        {429, "", RF_ERR_RETRY, "HTTP 429"},
        {404, "", RF_ERR_PERM, "HTTP 404"},
    };
    static const struct {
        long status;
        rf_err_t want;
    } wh[] = {{200, RF_OK},       {204, RF_OK},        {301, RF_ERR_PERM},  {400, RF_ERR_PERM},
              {401, RF_ERR_PERM}, {408, RF_ERR_RETRY}, {429, RF_ERR_RETRY}, {503, RF_ERR_RETRY}};
    char errstr[512];

    (void)state;
    for (size_t i = 0; i < sizeof(dt) / sizeof(dt[0]); i++) {
        errstr[0] = '\0';
        assert_int_equal(
            rf_notify_dingtalk_verdict(dt[i].status, dt[i].body, errstr, sizeof(errstr)),
            dt[i].want);
        assert_non_null(strstr(errstr, dt[i].says));
    }
    for (size_t i = 0; i < sizeof(wh) / sizeof(wh[0]); i++)
        assert_int_equal(rf_notify_webhook_verdict(wh[i].status, errstr, sizeof(errstr)),
                         wh[i].want);
}

static void test_backoff_doubles_with_jitter_and_cap(void **state)
{
    (void)state;
    for (int attempts = 1; attempts <= 40; attempts++) {
        long full = 1000;
        for (int i = 1; i < attempts && full < 60000; i++)
            full *= 2;
        if (full > 60000)
            full = 60000;
        for (unsigned int rnd = 0; rnd < 50000; rnd += 9973) {
            long d = rf_notify_backoff_ms(attempts, 1000, 60000, rnd);
            assert_true(d >= full / 2 && d <= full);
        }
    }
    assert_int_not_equal(rf_notify_backoff_ms(3, 1000, 60000, 1),
                         rf_notify_backoff_ms(3, 1000, 60000, 1500));
}

/* -- real requests ------------------------------------------------------------------ */

typedef struct server {
    struct MHD_Daemon *daemon;
    int port;
    int status; /* answered */
    const char *answer;
    char url[1024];
    char sig[128], ts[32], event[64], idem[64];
    char ce[6][160], content_type[80]; /* ce-specversion ... ce-subject, Content-Type */
    rf_buf_t body;
} server_t;

static const char *const ce_headers[6] = {"ce-specversion", "ce-id",   "ce-source",
                                          "ce-type",        "ce-time", "ce-subject"};

static enum MHD_Result server_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    server_t *s = cls;
    struct MHD_Response *r;
    const char *v;
    enum MHD_Result ret;

    (void)method;
    (void)version;
    if (!*con_cls) {
        *con_cls = s;
        rf_buf_reset(&s->body);
        return MHD_YES;
    }
    if (*upload_data_size) {
        rf_buf_add(&s->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    snprintf(s->url, sizeof(s->url), "%s", url);
    v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "sign");
    if (v)
        snprintf(s->sig, sizeof(s->sig), "%s", v);
    v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "timestamp");
    if (v)
        snprintf(s->ts, sizeof(s->ts), "%s", v);
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Relfleet-Signature");
    if (v)
        snprintf(s->sig, sizeof(s->sig), "%s", v);
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Relfleet-Timestamp");
    if (v)
        snprintf(s->ts, sizeof(s->ts), "%s", v);
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Relfleet-Event-Id");
    snprintf(s->event, sizeof(s->event), "%s", v ? v : "");
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
    snprintf(s->idem, sizeof(s->idem), "%s", v ? v : "");
    for (int i = 0; i < 6; i++) {
        v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, ce_headers[i]);
        snprintf(s->ce[i], sizeof(s->ce[i]), "%s", v ? v : "");
    }
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    snprintf(s->content_type, sizeof(s->content_type), "%s", v ? v : "");
    r = MHD_create_response_from_buffer(strlen(s->answer), (void *)s->answer,
                                        MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(conn, (unsigned int)s->status, r);
    MHD_destroy_response(r);
    return ret;
}

static void server_start(server_t *s, int status, const char *answer)
{
    memset(s, 0, sizeof(*s));
    s->status = status;
    s->answer = answer;
    rf_buf_init(&s->body, 0);
    s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, server_handle, s,
                                 MHD_OPTION_END);
    assert_non_null(s->daemon);
    s->port = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT)->port;
}

static void server_stop(server_t *s)
{
    MHD_stop_daemon(s->daemon);
    rf_buf_release(&s->body);
}

static rf_err_t send_once(rf_notify_channel_t channel, const char *target, const char *secret,
                          char *errstr, size_t errstr_size)
{
    rf_notify_request_t req = {.channel = channel,
                               .target = target,
                               .secret = secret,
                               .result_text = result_text,
                               .timeout_ms = 5000,
                               .now_ms = 1795477363183LL};
    rf_notify_send_t *s = rf_notify_send_new(&req, errstr, errstr_size);
    rf_err_t err;

    assert_non_null(s);
    err = rf_notify_send_run(s, errstr, errstr_size);
    rf_notify_send_destroy(s);
    return err;
}

static void test_webhook_request_on_the_wire(void **state)
{
    server_t srv;
    char url[128], errstr[512], want[RF_NOTIFY_WEBHOOK_SIGN_SIZE];

    (void)state;
    server_start(&srv, 200, "ok");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv.port);
    assert_int_equal(send_once(RF_NOTIFY_WEBHOOK, url, "k3y", errstr, sizeof(errstr)), RF_OK);
    assert_string_equal(rf_buf_str(&srv.body), result_text);
    assert_string_equal(srv.event, "0b9f3c1e-8a0b-4a55-9b7e-2f1d2c3b4a59");
    assert_string_equal(srv.idem, srv.event);
    assert_string_equal(srv.ts, "1795477363");
    rf_notify_webhook_sign("k3y", 1795477363LL, result_text, strlen(result_text), want);
    assert_string_equal(srv.sig, want);
    server_stop(&srv);

    server_start(&srv, 503, "busy");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv.port);
    assert_int_equal(send_once(RF_NOTIFY_WEBHOOK, url, NULL, errstr, sizeof(errstr)), RF_ERR_RETRY);
    assert_non_null(strstr(errstr, "HTTP 503"));
    assert_string_equal(srv.sig, ""); /* no key, no signature */
    server_stop(&srv);
}

/* --format cloudevents: the CloudEvents HTTP binding in binary mode beside the same body,
 * signature and headers; without it no ce- header is sent. */
static void test_webhook_cloudevents_on_the_wire(void **state)
{
    static const char *const want[6] = {"1.0",
                                        "0b9f3c1e-8a0b-4a55-9b7e-2f1d2c3b4a59",
                                        "/relfleet/eu-1",
                                        "io.relfleet.release.failed",
                                        "2026-11-23T23:12:06.500Z",
                                        "payments/prod"};
    rf_notify_request_t req = {.channel = RF_NOTIFY_WEBHOOK,
                               .secret = "k3y",
                               .result_text = result_text,
                               .timeout_ms = 5000,
                               .now_ms = 1795477363183LL,
                               .cloudevents = 1,
                               .ce_source = "/relfleet/eu-1"};
    char url[128], errstr[512], sig[RF_NOTIFY_WEBHOOK_SIGN_SIZE];
    rf_notify_send_t *send;
    server_t srv;

    (void)state;
    server_start(&srv, 200, "ok");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv.port);
    req.target = url;
    send = rf_notify_send_new(&req, errstr, sizeof(errstr));
    assert_non_null(send);
    assert_int_equal(rf_notify_send_run(send, errstr, sizeof(errstr)), RF_OK);
    rf_notify_send_destroy(send);
    for (int i = 0; i < 6; i++)
        if (strcmp(srv.ce[i], want[i]) != 0)
            fail_msg("%s: '%s', want '%s'", ce_headers[i], srv.ce[i], want[i]);
    assert_string_equal(srv.content_type, "application/json; charset=utf-8");
    assert_string_equal(rf_buf_str(&srv.body), result_text);
    assert_string_equal(srv.event, want[1]);
    rf_notify_webhook_sign("k3y", 1795477363LL, result_text, strlen(result_text), sig);
    assert_string_equal(srv.sig, sig);
    server_stop(&srv);

    server_start(&srv, 200, "ok");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv.port);
    assert_int_equal(send_once(RF_NOTIFY_WEBHOOK, url, NULL, errstr, sizeof(errstr)), RF_OK);
    for (int i = 0; i < 6; i++)
        assert_string_equal(srv.ce[i], "");
    server_stop(&srv);

    /* A result the binding cannot describe is a permanent error. */
    req.result_text = "{\"event_id\":\"x\"}";
    assert_null(rf_notify_send_new(&req, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "cannot describe the result as a cloudevent"));
}

static void test_dingtalk_request_on_the_wire(void **state)
{
    server_t srv;
    char url[160], errstr[512], want[RF_NOTIFY_DINGTALK_SIGN_SIZE],
        decoded[RF_NOTIFY_DINGTALK_SIGN_SIZE];
    json_t *msg;

    (void)state;
    server_start(&srv, 200, "{\"errcode\":310000,\"errmsg\":\"keywords not in content\"}");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/robot/send?access_token=abc", srv.port);
    assert_int_equal(send_once(RF_NOTIFY_DINGTALK, url, "SECxyz", errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_non_null(strstr(errstr, "keywords not in content"));
    assert_string_equal(srv.ts, "1795477363183");
    /* MHD hands the decoded value; encode it again to compare with the documented form. */
    rf_notify_dingtalk_sign("SECxyz", 1795477363183LL, want);
    rf_notify_url_encode(srv.sig, decoded, sizeof(decoded));
    assert_string_equal(decoded, want);
    msg = json_loads(rf_buf_str(&srv.body), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(msg, "msgtype")), "markdown");
    json_decref(msg);
    server_stop(&srv);

    /* Nobody listening: retriable. */
    assert_int_equal(send_once(RF_NOTIFY_DINGTALK, "http://127.0.0.1:1/robot/send", NULL, errstr,
                               sizeof(errstr)),
                     RF_ERR_RETRY);
}

static void test_requests_that_cannot_be_made(void **state)
{
    rf_notify_request_t req = {.channel = RF_NOTIFY_EMAIL,
                               .target = "a@b.test",
                               .result_text = result_text,
                               .timeout_ms = 1000,
                               .smtp_from = "r@x.test"};
    char errstr[512];

    (void)state;
    assert_null(rf_notify_send_new(&req, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "smtp_url"));
    req.smtp_url = "smtp://127.0.0.1:1";
    req.secret = "pw";
    assert_null(rf_notify_send_new(&req, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "smtp_user"));
    assert_null(strstr(errstr, "pw'"));
    req.secret = NULL;
    req.result_text = "not json";
    assert_null(rf_notify_send_new(&req, errstr, sizeof(errstr)));
    req.result_text = result_text;
    req.channel = RF_NOTIFY_WEBHOOK;
    req.target = "gopher://x";
    assert_null(rf_notify_send_new(&req, errstr, sizeof(errstr)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dingtalk_sign_matches_documented_samples),
        cmocka_unit_test(test_webhook_sign_matches_python_hmac),
        cmocka_unit_test(test_url_encode_is_java_urlencoder),
        cmocka_unit_test(test_header_value_plain_or_rfc2047),
        cmocka_unit_test(test_email_is_a_complete_message),
        cmocka_unit_test(test_dingtalk_markdown),
        cmocka_unit_test(test_address_target_outcome_checks),
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_backoff_doubles_with_jitter_and_cap),
        cmocka_unit_test(test_webhook_request_on_the_wire),
        cmocka_unit_test(test_webhook_cloudevents_on_the_wire),
        cmocka_unit_test(test_dingtalk_request_on_the_wire),
        cmocka_unit_test(test_requests_that_cannot_be_made),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
