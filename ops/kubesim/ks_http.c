/* The HTTP(S) front of kubesim: libmicrohttpd, bearer tokens, fault injection and the /kubesim/ control paths. */
#include "ks_http.h"
#include "rf_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_BODY_MAX (3 * 1024 * 1024 + 1)
#define HTTP_STACK_SIZE (1024 * 1024)

struct ks_http {
    ks_api_t *api;
    struct MHD_Daemon *daemon;
    int fd;
    int port;
    char *token;
    pthread_mutex_t lock;
    int fault_status;
    long fault_count;
    int down;
};

typedef struct http_req {
    rf_buf_t body;
    int too_large;
} http_req_t;

static const char *http_query(void *cls, const char *key)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)cls, MHD_GET_ARGUMENT_KIND, key);
}

static ssize_t http_watch_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    ssize_t n = ks_watch_read((ks_watch_t *)cls, buf, max);

    (void)pos;
    return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void http_watch_free(void *cls)
{
    ks_watch_destroy((ks_watch_t *)cls);
}

static enum MHD_Result http_send(struct MHD_Connection *con, ks_resp_t *resp)
{
    struct MHD_Response *r;
    enum MHD_Result ret;
    size_t len = resp->body.len;
    char *data = rf_buf_detach(&resp->body);

    if (resp->watch) {
        free(data);
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, http_watch_read,
                                              resp->watch, http_watch_free);
    } else {
        r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    }
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", resp->content_type ? resp->content_type : "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-cache, private");
    for (char *line = resp->warnings; *line;) {
        size_t n = strcspn(line, "\n");
        int last = line[n] == '\0';
        line[n] = '\0';
        MHD_add_response_header(r, "Warning", line);
        if (last)
            break;
        line += n + 1;
    }
    ret = MHD_queue_response(con, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

static const char *reason_for(int code)
{
    switch (code) {
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 409: return "Conflict";
    case 410: return "Expired";
    case 422: return "Invalid";
    case 429: return "TooManyRequests";
    case 500: return "InternalError";
    case 503: return "ServiceUnavailable";
    case 504: return "Timeout";
    default: return "Unknown";
    }
}

static int http_authorized(ks_http_t *h, struct MHD_Connection *con)
{
    const char *auth;
    size_t tl;

    if (!h->token)
        return 1;
    auth = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0)
        return 0;
    auth += 7;
    tl = strlen(h->token);
    return strlen(auth) == tl && CRYPTO_memcmp(auth, h->token, tl) == 0;
}

/* The /kubesim/ control paths. */
static void http_control(ks_http_t *h, const char *method, const char *url, http_req_t *rq,
                         ks_resp_t *resp)
{
    json_t *j = NULL;
    char *txt;

    if (strcmp(url, "/kubesim/applies") == 0 && strcmp(method, "GET") == 0) {
        j = ks_api_applies(h->api);
    } else if (strcmp(url, "/kubesim/faults") == 0 &&
               (strcmp(method, "POST") == 0 || strcmp(method, "GET") == 0)) {
        if (strcmp(method, "POST") == 0) {
            json_error_t err;
            json_t *in = json_loadb(rf_buf_str(&rq->body), rq->body.len, 0, &err);
            json_t *st = json_object_get(in, "status"), *cnt = json_object_get(in, "count");
            json_t *down = json_object_get(in, "down");
            if (!json_is_object(in) || (st && (!json_is_integer(st) || json_integer_value(st) < 400 ||
                                               json_integer_value(st) > 599)) ||
                (cnt && !json_is_integer(cnt)) || (down && !json_is_boolean(down)) ||
                (!st && !down)) {
                json_decref(in);
                ks_api_status(resp, 400, "BadRequest",
                              "expected {\"status\": 4xx|5xx, \"count\": N} or {\"down\": true|false}",
                              NULL);
                return;
            }
            pthread_mutex_lock(&h->lock);
            if (st) {
                h->fault_status = (int)json_integer_value(st);
                h->fault_count = cnt ? (long)json_integer_value(cnt) : 1;
            }
            if (down)
                h->down = json_is_true(down);
            pthread_mutex_unlock(&h->lock);
            rf_log_info("fault injection set: status=%d count=%ld down=%d", h->fault_status,
                        h->fault_count, h->down);
            json_decref(in);
        }
        pthread_mutex_lock(&h->lock);
        j = json_pack("{s:i, s:I, s:b}", "status", h->fault_status, "count",
                      (json_int_t)h->fault_count, "down", h->down);
        pthread_mutex_unlock(&h->lock);
    } else {
        ks_api_status(resp, 404, "NotFound", "the server could not find the requested resource", NULL);
        return;
    }
    txt = json_dumps(j, JSON_COMPACT);
    rf_buf_adds(&resp->body, txt ? txt : "null");
    free(txt);
    json_decref(j);
    resp->status = 200;
    resp->content_type = "application/json";
}

