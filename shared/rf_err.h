/* Error codes shared by every module: each says whether a retry can help. */
#ifndef RF_ERR_H
#define RF_ERR_H

#include <stddef.h>

typedef enum rf_err {
    RF_OK = 0,
    RF_ERR_RETRY,    /* transient (server down, timeout): retry, do not store the offset */
    RF_ERR_PERM,     /* permanent (bad input, refused): reject or dead-letter, move on */
    RF_ERR_FENCED,   /* the service lock was lost: stop and touch nothing */
    RF_ERR_NOTFOUND, /* the subject does not exist */
} rf_err_t;

/* "ok", "retriable", "permanent", "fenced", "not found". */
const char *rf_err_name(rf_err_t err);

/* Nonzero when a retry of the same operation may succeed. */
int rf_err_retriable(rf_err_t err);

/* Fills errstr (errstr_size bytes, always NUL-terminated) and returns err, so that
 * a failing path reads `return rf_errf(RF_ERR_PERM, errstr, errstr_size, "...", ...);`. */
rf_err_t rf_errf(rf_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
