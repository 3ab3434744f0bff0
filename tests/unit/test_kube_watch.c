/* Unit tests of the watch stream parser: splits, several events, oversize, 410, garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rf_watch.h"

#define EV(type, name)                                                                             \
    "{\"type\":\"" type "\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"" name           \
    "\",\"resourceVersion\":\"7\"}}}\n"
#define GONE                                                                                       \
    "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":"        \
    "\"Failure\",\"message\":\"too old resource version: 5 "                                       \
    "(9)\",\"reason\":\"Expired\",\"code\":410}}\n"
#define FAIL500                                                                                    \
    "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":"      \
    "\"etcd is down\",\"code\":500}}\n"

/* What one call of rf_watch_parser_next must give: ret 1 with a type and either the object's
 * metadata.name or the error message; ret -1 with a piece of errstr. */
typedef struct expect {
    int ret;
    rf_watch_type_t type;
    const char *text;
    int code;
} expect_t;

typedef struct parser_case {
    const char *title;
    size_t max_line;
    const char *chunks[6]; /* fed in order, NULL-terminated */
    int end;               /* call rf_watch_parser_end after the chunks */
    expect_t expect[6];    /* then these, then 0 */
} parser_case_t;

static const parser_case_t parser_cases[] = {
    {"one event", 0, {EV("ADDED", "a"), NULL}, 0, {{1, RF_WATCH_ADDED, "a", 0}}},
    {"split in three",
     0,
     {"{\"type\":\"MODI", "FIED\",\"object\":{\"metadata\":{\"name\"", ":\"b\"}}}\n", NULL},
     0,
     {{1, RF_WATCH_MODIFIED, "b", 0}}},
    {"several in one chunk",
     0,
     {EV("ADDED", "a") EV("MODIFIED", "b") EV("DELETED", "c"), NULL},
     0,
     {{1, RF_WATCH_ADDED, "a", 0}, {1, RF_WATCH_MODIFIED, "b", 0}, {1, RF_WATCH_DELETED, "c", 0}}},
    {"incomplete line waits", 0, {"{\"type\":\"ADDED\",", NULL}, 0, {{0, 0, NULL, 0}}},
    {"bookmark",
     0,
     {"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"\","
      "\"resourceVersion\":\"12\"}}}\n",
      NULL},
     0,
     {{1, RF_WATCH_BOOKMARK, "", 0}}},
    {"410 error event is expired",
     0,
     {GONE, NULL},
     0,
     {{1, RF_WATCH_EXPIRED, "too old resource version", 410}}},
    {"other error event",
     0,
     {FAIL500, EV("ADDED", "a"), NULL},
     0,
     {{1, RF_WATCH_ERROR, "etcd is down", 500}, {1, RF_WATCH_ADDED, "a", 0}}},
    {"garbage line skipped",
     0,
     {"this is not json\n", EV("ADDED", "a"), NULL},
     0,
     {{-1, 0, "not json", 0}, {1, RF_WATCH_ADDED, "a", 0}}},
    {"json that is not an event",
     0,
     {"{\"type\":\"ADDED\"}\n[1,2]\n", EV("ADDED", "a"), NULL},
     0,
     {{-1, 0, "'type' and 'object'", 0},
      {-1, 0, "'type' and 'object'", 0},
      {1, RF_WATCH_ADDED, "a", 0}}},
    {"unknown type",
     0,
     {"{\"type\":\"EXPLODED\",\"object\":{}}\n", NULL},
     0,
     {{-1, 0, "unknown type 'EXPLODED'", 0}}},
    {"oversize line in one chunk, neighbours kept",
     100,
     {EV("ADDED", "a") "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":"
                       "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxx\"}}}\n" EV("ADDED", "c"),
      NULL},
     0,
     {{1, RF_WATCH_ADDED, "a", 0}, {-1, 0, "longer than 100", 0}, {1, RF_WATCH_ADDED, "c", 0}}},
    {"oversize line across chunks, dropped as it comes",
     40,
     {"{\"type\":\"ADDED\",\"object\":{\"metadata\":", "{\"name\":\"yyyyyyyyyyyyyyyyyyyyyyyyyyyy",
      "yyyyyyyyyyyyyyyyyyyyyyyy\"}}}\n{\"type\":\"DELETED\",\"object\":{}}\n", NULL},
     0,
     {{-1, 0, "longer than 40", 0}, {1, RF_WATCH_DELETED, NULL, 0}}},
    {"blank lines and CRLF",
     0,
     {"\n\r\n  \n{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\r\n", NULL},
     0,
     {{1, RF_WATCH_ADDED, "a", 0}}},
    {"last line without newline completes at end",
     0,
     {"{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"z\"}}}", NULL},
     1,
     {{1, RF_WATCH_DELETED, "z", 0}}},
    {"truncated last line at end is bad",
     0,
     {"{\"type\":\"DELETED\",\"obj", NULL},
     1,
     {{-1, 0, "not json", 0}}},
};

