/* cuda_gemv.cu - decode matmul for a few rows: y[t] (+)= x[t] . w^T + bias for T <= 8, w f16/bf16 [N, K].
 *
 * At decode the whole cost of a matmul is streaming w once; cuBLAS's GEMV-like kernels reach ~70% of the copy
 * bandwidth there. Here a CTA of WPC warps owns WPC*R consecutive weight rows; each warp streams R whole rows with
 * 16-byte coalesced loads (a lane takes 8 consecutive elements, a warp 256 per load), U loads per row issued before
 * any is used, so R*U = 8 16-byte loads per lane are in flight. x is staged per K chunk in shared memory as f32
 * (every warp of the CTA shares it), products are summed in f32, one warp reduction per (row, t) at the end, and
 * the epilogue adds the bias and, with accumulate, the old y, rounding to y's dtype once.
 * Needs K % 8 == 0, w 16-byte aligned with stride % 8 == 0 (cuda_matmul.c checks, cuBLAS otherwise). No
 * allocation, no synchronization: graph-capturable. */
#include "cuda_common.cuh"

#define GEMV_SMEM_FLOATS 8192 /* 32 KiB of x per CTA: KC = GEMV_SMEM_FLOATS / TMAX elements per chunk */

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

template <typename WT, int TMAX, int R>
static __global__ void __launch_bounds__(256) gemv_kernel(eng_tensor y, eng_tensor x, const WT *__restrict__ w,
                                                          int64_t ws, int N, int K, const void *bias, int bdt,
                                                          int accumulate) {
    constexpr int U = 8 / R; /* loads per row per step */
    constexpr int KC = GEMV_SMEM_FLOATS / TMAX;
    extern __shared__ float xs[]; /* [T][KC] */
    const int T = (int)x.rows;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int n0 = (blockIdx.x * nw + warp) * R;

    float acc[R][TMAX];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < TMAX; t++) acc[r][t] = 0.0f;

    const WT *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = w + (int64_t)(n0 + r < N ? n0 + r : N - 1) * ws; /* clamp: loads stay valid */

    for (int c0 = 0; c0 < K; c0 += KC) {
        const int kc = K - c0 < KC ? K - c0 : KC;
        __syncthreads(); /* the previous chunk is no longer read */
        for (int i = threadIdx.x; i < T * kc; i += blockDim.x) {
            const int t = i / kc, k = i - t * kc;
            xs[t * KC + k] = cu_ld(x.data, x.dtype, (int64_t)t * x.stride + c0 + k);
        }
        __syncthreads();
        if (n0 >= N) continue; /* still takes part in the barriers */
        for (int k0 = lane * 8; k0 < kc; k0 += 256 * U) {
            uint4 v[R][U];
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < R; r++)
                    v[r][u] = k0 + u * 256 < kc ? ld_stream(reinterpret_cast<const uint4 *>(wr[r] + c0 + k0 + u * 256))
                                                : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int k = k0 + u * 256;
                if (k >= kc) break;
                float wf[R][8];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float2 a = wcvt<WT>::f2(v[r][u].x), b2 = wcvt<WT>::f2(v[r][u].y), c = wcvt<WT>::f2(v[r][u].z),
                           d = wcvt<WT>::f2(v[r][u].w);
                    wf[r][0] = a.x, wf[r][1] = a.y, wf[r][2] = b2.x, wf[r][3] = b2.y;
                    wf[r][4] = c.x, wf[r][5] = c.y, wf[r][6] = d.x, wf[r][7] = d.y;
                }
