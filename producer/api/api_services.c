/* Service configuration (read for viewers, write for admins, with history), templates and
 * image versions over HTTP: the same tables and rules as relctl service|template|image. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rf_clock.h"
#include "rf_log.h"
#include "rf_strategy.h"

/* Keys that are columns (as relctl service set); any other key is a template value. */
static const struct {
    const char *key;
    const char *column;
    const char *cast;
} service_columns[] = {
    {"namespace", "namespace", "text"},     {"replicas", "replicas", "int"},
    {"health_path", "health_path", "text"}, {"group", "group_name", "text"},
    {"port", "port", "int"},                {"template", "template_id", "text"},
    {"strategy", "strategy", "jsonb"},      {"policy", "policy", "text"},
    {"timeout", "timeout_s", "int"},        {"image_repo", "image_repo", "text"},
    {"cluster", "cluster", "text"},
};

#define SERVICE_JSON                                                                           \
    "jsonb_build_object('service', service, 'env', env, 'namespace', namespace, 'replicas',"  \
    " replicas, 'health_path', health_path, 'group', group_name, 'port', port, 'template',"   \
    " template_id, 'strategy', strategy, 'policy', policy, 'timeout', timeout_s,"             \
    " 'image_repo', image_repo, 'cluster', cluster, 'values', extra, 'updated_at',"           \
    " relfleet_iso(updated_at), 'updated_by', updated_by)"

/* Runs a query of $1 service, $2 env (and $3 user) returning one JSON value; NULL (after
 * replying 404) when it has no row. */
static json_t *services_query(api_req_t *r, const char *sql, const char *service,
                              const char *env)
{
    const char *p[3] = {service, env, r->user};
    PGresult *res = NULL;
    char errstr[1024];
    json_t *out;
    rf_err_t err;

    err = rf_db_exec(r->db, sql, 3, p, &res, errstr, sizeof(errstr));
    if (err != RF_OK) {
        api_reply_failure(r, err, "cannot read the service", errstr);
        return NULL;
    }
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        api_reply_error(r, MHD_HTTP_NOT_FOUND, NULL, "no service '%s' in env '%s'", service, env);
        return NULL;
    }
    out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    return out;
}

static int services_names_ok(api_req_t *r, const char *service, const char *env)
{
    if (!api_valid_label(service))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "service",
                               "service '%.64s' is not a valid name", service),
               0;
    if (env && !api_valid_label(env))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "env", "env '%.64s' is not a valid name",
                               env),
               0;
    return 1;
}

