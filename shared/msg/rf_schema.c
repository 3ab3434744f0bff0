/* JSON Schema (draft 7): compiles schemas into a node graph once, validates documents. */
#include "rf_schema.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_buf.h"

#define DRAFT7_URI "http://json-schema.org/draft-07/schema"

enum {
    T_NULL = 1 << 0,
    T_BOOLEAN = 1 << 1,
    T_OBJECT = 1 << 2,
    T_ARRAY = 1 << 3,
    T_NUMBER = 1 << 4,
    T_INTEGER = 1 << 5,
    T_STRING = 1 << 6,
};

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", T_NULL},     {"boolean", T_BOOLEAN}, {"object", T_OBJECT}, {"array", T_ARRAY},
    {"number", T_NUMBER}, {"integer", T_INTEGER}, {"string", T_STRING},
};

/* Keywords accepted in strict mode (our own schema files): the validated ones and the
 * annotations of draft 7. */
static const char *const known_keywords[] = {
    "$schema",
    "$id",
    "$ref",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "definitions",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "items",
    "additionalItems",
    "maxItems",
    "minItems",
    "uniqueItems",
    "contains",
    "maxProperties",
    "minProperties",
    "required",
    "properties",
    "patternProperties",
    "additionalProperties",
    "dependencies",
    "propertyNames",
    "if",
    "then",
    "else",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "format",
    "contentMediaType",
    "contentEncoding",
    NULL,
};

typedef struct sc_node sc_node_t;

typedef struct sc_prop {
    const char *name; /* borrowed from the schema document */
    sc_node_t *node;
} sc_prop_t;

/* A compiled regex and its number: distinct for every regex compiled in the process, never
 * reused (a regex_t's address is, once freed), the key of the match memo. */
typedef struct sc_regex {
    regex_t re;
    uint64_t id;
} sc_regex_t;

typedef struct sc_pattern {
    sc_regex_t re;
    sc_node_t *node;
} sc_pattern_t;

typedef struct sc_dep {
    const char *name;
    const json_t *required; /* array form; NULL for the schema form */
    sc_node_t *node;
} sc_dep_t;

typedef struct sc_list {
    sc_node_t **v;
    size_t n;
} sc_list_t;

struct sc_node {
    const json_t *src; /* the schema value this node was compiled from (borrowed) */
    int boolean;       /* -1: keyword schema; 0: false; 1: true */
    char *ref_uri;     /* absolute $ref: the node is only a reference then */
    sc_node_t *ref;    /* its target once resolved */

    unsigned types; /* 0: no type keyword */
    const json_t *enum_values;
    const json_t *const_value;

    const json_t *minimum, *maximum, *exclusive_minimum, *exclusive_maximum, *multiple_of;
    json_int_t min_length, max_length, min_items, max_items, min_props, max_props; /* -1: none */
    int unique_items;
    int has_pattern;
    sc_regex_t pattern;
    const char *pattern_src;

    const json_t *properties; /* the "properties" object, for membership tests */
    sc_prop_t *props;
    size_t nprops;
    sc_pattern_t *pprops;
    size_t npprops;
    sc_node_t *additional_props;
    const json_t *required;
    sc_node_t *property_names;
    sc_dep_t *deps;
    size_t ndeps;

    sc_node_t *items;     /* schema form */
    sc_list_t items_list; /* array form */
    int items_is_list;
    sc_node_t *additional_items;
    sc_node_t *contains;

    sc_list_t all_of, any_of, one_of;
    sc_node_t *not_schema, *if_schema, *then_schema, *else_schema;

    /* The OpenAPI dialect (rf_schema_registry_add_openapi) */
    int openapi;
    int int_bits;        /* format int32 or int64 of an integer: 32, 64; else 0 */
    int strict_fields;   /* an object schema with properties: other fields are unknown */
    const char *message; /* x-relfleet-message: a failure is reported in these words */
};

/* An addressable schema: a registered name, an "$id" or a "#name" anchor. */
typedef struct sc_resource {
    const json_t *schema;
    sc_node_t *node;
    int openapi; /* a document added by rf_schema_registry_add_openapi */
} sc_resource_t;

struct rf_schema_registry {
    json_t **docs; /* owned references */
    size_t ndocs, docs_cap;
    sc_node_t **nodes; /* every node, for lookups by source and for destroy */
    size_t nnodes, nodes_cap;
    sc_resource_t *res;
    size_t nres, res_cap;
    json_t *index; /* uri -> integer index into res */
};

/* A location inside a document or a schema, kept on the stack while descending and
 * rendered only when an error is reported. */
typedef struct sc_path {
    const struct sc_path *up;
    const char *key; /* NULL: an array index */
    size_t index;
} sc_path_t;

/* ------------------------------------------------------------------ helpers */

