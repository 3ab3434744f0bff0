/* Fuzz target: kubesim's protobuf body decoder (ops/kubesim/ks_proto.c). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ks_proto.h"

/*
 * Input: a request body as kubectl would send it (k8s\0, then a runtime.Unknown). The target
 * aborts when the decoder answers neither an object with a kind nor an error with a message
 * and the code 400 or 415; ASan and UBSan catch reads past the body, leaks and overflows.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    int code = 0;
    json_t *o = ks_proto_decode(data, size, &code, err, sizeof(err));

    if (o) {
        char *s = json_dumps(o, JSON_COMPACT);
        if (!json_is_object(o) || !json_is_string(json_object_get(o, "kind")) || !s)
            abort();
        free(s);
        json_decref(o);
    } else if ((code != 400 && code != 415) || !err[0]) {
        fprintf(stderr, "fuzz_kubesim_proto: code %d, message '%s'\n", code, err);
        abort();
    }
    return 0;
}
