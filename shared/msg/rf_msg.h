/* The front door for every consumed message, and the helpers that build messages. */
#ifndef RF_MSG_H
#define RF_MSG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rf_err.h"
#include "rf_schema.h"

/* Limits of a consumed message. */
#define RF_MSG_MAX_BYTES (1024 * 1024) /* payload size */
#define RF_MSG_MAX_DEPTH 64            /* nesting of arrays and objects */

/* Bytes of a "2026-11-23T23:10:05.123Z" time with its NUL, and of a UUID with its NUL. */
#define RF_MSG_TIME_SIZE 25
#define RF_MSG_UUID_SIZE 37

/* What a dead letter keeps of the refused message: the first RF_MSG_DLQ_PAYLOAD_MAX bytes
 * of the payload (base64 makes that about 933 KiB, under Kafka's default 1 MB message
 * size), at most RF_MSG_DLQ_KEY_MAX bytes of the key and RF_MSG_DLQ_REASON_MAX of the
 * reason (cut on a UTF-8 character boundary). */
#define RF_MSG_DLQ_PAYLOAD_MAX (700 * 1024)
#define RF_MSG_DLQ_KEY_MAX 1024
#define RF_MSG_DLQ_REASON_MAX 2048

/*
 * Parses and checks one consumed message; on RF_OK *out is the body (the caller owns it:
 * json_decref). Every refusal is RF_ERR_PERM, with a reason for the dead letter:
 *   "empty payload", "payload too large (N > 1048576 bytes)",
 *   "payload is not valid UTF-8 (byte N)",
 *   "payload nests deeper than 64 levels" (checked by a scan before jansson parses, so
 *       no input can exhaust the stack),
 *   "payload is not JSON: <jansson's reason> (line L, column C)" (duplicate keys too),
 *   "payload is not a JSON object", "missing field 'schema'", "field 'schema': ...",
 *   "schema 'X' does not belong here (expected 'relfleet.request.*')" when expect_prefix
 *       (e.g. "relfleet.request.", NULL for any) does not start the name,
 *   "unknown schema 'X'", "invalid X: field '...': ..." (the validator's reason),
 *   "key 'K' does not match the body ('env/service')" and "missing key (expected ...)"
 *       when the body has string fields env and service.
 * Any reason quotes at most 128 bytes of the input. reg must hold the schemas.
 */
rf_err_t rf_msg_parse(const rf_schema_registry_t *reg, const void *payload, size_t len,
                      const void *key, size_t key_len, const char *expect_prefix, json_t **out,
                      char *errstr, size_t errstr_size);

/* What rf_msg_parse_lean left unparsed: the other members of each object of the array. */
typedef struct rf_msg_lean {
    size_t n;          /* objects in the array */
    const char **rest; /* rest[i]: object i's other members as they came, "k":v,"k2":v2 ("" none) */
    size_t *rest_len;  /* their lengths */
    char *text;        /* where they are */
} rf_msg_lean_t;

/*
 * rf_msg_parse for a consumer that passes most of each object of a top-level array on as
 * it came (the apply stage: a manifest's spec goes to the API server): in *out the objects
 * of the member array have only the members keep names (NULL-terminated); the text of each
 * one's other members is in *lean (the caller owns it: rf_msg_lean_destroy). Those members
 * are not parsed into a tree but checked as text (rf_jtext_valid: grammar, UTF-8, escapes,
 * no key twice, numbers within jansson's limits), and no member of such an object may come
 * twice or have a key with an escape; the whole payload is still checked for its size, UTF-8
 * and depth. So it takes exactly what rf_msg_parse takes: whenever the text is not as
 * expected, rf_jtext_valid cannot vouch for it, or anything is refused, the payload is
 * parsed whole as by rf_msg_parse (same result, same reason) and *lean is NULL. keep must
 * name every member the schema constrains in those objects (the others are not validated).
 */
rf_err_t rf_msg_parse_lean(const rf_schema_registry_t *reg, const void *payload, size_t len,
                           const void *key, size_t key_len, const char *expect_prefix,
                           const char *array, const char *const *keep, json_t **out,
                           rf_msg_lean_t **lean, char *errstr, size_t errstr_size);

/* Frees what rf_msg_parse_lean left; NULL is fine. */
void rf_msg_lean_destroy(rf_msg_lean_t *l);

/*
 * The JSON text of a relfleet.dlq.v1 message for a refused message: stage (e.g.
 * "render"), reason, the message's topic, partition and offset (-1 when unknown), its key
 * (NULL for none; bytes that are not UTF-8 become U+FFFD) and payload (base64, cut at
 * RF_MSG_DLQ_PAYLOAD_MAX bytes; "payload_size" gives the original length and
 * "payload_truncated" whether it was cut). The result validates against
 * relfleet.dlq.v1 whenever stage and topic do. Returns a malloc'd string (free() it), or
 * NULL when stage, reason or topic is NULL or memory runs out.
 */
char *rf_msg_dlq_build(const char *stage, const char *reason, const char *topic, int32_t partition,
                       int64_t offset, const void *key, size_t key_len, const void *payload,
                       size_t len);

/* Writes unix_ms as "2026-11-23T23:10:05.123Z" (UTC) into buf; returns 0, or -1 when
 * size < RF_MSG_TIME_SIZE (buf is then "" if size > 0). */
int rf_msg_iso_from_ms(int64_t unix_ms, char *buf, size_t size);

/* The current time, as rf_msg_iso_from_ms writes it. */
int rf_msg_now_iso(char *buf, size_t size);

/* A random (version 4) UUID in lowercase, from getrandom(); returns 0, or -1 when the
 * kernel gives no randomness (out is then ""). */
int rf_msg_uuid4(char out[RF_MSG_UUID_SIZE]);

#endif
