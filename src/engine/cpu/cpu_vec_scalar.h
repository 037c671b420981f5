/* cpu_vec_scalar.h - the vector vocabulary of cpu_kern.h with one-lane "vectors": the portable fallback for
 * machines without AVX2 (and for other architectures). The compiler may still auto-vectorize it. */
#ifndef SUGGESTD_ENGINE_CPU_VEC_SCALAR_H
#define SUGGESTD_ENGINE_CPU_VEC_SCALAR_H

#include <math.h>
#include <stdint.h>

#include "fp16.h"

typedef float vf;
#define VF_N 1
#define VF_TILE_NR 4
#define VF_WIDE_NR 1 /* no separate batch-1 tile */
#define VF_PV_CHUNKS 4
#define VF_GEMM_MR 4

static inline vf vf_zero(void) { return 0.0f; }
static inline vf vf_set1(float a) { return a; }
static inline vf vf_loadu(const float *p) { return *p; }
static inline vf vf_loadu_n(const float *p, int n) { return n > 0 ? *p : 0.0f; }
static inline void vf_storeu(float *p, vf v) { *p = v; }
static inline void vf_storeu_n(float *p, vf v, int n) {
    if (n > 0) *p = v;
}
static inline vf vf_load_f16(const uint16_t *p) { return fp16_to_f32(*p); }
static inline vf vf_load_f16_n(const uint16_t *p, int n) { return n > 0 ? fp16_to_f32(*p) : 0.0f; }
static inline vf vf_load_bf16(const uint16_t *p) { return bf16_to_f32(*p); }
static inline vf vf_load_bf16_n(const uint16_t *p, int n) { return n > 0 ? bf16_to_f32(*p) : 0.0f; }
static inline vf vf_load_i8(const int8_t *p) { return (float)*p; }
static inline vf vf_load_i8_n(const int8_t *p, int n) { return n > 0 ? (float)*p : 0.0f; }
static inline void vf_store_f16(uint16_t *p, vf v) { *p = f32_to_fp16(v); }
static inline void vf_store_f16_n(uint16_t *p, vf v, int n) {
    if (n > 0) *p = f32_to_fp16(v);
}
static inline vf vf_round_f16(vf v) { return fp16_to_f32(f32_to_fp16(v)); }

static inline vf vf_add(vf a, vf b) { return a + b; }
static inline vf vf_sub(vf a, vf b) { return a - b; }
static inline vf vf_mul(vf a, vf b) { return a * b; }
static inline vf vf_div(vf a, vf b) { return a / b; }
static inline vf vf_max(vf a, vf b) { return a > b ? a : b; }
static inline vf vf_min(vf a, vf b) { return a < b ? a : b; }
static inline vf vf_fma(vf a, vf b, vf c) { return a * b + c; } /* not fused: fmaf() is a libm call without FMA */
static inline vf vf_abs(vf a) { return fabsf(a); }
static inline vf vf_copysign(vf mag, vf sgn) { return copysignf(mag, sgn); }
static inline vf vf_select_lt(vf a, vf b, vf if_lt, vf otherwise) { return a < b ? if_lt : otherwise; }
static inline vf vf_round(vf a) { return rintf(a); }
static inline vf vf_exp2i(vf n) { return fp32_from_bits((uint32_t)((int32_t)n + 127) << 23); }
static inline float vf_hsum(vf v) { return v; }
static inline float vf_hmax(vf v) { return v; }
static inline vf vf_hsum_tile(const vf *a) { return a[0]; }
static inline void vf_transpose(vf *r) { (void)r; }

#endif
