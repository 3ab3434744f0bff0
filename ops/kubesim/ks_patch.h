/* Request bodies and patches: YAML to JSON, merge patch, JSON patch, and server-side apply with field ownership. */
#ifndef KS_PATCH_H
#define KS_PATCH_H

#include <jansson.h>
#include <stddef.h>

/* json_loadb(data, len, 0, error): the same value, or NULL with the same error, cheaper for
 * plain JSON (ks_json_load_plain's). New reference. */
json_t *ks_json_loadb(const char *data, size_t len, json_error_t *error);

/* The value json_loadb(data, len, 0, NULL) makes of plain JSON text (an object or array of
 * ASCII strings with the short escapes but \u, integers of up to 18 digits, no reals, no
 * key twice, up to 64 levels); NULL for anything else, which jansson's parse may take or
 * refuse. New reference. */
json_t *ks_json_load_plain(const char *data, size_t len);

/* Parses a YAML (or JSON) document into JSON, resolving plain scalars as
 * sigs.k8s.io/yaml does. NULL on error with the reason in errstr. New reference. */
json_t *ks_yaml_parse(const char *data, size_t len, char *errstr, size_t errstr_size);

/* RFC 7386 merge patch: returns the patched copy of target (new reference). With
 * strategic set, arrays of objects that carry a "name" key merge element by element,
 * as strategic merge patch does for containers, env, ports and volumes. The result may
 * share values of patch (never of target): a change to either shows in the other, so
 * patch is for reading only (or to be dropped) once patched. */
json_t *ks_merge_patch(const json_t *target, const json_t *patch, int strategic);

/* RFC 6902 JSON patch (add, remove, replace, test, move, copy). NULL on error. */
json_t *ks_json_patch(const json_t *target, const json_t *ops, char *errstr, size_t errstr_size);

/* Server-side apply of the applied configuration cfg onto live (NULL on creation) by
 * manager. Returns the merged object with metadata.managedFields updated (new reference),
 * or NULL on a conflict: then errstr holds the Kubernetes conflict message and *conflicts
 * (new reference) an array of {"manager","field"}. The merged object may share values of
 * cfg (as ks_merge_patch's of its patch) and managedFields' fieldsV1 trees of live. */
json_t *ks_apply(const json_t *live, const json_t *cfg, const char *manager,
                 const char *api_version, int force, json_t **conflicts, char *errstr,
                 size_t errstr_size);

/* Records in merged's managedFields that manager (operation Update) now owns every field
 * whose value differs from old (NULL on creation). Changes merged in place. */
void ks_apply_record_update(json_t *merged, const json_t *old, const char *manager,
                            const char *api_version);

/* Shell-style glob (*, ?) on the whole string; nonzero on a match. */
int ks_glob_match(const char *pattern, const char *s);

#endif
