/* rf_schema's OpenAPI dialect and rf_kschema: the built-in schema plus the API conventions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <microhttpd.h>
#include <pthread.h>

#include "rf_kschema.h"
#include "rf_schema.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);

    if (!j)
        fail_msg("bad test JSON '%s': %s", text, jerr.text);
    return j;
}

/* ------------------------------------------------------------------ the dialect */

/* One component schema "T" of a document, a value, the failures expected ("field: message",
 * joined by " | "; "" for valid). */
static const struct dcase {
    const char *schema;
    const char *doc;
    const char *want;
} dcases[] = {
    {"{\"type\":\"integer\",\"format\":\"int32\"}", "2147483647", ""},
    {"{\"type\":\"integer\",\"format\":\"int32\"}", "2147483648", ": number 2147483648 does not fit in int32"},
    {"{\"type\":\"integer\",\"format\":\"int32\"}", "\"80\"", ": expected integer (int32), got string"},
    {"{\"type\":\"integer\",\"format\":\"int64\"}", "1.0", ": expected integer (int64), got number"},
    {"{\"type\":\"number\"}", "1", ""},
    {"{\"type\":\"string\",\"format\":\"int-or-string\"}", "8080", ""},
    {"{\"type\":\"string\",\"format\":\"int-or-string\"}", "\"http\"", ""},
    {"{\"x-kubernetes-int-or-string\":true}", "true", ": expected integer or string, got boolean"},
    {"{\"type\":\"string\"}", "null", ""},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}", "{\"a\":\"x\",\"b\":1}",
     "b: unknown field"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"x-kubernetes-preserve-unknown-fields\":true}",
     "{\"b\":1}", ""},
    {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}}", "{\"b\":\"1\",\"c\":2}",
     "c: expected string, got integer"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"a\"]}", "{\"a\":null}",
     "a: required field missing"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"array\"},"
     "\"c\":{\"type\":\"string\"}},\"required\":[\"d\"]}",
     "{\"a\":\"1\",\"b\":{},\"c\":\"ok\",\"e\":0}",
     "d: required field missing | e: unknown field | a: expected integer, got string | "
     "b: expected array, got object"},
    {"{\"pattern\":\"[a-z]\",\"x-relfleet-message\":\"must contain a letter\"}", "\"8080\"",
     ": must contain a letter"},
    {"{\"type\":\"array\",\"items\":{\"allOf\":[{\"$ref\":\"#/components/schemas/P\"}]}}",
     "[{\"port\":1},{\"port\":\"x\"},{\"port\":2,\"q\":1}]",
     "[1].port: expected integer (int32), got string | [2].q: unknown field"},
};

static void check_errors(const json_t *errors, const char *want, const char *what)
{
    char got[4096] = "";
    size_t used = 0, i;
    const json_t *e;

    json_array_foreach(errors, i, e) {
        used += (size_t)snprintf(got + used, sizeof(got) - used, "%s%s: %s", i ? " | " : "",
                                 json_string_value(json_object_get(e, "field")),
                                 json_string_value(json_object_get(e, "message")));
        if (used >= sizeof(got))
            break;
    }
    if (strcmp(got, want) != 0)
        fail_msg("%s: got '%s', want '%s'", what, got, want);
}

static void openapi_dialect(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
        char text[2048], errstr[512];
        rf_schema_registry_t *reg = rf_schema_registry_new();
        json_t *doc, *value, *errors = json_array(), *wrap;
        rf_err_t err;

        snprintf(text, sizeof(text),
                 "{\"openapi\":\"3.0.0\",\"components\":{\"schemas\":{\"T\":%s,"
                 "\"P\":{\"type\":\"object\",\"properties\":{\"port\":{\"type\":\"integer\","
                 "\"format\":\"int32\"}}}}}}",
                 dcases[i].schema);
        doc = parse(text);
        assert_int_equal(rf_schema_registry_add_openapi(reg, "k8s:t", doc, errstr, sizeof(errstr)),
                         RF_OK);
        wrap = parse("{\"$ref\":\"k8s:t#/components/schemas/T\"}");
        assert_int_equal(rf_schema_registry_add_openapi(reg, "k8s:w", wrap, errstr, sizeof(errstr)),
                         RF_OK);
        value = parse(dcases[i].doc);
        err = rf_schema_validate_all(reg, "k8s:w", value, errors, 20, errstr, sizeof(errstr));
        assert_int_equal(err, *dcases[i].want ? RF_ERR_PERM : RF_OK);
        check_errors(errors, dcases[i].want, dcases[i].schema);
        json_decref(value);
        json_decref(errors);
        json_decref(wrap);
        json_decref(doc);
        rf_schema_registry_destroy(reg);
    }
}

