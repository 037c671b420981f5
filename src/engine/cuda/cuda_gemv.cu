/* cuda_gemv.cu - decode matmul for a few rows: y[t] (+)= act(x[t] . w^T * scale + bias) for T <= 8; w f16, bf16
 * or int8 (ENG_Q8: per-row f32 scales) [N, K].
 *
 * At decode the whole cost of a matmul is streaming w once, so the kernel is built around bytes in flight. Nsight
 * Compute on an H100 (NOTES.md "v6") showed why v1 and v2 stalled at 0.7-1.9 TB/s: they held the weights they had
 * requested in registers (8 x 16 B per lane), which capped occupancy at 25% (119 registers) and left every warp
 * waiting for a full memory round trip per 8 loads, with nothing else to do. v3:
 * - weights go global -> shared memory with cp.async (16 B per lane per step, L2 only), which holds no register
 *   while in flight, through a ring of GEMV_STAGES steps per warp: 8 x 512 B = 4 KiB in flight per warp, and more
 *   warps per SM fit because the registers are free;
 * - each warp owns a run of whole rows and streams them as one sequence of steps (a step = 32 lanes x 16 B of one
 *   row), so the ring runs across row ends and never drains until the warp's last row; a lane reads back only what
 *   it copied itself, so no barrier is needed anywhere (cp.async.wait_group orders a thread's own copies);
 * - the grid is one wave: rows per warp = N / (warps resident on the GPU), from the occupancy API;
 * - x is read with vector loads at the lane's k (a few KB every warp reads: L1/L2 hits);
 * - f32 sums, one warp reduction per (row, t) at the row's end, and an epilogue that applies the int8 row scale,
 *   the bias, GELU (fc_in), and with accumulate the old y, rounding into y once.
 * Needs K % 8 (int8: 16) == 0, w and x 16-byte aligned with strides multiples of that (cuda_matmul.c checks;
 * cuBLAS otherwise). No allocation, no synchronization: graph-capturable.
 * v8 (gemv_layernorm_kernel): the LayerNorm before the matmul folded in. After issuing its first weight copies
 * (which keep HBM busy meanwhile), the CTA normalizes its T input rows into shared memory, rounded to x's dtype as
 * the LayerNorm kernel's store rounds them (f32 statistics over two passes, as cuda_norm.cu, summed in another
 * order), behind three barriers; the main loop then reads x from there instead of global memory and is the plain
 * kernel's. That shared x costs CTAs per SM, so at T = 1 CTAs of 16 warps share it where CTAs of 4 would leave the
 * SM fewer warps (launch_ln). The first try, every warp computing the statistics for itself and normalizing x at
 * every step (no barrier), made fc_in|qkv's GEMV 50% slower on an H100 (NOTES.md v8): the normalization was redone
 * for every weight row, with the gain and the bias as two more loads a step.
 * v12: the kernel before may still be running when this one starts (programmatic dependent launch, sm_90): the
 * first ring of weights is issued before cu_pdl_start(), so it streams while that kernel ends. */
#include "cuda_common.cuh"

#define GEMV_WARPS 4   /* warps per CTA (each independent: CTAs only group them for the scheduler) */
#define GEMV_STAGES 8 /* steps (512 B per warp) in flight per warp; 16 (v3's first run) let shared memory cap
                        * occupancy at 24 warps per SM, too few to hide the x loads */
#define GELU_C 0.7978845608028654f

/* Element traits: how a 16-byte chunk of weights unpacks into f32. */
template <typename WT> struct wchunk;
template <> struct wchunk<__half> {
    enum { N = 8 };
    static __device__ __forceinline__ void unpack(uint4 v, float *f) {
        const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 p = __half22float2(*reinterpret_cast<const __half2 *>(&u[i]));
            f[2 * i] = p.x, f[2 * i + 1] = p.y;
        }
    }
};
template <> struct wchunk<__nv_bfloat16> {
    enum { N = 8 };
    static __device__ __forceinline__ void unpack(uint4 v, float *f) {
        const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) /* bf16 -> f32 is a shift: exact */
            f[2 * i] = __uint_as_float(u[i] << 16), f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
};
template <> struct wchunk<int8_t> {
    enum { N = 16 };
    static __device__ __forceinline__ void unpack(uint4 v, float *f) {
        const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) f[4 * i + j] = (float)(int8_t)(u[i] >> (8 * j));
    }
};

