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
 * This is the SIMT version, kept for f32 caches and head sizes the other kernels do not take; f16 prefill tiles go
 * to the tensor-core kernel (cuda_attn_mma.cu), f16 decode rows to attn_decode_kernel at the end of this file. The layout's prefill tiles are 64 rows (the mma
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
    cu_pdl_start(); /* PDL: everything this kernel touches may come from the kernel before */
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
    return cu_launch(attn_combine_kernel, dim3((unsigned)(a->n_tiles * a->rows), (unsigned)a->n_head), dim3(128), 0,
                     st, *a);
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

/* ---- decode rows on f16 caches ----------------------------------------------------------------------------------
 *
 * DESIGN
 * A decode step's attention is a stream: one query row per (sequence, head) against all its keys, 2 x keys x
 * head_dim x 2 bytes to read (2B at context 1024: 10.5 MB a layer) and ~2 FLOP per byte. attn_kernel above reads
 * keys one per lane (a 160-byte row per lane, 4 vector loads in flight) and needs a second kernel to merge the key
 * splits: 14.6 + 4 us a 2B layer on an H100 (NOTES.md v6) where the bytes take ~3.5 us. Here:
 * - A CTA of 4 warps takes one (tile, head, chunk of keys) and copies the chunk's K and V rows into shared memory
 *   with 16-byte cp.async (8 lanes per key row, through the block table) in stages of TK keys, double-buffered: a
 *   chunk of <= 2 stages is in flight entirely from the start, and no register holds a load in flight, so many
 *   CTAs fit an SM (42 KB of shared memory for head_dim 80).
 * - Scores: an 8-lane group takes a key, each lane a 16-byte slice of it against q held in registers (pre-scaled
 *   by log2(e) / sqrt(head_dim), so the softmax uses exp2f), reduced with 3 xor shuffles. Each warp owns TK / 4 keys
 *   of the stage with its own online softmax (max, per-lane sums), then accumulates p * V with lanes across head
 *   dims (half2 per lane). The 4 warps merge in shared memory at the end.
 * - Key split merged in the same launch: each CTA of a split (tile, head) writes (max, sum, acc) to `part`, then
 *   takes a ticket (atomicAdd on tickets[tile * n_head + head]); the CTA that draws the last ticket merges the
 *   chunks in chunk order (so the bits do not depend on which CTA finished last: graph replay and op by op agree)
 *   and stores the row, then sets the ticket back to 0 for the next launch (a step graph replays the same
 *   counters). A tile whose keys fit one chunk writes its row directly. Chunks past a tile's keys (the plan is made
 *   for a key budget) exit before reading anything and take no ticket.
 * Same precision as attn_kernel: f32 scores, softmax and accumulation.
 * Where the time goes (H100, 2B at context 1024, 16 chunks of 64 keys, NOTES.md v8): 12.5 us a layer inside a graph
 * (old kernel + combine 15.9), 10.6 us with K/V in L2, so latency rather than bandwidth; per-CTA timestamps: tile
 * read 0.4 us, table read + copies issued 1.5, copies landed 5.7, compute of the stage 2.5, warp merge 0.3, ticket
 * 0.8, the last CTA's merge 1.8. */
#define DEC_WARPS 4
#define DEC_LOG2E 1.4426950408889634f

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
static __device__ __forceinline__ void dec_cp16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src)
                 : "memory");
}
static __device__ __forceinline__ void dec_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
static __device__ __forceinline__ void dec_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
#else
/* Turing (sm_75) has no cp.async: a plain copy through registers keeps the kernel correct there, if slower */
static __device__ __forceinline__ void dec_cp16(void *dst, const void *src) { *(uint4 *)dst = *(const uint4 *)src; }
static __device__ __forceinline__ void dec_commit() {}
static __device__ __forceinline__ void dec_wait1() {}
#endif

