/* Configuration: one table of settings, read from defaults, a YAML file and the environment. */
#ifndef RF_CONFIG_H
#define RF_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "rf_err.h"

typedef struct rf_config {
    char *kafka_brokers;
    char *topic_prefix;
    char *cloudevents_source;
    char *pg_dsn;
    char *pg_prepared_statements;
    int pg_failover_timeout_ms;
    char *redis_url;
    char *redis_sentinel_password;
    char *redis_tls_ca_file;
    char *redis_tls_cert_file;
    char *redis_tls_key_file;
    char *redis_tls_server_name;
    char *redis_tls_insecure_skip_verify;
    char *kubeconfig;
    char *kube_context;
    char *clusters;
    char *smtp_url;
    char *smtp_from;
    char *smtp_user;
    char *smtp_starttls;
    char *smtp_ca_file;
    char *secrets_file;
    char *schema_dir;
    char *log_level;
    char *log_format;
    char *operator_name;
    char *token;
    char *auth_required;
    char *signing_key_id;
    char *bootstrap_admin;
    char *metrics_addr;
    char *metrics_addr_file;
    char *kafka_options;
    char *approval_timeout;
    int lock_lease_ms;
    int sweep_interval_ms;
    char *render_validation;      /* strict | warn | off */
    int render_schema_recheck_ms;
    int kafka_timeout_ms;
    int session_timeout_ms;
    int retry_max_ms;
    int shutdown_timeout_ms;
    int linger_ms;
    int kafka_fetch_wait_ms;
    int kafka_queued_max_kbytes;
    int batch_max;
    int kafka_stats_interval_ms;
    int health_interval_ms;
    int notify_max_attempts;
    int notify_backoff_ms;
    int notify_backoff_max_ms;
    int notify_timeout_ms;
    int notify_concurrency;
    int dingtalk_rate_per_min;
    int signature_window_s;
    int auth_fail_limit;
    int auth_fail_window_ms;
    int auth_block_ms;
    int auth_block_max_ms;
} rf_config_t;

typedef enum rf_config_type {
    RF_CONF_STRING,
    RF_CONF_INT,
    RF_CONF_ENUM,
    RF_CONF_SECRET, /* a string that is never printed */
} rf_config_type_t;

typedef struct rf_config_prop {
    const char *name;      /* key in YAML; environment name is RELFLEET_ + upper case */
    rf_config_type_t type;
    size_t offset;         /* of the field in rf_config_t */
    const char *def;       /* default, NULL = unset */
    long min, max;         /* bounds of an int */
    const char *values;    /* enum: the allowed values, separated by '|' */
    const char *desc;
} rf_config_prop_t;

/* The table itself, terminated by an entry with a NULL name. */
extern const rf_config_prop_t rf_config_props[];

/* Sets every setting to its default. */
void rf_config_init(rf_config_t *conf);
void rf_config_release(rf_config_t *conf);

/* Reads the YAML file (a flat mapping of setting names; NULL = none), then the
 * environment (RELFLEET_<NAME>, which wins over the file). An unknown key in the file,
 * an unknown RELFLEET_ variable that is not one of the tools' own, or a bad value is
 * RF_ERR_PERM with errstr naming it. */
rf_err_t rf_config_load(rf_config_t *conf, const char *path, char *errstr, size_t errstr_size);

/* Sets one setting by name from text, validating it. */
rf_err_t rf_config_set(rf_config_t *conf, const char *name, const char *value, char *errstr,
                       size_t errstr_size);

/* Requires that the named string settings are set (e.g. "pg_dsn", "kafka_brokers"). */
rf_err_t rf_config_require(const rf_config_t *conf, const char *const *names, char *errstr,
                           size_t errstr_size);

/* Writes the reference of every setting as a Markdown table (the docs are generated). */
void rf_config_write_reference(FILE *out);

/* The kubeconfig context of a release of env: service_cluster (the service's own cluster
 * setting) when set, else the `clusters` map entry of env, else "" (the kube_context setting
 * or the kubeconfig's current context). Writes into buf and returns it. */
const char *rf_config_cluster(const rf_config_t *conf, const char *env,
                              const char *service_cluster, char *buf, size_t size);

/* Reads a secret by name from the secrets file (`name=value` lines) or, failing that,
 * from the environment variable RELFLEET_SECRET_<NAME>. Returns a new string or NULL. */
char *rf_config_secret(const rf_config_t *conf, const char *name);

#endif
