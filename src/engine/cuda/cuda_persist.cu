/* cuda_persist.cu - every layer of a one-row decode step (batch-1 decode) of a small model in one persistent kernel.
 *
 * Why: at 350M a layer's 25 MB of weights take 8.4 us to read at 3 TB/s, but the layer as four dependent kernels
 * (LayerNorm GEMV, RoPE + KV store, attention, late GEMV) takes ~23 us (NOTES.md v16): each kernel waits for the one
 * before to end, and a kernel's weights can only stream once its CTAs find room on the SMs. Here one CTA per SM
 * runs all layers, with grid-wide barriers between the three phases of a layer; 15 warps compute while a 16th
 * copies the CTA's slices of the next weights into shared memory (bulk copies) during the phases before them:
 *   A  x -> LayerNorm -> [mlp | q | k | v] = xn . w1^T + b1 for the CTA's R1 rows of w1 (GELU on mlp, RoPE on q
 *      and k, k and v into the cache at the row's slot); w1's buffer is then free for the next layer's slice;
 *   B  attention: CTA i < H * S takes head i / S, split i % S of the keys: (max, sum, acc) partials;
 *   C  att (the partials merged, every CTA for itself) | mlp -> x += [att | mlp] . w2^T + b2 for its R2 rows of
 *      w2; w2's buffer is then free.
 * w1's slice (R1 x D, with LayerNorm's vectors) and w2's (R2 x (D + F)) must both fit the SM's shared memory with
 * the rest, which holds for 350M on 132 SMs (56 x 1024 and 8 x 5120 halves: 213 KiB of 227) and no larger CodeGen:
 * cuda__persist_ok says. 350M decode at context 1024 on an H100: 0.489 ms a token, the op path 0.56 (NOTES.md v17).
 * Precision is the op path's: f32 sums, every activation rounded to the activation dtype where the op path stores
 * it, K/V f16 (test_gpu_parity's layers_decode).
 *
 * Data another CTA wrote in this launch is read with ld.global.cg (L2): L1 is not coherent across SMs. Grid
 * barriers: a counter (zero between barriers) and a generation in global memory (cuda_backend.persist_bar). All CTAs
 * must be resident at once: as many CTAs as SMs, nothing else of ours runs beside them (a step's kernels run in
 * order, and no later kernel can take an SM first: it launches only after every CTA of this one has run its PDL
 * trigger). Not a cooperative launch, so nothing checks that: under MPS with a share of the SMs it would hang
 * (SUGGESTD_PERSIST=0 there). sm_90 and later (bulk copies, mbarrier
 * transaction counts); older parts lack the shared memory anyway. */
#include <math_constants.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_common.cuh"

#define PST_WARPS 15
#define PST_THREADS (PST_WARPS * 32) /* the compute warps; one more warp copies the weights in */
#define PST_NX 4     /* w1's GEMV: x's 16-byte chunks a lane holds (D <= 1024) */
#define PST_ATT_NB 4                  /* attention: key loads a lane has in flight */
/* The copy warp's pieces: whole rows, up to 16 KB (a longer row is a piece of its own: 350M's w2 rows of 10 KB), one in
 * flight (8 KB x 2: +16 us a token at 350M, 24 KB x 1: +25 us; NOTES.md v17) */
#define PST_PIECE 16384
#define PST_AHEAD 1
#define PST_MARKS 13 /* the trace's stamps a layer (SUGGESTD_PERSIST_TRACE) */
#define PST_LOG2E 1.4426950408889634f
#define PST_GELU_C 0.7978845608028654f

/* The device helpers, compiled for sm_90 and later only: below it the kernel is a stub (cuda__persist_ok refuses
 * such code), and nvcc would call them unreferenced. */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900

/* 16-bit activation/weight types: T <-> f32 */
static __device__ __forceinline__ float pst_f(__half v) { return __half2float(v); }
static __device__ __forceinline__ float pst_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> static __device__ __forceinline__ T pst_t(float f);
template <> __device__ __forceinline__ __half pst_t<__half>(float f) { return __float2half_rn(f); }
template <> __device__ __forceinline__ __nv_bfloat16 pst_t<__nv_bfloat16>(float f) { return __float2bfloat16_rn(f); }
template <typename T> static __device__ __forceinline__ float pst_round(float f) { return pst_f(pst_t<T>(f)); }

/* 8 values of a 16-byte chunk as f32 */
template <typename T> static __device__ __forceinline__ void pst_unpack(uint4 v, float *f) {
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const T *p = reinterpret_cast<const T *>(&u[i]);
        f[2 * i] = pst_f(p[0]), f[2 * i + 1] = pst_f(p[1]);
    }
}

template <typename T> static __device__ __forceinline__ float pst_dot8(uint4 w, uint4 x, float s) {
    float a[8], b[8];
    pst_unpack<T>(w, a);
    pst_unpack<T>(x, b);
#pragma unroll
    for (int i = 0; i < 8; i++) s = fmaf(a[i], b[i], s);
    return s;
}