/* 8 halves (16 bytes) . 8 floats */
static __device__ __forceinline__ float dec_dot8(uint4 u, const float *q) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 t = __half22float2(*(const __half2 *)&w[i]);
        s = fmaf(q[2 * i], t.x, s);
        s = fmaf(q[2 * i + 1], t.y, s);
    }
    return s;
}

/* Copies keys [kb, kb + n) of this (tile, head) into one stage: lane group (threadIdx.x >> 3) takes keys
 * group + 16 i, lane c = threadIdx.x & 7 their 16-byte slices c, c + 8, ... The block-table reads come first, all
 * of them: a cp.async is a memory barrier to the compiler, so a table read between two would wait for its round trip
 * before the next copy could issue. */
template <int DV, int TK>
static __device__ __forceinline__ void dec_issue(__half *ks, __half *vs, const __half *kh, const __half *vh,
                                                 const int32_t *blocks, int d_model, int hd, int kb, int n) {
    constexpr int PER = TK / (DEC_WARPS * 4); /* keys per lane group */
    const int c = threadIdx.x & 7, nv = hd >> 3, g = threadIdx.x >> 3;
    int64_t row[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int j = kb + g + DEC_WARPS * 4 * i;
        row[i] = g + DEC_WARPS * 4 * i < n
                     ? ((int64_t)blocks[j / ENG_KV_BLOCK] * ENG_KV_BLOCK + j % ENG_KV_BLOCK) * d_model
                     : -1;
    }
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int jj = g + DEC_WARPS * 4 * i;
        if (row[i] < 0) continue;
#pragma unroll
        for (int e = 0; e < DV; e++) {
            const int v = c + 8 * e;
            if (v < nv) {
                dec_cp16(ks + jj * hd + v * 8, kh + row[i] + v * 8);
                dec_cp16(vs + jj * hd + v * 8, vh + row[i] + v * 8);
            }
        }
    }
}

/* Per-CTA phase timestamps for tests/gpu/attn_decode_bench.cu (-DCUDA_ATTN_DEC_TRACE), compiled out otherwise */
#ifdef CUDA_ATTN_DEC_TRACE
__device__ unsigned long long dec_trace[16384][2][8]; /* [CTA][globaltimer ns, clock64][mark] */
#define DEC_MARK(i)                                                                                                  \
    do {                                                                                                             \
        if (threadIdx.x == 0) {                                                                                      \
            const unsigned cta_ = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);                    \
            unsigned long long t_;                                                                                   \
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_));                                                   \
            if (cta_ < 16384) dec_trace[cta_][0][i] = t_, dec_trace[cta_][1][i] = clock64();                        \
        }                                                                                                            \
    } while (0)
#else
#define DEC_MARK(i)
#endif

/* rope_kv_kernel's rotation of the pair (x0, x1) by t = (cos, sin), rounded to dt as its store into qkv rounds it:
 * the same f32 operations without contraction (cuda_rope.cu is compiled with --fmad=false), so bit-identical. */
static __device__ __forceinline__ void rope_pair(float &x0, float &x1, float2 t, int dt) {
    const float r0 = __fsub_rn(__fmul_rn(x0, t.x), __fmul_rn(x1, t.y));
    const float r1 = __fadd_rn(__fmul_rn(x1, t.x), __fmul_rn(x0, t.y));
    x0 = cu_round(r0, dt), x1 = cu_round(r1, dt);
}

/* The folded KV store (cuda__attn_args.rope_cs): head h's k (rotated) and v of the tile's row into the cache at the
 * row's slot, then a fence and a barrier, so that this CTA's copies of its stages (cp.async, through L2) see them. */
