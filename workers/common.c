/* Shared stage steps: the end of a release and the hand-over to the next queued one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rf_cloudevents.h"
#include "rf_lock.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_release.h"
#include "rf_store.h"

const char *rf_worker_cluster(const rf_worker_t *w, const char *env, const char *service_cluster,
                              char *buf, size_t size)
{
    return rf_config_cluster(w->conf, env, service_cluster, buf, size);
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

rf_err_t rf_worker_send_result(rf_worker_t *w, const char *key, const char *text, size_t len,
                               char *errstr, size_t errstr_size)
{
    rf_cloudevent_t ev;
    char source[256];
    rf_err_t result;

    rf_cloudevents_source(w->conf, source, sizeof(source));
    result = rf_cloudevent_from_text(text, len, source, &ev, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    return rf_producer_send_headers(w->producer, "results", key, text, len,
                                    rf_cloudevent_kafka_headers(&ev), errstr, errstr_size);
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
    result = rf_worker_send_result(w, key, text, strlen(text), errstr, errstr_size);
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

int rf_worker_results_hold_s(const rf_worker_t *w)
{
    /* rf_producer_batch_end waits at most kafka_timeout_ms and 5 s more. */
    return (w->conf->kafka_timeout_ms + 5000) / 1000 + 2;
}

void rf_worker_count_lock_renewals(size_t renewed, size_t lost, size_t failed)
{
    rf_metric_t *m = rf_metrics_counter("relfleet_lock_renewals_total",
                                        "Renewals of service locks, by outcome: renewed, lost"
                                        " (no longer the release's), failed (a Redis error)",
                                        "outcome");

    rf_metrics_add(m, RF_LABELS("renewed"), (double)renewed);
    rf_metrics_add(m, RF_LABELS("lost"), (double)lost);
    rf_metrics_add(m, RF_LABELS("failed"), (double)failed);
}

/* Ends n releases; scope: wrap the produces in a batch scope of our own (not inside a poll
 * batch, whose scope the loop owns); owed: their results are owed until delivered (with a
 * scope, cleared here after its deliveries; without, by the poll loop after the batch's,
 * rf_worker_owed_delivered). */
static rf_err_t worker_end(rf_worker_t *w, rf_worker_end_t *ends, size_t n, int scope,
                           int owed, char *errstr, size_t errstr_size)
{
    json_t *rows = json_array(), *kicked = json_object();
    const char **ids = calloc(n ? n : 1, sizeof(*ids));
    rf_lock_item_t *locks = calloc(n ? n : 1, sizeof(*locks));
    size_t nlocks = 0, k = 0;
    PGresult *res = NULL;
    char msg[1200], unlock_err[256];
    rf_err_t result, delivered;

    if (!rows || !kicked || !ids || !locks)
        abort();
    for (size_t i = 0; i < n; i++) {
        rf_worker_end_t *e = &ends[i];
        if (e->error)
            snprintf(msg, sizeof(msg), "%s: %s", e->status, e->error);
        else
            snprintf(msg, sizeof(msg), "release %s", e->status);
        json_array_append_new(rows, json_pack("{s:s, s:I, s:s, s:s?, s:s, s:O?, s:s?, s:O?}",
                                              "id", e->release_id, "fence", (json_int_t)e->fence,
                                              "status", e->status, "error", e->error, "message",
                                              msg, "pods", (json_t *)e->pods, "pmessage",
                                              e->progress_message, "progress",
                                              (json_t *)e->progress));
        ids[i] = e->release_id;
        e->result = RF_ERR_FENCED;
    }
    /* Outside a poll batch (scope) no consumed message covers the results message: it is
     * owed until delivered, and the claim holds past our delivery wait before a sweep may
     * send it instead. */
    result = rf_store_end_many(w->db, rows, w->stage, owed ? rf_worker_results_hold_s(w) : -1,
                               &res, errstr, errstr_size);
    if (result != RF_OK)
        goto out;
    /* Rows come in the order of ends (those that exist): the terminal ones are published. */
    for (int row = 0; row < PQntuples(res); row++) {
        while (k < n && strcmp(ends[k].release_id, PQgetvalue(res, row, 0)) != 0)
            k++;
        if (k == n)
            break;
        if (strcmp(PQgetvalue(res, row, 1), "t") == 0) {
            rf_log_ctx_set("release", ends[k].release_id);
            rf_log_ctx_set("service", ends[k].service);
            rf_log_info("release ended %s%s%s", ends[k].status, ends[k].error ? ": " : "",
                        ends[k].error ? ends[k].error : "");
            rf_metrics_add(rf_metrics_counter("relfleet_releases_finished_total",
                                              "Releases that reached a terminal state", "status"),
                           RF_LABELS(ends[k].status), 1);
        }
        if (!PQgetisnull(res, row, 2)) {
            ends[k].result = RF_OK;
            locks[nlocks++] = (rf_lock_item_t){ends[k].env, ends[k].service, ends[k].release_id, 0};
        }
    }
    if (w->lock && nlocks > 0 &&
        rf_lock_release_many(w->lock, locks, nlocks, unlock_err, sizeof(unlock_err)) != RF_OK)
        rf_log_warn("cannot free service locks (they lapse by themselves): %s", unlock_err);
    if (scope)
        rf_producer_batch_begin(w->producer);
    for (int row = 0; row < PQntuples(res) && result == RF_OK; row++) {
        if (PQgetisnull(res, row, 2))
            continue;
        result = rf_worker_send_result(w, PQgetvalue(res, row, 3), PQgetvalue(res, row, 2),
                                       (size_t)PQgetlength(res, row, 2), errstr, errstr_size);
        if (result == RF_OK && owed && !scope) {
            if (!w->owed_in_batch)
                w->owed_in_batch = json_array();
            json_array_append_new(w->owed_in_batch, json_string(PQgetvalue(res, row, 0)));
        }
    }
    /* The next queued release of each service starts now (once per service). */
    for (int row = 0; row < PQntuples(res) && result == RF_OK; row++) {
        const char *key = PQgetvalue(res, row, 3);
        if (PQgetisnull(res, row, 2) || PQgetisnull(res, row, 4) || json_object_get(kicked, key))
            continue;
        json_object_set_new(kicked, key, json_true());
        result = rf_producer_send(w->producer, "requests", key, PQgetvalue(res, row, 4),
                                  (size_t)PQgetlength(res, row, 4), errstr, errstr_size);
    }
    if (scope) {
        delivered = result == RF_OK ? rf_producer_batch_end(w->producer, errstr, errstr_size)
                                    : rf_producer_batch_end(w->producer, NULL, 0);
        if (result == RF_OK)
            result = delivered;
        /* Only a terminal release can be owed, and each terminal one was just sent. */
        if (result == RF_OK && nlocks > 0 &&
            rf_store_results_delivered(w->db, ids, n, unlock_err, sizeof(unlock_err)) != RF_OK)
            rf_log_warn("results delivered but still marked owed (a sweep sends them again): %s",
                        unlock_err);
    }
out:
    /* Before the results were read every end is retried; after, only the ended ones. */
    if (result != RF_OK)
        for (size_t i = 0; i < n; i++)
            if (!res || ends[i].result == RF_OK)
                ends[i].result = result;
    PQclear(res);
    json_decref(rows);
    json_decref(kicked);
    free(ids);
    free(locks);
    return result;
}

