/* The notify stage: records one notification per matching subscription of each result, and a sender
 * thread delivers them concurrently from PostgreSQL state. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rf_clock.h"
#include "rf_cloudevents.h"
#include "rf_json.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_msg.h"
#include "rf_notify.h"
#include "rf_notify_format.h"
#include "rf_store.h"
#include "worker.h"

#define NOTIFY_CLAIM_MS 200         /* look for due notifications this often */
#define NOTIFY_LEASE_EXTRA_MS 10000 /* a claim outlives the request timeout by this much */

typedef struct notify_job {
    struct notify_job *next;
    char id[24];
    char release_id[RF_MSG_UUID_SIZE];
    char channel[16];
    char target[256]; /* redacted, for logs */
    int attempts;
    rf_notify_send_t *send; /* NULL once the transfer ended */
    int done;               /* the verdict is in; its bookkeeping is not yet stored */
    rf_err_t verdict;
    char reason[1024];
} notify_job_t;

typedef struct notify_stage {
    rf_worker_t *w;
    const rf_config_t *conf;
    rf_db_t *db; /* the sender thread's own connection */
    CURLM *multi;
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_int kick;
    char owner[128];
    notify_job_t *jobs;
    int in_flight;
    unsigned int seed;
} notify_stage_t;

/* relfleet_notifications_total{channel,result}: result sent, retried (an attempt failed, the
 * next is due later) or failed (for good). */
static void notify_count(const char *channel, const char *result, double n)
{
    rf_metrics_add(rf_metrics_counter("relfleet_notifications_total",
                                      "Notification attempts, by channel and result: sent,"
                                      " retried (failed, tried again later), failed (for good)",
                                      "channel,result"),
                   RF_LABELS(channel, result), n);
}

static void notify_job_ctx(const notify_job_t *job)
{
    rf_log_ctx_clear();
    rf_log_ctx_set("release", job->release_id);
    rf_log_ctx_set("notification", job->id);
}

/* Stores the verdict of a job; 0 when stored (or no longer ours), -1 to try again later. */
static int notify_store_verdict(notify_stage_t *ns, notify_job_t *job)
{
    char errstr[1024], delay[32];
    const char *params[4] = {job->id, ns->owner, job->reason, delay};
    const char *sql;
    PGresult *res = NULL;
    rf_err_t err;

    notify_job_ctx(job);
    if (job->verdict == RF_OK) {
        sql = "UPDATE notifications SET state = 'sent', sent_at = clock_timestamp(),"
              " lease_until = NULL, owner = NULL, last_error = NULL, updated_at = clock_timestamp()"
              " WHERE id = $1 AND owner = $2 AND state = 'sending' RETURNING id";
        params[2] = NULL;
        params[3] = NULL;
        err = rf_db_exec(ns->db, sql, 2, params, &res, errstr, sizeof(errstr));
    } else if (job->verdict == RF_ERR_RETRY && job->attempts < ns->conf->notify_max_attempts) {
        snprintf(delay, sizeof(delay), "%ld",
                 rf_notify_backoff_ms(job->attempts, ns->conf->notify_backoff_ms,
                                      ns->conf->notify_backoff_max_ms,
                                      (unsigned)rand_r(&ns->seed)));
        sql = "UPDATE notifications SET state = 'pending', lease_until = NULL, owner = NULL,"
              " last_error = $3, next_attempt_at = clock_timestamp() + make_interval(secs =>"
              " $4::bigint / 1000.0), updated_at = clock_timestamp()"
              " WHERE id = $1 AND owner = $2 AND state = 'sending' RETURNING id";
        err = rf_db_exec(ns->db, sql, 4, params, &res, errstr, sizeof(errstr));
    } else {
        if (job->verdict == RF_ERR_RETRY)
            snprintf(job->reason + strlen(job->reason), sizeof(job->reason) - strlen(job->reason),
                     " (gave up after %d attempts)", job->attempts);
        sql = "UPDATE notifications SET state = 'failed', lease_until = NULL, owner = NULL,"
              " last_error = $3, updated_at = clock_timestamp()"
              " WHERE id = $1 AND owner = $2 AND state = 'sending' RETURNING id";
        err = rf_db_exec(ns->db, sql, 3, params, &res, errstr, sizeof(errstr));
    }
    if (err != RF_OK) {
        rf_log_warn("cannot record the outcome of notification %s: %s", job->id, errstr);
        return -1;
    }
    if (PQntuples(res) == 0)
        rf_log_warn("notification %s was taken over by another worker (its lease lapsed)", job->id);
    else if (job->verdict == RF_OK)
        rf_log_info("notification sent: %s to %s (attempt %d)", job->channel, job->target,
                    job->attempts);
    else if (strstr(sql, "'pending'"))
        rf_log_warn("notification %s to %s failed, retried in %s ms: %s", job->channel, job->target,
                    delay, job->reason);
    else
        rf_log_warn("notification %s to %s failed for good: %s", job->channel, job->target,
                    job->reason);
    if (PQntuples(res) > 0)
        notify_count(job->channel,
                     job->verdict == RF_OK      ? "sent"
                     : strstr(sql, "'pending'") ? "retried"
                                                : "failed",
                     1);
    PQclear(res);
    return 0;
}

