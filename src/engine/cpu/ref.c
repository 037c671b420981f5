/* ref.c - the reference backend: every op of eng.h as the plainest loops that state its math. No threads, no SIMD,
 * no blocking, one element at a time through get()/set().
 *
 * It is the oracle the parity tests hold every other backend to, so when in doubt this file is what an op means.
 * Sums (dot products, LayerNorm statistics, softmax) are taken in double, so the reference is closer to exact
 * than any f32 kernel. Where the contract fixes f32 rounding because HF rounds that way (the RoPE angles and
 * products, the GELU argument and tanhf), it computes in f32 with the same operations as HF. */
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "cpu_impl.h"
#include "eng_impl.h"
#include "fp16.h"

typedef struct ref_backend {
    eng_backend_base base;
} ref_backend;

typedef struct ref_kv {
    eng_kv_base base;
    void *k, *v; /* [n_layer][n_blocks][ENG_KV_BLOCK][d_model] of base.dtype */
} ref_kv;

/* ---- elements ---------------------------------------------------------------------------------------------- */

static float load(eng_dtype dt, const void *p, size_t i) {
    switch (dt) {
    case ENG_F16: return fp16_to_f32(((const uint16_t *)p)[i]);
    case ENG_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case ENG_Q8: return (float)((const int8_t *)p)[i]; /* the unscaled value; ref_matmul applies the row scale */
    case ENG_F32: break;
    }
    return ((const float *)p)[i];
}

/* Rounds to nearest even for f16 and bf16 (fp16.h). */
static void store(eng_dtype dt, void *p, size_t i, float v) {
    switch (dt) {
    case ENG_F16: ((uint16_t *)p)[i] = f32_to_fp16(v); return;
    case ENG_BF16: ((uint16_t *)p)[i] = f32_to_bf16(v); return;
    case ENG_Q8: break; /* never a destination: eng.c refuses Q8 outside matmul weights */
    case ENG_F32: break;
    }
    ((float *)p)[i] = v;
}

static float get(const eng_tensor *t, int64_t r, int64_t c) {
    return load(t->dtype, t->data, (size_t)(r * t->stride + c));
}

static void set(eng_tensor *t, int64_t r, int64_t c, float v) {
    store(t->dtype, t->data, (size_t)(r * t->stride + c), v);
}

/* Element `col` of the cached key/value row at (layer, sequence position p) of sequence s. */
static size_t kv_index(const ref_kv *kv, int32_t layer, const eng_seq *s, int32_t p, int64_t col) {
    size_t block = (size_t)s->blocks[p / ENG_KV_BLOCK], slot = (size_t)(p % ENG_KV_BLOCK);
    return (((size_t)layer * (size_t)kv->base.n_blocks + block) * ENG_KV_BLOCK + slot) * (size_t)kv->base.d_model +
           (size_t)col;
}

/* ---- backend and memory ------------------------------------------------------------------------------------- */

static err ref_create(int n_threads, eng_backend **out, errbuf *eb) {
    (void)n_threads;
    ref_backend *b = xcalloc(1, sizeof(*b));
    if (!b) return errbuf_set(eb, ERR_NOMEM, "ref backend: out of memory");
    b->base.ops = &ref__backend_ops;
    *out = (eng_backend *)b;
    return ERR_OK;
}

static void ref_destroy(eng_backend *be) { xfree(be); }

static const char *ref_describe(const eng_backend *be) {
    (void)be;
    return "ref: scalar reference, 1 thread";
}

static err ref_tensor_alloc(eng_backend *be, eng_dtype dtype, int64_t rows, int64_t cols, eng_tensor *out) {
    (void)be;
    size_t esz = eng_dtype_size(dtype);
    if (cols && (uint64_t)rows > SIZE_MAX / 2 / esz / (uint64_t)cols) return ERR_NOMEM;
    size_t bytes = ((size_t)rows * (size_t)cols * esz + 63) & ~(size_t)63;
    void *p = xaligned_alloc(64, bytes ? bytes : 64);
    if (!p) return ERR_NOMEM;
    *out = (eng_tensor){.data = p, .dtype = dtype, .rows = rows, .cols = cols, .stride = cols};
    return ERR_OK;
}

