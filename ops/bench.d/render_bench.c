/* render-bench: renders per second of one template, compiled once and parsed every time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "rf_buf.h"
#include "rf_render.h"

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    rf_buf_t b;
    char chunk[8192];
    size_t n;

    if (!f)
        return NULL;
    rf_buf_init(&b, 0);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        rf_buf_add(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return rf_buf_detach(&b);
}

static void usage(void)
{
    fprintf(stderr, "usage: render-bench [-n RENDERS] [-v VALUES.json] TEMPLATE.yaml\n"
                    "  renders TEMPLATE -n times (default 100000) each way and prints renders/s\n");
}

/* One timed loop; mode 0: compiled exec, 1: exec + canonical digest, 2: rf_render (parse
 * every time). Returns renders per second, or -1 with a message on stderr. */
static double run(int mode, const rf_render_template_t *tpl, const char *body, size_t len,
                  const json_t *values, long n, char digest[65])
{
    char errstr[512];
    json_t *out = NULL;
    double t0 = now_seconds();
    double dt;
    rf_err_t err;
    long i;

    for (i = 0; i < n; i++) {
        if (mode == 2)
            err = rf_render("bench", body, len, values, &out, errstr, sizeof errstr);
        else
            err = rf_render_exec(tpl, values, &out, errstr, sizeof errstr);
        if (err != RF_OK) {
            fprintf(stderr, "render-bench: %s\n", errstr);
            return -1;
        }
        if (mode == 1 && rf_render_digest(out, digest) != RF_OK) {
            fprintf(stderr, "render-bench: digest failed\n");
            json_decref(out);
            return -1;
        }
        json_decref(out);
    }
    dt = now_seconds() - t0;
    return dt > 0 ? (double)n / dt : 0;
}

int main(int argc, char **argv)
{
    const char *values_path = NULL;
    const char *path = NULL;
    long n = 100000;
    char *body = NULL;
    size_t len = 0;
    size_t lines = 0;
    size_t i;
    json_t *values = NULL;
    json_t *sample = NULL;
    json_error_t jerr;
    rf_render_template_t *tpl = NULL;
    char errstr[512];
    char digest[65] = "";
    double r_exec, r_digest, r_render;
    int argi;
    int result = 1;

    for (argi = 1; argi < argc; argi++) {
        if (strcmp(argv[argi], "-n") == 0 && argi + 1 < argc) {
            n = strtol(argv[++argi], NULL, 10);
        } else if (strcmp(argv[argi], "-v") == 0 && argi + 1 < argc) {
            values_path = argv[++argi];
        } else if (argv[argi][0] != '-' && !path) {
            path = argv[argi];
        } else {
            usage();
            return 2;
        }
    }
    if (!path || n <= 0) {
        usage();
        return 2;
    }
    body = slurp(path, &len);
    if (!body) {
        fprintf(stderr, "render-bench: cannot read '%s'\n", path);
        goto cleanup;
    }
    for (i = 0; i < len; i++)
        lines += body[i] == '\n';
    if (values_path)
        values = json_load_file(values_path, 0, &jerr);
    else
        values =
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:s, s:s}", "service", "web",
                      "env", "prod", "namespace", "shop", "version", "1.4.2", "image",
                      "registry.example/shop/web:1.4.2", "replicas", 3, "health_path", "/healthz",
                      "group", "shop", "port", 8080, "release_id", "r-000123", "operator", "alice");
    if (!values) {
        fprintf(stderr, "render-bench: cannot read values '%s': %s\n", values_path, jerr.text);
        goto cleanup;
    }
    tpl = rf_render_compile("bench", body, len, errstr, sizeof errstr);
    if (!tpl) {
        fprintf(stderr, "render-bench: %s\n", errstr);
        goto cleanup;
    }
    if (rf_render_exec(tpl, values, &sample, errstr, sizeof errstr) != RF_OK) {
        fprintf(stderr, "render-bench: %s\n", errstr);
        goto cleanup;
    }
    printf("template %s: %zu lines, %zu bytes, %zu documents, %zu nodes per render\n", path, lines,
           len, json_array_size(sample), rf_render_template_nodes(tpl));
    r_exec = run(0, tpl, body, len, values, n, digest);
    r_digest = run(1, tpl, body, len, values, n, digest);
    r_render = run(2, tpl, body, len, values, n / 4 > 0 ? n / 4 : 1, digest);
    if (r_exec < 0 || r_digest < 0 || r_render < 0)
        goto cleanup;
    printf("compiled once, rf_render_exec:          %10.0f renders/s (%.1f us each, %ld renders)\n",
           r_exec, 1e6 / r_exec, n);
    printf("compiled once, exec + rf_render_digest: %10.0f renders/s (%.1f us each)\n", r_digest,
           1e6 / r_digest);
    printf("rf_render (parse every time):           %10.0f renders/s (%.1f us each, %ld renders)\n",
           r_render, 1e6 / r_render, n / 4 > 0 ? n / 4 : 1);
    printf("sha256 %s\n", digest);
    result = 0;

cleanup:
    json_decref(sample);
    json_decref(values);
    rf_render_template_destroy(tpl);
    free(body);
    return result;
}
