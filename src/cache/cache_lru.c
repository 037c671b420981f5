/* cache_lru.c - a bounded LRU with per-entry expiry, and the local store built on it.
 *
 * DESIGN: all entries are allocated up front (max_entries nodes in one array) and threaded on a free list, so a
 * put never allocates and the memory bound is fixed at startup. A chained hash table (power-of-two buckets, twice
 * the entries) indexes them; the keys are HMAC outputs, already uniform, so the hash is their first 8 bytes. One
 * doubly linked list orders entries by use; a full table evicts the tail. One mutex guards it all: an operation is
 * a hash probe and a few pointer moves, far below the cost of the request it serves.
 *
 * Expired entries are dropped when found; until then they hold a slot and are evicted like any other. */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cache_impl.h"

typedef struct lru_node {
    uint8_t key[CACHE_KEY_LEN];
    int64_t expires_ms;
    int value;
    double tokens; /* rate-limit buckets: tokens left at last_ms */
    int64_t last_ms;
    struct lru_node *prev, *next; /* use order (head = most recent) or the free list (next only) */
    struct lru_node *hnext;       /* hash chain */
} lru_node;

struct cache_lru {
    pthread_mutex_t mu;
    lru_node *nodes, *free_list, *head, *tail;
    lru_node **buckets;
    size_t mask, size, max;
};

int64_t cache_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

err cache_lru_create(size_t max_entries, cache_lru **out) {
    *out = NULL;
    if (max_entries == 0 || max_entries > ((size_t)1 << 28)) return ERR_INVALID;
    cache_lru *l = xcalloc(1, sizeof(*l));
    if (!l) return ERR_NOMEM;
    size_t nb = 16;
    while (nb < 2 * max_entries) nb *= 2;
    l->nodes = xcalloc(max_entries, sizeof(lru_node));
    l->buckets = xcalloc(nb, sizeof(lru_node *));
    if (!l->nodes || !l->buckets) {
        xfree(l->nodes);
        xfree(l->buckets);
        xfree(l);
        return ERR_NOMEM;
    }
    l->mask = nb - 1;
    l->max = max_entries;
    for (size_t i = 0; i < max_entries; i++) l->nodes[i].next = i + 1 < max_entries ? &l->nodes[i + 1] : NULL;
    l->free_list = l->nodes;
    pthread_mutex_init(&l->mu, NULL);
    *out = l;
    return ERR_OK;
}

void cache_lru_destroy(cache_lru *l) {
    if (!l) return;
    pthread_mutex_destroy(&l->mu);
    xfree(l->nodes);
    xfree(l->buckets);
    xfree(l);
}

static size_t hash_of(const cache_lru *l, const uint8_t *key) {
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    h ^= h >> 29; /* keys are HMACs, but tests use patterned keys: mix a little */
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (size_t)h & l->mask;
}

static void list_unlink(cache_lru *l, lru_node *n) {
    if (n->prev) n->prev->next = n->next;
    else l->head = n->next;
    if (n->next) n->next->prev = n->prev;
    else l->tail = n->prev;
    n->prev = n->next = NULL;
}

static void list_push_front(cache_lru *l, lru_node *n) {
    n->prev = NULL;
    n->next = l->head;
    if (l->head) l->head->prev = n;
    l->head = n;
    if (!l->tail) l->tail = n;
}

static lru_node *find(cache_lru *l, const uint8_t *key) {
    for (lru_node *n = l->buckets[hash_of(l, key)]; n; n = n->hnext)
        if (!memcmp(n->key, key, CACHE_KEY_LEN)) return n;
    return NULL;
}

static void remove_node(cache_lru *l, lru_node *n) {
    lru_node **pp = &l->buckets[hash_of(l, n->key)];
    while (*pp != n) pp = &(*pp)->hnext;
    *pp = n->hnext;
    list_unlink(l, n);
    n->next = l->free_list;
    l->free_list = n;
    l->size--;
}

/* A node for key: the existing one (moved to the front) or a fresh one (evicting the tail when full). */
static lru_node *node_for(cache_lru *l, const uint8_t *key, int *fresh) {
    lru_node *n = find(l, key);
    *fresh = 0;
    if (n) {
        list_unlink(l, n);
        list_push_front(l, n);
        return n;
    }
    if (!l->free_list) remove_node(l, l->tail);
    n = l->free_list;
    l->free_list = n->next;
    memset(n, 0, sizeof(*n));
    memcpy(n->key, key, CACHE_KEY_LEN);
    size_t b = hash_of(l, key);
    n->hnext = l->buckets[b];
    l->buckets[b] = n;
    list_push_front(l, n);
    l->size++;
    *fresh = 1;
    return n;
}

