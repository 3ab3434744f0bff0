/* Server-side printing: meta.k8s.io/v1 Table responses with the columns kubectl shows for each kind. */
#include "ks_print.h"
#include "ks_sel.h"
#include "rf_buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct col {
    const char *name, *type, *format;
    int priority;
} col_t;

static const col_t cols_ns[] = {{"Name", "string", "name", 0}, {"Status", "string", "", 0}, {"Age", "string", "", 0}, {NULL, NULL, NULL, 0}};
static const col_t cols_deploy[] = {{"Name", "string", "name", 0}, {"Ready", "string", "", 0}, {"Up-to-date", "integer", "", 0}, {"Available", "integer", "", 0}, {"Age", "string", "", 0}, {"Containers", "string", "", 1}, {"Images", "string", "", 1}, {"Selector", "string", "", 1}, {NULL, NULL, NULL, 0}};
static const col_t cols_rs[] = {{"Name", "string", "name", 0}, {"Desired", "integer", "", 0}, {"Current", "integer", "", 0}, {"Ready", "integer", "", 0}, {"Age", "string", "", 0}, {"Containers", "string", "", 1}, {"Images", "string", "", 1}, {"Selector", "string", "", 1}, {NULL, NULL, NULL, 0}};
static const col_t cols_pod[] = {{"Name", "string", "name", 0}, {"Ready", "string", "", 0}, {"Status", "string", "", 0}, {"Restarts", "string", "", 0}, {"Age", "string", "", 0}, {"IP", "string", "", 1}, {"Node", "string", "", 1}, {"Nominated Node", "string", "", 1}, {"Readiness Gates", "string", "", 1}, {NULL, NULL, NULL, 0}};
static const col_t cols_svc[] = {{"Name", "string", "name", 0}, {"Type", "string", "", 0}, {"Cluster-IP", "string", "", 0}, {"External-IP", "string", "", 0}, {"Port(s)", "string", "", 0}, {"Age", "string", "", 0}, {"Selector", "string", "", 1}, {NULL, NULL, NULL, 0}};
static const col_t cols_ing[] = {{"Name", "string", "name", 0}, {"Class", "string", "", 0}, {"Hosts", "string", "", 0}, {"Address", "string", "", 0}, {"Ports", "string", "", 0}, {"Age", "string", "", 0}, {NULL, NULL, NULL, 0}};
static const col_t cols_cm[] = {{"Name", "string", "name", 0}, {"Data", "integer", "", 0}, {"Age", "string", "", 0}, {NULL, NULL, NULL, 0}};
static const col_t cols_secret[] = {{"Name", "string", "name", 0}, {"Type", "string", "", 0}, {"Data", "integer", "", 0}, {"Age", "string", "", 0}, {NULL, NULL, NULL, 0}};
static const col_t cols_sa[] = {{"Name", "string", "name", 0}, {"Secrets", "integer", "", 0}, {"Age", "string", "", 0}, {NULL, NULL, NULL, 0}};
static const col_t cols_pdb[] = {{"Name", "string", "name", 0}, {"Min Available", "string", "", 0}, {"Max Unavailable", "string", "", 0}, {"Allowed Disruptions", "integer", "", 0}, {"Age", "string", "", 0}, {NULL, NULL, NULL, 0}};
static const col_t cols_role[] = {{"Name", "string", "name", 0}, {"Created At", "string", "", 0}, {NULL, NULL, NULL, 0}};
static const col_t cols_binding[] = {{"Name", "string", "name", 0}, {"Role", "string", "", 0}, {"Age", "string", "", 0}, {"Users", "string", "", 1}, {"Groups", "string", "", 1}, {"ServiceAccounts", "string", "", 1}, {NULL, NULL, NULL, 0}};
static const col_t cols_ev[] = {{"Last Seen", "string", "", 0}, {"Type", "string", "", 0}, {"Reason", "string", "", 0}, {"Object", "string", "", 0}, {"Subobject", "string", "", 1}, {"Source", "string", "", 1}, {"Message", "string", "", 0}, {"First Seen", "string", "", 1}, {"Count", "string", "", 1}, {"Name", "string", "name", 1}, {NULL, NULL, NULL, 0}};

