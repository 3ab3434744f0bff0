/* Unit tests of the kubeconfig loader against tests/fixtures/kubeconfig. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rf_kubeconfig.h"

#define FIXTURES RELFLEET_SOURCE_DIR "/tests/fixtures/kubeconfig"

static char *read_fixture(const char *rel, size_t *len)
{
    char path[512];
    FILE *f;
    char *data;
    long n;

    snprintf(path, sizeof(path), "%s/%s", FIXTURES, rel);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    data[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return data;
}

static void assert_blob(const char *blob, size_t blob_len, const char *fixture)
{
    size_t len;
    char *want = read_fixture(fixture, &len);

    assert_non_null(blob);
    assert_int_equal(blob_len, len);
    assert_memory_equal(blob, want, len);
    free(want);
}

/* The current context, with every blob in the -data form. */
static void test_current_context_data(void **state)
{
    char err[512] = "";
    rf_kubeconfig_t *cfg = rf_kubeconfig_load(FIXTURES "/config.yaml", NULL, err, sizeof(err));

    (void)state;
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->context, "data");
    assert_string_equal(cfg->cluster, "data-cluster");
    assert_string_equal(cfg->user, "cert-data");
    assert_string_equal(cfg->server, "https://127.0.0.1:6443"); /* trailing slash dropped */
    assert_string_equal(cfg->namespace, "shop");
    assert_blob(cfg->ca_pem, cfg->ca_pem_len, "pki/ca.crt");
    assert_blob(cfg->cert_pem, cfg->cert_pem_len, "pki/client.crt");
    assert_blob(cfg->key_pem, cfg->key_pem_len, "pki/client.key");
    assert_null(cfg->token);
    assert_int_equal(cfg->insecure_skip_tls_verify, 0);
    rf_kubeconfig_destroy(cfg);
}

/* A named context with the file forms, relative to the kubeconfig's folder. */
static void test_named_context_files(void **state)
{
    char err[512] = "";
    rf_kubeconfig_t *cfg = rf_kubeconfig_load(FIXTURES "/config.yaml", "files", err, sizeof(err));

    (void)state;
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->server, "https://localhost:6443");
    assert_string_equal(cfg->namespace, "default");
    assert_blob(cfg->ca_pem, cfg->ca_pem_len, "pki/ca.crt");
    assert_blob(cfg->cert_pem, cfg->cert_pem_len, "pki/client.crt");
    assert_blob(cfg->key_pem, cfg->key_pem_len, "pki/client.key");
    rf_kubeconfig_destroy(cfg);
}

static void test_tokens_and_insecure(void **state)
{
    char err[512] = "";
    rf_kubeconfig_t *cfg;

    (void)state;
    cfg = rf_kubeconfig_load(FIXTURES "/config.yaml", "token", err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->token, "s3cret-token");
    assert_null(cfg->token_file);
    assert_int_equal(cfg->insecure_skip_tls_verify, 1);
    assert_null(cfg->ca_pem);
    rf_kubeconfig_destroy(cfg);

    cfg = rf_kubeconfig_load(FIXTURES "/config.yaml", "token-file", err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->token, "file-token-123");
    assert_string_equal(cfg->token_file, FIXTURES "/token");
    assert_string_equal(cfg->namespace, "payments");
    assert_int_equal(cfg->insecure_skip_tls_verify, 0);
    rf_kubeconfig_destroy(cfg);

    cfg = rf_kubeconfig_load(FIXTURES "/config.yaml", "basic", err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->username, "admin");
    assert_string_equal(cfg->password, "hunter2");
    assert_string_equal(cfg->server, "http://127.0.0.1:8080");
    rf_kubeconfig_destroy(cfg);

    cfg = rf_kubeconfig_load(FIXTURES "/config.yaml", "anonymous", err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->user, "");
    assert_null(cfg->token);
    assert_null(cfg->cert_pem);
    rf_kubeconfig_destroy(cfg);
}

/* $KUBECONFIG (its first entry) when no path is given. */
static void test_kubeconfig_env(void **state)
{
    char err[512] = "";
    rf_kubeconfig_t *cfg;

    (void)state;
    setenv("KUBECONFIG", FIXTURES "/config.yaml:/nonexistent/other", 1);
    cfg = rf_kubeconfig_load(NULL, "token", err, sizeof(err));
    unsetenv("KUBECONFIG");
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->path, FIXTURES "/config.yaml");
    rf_kubeconfig_destroy(cfg);
}

