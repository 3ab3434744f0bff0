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

#define DNS1123_LABEL_MSG                                                                          \
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "  \
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "    \
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
#define DNS1123_SUBDOMAIN_MSG                                                                      \
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "  \
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used " \
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"

static int dns_chars_ok(const char *s, size_t n, int subdomain)
{
    if (n == 0 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' ||
              (subdomain && s[i] == '.')))
            return 0;
    return 1;
}

/* k8s.io/apimachinery's IsDNS1123Label / IsDNS1123Subdomain: NULL, or why not. */
const char *ks_check_dns1123(const char *s, int subdomain)
{
    size_t n = s ? strlen(s) : 0;

    if (n > (subdomain ? 253u : 63u))
        return subdomain ? "must be no more than 253 characters" : "must be no more than 63 characters";
    if (!dns_chars_ok(s ? s : "", n, subdomain))
        return subdomain ? DNS1123_SUBDOMAIN_MSG : DNS1123_LABEL_MSG;
    return NULL;
}

/* IsValidPortName (IANA_SVC_NAME): NULL, or the first reason it is not. */
const char *ks_check_port_name(const char *s)
{
    size_t n = strlen(s), letters = 0;

    if (n > 15)
        return "must be no more than 15 characters";
    for (size_t i = 0; i < n; i++) {
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
            return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)";
        letters += islower((unsigned char)s[i]) != 0;
    }
    if (strstr(s, "--"))
        return "must not contain consecutive hyphens";
    if (n == 0 || letters == 0)
        return "must contain at least one letter (a-z)";
    if (s[0] == '-' || s[n - 1] == '-')
        return "must not begin or end with a hyphen";
    return NULL;
}

/* IsValidLabelValue: NULL, or why not. */
const char *ks_check_label_value(const char *s)
{
    size_t n = strlen(s);

    if (n > 63)
        return "must be no more than 63 characters";
    if (n == 0)
        return NULL;
    if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        goto bad;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            goto bad;
    return NULL;
bad:
    return "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
           "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
           "'my_value',  or '12345', regex used for validation is "
           "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
}

/* IsQualifiedName (a label or annotation key): NULL, or why not. */
const char *ks_check_qualified_name(const char *s)
{
    const char *slash = strchr(s, '/'), *name = slash ? slash + 1 : s;
    size_t n = strlen(name);

    if (slash) {
        size_t pn = (size_t)(slash - s);
        if (pn == 0)
            return "prefix part must be non-empty";
        if (pn > 253)
            return "prefix part must be no more than 253 characters";
        if (!dns_chars_ok(s, pn, 1))
            return "prefix part " DNS1123_SUBDOMAIN_MSG;
        if (strchr(name, '/'))
            goto bad;
    }
    if (n == 0)
        return slash ? "name part must be non-empty"
                     : "name part must be non-empty";
    if (n > 63)
        return "name part must be no more than 63 characters";
    if (!isalnum((unsigned char)name[0]) || !isalnum((unsigned char)name[n - 1]))
        goto bad;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '-' && name[i] != '_' && name[i] != '.')
            goto bad;
    return NULL;
bad:
    return "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
           "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
           "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
}

static void verr_invalid_str(verr_t *v, const char *field, const char *value, const char *why)
{
    rf_buf_t d;

    rf_buf_init(&d, 0);
    rf_buf_addf(&d, "Invalid value: \"%s\": %s", value, why);
    verr_add(v, field, "FieldValueInvalid", rf_buf_str(&d));
    rf_buf_release(&d);
}

static void verr_invalid_int(verr_t *v, const char *field, long long value, const char *why)
{
    char d[300];

    snprintf(d, sizeof(d), "Invalid value: %lld: %s", value, why);
    verr_add(v, field, "FieldValueInvalid", d);
}

/* The keys and values of a labels map (metadata.labels, a selector's matchLabels). */
static void validate_labels(verr_t *v, const json_t *labels, const char *field)
{
    const char *key, *why;
    json_t *val;

    json_object_foreach((json_t *)labels, key, val) {
        if ((why = ks_check_qualified_name(key)) != NULL)
            verr_invalid_str(v, field, key, why);
        if (json_is_string(val) && (why = ks_check_label_value(json_string_value(val))) != NULL)
            verr_invalid_str(v, field, json_string_value(val), why);
    }
}

