/* rf_db against a PostgreSQL server of its own: prepared statements, reconnects, migrations. */
#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rf_db.h"

static char pg_dir[64];
static char pg_dsn[256];
static pid_t pg_pid;
/* The first server also listens on TCP, port 5432 of a loopback address of this process's
 * own (127.77.x.y): what only TCP has (timeouts, keepalives) is tested there. */
static char pg_tcp_addr[32];
/* A second server, for a DSN of two hosts (its folder is its socket directory). */
static char pg2_dir[64];
static pid_t pg2_pid;

/* initdb and postgres refuse to run as root: the stack's user runs them then. */
static void pg_drop_root(void)
{
    struct passwd *pw;

    if (geteuid() != 0)
        return;
    pw = getpwnam("relfleet");
    if (!pw || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        _exit(126);
}

/* PostgreSQL's programs: RELFLEET_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin. */
static void pg_program(const char *name, char *path, size_t size)
{
    const char *dir = getenv("RELFLEET_PG_BINDIR");
    glob_t g;

    if (dir) {
        snprintf(path, size, "%s/%s", dir, name);
        return;
    }
    snprintf(path, size, "%s", name); /* from PATH */
    if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0) {
        snprintf(path, size, "%s/%s", g.gl_pathv[g.gl_pathc - 1], name);
        globfree(&g);
    }
}

/* Runs argv (stdout, stderr to /dev/null) as the server's user. */
static pid_t pg_spawn(const char *const argv[])
{
    pid_t pid = fork();

    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        setpgid(0, 0); /* a ^C of the test stops the test, which stops the server */
        pg_drop_root();
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Removes the server's folder (files and folders only, as initdb made it). */
static void pg_rmtree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;

    while (d && (e = readdir(d))) {
        char sub[512];
        struct stat s;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        if (lstat(sub, &s) == 0 && S_ISDIR(s.st_mode))
            pg_rmtree(sub);
        else
            unlink(sub);
    }
    if (d)
        closedir(d);
    rmdir(path);
}

/* initdb and a server of its own in a new folder under /tmp, on a unix socket (in the
 * folder: no port is shared with anything else) and on TCP at listen ("": none). */
static void pg_server_start(char *dir, size_t dir_size, pid_t *pid_out, const char *listen)
{
    char initdb[256], postgres[256], data[128], sock[128], dsn[256], addrs[64];
    struct timespec pause = {0, 20 * 1000000L};
    int status = -1;
    pid_t pid;

    snprintf(dir, dir_size, "/tmp/rf-test-db-XXXXXX");
    if (!mkdtemp(dir))
        fail_msg("mkdtemp failed");
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("relfleet");
        if (!pw)
            fail_msg("user relfleet is missing: run ops/bootstrap");
        if (chown(dir, pw->pw_uid, pw->pw_gid) != 0)
            fail_msg("cannot chown %s", dir);
    }
    snprintf(data, sizeof(data), "%s/data", dir);
    pg_program("initdb", initdb, sizeof(initdb));
    pg_program("postgres", postgres, sizeof(postgres));
    pid = pg_spawn((const char *const[]){initdb, "-D", data, "-U", "relfleet", "-A", "trust",
                                   "--no-sync", "-E", "UTF8", "--no-locale", NULL});
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("initdb failed (status %d)", status);
    snprintf(sock, sizeof(sock), "unix_socket_directories=%s", dir);
    snprintf(addrs, sizeof(addrs), "listen_addresses=%s", listen);
    *pid_out = pg_spawn((const char *const[]){postgres, "-D", data, "-p", "5432", "-c", sock,
                                        "-c", addrs, "-c", "fsync=off", "-c",
                                        "max_connections=20", NULL});
    snprintf(dsn, sizeof(dsn), "host=%s port=5432 user=relfleet dbname=postgres", dir);
    for (int i = 0; i < 3000; i++) { /* 60 s: a loaded machine starts it slowly */
        if (PQping(dsn) == PQPING_OK)
            return;
        if (waitpid(*pid_out, &status, WNOHANG) == *pid_out)
            fail_msg("postgres exited (status %d)", status);
        nanosleep(&pause, NULL);
    }
    fail_msg("postgres did not start");
}