/* The event's object: its tree, or in raw mode its text parsed (a new reference each). */
static json_t *event_object(const rf_watch_event_t *ev)
{
    if (ev->object)
        return json_incref(ev->object);
    assert_non_null(ev->text);
    assert_true(ev->len >= 2 && ev->text[0] == '{' && ev->text[ev->len - 1] == '}');
    return json_loadb(ev->text, ev->len, 0, NULL);
}

static void check_case(const parser_case_t *c, int raw)
{
    rf_watch_parser_t *p = rf_watch_parser_new(c->max_line);
    rf_watch_event_t ev;
    char err[256];
    const char *name;
    int i;
    int r;

    rf_watch_parser_set_raw(p, raw);
    for (i = 0; c->chunks[i]; i++)
        rf_watch_parser_feed(p, c->chunks[i], strlen(c->chunks[i]));
    if (c->end)
        rf_watch_parser_end(p);
    for (i = 0; i < 6; i++) {
        const expect_t *e = &c->expect[i];

        if (e->ret == 0 && !e->text && i > 0)
            break;
        err[0] = '\0';
        r = rf_watch_parser_next(p, &ev, err, sizeof(err));
        if (r != e->ret)
            fail_msg("case '%s' step %d: got %d (%s), want %d", c->title, i, r, err, e->ret);
        if (r == 1) {
            if (ev.type != e->type)
                fail_msg("case '%s' step %d: type %s, want %s", c->title, i,
                         rf_watch_type_name(ev.type), rf_watch_type_name(e->type));
            if (ev.type == RF_WATCH_ERROR || ev.type == RF_WATCH_EXPIRED) {
                assert_non_null(strstr(ev.message, e->text));
                assert_int_equal(ev.code, e->code);
            } else if (e->text) {
                json_t *o = event_object(&ev);
                /* raw mode: every event but an ERROR comes as text */
                assert_int_equal(raw, ev.object == NULL);
                name = json_string_value(json_object_get(json_object_get(o, "metadata"), "name"));
                assert_non_null(name);
                assert_string_equal(name, e->text);
                json_decref(o);
            }
        } else if (r == -1) {
            if (!strstr(err, e->text))
                fail_msg("case '%s' step %d: error '%s' lacks '%s'", c->title, i, err, e->text);
        }
        if (e->ret == 0)
            break;
    }
    r = rf_watch_parser_next(p, &ev, err, sizeof(err));
    if (r != 0)
        fail_msg("case '%s': an extra result %d (%s)", c->title, r, err);
    rf_watch_parser_destroy(p);
}

static void test_parser_table(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(parser_cases) / sizeof(parser_cases[0]); i++) {
        check_case(&parser_cases[i], 0);
        check_case(&parser_cases[i], 1);
    }
}

/* Raw mode against the whole parse (no drop list), line by line: the same outcome and type;
 * an event's text parses into the same object, and rv is its metadata.resourceVersion
 * (NULL when that is not a plain string); ERROR events and lines that are not plainly an
 * event (type escaped, object not an object, something after it, not JSON) as parsed
 * whole. */
