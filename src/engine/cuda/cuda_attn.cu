/* cuda_attn.cu - causal attention over the paged KV cache, for prefill chunks and decode rows in one launch.
 *
 * DESIGN
 * A block (4 warps) takes one tile of up to ROWS consecutive query rows of one sequence, one head, and one chunk
 * of that sequence's keys (the "split": decode rows have one query row per sequence and head, so the context is
 * cut into chunks to fill the GPU; a second kernel merges the chunks). Within a block, warp w takes keys
 * w*32 + lane of every 128-key step: each lane computes its key's score against all ROWS queries (held in shared
 * memory, pre-scaled by 1/sqrt(head_dim)), the warp keeps an online softmax per row, and then walks its 32 keys
 * accumulating p * V with lanes across head dims (coalesced V reads). The 4 warps' (max, sum, acc) are merged in
 * shared memory at the end.
 * Precision: f32 scores, softmax and accumulation over f32 or f16 K/V. Unlike ref.c the probabilities are not
 * rounded to the cache dtype before the value product (the flash formulation never holds normalized
 * probabilities); the parity test states the tolerance this costs.
 * This is the SIMT version, kept for f32 caches, head sizes that are not a multiple of 16 and decode rows; f16
 * prefill tiles go to the tensor-core kernel (cuda_attn_mma.cu). The layout's prefill tiles are 64 rows (the mma
 * kernel's CTA); here a block takes 8 of them (blockIdx.x = tile * 8 + sub-tile), so each block still keeps ROWS
 * queries' scores in registers, and writes its partials at its rows' place in the 64-row tile's slot. */
#include "cuda_common.cuh"

#include <math_constants.h>

template <typename KT> struct kv_load;
template <> struct kv_load<float> {
    enum { vec = 0 };
    static __device__ __forceinline__ float2 two(const float *p) { return *(const float2 *)p; }
    static __device__ __forceinline__ void eight(const float *, float *) {}
};
template <> struct kv_load<__half> {
    enum { vec = 1 };
    static __device__ __forceinline__ float2 two(const __half *p) { return __half22float2(*(const __half2 *)p); }
    /* p 16-byte aligned: head_dim % 8 == 0 and d_model % 8 == 0 */
    static __device__ __forceinline__ void eight(const __half *p, float *f) {
        const uint4 u = *(const uint4 *)p;
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 t = __half22float2(*(const __half2 *)&w[i]);
            f[2 * i] = t.x, f[2 * i + 1] = t.y;
        }
    }
};

/* {row0, n_rows, pos0, blocks offset}; the tile array sits at any int offset of the batch layout, so no int4 load */
static __device__ __forceinline__ int4 load_tile(const int32_t *tiles, int i) {
    const int32_t *t = tiles + 4 * i;
    return make_int4(t[0], t[1], t[2], t[3]);
}

#define ATTN_WARPS 4
#define ATTN_STEP (ATTN_WARPS * 32)

