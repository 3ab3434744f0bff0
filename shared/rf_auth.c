/* Request signatures (HMAC-SHA256 over the canonical message), roles and tokens. */
#include "rf_auth.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_hash.h"
#include "rf_notify_sign.h"

static const char *const role_names[] = {NULL, "viewer", "releaser", "admin", "approver"};

const char *rf_auth_role_name(rf_role_t role)
{
    return role > RF_ROLE_NONE && role <= RF_ROLE_APPROVER ? role_names[role] : NULL;
}

rf_role_t rf_auth_role_parse(const char *s)
{
    for (int r = RF_ROLE_VIEWER; s && r <= RF_ROLE_APPROVER; r++)
        if (strcmp(role_names[r], s) == 0)
            return (rf_role_t)r;
    return RF_ROLE_NONE;
}

void rf_auth_token_hash(const char *token, char out[65])
{
    rf_hash_sha256_hex(token, strlen(token), out);
}

char *rf_auth_canonical(const json_t *msg)
{
    json_t *copy;
    char *text;

    if (!json_is_object(msg))
        return NULL;
    copy = json_copy((json_t *)msg);
    json_object_del(copy, "auth");
    text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(copy);
    /* jansson writes \u00E9, Python \u00e9: the canonical form has lowercase hex. */
    for (char *c = text; c && *c; c++) {
        if (*c != '\\')
            continue;
        c++;
        if (!*c)
            break;
        if (*c == 'u') {
            for (int i = 1; i <= 4 && c[i]; i++)
                c[i] = (char)tolower((unsigned char)c[i]);
            c += 4;
        }
    }
    return text;
}

void rf_auth_signature(const char *key, int64_t timestamp_ms, const char *canonical,
                       char out[65])
{
    unsigned char mac[32];
    char prefix[32];
    size_t plen = (size_t)snprintf(prefix, sizeof(prefix), "%" PRId64 ".", timestamp_ms);
    size_t clen = strlen(canonical);
    char *data = malloc(plen + clen + 1);

    if (!data)
        abort();
    memcpy(data, prefix, plen);
    memcpy(data + plen, canonical, clen + 1);
    rf_notify_hmac_sha256(key, strlen(key), data, plen + clen, mac);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    out[64] = '\0';
    free(data);
}

rf_err_t rf_auth_sign(json_t *msg, const char *key_id, const char *key, int64_t now_ms,
                      char *errstr, size_t errstr_size)
{
    char sig[65];
    char *canonical = rf_auth_canonical(msg);

    if (!canonical)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot sign: not a JSON object");
    rf_auth_signature(key, now_ms, canonical, sig);
    free(canonical);
    json_object_set_new(msg, "auth", json_pack("{s:s, s:I, s:s}", "key_id", key_id, "timestamp",
                                               (json_int_t)now_ms, "signature", sig));
    return RF_OK;
}

rf_err_t rf_auth_verify(const json_t *msg, const char *key, int64_t received_ms, int window_s,
                        char *reason, size_t reason_size)
{
    const json_t *auth = json_object_get(msg, "auth");
    const char *sig = json_string_value(json_object_get(auth, "signature"));
    const json_t *ts = json_object_get(auth, "timestamp");
    int64_t t, skew;
    char expected[65];
    char *canonical;
    int same;

    if (!json_is_object(auth) || !sig || !json_is_integer(ts))
        return rf_errf(RF_ERR_PERM, reason, reason_size, "missing signature");
    t = (int64_t)json_integer_value(ts);
    skew = t > received_ms ? t - received_ms : received_ms - t;
    if (skew > (int64_t)window_s * 1000)
        return rf_errf(RF_ERR_PERM, reason, reason_size,
                       "expired signature: timestamp %" PRId64 " is %" PRId64
                       " s away from its arrival, beyond the %d s window",
                       t, skew / 1000, window_s);
    canonical = rf_auth_canonical(msg);
    rf_auth_signature(key, t, canonical, expected);
    free(canonical);
    same = strlen(sig) == 64 && CRYPTO_memcmp(sig, expected, 64) == 0;
    if (!same)
        return rf_errf(RF_ERR_PERM, reason, reason_size, "bad signature by key '%s'",
                       json_string_value(json_object_get(auth, "key_id")));
    return RF_OK;
}

rf_err_t rf_auth_has_role(rf_db_t *db, const char *user, rf_role_t need, const char *service,
                          const char *env, int *has, char *errstr, size_t errstr_size)
{
    const char *p[4] = {user, rf_auth_role_name(need), service, env};
    PGresult *res = NULL;
    rf_err_t result;

    *has = 0;
    result = rf_db_exec(db, "SELECT relfleet_has_role($1, $2, $3, $4)", 4, p, &res, errstr,
                        errstr_size);
    if (result == RF_OK)
        *has = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return result;
}

rf_err_t rf_auth_token_user(rf_db_t *db, const char *token, char **user, char *errstr,
                            size_t errstr_size)
{
    char hash[65];
    const char *p[1] = {hash};
    PGresult *res = NULL;
    rf_err_t result;

    *user = NULL;
    rf_auth_token_hash(token, hash);
    result = rf_db_exec(db,
                        "SELECT t.user_name FROM api_tokens t JOIN users u ON u.name ="
                        " t.user_name WHERE t.token_sha256 = $1 AND NOT u.disabled",
                        1, p, &res, errstr, errstr_size);
    if (result == RF_OK && PQntuples(res) == 1)
        *user = strdup(PQgetvalue(res, 0, 0));
    else if (result == RF_OK)
        result = rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size,
                         "the API token (setting 'token') belongs to no enabled user");
    PQclear(res);
    return result;
}