static void ref_tensor_free(eng_backend *be, eng_tensor *t) {
    (void)be;
    xfree(t->data);
}

static err ref_weight_from_host(eng_backend *be, const void *host, eng_dtype dtype, int64_t rows, int64_t cols,
                                eng_tensor *out) {
    (void)be;
    *out = (eng_tensor){.data = (void *)host, .dtype = dtype, .rows = rows, .cols = cols, .stride = cols};
    return ERR_OK;
}

static void ref_weight_free(eng_backend *be, eng_tensor *t) { (void)be, (void)t; }

static err ref_read_f32(eng_backend *be, const eng_tensor *t, float *dst) {
    (void)be;
    for (int64_t r = 0; r < t->rows; r++)
        for (int64_t c = 0; c < t->cols; c++) dst[r * t->cols + c] = get(t, r, c);
    return ERR_OK;
}

static err ref_write_f32(eng_backend *be, eng_tensor *t, const float *src) {
    (void)be;
    for (int64_t r = 0; r < t->rows; r++)
        for (int64_t c = 0; c < t->cols; c++) set(t, r, c, src[r * t->cols + c]);
    return ERR_OK;
}

/* ---- ops ----------------------------------------------------------------------------------------------------- */

static err ref_embed(eng_backend *be, eng_tensor *y, const eng_tensor *wte, const int32_t *tokens, int32_t n_rows) {
    (void)be;
    for (int32_t r = 0; r < n_rows; r++)
        for (int64_t c = 0; c < y->cols; c++) set(y, r, c, get(wte, tokens[r], c));
    return ERR_OK;
}

/* y = (x - mean) / sqrt(var + eps) * w + b with the biased variance. */
static err ref_layernorm(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                         const eng_tensor *b, float eps) {
    (void)be;
    const int64_t n = x->cols;
    for (int64_t r = 0; r < x->rows; r++) {
        double mean = 0, var = 0;
        for (int64_t c = 0; c < n; c++) mean += get(x, r, c);
        mean /= (double)n;
        for (int64_t c = 0; c < n; c++) var += (get(x, r, c) - mean) * (get(x, r, c) - mean);
        var /= (double)n;
        const double rstd = 1.0 / sqrt(var + (double)eps);
        for (int64_t c = 0; c < n; c++)
            set(y, r, c, (float)((get(x, r, c) - mean) * rstd * get(w, 0, c) + get(b, 0, c)));
    }
    return ERR_OK;
}

/* y[t][n] = (accumulate ? y[t][n] : 0) + sum_k x[t][k] * w[n][k] + bias[n]; for ENG_Q8 weights
 * w[n][k] = s[n] * q[n][k], computed as s[n] * sum_k x[t][k] * q[n][k]. */
static err ref_matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                      const eng_tensor *bias, int accumulate) {
    (void)be;
    if (w->dtype == ENG_Q8) {
        const float *s = eng_q8_scales(w);
        for (int64_t t = 0; t < x->rows; t++)
            for (int64_t n = 0; n < w->rows; n++) {
                double dot = 0;
                for (int64_t k = 0; k < x->cols; k++) dot += (double)get(x, t, k) * get(w, n, k);
                double acc = (accumulate ? get(y, t, n) : 0.0) + (double)s[n] * dot;
                if (bias) acc += get(bias, 0, n);
                set(y, t, n, (float)acc);
            }
        return ERR_OK;
    }
    for (int64_t t = 0; t < x->rows; t++)
        for (int64_t n = 0; n < w->rows; n++) {
            double acc = accumulate ? get(y, t, n) : 0.0;
            for (int64_t k = 0; k < x->cols; k++) acc += (double)get(x, t, k) * get(w, n, k);
            if (bias) acc += get(bias, 0, n);
            set(y, t, n, (float)acc);
        }
    return ERR_OK;
}

