/* rf_msg_parse_lean: the same answer as rf_msg_parse (result and reason) for every input,
 * and when it takes a message, the same manifests once each one's kept members and the text
 * of its others are put together (what the apply worker sends). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <jansson.h>

#include "rf_buf.h"
#include "rf_json.h"
#include "rf_msg.h"
#include "unit_edit.h"
#include "unit_schemas.h"

static const char *const keep[] = {"apiVersion", "kind", "metadata", NULL};

#define FIELDS                                                                                     \
    "\"schema\":\"relfleet.rendered.v1\",\"release_id\":\"0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a10\"," \
    "\"service\":\"web\",\"env\":\"prod\",\"version\":\"v1.4.2\",\"fence\":17,\"namespace\":"      \
    "\"shop\",\"manifests_sha256\":"                                                               \
    "\"3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b\""
#define HEAD "{" FIELDS ",\"manifests\":["
#define TAIL "]}"
#define DEPLOY_META                                                                                \
    "\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\"}"
#define SPEC                                                                                       \
    "\"spec\":{\"replicas\":2,\"template\":{\"spec\":{\"containers\":[{\"name\":\"web\","          \
    "\"image\":"                                                                                   \
    "\"registry.local/web:v1.4.2\",\"env\":[{\"name\":\"GREETING\",\"value\":\"caf\xc3\xa9 "       \
    "\\u00e9 \\uD83D\\uDE03 \\\"q\\\" \\\\ \\n\"}]}]}}}"
#define SERVICE                                                                                    \
    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"},\"spec\":{"       \
    "\"ports\":[{\"port\":80}]}}"
#define GOOD HEAD "{" DEPLOY_META "," SPEC "}," SERVICE TAIL

/* The manifests of a lean parse put together: kept members, then the others' text. */
static json_t *whole_of(const json_t *body, const rf_msg_lean_t *l)
{
    const json_t *ms = json_object_get(body, "manifests");
    json_t *out = json_array(), *m;
    rf_buf_t b = RF_BUF_INIT;
    size_t i;

    assert_int_equal(json_array_size(ms), l->n);
    json_array_foreach(ms, i, m)
    {
        json_error_t jerr;
        json_t *one;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)m, k, v) /* only kept members in the lean body */
            assert_true(strcmp(k, "apiVersion") == 0 || strcmp(k, "kind") == 0 ||
                        strcmp(k, "metadata") == 0);
        assert_int_equal(strlen(l->rest[i]), l->rest_len[i]);
        rf_buf_reset(&b);
        assert_int_equal(rf_json_append(&b, m, 0), 0);
        b.data[--b.len] = '\0';
        if (b.len > 1 && l->rest_len[i] > 0)
            rf_buf_addc(&b, ',');
        rf_buf_add(&b, l->rest[i], l->rest_len[i]);
        rf_buf_addc(&b, '}');
        one = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!one)
            fail_msg("a lean manifest does not go together: %s: %s", jerr.text, b.data);
        json_array_append_new(out, one);
    }
    rf_buf_release(&b);
    return out;
}

/* Both parses of payload agree; returns 1 when they took it and it went lean. */
static int assert_same(const char *payload, size_t len, const char *key)
{
    char e1[768], e2[768];
    json_t *whole = NULL, *lean_body = NULL;
    rf_msg_lean_t *l = (rf_msg_lean_t *)1;
    size_t klen = key ? strlen(key) : 0;
    rf_err_t r1 =
        rf_msg_parse(reg, payload, len, key, klen, "relfleet.rendered.", &whole, e1, sizeof(e1));
    rf_err_t r2 = rf_msg_parse_lean(reg, payload, len, key, klen, "relfleet.rendered.", "manifests",
                                    keep, &lean_body, &l, e2, sizeof(e2));
    int went_lean = 0;

    if (r1 != r2)
        fail_msg("whole %d (%s), lean %d (%s): %.*s", r1, r1 ? e1 : "", r2, r2 ? e2 : "",
                 (int)(len > 300 ? 300 : len), payload);
    if (r1 != RF_OK) {
        assert_string_equal(e1, e2);
        assert_null(lean_body);
        assert_null(l);
        return 0;
    }
    if (l) {
        json_t *a = json_deep_copy(whole), *b = json_deep_copy(lean_body);
        json_t *joined = whole_of(lean_body, l);
        if (!json_equal(joined, json_object_get(whole, "manifests")))
            fail_msg("the lean manifests differ: %.*s", (int)(len > 300 ? 300 : len), payload);
        json_object_del(a, "manifests"); /* the rest of the body is the same */
        json_object_del(b, "manifests");
        assert_true(json_equal(a, b));
        json_decref(a);
        json_decref(b);
        json_decref(joined);
        went_lean = 1;
    } else {
        assert_true(json_equal(whole, lean_body));
    }
    rf_msg_lean_destroy(l);
    json_decref(whole);
    json_decref(lean_body);
    return went_lean;
}

