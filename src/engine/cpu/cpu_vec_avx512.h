/* cpu_vec_avx512.h - the vector vocabulary of cpu_kern.h for AVX-512 (F, BW, VL, DQ) with FMA and F16C.
 * Included only by cpu_avx512.c, which is compiled with those flags. */
#ifndef SUGGESTD_ENGINE_CPU_VEC_AVX512_H
#define SUGGESTD_ENGINE_CPU_VEC_AVX512_H

#include <immintrin.h>
#include <stdint.h>

typedef __m512 vf;
#define VF_N 16
#define VF_TILE_NR 4   /* matmul register tile: 4 x rows by 4 weight rows = 16 accumulators */
#define VF_WIDE_NR 8   /* batch-1 tile: 1 x row by 8 weight rows */
#define VF_PV_CHUNKS 4 /* attention P.V: head_dim slices of 4 vectors per pass */
#define VF_GEMM_MR 8   /* prefill micro-tile: 8 x rows by 2 vectors of outputs = 16 accumulators */

static inline __mmask16 vf__mask(int n) { return (__mmask16)((1u << n) - 1); }

static inline vf vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf vf_set1(float a) { return _mm512_set1_ps(a); }
static inline vf vf_loadu(const float *p) { return _mm512_loadu_ps(p); }
static inline vf vf_loadu_n(const float *p, int n) { return _mm512_maskz_loadu_ps(vf__mask(n), p); }
static inline void vf_storeu(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline void vf_storeu_n(float *p, vf v, int n) { _mm512_mask_storeu_ps(p, vf__mask(n), v); }
static inline vf vf_load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline vf vf_load_f16_n(const uint16_t *p, int n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(vf__mask(n), p));
}
static inline vf vf__bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
static inline vf vf_load_bf16(const uint16_t *p) { return vf__bf16(_mm256_loadu_si256((const __m256i *)p)); }
static inline vf vf_load_bf16_n(const uint16_t *p, int n) { return vf__bf16(_mm256_maskz_loadu_epi16(vf__mask(n), p)); }
/* int8 weights (ENG_Q8) widened to f32; the _n form reads only n bytes (BW+VL masked load). */
static inline vf vf_load_i8(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)p)));
}
static inline vf vf_load_i8_n(const int8_t *p, int n) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(vf__mask(n), p)));
}
static inline void vf_store_f16(uint16_t *p, vf v) {
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
static inline void vf_store_f16_n(uint16_t *p, vf v, int n) {
    _mm256_mask_storeu_epi16(p, vf__mask(n), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
/* v rounded to the nearest f16 and back. */
static inline vf vf_round_f16(vf v) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vf_min(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); } /* a * b + c */
static inline vf vf_abs(vf a) { return _mm512_abs_ps(a); }
/* mag (>= 0) with the sign of sgn */
static inline vf vf_copysign(vf mag, vf sgn) {
    return _mm512_or_ps(mag, _mm512_and_ps(sgn, _mm512_set1_ps(-0.0f)));
}
static inline vf vf_select_lt(vf a, vf b, vf if_lt, vf otherwise) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), otherwise, if_lt);
}
static inline vf vf_round(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* 2^n for integral n in [-126, 127] */
static inline vf vf_exp2i(vf n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
static inline float vf_hsum(vf v) { return _mm512_reduce_add_ps(v); }
static inline float vf_hmax(vf v) { return _mm512_reduce_max_ps(v); }
/* x[2i] <-> x[2i+1] */
static inline vf vf_swap_pairs(vf v) { return _mm512_permute_ps(v, 0xb1); }

/* Lane j of the result = sum of the lanes of a[j], for 16 vectors: a transposing tree of 45 instructions instead
 * of 16 separate horizontal sums. The tree leaves lane 4q+r holding input 4r+q's sum, so it reads its inputs in
 * that (self-inverse) order. */
static inline vf vf_hsum_tile(const vf *a) {
    vf w[8], u[4], g[2];
    for (int i = 0; i < 8; i++) {
        vf x = a[4 * ((2 * i) % 4) + (2 * i) / 4], y = a[4 * ((2 * i + 1) % 4) + (2 * i + 1) / 4];
        w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xee));
    }
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; i++)
        g[i] = _mm512_add_ps(_mm512_unpacklo_ps(u[2 * i], u[2 * i + 1]), _mm512_unpackhi_ps(u[2 * i], u[2 * i + 1]));
    __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(g[0]), _mm512_castps_pd(g[1]));
    __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(g[0]), _mm512_castps_pd(g[1]));
    return _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
}

/* r[j] <- column j of the 16 x 16 matrix whose rows are r[0..15]. */
static inline void vf_transpose(vf *r) {
    vf t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { /* r[4g + c], quad q: rows 4g..4g+3 of column 4q + c */
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
        __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
        r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
    }
}

#endif
