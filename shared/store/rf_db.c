/* PostgreSQL connection wrapper with retriable/permanent error classification. */
#include "rf_db.h"
#include "rf_log.h"

#include <ctype.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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
    int lost;        /* the connection is dead or on a read-only host: drop it, reconnect */
    int failover_ms; /* rf_db_set_failover_timeout */
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

/* libpq's message on one line: the first line of each host's attempt, joined by "; " (the
 * indented hints after them are left out). */
static void db_message_line(char *out, size_t size, const char *msg)
{
    size_t n = 0;

    out[0] = '\0';
    while (msg && *msg && n + 1 < size) {
        size_t len = strcspn(msg, "\n");
        if (*msg != '\t' && *msg != ' ' && len > 0)
            n += (size_t)snprintf(out + n, size - n, "%s%.*s", n ? "; " : "", (int)len, msg);
        msg += len;
        if (*msg == '\n')
            msg++;
    }
}

int rf_db_conn_read_only(PGconn *conn)
{
    const char *standby = PQparameterStatus(conn, "in_hot_standby");
    const char *ro = PQparameterStatus(conn, "default_transaction_read_only");

    return (standby && strcmp(standby, "on") == 0) || (ro && strcmp(ro, "on") == 0);
}

/* What every connection gets unless the DSN (or the libpq variable named) says otherwise:
 * writes need a writable host; a host that answers nothing (powered off, cut off, its
 * address moved) is given up on after connect_timeout (per host, so the next host of a
 * multi-host DSN is tried), and a connection whose server went silent fails within about
 * 10 s (tcp_user_timeout for data not acknowledged, keepalives for an idle one such as a
 * LISTEN) instead of TCP's 15 minutes of retransmits. */
static const struct {
    const char *key, *env, *value;
} db_conn_defaults[] = {
    {"target_session_attrs", "PGTARGETSESSIONATTRS", "read-write"},
    {"connect_timeout", "PGCONNECT_TIMEOUT", "5"},
    {"tcp_user_timeout", NULL, "10000"},
    {"keepalives", NULL, "1"},
    {"keepalives_idle", NULL, "5"},
    {"keepalives_interval", NULL, "2"},
    {"keepalives_count", NULL, "3"},
};

#define DB_CONN_DEFAULTS (sizeof(db_conn_defaults) / sizeof(db_conn_defaults[0]))
#define DB_CONN_KEYS_MAX 16 /* keys a caller may add */
#define DB_CONN_ARGS (DB_CONN_DEFAULTS + 1 + DB_CONN_KEYS_MAX + 1)

PGconn *rf_db_connect_dsn(const char *dsn, const char *const *keys, const char *const *values)
{
    const char *k[DB_CONN_ARGS], *v[DB_CONN_ARGS];
    size_t n = 0;

    /* libpq takes the last value of a keyword: the defaults come before dbname, so the
     * DSN's own values (expanded from dbname) win, and the caller's keys after it win over
     * both. A default is left out when its environment variable is set, which libpq then
     * uses. */
    for (size_t i = 0; i < DB_CONN_DEFAULTS; i++) {
        if (db_conn_defaults[i].env && getenv(db_conn_defaults[i].env))
            continue;
        k[n] = db_conn_defaults[i].key;
        v[n++] = db_conn_defaults[i].value;
    }
    k[n] = "dbname";
    v[n++] = dsn;
    for (size_t i = 0; keys && keys[i] && i < DB_CONN_KEYS_MAX; i++) {
        k[n] = keys[i];
        v[n++] = values[i];
    }
    k[n] = NULL;
    v[n] = NULL;
    return PQconnectdbParams(k, v, 1);
}

void rf_db_hosts(const char *dsn, char *out, size_t size)
{
    PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
    const char *hosts = NULL, *ports = NULL, *hp, *pp;
    size_t n = 0;

    out[0] = '\0';
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val && *o->val)
            hosts = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0 && o->val && *o->val && !hosts)
            hosts = o->val;
        else if (strcmp(o->keyword, "port") == 0 && o->val && *o->val)
            ports = o->val;
    }
    if (!hosts)
        hosts = getenv("PGHOST") && *getenv("PGHOST") ? getenv("PGHOST") : "localhost";
    if (!ports)
        ports = getenv("PGPORT") && *getenv("PGPORT") ? getenv("PGPORT") : "5432";
    /* A single port applies to every host; otherwise they pair up. */
    for (hp = hosts, pp = ports; *hp && n + 1 < size;) {
        size_t hl = strcspn(hp, ","), pl = strcspn(pp, ",");
        n += (size_t)snprintf(out + n, size - n, "%s%.*s:%.*s", n ? ", " : "", (int)hl, hp,
                              (int)pl, pp);
        hp += hl;
        if (*hp == ',')
            hp++;
        if (pp[pl] == ',')
            pp += pl + 1;
    }
    PQconninfoFree(opts);
}

