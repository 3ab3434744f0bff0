/* Label and field selectors: parsing the query forms and LabelSelector objects, and matching. */
#include "ks_sel.h"
#include "rf_buf.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum sel_op { SEL_EQ, SEL_NE, SEL_IN, SEL_NOTIN, SEL_EXISTS, SEL_NOTEXISTS } sel_op_t;

typedef struct sel_req {
    char *key;
    sel_op_t op;
    char **values;
    size_t nvalues;
} sel_req_t;

struct ks_sel {
    sel_req_t *reqs;
    size_t n, cap;
    int nothing;
};

static ks_sel_t *sel_new(void)
{
    ks_sel_t *s = calloc(1, sizeof(*s));

    if (!s)
        abort();
    return s;
}

static sel_req_t *sel_add(ks_sel_t *s, const char *key, size_t klen, sel_op_t op)
{
    sel_req_t *r;

    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->reqs = realloc(s->reqs, s->cap * sizeof(*s->reqs));
        if (!s->reqs)
            abort();
    }
    r = &s->reqs[s->n++];
    memset(r, 0, sizeof(*r));
    r->key = strndup(key, klen);
    r->op = op;
    return r;
}

static void req_value(sel_req_t *r, const char *v, size_t len)
{
    r->values = realloc(r->values, (r->nvalues + 1) * sizeof(*r->values));
    if (!r->values)
        abort();
    r->values[r->nvalues++] = strndup(v, len);
}

void ks_sel_destroy(ks_sel_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->reqs[i].key);
        for (size_t j = 0; j < s->reqs[i].nvalues; j++)
            free(s->reqs[i].values[j]);
        free(s->reqs[i].values);
    }
    free(s->reqs);
    free(s);
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ')
        p++;
    return p;
}

static int is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' || c == '/';
}

ks_sel_t *ks_sel_parse(const char *str, char *errstr, size_t errstr_size)
{
    ks_sel_t *s = sel_new();
    const char *p = str ? str : "";

    p = skip_ws(p);
    while (*p) {
        int neg = 0;
        const char *k;
        size_t klen;
        sel_req_t *r;
        if (*p == '!') {
            neg = 1;
            p = skip_ws(p + 1);
        }
        k = p;
        while (is_name_char(*p))
            p++;
        klen = (size_t)(p - k);
        if (klen == 0)
            goto bad;
        p = skip_ws(p);
        if (neg) {
            sel_add(s, k, klen, SEL_NOTEXISTS);
        } else if (*p == '=' || (*p == '!' && p[1] == '=')) {
            sel_op_t op = *p == '!' ? SEL_NE : SEL_EQ;
            p += (*p == '!' || p[1] == '=') ? 2 : 1;
            p = skip_ws(p);
            const char *v = p;
            while (is_name_char(*p))
                p++;
            r = sel_add(s, k, klen, op);
            req_value(r, v, (size_t)(p - v));
        } else if (strncmp(p, "in", 2) == 0 || strncmp(p, "notin", 5) == 0) {
            sel_op_t op = p[0] == 'i' ? SEL_IN : SEL_NOTIN;
            p = skip_ws(p + (op == SEL_IN ? 2 : 5));
            if (*p != '(')
                goto bad;
            r = sel_add(s, k, klen, op);
            p++;
            for (;;) {
                p = skip_ws(p);
                const char *v = p;
                while (is_name_char(*p))
                    p++;
                req_value(r, v, (size_t)(p - v));
                p = skip_ws(p);
                if (*p == ',') {
                    p++;
                    continue;
                }
                if (*p == ')') {
                    p++;
                    break;
                }
                goto bad;
            }
        } else {
            sel_add(s, k, klen, SEL_EXISTS);
        }
        p = skip_ws(p);
        if (*p == ',') {
            p = skip_ws(p + 1);
            continue;
        }
        if (*p)
            goto bad;
    }
    return s;
bad:
    snprintf(errstr, errstr_size, "unable to parse requirement: found '%s', expected: identifier",
             p);
    ks_sel_destroy(s);
    return NULL;
}

ks_sel_t *ks_sel_parse_fields(const char *str, char *errstr, size_t errstr_size)
{
    return ks_sel_parse(str, errstr, errstr_size);
}