int api_services_list(api_req_t *r)
{
    const char *p[1] = {r->user};
    PGresult *res = NULL;
    char errstr[1024];
    rf_err_t err;

    err = rf_db_exec(
        r->db,
        "SELECT coalesce(jsonb_agg(" SERVICE_JSON " || jsonb_build_object('last_release',"
        " (SELECT jsonb_build_object('id', l.id, 'version', l.version, 'status', l.status,"
        " 'created_at', relfleet_iso(l.created_at)) FROM releases l WHERE l.service ="
        " s.service AND l.env = s.env ORDER BY l.created_at DESC, l.id DESC LIMIT 1),"
        " 'may_edit', relfleet_has_role($1, 'admin', service, env), 'may_release',"
        " relfleet_has_role($1, 'releaser', service, env)) ORDER BY service, env), '[]')"
        " FROM services s WHERE relfleet_has_role($1, 'viewer', service, env)",
        1, p, &res, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot list services", errstr);
    {
        json_t *list = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        PQclear(res);
        return api_reply_json(r, MHD_HTTP_OK, json_pack("{s:o}", "services", list));
    }
}

int api_services_get(api_req_t *r, const char *service, const char *env)
{
    json_t *out;

    if (!services_names_ok(r, service, env) || !api_require(r, RF_ROLE_VIEWER, service, env))
        return 0;
    out = services_query(r,
                         "SELECT " SERVICE_JSON " || jsonb_build_object('may_edit',"
                         " relfleet_has_role($3, 'admin', service, env), 'may_release',"
                         " relfleet_has_role($3, 'releaser', service, env))"
                         " FROM services WHERE service = $1 AND env = $2",
                         service, env);
    return out ? api_reply_json(r, MHD_HTTP_OK, out) : 0;
}

int api_services_history(api_req_t *r, const char *service, const char *env)
{
    json_t *out;

    if (!services_names_ok(r, service, env) || !api_require(r, RF_ROLE_VIEWER, service, env))
        return 0;
    out = services_query(r,
                         "SELECT coalesce(jsonb_agg(jsonb_build_object('at',"
                         " relfleet_iso(changed_at), 'by', changed_by, 'key', key, 'old',"
                         " old_value, 'new', new_value) ORDER BY id DESC), '[]') FROM"
                         " service_history WHERE service = $1 AND env = $2 AND $3::text IS NOT"
                         " NULL",
                         service, env);
    return out ? api_reply_json(r, MHD_HTTP_OK, json_pack("{s:o}", "history", out)) : 0;
}

static int services_key_ok(const char *k)
{
    size_t n = strlen(k);

    if (n == 0 || n > 64 || !((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= 'A' && k[0] <= 'Z') ||
                              k[0] == '_'))
        return 0;
    return strspn(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

/* The text of one value as relctl service set takes it; NULL after replying 400. */
static char *services_value_text(api_req_t *r, const char *key, json_t *v)
{
    char *text = NULL;

    if (json_is_string(v))
        text = strdup(json_string_value(v));
    else if (json_is_integer(v) || json_is_boolean(v))
        text = json_dumps(v, JSON_ENCODE_ANY);
    else if (json_is_null(v))
        text = strdup("");
    else if (json_is_object(v) && strcmp(key, "strategy") == 0)
        text = json_dumps(v, JSON_COMPACT);
    else
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, key,
                        "%s: expected a string or a whole number%s", key,
                        strcmp(key, "strategy") == 0 ? " (or the strategy object)" : "");
    if (!text && !r->reply)
        abort();
    return text;
}

/* Applies every change in one transaction with one history row per changed key; any bad
 * value rolls everything back and names its key. */
int api_services_update(api_req_t *r, const char *service, const char *env)
{
    char errstr[1024], sql[640], num[32];
    const char *key;
    json_t *body, *v, *changes = json_array(), *out;
    PGresult *res = NULL;
    int created = 0;
    rf_err_t err;

    if (!services_names_ok(r, service, env) || !api_require(r, RF_ROLE_ADMIN, service, env))
        goto done;
    if (r->body.len == 0) {
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, NULL,
                        "the body must be a JSON object of settings, e.g. {\"replicas\": 3}");
        goto done;
    }
    {
        /* Any key is allowed here (template values); the checks follow per key. */
        json_error_t jerr;
        r->json = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(r->json)) {
            api_reply_error(r, MHD_HTTP_BAD_REQUEST, NULL, "the body must be a JSON object: %s",
                            r->json ? "it is another JSON value" : jerr.text);
            goto done;
        }
        body = r->json;
    }
    if (json_object_size(body) == 0) {
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, NULL, "no settings to change");
        goto done;
    }
    json_object_foreach(body, key, v) {
        if (!services_key_ok(key)) {
            api_reply_error(r, MHD_HTTP_BAD_REQUEST, key, "'%.64s' is not a valid setting name",
                            key);
            goto done;
        }
    }
    err = rf_db_begin(r->db, errstr, sizeof(errstr));
    if (err != RF_OK) {
        api_reply_failure(r, err, "cannot start a transaction", errstr);
        goto done;
    }
    {
        const char *tmpl = json_string_value(json_object_get(body, "template"));
        const char *p[4] = {service, env, tmpl, r->user};
        err = rf_db_exec(r->db, "SELECT 1 FROM services WHERE service = $1 AND env = $2 FOR UPDATE",
                         2, p, &res, errstr, sizeof(errstr));
        if (err != RF_OK)
            goto fail;
        if (PQntuples(res) == 0) {
            if (!tmpl || !*tmpl) {
                rf_db_rollback(r->db);
                api_reply_error(r, MHD_HTTP_BAD_REQUEST, "template",
                                "new service '%s' in env '%s' needs a template", service, env);
                goto done;
            }
            err = rf_db_exec(r->db,
                             "INSERT INTO services (service, env, namespace, template_id,"
                             " updated_by) VALUES ($1, $2, $2, $3, $4)",
                             4, p, NULL, errstr, sizeof(errstr));
            if (err != RF_OK)
                goto fail;
            created = 1;
        }
        PQclear(res);
        res = NULL;
    }
    json_object_foreach(body, key, v) {
        const char *column = NULL, *cast = NULL;
        char *value = services_value_text(r, key, v);
        const char *val = value;

        if (!value) {
            rf_db_rollback(r->db);
            goto done;
        }
        for (size_t k = 0; k < sizeof(service_columns) / sizeof(service_columns[0]); k++) {
            if (strcmp(service_columns[k].key, key) == 0) {
                column = service_columns[k].column;
                cast = service_columns[k].cast;
            }
        }
        if (column && strcmp(key, "timeout") == 0) {
            long long ms = rf_clock_parse_ms(value);
            long secs = ms < 0 ? -1 : (long)(ms / 1000);
            if (secs < 0) {
                rf_db_rollback(r->db);
                api_reply_error(r, MHD_HTTP_BAD_REQUEST, key,
                                "timeout: '%.64s' is not a duration (600, 600s, 10m, 1h)", value);
                free(value);
                goto done;
            }
            snprintf(num, sizeof(num), "%ld", secs);
            val = num;
        }
        if (column && strcmp(key, "strategy") == 0 && *value) {
            char why[512];
            json_t *norm = rf_strategy_parse_text(value, why, sizeof(why));
            if (!norm) {
                rf_db_rollback(r->db);
                api_reply_error(r, MHD_HTTP_BAD_REQUEST, key, "strategy: %s", why);
                free(value);
                goto done;
            }
            json_decref(norm);
        }
        if (column)
            snprintf(sql, sizeof(sql),
                     "UPDATE services s SET %s = nullif($3, '')::%s, updated_at = now(),"
                     " updated_by = $4 FROM services o WHERE s.service = $1 AND s.env = $2"
                     " AND o.service = s.service AND o.env = s.env RETURNING o.%s::text,"
                     " s.%s::text",
                     column, cast, column, column);
        else
            snprintf(sql, sizeof(sql),
                     "UPDATE services s SET extra = s.extra || jsonb_build_object($5::text,"
                     " $3::text), updated_at = now(), updated_by = $4 FROM services o"
                     " WHERE s.service = $1 AND s.env = $2 AND o.service = s.service"
                     " AND o.env = s.env RETURNING o.extra ->> $5, s.extra ->> $5");
        {
            const char *p[5] = {service, env, val, r->user, key};
            err = rf_db_exec(r->db, sql, column ? 4 : 5, p, &res, errstr, sizeof(errstr));
        }
        if (err != RF_OK) {
            rf_db_rollback(r->db);
            if (err == RF_ERR_RETRY)
                api_reply_failure(r, err, "cannot change the service", errstr);
            else
                api_reply_error(r, MHD_HTTP_BAD_REQUEST, key, "cannot set '%s' to '%.200s': %s",
                                key, val, errstr);
            free(value);
            goto done;
        }
        if (!rf_db_value(res, 0, 0) || !rf_db_value(res, 0, 1) ||
            strcmp(rf_db_value(res, 0, 0), rf_db_value(res, 0, 1)) != 0) {
            const char *p[6] = {service, env, r->user, key, rf_db_value(res, 0, 0),
                                rf_db_value(res, 0, 1)};
            err = rf_db_exec(r->db,
                             "INSERT INTO service_history (service, env, changed_by, key,"
                             " old_value, new_value) VALUES ($1, $2, $3, $4, $5, $6)",
                             6, p, NULL, errstr, sizeof(errstr));
            if (err != RF_OK) {
                free(value);
                goto fail;
            }
            json_array_append_new(changes, json_pack("{s:s, s:s?, s:s?}", "key", key, "old", p[4],
                                                     "new", p[5]));
        }
        PQclear(res);
        res = NULL;
        free(value);
    }
    err = rf_db_commit(r->db, errstr, sizeof(errstr));
    if (err != RF_OK) {
        api_reply_failure(r, err, "cannot commit the change", errstr);
        goto done;
    }
    rf_log_info("service %s env %s changed by '%s' (%zu keys)", service, env, r->user,
                json_array_size(changes));
    out = services_query(r, "SELECT " SERVICE_JSON " FROM services WHERE service = $1 AND env = $2"
                            " AND $3::text IS NOT NULL",
                         service, env);
    if (out)
        api_reply_json(r, created ? MHD_HTTP_CREATED : MHD_HTTP_OK,
                       json_pack("{s:b, s:O, s:o}", "created", created, "changes", changes,
                                 "service", out));
    goto done;