template <typename HT> static __device__ __forceinline__ HT cvt(float f);
template <> __device__ __forceinline__ __half cvt<__half>(float f) { return __float2half_rn(f); }
template <> __device__ __forceinline__ __nv_bfloat16 cvt<__nv_bfloat16>(float f) { return __float2bfloat16_rn(f); }

/* x[i .. i + 8) as f32 (i a multiple of 8, x 16-byte aligned): one or two vector loads by x's dtype, which is the
 * same for every thread. */
static __device__ __forceinline__ void ld_x8(const void *x, int dt, int64_t i, float *f) {
    if (dt == ENG_F32) {
        const float4 a = *reinterpret_cast<const float4 *>((const float *)x + i);
        const float4 b = *reinterpret_cast<const float4 *>((const float *)x + i + 4);
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
    } else if (dt == ENG_F16) {
        wchunk<__half>::unpack(*reinterpret_cast<const uint4 *>((const uint16_t *)x + i), f);
    } else {
        wchunk<__nv_bfloat16>::unpack(*reinterpret_cast<const uint4 *>((const uint16_t *)x + i), f);
    }
}


struct gemv_args {
    eng_tensor y, x;
    const void *w;
    const float *scales; /* int8: one per row */
    int64_t ws;
    int N, K, rows_per_warp;
    const void *bias;
    int bdt, accumulate, gelu; /* gelu: GELU on output columns [0, gelu) */
    const void *ln_w, *ln_b;   /* gemv_layernorm_kernel: the LayerNorm's gain and bias [K] of ln_dt */
    int ln_dt;
    float eps;
    int warps_cap; /* host only: at most this many of its warps an SM (0: as many as fit), see cuda__gemv */
    int *one_ring; /* host only: cuda__gemv's */
};

/* acc[t] += w . x[t] over one lane's chunk v of weights at column k, x (rows xs apart, of dtype xdt) read from
 * global memory (L1), or the LayerNorm kernel's normalized rows in shared memory. */
template <typename WT, int TMAX>
static __device__ __forceinline__ void step_dot(const void *x, int xdt, int64_t xs, uint4 v, int k, int T,
                                                float *acc) {
    constexpr int E = wchunk<WT>::N;
    float wf[E];
    wchunk<WT>::unpack(v, wf);
#pragma unroll
    for (int t = 0; t < TMAX; t++) {
        if (t >= T) break;
        float sum = acc[t];
#pragma unroll
        for (int h = 0; h < E; h += 8) {
            float xf[8];
            ld_x8(x, xdt, (int64_t)t * xs + k + h, xf);
#pragma unroll
            for (int j = 0; j < 8; j++) sum = fmaf(wf[h + j], xf[j], sum);
        }
        acc[t] = sum;
    }
}

/* The LayerNorm kernel's prologue: x's rows t < T normalized into xn (shared, [T][K] of x's 16-bit dtype) by the
 * whole CTA, a 16-byte chunk per thread at a time: pass 1 copies x there and sums it, pass 2 sums (x - mean)^2 from
 * the copy, pass 3 writes (x - mean) * rstd * w + b over it, rounded as cuda_norm.cu's store rounds. A thread
 * touches only its own chunks between the reductions; the last barrier publishes xn to every warp. */
