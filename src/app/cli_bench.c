/* cli_bench.c - `suggestd bench`: prefill and decode speed, printed beside the memory floor measured in the same
 * run (bytes a decode step must read / the read bandwidth of this machine with the same threads, or on a GPU the
 * measured device-to-device copy bandwidth). Decode is timed at one or more context lengths (--contexts).
 *
 * --shape builds random weights at a real CodeGen shape in memory, so speed can be measured without a download. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cli.h"
#include "clock.h"
#include "fp16.h"
#include "pool.h"
#include "rng.h"
#include "sample.h"

typedef struct shape {
    const char *name;
    int32_t n_layer, n_embd, n_head, rotary_dim;
} shape;

static const shape shapes[] = {
    {"codegen-350M", 20, 1024, 16, 32},
    {"codegen-2B", 32, 2560, 32, 64},
    {"codegen-6B", 33, 4096, 16, 64},
    {"codegen-16B", 34, 6144, 24, 64},
};

/* A model whose tensors live in one heap arena of random values (no file). */
typedef struct synth {
    model m;
    st_tensor *tensors;
    char *names;
    void *arena;
} synth;

static void synth_free(synth *s) {
    xfree(s->m.layers);
    xfree(s->tensors);
    xfree(s->names);
    xfree(s->arena);
}

static int synth_build(synth *s, const shape *sh, st_dtype dt) {
    memset(s, 0, sizeof(*s));
    model_config *c = &s->m.cfg;
    c->n_layer = sh->n_layer;
    c->n_embd = sh->n_embd;
    c->n_head = sh->n_head;
    c->head_dim = sh->n_embd / sh->n_head;
    c->rotary_dim = sh->rotary_dim;
    c->n_inner = 4 * sh->n_embd;
    c->n_positions = 2048;
    c->vocab_size = 51200;
    c->eos_token_id = 50256;
    c->layer_norm_eps = 1e-5f;
    s->m.dtype = dt;
    const int64_t D = c->n_embd, F = c->n_inner, V = c->vocab_size;
    const int nt = 5 + 8 * c->n_layer;
    s->tensors = xcalloc((size_t)nt, sizeof(st_tensor));
    s->names = xcalloc((size_t)nt, 64);
    s->m.layers = xcalloc((size_t)c->n_layer, sizeof(model_layer));
    if (!s->tensors || !s->names || !s->m.layers) return -1;
    int64_t dims[5 + 8 * 64][2];
    int k = 0;
#define T(r, cc) (dims[k][0] = (r), dims[k][1] = (cc), &s->tensors[k++])
    s->m.wte = T(V, D);
    s->m.ln_f_w = T(D, 0);
    s->m.ln_f_b = T(D, 0);
    s->m.lm_head_w = T(V, D);
    s->m.lm_head_b = T(V, 0);
    for (int l = 0; l < c->n_layer; l++) {
        model_layer *L = &s->m.layers[l];
        L->ln_1_w = T(D, 0);
        L->ln_1_b = T(D, 0);
        L->qkv = T(3 * D, D);
        L->out_proj = T(D, D);
        L->fc_in_w = T(F, D);
        L->fc_in_b = T(F, 0);
        L->fc_out_w = T(D, F);
        L->fc_out_b = T(D, 0);
    }
#undef T
    size_t esz = st_dtype_size(dt), total = 0;
    for (int i = 0; i < k; i++) total += (size_t)dims[i][0] * (size_t)(dims[i][1] ? dims[i][1] : 1) * esz;
    s->arena = xaligned_alloc(64, total);
    if (!s->arena) return -1;
    /* Random values from a small table: the data only has to be finite and not denormal. */
    uint16_t tab16[4096];
    float tab32[4096];
    rng r;
    rng_seed(&r, 1);
    for (int i = 0; i < 4096; i++) {
        tab32[i] = (float)((rng_uniform(&r) * 2.0 - 1.0) * 0.05);
        tab16[i] = dt == ST_BF16 ? f32_to_bf16(tab32[i]) : f32_to_fp16(tab32[i]);
    }
    size_t n = total / esz;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    if (dt == ST_F32)
        for (size_t i = 0; i < n; i++) x ^= x << 13, x ^= x >> 7, x ^= x << 17, ((float *)s->arena)[i] = tab32[x & 4095];
    else
        for (size_t i = 0; i < n; i++)
            x ^= x << 13, x ^= x >> 7, x ^= x << 17, ((uint16_t *)s->arena)[i] = tab16[x & 4095];
    size_t off = 0;
    for (int i = 0; i < k; i++) {
        st_tensor *t = &s->tensors[i];
        snprintf(s->names + 64 * i, 64, "t%d", i);
        t->name = s->names + 64 * i;
        t->dtype = dt;
        t->n_dims = dims[i][1] ? 2 : 1;
        t->shape[0] = dims[i][0];
        t->shape[1] = dims[i][1];
        t->nbytes = (size_t)dims[i][0] * (size_t)(dims[i][1] ? dims[i][1] : 1) * esz;
        t->data = (char *)s->arena + off;
        off += t->nbytes;
    }
    return 0;
}

