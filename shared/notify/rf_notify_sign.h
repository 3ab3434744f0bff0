/* Notification signatures: HMAC-SHA256, base64, URL encoding, DingTalk and webhook signing. */
#ifndef RF_NOTIFY_SIGN_H
#define RF_NOTIFY_SIGN_H

#include <stddef.h>

/* Bytes of a DingTalk sign (URL-encoded base64 of 32 bytes: at most 3 * 44) with its NUL,
 * and of a webhook signature header value ("sha256=" + 64 hex digits) with its NUL. */
#define RF_NOTIFY_DINGTALK_SIGN_SIZE 140
#define RF_NOTIFY_WEBHOOK_SIGN_SIZE 72

/* HMAC-SHA256 of data keyed by key into out (32 bytes). */
void rf_notify_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                           unsigned char out[32]);

/* Standard base64 (with padding) of data into out, which holds 4 * ((len + 2) / 3) + 1
 * bytes; returns the length written. */
size_t rf_notify_base64(const void *data, size_t len, char *out);

/* Percent-encodes s as Java's URLEncoder and Python's quote_plus do (unreserved bytes
 * A-Z a-z 0-9 . - _ * stay, space is '+', every other byte %XX upper case) into out of
 * size bytes; returns 0, or -1 when it does not fit (out is then ""). */
int rf_notify_url_encode(const char *s, char *out, size_t size);

/* DingTalk's signature of a custom robot request: the string `timestamp + "\n" + secret`
 * (timestamp in milliseconds) HMAC-SHA256 keyed by the secret, base64, URL-encoded. */
void rf_notify_dingtalk_sign(const char *secret, long long timestamp_ms,
                             char out[RF_NOTIFY_DINGTALK_SIGN_SIZE]);

/* The webhook signature: "sha256=" + lowercase hex HMAC-SHA256 keyed by key over
 * `timestamp + "." + body` (timestamp in unix seconds, as sent in X-Relfleet-Timestamp). */
void rf_notify_webhook_sign(const char *key, long long timestamp_s, const void *body, size_t len,
                            char out[RF_NOTIFY_WEBHOOK_SIGN_SIZE]);

#endif