static void check_raw_line(const char *line)
{
    rf_watch_parser_t *whole = rf_watch_parser_new(0), *raw = rf_watch_parser_new(0);
    rf_watch_event_t ew, er;
    char errw[256], errr[256];
    int rw, rr;

    rf_watch_parser_set_drop(whole, NULL);
    rf_watch_parser_set_raw(raw, 1);
    rf_watch_parser_feed(whole, line, strlen(line));
    rf_watch_parser_feed(raw, line, strlen(line));
    rf_watch_parser_end(whole);
    rf_watch_parser_end(raw);
    for (;;) {
        rw = rf_watch_parser_next(whole, &ew, errw, sizeof(errw));
        rr = rf_watch_parser_next(raw, &er, errr, sizeof(errr));
        if (rw != rr)
            fail_msg("line %s: raw %d (%s), whole %d (%s)", line, rr, errr, rw, errw);
        if (rw == 0)
            break;
        if (rw < 0) {
            assert_string_equal(errr, errw);
            continue;
        }
        assert_int_equal(er.type, ew.type);
        if (er.object) {
            assert_true(json_equal(er.object, ew.object));
            assert_null(er.text);
            assert_null(er.rv);
        } else {
            json_t *o = event_object(&er);
            const char *rv = json_string_value(
                json_object_get(json_object_get(ew.object, "metadata"), "resourceVersion"));
            if (!o || !json_equal(o, ew.object))
                fail_msg("line %s: raw text %.*s", line, (int)er.len, er.text);
            json_decref(o);
            if (rv && !strchr(rv, '\\') && !strchr(line, '\\'))
                assert_string_equal(er.rv, rv);
            else if (!rv)
                assert_null(er.rv);
            assert_true(er.type != RF_WATCH_ERROR && er.type != RF_WATCH_EXPIRED);
        }
    }
    rf_watch_parser_destroy(whole);
    rf_watch_parser_destroy(raw);
}

static const char *const raw_lines[] = {
    EV("ADDED", "a"),
    EV("BOOKMARK", ""),
    GONE,
    FAIL500,
    " { \"type\" : \"MODIFIED\" ,\n",
    "{ \"type\" : \"MODIFIED\" , \"object\" : { \"metadata\" : { \"name\" : \"p\" ,"
    " \"resourceVersion\" : \"99\" } } } \r\n",
    "{\"object\":{\"metadata\":{\"resourceVersion\":\"3\",\"name\":\"o\"}},\"type\":\"DELETED\"}\n",
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\"}}\n",
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":7}}}\n",
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\\\"2\"}}}\n",
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":[1]}}\n",
    "{\"type\":\"AD\\u0044ED\",\"object\":{\"metadata\":{\"name\":\"esc\"}}}\n",
    "{\"type\":\"ADDED\",\"object\":[1]}\n",
    "{\"type\":\"ADDED\",\"object\":{}} x\n",
    "{\"type\":\"ADDED\",\"object\":{},}\n",
    "{\"type\":\"ADDED\",\"object\":{\"a\":\"}\\\"{\"}}\n",
    "{\"type\":\"ERROR\",\"object\":{\"code\":410}}\n",
    "{\"type\":\"EXPLODED\",\"object\":{}}\n",
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"\xc3\xa9\",\"managedFields\":[{\"m\":"
    "\"]}\"}],\"resourceVersion\":\"5\"},\"spec\":{\"template\":{\"spec\":{\"c\":[{},[]]}}}}}\n",
    "not json\n",
    "[1,2]\n",
};

static void test_raw_same_as_parsed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(raw_lines) / sizeof(raw_lines[0]); i++)
        check_raw_line(raw_lines[i]);
}

/* Every split of a stream into two chunks, and byte by byte, gives the same events. */
static void test_parser_every_split(void **state)
{
    static const char stream[] = EV("ADDED", "a") GONE EV("MODIFIED", "bb") EV("DELETED", "ccc");
    static const rf_watch_type_t want[] = {RF_WATCH_ADDED, RF_WATCH_EXPIRED, RF_WATCH_MODIFIED,
                                           RF_WATCH_DELETED};
    size_t n = strlen(stream);
    size_t split;
    size_t i;
    rf_watch_parser_t *p;
    rf_watch_event_t ev;
    char err[128];
    size_t got;

    (void)state;
    for (split = 0; split <= n + 1; split++) {
        p = rf_watch_parser_new(0);
        got = 0;
        if (split <= n) {
            rf_watch_parser_feed(p, stream, split);
            while (rf_watch_parser_next(p, &ev, err, sizeof(err)) == 1)
                assert_int_equal(ev.type, want[got++]);
            rf_watch_parser_feed(p, stream + split, n - split);
        } else {
            for (i = 0; i < n; i++) {
                rf_watch_parser_feed(p, stream + i, 1);
                while (rf_watch_parser_next(p, &ev, err, sizeof(err)) == 1)
                    assert_int_equal(ev.type, want[got++]);
            }
        }
        while (rf_watch_parser_next(p, &ev, err, sizeof(err)) == 1)
            assert_int_equal(ev.type, want[got++]);
        assert_int_equal(got, 4);
        assert_int_equal(rf_watch_parser_pending(p), 0);
        rf_watch_parser_destroy(p);
    }
}