static int vec_grow(void **arr, size_t *cap, size_t n, size_t elsize)
{
    size_t ncap;
    void *p;

    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 16;
    p = realloc(*arr, ncap * elsize);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

static void path_render_dotted(const sc_path_t *p, rf_buf_t *b)
{
    if (!p)
        return;
    path_render_dotted(p->up, b);
    if (p->key) {
        if (b->len > 0)
            rf_buf_addc(b, '.');
        rf_buf_adds(b, p->key);
    } else {
        rf_buf_addf(b, "[%zu]", p->index);
    }
}

static void path_render_pointer(const sc_path_t *p, rf_buf_t *b)
{
    const char *k;

    if (!p)
        return;
    path_render_pointer(p->up, b);
    rf_buf_addc(b, '/');
    if (!p->key) {
        rf_buf_addf(b, "%zu", p->index);
        return;
    }
    for (k = p->key; *k; k++) {
        if (*k == '~')
            rf_buf_adds(b, "~0");
        else if (*k == '/')
            rf_buf_adds(b, "~1");
        else
            rf_buf_addc(b, *k);
    }
}

static const char *json_type_name(const json_t *x)
{
    switch (json_typeof(x)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

static int is_integral(const json_t *x)
{
    double d;

    if (json_is_integer(x))
        return 1;
    if (!json_is_real(x))
        return 0;
    d = json_real_value(x);
    return isfinite(d) && d == floor(d);
}

/* -1, 0, 1 as numbers compare; both must be numbers. */
static int num_cmp(const json_t *a, const json_t *b)
{
    double da, db;

    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t ia = json_integer_value(a), ib = json_integer_value(b);
        return ia < ib ? -1 : ia > ib;
    }
    da = json_number_value(a);
    db = json_number_value(b);
    return da < db ? -1 : da > db;
}

static void num_str(const json_t *x, char *buf, size_t size)
{
    if (json_is_integer(x))
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(x));
    else
        snprintf(buf, size, "%.17g", json_number_value(x));
}

/* Equality as JSON Schema defines it: numbers by value, 1 == 1.0. */
static int json_eq(const json_t *a, const json_t *b)
{
    const char *key;
    json_t *va;
    size_t i;

    if (json_is_number(a) && json_is_number(b))
        return num_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (i = 0; i < json_array_size(a); i++) {
            if (!json_eq(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        }
        return 1;
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach((json_t *)a, key, va)
        {
            json_t *vb = json_object_get(b, key);
            if (!vb || !json_eq(va, vb))
                return 0;
        }
        return 1;
    default:
        return 1; /* true, false, null: same type */
    }
}

static size_t utf8_count(const char *s, size_t n)
{
    size_t i, count = 0;

    for (i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    }
    return count;
}

/* ------------------------------------------------------------------ URIs */

static int uri_has_scheme(const char *s)
{
    const char *p = s;

    if (!isalpha((unsigned char)*p))
        return 0;
    while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    return *p == ':';
}

static char *str_ndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);

    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *str_cat(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    char *p = malloc(alen + blen + 1);

    if (!p)
        return NULL;
    memcpy(p, a, alen);
    memcpy(p + alen, b, blen + 1);
    return p;
}

/* The canonical form of an absolute URI used as an index key: without an empty
 * fragment ("...schema#" is "...schema"). */
static char *uri_key(const char *uri)
{
    size_t n = strlen(uri);

    if (n > 0 && uri[n - 1] == '#')
        n--;
    return str_ndup(uri, n);
}

/* ref resolved against base (RFC 3986 merge, without dot-segment removal). */
static char *uri_resolve(const char *base, const char *ref)
{
    size_t blen;
    const char *hash, *auth, *path, *slash;

    if (!base)
        base = "";
    hash = strchr(base, '#');
    blen = hash ? (size_t)(hash - base) : strlen(base);
    if (uri_has_scheme(ref))
        return uri_key(ref);
    if (ref[0] == '\0' || ref[0] == '#') {
        char *joined = str_cat(base, blen, ref);
        char *key;
        if (!joined)
            return NULL;
        key = uri_key(joined);
        free(joined);
        return key;
    }
    auth = strstr(base, "://");
    if (auth && (size_t)(auth - base) > blen)
        auth = NULL;
    if (ref[0] == '/' && ref[1] == '/') {
        const char *colon = memchr(base, ':', blen);
        return str_cat(base, colon ? (size_t)(colon - base + 1) : 0, ref);
    }
    path = base;
    if (auth) {
        path = memchr(auth + 3, '/', blen - (size_t)(auth + 3 - base));
        if (!path) {
            /* "http://host" + "x" -> "http://host/x" */
            char *withslash = str_cat(base, blen, "/");
            char *joined;
            if (!withslash)
                return NULL;
            joined = str_cat(withslash, blen + 1, ref[0] == '/' ? ref + 1 : ref);
            free(withslash);
            return joined;
        }
    } else if (uri_has_scheme(base)) {
        path = strchr(base, ':') + 1;
    }
    if (ref[0] == '/')
        return str_cat(base, (size_t)(path - base), ref);
    slash = NULL;
    for (const char *p = path; p < base + blen; p++) {
        if (*p == '/')
            slash = p;
    }
    if (!slash)
        return str_cat(base, (size_t)(path - base), ref);
    return str_cat(base, (size_t)(slash + 1 - base), ref);
}

/* ------------------------------------------------------------------ registry */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static sc_resource_t *reg_find(const rf_schema_registry_t *reg, const char *uri)
{
    json_t *idx = json_object_get(reg->index, uri);

    if (!idx)
        return NULL;
    return &reg->res[json_integer_value(idx)];
}

/* Registers uri (already canonical) for schema; an existing entry for the same schema
 * is fine, for another one it is an error (returns -1; -2 when out of memory). */
static int reg_register(rf_schema_registry_t *reg, const char *uri, const json_t *schema,
                        sc_node_t *node)
{
    sc_resource_t *r = reg_find(reg, uri);

    if (r) {
        if (r->schema != schema)
            return -1;
        if (!r->node)
            r->node = node;
        return 0;
    }
    if (vec_grow((void **)&reg->res, &reg->res_cap, reg->nres, sizeof(*reg->res)) < 0)
        return -2;
    if (json_object_set_new(reg->index, uri, json_integer((json_int_t)reg->nres)) < 0)
        return -2;
    reg->res[reg->nres].schema = schema;
    reg->res[reg->nres].node = node;
    reg->res[reg->nres].openapi = 0;
    reg->nres++;
    return 0;
}

static sc_node_t *reg_node_by_src(const rf_schema_registry_t *reg, const json_t *src)
{
    size_t i;

    for (i = 0; i < reg->nnodes; i++) {
        if (reg->nodes[i]->src == src)
            return reg->nodes[i];
    }
    return NULL;
}

static void node_free(sc_node_t *n)
{
    size_t i;

    if (!n)
        return;
    free(n->ref_uri);
    if (n->has_pattern)
        regfree(&n->pattern.re);
    for (i = 0; i < n->npprops; i++)
        regfree(&n->pprops[i].re.re);
    free(n->pprops);
    free(n->props);
    free(n->deps);
    free(n->items_list.v);
    free(n->all_of.v);
    free(n->any_of.v);
    free(n->one_of.v);
    free(n);
}

rf_schema_registry_t *rf_schema_registry_new(void)
{
    rf_schema_registry_t *reg = calloc(1, sizeof(*reg));

    if (!reg)
        return NULL;
    reg->index = json_object();
    if (!reg->index) {
        free(reg);
        return NULL;
    }
    return reg;
}

void rf_schema_registry_destroy(rf_schema_registry_t *reg)
{
    size_t i;

    if (!reg)
        return;
    for (i = 0; i < reg->nnodes; i++)
        node_free(reg->nodes[i]);
    free(reg->nodes);
    for (i = 0; i < reg->ndocs; i++)
        json_decref(reg->docs[i]);
    free(reg->docs);
    free(reg->res);
    json_decref(reg->index);
    free(reg);
}

/* ------------------------------------------------------------------ compile */

typedef struct cctx {
    rf_schema_registry_t *reg;
    const char *name; /* the schema being added, for messages */
    int strict;
    char *errstr;
    size_t errstr_size;
    int openapi; /* the OpenAPI dialect of Kubernetes' documents */
} cctx_t;

static rf_err_t cerr(cctx_t *c, const sc_path_t *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static rf_err_t cerr(cctx_t *c, const sc_path_t *loc, const char *fmt, ...)
{
    rf_buf_t where = RF_BUF_INIT;
    rf_buf_t what = RF_BUF_INIT;
    va_list ap;

    rf_buf_init(&where, 1024);
    rf_buf_init(&what, 1024);
    path_render_pointer(loc, &where);
    va_start(ap, fmt);
    rf_buf_vaddf(&what, fmt, ap);
    va_end(ap);
    rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size, "schema '%s' at '%s': %s", c->name,
            where.len ? rf_buf_str(&where) : "#", rf_buf_str(&what));
    rf_buf_release(&where);
    rf_buf_release(&what);
    return RF_ERR_PERM;
}

static rf_err_t compile(cctx_t *c, const json_t *schema, const char *base, const sc_path_t *loc,
                        sc_node_t **out);

static rf_err_t compile_child(cctx_t *c, const json_t *parent, const char *kw, const char *base,
                              const sc_path_t *loc, sc_node_t **out)
{
    sc_path_t here = {loc, kw, 0};
    const json_t *v = json_object_get(parent, kw);

    *out = NULL;
    if (!v)
        return RF_OK;
    return compile(c, v, base, &here, out);
}

static rf_err_t compile_list(cctx_t *c, const json_t *parent, const char *kw, const char *base,
                             const sc_path_t *loc, sc_list_t *list)
{
    sc_path_t here = {loc, kw, 0};
    const json_t *v = json_object_get(parent, kw);
    rf_err_t result = RF_OK;
    size_t i;

    if (!v)
        return RF_OK;
    if (!json_is_array(v) || json_array_size(v) == 0)
        return cerr(c, &here, "expected a non-empty array of schemas");
    list->v = calloc(json_array_size(v), sizeof(*list->v));
    if (!list->v)
        return cerr(c, &here, "out of memory");
    list->n = json_array_size(v);
    for (i = 0; i < list->n; i++) {
        sc_path_t item = {&here, NULL, i};
        result = compile(c, json_array_get(v, i), base, &item, &list->v[i]);
        if (result != RF_OK)
            break;
    }
    return result;
}

static rf_err_t compile_count(cctx_t *c, const json_t *parent, const char *kw, const sc_path_t *loc,
                              json_int_t *out)
{
    sc_path_t here = {loc, kw, 0};
    const json_t *v = json_object_get(parent, kw);

    *out = -1;
    if (!v)
        return RF_OK;
    if (!json_is_number(v) || !is_integral(v) || json_number_value(v) < 0)
        return cerr(c, &here, "expected a non-negative integer");
    *out = json_is_integer(v) ? json_integer_value(v) : (json_int_t)json_real_value(v);
    return RF_OK;
}

static rf_err_t compile_number(cctx_t *c, const json_t *parent, const char *kw,
                               const sc_path_t *loc, const json_t **out)
{
    sc_path_t here = {loc, kw, 0};
    const json_t *v = json_object_get(parent, kw);

    *out = NULL;
    if (!v)
        return RF_OK;
    if (!json_is_number(v))
        return cerr(c, &here, "expected a number");
    *out = v;
    return RF_OK;
}

/* In strict mode a pattern may escape only punctuation: "\d" and friends mean something
 * else (or nothing) in POSIX than in ECMA-262, and "(?" is ECMA-only. */
static rf_err_t check_portable_regex(cctx_t *c, const sc_path_t *loc, const char *re)
{
    const char *p;

    for (p = re; *p; p++) {
        if (p[0] == '\\' && p[1] != '\0') {
            if (isalnum((unsigned char)p[1]))
                return cerr(c, loc, "regex '%s': escape '\\%c' is ECMA-only, not POSIX", re, p[1]);
            p++;
        } else if (p[0] == '(' && p[1] == '?') {
            return cerr(c, loc, "regex '%s': '(?' is ECMA-only, not POSIX", re);
        }
    }
    return RF_OK;
}

static rf_err_t compile_regex(cctx_t *c, const sc_path_t *loc, const char *src, sc_regex_t *re)
{
    static _Atomic uint64_t last_id;
    char msg[256];
    int rc;

    if (c->strict && check_portable_regex(c, loc, src) != RF_OK)
        return RF_ERR_PERM;
    rc = regcomp(&re->re, src, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        regerror(rc, &re->re, msg, sizeof(msg)); /* a failed regcomp leaves nothing to free */
        return cerr(c, loc, "invalid regular expression '%s': %s", src, msg);
    }
    re->id = atomic_fetch_add(&last_id, 1) + 1;
    return RF_OK;
}

static rf_err_t compile_type(cctx_t *c, const json_t *v, const sc_path_t *loc, unsigned *types)
{
    sc_path_t here = {loc, "type", 0};
    size_t i, k, n;

    *types = 0;
    if (!v)
        return RF_OK;
    if (!json_is_string(v) && !json_is_array(v))
        return cerr(c, &here, "expected a type name or an array of them");
    n = json_is_array(v) ? json_array_size(v) : 1;
    for (i = 0; i < n; i++) {
        const json_t *t = json_is_array(v) ? json_array_get(v, i) : v;
        unsigned bit = 0;
        for (k = 0; json_is_string(t) && k < sizeof(type_names) / sizeof(type_names[0]); k++) {
            if (strcmp(json_string_value(t), type_names[k].name) == 0)
                bit = type_names[k].bit;
        }
        if (!bit)
            return cerr(c, &here, "unknown type name");
        *types |= bit;
    }
    if (*types == 0)
        return cerr(c, &here, "empty list of types");
    return RF_OK;
}

static rf_err_t compile_object_keywords(cctx_t *c, const json_t *s, const char *base,
                                        const sc_path_t *loc, sc_node_t *n)
{
    rf_err_t result = RF_OK;
    const json_t *v;
    const char *key;
    json_t *sub;
    size_t i;

    v = json_object_get(s, "properties");
    if (v) {
        sc_path_t here = {loc, "properties", 0};
        if (!json_is_object(v))
            return cerr(c, &here, "expected an object");
        n->properties = v;
        n->props = calloc(json_object_size(v) + 1, sizeof(*n->props));
        if (!n->props)
            return cerr(c, &here, "out of memory");
        json_object_foreach((json_t *)v, key, sub)
        {
            sc_path_t item = {&here, key, 0};
            n->props[n->nprops].name = key;
            result = compile(c, sub, base, &item, &n->props[n->nprops].node);
            n->nprops++;
            if (result != RF_OK)
                return result;
        }
    }
    v = json_object_get(s, "patternProperties");
    if (v) {
        sc_path_t here = {loc, "patternProperties", 0};
        if (!json_is_object(v))
            return cerr(c, &here, "expected an object");
        n->pprops = calloc(json_object_size(v) + 1, sizeof(*n->pprops));
        if (!n->pprops)
            return cerr(c, &here, "out of memory");
        json_object_foreach((json_t *)v, key, sub)
        {
            sc_path_t item = {&here, key, 0};
            result = compile_regex(c, &item, key, &n->pprops[n->npprops].re);
            if (result != RF_OK)
                return result;
            n->npprops++;
            result = compile(c, sub, base, &item, &n->pprops[n->npprops - 1].node);
            if (result != RF_OK)
                return result;
        }
    }
    result = compile_child(c, s, "additionalProperties", base, loc, &n->additional_props);
    if (result != RF_OK)
        return result;
    result = compile_child(c, s, "propertyNames", base, loc, &n->property_names);
    if (result != RF_OK)
        return result;
    v = json_object_get(s, "required");
    if (v) {
        sc_path_t here = {loc, "required", 0};
        if (!json_is_array(v))
            return cerr(c, &here, "expected an array of strings");
        for (i = 0; i < json_array_size(v); i++) {
            if (!json_is_string(json_array_get(v, i)))
                return cerr(c, &here, "expected an array of strings");
        }
        n->required = v;
    }
    v = json_object_get(s, "dependencies");
    if (v) {
        sc_path_t here = {loc, "dependencies", 0};
        if (!json_is_object(v))
            return cerr(c, &here, "expected an object");
        n->deps = calloc(json_object_size(v) + 1, sizeof(*n->deps));
        if (!n->deps)
            return cerr(c, &here, "out of memory");
        json_object_foreach((json_t *)v, key, sub)
        {
            sc_path_t item = {&here, key, 0};
            sc_dep_t *d = &n->deps[n->ndeps++];
            d->name = key;
            if (json_is_array(sub)) {
                for (i = 0; i < json_array_size(sub); i++) {
                    if (!json_is_string(json_array_get(sub, i)))
                        return cerr(c, &item, "expected an array of strings or a schema");
                }
                d->required = sub;
            } else {
                result = compile(c, sub, base, &item, &d->node);
                if (result != RF_OK)
                    return result;
            }
        }
    }
    result = compile_count(c, s, "minProperties", loc, &n->min_props);
    if (result == RF_OK)
        result = compile_count(c, s, "maxProperties", loc, &n->max_props);
    return result;
}

static rf_err_t compile_array_keywords(cctx_t *c, const json_t *s, const char *base,
                                       const sc_path_t *loc, sc_node_t *n)
{
    rf_err_t result;
    const json_t *v;

    v = json_object_get(s, "items");
    if (json_is_array(v)) {
        sc_path_t here = {loc, "items", 0};
        size_t i;
        n->items_is_list = 1;
        n->items_list.v = calloc(json_array_size(v) + 1, sizeof(*n->items_list.v));
        if (!n->items_list.v)
            return cerr(c, &here, "out of memory");
        n->items_list.n = json_array_size(v);
        for (i = 0; i < n->items_list.n; i++) {
            sc_path_t item = {&here, NULL, i};
            result = compile(c, json_array_get(v, i), base, &item, &n->items_list.v[i]);
            if (result != RF_OK)
                return result;
        }
    } else {
        result = compile_child(c, s, "items", base, loc, &n->items);
        if (result != RF_OK)
            return result;
    }
    result = compile_child(c, s, "additionalItems", base, loc, &n->additional_items);
    if (result != RF_OK)
        return result;
    result = compile_child(c, s, "contains", base, loc, &n->contains);
    if (result != RF_OK)
        return result;
    result = compile_count(c, s, "minItems", loc, &n->min_items);
    if (result == RF_OK)
        result = compile_count(c, s, "maxItems", loc, &n->max_items);
    if (result != RF_OK)
        return result;
    v = json_object_get(s, "uniqueItems");
    if (v) {
        sc_path_t here = {loc, "uniqueItems", 0};
        if (!json_is_boolean(v))
            return cerr(c, &here, "expected a boolean");
        n->unique_items = json_is_true(v);
    }
    return RF_OK;
}

static rf_err_t compile_scalar_keywords(cctx_t *c, const json_t *s, const sc_path_t *loc,
                                        sc_node_t *n)
{
    rf_err_t result;
    const json_t *v;

    result = compile_type(c, json_object_get(s, "type"), loc, &n->types);
    if (result != RF_OK)
        return result;
    v = json_object_get(s, "enum");
    if (v) {
        sc_path_t here = {loc, "enum", 0};
        if (!json_is_array(v))
            return cerr(c, &here, "expected an array");
        n->enum_values = v;
    }
    n->const_value = json_object_get(s, "const");
    result = compile_count(c, s, "minLength", loc, &n->min_length);
    if (result == RF_OK)
        result = compile_count(c, s, "maxLength", loc, &n->max_length);
    if (result == RF_OK)
        result = compile_number(c, s, "minimum", loc, &n->minimum);
    if (result == RF_OK)
        result = compile_number(c, s, "maximum", loc, &n->maximum);
    if (result == RF_OK)
        result = compile_number(c, s, "exclusiveMinimum", loc, &n->exclusive_minimum);
    if (result == RF_OK)
        result = compile_number(c, s, "exclusiveMaximum", loc, &n->exclusive_maximum);
    if (result == RF_OK)
        result = compile_number(c, s, "multipleOf", loc, &n->multiple_of);
    if (result != RF_OK)
        return result;
    if (n->multiple_of && json_number_value(n->multiple_of) <= 0) {
        sc_path_t here = {loc, "multipleOf", 0};
        return cerr(c, &here, "expected a number greater than 0");
    }
    v = json_object_get(s, "pattern");
    if (v) {
        sc_path_t here = {loc, "pattern", 0};
        if (!json_is_string(v))
            return cerr(c, &here, "expected a string");
        result = compile_regex(c, &here, json_string_value(v), &n->pattern);
        if (result != RF_OK)
            return result;
        n->has_pattern = 1;
        n->pattern_src = json_string_value(v);
    }
    return RF_OK;
}

/* The OpenAPI dialect of Kubernetes: formats that decide a type or a range, unknown fields,
 * and our own x-relfleet-message. */
static rf_err_t compile_openapi_keywords(cctx_t *c, const json_t *s, const sc_path_t *loc,
                                         sc_node_t *n)
{
    const char *fmt = json_string_value(json_object_get(s, "format"));
    const json_t *msg = json_object_get(s, "x-relfleet-message");

    if (json_is_true(json_object_get(s, "x-kubernetes-int-or-string")) ||
        (fmt && strcmp(fmt, "int-or-string") == 0))
        n->types = T_INTEGER | T_STRING;
    if (fmt && (n->types & T_INTEGER) && strcmp(fmt, "int32") == 0)
        n->int_bits = 32;
    else if (fmt && (n->types & T_INTEGER) && strcmp(fmt, "int64") == 0)
        n->int_bits = 64;
    if (n->types == T_OBJECT && n->properties && !n->additional_props &&
        !json_is_true(json_object_get(s, "x-kubernetes-preserve-unknown-fields")))
        n->strict_fields = 1;
    if (msg) {
        sc_path_t here = {loc, "x-relfleet-message", 0};
        if (!json_is_string(msg))
            return cerr(c, &here, "expected a string");
        n->message = json_string_value(msg);
    }
    return RF_OK;
}

static rf_err_t compile_strict_checks(cctx_t *c, const json_t *s, const sc_path_t *loc)
{
    const char *key;
    json_t *v;
    size_t i;
    int known;

    json_object_foreach((json_t *)s, key, v)
    {
        known = 0;
        for (i = 0; known_keywords[i]; i++) {
            if (strcmp(key, known_keywords[i]) == 0)
                known = 1;
        }
        if (!known)
            return cerr(c, loc, "unknown keyword '%s'", key);
    }
    v = json_object_get(s, "$schema");
    if (v) {
        sc_path_t here = {loc, "$schema", 0};
        char *k = json_is_string(v) ? uri_key(json_string_value(v)) : NULL;
        int ok = k && strcmp(k, DRAFT7_URI) == 0;
        free(k);
        if (!ok)
            return cerr(c, &here, "only draft 7 ('" DRAFT7_URI "#') is supported");
    }
    return RF_OK;
}

static rf_err_t compile(cctx_t *c, const json_t *s, const char *base, const sc_path_t *loc,
                        sc_node_t **out)
{
    rf_err_t result = RF_OK;
    sc_node_t *n = NULL;
    char *mybase = NULL;
    const json_t *v;
    int rc;

    *out = NULL;
    if (!json_is_object(s) && !json_is_boolean(s))
        return cerr(c, loc, "a schema must be an object or a boolean, not %s", json_type_name(s));
    if (vec_grow((void **)&c->reg->nodes, &c->reg->nodes_cap, c->reg->nnodes,
                 sizeof(*c->reg->nodes)) < 0)
        return cerr(c, loc, "out of memory");
    n = calloc(1, sizeof(*n));
    if (!n)
        return cerr(c, loc, "out of memory");
    c->reg->nodes[c->reg->nnodes++] = n; /* the registry frees it, whatever happens next */
    n->src = s;
    n->min_length = n->max_length = n->min_items = n->max_items = -1;
    n->min_props = n->max_props = -1;
    *out = n;
    if (json_is_boolean(s)) {
        n->boolean = json_is_true(s);
        return RF_OK;
    }
    n->boolean = -1;
    n->openapi = c->openapi;
    if (c->strict) {
        result = compile_strict_checks(c, s, loc);
        if (result != RF_OK)
            return result;
    }

    v = json_object_get(s, "$ref");
    if (json_is_string(v)) {
        /* draft 7: every sibling of $ref, $id included, is ignored */
        n->ref_uri = uri_resolve(base, json_string_value(v));
        if (!n->ref_uri)
            return cerr(c, loc, "out of memory");
        return RF_OK;
    }

    v = json_object_get(s, "$id");
    if (json_is_string(v)) {
        char *abs = uri_resolve(base, json_string_value(v));
        if (!abs)
            return cerr(c, loc, "out of memory");
        rc = reg_register(c->reg, abs, s, n);
        if (rc < 0) {
            sc_path_t here = {loc, "$id", 0};
            result = cerr(c, &here, "duplicate $id '%s'", abs);
            free(abs);
            return result;
        }
        if (strchr(abs, '#')) {
            free(abs); /* a plain-name anchor: the base stays */
        } else {
            mybase = abs;
            base = mybase;
        }
    }

    result = compile_scalar_keywords(c, s, loc, n);
    if (result == RF_OK)
        result = compile_object_keywords(c, s, base, loc, n);
    if (result == RF_OK)
        result = compile_array_keywords(c, s, base, loc, n);
    if (result == RF_OK)
        result = compile_list(c, s, "allOf", base, loc, &n->all_of);
    if (result == RF_OK)
        result = compile_list(c, s, "anyOf", base, loc, &n->any_of);
    if (result == RF_OK)
        result = compile_list(c, s, "oneOf", base, loc, &n->one_of);
    if (result == RF_OK)
        result = compile_child(c, s, "not", base, loc, &n->not_schema);
    if (result == RF_OK)
        result = compile_child(c, s, "if", base, loc, &n->if_schema);
    if (result == RF_OK)
        result = compile_child(c, s, "then", base, loc, &n->then_schema);
    if (result == RF_OK)
        result = compile_child(c, s, "else", base, loc, &n->else_schema);
    if (result == RF_OK && c->openapi)
        result = compile_openapi_keywords(c, s, loc, n);
    if (result != RF_OK)
        goto cleanup;

    v = json_object_get(s, "definitions");
    if (v) {
        sc_path_t here = {loc, "definitions", 0};
        const char *key;
        json_t *sub;
        sc_node_t *ignored;
        if (!json_is_object(v)) {
            result = cerr(c, &here, "expected an object");
            goto cleanup;
        }
        json_object_foreach((json_t *)v, key, sub)
        {
            sc_path_t item = {&here, key, 0};
            result = compile(c, sub, base, &item, &ignored);
            if (result != RF_OK)
                goto cleanup;
        }
    }

cleanup:
    free(mybase);
    return result;
}

/* Walks a percent-decoded JSON pointer from root, following the base URI through the
 * "$id"s it passes. Returns the target or NULL; *base is replaced (malloc'd). */
static const json_t *pointer_walk(const json_t *root, const char *ptr, char **base)
{
    const json_t *cur = root;
    char token[1024];
    const char *p = ptr;
    size_t n;

    while (*p == '/') {
        const json_t *id;
        p++;
        n = 0;
        while (*p && *p != '/') {
            if (n + 1 >= sizeof(token))
                return NULL;
            if (p[0] == '~' && p[1] == '0') {
                token[n++] = '~';
                p += 2;
            } else if (p[0] == '~' && p[1] == '1') {
                token[n++] = '/';
                p += 2;
            } else {
                token[n++] = *p++;
            }
        }
        token[n] = '\0';
        id = json_is_object(cur) ? json_object_get(cur, "$id") : NULL;
        if (cur != root && json_is_string(id)) {
            char *nb = uri_resolve(*base, json_string_value(id));
            if (!nb)
                return NULL;
            if (strchr(nb, '#')) {
                free(nb);
            } else {
                free(*base);
                *base = nb;
            }
        }
        if (json_is_object(cur)) {
            cur = json_object_get(cur, token);
        } else if (json_is_array(cur)) {
            char *end;
            unsigned long idx = strtoul(token, &end, 10);
            if (n == 0 || *end != '\0' || !isdigit((unsigned char)token[0]))
                return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
        if (!cur)
            return NULL;
    }
    return *p == '\0' ? cur : NULL;
}

/* Finds (compiling it if needed) the node an absolute ref URI names; NULL if not yet. */
static sc_node_t *resolve_ref(rf_schema_registry_t *reg, const char *uri)
{
    const char *hash = strchr(uri, '#');
    sc_resource_t *r;
    sc_node_t *node = NULL;
    char *doc = NULL, *frag = NULL, *base = NULL;
    const json_t *target;
    size_t i, n;

    r = reg_find(reg, uri);
    if (r && r->node)
        return r->node;
    if (!hash)
        return NULL;
    doc = str_ndup(uri, (size_t)(hash - uri));
    if (!doc)
        goto cleanup;
    r = reg_find(reg, doc);
    if (!r || hash[1] != '/')
        goto cleanup;
    frag = malloc(strlen(hash));
    if (!frag)
        goto cleanup;
    for (i = 1, n = 0; hash[i]; i++) {
        int hi = hash[i] == '%' ? hexval(hash[i + 1]) : -1;
        int lo = hi >= 0 ? hexval(hash[i + 2]) : -1;
        if (hi >= 0 && lo >= 0) {
            frag[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            frag[n++] = hash[i];
        }
    }
    frag[n] = '\0';
    base = doc;
    doc = NULL;
    target = pointer_walk(r->schema, frag, &base);
    if (!target)
        goto cleanup;
    node = reg_node_by_src(reg, target);
    if (!node) {
        /* a schema at a place no keyword compiles (e.g. "#/x/y"): compile it now */
        cctx_t c = {reg, uri, 0, NULL, 0, r->openapi};
        if (compile(&c, target, base, NULL, &node) != RF_OK)
            node = NULL;
    }

cleanup:
    free(doc);
    free(frag);
    free(base);
    return node;
}

/* Resolves every pending $ref that can be; returns the first that cannot, or NULL. */
static const char *reg_link(rf_schema_registry_t *reg)
{
    const char *pending = NULL;
    size_t i;

    for (i = 0; i < reg->nnodes; i++) {
        sc_node_t *n = reg->nodes[i];
        if (!n->ref_uri || n->ref)
            continue;
        n->ref = resolve_ref(reg, n->ref_uri);
        if (!n->ref && !pending)
            pending = n->ref_uri;
    }
    return pending;
}

static rf_err_t reg_add(rf_schema_registry_t *reg, const char *name, json_t *schema, int strict,
                        int openapi, char *errstr, size_t errstr_size)
{
    cctx_t c = {reg, name, strict, errstr, errstr_size, openapi};
    sc_node_t *root = NULL;
    char *key = NULL;
    rf_err_t result = RF_OK;
    int rc;

    if (!name || !*name || !schema)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "schema name and schema are required");
    key = uri_key(name);
    if (!key)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "out of memory");
    if (reg_find(reg, key)) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "duplicate schema name '%s'", key);
        goto cleanup;
    }
    if (vec_grow((void **)&reg->docs, &reg->docs_cap, reg->ndocs, sizeof(*reg->docs)) < 0) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    reg->docs[reg->ndocs++] = json_incref(schema);
    rc = reg_register(reg, key, schema, NULL);
    if (rc < 0) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot register schema '%s'", key);
        goto cleanup;
    }
    reg_find(reg, key)->openapi = openapi;
    result = compile(&c, schema, key, NULL, &root);
    if (result != RF_OK)
        goto cleanup;
    reg_find(reg, key)->node = root;
    reg_link(reg);

