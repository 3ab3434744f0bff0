/* rf_msg: hostile payloads refused with their reason, good ones accepted; dead letters, times, ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "rf_msg.h"
#include "unit_schemas.h"


#define REQ_HEAD                                                                                   \
    "{\"schema\":\"relfleet.request.v1\",\"release_id\":\"0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a10\","
#define REQ_TAIL                                                                                   \
    "\"kind\":\"deploy\",\"operator\":\"alice\",\"requested_at\":\"2026-11-23T23:10:05.123Z\"}"
#define REQ REQ_HEAD "\"service\":\"web\",\"env\":\"prod\",\"version\":\"v1.4.2\"," REQ_TAIL
#define RES                                                                                        \
    "{\"schema\":\"relfleet.result.v1\",\"event_id\":\"0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a10\","    \
    "\"release_id\":\"0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a10\",\"service\":\"web\",\"env\":"         \
    "\"prod\",\"version\":\"v1\",\"kind\":\"deploy\",\"status\":\"succeeded\",\"operator\":"       \
    "\"alice\",\"created_at\":\"2026-11-23T23:10:05.123Z\",\"finished_at\":"                       \
    "\"2026-11-23T23:10:07.123Z\",\"duration_ms\":2000}"

static const struct mcase {
    const char *name;
    const char *payload; /* NUL-terminated unless len is given */
    size_t len;
    const char *key; /* NULL: no key */
    const char *prefix;
    const char *reason; /* substring of the refusal; NULL: accepted */
} mcases[] = {
    {"good request", REQ, 0, "prod/web", "relfleet.request.", NULL},
    {"good request, any prefix", REQ, 0, "prod/web", NULL, NULL},
    {"good result", RES, 0, "prod/web", "relfleet.result.", NULL},
    {"good request with unicode description",
     REQ_HEAD "\"service\":\"web\",\"env\":\"prod\",\"version\":\"v1\",\"description\":"
              "\"\xe9\x87\x8d\xe6\x96\xb0\xe5\x8f\x91\xe5\xb8\x83 \\u2603\"," REQ_TAIL,
     0, "prod/web", "relfleet.request.", NULL},
    {"empty payload", "", 0, "prod/web", "relfleet.request.", "empty payload"},
    {"not JSON", "deploy web please", 0, "prod/web", NULL,
     "payload is not JSON: '[' or '{' expected near 'deploy' (line 1, column 6)"},
    {"truncated JSON", "{\"schema\":\"relfleet.request.v1\"", 0, "prod/web", NULL,
     "payload is not JSON: "},
    {"JSON with trailing garbage", REQ " x", 0, "prod/web", NULL,
     "payload is not JSON: end of file expected"},
    {"error position reported", "{\n  \"schema\": tru\n}", 0, NULL, NULL, "(line 2, column"},
    {"invalid UTF-8", "{\"schema\":\"relfleet.request.v1\",\"operator\":\"\xff\xfe\"}", 0,
     "prod/web", NULL, "payload is not valid UTF-8 (byte 44)"},
    {"overlong UTF-8", "{\"a\":\"\xc0\xaf\"}", 0, NULL, NULL, "not valid UTF-8 (byte 6)"},
    {"UTF-16 surrogate in UTF-8", "{\"a\":\"\xed\xa0\x80\"}", 0, NULL, NULL, "not valid UTF-8"},
    {"NUL byte", "{\"a\":1}\0", 8, NULL, NULL, "payload is not JSON"},
    {"escaped NUL in a string", "{\"schema\":\"relfleet.request.v1\\u0000\"}", 0, NULL, NULL,
     "payload is not JSON: \\u0000 is not allowed"},
    {"duplicate key", "{\"schema\":\"relfleet.request.v1\",\"schema\":\"relfleet.request.v1\"}", 0,
     NULL, NULL, "payload is not JSON: duplicate object key"},
    {"huge integer",
     "{\"schema\":\"relfleet.rendered.v1\",\"fence\":123456789012345678901234567890}", 0, NULL,
     NULL, "payload is not JSON: too big integer"},
    {"top-level array", "[" REQ "]", 0, "prod/web", NULL, "payload is not a JSON object"},
    {"top-level string", "\"relfleet.request.v1\"", 0, NULL, NULL, "payload is not JSON"},
    {"missing schema", "{\"release_id\":\"x\"}", 0, NULL, NULL, "missing field 'schema'"},
    {"schema not a string", "{\"schema\":1}", 0, NULL, NULL, "field 'schema': expected string"},
    {"unknown schema version", "{\"schema\":\"relfleet.request.v2\"}", 0, NULL, "relfleet.request.",
     "unknown schema 'relfleet.request.v2'"},
    {"result on the requests topic", RES, 0, "prod/web", "relfleet.request.",
     "schema 'relfleet.result.v1' does not belong here (expected 'relfleet.request.*')"},
    {"wrong type", REQ_HEAD "\"service\":\"web\",\"env\":\"prod\",\"version\":142," REQ_TAIL, 0,
     "prod/web", NULL,
     "invalid relfleet.request.v1: field 'version': expected string, got integer"},
    {"missing field", REQ_HEAD "\"service\":\"web\",\"env\":\"prod\"," REQ_TAIL, 0, "prod/web",
     NULL, "invalid relfleet.request.v1: field 'version': required field missing"},
    {"extra field",
     REQ_HEAD "\"service\":\"web\",\"env\":\"prod\",\"version\":\"v1\",\"sudo\":true," REQ_TAIL, 0,
     "prod/web", NULL, "invalid relfleet.request.v1: field 'sudo': unexpected field"},
    {"bad pattern", REQ_HEAD "\"service\":\"../etc\",\"env\":\"prod\",\"version\":\"v1\"," REQ_TAIL,
     0, "prod/../etc", NULL, "field 'service': string does not match pattern"},
    {"key mismatch", REQ, 0, "prod/api", NULL,
     "key 'prod/api' does not match the body ('prod/web')"},
    {"key swapped", REQ, 0, "web/prod", NULL, "key 'web/prod' does not match"},
    {"key binary", REQ, 0, "prod/web\x01", NULL, "key 'prod/web\\x01' does not match"},
    {"key missing", REQ, 0, NULL, NULL, "missing key (expected 'prod/web')"},
};