static void notify_job_free(notify_stage_t *ns, notify_job_t *job)
{
    if (job->send) {
        curl_multi_remove_handle(ns->multi, rf_notify_send_easy(job->send));
        rf_notify_send_destroy(job->send);
        ns->in_flight--;
    }
    free(job);
}

/* Reads the secret a notification needs; NULL and a reason when it names a missing one. */
static char *notify_secret(notify_stage_t *ns, const char *name, int channel, char *reason,
                           size_t size, int *missing)
{
    char *secret;

    *missing = 0;
    if (name) {
        secret = rf_config_secret(ns->conf, name);
        if (!secret) {
            *missing = 1;
            snprintf(reason, size,
                     "secret '%s' is neither in the secrets file nor in the environment", name);
        }
        return secret;
    }
    if (channel == RF_NOTIFY_EMAIL && ns->conf->smtp_user)
        return rf_config_secret(ns->conf, "smtp_password");
    return NULL;
}

static void notify_secret_free(char *secret)
{
    if (secret) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
}

/* The message a notification carries: its own (a release awaiting approval,
 * sql/008_promotion.sql) or else its release's result. RF_ERR_NOTFOUND when neither. */
static rf_err_t notify_message(rf_db_t *db, const char *id, char **text, char *errstr,
                               size_t errstr_size)
{
    const char *params[1] = {id};
    PGresult *res = NULL;
    rf_err_t result;

    *text = NULL;
    result = rf_db_exec(db,
                        "SELECT coalesce(payload, relfleet_result(release_id))::text FROM"
                        " notifications WHERE id = $1::bigint",
                        1, params, &res, errstr, errstr_size);
    if (result == RF_OK && (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)))
        result = rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size,
                         "notification %s has neither a message nor a result", id);
    if (result == RF_OK) {
        *text = strdup(PQgetvalue(res, 0, 0));
        if (!*text)
            abort();
    }
    PQclear(res);
    return result;
}

