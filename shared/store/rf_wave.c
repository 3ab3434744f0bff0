/* Waves: planning and storing a wave, its commands, its record (sql/009_waves.sql). */
#include "rf_wave.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_buf.h"
#include "rf_strategy.h"
#include "rf_msg.h"

#define WAVE_MAX_PARALLEL 100000

static int wave_is_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789-", s[i]))
            return 0;
    return 1;
}

static int wave_is_id(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

    if (!s || strlen(s) != sizeof(shape) - 1)
        return 0;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == '-' ? s[i] != '-' : !strchr("0123456789abcdef", s[i]))
            return 0;
    return 1;
}

/* A usage error: the spec itself is wrong. */
static rf_err_t wave_bad(int *usage, char *errstr, size_t errstr_size, const char *fmt,
                         const char *arg)
{
    *usage = 1;
    return rf_errf(RF_ERR_PERM, errstr, errstr_size, fmt, arg ? arg : "");
}

/* The failure budget: "F", F or "F%" of total. -1 when malformed. */
static int wave_budget(const json_t *v, int total, char *spec, size_t spec_size)
{
    const char *s;
    char *end;
    double x;

    if (!v) {
        snprintf(spec, spec_size, "0");
        return 0;
    }
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
            return -1;
        snprintf(spec, spec_size, "%lld", (long long)json_integer_value(v));
        return (int)json_integer_value(v);
    }
    s = json_string_value(v);
    if (!s || !*s || strlen(s) > 16)
        return -1;
    x = strtod(s, &end);
    if (end == s || x < 0 || (*end && strcmp(end, "%") != 0))
        return -1;
    snprintf(spec, spec_size, "%s", s);
    if (*end == '%') {
        if (x > 100)
            return -1;
        return (int)floor(x * total / 100.0 + 1e-9);
    }
    if (x != floor(x) || x > 1000000)
        return -1;
    return (int)x;
}

/* Assigns each selected service (names, in name order) a step: step_of[i], and the
 * cumulative ends of the steps; the order is the services of services-steps first, in
 * step order, then the others in name order. RF_OK or a usage error. */
static rf_err_t wave_plan(const json_t *steps, char **names, int n, int *order, int *step_of,
                          json_t *ends, int *usage, char *errstr, size_t errstr_size)
{
    char *taken = calloc((size_t)n, 1);
    size_t k;
    const json_t *st;
    int planned = 0, next = 0;
    rf_err_t result = RF_OK;

    if (!taken)
        abort();
    json_array_foreach(steps, k, st)
    {
        const json_t *svcs = json_object_get(st, "services");
        const json_t *pct = json_object_get(st, "percent");
        char where[32];

        snprintf(where, sizeof(where), "%zu", k + 1);
        if (!json_is_object(st) || json_object_size(st) != 1 || (!svcs && !pct)) {
            result =
                wave_bad(usage, errstr, errstr_size,
                         "step %s: a step is {\"services\": [...]} or {\"percent\": P}", where);
            goto out;
        }
        if (svcs) {
            size_t j;
            const json_t *s;
            if (!json_is_array(svcs) || json_array_size(svcs) == 0) {
                result = wave_bad(usage, errstr, errstr_size,
                                  "step %s: \"services\" takes a list of service names", where);
                goto out;
            }
            json_array_foreach(svcs, j, s)
            {
                int found = -1;
                for (int i = 0; i < n && json_is_string(s); i++)
                    if (strcmp(names[i], json_string_value(s)) == 0)
                        found = i;
                if (found < 0) {
                    result = wave_bad(usage, errstr, errstr_size,
                                      "service '%s' of a step is not one the wave selects",
                                      json_is_string(s) ? json_string_value(s) : "?");
                    goto out;
                }
                if (taken[found]) {
                    result = wave_bad(usage, errstr, errstr_size, "service '%s' is in two steps",
                                      names[found]);
                    goto out;
                }
                taken[found] = 1;
                order[planned] = found;
                step_of[planned++] = (int)k;
            }
        } else {
            double p = json_number_value(pct);
            int target;
            if (!json_is_number(pct) || p <= 0 || p > 100) {
                result =
                    wave_bad(usage, errstr, errstr_size,
                             "step %s: \"percent\" takes a number above 0, at most 100", where);
                goto out;
            }
            target = (int)ceil(p * n / 100.0 - 1e-9);
            while (planned < target) {
                while (next < n && taken[next])
                    next++;
                if (next >= n)
                    break;
                taken[next] = 1;
                order[planned] = next;
                step_of[planned++] = (int)k;
            }
        }
        json_array_append_new(ends, json_integer(planned));
    }
    if (planned < n) {
        char left[32];
        snprintf(left, sizeof(left), "%d", n - planned);
        result = wave_bad(usage, errstr, errstr_size,
                          "the steps leave %s selected services out: end them with"
                          " {\"percent\": 100}",
                          left);
    }
out:
    free(taken);
    return result;
}

