/* Kafka producer and consumer set up the way every Relfleet stage needs them. */
#include "rf_kafka.h"
#include "rf_json.h"
#include "rf_log.h"
#include "rf_metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Delivery reports awaited: `done` counts the reports, `err` keeps the first error. One
 * send waits for done == 1; a batch scope waits for done == its number of sends. */
typedef struct produce_wait {
    int done;
    rd_kafka_resp_err_t err;
} produce_wait_t;

struct rf_producer {
    rd_kafka_t *rk;
    rd_kafka_conf_t *kc; /* a copy of rk's configuration, to create it again */
    const rf_config_t *conf;
    rf_metric_t *produced;
    rf_metric_t *produce_failed;
    int batching;         /* inside rf_producer_batch_begin/end */
    int batch_sent;       /* messages produced in the batch scope */
    produce_wait_t batch; /* their delivery reports */
};

struct rf_consumer {
    rd_kafka_t *rk;
    const rf_config_t *conf;
    int brokers_up; /* per the last statistics; -1 before the first */
    rf_metric_t *lag;
    rf_metric_t *up;
    int wake[2]; /* librdkafka writes to wake[1] when its queue stops being empty; -1: none */
};

const char *rf_kafka_topic(const rf_config_t *conf, const char *suffix, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s", conf->topic_prefix ? conf->topic_prefix : "", suffix);
    return buf;
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 3)
        rf_log_error("kafka %s: %s", fac, buf);
    else if (level <= 4)
        rf_log_warn("kafka %s: %s", fac, buf);
    else
        rf_log_debug("kafka %s: %s", fac, buf);
}

/* Delivery reports, served by rd_kafka_poll() on the caller's thread; opaque is the
 * rf_producer_t (the configuration's opaque). */
static void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    produce_wait_t *w = m->_private;
    rf_producer_t *p = opaque;
    const char *topic = rd_kafka_topic_name(m->rkt);

    (void)rk;
    if (p) { /* both series of the topic exist once it had a delivery report (0 or more) */
        rf_metrics_add(p->produced, RF_LABELS(topic), m->err ? 0 : 1);
        rf_metrics_add(p->produce_failed, RF_LABELS(topic), m->err ? 1 : 0);
    }
    if (w) {
        if (m->err && !w->err)
            w->err = m->err;
        w->done++;
    }
}

static int kafka_set(rd_kafka_conf_t *kc, const char *name, const char *value, char *errstr,
                     size_t errstr_size)
{
    if (rd_kafka_conf_set(kc, name, value, errstr, errstr_size) != RD_KAFKA_CONF_OK)
        return -1;
    return 0;
}

/* Whether key=value of kafka_options would turn off what a failover needs of a producer:
 * idempotence (no duplicate and no reordering when librdkafka retries after a leader
 * move) and acks=all (a message is acknowledged once every in-sync replica has it). */
static int kafka_weakens_delivery(const char *key, const char *value)
{
    if (strcmp(key, "enable.idempotence") == 0)
        return strcmp(value, "true") != 0;
    if (strcmp(key, "acks") == 0 || strcmp(key, "request.required.acks") == 0)
        return strcmp(value, "all") != 0 && strcmp(value, "-1") != 0;
    return 0;
}

/* Applies kafka_options ("key=value;key=value", a value "@name" read from the secret
 * name) to kc. */
static int kafka_apply_options(rd_kafka_conf_t *kc, const rf_config_t *conf, char *errstr,
                               size_t errstr_size)
{
    char *copy, *item, *next, *eq, *key, *value, *secret;
    char sub[512];
    int result = 0;

    if (!conf->kafka_options)
        return 0;
    copy = strdup(conf->kafka_options);
    if (!copy)
        abort();
    for (item = copy; item && result == 0; item = next) {
        next = strchr(item, ';');
        if (next)
            *next++ = '\0';
        item += strspn(item, " \t\r\n");
        if (!*item)
            continue;
        eq = strchr(item, '=');
        if (!eq) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "setting 'kafka_options': '%s' is not key=value", item);
            result = -1;
            break;
        }
        *eq = '\0';
        key = item;
        value = eq + 1;
        for (char *end = eq; end > key && strchr(" \t", end[-1]); end--)
            end[-1] = '\0';
        value += strspn(value, " \t");
        for (size_t n = strlen(value); n > 0 && strchr(" \t\r\n", value[n - 1]); n--)
            value[n - 1] = '\0';
        if (kafka_weakens_delivery(key, value)) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "setting 'kafka_options': '%s=%s' would weaken delivery: Relfleet's"
                    " producers are idempotent (enable.idempotence=true) with acks=all",
                    key, value);
            result = -1;
            break;
        }
        secret = NULL;
        if (value[0] == '@') {
            secret = rf_config_secret(conf, value + 1);
            if (!secret) {
                rf_errf(RF_ERR_PERM, errstr, errstr_size,
                        "setting 'kafka_options': secret '%s' for '%s' not found (secrets_file "
                        "or RELFLEET_SECRET_*)",
                        value + 1, key);
                result = -1;
                break;
            }
            value = secret;
        }
        if (rd_kafka_conf_set(kc, key, value, sub, sizeof(sub)) != RD_KAFKA_CONF_OK) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "setting 'kafka_options': '%s': %s", key,
                    sub);
            result = -1;
        }
        if (secret) {
            memset(secret, 0, strlen(secret));
            free(secret);
        }
    }
    memset(copy, 0, strlen(conf->kafka_options));
    free(copy);
    return result;
}

