/* cpu_impl.h - what the cpu and ref backends share, and the kernel table each SIMD level fills.
 *
 * The hot loops of the cpu backend are written once, in cpu_kern.h, over a small vector vocabulary (cpu_vec_*.h);
 * cpu_scalar.c, cpu_avx2.c and cpu_avx512.c compile them with their vocabulary and flags, and cpu.c picks one table
 * when a backend is created. cpu.c owns threads and memory; the kernels own no state. */
#ifndef SUGGESTD_ENGINE_CPU_IMPL_H
#define SUGGESTD_ENGINE_CPU_IMPL_H

#include <math.h>
#include <stdint.h>

#include "eng.h"

/* RoPE angle of rotary pair i at position pos, computed as HF does in f32: inv_freq = 1 / 10000^(2i/dim), then
 * pos * inv_freq. Both backends call this (and then libm sinf/cosf), so their angles agree bit for bit at every
 * position. */
static inline float cpu__rope_angle(int32_t pos, int32_t i, int32_t rotary_dim) {
    float inv_freq = 1.0f / powf(10000.0f, (float)(2 * i) / (float)rotary_dim);
    return (float)pos * inv_freq;
}

/* sqrt(2/pi), the NewGELU constant, as the f32 that HF multiplies by. */
#define CPU_GELU_C 0.7978845608028654f

/* Matmul blocking (see cpu_kern.h). Below CPU_MM_PACK_T rows, weights are widened in registers as they stream
 * (decode); from it on, blocks of CPU_MM_NB weight rows x CPU_MM_KC columns are widened and packed once into a
 * per-thread buffer and reused for all rows (prefill). */
#define CPU_MM_PACK_T 32
#define CPU_MM_NB 128
#define CPU_MM_KC 1024
#define CPU_MM_WBUF_FLOATS ((size_t)CPU_MM_NB * CPU_MM_KC)

/* Packed from CPU_MM_PACK_T rows, and already from 4 when K is small: a streamed dot product pays one horizontal
 * sum per output for only K / VF_N FMAs, which at K <= 128 costs more than packing the weights once (measured on
 * N = 51200 lm_heads: K = 64, T = 16 ran at 38 GFLOP/s streamed and 94 packed on one AVX2 thread; K = 256 was a wash
 * at 16 rows). So small models gain from batched decode steps too. */
static inline int cpu__mm_packed(int64_t T, int64_t K) { return T >= CPU_MM_PACK_T || (T >= 4 && K <= 128); }

/* One matmul call as the kernels see it: y[T, N] (+)= x[T, K] . w[N, K]^T + bias[N]. Activations are f32; the
 * bias has been converted to f32 by cpu.c. For ENG_Q8 weights the kernels compute s[n] * (x . q[n]): wscale holds
 * the N row scales (eng_q8_scales), applied once per output when it is stored. */
typedef struct cpu__matmul {
    float *y;
    int64_t ys;
    const float *x;
    int64_t xs;
    const void *w;
    int64_t ws;
    eng_dtype wdt;
    const float *wscale; /* [N] row scales of ENG_Q8 weights, else NULL */
    const float *bias;   /* [N] or NULL */
    int64_t T, N, K;
    int accumulate;
} cpu__matmul;

/* One attention call for one layer. k, v: that layer's [n_blocks][ENG_KV_BLOCK][d_model] of kvdt (f32 or f16). */
typedef struct cpu__attn {
    float *out;
    int64_t os;
    const float *q;
    int64_t qs;
    const void *k, *v;
    eng_dtype kvdt;
    int64_t d_model;
    int32_t head_dim;
} cpu__attn;

/* Query rows handled together by one attention work item (they share the K/V reads). */
#define CPU_ATTN_ROWS 4

typedef struct cpu__kernels {
    const char *name; /* "scalar", "avx2", "avx512" */
    /* Rows [n_lo, n_hi) of w (all T rows of x). wbuf: CPU_MM_WBUF_FLOATS floats, 64-byte aligned, used when
     * T >= CPU_MM_PACK_T. */
    void (*matmul)(const cpu__matmul *m, int64_t n_lo, int64_t n_hi, float *wbuf);
    /* Rows t0 .. t0+nt-1 (nt <= CPU_ATTN_ROWS, indices within sequence s), heads [h0, h1). scratch:
     * (h1 - h0) * nt * (keys rounded up to ENG_KV_BLOCK + head_dim) floats. */
    void (*attn_rows)(const cpu__attn *a, const eng_seq *s, int32_t t0, int32_t nt, int32_t h0, int32_t h1,
                      float *scratch);
    void (*to_f32)(float *dst, const void *src, eng_dtype dt, int64_t n);
    void (*from_f32)(void *dst, eng_dtype dt, const float *src, int64_t n); /* round to nearest even */
    void (*layernorm_row)(float *y, const float *x, const float *w, const float *b, int64_t n, float eps);
    void (*gelu)(float *x, int64_t n);
    void (*add)(float *y, const float *x, int64_t n);
    /* One row of n_head heads; cs[2i] = cs[2i+1] = cos, sn[2i] = -sin, sn[2i+1] = +sin of pair i's angle. */
    void (*rope_row)(float *x, int32_t n_head, int32_t head_dim, int32_t rotary_dim, const float *cs,
                     const float *sn);
} cpu__kernels;

extern const cpu__kernels cpu__kernels_scalar;
#ifdef SUGGESTD_CPU_X86
extern const cpu__kernels cpu__kernels_avx2;
extern const cpu__kernels cpu__kernels_avx512;
#endif

#endif
