/* Requests and commands about releases, and the earlier releases a rollback or redo uses. */
#include <stdio.h>
#include <string.h>

#include "rf_request.h"

/* The columns every rf_request_find_* reads, in the order of rf_request_origin_t. */
#define REQUEST_ORIGIN_COLUMNS                                                                     \
    "r.id, r.service, r.env, r.version, r.status, r.params, r.template_version"

/* The newest release of $1 service in $2 env that rendered: what runs there now. */
#define REQUEST_LATEST_SQL                                                                         \
    "SELECT created_at, id FROM releases WHERE service = $1 AND env = $2 AND manifests IS"         \
    " NOT NULL ORDER BY created_at DESC, id DESC LIMIT 1"

/* The values a release rendered with that belong to it alone, not to what ran. */
static const char *const request_own_values[] = {"release_id", "operator", "namespace", NULL};

int rf_request_is_id(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

    if (strlen(s) != sizeof(shape) - 1)
        return 0;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == '-' ? s[i] != '-' : !strchr("0123456789abcdef", s[i]))
            return 0;
    return 1;
}

json_t *rf_request_new(const char *kind, const char *service, const char *env, const char *version,
                       const char *parent, const char *operator_name, const char *desc)
{
    char id[RF_MSG_UUID_SIZE], now[RF_MSG_TIME_SIZE];

    rf_msg_uuid4(id);
    rf_msg_now_iso(now, sizeof(now));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:s*, s:s, s:s*}", "schema",
                     "relfleet.request.v1", "release_id", id, "service", service, "env", env,
                     "version", version, "kind", kind, "parent", parent, "operator", operator_name,
                     "requested_at", now, "description", desc);
}

json_t *rf_request_command(const char *action, const char *release_id, const char *service,
                           const char *env, const char *operator_name, int full,
                           char cmd_id[RF_MSG_UUID_SIZE])
{
    char now[RF_MSG_TIME_SIZE];
    json_t *msg;

    rf_msg_uuid4(cmd_id);
    rf_msg_now_iso(now, sizeof(now));
    msg = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s*, s:s}", "schema", "relfleet.command.v1",
                    "command_id", cmd_id, "release_id", release_id, "service", service, "env", env,
                    "action", action, "operator", operator_name, "issued_at", now);
    if (msg && full)
        json_object_set_new(msg, "full", json_true());
    return msg;
}

/* Runs a query of REQUEST_ORIGIN_COLUMNS with params p into o. RF_ERR_NOTFOUND when it has
 * no row, errstr then the message of notfound: a format of the params (%s for p[0] and for
 * p[1] when nparams is 2). */
static rf_err_t request_find(rf_db_t *db, const char *sql, int nparams, const char *const *p,
                             const char *notfound, rf_request_origin_t *o, char *errstr,
                             size_t errstr_size)
{
    const char **fields[7] = {&o->id,     &o->service,         &o->env, &o->version, &o->status,
                              &o->params, &o->template_version};
    rf_err_t result;

    memset(o, 0, sizeof(*o));
    result = rf_db_exec(db, sql, nparams, p, &o->res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(o->res) != 1) {
        rf_request_origin_release(o);
        snprintf(errstr, errstr_size, notfound, p[0], nparams > 1 ? p[1] : "");
        return RF_ERR_NOTFOUND;
    }
    for (int i = 0; i < 7; i++)
        *fields[i] = rf_db_value(o->res, 0, i);
    return RF_OK;
}

rf_err_t rf_request_find_release(rf_db_t *db, const char *id, rf_request_origin_t *o, char *errstr,
                                 size_t errstr_size)
{
    const char *p[1] = {id};

    memset(o, 0, sizeof(*o));
    if (!rf_request_is_id(id))
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no release '%s'", id);
    return request_find(db,
                        "SELECT " REQUEST_ORIGIN_COLUMNS " FROM releases r WHERE r.id = $1::uuid",
                        1, p, "no release '%s'", o, errstr, errstr_size);
}

rf_err_t rf_request_find_previous(rf_db_t *db, const char *service, const char *env,
                                  rf_request_origin_t *o, char *errstr, size_t errstr_size)
{
    const char *p[2] = {service, env};

    return request_find(db,
                        "SELECT " REQUEST_ORIGIN_COLUMNS " FROM releases r,"
                        " (" REQUEST_LATEST_SQL ") cur WHERE r.service = $1 AND r.env = $2"
                        " AND r.status = 'succeeded' AND r.id <> cur.id"
                        " AND r.created_at <= cur.created_at"
                        " ORDER BY r.created_at DESC, r.id DESC LIMIT 1",
                        2, p, "no successful release of '%s' in env '%s' before its current one", o,
                        errstr, errstr_size);
}

rf_err_t rf_request_find_latest(rf_db_t *db, const char *service, const char *env,
                                rf_request_origin_t *o, char *errstr, size_t errstr_size)
{
    const char *p[2] = {service, env};

    return request_find(db,
                        "SELECT " REQUEST_ORIGIN_COLUMNS " FROM releases r,"
                        " (" REQUEST_LATEST_SQL ") cur WHERE r.id = cur.id",
                        2, p, "no release of '%s' in env '%s' to redo", o, errstr, errstr_size);
}

void rf_request_origin_release(rf_request_origin_t *o)
{
    PQclear(o->res);
    memset(o, 0, sizeof(*o));
}

rf_err_t rf_request_rollback(const rf_request_origin_t *o, const char *operator_name,
                             const char *desc, json_t **msg, char *errstr, size_t errstr_size)
{
    char auto_desc[512];
    json_t *params;

    *msg = NULL;
    if (!o->params || !o->template_version)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "release %s never rendered (it ended %s): nothing to go back to", o->id,
                       o->status);
    snprintf(auto_desc, sizeof(auto_desc), "rollback to version %s of release %s", o->version,
             o->id);
    *msg = rf_request_new("rollback", o->service, o->env, o->version, o->id, operator_name,
                          desc ? desc : auto_desc);
    if (!*msg)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "out of memory");
    params = json_loads(o->params, 0, NULL);
    for (const char *const *k = request_own_values; *k; k++)
        json_object_del(params, *k);
    json_object_set_new(*msg, "params", params);
    json_object_set_new(*msg, "template_version", json_string(o->template_version));
    return RF_OK;
}

json_t *rf_request_redo(const rf_request_origin_t *o, const char *operator_name, const char *desc)
{
    char auto_desc[512];
    json_t *msg;

    snprintf(auto_desc, sizeof(auto_desc), "redo to version %s of release %s", o->version, o->id);
    msg = rf_request_new("redo", o->service, o->env, o->version, o->id, operator_name,
                         desc ? desc : auto_desc);
    if (msg)
        json_object_set_new(msg, "restart", json_true());
    return msg;
}