template <int TMAX, int W>
static __device__ __forceinline__ void ln_prologue(const gemv_args &a, int T, uint16_t *xn) {
    __shared__ float red[2][W][TMAX];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, k8 = a.K / 8;
    float mean[TMAX];
#pragma unroll
    for (int t = 0; t < TMAX; t++) {
        if (t >= T) break;
        float s = 0.0f;
        for (int c = threadIdx.x; c < k8; c += W * 32) {
            if (t == 0) /* pass 3 reads them: into L1 now, so that they do not add another L2 round trip there */
                asm volatile("prefetch.global.L1 [%0];\n\tprefetch.global.L1 [%1];" ::"l"(
                                 (const char *)a.ln_w + (size_t)8 * c * (a.ln_dt == ENG_F32 ? 4 : 2)),
                             "l"((const char *)a.ln_b + (size_t)8 * c * (a.ln_dt == ENG_F32 ? 4 : 2)));
            const uint4 v = *reinterpret_cast<const uint4 *>((const uint16_t *)a.x.data + t * a.x.stride + 8 * c);
            *reinterpret_cast<uint4 *>(xn + t * a.K + 8 * c) = v;
            float f[8];
            if (a.x.dtype == ENG_F16) wchunk<__half>::unpack(v, f);
            else wchunk<__nv_bfloat16>::unpack(v, f);
#pragma unroll
            for (int j = 0; j < 8; j++) s += f[j];
        }
        s = cu_warp_sum(s);
        if (lane == 0) red[0][wid][t] = s;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < TMAX; t++) {
        if (t >= T) break;
        float m = 0.0f, s = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) m += red[0][w][t];
        mean[t] = m / (float)a.K;
        for (int c = threadIdx.x; c < k8; c += W * 32) {
            float f[8];
            ld_x8(xn, a.x.dtype, t * a.K + 8 * c, f);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float d = f[j] - mean[t];
                s += d * d;
            }
        }
        s = cu_warp_sum(s);
        if (lane == 0) red[1][wid][t] = s;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < TMAX; t++) {
        if (t >= T) break;
        float q = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) q += red[1][w][t];
        const float rstd = rsqrtf(q / (float)a.K + a.eps);
        for (int c = threadIdx.x; c < k8; c += W * 32) {
            float f[8], g[8], b[8];
            ld_x8(xn, a.x.dtype, t * a.K + 8 * c, f);
            ld_x8(a.ln_w, a.ln_dt, 8 * c, g);
            ld_x8(a.ln_b, a.ln_dt, 8 * c, b);
            __align__(16) uint16_t o[8];
#pragma unroll
            for (int j = 0; j < 8; j++) { /* cuda_norm.cu's expression, and cu_st's rounding */
                const float y = (f[j] - mean[t]) * rstd * g[j] + b[j];
                if (a.x.dtype == ENG_F16) {
                    const __half h = __float2half_rn(y);
                    o[j] = *reinterpret_cast<const uint16_t *>(&h);
                } else {
                    const __nv_bfloat16 h = __float2bfloat16_rn(y);
                    o[j] = *reinterpret_cast<const uint16_t *>(&h);
                }
            }
            *reinterpret_cast<uint4 *>(xn + t * a.K + 8 * c) = *reinterpret_cast<const uint4 *>(o);
        }
    }
    __syncthreads();
}

/* Row n is complete: one warp reduction per t, then the epilogue (int8 scale, bias, GELU on the first a.gelu
 * columns, accumulate) rounds into y once; lane t stores row t. acc is zeroed for the next row. */
template <int TMAX>
static __device__ __forceinline__ void row_end(const gemv_args &a, int n, int T, int lane, float *acc) {
    const float sc = a.scales ? a.scales[n] : 1.0f;
#pragma unroll
    for (int t = 0; t < TMAX; t++) {
        if (t >= T) break;
        const float d = cu_warp_sum(acc[t]);
        acc[t] = 0.0f;
        if (lane == t) { /* spread the stores over lanes */
            float val = d * sc;
            if (a.bias) val += cu_ld(a.bias, a.bdt, n);
            if (n < a.gelu) val = 0.5f * val * (1.0f + tanhf(GELU_C * (val + 0.044715f * val * val * val)));
            const int64_t o = (int64_t)t * a.y.stride + n;
            if (a.accumulate) val += cu_ld(a.y.data, a.y.dtype, o);
            cu_st(a.y.data, a.y.dtype, o, val);
        }
    }
}

