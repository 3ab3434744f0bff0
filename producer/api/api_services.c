/* Service configuration (read for viewers, write for admins, with history), templates and
 * image versions over HTTP: the same tables and rules as relctl service|template|image. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rf_log.h"
#include "rf_service.h"

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
        "SELECT coalesce(jsonb_agg(" RF_SERVICE_JSON_SQL " || jsonb_build_object('last_release',"
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
                         "SELECT " RF_SERVICE_JSON_SQL " || jsonb_build_object('may_edit',"
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
    char errstr[1024];
    const char *key;
    json_t *body, *v, *changes = json_array(), *out;
    int created = 0, refused;
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
        err = rf_service_lock(r->db, service, env, tmpl && *tmpl ? tmpl : NULL, r->user,
                              &created, errstr, sizeof(errstr));
        if (err == RF_ERR_NOTFOUND) {
            rf_db_rollback(r->db);
            api_reply_error(r, MHD_HTTP_BAD_REQUEST, "template",
                            "new service '%s' in env '%s' needs a template", service, env);
            goto done;
        }
        if (err != RF_OK)
            goto fail;
    }
    json_object_foreach(body, key, v) {
        char *value = services_value_text(r, key, v);
        rf_service_value_t checked;
        rf_service_change_t change;

        if (!value) {
            rf_db_rollback(r->db);
            goto done;
        }
        if (rf_service_check(key, value, 64, &checked, errstr, sizeof(errstr)) != RF_OK) {
            rf_db_rollback(r->db);
            api_reply_error(r, MHD_HTTP_BAD_REQUEST, key, "%s", errstr);
            free(value);
            goto done;
        }
        err = rf_service_set(r->db, service, env, r->user, &checked, &change, errstr,
                             sizeof(errstr));
        /* A value PostgreSQL refused is the caller's: 400 naming the key. */
        refused = err != RF_OK && err != RF_ERR_RETRY && change.write_failed;
        if (refused) {
            rf_db_rollback(r->db);
            api_reply_error(r, MHD_HTTP_BAD_REQUEST, key, "cannot set '%s' to '%.200s': %s",
                            key, checked.text, errstr);
        } else if (err == RF_OK && change.changed) {
            json_array_append_new(changes, json_pack("{s:s, s:s?, s:s?}", "key", key, "old",
                                                     change.old_value, "new", change.new_value));
        }
        rf_service_change_release(&change);
        free(value);
        if (refused)
            goto done;
        if (err != RF_OK)
            goto fail;
    }
    err = rf_db_commit(r->db, errstr, sizeof(errstr));
    if (err != RF_OK) {
        api_reply_failure(r, err, "cannot commit the change", errstr);
        goto done;
    }
    rf_log_info("service %s env %s changed by '%s' (%zu keys)", service, env, r->user,
                json_array_size(changes));
    out = services_query(r,
                         "SELECT " RF_SERVICE_JSON_SQL " FROM services WHERE service = $1"
                         " AND env = $2 AND $3::text IS NOT NULL",
                         service, env);
    if (out)
        api_reply_json(r, created ? MHD_HTTP_CREATED : MHD_HTTP_OK,
                       json_pack("{s:b, s:O, s:o}", "created", created, "changes", changes,
                                 "service", out));
    goto done;
fail:
    rf_db_rollback(r->db);
    api_reply_failure(r, err, "cannot change the service", errstr);
done:
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
    char errstr[1024];
    json_t *list = NULL;
    rf_err_t err;

    if (!services_names_ok(r, service, NULL) || !api_require(r, RF_ROLE_VIEWER, service, NULL))
        return 0;
    err = rf_service_images(r->db, service, &list, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot list images", errstr);
    return api_reply_json(r, MHD_HTTP_OK,
                          json_pack("{s:s, s:o}", "service", service, "images", list));
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
    err = rf_service_image_add(r->db, service, tag, digest, r->user, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot add the image", errstr);
    return api_reply_json(r, MHD_HTTP_CREATED,
                          json_pack("{s:s, s:s, s:s?}", "service", service, "tag", tag, "digest",
                                    digest));
}