cleanup:
    free(key);
    return result;
}

rf_err_t rf_schema_registry_add(rf_schema_registry_t *reg, const char *name, json_t *schema,
                                char *errstr, size_t errstr_size)
{
    return reg_add(reg, name, schema, 0, 0, errstr, errstr_size);
}

rf_err_t rf_schema_registry_add_openapi(rf_schema_registry_t *reg, const char *name, json_t *doc,
                                        char *errstr, size_t errstr_size)
{
    return reg_add(reg, name, doc, 0, 1, errstr, errstr_size);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static rf_err_t load_file(rf_schema_registry_t *reg, const char *dir, const char *file,
                          char *errstr, size_t errstr_size)
{
    rf_buf_t path = RF_BUF_INIT;
    json_error_t jerr;
    json_t *schema = NULL;
    const json_t *id;
    char *stem = NULL;
    rf_err_t result = RF_OK;

    rf_buf_init(&path, 0);
    if (rf_buf_addf(&path, "%s/%s", dir, file) < 0) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    schema = json_load_file(rf_buf_str(&path), JSON_REJECT_DUPLICATES, &jerr);
    if (!schema) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "schema file '%s': not JSON: %s at line %d column %d", rf_buf_str(&path),
                         jerr.text, jerr.line, jerr.column);
        goto cleanup;
    }
    stem = str_ndup(file, strlen(file) - strlen(".json"));
    if (!stem) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    id = json_object_get(schema, "$id");
    if (id && !json_is_string(id)) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "schema file '%s': $id is not a string",
                         rf_buf_str(&path));
        goto cleanup;
    }
    result = reg_add(reg, id ? json_string_value(id) : stem, schema, 1, 0, errstr, errstr_size);
    if (result == RF_OK && id && strcmp(json_string_value(id), stem) != 0) {
        /* also reachable by file name; the schema is already compiled under its $id */
        sc_resource_t *r = reg_find(reg, json_string_value(id));
        int rc = reg_register(reg, stem, schema, r ? r->node : NULL);
        if (rc < 0)
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "duplicate schema name '%s'", stem);
    }

