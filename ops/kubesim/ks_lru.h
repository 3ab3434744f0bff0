/* ks_lru: the event recorder's cache of the events recorded last (client-go's EventLogger keeps
 * them in an LRU cache of maxLruCacheEntries): a fixed number of entries, each a 64-bit key and
 * the name of the Event it stands for; when full, the least recently used goes. */
#ifndef KS_LRU_H
#define KS_LRU_H

#include <stdint.h>

#define KS_LRU_NAME 300

typedef struct ks_lru ks_lru_t;

/* A cache of cap entries (cap > 0); NULL when out of memory. */
ks_lru_t *ks_lru_new(int cap);
void ks_lru_free(ks_lru_t *l);
/* The name kept for key, made the most recently used; NULL when key is not kept. */
const char *ks_lru_get(ks_lru_t *l, uint64_t key);
/* Keeps name for key as the most recently used, replacing the key's name if it is kept, else
 * taking a free entry or the least recently used one. */
void ks_lru_put(ks_lru_t *l, uint64_t key, const char *name);
/* How many keys are kept. */
int ks_lru_len(const ks_lru_t *l);

#endif
