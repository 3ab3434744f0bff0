/* Server-side printing: meta.k8s.io/v1 Table responses with the columns kubectl shows for each kind. */
#ifndef KS_PRINT_H
#define KS_PRINT_H

#include "ks_store.h"

#include <jansson.h>

/* The column definitions of a kind (new reference). */
json_t *ks_print_columns(ks_kind_t kind);

/* One Table row for obj (new reference); include_object: "None", "Metadata" or "Object". */
json_t *ks_print_row(ks_kind_t kind, const json_t *obj, const char *include_object, int64_t now_ms);

/* Kubernetes' HumanDuration: "5s", "3m2s", "4h", "2d3h", ... */
void ks_print_duration(int64_t ms, char *out, size_t out_size);

#endif
