/* Unit tests of kubesim's pure logic: intstr rounding, fenceposts, selectors, patches, pod states. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ks_ctrl.h"
#include "ks_patch.h"
#include "ks_rules.h"
#include "ks_sel.h"

#include <stdlib.h>
#include <string.h>

static void test_scaled_rounding(void **state)
{
    static const struct {
        const char *value; /* JSON */
        int total, round_up, want;
    } cases[] = {
        {"\"25%\"", 10, 1, 3}, {"\"25%\"", 10, 0, 2}, {"\"25%\"", 4, 1, 1},  {"\"25%\"", 4, 0, 1},
        {"\"25%\"", 1, 1, 1},  {"\"25%\"", 1, 0, 0},  {"\"50%\"", 3, 0, 1},  {"\"50%\"", 3, 1, 2},
        {"2", 10, 1, 2},       {"0", 10, 0, 0},       {"\"100%\"", 7, 0, 7}, {"\"3\"", 10, 0, 3},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_loads(cases[i].value, JSON_DECODE_ANY, NULL);
        assert_int_equal(ks_ctrl_scaled(v, cases[i].total, cases[i].round_up, -1), cases[i].want);
        json_decref(v);
    }
    assert_int_equal(ks_ctrl_scaled(NULL, 10, 1, 7), 7);
}

static void test_fenceposts(void **state)
{
    static const struct {
        const char *rolling;
        int replicas, surge, unavailable;
    } cases[] = {
        {"{\"maxSurge\":\"25%\",\"maxUnavailable\":\"25%\"}", 10, 3, 2},
        {"{\"maxSurge\":\"25%\",\"maxUnavailable\":\"25%\"}", 1, 1, 0},
        {"{\"maxSurge\":0,\"maxUnavailable\":0}", 5, 0, 1}, /* both zero: unavailable 1 */
        {"{\"maxSurge\":1,\"maxUnavailable\":\"0%\"}", 3, 1, 0},
        {"{}", 3, 0, 1},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *r = json_loads(cases[i].rolling, 0, NULL);
        int s, u;
        ks_ctrl_fenceposts(r, cases[i].replicas, &s, &u);
        assert_int_equal(s, cases[i].surge);
        assert_int_equal(u, cases[i].unavailable);
        json_decref(r);
    }
}

static void test_template_hash(void **state)
{
    json_t *a = json_loads("{\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"x:1\"}]}}", 0, NULL);
    json_t *b = json_loads("{\"spec\":{\"containers\":[{\"image\":\"x:1\",\"name\":\"a\"}]}}", 0, NULL);
    json_t *c = json_loads("{\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"x:2\"}]}}", 0, NULL);
    char ha[32], hb[32], hc[32], hcol[32];

    (void)state;
    ks_ctrl_template_hash(a, 0, ha, sizeof(ha));
    ks_ctrl_template_hash(b, 0, hb, sizeof(hb));
    ks_ctrl_template_hash(c, 0, hc, sizeof(hc));
    ks_ctrl_template_hash(a, 1, hcol, sizeof(hcol));
    assert_string_equal(ha, hb); /* key order does not matter */
    assert_string_not_equal(ha, hc);
    assert_string_not_equal(ha, hcol);
    assert_true(strspn(ha, "bcdfghjklmnpqrstvwxz2456789") == strlen(ha));
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static void test_label_selectors(void **state)
{
    static const struct {
        const char *sel, *labels;
        int want;
    } cases[] = {
        {"", "{}", 1},
        {"app=web", "{\"app\":\"web\"}", 1},
        {"app==web", "{\"app\":\"web\"}", 1},
        {"app=web", "{\"app\":\"db\"}", 0},
        {"app!=web", "{}", 1},
        {"app=web,tier=fe", "{\"app\":\"web\",\"tier\":\"fe\"}", 1},
        {"app=web,tier=fe", "{\"app\":\"web\"}", 0},
        {"env in (a, b)", "{\"env\":\"b\"}", 1},
        {"env notin (a,b)", "{\"env\":\"b\"}", 0},
        {"env", "{\"env\":\"\"}", 1},
        {"!env", "{\"env\":\"x\"}", 0},
    };
    char err[128];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ks_sel_t *s = ks_sel_parse(cases[i].sel, err, sizeof(err));
        json_t *l = json_loads(cases[i].labels, 0, NULL);
        assert_non_null(s);
        assert_int_equal(ks_sel_match(s, l), cases[i].want);
        ks_sel_destroy(s);
        json_decref(l);
    }
    assert_null(ks_sel_parse("env in a", err, sizeof(err)));
}

