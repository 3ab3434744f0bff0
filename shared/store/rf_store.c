/* Release store: timeline rows, fenced transitions, records and result messages. */
#include "rf_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_buf.h"

rf_err_t rf_store_event(rf_db_t *db, const char *release_id, const char *stage,
                        const char *event, const char *status, const char *message,
                        const json_t *data, char *errstr, size_t errstr_size)
{
    char *data_text = data ? json_dumps(data, JSON_COMPACT) : NULL;
    const char *params[6] = {release_id, stage, event, status, message, data_text};
    rf_err_t result;

    result = rf_db_exec(db,
                        "INSERT INTO timeline (release_id, stage, event, status, message, data) "
                        "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
                        6, params, NULL, errstr, errstr_size);
    free(data_text);
    return result;
}

rf_err_t rf_store_finish(rf_db_t *db, const char *release_id, int64_t fence, const char *status,
                         const char *error, const char *stage, const char *message,
                         char *errstr, size_t errstr_size)
{
    char fence_s[24];
    const char *params[4] = {release_id, fence_s, status, error};
    PGresult *res = NULL;
    rf_err_t result;

    snprintf(fence_s, sizeof(fence_s), "%lld", (long long)fence);
    result = rf_db_begin(db, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    result = rf_db_exec(
        db,
        "UPDATE releases r SET status = $3, error = $4, finished_at = clock_timestamp(),"
        " duration_ms = (extract(epoch FROM clock_timestamp() -"
        "   coalesce(r.started_at, clock_timestamp())) * 1000)::bigint "
        "WHERE r.id = $1 AND r.status NOT IN ('succeeded','failed','cancelled','superseded',"
        "  'rejected') AND (($2::bigint = 0 AND r.status IN ('queued', 'awaiting_approval')) OR"
        "  (r.fence = $2::bigint AND EXISTS (SELECT 1 FROM services s WHERE s.service = r.service"
        "   AND s.env = r.env AND s.fence = $2::bigint))) "
        "RETURNING r.id",
        4, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        goto fail;
    if (PQntuples(res) == 0) {
        PQclear(res);
        rf_db_rollback(db);
        res = NULL;
        result = rf_db_exec(db, "SELECT status FROM releases WHERE id = $1", 1, params, &res,
                            errstr, errstr_size);
        if (result == RF_OK && PQntuples(res) == 1 &&
            strstr("succeeded failed cancelled superseded rejected", PQgetvalue(res, 0, 0)))
            result = rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size,
                             "release '%s' has already ended as %s", release_id,
                             PQgetvalue(res, 0, 0));
        else if (result == RF_OK)
            result = rf_errf(RF_ERR_FENCED, errstr, errstr_size,
                             "release '%s' no longer holds fence %lld", release_id,
                             (long long)fence);
        PQclear(res);
        return result;
    }
    PQclear(res);
    result = rf_store_event(db, release_id, stage, status, status, message, NULL, errstr,
                            errstr_size);
    if (result != RF_OK)
        goto fail;
    return rf_db_commit(db, errstr, errstr_size);
fail:
    rf_db_rollback(db);
    return result;
}

rf_err_t rf_store_transition(rf_db_t *db, const char *release_id, int64_t fence,
                             const char *from, const char *to, const char *stage,
                             const char *message, const json_t *data, char *errstr,
                             size_t errstr_size)
{
    char fence_s[24];
    const char *params[4] = {release_id, fence_s, from, to};
    PGresult *res = NULL;
    rf_err_t result;
    int n;

    snprintf(fence_s, sizeof(fence_s), "%lld", (long long)fence);
    result = rf_db_begin(db, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    result = rf_db_exec(db,
                        "UPDATE releases r SET status = $4 WHERE r.id = $1 AND r.status = $3"
                        " AND r.fence = $2::bigint AND EXISTS (SELECT 1 FROM services s"
                        " WHERE s.service = r.service AND s.env = r.env AND s.fence = $2::bigint)"
                        " RETURNING r.id",
                        4, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        goto fail;
    n = PQntuples(res);
    PQclear(res);
    if (n == 0) {
        rf_db_rollback(db);
        return rf_errf(RF_ERR_FENCED, errstr, errstr_size,
                       "release '%s' is no longer %s with fence %lld", release_id, from,
                       (long long)fence);
    }
    result = rf_store_event(db, release_id, stage, to, to, message, data, errstr, errstr_size);
    if (result != RF_OK)
        goto fail;
    return rf_db_commit(db, errstr, errstr_size);
fail:
    rf_db_rollback(db);
    return result;
}

/* Runs a one-value query of a release and parses the JSON it returns. */
static rf_err_t store_json(rf_db_t *db, const char *sql, const char *release_id, json_t **out,
                           char **text, char *errstr, size_t errstr_size)
{
    const char *params[1] = {release_id};
    PGresult *res = NULL;
    json_error_t jerr;
    rf_err_t result;

    result = rf_db_exec(db, sql, 1, params, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no release '%s'", release_id);
    }
    if (text) {
        *text = strdup(PQgetvalue(res, 0, 0));
    } else {
        *out = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
        if (!*out)
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad record json: %s", jerr.text);
    }
    PQclear(res);
    return result;
}

static int store_is_uuid(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

    if (strlen(s) != sizeof(shape) - 1)
        return 0;
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == '-' ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
            return 0;
    }
    return 1;
}

rf_err_t rf_store_record(rf_db_t *db, const char *release_id, json_t **out, char *errstr,
                         size_t errstr_size)
{
    *out = NULL;
    if (!store_is_uuid(release_id))
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no release '%s'", release_id);
    return store_json(db, "SELECT relfleet_release_record($1)", release_id, out, NULL, errstr,
                      errstr_size);
}

rf_err_t rf_store_result(rf_db_t *db, const char *release_id, char **text, char *errstr,
                         size_t errstr_size)
{
    *text = NULL;
    return store_json(db, "SELECT relfleet_result($1)", release_id, NULL, text, errstr,
                      errstr_size);
}

rf_err_t rf_store_reject_message(rf_db_t *db, const char *stage, const char *topic,
                                 int32_t partition, int64_t offset, const void *key,
                                 size_t key_len, const char *reason, const void *payload,
                                 size_t len, char *errstr, size_t errstr_size)
{
    char part_s[16], off_s[24];
    /* A tombstone (no payload) is stored as empty bytes: the column is NOT NULL. */
    const char *params[7] = {stage, topic, part_s, off_s, key, reason, payload ? payload : ""};
    int lengths[7] = {0, 0, 0, 0, (int)key_len, 0, (int)len};
    int formats[7] = {0, 0, 0, 0, 1, 0, 1};
    PGresult *res;
    rf_err_t result = RF_OK;

    snprintf(part_s, sizeof(part_s), "%d", (int)partition);
    snprintf(off_s, sizeof(off_s), "%lld", (long long)offset);
    result = rf_db_exec(db, "SELECT 1", 0, NULL, NULL, errstr, errstr_size); /* (re)connect */
    if (result != RF_OK)
        return result;
    /* Binary parameters for the raw bytes: the payload may be anything, even invalid UTF-8. */
    res = PQexecParams(rf_db_conn(db),
                       "INSERT INTO rejected_messages (stage, topic, partition, \"offset\", key,"
                       " reason, payload) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                       " ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
                       7, NULL, params, lengths, formats, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot record rejected message: %s",
                         PQresultErrorMessage(res));
        errstr[strcspn(errstr, "\n")] = '\0';
    }
    PQclear(res);
    return result;
}

rf_err_t rf_store_end_many(rf_db_t *db, const json_t *ends, const char *stage, int owed_hold_s,
                           PGresult **res, char *errstr, size_t errstr_size)
{
    char *text = json_dumps(ends, JSON_COMPACT);
    char hold[16];
    const char *params[3] = {text, stage, hold};
    rf_err_t result;

    snprintf(hold, sizeof(hold), "%d", owed_hold_s);
    /* The ended rows' messages come from RETURNING (the new versions); the others' from
     * the statement's snapshot, like the next queued release (less those ended now). The
     * releases are found by their ids as an array (the primary key), in the update and in
     * the answer: joined to the 100 rows the planner guesses for jsonb_to_recordset, the
     * generic plan could be a hash join over a scan of every release (not yet ended). */
    result = rf_db_exec(
        db,
        "WITH x AS (SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid,"
        "  fence bigint, status text, error text, message text, pods jsonb, progress jsonb,"
        "  pmessage text)) WITH ORDINALITY AS x(id, fence, status, error, message, pods,"
        "  progress, pmessage, n)),"
        " u AS (UPDATE releases r SET status = x.status, error = x.error,"
        "  track = CASE WHEN x.progress IS NULL THEN r.track ELSE jsonb_set(r.track,"
        "   '{progress}', coalesce(r.track -> 'progress', '{}'::jsonb) || x.progress) END,"
        "  finished_at = clock_timestamp(), duration_ms = (extract(epoch FROM clock_timestamp() -"
        "   coalesce(r.started_at, clock_timestamp())) * 1000)::bigint,"
        "  pods = CASE WHEN jsonb_typeof(x.pods) = 'array' AND jsonb_array_length(x.pods) > 0"
        "   THEN x.pods ELSE r.pods END,"
        "  track_until = CASE WHEN $3::int >= 0 THEN clock_timestamp() +"
        "   make_interval(secs => $3::int) ELSE r.track_until END"
        "  FROM x WHERE r.id = x.id AND r.id = ANY (ARRAY(SELECT id FROM x)) AND"
        "  r.status NOT IN ('succeeded','failed','cancelled',"
        "   'superseded','rejected') AND ((x.fence = 0 AND r.status IN ('queued',"
        "   'awaiting_approval')) OR"
        "   (r.fence = x.fence AND EXISTS (SELECT 1 FROM services s WHERE s.service = r.service"
        "    AND s.env = r.env AND s.fence = x.fence)))"
        "  RETURNING r.id, x.n, x.status, x.message, x.progress, x.pmessage,"
        "   relfleet_result_of(r)::text AS result),"
        " o AS (INSERT INTO release_results_owed (release_id) SELECT id FROM u"
        "  WHERE $3::int >= 0),"
        " t AS (INSERT INTO timeline (release_id, stage, event, status, message, data)"
        "  SELECT e.id, $2, e.event, e.status, e.message, e.data FROM ("
        "   SELECT id, n, 0 AS k, 'progress' AS event, NULL::text AS status, pmessage AS message,"
        "    progress AS data FROM u WHERE pmessage IS NOT NULL UNION ALL"
        "   SELECT id, n, 1, status, status, message, NULL::jsonb FROM u) e ORDER BY e.n, e.k)"
        " SELECT x.id, u.id IS NOT NULL, coalesce(u.result, relfleet_result_of(r)::text),"
        "  r.env || '/' || r.service,"
        "  (SELECT q.request::text FROM releases q WHERE q.service = r.service AND q.env = r.env"
        "   AND q.status = 'queued' AND NOT EXISTS (SELECT 1 FROM u WHERE u.id = q.id)"
        "   ORDER BY q.created_at, q.id LIMIT 1)"
        " FROM x JOIN releases r ON r.id = x.id AND r.id = ANY (ARRAY(SELECT id FROM x))"
        " LEFT JOIN u ON u.id = x.id ORDER BY x.n",
        3, params, res, errstr, errstr_size);
    free(text);
    return result;
}

/* Runs sql with $1 the PostgreSQL array literal "{id,id,...}" of n release ids. */
static rf_err_t store_exec_ids(rf_db_t *db, const char *sql, const char *const *ids, size_t n,
                               PGresult **res, char *errstr, size_t errstr_size)
{
    rf_buf_t arr = RF_BUF_INIT;
    const char *params[1];
    rf_err_t result;

    rf_buf_add(&arr, "{", 1);
    for (size_t i = 0; i < n; i++)
        rf_buf_addf(&arr, "%s%s", i ? "," : "", ids[i]);
    rf_buf_add(&arr, "}", 1);
    params[0] = rf_buf_str(&arr);
    result = rf_db_exec(db, sql, 1, params, res, errstr, errstr_size);
    rf_buf_release(&arr);
    return result;
}

rf_err_t rf_store_results_delivered(rf_db_t *db, const char *const *ids, size_t n,
                                    char *errstr, size_t errstr_size)
{
    return store_exec_ids(db,
                          "DELETE FROM release_results_owed WHERE release_id = ANY($1::uuid[])",
                          ids, n, NULL, errstr, errstr_size);
}

rf_err_t rf_store_results_owed(rf_db_t *db, const char *owner, int lease_s, int limit,
                               PGresult **res, char *errstr, size_t errstr_size)
{
    char lease[16], lim[16];
    const char *params[3] = {owner, lease, lim};

    snprintf(lease, sizeof(lease), "%d", lease_s);
    snprintf(lim, sizeof(lim), "%d", limit);
    return rf_db_exec(db,
                      "UPDATE releases r SET track_owner = $1, track_until = clock_timestamp() +"
                      " make_interval(secs => $2::int) WHERE r.id IN (SELECT q.id FROM"
                      " release_results_owed o JOIN releases q ON q.id = o.release_id"
                      " WHERE q.track_until < clock_timestamp() ORDER BY q.track_until"
                      " LIMIT $3::int FOR UPDATE OF o, q SKIP LOCKED)"
                      " RETURNING r.id, relfleet_result(r.id)::text, r.env || '/' || r.service",
                      3, params, res, errstr, errstr_size);
}

rf_err_t rf_store_events(rf_db_t *db, const char *release_id, const char *stage,
                         const json_t *events, char *errstr, size_t errstr_size)
{
    char *text = json_dumps(events, JSON_COMPACT);
    const char *params[3] = {release_id, stage, text};
    rf_err_t result;

    result = rf_db_exec(db,
                        "INSERT INTO timeline (release_id, stage, event, status, message, data)"
                        " SELECT $1::uuid, $2, e.x ->> 'event', e.x ->> 'status',"
                        " e.x ->> 'message', e.x -> 'data'"
                        " FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(x, n)"
                        " ORDER BY e.n",
                        3, params, NULL, errstr, errstr_size);
    free(text);
    return result;
}

rf_err_t rf_store_apply_finish(rf_db_t *db, const char *const params[5], PGresult **res,
                               char *errstr, size_t errstr_size)
{
    return rf_db_exec(
        db,
        "WITH up AS ("
        " UPDATE releases r SET status = 'progressing', track = coalesce(r.track, '{}'::jsonb)"
        " || $3::jsonb || jsonb_build_object('deadline_ms', (extract(epoch FROM"
        " clock_timestamp()) * 1000)::bigint + 1000 * ($3::jsonb ->> 'timeout_s')::bigint)"
        " WHERE r.id = $1::uuid AND r.status = 'applying' AND r.fence = $2::bigint"
        " AND EXISTS (SELECT 1 FROM services s WHERE s.service = r.service AND s.env = r.env"
        " AND s.fence = $2::bigint) RETURNING r.id),"
        " ev AS (INSERT INTO timeline (release_id, stage, event, status, message, data)"
        " SELECT $1::uuid, 'apply', t.x ->> 'event', t.x ->> 'status', t.x ->> 'message',"
        " t.x -> 'data' FROM (SELECT e.x, e.n FROM jsonb_array_elements($4::jsonb)"
        " WITH ORDINALITY AS e(x, n) UNION ALL SELECT jsonb_build_object('event',"
        " 'progressing', 'status', 'progressing', 'message', $5::text), 9223372036854775807"
        " FROM up) AS t ORDER BY t.n RETURNING 1)"
        " SELECT count(*) FROM up",
        5, params, res, errstr, errstr_size);
}

rf_err_t rf_store_apply_finish_many(rf_db_t *db, const char *rows, PGresult **res, char *errstr,
                                    size_t errstr_size)
{
    const char *params[1] = {rows};

    /* rf_store_apply_finish per row of x: each release's fence and status checked in its
     * own row, its timeline rows (then its "progressing" row if it moved) in the order of n.
     * The releases are found by `= ANY (ARRAY(...))`, primary-key lookups whatever the
     * generic plan guesses of jsonb_to_recordset (track's end statement of the same shape
     * was planned as a hash join over a scan of all releases, 19f8237). The status they
     * must still have comes from x (`was`), not as a constant: `r.status = 'applying'`
     * let the planner read the partial index releases_one_active instead, whose dead
     * entries (two per release, never removed by a bitmap scan) grow until a vacuum
     * (auto_explain: 1,500 entries read for 20 rows after 3,000 releases). */
    return rf_db_exec(
        db,
        "WITH x AS (SELECT *, 'applying'::text AS was FROM jsonb_to_recordset($1::jsonb)"
        " AS x(n int, id uuid, fence bigint, track jsonb, events jsonb, message text)),"
        " up AS (UPDATE releases r SET status = 'progressing', track = coalesce(r.track,"
        " '{}'::jsonb) || x.track || jsonb_build_object('deadline_ms', (extract(epoch FROM"
        " clock_timestamp()) * 1000)::bigint + 1000 * (x.track ->> 'timeout_s')::bigint)"
        " FROM x WHERE r.id = ANY (ARRAY(SELECT id FROM x)) AND r.id = x.id"
        " AND r.status = x.was AND r.fence = x.fence"
        " AND EXISTS (SELECT 1 FROM services s WHERE s.service = r.service AND s.env = r.env"
        " AND s.fence = x.fence) RETURNING r.id),"
        " ev AS (INSERT INTO timeline (release_id, stage, event, status, message, data)"
        " SELECT t.id, 'apply', t.e ->> 'event', t.e ->> 'status', t.e ->> 'message',"
        " t.e -> 'data' FROM (SELECT x.n, x.id, e.x AS e, e.k FROM x,"
        " jsonb_array_elements(x.events) WITH ORDINALITY AS e(x, k) UNION ALL"
        " SELECT x.n, x.id, jsonb_build_object('event', 'progressing', 'status', 'progressing',"
        " 'message', x.message), 9223372036854775807 FROM x JOIN up ON up.id = x.id) AS t"
        " ORDER BY t.n, t.k RETURNING 1)"
        " SELECT x.id, up.id IS NOT NULL FROM x LEFT JOIN up ON up.id = x.id ORDER BY x.n",
        1, params, res, errstr, errstr_size);
}