cleanup:
    json_decref(schema);
    free(stem);
    rf_buf_release(&path);
    return result;
}

rf_err_t rf_schema_registry_load_dir(rf_schema_registry_t *reg, const char *dir, char *errstr,
                                     size_t errstr_size)
{
    DIR *d = NULL;
    struct dirent *e;
    char **names = NULL;
    size_t nnames = 0, cap = 0, i, len;
    const char *pending;
    rf_err_t result = RF_OK;

    d = opendir(dir);
    if (!d)
        return rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "cannot open schema directory '%s'",
                       dir);
    for (e = readdir(d); e; e = readdir(d)) {
        len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len <= 5 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (vec_grow((void **)&names, &cap, nnames, sizeof(*names)) < 0) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "out of memory");
            goto cleanup;
        }
        names[nnames] = str_ndup(e->d_name, len);
        if (!names[nnames]) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "out of memory");
            goto cleanup;
        }
        nnames++;
    }
    if (nnames == 0) {
        result =
            rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "no schema file (*.json) in '%s'", dir);
        goto cleanup;
    }
    qsort(names, nnames, sizeof(*names), cmp_str);
    for (i = 0; i < nnames; i++) {
        result = load_file(reg, dir, names[i], errstr, errstr_size);
        if (result != RF_OK)
            goto cleanup;
    }
    pending = reg_link(reg);
    if (pending)
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "schema directory '%s': unresolved $ref '%s'", dir, pending);

