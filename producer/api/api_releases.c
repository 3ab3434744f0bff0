/* Releases over HTTP: the list, one record, new releases, rollback, redo and commands. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_events.h"
#include "rf_release.h"
#include "rf_request.h"
#include "rf_store.h"

/* How long a call that publishes a request waits for the render stage to record it. */
#define RELEASES_RECORD_WAIT_MS 5000

static const char *str_of(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* ---------------------------------------------------------------------------------------
 * The list */

int api_releases_list(api_req_t *r)
{
    const char *service = api_req_arg(r, "service"), *env = api_req_arg(r, "env");
    const char *status = api_req_arg(r, "status"), *operator_name = api_req_arg(r, "operator");
    const char *since = api_req_arg(r, "since"), *until = api_req_arg(r, "until");
    const char *limit_s = api_req_arg(r, "limit"), *cursor = api_req_arg(r, "cursor");
    char limit[24], cur_us[24] = "", cur_id[40] = "", errstr[1024];
    const char *p[10];
    PGresult *res = NULL;
    json_t *list, *body;
    long n = API_PAGE_DEFAULT;
    rf_err_t err;

    if (service && !api_valid_label(service))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "service",
                               "service '%.64s' is not a valid name", service);
    if (env && !api_valid_label(env))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "env", "env '%.64s' is not a valid name",
                               env);
    if (status) {
        char copy[256], *s, *save = NULL;
        snprintf(copy, sizeof(copy), "%s", status);
        for (s = strtok_r(copy, ",", &save); s; s = strtok_r(NULL, ",", &save))
            if (rf_release_status_parse(s) < 0)
                return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "status",
                                       "unknown status '%.32s' (queued, rendering, applying,"
                                       " progressing, paused, succeeded, failed, cancelled,"
                                       " superseded, rejected, awaiting_approval)",
                                       s);
    }
    if (limit_s) {
        char *end = NULL;
        n = strtol(limit_s, &end, 10);
        if (!end || *end || n < 1 || n > API_PAGE_MAX)
            return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "limit",
                                   "limit must be a number from 1 to %d, not '%.32s'",
                                   API_PAGE_MAX, limit_s);
    }
    if (cursor) {
        /* "<created_at in microseconds since the epoch>.<release id>" of the last row seen. */
        const char *dot = strchr(cursor, '.');
        size_t len = dot ? (size_t)(dot - cursor) : 0;
        if (!dot || len == 0 || len >= sizeof(cur_us) || strspn(cursor, "0123456789") != len ||
            !rf_request_is_id(dot + 1))
            return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "cursor",
                                   "cursor '%.80s' is not one this API gave out", cursor);
        memcpy(cur_us, cursor, len);
        cur_us[len] = '\0';
        snprintf(cur_id, sizeof(cur_id), "%s", dot + 1);
    }
    snprintf(limit, sizeof(limit), "%ld", n + 1);
    p[0] = service;
    p[1] = env;
    p[2] = status;
    p[3] = operator_name;
    p[4] = since;
    p[5] = until;
    p[6] = limit;
    p[7] = cursor ? cur_us : NULL;
    p[8] = cursor ? cur_id : NULL;
    p[9] = r->user;
    /* Times are checked by PostgreSQL's own parser, in a statement of their own so that a
     * bad one is named. */
    for (int i = 4; i <= 5; i++) {
        const char *tp[1] = {p[i]};
        /* ISO 8601 only: PostgreSQL would also take words such as 'yesterday'. */
        if (p[i] && (strspn(p[i], "0123456789") != 4 || p[i][4] != '-' ||
                     rf_db_exec(r->db, "SELECT $1::timestamptz", 1, tp, NULL, errstr,
                                sizeof(errstr)) != RF_OK))
            return api_reply_error(r, MHD_HTTP_BAD_REQUEST, i == 4 ? "since" : "until",
                                   "%s '%.64s' is not a time (ISO 8601, e.g."
                                   " 2026-01-31T12:00:00Z)",
                                   i == 4 ? "since" : "until", p[i]);
    }
    err = rf_db_exec(
        r->db,
        "SELECT coalesce(jsonb_agg(x.rec || jsonb_build_object('cursor', x.cursor) ORDER BY"
        " x.created_at DESC, x.id DESC), '[]') FROM (SELECT rl.id, rl.created_at,"
        " relfleet_release_record(rl.id) - 'timeline' - 'pods' - 'notifications' - 'params'"
        " AS rec, ((extract(epoch FROM rl.created_at) * 1000000)::bigint)::text || '.' ||"
        " rl.id AS cursor FROM releases rl WHERE ($1::text IS NULL OR rl.service = $1)"
        " AND ($2::text IS NULL OR rl.env = $2)"
        " AND ($3::text IS NULL OR rl.status = ANY (string_to_array($3, ',')))"
        " AND ($4::text IS NULL OR rl.operator = $4)"
        " AND ($5::timestamptz IS NULL OR rl.created_at >= $5::timestamptz)"
        " AND ($6::timestamptz IS NULL OR rl.created_at < $6::timestamptz)"
        " AND ($8::bigint IS NULL OR (rl.created_at, rl.id) < ('epoch'::timestamptz +"
        "   $8::bigint * interval '1 microsecond', $9::uuid))"
        " AND relfleet_has_role($10, 'viewer', rl.service, rl.env)"
        " ORDER BY rl.created_at DESC, rl.id DESC LIMIT $7::int) x",
        10, p, &res, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot list releases", errstr);
    list = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    body = json_object();
    if (json_array_size(list) > (size_t)n) {
        json_array_remove(list, (size_t)n);
        json_object_set(body, "next_cursor",
                        json_object_get(json_array_get(list, (size_t)n - 1), "cursor"));
    } else {
        json_object_set_new(body, "next_cursor", json_null());
    }
    {
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x) json_object_del(x, "cursor");
    }
    json_object_set_new(body, "releases", list);
    return api_reply_json(r, MHD_HTTP_OK, body);
}

