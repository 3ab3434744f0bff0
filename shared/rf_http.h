/* The worker's observability endpoint: /metrics, /healthz and /readyz over HTTP (libmicrohttpd). */
#ifndef RF_HTTP_H
#define RF_HTTP_H

#include <stddef.h>

#include "rf_buf.h"
#include "rf_err.h"

typedef struct rf_http rf_http_t;

/* Answers /readyz: 1 when ready, 0 when not, with one line per reason added to why.
 * Called on the server's thread, so it must only read state guarded for that. */
typedef int (*rf_http_ready_fn)(void *arg, rf_buf_t *why);

/* Listens on addr ("host:port", "[v6addr]:port"; port 0 = any free one) and serves
 *   GET /metrics  the registry of rf_metrics in the Prometheus text format,
 *   GET /healthz  200 while the process runs,
 *   GET /readyz   200 when ready() says so (NULL = always), 503 with the reasons otherwise.
 * RF_ERR_PERM-style failure (NULL, errstr filled) when addr is bad or cannot be bound. */
rf_http_t *rf_http_new(const char *addr, rf_http_ready_fn ready, void *arg, char *errstr,
                       size_t errstr_size);

/* Binds a listening socket (SO_REUSEADDR, close-on-exec) to "host:port" or
 * "[v6addr]:port" (empty host: every address; port 0: any free one). what names the
 * address in errors ("metrics", "listen"). *v6 tells the family and *port the port bound
 * (either may be NULL). -1 with errstr filled on a bad address or a failed bind. */
int rf_http_listen(const char *addr, const char *what, int *v6, int *port, char *errstr,
                   size_t errstr_size);

/* The port listened on (useful after port 0). */
int rf_http_port(const rf_http_t *h);

/* Writes "host:port" (the host of addr, 0.0.0.0 when empty, and the port bound) and a
 * newline to path, through a temporary file and a rename, so a reader never sees half of
 * it. -1 with errno set when it cannot. */
int rf_http_write_addr(const char *path, const char *addr, int port);

/* Stops serving and frees; accepts NULL. */
void rf_http_destroy(rf_http_t *h);

#endif