static rf_err_t db_connect(rf_db_t *db, char *errstr, size_t errstr_size)
{
    char msg[768];

    if (db->conn && PQstatus(db->conn) == CONNECTION_OK && !db->lost)
        return RF_OK;
    db_close(db);
    db->lost = 0;
    db->conn = rf_db_connect_dsn(db->dsn, NULL, NULL);
    if (PQstatus(db->conn) != CONNECTION_OK) {
        db_message_line(msg, sizeof(msg), PQerrorMessage(db->conn));
        rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot connect to postgresql: %s", msg);
        db_close(db);
        return RF_ERR_RETRY;
    }
    PQsetNoticeProcessor(db->conn, db_notice, NULL);
    return RF_OK;
}

/* Before a statement goes out on an idle connection: reads what the server sent meanwhile
 * (the FATAL of a backend that was terminated, a server that went away, a change to
 * read-only), so a connection known dead is replaced before anything is sent on it. */
static void db_check_idle(rf_db_t *db)
{
    struct pollfd pfd = {PQsocket(db->conn), POLLIN, 0};

    /* A server's last words (FATAL) come before its end of file: read until neither is left
     * (a few rounds at most). */
    for (int i = 0; i < 4 && pfd.fd >= 0 && poll(&pfd, 1, 0) > 0; i++) {
        if (!PQconsumeInput(db->conn))
            break;
    }
    if (PQstatus(db->conn) != CONNECTION_OK)
        db->lost = 1;
}

static long db_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits ms (at most *delay), then doubles *delay up to 2 s. */
static void db_backoff(long ms, long *delay)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
    *delay = *delay * 2 > 2000 ? 2000 : *delay * 2;
}

/* After the failover timeout: what was tried, by host (never the DSN: it may hold a
 * password). */
static rf_err_t db_gave_up(rf_db_t *db, long waited_ms, char *errstr, size_t errstr_size)
{
    char hosts[512], last[768];

    rf_db_hosts(db->dsn, hosts, sizeof(hosts));
    snprintf(last, sizeof(last), "%s",
             strncmp(errstr, "cannot connect to postgresql: ", 30) == 0 ? errstr + 30 : errstr);
    return rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                   "cannot reach a writable postgresql at %s after %ld s: %s", hosts,
                   (waited_ms + 500) / 1000, last);
}

rf_db_t *rf_db_open(const char *dsn, int failover_timeout_ms, char *errstr, size_t errstr_size)
{
    rf_db_t *db = calloc(1, sizeof(*db));
    long start = db_now_ms(), delay = 100;

    if (!db)
        return NULL;
    db->dsn = strdup(dsn);
    db->prepare = 1;
    db->failover_ms = failover_timeout_ms;
    while (db_connect(db, errstr, errstr_size) != RF_OK) {
        long left = failover_timeout_ms - (db_now_ms() - start);
        if (left <= 0) {
            if (failover_timeout_ms > 0)
                db_gave_up(db, db_now_ms() - start, errstr, errstr_size);
            rf_db_destroy(db);
            return NULL;
        }
        if (delay == 100)
            rf_log_warn("%s; waiting up to %d s for a writable postgresql (pg_failover_timeout_ms)",
                        errstr, (failover_timeout_ms + 999) / 1000);
        db_backoff(delay < left ? delay : left, &delay);
    }
    return db;
}

rf_db_t *rf_db_new(const char *dsn, char *errstr, size_t errstr_size)
{
    return rf_db_open(dsn, 0, errstr, errstr_size);
}

