/* rf_schema against the official JSON-Schema-Test-Suite draft 7 cases (Debian's package). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rf_schema.h"

#define SUITE_DIR "/usr/share/json-schema-test-suite"
/* The draft-07 meta-schema, which some cases $ref by its URL; python3-jsonschema ships it,
 * so those cases run offline. */
#define METASCHEMA "/usr/lib/python3/dist-packages/jsonschema/schemas/draft7.json"

/* Every draft 7 keyword file of the suite: each must exist. */
static const char *const suite_files[] = {
    "additionalItems.json",
    "additionalProperties.json",
    "allOf.json",
    "anyOf.json",
    "boolean_schema.json",
    "const.json",
    "contains.json",
    "default.json",
    "definitions.json",
    "dependencies.json",
    "enum.json",
    "exclusiveMaximum.json",
    "exclusiveMinimum.json",
    "if-then-else.json",
    "items.json",
    "maxItems.json",
    "maxLength.json",
    "maxProperties.json",
    "maximum.json",
    "minItems.json",
    "minLength.json",
    "minProperties.json",
    "minimum.json",
    "multipleOf.json",
    "not.json",
    "oneOf.json",
    "pattern.json",
    "patternProperties.json",
    "properties.json",
    "propertyNames.json",
    "ref.json",
    "refRemote.json",
    "required.json",
    "type.json",
    "uniqueItems.json",
    /* optional cases that apply to us; optional/bignum.json is not run: jansson (and so
     * rf_msg) refuses integers beyond 64 bits as not JSON, before any schema sees them */
    "optional/zeroTerminatedFloats.json",
    "optional/ecmascript-regex.json",
    "optional/content.json",
};

/* The remote documents the suite's refRemote cases expect at http://localhost:1234/. */
static const char *const remotes[] = {
    "integer.json",
    "subSchemas.json",
    "name.json",
    "folder/folderInteger.json",
};

/* Cases we skip on purpose, each with its reason (file, group, test; NULL test = the
 * whole group). Each entry must match at least one case, so the list cannot go stale. */
static struct skip {
    const char *file;
    const char *group;
    const char *test;
    const char *reason;
    int used;
} skips[] = {
    {"optional/ecmascript-regex.json", "ECMA 262 regex non-compliance", NULL,
     "format is an annotation: strings of format 'regex' are not checked", 0},
    {"optional/content.json", "validation of string-encoded content based on media type",
     "an invalid JSON document", "contentMediaType is an annotation, not checked", 0},
    {"optional/content.json", "validation of binary string-encoding",
     "an invalid base64 string (% is not a valid character)",
     "contentEncoding is an annotation, not checked", 0},
    {"optional/content.json", "validation of binary-encoded media type documents",
     "a validly-encoded invalid JSON document",
     "contentMediaType and contentEncoding are annotations, not checked", 0},
    {"optional/content.json", "validation of binary-encoded media type documents",
     "an invalid base64 string that is valid JSON",
     "contentMediaType and contentEncoding are annotations, not checked", 0},
    {NULL, NULL, NULL, NULL, 0},
};

static unsigned total_run, total_passed, total_skipped;

static const struct skip *find_skip(const char *file, const char *group, const char *test)
{
    struct skip *s;

    for (s = skips; s->file; s++) {
        if (strcmp(s->file, file) == 0 && strcmp(s->group, group) == 0 &&
            (!s->test || strcmp(s->test, test) == 0)) {
            s->used = 1;
            return s;
        }
    }
    return NULL;
}

static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);

    if (!j)
        fail_msg("cannot load '%s': %s (line %d)", path, jerr.text, jerr.line);
    return j;
}

/* A registry holding the remotes and the meta-schema, as a network would serve them. */
static rf_schema_registry_t *registry_with_remotes(void)
{
    char errstr[512];
    char path[512], uri[512];
    rf_schema_registry_t *reg = rf_schema_registry_new();
    json_t *j;
    size_t i;

    assert_non_null(reg);
    for (i = 0; i < sizeof(remotes) / sizeof(remotes[0]); i++) {
        snprintf(path, sizeof(path), "%s/remotes/%s", SUITE_DIR, remotes[i]);
        snprintf(uri, sizeof(uri), "http://localhost:1234/%s", remotes[i]);
        j = load_json(path);
        if (rf_schema_registry_add(reg, uri, j, errstr, sizeof(errstr)) != RF_OK)
            fail_msg("remote '%s': %s", uri, errstr);
        json_decref(j);
    }
    j = load_json(METASCHEMA);
    if (rf_schema_registry_add(reg, "http://json-schema.org/draft-07/schema#", j, errstr,
                               sizeof(errstr)) != RF_OK)
        fail_msg("meta-schema: %s", errstr);
    json_decref(j);
    return reg;
}

