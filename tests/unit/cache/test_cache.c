/* test_cache.c - the LRU under the local store: hits and misses, expiry on the caller's clock, the bound and
 * least-recently-used eviction, the token bucket, many threads at once; the local store through cache.h; the
 * Redis store against an address where nothing listens (fails fast with ERR_IO, never hangs). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cache.h"
#include "clock.h"

static void key_of(uint8_t k[CACHE_KEY_LEN], uint32_t i) {
    memset(k, 0, CACHE_KEY_LEN);
    memcpy(k, &i, sizeof(i));
    k[31] = (uint8_t)(i * 7);
}

static void test_lru_hit_miss_expiry(void **state) {
    (void)state;
    cache_lru *l;
    assert_int_equal(cache_lru_create(8, &l), ERR_OK);
    uint8_t a[CACHE_KEY_LEN], b[CACHE_KEY_LEN];
    key_of(a, 1);
    key_of(b, 2);
    int v = 0;
    assert_int_equal(cache_lru_get(l, a, 1000, &v), 0);
    cache_lru_put(l, a, 1, 2000);
    assert_int_equal(cache_lru_get(l, a, 1999, &v), 1);
    assert_int_equal(v, 1);
    assert_int_equal(cache_lru_get(l, b, 1999, &v), 0);
    assert_int_equal(cache_lru_get(l, a, 2000, &v), 0); /* expired exactly at expires_ms */
    assert_int_equal(cache_lru_size(l), 0);             /* and dropped when found */
    cache_lru_put(l, a, 3, 5000);
    cache_lru_put(l, a, 2, 6000); /* replace */
    assert_int_equal(cache_lru_get(l, a, 5500, &v), 1);
    assert_int_equal(v, 2);
    assert_int_equal(cache_lru_size(l), 1);
    cache_lru_destroy(l);
    cache_lru_destroy(NULL);
}

static void test_lru_bound_evicts_least_recent(void **state) {
    (void)state;
    cache_lru *l;
    assert_int_equal(cache_lru_create(4, &l), ERR_OK);
    uint8_t k[CACHE_KEY_LEN];
    for (uint32_t i = 0; i < 4; i++) {
        key_of(k, i);
        cache_lru_put(l, k, (int)i, 1000000);
    }
    int v;
    key_of(k, 0);
    assert_int_equal(cache_lru_get(l, k, 0, &v), 1); /* 0 is now the most recent; 1 the least */
    key_of(k, 4);
    cache_lru_put(l, k, 4, 1000000);
    assert_int_equal(cache_lru_size(l), 4);
    key_of(k, 1);
    assert_int_equal(cache_lru_get(l, k, 0, &v), 0);
    for (uint32_t i = 0; i < 5; i++) {
        if (i == 1) continue;
        key_of(k, i);
        assert_int_equal(cache_lru_get(l, k, 0, &v), 1);
        assert_int_equal(v, (int)i);
    }
    for (uint32_t i = 100; i < 1100; i++) { /* churn far past the bound */
        key_of(k, i);
        cache_lru_put(l, k, (int)i, 1000000);
    }
    assert_int_equal(cache_lru_size(l), 4);
    key_of(k, 1099);
    assert_int_equal(cache_lru_get(l, k, 0, &v), 1);
    assert_int_equal(v, 1099);
    cache_lru_destroy(l);
    assert_int_equal(cache_lru_create(0, &l), ERR_INVALID);
    assert_null(l);
}

static void test_lru_token_bucket(void **state) {
    (void)state;
    cache_lru *l;
    assert_int_equal(cache_lru_create(4, &l), ERR_OK);
    uint8_t k[CACHE_KEY_LEN];
    key_of(k, 9);
    int ok;
    int64_t retry;
    for (int i = 0; i < 3; i++) { /* burst 3 at 60 a minute = one token a second */
        cache_lru_rate_take(l, k, 1000, 60, 3, &ok, &retry);
        assert_int_equal(ok, 1);
    }
    cache_lru_rate_take(l, k, 1000, 60, 3, &ok, &retry);
    assert_int_equal(ok, 0);
    assert_true(retry > 900 && retry <= 1001);
    cache_lru_rate_take(l, k, 1500, 60, 3, &ok, &retry); /* half a token: still empty */
    assert_int_equal(ok, 0);
    assert_true(retry > 400 && retry <= 501);
    cache_lru_rate_take(l, k, 2000, 60, 3, &ok, &retry); /* one full token */
    assert_int_equal(ok, 1);
    cache_lru_rate_take(l, k, 100000, 60, 3, &ok, &retry); /* refills only up to the burst */
    for (int i = 0; i < 2; i++) {
        cache_lru_rate_take(l, k, 100000, 60, 3, &ok, &retry);
        assert_int_equal(ok, 1);
    }
    cache_lru_rate_take(l, k, 100000, 60, 3, &ok, &retry);
    assert_int_equal(ok, 0);
    cache_lru_destroy(l);
}

