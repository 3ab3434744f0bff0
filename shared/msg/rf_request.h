/* The messages upstream publishes about releases, as relctl and the API build them: requests
 * (deploy, and rollback or redo of an earlier release) and commands (cancel, promote,
 * abort). Validating, signing and publishing them is the publisher's. */
#ifndef RF_REQUEST_H
#define RF_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#include "rf_db.h"
#include "rf_err.h"
#include "rf_msg.h"

/* Nonzero for a release id as relfleet writes them: a UUID in lowercase. */
int rf_request_is_id(const char *s);

/* A relfleet.request.v1 of kind ("deploy", "rollback", "redo") for version of service in
 * env, with a new release_id, requested now. parent NULL: none (null); operator_name NULL:
 * left to the publisher; desc NULL: no description. NULL when memory runs out. */
json_t *rf_request_new(const char *kind, const char *service, const char *env, const char *version,
                       const char *parent, const char *operator_name, const char *desc);

/* A relfleet.command.v1: action ("cancel", "promote", "abort") on release_id of service in
 * env, with a new command_id (also written to cmd_id), issued now; full: a promote through
 * every remaining step. operator_name NULL: left to the publisher. */
json_t *rf_request_command(const char *action, const char *release_id, const char *service,
                           const char *env, const char *operator_name, int full,
                           char cmd_id[RF_MSG_UUID_SIZE]);

/* An earlier release that a rollback or redo starts from. */
typedef struct rf_request_origin {
    const char *id, *service, *env, *version, *status;
    const char *params;           /* JSON object of the values it rendered with */
    const char *template_version; /* params and template_version: NULL when it never rendered */
    PGresult *res;                /* holds the strings when read by rf_request_find_* */
} rf_request_origin_t;

/* Reads release id into o: RF_ERR_NOTFOUND, "no release 'ID'", when there is none. */
rf_err_t rf_request_find_release(rf_db_t *db, const char *id, rf_request_origin_t *o, char *errstr,
                                 size_t errstr_size);

/* What a rollback of service in env goes back to: the newest success before its current
 * release (the newest one that rendered). RF_ERR_NOTFOUND, "no successful release of 'S'
 * in env 'E' before its current one", when there is none. */
rf_err_t rf_request_find_previous(rf_db_t *db, const char *service, const char *env,
                                  rf_request_origin_t *o, char *errstr, size_t errstr_size);

/* What a redo of service in env repeats: its newest release that rendered. RF_ERR_NOTFOUND,
 * "no release of 'S' in env 'E' to redo", when there is none. */
rf_err_t rf_request_find_latest(rf_db_t *db, const char *service, const char *env,
                                rf_request_origin_t *o, char *errstr, size_t errstr_size);

/* Frees what rf_request_find_* read; accepts an origin never filled (all zero). */
void rf_request_origin_release(rf_request_origin_t *o);

/* A rollback to o into *msg: its version, template version and values (less those that
 * belonged to it alone: release_id, operator, namespace), parent o. desc NULL: "rollback
 * to version V of release ID". RF_ERR_PERM, "release ID never rendered (it ended STATUS):
 * nothing to go back to", when o never rendered. */
rf_err_t rf_request_rollback(const rf_request_origin_t *o, const char *operator_name,
                             const char *desc, json_t **msg, char *errstr, size_t errstr_size);

/* A redo of o: its version again with restart (the pods restart even when nothing
 * changed), parent o. desc NULL: "redo to version V of release ID". */
json_t *rf_request_redo(const rf_request_origin_t *o, const char *operator_name, const char *desc);

#endif
