/* The HTTP server of relfleet-api and its pool of PostgreSQL connections. */
#ifndef API_SERVER_H
#define API_SERVER_H

#include <microhttpd.h>

#include "api.h"

/* Starts serving on the listening socket fd, one thread per connection. */
struct MHD_Daemon *api_server_start(api_t *api, int fd);

/* A connection of the pool (waits up to 10 s for one; NULL then) and its return. */
rf_db_t *api_db_borrow(api_t *api);
void api_db_return(api_t *api, rf_db_t *db);

#endif
