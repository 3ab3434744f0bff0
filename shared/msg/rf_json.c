/* Compact JSON text of jansson values, as json_dumps writes it. */
#include "rf_json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_STACK_KEYS 32 /* an object's members sorted without malloc up to this many */

/* The length of the UTF-8 sequence at s (n bytes left) as jansson's utf8_iterate accepts
 * it: no overlong form, no surrogate, nothing above U+10FFFF; 0 when it is not one. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
    uint32_t cp;
    size_t len, i;

    if (s[0] < 0xC2 || s[0] > 0xF4)
        return 0; /* a continuation byte, an overlong 2-byte lead, or past U+10FFFF */
    if (s[0] <= 0xDF) {
        len = 2;
        cp = s[0] & 0x1F;
    } else if (s[0] <= 0xEF) {
        len = 3;
        cp = s[0] & 0x0F;
    } else {
        len = 4;
        cp = s[0] & 0x07;
    }
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000))
        return 0;
    return len;
}

/* The writer puts bytes into b's memory while it has room (put_room), and through rf_buf
 * (which grows it) otherwise: per byte and per call, rf_buf_add and a byte loop with its
 * escape test were ~20% of kubesim's instructions per release (issue 20). The bytes
 * written are the same either way. */

/* Room for n more bytes and the NUL without growing b, and within its cap. */
static inline int put_room(const rf_buf_t *b, size_t n)
{
    return b->cap - b->len > n && (!b->max || n <= b->max - b->len);
}

static inline int put_c(rf_buf_t *b, char c)
{
    if (!put_room(b, 1))
        return rf_buf_addc(b, c);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
    return 0;
}