static const col_t *kind_cols(ks_kind_t kind)
{
    switch (kind) {
    case KS_NAMESPACE:
        return cols_ns;
    case KS_DEPLOYMENT:
        return cols_deploy;
    case KS_REPLICASET:
        return cols_rs;
    case KS_POD:
        return cols_pod;
    case KS_SERVICE:
        return cols_svc;
    case KS_INGRESS:
        return cols_ing;
    case KS_CONFIGMAP:
        return cols_cm;
    case KS_SECRET:
        return cols_secret;
    case KS_SERVICEACCOUNT:
        return cols_sa;
    case KS_PDB:
        return cols_pdb;
    case KS_ROLE:
    case KS_CLUSTERROLE:
        return cols_role;
    case KS_ROLEBINDING:
    case KS_CLUSTERROLEBINDING:
        return cols_binding;
    default:
        return cols_ev;
    }
}

json_t *ks_print_columns(ks_kind_t kind)
{
    json_t *out = json_array();

    for (const col_t *c = kind_cols(kind); c->name; c++)
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:i}", "name", c->name, "type",
                                             c->type, "format", c->format, "description", c->name,
                                             "priority", c->priority));
    return out;
}

void ks_print_duration(int64_t ms, char *out, size_t n)
{
    int64_t s = ms / 1000;

    if (s < 0) {
        snprintf(out, n, "<invalid>");
    } else if (s < 120) {
        snprintf(out, n, "%llds", (long long)s);
    } else if (s / 60 < 10) {
        if (s % 60)
            snprintf(out, n, "%lldm%llds", (long long)(s / 60), (long long)(s % 60));
        else
            snprintf(out, n, "%lldm", (long long)(s / 60));
    } else if (s / 60 < 180) {
        snprintf(out, n, "%lldm", (long long)(s / 60));
    } else if (s / 3600 < 8) {
        if ((s / 60) % 60)
            snprintf(out, n, "%lldh%lldm", (long long)(s / 3600), (long long)((s / 60) % 60));
        else
            snprintf(out, n, "%lldh", (long long)(s / 3600));
    } else if (s / 3600 < 48) {
        snprintf(out, n, "%lldh", (long long)(s / 3600));
    } else if (s / 3600 < 24 * 8) {
        if ((s / 3600) % 24)
            snprintf(out, n, "%lldd%lldh", (long long)(s / 86400), (long long)((s / 3600) % 24));
        else
            snprintf(out, n, "%lldd", (long long)(s / 86400));
    } else if (s / 86400 < 365 * 2) {
        snprintf(out, n, "%lldd", (long long)(s / 86400));
    } else {
        snprintf(out, n, "%lldy", (long long)(s / 86400 / 365));
    }
}

static json_t *age_cell(const json_t *obj, const char *path, int64_t now)
{
    int64_t t = ks_time_parse(ks_jstr(obj, path));
    char buf[32];

    if (t < 0)
        return json_string("<unknown>");
    ks_print_duration(now - t, buf, sizeof(buf));
    return json_string(buf);
}

static void containers_images(const json_t *spec, json_t *row)
{
    rf_buf_t names = RF_BUF_INIT, images = RF_BUF_INIT;
    json_t *ct;
    size_t i;

    json_array_foreach(json_object_get(spec, "containers"), i, ct) {
        rf_buf_addf(&names, "%s%s", i ? "," : "", ks_jstr(ct, "name") ? ks_jstr(ct, "name") : "");
        rf_buf_addf(&images, "%s%s", i ? "," : "", ks_jstr(ct, "image") ? ks_jstr(ct, "image") : "");
    }
    json_array_append_new(row, json_string(rf_buf_str(&names)));
    json_array_append_new(row, json_string(rf_buf_str(&images)));
    rf_buf_release(&names);
    rf_buf_release(&images);
}