static void pg_server_stop(const char *dir, pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGINT); /* fast shutdown */
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
    if (*dir)
        pg_rmtree(dir);
}

static int pg_start(void **state)
{
    (void)state;
    snprintf(pg_tcp_addr, sizeof(pg_tcp_addr), "127.77.%d.%d", (int)(getpid() >> 8) & 255,
             (int)getpid() & 255);
    pg_server_start(pg_dir, sizeof(pg_dir), &pg_pid, pg_tcp_addr);
    snprintf(pg_dsn, sizeof(pg_dsn), "host=%s port=5432 user=relfleet dbname=postgres", pg_dir);
    return 0;
}

static int pg_stop(void **state)
{
    (void)state;
    pg_server_stop(pg_dir, &pg_pid);
    pg_server_stop(pg2_dir, &pg2_pid);
    return 0;
}

static rf_db_t *db_open(void)
{
    char err[512];
    rf_db_t *db = rf_db_new(pg_dsn, err, sizeof(err));

    if (!db)
        fail_msg("rf_db_new: %s", err);
    return db;
}

/* A query through the simple protocol on a connection of its own: nothing prepared. */
static long pg_value(const char *sql)
{
    PGconn *c = PQconnectdb(pg_dsn);
    PGresult *res = PQexec(c, sql);
    long v;

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(c);
    return v;
}

/* What the server holds prepared for the connection of db (simple protocol: not cached). */
static long prepared_on_server(rf_db_t *db)
{
    PGresult *res = PQexec(rf_db_conn(db), "SELECT count(*) FROM pg_prepared_statements");
    long v;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* Runs sql with one parameter; returns the first cell as a number, or -1 on an error. */
static long run1(rf_db_t *db, const char *sql, const char *param, rf_err_t *result)
{
    char err[512];
    PGresult *res = NULL;
    const char *params[1] = {param};
    long v = -1;

    *result = rf_db_exec(db, sql, param ? 1 : 0, params, &res, err, sizeof(err));
    if (*result == RF_OK && PQntuples(res) > 0)
        v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

static void exec_ok(rf_db_t *db, const char *sql)
{
    char err[512];

    if (rf_db_exec(db, sql, 0, NULL, NULL, err, sizeof(err)) != RF_OK)
        fail_msg("%s: %s", sql, err);
}

/* One statement prepared per text, whatever buffer holds it; which statements are. */
static void test_prepared_by_text(void **state)
{
    static const struct {
        const char *sql;
        const char *param;
        long value;
        long prepared_after; /* on the server, after running it twice */
    } cases[] = {
        {"SELECT $1::int + 1", "41", 42, 1},
        {"  select $1::int * 2", "21", 42, 2},
        {"WITH x AS (SELECT $1::int AS v) SELECT v FROM x", "7", 7, 3},
        {"SELECT 1 + 1", NULL, 2, 4},
        {"SHOW max_connections", NULL, 20, 4}, /* not a query or DML: unnamed */
        {"SELECTED", NULL, -1, 4},              /* a syntax error prepares nothing */
    };
    rf_db_t *db = db_open();
    rf_err_t result;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int round = 0; round < 2; round++) {
            char *copy = strdup(cases[i].sql); /* another pointer, same text */
            assert_int_equal(run1(db, copy, cases[i].param, &result), cases[i].value);
            assert_int_equal(result, cases[i].value < 0 ? RF_ERR_PERM : RF_OK);
            free(copy);
        }
        assert_int_equal(prepared_on_server(db), cases[i].prepared_after);
        assert_int_equal(rf_db_prepared_count(db), cases[i].prepared_after);
    }
    rf_db_destroy(db);
}

/* The setting off: every statement unnamed; turning it off drops what was prepared. */
static void test_prepared_off(void **state)
{
    rf_db_t *db = db_open();
    rf_err_t result;

    (void)state;
    assert_int_equal(run1(db, "SELECT $1::int", "5", &result), 5);
    assert_int_equal(prepared_on_server(db), 1);
    rf_db_set_prepared(db, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(run1(db, "SELECT $1::int", "6", &result), 6);
        assert_int_equal(run1(db, "SELECT $1::int + 1", "6", &result), 7);
    }
    assert_int_equal(prepared_on_server(db), 0);
    assert_int_equal(rf_db_prepared_count(db), 0);
    rf_db_set_prepared(db, 1);
    assert_int_equal(run1(db, "SELECT $1::int + 1", "6", &result), 7);
    assert_int_equal(prepared_on_server(db), 1);
    rf_db_destroy(db);
}

