/* cpu.c - the optimized CPU backend: f32 activations, f32/f16/bf16 weights borrowed from the checkpoint's mmap
 * (or int8 matmul weights with per-row scales, ENG_Q8, quantized at load by forward.c),
 * a thread pool, and SIMD kernels chosen when the backend is created.
 *
 * DESIGN
 * - This file owns memory, threads and the split of each op into per-thread work; the arithmetic lives in the
 *   kernel table (cpu_kern.h compiled per instruction set). The level is the best the CPU supports, or the one
 *   named by SUGGESTD_CPU_SIMD=scalar|avx2|avx512 (tests use it to run every path); the choice is stored in the
 *   backend, so nothing here is global.
 * - Matmul splits the weight rows (N) across threads: each weight row is read by one thread, once per call.
 * - Attention is split into (sequence, group of up to CPU_ATTN_ROWS query rows, group of heads) items handed out
 *   through an atomic counter, latest rows first, because causal rows cost more the later they are.
 * - Small element-wise ops run on the calling thread: a pool dispatch costs more than they do.
 * - Per-thread scratch (widened weight blocks, attention scores, RoPE tables) is grown before a dispatch, so
 *   workers never allocate and an allocation failure is an ERR_NOMEM from the op. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#ifdef SUGGESTD_CPU_X86
#include <cpuid.h>
#endif
#include "cpu_impl.h"
#include "eng_impl.h"
#include "pool.h"

/* Below this many multiply-adds (or elements) an op runs on the calling thread. */
#define CPU_PAR_MIN_WORK (1 << 16)

typedef struct cpu_backend {
    eng_backend_base base;
    const cpu__kernels *k;
    pool *pool;
    int n_threads;
    char desc[64];
    float **scratch;       /* [n_threads] buffers of scratch_floats floats, 64-byte aligned */
    size_t scratch_floats;
    float *vec;            /* calling-thread buffer: f32 copies of small weight vectors */
    size_t vec_floats;
    int64_t *index;        /* calling-thread buffer: attention work offsets, kv_store row -> sequence */
    size_t index_cap;
} cpu_backend;

typedef struct cpu_kv {
    eng_kv_base base;
    char *k, *v;        /* [n_layer][n_blocks][ENG_KV_BLOCK][d_model] of base.dtype */
    size_t layer_bytes; /* bytes of one layer of k (or v) */
} cpu_kv;

#define CB(be) ((cpu_backend *)(be))
#define ESZ(dt) ((dt) == ENG_F32 ? (size_t)4 : (dt) == ENG_Q8 ? (size_t)1 : (size_t)2)
#define ROW(t, r) ((char *)(t)->data + (size_t)((r) * (t)->stride) * ESZ((t)->dtype))

/* ---- creation and scratch ------------------------------------------------------------------------------------ */

static err pick_kernels(const cpu__kernels **out, errbuf *eb) {
    int have_avx2 = 0, have_avx512 = 0;
#ifdef SUGGESTD_CPU_X86
    __builtin_cpu_init();
    /* clang 14 does not know "f16c" for __builtin_cpu_supports: read CPUID.1:ECX bit 29 ourselves */
    unsigned a = 0, b = 0, c = 0, d = 0;
    int have_f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && have_f16c;
    have_avx512 = have_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    const char *want = getenv("SUGGESTD_CPU_SIMD");
    *out = &cpu__kernels_scalar;
    if (!want || !*want) {
#ifdef SUGGESTD_CPU_X86
        if (have_avx512)
            *out = &cpu__kernels_avx512;
        else if (have_avx2)
            *out = &cpu__kernels_avx2;
#endif
        return ERR_OK;
    }
    if (!strcmp(want, "scalar")) return ERR_OK;
    if (!strcmp(want, "avx2") || !strcmp(want, "avx512")) {
        int is512 = want[3] == '5';
        if (!(is512 ? have_avx512 : have_avx2))
            return errbuf_set(eb, ERR_UNSUPPORTED, "SUGGESTD_CPU_SIMD=%s: this CPU (or build) lacks %s", want,
                              is512 ? "AVX-512 F/BW/VL/DQ" : "AVX2+FMA+F16C");
#ifdef SUGGESTD_CPU_X86
        *out = is512 ? &cpu__kernels_avx512 : &cpu__kernels_avx2;
#endif
        return ERR_OK;
    }
    return errbuf_set(eb, ERR_INVALID, "SUGGESTD_CPU_SIMD=%s: expected scalar, avx2 or avx512", want);
}

