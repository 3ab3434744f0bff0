/* Live progress: LISTEN relfleet_timeline on a connection of its own, and the Server-Sent
 * Events stream of one release's timeline, woken by those notifications (no polling). */
#include <errno.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "api_events.h"
#include "api_server.h"
#include "rf_log.h"
#include "rf_release.h"
#include "rf_store.h"

#define EVENTS_KEEPALIVE_MS 15000

struct api_sub {
    api_sub_t *next, *prev;
    api_hub_t *hub;
    char id[40];
    unsigned gen;
    pthread_cond_t cond;
};

struct api_hub {
    api_t *api;
    pthread_mutex_t lock;
    api_sub_t *subs;
    pthread_t thread;
    int stop;
};

/* ---------------------------------------------------------------------------------------
 * The hub */

static void hub_notify(api_hub_t *hub, const char *release_id)
{
    pthread_mutex_lock(&hub->lock);
    for (api_sub_t *s = hub->subs; s; s = s->next) {
        if (!release_id || strcmp(s->id, release_id) == 0) {
            s->gen++;
            pthread_cond_broadcast(&s->cond);
        }
    }
    pthread_mutex_unlock(&hub->lock);
}

void api_hub_wake_all(api_hub_t *hub)
{
    if (hub)
        hub_notify(hub, NULL);
}

api_sub_t *api_hub_subscribe(api_hub_t *hub, const char *release_id)
{
    api_sub_t *s = calloc(1, sizeof(*s));
    pthread_condattr_t attr;

    if (!s)
        abort();
    s->hub = hub;
    snprintf(s->id, sizeof(s->id), "%s", release_id);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_lock(&hub->lock);
    s->next = hub->subs;
    if (hub->subs)
        hub->subs->prev = s;
    hub->subs = s;
    pthread_mutex_unlock(&hub->lock);
    return s;
}

void api_hub_unsubscribe(api_hub_t *hub, api_sub_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&hub->lock);
    if (s->prev)
        s->prev->next = s->next;
    else
        hub->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_unlock(&hub->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

unsigned api_sub_generation(api_sub_t *s)
{
    return __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
}

int api_sub_wait(api_sub_t *s, unsigned *seen, int timeout_ms)
{
    struct timespec start, until, end;
    api_hub_t *hub = s->hub;
    int waited;

    clock_gettime(CLOCK_MONOTONIC, &start);
    until = start;
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&hub->lock);
    while (s->gen == *seen && !hub->api->stopping) {
        if (pthread_cond_timedwait(&s->cond, &hub->lock, &until) == ETIMEDOUT)
            break;
    }
    *seen = s->gen;
    pthread_mutex_unlock(&hub->lock);
    clock_gettime(CLOCK_MONOTONIC, &end);
    waited = (int)((end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000);
    return waited > 0 ? waited : 1;
}

/* The listener: one connection that only LISTENs. After each (re)connection every
 * subscriber is woken, since notifications sent while it was away are lost. */
/* Whether the listener's host is still the writable one (every 2 s while idle): a host
 * that turned read-only (a standby now) gets no more NOTIFYs. */
static int hub_listen_writable(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT pg_is_in_recovery() OR"
                                 " current_setting('transaction_read_only') = 'on'");
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "f") == 0;

    if (!ok)
        rf_log_warn("events: the PostgreSQL host of the listener is read-only or gone: "
                    "listening again through the DSN");
    PQclear(res);
    return ok;
}

