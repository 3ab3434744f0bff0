/* Notification content: reports built from a relfleet.result.v1 message. */
#include "rf_notify_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_notify_sign.h"

#define FORMAT_SUBJECT_DESC_MAX 80
/* An encoded word carries 39 bytes: 52 base64 characters + 12 of "=?UTF-8?B?" "?=" is 64,
 * so even the first one after "Subject: " keeps its line within 78 characters. */
#define FORMAT_WORD_BYTES 39
#define FORMAT_PLAIN_MAX 68 /* longer values are encoded (and so folded) */

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Length of the UTF-8 sequence starting with byte c (1 for a stray byte). */
static size_t format_utf8_len(unsigned char c)
{
    if (c >= 0xf0 && c < 0xf8)
        return 4;
    if (c >= 0xe0)
        return c < 0xf0 ? 3 : 1;
    if (c >= 0xc0)
        return 2;
    return 1;
}

/* Appends at most max bytes of s, whole characters only, control characters as spaces. */
static void format_add_line(rf_buf_t *out, const char *s, size_t max)
{
    size_t n = 0;

    while (s[n]) {
        size_t step = format_utf8_len((unsigned char)s[n]);
        if (n + step > max)
            break;
        for (size_t i = 0; i < step && s[n + i]; i++)
            rf_buf_addc(out, (unsigned char)s[n + i] < 0x20 || s[n + i] == 0x7f ? ' ' : s[n + i]);
        n += step;
    }
}

static void format_duration(long long ms, char *buf, size_t size)
{
    if (ms < 1000)
        snprintf(buf, size, "%lld ms", ms);
    else if (ms < 60000)
        snprintf(buf, size, "%lld.%lld s", ms / 1000, (ms % 1000) / 100);
    else if (ms < 3600000)
        snprintf(buf, size, "%lldm %02llds", ms / 60000, (ms / 1000) % 60);
    else
        snprintf(buf, size, "%lldh %02lldm", ms / 3600000, (ms / 60000) % 60);
}

void rf_notify_format_subject(const json_t *result, rf_buf_t *out)
{
    const char *desc = jstr(result, "description");

    rf_buf_addf(out, "[relfleet] %s %s %s in %s", jstr(result, "service"), jstr(result, "version"),
                jstr(result, "status"), jstr(result, "env"));
    if (*desc) {
        rf_buf_adds(out, ": ");
        format_add_line(out, desc, FORMAT_SUBJECT_DESC_MAX);
    }
}

/* The last RF_NOTIFY_LOG_LINES lines of a log, each prefixed and cut. */
static void format_log_tail(rf_buf_t *out, const char *log, const char *prefix)
{
    const char *start = log + strlen(log);
    int lines = 0;

    while (start > log && (start[-1] == '\n' || start[-1] == '\r'))
        start--;
    while (start > log) {
        if (start[-1] == '\n' && ++lines == RF_NOTIFY_LOG_LINES)
            break;
        start--;
    }
    while (*start) {
        const char *nl = strchr(start, '\n');
        size_t len = nl ? (size_t)(nl - start) : strlen(start);
        char *line = strndup(start, len);
        if (!line)
            abort();
        rf_buf_adds(out, prefix);
        format_add_line(out, line, RF_NOTIFY_LOG_LINE_MAX);
        rf_buf_adds(out, "\n");
        free(line);
        start += len + (nl ? 1 : 0);
    }
}

static void format_pod_line(rf_buf_t *out, const json_t *pod)
{
    rf_buf_addf(out, "%s: %s%s%s, restarts %lld", jstr(pod, "name"), jstr(pod, "phase"),
                *jstr(pod, "reason") ? " " : "", jstr(pod, "reason"),
                (long long)json_integer_value(json_object_get(pod, "restarts")));
}

/* Why it ended (a result's error) or what it waits for (relfleet.approval.v1's message). */
static const char *format_reason(const json_t *result)
{
    return *jstr(result, "error") ? jstr(result, "error") : jstr(result, "message");
}

