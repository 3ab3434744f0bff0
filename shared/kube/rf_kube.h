/* Kubernetes API client: requests with retries, server-side apply, and list+watch informers. */
#ifndef RF_KUBE_H
#define RF_KUBE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "rf_err.h"
#include "rf_kubeconfig.h"
#include "rf_watch.h"

typedef struct rf_kube rf_kube_t;

/* A client for one cluster. It copies what it needs from cfg (cfg may be destroyed after).
 * Connections, DNS and TLS sessions are shared by every request of the client through one
 * libcurl share handle with locks: the request functions below may be called from several
 * threads at once. Returns NULL with errstr. */
rf_kube_t *rf_kube_new(const rf_kubeconfig_t *cfg, char *errstr, size_t errstr_size);

/* Destroy the client after every watch that uses it. Accepts NULL. */
void rf_kube_destroy(rf_kube_t *k);

/* Retry budget of each request: at most max_attempts tries (>= 1); between tries a wait drawn
 * uniformly from [0, min(max_ms, base_ms * 2^try)) ("full jitter"), or the Retry-After the
 * server asked for. A Retry-After longer than max_ms ends the retries at once with
 * RF_ERR_RETRY (the caller reschedules instead of blocking). Defaults: 5, 200, 5000. */
void rf_kube_set_retry(rf_kube_t *k, int max_attempts, int base_ms, int max_ms);

/* Timeouts of each try: connect, and the whole request (watches excepted). Defaults: 10000,
 * 30000. */
void rf_kube_set_timeouts(rf_kube_t *k, long connect_ms, long request_ms);

/* The namespace of the client's context ("default" when it sets none). */
const char *rf_kube_namespace(const rf_kube_t *k);

/* Errors of every request below: RF_ERR_NOTFOUND for 404; RF_ERR_PERM for other 4xx (400,
 * 401, 403, 409, 410, 422, ...), TLS and configuration failures, and bad answers; RF_ERR_RETRY
 * for 429, 5xx, connection errors and timeouts once the retry budget is spent. errstr starts
 * with the request (method and path) and carries the API server's Status: code, reason and
 * message, e.g. "PATCH '/apis/apps/v1/namespaces/web/deployments/api': 422 Invalid:
 * Deployment.apps \"api\" is invalid: ...". */

/* The API path of the object manifest describes (apiVersion, kind, metadata.name and
 * metadata.namespace, else default_namespace), e.g. "/apis/apps/v1/namespaces/NS/deployments/
 * NAME". Known kinds: Namespace, Service, ConfigMap, Secret, ServiceAccount (v1), Deployment,
 * StatefulSet, DaemonSet, ReplicaSet (apps/v1), Ingress (networking.k8s.io/v1),
 * HorizontalPodAutoscaler (autoscaling/v2, v1), PodDisruptionBudget (policy/v1), Pod (v1).
 * Anything else is RF_ERR_PERM naming it. */
rf_err_t rf_kube_object_path(const json_t *manifest, const char *default_namespace, char *path,
                             size_t path_size, char *errstr, size_t errstr_size);

/* Server-side apply of manifest: PATCH application/apply-patch+yaml (the manifest as JSON)
 * with fieldManager=field_manager (NULL: "relfleet") and force=true. The namespace is
 * metadata.namespace, else the context's. On success *result_out (if not NULL) receives the
 * object as stored (json_decref it). */
rf_err_t rf_kube_apply(rf_kube_t *k, const json_t *manifest, const char *field_manager,
                       json_t **result_out, char *errstr, size_t errstr_size);

/* Fenced server-side apply: writes manifest (which carries the annotation fence_key =
 * fence) only over an object that carries no newer fence, without ever overwriting a
 * version it has not judged. Each try applies with metadata.resourceVersion set to the
 * version judged, a precondition the API server enforces (409 Conflict when the object
 * changed since); the version is the one of this client's own last answer for the object
 * when it has one (no GET), else read with a GET (none: the object is created). A 409
 * reads the object and decides again (a cached version that conflicted is not used again
 * for that object: someone else writes it); a newer fence is RF_ERR_FENCED. The client
 * remembers the last answer of up to 4096 objects. *result_out receives the object as
 * stored, but only its apiVersion, kind and of its metadata name, namespace, generation,
 * resourceVersion and annotations (the rest of the answer is not parsed). */
rf_err_t rf_kube_apply_fenced(rf_kube_t *k, json_t *manifest, const char *field_manager,
                              const char *fence_key, int64_t fence, json_t **result_out,
                              char *errstr, size_t errstr_size);

/* rf_kube_apply_fenced of a manifest whose members other than those in manifest (its
 * apiVersion, kind and metadata, which the fence and path are read from) are JSON text:
 * rest[0..rest_len), comma-separated members as rf_msg_parse_lean leaves them (0 bytes:
 * none; rf_msg_parse_lean has checked them as JSON). The body is manifest's JSON text with
 * rest after its members, as it is. */
rf_err_t rf_kube_apply_fenced_rest(rf_kube_t *k, json_t *manifest, const char *rest,
                                   size_t rest_len, const char *field_manager,
                                   const char *fence_key, int64_t fence, json_t **result_out,
                                   char *errstr, size_t errstr_size);

