/* cuda_attn_mma.cu - prefill attention on tensor cores (mma.sync m16n8k16, f16 inputs, f32 accumulation) over the
 * paged f16 KV cache, for head_dim % 16 == 0 (<= 256). Decode rows, f32 caches and other head sizes stay on the SIMT
 * kernel (cuda_attn.cu); cuda.c picks.
 *
 * DESIGN (FlashAttention-2)
 * - Why: the SIMT kernel re-reads K and V for every 8 query rows and does its dot products on f32 FMA pipes; a
 *   1024-token 2B prefill spent 25 of 37 ms there. Here a CTA of 4 warps takes 64 query rows of one sequence and one
 *   head (16 rows a warp), so each K/V tile read from memory serves 64 rows, and both products (S = Q K^T and
 *   O += P V) run as 16x8x16 tensor-core MMAs.
 * - Key tiles of BN keys (64; 32 for head_dim > 128, where the O accumulators already take 128 registers) are copied
 *   into shared memory with 16-byte cp.async, one row per key through the block table, double-buffered so the next
 *   tile's copy overlaps this tile's MMAs. Rows are padded by 8 halves (16 bytes): with head_dim % 16 == 0 the row
 *   pitch is an odd number of 16-byte units, so the 8 row addresses of an ldmatrix hit 8 different bank groups.
 *   Keys past the CTA's range are zero-filled (src-size 0), so masked V rows are finite: 0 * garbage could be NaN.
 * - Q is converted to f16 once into shared memory, unscaled: an f16 q (the production path) enters the MMA
 *   exactly, and the scale (log2(e) / sqrt(head_dim), so the softmax uses exp2f) is applied to S in f32.
 *   Pre-scaling Q would save one multiply per score but round q a second time, and q's rounding error is as large
 *   as P's (on an H100 the worst error vs ref for f16 q went from 6.0e-3 with pre-scaling to 2.5e-3). For
 *   head_dim <= 128 each warp keeps its A fragments in registers, for larger heads it re-reads them with ldmatrix
 *   (registers: O is 16 x head_dim f32 per warp).
 * - The causal mask is applied only to tiles that cross a warp's diagonal or the end of the key range; a warp skips
 *   tiles entirely above its last row (it still copies its share and meets the barriers).
 * - Online softmax per row in f32 registers: the 4 lanes of a quad own one row's 2 x BN/8 scores, so row max and
 *   row sum need two xor shuffles. P is rounded to f16 (unnormalized, <= 1) straight into A fragments: the S
 *   accumulator layout of n-blocks 2c, 2c+1 is exactly the A layout of k-chunk c. ref.c rounds the normalized
 *   probabilities to the cache dtype instead; the parity test's f16 tolerance covers both.
 * - Key split (plan_splits, for prompts with few tiles): the CTA of chunk s writes (max, sum, acc) per row into
 *   `part` in the layout attn_combine_kernel reads (a->rows = 64), the max in natural-log units like the SIMT
 *   kernel's; the combine merges the chunks in a fixed order. No atomics anywhere: a step graph replay and an
 *   op-by-op run give the same bits.
 * - Tiles are walked last first (blockIdx.x reversed): the causal tiles at the end of a prompt see the most keys,
 *   so starting them first shortens the tail of the grid.
 *
 * Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .f16 A/B and .f32 C/D; g = lane >> 2 (groupID),
 * t = lane & 3 (thread in group); each A/B register holds two f16, the lower column / k index in the low half):
 *   A (16x16, row): a0 = (row g,   cols 2t, 2t+1)   a1 = (row g+8, cols 2t, 2t+1)
 *                   a2 = (row g,   cols 2t+8, +9)   a3 = (row g+8, cols 2t+8, +9)
 *   B (16x8, col):  b0 = (k rows 2t, 2t+1, col g)   b1 = (k rows 2t+8, 2t+9, col g)
 *   C (16x8, f32):  c0, c1 = (row g, cols 2t, 2t+1) c2, c3 = (row g+8, cols 2t, 2t+1)
 * ldmatrix.x4: lanes 8m..8m+7 give the 16-byte row addresses of 8x8 matrix m (row lane & 7); register m then holds
 * (row g, cols 2t, 2t+1) of matrix m, or with .trans (rows 2t, 2t+1, col g), i.e. the transposed matrix's
 * (row g, cols 2t, 2t+1). */
