/* relctl notify: the subscriptions of a service to the outcomes of its releases. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relctl.h"
#include "rf_buf.h"
#include "rf_notify.h"

#define NOTIFY_ALL_OUTCOMES "succeeded,failed,cancelled,superseded,rejected"
#define NOTIFY_HELP                                                                                \
    "notify add S --env E --channel email|dingtalk|webhook --target T [--secret NAME]"             \
    " [--on succeeded,failed,...] [--format json|cloudevents]\n"                                   \
    "       relctl notify list [S] [--env E] [--output json]\n"                                    \
    "       relctl notify remove ID | remove S --env E --channel C --target T"

typedef struct notify_args {
    const char *service, *env, *channel, *target, *secret, *on, *format;
} notify_args_t;

static int notify_usage(void)
{
    return relctl_usage("usage: relctl %s", NOTIFY_HELP);
}

/* Options after the verb; positional words are left in argv[optind..]. */
static int notify_parse(relctl_t *ctl, int argc, char **argv, notify_args_t *a)
{
    static const struct option opts[] = {
        {"env", required_argument, NULL, 'e'},    {"channel", required_argument, NULL, 'c'},
        {"target", required_argument, NULL, 't'}, {"secret", required_argument, NULL, 's'},
        {"on", required_argument, NULL, 'n'},     {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0}};
    int c;

    memset(a, 0, sizeof(*a));
    optind = 0;
    while ((c = getopt_long(argc, argv, "e:c:t:s:n:f:o:", opts, NULL)) != -1) {
        switch (c) {
        case 'e':
            a->env = optarg;
            break;
        case 'c':
            a->channel = optarg;
            break;
        case 't':
            a->target = optarg;
            break;
        case 's':
            a->secret = optarg;
            break;
        case 'n':
            a->on = optarg;
            break;
        case 'f':
            a->format = optarg;
            break;
        case 'o':
            ctl->json = strcmp(optarg, "json") == 0;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

/* A secret's name: what rf_config_secret can look up; never the secret itself. */
static int notify_secret_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 128 || *s == '.' || *s == '-')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return 0;
    return 1;
}

/* "succeeded, failed" -> "{succeeded,failed}" (items already checked). */
static void notify_pg_array(const char *list, rf_buf_t *out)
{
    rf_buf_addc(out, '{');
    for (const char *p = list; *p; p++)
        if (*p != ' ')
            rf_buf_addc(out, *p);
    rf_buf_addc(out, '}');
}

static int notify_add(relctl_t *ctl, const notify_args_t *a)
{
    rf_db_t *db;
    rf_buf_t on = RF_BUF_INIT, target = RF_BUF_INIT;
    PGresult *res = NULL;
    char errstr[1024];
    int channel, result = RELCTL_FAIL;

    if (!a->service || !a->env || !a->channel || !a->target)
        return relctl_usage("notify add needs S, --env, --channel and --target");
    channel = rf_notify_channel_parse(a->channel);
    if (channel < 0)
        return relctl_usage("unknown channel '%s' (email, dingtalk, webhook)", a->channel);
    if (rf_notify_target_check((rf_notify_channel_t)channel, a->target, errstr, sizeof(errstr)) !=
        RF_OK)
        return relctl_usage("%s", errstr);
    if (a->on && rf_notify_outcomes_check(a->on, errstr, sizeof(errstr)) != RF_OK)
        return relctl_usage("--on: %s", errstr);
    if (a->format && strcmp(a->format, "json") != 0 && strcmp(a->format, "cloudevents") != 0)
        return relctl_usage("unknown format '%s' (json, cloudevents)", a->format);
    if (a->format && strcmp(a->format, "cloudevents") == 0 && channel != RF_NOTIFY_WEBHOOK)
        return relctl_usage("--format cloudevents is for webhooks only");
    if (a->secret && !notify_secret_name_ok(a->secret))
        return relctl_usage("--secret takes the name of a secret (letters, digits, '_', '.',"
                            " '-'), not its value");
    if (relctl_require(ctl, "admin", a->service, a->env) != RELCTL_OK)
        return RELCTL_FAIL;
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    notify_pg_array(a->on ? a->on : NOTIFY_ALL_OUTCOMES, &on);
    /* Addresses are stored as "a@x,b@y": one spelling per target, no spaces. */
    for (const char *t = a->target; *t; t++)
        if (*t != ' ')
            rf_buf_addc(&target, *t);
    {
        const char *p[8] = {a->service,      a->env,    a->channel,         rf_buf_str(&target),
                            rf_buf_str(&on), a->secret, ctl->operator_name, a->format};
        if (rf_db_exec(db, "SELECT 1 FROM services WHERE service = $1 AND env = $2", 2, p, &res,
                       errstr, sizeof(errstr)) != RF_OK) {
            relctl_fail("%s", errstr);
            goto out;
        }
        if (PQntuples(res) == 0) {
            result =
                relctl_fail("no service '%s' in env '%s' (relctl service set)", a->service, a->env);
            goto out;
        }
        PQclear(res);
        res = NULL;
        if (rf_db_exec(db,
                       "INSERT INTO notify_subscriptions (service, env, channel, target, on_status,"
                       " secret_name, created_by, format) VALUES ($1, $2, $3, $4, $5::text[], $6,"
                       " $7, coalesce($8, 'json')) ON CONFLICT (service, env, channel, target) DO"
                       " UPDATE SET on_status = excluded.on_status, secret_name ="
                       " excluded.secret_name, format = excluded.format"
                       " RETURNING id, (xmax = 0)::text, array_to_string(on_status, ','), format",
                       8, p, &res, errstr, sizeof(errstr)) != RF_OK) {
            relctl_fail("cannot add the subscription: %s", errstr);
            goto out;
        }
    }
    if (ctl->json)
        relctl_print_json(json_pack("{s:I, s:b}", "id",
                                    (json_int_t)strtoll(PQgetvalue(res, 0, 0), NULL, 10), "created",
                                    strcmp(PQgetvalue(res, 0, 1), "true") == 0));
    else
        printf("%s subscription %s: %s %s of %s in %s on %s%s\n",
               strcmp(PQgetvalue(res, 0, 1), "true") == 0 ? "added" : "updated",
               PQgetvalue(res, 0, 0), a->channel, rf_buf_str(&target), a->service, a->env,
               PQgetvalue(res, 0, 2),
               strcmp(PQgetvalue(res, 0, 3), "cloudevents") == 0 ? " as cloudevents" : "");
    result = RELCTL_OK;
out:
    PQclear(res);
    rf_buf_release(&on);
    rf_buf_release(&target);
    return result;
}

static int notify_list(relctl_t *ctl, const notify_args_t *a)
{
    const char *p[2] = {a->service, a->env};
    rf_db_t *db = relctl_db(ctl);
    PGresult *res = NULL;
    char errstr[1024];
    json_t *list;

    if (!db)
        return RELCTL_FAIL;
    if (rf_db_exec(db,
                   "SELECT id, service, env, channel, target, array_to_string(on_status, ','),"
                   " secret_name, relfleet_iso(created_at), created_by, format"
                   " FROM notify_subscriptions"
                   " WHERE ($1::text IS NULL OR service = $1) AND ($2::text IS NULL OR env = $2)"
                   " ORDER BY service, env, id",
                   2, p, &res, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    list = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                              (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "service",
                              PQgetvalue(res, i, 1), "env", PQgetvalue(res, i, 2), "channel",
                              PQgetvalue(res, i, 3), "target", PQgetvalue(res, i, 4), "on",
                              PQgetvalue(res, i, 5), "created_at", PQgetvalue(res, i, 7),
                              "created_by", PQgetvalue(res, i, 8));
        json_object_set_new(o, "format", json_string(PQgetvalue(res, i, 9)));
        json_object_set_new(o, "secret",
                            rf_db_value(res, i, 6) ? json_string(rf_db_value(res, i, 6))
                                                   : json_null());
        json_array_append_new(list, o);
    }
    if (ctl->json) {
        relctl_print_json(list);
    } else {
        for (int i = 0; i < PQntuples(res); i++)
            printf("%-5s %-20s %-8s %-9s %-40s on %s%s%s%s\n", PQgetvalue(res, i, 0),
                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                   PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
                   rf_db_value(res, i, 6) ? " secret " : "",
                   rf_db_value(res, i, 6) ? rf_db_value(res, i, 6) : "",
                   strcmp(PQgetvalue(res, i, 9), "cloudevents") == 0 ? " as cloudevents" : "");
        json_decref(list);
    }
    PQclear(res);
    return RELCTL_OK;
}

static int notify_remove(relctl_t *ctl, const notify_args_t *a, const char *id)
{
    const char *p[5] = {id, a->service, a->env, a->channel, a->target};
    rf_db_t *db;
    PGresult *res = NULL;
    char errstr[1024];
    int result = RELCTL_FAIL;

    if (!id && (!a->service || !a->env || !a->channel || !a->target))
        return relctl_usage("notify remove needs ID, or S with --env, --channel and --target");
    if (id && strspn(id, "0123456789") != strlen(id))
        return relctl_usage("'%s' is not a subscription id", id);
    /* By id the service is not known yet: that takes an admin of everything. */
    if (relctl_require(ctl, "admin", id ? "*" : a->service, id ? "*" : a->env) != RELCTL_OK)
        return RELCTL_FAIL;
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    if (rf_db_begin(db, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    /* Notifications still waiting for it end now; one being sent finishes. */
    if (rf_db_exec(db,
                   "WITH s AS (DELETE FROM notify_subscriptions WHERE ($1::bigint IS NOT NULL AND"
                   " id = $1::bigint) OR ($1::bigint IS NULL AND service = $2 AND env = $3 AND"
                   " channel = $4 AND target = $5) RETURNING id, service, env, channel, target),"
                   " n AS (UPDATE notifications SET state = 'failed', last_error ="
                   " 'subscription removed', updated_at = clock_timestamp() WHERE subscription_id"
                   " IN (SELECT id FROM s) AND state = 'pending')"
                   " SELECT id, service, env, channel, target FROM s",
                   5, p, &res, errstr, sizeof(errstr)) != RF_OK) {
        rf_db_rollback(db);
        return relctl_fail("cannot remove the subscription: %s", errstr);
    }
    if (PQntuples(res) == 0) {
        rf_db_rollback(db);
        relctl_fail("no such subscription");
        goto out;
    }
    if (rf_db_commit(db, errstr, sizeof(errstr)) != RF_OK) {
        relctl_fail("%s", errstr);
        goto out;
    }
    printf("removed subscription %s: %s %s of %s in %s\n", PQgetvalue(res, 0, 0),
           PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 1),
           PQgetvalue(res, 0, 2));
    result = RELCTL_OK;
out:
    PQclear(res);
    return result;
}

int relctl_cmd_notify(relctl_t *ctl, int argc, char **argv)
{
    notify_args_t a;
    const char *verb;
    const char *word = NULL;

    if (argc < 2)
        return notify_usage();
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("usage: relctl %s\n", NOTIFY_HELP);
        return RELCTL_OK;
    }
    verb = argv[1];
    if (notify_parse(ctl, argc - 1, argv + 1, &a) != 0)
        return notify_usage();
    if (optind < argc - 1)
        word = argv[1 + optind];
    if (optind + 1 < argc - 1)
        return relctl_usage("notify %s: unexpected '%s'", verb, argv[2 + optind]);
    if (strcmp(verb, "add") == 0) {
        a.service = word;
        return notify_add(ctl, &a);
    }
    if (strcmp(verb, "list") == 0) {
        a.service = word;
        return notify_list(ctl, &a);
    }
    if (strcmp(verb, "remove") == 0) {
        if (word && !a.env && !a.channel && !a.target)
            return notify_remove(ctl, &a, word);
        a.service = word;
        return notify_remove(ctl, &a, NULL);
    }
    return relctl_usage("unknown notify verb '%s' (add, list, remove)", verb);
}
