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
 * in one transaction. fence 0 ends a release that never started (queued or
 * awaiting_approval); otherwise the
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

/* rf_store_finish for many releases, and their results messages, in one statement. ends
 * is an array of {"id", "fence", "status", "error" (null), "message", "pods" (null or an
 * array, stored when not empty), "pmessage", "progress" (both may be absent)}, at most one
 * per release; a release that ends now with a "pmessage" gets its last progress first, as
 * track's progress statement writes it (track.progress merged with "progress" when given,
 * and a timeline row 'progress' with pmessage and progress, before its end's row).
 * owed_hold_s >= 0: the ended releases' results messages are owed (a row of release_results_owed) and
 * their claims held that many seconds for the caller's delivery (rf_store_results_delivered
 * clears it); < 0: a consumed message's redelivery covers them. For each release of ends that exists, in their order,
 * one row: id, "t" if it ended now ("f": it had ended already or lost its fence, nothing
 * changed), the text of its `results` message (NULL if it is not terminal: rf_store_result's
 * bytes), its key "env/service", and the stored request of its service's oldest queued
 * release (NULL if none). The caller PQclears *res. */
rf_err_t rf_store_end_many(rf_db_t *db, const json_t *ends, const char *stage, int owed_hold_s,
                           PGresult **res, char *errstr, size_t errstr_size);

/* The results messages of the n releases were delivered: no longer owed. */
rf_err_t rf_store_results_delivered(rf_db_t *db, const char *const *ids, size_t n,
                                    char *errstr, size_t errstr_size);

/* Claims (for owner, lease_s seconds) up to limit releases whose results message is owed
 * and whose claim lapsed. Rows: id, the message's text, its key "env/service". The
 * caller PQclears *res. */
rf_err_t rf_store_results_owed(rf_db_t *db, const char *owner, int lease_s, int limit,
                               PGresult **res, char *errstr, size_t errstr_size);

/* Appends the timeline rows events (an array of {event, status, message, data}, status
 * and data optional) in their order, in one statement. */
rf_err_t rf_store_events(rf_db_t *db, const char *release_id, const char *stage,
                         const json_t *events, char *errstr, size_t errstr_size);

/* The apply stage's closing statement, one statement (no BEGIN/COMMIT): the release
 * params[0] goes from applying to progressing with params[2] (jsonb) merged into its
 * track plus deadline_ms (now + track.timeout_s), if it and its service still hold fence
 * params[1]; the timeline rows params[3] (as rf_store_events, stage "apply") are appended
 * either way, then a "progressing" row with the message params[4] if it moved. *res has
 * one row, one column: "1" when it moved, "0" when the fence or status no longer matched
 * (the caller PQclear()s it). */
rf_err_t rf_store_apply_finish(rf_db_t *db, const char *const params[5], PGresult **res,
                               char *errstr, size_t errstr_size);

/* rf_store_apply_finish for many releases in one statement. rows is the text of a JSON
 * array of {"n" (its place), "id", "fence", "track" (object), "events" (array), "message"},
 * at most one per release: each row is checked and moved on its own (fence, status), as
 * rf_store_apply_finish would, and its timeline rows appended either way. *res has one
 * row per row of rows, in the order of n: id, "t" when it moved, "f" when its fence or
 * status no longer matched (the caller PQclear()s it). */
rf_err_t rf_store_apply_finish_many(rf_db_t *db, const char *rows, PGresult **res, char *errstr,
                                    size_t errstr_size);

#endif
