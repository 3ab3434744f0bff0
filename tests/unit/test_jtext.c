/* rf_jtext: values delimited and members found without parsing; rf_jtext_valid takes only
 * what jansson takes (a table, then random mutations of valid texts checked against
 * json_loadb), and takes the texts rf_json writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "rf_buf.h"
#include "rf_json.h"
#include "rf_jtext.h"
#include "unit_edit.h"

/* jansson's answer for the whole text as one value, as rf_msg_parse asks it. */
static int jansson_takes(const char *s, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(s, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);

    json_decref(j);
    return j != NULL;
}

/* rf_jtext_valid's answer for the whole text as one value. */
static int jtext_takes(const char *s, size_t len)
{
    size_t e = rf_jtext_valid(s, len, 0);

    return e <= len && rf_jtext_ws(s, len, e) == len;
}

static void skip_delimits(void **state)
{
    static const struct {
        const char *text;
        long end; /* -1: len + 1 */
    } cases[] = {
        {"\"abc\",", 5},
        {"\"a\\\"b\"}", 6},   /* an escaped quote */
        {"\"a\\\\\"x", 5},    /* an escaped backslash, then the end */
        {"\"a\\\\\\\"\"", 7}, /* \\ then \" */
        {"\"unclosed", -1},
        {"\"ends with \\\"", -1},
        {"  {\"a\":[1,{\"b\":\"]}\"}]}, 1", 22},
        {"[[[]]]", 6},
        {"[[[]]", -1},
        {"{\"a\":\"}\"", -1},
        {"123,4", 3},
        {"true}", 4},
        {"-1.5e3 ", 6},
        {",", 0}, /* an empty value: ends where it starts */
        {"", -1},
        {"   ", -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].text), end = rf_jtext_skip(cases[i].text, len, 0);
        size_t want = cases[i].end < 0 ? len + 1 : (size_t)cases[i].end;
        if (end != want)
            fail_msg("skip '%s': %zu, want %zu", cases[i].text, end, want);
    }
}

static void next_member_walks(void **state)
{
    const char *s = "{ \"a\" : 1 , \"b\":{\"c\":[2,3]},\"d\":\"x,}\" }";
    size_t len = strlen(s), i = 1, ks, ke, vs, ve;
    const char *keys[] = {"\"a\"", "\"b\"", "\"d\""};
    const char *vals[] = {"1", "{\"c\":[2,3]}", "\"x,}\""};
    int n = 0, r;

    (void)state;
    while ((r = rf_jtext_next_member(s, len, &i, &ks, &ke, &vs, &ve)) == 1) {
        assert_true(n < 3);
        assert_int_equal(ke - ks, strlen(keys[n]));
        assert_memory_equal(s + ks, keys[n], ke - ks);
        assert_int_equal(ve - vs, strlen(vals[n]));
        assert_memory_equal(s + vs, vals[n], ve - vs);
        n++;
    }
    assert_int_equal(r, 0);
    assert_int_equal(n, 3);
    assert_int_equal(s[i], '}');

    static const char *const bad[] = {
        "{\"a\":1,}",        "{\"a\":,\"b\":1}", "{\"a\" 1}",   "{a:1}",
        "{\"a\":1 \"b\":2}", "{\"a\":1",         "{\"a\":\"x}", "{\"a\":",
    };
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        len = strlen(bad[b]);
        i = 1;
        while ((r = rf_jtext_next_member(bad[b], len, &i, &ks, &ke, &vs, &ve)) == 1)
            ;
        if (r != -1)
            fail_msg("next_member '%s': %d, want -1", bad[b], r);
    }
    /* empty object */
    i = 1;
    assert_int_equal(rf_jtext_next_member("{ }", 3, &i, &ks, &ke, &vs, &ve), 0);
    assert_int_equal(i, 2);
}