template <typename WT, int TMAX, bool LN, int W> static __device__ __forceinline__ void gemv_body(const gemv_args &a) {
    extern __shared__ uint4 ring[]; /* [W][GEMV_STAGES][32], then (LN) the normalized x [T][K] */
    constexpr int E = wchunk<WT>::N, STEP = 32 * E; /* elements per lane-chunk and per warp step */
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int r0 = (blockIdx.x * W + wid) * a.rows_per_warp;
    /* no barrier anywhere but the LayerNorm prologue's: a warp past the end simply leaves (LN: after it) */
    if (!LN && r0 >= a.N) return;
    const int n_rows = r0 < a.N ? min(a.rows_per_warp, a.N - r0) : 0;
    const int steps_per_row = (a.K + STEP - 1) / STEP, total = n_rows * steps_per_row;
    const WT *w = (const WT *)a.w + (int64_t)r0 * a.ws;
    uint4 *mine = ring + wid * GEMV_STAGES * 32 + lane;
    const uint32_t ring_base = (uint32_t)__cvta_generic_to_shared(mine);

    /* producer cursor: the step that goes into the ring next (row pr of this warp, chunk pk of that row) */
    int pr = 0, pk = 0;
    auto issue = [&](int slot) {
        const int k = pk * STEP + lane * E;
        const bool ok = k < a.K;
        cu_cp_async16(ring_base + slot * 32 * 16, ok ? (const void *)(w + (int64_t)pr * a.ws + k) : a.w, ok ? 16 : 0);
        if (++pk == steps_per_row) pk = 0, pr++;
    };
#pragma unroll 1
    for (int s = 0; s < GEMV_STAGES; s++) {
        if (s < total) issue(s);
        cu_cp_commit(); /* one group per step, empty ones too, so wait_group counts steps */
    }
    /* PDL: the first GEMV_STAGES steps of weights are on their way while the kernel before this one finishes;
     * x (and y, with accumulate) only from here on */
    cu_pdl_start();
    const int T = (int)a.x.rows;
    /* LN: x normalized into shared memory while the first GEMV_STAGES weight steps are in flight; from here on x
     * is read there, with rows K apart */
    uint16_t *const xln = reinterpret_cast<uint16_t *>(ring + W * GEMV_STAGES * 32);
    if constexpr (LN) {
        ln_prologue<TMAX, W>(a, T, xln);
        if (r0 >= a.N) return;
    }
    const void *const xp = LN ? (const void *)xln : a.x.data;
    const int64_t xst = LN ? (int64_t)a.K : a.x.stride;
    float acc[TMAX];
#pragma unroll
    for (int t = 0; t < TMAX; t++) acc[t] = 0.0f;
    int cr = 0, ck = 0, slot = 0;
    /* Half x with half weights (the forward pass): x of the next step is loaded one step ahead into registers.
     * Nsight Compute on v3 without it: the top stall was each step's x load (an L1 hit, but used at once). */
    const bool xpf = E == 8 && a.x.dtype != ENG_F32;
    const uint16_t *xh = (const uint16_t *)xp;
    uint4 xn[TMAX];
    if (xpf) {
        const int k = lane * E;
#pragma unroll
        for (int t = 0; t < TMAX; t++)
            xn[t] = t < T && k < a.K ? *reinterpret_cast<const uint4 *>(xh + (int64_t)t * xst + k)
                                     : make_uint4(0, 0, 0, 0);
    }
#pragma unroll 1
    for (int s = 0; s < total; s++) {
        cu_cp_wait<GEMV_STAGES - 1>(); /* this lane's copy of step s has landed */
        const uint4 v = mine[slot * 32];
        const int k = ck * STEP + lane * E;
        if (xpf) {
            uint4 xc[TMAX];
#pragma unroll
            for (int t = 0; t < TMAX; t++) xc[t] = xn[t];
            const int kn = (ck + 1 == steps_per_row ? 0 : ck + 1) * STEP + lane * E;
#pragma unroll
            for (int t = 0; t < TMAX; t++)
                if (t < T && kn < a.K) xn[t] = *reinterpret_cast<const uint4 *>(xh + (int64_t)t * xst + kn);
            if (k < a.K) {
                float wf[E];
                wchunk<WT>::unpack(v, wf);
#pragma unroll
                for (int t = 0; t < TMAX; t++) {
                    if (t >= T) break;
                    float xf[8];
                    if (a.x.dtype == ENG_F16) wchunk<__half>::unpack(xc[t], xf);
                    else wchunk<__nv_bfloat16>::unpack(xc[t], xf);
                    float sum = acc[t];
#pragma unroll
                    for (int j = 0; j < 8; j++) sum = fmaf(wf[j], xf[j], sum);
                    acc[t] = sum;
                }
            }
        } else if (k < a.K) {
            step_dot<WT, TMAX>(xp, a.x.dtype, xst, v, k, T, acc);
        }
        /* v has been used, so the slot is free again: refill it with the step GEMV_STAGES ahead */
        if (s + GEMV_STAGES < total) issue(slot);
        cu_cp_commit();
        if (++slot == GEMV_STAGES) slot = 0;
        if (++ck == steps_per_row) { /* row r0 + cr is complete */
            row_end<TMAX>(a, r0 + cr, T, lane, acc);
            ck = 0, cr++;
        }
    }
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory"); /* leave no copy in flight into a ring about to be reused */
#endif
}

