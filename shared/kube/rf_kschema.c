/* Manifest validation: a cluster's OpenAPI v3 documents plus the API conventions, cached. */
#include "rf_kschema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_clock.h"
#include "rf_log.h"
#include "rf_schema.h"

/* Embedded by shared/CMakeLists.txt from shared/kube/openapi/. */
extern const char rf_kschema_builtin_json[];
extern const size_t rf_kschema_builtin_json_len;
extern const char rf_kschema_conventions_json[];
extern const size_t rf_kschema_conventions_json_len;

#define KSCHEMA_CACHE 16

struct rf_kschema {
    rf_schema_registry_t *reg;
    json_t *index;   /* group-version ("apis/apps/v1") -> serverRelativeURL, or -> document */
    json_t *loaded;  /* group-version -> true once compiled, false when unusable */
    int builtin;     /* kinds the documents lack are not checked */
    char version[64];
    char describe[300];
};

struct rf_kschema_cache {
    long recheck_ms;
    struct {
        char *cluster;
        rf_kschema_t *schema;
        long checked_ms;
    } e[KSCHEMA_CACHE];
    int next;
};

static json_t *conventions(void)
{
    static json_t *conv;
    json_error_t jerr;

    if (!conv) {
        conv = json_loadb(rf_kschema_conventions_json, rf_kschema_conventions_json_len, 0, &jerr);
        if (!conv)
            abort(); /* embedded at build time: a broken file fails every unit test */
    }
    return conv;
}

static const json_t *builtin_documents(void)
{
    static json_t *doc;
    json_error_t jerr;

    if (!doc) {
        doc = json_loadb(rf_kschema_builtin_json, rf_kschema_builtin_json_len, 0, &jerr);
        if (!doc)
            abort();
    }
    return doc;
}

static rf_kschema_t *kschema_alloc(void)
{
    rf_kschema_t *s = calloc(1, sizeof(*s));

    if (!s)
        abort();
    s->reg = rf_schema_registry_new();
    s->index = json_object();
    s->loaded = json_object();
    if (!s->reg || !s->index || !s->loaded)
        abort();
    return s;
}

void rf_kschema_destroy(rf_kschema_t *s)
{
    if (!s)
        return;
    rf_schema_registry_destroy(s->reg);
    json_decref(s->index);
    json_decref(s->loaded);
    free(s);
}

rf_kschema_t *rf_kschema_builtin_new(char *errstr, size_t errstr_size)
{
    const json_t *all = builtin_documents();
    const json_t *src = json_object_get(all, "source");
    rf_kschema_t *s = kschema_alloc();

    (void)errstr;
    (void)errstr_size;
    s->builtin = 1;
    json_object_update(s->index, json_object_get(all, "documents"));
    snprintf(s->describe, sizeof(s->describe), "the built-in schema (Kubernetes API %s, %s %s)",
             json_string_value(json_object_get(src, "api")),
             json_string_value(json_object_get(src, "package")),
             json_string_value(json_object_get(src, "version")));
    return s;
}

