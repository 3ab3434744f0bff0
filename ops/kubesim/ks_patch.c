/* Request bodies and patches: YAML to JSON, merge patch, JSON patch, and server-side apply with field ownership. */
#include "ks_patch.h"
#include "ks_store.h"
#include "rf_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- YAML ---- */

static int yaml_word(const char *s, const char *const *words)
{
    for (int i = 0; words[i]; i++)
        if (strcmp(s, words[i]) == 0)
            return 1;
    return 0;
}

static json_t *yaml_scalar(const yaml_node_t *node)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", "y", "Y", "yes", "Yes", "YES",
                                        "on", "On", "ON", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", "n", "N", "no", "No", "NO",
                                         "off", "Off", "OFF", NULL};
    const char *s = (const char *)node->data.scalar.value;
    char *end;

    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return json_stringn(s, node->data.scalar.length);
    if (yaml_word(s, nulls))
        return json_null();
    if (yaml_word(s, trues))
        return json_true();
    if (yaml_word(s, falses))
        return json_false();
    if (*s) {
        errno = 0;
        long long v = strtoll(s, &end, 0);
        if (*end == '\0' && errno == 0 && (s[0] != '0' || s[1] == '\0' || s[1] == 'x'))
            return json_integer(v);
        if (strcmp(s, ".inf") != 0 && strcmp(s, ".nan") != 0 && strspn(s, "+-0123456789.eE") ==
                                                                     strlen(s)) {
            double d = strtod(s, &end);
            if (*end == '\0' && isfinite(d))
                return json_real(d);
        }
    }
    return json_stringn(s, node->data.scalar.length);
}

static json_t *yaml_node_json(yaml_document_t *doc, yaml_node_t *node, int depth)
{
    json_t *out = NULL;

    if (!node || depth > 64)
        return NULL;
    switch (node->type) {
    case YAML_SCALAR_NODE:
        out = yaml_scalar(node);
        break;
    case YAML_SEQUENCE_NODE:
        out = json_array();
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; it++) {
            json_t *v = yaml_node_json(doc, yaml_document_get_node(doc, *it), depth + 1);
            if (!v) {
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, v);
        }
        break;
    case YAML_MAPPING_NODE:
        out = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            json_t *v;
            if (!k || k->type != YAML_SCALAR_NODE) {
                json_decref(out);
                return NULL;
            }
            v = yaml_node_json(doc, yaml_document_get_node(doc, p->value), depth + 1);
            if (!v) {
                json_decref(out);
                return NULL;
            }
            json_object_setn_new(out, (const char *)k->data.scalar.value, k->data.scalar.length,
                                 v);
        }
        break;
    default:
        break;
    }
    return out;
}

/* ---- plain JSON: the shared library's parse (rf_json_load_plain, rf_json_loadb) ---- */

json_t *ks_json_load_plain(const char *data, size_t len)
{
    return rf_json_load_plain(data, len);
}

json_t *ks_json_loadb(const char *data, size_t len, json_error_t *error)
{
    return rf_json_loadb(data, len, 0, error);
}

json_t *ks_yaml_parse(const char *data, size_t len, char *errstr, size_t errstr_size)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    json_t *out = NULL;
    size_t lead = 0;

    /* JSON is YAML: a JSON object or array reads the same through jansson, at a fraction
     * of the cost; anything jansson refuses takes the YAML path as before */
    while (lead < len && (data[lead] == ' ' || data[lead] == '\t' || data[lead] == '\r' ||
                          data[lead] == '\n'))
        lead++;
    if (lead < len && (data[lead] == '{' || data[lead] == '[')) {
        out = ks_json_loadb(data, len, NULL);
        if (out)
            return out;
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(errstr, errstr_size, "cannot initialise the yaml parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(errstr, errstr_size, "error converting YAML to JSON: yaml: line %zu: %s",
                 parser.problem_mark.line + 1, parser.problem ? parser.problem : "syntax error");
        goto cleanup;
    }
    out = yaml_node_json(&doc, yaml_document_get_root_node(&doc), 0);
    if (!out)
        snprintf(errstr, errstr_size, "error converting YAML to JSON: empty or invalid document");
    yaml_document_delete(&doc);
cleanup:
    yaml_parser_delete(&parser);
    return out;
}

/* ---- merging ---- */

/* The key that identifies the elements of a list of objects, NULL when it is atomic. */
static const char *assoc_key(const json_t *arr)
{
    static const char *const keys[] = {"name", "containerPort", "port", "mountPath", NULL};
    size_t i;
    json_t *el;

    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return NULL;
    for (int k = 0; keys[k]; k++) {
        int all = 1;
        json_array_foreach(arr, i, el) {
            json_t *kv = json_object_get(el, keys[k]);
            if (!json_is_object(el) || !kv || json_is_object(kv) || json_is_array(kv)) {
                all = 0;
                break;
            }
        }
        if (all)
            return keys[k];
    }
    return NULL;
}

static json_t *assoc_find(const json_t *arr, const char *key, const json_t *val)
{
    size_t i;
    json_t *el;

    json_array_foreach(arr, i, el) {
        if (json_equal(json_object_get(el, key), val))
            return el;
    }
    return NULL;
}

/* Where merge is in a live object merged for an apply (merge_live): its top level, its
 * metadata (whose managedFields merge takes as null), or elsewhere. */
enum { MERGE_ANY = 0, MERGE_LIVE, MERGE_LIVE_META };