static void test_merge_patch(void **state)
{
    static const struct {
        const char *target, *patch, *want;
        int strategic;
    } cases[] = {
        {"{\"a\":1,\"b\":{\"c\":2}}", "{\"b\":{\"c\":null,\"d\":3}}", "{\"a\":1,\"b\":{\"d\":3}}", 0},
        {"{\"l\":[1,2]}", "{\"l\":[3]}", "{\"l\":[3]}", 0},
        {"{\"c\":[{\"name\":\"a\",\"image\":\"x\"},{\"name\":\"b\",\"image\":\"y\"}]}",
         "{\"c\":[{\"name\":\"b\",\"image\":\"z\"}]}",
         "{\"c\":[{\"name\":\"b\",\"image\":\"z\"},{\"name\":\"a\",\"image\":\"x\"}]}", 1},
        {"{\"c\":[{\"name\":\"a\",\"image\":\"x\"}]}", "{\"c\":[{\"name\":\"b\",\"image\":\"z\"}]}",
         "{\"c\":[{\"name\":\"b\",\"image\":\"z\"}]}", 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *t = json_loads(cases[i].target, 0, NULL), *p = json_loads(cases[i].patch, 0, NULL);
        json_t *w = json_loads(cases[i].want, 0, NULL), *got = ks_merge_patch(t, p, cases[i].strategic);
        assert_true(json_equal(got, w));
        json_decref(t);
        json_decref(p);
        json_decref(w);
        json_decref(got);
    }
}

static void test_apply_conflict_and_removal(void **state)
{
    json_t *cfg1 = json_loads("{\"metadata\":{\"name\":\"d\",\"labels\":{\"a\":\"1\",\"b\":\"2\"}},"
                              "\"spec\":{\"replicas\":3}}", 0, NULL);
    json_t *cfg2 = json_loads("{\"metadata\":{\"name\":\"d\",\"labels\":{\"a\":\"1\"}},"
                              "\"spec\":{\"replicas\":3}}", 0, NULL);
    json_t *conflicts = NULL, *live, *next, *scaled;
    char err[512];

    (void)state;
    live = ks_apply(NULL, cfg1, "ci", "apps/v1", 0, &conflicts, err, sizeof(err));
    assert_non_null(live);
    /* dropping a label from the applied config removes it */
    next = ks_apply(live, cfg2, "ci", "apps/v1", 0, &conflicts, err, sizeof(err));
    assert_non_null(next);
    assert_null(json_object_get(json_object_get(json_object_get(next, "metadata"), "labels"), "b"));
    /* another manager changes spec.replicas, then ci's apply of 3 conflicts */
    scaled = json_deep_copy(next);
    json_object_set_new(json_object_get(scaled, "spec"), "replicas", json_integer(5));
    ks_apply_record_update(scaled, next, "kubectl-scale", "apps/v1");
    assert_null(ks_apply(scaled, cfg2, "ci", "apps/v1", 0, &conflicts, err, sizeof(err)));
    assert_string_equal(err, "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas");
    json_decref(conflicts);
    conflicts = NULL;
    json_t *forced = ks_apply(scaled, cfg2, "ci", "apps/v1", 1, &conflicts, err, sizeof(err));
    assert_non_null(forced);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(forced, "spec"), "replicas")), 3);
    json_decref(forced);
    json_decref(scaled);
    json_decref(next);
    json_decref(live);
    json_decref(cfg1);
    json_decref(cfg2);
}

static void test_yaml_scalars(void **state)
{
    static const char doc[] = "a: 1\nb: \"1\"\nc: true\nd: ~\ne: 1.5\nf: web:1.0\ng: [x, 2]\n";
    char err[256];
    json_t *j = ks_yaml_parse(doc, strlen(doc), err, sizeof(err));
    json_t *want = json_loads("{\"a\":1,\"b\":\"1\",\"c\":true,\"d\":null,\"e\":1.5,\"f\":\"web:1.0\",\"g\":[\"x\",2]}", 0, NULL);

    (void)state;
    assert_non_null(j);
    assert_true(json_equal(j, want));
    json_decref(j);
    json_decref(want);
    assert_null(ks_yaml_parse("a: [1,\n", 7, err, sizeof(err)));
}

static void test_glob(void **state)
{
    static const struct {
        const char *pattern, *s;
        int want;
    } cases[] = {
        {"*", "anything", 1},          {"*:bad*", "repo/app:bad-1", 1}, {"*:bad*", "repo/bad:1", 0},
        {"app:?", "app:1", 1},         {"app:?", "app:12", 0},          {"repo/*", "repo/x:1", 1},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(ks_glob_match(cases[i].pattern, cases[i].s), cases[i].want);
}

static void test_pod_states(void **state)
{
    ks_rule_t normal = {.image = (char *)"*", .ready_after_ms = 500, .crash_after_ms = -1};
    ks_rule_t bad = {.image = (char *)"*", .waiting = (char *)"ImagePullBackOff", .crash_after_ms = -1};
    ks_rule_t crash = {.image = (char *)"*", .ready_after_ms = 1000, .crash_after_ms = 3000};
    ks_cstate_t cs;

    (void)state;
    ks_rules_state(&normal, 0, &cs);
    assert_string_equal(cs.waiting, "ContainerCreating");
    ks_rules_state(&normal, 300, &cs);
    assert_true(cs.running && !cs.ready);
    assert_int_equal(cs.next_change, 500);
    ks_rules_state(&normal, 600, &cs);
    assert_true(cs.ready);
    assert_int_equal(cs.next_change, -1);
    ks_rules_state(&bad, 100000, &cs);
    assert_string_equal(cs.waiting, "ImagePullBackOff");
    assert_false(cs.running);
    /* crash: run 200..3200, back-off 10 s, run 13200..16200, back-off 20 s, ... */
    ks_rules_state(&crash, 1500, &cs);
    assert_true(cs.ready);
    ks_rules_state(&crash, 4000, &cs);
    assert_string_equal(cs.waiting, "CrashLoopBackOff");
    assert_int_equal(cs.restarts, 1);
    assert_int_equal(cs.next_change, 13200);
    ks_rules_state(&crash, 14000, &cs);
    assert_true(cs.running);
    assert_int_equal(cs.restarts, 1);
    ks_rules_state(&crash, 17000, &cs);
    assert_int_equal(cs.restarts, 2);
    assert_int_equal(cs.backoff_ms, 20000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scaled_rounding),   cmocka_unit_test(test_fenceposts),
        cmocka_unit_test(test_template_hash),     cmocka_unit_test(test_label_selectors),
        cmocka_unit_test(test_merge_patch),       cmocka_unit_test(test_apply_conflict_and_removal),
        cmocka_unit_test(test_yaml_scalars),      cmocka_unit_test(test_glob),
        cmocka_unit_test(test_pod_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