static json_t *pod_cells(const json_t *o, int64_t now)
{
    json_t *cells = json_array(), *cs;
    const char *reason = ks_jstr(o, "status.phase");
    int total = (int)json_array_size(ks_jget(o, "spec.containers")), ready = 0, restarts = 0;
    int64_t last_restart = -1;
    char buf[64];
    size_t i;

    if (!reason)
        reason = "Pending";
    json_array_foreach(ks_jget(o, "status.containerStatuses"), i, cs) {
        const char *w = ks_jstr(cs, "state.waiting.reason");
        const char *t = ks_jstr(cs, "state.terminated.reason");
        restarts += (int)ks_jint(cs, "restartCount", 0);
        if (ks_jstr(cs, "lastState.terminated.finishedAt")) {
            int64_t f = ks_time_parse(ks_jstr(cs, "lastState.terminated.finishedAt"));
            if (f > last_restart)
                last_restart = f;
        }
        if (w && *w)
            reason = w;
        else if (t && *t)
            reason = t;
        if (json_is_true(json_object_get(cs, "ready")) && ks_jget(cs, "state.running"))
            ready++;
    }
    if (ks_jget(o, "metadata.deletionTimestamp"))
        reason = "Terminating";
    json_array_append_new(cells, json_string(ks_jstr(o, "metadata.name")));
    snprintf(buf, sizeof(buf), "%d/%d", ready, total);
    json_array_append_new(cells, json_string(buf));
    json_array_append_new(cells, json_string(reason));
    if (last_restart >= 0) {
        char d[32];
        ks_print_duration(now - last_restart, d, sizeof(d));
        snprintf(buf, sizeof(buf), "%d (%s ago)", restarts, d);
    } else {
        snprintf(buf, sizeof(buf), "%d", restarts);
    }
    json_array_append_new(cells, json_string(buf));
    json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
    json_array_append_new(cells, json_string(ks_jstr(o, "status.podIP") ? ks_jstr(o, "status.podIP") : "<none>"));
    json_array_append_new(cells, json_string(ks_jstr(o, "spec.nodeName") ? ks_jstr(o, "spec.nodeName") : "<none>"));
    json_array_append_new(cells, json_string("<none>"));
    json_array_append_new(cells, json_string("<none>"));
    return cells;
}

static json_t *svc_cells(const json_t *o, int64_t now)
{
    json_t *cells = json_array(), *p;
    rf_buf_t ports = RF_BUF_INIT, sel = RF_BUF_INIT;
    const char *k;
    json_t *v;
    size_t i;

    json_array_append_new(cells, json_string(ks_jstr(o, "metadata.name")));
    json_array_append_new(cells, json_string(ks_jstr(o, "spec.type") ? ks_jstr(o, "spec.type") : "ClusterIP"));
    json_array_append_new(cells, json_string(ks_jstr(o, "spec.clusterIP") ? ks_jstr(o, "spec.clusterIP") : "<none>"));
    json_array_append_new(cells, json_string("<none>"));
    json_array_foreach(ks_jget(o, "spec.ports"), i, p) {
        rf_buf_addf(&ports, "%s%lld", i ? "," : "", (long long)ks_jint(p, "port", 0));
        if (ks_jint(p, "nodePort", 0))
            rf_buf_addf(&ports, ":%lld", (long long)ks_jint(p, "nodePort", 0));
        rf_buf_addf(&ports, "/%s", ks_jstr(p, "protocol") ? ks_jstr(p, "protocol") : "TCP");
    }
    json_array_append_new(cells, json_string(ports.len ? rf_buf_str(&ports) : "<none>"));
    json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
    json_object_foreach(ks_jget(o, "spec.selector"), k, v) {
        rf_buf_addf(&sel, "%s%s=%s", sel.len ? "," : "", k, json_string_value(v) ? json_string_value(v) : "");
    }
    json_array_append_new(cells, json_string(sel.len ? rf_buf_str(&sel) : "<none>"));
    rf_buf_release(&ports);
    rf_buf_release(&sel);
    return cells;
}

static json_t *ingress_cells(const json_t *o, int64_t now)
{
    json_t *cells = json_array(), *r;
    rf_buf_t hosts = RF_BUF_INIT;
    const char *cls = ks_jstr(o, "spec.ingressClassName");
    size_t i;

    json_array_append_new(cells, json_string(ks_jstr(o, "metadata.name")));
    json_array_append_new(cells, json_string(cls ? cls : "<none>"));
    json_array_foreach(ks_jget(o, "spec.rules"), i, r) {
        rf_buf_addf(&hosts, "%s%s", hosts.len ? "," : "", ks_jstr(r, "host") ? ks_jstr(r, "host") : "*");
    }
    json_array_append_new(cells, json_string(hosts.len ? rf_buf_str(&hosts) : "*"));
    json_array_append_new(cells, json_string(""));
    json_array_append_new(cells, json_string(json_array_size(ks_jget(o, "spec.tls")) ? "80, 443" : "80"));
    json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
    rf_buf_release(&hosts);
    return cells;
}

