/* Structural template rendering: YAML compiled once, placeholders substituted in scalars. */
#include "rf_render.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <yaml.h>

#include "rf_buf.h"
#include "rf_json.h"

/*
 * How it works. A text pre-pass turns every placeholder (`{{ name }}`, `__NAME__`) into a
 * sentinel, U+E000 name U+E001, made of characters that YAML reads as ordinary scalar
 * text in every context; without it, `replicas: {{ replicas }}` would parse as a flow
 * mapping. The pre-pass keeps every newline, so libyaml's line marks stay the template's
 * lines. The template may not contain U+E000 or U+E001 itself. libyaml's event stream
 * then builds a flat node table: scalars typed once, scalars with sentinels split into
 * literal and placeholder segments, collections pointing at their children, aliases at
 * their anchored node. Sizes (nodes built per render, aliases expanded) and heights are
 * computed bottom-up while parsing, so budgets fail before anything is expanded.
 * A render walks that table and builds jansson values; nothing is parsed again.
 */

#define MAX_VARS 256     /* distinct placeholder names in one template */
#define MAX_ANCHORS 1000 /* anchors in one document */
#define NO_VAR UINT32_MAX

/* Sentinel bytes: U+E000 and U+E001 in UTF-8. */
#define SENT_OPEN "\xee\x80\x80"
#define SENT_CLOSE "\xee\x80\x81"
#define SENT_LEN 3

enum node_kind {
    NODE_NULL,
    NODE_BOOL,
    NODE_INT,
    NODE_REAL,
    NODE_STR,   /* literal string: pool[first .. first+count) */
    NODE_TEXT,  /* string with placeholders: segs[first .. first+count) */
    NODE_SEQ,   /* items: kids[first .. first+count) */
    NODE_MAP,   /* pairs: kids[first .. first+2*count), key then value */
    NODE_ALIAS, /* the node anchored as nodes[first] */
    NODE_MERGE, /* the key `<<` of a mapping */
};

typedef struct node {
    unsigned char kind;
    unsigned char typed; /* NODE_TEXT: one whole placeholder, plain: keeps the value's type */
    unsigned char open;  /* collection whose end was not parsed yet */
    uint32_t line;       /* 1-based template line */
    uint32_t first;
    uint32_t count;
    uint32_t height; /* levels of nesting below and including this node, through aliases */
    uint64_t size;   /* nodes built when rendered, aliases expanded */
    json_int_t ival; /* NODE_INT; NODE_BOOL: 0 or 1 */
    double rval;     /* NODE_REAL */
} node_t;

typedef struct seg {
    uint32_t var; /* index into vars, or NO_VAR for literal text pool[off .. off+len) */
    uint32_t off;
    uint32_t len;
} seg_t;

typedef struct var {
    uint32_t name; /* offset of the NUL-terminated name in pool */
    uint32_t len;
    uint32_t line; /* first use */
} var_t;

typedef struct anchor {
    uint32_t name; /* offset in the compiler's anchor name pool */
    uint32_t len;
    uint32_t node;
} anchor_t;

typedef struct frame {
    uint32_t node;
    uint32_t kids_start; /* index into the compiler's pending kids */
} frame_t;

struct rf_render_template {
    char *id;
    rf_buf_t pool;  /* literal text, key and placeholder names (each NUL-terminated) */
    rf_buf_t nodes; /* node_t[] */
    rf_buf_t kids;  /* uint32_t[] */
    rf_buf_t segs;  /* seg_t[] */
    rf_buf_t vars;  /* var_t[] */
    rf_buf_t docs;  /* uint32_t[]: root node of each non-empty document */
    uint64_t total; /* nodes built per render */
};

typedef struct compiler {
    rf_render_template_t *t;
    const char *id;
    char *errstr;
    size_t errstr_size;
    rf_buf_t stack;   /* frame_t[] */
    rf_buf_t pending; /* uint32_t[]: children of open collections */
    rf_buf_t anchors; /* anchor_t[] of the current document */
    rf_buf_t anames;  /* anchor names */
    uint32_t root;    /* root of the current document, or NO_VAR */
    uint32_t doc_line;
} compiler_t;

typedef struct exec {
    const rf_render_template_t *t;
    const json_t *vals[MAX_VARS];
    rf_buf_t scratch;
    size_t out_bytes;
    char *errstr;
    size_t errstr_size;
} exec_t;

const char *const rf_render_standard_values[] = {
    "service",     "env",   "namespace", "version",    "image",    "replicas",
    "health_path", "group", "port",      "release_id", "operator", NULL,
};

#define NODES(t) ((node_t *)(t)->nodes.data)
#define KIDS(t) ((uint32_t *)(t)->kids.data)
#define SEGS(t) ((seg_t *)(t)->segs.data)
#define VARS(t) ((var_t *)(t)->vars.data)
#define DOCS(t) ((uint32_t *)(t)->docs.data)
#define POOL(t) ((t)->pool.data)
#define NNODES(t) ((t)->nodes.len / sizeof(node_t))
#define NVARS(t) ((t)->vars.len / sizeof(var_t))
#define NDOCS(t) ((t)->docs.len / sizeof(uint32_t))

int rf_render_is_standard_value(const char *name)
{
    size_t i;

    for (i = 0; rf_render_standard_values[i]; i++) {
        if (strcmp(rf_render_standard_values[i], name) == 0)
            return 1;
    }
    return 0;
}

/* ---- helpers shared by compile and exec ---- */

static void push(rf_buf_t *b, const void *item, size_t size)
{
    if (rf_buf_add(b, item, size) != 0)
        abort(); /* the caps are checked before, by count */
}

static void push_u32(rf_buf_t *b, uint32_t v)
{
    push(b, &v, sizeof v);
}

static uint32_t pool_add(rf_render_template_t *t, const char *s, size_t len)
{
    uint32_t off = (uint32_t)t->pool.len;

    push(&t->pool, s, len);
    push(&t->pool, "", 1);
    return off;
}

