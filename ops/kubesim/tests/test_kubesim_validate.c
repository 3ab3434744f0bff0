/* Unit tests of kubesim's API-server validation: the name, label and port checks, the 422 rules, and the schema decoder's 400s and unknown fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ks_schema.h"
#include "ks_validate.h"

#include <stdlib.h>
#include <string.h>

static void test_name_label_and_port_checks(void **state)
{
    static const struct {
        const char *(*check)(const char *);
        const char *value;
        const char *want; /* NULL: valid; else the start of the reason */
    } cases[] = {
        {ks_check_port_name, "http", NULL},
        {ks_check_port_name, "http-8080", NULL},
        {ks_check_port_name, "8080", "must contain at least one letter (a-z)"},
        {ks_check_port_name, "", "must contain at least one letter (a-z)"},
        {ks_check_port_name, "HTTP", "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"},
        {ks_check_port_name, "metrics-exporter-http", "must be no more than 15 characters"},
        {ks_check_port_name, "a--b", "must not contain consecutive hyphens"},
        {ks_check_port_name, "-http", "must not begin or end with a hyphen"},
        {ks_check_label_value, "", NULL},
        {ks_check_label_value, "My_value.1", NULL},
        {ks_check_label_value, "a b", "a valid label must be an empty string"},
        {ks_check_label_value, "-a", "a valid label must be an empty string"},
        {ks_check_label_value, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "must be no more than 63 characters"},
        {ks_check_qualified_name, "app", NULL},
        {ks_check_qualified_name, "relfleet.io/release", NULL},
        {ks_check_qualified_name, "team name", "name part must consist of alphanumeric characters"},
        {ks_check_qualified_name, "Relfleet.IO/x", "prefix part a lowercase RFC 1123 subdomain"},
        {ks_check_qualified_name, "/x", "prefix part must be non-empty"},
        {ks_check_qualified_name, "a/b/c", "name part must consist"},
        {ks_check_env_name, "MY_ENV.NAME-1", NULL},
        {ks_check_env_name, "1BAD", "a valid environment variable name"},
        {ks_check_env_name, "A B", "a valid environment variable name"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = cases[i].check(cases[i].value);
        if (!cases[i].want) {
            if (got)
                fail_msg("'%s': want valid, got '%s'", cases[i].value, got);
        } else if (!got || strncmp(got, cases[i].want, strlen(cases[i].want)) != 0) {
            fail_msg("'%s': want '%s', got '%s'", cases[i].value, cases[i].want, got ? got : "(valid)");
        }
    }
    assert_null(ks_check_dns1123("web-1", 0));
    assert_non_null(ks_check_dns1123("web.v2", 0));
    assert_null(ks_check_dns1123("web.v2", 1));
    assert_non_null(ks_check_dns1123("Web", 1));
    assert_string_equal(ks_check_dns1123("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0),
                        "must be no more than 63 characters");
}

#define DEP_HEAD "{\"metadata\":{\"name\":\"web\"},\"spec\":{"
#define SEL "\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
#define TPL(containers) "\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":" containers "}}}}"
#define CT(extra) "[{\"name\":\"app\",\"image\":\"nginx\"" extra "}]"

static void test_validation_rules_answer_422_with_the_field(void **state)
{
    static const struct {
        ks_kind_t kind;
        const char *json;
        const char *field;   /* of the first cause, NULL: valid */
        const char *message; /* the Status message */
    } cases[] = {
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL(CT("")), NULL, NULL},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL(CT(",\"ports\":[{\"containerPort\":8080,\"name\":\"http\"}],\"readinessProbe\":{\"httpGet\":{\"port\":\"http\"}}")), NULL, NULL},
        {KS_DEPLOYMENT, DEP_HEAD TPL(CT("")), "spec.selector",
         "Deployment.apps \"web\" is invalid: [spec.selector: Required value, spec.template.metadata.labels: "
         "Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`]"},
        {KS_DEPLOYMENT, DEP_HEAD "\"selector\":{\"matchLabels\":{\"app\":\"api\"}}," TPL(CT("")),
         "spec.template.metadata.labels",
         "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: "
         "map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"},
        {KS_DEPLOYMENT, DEP_HEAD SEL "\"replicas\":-2," TPL(CT("")), "spec.replicas",
         "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -2: must be greater than or equal to 0"},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL("[]"), "spec.template.spec.containers",
         "Deployment.apps \"web\" is invalid: spec.template.spec.containers: Required value"},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL("[{\"name\":\"app\"}]"), "spec.template.spec.containers[0].image",
         "Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].image: Required value"},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL(CT(",\"ports\":[{\"containerPort\":0}]")),
         "spec.template.spec.containers[0].ports[0].containerPort",
         "Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].ports[0].containerPort: "
         "Invalid value: 0: must be between 1 and 65535, inclusive"},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL(CT(",\"livenessProbe\":{\"tcpSocket\":{\"port\":65536}}")),
         "spec.template.spec.containers[0].livenessProbe.tcpSocket.port",
         "Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].livenessProbe.tcpSocket.port: "
         "Invalid value: 65536: must be between 1 and 65535, inclusive"},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL(CT(",\"readinessProbe\":{\"httpGet\":{\"port\":\"8080\"}}")),
         "spec.template.spec.containers[0].readinessProbe.httpGet.port",
         "Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].readinessProbe.httpGet.port: "
         "Invalid value: \"8080\": must contain at least one letter (a-z)"},
        {KS_POD, "{\"metadata\":{\"name\":\"p\",\"labels\":{\"a\":\"b c\"}},\"spec\":{\"containers\":" CT("") "}}",
         "metadata.labels", NULL},
        {KS_SERVICE, "{\"metadata\":{\"name\":\"web\"},\"spec\":{\"ports\":[{\"port\":80},{\"port\":81,\"name\":\"b\"}]}}",
         "spec.ports[0].name", "Service \"web\" is invalid: spec.ports[0].name: Required value"},
        {KS_SERVICE, "{\"metadata\":{\"name\":\"web\"},\"spec\":{\"ports\":[{\"port\":80,\"targetPort\":\"Web\"}]}}",
         "spec.ports[0].targetPort", NULL},
        {KS_NAMESPACE, "{\"metadata\":{\"name\":\"team.a\"}}", "metadata.name", NULL},
        {KS_POD, "{\"metadata\":{\"name\":\"p\"},\"spec\":{\"initContainers\":" CT("") ",\"containers\":" CT("") "}}",
         "spec.containers[0].name", "Pod \"p\" is invalid: spec.containers[0].name: Duplicate value: \"app\""},
        {KS_POD, "{\"metadata\":{\"name\":\"p\"},\"spec\":{\"volumes\":[{\"name\":\"data\"}],\"containers\":"
         CT(",\"volumeMounts\":[{\"name\":\"data\"},{\"name\":\"logs\"}],\"env\":[{\"name\":\"A_B.c-1\"}]") "}}",
         "spec.containers[0].volumeMounts[1].name",
         "Pod \"p\" is invalid: spec.containers[0].volumeMounts[1].name: Not found: \"logs\""},
        {KS_DEPLOYMENT, DEP_HEAD SEL "\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"restartPolicy\":\"OnFailure\",\"containers\":" CT("") "}}}}",
         "spec.template.spec.restartPolicy", NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o = json_loads(cases[i].json, 0, NULL), *st;
        ks_resp_t resp;
        int rc;
        if (!o)
            fail_msg("case %zu does not parse", i);
        memset(&resp, 0, sizeof(resp));
        rf_buf_init(&resp.body, 0);
        rc = ks_validate(cases[i].kind, o, NULL, &resp);
        if (!cases[i].field) {
            if (rc != 0)
                fail_msg("case %zu: want valid, got %s", i, rf_buf_str(&resp.body));
        } else {
            st = json_loads(rf_buf_str(&resp.body), 0, NULL);
            if (rc == 0 || resp.status != 422)
                fail_msg("case %zu: want 422, got %d", i, resp.status);
            assert_string_equal(json_string_value(json_object_get(st, "reason")), "Invalid");
            assert_string_equal(json_string_value(json_object_get(json_array_get(
                                    json_object_get(json_object_get(st, "details"), "causes"), 0), "field")),
                                cases[i].field);
            if (cases[i].message)
                assert_string_equal(json_string_value(json_object_get(st, "message")), cases[i].message);
            json_decref(st);
        }
        rf_buf_release(&resp.body);
        json_decref(o);
    }
}

