/* The API server's validation of kubesim: the v1 conversions, names, labels, ports, required fields (422 Invalid). */
#ifndef KS_VALIDATE_H
#define KS_VALIDATE_H

#include "ks_api.h"
#include "ks_schema.h"

/* Decodes the wire form into what is stored (a Secret's data and stringData).
 * Returns 0, or fills resp with 400 BadRequest. */
int ks_convert(ks_kind_t kind, json_t *o, ks_resp_t *resp);

/* Validates o (old: the stored version on updates, else NULL) as the API server's
 * validation of kind does. Returns 0, or fills resp with 422 Invalid and its causes. */
int ks_validate(ks_kind_t kind, const json_t *o, const json_t *old, ks_resp_t *resp);

/* The checks of k8s.io/apimachinery/pkg/util/validation: NULL when s is valid, else the
 * reason the API server gives. */
const char *ks_check_dns1123(const char *s, int subdomain); /* a label, or a subdomain */
const char *ks_check_port_name(const char *s);              /* IANA_SVC_NAME */
const char *ks_check_label_value(const char *s);
const char *ks_check_qualified_name(const char *s); /* a label key */
const char *ks_check_env_name(const char *s);

/* The fieldValidation query parameter (NULL: Warn). Returns 0, or fills resp with 400. */
int ks_fieldval_parse(const char *value, ks_fieldval_t *fv, ks_resp_t *resp);

/* The dryRun query parameter of a write whose options are opts ("CreateOptions",
 * "PatchOptions", "UpdateOptions", "DeleteOptions"): *dry is 1 for "All", 0 when absent.
 * Returns 0, or fills resp with 422 Invalid for any other value, as ValidateDryRun does. */
int ks_dryrun_parse(const char *value, const char *opts, int *dry, ks_resp_t *resp);

/* Decodes o (the object a write would store) as the API server's JSON decoder does: a
 * type error answers 400 "<Kind> in version "v1" cannot be handled as a <Kind>: json:
 * cannot unmarshal ..." with the field in details.causes; unknown fields are dropped and
 * answer as fv says (Strict: 400 strict decoding error; Warn: Warning headers in resp).
 * Returns 0, or -1 with resp filled. */
int ks_decode(const ks_schema_t *s, ks_kind_t kind, json_t *o, ks_fieldval_t fv, ks_resp_t *resp);

#endif