void rf_notify_format_text(const json_t *result, rf_buf_t *out)
{
    const json_t *pods = json_object_get(result, "pods");
    const json_t *pod;
    char dur[64];
    size_t i;

    format_duration((long long)json_integer_value(json_object_get(result, "duration_ms")), dur,
                    sizeof(dur));
    rf_buf_addf(out, "Release %s: %s %s in %s\n\n", jstr(result, "status"), jstr(result, "service"),
                jstr(result, "version"), jstr(result, "env"));
    rf_buf_addf(out, "Service:     %s\n", jstr(result, "service"));
    rf_buf_addf(out, "Env:         %s\n", jstr(result, "env"));
    rf_buf_addf(out, "Version:     %s\n", jstr(result, "version"));
    rf_buf_addf(out, "Kind:        %s\n", jstr(result, "kind"));
    rf_buf_addf(out, "Operator:    %s\n", jstr(result, "operator"));
    rf_buf_adds(out, "Description: ");
    format_add_line(out, jstr(result, "description"), 4096);
    rf_buf_addf(out, "\nStatus:      %s\n", jstr(result, "status"));
    if (*jstr(result, "started_at"))
        rf_buf_addf(out, "Started:     %s\n", jstr(result, "started_at"));
    if (*jstr(result, "awaiting_since")) /* relfleet.approval.v1: no end yet */
        rf_buf_addf(out, "Waiting:     since %s\n", jstr(result, "awaiting_since"));
    else
        rf_buf_addf(out, "Finished:    %s\nDuration:    %s\n", jstr(result, "finished_at"), dur);
    if (*format_reason(result)) {
        rf_buf_adds(out, "Reason:      ");
        format_add_line(out, format_reason(result), 8192);
        rf_buf_adds(out, "\n");
    }
    if (json_array_size(pods) > 0) {
        rf_buf_adds(out, "\nFailing pods:\n");
        json_array_foreach(pods, i, pod)
        {
            rf_buf_adds(out, "  ");
            format_pod_line(out, pod);
            rf_buf_adds(out, "\n");
            if (*jstr(pod, "log_tail")) {
                rf_buf_addf(out, "    last lines of its log:\n");
                format_log_tail(out, jstr(pod, "log_tail"), "    | ");
            }
        }
    }
    rf_buf_addf(out, "\nDetails: relctl show %s\n", jstr(result, "release_id"));
    rf_buf_addf(out, "Event id: %s\n", jstr(result, "event_id"));
}

void rf_notify_format_header_value(const char *utf8, rf_buf_t *out)
{
    size_t len = strlen(utf8), pos = 0;
    int plain = len <= FORMAT_PLAIN_MAX && !strstr(utf8, "=?");

    for (size_t i = 0; plain && i < len; i++)
        if ((unsigned char)utf8[i] < 0x20 || (unsigned char)utf8[i] > 0x7e)
            plain = 0;
    if (plain) {
        rf_buf_add(out, utf8, len);
        return;
    }
    while (pos < len) {
        char b64[4 * (FORMAT_WORD_BYTES / 3) + 8];
        size_t n = 0;
        while (pos + n < len) {
            size_t step = format_utf8_len((unsigned char)utf8[pos + n]);
            if (pos + n + step > len)
                step = len - pos - n;
            if (n + step > FORMAT_WORD_BYTES)
                break;
            n += step;
        }
        rf_notify_base64(utf8 + pos, n, b64);
        rf_buf_addf(out, "%s=?UTF-8?B?%s?=", pos ? "\r\n " : "", b64);
        pos += n;
    }
}

int rf_notify_format_address(const char *from, char *out, size_t size)
{
    const char *lt = strrchr(from, '<');
    const char *start = lt ? lt + 1 : from;
    const char *end = lt ? strchr(start, '>') : start + strlen(start);
    const char *at;
    size_t len;

    if (size > 0)
        out[0] = '\0';
    if (!end)
        return -1;
    len = (size_t)(end - start);
    if (len == 0 || len >= size)
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)start[i] <= 0x20 || start[i] == 0x7f || start[i] == '<' ||
            start[i] == '>' || start[i] == ',')
            return -1;
    at = memchr(start, '@', len);
    if (!at || at == start || at == end - 1 || memchr(at + 1, '@', (size_t)(end - at - 1)))
        return -1;
    memcpy(out, start, len);
    out[len] = '\0';
    return 0;
}

/* The base64 of data in lines of 76 characters, CRLF after each. */
static void format_base64_lines(rf_buf_t *out, const char *data, size_t len)
{
    char line[80];

    for (size_t pos = 0; pos < len; pos += 57) {
        size_t n = len - pos < 57 ? len - pos : 57;
        rf_notify_base64(data + pos, n, line);
        rf_buf_adds(out, line);
        rf_buf_adds(out, "\r\n");
    }
}

