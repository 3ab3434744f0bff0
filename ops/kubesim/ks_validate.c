/* The API server's validation of kubesim: the v1 conversions, names, labels, ports, required fields (422 Invalid). */
#include "ks_validate.h"
#include "ks_sel.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RBAC_GROUP "rbac.authorization.k8s.io"

/* Where Go's base64.StdEncoding stops decoding s (-1: it decodes): line breaks are skipped. */
static long base64_bad_at(const char *s)
{
    size_t i, n = 0, pad = 0;

    for (i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n' || c == '\r')
            continue;
        if (c == '=') {
            pad++;
        } else if (pad || !(isalnum(c) || c == '+' || c == '/')) {
            return (long)i;
        }
        n++;
    }
    if (pad > 2 || n % 4 != 0)
        return (long)(n - n % 4);
    return -1;
}

/* Decodes the wire form into what is stored, as the v1 conversion does: a Secret's data
 * must be base64 (kept as given) and its stringData is merged into data (base64 of each
 * value, stringData winning) and dropped. Returns 0, or fills resp with 400. */
int ks_convert(ks_kind_t kind, json_t *o, ks_resp_t *resp)
{
    json_t *data, *sd, *v;
    const char *key;
    char msg[256];

    if (kind != KS_SECRET)
        return 0;
    data = json_object_get(o, "data");
    if (data && !json_is_null(data) && !json_is_object(data)) {
        ks_api_status(resp, 400, "BadRequest",
                      "Secret in version \"v1\" cannot be handled as a Secret: data must be an object",
                      NULL);
        return -1;
    }
    json_object_foreach(data, key, v) {
        long at = json_is_string(v) ? base64_bad_at(json_string_value(v)) : 0;
        if (at >= 0) {
            snprintf(msg, sizeof(msg),
                     "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data "
                     "at input byte %ld",
                     at);
            ks_api_status(resp, 400, "BadRequest", msg, NULL);
            return -1;
        }
    }
    sd = json_object_get(o, "stringData");
    if (json_object_size(sd) > 0 && !json_is_object(data)) {
        data = json_object();
        json_object_set_new(o, "data", data);
    }
    json_object_foreach(sd, key, v) {
        const char *val = json_string_value(v);
        size_t len;
        char *enc;
        if (!val) {
            ks_api_status(resp, 400, "BadRequest",
                          "Secret in version \"v1\" cannot be handled as a Secret: stringData "
                          "values must be strings",
                          NULL);
            return -1;
        }
        len = strlen(val);
        enc = malloc(4 * ((len + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)val, (int)len);
        json_object_set_new(data, key, json_string(enc));
        free(enc);
    }
    json_object_del(o, "stringData");
    return 0;
}

typedef struct verr {
    json_t *causes;
    rf_buf_t msg;
} verr_t;

static void verr_add(verr_t *v, const char *field, const char *reason, const char *detail)
{
    json_array_append_new(v->causes, json_pack("{s:s, s:s, s:s}", "reason", reason, "message",
                                               detail, "field", field));
    rf_buf_addf(&v->msg, "%s%s: %s", v->msg.len ? ", " : "", field, detail);
}

static int dns_label_ok(const char *s, int subdomain)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > (subdomain ? 253u : 63u))
        return 0;
    if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' ||
              (subdomain && s[i] == '.')))
            return 0;
    return 1;
}

static void validate_podspec(verr_t *v, const json_t *spec, const char *prefix)
{
    json_t *cts = json_object_get(spec, "containers"), *ct;
    char field[256];
    size_t i;

    if (!json_is_array(cts) || json_array_size(cts) == 0) {
        snprintf(field, sizeof(field), "%s.containers", prefix);
        verr_add(v, field, "FieldValueRequired", "Required value");
        return;
    }
    json_array_foreach(cts, i, ct) {
        if (!ks_jstr(ct, "name") || !*ks_jstr(ct, "name")) {
            snprintf(field, sizeof(field), "%s.containers[%zu].name", prefix, i);
            verr_add(v, field, "FieldValueRequired", "Required value");
        }
        if (!ks_jstr(ct, "image") || !*ks_jstr(ct, "image")) {
            snprintf(field, sizeof(field), "%s.containers[%zu].image", prefix, i);
            verr_add(v, field, "FieldValueRequired", "Required value");
        }
    }
}

static int is_rbac(ks_kind_t kind)
{
    return kind == KS_ROLE || kind == KS_ROLEBINDING || kind == KS_CLUSTERROLE ||
           kind == KS_CLUSTERROLEBINDING;
}

