/* The discovery documents of kubesim: /version, /api, /apis, the groups' resources and the OpenAPI documents. */
#include "ks_discovery.h"
#include "ks_schema.h"

#include <stdio.h>
#include <string.h>

static json_t *resource_entry(const char *name, const char *singular, int namespaced,
                              const char *kind, const char *verbs, const char *shortname,
                              int all_category)
{
    json_t *r = json_pack("{s:s, s:s, s:b, s:s}", "name", name, "singularName", singular,
                          "namespaced", namespaced, "kind", kind);
    json_t *v = json_array();
    char buf[128], *tok, *save;

    snprintf(buf, sizeof(buf), "%s", verbs);
    for (tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
        json_array_append_new(v, json_string(tok));
    json_object_set_new(r, "verbs", v);
    if (shortname)
        json_object_set_new(r, "shortNames", json_pack("[s]", shortname));
    if (all_category)
        json_object_set_new(r, "categories", json_pack("[s]", "all"));
    return r;
}

#define VERBS_ALL "create delete deletecollection get list patch update watch"

static json_t *discovery_core(void)
{
    json_t *res = json_array();

    json_array_append_new(res, resource_entry("namespaces", "namespace", 0, "Namespace", "create delete get list patch update watch", "ns", 0));
    json_array_append_new(res, resource_entry("namespaces/status", "", 0, "Namespace", "get patch update", NULL, 0));
    json_array_append_new(res, resource_entry("pods", "pod", 1, "Pod", VERBS_ALL, "po", 1));
    json_array_append_new(res, resource_entry("pods/log", "", 1, "Pod", "get", NULL, 0));
    json_array_append_new(res, resource_entry("pods/status", "", 1, "Pod", "get patch update", NULL, 0));
    json_array_append_new(res, resource_entry("services", "service", 1, "Service", "create delete get list patch update watch", "svc", 1));
    json_array_append_new(res, resource_entry("services/status", "", 1, "Service", "get patch update", NULL, 0));
    json_array_append_new(res, resource_entry("events", "event", 1, "Event", VERBS_ALL, "ev", 0));
    json_array_append_new(res, resource_entry("configmaps", "configmap", 1, "ConfigMap", VERBS_ALL, "cm", 0));
    json_array_append_new(res, resource_entry("secrets", "secret", 1, "Secret", VERBS_ALL, NULL, 0));
    json_array_append_new(res, resource_entry("serviceaccounts", "serviceaccount", 1, "ServiceAccount", VERBS_ALL, "sa", 0));
    return json_pack("{s:s, s:s, s:o}", "kind", "APIResourceList", "groupVersion", "v1",
                     "resources", res);
}

static json_t *discovery_apps(void)
{
    json_t *res = json_array(), *scale;

    json_array_append_new(res, resource_entry("deployments", "deployment", 1, "Deployment", VERBS_ALL, "deploy", 1));
    scale = resource_entry("deployments/scale", "", 1, "Scale", "get patch update", NULL, 0);
    json_object_set_new(scale, "group", json_string("autoscaling"));
    json_object_set_new(scale, "version", json_string("v1"));
    json_array_append_new(res, scale);
    json_array_append_new(res, resource_entry("deployments/status", "", 1, "Deployment", "get patch update", NULL, 0));
    json_array_append_new(res, resource_entry("replicasets", "replicaset", 1, "ReplicaSet", VERBS_ALL, "rs", 1));
    scale = resource_entry("replicasets/scale", "", 1, "Scale", "get patch update", NULL, 0);
    json_object_set_new(scale, "group", json_string("autoscaling"));
    json_object_set_new(scale, "version", json_string("v1"));
    json_array_append_new(res, scale);
    json_array_append_new(res, resource_entry("replicasets/status", "", 1, "ReplicaSet", "get patch update", NULL, 0));
    return json_pack("{s:s, s:s, s:s, s:o}", "kind", "APIResourceList", "apiVersion", "v1",
                     "groupVersion", "apps/v1", "resources", res);
}

static json_t *discovery_networking(void)
{
    json_t *res = json_array();

    json_array_append_new(res, resource_entry("ingresses", "ingress", 1, "Ingress", VERBS_ALL, "ing", 0));
    json_array_append_new(res, resource_entry("ingresses/status", "", 1, "Ingress", "get patch update", NULL, 0));
    return json_pack("{s:s, s:s, s:s, s:o}", "kind", "APIResourceList", "apiVersion", "v1",
                     "groupVersion", "networking.k8s.io/v1", "resources", res);
}

static json_t *discovery_policy(void)
{
    json_t *res = json_array();

    json_array_append_new(res, resource_entry("poddisruptionbudgets", "poddisruptionbudget", 1, "PodDisruptionBudget", VERBS_ALL, "pdb", 0));
    json_array_append_new(res, resource_entry("poddisruptionbudgets/status", "", 1, "PodDisruptionBudget", "get patch update", NULL, 0));
    return json_pack("{s:s, s:s, s:s, s:o}", "kind", "APIResourceList", "apiVersion", "v1",
                     "groupVersion", "policy/v1", "resources", res);
}

static json_t *discovery_rbac(void)
{
    json_t *res = json_array();

    json_array_append_new(res, resource_entry("clusterrolebindings", "clusterrolebinding", 0, "ClusterRoleBinding", VERBS_ALL, NULL, 0));
    json_array_append_new(res, resource_entry("clusterroles", "clusterrole", 0, "ClusterRole", VERBS_ALL, NULL, 0));
    json_array_append_new(res, resource_entry("rolebindings", "rolebinding", 1, "RoleBinding", VERBS_ALL, NULL, 0));
    json_array_append_new(res, resource_entry("roles", "role", 1, "Role", VERBS_ALL, NULL, 0));
    return json_pack("{s:s, s:s, s:s, s:o}", "kind", "APIResourceList", "apiVersion", "v1",
                     "groupVersion", "rbac.authorization.k8s.io/v1", "resources", res);
}

static const ks_api_group_t api_groups[] = {
    {"apps", discovery_apps, "9C4D2B7E5A3F1E08"},
    {"networking.k8s.io", discovery_networking, "5E2A9C1D7B3F4A60"},
    {"policy", discovery_policy, "2F7C4E9A1B6D3C85"},
    {"rbac.authorization.k8s.io", discovery_rbac, "7A1E5C3B9D2F6E04"},
    {NULL, NULL, NULL},
};

const ks_api_group_t *ks_api_group_find(const char *name, size_t len)
{
    for (const ks_api_group_t *g = api_groups; g->name; g++)
        if (strlen(g->name) == len && strncmp(g->name, name, len) == 0)
            return g;
    return NULL;
}

/* The APIGroup object of a group served at v1 (new reference). */
static json_t *group_json(const char *name)
{
    char gv[128];

    snprintf(gv, sizeof(gv), "%s/v1", name);
    return json_pack("{s:s, s:[{s:s, s:s}], s:{s:s, s:s}}", "name", name, "versions",
                     "groupVersion", gv, "version", "v1", "preferredVersion", "groupVersion", gv,
                     "version", "v1");
}

/* The OpenAPI v3 document of one group version: the item paths with their PATCH
 * operations and parameters, enough for clients that check for fieldValidation. */
static json_t *openapi_gv(const char *group)
{
    json_t *paths = json_object(), *schemas = ks_schema_openapi_v3(ks_schema_builtin(), group);

    for (int k = 0; k < KS_KIND_COUNT; k++) {
        const ks_kind_info_t *ki = &ks_kinds[k];
        char path[256];
        json_t *gvk, *params;
        if (strcmp(ki->group, group) != 0)
            continue;
        if (*group)
            snprintf(path, sizeof(path), "/apis/%s/v1/%s%s/{name}", group,
                     ki->namespaced ? "namespaces/{namespace}/" : "", ki->resource);
        else
            snprintf(path, sizeof(path), "/api/v1/%s%s/{name}",
                     ki->namespaced ? "namespaces/{namespace}/" : "", ki->resource);
        gvk = json_pack("{s:s, s:s, s:s}", "group", group, "version", "v1", "kind", ki->kind);
        params = json_pack("[{s:s, s:s, s:{s:s}}, {s:s, s:s, s:{s:s}}, {s:s, s:s, s:{s:s}}, {s:s, s:s, s:{s:s}}]",
                           "name", "dryRun", "in", "query", "schema", "type", "string",
                           "name", "fieldManager", "in", "query", "schema", "type", "string",
                           "name", "fieldValidation", "in", "query", "schema", "type", "string",
                           "name", "force", "in", "query", "schema", "type", "boolean");
        json_object_set_new(paths, path,
                            json_pack("{s:{s:s, s:O, s:s, s:o}, s:{s:s, s:O, s:s}, s:{s:s, s:O, s:s}, s:{s:s, s:O, s:s}}",
                                      "patch", "operationId", "patch", "x-kubernetes-group-version-kind", gvk,
                                      "x-kubernetes-action", "patch", "parameters", params,
                                      "get", "operationId", "read", "x-kubernetes-group-version-kind", gvk,
                                      "x-kubernetes-action", "get",
                                      "put", "operationId", "replace", "x-kubernetes-group-version-kind", gvk,
                                      "x-kubernetes-action", "put",
                                      "delete", "operationId", "delete", "x-kubernetes-group-version-kind", gvk,
                                      "x-kubernetes-action", "delete"));
        json_decref(gvk);
    }
    return json_pack("{s:s, s:{s:s, s:s}, s:o, s:{s:o}}", "openapi", "3.0.0", "info", "title",
                     "Kubernetes", "version", "v1.32.0", "paths", paths, "components", "schemas",
                     schemas);
}

/* The Swagger 2.0 document: every kind's item path and the definitions of the schema. */
static json_t *openapi_v2(void)
{
    json_t *paths = json_object();

    for (int k = 0; k < KS_KIND_COUNT; k++) {
        const ks_kind_info_t *ki = &ks_kinds[k];
        char path[256];
        json_t *gvk = json_pack("{s:s, s:s, s:s}", "group", ki->group, "version", "v1", "kind", ki->kind);
        if (*ki->group)
            snprintf(path, sizeof(path), "/apis/%s/v1/%s%s/{name}", ki->group,
                     ki->namespaced ? "namespaces/{namespace}/" : "", ki->resource);
        else
            snprintf(path, sizeof(path), "/api/v1/%s%s/{name}",
                     ki->namespaced ? "namespaces/{namespace}/" : "", ki->resource);
        json_object_set_new(paths, path,
                            json_pack("{s:{s:s, s:o, s:s, s:[s, s, s, s]}}", "patch", "operationId", "patch",
                                      "x-kubernetes-group-version-kind", gvk, "x-kubernetes-action", "patch",
                                      "consumes", "application/json-patch+json",
                                      "application/merge-patch+json", "application/strategic-merge-patch+json",
                                      "application/apply-patch+yaml"));
    }
    return json_pack("{s:s, s:{s:s, s:s}, s:o, s:o}", "swagger", "2.0", "info", "title", "Kubernetes",
                     "version", "v1.32.0", "paths", paths, "definitions",
                     ks_schema_openapi_v2(ks_schema_builtin()));
}

/* path is want, with or without a trailing slash */
static int path_is(const char *path, const char *want)
{
    size_t n = strlen(want);

    return strncmp(path, want, n) == 0 && (path[n] == '\0' || strcmp(path + n, "/") == 0);
}

/* /apis/<group>, /apis/<group>/v1 and /openapi/v3/apis/<group>/v1 of the groups served. */
static json_t *discovery_group(const char *path)
{
    const ks_api_group_t *g;
    size_t n;

    if (strncmp(path, "/openapi/v3/apis/", 17) == 0) {
        path += 17;
        n = strcspn(path, "/");
        g = ks_api_group_find(path, n);
        return g && strcmp(path + n, "/v1") == 0 ? openapi_gv(g->name) : NULL;
    }
    if (strncmp(path, "/apis/", 6) != 0)
        return NULL;
    path += 6;
    n = strcspn(path, "/");
    g = ks_api_group_find(path, n);
    if (!g)
        return NULL;
    path += n;
    if (strcmp(path, "") == 0 || strcmp(path, "/") == 0) {
        json_t *j = group_json(g->name);
        json_object_set_new(j, "kind", json_string("APIGroup"));
        json_object_set_new(j, "apiVersion", json_string("v1"));
        return j;
    }
    if (strcmp(path, "/v1") == 0 || strcmp(path, "/v1/") == 0)
        return g->resources();
    return NULL;
}

int ks_discovery_answer(const char *address, const char *path, const char *req_accept,
                        ks_resp_t *resp)
{
    json_t *j = NULL;

    if (strcmp(path, "/version") == 0) {
        j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "major", "1", "minor",
                      "32", "gitVersion", "v1.32.0", "gitCommit", "kubesim", "gitTreeState",
                      "clean", "buildDate", "2025-01-01T00:00:00Z", "goVersion", "go1.23.4",
                      "compiler", "gc", "platform", "linux/amd64");
    } else if (strcmp(path, "/api") == 0 || strcmp(path, "/api/") == 0) {
        j = json_pack("{s:s, s:[s], s:[{s:s, s:s}]}", "kind", "APIVersions", "versions", "v1",
                      "serverAddressByClientCIDRs", "clientCIDR", "0.0.0.0/0", "serverAddress",
                      address);
    } else if (strcmp(path, "/api/v1") == 0 || strcmp(path, "/api/v1/") == 0) {
        j = discovery_core();
    } else if (path_is(path, "/apis")) {
        json_t *groups = json_array();
        for (const ks_api_group_t *g = api_groups; g->name; g++)
            json_array_append_new(groups, group_json(g->name));
        j = json_pack("{s:s, s:s, s:o}", "kind", "APIGroupList", "apiVersion", "v1", "groups",
                      groups);
    } else if ((j = discovery_group(path)) != NULL) {
        /* a named group, its resources or its OpenAPI document */
    } else if (path_is(path, "/openapi/v3")) {
        json_t *paths = json_pack("{s:{s:s}}", "api/v1", "serverRelativeURL",
                                  "/openapi/v3/api/v1?hash=4B1A1E2C8F0D3A21");
        for (const ks_api_group_t *g = api_groups; g->name; g++) {
            char key[128], url[256];
            snprintf(key, sizeof(key), "apis/%s/v1", g->name);
            snprintf(url, sizeof(url), "/openapi/v3/apis/%s/v1?hash=%s", g->name, g->openapi_hash);
            json_object_set_new(paths, key, json_pack("{s:s}", "serverRelativeURL", url));
        }
        j = json_pack("{s:o}", "paths", paths);
    } else if (strcmp(path, "/openapi/v3/api/v1") == 0) {
        j = openapi_gv("");
    } else if (path_is(path, "/openapi/v2")) {
        /* JSON only: a client that asks for the protobuf form alone falls back to its types */
        if (req_accept && strstr(req_accept, "protobuf") && !strstr(req_accept, "json") &&
            !strstr(req_accept, "*/*")) {
            ks_api_status(resp, 406, "NotAcceptable",
                          "only the following media types are accepted: application/json", NULL);
            return 1;
        }
        j = openapi_v2();
    } else if (strcmp(path, "/healthz") == 0 || strcmp(path, "/livez") == 0 ||
               strcmp(path, "/readyz") == 0) {
        rf_buf_adds(&resp->body, "ok");
        resp->status = 200;
        resp->content_type = "text/plain; charset=utf-8";
        return 1;
    } else {
        return 0;
    }
    ks_api_respond_json(resp, 200, j);
    json_decref(j);
    return 1;
}
