/* Strategy JSON: valid and invalid shapes, durations, Argo's canary replica math, conditions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rf_analysis.h"
#include "rf_strategy.h"

static void test_valid_strategies(void **state)
{
    static const struct {
        const char *in, *expect;
    } cases[] = {
        {"", "{\"kind\":\"rolling\"}"},
        {"{}", "{\"kind\":\"rolling\"}"},
        {"null", "{\"kind\":\"rolling\"}"},
        {"{\"canary\":{\"steps\":[{\"setWeight\":20},{\"pause\":{}},{\"pause\":{\"duration\":\"30s\"}},"
         "{\"pause\":{\"duration\":5}},{\"pause\":{\"duration\":\"500ms\"}}]}}",
         "{\"kind\":\"canary\",\"steps\":[{\"setWeight\":20},{\"pause\":{}},{\"pause\":"
         "{\"duration_ms\":30000}},{\"pause\":{\"duration_ms\":5000}},{\"pause\":"
         "{\"duration_ms\":500}}]}"},
        {"{\"blueGreen\":{\"autoPromotionSeconds\":60}}",
         "{\"kind\":\"bluegreen\",\"scaleDownDelaySeconds\":30,\"autoPromotionSeconds\":60}"},
        {"{\"blueGreen\":{}}", "{\"kind\":\"bluegreen\",\"scaleDownDelaySeconds\":30}"},
        {"{\"canary\":{\"trafficRouting\":{\"nginx\":{\"stableIngress\":\"web.v1\"}},"
         "\"steps\":[{\"setWeight\":20}]}}",
         "{\"kind\":\"canary\",\"steps\":[{\"setWeight\":20}],\"nginx\":{\"stableIngress\":"
         "\"web.v1\"}}"},
        {"{\"canary\":{\"steps\":[{\"analysis\":{\"provider\":{\"prometheus\":{\"address\":"
         "\"http://p:9090\",\"query\":\"up\"}},\"successCondition\":\"result[0] < 0.01\"}}]}}",
         "{\"kind\":\"canary\",\"steps\":[{\"analysis\":{\"name\":\"prometheus\",\"provider\":"
         "{\"prometheus\":{\"address\":\"http://p:9090\",\"query\":\"up\"}},\"interval_ms\":10000,"
         "\"count\":1,\"failureLimit\":0,\"inconclusiveLimit\":0,\"timeout_ms\":5000,"
         "\"successCondition\":\"result[0] < 0.01\"}}]}"},
    };
    char errstr[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *got = rf_strategy_parse_text(cases[i].in, errstr, sizeof(errstr));
        json_t *want = json_loads(cases[i].expect, 0, NULL);
        if (!got)
            fail_msg("case %zu: %s", i, errstr);
        if (!json_equal(got, want)) {
            char *text = json_dumps(got, JSON_COMPACT);
            fail_msg("case %zu: got %s", i, text);
        }
        json_decref(got);
        json_decref(want);
    }
}

static void test_invalid_strategies(void **state)
{
    static const struct {
        const char *in, *error;
    } cases[] = {
        {"{", "strategy is not JSON"},
        {"[]", "strategy must be an object"},
        {"{\"canary\":{}}", "canary needs 'steps'"},
        {"{\"canary\":{\"steps\":[]}}", "canary needs 'steps'"},
        {"{\"canary\":{\"steps\":[{\"setWeight\":101}]}}", "canary step 1: setWeight must be 0..100"},
        {"{\"canary\":{\"steps\":[{\"setWeight\":10},{\"wait\":1}]}}", "canary step 2: must be one of"},
        {"{\"canary\":{\"steps\":[{\"setWeight\":10,\"pause\":{}}]}}", "canary step 1: must be one of"},
        {"{\"canary\":{\"steps\":[{\"pause\":{\"duration\":\"5 minutes\"}}]}}",
         "'duration' is not a duration"},
        {"{\"canary\":{\"steps\":[{\"pause\":{\"until\":1}}]}}", "unknown key 'until'"},
        {"{\"canary\":{\"steps\":[{\"setWeight\":5}],\"maxSurge\":1}}", "canary: unknown key 'maxSurge'"},
        {"{\"canary\":{\"steps\":[{\"analysis\":{\"provider\":{\"prometheus\":{\"address\":"
         "\"p:9090\",\"query\":\"up\"}},\"successCondition\":\"result < 1\"}}]}}",
         "prometheus needs an http(s) 'address'"},
        {"{\"canary\":{\"steps\":[{\"analysis\":{\"provider\":{\"prometheus\":{\"address\":"
         "\"http://p\",\"query\":\"up\"}}}}]}}", "needs a 'successCondition'"},
        {"{\"canary\":{\"steps\":[{\"analysis\":{\"provider\":{\"prometheus\":{\"address\":"
         "\"http://p\",\"query\":\"up\"}},\"successCondition\":\"result ~ 1\"}}]}}",
         "expected one of"},
        {"{\"canary\":{\"steps\":[{\"analysis\":{\"provider\":{\"web\":{\"url\":\"http://w\"}},"
         "\"successCondition\":\"result == true\"}}]}}", "needs a 'jsonPath'"},
        {"{\"canary\":{\"steps\":[{\"analysis\":{\"provider\":{\"web\":{\"url\":\"http://w\"}},"
         "\"count\":0}}]}}", "'count' must be an integer >= 1"},
        {"{\"blueGreen\":{\"autoPromotionSeconds\":-1}}", "'autoPromotionSeconds' must be"},
        {"{\"blueGreen\":{\"previewService\":\"x\"}}", "blueGreen: unknown key 'previewService'"},
        {"{\"canary\":{\"steps\":[{\"setWeight\":1}]},\"blueGreen\":{}}", "one of 'canary' or"},
        {"{\"canary\":{\"trafficRouting\":[],\"steps\":[{\"setWeight\":1}]}}",
         "canary.trafficRouting must be an object"},
        {"{\"canary\":{\"trafficRouting\":{\"istio\":{}},\"steps\":[{\"setWeight\":1}]}}",
         "canary.trafficRouting: unknown key 'istio'"},
        {"{\"canary\":{\"trafficRouting\":{},\"steps\":[{\"setWeight\":1}]}}",
         "canary.trafficRouting needs 'nginx'"},
        {"{\"canary\":{\"trafficRouting\":{\"nginx\":{}},\"steps\":[{\"setWeight\":1}]}}",
         "'stableIngress' must name an Ingress"},
        {"{\"canary\":{\"trafficRouting\":{\"nginx\":{\"stableIngress\":\"Web\"}},"
         "\"steps\":[{\"setWeight\":1}]}}", "'stableIngress' must name an Ingress"},
        {"{\"canary\":{\"trafficRouting\":{\"nginx\":{\"stableIngress\":\"web\","
         "\"annotationPrefix\":\"x\"}},\"steps\":[{\"setWeight\":1}]}}",
         "canary.trafficRouting.nginx: unknown key 'annotationPrefix'"},
        {"{\"canary\":{\"trafficRouting\":{\"nginx\":{\"stableIngress\":\"web\"}},"
         "\"steps\":[{\"setWeight\":101}]}}", "canary step 1: setWeight must be 0..100"},
    };
    char errstr[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *got = rf_strategy_parse_text(cases[i].in, errstr, sizeof(errstr));
        if (got)
            fail_msg("case %zu: accepted %s", i, cases[i].in);
        if (!strstr(errstr, cases[i].error))
            fail_msg("case %zu: error '%s' lacks '%s'", i, errstr, cases[i].error);
    }
}

static void test_canary_replicas(void **state)
{
    /* Argo Rollouts' docs: 10 replicas at 10% -> 1 and 9; at 41% -> 4 and 6 (nearest). */
    static const struct {
        int total, weight, canary, stable;
    } cases[] = {
        {10, 10, 1, 9}, {10, 41, 4, 6}, {10, 45, 5, 5}, {5, 20, 1, 4}, {5, 50, 3, 2},
        {5, 1, 1, 4},   {5, 0, 0, 5},   {5, 100, 5, 0}, {1, 20, 1, 0}, {0, 50, 0, 0},
        {3, 33, 1, 2},  {4, 10, 1, 3},  {100, 1, 1, 99},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int c = -1, s = -1;
        rf_strategy_canary_replicas(cases[i].total, cases[i].weight, &c, &s);
        if (c != cases[i].canary || s != cases[i].stable)
            fail_msg("case %zu: %d at %d%% -> %d + %d, want %d + %d", i, cases[i].total,
                     cases[i].weight, c, s, cases[i].canary, cases[i].stable);
    }
}

