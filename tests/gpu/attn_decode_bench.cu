/* attn_decode_bench.cu - decode attention alone (cuda_attn.cu's kernels, no model), for tuning the decode kernel:
 * time per launch inside a CUDA graph that walks 32 layers' caches (so K/V come from DRAM, as in a decode step), for
 * the SIMT kernel + combine ("old") and the decode kernel at several key splits; reads of the same bytes by plain
 * load kernels (what the memory system gives at this size); and per-CTA phase timestamps of the decode kernel.
 * Built as its own target (it includes the kernel file itself, with the trace compiled in), or on the GPU machine:
 *   nvcc -O3 -arch=sm_90 -DCUDA_ATTN_DEC_TRACE -Isrc/engine -Isrc/engine/cuda -Isrc/core \
 *        -o attn_decode_bench tests/gpu/attn_decode_bench.cu && ./attn_decode_bench */
#include "cuda_attn.cu"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cuda_kern.h's switch, which lives in cuda.c: plain launches here, so each timed kernel runs alone */
extern "C" int cuda__pdl_on(void) { return 0; }

#define CK(x)                                                                                                        \
    do {                                                                                                             \
        cudaError_t e_ = (x);                                                                                        \
        if (e_ != cudaSuccess) {                                                                                     \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));                     \
            exit(1);                                                                                                 \
        }                                                                                                            \
    } while (0)

static int n_sms;

struct shape {
    const char *name;
    int n_head, head_dim;
};

/* One problem: n_seq sequences of one decode row at position ctx - 1, `layers` caches of [blocks * 16][d_model]. */
struct prob {
    shape sh;
    int n_seq, ctx, layers, nb; /* nb: blocks per sequence */
    __half *k, *v, *q, *out;
    int32_t *tiles, *blocks, *tickets;
    float *part;
    size_t layer_elems;
};

