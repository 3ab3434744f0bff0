/* What several stages share: ending a release and handing the service to the next one. */
#ifndef RF_WORKER_COMMON_H
#define RF_WORKER_COMMON_H

#include <jansson.h>
#include <stdint.h>

#include "rf_kube.h"
#include "worker.h"

/* Ends a release in a terminal status (fence 0: one that never started), stores its
 * failing pods (may be NULL), frees the service lock, publishes the one `results`
 * message and re-publishes the request of the service's next queued release so that it
 * starts now. A release that had already ended only gets its result re-published;
 * RF_ERR_FENCED when the fence was lost (nothing changed). */
rf_err_t rf_worker_end_release(rf_worker_t *w, const char *release_id, const char *service,
                               const char *env, int64_t fence, const char *status,
                               const char *error, const json_t *pods, char *errstr,
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

/* Publishes the result of a terminal release (same bytes every time). */
rf_err_t rf_worker_publish_result(rf_worker_t *w, const char *release_id, const char *key,
                                  char *errstr, size_t errstr_size);

/* Re-publishes the stored request of the oldest queued release of env/service, if any. */
rf_err_t rf_worker_kick_next(rf_worker_t *w, const char *service, const char *env,
                             char *errstr, size_t errstr_size);

#endif
