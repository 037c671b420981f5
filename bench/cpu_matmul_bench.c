/* cpu_matmul_bench.c - how close the cpu backend's matmul gets to memory bandwidth (decode) and to compute
 * (prefill), against a plain streaming-read probe on the same threads.
 *
 *   cpu_matmul_bench [threads]          (SUGGESTD_CPU_SIMD=scalar|avx2|avx512 picks the kernels)
 *
 * Weights are f16 and cycled over more than 600 MB of copies, so every call reads from DRAM as a real decode step
 * does (a single 8 MB matrix would sit in L3). "350M decode" runs the 81 matmuls of one codegen-350M token (20
 * layers of qkv, out_proj, fc_in, fc_out, then lm_head; 0.61 GB) and compares with reading those bytes. The last
 * lines time one layer's attention (16 heads of 64, f16 cache) for a 1536-token prefill and for decode steps. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "eng.h"
#include "fp16.h"
#include "pool.h"

#define MB (1024.0 * 1024.0)
#define FOOTPRINT ((size_t)640 << 20)

static void die(const char *what, err e) {
    fprintf(stderr, "%s: %s\n", what, err_name(e));
    exit(1);
}

/* ---- read probe: every thread sums its contiguous share of the buffer ------------------------------------------ */

typedef struct probe {
    const uint64_t *p;
    size_t n;
    uint64_t sink[64];
} probe;

static void probe_work(void *ctx, int ith, int nth) {
    probe *pr = ctx;
    long lo, hi;
    pool_split((long)(pr->n / 8), ith, nth, &lo, &hi);
    uint64_t s[8] = {0};
    for (long i = lo * 8; i < hi * 8; i += 8)
        for (int k = 0; k < 8; k++) s[k] += pr->p[i + k];
    pr->sink[ith] = s[0] ^ s[1] ^ s[2] ^ s[3] ^ s[4] ^ s[5] ^ s[6] ^ s[7];
}

/* Best GB/s over a few passes of reading `bytes`. */
static double read_probe(pool *pl, const void *buf, size_t bytes) {
    probe pr = {.p = buf, .n = bytes / 8};
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        uint64_t t0 = clock_ns();
        pool_run(pl, probe_work, &pr);
        double s = (double)(clock_ns() - t0) * 1e-9;
        best = s < best ? s : best;
    }
    return (double)bytes / best / 1e9;
}

static uint16_t *f16_buffer(size_t n, uint64_t seed) {
    uint16_t *p = malloc(n * sizeof(uint16_t));
    if (!p) die("malloc", ERR_NOMEM);
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = f32_to_fp16(((float)(x >> 40) / 16777216.0f - 0.5f) * 0.06f);
    }
    return p;
}

/* ---- matmul of one shape, weights cycled over FOOTPRINT ---------------------------------------------------------- */