/* A warp's dot product of one row of w (K 16-bit values, shared memory) and x (shared), summed over the warp. */
template <typename T>
static __device__ __forceinline__ float pst_row_dot(const uint16_t *w, const uint16_t *x, int K, int lane) {
    float acc = 0.0f;
    for (int c = lane; c < K / 8; c += 32)
        acc = pst_dot8<T>(reinterpret_cast<const uint4 *>(w)[c], reinterpret_cast<const uint4 *>(x)[c], acc);
    return cu_warp_sum(acc);
}

static __device__ __forceinline__ unsigned pst_ld_acquire(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* SUGGESTD_PERSIST_TRACE=1 (a diagnostic): thread 0 of every CTA stamps %globaltimer at each phase edge of every
 * layer, trace[(layer * PST_MARKS + mark) * grid + CTA]; cuda__persist reads a launch's stamps back before the next
 * launch and prints the mean phase times at exit. */
static __device__ __forceinline__ void pst_mark(unsigned long long *tr, int l, int m) {
    if (tr && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        tr[((size_t)l * PST_MARKS + m) * gridDim.x + blockIdx.x] = t;
    }
}

/* The compute warps' __syncthreads (the copy warp never joins): named barrier 1 */
static __device__ __forceinline__ void pst_sync() { asm volatile("bar.sync 1, %0;" ::"n"(PST_THREADS) : "memory"); }

static __device__ __forceinline__ float pst_block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = cu_warp_sum(v);
    pst_sync(); /* red may still be read by a previous call */
    if (lane == 0) red[warp] = v;
    pst_sync();
    v = lane < PST_WARPS ? red[lane] : 0.0f;
    return cu_warp_sum(v);
}

/* Every CTA of the grid arrives before any leaves; writes before it are visible to reads (.cg) after it. bar[0]
 * counts arrivals (back to 0 by the last), bar[1] is the generation the others wait to change. (Trace: marks m, m + 1
 * of layer l on arrival and on leaving.) */
static __device__ __forceinline__ void pst_grid_sync(unsigned *bar, unsigned long long *tr, int l, int m) {
    pst_sync();
    pst_mark(tr, l, m);
    if (threadIdx.x == 0) { /* release: the CTA's writes (ordered before by bar.sync); acquire: everyone's */
        const unsigned gen = pst_ld_acquire(bar + 1);
        unsigned old;
        asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(old) : "l"(bar) : "memory");
        if (old == gridDim.x - 1) {
            asm volatile("st.relaxed.gpu.global.u32 [%0], 0;" ::"l"(bar) : "memory");
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar + 1) : "memory");
        } else {
            while (pst_ld_acquire(bar + 1) == gen) {
            }
        }
    }
    pst_mark(tr, l, m + 1);
    pst_sync();
}

/* ---- bulk copies (TMA, sm_90): one thread issues a row's copy and goes on; the bytes land in shared memory by
 * themselves and complete a transaction count on an mbarrier, which the readers wait on. (cp.async, which every
 * thread issues 16 bytes at a time, stalled the issuing threads for as long as the copy took: ~5 us a layer at 350M,
 * the SM's share of the bandwidth, NOTES.md v17.) */
static __device__ __forceinline__ uint32_t pst_sa(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

static __device__ __forceinline__ void pst_bar_init(uint64_t *bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(pst_sa(bar)) : "memory");
}

/* Arms bar for `bytes` more bytes (its one arrival, by the thread that then issues the copies) */
static __device__ __forceinline__ void pst_bar_expect(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(pst_sa(bar)), "r"(bytes) : "memory");
}

/* Until bar's phase of this parity (the k-th fill waits for parity k & 1) has completed */
static __device__ __forceinline__ void pst_bar_wait(uint64_t *bar, unsigned parity) {
    uint32_t done = 0;
    while (!done)
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
                     : "=r"(done)
                     : "r"(pst_sa(bar)), "r"(parity)
                     : "memory");
}

static __device__ __forceinline__ void pst_bulk(void *dst, const void *src, uint32_t bytes, uint64_t *bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     pst_sa(dst)),
                 "l"(src), "r"(bytes), "r"(pst_sa(bar))
                 : "memory");
}

static __device__ __forceinline__ void pst_bar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(pst_sa(bar)) : "memory");
}

/* The copy warp's lane 0: every layer's slices into the two buffers, in pieces of whole rows of up to `piece` bytes
 * (at least one row), with at most `ahead` of them in flight. Each piece has a ring mbarrier (piece k: ring[k % ahead], the (k / ahead)-th use);
 * a buffer's last piece landed, it arrives on full[b]; it refills buffer b once the compute warps have read it
 *  (pst_empty_arrive, pst_empty_wait).  Why pieces: the SM's loads queue behind its copies in flight, so a whole slice at
 * once (112 KB at 350M) held every load of the phase after it for ~5 us (NOTES.md v17). */