/* ---------------------------------------------------------------------------------------
 * One release */

/* The record of id after the viewer check; NULL after replying 404/403/5xx. */
static json_t *releases_record(api_req_t *r, const char *id)
{
    char errstr[1024];
    json_t *rec = NULL;
    rf_err_t err;

    if (!rf_request_is_id(id)) {
        api_reply_error(r, MHD_HTTP_NOT_FOUND, "id", "no release '%.64s' (ids are UUIDs)", id);
        return NULL;
    }
    err = rf_store_record(r->db, id, &rec, errstr, sizeof(errstr));
    if (err == RF_ERR_NOTFOUND) {
        api_reply_error(r, MHD_HTTP_NOT_FOUND, "id", "no release '%s'", id);
        return NULL;
    }
    if (err != RF_OK) {
        api_reply_failure(r, err, "cannot read the release", errstr);
        return NULL;
    }
    if (!api_require(r, RF_ROLE_VIEWER, str_of(rec, "service"), str_of(rec, "env"))) {
        json_decref(rec);
        return NULL;
    }
    return rec;
}

/* What the user may do with the release now: the console shows these buttons only. */
static json_t *releases_actions(api_req_t *r, const json_t *rec)
{
    const char *service = str_of(rec, "service"), *env = str_of(rec, "env");
    int status = rf_release_status_parse(str_of(rec, "status"));
    json_t *actions = json_array();
    rf_request_origin_t current;
    char errstr[512];

    if (api_releases_may_decide(r, rec)) {
        json_array_append_new(actions, json_string("approve"));
        json_array_append_new(actions, json_string("deny"));
    }
    if (!api_has_role(r, RF_ROLE_RELEASER, service, env))
        return actions;
    if (!rf_release_status_terminal(status))
        json_array_append_new(actions, json_string("cancel"));
    if ((status == RF_STATUS_PROGRESSING || status == RF_STATUS_PAUSED) &&
        json_object_get(json_object_get(rec, "progress"), "steps")) {
        json_array_append_new(actions, json_string("promote"));
        json_array_append_new(actions, json_string("abort"));
    }
    if (json_string_value(json_object_get(rec, "template_version")) &&
        json_object_get(rec, "params") && !json_is_null(json_object_get(rec, "params")))
        json_array_append_new(actions, json_string("rollback"));
    if (rf_request_find_latest(r->db, service, env, &current, errstr, sizeof(errstr)) == RF_OK &&
        strcmp(current.id, str_of(rec, "id")) == 0)
        json_array_append_new(actions, json_string("redo"));
    rf_request_origin_release(&current);
    return actions;
}

