/* Readiness checks of a worker (PostgreSQL, Redis, Kafka, the stage's own) behind /readyz. */
#include "health/health.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rf_db.h"
#include "rf_http.h"
#include "rf_redis.h"
#include "rf_log.h"
#include "rf_metrics.h"

#define HEALTH_CHECKS_MAX 8

struct rf_health {
    const rf_config_t *conf;
    int check_redis;
    rf_http_t *http;
    rf_metric_t *ready_gauge;
    pthread_mutex_t lock;
    int wake[2]; /* rf_health_poke writes to wake[1]: the thread checks at once */
    pthread_t thread;
    int thread_started;
    int stop;
    PGconn *pg; /* the probe thread's own connection, watched while it waits */
    struct {
        char name[32];
        int ok;
        char detail[256];
    } checks[HEALTH_CHECKS_MAX];
    int nchecks;
};

void rf_health_set(rf_health_t *h, const char *check, int ok, const char *detail)
{
    int i, changed;

    pthread_mutex_lock(&h->lock);
    for (i = 0; i < h->nchecks; i++)
        if (strcmp(h->checks[i].name, check) == 0)
            break;
    if (i == h->nchecks) {
        if (h->nchecks == HEALTH_CHECKS_MAX) {
            pthread_mutex_unlock(&h->lock);
            return;
        }
        h->nchecks++;
        snprintf(h->checks[i].name, sizeof(h->checks[i].name), "%s", check);
        h->checks[i].ok = !ok; /* a new check is a change */
    }
    changed = h->checks[i].ok != ok;
    h->checks[i].ok = ok;
    snprintf(h->checks[i].detail, sizeof(h->checks[i].detail), "%s", detail ? detail : "");
    pthread_mutex_unlock(&h->lock);
    rf_metrics_set(h->ready_gauge, RF_LABELS(check), ok);
    if (changed && ok)
        rf_log_info("ready: %s", check);
    else if (changed)
        rf_log_warn("not ready: %s: %s", check, detail ? detail : "");
}

static int health_ready(void *arg, rf_buf_t *why)
{
    rf_health_t *h = arg;
    int ready = 1;

    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->nchecks; i++) {
        if (!h->checks[i].ok) {
            ready = 0;
            rf_buf_addf(why, "%s: %s\n", h->checks[i].name, h->checks[i].detail);
        }
    }
    pthread_mutex_unlock(&h->lock);
    return ready;
}

/* The first line of libpq's message, without its newline. */
static void health_pg_error(char *out, size_t size, const char *what, const char *msg)
{
    snprintf(out, size, "%s: %.*s", what, (int)strcspn(msg ? msg : "", "\n"), msg ? msg : "");
}

/* The probe's connection settings after the DSN's: short timeouts, a name of its own. */
static PGconn *health_pg_connect(rf_health_t *h, const char *session_attrs)
{
    const char *keys[] = {"connect_timeout", "options", "tcp_user_timeout", "application_name",
                          session_attrs ? "target_session_attrs" : NULL, NULL};
    const char *values[] = {"2", "-c statement_timeout=2000", "2000", "relfleet-readiness",
                            session_attrs, NULL};

    return rf_db_connect_dsn(h->conf->pg_dsn, keys, values);
}

/* What a write on conn would meet: 1 a writable server, 0 a standby or read-only one, -1
 * no answer (why gets libpq's message). */
static int health_pg_writable(PGconn *conn, char *why, size_t why_size)
{
    PGresult *res = PQexec(conn, "SELECT pg_is_in_recovery() OR"
                                 " current_setting('transaction_read_only') = 'on'");
    int state = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        state = strcmp(PQgetvalue(res, 0, 0), "t") != 0;
    else
        snprintf(why, why_size, "%s", PQerrorMessage(conn));
    PQclear(res);
    return state;
}

/* No writable host could be reached through the DSN as given: whether some host answered
 * but is read-only (a standby, or default_transaction_read_only on), or none answered. */
