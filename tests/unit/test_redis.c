/* rf_redis against real servers: URLs, ACL and password AUTH, TLS, Sentinel failovers. */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "rf_config.h"
#include "rf_lock.h"
#include "rf_redis.h"
#include "unit_ports.h"

#define SERVERS_MAX 8

static char tmpdir[256];
static struct {
    pid_t pid;
    int port;
} servers[SERVERS_MAX];
static int nservers;

static void nap_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static int port_open(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Starts redis-server or redis-sentinel (prog) on a config file written from conf into
 * the temp dir; waits until port accepts connections. */
static void server_start(const char *prog, int port, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    FILE *f;
    pid_t pid;

    snprintf(path, sizeof(path), "%s/%s-%d.conf", tmpdir, prog, port);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "bind 127.0.0.1\ndir %s\nsave \"\"\nappendonly no\nloglevel warning\n"
            "logfile %s/%s-%d.log\n",
            tmpdir, tmpdir, prog, port);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
    pid = fork();
    if (pid == 0) {
        execlp(prog, prog, path, (char *)NULL);
        _exit(127);
    }
    assert_true(nservers < SERVERS_MAX);
    servers[nservers].pid = pid;
    servers[nservers].port = port;
    nservers++;
    for (int i = 0; i < 500 && !port_open(port); i++)
        nap_ms(10);
    assert_true(port_open(port));
}

static void server_stop(int port, int sig)
{
    for (int i = 0; i < nservers; i++) {
        if (servers[i].port == port && servers[i].pid > 0) {
            kill(servers[i].pid, sig);
            waitpid(servers[i].pid, NULL, 0);
            servers[i].pid = 0;
        }
    }
}

static void servers_stop_all(void)
{
    for (int i = 0; i < nservers; i++)
        server_stop(servers[i].port, SIGTERM);
    nservers = 0;
}

static redisReply *admin(int port, const char *fmt, ...)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r = NULL;
    va_list ap;

    if (c && !c->err) {
        /* the test servers' passwords: m-pw (master, replica), s-pw (Sentinels) */
        r = redisCommand(c, "AUTH m-pw");
        if (r && r->type == REDIS_REPLY_ERROR) {
            freeReplyObject(r);
            r = redisCommand(c, "AUTH s-pw");
        }
        freeReplyObject(r);
        va_start(ap, fmt);
        r = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    redisFree(c);
    return r;
}