#pragma unroll
                for (int t = 0; t < TMAX; t++) {
                    if (t >= T) break;
                    const float4 x0 = *reinterpret_cast<const float4 *>(&xs[t * KC + k]);
                    const float4 x1 = *reinterpret_cast<const float4 *>(&xs[t * KC + k + 4]);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        float s = acc[r][t];
                        s = fmaf(wf[r][0], x0.x, s), s = fmaf(wf[r][1], x0.y, s);
                        s = fmaf(wf[r][2], x0.z, s), s = fmaf(wf[r][3], x0.w, s);
                        s = fmaf(wf[r][4], x1.x, s), s = fmaf(wf[r][5], x1.y, s);
                        s = fmaf(wf[r][6], x1.z, s), s = fmaf(wf[r][7], x1.w, s);
                        acc[r][t] = s;
                    }
                }
            }
        }
    }
    if (n0 >= N) return;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < TMAX; t++) {
            if (t >= T) break;
            const float s = cu_warp_sum(acc[r][t]);
            const int n = n0 + r;
            if (lane == t && n < N) { /* spread the stores over lanes */
                const int64_t o = (int64_t)t * y.stride + n;
                float v = accumulate ? cu_ld(y.data, y.dtype, o) : 0.0f;
                if (bias) v += cu_ld(bias, bdt, n);
                cu_st(y.data, y.dtype, o, v + s);
            }
        }
}

template <typename WT, int TMAX>
static cudaError_t launch_t(cudaStream_t st, int R, int wpc, eng_tensor y, eng_tensor x, const void *w, int64_t ws,
                            int N, int K, const void *bias, int bdt, int accumulate) {
    const int per = wpc * R;
    const unsigned grid = (unsigned)((N + per - 1) / per);
    const size_t smem = (size_t)x.rows * (GEMV_SMEM_FLOATS / TMAX) * sizeof(float);
    const WT *wp = (const WT *)w;
    if (R == 4)
        gemv_kernel<WT, TMAX, 4><<<grid, wpc * 32, smem, st>>>(y, x, wp, ws, N, K, bias, bdt, accumulate);
    else if (R == 2)
        gemv_kernel<WT, TMAX, 2><<<grid, wpc * 32, smem, st>>>(y, x, wp, ws, N, K, bias, bdt, accumulate);
    else
        gemv_kernel<WT, TMAX, 1><<<grid, wpc * 32, smem, st>>>(y, x, wp, ws, N, K, bias, bdt, accumulate);
    return cudaGetLastError();
}

template <typename WT>
static cudaError_t launch_w(cudaStream_t st, int R, int wpc, eng_tensor y, eng_tensor x, const void *w, int64_t ws,
                            int N, int K, const void *bias, int bdt, int accumulate) {
    const int64_t T = x.rows;
    if (T == 1) return launch_t<WT, 1>(st, R, wpc, y, x, w, ws, N, K, bias, bdt, accumulate);
    if (T == 2) return launch_t<WT, 2>(st, R, wpc, y, x, w, ws, N, K, bias, bdt, accumulate);
    if (T <= 4) return launch_t<WT, 4>(st, R, wpc, y, x, w, ws, N, K, bias, bdt, accumulate);
    return launch_t<WT, 8>(st, R, wpc, y, x, w, ws, N, K, bias, bdt, accumulate);
}

extern "C" cudaError_t cuda__gemv(cudaStream_t st, int n_sms, eng_tensor y, eng_tensor x, eng_tensor w,
                                  const eng_tensor *bias, int accumulate) {
    const int N = (int)w.rows, K = (int)w.cols;
    if (x.rows <= 0 || N <= 0) return cudaSuccess;
    if (x.rows > CUDA_GEMV_MAX_ROWS || (w.dtype != ENG_F16 && w.dtype != ENG_BF16)) return cudaErrorInvalidValue;
    /* Enough CTAs for every SM (at least two each where N allows): rows per warp R = 4, 2, 1 as N shrinks, then
     * CTAs of 4 warps instead of 8. */
    const int64_t want = 2 * (int64_t)(n_sms > 0 ? n_sms : 1);
    int R = 4, wpc = 8;
    while (R > 1 && (N + wpc * R - 1) / (wpc * R) < want) R >>= 1;
    if ((N + wpc * R - 1) / (wpc * R) < want) wpc = 4;
    const void *bp = bias ? bias->data : NULL;
    const int bdt = bias ? (int)bias->dtype : 0;
    if (w.dtype == ENG_F16) return launch_w<__half>(st, R, wpc, y, x, w.data, w.stride, N, K, bp, bdt, accumulate);
    return launch_w<__nv_bfloat16>(st, R, wpc, y, x, w.data, w.stride, N, K, bp, bdt, accumulate);
}
