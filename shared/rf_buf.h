/* The growable byte buffer, with a size cap; always NUL-terminated. */
#ifndef RF_BUF_H
#define RF_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct rf_buf {
    char *data;  /* NUL-terminated once anything was added; NULL before */
    size_t len;  /* bytes used, without the NUL */
    size_t cap;  /* bytes allocated */
    size_t max;  /* cap on len; 0 = no cap */
} rf_buf_t;

#define RF_BUF_INIT {NULL, 0, 0, 0}

/* Embedded lifecycle: init sets an empty buffer that refuses to grow past max bytes
 * (0 = unbounded); release frees the memory and leaves an empty buffer. */
void rf_buf_init(rf_buf_t *b, size_t max);
void rf_buf_release(rf_buf_t *b);

/* Empties the buffer, keeping its memory. */
void rf_buf_reset(rf_buf_t *b);

/* Append. Each returns 0, or -1 when the cap would be passed (nothing is added then). */
int rf_buf_add(rf_buf_t *b, const void *data, size_t len);
int rf_buf_adds(rf_buf_t *b, const char *s);
int rf_buf_addc(rf_buf_t *b, char c);
int rf_buf_addf(rf_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int rf_buf_vaddf(rf_buf_t *b, const char *fmt, va_list ap);

/* The contents as a C string ("" when empty); valid until the next change. */
const char *rf_buf_str(const rf_buf_t *b);

/* Hands the memory to the caller (free() it; never NULL) and empties the buffer. */
char *rf_buf_detach(rf_buf_t *b);

#endif