static void cpu_destroy(eng_backend *be) {
    cpu_backend *b = CB(be);
    if (!b) return;
    pool_destroy(b->pool);
    if (b->scratch)
        for (int i = 0; i < b->n_threads; i++) xfree(b->scratch[i]);
    xfree(b->scratch);
    xfree(b->vec);
    xfree(b->index);
    xfree(b);
}

static err cpu_create(int n_threads, eng_backend **out, errbuf *eb) {
    const cpu__kernels *k;
    err e = pick_kernels(&k, eb);
    if (e) return e;
    cpu_backend *b = xcalloc(1, sizeof(*b));
    if (!b) return errbuf_set(eb, ERR_NOMEM, "cpu backend: out of memory");
    b->base.ops = &cpu__backend_ops;
    b->k = k;
    if (pool_create(n_threads, &b->pool) != ERR_OK) {
        xfree(b);
        return errbuf_set(eb, ERR_NOMEM, "cpu backend: cannot start %d threads", n_threads);
    }
    b->n_threads = pool_size(b->pool);
    b->scratch = xcalloc((size_t)b->n_threads, sizeof(float *));
    if (!b->scratch) {
        cpu_destroy((eng_backend *)b);
        return errbuf_set(eb, ERR_NOMEM, "cpu backend: out of memory");
    }
    snprintf(b->desc, sizeof(b->desc), "cpu: %d thread%s, %s", b->n_threads, b->n_threads == 1 ? "" : "s",
             k->name);
    *out = (eng_backend *)b;
    return ERR_OK;
}

static const char *cpu_describe(const eng_backend *be) { return ((const cpu_backend *)be)->desc; }

/* Every thread gets at least `floats` floats of scratch. */
static err scratch_reserve(cpu_backend *b, size_t floats) {
    if (floats <= b->scratch_floats) return ERR_OK;
    for (int i = 0; i < b->n_threads; i++) {
        xfree(b->scratch[i]);
        b->scratch[i] = NULL;
    }
    b->scratch_floats = 0;
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    for (int i = 0; i < b->n_threads; i++)
        if (!(b->scratch[i] = xaligned_alloc(64, bytes))) return ERR_NOMEM;
    b->scratch_floats = floats;
    return ERR_OK;
}

static err vec_reserve(cpu_backend *b, size_t floats) {
    if (floats <= b->vec_floats) return ERR_OK;
    float *v = xaligned_alloc(64, floats * sizeof(float));
    if (!v) return ERR_NOMEM;
    xfree(b->vec);
    b->vec = v;
    b->vec_floats = floats;
    return ERR_OK;
}

static err index_reserve(cpu_backend *b, size_t n) {
    if (n <= b->index_cap) return ERR_OK;
    int64_t *p = xmalloc_array(n, sizeof(int64_t));
    if (!p) return ERR_NOMEM;
    xfree(b->index);
    b->index = p;
    b->index_cap = n;
    return ERR_OK;
}

/* A row vector ([1, n] tensor) as f32: the tensor itself when it is f32, else a converted copy at b->vec + off. */
static const float *vec_f32(cpu_backend *b, const eng_tensor *t, size_t off) {
    if (t->dtype == ENG_F32) return t->data;
    b->k->to_f32(b->vec + off, t->data, t->dtype, t->cols);
    return b->vec + off;
}

static void run(cpu_backend *b, pool_fn fn, void *ctx, int64_t work) {
    if (work < CPU_PAR_MIN_WORK || b->n_threads == 1)
        fn(ctx, 0, 1);
    else
        pool_run(b->pool, fn, ctx);
}

/* ---- memory -------------------------------------------------------------------------------------------------- */

static err cpu_tensor_alloc(eng_backend *be, eng_dtype dtype, int64_t rows, int64_t cols, eng_tensor *out) {
    (void)be;
    size_t esz = ESZ(dtype);
    if (cols && (uint64_t)rows > SIZE_MAX / 2 / esz / (uint64_t)cols) return ERR_NOMEM;
    size_t bytes = ((size_t)rows * (size_t)cols * esz + 63) & ~(size_t)63;
    void *p = xaligned_alloc(64, bytes ? bytes : 64);
    if (!p) return ERR_NOMEM;
    *out = (eng_tensor){.data = p, .dtype = dtype, .rows = rows, .cols = cols, .stride = cols};
    return ERR_OK;
}

