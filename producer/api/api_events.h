/* Subscriptions to the changes of one release, woken by PostgreSQL's NOTIFY. */
#ifndef API_EVENTS_H
#define API_EVENTS_H

#include "api.h"

typedef struct api_sub api_sub_t;

/* Subscribes to release_id's changes (subscribe first, then read: nothing is missed). */
api_sub_t *api_hub_subscribe(api_hub_t *hub, const char *release_id);
void api_hub_unsubscribe(api_hub_t *hub, api_sub_t *sub);

/* The count of changes seen so far. */
unsigned api_sub_generation(api_sub_t *sub);

/* Waits until the generation differs from *seen (then updates it), the server stops, or
 * timeout_ms pass; returns the milliseconds waited. */
int api_sub_wait(api_sub_t *sub, unsigned *seen, int timeout_ms);

#endif
