/* Logging with per-thread context, in logfmt or JSON lines. */
#include "rf_log.h"
#include "rf_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LOG_CTX_MAX 12
#define LOG_VAL_MAX 128

rf_log_level_t rf_log_min_level = RF_LOG_INFO;
static rf_log_format_t log_format = RF_LOG_LOGFMT;
static char log_program[64] = "relfleet";

static _Thread_local struct {
    char key[32];
    char value[LOG_VAL_MAX];
} log_ctx[LOG_CTX_MAX];
static _Thread_local int log_ctx_len;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void rf_log_setup(const char *program, rf_log_level_t level, rf_log_format_t format)
{
    if (program)
        snprintf(log_program, sizeof(log_program), "%s", program);
    rf_log_min_level = level;
    log_format = format;
}

int rf_log_level_parse(const char *s, rf_log_level_t *level)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *level = (rf_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

/* snprintf(dst, size, "%s", src) without the format machinery: the context is set for
 * every message a worker handles, several times (issue 20). */
static void log_copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

void rf_log_ctx_set(const char *key, const char *value)
{
    int i;

    for (i = 0; i < log_ctx_len; i++)
        if (strcmp(log_ctx[i].key, key) == 0)
            break;
    if (!value) {
        if (i < log_ctx_len) {
            log_ctx_len--;
            if (i != log_ctx_len)
                log_ctx[i] = log_ctx[log_ctx_len];
        }
        return;
    }
    if (i == log_ctx_len) {
        if (log_ctx_len == LOG_CTX_MAX)
            return;
        log_ctx_len++;
        log_copy(log_ctx[i].key, sizeof(log_ctx[i].key), key);
    }
    log_copy(log_ctx[i].value, sizeof(log_ctx[i].value), value);
}

void rf_log_ctx_clear(void)
{
    log_ctx_len = 0;
}

/* Appends s quoted for the format: JSON string escaping, or logfmt quoting when needed. */
static void log_add_value(rf_buf_t *b, const char *s)
{
    int quote = log_format == RF_LOG_JSON || *s == '\0' || strpbrk(s, " =\"\\\n\t") != NULL;

    if (!quote) {
        rf_buf_adds(b, s);
        return;
    }
    rf_buf_addc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            rf_buf_adds(b, "\\\"");
            break;
        case '\\':
            rf_buf_adds(b, "\\\\");
            break;
        case '\n':
            rf_buf_adds(b, "\\n");
            break;
        case '\t':
            rf_buf_adds(b, "\\t");
            break;
        case '\r':
            rf_buf_adds(b, "\\r");
            break;
        default:
            if (*p < 0x20)
                rf_buf_addf(b, "\\u%04x", *p);
            else
                rf_buf_addc(b, (char)*p);
        }
    }
    rf_buf_addc(b, '"');
}

/* partition and offset are numbers in JSON lines. */
static int log_is_number(const char *key, const char *value)
{
    if (strcmp(key, "partition") != 0 && strcmp(key, "offset") != 0)
        return 0;
    if (*value == '-')
        value++;
    if (!*value)
        return 0;
    for (; *value; value++)
        if (*value < '0' || *value > '9')
            return 0;
    return 1;
}

static void log_add_field(rf_buf_t *b, const char *key, const char *value, int first)
{
    if (log_format == RF_LOG_JSON) {
        rf_buf_adds(b, first ? "{" : ",");
        log_add_value(b, key);
        rf_buf_addc(b, ':');
        if (log_is_number(key, value)) {
            rf_buf_adds(b, value);
            return;
        }
    } else {
        if (!first)
            rf_buf_addc(b, ' ');
        rf_buf_adds(b, key);
        rf_buf_addc(b, '=');
    }
    log_add_value(b, value);
}

void rf_log_write(rf_log_level_t level, const char *fmt, ...)
{
    char ts[64];
    char msg[2048];
    struct timespec now;
    struct tm tm;
    rf_buf_t line;
    va_list ap;

    if (level < rf_log_min_level)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", (tm.tm_year + 1900) % 10000,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(now.tv_nsec / 1000000) % 1000);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    rf_buf_init(&line, 0);
    log_add_field(&line, "ts", ts, 1);
    log_add_field(&line, "level", level_names[level], 0);
    log_add_field(&line, "stage", log_program, 0);
    for (int i = 0; i < log_ctx_len; i++)
        log_add_field(&line, log_ctx[i].key, log_ctx[i].value, 0);
    log_add_field(&line, "msg", msg, 0);
    rf_buf_adds(&line, log_format == RF_LOG_JSON ? "}\n" : "\n");
    fwrite(line.data, 1, line.len, stderr);
    fflush(stderr);
    rf_buf_release(&line);
}
