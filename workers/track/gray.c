/* Gray releases: canary steps and blue-green switches on plain Deployments, state in PostgreSQL. */
#include "gray.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_analysis.h"
#include "rf_log.h"
#include "rf_strategy.h"

#define GRAY_SEEN_MAX 32 /* command ids remembered against redelivery */

static const char *gstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static json_int_t gint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* ---- the apply stage's part ---- */

static json_t *gray_find(const json_t *manifests, const char *kind)
{
    json_t *m;
    size_t i;

    json_array_foreach(manifests, i, m) {
        if (strcmp(gstr(m, "kind"), kind) == 0)
            return m;
    }
    return NULL;
}

static void gray_set_label(json_t *obj, const char *path1, const char *path2, const char *path3,
                           const char *value)
{
    json_t *o = obj, *next;
    const char *parts[3] = {path1, path2, path3};

    for (int i = 0; i < 3 && parts[i]; i++) {
        next = json_object_get(o, parts[i]);
        if (!json_is_object(next)) {
            next = json_object();
            json_object_set_new(o, parts[i], next);
        }
        o = next;
    }
    json_object_set_new(o, GRAY_TRACK_LABEL, json_string(value));
}

/* A copy of Deployment d named name whose pods (and selector) carry track=value. */
static json_t *gray_variant(const json_t *d, const char *name, const char *value, json_int_t replicas)
{
    json_t *v = json_deep_copy(d);
    json_t *spec = json_object_get(v, "spec");

    json_object_set_new(json_object_get(v, "metadata"), "name", json_string(name));
    json_object_set_new(spec, "replicas", json_integer(replicas));
    gray_set_label(spec, "selector", "matchLabels", NULL, value);
    gray_set_label(spec, "template", "metadata", "labels", value);
    return v;
}

static rf_err_t gray_scale(rf_kube_t *kube, const char *ns, const char *name, json_int_t replicas,
                           json_int_t *generation, char *errstr, size_t errstr_size)
{
    char path[600];
    json_t *patch = json_pack("{s:{s:I}}", "spec", "replicas", replicas);
    json_t *out = NULL;
    rf_err_t result;

    snprintf(path, sizeof(path), "/apis/apps/v1/namespaces/%s/deployments/%s", ns, name);
    result = rf_kube_merge_patch(kube, path, patch, &out, errstr, errstr_size);
    if (result == RF_OK && generation)
        *generation = gint(json_object_get(out, "metadata"), "generation");
    json_decref(patch);
    json_decref(out);
    return result;
}

/* Sets (value) or removes (NULL) the track key of a Service's selector. */
static rf_err_t gray_select(rf_kube_t *kube, const char *ns, const char *svc, const char *value,
                            char *errstr, size_t errstr_size)
{
    char path[600];
    json_t *patch = json_pack("{s:{s:{s:o}}}", "spec", "selector", GRAY_TRACK_LABEL,
                              value ? json_string(value) : json_null());
    rf_err_t result;

    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/services/%s", ns, svc);
    result = rf_kube_merge_patch(kube, path, patch, NULL, errstr, errstr_size);
    json_decref(patch);
    return result;
}

/* Sends weight% of the traffic to the canary: the canary-weight annotation of the canary
 * Ingress (ingress-nginx reads it). */
static rf_err_t gray_route(rf_kube_t *kube, const char *ns, const char *ingress, json_int_t weight,
                           char *errstr, size_t errstr_size)
{
    char path[600], value[24];
    json_t *patch;
    rf_err_t result;

    snprintf(value, sizeof(value), "%lld", (long long)weight);
    patch = json_pack("{s:{s:{s:s}}}", "metadata", "annotations", GRAY_NGINX_WEIGHT, value);
    snprintf(path, sizeof(path), "/apis/networking.k8s.io/v1/namespaces/%s/ingresses/%s", ns,
             ingress);
    result = rf_kube_merge_patch(kube, path, patch, NULL, errstr, errstr_size);
    json_decref(patch);
    return result;
}

/* The canary Ingress of a stable one, as Argo Rollouts makes it: the paths whose backend is
 * service svc, sent to csvc instead, with ingress-nginx's canary annotations (weight 0) and
 * the stable one's ingress class; NULL (RF_ERR_PERM) when no path uses svc. */
static json_t *gray_canary_ingress(const json_t *stable, const char *name, const char *ns,
                                   const char *svc, const char *csvc, char *errstr,
                                   size_t errstr_size)
{
    const json_t *smeta = json_object_get(stable, "metadata");
    const json_t *sspec = json_object_get(stable, "spec");
    const char *cls = gstr(json_object_get(smeta, "annotations"), "kubernetes.io/ingress.class");
    json_t *rules = json_array(), *rule, *p, *ci, *ann;
    size_t i, k;

    json_array_foreach(json_object_get(sspec, "rules"), i, rule) {
        json_t *paths = json_array(), *r;
        json_array_foreach(json_object_get(json_object_get(rule, "http"), "paths"), k, p) {
            json_t *copy;
            if (strcmp(gstr(json_object_get(json_object_get(p, "backend"), "service"), "name"),
                       svc) != 0)
                continue;
            copy = json_deep_copy(p);
            json_object_set_new(json_object_get(json_object_get(copy, "backend"), "service"),
                                "name", json_string(csvc));
            json_array_append_new(paths, copy);
        }
        if (json_array_size(paths) == 0) {
            json_decref(paths);
            continue;
        }
        r = json_pack("{s:{s:o}}", "http", "paths", paths);
        if (json_object_get(rule, "host"))
            json_object_set(r, "host", json_object_get(rule, "host"));
        json_array_append_new(rules, r);
    }
    if (json_array_size(rules) == 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "canary: ingress '%s' has no path with a backend of service '%s'",
                gstr(smeta, "name"), svc);
        json_decref(rules);
        return NULL;
    }
    ci = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}, s:{s:s, s:s}}, s:{s:o}}", "apiVersion",
                   "networking.k8s.io/v1", "kind", "Ingress", "metadata", "name", name,
                   "namespace", ns, "labels", GRAY_TRACK_LABEL, "canary", "annotations",
                   GRAY_NGINX_CANARY, "true", GRAY_NGINX_WEIGHT, "0", "spec", "rules", rules);
    ann = json_object_get(json_object_get(ci, "metadata"), "annotations");
    if (*cls)
        json_object_set_new(ann, "kubernetes.io/ingress.class", json_string(cls));
    if (json_object_get(sspec, "ingressClassName"))
        json_object_set(json_object_get(ci, "spec"), "ingressClassName",
                        json_object_get(sspec, "ingressClassName"));
    return ci;
}