/* At most RF_DB_PREPARED_MAX per connection; statements past the bound still run. */
static void test_prepared_bound(void **state)
{
    rf_db_t *db = db_open();
    rf_err_t result;
    char sql[64];

    (void)state;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < RF_DB_PREPARED_MAX + 44; i++) {
            snprintf(sql, sizeof(sql), "SELECT $1::int + %d", i);
            assert_int_equal(run1(db, sql, "1000", &result), 1000 + i);
        }
    }
    assert_int_equal(prepared_on_server(db), RF_DB_PREPARED_MAX);
    assert_int_equal(rf_db_prepared_count(db), RF_DB_PREPARED_MAX);
    rf_db_destroy(db);
}

/* Waits until the server process pid has gone (its FATAL message is then on its socket). */
static void backend_wait_gone(int pid)
{
    struct timespec pause = {0, 10 * 1000000L};
    char sql[96];

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    for (int i = 0; i < 1000 && pg_value(sql) > 0; i++)
        nanosleep(&pause, NULL);
}

/* Ends db's server process from another connection, as a restart or a proxy would, and
 * waits until it is gone. */
static void kill_backend(rf_db_t *db)
{
    int pid = PQbackendPID(rf_db_conn(db));
    char sql[96];

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_terminate_backend(%d)", pid);
    assert_int_equal(pg_value(sql), 1);
    backend_wait_gone(pid);
}

/* A lost connection takes its prepared statements along: after the reconnect they are
 * prepared again, also inside a transaction, where a failure could not be retried. An idle
 * connection the server closed is replaced before the next statement goes out on it. */
static void test_prepared_reconnect(void **state)
{
    rf_db_t *db = db_open();
    rf_err_t result;
    char err[512];

    (void)state;
    assert_int_equal(run1(db, "SELECT $1::int * 3", "3", &result), 9);
    kill_backend(db);
    assert_int_equal(run1(db, "SELECT $1::int * 3", "3", &result), 9);
    assert_int_equal(result, RF_OK);
    kill_backend(db);
    assert_int_equal(rf_db_begin(db, err, sizeof(err)), RF_OK);
    assert_int_equal(rf_db_prepared_count(db), 0);
    assert_int_equal(run1(db, "SELECT $1::int * 3", "4", &result), 12);
    assert_int_equal(result, RF_OK);
    assert_int_equal(rf_db_commit(db, err, sizeof(err)), RF_OK);
    assert_int_equal(prepared_on_server(db), 1);

    /* Lost inside a transaction: the rollback closes it, the next call reconnects. */
    assert_int_equal(rf_db_begin(db, err, sizeof(err)), RF_OK);
    kill_backend(db);
    run1(db, "SELECT $1::int * 3", "5", &result);
    assert_int_equal(result, RF_ERR_RETRY);
    rf_db_rollback(db);
    assert_int_equal(rf_db_begin(db, err, sizeof(err)), RF_OK);
    assert_int_equal(run1(db, "SELECT $1::int * 3", "5", &result), 15);
    assert_int_equal(rf_db_commit(db, err, sizeof(err)), RF_OK);
    rf_db_destroy(db);
}

/* In an aborted transaction a new statement fails as it would unprepared, and is
 * prepared after the rollback; one prepared inside a rolled back transaction stays. */
