/* DORA statistics: the window and filters of a query, and relfleet_stats over the release records.
 */
#ifndef RF_STATS_H
#define RF_STATS_H

#include <stddef.h>

#include "rf_db.h"
#include "rf_err.h"

#define RF_STATS_SINCE_DEFAULT "30d"
#define RF_STATS_MAX_DAYS 3660

/* What to count: the releases that ended since `since` (a window back from now: 30d, 12h,
 * 90m, 2w; or a time, ISO 8601: 2026-11-01, 2026-11-01T12:00:00Z) until now, of a service,
 * an env and a group (NULL: any), that user may view (NULL: every release). */
typedef struct rf_stats_query {
    const char *since;
    const char *service;
    const char *env;
    const char *group;
    const char *user;
} rf_stats_query_t;

/* Seconds of a window "<n>d|h|m|w" (1 minute to RF_STATS_MAX_DAYS days), or -1 if s is
 * none. */
long long rf_stats_window_s(const char *s);

/* Checks q (RF_ERR_PERM naming the field: "since '...' is not ...") and runs the query; *out
 * gets the statistics as docs/dora.md describes them, JSON text as PostgreSQL wrote it
 * (numbers keep their decimals; the caller frees it). Which field was bad is written to
 * *field when field is not NULL ("since", "service", "env", "group"). */
rf_err_t rf_stats_run(rf_db_t *db, const rf_stats_query_t *q, char **out, const char **field,
                      char *errstr, size_t errstr_size);

#endif
