/* JSON text delimited (or checked) without parsing it: for members a consumer only passes
 * on or leaves out. */
#include "rf_jtext.h"

#include <stdlib.h>
#include <string.h>

#include "rf_json.h"

size_t rf_jtext_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* The bytes that open or close a value inside an object or array. */
static const unsigned char jtext_nesting[256] = {
    ['"'] = 1, ['{'] = 1, ['['] = 1, ['}'] = 1, [']'] = 1};

size_t rf_jtext_skip(const char *s, size_t len, size_t i)
{
    int depth = 0;

    i = rf_jtext_ws(s, len, i);
    if (i >= len)
        return len + 1;
    if (s[i] == '"')
        return rf_json_string_end(s, len, i);
    if (s[i] != '{' && s[i] != '[') {
        while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
               s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            i++;
        return i;
    }
    for (; i < len; i++) {
        while (i < len && !jtext_nesting[(unsigned char)s[i]])
            i++;
        if (i >= len)
            break;
        if (s[i] == '"') {
            i = rf_json_string_end(s, len, i) - 1;
            if (i >= len)
                return len + 1;
        } else if (s[i] == '{' || s[i] == '[') {
            depth++;
        } else if (--depth == 0) {
            return i + 1;
        }
    }
    return len + 1;
}

int rf_jtext_next_member(const char *s, size_t len, size_t *i, size_t *ks, size_t *ke, size_t *vs,
                         size_t *ve)
{
    size_t j = rf_jtext_ws(s, len, *i);

    if (j < len && s[j] == '}') {
        if (*i > 0 && s[*i - 1] == ',')
            return -1; /* a comma before it is not JSON */
        *i = j;
        return 0;
    }
    *ks = j;
    if (j >= len || s[j] != '"' || (*ke = rf_json_string_end(s, len, j)) > len)
        return -1;
    j = rf_jtext_ws(s, len, *ke);
    if (j >= len || s[j] != ':')
        return -1;
    *vs = rf_jtext_ws(s, len, j + 1);
    *ve = rf_jtext_skip(s, len, *vs);
    if (*ve > len || *ve == *vs)
        return -1;
    j = rf_jtext_ws(s, len, *ve);
    if (j < len && s[j] == ',')
        j++;
    else if (j >= len || s[j] != '}')
        return -1;
    *i = j;
    return 1;
}

void rf_jtext_it_init(rf_jtext_it_t *it, const char *s, size_t len, size_t i)
{
    memset(it, 0, sizeof(*it));
    it->s = s;
    it->len = len;
    i = rf_jtext_ws(s, len, i);
    it->i = i + 1;
    it->state = i < len && s[i] == '{' ? 0 : -1;
}

static int jtext_it_fail(rf_jtext_it_t *it)
{
    for (; it; it = it->parent) {
        it->bad = 1;
        it->state = -1;
    }
    return 0;
}

int rf_jtext_it_next(rf_jtext_it_t *it)
{
    const char *s = it->s;
    size_t len = it->len, j;

    if (it->state < 0)
        return 0;
    it->comma = 0;
    if (it->state == 1) { /* past the current value and its comma */
        j = rf_jtext_ws(s, len, rf_jtext_it_value_end(it));
        if (j >= len || (s[j] != ',' && s[j] != '}'))
            return jtext_it_fail(it);
        it->comma = s[j] == ',';
        it->i = j + it->comma;
    }
    j = rf_jtext_ws(s, len, it->i);
    if (j < len && s[j] == '}') {
        if (it->comma)
            return jtext_it_fail(it); /* a comma before it is not JSON */
        it->end = j;
        it->state = -1;
        if (it->parent && it->parent->state == 1 && !it->parent->ve)
            it->parent->ve = j + 1;
        return 0;
    }
    it->ks = j;
    if (j >= len || s[j] != '"' || (it->ke = rf_json_string_end(s, len, j)) > len)
        return jtext_it_fail(it);
    j = rf_jtext_ws(s, len, it->ke);
    if (j >= len || s[j] != ':')
        return jtext_it_fail(it);
    it->vs = rf_jtext_ws(s, len, j + 1);
    if (it->vs >= len)
        return jtext_it_fail(it);
    it->ve = 0;
    it->state = 1;
    return 1;
}

int rf_jtext_it_key_is(const rf_jtext_it_t *it, const char *name)
{
    size_t n = strlen(name);

    return it->state == 1 && it->ke - it->ks == n + 2 && memcmp(it->s + it->ks + 1, name, n) == 0;
}

size_t rf_jtext_it_value_end(rf_jtext_it_t *it)
{
    if (it->state != 1)
        return it->len + 1;
    if (!it->ve) {
        it->ve = rf_jtext_skip(it->s, it->len, it->vs);
        if (it->ve == it->vs) /* an empty value */
            it->ve = it->len + 1;
    }
    return it->ve;
}

