/* Service settings: the keys, their checks, the write and its history row. */
#include <stdio.h>
#include <string.h>

#include "rf_clock.h"
#include "rf_service.h"
#include "rf_strategy.h"

/* Keys that are columns; any other key is a template value in `extra`. */
static const struct {
    const char *key;
    const char *column;
    const char *cast;
} service_columns[] = {
    {"namespace", "namespace", "text"},
    {"replicas", "replicas", "int"},
    {"health_path", "health_path", "text"},
    {"group", "group_name", "text"},
    {"port", "port", "int"},
    {"template", "template_id", "text"},
    {"strategy", "strategy", "jsonb"},
    {"policy", "policy", "text"},
    {"timeout", "timeout_s", "int"},
    {"image_repo", "image_repo", "text"},
    {"cluster", "cluster", "text"},
    {"requires", "requires_env", "text"},
    {"soak", "soak_s", "int"},
    {"approvals", "approvals", "int"},
};

rf_err_t rf_service_check(const char *key, const char *value, int quote_max,
                          rf_service_value_t *out, char *errstr, size_t errstr_size)
{
    int quote = quote_max < 0 ? (int)strlen(value) : quote_max;

    memset(out, 0, sizeof(*out));
    out->key = key;
    out->text = value;
    for (size_t k = 0; k < sizeof(service_columns) / sizeof(service_columns[0]); k++) {
        if (strcmp(service_columns[k].key, key) == 0) {
            out->column = service_columns[k].column;
            out->cast = service_columns[k].cast;
        }
    }
    if (!out->column)
        return RF_OK;
    if (strcmp(key, "timeout") == 0 || (strcmp(key, "soak") == 0 && *value)) {
        long long ms = rf_clock_parse_ms(value);
        if (ms < 0)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "%s: '%.*s' is not a duration (600, 600s, 10m, 1h)", key, quote, value);
        snprintf(out->num, sizeof(out->num), "%ld", (long)(ms / 1000));
        out->text = out->num;
    }
    if (strcmp(key, "strategy") == 0 && *value) {
        char why[512];
        json_t *norm = rf_strategy_parse_text(value, why, sizeof(why));
        if (!norm)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size, "strategy: %s", why);
        json_decref(norm);
    }
    return RF_OK;
}

rf_err_t rf_service_lock(rf_db_t *db, const char *service, const char *env, const char *template_id,
                         const char *user, int *created, char *errstr, size_t errstr_size)
{
    const char *p[4] = {service, env, template_id, user};
    PGresult *res = NULL;
    rf_err_t result;

    *created = 0;
    result = rf_db_exec(db, "SELECT 1 FROM services WHERE service = $1 AND env = $2 FOR UPDATE", 2,
                        p, &res, errstr, errstr_size);
    if (result != RF_OK)
        goto out;
    if (PQntuples(res) > 0)
        goto out;
    if (!template_id) {
        result = rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no service '%s' in env '%s'",
                         service, env);
        goto out;
    }
    result = rf_db_exec(db,
                        "INSERT INTO services (service, env, namespace, template_id,"
                        " updated_by) VALUES ($1, $2, $2, $3, $4)",
                        4, p, NULL, errstr, errstr_size);
    if (result == RF_OK)
        *created = 1;
out:
    PQclear(res);
    return result;
}

rf_err_t rf_service_set(rf_db_t *db, const char *service, const char *env, const char *user,
                        const rf_service_value_t *value, rf_service_change_t *change, char *errstr,
                        size_t errstr_size)
{
    const char *p[6] = {service, env, value->text, user, value->key, NULL};
    char sql[640];
    rf_err_t result;

    memset(change, 0, sizeof(*change));
    /* Read the old value and write the new one; a bad value fails on the cast or a CHECK
     * constraint, whose message names the column. */
    if (value->column)
        snprintf(sql, sizeof(sql),
                 "UPDATE services s SET %s = nullif($3, '')::%s, updated_at = now(),"
                 " updated_by = $4 FROM services o WHERE s.service = $1 AND s.env = $2"
                 " AND o.service = s.service AND o.env = s.env RETURNING o.%s::text,"
                 " s.%s::text",
                 value->column, value->cast, value->column, value->column);
    else
        snprintf(sql, sizeof(sql),
                 "UPDATE services s SET extra = s.extra || jsonb_build_object($5::text,"
                 " $3::text), updated_at = now(), updated_by = $4 FROM services o"
                 " WHERE s.service = $1 AND s.env = $2 AND o.service = s.service"
                 " AND o.env = s.env RETURNING o.extra ->> $5, s.extra ->> $5");
    result = rf_db_exec(db, sql, value->column ? 4 : 5, p, &change->res, errstr, errstr_size);
    if (result != RF_OK) {
        change->write_failed = 1;
        return result;
    }
    change->old_value = rf_db_value(change->res, 0, 0);
    change->new_value = rf_db_value(change->res, 0, 1);
    if (change->old_value && change->new_value && strcmp(change->old_value, change->new_value) == 0)
        return RF_OK;
    {
        const char *h[6] = {service, env, user, value->key, change->old_value, change->new_value};
        result = rf_db_exec(db,
                            "INSERT INTO service_history (service, env, changed_by, key,"
                            " old_value, new_value) VALUES ($1, $2, $3, $4, $5, $6)",
                            6, h, NULL, errstr, errstr_size);
    }
    if (result == RF_OK)
        change->changed = 1;
    return result;
}

void rf_service_change_release(rf_service_change_t *change)
{
    PQclear(change->res);
    memset(change, 0, sizeof(*change));
}

rf_err_t rf_service_image_add(rf_db_t *db, const char *service, const char *tag, const char *digest,
                              const char *user, char *errstr, size_t errstr_size)
{
    const char *p[4] = {service, tag, digest, user};

    return rf_db_exec(db,
                      "INSERT INTO images (service, tag, digest, added_by) VALUES ($1, $2,"
                      " $3, $4) ON CONFLICT (service, tag) DO UPDATE SET digest ="
                      " coalesce(EXCLUDED.digest, images.digest)",
                      4, p, NULL, errstr, errstr_size);
}

rf_err_t rf_service_images(rf_db_t *db, const char *service, json_t **list, char *errstr,
                           size_t errstr_size)
{
    const char *p[1] = {service};
    PGresult *res = NULL;
    rf_err_t result;

    *list = NULL;
    result = rf_db_exec(db,
                        "SELECT coalesce(jsonb_agg(jsonb_build_object('tag', tag, 'digest',"
                        " digest, 'added_at', relfleet_iso(added_at), 'added_by', added_by)"
                        " ORDER BY added_at DESC, tag), '[]') FROM images WHERE service = $1",
                        1, p, &res, errstr, errstr_size);
    if (result == RF_OK)
        *list = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    return result;
}