static void hostile_and_good_inputs(void **state)
{
    char errstr[1024];
    size_t i;
    unsigned wrong = 0;

    (void)state;
    for (i = 0; i < sizeof(mcases) / sizeof(mcases[0]); i++) {
        const struct mcase *c = &mcases[i];
        size_t len = c->len ? c->len : strlen(c->payload);
        json_t *body = (json_t *)1;
        rf_err_t got;

        errstr[0] = '\0';
        got = rf_msg_parse(reg, c->payload, len, c->key, c->key ? strlen(c->key) : 0, c->prefix,
                           &body, errstr, sizeof(errstr));
        if (!c->reason && (got != RF_OK || !json_is_object(body))) {
            print_message("WRONG '%s': refused: %s\n", c->name, errstr);
            wrong++;
        } else if (c->reason &&
                   (got != RF_ERR_PERM || body != NULL || !strstr(errstr, c->reason))) {
            print_message("WRONG '%s': got %s '%s', want '%s'\n", c->name, rf_err_name(got), errstr,
                          c->reason);
            wrong++;
        }
        if (got == RF_OK)
            json_decref(body);
    }
    assert_int_equal(wrong, 0);
}

static char *repeat(const char *head, char c, size_t n, const char *tail)
{
    size_t hl = strlen(head), tl = strlen(tail);
    char *s = malloc(hl + n + tl + 1);

    assert_non_null(s);
    memcpy(s, head, hl);
    memset(s + hl, c, n);
    memcpy(s + hl + n, tail, tl + 1);
    return s;
}

static void expect_refused(const char *payload, size_t len, const char *reason)
{
    char errstr[1024];
    json_t *body = NULL;

    assert_int_equal(
        rf_msg_parse(reg, payload, len, "prod/web", 8, NULL, &body, errstr, sizeof(errstr)),
        RF_ERR_PERM);
    assert_null(body);
    if (!strstr(errstr, reason))
        fail_msg("got '%s', want '%s'", errstr, reason);
}

/* The model of the payload scans before jansson (byte by byte): the first byte that is not
 * UTF-8 (RFC 3629: no overlongs, surrogates or past U+10FFFF), and the depth. */