template <typename WT, int TMAX>
static __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(gemv_args a) {
    gemv_body<WT, TMAX, false, GEMV_WARPS>(a);
}

/* The LayerNorm-folding variant, a kernel of its own so the plain one keeps its registers (and Nsight Compute /
 * gpu-prof.sh, which counts steps by "layernorm" kernels, tell them apart). W warps a CTA share one normalized x:
 * 4 as the plain kernel, or at T = 1 16 where that keeps as many warps on an SM as the plain kernel has (launch_ln
 * picks): at 2B's 5 KiB of x a CTA of 4 warps needs 21 KiB, 10 CTAs an SM instead of 12, and fc_in|qkv's GEMV took
 * 42.6 us instead of 37.3 (NOTES.md v8); 3 CTAs of 16 warps fit. */
template <typename WT, int TMAX, int W>
static __global__ void __launch_bounds__(W * 32) gemv_layernorm_kernel(gemv_args a) {
    gemv_body<WT, TMAX, true, W>(a);
}

/* CTAs of `kernel` an SM of the current device holds with `smem` bytes of dynamic shared memory, asked once per
 * device (the occupancy API is not a stream operation, so this is safe while a graph is being captured; the first
 * step of a shape runs uncaptured anyway). Per device, since two backends may drive different cards; atomic, since
 * their engine threads may ask at once. smem_max > 48 KiB: the kernel's opt-in limit is raised to it first. */
#define GEMV_MAX_DEVICES 64
template <typename K>
static cudaError_t ctas_per_sm(K kernel, int threads, size_t smem, size_t smem_max, int *cache, int *out) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    int n = dev < GEMV_MAX_DEVICES ? __atomic_load_n(&cache[dev], __ATOMIC_RELAXED) : 0;
    if (!n) {
        if (smem_max > 48 * 1024) {
            e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_max);
            if (e != cudaSuccess) return e;
        }
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem);
        if (e != cudaSuccess) return e;
        if (n < 1) n = 1;
        if (dev < GEMV_MAX_DEVICES) __atomic_store_n(&cache[dev], n, __ATOMIC_RELAXED);
    }
    *out = n;
    return cudaSuccess;
}

/* The current device's opt-in limit of shared memory a block (cached per device, like ctas_per_sm): Turing's 64 KiB
 * cannot hold the 16-warp LayerNorm CTA's ring and rows, Ampere's and Hopper's can. */
static size_t smem_optin(void) {
    static int cache[GEMV_MAX_DEVICES];
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 48 * 1024;
    v = dev < GEMV_MAX_DEVICES ? __atomic_load_n(&cache[dev], __ATOMIC_RELAXED) : 0;
    if (!v) {
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) v = 48 * 1024;
        if (dev < GEMV_MAX_DEVICES) __atomic_store_n(&cache[dev], v, __ATOMIC_RELAXED);
    }
    return (size_t)v;
}

#define RING_BYTES(W) ((W) * GEMV_STAGES * 32 * 16)
/* The LayerNorm kernel's shared memory on top of the ring: the normalized rows, in whole KiB (which also index its
 * occupancy caches: CTAs per SM depend on it). */
#define LN_KIB_MAX (CUDA_GEMV_LN_MAX * 2 / 1024)

