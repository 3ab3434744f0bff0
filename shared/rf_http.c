/* /metrics, /healthz and /readyz on a libmicrohttpd daemon with its own thread. */
#include "rf_http.h"
#include "rf_log.h"
#include "rf_metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct rf_http {
    struct MHD_Daemon *daemon;
    int fd;
    int port;
    rf_http_ready_fn ready;
    void *arg;
};

static enum MHD_Result http_send(struct MHD_Connection *conn, unsigned status, const char *type,
                                 char *body)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static char *http_strdup(const char *s)
{
    char *d = strdup(s);

    if (!d)
        abort();
    return d;
}

static enum MHD_Result http_answer(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls)
{
    static const char text[] = "text/plain; charset=utf-8";
    rf_http_t *h = cls;
    rf_buf_t why;
    int ready;

    (void)version;
    (void)upload_data;
    (void)con_cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return http_send(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text,
                         http_strdup("method not allowed\n"));
    if (*upload_data_size)
        return MHD_NO;
    if (strcmp(url, "/metrics") == 0)
        return http_send(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                         rf_metrics_render());
    if (strcmp(url, "/healthz") == 0)
        return http_send(conn, MHD_HTTP_OK, text, http_strdup("ok\n"));
    if (strcmp(url, "/readyz") == 0) {
        rf_buf_init(&why, 64 * 1024);
        ready = h->ready ? h->ready(h->arg, &why) : 1;
        if (ready) {
            rf_buf_release(&why);
            return http_send(conn, MHD_HTTP_OK, text, http_strdup("ready\n"));
        }
        rf_buf_adds(&why, "");
        return http_send(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text, rf_buf_detach(&why));
    }
    return http_send(conn, MHD_HTTP_NOT_FOUND, text,
                     http_strdup("not found: try /metrics, /healthz or /readyz\n"));
}

static void http_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    rf_log_warn("metrics endpoint: %s", msg);
}

int rf_http_listen(const char *addr, const char *what, int *v6, int *port, char *errstr,
                   size_t errstr_size)
{
    struct addrinfo hints, *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char host[256];
    const char *colon = strrchr(addr, ':');
    const char *service;
    int fd = -1, one = 1, rc;
    size_t hlen;

    if (!colon || !colon[1]) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad %s address '%s': expected host:port",
                what, addr);
        return -1;
    }
    service = colon + 1;
    hlen = (size_t)(colon - addr);
    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
        addr++;
        hlen -= 2;
    }
    if (hlen >= sizeof(host)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad %s address: host too long", what);
        return -1;
    }
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(hlen ? host : NULL, service, &hints, &res);
    if (rc != 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad %s address '%s:%s': %s", what, host,
                service, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot listen on %s address '%s:%s': %s",
                what, host, service, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    if (v6)
        *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    if (port) {
        *port = 0;
        if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0)
            *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

rf_http_t *rf_http_new(const char *addr, rf_http_ready_fn ready, void *arg, char *errstr,
                       size_t errstr_size)
{
    rf_http_t *h = calloc(1, sizeof(*h));
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    int v6 = 0;

    if (!h)
        abort();
    h->ready = ready;
    h->arg = arg;
    h->fd = rf_http_listen(addr, "metrics", &v6, NULL, errstr, errstr_size);
    if (h->fd < 0) {
        free(h);
        return NULL;
    }
    if (getsockname(h->fd, (struct sockaddr *)&ss, &sslen) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    if (v6)
        flags |= MHD_USE_IPv6;
    h->daemon =
        MHD_start_daemon(flags, 0, NULL, NULL, http_answer, h, MHD_OPTION_EXTERNAL_LOGGER, http_log,
                         h, MHD_OPTION_LISTEN_SOCKET, h->fd, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned)30, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (!h->daemon) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot start the metrics endpoint on '%s'",
                addr);
        close(h->fd);
        free(h);
        return NULL;
    }
    return h;
}

int rf_http_port(const rf_http_t *h)
{
    return h->port;
}

int rf_http_write_addr(const char *path, const char *addr, int port)
{
    char tmp[4096], host[256];
    const char *colon = strrchr(addr, ':');
    FILE *f;

    snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - addr) : 0, addr);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%s:%d\n", *host ? host : "0.0.0.0", port);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

void rf_http_destroy(rf_http_t *h)
{
    MHD_socket fd;

    if (!h)
        return;
    /* Quiesced, MHD hands the listening socket back instead of closing it itself. */
    fd = MHD_quiesce_daemon(h->daemon);
    MHD_stop_daemon(h->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    free(h);
}
