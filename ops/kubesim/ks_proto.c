/* Protobuf request bodies decoded into JSON by the generated field tables (ks_proto.h). */
#include "ks_proto.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DEPTH 48

typedef struct rd {
    const uint8_t *p, *end;
} rd_t;

typedef struct dctx {
    char *err;
    size_t n;
    char path[512];
} dctx_t;

/* The roots: kind -> message. */
static const struct {
    const char *kind, *msg;
} roots[] = {
    {"Namespace", "core.v1.Namespace"}, {"ConfigMap", "core.v1.ConfigMap"},
    {"Secret", "core.v1.Secret"},       {"Deployment", "apps.v1.Deployment"},
    {"Scale", "autoscaling.v1.Scale"},
};

static int fail(dctx_t *c, const char *what)
{
    if (!c->err[0])
        snprintf(c->err, c->n, "the body of the request could not be decoded as protobuf: %s%s%s",
                 c->path[0] ? c->path : "", c->path[0] ? ": " : "", what);
    return -1;
}

static int varint(rd_t *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return -1;
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* One field's tag and, for wire type 2, its bytes; for 0 its value. Skips 1 and 5. */
typedef struct fv {
    unsigned num, wt;
    uint64_t v;
    const uint8_t *b;
    size_t blen;
} fv_t;

static int next(rd_t *r, fv_t *f, dctx_t *c)
{
    uint64_t tag;
    if (varint(r, &tag) != 0)
        return fail(c, "truncated field tag");
    f->num = (unsigned)(tag >> 3);
    f->wt = (unsigned)(tag & 7);
    if (f->num == 0 || tag >> 3 > 536870911u)
        return fail(c, "invalid field number 0");
    switch (f->wt) {
    case 0:
        if (varint(r, &f->v) != 0)
            return fail(c, "truncated varint");
        return 0;
    case 1:
    case 5: {
        size_t k = f->wt == 1 ? 8 : 4;
        if ((size_t)(r->end - r->p) < k)
            return fail(c, "truncated fixed-size field");
        f->b = r->p;
        f->blen = k;
        r->p += k;
        return 0;
    }
    case 2:
        if (varint(r, &f->v) != 0)
            return fail(c, "truncated length");
        if (f->v > (uint64_t)(r->end - r->p))
            return fail(c, "length-delimited field longer than its message");
        f->b = r->p;
        f->blen = (size_t)f->v;
        r->p += f->blen;
        return 0;
    default: {
        char m[64];
        snprintf(m, sizeof(m), "illegal wire type %u", f->wt);
        return fail(c, m);
    }
    }
}

static json_t *b64(const uint8_t *s, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t olen = (n + 2) / 3 * 4, o = 0;
    char *out = malloc(olen + 1);
    json_t *j;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    j = json_stringn(out, o);
    free(out);
    return j;
}

static json_t *str(const uint8_t *s, size_t n, dctx_t *c)
{
    json_t *j = json_stringn((const char *)s, n);
    if (!j)
        fail(c, "string field is not valid UTF-8");
    return j;
}

static int decode_msg(const ks_pmsg_t *m, const uint8_t *p, size_t len, json_t *out, int depth,
                      dctx_t *c);

/* The well-known apimachinery types. *out NULL with 0: the zero value, left out. */
static int special(unsigned type, const uint8_t *p, size_t len, json_t **out, dctx_t *c)
{
    rd_t r = {p, p + len};
    fv_t f = {0};
    int64_t secs = 0, nanos = 0, itype = 0, ival = 0;
    const uint8_t *s = NULL;
    size_t slen = 0;

    *out = NULL;
    while (r.p < r.end) {
        if (next(&r, &f, c) != 0)
            return -1;
        if (f.wt == 0 && f.num == 1)
            secs = itype = (int64_t)f.v;
        else if (f.wt == 0 && f.num == 2)
            nanos = ival = (int32_t)f.v;
        else if (f.wt == 2 && (f.num == 1 || f.num == 3)) {
            s = f.b;
            slen = f.blen;
        }
    }
    switch (type) {
    case KS_PT_TIME: {
        char buf[64];
        struct tm tm;
        time_t t = (time_t)secs;
        (void)nanos; /* metav1.Time is written to the second */
        if (secs == 0 && nanos == 0)
            return 0;
        if (!gmtime_r(&t, &tm) || tm.tm_year > 8099 || tm.tm_year < -1899)
            return fail(c, "time out of range");
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
        *out = json_string(buf);
        return 0;
    }
    case KS_PT_INTSTR:
        if (itype == 1) {
            *out = s ? str(s, slen, c) : json_string("");
            return *out ? 0 : -1;
        }
        *out = json_integer(ival);
        return 0;
    case KS_PT_QUANTITY:
        if (!s)
            return 0;
        *out = str(s, slen, c);
        return *out ? 0 : -1;
    case KS_PT_FIELDSV1: {
        json_error_t je;
        if (!s)
            return 0;
        *out = json_loadb((const char *)s, slen, JSON_DECODE_ANY, &je);
        return *out ? 0 : fail(c, "fieldsV1 does not hold JSON");
    }
    }
    return fail(c, "unknown special type");
}

/* One value of the given type from a field of wire type f->wt. *out NULL with 0: zero, left out. */
static int value(unsigned type, int msg, int keep, const fv_t *f, json_t **out, int depth, dctx_t *c)
{
    *out = NULL;
    if (type == KS_PT_INT32 || type == KS_PT_INT64 || type == KS_PT_BOOL) {
        if (f->wt != 0)
            return fail(c, "wrong wire type for a varint field");
        if (f->v == 0 && !keep)
            return 0;
        *out = type == KS_PT_BOOL    ? json_boolean(f->v != 0)
               : type == KS_PT_INT32 ? json_integer((int32_t)f->v)
                                     : json_integer((int64_t)f->v);
        return 0;
    }
    if (f->wt != 2)
        return fail(c, "wrong wire type for a length-delimited field");
    switch (type) {
    case KS_PT_STRING:
        if (f->blen == 0 && !keep)
            return 0;
        *out = str(f->b, f->blen, c);
        return *out ? 0 : -1;
    case KS_PT_BYTES:
        *out = b64(f->b, f->blen);
        return 0;
    case KS_PT_MSG:
        *out = json_object();
        if (decode_msg(&ks_proto_msgs[msg], f->b, f->blen, *out, depth + 1, c) != 0) {
            json_decref(*out);
            *out = NULL;
            return -1;
        }
        return 0;
    default:
        return special(type, f->b, f->blen, out, c);
    }
}

static int map_entry(const ks_pfield_t *fd, const fv_t *f, json_t *obj, int depth, dctx_t *c)
{
    rd_t r;
    fv_t e;
    json_t *key = NULL, *val = NULL;
    int rc = 0;

    if (f->wt != 2)
        return fail(c, "wrong wire type for a map entry");
    r = (rd_t){f->b, f->b + f->blen};
    while (r.p < r.end && rc == 0) {
        json_t *v = NULL;
        if (next(&r, &e, c) != 0)
            rc = -1;
        else if (e.num == 1 && e.wt == 2) {
            rc = (v = str(e.b, e.blen, c)) ? 0 : -1;
            json_decref(key);
            key = v;
        } else if (e.num == 2) {
            rc = value(fd->vtype, fd->vmsg, 1, &e, &v, depth, c);
            json_decref(val);
            val = v;
        }
    }
    if (rc == 0) {
        if (!val)
            val = fd->vtype == KS_PT_STRING || fd->vtype == KS_PT_BYTES ? json_string("")
                                                                         : json_null();
        json_object_set_new(obj, key ? json_string_value(key) : "", val);
        val = NULL;
    }
    json_decref(key);
    json_decref(val);
    return rc;
}

static const ks_pfield_t *field_of(const ks_pmsg_t *m, unsigned num)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (m->fields[i].num == num)
            return &m->fields[i];
    return NULL;
}

