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

static int json_put_string(rf_buf_t *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0, i = 0, len;
    char esc[6] = {'\\', 'u', '0', '0'};
    size_t elen;

    if (rf_buf_addc(b, '"') != 0)
        return -1;
    while (i < n) {
        if (s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\') {
            i++;
            continue;
        }
        if (s[i] >= 0x80) {
            len = utf8_sequence(s + i, n - i);
            if (len == 0)
                return -1;
            i += len;
            continue;
        }
        elen = 2;
        switch (s[i]) {
        case '"':
        case '\\':
            esc[1] = (char)s[i];
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[4] = hex[s[i] >> 4];
            esc[5] = hex[s[i] & 15];
            elen = 6;
        }
        if (rf_buf_add(b, str + run, i - run) != 0 || rf_buf_add(b, esc, elen) != 0)
            return -1;
        run = ++i;
    }
    if (rf_buf_add(b, str + run, n - run) != 0)
        return -1;
    return rf_buf_addc(b, '"');
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

static int json_put_member(rf_buf_t *b, const char *key, size_t len, const json_t *value, int flags)
{
    if (json_put_string(b, key, len) != 0 || rf_buf_addc(b, ':') != 0)
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
    rc = rf_buf_addc(b, '{');
    for (k = 0; k < i && rc == 0; k++) {
        if (k && rf_buf_addc(b, ',') != 0)
            rc = -1;
        else
            rc = json_put_member(b, m[k].key, m[k].len, m[k].value, flags);
    }
    if (m != stack)
        free(m);
    return rc == 0 ? rf_buf_addc(b, '}') : -1;
}

static int json_put(rf_buf_t *b, const json_t *j, int flags)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        void *it = json_object_iter((json_t *)j);
        int first = 1;
        if (flags & RF_JSON_SORT_KEYS)
            return json_put_sorted(b, j, flags);
        if (rf_buf_addc(b, '{') != 0)
            return -1;
        for (; it; it = json_object_iter_next((json_t *)j, it), first = 0) {
            if (!first && rf_buf_addc(b, ',') != 0)
                return -1;
            if (json_put_member(b, json_object_iter_key(it), json_object_iter_key_len(it),
                                json_object_iter_value(it), flags) != 0)
                return -1;
        }
        return rf_buf_addc(b, '}');
    }
    case JSON_ARRAY: {
        size_t i, n = json_array_size(j);
        if (rf_buf_addc(b, '[') != 0)
            return -1;
        for (i = 0; i < n; i++)
            if ((i && rf_buf_addc(b, ',') != 0) || json_put(b, json_array_get(j, i), flags) != 0)
                return -1;
        return rf_buf_addc(b, ']');
    }
    case JSON_STRING:
        return json_put_string(b, json_string_value(j), json_string_length(j));
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
        return rf_buf_add(b, p, (size_t)(num + sizeof(num) - p));
    }
    case JSON_REAL: { /* rare in manifests: jansson's own shortest form */
        char *t = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
        int rc = t ? rf_buf_adds(b, t) : -1;
        free(t);
        return rc;
    }
    case JSON_TRUE:
        return rf_buf_add(b, "true", 4);
    case JSON_FALSE:
        return rf_buf_add(b, "false", 5);
    default:
        return rf_buf_add(b, "null", 4);
    }
}

int rf_json_append(rf_buf_t *b, const json_t *j, int flags)
{
    return j ? json_put(b, j, flags) : -1;
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