static void test_prepared_aborted_transaction(void **state)
{
    rf_db_t *db = db_open();
    rf_err_t result;
    char err[512];

    (void)state;
    assert_int_equal(rf_db_begin(db, err, sizeof(err)), RF_OK);
    assert_int_equal(run1(db, "SELECT $1::int + 100", "1", &result), 101);
    run1(db, "SELECT 1 / $1::int", "0", &result);
    assert_int_equal(result, RF_ERR_PERM);
    assert_string_equal(rf_db_sqlstate(db), "22012");
    run1(db, "SELECT $1::int + 200", "1", &result);
    assert_int_equal(result, RF_ERR_PERM);
    assert_string_equal(rf_db_sqlstate(db), "25P02");
    run1(db, "SELECT $1::int + 100", "1", &result);
    assert_string_equal(rf_db_sqlstate(db), "25P02");
    rf_db_rollback(db);
    assert_int_equal(rf_db_begin(db, err, sizeof(err)), RF_OK);
    assert_int_equal(run1(db, "SELECT $1::int + 100", "2", &result), 102);
    assert_int_equal(run1(db, "SELECT $1::int + 200", "2", &result), 202);
    assert_int_equal(run1(db, "SELECT 1 / $1::int", "1", &result), 1);
    assert_int_equal(rf_db_commit(db, err, sizeof(err)), RF_OK);
    assert_int_equal(prepared_on_server(db), 3);
    rf_db_destroy(db);
}

/* DDL runs unnamed; a table changed under a prepared SELECT * is re-prepared (at once
 * outside a transaction; inside, the transaction is lost: a retriable error). */
static void test_prepared_ddl(void **state)
{
    rf_db_t *db = db_open();
    PGresult *res = NULL;
    rf_err_t result;
    char err[512];

    (void)state;
    exec_ok(db, "CREATE TABLE ddl_t (a int)");
    exec_ok(db, "INSERT INTO ddl_t VALUES (1)");
    assert_int_equal(rf_db_exec(db, "SELECT * FROM ddl_t", 0, NULL, &res, err, sizeof(err)),
                     RF_OK);
    assert_int_equal(PQnfields(res), 1);
    PQclear(res);
    exec_ok(db, "ALTER TABLE ddl_t ADD COLUMN b int");
    assert_int_equal(rf_db_exec(db, "SELECT * FROM ddl_t", 0, NULL, &res, err, sizeof(err)),
                     RF_OK);
    assert_int_equal(PQnfields(res), 2);
    PQclear(res);
    exec_ok(db, "ALTER TABLE ddl_t ADD COLUMN c int");
    assert_int_equal(rf_db_begin(db, err, sizeof(err)), RF_OK);
    result = rf_db_exec(db, "SELECT * FROM ddl_t", 0, NULL, NULL, err, sizeof(err));
    assert_int_equal(result, RF_ERR_RETRY);
    rf_db_rollback(db);
    assert_int_equal(rf_db_begin(db, err, sizeof(err)), RF_OK);
    assert_int_equal(rf_db_exec(db, "SELECT * FROM ddl_t", 0, NULL, &res, err, sizeof(err)),
                     RF_OK);
    assert_int_equal(PQnfields(res), 3);
    PQclear(res);
    assert_int_equal(rf_db_commit(db, err, sizeof(err)), RF_OK);
    exec_ok(db, "DROP TABLE ddl_t");
    rf_db_destroy(db);
}

/* A statement the server dropped behind the cache's back (DISCARD ALL by someone with
 * the raw connection) is prepared again. */
static void test_prepared_discarded(void **state)
{
    rf_db_t *db = db_open();
    rf_err_t result;

    (void)state;
    assert_int_equal(run1(db, "SELECT $1::int - 1", "10", &result), 9);
    PQclear(PQexec(rf_db_conn(db), "DEALLOCATE ALL"));
    assert_int_equal(run1(db, "SELECT $1::int - 1", "10", &result), 9);
    assert_int_equal(result, RF_OK);
    assert_int_equal(prepared_on_server(db), 1);
    rf_db_destroy(db);
}

/* The embedded migrations (multi-statement files, DDL) apply on an empty database with
 * statements prepared, then again as a no-op; the schema's statements then work. */
