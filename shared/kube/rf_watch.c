/* Parser of the Kubernetes watch stream: bytes in any split in, one event at a time out. */
#include "rf_watch.h"

#include <stdlib.h>
#include <string.h>

#include "rf_buf.h"
#include "rf_err.h"
#include "rf_json.h"
#include "rf_jtext.h"

#define WATCH_DEFAULT_MAX_LINE ((size_t)16 << 20)

/* A line made of this byte alone stands, inside the buffer, for a dropped oversize line, so
 * that its report keeps its place among the events. The API server never sends it. */
#define WATCH_OVERSIZE_MARK '\x01'

struct rf_watch_parser {
    rf_buf_t buf;    /* bytes not yet consumed start at pos */
    size_t pos;      /* start of the next line */
    size_t tail;     /* start of the last (incomplete) line; pos <= tail <= buf.len */
    size_t max_line; /* longest line accepted, without its newline */
    int discarding;  /* dropping an oversize line until its newline */
    int ended;       /* rf_watch_parser_end was called */
    json_t *current; /* the last event returned (owns ev->object) */
    const char *const *drop; /* members left out of each object (rf_watch_parser_set_drop) */
    rf_buf_t slim;   /* a line without the members of drop (watch_slim) */
    int raw;         /* rf_watch_parser_set_raw */
    rf_buf_t rv;     /* a raw event's resourceVersion (rf_watch_event_t.rv) */
};

/* Dotted paths of members, from an object's root, longer than this are kept. */
#define WATCH_PATH_MAX 256

const char *const rf_watch_drop_default[] = {"metadata.managedFields", NULL};

static const char *const watch_type_names[] = {
    [RF_WATCH_ADDED] = "ADDED",     [RF_WATCH_MODIFIED] = "MODIFIED",
    [RF_WATCH_DELETED] = "DELETED", [RF_WATCH_BOOKMARK] = "BOOKMARK",
    [RF_WATCH_ERROR] = "ERROR",     [RF_WATCH_EXPIRED] = "EXPIRED",
    [RF_WATCH_SYNC] = "SYNC",       [RF_WATCH_SYNCED] = "SYNCED",
};

const char *rf_watch_type_name(rf_watch_type_t type)
{
    if ((size_t)type >= sizeof(watch_type_names) / sizeof(watch_type_names[0]))
        return "UNKNOWN";
    return watch_type_names[type];
}

rf_watch_parser_t *rf_watch_parser_new(size_t max_line)
{
    rf_watch_parser_t *p = calloc(1, sizeof(*p));

    if (!p)
        abort();
    rf_buf_init(&p->buf, 0);
    rf_buf_init(&p->slim, 0);
    rf_buf_init(&p->rv, 0);
    p->max_line = max_line ? max_line : WATCH_DEFAULT_MAX_LINE;
    p->drop = rf_watch_drop_default;
    return p;
}

void rf_watch_parser_set_drop(rf_watch_parser_t *p, const char *const *paths)
{
    p->drop = paths;
}

void rf_watch_parser_set_raw(rf_watch_parser_t *p, int raw)
{
    p->raw = raw;
}

void rf_watch_parser_destroy(rf_watch_parser_t *p)
{
    if (!p)
        return;
    json_decref(p->current);
    rf_buf_release(&p->buf);
    rf_buf_release(&p->slim);
    rf_buf_release(&p->rv);
    free(p);
}

void rf_watch_parser_reset(rf_watch_parser_t *p)
{
    json_decref(p->current);
    p->current = NULL;
    rf_buf_reset(&p->buf);
    p->pos = 0;
    p->tail = 0;
    p->discarding = 0;
    p->ended = 0;
}

size_t rf_watch_parser_pending(const rf_watch_parser_t *p)
{
    return p->buf.len - p->pos;
}

/* The last newline in s[0..n), or NULL (memrchr is a GNU extension). */
static const char *watch_last_newline(const char *s, size_t n)
{
    while (n > 0) {
        n--;
        if (s[n] == '\n')
            return s + n;
    }
    return NULL;
}

/* Moves the unconsumed bytes to the front of the buffer. */
static void watch_compact(rf_watch_parser_t *p)
{
    size_t keep;

    if (p->pos == 0)
        return;
    keep = p->buf.len - p->pos;
    if (keep)
        memmove(p->buf.data, p->buf.data + p->pos, keep);
    p->buf.len = keep;
    p->buf.data[keep] = '\0';
    p->tail -= p->pos;
    p->pos = 0;
}

