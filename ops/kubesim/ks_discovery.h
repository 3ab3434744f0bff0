/* The discovery documents of kubesim: /version, /api, /apis, the groups' resources and the OpenAPI documents. */
#ifndef KS_DISCOVERY_H
#define KS_DISCOVERY_H

#include "ks_api.h"

#include <jansson.h>
#include <stddef.h>

/* The named API groups kubesim serves, each at version v1, in the order /apis lists them. */
typedef struct ks_api_group {
    const char *name;
    json_t *(*resources)(void);
    const char *openapi_hash; /* of /openapi/v3/apis/<name>/v1 */
} ks_api_group_t;

/* The group named by the len bytes of name, or NULL when kubesim does not serve it. */
const ks_api_group_t *ks_api_group_find(const char *name, size_t len);

/* Answers a GET of a discovery path (address: what clients use, as in ks_api_set_address).
 * Returns 1 when path was a discovery path and resp is filled, else 0. */
int ks_discovery_answer(const char *address, const char *path, const char *req_accept,
                        ks_resp_t *resp);

#endif