rf_err_t rf_worker_end_releases(rf_worker_t *w, rf_worker_end_t *ends, size_t n, char *errstr,
                                size_t errstr_size)
{
    return worker_end(w, ends, n, 1, 1, errstr, errstr_size);
}

/* One end inside a poll batch (owed: rf_worker_end_other's), RF_ERR_FENCED as its own. */
static rf_err_t worker_end_one(rf_worker_t *w, rf_worker_end_t *e, int owed, char *errstr,
                               size_t errstr_size)
{
    rf_err_t result = worker_end(w, e, 1, 0, owed, errstr, errstr_size);

    if (result == RF_OK && e->result == RF_ERR_FENCED)
        return rf_errf(RF_ERR_FENCED, errstr, errstr_size, "release '%s' no longer holds fence %lld",
                       e->release_id, (long long)e->fence);
    return result;
}

rf_err_t rf_worker_end_release(rf_worker_t *w, const char *release_id, const char *service,
                               const char *env, int64_t fence, const char *status,
                               const char *error, const json_t *pods, char *errstr,
                               size_t errstr_size)
{
    rf_worker_end_t e = {release_id, service, env, fence, status, error, pods, RF_OK, NULL, NULL};

    return worker_end_one(w, &e, 0, errstr, errstr_size);
}

rf_err_t rf_worker_end_other(rf_worker_t *w, const char *release_id, const char *service,
                             const char *env, int64_t fence, const char *status,
                             const char *error, char *errstr, size_t errstr_size)
{
    rf_worker_end_t e = {release_id, service, env, fence, status, error, NULL, RF_OK, NULL, NULL};

    return worker_end_one(w, &e, 1, errstr, errstr_size);
}

void rf_worker_owed_delivered(rf_worker_t *w)
{
    size_t n = json_array_size(w->owed_in_batch);
    const char **ids;
    char err[256];

    if (n == 0)
        return;
    ids = calloc(n, sizeof(*ids));
    if (!ids)
        abort();
    for (size_t i = 0; i < n; i++)
        ids[i] = json_string_value(json_array_get(w->owed_in_batch, i));
    if (rf_store_results_delivered(w->db, ids, n, err, sizeof(err)) != RF_OK)
        rf_log_warn("results delivered but still marked owed (a sweep sends them again): %s",
                    err);
    free(ids);
    json_array_clear(w->owed_in_batch);
}

void rf_worker_log_ctx(const rd_kafka_message_t *m, const json_t *body)
{
    char buf[32];

    rf_log_ctx_clear();
    if (m) {
        rf_log_ctx_set("topic", rd_kafka_topic_name(m->rkt));
        snprintf(buf, sizeof(buf), "%d", (int)m->partition);
        rf_log_ctx_set("partition", buf);
        snprintf(buf, sizeof(buf), "%lld", (long long)m->offset);
        rf_log_ctx_set("offset", buf);
    }
    if (body) {
        rf_log_ctx_set("release", json_string_value(json_object_get(body, "release_id")));
        rf_log_ctx_set("service", json_string_value(json_object_get(body, "service")));
        rf_log_ctx_set("env", json_string_value(json_object_get(body, "env")));
    }
}

int rf_worker_same_partition(const rd_kafka_message_t *a, const rd_kafka_message_t *b)
{
    return a->partition == b->partition &&
           strcmp(rd_kafka_topic_name(a->rkt), rd_kafka_topic_name(b->rkt)) == 0;
}