/* Rows per warp of a one-wave grid of `kernel` (W warps a CTA, smem bytes of dynamic shared memory) over n rows. */
template <int W>
static cudaError_t wave_rows(void (*kernel)(gemv_args), size_t smem, size_t smem_max, int *cache, int n_sms, int n,
                             int warps_cap, int *rows) {
    int per_sm = 0;
    cudaError_t e = ctas_per_sm(kernel, W * 32, smem, smem_max, cache, &per_sm);
    if (e != cudaSuccess) return e;
    if (warps_cap > 0 && per_sm * W > warps_cap) per_sm = warps_cap / W > 0 ? warps_cap / W : 1;
    const int64_t resident = (int64_t)n_sms * per_sm * W;
    *rows = (int)((n + resident - 1) / resident);
    return cudaSuccess;
}

template <int W> static cudaError_t launch_k(void (*kernel)(gemv_args), cudaStream_t st, size_t smem, gemv_args a) {
    const int64_t warps = (a.N + a.rows_per_warp - 1) / a.rows_per_warp;
    if (a.one_ring) { /* a step is 32 lanes x 16 bytes: 8 half weights a lane, 16 int8 */
        const int64_t step = 32 * (a.scales ? 16 : 8);
        *a.one_ring = (int64_t)a.rows_per_warp * ((a.K + step - 1) / step) <= GEMV_STAGES;
    }
    const unsigned grid = (unsigned)((warps + W - 1) / W);
    return cu_launch(kernel, dim3(grid), dim3(W * 32), smem, st, a);
}

template <typename WT, int TMAX> static cudaError_t launch_t(cudaStream_t st, int n_sms, gemv_args a) {
    static int cache[GEMV_MAX_DEVICES];
    cudaError_t e = wave_rows<GEMV_WARPS>(gemv_kernel<WT, TMAX>, RING_BYTES(GEMV_WARPS), 0, cache, n_sms, a.N,
                                          a.warps_cap, &a.rows_per_warp);
    return e != cudaSuccess ? e : launch_k<GEMV_WARPS>(gemv_kernel<WT, TMAX>, st, RING_BYTES(GEMV_WARPS), a);
}

/* The LayerNorm kernel: CTAs of 16 warps at T = 1 when they give each warp fewer rows than CTAs of 4 (the time of
 * a one-wave GEMV follows its rows per warp), else of 4 (more CTAs spread more evenly over the SMs). */
template <typename WT, int TMAX> static cudaError_t launch_ln(cudaStream_t st, int n_sms, gemv_args a) {
    static int cache4[GEMV_MAX_DEVICES * (LN_KIB_MAX + 1)], cache16[GEMV_MAX_DEVICES * (LN_KIB_MAX + 1)];
    const int kib = (int)((a.x.rows * a.K * 2 + 1023) / 1024);
    const size_t xs = (size_t)kib * 1024, xs_max = (size_t)LN_KIB_MAX * 1024;
    int r4 = 0;
    cudaError_t e = wave_rows<4>(gemv_layernorm_kernel<WT, TMAX, 4>, RING_BYTES(4) + xs, RING_BYTES(4) + xs_max,
                                 cache4 + kib * GEMV_MAX_DEVICES, n_sms, a.N, a.warps_cap, &r4);
    if (e != cudaSuccess) return e;
    /* CTAs of 16 warps where the device's opt-in limit holds them (1 KiB beside for the static shared memory) */
    if constexpr (TMAX == 1) {
        if (RING_BYTES(16) + xs_max + 1024 <= smem_optin() && (a.warps_cap == 0 || a.warps_cap >= 16)) {
            int r16 = 0;
            e = wave_rows<16>(gemv_layernorm_kernel<WT, TMAX, 16>, RING_BYTES(16) + xs, RING_BYTES(16) + xs_max,
                              cache16 + kib * GEMV_MAX_DEVICES, n_sms, a.N, a.warps_cap,
                              &r16);
            if (e != cudaSuccess) return e;
            if (r16 < r4) {
                a.rows_per_warp = r16;
                return launch_k<16>(gemv_layernorm_kernel<WT, TMAX, 16>, st, RING_BYTES(16) + xs, a);
            }
        }
    }
    a.rows_per_warp = r4;
    return launch_k<4>(gemv_layernorm_kernel<WT, TMAX, 4>, st, RING_BYTES(4) + xs, a);
}

