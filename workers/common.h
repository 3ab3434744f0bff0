/* What several stages share: ending a release and handing the service to the next one. */
#ifndef RF_WORKER_COMMON_H
#define RF_WORKER_COMMON_H

#include <jansson.h>
#include <stdint.h>

#include "rf_kube.h"
#include "worker.h"

/* The log context of a message (topic, partition, offset; release, service and env from
 * its body when given) for log lines of the calling thread; m may be NULL. */
void rf_worker_log_ctx(const rd_kafka_message_t *m, const json_t *body);

/* 1 when a and b come from the same partition of the same topic. */
int rf_worker_same_partition(const rd_kafka_message_t *a, const rd_kafka_message_t *b);

/* Ends a release in a terminal status (fence 0: one that never started), stores its
 * failing pods (may be NULL), frees the service lock, publishes the one `results`
 * message and re-publishes the request of the service's next queued release so that it
 * starts now. A release that had already ended only gets its result re-published;
 * RF_ERR_FENCED when the fence was lost (nothing changed). */
rf_err_t rf_worker_end_release(rf_worker_t *w, const char *release_id, const char *service,
                               const char *env, int64_t fence, const char *status,
                               const char *error, const json_t *pods, char *errstr,
                               size_t errstr_size);

/* rf_worker_end_release, inside a poll batch, for a release that no message of the batch
 * is about (render superseding the active release for a new request): a redelivery of the
 * batch would not end it again, so its result is owed (a sweep of the track stage sends it)
 * until the batch's deliveries are done; the poll loop then clears the mark. */
rf_err_t rf_worker_end_other(rf_worker_t *w, const char *release_id, const char *service,
                             const char *env, int64_t fence, const char *status,
                             const char *error, char *errstr, size_t errstr_size);

/* Clears the owed mark of the releases rf_worker_end_other ended in the poll batch whose
 * deliveries are done (the poll loop calls it); a failure only logs (a sweep sends them
 * again). */
void rf_worker_owed_delivered(rf_worker_t *w);

/* One release to end with rf_worker_end_releases. */
typedef struct rf_worker_end {
    const char *release_id;
    const char *service;
    const char *env;
    int64_t fence;      /* 0: a release that never started (queued) */
    const char *status; /* the terminal status */
    const char *error;  /* may be NULL */
    const json_t *pods; /* failing pods, may be NULL */
    rf_err_t result;    /* set: RF_OK ended (now or earlier: its result is published),
                         * RF_ERR_FENCED (fence lost, nothing changed), else the error of
                         * the batch (to be tried again) */
    const char *progress_message; /* may be NULL: the last progress not yet recorded, */
    const json_t *progress;       /* written with the end (rf_store_end_many); may be NULL */
} rf_worker_end_t;

/* rf_worker_end_release for n releases (at most one entry per release) at once, outside a
 * poll batch (from a stage's tick): one statement ends them all, one reads their results
 * and each service's next queued request, the service locks are freed in pipelined round
 * trips, and the results (and the requests handed on) are produced with one wait for all
 * their deliveries. RF_OK, or the error that stopped the batch (then every end whose
 * result is not RF_ERR_FENCED has that error: end them again, it is idempotent). */
rf_err_t rf_worker_end_releases(rf_worker_t *w, rf_worker_end_t *ends, size_t n, char *errstr,
                                size_t errstr_size);

/* The kubeconfig context of a release: the service's own cluster setting, else the
 * `clusters` map entry of its env, else "" (the kube_context setting or the kubeconfig's
 * current context). Writes into buf and returns it. */
const char *rf_worker_cluster(const rf_worker_t *w, const char *env, const char *service_cluster,
                              char *buf, size_t size);

/* A client of the default cluster for the readiness hook: one try, short timeouts, so a
 * /readyz check never blocks the poll loop for long. NULL with errstr when unconfigured. */
rf_kube_t *rf_worker_kube_probe_new(const rf_worker_t *w, char *errstr, size_t errstr_size);

/* 1 when the API server answers GET /version, else 0 (logged once per change). */
int rf_worker_kube_ready(rf_kube_t *probe);

/* Seconds an owed results message stays with the worker that ended the release (longer
 * than its delivery wait) before another worker's sweep may send it. */
int rf_worker_results_hold_s(const rf_worker_t *w);

/* Counts renewals of service locks in relfleet_lock_renewals_total{outcome}: renewed, lost
 * (the lock is no longer the release's) and failed (Redis gave an error); every outcome's
 * series exists from the first call on, at 0 if need be. */
void rf_worker_count_lock_renewals(size_t renewed, size_t lost, size_t failed);

/* Produces one `results` message (text of len bytes, key "env/service") with the
 * CloudEvents Kafka binding's headers, which depend on the text and the configuration only:
 * a message sent again carries the same bytes and the same headers. */
rf_err_t rf_worker_send_result(rf_worker_t *w, const char *key, const char *text, size_t len,
                               char *errstr, size_t errstr_size);

/* Publishes the result of a terminal release (same bytes every time). */
rf_err_t rf_worker_publish_result(rf_worker_t *w, const char *release_id, const char *key,
                                  char *errstr, size_t errstr_size);

/* Re-publishes the stored request of the oldest queued release of env/service, if any. */
rf_err_t rf_worker_kick_next(rf_worker_t *w, const char *service, const char *env,
                             char *errstr, size_t errstr_size);

#endif
