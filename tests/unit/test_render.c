/* Unit tests of the renderer: fixture folders, digests, budgets, hostile values, demo templates. */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "rf_buf.h"
#include "rf_render.h"

#define MIN_FIXTURES 30

static const char *source_dir(void)
{
    const char *env = getenv("RELFLEET_SOURCE_DIR");

    return env && *env ? env : RELFLEET_SOURCE_DIR;
}

/* Reads a whole file; NULL when it does not exist. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    rf_buf_t b;
    char chunk[4096];
    size_t n;

    if (!f)
        return NULL;
    rf_buf_init(&b, 0);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(rf_buf_add(&b, chunk, n), 0);
    fclose(f);
    *len = b.len;
    return rf_buf_detach(&b);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Counts the JSON nodes the way the renderer budgets them: each value, and each key. */
static size_t count_nodes(const json_t *v)
{
    size_t n = 1;
    size_t i;
    const char *key;
    json_t *item;

    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, item) n += 1 + count_nodes(item);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, item) n += count_nodes(item);
    }
    return n;
}

static json_t *standard_values(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:s, s:s}", "service", "web",
                     "env", "prod", "namespace", "shop", "version", "1.4.2", "image",
                     "registry.example/shop/web:1.4.2", "replicas", 3, "health_path", "/healthz",
                     "group", "shop", "port", 8080, "release_id", "r-000123", "operator", "alice");
}

static void case_path(char *out, size_t size, const char *dir, const char *name, const char *file)
{
    int n = snprintf(out, size, "%s/%s/%s", dir, name, file);

    if (n < 0 || (size_t)n >= size)
        fail_msg("path too long: %s/%s/%s", dir, name, file);
}

/* ---- fixture folders: tests/fixtures/render/<case>/{template.yaml, values.json,
 * expected.json | error.txt}; the case name is the template id ---- */

static int run_case(const char *dir, const char *name)
{
    char path[4096];
    char errstr[512] = "";
    char *body = NULL;
    char *errtxt = NULL;
    size_t body_len = 0;
    size_t err_len = 0;
    json_t *values = NULL;
    json_t *expected = NULL;
    json_t *out = NULL;
    json_t *again = NULL;
    json_t *names = NULL;
    json_error_t jerr;
    rf_render_template_t *tpl = NULL;
    char d1[65];
    char d2[65];
    rf_err_t rc;
    int failed = 0;

    case_path(path, sizeof path, dir, name, "template.yaml");
    body = slurp(path, &body_len);
    case_path(path, sizeof path, dir, name, "values.json");
    values = json_load_file(path, 0, &jerr);
    case_path(path, sizeof path, dir, name, "expected.json");
    expected = json_load_file(path, JSON_DECODE_ANY, &jerr);
    if (!expected && access(path, F_OK) == 0) {
        print_error("%s: expected.json does not parse: %s\n", name, jerr.text);
        failed = 1;
        goto cleanup;
    }
    case_path(path, sizeof path, dir, name, "error.txt");
    errtxt = slurp(path, &err_len);
    if (!body || !values || (!expected == !errtxt)) {
        print_error("%s: needs template.yaml, values.json and one of expected.json, error.txt\n",
                    name);
        failed = 1;
        goto cleanup;
    }
    while (err_len > 0 && (errtxt[err_len - 1] == '\n' || errtxt[err_len - 1] == '\r'))
        errtxt[--err_len] = '\0';

    rc = rf_render(name, body, body_len, values, &out, errstr, sizeof errstr);
    if (errtxt) {
        if (rc != RF_ERR_PERM || out != NULL || strcmp(errstr, errtxt) != 0) {
            print_error("%s: want error\n  %s\ngot rc=%d\n  %s\n", name, errtxt, (int)rc, errstr);
            failed = 1;
        }
        goto cleanup;
    }
    if (rc != RF_OK) {
        print_error("%s: unexpected error: %s\n", name, errstr);
        failed = 1;
        goto cleanup;
    }
    if (!json_equal(out, expected)) {
        char *got = json_dumps(out, JSON_INDENT(2));
        char *want = json_dumps(expected, JSON_INDENT(2));
        print_error("%s: output differs\nwant %s\ngot  %s\n", name, want, got);
        free(got);
        free(want);
        failed = 1;
        goto cleanup;
    }
    /* the compiled form renders the same again, with the same digest */
    tpl = rf_render_compile(name, body, body_len, errstr, sizeof errstr);
    if (!tpl || rf_render_exec(tpl, values, &again, errstr, sizeof errstr) != RF_OK ||
        !json_equal(again, out) || rf_render_digest(out, d1) != RF_OK ||
        rf_render_digest(again, d2) != RF_OK || strcmp(d1, d2) != 0 || strlen(d1) != 64 ||
        count_nodes(out) > rf_render_template_nodes(tpl) + 1) {
        print_error("%s: compiled render differs or digest unstable: %s\n", name, errstr);
        failed = 1;
        goto cleanup;
    }
    /* every placeholder it reports is a value of this case */
    if (rf_render_placeholders(name, body, body_len, &names, errstr, sizeof errstr) != RF_OK) {
        print_error("%s: placeholders: %s\n", name, errstr);
        failed = 1;
    } else {
        size_t i;
        json_t *n;
        json_array_foreach(names, i, n)
        {
            if (!json_object_get(values, json_string_value(n))) {
                print_error("%s: placeholder '%s' reported but has no value\n", name,
                            json_string_value(n));
                failed = 1;
            }
        }
    }

cleanup:
    free(body);
    free(errtxt);
    json_decref(values);
    json_decref(expected);
    json_decref(out);
    json_decref(again);
    json_decref(names);
    rf_render_template_destroy(tpl);
    return failed;
}