static void health_pg_unavailable(rf_health_t *h, const char *why)
{
    char detail[256], ignored[512];
    int state = -1;

    /* A second try when the probe connected but lost its answer: a server that turned
     * read-only or is being promoted terminates its clients, this probe's among them. */
    for (int attempt = 0; attempt < 2 && state < 0; attempt++) {
        PGconn *any = health_pg_connect(h, "any");

        if (PQstatus(any) != CONNECTION_OK) {
            PQfinish(any);
            break;
        }
        state = health_pg_writable(any, ignored, sizeof(ignored));
        if (state == 0)
            snprintf(detail, sizeof(detail),
                     "read-only: %s:%s answers but is a standby or read-only, and no host of "
                     "the DSN is writable",
                     PQhost(any), PQport(any));
        PQfinish(any);
    }
    if (state != 0)
        health_pg_error(detail, sizeof(detail), "unreachable", why);
    rf_health_set(h, "postgres", 0, detail);
}

/* Ready when the DSN as given reaches a writable host that answers. A connection whose host
 * turned read-only or went away is replaced through the DSN first: another host it lists
 * may be the writable one now. */
static void health_check_postgres(rf_health_t *h)
{
    char why[512];
    int state;

    if (h->pg && (PQstatus(h->pg) != CONNECTION_OK ||
                  health_pg_writable(h->pg, why, sizeof(why)) != 1)) {
        PQfinish(h->pg);
        h->pg = NULL;
    }
    if (!h->pg) {
        h->pg = health_pg_connect(h, NULL);
        if (!h->pg || PQstatus(h->pg) != CONNECTION_OK) {
            snprintf(why, sizeof(why), "%s", h->pg ? PQerrorMessage(h->pg) : "out of memory");
            PQfinish(h->pg);
            h->pg = NULL;
            health_pg_unavailable(h, why);
            return;
        }
        state = health_pg_writable(h->pg, why, sizeof(why));
        if (state != 1) { /* a DSN that asked for any host got a read-only one, or no answer */
            PQfinish(h->pg);
            h->pg = NULL;
            health_pg_unavailable(h, state == 0 ? "the host is read-only" : why);
            return;
        }
    }
    rf_health_set(h, "postgres", 1, NULL);
}

static void health_check_redis(rf_health_t *h)
{
    char detail[256];
    rf_redis_t *redis = rf_redis_new(h->conf, detail, sizeof(detail));
    rf_err_t result = redis ? rf_redis_check(redis, detail, sizeof(detail)) : RF_ERR_PERM;

    rf_health_set(h, "redis", result == RF_OK, detail);
    rf_redis_destroy(redis);
}

static long health_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the next check is due: the health interval, a poke, or the probe's own
 * PostgreSQL connection closing (the server stopped or failed over). At most one check
 * per HEALTH_POKE_MIN_MS however often it is poked. */
#define HEALTH_POKE_MIN_MS 100
#define HEALTH_RECHECK_MS 500

