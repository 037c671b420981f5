/* cuda_persist.cu - every layer of a one-row decode step (batch-1 decode) of a small model in one persistent kernel.
 *
 * Why: at 350M a layer's 25 MB of weights take 8.4 us to read at 3 TB/s, but the layer as four dependent kernels
 * (LayerNorm GEMV, RoPE + KV store, attention, late GEMV) takes ~23 us (NOTES.md v16): each kernel waits for the one
 * before to end, and a kernel's weights can only stream once its CTAs find room on the SMs. Here one CTA per SM
 * runs all layers, with grid-wide barriers between the three phases of a layer, and holds its slices of the next
 * weights in shared memory while the phases before them run:
 *   A  x -> LayerNorm -> [mlp | q | k | v] = xn . w1^T + b1 for the CTA's R1 rows of w1 (GELU on mlp, RoPE on q
 *      and k, k and v into the cache at the row's slot); then w1's slice of the next layer starts copying in;
 *   B  attention: CTA i < H * S takes head i / S, split i % S of the keys: (max, sum, acc) partials;
 *   C  att (the partials merged, every CTA for itself) | mlp -> x += [att | mlp] . w2^T + b2 for its R2 rows of
 *      w2; then w2's slice of the next layer starts copying in.
 * w1's slice (R1 x D) and w2's (R2 x (D + F)) must both fit the SM's shared memory with the rest, which holds for
 * 350M on 132 SMs (56 x 1024 and 8 x 5120 halves: 192 KiB of 227) and no larger CodeGen: cuda__persist_ok says.
 * Precision is the op path's: f32 sums, every activation rounded to the activation dtype where the op path stores
 * it, K/V f16. NOT YET RUN ON A GPU (NOTES.md v17): opt-in through forward.c (SUGGESTD_PERSIST=1).
 *
 * Data another CTA wrote in this launch is read with ld.global.cg (L2): L1 is not coherent across SMs. Grid
 * barriers: a counter and a generation in global memory (cuda_backend.persist_bar, zero when idle). All CTAs must
 * be resident at once: one CTA per SM, which its shared memory forces, and no later kernel can take an SM first
 * (it launches only after every CTA of this one has run its PDL trigger). */
#include <math_constants.h>

#include "cuda_common.cuh"

#define PST_WARPS 16
#define PST_THREADS (PST_WARPS * 32)
#define PST_LOG2E 1.4426950408889634f
#define PST_GELU_C 0.7978845608028654f

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
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
#else
    v = *(const volatile unsigned *)p;
#endif
    return v;
}

/* Every CTA of the grid arrives before any leaves; writes before it are visible to reads (.cg) after it. bar[0]
 * counts arrivals (back to 0 by the last), bar[1] is the generation the others wait to change. */
static __device__ __forceinline__ void pst_grid_sync(unsigned *bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned gen = pst_ld_acquire(bar + 1);
        __threadfence();
        if (atomicAdd(bar, 1u) == gridDim.x - 1) {
            atomicExch(bar, 0u);
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            while (pst_ld_acquire(bar + 1) == gen) {
            }
        }
        __threadfence();
    }
    __syncthreads();
}

/* rows x cols 16-bit elements (cols % 8 == 0) from src (rows `stride` elements apart) into dst, packed, by the
 * whole CTA: one cp.async group (committed by the caller) */
static __device__ __forceinline__ void pst_fetch(uint16_t *dst, const void *src, int64_t stride, int rows, int cols) {
    const int cpr = cols / 8;
    const uint16_t *s = (const uint16_t *)src;
    for (int i = threadIdx.x; i < rows * cpr; i += PST_THREADS) {
        const int r = i / cpr, c = i - r * cpr;
        cu_cp_async16((uint32_t)__cvta_generic_to_shared(dst + (size_t)r * cols + 8 * c), s + r * stride + 8 * c, 16);
    }
}

/* rope_kv_kernel's rotation (cuda_rope.cu, --fmad=false): the same f32 operations without contraction */
template <typename T> static __device__ __forceinline__ void pst_rope(float &x0, float &x1, float2 t) {
    const float r0 = __fsub_rn(__fmul_rn(x0, t.x), __fmul_rn(x1, t.y));
    const float r1 = __fadd_rn(__fmul_rn(x1, t.x), __fmul_rn(x0, t.y));
    x0 = pst_round<T>(r0), x1 = pst_round<T>(r1);
}

/* Shared memory, in this order (16-byte aligned pieces): w1 slice [R1][D] | w2 slice [R2][D + F] | xn [D] |
 * xs [D + F] (T) | y1 [R1] | merge [PST_WARPS][hd + 2] | red [32] (f32) | blocks [max_blocks] (int32). */