static int is_zero(const fv_t *f)
{
    return (f->wt == 0 && f->v == 0) || (f->wt == 2 && f->blen == 0);
}

static int decode_msg(const ks_pmsg_t *m, const uint8_t *p, size_t len, json_t *out, int depth,
                      dctx_t *c)
{
    rd_t r = {p, p + len};
    fv_t f = {0};
    size_t plen = strlen(c->path);

    if (depth > MAX_DEPTH)
        return fail(c, "messages nested too deep");
    while (r.p < r.end) {
        const ks_pfield_t *fd;
        json_t *v = NULL;
        int rc;

        if (next(&r, &f, c) != 0)
            return -1;
        fd = field_of(m, f.num);
        if (!fd) {
            char msg[160];
            if (is_zero(&f))
                continue; /* a zero value of a field kubesim does not know: nothing to keep */
            snprintf(msg, sizeof(msg), "kubesim does not decode field %u of %s from protobuf (send JSON)",
                     f.num, m->name);
            return fail(c, msg);
        }
        if (!(fd->flags & KS_PF_INLINE))
            snprintf(c->path + plen, sizeof(c->path) - plen, "%s%s", plen ? "." : "", fd->name);
        if (fd->flags & KS_PF_MAP) {
            json_t *obj = json_object_get(out, fd->name);
            if (!json_is_object(obj)) {
                obj = json_object();
                json_object_set_new(out, fd->name, obj);
            }
            rc = map_entry(fd, &f, obj, depth, c);
        } else if (fd->flags & KS_PF_INLINE) {
            if (f.wt != 2)
                return fail(c, "wrong wire type for an embedded message");
            rc = decode_msg(&ks_proto_msgs[fd->msg], f.b, f.blen, out, depth + 1, c);
        } else if (fd->flags & KS_PF_REPEATED) {
            json_t *arr = json_object_get(out, fd->name);
            if (!json_is_array(arr)) {
                arr = json_array();
                json_object_set_new(out, fd->name, arr);
            }
            if (f.wt == 2 && (fd->type == KS_PT_INT32 || fd->type == KS_PT_INT64 || fd->type == KS_PT_BOOL)) {
                rd_t pr = {f.b, f.b + f.blen}; /* packed */
                uint64_t x;
                rc = 0;
                while (pr.p < pr.end && rc == 0) {
                    if (varint(&pr, &x) != 0)
                        rc = fail(c, "truncated packed varint");
                    else
                        json_array_append_new(arr, fd->type == KS_PT_BOOL ? json_boolean(x != 0)
                                                   : fd->type == KS_PT_INT32 ? json_integer((int32_t)x)
                                                                            : json_integer((int64_t)x));
                }
            } else {
                rc = value(fd->type, fd->msg, 1, &f, &v, depth, c);
                if (rc == 0)
                    json_array_append_new(arr, v ? v : json_null());
            }
        } else {
            rc = value(fd->type, fd->msg, fd->flags & KS_PF_KEEP, &f, &v, depth, c);
            if (rc == 0) {
                if (v)
                    json_object_set_new(out, fd->name, v);
                else
                    json_object_del(out, fd->name);
            }
        }
        if (rc != 0)
            return -1;
        c->path[plen] = '\0';
    }
    return 0;
}