cleanup:
    for (i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    if (d)
        closedir(d);
    return result;
}

/* ------------------------------------------------------------------ validate */

typedef struct vctx {
    char *errstr;
    size_t errstr_size;
    json_t *errors;    /* rf_schema_validate_all: every failure goes here; else NULL */
    size_t max_errors; /* with errors: no more than this many */
} vctx_t;

/* After a failure: go on to the siblings only when collecting every failure, reporting,
 * and there is room for more. */
#define KEEP_GOING(c, report)                                                                      \
    ((report) && (c)->errors && json_array_size((c)->errors) < (c)->max_errors)

static json_t *path_segments(const sc_path_t *p)
{
    json_t *arr;

    if (!p) {
        arr = json_array();
        if (!arr)
            abort();
        return arr;
    }
    arr = path_segments(p->up);
    json_array_append_new(arr, p->key ? json_string(p->key) : json_integer((json_int_t)p->index));
    return arr;
}

static int vfail(vctx_t *c, int report, const sc_path_t *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the failure (when reporting) and returns 0, "invalid". */
static int vfail(vctx_t *c, int report, const sc_path_t *path, const char *fmt, ...)
{
    rf_buf_t where = RF_BUF_INIT;
    rf_buf_t what = RF_BUF_INIT;
    va_list ap;

    if (!report)
        return 0;
    rf_buf_init(&where, 512);
    rf_buf_init(&what, 1024);
    path_render_dotted(path, &where);
    va_start(ap, fmt);
    rf_buf_vaddf(&what, fmt, ap);
    va_end(ap);
    if (!c->errors || json_array_size(c->errors) == 0) {
        if (where.len)
            rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size, "field '%s': %s", rf_buf_str(&where),
                    rf_buf_str(&what));
        else
            rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size, "document: %s", rf_buf_str(&what));
    }
    if (c->errors && json_array_size(c->errors) < c->max_errors)
        json_array_append_new(c->errors,
                              json_pack("{s:o, s:s, s:s}", "path", path_segments(path), "field",
                                        rf_buf_str(&where), "message", rf_buf_str(&what)));
    rf_buf_release(&where);
    rf_buf_release(&what);
    return 0;
}

