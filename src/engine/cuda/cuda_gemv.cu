/* cuda_gemv.cu - decode matmul for a few rows: y[t] (+)= x[t] . w^T + bias for T <= 8, w f16/bf16 [N, K].
 *
 * At decode the whole cost of a matmul is streaming w once; cuBLAS's GEMV-like kernels reach ~70% of the copy
 * bandwidth there. v2 of this kernel (v1 is in NOTES.md "v3": it staged x in shared memory behind a barrier before
 * any weight load, and its CTAs of 8 warps x 4 rows left a ragged last wave, e.g. 320 CTAs over 264 slots for
 * 2B's fc_in; it ran 11% slower than cuBLAS):
 * - one warp per weight row, CTAs of 4 warps: N / 4 small CTAs (2,560 for fc_in) so the last wave is a sliver;
 * - a lane takes 8 consecutive elements per 16-byte load, a warp 256; the loads of UNROLL steps are issued before
 *   any is used (8 x 16 B in flight per lane);
 * - x is read straight from global memory with vector loads at the same k as the lane's weights (every warp of the
 *   GPU reads the same few KB of x, so they hit in L1/L2): no shared memory, no barrier, no prologue;
 * - f32 accumulation, one warp reduction per (row, t), an epilogue that adds the bias and, with accumulate, the old
 *   y, rounding to y's dtype once.
 * Needs K % 8 == 0, w and x 16-byte aligned with strides % 8 == 0 (cuda_matmul.c checks, cuBLAS otherwise). No
 * allocation, no synchronization: graph-capturable. */
#include "cuda_common.cuh"

#define GEMV_WARPS 4 /* rows (warps) per CTA */
#define GEMV_UNROLL 8 /* 16-byte weight loads in flight per lane */
/* CTAs per SM the registers must allow (<= 128 registers): 4 x 4 warps x 32 lanes x 8 loads x 16 B = 64 KiB in
 * flight per SM; 6 made ptxas spill at T = 4 and 8 */
#define GEMV_MIN_CTAS 4

template <typename WT> struct wcvt;
template <> struct wcvt<__half> {
    static __device__ __forceinline__ float2 f2(uint32_t u) {
        __half2 h = *reinterpret_cast<const __half2 *>(&u);
        return __half22float2(h);
    }
};
template <> struct wcvt<__nv_bfloat16> {
    static __device__ __forceinline__ float2 f2(uint32_t u) {
        /* bf16 -> f32 is a shift: exact */
        return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
    }
};

static __device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    /* weights are read once per step: do not keep them in L1 */
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

static __device__ __forceinline__ void unpack8(uint4 v, float2 (*cv)(uint32_t), float *f) {
    float2 a = cv(v.x), b = cv(v.y), c = cv(v.z), d = cv(v.w);
    f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y, f[4] = c.x, f[5] = c.y, f[6] = d.x, f[7] = d.y;
}

/* x[i .. i + 8) as f32 (i a multiple of 8, x 16-byte aligned): one or two vector loads by x's dtype, which is the
 * same for every thread. */
static __device__ __forceinline__ void ld_x8(const void *x, int dt, int64_t i, float *f) {
    if (dt == ENG_F32) {
        const float4 a = *reinterpret_cast<const float4 *>((const float *)x + i);
        const float4 b = *reinterpret_cast<const float4 *>((const float *)x + i + 4);
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
    } else {
        const uint4 v = *reinterpret_cast<const uint4 *>((const uint16_t *)x + i);
        unpack8(v, dt == ENG_F16 ? wcvt<__half>::f2 : wcvt<__nv_bfloat16>::f2, f);
    }
}

