/* cache_redis.c - the Redis store: decisions as strings with EX, rate-limit buckets as hashes run by a Lua script.
 *
 * DESIGN: a fixed pool of blocking hiredis connections, each with a connect and command timeout, so no caller ever
 * waits on Redis longer than about one timeout. A call takes a free connection (waiting at most one timeout for
 * one), runs one command and gives it back. A connection that fails is freed; the next call reconnects, but only
 * after a backoff that doubles from 100 ms to 5 s while Redis stays down, and during the backoff calls fail at
 * once with ERR_IO (the caller falls back to asking GitLab), so a dead Redis costs nothing per request.
 *
 * Keys: suggestd:auth:<hex key> = "<value>" with EX ttl; suggestd:rl:<hex key> = hash {t: tokens, ts: ms} with
 * PEXPIRE. The bucket script reads Redis's own clock (TIME), so replicas with skewed clocks share one bucket. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cache_impl.h"
#include "log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* KEYS[1] bucket; ARGV[1] tokens per ms, ARGV[2] burst. Returns {allowed, retry_after_ms}. */
static const char bucket_lua[] =
    "local rate = tonumber(ARGV[1]) local burst = tonumber(ARGV[2]) "
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local s = redis.call('HMGET', KEYS[1], 't', 'ts') "
    "local tokens = tonumber(s[1]) or burst local ts = tonumber(s[2]) or now "
    "tokens = math.min(burst, tokens + math.max(0, now - ts) * rate) "
    "local ok = 0 local wait = 0 "
    "if tokens >= 1 then tokens = tokens - 1 ok = 1 else wait = math.ceil((1 - tokens) / rate) end "
    "redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now)) "
    "redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000) "
    "return {ok, wait}";

typedef struct redis_store {
    cache base;
    char *host, *password;
    int port, db, timeout_ms, n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    redisContext **conns; /* n slots; NULL = not connected */
    int *busy;
    int64_t down_until_ms, backoff_ms;
    int logged_down;
} redis_store;