/* The services a spec selects in env, with what a release of each needs: rows of service,
 * its template's head version, the version of its newest release that rendered, and
 * whether check_user ($5) is a releaser of it. */
static const char wave_select_sql[] =
    "SELECT s.service, h.version,"
    " (SELECT r.version FROM releases r WHERE r.service = s.service AND r.env = s.env"
    "  AND r.manifests IS NOT NULL ORDER BY r.created_at DESC, r.id DESC LIMIT 1),"
    " $5::text IS NULL OR relfleet_has_role($5, 'releaser', s.service, s.env)"
    " FROM services s LEFT JOIN template_heads h ON h.id = s.template_id"
    " WHERE s.env = $1 AND CASE $2 WHEN 'group' THEN s.group_name = $3"
    "  WHEN 'template' THEN s.template_id = $3 ELSE s.service = ANY($4::text[]) END"
    " ORDER BY s.service";

rf_err_t rf_wave_create(rf_db_t *db, const json_t *spec, const char *operator_name,
                        const char *check_user, json_t **record, int *usage, char *errstr,
                        size_t errstr_size)
{
    const char *env = json_string_value(json_object_get(spec, "env"));
    const json_t *sel = json_object_get(spec, "select");
    const json_t *steps = json_object_get(spec, "steps");
    const json_t *desc = json_object_get(spec, "description");
    const json_t *mp = json_object_get(spec, "max_parallel");
    const char *version = json_string_value(json_object_get(spec, "version"));
    const char *tv = json_string_value(json_object_get(spec, "template_version"));
    int redo = json_is_true(json_object_get(spec, "redo"));
    const char *kind = NULL, *value = NULL, *mode;
    rf_buf_t list = RF_BUF_INIT;
    json_t *default_steps = NULL, *ends = json_array(), *items = json_array(), *wave = NULL;
    PGresult *res = NULL;
    char **names = NULL;
    int *order = NULL, *step_of = NULL;
    char id[RF_MSG_UUID_SIZE], budget_spec[24];
    long long pause_ms = 0;
    int n = 0, budget, modes;
    rf_err_t result;

    *record = NULL;
    *usage = 0;
    if (!json_is_object(spec)) {
        result = wave_bad(usage, errstr, errstr_size, "a wave is a JSON object%s", NULL);
        goto out;
    }
    if (!wave_is_name(env)) {
        result = wave_bad(usage, errstr, errstr_size, "a wave needs an env (a DNS label)%s", NULL);
        goto out;
    }
    if (json_is_object(sel) && json_object_size(sel) == 1) {
        if (json_is_string(json_object_get(sel, "group")))
            kind = "group", value = json_string_value(json_object_get(sel, "group"));
        else if (json_is_string(json_object_get(sel, "template")))
            kind = "template", value = json_string_value(json_object_get(sel, "template"));
        else if (json_is_array(json_object_get(sel, "services")) &&
                 json_array_size(json_object_get(sel, "services")) > 0)
            kind = "services";
    }
    if (!kind) {
        result = wave_bad(usage, errstr, errstr_size,
                          "a wave selects its services by one of group, services and"
                          " template%s",
                          NULL);
        goto out;
    }
    if (strcmp(kind, "services") == 0) {
        size_t i;
        const json_t *s;
        rf_buf_add(&list, "{", 1);
        json_array_foreach(json_object_get(sel, "services"), i, s)
        {
            if (!wave_is_name(json_string_value(s))) {
                result = wave_bad(usage, errstr, errstr_size, "'%s' is not a service name",
                                  json_is_string(s) ? json_string_value(s) : "?");
                goto out;
            }
            rf_buf_addf(&list, "%s%s", i ? "," : "", json_string_value(s));
        }
        rf_buf_add(&list, "}", 1);
    }
    modes = (version != NULL) + redo + (tv != NULL);
    if (modes != 1) {
        result = wave_bad(usage, errstr, errstr_size,
                          "a wave takes one of --version, --redo and --template-version%s", NULL);
        goto out;
    }
    if (tv && strcmp(tv, "latest") != 0) {
        result =
            wave_bad(usage, errstr, errstr_size, "--template-version takes 'latest', not '%s'", tv);
        goto out;
    }
    mode = version ? "version" : redo ? "redo" : "template";
    if (!json_is_integer(mp) || json_integer_value(mp) < 1 ||
        json_integer_value(mp) > WAVE_MAX_PARALLEL) {
        result = wave_bad(usage, errstr, errstr_size,
                          "--max-parallel takes a number from 1 to 100000%s", NULL);
        goto out;
    }
    if (desc && (!json_is_string(desc) || strlen(json_string_value(desc)) > 4096)) {
        result = wave_bad(usage, errstr, errstr_size,
                          "a description is text of at most 4096"
                          " bytes%s",
                          NULL);
        goto out;
    }
    if (json_object_get(spec, "pause_between")) {
        pause_ms = rf_strategy_duration_ms(json_object_get(spec, "pause_between"));
        if (pause_ms < 0) {
            result = wave_bad(usage, errstr, errstr_size,
                              "--pause-between takes a duration (500ms, 30s, 5m, 1h)%s", NULL);
            goto out;
        }
    }
    if (!steps)
        steps = default_steps = json_pack("[{s:i}]", "percent", 100);
    if (!json_is_array(steps) || json_array_size(steps) == 0 || json_array_size(steps) > 100) {
        result = wave_bad(usage, errstr, errstr_size,
                          "--steps takes a JSON list of 1 to 100 steps%s", NULL);
        goto out;
    }

    {
        const char *p[5] = {env, kind, value,
                            strcmp(kind, "services") == 0 ? rf_buf_str(&list) : NULL, check_user};
        result = rf_db_exec(db, wave_select_sql, 5, p, &res, errstr, errstr_size);
        if (result != RF_OK)
            goto out;
    }
    n = PQntuples(res);
    if (strcmp(kind, "services") == 0) {
        size_t i;
        const json_t *s;
        json_array_foreach(json_object_get(sel, "services"), i, s)
        {
            int found = 0;
            for (int r = 0; r < n && !found; r++)
                found = strcmp(PQgetvalue(res, r, 0), json_string_value(s)) == 0;
            if (!found) {
                result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                                 "unknown service '%s' in env '%s'", json_string_value(s), env);
                goto out;
            }
        }
    }
    if (n == 0) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "no service in env '%s' has %s '%s'",
                         env, kind, value);
        goto out;
    }
    names = calloc((size_t)n, sizeof(*names));
    order = calloc((size_t)n, sizeof(*order));
    step_of = calloc((size_t)n, sizeof(*step_of));
    if (!names || !order || !step_of)
        abort();
    for (int r = 0; r < n; r++) {
        names[r] = PQgetvalue(res, r, 0);
        if (strcmp(PQgetvalue(res, r, 3), "t") != 0) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                             "permission denied: user '%s' has no releaser role for service"
                             " '%s' in env '%s'",
                             check_user, names[r], env);
            goto out;
        }
        if (!version && PQgetisnull(res, r, 2)) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                             "service '%s' has no release in env '%s' to %s", names[r], env,
                             redo ? "redo" : "render again");
            goto out;
        }
        if (tv && PQgetisnull(res, r, 1)) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                             "the template of service '%s' has no version synced", names[r]);
            goto out;
        }
    }
    budget =
        wave_budget(json_object_get(spec, "max_failures"), n, budget_spec, sizeof(budget_spec));
    if (budget < 0) {
        result = wave_bad(usage, errstr, errstr_size,
                          "--max-failures takes a count or a percentage (2, 10%%)%s", NULL);
        goto out;
    }
    result = wave_plan(steps, names, n, order, step_of, ends, usage, errstr, errstr_size);
    if (result != RF_OK)
        goto out;
    for (int i = 0; i < n; i++) {
        int r = order[i];
        json_array_append_new(items,
                              json_pack("{s:i, s:i, s:s, s:s?, s:s?}", "position", i, "step",
                                        step_of[i], "service", names[r], "version",
                                        version ? NULL : rf_db_value(res, r, 2), "template_version",
                                        tv ? rf_db_value(res, r, 1) : NULL));
    }

    rf_msg_uuid4(id);
    wave = json_pack("{s:s, s:s, s:O, s:s, s:s?, s:I, s:i, s:s, s:O, s:O, s:I, s:s, s:s, s:i}",
                     "id", id, "env", env, "selector", sel, "mode", mode, "version", version,
                     "max_parallel", (json_int_t)json_integer_value(mp), "max_failures", budget,
                     "max_failures_spec", budget_spec, "steps", steps, "step_ends", ends,
                     "pause_between_ms", (json_int_t)pause_ms, "operator", operator_name,
                     "description", desc ? json_string_value(desc) : "", "total", n);
    if (!wave)
        abort();
    {
        char *wtext = json_dumps(wave, JSON_COMPACT), *itext = json_dumps(items, JSON_COMPACT);
        const char *p[2] = {wtext, itext};
        result = rf_db_begin(db, errstr, errstr_size);
        if (result == RF_OK)
            result = rf_db_exec(
                db,
                "INSERT INTO waves (id, env, selector, mode, version, max_parallel, max_failures,"
                " max_failures_spec, steps, step_ends, pause_between_ms, operator, description,"
                " total, step_started_at)"
                " SELECT x.id, x.env, x.selector, x.mode, x.version, x.max_parallel,"
                " x.max_failures, x.max_failures_spec, x.steps,"
                " ARRAY(SELECT jsonb_array_elements_text(x.step_ends)::int),"
                " x.pause_between_ms, x.operator, x.description, x.total, clock_timestamp()"
                " FROM jsonb_to_record($1::jsonb) AS x(id uuid, env text, selector jsonb,"
                " mode text, version text, max_parallel int, max_failures int,"
                " max_failures_spec text, steps jsonb, step_ends jsonb, pause_between_ms bigint,"
                " operator text, description text, total int)",
                1, p, NULL, errstr, errstr_size);
        if (result == RF_OK)
            result = rf_db_exec(
                db,
                "INSERT INTO wave_items (wave_id, position, step, service, version,"
                " template_version) SELECT ($1::jsonb ->> 'id')::uuid, x.position, x.step,"
                " x.service, x.version, x.template_version FROM jsonb_to_recordset($2::jsonb)"
                " AS x(position int, step int, service text, version text,"
                " template_version text)",
                2, p, NULL, errstr, errstr_size);
        if (result == RF_OK)
            result = rf_db_exec(
                db,
                "INSERT INTO wave_events (wave_id, event, actor, message)"
                " SELECT ($1::jsonb ->> 'id')::uuid, 'created', $1::jsonb ->> 'operator',"
                " format('created by %s: %s releases in %s step(s), at most %s at once,"
                " failure budget %s', $1::jsonb ->> 'operator', $1::jsonb ->> 'total',"
                " jsonb_array_length($1::jsonb -> 'steps'), $1::jsonb ->> 'max_parallel',"
                " $1::jsonb ->> 'max_failures_spec')",
                1, p, NULL, errstr, errstr_size);
        if (result == RF_OK)
            result = rf_db_commit(db, errstr, errstr_size);
        else
            rf_db_rollback(db);
        free(wtext);
        free(itext);
    }
    if (result == RF_OK)
        result = rf_wave_record(db, id, 1, NULL, NULL, record, errstr, errstr_size);
