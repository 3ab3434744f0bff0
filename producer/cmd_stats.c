/* relctl stats: DORA metrics (deployment frequency, lead time, change failure rate, time to
 * restore) per service/env, env and group and for the fleet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relctl.h"
#include "rf_stats.h"

/* "850 ms", "6.1 s", "12.0 min", "3.5 h", "2.1 d"; "-" for null. */
static const char *stats_duration(const json_t *ms, char *buf, size_t size)
{
    double v;

    if (!json_is_number(ms))
        return "-";
    v = json_number_value(ms);
    if (v < 1000)
        snprintf(buf, size, "%.0f ms", v);
    else if (v < 60e3)
        snprintf(buf, size, "%.1f s", v / 1e3);
    else if (v < 3600e3)
        snprintf(buf, size, "%.1f min", v / 60e3);
    else if (v < 86400e3)
        snprintf(buf, size, "%.1f h", v / 3600e3);
    else
        snprintf(buf, size, "%.1f d", v / 86400e3);
    return buf;
}

static long long stats_int(const json_t *m, const char *key)
{
    return (long long)json_number_value(json_object_get(m, key));
}

static void stats_row(const char *name, const json_t *m)
{
    char lead[32], restore[32], rate[48];
    const json_t *cfr = json_object_get(m, "change_failure_rate");

    if (json_is_number(cfr))
        snprintf(rate, sizeof(rate), "%.1f%% (%lld/%lld)", json_number_value(cfr) * 100,
                 stats_int(m, "failed_changes"), stats_int(m, "changes"));
    else
        snprintf(rate, sizeof(rate), "-");
    printf("%-32s %9.2f  %-10s %-16s %-10s %lld (%lld ok, %lld failed, %lld other)%s\n", name,
           json_number_value(json_object_get(m, "deployment_frequency_per_day")),
           stats_duration(json_object_get(json_object_get(m, "lead_time_ms"), "p50"), lead,
                          sizeof(lead)),
           rate,
           stats_duration(json_object_get(json_object_get(m, "time_to_restore_ms"), "p50"), restore,
                          sizeof(restore)),
           stats_int(m, "releases"), stats_int(m, "succeeded"), stats_int(m, "failed"),
           stats_int(m, "releases") - stats_int(m, "succeeded") - stats_int(m, "failed"),
           stats_int(m, "unrestored") > 0 ? "  not restored yet" : "");
}

int relctl_cmd_stats(relctl_t *ctl, int argc, char **argv)
{
    rf_stats_query_t q = {RF_STATS_SINCE_DEFAULT, NULL, NULL, NULL, NULL};
    const char *field = NULL;
    json_t *st = NULL, *row;
    char errstr[1024], name[200], *text = NULL;
    rf_db_t *db;
    rf_err_t err;
    size_t i;

    for (int a = 1; a < argc; a++) {
        const char *opt = argv[a];
        if (a + 1 >= argc)
            return relctl_usage("stats: unexpected argument '%s'", opt);
        if (strcmp(opt, "--output") == 0)
            ctl->json = strcmp(argv[++a], "json") == 0;
        else if (strcmp(opt, "--service") == 0)
            q.service = argv[++a];
        else if (strcmp(opt, "--env") == 0)
            q.env = argv[++a];
        else if (strcmp(opt, "--group") == 0)
            q.group = argv[++a];
        else if (strcmp(opt, "--since") == 0)
            q.since = argv[++a];
        else
            return relctl_usage("stats: unexpected argument '%s'", opt);
    }
    if (relctl_whoami(ctl, &q.user) != RELCTL_OK)
        return RELCTL_FAIL;
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    err = rf_stats_run(db, &q, &text, &field, errstr, sizeof(errstr));
    if (err != RF_OK && field)
        return relctl_usage("stats: %s", errstr);
    if (err != RF_OK)
        return relctl_fail("cannot compute statistics: %s", errstr);
    st = json_loads(text, 0, NULL);
    free(text);
    if (!st)
        return relctl_fail("cannot compute statistics: the database answered no json");
    if (ctl->json) {
        /* Ten digits: 0.3333 prints as such, not as 0.33329999999999999. */
        json_dumpf(st, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        fputc('\n', stdout);
        json_decref(st);
        return RELCTL_OK;
    }
    printf("releases that ended from %s to %s (%.1f days)\n",
           json_string_value(json_object_get(st, "since")),
           json_string_value(json_object_get(st, "until")),
           json_number_value(json_object_get(st, "days")));
    printf("%-32s %9s  %-10s %-16s %-10s %s\n", "", "deploys/d", "lead p50", "change failure",
           "restore p50", "releases");
    stats_row("fleet", json_object_get(st, "fleet"));
    json_array_foreach(json_object_get(st, "envs"), i, row)
    {
        snprintf(name, sizeof(name), "env %s", json_string_value(json_object_get(row, "env")));
        stats_row(name, row);
    }
    json_array_foreach(json_object_get(st, "groups"), i, row)
    {
        snprintf(name, sizeof(name), "group %s", json_string_value(json_object_get(row, "group")));
        stats_row(name, row);
    }
    json_array_foreach(json_object_get(st, "services"), i, row)
    {
        snprintf(name, sizeof(name), "%s/%s", json_string_value(json_object_get(row, "service")),
                 json_string_value(json_object_get(row, "env")));
        stats_row(name, row);
    }
    json_decref(st);
    return RELCTL_OK;
}