static const ks_pmsg_t *msg_named(const char *name)
{
    for (size_t i = 0; i < ks_proto_nmsgs; i++)
        if (strcmp(ks_proto_msgs[i].name, name) == 0)
            return &ks_proto_msgs[i];
    return NULL;
}

json_t *ks_proto_decode(const void *body, size_t len, int *code, char *errstr, size_t n)
{
    const uint8_t *p = body;
    dctx_t c = {errstr, n, ""};
    rd_t r;
    fv_t f = {0};
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    char api_version[128] = "", kind[128] = "";
    const ks_pmsg_t *m = NULL;
    json_t *o;

    *code = 400;
    errstr[0] = '\0';
    if (len < 4 || memcmp(p, "k8s\0", 4) != 0) {
        snprintf(errstr, n, "the body of the request could not be decoded as protobuf: "
                            "it does not start with the 4-byte prefix \"k8s\\x00\"");
        return NULL;
    }
    r = (rd_t){p + 4, p + len};
    while (r.p < r.end) {
        if (next(&r, &f, &c) != 0)
            return NULL;
        if (f.num == 1 && f.wt == 2) { /* typeMeta */
            rd_t t = {f.b, f.b + f.blen};
            fv_t g;
            while (t.p < t.end) {
                if (next(&t, &g, &c) != 0)
                    return NULL;
                if (g.wt == 2 && (g.num == 1 || g.num == 2))
                    snprintf(g.num == 1 ? api_version : kind, sizeof(kind), "%.*s",
                             (int)(g.blen < 127 ? g.blen : 127), (const char *)g.b);
            }
        } else if (f.num == 2 && f.wt == 2) {
            raw = f.b;
            raw_len = f.blen;
        } else if (f.num == 3 && f.wt == 2 && f.blen) {
            snprintf(errstr, n, "the body of the request could not be decoded as protobuf: "
                                "contentEncoding \"%.*s\" is not supported",
                     (int)(f.blen < 64 ? f.blen : 64), (const char *)f.b);
            return NULL;
        }
    }
    if (!kind[0]) {
        snprintf(errstr, n, "couldn't get version/kind; the protobuf body has no kind");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++)
        if (strcmp(roots[i].kind, kind) == 0)
            m = msg_named(roots[i].msg);
    if (!m) {
        *code = 415;
        snprintf(errstr, n, "kubesim decodes protobuf bodies of Namespace, ConfigMap, Secret, "
                            "Deployment and Scale only, not %s: send it as application/json", kind);
        return NULL;
    }
    o = json_object();
    json_object_set_new(o, "kind", json_string(kind));
    if (api_version[0])
        json_object_set_new(o, "apiVersion", json_string(api_version));
    if (decode_msg(m, raw ? raw : (const uint8_t *)"", raw_len, o, 0, &c) != 0) {
        json_decref(o);
        return NULL;
    }
    /* apiVersion and kind are the envelope's: the raw message has none */
    json_object_set_new(o, "kind", json_string(kind));
    return o;
}

