/* Analysis measurements over libcurl: Prometheus /api/v1/query and web checks. */
#include "rf_analysis.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rf_buf.h"

#define ANALYSIS_MAX_ANSWER (1024 * 1024)

const char *rf_analysis_verdict_name(rf_analysis_verdict_t v)
{
    switch (v) {
    case RF_ANALYSIS_SUCCESSFUL:
        return "successful";
    case RF_ANALYSIS_FAILED:
        return "failed";
    default:
        return "inconclusive";
    }
}

/* A number out of a result: a JSON number, or a string that is one ("0.005", "NaN"). */
static int analysis_number(const json_t *v, double *out)
{
    const char *s = json_string_value(v);
    char *end = NULL;

    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 1;
    }
    if (!s || !*s)
        return 0;
    *out = strtod(s, &end);
    return end && *end == '\0';
}

int rf_analysis_condition(const char *cond, const json_t *result, char *errstr,
                          size_t errstr_size)
{
    static const char *const ops[] = {"<=", ">=", "==", "!=", "<", ">", NULL};
    const char *p = cond, *op = NULL;
    char lit[256];
    json_t *want = NULL;
    double a, b;
    int cmp, holds;

    while (isspace((unsigned char)*p))
        p++;
    if (strncmp(p, "result", 6) != 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "'%s' must start with 'result'", cond);
        return -1;
    }
    p += 6;
    if (strncmp(p, "[0]", 3) == 0)
        p += 3;
    while (isspace((unsigned char)*p))
        p++;
    for (size_t i = 0; ops[i]; i++) {
        if (strncmp(p, ops[i], strlen(ops[i])) == 0) {
            op = ops[i];
            break;
        }
    }
    if (!op) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "'%s': expected one of < <= > >= == != after 'result'", cond);
        return -1;
    }
    p += strlen(op);
    while (isspace((unsigned char)*p))
        p++;
    snprintf(lit, sizeof(lit), "%s", p);
    for (size_t n = strlen(lit); n > 0 && isspace((unsigned char)lit[n - 1]); n--)
        lit[n - 1] = '\0';
    if (lit[0] == '\'' && strlen(lit) >= 2 && lit[strlen(lit) - 1] == '\'') {
        lit[strlen(lit) - 1] = '\0';
        want = json_string(lit + 1);
    } else {
        want = json_loads(lit, JSON_DECODE_ANY, NULL);
    }
    if (!want || json_is_object(want) || json_is_array(want)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "'%s': '%s' is not a number, a quoted string, true, false or null", cond, lit);
        json_decref(want);
        return -1;
    }
    if (!result) {
        json_decref(want);
        return 0; /* syntax check only */
    }
    if (json_is_number(want)) {
        if (!analysis_number(result, &a)) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "'%s': the result is not a number", cond);
            json_decref(want);
            return -1;
        }
        b = json_number_value(want);
        if (isnan(a)) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "'%s': the result is NaN", cond);
            json_decref(want);
            return -1;
        }
        cmp = a < b ? -1 : a > b ? 1 : 0;
    } else {
        if (strcmp(op, "==") != 0 && strcmp(op, "!=") != 0) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "'%s': only == and != compare non-numbers",
                    cond);
            json_decref(want);
            return -1;
        }
        cmp = json_equal((json_t *)result, want) ? 0 : 1;
    }
    json_decref(want);
    if (strcmp(op, "<") == 0)
        holds = cmp < 0;
    else if (strcmp(op, "<=") == 0)
        holds = cmp <= 0;
    else if (strcmp(op, ">") == 0)
        holds = cmp > 0;
    else if (strcmp(op, ">=") == 0)
        holds = cmp >= 0;
    else if (strcmp(op, "==") == 0)
        holds = cmp == 0;
    else
        holds = cmp != 0;
    return holds;
}

static size_t analysis_on_data(char *data, size_t size, size_t n, void *opaque)
{
    rf_buf_t *b = opaque;

    return rf_buf_add(b, data, size * n) == 0 ? size * n : 0;
}

