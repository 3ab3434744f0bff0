/* rf_service_check: which keys are columns, how timeout and strategy values are checked and
 * stored, and how much of a bad value an error quotes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rf_service.h"

#define LONG70 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define LONG64 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define NOT_DURATION "' is not a duration (600, 600s, 10m, 1h)"

static void test_check(void **state)
{
    static const struct {
        const char *key, *value;
        int quote_max;
        rf_err_t err;
        const char *column, *cast; /* on RF_OK */
        const char *text;          /* on RF_OK: what is stored; otherwise the start of errstr */
    } cases[] = {
        {"replicas", "3", -1, RF_OK, "replicas", "int", "3"},
        /* The type is PostgreSQL's to check, in rf_service_set. */
        {"replicas", "abc", -1, RF_OK, "replicas", "int", "abc"},
        {"group", "blue", -1, RF_OK, "group_name", "text", "blue"},
        {"template", "web", -1, RF_OK, "template_id", "text", "web"},
        {"namespace", "", -1, RF_OK, "namespace", "text", ""},
        {"feature_flag", "on", -1, RF_OK, NULL, NULL, "on"},
        {"timeouts", "soon", -1, RF_OK, NULL, NULL, "soon"},
        {"timeout", "15m", -1, RF_OK, "timeout_s", "int", "900"},
        {"timeout", "600", -1, RF_OK, "timeout_s", "int", "600"},
        {"timeout", "2h", -1, RF_OK, "timeout_s", "int", "7200"},
        {"timeout", "1500ms", -1, RF_OK, "timeout_s", "int", "1"},
        {"timeout", "soon", -1, RF_ERR_PERM, NULL, NULL, "timeout: 'soon" NOT_DURATION},
        {"timeout", "", -1, RF_ERR_PERM, NULL, NULL, "timeout: '" NOT_DURATION},
        {"timeout", "-5", -1, RF_ERR_PERM, NULL, NULL, "timeout: '-5" NOT_DURATION},
        {"timeout", LONG70, -1, RF_ERR_PERM, NULL, NULL, "timeout: '" LONG70 NOT_DURATION},
        {"soak", "30m", -1, RF_OK, "soak_s", "int", "1800"},
        {"soak", "", -1, RF_OK, "soak_s", "int", ""}, /* unsets it */
        {"soak", "a while", -1, RF_ERR_PERM, NULL, NULL, "soak: 'a while" NOT_DURATION},
        {"requires", "test", -1, RF_OK, "requires_env", "text", "test"},
        {"approvals", "2", -1, RF_OK, "approvals", "int", "2"},
        {"timeout", LONG70, 64, RF_ERR_PERM, NULL, NULL, "timeout: '" LONG64 NOT_DURATION},
        {"strategy", "", -1, RF_OK, "strategy", "jsonb", ""},
        {"strategy", "{\"canary\":{\"steps\":[{\"setWeight\":20}]}}", -1, RF_OK, "strategy",
         "jsonb", "{\"canary\":{\"steps\":[{\"setWeight\":20}]}}"},
        {"strategy", "{\"canary\":{\"steps\":\"x\"}}", -1, RF_ERR_PERM, NULL, NULL, "strategy: "},
        {"strategy", "{", -1, RF_ERR_PERM, NULL, NULL, "strategy: "},
    };
    char errstr[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_service_value_t v;
        rf_err_t err;

        strcpy(errstr, "");
        err = rf_service_check(cases[i].key, cases[i].value, cases[i].quote_max, &v, errstr,
                               sizeof(errstr));
        if (err != cases[i].err)
            fail_msg("case %zu (%s=%s): %s '%s'", i, cases[i].key, cases[i].value, rf_err_name(err),
                     errstr);
        if (err != RF_OK) {
            if (strncmp(errstr, cases[i].text, strlen(cases[i].text)) != 0 ||
                (strcmp(cases[i].key, "timeout") == 0 && strcmp(errstr, cases[i].text) != 0))
                fail_msg("case %zu: errstr '%s'", i, errstr);
            continue;
        }
        assert_string_equal(v.key, cases[i].key);
        if (!cases[i].column) {
            assert_null(v.column);
        } else {
            assert_string_equal(v.column, cases[i].column);
            assert_string_equal(v.cast, cases[i].cast);
        }
        if (strcmp(v.text, cases[i].text) != 0)
            fail_msg("case %zu: stores '%s'", i, v.text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
