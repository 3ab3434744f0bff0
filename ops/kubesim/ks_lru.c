/* ks_lru: a fixed-size LRU cache of 64-bit keys and names (ks_lru.h): entries in one array, a
 * doubly linked list from the most to the least recently used, and a chained hash by key. */
#include "ks_lru.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ks_lru_entry {
    uint64_t key;
    int prev, next; /* toward the more / less recently used; -1: none */
    int chain;      /* the next entry of the same bucket; -1: none */
    char name[KS_LRU_NAME];
};

struct ks_lru {
    struct ks_lru_entry *e;
    int *bucket; /* nbucket heads of chains; -1: empty */
    int cap, len, nbucket, head, tail;
};

ks_lru_t *ks_lru_new(int cap)
{
    ks_lru_t *l = calloc(1, sizeof(*l));

    if (!l)
        return NULL;
    l->cap = cap;
    l->nbucket = 2 * cap;
    l->e = calloc((size_t)cap, sizeof(*l->e));
    l->bucket = malloc((size_t)l->nbucket * sizeof(*l->bucket));
    if (!l->e || !l->bucket) {
        ks_lru_free(l);
        return NULL;
    }
    for (int i = 0; i < l->nbucket; i++)
        l->bucket[i] = -1;
    l->head = l->tail = -1;
    return l;
}

void ks_lru_free(ks_lru_t *l)
{
    if (!l)
        return;
    free(l->e);
    free(l->bucket);
    free(l);
}

int ks_lru_len(const ks_lru_t *l)
{
    return l->len;
}

static int *lru_slot(ks_lru_t *l, uint64_t key)
{
    return &l->bucket[key % (uint64_t)l->nbucket];
}

static void lru_unlink(ks_lru_t *l, int i)
{
    struct ks_lru_entry *x = &l->e[i];

    if (x->prev >= 0)
        l->e[x->prev].next = x->next;
    else
        l->head = x->next;
    if (x->next >= 0)
        l->e[x->next].prev = x->prev;
    else
        l->tail = x->prev;
}

static void lru_front(ks_lru_t *l, int i)
{
    l->e[i].prev = -1;
    l->e[i].next = l->head;
    if (l->head >= 0)
        l->e[l->head].prev = i;
    l->head = i;
    if (l->tail < 0)
        l->tail = i;
}

static int lru_find(ks_lru_t *l, uint64_t key)
{
    int i = *lru_slot(l, key);

    while (i >= 0 && l->e[i].key != key)
        i = l->e[i].chain;
    return i;
}

const char *ks_lru_get(ks_lru_t *l, uint64_t key)
{
    int i = lru_find(l, key);

    if (i < 0)
        return NULL;
    lru_unlink(l, i);
    lru_front(l, i);
    return l->e[i].name;
}

void ks_lru_put(ks_lru_t *l, uint64_t key, const char *name)
{
    int i = lru_find(l, key);

    if (i >= 0) {
        lru_unlink(l, i);
    } else {
        int *p;

        if (l->len < l->cap) {
            i = l->len++;
        } else {
            i = l->tail; /* the least recently used leaves its list and its chain */
            lru_unlink(l, i);
            for (p = lru_slot(l, l->e[i].key); *p != i; p = &l->e[*p].chain)
                ;
            *p = l->e[i].chain;
        }
        p = lru_slot(l, key);
        l->e[i].key = key;
        l->e[i].chain = *p;
        *p = i;
    }
    snprintf(l->e[i].name, sizeof(l->e[i].name), "%s", name);
    lru_front(l, i);
}