int cache_lru_get(cache_lru *l, const uint8_t key[CACHE_KEY_LEN], int64_t now_ms, int *value) {
    pthread_mutex_lock(&l->mu);
    lru_node *n = find(l, key);
    int hit = 0;
    if (n && n->expires_ms <= now_ms) remove_node(l, n);
    else if (n) {
        list_unlink(l, n);
        list_push_front(l, n);
        *value = n->value;
        hit = 1;
    }
    pthread_mutex_unlock(&l->mu);
    return hit;
}

void cache_lru_put(cache_lru *l, const uint8_t key[CACHE_KEY_LEN], int value, int64_t expires_ms) {
    pthread_mutex_lock(&l->mu);
    int fresh;
    lru_node *n = node_for(l, key, &fresh);
    n->value = value;
    n->expires_ms = expires_ms;
    pthread_mutex_unlock(&l->mu);
}

void cache_lru_rate_take(cache_lru *l, const uint8_t key[CACHE_KEY_LEN], int64_t now_ms, int per_minute, int burst,
                         int *allowed, int64_t *retry_after_ms) {
    double rate = (double)per_minute / 60000.0; /* tokens per ms */
    pthread_mutex_lock(&l->mu);
    int fresh;
    lru_node *n = node_for(l, key, &fresh);
    if (fresh || n->expires_ms <= now_ms) {
        n->tokens = burst;
        n->last_ms = now_ms;
    }
    double t = n->tokens + (double)(now_ms - n->last_ms) * rate;
    if (t > burst) t = burst;
    if (t >= 1.0) {
        *allowed = 1;
        *retry_after_ms = 0;
        t -= 1.0;
    } else {
        *allowed = 0;
        *retry_after_ms = (int64_t)((1.0 - t) / rate) + 1;
    }
    n->tokens = t;
    n->last_ms = now_ms;
    /* a bucket that would be full again carries no information: let it expire then */
    n->expires_ms = now_ms + (int64_t)((double)burst / rate) + 1000;
    pthread_mutex_unlock(&l->mu);
}

size_t cache_lru_size(cache_lru *l) {
    pthread_mutex_lock(&l->mu);
    size_t n = l->size;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* --- the local store ------------------------------------------------------------------------------------------- */

typedef struct local_store {
    cache base;
    cache_lru *decisions, *buckets;
} local_store;

static err local_get(cache *c, const uint8_t key[CACHE_KEY_LEN], int *found, int *value) {
    *found = cache_lru_get(((local_store *)c)->decisions, key, cache_now_ms(), value);
    return ERR_OK;
}

static err local_set(cache *c, const uint8_t key[CACHE_KEY_LEN], int value, int ttl_s) {
    cache_lru_put(((local_store *)c)->decisions, key, value, cache_now_ms() + (int64_t)ttl_s * 1000);
    return ERR_OK;
}

static err local_rate_take(cache *c, const uint8_t key[CACHE_KEY_LEN], int per_minute, int burst, int *allowed,
                           int64_t *retry_after_ms) {
    cache_lru_rate_take(((local_store *)c)->buckets, key, cache_now_ms(), per_minute, burst, allowed, retry_after_ms);
    return ERR_OK;
}

static void local_destroy(cache *c) {
    local_store *s = (local_store *)c;
    cache_lru_destroy(s->decisions);
    cache_lru_destroy(s->buckets);
    xfree(s);
}

static const cache_ops local_ops = {"local", local_get, local_set, local_rate_take, local_destroy};

err cache_local_create(size_t max_entries, cache **out, errbuf *eb) {
    *out = NULL;
    local_store *s = xcalloc(1, sizeof(*s));
    if (!s) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    s->base.ops = &local_ops;
    err rc = cache_lru_create(max_entries, &s->decisions);
    if (rc == ERR_OK) rc = cache_lru_create(max_entries, &s->buckets);
    if (rc != ERR_OK) {
        local_destroy(&s->base);
        return errbuf_set(eb, rc, "local auth cache of %zu entries: %s", max_entries, err_name(rc));
    }
    *out = &s->base;
    return ERR_OK;
}

/* --- the interface --------------------------------------------------------------------------------------------- */

void cache_destroy(cache *c) {
    if (c) c->ops->destroy(c);
}

const char *cache_kind(const cache *c) { return c->ops->kind; }

err cache_get(cache *c, const uint8_t key[CACHE_KEY_LEN], int *found, int *value) {
    *found = 0;
    return c->ops->get(c, key, found, value);
}

err cache_set(cache *c, const uint8_t key[CACHE_KEY_LEN], int value, int ttl_s) {
    if (ttl_s <= 0) return ERR_OK;
    return c->ops->set(c, key, value, ttl_s);
}

err cache_rate_take(cache *c, const uint8_t key[CACHE_KEY_LEN], int per_minute, int burst, int *allowed,
                    int64_t *retry_after_ms) {
    *allowed = 1;
    *retry_after_ms = 0;
    if (per_minute <= 0) return ERR_OK;
    if (burst <= 0) burst = per_minute;
    return c->ops->rate_take(c, key, per_minute, burst, allowed, retry_after_ms);
}