/* The stable Ingress named name: the template's own, else the one in the cluster. */
static json_t *gray_stable_ingress(rf_kube_t *kube, const json_t *manifests, const char *ns,
                                   const char *name, rf_err_t *err, char *errstr,
                                   size_t errstr_size)
{
    char path[600];
    json_t *m, *live = NULL;
    size_t i;

    json_array_foreach(manifests, i, m) {
        if (strcmp(gstr(m, "kind"), "Ingress") == 0 &&
            strcmp(gstr(json_object_get(m, "metadata"), "name"), name) == 0) {
            *err = RF_OK;
            return json_incref(m);
        }
    }
    snprintf(path, sizeof(path), "/apis/networking.k8s.io/v1/namespaces/%s/ingresses/%s", ns,
             name);
    *err = rf_kube_get(kube, path, &live, errstr, errstr_size);
    if (*err == RF_ERR_NOTFOUND)
        *err = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "canary: stable ingress '%s' not found in namespace '%s' (nor in the "
                       "template)",
                       name, ns);
    return live;
}

static json_t *gray_get_deploy(rf_kube_t *kube, const char *ns, const char *name, rf_err_t *err,
                               char *errstr, size_t errstr_size)
{
    char path[600];
    json_t *live = NULL;

    snprintf(path, sizeof(path), "/apis/apps/v1/namespaces/%s/deployments/%s", ns, name);
    *err = rf_kube_get(kube, path, &live, errstr, errstr_size);
    return live;
}

/* Scales a leftover canary or preview of an earlier release to zero; the canary Ingress
 * ingress (NULL: none) first goes back to weight 0, when it exists. */
static rf_err_t gray_cleanup(rf_kube_t *kube, const char *ns, const char *name,
                             const char *ingress, json_t *notes, char *errstr, size_t errstr_size)
{
    rf_err_t result;
    json_t *live = gray_get_deploy(kube, ns, name, &result, errstr, errstr_size);
    char msg[700];

    if (result == RF_ERR_NOTFOUND)
        return RF_OK;
    if (result != RF_OK)
        return result;
    if (gint(json_object_get(live, "spec"), "replicas") > 0) {
        if (ingress) {
            result = gray_route(kube, ns, ingress, 0, errstr, errstr_size);
            if (result == RF_ERR_NOTFOUND)
                result = RF_OK;
            snprintf(msg, sizeof(msg), "canary ingress %s back to weight 0, left by an earlier "
                                       "gray release",
                     ingress);
            if (result == RF_OK)
                json_array_append_new(notes, json_string(msg));
            if (result != RF_OK) {
                json_decref(live);
                return result;
            }
        }
        result = gray_scale(kube, ns, name, 0, NULL, errstr, errstr_size);
        snprintf(msg, sizeof(msg), "scaled down %s, left running by an earlier gray release",
                 name);
        if (result == RF_OK)
            json_array_append_new(notes, json_string(msg));
    }
    json_decref(live);
    return result;
}

/* Canary with ingress-nginx: the Service svc selects the stable pods only, <svc>-canary
 * the canary ones, and the canary Ingress <stableIngress>-canary (weight 0) sends them
 * traffic; appended to out, named in gray. */
static rf_err_t gray_prepare_nginx(rf_kube_t *kube, const json_t *nginx, const json_t *manifests,
                                   const json_t *svc, const char *ns, json_t *gray, json_t *out,
                                   char *errstr, size_t errstr_size)
{
    const char *sname = gstr(json_object_get(svc, "metadata"), "name");
    const char *iname = gstr(nginx, "stableIngress");
    json_t *active = json_deep_copy(svc), *canary = json_deep_copy(svc);
    json_t *stable_ing, *canary_ing = NULL;
    char cname[300], ciname[300];
    rf_err_t result;

    snprintf(cname, sizeof(cname), "%s-canary", sname);
    snprintf(ciname, sizeof(ciname), "%s-canary", iname);
    stable_ing = gray_stable_ingress(kube, manifests, ns, iname, &result, errstr, errstr_size);
    if (result == RF_OK)
        canary_ing = gray_canary_ingress(stable_ing, ciname, ns, sname, cname, errstr,
                                         errstr_size);
    if (result == RF_OK && !canary_ing)
        result = RF_ERR_PERM;
    if (result != RF_OK)
        goto out;
    gray_set_label(json_object_get(active, "spec"), "selector", NULL, NULL, "stable");
    json_object_set_new(json_object_get(canary, "metadata"), "name", json_string(cname));
    json_object_del(json_object_get(canary, "spec"), "clusterIP");
    json_object_del(json_object_get(canary, "spec"), "clusterIPs");
    gray_set_label(json_object_get(canary, "spec"), "selector", NULL, NULL, "canary");
    json_array_append(out, active);
    json_array_append(out, canary);
    json_array_append(out, canary_ing);
    json_object_set_new(gray, "service", json_string(sname));
    json_object_set_new(gray, "canary_service", json_string(cname));
    json_object_set_new(gray, "canary_ingress", json_string(ciname));
    json_object_set_new(gray, "routed", json_integer(0));
out:
    json_decref(active);
    json_decref(canary);
    json_decref(stable_ing);
    json_decref(canary_ing);
    return result;
}