/* An endless line never grows the buffer past the cap plus one chunk. */
static void test_parser_memory_bounded(void **state)
{
    rf_watch_parser_t *p = rf_watch_parser_new(1024);
    rf_watch_event_t ev;
    char chunk[512];
    char err[128];
    int i;

    (void)state;
    memset(chunk, 'x', sizeof(chunk));
    for (i = 0; i < 10000; i++) {
        rf_watch_parser_feed(p, chunk, sizeof(chunk));
        assert_true(rf_watch_parser_pending(p) <= 1024 + sizeof(chunk) + 2);
    }
    assert_int_equal(rf_watch_parser_next(p, &ev, err, sizeof(err)), -1);
    assert_int_equal(rf_watch_parser_next(p, &ev, err, sizeof(err)), 0);
    rf_watch_parser_feed(p, "\n" EV("ADDED", "after"), strlen(EV("ADDED", "after")) + 1);
    assert_int_equal(rf_watch_parser_next(p, &ev, err, sizeof(err)), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ev.object, "metadata"), "name")),
        "after");
    rf_watch_parser_destroy(p);
}

/* Random bytes in random splits: no crash, no leak (under ASan/valgrind), bounded memory. */
static void test_parser_random_input(void **state)
{
    static const char *const pieces[] = {
        "{",         "}",   "\"type\"",       ":",  "\"ADDED\"", ",",  "\"object\"", "\n",  "\x01",
        "\"ERROR\"", "410", "{\"code\":410}", "\r", "[",         "\\", "\"",         "\x00"};
    uint64_t x = 0x1234567887654321ULL;
    rf_watch_parser_t *p;
    rf_watch_event_t ev;
    char buf[256];
    char err[128];
    size_t len;
    size_t k;
    int round;
    int i;
    int r;

    (void)state;
    for (round = 0; round < 2000; round++) {
        p = rf_watch_parser_new(64);
        rf_watch_parser_set_raw(p, round % 2);
        for (i = 0; i < 20; i++) {
            len = 0;
            for (k = 0; k < 8; k++) {
                const char *s;

                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s = pieces[x % (sizeof(pieces) / sizeof(pieces[0]))];
                if (len + strlen(s) + 1 >= sizeof(buf))
                    break;
                memcpy(buf + len, s, strlen(s) + (s[0] == '\0'));
                len += strlen(s) + (s[0] == '\0');
            }
            rf_watch_parser_feed(p, buf, len);
            assert_true(rf_watch_parser_pending(p) <= 64 + len + 2);
            while ((r = rf_watch_parser_next(p, &ev, err, sizeof(err))) != 0)
                assert_true(r < 0 || !ev.text ||
                            (ev.len >= 2 && ev.text[0] == '{' && ev.text[ev.len - 1] == '}'));
        }
        rf_watch_parser_end(p);
        while (rf_watch_parser_next(p, &ev, err, sizeof(err)) != 0)
            ;
        rf_watch_parser_destroy(p);
    }
}

/* Events whose object.metadata has managedFields (first, in the middle, last, alone;
 * pretty-printed; braces, brackets, quotes and the word in strings): the object comes without
 * them and is otherwise what the line says; a managedFields anywhere else stays. */
