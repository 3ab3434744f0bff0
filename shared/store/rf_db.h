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

/* Connects (NULL, errstr filled, when no writable server can be reached). The DSN is used as
 * given, multi-host lists and target_session_attrs included; libpq picks the host. When the
 * DSN (and PGTARGETSESSIONATTRS) leave target_session_attrs out it is read-write: a host that
 * is a standby or read-only is never used. */
rf_db_t *rf_db_new(const char *dsn, char *errstr, size_t errstr_size);

/* rf_db_new that waits out a failover: connecting is retried with back-off (100 ms doubling
 * to 2 s) for up to failover_timeout_ms, then the error names the hosts tried: "cannot
 * reach a writable postgresql at h1:p1, h2:p2 after 30 s: ..." (never the DSN itself). The
 * timeout stays for rf_db_exec (rf_db_set_failover_timeout). */
rf_db_t *rf_db_open(const char *dsn, int failover_timeout_ms, char *errstr, size_t errstr_size);

/* How long rf_db_exec waits out a failover (0, rf_db_new's default: not at all). Outside a
 * transaction, a statement that failed with RF_ERR_RETRY is repeated on a new connection
 * through the DSN, with back-off until the timeout, when repeating is safe:
 *   - it never reached a server (no connection could be made);
 *   - the server refused it without running it: SQLSTATE 25006, read_only_sql_transaction
 *     (the host became a standby), or a prepared statement the server had lost;
 *   - it is a read (SELECT, not a function that claims or locks) and the connection was
 *     lost while it ran.
 * A write whose connection was lost while it ran may have committed: it is not repeated
 * here (RF_ERR_RETRY goes back), and only a caller whose write is idempotent or fenced may
 * run it again. Inside a transaction nothing is repeated: the caller rolls back and runs
 * the whole transaction again, or not. */
void rf_db_set_failover_timeout(rf_db_t *db, int timeout_ms);

/* The hosts a DSN names, "host:port, host:port" (libpq's defaults filled in), for
 * messages: never the password. */
void rf_db_hosts(const char *dsn, char *out, size_t size);

/* Connects with the DSN as given (multi-host included). Unless the DSN or the libpq
 * environment say otherwise: target_session_attrs read-write, connect_timeout 5 (per host),
 * tcp_user_timeout 10000 and keepalives (idle 5, interval 2, count 3), so a silent host
 * costs seconds, not TCP's minutes. Then keys/values (NULL-terminated, at most 16, may be
 * NULL) overriding the DSN's: for connections of their own (readiness). Every connection
 * of rf_db, the LISTEN of relfleet-api and the readiness probes come through here. */
PGconn *rf_db_connect_dsn(const char *dsn, const char *const *keys, const char *const *values);

/* 1 when the server of conn said it is a hot standby or read-only by default (the
 * in_hot_standby and default_transaction_read_only it reports, PostgreSQL 14 and later). */
int rf_db_conn_read_only(PGconn *conn);
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
 * not NULL) takes the result, which the caller PQclear()s. A lost connection, a read-only
 * host (SQLSTATE 25006) or a transient server state is RF_ERR_RETRY (the connection is
 * dropped, or reset on the next call, which reconnects through the DSN); other errors are
 * RF_ERR_PERM; errstr carries the server's message and SQLSTATE. An idle connection the
 * server closed meanwhile is replaced before the statement goes out. What is repeated
 * after a failure: rf_db_set_failover_timeout.
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