rf_err_t rf_kschema_cluster_new(rf_kube_t *k, const char *cluster, rf_kschema_t **out,
                                char *errstr, size_t errstr_size)
{
    json_t *version = NULL, *index = NULL;
    const json_t *paths, *p;
    const char *gv, *git;
    rf_kschema_t *s = NULL;
    rf_err_t result;

    *out = NULL;
    result = rf_kube_get(k, "/version", &version, errstr, errstr_size);
    if (result == RF_ERR_NOTFOUND || result == RF_ERR_PERM)
        result = RF_ERR_RETRY; /* an API server always answers /version */
    if (result != RF_OK)
        goto out;
    git = json_string_value(json_object_get(version, "gitVersion"));
    result = rf_kube_get(k, "/openapi/v3", &index, errstr, errstr_size);
    if (result == RF_ERR_NOTFOUND) {
        /* served by no cluster version before 1.24 (and some turn it off) */
        s = rf_kschema_builtin_new(errstr, errstr_size);
        snprintf(s->version, sizeof(s->version), "%s", git ? git : "");
        snprintf(s->describe + strlen(s->describe), sizeof(s->describe) - strlen(s->describe),
                 "; cluster %s%s%s (%s) serves no /openapi/v3", cluster && *cluster ? "'" : "",
                 cluster && *cluster ? cluster : "(the default)", cluster && *cluster ? "'" : "",
                 git ? git : "unknown version");
        *out = s;
        goto out;
    }
    if (result != RF_OK)
        goto out;
    paths = json_object_get(index, "paths");
    if (!json_is_object(paths)) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "cannot read the schema of cluster '%s': /openapi/v3 has no paths",
                         cluster && *cluster ? cluster : "(default)");
        goto out;
    }
    s = kschema_alloc();
    snprintf(s->version, sizeof(s->version), "%s", git ? git : "");
    if (cluster && *cluster)
        snprintf(s->describe, sizeof(s->describe), "the schema of cluster '%s' (%s)", cluster,
                 git ? git : "unknown version");
    else
        snprintf(s->describe, sizeof(s->describe), "the schema of the default cluster (%s)",
                 git ? git : "unknown version");
    json_object_foreach((json_t *)paths, gv, p) {
        const char *url = json_string_value(json_object_get(p, "serverRelativeURL"));
        if (url)
            json_object_set_new(s->index, gv, json_string(url));
    }
    *out = s;
out:
    json_decref(version);
    json_decref(index);
    return result;
}

const char *rf_kschema_describe(const rf_kschema_t *s)
{
    return s->describe;
}

const char *rf_kschema_version(const rf_kschema_t *s)
{
    return s->version;
}

/* "v1" -> "api/v1", "apps/v1" -> "apis/apps/v1". */
static void group_version_key(const char *api_version, char *buf, size_t size)
{
    if (strchr(api_version, '/'))
        snprintf(buf, size, "apis/%s", api_version);
    else
        snprintf(buf, size, "api/%s", api_version);
}

/* Our rules into doc (a copy we own): x-relfleet-rules, then extended and replaced
 * component schemas. */
static void add_conventions(json_t *doc)
{
    const json_t *conv = conventions();
    json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    const char *name;
    json_t *v;

    json_object_set_new(doc, "x-relfleet-rules",
                        json_deep_copy(json_object_get(conv, "rules")));
    if (!json_is_object(schemas))
        return;
    json_object_foreach(json_object_get(conv, "extend"), name, v) {
        json_t *orig = json_object_get(schemas, name);
        if (orig)
            json_object_set_new(schemas, name,
                                json_pack("{s:[O, o]}", "allOf", orig, json_deep_copy(v)));
    }
    json_object_foreach(json_object_get(conv, "replace"), name, v) {
        if (json_object_get(schemas, name))
            json_object_set_new(schemas, name, json_deep_copy(v));
    }
}

/* Compiles one group-version document and registers a schema per kind it serves:
 * "k8s-kind:<gv>/<kind>". */
