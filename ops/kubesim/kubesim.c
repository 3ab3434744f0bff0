/* kubesim: a Kubernetes API server and Deployment controller simulator on loopback, for tests and the local stack. */
#include "ks_api.h"
#include "ks_ctrl.h"
#include "ks_http.h"
#include "ks_rules.h"
#include "ks_store.h"
#include "ks_tls.h"
#include "rf_buf.h"
#include "rf_clock.h"
#include "rf_log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct ks_conf {
    const char *state_dir;
    const char *listen;
    int tls;
    const char *token_file;
    const char *rules;
    double time_scale;
    const char *log_level;
    long watch_cache;
    long long event_ttl_ms;
} ks_conf_t;

/* The command line: one table for parsing and for --help. */
static const struct ks_opt {
    const char *name;
    int has_arg;
    const char *arg;
    const char *help;
} ks_opts[] = {
    {"state-dir", 1, "DIR", "folder for kubesim.addr, kubeconfig and the TLS files (required)"},
    {"listen", 1, "HOST:PORT", "loopback address to listen on; port 0 picks a free one (default 127.0.0.1:0)"},
    {"tls", 0, NULL, "serve HTTPS with a generated self-signed CA (kept in the state folder)"},
    {"token-file", 1, "FILE", "require this bearer token (first line of FILE)"},
    {"rules", 1, "FILE", "YAML pod behaviour rules, first match on the image wins"},
    {"time-scale", 1, "N", "simulated time runs N times faster (default 1, 0.001 to 100000)"},
    {"log-level", 1, "LEVEL", "debug, info, warn or error (default info)"},
    {"watch-cache-size", 1, "N", "watch events kept per kind for resuming (default 4096)"},
    {"event-ttl", 1, "DURATION", "Events expire this long after their last write, in simulated time (default 1h; 0 keeps them)"},
    {"help", 0, NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: kubesim --state-dir DIR [--listen 127.0.0.1:0] [--tls] [--token-file FILE]\n"
                 "               [--rules FILE] [--time-scale N] [--log-level info]\n"
                 "               [--watch-cache-size 4096] [--event-ttl 1h]\n\n");
    for (const struct ks_opt *o = ks_opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "  %-28s %s\n", left, o->help);
    }
}

