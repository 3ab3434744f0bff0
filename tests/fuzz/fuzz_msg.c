/* Fuzz target: rf_msg_parse against the real schemas, then the dead letter of any refusal. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rf_msg.h"
#include "rf_schema.h"

/*
 * Input: byte 0 picks the expected schema prefix (what the worker derives from the topic),
 * byte 1 is the key length (0xff: no key at all), then the key, then the payload.
 * Besides sanitizer reports, the target aborts when a contract of rf_msg.h breaks:
 * - the result is RF_OK with a body whose schema has the expected prefix and validates,
 *   or RF_ERR_PERM with a reason and no body;
 * - the dead letter of a refused message validates against relfleet.dlq.v1 and keeps the
 *   payload's size.
 */

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_msg: check failed: %s (line %d)\n", #cond, __LINE__);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const fuzz_prefixes[] = {
    NULL,
    "relfleet.request.",
    "relfleet.rendered.",
    "relfleet.applied.",
    "relfleet.command.",
    "relfleet.result.",
    "relfleet.dlq.",
    "relfleet.?",
};

static rf_schema_registry_t *fuzz_reg;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("RELFLEET_SCHEMA_DIR");
    char errstr[1024];

    (void)argc;
    (void)argv;
    fuzz_reg = rf_schema_registry_new();
    if (!dir)
        dir = RELFLEET_SOURCE_DIR "/schemas";
    if (!fuzz_reg || rf_schema_registry_load_dir(fuzz_reg, dir, errstr, sizeof(errstr)) != RF_OK) {
        fprintf(stderr, "fuzz_msg: cannot load schemas from '%s': %s\n", dir, errstr);
        exit(1);
    }
    return 0;
}

/* The dead letter of a refused message must be a valid relfleet.dlq.v1 message. */
static void fuzz_check_dead_letter(const char *reason, const uint8_t *key, size_t key_len,
                                   const uint8_t *payload, size_t len)
{
    char errstr[1024];
    char *text;
    json_t *dlq;
    json_error_t jerr;

    text = rf_msg_dlq_build("render", reason, "relfleet.requests", 3, (int64_t)len, key, key_len,
                            payload, len);
    FUZZ_CHECK(text != NULL);
    dlq = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    FUZZ_CHECK(dlq != NULL);
    if (rf_schema_validate(fuzz_reg, "relfleet.dlq.v1", dlq, errstr, sizeof(errstr)) != RF_OK) {
        fprintf(stderr, "fuzz_msg: dead letter does not validate: %s\n%.2000s\n", errstr, text);
        abort();
    }
    FUZZ_CHECK(json_integer_value(json_object_get(dlq, "payload_size")) == (json_int_t)len);
    FUZZ_CHECK(json_is_true(json_object_get(dlq, "payload_truncated")) ==
               (len > RF_MSG_DLQ_PAYLOAD_MAX));
    json_decref(dlq);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *prefix;
    const uint8_t *key = NULL, *payload;
    size_t key_len = 0, len;
    json_t *body = (json_t *)1; /* rf_msg_parse must set it */
    char errstr[1024];
    char again[1024];
    const char *name;
    rf_err_t result;

    if (size < 2)
        return 0;
    prefix = fuzz_prefixes[data[0] % (sizeof(fuzz_prefixes) / sizeof(fuzz_prefixes[0]))];
    payload = data + 2;
    len = size - 2;
    if (data[1] != 0xff) {
        key_len = data[1] < len ? data[1] : len;
        key = payload;
        payload += key_len;
        len -= key_len;
    }
    errstr[0] = '\0';
    result =
        rf_msg_parse(fuzz_reg, payload, len, key, key_len, prefix, &body, errstr, sizeof(errstr));
    FUZZ_CHECK(result == RF_OK || result == RF_ERR_PERM);
    if (result == RF_OK) {
        FUZZ_CHECK(json_is_object(body));
        name = json_string_value(json_object_get(body, "schema"));
        FUZZ_CHECK(name != NULL);
        FUZZ_CHECK(!prefix || strncmp(name, prefix, strlen(prefix)) == 0);
        FUZZ_CHECK(rf_schema_validate(fuzz_reg, name, body, again, sizeof(again)) == RF_OK);
        json_decref(body);
        return 0;
    }
    FUZZ_CHECK(body == NULL);
    FUZZ_CHECK(errstr[0] != '\0');
    FUZZ_CHECK(strlen(errstr) < sizeof(errstr));
    fuzz_check_dead_letter(errstr, key, key_len, payload, len);
    return 0;
}