static json_t *merge(const json_t *target, const json_t *patch, int keyed, int at)
{
    const char *key;
    size_t klen;
    json_t *v, *out;

    if (json_is_object(patch)) {
        /* each member of target is copied once: merged where the patch has it, else
         * deep-copied; then the members only the patch has, in the patch's order (none
         * when target had every one of them). The keys are those of jansson objects,
         * with their lengths: no strlen and no UTF-8 check again (json_object_set_new) */
        size_t matched = 0;
        out = json_object();
        json_object_keylen_foreach((json_t *)target, key, klen, v) {
            json_t *pv = keyed && key[0] == '$' ? NULL : json_object_getn(patch, key, klen);
            int sub = MERGE_ANY;
            if (pv)
                matched++;
            if (json_is_null(pv))
                continue;
            if (at == MERGE_LIVE && klen == 8 && memcmp(key, "metadata", 8) == 0)
                sub = MERGE_LIVE_META;
            else if (at == MERGE_LIVE_META && klen == 13 && memcmp(key, "managedFields", 13) == 0)
                v = json_null();
            if (!pv && sub == MERGE_LIVE_META && json_is_object(v)) {
                /* a copy, managedFields null: merged with an empty patch */
                json_t *none = json_object();
                json_object_setn_new_nocheck(out, key, klen, merge(v, none, keyed, sub));
                json_decref(none);
                continue;
            }
            json_object_setn_new_nocheck(out, key, klen,
                                         pv ? merge(v, pv, keyed, sub) : ks_json_copy(v));
        }
        if (matched == json_object_size(patch))
            return out;
        json_object_keylen_foreach((json_t *)patch, key, klen, v) {
            if ((keyed && key[0] == '$') || json_is_null(v) || json_object_getn(target, key, klen))
                continue;
            json_object_setn_new_nocheck(out, key, klen, merge(NULL, v, keyed, MERGE_ANY));
        }
        return out;
    }
    if (keyed && json_is_array(patch) && json_is_array(target)) {
        const char *ak = assoc_key(patch);
        size_t i;
        json_t *el;
        if (ak && (json_array_size(target) == 0 || assoc_key(target) == ak)) {
            out = json_array();
            json_array_foreach(patch, i, el) {
                json_t *old = assoc_find(target, ak, json_object_get(el, ak));
                if (strcmp(json_string_value(json_object_get(el, "$patch")) ?: "", "delete") == 0)
                    continue;
                json_array_append_new(out, merge(old, el, keyed, MERGE_ANY));
            }
            json_array_foreach(target, i, el) {
                if (!assoc_find(patch, ak, json_object_get(el, ak)))
                    json_array_append_new(out, ks_json_copy(el));
            }
            return out;
        }
    }
    /* a patch's value as it is, shared: the patch is the caller's and is not used for
     * anything after its merge (stored trees, which never change, are never patches) */
    return json_incref((json_t *)patch);
}

json_t *ks_merge_patch(const json_t *target, const json_t *patch, int strategic)
{
    return merge(target, patch, strategic, MERGE_ANY);
}

/* ---- JSON patch ---- */

static int pointer_split(const char *ptr, json_t **parts)
{
    const char *p = ptr;

    *parts = json_array();
    if (*p == '\0')
        return 0;
    if (*p != '/')
        return -1;
    while (*p == '/') {
        const char *end = strchr(p + 1, '/');
        size_t n = end ? (size_t)(end - p - 1) : strlen(p + 1);
        char *seg = malloc(n + 1), *w = seg;
        if (!seg)
            abort();
        for (size_t i = 0; i < n; i++) {
            if (p[1 + i] == '~' && i + 1 < n && p[2 + i] == '1') {
                *w++ = '/';
                i++;
            } else if (p[1 + i] == '~' && i + 1 < n && p[2 + i] == '0') {
                *w++ = '~';
                i++;
            } else {
                *w++ = p[1 + i];
            }
        }
        *w = '\0';
        json_array_append_new(*parts, json_string(seg));
        free(seg);
        p += n + 1;
    }
    return 0;
}

/* Resolves all but the last segment; returns the container and sets *last. */
static json_t *pointer_parent(json_t *doc, json_t *parts, const char **last)
{
    json_t *cur = doc;
    size_t n = json_array_size(parts);

    if (n == 0)
        return NULL;
    for (size_t i = 0; i + 1 < n; i++) {
        const char *seg = json_string_value(json_array_get(parts, i));
        if (json_is_object(cur))
            cur = json_object_get(cur, seg);
        else if (json_is_array(cur))
            cur = json_array_get(cur, strtoul(seg, NULL, 10));
        else
            return NULL;
        if (!cur)
            return NULL;
    }
    *last = json_string_value(json_array_get(parts, n - 1));
    return cur;
}

static json_t *pointer_get(json_t *doc, const char *ptr)
{
    json_t *parts, *parent, *out = NULL;
    const char *last;

    if (pointer_split(ptr, &parts) != 0)
        goto cleanup;
    if (json_array_size(parts) == 0) {
        out = doc;
        goto cleanup;
    }
    parent = pointer_parent(doc, parts, &last);
    if (json_is_object(parent))
        out = json_object_get(parent, last);
    else if (json_is_array(parent))
        out = json_array_get(parent, strtoul(last, NULL, 10));
cleanup:
    json_decref(parts);
    return out;
}

