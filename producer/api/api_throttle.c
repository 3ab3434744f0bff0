/* Failed authentication counted per key (client address, user) in a fixed table. */
#include "api_throttle.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define THROTTLE_WAYS 8 /* entries a key may occupy: its set */
#define THROTTLE_KEY_MAX 136

typedef struct throttle_entry {
    uint64_t hash; /* 0: free */
    char key[THROTTLE_KEY_MAX];
    int fails;            /* in the window that began at window_start */
    int level;            /* blocks so far without a success or a quiet window */
    int64_t window_start; /* of the failures counted */
    int64_t block_until;
    int64_t last_used;
} throttle_entry_t;

struct api_throttle {
    pthread_mutex_t lock;
    uint64_t seed; /* random: nobody can aim many keys at one set */
    int nsets;
    int limit, window_ms, block_ms, block_max_ms;
    throttle_entry_t *entries; /* nsets * THROTTLE_WAYS */
};

api_throttle_t *api_throttle_new(int slots, int limit, int window_ms, int block_ms,
                                 int block_max_ms)
{
    api_throttle_t *t = calloc(1, sizeof(*t));

    if (!t)
        abort();
    t->nsets = slots > THROTTLE_WAYS ? (slots + THROTTLE_WAYS - 1) / THROTTLE_WAYS : 1;
    t->entries = calloc((size_t)t->nsets * THROTTLE_WAYS, sizeof(*t->entries));
    if (!t->entries)
        abort();
    if (getrandom(&t->seed, sizeof(t->seed), 0) != (ssize_t)sizeof(t->seed))
        t->seed = (uint64_t)(uintptr_t)t ^ 0x9e3779b97f4a7c15ULL;
    t->limit = limit;
    t->window_ms = window_ms;
    t->block_ms = block_ms;
    t->block_max_ms = block_max_ms;
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void api_throttle_destroy(api_throttle_t *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t->entries);
    free(t);
}

/* FNV-1a from a random start, then a final mix; never 0 (0 marks a free entry). */
static uint64_t throttle_hash(const api_throttle_t *t, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ t->seed;

    for (const unsigned char *c = (const unsigned char *)key; *c; c++) {
        h ^= *c;
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h ? h : 1;
}

/* The key's entry, or NULL when it has none and create is 0. With create, a free entry of
 * its set, or the one used least recently (preferring one not blocked at now). */
static throttle_entry_t *throttle_find(api_throttle_t *t, const char *key, int64_t now, int create)
{
    uint64_t h = throttle_hash(t, key);
    throttle_entry_t *set = t->entries + (size_t)(h % (uint64_t)t->nsets) * THROTTLE_WAYS;
    throttle_entry_t *victim = NULL;

    for (int i = 0; i < THROTTLE_WAYS; i++) {
        throttle_entry_t *e = &set[i];
        if (e->hash == h && strncmp(e->key, key, sizeof(e->key) - 1) == 0)
            return e;
    }
    if (!create)
        return NULL;
    for (int i = 0; i < THROTTLE_WAYS; i++) {
        throttle_entry_t *e = &set[i];
        int blocked = e->block_until > now, victim_blocked;
        if (!e->hash) {
            victim = e;
            break;
        }
        if (!victim) {
            victim = e;
            continue;
        }
        victim_blocked = victim->block_until > now;
        if (blocked != victim_blocked ? !blocked
            : blocked                 ? e->block_until < victim->block_until
                                      : e->last_used < victim->last_used)
            victim = e;
    }
    memset(victim, 0, sizeof(*victim));
    victim->hash = h;
    snprintf(victim->key, sizeof(victim->key), "%s", key);
    return victim;
}

/* A key quiet for a window after its last failure or the end of its block starts over;
 * failures older than a window are forgotten. */
static void throttle_expire(const api_throttle_t *t, throttle_entry_t *e, int64_t now)
{
    int64_t quiet_since = e->last_used > e->block_until ? e->last_used : e->block_until;

    if (e->level > 0 && now - quiet_since >= t->window_ms)
        e->level = 0;
    if (now - e->window_start >= t->window_ms) {
        e->fails = 0;
        e->window_start = now;
    }
}

int64_t api_throttle_blocked(api_throttle_t *t, const char *key, int64_t now_ms)
{
    throttle_entry_t *e;
    int64_t left = 0;

    pthread_mutex_lock(&t->lock);
    e = throttle_find(t, key, now_ms, 0);
    if (e && e->block_until > now_ms)
        left = e->block_until - now_ms;
    pthread_mutex_unlock(&t->lock);
    return left;
}

int64_t api_throttle_fail(api_throttle_t *t, const char *key, int64_t now_ms, int *fails,
                          int *blocks)
{
    throttle_entry_t *e;
    int64_t block = 0;

    pthread_mutex_lock(&t->lock);
    e = throttle_find(t, key, now_ms, 1);
    if (e->block_until > now_ms) {
        /* Checked by another thread before the block began: the block stands as it is. */
        *fails = t->limit;
        *blocks = e->level;
        goto out;
    }
    if (!e->window_start)
        e->window_start = now_ms;
    throttle_expire(t, e, now_ms);
    e->fails++;
    e->last_used = now_ms;
    *fails = e->fails;
    *blocks = 0;
    /* The limit reached, or the first failure after a block: a block, twice the last. */
    if (e->fails >= t->limit || e->level > 0) {
        block = t->block_ms;
        for (int i = 0; i < e->level && block < t->block_max_ms; i++)
            block *= 2;
        if (block > t->block_max_ms)
            block = t->block_max_ms;
        e->block_until = now_ms + block;
        *blocks = ++e->level;
        e->fails = 0;
        e->window_start = now_ms;
    }
out:
    pthread_mutex_unlock(&t->lock);
    return block;
}

void api_throttle_success(api_throttle_t *t, const char *key)
{
    throttle_entry_t *e;

    pthread_mutex_lock(&t->lock);
    e = throttle_find(t, key, 0, 0);
    if (e)
        memset(e, 0, sizeof(*e));
    pthread_mutex_unlock(&t->lock);
}
