/* Unit tests of kubesim's logic: intstr rounding, fenceposts, selectors, patches, pod states, the store's shared versions and Event expiry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ks_api.h"
#include "ks_ctrl.h"
#include "ks_lru.h"
#include "ks_patch.h"
#include "ks_rules.h"
#include "ks_sel.h"
#include "ks_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    /* FNV-1a of the key-sorted compact JSON: the names of ReplicaSets made before stay */
    assert_string_equal(ha, "7449bbdf48");
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

/* Field paths into lists by key (k:{"name":"c"}, k:{"containerPort":-9}, a key with an
 * escape): the conflict names the element, and an element dropped from the config and
 * owned by nobody else goes. */
static void test_apply_keyed_list_fields(void **state)
{
    json_t *cfg1 = json_loads(
        "{\"metadata\":{\"name\":\"d\"},\"spec\":{\"template\":{\"spec\":{\"containers\":[{"
        "\"name\":\"c\",\"image\":\"i:1\",\"ports\":[{\"containerPort\":80},{\"containerPort\":-9}],"
        "\"env\":[{\"name\":\"E\\\\1\",\"value\":\"v\"}]}]}}}}", 0, NULL);
    json_t *cfg2 = json_loads(
        "{\"metadata\":{\"name\":\"d\"},\"spec\":{\"template\":{\"spec\":{\"containers\":[{"
        "\"name\":\"c\",\"image\":\"i:2\",\"ports\":[{\"containerPort\":80}],"
        "\"env\":[{\"name\":\"E\\\\1\",\"value\":\"v2\"}]}]}}}}", 0, NULL);
    json_t *conflicts = NULL, *live, *upd, *c, *forced;
    char err[512];

    (void)state;
    live = ks_apply(NULL, cfg1, "ci", "apps/v1", 0, &conflicts, err, sizeof(err));
    assert_non_null(live);
    upd = json_deep_copy(live);
    c = json_array_get(ks_jget(upd, "spec.template.spec.containers"), 0);
    json_object_set_new(c, "image", json_string("i:other"));
    json_object_set_new(json_array_get(json_object_get(c, "env"), 0), "value", json_string("o"));
    ks_apply_record_update(upd, live, "other", "apps/v1");
    assert_null(ks_apply(upd, cfg2, "ci", "apps/v1", 0, &conflicts, err, sizeof(err)));
    assert_string_equal(err, "Apply failed with 2 conflicts: conflicts with \"other\":\n"
                             "- .spec.template.spec.containers[name=\"c\"].image\n"
                             "- .spec.template.spec.containers[name=\"c\"].env[name=\"E\\\\1\"].value");
    json_decref(conflicts);
    conflicts = NULL;
    forced = ks_apply(upd, cfg2, "ci", "apps/v1", 1, &conflicts, err, sizeof(err));
    assert_non_null(forced);
    c = json_array_get(ks_jget(forced, "spec.template.spec.containers"), 0);
    assert_string_equal(ks_jstr(c, "image"), "i:2");
    assert_string_equal(ks_jstr(json_array_get(json_object_get(c, "env"), 0), "value"), "v2");
    assert_int_equal(json_array_size(json_object_get(c, "ports")), 1);
    assert_int_equal(ks_jint(json_array_get(json_object_get(c, "ports"), 0), "containerPort", 0), 80);
    json_decref(forced);
    json_decref(upd);
    json_decref(live);
    json_decref(cfg1);
    json_decref(cfg2);
}

/* The fieldsV1 tree of manager's Apply entry in obj's managedFields. */
static json_t *applied_tree(const json_t *obj, const char *manager)
{
    size_t i;
    json_t *e, *tree = NULL;

    json_array_foreach(ks_jget(obj, "metadata.managedFields"), i, e) {
        if (strcmp(ks_jstr(e, "manager") ?: "", manager) == 0 &&
            strcmp(ks_jstr(e, "operation") ?: "", "Apply") == 0)
            tree = json_object_get(e, "fieldsV1");
    }
    return tree;
}

/* A second apply by the same manager keeps its last fieldsV1 tree (the same object) only
 * when the new config's field set is the same, in the same order; either way the tree is
 * the one a first apply of that config makes. */