/* GET url; *status receives the HTTP status. Returns 0, or -1 with message. */
static int analysis_get(const char *url, long timeout_ms, rf_buf_t *body, long *status,
                        char *message, size_t message_size)
{
    CURL *c = curl_easy_init();
    char cerr[CURL_ERROR_SIZE] = "";
    CURLcode rc;

    if (!c) {
        snprintf(message, message_size, "cannot create an HTTP request");
        return -1;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "relfleet-analysis");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, analysis_on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        snprintf(message, message_size, "GET %s: %s", url, *cerr ? cerr : curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

/* "$.a.b", "{$.a.b}", "$.items[0].v": the value at that path, or NULL. */
static json_t *analysis_json_path(json_t *doc, const char *path)
{
    char buf[512], *p, *save = NULL, *seg;
    json_t *cur = doc;

    snprintf(buf, sizeof(buf), "%s", path);
    p = buf;
    if (*p == '{' && p[strlen(p) - 1] == '}') {
        p[strlen(p) - 1] = '\0';
        p++;
    }
    if (*p != '$')
        return NULL;
    p++;
    for (seg = strtok_r(p, ".", &save); seg && cur; seg = strtok_r(NULL, ".", &save)) {
        char *br = strchr(seg, '[');
        if (br)
            *br = '\0';
        if (*seg)
            cur = json_object_get(cur, seg);
        while (br && cur) {
            char *end = NULL;
            long idx = strtol(br + 1, &end, 10);
            if (!end || *end != ']')
                return NULL;
            cur = json_array_get(cur, (size_t)idx);
            br = strchr(end, '[');
        }
    }
    return cur;
}

/* Judges value against the metric's success condition. */
static rf_analysis_verdict_t analysis_judge(const json_t *metric, const json_t *value,
                                            char *message, size_t message_size)
{
    const char *cond = json_string_value(json_object_get(metric, "successCondition"));
    char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
    char cerr[300];
    int holds;

    if (!cond) {
        snprintf(message, message_size, "result %s", text ? text : "?");
        free(text);
        return RF_ANALYSIS_SUCCESSFUL;
    }
    holds = rf_analysis_condition(cond, value, cerr, sizeof(cerr));
    if (holds < 0)
        snprintf(message, message_size, "result %s cannot be judged: %s", text ? text : "?", cerr);
    else
        snprintf(message, message_size, "result %s: %s %s", text ? text : "?", cond,
                 holds ? "holds" : "does not hold");
    free(text);
    return holds < 0 ? RF_ANALYSIS_INCONCLUSIVE
                     : holds ? RF_ANALYSIS_SUCCESSFUL : RF_ANALYSIS_FAILED;
}

static rf_analysis_verdict_t analysis_prometheus(const json_t *metric, const json_t *prom,
                                                 json_t **value_out, char *message,
                                                 size_t message_size)
{
    const char *address = json_string_value(json_object_get(prom, "address"));
    char *q = curl_easy_escape(NULL, json_string_value(json_object_get(prom, "query")), 0);
    rf_buf_t url = RF_BUF_INIT, body = RF_BUF_INIT;
    rf_analysis_verdict_t v = RF_ANALYSIS_INCONCLUSIVE;
    json_t *doc = NULL, *data, *res, *sample;
    long status = 0;

    rf_buf_init(&body, ANALYSIS_MAX_ANSWER);
    rf_buf_addf(&url, "%.*s/api/v1/query?query=%s",
                (int)(strlen(address) - (address[strlen(address) - 1] == '/')), address,
                q ? q : "");
    curl_free(q);
    if (analysis_get(rf_buf_str(&url), (long)json_integer_value(json_object_get(metric,
                                                                                "timeout_ms")),
                     &body, &status, message, message_size) != 0)
        goto out;
    doc = json_loads(rf_buf_str(&body), 0, NULL);
    if (status != 200 || !doc || strcmp(json_string_value(json_object_get(doc, "status")) ?: "",
                                        "success") != 0) {
        snprintf(message, message_size, "prometheus answered %ld: %.200s", status,
                 json_string_value(json_object_get(doc, "error")) ?: rf_buf_str(&body));
        goto out;
    }
    data = json_object_get(doc, "data");
    res = json_object_get(data, "result");
    if (strcmp(json_string_value(json_object_get(data, "resultType")) ?: "", "vector") == 0 ||
        strcmp(json_string_value(json_object_get(data, "resultType")) ?: "", "matrix") == 0) {
        sample = json_array_get(res, 0);
        if (!sample) {
            snprintf(message, message_size, "no data: the query returned an empty result");
            goto out;
        }
        res = json_object_get(sample, "value");
        if (!res) /* a matrix: the last value of the first series */
            res = json_array_get(json_object_get(sample, "values"),
                                 json_array_size(json_object_get(sample, "values")) - 1);
    }
    if (!json_is_array(res) || !json_is_string(json_array_get(res, 1))) {
        snprintf(message, message_size, "no data: no sample value in the answer");
        goto out;
    }
    *value_out = json_incref(json_array_get(res, 1));
    {
        double d;
        if (analysis_number(*value_out, &d)) {
            json_decref(*value_out);
            *value_out = isnan(d) ? json_string("NaN") : json_real(d);
        }
    }
    v = analysis_judge(metric, *value_out, message, message_size);
out:
    json_decref(doc);
    rf_buf_release(&url);
    rf_buf_release(&body);
    return v;
}

static rf_analysis_verdict_t analysis_web(const json_t *metric, const json_t *web,
                                          json_t **value_out, char *message, size_t message_size)
{
    const char *url = json_string_value(json_object_get(web, "url"));
    const char *path = json_string_value(json_object_get(web, "jsonPath"));
    json_int_t want = json_integer_value(json_object_get(web, "statusCode"));
    rf_buf_t body = RF_BUF_INIT;
    rf_analysis_verdict_t v = RF_ANALYSIS_INCONCLUSIVE;
    json_t *doc = NULL, *field;
    long status = 0;

    rf_buf_init(&body, ANALYSIS_MAX_ANSWER);
    if (analysis_get(url, (long)json_integer_value(json_object_get(metric, "timeout_ms")), &body,
                     &status, message, message_size) != 0)
        goto out;
    if (want ? status != want : (status < 200 || status > 299)) {
        if (want)
            snprintf(message, message_size, "GET %s answered %ld, not %lld", url, status,
                     (long long)want);
        else
            snprintf(message, message_size, "GET %s answered %ld, not 2xx", url, status);
        v = RF_ANALYSIS_FAILED;
        goto out;
    }
    if (!path) {
        snprintf(message, message_size, "GET %s answered %ld", url, status);
        v = RF_ANALYSIS_SUCCESSFUL;
        goto out;
    }
    doc = json_loads(rf_buf_str(&body), JSON_DECODE_ANY, NULL);
    field = doc ? analysis_json_path(doc, path) : NULL;
    if (!field) {
        snprintf(message, message_size, "no data: GET %s answered %ld without %s", url, status,
                 path);
        goto out;
    }
    *value_out = json_incref(field);
    v = analysis_judge(metric, field, message, message_size);
out:
    json_decref(doc);
    rf_buf_release(&body);
    return v;
}

rf_analysis_verdict_t rf_analysis_measure(const json_t *metric, json_t **value_out,
                                          char *message, size_t message_size)
{
    const json_t *provider = json_object_get(metric, "provider");

    *value_out = NULL;
    if (json_object_get(provider, "prometheus"))
        return analysis_prometheus(metric, json_object_get(provider, "prometheus"), value_out,
                                   message, message_size);
    if (json_object_get(provider, "web"))
        return analysis_web(metric, json_object_get(provider, "web"), value_out, message,
                            message_size);
    snprintf(message, message_size, "metric has no provider");
    return RF_ANALYSIS_INCONCLUSIVE;
}