/* HF NewGELUActivation in f32: 0.5 * u * (1 + tanh(sqrt(2/pi) * (u + 0.044715 * u^3))). */
static err ref_gelu(eng_backend *be, eng_tensor *x) {
    (void)be;
    for (int64_t r = 0; r < x->rows; r++)
        for (int64_t c = 0; c < x->cols; c++) {
            float u = get(x, r, c);
            float u3 = u * u * u;
            float in = CPU_GELU_C * (u + 0.044715f * u3);
            set(x, r, c, 0.5f * u * (1.0f + tanhf(in)));
        }
    return ERR_OK;
}

/* GPT-J interleaved pairs (2i, 2i+1), i < rotary_dim/2, of every head, in f32 like HF. */
static err ref_rope(eng_backend *be, eng_tensor *x, const int32_t *positions, eng_attn_shape s) {
    (void)be;
    for (int64_t r = 0; r < x->rows; r++)
        if (positions[r] < 0) return ERR_INVALID;
    for (int64_t r = 0; r < x->rows; r++)
        for (int32_t h = 0; h < s.n_head; h++)
            for (int32_t i = 0; i < s.rotary_dim / 2; i++) {
                float a = cpu__rope_angle(positions[r], i, s.rotary_dim), c = cosf(a), sn = sinf(a);
                int64_t c0 = (int64_t)h * s.head_dim + 2 * i;
                float x0 = get(x, r, c0), x1 = get(x, r, c0 + 1);
                set(x, r, c0, x0 * c - x1 * sn);
                set(x, r, c0 + 1, x1 * c + x0 * sn);
            }
    return ERR_OK;
}

static err ref_add(eng_backend *be, eng_tensor *y, const eng_tensor *x) {
    (void)be;
    for (int64_t r = 0; r < y->rows; r++)
        for (int64_t c = 0; c < y->cols; c++) set(y, r, c, get(y, r, c) + get(x, r, c));
    return ERR_OK;
}

/* ---- KV cache and attention ------------------------------------------------------------------------------------ */

static err ref_kv_create(eng_backend *be, int32_t n_layer, int32_t d_model, int32_t n_blocks, eng_dtype dtype,
                         eng_kv **out) {
    (void)be;
    size_t n = (size_t)n_layer * (size_t)n_blocks * ENG_KV_BLOCK * (size_t)d_model;
    ref_kv *kv = xcalloc(1, sizeof(*kv));
    if (!kv) return ERR_NOMEM;
    kv->base = (eng_kv_base){.n_layer = n_layer, .d_model = d_model, .n_blocks = n_blocks, .dtype = dtype,
                             .bytes = 2 * n * eng_dtype_size(dtype)};
    kv->k = xcalloc(n, eng_dtype_size(dtype));
    kv->v = xcalloc(n, eng_dtype_size(dtype));
    if (!kv->k || !kv->v) {
        xfree(kv->k);
        xfree(kv->v);
        xfree(kv);
        return ERR_NOMEM;
    }
    *out = (eng_kv *)kv;
    return ERR_OK;
}

static void ref_kv_destroy(eng_backend *be, eng_kv *kv_) {
    (void)be;
    ref_kv *kv = (ref_kv *)kv_;
    xfree(kv->k);
    xfree(kv->v);
    xfree(kv);
}

static err ref_kv_store(eng_backend *be, eng_kv *kv_, int32_t layer, const eng_tensor *k, const eng_tensor *v,
                        const eng_batch *batch) {
    (void)be;
    ref_kv *kv = (ref_kv *)kv_;
    for (int32_t si = 0; si < batch->n_seqs; si++) {
        const eng_seq *s = &batch->seqs[si];
        for (int32_t t = 0; t < s->n_tokens; t++)
            for (int64_t c = 0; c < k->cols; c++) {
                size_t i = kv_index(kv, layer, s, s->pos + t, c);
                store(kv->base.dtype, kv->k, i, get(k, s->row0 + t, c));
                store(kv->base.dtype, kv->v, i, get(v, s->row0 + t, c));
            }
    }
    return ERR_OK;
}