template <typename WT, int TMAX>
static __global__ void __launch_bounds__(GEMV_WARPS * 32, GEMV_MIN_CTAS) gemv_kernel(eng_tensor y, eng_tensor x,
                                                                      const WT *__restrict__ w, int64_t ws, int N,
                                                                      int K, const void *bias, int bdt,
                                                                      int accumulate) {
    const int T = (int)x.rows;
    const int lane = threadIdx.x & 31;
    const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (n >= N) return; /* no barrier below: a warp past the end simply leaves */
    const WT *wr = w + (int64_t)n * ws;
    float acc[TMAX];
#pragma unroll
    for (int t = 0; t < TMAX; t++) acc[t] = 0.0f;
    for (int k0 = lane * 8; k0 < K; k0 += 256 * GEMV_UNROLL) {
        uint4 v[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) /* all loads first: bytes in flight hide the memory latency */
            v[u] = k0 + u * 256 < K ? ld_stream(reinterpret_cast<const uint4 *>(wr + k0 + u * 256))
                                    : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int k = k0 + u * 256;
            if (k >= K) break;
            float wf[8];
            unpack8(v[u], wcvt<WT>::f2, wf);
#pragma unroll
            for (int t = 0; t < TMAX; t++) {
                if (t >= T) break;
                float xf[8];
                ld_x8(x.data, x.dtype, (int64_t)t * x.stride + k, xf);
                float s = acc[t];
#pragma unroll
                for (int j = 0; j < 8; j++) s = fmaf(wf[j], xf[j], s);
                acc[t] = s;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < TMAX; t++) {
        if (t >= T) break;
        const float s = cu_warp_sum(acc[t]);
        if (lane == t) { /* spread the stores over lanes */
            const int64_t o = (int64_t)t * y.stride + n;
            float v = accumulate ? cu_ld(y.data, y.dtype, o) : 0.0f;
            if (bias) v += cu_ld(bias, bdt, n);
            cu_st(y.data, y.dtype, o, v + s);
        }
    }
}

template <typename WT, int TMAX>
static cudaError_t launch_t(cudaStream_t st, eng_tensor y, eng_tensor x, const void *w, int64_t ws, int N, int K,
                            const void *bias, int bdt, int accumulate) {
    const unsigned grid = (unsigned)((N + GEMV_WARPS - 1) / GEMV_WARPS);
    gemv_kernel<WT, TMAX><<<grid, GEMV_WARPS * 32, 0, st>>>(y, x, (const WT *)w, ws, N, K, bias, bdt, accumulate);
    return cudaGetLastError();
}

template <typename WT>
static cudaError_t launch_w(cudaStream_t st, eng_tensor y, eng_tensor x, const void *w, int64_t ws, int N, int K,
                            const void *bias, int bdt, int accumulate) {
    const int64_t T = x.rows;
    if (T == 1) return launch_t<WT, 1>(st, y, x, w, ws, N, K, bias, bdt, accumulate);
    if (T == 2) return launch_t<WT, 2>(st, y, x, w, ws, N, K, bias, bdt, accumulate);
    if (T <= 4) return launch_t<WT, 4>(st, y, x, w, ws, N, K, bias, bdt, accumulate);
    return launch_t<WT, 8>(st, y, x, w, ws, N, K, bias, bdt, accumulate);
}

extern "C" cudaError_t cuda__gemv(cudaStream_t st, int n_sms, eng_tensor y, eng_tensor x, eng_tensor w,
                                  const eng_tensor *bias, int accumulate) {
    (void)n_sms; /* v1 sized its CTAs by the SM count; one warp per row needs no such rule */
    const int N = (int)w.rows, K = (int)w.cols;
    if (x.rows <= 0 || N <= 0) return cudaSuccess;
    if (x.rows > CUDA_GEMV_MAX_ROWS || (w.dtype != ENG_F16 && w.dtype != ENG_BF16)) return cudaErrorInvalidValue;
    const void *bp = bias ? bias->data : NULL;
    const int bdt = bias ? (int)bias->dtype : 0;
    if (w.dtype == ENG_F16) return launch_w<__half>(st, y, x, w.data, w.stride, N, K, bp, bdt, accumulate);
    return launch_w<__nv_bfloat16>(st, y, x, w.data, w.stride, N, K, bp, bdt, accumulate);
}
