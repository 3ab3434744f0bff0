/* Clocks in milliseconds: monotonic for intervals, wall time for deadlines kept in storage. */
#ifndef RF_CLOCK_H
#define RF_CLOCK_H

/* Milliseconds of CLOCK_MONOTONIC: for timers and intervals inside one process. */
long rf_clock_mono_ms(void);

/* Milliseconds since the epoch: for deadlines that outlive the process (PostgreSQL). */
long long rf_clock_epoch_ms(void);

#endif