static size_t model_utf8_bad(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                                 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        unsigned char lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
        unsigned char hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        if (len == 0 || n - i < len || (len > 1 && (s[i + 1] < lo || s[i + 1] > hi)))
            return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += len;
    }
    return n;
}

static int model_deeper(const char *s, size_t n, int max)
{
    int depth = 0, in_string = 0;

    for (size_t i = 0; i < n; i++) {
        if (in_string) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_string = 0;
        } else if (s[i] == '"') {
            in_string = 1;
        } else if (s[i] == '[' || s[i] == '{') {
            if (++depth > max)
                return 1;
        } else if (s[i] == ']' || s[i] == '}') {
            depth--;
        }
    }
    return 0;
}

/* Random payloads of quotes, backslashes, brackets, ASCII and UTF-8 pieces (valid and not,
 * across 8-byte boundaries), half of them after 62 '[': rf_msg_parse refuses each for UTF-8 at the model's byte, or
 * for depth exactly when the model nests deeper. */
static void payload_scans_as_model(void **state)
{
    static const char *const pieces[] = {
        "\"", "\\", "[", "]", "{", "}", "a", "bcdefgh", ",", ":", "\xc3\xa9", "\xe2\x82\xac",
        "\xf0\x9f\x98\x83", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "\x80",
        "\xe2\x82", "[[[[[[[[", "]]]]]]]]", "\\\"", "\\\\", "\"x\"[", "\"\"{", "\"\\\"\"["};
    uint32_t x = 0x9e3779b9u;
    char buf[512], errstr[1024], want[96];

    (void)state;
    for (int round = 0; round < 20000; round++) {
        size_t n = round % 2 ? 62 : 0; /* half of them near the depth limit */
        int parts = 1 + (int)(x % 60);
        memset(buf, '[', n);
        for (int k = 0; k < parts; k++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            const char *p = pieces[x % (sizeof(pieces) / sizeof(pieces[0]))];
            size_t pl = strlen(p);
            if (n + pl >= sizeof(buf))
                break;
            memcpy(buf + n, p, pl);
            n += pl;
        }
        json_t *body = NULL;
        size_t bad = model_utf8_bad((const unsigned char *)buf, n);
        rf_err_t r = rf_msg_parse(reg, buf, n, "prod/web", 8, NULL, &body, errstr, sizeof(errstr));
        json_decref(body);
        assert_int_equal(r, RF_ERR_PERM);
        if (bad < n)
            snprintf(want, sizeof(want), "payload is not valid UTF-8 (byte %zu)", bad);
        else
            snprintf(want, sizeof(want), "payload nests deeper than %d levels", RF_MSG_MAX_DEPTH);
        if ((bad < n || model_deeper(buf, n, RF_MSG_MAX_DEPTH)) != (strstr(errstr, want) != NULL))
            fail_msg("round %d (%zu bytes): '%s', model: utf8 %zu, deeper %d", round, n, errstr,
                     bad, model_deeper(buf, n, RF_MSG_MAX_DEPTH));
    }
}

static void one_megabyte_string(void **state)
{
    /* a 1 MB version fits the payload cap and is refused by maxLength */
    char *p = repeat(REQ_HEAD "\"service\":\"web\",\"env\":\"prod\",\"version\":\"", 'v',
                     1000 * 1000, "\"," REQ_TAIL);
    (void)state;
    expect_refused(p, strlen(p), "field 'version': string too long (1000000 > 128)");
    free(p);
    /* past 1 MiB the payload is refused before parsing */
    p = repeat(REQ_HEAD "\"description\":\"", 'd', RF_MSG_MAX_BYTES, "\"}");
    expect_refused(p, strlen(p), "payload too large (");
    free(p);
}

