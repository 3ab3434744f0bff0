/* Failed authentication counted per key (client address, user) in a fixed table. */
#ifndef API_THROTTLE_H
#define API_THROTTLE_H

#include <stdint.h>

typedef struct api_throttle api_throttle_t;

/* A table of `slots` keys (rounded up to a multiple of its set size). After `limit`
 * failures of a key within window_ms, the key is blocked for block_ms; every further
 * failure after a block doubles it, up to block_max_ms; a key quiet for window_ms after
 * its block ended starts over. When the table is full, the key used least recently (one
 * not blocked, if any) makes room. Thread safe. */
api_throttle_t *api_throttle_new(int slots, int limit, int window_ms, int block_ms,
                                 int block_max_ms);
void api_throttle_destroy(api_throttle_t *t); /* accepts NULL */

/* Milliseconds left of key's block at now_ms; 0 when it is not blocked. */
int64_t api_throttle_blocked(api_throttle_t *t, const char *key, int64_t now_ms);

/* Records a failure of key. Returns the block it starts (ms; 0: none), sets *fails to the
 * failures counted in the current window and *blocks to the blocks in a row so far (this
 * one included; 0 when none started). */
int64_t api_throttle_fail(api_throttle_t *t, const char *key, int64_t now_ms, int *fails,
                          int *blocks);

/* A success of key: it starts over (no failures, no block, no growth). */
void api_throttle_success(api_throttle_t *t, const char *key);

#endif