#define PORT_RANGE_MSG "must be between 1 and 65535, inclusive"

/* ValidatePortNumOrName: an IntOrString that names or numbers a port. */
static void validate_port_num_or_name(verr_t *v, const json_t *port, const char *field)
{
    const char *why;

    if (json_is_integer(port)) {
        if (json_integer_value(port) < 1 || json_integer_value(port) > 65535)
            verr_invalid_int(v, field, (long long)json_integer_value(port), PORT_RANGE_MSG);
    } else if (json_is_string(port)) {
        if ((why = ks_check_port_name(json_string_value(port))) != NULL)
            verr_invalid_str(v, field, json_string_value(port), why);
    }
}

static void validate_probe(verr_t *v, const json_t *probe, const char *field)
{
    static const char *const handlers[] = {"httpGet", "tcpSocket", NULL};
    char f[400];

    if (!json_is_object(probe))
        return;
    for (int i = 0; handlers[i]; i++) {
        const json_t *h = json_object_get(probe, handlers[i]);
        if (!json_is_object(h))
            continue;
        snprintf(f, sizeof(f), "%.300s.%s.port", field, handlers[i]);
        if (!json_object_get(h, "port"))
            verr_add(v, f, "FieldValueRequired", "Required value");
        else
            validate_port_num_or_name(v, json_object_get(h, "port"), f);
    }
}

/* IsEnvVarName: NULL, or why not. */
const char *ks_check_env_name(const char *s)
{
    size_t n = strlen(s);

    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-' || s[i] == '.'))
            goto bad;
    if (n && !isdigit((unsigned char)s[0]))
        return NULL;
bad:
    return "a valid environment variable name must consist of alphabetic characters, digits, '_', "
           "'-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  "
           "or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";
}

static int has_named(const json_t *list, const char *name)
{
    json_t *e;
    size_t i;

    json_array_foreach((json_t *)list, i, e) {
        if (strcmp(ks_jstr(e, "name") ?: "", name) == 0)
            return 1;
    }
    return 0;
}

