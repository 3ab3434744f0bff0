/* Request signatures against vectors computed by Python (hmac, json.dumps sorted, compact),
 * verification refusals, roles, and the registry repository of an image reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rf_auth.h"
#include "rf_registry.h"

/* Each vector: a message as a sender wrote it, its canonical form and signature as
 * Python computes them (tests/blackbox/test_operations.py signs the same way). */
static const struct {
    const char *message, *canonical, *key;
    int64_t timestamp;
    const char *signature;
} vectors[] = {
    {"{\"schema\": \"relfleet.request.v1\", \"release_id\": \"0b7c2a4e-1f0d-4c1e-9a55-"
     "2b8f1d9e0c11\", \"service\": \"web\", \"env\": \"prod\", \"version\": \"1.4.2\", "
     "\"kind\": \"deploy\", \"operator\": \"alice\", \"requested_at\": "
     "\"2026-11-23T23:10:05.123Z\", \"description\": \"caf\\u00e9 \\u2603 \\ud83d\\ude00 "
     "\\\"q\\\" \\\\ /\\n\\t\", \"params\": {\"replicas\": 3, \"flag\": true, \"z\": \"1\"}}",
     "{\"description\":\"caf\\u00e9 \\u2603 \\ud83d\\ude00 \\\"q\\\" \\\\ /\\n\\t\",\"env\":"
     "\"prod\",\"kind\":\"deploy\",\"operator\":\"alice\",\"params\":{\"flag\":true,"
     "\"replicas\":3,\"z\":\"1\"},\"release_id\":\"0b7c2a4e-1f0d-4c1e-9a55-2b8f1d9e0c11\","
     "\"requested_at\":\"2026-11-23T23:10:05.123Z\",\"schema\":\"relfleet.request.v1\","
     "\"service\":\"web\",\"version\":\"1.4.2\"}",
     "k1-secret-key-0123456789abcdef", 1700000000123,
     "417c508da11b4964e53e080867791a06deb90f3ae91d0a955b30934e4b724892"},
    {"{\"schema\": \"relfleet.command.v1\", \"command_id\": \"1b7c2a4e-1f0d-4c1e-9a55-"
     "2b8f1d9e0c11\", \"release_id\": \"0b7c2a4e-1f0d-4c1e-9a55-2b8f1d9e0c11\", \"service\": "
     "\"web\", \"env\": \"prod\", \"action\": \"cancel\", \"operator\": \"bob\", \"issued_at\": "
     "\"2026-11-23T23:10:05.123Z\", \"auth\": {\"key_id\": \"old\", \"timestamp\": 1, "
     "\"signature\": \"00000000000000000000000000000000\"}}",
     "{\"action\":\"cancel\",\"command_id\":\"1b7c2a4e-1f0d-4c1e-9a55-2b8f1d9e0c11\",\"env\":"
     "\"prod\",\"issued_at\":\"2026-11-23T23:10:05.123Z\",\"operator\":\"bob\",\"release_id\":"
     "\"0b7c2a4e-1f0d-4c1e-9a55-2b8f1d9e0c11\",\"schema\":\"relfleet.command.v1\","
     "\"service\":\"web\"}",
     "another key", 0, "bb91ba0a5d11cdfb70d9ec17486411b824329d45f59cb589d5b060dd0591c5eb"},
};

static void test_canonical_and_signature_match_python(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        json_t *msg = json_loads(vectors[i].message, 0, NULL);
        char *canonical = rf_auth_canonical(msg);
        char sig[65];

        assert_non_null(msg);
        assert_string_equal(canonical, vectors[i].canonical);
        rf_auth_signature(vectors[i].key, vectors[i].timestamp, canonical, sig);
        assert_string_equal(sig, vectors[i].signature);
        free(canonical);
        json_decref(msg);
    }
    assert_null(rf_auth_canonical(NULL));
}

