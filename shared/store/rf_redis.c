/* One Redis connection (plain or TLS, direct or the master Sentinels name) following failovers. */
#include "rf_redis.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rf_buf.h"
#include "rf_clock.h"
#include "rf_log.h"

/* hiredis 0.14 (Debian 12) has no TLS (hiredis_ssl came with 1.0), so this module owns the
 * socket, with OpenSSL on it for TLS, and hiredis does the protocol: redisFormatCommandArgv
 * encodes, a redisReader decodes. Plain TCP takes the same path without the SSL object. */

#define REDIS_TIMEOUT_MS 2000     /* connect, and each command's round trip */
#define REDIS_SUB_TIMEOUT_MS 500  /* subscribing again to a Sentinel (best effort) */
#define REDIS_SUB_BACKOFF_MS 1000 /* first wait after a failed resubscription, doubling */
#define REDIS_SUB_BACKOFF_MAX_MS 30000
#define REDIS_HOSTS_MAX 16
#define REDIS_OUT_MAX (256u << 20) /* bytes of commands queued before a get_reply */

typedef struct redis_addr {
    char host[256];
    int port;
} redis_addr_t;

typedef struct redis_conn {
    int fd; /* -1: closed */
    SSL *ssl;
    int cert_asked; /* TLS: the server asked for a client certificate and we have none */
    int replied;    /* a reply was read */
    redisReader *reader;
    char name[300]; /* host:port, for messages */
} redis_conn_t;

struct rf_redis {
    int tls;
    int sentinel;
    redis_addr_t hosts[REDIS_HOSTS_MAX]; /* the server, or the Sentinels */
    int nhosts;
    char *user;
    char *password;
    char *sentinel_password; /* NULL: the URL's credentials */
    int db;
    char *master_name;
    char *server_name; /* TLS name to send and verify; NULL: the host connected to */
    SSL_CTX *ssl_ctx;
    redis_conn_t conn; /* the master, or the one server */
    redis_conn_t sub;  /* Sentinel: subscribed to +switch-master */
    long sub_retry_at; /* monotonic ms before which no new subscription is tried */
    long sub_backoff;  /* ms to wait after the next failed try; 0: none failed since the last */
    rf_buf_t out;      /* commands appended and not sent yet */
    size_t pending;    /* replies the server owes */
    unsigned drops;
    char peer[768];
};

static void conn_init(redis_conn_t *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

static void conn_close(redis_conn_t *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->reader)
        redisReaderFree(c->reader);
    c->reader = NULL;
}

/* The first queued OpenSSL error as text ("" if none), and the queue emptied. */
static const char *redis_ssl_error(char *buf, size_t size)
{
    unsigned long e = ERR_get_error();

    buf[0] = '\0';
    if (e)
        ERR_error_string_n(e, buf, size);
    ERR_clear_error();
    return buf;
}

/* The server's alert refusing our client certificate (none sent, or not one it accepts),
 * peeked from the OpenSSL error queue: it comes in the handshake (TLS 1.2) or, in TLS 1.3,
 * at the first read after it. NULL for any other error. */
static const char *redis_ssl_cert_refused(void)
{
    unsigned long e = ERR_peek_error();

    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return NULL;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return "certificate required";
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        return "handshake failure";
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        return "bad certificate";
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
        return "certificate unknown";
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        return "certificate expired";
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
        return "certificate revoked";
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
        return "unsupported certificate";
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return "unknown ca";
    default:
        return NULL;
    }
}

/* The server asks for a client certificate and none is set (OpenSSL calls this only then):
 * noted, so that a connection it closes before answering is known to be refused for it
 * (in TLS 1.3 its alert can be lost in the reset that follows). */
static int redis_ssl_no_cert(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
    redis_conn_t *c = SSL_get_app_data(ssl);

    (void)x509;
    (void)pkey;
    if (c)
        c->cert_asked = 1;
    return 0;
}

/* c closed, and the permanent error of a server that refused our client certificate. */
static rf_err_t conn_cert_refused(redis_conn_t *c, const char *alert, char *errstr,
                                  size_t errstr_size)
{
    ERR_clear_error();
    if (alert)
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "redis at %s refused the tls client certificate (missing or not accepted: "
                "redis_tls_cert_file, redis_tls_key_file): tls alert '%s'",
                c->name, alert);
    else
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "redis at %s asked for a tls client certificate and closed the connection "
                "without one: set redis_tls_cert_file and redis_tls_key_file",
                c->name);
    conn_close(c);
    return RF_ERR_PERM;
}

