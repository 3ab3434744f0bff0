/* relctl status: the fleet at a glance (active, paused, queued, awaiting releases, recent
 * failures). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relctl.h"

static const char status_sql[] =
    "SELECT jsonb_build_object("
    " 'active', (SELECT coalesce(jsonb_agg(x ORDER BY x->>'started_at'), '[]') FROM"
    "   (SELECT jsonb_build_object('id', id, 'service', service, 'env', env, 'version', version,"
    "    'status', status, 'operator', operator, 'started_at', relfleet_iso(started_at),"
    "    'running_s', extract(epoch FROM now() - started_at)::int,"
    "    'progress', track -> 'progress') AS x"
    "    FROM releases WHERE status IN ('rendering','applying','progressing','paused')) a),"
    " 'queued', (SELECT coalesce(jsonb_agg(x ORDER BY x->>'created_at'), '[]') FROM"
    "   (SELECT jsonb_build_object('id', id, 'service', service, 'env', env, 'version', version,"
    "    'operator', operator, 'created_at', relfleet_iso(created_at),"
    "    'waiting_s', extract(epoch FROM now() - created_at)::int) AS x"
    "    FROM releases WHERE status = 'queued') q),"
    " 'awaiting_approval', (SELECT coalesce(jsonb_agg(x ORDER BY x->>'created_at'), '[]') FROM"
    "   (SELECT jsonb_build_object('id', id, 'service', service, 'env', env, 'version', version,"
    "    'operator', operator, 'created_at', relfleet_iso(created_at), 'approvals',"
    "    (SELECT count(*) FROM release_approvals a WHERE a.release_id = r.id"
    "     AND a.decision = 'approved'), 'approvals_needed', approvals_needed,"
    "    'waiting_s', extract(epoch FROM now() - awaiting_since)::int) AS x"
    "    FROM releases r WHERE status = 'awaiting_approval') w),"
    " 'recent_failures', (SELECT coalesce(jsonb_agg(x ORDER BY x->>'finished_at' DESC), '[]')"
    "   FROM (SELECT jsonb_build_object('id', id, 'service', service, 'env', env, 'version',"
    "    version, 'status', status, 'error', error, 'finished_at', relfleet_iso(finished_at))"
    "    AS x FROM releases WHERE status IN ('failed', 'rejected')"
    "    AND finished_at > now() - make_interval(hours => $1::int)"
    "    ORDER BY finished_at DESC LIMIT 20) f),"
    " 'counts', (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM (SELECT status,"
    "    count(*) AS n FROM releases WHERE created_at > now() - make_interval(hours => $1::int)"
    "    GROUP BY status) c))";

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

int relctl_cmd_status(relctl_t *ctl, int argc, char **argv)
{
    const char *hours = "24";
    rf_db_t *db;
    PGresult *res = NULL;
    json_t *st, *r;
    char errstr[1024];
    const char *k;
    size_t i;

    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--output") == 0 && a + 1 < argc)
            ctl->json = strcmp(argv[++a], "json") == 0;
        else if (strcmp(argv[a], "--hours") == 0 && a + 1 < argc && atoi(argv[a + 1]) > 0)
            hours = argv[++a];
        else
            return relctl_usage("status: unexpected argument '%s'", argv[a]);
    }
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    if (rf_db_exec(db, status_sql, 1, &hours, &res, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    st = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    if (ctl->json) {
        relctl_print_json(st);
        return RELCTL_OK;
    }
    printf("active releases: %zu\n", json_array_size(json_object_get(st, "active")));
    json_array_foreach(json_object_get(st, "active"), i, r) {
        const json_t *p = json_object_get(r, "progress");
        printf("  %-36s %-20s %-6s %-12s %-11s %5llds", str(r, "id"), str(r, "service"),
               str(r, "env"), str(r, "version"), str(r, "status"),
               (long long)json_integer_value(json_object_get(r, "running_s")));
        if (json_is_object(p))
            printf("  %lld/%lld available", (long long)json_integer_value(json_object_get(p, "available")),
                   (long long)json_integer_value(json_object_get(p, "desired")));
        printf("\n");
    }
    printf("queued releases: %zu\n", json_array_size(json_object_get(st, "queued")));
    json_array_foreach(json_object_get(st, "queued"), i, r)
        printf("  %-36s %-20s %-6s %-12s waiting %llds\n", str(r, "id"), str(r, "service"),
               str(r, "env"), str(r, "version"),
               (long long)json_integer_value(json_object_get(r, "waiting_s")));
    printf("awaiting approval: %zu\n",
           json_array_size(json_object_get(st, "awaiting_approval")));
    json_array_foreach(json_object_get(st, "awaiting_approval"), i, r)
        printf("  %-36s %-20s %-6s %-12s %lld of %lld approvals, waiting %llds (by %s)\n",
               str(r, "id"), str(r, "service"), str(r, "env"), str(r, "version"),
               (long long)json_integer_value(json_object_get(r, "approvals")),
               (long long)json_integer_value(json_object_get(r, "approvals_needed")),
               (long long)json_integer_value(json_object_get(r, "waiting_s")), str(r, "operator"));
    printf("failures in the last %s h: %zu\n", hours,
           json_array_size(json_object_get(st, "recent_failures")));
    json_array_foreach(json_object_get(st, "recent_failures"), i, r)
        printf("  %-36s %-20s %-6s %-12s %-9s %s\n", str(r, "id"), str(r, "service"),
               str(r, "env"), str(r, "version"), str(r, "status"), str(r, "error"));
    printf("releases in the last %s h by status:", hours);
    json_object_foreach(json_object_get(st, "counts"), k, r)
        printf(" %s=%lld", k, (long long)json_integer_value(r));
    printf("\n");
    json_decref(st);
    return RELCTL_OK;
}