/*
 * The match memo. glibc's regexec costs ~5,000 instructions on a label of 20 characters
 * (a DFA state's halt check at every character for a pattern ending in '$'), and a
 * release's manifests match the same few strings again and again: label keys and values,
 * container, port and env names, quantities (74 matches per release of the bench's
 * template, ~60% of the render stage's validation). A match depends only on the regex and
 * the string, so each thread remembers its last answers in a table indexed by a hash of
 * both: a hit compares the regex's number and the text, a miss asks regexec and takes the
 * slot. Strings longer than MEMO_TEXT bytes are not remembered.
 */
#define MEMO_SLOTS 512 /* a power of two */
#define MEMO_TEXT 54

typedef struct memo_slot {
    uint64_t id; /* 0: empty */
    unsigned char len;
    unsigned char matches;
    char text[MEMO_TEXT];
} memo_slot_t;

static _Thread_local memo_slot_t regex_memo[MEMO_SLOTS];

/* regexec(&re->re, s, 0, NULL, 0) == 0, remembered. */
static int regex_matches(const sc_regex_t *re, const char *s)
{
    uint64_t h = 14695981039346656037ULL ^ re->id; /* FNV-1a over the id, then the text */
    memo_slot_t *slot;
    size_t len;

    for (len = 0; s[len] && len <= MEMO_TEXT; len++)
        h = (h ^ (unsigned char)s[len]) * 1099511628211ULL;
    if (len > MEMO_TEXT)
        return regexec(&re->re, s, 0, NULL, 0) == 0;
    slot = &regex_memo[(h ^ (h >> 32)) & (MEMO_SLOTS - 1)];
    if (slot->id == re->id && slot->len == len && memcmp(slot->text, s, len) == 0)
        return slot->matches;
    slot->id = re->id;
    slot->len = (unsigned char)len;
    memcpy(slot->text, s, len);
    slot->matches = regexec(&re->re, s, 0, NULL, 0) == 0;
    return slot->matches;
}

/* Compact JSON of v for messages, cut at about 200 bytes. */
static void json_brief(const json_t *v, char *buf, size_t size)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    if (!s) {
        snprintf(buf, size, "?");
        return;
    }
    if (strlen(s) > 200)
        snprintf(buf, size, "%.200s...", s);
    else
        snprintf(buf, size, "%s", s);
    free(s);
}

static void types_str(unsigned types, char *buf, size_t size)
{
    size_t k, used = 0;

    buf[0] = '\0';
    for (k = 0; k < sizeof(type_names) / sizeof(type_names[0]); k++) {
        if (!(types & type_names[k].bit) || used >= size)
            continue;
        used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? " or " : "",
                                 type_names[k].name);
    }
}

static int v_node(const sc_node_t *n, const json_t *x, const sc_path_t *path, vctx_t *c, int report,
                  unsigned depth);

static int type_ok(unsigned types, const json_t *x)
{
    switch (json_typeof(x)) {
    case JSON_NULL:
        return types & T_NULL;
    case JSON_TRUE:
    case JSON_FALSE:
        return types & T_BOOLEAN;
    case JSON_OBJECT:
        return types & T_OBJECT;
    case JSON_ARRAY:
        return types & T_ARRAY;
    case JSON_STRING:
        return types & T_STRING;
    case JSON_INTEGER:
        return types & (T_NUMBER | T_INTEGER);
    case JSON_REAL:
        return (types & T_NUMBER) || ((types & T_INTEGER) && is_integral(x));
    }
    return 0;
}