static int redis_is_ip(const char *host)
{
    unsigned char a[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* Waits for events on c until deadline; a timeout is retriable. */
static rf_err_t conn_wait(redis_conn_t *c, short events, long deadline, char *errstr,
                          size_t errstr_size)
{
    struct pollfd p = {c->fd, events, 0};
    long left = deadline - rf_clock_mono_ms();
    int n;

    do {
        n = poll(&p, 1, left > 0 ? (int)left : 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis at %s: timed out", c->name);
    if (n < 0)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis at %s: %s", c->name,
                       strerror(errno));
    return RF_OK;
}

/* One TCP connection attempt to the address a, until deadline; c->fd -1 after a failure. */
static rf_err_t conn_tcp_addr(redis_conn_t *c, const struct addrinfo *a, long deadline,
                              char *errstr, size_t errstr_size)
{
    int rc, err = 0, one = 1;
    socklen_t len = sizeof(err);
    rf_err_t result = RF_OK;

    c->fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "%s", strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rc = connect(c->fd, a->ai_addr, a->ai_addrlen);
    if (rc < 0 && errno != EINPROGRESS)
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "%s", strerror(errno));
    else if (rc < 0 && conn_wait(c, POLLOUT, deadline, errstr, errstr_size) != RF_OK)
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "timed out");
    else if (rc < 0 && (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err))
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "%s", strerror(err ? err : errno));
    if (result != RF_OK) {
        close(c->fd);
        c->fd = -1;
    }
    return result;
}

/* TCP connection to host:port, non-blocking, within deadline: each address the name
 * resolves to in turn (as hiredis does: 'localhost' may give ::1 first to an IPv4-only
 * server), each but the last with an equal share of the time left. */
static rf_err_t conn_tcp(redis_conn_t *c, const char *host, int port, long deadline, char *errstr,
                         size_t errstr_size)
{
    struct addrinfo hints, *res = NULL;
    char service[16], why[256] = "";
    int rc, n = 0;
    rf_err_t result = RF_ERR_RETRY;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof(service), "%d", port);
    rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot resolve redis host '%s': %s",
                       host, gai_strerror(rc));
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        n++;
    for (const struct addrinfo *a = res; a && result != RF_OK; a = a->ai_next, n--) {
        long now = rf_clock_mono_ms();
        long until = n > 1 ? now + (deadline - now) / n : deadline;

        if (now >= deadline && why[0])
            break;
        result = conn_tcp_addr(c, a, until, why, sizeof(why));
    }
    freeaddrinfo(res);
    if (result != RF_OK)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot connect to redis at %s: %s",
                       c->name, why);
    return RF_OK;
}

/* The TLS handshake on c: the server's certificate is verified (chain and name) unless
 * the context says otherwise. A failed verification is permanent. */
static rf_err_t conn_tls(rf_redis_t *r, redis_conn_t *c, const char *host, long deadline,
                         char *errstr, size_t errstr_size)
{
    const char *name = r->server_name ? r->server_name : host;
    char ssl_err[256];
    rf_err_t result;

    c->ssl = SSL_new(r->ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot start tls to redis at %s: %s",
                       c->name, redis_ssl_error(ssl_err, sizeof(ssl_err)));
    SSL_set_app_data(c->ssl, c);
    if (!redis_is_ip(name))
        SSL_set_tlsext_host_name(c->ssl, name);
    if (redis_is_ip(name))
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
    else
        SSL_set1_host(c->ssl, name);
    for (;;) {
        int rc = SSL_connect(c->ssl);
        int e;

        if (rc == 1)
            return RF_OK;
        e = SSL_get_error(c->ssl, rc);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            result = conn_wait(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, errstr,
                               errstr_size);
            if (result != RF_OK)
                return rf_errf(result, errstr, errstr_size,
                               "tls handshake with redis at %s: timed out", c->name);
            continue;
        }
        if (SSL_get_verify_result(c->ssl) != X509_V_OK) {
            long v = SSL_get_verify_result(c->ssl);
            ERR_clear_error();
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "cannot verify the tls certificate of redis at %s (name '%s'): %s",
                           c->name, name, X509_verify_cert_error_string(v));
        }
        if (redis_ssl_cert_refused())
            return conn_cert_refused(c, redis_ssl_cert_refused(), errstr, errstr_size);
        redis_ssl_error(ssl_err, sizeof(ssl_err));
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "tls handshake with redis at %s: %s",
                       c->name, *ssl_err ? ssl_err : "connection closed");
    }
}