static void conf_with(rf_config_t *conf, const char *url, ...)
{
    char err[256];
    va_list ap;
    const char *k;

    rf_config_init(conf);
    assert_int_equal(rf_config_set(conf, "redis_url", url, err, sizeof(err)), RF_OK);
    va_start(ap, url);
    while ((k = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        assert_int_equal(rf_config_set(conf, k, v, err, sizeof(err)), RF_OK);
    }
    va_end(ap);
}

/* rf_lock_new with the settings given (name, value, ..., NULL); *err its code. */
static rf_lock_t *lock_with(rf_err_t *err, char *errstr, size_t size, const char *url, ...)
{
    rf_config_t conf;
    va_list ap;
    const char *k;
    char e[256];
    rf_lock_t *l;

    rf_config_init(&conf);
    assert_int_equal(rf_config_set(&conf, "redis_url", url, e, sizeof(e)), RF_OK);
    va_start(ap, url);
    while ((k = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        assert_int_equal(rf_config_set(&conf, k, v, e, sizeof(e)), RF_OK);
    }
    va_end(ap);
    *err = RF_OK;
    l = rf_lock_new(&conf, err, errstr, size);
    rf_config_release(&conf);
    return l;
}

static int lock_works(rf_lock_t *l, const char *service)
{
    char err[256];
    int acquired = 0;
    int64_t fence = 0;

    return rf_lock_acquire(l, "t", service, "R1", 10000, 0, &acquired, &fence, NULL, err,
                           sizeof(err)) == RF_OK &&
           acquired && fence > 0;
}

/* l (made with message err) takes a lock; then it is destroyed. */
static void assert_lock_works(rf_lock_t *l, const char *err, const char *service)
{
    if (!l)
        fail_msg("%s", err);
    assert_true(lock_works(l, service));
    rf_lock_destroy(l);
}

/* getaddrinfo as libc's, except that the name two-addresses.test resolves to ::1 and then
 * 127.0.0.1 (as localhost does on many hosts), where the test servers listen on 127.0.0.1
 * only: no name in this machine's /etc/hosts has several addresses. rf_redis (linked in
 * statically) calls this one. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    struct addrinfo *v6 = NULL, *v4 = NULL, *last;
    int rc;

    *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    if (!node || strcmp(node, "two-addresses.test") != 0)
        return real(node, service, hints, res);
    rc = real("::1", service, hints, &v6);
    if (rc != 0)
        return rc;
    rc = real("127.0.0.1", service, hints, &v4);
    if (rc != 0) {
        freeaddrinfo(v6);
        return rc;
    }
    for (last = v6; last->ai_next; last = last->ai_next)
        ;
    last->ai_next = v4;
    *res = v6;
    return 0;
}

/* A host name whose first address refuses (::1, the server is on 127.0.0.1 only): the
 * next one is tried, within the connect deadline. */
static void test_each_address_of_a_name_is_tried(void **state)
{
    int port = free_port();
    char url[128], detail[512];
    rf_config_t conf;
    rf_redis_t *r;

    (void)state;
    server_start("redis-server", port, "port %d\n", port);
    snprintf(url, sizeof(url), "redis://two-addresses.test:%d/0", port);
    conf_with(&conf, url, NULL);
    r = rf_redis_new(&conf, detail, sizeof(detail));
    rf_config_release(&conf);
    assert_non_null(r);
    if (rf_redis_check(r, detail, sizeof(detail)) != RF_OK)
        fail_msg("%s", detail);
    rf_redis_destroy(r);
    server_stop(port, SIGTERM);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/relfleet-test-redis-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown_dir(void **state)
{
    char cmd[300];

    (void)state;
    servers_stop_all();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- URLs ---- */

static void test_bad_urls_are_permanent_and_clear(void **state)
{
    static const struct {
        const char *url;
        const char *expect; /* in the message */
    } cases[] = {
        {"http://127.0.0.1:6379", "scheme 'http' is not redis://"},
        {"redis//127.0.0.1", "scheme"},
        {"redis://127.0.0.1:99999/0", "port '99999' of host '127.0.0.1'"},
        {"redis://127.0.0.1:abc", "port 'abc'"},
        {"redis://127.0.0.1:6379/x1", "database 'x1' is not a number"},
        {"redis://a:1,b:2/0", "several hosts need redis-sentinel://"},
        {"redis://127.0.0.1:6379/0#mymaster", "needs redis-sentinel://"},
        {"redis-sentinel://127.0.0.1:26379/0", "needs the master name"},
        {"rediss-sentinel://127.0.0.1:26379#", "needs the master name"},
        {"redis://hunter2sekrit@127.0.0.1:6379", "user:password or :password"},
        {"redis://alice:@127.0.0.1:6379", "user 'alice' has no password"},
        {"redis://:hunter2sekrit@/0", "no host"},
        {"redis-sentinel://:hunter2sekrit@a:1,,b:2#m", "a host is empty"},
        {"redis://127.0.0.1:6379/0?timeout=1", "query parameters"},
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_config_t conf;
        rf_redis_t *r;
        rf_err_t code;
        rf_lock_t *l;

        conf_with(&conf, cases[i].url, NULL);
        r = rf_redis_new(&conf, err, sizeof(err));
        rf_config_release(&conf);
        if (r || !strstr(err, cases[i].expect) || strstr(err, "hunter2"))
            fail_msg("url %s: %s", cases[i].url, r ? "accepted" : err);
        l = lock_with(&code, err, sizeof(err), cases[i].url, NULL);
        assert_null(l);
        assert_int_equal(code, RF_ERR_PERM);
    }
}

/* A '/', '#' or '?' left unencoded in the password ends the host part early, so the
 * password's head would be parsed (and quoted) as a host or port: refused, never echoed. */
static void test_an_unencoded_password_is_not_quoted_in_errors(void **state)
{
    static const char *const urls[] = {
        "redis://alice:hunter2/x@127.0.0.1:6379",
        "redis://alice:hunter2#x@127.0.0.1:6379",
        "redis-sentinel://alice:hunter2/x@127.0.0.1:26379#m",
        "redis://:hunter2/x@127.0.0.1:6379",
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        rf_config_t conf;
        rf_redis_t *r;

        conf_with(&conf, urls[i], NULL);
        r = rf_redis_new(&conf, err, sizeof(err));
        rf_config_release(&conf);
        if (r || strstr(err, "hunter2") || !strstr(err, "percent-encoded"))
            fail_msg("url %zu: %s", i, r ? "accepted" : err);
    }
}

static void test_tls_settings_with_a_plain_url_are_an_error(void **state)
{
    char err[256];
    rf_config_t conf;
    rf_redis_t *r;

    (void)state;
    conf_with(&conf, "redis://127.0.0.1:6379/0", "redis_tls_ca_file", "/nonexistent/ca.pem", NULL);
    r = rf_redis_new(&conf, err, sizeof(err));
    rf_config_release(&conf);
    assert_null(r);
    assert_non_null(strstr(err, "not rediss://"));
}

/* ---- AUTH ---- */

/* Per server: the credentials that get in, then those refused (permanent, never echoed). */
static void test_acl_user_and_password_auth(void **state)
{
    static const struct {
        const char *server;
        const char *good; /* user:password@ part of the URL */
        const char *bad[3];
        const char *refused; /* in the message of the first bad one */
    } cases[] = {
        {"user default off\nuser alice on >s3cr3t-pw ~* &* +@all\n",
         "alice:s3cr3t-pw@",
         {"alice:wrong-pw@", "", ":wrong-pw@"},
         "refused authentication as 'alice'"},
        {"requirepass only-pw\n",
         ":only-pw@",
         {":wrong-pw@", "", "alice:wrong-pw@"},
         "refused authentication"},
    };
    char url[128], err[256];
    rf_err_t code;
    rf_lock_t *l;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int port = free_port();
        server_start("redis-server", port, "port %d\n%s", port, cases[i].server);
        snprintf(url, sizeof(url), "redis://%s127.0.0.1:%d/2", cases[i].good, port);
        l = lock_with(&code, err, sizeof(err), url, NULL);
        assert_lock_works(l, err, "auth");
        for (int b = 0; b < 3; b++) {
            for (int db = 0; db < 2; db++) { /* with a SELECT, and with none */
                snprintf(url, sizeof(url), "redis://%s127.0.0.1:%d/%d", cases[i].bad[b], port,
                         db * 2);
                l = lock_with(&code, err, sizeof(err), url, NULL);
                if (l || code != RF_ERR_PERM || strstr(err, "wrong-pw"))
                    fail_msg("%s: %s %s", url, rf_err_name(code), err);
                if (b == 0 && !strstr(err, cases[i].refused))
                    fail_msg("%s: %s", url, err);
            }
        }
        server_stop(port, SIGTERM);
    }
}

/* ---- TLS ---- */

static void run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("failed: %s", cmd);
}

/* A CA (name), and a certificate it signs (leaf) for 127.0.0.1 and localhost. */
static void make_ca(const char *name)
{
    run("cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=%s "
        "-keyout %s.key -out %s.pem 2>/dev/null",
        tmpdir, name, name, name);
}

static void make_leaf(const char *ca, const char *leaf)
{
    run("cd '%s' && openssl req -newkey rsa:2048 -nodes -subj /CN=%s -keyout %s.key -out "
        "%s.csr 2>/dev/null && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > %s.ext "
        "&& openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -days 2 "
        "-extfile %s.ext -out %s.pem 2>/dev/null",
        tmpdir, leaf, leaf, leaf, leaf, leaf, ca, ca, leaf, leaf);
}

static void test_tls(void **state)
{
    int port = free_port(), port12;
    char url[128], err[512], ca[300], other_ca[300], cert[300], key[300], stranger[300],
        stranger_key[300];
    rf_err_t code;
    rf_lock_t *l;

    (void)state;
    make_ca("ca");
    make_ca("otherca");
    make_leaf("ca", "server");
    make_leaf("ca", "client");
    snprintf(ca, sizeof(ca), "%s/ca.pem", tmpdir);
    snprintf(other_ca, sizeof(other_ca), "%s/otherca.pem", tmpdir);
    snprintf(cert, sizeof(cert), "%s/client.pem", tmpdir);
    snprintf(key, sizeof(key), "%s/client.key", tmpdir);
    snprintf(stranger, sizeof(stranger), "%s/stranger.pem", tmpdir);
    snprintf(stranger_key, sizeof(stranger_key), "%s/stranger.key", tmpdir);
    server_start("redis-server", port,
                 "port 0\ntls-port %d\ntls-cert-file %s/server.pem\ntls-key-file %s/server.key\n"
                 "tls-ca-cert-file %s/ca.pem\ntls-auth-clients yes\nrequirepass tls-pw\n",
                 port, tmpdir, tmpdir, tmpdir);
    snprintf(url, sizeof(url), "rediss://:tls-pw@127.0.0.1:%d/0", port);
    /* the right CA, a client certificate: works, the name (an IP) verified */
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", ca, "redis_tls_cert_file",
                  cert, "redis_tls_key_file", key, NULL);
    assert_lock_works(l, err, "tls");
    /* SNI and verified name: localhost is in the certificate, another name is not */
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", ca, "redis_tls_cert_file",
                  cert, "redis_tls_key_file", key, "redis_tls_server_name", "localhost", NULL);
    if (!l)
        fail_msg("%s", err);
    rf_lock_destroy(l);
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", ca, "redis_tls_cert_file",
                  cert, "redis_tls_key_file", key, "redis_tls_server_name", "db.example", NULL);
    assert_null(l);
    assert_int_equal(code, RF_ERR_PERM);
    assert_non_null(strstr(err, "cannot verify the tls certificate"));
    /* a wrong CA: a clear permanent error */
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", other_ca,
                  "redis_tls_cert_file", cert, "redis_tls_key_file", key, NULL);
    assert_null(l);
    assert_int_equal(code, RF_ERR_PERM);
    if (!strstr(err, "cannot verify the tls certificate of redis at 127.0.0.1"))
        fail_msg("%s", err);
    /* the wrong CA is accepted only when verification is switched off in so many words */
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", other_ca,
                  "redis_tls_cert_file", cert, "redis_tls_key_file", key,
                  "redis_tls_insecure_skip_verify", "true", NULL);
    assert_lock_works(l, err, "tls-skip");
    /* no client certificate: the server refuses it (no fallback), a permanent error that
     * says so (retrying would never get through) */
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", ca, NULL);
    assert_null(l);
    if (code != RF_ERR_PERM || !strstr(err, "client certificate"))
        fail_msg("no client certificate: %s: %s", rf_err_name(code), err);
    /* TLS 1.2 refuses it in the handshake itself with an alert (1.3 sends it after, where
     * a reset can overtake it: the callback's note is what is relied on there) */
    port12 = free_port();
    server_start("redis-server", port12,
                 "port 0\ntls-port %d\ntls-cert-file %s/server.pem\ntls-key-file %s/server.key\n"
                 "tls-ca-cert-file %s/ca.pem\ntls-auth-clients yes\ntls-protocols TLSv1.2\n",
                 port12, tmpdir, tmpdir, tmpdir);
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%d/0", port12);
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", ca, NULL);
    assert_null(l);
    if (code != RF_ERR_PERM || !strstr(err, "client certificate"))
        fail_msg("no client certificate, tls 1.2: %s: %s", rf_err_name(code), err);
    /* a client certificate the server's CA did not sign: the same (the alert, TLS 1.2) */
    make_leaf("otherca", "stranger");
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", ca, "redis_tls_cert_file",
                  stranger, "redis_tls_key_file", stranger_key, NULL);
    assert_null(l);
    if (code != RF_ERR_PERM || !strstr(err, "client certificate"))
        fail_msg("a client certificate of another ca: %s: %s", rf_err_name(code), err);
    server_stop(port12, SIGTERM);
    snprintf(url, sizeof(url), "rediss://:tls-pw@127.0.0.1:%d/0", port);
    /* a plain client on the TLS port never gets through */
    snprintf(url, sizeof(url), "redis://:tls-pw@127.0.0.1:%d/0", port);
    l = lock_with(&code, err, sizeof(err), url, NULL);
    assert_null(l);
    server_stop(port, SIGTERM);
}

