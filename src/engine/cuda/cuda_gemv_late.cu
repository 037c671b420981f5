/* cuda_gemv_late.cu - the decode GEMV whose input row arrives in two parts: y (+)= x . w^T + bias for one row x,
 * where the kernel launched just before writes x's columns [0, kl) and older kernels wrote the rest.
 *
 * Why: at decode a layer's second fused matmul is x += [att | mlp] . [out_proj | fc_out]^T. Attention, which writes
 * att, is latency-bound and leaves HBM idle for ~10 us; fc_out's part (mlp, 4x the columns) does not need it. Until
 * now fc_out ran on a side branch beside attention, then out_proj and an add after the join: three launches and a
 * fork/join a layer (NOTES.md v11-v14). Here one kernel, launched with PDL (cuda_common.cuh) as attention's
 * dependent, starts while attention runs:
 *   before the wait: each CTA copies its rows' late weights w[n0 .. n0 + R)[0, kl) into shared memory (cp.async)
 *     and streams the rest of its rows, w[.][kl, K), against mlp with LATE_DEPTH 16-byte loads a lane in flight (a
 *     register ring: the shared memory is the late weights'), keeping one partial sum per (row, warp);
 *   after the wait (attention done): att is copied in, each warp finishes whole rows from shared memory, and the
 *     epilogue adds the partials in a fixed order, the bias and the old y, rounding into y once.
 * What is left after attention ends is a few KB of shared-memory dot products: the tail the join, out_proj and the
 * add used to take. (A version with a deep cp.async ring and the late weights prefetched into L2 instead streamed no
 * faster and left a ~14 us tail of L2 misses: NOTES.md v15.)
 *
 * Reading mlp before the wait is allowed because the kernel before (attention) lets this one launch only after its
 * own wait (cu_pdl_start): when this kernel starts, everything two or more launches back - the GEMV that wrote mlp -
 * has finished. After a kernel that let it launch earlier (cu_pdl_trigger) the backend launches it without PDL
 * (cuda_backend.pdl_early), and then, as without PDL at all, it is a plain GEMV that starts when that kernel ends.
 *
 * One CTA of LATE_WARPS warps per R = ceil(N / SMs) rows, so one wave; where the shared memory (R kl late
 * weights, the K columns of x, the partials) exceeds the device's limit, cuda__gemv_late_fits says no and the
 * caller takes the plain GEMV. Deterministic: each sum's order is fixed by the grid. */
#include "cuda_common.cuh"

#define LATE_WARPS 12 /* warps a CTA: 8 and 16 measured slower at 2B (NOTES.md v15) */
#define LATE_DEPTH 8 /* 16-byte loads a lane keeps in flight */

struct late_args {
    eng_tensor y, x;
    const void *w;
    int64_t ws;
    int N, K, kl, R;
    const void *bias;
    int bdt, accumulate;
};

/* Weights are read once: no L1 allocation, and L2 may fetch the 256-byte sector pair */
static __device__ __forceinline__ uint4 late_ldw(const void *p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
#else
    return __ldg(reinterpret_cast<const uint4 *>(p));
#endif
}

/* A 32-bit pair of 16-bit values as f32 (bf16: a shift, exact). */
template <typename T> static __device__ __forceinline__ float2 late_f2(uint32_t u);
template <> __device__ __forceinline__ float2 late_f2<__half>(uint32_t u) {
    return __half22float2(*reinterpret_cast<const __half2 *>(&u));
}
template <> __device__ __forceinline__ float2 late_f2<__nv_bfloat16>(uint32_t u) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u));
}

/* Eight products of 16-bit w (WT) and x (bf16 or f16 by xbf) chunks, summed into s (f32). */
template <typename WT> static __device__ __forceinline__ float late_dot8(uint4 w, uint4 x, bool xbf, float s) {
    const uint32_t wu[4] = {w.x, w.y, w.z, w.w}, xu[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 a = late_f2<WT>(wu[i]), b = xbf ? late_f2<__nv_bfloat16>(xu[i]) : late_f2<__half>(xu[i]);
        s = fmaf(a.x, b.x, s), s = fmaf(a.y, b.y, s);
    }
    return s;
}