static uint32_t line_at(const char *text, size_t offset)
{
    uint32_t line = 1;
    size_t i;

    for (i = 0; i < offset; i++) {
        if (text[i] == '\n')
            line++;
    }
    return line;
}

static rf_err_t fail(compiler_t *c, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static rf_err_t fail(compiler_t *c, uint32_t line, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                   "cannot render template '%s' line %u: %s", c->id, line, what);
}

/* ---- pre-pass: placeholders to sentinels ---- */

static int is_name_start(char ch)
{
    return (ch >= 'a' && ch <= 'z') || ch == '_';
}

static int is_name_char(char ch)
{
    return is_name_start(ch) || (ch >= '0' && ch <= '9');
}

static int is_upper_alnum(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* `{{ name }}` at s[i]: returns its length and sets the name, or 0 when there is none. */
static size_t match_braces(const char *s, size_t len, size_t i, size_t *name, size_t *name_len)
{
    size_t j = i + 2;
    size_t start;

    while (j < len && s[j] == ' ')
        j++;
    if (j >= len || !is_name_start(s[j]))
        return 0;
    start = j;
    while (j < len && is_name_char(s[j]))
        j++;
    *name = start;
    *name_len = j - start;
    while (j < len && s[j] == ' ')
        j++;
    if (j + 1 >= len || s[j] != '}' || s[j + 1] != '}')
        return 0;
    return j + 2 - i;
}

/* `__NAME__` at s[i] (upper case, digits, single underscores inside): returns its length
 * and sets the name, or 0 when there is none. */
static size_t match_legacy(const char *s, size_t len, size_t i, size_t *name, size_t *name_len)
{
    size_t j = i + 2;
    size_t start = j;

    if (j >= len || !(s[j] >= 'A' && s[j] <= 'Z'))
        return 0;
    for (;;) {
        while (j < len && is_upper_alnum(s[j]))
            j++;
        if (j + 1 < len && s[j] == '_' && s[j + 1] == '_') {
            *name = start;
            *name_len = j - start;
            return j + 2 - i;
        }
        if (j + 1 < len && s[j] == '_' && is_upper_alnum(s[j + 1])) {
            j++;
            continue;
        }
        return 0;
    }
}

static rf_err_t prepass(compiler_t *c, const char *in, size_t len, rf_buf_t *out)
{
    size_t i = 0;
    size_t lit = 0;
    size_t m;
    size_t name = 0;
    size_t name_len = 0;
    size_t k;
    int legacy;

    while (i < len) {
        m = 0;
        legacy = 0;
        if (in[i] == '{' && i + 1 < len && in[i + 1] == '{') {
            m = match_braces(in, len, i, &name, &name_len);
        } else if (in[i] == '_' && i + 1 < len && in[i + 1] == '_') {
            m = match_legacy(in, len, i, &name, &name_len);
            legacy = 1;
        } else if ((unsigned char)in[i] == 0xee && i + 2 < len &&
                   (unsigned char)in[i + 1] == 0x80 &&
                   ((unsigned char)in[i + 2] == 0x80 || (unsigned char)in[i + 2] == 0x81)) {
            return fail(c, line_at(in, i), "reserved character U+E00%c in the template",
                        (unsigned char)in[i + 2] == 0x80 ? '0' : '1');
        }
        if (m == 0) {
            i++;
            continue;
        }
        if (name_len > RF_RENDER_MAX_NAME)
            return fail(c, line_at(in, i), "placeholder name '%.*s...' is longer than %d bytes", 16,
                        in + name, RF_RENDER_MAX_NAME);
        push(out, in + lit, i - lit);
        push(out, SENT_OPEN, SENT_LEN);
        for (k = 0; k < name_len; k++) {
            char ch = in[name + k];
            if (legacy && ch >= 'A' && ch <= 'Z')
                ch = (char)(ch - 'A' + 'a');
            push(out, &ch, 1);
        }
        push(out, SENT_CLOSE, SENT_LEN);
        i += m;
        lit = i;
    }
    push(out, in + lit, len - lit);
    return RF_OK;
}

/* ---- compile ---- */

static rf_err_t new_node(compiler_t *c, unsigned char kind, uint32_t line, uint32_t *idx)
{
    node_t n;

    if (NNODES(c->t) >= RF_RENDER_MAX_NODES)
        return fail(c, line, "template has more than %d nodes", RF_RENDER_MAX_NODES);
    memset(&n, 0, sizeof n);
    n.kind = kind;
    n.line = line;
    n.size = 1;
    n.height = 1;
    *idx = (uint32_t)NNODES(c->t);
    push(&c->t->nodes, &n, sizeof n);
    return RF_OK;
}

static frame_t *top_frame(compiler_t *c)
{
    if (c->stack.len == 0)
        return NULL;
    return (frame_t *)(c->stack.data + c->stack.len - sizeof(frame_t));
}

static uint32_t pending_count(const compiler_t *c)
{
    return (uint32_t)(c->pending.len / sizeof(uint32_t));
}

/* Nonzero when the next node is a key of the innermost open mapping. */
static int at_key(compiler_t *c)
{
    frame_t *f = top_frame(c);

    return f && NODES(c->t)[f->node].kind == NODE_MAP &&
           (pending_count(c) - f->kids_start) % 2 == 0;
}

static const node_t *deref(const rf_render_template_t *t, const node_t *n)
{
    if (n->kind == NODE_ALIAS)
        return &NODES(t)[n->first];
    return n;
}

/* The value of `<<` must be a mapping or a sequence of mappings (aliases allowed). */
static rf_err_t check_merge(compiler_t *c, uint32_t idx)
{
    const node_t *n = deref(c->t, &NODES(c->t)[idx]);
    const node_t *item;
    uint32_t i;

    if (n->kind == NODE_MAP)
        return RF_OK;
    if (n->kind == NODE_SEQ) {
        for (i = 0; i < n->count; i++) {
            item = deref(c->t, &NODES(c->t)[KIDS(c->t)[n->first + i]]);
            if (item->kind != NODE_MAP)
                return fail(c, NODES(c->t)[idx].line, "merge key '<<' takes mappings only");
        }
        return RF_OK;
    }
    return fail(c, NODES(c->t)[idx].line, "merge key '<<' takes a mapping or a list of mappings");
}

static rf_err_t add_child(compiler_t *c, uint32_t idx)
{
    frame_t *f = top_frame(c);
    uint32_t *pend;
    uint32_t n;
    rf_err_t result = RF_OK;

    if (!f) {
        c->root = idx;
        return RF_OK;
    }
    n = pending_count(c) - f->kids_start;
    if (NODES(c->t)[f->node].kind == NODE_MAP && n % 2 == 1) {
        pend = (uint32_t *)c->pending.data;
        if (NODES(c->t)[pend[pending_count(c) - 1]].kind == NODE_MERGE)
            result = check_merge(c, idx);
    }
    if (result == RF_OK)
        push_u32(&c->pending, idx);
    return result;
}

static rf_err_t add_anchor(compiler_t *c, const yaml_char_t *name, uint32_t idx, uint32_t line)
{
    anchor_t *a = (anchor_t *)c->anchors.data;
    size_t n = c->anchors.len / sizeof(anchor_t);
    size_t len = strlen((const char *)name);
    anchor_t na;
    size_t i;

    for (i = 0; i < n; i++) {
        if (a[i].len == len && memcmp(c->anames.data + a[i].name, name, len) == 0) {
            a[i].node = idx; /* YAML lets a later anchor of the same name win */
            return RF_OK;
        }
    }
    if (n >= MAX_ANCHORS)
        return fail(c, line, "more than %d anchors in one document", MAX_ANCHORS);
    na.name = (uint32_t)c->anames.len;
    na.len = (uint32_t)len;
    na.node = idx;
    push(&c->anames, name, len);
    push(&c->anchors, &na, sizeof na);
    return RF_OK;
}

static rf_err_t on_alias(compiler_t *c, const yaml_event_t *ev)
{
    const anchor_t *a = (const anchor_t *)c->anchors.data;
    size_t n = c->anchors.len / sizeof(anchor_t);
    const char *name = (const char *)ev->data.alias.anchor;
    size_t len = strlen(name);
    uint32_t line = (uint32_t)ev->start_mark.line + 1;
    const node_t *target;
    node_t *node;
    uint32_t idx;
    rf_err_t err;
    size_t i;

    if (at_key(c))
        return fail(c, line, "alias '*%s' used as a mapping key", name);
    for (i = 0; i < n; i++) {
        if (a[i].len == len && memcmp(c->anames.data + a[i].name, name, len) == 0)
            break;
    }
    if (i == n)
        return fail(c, line, "unknown alias '*%s'", name);
    target = &NODES(c->t)[a[i].node];
    if (target->open)
        return fail(c, line, "alias '*%s' refers to a node that contains it", name);
    err = new_node(c, NODE_ALIAS, line, &idx);
    if (err != RF_OK)
        return err;
    target = &NODES(c->t)[a[i].node];
    node = &NODES(c->t)[idx];
    node->first = a[i].node;
    node->size = target->size;
    node->height = target->height;
    return add_child(c, idx);
}

static int is_digits(const char *s, size_t n, int base)
{
    size_t i;
    char ch;

    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        ch = s[i];
        if (base == 2 && (ch == '0' || ch == '1'))
            continue;
        if (base == 8 && ch >= '0' && ch <= '7')
            continue;
        if (base == 10 && ch >= '0' && ch <= '9')
            continue;
        if (base == 16 &&
            ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            continue;
        return 0;
    }
    return 1;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int is_float(const char *s)
{
    size_t i = 0;
    size_t d = 0;

    if (s[i] == '-' || s[i] == '+')
        i++;
    while (s[i] >= '0' && s[i] <= '9') {
        i++;
        d++;
    }
    if (s[i] == '.') {
        i++;
        while (s[i] >= '0' && s[i] <= '9') {
            i++;
            d++;
        }
    }
    if (d == 0)
        return 0;
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '-' || s[i] == '+')
            i++;
        if (!(s[i] >= '0' && s[i] <= '9'))
            return 0;
        while (s[i] >= '0' && s[i] <= '9')
            i++;
    }
    return s[i] == '\0';
}

