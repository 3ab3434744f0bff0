/* Fuzz target: template compile and exec with fixed values, and rf_render_placeholders. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rf_render.h"

/*
 * Input: the whole input is a template. Besides sanitizer reports, the target aborts when a
 * contract of rf_render.h breaks:
 * - compile and rf_render_placeholders agree (same success, same names, sorted, unique);
 * - exec gives an array of objects, each with non-empty string apiVersion, kind and
 *   metadata.name, or an error with a sentence and no array;
 * - a compiled template renders the same twice, and its canonical digest is stable.
 */

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_render: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The standard values, a few service extras of every type, and hostile strings. */
static const char fuzz_values_json[] =
    "{\"service\": \"web\", \"env\": \"prod\", \"namespace\": \"shop\", \"version\": \"2.0\","
    " \"image\": \"reg/web:2.0\", \"replicas\": 3, \"health_path\": \"/healthz\","
    " \"group\": \"shop\", \"port\": 8080,"
    " \"release_id\": \"0b6b4f6e-6f1c-4a53-9d51-0c7a1e1f9a10\", \"operator\": \"alice\","
    " \"app_name\": \"web\", \"a\": \"x\", \"b\": false, \"n\": 7, \"neg\": -2, \"r\": 0.25,"
    " \"s\": \"3\", \"big\": 9007199254740993, \"flag\": true, \"first\": \"same\","
    " \"second\": \"same\", \"mode\": \"fast\", \"empty\": \"\","
    " \"evil\": \"web\\n---\\nkind: Secret\", \"braces\": \"{{ service }}\","
    " \"legacy\": \"__SERVICE__\", \"quote\": \"a\\\"b'c: d\", \"dots\": \"../x\","
    " \"upper\": \"WEB\", \"nul\": \"a\\u0000b\", \"uni\": \"\\u00e9\\ud83d\\ude00\"}";

static json_t *fuzz_values;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    json_error_t jerr;

    (void)argc;
    (void)argv;
    fuzz_values = json_loads(fuzz_values_json, JSON_ALLOW_NUL, &jerr);
    if (!fuzz_values) {
        fprintf(stderr, "fuzz_render: bad values: %s\n", jerr.text);
        exit(1);
    }
    return 0;
}

static void fuzz_check_manifests(const json_t *manifests)
{
    const json_t *m;
    const char *s;
    size_t i;

    FUZZ_CHECK(json_is_array(manifests));
    json_array_foreach(manifests, i, m)
    {
        FUZZ_CHECK(json_is_object(m));
        s = json_string_value(json_object_get(m, "apiVersion"));
        FUZZ_CHECK(s && *s);
        s = json_string_value(json_object_get(m, "kind"));
        FUZZ_CHECK(s && *s);
        s = json_string_value(json_object_get(json_object_get(m, "metadata"), "name"));
        FUZZ_CHECK(s && *s);
    }
}

static void fuzz_check_names(const json_t *names)
{
    const json_t *v;
    const char *prev = NULL;
    size_t i;

    FUZZ_CHECK(json_is_array(names));
    json_array_foreach(names, i, v)
    {
        FUZZ_CHECK(json_is_string(v));
        FUZZ_CHECK(json_string_length(v) > 0 && json_string_length(v) <= RF_RENDER_MAX_NAME);
        FUZZ_CHECK(!prev || strcmp(prev, json_string_value(v)) < 0);
        prev = json_string_value(v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    rf_render_template_t *tpl;
    json_t *manifests = (json_t *)1, *again = NULL, *names = NULL, *used;
    char errstr[1024], errstr2[1024], hex[65], hex2[65];
    char *text = NULL;
    rf_err_t result, presult;

    errstr[0] = '\0';
    tpl = rf_render_compile("fuzz", body, size, errstr, sizeof(errstr));
    presult = rf_render_placeholders("fuzz", body, size, &names, errstr2, sizeof(errstr2));
    FUZZ_CHECK((tpl != NULL) == (presult == RF_OK));
    if (!tpl) {
        FUZZ_CHECK(errstr[0] != '\0');
        FUZZ_CHECK(strcmp(errstr, errstr2) == 0);
        return 0;
    }
    fuzz_check_names(names);
    used = rf_render_template_placeholders(tpl);
    FUZZ_CHECK(json_equal(used, names));
    json_decref(used);
    json_decref(names);
    FUZZ_CHECK(rf_render_template_nodes(tpl) <= RF_RENDER_MAX_NODES);

    result = rf_render_exec(tpl, fuzz_values, &manifests, errstr, sizeof(errstr));
    if (result != RF_OK) {
        FUZZ_CHECK(result == RF_ERR_PERM);
        FUZZ_CHECK(manifests == NULL);
        FUZZ_CHECK(errstr[0] != '\0');
        rf_render_template_destroy(tpl);
        return 0;
    }
    fuzz_check_manifests(manifests);
    FUZZ_CHECK(rf_render_canonical(manifests, &text, hex) == RF_OK);
    FUZZ_CHECK(rf_render_exec(tpl, fuzz_values, &again, errstr, sizeof(errstr)) == RF_OK);
    FUZZ_CHECK(json_equal(manifests, again));
    FUZZ_CHECK(rf_render_digest(again, hex2) == RF_OK);
    FUZZ_CHECK(strcmp(hex, hex2) == 0);
    free(text);
    json_decref(again);
    json_decref(manifests);
    rf_render_template_destroy(tpl);
    return 0;
}