static void test_apply_same_field_set_keeps_tree(void **state)
{
    static const struct {
        const char *cfg1, *cfg2;
        int kept;
    } cases[] = {
        /* values only */
        {"{\"metadata\":{\"name\":\"d\",\"labels\":{\"a\":\"1\"}},\"spec\":{\"replicas\":3,"
         "\"c\":[{\"name\":\"x\",\"image\":\"i:1\",\"ports\":[{\"containerPort\":80}]}]}}",
         "{\"metadata\":{\"name\":\"d\",\"labels\":{\"a\":\"2\"}},\"spec\":{\"replicas\":4,"
         "\"c\":[{\"name\":\"x\",\"image\":\"i:2\",\"ports\":[{\"containerPort\":80}]}]}}", 1},
        /* skipped members and apiVersion, kind, status: not fields */
        {"{\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"d\"},\"spec\":{\"a\":1}}",
         "{\"metadata\":{\"name\":\"e\",\"namespace\":\"n\"},\"kind\":\"K\",\"spec\":{\"a\":2},"
         "\"status\":{\"b\":1}}", 1},
        /* a metadata of name only is no field, an empty one is one */
        {"{\"spec\":{\"a\":1}}", "{\"metadata\":{\"name\":\"d\"},\"spec\":{\"a\":1}}", 1},
        {"{\"metadata\":{\"name\":\"d\"},\"spec\":{\"a\":1}}", "{\"spec\":{\"a\":1}}", 1},
        {"{\"metadata\":{\"name\":\"d\"},\"spec\":{\"a\":1}}", "{\"metadata\":{},\"spec\":{\"a\":1}}", 0},
        /* order, a field more or less, a value that becomes an object */
        {"{\"spec\":{\"a\":1,\"b\":2}}", "{\"spec\":{\"b\":2,\"a\":1}}", 0},
        {"{\"spec\":{\"a\":1}}", "{\"spec\":{\"a\":1,\"b\":2}}", 0},
        {"{\"spec\":{\"a\":1,\"b\":2}}", "{\"spec\":{\"a\":1}}", 0},
        {"{\"spec\":{\"a\":1}}", "{\"spec\":{\"a\":{\"x\":1}}}", 0},
        {"{\"spec\":{\"a\":{}}}", "{\"spec\":{\"a\":5}}", 1},
        /* list elements: added, dropped, renamed, reordered, twice the same key, atomic */
        {"{\"spec\":{\"c\":[{\"name\":\"x\"}]}}", "{\"spec\":{\"c\":[{\"name\":\"x\"},{\"name\":\"y\"}]}}", 0},
        {"{\"spec\":{\"c\":[{\"name\":\"x\"},{\"name\":\"y\"}]}}", "{\"spec\":{\"c\":[{\"name\":\"x\"}]}}", 0},
        {"{\"spec\":{\"c\":[{\"name\":\"x\"}]}}", "{\"spec\":{\"c\":[{\"name\":\"z\"}]}}", 0},
        {"{\"spec\":{\"c\":[{\"name\":\"x\"},{\"name\":\"y\"}]}}",
         "{\"spec\":{\"c\":[{\"name\":\"y\"},{\"name\":\"x\"}]}}", 0},
        {"{\"spec\":{\"c\":[{\"name\":\"x\",\"v\":1}]}}",
         "{\"spec\":{\"c\":[{\"name\":\"x\",\"v\":1},{\"name\":\"x\",\"w\":2}]}}", 0},
        {"{\"spec\":{\"c\":[{\"name\":\"x\",\"v\":1},{\"name\":\"x\",\"w\":2}]}}",
         "{\"spec\":{\"c\":[{\"name\":\"x\",\"v\":1},{\"name\":\"x\",\"w\":2}]}}", 0},
        {"{\"spec\":{\"c\":[{\"name\":\"x\",\"v\":1}]}}", "{\"spec\":{\"c\":[{\"name\":\"x\",\"v\":2}]}}", 1},
        {"{\"spec\":{\"c\":[{\"name\":\"x\",\"v\":1}]}}", "{\"spec\":{\"c\":[{\"name\":\"x\",\"w\":1}]}}", 0},
        {"{\"spec\":{\"c\":[{\"name\":\"x\"}]}}", "{\"spec\":{\"c\":[{\"v\":1}]}}", 0},
        {"{\"spec\":{\"c\":[1,2]}}", "{\"spec\":{\"c\":[3]}}", 1},
        {"{\"spec\":{\"c\":[{\"name\":\"x\"}]}}", "{\"spec\":{\"c\":[]}}", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *cfg1 = json_loads(cases[i].cfg1, 0, NULL), *cfg2 = json_loads(cases[i].cfg2, 0, NULL);
        json_t *conflicts = NULL, *live, *next, *fresh;
        char err[512], *got, *want;
        live = ks_apply(NULL, cfg1, "ci", "apps/v1", 0, &conflicts, err, sizeof(err));
        next = ks_apply(live, cfg2, "ci", "apps/v1", 0, &conflicts, err, sizeof(err));
        fresh = ks_apply(NULL, cfg2, "ci", "apps/v1", 0, &conflicts, err, sizeof(err));
        assert_non_null(live);
        assert_non_null(next);
        assert_non_null(fresh);
        got = json_dumps(applied_tree(next, "ci"), JSON_COMPACT | JSON_ENCODE_ANY);
        want = json_dumps(applied_tree(fresh, "ci"), JSON_COMPACT | JSON_ENCODE_ANY);
        if (!got || !want || strcmp(got, want) != 0 ||
            (applied_tree(next, "ci") == applied_tree(live, "ci")) != cases[i].kept)
            fail_msg("case %zu: %s, want %s (kept %d)", i, got ? got : "none",
                     want ? want : "none", cases[i].kept);
        free(got);
        free(want);
        json_decref(fresh);
        json_decref(next);
        json_decref(live);
        json_decref(cfg1);
        json_decref(cfg2);
    }
}

/* Random trees for the JSON comparisons below (the plain parse itself, now the shared
 * library's rf_json_load_plain, is checked against jansson by tests/unit/test_json.c). */
static unsigned plain_rand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 16) & 0x7fff;
}

static json_t *plain_random_tree(unsigned *seed, int depth)
{
    static const char *const strs[] = {"", "web", "a\"b", "back\\slash", "new\nline", "tab\t",
                                       "sl/ash", "caf\xc3\xa9", "\x01", "k", "nginx:1.25",
                                       "{\"x\":1}", "\xe2\x82\xac", "-"};
    unsigned r = plain_rand(seed) % (depth > 4 ? 6 : 9);
    json_t *v;

    switch (r) {
    case 0: return json_string(strs[plain_rand(seed) % (sizeof(strs) / sizeof(strs[0]))]);
    case 1: return json_integer((json_int_t)plain_rand(seed) - 16000);
    case 2: return json_integer((json_int_t)plain_rand(seed) * 1000000000000LL * (plain_rand(seed) % 2 ? 1 : -1));
    case 3: return plain_rand(seed) % 4 ? json_true() : json_null();
    case 4: return plain_rand(seed) % 8 ? json_false() : json_real(plain_rand(seed) / 7.0);
    case 5: return json_integer(0);
    case 6:
    case 7:
        v = json_object();
        for (unsigned i = 0, n = plain_rand(seed) % 6; i < n; i++) {
            char key[32];
            snprintf(key, sizeof(key), "%s%u", strs[plain_rand(seed) % 8], plain_rand(seed) % 5);
            json_object_set_new(v, key, plain_random_tree(seed, depth + 1));
        }
        return v;
    default:
        v = json_array();
        for (unsigned i = 0, n = plain_rand(seed) % 5; i < n; i++)
            json_array_append_new(v, plain_random_tree(seed, depth + 1));
        return v;
    }
}

/* A copy of t with every object's members in another order when shuffle is set (the
 * same order else), and one value somewhere changed when *change reaches 0 on the way. */
static json_t *equal_variant(const json_t *t, unsigned *seed, int shuffle, int *change)
{
    if (*change >= 0 && (*change)-- == 0)
        return json_is_integer(t) ? json_integer(json_integer_value(t) + 1) : json_string("changed");
    if (json_is_object(t)) {
        const char *keys[64];
        size_t n = 0;
        const char *key;
        json_t *v, *out = json_object();
        json_object_foreach((json_t *)t, key, v) {
            if (n < 64)
                keys[n++] = key;
        }
        for (size_t i = 0; shuffle && n > 1 && i < n; i++) {
            size_t j = plain_rand(seed) % n;
            const char *k = keys[i];
            keys[i] = keys[j];
            keys[j] = k;
        }
        for (size_t i = 0; i < n; i++)
            json_object_set_new(out, keys[i], equal_variant(json_object_get(t, keys[i]), seed, shuffle, change));
        return out;
    }
    if (json_is_array(t)) {
        json_t *out = json_array();
        for (size_t i = 0; i < json_array_size(t); i++)
            json_array_append_new(out, equal_variant(json_array_get(t, i), seed, shuffle, change));
        return out;
    }
    return json_incref((json_t *)t);
}

