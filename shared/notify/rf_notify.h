/* Notification requests: one email, DingTalk or webhook send on a curl easy handle, and its
 * verdict. */
#ifndef RF_NOTIFY_H
#define RF_NOTIFY_H

#include <curl/curl.h>
#include <stddef.h>

#include "rf_err.h"

typedef enum rf_notify_channel {
    RF_NOTIFY_EMAIL = 0,
    RF_NOTIFY_DINGTALK,
    RF_NOTIFY_WEBHOOK,
} rf_notify_channel_t;

/* "email", "dingtalk", "webhook"; NULL for an out-of-range value. */
const char *rf_notify_channel_name(rf_notify_channel_t c);

/* The channel named s, or -1. */
int rf_notify_channel_parse(const char *s);

/* Checks a subscription's target: for email one or more comma-separated addresses, for
 * dingtalk and webhook an http:// or https:// URL. RF_ERR_PERM with the reason. */
rf_err_t rf_notify_target_check(rf_notify_channel_t c, const char *target, char *errstr,
                                size_t errstr_size);

/* Checks a comma-separated list of outcomes ("succeeded,failed"): each one of the
 * terminal statuses, none twice. RF_ERR_PERM with the reason. */
rf_err_t rf_notify_outcomes_check(const char *list, char *errstr, size_t errstr_size);

/* Copies target for a log line with every query value hidden
 * ("https://oapi.dingtalk.com/robot/send?access_token=***"). */
void rf_notify_target_redact(const char *target, char *out, size_t size);

/* The wait before the next attempt after `attempts` attempts failed: base_ms doubled per
 * earlier attempt, capped at max_ms, then half of it fixed and half chosen by rnd
 * ("equal jitter"), so that retries of many notifications spread out. */
long rf_notify_backoff_ms(int attempts, long base_ms, long max_ms, unsigned int rnd);

/* Everything one send needs. Strings are copied by rf_notify_send_new. */
typedef struct rf_notify_request {
    rf_notify_channel_t channel;
    const char *target;
    const char *secret;      /* DingTalk secret, webhook key or SMTP password; NULL: none */
    const char *result_text; /* the relfleet.result.v1 message, the bytes published */
    const char *message_id;  /* email Message-ID, without brackets */
    const char *smtp_url;    /* smtp://host:port or smtps://host:port */
    const char *smtp_from;
    const char *smtp_user;     /* AUTH login, with secret as its password; NULL: no AUTH */
    const char *smtp_starttls; /* "off", "try" or "required" */
    const char *smtp_ca_file;  /* PEM CA file verifying the server; NULL: the system's */
    long timeout_ms;           /* of the whole request */
    long long now_ms;          /* signing timestamps and the email's Date */
    int cloudevents;       /* webhook: also the CloudEvents HTTP binding, binary mode */
    const char *ce_source; /* its ce-source (rf_cloudevents_source) */
} rf_notify_request_t;

typedef struct rf_notify_send rf_notify_send_t;

/* Prepares one request. NULL when it cannot be made (bad target, no smtp_url, a result
 * that is not JSON, email AUTH without smtp_user): errstr says why; that is permanent. */
rf_notify_send_t *rf_notify_send_new(const rf_notify_request_t *req, char *errstr,
                                     size_t errstr_size);
/* Frees the request and its easy handle (remove it from any multi handle first); accepts
 * NULL. */
void rf_notify_send_destroy(rf_notify_send_t *s);

/* The easy handle to add to a multi handle; CURLOPT_PRIVATE is the caller's to use. */
CURL *rf_notify_send_easy(rf_notify_send_t *s);

/* The verdict once the transfer ended with code: RF_OK delivered; RF_ERR_RETRY worth
 * another attempt (timeout, refused connection, 5xx, DingTalk 130101); RF_ERR_PERM never
 * (4xx, DingTalk 310000, SMTP 5xx, login refused, STARTTLS missing). errstr the reason. */
rf_err_t rf_notify_send_verdict(rf_notify_send_t *s, CURLcode code, char *errstr,
                                size_t errstr_size);

/* Runs the request to its end on the calling thread and returns its verdict. */
rf_err_t rf_notify_send_run(rf_notify_send_t *s, char *errstr, size_t errstr_size);

/* The verdicts on an HTTP answer (status and body) of a DingTalk robot and a webhook. */
rf_err_t rf_notify_dingtalk_verdict(long http_status, const char *body, char *errstr,
                                    size_t errstr_size);
rf_err_t rf_notify_webhook_verdict(long http_status, char *errstr, size_t errstr_size);

#endif