static int pointer_remove(json_t *doc, const char *ptr)
{
    json_t *parts, *parent;
    const char *last;
    int result = -1;

    if (pointer_split(ptr, &parts) != 0)
        goto cleanup;
    parent = pointer_parent(doc, parts, &last);
    if (json_is_object(parent) && json_object_get(parent, last))
        result = json_object_del(parent, last);
    else if (json_is_array(parent) && strtoul(last, NULL, 10) < json_array_size(parent))
        result = json_array_remove(parent, strtoul(last, NULL, 10));
cleanup:
    json_decref(parts);
    return result;
}

static int pointer_add(json_t *doc, const char *ptr, json_t *value, int replace)
{
    json_t *parts, *parent;
    const char *last;
    int result = -1;

    if (pointer_split(ptr, &parts) != 0)
        goto cleanup;
    parent = pointer_parent(doc, parts, &last);
    if (json_is_object(parent)) {
        if (replace && !json_object_get(parent, last))
            goto cleanup;
        result = json_object_set(parent, last, value);
    } else if (json_is_array(parent)) {
        size_t idx = strcmp(last, "-") == 0 ? json_array_size(parent) : strtoul(last, NULL, 10);
        if (replace)
            result = json_array_set(parent, idx, value);
        else
            result = json_array_insert(parent, idx, value);
    }
cleanup:
    json_decref(parts);
    return result;
}

json_t *ks_json_patch(const json_t *target, const json_t *ops, char *errstr, size_t errstr_size)
{
    json_t *doc = ks_json_copy(target), *op;
    size_t i;

    if (!json_is_array(ops)) {
        snprintf(errstr, errstr_size, "json patch must be an array of operations");
        goto fail;
    }
    json_array_foreach(ops, i, op) {
        const char *name = json_string_value(json_object_get(op, "op"));
        const char *path = json_string_value(json_object_get(op, "path"));
        const char *from = json_string_value(json_object_get(op, "from"));
        json_t *value = json_object_get(op, "value");
        int rc = -1;
        if (!name || !path) {
            snprintf(errstr, errstr_size, "json patch operation %zu lacks 'op' or 'path'", i);
            goto fail;
        }
        if (strcmp(name, "add") == 0 && value) {
            rc = pointer_add(doc, path, value, 0);
        } else if (strcmp(name, "replace") == 0 && value) {
            rc = pointer_add(doc, path, value, 1);
        } else if (strcmp(name, "remove") == 0) {
            rc = pointer_remove(doc, path);
        } else if (strcmp(name, "test") == 0 && value) {
            rc = json_equal(pointer_get(doc, path), value) ? 0 : -1;
        } else if ((strcmp(name, "move") == 0 || strcmp(name, "copy") == 0) && from) {
            json_t *v = ks_json_copy(pointer_get(doc, from));
            if (v && (name[0] == 'c' || pointer_remove(doc, from) == 0))
                rc = pointer_add(doc, path, v, 0);
            json_decref(v);
        }
        if (rc != 0) {
            snprintf(errstr, errstr_size, "json patch operation '%s' failed on path '%s'", name,
                     path);
            goto fail;
        }
    }
    return doc;
fail:
    json_decref(doc);
    return NULL;
}

/* ---- server-side apply: field sets ---- */

/* A field path is its fieldsV1 keys joined by '\n'; a set is a JSON object of paths. */

static int meta_skipped(const char *key)
{
    static const char *const skip[] = {"name", "namespace", "uid", "resourceVersion",
                                       "generation", "creationTimestamp", "managedFields",
                                       "deletionTimestamp", "selfLink", NULL};
    return yaml_word(key, skip);
}

/* prefix, "\n" unless prefix is empty, then a and b: a new string (no printf: these run
 * for every field of every apply). */
static char *path_join(const char *prefix, size_t plen, const char *a, const char *b)
{
    size_t al = strlen(a), bl = strlen(b);
    char *p = malloc(plen + 1 + al + bl + 1), *w = p;

    if (!p)
        abort();
    memcpy(w, prefix, plen);
    w += plen;
    if (plen)
        *w++ = '\n';
    memcpy(w, a, al);
    memcpy(w + al, b, bl + 1);
    return p;
}

/* The k: segment of el in a list keyed by ak into ks: {"<ak>":<value>} as json_dumps
 * writes {ak: value} compactly. */
static int assoc_segment(rf_buf_t *ks, const char *ak, const json_t *el)
{
    rf_buf_reset(ks);
    if (rf_buf_adds(ks, "{\"") != 0 || rf_buf_adds(ks, ak) != 0 || rf_buf_adds(ks, "\":") != 0 ||
        ks_json_append_value(ks, json_object_get(el, ak)) != 0 || rf_buf_addc(ks, '}') != 0)
        return -1;
    return 0;
}

/* The child of a fieldsV1 node (NULL: none) named pre + key, created empty when absent;
 * *created says whether it was. */
static json_t *tree_child(json_t *node, const char *pre, const char *key, size_t klen,
                          int *created)
{
    char stack[256], *name = stack;
    size_t plen = strlen(pre);
    json_t *child;

    *created = 0;
    if (!node)
        return NULL;
    if (plen + klen + 1 > sizeof(stack)) {
        name = malloc(plen + klen + 1);
        if (!name)
            abort();
    }
    memcpy(name, pre, plen);
    memcpy(name + plen, key, klen);
    name[plen + klen] = '\0';
    child = json_object_getn(node, name, plen + klen);
    if (!child) {
        child = json_object();
        json_object_setn_new(node, name, plen + klen, child);
        *created = 1;
    }
    if (name != stack)
        free(name);
    return child;
}