/* ---- encoding: JSON -> protobuf, for clients that ask for it ---- */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf_t;

static int wadd(wbuf_t *w, const void *d, size_t n)
{
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        uint8_t *p;
        while (cap < w->len + n)
            cap *= 2;
        if (!(p = realloc(w->p, cap)))
            return -1;
        w->p = p;
        w->cap = cap;
    }
    if (n)
        memcpy(w->p + w->len, d, n);
    w->len += n;
    return 0;
}

static int wvarint(wbuf_t *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            b[n] |= 0x80;
        n++;
    } while (v);
    return wadd(w, b, n);
}

static int wld(wbuf_t *w, unsigned num, const void *d, size_t n)
{
    if (wvarint(w, (uint64_t)num << 3 | 2) || wvarint(w, n))
        return -1;
    return wadd(w, d, n);
}

static int wvi(wbuf_t *w, unsigned num, uint64_t v)
{
    return wvarint(w, (uint64_t)num << 3) || wvarint(w, v) ? -1 : 0;
}

static int unb64(const char *s, wbuf_t *out)
{
    uint32_t acc = 0;
    int bits = 0;
    for (; *s; s++) {
        int v;
        if (*s >= 'A' && *s <= 'Z')
            v = *s - 'A';
        else if (*s >= 'a' && *s <= 'z')
            v = *s - 'a' + 26;
        else if (*s >= '0' && *s <= '9')
            v = *s - '0' + 52;
        else if (*s == '+')
            v = 62;
        else if (*s == '/')
            v = 63;
        else if (*s == '=' || *s == '\n' || *s == '\r')
            continue;
        else
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            uint8_t b = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
            if (wadd(out, &b, 1))
                return -1;
        }
    }
    return 0;
}