static rd_kafka_conf_t *kafka_conf_new(const rf_config_t *conf, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char buf[32];

    rd_kafka_conf_set_log_cb(kc, kafka_log_cb);
    /* The user's options first: the settings below carry Relfleet's delivery rules. */
    if (kafka_apply_options(kc, conf, errstr, errstr_size) != 0)
        goto fail;
    if (kafka_set(kc, "bootstrap.servers", conf->kafka_brokers, errstr, errstr_size) != 0)
        goto fail;
    if (kafka_set(kc, "client.id", "relfleet", errstr, errstr_size) != 0)
        goto fail;
    snprintf(buf, sizeof(buf), "%d", conf->kafka_timeout_ms);
    if (kafka_set(kc, "socket.connection.setup.timeout.ms", buf, errstr, errstr_size) != 0)
        goto fail;
    return kc;
fail:
    rd_kafka_conf_destroy(kc);
    return NULL;
}

rf_producer_t *rf_producer_new(const rf_config_t *conf, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *kc = kafka_conf_new(conf, errstr, errstr_size);
    rf_producer_t *p;
    char buf[32];

    if (!kc)
        return NULL;
    snprintf(buf, sizeof(buf), "%d", conf->kafka_timeout_ms);
    /* What a failover needs (kafka_options cannot change it: kafka_weakens_delivery):
     * librdkafka retries a produce refused by a moved leader or a broker away until
     * message.timeout.ms, without duplicating or reordering it. */
    if (kafka_set(kc, "enable.idempotence", "true", errstr, errstr_size) != 0 ||
        kafka_set(kc, "acks", "all", errstr, errstr_size) != 0 ||
        kafka_set(kc, "message.timeout.ms", buf, errstr, errstr_size) != 0 ||
        kafka_set(kc, "compression.type", "lz4", errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    snprintf(buf, sizeof(buf), "%d", conf->linger_ms);
    if (kafka_set(kc, "linger.ms", buf, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(kc, kafka_dr_cb);
    p = calloc(1, sizeof(*p));
    if (!p)
        abort();
    rd_kafka_conf_set_opaque(kc, p);
    p->conf = conf;
    p->produced = rf_metrics_counter("relfleet_messages_produced_total",
                                     "Messages produced and delivered, by topic", "topic");
    p->produce_failed = rf_metrics_counter("relfleet_produce_failures_total",
                                           "Messages that could not be produced or were not "
                                           "delivered in time, by topic",
                                           "topic");
    p->kc = rd_kafka_conf_dup(kc);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, errstr_size);
    if (!p->rk) {
        rd_kafka_conf_destroy(kc);
        rd_kafka_conf_destroy(p->kc);
        free(p);
        return NULL;
    }
    return p;
}

/* After a fatal error (the idempotent producer's state is lost for good, e.g. its
 * sequence numbers after a broker came back) the handle produces nothing any more: a new
 * one replaces it. Every earlier send waited for its report, so nothing of ours is lost;
 * the caller retries its message. */
static void producer_check_fatal(rf_producer_t *p)
{
    char reason[512];
    char errstr[512];
    rd_kafka_resp_err_t err = rd_kafka_fatal_error(p->rk, reason, sizeof(reason));
    rd_kafka_t *rk;

    if (!err)
        return;
    rf_log_error("kafka producer: fatal error %s: %s; creating a new producer",
                 rd_kafka_err2name(err), reason);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_dup(p->kc), errstr, sizeof(errstr));
    if (!rk) {
        rf_log_error("cannot create a new kafka producer: %s", errstr);
        return;
    }
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(p->rk, 1000); /* serves the purged messages' reports */
    rd_kafka_destroy(p->rk);
    p->rk = rk;
    /* A report the old handle never gave counts as a failure of the batch. */
    if (p->batching && p->batch.done < p->batch_sent) {
        p->batch.err = RD_KAFKA_RESP_ERR__FATAL;
        p->batch.done = p->batch_sent;
    }
}

void rf_producer_destroy(rf_producer_t *p)
{
    if (!p)
        return;
    rd_kafka_flush(p->rk, p->conf->kafka_timeout_ms);
    rd_kafka_destroy(p->rk);
    rd_kafka_conf_destroy(p->kc);
    free(p);
}

/* Serves delivery reports until w->done reaches want. The reports arrive within
 * message.timeout.ms; past it and a margin, what is in flight is purged so that no report
 * can touch w after the caller returns (purged messages report __PURGE_*). flush: wait
 * in rd_kafka_flush(), during which librdkafka sends what it holds at once instead of
 * after linger.ms, for a batch scope's end: its sends all came before (lingering batches
 * nothing more, it only delays the wait: ops/bench figure 2, the apply worker's delivery
 * wait per poll batch), and the scope's thread is the producer's only one (a flush waits
 * for every message in flight, so not for a send among other threads' sends). */
static void producer_wait(rf_producer_t *p, produce_wait_t *w, int want, int flush)
{
    struct timespec start, now;
    long waited_ms;

    clock_gettime(CLOCK_MONOTONIC, &start);
    while (w->done < want) {
        if (flush) /* returns once nothing is in flight (reports served), or after 50 ms */
            rd_kafka_flush(p->rk, 50);
        else
            rd_kafka_poll(p->rk, 50);
        clock_gettime(CLOCK_MONOTONIC, &now);
        waited_ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (w->done < want && waited_ms > p->conf->kafka_timeout_ms + 5000) {
            rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            while (w->done < want)
                rd_kafka_poll(p->rk, 50);
        }
    }
}

rf_err_t rf_producer_send(rf_producer_t *p, const char *suffix, const char *key,
                          const void *payload, size_t len, char *errstr, size_t errstr_size)
{
    return rf_producer_send_headers(p, suffix, key, payload, len, NULL, errstr, errstr_size);
}

rf_err_t rf_producer_send_headers(rf_producer_t *p, const char *suffix, const char *key,
                                  const void *payload, size_t len, rd_kafka_headers_t *headers,
                                  char *errstr, size_t errstr_size)
{
    produce_wait_t w = {0, RD_KAFKA_RESP_ERR_NO_ERROR};
    produce_wait_t *reports = p->batching ? &p->batch : &w;
    char topic[256];
    rd_kafka_resp_err_t err;

    rf_kafka_topic(p->conf, suffix, topic, sizeof(topic));
    err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic),
                            RD_KAFKA_V_KEY((void *)key, key ? strlen(key) : 0),
                            RD_KAFKA_V_VALUE((void *)payload, len),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(reports),
                            RD_KAFKA_V_END);
    if (err) {
        if (headers) /* still ours: producev takes them only on success */
            rd_kafka_headers_destroy(headers);
        rf_metrics_add(p->produce_failed, RF_LABELS(topic), 1);
        producer_check_fatal(p);
        /* Only a message too large is the message's own fault. The rest (a full queue, a
         * fatal producer, a topic the broker refused or does not know: librdkafka keeps
         * such a topic error and refuses at once until its metadata says otherwise) is the
         * broker's state: retry, never dead-letter the message being handled. */
        return rf_errf(err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
                               err == RD_KAFKA_RESP_ERR__INVALID_ARG
                           ? RF_ERR_PERM
                           : RF_ERR_RETRY,
                       errstr, errstr_size, "cannot produce to '%s': %s", topic,
                       rd_kafka_err2str(err));
    }
    if (p->batching) {
        p->batch_sent++;
        rd_kafka_poll(p->rk, 0);
        return RF_OK;
    }
    producer_wait(p, &w, 1, 0);
    if (w.err) {
        producer_check_fatal(p);
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                       "message to '%s' not delivered: %s", topic, rd_kafka_err2str(w.err));
    }
    return RF_OK;
}

