/* Release strategies of a service (rolling, canary, blue-green): parsing, checks, replica math. */
#ifndef RF_STRATEGY_H
#define RF_STRATEGY_H

#include <stddef.h>

#include <jansson.h>

#include "rf_err.h"

/* Parses a service's strategy JSON (the shape Argo Rollouts users know, DESIGN.md) and
 * returns it normalized, or NULL with errstr (RF_ERR_PERM) naming what is wrong:
 *   NULL, null, {}                      -> {"kind": "rolling"}
 *   {"canary": {"steps": [...]}}         -> {"kind": "canary", "steps": [...]}
 *   {"canary": {"trafficRouting": {"nginx": {"stableIngress": NAME}}, "steps": [...]}}
 *                                        -> {"kind": "canary", "steps": [...],
 *                                            "nginx": {"stableIngress": NAME}}
 *   {"blueGreen": {...}}                 -> {"kind": "bluegreen", "autoPromotionSeconds"?,
 *                                            "scaleDownDelaySeconds"}
 * Normalized steps: {"setWeight": N}, {"pause": {}} (until promoted),
 * {"pause": {"duration_ms": N}}, {"analysis": METRIC}. A normalized METRIC: name,
 * provider ({"prometheus": {address, query}} or {"web": {url, jsonPath?, statusCode?}}),
 * successCondition (may be absent for web), interval_ms, count, failureLimit,
 * inconclusiveLimit, timeout_ms. The caller owns the result (json_decref). */
json_t *rf_strategy_parse(const json_t *strategy, char *errstr, size_t errstr_size);

/* The same, for the strategy as text ("" or NULL: rolling). */
json_t *rf_strategy_parse_text(const char *text, char *errstr, size_t errstr_size);

/* Converts a duration ("500ms", "30s", "5m", "1h", or a number of seconds as a JSON
 * integer or a string of digits) to milliseconds; -1 when malformed or negative. */
long long rf_strategy_duration_ms(const json_t *v);

/* Replica counts for a weight without a traffic router, as Argo Rollouts' basic canary
 * does: the canary gets the whole number of pods nearest to weight% of total (halves
 * round up), at least one pod for any weight above 0, and the stable one the rest. */
void rf_strategy_canary_replicas(int total, int weight, int *canary, int *stable);

/* Replica counts for a weight with a traffic router (the weight is the router's), as Argo
 * Rollouts does without dynamicStableScale: the canary gets weight% of total rounded up,
 * the stable one stays at total. */
void rf_strategy_canary_replicas_routed(int total, int weight, int *canary, int *stable);

#endif
