/* cache_impl.h - the store table behind cache.h (one row per store). Only src/cache/ includes it. */
#ifndef SUGGESTD_CACHE_CACHE_IMPL_H
#define SUGGESTD_CACHE_CACHE_IMPL_H

#include "cache.h"

typedef struct cache_ops {
    const char *kind;
    err (*get)(cache *c, const uint8_t key[CACHE_KEY_LEN], int *found, int *value);
    err (*set)(cache *c, const uint8_t key[CACHE_KEY_LEN], int value, int ttl_s);
    err (*rate_take)(cache *c, const uint8_t key[CACHE_KEY_LEN], int per_minute, int burst, int *allowed,
                     int64_t *retry_after_ms);
    void (*destroy)(cache *c);
} cache_ops;

/* The first member of every store's struct. */
struct cache {
    const cache_ops *ops;
};

#endif