static int health_check_ok(rf_health_t *h, const char *check)
{
    int ok = 1;

    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->nchecks; i++)
        if (strcmp(h->checks[i].name, check) == 0)
            ok = h->checks[i].ok;
    pthread_mutex_unlock(&h->lock);
    return ok;
}
static void health_wait(rf_health_t *h, long checked_ms)
{
    long interval = h->conf->health_interval_ms, due, left;

    /* While a check of the thread fails, every HEALTH_RECHECK_MS at most: readiness comes
     * back within a second of the server, not an interval. */
    if (interval > HEALTH_RECHECK_MS &&
        (!health_check_ok(h, "postgres") || (h->check_redis && !health_check_ok(h, "redis"))))
        interval = HEALTH_RECHECK_MS;
    due = checked_ms + interval;

    for (;;) {
        struct pollfd pfd[2] = {{h->wake[0], POLLIN, 0},
                                {h->pg ? PQsocket(h->pg) : -1, POLLIN, 0}};
        char buf[64];

        left = due - health_now_ms();
        if (left <= 0)
            return;
        if (poll(pfd, 2, (int)left) < 0 && errno != EINTR)
            return;
        if (pfd[0].revents) {
            while (read(h->wake[0], buf, sizeof(buf)) > 0)
                ;
            break;
        }
        if (pfd[1].revents && (!PQconsumeInput(h->pg) || PQstatus(h->pg) != CONNECTION_OK ||
                               rf_db_conn_read_only(h->pg)))
            break;
    }
    left = checked_ms + HEALTH_POKE_MIN_MS - health_now_ms();
    if (left > 0) {
        struct timespec ts = {0, left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void *health_thread(void *arg)
{
    rf_health_t *h = arg;
    int stop = 0;

    while (!stop) {
        long checked = health_now_ms();

        health_check_postgres(h);
        if (h->check_redis)
            health_check_redis(h);
        health_wait(h, checked);
        pthread_mutex_lock(&h->lock);
        stop = h->stop;
        pthread_mutex_unlock(&h->lock);
    }
    return NULL;
}

void rf_health_poke(rf_health_t *h)
{
    ssize_t n;

    if (!h || h->wake[1] < 0)
        return;
    n = write(h->wake[1], "1", 1); /* a full pipe is a poke already pending */
    (void)n;
}

rf_health_t *rf_health_new(const rf_config_t *conf, int check_redis, char *errstr,
                           size_t errstr_size)
{
    rf_health_t *h = calloc(1, sizeof(*h));

    if (!h)
        abort();
    h->conf = conf;
    h->check_redis = check_redis;
    pthread_mutex_init(&h->lock, NULL);
    h->wake[0] = h->wake[1] = -1;
    h->ready_gauge = rf_metrics_gauge(
        "relfleet_ready", "1 when the readiness check passes (what /readyz answers)", "check");
    if (!conf->metrics_addr || !*conf->metrics_addr || strcmp(conf->metrics_addr, "off") == 0)
        return h;
    rf_health_set(h, "postgres", 0, "not checked yet");
    if (check_redis)
        rf_health_set(h, "redis", 0, "not checked yet");
    h->http = rf_http_new(conf->metrics_addr, health_ready, h, errstr, errstr_size);
    if (!h->http) {
        rf_health_destroy(h);
        return NULL;
    }
    if (pipe(h->wake) != 0) {
        h->wake[0] = h->wake[1] = -1;
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot create the readiness pipe: %s",
                strerror(errno));
        rf_health_destroy(h);
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(h->wake[i], F_SETFL, fcntl(h->wake[i], F_GETFL) | O_NONBLOCK);
        fcntl(h->wake[i], F_SETFD, FD_CLOEXEC);
    }
    if (pthread_create(&h->thread, NULL, health_thread, h) != 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot start the readiness thread");
        rf_health_destroy(h);
        return NULL;
    }
    h->thread_started = 1;
    if (conf->metrics_addr_file &&
        rf_http_write_addr(conf->metrics_addr_file, conf->metrics_addr, rf_http_port(h->http)) !=
            0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot write metrics_addr_file '%s': %s",
                conf->metrics_addr_file, strerror(errno));
        rf_health_destroy(h);
        return NULL;
    }
    rf_log_info("metrics, health and readiness on http://%s (port %d)", conf->metrics_addr,
                rf_http_port(h->http));
    return h;
}

int rf_health_port(const rf_health_t *h)
{
    return h->http ? rf_http_port(h->http) : 0;
}

void rf_health_destroy(rf_health_t *h)
{
    if (!h)
        return;
    if (h->thread_started) {
        pthread_mutex_lock(&h->lock);
        h->stop = 1;
        pthread_mutex_unlock(&h->lock);
        rf_health_poke(h);
        pthread_join(h->thread, NULL);
    }
    rf_http_destroy(h->http);
    PQfinish(h->pg);
    for (int i = 0; i < 2; i++)
        if (h->wake[i] >= 0)
            close(h->wake[i]);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
