/* rf_request: the requests and commands relctl and the API publish, checked against the
 * schemas the workers use, and rollback and redo built from an earlier release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rf_request.h"
#include "rf_schema.h"

#define EARLIER "0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a10"

/* A release that rendered: what a rollback or redo starts from. */
static const rf_request_origin_t rendered = {
    .id = EARLIER,
    .service = "web",
    .env = "prod",
    .version = "1.4.2",
    .status = "succeeded",
    .params = "{\"release_id\":\"" EARLIER "\",\"operator\":\"bob\",\"namespace\":\"prod\","
              "\"replicas\":\"3\",\"feature_flag\":\"on\"}",
    .template_version = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
};

static rf_schema_registry_t *reg; /* loaded on first use */

static int free_schemas(void **state)
{
    (void)state;
    rf_schema_registry_destroy(reg);
    return 0;
}

/* Fails unless msg is a valid message of its schema once the publisher set the operator. */
static void assert_publishable(json_t *msg)
{
    const char *src = getenv("RELFLEET_SOURCE_DIR");
    json_t *copy = json_deep_copy(msg);
    char dir[1024], errstr[512] = "";

    if (!reg) {
        reg = rf_schema_registry_new();
        snprintf(dir, sizeof(dir), "%s/schemas", src ? src : RELFLEET_SOURCE_DIR);
        assert_int_equal(rf_schema_registry_load_dir(reg, dir, errstr, sizeof(errstr)), RF_OK);
    }
    if (!json_object_get(copy, "operator"))
        json_object_set_new(copy, "operator", json_string("api-user"));
    if (rf_schema_validate(reg, json_string_value(json_object_get(copy, "schema")), copy, errstr,
                           sizeof(errstr)) != RF_OK)
        fail_msg("not publishable: %s", errstr);
    json_decref(copy);
}

static const char *field(const json_t *msg, const char *key)
{
    return json_string_value(json_object_get(msg, key));
}

static void test_is_id(void **state)
{
    static const struct {
        const char *s;
        int ok;
    } cases[] = {
        {EARLIER, 1},
        {"0B7E6A52-3F6C-4D3E-9A51-5F0C2E8D1A10", 0}, /* PostgreSQL prints lowercase */
        {"0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a1", 0},
        {"0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a100", 0},
        {"0b7e6a523f6c-4d3e-9a51-5f0c2e8d1a10-", 0},
        {"0b7e6a52-3f6c-4d3e-9a51-5f0c2e8d1a1g", 0},
        {"", 0},
        {"web", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (rf_request_is_id(cases[i].s) != cases[i].ok)
            fail_msg("case %zu: '%s'", i, cases[i].s);
}

static void test_deploy(void **state)
{
    json_t *a, *b, *c;

    (void)state;
    a = rf_request_new("deploy", "web", "prod", "1.4.3", NULL, "alice", "hotfix");
    assert_non_null(a);
    assert_string_equal(field(a, "schema"), "relfleet.request.v1");
    assert_string_equal(field(a, "kind"), "deploy");
    assert_string_equal(field(a, "service"), "web");
    assert_string_equal(field(a, "env"), "prod");
    assert_string_equal(field(a, "version"), "1.4.3");
    assert_string_equal(field(a, "operator"), "alice");
    assert_string_equal(field(a, "description"), "hotfix");
    assert_true(json_is_null(json_object_get(a, "parent")));
    assert_true(rf_request_is_id(field(a, "release_id")));
    assert_non_null(field(a, "requested_at"));
    assert_publishable(a);
    /* Left to the publisher: the operator; no description at all, or an empty one. */
    b = rf_request_new("deploy", "web", "prod", "1.4.3", NULL, NULL, NULL);
    assert_null(json_object_get(b, "operator"));
    assert_null(json_object_get(b, "description"));
    assert_string_not_equal(field(a, "release_id"), field(b, "release_id"));
    assert_publishable(b);
    c = rf_request_new("deploy", "web", "prod", "1.4.3", NULL, "alice", "");
    assert_string_equal(field(c, "description"), "");
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static void test_rollback(void **state)
{
    rf_request_origin_t never = rendered;
    char errstr[256];
    json_t *msg = NULL, *params;

    (void)state;
    assert_int_equal(rf_request_rollback(&rendered, "alice", NULL, &msg, errstr, sizeof(errstr)),
                     RF_OK);
    assert_string_equal(field(msg, "kind"), "rollback");
    assert_string_equal(field(msg, "parent"), EARLIER);
    assert_string_equal(field(msg, "version"), "1.4.2");
    assert_string_equal(field(msg, "template_version"), rendered.template_version);
    assert_string_equal(field(msg, "description"), "rollback to version 1.4.2 of release " EARLIER);
    assert_string_equal(field(msg, "operator"), "alice");
    assert_null(json_object_get(msg, "restart"));
    /* The values that belonged to the earlier release alone are not carried over. */
    params = json_object_get(msg, "params");
    assert_int_equal(json_object_size(params), 2);
    assert_string_equal(field(params, "replicas"), "3");
    assert_string_equal(field(params, "feature_flag"), "on");
    assert_publishable(msg);
    json_decref(msg);

    assert_int_equal(
        rf_request_rollback(&rendered, NULL, "back we go", &msg, errstr, sizeof(errstr)), RF_OK);
    assert_string_equal(field(msg, "description"), "back we go");
    assert_null(json_object_get(msg, "operator"));
    json_decref(msg);

    never.params = NULL;
    never.template_version = NULL;
    never.status = "rejected";
    assert_int_equal(rf_request_rollback(&never, "alice", NULL, &msg, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_null(msg);
    assert_string_equal(errstr, "release " EARLIER
                                " never rendered (it ended rejected): nothing to go back to");
}

static void test_redo(void **state)
{
    json_t *msg;

    (void)state;
    msg = rf_request_redo(&rendered, "alice", NULL);
    assert_string_equal(field(msg, "kind"), "redo");
    assert_string_equal(field(msg, "parent"), EARLIER);
    assert_string_equal(field(msg, "version"), "1.4.2");
    assert_string_equal(field(msg, "description"), "redo to version 1.4.2 of release " EARLIER);
    assert_true(json_is_true(json_object_get(msg, "restart")));
    assert_null(json_object_get(msg, "params"));
    assert_null(json_object_get(msg, "template_version"));
    assert_publishable(msg);
    json_decref(msg);
}

static void test_command(void **state)
{
    static const char *const actions[] = {"cancel", "promote", "abort"};
    char cmd_id[RF_MSG_UUID_SIZE];

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        int full = strcmp(actions[i], "promote") == 0;
        json_t *msg = rf_request_command(actions[i], EARLIER, "web", "prod", full ? NULL : "alice",
                                         full, cmd_id);
        assert_string_equal(field(msg, "schema"), "relfleet.command.v1");
        assert_string_equal(field(msg, "action"), actions[i]);
        assert_string_equal(field(msg, "release_id"), EARLIER);
        assert_string_equal(field(msg, "command_id"), cmd_id);
        assert_true(rf_request_is_id(cmd_id));
        assert_int_equal(json_is_true(json_object_get(msg, "full")), full);
        assert_int_equal(json_object_get(msg, "operator") != NULL, !full);
        assert_publishable(msg);
        json_decref(msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_id),    cmocka_unit_test(test_deploy),
        cmocka_unit_test(test_rollback), cmocka_unit_test(test_redo),
        cmocka_unit_test(test_command),
    };
    return cmocka_run_group_tests(tests, NULL, free_schemas);
}