static void validate_container(verr_t *v, const json_t *ct, const char *field, const json_t *volumes)
{
    static const char *const probes[] = {"livenessProbe", "readinessProbe", "startupProbe", NULL};
    const char *name = ks_jstr(ct, "name"), *why;
    json_t *p;
    size_t i;
    char f[400];

    /* a field's path is written when there is an error to name it in */
    if (!name || !*name) {
        snprintf(f, sizeof(f), "%s.name", field);
        verr_add(v, f, "FieldValueRequired", "Required value");
    } else if ((why = ks_check_dns1123(name, 0)) != NULL) {
        snprintf(f, sizeof(f), "%s.name", field);
        verr_invalid_str(v, f, name, why);
    }
    if (!ks_jstr(ct, "image") || !*ks_jstr(ct, "image")) {
        snprintf(f, sizeof(f), "%s.image", field);
        verr_add(v, f, "FieldValueRequired", "Required value");
    }
    json_array_foreach(json_object_get(ct, "ports"), i, p) {
        const json_t *cp = json_object_get(p, "containerPort"), *hp = json_object_get(p, "hostPort");
        const char *pname = ks_jstr(p, "name");
        if (pname && *pname && (why = ks_check_port_name(pname)) != NULL) {
            snprintf(f, sizeof(f), "%s.ports[%zu].name", field, i);
            verr_invalid_str(v, f, pname, why);
        }
        if (!json_is_integer(cp)) {
            snprintf(f, sizeof(f), "%s.ports[%zu].containerPort", field, i);
            verr_add(v, f, "FieldValueRequired", "Required value");
        } else if (json_integer_value(cp) < 1 || json_integer_value(cp) > 65535) {
            snprintf(f, sizeof(f), "%s.ports[%zu].containerPort", field, i);
            verr_invalid_int(v, f, (long long)json_integer_value(cp), PORT_RANGE_MSG);
        }
        if (json_is_integer(hp) && json_integer_value(hp) != 0 &&
            (json_integer_value(hp) < 1 || json_integer_value(hp) > 65535)) {
            snprintf(f, sizeof(f), "%s.ports[%zu].hostPort", field, i);
            verr_invalid_int(v, f, (long long)json_integer_value(hp), PORT_RANGE_MSG);
        }
    }
    for (int k = 0; probes[k]; k++) {
        const json_t *probe = json_object_get(ct, probes[k]);
        if (!json_is_object(probe))
            continue;
        snprintf(f, sizeof(f), "%.300s.%s", field, probes[k]);
        validate_probe(v, probe, f);
    }
    json_array_foreach(json_object_get(ct, "env"), i, p) {
        const char *en = ks_jstr(p, "name");
        if (!en || !*en) {
            snprintf(f, sizeof(f), "%.300s.env[%zu].name", field, i);
            verr_add(v, f, "FieldValueRequired", "Required value");
        } else if ((why = ks_check_env_name(en)) != NULL) {
            snprintf(f, sizeof(f), "%.300s.env[%zu].name", field, i);
            verr_invalid_str(v, f, en, why);
        }
    }
    json_array_foreach(json_object_get(ct, "volumeMounts"), i, p) {
        const char *vn = ks_jstr(p, "name") ?: "";
        if (!has_named(volumes, vn)) {
            char d[400];
            snprintf(f, sizeof(f), "%.300s.volumeMounts[%zu].name", field, i);
            snprintf(d, sizeof(d), "Not found: \"%.300s\"", vn);
            verr_add(v, f, "FieldValueNotFound", d);
        }
    }
    name = ks_jstr(ct, "imagePullPolicy");
    if (name && strcmp(name, "Always") != 0 && strcmp(name, "IfNotPresent") != 0 && strcmp(name, "Never") != 0) {
        char d[400];
        snprintf(f, sizeof(f), "%.300s.imagePullPolicy", field);
        snprintf(d, sizeof(d), "Unsupported value: \"%.200s\": supported values: \"Always\", \"IfNotPresent\", \"Never\"", name);
        verr_add(v, f, "FieldValueNotSupported", d);
    }
}

/* Whether the container at (init, i) is the first of its name, init containers first. */
static int name_first_at(const json_t *spec, const char *name, int init, size_t at)
{
    for (int in = 1; in >= init; in--) {
        json_t *ct;
        size_t i;
        json_array_foreach(json_object_get(spec, in ? "initContainers" : "containers"), i, ct) {
            if (in == init && i == at)
                return 1;
            if (strcmp(ks_jstr(ct, "name") ?: "", name) == 0)
                return 0;
        }
    }
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
    }
    /* init containers first, as the API server validates them; names unique across both */
    for (int init = 1; init >= 0; init--) {
        const char *list = init ? "initContainers" : "containers";
        json_array_foreach(json_object_get(spec, list), i, ct) {
            const char *name = ks_jstr(ct, "name");
            snprintf(field, sizeof(field), "%s.%s[%zu]", prefix, list, i);
            validate_container(v, ct, field, json_object_get(spec, "volumes"));
            if (name && *name && !name_first_at(spec, name, init, i)) {
                char f[300], d[300];
                snprintf(f, sizeof(f), "%s.name", field);
                snprintf(d, sizeof(d), "Duplicate value: \"%.200s\"", name);
                verr_add(v, f, "FieldValueDuplicate", d);
            }
        }
    }
}

/* A Service's ports: numbers, target ports, names (DNS labels, required with several). */
static void validate_service_ports(verr_t *v, const json_t *ports)
{
    json_t *p;
    size_t i;
    char f[128];

    json_array_foreach(ports, i, p) {
        const json_t *port = json_object_get(p, "port");
        const char *name = ks_jstr(p, "name"), *why;
        const json_t *target = json_object_get(p, "targetPort");
        if ((!name || !*name) && json_array_size(ports) > 1) {
            snprintf(f, sizeof(f), "spec.ports[%zu].name", i);
            verr_add(v, f, "FieldValueRequired", "Required value");
        } else if (name && *name && (why = ks_check_dns1123(name, 0)) != NULL) {
            snprintf(f, sizeof(f), "spec.ports[%zu].name", i);
            verr_invalid_str(v, f, name, why);
        }
        if (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535) {
            snprintf(f, sizeof(f), "spec.ports[%zu].port", i);
            verr_invalid_int(v, f, json_is_integer(port) ? (long long)json_integer_value(port) : 0,
                             PORT_RANGE_MSG);
        }
        if (json_is_integer(target) || json_is_string(target)) {
            snprintf(f, sizeof(f), "spec.ports[%zu].targetPort", i);
            validate_port_num_or_name(v, target, f);
        }
    }
}

