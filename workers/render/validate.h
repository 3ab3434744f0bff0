/* The render stage's check of rendered manifests against the target cluster's schema. */
#ifndef RF_RENDER_VALIDATE_H
#define RF_RENDER_VALIDATE_H

#include <jansson.h>

#include "rf_render.h"
#include "worker.h"

typedef struct render_validator render_validator_t;

render_validator_t *render_validator_new(rf_worker_t *w);

/* Accepts NULL. */
void render_validator_destroy(render_validator_t *v);

/*
 * Checks manifests (a render of tpl with values, for a service of env whose `cluster`
 * setting is service_cluster, NULL when unset) as setting render_validation says, against
 * the schema of that cluster (else the `clusters` entry of env, else the default context),
 * cached per cluster
 * and version; without a kubeconfig, or when the cluster serves no /openapi/v3, the
 * built-in one. Returns:
 * - RF_OK: valid, not checked (off), or checked in warn mode: then *warnings gets the
 *   errors as text (free() it; NULL when there are none);
 * - RF_ERR_PERM: invalid (strict); reason gets "invalid manifests from template 'T' ...",
 *   naming each error with its field path, rendered value and template line;
 * - RF_ERR_RETRY: the cluster could not be reached for its schema (errstr says why).
 */
rf_err_t render_validate(render_validator_t *v, const rf_render_template_t *tpl,
                         const char *template_id, const json_t *values, const json_t *manifests,
                         const char *env, const char *service_cluster, char **warnings,
                         char *reason, size_t reason_size, char *errstr, size_t errstr_size);

#endif