/* RBAC names are path segments: anything but ".", ".." and names with '/' or '%'. */
static void validate_path_segment_name(verr_t *v, const char *name)
{
    char d[600];

    if (!name || !*name) {
        verr_add(v, "metadata.name", "FieldValueRequired",
                 "Required value: name or generateName is required");
        return;
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        snprintf(d, sizeof(d), "Invalid value: \"%s\": may not be '%s'", name, name);
    else if (strchr(name, '/') || strchr(name, '%'))
        snprintf(d, sizeof(d), "Invalid value: \"%s\": may not contain '%c'", name,
                 strchr(name, '/') ? '/' : '%');
    else
        return;
    verr_add(v, "metadata.name", "FieldValueInvalid", d);
}

/* The keys of a ConfigMap's data and binaryData, a Secret's data, and immutability. */
static void validate_config_data(verr_t *v, ks_kind_t kind, const json_t *o, const json_t *old)
{
    static const char *const fields[] = {"data", "binaryData", NULL};
    const char *forbidden = "Forbidden: field is immutable when `immutable` is set";
    char field[400], d[800];

    for (int f = 0; fields[f] && !(kind == KS_SECRET && f > 0); f++) {
        const char *key;
        json_t *val;
        json_object_foreach(json_object_get(o, fields[f]), key, val) {
            size_t n = strlen(key), ok = n > 0 && n <= 253 && strcmp(key, ".") != 0 &&
                                         strcmp(key, "..") != 0;
            for (size_t i = 0; ok && i < n; i++)
                ok = isalnum((unsigned char)key[i]) || key[i] == '-' || key[i] == '_' || key[i] == '.';
            snprintf(field, sizeof(field), "%s[%s]", fields[f], key);
            if (!ok) {
                snprintf(d, sizeof(d),
                         "Invalid value: \"%s\": a valid config key must consist of alphanumeric "
                         "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
                         "'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                         key);
                verr_add(v, field, "FieldValueInvalid", d);
            } else if (f == 1 && json_object_get(json_object_get(o, "data"), key)) {
                snprintf(d, sizeof(d), "Invalid value: \"%s\": duplicate of key present in data", key);
                verr_add(v, field, "FieldValueInvalid", d);
            } else if (kind == KS_CONFIGMAP && !json_is_string(val)) {
                verr_add(v, field, "FieldValueInvalid", "Invalid value: must be a string");
            }
        }
    }
    if (!old)
        return;
    if (kind == KS_SECRET && !json_equal(json_object_get(o, "type"), json_object_get(old, "type"))) {
        snprintf(d, sizeof(d), "Invalid value: \"%s\": field is immutable", ks_jstr(o, "type") ?: "");
        verr_add(v, "type", "FieldValueInvalid", d);
    }
    if (!json_is_true(json_object_get(old, "immutable")))
        return;
    if (!json_is_true(json_object_get(o, "immutable")))
        verr_add(v, "immutable", "FieldValueForbidden", forbidden);
    for (int f = 0; fields[f] && !(kind == KS_SECRET && f > 0); f++) {
        json_t *a = json_object_get(o, fields[f]), *b = json_object_get(old, fields[f]);
        if (json_object_size(a) + json_object_size(b) > 0 && !(a && b && json_equal(a, b)))
            verr_add(v, fields[f], "FieldValueForbidden", forbidden);
    }
}

/* An IntOrString of a PodDisruptionBudget: an integer >= 0 or a percent up to 100%. */
static void validate_pdb_value(verr_t *v, const json_t *val, const char *field)
{
    char d[400];

    if (!val)
        return;
    if (json_is_integer(val)) {
        if (json_integer_value(val) < 0) {
            snprintf(d, sizeof(d), "Invalid value: %lld: must be greater than or equal to 0",
                     (long long)json_integer_value(val));
            verr_add(v, field, "FieldValueInvalid", d);
        }
        return;
    }
    if (json_is_string(val)) {
        const char *s = json_string_value(val);
        size_t n = strlen(s), digits = strspn(s, "0123456789");
        if (n >= 2 && digits == n - 1 && s[n - 1] == '%') {
            if (strtol(s, NULL, 10) > 100) {
                snprintf(d, sizeof(d), "Invalid value: \"%s\": must not be greater than 100%%", s);
                verr_add(v, field, "FieldValueInvalid", d);
            }
            return;
        }
        snprintf(d, sizeof(d),
                 "Invalid value: \"%s\": a valid percent string must be a numeric string followed "
                 "by an ending '%%' (e.g. '1%%',  or '93%%', regex used for validation is '[0-9]+%%')",
                 s);
        verr_add(v, field, "FieldValueInvalid", d);
        return;
    }
    verr_add(v, field, "FieldValueInvalid", "Invalid value: must be an integer or a percent string");
}

static void validate_pdb(verr_t *v, const json_t *o)
{
    json_t *min = ks_jget(o, "spec.minAvailable"), *max = ks_jget(o, "spec.maxUnavailable");

    if (min && max) {
        char *spec = json_dumps(json_object_get(o, "spec"), JSON_COMPACT | JSON_SORT_KEYS);
        char d[1200];
        snprintf(d, sizeof(d), "Invalid value: %s: minAvailable and maxUnavailable cannot be both set",
                 spec ? spec : "{}");
        verr_add(v, "spec", "FieldValueInvalid", d);
        free(spec);
    }
    validate_pdb_value(v, min, "spec.minAvailable");
    validate_pdb_value(v, max, "spec.maxUnavailable");
}

/* The rules of a Role (namespaced: no nonResourceURLs) or a ClusterRole. */
static void validate_rbac_rules(verr_t *v, const json_t *o, int namespaced)
{
    json_t *rule;
    size_t i;
    char field[128];

    json_array_foreach(json_object_get(o, "rules"), i, rule) {
        size_t urls = json_array_size(json_object_get(rule, "nonResourceURLs"));
        size_t groups = json_array_size(json_object_get(rule, "apiGroups"));
        size_t resources = json_array_size(json_object_get(rule, "resources"));
        if (json_array_size(json_object_get(rule, "verbs")) == 0) {
            snprintf(field, sizeof(field), "rules[%zu].verbs", i);
            verr_add(v, field, "FieldValueRequired", "Required value: verbs must contain at least one value");
        }
        snprintf(field, sizeof(field), "rules[%zu].nonResourceURLs", i);
        if (urls && namespaced) {
            verr_add(v, field, "FieldValueInvalid",
                     "Invalid value: namespaced rules cannot apply to non-resource URLs");
        } else if (urls && (groups || resources)) {
            verr_add(v, field, "FieldValueInvalid",
                     "Invalid value: rules cannot apply to both regular resources and non-resource URLs");
        } else if (!urls) {
            if (!groups) {
                snprintf(field, sizeof(field), "rules[%zu].apiGroups", i);
                verr_add(v, field, "FieldValueRequired",
                         "Required value: resource rules must supply at least one api group");
            }
            if (!resources) {
                snprintf(field, sizeof(field), "rules[%zu].resources", i);
                verr_add(v, field, "FieldValueRequired",
                         "Required value: resource rules must supply at least one resource");
            }
        }
    }
}

/* roleRef (immutable) and subjects of a RoleBinding or ClusterRoleBinding. */
static void validate_binding(verr_t *v, ks_kind_t kind, const json_t *o, const json_t *old)
{
    const char *rk = ks_jstr(o, "roleRef.kind") ?: "", *rg = ks_jstr(o, "roleRef.apiGroup") ?: "";
    json_t *s;
    size_t i;
    char field[128], d[600];

    if (!*(ks_jstr(o, "roleRef.name") ?: ""))
        verr_add(v, "roleRef.name", "FieldValueRequired", "Required value");
    if (kind == KS_ROLEBINDING ? strcmp(rk, "Role") != 0 && strcmp(rk, "ClusterRole") != 0
                               : strcmp(rk, "ClusterRole") != 0) {
        snprintf(d, sizeof(d), "Unsupported value: \"%s\": supported values: %s", rk,
                 kind == KS_ROLEBINDING ? "\"ClusterRole\", \"Role\"" : "\"ClusterRole\"");
        verr_add(v, "roleRef.kind", "FieldValueNotSupported", d);
    }
    if (strcmp(rg, RBAC_GROUP) != 0) {
        snprintf(d, sizeof(d), "Unsupported value: \"%s\": supported values: \"" RBAC_GROUP "\"", rg);
        verr_add(v, "roleRef.apiGroup", "FieldValueNotSupported", d);
    }
    if (old && !json_equal(json_object_get(o, "roleRef"), json_object_get(old, "roleRef"))) {
        char *ref = json_dumps(json_object_get(o, "roleRef"), JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(d, sizeof(d), "Invalid value: %s: cannot change roleRef", ref ? ref : "null");
        verr_add(v, "roleRef", "FieldValueInvalid", d);
        free(ref);
    }
    json_array_foreach(json_object_get(o, "subjects"), i, s) {
        const char *sk = ks_jstr(s, "kind") ?: "", *sg = ks_jstr(s, "apiGroup") ?: "";
        int sa = strcmp(sk, "ServiceAccount") == 0;
        if (!sa && strcmp(sk, "User") != 0 && strcmp(sk, "Group") != 0) {
            snprintf(field, sizeof(field), "subjects[%zu].kind", i);
            snprintf(d, sizeof(d),
                     "Unsupported value: \"%s\": supported values: \"ServiceAccount\", \"User\", \"Group\"", sk);
            verr_add(v, field, "FieldValueNotSupported", d);
            continue;
        }
        if (!*(ks_jstr(s, "name") ?: "")) {
            snprintf(field, sizeof(field), "subjects[%zu].name", i);
            verr_add(v, field, "FieldValueRequired", "Required value");
        }
        if (sa ? *sg != '\0' : strcmp(sg, RBAC_GROUP) != 0) {
            snprintf(field, sizeof(field), "subjects[%zu].apiGroup", i);
            snprintf(d, sizeof(d), "Unsupported value: \"%s\": supported values: \"%s\"", sg,
                     sa ? "" : RBAC_GROUP);
            verr_add(v, field, "FieldValueNotSupported", d);
        }
        if (sa && kind == KS_CLUSTERROLEBINDING && !*(ks_jstr(s, "namespace") ?: "")) {
            snprintf(field, sizeof(field), "subjects[%zu].namespace", i);
            verr_add(v, field, "FieldValueRequired", "Required value");
        }
    }
}

/* Returns 0, or fills resp with 422 Invalid. */
int ks_validate(ks_kind_t kind, const json_t *o, const json_t *old, ks_resp_t *resp)
{
    verr_t v;
    const char *name = ks_jstr(o, "metadata.name");
    int result = 0;

    v.causes = json_array();
    rf_buf_init(&v.msg, 0);
    if (is_rbac(kind)) {
        validate_path_segment_name(&v, name);
    } else if (!dns_label_ok(name, kind != KS_SERVICE && kind != KS_NAMESPACE)) {
        char d[600];
        snprintf(d, sizeof(d),
                 "Invalid value: \"%s\": a lowercase RFC 1123 %s must consist of lower case "
                 "alphanumeric characters%s, and must start and end with an alphanumeric "
                 "character",
                 name ? name : "", kind == KS_SERVICE || kind == KS_NAMESPACE ? "label" : "subdomain",
                 kind == KS_SERVICE || kind == KS_NAMESPACE ? " or '-'" : ", '-' or '.'");
        verr_add(&v, "metadata.name", "FieldValueInvalid", d);
    }
    if (kind == KS_DEPLOYMENT || kind == KS_REPLICASET) {
        json_t *sel = ks_jget(o, "spec.selector");
        json_t *labels = ks_jget(o, "spec.template.metadata.labels");
        int64_t replicas = ks_jint(o, "spec.replicas", 1);
        if (!json_is_object(sel) ||
            (json_object_size(json_object_get(sel, "matchLabels")) == 0 &&
             json_array_size(json_object_get(sel, "matchExpressions")) == 0)) {
            verr_add(&v, "spec.selector", "FieldValueRequired", "Required value");
        } else {
            ks_sel_t *s = ks_sel_from_json(sel, 1);
            if (!ks_sel_match(s, labels)) {
                char *lbl = json_dumps(labels ? labels : json_object(), JSON_COMPACT | JSON_SORT_KEYS);
                char d[1024];
                snprintf(d, sizeof(d), "Invalid value: %s: `selector` does not match template `labels`",
                         lbl ? lbl : "{}");
                verr_add(&v, "spec.template.metadata.labels", "FieldValueInvalid", d);
                free(lbl);
            }
            ks_sel_destroy(s);
            if (old && !json_equal(sel, ks_jget(old, "spec.selector")))
                verr_add(&v, "spec.selector", "FieldValueInvalid", "Invalid value: field is immutable");
        }
        if (replicas < 0)
            verr_add(&v, "spec.replicas", "FieldValueInvalid",
                     "Invalid value: must be greater than or equal to 0");
        validate_podspec(&v, ks_jget(o, "spec.template.spec"), "spec.template.spec");
        if (kind == KS_DEPLOYMENT) {
            json_t *ru = ks_jget(o, "spec.strategy.rollingUpdate");
            const char *type = ks_jstr(o, "spec.strategy.type");
            if (type && strcmp(type, "RollingUpdate") != 0 && strcmp(type, "Recreate") != 0)
                verr_add(&v, "spec.strategy.type", "FieldValueNotSupported",
                         "Unsupported value: supported values: \"Recreate\", \"RollingUpdate\"");
            if (ru && ks_ctrl_scaled(json_object_get(ru, "maxSurge"), 100, 1, 0) == 0 &&
                ks_ctrl_scaled(json_object_get(ru, "maxUnavailable"), 100, 0, 0) == 0)
                verr_add(&v, "spec.strategy.rollingUpdate.maxUnavailable", "FieldValueInvalid",
                         "Invalid value: may not be 0 when `maxSurge` is 0");
            if (ks_jint(o, "spec.progressDeadlineSeconds", 600) <= ks_jint(o, "spec.minReadySeconds", 0))
                verr_add(&v, "spec.progressDeadlineSeconds", "FieldValueInvalid",
                         "Invalid value: must be greater than minReadySeconds");
        }
    } else if (kind == KS_POD) {
        validate_podspec(&v, ks_jget(o, "spec"), "spec");
    } else if (kind == KS_CONFIGMAP || kind == KS_SECRET) {
        validate_config_data(&v, kind, o, old);
    } else if (kind == KS_PDB) {
        validate_pdb(&v, o);
    } else if (kind == KS_ROLE || kind == KS_CLUSTERROLE) {
        validate_rbac_rules(&v, o, kind == KS_ROLE);
    } else if (kind == KS_ROLEBINDING || kind == KS_CLUSTERROLEBINDING) {
        validate_binding(&v, kind, o, old);
    } else if (kind == KS_INGRESS) {
        json_t *rule;
        size_t i;
        if (!json_object_get(json_object_get(o, "spec"), "defaultBackend") &&
            json_array_size(ks_jget(o, "spec.rules")) == 0)
            verr_add(&v, "spec", "FieldValueRequired",
                     "Required value: either `defaultBackend` or `rules` must be specified");
        json_array_foreach(ks_jget(o, "spec.rules"), i, rule) {
            json_t *p;
            size_t k;
            json_array_foreach(ks_jget(rule, "http.paths"), k, p) {
                char field[128];
                if (!ks_jstr(p, "pathType")) {
                    snprintf(field, sizeof(field), "spec.rules[%zu].http.paths[%zu].pathType", i, k);
                    verr_add(&v, field, "FieldValueRequired", "Required value: pathType must be specified");
                }
                if (!ks_jstr(p, "backend.service.name") && !ks_jget(p, "backend.resource")) {
                    snprintf(field, sizeof(field), "spec.rules[%zu].http.paths[%zu].backend", i, k);
                    verr_add(&v, field, "FieldValueRequired", "Required value: one backend (service or resource) must be specified");
                }
            }
        }
    } else if (kind == KS_SERVICE) {
        const char *type = ks_jstr(o, "spec.type");
        if (json_array_size(ks_jget(o, "spec.ports")) == 0 &&
            !(type && strcmp(type, "ExternalName") == 0) &&
            !(ks_jstr(o, "spec.clusterIP") && strcmp(ks_jstr(o, "spec.clusterIP"), "None") == 0))
            verr_add(&v, "spec.ports", "FieldValueRequired", "Required value");
    }
    if (json_array_size(v.causes) > 0) {
        char msg[4096], group_kind[64];
        if (*ks_kinds[kind].group)
            snprintf(group_kind, sizeof(group_kind), "%s.%s", ks_kinds[kind].kind, ks_kinds[kind].group);
        else
            snprintf(group_kind, sizeof(group_kind), "%s", ks_kinds[kind].kind);
        if (json_array_size(v.causes) == 1)
            snprintf(msg, sizeof(msg), "%s \"%s\" is invalid: %s", group_kind, name ? name : "",
                     rf_buf_str(&v.msg));
        else
            snprintf(msg, sizeof(msg), "%s \"%s\" is invalid: [%s]", group_kind, name ? name : "",
                     rf_buf_str(&v.msg));
        json_t *det = json_pack("{s:s, s:s, s:O}", "name", name ? name : "", "kind",
                                ks_kinds[kind].kind, "causes", v.causes);
        if (*ks_kinds[kind].group)
            json_object_set_new(det, "group", json_string(ks_kinds[kind].group));
        ks_api_status(resp, 422, "Invalid", msg, det);
        result = -1;
    }
    json_decref(v.causes);
    rf_buf_release(&v.msg);
    return result;
}