/* ks_json_equal answers as json_equal: same order, another order, one value changed, a
 * member more, shared members, NULL. */
static void test_json_equal_as_jansson(void **state)
{
    unsigned seed = 7;

    (void)state;
    assert_false(ks_json_equal(NULL, NULL));
    for (int i = 0; i < 2000; i++) {
        json_t *t = plain_random_tree(&seed, 0);
        for (int shuffle = 0; shuffle <= 1; shuffle++) {
            for (int at = -1; at < 12; at++) {
                int change = at;
                json_t *v = equal_variant(t, &seed, shuffle, &change);
                if (ks_json_equal(t, v) != json_equal(t, v) || ks_json_equal(v, t) != json_equal(v, t))
                    fail_msg("tree %d shuffle %d change %d: %d, jansson %d", i, shuffle, at,
                             ks_json_equal(t, v), json_equal(t, v));
                if (at < 0 && !ks_json_equal(t, v))
                    fail_msg("tree %d shuffle %d: not equal to its copy", i, shuffle);
                if (json_is_object(v)) {
                    json_object_set_new(v, "extra member", json_true());
                    assert_int_equal(ks_json_equal(t, v), json_equal(t, v));
                    assert_int_equal(ks_json_equal(v, t), json_equal(v, t));
                }
                json_decref(v);
            }
        }
        assert_true(ks_json_equal(t, t));
        json_decref(t);
    }
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

/* A JSON body reads the same through jansson as through the YAML path it used to take
 * (a leading comment forces that path): values, types and member order. */
static void test_json_bodies_parse_as_yaml_does(void **state)
{
    static const char *const bodies[] = {
        "{\"a\":1,\"b\":-0,\"c\":1.5,\"d\":1e3,\"e\":true,\"f\":null,\"g\":\"x\\u00e9\\n\"}",
        "  {\"z\":{\"y\":[1,\"2\",{\"k\":false}]},\"a\":\"10\",\"m\":\"on\"}",
        "[1, 2, {\"a\": []}]",
        "{\"big\":99999999999999999999}", /* jansson refuses it: the YAML path reads a real */
        "{\"dup\":1,\"dup\":2}",
    };
    char err[256], yaml[512];

    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        json_t *fast = ks_yaml_parse(bodies[i], strlen(bodies[i]), err, sizeof(err));
        json_t *slow;
        char *a, *b;
        snprintf(yaml, sizeof(yaml), "# yaml\n%s", bodies[i]);
        slow = ks_yaml_parse(yaml, strlen(yaml), err, sizeof(err));
        assert_non_null(fast);
        assert_non_null(slow);
        a = json_dumps(fast, JSON_COMPACT | JSON_ENCODE_ANY);
        b = json_dumps(slow, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_string_equal(a, b);
        free(a);
        free(b);
        json_decref(fast);
        json_decref(slow);
    }
}

/* The merged object is a tree of its own, members in the target's order then the patch's. */
static void test_merge_patch_copies_and_keeps_order(void **state)
{
    json_t *t = json_loads("{\"a\":{\"x\":1},\"b\":{\"y\":2},\"c\":[{\"name\":\"n\",\"v\":1},"
                           "{\"name\":\"m\",\"v\":2}],\"d\":3}", 0, NULL);
    json_t *p = json_loads("{\"e\":5,\"b\":{\"z\":3},\"c\":[{\"name\":\"n\",\"v\":9}],\"d\":null}",
                           0, NULL);
    json_t *before = json_deep_copy(t), *got = ks_merge_patch(t, p, 1);
    char *txt = json_dumps(got, JSON_COMPACT);

    (void)state;
    assert_string_equal(txt, "{\"a\":{\"x\":1},\"b\":{\"y\":2,\"z\":3},\"c\":[{\"name\":\"n\",\"v\":9},"
                             "{\"name\":\"m\",\"v\":2}],\"e\":5}");
    assert_ptr_not_equal(json_object_get(got, "a"), json_object_get(t, "a"));
    assert_ptr_not_equal(json_array_get(json_object_get(got, "c"), 1),
                         json_array_get(json_object_get(t, "c"), 1));
    json_object_set_new(json_object_get(got, "a"), "x", json_integer(7));
    json_object_set_new(json_array_get(json_object_get(got, "c"), 1), "v", json_integer(7));
    assert_true(json_equal(t, before));
    free(txt);
    json_decref(t);
    json_decref(p);
    json_decref(before);
    json_decref(got);
}

/* A new version shares the members it does not change; copying on write leaves the old one. */
static void test_obj_copy_shares_until_copied_on_write(void **state)
{
    json_t *o = json_loads("{\"metadata\":{\"name\":\"a\",\"annotations\":{\"k\":\"1\"}},"
                           "\"spec\":{\"replicas\":1}}", 0, NULL);
    json_t *before = json_deep_copy(o), *c = ks_obj_copy(o);

    (void)state;
    assert_ptr_not_equal(json_object_get(c, "metadata"), json_object_get(o, "metadata"));
    assert_ptr_equal(json_object_get(c, "spec"), json_object_get(o, "spec"));
    assert_ptr_equal(ks_jget(c, "metadata.annotations"), ks_jget(o, "metadata.annotations"));
    ks_jcow(c, "spec");
    ks_jset(c, "spec.replicas", json_integer(3));
    json_object_set_new(ks_jcow(json_object_get(c, "metadata"), "annotations"), "k", json_string("2"));
    json_object_set_new(json_object_get(c, "metadata"), "resourceVersion", json_string("9"));
    assert_true(json_equal(o, before));
    assert_int_equal(ks_jint(c, "spec.replicas", 0), 3);
    assert_string_equal(ks_jstr(json_object_get(ks_jget(c, "metadata"), "annotations"), "k"), "2");
    assert_null(ks_jcow(c, "missing"));
    json_decref(c);
    json_decref(o);
    json_decref(before);
}

/* Watch lines are written when first read, as json_dumps wrote them for every event. */
static void test_store_event_line_written_on_first_use(void **state)
{
    ks_store_t *st = ks_store_new(4);
    json_t *o = json_loads("{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"data\":{\"k\":\"v\"}}",
                           0, NULL);
    ks_event_t *e;
    const char *line;
    size_t len;
    char *want;

    (void)state;
    ks_store_lock(st);
    ks_store_put(st, KS_CONFIGMAP, o);
    e = ks_store_ring_at(st, KS_CONFIGMAP, 0);
    assert_non_null(e);
    assert_null(e->line);
    line = ks_store_event_line(st, e, &len);
    assert_ptr_equal(ks_store_event_line(st, e, &len), line);
    {
        json_t *wrap = json_pack("{s:s, s:O}", "type", "ADDED", "object", e->obj);
        char *txt = json_dumps(wrap, JSON_COMPACT);
        assert_true(asprintf(&want, "%s\n", txt) > 0);
        free(txt);
        json_decref(wrap);
    }
    assert_string_equal(line, want);
    assert_int_equal(len, strlen(want));
    free(want);
    ks_store_unlock(st);
    ks_store_destroy(st);
}

static const char *query_none(void *cls, const char *key)
{
    (void)cls;
    return strcmp(key, "fieldManager") == 0 ? "unit" : NULL;
}

static int api_apply(ks_api_t *api, const char *path, const char *body)
{
    ks_req_t req = {"PATCH", path, query_none, NULL, "application/apply-patch+yaml", NULL,
                    "unit/1", body, strlen(body)};
    ks_resp_t resp;
    int status;

    memset(&resp, 0, sizeof(resp));
    ks_api_handle(api, &req, &resp);
    status = resp.status;
    rf_buf_release(&resp.body);
    return status;
}

#define DEPLOY_PATH "/apis/apps/v1/namespaces/default/deployments/web"
#define DEPLOY_BODY                                                                                \
    "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\"},"         \
    "\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"template\":{"     \
    "\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"name\":\"c\","      \
    "\"image\":\"%s\"}]}}}}"

/* Store lock held: the rollout of web to image is complete and the old pods are gone. */
static int rolled_out(ks_store_t *st, const char *image)
{
    ks_obj_t *d = ks_store_get(st, KS_DEPLOYMENT, "default", "web");
    size_t npods;
    ks_obj_t **pods = ks_store_list(st, KS_POD, "default", &npods);
    int ok = d && strcmp(ks_jstr(json_array_get(ks_jget(d->json, "spec.template.spec.containers"), 0),
                                 "image") ?: "", image) == 0 &&
             ks_jint(d->json, "status.updatedReplicas", 0) == 1 &&
             ks_jint(d->json, "status.availableReplicas", 0) == 1 &&
             ks_jint(d->json, "status.replicas", 0) == 1 &&
             ks_jint(d->json, "status.observedGeneration", 0) == ks_jint(d->json, "metadata.generation", -1) &&
             npods == 1;

    free(pods);
    return ok;
}

static void wait_rolled_out(ks_store_t *st, const char *image)
{
    int64_t deadline = ks_now_ms() + 10000;

    ks_store_lock(st);
    /* the condition reads the Deployment and its pods; a pod's change wakes no waiter on
     * Deployments, so the wait also ends every 100 ms to look again */
    while (!rolled_out(st, image) && ks_now_ms() < deadline) {
        int64_t step = ks_now_ms() + 100;
        ks_store_wait(st, KS_DEPLOYMENT, step < deadline ? step : deadline);
    }
    assert_true(rolled_out(st, image));
    ks_store_unlock(st);
}

/* The controller and the API write new versions that share members with the old ones; no
 * version kept for watchers may change after it was stored (a change in place would show
 * in an older event: its resourceVersion, the first ReplicaSet's replicas, the revision). */
/* The resourceVersion of web in st (store lock held by the caller), "" when none. */
static const char *web_rv(ks_store_t *st)
{
    ks_obj_t *d = ks_store_get(st, KS_DEPLOYMENT, "default", "web");

    return d ? ks_jstr(d->json, "metadata.resourceVersion") ?: "" : "";
}

/* A write that changes nothing but the times of managedFields entries is no write: the
 * same apply again keeps the resourceVersion; a label more, one changed, one less or
 * other replicas make a new one. */
static void test_noop_apply_keeps_resource_version(void **state)
{
    static const char *const bodies[] = {
        "{\"metadata\":{\"name\":\"web\"},\"spec\":{\"replicas\":3}}",
        "{\"metadata\":{\"name\":\"web\",\"labels\":{\"a\":\"1\"}},\"spec\":{\"replicas\":3}}",
        "{\"metadata\":{\"name\":\"web\",\"labels\":{\"a\":\"2\"}},\"spec\":{\"replicas\":3}}",
        "{\"metadata\":{\"name\":\"web\"},\"spec\":{\"replicas\":3}}",
        "{\"metadata\":{\"name\":\"web\"},\"spec\":{\"replicas\":2}}",
    };
    ks_store_t *st = ks_store_new(4096);
    ks_api_t *api = ks_api_new(st, NULL);
    char body[1024], rv[32];

    (void)state;
    snprintf(body, sizeof(body), DEPLOY_BODY, "example/web:1");
    assert_int_equal(api_apply(api, DEPLOY_PATH, body), 201);
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char full[1024];
        const char *extra = strstr(bodies[i], "\"spec\":");
        /* the bench body with this one's metadata and replicas */
        snprintf(full, sizeof(full),
                 "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",%.*s\"spec\":{\"replicas\":%c,"
                 "\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"template\":{\"metadata\":{"
                 "\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"name\":\"c\","
                 "\"image\":\"example/web:1\"}]}}}}",
                 (int)(extra - bodies[i] - 1), bodies[i] + 1, extra[strlen("\"spec\":{\"replicas\":")]);
        ks_store_lock(st);
        snprintf(rv, sizeof(rv), "%s", web_rv(st));
        ks_store_unlock(st);
        assert_int_equal(api_apply(api, DEPLOY_PATH, full), 200);
        ks_store_lock(st);
        if (strcmp(web_rv(st), rv) == 0)
            fail_msg("body %zu: no new resourceVersion", i);
        snprintf(rv, sizeof(rv), "%s", web_rv(st));
        ks_store_unlock(st);
        /* the same again (its entry's time a second later or not) */
        assert_int_equal(api_apply(api, DEPLOY_PATH, full), 200);
        ks_store_lock(st);
        assert_string_equal(web_rv(st), rv);
        ks_store_unlock(st);
    }
    ks_api_destroy(api);
    ks_store_destroy(st);
}