typedef struct hammer {
    cache_lru *l;
    uint32_t base;
    int errors;
} hammer;

static void *hammer_run(void *arg) {
    hammer *h = arg;
    uint8_t k[CACHE_KEY_LEN];
    for (uint32_t i = 0; i < 20000; i++) {
        uint32_t id = h->base + i % 300;
        key_of(k, id);
        cache_lru_put(h->l, k, (int)id, 1000000);
        int v;
        if (cache_lru_get(h->l, k, 0, &v) && v != (int)id) h->errors++; /* a hit must be our own value */
    }
    return NULL;
}

static void test_lru_threads(void **state) {
    (void)state;
    cache_lru *l;
    assert_int_equal(cache_lru_create(256, &l), ERR_OK);
    pthread_t t[8];
    hammer h[8];
    for (int i = 0; i < 8; i++) {
        h[i] = (hammer){l, (uint32_t)i * 1000, 0};
        pthread_create(&t[i], NULL, hammer_run, &h[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(h[i].errors, 0);
    }
    assert_true(cache_lru_size(l) <= 256);
    cache_lru_destroy(l);
}

static void test_local_store(void **state) {
    (void)state;
    cache *c;
    errbuf eb = {0};
    assert_int_equal(cache_local_create(16, &c, &eb), ERR_OK);
    assert_string_equal(cache_kind(c), "local");
    uint8_t k[CACHE_KEY_LEN];
    key_of(k, 5);
    int found = 1, v = 0;
    assert_int_equal(cache_get(c, k, &found, &v), ERR_OK);
    assert_int_equal(found, 0);
    assert_int_equal(cache_set(c, k, 2, 60), ERR_OK);
    assert_int_equal(cache_get(c, k, &found, &v), ERR_OK);
    assert_int_equal(found, 1);
    assert_int_equal(v, 2);
    int ok;
    int64_t retry;
    assert_int_equal(cache_rate_take(c, k, 0, 0, &ok, &retry), ERR_OK); /* 0 = no limit */
    assert_int_equal(ok, 1);
    assert_int_equal(cache_rate_take(c, k, 60, 1, &ok, &retry), ERR_OK);
    assert_int_equal(ok, 1);
    assert_int_equal(cache_rate_take(c, k, 60, 1, &ok, &retry), ERR_OK);
    assert_int_equal(ok, 0);
    cache_destroy(c);
    cache_destroy(NULL);
}

static void test_redis_down_fails_fast(void **state) {
    (void)state;
    cache *c;
    errbuf eb = {0};
    cache_redis_config rc = {.url = "redis://127.0.0.1:1/0", .timeout_ms = 100, .pool_size = 2};
    assert_int_equal(cache_redis_create(&rc, &c, &eb), ERR_OK); /* unreachable is not a config error */
    uint8_t k[CACHE_KEY_LEN];
    key_of(k, 1);
    uint64_t t0 = clock_ns();
    int found, v, ok;
    int64_t retry;
    for (int i = 0; i < 50; i++) {
        assert_int_equal(cache_get(c, k, &found, &v), ERR_IO);
        assert_int_equal(cache_set(c, k, 1, 10), ERR_IO);
        assert_int_equal(cache_rate_take(c, k, 60, 5, &ok, &retry), ERR_IO);
    }
    assert_true(clock_ns() - t0 < 2000000000ull); /* backoff: no reconnect storm, no hang */
    cache_destroy(c);
    cache_redis_config bad = {.url = "http://x"};
    assert_int_equal(cache_redis_create(&bad, &c, &eb), ERR_INVALID);
    cache_redis_config badport = {.url = "redis://h:99999"};
    assert_int_equal(cache_redis_create(&badport, &c, &eb), ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_hit_miss_expiry), cmocka_unit_test(test_lru_bound_evicts_least_recent),
        cmocka_unit_test(test_lru_token_bucket),    cmocka_unit_test(test_lru_threads),
        cmocka_unit_test(test_local_store),         cmocka_unit_test(test_redis_down_fails_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
