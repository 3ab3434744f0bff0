/* rf_db against a PostgreSQL server of its own: prepared statements, reconnects, migrations. */
#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rf_db.h"

static char pg_dir[64];
static char pg_dsn[256];
static pid_t pg_pid;

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

static int pg_start(void **state)
{
    char initdb[256], postgres[256], data[128], port[16], sock[128];
    struct timespec pause = {0, 20 * 1000000L};
    int status = -1;
    pid_t pid;

    (void)state;
    snprintf(pg_dir, sizeof(pg_dir), "/tmp/rf-test-db-XXXXXX");
    if (!mkdtemp(pg_dir))
        fail_msg("mkdtemp failed");
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("relfleet");
        if (!pw)
            fail_msg("user relfleet is missing: run ops/bootstrap");
        if (chown(pg_dir, pw->pw_uid, pw->pw_gid) != 0)
            fail_msg("cannot chown %s", pg_dir);
    }
    snprintf(data, sizeof(data), "%s/data", pg_dir);
    pg_program("initdb", initdb, sizeof(initdb));
    pg_program("postgres", postgres, sizeof(postgres));
    pid = pg_spawn((const char *const[]){initdb, "-D", data, "-U", "relfleet", "-A", "trust",
                                   "--no-sync", "-E", "UTF8", "--no-locale", NULL});
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("initdb failed (status %d)", status);
    /* A unix socket only, in the folder: no port is shared with anything else. */
    snprintf(port, sizeof(port), "%d", 5432);
    snprintf(sock, sizeof(sock), "unix_socket_directories=%s", pg_dir);
    pg_pid = pg_spawn((const char *const[]){postgres, "-D", data, "-p", port, "-c", sock, "-c",
                                      "listen_addresses=", "-c", "fsync=off", "-c",
                                      "max_connections=20", NULL});
    snprintf(pg_dsn, sizeof(pg_dsn), "host=%s port=%s user=relfleet dbname=postgres", pg_dir,
             port);
    for (int i = 0; i < 3000; i++) { /* 60 s: a loaded machine starts it slowly */
        if (PQping(pg_dsn) == PQPING_OK)
            return 0;
        if (waitpid(pg_pid, &status, WNOHANG) == pg_pid)
            fail_msg("postgres exited (status %d)", status);
        nanosleep(&pause, NULL);
    }
    fail_msg("postgres did not start");
    return -1;
}

static int pg_stop(void **state)
{
    (void)state;
    if (pg_pid > 0) {
        kill(pg_pid, SIGINT); /* fast shutdown */
        waitpid(pg_pid, NULL, 0);
        pg_pid = 0;
    }
    pg_rmtree(pg_dir);
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

/* Ends db's server process from another connection, as a restart or a proxy would. */
static void kill_backend(rf_db_t *db)
{
    char sql[96];

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_terminate_backend(%d)",
             PQbackendPID(rf_db_conn(db)));
    assert_int_equal(pg_value(sql), 1);
}

/* A lost connection takes its prepared statements along: after the reconnect they are
 * prepared again, also inside a transaction, where a failure could not be retried. */
static void test_prepared_reconnect(void **state)
{
    rf_db_t *db = db_open();
    rf_err_t result;
    char err[512];

    (void)state;
    assert_int_equal(run1(db, "SELECT $1::int * 3", "3", &result), 9);
    kill_backend(db);
    run1(db, "SELECT $1::int * 3", "3", &result);
    assert_int_equal(result, RF_ERR_RETRY);
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
    };
    return cmocka_run_group_tests(tests, pg_start, pg_stop);
}
