/* PostgreSQL connection wrapper with retriable/permanent error classification. */
#include "rf_db.h"
#include "rf_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rf_db {
    PGconn *conn;
    char *dsn;
    char sqlstate[6];
    int in_tx;
};

static void db_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* NOTICEs (e.g. "relation already exists") are not worth a log line */
}

static rf_err_t db_connect(rf_db_t *db, char *errstr, size_t errstr_size)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
        return RF_OK;
    if (db->conn)
        PQfinish(db->conn);
    db->conn = PQconnectdb(db->dsn);
    if (PQstatus(db->conn) != CONNECTION_OK) {
        rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot connect to postgresql: %s",
                PQerrorMessage(db->conn));
        errstr[strcspn(errstr, "\n")] = '\0';
        PQfinish(db->conn);
        db->conn = NULL;
        return RF_ERR_RETRY;
    }
    PQsetNoticeProcessor(db->conn, db_notice, NULL);
    return RF_OK;
}

rf_db_t *rf_db_new(const char *dsn, char *errstr, size_t errstr_size)
{
    rf_db_t *db = calloc(1, sizeof(*db));

    if (!db)
        return NULL;
    db->dsn = strdup(dsn);
    if (db_connect(db, errstr, errstr_size) != RF_OK) {
        rf_db_destroy(db);
        return NULL;
    }
    return db;
}

void rf_db_destroy(rf_db_t *db)
{
    if (!db)
        return;
    if (db->conn)
        PQfinish(db->conn);
    free(db->dsn);
    free(db);
}

PGconn *rf_db_conn(rf_db_t *db)
{
    return db->conn;
}

const char *rf_db_sqlstate(const rf_db_t *db)
{
    return db->sqlstate;
}

/* SQLSTATE classes worth a retry: connection exceptions, serialization failures,
 * deadlocks, an administrator shutdown, a server starting up or out of resources. */
static int db_state_retriable(const char *state)
{
    static const char *const retriable[] = {"08", "40001", "40P01", "57P01", "57P02",
                                            "57P03", "53", "58", NULL};
    for (const char *const *p = retriable; *p; p++)
        if (strncmp(state, *p, strlen(*p)) == 0)
            return 1;
    return 0;
}

rf_err_t rf_db_exec(rf_db_t *db, const char *sql, int nparams, const char *const *params,
                    PGresult **res_out, char *errstr, size_t errstr_size)
{
    rf_err_t result = RF_OK;
    PGresult *res = NULL;
    const char *state;
    ExecStatusType st;

    db->sqlstate[0] = '\0';
    if (res_out)
        *res_out = NULL;
    if (!db->in_tx) {
        result = db_connect(db, errstr, errstr_size);
        if (result != RF_OK)
            return result;
    } else if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                       "postgresql connection lost inside a transaction");
    }
    res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (res_out)
            *res_out = res;
        else
            PQclear(res);
        return RF_OK;
    }
    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", state ? state : "");
    if (PQstatus(db->conn) != CONNECTION_OK || !state || db_state_retriable(state))
        result = RF_ERR_RETRY;
    else
        result = RF_ERR_PERM;
    rf_errf(result, errstr, errstr_size, "postgresql: %s%s%s%s",
            res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn), state ? " (SQLSTATE " : "",
            state ? state : "", state ? ")" : "");
    for (char *p = errstr; p && *p; p++)
        if (*p == '\n')
            *p = ' ';
    PQclear(res);
    if (result == RF_ERR_RETRY && !db->in_tx && PQstatus(db->conn) != CONNECTION_OK) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    return result;
}

rf_err_t rf_db_begin(rf_db_t *db, char *errstr, size_t errstr_size)
{
    rf_err_t result = rf_db_exec(db, "BEGIN", 0, NULL, NULL, errstr, errstr_size);

    if (result == RF_OK)
        db->in_tx = 1;
    return result;
}

rf_err_t rf_db_commit(rf_db_t *db, char *errstr, size_t errstr_size)
{
    rf_err_t result = rf_db_exec(db, "COMMIT", 0, NULL, NULL, errstr, errstr_size);

    db->in_tx = 0;
    if (result != RF_OK && db->conn && PQstatus(db->conn) != CONNECTION_OK) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    return result;
}

void rf_db_rollback(rf_db_t *db)
{
    PGresult *res;

    if (db->conn && PQstatus(db->conn) == CONNECTION_OK) {
        res = PQexec(db->conn, "ROLLBACK");
        PQclear(res);
    } else if (db->conn) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    db->in_tx = 0;
}

const char *rf_db_value(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    return PQgetvalue(res, row, col);
}

rf_err_t rf_db_schema_version(rf_db_t *db, int *version, char *errstr, size_t errstr_size)
{
    PGresult *res = NULL;
    rf_err_t result;

    *version = 0;
    result = rf_db_exec(db, "SELECT coalesce(max(version), 0) FROM relfleet_migrations", 0, NULL,
                        &res, errstr, errstr_size);
    if (result == RF_OK && PQntuples(res) == 1)
        *version = atoi(PQgetvalue(res, 0, 0));
    else if (result == RF_ERR_PERM && strcmp(db->sqlstate, "42P01") == 0)
        result = RF_OK; /* no migrations table yet */
    PQclear(res);
    return result;
}

rf_err_t rf_db_migrate(rf_db_t *db, int *applied, char *errstr, size_t errstr_size)
{
    rf_err_t result;
    PGresult *res = NULL;
    int done = 0;

    if (applied)
        *applied = 0;
    result = rf_db_begin(db, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    /* One migrator at a time, across every process that starts at once. */
    result = rf_db_exec(db, "SELECT pg_advisory_xact_lock(7263544155)", 0, NULL, NULL, errstr,
                        errstr_size);
    if (result != RF_OK)
        goto fail;
    result = rf_db_exec(db,
                        "CREATE TABLE IF NOT EXISTS relfleet_migrations ("
                        " version integer PRIMARY KEY, name text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())",
                        0, NULL, NULL, errstr, errstr_size);
    if (result != RF_OK)
        goto fail;
    for (const rf_db_migration_t *m = rf_db_migrations; m->name; m++) {
        char version[16];
        const char *params[2] = {version, m->name};
        snprintf(version, sizeof(version), "%d", m->version);
        result = rf_db_exec(db, "SELECT 1 FROM relfleet_migrations WHERE version = $1::int", 1,
                            params, &res, errstr, errstr_size);
        if (result != RF_OK)
            goto fail;
        if (PQntuples(res) > 0) {
            PQclear(res);
            res = NULL;
            continue;
        }
        PQclear(res);
        res = NULL;
        /* A migration file is several statements: the simple protocol runs them all. */
        res = PQexec(db->conn, m->sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "migration '%s' failed: %s",
                             m->name, PQresultErrorMessage(res));
            errstr[strcspn(errstr, "\n")] = '\0';
            PQclear(res);
            res = NULL;
            goto fail;
        }
        PQclear(res);
        res = NULL;
        result = rf_db_exec(db, "INSERT INTO relfleet_migrations (version, name) VALUES ($1, $2)",
                            2, params, NULL, errstr, errstr_size);
        if (result != RF_OK)
            goto fail;
        done++;
        rf_log_info("applied migration %s", m->name);
    }
    result = rf_db_commit(db, errstr, errstr_size);
    if (result == RF_OK && applied)
        *applied = done;
    return result;
fail:
    rf_db_rollback(db);
    return result;
}
