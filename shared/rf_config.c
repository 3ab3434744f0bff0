/* The configuration table and its loaders (YAML file, environment). */
#include "rf_config.h"
#include "rf_cloudevents.h"
#include "rf_clock.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define PROP(n, t, f, d, lo, hi, v, desc) {n, t, offsetof(rf_config_t, f), d, lo, hi, v, desc}

const rf_config_prop_t rf_config_props[] = {
    PROP("kafka_brokers", RF_CONF_STRING, kafka_brokers, NULL, 0, 0, NULL,
         "Kafka bootstrap servers, host:port[,host:port...]"),
    PROP("topic_prefix", RF_CONF_STRING, topic_prefix, "relfleet.", 0, 0, NULL,
         "Prefix of every topic name (requests, rendered, applied, commands, results, dlq)"),
    PROP("cloudevents_source", RF_CONF_STRING, cloudevents_source, NULL, 0, 0, NULL,
         "CloudEvents source (ce_source header) of every results message and cloudevents"
         " webhook, a URI-reference such as /relfleet/prod-eu naming this installation; the"
         " same on every worker (default: /relfleet/ + topic_prefix without its trailing"
         " dot, /relfleet/relfleet)"),
    PROP("pg_dsn", RF_CONF_SECRET, pg_dsn, NULL, 0, 0, NULL,
         "PostgreSQL connection string (libpq URI or key=value form)"),
    PROP("pg_prepared_statements", RF_CONF_ENUM, pg_prepared_statements, "on", 0, 0, "on|off",
         "Prepare each SQL statement once per connection and only execute it after (saves"
         " the server's parse and plan); off behind PgBouncer in transaction or statement"
         " mode before 1.21, which cannot keep a client's prepared statements"),
    PROP("pg_failover_timeout_ms", RF_CONF_INT, pg_failover_timeout_ms, "30000", 0, 3600000,
         NULL,
         "How long relctl and relfleet-api wait out a PostgreSQL failover or outage"
         " (reconnecting through pg_dsn with back-off from 100 ms to 2 s, repeating what is"
         " safe to repeat) before they give up naming the hosts tried; 0 tries once"),
    PROP("redis_url", RF_CONF_SECRET, redis_url, "redis://127.0.0.1:6379/0", 0, 0, NULL,
         "Redis URL: redis://[[user]:password@]host:port[/db] (with a user, ACL AUTH user"
         " password); rediss://... the same over TLS; redis-sentinel://[[user]:password@]"
         "host:port[,host:port...][/db]#master-name asks the Sentinels for the master,"
         " confirms it with ROLE and follows a failover; rediss-sentinel://... with TLS to"
         " the Sentinels and the master"),
    PROP("redis_sentinel_password", RF_CONF_SECRET, redis_sentinel_password, NULL, 0, 0, NULL,
         "Password (AUTH password) for the Sentinels of a redis-sentinel:// URL (default: the"
         " URL's user and password); environment or config file only"),
    PROP("redis_tls_ca_file", RF_CONF_STRING, redis_tls_ca_file, NULL, 0, 0, NULL,
         "PEM file of the CA certificates that verify the Redis servers' certificates"
         " (rediss://, rediss-sentinel://; default: the system's CA store)"),
    PROP("redis_tls_cert_file", RF_CONF_STRING, redis_tls_cert_file, NULL, 0, 0, NULL,
         "PEM client certificate (chain) for Redis TLS, with redis_tls_key_file"),
    PROP("redis_tls_key_file", RF_CONF_STRING, redis_tls_key_file, NULL, 0, 0, NULL,
         "PEM private key of redis_tls_cert_file"),
    PROP("redis_tls_server_name", RF_CONF_STRING, redis_tls_server_name, NULL, 0, 0, NULL,
         "Name sent as SNI and verified in the Redis servers' certificates (default: the host"
         " connected to, an IP address verified as such)"),
    PROP("redis_tls_insecure_skip_verify", RF_CONF_ENUM, redis_tls_insecure_skip_verify,
         "false", 0, 0, "false|true",
         "true: do NOT verify the Redis servers' TLS certificates (testing only); the"
         " connection is still TLS. Any redis_tls_* setting with a plain redis:// URL is an"
         " error, never a fallback"),
    PROP("kubeconfig", RF_CONF_STRING, kubeconfig, NULL, 0, 0, NULL,
         "Path of the kubeconfig file used by the apply and track stages"),
    PROP("clusters", RF_CONF_STRING, clusters, NULL, 0, 0, NULL,
         "Cluster (kubeconfig context) of each environment, env=context[,env=context...]; a"
         " service's own `cluster` setting wins, kube_context is the fallback"),
    PROP("kube_context", RF_CONF_STRING, kube_context, NULL, 0, 0, NULL,
         "kubeconfig context to use (default: its current-context)"),
    PROP("smtp_url", RF_CONF_STRING, smtp_url, NULL, 0, 0, NULL,
         "SMTP server for email notifications, smtp://host:port or smtps://host:port"),
    PROP("smtp_from", RF_CONF_STRING, smtp_from, "relfleet@localhost", 0, 0, NULL,
         "Sender address of notification emails"),
    PROP("smtp_user", RF_CONF_STRING, smtp_user, NULL, 0, 0, NULL,
         "SMTP AUTH login; the password is the secret a subscription names (--secret)"
         " or else the secret 'smtp_password'"),
    PROP("smtp_starttls", RF_CONF_ENUM, smtp_starttls, "try", 0, 0, "off|try|required",
         "STARTTLS on smtp:// (required: fail rather than send in clear; smtps:// is TLS"
         " from the start)"),
    PROP("smtp_ca_file", RF_CONF_STRING, smtp_ca_file, NULL, 0, 0, NULL,
         "PEM file of the CA certificates that verify the SMTP server's certificate (smtps://,"
         " STARTTLS; default: the system's CA store); the certificate is always verified"),
    PROP("secrets_file", RF_CONF_STRING, secrets_file, NULL, 0, 0, NULL,
         "File of name=value lines holding secrets (tokens, passwords, webhook keys)"),
    PROP("schema_dir", RF_CONF_STRING, schema_dir, NULL, 0, 0, NULL,
         "Folder of the message JSON Schemas (default: the schemas/ of the build's source)"),
    PROP("log_level", RF_CONF_ENUM, log_level, "info", 0, 0, "debug|info|warn|error",
         "Lowest level of log lines written"),
    PROP("log_format", RF_CONF_ENUM, log_format, "logfmt", 0, 0, "logfmt|json",
         "Format of log lines"),
    PROP("operator", RF_CONF_STRING, operator_name, NULL, 0, 0, NULL,
         "Name recorded as the operator of what relctl does (default: $USER)"),
    PROP("token", RF_CONF_SECRET, token, NULL, 0, 0, NULL,
         "API token of the operator (relctl, API clients)"),
    PROP("auth_required", RF_CONF_ENUM, auth_required, "off", 0, 0, "off|on",
         "on: the render and track stages reject unsigned requests and commands (signed ones"
         " are always verified); see docs/permissions.md"),
    PROP("signing_key_id", RF_CONF_STRING, signing_key_id, NULL, 0, 0, NULL,
         "Key relctl signs with (secret `signing_key.<id>`; default: the token's user, when"
         " that secret exists)"),
    PROP("signature_window_s", RF_CONF_INT, signature_window_s, "300", 1, 86400, NULL,
         "How far a signature's timestamp may be from the moment the message arrived"),
    PROP("auth_fail_limit", RF_CONF_INT, auth_fail_limit, "10", 1, 1000, NULL,
         "relfleet-api: failed authentications (bearer token, session, login) of one client"
         " address, or logins naming one user, within auth_fail_window_ms before that"
         " address or user is answered 429 with Retry-After, its credentials unchecked"),
    PROP("auth_fail_window_ms", RF_CONF_INT, auth_fail_window_ms, "60000", 10, 86400000,
         NULL,
         "relfleet-api: the window of auth_fail_limit; an address or user quiet this long"
         " after its block ended starts over (a successful login starts its user over at"
         " once; a success does not start an address over)"),
    PROP("auth_block_ms", RF_CONF_INT, auth_block_ms, "1000", 10, 86400000, NULL,
         "relfleet-api: the first block of an address or user that reached"
         " auth_fail_limit; each failure after a block blocks again, twice as long"),
    PROP("auth_block_max_ms", RF_CONF_INT, auth_block_max_ms, "600000", 10, 86400000,
         NULL, "relfleet-api: the longest block of an address or user"),
    PROP("bootstrap_admin", RF_CONF_STRING, bootstrap_admin, "admin", 0, 0, NULL,
         "User that `relctl db migrate` creates on a database without users, owning the"
         " token setting and the secret `signing_key.<name>`, with admin on everything"),
    PROP("lock_lease_ms", RF_CONF_INT, lock_lease_ms, "30000", 1000, 3600000, NULL,
         "Lease of a service lock in Redis; the holding stage renews it"),
    PROP("sweep_interval_ms", RF_CONF_INT, sweep_interval_ms, "2000", 100, 600000, NULL,
         "How often the render stage looks for queued releases whose service is free and"
         " that nobody handed on (stranded); it takes those queued at least this long, a"
         " younger one being most likely in a render worker's poll batch"),
    PROP("render_validation", RF_CONF_ENUM, render_validation, "strict", 0, 0, "strict|warn|off",
         "Rendered manifests are checked against the target cluster's schema (its /openapi/v3,"
         " else the built-in one) and the API conventions before anything is applied: strict"
         " rejects the release naming each error, warn records the errors in the timeline and"
         " goes on, off does not check (docs/design.md)"),
    PROP("render_schema_recheck_ms", RF_CONF_INT, render_schema_recheck_ms, "60000", 1000,
         86400000, NULL,
         "How often the render stage asks a cluster's /version whether the schema it cached"
         " (per cluster and version) is still the cluster's"),
    PROP("approval_timeout", RF_CONF_STRING, approval_timeout, "24h", 0, 0, NULL,
         "How long a release waits in awaiting_approval (600, 600s, 10m, 24h) before the"
         " render stage's sweep ends it cancelled (docs/promotion.md)"),
    PROP("kafka_timeout_ms", RF_CONF_INT, kafka_timeout_ms, "10000", 100, 600000, NULL,
         "How long a produce waits for its delivery report before failing"),
    PROP("session_timeout_ms", RF_CONF_INT, session_timeout_ms, "6000", 1000, 300000, NULL,
         "Kafka consumer group session timeout"),
    PROP("retry_max_ms", RF_CONF_INT, retry_max_ms, "5000", 10, 600000, NULL,
         "Longest back-off between retries of a message that failed for a retriable reason"),
    PROP("shutdown_timeout_ms", RF_CONF_INT, shutdown_timeout_ms, "10000", 100, 600000, NULL,
         "How long a worker may take to finish in-flight work after SIGTERM"),
    PROP("linger_ms", RF_CONF_INT, linger_ms, "1", 0, 1000, NULL,
         "Producer linger (batching delay)"),
    PROP("batch_max", RF_CONF_INT, batch_max, "256", 1, 100000, NULL,
         "Most messages a worker takes from its consumer at once (those already fetched):"
         " their deliveries are awaited together and their offsets stored after; 1 handles"
         " one message at a time"),
    PROP("kafka_fetch_wait_ms", RF_CONF_INT, kafka_fetch_wait_ms, "500", 1, 60000, NULL,
         "Consumer fetch.wait.max.ms: how long a fetch may wait at the broker for data. A"
         " Kafka broker answers as soon as a message arrives, so the default costs no"
         " latency there; the dev broker (librdkafka's mock cluster) always waits this long"
         " when a partition is empty, so the local stack sets 5"),
    PROP("kafka_queued_max_kbytes", RF_CONF_INT, kafka_queued_max_kbytes, "4096", 64, 2097151,
         NULL,
         "Consumer queued.max.messages.kbytes: the most KiB of fetched messages a worker's"
         " consumer holds ahead of the worker (librdkafka's default, 65536, let an apply"
         " worker reach 70 MiB in a burst of 10,000 releases of ~5 KiB); a fetch may overshoot"
         " it by one fetch. Set after kafka_options"),
    PROP("metrics_addr", RF_CONF_STRING, metrics_addr, "127.0.0.1:9464", 0, 0, NULL,
         "Address (host:port) of the worker's /metrics, /healthz and /readyz; `off` to "
         "disable; 0.0.0.0:9464 in a container"),
    PROP("metrics_addr_file", RF_CONF_STRING, metrics_addr_file, NULL, 0, 0, NULL,
         "File the worker writes the address of its /metrics to (host:port) once it "
         "listens: with a metrics_addr of port 0, how a supervisor learns the port picked"),
    PROP("kafka_options", RF_CONF_SECRET, kafka_options, NULL, 0, 0, NULL,
         "librdkafka properties for every Kafka client, `key=value;key=value` (e.g. "
         "security.protocol=SASL_SSL;sasl.mechanism=SCRAM-SHA-512;sasl.username=relfleet;"
         "sasl.password=@kafka_password); a value `@name` is read from the secret `name`;"
         " producers stay idempotent with acks=all: enable.idempotence other than true and"
         " acks (request.required.acks) other than all are refused"),
    PROP("kafka_stats_interval_ms", RF_CONF_INT, kafka_stats_interval_ms, "5000", 100, 600000,
         NULL, "How often the consumer's librdkafka statistics (lag per partition, broker "
                "state for /readyz) are taken"),
    PROP("health_interval_ms", RF_CONF_INT, health_interval_ms, "3000", 200, 600000, NULL,
         "How often /readyz's checks (PostgreSQL SELECT 1, Redis, the stage's own) run"),
    PROP("notify_max_attempts", RF_CONF_INT, notify_max_attempts, "8", 1, 100, NULL,
         "Attempts to send one notification before it is recorded as failed"),
    PROP("notify_backoff_ms", RF_CONF_INT, notify_backoff_ms, "2000", 10, 3600000, NULL,
         "Back-off before the first retry of a notification; doubles each retry, with jitter"),
    PROP("notify_backoff_max_ms", RF_CONF_INT, notify_backoff_max_ms, "600000", 10, 86400000,
         NULL, "Longest back-off between two attempts of a notification"),
    PROP("notify_timeout_ms", RF_CONF_INT, notify_timeout_ms, "15000", 100, 600000, NULL,
         "Longest time one notification request (SMTP, DingTalk, webhook) may take"),
    PROP("notify_concurrency", RF_CONF_INT, notify_concurrency, "64", 1, 4096, NULL,
         "Notifications one notify worker sends at the same time"),
    PROP("dingtalk_rate_per_min", RF_CONF_INT, dingtalk_rate_per_min, "20", 0, 1000, NULL,
         "Messages per minute sent to one DingTalk robot, across all workers (0: no limit)"),
    {NULL, RF_CONF_STRING, 0, NULL, 0, 0, NULL, NULL},
};

