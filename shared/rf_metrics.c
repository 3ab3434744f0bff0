/* The metric registry and its Prometheus text exposition. */
#include "rf_metrics.h"
#include "rf_buf.h"
#include "rf_log.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_LABELS_MAX 8
#define METRICS_CONST_MAX 4
#define METRICS_SERIES_MAX 2000 /* per family: a guard against unbounded label values */

typedef enum metrics_type {
    METRICS_COUNTER,
    METRICS_GAUGE,
    METRICS_HISTOGRAM,
} metrics_type_t;

typedef struct metrics_series {
    struct metrics_series *next;
    char **values;     /* nlabels strings */
    double value;      /* counter, gauge */
    uint64_t *buckets; /* histogram: per bound, not cumulative */
    uint64_t count;
    double sum;
} metrics_series_t;

struct rf_metric {
    struct rf_metric *next;
    char *name;
    char *help;
    metrics_type_t type;
    char *labels[METRICS_LABELS_MAX];
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    metrics_series_t *series;
    metrics_series_t **series_tail;
    size_t nseries;
    int overflow_logged;
};

const char rf_metrics_labels_end[] = "";

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static rf_metric_t *metrics_head;
static rf_metric_t **metrics_tail = &metrics_head;
static struct {
    char *name;
    char *value;
} metrics_const[METRICS_CONST_MAX];
static size_t metrics_nconst;

static const double metrics_default_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                1,     2.5,  5,     10,   30,  60};
static const char *const metrics_type_names[] = {"counter", "gauge", "histogram"};

static char *metrics_strdup(const char *s)
{
    char *d = strdup(s ? s : "");

    if (!d)
        abort();
    return d;
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names; without ':' for label names. */
static int metrics_name_ok(const char *s, int colon)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++) {
        int ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                 *s == '_' || (colon && *s == ':');
        if (!ok)
            return 0;
    }
    return 1;
}

static void metrics_free(rf_metric_t *m)
{
    metrics_series_t *s = m->series;

    while (s) {
        metrics_series_t *next = s->next;
        for (size_t i = 0; i < m->nlabels; i++)
            free(s->values[i]);
        free(s->values);
        free(s->buckets);
        free(s);
        s = next;
    }
    for (size_t i = 0; i < m->nlabels; i++)
        free(m->labels[i]);
    free(m->bounds);
    free(m->name);
    free(m->help);
    free(m);
}

/* Splits "a,b" into m->labels; 0 when a name is bad or there are too many. */
static int metrics_parse_labels(rf_metric_t *m, const char *labels)
{
    const char *s = labels;

    while (s && *s) {
        size_t len = strcspn(s, ",");
        char *name;
        if (m->nlabels == METRICS_LABELS_MAX)
            return 0;
        name = malloc(len + 1);
        if (!name)
            abort();
        memcpy(name, s, len);
        name[len] = '\0';
        m->labels[m->nlabels++] = name;
        if (!metrics_name_ok(name, 0) || strncmp(name, "__", 2) == 0 || strcmp(name, "le") == 0)
            return 0;
        s += len;
        if (*s == ',')
            s++;
    }
    return 1;
}

static int metrics_same_shape(const rf_metric_t *a, const rf_metric_t *b)
{
    if (a->type != b->type || a->nlabels != b->nlabels || a->nbounds != b->nbounds)
        return 0;
    for (size_t i = 0; i < a->nlabels; i++)
        if (strcmp(a->labels[i], b->labels[i]) != 0)
            return 0;
    for (size_t i = 0; i < a->nbounds; i++)
        if (a->bounds[i] != b->bounds[i])
            return 0;
    return 1;
}