static void cpu_tensor_free(eng_backend *be, eng_tensor *t) {
    (void)be;
    xfree(t->data);
}

/* Weights are borrowed: the caller keeps host memory alive until weight_free. */
static err cpu_weight_from_host(eng_backend *be, const void *host, eng_dtype dtype, int64_t rows, int64_t cols,
                                eng_tensor *out) {
    (void)be;
    *out = (eng_tensor){.data = (void *)host, .dtype = dtype, .rows = rows, .cols = cols, .stride = cols};
    return ERR_OK;
}

static void cpu_weight_free(eng_backend *be, eng_tensor *t) { (void)be, (void)t; }

static err cpu_read_f32(eng_backend *be, const eng_tensor *t, float *dst) {
    for (int64_t r = 0; r < t->rows; r++) CB(be)->k->to_f32(dst + r * t->cols, ROW(t, r), t->dtype, t->cols);
    return ERR_OK;
}

static err cpu_write_f32(eng_backend *be, eng_tensor *t, const float *src) {
    for (int64_t r = 0; r < t->rows; r++) CB(be)->k->from_f32(ROW(t, r), t->dtype, src + r * t->cols, t->cols);
    return ERR_OK;
}

/* ---- row-wise ops -------------------------------------------------------------------------------------------- */

typedef struct rows_job {
    cpu_backend *b;
    eng_tensor *y;
    const eng_tensor *x;
    const int32_t *ids; /* embed: tokens; rope: positions */
    const float *w, *bias;
    float eps;
    eng_attn_shape shape;
} rows_job;

static err need_f32(const eng_tensor *t) { return t->dtype == ENG_F32 ? ERR_OK : ERR_UNSUPPORTED; }

static void embed_work(void *ctx, int ith, int nth) {
    rows_job *j = ctx;
    long lo, hi;
    pool_split(j->y->rows, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++)
        j->b->k->to_f32((float *)ROW(j->y, r), ROW(j->x, j->ids[r]), j->x->dtype, j->x->cols);
}

static err cpu_embed(eng_backend *be, eng_tensor *y, const eng_tensor *wte, const int32_t *tokens, int32_t n_rows) {
    if (need_f32(y)) return ERR_UNSUPPORTED;
    eng_tensor yv = eng_tensor_rows(*y, 0, n_rows);
    rows_job j = {.b = CB(be), .y = &yv, .x = wte, .ids = tokens};
    run(CB(be), embed_work, &j, (int64_t)n_rows * wte->cols);
    return ERR_OK;
}

static void layernorm_work(void *ctx, int ith, int nth) {
    rows_job *j = ctx;
    long lo, hi;
    pool_split(j->y->rows, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++)
        j->b->k->layernorm_row((float *)ROW(j->y, r), (const float *)ROW(j->x, r), j->w, j->bias, j->x->cols,
                               j->eps);
}

static err cpu_layernorm(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                         const eng_tensor *b, float eps) {
    cpu_backend *cb = CB(be);
    if (need_f32(y) || need_f32(x)) return ERR_UNSUPPORTED;
    if (vec_reserve(cb, 2 * (size_t)x->cols)) return ERR_NOMEM;
    rows_job j = {.b = cb, .y = y, .x = x, .w = vec_f32(cb, w, 0), .bias = vec_f32(cb, b, (size_t)x->cols),
                  .eps = eps};
    run(cb, layernorm_work, &j, x->rows * x->cols * 4);
    return ERR_OK;
}

static void gelu_work(void *ctx, int ith, int nth) {
    rows_job *j = ctx;
    long lo, hi;
    pool_split(j->y->rows, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++) j->b->k->gelu((float *)ROW(j->y, r), j->y->cols);
}

static err cpu_gelu(eng_backend *be, eng_tensor *x) {
    if (need_f32(x)) return ERR_UNSUPPORTED;
    rows_job j = {.b = CB(be), .y = x};
    run(CB(be), gelu_work, &j, x->rows * x->cols * 16);
    return ERR_OK;
}

static void add_work(void *ctx, int ith, int nth) {
    rows_job *j = ctx;
    long lo, hi;
    pool_split(j->y->rows, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++) j->b->k->add((float *)ROW(j->y, r), (const float *)ROW(j->x, r), j->y->cols);
}