/* RELFLEET_ variables that belong to the tools around the workers, not to this table. */
static const char *const config_foreign_prefixes[] = {
    "RELFLEET_STATE_DIR", "RELFLEET_BUILD_DIR", "RELFLEET_STACK_", "RELFLEET_KUBESIM_",
    "RELFLEET_BROKER_",   "RELFLEET_API_",      "RELFLEET_SOURCE_DIR", "RELFLEET_TEST_",
    "RELFLEET_BENCH_",    "RELFLEET_SECRET_",   "RELFLEET_CONFIG",     "RELFLEET_DEMO_",
    "RELFLEET_CHAOS_",    "RELFLEET_WORKER_",   "RELFLEET_PROMETHEUS_", NULL,
};

static char **config_field(rf_config_t *conf, const rf_config_prop_t *p)
{
    return (char **)((char *)conf + p->offset);
}

static int *config_int_field(rf_config_t *conf, const rf_config_prop_t *p)
{
    return (int *)((char *)conf + p->offset);
}

static const rf_config_prop_t *config_find(const char *name)
{
    for (const rf_config_prop_t *p = rf_config_props; p->name; p++)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

static int config_enum_ok(const char *values, const char *value)
{
    size_t n = strlen(value);
    const char *s = values;

    while (*s) {
        const char *bar = strchr(s, '|');
        size_t len = bar ? (size_t)(bar - s) : strlen(s);
        if (len == n && strncmp(s, value, n) == 0)
            return 1;
        if (!bar)
            break;
        s = bar + 1;
    }
    return 0;
}

rf_err_t rf_config_set(rf_config_t *conf, const char *name, const char *value, char *errstr,
                       size_t errstr_size)
{
    const rf_config_prop_t *p = config_find(name);
    char *end = NULL;
    long v;

    if (!p)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "unknown setting '%s'", name);
    switch (p->type) {
    case RF_CONF_INT:
        errno = 0;
        v = strtol(value, &end, 10);
        if (errno || end == value || *end != '\0')
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "setting '%s': '%s' is not an integer", name, value);
        if (v < p->min || v > p->max)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "setting '%s': %ld is out of range [%ld, %ld]", name, v, p->min,
                           p->max);
        *config_int_field(conf, p) = (int)v;
        return RF_OK;
    case RF_CONF_ENUM:
        if (!config_enum_ok(p->values, value))
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "setting '%s': '%s' is not one of %s", name, value, p->values);
        break;
    case RF_CONF_STRING:
    case RF_CONF_SECRET:
        break;
    }
    if (strcmp(p->name, "approval_timeout") == 0 && rf_clock_parse_ms(value) <= 0)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "setting '%s': '%.200s' is not a duration (600, 600s, 10m, 24h)", name,
                       value);
    if (strcmp(p->name, "cloudevents_source") == 0 && !rf_cloudevents_source_ok(value))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "setting '%s': '%.200s' is not 1-255 printable ascii characters without"
                       " spaces",
                       name, value);
    free(*config_field(conf, p));
    *config_field(conf, p) = strdup(value);
    return RF_OK;
}

