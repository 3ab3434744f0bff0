/* The HTTP side of relfleet-api: requests in, routing, JSON replies, the console's files. */
#include <microhttpd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "api_server.h"
#include "api_static.h"
#include "rf_log.h"
#include "rf_metrics.h"

/* ---------------------------------------------------------------------------------------
 * Replies */

int api_reply_json(api_req_t *r, unsigned status, json_t *body)
{
    json_decref(r->reply);
    r->status = status;
    r->reply = body;
    return 0;
}

int api_reply_error(api_req_t *r, unsigned status, const char *field, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    json_t *body;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    body = json_pack("{s:s, s:i}", "error", msg, "status", (int)status);
    if (field)
        json_object_set_new(body, "field", json_string(field));
    if (status == MHD_HTTP_UNAUTHORIZED || status == MHD_HTTP_FORBIDDEN ||
        status == MHD_HTTP_TOO_MANY_REQUESTS)
        api_log_refusal(r, status, msg);
    return api_reply_json(r, status, body);
}

int api_reply_failure(api_req_t *r, rf_err_t err, const char *what, const char *errstr)
{
    rf_log_error("%s %s: %s: %s", r->method, r->url, what, errstr);
    if (err == RF_ERR_RETRY && r->retry_after_s <= 0)
        r->retry_after_s = 1; /* a database failing over, a broker away: soon again */
    if (err == RF_ERR_RETRY)
        return api_reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                               "%s: %s (temporary: try again)", what, errstr);
    return api_reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "%s: %s", what, errstr);
}

void api_client_addr(api_req_t *r, int prefix, char *buf, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    char text[INET6_ADDRSTRLEN];

    snprintf(buf, size, "?");
    if (sa && sa->sa_family == AF_INET) {
        if (inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof(text)))
            snprintf(buf, size, "%s", text);
    } else if (sa && sa->sa_family == AF_INET6) {
        struct in6_addr a = ((const struct sockaddr_in6 *)sa)->sin6_addr;
        int mapped = IN6_IS_ADDR_V4MAPPED(&a);

        if (mapped && inet_ntop(AF_INET, &a.s6_addr[12], text, sizeof(text))) {
            snprintf(buf, size, "%s", text);
            return;
        }
        if (prefix)
            memset(&a.s6_addr[8], 0, 8);
        if (inet_ntop(AF_INET6, &a, text, sizeof(text)))
            snprintf(buf, size, "%s%s", text, prefix ? "/64" : "");
    }
}

void api_log_refusal(api_req_t *r, unsigned status, const char *reason)
{
    char addr[64];

    api_client_addr(r, 0, addr, sizeof(addr));
    rf_log_warn("refused %s %s: %u %s (user '%s', client %s)", r->method, r->url, status, reason,
                r->user[0] ? r->user : "-", addr);
}

/* ---------------------------------------------------------------------------------------
 * Input */

const char *api_req_arg(api_req_t *r, const char *name)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    return v && *v ? v : NULL;
}

json_t *api_req_json(api_req_t *r, const char *const *allowed)
{
    json_error_t jerr;
    const char *key;
    json_t *v;

    if (r->json)
        return r->json;
    if (r->body.len == 0) {
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, NULL, "the request needs a JSON object body");
        return NULL;
    }
    r->json = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!r->json) {
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, NULL,
                        "the body is not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                        jerr.column);
        return NULL;
    }
    if (!json_is_object(r->json)) {
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, NULL, "the body must be a JSON object");
        return NULL;
    }
    json_object_foreach(r->json, key, v) {
        int known = 0;
        for (const char *const *a = allowed; a && *a; a++)
            known |= strcmp(*a, key) == 0;
        if (!known) {
            api_reply_error(r, MHD_HTTP_BAD_REQUEST, key, "unknown field '%.64s'", key);
            return NULL;
        }
    }
    return r->json;
}

int api_valid_label(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return 1;
}

int api_valid_tag(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 128 || s[0] == '.' || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.' || s[i] == '-'))
            return 0;
    return 1;
}

