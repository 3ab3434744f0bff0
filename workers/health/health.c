/* Readiness checks of a worker (PostgreSQL, Redis, Kafka, the stage's own) behind /readyz. */
#include "health/health.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_http.h"
#include "rf_lock.h"
#include "rf_log.h"
#include "rf_metrics.h"

#define HEALTH_CHECKS_MAX 8

struct rf_health {
    const rf_config_t *conf;
    int check_redis;
    rf_http_t *http;
    rf_metric_t *ready_gauge;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int thread_started;
    int stop;
    PGconn *pg; /* the probe thread's own connection */
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

static void health_check_postgres(rf_health_t *h)
{
    static const char *const keys[] = {"dbname",           "connect_timeout",  "options",
                                       "tcp_user_timeout", "application_name", NULL};
    const char *values[] = {h->conf->pg_dsn,      "2", "-c statement_timeout=2000", "2000",
                            "relfleet-readiness", NULL};
    char detail[256];
    PGresult *res;

    if (h->pg && PQstatus(h->pg) != CONNECTION_OK) {
        PQfinish(h->pg);
        h->pg = NULL;
    }
    if (!h->pg) {
        h->pg = PQconnectdbParams(keys, values, 1);
        if (!h->pg || PQstatus(h->pg) != CONNECTION_OK) {
            health_pg_error(detail, sizeof(detail), "cannot connect",
                            h->pg ? PQerrorMessage(h->pg) : "out of memory");
            PQfinish(h->pg);
            h->pg = NULL;
            rf_health_set(h, "postgres", 0, detail);
            return;
        }
    }
    res = PQexec(h->pg, "SELECT 1");
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        rf_health_set(h, "postgres", 1, NULL);
    } else {
        health_pg_error(detail, sizeof(detail), "SELECT 1 failed", PQerrorMessage(h->pg));
        rf_health_set(h, "postgres", 0, detail);
        PQfinish(h->pg);
        h->pg = NULL;
    }
    PQclear(res);
}

static void health_check_redis(rf_health_t *h)
{
    char errstr[256];
    rf_lock_t *lock = rf_lock_new(h->conf->redis_url, errstr, sizeof(errstr));

    rf_health_set(h, "redis", lock != NULL, lock ? NULL : errstr);
    rf_lock_destroy(lock);
}

static void *health_thread(void *arg)
{
    rf_health_t *h = arg;
    struct timespec until;

    pthread_mutex_lock(&h->lock);
    while (!h->stop) {
        pthread_mutex_unlock(&h->lock);
        health_check_postgres(h);
        if (h->check_redis)
            health_check_redis(h);
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += h->conf->health_interval_ms / 1000;
        until.tv_nsec += (long)(h->conf->health_interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&h->lock);
        while (!h->stop && pthread_cond_timedwait(&h->wake, &h->lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

rf_health_t *rf_health_new(const rf_config_t *conf, int check_redis, char *errstr,
                           size_t errstr_size)
{
    rf_health_t *h = calloc(1, sizeof(*h));
    pthread_condattr_t attr;

    if (!h)
        abort();
    h->conf = conf;
    h->check_redis = check_redis;
    pthread_mutex_init(&h->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&h->wake, &attr);
    pthread_condattr_destroy(&attr);
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
    if (pthread_create(&h->thread, NULL, health_thread, h) != 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot start the readiness thread");
        rf_health_destroy(h);
        return NULL;
    }
    h->thread_started = 1;
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
        pthread_cond_signal(&h->wake);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
    }
    rf_http_destroy(h->http);
    PQfinish(h->pg);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