static void test_migrate(void **state)
{
    rf_db_t *db = db_open();
    char err[512];
    int applied = -1, version = -1, n = 0;

    (void)state;
    exec_ok(db, "CREATE DATABASE migrate_test");
    rf_db_destroy(db);
    {
        char dsn[300];
        snprintf(dsn, sizeof(dsn), "%s", pg_dsn);
        *strstr(dsn, "dbname=postgres") = '\0';
        strcat(dsn, "dbname=migrate_test");
        db = rf_db_new(dsn, err, sizeof(err));
        assert_non_null(db);
    }
    for (const rf_db_migration_t *m = rf_db_migrations; m->name; m++)
        n++;
    if (rf_db_migrate(db, &applied, err, sizeof(err)) != RF_OK)
        fail_msg("migrate: %s", err);
    assert_int_equal(applied, n);
    assert_int_equal(rf_db_migrate(db, &applied, err, sizeof(err)), RF_OK);
    assert_int_equal(applied, 0);
    assert_int_equal(rf_db_schema_version(db, &version, err, sizeof(err)), RF_OK);
    assert_true(version > 0);
    exec_ok(db, "SELECT count(*) FROM releases WHERE status = 'queued'");
    rf_db_destroy(db);
}

/* A connection to one server of the test, with writes allowed whatever its default. */
static void pg_admin(const char *dir, const char *sql)
{
    char dsn[256];
    PGconn *c;
    PGresult *res;

    snprintf(dsn, sizeof(dsn),
             "host=%s port=5432 user=relfleet dbname=postgres"
             " options='-c default_transaction_read_only=off'",
             dir);
    c = PQconnectdb(dsn);
    res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
}

/* Turns a server read-only for every session (what libpq's target_session_attrs=read-write
 * sees of a standby; each write fails with 25006), or writable again, and waits until a new
 * session has it. */
static void pg_set_read_only(const char *dir, int on)
{
    struct timespec pause = {0, 10 * 1000000L};
    char dsn[256], sql[96];

    snprintf(sql, sizeof(sql), "ALTER SYSTEM SET default_transaction_read_only = %s",
             on ? "on" : "off");
    pg_admin(dir, sql);
    pg_admin(dir, "SELECT pg_reload_conf()");
    snprintf(dsn, sizeof(dsn), "host=%s port=5432 user=relfleet dbname=postgres", dir);
    for (int i = 0; i < 1000; i++) {
        PGconn *c = PQconnectdb(dsn);
        const char *v = PQparameterStatus(c, "default_transaction_read_only");
        int done = v && strcmp(v, on ? "on" : "off") == 0;
        PQfinish(c);
        if (done)
            return;
        nanosleep(&pause, NULL);
    }
    fail_msg("%s did not turn %s", dir, on ? "read-only" : "writable");
}

static void pg2_start(void)
{
    if (pg2_pid <= 0)
        pg_server_start(pg2_dir, sizeof(pg2_dir), &pg2_pid, "");
}

/* The folder (socket directory) of the server db is connected to. */
static const char *db_host(rf_db_t *db)
{
    return rf_db_conn(db) ? PQhost(rf_db_conn(db)) : "(none)";
}

/* A write refused with 25006 (the host became a standby) is RF_ERR_RETRY and drops the
 * connection; a reconnect finds no writable host while it stays so, and says it. */
static void test_read_only_is_retry(void **state)
{
    rf_db_t *db = db_open();
    rf_err_t result;
    char err[512];

    (void)state;
    exec_ok(db, "CREATE TABLE IF NOT EXISTS ha_keys (k text PRIMARY KEY)");
    pg_set_read_only(pg_dir, 1);
    result = rf_db_exec(db, "INSERT INTO ha_keys VALUES ('a') ON CONFLICT DO NOTHING", 0, NULL,
                        NULL, err, sizeof(err));
    assert_int_equal(result, RF_ERR_RETRY);
    assert_string_equal(rf_db_sqlstate(db), "25006");
    assert_null(rf_db_conn(db));
    result = rf_db_exec(db, "SELECT 1", 0, NULL, NULL, err, sizeof(err));
    assert_int_equal(result, RF_ERR_RETRY);
    if (!strstr(err, "read-only"))
        fail_msg("the error does not say read-only: %s", err);
    pg_set_read_only(pg_dir, 0);
    exec_ok(db, "INSERT INTO ha_keys VALUES ('a') ON CONFLICT DO NOTHING");
    assert_int_equal(pg_value("SELECT count(*) FROM ha_keys"), 1);
    rf_db_destroy(db);
}

