/* test_quant.c - the int8 weight quantizer (eng_q8_quantize, eng.h "int8 weights"): per-row scales, the round trip
 * within half a step, zero rows, negative extremes, symmetry, the block layout, and every source dtype. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "eng.h"
#include "fp16.h"
#include "rng.h"

static float src_value(const void *src, eng_dtype dt, size_t i) {
    if (dt == ENG_F16) return fp16_to_f32(((const uint16_t *)src)[i]);
    if (dt == ENG_BF16) return bf16_to_f32(((const uint16_t *)src)[i]);
    return ((const float *)src)[i];
}

/* v (f32) stored as dt, exact-size allocation. */
static void *as_dtype(const float *v, size_t n, eng_dtype dt) {
    void *p = malloc(n * eng_dtype_size(dt) + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        if (dt == ENG_F32) ((float *)p)[i] = v[i];
        else if (dt == ENG_F16) ((uint16_t *)p)[i] = f32_to_fp16(v[i]);
        else ((uint16_t *)p)[i] = f32_to_bf16(v[i]);
    }
    return p;
}

/* Checks the contract of one quantized block against its source: s = amax / 127, q in [-127, 127], the largest
 * magnitude maps to +-127, |s q - w| <= s / 2 (plus the f32 rounding of w / s: a few ulps of w). */
static void check_block(const void *src, eng_dtype dt, const void *blk, int64_t rows, int64_t cols) {
    const int8_t *q = blk;
    const float *s = (const float *)(const void *)((const char *)blk + eng_q8_scale_offset(rows, cols));
    for (int64_t r = 0; r < rows; r++) {
        float amax = 0;
        for (int64_t c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(src_value(src, dt, (size_t)(r * cols + c))));
        if (s[r] != amax / 127.0f) fail_msg("row %lld: scale %.9g, want amax/127 = %.9g", (long long)r, s[r], amax / 127.0f);
        int saw_127 = 0;
        for (int64_t c = 0; c < cols; c++) {
            size_t i = (size_t)(r * cols + c);
            float w = src_value(src, dt, i);
            int v = q[i];
            if (v < -127 || v > 127) fail_msg("row %lld col %lld: q = %d outside [-127, 127]", (long long)r, (long long)c, v);
            if (abs(v) == 127) saw_127 = 1;
            double e = fabs((double)s[r] * v - w), lim = s[r] / 2.0 * (1 + 1e-6) + fabs(w) * 1e-6;
            if (e > lim)
                fail_msg("row %lld col %lld: w %.9g -> q %d * s %.9g = %.9g: error %.3g > s/2 = %.3g", (long long)r,
                         (long long)c, w, v, s[r], s[r] * v, e, s[r] / 2.0);
            if (amax == 0 && v != 0) fail_msg("zero row %lld: q = %d", (long long)r, v);
        }
        if (amax > 0 && !saw_127) fail_msg("row %lld: the largest magnitude did not map to +-127", (long long)r);
    }
}

static void test_round_trip(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 7);
    const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 100}, {9, 1027}, {64, 64}};
    const eng_dtype dts[] = {ENG_F32, ENG_F16, ENG_BF16};
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
        for (size_t di = 0; di < 3; di++) {
            int64_t rows = shapes[si][0], cols = shapes[si][1];
            size_t n = (size_t)(rows * cols);
            float *v = malloc(n * sizeof(float));
            assert_non_null(v);
            for (int64_t row = 0; row < rows; row++) { /* each row its own magnitude, 1e-3 .. 1e3 */
                float mag = powf(10.0f, (float)(row % 7) - 3.0f);
                for (int64_t c = 0; c < cols; c++) v[row * cols + c] = mag * (float)(2 * rng_uniform(&r) - 1);
            }
            void *src = as_dtype(v, n, dts[di]);
            void *blk = malloc(eng_q8_bytes(rows, cols));
            assert_non_null(blk);
            eng_q8_quantize(blk, src, dts[di], rows, cols);
            check_block(src, dts[di], blk, rows, cols);
            free(v), free(src), free(blk);
        }
}

/* All-zero rows get scale 0 and zeros (no division by zero, no NaN); a row whose largest magnitude is negative maps
 * it to -127 (never -128: the grid is symmetric), a constant negative row is all -127, and -w quantizes to -q. */
