/* Metrics: counters, gauges and histograms with labels, written in the Prometheus text format. */
#ifndef RF_METRICS_H
#define RF_METRICS_H

#include <stddef.h>

/* One metric family (name, help, type, label names) with its labelled series. Families
 * live in one process-wide registry, are thread-safe, and stay valid until
 * rf_metrics_reset(). Every operation accepts a NULL family and then does nothing, so a
 * refused registration never crashes a caller. */
typedef struct rf_metric rf_metric_t;

/* The end of a label value list; RF_LABELS() adds it. */
extern const char rf_metrics_labels_end[];

/* The label values of one series, in the order of the family's label names. A NULL value
 * is written as "". For a family without labels pass NULL instead. */
#define RF_LABELS(...) ((const char *const[]){__VA_ARGS__, rf_metrics_labels_end})

/* Registers a family, or returns the one already registered under name (so any module
 * can declare what it counts in one line). labels: the label names separated by ','
 * ("topic,reason"), NULL or "" for none; at most 8. NULL (and a log line) when name or a
 * label is not a valid Prometheus name, or name is registered with another type or other
 * labels. */
rf_metric_t *rf_metrics_counter(const char *name, const char *help, const char *labels);
rf_metric_t *rf_metrics_gauge(const char *name, const char *help, const char *labels);
/* bounds: the upper bounds of the buckets, increasing (+Inf is added); NULL = the
 * default latency buckets (5 ms to 60 s). */
rf_metric_t *rf_metrics_histogram(const char *name, const char *help, const char *labels,
                                  const double *bounds, size_t nbounds);

/* Counter: adds v (>= 0; a negative v is ignored). Gauge: adds v (may be negative). */
void rf_metrics_add(rf_metric_t *m, const char *const *values, double v);
/* Gauge: sets the series to v. */
void rf_metrics_set(rf_metric_t *m, const char *const *values, double v);
/* Histogram: counts one observation of v. */
void rf_metrics_observe(rf_metric_t *m, const char *const *values, double v);
/* Drops every series of the family (a gauge of things that went away, e.g. partitions
 * after a rebalance). */
void rf_metrics_clear(rf_metric_t *m);

/* The value of one series: counter or gauge value, observation count of a histogram;
 * 0 when the series does not exist. */
double rf_metrics_value(rf_metric_t *m, const char *const *values);

/* A label put on every series of the process (e.g. stage="render"); set before the
 * first scrape. At most 4; setting a name again replaces its value. */
void rf_metrics_const_label(const char *name, const char *value);

/* The whole registry in the Prometheus text exposition format 0.0.4. The caller frees. */
char *rf_metrics_render(void);

/* Frees every family and constant label (shutdown, tests). Pointers returned before are
 * invalid afterwards. */
void rf_metrics_reset(void);

#endif