int api_releases_get(api_req_t *r, const char *id)
{
    json_t *rec = releases_record(r, id);

    if (!rec)
        return 0;
    json_object_set_new(rec, "actions", releases_actions(r, rec));
    return api_reply_json(r, MHD_HTTP_OK, rec);
}

/* ---------------------------------------------------------------------------------------
 * Publishing a request */

/* Publishes a request and waits (a few seconds, on the release's notifications) for the
 * render stage to record it: 201 with the record then, 202 with the id otherwise. */
static int releases_publish(api_req_t *r, json_t *msg)
{
    const char *id = str_of(msg, "release_id");
    api_sub_t *sub = api_hub_subscribe(r->api->hub, id);
    unsigned seen = api_sub_generation(sub);
    char errstr[512];
    json_t *rec = NULL;
    int waited = 0;

    if (api_publish(r, "requests", msg) != 0) {
        api_hub_unsubscribe(r->api->hub, sub);
        return 0;
    }
    while (waited < RELEASES_RECORD_WAIT_MS && !r->api->stopping) {
        if (rf_store_record(r->db, id, &rec, errstr, sizeof(errstr)) == RF_OK)
            break;
        waited += api_sub_wait(sub, &seen, RELEASES_RECORD_WAIT_MS - waited);
    }
    api_hub_unsubscribe(r->api->hub, sub);
    if (rec) {
        json_object_set_new(rec, "release_id", json_string(id));
        json_object_set_new(rec, "actions", releases_actions(r, rec));
        return api_reply_json(r, MHD_HTTP_CREATED, rec);
    }
    return api_reply_json(r, MHD_HTTP_ACCEPTED,
                          json_pack("{s:s, s:s, s:s}", "release_id", id, "status", "published",
                                    "message", "published; the render stage has not recorded"
                                               " it yet"));
}

/* The optional description of rollback and redo; 0 after replying 400. */
static int releases_desc(api_req_t *r, const char **desc)
{
    static const char *const fields[] = {"description", NULL};
    json_t *body, *d;

    *desc = NULL;
    if (r->body.len == 0)
        return 1;
    body = api_req_json(r, fields);
    if (!body)
        return 0;
    d = json_object_get(body, "description");
    if (d && !json_is_string(d)) {
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, "description", "description must be a string");
        return 0;
    }
    if (d && strlen(json_string_value(d)) > 1000) {
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, "description",
                        "description is longer than 1000 characters");
        return 0;
    }
    *desc = d ? json_string_value(d) : NULL;
    return 1;
}