/* "Buffer b read": the compute warps arrive (bar.arrive, no wait), the copy warp waits (bar.sync) on named barrier
 * 2 + b. (A hardware barrier rather than an mbarrier, so that compute-sanitizer's racecheck sees the order too.) */
static __device__ __forceinline__ void pst_empty_arrive(int b) {
    asm volatile("bar.arrive %0, %1;" ::"r"(2 + b), "n"(PST_THREADS + 32) : "memory");
}
static __device__ __forceinline__ void pst_empty_wait(int b) {
    asm volatile("bar.sync %0, %1;" ::"r"(2 + b), "n"(PST_THREADS + 32) : "memory");
}

struct pst_copier {
    uint64_t *ring;
    unsigned k; /* pieces issued */
    int ahead;
    __device__ __forceinline__ void wait_piece(unsigned j) { pst_bar_wait(ring + j % ahead, (j / ahead) & 1); }
    /* a ring barrier for the next piece of `bytes`, once the piece `ahead` before it has landed */
    __device__ __forceinline__ uint64_t *next(uint32_t bytes) {
        if (k >= (unsigned)ahead) wait_piece(k - ahead);
        uint64_t *b = ring + k % ahead;
        pst_bar_expect(b, bytes);
        k++;
        return b;
    }
    __device__ __forceinline__ void drain() {
        for (unsigned j = k > (unsigned)ahead ? k - ahead : 0; j < k; j++) wait_piece(j);
    }
    /* rows x cols 16-bit elements (cols % 8 == 0) from src (rows `stride` apart) into dst, packed */
    __device__ __forceinline__ void rows(uint16_t *dst, const uint16_t *src, int64_t stride, int n, int cols,
                                         int piece) {
        const int per = max(1, piece / (cols * 2));
        for (int r0 = 0; r0 < n; r0 += per) {
            const int nn = min(per, n - r0);
            uint64_t *b = next((uint32_t)(nn * cols * 2));
            for (int r = r0; r < r0 + nn; r++)
                pst_bulk(dst + (size_t)r * cols, src + r * stride, (uint32_t)cols * 2, b);
        }
    }
};

/* rope_kv_kernel's rotation (cuda_rope.cu, --fmad=false): the same f32 operations without contraction */
template <typename T> static __device__ __forceinline__ void pst_rope(float &x0, float &x1, float2 t) {
    const float r0 = __fsub_rn(__fmul_rn(x0, t.x), __fmul_rn(x1, t.y));
    const float r1 = __fadd_rn(__fmul_rn(x1, t.x), __fmul_rn(x0, t.y));
    x0 = pst_round<T>(r0), x1 = pst_round<T>(r1);
}

#endif /* sm_90 */

/* Shared memory, in this order (16-byte aligned pieces): w1 slice [R1][D] | ln_w [D] | ln_b [D] | w2 slice
 * [R2][D + F] | xn [D] | xs [D + F] (T) | y1 [R1] | merge [PST_WARPS][hd + 4] | red [32] (f32) | blocks [max_blocks]
 * (int32) | mbarriers: full[2] (0: w1 + LayerNorm, 1: w2), ring[PST_AHEAD]. */
static size_t pst_smem(int R1, int R2, int D, int F, int hd, int max_blocks) {
    size_t b = 0;
    b += (size_t)R1 * D * 2 + (size_t)2 * D * 2 + (size_t)R2 * (D + F) * 2 + (size_t)D * 2 + (size_t)(D + F) * 2;
    b += ((size_t)R1 * 4 + 15) / 16 * 16;
    b += (size_t)PST_WARPS * (hd + 4) * 4 + 32 * 4;
    b += ((size_t)max_blocks * 4 + 15) / 16 * 16;
    return b + (2 + PST_AHEAD) * 8;
}