/* Requests the client has sent (each try counts). */
unsigned long rf_kube_requests(rf_kube_t *k);

/* GET path (with its query). *out receives the decoded answer. */
rf_err_t rf_kube_get(rf_kube_t *k, const char *path, json_t **out, char *errstr,
                     size_t errstr_size);

/* GET a collection page by page (limit=500 and continue tokens) and return one List: the
 * last page's metadata (its resourceVersion) with every page's items. */
rf_err_t rf_kube_list(rf_kube_t *k, const char *path, json_t **out, char *errstr,
                      size_t errstr_size);

/* PATCH application/merge-patch+json. out may be NULL. */
rf_err_t rf_kube_merge_patch(rf_kube_t *k, const char *path, const json_t *patch, json_t **out,
                             char *errstr, size_t errstr_size);

/* DELETE path (propagationPolicy=Background unless path sets one). out may be NULL. */
rf_err_t rf_kube_delete(rf_kube_t *k, const char *path, json_t **out, char *errstr,
                        size_t errstr_size);

/* The last tail_lines lines (<= 0: all, up to 1 MiB) of a pod's log; container NULL for the
 * only one. *text_out receives a NUL-terminated string (free() it). */
rf_err_t rf_kube_pod_logs(rf_kube_t *k, const char *ns, const char *pod, const char *container,
                          int tail_lines, char **text_out, char *errstr, size_t errstr_size);

/* Informers: list, then watch from the list's resourceVersion, reconnecting from the last
 * resourceVersion seen when a watch ends, listing again after 410 Gone, backing off after
 * errors. Many watches (of one or several clients) run on one rf_kube_multi_t, driven by
 * rf_kube_multi_poll from a single thread, without blocking longer than asked. Watch
 * connections use HTTP/1.1: one connection per watch. */
typedef struct rf_kube_multi rf_kube_multi_t;
typedef struct rf_kube_watch rf_kube_watch_t;

/* Called from rf_kube_multi_poll, never from inside libcurl, for each event: SYNC for every
 * object of a list, then SYNCED; ADDED, MODIFIED, DELETED, BOOKMARK from the watch; ERROR for
 * a failed request or a bad event (message says what; the watch goes on by itself); EXPIRED
 * when the server said 410 (a relist follows). ev and its object are valid during the call.
 * The callback may destroy its own watch (not others) and create watches. */
typedef void (*rf_kube_watch_cb)(rf_kube_watch_t *w, const rf_watch_event_t *ev, void *opaque);

rf_kube_multi_t *rf_kube_multi_new(void);

/* Destroys the remaining watches, then the multi. Accepts NULL. */
void rf_kube_multi_destroy(rf_kube_multi_t *m);

/* Runs the transfers of every watch of m: waits at most timeout_ms (0: does not wait) for
 * network activity or a due reconnect, then delivers the events that arrived. Returns the
 * number of events delivered. */
int rf_kube_multi_poll(rf_kube_multi_t *m, int timeout_ms);

/* rf_kube_multi_poll that also returns, at once, when fd turns readable (fd is not read;
 * -1: none). */
int rf_kube_multi_poll_fd(rf_kube_multi_t *m, int timeout_ms, int fd);

/* Starts an informer on the collection path, e.g. "/apis/apps/v1/deployments?labelSelector=
 * app%3Dweb" or "/api/v1/namespaces/web/pods" (the query, URL-encoded, may hold
 * labelSelector and fieldSelector). Nothing is sent before the next poll. Returns NULL with
 * errstr for a path that is not a collection. */
rf_kube_watch_t *rf_kube_watch_new(rf_kube_multi_t *m, rf_kube_t *k, const char *path,
                                   rf_kube_watch_cb cb, void *opaque, char *errstr,
                                   size_t errstr_size);

/* Stops and frees a watch. Accepts NULL. */
void rf_kube_watch_destroy(rf_kube_watch_t *w);

/* Seconds each watch request asks the server to stay open (timeoutSeconds; default 300, with
 * allowWatchBookmarks=true), and the page size of lists (default 500). */
void rf_kube_watch_set_timeout(rf_kube_watch_t *w, int seconds);
void rf_kube_watch_set_page_size(rf_kube_watch_t *w, int limit);

/* The members left out of each object the watch delivers (list pages and events), unparsed:
 * dotted paths from the object's root, as for rf_watch_parser_set_drop, borrowed for the
 * watch's life; NULL: none. Default: rf_watch_drop_default (metadata.managedFields). */
void rf_kube_watch_set_drop(rf_kube_watch_t *w, const char *const *paths);

/* The watch's events as text (rf_watch_parser_set_raw): ADDED, MODIFIED, DELETED and
 * BOOKMARK events with object NULL and text/len/rv set, unless a line is not plainly an
 * event; the objects of lists (RF_WATCH_SYNC) still come as trees, less the drop list. */
void rf_kube_watch_set_raw(rf_kube_watch_t *w, int raw);

/* The last resourceVersion seen ("" before the first list completed). */
const char *rf_kube_watch_resource_version(const rf_kube_watch_t *w);

/* The path given to rf_kube_watch_new. */
const char *rf_kube_watch_path(const rf_kube_watch_t *w);

#endif