static void test_zero_rows_and_negative_extremes(void **state) {
    (void)state;
    const int64_t rows = 4, cols = 9;
    float v[4 * 9] = {0};
    for (int c = 0; c < cols; c++) v[cols + c] = 0.25f * (float)c - 1.0f; /* row 1: -1 .. 1 */
    v[cols + 3] = -5.0f;                                                   /* row 1's extreme is negative */
    for (int c = 0; c < cols; c++) v[2 * cols + c] = -2.5f;               /* row 2: constant negative */
    v[3 * cols + 8] = -1e-30f;                                             /* row 3: one tiny negative */
    void *blk = malloc(eng_q8_bytes(rows, cols)), *neg = malloc(eng_q8_bytes(rows, cols));
    assert_non_null(blk);
    assert_non_null(neg);
    eng_q8_quantize(blk, v, ENG_F32, rows, cols);
    check_block(v, ENG_F32, blk, rows, cols);
    const int8_t *q = blk;
    const float *s = (const float *)(const void *)((const char *)blk + eng_q8_scale_offset(rows, cols));
    assert_true(s[0] == 0.0f);
    for (int c = 0; c < cols; c++) assert_int_equal(q[c], 0);
    assert_int_equal(q[cols + 3], -127);
    for (int c = 0; c < cols; c++) assert_int_equal(q[2 * cols + c], -127);
    assert_int_equal(q[3 * cols + 8], -127);
    float nv[4 * 9];
    for (int i = 0; i < rows * cols; i++) nv[i] = -v[i];
    eng_q8_quantize(neg, nv, ENG_F32, rows, cols);
    const int8_t *nq = neg;
    const float *ns = (const float *)(const void *)((const char *)neg + eng_q8_scale_offset(rows, cols));
    for (int i = 0; i < rows * cols; i++) assert_int_equal(nq[i], -q[i]);
    for (int i = 0; i < rows; i++) assert_true(ns[i] == s[i]);
    free(blk), free(neg);
}

/* The quantizer widens f16 with its own branch-free conversion: quantizing every one of the 65,536 f16 bit patterns
 * (rows of 64, so each row mixes magnitudes, subnormals, infinities and NaNs the way they fall) must give the same
 * bytes as quantizing their fp16_to_f32 values. */
static void test_f16_source_matches_f32(void **state) {
    (void)state;
    const int64_t rows = 1024, cols = 64;
    uint16_t *h = malloc(65536 * sizeof(uint16_t));
    float *f = malloc(65536 * sizeof(float));
    void *a = malloc(eng_q8_bytes(rows, cols)), *b = malloc(eng_q8_bytes(rows, cols));
    assert_non_null(h), assert_non_null(f), assert_non_null(a), assert_non_null(b);
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t v = (uint16_t)(i * 40503u); /* a permutation of all patterns: rows mix exponents */
        h[i] = v;
        f[i] = fp16_to_f32(v);
    }
    memset(a, 0x55, eng_q8_bytes(rows, cols));
    memset(b, 0x55, eng_q8_bytes(rows, cols));
    eng_q8_quantize(a, h, ENG_F16, rows, cols);
    eng_q8_quantize(b, f, ENG_F32, rows, cols);
    const unsigned char *pa = a, *pb = b;
    for (size_t i = 0; i < eng_q8_bytes(rows, cols); i++)
        if (pa[i] != pb[i]) fail_msg("byte %zu of the block: f16 source %u, f32 source %u", i, pa[i], pb[i]);
    /* and a row of only finite values round-trips within the bound */
    for (int c = 0; c < 64; c++) h[c] = f32_to_fp16((float)(c - 31) * 0.37f);
    eng_q8_quantize(a, h, ENG_F16, 1, 64);
    check_block(h, ENG_F16, a, 1, 64);
    free(h), free(f), free(a), free(b);
}

/* The block: int8 rows from byte 0, scales from the next multiple of 64 bytes, rows floats; and what a weight
 * tensor over it reports. */
static void test_layout(void **state) {
    (void)state;
    assert_int_equal(eng_q8_scale_offset(3, 7), 64);
    assert_int_equal(eng_q8_scale_offset(8, 8), 64);
    assert_int_equal(eng_q8_scale_offset(8, 9), 128);
    assert_int_equal(eng_q8_bytes(3, 7), 64 + 3 * 4);
    assert_int_equal(eng_q8_bytes(1024, 1024), 1024 * 1024 + 1024 * 4);
    float v[3 * 7];
    for (int i = 0; i < 21; i++) v[i] = (float)i - 10.0f;
    void *blk = malloc(eng_q8_bytes(3, 7));
    assert_non_null(blk);
    eng_q8_quantize(blk, v, ENG_F32, 3, 7);
    eng_tensor t = {.data = blk, .dtype = ENG_Q8, .rows = 3, .cols = 7, .stride = 7};
    assert_ptr_equal(eng_q8_scales(&t), (const float *)(const void *)((char *)blk + 64));
    assert_true(eng_q8_scales(&t)[0] == 10.0f / 127.0f); /* row 0: -10 .. -4 */
    free(blk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_zero_rows_and_negative_extremes),
        cmocka_unit_test(test_f16_source_matches_f32),
        cmocka_unit_test(test_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