/* A DSN of two hosts: libpq picks the writable one, and after a switch (the writable host
 * read-only, the other writable) a write refused by the old one reaches the new one: at
 * once with a failover timeout, at the next statement without. */
static void test_multi_host_follows_writable(void **state)
{
    char dsn[256], err[512];
    rf_db_t *db;

    (void)state;
    pg2_start();
    snprintf(dsn, sizeof(dsn), "host=%s,%s port=5432 user=relfleet dbname=postgres", pg_dir,
             pg2_dir);
    pg_admin(pg_dir, "CREATE TABLE IF NOT EXISTS ha_keys (k text PRIMARY KEY)");
    pg_admin(pg2_dir, "CREATE TABLE IF NOT EXISTS ha_keys (k text PRIMARY KEY)");
    pg_set_read_only(pg_dir, 1);
    db = rf_db_new(dsn, err, sizeof(err));
    if (!db)
        fail_msg("rf_db_new: %s", err);
    assert_string_equal(db_host(db), pg2_dir);
    exec_ok(db, "INSERT INTO ha_keys VALUES ('b') ON CONFLICT DO NOTHING");

    pg_set_read_only(pg_dir, 0);
    pg_set_read_only(pg2_dir, 1);
    rf_db_set_failover_timeout(db, 5000);
    exec_ok(db, "INSERT INTO ha_keys VALUES ('c') ON CONFLICT DO NOTHING");
    assert_string_equal(db_host(db), pg_dir);

    pg_set_read_only(pg2_dir, 0);
    pg_set_read_only(pg_dir, 1);
    rf_db_set_failover_timeout(db, 0);
    assert_int_equal(rf_db_exec(db, "INSERT INTO ha_keys VALUES ('d')", 0, NULL, NULL, err,
                                sizeof(err)),
                     RF_ERR_RETRY);
    exec_ok(db, "INSERT INTO ha_keys VALUES ('d')");
    assert_string_equal(db_host(db), pg2_dir);
    pg_set_read_only(pg_dir, 0);
    rf_db_destroy(db);
}

/* With a failover timeout, connecting is retried until it lapses, then the error names the
 * hosts tried and never the password; a DSN whose every host is read-only is refused. */
static void test_failover_timeout_names_hosts(void **state)
{
    struct timespec t0, t1;
    char err[768];
    rf_db_t *db;
    long ms;

    (void)state;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    db = rf_db_open("host=/tmp/rf-no-such-a,/tmp/rf-no-such-b port=5432,5433 user=relfleet"
                    " password=sekret-pw dbname=postgres",
                    700, err, sizeof(err));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_null(db);
    if (!strstr(err, "cannot reach a writable postgresql at /tmp/rf-no-such-a:5432, "
                     "/tmp/rf-no-such-b:5433 after 1 s: "))
        fail_msg("unexpected error: %s", err);
    assert_null(strstr(err, "sekret"));
    assert_true(ms >= 600);

    pg_set_read_only(pg_dir, 1);
    db = rf_db_open(pg_dsn, 300, err, sizeof(err));
    pg_set_read_only(pg_dir, 0);
    assert_null(db);
    if (!strstr(err, "read-only"))
        fail_msg("the error does not say read-only: %s", err);
}

static int terminator_pid = -1;

/* Forks a process that ends server process pid once it is sleeping in pg_sleep (a
 * connection lost while a statement runs). */
static pid_t terminate_when_sleeping(int pid)
{
    pid_t child = fork();

    if (child == 0) {
        struct timespec pause = {0, 5 * 1000000L};
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND wait_event = 'PgSleep'",
                 pid);
        for (int i = 0; i < 2000 && pg_value(sql) == 0; i++)
            nanosleep(&pause, NULL);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_terminate_backend(%d)", pid);
        _exit(pg_value(sql) == 1 ? 0 : 1);
    }
    return child;
}

/* Lost while it ran: a read is repeated on a new connection, a write (which may have
 * committed) is not: RF_ERR_RETRY goes back to the caller. */