/* Integers as go-yaml v2 reads them: `_` dropped, then Go's ParseInt with base 0. Returns
 * 1 and the value, 0 when s is not an integer, -1 when it is one beyond 64 bits. */
static int parse_int(const char *s, json_int_t *out)
{
    const char *p = s;
    int neg = 0;
    int base = 10;
    unsigned long long v;
    char *end;

    if (*p == '-' || *p == '+') {
        neg = *p == '-';
        p++;
    }
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    } else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O')) {
        base = 8;
        p += 2;
    } else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B')) {
        base = 2;
        p += 2;
    } else if (p[0] == '0' && p[1] != '\0') {
        base = 8;
        p += 1;
    }
    if (!is_digits(p, strlen(p), base))
        return 0;
    errno = 0;
    v = strtoull(p, &end, base);
    if (errno == ERANGE || v > (unsigned long long)INT64_MAX + (neg ? 1u : 0u))
        return -1;
    if (neg)
        *out = v == (unsigned long long)INT64_MAX + 1u ? INT64_MIN : -(json_int_t)v;
    else
        *out = (json_int_t)v;
    return 1;
}

static const char *const non_finite[] = {
    ".inf",  ".Inf",  ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
    "-.Inf", "-.INF", ".nan", ".NaN",  ".NAN",  NULL,
};