/* Shared memory: wl [R][kl] late weights | x [K] (16-bit, x's dtype) | part [R][LATE_WARPS] floats. */
static size_t late_smem(int R, int K, int kl) {
    return (size_t)R * kl * 2 + (size_t)K * 2 + (size_t)R * LATE_WARPS * 4;
}

/* EARLY: the next kernel may launch at this one's start (cuda__gemv_late) */
template <typename WT, bool EARLY>
static __global__ void __launch_bounds__(LATE_WARPS * 32, 1) gemv_late_kernel(late_args a) {
    constexpr int W = LATE_WARPS;
    extern __shared__ __align__(16) unsigned char lsm[];
    uint16_t *wl = (uint16_t *)lsm, *xs = wl + (size_t)a.R * a.kl;
    float *part = (float *)(xs + a.K);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n0 = blockIdx.x * a.R;
    const int nr = min(a.R, a.N - n0), ce = (a.K - a.kl) / 8, cl = a.kl / 8;
    const bool xbf = a.x.dtype == ENG_BF16;
    const uint16_t *x = (const uint16_t *)a.x.data;
    const WT *w = (const WT *)a.w + (int64_t)n0 * a.ws; /* the CTA's first row */
    /* EARLY: the next kernel (the next layer's LayerNorm GEMV, whose prologue reads only weights) may launch now,
     * and its CTAs that find room issue their weights while attention and this kernel run (NOTES.md v16). A
     * template argument, not a run-time one: a run-time switch here cost 2B's kernel 14 us a layer (85 registers
     * instead of 96 and a slower schedule of the ring). */
    if constexpr (EARLY) cu_pdl_trigger();

    /* The early part as steps of 32 chunks (a warp's 512 B of one row), rows after each other; warp i takes a
     * contiguous run of them, so each (row, warp) pair has at most one partial sum. */
    const int spr = (ce + 31) / 32, total = nr * spr, per = (total + W - 1) / W;
    const int s0 = min(total, warp * per), s1 = min(total, s0 + per);
    int pr = s0 / spr, pk = s0 - pr * spr; /* the step the ring loads next */
    uint4 ring[LATE_DEPTH];
    auto load = [&](uint4 &v) {
        const int c = pk * 32 + lane;
        if (c < ce) v = late_ldw(w + (int64_t)pr * a.ws + a.kl + 8 * c);
        if (++pk == spr) pk = 0, pr++;
    };
#pragma unroll
    for (int i = 0; i < LATE_DEPTH; i++)
        if (s0 + i < s1) load(ring[i]);

    /* x's early columns (group 0), then the late weights (group 1), into shared memory; the partials zeroed */
    for (int c = threadIdx.x; c < ce; c += blockDim.x)
        cu_cp_async16((uint32_t)__cvta_generic_to_shared(xs + a.kl + 8 * c), x + a.kl + 8 * c, 16);
    cu_cp_commit();
    for (int i = threadIdx.x; i < nr * cl; i += blockDim.x) {
        const int r = i / cl, c = i - r * cl;
        cu_cp_async16((uint32_t)__cvta_generic_to_shared(wl + (size_t)r * a.kl + 8 * c), w + (int64_t)r * a.ws + 8 * c,
                      16);
    }
    cu_cp_commit();
    for (int i = threadIdx.x; i < a.R * W; i += blockDim.x) part[i] = 0.0f;
    cu_cp_wait<1>();
    __syncthreads();

    int cr = s0 / spr, ck = s0 - cr * spr; /* the step consumed next */
    float acc = 0.0f;
    for (int s = s0; s < s1; s += LATE_DEPTH) {
#pragma unroll
        for (int i = 0; i < LATE_DEPTH; i++) {
            if (s + i >= s1) break; /* uniform over the warp */
            const uint4 v = ring[i];
            if (s + i + LATE_DEPTH < s1) load(ring[i]);
            const int c = ck * 32 + lane;
            if (c < ce) acc = late_dot8<WT>(v, *reinterpret_cast<const uint4 *>(xs + a.kl + 8 * c), xbf, acc);
            if (++ck == spr) {
                acc = cu_warp_sum(acc);
                if (lane == 0) part[cr * W + warp] = acc;
                acc = 0.0f, ck = 0, cr++;
            }
        }
    }
    if (ck) { /* the run ended inside a row */
        acc = cu_warp_sum(acc);
        if (lane == 0) part[cr * W + warp] = acc;
    }

    /* attention (the kernel before) is done from here: its columns of x, then the late weights' products */
    cu_pdl_start();
    for (int c = threadIdx.x; c < cl; c += blockDim.x)
        cu_cp_async16((uint32_t)__cvta_generic_to_shared(xs + 8 * c), x + 8 * c, 16);
    cu_cp_commit();
    cu_cp_wait<0>();
    __syncthreads();
    for (int r = warp; r < nr; r += W) {
        float sum = 0.0f;
        for (int c = lane; c < cl; c += 32)
            sum = late_dot8<WT>(*reinterpret_cast<const uint4 *>(wl + (size_t)r * a.kl + 8 * c),
                                *reinterpret_cast<const uint4 *>(xs + 8 * c), xbf, sum);
        sum = cu_warp_sum(sum);
        if (lane == 0) {
            float e = 0.0f;
#pragma unroll
            for (int i = 0; i < W; i++) e += part[r * W + i];
            float val = sum + e;
            const int n = n0 + r;
            if (a.bias) val += cu_ld(a.bias, a.bdt, n);
            if (a.accumulate) val += cu_ld(a.y.data, a.y.dtype, n);
            cu_st(a.y.data, a.y.dtype, n, val);
        }
    }
}