/* Read-bandwidth probe: every thread sums its slice of a buffer; best of several passes. */
typedef struct probe_ctx {
    const uint64_t *buf;
    size_t n;
    uint64_t sink[64];
} probe_ctx;

static void probe_fn(void *vctx, int ith, int nth) {
    probe_ctx *p = vctx;
    long lo, hi;
    pool_split((long)(p->n / 8), ith, nth, &lo, &hi);
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (long i = lo * 8; i < hi * 8; i += 8) {
        const uint64_t *q = p->buf + i;
        a0 ^= q[0], a1 ^= q[1], a2 ^= q[2], a3 ^= q[3], a4 ^= q[4], a5 ^= q[5], a6 ^= q[6], a7 ^= q[7];
    }
    p->sink[ith % 64] = a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
}

static double read_bandwidth(int threads, size_t bytes) {
    pool *pl = NULL;
    if (pool_create(threads, &pl) != ERR_OK) return 0;
    uint64_t *buf = xaligned_alloc(64, bytes);
    if (!buf) {
        pool_destroy(pl);
        return 0;
    }
    memset(buf, 1, bytes);
    probe_ctx ctx = {buf, bytes / 8, {0}};
    double best = 0;
    for (int it = 0; it < 5; it++) {
        uint64_t t0 = clock_ns();
        pool_run(pl, probe_fn, &ctx);
        double gbs = (double)bytes / (double)(clock_ns() - t0);
        if (gbs > best) best = gbs;
    }
    xfree(buf);
    pool_destroy(pl);
    return best; /* GB/s */
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Parses "128,1024,2048" into ctx[] (at most 8, each in [lo, 2048]); returns the count or -1. */
static int parse_contexts(const char *v, long lo, long *ctx) {
    int n = 0;
    const char *p = v;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < lo || x > 2048 || n == 8 || (*end && *end != ',')) return -1;
        ctx[n++] = x;
        p = *end ? end + 1 : end;
    }
    return n;
}

