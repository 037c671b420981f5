/* cuda_rope.cu - GPT-J interleaved RoPE and the KV-cache store.
 *
 * The (cos, sin) of every (position, pair) come from a host-built table (cuda.c) made with the same f32 angle and
 * libm calls as ref.c, and the rotation is compiled with --fmad=false, so the result is bit-identical to ref. */
#include "cuda_common.cuh"

/* grid.x: rows (stride), threads over (head, pair). */
static __global__ void rope_kernel(eng_tensor x, const int32_t *pos, const float2 *cs, eng_attn_shape s) {
    const int half = s.rotary_dim / 2, n = s.n_head * half;
    for (int64_t r = blockIdx.x; r < x.rows; r += gridDim.x) {
        const float2 *row_cs = cs + (int64_t)pos[r] * half;
        for (int k = threadIdx.x; k < n; k += blockDim.x) {
            const int h = k / half, i = k % half;
            const int64_t o = r * x.stride + (int64_t)h * s.head_dim + 2 * i;
            const float2 t = row_cs[i];
            const float x0 = cu_ld(x.data, x.dtype, o), x1 = cu_ld(x.data, x.dtype, o + 1);
            cu_st(x.data, x.dtype, o, x0 * t.x - x1 * t.y);
            cu_st(x.data, x.dtype, o + 1, x1 * t.x + x0 * t.y);
        }
    }
}

extern "C" cudaError_t cuda__rope(cudaStream_t st, eng_tensor x, const int32_t *pos, const float *cs,
                                  eng_attn_shape s) {
    if (x.rows <= 0 || s.rotary_dim == 0) return cudaSuccess;
    rope_kernel<<<(unsigned)(x.rows < 65535 ? x.rows : 65535), 128, 0, st>>>(x, pos, (const float2 *)cs, s);
    return cudaGetLastError();
}

static __global__ void kv_store_kernel(void *kc, void *vc, int kvdt, eng_tensor k, eng_tensor v,
                                       const int32_t *slot) {
    for (int64_t r = blockIdx.x; r < k.rows; r += gridDim.x) {
        const int64_t o = (int64_t)slot[r] * k.cols;
        for (int64_t c = threadIdx.x; c < k.cols; c += blockDim.x) {
            cu_st(kc, kvdt, o + c, cu_ld(k.data, k.dtype, r * k.stride + c));
            cu_st(vc, kvdt, o + c, cu_ld(v.data, v.dtype, r * v.stride + c));
        }
    }
}

extern "C" cudaError_t cuda__kv_store(cudaStream_t st, void *kc, void *vc, eng_dtype kvdt, eng_tensor k,
                                      eng_tensor v, const int32_t *slot) {
    if (k.rows <= 0) return cudaSuccess;
    kv_store_kernel<<<(unsigned)(k.rows < 65535 ? k.rows : 65535), 256, 0, st>>>(kc, vc, (int)kvdt, k, v, slot);
    return cudaGetLastError();
}