/* An IntOrString as kubectl shows it, "N/A" when unset. */
static json_t *int_or_string_cell(const json_t *v)
{
    char buf[32];

    if (json_is_string(v))
        return json_string(json_string_value(v));
    if (!json_is_integer(v))
        return json_string("N/A");
    snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
    return json_string(buf);
}

static json_t *pdb_cells(const json_t *o, int64_t now)
{
    json_t *cells = json_array();

    json_array_append_new(cells, json_string(ks_jstr(o, "metadata.name")));
    json_array_append_new(cells, int_or_string_cell(ks_jget(o, "spec.minAvailable")));
    json_array_append_new(cells, int_or_string_cell(ks_jget(o, "spec.maxUnavailable")));
    json_array_append_new(cells, json_integer(ks_jint(o, "status.disruptionsAllowed", 0)));
    json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
    return cells;
}

/* Users, groups and service accounts ("namespace/name") of a binding, as kubectl lists them. */
static json_t *binding_cells(const json_t *o, int64_t now)
{
    json_t *cells = json_array(), *s;
    rf_buf_t users = RF_BUF_INIT, groups = RF_BUF_INIT, sas = RF_BUF_INIT;
    char ref[600];
    size_t i;

    snprintf(ref, sizeof(ref), "%s/%s", ks_jstr(o, "roleRef.kind") ?: "",
             ks_jstr(o, "roleRef.name") ?: "");
    json_array_append_new(cells, json_string(ks_jstr(o, "metadata.name")));
    json_array_append_new(cells, json_string(ref));
    json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
    json_array_foreach(ks_jget(o, "subjects"), i, s) {
        const char *kind = ks_jstr(s, "kind") ?: "", *name = ks_jstr(s, "name") ?: "";
        if (strcmp(kind, "User") == 0)
            rf_buf_addf(&users, "%s%s", users.len ? ", " : "", name);
        else if (strcmp(kind, "Group") == 0)
            rf_buf_addf(&groups, "%s%s", groups.len ? ", " : "", name);
        else if (strcmp(kind, "ServiceAccount") == 0)
            rf_buf_addf(&sas, "%s%s/%s", sas.len ? ", " : "", ks_jstr(s, "namespace") ?: "", name);
    }
    json_array_append_new(cells, json_string(rf_buf_str(&users)));
    json_array_append_new(cells, json_string(rf_buf_str(&groups)));
    json_array_append_new(cells, json_string(rf_buf_str(&sas)));
    rf_buf_release(&users);
    rf_buf_release(&groups);
    rf_buf_release(&sas);
    return cells;
}

