/* cuda_elem.cu - element-wise ops: gelu_new, residual add, and the matmul epilogue (bias, accumulate).
 * Compiled with --fmad=false: the GELU argument is rounded exactly as ref.c rounds it. */
#include "cuda_common.cuh"

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) as the f32 HF multiplies by (CPU_GELU_C) */

static __global__ void gelu_kernel(eng_tensor x) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
    const int64_t n = x.rows * x.cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = (i / x.cols) * x.stride + i % x.cols;
        float u = cu_ld(x.data, x.dtype, o);
        float u3 = u * u * u;
        float in = GELU_C * (u + 0.044715f * u3);
        cu_st(x.data, x.dtype, o, 0.5f * u * (1.0f + tanhf(in)));
    }
}

static __global__ void add_kernel(eng_tensor y, eng_tensor x) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
    const int64_t n = y.rows * y.cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / y.cols, c = i % y.cols;
        const int64_t o = r * y.stride + c;
        cu_st(y.data, y.dtype, o, cu_ld(y.data, y.dtype, o) + cu_ld(x.data, x.dtype, r * x.stride + c));
    }
}

static __global__ void epilogue_kernel(eng_tensor y, const float *s, int64_t ss, const void *bias, int bdt,
                                       int accumulate) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
    const int64_t n = y.rows * y.cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / y.cols, c = i % y.cols;
        const int64_t o = r * y.stride + c;
        float v = accumulate ? cu_ld(y.data, y.dtype, o) : 0.0f;
        if (s) v += s[r * ss + c];
        if (bias) v += cu_ld(bias, bdt, c);
        cu_st(y.data, y.dtype, o, v);
    }
}

static unsigned grid_for(int64_t n) { return (unsigned)(cu_blocks(n, 256) > 4096 ? 4096 : cu_blocks(n, 256)); }

extern "C" cudaError_t cuda__gelu(cudaStream_t st, eng_tensor x) {
    if (x.rows <= 0 || x.cols <= 0) return cudaSuccess;
    return cu_launch(gelu_kernel, dim3(grid_for(x.rows * x.cols)), dim3(256), 0, st, x);
}

extern "C" cudaError_t cuda__add(cudaStream_t st, eng_tensor y, eng_tensor x) {
    if (y.rows <= 0 || y.cols <= 0) return cudaSuccess;
    return cu_launch(add_kernel, dim3(grid_for(y.rows * y.cols)), dim3(256), 0, st, y, x);
}

extern "C" cudaError_t cuda__epilogue(cudaStream_t st, eng_tensor y, const float *s, int64_t ss,
                                      const eng_tensor *bias, int accumulate) {
    if (y.rows <= 0 || y.cols <= 0) return cudaSuccess;
    return cu_launch(epilogue_kernel, dim3(grid_for(y.rows * y.cols)), dim3(256), 0, st, y, s, ss,
                     bias ? bias->data : NULL, bias ? (int)bias->dtype : 0, accumulate);
}