rf_err_t gray_prepare(rf_kube_t *kube, const json_t *strategy, const json_t *manifests,
                      const char *ns, long long timeout_s, int gray_ever, json_t **to_apply,
                      json_t **gray, json_t *notes, char *errstr, size_t errstr_size)
{
    const char *kind = gstr(strategy, "kind");
    json_t *d = gray_find(manifests, "Deployment");
    json_t *svc = gray_find(manifests, "Service");
    const json_t *nginx = json_object_get(strategy, "nginx");
    json_t *stable = NULL, *live = NULL, *out = NULL, *m;
    char name[300], msg[700], ingress[300];
    const char *dname, *dns, *live_track;
    json_int_t replicas;
    rf_err_t result;
    size_t i;

    *gray = NULL;
    *to_apply = NULL;
    if (!d) {
        *to_apply = json_incref((json_t *)manifests);
        return RF_OK;
    }
    dname = gstr(json_object_get(d, "metadata"), "name");
    dns = *gstr(json_object_get(d, "metadata"), "namespace")
              ? gstr(json_object_get(d, "metadata"), "namespace")
              : ns;
    replicas = json_is_integer(json_object_get(json_object_get(d, "spec"), "replicas"))
                   ? gint(json_object_get(d, "spec"), "replicas")
                   : 1;
    /* What a superseded or crashed gray release left behind goes first. */
    if (gray_ever) {
        snprintf(name, sizeof(name), "%s-canary", dname);
        snprintf(ingress, sizeof(ingress), "%s-canary", gstr(nginx, "stableIngress"));
        result = gray_cleanup(kube, dns, name, nginx ? ingress : NULL, notes, errstr,
                              errstr_size);
        snprintf(name, sizeof(name), "%s-preview", dname);
        if (result == RF_OK)
            result = gray_cleanup(kube, dns, name, NULL, notes, errstr, errstr_size);
        if (result != RF_OK)
            return result;
    }
    if (strcmp(kind, "canary") != 0 && strcmp(kind, "bluegreen") != 0) {
        *to_apply = json_incref((json_t *)manifests);
        return RF_OK;
    }
    stable = json_deep_copy(d);
    gray_set_label(json_object_get(stable, "spec"), "template", "metadata", "labels", "stable");
    live = gray_get_deploy(kube, dns, dname, &result, errstr, errstr_size);
    if (result != RF_OK && result != RF_ERR_NOTFOUND)
        goto out;
    {
        json_t *tpl = json_object_get(json_object_get(live, "spec"), "template");
        live_track = gstr(json_object_get(json_object_get(tpl, "metadata"), "labels"),
                          GRAY_TRACK_LABEL);
    }
    if (result == RF_ERR_NOTFOUND || strcmp(live_track, "stable") != 0 ||
        ((strcmp(kind, "bluegreen") == 0 || nginx) && !svc)) {
        /* No stable version to compare with: this release rolls out as usual and labels
         * its pods, and the next one goes by the strategy. */
        snprintf(msg, sizeof(msg),
                 "%s: no labelled stable version of deployment %s runs yet, so this release "
                 "rolls out directly; the next one goes by the %s steps",
                 kind, dname, kind);
        if (strcmp(kind, "bluegreen") == 0 && !svc)
            snprintf(msg, sizeof(msg), "bluegreen needs a Service in the template: rolling out "
                                       "directly");
        else if (nginx && !svc && result != RF_ERR_NOTFOUND && strcmp(live_track, "stable") == 0)
            snprintf(msg, sizeof(msg), "canary with trafficRouting needs a Service in the "
                                       "template: rolling out directly");
        json_array_append_new(notes, json_string(msg));
        out = json_array();
        json_array_foreach(manifests, i, m)
            json_array_append(out, m == d ? stable : m);
        result = RF_OK;
        goto out;
    }
    /* The stable Deployment must be whole (a superseded canary may have shrunk it). */
    if (gint(json_object_get(live, "spec"), "replicas") != replicas) {
        result = gray_scale(kube, dns, dname, replicas, NULL, errstr, errstr_size);
        if (result != RF_OK)
            goto out;
        snprintf(msg, sizeof(msg), "scaled stable deployment %s back to %lld replicas", dname,
                 (long long)replicas);
        json_array_append_new(notes, json_string(msg));
    }
    out = json_array();
    *gray = json_pack("{s:s, s:s, s:s, s:I, s:O, s:I, s:s, s:I, s:I, s:[], s:[], s:I}", "kind",
                      kind, "namespace", dns, "stable", dname, "replicas", replicas,
                      "stable_manifest", stable, "timeout_ms", (json_int_t)timeout_s * 1000,
                      "state", "start", "step", (json_int_t)0, "weight", (json_int_t)0, "follow",
                      "seen", "rev", (json_int_t)0);
    if (strcmp(kind, "canary") == 0) {
        snprintf(name, sizeof(name), "%s-canary", dname);
        json_object_set_new(*gray, "canary", json_string(name));
        json_object_set(*gray, "steps", json_object_get(strategy, "steps"));
        json_array_foreach(manifests, i, m) {
            if (m == d)
                json_array_append_new(out, gray_variant(d, name, "canary", 0));
            else if (m == svc && nginx)
                continue; /* below */
            else
                json_array_append(out, m);
        }
        if (nginx) {
            result = gray_prepare_nginx(kube, nginx, manifests, svc, dns, *gray, out, errstr,
                                        errstr_size);
            if (result != RF_OK)
                goto out;
        }
    } else {
        const char *sname = gstr(json_object_get(svc, "metadata"), "name");
        json_t *active = json_deep_copy(svc), *preview = json_deep_copy(svc);
        char pname[300];
        snprintf(name, sizeof(name), "%s-preview", dname);
        snprintf(pname, sizeof(pname), "%s-preview", sname);
        json_object_set_new(*gray, "canary", json_string(name));
        json_object_set_new(*gray, "service", json_string(sname));
        json_object_set_new(*gray, "preview_service", json_string(pname));
        json_object_set(*gray, "scaleDownDelaySeconds",
                        json_object_get(strategy, "scaleDownDelaySeconds"));
        if (json_object_get(strategy, "autoPromotionSeconds"))
            json_object_set(*gray, "autoPromotionSeconds",
                            json_object_get(strategy, "autoPromotionSeconds"));
        gray_set_label(json_object_get(active, "spec"), "selector", NULL, NULL, "stable");
        json_object_set_new(json_object_get(preview, "metadata"), "name", json_string(pname));
        json_object_del(json_object_get(preview, "spec"), "clusterIP");
        json_object_del(json_object_get(preview, "spec"), "clusterIPs");
        gray_set_label(json_object_get(preview, "spec"), "selector", NULL, NULL, "preview");
        json_array_foreach(manifests, i, m) {
            if (m == d)
                json_array_append_new(out, gray_variant(d, name, "preview", replicas));
            else if (m == svc)
                json_array_append_new(out, active);
            else
                json_array_append(out, m);
        }
        json_array_append_new(out, preview);
    }
    result = RF_OK;
out:
    json_decref(stable);
    json_decref(live);
    if (result == RF_OK) {
        *to_apply = out;
    } else {
        json_decref(out);
        json_decref(*gray);
        *gray = NULL;
    }
    return result;
}

/* ---- state in PostgreSQL ---- */

static json_t *gray_state(gray_ctx_t *g)
{
    return json_object_get(g->t, "gray");
}