static rf_err_t conn_open(rf_redis_t *r, redis_conn_t *c, const char *host, int port,
                          int timeout_ms, char *errstr, size_t errstr_size)
{
    long deadline = rf_clock_mono_ms() + timeout_ms;
    rf_err_t result;

    conn_init(c);
    snprintf(c->name, sizeof(c->name), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    result = conn_tcp(c, host, port, deadline, errstr, errstr_size);
    if (result == RF_OK && r->tls)
        result = conn_tls(r, c, host, deadline, errstr, errstr_size);
    if (result == RF_OK) {
        c->reader = redisReaderCreate();
        if (!c->reader)
            abort();
    }
    if (result != RF_OK)
        conn_close(c);
    return result;
}

/* A dead connection's error, with c closed. */
static rf_err_t conn_lost(redis_conn_t *c, const char *why, char *errstr, size_t errstr_size)
{
    rf_errf(RF_ERR_RETRY, errstr, errstr_size, "connection to redis at %s lost: %s", c->name, why);
    conn_close(c);
    return RF_ERR_RETRY;
}

/* One read (writing 0) or write of up to len bytes: RF_OK with *n bytes done, or with *n 0
 * and *ev the poll events to wait for first; a closed or broken connection is lost
 * (retriable), a client certificate refused (TLS 1.3 tells it here) permanent. */
static rf_err_t conn_io(redis_conn_t *c, int writing, void *buf, size_t len, size_t *n, short *ev,
                        char *errstr, size_t errstr_size)
{
    char ssl_err[256];
    ssize_t k;

    *n = 0;
    *ev = 0;
    errno = 0;
    if (c->ssl) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int e;

        k = writing ? SSL_write(c->ssl, buf, chunk) : SSL_read(c->ssl, buf, chunk);
        e = k > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, (int)k);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            *ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        else if (e == SSL_ERROR_ZERO_RETURN)
            return conn_lost(c, "closed by the server", errstr, errstr_size);
        else if (e == SSL_ERROR_SSL && redis_ssl_cert_refused())
            return conn_cert_refused(c, redis_ssl_cert_refused(), errstr, errstr_size);
        else if (e != SSL_ERROR_NONE && c->cert_asked && !c->replied)
            return conn_cert_refused(c, NULL, errstr, errstr_size);
        else if (e != SSL_ERROR_NONE)
            return conn_lost(c,
                             *redis_ssl_error(ssl_err, sizeof(ssl_err))
                                 ? ssl_err
                                 : (errno ? strerror(errno) : "closed by the server"),
                             errstr, errstr_size);
    } else {
        k = writing ? send(c->fd, buf, len, MSG_NOSIGNAL) : recv(c->fd, buf, len, 0);
        if (k == 0 && !writing)
            return conn_lost(c, "closed by the server", errstr, errstr_size);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            *ev = writing ? POLLOUT : POLLIN;
        else if (k < 0)
            return conn_lost(c, strerror(errno), errstr, errstr_size);
    }
    if (k > 0)
        *n = (size_t)k;
    return RF_OK;
}

static rf_err_t conn_write(redis_conn_t *c, const char *buf, size_t len, long deadline,
                           char *errstr, size_t errstr_size)
{
    while (len > 0) {
        size_t n;
        short ev;
        rf_err_t result = conn_io(c, 1, (void *)buf, len, &n, &ev, errstr, errstr_size);

        if (result != RF_OK)
            return result;
        if (ev && conn_wait(c, ev, deadline, errstr, errstr_size) != RF_OK)
            return conn_lost(c, "timed out", errstr, errstr_size);
        buf += n;
        len -= n;
    }
    return RF_OK;
}

/* The next reply, waiting until deadline; with wait 0, *reply stays NULL (RF_OK) when none
 * has arrived yet. */
static rf_err_t conn_read(redis_conn_t *c, redisReply **reply, long deadline, int wait,
                          char *errstr, size_t errstr_size)
{
    char buf[16384];

    *reply = NULL;
    for (;;) {
        void *rep = NULL;
        size_t n;
        short ev;
        rf_err_t result;

        if (redisReaderGetReply(c->reader, &rep) != REDIS_OK)
            return conn_lost(c, c->reader->errstr, errstr, errstr_size);
        if (rep) {
            *reply = rep;
            c->replied = 1;
            return RF_OK;
        }
        result = conn_io(c, 0, buf, sizeof(buf), &n, &ev, errstr, errstr_size);
        if (result != RF_OK)
            return result;
        if (ev && !wait)
            return RF_OK;
        if (ev && conn_wait(c, ev, deadline, errstr, errstr_size) != RF_OK)
            return conn_lost(c, "timed out", errstr, errstr_size);
        if (n)
            redisReaderFeed(c->reader, buf, n);
    }
}

/* One command on c (NULL-terminated string arguments), for the handshakes. */
static rf_err_t conn_call(redis_conn_t *c, const char *const *args, redisReply **reply,
                          int timeout_ms, char *errstr, size_t errstr_size)
{
    const char *argv[8];
    size_t lens[8];
    int argc = 0, len;
    char *cmd = NULL;
    rf_err_t result;

    for (; args[argc] && argc < 8; argc++) {
        argv[argc] = args[argc];
        lens[argc] = strlen(args[argc]);
    }
    len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        abort();
    result = conn_write(c, cmd, (size_t)len, rf_clock_mono_ms() + timeout_ms, errstr, errstr_size);
    redisFreeCommand(cmd);
    if (result != RF_OK)
        return result;
    return conn_read(c, reply, rf_clock_mono_ms() + timeout_ms, 1, errstr, errstr_size);
}

/* Replies that refuse us for good: credentials missing, wrong or without the right. */
static int redis_reply_refused(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR &&
           (strncmp(rep->str, "NOAUTH", 6) == 0 || strncmp(rep->str, "WRONGPASS", 9) == 0 ||
            strncmp(rep->str, "NOPERM", 6) == 0);
}

/* AUTH (user and password, or the password alone) and SELECT, each within timeout_ms; what
 * is refused is permanent. */