static int same(const char *payload)
{
    return assert_same(payload, strlen(payload), "prod/web");
}

static void good_goes_lean(void **state)
{
    (void)state;
    assert_true(same(GOOD));
    /* blanks everywhere, members in any order, a manifest with nothing else */
    assert_true(same(" {\n \"manifests\" : [ { \"spec\" : { \"a\" : [ 1 , 2 ] } ,\t" DEPLOY_META
                     " } , {\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{"
                     "\"name\":\"c\"} } ] , " FIELDS " }\r\n"));
    /* members beside the kept ones of every kind */
    assert_true(same(HEAD "{" DEPLOY_META ",\"a\":1,\"b\":-2.5e3,\"c\":true,\"d\":false,\"e\":null,"
                          "\"f\":\"\",\"g\":[],\"h\":{},\"i\":[{\"j\":[[]]}]}" TAIL));
}

static void examples_agree(void **state)
{
    const char *src = getenv("RELFLEET_SOURCE_DIR");
    static const char *const sub[] = {"valid", "invalid"};

    (void)state;
    for (int v = 0; v < 2; v++) {
        char dir[1024];
        DIR *d;
        struct dirent *e;
        int n = 0, lean = 0;
        snprintf(dir, sizeof(dir), "%s/schemas/examples/relfleet.rendered.v1/%s",
                 src ? src : RELFLEET_SOURCE_DIR, sub[v]);
        d = opendir(dir);
        assert_non_null(d);
        while ((e = readdir(d))) {
            char path[2048];
            size_t len = strlen(e->d_name);
            FILE *f;
            char *text;
            long size;
            if (len < 5 || strcmp(e->d_name + len - 5, ".json") != 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            f = fopen(path, "rb");
            assert_non_null(f);
            fseek(f, 0, SEEK_END);
            size = ftell(f);
            rewind(f);
            text = malloc((size_t)size + 1);
            assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
            fclose(f);
            lean += assert_same(text, (size_t)size, "prod/web");
            n++;
            free(text);
        }
        closedir(d);
        assert_true(n > 2);
        if (v == 0)
            assert_int_equal(lean, n); /* every valid example goes lean */
    }
}

/* Broken JSON in what goes on unparsed (a manifest's spec): refused as by rf_msg_parse,
 * with its reason ("payload is not JSON: ..."), never passed on. */
static void broken_members_refused_alike(void **state)
{
    static const char *const specs[] = {
        "\"spec\":{\"replicas\":tru}",
        "\"spec\":{\"replicas\":2,}",
        "\"spec\":{\"replicas\":02}",
        "\"spec\":{\"a\":1,\"a\":2}", /* a key twice, deep */
        "\"spec\":{\"x\":{\"y\":[{\"z\":1,\"z\":1}]}}",
        "\"spec\":1,\"spec\":2",             /* a member twice */
        "\"metadata\":{\"name\":\"other\"}", /* a kept member twice */
        "\"kin\\u0064\":\"Service\"",        /* a kept member's name escaped */
        "\"sp\\u0065c\":1,\"spec\":2",
        "\"spec\":\"a\tb\"", /* a control character */
        "\"spec\":\"\\x\"",
        "\"spec\":\"\\u0000\"",
        "\"spec\":\"\\uD800\"",
        "\"spec\":\"\\uDC00\\uD800\"",
        "\"spec\":\"\xc3\x28\"", /* not UTF-8 */
        "\"spec\":\"\xed\xa0\x80\"",
        "\"spec\":99999999999999999999",
        "\"spec\":-99999999999999999999",
        "\"spec\":1e400",
        "\"spec\":[1 2]",
        "\"spec\":{\"a\" 1}",
        "\"spec\":{1:2}",
        "\"spec\":[",
        "\"spec\":]",
        "\"spec\":",
        "\"spec\"",
        "\"spec\":NaN",
        "\"spec\":undefined",
        "\"spec\":{\"ab\":1,\"a\\u0062\":2}", /* a key twice once decoded */
        /* valid, taken whole or lean alike */
        "\"spec\":{\"a\\u0062\":1}",
        "\"spec\":1234567890123456789",
        "\"spec\":1e-400",
        "\"spec\":\"\\uD83D\\uDE03\"",
    };
    rf_buf_t b = RF_BUF_INIT;
    int refused = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        char e[768];
        json_t *body = NULL;
        rf_msg_lean_t *l = NULL;
        rf_buf_reset(&b);
        rf_buf_adds(&b, HEAD "{" DEPLOY_META ",");
        rf_buf_adds(&b, specs[i]);
        rf_buf_adds(&b, "}," SERVICE TAIL);
        assert_same(b.data, b.len, "prod/web");
        if (rf_msg_parse_lean(reg, b.data, b.len, "prod/web", 8, "relfleet.rendered.", "manifests",
                              keep, &body, &l, e, sizeof(e)) != RF_OK) {
            refused++;
            if (strstr(e, "not JSON") == NULL && strstr(e, "UTF-8") == NULL)
                fail_msg("refused '%s' for '%s'", specs[i], e);
        }
        json_decref(body);
        rf_msg_lean_destroy(l);
    }
    assert_int_equal(refused, 29);
    rf_buf_release(&b);
}