/* The release still holds its fence and PostgreSQL has the step state we know. */
static int gray_still_ours(gray_ctx_t *g)
{
    char fence_s[24], rev_s[24], errstr[512];
    const char *params[3] = {g->id, fence_s, rev_s};
    PGresult *res = NULL;
    int ok;

    snprintf(fence_s, sizeof(fence_s), "%lld", (long long)gint(g->t, "fence"));
    snprintf(rev_s, sizeof(rev_s), "%lld", (long long)gint(gray_state(g), "rev"));
    if (rf_db_exec(g->w->db,
                   "SELECT 1 FROM releases r JOIN services s USING (service, env) WHERE r.id = $1"
                   " AND r.fence = $2::bigint AND s.fence = $2::bigint AND r.status IN"
                   " ('progressing', 'paused') AND coalesce((r.track -> 'gray' ->> 'rev')::bigint,"
                   " 0) = $3::bigint",
                   3, params, &res, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("cannot check the fence: %s", errstr);
        return 0;
    }
    ok = PQntuples(res) == 1;
    PQclear(res);
    return ok;
}

/* Writes the new step state ng (stolen) with its timeline event in one fenced statement;
 * status NULL keeps the status; drop removes the oldest pending command. */
static gray_outcome_t gray_save(gray_ctx_t *g, json_t *ng, const char *status, const char *event,
                                const char *message, json_t *data, int drop, long long deadline)
{
    json_int_t rev = gint(gray_state(g), "rev");
    json_t *steps = json_object_get(ng, "steps");
    json_t *progress;
    char fence_s[24], rev_s[24], deadline_s[24], drop_s[4], errstr[512];
    char *gtext, *ptext, *dtext;
    PGresult *res = NULL;
    gray_outcome_t outcome = GRAY_LOST;
    rf_err_t result;

    json_object_set_new(ng, "rev", json_integer(rev + 1));
    progress = json_pack("{s:I, s:I, s:I, s:s}", "step",
                         (json_int_t)(gint(ng, "step") + (json_array_size(steps) >
                                                          (size_t)gint(ng, "step"))),
                         "steps", (json_int_t)json_array_size(steps), "weight", gint(ng, "weight"),
                         "phase", gstr(ng, "state"));
    if (gint(ng, "pause_until_ms") > 0 && strcmp(gstr(ng, "state"), "paused") == 0)
        json_object_set(progress, "pause_until_ms", json_object_get(ng, "pause_until_ms"));
    gtext = json_dumps(ng, JSON_COMPACT);
    ptext = json_dumps(progress, JSON_COMPACT);
    dtext = data ? json_dumps(data, JSON_COMPACT) : NULL;
    snprintf(fence_s, sizeof(fence_s), "%lld", (long long)gint(g->t, "fence"));
    snprintf(rev_s, sizeof(rev_s), "%lld", (long long)rev);
    snprintf(deadline_s, sizeof(deadline_s), "%lld", deadline);
    snprintf(drop_s, sizeof(drop_s), "%d", drop ? 1 : 0);
    {
        const char *params[11] = {g->id, fence_s, gtext,   ptext,     event, message,
                                  status, rev_s,  deadline_s, drop_s, dtext};
        result = rf_db_exec(
            g->w->db,
            "WITH u AS (UPDATE releases r SET track = jsonb_set(jsonb_set(jsonb_set(r.track,"
            " '{gray}', $3::jsonb), '{progress}', coalesce(r.track -> 'progress', '{}'::jsonb)"
            " || $4::jsonb), '{deadline_ms}', to_jsonb($9::bigint)) || CASE WHEN $10::int > 0"
            " THEN jsonb_build_object('commands', coalesce(r.track -> 'commands', '[]'::jsonb)"
            " - 0) ELSE '{}'::jsonb END, status = coalesce($7, r.status)"
            " WHERE r.id = $1 AND r.fence = $2::bigint AND r.status IN ('progressing', 'paused')"
            " AND coalesce((r.track -> 'gray' ->> 'rev')::bigint, 0) = $8::bigint AND EXISTS"
            " (SELECT 1 FROM services s WHERE s.service = r.service AND s.env = r.env"
            " AND s.fence = $2::bigint) RETURNING r.id)"
            " INSERT INTO timeline (release_id, stage, event, status, message, data)"
            " SELECT id, 'track', $5, $7, $6, $11::jsonb FROM u RETURNING 1",
            11, params, &res, errstr, sizeof(errstr));
    }
    if (result != RF_OK) {
        rf_log_warn("cannot record step: %s", errstr);
    } else if (PQntuples(res) == 1) {
        json_object_set_new(g->t, "gray", ng);
        ng = NULL;
        json_object_set_new(g->t, "deadline_ms", json_integer(deadline));
        rf_log_info("%s", message);
        outcome = GRAY_GOING;
    } else {
        rf_log_info("step state of release %s moved on elsewhere", g->id);
    }
    PQclear(res);
    free(gtext);
    free(ptext);
    free(dtext);
    json_decref(ng);
    json_decref(progress);
    json_decref(data);
    return outcome;
}

static long long gray_deadline(gray_ctx_t *g, const json_t *ng)
{
    return gint(ng, "timeout_ms") > 0 ? g->now_ms + gint(ng, "timeout_ms") : 0;
}

/* Notes a command as handled (against redelivery). */
static void gray_seen(json_t *ng, const json_t *command)
{
    json_t *seen = json_object_get(ng, "seen");

    if (!command || !json_is_array(seen))
        return;
    json_array_append_new(seen, json_string(gstr(command, "command_id")));
    while (json_array_size(seen) > GRAY_SEEN_MAX)
        json_array_remove(seen, 0);
}

/* ---- the steps ---- */

static gray_outcome_t gray_fail(gray_ctx_t *g, const char *fmt, const char *a, const char *b)
{
    snprintf(g->reason, sizeof(g->reason), fmt, a, b);
    return GRAY_FAILED;
}

/* Canary: every step passed (or promote --full): the stable Deployment takes the new
 * version by its own rolling update; the canary goes once that is done. */
static gray_outcome_t gray_promote_full(gray_ctx_t *g, json_t *ng, const char *why, int drop)
{
    json_t *stored = NULL;
    char errstr[1024], msg[1200];
    rf_err_t result;

    if (!gray_still_ours(g)) {
        json_decref(ng);
        return GRAY_LOST;
    }
    result = rf_kube_apply(g->kube, json_object_get(ng, "stable_manifest"), "relfleet", &stored,
                           errstr, sizeof(errstr));
    if (result != RF_OK) {
        rf_log_warn("cannot promote: %s", errstr);
        json_decref(ng);
        return GRAY_GOING; /* tried again at the next tick */
    }
    json_object_set_new(ng, "state", json_string("promoting"));
    json_object_set_new(ng, "weight", json_integer(100));
    json_object_set_new(ng, "step", json_integer((json_int_t)json_array_size(json_object_get(ng, "steps"))));
    json_object_set_new(ng, "follow",
                        json_pack("[{s:s, s:I}]", "name", gstr(ng, "stable"), "generation",
                                  gint(json_object_get(stored, "metadata"), "generation")));
    json_decref(stored);
    snprintf(msg, sizeof(msg), "promoting (%s): deployment %s rolls out the new version to %lld "
                               "replicas, then %s scales to 0",
             why, gstr(ng, "stable"), (long long)gint(ng, "replicas"), gstr(ng, "canary"));
    return gray_save(g, ng, "progressing", "step", msg, NULL, drop, gray_deadline(g, ng));
}

/* Canary: enters step ng.step (past the last one: the full promotion). */
static gray_outcome_t gray_enter_step(gray_ctx_t *g, json_t *ng, int drop)
{
    size_t n = json_array_size(json_object_get(ng, "steps"));
    size_t i = (size_t)gint(ng, "step");
    json_t *step = json_array_get(json_object_get(ng, "steps"), i);
    char msg[1200], errstr[1024];

    if (i >= n)
        return gray_promote_full(g, ng, "all steps passed", drop);
    if (json_object_get(step, "setWeight")) {
        int weight = (int)gint(step, "setWeight"), canary, stable;
        const char *ingress = gstr(ng, "canary_ingress");
        json_int_t gen = 0;
        rf_err_t result = RF_OK;
        if (*ingress)
            rf_strategy_canary_replicas_routed((int)gint(ng, "replicas"), weight, &canary,
                                               &stable);
        else
            rf_strategy_canary_replicas((int)gint(ng, "replicas"), weight, &canary, &stable);
        if (!gray_still_ours(g)) {
            json_decref(ng);
            return GRAY_LOST;
        }
        /* With a router, less weight goes before fewer pods; more weight waits for them
         * (gray_rolled_out). */
        if (*ingress && weight < gint(ng, "routed")) {
            result = gray_route(g->kube, gstr(ng, "namespace"), ingress, weight, errstr,
                                sizeof(errstr));
            if (result == RF_OK)
                json_object_set_new(ng, "routed", json_integer(weight));
        }
        if (result == RF_OK)
            result = gray_scale(g->kube, gstr(ng, "namespace"), gstr(ng, "canary"), canary, &gen,
                                errstr, sizeof(errstr));
        if (result == RF_OK)
            result = gray_scale(g->kube, gstr(ng, "namespace"), gstr(ng, "stable"), stable, NULL,
                                errstr, sizeof(errstr));
        if (result != RF_OK) {
            rf_log_warn("cannot set weight %d: %s", weight, errstr);
            json_decref(ng);
            return GRAY_GOING;
        }
        json_object_set_new(ng, "state", json_string("rollout"));
        json_object_set_new(ng, "weight", json_integer(weight));
        json_object_set_new(ng, "follow", json_pack("[{s:s, s:I}]", "name", gstr(ng, "canary"),
                                                    "generation", gen));
        if (*ingress)
            snprintf(msg, sizeof(msg),
                     "step %zu/%zu: setWeight %d: %s %d replicas, %s %d; ingress %s gets weight "
                     "%d once the canary pods are available",
                     i + 1, n, weight, gstr(ng, "canary"), canary, gstr(ng, "stable"), stable,
                     ingress, weight);
        else
            snprintf(msg, sizeof(msg), "step %zu/%zu: setWeight %d: %s %d replicas, %s %d", i + 1,
                     n, weight, gstr(ng, "canary"), canary, gstr(ng, "stable"), stable);
        return gray_save(g, ng, "progressing", "step", msg,
                         json_pack("{s:I, s:i, s:i, s:i}", "step", (json_int_t)i + 1, "weight",
                                   weight, "canary", canary, "stable", stable),
                         drop, gray_deadline(g, ng));
    }
    if (json_object_get(step, "pause")) {
        long long ms = gint(json_object_get(step, "pause"), "duration_ms");
        int timed = json_object_get(json_object_get(step, "pause"), "duration_ms") != NULL;
        json_object_set_new(ng, "state", json_string("paused"));
        json_object_set_new(ng, "pause_until_ms", json_integer(timed ? g->now_ms + ms : 0));
        if (timed)
            snprintf(msg, sizeof(msg), "step %zu/%zu: paused for %.1f s at weight %lld", i + 1, n,
                     (double)ms / 1000.0, (long long)gint(ng, "weight"));
        else
            snprintf(msg, sizeof(msg), "step %zu/%zu: paused at weight %lld until promoted", i + 1,
                     n, (long long)gint(ng, "weight"));
        return gray_save(g, ng, "paused", "paused", msg,
                         json_pack("{s:I, s:I}", "step", (json_int_t)i + 1, "pause_until_ms",
                                   gint(ng, "pause_until_ms")),
                         drop, 0);
    }
    {
        const json_t *m = json_object_get(step, "analysis");
        json_object_set_new(ng, "state", json_string("analysis"));
        json_object_set_new(ng, "analysis", json_pack("{s:i, s:i, s:i, s:I}", "measured", 0,
                                                      "failed", 0, "inconclusive", 0, "next_ms",
                                                      (json_int_t)g->now_ms));
        snprintf(msg, sizeof(msg),
                 "step %zu/%zu: analysis '%s': %lld measurement(s) every %.1f s, at most %lld "
                 "failed",
                 i + 1, n, gstr(m, "name"), (long long)gint(m, "count"),
                 (double)gint(m, "interval_ms") / 1000.0, (long long)gint(m, "failureLimit"));
        return gray_save(g, ng, "progressing", "step", msg, NULL, drop, 0);
    }
}

/* Blue-green: the active Service selects the preview pods from now on. */
static gray_outcome_t gray_switch(gray_ctx_t *g, json_t *ng, const char *why, int drop)
{
    char errstr[1024], msg[1200];
    long long delay = gint(ng, "scaleDownDelaySeconds") * 1000LL;

    if (!gray_still_ours(g)) {
        json_decref(ng);
        return GRAY_LOST;
    }
    if (gray_select(g->kube, gstr(ng, "namespace"), gstr(ng, "service"), "preview", errstr,
                    sizeof(errstr)) != RF_OK) {
        rf_log_warn("cannot switch service: %s", errstr);
        json_decref(ng);
        return GRAY_GOING;
    }
    json_object_set_new(ng, "state", json_string("switched"));
    json_object_set_new(ng, "weight", json_integer(100));
    json_object_set_new(ng, "scale_down_at_ms", json_integer(g->now_ms + delay));
    snprintf(msg, sizeof(msg),
             "promoted (%s): service %s selects the new version (%s); the old one is replaced "
             "in %.1f s",
             why, gstr(ng, "service"), gstr(ng, "canary"), (double)delay / 1000.0);
    return gray_save(g, ng, "progressing", "step", msg, NULL, drop, 0);
}

/* Blue-green, after the scale-down delay: the stable Deployment takes the new version
 * while the Service still selects the preview pods. */
static gray_outcome_t gray_bg_replace(gray_ctx_t *g, json_t *ng, int drop)
{
    json_t *stored = NULL;
    char errstr[1024], msg[1200];

    if (!gray_still_ours(g)) {
        json_decref(ng);
        return GRAY_LOST;
    }
    if (rf_kube_apply(g->kube, json_object_get(ng, "stable_manifest"), "relfleet", &stored,
                      errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("cannot replace the old version: %s", errstr);
        json_decref(ng);
        return GRAY_GOING;
    }
    json_object_set_new(ng, "state", json_string("promoting"));
    json_object_set_new(ng, "follow",
                        json_pack("[{s:s, s:I}]", "name", gstr(ng, "stable"), "generation",
                                  gint(json_object_get(stored, "metadata"), "generation")));
    json_decref(stored);
    snprintf(msg, sizeof(msg),
             "scale-down delay over: deployment %s replaces the old version with the new one",
             gstr(ng, "stable"));
    return gray_save(g, ng, "progressing", "step", msg, NULL, drop, gray_deadline(g, ng));
}

static gray_outcome_t gray_start(gray_ctx_t *g)
{
    json_t *ng = json_deep_copy(gray_state(g));
    char errstr[1024], msg[1200];
    json_t *live;
    rf_err_t result;

    if (strcmp(gstr(ng, "kind"), "canary") == 0)
        return gray_enter_step(g, ng, 0);
    live = gray_get_deploy(g->kube, gstr(ng, "namespace"), gstr(ng, "canary"), &result, errstr,
                           sizeof(errstr));
    if (result != RF_OK) {
        rf_log_warn("cannot read the preview: %s", errstr);
        json_decref(ng);
        return GRAY_GOING;
    }
    json_object_set_new(ng, "state", json_string("preview"));
    json_object_set_new(ng, "follow",
                        json_pack("[{s:s, s:I}]", "name", gstr(ng, "canary"), "generation",
                                  gint(json_object_get(live, "metadata"), "generation")));
    json_decref(live);
    snprintf(msg, sizeof(msg), "preview: deployment %s comes up behind service %s; service %s "
                               "keeps the old version",
             gstr(ng, "canary"), gstr(ng, "preview_service"), gstr(ng, "service"));
    return gray_save(g, ng, "progressing", "step", msg, NULL, 0, gray_deadline(g, ng));
}

/* ---- measurements in flight ----
 * A measurement (a Prometheus query, a web check) runs on a thread of its own, so that a
 * slow provider delays only its own release and never the track loop. Only the track
 * thread touches the list; a probe's thread writes its result, then sets done. A result
 * counts only if the release is still at the same measurement of the same step when it
 * is claimed (a promote, an abort or another worker may have moved it on); results
 * nobody claims are dropped GRAY_PROBE_UNCLAIMED_MS after they came. A worker killed
 * meanwhile loses nothing: the state in PostgreSQL still asks for the measurement. */
#define GRAY_PROBE_UNCLAIMED_MS 10000

typedef struct gray_probe {
    struct gray_probe *next;
    char id[64];
    json_int_t step, measured; /* where the release was when it started */
    json_t *metric;            /* the thread's own copy */
    pthread_t thread;
    int threaded; /* 0: measured on the track thread (no thread could be started) */
    atomic_int done;
    long long done_ms; /* when the track thread first saw it done */
    rf_analysis_verdict_t verdict;
    json_t *value;
    char text[700];
} gray_probe_t;

static gray_probe_t *gray_probes;

static void *gray_probe_run(void *arg)
{
    gray_probe_t *p = arg;

    p->verdict = rf_analysis_measure(p->metric, &p->value, p->text, sizeof(p->text));
    atomic_store_explicit(&p->done, 1, memory_order_release);
    return NULL;
}

static void gray_probe_free(gray_probe_t *p)
{
    if (p->threaded)
        pthread_join(p->thread, NULL);
    json_decref(p->metric);
    json_decref(p->value);
    free(p);
}

/* Unlinks and frees the probes that pred(p, arg) picks (only done ones unless all). */
static void gray_probes_drop(int (*pred)(gray_probe_t *, const void *), const void *arg)
{
    gray_probe_t **pp = &gray_probes;

    while (*pp) {
        gray_probe_t *p = *pp;
        if (pred(p, arg)) {
            *pp = p->next;
            gray_probe_free(p);
        } else {
            pp = &p->next;
        }
    }
}

static int gray_probe_unclaimed(gray_probe_t *p, const void *arg)
{
    long long now_ms = *(const long long *)arg;

    if (!atomic_load_explicit(&p->done, memory_order_acquire))
        return 0;
    if (!p->done_ms)
        p->done_ms = now_ms;
    return now_ms - p->done_ms >= GRAY_PROBE_UNCLAIMED_MS;
}

static int gray_probe_any(gray_probe_t *p, const void *arg)
{
    (void)p;
    (void)arg;
    return 1;
}

size_t gray_probes_reap(long long now_ms)
{
    size_t n = 0;

    gray_probes_drop(gray_probe_unclaimed, &now_ms);
    for (gray_probe_t *p = gray_probes; p; p = p->next)
        n++;
    return n;
}

void gray_probes_shutdown(void)
{
    gray_probes_drop(gray_probe_any, NULL); /* each ends within its metric's timeout */
}

/* The measurement of the running analysis step: 1 and *out filled when its result is in,
 * 0 while it runs (started now if it was not). */
static int gray_probe_result(gray_ctx_t *g, const json_t *metric, json_int_t step,
                             json_int_t measured, gray_probe_t **out)
{
    gray_probe_t **pp = &gray_probes, *p;

    for (; *pp; pp = &(*pp)->next) {
        p = *pp;
        if (strcmp(p->id, g->id) != 0)
            continue;
        if (!atomic_load_explicit(&p->done, memory_order_acquire))
            return 0;
        *pp = p->next;
        if (p->step == step && p->measured == measured) {
            *out = p;
            return 1;
        }
        gray_probe_free(p); /* for an earlier point of the release: start anew */
        break;
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        abort();
    snprintf(p->id, sizeof(p->id), "%s", g->id);
    p->step = step;
    p->measured = measured;
    p->metric = json_deep_copy(metric);
    atomic_init(&p->done, 0);
    if (pthread_create(&p->thread, NULL, gray_probe_run, p) != 0) {
        gray_probe_run(p); /* no thread to be had: measure here, as before */
        *out = p;
        return 1;
    }
    p->threaded = 1;
    p->next = gray_probes;
    gray_probes = p;
    return 0;
}

/* One measurement of the running analysis step, once its result is in. */
static gray_outcome_t gray_measure(gray_ctx_t *g)
{
    json_t *gs = gray_state(g), *ng;
    json_t *an;
    size_t i = (size_t)gint(gs, "step"), n = json_array_size(json_object_get(gs, "steps"));
    const json_t *m;
    json_t *value = NULL, *data;
    char text[700], msg[1200];
    rf_analysis_verdict_t v;
    json_int_t measured, failed, inconclusive;
    gray_outcome_t outcome;
    gray_probe_t *probe = NULL;

    m = json_object_get(json_array_get(json_object_get(gs, "steps"), i), "analysis");
    if (!gray_probe_result(g, m, (json_int_t)i, gint(json_object_get(gs, "analysis"), "measured"),
                           &probe))
        return GRAY_GOING;
    v = probe->verdict;
    value = probe->value;
    probe->value = NULL;
    snprintf(text, sizeof(text), "%s", probe->text);
    gray_probe_free(probe);
    ng = json_deep_copy(gs);
    an = json_object_get(ng, "analysis");
    m = json_object_get(json_array_get(json_object_get(ng, "steps"), i), "analysis");
    measured = gint(an, "measured") + 1;
    failed = gint(an, "failed") + (v == RF_ANALYSIS_FAILED);
    inconclusive = gint(an, "inconclusive") + (v == RF_ANALYSIS_INCONCLUSIVE);
    json_object_set_new(an, "measured", json_integer(measured));
    json_object_set_new(an, "failed", json_integer(failed));
    json_object_set_new(an, "inconclusive", json_integer(inconclusive));
    json_object_set_new(an, "next_ms", json_integer(g->now_ms + gint(m, "interval_ms")));
    snprintf(msg, sizeof(msg), "analysis '%s' %lld/%lld: %s: %s", gstr(m, "name"),
             (long long)measured, (long long)gint(m, "count"), rf_analysis_verdict_name(v), text);
    data = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I}", "metric", gstr(m, "name"), "verdict",
                     rf_analysis_verdict_name(v), "value", value ? value : json_null(),
                     "measured", measured, "failed", failed, "inconclusive", inconclusive);
    if (failed > gint(m, "failureLimit")) {
        snprintf(g->reason, sizeof(g->reason), "analysis '%s' failed: %s", gstr(m, "name"), text);
        json_object_set_new(ng, "state", json_string("failed"));
        json_object_set_new(ng, "reason", json_string(g->reason));
        outcome = gray_save(g, ng, NULL, "analysis", msg, data, 0, 0);
        return outcome == GRAY_GOING ? GRAY_FAILED : outcome;
    }
    if (inconclusive > gint(m, "inconclusiveLimit")) {
        json_object_set_new(ng, "state", json_string("paused"));
        json_object_set_new(ng, "pause_until_ms", json_integer(0));
        json_object_set_new(ng, "inconclusive", json_true());
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
                 "; step %zu/%zu inconclusive: paused until promoted or aborted", i + 1, n);
        return gray_save(g, ng, "paused", "analysis", msg, data, 0, 0);
    }
    if (measured < gint(m, "count"))
        return gray_save(g, ng, NULL, "analysis", msg, data, 0, 0);
    outcome = gray_save(g, ng, NULL, "analysis", msg, data, 0, 0);
    if (outcome != GRAY_GOING)
        return outcome;
    ng = json_deep_copy(gray_state(g));
    json_object_set_new(ng, "step", json_integer(gint(ng, "step") + 1));
    return gray_enter_step(g, ng, 0);
}