static void test_canary_replicas_routed(void **state)
{
    /* Argo Rollouts' trafficWeightToReplicas rounds up; the stable one stays whole. */
    static const struct {
        int total, weight, canary, stable;
    } cases[] = {
        {5, 20, 1, 5},  {5, 60, 3, 5},  {5, 100, 5, 5}, {5, 0, 0, 5},  {5, 1, 1, 5},
        {10, 41, 5, 10}, {10, 45, 5, 10}, {4, 10, 1, 4}, {0, 50, 0, 0}, {5, 150, 5, 5},
        {5, -3, 0, 5},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int c = -1, s = -1;
        rf_strategy_canary_replicas_routed(cases[i].total, cases[i].weight, &c, &s);
        if (c != cases[i].canary || s != cases[i].stable)
            fail_msg("case %zu: %d at %d%% -> %d + %d, want %d + %d", i, cases[i].total,
                     cases[i].weight, c, s, cases[i].canary, cases[i].stable);
    }
}

static void test_durations(void **state)
{
    static const struct {
        const char *in;
        long long ms;
    } cases[] = {
        {"\"30s\"", 30000}, {"\"5m\"", 300000}, {"\"1h\"", 3600000}, {"\"250ms\"", 250},
        {"\"12\"", 12000},  {"7", 7000},        {"\"5d\"", -1},      {"\"-1s\"", -1},
        {"\"\"", -1},       {"-3", -1},         {"true", -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_loads(cases[i].in, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        if (rf_strategy_duration_ms(v) != cases[i].ms)
            fail_msg("case %zu: %s -> %lld", i, cases[i].in, rf_strategy_duration_ms(v));
        json_decref(v);
    }
}

static void test_conditions(void **state)
{
    static const struct {
        const char *cond, *result;
        int expect;
    } cases[] = {
        {"result < 0.01", "0.005", 1},      {"result < 0.01", "\"0.5\"", 0},
        {"result[0] <= 1", "1", 1},          {"result > 2", "\"3\"", 1},
        {"result >= 2", "1.5", 0},           {"result == 'ok'", "\"ok\"", 1},
        {"result == \"ok\"", "\"bad\"", 0},  {"result != 'ok'", "\"bad\"", 1},
        {"result == true", "true", 1},       {"result == true", "false", 0},
        {"result < 1", "\"NaN\"", -1},       {"result < 1", "\"abc\"", -1},
        {"result < 'a'", "\"b\"", -1},       {"value < 1", "0", -1},
        {"result <", "0", -1},               {"  result==0  ", "0", 1},
    };
    char errstr[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *r = json_loads(cases[i].result, JSON_DECODE_ANY, NULL);
        int got = rf_analysis_condition(cases[i].cond, r, errstr, sizeof(errstr));
        if (got != cases[i].expect)
            fail_msg("case %zu: '%s' on %s -> %d (%s)", i, cases[i].cond, cases[i].result, got,
                     got < 0 ? errstr : "");
        json_decref(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_strategies), cmocka_unit_test(test_invalid_strategies),
        cmocka_unit_test(test_canary_replicas),  cmocka_unit_test(test_canary_replicas_routed),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_conditions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