template <typename T> static __global__ void __launch_bounds__(PST_THREADS + 32, 1)
persist_kernel(const __grid_constant__ cuda__persist_args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    __trap(); /* cuda__persist_ok refuses code compiled below sm_90 */
#else
    extern __shared__ __align__(16) unsigned char psm[];
    const int D = a.D, F = a.F, hd = a.hd, N1 = F + 3 * D, K2 = D + F;
    const int PS = hd + 4; /* a partial (max, sum, -, -, acc[hd]): acc 16-byte aligned */
    uint16_t *w1s = (uint16_t *)psm, *lnw = w1s + (size_t)a.R1 * D, *lnb = lnw + D, *w2s = lnb + D;
    uint16_t *xn = w2s + (size_t)a.R2 * K2, *xs = xn + D;
    float *y1 = (float *)(xs + K2), *mrg = y1 + (a.R1 + 3) / 4 * 4, *red = mrg + PST_WARPS * (hd + 4);
    int32_t *blk = (int32_t *)(red + 32);
    uint64_t *full = (uint64_t *)(blk + (a.max_blocks + 3) / 4 * 4), *ring = full + 2;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n0 = blockIdx.x * a.R1, nr = max(0, min(a.R1, N1 - n0)); /* this CTA's w1 rows */
    const int m0 = blockIdx.x * a.R2, mr = max(0, min(a.R2, D - m0));  /* and w2 rows */

    if (tid == 0) {
        for (int i = 0; i < 2 + PST_AHEAD; i++) pst_bar_init(full + i);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads(); /* (the last barrier of all 15 + 1 warps) */
    if (warp == PST_WARPS) { /* the copy warp: weights only, so no wait for the kernel before (PDL) */
        pst_copier c = {ring, 0u, PST_AHEAD};
        for (int l = 0; l < a.n_layer; l++) {
            const cuda__persist_layer *L = &a.L[l];
            if (l > 0) pst_empty_wait(0); /* (the whole warp: bar.sync is .aligned) */
            if (lane == 0) {
                asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); /* generic reads before, async writes */
                c.rows(w1s, (const uint16_t *)L->w1 + (int64_t)n0 * a.w1s, a.w1s, nr, D, PST_PIECE);
                uint64_t *b = c.next((uint32_t)D * 4);
                pst_bulk(lnw, L->ln_w, (uint32_t)D * 2, b), pst_bulk(lnb, L->ln_b, (uint32_t)D * 2, b);
                c.drain();
                pst_bar_arrive(full);
            }
            __syncwarp();
            if (l > 0) pst_empty_wait(1);
            if (lane == 0) {
                asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
                c.rows(w2s, (const uint16_t *)L->w2 + (int64_t)m0 * a.w2s, a.w2s, mr, K2, PST_PIECE);
                c.drain();
                pst_bar_arrive(full + 1);
            }
            __syncwarp();
        }
        return;
    }
    /* Before the wait (PDL): the step's layout (an upload every kernel follows):
     * [n_rows, blocks_cap, n64, n1, slot[1], blocks[blocks_cap], tile (row, 1, pos, block offset)] */
    const int32_t cap = a.lay[1], slot = a.lay[4], *tile = a.lay + 5 + cap, off = tile[3];
    const int pos = tile[2];
    for (int i = tid; i < min(cap - off, a.max_blocks); i += PST_THREADS) blk[i] = a.lay[5 + off + i];
    /* the epilogue's row pair (R1 and n0 even, F and D even: a pair is one q or k rotation) and its RoPE entry */
    const int ep_n = n0 + 2 * tid, ep_m = ep_n - F, ep_which = ep_m / D, ep_col = ep_m - ep_which * D;
    const int ep_d = ep_col % hd;
    const bool ep_on = 2 * tid < nr, ep_rope = ep_on && ep_n >= F && ep_which < 2 && ep_d < a.rot;
    const float2 ep_cs = ep_rope ? a.cs[(int64_t)pos * (a.rot / 2) + ep_d / 2] : make_float2(0.0f, 0.0f);
    pst_sync(); /* blk */
    cu_pdl_start();

    T *x = (T *)a.x, *mlp = (T *)a.mlp, *q = (T *)a.q;
    unsigned long long *const tr = a.trace;
    const int n_keys = pos + 1, chunk = (n_keys + a.S - 1) / a.S;
    for (int l = 0; l < a.n_layer; l++) {
        const cuda__persist_layer *L = &a.L[l];
        __half *const kc = (__half *)L->kc, *const vc = (__half *)L->vc;
        /* ---- A: LayerNorm, w1 ---- */
        pst_mark(tr, l, 0);
        uint32_t ep_b = 0; /* the pair's bias (two T) */
        if (ep_on) ep_b = __ldg(reinterpret_cast<const uint32_t *>((const T *)L->b1 + ep_n));
        if ((int)blockIdx.x < a.H * a.S) { /* phase B's old keys and values into L2 meanwhile: one line a row */
            const int h = blockIdx.x / a.S, k0 = (blockIdx.x - h * a.S) * chunk, k1 = min(pos, k0 + chunk);
            for (int i = tid; i < 2 * max(0, k1 - k0); i += PST_THREADS) {
                const int j = k0 + i / 2;
                const __half *p = (i & 1 ? vc : kc) +
                                  ((int64_t)blk[j / ENG_KV_BLOCK] * ENG_KV_BLOCK + j % ENG_KV_BLOCK) * D + h * hd;
                asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
            }
        }
        float s = 0.0f;
        for (int c = tid; c < D / 8; c += PST_THREADS) {
            const uint4 xv = __ldcg(reinterpret_cast<const uint4 *>(x) + c);
            reinterpret_cast<uint4 *>(xn)[c] = xv;
            float f[8];
            pst_unpack<T>(xv, f);
#pragma unroll
            for (int j = 0; j < 8; j++) s += f[j];
        }
        const float mean = pst_block_sum(s, red) / (float)D;
        float v2 = 0.0f;
        for (int c = tid; c < D / 8; c += PST_THREADS) {
            float f[8];
            pst_unpack<T>(reinterpret_cast<const uint4 *>(xn)[c], f);
#pragma unroll
            for (int j = 0; j < 8; j++) v2 += (f[j] - mean) * (f[j] - mean);
        }
        const float rstd = rsqrtf(pst_block_sum(v2, red) / (float)D + a.eps);
        pst_bar_wait(full, l & 1); /* w1's slice and LayerNorm's vectors */
        if (tr) pst_sync(), pst_mark(tr, l, 1);
        for (int c = tid; c < D / 8; c += PST_THREADS) {
            float f[8], g[8], bb[8];
            pst_unpack<T>(reinterpret_cast<const uint4 *>(xn)[c], f);
            pst_unpack<T>(reinterpret_cast<const uint4 *>(lnw)[c], g);
            pst_unpack<T>(reinterpret_cast<const uint4 *>(lnb)[c], bb);
            __align__(16) T o[8];
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] = pst_t<T>((f[j] - mean) * rstd * g[j] + bb[j]);
            reinterpret_cast<uint4 *>(xn)[c] = *reinterpret_cast<const uint4 *>(o);
        }
        pst_sync(); /* xn complete */
        pst_mark(tr, l, 2);
        { /* x's chunks in registers: the lane's chunks are the same for every row (pst_row_dot's order) */
            uint4 xr[PST_NX];
#pragma unroll
            for (int i = 0; i < PST_NX; i++)
                xr[i] = lane + 32 * i < D / 8 ? reinterpret_cast<const uint4 *>(xn)[lane + 32 * i] : make_uint4(0, 0, 0, 0);
            for (int r = warp; r < nr; r += PST_WARPS) {
                const uint4 *wr = reinterpret_cast<const uint4 *>(w1s + (size_t)r * D);
                float acc = 0.0f;
#pragma unroll
                for (int i = 0; i < PST_NX; i++)
                    if (lane + 32 * i < D / 8) acc = pst_dot8<T>(wr[lane + 32 * i], xr[i], acc);
                acc = cu_warp_sum(acc);
                if (lane == 0) y1[r] = acc;
            }
        }
        pst_sync(); /* y1; w1's slice and LayerNorm's vectors read: the next layer's may come in */
        if (l + 1 < a.n_layer) pst_empty_arrive(0);
        pst_mark(tr, l, 3);
        if (ep_on) {
            const T *bp = reinterpret_cast<const T *>(&ep_b);
            float v0 = y1[2 * tid] + pst_f(bp[0]), v1 = y1[2 * tid + 1] + pst_f(bp[1]);
            if (ep_n < F) { /* the GEMV's GELU on fc_in's columns, rounded once */
                v0 = 0.5f * v0 * (1.0f + tanhf(PST_GELU_C * (v0 + 0.044715f * v0 * v0 * v0)));
                v1 = 0.5f * v1 * (1.0f + tanhf(PST_GELU_C * (v1 + 0.044715f * v1 * v1 * v1)));
                mlp[ep_n] = pst_t<T>(v0), mlp[ep_n + 1] = pst_t<T>(v1);
            } else {
                v0 = pst_round<T>(v0), v1 = pst_round<T>(v1); /* as stored into qkv by the GEMV */
                if (ep_rope) pst_rope<T>(v0, v1, ep_cs);
                if (ep_which == 0) {
                    q[ep_col] = pst_t<T>(v0), q[ep_col + 1] = pst_t<T>(v1);
                } else {
                    __half *dst = (ep_which == 1 ? kc : vc) + (int64_t)slot * D + ep_col;
                    *reinterpret_cast<__half2 *>(dst) = __floats2half2_rn(v0, v1);
                }
            }
        }
        pst_grid_sync(a.bar, tr, l, 4);

        /* ---- B: attention, one (head, split) a CTA ---- */
        if ((int)blockIdx.x < a.H * a.S) {
            /* A key's row is read by a group of lpk lanes, 16 bytes (8 dims) each, so one load instruction of the
             * warp covers kpi = 32 / lpk keys and every key of the split is asked for in one round trip to L2 (at
             * 1024 keys; q's load with them). Each lane keeps the online softmax of its group's keys for its 8 dims;
             * the groups, then the warps, merge at the end. */
            const int h = blockIdx.x / a.S, sp = blockIdx.x - h * a.S;
            const int k0 = sp * chunk, k1 = min(n_keys, k0 + chunk);
            const int lpk = a.lpk, kpi = 32 / lpk, g = lane / lpk, gl = lane - g * lpk;
            const bool dl = gl * 8 < hd; /* this lane has dims */
            float qf[8], acc[8];
            {
                const uint4 qv = dl ? __ldcg(reinterpret_cast<const uint4 *>(q + h * hd + gl * 8)) : make_uint4(0, 0, 0, 0);
                pst_unpack<T>(qv, qf);
                const float qs = a.scale * PST_LOG2E;
#pragma unroll
                for (int e = 0; e < 8; e++) qf[e] *= qs, acc[e] = 0.0f;
            }
            float mx = -CUDART_INF_F, sum = 0.0f;
            for (int j0 = k0 + warp * kpi; j0 < k1; j0 += PST_WARPS * kpi * PST_ATT_NB) {
                uint4 kr[PST_ATT_NB], vr[PST_ATT_NB];
#pragma unroll
                for (int u = 0; u < PST_ATT_NB; u++) {
                    const int j = j0 + u * PST_WARPS * kpi + g;
                    kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
                    if (j < k1 && dl) {
                        const int64_t row = ((int64_t)blk[j / ENG_KV_BLOCK] * ENG_KV_BLOCK + j % ENG_KV_BLOCK) * D +
                                            h * hd + gl * 8;
                        kr[u] = __ldcg(reinterpret_cast<const uint4 *>(kc + row));
                        vr[u] = __ldcg(reinterpret_cast<const uint4 *>(vc + row));
                    }
                }
#pragma unroll
                for (int u = 0; u < PST_ATT_NB; u++) {
                    float kf[8], sc = 0.0f;
                    pst_unpack<__half>(kr[u], kf);
#pragma unroll
                    for (int e = 0; e < 8; e++) sc = fmaf(qf[e], kf[e], sc);
                    for (int o = lpk / 2; o > 0; o /= 2) sc += __shfl_xor_sync(0xffffffffu, sc, o);
                    if (j0 + u * PST_WARPS * kpi + g >= k1) continue; /* (uniform in the group) */
                    float vf[8];
                    pst_unpack<__half>(vr[u], vf);
                    const float mn = fmaxf(mx, sc), corr = exp2f(mx - mn), pr = exp2f(sc - mn);
                    sum = sum * corr + pr;
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[e] = fmaf(pr, vf[e], acc[e] * corr);
                    mx = mn;
                }
            }
            for (int o = lpk; o < 32; o *= 2) { /* the groups of the warp */
                const float m2 = __shfl_xor_sync(0xffffffffu, mx, o), s2 = __shfl_xor_sync(0xffffffffu, sum, o);
                const float mn = fmaxf(mx, m2);
                const float c1 = mx == -CUDART_INF_F ? 0.0f : exp2f(mx - mn);
                const float c2 = m2 == -CUDART_INF_F ? 0.0f : exp2f(m2 - mn);
                sum = sum * c1 + s2 * c2;
#pragma unroll
                for (int e = 0; e < 8; e++) acc[e] = acc[e] * c1 + __shfl_xor_sync(0xffffffffu, acc[e], o) * c2;
                mx = mn;
            }
            float *e0 = mrg + warp * PS; /* merge the warps */
            if (lane == 0) e0[0] = mx, e0[1] = sum;
            if (lane < lpk && dl)
#pragma unroll
                for (int e = 0; e < 8; e++) e0[4 + gl * 8 + e] = acc[e];
            pst_sync();
            float *pp = a.part + (size_t)blockIdx.x * PS;
            for (int d = tid; d < hd; d += PST_THREADS) {
                float M = -CUDART_INF_F, Ls = 0.0f, A = 0.0f;
                for (int w = 0; w < PST_WARPS; w++) M = fmaxf(M, mrg[w * PS]);
                for (int w = 0; w < PST_WARPS; w++) {
                    const float *ew = mrg + w * PS;
                    const float wt = ew[0] == -CUDART_INF_F ? 0.0f : exp2f(ew[0] - M);
                    Ls += wt * ew[1], A += wt * ew[4 + d];
                }
                if (d == 0) pp[0] = M, pp[1] = Ls;
                pp[4 + d] = A;
            }
        }
        pst_grid_sync(a.bar, tr, l, 6);

        /* ---- C: att | mlp, w2, the residual ---- */
        /* one round trip to L2: mlp's first 2 x 16 bytes a thread, and for the dims 4i .. 4i + 3 every split's
         * (max, sum) and four sums */
        uint4 mv0 = make_uint4(0, 0, 0, 0), mv1 = mv0;
        const int mc1 = tid + PST_THREADS;
        if (tid < F / 8) mv0 = __ldcg(reinterpret_cast<const uint4 *>(mlp) + tid);
        if (mc1 < F / 8) mv1 = __ldcg(reinterpret_cast<const uint4 *>(mlp) + mc1);
        for (int i = tid; i < D / 4; i += PST_THREADS) {
            const int h = 4 * i / hd, d = 4 * i - h * hd;
            const float *ph = a.part + (size_t)h * a.S * PS;
            float2 ms[CUDA_PERSIST_MAX_SPLITS];
            float4 av[CUDA_PERSIST_MAX_SPLITS];
#pragma unroll
            for (int sp = 0; sp < CUDA_PERSIST_MAX_SPLITS; sp++)
                if (sp < a.S) {
                    ms[sp] = __ldcg(reinterpret_cast<const float2 *>(ph + sp * PS));
                    av[sp] = __ldcg(reinterpret_cast<const float4 *>(ph + sp * PS + 4 + d));
                }
            float M = -CUDART_INF_F, Ls = 0.0f, A0 = 0.0f, A1 = 0.0f, A2 = 0.0f, A3 = 0.0f;
#pragma unroll
            for (int sp = 0; sp < CUDA_PERSIST_MAX_SPLITS; sp++)
                if (sp < a.S) M = fmaxf(M, ms[sp].x);
#pragma unroll
            for (int sp = 0; sp < CUDA_PERSIST_MAX_SPLITS; sp++)
                if (sp < a.S) {
                    const float wt = ms[sp].x == -CUDART_INF_F ? 0.0f : exp2f(ms[sp].x - M);
                    Ls += wt * ms[sp].y;
                    A0 += wt * av[sp].x, A1 += wt * av[sp].y, A2 += wt * av[sp].z, A3 += wt * av[sp].w;
                }
            T *o = reinterpret_cast<T *>(xs) + 4 * i;
            o[0] = pst_t<T>(A0 / Ls), o[1] = pst_t<T>(A1 / Ls), o[2] = pst_t<T>(A2 / Ls), o[3] = pst_t<T>(A3 / Ls);
        }
        if (tid < F / 8) reinterpret_cast<uint4 *>(xs + D)[tid] = mv0;
        if (mc1 < F / 8) reinterpret_cast<uint4 *>(xs + D)[mc1] = mv1;
        for (int c = tid + 2 * PST_THREADS; c < F / 8; c += PST_THREADS) /* (F > 16 x PST_THREADS only) */
            reinterpret_cast<uint4 *>(xs + D)[c] = __ldcg(reinterpret_cast<const uint4 *>(mlp) + c);
        if (tr) pst_sync(), pst_mark(tr, l, 8);
        pst_bar_wait(full + 1, l & 1); /* w2's slice */
        pst_sync(); /* xs complete */
        pst_mark(tr, l, 9);
        const T *b2 = (const T *)L->b2;
        for (int r = warp; r < mr; r += PST_WARPS) {
            const int n = m0 + r;
            float bv = 0.0f, xr = 0.0f;
            if (lane == 0) bv = pst_f(b2[n]), xr = pst_f(__ldcg(x + n));
            const float acc = pst_row_dot<T>(w2s + (size_t)r * K2, xs, K2, lane);
            if (lane == 0) x[n] = pst_t<T>(acc + bv + xr);
        }
        if (l + 1 < a.n_layer) pst_empty_arrive(1); /* w2's slice read */
        pst_mark(tr, l, 10);
        pst_grid_sync(a.bar, tr, l, 11);
    }
