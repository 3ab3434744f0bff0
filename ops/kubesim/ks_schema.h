/* The Kubernetes schema of the kinds kubesim serves (schema.json from ops/kubesim/gen-schema): decoding checks and OpenAPI documents. */
#ifndef KS_SCHEMA_H
#define KS_SCHEMA_H

#include "ks_store.h"
#include "rf_buf.h"

#include <jansson.h>

typedef struct ks_schema ks_schema_t;

/* The fieldValidation query parameter: what an unknown field does. */
typedef enum ks_fieldval {
    KS_FV_WARN = 0, /* the API server's default: a Warning header, the field dropped */
    KS_FV_STRICT,   /* 400 strict decoding error */
    KS_FV_IGNORE,   /* dropped silently */
} ks_fieldval_t;

/* What one decoding found. */
typedef struct ks_decode {
    char error[1024];  /* the first type error ("json: cannot unmarshal ..."), "" for none */
    char error_field[512]; /* its path with indices: spec.template.spec.containers[0].image */
    json_t *unknown;   /* paths of the unknown fields, in document order (array of strings) */
} ks_decode_t;

/* Parses the schema document text (the generated schema.json). NULL with errstr on error. */
ks_schema_t *ks_schema_parse(const char *text, size_t len, char *errstr, size_t errstr_size);
/* The schema built into kubesim (parsed once, on first use; NULL if it does not parse). */
const ks_schema_t *ks_schema_builtin(void);
void ks_schema_destroy(ks_schema_t *s);

/* "python3-kubernetes 22.6.0 (API 1.22)" */
const char *ks_schema_source(const ks_schema_t *s);

/* Checks o, an object of kind, against its Go types in one pass, as the API server's JSON
 * decoder does: the first type error, and every unknown field, which is removed from o
 * (its subtrees that carry one must not be shared). d->unknown is a new reference the
 * caller releases. Returns 0 when there is no type error. */
int ks_schema_decode(const ks_schema_t *s, ks_kind_t kind, json_t *o, ks_decode_t *d);

/* The OpenAPI v3 schemas (components.schemas) of the kinds of group ("" for the core
 * group) and every type they use (new reference). */
json_t *ks_schema_openapi_v3(const ks_schema_t *s, const char *group);
/* The OpenAPI v2 definitions of every kind (new reference). */
json_t *ks_schema_openapi_v2(const ks_schema_t *s);

#endif
