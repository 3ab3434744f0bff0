/* The release store: the PostgreSQL statements every stage and relctl share. */
#ifndef RF_STORE_H
#define RF_STORE_H

#include <jansson.h>
#include <stdint.h>

#include "rf_db.h"
#include "rf_err.h"

/* Appends one timeline row (data may be NULL). */
rf_err_t rf_store_event(rf_db_t *db, const char *release_id, const char *stage,
                        const char *event, const char *status, const char *message,
                        const json_t *data, char *errstr, size_t errstr_size);

/* Ends a release in the terminal status, with error (may be NULL) and a timeline row,
 * in one transaction. fence 0 ends a release that never started (queued); otherwise the
 * release and its service must still hold that fence, else RF_ERR_FENCED and nothing
 * changes. A release already in a terminal state is RF_ERR_NOTFOUND. */
rf_err_t rf_store_finish(rf_db_t *db, const char *release_id, int64_t fence, const char *status,
                         const char *error, const char *stage, const char *message,
                         char *errstr, size_t errstr_size);

/* Changes the status of a started release guarded by its fence, with a timeline row, in
 * one transaction; from is the status it must have now. RF_ERR_FENCED when the fence
 * or the status no longer match. */
rf_err_t rf_store_transition(rf_db_t *db, const char *release_id, int64_t fence,
                             const char *from, const char *to, const char *stage,
                             const char *message, const json_t *data, char *errstr,
                             size_t errstr_size);

/* The record of a release as `relctl show --output json` prints it; RF_ERR_NOTFOUND. */
rf_err_t rf_store_record(rf_db_t *db, const char *release_id, json_t **out, char *errstr,
                         size_t errstr_size);

/* The text of the `results` message of a terminal release (same bytes every time);
 * RF_ERR_NOTFOUND if it is not terminal. The caller frees *text. */
rf_err_t rf_store_result(rf_db_t *db, const char *release_id, char **text, char *errstr,
                         size_t errstr_size);

/* Records a message a stage refused (the row beside the dlq message). */
rf_err_t rf_store_reject_message(rf_db_t *db, const char *stage, const char *topic,
                                 int32_t partition, int64_t offset, const void *key,
                                 size_t key_len, const char *reason, const void *payload,
                                 size_t len, char *errstr, size_t errstr_size);

#endif