static void *hub_listen(void *arg)
{
    api_hub_t *hub = arg;
    int backoff_ms = 100, idle_polls = 0;

    while (!hub->stop) {
        PGconn *conn = rf_db_connect_dsn(hub->api->conf.pg_dsn, NULL, NULL);
        PGresult *res;

        if (PQstatus(conn) != CONNECTION_OK) {
            struct timespec pause = {backoff_ms / 1000, (backoff_ms % 1000) * 1000000L};
            rf_log_warn("events: cannot connect to PostgreSQL: %s",
                        strtok(PQerrorMessage(conn), "\n"));
            PQfinish(conn);
            nanosleep(&pause, NULL);
            backoff_ms = backoff_ms * 2 > 2000 ? 2000 : backoff_ms * 2;
            continue;
        }
        res = PQexec(conn, "LISTEN relfleet_timeline");
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            rf_log_warn("events: LISTEN failed: %s", PQresultErrorMessage(res));
            PQclear(res);
            PQfinish(conn);
            continue;
        }
        PQclear(res);
        backoff_ms = 100;
        hub_notify(hub, NULL);
        while (!hub->stop) {
            struct pollfd pfd = {PQsocket(conn), POLLIN, 0};
            PGnotify *n;
            int rc = poll(&pfd, 1, 500);

            if (rc < 0 && errno != EINTR)
                break;
            if (rc == 0 && ++idle_polls % 4 == 0) {
                if (!hub_listen_writable(conn))
                    break; /* notifications now go to another host: LISTEN there */
                while ((n = PQnotifies(conn)) != NULL) { /* come with the answer */
                    hub_notify(hub, n->extra);
                    PQfreemem(n);
                }
            }
            if (rc <= 0)
                continue;
            if (!PQconsumeInput(conn)) {
                rf_log_warn("events: lost the PostgreSQL connection: %s",
                            strtok(PQerrorMessage(conn), "\n"));
                break;
            }
            while ((n = PQnotifies(conn)) != NULL) {
                hub_notify(hub, n->extra);
                PQfreemem(n);
            }
        }
        PQfinish(conn);
    }
    return NULL;
}

api_hub_t *api_hub_new(api_t *api, char *errstr, size_t errstr_size)
{
    api_hub_t *hub = calloc(1, sizeof(*hub));

    if (!hub)
        abort();
    hub->api = api;
    pthread_mutex_init(&hub->lock, NULL);
    if (pthread_create(&hub->thread, NULL, hub_listen, hub) != 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot start the events thread");
        pthread_mutex_destroy(&hub->lock);
        free(hub);
        return NULL;
    }
    return hub;
}

void api_hub_destroy(api_hub_t *hub)
{
    if (!hub)
        return;
    hub->stop = 1;
    pthread_join(hub->thread, NULL);
    pthread_mutex_destroy(&hub->lock);
    free(hub);
}

/* ---------------------------------------------------------------------------------------
 * The stream of one release */

typedef struct events_stream {
    api_t *api;
    api_sub_t *sub;
    unsigned seen;
    char id[40];
    char last_id[24]; /* the newest timeline row sent */
    char *last_state; /* the last `release` event's data */
    rf_buf_t out;
    size_t pos;
    int started, done;
} events_stream_t;

/* Appends what changed since the last call: new timeline rows, then the release's state
 * when it differs, then `end` once the release is terminal. */
