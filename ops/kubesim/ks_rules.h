/* Pod behaviour rules: what a container does, chosen by a glob on its image, and its state at a given age. */
#ifndef KS_RULES_H
#define KS_RULES_H

#include <stddef.h>
#include <stdint.h>

typedef struct ks_rule {
    char *image;           /* glob on the full image string */
    int64_t ready_after_ms; /* simulated ms after the container starts */
    int64_t crash_after_ms; /* < 0: never crashes */
    char *waiting;         /* never starts, waiting with this reason (NULL: starts) */
    char **logs;
    size_t nlogs;
} ks_rule_t;

typedef struct ks_rules {
    ks_rule_t *rules;
    size_t n;
} ks_rules_t;

/* Loads a rules file; NULL path gives the default (every image ready after 500 ms).
 * NULL on error, with the reason in errstr. A catch-all default rule is always last. */
ks_rules_t *ks_rules_load(const char *path, char *errstr, size_t errstr_size);
void ks_rules_destroy(ks_rules_t *rules);

/* The first rule whose glob matches image (never NULL). */
const ks_rule_t *ks_rules_match(const ks_rules_t *rules, const char *image);

/* How long a container takes to be created before it first runs, in simulated ms. */
#define KS_CONTAINER_CREATE_MS 200

/* A container's state at a simulated age (ms since its pod was scheduled). */
typedef struct ks_cstate {
    const char *waiting;      /* reason when waiting ("ContainerCreating", "CrashLoopBackOff", ...) */
    int running;
    int ready;
    int restarts;
    int64_t started_at;       /* age when the current run started (running only) */
    int64_t ready_since;      /* age when it became ready (ready only) */
    int64_t term_started_at;  /* last terminated run (restarts > 0) */
    int64_t term_finished_at;
    int64_t backoff_ms;       /* current back-off (CrashLoopBackOff only) */
    int64_t next_change;      /* age of the next change, -1 when none */
} ks_cstate_t;

void ks_rules_state(const ks_rule_t *rule, int64_t age_ms, ks_cstate_t *out);

#endif
