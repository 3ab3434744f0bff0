/* Fuzz target: the watch-stream parser fed in chunks whose sizes come from the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rf_watch.h"

/*
 * Input: byte 0 picks the longest line (0: the default 16 MiB; else 1..255 * 4 bytes) and
 * byte 1 the number n of chunk-size bytes that follow; the rest is the stream, fed in chunks
 * of those sizes (0 means 1; cycled). The target aborts when the events (return value,
 * type, object, code, message) differ from those of the same stream fed in one piece:
 * rf_watch.h promises the same events "in any split". It also checks that a parser reset
 * mid-line is as new, and that what it holds between chunks stays under max_line.
 */

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_watch: check failed: %s (line %d)\n", #cond, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct fuzz_event {
    int ret;
    rf_watch_type_t type;
    char *object; /* compact, sorted JSON */
    char *message;
    int code;
} fuzz_event_t;

typedef struct fuzz_events {
    fuzz_event_t *ev;
    size_t n, cap;
} fuzz_events_t;

static fuzz_events_t fuzz_whole, fuzz_split;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_events_clear(fuzz_events_t *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->ev[i].object);
        free(e->ev[i].message);
    }
    e->n = 0;
}

/* Takes every event the parser has now. */
static void fuzz_drain(rf_watch_parser_t *p, fuzz_events_t *e)
{
    rf_watch_event_t ev;
    char errstr[512];
    fuzz_event_t *out;
    int ret;

    for (;;) {
        errstr[0] = '\0';
        ret = rf_watch_parser_next(p, &ev, errstr, sizeof(errstr));
        if (ret == 0)
            return;
        FUZZ_CHECK(ret == 1 || ret == -1);
        if (e->n == e->cap) {
            e->cap = e->cap ? 2 * e->cap : 64;
            e->ev = realloc(e->ev, e->cap * sizeof(*e->ev));
            FUZZ_CHECK(e->ev != NULL);
        }
        out = &e->ev[e->n++];
        memset(out, 0, sizeof(*out));
        out->ret = ret;
        if (ret == -1) {
            FUZZ_CHECK(errstr[0] != '\0');
            continue;
        }
        FUZZ_CHECK(ev.type <= RF_WATCH_EXPIRED);
        FUZZ_CHECK(json_is_object(ev.object));
        FUZZ_CHECK((ev.message != NULL) ==
                   (ev.type == RF_WATCH_ERROR || ev.type == RF_WATCH_EXPIRED));
        out->type = ev.type;
        out->object = json_dumps(ev.object, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        FUZZ_CHECK(out->object != NULL);
        out->message = ev.message ? strdup(ev.message) : NULL;
        out->code = ev.code;
    }
}

static int fuzz_same(const fuzz_event_t *a, const fuzz_event_t *b)
{
    if (a->ret != b->ret)
        return 0;
    if (a->ret == -1)
        return 1; /* the wording of a refusal may depend on where the line was cut */
    return a->type == b->type && a->code == b->code && strcmp(a->object, b->object) == 0 &&
           (a->message == NULL) == (b->message == NULL) &&
           (!a->message || strcmp(a->message, b->message) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sizes, *stream;
    size_t nsizes, len, max_line, off, i, chunk;
    rf_watch_parser_t *p;

    if (size < 2)
        return 0;
    max_line = data[0] ? (size_t)data[0] * 4 : 0;
    nsizes = data[1] < size - 2 ? data[1] : size - 2;
    sizes = data + 2;
    stream = sizes + nsizes;
    len = size - 2 - nsizes;

    p = rf_watch_parser_new(max_line);
    rf_watch_parser_feed(p, stream, len);
    rf_watch_parser_end(p);
    fuzz_drain(p, &fuzz_whole);
    FUZZ_CHECK(rf_watch_parser_pending(p) == 0);
    rf_watch_parser_destroy(p);

    p = rf_watch_parser_new(max_line);
    for (off = 0, i = 0; off < len; off += chunk, i++) {
        chunk = nsizes ? (size_t)sizes[i % nsizes] : len;
        if (chunk == 0)
            chunk = 1;
        if (chunk > len - off)
            chunk = len - off;
        rf_watch_parser_feed(p, stream + off, chunk);
        fuzz_drain(p, &fuzz_split);
        /* An oversize line is dropped as it arrives (rf_watch.h): once the complete lines
         * are taken, at most one incomplete line of max_line bytes is held. */
        if (max_line)
            FUZZ_CHECK(rf_watch_parser_pending(p) <= max_line);
    }
    rf_watch_parser_end(p);
    fuzz_drain(p, &fuzz_split);
    FUZZ_CHECK(rf_watch_parser_pending(p) == 0);

    if (fuzz_whole.n != fuzz_split.n) {
        fprintf(stderr, "fuzz_watch: %zu events in one piece, %zu in chunks\n", fuzz_whole.n,
                fuzz_split.n);
        abort();
    }
    for (i = 0; i < fuzz_whole.n; i++) {
        if (!fuzz_same(&fuzz_whole.ev[i], &fuzz_split.ev[i])) {
            fprintf(stderr, "fuzz_watch: event %zu differs: %d %s / %d %s\n", i,
                    fuzz_whole.ev[i].ret,
                    fuzz_whole.ev[i].object ? fuzz_whole.ev[i].object : "(refused)",
                    fuzz_split.ev[i].ret,
                    fuzz_split.ev[i].object ? fuzz_split.ev[i].object : "(refused)");
            abort();
        }
    }
    /* After a reset mid-line the parser is as new: the stream gives the same events. */
    rf_watch_parser_feed(p, stream, len / 2);
    rf_watch_parser_reset(p);
    FUZZ_CHECK(rf_watch_parser_pending(p) == 0);
    fuzz_events_clear(&fuzz_split);
    rf_watch_parser_feed(p, stream, len);
    rf_watch_parser_end(p);
    fuzz_drain(p, &fuzz_split);
    FUZZ_CHECK(fuzz_split.n == fuzz_whole.n);
    for (i = 0; i < fuzz_whole.n; i++)
        FUZZ_CHECK(fuzz_same(&fuzz_whole.ev[i], &fuzz_split.ev[i]));
    rf_watch_parser_destroy(p);
    fuzz_events_clear(&fuzz_whole);
    fuzz_events_clear(&fuzz_split);
    return 0;
}
