/* rf_json: the same bytes as json_dumps, sorted or not, for a table of values and random trees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "rf_json.h"

/* rf_json_dumps and json_dumps of j agree, both ways (sorted, in insertion order). */
static void assert_as_jansson(const json_t *j)
{
    static const int flags[2] = {0, RF_JSON_SORT_KEYS};
    int i;

    for (i = 0; i < 2; i++) {
        char *want =
            json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | (flags[i] ? JSON_SORT_KEYS : 0));
        char *got = rf_json_dumps(j, flags[i]);
        if (!want)
            assert_null(got);
        else
            assert_string_equal(got, want);
        free(want);
        free(got);
    }
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);

    if (!j)
        fail_msg("bad test JSON '%s': %s", text, jerr.text);
    return j;
}

static const char *const texts[] = {
    "null",
    "true",
    "false",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "0.1",
    "-0.0",
    "1e300",
    "1.0",
    "123456789.125",
    "2.5e-08",
    "\"\"",
    "[]",
    "{}",
    "[[],{}]",
    "\"plain text\"",
    "\"quote \\\" backslash \\\\ slash /\"",
    "\"\\b\\f\\n\\r\\t \\u0001 \\u001f \\u007f\"",
    "\"nul \\u0000 inside\"",
    "\"\\u00e9\\u65e5\\u672c \\ud83d\\udca9 \\uffff \\u0800 \\u07ff\"",
    "{\"b\":1,\"a\":2,\"ab\":3,\"\":4,\"B\":5,\"a \":6,\"\\u00e9\":7,\"z\":{\"y\":[1,{\"x\":"
    "null,\"w\":true}]}}",
    "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\","
    "\"labels\":{\"app.kubernetes.io/name\":\"web\",\"app\":\"web\"}},\"spec\":{\"replicas\":3,"
    "\"template\":{\"spec\":{\"containers\":[{\"name\":\"web\",\"image\":\"r/web:v1\","
    "\"ports\":[{\"containerPort\":8080}],\"resources\":{\"limits\":{\"cpu\":\"1\"}}}]}}}}",
};

static void table_as_jansson(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *j = parse(texts[i]);
        assert_as_jansson(j);
        json_decref(j);
    }
}

/* Strings that are not UTF-8 (only the _nocheck setters let them in): NULL as json_dumps. */
static void invalid_utf8_refused(void **state)
{
    static const char *const bad[] = {
        "\x80",
        "a\xbf",
        "\xc0\xaf",
        "\xc1\xbf",
        "\xc3",
        "\xc3(",
        "\xe0\x80\xaf",
        "\xed\xa0\x80",
        "\xef\xbf",
        "\xf0\x80\x80\xaf",
        "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80",
        "\xff",
        "ok\xe2\x82",
    };
    static const char *const good[] = {"\xc2\x80",        "\xdf\xbf",     "\xe0\xa0\x80",
                                       "\xed\x9f\xbf",    "\xee\x80\x80", "\xf0\x90\x80\x80",
                                       "\xf4\x8f\xbf\xbf"};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *s = json_stringn_nocheck(bad[i], strlen(bad[i]));
        json_t *a = json_pack("[s, {s:o}]", "x", "k", json_incref(s));
        assert_null(json_dumps(s, JSON_ENCODE_ANY)); /* what the table below relies on */
        assert_as_jansson(s);
        assert_as_jansson(a);
        json_decref(a);
        json_decref(s);
    }
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        json_t *s = json_stringn_nocheck(good[i], strlen(good[i]));
        char *text = json_dumps(s, JSON_ENCODE_ANY);
        assert_non_null(text);
        free(text);
        assert_as_jansson(s);
        json_decref(s);
    }
}

static uint64_t rnd_state = 88172645463325252ULL;

static unsigned rnd(unsigned n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (unsigned)(rnd_state % n);
}

/* A short text of a few letters, escapes and multibyte characters: keys that share prefixes. */
static void rnd_text(char *buf, size_t *len)
{
    static const char *const parts[] = {"a",
                                        "b",
                                        "ab",
                                        "A",
                                        "-",
                                        ".",
                                        "/",
                                        "\"",
                                        "\\",
                                        "\n",
                                        "\x01",
                                        "\x7f",
                                        "\xc3\xa9",
                                        "\xe6\x97\xa5",
                                        "\xf0\x9f\x92\xa9",
                                        " "};
    unsigned n = rnd(5), i;

    *len = 0;
    for (i = 0; i < n; i++) {
        const char *p = parts[rnd(sizeof(parts) / sizeof(parts[0]))];
        memcpy(buf + *len, p, strlen(p));
        *len += strlen(p);
    }
    if (rnd(20) == 0)
        buf[(*len)++] = '\0'; /* a NUL inside */
}