/* Types a plain scalar without placeholders into node n (see rf_render.h). */
static rf_err_t resolve_plain(compiler_t *c, const char *s, size_t len, uint32_t idx)
{
    node_t *n = &NODES(c->t)[idx];
    char num[128];
    size_t i;
    size_t j = 0;
    int r;

    n->kind = NODE_STR;
    if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
        strcmp(s, "NULL") == 0) {
        n->kind = NODE_NULL;
        return RF_OK;
    }
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        n->kind = NODE_BOOL;
        n->ival = 1;
        return RF_OK;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        n->kind = NODE_BOOL;
        n->ival = 0;
        return RF_OK;
    }
    for (i = 0; non_finite[i]; i++) {
        if (strcmp(s, non_finite[i]) == 0)
            return fail(c, n->line, "'%s' is not a number JSON can hold", s);
    }
    if (!((s[0] >= '0' && s[0] <= '9') || s[0] == '-' || s[0] == '+' || s[0] == '.') ||
        len >= sizeof num)
        return RF_OK;
    for (i = 0; i < len; i++) {
        if (s[i] != '_')
            num[j++] = s[i];
    }
    num[j] = '\0';
    if (s[0] == '.') {
        /* go-yaml reads a leading dot as a float as it is, without dropping `_` */
        if (is_float(s)) {
            n->rval = strtod(s, NULL);
            if (!isfinite(n->rval))
                return fail(c, n->line, "'%s' is not a number JSON can hold", s);
            n->kind = NODE_REAL;
        }
        return RF_OK;
    }
    r = parse_int(num, &n->ival);
    if (r == 1) {
        n->kind = NODE_INT;
        return RF_OK;
    }
    if (r == -1)
        return fail(c, n->line, "integer '%s' does not fit in 64 bits", s);
    if (is_float(num)) {
        n->rval = strtod(num, NULL);
        if (!isfinite(n->rval))
            return fail(c, n->line, "'%s' is not a number JSON can hold", s);
        n->kind = NODE_REAL;
    }
    return RF_OK;
}

static uint32_t intern_var(compiler_t *c, const char *name, size_t len, uint32_t line,
                           rf_err_t *err)
{
    var_t *v = VARS(c->t);
    size_t n = NVARS(c->t);
    var_t nv;
    size_t i;

    *err = RF_OK;
    for (i = 0; i < n; i++) {
        if (v[i].len == len && memcmp(POOL(c->t) + v[i].name, name, len) == 0)
            return (uint32_t)i;
    }
    if (n >= MAX_VARS) {
        *err = fail(c, line, "more than %d distinct placeholders", MAX_VARS);
        return NO_VAR;
    }
    nv.name = pool_add(c->t, name, len);
    nv.len = (uint32_t)len;
    nv.line = line;
    push(&c->t->vars, &nv, sizeof nv);
    return (uint32_t)n;
}

static void add_seg(compiler_t *c, uint32_t var, const char *text, size_t len)
{
    seg_t s;

    s.var = var;
    s.off = var == NO_VAR ? pool_add(c->t, text, len) : 0;
    s.len = (uint32_t)len;
    push(&c->t->segs, &s, sizeof s);
}

/* Splits a scalar with sentinels into segments; returns their count (0 when none). */
static rf_err_t split_scalar(compiler_t *c, const char *s, size_t len, uint32_t line,
                             uint32_t *nsegs)
{
    size_t i = 0;
    size_t lit = 0;
    size_t j;
    uint32_t var;
    rf_err_t err;

    *nsegs = 0;
    while (i + SENT_LEN <= len) {
        if ((unsigned char)s[i] != 0xee || (unsigned char)s[i + 1] != 0x80 ||
            ((unsigned char)s[i + 2] != 0x80 && (unsigned char)s[i + 2] != 0x81)) {
            i++;
            continue;
        }
        if (s[i + 2] == SENT_CLOSE[2])
            return fail(c, line, "reserved character U+E001 in a scalar");
        j = i + SENT_LEN;
        while (j < len && is_name_char(s[j]))
            j++;
        if (j == i + SENT_LEN || j + SENT_LEN > len || memcmp(s + j, SENT_CLOSE, SENT_LEN) != 0 ||
            j - i - SENT_LEN > RF_RENDER_MAX_NAME)
            return fail(c, line, "reserved character U+E000 in a scalar");
        if (i > lit) {
            add_seg(c, NO_VAR, s + lit, i - lit);
            (*nsegs)++;
        }
        var = intern_var(c, s + i + SENT_LEN, j - i - SENT_LEN, line, &err);
        if (err != RF_OK)
            return err;
        add_seg(c, var, NULL, j - i - SENT_LEN);
        (*nsegs)++;
        i = j + SENT_LEN;
        lit = i;
    }
    if (*nsegs > 0 && len > lit) {
        add_seg(c, NO_VAR, s + lit, len - lit);
        (*nsegs)++;
    }
    return RF_OK;
}

static rf_err_t on_scalar(compiler_t *c, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    uint32_t line = (uint32_t)ev->start_mark.line + 1;
    int plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    int key = at_key(c);
    uint32_t first = (uint32_t)(c->t->segs.len / sizeof(seg_t));
    uint32_t nsegs;
    uint32_t idx;
    node_t *n;
    rf_err_t err;

    if (tag && strcmp(tag, YAML_STR_TAG) != 0 && strcmp(tag, "!") != 0)
        return fail(c, line, "unsupported tag '%s'", tag);
    if (tag)
        plain = 0;
    if (memchr(s, '\0', len))
        return fail(c, line, "NUL character in a scalar");
    err = new_node(c, NODE_STR, line, &idx);
    if (err != RF_OK)
        return err;
    err = split_scalar(c, s, len, line, &nsegs);
    if (err != RF_OK)
        return err;
    n = &NODES(c->t)[idx];
    if (nsegs > 0) {
        n->kind = NODE_TEXT;
        n->first = first;
        n->count = nsegs;
        n->typed = plain && !key && nsegs == 1;
    } else if (key && plain && strcmp(s, "<<") == 0) {
        n->kind = NODE_MERGE;
    } else {
        if (plain) {
            err = resolve_plain(c, s, len, idx);
            if (err != RF_OK)
                return err;
            n = &NODES(c->t)[idx];
        }
        if (key && n->kind != NODE_STR)
            return fail(c, line, "mapping key '%s' is not a string; quote it", s);
        if (n->kind == NODE_STR) {
            n->first = pool_add(c->t, s, len);
            n->count = (uint32_t)len;
        }
    }
    if (ev->data.scalar.anchor) {
        err = add_anchor(c, ev->data.scalar.anchor, idx, line);
        if (err != RF_OK)
            return err;
    }
    return add_child(c, idx);
}