static void test_decoder_type_errors_and_unknown_fields(void **state)
{
    static const struct {
        ks_kind_t kind;
        const char *json;
        const char *error; /* "" : none */
        const char *field;
        const char *unknown; /* the unknown paths, comma separated */
    } cases[] = {
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL(CT(",\"ports\":[{\"containerPort\":8080}]")), "", "", ""},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL(CT(",\"ports\":[{\"containerPort\":\"8080\"}]")),
         "json: cannot unmarshal string into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32",
         "spec.template.spec.containers[0].ports[0].containerPort", ""},
        {KS_DEPLOYMENT, DEP_HEAD SEL "\"replicas\":1.5," TPL(CT("")),
         "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.replicas of type int32",
         "spec.replicas", ""},
        {KS_DEPLOYMENT, DEP_HEAD SEL "\"replicas\":4294967296," TPL(CT("")),
         "json: cannot unmarshal number 4294967296 into Go struct field DeploymentSpec.spec.replicas of type int32",
         "spec.replicas", ""},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL("{\"name\":\"app\"}"),
         "json: cannot unmarshal object into Go struct field PodSpec.spec.template.spec.containers of type []v1.Container",
         "spec.template.spec.containers", ""},
        {KS_DEPLOYMENT, DEP_HEAD SEL TPL("[\"app\"]"),
         "json: cannot unmarshal string into Go struct field PodSpec.spec.template.spec.containers of type v1.Container",
         "spec.template.spec.containers[0]", ""},
        {KS_DEPLOYMENT, DEP_HEAD SEL "\"paused\":\"yes\"," TPL(CT("")),
         "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.paused of type bool", "spec.paused", ""},
        {KS_POD, "{\"metadata\":{\"name\":\"p\",\"labels\":{\"a\":1}}}",
         "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string",
         "metadata.labels[a]", ""},
        {KS_POD, "{\"spec\":{\"terminationGracePeriodSeconds\":99999999999,\"containers\":[{\"resources\":{\"limits\":{\"cpu\":\"500m\",\"memory\":1}}}]}}",
         "", "", ""},
        {KS_POD, "{\"spec\":{\"containers\":[{\"resources\":{\"limits\":{\"memory\":\"1 GB\"}}}]}}",
         "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
         "spec.containers[0].resources.limits[memory]", ""},
        {KS_SERVICE, "{\"spec\":{\"ports\":[{\"port\":80,\"targetPort\":\"http\"},{\"port\":81,\"targetPort\":true}]}}",
         "json: cannot unmarshal bool into Go struct field ServicePort.spec.ports.targetPort of type int32",
         "spec.ports[1].targetPort", ""},
        {KS_DEPLOYMENT, "{\"metadata\":{\"name\":\"a\",\"x\":1},\"spec\":{\"bogusField\":1,\"template\":{\"spec\":{\"containers\":[{\"name\":\"a\",\"bogus\":2}]}}}}",
         "", "", "metadata.x,spec.bogusField,spec.template.spec.containers[0].bogus"},
        {KS_CONFIGMAP, "{\"data\":{\"a\":\"b\"},\"binaryData\":{\"c\":\"ZA==\"},\"immutable\":true,\"spec\":{}}", "", "", "spec"},
    };
    const ks_schema_t *s = ks_schema_builtin();
    (void)state;
    assert_non_null(s);
    assert_string_equal(ks_schema_source(s), "python3-kubernetes 22.6.0 (API 1.22)");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o = json_loads(cases[i].json, 0, NULL), *p;
        ks_decode_t d;
        char unknown[512] = "";
        size_t k;
        if (!o)
            fail_msg("case %zu does not parse", i);
        ks_schema_decode(s, cases[i].kind, o, &d);
        if (strcmp(d.error, cases[i].error) != 0)
            fail_msg("case %zu: want '%s', got '%s'", i, cases[i].error, d.error);
        assert_string_equal(d.error_field, cases[i].field);
        json_array_foreach(d.unknown, k, p) {
            size_t n = strlen(unknown);
            snprintf(unknown + n, sizeof(unknown) - n, "%s%s", k ? "," : "", json_string_value(p));
        }
        assert_string_equal(unknown, cases[i].unknown);
        if (*cases[i].unknown) {
            /* unknown fields are dropped */
            char *txt = json_dumps(o, JSON_COMPACT);
            assert_null(strstr(txt, "bogus"));
            free(txt);
        }
        json_decref(d.unknown);
        json_decref(o);
    }
}

