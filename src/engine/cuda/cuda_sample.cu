/* cuda_sample.cu - a logits row summarized on the GPU for the sampler (sample.h, samp_top), so that a decode step
 * copies ~0.5 KB a row back instead of the 200 KB row (and the host skips a 51,200-element scan per token).
 *
 * DESIGN: two ways, the same result.
 *   Rows of fewer than TOP_SPLIT_MIN valid ids: one block of 1024 threads per row (top_exact), the row read from
 *   L2 a few times over:
 *   1. the maximum and the count of finite valid logits;
 *   2. sum exp(l - max) and sum exp((l - max) * inv_t) in double, each term computed as sample.c computes it;
 *   3. the K-th largest value by radix select: four passes of an 8-bit histogram over the order-preserving unsigned
 *      image of the float bits, each pass narrowing to the bucket that holds it;
 *   4. the candidates: every value above it, and of those equal to it the lowest ids (a block-wide scan over
 *      contiguous slices gives each equal value its rank in id order), so ties break as top_k_select breaks them;
 *   5. the K candidates ranked by (value desc, id asc) and written in order.
 *   That is ~100 us a row at CodeGen's 51,200 ids (one SM, eight passes, contended shared atomics): as long as a
 *   350M decode step's whole layer stack. So CodeGen-sized rows are split over TOP_SLICES blocks a row instead:
 *   a. top_max_kernel: each block the maximum and finite count of its slice;
 *   b. top_split_kernel: each block reads every slice maximum of its row, so it knows the row maximum (the sums'
 *      terms are then exactly step 2's) and a threshold: the K-th largest slice maximum, which at least K values
 *      reach, so no value below it can be among the K largest. It sums its slice's terms and appends the values at
 *      or above the threshold (~90 a row on random logits) to the row's candidates. The last block of the row (a
 *      ticket, as decode attention merges its splits) adds the slices' sums in slice order (deterministic), ranks
 *      the candidates by (value desc, id asc) in shared memory and writes the first K. Past TOP_CAP candidates (a
 *      row of many equal values) it runs top_exact on the row instead.
 * NaN and -inf never count, as in sample.c. */
#include "cuda_common.cuh"

#include <math_constants.h>

#include "sample.h"

#define TOP_THREADS 1024
#define TOP_SPLIT_MIN 8192 /* valid ids from which a row is split over TOP_SLICES blocks */
#define TOP_SLICES 128     /* >= SAMP_TOP_K: the threshold is the K-th largest slice maximum */
#define TOP_SPLIT_THREADS 256
#define TOP_CAP 2048 /* candidates a row the merging block sorts (16 KiB of shared memory) */

static_assert(TOP_SLICES >= SAMP_TOP_K && TOP_SLICES % 4 == 0 && TOP_SLICES <= TOP_SPLIT_THREADS &&
                  TOP_SPLIT_THREADS <= TOP_CAP,
              "top_split_kernel: a slice maximum a thread, candidates at least a thread each");

typedef struct top_work {
    float *smax;               /* [rows][TOP_SLICES] slice maxima */
    int *scnt;                 /* [rows][TOP_SLICES] finite counts */
    double *s1, *st;           /* [rows][TOP_SLICES] the slices' terms of the two sums */
    unsigned long long *cand;  /* [rows][TOP_CAP] (rank_key << 32 | ~id) of the candidates */
    int *ncand, *ticket;       /* [rows] each: zero before a launch, zero after it */
} top_work;

