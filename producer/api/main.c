/* relfleet-api: the HTTP API and web console; configuration, signals, startup and shutdown. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "api_server.h"
#include "rf_http.h"
#include "rf_log.h"
#include "rf_metrics.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: relfleet-api [--config FILE] [--listen HOST:PORT] [--addr-file FILE]\n"
            "                    [--secure-cookies]\n\n"
            "Serves the HTTP API (/api/v1, described by /openapi.yaml) and the web console (/).\n"
            "  --listen          address to listen on (default 127.0.0.1:8080, or\n"
            "                    RELFLEET_API_LISTEN); port 0 picks a free one\n"
            "  --addr-file       write the address listened on to FILE once serving\n"
            "  --secure-cookies  mark the session cookie Secure (behind an HTTPS proxy)\n"
            "Settings as the workers take them (RELFLEET_PG_DSN, RELFLEET_KAFKA_BROKERS,\n"
            "RELFLEET_SECRETS_FILE, RELFLEET_SIGNING_KEY_ID, ...); see docs/api.md.\n");
}

int main(int argc, char **argv)
{
    static const char *const required[] = {"pg_dsn", "kafka_brokers", NULL};
    const char *config_path = NULL, *listen_addr = getenv("RELFLEET_API_LISTEN");
    const char *addr_file = NULL, *schema_dir;
    struct MHD_Daemon *daemon = NULL;
    rf_log_level_t level = RF_LOG_INFO;
    char errstr[1024];
    sigset_t sigs;
    int result = 1, fd = -1, port = 0, sig = 0, version = 0, secure = 0;
    api_t *api = calloc(1, sizeof(*api));

    if (!api)
        abort();
    if (!listen_addr || !*listen_addr)
        listen_addr = "127.0.0.1:8080";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_addr = argv[++i];
        } else if (strcmp(argv[i], "--addr-file") == 0 && i + 1 < argc) {
            addr_file = argv[++i];
        } else if (strcmp(argv[i], "--secure-cookies") == 0) {
            secure = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            free(api);
            return 0;
        } else {
            fprintf(stderr, "relfleet-api: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            free(api);
            return 2;
        }
    }
    rf_config_init(&api->conf);
    pthread_mutex_init(&api->db_lock, NULL);
    pthread_cond_init(&api->db_free, NULL);
    pthread_mutex_init(&api->produce_lock, NULL);
    api->cookie_secure = secure;
    if (rf_config_load(&api->conf, config_path, errstr, sizeof(errstr)) != RF_OK ||
        rf_config_require(&api->conf, required, errstr, sizeof(errstr)) != RF_OK) {
        fprintf(stderr, "relfleet-api: %s\n", errstr);
        result = 2;
        goto out;
    }
    api->throttle = api_throttle_new(API_THROTTLE_SLOTS, api->conf.auth_fail_limit,
                                     api->conf.auth_fail_window_ms,
                                     api->conf.auth_block_ms,
                                     api->conf.auth_block_max_ms);
    rf_log_level_parse(api->conf.log_level, &level);
    rf_log_setup("api", level,
                 strcmp(api->conf.log_format, "json") == 0 ? RF_LOG_JSON : RF_LOG_LOGFMT);
    /* Signals are taken by sigwait below; every thread inherits the blocked mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    api->schemas = rf_schema_registry_new();
    schema_dir = api->conf.schema_dir ? api->conf.schema_dir : RELFLEET_SOURCE_DIR "/schemas";
    if (rf_schema_registry_load_dir(api->schemas, schema_dir, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_error("cannot load schemas from '%s': %s", schema_dir, errstr);
        goto out;
    }
    for (int i = 0; i < API_DB_POOL; i++) {
        /* Starting, a failover or outage is waited out (pg_failover_timeout_ms); serving,
         * a request meets no wait: the database unreachable is a 503 with Retry-After, and
         * the next request reconnects through the DSN. */
        api->db[i] = rf_db_open(api->conf.pg_dsn, i == 0 ? api->conf.pg_failover_timeout_ms : 0,
                                errstr, sizeof(errstr));
        if (!api->db[i]) {
            rf_log_error("%s", errstr);
            goto out;
        }
        rf_db_set_failover_timeout(api->db[i], 0);
        rf_db_set_prepared(api->db[i], strcmp(api->conf.pg_prepared_statements, "on") == 0);
    }
    if (rf_db_schema_version(api->db[0], &version, errstr, sizeof(errstr)) != RF_OK ||
        version < 6) {
        rf_log_error("the database is not migrated for the API (schema version %d, needs 6):"
                     " run relctl db migrate",
                     version);
        goto out;
    }
    rf_metrics_const_label("stage", "api"); /* on /metrics, as the workers' carry theirs */
    api->producer = rf_producer_new(&api->conf, errstr, sizeof(errstr));
    if (!api->producer) {
        rf_log_error("cannot create the kafka producer: %s", errstr);
        goto out;
    }
    api->hub = api_hub_new(api, errstr, sizeof(errstr));
    if (!api->hub) {
        rf_log_error("%s", errstr);
        goto out;
    }
    fd = rf_http_listen(listen_addr, "API", NULL, &port, errstr, sizeof(errstr));
    if (fd < 0) {
        rf_log_error("%s", errstr);
        goto out;
    }
    daemon = api_server_start(api, fd);
    if (!daemon) {
        rf_log_error("cannot start the HTTP server on '%s'", listen_addr);
        close(fd);
        goto out;
    }
    if (addr_file && rf_http_write_addr(addr_file, listen_addr, port) != 0) {
        rf_log_error("cannot write '%s': %s", addr_file, strerror(errno));
        goto out;
    }
    rf_log_info("serving the API and the console on port %d (%s)", port, listen_addr);
    sigwait(&sigs, &sig);
    rf_log_info("signal %d: stopping", sig);
    result = 0;
out:
    api->stopping = 1;
    api_hub_wake_all(api->hub);
    if (daemon) {
        MHD_socket lfd = MHD_quiesce_daemon(daemon);
        MHD_stop_daemon(daemon);
        if (lfd != MHD_INVALID_SOCKET)
            close(lfd);
    }
    api_hub_destroy(api->hub);
    rf_producer_destroy(api->producer);
    for (int i = 0; i < API_DB_POOL; i++)
        rf_db_destroy(api->db[i]);
    rf_schema_registry_destroy(api->schemas);
    api_throttle_destroy(api->throttle);
    rf_config_release(&api->conf);
    pthread_mutex_destroy(&api->db_lock);
    pthread_cond_destroy(&api->db_free);
    pthread_mutex_destroy(&api->produce_lock);
    free(api);
    rf_metrics_reset();
    return result;
}
