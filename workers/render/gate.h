/* The render stage's promotion rules: requires and soak, approvals, their expiry. */
#ifndef RENDER_GATE_H
#define RENDER_GATE_H

#include <stddef.h>

#include "rf_db.h"
#include "rf_err.h"
#include "worker.h"

typedef enum render_gate_verdict {
    RENDER_GATE_PASS = 0, /* on to the lock */
    RENDER_GATE_REJECT,   /* ends rejected with the reason */
    RENDER_GATE_AWAIT,    /* waits in awaiting_approval (render_gate_await) */
} render_gate_verdict_t;

/* What a service in an env asks of a release before it starts (docs/promotion.md). */
typedef struct render_gate_rules {
    const char *service, *env, *version, *kind;
    const char *requires_env; /* NULL: none; applies to kind deploy only */
    long soak_s;              /* with requires_env: how long the version ran there */
    int approvals;            /* approvals needed, 0: none */
    int approved;             /* the release waited and got them (approvals_needed set) */
} render_gate_rules_t;

/* The verdict on a queued release; reason filled for RENDER_GATE_REJECT, e.g.
 * "version '1.2' of service 'web' has not succeeded in env 'test' (required before env
 * 'prod')". */
rf_err_t render_gate_check(rf_db_t *db, const render_gate_rules_t *rules, int *verdict,
                           char *reason, size_t reason_size, char *errstr, size_t errstr_size);

/* Moves queued release id to awaiting_approval (needing approvals), with its timeline row
 * and the notifications of the subscribers to awaiting_approval, in one transaction.
 * RF_OK also when it left queued meanwhile (nothing changed). */
rf_err_t render_gate_await(rf_db_t *db, const char *id, const render_gate_rules_t *rules,
                           char *errstr, size_t errstr_size);

/* The sweep's part: ends as cancelled, with the reason, releases that waited for approval
 * longer than the approval_timeout setting; their results are owed, for the track stage's
 * owed-results sweep to publish (as after a denial). */
void render_gate_expire(rf_worker_t *w);

#endif
