/* cuda_norm.cu - LayerNorm: one block per row, mean and biased variance in f32 over two passes, then the affine
 * write. Writing only in the last pass makes y == x safe.
 * Rows up to LN_REG_MAX elements (every CodeGen width) are read once into registers by a block of up to 1024
 * threads, so the three passes cost one memory round trip instead of three dependent loops: at decode a single
 * row is the whole launch, and v1's 256 threads walking 2,560 elements three times took 12 us on an H100 (Nsight
 * Compute). Wider rows take the looping kernel. */
#include "cuda_common.cuh"

#define LN_REG_PER 8 /* elements per thread held in registers */
#define LN_REG_MAX (1024 * LN_REG_PER)

static __global__ void __launch_bounds__(1024) layernorm_reg_kernel(eng_tensor y, eng_tensor x, eng_tensor w,
                                                                    eng_tensor b, float eps) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
    __shared__ float red[32];
    const int64_t r = blockIdx.x, n = x.cols;
    const int64_t xo = r * x.stride, yo = r * y.stride;
    float v[LN_REG_PER];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < LN_REG_PER; i++) {
        const int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
        v[i] = c < n ? cu_ld(x.data, x.dtype, xo + c) : 0.0f;
        s += v[i];
    }
    const float mean = cu_block_sum(s, red) / (float)n;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < LN_REG_PER; i++) {
        const int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
        const float d = v[i] - mean;
        if (c < n) q += d * d;
    }
    const float rstd = rsqrtf(cu_block_sum(q, red) / (float)n + eps);
#pragma unroll
    for (int i = 0; i < LN_REG_PER; i++) {
        const int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
        if (c < n)
            cu_st(y.data, y.dtype, yo + c, (v[i] - mean) * rstd * cu_ld(w.data, w.dtype, c) + cu_ld(b.data, b.dtype, c));
    }
}

static __global__ void __launch_bounds__(256) layernorm_kernel(eng_tensor y, eng_tensor x, eng_tensor w,
                                                               eng_tensor b, float eps) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
    __shared__ float red[32];
    const int64_t r = blockIdx.x, n = x.cols;
    const int64_t xo = r * x.stride, yo = r * y.stride;
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) s += cu_ld(x.data, x.dtype, xo + c);
    const float mean = cu_block_sum(s, red) / (float)n;
    float v = 0.0f;
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
        float d = cu_ld(x.data, x.dtype, xo + c) - mean;
        v += d * d;
    }
    const float rstd = rsqrtf(cu_block_sum(v, red) / (float)n + eps);
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
        float d = cu_ld(x.data, x.dtype, xo + c) - mean;
        cu_st(y.data, y.dtype, yo + c, d * rstd * cu_ld(w.data, w.dtype, c) + cu_ld(b.data, b.dtype, c));
    }
}

extern "C" cudaError_t cuda__layernorm(cudaStream_t st, eng_tensor y, eng_tensor x, eng_tensor w, eng_tensor b,
                                       float eps) {
    if (x.rows <= 0) return cudaSuccess;
    if (x.cols <= LN_REG_MAX) {
        /* threads: the row over LN_REG_PER per thread, in whole warps (at least 2, at most 1024) */
        int th = (int)((x.cols + LN_REG_PER - 1) / LN_REG_PER);
        th = (th + 31) / 32 * 32;
        if (th < 64) th = 64;
        return cu_launch(layernorm_reg_kernel, dim3((unsigned)x.rows), dim3(th), 0, st, y, x, w, b, eps);
    }
    return cu_launch(layernorm_kernel, dim3((unsigned)x.rows), dim3(256), 0, st, y, x, w, b, eps);
}