static __device__ __forceinline__ void dec_store_new(const cuda__attn_args &a, int4 tile, int h, int hd) {
    const int half = a.rotary_dim / 2;
    const int64_t r0 = (int64_t)tile.x * a.q.stride + (int64_t)h * hd;
    const int64_t c0 = (int64_t)a.slot[tile.x] * a.d_model + (int64_t)h * hd;
    const float2 *cs = (const float2 *)a.rope_cs + (int64_t)tile.z * half;
    for (int p = threadIdx.x; p < hd / 2; p += blockDim.x) {
        const int d = 2 * p;
        float k0 = cu_ld(a.q.data, a.q.dtype, r0 + a.d_model + d),
              k1 = cu_ld(a.q.data, a.q.dtype, r0 + a.d_model + d + 1);
        if (d < a.rotary_dim) rope_pair(k0, k1, cs[d / 2], a.q.dtype);
        const float v0 = cu_ld(a.q.data, a.q.dtype, r0 + 2 * a.d_model + d),
                    v1 = cu_ld(a.q.data, a.q.dtype, r0 + 2 * a.d_model + d + 1);
        *(__half2 *)((__half *)a.k + c0 + d) = __floats2half2_rn(k0, k1); /* the decode kernel's caches are f16 */
        *(__half2 *)((__half *)a.v + c0 + d) = __floats2half2_rn(v0, v1);
    }
    __threadfence();
    __syncthreads();
}

