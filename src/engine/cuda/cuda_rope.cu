/* cuda_rope.cu - GPT-J interleaved RoPE and the KV-cache store, apart or in one launch.
 *
 * The (cos, sin) of every (position, pair) come from a host-built table (cuda.c) made with the same f32 angle and
 * libm calls as ref.c, and the rotation is compiled with --fmad=false, so the result is bit-identical to ref. */
#include "cuda_common.cuh"

/* One thread per (row, head, pair): grid.y walks the rows, grid.x the pairs. A block looping over all pairs of a
 * row (v1) is a chain of dependent load-store rounds, 6.6 us for one 2B decode row on an H100; spread out it is
 * one round. */
static __global__ void rope_kernel(eng_tensor x, const int32_t *pos, const float2 *cs, eng_attn_shape s) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
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
    return cu_launch(rope_kernel, dim3(grid), dim3(128), 0, st, x, pos, (const float2 *)cs, s);
}

/* grid.x over the columns (one per thread), grid.y over the rows: one load-store round per element (v1's one block
 * per row looped 10 times at 2B's width, 6.5 us a decode step). */
static __global__ void kv_store_kernel(void *kc, void *vc, int kvdt, eng_tensor k, eng_tensor v,
                                       const int32_t *slot) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
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
    return cu_launch(kv_store_kernel, dim3(grid), dim3(256), 0, st, kc, vc, (int)kvdt, k, v, slot);
}

/* RoPE and the KV store in one launch (eng_rope_kv_store): one thread per (row, column pair) of q | k | v. A q or k
 * pair inside the rotary dims is rotated exactly as rope_kernel does and stored back; k and v pairs then go to the
 * cache as kv_store_kernel would copy them, from the values as stored (so the cache holds the activation dtype's
 * rounding, as with the two launches). head_dim even: a pair never straddles two heads or q | k | v. */
static __global__ void rope_kv_kernel(eng_tensor x, const int32_t *pos, const float2 *cs, eng_attn_shape s, void *kc,
                                      void *vc, int kvdt, const int32_t *slot, int early) {
    const int64_t D = (int64_t)s.n_head * s.head_dim, p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t c = 2 * p;
    const int half = s.rotary_dim / 2, d = (int)(c % s.head_dim);
    const bool rot = c < 2 * D && d < s.rotary_dim;
    /* Before the wait (PDL, cuda_common.cuh), what no kernel writes: the step's positions and slots and the (cos,
     * sin) table reach the device by copies in stream order, which no kernel overlaps; for the block's first row,
     * a decode step's only one. Loaded after the wait they were two dependent round trips (pos, then the table) on
     * the layer's path. */
    const int64_t r0 = blockIdx.y;
    float2 t0 = make_float2(1.0f, 0.0f);
    int32_t s0 = 0;
    if (p < 3 * D / 2 && r0 < x.rows) {
        if (rot) t0 = cs[(int64_t)pos[r0] * half + d / 2];
        if (c >= D) s0 = slot[r0];
    }
    if (early) cu_pdl_trigger(); /* decode attention's prologue during the GEMV before (cuda__rope_kv_store) */
    cu_pdl_start();
    if (p >= 3 * D / 2) return;
    for (int64_t r = r0; r < x.rows; r += gridDim.y) {
        const int64_t o = r * x.stride + c;
        float x0 = cu_ld(x.data, x.dtype, o), x1 = cu_ld(x.data, x.dtype, o + 1);
        if (rot) {
            const float2 t = r == r0 ? t0 : cs[(int64_t)pos[r] * half + d / 2];
            /* the store rounds; the cache gets the values as stored (cu_round: what a reload would give) */
            const float y0 = x0 * t.x - x1 * t.y, y1 = x1 * t.x + x0 * t.y;
            cu_st(x.data, x.dtype, o, y0);
            cu_st(x.data, x.dtype, o + 1, y1);
            x0 = cu_round(y0, x.dtype), x1 = cu_round(y1, x.dtype);
        }
        if (c < D) continue; /* q stays in the activations */
        void *dst = c < 2 * D ? kc : vc;
        const int64_t co = (int64_t)(r == r0 ? s0 : slot[r]) * D + (c < 2 * D ? c - D : c - 2 * D);
        cu_st(dst, kvdt, co, x0);
        cu_st(dst, kvdt, co + 1, x1);
    }
}

extern "C" cudaError_t cuda__rope_kv_store(cudaStream_t st, eng_tensor qkv, const int32_t *pos, const float *cs,
                                           eng_attn_shape s, void *kc, void *vc, eng_dtype kvdt, const int32_t *slot,
                                           int early) {
    if (qkv.rows <= 0) return cudaSuccess;
    const int64_t pairs = 3 * (int64_t)s.n_head * s.head_dim / 2;
    dim3 grid((unsigned)((pairs + 127) / 128), (unsigned)(qkv.rows < 65535 ? qkv.rows : 65535));
    return cu_launch(rope_kv_kernel, dim3(grid), dim3(128), 0, st, qkv, pos, (const float2 *)cs, s, kc, vc, (int)kvdt,
                     slot, early);
}