static void test_stored_versions_never_change(void **state)
{
    char err[256], body[1024];
    ks_rules_t *rules = ks_rules_load(NULL, err, sizeof(err));
    ks_store_t *st = ks_store_new(4096);
    ks_ctrl_t *ctrl = ks_ctrl_new(st, rules, 1000);
    ks_api_t *api = ks_api_new(st, ctrl);
    const char *first_rs = NULL;
    size_t rs_events = 0, seen_v2 = 0;

    (void)state;
    assert_int_equal(ks_ctrl_start(ctrl), 0);
    snprintf(body, sizeof(body), DEPLOY_BODY, "example/web:1");
    assert_int_equal(api_apply(api, DEPLOY_PATH, body), 201);
    wait_rolled_out(st, "example/web:1");
    /* every version stored so far, as written now: the second rollout (whose versions
     * share members with these) must not change one of them */
    json_t *before = json_array();
    ks_store_lock(st);
    for (int k = 0; k < KS_KIND_COUNT; k++) {
        ks_event_t *e;
        for (size_t i = 0; (e = ks_store_ring_at(st, (ks_kind_t)k, i)) != NULL; i++) {
            rf_buf_t b = RF_BUF_INIT;
            assert_int_equal(ks_json_append(&b, e->obj), 0);
            json_array_append_new(before, json_pack("{s:i, s:i, s:s}", "kind", k, "rv", (json_int_t)e->rv,
                                                    "text", rf_buf_str(&b)));
            rf_buf_release(&b);
        }
    }
    ks_store_unlock(st);
    snprintf(body, sizeof(body), DEPLOY_BODY, "example/web:2");
    assert_int_equal(api_apply(api, DEPLOY_PATH, body), 200);
    wait_rolled_out(st, "example/web:2");
    ks_ctrl_stop(ctrl);
    {
        json_t *was;
        size_t wi;
        assert_true(json_array_size(before) > 10);
        json_array_foreach(before, wi, was) {
            ks_kind_t k = (ks_kind_t)json_integer_value(json_object_get(was, "kind"));
            uint64_t rv = (uint64_t)json_integer_value(json_object_get(was, "rv"));
            ks_event_t *e;
            rf_buf_t b = RF_BUF_INIT;
            size_t i = 0;
            while ((e = ks_store_ring_at(st, k, i)) != NULL && e->rv != rv)
                i++;
            assert_non_null(e);
            assert_int_equal(ks_json_append(&b, e->obj), 0);
            assert_string_equal(rf_buf_str(&b), json_string_value(json_object_get(was, "text")));
            rf_buf_release(&b);
        }
        json_decref(before);
    }
    for (int k = 0; k < KS_KIND_COUNT; k++) {
        ks_event_t *e;
        for (size_t i = 0; (e = ks_store_ring_at(st, (ks_kind_t)k, i)) != NULL; i++) {
            char rv[32];
            snprintf(rv, sizeof(rv), "%llu", (unsigned long long)e->rv);
            assert_string_equal(ks_jstr(e->obj, "metadata.resourceVersion") ?: "", rv);
            if (e->prev)
                assert_true(strtoull(ks_jstr(e->prev, "metadata.resourceVersion") ?: "0", NULL, 10) < e->rv);
            if (k == KS_REPLICASET && e->type == KS_EV_ADDED && !first_rs)
                first_rs = ks_jstr(e->obj, "metadata.name");
            if (k == KS_REPLICASET && first_rs && strcmp(ks_jstr(e->obj, "metadata.name"), first_rs) == 0 &&
                rs_events++ == 0)
                assert_int_equal(ks_jint(e->obj, "spec.replicas", -1), 1);
            if (k == KS_DEPLOYMENT)
                /* the hash label is the ReplicaSets', never the Deployment's template's */
                assert_null(json_object_get(ks_jget(e->obj, "spec.template.metadata.labels"), "pod-template-hash"));
            if (k == KS_REPLICASET) {
                const char *hash = json_string_value(
                    json_object_get(ks_jget(e->obj, "spec.template.metadata.labels"), "pod-template-hash"));
                const char *name = ks_jstr(e->obj, "metadata.name");
                assert_non_null(hash);
                assert_true(strlen(name) > strlen(hash) && strcmp(name + strlen(name) - strlen(hash), hash) == 0);
            }
            if (k == KS_DEPLOYMENT) {
                /* revision 1 until the controller sees the new template: also in the API's
                 * write of example/web:2, which keeps the annotations it had */
                const char *image = ks_jstr(json_array_get(ks_jget(e->obj, "spec.template.spec.containers"), 0), "image");
                const char *rev = json_string_value(json_object_get(
                    ks_jget(e->obj, "metadata.annotations"), "deployment.kubernetes.io/revision"));
                if (strcmp(image ?: "", "example/web:1") == 0 || !seen_v2++)
                    assert_true(!rev || strcmp(rev, "1") == 0);
            }
        }
    }
    /* each watch line (its members written once and kept, ks_store_append_stored) is the
     * event around what ks_json_append writes of its object */
    for (int k = 0; k < KS_KIND_COUNT; k++) {
        static const char *const types[] = {"ADDED", "MODIFIED", "DELETED"};
        ks_event_t *e;
        for (size_t i = 0; (e = ks_store_ring_at(st, (ks_kind_t)k, i)) != NULL; i++) {
            rf_buf_t b = RF_BUF_INIT;
            size_t len;
            const char *line;
            rf_buf_addf(&b, "{\"type\":\"%s\",\"object\":", types[e->type]);
            assert_int_equal(ks_json_append(&b, e->obj), 0);
            rf_buf_adds(&b, "}\n");
            line = ks_store_event_line(st, e, &len);
            assert_string_equal(line, rf_buf_str(&b));
            assert_int_equal(len, b.len);
            rf_buf_release(&b);
        }
    }
    assert_non_null(first_rs);
    assert_true(rs_events > 1);
    assert_true(seen_v2 > 1);
    {
        /* the Events the controller recorded: every member, in the recorder's order */
        ks_event_t *e = ks_store_ring_at(st, KS_EVENT, 0);
        rf_buf_t b = RF_BUF_INIT;
        json_t *ev, *skel;
        char *txt;
        assert_non_null(e);
        ev = ks_json_copy(e->obj);
        json_object_del(json_object_get(ev, "metadata"), "resourceVersion");
        json_object_del(json_object_get(ev, "metadata"), "uid");
        json_object_del(json_object_get(ev, "metadata"), "creationTimestamp");
        skel = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "name",
                         ks_jstr(ev, "metadata.name"), "uid", ks_jstr(ev, "involvedObject.uid"),
                         "rv", ks_jstr(ev, "involvedObject.resourceVersion"), "reason",
                         ks_jstr(ev, "reason"), "message", ks_jstr(ev, "message"), "ts",
                         ks_jstr(ev, "firstTimestamp"));
        assert_int_equal(ks_json_append(&b, ev), 0);
        assert_true(asprintf(&txt,
                             "{\"apiVersion\":\"v1\",\"kind\":\"Event\",\"metadata\":{\"name\":\"%s\","
                             "\"namespace\":\"default\"},\"involvedObject\":{\"kind\":\"Deployment\","
                             "\"namespace\":\"default\",\"name\":\"web\",\"uid\":\"%s\",\"apiVersion\":"
                             "\"apps/v1\",\"resourceVersion\":\"%s\"},\"reason\":\"%s\",\"message\":"
                             "\"%s\",\"source\":{\"component\":\"deployment-controller\",\"host\":\"kubesim-node\"},"
                             "\"firstTimestamp\":\"%s\",\"lastTimestamp\":\"%s\",\"count\":1,\"type\":"
                             "\"Normal\",\"eventTime\":null,\"reportingComponent\":\"deployment-controller\","
                             "\"reportingInstance\":\"kubesim-node\"}",
                             ks_jstr(skel, "name"), ks_jstr(skel, "uid"), ks_jstr(skel, "rv"),
                             ks_jstr(skel, "reason"), ks_jstr(skel, "message"), ks_jstr(skel, "ts"),
                             ks_jstr(skel, "ts")) > 0);
        assert_string_equal(rf_buf_str(&b), txt);
        free(txt);
        json_decref(skel);
        json_decref(ev);
        rf_buf_release(&b);
    }
    ks_api_destroy(api);
    ks_ctrl_destroy(ctrl);
    ks_store_destroy(st);
    ks_rules_destroy(rules);
}