int api_releases_create(api_req_t *r)
{
    static const char *const fields[] = {"service", "env", "version", "description", NULL};
    static const char *const required[] = {"service", "env", "version", NULL};
    const char *service, *env, *version, *desc = NULL;
    char errstr[1024];
    const char *p[3];
    PGresult *res = NULL;
    json_t *body, *msg;
    rf_err_t err;
    int result;

    body = api_req_json(r, fields);
    if (!body)
        return 0;
    for (const char *const *f = required; *f; f++) {
        json_t *v = json_object_get(body, *f);
        if (!json_is_string(v) || !*json_string_value(v))
            return api_reply_error(r, MHD_HTTP_BAD_REQUEST, *f, "field '%s' is required (a string)",
                                   *f);
    }
    service = str_of(body, "service");
    env = str_of(body, "env");
    version = str_of(body, "version");
    if (!api_valid_label(service))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "service",
                               "service '%.64s' is not a valid name (lowercase letters, digits"
                               " and '-', at most 63)",
                               service);
    if (!api_valid_label(env))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "env",
                               "env '%.64s' is not a valid name (lowercase letters, digits and"
                               " '-', at most 63)",
                               env);
    if (!api_valid_tag(version))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "version",
                               "version '%.64s' is not a valid image tag", version);
    if (json_object_get(body, "description")) {
        if (!json_is_string(json_object_get(body, "description")))
            return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "description",
                                   "description must be a string");
        desc = str_of(body, "description");
        if (strlen(desc) > 1000)
            return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "description",
                                   "description is longer than 1000 characters");
    }
    if (!api_require(r, RF_ROLE_RELEASER, service, env))
        return 0;
    /* What the render stage would reject, said now and by field. */
    p[0] = service;
    p[1] = env;
    p[2] = version;
    err = rf_db_exec(r->db,
                     "SELECT EXISTS (SELECT 1 FROM services WHERE service = $1 AND env = $2),"
                     " EXISTS (SELECT 1 FROM images WHERE service = $1),"
                     " EXISTS (SELECT 1 FROM images WHERE service = $1 AND tag = $3)",
                     3, p, &res, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot read the service", errstr);
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        PQclear(res);
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "service",
                               "no service '%s' in env '%s' (an admin configures it first)",
                               service, env);
    }
    if (strcmp(PQgetvalue(res, 0, 1), "t") == 0 && strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
        PQclear(res);
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "version",
                               "version '%s' is not a known version of '%s' (GET"
                               " /api/v1/images/%s lists them)",
                               version, service, service);
    }
    PQclear(res);
    msg = rf_request_new("deploy", service, env, version, NULL, NULL, desc && *desc ? desc : NULL);
    result = releases_publish(r, msg);
    json_decref(msg);
    return result;
}

/* ---------------------------------------------------------------------------------------
 * Rollback and redo (as relctl rollback / redo, docs/permissions.md) */

/* Publishes msg, built from an earlier release (and frees it). The API leaves an empty
 * description out, as for a deploy. */
static int releases_publish_from(api_req_t *r, json_t *msg, const char *desc)
{
    int result;

    if (desc && !*desc)
        json_object_del(msg, "description");
    result = releases_publish(r, msg);
    json_decref(msg);
    return result;
}

/* Replies to a failed rf_request_find_*: status missing when there is no such release (404
 * names the id), 500 or 503 otherwise. */
static int releases_find_failed(api_req_t *r, rf_err_t err, unsigned missing, const char *what,
                                const char *errstr)
{
    if (err == RF_ERR_NOTFOUND)
        return api_reply_error(r, missing, missing == MHD_HTTP_NOT_FOUND ? "id" : NULL, "%s",
                               errstr);
    return api_reply_failure(r, err, what, errstr);
}

/* Publishes a rollback to origin, when the body and the user's role allow it. */
static int releases_rollback_to(api_req_t *r, const rf_request_origin_t *origin)
{
    const char *desc;
    char errstr[1024];
    json_t *msg;

    if (!releases_desc(r, &desc))
        return 0;
    if (!api_require(r, RF_ROLE_RELEASER, origin->service, origin->env))
        return 0;
    if (rf_request_rollback(origin, NULL, desc, &msg, errstr, sizeof(errstr)) != RF_OK)
        return api_reply_error(r, MHD_HTTP_CONFLICT, NULL, "%s", errstr);
    return releases_publish_from(r, msg, desc);
}

int api_releases_rollback(api_req_t *r, const char *id)
{
    rf_request_origin_t origin;
    char errstr[1024];
    rf_err_t err;
    int result;

    if (!rf_request_is_id(id))
        return api_reply_error(r, MHD_HTTP_NOT_FOUND, "id", "no release '%.64s'", id);
    err = rf_request_find_release(r->db, id, &origin, errstr, sizeof(errstr));
    result = err == RF_OK ? releases_rollback_to(r, &origin)
                          : releases_find_failed(r, err, MHD_HTTP_NOT_FOUND,
                                                 "cannot read the release", errstr);
    rf_request_origin_release(&origin);
    return result;
}

