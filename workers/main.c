/* relfleet-worker: configuration, signals, the poll loop and shutdown around one stage. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "health/health.h"
#include "rf_log.h"
#include "rf_metrics.h"
#include "rf_msg.h"
#include "rf_store.h"
#include "worker.h"

static const rf_stage_t *const stages[] = {&rf_stage_render, &rf_stage_apply, &rf_stage_track,
                                           &rf_stage_notify, NULL};

/* The schema family each topic carries: a message of another family is refused. */
static const struct {
    const char *topic;
    const char *schema_prefix;
} topic_schemas[] = {
    {"requests", "relfleet.request."}, {"rendered", "relfleet.rendered."},
    {"applied", "relfleet.applied."},  {"commands", "relfleet.command."},
    {"results", "relfleet.result."},   {"dlq", "relfleet.dlq."},
};

static volatile int run = 1;

/* What the poll loop counts; the stage label is on every series (rf_metrics_const_label). */
static struct {
    rf_metric_t *consumed;
    rf_metric_t *failed;
    rf_metric_t *dead_lettered;
    rf_metric_t *seconds;
    rf_metric_t *batch;
    rf_metric_t *delivery;
} worker_metrics;

static void worker_metrics_init(const char *stage)
{
    static const double bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                    0.5,   1,     2.5,  5,     10,   30,  60};
    static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024};
    static const double delivery_bounds[] = {0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004,
                                             0.005,   0.006,  0.008, 0.010, 0.015, 0.020,
                                             0.030,   0.050,  0.1,   0.25,  1,     10};

    rf_metrics_const_label("stage", stage);
    worker_metrics.consumed = rf_metrics_counter(
        "relfleet_messages_consumed_total", "Messages consumed (each delivery, retries too)",
        "topic");
    worker_metrics.failed = rf_metrics_counter(
        "relfleet_messages_failed_total",
        "Messages whose handling failed, by reason: retriable (retried with back-off), "
        "fenced (lock lost, stopped), not_found, dead_letter (could not be dead-lettered)",
        "topic,reason");
    worker_metrics.dead_lettered = rf_metrics_counter(
        "relfleet_messages_dead_lettered_total",
        "Messages sent to the dlq topic, by reason: invalid (parse or schema), refused "
        "(the stage refused it for good)",
        "topic,reason");
    worker_metrics.seconds = rf_metrics_histogram(
        "relfleet_stage_processing_seconds",
        "Time from a message's delivery to the worker until its offset is stored or it is "
        "rewound",
        "topic", bounds, sizeof(bounds) / sizeof(bounds[0]));
    worker_metrics.batch = rf_metrics_histogram(
        "relfleet_poll_batch_messages",
        "Messages taken from the consumer at once (a poll batch, at most batch_max)", NULL,
        batch_bounds, sizeof(batch_bounds) / sizeof(batch_bounds[0]));
    worker_metrics.delivery = rf_metrics_histogram(
        "relfleet_delivery_wait_seconds",
        "Time a poll batch that produced messages waited for their delivery reports before"
        " storing its offsets",
        NULL, delivery_bounds, sizeof(delivery_bounds) / sizeof(delivery_bounds[0]));
}

static double worker_seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static long worker_ms_since(const struct timespec *start)
{
    return (long)(worker_seconds_since(start) * 1000);
}

/* Readiness the main thread knows: Kafka per the consumer's statistics, and every
 * health_interval_ms the stage's own hook (the API server for apply and track). */
static void worker_check_ready(rf_health_t *health, const rf_stage_t *stage, void *state,
                               rf_consumer_t *consumer, int interval_ms,
                               struct timespec *last_hook)
{
    int up = rf_consumer_brokers_up(consumer);

    if (up < 0)
        rf_health_set(health, "kafka", 0, "no statistics from the consumer yet");
    else if (up == 0)
        rf_health_set(health, "kafka", 0, "not connected to any broker");
    else
        rf_health_set(health, "kafka", 1, NULL);
    if (stage->ready && worker_ms_since(last_hook) >= interval_ms) {
        int ok = stage->ready(state);
        rf_health_set(health, "stage", ok, ok ? NULL : "the stage's own check failed");
        clock_gettime(CLOCK_MONOTONIC, last_hook);
    }
}

/* Whole seconds a worker has after SIGTERM (shutdown_timeout_ms, rounded up). */
static unsigned int shutdown_s = 10;

/* The first SIGTERM or SIGINT stops the poll loop, and arms the bound of the shutdown:
 * in-flight work, offsets and leaving the group get shutdown_s seconds, then SIGALRM ends
 * the process (what it did not commit is redelivered, as after a crash). */
