/* relfleet-devbroker: a Kafka-protocol broker for development and tests, on librdkafka's mock
 * cluster. */
#include "devbroker_ctl.h"
#include "rf_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define DB_LINE_MAX 1024
#define DB_CLIENTS_MAX 32
#define DB_PATH_MAX 4096

static const char *const db_topics[] = {"requests", "rendered", "applied",
                                        "commands", "results",  "dlq"};

typedef struct db_client {
    int fd;
    size_t len;
    char buf[DB_LINE_MAX];
} db_client_t;

typedef struct db_opts {
    const char *state_dir;
    const char *prefix;
    const char *ctl_addr;
    int partitions;
    int brokers;
    rf_log_level_t level;
} db_opts_t;

static volatile sig_atomic_t db_run = 1;

static void db_on_signal(int sig)
{
    (void)sig;
    db_run = 0;
}

static void db_usage(FILE *out)
{
    fprintf(out, "usage: relfleet-devbroker --state-dir DIR [--partitions 6] [--brokers 1]\n"
                 "                          [--topic-prefix relfleet.] [--log-level info]\n"
                 "       relfleet-devbroker ctl (--state-dir DIR | --addr HOST:PORT) COMMAND...\n"
                 "\n"
                 "Runs a Kafka-protocol broker (librdkafka's mock cluster) in memory, writes its\n"
                 "bootstrap address to DIR/broker.addr and the control channel's address to\n"
                 "DIR/broker.ctl. Control commands: ping, push-errors APIKEY ERRCODE COUNT,\n"
                 "clear-errors APIKEY, broker-down ID, broker-up ID, rtt ID MS,\n"
                 "create-topic NAME PARTITIONS, leader TOPIC PARTITION BROKER,\n"
                 "coordinator group|transaction KEY BROKER.\n");
}

/* Routes librdkafka's own log lines through ours. */
static void db_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* The host instance has no bootstrap.servers by design: not worth a warning. */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers"))
        level = 7;
    if (level <= 3)
        rf_log_error("librdkafka %s: %s", fac, buf);
    else if (level == 4)
        rf_log_warn("librdkafka %s: %s", fac, buf);
    else if (level <= 6)
        rf_log_info("librdkafka %s: %s", fac, buf);
    else
        rf_log_debug("librdkafka %s: %s", fac, buf);
}

/* Writes content to dir/name through a temporary file and a rename, so that readers see
 * either nothing or the whole file. */