/* Drops child from node when it was created for paths that never came (a metadata
 * whose every field is skipped): fields_to_v1 would not have made it. */
static void tree_prune(json_t *node, json_t *child, int created)
{
    if (!created || json_object_size(child) > 0)
        return;
    for (void *it = json_object_iter(node); it; it = json_object_iter_next(node, it)) {
        if (json_object_iter_value(it) == child) {
            json_object_del(node, json_object_iter_key(it));
            return;
        }
    }
}

static void fields_collect(const json_t *v, const char *prefix, json_t *set, int depth)
{
    const char *key;
    json_t *sub;
    char *path;
    size_t plen = strlen(prefix);

    json_object_foreach((json_t *)v, key, sub) {
        if (depth == 0 && (strcmp(key, "apiVersion") == 0 || strcmp(key, "kind") == 0 ||
                           strcmp(key, "status") == 0))
            continue;
        if (depth == 1 && strncmp(prefix, "f:metadata", 10) == 0 && plen == 10 &&
            meta_skipped(key))
            continue;
        path = path_join(prefix, plen, "f:", key);
        if (json_is_object(sub) && json_object_size(sub) > 0) {
            fields_collect(sub, path, set, depth + 1);
        } else if (json_is_array(sub) && assoc_key(sub)) {
            const char *ak = assoc_key(sub);
            size_t i;
            json_t *el;
            rf_buf_t ks = RF_BUF_INIT;
            json_array_foreach(sub, i, el) {
                char *epath, *dot;
                if (assoc_segment(&ks, ak, el) != 0)
                    abort();
                epath = path_join(path, strlen(path), "k:", ks.data);
                dot = path_join(epath, strlen(epath), ".", "");
                json_object_set_new(set, dot, json_true());
                fields_collect(el, epath, set, depth + 2);
                free(dot);
                free(epath);
            }
            rf_buf_release(&ks);
        } else {
            json_object_set_new(set, path, json_true());
        }
        free(path);
    }
}

/* The fields of v (depth levels down; metadata: v is the object's metadata) as a fieldsV1
 * tree under node: what fields_to_v1 makes of fields_collect's set, in the same order,
 * without the set's path strings. */
static void fields_tree(const json_t *v, int depth, int metadata, json_t *node)
{
    const char *key;
    json_t *sub;

    json_object_foreach((json_t *)v, key, sub) {
        json_t *child;
        int created;
        if (depth == 0 && (strcmp(key, "apiVersion") == 0 || strcmp(key, "kind") == 0 ||
                           strcmp(key, "status") == 0))
            continue;
        if (depth == 1 && metadata && meta_skipped(key))
            continue;
        child = tree_child(node, "f:", key, strlen(key), &created);
        if (json_is_object(sub) && json_object_size(sub) > 0) {
            fields_tree(sub, depth + 1, depth == 0 && strcmp(key, "metadata") == 0, child);
            tree_prune(node, child, created);
        } else if (json_is_array(sub) && assoc_key(sub)) {
            const char *ak = assoc_key(sub);
            size_t i;
            json_t *el;
            rf_buf_t ks = RF_BUF_INIT;
            json_array_foreach(sub, i, el) {
                json_t *knode;
                int kcreated;
                if (assoc_segment(&ks, ak, el) != 0)
                    abort();
                knode = tree_child(child, "k:", ks.data, ks.len, &kcreated);
                tree_child(knode, ".", "", 0, &kcreated);
                fields_tree(el, depth + 2, 0, knode);
            }
            rf_buf_release(&ks);
        }
    }
}

/* Whether fields_tree(v, depth, metadata) would add to an empty node nothing at all: every
 * member of v is skipped (a metadata of name and namespace only). */
static int fields_none(const json_t *v, int depth, int metadata)
{
    const char *key;
    json_t *sub;

    json_object_foreach((json_t *)v, key, sub) {
        if (depth == 0 && (strcmp(key, "apiVersion") == 0 || strcmp(key, "kind") == 0 ||
                           strcmp(key, "status") == 0))
            continue;
        if (depth == 1 && metadata && meta_skipped(key))
            continue;
        return 0;
    }
    return 1;
}

/* Whether the member at it (NULL: none) is named pre + key (klen bytes). */
static int tree_key_is(void *it, const char *pre, const char *key, size_t klen)
{
    size_t plen = strlen(pre);

    return it && json_object_iter_key_len(it) == plen + klen &&
           memcmp(json_object_iter_key(it), pre, plen) == 0 &&
           memcmp(json_object_iter_key(it) + plen, key, klen) == 0;
}

/* Whether fields_tree(v, depth, metadata) on a node holding the members of node before it
 * would leave node as it is, members in the same order: 1 when it is sure, 0 otherwise
 * (also for what fields_tree merges, as two list elements with the same key). Reads only:
 * an apply whose field set is its manager's last one keeps that tree (issue 20). */