static void valid_table(void **state)
{
    static const struct {
        const char *text;
        size_t len;  /* 0: strlen */
        int valid;   /* rf_jtext_valid takes it whole */
        int jansson; /* json_loadb takes it */
    } cases[] = {
        {"{}", 0, 1, 1},
        {" [ ] ", 0, 1, 1},
        {"{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}", 0, 1, 1},
        {"-0", 0, 1, 1},
        {"0.5e-7", 0, 1, 1},
        {"1E+2", 0, 1, 1},
        {"123456789012345678", 0, 1, 1},
        {"\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"", 0, 1, 1},
        {"\"\\u00e9 \\u4F60 \\uD83D\\uDE03\"", 0, 1, 1},
        {"\"caf\xc3\xa9 \xe4\xbd\xa0 \xf0\x9f\x98\x83\"", 0, 1, 1},
        {"\"\x7f\"", 0, 1, 1},
        {"{\"a\":{\"a\":1},\"b\":{\"a\":1}}", 0, 1, 1}, /* the same key in two objects */
        {"{\"ab\":1,\"a\":1,\"b\":1}", 0, 1, 1},
        /* what jansson refuses */
        {"{\"a\":1,\"a\":2}", 0, 0, 0},
        {"{\"a\":1,\"b\":2,\"c\":{\"x\":1,\"x\":1}}", 0, 0, 0},
        {"[1,]", 0, 0, 0},
        {"[,1]", 0, 0, 0},
        {"{\"a\":1,}", 0, 0, 0},
        {"{\"a\" 1}", 0, 0, 0},
        {"{a:1}", 0, 0, 0},
        {"[tru]", 0, 0, 0},
        {"[truex]", 0, 0, 0},
        {"[nul]", 0, 0, 0},
        {"[01]", 0, 0, 0},
        {"[1.]", 0, 0, 0},
        {"[.5]", 0, 0, 0},
        {"[1e]", 0, 0, 0},
        {"[-]", 0, 0, 0},
        {"[+1]", 0, 0, 0},
        {"[0x10]", 0, 0, 0},
        {"[NaN]", 0, 0, 0},
        {"[1 2]", 0, 0, 0},
        {"\"a\nb\"", 0, 0, 0}, /* a control character */
        {"\"a\tb\"", 0, 0, 0},
        {"\"\\x41\"", 0, 0, 0}, /* no such escape */
        {"\"\\u12G4\"", 0, 0, 0},
        {"\"\\u123\"", 0, 0, 0},
        {"\"\\u0000\"", 0, 0, 0}, /* jansson: not without JSON_ALLOW_NUL */
        {"\"\\uD83D\"", 0, 0, 0}, /* a high surrogate alone */
        {"\"\\uD83Dx\"", 0, 0, 0},
        {"\"\\uD83D\\u0041\"", 0, 0, 0},
        {"\"\\uDE03\"", 0, 0, 0},          /* a low one alone */
        {"\"\xc3\"", 0, 0, 0},             /* UTF-8 cut */
        {"\"\xc0\xaf\"", 0, 0, 0},         /* overlong */
        {"\"\xed\xa0\x80\"", 0, 0, 0},     /* a surrogate in UTF-8 */
        {"\"\xf4\x90\x80\x80\"", 0, 0, 0}, /* past U+10FFFF */
        {"\"a\0b\"", 5, 0, 0},
        {"\"abc", 0, 0, 0},
        {"{\"a\":[1,2}", 0, 0, 0},
        {"[1]]", 0, 0, 0},
        {"99999999999999999999", 0, 0, 0}, /* too big an integer */
        {"1e999", 0, 0, 0},                /* a real overflowing double */
        /* what jansson takes and rf_jtext_valid leaves to it */
        {"{\"a\\u0062\":1}", 0, 0, 1}, /* a key with an escape */
        {"{\"ab\":1,\"a\\u0062\":2}", 0, 0, 0},
        {"1234567890123456789", 0, 0, 1}, /* 19 digits */
        {"1e1000", 0, 0, 0},
        {"1e-1000", 0, 0, 1},
        {"1.5e308", 0, 0, 1},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *s = cases[i].text;
        size_t len = cases[i].len ? cases[i].len : strlen(s);
        if (jtext_takes(s, len) != cases[i].valid)
            fail_msg("rf_jtext_valid '%s': %d, want %d", s, !cases[i].valid, cases[i].valid);
        if (jansson_takes(s, len) != cases[i].jansson)
            fail_msg("jansson '%s': %d, want %d (the table is wrong)", s, !cases[i].jansson,
                     cases[i].jansson);
    }
}

/* Nesting up to RF_JTEXT_MAX_DEPTH, not one more; a million levels without a crash. */
static void valid_depth(void **state)
{
    size_t n = 1000000;
    char *s = malloc(2 * n);
    rf_buf_t b = RF_BUF_INIT;

    (void)state;
    assert_non_null(s);
    for (size_t d = RF_JTEXT_MAX_DEPTH - 1; d <= RF_JTEXT_MAX_DEPTH + 1; d++) {
        memset(s, '[', d);
        memset(s + d, ']', d);
        assert_int_equal(jtext_takes(s, 2 * d), d <= RF_JTEXT_MAX_DEPTH);
        rf_buf_reset(&b); /* objects and arrays */
        for (size_t k = 0; k < d; k++)
            rf_buf_adds(&b, k % 2 ? "[" : "{\"a\":");
        rf_buf_adds(&b, "1");
        for (size_t k = d; k > 0; k--)
            rf_buf_adds(&b, (k - 1) % 2 ? "]" : "}");
        assert_true(jansson_takes(b.data, b.len));
        assert_int_equal(jtext_takes(b.data, b.len), d <= RF_JTEXT_MAX_DEPTH);
    }
    for (size_t d = 9; d <= 11; d++) { /* a lower limit */
        memset(s, '[', d);
        memset(s + d, ']', d);
        assert_int_equal(rf_jtext_valid_depth(s, 2 * d, 0, 10) == 2 * d, d <= 10);
    }
    memset(s, '[', n);
    memset(s + n, ']', n);
    assert_false(jtext_takes(s, 2 * n));
    assert_true(rf_jtext_valid_depth(s, 2 * n, 0, 1 << 30) > 2 * n); /* capped */
    assert_true(rf_jtext_skip(s, 2 * n, 0) == 2 * n); /* the delimiter has no limit */
    free(s);
    rf_buf_release(&b);
}

/* Objects past the 16 members kept on the stack: a key twice anywhere is found. */
static void valid_big_objects(void **state)
{
    rf_buf_t b = RF_BUF_INIT;

    (void)state;
    for (int n = 1; n <= 300; n += (n < 40 ? 1 : 37)) {
        for (int dup = -1; dup < n; dup += (n < 40 ? 1 : 13)) {
            rf_buf_reset(&b);
            rf_buf_addc(&b, '{');
            for (int k = 0; k < n; k++)
                rf_buf_addf(&b, "%s\"key-%d\":[%d]", k ? "," : "", k, k);
            if (dup >= 0)
                rf_buf_addf(&b, ",\"key-%d\":0", dup);
            rf_buf_addc(&b, '}');
            assert_int_equal(jtext_takes(b.data, b.len), dup < 0);
            assert_int_equal(jansson_takes(b.data, b.len), dup < 0);
        }
    }
    /* a string of 1 MiB, ASCII and not */
    rf_buf_reset(&b);
    rf_buf_addc(&b, '"');
    for (int k = 0; k < 1024 * 1024 / 8; k++)
        rf_buf_adds(&b, k % 3 ? "abcdefg " : "\xc3\xa9\\n\\u00e9");
    rf_buf_addc(&b, '"');
    assert_true(jtext_takes(b.data, b.len));
    b.data[b.len / 2] = '\x01';
    assert_false(jtext_takes(b.data, b.len));
    rf_buf_release(&b);
}

static uint32_t rnd(void)
{
    return unit_rnd();
}

static json_t *random_tree(int depth)
{
    static const char *const strs[] = {"",
                                       "a",
                                       "nginx:1.27",
                                       "caf\xc3\xa9",
                                       "\xf0\x9f\x98\x83",
                                       "tab\there",
                                       "quote\"back\\slash",
                                       "nl\n",
                                       "\x7f",
                                       "\x01\x1f",
                                       "/path/x"};
    int kind = (int)(rnd() % (depth > 4 ? 5 : 7));
    json_t *j;

    switch (kind) {
    case 0:
        return json_integer((json_int_t)rnd() - (json_int_t)(rnd() % 3 ? 0 : 1LL << 40));
    case 1:
        return json_real((double)rnd() / 1000.0);
    case 2:
        return json_string(strs[rnd() % (sizeof(strs) / sizeof(strs[0]))]);
    case 3:
        return rnd() % 2 ? json_true() : json_null();
    case 4:
        return json_false();
    case 5:
        j = json_array();
        for (uint32_t n = rnd() % 5; n > 0; n--)
            json_array_append_new(j, random_tree(depth + 1));
        return j;
    default:
        j = json_object();
        for (uint32_t n = rnd() % (rnd() % 8 ? 6 : 40); n > 0; n--) {
            char key[32];
            snprintf(key, sizeof(key), "k%u", rnd() % 50);
            json_object_set_new(j, key, random_tree(depth + 1));
        }
        return j;
    }
}

/* The texts rf_json writes (as render's manifests are written) are taken whole. */
static void valid_takes_written_trees(void **state)
{
    (void)state;
    for (int t = 0; t < 2000; t++) {
        json_t *j = random_tree(0);
        char *text = rf_json_dumps(j, t % 2 ? RF_JSON_SORT_KEYS : 0);
        assert_non_null(text);
        if (!jtext_takes(text, strlen(text)))
            fail_msg("refused a written tree: %s", text);
        free(text);
        json_decref(j);
    }
}

/* Walks the object it reads against want (its members in order): enters an object value
 * two times in three and sometimes leaves it after its first member (its parent then
 * delimits it again), else delimits the value and parses it. */
static void it_walk(rf_jtext_it_t *it, const json_t *want)
{
    void *w = json_object_iter((json_t *)want);
    size_t n = 0;

    while (rf_jtext_it_next(it)) {
        const char *key = json_object_iter_key(w);
        const json_t *v = json_object_iter_value(w);
        assert_non_null(key);
        assert_true(rf_jtext_it_key_is(it, key));
        if (json_is_object(v) && rnd() % 3) {
            rf_jtext_it_t child;
            rf_jtext_it_enter(&child, it);
            if (rnd() % 5 == 0) {
                if (rf_jtext_it_next(&child))
                    assert_true(rf_jtext_it_key_is(&child, json_object_iter_key(
                                                               json_object_iter((json_t *)v))));
            } else {
                it_walk(&child, v);
                assert_int_equal(it->ve, child.end + 1); /* the parent learnt the end */
            }
        } else {
            size_t ve = rf_jtext_it_value_end(it);
            json_t *got;
            assert_true(ve <= it->len);
            got = json_loadb(it->s + it->vs, ve - it->vs, JSON_DECODE_ANY, NULL);
            assert_true(got && json_equal(got, v));
            json_decref(got);
        }
        w = json_object_iter_next((json_t *)want, w);
        n++;
    }
    assert_false(it->bad);
    assert_int_equal(n, json_object_size(want));
    assert_int_equal(it->s[it->end], '}');
}

/* rf_jtext_it over written trees (compact and indented): each member and value as jansson
 * has them, however the reader goes down; every shorter prefix of a text ends bad. */
static void it_walks_written_trees(void **state)
{
    (void)state;
    for (int t = 0; t < 2000; t++) {
        json_t *j = json_pack("{s:o,s:o,s:i}", "a", random_tree(0), "b", random_tree(0), "c", t);
        char *text = t % 2 ? rf_json_dumps(j, 0) : json_dumps(j, JSON_INDENT(t % 4));
        size_t len = strlen(text);
        rf_jtext_it_t it;

        rf_jtext_it_init(&it, text, len, 0);
        it_walk(&it, j);
        assert_int_equal(rf_jtext_ws(text, len, it.end + 1), len);
        for (int k = 0; k < 4; k++) {
            size_t cut = rnd() % len;
            rf_jtext_it_init(&it, text, cut, 0);
            while (rf_jtext_it_next(&it)) {
                rf_jtext_it_t child;
                rf_jtext_it_enter(&child, &it);
                while (rf_jtext_it_next(&child))
                    ;
            }
            assert_true(it.bad || cut == 0);
        }
        free(text);
        json_decref(j);
    }
    /* bad objects end bad; a value that is not an object has no members */
    static const char *const bad[] = {"{\"a\":1,}", "{\"a\":,\"b\":1}", "{\"a\" 1}", "{a:1}",
                                      "{\"a\":1 \"b\":2}", "{\"a\":{\"b\":1,}}", "{\"a\":"};
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        rf_jtext_it_t it, child;
        rf_jtext_it_init(&it, bad[b], strlen(bad[b]), 0);
        while (rf_jtext_it_next(&it)) {
            rf_jtext_it_enter(&child, &it);
            while (rf_jtext_it_next(&child))
                ;
        }
        if (!it.bad)
            fail_msg("iterator took '%s'", bad[b]);
    }
    rf_jtext_it_t it, child;
    rf_jtext_it_init(&it, "[1]", 3, 0);
    assert_false(rf_jtext_it_next(&it));
    assert_false(it.bad);
    rf_jtext_it_init(&it, "{\"a\":[{\"b\":1}]}", 15, 0);
    assert_true(rf_jtext_it_next(&it));
    rf_jtext_it_enter(&child, &it);
    assert_false(rf_jtext_it_next(&child));
    assert_false(rf_jtext_it_next(&it));
    assert_false(it.bad);
    assert_int_equal(it.end, 14);
}

