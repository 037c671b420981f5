/* cuda_sample.cu - a logits row summarized on the GPU for the sampler (sample.h, samp_top), so that a decode step
 * copies ~0.5 KB a row back instead of the 200 KB row (and the host skips a 51,200-element scan per token).
 *
 * DESIGN: one block of 1024 threads per row, the row read from L2 a few times over:
 *   1. the maximum and the count of finite valid logits;
 *   2. sum exp(l - max) and sum exp((l - max) * inv_t) in double, each term computed as sample.c computes it;
 *   3. the K-th largest value by radix select: four passes of an 8-bit histogram over the order-preserving unsigned
 *      image of the float bits, each pass narrowing to the bucket that holds it;
 *   4. the candidates: every value above it, and of those equal to it the lowest ids (a block-wide scan over
 *      contiguous slices gives each equal value its rank in id order), so ties break as top_k_select breaks them;
 *   5. the K candidates ranked by (value desc, id asc) and written in order.
 * NaN and -inf never count, as in sample.c. */
#include "cuda_common.cuh"

#include <math_constants.h>

#include "sample.h"

#define TOP_THREADS 1024

static __device__ __forceinline__ uint32_t order_key(float v) {
    const uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ bool counts(float v) { return v == v && v > -CUDART_INF_F; }

static __device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide double sum (every thread gets it); red: 32 doubles of shared memory. */
static __device__ double block_sum_d(double v, double *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    return warp_sum_d(lane < (int)(blockDim.x >> 5) ? red[lane] : 0.0);
}

/* Exclusive prefix sum of v over the block in thread order; red: 32 ints of shared memory. */
static __device__ int block_exclusive_scan(int v, int *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int x = v;
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) red[warp] = x;
    __syncthreads();
    if (warp == 0) {
        int w = lane < (int)(blockDim.x >> 5) ? red[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        red[lane] = w; /* inclusive over warps */
    }
    __syncthreads();
    return x - v + (warp ? red[warp - 1] : 0);
}

static __global__ void __launch_bounds__(TOP_THREADS) logits_top_kernel(eng_tensor x, int n_valid,
                                                                        const float *inv_t, samp_top *out) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
    __shared__ unsigned hist[256];
    __shared__ double redd[32];
    __shared__ int redi[32];
    __shared__ float redf[32];
    __shared__ uint32_t s_prefix;
    __shared__ int s_need, s_slot;
    __shared__ float cv[SAMP_TOP_K];
    __shared__ int ci[SAMP_TOP_K];
    const int r = blockIdx.x, tid = threadIdx.x;
    const int64_t base = (int64_t)r * x.stride;
#define LOGIT(i) cu_ld(x.data, x.dtype, base + (i))

    /* 1. maximum and count */
    float mx = -CUDART_INF_F;
    int fin = 0;
    for (int i = tid; i < n_valid; i += blockDim.x) {
        const float v = LOGIT(i);
        if (counts(v)) mx = fmaxf(mx, v), fin++;
    }
    mx = cu_warp_max(mx);
    __syncthreads();
    if ((tid & 31) == 0) redf[tid >> 5] = mx;
    __syncthreads();
    mx = cu_warp_max((tid & 31) < (int)(blockDim.x >> 5) ? redf[tid & 31] : -CUDART_INF_F);
    fin = (int)block_sum_d((double)fin, redd);
    const int K = fin < SAMP_TOP_K ? fin : SAMP_TOP_K;
    samp_top *o = out + r;
    if (K == 0) {
        if (tid == 0) o->n = 0, o->sum = 0, o->sum_t = 0;
        return;
    }

    /* 2. the sums, term by term as sample.c: exp((double)(float difference) [* (double)inv_t]) */
    const float it = inv_t ? inv_t[r] : 0.0f;
    double s1 = 0.0, st = 0.0;
    for (int i = tid; i < n_valid; i += blockDim.x) {
        const float v = LOGIT(i);
        if (!counts(v)) continue;
        s1 += exp((double)(v - mx));
        if (it > 0.0f) st += exp((double)(v - mx) * (double)it);
    }
    s1 = block_sum_d(s1, redd);
    st = block_sum_d(st, redd);

    /* 3. radix select of the K-th largest key */
    if (tid == 0) s_prefix = 0, s_need = K;
    uint32_t mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        const uint32_t prefix = s_prefix;
        for (int i = tid; i < n_valid; i += blockDim.x) {
            const float v = LOGIT(i);
            if (!counts(v)) continue;
            const uint32_t k = order_key(v);
            if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            int need = s_need;
            for (int b = 255; b >= 0; b--) {
                if ((int)hist[b] >= need) {
                    s_prefix = prefix | ((uint32_t)b << shift);
                    break;
                }
                need -= (int)hist[b];
            }
            s_need = need; /* of the values in the chosen bucket, how many are still to take */
        }
        mask |= 255u << shift;
        __syncthreads();
    }
    const uint32_t kth = s_prefix;
    const int ties = s_need; /* values equal to the K-th to take, lowest ids first */

    /* 4. candidates: above the K-th anywhere; equal to it by id order (contiguous slices, ranked by a scan) */
    if (tid == 0) s_slot = 0;
    __syncthreads();
    for (int i = tid; i < n_valid; i += blockDim.x) {
        const float v = LOGIT(i);
        if (counts(v) && order_key(v) > kth) {
            const int at = atomicAdd(&s_slot, 1);
            cv[at] = v, ci[at] = i;
        }
    }
    const int per = (n_valid + (int)blockDim.x - 1) / (int)blockDim.x, lo = tid * per;
    const int hi = lo + per < n_valid ? lo + per : n_valid;
    int eq = 0;
    for (int i = lo; i < hi; i++) {
        const float v = LOGIT(i);
        eq += counts(v) && order_key(v) == kth;
    }
    int rank = block_exclusive_scan(eq, redi); /* also orders the atomics above before the reads below */
    const int above = K - ties;
    for (int i = lo; i < hi && rank < ties; i++) {
        const float v = LOGIT(i);
        if (counts(v) && order_key(v) == kth) {
            cv[above + rank] = v, ci[above + rank] = i;
            rank++;
        }
    }
    __syncthreads();

    /* 5. rank by (value desc, id asc) and write in order */
    if (tid < K) {
        const float v = cv[tid];
        const int id = ci[tid];
        int pos = 0;
        for (int j = 0; j < K; j++) pos += cv[j] > v || (cv[j] == v && ci[j] < id);
        o->vals[pos] = v;
        o->ids[pos] = id;
    }
    if (tid == 0) o->n = K, o->sum = s1, o->sum_t = it > 0.0f ? st : 0.0;
#undef LOGIT
}

extern "C" cudaError_t cuda__logits_top(cudaStream_t st, eng_tensor logits, int32_t n_valid, const float *inv_t,
                                        samp_top *out) {
    if (logits.rows <= 0) return cudaSuccess;
    return cu_launch(logits_top_kernel, dim3((unsigned)logits.rows), dim3(TOP_THREADS), 0, st, logits, n_valid, inv_t,
                     out);
}