static void test_fixtures(void **state)
{
    char dir[4096];
    DIR *d;
    struct dirent *e;
    struct stat st;
    char path[4096 + 256];
    char *names[512];
    size_t n = 0;
    size_t i;
    int failed = 0;

    (void)state;
    snprintf(dir, sizeof dir, "%s/tests/fixtures/render", source_dir());
    d = opendir(dir);
    if (!d)
        fail_msg("fixture folder %s is missing", dir);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        assert_true(n < 512);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_str);
    for (i = 0; i < n; i++) {
        failed += run_case(dir, names[i]);
        free(names[i]);
    }
    print_message("render fixtures: %zu cases, %d failed\n", n, failed);
    assert_true(n >= MIN_FIXTURES);
    assert_int_equal(failed, 0);
}

/* ---- digests ---- */

static void test_digest_stable_and_key_order_independent(void **state)
{
    json_t *a = json_pack("[{s:s, s:s, s:{s:s, s:i}}]", "apiVersion", "v1", "kind", "Service",
                          "metadata", "name", "web", "generation", 1);
    json_t *b = json_pack("[{s:{s:i, s:s}, s:s, s:s}]", "metadata", "generation", 1, "name", "web",
                          "kind", "Service", "apiVersion", "v1");
    json_t *c = json_pack("[{s:s, s:s, s:{s:s, s:i}}]", "apiVersion", "v1", "kind", "Service",
                          "metadata", "name", "web", "generation", 2);
    json_t *empty = json_array();
    char da[65], db[65], dc[65], de[65];

    (void)state;
    assert_int_equal(rf_render_digest(a, da), RF_OK);
    assert_int_equal(rf_render_digest(b, db), RF_OK);
    assert_int_equal(rf_render_digest(c, dc), RF_OK);
    assert_int_equal(rf_render_digest(empty, de), RF_OK);
    assert_string_equal(da, db);
    assert_string_not_equal(da, dc);
    /* sha256 of the two bytes "[]" (printf '[]' | sha256sum) */
    assert_string_equal(de, "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945");
    /* printf '[{"apiVersion":"v1","kind":"Service","metadata":{"generation":1,"name":"web"}}]'
     * | sha256sum */
    assert_string_equal(da, "d53e827e0c5cce89275205feae5478a69a8d699a25680975cc30b49a3c69fe8e");
    assert_int_equal(rf_render_digest(NULL, de), RF_ERR_PERM);
    {
        char *text = NULL;
        char dt[65];
        assert_int_equal(rf_render_canonical(b, &text, dt), RF_OK);
        assert_string_equal(text, "[{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":"
                                  "{\"generation\":1,\"name\":\"web\"}}]");
        assert_string_equal(dt, da);
        free(text);
    }
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(empty);
}

/* ---- alias budget: counted in nodes at compile time, never by the clock ---- */