/* For row r of sequence s at position p and head h: scores_j = q_h . k_h[j] / sqrt(head_dim) for j <= p,
 * probabilities = softmax(scores) as f32 (then rounded to the cache dtype), out_h = sum_j p_j v_h[j]. */
static err ref_attention(eng_backend *be, eng_tensor *out, const eng_tensor *q, const eng_kv *kv_, int32_t layer,
                         const eng_batch *batch, eng_attn_shape shape) {
    (void)be;
    const ref_kv *kv = (const ref_kv *)kv_;
    const eng_dtype kdt = kv->base.dtype;
    const int32_t hd = shape.head_dim;
    int64_t max_keys = 0;
    for (int32_t si = 0; si < batch->n_seqs; si++)
        if ((int64_t)batch->seqs[si].pos + batch->seqs[si].n_tokens > max_keys)
            max_keys = (int64_t)batch->seqs[si].pos + batch->seqs[si].n_tokens;
    double *score = xmalloc_array((size_t)max_keys + 1, sizeof(double));
    float *prob = xmalloc_array((size_t)max_keys + 1, sizeof(float));
    double *acc = xmalloc_array((size_t)hd, sizeof(double));
    if (!score || !prob || !acc) {
        xfree(score);
        xfree(prob);
        xfree(acc);
        return ERR_NOMEM;
    }
    for (int32_t si = 0; si < batch->n_seqs; si++) {
        const eng_seq *s = &batch->seqs[si];
        for (int32_t t = 0; t < s->n_tokens; t++) {
            const int64_t r = s->row0 + t;
            const int32_t p = s->pos + t;
            for (int32_t h = 0; h < shape.n_head; h++) {
                const int64_t c0 = (int64_t)h * hd;
                double m = -INFINITY, l = 0;
                for (int32_t j = 0; j <= p; j++) {
                    double dot = 0;
                    for (int32_t d = 0; d < hd; d++)
                        dot += (double)get(q, r, c0 + d) * load(kdt, kv->k, kv_index(kv, layer, s, j, c0 + d));
                    score[j] = dot / sqrt((double)hd);
                    m = fmax(m, score[j]);
                }
                for (int32_t j = 0; j <= p; j++) l += exp(score[j] - m);
                for (int32_t j = 0; j <= p; j++) {
                    prob[j] = (float)(exp(score[j] - m) / l);
                    if (kdt == ENG_F16) prob[j] = fp16_to_f32(f32_to_fp16(prob[j]));
                }
                for (int32_t d = 0; d < hd; d++) acc[d] = 0;
                for (int32_t j = 0; j <= p; j++)
                    for (int32_t d = 0; d < hd; d++)
                        acc[d] += (double)prob[j] * load(kdt, kv->v, kv_index(kv, layer, s, j, c0 + d));
                for (int32_t d = 0; d < hd; d++) set(out, r, c0 + d, (float)acc[d]);
            }
        }
    }
    xfree(score);
    xfree(prob);
    xfree(acc);
    return ERR_OK;
}

const eng_backend_ops ref__backend_ops = {
    .name = "ref",
    .create = ref_create,
    .destroy = ref_destroy,
    .describe = ref_describe,
    .act_dtype = eng__act_dtype_f32,
    .tensor_alloc = ref_tensor_alloc,
    .tensor_free = ref_tensor_free,
    .weight_from_host = ref_weight_from_host,
    .weight_free = ref_weight_free,
    .read_f32 = ref_read_f32,
    .write_f32 = ref_write_f32,
    .embed = ref_embed,
    .layernorm = ref_layernorm,
    .matmul = ref_matmul,
    .gelu = ref_gelu,
    .rope = ref_rope,
    .add = ref_add,
    .kv_create = ref_kv_create,
    .kv_destroy = ref_kv_destroy,
    .kv_store = ref_kv_store,
    .attention = ref_attention,
};