static rf_err_t load_document(rf_kschema_t *s, const char *gv, json_t *doc, char *errstr,
                              size_t errstr_size)
{
    char docname[300], kindname[400], ref[700], why[512];
    json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    const char *name, *slash, *group, *version;
    json_t *v, *gvk;
    size_t i;
    rf_err_t result;

    json_t *kinds = json_object(); /* kind -> component, before add_conventions wraps them */

    snprintf(docname, sizeof(docname), "k8s:%s", gv);
    /* "apis/apps/v1" serves group "apps", version "v1"; "api/v1" the core group "" */
    slash = strrchr(gv, '/');
    version = slash ? slash + 1 : gv;
    group = strncmp(gv, "apis/", 5) == 0 ? gv + 5 : "";
    json_object_foreach(schemas, name, v) {
        json_array_foreach(json_object_get(v, "x-kubernetes-group-version-kind"), i, gvk) {
            const char *g = json_string_value(json_object_get(gvk, "group"));
            const char *ver = json_string_value(json_object_get(gvk, "version"));
            const char *kind = json_string_value(json_object_get(gvk, "kind"));
            size_t glen = slash && *group ? (size_t)(slash - group) : 0;
            if (g && ver && kind && strcmp(ver, version) == 0 && strlen(g) == glen &&
                strncmp(g, group, glen) == 0)
                json_object_set_new(kinds, kind, json_string(name));
        }
    }
    add_conventions(doc);
    result = rf_schema_registry_add_openapi(s->reg, docname, doc, why, sizeof(why));
    if (result != RF_OK) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot compile %s of %s: %s", gv,
                         s->describe, why);
        goto out;
    }
    json_object_foreach(kinds, name, v) {
        json_t *wrapper;
        snprintf(kindname, sizeof(kindname), "k8s-kind:%s/%s", gv, name);
        snprintf(ref, sizeof(ref), "%s#/components/schemas/%s", docname, json_string_value(v));
        wrapper = json_pack("{s:s}", "$ref", ref);
        result = rf_schema_registry_add_openapi(s->reg, kindname, wrapper, why, sizeof(why));
        json_decref(wrapper);
        if (result != RF_OK) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot compile %s of %s: %s",
                             name, s->describe, why);
            goto out;
        }
    }
out:
    json_decref(kinds);
    return result;
}

/* Makes gv usable: 1 compiled, 0 not served (or unusable), RF_ERR_RETRY as -1. */
static int ensure_document(rf_kschema_t *s, rf_kube_t *k, const char *gv, char *errstr,
                           size_t errstr_size)
{
    const json_t *state = json_object_get(s->loaded, gv);
    const json_t *entry = json_object_get(s->index, gv);
    json_t *doc = NULL;
    rf_err_t result;

    if (state)
        return json_is_true(state);
    if (!entry)
        return 0;
    if (json_is_string(entry)) {
        if (!k) {
            rf_errf(RF_ERR_RETRY, errstr, errstr_size, "no client to read %s from", gv);
            return -1;
        }
        result = rf_kube_get(k, json_string_value(entry), &doc, errstr, errstr_size);
        if (result == RF_ERR_RETRY)
            return -1;
        if (result != RF_OK) {
            rf_log_warn("cannot read %s of %s: %s", gv, s->describe, errstr);
            json_object_set_new(s->loaded, gv, json_false());
            return 0;
        }
    } else {
        doc = json_deep_copy(entry);
    }
    result = load_document(s, gv, doc, errstr, errstr_size);
    json_decref(doc); /* the registry keeps its own reference */
    if (result != RF_OK)
        rf_log_warn("%s", errstr);
    json_object_set_new(s->loaded, gv, json_boolean(result == RF_OK));
    return result == RF_OK;
}

/* The value at path inside doc, or NULL. */
static const json_t *value_at(const json_t *doc, const json_t *path)
{
    const json_t *cur = doc;
    const json_t *seg;
    size_t i;

    json_array_foreach(path, i, seg) {
        if (json_is_string(seg))
            cur = json_object_get(cur, json_string_value(seg));
        else
            cur = json_array_get(cur, (size_t)json_integer_value(seg));
        if (!cur)
            return NULL;
    }
    return cur;
}