static void prob_init(prob *p, shape sh, int n_seq, int ctx, int layers, int scramble) {
    memset(p, 0, sizeof(*p));
    p->sh = sh, p->n_seq = n_seq, p->ctx = ctx, p->layers = layers;
    p->nb = (ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
    const int dm = sh.n_head * sh.head_dim, total = n_seq * p->nb;
    p->layer_elems = (size_t)total * ENG_KV_BLOCK * dm;
    const size_t n = p->layer_elems * layers;
    CK(cudaMalloc(&p->k, n * 2));
    CK(cudaMalloc(&p->v, n * 2));
    /* small random-ish halves: the bits of 0x2c00-0x2fff are ~0.06-0.12 */
    __half *h = (__half *)malloc(((size_t)1 << 24) + 64);
    for (size_t i = 0; i < ((size_t)1 << 23) + 32; i++) {
        unsigned short b = (unsigned short)(0x2c00 + (i * 2654435761u >> 7) % 0x400) | (i & 1 ? 0x8000 : 0);
        h[i] = __ushort_as_half(b);
    }
    for (size_t off = 0; off < n; off += (size_t)1 << 23) {
        size_t m = n - off < ((size_t)1 << 23) ? n - off : ((size_t)1 << 23);
        CK(cudaMemcpy(p->k + off, h, m * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(p->v + off, h + 7, m * 2, cudaMemcpyHostToDevice));
    }
    CK(cudaMalloc(&p->q, (size_t)n_seq * dm * 2));
    CK(cudaMemcpy(p->q, h + 1000, (size_t)n_seq * dm * 2, cudaMemcpyHostToDevice));
    free(h);
    CK(cudaMalloc(&p->out, (size_t)n_seq * dm * 2));
    int32_t *t = (int32_t *)malloc((size_t)n_seq * 4 * 4), *b = (int32_t *)malloc((size_t)total * 4);
    for (int i = 0; i < total; i++) b[i] = i;
    if (scramble)
        for (int i = total - 1; i > 0; i--) {
            int j = (int)((unsigned)(i * 2654435761u) % (unsigned)(i + 1)), x = b[i];
            b[i] = b[j], b[j] = x;
        }
    for (int s = 0; s < n_seq; s++) t[4 * s] = s, t[4 * s + 1] = 1, t[4 * s + 2] = ctx - 1, t[4 * s + 3] = s * p->nb;
    CK(cudaMalloc(&p->tiles, (size_t)n_seq * 16));
    CK(cudaMalloc(&p->blocks, (size_t)total * 4));
    CK(cudaMemcpy(p->tiles, t, (size_t)n_seq * 16, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(p->blocks, b, (size_t)total * 4, cudaMemcpyHostToDevice));
    free(t), free(b);
    CK(cudaMalloc(&p->tickets, (size_t)n_seq * sh.n_head * 4));
    CK(cudaMemset(p->tickets, 0, (size_t)n_seq * sh.n_head * 4));
    CK(cudaMalloc(&p->part, (size_t)n_seq * 64 * sh.n_head * (sh.head_dim + 2) * 4));
}

static void prob_free(prob *p) {
    cudaFree(p->k), cudaFree(p->v), cudaFree(p->q), cudaFree(p->out), cudaFree(p->tiles), cudaFree(p->blocks);
    cudaFree(p->tickets), cudaFree(p->part);
}

static int32_t bucket(int32_t keys) {
    int32_t b = 128;
    while (b < keys) b *= 2;
    return b;
}

/* args for layer l; splits 0: the old kernel's plan (cuda.c plan_splits), -1: the decode plan (plan_decode_splits,
 * 4 CTAs per SM), else that many chunks (multiples of 32 keys) */
static cuda__attn_args prob_args(const prob *p, int l, int splits) {
    cuda__attn_args a;
    memset(&a, 0, sizeof(a));
    const int dm = p->sh.n_head * p->sh.head_dim;
    a.out = (eng_tensor){p->out, ENG_F16, p->n_seq, dm, dm};
    a.q = (eng_tensor){p->q, ENG_F16, p->n_seq, dm, dm};
    a.k = p->k + p->layer_elems * l, a.v = p->v + p->layer_elems * l, a.kvdt = ENG_F16;
    a.d_model = dm, a.n_head = p->sh.n_head, a.head_dim = p->sh.head_dim;
    a.tiles = p->tiles, a.blocks = p->blocks, a.n_tiles = p->n_seq, a.rows = 1;
    a.part = p->part, a.tickets = p->tickets, a.scale = 1.0f / sqrtf((float)p->sh.head_dim);
    const int64_t budget = bucket(p->ctx), base = (int64_t)p->n_seq * p->sh.n_head;
    int64_t g = splits == 0 ? 128 : 32, want = splits == 0 ? 2 * n_sms : 4 * n_sms;
    int64_t s = splits > 0 ? splits : base >= want ? 1 : (want + base - 1) / base;
    if (s > (budget + g - 1) / g) s = (budget + g - 1) / g;
    int64_t chunk = ((budget + s - 1) / s + g - 1) / g * g;
    a.chunk = (int32_t)chunk, a.n_splits = (int32_t)((budget + chunk - 1) / chunk);
    return a;
}

static void launch(const prob *p, int l, int splits) {
    cuda__attn_args a = prob_args(p, l, splits);
    CK(splits == 0 ? cuda__attention(0, &a) : cuda__attention_decode(0, &a));
}

/* us per launch: a graph of one launch per layer, replayed */
static double time_graph(const prob *p, int splits, int hot) {
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    for (int l = 0; l < p->layers; l++) launch(p, hot ? 0 : l, splits); /* warm-up, outside the graph */
    CK(cudaDeviceSynchronize());
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int l = 0; l < p->layers; l++) {
        cuda__attn_args a = prob_args(p, hot ? 0 : l, splits);
        CK(splits == 0 ? cuda__attention(st, &a) : cuda__attention_decode(st, &a));
    }
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaGraphLaunch(ge, st));
    const int reps = 20;
    CK(cudaEventRecord(e0, st));
    for (int r = 0; r < reps; r++) CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    cudaGraphExecDestroy(ge), cudaGraphDestroy(g), cudaStreamDestroy(st), cudaEventDestroy(e0), cudaEventDestroy(e1);
    return ms * 1e3 / (reps * p->layers);
}

/* MB of K and V a launch reads (MB / us = TB/s) */
static double kv_mb(const prob *p) { return 2.0 * p->n_seq * p->ctx * p->sh.n_head * p->sh.head_dim * 2 / 1e6; }

/* max |new - old| over the outputs of layer 0 */
static float check(const prob *p, int splits) {
    const size_t n = (size_t)p->n_seq * p->sh.n_head * p->sh.head_dim;
    __half *a = (__half *)malloc(n * 2), *b = (__half *)malloc(n * 2);
    launch(p, 0, 0);
    CK(cudaMemcpy(a, p->out, n * 2, cudaMemcpyDeviceToHost));
    launch(p, 0, splits);
    CK(cudaMemcpy(b, p->out, n * 2, cudaMemcpyDeviceToHost));
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(__half2float(a[i]) - __half2float(b[i])));
    free(a), free(b);
    return m;
}