void rf_config_init(rf_config_t *conf)
{
    memset(conf, 0, sizeof(*conf));
    for (const rf_config_prop_t *p = rf_config_props; p->name; p++) {
        if (p->type == RF_CONF_INT)
            *config_int_field(conf, p) = (int)strtol(p->def, NULL, 10);
        else if (p->def)
            *config_field(conf, p) = strdup(p->def);
    }
}

void rf_config_release(rf_config_t *conf)
{
    for (const rf_config_prop_t *p = rf_config_props; p->name; p++) {
        if (p->type != RF_CONF_INT) {
            free(*config_field(conf, p));
            *config_field(conf, p) = NULL;
        }
    }
}

/* Reads a flat YAML mapping of scalars and sets each key. */
static rf_err_t config_load_yaml(rf_config_t *conf, const char *path, char *errstr,
                                 size_t errstr_size)
{
    rf_err_t result = RF_OK;
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_node_t *root;
    FILE *f;
    char sub[256];

    f = fopen(path, "rb");
    if (!f)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot open config file '%s': %s",
                       path, strerror(errno));
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "cannot parse config file '%s' line %zu: %s", path,
                         parser.problem_mark.line + 1, parser.problem ? parser.problem : "error");
        goto out_parser;
    }
    root = yaml_document_get_root_node(&doc);
    if (!root)
        goto out_doc; /* empty file */
    if (root->type != YAML_MAPPING_NODE) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "config file '%s': expected a mapping of settings", path);
        goto out_doc;
    }
    for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
         pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(&doc, pair->value);
        if (k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                             "config file '%s' line %zu: settings are scalar name: value pairs",
                             path, k->start_mark.line + 1);
            goto out_doc;
        }
        result = rf_config_set(conf, (const char *)k->data.scalar.value,
                               (const char *)v->data.scalar.value, sub, sizeof(sub));
        if (result != RF_OK) {
            rf_errf(result, errstr, errstr_size, "config file '%s' line %zu: %s", path,
                    k->start_mark.line + 1, sub);
            goto out_doc;
        }
    }