static void add_error(json_t *errors, size_t max_errors, const char *object, json_t *path,
                      const char *message)
{
    json_t *e;
    const json_t *seg;
    char field[1024];
    size_t i, used = 0;

    if (json_array_size(errors) >= max_errors) {
        json_decref(path);
        return;
    }
    field[0] = '\0';
    json_array_foreach(path, i, seg) {
        if (used >= sizeof(field))
            break;
        if (json_is_string(seg))
            used += (size_t)snprintf(field + used, sizeof(field) - used, "%s%s", used ? "." : "",
                                     json_string_value(seg));
        else
            used += (size_t)snprintf(field + used, sizeof(field) - used,
                                     "[%" JSON_INTEGER_FORMAT "]", json_integer_value(seg));
    }
    e = json_pack("{s:s, s:o, s:s, s:s}", "object", object, "path", path, "field", field,
                  "message", message);
    if (!e)
        abort();
    json_array_append_new(errors, e);
}

/* Does selector (a LabelSelector) select labels? */
static int selector_matches(const json_t *selector, const json_t *labels)
{
    const json_t *ml = json_object_get(selector, "matchLabels");
    const json_t *me = json_object_get(selector, "matchExpressions");
    const char *key;
    json_t *v, *expr;
    size_t i, j;

    json_object_foreach((json_t *)ml, key, v) {
        const json_t *have = json_object_get(labels, key);
        if (!json_is_string(have) || !json_equal((json_t *)have, v))
            return 0;
    }
    json_array_foreach(me, i, expr) {
        const char *op = json_string_value(json_object_get(expr, "operator"));
        const char *k = json_string_value(json_object_get(expr, "key"));
        const json_t *have = k ? json_object_get(labels, k) : NULL;
        int in = 0;
        if (!op || !k)
            return 0;
        json_array_foreach(json_object_get(expr, "values"), j, v) {
            if (have && json_equal((json_t *)have, v))
                in = 1;
        }
        if ((strcmp(op, "In") == 0 && !in) || (strcmp(op, "NotIn") == 0 && in) ||
            (strcmp(op, "Exists") == 0 && !have) || (strcmp(op, "DoesNotExist") == 0 && have))
            return 0;
    }
    return 1;
}

/* Container names unique across initContainers and containers of the pod spec at base. */
static void check_container_names(const json_t *podspec, const json_t *base, const char *object,
                                  json_t *errors, size_t max_errors)
{
    static const char *const lists[] = {"initContainers", "containers"};
    json_t *seen = json_object();
    size_t l, i;
    json_t *c;

    if (!seen)
        abort();
    for (l = 0; l < 2; l++) {
        json_array_foreach(json_object_get(podspec, lists[l]), i, c) {
            const char *name = json_string_value(json_object_get(c, "name"));
            char msg[300];
            json_t *path;
            if (!name)
                continue;
            if (!json_object_get(seen, name)) {
                json_object_set_new(seen, name, json_true());
                continue;
            }
            path = json_deep_copy(base);
            json_array_append_new(path, json_string(lists[l]));
            json_array_append_new(path, json_integer((json_int_t)i));
            json_array_append_new(path, json_string("name"));
            snprintf(msg, sizeof(msg), "Duplicate value: \"%.200s\"", name);
            add_error(errors, max_errors, object, path, msg);
        }
    }
    json_decref(seen);
}

/* Every volumeMount of the pod spec's containers names one of its volumes. */
static void check_volume_mounts(const json_t *podspec, const json_t *base, const char *object,
                                json_t *errors, size_t max_errors)
{
    static const char *const lists[] = {"initContainers", "containers"};
    const json_t *vol, *c, *mount;
    json_t *names = json_object();
    size_t l, i, j;

    if (!names)
        abort();
    json_array_foreach(json_object_get(podspec, "volumes"), i, vol) {
        if (json_is_string(json_object_get(vol, "name")))
            json_object_set_new(names, json_string_value(json_object_get(vol, "name")),
                                json_true());
    }
    for (l = 0; l < 2; l++) {
        json_array_foreach(json_object_get(podspec, lists[l]), i, c) {
            json_array_foreach(json_object_get(c, "volumeMounts"), j, mount) {
                const char *name = json_string_value(json_object_get(mount, "name"));
                char msg[300];
                json_t *path;
                if (!name || json_object_get(names, name))
                    continue;
                path = json_deep_copy(base);
                json_array_append_new(path, json_string(lists[l]));
                json_array_append_new(path, json_integer((json_int_t)i));
                json_array_append_new(path, json_string("volumeMounts"));
                json_array_append_new(path, json_integer((json_int_t)j));
                json_array_append_new(path, json_string("name"));
                snprintf(msg, sizeof(msg), "Not found: \"%.200s\" (no volume of that name)", name);
                add_error(errors, max_errors, object, path, msg);
            }
        }
    }
    json_decref(names);
}