static int encode_msg(const ks_pmsg_t *m, const json_t *obj, wbuf_t *w, int depth, int inlined);

/* Whether key is a field of m or of a message m embeds. */
static int has_key(const ks_pmsg_t *m, const char *key, int depth)
{
    for (size_t i = 0; i < m->nfields; i++) {
        const ks_pfield_t *f = &m->fields[i];
        if (f->flags & KS_PF_INLINE) {
            if (depth < MAX_DEPTH && has_key(&ks_proto_msgs[f->msg], key, depth + 1))
                return 1;
        } else if (strcmp(f->name, key) == 0)
            return 1;
    }
    return 0;
}

/* One value as field num; a null is left out. */
static int encode_value(unsigned type, int msg, unsigned num, const json_t *v, wbuf_t *w, int depth)
{
    wbuf_t sub = {0};
    int rc = -1;

    if (json_is_null(v))
        return 0;
    switch (type) {
    case KS_PT_STRING:
        return json_is_string(v) ? wld(w, num, json_string_value(v), json_string_length(v)) : -1;
    case KS_PT_BYTES:
        if (!json_is_string(v) || unb64(json_string_value(v), &sub) != 0)
            break;
        rc = wld(w, num, sub.p, sub.len);
        break;
    case KS_PT_INT32:
    case KS_PT_INT64:
        return json_is_integer(v) ? wvi(w, num, (uint64_t)json_integer_value(v)) : -1;
    case KS_PT_BOOL:
        return json_is_boolean(v) ? wvi(w, num, json_is_true(v)) : -1;
    case KS_PT_MSG:
        if (!json_is_object(v) || encode_msg(&ks_proto_msgs[msg], v, &sub, depth + 1, 0) != 0)
            break;
        rc = wld(w, num, sub.p, sub.len);
        break;
    case KS_PT_TIME: {
        struct tm tm;
        const char *s = json_string_value(v), *end;
        memset(&tm, 0, sizeof(tm));
        if (!s || !(end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) || (*end != 'Z' && *end != '.'))
            break;
        rc = wvi(&sub, 1, (uint64_t)(int64_t)timegm(&tm)) || wld(w, num, sub.p, sub.len) ? -1 : 0;
        break;
    }
    case KS_PT_INTSTR:
        if (json_is_integer(v))
            rc = wvi(&sub, 1, 0) || wvi(&sub, 2, (uint64_t)json_integer_value(v)) || wld(&sub, 3, "", 0);
        else if (json_is_string(v))
            rc = wvi(&sub, 1, 1) || wvi(&sub, 2, 0) ||
                 wld(&sub, 3, json_string_value(v), json_string_length(v));
        else
            break;
        rc = rc ? -1 : wld(w, num, sub.p, sub.len);
        break;
    case KS_PT_QUANTITY: {
        char buf[64];
        const char *s = json_string_value(v);
        if (json_is_integer(v)) {
            snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            s = buf;
        }
        if (!s)
            break;
        rc = wld(&sub, 1, s, strlen(s)) || wld(w, num, sub.p, sub.len) ? -1 : 0;
        break;
    }
    case KS_PT_FIELDSV1: {
        char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        if (!s)
            break;
        rc = wld(&sub, 1, s, strlen(s)) || wld(w, num, sub.p, sub.len) ? -1 : 0;
        free(s);
        break;
    }
    }
    free(sub.p);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int encode_field(const ks_pfield_t *f, const json_t *v, wbuf_t *w, int depth)
{
    if (f->flags & KS_PF_MAP) {
        const char *key, **keys;
        json_t *val;
        size_t n = 0, i;
        int rc = 0;
        if (!json_is_object(v))
            return json_is_null(v) ? 0 : -1;
        if (!(keys = malloc((json_object_size(v) + 1) * sizeof(*keys))))
            return -1;
        json_object_foreach((json_t *)v, key, val)
            keys[n++] = key;
        qsort(keys, n, sizeof(*keys), cmp_str); /* as Go writes maps */
        for (i = 0; i < n && rc == 0; i++) {
            wbuf_t e = {0};
            rc = wld(&e, 1, keys[i], strlen(keys[i])) ||
                         encode_value(f->vtype, f->vmsg, 2, json_object_get(v, keys[i]), &e, depth) ||
                         wld(w, f->num, e.p, e.len)
                     ? -1
                     : 0;
            free(e.p);
        }
        free(keys);
        return rc;
    }
    if (f->flags & KS_PF_REPEATED) {
        size_t i;
        json_t *x;
        if (!json_is_array(v))
            return json_is_null(v) ? 0 : -1;
        json_array_foreach(v, i, x) {
            if (json_is_null(x) || encode_value(f->type, f->msg, f->num, x, w, depth) != 0)
                return -1;
        }
        return 0;
    }
    return encode_value(f->type, f->msg, f->num, v, w, depth);
}

/* inlined: obj is the parent's object, whose keys the parent checked. */
static int encode_msg(const ks_pmsg_t *m, const json_t *obj, wbuf_t *w, int depth, int inlined)
{
    const char *key;
    json_t *v;

    if (depth > MAX_DEPTH)
        return -1;
    json_object_foreach((json_t *)obj, key, v) {
        if (inlined)
            break;
        if (depth == 0 && (strcmp(key, "apiVersion") == 0 || strcmp(key, "kind") == 0))
            continue;
        if (!has_key(m, key, 0))
            return -1; /* a field without a table entry: the caller answers JSON */
    }
    for (size_t i = 0; i < m->nfields; i++) {
        const ks_pfield_t *f = &m->fields[i];
        if (f->flags & KS_PF_INLINE) {
            wbuf_t sub = {0};
            int rc = encode_msg(&ks_proto_msgs[f->msg], obj, &sub, depth + 1, 1) ||
                     wld(w, f->num, sub.p, sub.len);
            free(sub.p);
            if (rc)
                return -1;
        } else if ((v = json_object_get(obj, f->name)) && encode_field(f, v, w, depth) != 0)
            return -1;
    }
    return 0;
}

int ks_proto_encode(const json_t *obj, char **out, size_t *out_len)
{
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    const char *av = json_string_value(json_object_get(obj, "apiVersion"));
    const ks_pmsg_t *m = NULL;
    wbuf_t raw = {0}, tm = {0}, w = {0};
    int rc;

    for (size_t i = 0; kind && i < sizeof(roots) / sizeof(roots[0]); i++)
        if (strcmp(roots[i].kind, kind) == 0)
            m = msg_named(roots[i].msg);
    if (!m || !av || !json_is_object(obj))
        return -1;
    rc = encode_msg(m, obj, &raw, 0, 0) || wld(&tm, 1, av, strlen(av)) || wld(&tm, 2, kind, strlen(kind)) ||
         wadd(&w, "k8s\0", 4) || wld(&w, 1, tm.p, tm.len) || wld(&w, 2, raw.p, raw.len) ||
         wld(&w, 3, "", 0) || wld(&w, 4, "", 0);
    free(raw.p);
    free(tm.p);
    if (rc) {
        free(w.p);
        return -1;
    }
    *out = (char *)w.p;
    *out_len = w.len;
    return 0;
}
