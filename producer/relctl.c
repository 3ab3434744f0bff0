/* relctl: publishes release requests and commands, reads the release history. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pwd.h>

#include "relctl.h"
#include "rf_log.h"
#include "rf_msg.h"
#include "rf_release.h"
#include "rf_schema.h"
#include "rf_store.h"

static const struct {
    const char *name;
    int (*fn)(relctl_t *, int, char **);
    const char *help;
} verbs[] = {
    {"deploy", relctl_cmd_deploy, "deploy --service S --env E --version V [-m DESC] [--wait]"},
    {"watch", relctl_cmd_watch, "watch ID             follow a release until it ends"},
    {"show", relctl_cmd_show, "show ID              the record and its timeline"},
    {"history", relctl_cmd_history, "history [--service S] [--env E] [--limit N]"},
    {"stats", relctl_cmd_stats,
     "stats [--service S] [--env E] [--group G] [--since 30d]  DORA metrics (docs/dora.md)"},
    {"status", relctl_cmd_status,
     "status [--hours N]   active, queued, awaiting approval, paused, recent failures"},
    {"cancel", relctl_cmd_command,
     "cancel ID            end a queued, awaiting or running release"},
    {"promote", relctl_cmd_command, "promote ID [--full]  next step of a gray release"},
    {"abort", relctl_cmd_command, "abort ID             abort a gray release"},
    {"rollback", relctl_cmd_rollback,
     "rollback ID | rollback --service S --env E [-m DESC] [--wait]  back to an earlier release"},
    {"redo", relctl_cmd_redo,
     "redo --service S --env E [-m DESC] [--wait]  the latest release again, restarting pods"},
    {"advance", relctl_cmd_advance,
     "advance --service S --from E1 --to E2 [--version V] [-m DESC] [--wait]  what runs in E1"
     " into E2"},
    {"approve", relctl_cmd_decide, "approve ID [-m WHY]  approve a release awaiting approval"},
    {"deny", relctl_cmd_decide, "deny ID -m WHY       deny it: it ends cancelled"},
    {"wave", relctl_cmd_wave,
     "wave create|show|watch|pause|resume|abort|list ...  one change across many services"},
    {"service", relctl_cmd_service, "service set|show|history S --env E [KEY=VALUE ...]"},
    {"template", relctl_cmd_template,
     "template sync DIR | template list | template check FILE [--service S --env E]"},
    {"image", relctl_cmd_image, "image add S TAG [--digest D] | image list S"},
    {"notify", relctl_cmd_notify, "notify add|list|remove S --env E ...  subscriptions to outcomes"},
    {"user", relctl_cmd_user,
     "user add|list|disable|enable|grant|revoke|token|key ...  users, roles, tokens, keys"},
    {"db", relctl_cmd_db, "db migrate | db status"},
};

static void relctl_help(FILE *out)
{
    fprintf(out, "usage: relctl VERB [OPTIONS]\n\n");
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        fprintf(out, "  relctl %s\n", verbs[i].help);
    fprintf(out, "\nRead verbs take --output json. Settings come from RELFLEET_* environment\n"
                 "variables or --config FILE (see `relfleet-worker --config-reference`).\n"
                 "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int relctl_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("relctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return RELCTL_FAIL;
}

int relctl_usage(const char *fmt, ...)
{
    va_list ap;

    fputs("relctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see relctl --help)\n", stderr);
    return RELCTL_USAGE;
}

rf_db_t *relctl_db(relctl_t *ctl)
{
    static const char *const required[] = {"pg_dsn", NULL};
    char errstr[1024];

    if (ctl->db)
        return ctl->db;
    if (rf_config_require(&ctl->conf, required, errstr, sizeof(errstr)) != RF_OK) {
        relctl_fail("%s", errstr);
        return NULL;
    }
    /* A failover or a short outage is waited out (pg_failover_timeout_ms), connecting and
     * in rf_db_exec; a write whose outcome the loss left unknown is not repeated. */
    ctl->db = rf_db_open(ctl->conf.pg_dsn, ctl->conf.pg_failover_timeout_ms, errstr,
                         sizeof(errstr));
    if (!ctl->db)
        relctl_fail("%s", errstr);
    else
        rf_db_set_prepared(ctl->db, strcmp(ctl->conf.pg_prepared_statements, "on") == 0);
    return ctl->db;
}

rf_producer_t *relctl_producer(relctl_t *ctl)
{
    static const char *const required[] = {"kafka_brokers", NULL};
    char errstr[1024];

    if (ctl->producer)
        return ctl->producer;
    if (rf_config_require(&ctl->conf, required, errstr, sizeof(errstr)) != RF_OK) {
        relctl_fail("%s", errstr);
        return NULL;
    }
    ctl->producer = rf_producer_new(&ctl->conf, errstr, sizeof(errstr));
    if (!ctl->producer)
        relctl_fail("cannot create kafka producer: %s", errstr);
    return ctl->producer;
}