static void deep_nesting(void **state)
{
    char *open = repeat("", '[', 10000, "");
    char *doc = malloc(20001);
    char *string_brackets;
    json_error_t jerr;
    json_t *j;

    (void)state;
    memcpy(doc, open, 10000);
    memset(doc + 10000, ']', 10000);
    doc[20000] = '\0';
    expect_refused(doc, 20000, "payload nests deeper than 64 levels");
    /* unbalanced too: the scan does not need the closing half */
    expect_refused(open, 10000, "payload nests deeper than 64 levels");
    /* jansson 2.14's own limit (2048) holds without us: it fails cleanly, no crash */
    j = json_loadb(doc, 20000, 0, &jerr);
    assert_null(j);
    assert_non_null(strstr(jerr.text, "maximum parsing depth reached"));
    /* brackets inside strings do not count; 64 levels are fine */
    string_brackets =
        repeat(REQ_HEAD "\"description\":\"", '[', 3000,
               "\",\"service\":\"web\",\"env\":\"prod\",\"version\":\"v1\"," REQ_TAIL);
    j = NULL;
    {
        char errstr[512];
        assert_int_equal(rf_msg_parse(reg, string_brackets, strlen(string_brackets), "prod/web", 8,
                                      NULL, &j, errstr, sizeof(errstr)),
                         RF_OK);
        json_decref(j);
    }
    free(string_brackets);
    free(open);
    free(doc);
}

static void exactly_64_levels(void **state)
{
    /* 64 nested levels pass the depth check (and then fail the schema), 65 do not */
    char buf[400];
    size_t n = 0;
    int i;

    (void)state;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{\"schema\":\"relfleet.request.v1\",\"x\":");
    for (i = 0; i < 63; i++)
        buf[n++] = '[';
    for (i = 0; i < 63; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    expect_refused(buf, n, "field 'release_id': required field missing");
    memmove(buf + 1, buf, n + 1);
    buf[0] = '[';
    buf[n + 1] = ']';
    buf[n + 2] = '\0';
    expect_refused(buf, n + 2, "payload nests deeper than 64 levels");
}

/* ------------------------------------------------------------------ dead letters */

static json_t *parse_dlq(const char *text)
{
    char errstr[512];
    json_error_t jerr;
    json_t *j;

    assert_non_null(text);
    j = json_loads(text, 0, &jerr);
    assert_non_null(j);
    if (rf_schema_validate(reg, "relfleet.dlq.v1", j, errstr, sizeof(errstr)) != RF_OK)
        fail_msg("dead letter invalid: %s: %s", errstr, text);
    return j;
}

static void dlq_round_trip(void **state)
{
    const char payload[] = "{\"schema\":\"relfleet.request.v1\",\xff}";
    unsigned char decoded[sizeof(payload) + 4];
    json_t *j;
    char *text;
    const char *b64;
    int n;

    (void)state;
    text = rf_msg_dlq_build("render", "payload is not valid UTF-8 (byte 32)", "relfleet.requests",
                            3, 1234567, "prod/web", 8, payload, sizeof(payload) - 1);
    j = parse_dlq(text);
    assert_string_equal(json_string_value(json_object_get(j, "stage")), "render");
    assert_string_equal(json_string_value(json_object_get(j, "key")), "prod/web");
    assert_int_equal(json_integer_value(json_object_get(j, "partition")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "offset")), 1234567);
    assert_int_equal(json_integer_value(json_object_get(j, "payload_size")), sizeof(payload) - 1);
    assert_true(json_is_false(json_object_get(j, "payload_truncated")));
    b64 = json_string_value(json_object_get(j, "payload_base64"));
    n = EVP_DecodeBlock(decoded, (const unsigned char *)b64, (int)strlen(b64));
    /* EVP_DecodeBlock counts the padding bytes as data */
    assert_true(n >= (int)sizeof(payload) - 1);
    assert_memory_equal(decoded, payload, sizeof(payload) - 1);
    json_decref(j);
    free(text);

    /* no key, empty payload, empty reason, binary key */
    text = rf_msg_dlq_build("apply", "", "relfleet.rendered", -1, -1, NULL, 0, NULL, 0);
    j = parse_dlq(text);
    assert_true(json_is_null(json_object_get(j, "key")));
    assert_string_equal(json_string_value(json_object_get(j, "payload_base64")), "");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "no reason given");
    json_decref(j);
    free(text);

    text = rf_msg_dlq_build("track", "x", "relfleet.applied", 0, 0, "a\xff\0b", 4, "x", 1);
    j = parse_dlq(text);
    assert_string_equal(json_string_value(json_object_get(j, "key")), "a\xef\xbf\xbd\xef\xbf\xbd"
                                                                      "b");
    json_decref(j);
    free(text);

    assert_null(rf_msg_dlq_build(NULL, "r", "t", 0, 0, NULL, 0, NULL, 0));
}

