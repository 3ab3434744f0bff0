/* Release states and kinds, as DESIGN.md defines them and sql/ constrains them. */
#ifndef RF_RELEASE_H
#define RF_RELEASE_H

typedef enum rf_release_status {
    RF_STATUS_QUEUED = 0,
    RF_STATUS_RENDERING,
    RF_STATUS_APPLYING,
    RF_STATUS_PROGRESSING,
    RF_STATUS_PAUSED,
    RF_STATUS_SUCCEEDED,
    RF_STATUS_FAILED,
    RF_STATUS_CANCELLED,
    RF_STATUS_SUPERSEDED,
    RF_STATUS_REJECTED,
    RF_STATUS_AWAITING_APPROVAL, /* before queued, holding nothing (sql/008_promotion.sql) */
    RF_STATUS__COUNT
} rf_release_status_t;

/* "queued", "rendering", ...; NULL for an out-of-range value. */
const char *rf_release_status_name(rf_release_status_t s);

/* Returns the status named s, or -1. */
int rf_release_status_parse(const char *s);

/* Nonzero for succeeded, failed, cancelled, superseded, rejected (not awaiting_approval). */
int rf_release_status_terminal(rf_release_status_t s);

/* Nonzero for the states that hold the service: rendering, applying, progressing, paused. */
int rf_release_status_active(rf_release_status_t s);

/* SQL list of the active states, for queries: "'rendering','applying',...". */
#define RF_RELEASE_ACTIVE_SQL "'rendering','applying','progressing','paused'"
#define RF_RELEASE_TERMINAL_SQL "'succeeded','failed','cancelled','superseded','rejected'"

#endif
