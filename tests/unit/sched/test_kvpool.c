/* test_kvpool.c - the block pool and prefix-cache tree: longest-prefix matches compare tokens exactly, only leaves
 * are evicted and least recently released first, duplicates stay private, counts add up after any sequence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kvpool.h"

#define BT 4

static void check_counts(const kvpool *p, int32_t used, int32_t cached) {
    kvpool_stats st;
    kvpool_get_stats(p, &st);
    assert_int_equal(st.used, used);
    assert_int_equal(st.cached, cached);
    assert_int_equal(kvpool_available(p), st.total - used);
}

/* A sequence's life: allocate n blocks, publish them as a chain over tokens, release them. */
static void run_seq(kvpool *p, const int32_t *tokens, int32_t n, int32_t *ids) {
    for (int32_t b = 0; b < n; b++) {
        ids[b] = kvpool_alloc(p);
        assert_true(ids[b] >= 0);
        kvpool_publish(p, b ? ids[b - 1] : -1, tokens + b * BT, ids[b]);
    }
    for (int32_t b = 0; b < n; b++) kvpool_release(p, ids[b]);
}

static void test_match_exact_prefix(void **state) {
    (void)state;
    kvpool *p;
    assert_int_equal(kvpool_create(8, BT, &p), ERR_OK);
    int32_t a[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, ids[3], got[3];
    run_seq(p, a, 3, ids);
    check_counts(p, 0, 3);
    /* same first block, different second: one block matches */
    int32_t b[12] = {1, 2, 3, 4, 5, 6, 7, 99, 9, 10, 11, 12};
    assert_int_equal(kvpool_match(p, b, 3, got), 1);
    assert_int_equal(got[0], ids[0]);
    check_counts(p, 1, 2);
    kvpool_release(p, got[0]);
    /* the full chain, but never more than asked for */
    assert_int_equal(kvpool_match(p, a, 2, got), 2);
    assert_memory_equal(got, ids, 2 * sizeof(int32_t));
    kvpool_release(p, got[0]);
    kvpool_release(p, got[1]);
    /* a different first block matches nothing, even with the same later blocks */
    int32_t c[12] = {0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    assert_int_equal(kvpool_match(p, c, 3, got), 0);
    check_counts(p, 0, 3);
    kvpool_destroy(p);
}

static void test_evicts_lru_leaves(void **state) {
    (void)state;
    kvpool *p;
    assert_int_equal(kvpool_create(4, BT, &p), ERR_OK);
    int32_t a[8] = {1, 1, 1, 1, 2, 2, 2, 2}, b[8] = {3, 3, 3, 3, 4, 4, 4, 4}, ia[2], ib[2], got[2];
    run_seq(p, a, 2, ia); /* a released first: least recently used */
    run_seq(p, b, 2, ib);
    check_counts(p, 0, 4);
    /* the pool is full of cached blocks: an allocation evicts a's leaf, then a's root (now a leaf) */
    int32_t x = kvpool_alloc(p);
    assert_int_equal(x, ia[1]);
    assert_int_equal(kvpool_match(p, a, 2, got), 1); /* a's first block is still there */
    kvpool_release(p, got[0]); /* a's root was just used again: b's leaf is now the least recent */
    int32_t y = kvpool_alloc(p);
    assert_int_equal(y, ib[1]);
    assert_int_equal(kvpool_match(p, b, 2, got), 1);
    int32_t got_a[2];
    assert_int_equal(kvpool_match(p, a, 2, got_a), 1);
    assert_int_equal(kvpool_alloc(p), -1); /* everything held */
    check_counts(p, 4, 0);
    kvpool_release(p, x);
    kvpool_release(p, y);
    kvpool_release(p, got[0]);
    kvpool_release(p, got_a[0]);
    check_counts(p, 0, 2);
    kvpool_flush(p);
    check_counts(p, 0, 0);
    assert_int_equal(kvpool_match(p, b, 2, got), 0);
    kvpool_destroy(p);
}

/* A shared first block matched again and again (its own child cold) outlives an older leaf once the child goes. */
static void test_hot_prefix_outlives_its_cold_child(void **state) {
    (void)state;
    kvpool *p;
    assert_int_equal(kvpool_create(4, BT, &p), ERR_OK);
    int32_t a[8] = {1, 1, 1, 1, 2, 2, 2, 2}, b[4] = {3, 3, 3, 3}, ia[2], ib[1], got[2];
    run_seq(p, a, 2, ia); /* a0 -> a1 */
    run_seq(p, b, 1, ib); /* b0, released after a1 */
    int32_t hot[8] = {1, 1, 1, 1, 9, 9, 9, 9};
    for (int i = 0; i < 3; i++) { /* prompts sharing a0 only: a0 is used, a1 is not */
        assert_int_equal(kvpool_match(p, hot, 2, got), 1);
        kvpool_release(p, got[0]);
    }
    int32_t x = kvpool_alloc(p);  /* the one free block */
    int32_t e1 = kvpool_alloc(p); /* evicts the oldest leaf: a1 */
    assert_int_equal(e1, ia[1]);
    int32_t e2 = kvpool_alloc(p); /* then b0 (older than a0's last use), not a0 */
    assert_int_equal(e2, ib[0]);
    assert_int_equal(kvpool_match(p, a, 2, got), 1);
    assert_int_equal(got[0], ia[0]);
    kvpool_release(p, got[0]);
    kvpool_release(p, x);
    kvpool_release(p, e1);
    kvpool_release(p, e2);
    check_counts(p, 0, 1);
    kvpool_destroy(p);
}

static void test_duplicates_stay_private(void **state) {
    (void)state;
    kvpool *p;
    assert_int_equal(kvpool_create(6, BT, &p), ERR_OK);
    int32_t a[8] = {7, 7, 7, 7, 8, 8, 8, 8}, i1[2], i2[2];
    /* two sequences compute the same blocks side by side; only the first one's become cached */
    for (int b = 0; b < 2; b++) i1[b] = kvpool_alloc(p), i2[b] = kvpool_alloc(p);
    for (int b = 0; b < 2; b++) {
        kvpool_publish(p, b ? i1[b - 1] : -1, a + b * BT, i1[b]);
        kvpool_publish(p, b ? i2[b - 1] : -1, a + b * BT, i2[b]);
    }
    for (int b = 0; b < 2; b++) kvpool_release(p, i1[b]), kvpool_release(p, i2[b]);
    check_counts(p, 0, 2);
    int32_t got[2];
    assert_int_equal(kvpool_match(p, a, 2, got), 2);
    assert_memory_equal(got, i1, sizeof(i1));
    kvpool_release(p, got[0]);
    kvpool_release(p, got[1]);
    /* releasing twice is ignored, not a corruption */
    kvpool_release(p, got[1]);
    check_counts(p, 0, 2);
    kvpool_destroy(p);
}

/* Random churn: whatever happens, held + cached + free = total, and the last release leaves nothing used. */
static void test_churn_counts(void **state) {
    (void)state;
    kvpool *p;
    assert_int_equal(kvpool_create(32, BT, &p), ERR_OK);
    uint64_t x = 42;
    for (int it = 0; it < 20000; it++) {
        int32_t toks[6 * BT], ids[6], held = 0;
        for (int i = 0; i < 6 * BT; i++) toks[i] = (int32_t)((x = x * 6364136223846793005ull + 1) >> 60) % 3;
        int32_t m = kvpool_match(p, toks, 5, ids);
        held = m;
        while (held < 6) {
            int32_t id = kvpool_alloc(p);
            if (id < 0) break;
            ids[held] = id;
            kvpool_publish(p, held ? ids[held - 1] : -1, toks + held * BT, id);
            held++;
        }
        for (int32_t b = 0; b < held; b++) kvpool_release(p, ids[b]);
        kvpool_stats st;
        kvpool_get_stats(p, &st);
        assert_int_equal(st.used, 0);
        assert_int_equal(kvpool_available(p), 32);
    }
    kvpool_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_exact_prefix),
        cmocka_unit_test(test_evicts_lru_leaves),
        cmocka_unit_test(test_hot_prefix_outlives_its_cold_child),
        cmocka_unit_test(test_duplicates_stay_private),
        cmocka_unit_test(test_churn_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
