/* Log lines: logfmt quoting, JSON lines that parse, context carried and cleared. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "rf_log.h"

/* Runs fn with stderr sent to a file; returns what it wrote (caller frees). */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/rf_log_test_XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(STDERR_FILENO);
    char *text = calloc(1, 65536);
    FILE *f;

    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    f = fdopen(fd, "r");
    rewind(f);
    fread(text, 1, 65535, f);
    fclose(f);
    unlink(path);
    return text;
}

static void write_logfmt(void)
{
    rf_log_setup("render", RF_LOG_INFO, RF_LOG_LOGFMT);
    rf_log_ctx_set("release", "r1");
    rf_log_ctx_set("partition", "3");
    rf_log_info("cannot render template '%s': %s", "web", "bad \"x\"\nline");
    rf_log_debug("hidden %d", 1);
    rf_log_ctx_set("release", NULL);
    rf_log_warn("plain");
    rf_log_ctx_clear();
}

static void test_logfmt(void **state)
{
    char *out = capture(write_logfmt);
    char *second;

    (void)state;
    assert_non_null(strstr(out, "level=info stage=render release=r1 partition=3 msg=\"cannot "
                                "render template 'web': bad \\\"x\\\"\\nline\"\n"));
    assert_null(strstr(out, "hidden"));
    second = strstr(out, "level=warn");
    assert_non_null(second);
    assert_null(strstr(second, "release="));
    assert_non_null(strstr(second, "partition=3 msg=plain"));
    free(out);
}

static void write_json(void)
{
    rf_log_setup("track", RF_LOG_DEBUG, RF_LOG_JSON);
    rf_log_ctx_set("topic", "relfleet.applied");
    rf_log_ctx_set("partition", "5");
    rf_log_ctx_set("offset", "12345");
    rf_log_ctx_set("service", "42");
    rf_log_debug("tab\there \x01 %s", "\"q\"");
    rf_log_ctx_clear();
    rf_log_setup("relfleet", RF_LOG_INFO, RF_LOG_LOGFMT);
}

static void test_json_lines_parse(void **state)
{
    char *out = capture(write_json);
    json_error_t err;
    json_t *line = json_loads(out, JSON_DISABLE_EOF_CHECK, &err);

    (void)state;
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "level")), "debug");
    assert_string_equal(json_string_value(json_object_get(line, "stage")), "track");
    assert_int_equal(json_integer_value(json_object_get(line, "partition")), 5);
    assert_int_equal(json_integer_value(json_object_get(line, "offset")), 12345);
    /* Only partition and offset become numbers; a numeric service name stays a string. */
    assert_string_equal(json_string_value(json_object_get(line, "service")), "42");
    assert_string_equal(json_string_value(json_object_get(line, "msg")), "tab\there \x01 \"q\"");
    json_decref(line);
    free(out);
}

static void test_level_parse(void **state)
{
    rf_log_level_t l;

    (void)state;
    assert_int_equal(rf_log_level_parse("warn", &l), 0);
    assert_int_equal(l, RF_LOG_WARN);
    assert_int_equal(rf_log_level_parse("verbose", &l), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logfmt),
        cmocka_unit_test(test_json_lines_parse),
        cmocka_unit_test(test_level_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