static err cpu_add(eng_backend *be, eng_tensor *y, const eng_tensor *x) {
    if (need_f32(y) || need_f32(x)) return ERR_UNSUPPORTED;
    rows_job j = {.b = CB(be), .y = y, .x = x};
    run(CB(be), add_work, &j, y->rows * y->cols);
    return ERR_OK;
}

/* Each row computes its own cos/sin table (rotary_dim/2 sinf+cosf, small next to n_head heads of work), so no
 * table outlives a call. */
static void rope_work(void *ctx, int ith, int nth) {
    rows_job *j = ctx;
    const int32_t rd = j->shape.rotary_dim;
    float *cs = j->b->scratch[ith], *sn = cs + rd;
    long lo, hi;
    pool_split(j->y->rows, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++) {
        for (int32_t i = 0; i < rd / 2; i++) {
            float a = cpu__rope_angle(j->ids[r], i, rd), c = cosf(a), s = sinf(a);
            cs[2 * i] = cs[2 * i + 1] = c;
            sn[2 * i] = -s;
            sn[2 * i + 1] = s;
        }
        j->b->k->rope_row((float *)ROW(j->y, r), j->shape.n_head, j->shape.head_dim, rd, cs, sn);
    }
}

static err cpu_rope(eng_backend *be, eng_tensor *x, const int32_t *positions, eng_attn_shape shape) {
    cpu_backend *b = CB(be);
    if (need_f32(x)) return ERR_UNSUPPORTED;
    for (int64_t r = 0; r < x->rows; r++)
        if (positions[r] < 0) return ERR_INVALID;
    if (shape.rotary_dim == 0) return ERR_OK;
    if (scratch_reserve(b, 2 * (size_t)shape.rotary_dim)) return ERR_NOMEM;
    rows_job j = {.b = b, .y = x, .ids = positions, .shape = shape};
    run(b, rope_work, &j, x->rows * (x->cols + shape.rotary_dim * 32));
    return ERR_OK;
}

/* ---- matmul -------------------------------------------------------------------------------------------------- */

typedef struct mm_job {
    cpu_backend *b;
    cpu__matmul m;
    int64_t unit; /* weight rows are split across threads in multiples of this */
} mm_job;

static void mm_work(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    long lo, hi;
    pool_split((long)((j->m.N + j->unit - 1) / j->unit), ith, nth, &lo, &hi);
    int64_t n_lo = lo * j->unit, n_hi = hi * j->unit < j->m.N ? hi * j->unit : j->m.N;
    if (n_lo < n_hi) j->b->k->matmul(&j->m, n_lo, n_hi, j->b->scratch[ith]);
}

static err cpu_matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                      const eng_tensor *bias, int accumulate) {
    cpu_backend *b = CB(be);
    if (need_f32(y) || need_f32(x)) return ERR_UNSUPPORTED;
    const int packed = cpu__mm_packed(x->rows, w->cols);
    if (packed && scratch_reserve(b, CPU_MM_WBUF_FLOATS)) return ERR_NOMEM;
    if (bias && bias->dtype != ENG_F32 && vec_reserve(b, (size_t)bias->cols)) return ERR_NOMEM;
    mm_job j = {
        .b = b,
        .m = {.y = y->data, .ys = y->stride, .x = x->data, .xs = x->stride, .w = w->data, .ws = w->stride,
              .wdt = w->dtype, .wscale = w->dtype == ENG_Q8 ? eng_q8_scales(w) : NULL, .bias = bias ? vec_f32(b, bias, 0) : NULL, .T = x->rows, .N = w->rows,
              .K = w->cols, .accumulate = accumulate},
        .unit = packed ? CPU_MM_NB : 16,
    };
    /* Enough pieces for every thread (N = 1024 on 16 threads), in multiples of any level's packed panel (32). */
    while (packed && j.unit > 32 && j.m.N / j.unit < 2 * b->n_threads) j.unit /= 2;
    run(b, mm_work, &j, x->rows * w->rows * w->cols);
    return ERR_OK;
}

/* ---- KV cache and attention ------------------------------------------------------------------------------------ */