int api_has_role(api_req_t *r, rf_role_t need, const char *service, const char *env)
{
    char errstr[512];
    int has = 0;

    if (rf_auth_has_role(r->db, r->user, need, service, env, &has, errstr, sizeof(errstr)) !=
        RF_OK) {
        rf_log_error("cannot check the roles of '%s': %s", r->user, errstr);
        return 0;
    }
    return has;
}

int api_require(api_req_t *r, rf_role_t need, const char *service, const char *env)
{
    if (api_has_role(r, need, service, env))
        return 1;
    if (strcmp(service, "*") == 0 && env && strcmp(env, "*") == 0)
        api_reply_error(r, MHD_HTTP_FORBIDDEN, NULL,
                        "permission denied: user '%s' is not %s of every service and env",
                        r->user, rf_auth_role_name(need));
    else if (!env)
        api_reply_error(r, MHD_HTTP_FORBIDDEN, NULL,
                        "permission denied: user '%s' has no %s role for service '%s'", r->user,
                        rf_auth_role_name(need), service);
    else
        api_reply_error(r, MHD_HTTP_FORBIDDEN, NULL,
                        "permission denied: user '%s' has no %s role for service '%s' in env '%s'",
                        r->user, rf_auth_role_name(need), service, env);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * The database pool */

static rf_db_t *server_db_get(api_t *api)
{
    struct timespec until;
    rf_db_t *db = NULL;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&api->db_lock);
    for (;;) {
        for (int i = 0; i < API_DB_POOL; i++) {
            if (!api->db_busy[i]) {
                api->db_busy[i] = 1;
                db = api->db[i];
                goto out;
            }
        }
        if (pthread_cond_timedwait(&api->db_free, &api->db_lock, &until) != 0)
            goto out;
    }
out:
    pthread_mutex_unlock(&api->db_lock);
    return db;
}

static void server_db_put(api_t *api, rf_db_t *db)
{
    if (!db)
        return;
    pthread_mutex_lock(&api->db_lock);
    for (int i = 0; i < API_DB_POOL; i++)
        if (api->db[i] == db)
            api->db_busy[i] = 0;
    pthread_cond_signal(&api->db_free);
    pthread_mutex_unlock(&api->db_lock);
}

rf_db_t *api_db_borrow(api_t *api)
{
    return server_db_get(api);
}

void api_db_return(api_t *api, rf_db_t *db)
{
    server_db_put(api, db);
}

/* ---------------------------------------------------------------------------------------
 * Routing */

static int is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

static int route_method(api_req_t *r, const char *allowed)
{
    return api_reply_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, NULL,
                           "method %s is not allowed on %s (allowed: %s)", r->method, r->url,
                           allowed);
}

