/* The worker's readiness: checks of its connections behind /readyz, next to /metrics and /healthz.
 */
#ifndef RF_HEALTH_H
#define RF_HEALTH_H

#include <stddef.h>

#include "rf_config.h"
#include "rf_err.h"

typedef struct rf_health rf_health_t;

/* Starts the endpoint on conf->metrics_addr (rf_http) and a thread that checks, at once,
 * then every health_interval_ms (every 500 ms while its own check fails), on every
 * rf_health_poke() and whenever its PostgreSQL connection closes, on connections of its
 * own: PostgreSQL (2 s timeouts; the DSN as given must reach a writable host, else the
 * check says "read-only: ..." when some host answered but is a standby or read-only,
 * "unreachable: ..." with libpq's first line otherwise) and, when check_redis, Redis
 * (connect and authenticate). Other checks are set by the caller with rf_health_set(). A
 * metrics_addr of "off" or "" starts nothing (the object still works). NULL, errstr
 * filled, when the address is bad or cannot be bound. conf must outlive the object. */
rf_health_t *rf_health_new(const rf_config_t *conf, int check_redis, char *errstr,
                           size_t errstr_size);

/* Sets the state of a named check (added on first use, at most 8): ok = 1 ready; detail
 * says why not (copied; NULL for none). /readyz is 200 only when every check is ok.
 * Also sets the gauge relfleet_ready{check}. Thread-safe. */
void rf_health_set(rf_health_t *h, const char *check, int ok, const char *detail);

/* Asks the thread to check now (at most one check per 100 ms): the worker calls it when a
 * connection of its own goes down or comes back. Async-signal-safe; accepts NULL. */
void rf_health_poke(rf_health_t *h);

/* The port served (0 when off). */
int rf_health_port(const rf_health_t *h);

/* Stops the thread and the endpoint; accepts NULL. */
void rf_health_destroy(rf_health_t *h);

#endif
