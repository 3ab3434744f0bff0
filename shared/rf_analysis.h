/* Analysis of a gray release: one measurement of a metric (Prometheus query or web check). */
#ifndef RF_ANALYSIS_H
#define RF_ANALYSIS_H

#include <stddef.h>

#include <jansson.h>

#include "rf_err.h"

typedef enum rf_analysis_verdict {
    RF_ANALYSIS_SUCCESSFUL = 0,
    RF_ANALYSIS_FAILED,
    RF_ANALYSIS_INCONCLUSIVE, /* no data, an error, an answer that cannot be judged */
} rf_analysis_verdict_t;

/* "successful", "failed", "inconclusive". */
const char *rf_analysis_verdict_name(rf_analysis_verdict_t v);

/* Evaluates a success condition on a result: "result OP LITERAL", where result may be
 * written result or result[0], OP is one of < <= > >= == !=, and LITERAL a number, a
 * quoted string, true, false or null. Numbers compare as numbers (a string result that
 * holds a number too). Returns 1 (holds), 0 (does not), or -1 with errstr for a condition
 * that does not parse or a result it cannot compare. result may be NULL (only checks the
 * condition's syntax). */
int rf_analysis_condition(const char *cond, const json_t *result, char *errstr,
                          size_t errstr_size);

/* One measurement of a normalized metric (rf_strategy_parse): a GET of the Prometheus
 * HTTP API's /api/v1/query (the first sample's value is the result; none is no data), or
 * of a web URL (a status code other than statusCode, default any 2xx, fails; jsonPath
 * "$.a.b" or "{$.a.b}" picks the result out of a JSON answer). Blocks for at most the
 * metric's timeout_ms. *value_out receives the result (json_decref; NULL when there is
 * none) and message a sentence for the timeline. */
rf_analysis_verdict_t rf_analysis_measure(const json_t *metric, json_t **value_out,
                                          char *message, size_t message_size);

#endif
