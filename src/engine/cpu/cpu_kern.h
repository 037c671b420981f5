/* cpu_kern.h - the cpu backend's kernels, written once over the vector vocabulary of cpu_vec_*.h.
 *
 * Not a normal header: a SIMD file includes its vocabulary, defines CPU_KERN_TABLE (the exported table's name) and
 * CPU_KERN_NAME, then includes this, so every kernel below is compiled once per instruction set.
 *
 * DESIGN
 * - Decode (T < CPU_MM_PACK_T rows) is bandwidth bound by design: weights stream from memory exactly once, widened
 *   in registers, in dot-product tiles of up to 4 activation rows by VF_TILE_NR (or, for one row, VF_WIDE_NR)
 *   weight rows that keep vector accumulators along K and fold them at the end (vf_hsum_tile). Weight rows are
 *   only 2-8 KB, too short for the hardware prefetcher, so each tile prefetches the next tile's rows; more row
 *   tiles reuse the few-KB weight tile from L1.
 * - Prefill is compute bound: an outer-product GEMM over weight blocks that are widened and packed once into a
 *   per-thread buffer (see mm_packed); no horizontal sums, and x is read as broadcasts.
 * - Attention works on up to CPU_ATTN_ROWS query rows and a group of heads: scores with the same dot-product tiles
 *   (K rows are the "weights"), an f32 softmax, probabilities rounded to the cache dtype, then P.V in
 *   outer-product form (each V row is read once for all rows and broadcast-multiplied). Key blocks are the outer
 *   loop so the cache is read in whole rows.
 * - Tiles are instantiated for constant shapes so the accumulators live in registers; a switch picks one.
 * - int8 weights (ENG_Q8, eng.h) go through the same tiles and panels: widened to f32 as they load (sign-extend and
 *   convert), summed unscaled, and each output is multiplied by its row's scale once when it is stored (mm_store,
 *   gemm_body), since y = s_n * sum_k x_k q_nk. Activations stay f32. */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_impl.h"
#include "fp16.h"

#ifndef CPU_KERN_TABLE
#error "define CPU_KERN_TABLE and include a cpu_vec_*.h before cpu_kern.h"
#endif

#define KI static inline __attribute__((always_inline))
#define KMIN(a, b) ((a) < (b) ? (a) : (b))

/* A 1 x VF_WIDE_NR tile (one activation row against more weight rows) serves batch-1 rows. Wider is not better:
 * rows of a power-of-two width (2 KB for K = 1024 f16) fall into the same L1 sets, and 16 of them plus their
 * prefetched successors overflow the ways (measured: 1x16 streams at half the speed of 1x8). */
#define HAVE_WIDE (VF_WIDE_NR > VF_TILE_NR)

/* ---- loads by element type ------------------------------------------------------------------------------- */

/* Bytes of one weight element as the kernels stream it (ENG_Q8: the int8 value; its scale is applied at the store). */
KI size_t w_esz(eng_dtype dt) { return dt == ENG_F32 ? 4 : dt == ENG_Q8 ? 1 : 2; }

KI vf ld_w(const void *w, int64_t i, eng_dtype dt) {
    if (dt == ENG_Q8) return vf_load_i8((const int8_t *)w + i);
    if (dt == ENG_F16) return vf_load_f16((const uint16_t *)w + i);
    if (dt == ENG_BF16) return vf_load_bf16((const uint16_t *)w + i);
    return vf_loadu((const float *)w + i);
}

KI vf ld_w_n(const void *w, int64_t i, eng_dtype dt, int n) {
    if (dt == ENG_Q8) return vf_load_i8_n((const int8_t *)w + i, n);
    if (dt == ENG_F16) return vf_load_f16_n((const uint16_t *)w + i, n);
    if (dt == ENG_BF16) return vf_load_bf16_n((const uint16_t *)w + i, n);
    return vf_loadu_n((const float *)w + i, n);
}

/* Decode prefetches go to L1 (measured faster than L2 for both K = 1024 and 4096). */
#define CPU_MM_PF_LOCALITY 3

/* ---- dot-product tiles ------------------------------------------------------------------------------------- */

/* r[i*NR + j] = sum_k x[i*xs + k] * w[j*ws + k] for i < MR, j < NR. With PF, also prefetches the same columns of
 * the NR rows after the tile: a decode sweep reads each weight row (2-8 KB) once, too short a stream for the
 * hardware prefetcher to ramp up on, so the next tile is requested while this one computes. */