#endif
}

/* One CTA an SM: rows of w1 a CTA even (a RoPE pair in one CTA), of w2 as few as cover D. */
static void pst_rows(int n_sms, int64_t D, int64_t F, int *R1, int *R2) {
    const int64_t r1 = (F + 3 * D + n_sms - 1) / n_sms;
    *R1 = (int)((r1 + 1) / 2 * 2), *R2 = (int)((D + n_sms - 1) / n_sms);
}

template <typename T> static void (*pst_kernel())(cuda__persist_args) { return persist_kernel<T>; }

extern "C" int cuda__persist_ok(int n_sms, size_t smem_max, int64_t D, int64_t F, int hd, eng_dtype dt) {
    if (n_sms <= 0 || D <= 0 || F <= 0 || D > (1 << 20) || F > (1 << 22) || hd <= 0 || hd % 8 || hd > 128 ||
        (dt != ENG_F16 && dt != ENG_BF16))
        return 0;
    int R1, R2;
    pst_rows(n_sms, D, F, &R1, &R2);
    const size_t smem = pst_smem(R1, R2, (int)D, (int)F, hd, CUDA_PERSIST_MAX_BLOCKS);
    if (smem + 1024 > smem_max || R1 > 2 * PST_THREADS || D > PST_NX * 256) /* (the epilogue: a row pair a thread) */
        return 0;
    void (*k)(cuda__persist_args) = dt == ENG_BF16 ? pst_kernel<__nv_bfloat16>() : pst_kernel<__half>();
    int per = 0;
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, k) != cudaSuccess || fa.ptxVersion < 90 || /* (code below sm_90 traps) */
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k, PST_THREADS + 32, smem) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return per >= 1; /* the grid barriers need every CTA resident */
}