/* A labels map as Go's %#v writes a map[string]string: keys sorted. */
static void go_map(rf_buf_t *b, const json_t *labels)
{
    const char *keys[256], *key;
    json_t *val;
    size_t n = 0;

    json_object_foreach((json_t *)labels, key, val) {
        if (n < 256)
            keys[n++] = key;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    rf_buf_adds(b, labels ? "map[string]string{" : "map[string]string(nil)");
    for (size_t i = 0; labels && i < n; i++)
        rf_buf_addf(b, "%s\"%s\":\"%s\"", i ? ", " : "", keys[i],
                    json_string_value(json_object_get(labels, keys[i])) ?: "");
    if (labels)
        rf_buf_adds(b, "}");
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
    } else if (!name || !*name) {
        verr_add(&v, "metadata.name", "FieldValueRequired",
                 "Required value: name or generateName is required");
    } else {
        const char *why = ks_check_dns1123(name, kind != KS_SERVICE && kind != KS_NAMESPACE);
        if (why)
            verr_invalid_str(&v, "metadata.name", name, why);
    }
    validate_labels(&v, ks_jget(o, "metadata.labels"), "metadata.labels");
    if (kind == KS_DEPLOYMENT || kind == KS_REPLICASET) {
        json_t *sel = ks_jget(o, "spec.selector");
        json_t *labels = ks_jget(o, "spec.template.metadata.labels");
        int64_t replicas = ks_jint(o, "spec.replicas", 1);
        validate_labels(&v, labels, "spec.template.metadata.labels");
        if (!json_is_object(sel)) {
            verr_add(&v, "spec.selector", "FieldValueRequired", "Required value");
        } else if (json_object_size(json_object_get(sel, "matchLabels")) == 0 &&
                   json_array_size(json_object_get(sel, "matchExpressions")) == 0) {
            verr_add(&v, "spec.selector", "FieldValueInvalid",
                     kind == KS_DEPLOYMENT ? "Invalid value: \"{}\": empty selector is invalid for deployment"
                                           : "Invalid value: \"{}\": empty selector is invalid for replicaset");
        } else {
            validate_labels(&v, json_object_get(sel, "matchLabels"), "spec.selector.matchLabels");
            if (old && !json_equal(sel, ks_jget(old, "spec.selector")))
                verr_add(&v, "spec.selector", "FieldValueInvalid", "Invalid value: field is immutable");
        }
        {
            /* a missing selector selects nothing: the template's labels do not match it either */
            ks_sel_t *s = json_is_object(sel) ? ks_sel_from_json(sel, 1) : NULL;
            int empty = json_is_object(sel) && json_object_size(json_object_get(sel, "matchLabels")) == 0 &&
                        json_array_size(json_object_get(sel, "matchExpressions")) == 0;
            if (!empty && !(s && ks_sel_match(s, labels))) {
                rf_buf_t d;
                rf_buf_init(&d, 0);
                rf_buf_adds(&d, "Invalid value: ");
                go_map(&d, labels);
                rf_buf_adds(&d, ": `selector` does not match template `labels`");
                verr_add(&v, "spec.template.metadata.labels", "FieldValueInvalid", rf_buf_str(&d));
                rf_buf_release(&d);
            }
            ks_sel_destroy(s);
        }
        if (replicas < 0)
            verr_invalid_int(&v, "spec.replicas", (long long)replicas, "must be greater than or equal to 0");
        validate_podspec(&v, ks_jget(o, "spec.template.spec"), "spec.template.spec");
        {
            const char *rp = ks_jstr(o, "spec.template.spec.restartPolicy");
            if (rp && strcmp(rp, "Always") != 0) {
                char d[300];
                snprintf(d, sizeof(d), "Unsupported value: \"%.200s\": supported values: \"Always\"", rp);
                verr_add(&v, "spec.template.spec.restartPolicy", "FieldValueNotSupported", d);
            }
        }
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
        validate_service_ports(&v, ks_jget(o, "spec.ports"));
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

int ks_fieldval_parse(const char *value, ks_fieldval_t *fv, ks_resp_t *resp)
{
    char msg[300];

    if (!value || !*value || strcmp(value, "Warn") == 0)
        *fv = KS_FV_WARN;
    else if (strcmp(value, "Strict") == 0)
        *fv = KS_FV_STRICT;
    else if (strcmp(value, "Ignore") == 0)
        *fv = KS_FV_IGNORE;
    else {
        snprintf(msg, sizeof(msg),
                 "fieldValidation: Unsupported value: \"%.100s\": supported values: \"Ignore\", "
                 "\"Strict\", \"Warn\"",
                 value);
        ks_api_status(resp, 400, "BadRequest", msg, NULL);
        return -1;
    }
    return 0;
}

int ks_dryrun_parse(const char *value, const char *opts, int *dry, ks_resp_t *resp)
{
    char cause[200], msg[400];

    *dry = value != NULL;
    if (!value || strcmp(value, "All") == 0)
        return 0;
    snprintf(cause, sizeof(cause), "Unsupported value: \"%.100s\": supported values: \"All\"", value);
    snprintf(msg, sizeof(msg), "%s.meta.k8s.io \"\" is invalid: dryRun: %s", opts, cause);
    ks_api_status(resp, 422, "Invalid", msg,
                  json_pack("{s:s, s:s, s:s, s:[{s:s, s:s, s:s}]}", "name", "", "group", "meta.k8s.io",
                            "kind", opts, "causes", "reason", "FieldValueNotSupported", "message",
                            cause, "field", "dryRun"));
    return -1;
}

int ks_decode(const ks_schema_t *s, ks_kind_t kind, json_t *o, ks_fieldval_t fv, ks_resp_t *resp)
{
    const char *k = ks_kinds[kind].kind;
    ks_decode_t d;
    json_t *path, *causes = json_array(), *det;
    rf_buf_t msg;
    size_t i;
    int result = 0;

    rf_buf_init(&msg, 0);
    rf_buf_addf(&msg, "%s in version \"v1\" cannot be handled as a %s: ", k, k);
    if (ks_schema_decode(s, kind, o, &d) != 0) {
        rf_buf_adds(&msg, d.error);
        json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", "FieldValueTypeInvalid",
                                                "message", d.error, "field", d.error_field));
        result = -1;
    } else if (fv == KS_FV_STRICT && json_array_size(d.unknown) > 0) {
        rf_buf_adds(&msg, "strict decoding error: ");
        json_array_foreach(d.unknown, i, path) {
            char m[600];
            snprintf(m, sizeof(m), "unknown field \"%s\"", json_string_value(path));
            rf_buf_addf(&msg, "%s%s", i ? ", " : "", m);
            json_array_append_new(causes, json_pack("{s:s, s:s, s:O}", "reason", "FieldValueNotFound",
                                                    "message", m, "field", path));
        }
        result = -1;
    } else if (fv == KS_FV_WARN) {
        json_array_foreach(d.unknown, i, path) {
            size_t n = strlen(resp->warnings);
            snprintf(resp->warnings + n, sizeof(resp->warnings) - n, "%s299 - \"unknown field \\\"%s\\\"\"",
                     n ? "\n" : "", json_string_value(path));
        }
    }
    if (result != 0) {
        det = json_pack("{s:s, s:s, s:o}", "name", ks_jstr(o, "metadata.name") ?: "", "kind", k,
                        "causes", causes);
        causes = NULL;
        if (*ks_kinds[kind].group)
            json_object_set_new(det, "group", json_string(ks_kinds[kind].group));
        ks_api_status(resp, 400, "BadRequest", rf_buf_str(&msg), det);
    }
    json_decref(causes);
    json_decref(d.unknown);
    rf_buf_release(&msg);
    return result;
}
