/* Every example of schemas/examples/<name>/{valid,invalid} classified as its folder says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>

#include "rf_schema.h"

static const char *const kinds[] = {
    "relfleet.request.v1", "relfleet.rendered.v1", "relfleet.applied.v1",
    "relfleet.command.v1", "relfleet.result.v1",   "relfleet.dlq.v1",
    "relfleet.approval.v1",
};

static char schema_dir[1024];

static int setup(void **state)
{
    const char *src = getenv("RELFLEET_SOURCE_DIR");
    char errstr[512];
    rf_schema_registry_t *reg;

    snprintf(schema_dir, sizeof(schema_dir), "%s/schemas", src ? src : RELFLEET_SOURCE_DIR);
    reg = rf_schema_registry_new();
    if (!reg)
        return -1;
    if (rf_schema_registry_load_dir(reg, schema_dir, errstr, sizeof(errstr)) != RF_OK) {
        print_error("cannot load '%s': %s\n", schema_dir, errstr);
        rf_schema_registry_destroy(reg);
        return -1;
    }
    *state = reg;
    return 0;
}

static int teardown(void **state)
{
    rf_schema_registry_destroy(*state);
    return 0;
}

/* The expected reason of an invalid example: the line in <example>.reason beside it. */
static void read_reason(const char *json_path, char *buf, size_t size)
{
    char path[1700];
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "%.*s.reason", (int)(strlen(json_path) - 5), json_path);
    f = fopen(path, "r");
    if (!f)
        fail_msg("'%s' is missing: each invalid example names its expected reason", path);
    if (!fgets(buf, (int)size, f))
        buf[0] = '\0';
    fclose(f);
    n = strlen(buf);
    if (n > 0 && buf[n - 1] == '\n')
        buf[n - 1] = '\0';
}

/* Classifies every file of examples/<kind>/<cls>; returns how many there were. */
static unsigned check_folder(const rf_schema_registry_t *reg, const char *kind, const char *cls)
{
    char dir[1200], path[1600], errstr[512], expected[512];
    struct dirent *e;
    json_error_t jerr;
    unsigned count = 0, wrong = 0;
    int want_valid = strcmp(cls, "valid") == 0;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s/examples/%s/%s", schema_dir, kind, cls);
    d = opendir(dir);
    if (!d)
        fail_msg("missing example folder '%s'", dir);
    for (e = readdir(d); e; e = readdir(d)) {
        size_t n = strlen(e->d_name);
        json_t *doc;
        rf_err_t got;
        if (n <= 5 || strcmp(e->d_name + n - 5, ".json") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!doc)
            fail_msg("'%s': not JSON: %s", path, jerr.text);
        errstr[0] = '\0';
        got = rf_schema_validate(reg, kind, doc, errstr, sizeof(errstr));
        if (want_valid && got != RF_OK) {
            print_message("WRONG %s/%s/%s: refused: %s\n", kind, cls, e->d_name, errstr);
            wrong++;
        } else if (!want_valid && (got != RF_ERR_PERM || errstr[0] == '\0')) {
            print_message("WRONG %s/%s/%s: %s\n", kind, cls, e->d_name,
                          got == RF_OK ? "accepted" : errstr);
            wrong++;
        } else if (!want_valid) {
            read_reason(path, expected, sizeof(expected));
            if (strcmp(errstr, expected) != 0) {
                print_message("WRONG %s/%s/%s: refused for another reason: %s\n", kind, cls,
                              e->d_name, errstr);
                wrong++;
            }
        }
        json_decref(doc);
        count++;
    }
    closedir(d);
    assert_int_equal(wrong, 0);
    return count;
}

static void examples_classified(void **state)
{
    const rf_schema_registry_t *reg = *state;
    unsigned valid = 0, invalid = 0, n;
    size_t i;

    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        n = check_folder(reg, kinds[i], "valid");
        if (n < 3)
            fail_msg("%s: only %u valid examples (want at least 3)", kinds[i], n);
        valid += n;
        n = check_folder(reg, kinds[i], "invalid");
        if (n < 7)
            fail_msg("%s: only %u invalid examples (want at least 7)", kinds[i], n);
        invalid += n;
    }
    print_message("examples: %u valid and %u invalid classified as expected\n", valid, invalid);
}

/* Each kind is registered under its $id, which is also its file name. */
static void every_kind_is_registered(void **state)
{
    const rf_schema_registry_t *reg = *state;
    json_t *empty = json_object();
    char errstr[256];
    size_t i;

    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        assert_int_equal(rf_schema_validate(reg, kinds[i], empty, errstr, sizeof(errstr)),
                         RF_ERR_PERM);
        assert_non_null(strstr(errstr, "required field missing"));
    }
    assert_int_equal(rf_schema_validate(reg, "relfleet.request.v2", empty, errstr, sizeof(errstr)),
                     RF_ERR_NOTFOUND);
    json_decref(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(examples_classified),
        cmocka_unit_test(every_kind_is_registered),
    };

    return cmocka_run_group_tests_name("schemas", tests, setup, teardown);
}