static inline int put_n(rf_buf_t *b, const char *s, size_t n)
{
    if (!put_room(b, n))
        return rf_buf_add(b, s, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* The ASCII bytes a JSON string escapes: '"', '\\' and control characters. */
static const unsigned char put_escaped[128] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1,
    [0x07] = 1, [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1,
    [0x0e] = 1, [0x0f] = 1, [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1,
    [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1,
    [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, ['"'] = 1, ['\\'] = 1,
};

/* 1 for a byte that is not written as it is without a look: escaped, or UTF-8 to check. */
static inline int put_special(unsigned char c)
{
    return c >= 0x80 || put_escaped[c];
}

/* The length of s's first run of ASCII bytes written as they are: eight at a time while no
 * byte of the eight is below 0x20, '"', '\\' or above 0x7f (the bit tricks "hasless" and
 * "haszero", exact for "some byte of the word"), then one at a time. */
static size_t put_plain(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t x, q, bs;
        memcpy(&x, s + i, sizeof(x));
        q = x ^ (ones * '"');
        bs = x ^ (ones * '\\');
        if ((x | ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & high)
            break;
    }
    while (i < n && !put_special((unsigned char)s[i]))
        i++;
    return i;
}

/* A JSON string as jansson's dump writes it without flags: '"', '\\' and control
 * characters escaped (\b \f \n \r \t, else \u00XX), UTF-8 as it is once checked; with
 * sep (',' or 0) before it and ':' after it for an object's key. -1 for a string that is
 * not UTF-8 (json_dumps's NULL) or at b's cap. */
static int json_put_string_sep(rf_buf_t *b, const char *str, size_t n, char sep, int key)
{
    static const char from[] = "\"\\\b\f\n\r\t", to[] = "\"\\bfnrt";
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0, plain = put_plain(str, n);
    size_t need = n + 2 + (sep != 0) + (key != 0);

    if (plain == n && put_room(b, need)) {
        char *d = b->data + b->len;
        if (sep)
            *d++ = sep;
        *d++ = '"';
        memcpy(d, str, n);
        d += n;
        *d++ = '"';
        if (key)
            *d++ = ':';
        *d = '\0';
        b->len += need;
        return 0;
    }
    if ((sep && put_c(b, sep) != 0) || put_c(b, '"') != 0)
        return -1;
    for (size_t i = plain; i < n; i++) {
        const char *hit;
        char esc[8] = {'\\', 'u', '0', '0'};
        size_t elen = 6, len;

        if (!put_special(s[i]))
            continue;
        if (s[i] >= 0x80) {
            len = utf8_sequence(s + i, n - i);
            if (len == 0)
                return -1;
            i += len - 1;
            continue;
        }
        hit = s[i] ? memchr(from, s[i], sizeof(from) - 1) : NULL;
        if (put_n(b, str + run, i - run) != 0)
            return -1;
        if (hit) {
            esc[1] = to[hit - from];
            elen = 2;
        } else {
            esc[4] = hex[s[i] >> 4];
            esc[5] = hex[s[i] & 15];
        }
        if (put_n(b, esc, elen) != 0)
            return -1;
        run = i + 1;
    }
    if (put_n(b, str + run, n - run) != 0 || put_c(b, '"') != 0)
        return -1;
    return key ? put_c(b, ':') : 0;
}

typedef struct json_member {
    const char *key;
    size_t len;
    json_t *value;
} json_member_t;

/* jansson's order for JSON_SORT_KEYS: by bytes, a prefix before the longer key */
static int json_member_cmp(const json_member_t *x, const json_member_t *y)
{
    int r = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);

    return r ? r : (x->len > y->len) - (x->len < y->len);
}

static int json_member_qsort_cmp(const void *a, const void *b)
{
    return json_member_cmp(a, b);
}

static int json_put(rf_buf_t *b, const json_t *j, int flags);

static int json_put_member(rf_buf_t *b, const char *key, size_t len, const json_t *value,
                           int flags, char sep)
{
    if (json_put_string_sep(b, key, len, sep, 1) != 0)
        return -1;
    return json_put(b, value, flags);
}

/* An object's members sorted by key (keys are distinct: a strict order). */
static int json_put_sorted(rf_buf_t *b, const json_t *j, int flags)
{
    json_member_t stack[JSON_STACK_KEYS], *m = stack, tmp;
    size_t n = json_object_size(j), i = 0, k;
    void *it;
    int rc = 0;

    if (n > JSON_STACK_KEYS) {
        m = malloc(n * sizeof(*m));
        if (!m)
            abort();
    }
    for (it = json_object_iter((json_t *)j); it && i < n;
         it = json_object_iter_next((json_t *)j, it), i++) {
        m[i].key = json_object_iter_key(it);
        m[i].len = json_object_iter_key_len(it);
        m[i].value = json_object_iter_value(it);
    }
    if (i <= JSON_STACK_KEYS) {
        /* insertion sort: a manifest's objects have a few members each */
        for (k = 1; k < i; k++) {
            size_t p = k;
            tmp = m[k];
            while (p > 0 && json_member_cmp(&m[p - 1], &tmp) > 0) {
                m[p] = m[p - 1];
                p--;
            }
            m[p] = tmp;
        }
    } else {
        qsort(m, i, sizeof(*m), json_member_qsort_cmp);
    }
    rc = put_c(b, '{');
    for (k = 0; k < i && rc == 0; k++)
        rc = json_put_member(b, m[k].key, m[k].len, m[k].value, flags, k ? ',' : 0);
    if (m != stack)
        free(m);
    return rc == 0 ? put_c(b, '}') : -1;
}

static int json_put(rf_buf_t *b, const json_t *j, int flags)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        void *it = json_object_iter((json_t *)j);
        int first = 1;
        if (flags & RF_JSON_SORT_KEYS)
            return json_put_sorted(b, j, flags);
        if (put_c(b, '{') != 0)
            return -1;
        for (; it; it = json_object_iter_next((json_t *)j, it), first = 0)
            if (json_put_member(b, json_object_iter_key(it), json_object_iter_key_len(it),
                                json_object_iter_value(it), flags, first ? 0 : ',') != 0)
                return -1;
        return put_c(b, '}');
    }
    case JSON_ARRAY: {
        size_t i, n = json_array_size(j);
        if (put_c(b, '[') != 0)
            return -1;
        for (i = 0; i < n; i++)
            if ((i && put_c(b, ',') != 0) || json_put(b, json_array_get(j, i), flags) != 0)
                return -1;
        return put_c(b, ']');
    }
    case JSON_STRING:
        return json_put_string_sep(b, json_string_value(j), json_string_length(j), 0, 0);
    case JSON_INTEGER: {
        char num[24], *p = num + sizeof(num);
        json_int_t v = json_integer_value(j);
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0)
            *--p = '-';
        return put_n(b, p, (size_t)(num + sizeof(num) - p));
    }
    case JSON_REAL: { /* rare in manifests: jansson's own shortest form */
        char *t = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
        int rc = t ? rf_buf_adds(b, t) : -1;
        free(t);
        return rc;
    }
    case JSON_TRUE:
        return put_n(b, "true", 4);
    case JSON_FALSE:
        return put_n(b, "false", 5);
    default:
        return put_n(b, "null", 4);
    }
}