/* ---- plain reads of the same bytes -------------------------------------------------------------------------- */

/* CTA (head, chunk): its keys' head rows of K and V, 16-byte loads, 8 lanes a row (the decode kernel's pattern) */
static __global__ void read_heads(const uint4 *k, const uint4 *v, int dm16, int hd16, int chunk, int n_keys,
                                  unsigned *sink) {
    const int h = blockIdx.x, s = blockIdx.y, c = threadIdx.x & 7;
    unsigned x = 0;
    for (int j = s * chunk + (threadIdx.x >> 3); j < min(n_keys, (s + 1) * chunk); j += blockDim.x / 8)
        for (int e = c; e < hd16; e += 8) {
            const int64_t i = (int64_t)j * dm16 + h * hd16 + e;
            const uint4 a = __ldcg(k + i), b = __ldcg(v + i);
            x ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w;
        }
    if (x == 0x12345678u) sink[0] = x;
}

/* the same bytes, contiguous: CTA i reads its 1/grid of K and of V */
static __global__ void read_flat(const uint4 *k, const uint4 *v, int64_t n16, unsigned *sink) {
    unsigned x = 0;
    const int64_t per = (n16 + gridDim.x - 1) / gridDim.x, b = blockIdx.x * per, e = min(n16, b + per);
    for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) {
        const uint4 a = __ldcg(k + i), c = __ldcg(v + i);
        x ^= a.x ^ a.y ^ a.z ^ a.w ^ c.x ^ c.y ^ c.z ^ c.w;
    }
    if (x == 0x12345678u) sink[0] = x;
}

static void reads(const prob *p, int splits) {
    unsigned *sink;
    CK(cudaMalloc(&sink, 4));
    const int dm16 = p->sh.n_head * p->sh.head_dim / 8, hd16 = p->sh.head_dim / 8;
    const int chunk = (p->ctx + splits - 1) / splits;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int kind = 0; kind < 2; kind++) {
        float ms;
        for (int rep = 0; rep < 2; rep++) {
            CK(cudaEventRecord(e0));
            for (int r = 0; r < 5; r++)
                for (int l = 0; l < p->layers; l++) {
                    const uint4 *k = (const uint4 *)(p->k + p->layer_elems * l),
                                *v = (const uint4 *)(p->v + p->layer_elems * l);
                    if (kind == 0)
                        read_heads<<<dim3(p->sh.n_head, splits), 128>>>(k, v, dm16, hd16, chunk, p->ctx, sink);
                    else read_flat<<<p->sh.n_head * splits, 128>>>(k, v, (int64_t)p->ctx * dm16, sink);
                }
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&ms, e0, e1));
        }
        const double us = ms * 1e3 / (5 * p->layers);
        printf("  plain reads %-9s %2d x %3d CTAs: %6.2f us (%.2f TB/s)\n", kind ? "contiguous" : "per head",
               p->sh.n_head, splits, us, kv_mb(p) / us);
    }
    cudaFree(sink), cudaEventDestroy(e0), cudaEventDestroy(e1);
}

/* ---- phase timestamps ---------------------------------------------------------------------------------------- */