/* The trace's host side: each launch's stamps, read back before the next launch (the last launch's are not read),
 * summed into mean times between marks over launches, layers and CTAs (n[m] terms each); barrier rows also give
 * the spread of arrivals (last minus first CTA). A diagnostic: one shape a process, one thread. */
static const char *const pst_mark_name[PST_MARKS] = {
    "A  start",           "A  LN sums, w1 landed", "A  LayerNorm",       "A  w1 GEMV",          "A  epilogue (arrive)",
    "A  barrier (leave)", "B  attention (arrive)", "B  barrier (leave)", "C  merge + mlp",       "C  w2 slice landed",
    "C  w2 GEMV",         "C  arrive",             "C  barrier (leave)"};
static struct {
    unsigned long long *dev, *host;
    size_t n; /* stamps of the launch in dev (0: none) */
    int n_layer, grid, launches;
    double sum[PST_MARKS], n_sum[PST_MARKS], spread[PST_MARKS], layer, n_layer_sum; /* ns, and their counts */
} pst_tr;

static void pst_trace_print(void) {
    if (!pst_tr.launches) return;
    fprintf(stderr, "persist trace: %d launches, %d layers, %d CTAs; mean us from the mark before\n",
            pst_tr.launches, pst_tr.n_layer, pst_tr.grid);
    for (int m = 0; m < PST_MARKS; m++)
        fprintf(stderr, "  %-24s %7.2f   arrival spread %6.2f\n", pst_mark_name[m],
                pst_tr.n_sum[m] ? pst_tr.sum[m] / pst_tr.n_sum[m] / 1e3 : 0.0,
                pst_tr.spread[m] / ((double)pst_tr.launches * pst_tr.n_layer) / 1e3);
    if (pst_tr.n_layer_sum)
        fprintf(stderr, "  layer (CTA 0, start to start) %.2f us\n", pst_tr.layer / pst_tr.n_layer_sum / 1e3);
}

