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
 * and the code 400 or 415, or when what it decoded, encoded again (ks_proto_encode, the
 * answers to clients that ask for protobuf), does not decode, or does not decode to the same
 * object after one round (the first may lose what JSON cannot say: a Time's nanoseconds).
 * ASan and UBSan catch reads past the body, leaks and overflows.
 */

static json_t *round_trip(const json_t *o)
{
    char err[1024], *buf;
    size_t len;
    int code;
    json_t *back;

    if (ks_proto_encode(o, &buf, &len) != 0) {
        fprintf(stderr, "fuzz_kubesim_proto: a decoded object does not encode\n");
        abort();
    }
    back = ks_proto_decode(buf, len, &code, err, sizeof(err));
    free(buf);
    if (!back) {
        fprintf(stderr, "fuzz_kubesim_proto: an encoded object does not decode: %s\n", err);
        abort();
    }
    return back;
}
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
        if (json_object_get(o, "apiVersion")) { /* what kubesim answers always has one */
            json_t *once = round_trip(o), *twice = round_trip(once);
            if (!json_equal(once, twice)) {
                fprintf(stderr, "fuzz_kubesim_proto: encoding and decoding changes the object\n");
                abort();
            }
            json_decref(once);
            json_decref(twice);
        }
        json_decref(o);
    } else if ((code != 400 && code != 415) || !err[0]) {
        fprintf(stderr, "fuzz_kubesim_proto: code %d, message '%s'\n", code, err);
        abort();
    }
    return 0;
}