static rf_err_t conn_login(redis_conn_t *c, const char *user, const char *password, int db,
                           int timeout_ms, char *errstr, size_t errstr_size)
{
    const char *auth_acl[] = {"AUTH", user, password, NULL};
    const char *auth[] = {"AUTH", password, NULL};
    char dbs[16];
    const char *select[] = {"SELECT", dbs, NULL};
    redisReply *rep = NULL;
    rf_err_t result = RF_OK;

    if (password) {
        result = conn_call(c, user ? auth_acl : auth, &rep, timeout_ms, errstr, errstr_size);
        if (result == RF_OK && rep->type == REDIS_REPLY_ERROR)
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                             "redis at %s refused authentication%s%s%s: %s", c->name,
                             user ? " as '" : "", user ? user : "", user ? "'" : "", rep->str);
        freeReplyObject(rep);
        rep = NULL;
    }
    if (result == RF_OK && db) {
        snprintf(dbs, sizeof(dbs), "%d", db);
        result = conn_call(c, select, &rep, timeout_ms, errstr, errstr_size);
        if (result == RF_OK && rep->type == REDIS_REPLY_ERROR)
            result =
                rf_errf(redis_reply_refused(rep) ? RF_ERR_PERM : RF_ERR_RETRY, errstr, errstr_size,
                        "redis at %s refused database %d: %s", c->name, db, rep->str);
        freeReplyObject(rep);
    }
    if (result != RF_OK)
        conn_close(c);
    return result;
}

/* Gives up the master connection and whatever was queued on it. */
static void redis_drop(rf_redis_t *r)
{
    if (r->conn.fd >= 0)
        r->drops++;
    conn_close(&r->conn);
    rf_buf_reset(&r->out);
    r->pending = 0;
    snprintf(r->peer, sizeof(r->peer), "not connected");
}

static rf_err_t redis_open_direct(rf_redis_t *r, char *errstr, size_t errstr_size)
{
    rf_err_t result = conn_open(r, &r->conn, r->hosts[0].host, r->hosts[0].port, REDIS_TIMEOUT_MS,
                                errstr, errstr_size);

    if (result == RF_OK)
        result = conn_login(&r->conn, r->user, r->password, r->db, REDIS_TIMEOUT_MS, errstr,
                            errstr_size);
    if (result == RF_OK)
        snprintf(r->peer, sizeof(r->peer), "redis at %s", r->conn.name);
    return result;
}

static rf_err_t redis_open_sentinel(rf_redis_t *r, redis_conn_t *s, const redis_addr_t *a,
                                    int timeout_ms, char *errstr, size_t errstr_size)
{
    rf_err_t result = conn_open(r, s, a->host, a->port, timeout_ms, errstr, errstr_size);

    if (result != RF_OK)
        return result;
    if (r->sentinel_password)
        return conn_login(s, NULL, r->sentinel_password, 0, timeout_ms, errstr, errstr_size);
    return conn_login(s, r->user, r->password, 0, timeout_ms, errstr, errstr_size);
}

/* SUBSCRIBE +switch-master on the Sentinel connection s, which becomes r->sub. */
static void redis_subscribe_on(rf_redis_t *r, redis_conn_t *s)
{
    static const char *const args[] = {"SUBSCRIBE", "+switch-master", NULL};
    char err[256];
    redisReply *rep = NULL;

    if (conn_call(s, args, &rep, REDIS_SUB_TIMEOUT_MS, err, sizeof(err)) != RF_OK) {
        rf_log_warn("cannot subscribe to +switch-master on redis sentinel: %s", err);
        return;
    }
    freeReplyObject(rep);
    conn_close(&r->sub);
    r->sub = *s;
    conn_init(s);
    r->sub_backoff = 0;
    r->sub_retry_at = 0;
}

/* A Sentinel subscription again after the one we had was lost (best effort). It runs inside
 * a caller's command and costs up to REDIS_SUB_TIMEOUT_MS per Sentinel when they are all
 * black-holed, so a failed round waits 1 s, then 2, 4 ... 30 s (from its end) before the
 * next; a subscription made (here or by a discovery) starts over. Commands meanwhile go
 * to the master found earlier; a lost one is found by redis_discover, bounded by itself. */
static void redis_resubscribe(rf_redis_t *r)
{
    char err[256];

    if (rf_clock_mono_ms() < r->sub_retry_at)
        return;
    for (int i = 0; i < r->nhosts && r->sub.fd < 0; i++) {
        redis_conn_t s;
        if (redis_open_sentinel(r, &s, &r->hosts[i], REDIS_SUB_TIMEOUT_MS, err, sizeof(err)) ==
            RF_OK)
            redis_subscribe_on(r, &s);
        conn_close(&s);
    }
    if (r->sub.fd >= 0)
        return;
    r->sub_backoff = r->sub_backoff ? r->sub_backoff * 2 : REDIS_SUB_BACKOFF_MS;
    if (r->sub_backoff > REDIS_SUB_BACKOFF_MAX_MS)
        r->sub_backoff = REDIS_SUB_BACKOFF_MAX_MS;
    r->sub_retry_at = rf_clock_mono_ms() + r->sub_backoff;
    rf_log_warn("no subscription to +switch-master on the redis sentinels of master '%s'; "
                "trying again in %ld ms",
                r->master_name, r->sub_backoff);
}