/* ---- Sentinel ---- */

static int master_port, replica_port, sentinel_ports[3];
static char sentinel_url[256];

static long long reply_int(redisReply *r)
{
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

/* The master port a Sentinel names (0: none or unreachable). */
static int sentinel_master(int sport)
{
    redisReply *r = admin(sport, "SENTINEL get-master-addr-by-name mymaster");
    int port = 0;

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        port = atoi(r->element[1]->str);
    freeReplyObject(r);
    return port;
}

/* Every Sentinel names port as the master. */
static int sentinels_agree(int port)
{
    for (int i = 0; i < 3; i++)
        if (sentinel_master(sentinel_ports[i]) != port)
            return 0;
    return 1;
}

/* Sentinel s knows the other Sentinels and a replica of the master that is in sync. */
static int sentinel_ready(int sport)
{
    redisReply *r = admin(sport, "SENTINEL replicas mymaster");
    int ok = 0;

    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *fields = r->element[i];
            const char *flags = NULL, *link = NULL;
            for (size_t k = 0; k + 1 < fields->elements; k += 2) {
                if (strcmp(fields->element[k]->str, "flags") == 0)
                    flags = fields->element[k + 1]->str;
                if (strcmp(fields->element[k]->str, "master-link-status") == 0)
                    link = fields->element[k + 1]->str;
            }
            ok |= flags && strcmp(flags, "slave") == 0 && link && strcmp(link, "ok") == 0;
        }
    }
    freeReplyObject(r);
    r = admin(sport, "SENTINEL sentinels mymaster");
    ok = ok && r && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    freeReplyObject(r);
    return ok;
}