KI void tile_body(const int MR, const int NR, const eng_dtype dt, const int PF, const float *x, int64_t xs,
                  const void *w, int64_t ws, int64_t K, float *r) {
    const size_t esz = w_esz(dt);
    vf acc[16];
#pragma GCC unroll 16
    for (int a = 0; a < MR * NR; a++) acc[a] = vf_zero();
    int64_t k = 0;
    for (; k + VF_N <= K; k += VF_N) {
        if (PF && (VF_N * esz >= 64 || (k & (64 / esz - 1)) == 0)) {
#pragma GCC unroll 16
            for (int j = 0; j < NR; j++)
                __builtin_prefetch((const char *)w + (size_t)((NR + j) * ws + k) * esz, 0, CPU_MM_PF_LOCALITY);
        }
        vf xv[4];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) xv[i] = vf_loadu(x + i * xs + k);
#pragma GCC unroll 16
        for (int j = 0; j < NR; j++) {
            vf wv = ld_w(w, j * ws + k, dt);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) acc[i * NR + j] = vf_fma(xv[i], wv, acc[i * NR + j]);
        }
    }
    if (k < K) {
        int n = (int)(K - k);
        vf xv[4];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) xv[i] = vf_loadu_n(x + i * xs + k, n);
#pragma GCC unroll 16
        for (int j = 0; j < NR; j++) {
            vf wv = ld_w_n(w, j * ws + k, dt, n);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) acc[i * NR + j] = vf_fma(xv[i], wv, acc[i * NR + j]);
        }
    }
    if (MR * NR == VF_N) {
        vf_storeu(r, vf_hsum_tile(acc));
    } else {
#pragma GCC unroll 16
        for (int a = 0; a < MR * NR; a++) r[a] = vf_hsum(acc[a]);
    }
}

typedef void (*tile_fn)(const float *x, int64_t xs, const void *w, int64_t ws, int64_t K, float *r);