static metrics_series_t *metrics_series_new(rf_metric_t *m, const char *const *values)
{
    metrics_series_t *s = calloc(1, sizeof(*s));

    if (!s)
        abort();
    s->values = calloc(m->nlabels ? m->nlabels : 1, sizeof(char *));
    if (!s->values)
        abort();
    for (size_t i = 0; i < m->nlabels; i++)
        s->values[i] = metrics_strdup(values[i]);
    if (m->type == METRICS_HISTOGRAM) {
        s->buckets = calloc(m->nbounds ? m->nbounds : 1, sizeof(uint64_t));
        if (!s->buckets)
            abort();
    }
    *m->series_tail = s;
    m->series_tail = &s->next;
    m->nseries++;
    return s;
}

static rf_metric_t *metrics_register(metrics_type_t type, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds)
{
    rf_metric_t *m = calloc(1, sizeof(*m));
    rf_metric_t *found = NULL;

    if (!m)
        abort();
    m->type = type;
    m->name = metrics_strdup(name);
    m->help = metrics_strdup(help);
    m->series_tail = &m->series;
    if (type == METRICS_HISTOGRAM) {
        if (!bounds) {
            bounds = metrics_default_bounds;
            nbounds = sizeof(metrics_default_bounds) / sizeof(metrics_default_bounds[0]);
        }
        m->bounds = malloc((nbounds ? nbounds : 1) * sizeof(double));
        if (!m->bounds)
            abort();
        memcpy(m->bounds, bounds, nbounds * sizeof(double));
        m->nbounds = nbounds;
        for (size_t i = 1; i < nbounds; i++) {
            if (!(bounds[i] > bounds[i - 1])) {
                rf_log_error("metric '%s': bucket bounds must increase", name);
                metrics_free(m);
                return NULL;
            }
        }
    }
    if (!name || !metrics_name_ok(name, 1) || !metrics_parse_labels(m, labels)) {
        rf_log_error("metric '%s': bad metric or label name", name ? name : "");
        metrics_free(m);
        return NULL;
    }
    pthread_mutex_lock(&metrics_lock);
    for (rf_metric_t *f = metrics_head; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            found = f;
    if (!found) {
        *metrics_tail = m;
        metrics_tail = &m->next;
        /* A family without labels has its one series from the start (a 0 is a fact). */
        if (m->nlabels == 0)
            metrics_series_new(m, NULL);
    }
    pthread_mutex_unlock(&metrics_lock);
    if (!found)
        return m;
    if (!metrics_same_shape(found, m)) {
        rf_log_error("metric '%s' is already registered with another type or labels", name);
        found = NULL;
    }
    metrics_free(m);
    return found;
}

rf_metric_t *rf_metrics_counter(const char *name, const char *help, const char *labels)
{
    return metrics_register(METRICS_COUNTER, name, help, labels, NULL, 0);
}

rf_metric_t *rf_metrics_gauge(const char *name, const char *help, const char *labels)
{
    return metrics_register(METRICS_GAUGE, name, help, labels, NULL, 0);
}

rf_metric_t *rf_metrics_histogram(const char *name, const char *help, const char *labels,
                                  const double *bounds, size_t nbounds)
{
    return metrics_register(METRICS_HISTOGRAM, name, help, labels, bounds, nbounds);
}

/* The series of values under the lock, created when create is set; NULL when the values
 * do not match the labels or the family is full. */
static metrics_series_t *metrics_series_get(rf_metric_t *m, const char *const *values, int create)
{
    size_t n = 0;

    if (values)
        while (values[n] != rf_metrics_labels_end && n <= m->nlabels)
            n++;
    if (n != m->nlabels) {
        if (!m->overflow_logged)
            rf_log_error("metric '%s': %zu label values for %zu labels", m->name, n, m->nlabels);
        m->overflow_logged = 1;
        return NULL;
    }
    for (metrics_series_t *s = m->series; s; s = s->next) {
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(s->values[i], values[i] ? values[i] : "") != 0)
                break;
        if (i == n)
            return s;
    }
    if (!create)
        return NULL;
    if (m->nseries >= METRICS_SERIES_MAX) {
        if (!m->overflow_logged)
            rf_log_error("metric '%s': more than %d series, dropping new ones", m->name,
                         METRICS_SERIES_MAX);
        m->overflow_logged = 1;
        return NULL;
    }
    return metrics_series_new(m, values);
}