/* Events expire ttl of simulated time after their last write, with a DELETED event. */
static void test_events_expire_after_ttl(void **state)
{
    char err[256], body[1024];
    ks_rules_t *rules = ks_rules_load(NULL, err, sizeof(err));
    ks_store_t *st = ks_store_new(4096);
    ks_ctrl_t *ctrl = ks_ctrl_new(st, rules, 1000);
    ks_api_t *api = ks_api_new(st, ctrl);
    int64_t start, deadline;
    size_t n, deleted = 0, added = 0;
    ks_obj_t **evs;

    (void)state;
    /* 200 s of simulated time: 200 ms at scale 1000 */
    ks_ctrl_set_event_ttl(ctrl, 200 * 1000);
    assert_int_equal(ks_ctrl_start(ctrl), 0);
    start = ks_now_ms();
    snprintf(body, sizeof(body), DEPLOY_BODY, "example/web:1");
    assert_int_equal(api_apply(api, DEPLOY_PATH, body), 201);
    wait_rolled_out(st, "example/web:1");
    ks_store_lock(st);
    evs = ks_store_list(st, KS_EVENT, "default", &n);
    free(evs);
    assert_true(n > 0);
    deadline = ks_now_ms() + 10000;
    while (n > 0 && ks_now_ms() < deadline) {
        ks_store_wait(st, KS_EVENT, deadline);
        evs = ks_store_list(st, KS_EVENT, "default", &n);
        free(evs);
    }
    assert_int_equal(n, 0);
    assert_true(ks_now_ms() - start >= 200);
    for (size_t i = 0; ks_store_ring_at(st, KS_EVENT, i); i++) {
        ks_event_t *e = ks_store_ring_at(st, KS_EVENT, i);
        added += e->type == KS_EV_ADDED;
        deleted += e->type == KS_EV_DELETED;
    }
    assert_true(added > 0);
    assert_int_equal(deleted, added);
    ks_store_unlock(st);
    ks_ctrl_stop(ctrl);
    ks_api_destroy(api);
    ks_ctrl_destroy(ctrl);
    ks_store_destroy(st);
    ks_rules_destroy(rules);
}

