/* cuda_rope.cu - GPT-J interleaved RoPE and the KV-cache store.
 *
 * The (cos, sin) of every (position, pair) come from a host-built table (cuda.c) made with the same f32 angle and
 * libm calls as ref.c, and the rotation is compiled with --fmad=false, so the result is bit-identical to ref. */
#include "cuda_common.cuh"

/* One thread per (row, head, pair): grid.y walks the rows, grid.x the pairs. A block looping over all pairs of a
 * row (v1) is a chain of dependent load-store rounds, 6.6 us for one 2B decode row on an H100; spread out it is
 * one round. */
static __global__ void rope_kernel(eng_tensor x, const int32_t *pos, const float2 *cs, eng_attn_shape s) {
    const int half = s.rotary_dim / 2, n = s.n_head * half;
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    const int h = k / half, i = k % half;
    for (int64_t r = blockIdx.y; r < x.rows; r += gridDim.y) {
        const int64_t o = r * x.stride + (int64_t)h * s.head_dim + 2 * i;
        const float2 t = cs[(int64_t)pos[r] * half + i];
        const float x0 = cu_ld(x.data, x.dtype, o), x1 = cu_ld(x.data, x.dtype, o + 1);
        cu_st(x.data, x.dtype, o, x0 * t.x - x1 * t.y);
        cu_st(x.data, x.dtype, o + 1, x1 * t.x + x0 * t.y);
    }
}

extern "C" cudaError_t cuda__rope(cudaStream_t st, eng_tensor x, const int32_t *pos, const float *cs,
                                  eng_attn_shape s) {
    if (x.rows <= 0 || s.rotary_dim == 0) return cudaSuccess;
    const int n = s.n_head * (s.rotary_dim / 2);
    dim3 grid((unsigned)((n + 127) / 128), (unsigned)(x.rows < 65535 ? x.rows : 65535));
    rope_kernel<<<grid, 128, 0, st>>>(x, pos, (const float2 *)cs, s);
    return cudaGetLastError();
}

/* grid.x over the columns (one per thread), grid.y over the rows: one load-store round per element (v1's one block
 * per row looped 10 times at 2B's width, 6.5 us a decode step). */
static __global__ void kv_store_kernel(void *kc, void *vc, int kvdt, eng_tensor k, eng_tensor v,
                                       const int32_t *slot) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= k.cols) return;
    for (int64_t r = blockIdx.y; r < k.rows; r += gridDim.y) {
        const int64_t o = (int64_t)slot[r] * k.cols + c;
        const float kv = cu_ld(k.data, k.dtype, r * k.stride + c), vv = cu_ld(v.data, v.dtype, r * v.stride + c);
        cu_st(kc, kvdt, o, kv);
        cu_st(vc, kvdt, o, vv);
    }
}

extern "C" cudaError_t cuda__kv_store(cudaStream_t st, void *kc, void *vc, eng_dtype kvdt, eng_tensor k,
                                      eng_tensor v, const int32_t *slot) {
    if (k.rows <= 0) return cudaSuccess;
    dim3 grid((unsigned)((k.cols + 255) / 256), (unsigned)(k.rows < 65535 ? k.rows : 65535));
    kv_store_kernel<<<grid, 256, 0, st>>>(kc, vc, (int)kvdt, k, v, slot);
    return cudaGetLastError();
}