ks_sel_t *ks_sel_from_json(const json_t *ls, int empty_matches_nothing)
{
    ks_sel_t *s = sel_new();
    json_t *ml = json_object_get(ls, "matchLabels"), *me = json_object_get(ls, "matchExpressions");
    const char *key;
    json_t *v, *e;
    size_t i, j;

    json_object_foreach(ml, key, v) {
        sel_req_t *r = sel_add(s, key, strlen(key), SEL_EQ);
        const char *sv = json_string_value(v);
        req_value(r, sv ? sv : "", sv ? strlen(sv) : 0);
    }
    json_array_foreach(me, i, e) {
        const char *k = json_string_value(json_object_get(e, "key"));
        const char *op = json_string_value(json_object_get(e, "operator"));
        sel_op_t o;
        sel_req_t *r;
        if (!k || !op)
            continue;
        if (strcmp(op, "In") == 0)
            o = SEL_IN;
        else if (strcmp(op, "NotIn") == 0)
            o = SEL_NOTIN;
        else if (strcmp(op, "Exists") == 0)
            o = SEL_EXISTS;
        else
            o = SEL_NOTEXISTS;
        r = sel_add(s, k, strlen(k), o);
        json_array_foreach(json_object_get(e, "values"), j, v) {
            const char *sv = json_string_value(v);
            if (sv)
                req_value(r, sv, strlen(sv));
        }
    }
    if (s->n == 0 && empty_matches_nothing)
        s->nothing = 1;
    return s;
}

static int req_match(const sel_req_t *r, const char *have)
{
    int in = 0;

    for (size_t i = 0; have && i < r->nvalues; i++)
        in = in || strcmp(have, r->values[i]) == 0;
    switch (r->op) {
    case SEL_EQ:
    case SEL_IN:
        return have && in;
    case SEL_NE:
    case SEL_NOTIN:
        return !have || !in;
    case SEL_EXISTS:
        return have != NULL;
    case SEL_NOTEXISTS:
        return have == NULL;
    }
    return 0;
}

int ks_sel_match(const ks_sel_t *s, const json_t *labels)
{
    if (!s)
        return 1;
    if (s->nothing)
        return 0;
    for (size_t i = 0; i < s->n; i++)
        if (!req_match(&s->reqs[i], json_string_value(json_object_get(labels, s->reqs[i].key))))
            return 0;
    return 1;
}

int ks_sel_match_fields(const ks_sel_t *s, const json_t *obj)
{
    if (!s)
        return 1;
    for (size_t i = 0; i < s->n; i++) {
        const json_t *cur = obj;
        const char *p = s->reqs[i].key;
        char buf[32];
        const char *have;
        while (*p && cur) {
            const char *dot = strchr(p, '.');
            size_t n = dot ? (size_t)(dot - p) : strlen(p);
            char *seg = strndup(p, n);
            cur = json_object_get(cur, seg);
            free(seg);
            p += n;
            if (*p == '.')
                p++;
        }
        have = json_string_value(cur);
        if (json_is_integer(cur)) {
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(cur));
            have = buf;
        } else if (json_is_boolean(cur)) {
            have = json_is_true(cur) ? "true" : "false";
        }
        if (!have)
            have = "";
        if (!req_match(&s->reqs[i], have))
            return 0;
    }
    return 1;
}

char *ks_sel_string(const json_t *ls)
{
    rf_buf_t b = RF_BUF_INIT;
    json_t *ml = json_object_get(ls, "matchLabels"), *me = json_object_get(ls, "matchExpressions");
    const char *key;
    json_t *v, *e;
    size_t i, j;

    json_object_foreach(ml, key, v) {
        rf_buf_addf(&b, "%s%s=%s", b.len ? "," : "", key, json_string_value(v) ? json_string_value(v) : "");
    }
    json_array_foreach(me, i, e) {
        const char *k = json_string_value(json_object_get(e, "key"));
        const char *op = json_string_value(json_object_get(e, "operator"));
        if (!k || !op)
            continue;
        if (b.len)
            rf_buf_addc(&b, ',');
        if (strcmp(op, "Exists") == 0) {
            rf_buf_adds(&b, k);
            continue;
        }
        if (strcmp(op, "DoesNotExist") == 0) {
            rf_buf_addf(&b, "!%s", k);
            continue;
        }
        rf_buf_addf(&b, "%s %s (", k, strcmp(op, "In") == 0 ? "in" : "notin");
        json_array_foreach(json_object_get(e, "values"), j, v) {
            rf_buf_addf(&b, "%s%s", j ? "," : "", json_string_value(v) ? json_string_value(v) : "");
        }
        rf_buf_addc(&b, ')');
    }
    return rf_buf_detach(&b);
}
