/* Waves: planning and storing a wave, its commands, its record (sql/009_waves.sql). */
#ifndef RF_WAVE_H
#define RF_WAVE_H

#include <jansson.h>

#include "rf_db.h"
#include "rf_err.h"

/* Plans and stores a wave from spec, the same object relctl builds from its options and
 * POST /api/v1/waves takes:
 *   {"env": E, "select": {"group": G} | {"services": [S, ...]} | {"template": T},
 *    exactly one of "version": V, "redo": true, "template_version": "latest",
 *    "max_parallel": N, "max_failures": F | "F" | "F%" (default 0),
 *    "steps": [{"services": [S, ...]} | {"percent": P}, ...] (default [{"percent": 100}]),
 *    "pause_between": "30s" (default none), "description": D}
 * A step of services takes those (they must be selected); a percent step takes the next
 * services in name order until P% of all are planned; the steps must plan every one.
 * operator is who it runs as; with check_user (NULL: no check) that user must be a
 * releaser of every selected service in env. *record gets the wave's record (with its
 * releases). RF_ERR_PERM with the reason for a bad spec or a missing permission (usage:
 * *usage set to 1 for a bad spec), RF_ERR_RETRY when PostgreSQL failed. */
rf_err_t rf_wave_create(rf_db_t *db, const json_t *spec, const char *operator_name,
                        const char *check_user, json_t **record, int *usage, char *errstr,
                        size_t errstr_size);

/* pause, resume or abort wave id by actor (why may be NULL); with check_user that user must
 * be a releaser of every service of the wave. RF_ERR_NOTFOUND for no such wave,
 * RF_ERR_PERM with the reason when the command does not apply or is not permitted. */
rf_err_t rf_wave_command(rf_db_t *db, const char *id, const char *action, const char *actor,
                         const char *why, const char *check_user, char *errstr, size_t errstr_size);

/* The record of wave id (sql: relfleet_wave_record), with its releases or not; with
 * check_user that user must hold role `need` for every service of the wave.
 * RF_ERR_NOTFOUND for no such wave, RF_ERR_PERM when not permitted. */
rf_err_t rf_wave_record(rf_db_t *db, const char *id, int with_releases, const char *check_user,
                        const char *need, json_t **out, char *errstr, size_t errstr_size);

/* The newest waves (env NULL: all; at most limit), records without their releases; with
 * check_user only those whose every service that user may view. */
rf_err_t rf_wave_list(rf_db_t *db, const char *env, int limit, const char *check_user, json_t **out,
                      char *errstr, size_t errstr_size);

/* Whether user holds role need for every service of wave id (*has), for the buttons of a
 * console page. */
rf_err_t rf_wave_allowed(rf_db_t *db, const char *id, const char *user, const char *need, int *has,
                         char *errstr, size_t errstr_size);

#endif