static const struct {
    const char *line;
    const char *want; /* the object expected, as JSON */
} slim_cases[] = {
    {"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"a\","
     "\"managedFields\":[{\"manager\":\"x\",\"fieldsV1\":{\"f:spec\":{}}}]},\"spec\":{\"r\":1}}}",
     "{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"a\"},\"spec\":{\"r\":1}}"},
    {"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"managedFields\":[{\"m\":\"}]\\\"{[\"}],"
     "\"name\":\"b\",\"labels\":{\"k\":\"managedFields\"}},\"status\":{\"x\":\"\\\\\"}}}",
     "{\"metadata\":{\"name\":\"b\",\"labels\":{\"k\":\"managedFields\"}},\"status\":{\"x\":"
     "\"\\\\\"}}"},
    {"{ \"object\" : { \"metadata\" : { \"managedFields\" : [ ] } , \"kind\" : \"Pod\" } ,"
     " \"type\" : \"DELETED\" }",
     "{\"metadata\":{},\"kind\":\"Pod\"}"},
    {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"c\",\"uid\":\"u\","
     "\"managedFields\":[{\"a\":[1,2,{\"b\":null}]},{\"c\":true}]}}}",
     "{\"metadata\":{\"name\":\"c\",\"uid\":\"u\"}}"},
    {"{\"type\":\"ADDED\",\"object\":{\"spec\":{\"template\":{\"metadata\":{\"managedFields\":"
     "[1]}}},\"metadata\":{\"name\":\"d\"}}}",
     "{\"spec\":{\"template\":{\"metadata\":{\"managedFields\":[1]}}},\"metadata\":{\"name\":"
     "\"d\"}}"},
    {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"e\",\"managedFields\":[1]},"
     "\"managedFields\":2}}",
     "{\"metadata\":{\"name\":\"e\"},\"managedFields\":2}"},
};

static void test_parser_drops_managed_fields(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(slim_cases) / sizeof(slim_cases[0]); i++) {
        rf_watch_parser_t *p = rf_watch_parser_new(0);
        json_t *want = json_loads(slim_cases[i].want, 0, NULL);
        rf_watch_event_t ev;
        char err[256] = "";

        assert_non_null(want);
        rf_watch_parser_feed(p, slim_cases[i].line, strlen(slim_cases[i].line));
        rf_watch_parser_feed(p, "\n", 1);
        if (rf_watch_parser_next(p, &ev, err, sizeof(err)) != 1)
            fail_msg("slim case %zu: not decoded: %s", i, err);
        if (!json_equal(ev.object, want)) {
            char *got = json_dumps(ev.object, JSON_COMPACT | JSON_SORT_KEYS);
            fail_msg("slim case %zu: got %s, want %s", i, got, slim_cases[i].want);
        }
        json_decref(want);
        rf_watch_parser_destroy(p);
    }
}

/* A drop list of the caller's (track's kind): the members named go at any depth they are
 * named at, nothing else does (a member of the same name elsewhere, a value that is not an
 * object where one is walked into); NULL keeps everything; a line that is not JSON stays
 * refused (a comma before a closing brace or bracket, also next to a dropped member). */
static const char *const drop_paths[] = {"metadata.managedFields", "metadata.labels",
                                         "spec.template", NULL};

static const struct {
    const char *line;
    const char *want; /* the object expected, as JSON; NULL: the line is refused */
    int keep_all;     /* parsed with no drop list */
} drop_cases[] = {
    {"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\",\"labels\":{\"x\":\"y\"},"
     "\"managedFields\":[{}]},\"spec\":{\"replicas\":2,\"template\":{\"spec\":{}},\"selector\":"
     "{\"matchLabels\":{\"app\":\"a\"}}},\"status\":{\"template\":1}}}",
     "{\"metadata\":{\"name\":\"a\"},\"spec\":{\"replicas\":2,\"selector\":{\"matchLabels\":"
     "{\"app\":\"a\"}}},\"status\":{\"template\":1}}",
     0},
    {"{ \"object\" : { \"spec\" : 5 , \"metadata\" : [ 1 ] , \"template\" : { } } ,"
     " \"type\" : \"ADDED\" }",
     "{\"spec\":5,\"metadata\":[1],\"template\":{}}", 0},
    {"{\"type\":\"ADDED\",\"object\":{\"spec\":{\"template\":{\"metadata\":{\"labels\":{}}}}}}",
     "{\"spec\":{}}", 0},
    {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"managedFields\":[1],\"name\":\"b\"}}}",
     "{\"metadata\":{\"managedFields\":[1],\"name\":\"b\"}}", 1},
    {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"c\",}}}", NULL, 0},
    {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"managedFields\":[1],}}}", NULL, 0},
    {"{\"type\":\"ADDED\",\"object\":{\"spec\":{\"replicas\":1,},\"kind\":\"D\"}}", NULL, 0},
};

