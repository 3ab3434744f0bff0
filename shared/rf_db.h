/* PostgreSQL access: one connection, classified errors, transactions, migrations. */
#ifndef RF_DB_H
#define RF_DB_H

#include <libpq-fe.h>
#include <stddef.h>

#include "rf_err.h"

typedef struct rf_db rf_db_t;

typedef struct rf_db_migration {
    int version;
    const char *name;
    const char *sql;
} rf_db_migration_t;

/* The migrations embedded from sql/ at build time, terminated by a NULL name. */
extern const rf_db_migration_t rf_db_migrations[];

/* Connects (RF_ERR_RETRY when the server cannot be reached). */
rf_db_t *rf_db_new(const char *dsn, char *errstr, size_t errstr_size);
void rf_db_destroy(rf_db_t *db);

/* Most statements rf_db_exec keeps prepared on one connection; later ones run unnamed. */
#define RF_DB_PREPARED_MAX 256

/* Whether rf_db_exec prepares its statements (on by default; the setting
 * pg_prepared_statements). Off for a pooler that hands one client's statements to other
 * server connections: PgBouncer in transaction or statement mode before 1.21. */
void rf_db_set_prepared(rf_db_t *db, int on);

/* How many statements are prepared on the current connection. */
size_t rf_db_prepared_count(const rf_db_t *db);

/* The raw connection, for callers that need libpq directly (LISTEN, COPY). */
PGconn *rf_db_conn(rf_db_t *db);

/* Runs one statement with text parameters (NULL = SQL NULL). On success *res_out (if
 * not NULL) takes the result, which the caller PQclear()s. A lost connection or a
 * transient server state is RF_ERR_RETRY (the connection is reset on the next call);
 * other errors are RF_ERR_PERM; errstr carries the server's message and SQLSTATE.
 * A query or DML statement is prepared on its first use on a connection, keyed by its
 * text, and only executed after (see rf_db_set_prepared): one statement per call, and
 * callers must not DEALLOCATE or DISCARD behind its back. */
rf_err_t rf_db_exec(rf_db_t *db, const char *sql, int nparams, const char *const *params,
                    PGresult **res_out, char *errstr, size_t errstr_size);

/* SQLSTATE of the last failed statement ("" when none), e.g. "23505". */
const char *rf_db_sqlstate(const rf_db_t *db);

rf_err_t rf_db_begin(rf_db_t *db, char *errstr, size_t errstr_size);
rf_err_t rf_db_commit(rf_db_t *db, char *errstr, size_t errstr_size);
void rf_db_rollback(rf_db_t *db);

/* Applies the embedded migrations not yet applied, under an advisory lock so several
 * processes may run it at once. *applied (optional) gets how many ran. */
rf_err_t rf_db_migrate(rf_db_t *db, int *applied, char *errstr, size_t errstr_size);

/* The version of the newest applied migration, 0 for an empty database. */
rf_err_t rf_db_schema_version(rf_db_t *db, int *version, char *errstr, size_t errstr_size);

/* Cell text or NULL for SQL NULL. */
const char *rf_db_value(const PGresult *res, int row, int col);

#endif