/* Random edits of valid texts: whatever rf_jtext_valid takes, jansson takes. */
static void valid_mutations_as_jansson(void **state)
{
    static const char alphabet[] = "\"\\{}[],:0123456789-+.eEutrfalsn \t\n\x01\x1f"
                                   "\x7f\xc3\xa9\xed\xa0\x80\xf0\x9f\x98\x83\xff"
                                   "DdABF";
    static const char *const seeds[] = {
        "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\"},"
        "\"spec\":{\"replicas\":3,\"template\":{\"spec\":{\"containers\":[{\"name\":\"web\","
        "\"image\":\"nginx:1.27\",\"ports\":[{\"containerPort\":80}],\"env\":[{\"name\":\"A\","
        "\"value\":\"caf\xc3\xa9 \\u00e9 \\uD83D\\uDE03\"}]}]}}}}",
        "[1.5e3,-0,0.25,true,false,null,\"\\\\\\\"\\/\\b\\f\\n\\r\\t\",{\"a\":{},\"b\":[]}]",
        "{\"data\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\",\"ab\":\"4\"},\"n\":123456789012345678}",
    };
    size_t taken = 0, both = 0;

    (void)state;
    for (int t = 0; t < 60000; t++) {
        const char *seed = seeds[t % 3];
        char buf[1024];
        size_t len = strlen(seed);
        memcpy(buf, seed, len);
        for (uint32_t e = 1 + rnd() % 3; e > 0 && len > 2; e--) {
            unit_random_edit(buf, &len, sizeof(buf), alphabet, sizeof(alphabet) - 1);
        }
        if (jtext_takes(buf, len)) {
            taken++;
            if (!jansson_takes(buf, len))
                fail_msg("rf_jtext_valid took what jansson refuses: %.*s", (int)len, buf);
        }
        both += jansson_takes(buf, len);
    }
    /* the edits do leave valid texts, most of which it takes */
    assert_true(taken > 1000);
    assert_true(taken * 10 > both * 8);
}

int main(void)
{
    unit_rnd_state = 12345;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(skip_delimits),
        cmocka_unit_test(next_member_walks),
        cmocka_unit_test(valid_table),
        cmocka_unit_test(valid_depth),
        cmocka_unit_test(valid_big_objects),
        cmocka_unit_test(valid_takes_written_trees),
        cmocka_unit_test(it_walks_written_trees),
        cmocka_unit_test(valid_mutations_as_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