void rf_metrics_add(rf_metric_t *m, const char *const *values, double v)
{
    metrics_series_t *s;

    if (!m || m->type == METRICS_HISTOGRAM || (m->type == METRICS_COUNTER && !(v >= 0)))
        return;
    pthread_mutex_lock(&metrics_lock);
    s = metrics_series_get(m, values, 1);
    if (s)
        s->value += v;
    pthread_mutex_unlock(&metrics_lock);
}

void rf_metrics_set(rf_metric_t *m, const char *const *values, double v)
{
    metrics_series_t *s;

    if (!m || m->type != METRICS_GAUGE)
        return;
    pthread_mutex_lock(&metrics_lock);
    s = metrics_series_get(m, values, 1);
    if (s)
        s->value = v;
    pthread_mutex_unlock(&metrics_lock);
}

void rf_metrics_observe(rf_metric_t *m, const char *const *values, double v)
{
    metrics_series_t *s;

    if (!m || m->type != METRICS_HISTOGRAM || isnan(v))
        return;
    pthread_mutex_lock(&metrics_lock);
    s = metrics_series_get(m, values, 1);
    if (s) {
        for (size_t i = 0; i < m->nbounds; i++) {
            if (v <= m->bounds[i]) {
                s->buckets[i]++;
                break;
            }
        }
        s->count++;
        s->sum += v;
    }
    pthread_mutex_unlock(&metrics_lock);
}

void rf_metrics_clear(rf_metric_t *m)
{
    metrics_series_t *s;

    if (!m)
        return;
    pthread_mutex_lock(&metrics_lock);
    s = m->series;
    while (s) {
        metrics_series_t *next = s->next;
        for (size_t i = 0; i < m->nlabels; i++)
            free(s->values[i]);
        free(s->values);
        free(s->buckets);
        free(s);
        s = next;
    }
    m->series = NULL;
    m->series_tail = &m->series;
    m->nseries = 0;
    if (m->nlabels == 0)
        metrics_series_new(m, NULL);
    pthread_mutex_unlock(&metrics_lock);
}

double rf_metrics_value(rf_metric_t *m, const char *const *values)
{
    metrics_series_t *s;
    double v = 0;

    if (!m)
        return 0;
    pthread_mutex_lock(&metrics_lock);
    s = metrics_series_get(m, values, 0);
    if (s)
        v = m->type == METRICS_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&metrics_lock);
    return v;
}

void rf_metrics_const_label(const char *name, const char *value)
{
    size_t i;

    if (!name || !metrics_name_ok(name, 0))
        return;
    pthread_mutex_lock(&metrics_lock);
    for (i = 0; i < metrics_nconst; i++)
        if (strcmp(metrics_const[i].name, name) == 0)
            break;
    if (i == metrics_nconst && metrics_nconst < METRICS_CONST_MAX) {
        metrics_const[i].name = metrics_strdup(name);
        metrics_nconst++;
    }
    if (i < metrics_nconst) {
        free(metrics_const[i].value);
        metrics_const[i].value = metrics_strdup(value);
    }
    pthread_mutex_unlock(&metrics_lock);
}

/* Escapes a label value (\\, \", \n) or help text (\\, \n). */
static void metrics_add_escaped(rf_buf_t *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            rf_buf_adds(b, "\\\\");
        else if (*s == '\n')
            rf_buf_adds(b, "\\n");
        else if (*s == '"' && quote)
            rf_buf_adds(b, "\\\"");
        else
            rf_buf_addc(b, *s);
    }
}