/* Reads the Sentinel events that arrived (without waiting): a +switch-master of our master
 * drops the master connection, so the next command finds the new one. */
static void redis_poll_events(rf_redis_t *r)
{
    char err[256];
    size_t nlen = strlen(r->master_name);

    if (r->sub.fd < 0) {
        redis_resubscribe(r);
        return;
    }
    for (;;) {
        redisReply *rep = NULL;
        if (conn_read(&r->sub, &rep, 0, 0, err, sizeof(err)) != RF_OK) {
            rf_log_warn("redis sentinel subscription: %s", err);
            return;
        }
        if (!rep)
            return;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
            rep->element[2]->type == REDIS_REPLY_STRING &&
            strncmp(rep->element[2]->str, r->master_name, nlen) == 0 &&
            rep->element[2]->str[nlen] == ' ') {
            rf_log_info("redis sentinel: +switch-master %s", rep->element[2]->str);
            redis_drop(r);
        }
        freeReplyObject(rep);
    }
}

/* Appends "; " and a sentence to the reasons a search failed. */
static void redis_why(rf_buf_t *why, const char *fmt, const char *a, const char *b)
{
    if (why->len)
        rf_buf_adds(why, "; ");
    rf_buf_addf(why, fmt, a, b);
}

/* Connects the master at host:port a Sentinel named and confirms with ROLE that it is one. */
static rf_err_t redis_open_master(rf_redis_t *r, const char *host, int port, char *errstr,
                                  size_t errstr_size)
{
    static const char *const role[] = {"ROLE", NULL};
    redisReply *rep = NULL;
    rf_err_t result = conn_open(r, &r->conn, host, port, REDIS_TIMEOUT_MS, errstr, errstr_size);

    if (result == RF_OK)
        result = conn_login(&r->conn, r->user, r->password, r->db, REDIS_TIMEOUT_MS, errstr,
                            errstr_size);
    if (result == RF_OK)
        result = conn_call(&r->conn, role, &rep, REDIS_TIMEOUT_MS, errstr, errstr_size);
    if (result == RF_OK && (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
                            rep->element[0]->type != REDIS_REPLY_STRING ||
                            strcmp(rep->element[0]->str, "master") != 0))
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis at %s is not a master (%s)",
                         r->conn.name,
                         rep->type == REDIS_REPLY_ARRAY && rep->elements &&
                                 rep->element[0]->type == REDIS_REPLY_STRING
                             ? rep->element[0]->str
                             : (rep->type == REDIS_REPLY_ERROR ? rep->str : "ROLE"));
    freeReplyObject(rep);
    if (result != RF_OK)
        conn_close(&r->conn);
    return result;
}

/* Asks the Sentinels in turn for the master and connects it. A master that could not be
 * connected is not tried again when the next Sentinel names it too (before they notice it
 * is down they all do): one connect timeout per search, not one per Sentinel. */
static rf_err_t redis_discover(rf_redis_t *r, char *errstr, size_t errstr_size)
{
    const char *const ask[] = {"SENTINEL", "get-master-addr-by-name", r->master_name, NULL};
    rf_buf_t why = RF_BUF_INIT;
    int unknown = 0, answered = 0, perm = 0, nfailed = 0;
    char failed[REDIS_HOSTS_MAX][300]; /* host:port of the masters that failed */
    rf_err_t result = RF_ERR_RETRY;
    char sub[256];

    for (int i = 0; i < r->nhosts && result != RF_OK; i++) {
        redis_conn_t s;
        redisReply *rep = NULL;
        char host[256], addr[300];
        int port, seen = 0;

        result = redis_open_sentinel(r, &s, &r->hosts[i], REDIS_TIMEOUT_MS, sub, sizeof(sub));
        if (result == RF_OK)
            result = conn_call(&s, ask, &rep, REDIS_TIMEOUT_MS, sub, sizeof(sub));
        if (result != RF_OK) {
            perm |= result == RF_ERR_PERM; /* a refused AUTH, a certificate not verified */
            redis_why(&why, "%s%s", "", sub);
            result = RF_ERR_RETRY;
            continue;
        }
        result = RF_ERR_RETRY; /* until a master is connected */
        if (rep->type == REDIS_REPLY_NIL) {
            unknown++;
            redis_why(&why, "sentinel %s knows no master '%s'", s.name, r->master_name);
        } else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
                   rep->element[0]->type != REDIS_REPLY_STRING ||
                   rep->element[1]->type != REDIS_REPLY_STRING) {
            redis_why(&why, "sentinel %s: %s", s.name,
                      rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        } else {
            answered++;
            snprintf(host, sizeof(host), "%s", rep->element[0]->str);
            port = atoi(rep->element[1]->str);
            snprintf(addr, sizeof(addr), "%s:%d", host, port);
            for (int j = 0; j < nfailed; j++)
                seen |= strcmp(failed[j], addr) == 0;
            result = seen ? RF_ERR_RETRY : redis_open_master(r, host, port, sub, sizeof(sub));
            if (seen) {
                redis_why(&why, "sentinel %s names %s too", s.name, addr);
            } else if (result != RF_OK) {
                perm |= result == RF_ERR_PERM;
                redis_why(&why, "%s (the master sentinel %s names)", sub, s.name);
                result = RF_ERR_RETRY;
                snprintf(failed[nfailed++], sizeof(failed[0]), "%s", addr);
            } else {
                snprintf(r->peer, sizeof(r->peer), "redis master '%s' at %s (sentinel %s)",
                         r->master_name, r->conn.name, s.name);
                if (r->sub.fd < 0)
                    redis_subscribe_on(r, &s);
            }
        }
        freeReplyObject(rep);
        conn_close(&s);
    }
    if (result != RF_OK && perm)
        result =
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot connect to redis master '%s': %s",
                    r->master_name, rf_buf_str(&why));
    else if (result != RF_OK && unknown && !answered)
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "unknown redis master '%s': %s",
                         r->master_name, rf_buf_str(&why));
    else if (result != RF_OK && !answered)
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                         "cannot reach any redis sentinel of master '%s': %s", r->master_name,
                         rf_buf_str(&why));
    else if (result != RF_OK)
        result =
            rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot connect to redis master '%s': %s",
                    r->master_name, rf_buf_str(&why));
    rf_buf_release(&why);
    return result;
}