int rf_json_append(rf_buf_t *b, const json_t *j, int flags)
{
    return j ? json_put(b, j, flags) : -1;
}

int rf_json_append_key(rf_buf_t *b, const char *key, size_t len, char sep)
{
    return json_put_string_sep(b, key, len, sep, 1);
}

char *rf_json_dumps(const json_t *j, int flags)
{
    rf_buf_t b = RF_BUF_INIT;

    if (rf_json_append(&b, j, flags) != 0) {
        rf_buf_release(&b);
        return NULL;
    }
    return rf_buf_detach(&b);
}

size_t rf_json_string_end(const char *s, size_t len, size_t i)
{
    size_t start = i + 1, j, k;
    const char *q;

    for (i = start; i < len; i = j + 1) {
        q = memchr(s + i, '"', len - i);
        if (!q)
            break;
        j = (size_t)(q - s);
        for (k = j; k > start && s[k - 1] == '\\'; k--)
            ;
        if ((j - k) % 2 == 0)
            return j + 1;
    }
    return len + 1;
}

/* ---- plain JSON text ---- */

/* A parse of the plainest JSON into the values jansson makes of it (rf_json_load_plain):
 * whatever else makes it give up (NULL), and the caller takes jansson's parse, errors and
 * all, so it never answers where jansson would not. kubesim's ks_json_load_plain is the
 * same parse. */
typedef struct plain {
    const char *p, *end;
    int depth;
    rf_buf_t esc; /* a string with escapes, written out */
} plain_t;

#define PLAIN_MAX_DEPTH 64

/* Whether c ends a plain run of string: '"', '\\', a control or a byte past ASCII. */
static int plain_stop(unsigned char c)
{
    return (unsigned char)(c - 0x20) >= 0x60 || c == '"' || c == '\\';
}

static void plain_ws(plain_t *x)
{
    while (x->p < x->end && (*x->p == ' ' || *x->p == '\n' || *x->p == '\r' || *x->p == '\t'))
        x->p++;
}

/* The string at x->p (its opening quote): 0 with [*s, *s + *n), which is x->esc's when it
 * had escapes, and x->p past its closing quote; -1 to give up. */
static int plain_string(plain_t *x, const char **s, size_t *n)
{
    const char *p = x->p + 1, *run = p;
    int escaped = 0;

    for (;;) {
        while (p < x->end && !plain_stop((unsigned char)*p))
            p++;
        if (p >= x->end)
            return -1;
        if (*p == '"')
            break;
        if (*p != '\\' || p + 1 >= x->end)
            return -1;
        if (!escaped) {
            rf_buf_reset(&x->esc);
            escaped = 1;
        }
        if (rf_buf_add(&x->esc, run, (size_t)(p - run)) != 0)
            return -1;
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
            rf_buf_addc(&x->esc, p[1]);
            break;
        case 'b':
            rf_buf_addc(&x->esc, '\b');
            break;
        case 'f':
            rf_buf_addc(&x->esc, '\f');
            break;
        case 'n':
            rf_buf_addc(&x->esc, '\n');
            break;
        case 'r':
            rf_buf_addc(&x->esc, '\r');
            break;
        case 't':
            rf_buf_addc(&x->esc, '\t');
            break;
        default:
            return -1; /* \u and what jansson refuses */
        }
        p += 2;
        run = p;
    }
    if (escaped) {
        if (rf_buf_add(&x->esc, run, (size_t)(p - run)) != 0)
            return -1;
        *s = x->esc.data;
        *n = x->esc.len;
    } else {
        *s = x->p + 1;
        *n = (size_t)(p - (x->p + 1));
    }
    x->p = p + 1;
    return 0;
}

static json_t *plain_value(plain_t *x);