static void trace(const prob *p, int splits) {
    static unsigned long long t[16384][2][8];
    cuda__attn_args a = prob_args(p, p->layers > 3 ? 3 : p->layers - 1, splits);
    const int ctas = a.n_tiles * a.n_head * a.n_splits;
    if (ctas > 16384) return;
    unsigned char *flush;
    CK(cudaMalloc(&flush, (size_t)200 << 20));
    for (int rep = 0; rep < 3; rep++) { /* the last of 3, after an L2 flush */
        CK(cudaMemset(flush, rep, (size_t)200 << 20));
        memset(t, 0, sizeof(t));
        CK(cudaMemcpyToSymbol(dec_trace, t, sizeof(t)));
        CK(cuda__attention_decode(0, &a));
        CK(cudaDeviceSynchronize());
    }
    CK(cudaMemcpyFromSymbol(t, dec_trace, sizeof(t)));
    cudaFree(flush);
    unsigned long long t0 = ~0ull, tend = 0;
    double sum[8] = {0}, mx[8] = {0}, cyc = 0, ns = 0;
    int n[8] = {0};
    for (int c = 0; c < ctas; c++) {
        if (!t[c][0][0]) continue;
        t0 = t[c][0][0] < t0 ? t[c][0][0] : t0;
        int lastm = 0;
        for (int m = 0; m < 8; m++)
            if (t[c][0][m]) lastm = m;
        tend = t[c][0][lastm] > tend ? t[c][0][lastm] : tend;
        if (lastm >= 4) cyc += (double)(t[c][1][4] - t[c][1][0]), ns += (double)(t[c][0][4] - t[c][0][0]);
    }
    for (int c = 0; c < ctas; c++) {
        if (!t[c][0][0]) continue;
        int prev = 0;
        for (int m = 0; m < 8; m++) {
            if (!t[c][0][m]) continue;
            const double d = m == 0 ? (double)(t[c][0][0] - t0) : (double)(t[c][0][m] - t[c][0][prev]);
            sum[m] += d, mx[m] = d > mx[m] ? d : mx[m], n[m]++;
            prev = m;
        }
    }
    printf("  trace %s ctx %d, %d tiles, %d chunks of %d (%d CTAs): span %.2f us, SM clock %.2f GHz\n", p->sh.name,
           p->ctx, a.n_tiles, a.n_splits, a.chunk, ctas, (tend - t0) / 1e3, ns > 0 ? cyc / ns : 0);
    const char *what[8] = {"start after first CTA", "tile read", "table read + copies issued", "first stage landed",
                           "rest of the chunk", "warp merge + store", "ticket", "last CTA: merge"};
    for (int m = 0; m < 8; m++)
        if (n[m])
            printf("    %-28s mean %6.2f us  max %6.2f us  (%d CTAs)\n", what[m], sum[m] / n[m] / 1e3, mx[m] / 1e3,
                   n[m]);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    n_sms = prop.multiProcessorCount;
    printf("%s, %d SMs\n", prop.name, n_sms);
    const shape s350 = {"350M", 16, 64}, s2b = {"2B", 32, 80}, s6b = {"6B", 16, 256};
    const int ctxs[] = {128, 1024, 2048};
    for (int ci = 0; ci < 3; ci++) {
        prob p;
        prob_init(&p, s2b, 1, ctxs[ci], 32, 0);
        printf("2B ctx %d (%.1f MB a layer), us per launch in a graph of 32 layers:\n", p.ctx, kv_mb(&p));
        printf("  old (SIMT + combine)   %7.2f us\n", time_graph(&p, 0, 0));
        cuda__attn_args a = prob_args(&p, 0, -1);
        printf("  decode, plan (%2d x %4d) %7.2f us   max|diff| vs old %.2e\n", a.n_splits, a.chunk,
               time_graph(&p, -1, 0), check(&p, -1));
        for (int sp = 1; sp <= 64; sp *= 2) {
            a = prob_args(&p, 0, sp);
            if (a.n_splits != sp) continue;
            const double us = time_graph(&p, sp, 0);
            printf("  decode, %2d x %4d       %7.2f us (%.2f TB/s)\n", a.n_splits, a.chunk, us, kv_mb(&p) / us);
        }
        printf("  decode, plan, L2-hot   %7.2f us\n", time_graph(&p, -1, 1));
        if (ctxs[ci] == 1024) reads(&p, 16);
        trace(&p, -1);
        prob_free(&p);
    }
    const shape others[] = {s350, s6b};
    for (int si = 0; si < 2; si++) {
        prob p;
        prob_init(&p, others[si], 1, 1024, 32, 0);
        cuda__attn_args a = prob_args(&p, 0, -1);
        printf("%s ctx 1024 (%.1f MB): old %.2f us, decode plan (%d x %d) %.2f us, max|diff| %.2e\n", others[si].name,
               kv_mb(&p), time_graph(&p, 0, 0), a.n_splits, a.chunk, time_graph(&p, -1, 0), check(&p, -1));
        trace(&p, -1);
        prob_free(&p);
    }
    const int seqs[] = {8, 32, 64};
    for (int i = 0; i < 3; i++) {
        prob p;
        prob_init(&p, s2b, seqs[i], 1536, 2, 1);
        cuda__attn_args a = prob_args(&p, 0, -1);
        const double o = time_graph(&p, 0, 0), d = time_graph(&p, -1, 0);
        printf("2B batch of %d x ctx 1536 (%.1f MB, scrambled blocks): old %.2f us, decode plan (%d x %d) %.2f us "
               "(%.2f TB/s), max|diff| %.2e\n",
               seqs[i], kv_mb(&p), o, a.n_splits, a.chunk, d, kv_mb(&p) / d, check(&p, -1));
        trace(&p, -1);
        prob_free(&p);
    }
    return 0;
}