static gray_outcome_t gray_command(gray_ctx_t *g, const json_t *command)
{
    json_t *ng = json_deep_copy(gray_state(g));
    const char *action = gstr(command, "action");
    const char *state = gstr(ng, "state");
    int canary = strcmp(gstr(ng, "kind"), "canary") == 0;
    int full = json_is_true(json_object_get(command, "full"));
    char why[300], msg[600], errstr[1024];

    gray_seen(ng, command);
    if (strcmp(action, "abort") == 0) {
        json_decref(ng);
        if (gray_undo(g, errstr, sizeof(errstr)) != RF_OK) {
            rf_log_warn("cannot abort yet: %s", errstr);
            return GRAY_GOING; /* the command stays pending: tried again */
        }
        return gray_fail(g, "aborted by %s%s", gstr(command, "operator"), "");
    }
    snprintf(why, sizeof(why), "promote%s by %s", full ? " --full" : "",
             gstr(command, "operator"));
    if (strcmp(state, "promoting") == 0 || strcmp(state, "finishing") == 0 ||
        strcmp(state, "start") == 0 ||
        (!canary && strcmp(state, "switched") == 0 && !full)) {
        snprintf(msg, sizeof(msg), "%s changes nothing now (%s)", why, state);
        return gray_save(g, ng, NULL, "promote", msg, NULL, 1, gint(g->t, "deadline_ms"));
    }
    if (!canary) {
        if (strcmp(state, "switched") == 0)
            return gray_bg_replace(g, ng, 1);
        return gray_switch(g, ng, why, 1);
    }
    if (full)
        return gray_promote_full(g, ng, why, 1);
    json_object_set_new(ng, "step", json_integer(gint(ng, "step") + 1));
    json_object_del(ng, "inconclusive");
    {
        /* The step the promotion ends, on the timeline before the next one starts. */
        json_t *copy = json_deep_copy(ng);
        gray_outcome_t outcome;
        snprintf(msg, sizeof(msg), "%s: step %lld/%zu done", why, (long long)gint(ng, "step"),
                 json_array_size(json_object_get(ng, "steps")));
        json_object_set_new(copy, "step", json_integer(gint(ng, "step") - 1));
        outcome = gray_save(g, copy, NULL, "promote", msg, NULL, 1, gint(g->t, "deadline_ms"));
        if (outcome != GRAY_GOING) {
            json_decref(ng);
            return outcome;
        }
        json_object_set_new(ng, "rev", json_integer(gint(gray_state(g), "rev")));
        return gray_enter_step(g, ng, 0);
    }
}