template <typename WT, bool LN> static cudaError_t launch_l(cudaStream_t st, int n_sms, const gemv_args &a) {
    const int64_t T = a.x.rows;
    if (T == 1) return LN ? launch_ln<WT, 1>(st, n_sms, a) : launch_t<WT, 1>(st, n_sms, a);
    if (T == 2) return LN ? launch_ln<WT, 2>(st, n_sms, a) : launch_t<WT, 2>(st, n_sms, a);
    if (T <= 4) return LN ? launch_ln<WT, 4>(st, n_sms, a) : launch_t<WT, 4>(st, n_sms, a);
    return LN ? launch_ln<WT, 8>(st, n_sms, a) : launch_t<WT, 8>(st, n_sms, a);
}

template <typename WT> static cudaError_t launch_w(cudaStream_t st, int n_sms, const gemv_args &a) {
    return a.ln_w ? launch_l<WT, true>(st, n_sms, a) : launch_l<WT, false>(st, n_sms, a);
}

extern "C" cudaError_t cuda__gemv(cudaStream_t st, int n_sms, int warps_cap, eng_tensor y, eng_tensor x,
                                  eng_tensor w, const eng_tensor *bias, int accumulate, int gelu,
                                  const cuda__gemv_ln *ln, int *one_ring) {
    const int N = (int)w.rows, K = (int)w.cols;
    if (one_ring) *one_ring = 0;
    if (x.rows <= 0 || N <= 0) return cudaSuccess;
    if (x.rows > CUDA_GEMV_MAX_ROWS) return cudaErrorInvalidValue;
    /* the LayerNorm kernel: normalized rows of x's 16-bit dtype in shared memory; one dtype for the gain and bias */
    if (ln && (x.dtype == ENG_F32 || x.rows * K > CUDA_GEMV_LN_MAX || ln->w.dtype != ln->b.dtype))
        return cudaErrorInvalidValue;
    gemv_args a = {y, x, w.data, NULL, w.stride, N, K, 0, bias ? bias->data : NULL, bias ? (int)bias->dtype : 0,
                   accumulate, gelu, ln ? ln->w.data : NULL, ln ? ln->b.data : NULL, ln ? (int)ln->w.dtype : 0,
                   ln ? ln->eps : 0.0f, warps_cap, one_ring};
    switch (w.dtype) {
    case ENG_F16: return launch_w<__half>(st, n_sms, a);
    case ENG_BF16: return launch_w<__nv_bfloat16>(st, n_sms, a);
    case ENG_Q8: a.scales = eng_q8_scales(&w); return launch_w<int8_t>(st, n_sms, a);
    default: return cudaErrorInvalidValue;
    }
}

/* int8 -> half rows for the prefill path (cuBLAS has no int8-weight x half-activation GEMM): out[n][k] =
 * q[n][k] * scale[n], rounded once. */
template <typename HT>
static __global__ void q8_dequant_kernel(HT *out, const int8_t *q, const float *scales, int64_t N, int64_t K) {
    const int64_t n16 = N * K / 16;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i * 16 / K;
        float f[16];
        wchunk<int8_t>::unpack(reinterpret_cast<const uint4 *>(q)[i], f);
        const float s = scales[row];
        __align__(16) HT h[16];
#pragma unroll
        for (int j = 0; j < 16; j++) h[j] = cvt<HT>(f[j] * s);
        reinterpret_cast<uint4 *>(out)[2 * i] = *reinterpret_cast<const uint4 *>(h);
        reinterpret_cast<uint4 *>(out)[2 * i + 1] = *reinterpret_cast<const uint4 *>(h + 8);
    }
}

extern "C" cudaError_t cuda__q8_dequant(cudaStream_t st, void *out, eng_dtype out_dt, eng_tensor w,
                                        const float *scales) {
    if (w.rows <= 0) return cudaSuccess;
    const int64_t n16 = w.rows * w.cols / 16;
    const int grid = cu_blocks(n16, 256) > 8192 ? 8192 : cu_blocks(n16, 256);
    if (out_dt == ENG_BF16)
        q8_dequant_kernel<<<grid, 256, 0, st>>>((__nv_bfloat16 *)out, (const int8_t *)w.data, scales, w.rows,
                                                w.cols);
    else
        q8_dequant_kernel<<<grid, 256, 0, st>>>((__half *)out, (const int8_t *)w.data, scales, w.rows, w.cols);
    return cudaGetLastError();
}
