/* The release state set in C matches the CHECK constraint in sql/ and DESIGN.md's classes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rf_buf.h"
#include "rf_release.h"

static void load_sql_file(rf_buf_t *buf, const char *name)
{
    char chunk[4096], path[512];
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/sql/%s", RELFLEET_SOURCE_DIR, name);
    f = fopen(path, "r");

    assert_non_null(f);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rf_buf_add(buf, chunk, n);
    fclose(f);
}

static void load_sql(rf_buf_t *buf)
{
    load_sql_file(buf, "001_init.sql");
}

static void test_status_check_matches_enum(void **state)
{
    rf_buf_t sql = RF_BUF_INIT;
    const char *check, *end;
    char list[1024];
    int count = 0;

    (void)state;
    /* The newest definition of the CHECK: 008 added awaiting_approval. */
    load_sql_file(&sql, "008_promotion.sql");
    check = strstr(rf_buf_str(&sql), "releases_status_check CHECK (status IN (");
    assert_non_null(check);
    check = strstr(check, "IN (") + 4;
    end = strchr(check, ')');
    assert_non_null(end);
    snprintf(list, sizeof(list), "%.*s", (int)(end - check), check);
    /* Every quoted name in the CHECK is a C status, in the same order, and none is missing. */
    for (char *p = strchr(list, '\''); p; p = strchr(p, '\'')) {
        char *q = strchr(p + 1, '\'');
        char name[32];
        assert_non_null(q);
        snprintf(name, sizeof(name), "%.*s", (int)(q - p - 1), p + 1);
        assert_int_equal(rf_release_status_parse(name), count);
        assert_string_equal(rf_release_status_name((rf_release_status_t)count), name);
        count++;
        p = q + 1;
    }
    assert_int_equal(count, RF_STATUS__COUNT);
    rf_buf_release(&sql);
}

static void test_active_index_matches_enum(void **state)
{
    rf_buf_t sql = RF_BUF_INIT;
    char expect[256] = "";

    (void)state;
    load_sql(&sql);
    for (int s = 0; s < RF_STATUS__COUNT; s++) {
        if (!rf_release_status_active((rf_release_status_t)s))
            continue;
        snprintf(expect + strlen(expect), sizeof(expect) - strlen(expect), "%s'%s'",
                 *expect ? ", " : "", rf_release_status_name((rf_release_status_t)s));
    }
    assert_non_null(strstr(rf_buf_str(&sql), expect));
    rf_buf_release(&sql);
}

static void test_classes(void **state)
{
    static const struct {
        const char *name;
        int terminal;
        int active;
    } cases[] = {
        {"queued", 0, 0},    {"rendering", 0, 1}, {"applying", 0, 1},   {"progressing", 0, 1},
        {"paused", 0, 1},    {"succeeded", 1, 0}, {"failed", 1, 0},     {"cancelled", 1, 0},
        {"superseded", 1, 0}, {"rejected", 1, 0}, {"awaiting_approval", 0, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int s = rf_release_status_parse(cases[i].name);
        assert_true(s >= 0);
        assert_int_equal(rf_release_status_terminal((rf_release_status_t)s), cases[i].terminal);
        assert_int_equal(rf_release_status_active((rf_release_status_t)s), cases[i].active);
    }
    assert_int_equal(rf_release_status_parse("running"), -1);
    assert_null(rf_release_status_name(RF_STATUS__COUNT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_check_matches_enum),
        cmocka_unit_test(test_active_index_matches_enum),
        cmocka_unit_test(test_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