static enum MHD_Result http_answer(void *cls, struct MHD_Connection *con, const char *url,
                                   const char *method, const char *version,
                                   const char *upload_data, size_t *upload_data_size,
                                   void **con_cls)
{
    ks_http_t *h = cls;
    http_req_t *rq = *con_cls;
    ks_resp_t resp;
    ks_req_t req;
    int control = strncmp(url, "/kubesim/", 9) == 0;
    int fault = 0;
    enum MHD_Result ret;

    (void)version;
    if (!rq) {
        int down;
        pthread_mutex_lock(&h->lock);
        down = h->down;
        pthread_mutex_unlock(&h->lock);
        if (down && !control)
            return MHD_NO; /* refuse: the connection is closed without an answer */
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        rf_buf_init(&rq->body, HTTP_BODY_MAX);
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (rf_buf_add(&rq->body, upload_data, *upload_data_size) != 0)
            rq->too_large = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    memset(&resp, 0, sizeof(resp));
    rf_buf_init(&resp.body, 0);
    if (!http_authorized(h, con)) {
        ks_api_status(&resp, 401, "Unauthorized", "Unauthorized", NULL);
        rf_log_debug("refused %s %s: no valid bearer token", method, url);
        return http_send(con, &resp);
    }
    if (control) {
        http_control(h, method, url, rq, &resp);
        return http_send(con, &resp);
    }
    pthread_mutex_lock(&h->lock);
    if (h->down) {
        pthread_mutex_unlock(&h->lock);
        return MHD_NO;
    }
    if (h->fault_count > 0) {
        fault = h->fault_status;
        h->fault_count--;
    }
    pthread_mutex_unlock(&h->lock);
    if (fault) {
        char msg[128];
        snprintf(msg, sizeof(msg), "injected fault: %d", fault);
        ks_api_status(&resp, fault, reason_for(fault), msg, NULL);
        return http_send(con, &resp);
    }
    if (rq->too_large) {
        ks_api_status(&resp, 413, "RequestEntityTooLarge", "the request body is too large", NULL);
        return http_send(con, &resp);
    }
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.path = url;
    req.query = http_query;
    req.query_cls = con;
    req.content_type = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Type");
    req.accept = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Accept");
    req.user_agent = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "User-Agent");
    req.body = rq->body.data;
    req.body_len = rq->body.len;
    ks_api_handle(h->api, &req, &resp);
    rf_log_debug("%s %s -> %d", method, url, resp.status);
    ret = http_send(con, &resp);
    rf_buf_release(&resp.body);
    return ret;
}

static void http_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    http_req_t *rq = *con_cls;

    (void)cls;
    (void)con;
    (void)toe;
    if (!rq)
        return;
    rf_buf_release(&rq->body);
    free(rq);
    *con_cls = NULL;
}

static void http_log(void *cls, const char *fm, va_list ap)
{
    char buf[512];

    (void)cls;
    vsnprintf(buf, sizeof(buf), fm, ap);
    buf[strcspn(buf, "\n")] = '\0';
    rf_log_debug("libmicrohttpd: %s", buf);
}

ks_http_t *ks_http_start(ks_api_t *api, const ks_http_conf_t *conf, char *errstr,
                         size_t errstr_size)
{
    ks_http_t *h = calloc(1, sizeof(*h));
    struct sockaddr_in sa;
    socklen_t slen = sizeof(sa);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    int one = 1;

    if (!h)
        return NULL;
    h->api = api;
    h->fd = -1;
    pthread_mutex_init(&h->lock, NULL);
    if (conf->token)
        h->token = strdup(conf->token);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)conf->port);
    if (inet_pton(AF_INET, conf->host, &sa.sin_addr) != 1 ||
        (ntohl(sa.sin_addr.s_addr) >> 24) != 127) {
        snprintf(errstr, errstr_size, "cannot listen on '%s': only loopback addresses are allowed",
                 conf->host);
        goto fail;
    }
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* accepted sockets inherit TCP_NODELAY: watch events leave at once, not after an ACK */
    if (h->fd < 0 || setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(h->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(h->fd, 512) != 0 ||
        getsockname(h->fd, (struct sockaddr *)&sa, &slen) != 0) {
        snprintf(errstr, errstr_size, "cannot listen on '%s:%d': %s", conf->host, conf->port,
                 strerror(errno));
        goto fail;
    }
    h->port = ntohs(sa.sin_port);
    if (conf->tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(errstr, errstr_size, "libmicrohttpd was built without TLS support");
            goto fail;
        }
        flags |= MHD_USE_TLS;
        h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, http_answer, h, MHD_OPTION_LISTEN_SOCKET, h->fd,
                                     MHD_OPTION_NOTIFY_COMPLETED, http_completed, h,
                                     MHD_OPTION_EXTERNAL_LOGGER, http_log, h,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)3600,
                                     MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000,
                                     MHD_OPTION_THREAD_STACK_SIZE, (size_t)HTTP_STACK_SIZE,
                                     MHD_OPTION_HTTPS_MEM_CERT, conf->tls_cert,
                                     MHD_OPTION_HTTPS_MEM_KEY, conf->tls_key, MHD_OPTION_END);
    } else {
        h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, http_answer, h, MHD_OPTION_LISTEN_SOCKET, h->fd,
                                     MHD_OPTION_NOTIFY_COMPLETED, http_completed, h,
                                     MHD_OPTION_EXTERNAL_LOGGER, http_log, h,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)3600,
                                     MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000,
                                     MHD_OPTION_THREAD_STACK_SIZE, (size_t)HTTP_STACK_SIZE,
                                     MHD_OPTION_END);
    }
    if (!h->daemon) {
        snprintf(errstr, errstr_size, "cannot start the http server on port %d", h->port);
        goto fail;
    }
    return h;
fail:
    if (h->fd >= 0)
        close(h->fd);
    free(h->token);
    pthread_mutex_destroy(&h->lock);
    free(h);
    return NULL;
}

int ks_http_port(const ks_http_t *h)
{
    return h->port;
}

void ks_http_stop(ks_http_t *h)
{
    if (!h)
        return;
    /* MHD_stop_daemon closes the listen socket it was given: closing it again could close
     * a descriptor another thread has opened since. */
    MHD_stop_daemon(h->daemon);
    if (h->token)
        OPENSSL_cleanse(h->token, strlen(h->token));
    free(h->token);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
