/* Authenticity and permissions: token hashes, request signatures, roles. */
#ifndef RF_AUTH_H
#define RF_AUTH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rf_config.h"
#include "rf_db.h"
#include "rf_err.h"

/* Roles, each including the ones before it; approver stands apart: it includes viewer
 * only, and no other role includes it (sql/008_promotion.sql). */
typedef enum rf_role {
    RF_ROLE_NONE = 0,
    RF_ROLE_VIEWER,
    RF_ROLE_RELEASER,
    RF_ROLE_ADMIN,
    RF_ROLE_APPROVER,
} rf_role_t;

/* "viewer", "releaser", "admin", "approver" (NULL for RF_ROLE_NONE); parse gives
 * RF_ROLE_NONE for anything else. */
const char *rf_auth_role_name(rf_role_t role);
rf_role_t rf_auth_role_parse(const char *s);

/* The SHA-256 (lowercase hex) that stands for a token or key in PostgreSQL. */
void rf_auth_token_hash(const char *token, char out[65]);

/* The canonical form of a message that a signature covers: the message without `auth`,
 * compact, keys sorted, non-ASCII escaped (Python's json.dumps(m, sort_keys=True,
 * separators=(",", ":")) writes the same bytes). NULL when msg is not an object;
 * the caller frees the result. */
char *rf_auth_canonical(const json_t *msg);

/* Lowercase hex HMAC-SHA256 keyed by key over `<timestamp_ms>.<canonical>`. */
void rf_auth_signature(const char *key, int64_t timestamp_ms, const char *canonical,
                       char out[65]);

/* Sets msg's `auth` to {key_id, timestamp, signature} over its canonical form. */
rf_err_t rf_auth_sign(json_t *msg, const char *key_id, const char *key, int64_t now_ms,
                      char *errstr, size_t errstr_size);

/* Checks msg's signature by key and its timestamp against received_ms (within window_s
 * either way). RF_OK, or RF_ERR_PERM with the reason. */
rf_err_t rf_auth_verify(const json_t *msg, const char *key, int64_t received_ms, int window_s,
                        char *reason, size_t reason_size);

/* The decision on one message (a request or a command), taken with PostgreSQL and the
 * secrets: whether its signature is good and its signer holds role `need` for
 * service/env. Returns RF_OK with *allowed set (reason filled when refused), or
 * RF_ERR_RETRY/RF_ERR_PERM when PostgreSQL failed (errstr). An unsigned message is
 * allowed only while the setting auth_required is off. message_id is the release or
 * command id: the same signature on another id is a replay. */
rf_err_t rf_auth_check(rf_db_t *db, const rf_config_t *conf, const json_t *msg,
                       const char *message_id, int64_t received_ms, rf_role_t need,
                       const char *service, const char *env, int *allowed, char *reason,
                       size_t reason_size, char *errstr, size_t errstr_size);

/* Whether user holds role need for service/env (env NULL: in some env; "*" and "*": on
 * everything). */
rf_err_t rf_auth_has_role(rf_db_t *db, const char *user, rf_role_t need, const char *service,
                          const char *env, int *has, char *errstr, size_t errstr_size);

/* The user an API token belongs to (NULL, RF_ERR_NOTFOUND when unknown or disabled);
 * the caller frees it. */
rf_err_t rf_auth_token_user(rf_db_t *db, const char *token, char **user, char *errstr,
                            size_t errstr_size);

#endif
