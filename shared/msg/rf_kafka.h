/* Kafka clients: an idempotent producer that waits for delivery, a group consumer that stores offsets only when told. */
#ifndef RF_KAFKA_H
#define RF_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "rf_config.h"
#include "rf_err.h"

typedef struct rf_producer rf_producer_t;
typedef struct rf_consumer rf_consumer_t;

/* The full topic name for a suffix ("requests" -> "relfleet.requests"). */
const char *rf_kafka_topic(const rf_config_t *conf, const char *suffix, char *buf, size_t size);

/* Every client takes kafka_options (librdkafka properties, `@name` values from secrets)
 * before Relfleet's own settings; a bad option fails the creation, errstr naming it. */
rf_producer_t *rf_producer_new(const rf_config_t *conf, char *errstr, size_t errstr_size);
/* Flushes what is in flight (bounded by kafka_timeout_ms) and frees; accepts NULL. */
void rf_producer_destroy(rf_producer_t *p);

/* Produces one message to the topic of suffix and waits for its delivery report, at
 * most kafka_timeout_ms (in a batch scope it only queues it, see below). RF_ERR_RETRY
 * when it was not delivered in time or the broker refused the topic; RF_ERR_PERM only
 * for a message librdkafka refuses as such (too large). Counted in
 * relfleet_messages_produced_total / relfleet_produce_failures_total by topic. */
rf_err_t rf_producer_send(rf_producer_t *p, const char *suffix, const char *key,
                          const void *payload, size_t len, char *errstr, size_t errstr_size);
/* rf_producer_send with Kafka headers (NULL: none), which it takes over in every case. */
rf_err_t rf_producer_send_headers(rf_producer_t *p, const char *suffix, const char *key,
                                  const void *payload, size_t len, rd_kafka_headers_t *headers,
                                  char *errstr, size_t errstr_size);

/* A batch scope: between begin and end, rf_producer_send() returns once the message is
 * queued (RF_OK) without waiting for its delivery report; rf_producer_batch_end() waits for
 * every report of the scope (bounded as one send) and gives RF_ERR_RETRY if any message
 * was not delivered. The poll loop wraps a poll batch in it and stores the batch's offsets
 * only after end succeeded. end sends at once what librdkafka holds for linger.ms, and
 * waits for every message in flight: a batch scope is for a producer's only thread. */
void rf_producer_batch_begin(rf_producer_t *p);
rf_err_t rf_producer_batch_end(rf_producer_t *p, char *errstr, size_t errstr_size);
/* Messages produced in the open batch scope so far (0 outside one). */
int rf_producer_batch_sent(const rf_producer_t *p);

/* Joins group and subscribes to the topics of the NULL-terminated suffixes. Offsets are
 * committed automatically, but only those stored with rf_consumer_store(). */
rf_consumer_t *rf_consumer_new(const rf_config_t *conf, const char *group,
                               const char *const *suffixes, char *errstr, size_t errstr_size);
/* Leaves the group, committing stored offsets; accepts NULL. */
void rf_consumer_destroy(rf_consumer_t *c);

/* The next message, or NULL after timeout_ms. Errors of the client itself are logged
 * and give NULL. The caller rd_kafka_message_destroy()s the message. */
rd_kafka_message_t *rf_consumer_poll(rf_consumer_t *c, int timeout_ms);

/* Marks m as done: its offset + 1 will be committed. */
rf_err_t rf_consumer_store(rf_consumer_t *c, const rd_kafka_message_t *m);

/* Seeks m's partition back to m, so the next poll delivers m again (retry). */
void rf_consumer_rewind(rf_consumer_t *c, const rd_kafka_message_t *m);

rd_kafka_t *rf_consumer_handle(rf_consumer_t *c);

/* A file descriptor that turns readable when the consumer gets something to hand out (a
 * message, a rebalance, an error) while its queue was empty, for a worker that waits on
 * other sources too (poll(2), curl_multi_poll); -1 if none could be made. Call
 * rf_consumer_wake_clear() before taking from the consumer, never after, so that what
 * arrives meanwhile still wakes the next wait. */
int rf_consumer_wake_fd(rf_consumer_t *c);
void rf_consumer_wake_clear(rf_consumer_t *c);

/* How many brokers the consumer was connected to at its last statistics
 * (kafka_stats_interval_ms), -1 before the first; between statistics 0 as soon as
 * librdkafka reports all brokers down, 1 when a message is fetched after, and before the
 * first 1 once a broker gave the cluster's metadata. The statistics also set the gauges
 * relfleet_kafka_consumer_lag{topic,partition} and relfleet_kafka_brokers_up. */
int rf_consumer_brokers_up(const rf_consumer_t *c);

#endif