/* A billion-laughs template with `levels` levels of `width` aliases each. */
static char *laughs(int levels, int width)
{
    rf_buf_t b;
    int l, i;

    rf_buf_init(&b, 0);
    rf_buf_adds(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\ndata:\n");
    rf_buf_adds(&b, "  l0: &l0 lol\n");
    for (l = 1; l <= levels; l++) {
        rf_buf_addf(&b, "  l%d: &l%d [", l, l);
        for (i = 0; i < width; i++)
            rf_buf_addf(&b, "%s*l%d", i ? ", " : "", l - 1);
        rf_buf_adds(&b, "]\n");
    }
    return rf_buf_detach(&b);
}

static void test_alias_budget_counts_nodes(void **state)
{
    char errstr[256];
    char *body;
    rf_render_template_t *tpl;
    json_t *values = json_object();
    json_t *out = NULL;
    size_t expect;
    size_t level;
    int l;

    (void)state;
    /* 4 levels of 9: the counted nodes are exactly the nodes a render builds */
    body = laughs(4, 9);
    tpl = rf_render_compile("laughs-4", body, strlen(body), errstr, sizeof errstr);
    assert_non_null(tpl);
    /* root map: 1 + 4 keys and values (apiVersion, kind, metadata{name}, data) */
    expect = 1 + 2 + 2 + (2 + 2) + 2; /* up to the data mapping itself */
    level = 1;
    expect += 2; /* l0 key + scalar */
    for (l = 1; l <= 4; l++) {
        level = 1 + 9 * level; /* a sequence of 9 copies of the level below */
        expect += 1 + level;
    }
    assert_int_equal(rf_render_template_nodes(tpl), expect);
    assert_int_equal(rf_render_exec(tpl, values, &out, errstr, sizeof errstr), RF_OK);
    assert_int_equal(count_nodes(out), expect + 1); /* + the array of documents */
    json_decref(out);
    rf_render_template_destroy(tpl);
    free(body);

    /* 9 levels of 9 would build about 4.3e8 nodes: refused while compiling, at the first
     * level past the budget (level 5 is 66430 nodes, level 6 on line 12 is 597871) */
    body = laughs(9, 9);
    tpl = rf_render_compile("laughs-9", body, strlen(body), errstr, sizeof errstr);
    assert_null(tpl);
    assert_string_equal(errstr, "cannot render template 'laughs-9' line 12: aliases expand to more "
                                "than 100000 nodes");
    free(body);

    /* wide instead of deep: 14 aliases of the 7381-node level 4 in one list (line 11) */
    body = laughs(4, 9);
    {
        rf_buf_t b;
        rf_buf_init(&b, 0);
        rf_buf_adds(&b, body);
        rf_buf_adds(&b, "  wide: [");
        for (l = 0; l < 14; l++)
            rf_buf_addf(&b, "%s*l4", l ? ", " : "");
        rf_buf_adds(&b, "]\n");
        free(body);
        body = rf_buf_detach(&b);
    }
    tpl = rf_render_compile("wide", body, strlen(body), errstr, sizeof errstr);
    assert_null(tpl);
    assert_string_equal(errstr, "cannot render template 'wide' line 11: aliases expand to more "
                                "than 100000 nodes");
    free(body);
    json_decref(values);
}

/* ---- hostile values never add structure ---- */

static void test_hostile_values_stay_in_their_scalar(void **state)
{
    static const char *hostile[] = {
        "v1\": {}\n  evil: true",
        "v1\nkind: Secret\n---\napiVersion: v1",
        "{{ service }}",
        "__SERVICE__",
        "\xee\x80\x80service\xee\x80\x81",
        "*anchor",
        "&anchor x",
        "- a\n- b",
        "key: value",
        "'; rm -rf / #",
        "\\u0000",
        "<<",
        "",
        "  ",
        "3",
        "true",
        "null",
    };
    const char *tpl_text = "apiVersion: v1\n"
                           "kind: ConfigMap\n"
                           "metadata:\n"
                           "  name: '{{ service }}-cfg'\n"
                           "data:\n"
                           "  plain: {{ version }}\n"
                           "  single: '{{ version }}'\n"
                           "  double: \"{{ version }}\"\n"
                           "  embedded: v-{{ version }}-x\n"
                           "  block: |\n"
                           "    {{ version }}\n"
                           "  legacy: __VERSION__\n";
    char errstr[256];
    char want[256];
    json_t *values;
    json_t *out = NULL;
    const json_t *data;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        values = json_pack("{s:s, s:s}", "service", "web", "version", hostile[i]);
        assert_int_equal(
            rf_render("hostile", tpl_text, strlen(tpl_text), values, &out, errstr, sizeof errstr),
            RF_OK);
        assert_int_equal(json_array_size(out), 1);
        assert_int_equal(json_object_size(json_array_get(out, 0)), 4);
        data = json_object_get(json_array_get(out, 0), "data");
        assert_int_equal(json_object_size(data), 6);
        assert_string_equal(json_string_value(json_object_get(data, "plain")), hostile[i]);
        assert_string_equal(json_string_value(json_object_get(data, "single")), hostile[i]);
        assert_string_equal(json_string_value(json_object_get(data, "double")), hostile[i]);
        assert_string_equal(json_string_value(json_object_get(data, "legacy")), hostile[i]);
        snprintf(want, sizeof want, "v-%s-x", hostile[i]);
        assert_string_equal(json_string_value(json_object_get(data, "embedded")), want);
        snprintf(want, sizeof want, "%s\n", hostile[i]);
        assert_string_equal(json_string_value(json_object_get(data, "block")), want);
        json_decref(out);
        out = NULL;
        json_decref(values);
    }
}

