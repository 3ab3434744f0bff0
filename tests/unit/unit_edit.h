/* Random edits of a text for the unit tests that model-check parsers: a seeded generator of
 * each test file's own and one edit at a time. */
#ifndef UNIT_EDIT_H
#define UNIT_EDIT_H

#include <stdint.h>
#include <string.h>

/* A linear congruential generator of its own per test file: the same sequence every run. */
static uint32_t unit_rnd_state;

static inline uint32_t unit_rnd(void)
{
    unit_rnd_state = unit_rnd_state * 1103515245u + 12345u;
    return unit_rnd_state >> 8;
}

/* One random edit of buf[0..*len), which has room for cap bytes: a byte replaced by one of
 * alphabet[0..n), one of them inserted (when there is room), or a byte deleted. *len > 0. */
static inline void unit_random_edit(char *buf, size_t *len, size_t cap, const char *alphabet, size_t n)
{
    size_t at = unit_rnd() % *len;
    char c = alphabet[unit_rnd() % n];

    switch (unit_rnd() % 3) {
    case 0:
        buf[at] = c;
        break;
    case 1:
        if (*len + 1 < cap) {
            memmove(buf + at + 1, buf + at, *len - at);
            buf[at] = c;
            (*len)++;
        }
        break;
    default:
        memmove(buf + at, buf + at + 1, *len - at - 1);
        (*len)--;
    }
}

#endif