void rf_producer_batch_begin(rf_producer_t *p)
{
    p->batching = 1;
    p->batch_sent = 0;
    p->batch.done = 0;
    p->batch.err = RD_KAFKA_RESP_ERR_NO_ERROR;
}

int rf_producer_batch_sent(const rf_producer_t *p)
{
    return p->batching ? p->batch_sent : 0;
}

rf_err_t rf_producer_batch_end(rf_producer_t *p, char *errstr, size_t errstr_size)
{
    int sent = p->batch_sent;

    p->batching = 0;
    p->batch_sent = 0;
    producer_wait(p, &p->batch, sent, 1);
    if (p->batch.err) {
        producer_check_fatal(p);
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                       "a message of the batch's %d was not delivered: %s", sent,
                       rd_kafka_err2str(p->batch.err));
    }
    return RF_OK;
}

/* The consumer's statistics: lag of each partition it is assigned, and how many brokers it
 * is connected to (/readyz). Runs inside rd_kafka_consumer_poll(), on the polling thread. */
static int kafka_stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    rf_consumer_t *c = opaque;
    json_t *root, *brokers, *topics, *b, *t, *parts, *part;
    const char *name, *pname;
    json_error_t jerr;
    int up = 0;

    (void)rk;
    root = rf_json_loadb(json, json_len, 0, &jerr);
    if (!root) {
        rf_log_warn("cannot parse kafka statistics: %s", jerr.text);
        return 0;
    }
    brokers = json_object_get(root, "brokers");
    json_object_foreach(brokers, name, b)
    {
        const char *state = json_string_value(json_object_get(b, "state"));
        if (json_integer_value(json_object_get(b, "nodeid")) >= 0 && state &&
            strcmp(state, "UP") == 0)
            up++;
    }
    c->brokers_up = up;
    rf_metrics_set(c->up, NULL, up);
    rf_metrics_clear(c->lag);
    topics = json_object_get(root, "topics");
    json_object_foreach(topics, name, t)
    {
        parts = json_object_get(t, "partitions");
        json_object_foreach(parts, pname, part)
        {
            json_int_t lag = json_integer_value(json_object_get(part, "consumer_lag"));
            json_int_t hi = json_integer_value(json_object_get(part, "hi_offset"));
            json_int_t lo = json_integer_value(json_object_get(part, "lo_offset"));
            if (json_integer_value(json_object_get(part, "partition")) < 0 ||
                !json_is_true(json_object_get(part, "desired")))
                continue;
            /* Nothing committed yet: everything retained is behind (as for KEDA). */
            if (lag < 0 && hi >= 0)
                lag = hi - (lo > 0 ? lo : 0);
            if (lag >= 0)
                rf_metrics_set(c->lag, RF_LABELS(name, pname), (double)lag);
        }
    }
    json_decref(root);
    return 0;
}