/* Every prefix of a good message (a cut payload), and every byte of it replaced by a few
 * bytes that break JSON: the same answer both ways. */
static void truncated_and_edited_alike(void **state)
{
    static const char good[] = GOOD;
    static const char bytes[] = "\"\\{}[],:0 x\x01\xff";
    char buf[sizeof(good)];

    (void)state;
    for (size_t n = 0; n < sizeof(good) - 1; n++)
        assert_same(good, n, "prod/web");
    for (size_t i = 0; i < sizeof(good) - 1; i++)
        for (size_t c = 0; c < sizeof(bytes) - 1; c++) {
            memcpy(buf, good, sizeof(good));
            buf[i] = bytes[c];
            assert_same(buf, sizeof(good) - 1, "prod/web");
        }
}

static uint32_t rnd(void)
{
    return unit_rnd();
}

/* Random edits (replace, insert, delete) of a good message: the same answer both ways, and
 * the same manifests when taken. */
static void random_edits_alike(void **state)
{
    static const char good[] = GOOD;
    static const char alphabet[] = "\"\\{}[],:0123456789-.eEutrfalsn \t\n\x01\xc3\xa9\xed\xa0"
                                   "DdAb";
    char buf[sizeof(good) + 8];
    int taken = 0;

    (void)state;
    for (int t = 0; t < 20000; t++) {
        size_t len = sizeof(good) - 1;
        memcpy(buf, good, len);
        for (uint32_t e = 1 + rnd() % 2; e > 0; e--) {
            unit_random_edit(buf, &len, sizeof(buf), alphabet, sizeof(alphabet) - 1);
        }
        taken += assert_same(buf, len, "prod/web");
    }
    assert_true(taken > 1000); /* many edits fall in strings and stay valid */
}

/* 100 manifests, one a ConfigMap of 2,000 keys (more than a stack of keys holds), near
 * the size limit; nesting up to the payload's limit in a spec, and one level more. */
static void big_and_deep_alike(void **state)
{
    rf_buf_t b = RF_BUF_INIT;

    (void)state;
    rf_buf_adds(&b, HEAD);
    for (int i = 0; i < 100; i++) {
        rf_buf_addf(&b,
                    "%s{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"
                    "\"c%d\"},\"data\":{",
                    i ? "," : "", i);
        for (int k = 0; k < (i == 50 ? 2000 : 20); k++)
            rf_buf_addf(&b, "%s\"key-%d\":\"value %d \xe2\x82\xac %0200d\"", k ? "," : "", k, k, k);
        rf_buf_adds(&b, "}}");
    }
    rf_buf_adds(&b, TAIL);
    assert_true(b.len > 900000 && b.len < RF_MSG_MAX_BYTES);
    assert_true(assert_same(b.data, b.len, "prod/web"));
    /* the same key twice among the 2,000 */
    {
        char *at = strstr(b.data, "\"key-1999\"");
        assert_non_null(at);
        memcpy(at, "\"key-1000\"", 10);
        assert_same(b.data, b.len, "prod/web");
        assert_false(assert_same(b.data, b.len, "prod/web"));
    }
    /* the payload nests 3 levels to a spec: 61 more are 64 */
    for (int d = 60; d <= 62; d++) {
        rf_buf_reset(&b);
        rf_buf_adds(&b, HEAD "{" DEPLOY_META ",\"spec\":");
        for (int k = 0; k < d; k++)
            rf_buf_adds(&b, "[");
        for (int k = 0; k < d; k++)
            rf_buf_adds(&b, "]");
        rf_buf_adds(&b, "}" TAIL);
        assert_int_equal(assert_same(b.data, b.len, "prod/web"), d <= 61);
    }
    rf_buf_release(&b);
}