static void on_signal(int sig)
{
    (void)sig;
    if (run)
        alarm(shutdown_s);
    run = 0;
}

static void on_shutdown_timeout(int sig)
{
    static const char msg[] = "relfleet-worker: shutdown timed out (shutdown_timeout_ms); "
                              "exiting now\n";
    ssize_t n;

    (void)sig;
    n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(1);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: relfleet-worker STAGE [--config FILE]\n"
                 "       relfleet-worker --list-stages\n"
                 "       relfleet-worker --config-reference\n"
                 "stages:");
    for (int i = 0; stages[i]; i++)
        fprintf(out, " %s", stages[i]->name);
    fprintf(out, "\nsettings come from the environment (RELFLEET_*) or the YAML file\n");
}

/* Sleeps up to ms, waking early on shutdown. */
static void nap(long ms)
{
    struct timespec ts = {0, 20 * 1000000L};

    for (long waited = 0; run && waited < ms; waited += 20)
        nanosleep(&ts, NULL);
}

/* Records the refused message (database row and dlq topic). */
static rf_err_t worker_dead_letter(rf_worker_t *w, const rd_kafka_message_t *m,
                                   const char *reason, const char *reason_class, char *errstr,
                                   size_t errstr_size)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    char key[256];
    char *dlq;
    rf_err_t result;

    rf_log_warn("dead-lettering message: %s", reason);
    result = rf_store_reject_message(w->db, w->stage, topic, m->partition, m->offset, m->key,
                                     m->key_len, reason, m->payload, m->len, errstr,
                                     errstr_size);
    if (result != RF_OK)
        return result;
    dlq = rf_msg_dlq_build(w->stage, reason, topic, m->partition, m->offset, m->key, m->key_len,
                           m->payload, m->len);
    if (!dlq)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot build the dead letter");
    snprintf(key, sizeof(key), "%.*s", (int)(m->key_len < 255 ? m->key_len : 255),
             m->key ? (const char *)m->key : "");
    result = rf_producer_send(w->producer, "dlq", m->key_len ? key : NULL, dlq, strlen(dlq),
                              errstr, errstr_size);
    free(dlq);
    if (result == RF_OK)
        rf_metrics_add(worker_metrics.dead_lettered, RF_LABELS(topic, reason_class), 1);
    return result;
}

/* One message of a poll batch and what became of it. */
typedef struct batch_item {
    rd_kafka_message_t *m;
    rf_input_t in;
    rf_err_t result;
    const char *reason_class; /* of a dead letter: "invalid" or "refused" */
    struct timespec start;
    char errstr[1024];
} batch_item_t;

/* 1 when an earlier message of its partition in the batch is to be retried: this one is
 * redelivered after the rewind, so it is not handled (or stored) now. */
static int worker_blocked(const batch_item_t *items, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (items[j].result == RF_ERR_RETRY && rf_worker_same_partition(items[j].m, items[i].m))
            return 1;
    return 0;
}

/* Parses and validates a message against its topic's schema family. */
static void worker_parse(rf_worker_t *w, const rf_stage_t *stage, batch_item_t *it)
{
    const rd_kafka_message_t *m = it->m;
    const char *topic = rd_kafka_topic_name(m->rkt);
    const char *prefix = "relfleet.?";
    size_t plen = strlen(w->conf->topic_prefix);

    clock_gettime(CLOCK_MONOTONIC, &it->start);
    rf_metrics_add(worker_metrics.consumed, RF_LABELS(topic), 1);
    rf_worker_log_ctx(m, NULL);
    it->in.m = m;
    it->in.topic_suffix =
        strncmp(topic, w->conf->topic_prefix, plen) == 0 ? topic + plen : topic;
    for (size_t i = 0; i < sizeof(topic_schemas) / sizeof(topic_schemas[0]); i++)
        if (strcmp(topic_schemas[i].topic, it->in.topic_suffix) == 0)
            prefix = topic_schemas[i].schema_prefix;
    it->reason_class = "invalid";
    if (stage->lean_array)
        it->result = rf_msg_parse_lean(w->schemas, m->payload, m->len, m->key, m->key_len,
                                       prefix, stage->lean_array, stage->lean_keep, &it->in.body,
                                       &it->in.lean, it->errstr,
                                       sizeof(it->errstr));
    else
        it->result = rf_msg_parse(w->schemas, m->payload, m->len, m->key, m->key_len, prefix,
                                  &it->in.body, it->errstr, sizeof(it->errstr));
    if (it->result == RF_OK)
        it->reason_class = "refused";
}