template <typename KT, int ROWS, int DP>
static __global__ void __launch_bounds__(ATTN_WARPS * 32) attn_kernel(cuda__attn_args a) {
    extern __shared__ float sm[];
    const int hd = a.head_dim, h = blockIdx.y, split = blockIdx.z;
    const int subs = a.rows / ROWS, ti = blockIdx.x / subs, sub = blockIdx.x % subs; /* ROWS-row part of a tile */
    int4 tile = load_tile(a.tiles, ti);
    tile.x += sub * ROWS, tile.y = min(ROWS, tile.y - sub * ROWS), tile.z += sub * ROWS;
    if (tile.y <= 0) return;
    const int n_keys = tile.z + tile.y;
    const int k_begin = split * a.chunk, k_end = min(n_keys, k_begin + a.chunk);
    if (k_begin >= n_keys) return; /* the combine kernel skips chunks past this tile's keys */
    float *qs = sm;               /* [ROWS][hd] */
    float *mrg = sm + ROWS * hd;  /* [ATTN_WARPS][ROWS][hd + 2]: max, sum, acc */
    for (int i = threadIdx.x; i < ROWS * hd; i += blockDim.x) {
        const int r = i / hd, d = i % hd;
        qs[i] = r < tile.y ? cu_ld(a.q.data, a.q.dtype, (int64_t)(tile.x + r) * a.q.stride + (int64_t)h * hd + d) *
                                 a.scale
                           : 0.0f;
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const KT *kh = (const KT *)a.k + (int64_t)h * hd, *vh = (const KT *)a.v + (int64_t)h * hd;
    const int32_t *blocks = a.blocks + tile.w;
    float m[ROWS], l[ROWS];
    float2 acc[ROWS][DP];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        m[r] = -CUDART_INF_F, l[r] = 0.0f;
#pragma unroll
        for (int j = 0; j < DP; j++) acc[r][j] = make_float2(0.0f, 0.0f);
    }
    for (int kb = k_begin + warp * 32; kb < k_end; kb += ATTN_STEP) {
        const int j = kb + lane;
        float s[ROWS];
#pragma unroll
        for (int r = 0; r < ROWS; r++) s[r] = 0.0f;
        /* this lane's key row (an element offset into the cache), kept for the value pass: lane jj's row comes by
         * shuffle there instead of a second dependent block-table load per key */
        const int64_t row = j < k_end ? ((int64_t)blocks[j / ENG_KV_BLOCK] * ENG_KV_BLOCK + j % ENG_KV_BLOCK) * a.d_model
                                      : 0;
        if (j < k_end && kv_load<KT>::vec && (hd & 7) == 0) {
            /* f16 keys: 16-byte loads, 4 in flight (v1's 2-element loads in a loop made decode attention a chain
             * of 40 dependent round trips per key, 24.6 us a 2B layer at context 1024 on an H100) */
            const KT *kr = kh + row;
#pragma unroll 4
            for (int d = 0; d < hd; d += 8) {
                float kf[8];
                kv_load<KT>::eight(kr + d, kf);
#pragma unroll
                for (int r = 0; r < ROWS; r++) {
                    const float4 q0 = *(const float4 *)(qs + r * hd + d), q1 = *(const float4 *)(qs + r * hd + d + 4);
                    s[r] += q0.x * kf[0] + q0.y * kf[1] + q0.z * kf[2] + q0.w * kf[3] + q1.x * kf[4] + q1.y * kf[5] +
                            q1.z * kf[6] + q1.w * kf[7];
                }
            }
        } else if (j < k_end) {
            const KT *kr = kh + row;
            for (int d = 0; d < hd; d += 2) {
                const float2 kv = kv_load<KT>::two(kr + d);
#pragma unroll
                for (int r = 0; r < ROWS; r++) {
                    const float2 qv = *(const float2 *)(qs + r * hd + d);
                    s[r] += qv.x * kv.x + qv.y * kv.y;
                }
            }
        }
        float p[ROWS];
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            const bool ok = j < k_end && j <= tile.z + r;
            const float sv = ok ? s[r] : -CUDART_INF_F;
            const float mn = fmaxf(m[r], cu_warp_max(sv));
            if (mn == -CUDART_INF_F) { /* no visible key in this step for row r (uniform across the warp) */
                p[r] = 0.0f;
                continue;
            }
            const float corr = expf(m[r] - mn); /* 0 when m[r] is still -inf */
            p[r] = ok ? expf(sv - mn) : 0.0f;
            l[r] = l[r] * corr + p[r]; /* per-lane partial sums; corr is uniform, so they reduce at the end */
#pragma unroll
            for (int q = 0; q < DP; q++) acc[r][q].x *= corr, acc[r][q].y *= corr;
            m[r] = mn;
        }
        const int nk = min(32, k_end - kb);
#pragma unroll 8
        for (int jj = 0; jj < nk; jj++) {
            const KT *vr = vh + __shfl_sync(0xffffffffu, row, jj);
            float pj[ROWS];
#pragma unroll
            for (int r = 0; r < ROWS; r++) pj[r] = __shfl_sync(0xffffffffu, p[r], jj);
#pragma unroll
            for (int q = 0; q < DP; q++) {
                const int d = 2 * (lane + 32 * q);
                if (d < hd) {
                    const float2 vv = kv_load<KT>::two(vr + d);
#pragma unroll
                    for (int r = 0; r < ROWS; r++) acc[r][q].x += pj[r] * vv.x, acc[r][q].y += pj[r] * vv.y;
                }
            }
        }
    }
    /* merge the 4 warps */
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const float lr = cu_warp_sum(l[r]);
        float *e = mrg + (warp * ROWS + r) * (hd + 2);
        if (lane == 0) e[0] = m[r], e[1] = lr;