typedef struct error_case {
    const char *file;    /* under error/, or "" for config.yaml */
    const char *context; /* NULL: current */
    const char *want[3]; /* pieces the message must hold */
} error_case_t;

static const error_case_t error_cases[] = {
    {"", "nope", {"has no context 'nope'", "config.yaml'"}},
    {"missing.yaml", NULL, {"cannot read kubeconfig", "missing.yaml", "No such file"}},
    {"no-current-context.yaml", NULL, {"no-current-context.yaml' has no current-context"}},
    {"unknown-cluster.yaml", NULL, {"has no cluster 'elsewhere'", "context 'ctx'"}},
    {"no-server.yaml", NULL, {"cluster 'c'", "has no server"}},
    {"bad-server.yaml", NULL, {"bad server '127.0.0.1:6443'", "not an http(s) url"}},
    {"bad-base64.yaml", NULL, {"bad certificate-authority-data of cluster 'c'", "not base64"}},
    {"not-pem.yaml", NULL, {"bad certificate-authority-data of cluster 'c'", "not PEM"}},
    {"missing-ca-file.yaml",
     NULL,
     {"cannot read certificate-authority '", "error/nowhere/ca.crt' of cluster 'c'",
      "No such file"}},
    {"cert-without-key.yaml", NULL, {"user 'u'", "has a client certificate but no client key"}},
    {"exec-user.yaml", NULL, {"user 'eks'", "uses exec credentials", "not support"}},
    {"unknown-user.yaml", NULL, {"has no user 'ghost'"}},
    {"quoted-insecure.yaml", NULL, {"bad insecure-skip-tls-verify of cluster 'c'"}},
    {"ca-and-insecure.yaml", NULL, {"both a certificate authority and insecure-skip-tls-verify"}},
    {"missing-token-file.yaml",
     NULL,
     {"cannot read tokenFile '/nonexistent/token' of user 'u'", "No such file"}},
    {"not-yaml.yaml", NULL, {"cannot parse kubeconfig", "not-yaml.yaml", "line"}},
};

static void test_errors(void **state)
{
    char path[512];
    char err[512];
    rf_kubeconfig_t *cfg;
    size_t i;
    int j;

    (void)state;
    for (i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        const error_case_t *c = &error_cases[i];

        if (c->file[0])
            snprintf(path, sizeof(path), "%s/error/%s", FIXTURES, c->file);
        else
            snprintf(path, sizeof(path), "%s/config.yaml", FIXTURES);
        err[0] = '\0';
        cfg = rf_kubeconfig_load(path, c->context, err, sizeof(err));
        if (cfg)
            fail_msg("'%s' loaded, want an error", c->file);
        for (j = 0; j < 3 && c->want[j]; j++) {
            if (!strstr(err, c->want[j]))
                fail_msg("'%s': error '%s' lacks '%s'", c->file, err, c->want[j]);
        }
    }
}

static void test_in_cluster(void **state)
{
    char dir[] = "/tmp/rf-incluster-XXXXXX";
    char path[600];
    char err[512] = "";
    rf_kubeconfig_t *cfg;
    FILE *f;

    (void)state;
    unsetenv("KUBERNETES_SERVICE_HOST");
    cfg = rf_kubeconfig_in_cluster(NULL, err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "not running in a cluster"));

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/token", dir);
    f = fopen(path, "w");
    fputs("sa-token\n", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/ca.crt", dir);
    f = fopen(path, "w");
    fputs("-----BEGIN CERTIFICATE-----\n", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/namespace", dir);
    f = fopen(path, "w");
    fputs("relfleet", f);
    fclose(f);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    cfg = rf_kubeconfig_in_cluster(dir, err, sizeof(err));
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->server, "https://[fd00::1]:443");
    assert_string_equal(cfg->token, "sa-token");
    assert_string_equal(cfg->namespace, "relfleet");
    assert_non_null(cfg->ca_pem);
    rf_kubeconfig_destroy(cfg);
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_current_context_data),
        cmocka_unit_test(test_named_context_files),
        cmocka_unit_test(test_tokens_and_insecure),
        cmocka_unit_test(test_kubeconfig_env),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_in_cluster),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