/* Polls cond(arg) every 50 ms for up to limit_ms. */
static int wait_until(int (*cond)(int), int arg, long limit_ms)
{
    for (long t = 0; t < limit_ms; t += 50) {
        if (cond(arg))
            return 1;
        nap_ms(50);
    }
    return cond(arg);
}

static int all_sentinels_ready(int unused)
{
    (void)unused;
    for (int i = 0; i < 3; i++)
        if (!sentinel_ready(sentinel_ports[i]))
            return 0;
    return 1;
}

static int role_is_replica(int port)
{
    redisReply *r = admin(port, "ROLE");
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             strcmp(r->element[0]->str, "slave") == 0;
    freeReplyObject(r);
    return ok;
}

static int setup_sentinel(void **state)
{
    setup_dir(state);
    master_port = free_port();
    replica_port = free_port();
    server_start("redis-server", master_port, "port %d\nmasterauth m-pw\nrequirepass m-pw\n",
                 master_port);
    server_start("redis-server", replica_port,
                 "port %d\nmasterauth m-pw\nrequirepass m-pw\nreplicaof 127.0.0.1 %d\n",
                 replica_port, master_port);
    for (int i = 0; i < 3; i++) {
        sentinel_ports[i] = free_port();
        server_start("redis-sentinel", sentinel_ports[i],
                     "port %d\nsentinel monitor mymaster 127.0.0.1 %d 2\n"
                     "sentinel auth-pass mymaster m-pw\n"
                     "sentinel down-after-milliseconds mymaster 1000\n"
                     "sentinel failover-timeout mymaster 3000\n"
                     "sentinel parallel-syncs mymaster 1\nrequirepass s-pw\n",
                     sentinel_ports[i], master_port);
    }
    /* the master and the replica take m-pw (the URL's), the Sentinels s-pw */
    snprintf(sentinel_url, sizeof(sentinel_url),
             "redis-sentinel://:m-pw@127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/0#mymaster",
             sentinel_ports[0], sentinel_ports[1], sentinel_ports[2]);
    return 0;
}