/* The draft-7 entry points are unchanged by the dialect: no unknown-field rule, 1.0 is an
 * integer, null is a type of its own. */
static void draft7_unchanged(void **state)
{
    rf_schema_registry_t *reg = rf_schema_registry_new();
    json_t *s = parse("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}");
    json_t *ok = parse("{\"a\":1.0,\"b\":2}"), *bad = parse("{\"a\":null}");
    char errstr[256];

    (void)state;
    assert_int_equal(rf_schema_registry_add(reg, "s", s, errstr, sizeof(errstr)), RF_OK);
    assert_int_equal(rf_schema_validate(reg, "s", ok, errstr, sizeof(errstr)), RF_OK);
    assert_int_equal(rf_schema_validate(reg, "s", bad, errstr, sizeof(errstr)), RF_ERR_PERM);
    assert_string_equal(errstr, "field 'a': expected integer, got null");
    json_decref(s);
    json_decref(ok);
    json_decref(bad);
    rf_schema_registry_destroy(reg);
}

/* ------------------------------------------------------------------ manifests */

static const char base_deployment[] =
    "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\","
    "\"namespace\":\"shop\",\"labels\":{\"app\":\"web\",\"app.kubernetes.io/version\":\"1.2.3\"}},"
    "\"spec\":{\"replicas\":2,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
    "\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{"
    "\"name\":\"app\",\"image\":\"registry.local/web:1.2.3\",\"imagePullPolicy\":\"IfNotPresent\","
    "\"ports\":[{\"name\":\"http\",\"containerPort\":8080}],"
    "\"env\":[{\"name\":\"MODE\",\"value\":\"prod\"}],"
    "\"resources\":{\"limits\":{\"cpu\":\"500m\",\"memory\":\"512Mi\"},\"requests\":{\"cpu\":1}},"
    "\"readinessProbe\":{\"httpGet\":{\"path\":\"/healthz\",\"port\":\"http\"}},"
    "\"livenessProbe\":{\"tcpSocket\":{\"port\":8080}}}]}}}}";

static const char base_service[] =
    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"},"
    "\"spec\":{\"selector\":{\"app\":\"web\"},\"ports\":[{\"port\":80,\"targetPort\":\"http\"}]}}";

/* A change to a valid manifest: the dotted path (numbers index arrays) set to value (JSON),
 * or removed when value is NULL; then the errors expected ("field: message", " | "). */