void rf_jtext_it_enter(rf_jtext_it_t *child, rf_jtext_it_t *it)
{
    if (it->state != 1) {
        rf_jtext_it_init(child, it->s, 0, 0);
        return;
    }
    /* a value already delimited bounds its reader; else the reader finds its end */
    rf_jtext_it_init(child, it->s, it->ve ? it->ve : it->len, it->vs);
    child->parent = it->ve ? NULL : it;
}

/* --- rf_jtext_valid ------------------------------------------------------------------- */

/* What a byte inside a string is: 0 plain, 1 '"', 2 '\\', 3 a control character (not
 * JSON), 4 the lead of a UTF-8 sequence (checked as one). */
/* clang-format off */
#define JT4(x) x, x, x, x
#define JT16(x) JT4(x), JT4(x), JT4(x), JT4(x)
static const unsigned char jtext_in_string[256] = {
    JT16(3), JT16(3),                          /* 0x00-0x1f */
    0, 0, 1, 0, JT4(0), JT4(0), JT4(0),        /* 0x20-0x2f: '"' */
    JT16(0), JT16(0),                          /* 0x30-0x4f */
    JT4(0), JT4(0), JT4(0), 2, 0, 0, 0,        /* 0x50-0x5f: '\\' */
    JT16(0), JT16(0),                          /* 0x60-0x7f */
    JT16(4), JT16(4), JT16(4), JT16(4), JT16(4), JT16(4), JT16(4), JT16(4)};
#undef JT16
#undef JT4
/* clang-format on */

size_t rf_jtext_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t l;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        l = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        l = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        l = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < l || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < l; k++)
        if (s[k] < 0x80 || s[k] > 0xBF)
            return 0;
    return l;
}