static void dlq_bounds(void **state)
{
    size_t big = 2 * 1024 * 1024;
    char *payload = malloc(big);
    char *reason = repeat("", 'r', 5000, "");
    char *key = repeat("", 'k', 5000, "");
    char *text;
    json_t *j;

    (void)state;
    memset(payload, 'p', big);
    /* a reason cut inside a multibyte character stays valid UTF-8 */
    memcpy(reason + RF_MSG_DLQ_REASON_MAX - 1, "\xe2\x98\x83", 3);
    text = rf_msg_dlq_build("notify", reason, "relfleet.results", 1, 2, key, 5000, payload, big);
    j = parse_dlq(text);
    assert_true(json_is_true(json_object_get(j, "payload_truncated")));
    assert_int_equal(json_integer_value(json_object_get(j, "payload_size")), big);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "payload_base64"))),
                     4 * ((RF_MSG_DLQ_PAYLOAD_MAX + 2) / 3));
    assert_int_equal(strlen(json_string_value(json_object_get(j, "reason"))),
                     RF_MSG_DLQ_REASON_MAX - 1);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "key"))), RF_MSG_DLQ_KEY_MAX);
    assert_true(strlen(text) < 1000 * 1000); /* fits Kafka's default message size */
    json_decref(j);
    free(text);
    free(payload);
    free(reason);
    free(key);
}

/* ------------------------------------------------------------------ times and ids */

static void iso_times(void **state)
{
    char buf[RF_MSG_TIME_SIZE];
    char small[24];
    json_t *doc;
    char errstr[256];
    int i;

    (void)state;
    assert_int_equal(rf_msg_iso_from_ms(0, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    assert_int_equal(rf_msg_iso_from_ms(1795475405123LL, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "2026-11-23T23:10:05.123Z");
    assert_int_equal(rf_msg_iso_from_ms(-1, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    assert_int_equal(rf_msg_iso_from_ms(0, small, sizeof(small)), -1);
    assert_string_equal(small, "");
    for (i = 0; i < 3; i++) {
        assert_int_equal(rf_msg_now_iso(buf, sizeof(buf)), 0);
        assert_int_equal(strlen(buf), 24);
        /* what we write, our schemas accept */
        doc = json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:n,s:s,s:s}", "schema", "relfleet.dlq.v1",
                        "stage", "render", "reason", "r", "source_topic", "t", "partition", 0,
                        "offset", 0, "key", "payload_base64", "", "rejected_at", buf);
        assert_int_equal(rf_schema_validate(reg, "relfleet.dlq.v1", doc, errstr, sizeof(errstr)),
                         RF_OK);
        json_decref(doc);
    }
}

static void uuids(void **state)
{
    char a[RF_MSG_UUID_SIZE], b[RF_MSG_UUID_SIZE], errstr[256];
    json_t *doc;
    int i;

    (void)state;
    for (i = 0; i < 100; i++) {
        assert_int_equal(rf_msg_uuid4(a), 0);
        assert_int_equal(rf_msg_uuid4(b), 0);
        assert_string_not_equal(a, b);
        assert_int_equal(strlen(a), 36);
        assert_int_equal(a[14], '4');
        assert_non_null(strchr("89ab", a[19]));
        doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "schema", "relfleet.command.v1",
                        "command_id", a, "release_id", b, "service", "web", "env", "prod", "action",
                        "cancel", "operator", "alice", "issued_at", "2026-11-23T23:10:05.123Z");
        if (rf_schema_validate(reg, "relfleet.command.v1", doc, errstr, sizeof(errstr)) != RF_OK)
            fail_msg("%s", errstr);
        json_decref(doc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hostile_and_good_inputs),
        cmocka_unit_test(one_megabyte_string),
        cmocka_unit_test(payload_scans_as_model),
        cmocka_unit_test(deep_nesting),
        cmocka_unit_test(exactly_64_levels),
        cmocka_unit_test(dlq_round_trip),
        cmocka_unit_test(dlq_bounds),
        cmocka_unit_test(iso_times),
        cmocka_unit_test(uuids),
    };

    return cmocka_run_group_tests_name("msg", tests, unit_schemas_setup, unit_schemas_teardown);
}