static int parse_args(int argc, char **argv, ks_conf_t *c)
{
    struct option lo[16];
    int n = 0, idx, ch;
    char *end;

    for (const struct ks_opt *o = ks_opts; o->name; o++, n++) {
        lo[n].name = o->name;
        lo[n].has_arg = o->has_arg ? required_argument : no_argument;
        lo[n].flag = NULL;
        lo[n].val = 1000 + n;
    }
    memset(&lo[n], 0, sizeof(lo[n]));
    c->listen = "127.0.0.1:0";
    c->time_scale = 1;
    c->log_level = "info";
    c->watch_cache = 4096;
    c->event_ttl_ms = KS_EVENT_TTL_DEFAULT_MS;
    while ((ch = getopt_long(argc, argv, "", lo, &idx)) != -1) {
        if (ch < 1000) {
            usage(stderr);
            return -1;
        }
        const char *name = ks_opts[ch - 1000].name;
        if (strcmp(name, "state-dir") == 0) {
            c->state_dir = optarg;
        } else if (strcmp(name, "listen") == 0) {
            c->listen = optarg;
        } else if (strcmp(name, "tls") == 0) {
            c->tls = 1;
        } else if (strcmp(name, "token-file") == 0) {
            c->token_file = optarg;
        } else if (strcmp(name, "rules") == 0) {
            c->rules = optarg;
        } else if (strcmp(name, "time-scale") == 0) {
            c->time_scale = strtod(optarg, &end);
            if (*end || !(c->time_scale >= 0.001 && c->time_scale <= 100000)) {
                fprintf(stderr, "kubesim: bad value '%s' for --time-scale: expected 0.001 to 100000\n", optarg);
                return -1;
            }
        } else if (strcmp(name, "log-level") == 0) {
            c->log_level = optarg;
        } else if (strcmp(name, "event-ttl") == 0) {
            c->event_ttl_ms = rf_clock_parse_ms(optarg);
            if (c->event_ttl_ms < 0) {
                fprintf(stderr, "kubesim: bad value '%s' for --event-ttl: expected a duration such as 1h, 30m, 90s or 500ms\n", optarg);
                return -1;
            }
        } else if (strcmp(name, "watch-cache-size") == 0) {
            c->watch_cache = strtol(optarg, &end, 10);
            if (*end || c->watch_cache < 1 || c->watch_cache > 10000000) {
                fprintf(stderr, "kubesim: bad value '%s' for --watch-cache-size: expected 1 to 10000000\n", optarg);
                return -1;
            }
        } else {
            usage(stdout);
            exit(0);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kubesim: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!c->state_dir) {
        fprintf(stderr, "kubesim: --state-dir is required\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

static char *read_token(const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    size_t n;

    if (!f) {
        snprintf(errstr, errstr_size, "cannot open token file '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    fclose(f);
    n = strcspn(line, "\r\n");
    line[n] = '\0';
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        line[--n] = '\0';
    if (n == 0) {
        snprintf(errstr, errstr_size, "token file '%s' is empty", path);
        return NULL;
    }
    return strdup(line);
}

/* Writes data to path atomically: a temporary file, then rename. */
static int write_atomic(const char *path, const char *data, mode_t mode)
{
    char tmp[4200];
    int fd, result = -1;
    size_t len = strlen(data);

    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    if (write(fd, data, len) == (ssize_t)len && fsync(fd) == 0)
        result = 0;
    close(fd);
    if (result == 0 && rename(tmp, path) != 0)
        result = -1;
    if (result != 0)
        unlink(tmp);
    return result;
}

static void add_base64(rf_buf_t *b, const char *key, const char *pem)
{
    size_t n = strlen(pem);
    char *b64 = malloc(4 * ((n + 2) / 3) + 1);

    if (!b64)
        abort();
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)pem, (int)n);
    rf_buf_addf(b, "    %s: %s\n", key, b64);
    free(b64);
}

/* The kubeconfig: the bearer token when one is configured; with TLS the CA and a client
 * certificate (which the server does not require) so that clients never prompt. */
static int write_kubeconfig(const ks_conf_t *c, const char *url, const char *token,
                            const ks_tls_t *tls)
{
    rf_buf_t b = RF_BUF_INIT;
    char path[4096];
    int result;

    rf_buf_adds(&b, "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n");
    rf_buf_addf(&b, "    server: %s\n", url);
    if (tls)
        add_base64(&b, "certificate-authority-data", tls->ca_pem);
    rf_buf_adds(&b, "contexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n"
                    "    user: kubesim\n    namespace: default\ncurrent-context: kubesim\n"
                    "preferences: {}\nusers:\n- name: kubesim\n  user:");
    if (!token && !tls)
        rf_buf_adds(&b, " {}\n");
    else
        rf_buf_adds(&b, "\n");
    if (token)
        rf_buf_addf(&b, "    token: %s\n", token);
    if (tls) {
        add_base64(&b, "client-certificate-data", tls->client_cert_pem);
        add_base64(&b, "client-key-data", tls->client_key_pem);
    }
    snprintf(path, sizeof(path), "%s/kubeconfig", c->state_dir);
    result = write_atomic(path, rf_buf_str(&b), 0600);
    if (b.data)
        memset(b.data, 0, b.len);
    rf_buf_release(&b);
    return result;
}

int main(int argc, char **argv)
{
    ks_conf_t conf;
    rf_log_level_t level;
    char err[1024], host[64], url[128], path[4096];
    char *token = NULL, *colon;
    ks_rules_t *rules = NULL;
    ks_store_t *st = NULL;
    ks_ctrl_t *ctrl = NULL;
    ks_api_t *api = NULL;
    ks_http_t *http = NULL;
    ks_tls_t tls;
    ks_http_conf_t hc;
    sigset_t sigs;
    int sig, port, result = 1;

    memset(&conf, 0, sizeof(conf));
    memset(&tls, 0, sizeof(tls));
    if (parse_args(argc, argv, &conf) != 0)
        return 2;
    if (rf_log_level_parse(conf.log_level, &level) != 0) {
        fprintf(stderr, "kubesim: bad value '%s' for --log-level\n", conf.log_level);
        return 2;
    }
    rf_log_setup("kubesim", level, RF_LOG_LOGFMT);
    colon = strrchr(conf.listen, ':');
    if (!colon || (size_t)(colon - conf.listen) >= sizeof(host)) {
        fprintf(stderr, "kubesim: bad value '%s' for --listen: expected HOST:PORT\n", conf.listen);
        return 2;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - conf.listen), conf.listen);
    port = atoi(colon + 1);
    if (mkdir(conf.state_dir, 0700) != 0 && errno != EEXIST) {
        rf_log_error("cannot create state folder '%s': %s", conf.state_dir, strerror(errno));
        return 1;
    }
    /* every thread inherits the blocked signals; main waits for them */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (conf.token_file) {
        token = read_token(conf.token_file, err, sizeof(err));
        if (!token) {
            rf_log_error("%s", err);
            goto cleanup;
        }
    }
    rules = ks_rules_load(conf.rules, err, sizeof(err));
    if (!rules) {
        rf_log_error("%s", err);
        goto cleanup;
    }
    if (conf.tls && ks_tls_load(&tls, conf.state_dir, err, sizeof(err)) != 0) {
        rf_log_error("%s", err);
        goto cleanup;
    }
    st = ks_store_new((size_t)conf.watch_cache);
    ctrl = ks_ctrl_new(st, rules, conf.time_scale);
    if (ctrl)
        ks_ctrl_set_event_ttl(ctrl, conf.event_ttl_ms);
    api = ks_api_new(st, ctrl);
    if (!st || !ctrl || !api || ks_ctrl_start(ctrl) != 0) {
        rf_log_error("cannot start the simulator");
        goto cleanup;
    }
    memset(&hc, 0, sizeof(hc));
    hc.host = host;
    hc.port = port;
    hc.token = token;
    hc.tls_cert = conf.tls ? tls.cert_pem : NULL;
    hc.tls_key = conf.tls ? tls.key_pem : NULL;
    http = ks_http_start(api, &hc, err, sizeof(err));
    if (!http) {
        rf_log_error("%s", err);
        goto cleanup;
    }
    snprintf(url, sizeof(url), "%s://%s:%d", conf.tls ? "https" : "http", host, ks_http_port(http));
    {
        char hp[96];
        snprintf(hp, sizeof(hp), "%s:%d", host, ks_http_port(http));
        ks_api_set_address(api, hp);
    }
    if (write_kubeconfig(&conf, url, token, conf.tls ? &tls : NULL) != 0) {
        rf_log_error("cannot write '%s/kubeconfig': %s", conf.state_dir, strerror(errno));
        goto cleanup;
    }
    snprintf(path, sizeof(path), "%s/kubesim.addr", conf.state_dir);
    {
        char line[160];
        snprintf(line, sizeof(line), "%s\n", url);
        if (write_atomic(path, line, 0644) != 0) {
            rf_log_error("cannot write '%s': %s", path, strerror(errno));
            goto cleanup;
        }
    }
    rf_log_info("listening on %s (tls=%s, token=%s, time-scale=%g, rules=%s)", url,
                conf.tls ? "on" : "off", token ? "required" : "none", conf.time_scale,
                conf.rules ? conf.rules : "default");
    while (sigwait(&sigs, &sig) != 0)
        ;
    rf_log_info("stopping on signal %d", sig);
    result = 0;
cleanup:
    if (st)
        ks_store_stop(st);
    ks_http_stop(http);
    ks_ctrl_stop(ctrl);
    ks_api_destroy(api);
    ks_ctrl_destroy(ctrl);
    ks_store_destroy(st);
    ks_rules_destroy(rules);
    ks_tls_release(&tls);
    if (token) {
        memset(token, 0, strlen(token));
        free(token);
    }
    return result;
}