/* The checks of a pod spec that span fields. */
static void check_pod_spec(const json_t *podspec, const json_t *base, const char *object,
                           json_t *errors, size_t max_errors)
{
    check_container_names(podspec, base, object, errors, max_errors);
    check_volume_mounts(podspec, base, object, errors, max_errors);
}

/* What spans fields: a workload's selector and its template's labels, the pod spec's. */
static void check_cross_fields(const json_t *m, const char *kind, const char *object,
                               json_t *errors, size_t max_errors)
{
    const json_t *spec = json_object_get(m, "spec");
    const json_t *tpl = json_object_get(spec, "template");
    const json_t *sel = json_object_get(spec, "selector");
    json_t *base;

    if (strcmp(kind, "Pod") == 0 && json_is_object(spec)) {
        base = json_pack("[s]", "spec");
        check_pod_spec(spec, base, object, errors, max_errors);
        json_decref(base);
        return;
    }
    if (strcmp(kind, "Deployment") != 0 && strcmp(kind, "ReplicaSet") != 0 &&
        strcmp(kind, "StatefulSet") != 0 && strcmp(kind, "DaemonSet") != 0)
        return;
    if (json_is_object(sel) && json_is_object(tpl)) {
        const json_t *labels = json_object_get(json_object_get(tpl, "metadata"), "labels");
        if (json_object_size(json_object_get(sel, "matchLabels")) == 0 &&
            json_array_size(json_object_get(sel, "matchExpressions")) == 0)
            add_error(errors, max_errors, object, json_pack("[s, s]", "spec", "selector"),
                      "empty selector is invalid for a workload");
        else if (!selector_matches(sel, json_is_object(labels) ? labels : NULL))
            add_error(errors, max_errors, object,
                      json_pack("[s, s, s, s]", "spec", "template", "metadata", "labels"),
                      "`selector` does not match template `labels`");
    }
    if (json_is_object(json_object_get(tpl, "spec"))) {
        base = json_pack("[s, s, s]", "spec", "template", "spec");
        check_pod_spec(json_object_get(tpl, "spec"), base, object, errors, max_errors);
        json_decref(base);
    }
}

rf_err_t rf_kschema_validate(rf_kschema_t *s, rf_kube_t *k, const json_t *manifest,
                             json_t *errors, size_t max_errors, char *errstr, size_t errstr_size)
{
    const char *api = json_string_value(json_object_get(manifest, "apiVersion"));
    const char *kind = json_string_value(json_object_get(manifest, "kind"));
    const char *name =
        json_string_value(json_object_get(json_object_get(manifest, "metadata"), "name"));
    char gv[256], object[400], kindname[400], why[512], msg[600];
    size_t before = json_array_size(errors), i;
    json_t *found;
    json_t *e;
    int have;

    if (!api || !kind || !name)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "manifest has no apiVersion, kind or metadata.name");
    snprintf(object, sizeof(object), "%.100s '%.253s'", kind, name);
    group_version_key(api, gv, sizeof(gv));
    have = ensure_document(s, k, gv, errstr, errstr_size);
    if (have < 0)
        return RF_ERR_RETRY;
    snprintf(kindname, sizeof(kindname), "k8s-kind:%s/%s", gv, kind);
    if (!have || !json_object_get(s->loaded, gv) ||
        rf_schema_validate_all(s->reg, kindname, manifest, errors, max_errors, why,
                               sizeof(why)) == RF_ERR_NOTFOUND) {
        if (s->builtin)
            goto cross; /* the built-in schema lacks it: not checked */
        if (!json_object_get(s->index, gv))
            snprintf(msg, sizeof(msg), "%s serves no apiVersion '%.100s'", s->describe, api);
        else
            snprintf(msg, sizeof(msg), "%s has no kind '%.100s' in apiVersion '%.100s'",
                     s->describe, kind, api);
        add_error(errors, max_errors, object, json_pack("[s]", "kind"), msg);
        goto done;
    }
    /* rf_schema's entries get the object and the value */
    for (i = before; i < json_array_size(errors); i++) {
        e = json_array_get(errors, i);
        if (json_object_get(e, "object"))
            continue;
        json_object_set_new(e, "object", json_string(object));
        found = (json_t *)value_at(manifest, json_object_get(e, "path"));
        if (found)
            json_object_set(e, "value", found);
    }
