/* Docker Registry HTTP API v2 client (Docker Distribution, Harbor): the tags of a repository. */
#ifndef RF_REGISTRY_H
#define RF_REGISTRY_H

#include <jansson.h>
#include <stddef.h>

#include "rf_err.h"

/* The repository path of an image reference without its registry host:
 * "registry.example.com:5000/team/web" -> "team/web", "team/web" -> "team/web"
 * (a first component with '.' or ':', or "localhost", is a host). Into out of size bytes. */
void rf_registry_repository(const char *image_repo, char *out, size_t size);

/* Lists the tags of repository at the registry whose API is at base_url (e.g.
 * "https://harbor.example.com", no trailing /v2). Authenticates as the server asks
 * (WWW-Authenticate): Basic with user/password, or Bearer through its token service
 * (the password then goes to the token realm only); both NULL for anonymous access.
 * Follows the Link pagination. *tags gets a new array of strings, sorted as the server
 * sent them. RF_ERR_NOTFOUND for an unknown repository, RF_ERR_PERM for refused
 * credentials or a malformed answer, RF_ERR_RETRY when the server cannot be reached. */
rf_err_t rf_registry_tags(const char *base_url, const char *repository, const char *user,
                          const char *password, long timeout_ms, json_t **tags, char *errstr,
                          size_t errstr_size);

#endif