#define TILE(DT, MR, NR, PF, NAME)                                                                              \
    static void tile_##DT##_##MR##_##NAME(const float *x, int64_t xs, const void *w, int64_t ws, int64_t K,   \
                                          float *r) {                                                         \
        tile_body(MR, NR, ENG_##DT, PF, x, xs, w, ws, K, r);                                                  \
    }
#define TILES(DT)                                                                                               \
    TILE(DT, 1, 1, 0, one) TILE(DT, 2, 1, 0, one) TILE(DT, 3, 1, 0, one) TILE(DT, 4, 1, 0, one)               \
    TILE(DT, 1, VF_TILE_NR, 0, nr) TILE(DT, 2, VF_TILE_NR, 0, nr) TILE(DT, 3, VF_TILE_NR, 0, nr)              \
    TILE(DT, 4, VF_TILE_NR, 0, nr) TILE(DT, 1, VF_TILE_NR, 1, nrpf) TILE(DT, 2, VF_TILE_NR, 1, nrpf)          \
    TILE(DT, 3, VF_TILE_NR, 1, nrpf) TILE(DT, 4, VF_TILE_NR, 1, nrpf) TILE(DT, 1, VF_WIDE_NR, 1, widepf)      \
    TILE(DT, 1, VF_N, 0, row)
TILES(F32)
TILES(F16)
TILES(BF16)
TILES(Q8)
#define TILE_ROW(DT, S)                                                                                         \
    {{tile_##DT##_1_one, tile_##DT##_1_##S},                                                                    \
     {tile_##DT##_2_one, tile_##DT##_2_##S},                                                                    \
     {tile_##DT##_3_one, tile_##DT##_3_##S},                                                                    \
     {tile_##DT##_4_one, tile_##DT##_4_##S}}
/* tiles[dtype][MR - 1][NR == VF_TILE_NR]; the _pf ones prefetch the next tile's rows (decode); row: 1 x VF_N, one
 * tree reduction (attention, one query row against a block of keys). Indexed by eng_dtype: F32, F16, BF16, Q8 (a
 * Q8 tile returns the unscaled sums x . q; mm_store applies the row scale). */
static const tile_fn tiles[4][4][2] = {TILE_ROW(F32, nr), TILE_ROW(F16, nr), TILE_ROW(BF16, nr), TILE_ROW(Q8, nr)};
static const tile_fn tiles_pf[4][4][2] = {TILE_ROW(F32, nrpf), TILE_ROW(F16, nrpf), TILE_ROW(BF16, nrpf),
                                          TILE_ROW(Q8, nrpf)};
static const tile_fn tiles_wide_pf[4] = {tile_F32_1_widepf, tile_F16_1_widepf, tile_BF16_1_widepf, tile_Q8_1_widepf};
static const tile_fn tiles_row[4] = {tile_F32_1_row, tile_F16_1_row, tile_BF16_1_row, tile_Q8_1_row}; /* attention */

/* ---- matmul ------------------------------------------------------------------------------------------------ */

/* y[t0 + i][n0 + j] = r[i][j] (* the row scale of Q8 weights) + bias (+ the old y when accumulating) for an
 * mr x nr tile. */
static void mm_store(const cpu__matmul *m, int64_t t0, int mr, int64_t n0, int nr, const float *r) {
    for (int i = 0; i < mr; i++) {
        float *y = m->y + (t0 + i) * m->ys + n0;
        for (int j = 0; j < nr; j++) {
            float v = r[i * nr + j];
            if (m->wscale) v *= m->wscale[n0 + j];
            if (m->bias) v += m->bias[n0 + j];
            if (m->accumulate) v += y[j];
            y[j] = v;
        }
    }
}

/* Decode: weight rows [n_lo, n_hi) stream from memory once, widened in registers. */
static void mm_stream(const cpu__matmul *m, int64_t n_lo, int64_t n_hi) {
    const size_t esz = w_esz(m->wdt);
    const int wide = HAVE_WIDE && m->T == 1;
    float r[16];
    for (int64_t n0 = n_lo; n0 < n_hi;) {
        int nr = wide && n_hi - n0 >= VF_WIDE_NR ? VF_WIDE_NR : n_hi - n0 >= VF_TILE_NR ? VF_TILE_NR : 1;
        const void *w = (const char *)m->w + (size_t)(n0 * m->ws) * esz;
        for (int64_t t0 = 0; t0 < m->T; t0 += 4) {
            int mr = (int)KMIN(4, m->T - t0);
            tile_fn f = nr == VF_WIDE_NR && wide ? tiles_wide_pf[m->wdt] : tiles_pf[m->wdt][mr - 1][nr != 1];
            f(m->x + t0 * m->xs, m->xs, w, m->ws, m->K, r);
            mm_store(m, t0, mr, n0, nr, r);
        }
        n0 += nr;
    }
}

/* Prefill is an outer-product GEMM: a block of weight rows is widened and packed into panels of PR rows laid out
 * k-major (panel[k][PR], an in-register transpose per VF_N x VF_N block), so one k step of a VF_GEMM_MR x PR
 * micro-tile is two aligned vector loads of the panel, VF_GEMM_MR broadcasts of x and 2 * VF_GEMM_MR FMAs: no
 * horizontal sums, and 8x less cache traffic per FMA than the dot-product tiles. */
#define PR (2 * VF_N)

static float ld1(const void *w, int64_t i, eng_dtype dt) {
    if (dt == ENG_Q8) return (float)((const int8_t *)w)[i];
    if (dt == ENG_F16) return fp16_to_f32(((const uint16_t *)w)[i]);
    if (dt == ENG_BF16) return bf16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

/* dst[k * PR + r] = w[n0 + r][kb + k] for r < nr (0 for nr <= r < PR), k < kc. Also prefetches the same columns
 * of the next PR rows: the next panel mm_packed packs (the hardware prefetcher does poorly on 32 short streams). */
KI void pack_body(const eng_dtype dt, float *dst, const cpu__matmul *m, int64_t n0, int nr, int64_t kb, int64_t kc) {
    const size_t esz = w_esz(dt);
    const char *w0 = (const char *)m->w + (size_t)(n0 * m->ws + kb) * esz;
    int64_t k = 0;
#if VF_N > 1
    for (; k + VF_N <= kc; k += VF_N)
        for (int h = 0; h < 2; h++) {
            if (VF_N * esz >= 64 || (k & (64 / esz - 1)) == 0)
                for (int r = 0; r < VF_N; r++)
                    __builtin_prefetch(w0 + (size_t)((PR + h * VF_N + r) * m->ws + k) * esz, 0, 3);
            vf rows[VF_N];
#pragma GCC unroll 16
            for (int r = 0; r < VF_N; r++)
                rows[r] = h * VF_N + r < nr ? ld_w(w0 + (size_t)((h * VF_N + r) * m->ws) * esz, k, dt) : vf_zero();
            vf_transpose(rows);
#pragma GCC unroll 16
            for (int j = 0; j < VF_N; j++) vf_storeu(dst + (k + j) * PR + h * VF_N, rows[j]);
        }
#endif
    for (; k < kc; k++)
        for (int r = 0; r < PR; r++) dst[k * PR + r] = r < nr ? ld1(w0 + (size_t)(r * m->ws) * esz, k, dt) : 0.0f;
}

static void pack_panel(float *dst, const cpu__matmul *m, int64_t n0, int nr, int64_t kb, int64_t kc) {
    if (m->wdt == ENG_Q8) /* widened, unscaled: gemm_body applies the row scale at the store */
        pack_body(ENG_Q8, dst, m, n0, nr, kb, kc);
    else if (m->wdt == ENG_F16)
        pack_body(ENG_F16, dst, m, n0, nr, kb, kc);
    else if (m->wdt == ENG_BF16)
        pack_body(ENG_BF16, dst, m, n0, nr, kb, kc);
    else
        pack_body(ENG_F32, dst, m, n0, nr, kb, kc);
}

/* y[t0 + i][n0 .. n0 + nr) (+)= sum_k x[i][k] * panel[k][..] for i < MR; the first K block also adds the bias and
 * (if accumulating) the old y, later blocks add to y. */
KI void gemm_body(const int MR, const cpu__matmul *m, int64_t t0, int64_t n0, int nr, const float *x,
                  const float *wp, int64_t kc, int first) {
    vf acc[2 * 12];
#pragma GCC unroll 24
    for (int a = 0; a < 2 * MR; a++) acc[a] = vf_zero();
    for (int64_t k = 0; k < kc; k++) {
        vf w0 = vf_loadu(wp + k * PR), w1 = vf_loadu(wp + k * PR + VF_N);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            vf b = vf_set1(x[i * m->xs + k]);
            acc[2 * i] = vf_fma(b, w0, acc[2 * i]);
            acc[2 * i + 1] = vf_fma(b, w1, acc[2 * i + 1]);
        }
    }
    const int c0 = KMIN(nr, VF_N), c1 = nr - c0;
    const int add_y = !first || m->accumulate, add_b = first && m->bias;
    vf b0 = vf_zero(), b1 = vf_zero();
    if (add_b) {
        b0 = c0 == VF_N ? vf_loadu(m->bias + n0) : vf_loadu_n(m->bias + n0, c0);
        b1 = c1 == VF_N ? vf_loadu(m->bias + n0 + VF_N) : vf_loadu_n(m->bias + n0 + VF_N, c1);
    }
    if (m->wscale) { /* Q8: this K block's partial sums times the row scales (s distributes over the blocks) */
        vf s0 = c0 == VF_N ? vf_loadu(m->wscale + n0) : vf_loadu_n(m->wscale + n0, c0);
        vf s1 = c1 == VF_N ? vf_loadu(m->wscale + n0 + VF_N) : vf_loadu_n(m->wscale + n0 + VF_N, c1);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) acc[2 * i] = vf_mul(acc[2 * i], s0), acc[2 * i + 1] = vf_mul(acc[2 * i + 1], s1);
    }
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        float *y = m->y + (t0 + i) * m->ys + n0;
        vf v0 = vf_add(acc[2 * i], b0), v1 = vf_add(acc[2 * i + 1], b1);
        if (c0 == VF_N && c1 == VF_N) {
            if (add_y) v0 = vf_add(v0, vf_loadu(y)), v1 = vf_add(v1, vf_loadu(y + VF_N));
            vf_storeu(y, v0);
            vf_storeu(y + VF_N, v1);
        } else {
            if (add_y) v0 = vf_add(v0, vf_loadu_n(y, c0)), v1 = vf_add(v1, vf_loadu_n(y + VF_N, c1));
            vf_storeu_n(y, v0, c0);
            if (c1 > 0) vf_storeu_n(y + VF_N, v1, c1);
        }
    }
}

typedef void (*gemm_fn)(const cpu__matmul *m, int64_t t0, int64_t n0, int nr, const float *x, const float *wp,
                        int64_t kc, int first);
#define GEMM(MR)                                                                                                \
    static void gemm_##MR(const cpu__matmul *m, int64_t t0, int64_t n0, int nr, const float *x, const float *wp, \
                          int64_t kc, int first) {                                                             \
        gemm_body(MR, m, t0, n0, nr, x, wp, kc, first);                                                        \
    }
GEMM(1) GEMM(2) GEMM(3) GEMM(4) GEMM(5) GEMM(6) GEMM(7) GEMM(8)
static const gemm_fn gemms[8] = {gemm_1, gemm_2, gemm_3, gemm_4, gemm_5, gemm_6, gemm_7, gemm_8};

/* Prefill: for each block of CPU_MM_NB weight rows and CPU_MM_KC columns, pack once (L2), then sweep all T rows in
 * micro-tiles; the x slice of a micro-tile (VF_GEMM_MR x KC) stays in L1 across the block's panels. Column blocks
 * are the outer loop so that consecutive panels are consecutive rows in memory, which pack_body prefetches. */
static void mm_packed(const cpu__matmul *m, int64_t n_lo, int64_t n_hi, float *wbuf) {
    for (int64_t kb = 0; kb < m->K; kb += CPU_MM_KC) {
        const int64_t kc = KMIN(CPU_MM_KC, m->K - kb);
        for (int64_t nb = n_lo; nb < n_hi; nb += CPU_MM_NB) {
            const int64_t nbn = KMIN(CPU_MM_NB, n_hi - nb), np = (nbn + PR - 1) / PR;
            for (int64_t p = 0; p < np; p++)
                pack_panel(wbuf + p * CPU_MM_KC * PR, m, nb + p * PR, (int)KMIN(PR, nbn - p * PR), kb, kc);
            for (int64_t t0 = 0; t0 < m->T; t0 += VF_GEMM_MR) {
                const int mr = (int)KMIN(VF_GEMM_MR, m->T - t0);
                for (int64_t p = 0; p < np; p++)
                    gemms[mr - 1](m, t0, nb + p * PR, (int)KMIN(PR, nbn - p * PR), m->x + t0 * m->xs + kb,
                                  wbuf + p * CPU_MM_KC * PR, kc, kb == 0);
            }
        }
    }
}

static void matmul(const cpu__matmul *m, int64_t n_lo, int64_t n_hi, float *wbuf) {
    if (cpu__mm_packed(m->T, m->K) && m->K > 0) /* K = 0: no column block would write y = bias */
        mm_packed(m, n_lo, n_hi, wbuf);
    else
        mm_stream(m, n_lo, n_hi);
}

/* ---- element-wise -------------------------------------------------------------------------------------------- */

static void to_f32(float *dst, const void *src, eng_dtype dt, int64_t n) {
    if (dt == ENG_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    int64_t i = 0;
    for (; i + VF_N <= n; i += VF_N) vf_storeu(dst + i, ld_w(src, i, dt));
    if (i < n) vf_storeu_n(dst + i, ld_w_n(src, i, dt, (int)(n - i)), (int)(n - i));
}

static void from_f32(void *dst, eng_dtype dt, const float *src, int64_t n) {
    if (dt == ENG_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    } else if (dt == ENG_F16) {
        uint16_t *d = dst;
        int64_t i = 0;
        for (; i + VF_N <= n; i += VF_N) vf_store_f16(d + i, vf_loadu(src + i));
        if (i < n) vf_store_f16_n(d + i, vf_loadu_n(src + i, (int)(n - i)), (int)(n - i));
    } else {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
    }
}

static void layernorm_row(float *y, const float *x, const float *w, const float *b, int64_t n, float eps) {
    vf vs = vf_zero();
    int64_t i = 0;
    for (; i + VF_N <= n; i += VF_N) vs = vf_add(vs, vf_loadu(x + i));
    float sum = vf_hsum(vs);
    for (; i < n; i++) sum += x[i];
    const float mean = sum / (float)n;
    const vf vm = vf_set1(mean);
    vf vq = vf_zero();
    for (i = 0; i + VF_N <= n; i += VF_N) {
        vf d = vf_sub(vf_loadu(x + i), vm);
        vq = vf_fma(d, d, vq);
    }
    float sq = vf_hsum(vq);
    for (; i < n; i++) sq += (x[i] - mean) * (x[i] - mean);
    const vf vr = vf_set1(1.0f / sqrtf(sq / (float)n + eps));
    for (i = 0; i + VF_N <= n; i += VF_N) {
        vf d = vf_mul(vf_sub(vf_loadu(x + i), vm), vr);
        vf_storeu(y + i, vf_fma(d, vf_loadu(w + i), vf_loadu(b + i)));
    }
    if (i < n) {
        int k = (int)(n - i);
        vf d = vf_mul(vf_sub(vf_loadu_n(x + i, k), vm), vr);
        vf_storeu_n(y + i, vf_fma(d, vf_loadu_n(w + i, k), vf_loadu_n(b + i, k)), k);
    }
}

/* e^x, Cephes expf: 2^n * poly(r) with x = n ln2 + r; about 1 ulp. x is clamped to [-87.3, 88.3], which keeps
 * 2^n a normal number (callers never need smaller results than e^-87). */
KI vf v_exp(vf x) {
    x = vf_min(vf_max(x, vf_set1(-87.3f)), vf_set1(88.3f));
    vf n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_fma(n, vf_set1(-0.693359375f), x);
    r = vf_fma(n, vf_set1(2.12194440e-4f), r);
    vf p = vf_set1(1.9875691500e-4f);
    p = vf_fma(p, r, vf_set1(1.3981999507e-3f));
    p = vf_fma(p, r, vf_set1(8.3334519073e-3f));
    p = vf_fma(p, r, vf_set1(4.1665795894e-2f));
    p = vf_fma(p, r, vf_set1(1.6666665459e-1f));
    p = vf_fma(p, r, vf_set1(5.0000001201e-1f));
    p = vf_add(vf_fma(p, vf_mul(r, r), r), vf_set1(1.0f));
    return vf_mul(p, vf_exp2i(n));
}

/* tanh, Cephes tanhf: odd polynomial below |y| = 0.625, 1 - 2/(e^2|y| + 1) above; within 3e-7 relative of libm
 * tanhf (checked by the parity test through gelu). */
KI vf v_tanh(vf y) {
    vf z = vf_abs(y);
    vf e = v_exp(vf_add(z, z));
    vf big = vf_sub(vf_set1(1.0f), vf_div(vf_set1(2.0f), vf_add(e, vf_set1(1.0f))));
    vf s = vf_mul(z, z);
    vf p = vf_set1(-5.70498872745e-3f);
    p = vf_fma(p, s, vf_set1(2.06390887954e-2f));
    p = vf_fma(p, s, vf_set1(-5.37397155531e-2f));
    p = vf_fma(p, s, vf_set1(1.33314422036e-1f));
    p = vf_fma(p, s, vf_set1(-3.33332819422e-1f));
    vf small = vf_fma(vf_mul(p, s), z, z);
    return vf_copysign(vf_select_lt(z, vf_set1(0.625f), small, big), y);
}

/* gelu_new with the same f32 operations as HF (and ref.c) up to the tanh, so only the tanh differs. */
KI vf v_gelu(vf u) {
    vf u3 = vf_mul(vf_mul(u, u), u);
    vf in = vf_mul(vf_set1(CPU_GELU_C), vf_add(u, vf_mul(vf_set1(0.044715f), u3)));
    return vf_mul(vf_mul(vf_set1(0.5f), u), vf_add(vf_set1(1.0f), v_tanh(in)));
}

static void gelu(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + VF_N <= n; i += VF_N) vf_storeu(x + i, v_gelu(vf_loadu(x + i)));
    if (i < n) vf_storeu_n(x + i, v_gelu(vf_loadu_n(x + i, (int)(n - i))), (int)(n - i));
}

static void add(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + VF_N <= n; i += VF_N) vf_storeu(y + i, vf_add(vf_loadu(y + i), vf_loadu(x + i)));
    for (; i < n; i++) y[i] += x[i];
}

/* x0' = x0 c - x1 s, x1' = x1 c + x0 s as x*cs + swap(x)*sn with sn = (-s, +s): the same two products and one
 * sum per element as ref.c, so results are bit-identical. */
static void rope_row(float *x, int32_t n_head, int32_t head_dim, int32_t rotary_dim, const float *cs,
                     const float *sn) {
    for (int32_t h = 0; h < n_head; h++) {
        float *v = x + (int64_t)h * head_dim;
        int32_t i = 0;
#if VF_N > 1
        for (; i + VF_N <= rotary_dim; i += VF_N) {
            vf a = vf_loadu(v + i);
            vf_storeu(v + i, vf_add(vf_mul(a, vf_loadu(cs + i)), vf_mul(vf_swap_pairs(a), vf_loadu(sn + i))));
        }
#endif
        for (; i < rotary_dim; i += 2) {
            float x0 = v[i], x1 = v[i + 1];
            v[i] = x0 * cs[i] + x1 * sn[i];
            v[i + 1] = x1 * cs[i + 1] + x0 * sn[i + 1];
        }
    }
}

/* ---- attention --------------------------------------------------------------------------------------------- */

/* One key block of P.V for one head: O[i][0 .. (NC-1)*VF_N + tail) += sum_{j < jn} P[i][j] * v[j][...] for i < NT,
 * with O (row stride os) in L1 between blocks. v points at the head's slice of the block's first key row. */
KI void pv_body(const int NT, const int NC, const eng_dtype dt, float *O, int64_t os, const void *v, int64_t vs,
                const float *P, int64_t ps, int32_t jn, int tail) {
    const size_t esz = dt == ENG_F16 ? 2 : 4;
    vf acc[16];
#pragma GCC unroll 4
    for (int i = 0; i < NT; i++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
            acc[i * NC + c] = c == NC - 1 && tail < VF_N ? vf_loadu_n(O + i * os + c * VF_N, tail)
                                                         : vf_loadu(O + i * os + c * VF_N);
    for (int32_t j = 0; j < jn; j++) {
        const void *vr = (const char *)v + (size_t)(j * vs) * esz;
        vf vv[4];
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
            vv[c] = c == NC - 1 && tail < VF_N ? ld_w_n(vr, c * VF_N, dt, tail) : ld_w(vr, c * VF_N, dt);
#pragma GCC unroll 4
        for (int i = 0; i < NT; i++) {
            vf p = vf_set1(P[i * ps + j]);
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) acc[i * NC + c] = vf_fma(p, vv[c], acc[i * NC + c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < NT; i++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) {
            if (c == NC - 1 && tail < VF_N)
                vf_storeu_n(O + i * os + c * VF_N, acc[i * NC + c], tail);
            else
                vf_storeu(O + i * os + c * VF_N, acc[i * NC + c]);
        }
}

typedef void (*pv_fn)(float *O, int64_t os, const void *v, int64_t vs, const float *P, int64_t ps, int32_t jn,
                      int tail);
#define PV(DT, NT, NC)                                                                                          \
    static void pv_##DT##_##NT##_##NC(float *O, int64_t os, const void *v, int64_t vs, const float *P,        \
                                      int64_t ps, int32_t jn, int tail) {                                      \
        pv_body(NT, NC, ENG_##DT, O, os, v, vs, P, ps, jn, tail);                                              \
    }
#define PV_NT(DT, NT) PV(DT, NT, 1) PV(DT, NT, 2) PV(DT, NT, 3) PV(DT, NT, 4)
#define PV_DT(DT) PV_NT(DT, 1) PV_NT(DT, 2) PV_NT(DT, 3) PV_NT(DT, 4)
PV_DT(F32)
PV_DT(F16)
#define PV_ROW(DT, NT) {pv_##DT##_##NT##_1, pv_##DT##_##NT##_2, pv_##DT##_##NT##_3, pv_##DT##_##NT##_4}
/* pvs[dtype][NT - 1][NC - 1] */
static const pv_fn pvs[2][4][4] = {{PV_ROW(F32, 1), PV_ROW(F32, 2), PV_ROW(F32, 3), PV_ROW(F32, 4)},
                                   {PV_ROW(F16, 1), PV_ROW(F16, 2), PV_ROW(F16, 3), PV_ROW(F16, 4)}};

/* Scaled scores of row Si's n valid keys -> probabilities (rounded to f16 for an f16 cache); keys n..nk-1 -> 0. */
static void softmax_row(float *Si, int32_t n, int32_t nk, float scale_div, int round_f16) {
    const vf vd = vf_set1(scale_div);
    vf vm = vf_set1(-INFINITY);
    int32_t j = 0;
    for (; j + VF_N <= n; j += VF_N) {
        vf x = vf_div(vf_loadu(Si + j), vd);
        vf_storeu(Si + j, x);
        vm = vf_max(vm, x);
    }
    float m = vf_hmax(vm);
    for (; j < n; j++) {
        Si[j] = Si[j] / scale_div;
        m = Si[j] > m ? Si[j] : m;
    }
    const vf vmax = vf_set1(m);
    vf vl = vf_zero();
    for (j = 0; j + VF_N <= n; j += VF_N) {
        vf e = v_exp(vf_sub(vf_loadu(Si + j), vmax));
        vf_storeu(Si + j, e);
        vl = vf_add(vl, e);
    }
    if (j < n) {
        int k = n - j;
        vf_storeu_n(Si + j, v_exp(vf_sub(vf_loadu_n(Si + j, k), vmax)), k);
        vl = vf_add(vl, vf_loadu_n(Si + j, k));
    }
    const vf vsum = vf_set1(vf_hsum(vl));
    for (j = 0; j + VF_N <= n; j += VF_N) {
        vf p = vf_div(vf_loadu(Si + j), vsum);
        vf_storeu(Si + j, round_f16 ? vf_round_f16(p) : p);
    }
    if (j < n) {
        int k = n - j;
        vf p = vf_div(vf_loadu_n(Si + j, k), vsum);
        vf_storeu_n(Si + j, round_f16 ? vf_round_f16(p) : p, k);
    }
    for (j = n; j < nk; j++) Si[j] = 0.0f;
}

/* Prefetches the slice [c0, c0 + bytes) of every row of one cache block: the next block, while this one computes.
 * Blocks are scattered and each is only ENG_KV_BLOCK rows, too little for the hardware prefetcher. */
static void prefetch_block(const char *block, int64_t row_bytes, int64_t c0, int64_t bytes) {
    for (int j = 0; j < ENG_KV_BLOCK; j++)
        for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(block + j * row_bytes + c0 + o, 0, 3);
}

/* Rows t0 .. t0+nt-1 of sequence s, heads [h0, h1). Key blocks are the outer loop, so each cached K/V row is read
 * once, contiguously, for all the item's heads (per-head sweeps would read 128-byte slices 2 KB apart). */
static void attn_rows(const cpu__attn *a, const eng_seq *s, int32_t t0, int32_t nt, int32_t h0, int32_t h1,
                      float *scratch) {
    const int64_t hd = a->head_dim, dm = a->d_model;
    const int32_t nh = h1 - h0, p0 = s->pos + t0, nk = p0 + nt; /* row i sees keys 0 .. p0 + i */
    const int64_t ss = (nk + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK * ENG_KV_BLOCK;
    const size_t esz = a->kvdt == ENG_F16 ? 2 : 4;
    const int64_t row0 = s->row0 + t0;
    float *S = scratch;                          /* [nh][nt][ss] scores, then probabilities */
    float *O = scratch + (int64_t)nh * nt * ss;  /* [nh][nt][hd] outputs */
    const int row = VF_N > VF_TILE_NR && nt == 1; /* 1 x VF_N keys: one tree reduction */
    const int nr = row ? VF_N : VF_TILE_NR;
    const tile_fn f = row ? tiles_row[a->kvdt] : tiles[a->kvdt][nt - 1][1];
    float r[16];

    const int64_t row_bytes = dm * (int64_t)esz, bstride = ENG_KV_BLOCK * row_bytes;
    const int64_t c0 = h0 * hd * (int64_t)esz, cbytes = nh * hd * (int64_t)esz;
    for (int32_t b = 0; b * ENG_KV_BLOCK < nk; b++) {
        const char *kb = (const char *)a->k + s->blocks[b] * bstride;
        if ((b + 1) * ENG_KV_BLOCK < nk)
            prefetch_block((const char *)a->k + s->blocks[b + 1] * bstride, row_bytes, c0, cbytes);
        for (int32_t h = h0; h < h1; h++) {
            float *Sh = S + (int64_t)(h - h0) * nt * ss + b * ENG_KV_BLOCK;
            for (int32_t jj = 0; jj < ENG_KV_BLOCK && b * ENG_KV_BLOCK + jj < nk; jj += nr) {
                const char *kr = kb + (size_t)(jj * dm + h * hd) * esz;
                if (nt == 1) { /* one row: the tile's results are already in S's layout */
                    f(a->q + row0 * a->qs + h * hd, a->qs, kr, dm, hd, Sh + jj);
                    continue;
                }
                f(a->q + row0 * a->qs + h * hd, a->qs, kr, dm, hd, r);
                for (int i = 0; i < nt; i++) memcpy(Sh + i * ss + jj, r + i * VF_TILE_NR, VF_TILE_NR * sizeof(float));
            }
        }
    }
    const float scale_div = sqrtf((float)hd);
    for (int32_t h = 0; h < nh; h++)
        for (int i = 0; i < nt; i++)
            softmax_row(S + ((int64_t)h * nt + i) * ss, p0 + i + 1, nk, scale_div, a->kvdt == ENG_F16);

    memset(O, 0, (size_t)(nh * nt * hd) * sizeof(float));
    const int64_t slice = (int64_t)VF_PV_CHUNKS * VF_N;
    for (int32_t b = 0; b * ENG_KV_BLOCK < nk; b++) {
        const char *vb = (const char *)a->v + s->blocks[b] * bstride;
        const int32_t jn = KMIN(ENG_KV_BLOCK, nk - b * ENG_KV_BLOCK);
        if ((b + 1) * ENG_KV_BLOCK < nk)
            prefetch_block((const char *)a->v + s->blocks[b + 1] * bstride, row_bytes, c0, cbytes);
        for (int32_t h = h0; h < h1; h++)
            for (int64_t d0 = 0; d0 < hd; d0 += slice) {
                int64_t nd = KMIN(slice, hd - d0);
                int nc = (int)((nd + VF_N - 1) / VF_N);
                int tail = (int)(nd - (int64_t)(nc - 1) * VF_N);
                pvs[a->kvdt == ENG_F16][nt - 1][nc - 1](O + (int64_t)(h - h0) * nt * hd + d0, hd,
                                                        vb + (size_t)(h * hd + d0) * esz, dm,
                                                        S + (int64_t)(h - h0) * nt * ss + b * ENG_KV_BLOCK, ss, jn,
                                                        tail);
            }
    }
    for (int32_t h = h0; h < h1; h++)
        for (int i = 0; i < nt; i++)
            memcpy(a->out + (row0 + i) * a->os + h * hd, O + ((int64_t)(h - h0) * nt + i) * hd,
                   (size_t)hd * sizeof(float));
}

const cpu__kernels CPU_KERN_TABLE = {
    .name = CPU_KERN_NAME,
    .matmul = matmul,
    .attn_rows = attn_rows,
    .to_f32 = to_f32,
    .from_f32 = from_f32,
    .layernorm_row = layernorm_row,
    .gelu = gelu,
    .add = add,
    .rope_row = rope_row,
};