static int v_string(const sc_node_t *n, const json_t *x, const sc_path_t *path, vctx_t *c,
                    int report)
{
    size_t bytes = json_string_length(x);
    size_t count;

    if (n->max_length >= 0 && bytes > (size_t)n->max_length) {
        count = utf8_count(json_string_value(x), bytes);
        if (count > (size_t)n->max_length)
            return vfail(c, report, path, "string too long (%zu > %" JSON_INTEGER_FORMAT ")", count,
                         n->max_length);
    }
    if (n->min_length > 0) {
        count = utf8_count(json_string_value(x), bytes);
        if (count < (size_t)n->min_length)
            return vfail(c, report, path, "string too short (%zu < %" JSON_INTEGER_FORMAT ")",
                         count, n->min_length);
    }
    if (n->has_pattern && !regex_matches(&n->pattern, json_string_value(x)))
        return vfail(c, report, path, "string does not match pattern '%s'", n->pattern_src);
    return 1;
}

static int multiple_ok(const json_t *x, const json_t *m)
{
    double q;

    if (json_is_integer(x) && json_is_integer(m))
        return json_integer_value(x) % json_integer_value(m) == 0;
    q = json_number_value(x) / json_number_value(m);
    if (!isfinite(q))
        return 0;
    return fabs(q - nearbyint(q)) < 1e-9;
}

/* The failure of v_number, its two numbers written out only then. */
static int v_number_fail(vctx_t *c, int report, const sc_path_t *path, const char *what,
                         const json_t *x, const json_t *bound)
{
    char a[40], b[40];

    if (!report)
        return 0;
    num_str(x, a, sizeof(a));
    num_str(bound, b, sizeof(b));
    return vfail(c, report, path, what, a, b);
}

static int v_number(const sc_node_t *n, const json_t *x, const sc_path_t *path, vctx_t *c,
                    int report)
{
    if (n->minimum && num_cmp(x, n->minimum) < 0)
        return v_number_fail(c, report, path, "number %s is less than the minimum %s", x,
                             n->minimum);
    if (n->maximum && num_cmp(x, n->maximum) > 0)
        return v_number_fail(c, report, path, "number %s is greater than the maximum %s", x,
                             n->maximum);
    if (n->exclusive_minimum && num_cmp(x, n->exclusive_minimum) <= 0)
        return v_number_fail(c, report, path, "number %s is not greater than %s", x,
                             n->exclusive_minimum);
    if (n->exclusive_maximum && num_cmp(x, n->exclusive_maximum) >= 0)
        return v_number_fail(c, report, path, "number %s is not less than %s", x,
                             n->exclusive_maximum);
    if (n->multiple_of && !multiple_ok(x, n->multiple_of))
        return v_number_fail(c, report, path, "number %s is not a multiple of %s", x,
                             n->multiple_of);
    return 1;
}

static int v_array(const sc_node_t *n, const json_t *x, const sc_path_t *path, vctx_t *c,
                   int report, unsigned depth)
{
    size_t size = json_array_size(x);
    size_t i, j;
    int ok = 1;

    if (n->min_items >= 0 && size < (size_t)n->min_items)
        return vfail(c, report, path, "array too short (%zu < %" JSON_INTEGER_FORMAT " items)",
                     size, n->min_items);
    if (n->max_items >= 0 && size > (size_t)n->max_items)
        return vfail(c, report, path, "array too long (%zu > %" JSON_INTEGER_FORMAT " items)", size,
                     n->max_items);
    if (n->unique_items) {
        for (i = 0; i < size; i++) {
            for (j = i + 1; j < size; j++) {
                if (json_eq(json_array_get(x, i), json_array_get(x, j)))
                    return vfail(c, report, path, "array items %zu and %zu are equal", i, j);
            }
        }
    }
    for (i = 0; i < size; i++) {
        sc_path_t item = {path, NULL, i};
        const sc_node_t *s = NULL;
        if (n->items_is_list)
            s = i < n->items_list.n ? n->items_list.v[i] : n->additional_items;
        else
            s = n->items;
        if (s && !v_node(s, json_array_get(x, i), &item, c, report, depth + 1)) {
            ok = 0;
            if (!KEEP_GOING(c, report))
                return 0;
        }
    }
    if (n->contains) {
        for (i = 0; i < size; i++) {
            if (v_node(n->contains, json_array_get(x, i), path, c, 0, depth + 1))
                break;
        }
        if (i == size)
            return vfail(c, report, path, "no array item matches 'contains'");
    }
    return ok;
}

static int is_additional(const sc_node_t *n, const char *key)
{
    size_t i;

    if (n->properties && json_object_get(n->properties, key))
        return 0;
    for (i = 0; i < n->npprops; i++) {
        if (regex_matches(&n->pprops[i].re, key))
            return 0;
    }
    return 1;
}

/* The words a schema gives for its failures (x-relfleet-message), through $refs. */
static const char *node_message(const sc_node_t *n)
{
    unsigned hops = 0;

    while (n && n->ref_uri && n->ref && hops++ < 64)
        n = n->ref;
    return n ? n->message : NULL;
}

/* A field JSON decoding in Kubernetes treats as absent: missing, or null (OpenAPI). */
static const json_t *field_value(const sc_node_t *n, const json_t *x, const char *name)
{
    const json_t *v = json_object_get(x, name);

    return v && n->openapi && json_is_null(v) ? NULL : v;
}

/* Records a failure of the object's field and says whether to stop (1) or go on (0). */
#define OBJECT_FAILED()                                                                            \
    do {                                                                                           \
        ok = 0;                                                                                    \
        if (!KEEP_GOING(c, report))                                                                \
            return 0;                                                                              \
    } while (0)

static int v_object(const sc_node_t *n, const json_t *x, const sc_path_t *path, vctx_t *c,
                    int report, unsigned depth)
{
    size_t size = json_object_size(x);
    const char *key;
    json_t *val;
    size_t i, k;
    int ok = 1;

    if (n->min_props >= 0 && size < (size_t)n->min_props)
        return vfail(c, report, path, "object has too few fields (%zu < %" JSON_INTEGER_FORMAT ")",
                     size, n->min_props);
    if (n->max_props >= 0 && size > (size_t)n->max_props)
        return vfail(c, report, path, "object has too many fields (%zu > %" JSON_INTEGER_FORMAT ")",
                     size, n->max_props);
    for (i = 0; n->required && i < json_array_size(n->required); i++) {
        const char *name = json_string_value(json_array_get(n->required, i));
        if (!field_value(n, x, name)) {
            sc_path_t field = {path, name, 0};
            vfail(c, report, &field, "required field missing");
            OBJECT_FAILED();
        }
    }
    if (n->strict_fields) {
        json_object_foreach((json_t *)x, key, val)
        {
            sc_path_t field = {path, key, 0};
            if (json_object_get(n->properties, key))
                continue;
            vfail(c, report, &field, "unknown field");
            OBJECT_FAILED();
        }
    }
    if (n->additional_props) {
        json_object_foreach((json_t *)x, key, val)
        {
            sc_path_t field = {path, key, 0};
            if (!is_additional(n, key))
                continue;
            if (n->additional_props->boolean == 0) {
                vfail(c, report, &field, "unexpected field");
                OBJECT_FAILED();
            } else if (!v_node(n->additional_props, val, &field, c, report, depth + 1)) {
                OBJECT_FAILED();
            }
        }
    }
    for (i = 0; i < n->nprops; i++) {
        sc_path_t field = {path, n->props[i].name, 0};
        val = json_object_get(x, n->props[i].name);
        if (val && !v_node(n->props[i].node, val, &field, c, report, depth + 1))
            OBJECT_FAILED();
    }
    for (k = 0; k < n->npprops; k++) {
        json_object_foreach((json_t *)x, key, val)
        {
            sc_path_t field = {path, key, 0};
            if (!regex_matches(&n->pprops[k].re, key))
                continue;
            if (!v_node(n->pprops[k].node, val, &field, c, report, depth + 1))
                OBJECT_FAILED();
        }
    }
    if (n->property_names) {
        const char *words = node_message(n->property_names);
        json_object_foreach((json_t *)x, key, val)
        {
            sc_path_t field = {path, key, 0};
            json_t *name = json_string(key);
            int good = name && v_node(n->property_names, name, &field, c, 0, depth + 1);
            json_decref(name);
            if (!good) {
                vfail(c, report, &field, "%s", words ? words : "field name not allowed");
                OBJECT_FAILED();
            }
        }
    }
    for (i = 0; i < n->ndeps; i++) {
        const sc_dep_t *d = &n->deps[i];
        if (!json_object_get(x, d->name))
            continue;
        if (d->node && !v_node(d->node, x, path, c, report, depth + 1))
            OBJECT_FAILED();
        for (k = 0; d->required && k < json_array_size(d->required); k++) {
            const char *name = json_string_value(json_array_get(d->required, k));
            if (!json_object_get(x, name)) {
                sc_path_t field = {path, name, 0};
                vfail(c, report, &field, "required field missing (as '%s' is present)", d->name);
                OBJECT_FAILED();
            }
        }
    }
    return ok;
}