void rf_watch_parser_feed(rf_watch_parser_t *p, const void *data, size_t len)
{
    const char *s = data;
    const char *nl;
    size_t start;

    watch_compact(p);
    while (len > 0) {
        if (p->discarding) {
            nl = memchr(s, '\n', len);
            if (!nl)
                return;
            len -= (size_t)(nl + 1 - s);
            s = nl + 1;
            p->discarding = 0;
            continue;
        }
        start = p->buf.len;
        rf_buf_add(&p->buf, s, len);
        s += len;
        len = 0;
        nl = NULL;
        if (p->buf.len > start)
            nl = watch_last_newline(p->buf.data + start, p->buf.len - start);
        if (nl)
            p->tail = (size_t)(nl + 1 - p->buf.data);
        if (p->buf.len - p->tail > p->max_line) {
            /* The incomplete last line is already too long: drop it and the rest of it. */
            p->buf.len = p->tail;
            rf_buf_addc(&p->buf, WATCH_OVERSIZE_MARK);
            rf_buf_addc(&p->buf, '\n');
            p->tail = p->buf.len;
            p->discarding = 1;
        }
    }
}

void rf_watch_parser_end(rf_watch_parser_t *p)
{
    p->ended = 1;
}

static int watch_is_blank(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    }
    return 1;
}

/* 2 when drop names the member at path[0..n), 1 when it names one inside it, else 0. */
static int watch_drop_match(const char *const *drop, const char *path, size_t n)
{
    int r = 0;

    for (; drop && *drop; drop++) {
        size_t dl = strlen(*drop);
        if (dl < n || memcmp(*drop, path, n) != 0)
            continue;
        if (dl == n)
            return 2;
        if ((*drop)[n] == '.')
            r = 1;
    }
    return r;
}

/* Appends the object s[vs..ve) to out without the members drop names, path[0..plen) being
 * its own dotted path ("" for the root); a value that is not an object is copied as it is.
 * -1 when the text is not as expected. */
static int watch_copy_object(const char *s, size_t ve, size_t vs, const char *const *drop,
                             char *path, size_t plen, rf_buf_t *out)
{
    size_t i = rf_jtext_ws(s, ve, vs), ks, ke, mvs, mve;
    int first = 1, r;

    if (i >= ve || s[i] != '{') {
        rf_buf_add(out, s + vs, ve - vs);
        return 0;
    }
    i++;
    rf_buf_addc(out, '{');
    while ((r = rf_jtext_next_member(s, ve, &i, &ks, &ke, &mvs, &mve)) == 1) {
        size_t klen = ke - ks - 2, n = plen + (plen > 0) + klen;
        int m = 0;

        if (n < WATCH_PATH_MAX) {
            if (plen > 0)
                path[plen] = '.';
            memcpy(path + n - klen, s + ks + 1, klen);
            m = watch_drop_match(drop, path, n);
        }
        if (m == 2)
            continue;
        if (!first)
            rf_buf_addc(out, ',');
        first = 0;
        rf_buf_add(out, s + ks, ke - ks);
        rf_buf_addc(out, ':');
        if (m == 1) {
            if (watch_copy_object(s, mve, mvs, drop, path, n, out) != 0)
                return -1;
        } else {
            rf_buf_add(out, s + mvs, mve - mvs);
        }
    }
    if (r < 0)
        return -1;
    rf_buf_addc(out, '}');
    return 0;
}

/* Copies the object s[0..len) to out; the value of its member key is copied by each: an
 * object (items 0) or the objects of an array (items 1) without the members of drop. */