/* The lock the Sentinels' master serves, or fails. */
static rf_lock_t *sentinel_lock(void)
{
    char err[512];
    rf_err_t code;
    rf_lock_t *l =
        lock_with(&code, err, sizeof(err), sentinel_url, "redis_sentinel_password", "s-pw", NULL);

    if (!l)
        fail_msg("%s", err);
    return l;
}

/* rf_redis_check with conf (released here) reaches the master on port. */
static void assert_reaches(rf_config_t *conf, int port)
{
    char detail[512], expect[64];
    rf_redis_t *r = rf_redis_new(conf, detail, sizeof(detail));

    rf_config_release(conf);
    if (!r || rf_redis_check(r, detail, sizeof(detail)) != RF_OK)
        fail_msg("%s", detail);
    snprintf(expect, sizeof(expect), " at 127.0.0.1:%d ", port);
    if (!strstr(detail, expect))
        fail_msg("%s", detail);
    rf_redis_destroy(r);
}

static void test_sentinel_finds_the_master(void **state)
{
    rf_config_t conf;
    rf_lock_t *l;

    (void)state;
    conf_with(&conf, sentinel_url, "redis_sentinel_password", "s-pw", NULL);
    assert_reaches(&conf, master_port);
    l = sentinel_lock();
    assert_true(lock_works(l, "sentinel"));
    rf_lock_destroy(l);
    if (!wait_until(all_sentinels_ready, 0, 20000))
        fail_msg("the sentinels did not see the replica in sync and each other");
}

/* SENTINEL FAILOVER, until every Sentinel names the replica. */
static void sentinel_failover(void)
{
    redisReply *r = admin(sentinel_ports[0], "SENTINEL FAILOVER mymaster");

    assert_true(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    if (!wait_until(sentinels_agree, replica_port, 20000))
        fail_msg("the sentinels did not switch to %d", replica_port);
}

/* The old master becomes the new one's replica (REPLICAOF); the ports swap roles. */
static void old_master_follows(void)
{
    int old = master_port;

    freeReplyObject(admin(old, "REPLICAOF 127.0.0.1 %d", replica_port));
    assert_true(wait_until(role_is_replica, old, 10000));
    master_port = replica_port;
    replica_port = old;
}

static void sentinels_settle(void)
{
    if (!wait_until(all_sentinels_ready, 0, 30000))
        fail_msg("the sentinels did not see the new replica in sync");
}

/* A switch of master (SENTINEL FAILOVER) while the old master still takes writes: the
 * +switch-master event sends the next call to the new master, not the old one. */
static void test_switch_master_event_moves_the_next_call(void **state)
{
    char err[256];
    int acquired = 0;
    int64_t fence = 0;
    rf_lock_t *l = sentinel_lock();
    redisReply *r;

    (void)state;
    assert_true(lock_works(l, "event-before"));
    sentinel_failover();
    assert_int_equal(
        rf_lock_acquire(l, "t", "event", "E1", 60000, 0, &acquired, &fence, NULL, err, sizeof(err)),
        RF_OK);
    assert_int_equal(acquired, 1);
    r = admin(replica_port, "GET relfleet:lock:t/event");
    if (!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, "E1") != 0)
        fail_msg("the lock was not written to the new master %d", replica_port);
    freeReplyObject(r);
    /* the old master follows the new one (the Sentinels would, later) */
    old_master_follows();
    rf_lock_destroy(l);
    sentinels_settle();
}

/* The client's master is made a replica (REPLICAOF) while the client hears no
 * +switch-master (its subscription was killed first): the READONLY reply sends it to the
 * Sentinels, and the same call succeeds on the real master. */
static void test_readonly_finds_the_master_again(void **state)
{
    char err[256];
    int held = 0, acquired = 0;
    int64_t fence = 0;
    rf_lock_t *l = sentinel_lock();

    (void)state;
    assert_int_equal(
        rf_lock_acquire(l, "t", "ro", "R1", 60000, 0, &acquired, &fence, NULL, err, sizeof(err)),
        RF_OK);
    for (int i = 0; i < 3; i++)
        freeReplyObject(admin(sentinel_ports[i], "CLIENT KILL TYPE pubsub"));
    sentinel_failover();
    old_master_follows();
    /* the client still holds its connection to the old master, now a replica */
    assert_int_equal(rf_lock_renew(l, "t", "ro", "R1", 60000, &held, err, sizeof(err)), RF_OK);
    assert_int_equal(held, 1);
    rf_lock_destroy(l);
    sentinels_settle();
}

/* SIGKILL of the master: calls are retriable until the Sentinels elected the replica, then
 * the next lock call succeeds on the new master. */