/* ---- the placeholder set, for template sync ---- */

static void test_placeholders(void **state)
{
    const char *text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ service }}\n"
                       "  labels: {team: __GROUP__, rel: '{{release_id}}'}\n"
                       "  # {{ commented_out }} is not a placeholder of the template\n"
                       "spec:\n  ports: [{port: {{ port }}, name: {{ service }}-{{port}}}]\n";
    const char *bad = "apiVersion: v1\nkind: [\n";
    char errstr[256];
    json_t *names = NULL;
    char *dump;

    (void)state;
    assert_int_equal(
        rf_render_placeholders("svc", text, strlen(text), &names, errstr, sizeof errstr), RF_OK);
    dump = json_dumps(names, JSON_COMPACT);
    assert_string_equal(dump, "[\"group\",\"port\",\"release_id\",\"service\"]");
    free(dump);
    json_decref(names);
    names = NULL;
    assert_int_equal(rf_render_placeholders("bad", bad, strlen(bad), &names, errstr, sizeof errstr),
                     RF_ERR_PERM);
    assert_null(names);
    assert_non_null(strstr(errstr, "cannot render template 'bad' line 3: invalid yaml: "));
    assert_true(rf_render_is_standard_value("health_path"));
    assert_false(rf_render_is_standard_value("replcas"));
}

/* ---- limits: size and depth ---- */

static void test_limits(void **state)
{
    char errstr[256];
    rf_buf_t b;
    json_t *values = json_object();
    json_t *out = NULL;
    int i;

    (void)state;
    rf_buf_init(&b, 0);
    rf_buf_adds(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  big: \"");
    while (b.len <= RF_RENDER_MAX_BYTES)
        rf_buf_adds(&b, "0123456789abcdef0123456789abcdef");
    rf_buf_adds(&b, "\"\n");
    assert_int_equal(rf_render("big", b.data, b.len, values, &out, errstr, sizeof errstr),
                     RF_ERR_PERM);
    assert_string_equal(errstr,
                        "cannot render template 'big': template is larger than 1048576 bytes");
    assert_null(out);

    rf_buf_reset(&b);
    rf_buf_adds(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: ");
    for (i = 0; i < 70; i++)
        rf_buf_adds(&b, "[");
    for (i = 0; i < 70; i++)
        rf_buf_adds(&b, "]");
    rf_buf_adds(&b, "\n");
    assert_int_equal(rf_render("deep", b.data, b.len, values, &out, errstr, sizeof errstr),
                     RF_ERR_PERM);
    assert_string_equal(errstr,
                        "cannot render template 'deep' line 4: nesting deeper than 64 levels");

    /* depth through aliases: 40 levels aliased inside 40 levels */
    rf_buf_reset(&b);
    rf_buf_adds(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\na: &deep ");
    for (i = 0; i < 40; i++)
        rf_buf_adds(&b, "[");
    for (i = 0; i < 40; i++)
        rf_buf_adds(&b, "]");
    rf_buf_adds(&b, "\nb: ");
    for (i = 0; i < 40; i++)
        rf_buf_adds(&b, "[");
    rf_buf_adds(&b, "*deep");
    for (i = 0; i < 40; i++)
        rf_buf_adds(&b, "]");
    rf_buf_adds(&b, "\n");
    assert_int_equal(rf_render("deep-alias", b.data, b.len, values, &out, errstr, sizeof errstr),
                     RF_ERR_PERM);
    assert_string_equal(errstr,
                        "cannot render template 'deep-alias' line 5: nesting deeper than 64 "
                        "levels (aliases expanded)");
    rf_buf_release(&b);
    json_decref(values);
}

/* ---- one compiled template, many renders ---- */

static void test_compile_once_render_many(void **state)
{
    const char *text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ service }}\n"
                       "spec:\n  replicas: {{ replicas }}\n";
    char errstr[256];
    rf_render_template_t *tpl;
    json_t *values;
    json_t *out = NULL;
    int i;

    (void)state;
    tpl = rf_render_compile("many", text, strlen(text), errstr, sizeof errstr);
    assert_non_null(tpl);
    for (i = 1; i <= 50; i++) {
        values = json_pack("{s:s, s:i}", "service", i % 2 ? "web" : "api", "replicas", i);
        assert_int_equal(rf_render_exec(tpl, values, &out, errstr, sizeof errstr), RF_OK);
        assert_int_equal(json_integer_value(json_object_get(
                             json_object_get(json_array_get(out, 0), "spec"), "replicas")),
                         i);
        json_decref(out);
        json_decref(values);
    }
    values = json_pack("{s:s}", "service", "web");
    assert_int_equal(rf_render_exec(tpl, values, &out, errstr, sizeof errstr), RF_ERR_PERM);
    assert_null(out);
    assert_string_equal(errstr,
                        "cannot render template 'many' line 6: missing value for placeholder "
                        "'replicas'");
    json_decref(values);
    values = json_pack("[]");
    assert_int_equal(rf_render_exec(tpl, values, &out, errstr, sizeof errstr), RF_ERR_PERM);
    assert_string_equal(errstr, "cannot render template 'many': values are not a JSON object");
    json_decref(values);
    rf_render_template_destroy(tpl);
    rf_render_template_destroy(NULL);
}