/* Before a command or a batch: Sentinel events, then a connection to the master. */
static rf_err_t redis_prepare(rf_redis_t *r, char *errstr, size_t errstr_size)
{
    /* Events matter only to a master connection; without one, discovery subscribes. */
    if (r->sentinel && r->conn.fd >= 0)
        redis_poll_events(r);
    if (r->conn.fd >= 0)
        return RF_OK;
    return r->sentinel ? redis_discover(r, errstr, errstr_size)
                       : redis_open_direct(r, errstr, errstr_size);
}

rf_err_t rf_redis_append(rf_redis_t *r, int argc, const char **argv, const size_t *lens,
                         char *errstr, size_t errstr_size)
{
    char *cmd = NULL;
    int len;
    rf_err_t result = RF_OK;

    if (r->out.len == 0 && r->pending == 0)
        result = redis_prepare(r, errstr, errstr_size);
    else if (r->conn.fd < 0)
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis connection lost");
    if (result != RF_OK)
        return result;
    len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        abort();
    if (rf_buf_add(&r->out, cmd, (size_t)len) != 0)
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "redis pipeline passes %u bytes",
                         REDIS_OUT_MAX);
    else
        r->pending++;
    redisFreeCommand(cmd);
    return result;
}

/* Replies that mean "this is no (usable) master now": find it again. */
static int redis_reply_moved(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR &&
           (strncmp(rep->str, "READONLY", 8) == 0 || strncmp(rep->str, "LOADING", 7) == 0 ||
            strncmp(rep->str, "MASTERDOWN", 10) == 0);
}

rf_err_t rf_redis_get_reply(rf_redis_t *r, redisReply **reply, char *errstr, size_t errstr_size)
{
    char name[768];
    rf_err_t result;

    *reply = NULL;
    if (r->conn.fd < 0 || r->pending == 0)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "redis connection lost");
    snprintf(name, sizeof(name), "%s", r->peer);
    if (r->out.len) {
        result = conn_write(&r->conn, r->out.data, r->out.len,
                            rf_clock_mono_ms() + REDIS_TIMEOUT_MS, errstr, errstr_size);
        rf_buf_reset(&r->out);
        if (result != RF_OK) {
            r->drops++; /* conn_write closed it */
            redis_drop(r);
            return result;
        }
    }
    result =
        conn_read(&r->conn, reply, rf_clock_mono_ms() + REDIS_TIMEOUT_MS, 1, errstr, errstr_size);
    if (result != RF_OK) {
        r->drops++;
        redis_drop(r);
        return result;
    }
    r->pending--;
    if (redis_reply_moved(*reply)) {
        rf_errf(RF_ERR_RETRY, errstr, errstr_size, "%s answered '%.*s': finding the master again",
                name, (int)strcspn((*reply)->str, "\r\n"), (*reply)->str);
        freeReplyObject(*reply);
        *reply = NULL;
        redis_drop(r);
        return RF_ERR_RETRY;
    }
    return RF_OK;
}

rf_err_t rf_redis_command(rf_redis_t *r, int argc, const char **argv, const size_t *lens,
                          redisReply **reply, char *errstr, size_t errstr_size)
{
    rf_err_t result;

    for (int attempt = 0;; attempt++) {
        unsigned drops = r->drops;

        result = rf_redis_append(r, argc, argv, lens, errstr, errstr_size);
        if (result == RF_OK)
            result = rf_redis_get_reply(r, reply, errstr, errstr_size);
        /* A connection that worked was given up (failover): run the command once more on
         * the master found now. Safe because callers only send idempotent commands. */
        if (result != RF_ERR_RETRY || attempt == 1 || r->drops == drops)
            return result;
    }
}