/* Records that a Kubernetes write of the current state failed, so that gray_tick tries it
 * again: no watch event would bring the release back otherwise. */
static gray_outcome_t gray_retry_later(gray_ctx_t *g, const char *state, const char *what)
{
    json_t *ng = json_deep_copy(gray_state(g));
    char msg[1200];

    if (strcmp(gstr(ng, "state"), state) == 0) {
        json_decref(ng);
        return GRAY_GOING;
    }
    json_object_set_new(ng, "state", json_string(state));
    snprintf(msg, sizeof(msg), "%s: tried again shortly", what);
    return gray_save(g, ng, NULL, "step", msg, NULL, 0, gint(g->t, "deadline_ms"));
}

/* Canary: the pods of a setWeight step are available; with a router the canary Ingress
 * now gets the step's weight; then the next step. */
static gray_outcome_t gray_weighted(gray_ctx_t *g)
{
    json_t *ng = json_deep_copy(gray_state(g));
    const char *ingress = gstr(ng, "canary_ingress");
    char errstr[1024], what[1400];

    if (*ingress) {
        if (!gray_still_ours(g)) {
            json_decref(ng);
            return GRAY_LOST;
        }
        if (gray_route(g->kube, gstr(ng, "namespace"), ingress, gint(ng, "weight"), errstr,
                       sizeof(errstr)) != RF_OK) {
            snprintf(what, sizeof(what), "cannot set weight %lld on ingress %s: %s",
                     (long long)gint(ng, "weight"), ingress, errstr);
            rf_log_warn("%s", what);
            json_decref(ng);
            return gray_retry_later(g, "routing", what);
        }
        json_object_set_new(ng, "routed", json_integer(gint(ng, "weight")));
    }
    json_object_set_new(ng, "step", json_integer(gint(ng, "step") + 1));
    return gray_enter_step(g, ng, 0);
}