/* Settles a handled (or refused) message: dead-letters what is refused for good, counts
 * failures; afterwards result is RF_OK (to store) or RF_ERR_RETRY (to rewind). */
static void worker_settle(rf_worker_t *w, batch_item_t *items, size_t i)
{
    batch_item_t *it = &items[i];
    const char *topic = rd_kafka_topic_name(it->m->rkt);
    char dlq_err[512];

    if (worker_blocked(items, i)) {
        it->result = RF_ERR_RETRY;
        snprintf(it->errstr, sizeof(it->errstr),
                 "an earlier message of its partition is retried");
        return;
    }
    rf_worker_log_ctx(it->m, it->in.body);
    if (it->result == RF_ERR_PERM) {
        it->result = worker_dead_letter(w, it->m, it->errstr, it->reason_class, dlq_err,
                                        sizeof(dlq_err));
        if (it->result != RF_OK) {
            snprintf(it->errstr, sizeof(it->errstr), "%s", dlq_err);
            it->result = RF_ERR_RETRY;
            rf_metrics_add(worker_metrics.failed, RF_LABELS(topic, "dead_letter"), 1);
        }
    } else if (it->result == RF_ERR_FENCED || it->result == RF_ERR_NOTFOUND ||
               it->result == RF_ERR_RETRY) {
        rf_metrics_add(worker_metrics.failed,
                       RF_LABELS(topic, it->result == RF_ERR_FENCED     ? "fenced"
                                        : it->result == RF_ERR_NOTFOUND ? "not_found"
                                                                        : "retriable"),
                       1);
        if (it->result == RF_ERR_FENCED)
            rf_log_warn("stopped: %s", it->errstr);
        if (it->result != RF_ERR_RETRY)
            it->result = RF_OK;
    } else if (it->result != RF_OK) {
        it->result = RF_ERR_RETRY;
    }
}

/* Hands the batch's messages to the stage and settles them. One by one, each message is
 * handled and settled (dead letter included) before the next, so the effects of a
 * partition's messages keep their order; a batch hook gets each run of valid messages at
 * once, an invalid message between two runs being dead-lettered between them. */
static void worker_handle(rf_worker_t *w, const rf_stage_t *stage, void *state,
                          batch_item_t *items, size_t n)
{
    if (stage->handle_batch) {
        rf_input_t **in = calloc(n, sizeof(*in));
        rf_err_t *results = calloc(n, sizeof(*results));
        char **errs = calloc(n, sizeof(*errs));
        size_t start = 0;

        if (!in || !results || !errs)
            abort();
        /* Runs of valid messages go to the hook; an invalid one is dead-lettered between
         * the runs before and after it, so effects keep the order of the batch. */
        while (start < n) {
            size_t end = start, k = 0;

            while (end < n && items[end].result == RF_OK) {
                in[k] = &items[end].in;
                errs[k] = items[end].errstr;
                k++;
                end++;
            }
            if (k > 0) {
                stage->handle_batch(state, in, k, results, errs, sizeof(items[0].errstr));
                for (size_t i = start; i < end; i++)
                    items[i].result = results[i - start];
            }
            for (size_t i = start; i < end; i++)
                worker_settle(w, items, i);
            if (end < n)
                worker_settle(w, items, end++);
            start = end;
        }
        free(in);
        free(results);
        free(errs);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (items[i].result == RF_OK && !worker_blocked(items, i)) {
                rf_worker_log_ctx(items[i].m, items[i].in.body);
                items[i].result = stage->handle(state, &items[i].in, items[i].errstr,
                                                sizeof(items[i].errstr));
            }
            worker_settle(w, items, i);
        }
    }
}

/* A poll batch: parse, handle, dead-letter what is refused for good, wait for every
 * delivery of the batch, then store the offsets of what is done and rewind each partition
 * to its first message to retry. RF_ERR_RETRY when anything is retried. */
