/* Clocks in milliseconds: monotonic for intervals, wall time for deadlines kept in storage. */
#ifndef RF_CLOCK_H
#define RF_CLOCK_H

/* Milliseconds of CLOCK_MONOTONIC: for timers and intervals inside one process. */
long rf_clock_mono_ms(void);

/* Milliseconds since the epoch: for deadlines that outlive the process (PostgreSQL). */
long long rf_clock_epoch_ms(void);

/* Parses a duration: "500ms", "30s", "5m", "1h", or a bare number of seconds. Returns
 * milliseconds, or -1 when malformed, negative or longer than 100 days. */
long long rf_clock_parse_ms(const char *s);

#endif