static void pst_trace_read(cudaStream_t st) {
    if (!pst_tr.n || cudaStreamSynchronize(st) != cudaSuccess ||
        cudaMemcpy(pst_tr.host, pst_tr.dev, pst_tr.n * 8, cudaMemcpyDeviceToHost) != cudaSuccess)
        return;
    const int G = pst_tr.grid, NL = pst_tr.n_layer;
    const unsigned long long *t = pst_tr.host;
    for (int l = 0; l < NL; l++) {
        for (int m = 0; m < PST_MARKS; m++) {
            const unsigned long long *r = t + ((size_t)l * PST_MARKS + m) * G;
            const unsigned long long *p = m ? r - G : (l ? r - G : NULL); /* the mark before: the last layer's end */
            unsigned long long lo = ~0ull, hi = 0;
            for (int c = 0; c < G; c++) {
                if (p) pst_tr.sum[m] += (double)(r[c] - p[c]);
                lo = r[c] < lo ? r[c] : lo, hi = r[c] > hi ? r[c] : hi;
            }
            pst_tr.n_sum[m] += p ? G : 0;
            pst_tr.spread[m] += (double)(hi - lo);
        }
        if (l + 1 < NL) {
            pst_tr.layer += (double)(t[(size_t)(l + 1) * PST_MARKS * G] - t[(size_t)l * PST_MARKS * G]);
            pst_tr.n_layer_sum += 1;
        }
    }
    pst_tr.launches++;
    pst_tr.n = 0;
}