/* The shortest of %.15g and %.17g that reads back as v; +Inf, -Inf, NaN as Prometheus. */
static void metrics_add_number(rf_buf_t *b, double v)
{
    char num[64];

    if (isnan(v)) {
        rf_buf_adds(b, "NaN");
        return;
    }
    if (isinf(v)) {
        rf_buf_adds(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    snprintf(num, sizeof(num), "%.15g", v);
    if (strtod(num, NULL) != v)
        snprintf(num, sizeof(num), "%.17g", v);
    rf_buf_adds(b, num);
}

/* name{const...,labels...[,le="bound"]} */
static void metrics_add_series_name(rf_buf_t *b, const rf_metric_t *m, const char *suffix,
                                    const metrics_series_t *s, const char *le)
{
    int n = 0;

    rf_buf_adds(b, m->name);
    rf_buf_adds(b, suffix);
    for (size_t i = 0; i < metrics_nconst; i++) {
        rf_buf_adds(b, n++ ? "," : "{");
        rf_buf_addf(b, "%s=\"", metrics_const[i].name);
        metrics_add_escaped(b, metrics_const[i].value, 1);
        rf_buf_addc(b, '"');
    }
    for (size_t i = 0; i < m->nlabels; i++) {
        rf_buf_adds(b, n++ ? "," : "{");
        rf_buf_addf(b, "%s=\"", m->labels[i]);
        metrics_add_escaped(b, s->values[i], 1);
        rf_buf_addc(b, '"');
    }
    if (le) {
        rf_buf_adds(b, n++ ? "," : "{");
        rf_buf_addf(b, "le=\"%s\"", le);
    }
    if (n)
        rf_buf_addc(b, '}');
    rf_buf_addc(b, ' ');
}

static void metrics_add_histogram(rf_buf_t *b, const rf_metric_t *m, const metrics_series_t *s)
{
    rf_buf_t le = RF_BUF_INIT;
    uint64_t cum = 0;

    for (size_t i = 0; i < m->nbounds; i++) {
        cum += s->buckets[i];
        rf_buf_reset(&le);
        metrics_add_number(&le, m->bounds[i]);
        metrics_add_series_name(b, m, "_bucket", s, rf_buf_str(&le));
        rf_buf_addf(b, "%llu\n", (unsigned long long)cum);
    }
    metrics_add_series_name(b, m, "_bucket", s, "+Inf");
    rf_buf_addf(b, "%llu\n", (unsigned long long)s->count);
    metrics_add_series_name(b, m, "_sum", s, NULL);
    metrics_add_number(b, s->sum);
    rf_buf_addc(b, '\n');
    metrics_add_series_name(b, m, "_count", s, NULL);
    rf_buf_addf(b, "%llu\n", (unsigned long long)s->count);
    rf_buf_release(&le);
}

char *rf_metrics_render(void)
{
    rf_buf_t b;

    rf_buf_init(&b, 0);
    pthread_mutex_lock(&metrics_lock);
    for (const rf_metric_t *m = metrics_head; m; m = m->next) {
        rf_buf_addf(&b, "# HELP %s ", m->name);
        metrics_add_escaped(&b, m->help, 0);
        rf_buf_addf(&b, "\n# TYPE %s %s\n", m->name, metrics_type_names[m->type]);
        for (const metrics_series_t *s = m->series; s; s = s->next) {
            if (m->type == METRICS_HISTOGRAM) {
                metrics_add_histogram(&b, m, s);
                continue;
            }
            metrics_add_series_name(&b, m, "", s, NULL);
            metrics_add_number(&b, s->value);
            rf_buf_addc(&b, '\n');
        }
    }
    pthread_mutex_unlock(&metrics_lock);
    return rf_buf_detach(&b);
}

void rf_metrics_reset(void)
{
    rf_metric_t *m;

    pthread_mutex_lock(&metrics_lock);
    m = metrics_head;
    metrics_head = NULL;
    metrics_tail = &metrics_head;
    for (size_t i = 0; i < metrics_nconst; i++) {
        free(metrics_const[i].name);
        free(metrics_const[i].value);
        metrics_const[i].name = NULL;
        metrics_const[i].value = NULL;
    }
    metrics_nconst = 0;
    pthread_mutex_unlock(&metrics_lock);
    while (m) {
        rf_metric_t *next = m->next;
        metrics_free(m);
        m = next;
    }
}