/* kubesim's own JSON writer (no loop check) writes what jansson's compact dump writes. */
static void test_json_append_writes_what_jansson_dumps(void **state)
{
    static const char *const docs[] = {
        "{}", "[]", "[[],{},[{}]]",
        "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\","
        "\"labels\":{\"app.kubernetes.io/name\":\"web\",\"x\":\"\"},\"generation\":3,"
        "\"managedFields\":[{\"manager\":\"relfleet\",\"fieldsV1\":{\"f:spec\":{\"f:template\":"
        "{\"k:{\\\"name\\\":\\\"app\\\"}\":{\".\":{}}}}}}]},\"spec\":{\"replicas\":0,\"paused\":"
        "false,\"ok\":true,\"none\":null,\"ratio\":0.25,\"big\":1e300,\"neg\":-9223372036854775808,"
        "\"max\":9223372036854775807,\"list\":[1,-2,\"three\",null,[true]]}}",
        "{\"s\":\"quote \\\" backslash \\\\ slash / tab \\t nl \\n cr \\r bs \\b ff \\f "
        "ctl \\u0001\\u001f del \\u007f utf8 \\u00e9\\u4e2d\\ud83d\\ude00 ls \\u2028\"}",
        "{\"k\\\"ey\\n\":\"v\",\"\\u00e9\":1,\"nul\":\"a\\u0000b\"}",
        "{\"b\":{\"zz\":1,\"z\":[{\"y\":1,\"x\":2}],\"\":0},\"a\":{\"ab\":1,\"a\":2},\"B\":null}",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_error_t jerr;
        json_t *j = json_loads(docs[i], JSON_ALLOW_NUL, &jerr);
        rf_buf_t b = RF_BUF_INIT;
        char *want;

        assert_non_null(j);
        want = json_dumps(j, JSON_COMPACT);
        assert_int_equal(ks_json_append(&b, j), 0);
        assert_string_equal(rf_buf_str(&b), want);
        assert_int_equal(b.len, strlen(want));
        free(want);
        /* and sorted, as the template hash writes it */
        rf_buf_reset(&b);
        want = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        assert_int_equal(ks_json_append_sorted(&b, j), 0);
        assert_string_equal(rf_buf_str(&b), want);
        free(want);
        rf_buf_release(&b);
        json_decref(j);
    }
    /* strings of every length up to 40 with a byte that is escaped (or one next to those
     * that are not) at every place, for the eight-at-a-time scan; written into a buffer
     * with room (the direct path), into a new one (through rf_buf) and into capped ones */
    {
        static const char *const bytes[] = {"\"", "\\", "\x01", "\x1f", "\n", " ",
                                            "\x7f", "!", "[", "]", "\xc3\xa9", "\xe4\xb8\xad"};
        for (size_t bi = 0; bi < sizeof(bytes) / sizeof(bytes[0]); bi++)
            for (size_t len = 0; len <= 40; len++)
                for (size_t at = 0; at <= len; at++) {
                    char s[64];
                    json_t *j = json_object();
                    rf_buf_t room = RF_BUF_INIT, fresh = RF_BUF_INIT;
                    char *want;
                    size_t wlen;
                    memset(s, 'a', len);
                    s[len] = '\0';
                    memcpy(s + at, bytes[bi], strlen(bytes[bi]));
                    s[len + strlen(bytes[bi])] = '\0';
                    if (at < len)
                        memset(s + at + strlen(bytes[bi]), 'b', len - at);
                    s[len + strlen(bytes[bi])] = '\0';
                    json_object_set_new(j, s, json_string(s));
                    json_object_set_new(j, "k", json_pack("[s, i, b, n]", s, (json_int_t)-7, 1));
                    want = json_dumps(j, JSON_COMPACT);
                    assert_non_null(want);
                    wlen = strlen(want);
                    rf_buf_add(&room, "x", 1);
                    for (int g = 0; g < 4; g++)
                        rf_buf_add(&room, want, wlen);
                    rf_buf_reset(&room);
                    assert_int_equal(ks_json_append(&room, j), 0);
                    assert_string_equal(rf_buf_str(&room), want);
                    assert_int_equal(ks_json_append(&fresh, j), 0);
                    assert_string_equal(rf_buf_str(&fresh), want);
                    for (size_t max = wlen - 3; max <= wlen + 1; max++) {
                        rf_buf_t capped;
                        rf_buf_init(&capped, max);
                        assert_int_equal(ks_json_append(&capped, j), wlen <= max ? 0 : -1);
                        assert_true(capped.len <= max);
                        if (wlen <= max)
                            assert_string_equal(rf_buf_str(&capped), want);
                        rf_buf_release(&capped);
                    }
                    free(want);
                    rf_buf_release(&room);
                    rf_buf_release(&fresh);
                    json_decref(j);
                }
    }
    {
        json_t *j = json_string("not a container");
        rf_buf_t b = RF_BUF_INIT;
        assert_int_equal(ks_json_append(&b, j), -1);
        json_decref(j);
        rf_buf_release(&b);
    }
}