static int fields_tree_same_from(const json_t *v, int depth, int metadata, const json_t *node,
                                 void *it)
{
    const char *key;
    json_t *sub;

    json_object_foreach((json_t *)v, key, sub) {
        size_t klen = strlen(key);
        json_t *child;
        if (depth == 0 && (strcmp(key, "apiVersion") == 0 || strcmp(key, "kind") == 0 ||
                           strcmp(key, "status") == 0))
            continue;
        if (depth == 1 && metadata && meta_skipped(key))
            continue;
        if (json_is_object(sub) && json_object_size(sub) > 0) {
            int meta = depth == 0 && strcmp(key, "metadata") == 0;
            if (fields_none(sub, depth + 1, meta))
                continue; /* tree_prune drops it */
            if (!tree_key_is(it, "f:", key, klen))
                return 0;
            child = json_object_iter_value(it);
            if (!json_is_object(child) ||
                !fields_tree_same_from(sub, depth + 1, meta, child, json_object_iter(child)))
                return 0;
        } else if (json_is_array(sub) && assoc_key(sub)) {
            const char *ak = assoc_key(sub);
            size_t i;
            json_t *el;
            void *kit;
            rf_buf_t ks = RF_BUF_INIT;
            int same = 1;
            if (!tree_key_is(it, "f:", key, klen))
                return 0;
            child = json_object_iter_value(it);
            kit = json_is_object(child) ? json_object_iter(child) : NULL;
            json_array_foreach(sub, i, el) {
                json_t *knode;
                void *dit;
                if (assoc_segment(&ks, ak, el) != 0)
                    abort();
                if (!tree_key_is(kit, "k:", ks.data, ks.len)) {
                    same = 0;
                    break;
                }
                knode = json_object_iter_value(kit);
                dit = json_is_object(knode) ? json_object_iter(knode) : NULL;
                if (!tree_key_is(dit, ".", "", 0) ||
                    json_object_size(json_object_iter_value(dit)) != 0 ||
                    !fields_tree_same_from(el, depth + 2, 0, knode,
                                           json_object_iter_next(knode, dit))) {
                    same = 0;
                    break;
                }
                kit = json_object_iter_next(child, kit);
            }
            rf_buf_release(&ks);
            if (!same || kit)
                return 0;
        } else {
            if (!tree_key_is(it, "f:", key, klen))
                return 0;
            child = json_object_iter_value(it);
            if (!json_is_object(child) || json_object_size(child) != 0)
                return 0;
        }
        it = json_object_iter_next((json_t *)node, it);
    }
    return it == NULL;
}

static int fields_tree_same(const json_t *cfg, const json_t *tree)
{
    return json_is_object(tree) &&
           fields_tree_same_from(cfg, 0, 0, tree, json_object_iter((json_t *)tree));
}

static json_t *fields_to_v1(const json_t *set)
{
    json_t *root = json_object(), *unused;
    const char *path;

    json_object_foreach((json_t *)set, path, unused) {
        json_t *cur = root;
        const char *p = path;
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            json_t *next = json_object_getn(cur, p, n);
            if (!next) {
                next = json_object();
                json_object_setn_new(cur, p, n, next);
            }
            cur = next;
            p += n;
            if (*p == '\n')
                p++;
        }
    }
    return root;
}

static void fields_from_v1(const json_t *tree, const char *prefix, json_t *set)
{
    const char *key;
    json_t *sub;

    size_t plen = strlen(prefix);

    json_object_foreach((json_t *)tree, key, sub) {
        char *path = path_join(prefix, plen, key, "");
        if (json_object_size(sub) == 0)
            json_object_set_new(set, path, json_true());
        else
            fields_from_v1(sub, path, set);
        free(path);
    }
}

/* The element of arr that a k: segment (seg, n bytes: {"<key>":<value>}) names, without
 * parsing the segment, when it has the one key and a string without escapes or an
 * integer as its value, as fields_collect writes them: 1 with *found (NULL when no
 * element matches) and *index, 0 when the segment takes jansson's parse. */
static int key_find(const json_t *arr, const char *seg, size_t n, json_t **found, size_t *index)
{
    const char *end = seg + n, *key, *val, *q;
    size_t klen, vlen, i;
    int is_str;
    long long num = 0;
    json_t *el;

    *found = NULL;
    if (n < 7 || seg[0] != '{' || seg[1] != '"' || end[-1] != '}')
        return 0;
    key = seg + 2;
    q = memchr(key, '"', (size_t)(end - key));
    if (!q || memchr(key, '\\', (size_t)(q - key)) || q + 2 >= end || q[1] != ':')
        return 0;
    klen = (size_t)(q - key);
    val = q + 2;
    vlen = (size_t)(end - 1 - val);
    is_str = val[0] == '"';
    if (is_str) {
        if (vlen < 2 || val[vlen - 1] != '"')
            return 0;
        val++;
        vlen -= 2;
        for (size_t j = 0; j < vlen; j++)
            if ((unsigned char)val[j] < 0x20 || val[j] == '"' || val[j] == '\\')
                return 0;
    } else {
        size_t d = val[0] == '-' ? 1 : 0;
        if (vlen <= d || vlen > 18 || (val[d] == '0' && vlen > d + 1))
            return 0;
        for (size_t j = d; j < vlen; j++) {
            if (val[j] < '0' || val[j] > '9')
                return 0;
            num = num * 10 + (val[j] - '0');
        }
        if (d)
            num = -num;
    }
    json_array_foreach(arr, i, el) {
        json_t *v = json_object_getn(el, key, klen);
        if (is_str ? json_is_string(v) && json_string_length(v) == vlen &&
                         memcmp(json_string_value(v), val, vlen) == 0
                   : json_is_integer(v) && json_integer_value(v) == num) {
            *found = el;
            if (index)
                *index = i;
            break;
        }
    }
    return 1;
}