static err cpu_kv_create(eng_backend *be, int32_t n_layer, int32_t d_model, int32_t n_blocks, eng_dtype dtype,
                         eng_kv **out) {
    (void)be;
    uint64_t layer = (uint64_t)n_blocks * ENG_KV_BLOCK * (uint64_t)d_model * ESZ(dtype);
    if (layer > SIZE_MAX / 4 / (uint64_t)n_layer) return ERR_NOMEM;
    cpu_kv *kv = xcalloc(1, sizeof(*kv));
    if (!kv) return ERR_NOMEM;
    kv->base = (eng_kv_base){.n_layer = n_layer, .d_model = d_model, .n_blocks = n_blocks, .dtype = dtype,
                             .bytes = 2 * (size_t)layer * (size_t)n_layer};
    kv->layer_bytes = (size_t)layer;
    kv->k = xaligned_alloc(64, kv->layer_bytes * (size_t)n_layer);
    kv->v = xaligned_alloc(64, kv->layer_bytes * (size_t)n_layer);
    if (!kv->k || !kv->v) {
        xfree(kv->k);
        xfree(kv->v);
        xfree(kv);
        return ERR_NOMEM;
    }
    /* Zeroed so a tile that reads past a sequence's last position (then discards it) never meets NaN bits. */
    memset(kv->k, 0, kv->layer_bytes * (size_t)n_layer);
    memset(kv->v, 0, kv->layer_bytes * (size_t)n_layer);
    *out = (eng_kv *)kv;
    return ERR_OK;
}

static void cpu_kv_destroy(eng_backend *be, eng_kv *kv_) {
    (void)be;
    cpu_kv *kv = (cpu_kv *)kv_;
    xfree(kv->k);
    xfree(kv->v);
    xfree(kv);
}

typedef struct kv_job {
    cpu_backend *b;
    cpu_kv *kv;
    int32_t layer;
    const eng_tensor *k, *v;
    const eng_batch *batch;
    const int64_t *row_seq;
} kv_job;

static void kv_store_work(void *ctx, int ith, int nth) {
    kv_job *j = ctx;
    const eng_kv_base *kb = &j->kv->base;
    const size_t esz = ESZ(kb->dtype), row_bytes = (size_t)kb->d_model * esz;
    long lo, hi;
    pool_split(j->batch->n_rows, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++) {
        const eng_seq *s = &j->batch->seqs[j->row_seq[r]];
        int32_t p = s->pos + (int32_t)(r - s->row0);
        size_t off = (size_t)j->layer * j->kv->layer_bytes +
                     ((size_t)s->blocks[p / ENG_KV_BLOCK] * ENG_KV_BLOCK + (size_t)(p % ENG_KV_BLOCK)) * row_bytes;
        j->b->k->from_f32(j->kv->k + off, kb->dtype, (const float *)ROW(j->k, r), kb->d_model);
        j->b->k->from_f32(j->kv->v + off, kb->dtype, (const float *)ROW(j->v, r), kb->d_model);
    }
}

static err cpu_kv_store(eng_backend *be, eng_kv *kv, int32_t layer, const eng_tensor *k, const eng_tensor *v,
                        const eng_batch *batch) {
    cpu_backend *b = CB(be);
    if (need_f32(k) || need_f32(v)) return ERR_UNSUPPORTED;
    if (index_reserve(b, (size_t)batch->n_rows + 1)) return ERR_NOMEM;
    for (int32_t s = 0; s < batch->n_seqs; s++)
        for (int32_t t = 0; t < batch->seqs[s].n_tokens; t++) b->index[batch->seqs[s].row0 + t] = s;
    kv_job j = {.b = b, .kv = (cpu_kv *)kv, .layer = layer, .k = k, .v = v, .batch = batch, .row_seq = b->index};
    run(b, kv_store_work, &j, (int64_t)batch->n_rows * k->cols * 2);
    return ERR_OK;
}

typedef struct attn_job {
    cpu_backend *b;
    cpu__attn a;
    const eng_batch *batch;
    int32_t n_head, head_group, n_groups; /* heads per work item, items per row group */
    const int64_t *start;                 /* [n_seqs + 1]: first work item of each sequence */
    atomic_long next;
} attn_job;

