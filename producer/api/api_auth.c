/* Who calls: bearer tokens for API clients, login sessions with CSRF tokens for browsers. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "api.h"
#include "rf_log.h"

#define AUTH_COOKIE "relfleet_session"

/* 32 random bytes as 64 lowercase hex characters. */
static int auth_random_hex(char out[65])
{
    unsigned char raw[32];

    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return -1;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

/* Compares in time independent of where the strings differ. */
static int auth_equal(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    unsigned char diff = n != m;

    for (size_t i = 0; i < n && i < m; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static int auth_unsafe_method(const char *method)
{
    return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
}

static json_t *auth_roles(api_req_t *r)
{
    const char *p[1] = {r->user};
    PGresult *res = NULL;
    char errstr[512];
    json_t *roles;

    if (rf_db_exec(r->db,
                   "SELECT coalesce(jsonb_agg(jsonb_build_object('role', role, 'service',"
                   " service_pattern, 'env', env_pattern) ORDER BY role, service_pattern,"
                   " env_pattern), '[]') FROM role_grants WHERE user_name = $1",
                   1, p, &res, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_error("cannot read the roles of '%s': %s", r->user, errstr);
        return json_array();
    }
    roles = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    return roles ? roles : json_array();
}

/* ---------------------------------------------------------------------------------------
 * Throttling of failed authentication (docs/api.md): one key per client address, one per
 * user a login names. Tokens are random (rft_ and 48 hex digits) and name no user, so a
 * wrong bearer token counts against its address only. */

static int64_t auth_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void auth_key_addr(api_req_t *r, char *key, size_t size)
{
    char addr[64];

    api_client_addr(r, 1, addr, sizeof(addr));
    snprintf(key, size, "addr %s", addr);
}

/* 1 when neither the client's address nor user (NULL or "": none) is blocked; otherwise
 * replies 429 with Retry-After, the credentials unchecked, and returns 0. */
static int auth_throttle_check(api_req_t *r, const char *user)
{
    api_throttle_t *t = r->api->throttle;
    char akey[80], ukey[160], addr[64];
    int64_t now = auth_now_ms(), by_addr, by_user = 0, left;

    auth_key_addr(r, akey, sizeof(akey));
    by_addr = api_throttle_blocked(t, akey, now);
    if (user && *user) {
        snprintf(ukey, sizeof(ukey), "user %s", user);
        by_user = api_throttle_blocked(t, ukey, now);
    }
    if (!by_addr && !by_user)
        return 1;
    left = by_addr > by_user ? by_addr : by_user;
    r->retry_after_s = (int)((left + 999) / 1000);
    api_client_addr(r, 1, addr, sizeof(addr));
    if (by_addr >= by_user)
        api_reply_error(r, MHD_HTTP_TOO_MANY_REQUESTS, NULL,
                        "throttled: too many failed authentications from client %s; credentials"
                        " are not checked until the block ends: try again in %d s",
                        addr, r->retry_after_s);
    else
        api_reply_error(r, MHD_HTTP_TOO_MANY_REQUESTS, NULL,
                        "throttled: too many failed logins of user '%.100s'; credentials are not"
                        " checked until the block ends: try again in %d s",
                        user, r->retry_after_s);
    json_object_set_new(r->reply, "retry_after_ms", json_integer((json_int_t)left));
    return 0;
}

static void auth_throttle_fail_key(api_req_t *r, const char *key, const char *what)
{
    int fails = 0, blocks = 0;
    int64_t block = api_throttle_fail(r->api->throttle, key, auth_now_ms(), &fails, &blocks);

    if (block)
        rf_log_warn("blocking authentication of %s for %lld ms (block %d in a row, limit %d"
                    " failures in %d ms)",
                    what, (long long)block, blocks, r->api->conf.auth_fail_limit,
                    r->api->conf.auth_fail_window_ms);
}

/* A failed authentication of the client's address and of user (NULL or "": none). */
static void auth_throttle_fail(api_req_t *r, const char *user)
{
    char key[160], what[200], addr[64];

    auth_key_addr(r, key, sizeof(key));
    api_client_addr(r, 1, addr, sizeof(addr));
    snprintf(what, sizeof(what), "client %s", addr);
    auth_throttle_fail_key(r, key, what);
    if (user && *user) {
        snprintf(key, sizeof(key), "user %s", user);
        snprintf(what, sizeof(what), "user '%.100s' (logins)", user);
        auth_throttle_fail_key(r, key, what);
    }
}

/* A successful login starts its user's failed logins over. The address's failures stand
 * (they expire with auth_fail_window_ms): a client holding one valid token must not be able
 * to clear its count with it between guesses. */
static void auth_throttle_login_success(api_req_t *r, const char *user)
{
    char key[160];

    if (!user || !*user)
        return;
    snprintf(key, sizeof(key), "user %s", user);
    api_throttle_success(r->api->throttle, key);
}

int api_auth_authenticate(api_req_t *r)
{
    const char *authz = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION);
    const char *cookie = MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, AUTH_COOKIE);
    char errstr[512];
    char *user = NULL;
    rf_err_t err;

    if (authz) {
        if (strncasecmp(authz, "Bearer ", 7) != 0 || !authz[7]) {
            api_reply_error(r, MHD_HTTP_UNAUTHORIZED, NULL,
                            "the Authorization header must be 'Bearer <token>'");
            return 0;
        }
        if (!auth_throttle_check(r, NULL))
            return 0;
        err = rf_auth_token_user(r->db, authz + 7, &user, errstr, sizeof(errstr));
        if (err == RF_ERR_NOTFOUND) {
            auth_throttle_fail(r, NULL);
            api_reply_error(r, MHD_HTTP_UNAUTHORIZED, NULL, "unknown token, or its user is disabled");
            return 0;
        }
        if (err != RF_OK) {
            api_reply_failure(r, err, "cannot check the token", errstr);
            return 0;
        }
        snprintf(r->user, sizeof(r->user), "%s", user);
        free(user);
        return 1;
    }
    if (cookie) {
        const char *p[1] = {r->session_hash};
        PGresult *res = NULL;
        const char *csrf_sent;

        if (!auth_throttle_check(r, NULL))
            return 0;
        rf_auth_token_hash(cookie, r->session_hash);
        err = rf_db_exec(r->db,
                         "SELECT s.user_name, s.csrf_token FROM api_sessions s JOIN users u ON"
                         " u.name = s.user_name WHERE s.session_sha256 = $1 AND"
                         " s.expires_at > now() AND NOT u.disabled",
                         1, p, &res, errstr, sizeof(errstr));
        if (err != RF_OK) {
            api_reply_failure(r, err, "cannot check the session", errstr);
            return 0;
        }
        if (PQntuples(res) != 1) {
            PQclear(res);
            auth_throttle_fail(r, NULL);
            api_reply_error(r, MHD_HTTP_UNAUTHORIZED, NULL,
                            "the session has expired or was ended: log in again");
            return 0;
        }
        snprintf(r->user, sizeof(r->user), "%s", PQgetvalue(res, 0, 0));
        snprintf(r->csrf, sizeof(r->csrf), "%s", PQgetvalue(res, 0, 1));
        PQclear(res);
        r->via_session = 1;
        /* A cookie travels with any request the browser makes, a header only with the
         * console's own: every state-changing call must show the session's CSRF token. */
        csrf_sent = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-CSRF-Token");
        if (auth_unsafe_method(r->method) && (!csrf_sent || !auth_equal(csrf_sent, r->csrf))) {
            api_reply_error(r, MHD_HTTP_FORBIDDEN, NULL,
                            csrf_sent ? "wrong CSRF token (header X-CSRF-Token)"
                                      : "missing CSRF token: a state-changing call of a browser"
                                        " session needs the header X-CSRF-Token");
            return 0;
        }
        return 1;
    }
    api_reply_error(r, MHD_HTTP_UNAUTHORIZED, NULL,
                    "authentication required: send 'Authorization: Bearer <token>' or log in"
                    " (POST /api/v1/session)");
    return 0;
}

static char *auth_cookie(const api_req_t *r, const char *value, int max_age)
{
    rf_buf_t c = RF_BUF_INIT;

    rf_buf_addf(&c, AUTH_COOKIE "=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict%s", value,
                max_age, r->api->cookie_secure ? "; Secure" : "");
    return rf_buf_detach(&c);
}

int api_session_login(api_req_t *r)
{
    static const char *const fields[] = {"token", "user", NULL};
    const char *type = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *token, *want;
    char session[65], hash[65], csrf[65], hours[16], errstr[512];
    const char *p[4] = {hash, NULL, csrf, hours};
    char *user = NULL;
    PGresult *res = NULL;
    json_t *body;
    rf_err_t err;

    /* A form on another site can post text/plain or a form encoding, not JSON without a
     * preflight: logging a victim into the attacker's account is refused this way. */
    if (!type || strncasecmp(type, "application/json", 16) != 0)
        return api_reply_error(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, NULL,
                               "log in with a JSON body (Content-Type: application/json)");
    body = api_req_json(r, fields);
    if (!body)
        return 0;
    token = json_string_value(json_object_get(body, "token"));
    want = json_string_value(json_object_get(body, "user"));
    if (!token || !*token)
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "token",
                               "field 'token' is required: the API token of the user");
    if (json_object_get(body, "user") && !want)
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, "user", "field 'user' must be a string");
    if (!auth_throttle_check(r, want))
        return 0;
    err = rf_auth_token_user(r->db, token, &user, errstr, sizeof(errstr));
    if (err == RF_ERR_NOTFOUND) {
        auth_throttle_fail(r, want);
        return api_reply_error(r, MHD_HTTP_UNAUTHORIZED, "token",
                               "login failed: unknown token, or its user is disabled");
    }
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot check the token", errstr);
    if (want && *want && strcmp(want, user) != 0) {
        free(user);
        auth_throttle_fail(r, want);
        return api_reply_error(r, MHD_HTTP_UNAUTHORIZED, "user",
                               "login failed: the token does not belong to user '%.100s'", want);
    }
    auth_throttle_login_success(r, user);
    snprintf(r->user, sizeof(r->user), "%s", user);
    free(user);
    if (auth_random_hex(session) != 0 || auth_random_hex(csrf) != 0)
        return api_reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                               "cannot read random bytes for the session");
    rf_auth_token_hash(session, hash);
    snprintf(hours, sizeof(hours), "%d", API_SESSION_HOURS);
    p[1] = r->user;
    rf_db_exec(r->db, "DELETE FROM api_sessions WHERE expires_at < now()", 0, NULL, NULL, errstr,
               sizeof(errstr));
    err = rf_db_exec(r->db,
                     "INSERT INTO api_sessions (session_sha256, user_name, csrf_token, expires_at)"
                     " VALUES ($1, $2, $3, now() + make_interval(hours => $4::int))"
                     " RETURNING relfleet_iso(expires_at)",
                     4, p, &res, errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot create the session", errstr);
    r->set_cookie = auth_cookie(r, session, API_SESSION_HOURS * 3600);
    rf_log_info("user '%s' logged in", r->user);
    body = json_pack("{s:s, s:s, s:s, s:s, s:o}", "user", r->user, "auth", "session",
                     "csrf_token", csrf, "expires_at", PQgetvalue(res, 0, 0), "roles",
                     auth_roles(r));
    PQclear(res);
    return api_reply_json(r, MHD_HTTP_OK, body);
}

int api_session_show(api_req_t *r)
{
    json_t *body = json_pack("{s:s, s:s, s:o}", "user", r->user, "auth",
                             r->via_session ? "session" : "token", "roles", auth_roles(r));

    if (r->via_session)
        json_object_set_new(body, "csrf_token", json_string(r->csrf));
    return api_reply_json(r, MHD_HTTP_OK, body);
}

int api_session_logout(api_req_t *r)
{
    const char *p[1] = {r->session_hash};
    char errstr[512];
    rf_err_t err;

    if (!r->via_session)
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, NULL,
                               "no browser session to end (this call used a bearer token)");
    err = rf_db_exec(r->db, "DELETE FROM api_sessions WHERE session_sha256 = $1", 1, p, NULL,
                     errstr, sizeof(errstr));
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot end the session", errstr);
    r->set_cookie = auth_cookie(r, "", 0);
    return api_reply_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status", "logged out"));
}