#pragma unroll
        for (int q = 0; q < DP; q++) {
            const int d = 2 * (lane + 32 * q);
            if (d < hd) e[2 + d] = acc[r][q].x, e[3 + d] = acc[r][q].y;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < ROWS * hd; i += blockDim.x) {
        const int r = i / hd, d = i % hd;
        if (r >= tile.y) continue;
        float M = -CUDART_INF_F, L = 0.0f, A = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) M = fmaxf(M, mrg[(w * ROWS + r) * (hd + 2)]);
        if (M != -CUDART_INF_F)
            for (int w = 0; w < ATTN_WARPS; w++) {
                const float *e = mrg + (w * ROWS + r) * (hd + 2);
                const float wt = e[0] == -CUDART_INF_F ? 0.0f : expf(e[0] - M);
                L += wt * e[1];
                A += wt * e[2 + d];
            }
        if (a.n_splits == 1) {
            cu_st(a.out.data, a.out.dtype, (int64_t)(tile.x + r) * a.out.stride + (int64_t)h * hd + d, A / L);
        } else {
            float *pp = a.part + (((int64_t)ti * a.n_splits + split) * a.n_head + h) * a.rows * (hd + 2) +
                        (int64_t)(sub * ROWS + r) * (hd + 2);
            if (d == 0) pp[0] = M, pp[1] = L;
            pp[2 + d] = A;
        }
    }
}

/* grid (n_tiles * rows, n_head): merges the chunks of one query row and head. Only the chunks holding the row's own
 * keys (0 .. pos0 + r) are read: a block of a shorter sub-tile (or an mma warp) exits before writing past them. */
static __global__ void attn_combine_kernel(cuda__attn_args a) {
    const int t = blockIdx.x / a.rows, r = blockIdx.x % a.rows, h = blockIdx.y, hd = a.head_dim;
    const int4 tile = load_tile(a.tiles, t);
    if (r >= tile.y) return;
    const int used = (tile.z + r + 1 + a.chunk - 1) / a.chunk;
    const int64_t step = (int64_t)a.n_head * a.rows * (hd + 2);
    const float *p0 = a.part + (((int64_t)t * a.n_splits) * a.n_head + h) * a.rows * (hd + 2) + (int64_t)r * (hd + 2);
    float M = -CUDART_INF_F;
    for (int s = 0; s < used; s++) M = fmaxf(M, p0[s * step]);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float L = 0.0f, A = 0.0f;
        for (int s = 0; s < used; s++) {
            const float *e = p0 + s * step;
            const float wt = e[0] == -CUDART_INF_F ? 0.0f : expf(e[0] - M);
            L += wt * e[1];
            A += wt * e[2 + d];
        }
        cu_st(a.out.data, a.out.dtype, (int64_t)(tile.x + r) * a.out.stride + (int64_t)h * hd + d, A / L);
    }
}

extern "C" size_t cuda__attention_part_floats(const cuda__attn_args *a) {
    return a->n_splits > 1 ? (size_t)a->n_tiles * a->n_splits * a->n_head * a->rows * (a->head_dim + 2) : 0;
}

extern "C" cudaError_t cuda__attention_combine(cudaStream_t st, const cuda__attn_args *a) {
    attn_combine_kernel<<<dim3((unsigned)(a->n_tiles * a->rows), (unsigned)a->n_head), 128, 0, st>>>(*a);
    return cudaGetLastError();
}

template <typename KT, int ROWS, int DP> static cudaError_t launch(cudaStream_t st, const cuda__attn_args *a) {
    const size_t smem = (size_t)(ROWS * a->head_dim + ATTN_WARPS * ROWS * (a->head_dim + 2)) * sizeof(float);
    dim3 grid((unsigned)(a->n_tiles * (a->rows / ROWS)), (unsigned)a->n_head, (unsigned)a->n_splits);
    attn_kernel<KT, ROWS, DP><<<grid, ATTN_WARPS * 32, smem, st>>>(*a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || a->n_splits == 1) return e;
    return cuda__attention_combine(st, a);
}

template <typename KT, int ROWS> static cudaError_t launch_dp(cudaStream_t st, const cuda__attn_args *a) {
    if (a->head_dim <= 64) return launch<KT, ROWS, 1>(st, a);
    if (a->head_dim <= 128) return launch<KT, ROWS, 2>(st, a);
    return launch<KT, ROWS, 4>(st, a);
}

template <typename KT> static cudaError_t launch_rows(cudaStream_t st, const cuda__attn_args *a) {
    return a->rows == 1 ? launch_dp<KT, 1>(st, a) : launch_dp<KT, 8>(st, a); /* rows CUDA_ATTN_TILE_ROWS: 8 x 8 */
}

/* head_dim even and <= 256, rows 1 or CUDA_ATTN_TILE_ROWS, kvdt f32 or f16: checked by cuda.c. */
extern "C" cudaError_t cuda__attention(cudaStream_t st, const cuda__attn_args *a) {
    if (a->n_tiles <= 0) return cudaSuccess;
    return a->kvdt == ENG_F16 ? launch_rows<__half>(st, a) : launch_rows<float>(st, a);
}
