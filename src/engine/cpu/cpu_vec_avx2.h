/* cpu_vec_avx2.h - the vector vocabulary of cpu_kern.h for AVX2 with FMA and F16C. Included only by cpu_avx2.c,
 * which is compiled with those flags. AVX2 has no masked loads of 16-bit lanes, so partial vectors go through a
 * small zeroed buffer (tails only). */
#ifndef SUGGESTD_ENGINE_CPU_VEC_AVX2_H
#define SUGGESTD_ENGINE_CPU_VEC_AVX2_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

typedef __m256 vf;
#define VF_N 8
#define VF_TILE_NR 2   /* matmul register tile: 4 x rows by 2 weight rows = 8 accumulators of 16 registers */
#define VF_WIDE_NR 8   /* batch-1 tile: 1 x row by 8 weight rows */
#define VF_PV_CHUNKS 2 /* attention P.V: head_dim slices of 2 vectors per pass */
#define VF_GEMM_MR 6   /* prefill micro-tile: 6 x rows by 2 vectors of outputs = 12 accumulators */

#define VF__RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
static inline vf vf_set1(float a) { return _mm256_set1_ps(a); }
static inline vf vf_loadu(const float *p) { return _mm256_loadu_ps(p); }
static inline vf vf_loadu_n(const float *p, int n) {
    float t[8] = {0};
    memcpy(t, p, (size_t)n * sizeof(float));
    return _mm256_loadu_ps(t);
}
static inline void vf_storeu(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline void vf_storeu_n(float *p, vf v, int n) {
    float t[8];
    _mm256_storeu_ps(t, v);
    memcpy(p, t, (size_t)n * sizeof(float));
}
static inline vf vf_load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline vf vf_load_f16_n(const uint16_t *p, int n) {
    uint16_t t[8] = {0};
    memcpy(t, p, (size_t)n * sizeof(uint16_t));
    return vf_load_f16(t);
}
static inline vf vf_load_bf16(const uint16_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline vf vf_load_bf16_n(const uint16_t *p, int n) {
    uint16_t t[8] = {0};
    memcpy(t, p, (size_t)n * sizeof(uint16_t));
    return vf_load_bf16(t);
}
/* int8 weights (ENG_Q8) widened to f32: 8 bytes, sign-extended to 8 lanes. */
static inline vf vf_load_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p)));
}
static inline vf vf_load_i8_n(const int8_t *p, int n) {
    int8_t t[8] = {0};
    memcpy(t, p, (size_t)n);
    return vf_load_i8(t);
}
static inline void vf_store_f16(uint16_t *p, vf v) { _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(v, VF__RNE)); }
static inline void vf_store_f16_n(uint16_t *p, vf v, int n) {
    uint16_t t[8];
    vf_store_f16(t, v);
    memcpy(p, t, (size_t)n * sizeof(uint16_t));
}
static inline vf vf_round_f16(vf v) { return _mm256_cvtph_ps(_mm256_cvtps_ph(v, VF__RNE)); }

static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vf_min(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); } /* a * b + c */
static inline vf vf_abs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
/* mag (>= 0) with the sign of sgn */
static inline vf vf_copysign(vf mag, vf sgn) { return _mm256_or_ps(mag, _mm256_and_ps(sgn, _mm256_set1_ps(-0.0f))); }
static inline vf vf_select_lt(vf a, vf b, vf if_lt, vf otherwise) {
    return _mm256_blendv_ps(otherwise, if_lt, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
}
static inline vf vf_round(vf a) { return _mm256_round_ps(a, VF__RNE); }
/* 2^n for integral n in [-126, 127] */
static inline vf vf_exp2i(vf n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
static inline float vf_hsum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float vf_hmax(vf v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* x[2i] <-> x[2i+1] */
static inline vf vf_swap_pairs(vf v) { return _mm256_permute_ps(v, 0xb1); }

/* Lane j of the result = sum of the lanes of a[j], for 8 vectors, by a transposing tree. The tree leaves lane 4h+r
 * holding input h+2r's sum, so input k reads a[4(k%2) + k/2]. */
static inline vf vf_hsum_tile(const vf *a) {
    vf w[4], g[2];
    for (int i = 0; i < 4; i++) {
        int k0 = 2 * i, k1 = 2 * i + 1;
        vf x = a[4 * (k0 % 2) + k0 / 2], y = a[4 * (k1 % 2) + k1 / 2];
        w[i] = _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
    }
    for (int i = 0; i < 2; i++)
        g[i] = _mm256_add_ps(_mm256_unpacklo_ps(w[2 * i], w[2 * i + 1]), _mm256_unpackhi_ps(w[2 * i], w[2 * i + 1]));
    __m256d lo = _mm256_unpacklo_pd(_mm256_castps_pd(g[0]), _mm256_castps_pd(g[1]));
    __m256d hi = _mm256_unpackhi_pd(_mm256_castps_pd(g[0]), _mm256_castps_pd(g[1]));
    return _mm256_add_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi));
}

/* r[j] <- column j of the 8 x 8 matrix whose rows are r[0..7]. */
static inline void vf_transpose(vf *r) {
    vf t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; g++) {
        u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
        u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

#endif