static void attn_work(void *ctx, int ith, int nth) {
    (void)nth;
    attn_job *j = ctx;
    const int64_t total = j->start[j->batch->n_seqs];
    long c;
    while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < total) {
        int32_t lo = 0, hi = j->batch->n_seqs - 1; /* last sequence whose start <= c */
        while (lo < hi) {
            int32_t mid = (lo + hi + 1) / 2;
            if (j->start[mid] <= c)
                lo = mid;
            else
                hi = mid - 1;
        }
        const eng_seq *s = &j->batch->seqs[lo];
        int64_t local = c - j->start[lo];
        int32_t rows = (s->n_tokens + CPU_ATTN_ROWS - 1) / CPU_ATTN_ROWS;
        int32_t g = rows - 1 - (int32_t)(local / j->n_groups), hg = (int32_t)(local % j->n_groups);
        int32_t t0 = g * CPU_ATTN_ROWS, nt = s->n_tokens - t0 < CPU_ATTN_ROWS ? s->n_tokens - t0 : CPU_ATTN_ROWS;
        int32_t h0 = hg * j->head_group, h1 = h0 + j->head_group < j->n_head ? h0 + j->head_group : j->n_head;
        j->b->k->attn_rows(&j->a, s, t0, nt, h0, h1, j->b->scratch[ith]);
    }
}

/* Work items are (sequence, group of CPU_ATTN_ROWS rows, group of heads), latest rows first. Whole-head groups
 * read the cache in whole rows; they are split only as far as needed to give every thread a few items (a
 * single decoding sequence). */
static err cpu_attention(eng_backend *be, eng_tensor *out, const eng_tensor *q, const eng_kv *kv_, int32_t layer,
                         const eng_batch *batch, eng_attn_shape shape) {
    cpu_backend *b = CB(be);
    const cpu_kv *kv = (const cpu_kv *)kv_;
    if (need_f32(out) || need_f32(q)) return ERR_UNSUPPORTED;
    if (index_reserve(b, (size_t)batch->n_seqs + 1)) return ERR_NOMEM;
    int64_t row_groups = 0, max_keys = 0, work = 0;
    for (int32_t s = 0; s < batch->n_seqs; s++) {
        const eng_seq *sq = &batch->seqs[s];
        row_groups += (sq->n_tokens + CPU_ATTN_ROWS - 1) / CPU_ATTN_ROWS;
        int64_t keys = (int64_t)sq->pos + sq->n_tokens;
        if (sq->n_tokens > 0 && keys > max_keys) max_keys = keys;
        work += (int64_t)sq->n_tokens * keys * q->cols * 2;
    }
    if (row_groups == 0) return ERR_OK;
    int32_t n_groups = 1;
    while (n_groups < shape.n_head && row_groups * n_groups < 4 * (int64_t)b->n_threads) n_groups *= 2;
    const int32_t head_group = (shape.n_head + n_groups - 1) / n_groups;
    n_groups = (shape.n_head + head_group - 1) / head_group;
    int64_t total = 0;
    for (int32_t s = 0; s < batch->n_seqs; s++) {
        b->index[s] = total;
        total += (int64_t)(batch->seqs[s].n_tokens + CPU_ATTN_ROWS - 1) / CPU_ATTN_ROWS * n_groups;
    }
    b->index[batch->n_seqs] = total;
    int64_t stride = (max_keys + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK * ENG_KV_BLOCK;
    if (scratch_reserve(b, (size_t)head_group * CPU_ATTN_ROWS * (size_t)(stride + shape.head_dim))) return ERR_NOMEM;
    attn_job j = {
        .b = b,
        .a = {.out = out->data, .os = out->stride, .q = q->data, .qs = q->stride,
              .k = kv->k + (size_t)layer * kv->layer_bytes, .v = kv->v + (size_t)layer * kv->layer_bytes,
              .kvdt = kv->base.dtype, .d_model = kv->base.d_model, .head_dim = shape.head_dim},
        .batch = batch,
        .n_head = shape.n_head,
        .head_group = head_group,
        .n_groups = n_groups,
        .start = b->index,
    };
    atomic_init(&j.next, 0);
    run(b, attn_work, &j, work);
    return ERR_OK;
}

const eng_backend_ops cpu__backend_ops = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .describe = cpu_describe,
    .act_dtype = eng__act_dtype_f32,
    .tensor_alloc = cpu_tensor_alloc,
    .tensor_free = cpu_tensor_free,
    .weight_from_host = cpu_weight_from_host,
    .weight_free = cpu_weight_free,
    .read_f32 = cpu_read_f32,
    .write_f32 = cpu_write_f32,
    .embed = cpu_embed,
    .layernorm = cpu_layernorm,
    .matmul = cpu_matmul,
    .gelu = cpu_gelu,
    .rope = cpu_rope,
    .add = cpu_add,
    .kv_create = cpu_kv_create,
    .kv_destroy = cpu_kv_destroy,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
};