/* The stable Deployment runs the new version: the traffic and the Service go back to it,
 * the canary or preview to zero, and the release succeeds. */
static gray_outcome_t gray_finish(gray_ctx_t *g)
{
    json_t *gs = gray_state(g);
    const char *ns = gstr(gs, "namespace"), *ingress = gstr(gs, "canary_ingress");
    char errstr[1024], what[1400];
    rf_err_t result = RF_OK;

    if (!gray_still_ours(g))
        return GRAY_LOST;
    if (strcmp(gstr(gs, "kind"), "canary") != 0) {
        result = gray_select(g->kube, ns, gstr(gs, "service"), "stable", errstr, sizeof(errstr));
        if (result != RF_OK)
            snprintf(what, sizeof(what), "cannot switch service %s back to the stable "
                                         "deployment: %s",
                     gstr(gs, "service"), errstr);
    } else if (*ingress) {
        result = gray_route(g->kube, ns, ingress, 0, errstr, sizeof(errstr));
        if (result != RF_OK)
            snprintf(what, sizeof(what), "cannot set weight 0 on ingress %s: %s", ingress,
                     errstr);
    }
    if (result == RF_OK) {
        result = gray_scale(g->kube, ns, gstr(gs, "canary"), 0, NULL, errstr, sizeof(errstr));
        if (result != RF_OK)
            snprintf(what, sizeof(what), "cannot scale %s down: %s", gstr(gs, "canary"), errstr);
    }
    if (result != RF_OK) {
        rf_log_warn("%s", what);
        return gray_retry_later(g, "finishing", what);
    }
    return GRAY_SUCCEEDED;
}