static void bench_shape(eng_backend *be, const uint16_t *pool_buf, size_t pool_elems, int64_t K, int64_t N,
                        int64_t T, double probe_gbs) {
    size_t per = (size_t)(N * K), copies = pool_elems / per;
    if (copies < 1) copies = 1;
    eng_tensor *w = calloc(copies, sizeof(eng_tensor)), x, y;
    for (size_t c = 0; c < copies; c++)
        if (eng_weight_from_host(be, pool_buf + c * per, ENG_F16, N, K, &w[c])) die("weight", ERR_INVALID);
    if (eng_tensor_alloc(be, ENG_F32, T, K, &x) || eng_tensor_alloc(be, ENG_F32, T, N, &y)) die("alloc", ERR_NOMEM);
    float *xv = malloc((size_t)(T * K) * 4);
    for (int64_t i = 0; i < T * K; i++) xv[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    eng_tensor_write_f32(be, &x, xv);
    int reps = (int)(copies * 3 < 30 ? 30 : copies * 3);
    if (T >= 64) reps = 6;
    for (size_t c = 0; c < copies; c++) eng_matmul(be, &y, &x, &w[c], NULL, 0); /* warm up (page faults) */
    uint64_t t0 = clock_ns();
    for (int r = 0; r < reps; r++) {
        err e = eng_matmul(be, &y, &x, &w[(size_t)r % copies], NULL, 0);
        if (e) die("matmul", e);
    }
    double s = (double)(clock_ns() - t0) * 1e-9 / reps;
    double gbs = (double)per * 2 / s / 1e9, gflops = 2.0 * (double)T * (double)per / s / 1e9;
    printf("  K=%-5lld N=%-6lld T=%-5lld %8.3f ms  %6.2f GB/s (%3.0f%% of read probe)  %7.1f GFLOP/s\n",
           (long long)K, (long long)N, (long long)T, s * 1e3, gbs, 100 * gbs / probe_gbs, gflops);
    eng_tensor_free(be, &x), eng_tensor_free(be, &y);
    free(w), free(xv);
}

/* ---- one codegen-350M decode token: the 81 matmuls, all distinct weights ----------------------------------------- */

static void bench_350m(eng_backend *be, pool *pl, int64_t T) {
    const int L = 20;
    const int64_t D = 1024, F = 4096, V = 51200;
    const int64_t shapes[4][2] = {{3 * D, D}, {D, D}, {F, D}, {D, F}}; /* N, K */
    size_t elems = (size_t)L * (size_t)(3 * D * D + D * D + F * D + D * F) + (size_t)(V * D);
    uint16_t *buf = f16_buffer(elems, 42);
    eng_tensor w[81], x, xf, y[4], logits;
    size_t off = 0;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 4; k++) {
            eng_weight_from_host(be, buf + off, ENG_F16, shapes[k][0], shapes[k][1], &w[l * 4 + k]);
            off += (size_t)(shapes[k][0] * shapes[k][1]);
        }
    eng_weight_from_host(be, buf + off, ENG_F16, V, D, &w[80]);
    eng_tensor_alloc(be, ENG_F32, T, D, &x);
    eng_tensor_alloc(be, ENG_F32, T, F, &xf);
    for (int k = 0; k < 4; k++) eng_tensor_alloc(be, ENG_F32, T, shapes[k][0], &y[k]);
    eng_tensor_alloc(be, ENG_F32, T, V, &logits);
    float *xv = calloc((size_t)(T * F), 4);
    for (int64_t i = 0; i < T * F; i++) xv[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    eng_tensor_write_f32(be, &x, xv);
    eng_tensor_write_f32(be, &xf, xv);
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        uint64_t t0 = clock_ns();
        for (int l = 0; l < L; l++) {
            eng_matmul(be, &y[0], &x, &w[l * 4 + 0], NULL, 0);
            eng_matmul(be, &y[1], &x, &w[l * 4 + 1], NULL, 0);
            eng_matmul(be, &y[2], &x, &w[l * 4 + 2], NULL, 0);
            eng_matmul(be, &y[3], &xf, &w[l * 4 + 3], NULL, 0);
        }
        eng_matmul(be, &logits, &x, &w[80], NULL, 0);
        double s = (double)(clock_ns() - t0) * 1e-9;
        best = s < best ? s : best;
    }
    double bytes = (double)elems * 2, probe_gbs = read_probe(pl, buf, elems * 2);
    double probe_ms = bytes / probe_gbs / 1e6;
    printf("350M decode T=%lld: %.2f GB of f16 weights in %.2f ms = %.2f GB/s; reading them takes %.2f ms "
           "(%.2f GB/s): %.3fx the read time\n",
           (long long)T, bytes / 1e9, best * 1e3, bytes / best / 1e9, probe_ms, probe_gbs, best * 1e3 / probe_ms);
    for (int k = 0; k < 4; k++) eng_tensor_free(be, &y[k]);
    eng_tensor_free(be, &x), eng_tensor_free(be, &xf), eng_tensor_free(be, &logits);
    free(buf), free(xv);
}

/* ---- attention: a 1536-token prefill of one sequence, then 16 decode rows at context 2048 ----------------------- */