#include "cuda_common.cuh"

#include <math_constants.h>

#define MMA_ROWS 64 /* query rows per CTA = the layout's tile height (cuda.c ATTN_TILE_ROWS) */
#define MMA_WARPS 4
#define MMA_LOG2E 1.4426950408889634f
#define MMA_LN2 0.6931471805599453f

/* cp.async and m16n8k16 need sm_80: older targets (the default build also compiles sm_75) get an empty kernel, which
 * cuda.c never launches there (it checks the compute capability) */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define MMA_ARCH_OK 1
#endif

#ifdef MMA_ARCH_OK
static __device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, bypassing L1; src_bytes 0 writes zeros (src must still be a valid address). */
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

static __device__ __forceinline__ void ldsm_x4(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
static __device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

/* c += a . b for one 16x8x16 tile (layouts in the header comment). */
static __device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* two f32 -> one register of two f16, lo in the low half (the lower column / k index) */
static __device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&h;
}

static __device__ __forceinline__ int4 mma_load_tile(const int32_t *tiles, int i) {
    const int32_t *t = tiles + 4 * i;
    return make_int4(t[0], t[1], t[2], t[3]);
}

/* Copies keys j0 .. j0+BN-1 of K and V (head columns only) into the padded shared tiles; keys >= k_end are zeros. */
template <int HD, int BN>
static __device__ __forceinline__ void load_kv_tile(__half *ks, __half *vs, const __half *kg, const __half *vg,
                                                    const int32_t *blocks, int d_model, int j0, int k_end) {
    constexpr int SD = HD + 8, CPR = HD / 8; /* 16-byte chunks per key row */
    for (int i = threadIdx.x; i < BN * CPR; i += MMA_WARPS * 32) {
        const int r = i / CPR, c = i % CPR, j = j0 + r;
        const bool ok = j < k_end;
        const int64_t row = ok ? (int64_t)blocks[j / ENG_KV_BLOCK] * ENG_KV_BLOCK + j % ENG_KV_BLOCK : 0;
        const int64_t off = row * d_model + c * 8;
        cp_async16(smem_addr(ks + r * SD + c * 8), kg + off, ok ? 16 : 0);
        cp_async16(smem_addr(vs + r * SD + c * 8), vg + off, ok ? 16 : 0);
    }
}
#endif