rf_err_t rf_redis_check(rf_redis_t *r, char *errstr, size_t errstr_size)
{
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    redisReply *rep = NULL;
    rf_err_t result = rf_redis_command(r, 1, argv, lens, &rep, errstr, errstr_size);

    if (result == RF_OK && rep->type == REDIS_REPLY_ERROR)
        result = rf_errf(redis_reply_refused(rep) ? RF_ERR_PERM : RF_ERR_RETRY, errstr, errstr_size,
                         "%s: PING: %s", r->peer, rep->str);
    else if (result == RF_OK)
        snprintf(errstr, errstr_size, "%s", r->peer);
    freeReplyObject(rep);
    return result;
}

unsigned rf_redis_drops(const rf_redis_t *r)
{
    return r->drops;
}

/* Percent-decodes s[0..len) into a new string. */
static char *redis_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t j = 0;

    if (!out)
        abort();
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            out[j++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    return out;
}

/* One host[:port] (IPv6 in brackets) of the URL. */
static rf_err_t redis_parse_host(redis_addr_t *a, const char *s, size_t len, int def_port,
                                 char *errstr, size_t errstr_size)
{
    const char *end = s + len, *colon;
    char port[16];
    char *stop = NULL;
    long p;

    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "bad redis url: '%.*s' lacks the closing ']'", (int)len, s);
        snprintf(a->host, sizeof(a->host), "%.*s", (int)(close - s - 1), s + 1);
        colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
        if (!colon && close + 1 != end)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad redis url: host '%.*s'", (int)len,
                           s);
    } else {
        colon = memchr(s, ':', len);
        snprintf(a->host, sizeof(a->host), "%.*s", (int)(colon ? colon - s : (long)len), s);
    }
    if (!a->host[0])
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad redis url: a host is empty");
    a->port = def_port;
    if (!colon)
        return RF_OK;
    snprintf(port, sizeof(port), "%.*s", (int)(end - colon - 1 < 15 ? end - colon - 1 : 15),
             colon + 1);
    p = strtol(port, &stop, 10);
    if (!port[0] || *stop || p < 1 || p > 65535)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "bad redis url: port '%s' of host '%s' is not a number 1-65535", port,
                       a->host);
    a->port = (int)p;
    return RF_OK;
}

static rf_err_t redis_parse_url(rf_redis_t *r, const char *url, char *errstr, size_t errstr_size)
{
    static const char *const schemes[] = {"redis", "rediss", "redis-sentinel", "rediss-sentinel",
                                          NULL};
    const char *sep = strstr(url, "://"), *p, *hosts, *hosts_end, *at, *frag;
    size_t slen = sep ? (size_t)(sep - url) : 0;
    int k;

    for (k = 0; schemes[k]; k++)
        if (sep && strlen(schemes[k]) == slen && strncmp(url, schemes[k], slen) == 0)
            break;
    if (!schemes[k])
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "bad redis url: scheme '%.*s' is not redis://, rediss://, "
                       "redis-sentinel:// or rediss-sentinel://",
                       (int)(sep ? slen : strcspn(url, ":/@")), url);
    r->tls = k == 1 || k == 3;
    r->sentinel = k >= 2;
    p = sep + 3;
    /* An '@' after a '/', '#' or '?' is a password (or user) with that character left
     * unencoded: parsed on, the password's head would be a host or port in the message. */
    if (strchr(p + strcspn(p, "/#?"), '@'))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "bad redis url: a '/', '#' or '?' in the user or password must be "
                       "percent-encoded (%%2F, %%23, %%3F)");
    frag = strchr(p, '#');
    if (strchr(p, '?') && (!frag || strchr(p, '?') < frag))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "bad redis url: query parameters ('?...') are not supported");
    /* userinfo: up to the last '@' before the path (a password's own '@' is %40) */
    hosts_end = p + strcspn(p, "/#");
    at = NULL;
    for (const char *q = p; q < hosts_end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "bad redis url: the part before '@' must be user:password or "
                           ":password");
        if (colon > p)
            r->user = redis_decode(p, (size_t)(colon - p));
        r->password = redis_decode(colon + 1, (size_t)(at - colon - 1));
        if (!r->password[0]) {
            free(r->password);
            r->password = NULL;
        }
        if (r->user && !r->password)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "bad redis url: user '%s' has no password", r->user);
        hosts = at + 1;
    } else {
        hosts = p;
    }
    if (hosts == hosts_end)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad redis url: no host");
    for (const char *h = hosts; h < hosts_end;) {
        const char *comma = memchr(h, ',', (size_t)(hosts_end - h));
        const char *e = comma ? comma : hosts_end;
        rf_err_t result;

        if (r->nhosts == REDIS_HOSTS_MAX)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad redis url: more than %d hosts",
                           REDIS_HOSTS_MAX);
        result = redis_parse_host(&r->hosts[r->nhosts], h, (size_t)(e - h),
                                  r->sentinel ? 26379 : 6379, errstr, errstr_size);
        if (result != RF_OK)
            return result;
        r->nhosts++;
        h = comma ? comma + 1 : e;
        if (comma && h == hosts_end)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad redis url: a host is empty");
    }
    if (r->nhosts > 1 && !r->sentinel)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "bad redis url: several hosts need redis-sentinel:// (or "
                       "rediss-sentinel://)");
    p = hosts_end;
    if (*p == '/') {
        size_t n = strcspn(p + 1, "#");
        char db[16];
        char *stop = NULL;
        long v;

        snprintf(db, sizeof(db), "%.*s", (int)(n < 15 ? n : 15), p + 1);
        v = n ? strtol(db, &stop, 10) : 0;
        if (n && (n > 9 || *stop || v < 0))
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "bad redis url: database '%s' is not a number", db);
        r->db = (int)v;
        p += 1 + n;
    }
    if (*p == '#' && !r->sentinel)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "bad redis url: '#%s' (a master name) needs redis-sentinel://", p + 1);
    if (r->sentinel && (*p != '#' || !p[1]))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "bad redis url: %s:// needs the master name at the end (#name)", schemes[k]);
    if (r->sentinel)
        r->master_name = redis_decode(p + 1, strlen(p + 1));
    return RF_OK;
}

