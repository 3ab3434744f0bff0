/* /api/v1/waves: create, list, show, pause, resume and abort waves (docs/waves.md). */
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rf_wave.h"

/* 404, 403 or the failure for an error of rf_wave_*; 409 for a command that does not apply. */
static int waves_error(api_req_t *r, rf_err_t err, const char *errstr, unsigned perm_status)
{
    if (err == RF_ERR_NOTFOUND)
        return api_reply_error(r, MHD_HTTP_NOT_FOUND, NULL, "%s", errstr);
    if (err == RF_ERR_PERM && strncmp(errstr, "permission denied", 17) == 0) {
        api_log_refusal(r, MHD_HTTP_FORBIDDEN, errstr);
        return api_reply_error(r, MHD_HTTP_FORBIDDEN, NULL, "%s", errstr);
    }
    if (err == RF_ERR_PERM)
        return api_reply_error(r, perm_status, NULL, "%s", errstr);
    return api_reply_failure(r, err, "cannot read or change the wave", errstr);
}

int api_waves_list(api_req_t *r)
{
    const char *env = api_req_arg(r, "env"), *lim = api_req_arg(r, "limit");
    int limit = lim ? atoi(lim) : API_PAGE_DEFAULT;
    char errstr[1024];
    json_t *list = NULL;
    rf_err_t err;

    if (env && !api_valid_label(env))
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "env", "env must be a DNS label");
    if (limit <= 0 || limit > API_PAGE_MAX)
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "limit", "limit must be 1 to %d",
                               API_PAGE_MAX);
    err = rf_wave_list(r->db, env, limit, r->user, &list, errstr, sizeof(errstr));
    if (err != RF_OK)
        return waves_error(r, err, errstr, MHD_HTTP_BAD_REQUEST);
    return api_reply_json(r, MHD_HTTP_OK, json_pack("{s:o}", "waves", list));
}

/* The record with what the caller may do with it. */
static int waves_reply(api_req_t *r, unsigned status, const char *id)
{
    char errstr[1024];
    json_t *w = NULL;
    int may = 0;
    rf_err_t err;

    err = rf_wave_record(r->db, id, 1, r->user, "viewer", &w, errstr, sizeof(errstr));
    if (err != RF_OK)
        return waves_error(r, err, errstr, MHD_HTTP_BAD_REQUEST);
    if (rf_wave_allowed(r->db, id, r->user, "releaser", &may, errstr, sizeof(errstr)) != RF_OK)
        may = 0;
    {
        const char *st = json_string_value(json_object_get(w, "status"));
        int open =
            strcmp(st, "running") == 0 || strcmp(st, "paused") == 0 || strcmp(st, "halted") == 0;
        json_object_set_new(w, "allowed",
                            json_pack("{s:b, s:b, s:b}", "pause", may && strcmp(st, "running") == 0,
                                      "resume", may && strcmp(st, "paused") == 0, "abort",
                                      may && open));
    }
    return api_reply_json(r, status, w);
}

int api_waves_get(api_req_t *r, const char *id)
{
    return waves_reply(r, MHD_HTTP_OK, id);
}

int api_waves_create(api_req_t *r)
{
    static const char *const fields[] = {
        "env",   "select",       "version",      "redo",          "template_version",
        "steps", "max_parallel", "max_failures", "pause_between", "description",
        NULL};
    json_t *body = api_req_json(r, fields), *rec = NULL;
    char errstr[1024], id[64];
    int usage = 0;
    rf_err_t err;

    if (!body)
        return 0;
    err = rf_wave_create(r->db, body, r->user, r->user, &rec, &usage, errstr, sizeof(errstr));
    if (err != RF_OK)
        return waves_error(r, err, errstr, usage ? MHD_HTTP_BAD_REQUEST : 422);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(rec, "id")));
    json_decref(rec);
    return waves_reply(r, MHD_HTTP_CREATED, id);
}

int api_waves_command(api_req_t *r, const char *id, const char *action)
{
    static const char *const fields[] = {"message", NULL};
    const char *why = NULL;
    char errstr[1024];
    rf_err_t err;

    if (r->body.len) {
        json_t *body = api_req_json(r, fields);
        if (!body)
            return 0;
        if (json_object_get(body, "message") && !json_is_string(json_object_get(body, "message")))
            return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "message", "message must be text");
        why = json_string_value(json_object_get(body, "message"));
    }
    err = rf_wave_command(r->db, id, action, r->user, why, r->user, errstr, sizeof(errstr));
    if (err != RF_OK)
        return waves_error(r, err, errstr, MHD_HTTP_CONFLICT);
    return waves_reply(r, MHD_HTTP_OK, id);
}