template <int HD, int BN, bool QREG>
static __global__ void __launch_bounds__(MMA_WARPS * 32) attn_mma_kernel(cuda__attn_args a) {
#ifndef MMA_ARCH_OK
    (void)a;
    __trap(); /* cuda__attention_mma_code() keeps the host from choosing code built without tensor cores */
#else
    constexpr int SD = HD + 8; /* padded shared row pitch in halves (header: bank groups) */
    constexpr int KC = HD / 16, NB = BN / 8, ND = HD / 8;
    extern __shared__ uint4 smem_u4[];
    __half *qs = (__half *)smem_u4;      /* [MMA_ROWS][SD] */
    __half *ks = qs + MMA_ROWS * SD;     /* [2][BN][SD] */
    __half *vs = ks + 2 * BN * SD;       /* [2][BN][SD] */
    const int h = blockIdx.y, split = blockIdx.z, ti = (int)gridDim.x - 1 - (int)blockIdx.x;
    const int4 tile = mma_load_tile(a.tiles, ti); /* {row0, n_rows, pos0, blocks offset} */
    const int n_keys = tile.z + tile.y;
    const int k_begin = split * a.chunk, k_end = min(n_keys, k_begin + a.chunk);
    if (k_begin >= n_keys) return; /* the combine kernel reads no chunk past a row's keys */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int32_t *blocks = a.blocks + tile.w;
    const __half *kg = (const __half *)a.k + (int64_t)h * HD, *vg = (const __half *)a.v + (int64_t)h * HD;
    const int n_it = (k_end - k_begin + BN - 1) / BN;

    load_kv_tile<HD, BN>(ks, vs, kg, vg, blocks, a.d_model, k_begin, k_end);
    cp_async_commit();

    /* Q rows of the tile (zeros past n_rows) as f16; overlaps the first tile's copy */
    const float qscale = a.scale * MMA_LOG2E; /* applied to S */
    for (int i = tid; i < MMA_ROWS * HD / 2; i += MMA_WARPS * 32) {
        const int r = i / (HD / 2), d = (i % (HD / 2)) * 2;
        float x0 = 0.0f, x1 = 0.0f;
        if (r < tile.y) {
            const int64_t at = (int64_t)(tile.x + r) * a.q.stride + (int64_t)h * HD + d;
            x0 = cu_ld(a.q.data, a.q.dtype, at);
            x1 = cu_ld(a.q.data, a.q.dtype, at + 1);
        }
        *(__half2 *)(qs + r * SD + d) = __floats2half2_rn(x0, x1);
    }
    __syncthreads();

    const int row_lo = warp * MMA_ROWS / MMA_WARPS;  /* this warp's first row in the tile */
    const int qpos_lo = tile.z + row_lo;             /* its position; row g / g+8 is at qpos_lo + g (+8) */
    const bool live = row_lo < tile.y;               /* a warp of padding rows only copies */
    /* A fragments of Q for k-chunk kk: matrices (rows 0-7, cols 16kk..+7), (rows 8-15, same cols), (rows 0-7, cols
     * 16kk+8..+15), (rows 8-15, same) = a0..a3; lane's row address: row (lane & 7) + 8 * (lane >> 3 & 1), col block
     * lane >> 4. */
    const uint32_t q_addr = smem_addr(qs + (row_lo + (lane & 7) + ((lane >> 3) & 1) * 8) * SD + ((lane >> 4) & 1) * 8);
    uint32_t qf[QREG ? KC : 1][4];
    if (QREG) {
#pragma unroll
        for (int kk = 0; kk < (QREG ? KC : 0); kk++) ldsm_x4(qf[kk], q_addr + kk * 16 * 2);
    }
    /* K as B of S = Q K^T (k = head dim, n = key): for n-blocks 2p, 2p+1 and k-chunk kk the matrices are (keys
     * 16p..+7, dims 16kk..+7) = b0 of 2p, (keys 16p..+7, dims 16kk+8..) = b1 of 2p, (keys 16p+8.., dims 16kk..) = b0 of
     * 2p+1, (keys 16p+8.., dims 16kk+8..) = b1 of 2p+1; lane's row: key (lane & 7) + 8 * (lane >> 4), dim block
     * lane >> 3 & 1. Plain (non-trans) ldmatrix: register = (row g = key, cols 2t, 2t+1 = dims). */
    const int k_lane_off = ((lane & 7) + ((lane >> 4) & 1) * 8) * SD + ((lane >> 3) & 1) * 8;
    /* V as B of O += P V (k = key, n = head dim), ldmatrix.trans: for k-chunk c and n-blocks 2p, 2p+1 the matrices
     * are (keys 16c..+7, dims 16p..+7) = b0 of 2p, (keys 16c+8.., dims 16p..) = b1 of 2p, (keys 16c.., dims 16p+8..)
     * = b0 of 2p+1, (keys 16c+8.., dims 16p+8..) = b1 of 2p+1; lane's row: key (lane & 7) + 8 * (lane >> 3 & 1), dim
     * block lane >> 4. Transposed, a register holds (keys 2t, 2t+1; dim g). */
    const int v_lane_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * SD + ((lane >> 4) & 1) * 8;

    float o[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -CUDART_INF_F, m1 = -CUDART_INF_F, l0 = 0.0f, l1 = 0.0f; /* rows g and g+8, log2 units */

    for (int it = 0; it < n_it; it++) {
        if (it + 1 < n_it) {
            const int nb = (it + 1) & 1;
            load_kv_tile<HD, BN>(ks + nb * BN * SD, vs + nb * BN * SD, kg, vg, blocks, a.d_model,
                                 k_begin + (it + 1) * BN, k_end);
            cp_async_commit();
            cp_async_wait<1>(); /* tile it has landed, it + 1 may still be in flight */
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int j0 = k_begin + it * BN;
        if (live && j0 <= qpos_lo + 15) {
            const __half *kb = ks + (it & 1) * BN * SD, *vb = vs + (it & 1) * BN * SD;
            const uint32_t k_addr = smem_addr(kb + k_lane_off), v_addr = smem_addr(vb + v_lane_off);
            float s[NB][4];
#pragma unroll
            for (int n = 0; n < NB; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KC; kk++) {
                uint32_t af[4];
                if (QREG) {
                    af[0] = qf[QREG ? kk : 0][0], af[1] = qf[QREG ? kk : 0][1];
                    af[2] = qf[QREG ? kk : 0][2], af[3] = qf[QREG ? kk : 0][3];
                } else {
                    ldsm_x4(af, q_addr + kk * 16 * 2);
                }
#pragma unroll
                for (int p = 0; p < NB / 2; p++) {
                    uint32_t b[4];
                    ldsm_x4(b, k_addr + (p * 16 * SD + kk * 16) * 2);
                    mma_16816(s[2 * p], af, b[0], b[1]);
                    mma_16816(s[2 * p + 1], af, b[2], b[3]);
                }
            }
#pragma unroll
            for (int n = 0; n < NB; n++) s[n][0] *= qscale, s[n][1] *= qscale, s[n][2] *= qscale, s[n][3] *= qscale;
            /* causal / range mask where the tile crosses this warp's diagonal or the range end:
             * s[n][i] is (row g + 8 * (i >> 1), key j0 + 8n + 2t + (i & 1)) */
            if (j0 + BN - 1 > qpos_lo || j0 + BN > k_end) {
#pragma unroll
                for (int n = 0; n < NB; n++)
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const int key = j0 + n * 8 + 2 * t + (i & 1), qp = qpos_lo + g + (i >> 1) * 8;
                        if (key > qp || key >= k_end) s[n][i] = -CUDART_INF_F;
                    }
            }
            /* online softmax; a quad (lanes 4g..4g+3) holds rows g and g+8 */
            float x0 = m0, x1 = m1;
#pragma unroll
            for (int n = 0; n < NB; n++) {
                x0 = fmaxf(x0, fmaxf(s[n][0], s[n][1]));
                x1 = fmaxf(x1, fmaxf(s[n][2], s[n][3]));
            }
            x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 1));
            x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 2));
            x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 1));
            x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 2));
            /* a row with no visible key yet keeps max -inf: subtract 0 instead (its scores are -inf -> p = 0) */
            const float u0 = x0 == -CUDART_INF_F ? 0.0f : x0, u1 = x1 == -CUDART_INF_F ? 0.0f : x1;
            const float c0 = exp2f(m0 - u0), c1 = exp2f(m1 - u1); /* 0 while m is -inf */
            m0 = x0, m1 = x1;
            l0 *= c0, l1 *= c1;
