/* The contract between relfleet-worker's main loop and its stages. */
#ifndef RF_WORKER_H
#define RF_WORKER_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "rf_config.h"
#include "rf_db.h"
#include "rf_err.h"
#include "rf_kafka.h"
#include "rf_lock.h"
#include "rf_msg.h"
#include "rf_schema.h"

/* What every stage gets from main: configuration and the connections to the world. */
typedef struct rf_worker {
    const rf_config_t *conf;
    const char *stage;
    rf_db_t *db;
    rf_lock_t *lock; /* NULL for stages that take no lock */
    rf_producer_t *producer;
    rf_schema_registry_t *schemas;
    volatile int *run; /* 0 once a shutdown was asked for */
    /* Releases ended in this poll batch for another message than their own
     * (rf_worker_end_other): their results are owed until the batch's deliveries are done,
     * then the loop clears the mark (a sweep sends them if the batch or the worker fails). */
    json_t *owed_in_batch;
} rf_worker_t;

/* A message as a stage sees it: the validated body plus where it came from. */
typedef struct rf_input {
    const rd_kafka_message_t *m;
    const char *topic_suffix; /* "requests", "commands", ... */
    json_t *body;             /* validated against its schema */
    /* The stage's lean_array parsed lean (rf_msg_parse_lean): the text of its objects' other
     * members; NULL when the body is whole. */
    rf_msg_lean_t *lean;
} rf_input_t;

typedef struct rf_stage {
    const char *name;
    const char *const *topics;  /* suffixes consumed, NULL-terminated */
    int poll_ms;                /* longest wait for a message before the next tick */
    int needs_lock;             /* connect to Redis */
    /* Optional: a top-level array of the stage's messages whose objects it mostly passes on
     * as they came: only their members lean_keep names are parsed (rf_msg_parse_lean). */
    const char *lean_array;
    const char *const *lean_keep;
    /* Sets up the stage's own state. */
    rf_err_t (*init)(rf_worker_t *w, void **state, char *errstr, size_t errstr_size);
    /* Turns one message into effects and the next message. RF_OK: done, the offset is
     * stored. RF_ERR_RETRY: retried later, offset not stored. RF_ERR_PERM: the message
     * is dead-lettered with errstr as the reason. */
    rf_err_t (*handle)(void *state, const rf_input_t *in, char *errstr, size_t errstr_size);
    /* Optional: handles a poll batch at once instead of calling handle n times. in[i] are
     * the batch's valid messages in consumption order (messages of one partition stay in
     * order); the hook sets results[i] (as handle's return) and, when not RF_OK, writes
     * the reason into errstrs[i] (errstr_size bytes each). Messages of one key must keep
     * the order of their effects. Within a batch rf_producer_send() only queues (see
     * rf_producer_batch_begin): the loop waits for the deliveries once, then stores. */
    void (*handle_batch)(void *state, rf_input_t *const *in, size_t n, rf_err_t *results,
                         char *const *errstrs, size_t errstr_size);
    /* Periodic work between polls (sweeps, watches); may be NULL. */
    void (*tick)(void *state);
    /* Optional: waits at most timeout_ms until the stage's own sources (track: its
     * watches) have something or fd (the consumer's rf_consumer_wake_fd) turns readable.
     * With it the loop takes messages without waiting and waits here instead, so that
     * neither source waits for the other. */
    void (*wait)(void *state, int fd, int timeout_ms);
    void (*destroy)(void *state);
    /* Readiness of what only the stage knows (apply, track: the API server), asked on the
     * main thread between polls every health_interval_ms: 1 ready, 0 not (/readyz).
     * Must be cheap (e.g. the state of its watch). NULL = always ready. */
    int (*ready)(void *state);
} rf_stage_t;

extern const rf_stage_t rf_stage_render;
extern const rf_stage_t rf_stage_apply;
extern const rf_stage_t rf_stage_track;
extern const rf_stage_t rf_stage_notify;

#endif