int cli_bench(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},         {"shape", required_argument, 0, 's'},
        {"dtype", required_argument, 0, 'd'},         {"backend", required_argument, 0, 'b'},
        {"device", required_argument, 0, 'b'},        {"threads", required_argument, 0, 'j'},
        {"prompt-tokens", required_argument, 0, 'p'}, {"decode-tokens", required_argument, 0, 'n'},
        {"contexts", required_argument, 0, 'c'},      {"prefill-chunk", required_argument, 0, 'k'},
        {"batch", required_argument, 0, 'B'},         {"help", no_argument, 0, 'h'},
        {"host-logits", no_argument, 0, 'L'},         {0, 0, 0, 0}};
    const char *dir = NULL, *shape_name = NULL, *backend = "cpu", *dtype = NULL, *ctx_arg = NULL;
    long threads = 0, n_prompt = 512, n_decode = 32, chunk = 512, ctx[8], n_batch = 1;
    int n_ctx_list = 0, host_logits = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 's': shape_name = optarg; break;
        case 'd': dtype = optarg; break;
        case 'b': backend = optarg; break;
        case 'c': ctx_arg = optarg; break;
        case 'j':
            if (cli_parse_int("bench", "threads", optarg, 0, 1024, &threads)) return 2;
            break;
        case 'p':
            if (cli_parse_int("bench", "prompt-tokens", optarg, 1, 2048, &n_prompt)) return 2;
            break;
        case 'n':
            if (cli_parse_int("bench", "decode-tokens", optarg, 1, 1000, &n_decode)) return 2;
            break;
        case 'k':
            if (cli_parse_int("bench", "prefill-chunk", optarg, 1, 2048, &chunk)) return 2;
            break;
        case 'B':
            if (cli_parse_int("bench", "batch", optarg, 1, 256, &n_batch)) return 2;
            break;
        case 'L': host_logits = 1; break;
        case 'h':
            printf("usage: suggestd bench (--model DIR | --shape codegen-350M|codegen-2B|codegen-6B|codegen-16B)\n"
                   "                      [--dtype auto|int8|f16|bf16|f32] [--backend cpu|ref|cuda[:N]] [--threads N]\n"
                   "                      [--prompt-tokens N (512)] [--decode-tokens N (32)]\n"
                   "                      [--contexts C1,C2,.. (prompt-tokens + decode-tokens)] [--prefill-chunk N (512)]\n"
                   "                      [--batch B (1)] [--host-logits]\n\n"
                   "Prints prefill tokens/s and decode ms/token beside the memory floor measured in the same run:\n"
                   "the bytes one decode step must read divided by this machine's read bandwidth (same threads), or\n"
                   "on a GPU by the measured device-to-device copy bandwidth (bytes read + written).\n"
                   "Decode at context C times --decode-tokens steps at positions C-decode-tokens .. C-1.\n"
                   "--batch B decodes B sequences in each step (one row each, every one with its own KV blocks at\n"
                   "context C, as a server batches B editors); the floor then adds B sequences' KV reads.\n"
                   "--shape uses random weights at the real CodeGen shape, of --dtype f16 (default), bf16 or f32;\n"
                   "--dtype int8 quantizes its f16 weights at load. With --model: auto (default, the checkpoint's\n"
                   "dtype) or int8 (matmul weights quantized at load).\n"
                   "A decode step is what the server's step is: the forward pass, then on a backend that summarizes\n"
                   "logits on its device (CUDA) each row's top 64 and softmax sums at temperature 0.2 copied back\n"
                   "(sample.h); elsewhere, or with --host-logits, the whole f32 logits rows copied back.\n"
                   "--device is the same as --backend.\n");
            return 0;
        default: return 2;
        }
    }
    if (!!dir == !!shape_name || optind < argc) {
        fprintf(stderr, "suggestd bench: give exactly one of --model DIR or --shape NAME (see --help)\n");
        return 2;
    }
    if (ctx_arg) {
        n_ctx_list = parse_contexts(ctx_arg, n_decode, ctx);
        if (n_ctx_list <= 0) {
            fprintf(stderr, "suggestd bench: --contexts expects up to 8 comma-separated lengths from --decode-tokens "
                            "(%ld) to 2048, got '%s'\n", n_decode, ctx_arg);
            return 2;
        }
    } else {
        if (n_prompt + n_decode > 2048) {
            fprintf(stderr, "suggestd bench: --prompt-tokens + --decode-tokens must fit the 2048-token context\n");
            return 2;
        }
        ctx[0] = n_prompt + n_decode;
        n_ctx_list = 1;
    }
    long max_ctx = n_prompt;
    for (int i = 0; i < n_ctx_list; i++) max_ctx = ctx[i] > max_ctx ? ctx[i] : max_ctx;
    synth sy;
    memset(&sy, 0, sizeof(sy));
    model *m = NULL;
    const char *label = dir;
    int rc = 1;
    if (shape_name) {
        const shape *sh = NULL;
        for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
            if (!strcmp(shapes[i].name, shape_name) || !strcmp(shapes[i].name + 8, shape_name)) sh = &shapes[i];
        if (!sh) {
            fprintf(stderr, "suggestd bench: unknown shape '%s' (codegen-350M, codegen-2B, codegen-6B, codegen-16B)\n",
                    shape_name);
            return 2;
        }
        if (!dtype) dtype = "f16";
        st_dtype dt = !strcmp(dtype, "f16") || !strcmp(dtype, "int8") ? ST_F16 : !strcmp(dtype, "bf16") ? ST_BF16
                    : !strcmp(dtype, "f32") ? ST_F32 : ST_DTYPE_COUNT;
        if (dt == ST_DTYPE_COUNT) {
            fprintf(stderr, "suggestd bench: --dtype must be f16, bf16, f32 or int8 with --shape\n");
            return 2;
        }
        if (synth_build(&sy, sh, dt)) {
            fprintf(stderr, "suggestd bench: not enough memory for random %s weights\n", sh->name);
            synth_free(&sy);
            return 1;
        }
        m = &sy.m;
        label = sh->name;
    }
    cli_runtime rt = {0};
    errbuf eb = {0};
    /* int8 is a load-time choice of the engine; the other names only pick --shape's random weights */
    eng_model_opts mo = {.max_rows = (int32_t)(chunk > n_batch ? chunk : n_batch), .kv_dtype = -1,
                         .n_kv_blocks = (int32_t)(n_batch * ((max_ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK)),
                         .dtype = dtype && (dir || !strcmp(dtype, "int8")) ? dtype : "auto"};
    if (dir) {
        if (cli_runtime_open(&rt, dir, backend, (int)threads, &mo)) return 1;
        m = rt.m;
    } else {
        rt.m = NULL;
        if (eng_backend_create(backend, (int)threads, &rt.be, &eb) != ERR_OK ||
            eng_model_create(rt.be, m, &mo, &rt.em, &eb) != ERR_OK) {
            fprintf(stderr, "suggestd bench: %s\n", eb.msg);
            goto out;
        }
    }
    const model_config *cfg = &m->cfg;
    const int64_t D = cfg->n_embd, V = cfg->vocab_size;
    /* the weights as placed: with int8, the quantized matmul weights and their scales */
    uint64_t wbytes = eng_model_weight_bytes(rt.em);
    const char *wname = eng_model_matmul_dtype(rt.em) == ENG_Q8 ? "int8" : st_dtype_name(m->dtype);
    if (shape_name && eng_backend_copies_weights(rt.be)) { /* the backend has its own copy: free the host one */
        xfree(sy.arena);
        sy.arena = NULL;
    }
    size_t esz = st_dtype_size(m->dtype);
    /* a decode step reads every weight except the embedding table (one row of it) */
    uint64_t step_bytes = wbytes - (uint64_t)V * D * esz + (uint64_t)D * esz;

    int32_t n_pos = (int32_t)max_ctx;
    int32_t n_blocks = (n_pos + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
    const int32_t B = (int32_t)n_batch;
    /* sequence b's blocks: blocks + b * n_blocks, ids b * n_blocks .. (b + 1) * n_blocks - 1 */
    int32_t *blocks = xmalloc_array((size_t)B * (size_t)n_blocks, sizeof(int32_t));
    int32_t *toks = xmalloc_array((size_t)n_pos, sizeof(int32_t));
    int32_t *pos = xmalloc_array((size_t)n_pos, sizeof(int32_t));
    float *logits = xmalloc_array((size_t)B * (size_t)V, sizeof(float));
    double *ms = xmalloc_array((size_t)n_decode, sizeof(double));
    double *issue = xmalloc_array((size_t)n_decode, sizeof(double));
    eng_seq *seqs = xmalloc_array((size_t)B, sizeof(eng_seq));
    int32_t *btoks = xmalloc_array((size_t)B, sizeof(int32_t)), *bpos = xmalloc_array((size_t)B, sizeof(int32_t));
    int32_t *lrows = xmalloc_array((size_t)B, sizeof(int32_t));
    samp_top *tops = xmalloc_array((size_t)B, sizeof(samp_top));
    float *inv_t = xmalloc_array((size_t)B, sizeof(float));
    if (!blocks || !toks || !pos || !logits || !ms || !issue || !seqs || !btoks || !bpos || !lrows || !tops || !inv_t) {
        fprintf(stderr, "suggestd bench: out of memory\n");
        goto out2;
    }
    for (int32_t i = 0; i < B * n_blocks; i++) blocks[i] = i;
    for (int32_t i = 0; i < n_pos; i++) toks[i] = (int32_t)((i * 7919) % 50000), pos[i] = i;

    const int gpu = eng_backend_copies_weights(rt.be);
    double bw = 0;
    const char *bw_what = "device-to-device copy of 1 GiB, bytes read + written";
    if (eng_backend_copy_bandwidth(rt.be, (size_t)1 << 30, &bw) != ERR_OK) {
        bw = read_bandwidth((int)threads, (size_t)1 << 30);
        bw_what = "read, 1 GiB probe, same thread count";
    }
    size_t mw, mkv, mws;
    eng_model_memory(rt.em, &mw, &mkv, &mws);

    /* Forward over positions [from, to) in chunks, logits for the last row only when `last`. */
#define RUN_RANGE(blk, from, to, last)                                                                               \
    for (int32_t done_ = (from); done_ < (to);) {                                                                    \
        int32_t n_ = (int32_t)((to) - done_ < chunk ? (to) - done_ : chunk);                                         \
        eng_seq seq_ = {0, n_, done_, (blk), n_blocks};                                                              \
        eng_batch b_ = {1, &seq_, n_, toks + done_, pos + done_};                                                    \
        int32_t lr_ = n_ - 1;                                                                                        \
        if (eng_model_forward(rt.em, &b_, &lr_, (last) && done_ + n_ == (to), logits, &eb) != ERR_OK) {              \
            fprintf(stderr, "suggestd bench: %s\n", eb.msg);                                                         \
            goto out2;                                                                                               \
        }                                                                                                            \
        done_ += n_;                                                                                                 \
    }

    /* prefill: on a GPU one untimed warm-up (library setup, first-touch) and the median of 3; on a CPU one run */
    const int reps = gpu ? 3 : 1;
    double pre[3];
    if (gpu) RUN_RANGE(blocks, 0, (int32_t)n_prompt, 1);
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = clock_ns();
        RUN_RANGE(blocks, 0, (int32_t)n_prompt, 1);
        pre[r] = (double)(clock_ns() - t0) / 1e9;
    }
    qsort(pre, (size_t)reps, sizeof(double), cmp_double);
    double prefill_s = pre[reps / 2];
    /* the rest of the KV cache up to the longest context, and the other sequences' whole caches (untimed) */
    RUN_RANGE(blocks, (int32_t)n_prompt, n_pos, 0);
    for (int32_t b = 1; b < B; b++) RUN_RANGE(blocks + (size_t)b * n_blocks, 0, n_pos, 0);

    printf("suggestd bench: %s (%s%s weights), %s\n", label, dir ? "" : "random ", wname,
           eng_backend_describe(rt.be));
    printf("  weights            %10.1f MB  (read per decode token: %.1f MB)\n", (double)wbytes / 1e6,
           (double)step_bytes / 1e6);
    printf("  backend memory     %10.1f MB weights, %.1f MB KV cache, %.1f MB workspace\n", (double)mw / 1e6,
           (double)mkv / 1e6, (double)mws / 1e6);
    printf("  bandwidth          %10.2f GB/s (%s)\n", bw, bw_what);
    printf("  prefill            %10.1f tokens/s (%ld tokens in %.2f ms, chunks of %ld%s)\n",
           (double)n_prompt / prefill_s, n_prompt, prefill_s * 1e3, chunk, gpu ? ", median of 3" : "");
    printf("RESULT %s %s %s prefill tokens=%ld ms=%.3f\n", label, wname, eng_backend_name(rt.be),
           n_prompt, prefill_s * 1e3);
    size_t kv_elt = eng_kv_bytes(eng_model_kv(rt.em)) /
                    ((size_t)cfg->n_layer * 2 * (size_t)B * (size_t)n_blocks * ENG_KV_BLOCK * (size_t)D);
    /* decode steps sample as the server does (sched_step.c): summaries on the device where it makes them */
    const int top = !host_logits && eng_model_logits_on_device(rt.em);
    for (int32_t b = 0; b < B; b++) inv_t[b] = 1.0f / 0.2f;
    printf("  decode logits      %s\n", top ? "top-64 summaries made on the device (as the server samples)"
                                            : "whole f32 rows copied to the host");
    for (int ci = 0; ci < n_ctx_list; ci++) {
        const int32_t first = (int32_t)(ctx[ci] - n_decode);
        /* one step: every sequence's row at position p (with --batch 1 the plain batch-1 decode) */
#define DECODE_STEP(p)                                                                                               \
    do {                                                                                                             \
        for (int32_t b_ = 0; b_ < B; b_++) {                                                                         \
            seqs[b_] = (eng_seq){b_, 1, (p), blocks + (size_t)b_ * n_blocks, n_blocks};                              \
            btoks[b_] = toks[(p)], bpos[b_] = (p), lrows[b_] = b_;                                                   \
        }                                                                                                            \
        eng_batch b_ = {B, seqs, B, btoks, bpos};                                                                    \
        err rc_ = eng_model_forward(rt.em, &b_, lrows, B, top ? NULL : logits, &eb);                                 \
        t_mid = clock_ns();                                                                                          \
        if (rc_ != ERR_OK || (top && eng_model_logits_top(rt.em, (int32_t)V, inv_t, tops, &eb) != ERR_OK)) {         \
            fprintf(stderr, "suggestd bench: %s\n", eb.msg);                                                         \
            goto out2;                                                                                               \
        }                                                                                                            \
    } while (0)
        uint64_t t_mid = 0;
        if (gpu) DECODE_STEP(first); /* warm-up of this step shape (its graph is recorded here) */
        for (int32_t i = 0; i < n_decode; i++) {
            uint64_t s0 = clock_ns();
            DECODE_STEP(first + i);
            ms[i] = (double)(clock_ns() - s0) / 1e6;
            issue[i] = (double)(t_mid - s0) / 1e6;
        }
#undef DECODE_STEP
        qsort(ms, (size_t)n_decode, sizeof(double), cmp_double);
        qsort(issue, (size_t)n_decode, sizeof(double), cmp_double);
        double med = ms[n_decode / 2];
        double kv_read = (double)B * 2.0 * cfg->n_layer * (double)D * (double)kv_elt * ((double)first + n_decode / 2.0);
        double floor_ms = ((double)step_bytes + kv_read) / (bw * 1e6);
        if (B == 1)
            printf("  decode             %10.3f ms/token (context %ld: median of %ld at positions %d..%ld; best %.3f)\n",
                   med, ctx[ci], n_decode, first, ctx[ci] - 1, ms[0]);
        else
            printf("  decode batch %-4d  %10.3f ms/step, %.0f tokens/s (context %ld: median of %ld steps at positions "
                   "%d..%ld; best %.3f)\n", B, med, B * 1e3 / med, ctx[ci], n_decode, first, ctx[ci] - 1, ms[0]);
        if (top) /* the forward call only issues the step: the device idles through it unless it is still busy */
            printf("  forward call       %10.3f ms (median host time issuing a step, which the device waits for)\n",
                   issue[n_decode / 2]);
        printf("  memory floor       %10.3f ms/%s (weights + KV %.1f MB)\n", floor_ms, B == 1 ? "token" : "step",
               kv_read / 1e6);
        printf("  decode / floor     %10.2fx\n", med / floor_ms);
        char bfield[32] = "";
        if (B > 1) snprintf(bfield, sizeof(bfield), " batch=%d", B);
        printf("RESULT %s %s %s decode ctx=%ld%s ms=%.4f floor_ms=%.4f ratio=%.3f\n", label, wname,
               eng_backend_name(rt.be), ctx[ci], bfield, med, floor_ms, med / floor_ms);
    }
#undef RUN_RANGE
    rc = 0;
out2:
    xfree(blocks);
    xfree(toks);
    xfree(pos);
    xfree(logits);
    xfree(ms);
    xfree(issue);
    xfree(seqs);
    xfree(btoks);
    xfree(bpos);
    xfree(lrows);
    xfree(tops);
    xfree(inv_t);
out:
    if (dir) cli_runtime_close(&rt);
    else {
        eng_model_destroy(rt.em);
        eng_backend_destroy(rt.be);
        synth_free(&sy);
    }
    return rc;
}
