/* test_core.c - fp16/bf16 conversions, the thread pool, errbuf, fault injection, the PRNG. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "err.h"
#include "fp16.h"
#include "pool.h"
#include "rng.h"

/* Every finite half converts to float and back unchanged; nan stays nan. */
static void test_fp16_roundtrip_all(void **s) {
    (void)s;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(fp16_to_f32(f32_to_fp16(f))));
            continue;
        }
        assert_int_equal(f32_to_fp16(f), h);
    }
}

/* Rounding to nearest even at the midpoints between neighbouring halves, subnormals and overflow included. */
static void test_fp16_rounding(void **s) {
    (void)s;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        double lo = fp16_to_f32((uint16_t)h), hi = fp16_to_f32((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2);
        if ((double)mid != (lo + hi) / 2) continue; /* midpoint not representable in f32 (never for halves) */
        uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        assert_int_equal(f32_to_fp16(mid), want);
        assert_int_equal(f32_to_fp16(nextafterf(mid, 0)), h);
        assert_int_equal(f32_to_fp16(nextafterf(mid, INFINITY)), h + 1);
    }
    assert_int_equal(f32_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(f32_to_fp16(65519.99f), 0x7bff);
    assert_int_equal(f32_to_fp16(65520.0f), 0x7c00);
    assert_int_equal(f32_to_fp16(-1e10f), 0xfc00);
    assert_int_equal(f32_to_fp16(1e-10f), 0);
    assert_int_equal(f32_to_fp16(-0.0f), 0x8000);
    assert_int_equal(f32_to_fp16(5.9604645e-08f), 1); /* smallest subnormal */
}

static void test_bf16(void **s) {
    (void)s;
    assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
    assert_true(bf16_to_f32(f32_to_bf16(3.140625f)) == 3.140625f);
    /* ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 */
    assert_int_equal(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
    assert_int_equal(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
    assert_true(isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

typedef struct sum_ctx {
    long n;
    long part[64];
} sum_ctx;

static void sum_fn(void *vctx, int ith, int nth) {
    sum_ctx *c = vctx;
    long lo, hi, acc = 0;
    pool_split(c->n, ith, nth, &lo, &hi);
    for (long i = lo; i < hi; i++) acc += i;
    c->part[ith] = acc;
}

static void test_pool(void **s) {
    (void)s;
    for (int threads = 1; threads <= 4; threads++) {
        pool *p = NULL;
        assert_int_equal(pool_create(threads, &p), ERR_OK);
        assert_int_equal(pool_size(p), threads);
        for (int rep = 0; rep < 2000; rep++) {
            sum_ctx c = {1000 + rep, {0}};
            pool_run(p, sum_fn, &c);
            long tot = 0;
            for (int i = 0; i < threads; i++) tot += c.part[i];
            assert_int_equal(tot, c.n * (c.n - 1) / 2);
        }
        pool_destroy(p);
    }
    pool_destroy(NULL);
}

static void test_pool_split_covers(void **s) {
    (void)s;
    for (long n = 0; n < 50; n++)
        for (int nth = 1; nth < 9; nth++) {
            long prev = 0;
            for (int i = 0; i < nth; i++) {
                long lo, hi;
                pool_split(n, i, nth, &lo, &hi);
                assert_int_equal(lo, prev);
                assert_true(hi >= lo && hi - lo <= n / nth + 1);
                prev = hi;
            }
            assert_int_equal(prev, n);
        }
}

static void test_errbuf(void **s) {
    (void)s;
    errbuf eb = {0};
    assert_int_equal(errbuf_set(&eb, ERR_FORMAT, "tensor '%s' is %d", "x", 3), ERR_FORMAT);
    assert_string_equal(eb.msg, "tensor 'x' is 3");
    errbuf_prefix(&eb, "%s: ", "model.safetensors");
    assert_string_equal(eb.msg, "model.safetensors: tensor 'x' is 3");
    assert_int_equal(errbuf_set(NULL, ERR_IO, "ignored"), ERR_IO);
    assert_string_equal(err_name(ERR_NOMEM), "ERR_NOMEM");
}

static void test_alloc_fail(void **s) {
    (void)s;
    alloc_fail_after(2);
    void *a = xmalloc(8), *b = xmalloc(8), *c = xmalloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    alloc_fail_after(-1);
    c = xmalloc(8);
    assert_non_null(c);
    xfree(a), xfree(b), xfree(c);
    assert_null(xcalloc(SIZE_MAX / 2, 4)); /* overflow is refused, not wrapped */
    assert_null(xmalloc_array(SIZE_MAX / 2, 4));
}

static void test_rng(void **s) {
    (void)s;
    rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) assert_int_equal(rng_next(&a), rng_next(&b));
    rng_seed(&b, 43);
    assert_int_not_equal(rng_next(&a), rng_next(&b));
    double mean = 0;
    for (int i = 0; i < 100000; i++) {
        double u = rng_uniform(&a);
        assert_true(u >= 0 && u < 1);
        mean += u;
    }
    assert_true(fabs(mean / 100000 - 0.5) < 0.01);
    assert_int_equal(splitmix64(0), 0xe220a8397b1dcdafull); /* the published splitmix64 first output */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_roundtrip_all), cmocka_unit_test(test_fp16_rounding),
        cmocka_unit_test(test_bf16),               cmocka_unit_test(test_pool),
        cmocka_unit_test(test_pool_split_covers),  cmocka_unit_test(test_errbuf),
        cmocka_unit_test(test_alloc_fail),         cmocka_unit_test(test_rng),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
