/* PostgreSQL connection wrapper with retriable/permanent error classification. */
#include "rf_db.h"
#include "rf_log.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Slots of the prepared statement table: twice the bound, so probes stay short. */
#define DB_STMT_SLOTS (2 * RF_DB_PREPARED_MAX)
_Static_assert((DB_STMT_SLOTS & (DB_STMT_SLOTS - 1)) == 0, "a power of two");

/* A statement prepared on the current connection, named after the hash of its text. */
typedef struct db_stmt {
    char *sql; /* NULL: free slot */
    uint64_t hash;
} db_stmt_t;

struct rf_db {
    PGconn *conn;
    char *dsn;
    char sqlstate[6];
    int in_tx;
    int prepare;   /* setting pg_prepared_statements */
    int stale;     /* the server's statements no longer match the table: DEALLOCATE ALL */
    size_t nstmts; /* prepared on this connection */
    db_stmt_t stmts[DB_STMT_SLOTS];
};

static void db_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* NOTICEs (e.g. "relation already exists") are not worth a log line */
}

/* Forgets every prepared statement (the server's go with their connection). */
static void db_stmts_clear(rf_db_t *db)
{
    for (size_t i = 0; i < DB_STMT_SLOTS; i++) {
        free(db->stmts[i].sql);
        db->stmts[i].sql = NULL;
    }
    db->nstmts = 0;
    db->stale = 0;
}

/* Closes the connection; the next statement outside a transaction reconnects. */
static void db_close(rf_db_t *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
    db_stmts_clear(db);
}

static rf_err_t db_connect(rf_db_t *db, char *errstr, size_t errstr_size)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
        return RF_OK;
    db_close(db);
    db->conn = PQconnectdb(db->dsn);
    if (PQstatus(db->conn) != CONNECTION_OK) {
        rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot connect to postgresql: %s",
                PQerrorMessage(db->conn));
        errstr[strcspn(errstr, "\n")] = '\0';
        db_close(db);
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
    db->prepare = 1;
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
    db_close(db);
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

void rf_db_set_prepared(rf_db_t *db, int on)
{
    if (!on && db->nstmts > 0)
        db->stale = 1; /* deallocated before the next statement outside a transaction */
    db->prepare = on != 0;
}

size_t rf_db_prepared_count(const rf_db_t *db)
{
    return db->nstmts;
}

/* FNV-1a: the key of a statement's text, and its server-side name. */
static uint64_t db_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Queries and DML are prepared; transaction control, DDL and the like run unnamed (their
 * parse is cheap, and a migration's must not outlive it). */
static int db_preparable(const char *sql)
{
    static const char *const verbs[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", NULL};

    while (isspace((unsigned char)*sql))
        sql++;
    for (const char *const *v = verbs; *v; v++) {
        size_t n = strlen(*v);
        if (strncasecmp(sql, *v, n) == 0 && !isalnum((unsigned char)sql[n]) && sql[n] != '_')
            return 1;
    }
    return 0;
}

/* The slot of sql in the table: its own, or the free one where it goes. The table is never
 * more than half full, so the probe ends. */
static db_stmt_t *db_stmt_slot(rf_db_t *db, const char *sql, uint64_t hash)
{
    size_t i = (size_t)hash & (DB_STMT_SLOTS - 1);

    for (;; i = (i + 1) & (DB_STMT_SLOTS - 1)) {
        db_stmt_t *st = &db->stmts[i];
        if (!st->sql || (st->hash == hash && strcmp(st->sql, sql) == 0))
            return st;
    }
}

static int db_state_is(const PGresult *res, const char *state)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    return s && strcmp(s, state) == 0;
}

/* Runs sql prepared (PQprepare on its first use on this connection, then only
 * PQexecPrepared) or unnamed: when the setting is off, for statements not worth it, and
 * once RF_DB_PREPARED_MAX are prepared. *prepared tells which. */
static PGresult *db_run(rf_db_t *db, const char *sql, int nparams, const char *const *params,
                        int *prepared)
{
    char name[24];
    uint64_t hash;
    db_stmt_t *st;
    PGresult *res;

    *prepared = 0;
    if (!db->prepare || !db_preparable(sql))
        return PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    hash = db_hash(sql);
    snprintf(name, sizeof(name), "rf_%016llx", (unsigned long long)hash);
    st = db_stmt_slot(db, sql, hash);
    if (!st->sql) {
        if (db->nstmts >= RF_DB_PREPARED_MAX)
            return PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
        res = PQprepare(db->conn, name, sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            if (!db_state_is(res, "42P05"))
                return res; /* the statement's own error: syntax, aborted transaction, ... */
            /* The name is taken by another text (a hash collision): this one runs unnamed. */
            PQclear(res);
            return PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
        }
        PQclear(res);
        st->sql = strdup(sql);
        if (!st->sql)
            abort();
        st->hash = hash;
        db->nstmts++;
    }
    *prepared = 1;
    return PQexecPrepared(db->conn, name, nparams, params, NULL, NULL, 0);
}

/* A prepared statement the server no longer has (DISCARD ALL), or whose plan may no longer
 * return the columns it was prepared with (a migration changed a table under SELECT *). */
static int db_stmt_invalid(const PGresult *res)
{
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    return db_state_is(res, "26000") ||
           (db_state_is(res, "0A000") && msg && strstr(msg, "cached plan must not change"));
}

rf_err_t rf_db_exec(rf_db_t *db, const char *sql, int nparams, const char *const *params,
                    PGresult **res_out, char *errstr, size_t errstr_size)
{
    rf_err_t result = RF_OK;
    PGresult *res = NULL;
    const char *state;
    ExecStatusType st;
    int prepared, invalid, tries = 0;

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
again:
    if (db->stale && !db->in_tx) {
        PQclear(PQexec(db->conn, "DEALLOCATE ALL"));
        db_stmts_clear(db);
    }
    res = db_run(db, sql, nparams, params, &prepared);
    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (res_out)
            *res_out = res;
        else
            PQclear(res);
        return RF_OK;
    }
    invalid = prepared && res && db_stmt_invalid(res);
    if (invalid) {
        db->stale = 1;
        if (!db->in_tx && tries++ == 0) {
            PQclear(res); /* nothing ran: prepare it again */
            goto again;
        }
    }
    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", state ? state : "");
    if (PQstatus(db->conn) != CONNECTION_OK || !state || db_state_retriable(state) || invalid)
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
    if (result == RF_ERR_RETRY && !db->in_tx && PQstatus(db->conn) != CONNECTION_OK)
        db_close(db);
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
    if (result != RF_OK && db->conn && PQstatus(db->conn) != CONNECTION_OK)
        db_close(db);
    return result;
}

void rf_db_rollback(rf_db_t *db)
{
    PGresult *res;

    if (db->conn && PQstatus(db->conn) == CONNECTION_OK) {
        res = PQexec(db->conn, "ROLLBACK");
        PQclear(res);
    } else if (db->conn) {
        db_close(db);
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