#pragma unroll
            for (int n = 0; n < ND; n++) o[n][0] *= c0, o[n][1] *= c0, o[n][2] *= c1, o[n][3] *= c1;
            /* P as A of O += P V: k-chunk c's a0..a3 are s[2c] (c0, c1), s[2c] (c2, c3), s[2c+1] (c0, c1),
             * s[2c+1] (c2, c3) */
#pragma unroll
            for (int c = 0; c < BN / 16; c++) {
                float p[2][4];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    p[e][0] = exp2f(s[2 * c + e][0] - u0), p[e][1] = exp2f(s[2 * c + e][1] - u0);
                    p[e][2] = exp2f(s[2 * c + e][2] - u1), p[e][3] = exp2f(s[2 * c + e][3] - u1);
                    l0 += p[e][0] + p[e][1];
                    l1 += p[e][2] + p[e][3];
                }
                const uint32_t pa[4] = {pack_half2(p[0][0], p[0][1]), pack_half2(p[0][2], p[0][3]),
                                        pack_half2(p[1][0], p[1][1]), pack_half2(p[1][2], p[1][3])};
#pragma unroll
                for (int q = 0; q < ND / 2; q++) {
                    uint32_t b[4];
                    ldsm_x4_trans(b, v_addr + (c * 16 * SD + q * 16) * 2);
                    mma_16816(o[2 * q], pa, b[0], b[1]);
                    mma_16816(o[2 * q + 1], pa, b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* the next iteration's copy overwrites this buffer */
    }

    /* a quad's partial sums -> the row's (fixed order: deterministic) */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    if (!live) return;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int r = row_lo + g + half * 8;
        if (r >= tile.y) continue;
        const float l = half ? l1 : l0, m = half ? m1 : m0;
        if (a.n_splits == 1) {
            const float inv = 1.0f / l;
            const int64_t at = (int64_t)(tile.x + r) * a.out.stride + (int64_t)h * HD + 2 * t;
#pragma unroll
            for (int n = 0; n < ND; n++) {
                cu_st(a.out.data, a.out.dtype, at + n * 8, o[n][2 * half] * inv);
                cu_st(a.out.data, a.out.dtype, at + n * 8 + 1, o[n][2 * half + 1] * inv);
            }
        } else { /* attn_combine_kernel's layout: [tile][split][head][rows][2 + head_dim], max in natural log */
            float *pp = a.part + (((int64_t)ti * a.n_splits + split) * a.n_head + h) * MMA_ROWS * (HD + 2) +
                        (int64_t)r * (HD + 2);
            if (t == 0) pp[0] = m * MMA_LN2, pp[1] = l;
#pragma unroll
            for (int n = 0; n < ND; n++) {
                pp[2 + n * 8 + 2 * t] = o[n][2 * half];
                pp[3 + n * 8 + 2 * t] = o[n][2 * half + 1];
            }
        }
    }
