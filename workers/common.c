/* Shared stage steps: the end of a release and the hand-over to the next queued one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_release.h"
#include "rf_store.h"

const char *rf_worker_cluster(const rf_worker_t *w, const char *env, const char *service_cluster,
                              char *buf, size_t size)
{
    const char *p = w->conf->clusters;
    size_t n = strlen(env);

    buf[0] = '\0';
    if (service_cluster && *service_cluster) {
        snprintf(buf, size, "%s", service_cluster);
        return buf;
    }
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > n && strncmp(p, env, n) == 0 && p[n] == '=') {
            snprintf(buf, size, "%.*s", (int)(len - n - 1), p + n + 1);
            break;
        }
        p = comma ? comma + 1 : NULL;
    }
    return buf;
}

rf_kube_t *rf_worker_kube_probe_new(const rf_worker_t *w, char *errstr, size_t errstr_size)
{
    rf_kubeconfig_t *cfg;
    rf_kube_t *k;

    if (!w->conf->kubeconfig) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "no kubeconfig configured (RELFLEET_KUBECONFIG)");
        return NULL;
    }
    cfg = rf_kubeconfig_load(w->conf->kubeconfig, w->conf->kube_context, errstr, errstr_size);
    if (!cfg)
        return NULL;
    k = rf_kube_new(cfg, errstr, errstr_size);
    rf_kubeconfig_destroy(cfg);
    if (k) {
        rf_kube_set_retry(k, 1, 10, 10);
        rf_kube_set_timeouts(k, 1000, 2000);
    }
    return k;
}

int rf_worker_kube_ready(rf_kube_t *probe)
{
    static int last = -1;
    json_t *version = NULL;
    char errstr[512];
    int ok;

    ok = probe && rf_kube_get(probe, "/version", &version, errstr, sizeof(errstr)) == RF_OK;
    json_decref(version);
    if (ok != last)
        rf_log_info("kubernetes api server %s%s%s", ok ? "reachable" : "not reachable",
                    ok ? "" : ": ", ok ? "" : errstr);
    last = ok;
    return ok;
}

rf_err_t rf_worker_publish_result(rf_worker_t *w, const char *release_id, const char *key,
                                  char *errstr, size_t errstr_size)
{
    char *text = NULL;
    rf_err_t result = rf_store_result(w->db, release_id, &text, errstr, errstr_size);

    if (result == RF_ERR_NOTFOUND)
        return RF_OK;
    if (result != RF_OK)
        return result;
    result = rf_producer_send(w->producer, "results", key, text, strlen(text), errstr,
                              errstr_size);
    free(text);
    return result;
}

rf_err_t rf_worker_kick_next(rf_worker_t *w, const char *service, const char *env,
                             char *errstr, size_t errstr_size)
{
    const char *params[2] = {service, env};
    PGresult *res = NULL;
    char key[300];
    rf_err_t result;

    result = rf_db_exec(w->db,
                        "SELECT request::text FROM releases WHERE service = $1 AND env = $2"
                        " AND status = 'queued' ORDER BY created_at, id LIMIT 1",
                        2, params, &res, errstr, errstr_size);
    if (result != RF_OK || PQntuples(res) == 0) {
        PQclear(res);
        return result;
    }
    snprintf(key, sizeof(key), "%s/%s", env, service);
    result = rf_producer_send(w->producer, "requests", key, PQgetvalue(res, 0, 0),
                              (size_t)PQgetlength(res, 0, 0), errstr, errstr_size);
    PQclear(res);
    return result;
}

rf_err_t rf_worker_end_release(rf_worker_t *w, const char *release_id, const char *service,
                               const char *env, int64_t fence, const char *status,
                               const char *error, const json_t *pods, char *errstr,
                               size_t errstr_size)
{
    char key[300], msg[1200], unlock_err[256];
    rf_err_t result;

    snprintf(key, sizeof(key), "%s/%s", env, service);
    if (pods && json_array_size(pods) > 0) {
        char *text = json_dumps(pods, JSON_COMPACT);
        char fence_s[24];
        const char *params[3] = {release_id, text, fence_s};
        snprintf(fence_s, sizeof(fence_s), "%lld", (long long)fence);
        result = rf_db_exec(w->db,
                            "UPDATE releases SET pods = $2::jsonb WHERE id = $1 AND fence = $3"
                            " AND status NOT IN (" RF_RELEASE_TERMINAL_SQL ")",
                            3, params, NULL, errstr, errstr_size);
        free(text);
        if (result != RF_OK)
            return result;
    }
    if (error)
        snprintf(msg, sizeof(msg), "%s: %s", status, error);
    else
        snprintf(msg, sizeof(msg), "release %s", status);
    result = rf_store_finish(w->db, release_id, fence, status, error, w->stage, msg, errstr,
                             errstr_size);
    if (result == RF_ERR_FENCED)
        return result;
    if (result != RF_OK && result != RF_ERR_NOTFOUND)
        return result;
    if (result == RF_OK) {
        rf_log_info("release ended %s%s%s", status, error ? ": " : "", error ? error : "");
        rf_metrics_add(rf_metrics_counter("relfleet_releases_finished_total",
                                          "Releases that reached a terminal state", "status"),
                       RF_LABELS(status), 1);
    }
    if (w->lock)
        rf_lock_release(w->lock, env, service, release_id, unlock_err, sizeof(unlock_err));
    result = rf_worker_publish_result(w, release_id, key, errstr, errstr_size);
    if (result == RF_OK)
        result = rf_worker_kick_next(w, service, env, errstr, errstr_size);
    return result;
}
