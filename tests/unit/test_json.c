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

static int rnd_plain; /* rnd_value: only what rf_json_load_plain takes */

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
        const char *p = parts[rnd(rnd_plain ? 10 : sizeof(parts) / sizeof(parts[0]))];
        memcpy(buf + *len, p, strlen(p));
        *len += strlen(p);
    }
    if (!rnd_plain && rnd(20) == 0)
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
        if (rnd_plain)
            return json_integer((json_int_t)rnd(1000000) * 1000000000000LL);
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

/* rf_json_load_plain and rf_json_loadb against json_loadb, with flags 0 and
 * JSON_REJECT_DUPLICATES: what plain takes jansson takes, into the same value with its
 * members in the same order; rf_json_loadb gives jansson's value or its error (text, line,
 * column, position). Counts in *taken the texts plain took. */
static void loadb_agrees(const char *text, size_t len, int *taken)
{
    static const size_t flags[2] = {0, JSON_REJECT_DUPLICATES};
    json_t *plain = rf_json_load_plain(text, len);

    for (int f = 0; f < 2; f++) {
        json_error_t want_err, got_err;
        json_t *want = json_loadb(text, len, flags[f], &want_err);
        json_t *got = rf_json_loadb(text, len, flags[f], &got_err);
        char *a = plain ? json_dumps(plain, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        char *b = want ? json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        char *c = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        if (plain && (!want || !a || !b || strcmp(a, b) != 0 || !json_equal(plain, want)))
            fail_msg("plain made %s of %.*s, jansson %s", a ? a : "?", (int)len, text,
                     b ? b : "(refused)");
        if ((got == NULL) != (want == NULL) || (got && strcmp(b, c) != 0))
            fail_msg("rf_json_loadb made %s of %.*s, json_loadb %s", c ? c : "(refused)",
                     (int)len, text, b ? b : "(refused)");
        if (!want && (strcmp(got_err.text, want_err.text) != 0 || got_err.line != want_err.line ||
                      got_err.column != want_err.column ||
                      got_err.position != want_err.position))
            fail_msg("rf_json_loadb's error on %.*s: %s, json_loadb's %s", (int)len, text,
                     got_err.text, want_err.text);
        free(a);
        free(b);
        free(c);
        json_decref(want);
        json_decref(got);
    }
    if (plain)
        (*taken)++;
    json_decref(plain);
}

static void plain_loads_as_jansson(void **state)
{
    static const struct {
        const char *text;
        int taken;
    } rows[] = {
        {"{}", 1}, {"[]", 1}, {" \t\r\n{ \"a\" : [ 1 , -2 , 0 , -0 ] }\n ", 1},
        {"{\"a\":\"x\\\"\\\\\\/\\b\\f\\n\\r\\ty\",\"b\":true,\"c\":false,\"d\":null}", 1},
        {"{\"b\":1,\"a\":2,\"c\":{\"z\":[{}],\"y\":[[]]}}", 1},
        {"[999999999999999999,-999999999999999999]", 1},
        {"[9223372036854775807]", 0}, {"[9223372036854775808]", 0}, {"[1.5]", 0},
        {"[1e3]", 0}, {"[1E3]", 0}, {"[01]", 0}, {"[-]", 0}, {"[+1]", 0}, {"[1x]", 0},
        {"{\"a\":1,\"a\":2}", 0}, {"{\"a\":1,}", 0}, {"[1,]", 0}, {"[1 2]", 0},
        {"{\"a\"1}", 0}, {"{a:1}", 0}, {"\"s\"", 0}, {"1", 0}, {"", 0}, {"  ", 0},
        {"[\"\\u0041\"]", 0}, {"[\"\\u0000\"]", 0}, {"[\"\\x\"]", 0}, {"[\"a\x01\"]", 0},
        {"[\"caf\xc3\xa9\"]", 0}, {"[\"\xff\"]", 0}, {"{\"k\xc3\xa9\":1}", 0},
        {"[tru]", 0}, {"[truex]", 0}, {"[nul]", 0}, {"[false ]", 1}, {"{} x", 0}, {"{}{}", 0},
        {"[\"unterminated]", 0}, {"{\"a\":", 0}, {"[", 0}, {"{\"a\\n\\\"b\":1}", 1},
    };
    int taken = 0, whole = 0;
    char deep[200];

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int before = taken;
        loadb_agrees(rows[i].text, strlen(rows[i].text), &taken);
        if (taken - before != rows[i].taken)
            fail_msg("row %zu (%s): taken %d", i, rows[i].text, taken - before);
    }
    /* a NUL inside and the nesting limit: 64 levels taken, 65 left to jansson */
    loadb_agrees("[\"a\0b\"]", 7, &taken);
    for (int n = 63; n <= 66; n++) {
        int before = taken;
        memset(deep, '[', (size_t)n);
        memset(deep + n, ']', (size_t)n);
        loadb_agrees(deep, (size_t)n * 2, &taken);
        assert_int_equal(taken - before, n <= 64);
    }
    /* random trees, plain ones and any, dumped compact, indented and ASCII-only, then each
     * cut short or with one byte changed */
    taken = 0;
    for (int i = 0; i < 4000; i++) {
        json_t *t;
        size_t flags = i % 3 == 0 ? JSON_COMPACT : i % 3 == 1 ? JSON_INDENT(2) : JSON_ENSURE_ASCII;
        char *text;
        size_t len;
        int before;
        rnd_plain = i % 2;
        t = rnd_value(1);
        if (!json_is_object(t) && !json_is_array(t)) {
            json_t *w = json_array();
            json_array_append_new(w, t);
            t = w;
        }
        text = json_dumps(t, flags);
        if (!text) /* a key with a NUL: no JSON text of it */
            goto next;
        len = strlen(text);
        before = taken;
        loadb_agrees(text, len, &taken);
        whole += rnd_plain;
        if (rnd_plain && taken == before)
            fail_msg("plain refused %s", text);
        loadb_agrees(text, rnd(len + 1), &taken);
        text[rnd(len)] = "{}[]\",:0a-\\ e.\x80"[rnd(16)];
        loadb_agrees(text, len, &taken);
        free(text);
    next:
        json_decref(t);
    }
    rnd_plain = 0;
    if (taken < whole / 2)
        fail_msg("plain took %d texts for %d plain trees", taken, whole);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table_as_jansson),
        cmocka_unit_test(invalid_utf8_refused),
        cmocka_unit_test(random_trees_as_jansson),
        cmocka_unit_test(cap_refused),
        cmocka_unit_test(string_end_as_model),
        cmocka_unit_test(plain_loads_as_jansson),
    };

    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