static void run_file(void **state)
{
    const char *file = *(const char *const *)*state;
    char path[512], errstr[512];
    json_t *groups, *group, *test;
    size_t gi, ti;
    unsigned failed = 0, run = 0, skipped = 0;

    snprintf(path, sizeof(path), "%s/tests/draft7/%s", SUITE_DIR, file);
    groups = load_json(path);
    assert_true(json_is_array(groups));
    json_array_foreach(groups, gi, group)
    {
        const char *gdesc = json_string_value(json_object_get(group, "description"));
        rf_schema_registry_t *reg = registry_with_remotes();
        rf_err_t added =
            rf_schema_registry_add(reg, "urn:relfleet:suite-case", json_object_get(group, "schema"),
                                   errstr, sizeof(errstr));
        if (added != RF_OK && !find_skip(file, gdesc, "")) {
            print_message("FAIL %s: '%s': schema refused: %s\n", file, gdesc, errstr);
            failed++;
        }
        json_array_foreach(json_object_get(group, "tests"), ti, test)
        {
            const char *tdesc = json_string_value(json_object_get(test, "description"));
            int want = json_is_true(json_object_get(test, "valid"));
            const struct skip *skip = find_skip(file, gdesc, tdesc);
            rf_err_t got;

            if (skip) {
                print_message("skip %s: '%s' / '%s': %s\n", file, gdesc, tdesc, skip->reason);
                skipped++;
                continue;
            }
            run++;
            if (added != RF_OK) {
                failed++;
                continue;
            }
            errstr[0] = '\0';
            got = rf_schema_validate(reg, "urn:relfleet:suite-case", json_object_get(test, "data"),
                                     errstr, sizeof(errstr));
            if ((want && got != RF_OK) || (!want && got != RF_ERR_PERM)) {
                print_message("FAIL %s: '%s' / '%s': expected %s, got %s (%s)\n", file, gdesc,
                              tdesc, want ? "valid" : "invalid", rf_err_name(got), errstr);
                failed++;
            } else if (!want && errstr[0] == '\0') {
                print_message("FAIL %s: '%s' / '%s': refused without a reason\n", file, gdesc,
                              tdesc);
                failed++;
            }
        }
        rf_schema_registry_destroy(reg);
    }
    json_decref(groups);
    total_run += run;
    total_passed += run - failed;
    total_skipped += skipped;
    assert_true(run + skipped > 0);
    assert_int_equal(failed, 0);
}

static void suite_is_installed(void **state)
{
    char path[512];
    FILE *f;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(suite_files) / sizeof(suite_files[0]); i++) {
        snprintf(path, sizeof(path), "%s/tests/draft7/%s", SUITE_DIR, suite_files[i]);
        f = fopen(path, "r");
        if (!f)
            fail_msg("'%s' is missing: install the json-schema-test-suite package", path);
        fclose(f);
    }
    f = fopen(METASCHEMA, "r");
    if (!f)
        fail_msg("'%s' is missing: install the python3-jsonschema package", METASCHEMA);
    fclose(f);
}

static void summary(void **state)
{
    const struct skip *s;

    (void)state;
    print_message("json-schema-test-suite draft7: %u cases run, %u passed, %u skipped\n", total_run,
                  total_passed, total_skipped);
    for (s = skips; s->file; s++) {
        if (!s->used)
            fail_msg("skip entry matches no case: %s '%s'", s->file, s->group);
    }
    /* the 2.0.0 suite has about 450 draft 7 cases in these files */
    assert_true(total_run >= 400);
    assert_int_equal(total_passed, total_run);
}

int main(void)
{
    struct CMUnitTest tests[2 + sizeof(suite_files) / sizeof(suite_files[0])];
    size_t i, n = 0;

    tests[n++] = (struct CMUnitTest)cmocka_unit_test(suite_is_installed);
    for (i = 0; i < sizeof(suite_files) / sizeof(suite_files[0]); i++) {
        tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate(run_file, (void *)&suite_files[i]);
        tests[n].name = suite_files[i];
        n++;
    }
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(summary);
    return _cmocka_run_group_tests("schema_suite", tests, n, NULL, NULL);
}