static void bench_attention(eng_backend *be) {
    const int32_t H = 16, hd = 64, D = H * hd, P = 1536, n_blocks = 2048 / ENG_KV_BLOCK * 17;
    eng_kv *kv;
    if (eng_kv_create(be, 1, D, n_blocks, ENG_F16, &kv)) die("kv", ERR_NOMEM);
    int32_t *blocks = malloc((size_t)n_blocks * sizeof(int32_t)), *pos = malloc(2048 * sizeof(int32_t));
    for (int32_t i = 0; i < n_blocks; i++) blocks[i] = i;
    eng_tensor q, o;
    eng_tensor_alloc(be, ENG_F32, P, D, &q);
    eng_tensor_alloc(be, ENG_F32, P, D, &o);
    float *qv = malloc((size_t)P * D * 4);
    for (int64_t i = 0; i < (int64_t)P * D; i++) qv[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    eng_tensor_write_f32(be, &q, qv);
    for (int32_t i = 0; i < P; i++) pos[i] = i;
    eng_seq s = {.row0 = 0, .n_tokens = P, .pos = 0, .blocks = blocks, .n_blocks = 2048 / ENG_KV_BLOCK};
    eng_batch b = {.n_seqs = 1, .seqs = &s, .n_rows = P, .tokens = pos, .positions = pos};
    eng_kv_store(be, kv, 0, &q, &q, &b);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        uint64_t t0 = clock_ns();
        eng_attention(be, &o, &q, kv, 0, &b, (eng_attn_shape){H, hd, hd});
        double t = (double)(clock_ns() - t0) * 1e-9;
        best = t < best ? t : best;
    }
    double flops = 4.0 * hd * H * ((double)P * (P + 1) / 2);
    printf("attention prefill %d tokens, %d heads of %d, f16 cache: %.1f ms/layer (%.1f GFLOP/s)\n", P, H, hd,
           best * 1e3, flops / best / 1e9);
    /* 16 sequences decoding at position 2047, each with its own 2048 positions of (stale but finite) cache */
    eng_seq ds[16];
    int32_t dpos[16];
    for (int i = 0; i < 16; i++) {
        ds[i] = (eng_seq){.row0 = i, .n_tokens = 1, .pos = 2047, .blocks = blocks + i * 128, .n_blocks = 128};
        dpos[i] = 2047;
    }
    eng_batch db = {.n_seqs = 16, .seqs = ds, .n_rows = 16, .tokens = dpos, .positions = dpos};
    eng_tensor dq = eng_tensor_rows(q, 0, 16), dout = eng_tensor_rows(o, 0, 16);
    best = 1e30;
    for (int r = 0; r < 5; r++) {
        uint64_t t0 = clock_ns();
        eng_attention(be, &dout, &dq, kv, 0, &db, (eng_attn_shape){H, hd, hd});
        double t = (double)(clock_ns() - t0) * 1e-9;
        best = t < best ? t : best;
    }
    double bytes = 16.0 * 2048 * D * 2 * 2;
    printf("attention decode 16 rows at context 2048: %.2f ms/layer (%.1f GB/s of K/V)\n", best * 1e3,
           bytes / best / 1e9);
    eng_tensor_free(be, &q), eng_tensor_free(be, &o);
    eng_kv_destroy(be, kv);
    free(blocks), free(pos), free(qv);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    eng_backend *be;
    errbuf eb = {0};
    err e = eng_backend_create("cpu", threads, &be, &eb);
    if (e) {
        fprintf(stderr, "%s\n", eb.msg);
        return 1;
    }
    pool *pl;
    pool_create(threads, &pl);
    printf("%s\n", eng_backend_describe(be));

    size_t elems = FOOTPRINT / 2;
    uint16_t *buf = f16_buffer(elems, 7);
    double probe_gbs = read_probe(pl, buf, FOOTPRINT);
    printf("read probe: %.0f MB in %d threads: %.2f GB/s\n", FOOTPRINT / MB, pool_size(pl), probe_gbs);
    const int64_t shapes[][2] = {{1024, 4096}, {4096, 1024}, {1024, 51200}};
    const int64_t Ts[] = {1, 2, 4, 8, 16};
    printf("decode (f16 weights streamed from DRAM):\n");
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 5; t++) bench_shape(be, buf, elems, shapes[s][0], shapes[s][1], Ts[t], probe_gbs);
    printf("prefill:\n");
    const int64_t Tp[] = {64, 512, 2048};
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < 3; t++) bench_shape(be, buf, elems, shapes[s][0], shapes[s][1], Tp[t], probe_gbs);
    free(buf);
    bench_350m(be, pl, 1);
    bench_350m(be, pl, 4);
    bench_attention(be);
    pool_destroy(pl);
    eng_backend_destroy(be);
    return 0;
}