gray_outcome_t gray_tick(gray_ctx_t *g, const json_t *command)
{
    json_t *gs = gray_state(g);
    const char *state = gstr(gs, "state");

    if (strcmp(state, "failed") == 0) /* decided; the undo or the end is to be retried */
        return gray_fail(g, "%s%s", gstr(gs, "reason"), "");
    if (command)
        return gray_command(g, command);
    if (strcmp(state, "start") == 0)
        return gray_start(g);
    if (strcmp(state, "routing") == 0)
        return gray_weighted(g);
    if (strcmp(state, "finishing") == 0)
        return gray_finish(g);
    if (strcmp(state, "paused") == 0 && gint(gs, "pause_until_ms") > 0 &&
        g->now_ms >= gint(gs, "pause_until_ms")) {
        json_t *ng = json_deep_copy(gs);
        if (strcmp(gstr(ng, "kind"), "canary") != 0)
            return gray_switch(g, ng, "autoPromotionSeconds passed", 0);
        json_object_set_new(ng, "step", json_integer(gint(ng, "step") + 1));
        return gray_enter_step(g, ng, 0);
    }
    if (strcmp(state, "analysis") == 0 &&
        g->now_ms >= gint(json_object_get(gs, "analysis"), "next_ms"))
        return gray_measure(g);
    if (strcmp(state, "switched") == 0 && g->now_ms >= gint(gs, "scale_down_at_ms"))
        return gray_bg_replace(g, json_deep_copy(gs), 0);
    return GRAY_GOING;
}

gray_outcome_t gray_rolled_out(gray_ctx_t *g)
{
    json_t *gs = gray_state(g);
    const char *state = gstr(gs, "state");
    char msg[1200];

    if (strcmp(state, "rollout") == 0)
        return gray_weighted(g);
    if (strcmp(state, "preview") == 0) {
        json_t *ng = json_deep_copy(gs);
        json_int_t autop = json_is_integer(json_object_get(ng, "autoPromotionSeconds"))
                               ? gint(ng, "autoPromotionSeconds")
                               : -1;
        json_object_set_new(ng, "state", json_string("paused"));
        json_object_set_new(ng, "pause_until_ms",
                            json_integer(autop >= 0 ? g->now_ms + autop * 1000 : 0));
        if (autop >= 0)
            snprintf(msg, sizeof(msg), "preview %s is ready behind service %s: promoted "
                                       "automatically in %lld s",
                     gstr(ng, "canary"), gstr(ng, "preview_service"), (long long)autop);
        else
            snprintf(msg, sizeof(msg), "preview %s is ready behind service %s: paused until "
                                       "promoted",
                     gstr(ng, "canary"), gstr(ng, "preview_service"));
        return gray_save(g, ng, "paused", "paused", msg, NULL, 0, 0);
    }
    if (strcmp(state, "promoting") != 0)
        return GRAY_GOING;
    return gray_finish(g);
}

rf_err_t gray_undo(gray_ctx_t *g, char *errstr, size_t errstr_size)
{
    json_t *gs = gray_state(g);
    const char *ns = gstr(gs, "namespace");
    rf_err_t result = RF_OK;

    if (strcmp(gstr(gs, "kind"), "canary") == 0) {
        if (*gstr(gs, "canary_ingress"))
            result = gray_route(g->kube, ns, gstr(gs, "canary_ingress"), 0, errstr, errstr_size);
        if (result == RF_OK)
            result = gray_scale(g->kube, ns, gstr(gs, "stable"), gint(gs, "replicas"), NULL,
                                errstr, errstr_size);
        if (result == RF_OK)
            result = gray_scale(g->kube, ns, gstr(gs, "canary"), 0, NULL, errstr, errstr_size);
        return result;
    }
    if (strcmp(gstr(gs, "state"), "promoting") != 0)
        result = gray_select(g->kube, ns, gstr(gs, "service"), "stable", errstr, errstr_size);
    else /* the stable Deployment already rolls the new version: keep serving from it */
        result = RF_OK;
    if (result == RF_OK && strcmp(gstr(gs, "state"), "promoting") != 0)
        result = gray_scale(g->kube, ns, gstr(gs, "canary"), 0, NULL, errstr, errstr_size);
    return result;
}

rf_err_t gray_queue_command(rf_db_t *db, const json_t *cmd, int *queued, char *errstr,
                            size_t errstr_size)
{
    char *text = json_dumps(cmd, JSON_COMPACT);
    const char *params[3] = {gstr(cmd, "release_id"), text, gstr(cmd, "command_id")};
    PGresult *res = NULL;
    rf_err_t result;

    *queued = 0;
    result = rf_db_exec(
        db,
        "WITH r AS (SELECT id, track, status FROM releases WHERE id = $1 AND status IN"
        " ('applying', 'progressing', 'paused') AND (track ? 'gray' OR (status = 'applying' AND"
        " EXISTS (SELECT 1 FROM services s, releases x WHERE x.id = $1 AND s.service = x.service"
        " AND s.env = x.env AND s.strategy IS NOT NULL AND s.strategy <> '{}'::jsonb AND"
        " s.strategy <> 'null'::jsonb))) FOR UPDATE),"
        " u AS (UPDATE releases x SET track = coalesce(x.track, '{}'::jsonb) ||"
        " jsonb_build_object('commands', coalesce(x.track -> 'commands', '[]'::jsonb) ||"
        " jsonb_build_array($2::jsonb)) FROM r WHERE x.id = r.id AND NOT coalesce(r.track ->"
        " 'gray' -> 'seen', '[]'::jsonb) ? $3 AND NOT coalesce(r.track -> 'commands',"
        " '[]'::jsonb) @> jsonb_build_array(jsonb_build_object('command_id', $3::text))"
        " RETURNING 1) SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM u)",
        3, params, &res, errstr, errstr_size);
    free(text);
    if (result == RF_OK)
        *queued = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    PQclear(res);
    return result;
}
