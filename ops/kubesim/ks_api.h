/* The Kubernetes REST API of kubesim: get, list, watch, create, update, patch, apply, delete. */
#ifndef KS_API_H
#define KS_API_H

#include "ks_ctrl.h"
#include "ks_store.h"
#include "rf_buf.h"

#include <jansson.h>
#include <sys/types.h>

typedef struct ks_api ks_api_t;
typedef struct ks_watch ks_watch_t;

typedef struct ks_req {
    const char *method;
    const char *path;
    /* query parameter lookup; NULL when absent */
    const char *(*query)(void *cls, const char *key);
    void *query_cls;
    const char *content_type;
    const char *accept;
    const char *user_agent;
    const char *body;
    size_t body_len;
} ks_req_t;

typedef struct ks_resp {
    int status;
    const char *content_type;
    rf_buf_t body;
    ks_watch_t *watch; /* set for a watch: stream it with ks_watch_read */
    char warnings[2048]; /* Warning header values, one a line ("" for none) */
} ks_resp_t;

/* store and ctrl are borrowed. */
ks_api_t *ks_api_new(ks_store_t *st, ks_ctrl_t *ctrl);
void ks_api_destroy(ks_api_t *api);

/* The address clients use ("127.0.0.1:43121"), shown in discovery. */
void ks_api_set_address(ks_api_t *api, const char *host_port);

/* Answers one request; resp->body must be released by the caller. */
void ks_api_handle(ks_api_t *api, const ks_req_t *req, ks_resp_t *resp);

/* Fills resp with j as a JSON answer of status code ("{}" when j is NULL). */
void ks_api_respond_json(ks_resp_t *resp, int code, const json_t *j);

/* Fills resp with a metav1 Status failure object. */
void ks_api_status(ks_resp_t *resp, int code, const char *reason, const char *message,
                   json_t *details);

/* The writes to Deployments so far, in order (new reference). */
json_t *ks_api_applies(ks_api_t *api);

/* Blocks until the watch has bytes for buf; returns their count, or -1 at its end
 * (timeout, expiry, server stop). */
ssize_t ks_watch_read(ks_watch_t *w, char *buf, size_t max);
void ks_watch_destroy(ks_watch_t *w);

#endif