/* DV: head_dim <= 64 * DV (half2 accumulators per lane; also the 16-byte q slices a lane holds); TK keys a stage. */
template <int DV, int TK>
static __global__ void __launch_bounds__(DEC_WARPS * 32) attn_decode_kernel(cuda__attn_args a) {
    extern __shared__ __align__(16) unsigned char dsm[];
    constexpr int KW = TK / DEC_WARPS; /* keys per warp per stage */
    const int hd = a.head_dim, nv = hd >> 3, h = blockIdx.y, split = blockIdx.z, ti = blockIdx.x;
    DEC_MARK(0);
    const int4 tile = load_tile(a.tiles, ti);
    const int n_keys = tile.z + 1; /* one row: it sees keys 0 .. pos */
    const int k_begin = split * a.chunk, k_end = min(n_keys, k_begin + a.chunk);
    if (k_begin >= n_keys) return;
    DEC_MARK(1);
    const int used = (n_keys + a.chunk - 1) / a.chunk; /* chunks of this tile that hold keys */
    __half *kbuf = (__half *)dsm, *vbuf = kbuf + 2 * TK * hd; /* [2 stages][TK][hd] each */
    float *mrg = (float *)(vbuf + 2 * TK * hd);               /* [DEC_WARPS][hd + 2]: max, sum, acc */
    __shared__ int last;
    const __half *kh = (const __half *)a.k + (int64_t)h * hd, *vh = (const __half *)a.v + (int64_t)h * hd;
    const int32_t *blocks = a.blocks + tile.w;
    const int n_stages = (k_end - k_begin + TK - 1) / TK, first = min(TK, k_end - k_begin);
    /* PDL: the first stage is copied while the kernel before runs (the RoPE + KV store; after its early launch the
     * GEMV before that too), if it holds only keys of earlier steps. A 1-row tile's sequence stores at most
     * CUDA_ATTN_ROW_TILES_MAX keys a step (cuda.c), so keys below n_keys - that are old; the step's metadata (tile
     * list, block table) comes from an upload that every kernel of the step already follows. (DEC_MARK's trace writes come before the wait: its bench runs without
     * PDL.) */
    const bool early = k_begin + first <= n_keys - CUDA_ATTN_ROW_TILES_MAX;
    if (early) dec_issue<DV, TK>(kbuf, vbuf, kh, vh, blocks, a.d_model, hd, k_begin, first);
    cu_pdl_start();
    /* folded RoPE + KV store: the chunk holding the newest key (tile.z) stores it before copying any stage (if its
     * first stage is early, the key is in a later one) */
    if (a.rope_cs && tile.z >= k_begin && tile.z < k_end) dec_store_new(a, tile, h, hd);
    if (!early) dec_issue<DV, TK>(kbuf, vbuf, kh, vh, blocks, a.d_model, hd, k_begin, first);
    dec_commit();
    DEC_MARK(2);

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 3, c = lane & 7;
    float q[DV][8]; /* this lane's slices c + 8 i of q, scaled */
    {
        const float qs = a.scale * DEC_LOG2E;
        const int64_t q0 = (int64_t)tile.x * a.q.stride + (int64_t)h * hd;
        const float2 *cs = a.rope_cs ? (const float2 *)a.rope_cs + (int64_t)tile.z * (a.rotary_dim / 2) : nullptr;
#pragma unroll
        for (int i = 0; i < DV; i++)
#pragma unroll
            for (int e = 0; e < 8; e += 2) { /* pairs: hd % 8 == 0, so d + 1 < hd with d */
                const int d = (c + 8 * i) * 8 + e;
                float x0 = 0.0f, x1 = 0.0f;
                if (d < hd) {
                    x0 = cu_ld(a.q.data, a.q.dtype, q0 + d), x1 = cu_ld(a.q.data, a.q.dtype, q0 + d + 1);
                    if (a.rope_cs && d < a.rotary_dim) rope_pair(x0, x1, cs[d / 2], a.q.dtype);
                }
                q[i][e] = x0 * qs, q[i][e + 1] = x1 * qs;
            }
    }
    float m = -CUDART_INF_F, l = 0.0f;
    float2 acc[DV];
#pragma unroll
    for (int i = 0; i < DV; i++) acc[i] = make_float2(0.0f, 0.0f);

    for (int st = 0; st < n_stages; st++) {
        const int buf = st & 1, kb = k_begin + st * TK, n = min(TK, k_end - kb);
        if (st + 1 < n_stages) {
            const int kn = kb + TK, nb = (buf ^ 1) * TK * hd;
            dec_issue<DV, TK>(kbuf + nb, vbuf + nb, kh, vh, blocks, a.d_model, hd, kn, min(TK, k_end - kn));
        }
        dec_commit(); /* (maybe empty) so that wait_group 1 always means "stage st has landed" */
        dec_wait1();
        __syncthreads();
        if (st == 0) DEC_MARK(3);
        const __half *ks = kbuf + buf * TK * hd, *vs = vbuf + buf * TK * hd;
        const int j0 = warp * KW; /* this warp's keys of the stage: j0 .. j0 + KW */
        if (j0 < n) {
            /* lane L < KW ends up with key j0 + L's score: round r scores keys j0 + 4r + g */
            float sv = -CUDART_INF_F;
#pragma unroll
            for (int r = 0; r < KW / 4; r++) {
                const int jj = j0 + 4 * r + g;
                float s = 0.0f;
                if (jj < n) {
#pragma unroll
                    for (int i = 0; i < DV; i++) {
                        const int v = c + 8 * i;
                        if (v < nv) s += dec_dot8(*(const uint4 *)(ks + jj * hd + v * 8), q[i]);
                    }
                }
                s += __shfl_xor_sync(0xffffffffu, s, 1);
                s += __shfl_xor_sync(0xffffffffu, s, 2);
                s += __shfl_xor_sync(0xffffffffu, s, 4);
                const float t = __shfl_sync(0xffffffffu, s, (lane & 3) * 8);
                if ((lane >> 2) == r && j0 + lane < n) sv = t;
            }
            const float mn = fmaxf(m, cu_warp_max(sv)); /* finite: key j0 < n is valid */
            const float corr = exp2f(m - mn);            /* 0 while m is -inf */
            const float p = sv == -CUDART_INF_F ? 0.0f : exp2f(sv - mn);
            l = l * corr + p;
            m = mn;
#pragma unroll
            for (int i = 0; i < DV; i++) acc[i].x *= corr, acc[i].y *= corr;
            const int nk = min(KW, n - j0);
#pragma unroll
            for (int jj = 0; jj < KW; jj++) {
                if (jj < nk) {
                    const float pj = __shfl_sync(0xffffffffu, p, jj);
                    const __half *vr = vs + (j0 + jj) * hd;
#pragma unroll
                    for (int i = 0; i < DV; i++) {
                        const int d = 2 * (lane + 32 * i);
                        if (d < hd) {
                            const float2 vv = __half22float2(*(const __half2 *)(vr + d));
                            acc[i].x = fmaf(pj, vv.x, acc[i].x), acc[i].y = fmaf(pj, vv.y, acc[i].y);
                        }
                    }
                }
            }
        }
        __syncthreads(); /* the stage is read: the next iteration's copies may overwrite it */
    }

    DEC_MARK(4);
    /* merge the warps: (max, sum, acc) of each, then every thread takes head dims d */
    {
        const float ls = cu_warp_sum(l);
        float *e = mrg + warp * (hd + 2);
        if (lane == 0) e[0] = m, e[1] = ls;
#pragma unroll
        for (int i = 0; i < DV; i++) {
            const int d = 2 * (lane + 32 * i);
            if (d < hd) e[2 + d] = acc[i].x, e[3 + d] = acc[i].y;
        }
    }
    __syncthreads();
    const int64_t o0 = (int64_t)tile.x * a.out.stride + (int64_t)h * hd;
    float *pp = a.part + (((int64_t)ti * a.n_splits + split) * a.n_head + h) * (hd + 2);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float M = -CUDART_INF_F, L = 0.0f, A = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, mrg[w * (hd + 2)]);
        for (int w = 0; w < DEC_WARPS; w++) {
            const float *e = mrg + w * (hd + 2);
            const float wt = e[0] == -CUDART_INF_F ? 0.0f : exp2f(e[0] - M);
            L += wt * e[1];
            A += wt * e[2 + d];
        }
        if (used == 1) {
            cu_st(a.out.data, a.out.dtype, o0 + d, A / L);
        } else {
            if (d == 0) pp[0] = M, pp[1] = L;
            pp[2 + d] = A;
        }
    }
    DEC_MARK(5);
    if (used == 1) return;
    /* publish the partial, then the ticket: the CTA that completes the count sees every chunk's partial */
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned *t = (unsigned *)a.tickets + (int64_t)ti * a.n_head + h;
        last = atomicAdd(t, 1u) == (unsigned)used - 1;
        if (last) *t = 0; /* every other chunk has taken its ticket: ready for the next launch */
    }
    __syncthreads();
    DEC_MARK(6);
    if (!last) return;
    __threadfence();
    /* The merge, in chunk order. A group of up to 128 chunks (one a thread) finds its max, weights and sum together,
     * then each thread sums its head dims over the group with loads that do not wait for each other: the first
     * version walked the chunks one dependent load after another (as attn_combine_kernel does), ~5 us of the launch
     * at 16 chunks on an H100. The first 16 chunks' values are loaded before the max is known, in the same round
     * trip as the maxima. */
    /* 16-byte aligned: the compiler reads red[] as one 16-byte load, and at a 4-byte offset that load took in the
     * word before it, wsm's last, which thread 127 writes meanwhile (a race racecheck reports, value unused) */
    __shared__ __align__(16) float wsm[DEC_WARPS * 32];
    __shared__ __align__(16) float red[DEC_WARPS];
    const int64_t step = (int64_t)a.n_head * (hd + 2);
    const float *p0 = a.part + ((int64_t)ti * a.n_splits * a.n_head + h) * (hd + 2);
    float M = -CUDART_INF_F, L = 0.0f, A[2] = {0.0f, 0.0f}; /* head dims threadIdx.x and threadIdx.x + 128 */
    float pre[2][16];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int t = 0; t < 16; t++) {
            const int d = threadIdx.x + DEC_WARPS * 32 * i;
            pre[i][t] = d < hd && t < used ? __ldcg(p0 + t * step + 2 + d) : 0.0f;
        }
    for (int g0 = 0; g0 < used; g0 += DEC_WARPS * 32) {
        const int s = g0 + threadIdx.x, gn = min(DEC_WARPS * 32, used - g0);
        const float ms = s < used ? __ldcg(p0 + s * step) : -CUDART_INF_F, ls = s < used ? __ldcg(p0 + s * step + 1)
                                                                                        : 0.0f;
        float gm = cu_warp_max(ms);
        if (lane == 0) red[warp] = gm;
        __syncthreads();
        for (int w = 0; w < DEC_WARPS; w++) gm = fmaxf(gm, red[w]);
        const float mn = fmaxf(M, gm), corr = exp2f(M - mn); /* 0 for the first group */
        const float wt = s < used ? exp2f(ms - mn) : 0.0f;
        wsm[threadIdx.x] = wt;
        const float lw = cu_warp_sum(wt * ls);
        __syncthreads(); /* wsm written, red read */
        if (lane == 0) red[warp] = lw;
        __syncthreads();
        float lg = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++) lg += red[w];
        L = L * corr + lg, M = mn;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int d = threadIdx.x + DEC_WARPS * 32 * i;
            if (d >= hd) continue;
            float acc = A[i] * corr;
            const float *e = p0 + (int64_t)g0 * step + 2 + d;
            int t = 0;
            if (g0 == 0) {
#pragma unroll
                for (; t < 16; t++)
                    if (t < gn) acc += wsm[t] * pre[i][t];
            }