/* Starts the request of one claimed row, or records why it cannot be made. */
static void notify_start(notify_stage_t *ns, PGresult *res, int row)
{
    notify_job_t *job = calloc(1, sizeof(*job));
    const char *event_id = PQgetvalue(res, row, 2);
    const char *target = PQgetvalue(res, row, 4);
    int channel = rf_notify_channel_parse(PQgetvalue(res, row, 3));
    char errstr[1024], message_id[160], from[256], source[256];
    const char *at;
    char *result_text = NULL, *secret = NULL;
    rf_notify_request_t req;
    int missing = 0;

    if (!job)
        abort();
    snprintf(job->id, sizeof(job->id), "%s", PQgetvalue(res, row, 0));
    snprintf(job->release_id, sizeof(job->release_id), "%s", PQgetvalue(res, row, 1));
    snprintf(job->channel, sizeof(job->channel), "%s", PQgetvalue(res, row, 3));
    rf_notify_target_redact(target, job->target, sizeof(job->target));
    job->attempts = atoi(PQgetvalue(res, row, 5));
    job->next = ns->jobs;
    ns->jobs = job;
    notify_job_ctx(job);

    secret = notify_secret(ns, rf_db_value(res, row, 6), channel, job->reason, sizeof(job->reason),
                           &missing);
    if (missing) {
        job->done = 1;
        job->verdict = RF_ERR_PERM;
        return;
    }
    job->verdict = notify_message(ns->db, job->id, &result_text, errstr, sizeof(errstr));
    if (job->verdict != RF_OK) {
        job->done = 1;
        if (job->verdict == RF_ERR_NOTFOUND)
            job->verdict = RF_ERR_PERM;
        snprintf(job->reason, sizeof(job->reason), "cannot read the result: %.900s", errstr);
        notify_secret_free(secret);
        return;
    }
    at = rf_notify_format_address(ns->conf->smtp_from ? ns->conf->smtp_from : "", from,
                                  sizeof(from)) == 0
             ? strchr(from, '@')
             : NULL;
    snprintf(message_id, sizeof(message_id), "%s.%s@%s", event_id, job->id,
             at ? at + 1 : "relfleet.invalid");
    memset(&req, 0, sizeof(req));
    req.channel = (rf_notify_channel_t)channel;
    req.target = target;
    req.secret = secret;
    req.result_text = result_text;
    req.message_id = message_id;
    req.smtp_url = ns->conf->smtp_url;
    req.smtp_from = ns->conf->smtp_from;
    req.smtp_user = ns->conf->smtp_user;
    req.smtp_starttls = ns->conf->smtp_starttls;
    req.smtp_ca_file = ns->conf->smtp_ca_file;
    req.timeout_ms = ns->conf->notify_timeout_ms;
    req.now_ms = rf_clock_epoch_ms();
    req.cloudevents = strcmp(PQgetvalue(res, row, 7), "cloudevents") == 0;
    req.ce_source = rf_cloudevents_source(ns->conf, source, sizeof(source));
    job->send = channel < 0 ? NULL : rf_notify_send_new(&req, errstr, sizeof(errstr));
    notify_secret_free(secret);
    free(result_text);
    if (!job->send) {
        job->done = 1;
        job->verdict = RF_ERR_PERM;
        snprintf(job->reason, sizeof(job->reason), "%s", channel < 0 ? "unknown channel" : errstr);
        return;
    }
    curl_easy_setopt(rf_notify_send_easy(job->send), CURLOPT_PRIVATE, job);
    curl_multi_add_handle(ns->multi, rf_notify_send_easy(job->send));
    ns->in_flight++;
    rf_log_debug("sending %s to %s (attempt %d)", job->channel, job->target, job->attempts);
}

/* Claims due notifications up to the free capacity and starts them. */
static void notify_claim(notify_stage_t *ns)
{
    char limit[16], lease[24], rate[16], max[16], errstr[1024];
    const char *params[5] = {ns->owner, limit, lease, rate, max};
    PGresult *res = NULL;

    snprintf(limit, sizeof(limit), "%d", ns->conf->notify_concurrency - ns->in_flight);
    snprintf(lease, sizeof(lease), "%ld",
             (long)ns->conf->notify_timeout_ms + NOTIFY_LEASE_EXTRA_MS);
    snprintf(rate, sizeof(rate), "%d", ns->conf->dingtalk_rate_per_min);
    snprintf(max, sizeof(max), "%d", ns->conf->notify_max_attempts);
    if (rf_db_exec(ns->db,
                   "SELECT c.id, c.release_id, c.event_id, c.channel, c.target, c.attempts,"
                   " c.secret_name, coalesce(s.format, 'json')"
                   " FROM relfleet_notify_claim($1, $2::int, $3::int, $4::int, $5::int) c"
                   " LEFT JOIN notifications n ON n.id = c.id"
                   " LEFT JOIN notify_subscriptions s ON s.id = n.subscription_id",
                   5, params, &res, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("cannot claim notifications: %s", errstr);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++)
        notify_start(ns, res, i);
    PQclear(res);
    rf_log_ctx_clear();
}

/* Collects ended transfers, then stores every verdict that is in. */
static void notify_reap(notify_stage_t *ns)
{
    CURLMsg *msg;
    int left;
    notify_job_t **p;

    while ((msg = curl_multi_info_read(ns->multi, &left)) != NULL) {
        notify_job_t *job = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&job);
        if (!job)
            continue;
        job->verdict =
            rf_notify_send_verdict(job->send, msg->data.result, job->reason, sizeof(job->reason));
        curl_multi_remove_handle(ns->multi, msg->easy_handle);
        rf_notify_send_destroy(job->send);
        job->send = NULL;
        job->done = 1;
        ns->in_flight--;
    }
    p = &ns->jobs;
    while (*p) {
        notify_job_t *job = *p;
        if (job->done && notify_store_verdict(ns, job) == 0) {
            *p = job->next;
            notify_job_free(ns, job);
        } else {
            p = &job->next;
        }
    }
    rf_log_ctx_clear();
}

