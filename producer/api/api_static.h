/* The console's files, embedded in the binary at build time (embed_static.cmake). */
#ifndef API_STATIC_H
#define API_STATIC_H

#include <stddef.h>

typedef struct api_static_file {
    const char *path; /* "/index.html", "/static/app.js", "/openapi.yaml" */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
} api_static_file_t;

/* The file served at path, or NULL. */
const api_static_file_t *api_static_find(const char *path);

#endif
