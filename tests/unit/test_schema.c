/* rf_schema: reasons and paths, $ref across schemas, load_dir strictness, limits, speed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rf_schema.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);

    if (!j)
        fail_msg("bad test JSON '%s': %s", text, jerr.text);
    return j;
}

/* ------------------------------------------------------------------ table */

static const struct vcase {
    const char *schema;
    const char *doc;
    rf_err_t want;
    const char *reason; /* exact errstr when refused */
} vcases[] = {
    {"{\"type\":\"integer\"}", "1.0", RF_OK, NULL},
    {"{\"type\":\"integer\"}", "1.5", RF_ERR_PERM, "document: expected integer, got number"},
    {"{\"type\":[\"string\",\"null\"]}", "null", RF_OK, NULL},
    {"{\"type\":[\"string\",\"null\"]}", "true", RF_ERR_PERM,
     "document: expected null or string, got boolean"},
    {"{\"maxLength\":3}", "\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\"", RF_OK, NULL},
    {"{\"maxLength\":3}", "\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9ex\"", RF_ERR_PERM,
     "document: string too long (4 > 3)"},
    {"{\"minLength\":2}", "\"\xf0\x9f\x92\xa9\"", RF_ERR_PERM,
     "document: string too short (1 < 2)"},
    {"{\"const\":1}", "1.0", RF_OK, NULL},
    {"{\"const\":{\"a\":[1,2]}}", "{\"a\":[1,2.0]}", RF_OK, NULL},
    {"{\"const\":\"v1\"}", "\"v2\"", RF_ERR_PERM, "document: value must be \"v1\""},
    {"{\"enum\":[\"a\",{\"b\":null}]}", "{\"b\":null}", RF_OK, NULL},
    {"{\"enum\":[\"a\",\"b\"]}", "\"c\"", RF_ERR_PERM,
     "document: value must be one of [\"a\",\"b\"]"},
    {"{\"enum\":[false]}", "0", RF_ERR_PERM, "document: value must be one of [false]"},
    {"{\"uniqueItems\":true}", "[1,\"1\",[1]]", RF_OK, NULL},
    {"{\"uniqueItems\":true}", "[1,2,1.0]", RF_ERR_PERM, "document: array items 0 and 2 are equal"},
    {"{\"properties\":{\"a\":{\"items\":{\"properties\":{\"b\":{\"type\":\"string\"}}}}}}",
     "{\"a\":[{\"b\":\"x\"},{\"b\":1}]}", RF_ERR_PERM,
     "field 'a[1].b': expected string, got integer"},
    {"{\"required\":[\"x\"],\"properties\":{\"o\":{\"required\":[\"y\"]}}}", "{\"x\":1,\"o\":{}}",
     RF_ERR_PERM, "field 'o.y': required field missing"},
    {"{\"properties\":{\"a\":{}},\"additionalProperties\":false}", "{\"a\":1,\"zz\":2}",
     RF_ERR_PERM, "field 'zz': unexpected field"},
    {"{\"patternProperties\":{\"^x-\":{\"type\":\"integer\"}},\"additionalProperties\":false}",
     "{\"x-a\":1,\"x-b\":\"no\"}", RF_ERR_PERM, "field 'x-b': expected integer, got string"},
    {"{\"propertyNames\":{\"maxLength\":2}}", "{\"ab\":1,\"abc\":2}", RF_ERR_PERM,
     "field 'abc': field name not allowed"},
    {"{\"dependencies\":{\"a\":[\"b\"]}}", "{\"a\":1}", RF_ERR_PERM,
     "field 'b': required field missing (as 'a' is present)"},
    {"{\"pattern\":\"b+\"}", "\"abbbc\"", RF_OK, NULL},
    {"{\"pattern\":\"^[a-z]+$\"}", "\"abc\\n\"", RF_ERR_PERM,
     "document: string does not match pattern '^[a-z]+$'"},
    {"{\"minimum\":1.5}", "1", RF_ERR_PERM, "document: number 1 is less than the minimum 1.5"},
    {"{\"exclusiveMaximum\":3}", "3", RF_ERR_PERM, "document: number 3 is not less than 3"},
    {"{\"multipleOf\":0.01}", "0.07", RF_OK, NULL},
    {"{\"multipleOf\":3}", "10", RF_ERR_PERM, "document: number 10 is not a multiple of 3"},
    {"{\"minItems\":1,\"maxItems\":2}", "[1,2,3]", RF_ERR_PERM,
     "document: array too long (3 > 2 items)"},
    {"{\"items\":[{\"type\":\"string\"}],\"additionalItems\":false}", "[\"a\",1]", RF_ERR_PERM,
     "field '[1]': no value is allowed here"},
    {"{\"contains\":{\"const\":2}}", "[1,3]", RF_ERR_PERM,
     "document: no array item matches 'contains'"},
    {"{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":0}]}", "5", RF_ERR_PERM,
     "document: value matches more than one oneOf schema (0 and 1)"},
    {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"null\"}]}", "\"x\"", RF_ERR_PERM,
     "document: value matches none of the anyOf schemas"},
    {"{\"not\":{\"type\":\"null\"}}", "null", RF_ERR_PERM,
     "document: value matches the 'not' schema"},
    {"{\"if\":{\"required\":[\"full\"]},\"then\":{\"properties\":{\"a\":{\"const\":\"p\"}}}}",
     "{\"full\":true,\"a\":\"c\"}", RF_ERR_PERM, "field 'a': value must be \"p\""},
    {"{\"if\":{\"required\":[\"full\"]},\"then\":{\"properties\":{\"a\":{\"const\":\"p\"}}}}",
     "{\"a\":\"c\"}", RF_OK, NULL},
    {"{\"definitions\":{\"a~b\":{\"type\":\"string\"},\"c/d\":{\"$ref\":\"#/definitions/a~0b\"}},"
     "\"properties\":{\"x\":{\"$ref\":\"#/definitions/c~1d\"}}}",
     "{\"x\":7}", RF_ERR_PERM, "field 'x': expected string, got integer"},
    {"{\"properties\":{\"next\":{\"$ref\":\"#\"}},\"additionalProperties\":false}",
     "{\"next\":{\"next\":{\"nope\":1}}}", RF_ERR_PERM, "field 'next.next.nope': unexpected field"},
    {"{\"$id\":\"urn:x\",\"definitions\":{\"n\":{\"$id\":\"#num\",\"type\":\"number\"}},"
     "\"items\":{\"$ref\":\"#num\"}}",
     "[1,\"2\"]", RF_ERR_PERM, "field '[1]': expected number, got string"},
    {"false", "1", RF_ERR_PERM, "document: no value is allowed here"},
    {"true", "{\"anything\":[1]}", RF_OK, NULL},
    /* a schema that recurses without consuming the document is cut, not a crash */
    {"{\"$ref\":\"#\"}", "1", RF_ERR_PERM,
     "document: nested too deeply for validation (more than 512 levels)"},
};