/* Gives back what did not finish before shutdown: due again at once, on any worker. */
static void notify_give_back(notify_stage_t *ns)
{
    char errstr[512];

    while (ns->jobs) {
        notify_job_t *job = ns->jobs;
        const char *params[2] = {job->id, ns->owner};
        ns->jobs = job->next;
        notify_job_ctx(job);
        if (job->done) {
            notify_store_verdict(ns, job);
        } else if (rf_db_exec(ns->db,
                              "UPDATE notifications SET state = 'pending', lease_until = NULL,"
                              " owner = NULL, next_attempt_at = clock_timestamp(), last_error ="
                              " 'interrupted by a worker shutdown', updated_at = clock_timestamp()"
                              " WHERE id = $1 AND owner = $2 AND state = 'sending'",
                              2, params, NULL, errstr, sizeof(errstr)) != RF_OK) {
            rf_log_warn("cannot give back notification %s: %s", job->id, errstr);
        } else {
            rf_log_info("notification %s given back unfinished", job->id);
        }
        notify_job_free(ns, job);
    }
    rf_log_ctx_clear();
}

static void *notify_sender_main(void *arg)
{
    notify_stage_t *ns = arg;
    long last_claim = 0, deadline;
    int running = 0;

    rf_log_ctx_clear();
    while (!atomic_load(&ns->stop)) {
        long now = rf_clock_mono_ms();
        if (ns->in_flight < ns->conf->notify_concurrency &&
            (atomic_exchange(&ns->kick, 0) || now - last_claim >= NOTIFY_CLAIM_MS)) {
            last_claim = now;
            notify_claim(ns);
        }
        curl_multi_perform(ns->multi, &running);
        notify_reap(ns);
        curl_multi_poll(ns->multi, NULL, 0, NOTIFY_CLAIM_MS, NULL);
    }
    /* Shutdown: no new claims; let what is in flight finish for a while. */
    deadline = rf_clock_mono_ms() + ns->conf->shutdown_timeout_ms;
    while (ns->in_flight > 0 && rf_clock_mono_ms() < deadline) {
        curl_multi_perform(ns->multi, &running);
        notify_reap(ns);
        curl_multi_poll(ns->multi, NULL, 0, 100, NULL);
    }
    notify_reap(ns);
    notify_give_back(ns);
    return NULL;
}

/* A result: one pending notification per subscription that wants this outcome and existed
 * when the release ended. A redelivered result inserts nothing (unique per release,
 * channel and target); a release nobody subscribed to is just acknowledged. */
static rf_err_t notify_handle(void *state, const rf_input_t *in, char *errstr, size_t errstr_size)
{
    notify_stage_t *ns = state;
    const char *params[2] = {json_string_value(json_object_get(in->body, "release_id")),
                             json_string_value(json_object_get(in->body, "event_id"))};
    PGresult *res = NULL;
    rf_err_t result;

    result = rf_db_exec(ns->w->db,
                        "INSERT INTO notifications (release_id, subscription_id, event_id, channel,"
                        " target) SELECT r.id, s.id, $2::uuid, s.channel, s.target"
                        " FROM releases r JOIN notify_subscriptions s ON s.service = r.service"
                        " AND s.env = r.env AND r.status = ANY (s.on_status)"
                        " AND s.created_at <= r.finished_at WHERE r.id = $1::uuid"
                        " ORDER BY s.id ON CONFLICT DO NOTHING RETURNING id",
                        2, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) > 0) {
        rf_log_info("%d notification%s to send", PQntuples(res), PQntuples(res) > 1 ? "s" : "");
        atomic_store(&ns->kick, 1);
        curl_multi_wakeup(ns->multi);
    }
    PQclear(res);
    return RF_OK;
}

/* A poll batch of results in one statement: notify_handle's insert for every result, in
 * the batch's order (each release's rows by subscription, as one by one). Duplicates in the
 * batch (a redelivery) insert once, as one after the other did. The planner guesses 100 rows
 * for jsonb_to_recordset and joined them to a scan of every release (auto_explain, 0.36 ms
 * of PostgreSQL per release at 4,000 releases); the ids named as an array are a primary-key
 * lookup at any table size, as in rf_store_end_many. */