static int watch_copy_slim(const char *s, size_t len, const char *key, int items,
                           const char *const *drop, rf_buf_t *out)
{
    char path[WATCH_PATH_MAX];
    size_t i = rf_jtext_ws(s, len, 0), ks, ke, vs, ve, klen = strlen(key);
    int first = 1, r;

    if (i >= len || s[i] != '{')
        return -1;
    i++;
    rf_buf_addc(out, '{');
    while ((r = rf_jtext_next_member(s, len, &i, &ks, &ke, &vs, &ve)) == 1) {
        if (!first)
            rf_buf_addc(out, ',');
        first = 0;
        rf_buf_add(out, s + ks, ke - ks);
        rf_buf_addc(out, ':');
        if (ke - ks - 2 != klen || memcmp(s + ks + 1, key, klen) != 0) {
            rf_buf_add(out, s + vs, ve - vs);
        } else if (!items) {
            if (watch_copy_object(s, ve, vs, drop, path, 0, out) != 0)
                return -1;
        } else {
            size_t j = vs + 1, es, ee;
            int n = 0;
            if (s[vs] != '[')
                return -1;
            rf_buf_addc(out, '[');
            for (j = rf_jtext_ws(s, ve, j); j < ve && s[j] != ']'; n++) {
                es = j;
                ee = rf_jtext_skip(s, ve, es);
                if (ee > ve)
                    return -1;
                if (n > 0)
                    rf_buf_addc(out, ',');
                if (watch_copy_object(s, ee, es, drop, path, 0, out) != 0)
                    return -1;
                j = rf_jtext_ws(s, ve, ee);
                if (j < ve && s[j] == ',') {
                    j = rf_jtext_ws(s, ve, j + 1);
                    if (j < ve && s[j] == ']')
                        return -1; /* a comma before it is not JSON */
                } else if (j >= ve || s[j] != ']') {
                    return -1;
                }
            }
            if (j >= ve)
                return -1;
            rf_buf_addc(out, ']');
        }
    }
    if (r < 0 || i >= len || rf_jtext_ws(s, len, i + 1) != len)
        return -1; /* and nothing but blanks after the object, as jansson wants */
    rf_buf_addc(out, '}');
    return 0;
}

/* The line without the members of p->drop in its object, in p->slim: a Deployment's
 * managedFields are the larger part of its event and no consumer reads them (issue 20).
 * Returns 0, or -1 when there is nothing to drop or the line is not as expected (then
 * it is parsed whole). */
static int watch_slim(rf_watch_parser_t *p, const char *line, size_t n)
{
    if (!p->drop || !p->drop[0])
        return -1;
    rf_buf_reset(&p->slim);
    return watch_copy_slim(line, n, "object", 0, p->drop, &p->slim);
}

int rf_watch_slim_list(const char *s, size_t len, const char *const *drop, rf_buf_t *out)
{
    if (!drop || !drop[0])
        return -1;
    return watch_copy_slim(s, len, "items", 1, drop, out);
}

/* The event types of a watch line's "type". */
static const struct {
    const char *name;
    rf_watch_type_t type;
} watch_line_types[] = {
    {"ADDED", RF_WATCH_ADDED},     {"MODIFIED", RF_WATCH_MODIFIED},
    {"DELETED", RF_WATCH_DELETED}, {"BOOKMARK", RF_WATCH_BOOKMARK},
    {"ERROR", RF_WATCH_ERROR},
};
#define WATCH_LINE_TYPES (sizeof(watch_line_types) / sizeof(watch_line_types[0]))

/* 1 when the JSON string s[b..e) (quotes included) is name, without escapes. */
static int watch_text_is(const char *s, size_t b, size_t e, const char *name)
{
    size_t n = strlen(name);

    return e - b == n + 2 && s[b] == '"' && memcmp(s + b + 1, name, n) == 0;
}

/* The members of the object being read in it, to its end, with metadata.resourceVersion
 * (a string without escapes, those a server writes) in p->rv: one read of each byte. NULL
 * when there is none. */
static const char *watch_raw_object(rf_watch_parser_t *p, rf_jtext_it_t *it)
{
    rf_jtext_it_t meta;
    const char *rv = NULL;

    while (rf_jtext_it_next(it)) {
        if (!rf_jtext_it_key_is(it, "metadata") || rv)
            continue;
        rf_jtext_it_enter(&meta, it);
        while (rf_jtext_it_next(&meta)) {
            size_t ve;
            if (!rf_jtext_it_key_is(&meta, "resourceVersion") || rv)
                continue;
            ve = rf_jtext_it_value_end(&meta);
            if (ve <= meta.len && meta.s[meta.vs] == '"' &&
                !memchr(meta.s + meta.vs, '\\', ve - meta.vs)) {
                rf_buf_reset(&p->rv);
                rf_buf_add(&p->rv, meta.s + meta.vs + 1, ve - meta.vs - 2);
                rv = rf_buf_str(&p->rv);
            }
        }
    }
    return rv;
}

/* Raw mode: the line's type and object read without parsing. 1 when ev is filled; 0 when
 * the line is not plainly an event of a type other than ERROR (then it is parsed whole). */