template <typename WT, bool EARLY>
static cudaError_t launch_late(cudaStream_t st, int pdl, size_t smem_max, size_t smem, const late_args &a) {
    /* the opt-in limit, the same value whatever the shape, so that two backends' launches cannot interleave a
     * smaller limit between another's attribute and its launch */
    cudaError_t e =
        cudaFuncSetAttribute(gemv_late_kernel<WT, EARLY>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_max);
    if (e != cudaSuccess) return e;
    return cu_launch_pdl(pdl, gemv_late_kernel<WT, EARLY>, dim3((unsigned)((a.N + a.R - 1) / a.R)),
                         dim3(LATE_WARPS * 32), smem, st, a);
}

extern "C" int cuda__gemv_late_fits(int n_sms, size_t smem_max, int64_t n, int64_t k, int64_t kl) {
    if (n <= 0 || n > INT32_MAX || k > INT32_MAX || kl <= 0 || kl >= k || kl % 8 || k % 8 || n_sms <= 0) return 0;
    return late_smem((int)((n + n_sms - 1) / n_sms), (int)k, (int)kl) + 1024 <= smem_max;
}

extern "C" cudaError_t cuda__gemv_late(cudaStream_t st, int pdl, int early, int n_sms, size_t smem_max, eng_tensor y,
                                       eng_tensor x, eng_tensor w, const eng_tensor *bias, int accumulate, int kl) {
    const int64_t N = w.rows, K = w.cols;
    if (!cuda__gemv_late_fits(n_sms, smem_max, N, K, kl) || x.rows != 1 || x.cols != K || w.stride % 8 ||
        ((uintptr_t)w.data & 15) || ((uintptr_t)x.data & 15) || (x.dtype != ENG_F16 && x.dtype != ENG_BF16) ||
        (w.dtype != ENG_F16 && w.dtype != ENG_BF16))
        return cudaErrorInvalidValue;
    const int R = (int)((N + n_sms - 1) / n_sms); /* one CTA an SM */
    const late_args a = {y, x, w.data, w.stride, (int)N, (int)K, kl, R, bias ? bias->data : NULL,
                         bias ? (int)bias->dtype : 0, accumulate};
    const size_t smem = late_smem(R, (int)K, kl);
    if (w.dtype == ENG_F16)
        return early ? launch_late<__half, true>(st, pdl, smem_max, smem, a)
                     : launch_late<__half, false>(st, pdl, smem_max, smem, a);
    return early ? launch_late<__nv_bfloat16, true>(st, pdl, smem_max, smem, a)
                 : launch_late<__nv_bfloat16, false>(st, pdl, smem_max, smem, a);
}