static void test_failover_after_the_master_is_killed(void **state)
{
    char err[512];
    int acquired = 0, held = 0;
    int64_t f1 = 0, f2 = 0;
    rf_lock_t *l = sentinel_lock();
    rf_lock_item_t items[2] = {{"t", "kill-a", "A", 0}, {"t", "kill-b", "B", 0}};
    int old = master_port;

    (void)state;
    assert_int_equal(
        rf_lock_acquire(l, "t", "kill-a", "A", 60000, 0, &acquired, &f1, NULL, err, sizeof(err)),
        RF_OK);
    assert_int_equal(acquired, 1);
    server_stop(old, SIGKILL);
    /* before the switch: retriable, never permanent */
    assert_int_equal(rf_lock_renew(l, "t", "kill-a", "A", 60000, &held, err, sizeof(err)),
                     RF_ERR_RETRY);
    if (!wait_until(sentinels_agree, replica_port, 30000))
        fail_msg("the sentinels did not elect %d", replica_port);
    master_port = replica_port;
    /* the next calls run on the new master (the floor keeps the token growing even if
     * the replica had missed the last writes) */
    assert_int_equal(
        rf_lock_acquire(l, "t", "kill-a", "A", 60000, f1, &acquired, &f2, NULL, err, sizeof(err)),
        RF_OK);
    assert_int_equal(acquired, 1);
    assert_true(f2 >= f1);
    assert_int_equal(rf_lock_renew_many(l, items, 2, 60000, err, sizeof(err)), RF_OK);
    assert_int_equal(items[0].held, 1);
    assert_int_equal(items[1].held, 1);
    assert_int_equal(reply_int(admin(master_port, "PTTL relfleet:lock:t/kill-b")) == -2, 0);
    rf_lock_destroy(l);
}

static void test_unknown_master_name(void **state)
{
    char url[256], err[512];
    rf_err_t code;

    (void)state;
    snprintf(url, sizeof(url), "redis-sentinel://:m-pw@127.0.0.1:%d,127.0.0.1:%d#nosuch",
             sentinel_ports[0], sentinel_ports[1]);
    assert_null(lock_with(&code, err, sizeof(err), url, "redis_sentinel_password", "s-pw", NULL));
    if (code != RF_ERR_PERM)
        fail_msg("%s: %s", rf_err_name(code), err);
    if (!strstr(err, "unknown redis master 'nosuch'") || strstr(err, "m-pw"))
        fail_msg("%s", err);
}

/* Without redis_sentinel_password the URL's password goes to the Sentinels too (which
 * take another one here): a clear permanent error. */
static void test_sentinel_password(void **state)
{
    char err[512];
    rf_err_t code;

    (void)state;
    assert_null(lock_with(&code, err, sizeof(err), sentinel_url, NULL));
    assert_int_equal(code, RF_ERR_PERM);
    if (!strstr(err, "refused authentication") || strstr(err, "m-pw"))
        fail_msg("%s", err);
}

static void test_unreachable_sentinels(void **state)
{
    char url[256], err[512];
    rf_err_t code;
    int p1 = free_port(), p2 = free_port();

    (void)state;
    snprintf(url, sizeof(url), "redis-sentinel://127.0.0.1:%d,127.0.0.1:%d#mymaster", p1, p2);
    assert_null(lock_with(&code, err, sizeof(err), url, NULL));
    assert_int_equal(code, RF_ERR_RETRY);
    if (!strstr(err, "cannot reach any redis sentinel of master 'mymaster'"))
        fail_msg("%s", err);
}

/* A Sentinel that accepts connections and never answers (frozen, overloaded) costs the
 * subscription's bound (REDIS_SUB_TIMEOUT_MS, 500 ms) when the client subscribes again,
 * not a command's (2 s): a call to a healthy master meanwhile is not stalled for long. */