static json_t *event_cells(const json_t *o, int64_t now)
{
    json_t *cells = json_array();
    char obj[512], src[256], cnt[32];

    json_array_append_new(cells, age_cell(o, "lastTimestamp", now));
    json_array_append_new(cells, json_string(ks_jstr(o, "type") ? ks_jstr(o, "type") : ""));
    json_array_append_new(cells, json_string(ks_jstr(o, "reason") ? ks_jstr(o, "reason") : ""));
    snprintf(obj, sizeof(obj), "%s/%s",
             ks_jstr(o, "involvedObject.kind") ? ks_jstr(o, "involvedObject.kind") : "",
             ks_jstr(o, "involvedObject.name") ? ks_jstr(o, "involvedObject.name") : "");
    for (char *p = obj; *p && *p != '/'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    json_array_append_new(cells, json_string(obj));
    json_array_append_new(cells, json_string(""));
    snprintf(src, sizeof(src), "%s", ks_jstr(o, "source.component") ? ks_jstr(o, "source.component") : "");
    json_array_append_new(cells, json_string(src));
    json_array_append_new(cells, json_string(ks_jstr(o, "message") ? ks_jstr(o, "message") : ""));
    json_array_append_new(cells, age_cell(o, "firstTimestamp", now));
    snprintf(cnt, sizeof(cnt), "%lld", (long long)ks_jint(o, "count", 1));
    json_array_append_new(cells, json_string(cnt));
    json_array_append_new(cells, json_string(ks_jstr(o, "metadata.name")));
    return cells;
}

json_t *ks_print_row(ks_kind_t kind, const json_t *o, const char *include_object, int64_t now)
{
    json_t *cells, *row, *obj;
    char buf[64];

    switch (kind) {
    case KS_NAMESPACE:
        cells = json_pack("[s, s]", ks_jstr(o, "metadata.name"),
                          ks_jstr(o, "status.phase") ? ks_jstr(o, "status.phase") : "Active");
        json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
        break;
    case KS_DEPLOYMENT: {
        char *sel = ks_sel_string(ks_jget(o, "spec.selector"));
        snprintf(buf, sizeof(buf), "%lld/%lld", (long long)ks_jint(o, "status.readyReplicas", 0),
                 (long long)ks_jint(o, "spec.replicas", 1));
        cells = json_pack("[s, s, I, I]", ks_jstr(o, "metadata.name"), buf,
                          (json_int_t)ks_jint(o, "status.updatedReplicas", 0),
                          (json_int_t)ks_jint(o, "status.availableReplicas", 0));
        json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
        containers_images(ks_jget(o, "spec.template.spec"), cells);
        json_array_append_new(cells, json_string(sel));
        free(sel);
        break;
    }
    case KS_REPLICASET: {
        char *sel = ks_sel_string(ks_jget(o, "spec.selector"));
        cells = json_pack("[s, I, I, I]", ks_jstr(o, "metadata.name"),
                          (json_int_t)ks_jint(o, "spec.replicas", 1),
                          (json_int_t)ks_jint(o, "status.replicas", 0),
                          (json_int_t)ks_jint(o, "status.readyReplicas", 0));
        json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
        containers_images(ks_jget(o, "spec.template.spec"), cells);
        json_array_append_new(cells, json_string(sel));
        free(sel);
        break;
    }
    case KS_POD:
        cells = pod_cells(o, now);
        break;
    case KS_SERVICE:
        cells = svc_cells(o, now);
        break;
    case KS_INGRESS:
        cells = ingress_cells(o, now);
        break;
    case KS_CONFIGMAP:
        cells = json_pack("[s, I]", ks_jstr(o, "metadata.name"),
                          (json_int_t)(json_object_size(json_object_get(o, "data")) +
                                       json_object_size(json_object_get(o, "binaryData"))));
        json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
        break;
    case KS_SECRET:
        cells = json_pack("[s, s, I]", ks_jstr(o, "metadata.name"), ks_jstr(o, "type") ?: "",
                          (json_int_t)json_object_size(json_object_get(o, "data")));
        json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
        break;
    case KS_SERVICEACCOUNT:
        cells = json_pack("[s, I]", ks_jstr(o, "metadata.name"),
                          (json_int_t)json_array_size(json_object_get(o, "secrets")));
        json_array_append_new(cells, age_cell(o, "metadata.creationTimestamp", now));
        break;
    case KS_PDB:
        cells = pdb_cells(o, now);
        break;
    case KS_ROLE:
    case KS_CLUSTERROLE:
        /* the creation time itself, as RFC 3339 in UTC */
        cells = json_pack("[s, s]", ks_jstr(o, "metadata.name"),
                          ks_jstr(o, "metadata.creationTimestamp") ?: "");
        break;
    case KS_ROLEBINDING:
    case KS_CLUSTERROLEBINDING:
        cells = binding_cells(o, now);
        break;
    default:
        cells = event_cells(o, now);
        break;
    }
    row = json_pack("{s:o}", "cells", cells);
    if (include_object && strcmp(include_object, "None") == 0)
        return row;
    if (include_object && strcmp(include_object, "Object") == 0) {
        json_object_set(row, "object", (json_t *)o);
        return row;
    }
    obj = json_pack("{s:s, s:s, s:O}", "kind", "PartialObjectMetadata", "apiVersion",
                    "meta.k8s.io/v1", "metadata", json_object_get(o, "metadata"));
    json_object_set_new(row, "object", obj);
    return row;
}
