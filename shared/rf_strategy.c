/* Release strategies: the strategy JSON of a service, checked and normalized. */
#include "rf_strategy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_analysis.h"
#include "rf_clock.h"

#define STRATEGY_MAX_STEPS 64

long long rf_strategy_duration_ms(const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v) < 0 ? -1 : json_integer_value(v) * 1000LL;
    return rf_clock_parse_ms(json_string_value(v));
}

void rf_strategy_canary_replicas(int total, int weight, int *canary, int *stable)
{
    int c;

    if (weight < 0)
        weight = 0;
    if (weight > 100)
        weight = 100;
    if (total <= 0) {
        *canary = 0;
        *stable = 0;
        return;
    }
    c = (int)(((long long)total * weight * 2 + 100) / 200); /* nearest, halves up */
    if (weight > 0 && c == 0)
        c = 1; /* without a traffic router the smallest weight is one pod */
    if (c > total)
        c = total;
    *canary = c;
    *stable = total - c;
}

void rf_strategy_canary_replicas_routed(int total, int weight, int *canary, int *stable)
{
    if (weight < 0)
        weight = 0;
    if (weight > 100)
        weight = 100;
    if (total <= 0) {
        *canary = 0;
        *stable = 0;
        return;
    }
    *canary = (int)(((long long)total * weight + 99) / 100); /* rounds up, as Argo does */
    *stable = total;
}

/* Only the keys in allowed (NULL-terminated) may appear in o. */
static int strategy_keys_ok(const json_t *o, const char *const *allowed, const char *where,
                            char *errstr, size_t errstr_size)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)o, k, v) {
        int found = 0;
        for (size_t i = 0; allowed[i]; i++)
            found |= strcmp(allowed[i], k) == 0;
        if (!found) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: unknown key '%s'", where, k);
            return 0;
        }
    }
    return 1;
}

/* A non-negative integer field (default def when absent); -1 with errstr when bad. */
static long long strategy_count(const json_t *o, const char *key, long long def, long long min,
                                const char *where, char *errstr, size_t errstr_size)
{
    const json_t *v = json_object_get(o, key);

    if (!v)
        return def;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > 1000000) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: '%s' must be an integer >= %lld", where,
                key, min);
        return -1;
    }
    return json_integer_value(v);
}

static long long strategy_duration(const json_t *o, const char *key, long long def,
                                   const char *where, char *errstr, size_t errstr_size)
{
    const json_t *v = json_object_get(o, key);
    long long ms;

    if (!v)
        return def;
    ms = rf_strategy_duration_ms(v);
    if (ms < 0)
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "%s: '%s' is not a duration (500ms, 30s, 5m, 1h, or seconds)", where, key);
    return ms;
}

static int strategy_http_url(const char *s)
{
    return s && (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0) && s[7];
}

