/* Approvals over HTTP: POST /api/v1/releases/ID/approve and /deny (docs/promotion.md). */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rf_log.h"
#include "rf_request.h"

int api_releases_may_decide(api_req_t *r, const json_t *rec)
{
    const char *status = json_string_value(json_object_get(rec, "status"));
    const char *op = json_string_value(json_object_get(rec, "operator"));
    size_t i;
    json_t *a;

    if (!status || strcmp(status, "awaiting_approval") != 0 || (op && strcmp(op, r->user) == 0))
        return 0;
    json_array_foreach(json_object_get(rec, "approvals"), i, a)
    {
        const char *who = json_string_value(json_object_get(a, "user"));
        if (who && strcmp(who, r->user) == 0)
            return 0;
    }
    return api_has_role(r, RF_ROLE_APPROVER, json_string_value(json_object_get(rec, "service")),
                        json_string_value(json_object_get(rec, "env")));
}

/* Hands the stored request of a release approved now to the render stage, as it was
 * signed (its sweep starts the release anyway if this fails). */
static void approvals_hand_on(api_req_t *r, const json_t *request)
{
    char errstr[512], routing[300];
    char *text = json_dumps(request, JSON_COMPACT | JSON_SORT_KEYS);
    rf_err_t err;

    if (!text)
        return;
    snprintf(routing, sizeof(routing), "%s/%s", json_string_value(json_object_get(request, "env")),
             json_string_value(json_object_get(request, "service")));
    pthread_mutex_lock(&r->api->produce_lock);
    err = rf_producer_send(r->api->producer, "requests", routing, text, strlen(text), errstr,
                           sizeof(errstr));
    pthread_mutex_unlock(&r->api->produce_lock);
    if (err != RF_OK)
        rf_log_warn("approved release queued; its request was not handed on (the render sweep"
                    " starts it): %s",
                    errstr);
    free(text);
}

int api_releases_decide(api_req_t *r, const char *id, const char *decision)
{
    static const char *const fields[] = {"message", NULL};
    const int deny = strcmp(decision, "denied") == 0;
    const char *why = "", *code;
    char errstr[1024];
    json_t *body, *out = NULL, *m;
    PGresult *res = NULL;
    unsigned status;

    if (!rf_request_is_id(id))
        return api_reply_error(r, MHD_HTTP_NOT_FOUND, "id", "no release '%.64s' (ids are UUIDs)",
                               id);
    if (r->body.len) {
        body = api_req_json(r, fields);
        if (!body)
            return 0;
        m = json_object_get(body, "message");
        if (m && !json_is_string(m))
            return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "message", "message must be a string");
        why = m ? json_string_value(m) : "";
    }
    if (strlen(why) > 1000)
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "message",
                               "message is longer than 1000 characters");
    if (deny && !*why)
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "message",
                               "a denial needs a message: the reason goes on the record");
    {
        const char *params[4] = {id, r->user, decision, why};
        rf_err_t err = rf_db_exec(r->db, "SELECT relfleet_decide($1::uuid, $2, $3, $4)::text", 4,
                                  params, &res, errstr, sizeof(errstr));
        if (err != RF_OK)
            return api_reply_failure(r, err, "cannot record the decision", errstr);
    }
    out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    if (!out)
        return api_reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
    code = json_string_value(json_object_get(out, "code"));
    if (code) {
        status = strcmp(code, "not_found") == 0   ? MHD_HTTP_NOT_FOUND
                 : strcmp(code, "forbidden") == 0 ? MHD_HTTP_FORBIDDEN
                 : strcmp(code, "conflict") == 0  ? MHD_HTTP_CONFLICT
                                                  : MHD_HTTP_BAD_REQUEST;
        if (status == MHD_HTTP_FORBIDDEN)
            api_log_refusal(r, status, json_string_value(json_object_get(out, "error")));
        api_reply_error(r, status, NULL, "%s", json_string_value(json_object_get(out, "error")));
        json_decref(out);
        return 0;
    }
    if (json_is_object(json_object_get(out, "request")))
        approvals_hand_on(r, json_object_get(out, "request"));
    json_object_del(out, "request");
    json_object_set_new(out, "release_id", json_string(id));
    rf_log_info("release %s %s by '%s'", id, decision, r->user);
    return api_reply_json(r, MHD_HTTP_OK, out);
}
