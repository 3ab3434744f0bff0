/* Publishing requests and commands as relctl does: schema check, signature, delivery. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "rf_log.h"

/* The key to sign with, as the request's user: the user's own key when this server holds
 * it (secret signing_key.<user>), or else the server's upstream key (setting
 * signing_key_id), which may name any operator. *key NULL: nothing to sign with. */
static int publish_key(api_req_t *r, char *key_id, size_t key_id_size, char **key)
{
    char secret[256], errstr[512];
    const char *p[1];
    PGresult *res = NULL;
    int result = -1;

    *key = NULL;
    snprintf(secret, sizeof(secret), "signing_key.%s", r->user);
    *key = rf_config_secret(&r->api->conf, secret);
    if (*key) {
        p[0] = r->user;
        if (rf_db_exec(r->db, "SELECT 1 FROM signing_keys WHERE key_id = $1 AND user_name = $1",
                       1, p, &res, errstr, sizeof(errstr)) != RF_OK) {
            api_reply_failure(r, RF_ERR_RETRY, "cannot read the signing keys", errstr);
            goto fail;
        }
        if (PQntuples(res) == 1) {
            snprintf(key_id, key_id_size, "%s", r->user);
            PQclear(res);
            return 0;
        }
        PQclear(res);
        res = NULL;
        free(*key);
        *key = NULL;
    }
    if (!r->api->conf.signing_key_id || !*r->api->conf.signing_key_id)
        return 0;
    snprintf(key_id, key_id_size, "%s", r->api->conf.signing_key_id);
    snprintf(secret, sizeof(secret), "signing_key.%s", key_id);
    *key = rf_config_secret(&r->api->conf, secret);
    if (!*key) {
        api_reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                        "the API's signing key '%s' is not in its secrets", key_id);
        return -1;
    }
    p[0] = key_id;
    if (rf_db_exec(r->db, "SELECT upstream FROM signing_keys WHERE key_id = $1", 1, p, &res,
                   errstr, sizeof(errstr)) != RF_OK) {
        api_reply_failure(r, RF_ERR_RETRY, "cannot read the signing keys", errstr);
        goto fail;
    }
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        api_reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                        "the API's signing key '%s' is not registered as an upstream key"
                        " (relctl user key USER %s --upstream)",
                        key_id, key_id);
        goto fail;
    }
    result = 0;
fail:
    PQclear(res);
    if (result != 0) {
        free(*key);
        *key = NULL;
    }
    return result;
}

int api_publish(api_req_t *r, const char *suffix, json_t *msg)
{
    char errstr[1024], key_id[192], routing[300];
    char *key = NULL, *text = NULL;
    struct timespec now;
    rf_err_t err;
    int result = -1;

    json_object_set_new(msg, "operator", json_string(r->user));
    if (rf_schema_validate(r->api->schemas, json_string_value(json_object_get(msg, "schema")),
                           msg, errstr, sizeof(errstr)) != RF_OK) {
        api_reply_error(r, MHD_HTTP_BAD_REQUEST, NULL, "invalid %s: %s", suffix, errstr);
        return -1;
    }
    if (publish_key(r, key_id, sizeof(key_id), &key) != 0)
        return -1;
    if (key) {
        clock_gettime(CLOCK_REALTIME, &now);
        if (rf_auth_sign(msg, key_id, key, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
                         errstr, sizeof(errstr)) != RF_OK) {
            api_reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "cannot sign: %s", errstr);
            goto out;
        }
    }
    snprintf(routing, sizeof(routing), "%s/%s", json_string_value(json_object_get(msg, "env")),
             json_string_value(json_object_get(msg, "service")));
    text = json_dumps(msg, JSON_COMPACT);
    pthread_mutex_lock(&r->api->produce_lock);
    err = rf_producer_send(r->api->producer, suffix, routing, text, strlen(text), errstr,
                           sizeof(errstr));
    pthread_mutex_unlock(&r->api->produce_lock);
    if (err != RF_OK) {
        api_reply_failure(r, RF_ERR_RETRY, "cannot publish the request", errstr);
        goto out;
    }
    rf_log_info("published to %s: %s by '%s'%s", suffix, routing, r->user,
                key ? " (signed)" : " (unsigned)");
    result = 0;
out:
    free(key);
    free(text);
    return result;
}