/* ---- one compiled template, several threads at once ---- */

typedef struct thread_arg {
    const rf_render_template_t *tpl;
    const json_t *values;
    const json_t *want;
    int failures;
} thread_arg_t;

static void *render_thread(void *p)
{
    thread_arg_t *a = p;
    char errstr[256];
    json_t *out = NULL;
    int i;

    for (i = 0; i < 300; i++) {
        if (rf_render_exec(a->tpl, a->values, &out, errstr, sizeof errstr) != RF_OK ||
            !json_equal(out, a->want))
            a->failures++;
        json_decref(out);
        out = NULL;
    }
    return NULL;
}

static void test_exec_from_threads(void **state)
{
    char path[4096];
    char errstr[256];
    char *body;
    size_t len = 0;
    rf_render_template_t *tpl;
    json_t *values[4];
    json_t *want[4];
    thread_arg_t args[4];
    pthread_t th[4];
    int i;

    (void)state;
    snprintf(path, sizeof path, "%s/ops/demo/templates/web.yaml", source_dir());
    body = slurp(path, &len);
    assert_non_null(body);
    tpl = rf_render_compile("web", body, len, errstr, sizeof errstr);
    assert_non_null(tpl);
    for (i = 0; i < 4; i++) {
        values[i] = standard_values();
        json_object_set_new(values[i], "replicas", json_integer(i + 1));
        assert_int_equal(rf_render_exec(tpl, values[i], &want[i], errstr, sizeof errstr), RF_OK);
        args[i].tpl = tpl;
        args[i].values = values[i];
        args[i].want = want[i];
        args[i].failures = 0;
    }
    for (i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, render_thread, &args[i]), 0);
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
        json_decref(values[i]);
        json_decref(want[i]);
    }
    rf_render_template_destroy(tpl);
    free(body);
}

/* ---- the demo templates render with the standard values ---- */

static json_t *render_file(const char *rel, const char *id)
{
    char path[4096];
    char errstr[512];
    char *body;
    size_t len = 0;
    json_t *values = standard_values();
    json_t *out = NULL;

    snprintf(path, sizeof path, "%s/%s", source_dir(), rel);
    body = slurp(path, &len);
    if (!body)
        fail_msg("%s is missing", path);
    if (rf_render(id, body, len, values, &out, errstr, sizeof errstr) != RF_OK)
        fail_msg("%s: %s", rel, errstr);
    free(body);
    json_decref(values);
    return out;
}