/* /api/v1/... after authentication. */
static int route_api(api_req_t *r)
{
    const char *m = r->method;
    char **p = r->parts;
    int n = r->nparts;

    if (n >= 1 && is(p[0], "releases")) {
        if (n == 1)
            return is(m, "GET")    ? api_releases_list(r)
                   : is(m, "POST") ? api_releases_create(r)
                                   : route_method(r, "GET, POST");
        if (n == 2)
            return is(m, "GET") ? api_releases_get(r, p[1]) : route_method(r, "GET");
        if (n == 3 && is(p[2], "events"))
            return is(m, "GET") ? api_releases_events(r, p[1]) : route_method(r, "GET");
        if (n == 3 && (is(p[2], "approve") || is(p[2], "deny")))
            return is(m, "POST") ? api_releases_decide(r, p[1], is(p[2], "deny") ? "denied"
                                                                               : "approved")
                                 : route_method(r, "POST");
        if (n == 3 && (is(p[2], "rollback") || is(p[2], "redo") || is(p[2], "cancel") ||
                       is(p[2], "promote") || is(p[2], "abort"))) {
            if (!is(m, "POST"))
                return route_method(r, "POST");
            if (is(p[2], "rollback"))
                return api_releases_rollback(r, p[1]);
            if (is(p[2], "redo"))
                return api_releases_redo(r, p[1]);
            return api_releases_command(r, p[1], p[2]);
        }
    }
    if (n >= 1 && is(p[0], "services")) {
        if (n == 1)
            return is(m, "GET") ? api_services_list(r) : route_method(r, "GET");
        if (n == 3)
            return is(m, "GET")                       ? api_services_get(r, p[1], p[2])
                   : is(m, "PATCH") || is(m, "PUT") ? api_services_update(r, p[1], p[2])
                                                     : route_method(r, "GET, PATCH");
        if (n == 4 && is(p[3], "history"))
            return is(m, "GET") ? api_services_history(r, p[1], p[2]) : route_method(r, "GET");
        if (n == 4 && is(p[3], "rollback"))
            return is(m, "POST") ? api_services_rollback(r, p[1], p[2]) : route_method(r, "POST");
        if (n == 4 && is(p[3], "redo"))
            return is(m, "POST") ? api_services_redo(r, p[1], p[2]) : route_method(r, "POST");
    }
    if (n >= 1 && is(p[0], "templates")) {
        if (n == 1)
            return is(m, "GET") ? api_templates_list(r) : route_method(r, "GET");
        if (n == 2)
            return is(m, "GET") ? api_templates_get(r, p[1]) : route_method(r, "GET");
    }
    if (n >= 1 && is(p[0], "waves")) {
        if (n == 1)
            return is(m, "GET")    ? api_waves_list(r)
                   : is(m, "POST") ? api_waves_create(r)
                                   : route_method(r, "GET, POST");
        if (n == 2)
            return is(m, "GET") ? api_waves_get(r, p[1]) : route_method(r, "GET");
        if (n == 3 && (is(p[2], "pause") || is(p[2], "resume") || is(p[2], "abort")))
            return is(m, "POST") ? api_waves_command(r, p[1], p[2]) : route_method(r, "POST");
    }
    if (n == 1 && is(p[0], "stats"))
        return is(m, "GET") ? api_stats_get(r) : route_method(r, "GET");
    if (n == 2 && is(p[0], "images"))
        return is(m, "GET")    ? api_images_list(r, p[1])
               : is(m, "POST") ? api_images_add(r, p[1])
                               : route_method(r, "GET, POST");
    if (n == 1 && is(p[0], "session"))
        return is(m, "GET")      ? api_session_show(r)
               : is(m, "DELETE") ? api_session_logout(r)
                                 : route_method(r, "GET, POST, DELETE");
    return api_reply_error(r, MHD_HTTP_NOT_FOUND, NULL, "no such resource: %s %s", r->method,
                           r->url);
}

