/* Compact JSON text of jansson values, byte for byte as json_dumps writes it, and plain JSON
 * text parsed into them as json_loadb does: both faster. */
#ifndef RF_JSON_H
#define RF_JSON_H

#include <jansson.h>

#include "rf_buf.h"

/* Flags of rf_json_append. */
#define RF_JSON_SORT_KEYS 0x1 /* every object's members in key order (JSON_SORT_KEYS) */

/*
 * Appends the JSON text of j (any value) to b exactly as json_dumps(j, JSON_COMPACT |
 * JSON_ENCODE_ANY, plus JSON_SORT_KEYS with RF_JSON_SORT_KEYS) writes it: strings with '"',
 * '\\' and control characters escaped (\b \f \n \r \t, else \u00XX), everything else as it
 * is; keys sorted by their bytes, a prefix first; integers in decimal; reals through jansson.
 * Without jansson 2.14's loop check, which costs a snprintf("%p") and a hash table entry for
 * every object and array (j must hold no cycle: jansson's own setters refuse one).
 * Returns 0, or -1 where json_dumps returns NULL (a string that is not valid UTF-8, which
 * only the _nocheck setters let in) or when b's cap is reached; b then holds a part.
 * A key that is not valid UTF-8 is -1 here where jansson writes a broken text.
 */
int rf_json_append(rf_buf_t *b, const json_t *j, int flags);

/* An object member's key as rf_json_append writes it: sep first when not 0 (','), then the
 * key as a JSON string and ':'. For a writer of its own objects' members (kubesim's
 * stored-text cache); -1 as rf_json_append. */
int rf_json_append_key(rf_buf_t *b, const char *key, size_t len, char sep);

/* rf_json_append into a new string (free() it); NULL where that returns -1. */
char *rf_json_dumps(const json_t *j, int flags);

/* The index just past the JSON string that starts at s[i] ('"'); len + 1 when unclosed. A
 * quote ends it unless an odd run of backslashes comes before it. memchr finds the quotes:
 * byte by byte, the scans of apply's API answers and of track's watch lines cost a tenth of
 * those workers. For scanners of JSON text that skip what they do not parse. */
size_t rf_json_string_end(const char *s, size_t len, size_t i);

/*
 * The value json_loadb(data, len, 0, NULL) makes of plain JSON text: an object or array of
 * ASCII strings without control characters (the short escapes, not \u), integers of up to
 * 18 digits, true, false and null, no real, no key twice, up to 64 levels, members in the
 * order they came. NULL for anything else, which jansson's parse may take or refuse. Scans
 * strings by runs where json_loadb reads a byte at a time through a stream. New reference.
 */
json_t *rf_json_load_plain(const char *data, size_t len);

/* json_loadb(data, len, flags, error) for flags 0 or JSON_REJECT_DUPLICATES: the same value,
 * or NULL with the same error (rf_json_load_plain's value, else jansson's parse). Other
 * flags go to jansson as they are. New reference. */
json_t *rf_json_loadb(const char *data, size_t len, size_t flags, json_error_t *error);

#endif