static void test_parser_drops_named_members(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(drop_cases) / sizeof(drop_cases[0]); i++) {
        rf_watch_parser_t *p = rf_watch_parser_new(0);
        json_t *want = drop_cases[i].want ? json_loads(drop_cases[i].want, 0, NULL) : NULL;
        rf_watch_event_t ev;
        char err[256] = "";
        int r;

        rf_watch_parser_set_drop(p, drop_cases[i].keep_all ? NULL : drop_paths);
        rf_watch_parser_feed(p, drop_cases[i].line, strlen(drop_cases[i].line));
        rf_watch_parser_feed(p, "\n", 1);
        r = rf_watch_parser_next(p, &ev, err, sizeof(err));
        if (!drop_cases[i].want) {
            if (r != -1)
                fail_msg("drop case %zu: decoded, want refused", i);
        } else if (r != 1) {
            fail_msg("drop case %zu: not decoded: %s", i, err);
        } else if (!json_equal(ev.object, want)) {
            char *got = json_dumps(ev.object, JSON_COMPACT | JSON_SORT_KEYS);
            fail_msg("drop case %zu: got %s, want %s", i, got, drop_cases[i].want);
        }
        json_decref(want);
        rf_watch_parser_destroy(p);
    }
}

/* A list answer: each item without the members named, the rest (metadata's continue
 * token, kind) as it came; -1 for what is not a list of objects as expected. */
static const struct {
    const char *text;
    const char *want; /* NULL: -1 */
} list_cases[] = {
    {"{\"kind\":\"DeploymentList\",\"metadata\":{\"continue\":\"c\",\"labels\":1},\"items\":"
     "[{\"metadata\":{\"name\":\"a\",\"managedFields\":[{\"f\":\"]\"}]}},{\"spec\":{\"template\":"
     "{},\"replicas\":1}} , {}]}",
     "{\"kind\":\"DeploymentList\",\"metadata\":{\"continue\":\"c\",\"labels\":1},\"items\":"
     "[{\"metadata\":{\"name\":\"a\"}},{\"spec\":{\"replicas\":1}},{}]}"},
    {"{\"items\":[],\"metadata\":{}}", "{\"items\":[],\"metadata\":{}}"},
    {"{\"items\":{}}", NULL},
    {"{\"items\":[{\"a\":1},]}", NULL},
    {"{\"items\":[{\"a\":1}]", NULL},
    {"[]", NULL},
};

static void test_list_drops_named_members(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(list_cases) / sizeof(list_cases[0]); i++) {
        rf_buf_t out = RF_BUF_INIT;
        int r = rf_watch_slim_list(list_cases[i].text, strlen(list_cases[i].text), drop_paths,
                                   &out);

        if (!list_cases[i].want) {
            if (r != -1)
                fail_msg("list case %zu: slimmed to %s, want -1", i, rf_buf_str(&out));
        } else {
            json_t *want = json_loads(list_cases[i].want, 0, NULL);
            json_t *got = r == 0 ? json_loads(rf_buf_str(&out), 0, NULL) : NULL;
            if (!got || !json_equal(got, want))
                fail_msg("list case %zu: got %s, want %s", i, r == 0 ? rf_buf_str(&out) : "-1",
                         list_cases[i].want);
            json_decref(got);
            json_decref(want);
        }
        rf_buf_release(&out);
    }
    /* No drop list: nothing to do (the caller parses the text whole). */
    assert_int_equal(rf_watch_slim_list("{\"items\":[]}", 12, NULL, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_table),
        cmocka_unit_test(test_raw_same_as_parsed),
        cmocka_unit_test(test_parser_every_split),
        cmocka_unit_test(test_parser_memory_bounded),
        cmocka_unit_test(test_parser_random_input),
        cmocka_unit_test(test_parser_drops_managed_fields),
        cmocka_unit_test(test_parser_drops_named_members),
        cmocka_unit_test(test_list_drops_named_members),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
