/* The render stage's wave driver: steps, new releases of waves, the queued ones they drop. */
#include "wave.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rf_log.h"
#include "rf_metrics.h"

void render_wave_drive(rf_worker_t *w, int limit, render_wave_start_fn start, void *arg)
{
    char lim[16], errstr[1024];
    const char *params[1] = {lim};
    rf_worker_end_t *ends = NULL;
    PGresult *res = NULL;
    size_t nends = 0;
    int n, started = 0;

    snprintf(lim, sizeof(lim), "%d", limit);
    if (rf_db_exec(w->db, "SELECT * FROM relfleet_wave_drive($1::int)", 1, params, &res, errstr,
                   sizeof(errstr)) != RF_OK) {
        rf_log_warn("wave driver: %s", errstr);
        return;
    }
    n = PQntuples(res);
    if (n == 0)
        goto out;
    ends = calloc((size_t)n, sizeof(*ends));
    if (!ends)
        abort();
    for (int i = 0; i < n && *w->run; i++) {
        const char *release = PQgetvalue(res, i, 1), *service = PQgetvalue(res, i, 2);
        const char *env = PQgetvalue(res, i, 3);

        rf_log_ctx_set("wave", PQgetvalue(res, i, 0));
        rf_log_ctx_set("release", release);
        rf_log_ctx_set("service", service);
        if (strcmp(PQgetvalue(res, i, 4), "cancel") == 0) {
            ends[nends++] = (rf_worker_end_t){
                release, service, env, 0, "cancelled", PQgetvalue(res, i, 5), NULL, RF_OK, NULL,
                NULL};
            continue;
        }
        /* Created now; a failure here leaves it queued for the sweep. */
        started++;
        if (start(arg, service, env, errstr, sizeof(errstr)) != RF_OK)
            rf_log_warn("wave driver: cannot start release yet: %s", errstr);
        rf_log_ctx_clear();
    }
    rf_log_ctx_clear();
    if (started > 0)
        rf_metrics_add(rf_metrics_counter("relfleet_wave_releases_created_total",
                                          "Releases the wave driver created", NULL),
                       NULL, started);
    /* The queued releases a halted or aborted wave drops: ended once (fence 0, only while
     * still queued), results published; a crash before that leaves them for the next round. */
    if (nends > 0 && rf_worker_end_releases(w, ends, nends, errstr, sizeof(errstr)) != RF_OK)
        rf_log_warn("wave driver: cannot cancel the queued releases of a wave yet: %s", errstr);
out:
    free(ends);
    PQclear(res);
}
