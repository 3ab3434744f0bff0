/* CloudEvents 1.0 attributes of a results message, for the Kafka and HTTP bindings (binary mode).
 */
#ifndef RF_CLOUDEVENTS_H
#define RF_CLOUDEVENTS_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "rf_config.h"
#include "rf_err.h"

#define RF_CLOUDEVENTS_SPECVERSION "1.0"
#define RF_CLOUDEVENTS_TYPE_PREFIX "io.relfleet.release." /* + the terminal status */
#define RF_CLOUDEVENTS_CONTENT_TYPE "application/json"    /* datacontenttype of the body */

/* The attributes of one event; every value is printable ASCII. */
typedef struct rf_cloudevent {
    char id[64];       /* the result's event_id */
    char source[256];  /* the cloudevents_source setting */
    char type[64];     /* io.relfleet.release.<status> */
    char time[40];     /* the result's finished_at (RFC 3339) */
    char subject[140]; /* <service>/<env> */
} rf_cloudevent_t;

/* How many attributes an event carries, and the name (without prefix) and value of the
 * i-th, in the order specversion, id, source, type, time, subject. */
#define RF_CLOUDEVENT_ATTRS 6
const char *rf_cloudevent_attr(const rf_cloudevent_t *ev, int i, const char **value);

/* The event source of this installation: the cloudevents_source setting, or by default
 * "/relfleet/" + topic_prefix without its trailing separator ("/relfleet/relfleet"); a
 * function of the configuration only, so every worker describes a message alike. */
const char *rf_cloudevents_source(const rf_config_t *conf, char *buf, size_t size);

/* 1 when s can be a source: 1-255 printable ASCII characters, no space (a URI-reference
 * as CloudEvents asks, and a value that fits an HTTP header as is). */
int rf_cloudevents_source_ok(const char *s);

/* Fills ev from a relfleet.result.v1 message (text of len bytes, or the parsed result).
 * RF_ERR_PERM with the reason when a field it needs is missing or is not plain ASCII. */
rf_err_t rf_cloudevent_from_result(const json_t *result, const char *source, rf_cloudevent_t *ev,
                                   char *errstr, size_t errstr_size);
rf_err_t rf_cloudevent_from_text(const char *text, size_t len, const char *source,
                                 rf_cloudevent_t *ev, char *errstr, size_t errstr_size);

/* The Kafka binding's headers: ce_<attribute> for each attribute and content-type. The
 * caller owns them (rd_kafka_headers_destroy, or hand them to rf_producer_send_headers). */
rd_kafka_headers_t *rf_cloudevent_kafka_headers(const rf_cloudevent_t *ev);

#endif
