/* cuda_conv.cu - row copies with dtype conversion: the embedding lookup, the row gather before ln_f, and the
 * host <-> device f32 transfers of strided views. */
#include "cuda_common.cuh"

/* One block row per output row (grid-stride over rows), threads across the columns. */
static __global__ void copy_rows_kernel(eng_tensor dst, eng_tensor src, const int32_t *idx, int64_t n_rows) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
    for (int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) {
        const int64_t sr = idx ? idx[r] : r;
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dst.cols;
             c += (int64_t)gridDim.x * blockDim.x)
            cu_st(dst.data, dst.dtype, r * dst.stride + c, cu_ld(src.data, src.dtype, sr * src.stride + c));
    }
}

/* cuda_kern.h: any kernel of this build tells, since all are compiled for the same architectures */
extern "C" int cuda__pdl_code(void) {
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, copy_rows_kernel) == cudaSuccess && fa.ptxVersion >= 90;
}

extern "C" cudaError_t cuda__copy_rows(cudaStream_t st, eng_tensor dst, eng_tensor src, const int32_t *idx,
                                       int64_t n_rows) {
    if (n_rows <= 0 || dst.cols <= 0) return cudaSuccess;
    dim3 grid((unsigned)cu_blocks(dst.cols, 256) > 64 ? 64 : (unsigned)cu_blocks(dst.cols, 256),
              (unsigned)(n_rows < 65535 ? n_rows : 65535));
    return cu_launch(copy_rows_kernel, dim3(grid), dim3(256), 0, st, dst, src, idx, n_rows);
}