out:
    rf_buf_release(&list);
    json_decref(default_steps);
    json_decref(ends);
    json_decref(items);
    json_decref(wave);
    free(names);
    free(order);
    free(step_of);
    PQclear(res);
    return result;
}

/* The first service of wave id that user lacks role need for (*missing, NULL if none; the
 * caller frees it). RF_ERR_NOTFOUND for no such wave. */
static rf_err_t wave_missing_role(rf_db_t *db, const char *id, const char *user, const char *need,
                                  char **missing, char *env, size_t env_size, char *errstr,
                                  size_t errstr_size)
{
    const char *p[3] = {id, user, need};
    PGresult *res = NULL;
    rf_err_t result;

    *missing = NULL;
    if (!wave_is_id(id))
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no wave '%s'", id);
    result = rf_db_exec(db,
                        "SELECT w.env, (SELECT i.service FROM wave_items i WHERE i.wave_id = w.id"
                        " AND $2::text IS NOT NULL AND NOT relfleet_has_role($2, $3, i.service,"
                        " w.env) ORDER BY i.position LIMIT 1) FROM waves w WHERE w.id = $1::uuid",
                        3, p, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no wave '%s'", id);
    }
    snprintf(env, env_size, "%s", PQgetvalue(res, 0, 0));
    if (!PQgetisnull(res, 0, 1))
        *missing = strdup(PQgetvalue(res, 0, 1));
    PQclear(res);
    return RF_OK;
}