static void events_fill(events_stream_t *es)
{
    const char *p[2] = {es->id, es->last_id};
    rf_db_t *db = api_db_borrow(es->api);
    PGresult *state = NULL, *rows = NULL;
    char errstr[512];

    if (!db) {
        rf_buf_adds(&es->out, ": database busy\n\n");
        return;
    }
    /* The state first, the rows after: a release ends in one transaction with its last
     * timeline row, so rows read later include every row of the state read before. */
    if (rf_db_exec(db,
                   "SELECT status, jsonb_build_object('id', id, 'status', status, 'started_at',"
                   " relfleet_iso(started_at), 'finished_at', relfleet_iso(finished_at),"
                   " 'duration_ms', duration_ms, 'error', error, 'progress', track ->"
                   " 'progress', 'pods', coalesce(pods, '[]'::jsonb), 'notifications',"
                   " relfleet_notifications(id), 'template_id', template_id, 'template_version',"
                   " template_version, 'approvals_needed', approvals_needed, 'approvals',"
                   " relfleet_approvals(id)) FROM releases WHERE id = $1::uuid",
                   1, p, &state, errstr, sizeof(errstr)) != RF_OK ||
        rf_db_exec(db,
                   "SELECT id, jsonb_strip_nulls(jsonb_build_object('id', id, 'at',"
                   " relfleet_iso(at), 'stage', stage, 'event', event, 'status', status,"
                   " 'message', message, 'data', data)) FROM timeline WHERE release_id = $1"
                   " AND id > $2::bigint ORDER BY id",
                   2, p, &rows, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("events of %s: %s", es->id, errstr);
        goto out;
    }
    for (int i = 0; i < PQntuples(rows); i++) {
        rf_buf_addf(&es->out, "id: %s\nevent: timeline\ndata: %s\n\n", PQgetvalue(rows, i, 0),
                    PQgetvalue(rows, i, 1));
        snprintf(es->last_id, sizeof(es->last_id), "%s", PQgetvalue(rows, i, 0));
    }
    if (PQntuples(state) == 1) {
        const char *text = PQgetvalue(state, 0, 1);
        if (!es->last_state || strcmp(es->last_state, text) != 0) {
            rf_buf_addf(&es->out, "event: release\ndata: %s\n\n", text);
            free(es->last_state);
            es->last_state = strdup(text);
        }
        if (rf_release_status_terminal(rf_release_status_parse(PQgetvalue(state, 0, 0)))) {
            rf_buf_addf(&es->out, "event: end\ndata: {\"status\":\"%s\"}\n\n",
                        PQgetvalue(state, 0, 0));
            es->done = 1;
        }
    }
out:
    PQclear(state);
    PQclear(rows);
    api_db_return(es->api, db);
}

static ssize_t events_read(void *cls, uint64_t offset, char *buf, size_t max)
{
    events_stream_t *es = cls;

    (void)offset;
    for (;;) {
        if (es->pos < es->out.len) {
            size_t n = es->out.len - es->pos;
            if (n > max)
                n = max;
            memcpy(buf, es->out.data + es->pos, n);
            es->pos += n;
            return (ssize_t)n;
        }
        rf_buf_reset(&es->out);
        es->pos = 0;
        if (es->done || es->api->stopping)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!es->started) {
            es->started = 1;
            rf_buf_adds(&es->out, "retry: 2000\n\n");
            events_fill(es);
            continue;
        }
        {
            unsigned before = es->seen;
            api_sub_wait(es->sub, &es->seen, EVENTS_KEEPALIVE_MS);
            if (es->seen != before)
                events_fill(es);
            else
                rf_buf_adds(&es->out, ": keepalive\n\n");
        }
    }
}

static void events_free(void *cls)
{
    events_stream_t *es = cls;

    api_hub_unsubscribe(es->api->hub, es->sub);
    rf_buf_release(&es->out);
    free(es->last_state);
    free(es);
}

int api_releases_events(api_req_t *r, const char *id)
{
    const char *last = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    char errstr[512];
    json_t *rec = NULL;
    events_stream_t *es;
    rf_err_t err;
    int ok;

    err = rf_store_record(r->db, id, &rec, errstr, sizeof(errstr));
    if (err == RF_ERR_NOTFOUND)
        return api_reply_error(r, MHD_HTTP_NOT_FOUND, "id", "no release '%.64s'", id);
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot read the release", errstr);
    ok = api_require(r, RF_ROLE_VIEWER, json_string_value(json_object_get(rec, "service")),
                     json_string_value(json_object_get(rec, "env")));
    json_decref(rec);
    if (!ok)
        return 0;
    es = calloc(1, sizeof(*es));
    if (!es)
        abort();
    es->api = r->api;
    snprintf(es->id, sizeof(es->id), "%s", id);
    snprintf(es->last_id, sizeof(es->last_id), "%s",
             last && *last && strspn(last, "0123456789") == strlen(last) && strlen(last) < 19
                 ? last
                 : "0");
    rf_buf_init(&es->out, 0);
    /* Subscribed before the first read: a change between the two is not missed. */
    es->sub = api_hub_subscribe(r->api->hub, id);
    es->seen = api_sub_generation(es->sub);
    r->stream = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, events_read, es,
                                                  events_free);
    if (!r->stream) {
        events_free(es);
        return api_reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                               "cannot create the event stream");
    }
    MHD_add_response_header(r->stream, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r->stream, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r->stream, "X-Accel-Buffering", "no");
    r->status = MHD_HTTP_OK;
    return 0;
}
