/* The configuration table: defaults, environment, YAML file, and refusals by name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "rf_config.h"

static void clear_env(void)
{
    extern char **environ;
    char name[256];

    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "RELFLEET_", 9) == 0) {
                snprintf(name, sizeof(name), "%.*s", (int)(strchr(*e, '=') - *e), *e);
                unsetenv(name);
                again = 1;
                break;
            }
        }
    }
}

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/rf_config_test_XXXXXX");
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_defaults(void **state)
{
    rf_config_t c;
    char err[256];

    (void)state;
    clear_env();
    rf_config_init(&c);
    assert_int_equal(rf_config_load(&c, NULL, err, sizeof(err)), RF_OK);
    assert_string_equal(c.topic_prefix, "relfleet.");
    assert_int_equal(c.lock_lease_ms, 30000);
    assert_null(c.pg_dsn);
    assert_string_equal(c.pg_prepared_statements, "on");
    rf_config_release(&c);
}

static void test_table(void **state)
{
    static const struct {
        const char *yaml;      /* file contents, or NULL */
        const char *env_name;  /* environment variable, or NULL */
        const char *env_value;
        rf_err_t expect;
        const char *err_part; /* expected in errstr, or the expected topic_prefix */
    } cases[] = {
        {"topic_prefix: x.\n", NULL, NULL, RF_OK, "x."},
        {"topic_prefix: x.\n", "RELFLEET_TOPIC_PREFIX", "y.", RF_OK, "y."},
        {"topic_prefx: x.\n", NULL, NULL, RF_ERR_PERM, "unknown setting 'topic_prefx'"},
        {"lock_lease_ms: 5\n", NULL, NULL, RF_ERR_PERM, "out of range"},
        {"lock_lease_ms: abc\n", NULL, NULL, RF_ERR_PERM, "'abc' is not an integer"},
        {"log_level: loud\n", NULL, NULL, RF_ERR_PERM, "'loud' is not one of"},
        {"- a\n- b\n", NULL, NULL, RF_ERR_PERM, "expected a mapping"},
        {"a: [\n", NULL, NULL, RF_ERR_PERM, "cannot parse config file"},
        {NULL, "RELFLEET_PG_DNS", "x", RF_ERR_PERM, "RELFLEET_PG_DNS"},
        {NULL, "RELFLEET_STATE_DIR", "/tmp", RF_OK, "relfleet."},
        {NULL, "RELFLEET_SWEEP_INTERVAL_MS", "-1", RF_ERR_PERM, "out of range"},
        {NULL, "RELFLEET_PG_PREPARED_STATEMENTS", "yes", RF_ERR_PERM, "'yes' is not one of on|off"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_config_t c;
        char err[512] = "";
        char *path = cases[i].yaml ? write_tmp(cases[i].yaml) : NULL;
        rf_err_t r;

        clear_env();
        if (cases[i].env_name)
            setenv(cases[i].env_name, cases[i].env_value, 1);
        rf_config_init(&c);
        r = rf_config_load(&c, path, err, sizeof(err));
        if (r != cases[i].expect)
            fail_msg("case %zu: got %d (%s)", i, r, err);
        if (r == RF_OK)
            assert_string_equal(c.topic_prefix, cases[i].err_part);
        else if (!strstr(err, cases[i].err_part))
            fail_msg("case %zu: '%s' not in '%s'", i, cases[i].err_part, err);
        rf_config_release(&c);
        if (path) {
            unlink(path);
            free(path);
        }
    }
    clear_env();
}

static void test_require_and_secret(void **state)
{
    rf_config_t c;
    char err[256];
    static const char *const need[] = {"pg_dsn", NULL};
    char *path = write_tmp("other=1\nwebhook_key=s3cr3t=x\n");
    char *v;

    (void)state;
    clear_env();
    rf_config_init(&c);
    assert_int_equal(rf_config_require(&c, need, err, sizeof(err)), RF_ERR_PERM);
    assert_non_null(strstr(err, "RELFLEET_PG_DSN"));
    rf_config_set(&c, "secrets_file", path, err, sizeof(err));
    v = rf_config_secret(&c, "webhook_key");
    assert_string_equal(v, "s3cr3t=x");
    free(v);
    assert_null(rf_config_secret(&c, "missing"));
    setenv("RELFLEET_SECRET_MISSING", "fromenv", 1);
    v = rf_config_secret(&c, "missing");
    assert_string_equal(v, "fromenv");
    free(v);
    rf_config_release(&c);
    unlink(path);
    free(path);
    clear_env();
}

/* The cluster of a release: the service's own, else its env's entry of `clusters` (the first
 * one for that env, an empty value included), else "". */
static void test_cluster(void **state)
{
    rf_config_t c;
    char err[256], buf[64];

    (void)state;
    clear_env();
    rf_config_init(&c);
    assert_string_equal(rf_config_cluster(&c, "prod", NULL, buf, sizeof(buf)), "");
    assert_int_equal(rf_config_set(&c, "clusters", "staging=kind-a,prod=east,prod=west,pro=x,dev=",
                                   err, sizeof(err)), RF_OK);
    assert_string_equal(rf_config_cluster(&c, "prod", NULL, buf, sizeof(buf)), "east");
    assert_string_equal(rf_config_cluster(&c, "prod", "", buf, sizeof(buf)), "east");
    assert_string_equal(rf_config_cluster(&c, "prod", "own", buf, sizeof(buf)), "own");
    assert_string_equal(rf_config_cluster(&c, "staging", NULL, buf, sizeof(buf)), "kind-a");
    assert_string_equal(rf_config_cluster(&c, "pr", NULL, buf, sizeof(buf)), "");
    assert_string_equal(rf_config_cluster(&c, "dev", NULL, buf, sizeof(buf)), "");
    assert_string_equal(rf_config_cluster(&c, "qa", NULL, buf, sizeof(buf)), "");
    assert_string_equal(rf_config_cluster(&c, "prod", NULL, buf, 3), "ea"); /* cut to fit */
    rf_config_release(&c);
    clear_env();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_require_and_secret),
        cmocka_unit_test(test_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