fail:
    PQclear(res);
    res = NULL;
    rf_db_rollback(r->db);
    api_reply_failure(r, err, "cannot change the service", errstr);
done:
    PQclear(res);
    json_decref(changes);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Templates (shared by every service: anyone with a role reads them) */

static int templates_may_read(api_req_t *r)
{
    const char *p[1] = {r->user};
    PGresult *res = NULL;
    char errstr[512];
    int ok = 0;

    if (rf_db_exec(r->db,
                   "SELECT 1 FROM role_grants g JOIN users u ON u.name = g.user_name WHERE"
                   " g.user_name = $1 AND NOT u.disabled LIMIT 1",
                   1, p, &res, errstr, sizeof(errstr)) == RF_OK)
        ok = PQntuples(res) == 1;
    PQclear(res);
    if (!ok)
        api_reply_error(r, MHD_HTTP_FORBIDDEN, NULL,
                        "permission denied: user '%s' has no role on any service", r->user);
    return ok;
}

int api_templates_list(api_req_t *r)
{
    PGresult *res = NULL;
    char errstr[1024];
    rf_err_t err;

    if (!templates_may_read(r))
        return 0;
    err = rf_db_exec(r->db,
                     "SELECT coalesce(jsonb_agg(jsonb_build_object('id', h.id, 'version',"
                     " h.version, 'source', t.source, 'synced_at', relfleet_iso(t.synced_at),"
                     " 'updated_at', relfleet_iso(h.updated_at), 'services', (SELECT count(*)"
                     " FROM services s WHERE s.template_id = h.id)) ORDER BY h.id), '[]')"
                     " FROM template_heads h JOIN templates t ON t.id = h.id AND t.version ="
                     " h.version",
                     0, NULL, &res, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot list templates", errstr);
    {
        json_t *list = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        PQclear(res);
        return api_reply_json(r, MHD_HTTP_OK, json_pack("{s:o}", "templates", list));
    }
}

int api_templates_get(api_req_t *r, const char *id)
{
    const char *p[1] = {id};
    PGresult *res = NULL;
    char errstr[1024];
    json_t *out;
    rf_err_t err;

    if (!templates_may_read(r))
        return 0;
    err = rf_db_exec(r->db,
                     "SELECT jsonb_build_object('id', h.id, 'version', h.version, 'source',"
                     " t.source, 'body', t.body, 'synced_at', relfleet_iso(t.synced_at),"
                     " 'versions', (SELECT jsonb_agg(jsonb_build_object('version', v.version,"
                     " 'source', v.source, 'synced_at', relfleet_iso(v.synced_at)) ORDER BY"
                     " v.synced_at DESC) FROM templates v WHERE v.id = h.id)) FROM"
                     " template_heads h JOIN templates t ON t.id = h.id AND t.version ="
                     " h.version WHERE h.id = $1",
                     1, p, &res, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot read the template", errstr);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return api_reply_error(r, MHD_HTTP_NOT_FOUND, "id", "no template '%.128s'", id);
    }
    out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    return api_reply_json(r, MHD_HTTP_OK, out);
}

/* ---------------------------------------------------------------------------------------
 * Image versions */

int api_images_list(api_req_t *r, const char *service)
{
    const char *p[1] = {service};
    PGresult *res = NULL;
    char errstr[1024];
    rf_err_t err;

    if (!services_names_ok(r, service, NULL) || !api_require(r, RF_ROLE_VIEWER, service, NULL))
        return 0;
    err = rf_db_exec(r->db,
                     "SELECT coalesce(jsonb_agg(jsonb_build_object('tag', tag, 'digest', digest,"
                     " 'added_at', relfleet_iso(added_at), 'added_by', added_by) ORDER BY"
                     " added_at DESC, tag), '[]') FROM images WHERE service = $1",
                     1, p, &res, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot list images", errstr);
    {
        json_t *list = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        PQclear(res);
        return api_reply_json(r, MHD_HTTP_OK,
                              json_pack("{s:s, s:o}", "service", service, "images", list));
    }
}

int api_images_add(api_req_t *r, const char *service)
{
    static const char *const fields[] = {"tag", "digest", NULL};
    const char *tag, *digest;
    char errstr[1024];
    json_t *body, *d;
    rf_err_t err;

    if (!services_names_ok(r, service, NULL))
        return 0;
    body = api_req_json(r, fields);
    if (!body)
        return 0;
    tag = json_string_value(json_object_get(body, "tag"));
    if (!tag || !api_valid_tag(tag))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "tag",
                               "field 'tag' is required: an image tag (letters, digits, '_', '.',"
                               " '-')");
    d = json_object_get(body, "digest");
    if (d && !json_is_null(d) &&
        (!json_is_string(d) || strncmp(json_string_value(d), "sha256:", 7) != 0 ||
         strlen(json_string_value(d)) != 71))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "digest",
                               "digest must be 'sha256:' and 64 hex digits");
    digest = json_string_value(d);
    if (!api_require(r, RF_ROLE_RELEASER, service, NULL))
        return 0;
    {
        const char *p[4] = {service, tag, digest, r->user};
        err = rf_db_exec(r->db,
                         "INSERT INTO images (service, tag, digest, added_by) VALUES ($1, $2,"
                         " $3, $4) ON CONFLICT (service, tag) DO UPDATE SET digest ="
                         " coalesce(EXCLUDED.digest, images.digest)",
                         4, p, NULL, errstr, sizeof(errstr));
    }
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot add the image", errstr);
    return api_reply_json(r, MHD_HTTP_CREATED,
                          json_pack("{s:s, s:s, s:s?}", "service", service, "tag", tag, "digest",
                                    digest));
}