#pragma unroll 8
            for (; t < gn; t++) acc += wsm[t] * __ldcg(e + t * step);
            A[i] = acc;
        }
        __syncthreads(); /* before the next group's wsm, red */
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int d = threadIdx.x + DEC_WARPS * 32 * i;
        if (d < hd) cu_st(a.out.data, a.out.dtype, o0 + d, A[i] / L);
    }
    DEC_MARK(7);
}

/* Keys a stage of the decode kernel holds: a stage of K + V is 32 KiB at head_dim 256, 20 KiB at 80. */
#define DEC_TK(hd) ((hd) > 128 ? 32 : 64)
static size_t decode_smem(int hd) {
    return (size_t)4 * DEC_TK(hd) * hd * sizeof(__half) + DEC_WARPS * (hd + 2) * sizeof(float);
}

extern "C" size_t cuda__attention_decode_smem(int head_dim) { return decode_smem(head_dim); }

template <int DV> static cudaError_t launch_decode(cudaStream_t st, const cuda__attn_args *a) {
    constexpr int TK = DV == 4 ? 32 : 64; /* DEC_TK: DV is 4 exactly when head_dim > 128 */
    const size_t smem = decode_smem(a->head_dim);
    /* above 48 KiB needs the opt-in; a host-side attribute, allowed while a stream is being captured */
    cudaError_t e = cudaFuncSetAttribute(attn_decode_kernel<DV, TK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)a->n_tiles, (unsigned)a->n_head, (unsigned)a->n_splits);
    return cu_launch(attn_decode_kernel<DV, TK>, grid, dim3(DEC_WARPS * 32), smem, st, *a);
}

extern "C" int cuda__attention_decode_ok(int head_dim) { return head_dim > 0 && head_dim <= 256 && head_dim % 8 == 0; }

extern "C" cudaError_t cuda__attention_decode(cudaStream_t st, const cuda__attn_args *a) {
    if (a->n_tiles <= 0) return cudaSuccess;
    if (a->rows != 1 || a->kvdt != ENG_F16 || !cuda__attention_decode_ok(a->head_dim)) return cudaErrorInvalidValue;
    if (a->head_dim <= 64) return launch_decode<1>(st, a);
    if (a->head_dim <= 128) return launch_decode<2>(st, a);
    return launch_decode<4>(st, a);
}