static json_t *rnd_value(int depth)
{
    char text[64];
    size_t len;
    unsigned i, n;
    json_t *v;

    switch (depth > 4 ? rnd(6) : rnd(9)) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(rnd(2));
    case 2:
        return json_integer((json_int_t)rnd(1u << 31) - (json_int_t)(1u << 30));
    case 3:
        return json_real((double)rnd(100000) / (double)(1 + rnd(1000)));
    case 4:
    case 5:
        rnd_text(text, &len);
        return json_stringn(text, len);
    case 6:
        v = json_array();
        n = rnd(5);
        for (i = 0; i < n; i++)
            json_array_append_new(v, rnd_value(depth + 1));
        return v;
    default:
        v = json_object();
        n = rnd(depth == 0 ? 40 : 8); /* past the 32 members sorted on the stack, at times */
        for (i = 0; i < n; i++) {
            rnd_text(text, &len);
            json_object_setn_new(v, text, len, rnd_value(depth + 1));
        }
        return v;
    }
}

static void random_trees_as_jansson(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < 3000; i++) {
        json_t *j = rnd_value(0);
        assert_as_jansson(j);
        json_decref(j);
    }
}

/* A buffer's cap: -1, as rf_buf_add refuses, and a value that fits is written whole. */
static void cap_refused(void **state)
{
    json_t *j = parse("{\"name\":\"a long enough value\"}");
    rf_buf_t b;

    (void)state;
    rf_buf_init(&b, 10);
    assert_int_equal(rf_json_append(&b, j, RF_JSON_SORT_KEYS), -1);
    rf_buf_release(&b);
    rf_buf_init(&b, 100);
    assert_int_equal(rf_json_append(&b, j, 0), 0);
    assert_string_equal(rf_buf_str(&b), "{\"name\":\"a long enough value\"}");
    assert_int_equal(rf_json_append(&b, NULL, 0), -1);
    rf_buf_release(&b);
    json_decref(j);
}

/* The model of rf_json_string_end: the first quote after s[i] that no odd run of backslashes
 * comes before; len + 1 when there is none. */
static size_t string_end_model(const char *s, size_t len, size_t i)
{
    for (size_t j = i + 1; j < len; j++) {
        size_t k = j;
        if (s[j] != '"')
            continue;
        while (k > i + 1 && s[k - 1] == '\\')
            k--;
        if ((j - k) % 2 == 0)
            return j + 1;
    }
    return len + 1;
}

/* Strings of every length up to 40 from an alphabet heavy in quotes and backslashes, at every
 * start, and a text cut at every length: the word-at-a-time scan ends where the model does.
 * Read from a buffer of exactly len bytes, so ASan and valgrind see any read past it. */
static void string_end_as_model(void **state)
{
    static const char alphabet[] = "\"\\\\ab\"\\x";
    unsigned seed = 7;

    (void)state;
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(round % 41);
        char *s = malloc(len ? len : 1);
        assert_non_null(s);
        for (size_t k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            s[k] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        for (size_t i = 0; i < len; i++) {
            size_t got = rf_json_string_end(s, len, i), want = string_end_model(s, len, i);
            if (got != want)
                fail_msg("round %d, len %zu, start %zu: %zu, want %zu", round, len, i, got, want);
        }
        free(s);
    }
    /* long runs without a quote or backslash, the end at each offset of a word */
    for (size_t n = 1; n < 70; n++) {
        char *s = malloc(n + 2);
        assert_non_null(s);
        s[0] = '"';
        memset(s + 1, 'a', n);
        s[n + 1] = '"';
        assert_int_equal(rf_json_string_end(s, n + 2, 0), n + 2);
        assert_int_equal(rf_json_string_end(s, n + 1, 0), n + 2); /* unclosed: len + 1 */
        s[n] = '\\';
        assert_int_equal(rf_json_string_end(s, n + 2, 0), n + 3); /* its quote is escaped */
        free(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table_as_jansson),
        cmocka_unit_test(invalid_utf8_refused),
        cmocka_unit_test(random_trees_as_jansson),
        cmocka_unit_test(cap_refused),
        cmocka_unit_test(string_end_as_model),
    };

    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