static __device__ __forceinline__ uint32_t order_key(float v) {
    const uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* order_key with -0 taken as +0: sample.c compares floats, where the two are equal and ties go by id */
static __device__ __forceinline__ uint32_t rank_key(float v) { return order_key(v == 0.0f ? 0.0f : v); }

static __device__ __forceinline__ bool counts(float v) { return v == v && v > -CUDART_INF_F; }

static __device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Two block-wide double sums at once (every thread gets both); red: 64 doubles of shared memory. */
static __device__ void block_sum2_d(double &a, double &b, double *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    a = warp_sum_d(a), b = warp_sum_d(b);
    __syncthreads();
    if (lane == 0) red[warp] = a, red[32 + warp] = b;
    __syncthreads();
    a = warp_sum_d(lane < nw ? red[lane] : 0.0), b = warp_sum_d(lane < nw ? red[32 + lane] : 0.0);
}

/* Block-wide maximum of mx and sum of n (every thread gets both): the finite logits' maximum and count, which
 * every path starts from. redf, redi: 32 floats and 32 ints of shared memory. */
static __device__ void block_max_count(float &mx, int &n, float *redf, int *redi) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    mx = cu_warp_max(mx);
    for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
    __syncthreads(); /* red may still be read by an earlier reduction */
    if (lane == 0) redf[warp] = mx, redi[warp] = n;
    __syncthreads();
    mx = cu_warp_max(lane < nw ? redf[lane] : -CUDART_INF_F);
    n = lane < nw ? redi[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
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

/* inv_t of up to CUDA_TOP_INV_ARGS rows travel as a kernel argument, so a step's sampling needs no upload */
typedef struct top_inv {
    const float *dev; /* inv_t[rows] on the device, or NULL: then v[] (rows <= CUDA_TOP_INV_ARGS), or none at all */
    int has;
    float v[CUDA_TOP_INV_ARGS];
} top_inv;

static __device__ __forceinline__ float inv_of(const top_inv &t, int r) {
    return t.dev ? t.dev[r] : t.has ? t.v[r] : 0.0f;
}

/* Row r summarized by one block (any multiple of 32 threads): steps 1-5 above. */
static __device__ void top_exact(const eng_tensor &x, int r, int n_valid, float it, samp_top *o) {
    __shared__ unsigned hist[256];
    __shared__ double redd[64];
    __shared__ int redi[32];
    __shared__ float redf[32];
    __shared__ uint32_t s_prefix;
    __shared__ int s_need, s_slot;
    __shared__ float cv[SAMP_TOP_K];
    __shared__ int ci[SAMP_TOP_K];
    const int tid = threadIdx.x;
    const int64_t base = (int64_t)r * x.stride;
#define LOGIT(i) cu_ld(x.data, x.dtype, base + (i))

    /* 1. maximum and count */
    float mx = -CUDART_INF_F;
    int fin = 0;
    for (int i = tid; i < n_valid; i += blockDim.x) {
        const float v = LOGIT(i);
        if (counts(v)) mx = fmaxf(mx, v), fin++;
    }
    block_max_count(mx, fin, redf, redi);
    const int K = fin < SAMP_TOP_K ? fin : SAMP_TOP_K;
    if (K == 0) {
        if (tid == 0) o->n = 0, o->sum = 0, o->sum_t = 0;
        return;
    }

    /* 2. the sums, term by term as sample.c: exp((double)(float difference) [* (double)inv_t]) */
    double s1 = 0.0, st = 0.0;
    for (int i = tid; i < n_valid; i += blockDim.x) {
        const float v = LOGIT(i);
        if (!counts(v)) continue;
        s1 += exp((double)(v - mx));
        if (it > 0.0f) st += exp((double)(v - mx) * (double)it);
    }
    block_sum2_d(s1, st, redd);

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
            const uint32_t k = rank_key(v);
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
        if (counts(v) && rank_key(v) > kth) {
            const int at = atomicAdd(&s_slot, 1);
            cv[at] = v, ci[at] = i;
        }
    }
    const int per = (n_valid + (int)blockDim.x - 1) / (int)blockDim.x, lo = tid * per;
    const int hi = lo + per < n_valid ? lo + per : n_valid;
    int eq = 0;
    for (int i = lo; i < hi; i++) {
        const float v = LOGIT(i);
        eq += counts(v) && rank_key(v) == kth;
    }
    int rank = block_exclusive_scan(eq, redi); /* also orders the atomics above before the reads below */
    const int above = K - ties;
    for (int i = lo; i < hi && rank < ties; i++) {
        const float v = LOGIT(i);
        if (counts(v) && rank_key(v) == kth) {
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

static __global__ void __launch_bounds__(TOP_THREADS) logits_top_kernel(eng_tensor x, int n_valid, top_inv inv,
                                                                        samp_top *out) {
    cu_pdl_start(); /* PDL (cuda_common.cuh): all it touches may come from the kernel before */
    top_exact(x, blockIdx.x, n_valid, inv_of(inv, blockIdx.x), out + blockIdx.x);
}

/* ---- the split path (a, b above) ---- */

/* slice s of a row: [s * len, min((s + 1) * len, n_valid)) */
static __global__ void __launch_bounds__(TOP_SPLIT_THREADS) top_max_kernel(eng_tensor x, int n_valid, int len,
                                                                           float *smax, int *scnt) {
    cu_pdl_start();
    __shared__ float redf[32];
    __shared__ int redi[32];
    const int r = blockIdx.y, s = blockIdx.x, tid = threadIdx.x;
    const int64_t base = (int64_t)r * x.stride;
    const int lo = s * len, hi = lo + len < n_valid ? lo + len : n_valid;
    float mx = -CUDART_INF_F;
    int fin = 0;
    for (int i = lo + tid; i < hi; i += blockDim.x) {
        const float v = cu_ld(x.data, x.dtype, base + i);
        if (counts(v)) mx = fmaxf(mx, v), fin++;
    }
    block_max_count(mx, fin, redf, redi);
    if (tid == 0) smax[r * gridDim.x + s] = mx, scnt[r * gridDim.x + s] = fin;
}

static __global__ void __launch_bounds__(TOP_SPLIT_THREADS) top_split_kernel(eng_tensor x, int n_valid, int len,
                                                                             top_inv inv, top_work w, samp_top *out) {
    cu_pdl_start();
    __shared__ __align__(16) float sm[TOP_SLICES];
    __shared__ __align__(16) unsigned long long keys[TOP_CAP];
    __shared__ double redd[64];
    __shared__ float redf[32];
    __shared__ int redi[32];
    __shared__ float s_thr;
    __shared__ int s_last, s_n;
    const int r = blockIdx.y, s = blockIdx.x, tid = threadIdx.x, lane = tid & 31;
    const int64_t base = (int64_t)r * x.stride;
    const float it = inv_of(inv, r);
    const int lo = s * len, hi = lo + len < n_valid ? lo + len : n_valid;
    const int trips = (hi - lo + (int)blockDim.x - 1) / (int)blockDim.x; /* the same for every thread */
#define LOGIT(k) (lo + (k) * (int)blockDim.x + tid < hi ? cu_ld(x.data, x.dtype, base + lo + (k) * blockDim.x + tid) \
                                                        : -CUDART_INF_F)
    const float v0 = LOGIT(0), v1 = LOGIT(1); /* the first loads issued before the threshold is known */
    /* the row's maximum, finite count and threshold, from every slice's (TOP_SLICES <= blockDim.x) */
    float m = -CUDART_INF_F, mx;
    int fin = 0;
    if (tid < TOP_SLICES) m = sm[tid] = w.smax[r * TOP_SLICES + tid], fin = w.scnt[r * TOP_SLICES + tid];
    mx = m;
    block_max_count(mx, fin, redf, redi); /* its barriers also publish sm */
    const int K = fin < SAMP_TOP_K ? fin : SAMP_TOP_K;
    if (tid < TOP_SLICES && K > 0) { /* the slice maximum that is K-th largest (ties: every holder writes the same) */
        int gt = 0, ge = 0;
#pragma unroll
        for (int j = 0; j < TOP_SLICES; j += 4) {
            const float4 q = *(const float4 *)&sm[j];
            gt += (q.x > m) + (q.y > m) + (q.z > m) + (q.w > m);
            ge += (q.x >= m) + (q.y >= m) + (q.z >= m) + (q.w >= m);
        }
        if (gt < K && K <= ge) s_thr = m;
    }
    __syncthreads();
    const float thr = K > 0 ? s_thr : 0.0f;
    /* this slice's terms of the sums, and its values at or above the threshold */
    double s1 = 0.0, st = 0.0;
    const unsigned lt = (1u << lane) - 1u;
    for (int k = 0; k < trips; k++) {
        const float v = k == 0 ? v0 : k == 1 ? v1 : LOGIT(k);
        const bool ok = counts(v);
        if (ok) {
            s1 += exp((double)(v - mx));
            if (it > 0.0f) st += exp((double)(v - mx) * (double)it);
        }
        const bool cand = ok && K > 0 && v >= thr;
        const unsigned bal = __ballot_sync(0xffffffffu, cand); /* trips is warp-uniform: every lane is here */
        if (bal) {
            int at = 0;
            if (lane == 0) at = atomicAdd(&w.ncand[r], __popc(bal));
            at = __shfl_sync(0xffffffffu, at, 0) + __popc(bal & lt);
            if (cand && at < TOP_CAP)
                w.cand[(int64_t)r * TOP_CAP + at] =
                    (unsigned long long)rank_key(v) << 32 | (0xffffffffu - (uint32_t)(lo + k * blockDim.x + tid));
        }
    }
#undef LOGIT
    block_sum2_d(s1, st, redd);
    if (tid == 0) w.s1[r * TOP_SLICES + s] = s1, w.st[r * TOP_SLICES + s] = st;
    /* the last block of the row merges (the fence orders this block's writes before its ticket) */
    __threadfence();
    __syncthreads();
    if (tid == 0) s_last = atomicAdd(&w.ticket[r], 1) == TOP_SLICES - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    /* other blocks' writes, read past L1 (__ldcg), all at once: the sums' terms (added in slice order whichever
     * block is last) and the first candidates (entries past the count are ignored) */
    s1 = tid < TOP_SLICES ? __ldcg(&w.s1[r * TOP_SLICES + tid]) : 0.0;
    st = tid < TOP_SLICES ? __ldcg(&w.st[r * TOP_SLICES + tid]) : 0.0;
    unsigned long long key = __ldcg(&w.cand[(int64_t)r * TOP_CAP + tid]);
    if (tid == 0) s_n = atomicAdd(&w.ncand[r], 0);
    block_sum2_d(s1, st, redd); /* its barriers publish s_n */
    const int n = s_n;
    if (tid == 0) w.ticket[r] = 0, w.ncand[r] = 0; /* ready for the next launch */
    samp_top *o = out + r;
    if (n > TOP_CAP) { /* too many ties at the threshold to sort here */
        top_exact(x, r, n_valid, it, o);
        return;
    }
    if (tid == 0) o->n = K, o->sum = K ? s1 : 0.0, o->sum_t = K && it > 0.0f ? st : 0.0;
    if (K == 0) return;
    if (n <= (int)blockDim.x) { /* the usual case: each candidate's rank is how many keys beat it (keys differ) */
        keys[tid] = tid < n ? key : 0ull;
        __syncthreads();
        if (tid < n) {
            int rank = 0;
            for (int j = 0; j < n; j++) rank += keys[j] > key;
            if (rank < K) {
                const int32_t id = (int32_t)(0xffffffffu - (uint32_t)key);
                o->vals[rank] = cu_ld(x.data, x.dtype, base + id); /* as stored: -0 stays -0 */
                o->ids[rank] = id;
            }
        }
        return;
    }
    int P = 1;
    while (P < n) P <<= 1;
    for (int i = tid; i < P; i += blockDim.x) keys[i] = i < n ? __ldcg(&w.cand[(int64_t)r * TOP_CAP + i]) : 0ull;
    __syncthreads();
    for (int k = 2; k <= P; k <<= 1) /* bitonic sort, descending */
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = tid; i < P; i += blockDim.x) {
                const int l = i ^ j;
                if (l > i) {
                    const unsigned long long a = keys[i], b = keys[l];
                    if (((i & k) == 0) == (a < b)) keys[i] = b, keys[l] = a;
                }
            }
            __syncthreads();
        }
    if (tid < K) {
        const int32_t id = (int32_t)(0xffffffffu - (uint32_t)keys[tid]);
        o->vals[tid] = cu_ld(x.data, x.dtype, base + id);
        o->ids[tid] = id;
    }
}

/* rows a launch of the split path takes (its grid's y) */
#define TOP_SPLIT_ROWS_MAX 65535

extern "C" size_t cuda__logits_top_work(int64_t rows, int32_t n_valid) {
    if (n_valid < TOP_SPLIT_MIN || rows > TOP_SPLIT_ROWS_MAX) return 0;
    return (size_t)rows * (TOP_SLICES * (sizeof(float) + sizeof(int) + 2 * sizeof(double)) +
                           TOP_CAP * sizeof(unsigned long long));
}

extern "C" cudaError_t cuda__logits_top(cudaStream_t st, eng_tensor logits, int32_t n_valid, const float *inv_t,
                                        const float *inv_t_host, void *work, int32_t *counters, samp_top *out) {
    if (logits.rows <= 0) return cudaSuccess;
    top_inv inv = {};
    inv.dev = inv_t;
    if (!inv_t && inv_t_host && logits.rows <= CUDA_TOP_INV_ARGS) {
        inv.has = 1;
        for (int64_t r = 0; r < logits.rows; r++) inv.v[r] = inv_t_host[r];
    }
    if (n_valid < TOP_SPLIT_MIN || logits.rows > TOP_SPLIT_ROWS_MAX)
        return cu_launch(logits_top_kernel, dim3((unsigned)logits.rows), dim3(TOP_THREADS), 0, st, logits, n_valid,
                         inv, out);
    const int64_t R = logits.rows;
    const int len = (n_valid + TOP_SLICES - 1) / TOP_SLICES;
    unsigned char *p = (unsigned char *)work; /* the widest first: every part stays aligned */
    top_work w;
    w.cand = (unsigned long long *)p, p += (size_t)R * TOP_CAP * sizeof(unsigned long long);
    w.s1 = (double *)p, p += (size_t)R * TOP_SLICES * sizeof(double);
    w.st = (double *)p, p += (size_t)R * TOP_SLICES * sizeof(double);
    w.smax = (float *)p, p += (size_t)R * TOP_SLICES * sizeof(float);
    w.scnt = (int *)p;
    w.ncand = counters, w.ticket = counters + R;
    const dim3 grid(TOP_SLICES, (unsigned)R);
    cudaError_t e = cu_launch(top_max_kernel, grid, dim3(TOP_SPLIT_THREADS), 0, st, logits, n_valid, len, w.smax,
                              w.scnt);
    if (e == cudaSuccess)
        e = cu_launch(top_split_kernel, grid, dim3(TOP_SPLIT_THREADS), 0, st, logits, n_valid, len, inv, w, out);
    return e;
}