static int watch_raw(rf_watch_parser_t *p, const char *line, size_t n, rf_watch_event_t *ev)
{
    rf_jtext_it_t top, obj;
    size_t ts = 0, te = 0, os = 0, oe = 0, t;
    const char *rv = NULL;

    rf_jtext_it_init(&top, line, n, 0);
    if (top.state < 0)
        return 0;
    while (rf_jtext_it_next(&top)) {
        if (rf_jtext_it_key_is(&top, "type")) {
            ts = top.vs;
            te = rf_jtext_it_value_end(&top);
        } else if (rf_jtext_it_key_is(&top, "object") && line[top.vs] == '{') {
            rf_jtext_it_enter(&obj, &top);
            rv = watch_raw_object(p, &obj);
            os = top.vs;
            oe = obj.bad ? 0 : rf_jtext_it_value_end(&top);
        }
    }
    /* one object, nothing after it, both members, the object read, the type plain */
    if (top.bad || rf_jtext_ws(line, n, top.end + 1) != n || te == 0 || te > n || oe == 0 ||
        line[ts] != '"' || memchr(line + ts, '\\', te - ts))
        return 0;
    for (t = 0; t < WATCH_LINE_TYPES; t++) {
        if (watch_text_is(line, ts, te, watch_line_types[t].name))
            break;
    }
    if (t == WATCH_LINE_TYPES || watch_line_types[t].type == RF_WATCH_ERROR)
        return 0;
    memset(ev, 0, sizeof(*ev));
    ev->type = watch_line_types[t].type;
    ev->text = line + os;
    ev->len = oe - os;
    ev->rv = rv;
    return 1;
}

/* Decodes one line into ev. Returns 1, or -1 with errstr. */
static int watch_decode(rf_watch_parser_t *p, const char *line, size_t n, rf_watch_event_t *ev,
                        char *errstr, size_t errstr_size)
{
    json_error_t jerr;
    json_t *root;
    json_t *object;
    json_t *code;
    const char *type;
    const char *reason;
    size_t i;
    int result = -1;

    if (p->raw && watch_raw(p, line, n, ev))
        return 1;
    if (watch_slim(p, line, n) == 0)
        root = rf_json_loadb(rf_buf_str(&p->slim), p->slim.len, 0, &jerr);
    else
        root = NULL;
    if (!root)
        root = rf_json_loadb(line, n, 0, &jerr);
    if (!root) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad watch event: not json: %s", jerr.text);
        goto cleanup;
    }
    type = json_string_value(json_object_get(root, "type"));
    object = json_object_get(root, "object");
    if (!json_is_object(root) || !type || !json_is_object(object)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "bad watch event: not an object with 'type' and 'object'");
        goto cleanup;
    }
    for (i = 0; i < WATCH_LINE_TYPES; i++) {
        if (strcmp(type, watch_line_types[i].name) == 0)
            break;
    }
    if (i == WATCH_LINE_TYPES) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "bad watch event: unknown type '%.64s'", type);
        goto cleanup;
    }
    memset(ev, 0, sizeof(*ev));
    ev->type = watch_line_types[i].type;
    ev->object = object;
    if (ev->type == RF_WATCH_ERROR) {
        code = json_object_get(object, "code");
        reason = json_string_value(json_object_get(object, "reason"));
        ev->code = json_is_integer(code) ? (int)json_integer_value(code) : 0;
        ev->message = json_string_value(json_object_get(object, "message"));
        if (!ev->message)
            ev->message = "";
        if (ev->code == 410 ||
            (ev->code == 0 && reason && (!strcmp(reason, "Expired") || !strcmp(reason, "Gone"))))
            ev->type = RF_WATCH_EXPIRED;
    }
    p->current = root;
    root = NULL;
    result = 1;

cleanup:
    json_decref(root);
    return result;
}

int rf_watch_parser_next(rf_watch_parser_t *p, rf_watch_event_t *ev, char *errstr,
                         size_t errstr_size)
{
    const char *line;
    const char *nl;
    size_t n;

    json_decref(p->current);
    p->current = NULL;
    for (;;) {
        if (p->pos >= p->buf.len)
            return 0;
        line = p->buf.data + p->pos;
        nl = memchr(line, '\n', p->buf.len - p->pos);
        if (nl) {
            n = (size_t)(nl - line);
            p->pos += n + 1;
        } else if (p->ended) {
            n = p->buf.len - p->pos;
            p->pos = p->buf.len;
            p->tail = p->buf.len;
        } else {
            return 0;
        }
        if (n == 1 && line[0] == WATCH_OVERSIZE_MARK) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "bad watch event: longer than %zu bytes, dropped", p->max_line);
            return -1;
        }
        if (n > p->max_line) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "bad watch event: %zu bytes, longer than %zu, dropped", n, p->max_line);
            return -1;
        }
        if (watch_is_blank(line, n))
            continue;
        return watch_decode(p, line, n, ev, errstr, errstr_size);
    }
}