/* The recorder's cache of events is an LRU of 4,096 (client-go's): an event recorded, then
 * 4,095 others, is still known (a direct-mapped cache lost such events to any other event of
 * the same slot, so a repeat was recorded anew); when full, the least recently used goes. */
static void test_event_cache_is_lru(void **state)
{
    ks_lru_t *l = ks_lru_new(4096);
    char name[32];
    (void)state;
    assert_non_null(l);
    ks_lru_put(l, 7, "first");
    for (uint64_t k = 1000; k < 1000 + 4095; k++) {
        snprintf(name, sizeof(name), "ev-%llu", (unsigned long long)k);
        ks_lru_put(l, k * 4096 + 7, name); /* every one in the bucket a modulus would share */
    }
    assert_int_equal(ks_lru_len(l), 4096);
    assert_string_equal(ks_lru_get(l, 7), "first"); /* now the most recently used */
    assert_string_equal(ks_lru_get(l, 1000 * 4096 + 7), "ev-1000");
    ks_lru_put(l, 99, "new"); /* full: the least recent (ev-1001) goes */
    assert_null(ks_lru_get(l, 1001 * 4096 + 7));
    assert_string_equal(ks_lru_get(l, 7), "first");
    assert_string_equal(ks_lru_get(l, 1002 * 4096 + 7), "ev-1002");
    assert_string_equal(ks_lru_get(l, 99), "new");
    ks_lru_put(l, 7, "again"); /* a kept key's name is replaced, nothing else goes */
    assert_int_equal(ks_lru_len(l), 4096);
    assert_string_equal(ks_lru_get(l, 7), "again");
    assert_string_equal(ks_lru_get(l, 1003 * 4096 + 7), "ev-1003");
    /* a small cache, entry by entry */
    ks_lru_free(l);
    l = ks_lru_new(2);
    ks_lru_put(l, 1, "a");
    ks_lru_put(l, 2, "b");
    assert_string_equal(ks_lru_get(l, 1), "a");
    ks_lru_put(l, 3, "c"); /* 2 is the least recent */
    assert_null(ks_lru_get(l, 2));
    assert_string_equal(ks_lru_get(l, 1), "a");
    assert_string_equal(ks_lru_get(l, 3), "c");
    ks_lru_put(l, 4, "d"); /* now 1 */
    assert_null(ks_lru_get(l, 1));
    assert_int_equal(ks_lru_len(l), 2);
    ks_lru_free(l);
}

/* ks_time_format keeps each thread's last second: every call, a repeat or not, writes what
 * gmtime_r and strftime write for its second. */
static void test_time_format_as_strftime(void **state)
{
    static const int64_t ms[] = {
        1700000000123, 1700000000999, 1700000001000, 1700000000500, 0, 999, 1000,
        -1, 253402300799000, 1700000001000, 1700000001001,
    };
    (void)state;
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        char got[32], want[32];
        time_t t = (time_t)(ms[i] / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%SZ", &tm);
        ks_time_format(ms[i], got, sizeof(got));
        assert_string_equal(got, want);
        ks_time_format(ms[i], got, sizeof(got)); /* the kept text */
        assert_string_equal(got, want);
    }
    {
        /* a buffer the text fits exactly, then one byte short: nothing written past it */
        char exact[21], small[32];
        ks_time_format(1700000000000, exact, sizeof(exact));
        assert_string_equal(exact, "2023-11-14T22:13:20Z");
        memset(small, 'x', sizeof(small));
        ks_time_format(1700000000000, small, 20);
        for (size_t i = 20; i < sizeof(small); i++)
            assert_int_equal(small[i], 'x');
    }
}