static void test_lost_read_repeated_write_not(void **state)
{
    rf_db_t *db = db_open();
    rf_err_t result;
    char err[512];
    int status;

    (void)state;
    rf_db_set_failover_timeout(db, 5000);
    exec_ok(db, "CREATE TABLE IF NOT EXISTS ha_writes (n int)");
    terminator_pid = terminate_when_sleeping(PQbackendPID(rf_db_conn(db)));
    assert_int_equal(run1(db, "SELECT 7 FROM pg_sleep(0.5)", NULL, &result), 7);
    waitpid(terminator_pid, &status, 0);
    assert_int_equal(WEXITSTATUS(status), 0);

    terminator_pid = terminate_when_sleeping(PQbackendPID(rf_db_conn(db)));
    result = rf_db_exec(db, "INSERT INTO ha_writes SELECT 1 FROM pg_sleep(0.5)", 0, NULL, NULL,
                        err, sizeof(err));
    waitpid(terminator_pid, &status, 0);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(result, RF_ERR_RETRY);
    if (!strstr(err, "it may have committed"))
        fail_msg("the error does not say the outcome is unknown: %s", err);
    assert_int_equal(pg_value("SELECT count(*) FROM ha_writes"), 0);
    rf_db_destroy(db);
}

static long ms_since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static int sock_opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);

    if (getsockopt(fd, level, name, &v, &len) != 0)
        fail_msg("getsockopt %d/%d failed", level, name);
    return v;
}

static const char *conn_option(PGconn *c, const char *key)
{
    static char value[64];
    PQconninfoOption *opts = PQconninfo(c);

    value[0] = '\0';
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0 && o->val)
            snprintf(value, sizeof(value), "%s", o->val);
    PQconninfoFree(opts);
    return value;
}

/* Every connection carries timeouts and keepalives on its TCP socket (before, none: a
 * vanished primary held a statement for TCP's ~15 minutes of retransmits); the DSN's own
 * values win, and so does PGCONNECT_TIMEOUT. */
static void test_connections_have_timeouts_and_keepalives(void **state)
{
    static const struct {
        const char *extra, *env_timeout;
        int keepalive, idle, interval, count, user_timeout;
        const char *connect_timeout;
    } cases[] = {
        {"", NULL, 1, 5, 2, 3, 10000, "5"},
        {" tcp_user_timeout=7000 keepalives_idle=30 connect_timeout=9", NULL, 1, 30, 2, 3, 7000,
         "9"},
        {" keepalives=0", NULL, 0, -1, -1, -1, 0, "5"}, /* libpq: no tcp_user_timeout either */
        {"", "11", 1, 5, 2, 3, 10000, "11"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char dsn[256];
        PGconn *c;
        int fd;

        snprintf(dsn, sizeof(dsn), "host=%s port=5432 user=relfleet dbname=postgres%s",
                 pg_tcp_addr, cases[i].extra);
        if (cases[i].env_timeout)
            setenv("PGCONNECT_TIMEOUT", cases[i].env_timeout, 1);
        c = rf_db_connect_dsn(dsn, NULL, NULL);
        unsetenv("PGCONNECT_TIMEOUT");
        if (PQstatus(c) != CONNECTION_OK)
            fail_msg("case %zu: %s", i, PQerrorMessage(c));
        fd = PQsocket(c);
        assert_int_equal(sock_opt(fd, SOL_SOCKET, SO_KEEPALIVE) != 0, cases[i].keepalive);
        if (cases[i].keepalive) {
            assert_int_equal(sock_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE), cases[i].idle);
            assert_int_equal(sock_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL), cases[i].interval);
            assert_int_equal(sock_opt(fd, IPPROTO_TCP, TCP_KEEPCNT), cases[i].count);
        }
        assert_int_equal(sock_opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), cases[i].user_timeout);
        assert_string_equal(conn_option(c, "connect_timeout"), cases[i].connect_timeout);
        PQfinish(c);
    }
}

/* A dark host listed first in a multi-host DSN (it accepts no connection: a listening socket
 * whose backlog is full, so that a connect stays in SYN-SENT as to a host powered off) costs
 * the connect_timeout, then the second host is used; before, the OS gave up after ~2 min. */
