/* Notification content: the email (RFC 5322, RFC 2047 subject) and the DingTalk markdown of a
 * result. */
#ifndef RF_NOTIFY_FORMAT_H
#define RF_NOTIFY_FORMAT_H

#include <jansson.h>

#include "rf_buf.h"

/* Lines of a failing pod's log quoted in a notification, and bytes kept of each line. */
#define RF_NOTIFY_LOG_LINES 20
#define RF_NOTIFY_LOG_LINE_MAX 300

/* "[relfleet] S V failed in E: description", one UTF-8 line (description cut at 80 bytes
 * on a character boundary, control characters become spaces). */
void rf_notify_format_subject(const json_t *result, rf_buf_t *out);

/* The plain-text report: service, env, version, operator, description, status, times,
 * duration, the failure reason, the failing pods with the last lines of their logs, and
 * the command that shows the release. */
void rf_notify_format_text(const json_t *result, rf_buf_t *out);

/* Appends a header value: as is when it is short printable ASCII, otherwise as RFC 2047
 * encoded words (=?UTF-8?B?...?=, whole characters, 64 bytes at most each) folded with
 * CRLF + space, so that a "Subject: " line stays within 78 characters. Never emits a bare
 * CR or LF. */
void rf_notify_format_header_value(const char *utf8, rf_buf_t *out);

/* The address inside "Name <addr>" (or the whole string), written into out; returns 0,
 * or -1 when it does not fit or is no address (one '@', no space or control bytes). */
int rf_notify_format_address(const char *from, char *out, size_t size);

/* The complete email of a result, CRLF line ends: From, To (comma-separated addresses),
 * Subject, Date (date_s, unix seconds), Message-ID (message_id, without brackets),
 * MIME headers, X-Relfleet-Event-Id, and the text report base64-encoded. */
void rf_notify_format_email(const json_t *result, const char *from, const char *to,
                            const char *message_id, long long date_s, rf_buf_t *out);

/* The body of a DingTalk custom robot markdown message (JSON text; free() it), or NULL
 * when the result's strings are not valid UTF-8. */
char *rf_notify_format_dingtalk(const json_t *result);

#endif