#endif
}

template <int HD> static cudaError_t launch_mma(cudaStream_t st, const cuda__attn_args *a) {
    constexpr int BN = HD <= 128 ? 64 : 32;
    constexpr bool QREG = HD <= 128;
    const size_t smem = (size_t)(MMA_ROWS + 4 * BN) * (HD + 8) * sizeof(__half);
    /* above 48 KiB needs the opt-in; a host-side attribute, allowed while a stream is being captured */
    cudaError_t e = cudaFuncSetAttribute(attn_mma_kernel<HD, BN, QREG>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)a->n_tiles, (unsigned)a->n_head, (unsigned)a->n_splits);
    attn_mma_kernel<HD, BN, QREG><<<grid, MMA_WARPS * 32, smem, st>>>(*a);
    e = cudaGetLastError();
    if (e != cudaSuccess || a->n_splits == 1) return e;
    return cuda__attention_combine(st, a);
}

/* Whether the kernel the driver runs on the current device was compiled for sm_80 or later (a build for older
 * architectures, JIT-compiled on a newer card, has the card's capability but the empty body). */
extern "C" int cuda__attention_mma_code(void) {
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, attn_mma_kernel<64, 64, true>) == cudaSuccess && fa.ptxVersion >= 80;
}

extern "C" int cuda__attention_mma_ok(int head_dim) {
    return head_dim > 0 && head_dim <= 256 && head_dim % 16 == 0;
}

/* kvdt f16, rows == 64, head_dim accepted by cuda__attention_mma_ok, 16-byte aligned k / v, d_model % 8 == 0 and a
 * device of compute capability >= 8.0: checked by cuda.c. */
extern "C" cudaError_t cuda__attention_mma(cudaStream_t st, const cuda__attn_args *a) {
    if (a->n_tiles <= 0) return cudaSuccess;
    switch (a->head_dim) {
    case 16: return launch_mma<16>(st, a);
    case 32: return launch_mma<32>(st, a);
    case 48: return launch_mma<48>(st, a);
    case 64: return launch_mma<64>(st, a);
    case 80: return launch_mma<80>(st, a);
    case 96: return launch_mma<96>(st, a);
    case 112: return launch_mma<112>(st, a);
    case 128: return launch_mma<128>(st, a);
    case 144: return launch_mma<144>(st, a);
    case 160: return launch_mma<160>(st, a);
    case 176: return launch_mma<176>(st, a);
    case 192: return launch_mma<192>(st, a);
    case 208: return launch_mma<208>(st, a);
    case 224: return launch_mma<224>(st, a);
    case 240: return launch_mma<240>(st, a);
    case 256: return launch_mma<256>(st, a);
    default: return cudaErrorInvalidValue;
    }
}
