/* Logging: one line per event, logfmt or JSON, carrying its context (stage, release, ...). */
#ifndef RF_LOG_H
#define RF_LOG_H

typedef enum rf_log_level {
    RF_LOG_DEBUG = 0,
    RF_LOG_INFO,
    RF_LOG_WARN,
    RF_LOG_ERROR,
} rf_log_level_t;

typedef enum rf_log_format {
    RF_LOG_LOGFMT = 0,
    RF_LOG_JSON,
} rf_log_format_t;

/* The level below which nothing is formatted; read by the macros. */
extern rf_log_level_t rf_log_min_level;

/* Program-wide setup: the program (or stage) name shown on every line, the level and
 * the format. Lines go to stderr. Safe to call again. */
void rf_log_setup(const char *program, rf_log_level_t level, rf_log_format_t format);

/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int rf_log_level_parse(const char *s, rf_log_level_t *level);

/* Per-thread context added to every line of this thread until cleared: keys such as
 * "release", "service", "env", "topic", "partition", "offset". Setting a key to NULL
 * removes it. Values are copied (truncated at 127 bytes). At most 12 keys. */
void rf_log_ctx_set(const char *key, const char *value);
void rf_log_ctx_clear(void);

void rf_log_write(rf_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define rf_log_debug(...)                                                                          \
    do {                                                                                           \
        if (rf_log_min_level <= RF_LOG_DEBUG)                                                      \
            rf_log_write(RF_LOG_DEBUG, __VA_ARGS__);                                               \
    } while (0)
#define rf_log_info(...) rf_log_write(RF_LOG_INFO, __VA_ARGS__)
#define rf_log_warn(...) rf_log_write(RF_LOG_WARN, __VA_ARGS__)
#define rf_log_error(...) rf_log_write(RF_LOG_ERROR, __VA_ARGS__)

#endif