int api_services_rollback(api_req_t *r, const char *service, const char *env)
{
    rf_request_origin_t origin;
    char errstr[1024];
    rf_err_t err;
    int result;

    if (!api_require(r, RF_ROLE_RELEASER, service, env))
        return 0;
    err = rf_request_find_previous(r->db, service, env, &origin, errstr, sizeof(errstr));
    result = err == RF_OK ? releases_rollback_to(r, &origin)
                          : releases_find_failed(r, err, MHD_HTTP_CONFLICT,
                                                 "cannot read the releases", errstr);
    rf_request_origin_release(&origin);
    return result;
}

/* Publishes a redo of the newest release that rendered; parent must be it when given. */
static int releases_redo(api_req_t *r, const char *service, const char *env, const char *parent)
{
    rf_request_origin_t origin;
    const char *desc;
    char errstr[1024];
    rf_err_t err;
    int result;

    if (!releases_desc(r, &desc))
        return 0;
    if (!api_require(r, RF_ROLE_RELEASER, service, env))
        return 0;
    err = rf_request_find_latest(r->db, service, env, &origin, errstr, sizeof(errstr));
    if (err != RF_OK)
        result = releases_find_failed(r, err, MHD_HTTP_CONFLICT, "cannot read the releases",
                                      errstr);
    else if (parent && strcmp(parent, origin.id) != 0)
        result = api_reply_error(r, MHD_HTTP_CONFLICT, NULL,
                                 "release %s is not the latest release of '%s' in env '%s'"
                                 " (%s is): redo repeats the latest",
                                 parent, service, env, origin.id);
    else
        result = releases_publish_from(r, rf_request_redo(&origin, NULL, desc), desc);
    rf_request_origin_release(&origin);
    return result;
}

int api_services_redo(api_req_t *r, const char *service, const char *env)
{
    return releases_redo(r, service, env, NULL);
}

int api_releases_redo(api_req_t *r, const char *id)
{
    json_t *rec = releases_record(r, id);
    int result;

    if (!rec)
        return 0;
    result = releases_redo(r, str_of(rec, "service"), str_of(rec, "env"), id);
    json_decref(rec);
    return result;
}

/* ---------------------------------------------------------------------------------------
 * Commands: cancel, promote, abort */

int api_releases_command(api_req_t *r, const char *id, const char *action)
{
    static const char *const fields[] = {"full", NULL};
    char cmd_id[RF_MSG_UUID_SIZE];
    json_t *rec, *msg, *body = NULL;
    int full = 0, result;

    if (r->body.len) {
        body = api_req_json(r, strcmp(action, "promote") == 0 ? fields : NULL);
        if (!body)
            return 0;
        if (json_object_get(body, "full")) {
            if (!json_is_boolean(json_object_get(body, "full")))
                return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "full", "full must be true or false");
            full = json_is_true(json_object_get(body, "full"));
        }
    }
    rec = releases_record(r, id);
    if (!rec)
        return 0;
    if (!api_require(r, RF_ROLE_RELEASER, str_of(rec, "service"), str_of(rec, "env")))
        goto refused;
    if (rf_release_status_terminal(rf_release_status_parse(str_of(rec, "status")))) {
        api_reply_error(r, MHD_HTTP_CONFLICT, NULL, "release %s has already ended as %s", id,
                        str_of(rec, "status"));
        goto refused;
    }
    msg = rf_request_command(action, id, str_of(rec, "service"), str_of(rec, "env"), NULL, full,
                             cmd_id);
    json_decref(rec);
    result = api_publish(r, "commands", msg);
    json_decref(msg);
    if (result != 0)
        return 0;
    return api_reply_json(r, MHD_HTTP_ACCEPTED,
                          json_pack("{s:s, s:s, s:s, s:s}", "command_id", cmd_id, "release_id", id,
                                    "action", action, "status", "sent"));
refused:
    json_decref(rec);
    return 0;
}