/* The trace buffer for this launch, or NULL: off, or the stream is being captured (a graph can't read back). */
static unsigned long long *pst_trace(cudaStream_t st, int n_layer, int grid) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("SUGGESTD_PERSIST_TRACE");
        on = e && e[0] == '1';
        if (on) atexit(pst_trace_print);
    }
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (!on || cudaStreamIsCapturing(st, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return NULL;
    pst_trace_read(st);
    const size_t n = (size_t)CUDA_PERSIST_MAX_LAYERS * PST_MARKS * 256;
    if (!pst_tr.host && !(pst_tr.host = (unsigned long long *)malloc(n * 8))) return NULL;
    if (!pst_tr.dev && cudaMalloc(&pst_tr.dev, n * 8) != cudaSuccess) {
        (void)cudaGetLastError();
        on = 0;
        return NULL;
    }
    if (grid > 256 || n_layer > CUDA_PERSIST_MAX_LAYERS) return NULL;
    pst_tr.n = (size_t)n_layer * PST_MARKS * grid, pst_tr.n_layer = n_layer, pst_tr.grid = grid;
    return pst_tr.dev;
}

extern "C" cudaError_t cuda__persist(cudaStream_t st, int n_sms, cuda__persist_args *a, eng_dtype dt) {
    a->trace = pst_trace(st, a->n_layer, n_sms);
    for (a->lpk = 1; a->lpk * 8 < a->hd; a->lpk *= 2) {
    }
    pst_rows(n_sms, a->D, a->F, &a->R1, &a->R2);
    a->max_blocks = CUDA_PERSIST_MAX_BLOCKS;
    const size_t smem = pst_smem(a->R1, a->R2, a->D, a->F, a->hd, a->max_blocks);
    void (*k)(cuda__persist_args) = dt == ENG_BF16 ? pst_kernel<__nv_bfloat16>() : pst_kernel<__half>();
    cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    return e != cudaSuccess ? e : cu_launch(k, dim3((unsigned)n_sms), dim3(PST_THREADS + 32), smem, st, *a);
}
