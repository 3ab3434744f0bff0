/* Render-time validation: the service's cluster, its cached schema, the verdict. */
#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rf_kschema.h"
#include "rf_log.h"
#include "rf_metrics.h"

#define VALIDATE_CLUSTERS 16
#define VALIDATE_MAX_ERRORS 50 /* kept per release */
#define VALIDATE_SHOWN 10      /* named in the reason; the others are counted */

struct render_validator {
    rf_worker_t *w;
    rf_kschema_cache_t *cache;
    struct {
        char *name; /* kubeconfig context; "" for the default one */
        rf_kube_t *kube;
    } clusters[VALIDATE_CLUSTERS];
    int nclusters;
};

render_validator_t *render_validator_new(rf_worker_t *w)
{
    render_validator_t *v = calloc(1, sizeof(*v));

    if (!v)
        abort();
    v->w = w;
    v->cache = rf_kschema_cache_new(w->conf->render_schema_recheck_ms);
    return v;
}

void render_validator_destroy(render_validator_t *v)
{
    if (!v)
        return;
    rf_kschema_cache_destroy(v->cache);
    for (int i = 0; i < v->nclusters; i++) {
        rf_kube_destroy(v->clusters[i].kube);
        free(v->clusters[i].name);
    }
    free(v);
}

/* The client of a cluster, created on first use; NULL without a kubeconfig (the built-in
 * schema then). A context the kubeconfig lacks is an error. */
static rf_err_t validator_kube(render_validator_t *v, const char *name, rf_kube_t **out,
                               char *errstr, size_t errstr_size)
{
    rf_kubeconfig_t *cfg;
    rf_kube_t *k;

    *out = NULL;
    if (!v->w->conf->kubeconfig)
        return RF_OK;
    for (int i = 0; i < v->nclusters; i++) {
        if (strcmp(v->clusters[i].name, name) == 0) {
            *out = v->clusters[i].kube;
            return RF_OK;
        }
    }
    if (v->nclusters == VALIDATE_CLUSTERS)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "too many clusters");
    cfg = rf_kubeconfig_load(v->w->conf->kubeconfig, *name ? name : v->w->conf->kube_context,
                             errstr, errstr_size);
    if (!cfg)
        return RF_ERR_PERM;
    k = rf_kube_new(cfg, errstr, errstr_size);
    rf_kubeconfig_destroy(cfg);
    if (!k)
        return RF_ERR_PERM;
    /* the render stage waits for these: a few quick tries, then the release is retried */
    rf_kube_set_retry(k, 2, 100, 1000);
    rf_kube_set_timeouts(k, 2000, 10000);
    v->clusters[v->nclusters].name = strdup(name);
    if (!v->clusters[v->nclusters].name)
        abort();
    v->clusters[v->nclusters++].kube = k;
    *out = k;
    return RF_OK;
}

static void count(const char *outcome)
{
    rf_metrics_add(rf_metrics_counter("relfleet_render_validations_total",
                                      "Rendered releases checked against a cluster schema, by"
                                      " outcome",
                                      "outcome"),
                   RF_LABELS(outcome), 1);
}

rf_err_t render_validate(render_validator_t *v, const rf_render_template_t *tpl,
                         const char *template_id, const json_t *values, const json_t *manifests,
                         const char *env, const char *service_cluster, char **warnings,
                         char *reason, size_t reason_size, char *errstr, size_t errstr_size)
{
    const char *mode = v->w->conf->render_validation;
    char cluster[256], head[600], list[4096];
    rf_kube_t *k = NULL;
    rf_kschema_t *schema = NULL;
    json_t *errors = NULL;
    rf_err_t result;

    *warnings = NULL;
    if (!mode || strcmp(mode, "off") == 0)
        return RF_OK;
    rf_worker_cluster(v->w, env, service_cluster, cluster, sizeof(cluster));
    if (validator_kube(v, cluster, &k, errstr, errstr_size) != RF_OK) {
        /* the apply stage fails the release with this reason; check what we can meanwhile */
        rf_log_warn("checking manifests against the built-in schema: %s", errstr);
        k = NULL;
    }
    result = rf_kschema_cache_get(v->cache, cluster, k, &schema, errstr, errstr_size);
    if (result == RF_OK) {
        errors = json_array();
        if (!errors)
            abort();
        result = rf_kschema_validate_render(schema, k, tpl, values, manifests, errors,
                                            VALIDATE_MAX_ERRORS, errstr, errstr_size);
    }
    if (result == RF_ERR_RETRY || (result != RF_OK && !errors)) {
        /* no verdict: the release stays queued and is tried again */
        char why[1024];
        snprintf(why, sizeof(why), "%s", errstr);
        count("unreachable");
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                         "cannot read the schema of cluster '%s' to check release manifests: %s",
                         *cluster ? cluster : "(default)", why);
        goto out;
    }
    if (result == RF_OK) {
        count("valid");
        goto out;
    }
    {
        json_t *shown = json_array();
        size_t n = json_array_size(errors);
        for (size_t i = 0; i < n && i < VALIDATE_SHOWN; i++)
            json_array_append(shown, json_array_get(errors, i));
        rf_kschema_errors_text(shown, n, list, sizeof(list));
        json_decref(shown);
        snprintf(head, sizeof(head), "invalid manifests from template '%s' (%zu error%s, against %s)",
                 template_id, n, n == 1 ? "" : "s", rf_kschema_describe(schema));
    }
    if (strcmp(mode, "warn") == 0) {
        count("warned");
        *warnings = malloc(strlen(head) + strlen(list) + 3);
        if (!*warnings)
            abort();
        sprintf(*warnings, "%s: %s", head, list);
        result = RF_OK;
        goto out;
    }
    count("invalid");
    snprintf(reason, reason_size, "%s: %s", head, list);
    result = RF_ERR_PERM;
out:
    json_decref(errors);
    return result;
}