static void test_sign_then_verify_and_refusals(void **state)
{
    static const struct {
        const char *what;
        const char *key;     /* verifying key */
        int64_t received_ms; /* arrival, against timestamp 1000000 */
        const char *field;   /* changed after signing (NULL: none) */
        const char *reason;  /* NULL: accepted */
    } cases[] = {
        {"good", "k", 1000000, NULL, NULL},
        {"late within window", "k", 1000000 + 300000, NULL, NULL},
        {"early within window", "k", 1000000 - 300000, NULL, NULL},
        {"expired", "k", 1000000 + 300001, NULL, "expired signature"},
        {"from the future", "k", 1000000 - 300001, NULL, "expired signature"},
        {"other key", "K", 1000000, NULL, "bad signature by key 'me'"},
        {"tampered", "k", 1000000, "version", "bad signature by key 'me'"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *msg = json_pack("{s:s, s:s, s:s}", "service", "web", "version", "1", "operator",
                                "me");
        char reason[256] = "", errstr[256];
        rf_err_t err;

        assert_int_equal(rf_auth_sign(msg, "me", "k", 1000000, errstr, sizeof(errstr)), RF_OK);
        if (cases[i].field)
            json_object_set_new(msg, cases[i].field, json_string("2"));
        err = rf_auth_verify(msg, cases[i].key, cases[i].received_ms, 300, reason,
                             sizeof(reason));
        if (!cases[i].reason) {
            assert_int_equal(err, RF_OK);
        } else {
            assert_int_equal(err, RF_ERR_PERM);
            if (!strstr(reason, cases[i].reason))
                fail_msg("%s: reason '%s' lacks '%s'", cases[i].what, reason, cases[i].reason);
        }
        json_decref(msg);
    }
}

static void test_unsigned_and_malformed_auth_refused(void **state)
{
    static const char *const messages[] = {
        "{\"service\": \"web\"}",
        "{\"service\": \"web\", \"auth\": {\"key_id\": \"me\", \"timestamp\": 1}}",
        "{\"service\": \"web\", \"auth\": {\"key_id\": \"me\", \"timestamp\": \"1\","
        " \"signature\": \"00\"}}",
        "{\"service\": \"web\", \"auth\": {\"key_id\": \"me\", \"timestamp\": 1,"
        " \"signature\": \"00\"}}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
        json_t *msg = json_loads(messages[i], 0, NULL);
        char reason[256];
        assert_int_equal(rf_auth_verify(msg, "k", 1, 300, reason, sizeof(reason)), RF_ERR_PERM);
        json_decref(msg);
    }
}

static void test_roles_and_token_hash(void **state)
{
    char hash[65];

    (void)state;
    assert_int_equal(rf_auth_role_parse("viewer"), RF_ROLE_VIEWER);
    assert_int_equal(rf_auth_role_parse("releaser"), RF_ROLE_RELEASER);
    assert_int_equal(rf_auth_role_parse("admin"), RF_ROLE_ADMIN);
    assert_int_equal(rf_auth_role_parse("approver"), RF_ROLE_APPROVER);
    assert_string_equal(rf_auth_role_name(RF_ROLE_APPROVER), "approver");
    assert_int_equal(rf_auth_role_parse("root"), RF_ROLE_NONE);
    assert_int_equal(rf_auth_role_parse(NULL), RF_ROLE_NONE);
    assert_true(RF_ROLE_VIEWER < RF_ROLE_RELEASER && RF_ROLE_RELEASER < RF_ROLE_ADMIN);
    assert_string_equal(rf_auth_role_name(RF_ROLE_RELEASER), "releaser");
    assert_null(rf_auth_role_name(RF_ROLE_NONE));
    rf_auth_token_hash("abc", hash);
    assert_string_equal(hash, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_registry_repository(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"registry.example.com/team/web", "team/web"},
        {"127.0.0.1:5000/team/web", "team/web"},
        {"localhost/web", "web"},
        {"team/web", "team/web"},
        {"web", "web"},
        {"harbor.local:443/p/a/b", "p/a/b"},
    };
    char out[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_registry_repository(cases[i].in, out, sizeof(out));
        assert_string_equal(out, cases[i].out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_and_signature_match_python),
        cmocka_unit_test(test_sign_then_verify_and_refusals),
        cmocka_unit_test(test_unsigned_and_malformed_auth_refused),
        cmocka_unit_test(test_roles_and_token_hash),
        cmocka_unit_test(test_registry_repository),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