cross:
    check_cross_fields(manifest, kind, object, errors, max_errors);
done:
    for (i = before; i < json_array_size(errors); i++) {
        e = json_array_get(errors, i);
        if (json_object_get(e, "value"))
            continue;
        found = (json_t *)value_at(manifest, json_object_get(e, "path"));
        if (found)
            json_object_set(e, "value", found);
    }
    if (json_array_size(errors) > before) {
        rf_kschema_error_text(json_array_get(errors, before), errstr, errstr_size);
        return RF_ERR_PERM;
    }
    return RF_OK;
}

void rf_kschema_error_text(const json_t *error, char *buf, size_t size)
{
    const json_t *value = json_object_get(error, "value");
    const json_t *line = json_object_get(error, "line");
    const char *field = json_string_value(json_object_get(error, "field"));
    char shown[160] = "";
    char at[40] = "";
    char *text = NULL;

    if (value && !json_is_object(value) && !json_is_array(value)) {
        text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text && strlen(text) > 120)
            snprintf(shown, sizeof(shown), " %.120s...", text);
        else if (text)
            snprintf(shown, sizeof(shown), " %s", text);
    } else if (json_is_object(value)) {
        snprintf(shown, sizeof(shown), " (an object)");
    } else if (json_is_array(value)) {
        snprintf(shown, sizeof(shown), " (an array)");
    }
    if (json_is_integer(line))
        snprintf(at, sizeof(at), " (template line %" JSON_INTEGER_FORMAT ")",
                 json_integer_value(line));
    snprintf(buf, size, "%s %s:%s%s: %s", json_string_value(json_object_get(error, "object")),
             field && *field ? field : "(document)", shown, at,
             json_string_value(json_object_get(error, "message")));
    free(text);
}

rf_kschema_cache_t *rf_kschema_cache_new(long recheck_ms)
{
    rf_kschema_cache_t *c = calloc(1, sizeof(*c));

    if (!c)
        abort();
    c->recheck_ms = recheck_ms;
    return c;
}

void rf_kschema_cache_destroy(rf_kschema_cache_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < KSCHEMA_CACHE; i++) {
        free(c->e[i].cluster);
        rf_kschema_destroy(c->e[i].schema);
    }
    free(c);
}