static void test_demo_templates(void **state)
{
    json_t *web = render_file("ops/demo/templates/web.yaml", "web");
    json_t *legacy = render_file("ops/demo/templates/legacy.yaml", "legacy");
    json_t *dep;
    json_t *ctr;
    json_t *svc;

    (void)state;
    assert_int_equal(json_array_size(web), 2);
    dep = json_array_get(web, 0);
    svc = json_array_get(web, 1);
    assert_string_equal(json_string_value(json_object_get(dep, "kind")), "Deployment");
    assert_string_equal(json_string_value(json_object_get(svc, "kind")), "Service");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(dep, "spec"), "replicas")),
                     3);
    ctr = json_array_get(
        json_object_get(
            json_object_get(json_object_get(json_object_get(dep, "spec"), "template"), "spec"),
            "containers"),
        0);
    assert_string_equal(json_string_value(json_object_get(ctr, "image")),
                        "registry.example/shop/web:1.4.2");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(ctr, "readinessProbe"), "httpGet"), "path")),
        "/healthz");
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(ctr, "livenessProbe"), "httpGet"), "port")),
        8080);
    assert_int_equal(json_array_size(legacy), 2);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(legacy, 0), "metadata"), "name")),
                        "web");
    json_decref(web);
    json_decref(legacy);
}

/* ---- rf_render_line: a path of the output back to the template line that made it ---- */

static const char lines_template[] = /* line numbers matter: see the table */
    "apiVersion: apps/v1\n"                          /* 1 */
    "kind: Deployment\n"                             /* 2 */
    "metadata:\n"                                    /* 3 */
    "  name: \"{{ service }}\"\n"                  /* 4 */
    "  labels: &labels {app: web, tier: front}\n"    /* 5 */
    "  annotations:\n"                               /* 6 */
    "    \"{{ group }}/owner\": alice\n"           /* 7 */
    "spec:\n"                                        /* 8 */
    "  replicas: {{ replicas }}\n"                   /* 9 */
    "  selector:\n"                                  /* 10 */
    "    matchLabels:\n"                             /* 11 */
    "      <<: *labels\n"                            /* 12 */
    "      extra: x\n"                               /* 13 */
    "  template:\n"                                  /* 14 */
    "    spec:\n"                                    /* 15 */
    "      containers:\n"                            /* 16 */
    "      - name: app\n"                            /* 17 */
    "        image: x\n"                             /* 18 */
    "      - name: side\n"                           /* 19 */
    "        ports: [{containerPort: \"{{ port }}\"}]\n"; /* 20 */

static void test_render_lines(void **state)
{
    static const struct {
        size_t doc;
        const char *path;
        uint32_t line;
    } cases[] = {
        {0, "[]", 1},
        {0, "[\"kind\"]", 2},
        {0, "[\"metadata\",\"name\"]", 4},
        {0, "[\"metadata\",\"labels\",\"tier\"]", 5},
        {0, "[\"metadata\",\"annotations\",\"shop/owner\"]", 7}, /* a placeholder key */
        {0, "[\"spec\",\"replicas\"]", 9},
        {0, "[\"spec\",\"selector\",\"matchLabels\",\"app\"]", 5}, /* merged */
        {0, "[\"spec\",\"selector\",\"matchLabels\",\"extra\"]", 13},
        {0, "[\"spec\",\"strategy\"]", 8}, /* absent: its parent */
        {0, "[\"spec\",\"template\",\"spec\",\"containers\",1]", 19},
        {0, "[\"spec\",\"template\",\"spec\",\"containers\",1,\"ports\",0,\"containerPort\"]", 20},
        {0, "[\"spec\",\"template\",\"spec\",\"containers\",0,\"image\"]", 18},
        {0, "[\"spec\",\"template\",\"spec\",\"containers\",5,\"image\"]", 16},
        {1, "[]", 0},
    };
    char errstr[512];
    json_t *values = standard_values();
    rf_render_template_t *tpl =
        rf_render_compile("lines", lines_template, strlen(lines_template), errstr, sizeof(errstr));

    (void)state;
    if (!tpl)
        fail_msg("%s", errstr);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *path = json_loads(cases[i].path, 0, NULL);
        uint32_t got = rf_render_line(tpl, values, cases[i].doc, path);
        if (got != cases[i].line)
            fail_msg("doc %zu %s: line %u, want %u", cases[i].doc, cases[i].path, got,
                     cases[i].line);
        json_decref(path);
    }
    rf_render_template_destroy(tpl);
    json_decref(values);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_lines),
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_digest_stable_and_key_order_independent),
        cmocka_unit_test(test_alias_budget_counts_nodes),
        cmocka_unit_test(test_hostile_values_stay_in_their_scalar),
        cmocka_unit_test(test_placeholders),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_compile_once_render_many),
        cmocka_unit_test(test_demo_templates),
        cmocka_unit_test(test_exec_from_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