rf_consumer_t *rf_consumer_new(const rf_config_t *conf, const char *group,
                               const char *const *suffixes, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *kc = kafka_conf_new(conf, errstr, errstr_size);
    rd_kafka_topic_partition_list_t *topics;
    rf_consumer_t *c;
    rd_kafka_resp_err_t err;
    char buf[32], topic[256];

    if (!kc)
        return NULL;
    snprintf(buf, sizeof(buf), "%d", conf->session_timeout_ms);
    if (kafka_set(kc, "group.id", group, errstr, errstr_size) != 0 ||
        kafka_set(kc, "enable.auto.offset.store", "false", errstr, errstr_size) != 0 ||
        kafka_set(kc, "enable.auto.commit", "true", errstr, errstr_size) != 0 ||
        kafka_set(kc, "auto.commit.interval.ms", "1000", errstr, errstr_size) != 0 ||
        kafka_set(kc, "auto.offset.reset", "earliest", errstr, errstr_size) != 0 ||
        kafka_set(kc, "session.timeout.ms", buf, errstr, errstr_size) != 0 ||
        kafka_set(kc, "heartbeat.interval.ms", "1000", errstr, errstr_size) != 0 ||
        kafka_set(kc, "partition.assignment.strategy", "range,roundrobin", errstr,
                  errstr_size) != 0 ||
        kafka_set(kc, "enable.partition.eof", "false", errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    snprintf(buf, sizeof(buf), "%d", conf->kafka_stats_interval_ms);
    if (kafka_set(kc, "statistics.interval.ms", buf, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    snprintf(buf, sizeof(buf), "%d", conf->kafka_fetch_wait_ms);
    if (kafka_set(kc, "fetch.wait.max.ms", buf, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    /* The prefetch bound: what a burst costs in memory (librdkafka also caps
     * fetch.max.bytes by it). */
    snprintf(buf, sizeof(buf), "%d", conf->kafka_queued_max_kbytes);
    if (kafka_set(kc, "queued.max.messages.kbytes", buf, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->conf = conf;
    c->brokers_up = -1;
    c->lag = rf_metrics_gauge("relfleet_kafka_consumer_lag",
                              "Messages behind the end of each assigned partition (librdkafka "
                              "statistics)",
                              "topic,partition");
    c->up = rf_metrics_gauge("relfleet_kafka_brokers_up",
                             "Kafka brokers the consumer is connected to", NULL);
    rd_kafka_conf_set_stats_cb(kc, kafka_stats_cb);
    rd_kafka_conf_set_opaque(kc, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, errstr_size);
    if (!c->rk) {
        rd_kafka_conf_destroy(kc);
        free(c);
        return NULL;
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->wake[0] = c->wake[1] = -1;
    topics = rd_kafka_topic_partition_list_new(4);
    for (; *suffixes; suffixes++)
        rd_kafka_topic_partition_list_add(topics, rf_kafka_topic(conf, *suffixes, topic,
                                                                 sizeof(topic)),
                                          RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot subscribe: %s", rd_kafka_err2str(err));
        rd_kafka_destroy(c->rk);
        free(c);
        return NULL;
    }
    return c;
}

static void consumer_wake_close(rf_consumer_t *c)
{
    if (c->wake[0] >= 0) {
        close(c->wake[0]);
        close(c->wake[1]);
    }
    c->wake[0] = c->wake[1] = -1;
}

void rf_consumer_destroy(rf_consumer_t *c)
{
    if (!c)
        return;
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    consumer_wake_close(c);
    free(c);
}

int rf_consumer_wake_fd(rf_consumer_t *c)
{
    rd_kafka_queue_t *q;

    if (c->wake[0] >= 0)
        return c->wake[0];
    if (pipe(c->wake) != 0) {
        c->wake[0] = c->wake[1] = -1;
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(c->wake[i], F_SETFL, fcntl(c->wake[i], F_GETFL) | O_NONBLOCK);
        fcntl(c->wake[i], F_SETFD, FD_CLOEXEC);
    }
    /* The consumer queue: messages, and (rd_kafka_poll_set_consumer) every other event. */
    q = rd_kafka_queue_get_consumer(c->rk);
    if (!q) {
        consumer_wake_close(c);
        return -1;
    }
    rd_kafka_queue_io_event_enable(q, c->wake[1], "1", 1);
    rd_kafka_queue_destroy(q);
    return c->wake[0];
}

void rf_consumer_wake_clear(rf_consumer_t *c)
{
    char buf[64];

    if (c->wake[0] < 0)
        return;
    for (;;) {
        ssize_t n = read(c->wake[0], buf, sizeof(buf));
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        return;
    }
}

rd_kafka_message_t *rf_consumer_poll(rf_consumer_t *c, int timeout_ms)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);

    if (m && m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            rf_log_warn("kafka consumer: %s", rd_kafka_message_errstr(m));
        if (m->err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
            c->brokers_up = 0; /* /readyz says so now, not at the next statistics */
        rd_kafka_message_destroy(m);
        return NULL;
    }
    if (m && c->brokers_up <= 0)
        c->brokers_up = 1; /* a fetched message: a broker is up (the statistics count them) */
    return m;
}

rf_err_t rf_consumer_store(rf_consumer_t *c, const rd_kafka_message_t *m)
{
    rd_kafka_resp_err_t err = rd_kafka_offset_store(m->rkt, m->partition, m->offset);

    if (err && err != RD_KAFKA_RESP_ERR__STATE) /* __STATE: partition no longer ours */
        rf_log_warn("cannot store offset %lld: %s", (long long)m->offset, rd_kafka_err2str(err));
    return err ? RF_ERR_RETRY : RF_OK;
}

void rf_consumer_rewind(rf_consumer_t *c, const rd_kafka_message_t *m)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_error_t *error;

    rd_kafka_topic_partition_list_add(parts, rd_kafka_topic_name(m->rkt), m->partition)->offset =
        m->offset;
    error = rd_kafka_seek_partitions(c->rk, parts, 5000);
    if (error) {
        rf_log_warn("cannot seek back to offset %lld: %s", (long long)m->offset,
                    rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

rd_kafka_t *rf_consumer_handle(rf_consumer_t *c)
{
    return c->rk;
}

int rf_consumer_brokers_up(const rf_consumer_t *c)
{
    /* Before the first statistics: up once the cluster's metadata came from a broker. */
    if (c->brokers_up < 0 && rd_kafka_controllerid(c->rk, 0) >= 0)
        return 1;
    return c->brokers_up;
}
