/* kvpool.h - the KV block pool's bookkeeping on the host: which blocks are free, which are held by requests, and
 * the prefix cache (full blocks kept after their requests end, found again by the tokens that filled them).
 *
 * DESIGN: the prefix cache is a tree of blocks (a radix tree with 16-token edges, as SGLang's): a cached block is
 * keyed by (its parent block, its 16 tokens), so a lookup compares tokens exactly (no hash collision can hand a
 * request someone else's KV) and walking from the root finds the longest cached prefix of a prompt. Only leaves are
 * evicted (least recently released first), so a cached block's parent is always cached too. Shared blocks are
 * read-only by construction: a request only matches blocks before its last prompt token and writes its own blocks
 * from there on. The device memory itself is the engine's KV pool (eng_kv); this file only hands out block ids.
 * Engine thread only: no locks. */
#ifndef SUGGESTD_SCHED_KVPOOL_H
#define SUGGESTD_SCHED_KVPOOL_H

#include <stdint.h>

#include "err.h"

typedef struct kvpool kvpool;

typedef struct kvpool_stats {
    int32_t total, used, cached; /* used: held by requests (ref > 0); cached: ref 0, kept for reuse */
} kvpool_stats;

err kvpool_create(int32_t n_blocks, int32_t block_tokens, kvpool **out);
void kvpool_destroy(kvpool *p);

/* Blocks an allocation could get now: free ones plus cached ones nobody holds. */
int32_t kvpool_available(const kvpool *p);
void kvpool_get_stats(const kvpool *p, kvpool_stats *st);

/* The longest cached prefix of tokens[0 .. max_blocks * block_tokens): takes a reference on each matched block,
 * writes their ids to blocks[] in order and returns how many matched. */
int32_t kvpool_match(kvpool *p, const int32_t *tokens, int32_t max_blocks, int32_t *blocks);
/* A block for a request (reference 1), evicting the least recently used cached leaf when none is free; -1 when
 * every block is held. */
int32_t kvpool_alloc(kvpool *p);
/* Offers block (full: its block_tokens tokens are `tokens`, their KV written) to the cache as the child of parent
 * (the previous block of the same sequence, -1 for the first). Ignored when the parent is not cached or the same
 * (parent, tokens) is cached already (another request computed it too: that one stays private). */
void kvpool_publish(kvpool *p, int32_t parent, const int32_t *tokens, int32_t block);
/* Drops a reference. At zero a cached block becomes evictable, a private one free. */
void kvpool_release(kvpool *p, int32_t block);
/* Forgets every cached block nobody holds (prefix cache off, tests). */
void kvpool_flush(kvpool *p);

#endif
