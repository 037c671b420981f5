/* cuda_common.cuh - what every kernel file shares: element loads/stores by run-time dtype (f32 / f16 / bf16, rounded
 * to nearest even like core/fp16.h) and warp/block reductions. */
#ifndef SUGGESTD_ENGINE_CUDA_COMMON_CUH
#define SUGGESTD_ENGINE_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda_kern.h"

/* The dtype is a kernel argument, the same for every thread, so these switches never diverge. */
static __device__ __forceinline__ float cu_ld(const void *p, int dt, int64_t i) {
    if (dt == ENG_F16) return __half2float(((const __half *)p)[i]);
    if (dt == ENG_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}

static __device__ __forceinline__ void cu_st(void *p, int dt, int64_t i, float v) {
    if (dt == ENG_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else if (dt == ENG_BF16)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else
        ((float *)p)[i] = v;
}

/* v rounded to dtype dt, as a store and a reload through cu_st / cu_ld leave it */
static __device__ __forceinline__ float cu_round(float v, int dt) {
    if (dt == ENG_F16) return __half2float(__float2half_rn(v));
    if (dt == ENG_BF16) return __bfloat162float(__float2bfloat16_rn(v));
    return v;
}

static __device__ __forceinline__ float cu_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float cu_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. `red` holds 32
 * floats of shared memory and may be reused after the call returns. */
static __device__ __forceinline__ float cu_block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cu_warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return cu_warp_sum(v);
}

/* ---- cp.async (global -> shared, no register held while in flight) ----------------------------------------------
 * cu_cp_async16 copies 16 bytes (.cg: cached in L2 only, for data read once; bytes = 0 zero-fills, e.g. a chunk
 * past a row's end), cu_cp_commit closes a group, cu_cp_wait<N> waits until at most N of this thread's groups are
 * in flight. Turing (sm_75) has no cp.async: a plain copy through registers keeps the same code correct there, if
 * slower. */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
static __device__ __forceinline__ void cu_cp_async16(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
static __device__ __forceinline__ void cu_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> static __device__ __forceinline__ void cu_cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
#else
static __device__ __forceinline__ void cu_cp_async16(uint32_t dst, const void *src, int bytes) {
    const uint4 v = bytes ? *reinterpret_cast<const uint4 *>(src) : make_uint4(0, 0, 0, 0);
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}
static __device__ __forceinline__ void cu_cp_commit() {}
template <int N> static __device__ __forceinline__ void cu_cp_wait() {}
#endif

/* ---- programmatic dependent launch (sm_90+; NOTES.md v12) ----------------------------------------------------
 * A kernel launched through cu_launch may start while the kernel before it in the stream is still running. Until
 * it calls cu_pdl_start() it may only read what no kernel of this step writes (weights; K/V of earlier steps), and
 * write nothing. cu_pdl_start() returns once the previous kernel has finished and its writes are visible, then lets
 * the next kernel launch: since that comes after the wait, a kernel's prologue also runs after everything two
 * launches back has finished - unless the kernel before it let it launch earlier (cu_pdl_trigger). A no-op below
 * sm_90 and when the launch had no PDL attribute. */
static __device__ __forceinline__ void cu_pdl_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Lets the next kernel launch now, before this kernel's wait. That breaks the rule above for the next kernel: its
 * prologue may run while the kernel before this one still runs. So only where no next kernel's prologue reads what
 * that one writes: a GEMV's reads weights, decode attention's old keys and the step's metadata; cuda__gemv_late's,
 * the one prologue that reads activations, would, and the backend launches it without PDL after such a kernel
 * (cuda_backend.pdl_early). The kernel after next is safe again: the next one lets it launch after its wait. */
static __device__ __forceinline__ void cu_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Launches kernel<<<grid, block, smem, st>>>(args...), with the PDL attribute where pdl and cuda__pdl_on() say so:
 * only for kernels that call cu_pdl_start() before touching activations. Returns the launch's error. */
template <typename... P, typename... A>
static cudaError_t cu_launch_pdl(int pdl, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                 A &&...args) {
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cfg.attrs = at, cfg.numAttrs = pdl && cuda__pdl_on() ? 1 : 0;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, static_cast<P>(args)...);
    if (e != cudaSuccess) (void)cudaGetLastError(); /* as <<<>>> + cudaGetLastError: not left for a later op */
    return e;
}

/* cu_launch_pdl with PDL where the device has it: every kernel of ours but a late GEMV after an early trigger. */
template <typename... P, typename... A>
static cudaError_t cu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                             A &&...args) {
    return cu_launch_pdl(1, kernel, grid, block, smem, st, static_cast<A &&>(args)...);
}

static inline int cu_blocks(int64_t n, int per) {
    int64_t b = (n + per - 1) / per;
    return (int)(b < 1 ? 1 : b > 65535 * 16 ? 65535 * 16 : b);
}

#endif