static void notify_handle_batch(void *state, rf_input_t *const *in, size_t n, rf_err_t *results,
                                char *const *errstrs, size_t errstr_size)
{
    notify_stage_t *ns = state;
    json_t *rows = json_array();
    const char *params[1];
    PGresult *res = NULL;
    char *text;
    rf_err_t result;
    size_t i;

    if (!rows)
        abort();
    for (i = 0; i < n; i++) {
        json_t *row = json_pack("{s:I, s:O?, s:O?}", "n", (json_int_t)i, "release_id",
                                json_object_get(in[i]->body, "release_id"), "event_id",
                                json_object_get(in[i]->body, "event_id"));
        if (!row || json_array_append_new(rows, row) != 0)
            abort();
    }
    text = rf_json_dumps(rows, 0);
    if (!text)
        abort();
    params[0] = text;
    result = rf_db_exec(ns->w->db,
                        "WITH m AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS m(n int,"
                        " release_id uuid, event_id uuid))"
                        " INSERT INTO notifications (release_id, subscription_id, event_id, channel,"
                        " target) SELECT r.id, s.id, m.event_id, s.channel, s.target"
                        " FROM m JOIN releases r ON r.id = m.release_id"
                        " AND r.id = ANY (ARRAY(SELECT release_id FROM m))"
                        " JOIN notify_subscriptions s ON s.service = r.service"
                        " AND s.env = r.env AND r.status = ANY (s.on_status)"
                        " AND s.created_at <= r.finished_at"
                        " ORDER BY m.n, s.id ON CONFLICT DO NOTHING RETURNING id",
                        1, params, &res, errstrs[0], errstr_size);
    if (result != RF_OK && n > 1) {
        /* each alone, as without the batch: a refusal is then its message's own */
        rf_log_warn("cannot record the notifications of %zu results at once, one by one: %s", n,
                    errstrs[0]);
        for (i = 0; i < n; i++)
            results[i] = notify_handle(ns, in[i], errstrs[i], errstr_size);
    } else {
        for (i = 0; i < n; i++)
            results[i] = result;
    }
    if (result == RF_OK && PQntuples(res) > 0) {
        rf_log_info("%d notification%s to send", PQntuples(res), PQntuples(res) > 1 ? "s" : "");
        atomic_store(&ns->kick, 1);
        curl_multi_wakeup(ns->multi);
    }
    PQclear(res);
    free(text);
    json_decref(rows);
}

static void notify_destroy(void *state)
{
    notify_stage_t *ns = state;

    if (!ns)
        return;
    if (ns->started) {
        atomic_store(&ns->stop, 1);
        curl_multi_wakeup(ns->multi);
        pthread_join(ns->thread, NULL);
    }
    if (ns->multi)
        curl_multi_cleanup(ns->multi);
    rf_db_destroy(ns->db);
    free(ns);
}

static rf_err_t notify_init(rf_worker_t *w, void **state, char *errstr, size_t errstr_size)
{
    notify_stage_t *ns = calloc(1, sizeof(*ns));
    char host[64] = "host", id[RF_MSG_UUID_SIZE];

    if (!ns)
        abort();
    ns->w = w;
    ns->conf = w->conf;
    gethostname(host, sizeof(host) - 1);
    rf_msg_uuid4(id);
    snprintf(ns->owner, sizeof(ns->owner), "%s/%d/%.8s", host, (int)getpid(), id);
    ns->seed = (unsigned int)(rf_clock_epoch_ms() ^ (long long)getpid());
    for (int c = 0; c < 3; c++) /* every series from the start, at 0 */
        for (int r = 0; r < 3; r++)
            notify_count((const char *[]){"email", "dingtalk", "webhook"}[c],
                         (const char *[]){"sent", "retried", "failed"}[r], 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ns->multi = curl_multi_init();
    if (!ns->multi)
        abort();
    ns->db = rf_db_new(w->conf->pg_dsn, errstr, errstr_size);
    if (!ns->db) {
        notify_destroy(ns);
        return RF_ERR_RETRY;
    }
    rf_db_set_prepared(ns->db, strcmp(w->conf->pg_prepared_statements, "on") == 0);
    if (pthread_create(&ns->thread, NULL, notify_sender_main, ns) != 0) {
        notify_destroy(ns);
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot start the sender thread");
    }
    ns->started = 1;
    rf_log_info("sending notifications as '%s', up to %d at a time", ns->owner,
                w->conf->notify_concurrency);
    *state = ns;
    return RF_OK;
}

static const char *const notify_topics[] = {"results", NULL};

const rf_stage_t rf_stage_notify = {
    .name = "notify",
    .topics = notify_topics,
    .poll_ms = 100,
    .needs_lock = 0,
    .init = notify_init,
    .handle = notify_handle,
    .handle_batch = notify_handle_batch,
    .tick = NULL,
    .destroy = notify_destroy,
};