/* An analysis step: one metric, as an Argo Rollouts AnalysisTemplate metric. */
static json_t *strategy_metric(const json_t *a, const char *where, char *errstr,
                               size_t errstr_size)
{
    static const char *const keys[] = {"name", "provider", "successCondition", "interval",
                                       "count", "failureLimit", "inconclusiveLimit", "timeout",
                                       NULL};
    const json_t *provider = json_object_get(a, "provider");
    const json_t *prom = json_object_get(provider, "prometheus");
    const json_t *web = json_object_get(provider, "web");
    const char *cond = json_string_value(json_object_get(a, "successCondition"));
    json_t *m, *p;
    long long interval, count, flimit, ilimit, timeout;

    if (!json_is_object(a)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: analysis must be an object", where);
        return NULL;
    }
    if (!strategy_keys_ok(a, keys, where, errstr, errstr_size))
        return NULL;
    if (json_object_get(a, "name") && !json_is_string(json_object_get(a, "name"))) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: 'name' must be a string", where);
        return NULL;
    }
    if (!json_is_object(provider) || json_object_size(provider) != 1 || (!prom && !web)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "%s: 'provider' must hold one of 'prometheus' or 'web'", where);
        return NULL;
    }
    if (json_object_get(a, "successCondition") && !cond) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: 'successCondition' must be a string",
                where);
        return NULL;
    }
    if (prom) {
        static const char *const pkeys[] = {"address", "query", NULL};
        if (!json_is_object(prom) || !strategy_keys_ok(prom, pkeys, where, errstr, errstr_size))
            return NULL;
        if (!strategy_http_url(json_string_value(json_object_get(prom, "address"))) ||
            !json_string_value(json_object_get(prom, "query")) ||
            !*json_string_value(json_object_get(prom, "query"))) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "%s: prometheus needs an http(s) 'address' and a 'query'", where);
            return NULL;
        }
        if (!cond) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "%s: a prometheus metric needs a 'successCondition'", where);
            return NULL;
        }
        p = json_pack("{s:{s:O, s:O}}", "prometheus", "address", json_object_get(prom, "address"),
                      "query", json_object_get(prom, "query"));
    } else {
        static const char *const wkeys[] = {"url", "jsonPath", "statusCode", NULL};
        const json_t *jp = json_object_get(web, "jsonPath");
        const json_t *sc = json_object_get(web, "statusCode");
        if (!json_is_object(web) || !strategy_keys_ok(web, wkeys, where, errstr, errstr_size))
            return NULL;
        if (!strategy_http_url(json_string_value(json_object_get(web, "url")))) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: web needs an http(s) 'url'", where);
            return NULL;
        }
        if (jp && (!json_is_string(jp) || !strstr(json_string_value(jp), "$"))) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "%s: 'jsonPath' must look like '$.field' or '{$.field}'", where);
            return NULL;
        }
        if (sc && (!json_is_integer(sc) || json_integer_value(sc) < 100 ||
                   json_integer_value(sc) > 599)) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: 'statusCode' must be 100..599",
                    where);
            return NULL;
        }
        if (cond && !jp) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "%s: a web 'successCondition' needs a 'jsonPath' to judge", where);
            return NULL;
        }
        p = json_pack("{s:{s:O}}", "web", "url", json_object_get(web, "url"));
        if (jp)
            json_object_set(json_object_get(p, "web"), "jsonPath", (json_t *)jp);
        if (sc)
            json_object_set(json_object_get(p, "web"), "statusCode", (json_t *)sc);
    }
    if (cond) {
        char cerr[256];
        if (rf_analysis_condition(cond, NULL, cerr, sizeof(cerr)) < 0) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: successCondition: %s", where, cerr);
            json_decref(p);
            return NULL;
        }
    }
    interval = strategy_duration(a, "interval", 10000, where, errstr, errstr_size);
    timeout = interval < 0 ? -1 : strategy_duration(a, "timeout", 5000, where, errstr,
                                                   errstr_size);
    count = timeout < 0 ? -1 : strategy_count(a, "count", 1, 1, where, errstr, errstr_size);
    flimit = count < 0 ? -1 : strategy_count(a, "failureLimit", 0, 0, where, errstr,
                                             errstr_size);
    ilimit = flimit < 0 ? -1 : strategy_count(a, "inconclusiveLimit", 0, 0, where, errstr,
                                              errstr_size);
    if (ilimit < 0) {
        json_decref(p);
        return NULL;
    }
    if (timeout < 100 || timeout > 60000) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: 'timeout' must be 100ms..60s", where);
        json_decref(p);
        return NULL;
    }
    m = json_pack("{s:s, s:o, s:I, s:I, s:I, s:I, s:I}", "name",
                  json_string_value(json_object_get(a, "name"))
                      ? json_string_value(json_object_get(a, "name"))
                      : (prom ? "prometheus" : "web"),
                  "provider", p, "interval_ms", (json_int_t)interval, "count", (json_int_t)count,
                  "failureLimit", (json_int_t)flimit, "inconclusiveLimit", (json_int_t)ilimit,
                  "timeout_ms", (json_int_t)timeout);
    if (cond)
        json_object_set_new(m, "successCondition", json_string(cond));
    return m;
}

/* A Kubernetes object name (RFC 1123 subdomain) that still is one with "-canary" added. */
static int strategy_object_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 253 - 7 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' ||
              s[i] == '.'))
            return 0;
    }
    return 1;
}

/* canary.trafficRouting: {"nginx": {"stableIngress": NAME}} -> {"stableIngress": NAME}. */
static json_t *strategy_traffic(const json_t *tr, char *errstr, size_t errstr_size)
{
    static const char *const keys[] = {"nginx", NULL};
    static const char *const nkeys[] = {"stableIngress", NULL};
    const json_t *nginx = json_object_get(tr, "nginx");
    const char *name;

    if (!json_is_object(tr) || !strategy_keys_ok(tr, keys, "canary.trafficRouting", errstr,
                                                 errstr_size)) {
        if (!json_is_object(tr))
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "canary.trafficRouting must be an object");
        return NULL;
    }
    if (!json_is_object(nginx)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "canary.trafficRouting needs 'nginx': an object with 'stableIngress'");
        return NULL;
    }
    if (!strategy_keys_ok(nginx, nkeys, "canary.trafficRouting.nginx", errstr, errstr_size))
        return NULL;
    name = json_string_value(json_object_get(nginx, "stableIngress"));
    if (!strategy_object_name(name)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "canary.trafficRouting.nginx: 'stableIngress' must name an Ingress (lowercase "
                "letters, digits, '-' and '.', at most 246 characters)");
        return NULL;
    }
    return json_pack("{s:s}", "stableIngress", name);
}

