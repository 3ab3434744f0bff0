/* Service settings: which keys there are, how each value is checked and written, with one
 * service_history row per changed key (relctl service set, PATCH /api/v1/services/S/E). */
#ifndef RF_SERVICE_H
#define RF_SERVICE_H

#include <jansson.h>
#include <stddef.h>

#include "rf_db.h"
#include "rf_err.h"

/* A service's settings as one JSON object, in SQL over a row of services. */
#define RF_SERVICE_JSON_SQL                                                                        \
    "jsonb_build_object('service', service, 'env', env, 'namespace', namespace, 'replicas',"       \
    " replicas, 'health_path', health_path, 'group', group_name, 'port', port, 'template',"        \
    " template_id, 'strategy', strategy, 'policy', policy, 'timeout', timeout_s,"                  \
    " 'image_repo', image_repo, 'cluster', cluster, 'requires', requires_env, 'soak', soak_s,"     \
    " 'approvals', approvals, 'values', extra, 'updated_at', relfleet_iso(updated_at),"            \
    " 'updated_by', updated_by)"

/* One value checked by rf_service_check, ready for rf_service_set. Not to be copied: text
 * may point into num. */
typedef struct rf_service_value {
    const char *key;
    const char *column; /* the column it writes, NULL for a template value (in extra) */
    const char *cast;   /* the column's SQL type */
    const char *text;   /* what is stored: the value, or a timeout in whole seconds */
    char num[24];
} rf_service_value_t;

/* Checks value (text; "" unsets a column) for key: any key that is not a column is a
 * template value and takes any text; timeout and soak take a duration ("600", "600s", "10m",
 * "1h") and store whole seconds (soak "" unsets it); strategy takes what rf_strategy_parse_text takes.
 * RF_ERR_PERM with the reason otherwise, quoting at most quote_max bytes of the value
 * (-1: all of it):
 *   "timeout: '5x' is not a duration (600, 600s, 10m, 1h)", "strategy: <what is wrong>".
 * What the column's type or constraints refuse, PostgreSQL says in rf_service_set. */
rf_err_t rf_service_check(const char *key, const char *value, int quote_max,
                          rf_service_value_t *out, char *errstr, size_t errstr_size);

/* Locks the row of service in env for the rest of the transaction (rf_db_begin first) and
 * creates it when there is none (namespace env, template template_id, updated by user):
 * *created is then 1. RF_ERR_NOTFOUND, "no service 'S' in env 'E'", when there is none
 * and template_id is NULL; the transaction is still open then. */
rf_err_t rf_service_lock(rf_db_t *db, const char *service, const char *env, const char *template_id,
                         const char *user, int *created, char *errstr, size_t errstr_size);

/* What rf_service_set did to one key. */
typedef struct rf_service_change {
    const char *old_value; /* the text before and after, NULL for unset */
    const char *new_value;
    int changed;      /* they differ: a history row was written */
    int write_failed; /* on error: the UPDATE failed (a cast or a CHECK constraint refused
                       * the value, or the server), not the history row */
    PGresult *res;    /* holds old_value and new_value */
} rf_service_change_t;

/* Writes one checked value to the locked service (rf_service_lock), updated by user, and a
 * service_history row (changed_by user, key, old and new text) when the value changed.
 * On error the caller rolls the transaction back; errstr is PostgreSQL's message. change
 * is filled either way: rf_service_change_release it. */
rf_err_t rf_service_set(rf_db_t *db, const char *service, const char *env, const char *user,
                        const rf_service_value_t *value, rf_service_change_t *change, char *errstr,
                        size_t errstr_size);

void rf_service_change_release(rf_service_change_t *change);

/* Records image tag of service (digest NULL: unknown; a known digest is kept when NULL),
 * added by user. */
rf_err_t rf_service_image_add(rf_db_t *db, const char *service, const char *tag, const char *digest,
                              const char *user, char *errstr, size_t errstr_size);

/* The recorded images of service, newest first: *list is a JSON array of {tag, digest,
 * added_at, added_by} (the caller json_decrefs it). */
rf_err_t rf_service_images(rf_db_t *db, const char *service, json_t **list, char *errstr,
                           size_t errstr_size);

#endif
