/* kvpool.c - block pool and prefix-cache tree (see kvpool.h). */
#include "kvpool.h"

#include <string.h>

#include "alloc.h"

typedef struct node {
    uint64_t stamp; /* pool clock when last released: the LRU's order */
    int32_t ref;
    int32_t parent;     /* cached: the block before it (-1: first block of a prompt) */
    int32_t n_children; /* cached children */
    int32_t hnext;      /* hash chain */
    int32_t lprev, lnext; /* LRU list of evictable leaves */
    uint8_t cached, in_lru;
} node;

struct kvpool {
    int32_t n, bt; /* blocks, tokens per block */
    node *nodes;
    int32_t *tokens; /* [n * bt]: a cached block's tokens */
    int32_t *free_ids, n_free;
    int32_t *heads; /* hash buckets, hmask + 1 of them */
    uint32_t hmask;
    int32_t lru_head, lru_tail; /* head: released last; tail: evicted first; ordered by stamp */
    uint64_t clock;
    int32_t n_cached, n_cached_unref;
};

static uint32_t key_hash(const kvpool *p, int32_t parent, const int32_t *tokens) {
    uint64_t h = 1469598103934665603ull ^ (uint32_t)parent;
    for (int32_t i = 0; i < p->bt; i++) h = (h ^ (uint32_t)tokens[i]) * 1099511628211ull;
    return (uint32_t)(h ^ h >> 32) & p->hmask;
}

static int32_t find(const kvpool *p, int32_t parent, const int32_t *tokens) {
    for (int32_t id = p->heads[key_hash(p, parent, tokens)]; id >= 0; id = p->nodes[id].hnext)
        if (p->nodes[id].parent == parent && !memcmp(p->tokens + (size_t)id * p->bt, tokens, (size_t)p->bt * 4))
            return id;
    return -1;
}

static void lru_remove(kvpool *p, int32_t id) {
    node *x = &p->nodes[id];
    if (x->lprev >= 0) p->nodes[x->lprev].lnext = x->lnext;
    else p->lru_head = x->lnext;
    if (x->lnext >= 0) p->nodes[x->lnext].lprev = x->lprev;
    else p->lru_tail = x->lprev;
    x->lprev = x->lnext = -1;
    x->in_lru = 0;
}

static void lru_push(kvpool *p, int32_t id, int at_head) {
    node *x = &p->nodes[id];
    x->in_lru = 1;
    if (at_head) {
        x->lprev = -1;
        x->lnext = p->lru_head;
        if (p->lru_head >= 0) p->nodes[p->lru_head].lprev = id;
        else p->lru_tail = id;
        p->lru_head = id;
    } else {
        x->lnext = -1;
        x->lprev = p->lru_tail;
        if (p->lru_tail >= 0) p->nodes[p->lru_tail].lnext = id;
        else p->lru_head = id;
        p->lru_tail = id;
    }
}

/* A block that became an evictable leaf because its last child was evicted goes where its own last release puts it,
 * not at either end: a shared prefix that is matched often (each time refreshing its stamp) but whose cached child
 * went cold must outlive that child's neighbours. Walks from the cold end; parents are usually old, so it is short. */
static void lru_insert_by_stamp(kvpool *p, int32_t id) {
    int32_t cur = p->lru_tail;
    while (cur >= 0 && p->nodes[cur].stamp < p->nodes[id].stamp) cur = p->nodes[cur].lprev;
    if (cur < 0) {
        lru_push(p, id, 1);
        return;
    }
    node *x = &p->nodes[id], *c = &p->nodes[cur];
    x->in_lru = 1;
    x->lprev = cur;
    x->lnext = c->lnext;
    if (c->lnext >= 0) p->nodes[c->lnext].lprev = id;
    else p->lru_tail = id;
    c->lnext = id;
}