static struct timeval tv_of(int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static int64_t now_ms(void) { return cache_now_ms(); }

/* Connects, authenticates and selects the db; NULL on any failure (the reason logged at debug level). */
static redisContext *connect_one(redis_store *s) {
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv_of(s->timeout_ms));
    if (!c || c->err) {
        LOG_DEBUG("redis %s:%d: %s", s->host, s->port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv_of(s->timeout_ms));
    redisReply *r;
    if (s->password) {
        r = redisCommand(c, "AUTH %s", s->password);
        int ok = r && r->type != REDIS_REPLY_ERROR;
        if (r) freeReplyObject(r);
        if (!ok) {
            LOG_WARN("redis %s:%d: AUTH failed", s->host, s->port);
            redisFree(c);
            return NULL;
        }
    }
    if (s->db) {
        r = redisCommand(c, "SELECT %d", s->db);
        int ok = r && r->type != REDIS_REPLY_ERROR;
        if (r) freeReplyObject(r);
        if (!ok) {
            LOG_WARN("redis %s:%d: SELECT %d failed", s->host, s->port, s->db);
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

/* Takes a pool slot (waiting at most one timeout). -1 when none came or Redis is in its backoff window. */
static int acquire(redis_store *s) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += (long)(s->timeout_ms % 1000) * 1000000L;
    dl.tv_sec += s->timeout_ms / 1000 + dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&s->mu);
    int slot = -1;
    for (;;) {
        for (int i = 0; i < s->n && slot < 0; i++)
            if (!s->busy[i] && s->conns[i]) slot = i; /* prefer a live connection */
        for (int i = 0; i < s->n && slot < 0; i++)
            if (!s->busy[i]) slot = i;
        if (slot >= 0) break;
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) break;
    }
    if (slot >= 0 && !s->conns[slot] && now_ms() < s->down_until_ms) slot = -1; /* backing off */
    if (slot >= 0) s->busy[slot] = 1;
    pthread_mutex_unlock(&s->mu);
    if (slot < 0 || s->conns[slot]) return slot;
    redisContext *c = connect_one(s); /* outside the lock: connecting may take a timeout */
    pthread_mutex_lock(&s->mu);
    s->conns[slot] = c;
    if (!c) {
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (s->backoff_ms > BACKOFF_MAX_MS) s->backoff_ms = BACKOFF_MAX_MS;
        s->down_until_ms = now_ms() + s->backoff_ms;
        if (!s->logged_down) LOG_WARN("redis %s:%d unreachable; retrying with backoff", s->host, s->port);
        s->logged_down = 1;
        s->busy[slot] = 0;
        slot = -1;
        pthread_cond_signal(&s->cv);
    } else if (s->logged_down) {
        LOG_WARN("redis %s:%d reachable again", s->host, s->port);
        s->logged_down = 0;
        s->backoff_ms = 0;
    } else s->backoff_ms = 0;
    pthread_mutex_unlock(&s->mu);
    return slot;
}

/* Gives the slot back; a connection whose command failed is dropped (and the backoff starts). */
static void release(redis_store *s, int slot, int failed) {
    pthread_mutex_lock(&s->mu);
    if (failed) {
        redisFree(s->conns[slot]);
        s->conns[slot] = NULL;
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (s->backoff_ms > BACKOFF_MAX_MS) s->backoff_ms = BACKOFF_MAX_MS;
        s->down_until_ms = now_ms() + s->backoff_ms;
        if (!s->logged_down) LOG_WARN("redis %s:%d: command failed; reconnecting with backoff", s->host, s->port);
        s->logged_down = 1;
    }
    s->busy[slot] = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void key_name(char *out, const char *prefix, const uint8_t key[CACHE_KEY_LEN]) {
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    for (int i = 0; i < CACHE_KEY_LEN; i++) {
        out[n + 2 * i] = hex[key[i] >> 4];
        out[n + 2 * i + 1] = hex[key[i] & 15];
    }
    out[n + 2 * CACHE_KEY_LEN] = 0;
}

static err redis_get(cache *c, const uint8_t key[CACHE_KEY_LEN], int *found, int *value) {
    redis_store *s = (redis_store *)c;
    char k[32 + 2 * CACHE_KEY_LEN];
    key_name(k, "suggestd:auth:", key);
    int slot = acquire(s);
    if (slot < 0) return ERR_IO;
    redisReply *r = redisCommand(s->conns[slot], "GET %s", k);
    err rc = ERR_OK;
    if (!r || r->type == REDIS_REPLY_ERROR) rc = ERR_IO;
    else if (r->type == REDIS_REPLY_STRING) {
        *found = 1;
        *value = atoi(r->str);
    }
    if (r) freeReplyObject(r);
    release(s, slot, r == NULL);
    return rc;
}

static err redis_set(cache *c, const uint8_t key[CACHE_KEY_LEN], int value, int ttl_s) {
    redis_store *s = (redis_store *)c;
    char k[32 + 2 * CACHE_KEY_LEN];
    key_name(k, "suggestd:auth:", key);
    int slot = acquire(s);
    if (slot < 0) return ERR_IO;
    redisReply *r = redisCommand(s->conns[slot], "SET %s %d EX %d", k, value, ttl_s);
    err rc = !r || r->type == REDIS_REPLY_ERROR ? ERR_IO : ERR_OK;
    if (r) freeReplyObject(r);
    release(s, slot, r == NULL);
    return rc;
}

static err redis_rate_take(cache *c, const uint8_t key[CACHE_KEY_LEN], int per_minute, int burst, int *allowed,
                           int64_t *retry_after_ms) {
    redis_store *s = (redis_store *)c;
    char k[32 + 2 * CACHE_KEY_LEN], rate[64], b[32];
    key_name(k, "suggestd:rl:", key);
    snprintf(rate, sizeof(rate), "%.17g", (double)per_minute / 60000.0);
    snprintf(b, sizeof(b), "%d", burst);
    int slot = acquire(s);
    if (slot < 0) return ERR_IO;
    redisReply *r = redisCommand(s->conns[slot], "EVAL %s 1 %s %s %s", bucket_lua, k, rate, b);
    err rc = ERR_IO;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        *allowed = r->element[0]->integer == 1;
        *retry_after_ms = r->element[1]->integer;
        rc = ERR_OK;
    } else if (r && r->type == REDIS_REPLY_ERROR) LOG_WARN("redis rate-limit script: %.200s", r->str);
    if (r) freeReplyObject(r);
    release(s, slot, r == NULL);
    return rc;
}

static void redis_destroy(cache *c) {
    redis_store *s = (redis_store *)c;
    for (int i = 0; s->conns && i < s->n; i++)
        if (s->conns[i]) redisFree(s->conns[i]);
    xfree(s->conns);
    xfree(s->busy);
    xfree(s->host);
    xfree(s->password);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    xfree(s);
}

static const cache_ops redis_ops = {"redis", redis_get, redis_set, redis_rate_take, redis_destroy};

/* redis://[[user]:pass@]host[:port][/db] (user is ignored: hiredis 0.14 speaks AUTH <password> only). */
static err parse_url(redis_store *s, const char *url, errbuf *eb) {
    if (strncmp(url, "redis://", 8)) return errbuf_set(eb, ERR_INVALID, "REDIS_URL: expected redis://host[:port][/db]");
    const char *p = url + 8, *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            xfree(s->password);
            s->password = xstrndup(colon + 1, (size_t)(at - colon - 1));
            if (!s->password) return errbuf_set(eb, ERR_NOMEM, "out of memory");
        }
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (!hl) return errbuf_set(eb, ERR_INVALID, "REDIS_URL: no host");
    xfree(s->host);
    s->host = xstrndup(p, hl);
    if (!s->host) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    p += hl;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) return errbuf_set(eb, ERR_INVALID, "REDIS_URL: bad port");
        s->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000000) return errbuf_set(eb, ERR_INVALID, "REDIS_URL: bad db");
        s->db = (int)db;
    } else if (*p && strcmp(p, "/")) return errbuf_set(eb, ERR_INVALID, "REDIS_URL: unexpected text after host");
    return ERR_OK;
}

