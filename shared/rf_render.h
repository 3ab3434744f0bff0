/* Structural template rendering: multi-document YAML with placeholders -> JSON manifests. */
#ifndef RF_RENDER_H
#define RF_RENDER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "rf_err.h"

/*
 * Rendering is structural, not textual. The template is parsed with libyaml once; a
 * placeholder is substituted inside a scalar only, so no value can add structure.
 *
 * Placeholders: `{{ name }}` (spaces optional, name [a-z_][a-z0-9_]*, at most
 * RF_RENDER_MAX_NAME bytes) and the legacy CI form `__NAME__` (upper case, digits and
 * single underscores between the two double underscores), which stands for the lower-case
 * name: `__APP_NAME__` is `app_name`.
 *
 * Typing of a scalar:
 * - a plain (unquoted) scalar that is exactly one placeholder takes the value's JSON type
 *   (`replicas: {{ replicas }}` with replicas 3 gives the number 3, with "3" the string);
 * - a quoted, literal (|) or folded (>) scalar, a scalar tagged !!str or !, a scalar with
 *   text around its placeholders, and every mapping key are strings;
 * - a plain scalar without placeholders is typed as Kubernetes' YAML (go-yaml v2) types
 *   it for integers (decimal, 0x hex, 0o and leading-zero octal, 0b binary, `_` ignored),
 *   floats, true/false (True, TRUE, ...) and null (~, null, empty); but `yes`, `no`,
 *   `on`, `off`, `y`, `n` and dates stay strings (YAML 1.2 core schema). go-yaml v2 would
 *   turn them into booleans and timestamps; a template that means a boolean writes true.
 *   `.inf` and `.nan` are refused: JSON cannot hold them.
 * Tags other than !!str and ! on scalars (and !!map, !!seq on collections) are refused.
 *
 * Values: a JSON object name -> string, integer, real or boolean. A placeholder whose name
 * is not among the values is an error ("unknown placeholder", or "missing value" when the
 * name is one of rf_render_standard_values); a null, object or array value is an error.
 *
 * Anchors and aliases are expanded, and merge keys (`<<: *base`) merged (explicit keys
 * win), within a budget of RF_RENDER_MAX_NODES expanded nodes per template checked when
 * the template is compiled, so an alias bomb fails before any expansion. Limits:
 * RF_RENDER_MAX_BYTES of template, RF_RENDER_MAX_DEPTH levels of nesting (counted through
 * aliases), RF_RENDER_MAX_OUTPUT bytes of substituted text per render.
 *
 * Output: one JSON object per non-empty document, each a mapping with non-empty string
 * apiVersion, kind and metadata.name after substitution. Keys are strings (a plain key
 * that reads as a number, boolean or null is an error: quote it); a duplicate key in one
 * mapping is an error.
 *
 * Errors are RF_ERR_PERM with a sentence naming the template, the 1-based template line
 * and the placeholder, e.g.
 *   cannot render template 'web-v2' line 14: unknown placeholder 'replcas'
 */

#define RF_RENDER_MAX_BYTES (1024 * 1024)
#define RF_RENDER_MAX_DEPTH 64
#define RF_RENDER_MAX_NODES 100000
#define RF_RENDER_MAX_NAME 64
#define RF_RENDER_MAX_OUTPUT (8 * 1024 * 1024)

/* The values every release provides (NULL-terminated): service, env, namespace, version,
 * image, replicas, health_path, group, port, release_id, operator. Any other key of the
 * service's configuration is a value too. */
extern const char *const rf_render_standard_values[];

/* Nonzero when name is one of rf_render_standard_values. */
int rf_render_is_standard_value(const char *name);

/* A template parsed and checked once, rendered many times. Immutable after compile, so
 * one compiled template may be executed from several threads at once. */
typedef struct rf_render_template rf_render_template_t;

/* Parses and checks body (len bytes, UTF-8 YAML, one or more documents). Returns the
 * compiled template (free with rf_render_template_destroy), or NULL with errstr filled;
 * every failure is permanent. template_id names the template in messages. */
rf_render_template_t *rf_render_compile(const char *template_id, const char *body, size_t len,
                                        char *errstr, size_t errstr_size);

/* Renders tpl with values into *manifests_out, a new JSON array (the caller owns it), one
 * object per non-empty document. On error *manifests_out is NULL. */
rf_err_t rf_render_exec(const rf_render_template_t *tpl, const json_t *values,
                        json_t **manifests_out, char *errstr, size_t errstr_size);

/* The template line that produced what a render of tpl with values holds at path (a JSON
 * array of keys and array indexes, as rf_schema_validate_all gives) in its document doc
 * (0-based, as in the array rf_render_exec returns): the line of the key of a mapping entry,
 * of the item of a sequence, through aliases and merge keys; for a path that goes further
 * than the template (a field it lacks), the line of the deepest part it has. 0 when doc is
 * out of range. */
uint32_t rf_render_line(const rf_render_template_t *tpl, const json_t *values, size_t doc,
                        const json_t *path);

/* Accepts NULL. */
void rf_render_template_destroy(rf_render_template_t *tpl);

/* The placeholder names tpl uses, as a new sorted JSON array of strings (caller owns). */
json_t *rf_render_template_placeholders(const rf_render_template_t *tpl);

/* Nodes one render of tpl builds, aliases expanded (at most RF_RENDER_MAX_NODES). */
size_t rf_render_template_nodes(const rf_render_template_t *tpl);

/* Compile, exec and destroy in one call. */
rf_err_t rf_render(const char *template_id, const char *body, size_t len, const json_t *values,
                   json_t **manifests_out, char *errstr, size_t errstr_size);

/* The set of placeholder names a template uses, as a new sorted JSON array of strings
 * (caller owns), after checking that the template compiles. Template sync uses it to
 * refuse a template whose placeholders are not all known values. */
rf_err_t rf_render_placeholders(const char *template_id, const char *body, size_t len,
                                json_t **names_out, char *errstr, size_t errstr_size);

/* sha256 (lower-case hex) over the canonical JSON of manifests: json_dumps with
 * JSON_COMPACT | JSON_SORT_KEYS, so key order does not matter. RF_ERR_PERM when manifests
 * is NULL or cannot be dumped. */
rf_err_t rf_render_digest(const json_t *manifests, char out_hex[65]);

/* Both at once: *text_out gets the canonical JSON text (the caller frees it) and out_hex
 * its sha256, so a worker stores exactly the bytes it hashed, dumping only once (the dump
 * costs more than the render). */
rf_err_t rf_render_canonical(const json_t *manifests, char **text_out, char out_hex[65]);

#endif