static int db_write_atomic(const char *dir, const char *name, const char *content)
{
    char path[DB_PATH_MAX];
    char tmp[DB_PATH_MAX];
    FILE *f = NULL;
    int result = -1;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.%s.%ld.tmp", dir, name, (long)getpid());
    f = fopen(tmp, "w");
    if (!f) {
        rf_log_error("cannot write '%s': %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (fprintf(f, "%s\n", content) < 0 || fflush(f) != 0) {
        rf_log_error("cannot write '%s': %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (fclose(f) != 0) {
        f = NULL;
        rf_log_error("cannot write '%s': %s", tmp, strerror(errno));
        goto cleanup;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        rf_log_error("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto cleanup;
    }
    result = 0;

cleanup:
    if (f)
        fclose(f);
    if (result != 0)
        unlink(tmp);
    return result;
}

static void db_remove_file(const char *dir, const char *name)
{
    char path[DB_PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

/* Opens the control listener on 127.0.0.1, any free port; returns the fd or -1. */
static int db_listen(int *port)
{
    struct sockaddr_in sa;
    socklen_t sa_len = sizeof(sa);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        rf_log_error("cannot open control socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sa_len) != 0) {
        rf_log_error("cannot listen on 127.0.0.1 for control: %s", strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Writes all of buf to a blocking socket; -1 on error. */
static int db_send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads what a client sent and answers each complete line; returns -1 to drop the client. */
static int db_client_read(db_client_t *c, rd_kafka_mock_cluster_t *mcluster, int brokers,
                          int replication)
{
    char reply[DB_LINE_MAX + 16];
    char *nl;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len - 1, 0);

    if (n < 0 && errno == EINTR)
        return 0;
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';

    nl = strchr(c->buf, '\n');
    while (nl) {
        size_t used = (size_t)(nl - c->buf) + 1;

        *nl = '\0';
        devbroker_ctl_exec(mcluster, brokers, replication, c->buf, reply, sizeof(reply) - 1);
        rf_log_info("control command '%s': %s", c->buf, reply);
        strcat(reply, "\n");
        if (db_send_all(c->fd, reply, strlen(reply)) != 0)
            return -1;
        memmove(c->buf, c->buf + used, c->len - used + 1);
        c->len -= used;
        nl = strchr(c->buf, '\n');
    }
    if (c->len == sizeof(c->buf) - 1) {
        db_send_all(c->fd, "error: line too long\n", 21);
        return -1;
    }
    return 0;
}

/* Serves the control channel until a signal asks to stop. */
static void db_serve(int lfd, rd_kafka_t *rk, rd_kafka_mock_cluster_t *mcluster, int brokers,
                     int replication)
{
    db_client_t clients[DB_CLIENTS_MAX];
    struct pollfd pfds[DB_CLIENTS_MAX + 1];
    int nclients = 0;

    while (db_run) {
        int n;

        pfds[0].fd = lfd;
        pfds[0].events = POLLIN;
        for (int i = 0; i < nclients; i++) {
            pfds[i + 1].fd = clients[i].fd;
            pfds[i + 1].events = POLLIN;
            pfds[i + 1].revents = 0;
        }
        n = poll(pfds, (nfds_t)nclients + 1, 250);
        rd_kafka_poll(rk, 0);
        if (n <= 0)
            continue;

        for (int i = nclients - 1; i >= 0; i--) {
            if (!pfds[i + 1].revents)
                continue;
            if (db_client_read(&clients[i], mcluster, brokers, replication) != 0) {
                close(clients[i].fd);
                clients[i] = clients[nclients - 1];
                nclients--;
            }
        }
        if (pfds[0].revents & POLLIN) {
            int cfd = accept(lfd, NULL, NULL);

            if (cfd < 0)
                continue;
            fcntl(cfd, F_SETFD, FD_CLOEXEC);
            if (nclients == DB_CLIENTS_MAX) {
                db_send_all(cfd, "error: too many control connections\n", 36);
                close(cfd);
                continue;
            }
            clients[nclients].fd = cfd;
            clients[nclients].len = 0;
            clients[nclients].buf[0] = '\0';
            nclients++;
        }
    }
    for (int i = 0; i < nclients; i++)
        close(clients[i].fd);
}

static int db_parse_int(const char *s, int min, int max, int *out)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* Parses the options shared by both modes; returns optind, or -1 after printing usage. */
static int db_parse_opts(int argc, char **argv, db_opts_t *o, int ctl_mode)
{
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 'd'},
        {"partitions", required_argument, NULL, 'p'},
        {"brokers", required_argument, NULL, 'b'},
        {"topic-prefix", required_argument, NULL, 't'},
        {"log-level", required_argument, NULL, 'l'},
        {"addr", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    /* In ctl mode the command's own words follow; stop at the first of them. */
    for (;;) {
        c = getopt_long(argc, argv, ctl_mode ? "+h" : "h", longopts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'd':
            o->state_dir = optarg;
            break;
        case 'p':
            if (db_parse_int(optarg, 1, 10000, &o->partitions) != 0) {
                fprintf(stderr, "relfleet-devbroker: bad --partitions '%s' (1..10000)\n", optarg);
                return -1;
            }
            break;
        case 'b':
            if (db_parse_int(optarg, 1, 64, &o->brokers) != 0) {
                fprintf(stderr, "relfleet-devbroker: bad --brokers '%s' (1..64)\n", optarg);
                return -1;
            }
            break;
        case 't':
            o->prefix = optarg;
            break;
        case 'l':
            if (rf_log_level_parse(optarg, &o->level) != 0) {
                fprintf(stderr, "relfleet-devbroker: bad --log-level '%s'\n", optarg);
                return -1;
            }
            break;
        case 'a':
            o->ctl_addr = optarg;
            break;
        case 'h':
            db_usage(stdout);
            exit(0);
        default:
            db_usage(stderr);
            return -1;
        }
    }
    return optind;
}

/* The client side: sends one command to a running broker and prints its reply. */
static int db_ctl_main(int argc, char **argv)
{
    db_opts_t o = {0};
    char addr[256] = "";
    char path[DB_PATH_MAX];
    char line[DB_LINE_MAX];
    char reply[DB_LINE_MAX + 64];
    size_t rlen = 0;
    struct sockaddr_in sa;
    struct timeval tv = {30, 0};
    char *colon;
    int port;
    int first;
    int fd = -1;
    int result = 1;
    FILE *f = NULL;

    optind = 1;
    first = db_parse_opts(argc, argv, &o, 1);
    if (first < 0)
        return 2;
    if (first >= argc || (!o.state_dir && !o.ctl_addr)) {
        db_usage(stderr);
        return 2;
    }
    if (o.ctl_addr) {
        snprintf(addr, sizeof(addr), "%s", o.ctl_addr);
    } else {
        snprintf(path, sizeof(path), "%s/broker.ctl", o.state_dir);
        f = fopen(path, "r");
        if (!f || !fgets(addr, sizeof(addr), f)) {
            fprintf(stderr, "relfleet-devbroker: cannot read '%s': %s\n", path,
                    f ? "empty file" : strerror(errno));
            goto cleanup;
        }
        addr[strcspn(addr, "\r\n")] = '\0';
    }
    colon = strrchr(addr, ':');
    if (!colon || db_parse_int(colon + 1, 1, 65535, &port) != 0) {
        fprintf(stderr, "relfleet-devbroker: bad control address '%s'\n", addr);
        goto cleanup;
    }
    *colon = '\0';
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "relfleet-devbroker: bad control host '%s'\n", addr);
        goto cleanup;
    }

    line[0] = '\0';
    for (int i = first; i < argc; i++) {
        size_t used = strlen(line);

        snprintf(line + used, sizeof(line) - used, "%s%s", i > first ? " " : "", argv[i]);
    }
    if (strlen(line) + 1 >= sizeof(line) || strchr(line, '\n')) {
        fprintf(stderr, "relfleet-devbroker: command too long or has a newline\n");
        result = 2;
        goto cleanup;
    }
    strcat(line, "\n");

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "relfleet-devbroker: cannot connect to control channel %s:%d: %s\n", addr,
                port, strerror(errno));
        goto cleanup;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (db_send_all(fd, line, strlen(line)) != 0) {
        fprintf(stderr, "relfleet-devbroker: cannot send command: %s\n", strerror(errno));
        goto cleanup;
    }
    while (rlen < sizeof(reply) - 1 && !memchr(reply, '\n', rlen)) {
        ssize_t n = recv(fd, reply + rlen, sizeof(reply) - 1 - rlen, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        rlen += (size_t)n;
    }
    reply[rlen] = '\0';
    if (!memchr(reply, '\n', rlen)) {
        fprintf(stderr, "relfleet-devbroker: no reply from control channel\n");
        goto cleanup;
    }
    reply[strcspn(reply, "\n")] = '\0';
    printf("%s\n", reply);
    result = strcmp(reply, "ok") == 0 ? 0 : 1;

cleanup:
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    return result;
}

static int db_broker_main(int argc, char **argv)
{
    db_opts_t o = {NULL, "relfleet.", NULL, 6, 1, RF_LOG_INFO};
    char errstr[512];
    char topic[512];
    char ctl[64];
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mcluster = NULL;
    struct sigaction sa;
    int lfd = -1;
    int port = 0;
    int replication;
    int wrote = 0;
    int result = 1;

    if (db_parse_opts(argc, argv, &o, 0) < 0)
        return 2;
    if (optind != argc || !o.state_dir) {
        db_usage(stderr);
        return 2;
    }
    rf_log_setup("devbroker", o.level, RF_LOG_LOGFMT);
    if (mkdir(o.state_dir, 0755) != 0 && errno != EEXIST) {
        rf_log_error("cannot create state dir '%s': %s", o.state_dir, strerror(errno));
        return 1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = db_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, db_kafka_log);
    if (rd_kafka_conf_set(conf, "client.id", "relfleet-devbroker", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        (o.level == RF_LOG_DEBUG &&
         rd_kafka_conf_set(conf, "debug", "mock", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)) {
        rf_log_error("cannot configure the mock cluster's host: %s", errstr);
        goto cleanup;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rf_log_error("cannot create the mock cluster's host: %s", errstr);
        goto cleanup;
    }
    conf = NULL; /* rk owns it now */
    mcluster = rd_kafka_mock_cluster_new(rk, o.brokers);
    if (!mcluster) {
        rf_log_error("cannot create the mock cluster with %d brokers", o.brokers);
        goto cleanup;
    }
    replication = o.brokers < 3 ? o.brokers : 3;

    for (size_t i = 0; i < sizeof(db_topics) / sizeof(db_topics[0]); i++) {
        rd_kafka_resp_err_t err;

        snprintf(topic, sizeof(topic), "%s%s", o.prefix, db_topics[i]);
        err = rd_kafka_mock_topic_create(mcluster, topic, o.partitions, replication);
        if (err) {
            rf_log_error("cannot create topic '%s': %s", topic, rd_kafka_err2str(err));
            goto cleanup;
        }
        devbroker_ctl_topic_add(topic, o.partitions);
    }

    lfd = db_listen(&port);
    if (lfd < 0)
        goto cleanup;
    snprintf(ctl, sizeof(ctl), "127.0.0.1:%d", port);
    /* broker.addr last: its presence means everything is ready. */
    wrote = 1;
    if (db_write_atomic(o.state_dir, "broker.ctl", ctl) != 0 ||
        db_write_atomic(o.state_dir, "broker.addr", rd_kafka_mock_cluster_bootstraps(mcluster)) !=
            0)
        goto cleanup;
    rf_log_info("ready bootstrap=%s control=%s brokers=%d partitions=%d prefix=%s",
                rd_kafka_mock_cluster_bootstraps(mcluster), ctl, o.brokers, o.partitions, o.prefix);

    db_serve(lfd, rk, mcluster, o.brokers, replication);
    rf_log_info("stopping");
    result = 0;

cleanup:
    if (wrote) {
        db_remove_file(o.state_dir, "broker.addr");
        db_remove_file(o.state_dir, "broker.ctl");
    }
    if (lfd >= 0)
        close(lfd);
    if (mcluster)
        rd_kafka_mock_cluster_destroy(mcluster);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return result;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "ctl") == 0)
        return db_ctl_main(argc - 1, argv + 1);
    return db_broker_main(argc, argv);
}
