/* Parser of the Kubernetes watch stream (newline-delimited {"type","object"}), transport-free. */
#ifndef RF_WATCH_H
#define RF_WATCH_H

#include <stddef.h>

#include <jansson.h>

#include "rf_buf.h"

typedef enum rf_watch_type {
    RF_WATCH_ADDED = 0,
    RF_WATCH_MODIFIED,
    RF_WATCH_DELETED,
    RF_WATCH_BOOKMARK, /* object carries only metadata.resourceVersion */
    RF_WATCH_ERROR,    /* an ERROR event (object is a Status) other than 410 */
    RF_WATCH_EXPIRED,  /* an ERROR event with a 410 Status: the resourceVersion is too old,
                        * the client must list again */
    RF_WATCH_SYNC,     /* rf_kube_watch only: one object of a (re)list */
    RF_WATCH_SYNCED,   /* rf_kube_watch only: the (re)list is complete (object NULL); objects
                        * not delivered since the previous RF_WATCH_SYNC run are gone */
} rf_watch_type_t;

typedef struct rf_watch_event {
    rf_watch_type_t type;
    json_t *object;      /* borrowed: valid until the next call on the parser (json_incref to
                          * keep it); NULL only for RF_WATCH_SYNCED */
    const char *message; /* ERROR, EXPIRED: the Status message ("" if none); else NULL */
    int code;            /* ERROR, EXPIRED: the Status code (0 if none); else 0 */
    /* A parser in raw mode (rf_watch_parser_set_raw) only, for ADDED, MODIFIED, DELETED
     * and BOOKMARK events, object NULL: text[0..len) is the object's JSON as the server
     * sent it (all members), delimited but not checked, and rv its
     * metadata.resourceVersion (NULL if none); valid until the next call on the parser.
     * Else text and rv are NULL. */
    const char *text;
    size_t len;
    const char *rv;
} rf_watch_event_t;

typedef struct rf_watch_parser rf_watch_parser_t;

/* "ADDED", "MODIFIED", ..., "SYNC", "SYNCED". */
const char *rf_watch_type_name(rf_watch_type_t type);

/* A parser that refuses lines (events) longer than max_line bytes (0 = 16 MiB). */
rf_watch_parser_t *rf_watch_parser_new(size_t max_line);
void rf_watch_parser_destroy(rf_watch_parser_t *p);

/* Members that no consumer reads, left out of each event's object unparsed:
 * {"metadata.managedFields", NULL} (the larger part of a Deployment's event). */
extern const char *const rf_watch_drop_default[];

/* The members left out of each event's object, as dotted paths from the object's root
 * ("spec.template"; keys without dots), NULL-terminated; borrowed for the parser's life.
 * NULL: none (the object as it came). Default: rf_watch_drop_default. */
void rf_watch_parser_set_drop(rf_watch_parser_t *p, const char *const *paths);

/* Raw mode (1): the parser reads an event's type, its object's extent and
 * metadata.resourceVersion from the line without parsing it into a tree (jansson), and
 * hands the object over as text (rf_watch_event_t.text): for a consumer that reads a few
 * members of each object (the track stage: a fifth of its CPU went to parsing Deployments
 * it then read a dozen fields of). The drop list does not apply. A line that is not
 * plainly an event {"type": "<a known type>", "object": {...}} (and every ERROR event) is
 * parsed whole as in the default mode (0): its object comes as a tree, or its error. */
void rf_watch_parser_set_raw(rf_watch_parser_t *p, int raw);

/* The text of a list answer (an object whose "items" is an array of objects) without the
 * members drop names (as for rf_watch_parser_set_drop) in each item, appended to out,
 * unparsed: 0, or -1 when drop is empty or the text is not as expected (then out holds
 * a part: reset it and parse the text whole). */
int rf_watch_slim_list(const char *s, size_t len, const char *const *drop, rf_buf_t *out);

/* Forgets buffered bytes and the end-of-stream mark (for a new connection). */
void rf_watch_parser_reset(rf_watch_parser_t *p);

/* Hands the parser the next bytes of the stream, in any split. An oversize line is dropped
 * as it arrives (memory stays bounded by max_line plus one chunk) and reported by next(). */
void rf_watch_parser_feed(rf_watch_parser_t *p, const void *data, size_t len);

/* Marks the end of the stream: a final line without its newline becomes complete. */
void rf_watch_parser_end(rf_watch_parser_t *p);

/* Takes the next complete event. Returns 1 and fills ev; the event's object comes without
 * the members of the parser's drop list (not parsed); 0 when more bytes are needed; -1
 * when a line was bad (not JSON, not an event, unknown type, oversize) and was skipped, with
 * the reason in errstr; parsing goes on with the following line. Empty lines are skipped. */
int rf_watch_parser_next(rf_watch_parser_t *p, rf_watch_event_t *ev, char *errstr,
                         size_t errstr_size);

/* Bytes held for an incomplete line. */
size_t rf_watch_parser_pending(const rf_watch_parser_t *p);

#endif
