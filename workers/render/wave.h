/* The render stage's wave driver: steps, new releases of waves, the queued ones they drop. */
#ifndef RENDER_WAVE_H
#define RENDER_WAVE_H

#include <stddef.h>

#include "rf_err.h"
#include "worker.h"

/* Starts the oldest queued release of env/service (render_start). */
typedef rf_err_t (*render_wave_start_fn)(void *arg, const char *service, const char *env,
                                         char *errstr, size_t errstr_size);

/* One round of the driver (sql/009_waves.sql, relfleet_wave_drive): moves the open waves
 * on, creates up to limit queued releases for them and starts each through start, and ends
 * cancelled (results published) the queued releases of halted or aborted waves. Safe to
 * run in any number of workers and to kill anywhere: a release is created once per wave
 * and service, in the transaction that records it; one created but not started is started
 * by the sweep. */
void render_wave_drive(rf_worker_t *w, int limit, render_wave_start_fn start, void *arg);

#endif
