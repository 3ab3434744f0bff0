/* Gray releases: the canary and blue-green step engine that the track stage drives. */
#ifndef RF_GRAY_H
#define RF_GRAY_H

#include <jansson.h>

#include "rf_kube.h"
#include "worker.h"

/* Pod label that tells the versions apart: stable, canary, preview. */
#define GRAY_TRACK_LABEL "relfleet.io/track"

/* ingress-nginx's canary annotations (canary.trafficRouting.nginx). */
#define GRAY_NGINX_CANARY "nginx.ingress.kubernetes.io/canary"
#define GRAY_NGINX_WEIGHT "nginx.ingress.kubernetes.io/canary-weight"

/* One release being driven. t is the track stage's entry of the release: fence,
 * deadline_ms, and gray, the step state that lives in releases.track -> 'gray':
 * kind, steps, step, weight, state, pause_until_ms, analysis counters, follow (the
 * Deployments whose rollout the current step waits for), rev (bumped by every write). */
typedef struct gray_ctx {
    rf_worker_t *w;
    rf_kube_t *kube;
    const char *id;
    json_t *t;
    long long now_ms;  /* wall clock, ms since the epoch */
    char reason[1024]; /* why the release ends (GRAY_FAILED) */
} gray_ctx_t;

typedef enum gray_outcome {
    GRAY_GOING = 0, /* still going; gray.follow may name other Deployments now */
    GRAY_SUCCEEDED, /* the new version is the stable one: end the release */
    GRAY_FAILED,    /* aborted and undone (reason): end the release failed */
    GRAY_LOST,      /* PostgreSQL moved on (another worker, a lost fence): forget, re-read */
} gray_outcome_t;

/* The apply stage's part. manifests are the rendered objects, marked; strategy the
 * service's normalized strategy (rf_strategy_parse). When gray_ever (the service has or
 * once had a strategy), scales down what an earlier gray release left behind (a
 * superseded canary, a preview); a service that never had one has nothing such to look
 * for (two GETs saved per release). Then, for a canary or blue-green
 * release of a service whose Deployment already runs a labelled stable version, returns
 * in *to_apply the objects to apply instead (the canary or preview Deployment, the
 * preview Service) and in *gray the initial step state; otherwise *to_apply is the
 * manifests (the stable pod label added for gray services; for others manifests
 * itself, a new reference, not a copy: the caller may change them) and *gray NULL. notes
 * receives timeline sentences. */
rf_err_t gray_prepare(rf_kube_t *kube, const json_t *strategy, const json_t *manifests,
                      const char *ns, long long timeout_s, int gray_ever, json_t **to_apply,
                      json_t **gray, json_t *notes, char *errstr, size_t errstr_size);

/* Periodic work: the first step, timed pauses, analysis measurements, blue-green's
 * auto-promotion and scale-down delay, and one pending command (promote or abort from
 * releases.track -> 'commands'; NULL when none). A measurement runs on a thread of its
 * own: the tick that finds one due starts it, a later tick takes its result. */
gray_outcome_t gray_tick(gray_ctx_t *g, const json_t *command);

/* Once per track tick: drops measurement results nobody took (the release ended or moved
 * on); returns how many measurements are in flight or waiting. */
size_t gray_probes_reap(long long now_ms);

/* At the end of the worker: waits for the measurements in flight (each is bounded by its
 * metric's timeout) and frees them. */
void gray_probes_shutdown(void);

/* The Deployments in gray.follow are rolled out. */
gray_outcome_t gray_rolled_out(gray_ctx_t *g);

/* Undoes the release in the cluster: the canary scaled to zero and the stable one back
 * to full size, or the active Service switched back and the preview scaled to zero. */
rf_err_t gray_undo(gray_ctx_t *g, char *errstr, size_t errstr_size);

/* Records a promote or abort command (relfleet.command.v1) for the worker that follows
 * the release; a repeated command_id is recorded once. *queued is 0 when the release is
 * not a gray one (or no longer active). */
rf_err_t gray_queue_command(rf_db_t *db, const json_t *cmd, int *queued, char *errstr,
                            size_t errstr_size);

#endif