void rf_db_set_failover_timeout(rf_db_t *db, int timeout_ms)
{
    db->failover_ms = timeout_ms;
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

/* How a failed statement may be repeated outside a transaction. */
typedef enum {
    DB_NOT_RUN,  /* it never reached a server, or the server refused it without running it */
    DB_UNKNOWN,  /* the connection was lost while it ran: it may have committed */
    DB_RAN       /* the server ran it and answered an error */
} db_outcome_t;

static rf_err_t db_exec_once(rf_db_t *db, const char *sql, int nparams,
                             const char *const *params, PGresult **res_out, db_outcome_t *outcome,
                             char *errstr, size_t errstr_size)
{
    rf_err_t result = RF_OK;
    PGresult *res = NULL;
    const char *state;
    ExecStatusType st;
    int prepared, invalid, read_only = 0, tries = 0;

    db->sqlstate[0] = '\0';
    *outcome = DB_NOT_RUN;
    if (res_out)
        *res_out = NULL;
    if (db->conn && !db->lost)
        db_check_idle(db);
    if (!db->in_tx) {
        result = db_connect(db, errstr, errstr_size);
        if (result != RF_OK)
            return result;
    } else if (!db->conn || db->lost || PQstatus(db->conn) != CONNECTION_OK) {
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
    if (state && strcmp(state, "25006") == 0) {
        /* read_only_sql_transaction: the host is a standby now (or the DSN reached one).
         * Nothing was written; the connection goes, the next reconnects through the DSN. */
        db->lost = read_only = 1;
        result = RF_ERR_RETRY;
    } else if (PQstatus(db->conn) != CONNECTION_OK || !state || db_state_retriable(state) ||
               invalid) {
        result = RF_ERR_RETRY;
    } else {
        result = RF_ERR_PERM;
    }
    *outcome = read_only || invalid ? DB_NOT_RUN
               : PQstatus(db->conn) != CONNECTION_OK ? DB_UNKNOWN
                                                      : DB_RAN;
    rf_errf(result, errstr, errstr_size, "postgresql: %s%s%s%s",
            res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn), state ? " (SQLSTATE " : "",
            state ? state : "", state ? ")" : "");
    for (char *p = errstr; p && *p; p++)
        if (*p == '\n')
            *p = ' ';
    PQclear(res);
    if (PQstatus(db->conn) != CONNECTION_OK)
        db->lost = 1;
    if (result == RF_ERR_RETRY && !db->in_tx && db->lost)
        db_close(db);
    return result;
}

/* A read: a statement that changes nothing however often it runs. Relfleet's own functions
 * that write (relfleet_notify_claim) are called by the workers only, which never repeat. */
static int db_is_read(const char *sql)
{
    while (isspace((unsigned char)*sql))
        sql++;
    return strncasecmp(sql, "SELECT", 6) == 0 && !isalnum((unsigned char)sql[6]) &&
           !strstr(sql, "_claim(") && !strstr(sql, "pg_advisory");
}

rf_err_t rf_db_exec(rf_db_t *db, const char *sql, int nparams, const char *const *params,
                    PGresult **res_out, char *errstr, size_t errstr_size)
{
    long start = db_now_ms(), delay = 100, left;
    db_outcome_t outcome;
    rf_err_t result;

    for (;;) {
        result = db_exec_once(db, sql, nparams, params, res_out, &outcome, errstr, errstr_size);
        if (result != RF_ERR_RETRY || db->in_tx)
            return result;
        if (outcome == DB_UNKNOWN && !db_is_read(sql)) {
            /* A write whose outcome is unknown is the caller's to judge: it is told so. */
            if (errstr && errstr_size > 0) {
                size_t n = strlen(errstr);
                snprintf(errstr + n, errstr_size - n, " (the connection was lost while the"
                                                      " statement ran: it may have committed)");
            }
            return result;
        }
        /* With a failover timeout: what did not run, and reads, until the timeout. */
        if (db->failover_ms <= 0 || outcome == DB_RAN)
            return result;
        left = db->failover_ms - (db_now_ms() - start);
        if (left <= 0)
            return db_gave_up(db, db_now_ms() - start, errstr, errstr_size);
        db_backoff(delay < left ? delay : left, &delay);
    }
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
    if (result != RF_OK && db->conn && (db->lost || PQstatus(db->conn) != CONNECTION_OK))
        db_close(db);
    return result;
}

void rf_db_rollback(rf_db_t *db)
{
    PGresult *res;

    if (db->conn && !db->lost && PQstatus(db->conn) == CONNECTION_OK) {
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