err kvpool_create(int32_t n_blocks, int32_t block_tokens, kvpool **out) {
    *out = NULL;
    if (n_blocks <= 0 || block_tokens <= 0) return ERR_INVALID;
    kvpool *p = xcalloc(1, sizeof(*p));
    if (!p) return ERR_NOMEM;
    p->n = n_blocks;
    p->bt = block_tokens;
    uint32_t hs = 16;
    while (hs < 2u * (uint32_t)n_blocks) hs *= 2;
    p->hmask = hs - 1;
    p->nodes = xcalloc((size_t)n_blocks, sizeof(node));
    p->tokens = xmalloc_array((size_t)n_blocks * (size_t)block_tokens, sizeof(int32_t));
    p->free_ids = xmalloc_array((size_t)n_blocks, sizeof(int32_t));
    p->heads = xmalloc_array(hs, sizeof(int32_t));
    if (!p->nodes || !p->tokens || !p->free_ids || !p->heads) {
        kvpool_destroy(p);
        return ERR_NOMEM;
    }
    for (uint32_t i = 0; i < hs; i++) p->heads[i] = -1;
    /* free ids popped from the end: hand out low ids first (tests read them, the CPU cache likes them) */
    for (int32_t i = 0; i < n_blocks; i++) {
        p->free_ids[i] = n_blocks - 1 - i;
        p->nodes[i] = (node){.parent = -1, .hnext = -1, .lprev = -1, .lnext = -1};
    }
    p->n_free = n_blocks;
    p->lru_head = p->lru_tail = -1;
    *out = p;
    return ERR_OK;
}

void kvpool_destroy(kvpool *p) {
    if (!p) return;
    xfree(p->nodes);
    xfree(p->tokens);
    xfree(p->free_ids);
    xfree(p->heads);
    xfree(p);
}

int32_t kvpool_available(const kvpool *p) { return p->n_free + p->n_cached_unref; }

void kvpool_get_stats(const kvpool *p, kvpool_stats *st) {
    st->total = p->n;
    st->cached = p->n_cached_unref;
    st->used = p->n - p->n_free - p->n_cached_unref;
}

int32_t kvpool_match(kvpool *p, const int32_t *tokens, int32_t max_blocks, int32_t *blocks) {
    int32_t parent = -1, b = 0;
    for (; b < max_blocks; b++) {
        int32_t id = find(p, parent, tokens + (size_t)b * p->bt);
        if (id < 0) break;
        node *x = &p->nodes[id];
        if (x->ref++ == 0) {
            p->n_cached_unref--;
            if (x->in_lru) lru_remove(p, id);
        }
        blocks[b] = parent = id;
    }
    return b;
}

/* Drops the least recently released cached leaf from the cache; its parent may become a leaf, evicted next. */
static int32_t evict(kvpool *p) {
    int32_t id = p->lru_tail;
    if (id < 0) return -1;
    node *x = &p->nodes[id];
    lru_remove(p, id);
    int32_t *link = &p->heads[key_hash(p, x->parent, p->tokens + (size_t)id * p->bt)];
    while (*link != id) link = &p->nodes[*link].hnext;
    *link = x->hnext;
    if (x->parent >= 0) {
        node *up = &p->nodes[x->parent];
        if (--up->n_children == 0 && up->ref == 0) lru_insert_by_stamp(p, x->parent);
    }
    *x = (node){.parent = -1, .hnext = -1, .lprev = -1, .lnext = -1};
    p->n_cached--;
    p->n_cached_unref--;
    return id;
}

int32_t kvpool_alloc(kvpool *p) {
    int32_t id = p->n_free > 0 ? p->free_ids[--p->n_free] : evict(p);
    if (id >= 0) p->nodes[id].ref = 1;
    return id;
}

void kvpool_publish(kvpool *p, int32_t parent, const int32_t *tokens, int32_t block) {
    node *x = &p->nodes[block];
    if (x->cached || x->ref <= 0 || (parent >= 0 && !p->nodes[parent].cached) || find(p, parent, tokens) >= 0) return;
    memcpy(p->tokens + (size_t)block * p->bt, tokens, (size_t)p->bt * 4);
    x->cached = 1;
    x->parent = parent;
    uint32_t h = key_hash(p, parent, tokens);
    x->hnext = p->heads[h];
    p->heads[h] = block;
    if (parent >= 0) p->nodes[parent].n_children++;
    p->n_cached++;
}

void kvpool_release(kvpool *p, int32_t block) {
    node *x = &p->nodes[block];
    if (x->ref <= 0) return; /* a bug upstream; never corrupt the lists over it */
    if (--x->ref > 0) return;
    if (!x->cached) {
        x->parent = -1;
        p->free_ids[p->n_free++] = block;
        return;
    }
    p->n_cached_unref++;
    x->stamp = ++p->clock;
    if (x->n_children == 0) lru_push(p, block, 1);
}

void kvpool_flush(kvpool *p) {
    int32_t id;
    while ((id = evict(p)) >= 0) p->free_ids[p->n_free++] = id;
}
