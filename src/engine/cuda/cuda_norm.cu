/* cuda_norm.cu - LayerNorm: one block per row, mean and biased variance in f32 over two passes (the row stays in
 * L1/L2 between them), then the affine write. Writing only in the last pass makes y == x safe. */
#include "cuda_common.cuh"

static __global__ void __launch_bounds__(256) layernorm_kernel(eng_tensor y, eng_tensor x, eng_tensor w,
                                                               eng_tensor b, float eps) {
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
    layernorm_kernel<<<(unsigned)x.rows, 256, 0, st>>>(y, x, w, b, eps);
    return cudaGetLastError();
}