static const struct mcase {
    const char *base;
    const char *path;
    const char *value;
    const char *want;
} mcases[] = {
    {base_deployment, NULL, NULL, ""},
    {base_service, NULL, NULL, ""},
    {base_deployment, "spec.template.spec.containers.0.ports.0.containerPort", "\"8080\"",
     "spec.template.spec.containers[0].ports[0].containerPort: expected integer (int32), got string"},
    {base_deployment, "spec.template.spec.containers.0.ports", "{\"containerPort\":80}",
     "spec.template.spec.containers[0].ports: expected array, got object"},
    {base_deployment, "spec.template.spec.containers.0.readinessProbe.httpGet.port", "\"8080\"",
     "spec.template.spec.containers[0].readinessProbe.httpGet.port: must contain at least one letter (a-z)"},
    {base_deployment, "spec.template.spec.containers.0.livenessProbe.tcpSocket.port", "70000",
     "spec.template.spec.containers[0].livenessProbe.tcpSocket.port: must be between 1 and 65535, inclusive"},
    {base_deployment, "spec.template.spec.containers.0.ports.0.containerPort", "0",
     "spec.template.spec.containers[0].ports[0].containerPort: must be between 1 and 65535, inclusive"},
    {base_deployment, "spec.template.spec.containers.0.ports.0.name", "\"http-port-too-long\"",
     "spec.template.spec.containers[0].ports[0].name: must be no more than 15 characters"},
    {base_deployment, "metadata.name", "\"Web_1\"",
     "metadata.name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
     "characters, '-' or '.', and must start and end with an alphanumeric character"},
    {base_service, "metadata.name", "\"1web\"",
     "metadata.name: a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
     "start with an alphabetic character, and end with an alphanumeric character"},
    {base_deployment, "spec.template.spec.containers.0.name", "\"App\"",
     "spec.template.spec.containers[0].name: a lowercase RFC 1123 label must consist of lower "
     "case alphanumeric characters or '-', and must start and end with an alphanumeric character"},
    {base_deployment, "metadata.labels.app\\.kubernetes\\.io/version", "\"1.2.3+build\"",
     "metadata.labels.app.kubernetes.io/version: a valid label must be an empty string or "
     "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
     "alphanumeric character"},
    {base_deployment, "metadata.labels.-bad", "\"x\"",
     "metadata.labels.-bad: name part must consist of alphanumeric characters, '-', '_' or '.', "
     "and must start and end with an alphanumeric character (at most 63), with an optional DNS "
     "subdomain prefix and '/'"},
    {base_deployment, "metadata.labels.version", "3",
     "metadata.labels.version: expected string, got integer"},
    {base_deployment, "spec.selector", NULL, "spec.selector: required field missing"},
    {base_deployment, "spec.template.spec.containers", NULL,
     "spec.template.spec.containers: required field missing"},
    {base_deployment, "spec.template.spec.containers.0.image", NULL,
     "spec.template.spec.containers[0].image: required field missing"},
    {base_deployment, "spec.selector.matchLabels.app", "\"api\"",
     "spec.template.metadata.labels: `selector` does not match template `labels`"},
    {base_deployment, "spec.selector.matchLabels", "{}",
     "spec.selector: empty selector is invalid for a workload"},
    {base_deployment, "spec.bogusField", "1", "spec.bogusField: unknown field"},
    {base_deployment, "spec.template.spec.containers.0.resources.limits.memory", "\"512MB\"",
     "spec.template.spec.containers[0].resources.limits.memory: quantities must match the "
     "regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"},
    {base_deployment, "spec.replicas", "-1", "spec.replicas: must be greater than or equal to 0"},
    {base_deployment, "spec.template.spec.containers.0.env.0.name", "\"1MODE\"",
     "spec.template.spec.containers[0].env[0].name: a valid environment variable name must "
     "consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit"},
    {base_deployment, "spec.template.spec.containers.0.env.0.value", "true",
     "spec.template.spec.containers[0].env[0].value: expected string, got boolean"},
    {base_deployment, "spec.template.spec.containers.0.imagePullPolicy", "\"Sometimes\"",
     "spec.template.spec.containers[0].imagePullPolicy: supported values: \"Always\", "
     "\"IfNotPresent\", \"Never\""},
    {base_deployment, "spec.template.spec.containers.1",
     "{\"name\":\"app\",\"image\":\"side:1\"}",
     "spec.template.spec.containers[1].name: Duplicate value: \"app\""},
    {base_deployment, "metadata.labels", "[\"app\"]", "metadata.labels: expected object, got array"},
    {base_service, "spec.ports.0.port", "0", "spec.ports[0].port: must be between 1 and 65535, inclusive"},
    {base_service, "spec.ports.0.targetPort", "\"-http\"",
     "spec.ports[0].targetPort: must not begin or end with a hyphen"},
    {base_deployment, "spec.template.spec.containers.0.resources.requests.cpu", "0.5", ""},
    {base_deployment, "spec.template.spec.securityContext", "null", ""},
    {base_deployment, "spec.strategy", "{\"type\":\"RollingUpdate\",\"rollingUpdate\":"
     "{\"maxSurge\":\"25%\",\"maxUnavailable\":0}}", ""},
};