/* One step of a field path: the value the segment (n bytes at seg) names under cur
 * (f:<key> a member, k:{..} the list element with those keys, "." cur itself); NULL when
 * absent. *index (when not NULL) is set to a found element's index. */
static json_t *field_step(json_t *cur, const char *seg, size_t n, size_t *index)
{
    json_t *k, *el, *found = NULL, *kv;
    const char *kk;
    size_t i;

    if (!cur)
        return NULL;
    if (n >= 2 && strncmp(seg, "f:", 2) == 0)
        return json_object_getn(cur, seg + 2, n - 2);
    if (n < 2 || strncmp(seg, "k:", 2) != 0)
        return cur;
    if (key_find(cur, seg + 2, n - 2, &found, index))
        return found;
    k = json_loadb(seg + 2, n - 2, 0, NULL);
    json_array_foreach(cur, i, el) {
        int all = 1;
        json_object_foreach(k, kk, kv) {
            if (!json_equal(json_object_get(el, kk), kv))
                all = 0;
        }
        if (all && k) {
            found = el;
            if (index)
                *index = i;
            break;
        }
    }
    json_decref(k);
    return found;
}

/* The value at a field path, NULL when absent; *parent is the object or list the last
 * f: or k: segment was looked up in. */
static json_t *field_get(const json_t *obj, const char *path, json_t **parent, size_t *index)
{
    json_t *cur = (json_t *)obj;
    const char *p = path;

    if (parent)
        *parent = NULL;
    while (*p && cur) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (parent && n >= 2 && (strncmp(p, "f:", 2) == 0 || strncmp(p, "k:", 2) == 0))
            *parent = cur;
        cur = field_step(cur, p, n, index);
        p += n;
        if (*p == '\n')
            p++;
    }
    return cur;
}

static void field_remove(json_t *obj, const char *path)
{
    json_t *parent;
    size_t index = 0;
    const char *last = strrchr(path, '\n');
    json_t *v;

    last = last ? last + 1 : path;
    if (strcmp(last, ".") == 0) {
        v = field_get(obj, path, &parent, &index);
        if (v && json_is_array(parent))
            json_array_remove(parent, index);
        return;
    }
    v = field_get(obj, path, &parent, NULL);
    if (v && json_is_object(parent) && strncmp(last, "f:", 2) == 0)
        json_object_del(parent, last + 2);
}

/* ".spec.template.spec.containers[name=\"web\"].image" for messages. */
static void field_pretty(const char *path, char *out, size_t out_size)
{
    size_t w = 0;
    const char *p = path;

    out[0] = '\0';
    while (*p && w + 1 < out_size) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (strncmp(p, "f:", 2) == 0) {
            w += (size_t)snprintf(out + w, out_size - w, ".%.*s", (int)(n - 2), p + 2);
        } else if (strncmp(p, "k:", 2) == 0) {
            char *seg = strndup(p + 2, n - 2);
            json_t *k = json_loads(seg, 0, NULL);
            const char *kk;
            json_t *kv;
            json_object_foreach(k, kk, kv) {
                char *vs = json_dumps(kv, JSON_ENCODE_ANY | JSON_COMPACT);
                w += (size_t)snprintf(out + w, out_size - w, "[%s=%s]", kk, vs ? vs : "");
                free(vs);
            }
            json_decref(k);
            free(seg);
        }
        if (w >= out_size)
            w = out_size - 1;
        p += n;
        if (*p == '\n')
            p++;
    }
}

static json_t *entry_set(const json_t *entry)
{
    json_t *set = json_object();

    fields_from_v1(json_object_get(entry, "fieldsV1"), "", set);
    return set;
}

/* A managedFields entry whose fieldsV1 is tree (stolen). */
static json_t *entry_new_tree(const char *manager, const char *op, const char *api_version,
                              json_t *tree)
{
    char ts[32];

    ks_time_format(ks_now_ms(), ts, sizeof(ts));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "manager", manager, "operation", op,
                     "apiVersion", api_version, "time", ts, "fieldsType", "FieldsV1", "fieldsV1",
                     tree);
}

static json_t *entry_new(const char *manager, const char *op, const char *api_version,
                         const json_t *set)
{
    return entry_new_tree(manager, op, api_version, fields_to_v1(set));
}

static int entry_is(const json_t *entry, const char *manager, const char *op)
{
    return strcmp(json_string_value(json_object_get(entry, "manager")) ?: "", manager) == 0 &&
           strcmp(json_string_value(json_object_get(entry, "operation")) ?: "", op) == 0 &&
           !json_object_get(entry, "subresource");
}

/* Puts the managed fields back, dropping empty entries; steals sets. */
static void managed_store(json_t *obj, json_t *entries)
{
    json_t *out = json_array(), *e;
    size_t i;

    json_array_foreach(entries, i, e) {
        json_t *tree = json_object_get(e, "fieldsV1");
        if (json_object_size(tree) > 0)
            json_array_append(out, e);
    }
    json_object_set_new(json_object_get(obj, "metadata"), "managedFields", out);
}

/* merge(live, cfg) without a copy of live's managedFields, which managed_store replaces:
 * merged as if live's managedFields were null, in the same place (MERGE_LIVE_META). */
static json_t *merge_live(const json_t *live, const json_t *cfg)
{
    return merge(live, cfg, 1, MERGE_LIVE);
}