static void validate_table(void **state)
{
    char errstr[512];
    size_t i;
    unsigned wrong = 0;

    (void)state;
    for (i = 0; i < sizeof(vcases) / sizeof(vcases[0]); i++) {
        const struct vcase *c = &vcases[i];
        rf_schema_registry_t *reg = rf_schema_registry_new();
        json_t *schema = parse(c->schema);
        json_t *doc = parse(c->doc);
        rf_err_t got;

        assert_non_null(reg);
        if (rf_schema_registry_add(reg, "t", schema, errstr, sizeof(errstr)) != RF_OK)
            fail_msg("case %zu: schema refused: %s", i, errstr);
        errstr[0] = '\0';
        got = rf_schema_validate(reg, "t", doc, errstr, sizeof(errstr));
        if (got != c->want || (c->reason && strcmp(errstr, c->reason) != 0)) {
            print_message("case %zu: %s against %s: got %s '%s', want %s '%s'\n", i, c->doc,
                          c->schema, rf_err_name(got), errstr, rf_err_name(c->want),
                          c->reason ? c->reason : "");
            wrong++;
        }
        json_decref(schema);
        json_decref(doc);
        rf_schema_registry_destroy(reg);
    }
    assert_int_equal(wrong, 0);
}

/* ------------------------------------------------------------------ bad schemas */