out_doc:
    yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&parser);
    fclose(f);
    return result;
}

static int config_is_foreign(const char *var, size_t len)
{
    for (const char *const *p = config_foreign_prefixes; *p; p++) {
        size_t n = strlen(*p);
        if (len >= n && strncmp(var, *p, n) == 0)
            return 1;
    }
    return 0;
}

extern char **environ;

rf_err_t rf_config_load(rf_config_t *conf, const char *path, char *errstr, size_t errstr_size)
{
    rf_err_t result;
    char name[128];
    char sub[256];

    if (path) {
        result = config_load_yaml(conf, path, errstr, errstr_size);
        if (result != RF_OK)
            return result;
    }
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t len;
        if (strncmp(*e, "RELFLEET_", 9) != 0 || !eq)
            continue;
        len = (size_t)(eq - *e);
        if (config_is_foreign(*e, len))
            continue;
        if (len - 9 >= sizeof(name))
            return rf_errf(RF_ERR_PERM, errstr, errstr_size, "unknown setting '%.*s'",
                           (int)len, *e);
        for (size_t i = 9; i < len; i++)
            name[i - 9] = (char)tolower((unsigned char)(*e)[i]);
        name[len - 9] = '\0';
        result = rf_config_set(conf, name, eq + 1, sub, sizeof(sub));
        if (result != RF_OK)
            return rf_errf(result, errstr, errstr_size, "environment variable '%.*s': %s",
                           (int)len, *e, sub);
    }
    return RF_OK;
}