/* The value of the 4 hex digits at s, or -1. */
static long jtext_hex4(const char *s)
{
    long v = 0;

    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

/* Just past the valid string at s[i] ('"'), or len + 1; *escaped: it has a backslash. */
static size_t jtext_string(const char *s, size_t len, size_t i, int *escaped)
{
    const unsigned char *u = (const unsigned char *)s;

    *escaped = 0;
    for (i++;;) {
        while (i + 4 <= len && !jtext_in_string[u[i]] && !jtext_in_string[u[i + 1]] &&
               !jtext_in_string[u[i + 2]] && !jtext_in_string[u[i + 3]])
            i += 4;
        while (i < len && !jtext_in_string[u[i]])
            i++;
        if (i >= len)
            return len + 1;
        switch (jtext_in_string[u[i]]) {
        case 1:
            return i + 1;
        case 3:
            return len + 1;
        case 4: {
            size_t l = rf_jtext_utf8_len(u + i, len - i);
            if (l == 0)
                return len + 1;
            i += l;
            break;
        }
        default: /* '\\' */
            *escaped = 1;
            if (i + 1 >= len)
                return len + 1;
            if (strchr("\"\\/bfnrt", s[i + 1]) && s[i + 1] != '\0') {
                i += 2;
                break;
            }
            if (s[i + 1] != 'u' || i + 6 > len) {
                return len + 1;
            } else {
                long v = jtext_hex4(s + i + 2);
                if (v <= 0 || (v >= 0xDC00 && v <= 0xDFFF))
                    return len + 1; /* \u0000 (jansson: not without JSON_ALLOW_NUL), a
                                     * low surrogate alone */
                i += 6;
                if (v >= 0xD800 && v <= 0xDBFF) { /* a high one: its low one follows */
                    long w = i + 6 <= len && s[i] == '\\' && s[i + 1] == 'u' ? jtext_hex4(s + i + 2)
                                                                             : -1;
                    if (w < 0xDC00 || w > 0xDFFF)
                        return len + 1;
                    i += 6;
                }
            }
            break;
        }
    }
}

static int jtext_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Just past the valid number at s[i], or len + 1 (also near jansson's limits). */
static size_t jtext_number(const char *s, size_t len, size_t i)
{
    size_t start, ndig;
    int neg = 0, real = 0;
    long exp = 0;

    if (s[i] == '-') {
        neg = 1;
        i++;
    }
    start = i;
    if (i >= len || !jtext_digit(s[i]))
        return len + 1;
    if (s[i] == '0')
        i++;
    else
        while (i < len && jtext_digit(s[i]))
            i++;
    ndig = i - start;
    if (i < len && s[i] == '.') {
        real = 1;
        if (++i >= len || !jtext_digit(s[i]))
            return len + 1;
        while (i < len && jtext_digit(s[i]))
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        size_t es;
        int eneg = 0;
        real = 1;
        if (++i < len && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        es = i;
        while (i < len && jtext_digit(s[i])) {
            if (i - es >= 3)
                return len + 1; /* 4 digits or more: left to strtod */
            exp = exp * 10 + (s[i] - '0');
            i++;
        }
        if (i == es)
            return len + 1;
        if (eneg)
            exp = -exp;
    }
    if (real) {
        /* below 10^ndig * 10^exp: within double when that is at most 1e308 */
        if ((long)ndig + exp > 308)
            return len + 1;
    } else if (ndig > 18) {
        (void)neg; /* 19 digits may pass LLONG_MIN/MAX: left to strtoll */
        return len + 1;
    }
    return i;
}

typedef struct {
    const char *p;
    size_t n;
} jtext_key_t;

static int jtext_key_cmp(const void *a, const void *b)
{
    const jtext_key_t *x = a, *y = b;

    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    return memcmp(x->p, y->p, x->n);
}

/* 1 when two of the n keys are the same. */
static int jtext_keys_repeat(jtext_key_t *keys, size_t n)
{
    if (n <= 16) {
        for (size_t a = 1; a < n; a++)
            for (size_t b = 0; b < a; b++)
                if (keys[a].n == keys[b].n && memcmp(keys[a].p, keys[b].p, keys[a].n) == 0)
                    return 1;
        return 0;
    }
    qsort(keys, n, sizeof(*keys), jtext_key_cmp);
    for (size_t a = 1; a < n; a++)
        if (jtext_key_cmp(&keys[a - 1], &keys[a]) == 0)
            return 1;
    return 0;
}

static size_t jtext_value(const char *s, size_t len, size_t i, int depth, int max);

/* Just past the valid object at s[i] ('{'), or len + 1. */
static size_t jtext_object(const char *s, size_t len, size_t i, int depth, int max)
{
    jtext_key_t few[16], *keys = few;
    size_t n = 0, cap = sizeof(few) / sizeof(few[0]), bad = len + 1;
    int escaped;

    i = rf_jtext_ws(s, len, i + 1);
    if (i < len && s[i] == '}')
        return i + 1;
    for (;;) {
        size_t ks = i, ke;
        if (i >= len || s[i] != '"' || (ke = jtext_string(s, len, i, &escaped)) > len || escaped)
            goto out; /* an escaped key may equal another one written plain: left to jansson */
        if (n == cap) {
            jtext_key_t *more = malloc(2 * cap * sizeof(*more));
            if (!more)
                abort();
            memcpy(more, keys, n * sizeof(*keys));
            if (keys != few)
                free(keys);
            keys = more;
            cap *= 2;
        }
        keys[n].p = s + ks + 1;
        keys[n].n = ke - ks - 2;
        n++;
        i = rf_jtext_ws(s, len, ke);
        if (i >= len || s[i] != ':')
            goto out;
        i = jtext_value(s, len, i + 1, depth, max);
        if (i > len)
            goto out;
        i = rf_jtext_ws(s, len, i);
        if (i < len && s[i] == '}')
            break;
        if (i >= len || s[i] != ',')
            goto out;
        i = rf_jtext_ws(s, len, i + 1);
    }
    if (!jtext_keys_repeat(keys, n))
        bad = i + 1;
out:
    if (keys != few)
        free(keys);
    return bad;
}

/* Just past the valid value at s[i] (after blanks), or len + 1; depth: arrays and objects
 * around it. */
static size_t jtext_value(const char *s, size_t len, size_t i, int depth, int max)
{
    int escaped;

    i = rf_jtext_ws(s, len, i);
    if (i >= len)
        return len + 1;
    switch (s[i]) {
    case '"':
        return jtext_string(s, len, i, &escaped);
    case '{':
        if (depth >= max)
            return len + 1;
        return jtext_object(s, len, i, depth + 1, max);
    case '[':
        if (depth >= max)
            return len + 1;
        i = rf_jtext_ws(s, len, i + 1);
        if (i < len && s[i] == ']')
            return i + 1;
        for (;;) {
            i = jtext_value(s, len, i, depth + 1, max);
            if (i > len)
                return len + 1;
            i = rf_jtext_ws(s, len, i);
            if (i < len && s[i] == ']')
                return i + 1;
            if (i >= len || s[i] != ',')
                return len + 1;
            i++;
        }
    case 't':
        return len - i >= 4 && memcmp(s + i, "true", 4) == 0 ? i + 4 : len + 1;
    case 'f':
        return len - i >= 5 && memcmp(s + i, "false", 5) == 0 ? i + 5 : len + 1;
    case 'n':
        return len - i >= 4 && memcmp(s + i, "null", 4) == 0 ? i + 4 : len + 1;
    default:
        return jtext_number(s, len, i);
    }
}

size_t rf_jtext_valid_depth(const char *s, size_t len, size_t i, int max_depth)
{
    size_t end;

    if (max_depth > RF_JTEXT_MAX_DEPTH) /* the recursion's bound */
        max_depth = RF_JTEXT_MAX_DEPTH;
    end = jtext_value(s, len, i, 0, max_depth);
    return end > len ? len + 1 : end;
}

size_t rf_jtext_valid(const char *s, size_t len, size_t i)
{
    return rf_jtext_valid_depth(s, len, i, RF_JTEXT_MAX_DEPTH);
}