static void test_resubscribing_past_a_frozen_sentinel_is_bounded(void **state)
{
    char url[256], detail[512];
    int frozen_port = 0;
    int frozen = unit_listen_never_accepting(16, &frozen_port); /* the kernel completes connects */
    rf_config_t conf;
    rf_redis_t *r;
    struct timespec t0, t1;
    long ms;

    (void)state;
    assert_true(frozen >= 0);
    snprintf(url, sizeof(url),
             "redis-sentinel://:m-pw@127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/0#mymaster",
             frozen_port, sentinel_ports[0], sentinel_ports[1]);
    conf_with(&conf, url, "redis_sentinel_password", "s-pw", NULL);
    r = rf_redis_new(&conf, detail, sizeof(detail));
    rf_config_release(&conf);
    assert_non_null(r);
    if (rf_redis_check(r, detail, sizeof(detail)) != RF_OK)
        fail_msg("%s", detail);
    /* the subscription goes; the next call notices, the one after subscribes again */
    for (int i = 0; i < 3; i++)
        freeReplyObject(admin(sentinel_ports[i], "CLIENT KILL TYPE pubsub"));
    nap_ms(200);
    assert_int_equal(rf_redis_check(r, detail, sizeof(detail)), RF_OK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(rf_redis_check(r, detail, sizeof(detail)), RF_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (ms >= 1500)
        fail_msg("a call while subscribing again past a frozen sentinel took %ld ms", ms);
    rf_redis_destroy(r);
    close(frozen);
}

/* The subscription is lost and every Sentinel is then frozen (accepts connections, never
 * answers): subscribing again is tried with a back-off (1 s doubling), not once a second,
 * so over 7 s of calls to the healthy master only a few are stalled by it. */
/* Sentinel sport frozen (SIGSTOP, stop 1) or running again. */
static void sentinel_freeze(int sport, int stop)
{
    for (int i = 0; i < nservers; i++)
        if (servers[i].port == sport && servers[i].pid > 0)
            kill(servers[i].pid, stop ? SIGSTOP : SIGCONT);
}

/* Calls rf_redis_check on r for ms milliseconds at a worker's pace; how many were stalled
 * (took 300 ms or more). */
static int stalled_calls(rf_redis_t *r, long ms)
{
    char detail[512];
    struct timespec t0, t1, start;
    long took, total = 0;
    int stalls = 0;

    clock_gettime(CLOCK_MONOTONIC, &start);
    while (total < ms) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (rf_redis_check(r, detail, sizeof(detail)) != RF_OK)
            fail_msg("a call to the master failed: %s", detail);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        took = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        stalls += took >= 300;
        nap_ms(20); /* a worker's pace of lock calls */
        total = (t1.tv_sec - start.tv_sec) * 1000 + (t1.tv_nsec - start.tv_nsec) / 1000000;
    }
    return stalls;
}

static int sentinel_has_subscriber(int sport)
{
    redisReply *rep = admin(sport, "CLIENT LIST TYPE pubsub");
    int yes = rep && rep->type == REDIS_REPLY_STRING && rep->len > 0;

    freeReplyObject(rep);
    return yes;
}

/* The subscription is lost and every Sentinel is then frozen (accepts connections, never
 * answers): subscribing again is tried with a back-off (1 s doubling), not once a second,
 * so over 7 s of calls to the healthy master only a few are stalled by it. Once the
 * Sentinel answers again and the client subscribed, the back-off starts over at 1 s. */
static void test_resubscribing_to_dead_sentinels_backs_off(void **state)
{
    char url[256], detail[512];
    int sport = free_port(), stalls;
    rf_config_t conf;
    rf_redis_t *r;

    (void)state;
    server_start("redis-sentinel", sport,
                 "port %d\nsentinel monitor mymaster 127.0.0.1 %d 2\n"
                 "sentinel auth-pass mymaster m-pw\n"
                 "sentinel down-after-milliseconds mymaster 60000\nrequirepass s-pw\n",
                 sport, master_port);
    snprintf(url, sizeof(url), "redis-sentinel://:m-pw@127.0.0.1:%d/0#mymaster", sport);
    conf_with(&conf, url, "redis_sentinel_password", "s-pw", NULL);
    r = rf_redis_new(&conf, detail, sizeof(detail));
    rf_config_release(&conf);
    assert_non_null(r);
    if (rf_redis_check(r, detail, sizeof(detail)) != RF_OK)
        fail_msg("%s", detail);
    freeReplyObject(admin(sport, "CLIENT KILL TYPE pubsub"));
    sentinel_freeze(sport, 1);
    stalls = stalled_calls(r, 7000);
    /* once a second: about 7; with the back-off: at 0, ~1.5 and ~4 s */
    if (stalls > 4)
        fail_msg("%d calls in 7 s were stalled subscribing again to a frozen sentinel", stalls);
    /* the Sentinel back: the client subscribes again within the back-off (4 s now) */
    sentinel_freeze(sport, 0);
    for (int i = 0; i < 300 && !sentinel_has_subscriber(sport); i++) {
        assert_int_equal(rf_redis_check(r, detail, sizeof(detail)), RF_OK);
        nap_ms(20);
    }
    assert_true(sentinel_has_subscriber(sport));
    /* lost and frozen again: tried at once and 1 s after (8 s after without the reset) */
    freeReplyObject(admin(sport, "CLIENT KILL TYPE pubsub"));
    sentinel_freeze(sport, 1);
    stalls = stalled_calls(r, 3000);
    sentinel_freeze(sport, 0);
    server_stop(sport, SIGTERM);
    rf_redis_destroy(r);
    if (stalls < 2)
        fail_msg("after a subscription the back-off did not start over: %d stalled calls in 3 s",
                 stalls);
}

/* Every Sentinel names the same master, which accepts connections and never answers (a
 * host gone dark before the Sentinels noticed): it is tried once per search, not once per
 * Sentinel, so a call is stalled by one connect timeout (2 s), not one per Sentinel. */
static void test_a_dead_master_is_tried_once_per_search(void **state)
{
    char url[256], detail[1024];
    int frozen_port = 0, sports[2];
    int frozen = unit_listen_never_accepting(128, &frozen_port);
    rf_config_t conf;
    rf_redis_t *r;
    struct timespec t0, t1;
    rf_err_t result;
    long ms;

    (void)state;
    assert_true(frozen >= 0);
    for (int i = 0; i < 2; i++) {
        sports[i] = free_port();
        server_start("redis-sentinel", sports[i],
                     "port %d\nsentinel monitor frozen 127.0.0.1 %d 2\n"
                     "sentinel down-after-milliseconds frozen 60000\n",
                     sports[i], frozen_port);
    }
    snprintf(url, sizeof(url), "redis-sentinel://127.0.0.1:%d,127.0.0.1:%d#frozen", sports[0],
             sports[1]);
    conf_with(&conf, url, NULL);
    r = rf_redis_new(&conf, detail, sizeof(detail));
    rf_config_release(&conf);
    assert_non_null(r);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    result = rf_redis_check(r, detail, sizeof(detail));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (result != RF_ERR_RETRY || ms >= 3500)
        fail_msg("%s after %ld ms: %s", rf_err_name(result), ms, detail);
    rf_redis_destroy(r);
    server_stop(sports[0], SIGTERM);
    server_stop(sports[1], SIGTERM);
    close(frozen);
}

/* ---- Sentinel over TLS ---- */

static int tls_master_port, tls_sentinel_port;

static int setup_tls_sentinel(void **state)
{
    const char *tls = "tls-cert-file %s/server.pem\ntls-key-file %s/server.key\n"
                      "tls-ca-cert-file %s/ca.pem\ntls-auth-clients no\ntls-replication yes\n";
    char tls_conf[1024];

    setup_dir(state);
    make_ca("ca");
    make_ca("otherca");
    make_leaf("ca", "server");
    snprintf(tls_conf, sizeof(tls_conf), tls, tmpdir, tmpdir, tmpdir);
    tls_master_port = free_port();
    tls_sentinel_port = free_port();
    server_start("redis-server", tls_master_port, "port 0\ntls-port %d\n%s", tls_master_port,
                 tls_conf);
    server_start("redis-sentinel", tls_sentinel_port,
                 "port 0\ntls-port %d\n%ssentinel monitor tlsmaster 127.0.0.1 %d 1\n",
                 tls_sentinel_port, tls_conf, tls_master_port);
    return 0;
}

static void test_tls_sentinel(void **state)
{
    char url[128], err[512], ca[300], other_ca[300];
    rf_config_t conf;
    rf_err_t code;
    rf_lock_t *l;

    (void)state;
    snprintf(ca, sizeof(ca), "%s/ca.pem", tmpdir);
    snprintf(other_ca, sizeof(other_ca), "%s/otherca.pem", tmpdir);
    snprintf(url, sizeof(url), "rediss-sentinel://127.0.0.1:%d#tlsmaster", tls_sentinel_port);
    conf_with(&conf, url, "redis_tls_ca_file", ca, NULL);
    assert_reaches(&conf, tls_master_port);
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", ca, NULL);
    assert_lock_works(l, err, "tls-sentinel");
    /* the Sentinel's certificate is verified too: a wrong CA is a clear permanent error */
    l = lock_with(&code, err, sizeof(err), url, "redis_tls_ca_file", other_ca, NULL);
    assert_null(l);
    assert_int_equal(code, RF_ERR_PERM);
    if (!strstr(err, "cannot verify the tls certificate"))
        fail_msg("%s", err);
    /* a plain redis-sentinel:// client never reaches a TLS Sentinel */
    snprintf(url, sizeof(url), "redis-sentinel://127.0.0.1:%d#tlsmaster", tls_sentinel_port);
    assert_null(lock_with(&code, err, sizeof(err), url, NULL));
}

int main(void)
{
    const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_bad_urls_are_permanent_and_clear),
        cmocka_unit_test(test_an_unencoded_password_is_not_quoted_in_errors),
        cmocka_unit_test(test_tls_settings_with_a_plain_url_are_an_error),
        cmocka_unit_test(test_acl_user_and_password_auth),
        cmocka_unit_test(test_each_address_of_a_name_is_tried),
        cmocka_unit_test(test_tls),
    };
    const struct CMUnitTest sentinel[] = {
        cmocka_unit_test(test_sentinel_finds_the_master),
        cmocka_unit_test(test_switch_master_event_moves_the_next_call),
        cmocka_unit_test(test_readonly_finds_the_master_again),
        cmocka_unit_test(test_failover_after_the_master_is_killed),
        cmocka_unit_test(test_unknown_master_name),
        cmocka_unit_test(test_sentinel_password),
        cmocka_unit_test(test_unreachable_sentinels),
        cmocka_unit_test(test_resubscribing_past_a_frozen_sentinel_is_bounded),
        cmocka_unit_test(test_a_dead_master_is_tried_once_per_search),
        cmocka_unit_test(test_resubscribing_to_dead_sentinels_backs_off),
    };
    const struct CMUnitTest tls_sentinel[] = {
        cmocka_unit_test(test_tls_sentinel),
    };
    int failed = cmocka_run_group_tests_name("redis", plain, setup_dir, teardown_dir);

    failed += cmocka_run_group_tests_name("sentinel", sentinel, setup_sentinel, teardown_dir);
    failed +=
        cmocka_run_group_tests_name("tls sentinel", tls_sentinel, setup_tls_sentinel, teardown_dir);
    return failed;
}
