/* Millisecond clocks. */
#include "rf_clock.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long rf_clock_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

long long rf_clock_epoch_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000L;
}

long long rf_clock_parse_ms(const char *s)
{
    char *end = NULL;
    long long n;

    if (!s || !isdigit((unsigned char)*s))
        return -1;
    n = strtoll(s, &end, 10);
    if (n < 0 || n > 100LL * 24 * 3600 * 1000)
        return -1;
    if (*end == '\0' || strcmp(end, "s") == 0)
        n *= 1000LL;
    else if (strcmp(end, "m") == 0)
        n *= 60000LL;
    else if (strcmp(end, "h") == 0)
        n *= 3600000LL;
    else if (strcmp(end, "ms") != 0)
        return -1;
    /* n was at most 100 days in ms before the unit: no overflow; now bound the result. */
    return n > 100LL * 24 * 3600 * 1000 ? -1 : n;
}