/* Whether path (made by fields_collect, never empty) is in the field set of the fieldsV1
 * tree, as fields_from_v1 lists it: the node its segments lead to has no children. */
static int tree_has(const json_t *tree, const char *path)
{
    const json_t *cur = tree;
    const char *p = path;

    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        cur = json_object_getn(cur, p, n);
        if (!cur)
            return 0;
        p += n;
        if (*p == '\n')
            p++;
    }
    return cur != tree && json_object_size(cur) == 0;
}

/* The field set of entries[i], built on first use and kept in sets[i]: what a forced
 * apply takes from it is written back to its fieldsV1 at once, so both stay the same. */
static json_t *entry_set_at(const json_t *entries, json_t **sets, size_t i)
{
    if (!sets[i])
        sets[i] = entry_set(json_array_get(entries, i));
    return sets[i];
}

/* Calls fn(path, ctx) for each field path of the fieldsV1 tree node under the path in
 * buf, in the order fields_from_v1 lists them, without building the set. */
static void tree_walk(const json_t *node, rf_buf_t *buf, void (*fn)(const char *, void *),
                      void *ctx)
{
    const char *key;
    json_t *sub;
    size_t len = buf->len;

    json_object_foreach((json_t *)node, key, sub) {
        if ((len && rf_buf_addc(buf, '\n') != 0) || rf_buf_adds(buf, key) != 0)
            abort();
        if (json_object_size(sub) == 0)
            fn(rf_buf_str(buf), ctx);
        else
            tree_walk(sub, buf, fn, ctx);
        buf->len = len;
        buf->data[len] = '\0';
    }
}

typedef struct apply_ctx {
    const json_t *t_new, *found;
    json_t *entries, **sets, *merged, *conflicts;
    const char *manager;
    int force, nconf;
    char first_mgr[128];
    char list[2048];
    size_t lw;
} apply_ctx_t;

/* conflicts: a field this apply sets to another value (lv live's, cv the config's),
 * owned by someone else */
static void apply_conflict(const char *path, json_t *lv, json_t *cv, apply_ctx_t *x)
{
    size_t plen = strlen(path), i;
    json_t *e;

    if (plen >= 2 && strcmp(path + plen - 2, "\n.") == 0)
        return;
    if (!lv || json_equal(lv, cv))
        return;
    json_array_foreach(x->entries, i, e) {
        char pretty[512];
        const char *m;
        if (entry_is(e, x->manager, "Apply") || !tree_has(json_object_get(e, "fieldsV1"), path))
            continue;
        m = json_string_value(json_object_get(e, "manager")) ?: "";
        field_pretty(path, pretty, sizeof(pretty));
        json_array_append_new(x->conflicts, json_pack("{s:s, s:s}", "manager", m, "field", pretty));
        if (!x->nconf)
            snprintf(x->first_mgr, sizeof(x->first_mgr), "%s", m);
        if (x->lw < sizeof(x->list))
            x->lw += (size_t)snprintf(x->list + x->lw, sizeof(x->list) - x->lw, "\n- %s", pretty);
        x->nconf++;
        if (x->force) {
            json_t *set = entry_set_at(x->entries, x->sets, i);
            json_object_del(set, path);
            json_object_set_new(e, "fieldsV1", fields_to_v1(set));
        }
    }
}

/* apply_conflict for each field path of t_new under the path in buf, with the values the
 * path names in live (lv) and the config (cv), stepped down with the walk rather than
 * looked up from the root for each path (as field_get would find them). */
static void conflicts_walk(const json_t *node, rf_buf_t *buf, json_t *lv, json_t *cv,
                           apply_ctx_t *x)
{
    const char *key;
    json_t *sub;
    size_t len = buf->len;

    json_object_foreach((json_t *)node, key, sub) {
        size_t klen = strlen(key);
        json_t *l = field_step(lv, key, klen, NULL), *c = field_step(cv, key, klen, NULL);
        if ((len && rf_buf_addc(buf, '\n') != 0) || rf_buf_add(buf, key, klen) != 0)
            abort();
        if (json_object_size(sub) == 0)
            apply_conflict(rf_buf_str(buf), l, c, x);
        else
            conflicts_walk(sub, buf, l, c, x);
        buf->len = len;
        buf->data[len] = '\0';
    }
}

/* fields this manager applied before and no longer does, owned by nobody else */
static void apply_dropped(const char *path, void *cls)
{
    apply_ctx_t *x = cls;
    size_t i;
    json_t *e;

    if (tree_has(x->t_new, path))
        return;
    json_array_foreach(x->entries, i, e) {
        if (e != x->found && tree_has(json_object_get(e, "fieldsV1"), path))
            return;
    }
    field_remove(x->merged, path);
}