rf_err_t rf_kschema_cache_get(rf_kschema_cache_t *c, const char *cluster, rf_kube_t *k,
                              rf_kschema_t **out, char *errstr, size_t errstr_size)
{
    const char *key = k ? (cluster ? cluster : "") : "\001builtin";
    long now = rf_clock_mono_ms();
    rf_kschema_t *fresh = NULL;
    json_t *version = NULL;
    int slot = -1;
    rf_err_t result;

    *out = NULL;
    for (int i = 0; i < KSCHEMA_CACHE; i++) {
        if (c->e[i].cluster && strcmp(c->e[i].cluster, key) == 0)
            slot = i;
    }
    if (slot >= 0 && (!k || now - c->e[slot].checked_ms < c->recheck_ms)) {
        *out = c->e[slot].schema;
        return RF_OK;
    }
    if (slot >= 0) {
        /* known: the same version keeps its schema; unreachable keeps it too */
        c->e[slot].checked_ms = now;
        result = rf_kube_get(k, "/version", &version, errstr, errstr_size);
        if (result != RF_OK ||
            strcmp(json_string_value(json_object_get(version, "gitVersion"))
                       ? json_string_value(json_object_get(version, "gitVersion"))
                       : "",
                   rf_kschema_version(c->e[slot].schema)) == 0) {
            json_decref(version);
            *out = c->e[slot].schema;
            return RF_OK;
        }
        rf_log_info("cluster '%s' now runs %s; reading its schema again", key,
                    json_string_value(json_object_get(version, "gitVersion")));
        json_decref(version);
    }
    if (k) {
        result = rf_kschema_cluster_new(k, cluster, &fresh, errstr, errstr_size);
        if (result == RF_ERR_NOTFOUND)
            rf_log_info("cluster '%s' serves no /openapi/v3: using the built-in schema", key);
        else if (result != RF_OK)
            return result;
    } else {
        fresh = rf_kschema_builtin_new(errstr, errstr_size);
    }
    if (!fresh)
        return RF_ERR_PERM;
    if (slot < 0) {
        slot = c->next;
        c->next = (c->next + 1) % KSCHEMA_CACHE;
        free(c->e[slot].cluster);
        c->e[slot].cluster = strdup(key);
        if (!c->e[slot].cluster)
            abort();
    }
    rf_kschema_destroy(c->e[slot].schema);
    c->e[slot].schema = fresh;
    c->e[slot].checked_ms = now;
    *out = fresh;
    return RF_OK;
}

rf_err_t rf_kschema_validate_render(rf_kschema_t *s, rf_kube_t *k,
                                    const rf_render_template_t *tpl, const json_t *values,
                                    const json_t *manifests, json_t *errors, size_t max_errors,
                                    char *errstr, size_t errstr_size)
{
    size_t before = json_array_size(errors), i, j;
    const json_t *m;
    json_t *e;
    rf_err_t result;

    json_array_foreach(manifests, i, m) {
        size_t first = json_array_size(errors);
        result = rf_kschema_validate(s, k, m, errors, max_errors, errstr, errstr_size);
        if (result == RF_ERR_RETRY)
            return result;
        for (j = first; j < json_array_size(errors); j++) {
            e = json_array_get(errors, j);
            json_object_set_new(e, "doc", json_integer((json_int_t)i));
            if (tpl)
                json_object_set_new(e, "line",
                                    json_integer(rf_render_line(tpl, values, i,
                                                                json_object_get(e, "path"))));
        }
    }
    if (json_array_size(errors) > before) {
        rf_kschema_error_text(json_array_get(errors, before), errstr, errstr_size);
        return RF_ERR_PERM;
    }
    return RF_OK;
}

void rf_kschema_errors_text(const json_t *errors, size_t total, char *buf, size_t size)
{
    char one[1200];
    size_t used = 0, i;
    const json_t *e;

    if (size == 0)
        return;
    buf[0] = '\0';
    json_array_foreach(errors, i, e) {
        int n;
        rf_kschema_error_text(e, one, sizeof(one));
        n = snprintf(buf + used, size - used, "%s%s", i ? "; " : "", one);
        if (n < 0 || (size_t)n >= size - used) {
            buf[used] = '\0';
            snprintf(buf + used, size - used, "%s...", i ? "; " : "");
            return;
        }
        used += (size_t)n;
    }
    if (total > json_array_size(errors) && used < size)
        snprintf(buf + used, size - used, "; and %zu more", total - json_array_size(errors));
}