rf_err_t rf_wave_allowed(rf_db_t *db, const char *id, const char *user, const char *need, int *has,
                         char *errstr, size_t errstr_size)
{
    char *missing = NULL, env[64];
    rf_err_t result;

    *has = 0;
    result = wave_missing_role(db, id, user, need, &missing, env, sizeof(env), errstr, errstr_size);
    *has = result == RF_OK && !missing;
    free(missing);
    return result;
}

/* RF_OK when check_user (or nobody to check) holds need on every service of wave id. */
static rf_err_t wave_require(rf_db_t *db, const char *id, const char *check_user, const char *need,
                             char *errstr, size_t errstr_size)
{
    char *missing = NULL, env[64];
    rf_err_t result;

    result = wave_missing_role(db, id, check_user, need, &missing, env, sizeof(env), errstr,
                               errstr_size);
    if (result == RF_OK && missing)
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "permission denied: user '%s' has no %s role for service '%s' in env"
                         " '%s' (wave %s)",
                         check_user, need, missing, env, id);
    free(missing);
    return result;
}

rf_err_t rf_wave_command(rf_db_t *db, const char *id, const char *action, const char *actor,
                         const char *why, const char *check_user, char *errstr, size_t errstr_size)
{
    const char *p[4] = {id, action, actor, why};
    PGresult *res = NULL;
    rf_err_t result;

    result = wave_require(db, id, check_user, "releaser", errstr, errstr_size);
    if (result != RF_OK)
        return result;
    result = rf_db_exec(db, "SELECT relfleet_wave_command($1::uuid, $2, $3, $4)", 4, p, &res,
                        errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (!PQgetisnull(res, 0, 0))
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return result;
}

rf_err_t rf_wave_record(rf_db_t *db, const char *id, int with_releases, const char *check_user,
                        const char *need, json_t **out, char *errstr, size_t errstr_size)
{
    const char *p[2] = {id, with_releases ? "true" : "false"};
    PGresult *res = NULL;
    json_error_t jerr;
    rf_err_t result;

    *out = NULL;
    if (!wave_is_id(id))
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no wave '%s'", id);
    if (check_user) {
        result = wave_require(db, id, check_user, need ? need : "viewer", errstr, errstr_size);
        if (result != RF_OK)
            return result;
    }
    result = rf_db_exec(db, "SELECT relfleet_wave_record($1::uuid, $2::boolean)", 2, p, &res,
                        errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no wave '%s'", id);
    }
    *out = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
    PQclear(res);
    if (!*out)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad wave record json: %s", jerr.text);
    return RF_OK;
}

rf_err_t rf_wave_list(rf_db_t *db, const char *env, int limit, const char *check_user, json_t **out,
                      char *errstr, size_t errstr_size)
{
    char lim[16];
    const char *p[3] = {env, lim, check_user};
    PGresult *res = NULL;
    json_error_t jerr;
    rf_err_t result;

    *out = NULL;
    snprintf(lim, sizeof(lim), "%d", limit);
    result = rf_db_exec(
        db,
        "SELECT coalesce(jsonb_agg(relfleet_wave_record(w.id, false) ORDER BY w.created_at DESC),"
        " '[]') FROM (SELECT id, created_at FROM waves x WHERE ($1::text IS NULL OR x.env = $1)"
        " AND ($3::text IS NULL OR NOT EXISTS (SELECT 1 FROM wave_items i WHERE i.wave_id = x.id"
        " AND NOT relfleet_has_role($3, 'viewer', i.service, x.env)))"
        " ORDER BY created_at DESC LIMIT $2::int) w",
        3, p, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    *out = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
    PQclear(res);
    if (!*out)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad wave list json: %s", jerr.text);
    return RF_OK;
}