/* Fills reason, clears *allowed and returns RF_OK: the decision is made. */
static rf_err_t auth_refuse(int *allowed, char *reason, size_t reason_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static rf_err_t auth_refuse(int *allowed, char *reason, size_t reason_size, const char *fmt, ...)
{
    va_list ap;

    *allowed = 0;
    va_start(ap, fmt);
    vsnprintf(reason, reason_size, fmt, ap);
    va_end(ap);
    return RF_OK;
}

rf_err_t rf_auth_check(rf_db_t *db, const rf_config_t *conf, const json_t *msg,
                       const char *message_id, int64_t received_ms, rf_role_t need,
                       const char *service, const char *env, int *allowed, char *reason,
                       size_t reason_size, char *errstr, size_t errstr_size)
{
    const json_t *auth = json_object_get(msg, "auth");
    const char *key_id = json_string_value(json_object_get(auth, "key_id"));
    const char *sig = json_string_value(json_object_get(auth, "signature"));
    const char *operator_name = json_string_value(json_object_get(msg, "operator"));
    const char *p[3] = {key_id, sig, message_id};
    PGresult *res = NULL;
    char secret_name[96], key_hash[65], user[160];
    char *key = NULL;
    int upstream, has = 0;
    rf_err_t result;

    *allowed = 0;
    reason[0] = '\0';
    if (!json_is_object(auth)) {
        if (strcmp(conf->auth_required, "on") == 0)
            return auth_refuse(allowed, reason, reason_size,
                               "missing signature (auth_required is on)");
        *allowed = 1; /* unsigned and not required: the operator is as claimed */
        return RF_OK;
    }
    result = rf_db_exec(db,
                        "SELECT k.user_name, k.upstream, k.key_sha256, u.disabled FROM"
                        " signing_keys k JOIN users u ON u.name = k.user_name WHERE k.key_id = $1",
                        1, p, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return auth_refuse(allowed, reason, reason_size, "unknown signing key '%s'", key_id);
    }
    snprintf(user, sizeof(user), "%s", PQgetvalue(res, 0, 0));
    upstream = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    snprintf(key_hash, sizeof(key_hash), "%s", PQgetvalue(res, 0, 2));
    if (strcmp(PQgetvalue(res, 0, 3), "t") == 0) {
        PQclear(res);
        return auth_refuse(allowed, reason, reason_size,
                           "signing key '%s' belongs to disabled user '%s'", key_id, user);
    }
    PQclear(res);
    res = NULL;

    /* A signature already accepted for another message: someone sends it again. */
    result = rf_db_exec(db,
                        "SELECT message_id FROM request_signatures WHERE key_id = $1"
                        " AND signature = $2 AND message_id <> $3::uuid",
                        3, p, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (PQntuples(res) > 0) {
        auth_refuse(allowed, reason, reason_size,
                    "replayed signature: key '%s' signed %s with it, not %s", key_id,
                    PQgetvalue(res, 0, 0), message_id);
        PQclear(res);
        return RF_OK;
    }
    PQclear(res);
    res = NULL;

    snprintf(secret_name, sizeof(secret_name), "signing_key.%s", key_id);
    key = rf_config_secret(conf, secret_name);
    if (!key)
        return auth_refuse(allowed, reason, reason_size,
                           "signing key '%s' is not in this worker's secrets", key_id);
    {
        char have[65];
        rf_auth_token_hash(key, have);
        if (strcmp(have, key_hash) != 0) {
            free(key);
            return auth_refuse(allowed, reason, reason_size,
                               "signing key '%s' in this worker's secrets is not the registered"
                               " one",
                               key_id);
        }
    }
    result = rf_auth_verify(msg, key, received_ms, conf->signature_window_s, reason, reason_size);
    free(key);
    if (result != RF_OK)
        return RF_OK; /* refused: reason says why */

    if (!upstream && (!operator_name || strcmp(operator_name, user) != 0))
        return auth_refuse(allowed, reason, reason_size,
                           "operator '%s' is not the owner of signing key '%s' (user '%s')",
                           operator_name ? operator_name : "", key_id, user);
    result = rf_auth_has_role(db, user, need, service, env, &has, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (!has)
        return auth_refuse(allowed, reason, reason_size,
                           "user '%s' has no %s role for service '%s' in env '%s'", user,
                           rf_auth_role_name(need), service, env);
    /* Record it; of two messages racing with one signature, the first recorded wins. */
    result = rf_db_exec(db,
                        "INSERT INTO request_signatures (key_id, signature, message_id)"
                        " VALUES ($1, $2, $3::uuid) ON CONFLICT (key_id, signature) DO UPDATE"
                        " SET key_id = EXCLUDED.key_id RETURNING message_id = $3::uuid,"
                        " message_id",
                        3, p, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        auth_refuse(allowed, reason, reason_size,
                    "replayed signature: key '%s' signed %s with it, not %s", key_id,
                    PQgetvalue(res, 0, 1), message_id);
    else
        *allowed = 1;
    PQclear(res);
    return RF_OK;
}