/* The controller's Events are what json_pack of the recorder's layout wrote: members in its
 * order, the subject's identity in involvedObject, one time in both timestamps (their values
 * are shared between Events and with the subject: each Event must still read as its own). */
static void test_controller_events_layout(void **state)
{
    static const char *const keys[] = {
        "apiVersion",     "kind",          "metadata", "involvedObject", "reason",
        "message",        "source",        "firstTimestamp", "lastTimestamp", "count",
        "type",           "eventTime",     "reportingComponent", "reportingInstance",
    };
    static const char *const inv_keys[] = {"kind", "namespace", "name", "uid", "apiVersion",
                                           "resourceVersion"};
    char err[256], body[1024];
    ks_rules_t *rules = ks_rules_load(NULL, err, sizeof(err));
    ks_store_t *st = ks_store_new(4096);
    ks_ctrl_t *ctrl = ks_ctrl_new(st, rules, 1000);
    ks_api_t *api = ks_api_new(st, ctrl);
    size_t n, scaling = 0;
    ks_obj_t **evs;

    (void)state;
    assert_int_equal(ks_ctrl_start(ctrl), 0);
    snprintf(body, sizeof(body), DEPLOY_BODY, "example/web:1");
    assert_int_equal(api_apply(api, DEPLOY_PATH, body), 201);
    wait_rolled_out(st, "example/web:1");
    ks_ctrl_stop(ctrl);
    ks_store_lock(st);
    evs = ks_store_list(st, KS_EVENT, "default", &n);
    assert_true(n >= 2); /* the ReplicaSet scaled up, the pod created */
    for (size_t i = 0; i < n; i++) {
        json_t *ev = evs[i]->json, *inv = json_object_get(ev, "involvedObject");
        json_t *src = json_object_get(ev, "source");
        const char *comp = ks_jstr(ev, "reportingComponent");
        size_t k = 0;
        void *it;
        ks_kind_t kind;
        ks_obj_t *subject;

        for (it = json_object_iter(ev); it; it = json_object_iter_next(ev, it), k++) {
            assert_true(k < sizeof(keys) / sizeof(keys[0]));
            assert_string_equal(json_object_iter_key(it), keys[k]);
        }
        assert_int_equal(k, sizeof(keys) / sizeof(keys[0]));
        k = 0;
        for (it = json_object_iter(inv); it; it = json_object_iter_next(inv, it), k++)
            assert_string_equal(json_object_iter_key(it), inv_keys[k]);
        assert_int_equal(k, sizeof(inv_keys) / sizeof(inv_keys[0]));
        assert_string_equal(ks_jstr(ev, "apiVersion"), "v1");
        assert_string_equal(ks_jstr(ev, "kind"), "Event");
        assert_string_equal(ks_jstr(ev, "metadata.namespace"), "default");
        assert_string_equal(ks_jstr(inv, "namespace"), "default");
        assert_int_equal(json_object_size(src), 2);
        assert_string_equal(ks_jstr(src, "component"), comp);
        assert_string_equal(ks_jstr(src, "host"), "kubesim-node");
        assert_string_equal(ks_jstr(ev, "reportingInstance"), "kubesim-node");
        assert_string_equal(ks_jstr(ev, "firstTimestamp"), ks_jstr(ev, "lastTimestamp"));
        assert_int_equal(ks_jint(ev, "count", 0), 1);
        assert_true(json_is_null(json_object_get(ev, "eventTime")));
        assert_true(strcmp(ks_jstr(ev, "type"), "Normal") == 0 ||
                    strcmp(ks_jstr(ev, "type"), "Warning") == 0);
        assert_true(strncmp(ks_jstr(ev, "metadata.name"), ks_jstr(inv, "name"),
                            strlen(ks_jstr(inv, "name"))) == 0);
        /* the subject is the object named, with that uid */
        kind = strcmp(ks_jstr(inv, "kind"), "Deployment") == 0   ? KS_DEPLOYMENT
               : strcmp(ks_jstr(inv, "kind"), "ReplicaSet") == 0 ? KS_REPLICASET
                                                                 : KS_POD;
        assert_string_equal(ks_jstr(inv, "apiVersion"), ks_kinds[kind].api_version);
        subject = ks_store_get(st, kind, "default", ks_jstr(inv, "name"));
        if (subject)
            assert_string_equal(ks_jstr(inv, "uid"), ks_jstr(subject->json, "metadata.uid"));
        scaling += strcmp(ks_jstr(ev, "reason"), "ScalingReplicaSet") == 0;
    }
    assert_true(scaling >= 1);
    free(evs);
    ks_store_unlock(st);
    ks_api_destroy(api);
    ks_ctrl_destroy(ctrl);
    ks_store_destroy(st);
    ks_rules_destroy(rules);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scaled_rounding),   cmocka_unit_test(test_fenceposts),
        cmocka_unit_test(test_template_hash),     cmocka_unit_test(test_label_selectors),
        cmocka_unit_test(test_merge_patch),       cmocka_unit_test(test_apply_conflict_and_removal),
        cmocka_unit_test(test_apply_keyed_list_fields),
        cmocka_unit_test(test_apply_same_field_set_keeps_tree),
        cmocka_unit_test(test_yaml_scalars),      cmocka_unit_test(test_glob),
        cmocka_unit_test(test_pod_states),
        cmocka_unit_test(test_json_bodies_parse_as_yaml_does),
        cmocka_unit_test(test_json_equal_as_jansson),
        cmocka_unit_test(test_merge_patch_copies_and_keeps_order),
        cmocka_unit_test(test_obj_copy_shares_until_copied_on_write),
        cmocka_unit_test(test_store_event_line_written_on_first_use),
        cmocka_unit_test(test_stored_versions_never_change),
        cmocka_unit_test(test_noop_apply_keeps_resource_version),
        cmocka_unit_test(test_events_expire_after_ttl),
        cmocka_unit_test(test_event_cache_is_lru),
        cmocka_unit_test(test_json_append_writes_what_jansson_dumps),
        cmocka_unit_test(test_time_format_as_strftime),
        cmocka_unit_test(test_controller_events_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
