/* cache.h - the auth decision cache and rate-limit buckets: one small interface, two stores.
 *
 *   local  a bounded, thread-safe LRU with per-entry expiry (the process's own memory)
 *   redis  hiredis with a connection pool, timeouts and reconnect with backoff (shared by replicas)
 *
 * Keys are CACHE_KEY_LEN opaque bytes (the caller passes an HMAC of the token, never the token itself); values are
 * small integers. A store that fails (Redis down, timeout) returns ERR_IO at once: the caller decides what a failure
 * means (auth treats it as a miss and asks GitLab; it never lets anyone in because a store failed).
 *
 * Every function is thread-safe. The lower-level LRU (cache_lru_*) takes the time as an argument so its tests can
 * move the clock. */
#ifndef SUGGESTD_CACHE_CACHE_H
#define SUGGESTD_CACHE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define CACHE_KEY_LEN 32

typedef struct cache cache;

typedef struct cache_redis_config {
    const char *url;      /* redis://[[user]:pass@]host[:port][/db]; overrides host/port/password/db when set */
    const char *host;     /* default "127.0.0.1" */
    int port;             /* default 6379 */
    const char *password; /* NULL = no AUTH */
    int db;
    int timeout_ms;       /* connect and command timeout; default 200 */
    int pool_size;        /* connections; default 8 */
} cache_redis_config;

/* The local store: at most max_entries decisions and as many rate-limit buckets (least recently used go first). */
err cache_local_create(size_t max_entries, cache **out, errbuf *eb);
/* The Redis store. Parses the configuration (ERR_INVALID for a bad URL) and tries one connection; an unreachable
 * server is not an error here (a warning is logged; calls fail with ERR_IO until it comes back). */
err cache_redis_create(const cache_redis_config *cfg, cache **out, errbuf *eb);
void cache_destroy(cache *c);

/* "local" or "redis". */
const char *cache_kind(const cache *c);

/* Looks key up: ERR_OK with *found (and *value when found); ERR_IO when the store failed. */
err cache_get(cache *c, const uint8_t key[CACHE_KEY_LEN], int *found, int *value);
/* Stores value for ttl_s seconds (> 0). ERR_IO when the store failed. */
err cache_set(cache *c, const uint8_t key[CACHE_KEY_LEN], int value, int ttl_s);
/* Token bucket: refills per_minute tokens a minute up to burst; takes one. *allowed = 1 when a token was taken,
 * else 0 and *retry_after_ms says when the next one comes. ERR_IO when the store failed. */
err cache_rate_take(cache *c, const uint8_t key[CACHE_KEY_LEN], int per_minute, int burst, int *allowed,
                    int64_t *retry_after_ms);

/* --- the LRU under the local store (public for tests and for auth's local fallback) ----------------------- */
typedef struct cache_lru cache_lru;

err cache_lru_create(size_t max_entries, cache_lru **out);
void cache_lru_destroy(cache_lru *l);
/* 1 and *value when key is present and not expired at now_ms (and marks it recently used), else 0. */
int cache_lru_get(cache_lru *l, const uint8_t key[CACHE_KEY_LEN], int64_t now_ms, int *value);
/* Inserts or replaces; evicts the least recently used entry when full. */
void cache_lru_put(cache_lru *l, const uint8_t key[CACHE_KEY_LEN], int value, int64_t expires_ms);
/* The token bucket of cache_rate_take on an LRU entry (now_ms from the caller). */
void cache_lru_rate_take(cache_lru *l, const uint8_t key[CACHE_KEY_LEN], int64_t now_ms, int per_minute, int burst,
                         int *allowed, int64_t *retry_after_ms);
/* Live entries (expired ones count until they are found or evicted). */
size_t cache_lru_size(cache_lru *l);

/* Milliseconds of CLOCK_MONOTONIC, the LRU's clock in the local store. */
int64_t cache_now_ms(void);

#endif