static int v_combinators(const sc_node_t *n, const json_t *x, const sc_path_t *path, vctx_t *c,
                         int report, unsigned depth)
{
    size_t i, first = 0, matches = 0;
    int ok = 1;

    for (i = 0; i < n->all_of.n; i++) {
        if (!v_node(n->all_of.v[i], x, path, c, report, depth + 1)) {
            ok = 0;
            if (!KEEP_GOING(c, report))
                return 0;
        }
    }
    if (!ok)
        return 0;
    if (n->any_of.n) {
        for (i = 0; i < n->any_of.n; i++) {
            if (v_node(n->any_of.v[i], x, path, c, 0, depth + 1))
                break;
        }
        if (i == n->any_of.n)
            return vfail(c, report, path, "value matches none of the anyOf schemas");
    }
    if (n->one_of.n) {
        for (i = 0; i < n->one_of.n; i++) {
            if (!v_node(n->one_of.v[i], x, path, c, 0, depth + 1))
                continue;
            matches++;
            if (matches == 1) {
                first = i;
                continue;
            }
            return vfail(c, report, path, "value matches more than one oneOf schema (%zu and %zu)",
                         first, i);
        }
        if (matches == 0)
            return vfail(c, report, path, "value matches none of the oneOf schemas");
    }
    if (n->not_schema && v_node(n->not_schema, x, path, c, 0, depth + 1))
        return vfail(c, report, path, "value matches the 'not' schema");
    if (n->if_schema) {
        if (v_node(n->if_schema, x, path, c, 0, depth + 1)) {
            if (n->then_schema && !v_node(n->then_schema, x, path, c, report, depth + 1))
                return 0;
        } else if (n->else_schema && !v_node(n->else_schema, x, path, c, report, depth + 1)) {
            return 0;
        }
    }
    return 1;
}

/* Every keyword of a keyword schema (not $ref). */
static int v_keywords(const sc_node_t *n, const json_t *x, const sc_path_t *path, vctx_t *c,
                      int report, unsigned depth)
{
    char a[256];
    size_t i;
    int ok = 1;

    if (n->types && (!type_ok(n->types, x) ||
                     (n->openapi && json_is_real(x) && !(n->types & T_NUMBER)))) {
        types_str(n->types, a, sizeof(a));
        if (n->int_bits)
            return vfail(c, report, path, "expected %s (int%d), got %s", a, n->int_bits,
                         json_type_name(x));
        return vfail(c, report, path, "expected %s, got %s", a, json_type_name(x));
    }
    if (n->int_bits == 32 && json_is_integer(x) &&
        (json_integer_value(x) < INT32_MIN || json_integer_value(x) > INT32_MAX))
        return vfail(c, report, path, "number %" JSON_INTEGER_FORMAT " does not fit in int32",
                     json_integer_value(x));
    if (n->const_value && !json_eq(n->const_value, x)) {
        json_brief(n->const_value, a, sizeof(a));
        return vfail(c, report, path, "value must be %s", a);
    }
    if (n->enum_values) {
        for (i = 0; i < json_array_size(n->enum_values); i++) {
            if (json_eq(json_array_get(n->enum_values, i), x))
                break;
        }
        if (i == json_array_size(n->enum_values)) {
            json_brief(n->enum_values, a, sizeof(a));
            return vfail(c, report, path, "value must be one of %s", a);
        }
    }
    if (json_is_string(x) && !v_string(n, x, path, c, report))
        return 0;
    if (json_is_number(x) && !v_number(n, x, path, c, report))
        return 0;
    if (json_is_array(x) && !v_array(n, x, path, c, report, depth))
        ok = 0;
    if (json_is_object(x) && !v_object(n, x, path, c, report, depth))
        ok = 0;
    if (!ok && !KEEP_GOING(c, report))
        return 0;
    if (!v_combinators(n, x, path, c, report, depth))
        return 0;
    return ok;
}

static int v_node(const sc_node_t *n, const json_t *x, const sc_path_t *path, vctx_t *c, int report,
                  unsigned depth)
{
    if (depth > RF_SCHEMA_MAX_DEPTH)
        return vfail(c, report, path, "nested too deeply for validation (more than %d levels)",
                     RF_SCHEMA_MAX_DEPTH);
    if (n->boolean == 1)
        return 1;
    if (n->boolean == 0)
        return vfail(c, report, path, "no value is allowed here");
    if (n->openapi && json_is_null(x))
        return 1; /* Kubernetes decodes null as the field's zero value */
    if (n->ref_uri) {
        if (!n->ref)
            return vfail(c, report, path, "unresolved $ref '%s'", n->ref_uri);
        return v_node(n->ref, x, path, c, report, depth + 1);
    }
    if (n->message && report) {
        if (v_keywords(n, x, path, c, 0, depth))
            return 1;
        return vfail(c, report, path, "%s", n->message);
    }
    return v_keywords(n, x, path, c, report, depth);
}

static const sc_node_t *validate_target(const rf_schema_registry_t *reg, const char *name,
                                        const json_t *doc, char *errstr, size_t errstr_size,
                                        rf_err_t *err)
{
    sc_resource_t *r;
    char *key;

    *err = RF_OK;
    if (!name || !doc) {
        *err = rf_errf(RF_ERR_PERM, errstr, errstr_size, "schema name and document are required");
        return NULL;
    }
    key = uri_key(name);
    if (!key) {
        *err = rf_errf(RF_ERR_PERM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    r = reg_find(reg, key);
    free(key);
    if (!r || !r->node) {
        *err = rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size, "unknown schema '%.128s'", name);
        return NULL;
    }
    return r->node;
}

rf_err_t rf_schema_validate(const rf_schema_registry_t *reg, const char *name, const json_t *doc,
                            char *errstr, size_t errstr_size)
{
    vctx_t c = {errstr, errstr_size, NULL, 0};
    const sc_node_t *node;
    rf_err_t err;

    node = validate_target(reg, name, doc, errstr, errstr_size, &err);
    if (!node)
        return err;
    if (!v_node(node, doc, NULL, &c, 1, 0))
        return RF_ERR_PERM;
    return RF_OK;
}

rf_err_t rf_schema_validate_all(const rf_schema_registry_t *reg, const char *name,
                                const json_t *doc, json_t *errors, size_t max_errors,
                                char *errstr, size_t errstr_size)
{
    vctx_t c = {errstr, errstr_size, errors, max_errors ? max_errors : 1};
    const sc_node_t *node;
    size_t before = json_array_size(errors);
    rf_err_t err;

    if (!json_is_array(errors))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "errors must be a JSON array");
    node = validate_target(reg, name, doc, errstr, errstr_size, &err);
    if (!node)
        return err;
    c.max_errors += before;
    if (!v_node(node, doc, NULL, &c, 1, 0) || json_array_size(errors) > before)
        return RF_ERR_PERM;
    return RF_OK;
}