static const struct {
    const char *schema;
    const char *reason;
} bad_schemas[] = {
    {"{\"type\":5}", "schema 't' at '/type': expected a type name or an array of them"},
    {"{\"type\":\"int\"}", "schema 't' at '/type': unknown type name"},
    {"{\"properties\":{\"a\":{\"pattern\":\"(\"}}}",
     "schema 't' at '/properties/a/pattern': invalid regular expression '('"},
    {"{\"minLength\":-1}", "schema 't' at '/minLength': expected a non-negative integer"},
    {"{\"multipleOf\":0}", "schema 't' at '/multipleOf': expected a number greater than 0"},
    {"{\"items\":[1]}", "schema 't' at '/items/0': a schema must be an object or a boolean"},
    {"{\"required\":[1]}", "schema 't' at '/required': expected an array of strings"},
    {"{\"allOf\":[]}", "schema 't' at '/allOf': expected a non-empty array of schemas"},
    {"[1]", "schema 't' at '#': a schema must be an object or a boolean, not array"},
    {"{\"definitions\":{\"a\":{\"$id\":\"urn:same\"},\"b\":{\"$id\":\"urn:same\"}}}",
     "schema 't' at '/definitions/b/$id': duplicate $id 'urn:same'"},
};

static void bad_schemas_refused(void **state)
{
    char errstr[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad_schemas) / sizeof(bad_schemas[0]); i++) {
        rf_schema_registry_t *reg = rf_schema_registry_new();
        json_t *schema = parse(bad_schemas[i].schema);
        errstr[0] = '\0';
        assert_int_equal(rf_schema_registry_add(reg, "t", schema, errstr, sizeof(errstr)),
                         RF_ERR_PERM);
        if (strncmp(errstr, bad_schemas[i].reason, strlen(bad_schemas[i].reason)) != 0)
            fail_msg("schema %s: got '%s', want '%s...'", bad_schemas[i].schema, errstr,
                     bad_schemas[i].reason);
        json_decref(schema);
        rf_schema_registry_destroy(reg);
    }
}

/* ------------------------------------------------------------------ registry */

