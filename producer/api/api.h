/* relfleet-api internals: the server context, one request, the handlers of each resource. */
#ifndef API_H
#define API_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>

#include "rf_auth.h"
#include "rf_buf.h"
#include "rf_config.h"
#include "rf_db.h"
#include "rf_kafka.h"
#include "rf_schema.h"

#include "api_throttle.h"

#define API_DB_POOL 8               /* PostgreSQL connections shared by the request threads */
#define API_BODY_MAX (256 * 1024)   /* largest request body accepted */
#define API_SESSION_HOURS 12        /* a browser session lasts this long */
#define API_PAGE_DEFAULT 50
#define API_PAGE_MAX 500
#define API_THROTTLE_SLOTS 4096     /* client addresses and users whose failures are counted */

typedef struct api_hub api_hub_t;

/* The server: settings, a pool of PostgreSQL connections, the Kafka producer. */
typedef struct api {
    rf_config_t conf;
    rf_schema_registry_t *schemas;
    rf_db_t *db[API_DB_POOL];
    int db_busy[API_DB_POOL];
    pthread_mutex_t db_lock;
    pthread_cond_t db_free;
    rf_producer_t *producer;
    pthread_mutex_t produce_lock;
    api_hub_t *hub;
    api_throttle_t *throttle; /* failed authentication per address and per user */
    int cookie_secure; /* --secure-cookies: the session cookie carries Secure */
    volatile int stopping;
} api_t;

/* One HTTP request, as a handler sees it. */
typedef struct api_req {
    api_t *api;
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    char *parts[8]; /* the path split at '/', after /api/v1 */
    int nparts;
    rf_buf_t body;
    int body_too_large;
    json_t *json;  /* the body parsed, once api_req_json() succeeded */
    rf_db_t *db;   /* borrowed from the pool for the whole request */
    char user[128]; /* "" until authenticated */
    int via_session;
    char csrf[65];
    char session_hash[65];
    /* The reply. */
    unsigned status;
    json_t *reply;
    char *raw;     /* or a raw body with its type */
    size_t raw_len;
    const char *raw_type;
    char *set_cookie;
    int retry_after_s; /* > 0: the reply carries Retry-After */
    struct MHD_Response *stream; /* or a response built by the handler (SSE) */
} api_req_t;

/* Replies. Each returns 0 so a handler can `return api_reply_error(...)`. */
int api_reply_json(api_req_t *r, unsigned status, json_t *body); /* steals body */
int api_reply_error(api_req_t *r, unsigned status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 500/503 from a PostgreSQL or Kafka failure (503 when a retry may help). */
int api_reply_failure(api_req_t *r, rf_err_t err, const char *what, const char *errstr);

/* The body as a JSON object (400 with the reason otherwise); NULL after replying. allowed:
 * NULL-terminated field names; any other field is refused by name. */
json_t *api_req_json(api_req_t *r, const char *const *allowed);
/* A query string argument, or NULL. */
const char *api_req_arg(api_req_t *r, const char *name);

/* Role checks: 1 when the user holds role need for service/env (env NULL: some env; "*",
 * "*": everything). api_require replies 403 (and logs it) when not, returning 0. */
int api_has_role(api_req_t *r, rf_role_t need, const char *service, const char *env);
int api_require(api_req_t *r, rf_role_t need, const char *service, const char *env);

/* Logs a refused call (401/403/429) with who, what and why. */
void api_log_refusal(api_req_t *r, unsigned status, const char *reason);

/* The client's address as text ("?" when unknown); with prefix, an IPv6 address is cut to
 * its /64 (one host usually holds the whole /64). */
void api_client_addr(api_req_t *r, int prefix, char *buf, size_t size);

/* Name checks of input: DNS label (service, env), image tag (version). */
int api_valid_label(const char *s);
int api_valid_tag(const char *s);

/* Sessions and identity (api_auth.c). */
int api_auth_authenticate(api_req_t *r); /* 1 when authenticated; replies 401/403 otherwise */
int api_session_login(api_req_t *r);
int api_session_logout(api_req_t *r);
int api_session_show(api_req_t *r);

/* Releases (api_releases.c). */
int api_releases_list(api_req_t *r);
int api_releases_get(api_req_t *r, const char *id);
int api_releases_create(api_req_t *r);
int api_releases_rollback(api_req_t *r, const char *id);
int api_releases_redo(api_req_t *r, const char *id);
int api_releases_command(api_req_t *r, const char *id, const char *action);
int api_services_rollback(api_req_t *r, const char *service, const char *env);
int api_services_redo(api_req_t *r, const char *service, const char *env);

/* Approvals (api_approvals.c): decision "approved" or "denied" of the user on release id;
 * may_decide: 1 when the user may decide on the release record rec now. */
int api_releases_decide(api_req_t *r, const char *id, const char *decision);
int api_releases_may_decide(api_req_t *r, const json_t *rec);

/* Waves (api_waves.c). */
int api_waves_list(api_req_t *r);
int api_waves_get(api_req_t *r, const char *id);
int api_waves_create(api_req_t *r);
int api_waves_command(api_req_t *r, const char *id, const char *action);

/* DORA statistics (api_stats.c). */
int api_stats_get(api_req_t *r);

/* Services, templates, images (api_services.c). */
int api_services_list(api_req_t *r);
int api_services_get(api_req_t *r, const char *service, const char *env);
int api_services_update(api_req_t *r, const char *service, const char *env);
int api_services_history(api_req_t *r, const char *service, const char *env);
int api_templates_list(api_req_t *r);
int api_templates_get(api_req_t *r, const char *id);
int api_images_list(api_req_t *r, const char *service);
int api_images_add(api_req_t *r, const char *service);

/* Publishing (api_publish.c): validates msg against its schema, signs it as the request's
 * user and produces it to the topic of suffix with key env/service. 0 when published;
 * otherwise replies and returns -1. */
int api_publish(api_req_t *r, const char *suffix, json_t *msg);

/* Live progress (api_events.c): the hub of release subscribers fed by LISTEN. */
api_hub_t *api_hub_new(api_t *api, char *errstr, size_t errstr_size);
void api_hub_destroy(api_hub_t *hub); /* stops the listener; accepts NULL */
void api_hub_wake_all(api_hub_t *hub);
int api_releases_events(api_req_t *r, const char *id);

#endif