/* Sets (or removes) the dotted path in doc; "\." is a dot inside a key. */
static void set_path(json_t *doc, const char *path, const char *value)
{
    char seg[256];
    json_t *cur = doc;
    const char *p = path;

    for (;;) {
        size_t n = 0;
        while (*p && *p != '.') {
            if (p[0] == '\\' && p[1] == '.')
                p++;
            seg[n++] = *p++;
        }
        seg[n] = '\0';
        if (*p == '\0') {
            if (json_is_array(cur)) {
                size_t idx = (size_t)atoi(seg);
                if (!value)
                    json_array_remove(cur, idx);
                else if (idx < json_array_size(cur))
                    json_array_set_new(cur, idx, parse(value));
                else
                    json_array_append_new(cur, parse(value));
            } else if (!value) {
                json_object_del(cur, seg);
            } else {
                json_object_set_new(cur, seg, parse(value));
            }
            return;
        }
        p++;
        cur = json_is_array(cur) ? json_array_get(cur, (size_t)atoi(seg))
                                 : json_object_get(cur, seg);
        if (!cur)
            fail_msg("no '%s' in the base manifest (%s)", seg, path);
    }
}

static void builtin_manifests(void **state)
{
    char errstr[512];
    rf_kschema_t *s = rf_kschema_builtin_new(errstr, sizeof(errstr));

    (void)state;
    assert_non_null(s);
    for (size_t i = 0; i < sizeof(mcases) / sizeof(mcases[0]); i++) {
        json_t *m = parse(mcases[i].base), *errors = json_array();
        rf_err_t err;
        if (mcases[i].path)
            set_path(m, mcases[i].path, mcases[i].value);
        err = rf_kschema_validate(s, NULL, m, errors, 20, errstr, sizeof(errstr));
        check_errors(errors, mcases[i].want, mcases[i].path ? mcases[i].path : "(base)");
        assert_int_equal(err, *mcases[i].want ? RF_ERR_PERM : RF_OK);
        json_decref(errors);
        json_decref(m);
    }
    rf_kschema_destroy(s);
}