rf_err_t rf_config_require(const rf_config_t *conf, const char *const *names, char *errstr,
                           size_t errstr_size)
{
    for (; *names; names++) {
        const rf_config_prop_t *p = config_find(*names);
        const char *v;
        char env[128];
        if (!p || p->type == RF_CONF_INT)
            continue;
        v = *config_field((rf_config_t *)conf, p);
        if (!v || !*v) {
            size_t i;
            for (i = 0; p->name[i] && i < sizeof(env) - 10; i++)
                env[i] = (char)toupper((unsigned char)p->name[i]);
            env[i] = '\0';
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "setting '%s' is required (environment RELFLEET_%s or --config)",
                           p->name, env);
        }
    }
    return RF_OK;
}

/* Writes text into a Markdown table cell: '|' would end the cell. */
static void config_write_cell(FILE *out, const char *text)
{
    for (; *text; text++) {
        if (*text == '|')
            fputc('\\', out);
        fputc(*text, out);
    }
}

void rf_config_write_reference(FILE *out)
{
    fputs("| setting | environment | type | default | description |\n", out);
    fputs("|---|---|---|---|---|\n", out);
    for (const rf_config_prop_t *p = rf_config_props; p->name; p++) {
        char env[128];
        size_t i;
        const char *type = "string";
        for (i = 0; p->name[i] && i < sizeof(env) - 1; i++)
            env[i] = (char)toupper((unsigned char)p->name[i]);
        env[i] = '\0';
        if (p->type == RF_CONF_INT)
            type = "integer";
        else if (p->type == RF_CONF_ENUM)
            type = p->values;
        else if (p->type == RF_CONF_SECRET)
            type = "secret";
        fprintf(out, "| `%s` | `RELFLEET_%s` | ", p->name, env);
        config_write_cell(out, type);
        if (p->type == RF_CONF_INT)
            fprintf(out, " (%ld..%ld)", p->min, p->max);
        fputs(" | ", out);
        config_write_cell(out, p->def ? p->def : "");
        fputs(" | ", out);
        config_write_cell(out, p->desc);
        fputs(" |\n", out);
    }
}