/* What jansson parses of the lean copy (the kept members, the rest of the body) is not
 * scanned for UTF-8 and depth before it: the same answers as rf_msg_parse's scans give. */
static void utf8_and_depth_of_kept_parts_alike(void **state)
{
    static const char *const bad_utf8[] = {
        "\xff", "\xc3\x28", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xe2\x82"};
    rf_buf_t b = RF_BUF_INIT;
    char e[768];
    json_t *body;
    rf_msg_lean_t *l;

    (void)state;
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++)
        for (int where = 0; where < 4; where++) {
            rf_buf_reset(&b);
            rf_buf_adds(&b, HEAD "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",");
            rf_buf_addf(&b, "\"metadata\":{\"name\":\"web\",\"labels\":{\"a\":\"%s\"}},",
                        where == 0 ? bad_utf8[i] : "x");
            rf_buf_addf(&b, "\"spec\":{\"k\":\"%s\"}},", where == 1 ? bad_utf8[i] : "y");
            rf_buf_addf(&b, "%s" SERVICE "],\"x%s\":1}", where == 3 ? " " : "",
                        where == 2 ? bad_utf8[i] : "");
            if (where == 3) /* between members, outside any string */
                memcpy(strstr(b.data, "}, " SERVICE) + 2, bad_utf8[i], 1);
            assert_same(b.data, b.len, "prod/web");
            assert_int_equal(rf_msg_parse_lean(reg, b.data, b.len, "prod/web", 8,
                                               "relfleet.rendered.", "manifests", keep, &body, &l,
                                               e, sizeof(e)),
                             RF_ERR_PERM);
            assert_non_null(strstr(e, "UTF-8"));
            assert_null(l);
        }
    /* depth in a kept member and in the rest of the body: 64 levels in all, not 65 */
    for (int where = 0; where < 2; where++)
        for (int d = 59; d <= 62; d++) {
            rf_buf_reset(&b);
            rf_buf_adds(&b, HEAD "{" DEPLOY_META);
            b.len--; /* metadata's '}' */
            rf_buf_adds(&b, ",\"x\":");
            for (int k = 0; k < (where == 0 ? d - 1 : 1); k++)
                rf_buf_adds(&b, "[");
            for (int k = 0; k < (where == 0 ? d - 1 : 1); k++)
                rf_buf_adds(&b, "]");
            rf_buf_adds(&b, "}}]");
            if (where == 1) { /* a member of the body the schema refuses, after the scan */
                rf_buf_adds(&b, ",\"y\":");
                for (int k = 0; k < d + 2; k++)
                    rf_buf_adds(&b, "[");
                for (int k = 0; k < d + 2; k++)
                    rf_buf_adds(&b, "]");
            }
            rf_buf_adds(&b, "}");
            /* x's value is 4 levels down, y's 1: d = 61 is 64 levels in all */
            assert_int_equal(assert_same(b.data, b.len, "prod/web"), where == 0 && d <= 61);
        }
    rf_buf_release(&b);
}

/* A message whose manifests are not what the lean parse expects: parsed whole, same
 * answer (manifests not an array, a manifest not an object, manifests twice, none). */
static void not_lean_alike(void **state)
{
    (void)state;
    assert_false(same(HEAD "\"apiVersion: v1\"," SERVICE TAIL));
    assert_false(same("{" FIELDS ",\"manifests\":{}}"));
    assert_false(same("{" FIELDS ",\"manifests\":[]}"));
    assert_false(same("{" FIELDS "}"));
    assert_false(same("{" FIELDS ",\"manifests\":[" SERVICE "],\"manifests\":[" SERVICE "]}"));
    assert_false(same("[" GOOD "]"));
    assert_false(same(GOOD " x"));
    assert_false(assert_same(GOOD, strlen(GOOD), "prod/other")); /* a key not of the body */
    assert_false(assert_same(GOOD, strlen(GOOD), NULL));
    assert_false(assert_same("", 0, "prod/web"));
}

int main(void)
{
    unit_rnd_state = 777;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_goes_lean),
        cmocka_unit_test(examples_agree),
        cmocka_unit_test(broken_members_refused_alike),
        cmocka_unit_test(truncated_and_edited_alike),
        cmocka_unit_test(random_edits_alike),
        cmocka_unit_test(big_and_deep_alike),
        cmocka_unit_test(utf8_and_depth_of_kept_parts_alike),
        cmocka_unit_test(not_lean_alike),
    };
    return cmocka_run_group_tests(tests, unit_schemas_setup, unit_schemas_teardown);
}