/* Errors carry the object, the value and, formatted, the template line. */
static void error_text(void **state)
{
    char errstr[512], text[1024];
    rf_kschema_t *s = rf_kschema_builtin_new(errstr, sizeof(errstr));
    json_t *m = parse(base_deployment), *errors = json_array(), *e;

    (void)state;
    set_path(m, "spec.template.spec.containers.0.ports.0.containerPort", "\"8080\"");
    assert_int_equal(rf_kschema_validate(s, NULL, m, errors, 20, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    e = json_array_get(errors, 0);
    assert_string_equal(json_string_value(json_object_get(e, "object")), "Deployment 'web'");
    assert_string_equal(json_string_value(json_object_get(e, "value")), "8080");
    json_object_set_new(e, "line", json_integer(17));
    rf_kschema_error_text(e, text, sizeof(text));
    assert_string_equal(text, "Deployment 'web' spec.template.spec.containers[0].ports[0]."
                              "containerPort: \"8080\" (template line 17): expected integer "
                              "(int32), got string");
    assert_non_null(strstr(rf_kschema_describe(s), "built-in schema (Kubernetes API 1.22"));
    json_decref(errors);
    json_decref(m);
    rf_kschema_destroy(s);
}

/* A kind the built-in schema lacks is not checked; its cross-field rules still are. */
static void unknown_kinds(void **state)
{
    char errstr[512];
    rf_kschema_t *s = rf_kschema_builtin_new(errstr, sizeof(errstr));
    json_t *m = parse("{\"apiVersion\":\"example.com/v1\",\"kind\":\"Widget\",\"metadata\":"
                      "{\"name\":\"w\"},\"spec\":{\"anything\":1}}");
    json_t *errors = json_array();

    (void)state;
    assert_int_equal(rf_kschema_validate(s, NULL, m, errors, 20, errstr, sizeof(errstr)), RF_OK);
    assert_int_equal(json_array_size(errors), 0);
    json_decref(errors);
    json_decref(m);
    rf_kschema_destroy(s);
}

/* Compiled once: validating a Deployment is cheap (the render stage does it per release). */
static void validation_is_fast(void **state)
{
    char errstr[512];
    rf_kschema_t *s = rf_kschema_builtin_new(errstr, sizeof(errstr));
    json_t *m = parse(base_deployment);
    struct timespec t0, t1;
    double us;
    int n = 2000;

    (void)state;
    json_t *errors = json_array();
    assert_int_equal(rf_kschema_validate(s, NULL, m, errors, 20, errstr, sizeof(errstr)), RF_OK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++)
        assert_int_equal(rf_kschema_validate(s, NULL, m, errors, 20, errstr, sizeof(errstr)),
                         RF_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) / n;
    printf("validation of a Deployment: %.1f us\n", us);
    assert_true(us < 2000); /* generous: a shared, loaded machine; ~20 us when idle */
    json_decref(errors);
    json_decref(m);
    rf_kschema_destroy(s);
}

/* ------------------------------------------------------------------ a cluster */

/* A fake API server: /version, /openapi/v3 (or 404, or 503 for everything) and the apps/v1
 * document of the built-in schema. */
typedef struct fake {
    pthread_mutex_t lock;
    char git[32];
    int mode; /* 0 serve, 1 no /openapi/v3, 2 every answer 503 */
    int version_hits, index_hits, doc_hits;
    char *apps_doc;
} fake_t;

static enum MHD_Result fake_answer(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version,
                                   const char *upload_data, size_t *upload_data_size,
                                   void **con_cls)
{
    fake_t *f = cls;
    char buf[256];
    const char *body = "{\"kind\":\"Status\",\"code\":404}";
    unsigned status = 404;
    struct MHD_Response *resp;
    enum MHD_Result ret;

    (void)method, (void)version, (void)upload_data, (void)upload_data_size, (void)con_cls;
    pthread_mutex_lock(&f->lock);
    if (f->mode == 2) {
        status = 503;
        body = "{\"kind\":\"Status\",\"code\":503}";
    } else if (strcmp(url, "/version") == 0) {
        f->version_hits++;
        snprintf(buf, sizeof(buf), "{\"gitVersion\":\"%s\"}", f->git);
        body = buf;
        status = 200;
    } else if (strcmp(url, "/openapi/v3") == 0 && f->mode == 0) {
        f->index_hits++;
        body = "{\"paths\":{\"apis/apps/v1\":{\"serverRelativeURL\":"
               "\"/openapi/v3/apis/apps/v1?hash=AB\"}}}";
        status = 200;
    } else if (strcmp(url, "/openapi/v3/apis/apps/v1") == 0 && f->mode == 0) {
        f->doc_hits++;
        body = f->apps_doc;
        status = 200;
    }
    resp = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    pthread_mutex_unlock(&f->lock);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static rf_kube_t *fake_client(struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    rf_kubeconfig_t cfg;
    char server[64], err[256];
    rf_kube_t *k;

    snprintf(server, sizeof(server), "http://127.0.0.1:%u", (unsigned)info->port);
    memset(&cfg, 0, sizeof(cfg));
    cfg.server = server;
    cfg.namespace = (char *)"default";
    k = rf_kube_new(&cfg, err, sizeof(err));
    if (!k)
        fail_msg("%s", err);
    rf_kube_set_retry(k, 1, 10, 10);
    return k;
}

static json_t *bad_deployment(void)
{
    json_t *m = parse(base_deployment);
    set_path(m, "spec.replicas", "\"3\"");
    return m;
}

static void cluster_schema_cached_per_version(void **state)
{
    char errstr[1024];
    char path[4096];
    fake_t f;
    struct MHD_Daemon *d;
    rf_kube_t *k;
    rf_kschema_cache_t *cache;
    rf_kschema_t *s = NULL, *again = NULL;
    json_t *all, *m = bad_deployment(), *svc = parse(base_service), *errors = json_array();

    (void)state;
    memset(&f, 0, sizeof(f));
    pthread_mutex_init(&f.lock, NULL);
    snprintf(f.git, sizeof(f.git), "v1.30.1");
    snprintf(path, sizeof(path), "%s/shared/kube/openapi/builtin.json",
             getenv("RELFLEET_SOURCE_DIR") ? getenv("RELFLEET_SOURCE_DIR") : ".");
    all = json_load_file(path, 0, NULL);
    assert_non_null(all);
    f.apps_doc = json_dumps(json_object_get(json_object_get(all, "documents"), "apis/apps/v1"),
                            JSON_COMPACT);
    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_answer, &f,
                         MHD_OPTION_END);
    assert_non_null(d);
    k = fake_client(d);
    cache = rf_kschema_cache_new(0); /* ask /version every time */

    /* the cluster's own documents: index once, apps/v1 on first use, compiled once */
    assert_int_equal(rf_kschema_cache_get(cache, "c", k, &s, errstr, sizeof(errstr)), RF_OK);
    assert_string_equal(rf_kschema_describe(s), "the schema of cluster 'c' (v1.30.1)");
    assert_int_equal(rf_kschema_validate(s, k, m, errors, 10, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    check_errors(errors, "spec.replicas: expected integer (int32), got string", "cluster");
    json_array_clear(errors);
    assert_int_equal(rf_kschema_validate(s, k, m, errors, 10, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    assert_int_equal(f.index_hits, 1);
    assert_int_equal(f.doc_hits, 1);
    /* what the cluster does not serve is an error there (not skipped as built-in) */
    json_array_clear(errors);
    assert_int_equal(rf_kschema_validate(s, k, svc, errors, 10, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    check_errors(errors,
                 "kind: the schema of cluster 'c' (v1.30.1) serves no apiVersion 'v1'", "v1");

    /* same version: the same schema; a new version: read again */
    assert_int_equal(rf_kschema_cache_get(cache, "c", k, &again, errstr, sizeof(errstr)), RF_OK);
    assert_ptr_equal(again, s);
    assert_int_equal(f.index_hits, 1);
    snprintf(f.git, sizeof(f.git), "v1.31.0");
    assert_int_equal(rf_kschema_cache_get(cache, "c", k, &again, errstr, sizeof(errstr)), RF_OK);
    assert_string_equal(rf_kschema_describe(again), "the schema of cluster 'c' (v1.31.0)");
    assert_int_equal(f.index_hits, 2);

    /* unreachable: a cached schema is kept; a cluster never read is RF_ERR_RETRY */
    f.mode = 2;
    assert_int_equal(rf_kschema_cache_get(cache, "c", k, &s, errstr, sizeof(errstr)), RF_OK);
    assert_ptr_equal(s, again);
    assert_int_equal(rf_kschema_cache_get(cache, "other", k, &s, errstr, sizeof(errstr)),
                     RF_ERR_RETRY);

    /* no /openapi/v3: the built-in schema, which says so */
    f.mode = 1;
    assert_int_equal(rf_kschema_cache_get(cache, "old", k, &s, errstr, sizeof(errstr)), RF_OK);
    assert_non_null(strstr(rf_kschema_describe(s), "the built-in schema (Kubernetes API 1.22"));
    assert_non_null(strstr(rf_kschema_describe(s), "cluster 'old' (v1.31.0) serves no /openapi/v3"));
    json_array_clear(errors);
    assert_int_equal(rf_kschema_validate(s, k, m, errors, 10, errstr, sizeof(errstr)),
                     RF_ERR_PERM);
    check_errors(errors, "spec.replicas: expected integer (int32), got string", "built-in");

    rf_kschema_cache_destroy(cache);
    rf_kube_destroy(k);
    MHD_stop_daemon(d);
    free(f.apps_doc);
    json_decref(all);
    json_decref(m);
    json_decref(svc);
    json_decref(errors);
    pthread_mutex_destroy(&f.lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openapi_dialect),   cmocka_unit_test(draft7_unchanged),
        cmocka_unit_test(builtin_manifests), cmocka_unit_test(error_text),
        cmocka_unit_test(unknown_kinds),     cmocka_unit_test(validation_is_fast),
        cmocka_unit_test(cluster_schema_cached_per_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