static size_t pst_smem(int R1, int R2, int D, int F, int hd, int max_blocks) {
    size_t b = 0;
    b += (size_t)R1 * D * 2 + (size_t)R2 * (D + F) * 2 + (size_t)D * 2 + (size_t)(D + F) * 2;
    b += ((size_t)R1 * 4 + 15) / 16 * 16;
    b += (size_t)PST_WARPS * (hd + 2) * 4 + 32 * 4;
    b += (size_t)max_blocks * 4;
    return b;
}

template <typename T> static __global__ void __launch_bounds__(PST_THREADS, 1)
persist_kernel(const __grid_constant__ cuda__persist_args a) {
    extern __shared__ __align__(16) unsigned char psm[];
    const int D = a.D, F = a.F, hd = a.hd, N1 = F + 3 * D, K2 = D + F;
    uint16_t *w1s = (uint16_t *)psm, *w2s = w1s + (size_t)a.R1 * D, *xn = w2s + (size_t)a.R2 * K2, *xs = xn + D;
    float *y1 = (float *)(xs + K2), *mrg = y1 + (a.R1 + 3) / 4 * 4, *red = mrg + PST_WARPS * (hd + 2);
    int32_t *blk = (int32_t *)(red + 32);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n0 = blockIdx.x * a.R1, nr = max(0, min(a.R1, N1 - n0)); /* this CTA's w1 rows */
    const int m0 = blockIdx.x * a.R2, mr = max(0, min(a.R2, D - m0));  /* and w2 rows */

    /* Before the wait (PDL): the first layer's slices, and the step's layout (an upload every kernel follows):
     * [n_rows, blocks_cap, n64, n1, slot[1], blocks[blocks_cap], tile (row, 1, pos, block offset)] */
    pst_fetch(w1s, (const uint16_t *)a.L[0].w1 + (int64_t)n0 * a.w1s, a.w1s, nr, D);
    cu_cp_commit();
    pst_fetch(w2s, (const uint16_t *)a.L[0].w2 + (int64_t)m0 * a.w2s, a.w2s, mr, K2);
    cu_cp_commit();
    const int32_t cap = a.lay[1], slot = a.lay[4], *tile = a.lay + 5 + cap, off = tile[3];
    const int pos = tile[2];
    for (int i = tid; i < cap - off; i += PST_THREADS) blk[i] = a.lay[5 + off + i];
    const int rh = a.rot / 2;
    __syncthreads(); /* blk */
    cu_pdl_start();

    T *x = (T *)a.x, *mlp = (T *)a.mlp, *q = (T *)a.q;
    const int n_keys = pos + 1, chunk = (n_keys + a.S - 1) / a.S;
    for (int l = 0; l < a.n_layer; l++) {
        const cuda__persist_layer *L = &a.L[l];
        __half *const kc = (__half *)L->kc, *const vc = (__half *)L->vc;
        /* ---- A: LayerNorm, w1 ---- */
        if ((int)blockIdx.x < a.H * a.S) { /* phase B's old keys and values into L2 meanwhile: one line a row */
            const int h = blockIdx.x / a.S, k0 = (blockIdx.x - h * a.S) * chunk, k1 = min(pos, k0 + chunk);
            for (int i = tid; i < 2 * max(0, k1 - k0); i += PST_THREADS) {
                const int j = k0 + i / 2;
                const __half *p = (i & 1 ? vc : kc) +
                                  ((int64_t)blk[j / ENG_KV_BLOCK] * ENG_KV_BLOCK + j % ENG_KV_BLOCK) * D + h * hd;
                asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
            }
        }
        cu_cp_wait<1>(); /* this thread's copies of w1's slice have landed (w2's may not) */
        float s = 0.0f;
        for (int c = tid; c < D / 8; c += PST_THREADS) {
            const uint4 v = __ldcg(reinterpret_cast<const uint4 *>(x) + c);
            reinterpret_cast<uint4 *>(xn)[c] = v;
            float f[8];
            pst_unpack<T>(v, f);
#pragma unroll
            for (int j = 0; j < 8; j++) s += f[j];
        }
        const float mean = cu_block_sum(s, red) / (float)D;
        float v2 = 0.0f;
        for (int c = tid; c < D / 8; c += PST_THREADS) {
            float f[8];
            pst_unpack<T>(reinterpret_cast<const uint4 *>(xn)[c], f);
#pragma unroll
            for (int j = 0; j < 8; j++) v2 += (f[j] - mean) * (f[j] - mean);
        }
        const float rstd = rsqrtf(cu_block_sum(v2, red) / (float)D + a.eps);
        for (int c = tid; c < D / 8; c += PST_THREADS) {
            float f[8], g[8], bb[8];
            pst_unpack<T>(reinterpret_cast<const uint4 *>(xn)[c], f);
            pst_unpack<T>(__ldg(reinterpret_cast<const uint4 *>(L->ln_w) + c), g);
            pst_unpack<T>(__ldg(reinterpret_cast<const uint4 *>(L->ln_b) + c), bb);
            __align__(16) T o[8];
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] = pst_t<T>((f[j] - mean) * rstd * g[j] + bb[j]);
            reinterpret_cast<uint4 *>(xn)[c] = *reinterpret_cast<const uint4 *>(o);
        }
        __syncthreads(); /* xn complete; w1's slice landed for every thread */
        for (int r = warp; r < nr; r += PST_WARPS) {
            const float acc = pst_row_dot<T>(w1s + (size_t)r * D, xn, D, lane);
            if (lane == 0) y1[r] = acc;
        }
        __syncthreads(); /* w1's slice read: the next layer's may come in */
        if (l + 1 < a.n_layer)
            pst_fetch(w1s, (const uint16_t *)a.L[l + 1].w1 + (int64_t)n0 * a.w1s, a.w1s, nr, D);
        cu_cp_commit(); /* (maybe empty: the group count stays the same every layer) */
        /* the epilogue by row pairs (R1 and n0 even, F and D even: a pair is one q or k rotation) */
        const T *b1 = (const T *)L->b1;
        for (int p = tid; p < nr / 2; p += PST_THREADS) {
            const int r = 2 * p, n = n0 + r;
            float v0 = y1[r] + pst_f(b1[n]), v1 = y1[r + 1] + pst_f(b1[n + 1]);
            if (n < F) { /* the GEMV's GELU on fc_in's columns, rounded once */
                v0 = 0.5f * v0 * (1.0f + tanhf(PST_GELU_C * (v0 + 0.044715f * v0 * v0 * v0)));
                v1 = 0.5f * v1 * (1.0f + tanhf(PST_GELU_C * (v1 + 0.044715f * v1 * v1 * v1)));
                mlp[n] = pst_t<T>(v0), mlp[n + 1] = pst_t<T>(v1);
                continue;
            }
            const int m = n - F, which = m / D, col = m - which * D, d = col % hd;
            v0 = pst_round<T>(v0), v1 = pst_round<T>(v1); /* as stored into qkv by the GEMV */
            if (which < 2 && d < a.rot) pst_rope<T>(v0, v1, a.cs[(int64_t)pos * rh + d / 2]);
            if (which == 0) {
                q[col] = pst_t<T>(v0), q[col + 1] = pst_t<T>(v1);
            } else {
                __half *dst = (which == 1 ? kc : vc) + (int64_t)slot * D + col;
                *reinterpret_cast<__half2 *>(dst) = __floats2half2_rn(v0, v1);
            }
        }
        pst_grid_sync(a.bar);

        /* ---- B: attention, one (head, split) a CTA ---- */
        if ((int)blockIdx.x < a.H * a.S) {
            /* lane holds head dims lane + 32 e (e < 4: head_dim <= 128); arrays indexed by unrolled loops only, so
             * they stay in registers */
            const int h = blockIdx.x / a.S, sp = blockIdx.x - h * a.S;
            const int k0 = sp * chunk, k1 = min(n_keys, k0 + chunk);
            float qf[4], acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const float qs = a.scale * PST_LOG2E;
#pragma unroll
            for (int e = 0; e < 4; e++)
                qf[e] = lane + 32 * e < hd ? pst_f(__ldcg(q + h * hd + lane + 32 * e)) * qs : 0.0f;
            float mx = -CUDART_INF_F, sum = 0.0f;
            for (int j0 = k0 + warp * 4; j0 < k1; j0 += PST_WARPS * 4) { /* 4 keys a warp at a time */
                float sc[4], vv[4][4];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int j = j0 + u;
                    sc[u] = 0.0f;
                    if (j >= k1) continue;
                    const int64_t row = ((int64_t)blk[j / ENG_KV_BLOCK] * ENG_KV_BLOCK + j % ENG_KV_BLOCK) * D +
                                        h * hd + lane;
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        vv[u][e] = 0.0f;
                        if (lane + 32 * e >= hd) continue;
                        sc[u] = fmaf(qf[e], __half2float(__ldcg(kc + row + 32 * e)), sc[u]);
                        vv[u][e] = __half2float(__ldcg(vc + row + 32 * e));
                    }
                }
#pragma unroll
                for (int u = 0; u < 4; u++) sc[u] = cu_warp_sum(sc[u]);
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    if (j0 + u >= k1) break;
                    const float mn = fmaxf(mx, sc[u]), corr = exp2f(mx - mn), pr = exp2f(sc[u] - mn);
                    sum = sum * corr + pr;
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[e] = fmaf(pr, vv[u][e], acc[e] * corr);
                    mx = mn;
                }
            }
            float *e0 = mrg + warp * (hd + 2); /* merge the warps */
            if (lane == 0) e0[0] = mx, e0[1] = sum;
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (lane + 32 * e < hd) e0[2 + lane + 32 * e] = acc[e];
            __syncthreads();
            float *pp = a.part + (size_t)blockIdx.x * (hd + 2);
            for (int d = tid; d < hd; d += PST_THREADS) {
                float M = -CUDART_INF_F, Ls = 0.0f, A = 0.0f;
                for (int w = 0; w < PST_WARPS; w++) M = fmaxf(M, mrg[w * (hd + 2)]);
                for (int w = 0; w < PST_WARPS; w++) {
                    const float *ew = mrg + w * (hd + 2);
                    const float wt = ew[0] == -CUDART_INF_F ? 0.0f : exp2f(ew[0] - M);
                    Ls += wt * ew[1], A += wt * ew[2 + d];
                }
                if (d == 0) pp[0] = M, pp[1] = Ls;
                pp[2 + d] = A;
            }
        }
        pst_grid_sync(a.bar);

        /* ---- C: att | mlp, w2, the residual ---- */
        cu_cp_wait<1>(); /* w2's slice (the next w1 slice may still be coming) */
        for (int i = tid; i < D; i += PST_THREADS) {
            const int h = i / hd, d = i - h * hd;
            const float *ph = a.part + (size_t)h * a.S * (hd + 2);
            float M = -CUDART_INF_F, Ls = 0.0f, A = 0.0f;
            for (int sp = 0; sp < a.S; sp++) M = fmaxf(M, __ldcg(ph + sp * (hd + 2)));
            for (int sp = 0; sp < a.S; sp++) {
                const float ms = __ldcg(ph + sp * (hd + 2)), wt = ms == -CUDART_INF_F ? 0.0f : exp2f(ms - M);
                Ls += wt * __ldcg(ph + sp * (hd + 2) + 1), A += wt * __ldcg(ph + sp * (hd + 2) + 2 + d);
            }
            reinterpret_cast<T *>(xs)[i] = pst_t<T>(A / Ls);
        }
        for (int c = tid; c < F / 8; c += PST_THREADS)
            reinterpret_cast<uint4 *>(xs + D)[c] = __ldcg(reinterpret_cast<const uint4 *>(mlp) + c);
        __syncthreads();
        const T *b2 = (const T *)L->b2;
        for (int r = warp; r < mr; r += PST_WARPS) {
            const float acc = pst_row_dot<T>(w2s + (size_t)r * K2, xs, K2, lane);
            if (lane == 0) {
                const int n = m0 + r;
                x[n] = pst_t<T>(acc + pst_f(b2[n]) + pst_f(__ldcg(x + n)));
            }
        }
        __syncthreads(); /* w2's slice read */
        if (l + 1 < a.n_layer)
            pst_fetch(w2s, (const uint16_t *)a.L[l + 1].w2 + (int64_t)m0 * a.w2s, a.w2s, mr, K2);
        cu_cp_commit();
        pst_grid_sync(a.bar);
    }
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
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
    if (smem + 1024 > smem_max) return 0;
    void (*k)(cuda__persist_args) = dt == ENG_BF16 ? pst_kernel<__nv_bfloat16>() : pst_kernel<__half>();
    int per = 0;
    if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k, PST_THREADS, smem) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return per >= 1; /* the grid barriers need every CTA resident */
}

extern "C" cudaError_t cuda__persist(cudaStream_t st, int n_sms, cuda__persist_args *a, eng_dtype dt) {
    pst_rows(n_sms, a->D, a->F, &a->R1, &a->R2);
    a->max_blocks = CUDA_PERSIST_MAX_BLOCKS;
    const size_t smem = pst_smem(a->R1, a->R2, a->D, a->F, a->hd, a->max_blocks);
    void (*k)(cuda__persist_args) = dt == ENG_BF16 ? pst_kernel<__nv_bfloat16>() : pst_kernel<__half>();
    cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    return e != cudaSuccess ? e : cu_launch(k, dim3((unsigned)n_sms), dim3(PST_THREADS), smem, st, *a);
}