static rf_err_t on_start(compiler_t *c, const yaml_event_t *ev, unsigned char kind)
{
    const char *tag;
    const yaml_char_t *anchor;
    uint32_t line = (uint32_t)ev->start_mark.line + 1;
    frame_t f;
    uint32_t idx;
    rf_err_t err;

    if (kind == NODE_MAP) {
        tag = (const char *)ev->data.mapping_start.tag;
        anchor = ev->data.mapping_start.anchor;
    } else {
        tag = (const char *)ev->data.sequence_start.tag;
        anchor = ev->data.sequence_start.anchor;
    }
    if (tag && strcmp(tag, kind == NODE_MAP ? YAML_MAP_TAG : YAML_SEQ_TAG) != 0)
        return fail(c, line, "unsupported tag '%s'", tag);
    if (at_key(c))
        return fail(c, line, "mapping key is not a string");
    if (c->stack.len / sizeof(frame_t) >= RF_RENDER_MAX_DEPTH)
        return fail(c, line, "nesting deeper than %d levels", RF_RENDER_MAX_DEPTH);
    err = new_node(c, kind, line, &idx);
    if (err != RF_OK)
        return err;
    NODES(c->t)[idx].open = 1;
    if (anchor) {
        err = add_anchor(c, anchor, idx, line);
        if (err != RF_OK)
            return err;
    }
    f.node = idx;
    f.kids_start = pending_count(c);
    push(&c->stack, &f, sizeof f);
    return RF_OK;
}

static rf_err_t on_end(compiler_t *c)
{
    frame_t f = *top_frame(c);
    uint32_t n = pending_count(c) - f.kids_start;
    /* pending.data is NULL while nothing was ever pending: no offset on it then (UB). */
    const uint32_t *pend = n ? (const uint32_t *)c->pending.data + f.kids_start : NULL;
    uint32_t first = (uint32_t)(c->t->kids.len / sizeof(uint32_t));
    uint64_t size = 1;
    uint32_t height = 0;
    node_t *node;
    const node_t *kid;
    uint32_t i;

    c->stack.len -= sizeof(frame_t);
    for (i = 0; i < n; i++) {
        kid = &NODES(c->t)[pend[i]];
        size += kid->size;
        if (kid->height > height)
            height = kid->height;
        push_u32(&c->t->kids, pend[i]);
    }
    c->pending.len -= (size_t)n * sizeof(uint32_t);
    node = &NODES(c->t)[f.node];
    node->open = 0;
    node->first = first;
    node->count = node->kind == NODE_MAP ? n / 2 : n;
    node->size = size;
    node->height = height + 1;
    if (size > RF_RENDER_MAX_NODES)
        return fail(c, node->line, "aliases expand to more than %d nodes", RF_RENDER_MAX_NODES);
    if (node->height > RF_RENDER_MAX_DEPTH)
        return fail(c, node->line, "nesting deeper than %d levels (aliases expanded)",
                    RF_RENDER_MAX_DEPTH);
    return add_child(c, f.node);
}

static rf_err_t on_document_end(compiler_t *c)
{
    const node_t *root;

    if (c->root == NO_VAR)
        return RF_OK;
    root = &NODES(c->t)[c->root];
    if (root->kind == NODE_NULL)
        return RF_OK; /* an empty document */
    if (root->kind != NODE_MAP)
        return fail(c, root->line, "document is not a mapping");
    c->t->total += root->size;
    if (c->t->total > RF_RENDER_MAX_NODES)
        return fail(c, root->line, "aliases expand to more than %d nodes", RF_RENDER_MAX_NODES);
    push_u32(&c->t->docs, c->root);
    return RF_OK;
}

static rf_err_t parse_error(compiler_t *c, const yaml_parser_t *p, const rf_buf_t *text)
{
    uint32_t line;

    if (p->error == YAML_MEMORY_ERROR)
        abort();
    if (p->error == YAML_READER_ERROR)
        line = line_at(text->data, p->problem_offset < text->len ? p->problem_offset : text->len);
    else
        line = (uint32_t)p->problem_mark.line + 1;
    if (p->context)
        return fail(c, line, "invalid yaml: %s %s", p->problem ? p->problem : "error", p->context);
    return fail(c, line, "invalid yaml: %s", p->problem ? p->problem : "error");
}

static rf_err_t compile_events(compiler_t *c, rf_buf_t *text)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    int done = 0;
    rf_err_t result = RF_OK;

    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text->data, text->len);
    while (!done && result == RF_OK) {
        if (!yaml_parser_parse(&parser, &ev)) {
            result = parse_error(c, &parser, text);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            c->anchors.len = 0;
            c->anames.len = 0;
            c->root = NO_VAR;
            break;
        case YAML_DOCUMENT_END_EVENT:
            result = on_document_end(c);
            break;
        case YAML_ALIAS_EVENT:
            result = on_alias(c, &ev);
            break;
        case YAML_SCALAR_EVENT:
            result = on_scalar(c, &ev);
            break;
        case YAML_SEQUENCE_START_EVENT:
            result = on_start(c, &ev, NODE_SEQ);
            break;
        case YAML_MAPPING_START_EVENT:
            result = on_start(c, &ev, NODE_MAP);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            result = on_end(c);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return result;
}

rf_render_template_t *rf_render_compile(const char *template_id, const char *body, size_t len,
                                        char *errstr, size_t errstr_size)
{
    compiler_t c;
    rf_buf_t text;
    rf_render_template_t *t = NULL;
    rf_err_t err;

    memset(&c, 0, sizeof c);
    rf_buf_init(&text, 0);
    c.id = template_id ? template_id : "";
    c.errstr = errstr;
    c.errstr_size = errstr_size;
    c.root = NO_VAR;
    if (!body)
        len = 0;
    if (len > RF_RENDER_MAX_BYTES) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "cannot render template '%s': template is larger than %d bytes", c.id,
                RF_RENDER_MAX_BYTES);
        goto cleanup;
    }
    t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->id = strdup(c.id);
    if (!t->id)
        abort();
    rf_buf_init(&t->pool, 0);
    rf_buf_init(&t->nodes, 0);
    rf_buf_init(&t->kids, 0);
    rf_buf_init(&t->segs, 0);
    rf_buf_init(&t->vars, 0);
    rf_buf_init(&t->docs, 0);
    c.t = t;
    rf_buf_init(&c.stack, 0);
    rf_buf_init(&c.pending, 0);
    rf_buf_init(&c.anchors, 0);
    rf_buf_init(&c.anames, 0);
    push(&t->pool, "", 1); /* offset 0 is the empty string */
    err = prepass(&c, body ? body : "", len, &text);
    if (err == RF_OK)
        err = compile_events(&c, &text);
    if (err != RF_OK) {
        rf_render_template_destroy(t);
        t = NULL;
    }