static void test_dark_first_host_is_passed_within_connect_timeout(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);
    int dark = socket(AF_INET, SOCK_STREAM, 0), fill[4];
    char dsn[256], err[512];
    struct timespec t0;
    rf_db_t *db;
    long ms;

    (void)state;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(dark, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(dark, 0), 0);
    assert_int_equal(getsockname(dark, (struct sockaddr *)&a, &alen), 0);
    for (int i = 0; i < 4; i++) { /* the backlog full: later SYNs are dropped */
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void)connect(fill[i], (struct sockaddr *)&a, sizeof(a));
    }
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1,%s port=%d,5432 user=relfleet dbname=postgres",
             pg_dir, ntohs(a.sin_port));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    db = rf_db_new(dsn, err, sizeof(err));
    ms = ms_since(&t0);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(dark);
    if (!db)
        fail_msg("rf_db_new: %s", err);
    assert_string_equal(db_host(db), pg_dir);
    if (ms > 15000)
        fail_msg("the dark host held the connection for %ld ms (connect_timeout 5 s)", ms);
    rf_db_destroy(db);
}

/* A statement whose server stops answering fails as RF_ERR_RETRY within tcp_user_timeout
 * (10 s) instead of hanging. Its backend is stopped (SIGSTOP); on loopback the kernel still
 * acknowledges what arrives until the backend's receive buffer is full, so the statement
 * carries more than the buffers hold (80 MB), and its data stays unacknowledged as to a
 * server that vanished. Unprepared: a Parse alone is small enough to be acknowledged. A
 * watchdog resumes the backend after 60 s (the statement then succeeds: the test fails). */
static void test_statement_to_a_silent_server_fails_as_retry(void **state)
{
    const size_t big = 80u << 20;
    char dsn[256], err[512], *param = malloc(big + 1);
    const char *params[1] = {param};
    struct timespec t0;
    pid_t backend, watchdog;
    rf_err_t result;
    rf_db_t *db;
    long ms;

    (void)state;
    assert_non_null(param);
    memset(param, 'x', big);
    param[big] = '\0';
    snprintf(dsn, sizeof(dsn), "host=%s port=5432 user=relfleet dbname=postgres", pg_tcp_addr);
    db = rf_db_new(dsn, err, sizeof(err));
    if (!db)
        fail_msg("rf_db_new: %s", err);
    rf_db_set_prepared(db, 0);
    exec_ok(db, "SELECT 1");
    backend = PQbackendPID(rf_db_conn(db));
    assert_int_equal(kill(backend, SIGSTOP), 0);
    watchdog = fork();
    if (watchdog == 0) {
        struct timespec limit = {60, 0};
        nanosleep(&limit, NULL);
        kill(backend, SIGCONT);
        _exit(0);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    result = rf_db_exec(db, "SELECT length($1)", 1, params, NULL, err, sizeof(err));
    ms = ms_since(&t0);
    kill(backend, SIGCONT);
    kill(watchdog, SIGKILL);
    waitpid(watchdog, NULL, 0);
    free(param);
    rf_db_destroy(db);
    if (result != RF_ERR_RETRY)
        fail_msg("result %d after %ld ms: %s", result, ms, err);
    if (ms > 45000)
        fail_msg("the silent server held the statement for %ld ms", ms);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepared_by_text),
        cmocka_unit_test(test_prepared_off),
        cmocka_unit_test(test_prepared_bound),
        cmocka_unit_test(test_prepared_reconnect),
        cmocka_unit_test(test_prepared_aborted_transaction),
        cmocka_unit_test(test_prepared_ddl),
        cmocka_unit_test(test_prepared_discarded),
        cmocka_unit_test(test_migrate),
        cmocka_unit_test(test_read_only_is_retry),
        cmocka_unit_test(test_multi_host_follows_writable),
        cmocka_unit_test(test_failover_timeout_names_hosts),
        cmocka_unit_test(test_lost_read_repeated_write_not),
        cmocka_unit_test(test_connections_have_timeouts_and_keepalives),
        cmocka_unit_test(test_dark_first_host_is_passed_within_connect_timeout),
        cmocka_unit_test(test_statement_to_a_silent_server_fails_as_retry),
    };
    return cmocka_run_group_tests(tests, pg_start, pg_stop);
}