char *rf_config_secret(const rf_config_t *conf, const char *name)
{
    char line[4096];
    char env[160];
    size_t n = strlen(name);
    const char *v;
    char *found = NULL;
    FILE *f;
    size_t i;

    if (conf->secrets_file) {
        f = fopen(conf->secrets_file, "r");
        if (f) {
            while (!found && fgets(line, sizeof(line), f)) {
                line[strcspn(line, "\r\n")] = '\0';
                if (strncmp(line, name, n) == 0 && line[n] == '=')
                    found = strdup(line + n + 1);
            }
            fclose(f);
        }
    }
    if (found)
        return found;
    i = (size_t)snprintf(env, sizeof(env), "RELFLEET_SECRET_");
    for (const char *p = name; *p && i < sizeof(env) - 1; p++)
        env[i++] = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
    env[i] = '\0';
    v = getenv(env);
    return v ? strdup(v) : NULL;
}

const char *rf_config_cluster(const rf_config_t *conf, const char *env,
                              const char *service_cluster, char *buf, size_t size)
{
    const char *p = conf->clusters;
    size_t n = strlen(env);

    buf[0] = '\0';
    if (service_cluster && *service_cluster) {
        snprintf(buf, size, "%s", service_cluster);
        return buf;
    }
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > n && strncmp(p, env, n) == 0 && p[n] == '=') {
            snprintf(buf, size, "%.*s", (int)(len - n - 1), p + n + 1);
            break;
        }
        p = comma ? comma + 1 : NULL;
    }
    return buf;
}