cleanup:
    rf_buf_release(&text);
    rf_buf_release(&c.stack);
    rf_buf_release(&c.pending);
    rf_buf_release(&c.anchors);
    rf_buf_release(&c.anames);
    return t;
}

void rf_render_template_destroy(rf_render_template_t *tpl)
{
    if (!tpl)
        return;
    free(tpl->id);
    rf_buf_release(&tpl->pool);
    rf_buf_release(&tpl->nodes);
    rf_buf_release(&tpl->kids);
    rf_buf_release(&tpl->segs);
    rf_buf_release(&tpl->vars);
    rf_buf_release(&tpl->docs);
    free(tpl);
}

size_t rf_render_template_nodes(const rf_render_template_t *tpl)
{
    return (size_t)tpl->total;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *rf_render_template_placeholders(const rf_render_template_t *tpl)
{
    size_t n = NVARS(tpl);
    const char *names[MAX_VARS];
    json_t *arr = json_array();
    size_t i;

    if (!arr)
        abort();
    for (i = 0; i < n; i++)
        names[i] = POOL(tpl) + VARS(tpl)[i].name;
    qsort(names, n, sizeof names[0], cmp_names);
    for (i = 0; i < n; i++)
        json_array_append_new(arr, json_string(names[i]));
    return arr;
}

/* ---- exec ---- */

static rf_err_t xfail(exec_t *x, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static rf_err_t xfail(exec_t *x, uint32_t line, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return rf_errf(RF_ERR_PERM, x->errstr, x->errstr_size,
                   "cannot render template '%s' line %u: %s", x->t->id, line, what);
}

static rf_err_t bind_values(exec_t *x, const json_t *values)
{
    const var_t *v = VARS(x->t);
    size_t n = NVARS(x->t);
    const char *name;
    const json_t *val;
    size_t i;

    if (!json_is_object(values))
        return rf_errf(RF_ERR_PERM, x->errstr, x->errstr_size,
                       "cannot render template '%s': values are not a JSON object", x->t->id);
    for (i = 0; i < n; i++) {
        name = POOL(x->t) + v[i].name;
        val = json_object_get(values, name);
        if (!val && rf_render_is_standard_value(name))
            return xfail(x, v[i].line, "missing value for placeholder '%s'", name);
        if (!val)
            return xfail(x, v[i].line, "unknown placeholder '%s'", name);
        if (json_is_null(val))
            return xfail(x, v[i].line, "missing value for placeholder '%s' (null)", name);
        if (json_is_object(val) || json_is_array(val))
            return xfail(x, v[i].line,
                         "value of placeholder '%s' is %s, not a string, number or boolean", name,
                         json_is_object(val) ? "an object" : "an array");
        if (json_is_string(val) && memchr(json_string_value(val), '\0', json_string_length(val)))
            return xfail(x, v[i].line, "value of placeholder '%s' contains a NUL character", name);
        x->vals[i] = val;
    }
    return RF_OK;
}

/* Shortest text that reads back as the same double. */
static void format_real(double d, char *out, size_t size)
{
    int p;

    for (p = 1; p <= 17; p++) {
        snprintf(out, size, "%.*g", p, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

static rf_err_t append_value(exec_t *x, const json_t *v, uint32_t line)
{
    char num[64];
    const char *s = num;
    size_t len;

    if (json_is_string(v)) {
        s = json_string_value(v);
        len = json_string_length(v);
    } else {
        if (json_is_integer(v))
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_real(v))
            format_real(json_real_value(v), num, sizeof num);
        else
            snprintf(num, sizeof num, "%s", json_is_true(v) ? "true" : "false");
        len = strlen(num);
    }
    if (rf_buf_add(&x->scratch, s, len) != 0)
        return xfail(x, line, "rendered output is larger than %d bytes", RF_RENDER_MAX_OUTPUT);
    return RF_OK;
}

/* Renders the segments of a NODE_TEXT into x->scratch. */
static rf_err_t expand_text(exec_t *x, const node_t *n)
{
    const seg_t *s = SEGS(x->t) + n->first;
    uint32_t i;
    rf_err_t err;

    rf_buf_reset(&x->scratch);
    for (i = 0; i < n->count; i++) {
        if (s[i].var == NO_VAR) {
            if (rf_buf_add(&x->scratch, POOL(x->t) + s[i].off, s[i].len) != 0)
                return xfail(x, n->line, "rendered output is larger than %d bytes",
                             RF_RENDER_MAX_OUTPUT);
        } else {
            err = append_value(x, x->vals[s[i].var], n->line);
            if (err != RF_OK)
                return err;
        }
    }
    x->out_bytes += x->scratch.len;
    if (x->out_bytes > RF_RENDER_MAX_OUTPUT)
        return xfail(x, n->line, "rendered output is larger than %d bytes", RF_RENDER_MAX_OUTPUT);
    if (x->scratch.len == 0)
        rf_buf_add(&x->scratch, "", 0); /* make data non-NULL */
    return RF_OK;
}

static json_t *typed_value(const json_t *v)
{
    if (json_is_string(v))
        return json_stringn_nocheck(json_string_value(v), json_string_length(v));
    if (json_is_integer(v))
        return json_integer(json_integer_value(v));
    if (json_is_real(v))
        return json_real(json_real_value(v));
    return json_boolean(json_is_true(v));
}

static rf_err_t exec_node(exec_t *x, uint32_t idx, json_t **out);

static rf_err_t exec_map_into(exec_t *x, const node_t *n, json_t *obj, int merging);

/* Merges the mapping (or sequence of mappings) at idx into obj: existing keys win. */
static rf_err_t exec_merge(exec_t *x, uint32_t idx, json_t *obj)
{
    const node_t *n = deref(x->t, &NODES(x->t)[idx]);
    uint32_t i;
    rf_err_t err;

    if (n->kind == NODE_MAP)
        return exec_map_into(x, n, obj, 1);
    for (i = 0; i < n->count; i++) {
        err = exec_map_into(x, deref(x->t, &NODES(x->t)[KIDS(x->t)[n->first + i]]), obj, 1);
        if (err != RF_OK)
            return err;
    }
    return RF_OK;
}

static rf_err_t exec_map_into(exec_t *x, const node_t *n, json_t *obj, int merging)
{
    /* kids.data is NULL in a template without any mapping entry: no offset on it then. */
    const uint32_t *kids = n->count ? KIDS(x->t) + n->first : NULL;
    const node_t *key;
    const char *k;
    size_t klen;
    char *owned = NULL;
    json_t *val = NULL;
    size_t before;
    uint32_t i;
    rf_err_t result = RF_OK;

    for (i = 0; i < n->count && result == RF_OK; i++) {
        key = &NODES(x->t)[kids[2 * i]];
        if (key->kind == NODE_MERGE)
            continue;
        if (key->kind == NODE_TEXT) {
            result = expand_text(x, key);
            if (result != RF_OK)
                break;
            owned = rf_buf_detach(&x->scratch);
            k = owned;
            klen = strlen(owned);
        } else {
            k = POOL(x->t) + key->first;
            klen = key->count;
        }
        if (merging && json_object_getn(obj, k, klen)) {
            free(owned);
            owned = NULL;
            continue;
        }
        result = exec_node(x, kids[2 * i + 1], &val);
        if (result == RF_OK) {
            before = json_object_size(obj);
            if (json_object_setn_new_nocheck(obj, k, klen, val) != 0)
                abort(); /* out of memory */
            val = NULL;
            if (json_object_size(obj) == before)
                result = xfail(x, key->line, "duplicate key '%.*s'", (int)klen, k);
        }
        free(owned);
        owned = NULL;
    }
    for (i = 0; i < n->count && result == RF_OK; i++) {
        if (NODES(x->t)[kids[2 * i]].kind == NODE_MERGE)
            result = exec_merge(x, kids[2 * i + 1], obj);
    }
    return result;
}

static rf_err_t exec_node(exec_t *x, uint32_t idx, json_t **out)
{
    const node_t *n = deref(x->t, &NODES(x->t)[idx]);
    json_t *v = NULL;
    json_t *item = NULL;
    uint32_t i;
    rf_err_t result = RF_OK;

    switch (n->kind) {
    case NODE_NULL:
        v = json_null();
        break;
    case NODE_BOOL:
        v = json_boolean(n->ival);
        break;
    case NODE_INT:
        v = json_integer(n->ival);
        break;
    case NODE_REAL:
        v = json_real(n->rval);
        break;
    case NODE_STR:
        v = json_stringn_nocheck(POOL(x->t) + n->first, n->count);
        break;
    case NODE_TEXT:
        if (n->typed) {
            v = typed_value(x->vals[SEGS(x->t)[n->first].var]);
            break;
        }
        result = expand_text(x, n);
        if (result == RF_OK)
            v = json_stringn_nocheck(x->scratch.data, x->scratch.len);
        break;
    case NODE_SEQ:
        v = json_array();
        for (i = 0; i < n->count && result == RF_OK; i++) {
            result = exec_node(x, KIDS(x->t)[n->first + i], &item);
            if (result == RF_OK && json_array_append_new(v, item) != 0)
                abort();
        }
        break;
    case NODE_MAP:
        v = json_object();
        if (v)
            result = exec_map_into(x, n, v, 0);
        break;
    case NODE_MERGE: /* an anchored `<<` key used as a value through its alias */
        v = json_string("<<");
        break;
    default: /* NODE_ALIAS is dereferenced above */
        return xfail(x, n->line, "internal error: node kind %d", n->kind);
    }
    if (!v)
        abort(); /* jansson returns NULL only when out of memory here */
    if (result != RF_OK) {
        json_decref(v);
        return result;
    }
    *out = v;
    return RF_OK;
}

static int nonempty_string(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0;
}

static rf_err_t check_document(exec_t *x, const node_t *root, const json_t *doc)
{
    const json_t *meta = json_object_get(doc, "metadata");

    if (!nonempty_string(json_object_get(doc, "apiVersion")))
        return xfail(x, root->line, "document has no apiVersion (a non-empty string)");
    if (!nonempty_string(json_object_get(doc, "kind")))
        return xfail(x, root->line, "document has no kind (a non-empty string)");
    if (!json_is_object(meta) || !nonempty_string(json_object_get(meta, "name")))
        return xfail(x, root->line, "document has no metadata.name (a non-empty string)");
    return RF_OK;
}

rf_err_t rf_render_exec(const rf_render_template_t *tpl, const json_t *values,
                        json_t **manifests_out, char *errstr, size_t errstr_size)
{
    exec_t x;
    json_t *docs = NULL;
    json_t *doc = NULL;
    size_t i;
    rf_err_t result;

    *manifests_out = NULL;
    x.t = tpl;
    x.out_bytes = 0;
    x.errstr = errstr;
    x.errstr_size = errstr_size;
    rf_buf_init(&x.scratch, RF_RENDER_MAX_OUTPUT);
    result = bind_values(&x, values);
    if (result != RF_OK)
        goto cleanup;
    docs = json_array();
    if (!docs)
        abort();
    for (i = 0; i < NDOCS(tpl); i++) {
        result = exec_node(&x, DOCS(tpl)[i], &doc);
        if (result != RF_OK)
            goto cleanup;
        result = check_document(&x, &NODES(tpl)[DOCS(tpl)[i]], doc);
        if (result != RF_OK) {
            json_decref(doc);
            goto cleanup;
        }
        if (json_array_append_new(docs, doc) != 0)
            abort(); /* out of memory */
        doc = NULL;
    }
    *manifests_out = docs;
    docs = NULL;

cleanup:
    json_decref(docs);
    rf_buf_release(&x.scratch);
    return result;
}

/* ---- lines: from a rendered value back to the template ---- */

/* The entry of mapping n whose key renders as key: explicit keys first, then the merged
 * mappings in order, as exec_map_into builds the object. */
static int line_map_find(exec_t *x, int bound, const node_t *n, const char *key, size_t klen,
                         uint32_t *key_idx, uint32_t *val_idx)
{
    const uint32_t *kids = n->count ? KIDS(x->t) + n->first : NULL;
    const node_t *k, *v, *item;
    uint32_t i, j;

    for (i = 0; i < n->count; i++) {
        k = &NODES(x->t)[kids[2 * i]];
        if (k->kind == NODE_MERGE)
            continue;
        if (k->kind == NODE_TEXT) {
            if (!bound || expand_text(x, k) != RF_OK || x->scratch.len != klen ||
                memcmp(x->scratch.data, key, klen) != 0)
                continue;
        } else if (k->kind != NODE_STR || k->count != klen ||
                   memcmp(POOL(x->t) + k->first, key, klen) != 0) {
            continue;
        }
        *key_idx = kids[2 * i];
        *val_idx = kids[2 * i + 1];
        return 1;
    }
    for (i = 0; i < n->count; i++) {
        if (NODES(x->t)[kids[2 * i]].kind != NODE_MERGE)
            continue;
        v = deref(x->t, &NODES(x->t)[kids[2 * i + 1]]);
        if (v->kind == NODE_MAP && line_map_find(x, bound, v, key, klen, key_idx, val_idx))
            return 1;
        for (j = 0; v->kind == NODE_SEQ && j < v->count; j++) {
            item = deref(x->t, &NODES(x->t)[KIDS(x->t)[v->first + j]]);
            if (item->kind == NODE_MAP && line_map_find(x, bound, item, key, klen, key_idx, val_idx))
                return 1;
        }
    }
    return 0;
}

uint32_t rf_render_line(const rf_render_template_t *tpl, const json_t *values, size_t doc,
                        const json_t *path)
{
    char errstr[256];
    exec_t x;
    const node_t *n;
    const json_t *seg;
    uint32_t idx, key_idx, val_idx, line;
    size_t i;
    int bound;

    if (doc >= NDOCS(tpl))
        return 0;
    memset(&x, 0, sizeof x);
    x.t = tpl;
    x.errstr = errstr;
    x.errstr_size = sizeof errstr;
    rf_buf_init(&x.scratch, RF_RENDER_MAX_OUTPUT);
    bound = bind_values(&x, values) == RF_OK;
    idx = DOCS(tpl)[doc];
    line = NODES(tpl)[idx].line;
    json_array_foreach(path, i, seg) {
        n = deref(tpl, &NODES(tpl)[idx]);
        if (json_is_string(seg) && n->kind == NODE_MAP &&
            line_map_find(&x, bound, n, json_string_value(seg), json_string_length(seg),
                          &key_idx, &val_idx)) {
            line = NODES(tpl)[key_idx].line;
            idx = val_idx;
        } else if (json_is_integer(seg) && n->kind == NODE_SEQ && json_integer_value(seg) >= 0 &&
                   (json_int_t)n->count > json_integer_value(seg)) {
            idx = KIDS(tpl)[n->first + (uint32_t)json_integer_value(seg)];
            line = NODES(tpl)[idx].line;
        } else {
            break;
        }
    }
    rf_buf_release(&x.scratch);
    return line;
}

rf_err_t rf_render(const char *template_id, const char *body, size_t len, const json_t *values,
                   json_t **manifests_out, char *errstr, size_t errstr_size)
{
    rf_render_template_t *tpl;
    rf_err_t result;

    *manifests_out = NULL;
    tpl = rf_render_compile(template_id, body, len, errstr, errstr_size);
    if (!tpl)
        return RF_ERR_PERM;
    result = rf_render_exec(tpl, values, manifests_out, errstr, errstr_size);
    rf_render_template_destroy(tpl);
    return result;
}

rf_err_t rf_render_placeholders(const char *template_id, const char *body, size_t len,
                                json_t **names_out, char *errstr, size_t errstr_size)
{
    rf_render_template_t *tpl;

    *names_out = NULL;
    tpl = rf_render_compile(template_id, body, len, errstr, errstr_size);
    if (!tpl)
        return RF_ERR_PERM;
    *names_out = rf_render_template_placeholders(tpl);
    rf_render_template_destroy(tpl);
    return RF_OK;
}

rf_err_t rf_render_canonical(const json_t *manifests, char **text_out, char out_hex[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char *canon = NULL;
    unsigned int i;
    rf_err_t result = RF_OK;

    *text_out = NULL;
    out_hex[0] = '\0';
    if (!manifests)
        return RF_ERR_PERM;
    /* json_dumps(manifests, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY), the same bytes */
    canon = rf_json_dumps(manifests, RF_JSON_SORT_KEYS);
    if (!canon) {
        result = RF_ERR_PERM;
        goto cleanup;
    }
    if (!EVP_Digest(canon, strlen(canon), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        result = RF_ERR_RETRY;
        goto cleanup;
    }
    for (i = 0; i < mdlen; i++) {
        out_hex[2 * i] = hex[md[i] >> 4];
        out_hex[2 * i + 1] = hex[md[i] & 0xf];
    }
    out_hex[64] = '\0';
    *text_out = canon;
    canon = NULL;

cleanup:
    free(canon);
    return result;
}

rf_err_t rf_render_digest(const json_t *manifests, char out_hex[65])
{
    char *canon = NULL;
    rf_err_t result;

    result = rf_render_canonical(manifests, &canon, out_hex);
    free(canon);
    return result;
}