static json_t *strategy_canary(const json_t *c, char *errstr, size_t errstr_size)
{
    static const char *const keys[] = {"steps", "trafficRouting", NULL};
    const json_t *steps = json_object_get(c, "steps");
    json_t *out, *norm, *step, *nginx = NULL;
    char where[64];
    size_t i;

    if (!json_is_object(c) || !strategy_keys_ok(c, keys, "canary", errstr, errstr_size)) {
        if (!json_is_object(c))
            rf_errf(RF_ERR_PERM, errstr, errstr_size, "canary must be an object");
        return NULL;
    }
    if (!json_is_array(steps) || json_array_size(steps) == 0 ||
        json_array_size(steps) > STRATEGY_MAX_STEPS) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "canary needs 'steps': a list of 1 to %d",
                STRATEGY_MAX_STEPS);
        return NULL;
    }
    if (json_object_get(c, "trafficRouting")) {
        nginx = strategy_traffic(json_object_get(c, "trafficRouting"), errstr, errstr_size);
        if (!nginx)
            return NULL;
    }
    norm = json_array();
    json_array_foreach(steps, i, step) {
        const json_t *w = json_object_get(step, "setWeight");
        const json_t *pause = json_object_get(step, "pause");
        const json_t *an = json_object_get(step, "analysis");
        snprintf(where, sizeof(where), "canary step %zu", i + 1);
        if (!json_is_object(step) || json_object_size(step) != 1 || (!w && !pause && !an)) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "%s: must be one of setWeight, pause or analysis", where);
            goto fail;
        }
        if (w) {
            if (!json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > 100) {
                rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: setWeight must be 0..100",
                        where);
                goto fail;
            }
            json_array_append_new(norm, json_pack("{s:O}", "setWeight", w));
        } else if (pause) {
            static const char *const pkeys[] = {"duration", NULL};
            json_t *p = json_object();
            if (!json_is_object(pause) ||
                !strategy_keys_ok(pause, pkeys, where, errstr, errstr_size)) {
                if (!json_is_object(pause))
                    rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s: pause must be an object",
                            where);
                json_decref(p);
                goto fail;
            }
            if (json_object_get(pause, "duration")) {
                long long ms = strategy_duration(pause, "duration", 0, where, errstr,
                                                 errstr_size);
                if (ms < 0) {
                    json_decref(p);
                    goto fail;
                }
                json_object_set_new(p, "duration_ms", json_integer(ms));
            }
            json_array_append_new(norm, json_pack("{s:o}", "pause", p));
        } else {
            json_t *m = strategy_metric(an, where, errstr, errstr_size);
            if (!m)
                goto fail;
            json_array_append_new(norm, json_pack("{s:o}", "analysis", m));
        }
    }
    out = json_pack("{s:s, s:o}", "kind", "canary", "steps", norm);
    if (nginx)
        json_object_set_new(out, "nginx", nginx);
    return out;
fail:
    json_decref(norm);
    json_decref(nginx);
    return NULL;
}

static json_t *strategy_bluegreen(const json_t *b, char *errstr, size_t errstr_size)
{
    static const char *const keys[] = {"autoPromotionSeconds", "scaleDownDelaySeconds", NULL};
    long long autop, delay;
    json_t *out;

    if (!json_is_object(b)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "blueGreen must be an object");
        return NULL;
    }
    if (!strategy_keys_ok(b, keys, "blueGreen", errstr, errstr_size))
        return NULL;
    autop = strategy_count(b, "autoPromotionSeconds", -1, 0, "blueGreen", errstr, errstr_size);
    if (autop < 0 && json_object_get(b, "autoPromotionSeconds"))
        return NULL;
    delay = strategy_count(b, "scaleDownDelaySeconds", 30, 0, "blueGreen", errstr, errstr_size);
    if (delay < 0)
        return NULL;
    out = json_pack("{s:s, s:I}", "kind", "bluegreen", "scaleDownDelaySeconds",
                    (json_int_t)delay);
    if (autop >= 0)
        json_object_set_new(out, "autoPromotionSeconds", json_integer(autop));
    return out;
}

json_t *rf_strategy_parse(const json_t *strategy, char *errstr, size_t errstr_size)
{
    if (!strategy || json_is_null(strategy) ||
        (json_is_object(strategy) && json_object_size(strategy) == 0))
        return json_pack("{s:s}", "kind", "rolling");
    if (!json_is_object(strategy) || json_object_size(strategy) != 1) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "strategy must be an object with one of 'canary' or 'blueGreen'");
        return NULL;
    }
    if (json_object_get(strategy, "canary"))
        return strategy_canary(json_object_get(strategy, "canary"), errstr, errstr_size);
    if (json_object_get(strategy, "blueGreen"))
        return strategy_bluegreen(json_object_get(strategy, "blueGreen"), errstr, errstr_size);
    rf_errf(RF_ERR_PERM, errstr, errstr_size,
            "strategy must be an object with one of 'canary' or 'blueGreen'");
    return NULL;
}

json_t *rf_strategy_parse_text(const char *text, char *errstr, size_t errstr_size)
{
    json_error_t jerr;
    json_t *j, *out;

    if (!text || !*text)
        return rf_strategy_parse(NULL, errstr, errstr_size);
    j = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!j) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "strategy is not JSON: %s", jerr.text);
        return NULL;
    }
    out = rf_strategy_parse(j, errstr, errstr_size);
    json_decref(j);
    return out;
}
