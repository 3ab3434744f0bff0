/* The API server's validation of kubesim: the v1 conversions, names, labels, ports, required fields (422 Invalid). */
#ifndef KS_VALIDATE_H
#define KS_VALIDATE_H

#include "ks_api.h"

/* Decodes the wire form into what is stored (a Secret's data and stringData).
 * Returns 0, or fills resp with 400 BadRequest. */
int ks_convert(ks_kind_t kind, json_t *o, ks_resp_t *resp);

/* Validates o (old: the stored version on updates, else NULL) as the API server's
 * validation of kind does. Returns 0, or fills resp with 422 Invalid and its causes. */
int ks_validate(ks_kind_t kind, const json_t *o, const json_t *old, ks_resp_t *resp);

#endif