static rf_err_t redis_tls_setup(rf_redis_t *r, const rf_config_t *conf, char *errstr,
                                size_t errstr_size)
{
    const char *ca = conf->redis_tls_ca_file, *cert = conf->redis_tls_cert_file,
               *key = conf->redis_tls_key_file;
    int skip = conf->redis_tls_insecure_skip_verify &&
               strcmp(conf->redis_tls_insecure_skip_verify, "true") == 0;
    char ssl_err[256];

    ca = ca && *ca ? ca : NULL;
    cert = cert && *cert ? cert : NULL;
    key = key && *key ? key : NULL;
    if (!r->tls) {
        if (ca || cert || key || skip ||
            (conf->redis_tls_server_name && *conf->redis_tls_server_name))
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "redis_tls_* settings are set but the redis url is not rediss:// or "
                           "rediss-sentinel://");
        return RF_OK;
    }
    if (!cert != !key)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "redis_tls_cert_file and redis_tls_key_file go together");
    r->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!r->ssl_ctx)
        abort();
    SSL_CTX_set_min_proto_version(r->ssl_ctx, TLS1_2_VERSION);
    if (ca && SSL_CTX_load_verify_locations(r->ssl_ctx, ca, NULL) != 1)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot load redis_tls_ca_file '%s': %s",
                       ca, redis_ssl_error(ssl_err, sizeof(ssl_err)));
    if (!ca && SSL_CTX_set_default_verify_paths(r->ssl_ctx) != 1)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot load the system's CA store: %s",
                       redis_ssl_error(ssl_err, sizeof(ssl_err)));
    if (cert && SSL_CTX_use_certificate_chain_file(r->ssl_ctx, cert) != 1)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot load redis_tls_cert_file '%s': %s",
                       cert, redis_ssl_error(ssl_err, sizeof(ssl_err)));
    if (key && (SSL_CTX_use_PrivateKey_file(r->ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
                SSL_CTX_check_private_key(r->ssl_ctx) != 1))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot load redis_tls_key_file '%s': %s",
                       key, redis_ssl_error(ssl_err, sizeof(ssl_err)));
    SSL_CTX_set_verify(r->ssl_ctx, skip ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (!cert)
        SSL_CTX_set_client_cert_cb(r->ssl_ctx, redis_ssl_no_cert);
    if (skip)
        rf_log_warn("redis_tls_insecure_skip_verify is true: the redis server's certificate "
                    "is not verified");
    if (conf->redis_tls_server_name && *conf->redis_tls_server_name)
        r->server_name = strdup(conf->redis_tls_server_name);
    return RF_OK;
}

rf_redis_t *rf_redis_new(const rf_config_t *conf, char *errstr, size_t errstr_size)
{
    rf_redis_t *r = calloc(1, sizeof(*r));

    if (!r)
        abort();
    conn_init(&r->conn);
    conn_init(&r->sub);
    rf_buf_init(&r->out, REDIS_OUT_MAX);
    snprintf(r->peer, sizeof(r->peer), "not connected");
    if (!conf->redis_url || !*conf->redis_url) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "setting 'redis_url' is empty");
        goto fail;
    }
    if (redis_parse_url(r, conf->redis_url, errstr, errstr_size) != RF_OK ||
        redis_tls_setup(r, conf, errstr, errstr_size) != RF_OK)
        goto fail;
    if (conf->redis_sentinel_password && *conf->redis_sentinel_password)
        r->sentinel_password = strdup(conf->redis_sentinel_password);
    return r;
fail:
    rf_redis_destroy(r);
    return NULL;
}

void rf_redis_destroy(rf_redis_t *r)
{
    if (!r)
        return;
    conn_close(&r->conn);
    conn_close(&r->sub);
    rf_buf_release(&r->out);
    SSL_CTX_free(r->ssl_ctx);
    free(r->user);
    free(r->password);
    free(r->sentinel_password);
    free(r->master_name);
    free(r->server_name);
    free(r);
}