void relctl_print_json(json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(j);
}

int relctl_publish(relctl_t *ctl, const char *suffix, json_t *msg)
{
    rf_schema_registry_t *reg = rf_schema_registry_new();
    const char *schema_dir = ctl->conf.schema_dir ? ctl->conf.schema_dir
                                                  : RELFLEET_SOURCE_DIR "/schemas";
    rf_producer_t *p;
    char errstr[1024], key[300];
    char *text = NULL;
    int result = RELCTL_FAIL;

    /* Validate against the very schema the workers use: a clear error here, not a dlq entry. */
    if (rf_schema_registry_load_dir(reg, schema_dir, errstr, sizeof(errstr)) != RF_OK) {
        relctl_fail("cannot load schemas from '%s': %s", schema_dir, errstr);
        goto out;
    }
    if (rf_schema_validate(reg, json_string_value(json_object_get(msg, "schema")), msg, errstr,
                           sizeof(errstr)) != RF_OK) {
        result = relctl_usage("invalid %s: %s", suffix, errstr);
        goto out;
    }
    if (relctl_sign(ctl, msg) != RELCTL_OK)
        goto out;
    p = relctl_producer(ctl);
    if (!p)
        goto out;
    snprintf(key, sizeof(key), "%s/%s", json_string_value(json_object_get(msg, "env")),
             json_string_value(json_object_get(msg, "service")));
    text = json_dumps(msg, JSON_COMPACT);
    if (rf_producer_send(p, suffix, key, text, strlen(text), errstr, sizeof(errstr)) != RF_OK) {
        relctl_fail("cannot publish to '%s%s': %s", ctl->conf.topic_prefix, suffix, errstr);
        goto out;
    }
    result = RELCTL_OK;
out:
    free(text);
    rf_schema_registry_destroy(reg);
    return result;
}

int relctl_request(relctl_t *ctl, json_t *msg, int wait)
{
    char id[RF_MSG_UUID_SIZE], parent[RF_MSG_UUID_SIZE];
    const char *p;
    int result;

    if (!msg)
        return relctl_fail("out of memory");
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(msg, "release_id")));
    p = json_string_value(json_object_get(msg, "parent"));
    snprintf(parent, sizeof(parent), "%s", p ? p : "");
    result = relctl_publish(ctl, "requests", msg);
    json_decref(msg);
    if (result != RELCTL_OK)
        return result;
    if (wait)
        return relctl_follow(ctl, id, ctl->json);
    if (ctl->json)
        relctl_print_json(json_pack("{s:s, s:s*}", "release_id", id, "parent",
                                    *parent ? parent : NULL));
    else
        printf("%s\n", id);
    return RELCTL_OK;
}

int main(int argc, char **argv)
{
    relctl_t ctl;
    const char *config_path = NULL;
    char errstr[1024];
    int result = RELCTL_USAGE;
    int argi = 1;

    rf_log_setup("relctl", RF_LOG_WARN, RF_LOG_LOGFMT);
    while (argi < argc && argv[argi][0] == '-') {
        if (strcmp(argv[argi], "--config") == 0 && argi + 1 < argc) {
            config_path = argv[argi + 1];
            argi += 2;
        } else if (strcmp(argv[argi], "--help") == 0 || strcmp(argv[argi], "-h") == 0) {
            relctl_help(stdout);
            return RELCTL_OK;
        } else {
            return relctl_usage("unknown option '%s'", argv[argi]);
        }
    }
    if (argi >= argc) {
        relctl_help(stderr);
        return RELCTL_USAGE;
    }
    memset(&ctl, 0, sizeof(ctl));
    rf_config_init(&ctl.conf);
    if (rf_config_load(&ctl.conf, config_path, errstr, sizeof(errstr)) != RF_OK) {
        fprintf(stderr, "relctl: %s\n", errstr);
        rf_config_release(&ctl.conf);
        return RELCTL_USAGE;
    }
    ctl.operator_name = ctl.conf.operator_name ? ctl.conf.operator_name : getenv("USER");
    if (!ctl.operator_name || !*ctl.operator_name) {
        struct passwd *pw = getpwuid(getuid());
        ctl.operator_name = pw ? pw->pw_name : "unknown";
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strcmp(verbs[i].name, argv[argi]) != 0)
            continue;
        for (int j = argi + 1; j < argc; j++) {
            if (strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0) {
                printf("usage: relctl %s\n", verbs[i].help);
                result = RELCTL_OK;
                goto out;
            }
        }
        result = verbs[i].fn(&ctl, argc - argi, argv + argi);
        goto out;
    }
    result = relctl_usage("unknown verb '%s'", argv[argi]);
out:
    rf_producer_destroy(ctl.producer);
    rf_db_destroy(ctl.db);
    free(ctl.user);
    rf_config_release(&ctl.conf);
    return result;
}
