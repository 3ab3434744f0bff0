/* JSON text delimited (or checked) without parsing it: for members a consumer only passes
 * on or leaves out. */
#ifndef RF_JTEXT_H
#define RF_JTEXT_H

#include <stddef.h>

/*
 * Indexes into s[0..len). rf_jtext_skip and rf_jtext_next_member only delimit (strings,
 * nesting), so what is kept must still be checked by whoever parses it (jansson); a text
 * that does not end where expected gives len + 1 (or -1), and the caller parses it whole
 * instead. rf_jtext_valid also checks.
 */

/* The index of the first byte at or after s[i] that is not a JSON blank. */
size_t rf_jtext_ws(const char *s, size_t len, size_t i);

/* The index just past the JSON value at s[i] (after blanks); len + 1 when it does not end.
 * A value that is neither a string, an object nor an array ends at the first blank, ',',
 * '}' or ']' (i itself when there is none before it: an empty value). */
size_t rf_jtext_skip(const char *s, size_t len, size_t i);

/*
 * The next member of the object whose members start at s[*i] (just after its '{' or a
 * comma): 1 with its key [*ks, *ke) (quotes included) and value [*vs, *ve) (not empty), *i
 * past it and its comma; 0 at the object's '}' (*i at it); -1 when not an object as
 * expected (a comma before the '}' too).
 */
int rf_jtext_next_member(const char *s, size_t len, size_t *i, size_t *ks, size_t *ke, size_t *vs,
                         size_t *ve);

/*
 * The members of a JSON object in text, one at a time, for a reader that goes down into some
 * of them: a value is delimited only when asked (rf_jtext_it_value_end) or passed over by
 * entering it (rf_jtext_it_enter), so each byte is read once however deep the reader goes
 * (rf_jtext_next_member delimits every value, and a reader that then enters one reads it
 * twice). Delimits only, as rf_jtext_skip: what is read must be checked by its reader.
 */
typedef struct rf_jtext_it {
    const char *s;
    size_t len;                /* the text's end */
    size_t i;                  /* where the next member starts */
    size_t ks, ke;             /* the current member's key, quotes included */
    size_t vs, ve;             /* its value; ve 0 until delimited */
    size_t end;                /* the object's '}', once reached */
    int state;                 /* 0 before a member, 1 in one, -1 at the end */
    int comma;                 /* the current member came after a comma */
    int bad;                   /* the text is not an object as expected (ends it, and its
                                * parents: they cannot go on) */
    struct rf_jtext_it *parent; /* entered from; learns the value's end at our '}' */
} rf_jtext_it_t;

/* The members of the object at s[i] (after blanks): none when it is not an object. */
void rf_jtext_it_init(rf_jtext_it_t *it, const char *s, size_t len, size_t i);

/* 1 with the next member (ks, ke, vs); 0 at the object's end (end set) or when the text is
 * not as expected (bad set). */
int rf_jtext_it_next(rf_jtext_it_t *it);

/* 1 when the current member's key is name (no escapes). */
int rf_jtext_it_key_is(const rf_jtext_it_t *it, const char *name);

/* The end of the current member's value (delimited now if not yet); len + 1 when it does
 * not end. */
size_t rf_jtext_it_value_end(rf_jtext_it_t *it);

/* child: the members of the current member's value (none when not an object). Reading it
 * to its end tells it the value's end; leaving it early only costs it a second read. */
void rf_jtext_it_enter(rf_jtext_it_t *child, rf_jtext_it_t *it);

/* The length of the valid UTF-8 sequence at s (n bytes left, n > 0), 1 for ASCII, or 0
 * (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF): the rule of
 * rf_jtext_valid and of rf_msg's payload check, which is jansson's. */
size_t rf_jtext_utf8_len(const unsigned char *s, size_t n);

/* Nesting rf_jtext_valid follows (arrays and objects); deeper is not valid. */
#define RF_JTEXT_MAX_DEPTH 64

/*
 * The index just past the JSON value at s[i] (after blanks) when it is one that jansson's
 * json_loadb(JSON_REJECT_DUPLICATES) takes: RFC 8259 grammar, strings valid UTF-8 without
 * control characters, escapes as JSON has them (\u surrogates in pairs, no \u0000), no
 * object with a key twice, integers within long long and reals within double. Else len + 1,
 * also for what it does not check byte by byte and leaves to a parser: an object key with a
 * backslash, an integer of 19 digits or more, a real with an exponent of 4 digits or more
 * or beyond 1e308, nesting past RF_JTEXT_MAX_DEPTH (so a valid value may be refused; a
 * value it takes jansson takes). No recursion past that depth, no allocation for objects
 * of up to 32 members.
 */
size_t rf_jtext_valid(const char *s, size_t len, size_t i);

/* rf_jtext_valid with at most max_depth (at most RF_JTEXT_MAX_DEPTH) levels of arrays and
 * objects: for a value that is itself max - max_depth levels inside a text of max. */
size_t rf_jtext_valid_depth(const char *s, size_t len, size_t i, int max_depth);

#endif