err cache_redis_create(const cache_redis_config *cfg, cache **out, errbuf *eb) {
    *out = NULL;
    redis_store *s = xcalloc(1, sizeof(*s));
    if (!s) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    s->base.ops = &redis_ops;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->host = xstrdup(cfg->host && *cfg->host ? cfg->host : "127.0.0.1");
    s->password = cfg->password && *cfg->password ? xstrdup(cfg->password) : NULL;
    s->port = cfg->port > 0 ? cfg->port : 6379;
    s->db = cfg->db;
    s->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 200;
    s->n = cfg->pool_size > 0 ? cfg->pool_size : 8;
    s->conns = xcalloc((size_t)s->n, sizeof(*s->conns));
    s->busy = xcalloc((size_t)s->n, sizeof(*s->busy));
    err rc = !s->host || !s->conns || !s->busy || (cfg->password && *cfg->password && !s->password)
                 ? errbuf_set(eb, ERR_NOMEM, "out of memory")
                 : ERR_OK;
    if (rc == ERR_OK && cfg->url && *cfg->url) rc = parse_url(s, cfg->url, eb);
    if (rc != ERR_OK) {
        redis_destroy(&s->base);
        return rc;
    }
    int slot = acquire(s); /* one connection now, to say early whether Redis is there */
    if (slot >= 0) {
        LOG_INFO("auth cache: redis %s:%d db %d (pool %d, timeout %d ms)", s->host, s->port, s->db, s->n,
                 s->timeout_ms);
        release(s, slot, 0);
    }
    *out = &s->base;
    return ERR_OK;
}