static rf_err_t worker_batch(rf_worker_t *w, const rf_stage_t *stage, void *state,
                             rf_consumer_t *consumer, batch_item_t *items, size_t n)
{
    char errstr[512];
    rf_err_t delivered;
    struct timespec wait_start;
    int retried = 0, sent;

    rf_metrics_observe(worker_metrics.batch, NULL, (double)n);
    rf_producer_batch_begin(w->producer);
    for (size_t i = 0; i < n; i++)
        worker_parse(w, stage, &items[i]);
    worker_handle(w, stage, state, items, n);
    /* Offsets only once everything the batch produced is delivered. */
    clock_gettime(CLOCK_MONOTONIC, &wait_start);
    sent = rf_producer_batch_sent(w->producer);
    delivered = rf_producer_batch_end(w->producer, errstr, sizeof(errstr));
    if (sent > 0)
        rf_metrics_observe(worker_metrics.delivery, NULL, worker_seconds_since(&wait_start));
    /* Results owed by the batch (rf_worker_end_other): delivered, or left to a sweep. */
    if (delivered == RF_OK)
        rf_worker_owed_delivered(w);
    else
        json_array_clear(w->owed_in_batch);
    for (size_t i = 0; i < n; i++) {
        batch_item_t *it = &items[i];
        int first_of_partition = 1;

        for (size_t j = 0; j < i && first_of_partition; j++)
            if (rf_worker_same_partition(items[j].m, it->m))
                first_of_partition = 0;
        rf_worker_log_ctx(it->m, it->in.body);
        if (delivered != RF_OK) {
            if (first_of_partition) {
                rf_log_warn("will retry: %s", errstr);
                rf_consumer_rewind(consumer, it->m);
            }
            retried = 1;
        } else if (it->result == RF_OK) {
            rf_consumer_store(consumer, it->m);
        } else if (!worker_blocked(items, i)) {
            rf_log_warn("will retry: %s", it->errstr);
            rf_consumer_rewind(consumer, it->m);
            retried = 1;
        }
        rf_metrics_observe(worker_metrics.seconds, RF_LABELS(rd_kafka_topic_name(it->m->rkt)),
                           worker_seconds_since(&it->start));
        json_decref(it->in.body);
        it->in.body = NULL;
        rf_msg_lean_destroy(it->in.lean);
        it->in.lean = NULL;
    }
    rf_log_ctx_clear();
    return retried ? RF_ERR_RETRY : RF_OK;
}

/* Takes up to max messages: waits up to timeout_ms for the first, then takes only what
 * the consumer already has. */
