/* JSON Schema (draft 7) registry and validator on jansson, for the message schemas. */
#ifndef RF_SCHEMA_H
#define RF_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

#include "rf_err.h"

/*
 * Supported keywords (draft 7): type (integer is any number without a fractional part),
 * enum, const, properties, required, additionalProperties, patternProperties,
 * propertyNames, dependencies, items (schema and array form), additionalItems, contains,
 * minItems, maxItems, uniqueItems, minLength, maxLength (in Unicode code points),
 * pattern, minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf,
 * minProperties, maxProperties, allOf, anyOf, oneOf, not, if/then/else, definitions,
 * $id, $ref and boolean schemas. Numbers compare mathematically (1 == 1.0) in const,
 * enum and uniqueItems. format, title, description, default, examples and the content*
 * keywords are annotations and are not checked; other unknown keywords are ignored
 * (draft 7), except in files read by rf_schema_registry_load_dir, which refuses them.
 *
 * $ref: JSON pointers inside a schema ("#", "#/definitions/x", ~0 ~1 and %XX escapes),
 * plain-name fragments declared by "$id": "#name", and other schemas of the registry by
 * their name or $id (resolved against the enclosing $id, RFC 3986 style, without dot
 * segments), with or without a fragment. Nothing is ever fetched from a network.
 *
 * pattern and patternProperties are POSIX extended regular expressions (regcomp with
 * REG_EXTENDED), matched unanchored and bytewise: ECMA-262-only syntax (\d, \w, \s,
 * lookaround, non-greedy quantifiers, \uXXXX) is not supported. load_dir refuses a
 * pattern that uses a backslash before a letter or digit, or "(?", so our own schema
 * files cannot silently mean something else than in other validators.
 *
 * Every regex is compiled once, when its schema is added. A registry is not changed by
 * validation, so once loaded any number of threads may validate against it at once.
 */

typedef struct rf_schema_registry rf_schema_registry_t;

/* The most nested schema evaluations one validation goes through (recursive $ref,
 * deep documents); past it the document is refused. */
#define RF_SCHEMA_MAX_DEPTH 512

/* An empty registry; NULL when out of memory. */
rf_schema_registry_t *rf_schema_registry_new(void);

/* Frees the registry and the schemas it holds. Accepts NULL. */
void rf_schema_registry_destroy(rf_schema_registry_t *reg);

/*
 * Compiles schema (an object or a boolean) and registers it under name (and under its
 * "$id", resolved against name, when it has one). The registry takes its own reference
 * to schema; do not modify the schema afterwards. A $ref that no schema of the registry
 * satisfies yet stays pending until a later add brings its target; validation through a
 * still unresolved $ref fails. Errors: RF_ERR_PERM for an invalid schema (bad keyword
 * value, bad regex, duplicate name or $id).
 */
rf_err_t rf_schema_registry_add(rf_schema_registry_t *reg, const char *name, json_t *schema,
                                char *errstr, size_t errstr_size);

/*
 * Adds every "*.json" file directly inside dir (not its subfolders), in name order.
 * A schema's name is its "$id", or else the file name without ".json"; when the two
 * differ, both names are registered. Files are checked strictly: $schema (if present)
 * must be draft 7, unknown keywords and ECMA-only regex syntax are refused, and every
 * $ref must resolve once all files are in. Errors: RF_ERR_NOTFOUND when dir cannot be
 * opened or holds no schema file, RF_ERR_PERM for a bad file (named in errstr). After an
 * error the registry may hold some of the files: destroy it.
 */
rf_err_t rf_schema_registry_load_dir(rf_schema_registry_t *reg, const char *dir, char *errstr,
                                     size_t errstr_size);

/*
 * Compiles an OpenAPI 3 document as Kubernetes serves one (/openapi/v3/apis/apps/v1) and
 * registers it under name (give it a scheme, e.g. "k8s:apis/apps/v1", so that other
 * schemas can $ref "k8s:apis/apps/v1#/components/schemas/io.k8s.api.apps.v1.Deployment").
 * Its schemas are compiled when a $ref first reaches them, in the dialect of Kubernetes'
 * JSON decoding rather than draft 7:
 * - null is valid for every schema, and a required field that is null is missing (Go
 *   decodes null as the zero value);
 * - "format": "int-or-string" or "x-kubernetes-int-or-string": true accept an integer or
 *   a string whatever "type" says; "format": "int32" / "int64" bound integers, and a
 *   number with a fraction (or 1.0) is not an integer;
 * - an object schema ("type": "object") with "properties" and no "additionalProperties"
 *   refuses other fields ("unknown field"), as the API server's strict decoding does,
 *   unless it has "x-kubernetes-preserve-unknown-fields": true;
 * - "x-relfleet-message": a failure of that schema is reported in these words instead of
 *   what failed inside it (our rules of the API conventions use it).
 * Every other keyword behaves as in draft 7; other x- extensions are annotations.
 */
rf_err_t rf_schema_registry_add_openapi(rf_schema_registry_t *reg, const char *name, json_t *doc,
                                        char *errstr, size_t errstr_size);

/*
 * Validates doc against the schema registered as name. RF_OK when valid; RF_ERR_PERM
 * with the first failure, e.g. "field 'manifests[0].metadata.name': string too long
 * (300 > 253)" ("document: ..." for the top level); RF_ERR_NOTFOUND when no schema is
 * registered under name.
 */
rf_err_t rf_schema_validate(const rf_schema_registry_t *reg, const char *name, const json_t *doc,
                            char *errstr, size_t errstr_size);

/*
 * Validates doc as rf_schema_validate does, in the same single pass, but goes on after a
 * failure: each one (at most max_errors) is appended to errors (a JSON array) as
 * {"path": ["spec", "ports", 0, "port"], "field": "spec.ports[0].port", "message": "..."}
 * ("field" is "" for the document itself). RF_OK when valid; RF_ERR_PERM when at least one
 * failure was appended (errstr: the first, when errors was empty); RF_ERR_NOTFOUND for an
 * unknown name.
 */
rf_err_t rf_schema_validate_all(const rf_schema_registry_t *reg, const char *name,
                                const json_t *doc, json_t *errors, size_t max_errors,
                                char *errstr, size_t errstr_size);

#endif