static void refs_across_schemas(void **state)
{
    rf_schema_registry_t *reg = rf_schema_registry_new();
    json_t *msg = parse("{\"$id\":\"relfleet.m.v1\",\"properties\":{\"id\":"
                        "{\"$ref\":\"relfleet.common.v1#/definitions/id\"},"
                        "\"all\":{\"$ref\":\"relfleet.common.v1\"}}}");
    json_t *common = parse("{\"$id\":\"relfleet.common.v1\",\"type\":\"object\","
                           "\"definitions\":{\"id\":{\"type\":\"string\",\"maxLength\":3}}}");
    json_t *good = parse("{\"id\":\"abc\",\"all\":{}}");
    json_t *bad = parse("{\"id\":\"abcd\"}");
    json_t *bad2 = parse("{\"all\":[]}");
    char errstr[512];

    (void)state;
    assert_int_equal(rf_schema_registry_add(reg, "relfleet.m.v1", msg, errstr, sizeof(errstr)),
                     RF_OK);
    /* the target is not there yet: the ref is pending and validation through it fails */
    assert_int_equal(rf_schema_validate(reg, "relfleet.m.v1", good, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_string_equal(errstr, "field 'id': unresolved $ref 'relfleet.common.v1#/definitions/id'");
    assert_int_equal(
        rf_schema_registry_add(reg, "relfleet.common.v1", common, errstr, sizeof(errstr)), RF_OK);
    assert_int_equal(rf_schema_validate(reg, "relfleet.m.v1", good, errstr, sizeof(errstr)), RF_OK);
    assert_int_equal(rf_schema_validate(reg, "relfleet.m.v1", bad, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_string_equal(errstr, "field 'id': string too long (4 > 3)");
    assert_int_equal(rf_schema_validate(reg, "relfleet.m.v1", bad2, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_string_equal(errstr, "field 'all': expected object, got array");
    assert_int_equal(rf_schema_validate(reg, "relfleet.x.v1", good, errstr, sizeof(errstr)),
                     RF_ERR_NOTFOUND);
    assert_string_equal(errstr, "unknown schema 'relfleet.x.v1'");
    assert_int_equal(rf_schema_registry_add(reg, "relfleet.m.v1", msg, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_string_equal(errstr, "duplicate schema name 'relfleet.m.v1'");
    json_decref(msg);
    json_decref(common);
    json_decref(good);
    json_decref(bad);
    json_decref(bad2);
    rf_schema_registry_destroy(reg);
    rf_schema_registry_destroy(NULL);
}

static char tmpdir[256];

static void write_file(const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_file(const char *name)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    unlink(path);
}

/* load_dir of tmpdir; returns the result, errstr filled. */
static rf_err_t load_tmp(char *errstr, size_t size)
{
    rf_schema_registry_t *reg = rf_schema_registry_new();
    rf_err_t result = rf_schema_registry_load_dir(reg, tmpdir, errstr, size);

    rf_schema_registry_destroy(reg);
    return result;
}

static void load_dir_strict(void **state)
{
    rf_schema_registry_t *reg;
    char errstr[512];
    json_t *doc;

    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/rf-test-schema-%ld", (long)getpid());
    assert_int_equal(mkdir(tmpdir, 0700), 0);

    assert_int_equal(load_tmp(errstr, sizeof(errstr)), RF_ERR_NOTFOUND);
    assert_non_null(strstr(errstr, "no schema file (*.json) in"));

    write_file("a.json", "{\"$schema\":\"http://json-schema.org/draft-07/schema#\","
                         "\"$id\":\"x.a\",\"definitions\":{\"n\":{\"type\":\"integer\"}}}");
    write_file("b.json", "{\"properties\":{\"n\":{\"$ref\":\"x.a#/definitions/n\"}}}");
    write_file("notes.txt", "not a schema");
    reg = rf_schema_registry_new();
    assert_int_equal(rf_schema_registry_load_dir(reg, tmpdir, errstr, sizeof(errstr)), RF_OK);
    doc = parse("{\"n\":\"1\"}");
    /* b is named after its file; a after its $id and its file */
    assert_int_equal(rf_schema_validate(reg, "b", doc, errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_string_equal(errstr, "field 'n': expected integer, got string");
    assert_int_equal(rf_schema_validate(reg, "x.a", doc, errstr, sizeof(errstr)), RF_OK);
    assert_int_equal(rf_schema_validate(reg, "a", doc, errstr, sizeof(errstr)), RF_OK);
    json_decref(doc);
    rf_schema_registry_destroy(reg);

    write_file("c.json", "{\"properties\":{\"v\":{\"maxlength\":3}}}");
    assert_int_equal(load_tmp(errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_string_equal(errstr, "schema 'c' at '/properties/v': unknown keyword 'maxlength'");

    write_file("c.json", "{\"pattern\":\"^\\\\d+$\"}");
    assert_int_equal(load_tmp(errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_string_equal(
        errstr, "schema 'c' at '/pattern': regex '^\\d+$': escape '\\d' is ECMA-only, not POSIX");

    write_file("c.json", "{\"pattern\":\"^(?!x)\"}");
    assert_int_equal(load_tmp(errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_non_null(strstr(errstr, "'(?' is ECMA-only"));

    write_file("c.json", "{\"$schema\":\"http://json-schema.org/draft-04/schema#\"}");
    assert_int_equal(load_tmp(errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_non_null(strstr(errstr, "only draft 7"));

    write_file("c.json", "{\"$ref\":\"x.zz#/definitions/n\"}");
    assert_int_equal(load_tmp(errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_non_null(strstr(errstr, "unresolved $ref 'x.zz#/definitions/n'"));

    write_file("c.json", "{\"type\":\"object\",\n \"type\":\"array\"}");
    assert_int_equal(load_tmp(errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_non_null(strstr(errstr, "c.json': not JSON: duplicate object key near"));
    assert_non_null(strstr(errstr, "at line 2"));

    write_file("c.json", "{\"$id\":\"x.a\"}");
    assert_int_equal(load_tmp(errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_string_equal(errstr, "duplicate schema name 'x.a'");

    remove_file("a.json");
    remove_file("b.json");
    remove_file("c.json");
    remove_file("notes.txt");
    assert_int_equal(rmdir(tmpdir), 0);

    reg = rf_schema_registry_new();
    assert_int_equal(
        rf_schema_registry_load_dir(reg, "/nonexistent/schemas", errstr, sizeof(errstr)),
        RF_ERR_NOTFOUND);
    assert_string_equal(errstr, "cannot open schema directory '/nonexistent/schemas'");
    rf_schema_registry_destroy(reg);
}

/* ------------------------------------------------------------------ the real schemas */

static rf_schema_registry_t *load_project_schemas(void)
{
    const char *src = getenv("RELFLEET_SOURCE_DIR");
    char dir[1024], errstr[512];
    rf_schema_registry_t *reg = rf_schema_registry_new();

    snprintf(dir, sizeof(dir), "%s/schemas", src ? src : RELFLEET_SOURCE_DIR);
    if (rf_schema_registry_load_dir(reg, dir, errstr, sizeof(errstr)) != RF_OK)
        fail_msg("%s", errstr);
    return reg;
}

static const char request_text[] =
    "{\"schema\":\"relfleet.request.v1\",\"release_id\":\"0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a10\","
    "\"service\":\"web\",\"env\":\"prod\",\"version\":\"v1.4.2\",\"kind\":\"deploy\","
    "\"operator\":\"alice\",\"requested_at\":\"2026-11-23T23:10:05.123Z\","
    "\"params\":{\"replicas\":3,\"health_path\":\"/healthz\"},\"parent\":null}";

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Thousands of messages a second: measured at about 130,000/s natively and 3,500/s under
 * valgrind, so the bar is 2,000/s, and 500/s under valgrind. */
static void validation_is_fast(void **state)
{
    rf_schema_registry_t *reg = load_project_schemas();
    json_t *doc = parse(request_text);
    char errstr[256];
    const char *preload;
    const int n = 5000;
    double t0, secs;
    int i;

    (void)state;
    t0 = now_s();
    for (i = 0; i < n; i++)
        assert_int_equal(
            rf_schema_validate(reg, "relfleet.request.v1", doc, errstr, sizeof(errstr)), RF_OK);
    secs = now_s() - t0;
    print_message("validated %d request messages in %.3f s (%.0f/s)\n", n, secs, n / secs);
    preload = getenv("LD_PRELOAD");
    assert_true(n / secs > (preload && strstr(preload, "vgpreload") ? 500 : 2000));
    json_decref(doc);
    rf_schema_registry_destroy(reg);
}

struct worker {
    const rf_schema_registry_t *reg;
    int failures;
};

static void *validate_many(void *arg)
{
    struct worker *w = arg;
    json_t *good = parse(request_text);
    json_t *bad = json_deep_copy(good);
    char errstr[256];
    int i;

    json_object_set_new(bad, "service", json_string("Web"));
    for (i = 0; i < 1000; i++) {
        if (rf_schema_validate(w->reg, "relfleet.request.v1", good, errstr, sizeof(errstr)) !=
            RF_OK)
            w->failures++;
        if (rf_schema_validate(w->reg, "relfleet.request.v1", bad, errstr, sizeof(errstr)) !=
                RF_ERR_PERM ||
            !strstr(errstr, "field 'service': string does not match pattern"))
            w->failures++;
    }
    json_decref(good);
    json_decref(bad);
    return NULL;
}

/* One loaded registry, several threads validating at once. */
static void validation_is_thread_safe(void **state)
{
    rf_schema_registry_t *reg = load_project_schemas();
    struct worker w[4];
    pthread_t t[4];
    int i;

    (void)state;
    for (i = 0; i < 4; i++) {
        w[i].reg = reg;
        w[i].failures = 0;
        assert_int_equal(pthread_create(&t[i], NULL, validate_many, &w[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    rf_schema_registry_destroy(reg);
}

/* A 1 MB string is refused by maxLength before any regex runs. */
static void huge_string_refused_by_length(void **state)
{
    rf_schema_registry_t *reg = load_project_schemas();
    json_t *doc = parse(request_text);
    char *big = malloc(1024 * 1024 + 1);
    char errstr[256];

    (void)state;
    memset(big, 'a', 1024 * 1024);
    big[1024 * 1024] = '\0';
    json_object_set_new(doc, "version", json_string(big));
    assert_int_equal(rf_schema_validate(reg, "relfleet.request.v1", doc, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_string_equal(errstr, "field 'version': string too long (1048576 > 128)");
    free(big);
    json_decref(doc);
    rf_schema_registry_destroy(reg);
}

/* ------------------------------------------------------------------ the match memo */

static rf_err_t validate_text(const char *schema, const char *doc_text, char *errstr, size_t size)
{
    rf_schema_registry_t *reg = rf_schema_registry_new();
    json_t *sc = parse(schema);
    json_t *doc = parse(doc_text);
    rf_err_t err;

    assert_int_equal(rf_schema_registry_add(reg, "m", sc, errstr, size), RF_OK);
    err = rf_schema_validate(reg, "m", doc, errstr, size);
    json_decref(doc);
    json_decref(sc);
    rf_schema_registry_destroy(reg);
    return err;
}

/* Matches are remembered per thread by regex and text (rf_schema.c's memo): every answer is
 * still regexec's, through evictions, texts too long to remember, texts that agree in their
 * first bytes, and a regex compiled where a freed one was (the same address, likely). */
static void regex_memo_answers_as_regexec(void **state)
{
    rf_schema_registry_t *reg = rf_schema_registry_new();
    json_t *sc = parse("{\"pattern\":\"^x[0-9]*[02468]$\"}");
    char errstr[256], text[200];
    json_t *doc;
    int round, i, len;

    (void)state;
    assert_int_equal(rf_schema_registry_add(reg, "even", sc, errstr, sizeof(errstr)), RF_OK);
    json_decref(sc);
    for (round = 0; round < 2; round++) {
        for (i = 0; i < 3000; i++) { /* more texts than the memo holds: evictions, collisions */
            snprintf(text, sizeof(text), "x%d", i);
            doc = json_string(text);
            assert_int_equal(rf_schema_validate(reg, "even", doc, errstr, sizeof(errstr)),
                             i % 2 ? RF_ERR_PERM : RF_OK);
            json_decref(doc);
        }
    }
    rf_schema_registry_destroy(reg);

    for (len = 50; len <= 60; len++) { /* around the longest text remembered */
        char json_a[200], json_ab[200];
        memset(text, 'a', (size_t)len);
        snprintf(json_a, sizeof(json_a), "\"%.*s\"", len, text);
        snprintf(json_ab, sizeof(json_ab), "\"%.*sb\"", len, text);
        for (round = 0; round < 2; round++) {
            assert_int_equal(
                validate_text("{\"pattern\":\"^a*$\"}", json_a, errstr, sizeof(errstr)), RF_OK);
            assert_int_equal(
                validate_text("{\"pattern\":\"^a*$\"}", json_ab, errstr, sizeof(errstr)),
                RF_ERR_PERM);
        }
    }

    /* the same text against other regexes compiled after the first were freed, as malloc
     * hands their memory out again */
    for (i = 0; i < 50; i++) {
        assert_int_equal(validate_text(i % 2 ? "{\"pattern\":\"^b+$\"}" : "{\"pattern\":\"^a+$\"}",
                                       "\"aaa\"", errstr, sizeof(errstr)),
                         i % 2 ? RF_ERR_PERM : RF_OK);
    }
    assert_string_equal(errstr, "document: string does not match pattern '^b+$'");

    /* patternProperties and additionalProperties ask the memo too */
    for (round = 0; round < 2; round++) {
        assert_int_equal(validate_text("{\"patternProperties\":{\"^x\":{\"type\":\"integer\"}},"
                                       "\"additionalProperties\":{\"type\":\"string\"}}",
                                       "{\"xa\":1,\"ya\":\"s\"}", errstr, sizeof(errstr)),
                         RF_OK);
        assert_int_equal(validate_text("{\"patternProperties\":{\"^x\":{\"type\":\"integer\"}},"
                                       "\"additionalProperties\":{\"type\":\"string\"}}",
                                       "{\"xa\":\"s\"}", errstr, sizeof(errstr)),
                         RF_ERR_PERM);
        assert_int_equal(validate_text("{\"patternProperties\":{\"^x\":{\"type\":\"integer\"}},"
                                       "\"additionalProperties\":{\"type\":\"string\"}}",
                                       "{\"ya\":1}", errstr, sizeof(errstr)),
                         RF_ERR_PERM);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(validate_table),
        cmocka_unit_test(bad_schemas_refused),
        cmocka_unit_test(refs_across_schemas),
        cmocka_unit_test(load_dir_strict),
        cmocka_unit_test(validation_is_fast),
        cmocka_unit_test(validation_is_thread_safe),
        cmocka_unit_test(huge_string_refused_by_length),
        cmocka_unit_test(regex_memo_answers_as_regexec),
    };

    return cmocka_run_group_tests_name("schema", tests, NULL, NULL);
}