json_t *ks_apply(const json_t *live, const json_t *cfg, const char *manager,
                 const char *api_version, int force, json_t **conflicts, char *errstr,
                 size_t errstr_size)
{
    json_t *t_new = json_object(), *merged = NULL, *entries = NULL, *e, *found = NULL;
    json_t *old_tree = NULL, **sets = NULL;
    size_t i, nsets = 0;
    int same = 0;
    apply_ctx_t x;
    rf_buf_t buf = RF_BUF_INIT;

    memset(&x, 0, sizeof(x));
    *conflicts = json_array();
    /* the manager's last applied tree, kept when this apply's field set is the same one
     * (values changed only, as most applies): no new tree, and no field was dropped */
    json_array_foreach(json_object_get(json_object_get(live, "metadata"), "managedFields"), i, e) {
        if (entry_is(e, manager, "Apply"))
            old_tree = json_object_get(e, "fieldsV1");
    }
    if (live && old_tree && fields_tree_same(cfg, old_tree)) {
        json_decref(t_new);
        t_new = json_incref(old_tree);
        same = 1;
    } else {
        fields_tree(cfg, 0, 0, t_new);
    }
    old_tree = NULL;
    if (!live) {
        merged = ks_json_copy(cfg);
        if (!json_is_object(json_object_get(merged, "metadata")))
            json_object_set_new(merged, "metadata", json_object());
        entries = json_array();
        json_array_append_new(entries, entry_new_tree(manager, "Apply", api_version,
                                                      json_incref(t_new)));
        managed_store(merged, entries);
        goto cleanup;
    }
    /* the entries are changed by replacing their members, so each is a shallow copy whose
     * fieldsV1 tree is shared with live's until replaced (stored trees never change) */
    entries = json_array();
    json_array_foreach(json_object_get(json_object_get(live, "metadata"), "managedFields"), i, e)
        json_array_append_new(entries, json_copy(e));
    /* an entry's field set is built only when a forced apply takes fields from it */
    nsets = json_array_size(entries);
    sets = calloc(nsets ? nsets : 1, sizeof(*sets));
    if (!sets)
        abort();
    x.t_new = t_new;
    x.entries = entries;
    x.sets = sets;
    x.conflicts = *conflicts;
    x.manager = manager;
    x.force = force;
    /* only another manager's entry (or this one's Update) can conflict: none, no walk */
    json_array_foreach(entries, i, e) {
        if (!entry_is(e, manager, "Apply")) {
            conflicts_walk(t_new, &buf, (json_t *)live, (json_t *)cfg, &x);
            break;
        }
    }
    if (x.nconf && !force) {
        if (x.nconf == 1)
            snprintf(errstr, errstr_size,
                     "Apply failed with 1 conflict: conflict with \"%s\" using %s: %s",
                     x.first_mgr, api_version, x.list + 3);
        else
            snprintf(errstr, errstr_size, "Apply failed with %d conflicts: conflicts with \"%s\":%s",
                     x.nconf, x.first_mgr, x.list);
        goto cleanup;
    }
    merged = merge_live(live, cfg);
    json_array_foreach(entries, i, e) {
        if (entry_is(e, manager, "Apply")) {
            found = e;
            old_tree = json_object_get(e, "fieldsV1");
        }
    }
    if (found) {
        x.found = found;
        x.merged = merged;
        rf_buf_reset(&buf);
        if (!same)
            tree_walk(old_tree, &buf, apply_dropped, &x);
        json_object_set(found, "fieldsV1", t_new);
    } else {
        json_array_append_new(entries, entry_new_tree(manager, "Apply", api_version,
                                                      json_incref(t_new)));
    }
    managed_store(merged, entries);
cleanup:
    rf_buf_release(&buf);
    for (i = 0; i < nsets; i++)
        json_decref(sets[i]);
    free(sets);
    json_decref(entries);
    json_decref(t_new);
    if (merged) {
        json_decref(*conflicts);
        *conflicts = NULL;
    }
    return merged;
}

void ks_apply_record_update(json_t *merged, const json_t *old, const char *manager,
                            const char *api_version)
{
    json_t *all = json_object(), *changed = json_object(), *entries, *e, *unused, *mine = NULL;
    const char *path;
    size_t i;

    fields_collect(merged, "", all, 0);
    json_object_foreach(all, path, unused) {
        json_t *nv = field_get(merged, path, NULL, NULL);
        json_t *ov = old ? field_get(old, path, NULL, NULL) : NULL;
        if (!ov || !json_equal(nv, ov))
            json_object_set_new(changed, path, json_true());
    }
    entries = ks_json_copy(json_object_get(json_object_get(merged, "metadata"), "managedFields"));
    if (!json_is_array(entries)) {
        json_decref(entries);
        entries = json_array();
    }
    json_array_foreach(entries, i, e) {
        json_t *set = entry_set(e);
        void *iter = json_object_iter(set);
        while (iter) {
            const char *p = json_object_iter_key(iter);
            iter = json_object_iter_next(set, iter);
            if (json_object_get(changed, p) || !field_get(merged, p, NULL, NULL))
                json_object_del(set, p);
        }
        if (entry_is(e, manager, "Update")) {
            mine = e;
            json_object_update(set, changed);
        }
        json_object_set_new(e, "fieldsV1", fields_to_v1(set));
        json_decref(set);
    }
    if (!mine && json_object_size(changed) > 0)
        json_array_append_new(entries, entry_new(manager, "Update", api_version, changed));
    managed_store(merged, entries);
    json_decref(entries);
    json_decref(all);
    json_decref(changed);
}

int ks_glob_match(const char *pattern, const char *s)
{
    if (*pattern == '\0')
        return *s == '\0';
    if (*pattern == '*') {
        for (const char *p = s;; p++) {
            if (ks_glob_match(pattern + 1, p))
                return 1;
            if (*p == '\0')
                return 0;
        }
    }
    if (*s == '\0')
        return 0;
    if (*pattern == '?' || *pattern == *s)
        return ks_glob_match(pattern + 1, s + 1);
    return 0;
}