static void test_openapi_documents_come_from_the_schema(void **state)
{
    const ks_schema_t *s = ks_schema_builtin();
    json_t *apps = ks_schema_openapi_v3(s, "apps"), *v2 = ks_schema_openapi_v2(s);
    json_t *spec = json_object_get(apps, "io.k8s.api.apps.v1.DeploymentSpec");
    json_t *replicas = json_object_get(json_object_get(spec, "properties"), "replicas");
    (void)state;
    assert_non_null(replicas);
    assert_string_equal(json_string_value(json_object_get(replicas, "format")), "int32");
    assert_non_null(strstr(json_string_value(json_object_get(replicas, "description")), "Number of desired pods"));
    assert_non_null(json_object_get(apps, "io.k8s.api.core.v1.Container"));
    assert_non_null(json_object_get(apps, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    assert_null(json_object_get(apps, "io.k8s.api.core.v1.Service"));
    assert_non_null(json_object_get(v2, "io.k8s.api.core.v1.Service"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(
                            json_object_get(v2, "io.k8s.api.apps.v1.DeploymentSpec"), "properties"), "template"), "$ref")),
                        "#/definitions/io.k8s.api.core.v1.PodTemplateSpec");
    json_decref(apps);
    json_decref(v2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_label_and_port_checks),
        cmocka_unit_test(test_validation_rules_answer_422_with_the_field),
        cmocka_unit_test(test_decoder_type_errors_and_unknown_fields),
        cmocka_unit_test(test_openapi_documents_come_from_the_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