/* Adds text with every LF turned into CRLF and control bytes other than tab dropped. */
static void format_add_header_text(rf_buf_t *out, const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x20 && *s != 0x7f)
            rf_buf_addc(out, *s);
}

void rf_notify_format_email(const json_t *result, const char *from, const char *to,
                            const char *message_id, long long date_s, rf_buf_t *out)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    rf_buf_t subject = RF_BUF_INIT, text = RF_BUF_INIT;
    time_t t = (time_t)date_s;
    struct tm tm;

    gmtime_r(&t, &tm);
    rf_notify_format_subject(result, &subject);
    rf_notify_format_text(result, &text);
    rf_buf_adds(out, "From: ");
    format_add_header_text(out, from);
    rf_buf_adds(out, "\r\nTo: ");
    format_add_header_text(out, to);
    rf_buf_adds(out, "\r\nSubject: ");
    rf_notify_format_header_value(rf_buf_str(&subject), out);
    rf_buf_addf(out, "\r\nDate: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
                tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    rf_buf_adds(out, "Message-ID: <");
    format_add_header_text(out, message_id);
    rf_buf_adds(out, ">\r\nMIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=UTF-8\r\n"
                     "Content-Transfer-Encoding: base64\r\n"
                     "Auto-Submitted: auto-generated\r\n");
    rf_buf_addf(out, "X-Relfleet-Event-Id: %s\r\n", jstr(result, "event_id"));
    rf_buf_addf(out, "X-Relfleet-Status: %s\r\n\r\n", jstr(result, "status"));
    format_base64_lines(out, text.data ? text.data : "", text.len);
    rf_buf_release(&subject);
    rf_buf_release(&text);
}

char *rf_notify_format_dingtalk(const json_t *result)
{
    const json_t *pods = json_object_get(result, "pods");
    const json_t *pod;
    rf_buf_t title = RF_BUF_INIT, md = RF_BUF_INIT;
    json_t *msg;
    char dur[64], *text;
    size_t i;

    format_duration((long long)json_integer_value(json_object_get(result, "duration_ms")), dur,
                    sizeof(dur));
    rf_notify_format_subject(result, &title);
    rf_buf_addf(&md, "### [relfleet] %s %s: %s\n\n", jstr(result, "service"),
                jstr(result, "version"), jstr(result, "status"));
    rf_buf_addf(&md, "- **Service**: %s\n- **Env**: %s\n- **Version**: %s\n",
                jstr(result, "service"), jstr(result, "env"), jstr(result, "version"));
    rf_buf_addf(&md, "- **Operator**: %s\n", jstr(result, "operator"));
    if (*jstr(result, "description")) {
        rf_buf_adds(&md, "- **Description**: ");
        format_add_line(&md, jstr(result, "description"), 1024);
        rf_buf_adds(&md, "\n");
    }
    rf_buf_addf(&md, "- **Status**: %s\n- **Duration**: %s\n", jstr(result, "status"), dur);
    if (*format_reason(result)) {
        rf_buf_adds(&md, "- **Reason**: ");
        format_add_line(&md, format_reason(result), 1024);
        rf_buf_adds(&md, "\n");
    }
    if (json_array_size(pods) > 0) {
        rf_buf_adds(&md, "\n**Failing pods**\n\n");
        json_array_foreach(pods, i, pod)
        {
            if (i >= 5)
                break;
            rf_buf_adds(&md, "- ");
            format_pod_line(&md, pod);
            rf_buf_adds(&md, "\n");
            if (*jstr(pod, "log_tail")) {
                rf_buf_adds(&md, "\n");
                format_log_tail(&md, jstr(pod, "log_tail"), "> ");
                rf_buf_adds(&md, "\n");
            }
        }
    }
    rf_buf_addf(&md, "\nDetails: `relctl show %s`\n", jstr(result, "release_id"));
    msg = json_pack("{s:s, s:{s:s, s:s}}", "msgtype", "markdown", "markdown", "title",
                    rf_buf_str(&title), "text", rf_buf_str(&md));
    text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    rf_buf_release(&title);
    rf_buf_release(&md);
    return text;
}