static size_t worker_fill(rf_consumer_t *consumer, batch_item_t *items, size_t max,
                          int timeout_ms)
{
    size_t n = 0;
    rd_kafka_message_t *m = rf_consumer_poll(consumer, timeout_ms);

    while (m) {
        memset(&items[n], 0, sizeof(items[n]));
        items[n++].m = m;
        m = n < max ? rf_consumer_poll(consumer, 0) : NULL;
    }
    return n;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"list-stages", no_argument, NULL, 'l'},
                                         {"config-reference", no_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    static const char *const required[] = {"kafka_brokers", "pg_dsn", NULL};
    const char *config_path = NULL;
    const rf_stage_t *stage = NULL;
    rf_config_t conf;
    rf_worker_t w;
    rf_consumer_t *consumer = NULL;
    rf_health_t *health = NULL;
    struct timespec last_hook = {0, 0};
    rf_log_level_t level = RF_LOG_INFO;
    void *state = NULL;
    batch_item_t *items = NULL;
    char errstr[1024];
    char group[256];
    char schema_dir[1024];
    long backoff = 0;
    int wake_fd = -1, pg_up = 1;
    int exit_code = 1;
    rf_err_t lock_err = RF_ERR_RETRY;
    int c;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'l':
            for (int i = 0; stages[i]; i++)
                printf("%s\n", stages[i]->name);
            return 0;
        case 'r':
            rf_config_write_reference(stdout);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    for (int i = 0; stages[i]; i++)
        if (strcmp(stages[i]->name, argv[optind]) == 0)
            stage = stages[i];
    if (!stage) {
        fprintf(stderr, "relfleet-worker: unknown stage '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    memset(&w, 0, sizeof(w));
    rf_config_init(&conf);
    if (rf_config_load(&conf, config_path, errstr, sizeof(errstr)) != RF_OK ||
        rf_config_require(&conf, required, errstr, sizeof(errstr)) != RF_OK) {
        fprintf(stderr, "relfleet-worker: %s\n", errstr);
        rf_config_release(&conf);
        return 2;
    }
    rf_log_level_parse(conf.log_level, &level);
    rf_log_setup(stage->name, level, strcmp(conf.log_format, "json") == 0 ? RF_LOG_JSON
                                                                           : RF_LOG_LOGFMT);
    shutdown_s = (unsigned int)((conf.shutdown_timeout_ms + 999) / 1000);
    signal(SIGALRM, on_shutdown_timeout);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    w.conf = &conf;
    w.stage = stage->name;
    w.run = &run;
    snprintf(schema_dir, sizeof(schema_dir), "%s",
             conf.schema_dir ? conf.schema_dir : RELFLEET_SOURCE_DIR "/schemas");
    w.schemas = rf_schema_registry_new();
    if (rf_schema_registry_load_dir(w.schemas, schema_dir, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_error("cannot load schemas from '%s': %s", schema_dir, errstr);
        goto out;
    }
    /* /healthz answers from here on; /readyz once every connection is up. */
    worker_metrics_init(stage->name);
    health = rf_health_new(&conf, stage->needs_lock, errstr, sizeof(errstr));
    if (!health) {
        rf_log_error("%s", errstr);
        goto out;
    }
    rf_health_set(health, "kafka", 0, "not connected yet");
    if (stage->ready)
        rf_health_set(health, "stage", 0, "not checked yet");
    /* The servers may still be starting: wait for them rather than exit. */
    while (run && !(w.db = rf_db_new(conf.pg_dsn, errstr, sizeof(errstr)))) {
        rf_log_warn("%s; retrying", errstr);
        nap(1000);
    }
    if (w.db)
        rf_db_set_prepared(w.db, strcmp(conf.pg_prepared_statements, "on") == 0);
    while (run && stage->needs_lock &&
           !(w.lock = rf_lock_new(&conf, &lock_err, errstr, sizeof(errstr)))) {
        if (lock_err != RF_ERR_RETRY) { /* bad URL, refused AUTH, unknown master, TLS */
            rf_log_error("%s", errstr);
            goto out;
        }
        rf_log_warn("%s; retrying", errstr);
        nap(1000);
    }
    if (!run)
        goto out;
    w.producer = rf_producer_new(&conf, errstr, sizeof(errstr));
    if (!w.producer) {
        rf_log_error("cannot create kafka producer: %s", errstr);
        goto out;
    }
    if (stage->init(&w, &state, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_error("cannot start stage: %s", errstr);
        goto out;
    }
    snprintf(group, sizeof(group), "%s%s", conf.topic_prefix, stage->name);
    consumer = rf_consumer_new(&conf, group, stage->topics, errstr, sizeof(errstr));
    if (!consumer) {
        rf_log_error("cannot create kafka consumer: %s", errstr);
        goto out;
    }
    rf_log_info("started, consumer group '%s'", group);
    rf_health_poke(health); /* every connection is up: check now, not at the next interval */

    items = calloc((size_t)conf.batch_max, sizeof(*items));
    if (!items)
        abort();
    wake_fd = stage->wait ? rf_consumer_wake_fd(consumer) : -1;
    if (stage->wait && wake_fd < 0)
        rf_log_warn("no wake-up descriptor for the consumer: polling every %d ms",
                    stage->poll_ms);
    while (run) {
        size_t n;
        rf_err_t result;

        if (wake_fd >= 0)
            rf_consumer_wake_clear(consumer); /* before taking: what comes later wakes */
        n = worker_fill(consumer, items, (size_t)conf.batch_max, wake_fd >= 0 ? 0 : stage->poll_ms);
        result = n ? worker_batch(&w, stage, state, consumer, items, n) : RF_OK;

        for (size_t i = 0; i < n; i++)
            rd_kafka_message_destroy(items[i].m);
        /* A connection went down or came back (PostgreSQL drops one that is lost or on a
         * read-only host), or a retry may be one: readiness is checked again now. */
        if (result != RF_OK || (rf_db_conn(w.db) != NULL) != pg_up) {
            pg_up = rf_db_conn(w.db) != NULL;
            rf_health_poke(health);
        }
        if (result != RF_OK) {
            backoff = backoff ? backoff * 2 : 100;
            if (backoff > conf.retry_max_ms)
                backoff = conf.retry_max_ms;
            nap(backoff / 2 + rand() % (backoff / 2 + 1));
            continue;
        }
        if (n)
            backoff = 0;
        if (stage->tick) {
            stage->tick(state);
            rf_log_ctx_clear();
        }
        worker_check_ready(health, stage, state, consumer, conf.health_interval_ms, &last_hook);
        if (wake_fd >= 0 && n < (size_t)conf.batch_max) /* the consumer had no more */
            stage->wait(state, wake_fd, stage->poll_ms);
    }
    rf_log_info("shutting down");
    exit_code = 0;
out:
    rf_consumer_destroy(consumer);
    free(items);
    if (state)
        stage->destroy(state);
    rf_producer_destroy(w.producer);
    rf_lock_destroy(w.lock);
    rf_db_destroy(w.db);
    json_decref(w.owed_in_batch);
    rf_schema_registry_destroy(w.schemas);
    rf_health_destroy(health);
    rf_metrics_reset();
    rf_config_release(&conf);
    return exit_code;
}
