/* The growable byte buffer. */
#include "rf_buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rf_buf_init(rf_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void rf_buf_release(rf_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void rf_buf_reset(rf_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int buf_grow(rf_buf_t *b, size_t extra)
{
    size_t need;
    size_t cap;
    char *p;

    if (b->max && (extra > b->max || b->len > b->max - extra))
        return -1;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    p = realloc(b->data, cap);
    if (!p)
        abort(); /* out of memory: nothing sensible to do in a worker */
    b->data = p;
    b->cap = cap;
    return 0;
}

int rf_buf_add(rf_buf_t *b, const void *data, size_t len)
{
    if (buf_grow(b, len) != 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int rf_buf_adds(rf_buf_t *b, const char *s)
{
    return rf_buf_add(b, s, strlen(s));
}

int rf_buf_addc(rf_buf_t *b, char c)
{
    return rf_buf_add(b, &c, 1);
}

int rf_buf_vaddf(rf_buf_t *b, const char *fmt, va_list ap)
{
    va_list cp;
    int n;

    va_copy(cp, ap);
    n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0 || buf_grow(b, (size_t)n) != 0)
        return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int rf_buf_addf(rf_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int result;

    va_start(ap, fmt);
    result = rf_buf_vaddf(b, fmt, ap);
    va_end(ap);
    return result;
}

const char *rf_buf_str(const rf_buf_t *b)
{
    return b->data ? b->data : "";
}

char *rf_buf_detach(rf_buf_t *b)
{
    char *p = b->data;

    if (!p)
        p = calloc(1, 1);
    if (!p)
        abort();
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