static json_t *plain_object(plain_t *x)
{
    json_t *o = json_object();

    if (!o)
        abort();
    x->p++;
    plain_ws(x);
    if (x->p < x->end && *x->p == '}') {
        x->p++;
        return o;
    }
    for (;;) {
        const char *k;
        size_t kn, size = json_object_size(o);
        char stack[128], *key = stack;
        json_t *v = NULL;
        if (x->p >= x->end || *x->p != '"' || plain_string(x, &k, &kn) != 0)
            goto fail;
        /* the key is copied out: a value's escapes reuse x->esc */
        if (kn >= sizeof(stack)) {
            key = malloc(kn + 1);
            if (!key)
                abort();
        }
        memcpy(key, k, kn);
        key[kn] = '\0';
        plain_ws(x);
        if (x->p < x->end && *x->p == ':') {
            x->p++;
            v = plain_value(x);
        }
        if (v)
            json_object_setn_new_nocheck(o, key, kn, v);
        if (key != stack)
            free(key);
        if (!v || json_object_size(o) != size + 1)
            goto fail; /* a key twice: jansson's parse says what it makes of it */
        plain_ws(x);
        if (x->p >= x->end)
            goto fail;
        if (*x->p == '}') {
            x->p++;
            return o;
        }
        if (*x->p != ',')
            goto fail;
        x->p++;
        plain_ws(x);
    }
fail:
    json_decref(o);
    return NULL;
}

static json_t *plain_array(plain_t *x)
{
    json_t *a = json_array();

    if (!a)
        abort();
    x->p++;
    plain_ws(x);
    if (x->p < x->end && *x->p == ']') {
        x->p++;
        return a;
    }
    for (;;) {
        json_t *v = plain_value(x);
        if (!v || json_array_append_new(a, v) != 0)
            goto fail;
        plain_ws(x);
        if (x->p >= x->end)
            goto fail;
        if (*x->p == ']') {
            x->p++;
            return a;
        }
        if (*x->p != ',')
            goto fail;
        x->p++;
    }
fail:
    json_decref(a);
    return NULL;
}

/* Integers of up to 18 digits (no overflow on the way); reals are jansson's conversion. */
static json_t *plain_number(plain_t *x)
{
    const char *p = x->p;
    int neg = 0;
    size_t digits;
    long long v = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }
    for (digits = 0; p + digits < x->end && p[digits] >= '0' && p[digits] <= '9'; digits++)
        ;
    if (digits == 0 || digits > 18 || (p[0] == '0' && digits > 1))
        return NULL;
    for (size_t i = 0; i < digits; i++)
        v = v * 10 + (p[i] - '0');
    p += digits;
    if (p < x->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return NULL;
    x->p = p;
    return json_integer(neg ? -v : v);
}

static json_t *plain_word(plain_t *x, const char *word, size_t n, json_t *value)
{
    if ((size_t)(x->end - x->p) < n || memcmp(x->p, word, n) != 0)
        return NULL;
    x->p += n;
    return value;
}

static json_t *plain_value(plain_t *x)
{
    json_t *v;
    const char *s;
    size_t n;

    plain_ws(x);
    if (x->p >= x->end)
        return NULL;
    switch (*x->p) {
    case '{':
    case '[':
        if (x->depth >= PLAIN_MAX_DEPTH)
            return NULL;
        x->depth++;
        v = *x->p == '{' ? plain_object(x) : plain_array(x);
        x->depth--;
        return v;
    case '"':
        if (plain_string(x, &s, &n) != 0)
            return NULL;
        return json_stringn_nocheck(s, n);
    case 't':
        return plain_word(x, "true", 4, json_true());
    case 'f':
        return plain_word(x, "false", 5, json_false());
    case 'n':
        return plain_word(x, "null", 4, json_null());
    default:
        if (*x->p == '-' || (*x->p >= '0' && *x->p <= '9'))
            return plain_number(x);
        return NULL;
    }
}

json_t *rf_json_load_plain(const char *data, size_t len)
{
    plain_t x = {data, data + len, 0, RF_BUF_INIT};
    json_t *v = NULL;

    plain_ws(&x);
    if (x.p < x.end && (*x.p == '{' || *x.p == '['))
        v = plain_value(&x);
    plain_ws(&x);
    if (v && x.p != x.end) {
        json_decref(v);
        v = NULL;
    }
    rf_buf_release(&x.esc);
    return v;
}

json_t *rf_json_loadb(const char *data, size_t len, size_t flags, json_error_t *error)
{
    json_t *v = NULL;

    if ((flags & ~(size_t)JSON_REJECT_DUPLICATES) == 0)
        v = rf_json_load_plain(data, len);
    return v ? v : json_loadb(data, len, flags, error);
}