/* Splits the path after /api/v1/ into parts (URL-decoded by MHD already). */
static int route_split(api_req_t *r, const char *rest, char *copy, size_t size)
{
    char *s, *save = NULL;

    if (strlen(rest) >= size)
        return -1;
    strcpy(copy, rest);
    r->nparts = 0;
    for (s = strtok_r(copy, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (r->nparts == (int)(sizeof(r->parts) / sizeof(r->parts[0])))
            return -1;
        r->parts[r->nparts++] = s;
    }
    return 0;
}

static void route(api_req_t *r)
{
    static const char prefix[] = "/api/v1";
    char copy[1024];

    if (strncmp(r->url, prefix, sizeof(prefix) - 1) == 0 &&
        (r->url[sizeof(prefix) - 1] == '/' || r->url[sizeof(prefix) - 1] == '\0')) {
        if (route_split(r, r->url + sizeof(prefix) - 1, copy, sizeof(copy)) != 0) {
            api_reply_error(r, MHD_HTTP_NOT_FOUND, NULL, "no such resource: %s", r->url);
            return;
        }
        if (r->body_too_large) {
            api_reply_error(r, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                            "the request body is larger than %d bytes", API_BODY_MAX);
            return;
        }
        r->db = server_db_get(r->api);
        if (!r->db) {
            api_reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                            "every database connection is busy: try again");
            return;
        }
        /* Login is the one call without credentials. */
        if (r->nparts == 1 && is(r->parts[0], "session") && is(r->method, "POST")) {
            api_session_login(r);
        } else if (api_auth_authenticate(r)) {
            route_api(r);
        }
        server_db_put(r->api, r->db);
        r->db = NULL;
        return;
    }
    if (!is(r->method, "GET") && !is(r->method, "HEAD")) {
        route_method(r, "GET");
        return;
    }
    if (is(r->url, "/healthz")) {
        api_reply_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (is(r->url, "/metrics")) { /* as the workers serve it: no credentials */
        r->status = MHD_HTTP_OK;
        r->raw = rf_metrics_render();
        r->raw_len = strlen(r->raw);
        r->raw_type = "text/plain; version=0.0.4; charset=utf-8";
        return;
    }
    {
        const api_static_file_t *f = api_static_find(is(r->url, "/") ? "/index.html" : r->url);
        if (f) {
            r->status = MHD_HTTP_OK;
            r->raw = malloc(f->len ? f->len : 1);
            if (!r->raw)
                abort();
            memcpy(r->raw, f->data, f->len);
            r->raw_len = f->len;
            r->raw_type = f->type;
            return;
        }
    }
    api_reply_error(r, MHD_HTTP_NOT_FOUND, NULL, "no such page: %s", r->url);
}

/* ---------------------------------------------------------------------------------------
 * libmicrohttpd */

static enum MHD_Result server_send(api_req_t *r)
{
    struct MHD_Response *resp = r->stream;
    enum MHD_Result ret;
    char *text;
    size_t len;

    if (!resp) {
        if (r->raw) {
            text = r->raw;
            len = r->raw_len;
            r->raw = NULL;
        } else {
            if (!r->reply) {
                r->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                r->reply = json_pack("{s:s, s:i}", "error", "the handler gave no answer",
                                     "status", 500);
            }
            text = json_dumps(r->reply, JSON_COMPACT | JSON_ENSURE_ASCII);
            len = strlen(text);
            r->raw_type = "application/json";
        }
        resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
            free(text);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->raw_type);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    }
    r->stream = NULL;
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "same-origin");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    if (r->set_cookie)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, r->set_cookie);
    if (r->retry_after_s > 0) {
        char seconds[16];
        snprintf(seconds, sizeof(seconds), "%d", r->retry_after_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    ret = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void server_req_free(api_req_t *r)
{
    if (!r)
        return;
    rf_buf_release(&r->body);
    json_decref(r->json);
    json_decref(r->reply);
    free(r->raw);
    free(r->set_cookie);
    if (r->stream)
        MHD_destroy_response(r->stream);
    free(r);
}

static enum MHD_Result server_answer(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    api_req_t *r = *con_cls;
    struct timespec t0, t1;
    enum MHD_Result ret;

    (void)version;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            abort();
        r->api = cls;
        r->conn = conn;
        r->method = method;
        r->url = url;
        rf_buf_init(&r->body, API_BODY_MAX);
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (rf_buf_add(&r->body, upload_data, *upload_data_size) != 0)
            r->body_too_large = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    route(r);
    ret = server_send(r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    rf_log_info("%s %s %u user=%s ms=%.1f", method, url, r->status, r->user[0] ? r->user : "-",
                (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    return ret;
}

static void server_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                             enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    server_req_free(*con_cls);
    *con_cls = NULL;
}

static void server_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    rf_log_warn("http: %s", msg);
}

struct MHD_Daemon *api_server_start(api_t *api, int fd)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;

    return MHD_start_daemon(flags, 0, NULL, NULL, server_answer, api, MHD_OPTION_LISTEN_SOCKET,
                            fd, MHD_OPTION_NOTIFY_COMPLETED, server_completed, api,
                            MHD_OPTION_EXTERNAL_LOGGER, server_log, api,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)512, MHD_OPTION_END);
}
