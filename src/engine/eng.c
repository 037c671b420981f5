/* eng.c - the backend table and the shape checks every op shares, so backends only compute. */
#include "eng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "eng_impl.h"
#include "fp16.h"

static const eng_backend_ops *const backends[] = {
    &cpu__backend_ops,
    &ref__backend_ops,
#ifdef SUGGESTD_HAVE_CUDA
    &cuda__backend_ops,
#endif
};
#define N_BACKENDS (sizeof(backends) / sizeof(backends[0]))

#define OPS(be) (((const eng_backend_base *)(be))->ops)

size_t eng_dtype_size(eng_dtype t) { return t == ENG_F32 ? 4 : t == ENG_Q8 ? 1 : 2; }

const char *eng_dtype_name(eng_dtype t) {
    switch (t) {
    case ENG_F32: return "f32";
    case ENG_F16: return "f16";
    case ENG_BF16: return "bf16";
    case ENG_Q8: return "int8";
    }
    return "?";
}

/* f16 -> f32 without branches, so a loop of it vectorizes (fp16_to_f32 branches per element): the exponent and
 * mantissa bits shifted into place are an f32 2^-112 times too small (subnormal f16 land on f32 subnormals),
 * one multiply by 2^112 fixes normal and subnormal values exactly, and what was inf/nan gets its all-ones exponent
 * back (F. Giesen's half_to_float). Same values as fp16_to_f32 (test_quant quantizes every f16 both ways). */
static inline float q8_half_to_f32(uint16_t h) {
    uint32_t o = (uint32_t)(h & 0x7fff) << 13;
    float f = fp32_from_bits(o) * fp32_from_bits((254u - 15u) << 23);
    uint32_t b = fp32_bits(f);
    b |= f >= fp32_from_bits((127u + 16u) << 23) ? 0x7f800000u : 0u;
    return fp32_from_bits(b | (uint32_t)(h & 0x8000) << 16);
}

/* Source elements [i0, i0 + n) as f32 (one branch per chunk, not per element, so the loops below vectorize). */
static void host_row_f32(float *dst, const void *src, eng_dtype dt, size_t i0, size_t n) {
    if (dt == ENG_F16)
        for (size_t i = 0; i < n; i++) dst[i] = q8_half_to_f32(((const uint16_t *)src)[i0 + i]);
    else if (dt == ENG_BF16)
        for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(((const uint16_t *)src)[i0 + i]);
    else
        memcpy(dst, (const float *)src + i0, n * sizeof(float));
}

#define Q8_CHUNK 256

/* q = w / s rounded to nearest, ties to even (adding and subtracting 1.5 * 2^23 rounds any |v| < 2^22 exactly in
 * the default rounding mode, without a libm call per weight). The grid stays symmetric: -w quantizes to -q.
 * |w / s| <= 127 up to a rounding of the division (an inf weight makes s inf and its own ratio NaN), so the clamp,
 * done on the integer, only catches a hair above; a NaN ratio becomes 0 before the int conversion, where it would be
 * undefined behaviour. Rows are read in chunks of Q8_CHUNK widened floats: the widening loops vectorize; the two
 * loops below do not yet (GCC 12 sees control flow in them). Speed: ~10 ns a weight on one thread of the dev box,
 * much of it page faults on the new block, so forward.c splits the rows across threads (eng_q8_quantize_rows). */
void eng_q8_quantize_rows(void *dst, const void *src, eng_dtype src_dt, int64_t rows, int64_t cols, int64_t r0,
                          int64_t r1) {
    int8_t *q = dst;
    float *scales = (float *)(void *)((char *)dst + eng_q8_scale_offset(rows, cols));
    float buf[Q8_CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        const size_t base = (size_t)r * (size_t)cols;
        /* max |w| on the bit patterns: for non-NaN floats |a| < |b| iff bits(|a|) < bits(|b|), and an integer max
         * vectorizes where a float one may not (NaN rules); NaNs (> the bits of inf) are skipped */
        uint32_t amax_bits = 0;
        for (size_t c0 = 0; c0 < (size_t)cols; c0 += Q8_CHUNK) {
            size_t n = (size_t)cols - c0 < Q8_CHUNK ? (size_t)cols - c0 : Q8_CHUNK;
            host_row_f32(buf, src, src_dt, base + c0, n);
            for (size_t i = 0; i < n; i++) {
                uint32_t u = fp32_bits(buf[i]) & 0x7fffffffu;
                u = u > 0x7f800000u ? 0u : u;
                amax_bits = u > amax_bits ? u : amax_bits;
            }
        }
        const float s = fp32_from_bits(amax_bits) / 127.0f;
        scales[r] = s;
        for (size_t c0 = 0; c0 < (size_t)cols; c0 += Q8_CHUNK) {
            size_t n = (size_t)cols - c0 < Q8_CHUNK ? (size_t)cols - c0 : Q8_CHUNK;
            if (!(s > 0.0f)) { /* an all-zero row (or one of NaNs) */
                memset(q + base + c0, 0, n);
                continue;
            }
            host_row_f32(buf, src, src_dt, base + c0, n);
            for (size_t i = 0; i < n; i++) {
                uint32_t b = fp32_bits(buf[i] / s);
                float v = fp32_from_bits((b & 0x7fffffffu) > 0x7f800000u ? 0u : b); /* NaN -> 0; |v| <= ~127 */
                int32_t k = (int32_t)((v + 12582912.0f) - 12582912.0f);
                q[base + c0 + i] = (int8_t)(k > 127 ? 127 : k < -127 ? -127 : k);
            }
        }
    }
}

void eng_q8_quantize(void *dst, const void *src, eng_dtype src_dt, int64_t rows, int64_t cols) {
    eng_q8_quantize_rows(dst, src, src_dt, rows, cols, 0, rows);
}

const char *eng_backends_compiled(void) {
#ifdef SUGGESTD_HAVE_CUDA
    return "cpu ref cuda";
#else
    return "cpu ref";
#endif
}

/* "cuda:N" selects device N: the part after the colon reaches the backend through n_threads, which only the CPU
 * backends use. */
err eng_backend_create(const char *name, int n_threads, eng_backend **out, errbuf *eb) {
    *out = NULL;
    for (size_t i = 0; i < N_BACKENDS; i++) {
        size_t n = strlen(backends[i]->name);
        if (strncmp(backends[i]->name, name, n) != 0) continue;
        if (name[n] == 0) return backends[i]->create(strcmp(name, "cuda") ? n_threads : 0, out, eb);
        if (name[n] == ':' && !strcmp(backends[i]->name, "cuda")) {
            char *end;
            long dev = strtol(name + n + 1, &end, 10);
            if (end == name + n + 1 || *end || dev < 0 || dev > 255)
                return errbuf_set(eb, ERR_INVALID, "backend '%s': expected cuda:N with N a device number", name);
            return backends[i]->create((int)dev, out, eb);
        }
    }
    return errbuf_set(eb, ERR_INVALID, "unknown backend '%s' (compiled in: %s)", name, eng_backends_compiled());
}

void eng_backend_destroy(eng_backend *be) {
    if (be) OPS(be)->destroy(be);
}

const char *eng_backend_name(const eng_backend *be) { return OPS(be)->name; }
const char *eng_backend_describe(const eng_backend *be) { return OPS(be)->describe(be); }
eng_dtype eng_backend_act_dtype(const eng_backend *be, eng_dtype weights) {
    return OPS(be)->act_dtype(weights);
}
int eng_backend_copies_weights(const eng_backend *be) { return OPS(be)->copies_weights; }

err eng_backend_status(const eng_backend *be, errbuf *eb) {
    return OPS(be)->status ? OPS(be)->status(be, eb) : ERR_OK;
}

err eng_backend_copy_bandwidth(eng_backend *be, size_t bytes, double *gbs) {
    *gbs = 0;
    return OPS(be)->copy_bandwidth ? OPS(be)->copy_bandwidth(be, bytes, gbs) : ERR_UNSUPPORTED;
}

/* MemAvailable from /proc/meminfo: what the kernel says can be allocated without swapping. */
static err host_mem_available(size_t *bytes) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return ERR_UNSUPPORTED;
    char line[256];
    unsigned long long kb = 0;
    int found = 0;
    while (!found && fgets(line, sizeof(line), f)) found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
    fclose(f);
    if (!found) return ERR_UNSUPPORTED;
    *bytes = (size_t)kb * 1024;
    return ERR_OK;
}

err eng_backend_mem_available(eng_backend *be, size_t *bytes) {
    *bytes = 0;
    return OPS(be)->mem_available ? OPS(be)->mem_available(be, bytes) : host_mem_available(bytes);
}

err eng_tensor_alloc(eng_backend *be, eng_dtype dtype, int64_t rows, int64_t cols, eng_tensor *out) {
    memset(out, 0, sizeof(*out));
    if (rows < 0 || cols < 0 || dtype == ENG_Q8) return ERR_INVALID; /* Q8: weights only, from eng_q8_quantize */
    return OPS(be)->tensor_alloc(be, dtype, rows, cols, out);
}

void eng_tensor_free(eng_backend *be, eng_tensor *t) {
    if (t && t->data) OPS(be)->tensor_free(be, t);
    if (t) memset(t, 0, sizeof(*t));
}

err eng_weight_from_host(eng_backend *be, const void *host, eng_dtype dtype, int64_t rows, int64_t cols,
                         eng_tensor *out) {
    memset(out, 0, sizeof(*out));
    if (!host || rows <= 0 || cols <= 0) return ERR_INVALID;
    return OPS(be)->weight_from_host(be, host, dtype, rows, cols, out);
}

void eng_weight_free(eng_backend *be, eng_tensor *t) {
    if (t && t->data) OPS(be)->weight_free(be, t);
    if (t) memset(t, 0, sizeof(*t));
}

err eng_tensor_read_f32(eng_backend *be, const eng_tensor *t, float *dst) {
    if (t->dtype == ENG_Q8) return ERR_UNSUPPORTED;
    return OPS(be)->read_f32(be, t, dst);
}

err eng_logits_top(eng_backend *be, const eng_tensor *logits, int32_t n_valid, const float *inv_t, samp_top *out) {
    if (logits->dtype == ENG_Q8 || n_valid <= 0 || n_valid > logits->cols) return ERR_INVALID;
    if (logits->rows == 0) return ERR_OK;
    if (OPS(be)->logits_top) return OPS(be)->logits_top(be, logits, n_valid, inv_t, out);
    float *row = xmalloc_array((size_t)logits->cols, sizeof(float));
    if (!row) return ERR_NOMEM;
    err rc = ERR_OK;
    for (int64_t r = 0; r < logits->rows && rc == ERR_OK; r++) {
        eng_tensor one = eng_tensor_rows(*logits, r, 1);
        rc = eng_tensor_read_f32(be, &one, row);
        if (rc == ERR_OK) samp_top_compute(row, n_valid, inv_t ? inv_t[r] : 0.0f, &out[r]);
    }
    xfree(row);
    return rc;
}

int eng_backend_has_logits_top(const eng_backend *be) { return OPS(be)->logits_top != NULL; }

err eng_branch(eng_backend *be, eng_branch_op op) {
    if (op != ENG_BRANCH_SIDE && op != ENG_BRANCH_MAIN && op != ENG_BRANCH_JOIN) return ERR_INVALID;
    return OPS(be)->branch ? OPS(be)->branch(be, op) : ERR_OK;
}

int eng_backend_has_branches(const eng_backend *be) {
    return OPS(be)->branch && OPS(be)->has_branches && OPS(be)->has_branches(be);
}

err eng_tensor_write_f32(eng_backend *be, eng_tensor *t, const float *src) {
    if (t->dtype == ENG_Q8) return ERR_UNSUPPORTED;
    return OPS(be)->write_f32(be, t, src);
}

static int same_shape(const eng_tensor *a, const eng_tensor *b) { return a->rows == b->rows && a->cols == b->cols; }
/* ENG_Q8 is a matmul-weight type only: any other operand of that type is refused. */
static int is_q8(const eng_tensor *t) { return t && t->dtype == ENG_Q8; }
static int is_vec(const eng_tensor *v, int64_t n) { return v->rows == 1 && v->cols == n; }

err eng_embed(eng_backend *be, eng_tensor *y, const eng_tensor *wte, const int32_t *tokens, int32_t n_rows) {
    if (is_q8(y) || is_q8(wte)) return ERR_UNSUPPORTED;
    if (y->rows < n_rows || y->cols != wte->cols) return ERR_INVALID;
    for (int32_t r = 0; r < n_rows; r++)
        if (tokens[r] < 0 || tokens[r] >= wte->rows) return ERR_INVALID;
    return OPS(be)->embed(be, y, wte, tokens, n_rows);
}

err eng_layernorm(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *b,
                  float eps) {
    if (is_q8(y) || is_q8(x) || is_q8(w) || is_q8(b)) return ERR_UNSUPPORTED;
    if (!same_shape(y, x) || !is_vec(w, x->cols) || !is_vec(b, x->cols)) return ERR_INVALID;
    return OPS(be)->layernorm(be, y, x, w, b, eps);
}

/* The checks eng_matmul and eng_matmul_gelu share. */
static err matmul_args(const eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias) {
    if (is_q8(y) || is_q8(x) || is_q8(bias)) return ERR_UNSUPPORTED;
    if (x->cols != w->cols || y->rows != x->rows || y->cols != w->rows) return ERR_INVALID;
    if (w->dtype == ENG_Q8 && w->stride != w->cols) return ERR_INVALID; /* a view: the scales cannot be found */
    if (bias && !is_vec(bias, w->rows)) return ERR_INVALID;
    return ERR_OK;
}

err eng_matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
               int accumulate) {
    err rc = matmul_args(y, x, w, bias);
    if (rc != ERR_OK || x->rows == 0) return rc;
    return OPS(be)->matmul(be, y, x, w, bias, accumulate);
}

err eng_matmul_gelu(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                    int64_t gelu_cols) {
    if (gelu_cols < 0 || gelu_cols > y->cols) return ERR_INVALID;
    if (!OPS(be)->matmul_gelu) {
        err rc = eng_matmul(be, y, x, w, bias, 0);
        eng_tensor g = eng_tensor_cols(*y, 0, gelu_cols);
        return rc != ERR_OK || gelu_cols == 0 ? rc : eng_gelu(be, &g);
    }
    err rc = matmul_args(y, x, w, bias);
    if (rc != ERR_OK || x->rows == 0) return rc;
    return OPS(be)->matmul_gelu(be, y, x, w, bias, gelu_cols);
}

err eng_matmul_ln(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *ln_w, const eng_tensor *ln_b,
                  float eps, eng_tensor *h, const eng_tensor *w, const eng_tensor *bias, int64_t gelu_cols) {
    if (is_q8(ln_w) || is_q8(ln_b) || is_q8(h)) return ERR_UNSUPPORTED;
    if (gelu_cols < 0 || gelu_cols > y->cols || !same_shape(h, x) || h->dtype != x->dtype ||
        !is_vec(ln_w, x->cols) || !is_vec(ln_b, x->cols))
        return ERR_INVALID;
    err rc = matmul_args(y, x, w, bias);
    if (rc != ERR_OK || x->rows == 0) return rc;
    if (OPS(be)->matmul_ln) {
        rc = OPS(be)->matmul_ln(be, y, x, ln_w, ln_b, eps, w, bias, gelu_cols);
        if (rc != ERR_UNSUPPORTED) return rc;
    }
    rc = eng_layernorm(be, h, x, ln_w, ln_b, eps);
    return rc != ERR_OK ? rc : eng_matmul_gelu(be, y, h, w, bias, gelu_cols);
}

err eng_matmul_late(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                    int accumulate, int64_t k_late) {
    if (k_late <= 0 || k_late >= x->cols) return ERR_INVALID;
    err rc = matmul_args(y, x, w, bias);
    if (rc != ERR_OK || x->rows == 0) return rc;
    if (OPS(be)->matmul_late && !is_q8(w)) {
        rc = OPS(be)->matmul_late(be, y, x, w, bias, accumulate, k_late);
        if (rc != ERR_UNSUPPORTED) return rc;
    }
    return OPS(be)->matmul(be, y, x, w, bias, accumulate);
}

int eng_backend_has_late(const eng_backend *be, int64_t n, int64_t k, int64_t k_late) {
    return OPS(be)->matmul_late && OPS(be)->has_late && OPS(be)->has_late(be, n, k, k_late);
}

err eng_gelu(eng_backend *be, eng_tensor *x) {
    if (is_q8(x)) return ERR_UNSUPPORTED;
    return OPS(be)->gelu(be, x);
}

static int shape_ok(const eng_tensor *x, eng_attn_shape s) {
    return s.n_head > 0 && s.head_dim > 0 && s.rotary_dim >= 0 && s.rotary_dim % 2 == 0 &&
           s.rotary_dim <= s.head_dim && x->cols == (int64_t)s.n_head * s.head_dim;
}

err eng_rope(eng_backend *be, eng_tensor *x, const int32_t *positions, eng_attn_shape shape) {
    if (is_q8(x)) return ERR_UNSUPPORTED;
    if (!shape_ok(x, shape)) return ERR_INVALID;
    for (int64_t r = 0; r < x->rows; r++)
        if (positions[r] < 0) return ERR_INVALID;
    return OPS(be)->rope(be, x, positions, shape);
}

err eng_add(eng_backend *be, eng_tensor *y, const eng_tensor *x) {
    if (is_q8(y) || is_q8(x)) return ERR_UNSUPPORTED;
    if (!same_shape(y, x)) return ERR_INVALID;
    return OPS(be)->add(be, y, x);
}

err eng_kv_create(eng_backend *be, int32_t n_layer, int32_t d_model, int32_t n_blocks, eng_dtype dtype,
                  eng_kv **out) {
    *out = NULL;
    if (n_layer <= 0 || d_model <= 0 || n_blocks <= 0 || dtype == ENG_BF16 || dtype == ENG_Q8) return ERR_INVALID;
    return OPS(be)->kv_create(be, n_layer, d_model, n_blocks, dtype, out);
}

void eng_kv_destroy(eng_backend *be, eng_kv *kv) {
    if (kv) OPS(be)->kv_destroy(be, kv);
}

int32_t eng_kv_blocks(const eng_kv *kv) { return ((const eng_kv_base *)kv)->n_blocks; }
size_t eng_kv_bytes(const eng_kv *kv) { return ((const eng_kv_base *)kv)->bytes; }

/* Every row must fall inside its sequence and every position inside the sequence's blocks. */
static err batch_ok(const eng_kv *kv, const eng_batch *b) {
    const eng_kv_base *kb = (const eng_kv_base *)kv;
    int32_t rows = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const eng_seq *q = &b->seqs[s];
        if (q->n_tokens < 0 || q->pos < 0 || q->row0 < 0 || q->row0 + q->n_tokens > b->n_rows) return ERR_INVALID;
        if ((int64_t)q->n_blocks * ENG_KV_BLOCK < (int64_t)q->pos + q->n_tokens) return ERR_INVALID;
        for (int32_t i = 0; i < q->n_blocks; i++)
            if (q->blocks[i] < 0 || q->blocks[i] >= kb->n_blocks) return ERR_INVALID;
        for (int32_t t = 0; t < q->n_tokens; t++)
            if (b->positions[q->row0 + t] != q->pos + t) return ERR_INVALID;
        rows += q->n_tokens;
    }
    return rows == b->n_rows ? ERR_OK : ERR_INVALID;
}

err eng_kv_store(eng_backend *be, eng_kv *kv, int32_t layer, const eng_tensor *k, const eng_tensor *v,
                 const eng_batch *batch) {
    const eng_kv_base *kb = (const eng_kv_base *)kv;
    if (is_q8(k) || is_q8(v)) return ERR_UNSUPPORTED;
    if (layer < 0 || layer >= kb->n_layer || k->cols != kb->d_model || !same_shape(k, v) ||
        k->rows != batch->n_rows || batch_ok(kv, batch) != ERR_OK)
        return ERR_INVALID;
    return OPS(be)->kv_store(be, kv, layer, k, v, batch);
}

/* eng_rope_kv_store's checks: those of eng_rope on qkv's q | k and of eng_kv_store on its k and v. */
static err rope_kv_check(const eng_tensor *qkv, const eng_kv *kv, int32_t layer, const eng_batch *batch,
                         eng_attn_shape shape) {
    const int64_t D = (int64_t)shape.n_head * shape.head_dim;
    if (qkv->cols != 3 * D) return ERR_INVALID;
    const eng_kv_base *kb = (const eng_kv_base *)kv;
    const eng_tensor qk = eng_tensor_cols(*qkv, 0, 2 * D);
    if (is_q8(qkv)) return ERR_UNSUPPORTED;
    if (!shape_ok(&qk, (eng_attn_shape){2 * shape.n_head, shape.head_dim, shape.rotary_dim}) || layer < 0 ||
        layer >= kb->n_layer || D != kb->d_model || qkv->rows != batch->n_rows || batch_ok(kv, batch) != ERR_OK)
        return ERR_INVALID;
    for (int64_t r = 0; r < qkv->rows; r++)
        if (batch->positions[r] < 0) return ERR_INVALID;
    return ERR_OK;
}

err eng_rope_kv_store(eng_backend *be, eng_tensor *qkv, eng_kv *kv, int32_t layer, const eng_batch *batch,
                      eng_attn_shape shape) {
    err rc = rope_kv_check(qkv, kv, layer, batch, shape);
    if (rc != ERR_OK) return rc;
    if (OPS(be)->rope_kv_store) return OPS(be)->rope_kv_store(be, qkv, kv, layer, batch, shape);
    const int64_t D = (int64_t)shape.n_head * shape.head_dim;
    eng_tensor qk = eng_tensor_cols(*qkv, 0, 2 * D), k = eng_tensor_cols(*qkv, D, D);
    eng_tensor v = eng_tensor_cols(*qkv, 2 * D, D);
    rc = eng_rope(be, &qk, batch->positions, (eng_attn_shape){2 * shape.n_head, shape.head_dim, shape.rotary_dim});
    return rc != ERR_OK ? rc : eng_kv_store(be, kv, layer, &k, &v, batch);
}

static err attention_check(const eng_tensor *out, const eng_tensor *q, const eng_kv *kv, int32_t layer,
                           const eng_batch *batch, eng_attn_shape shape) {
    const eng_kv_base *kb = (const eng_kv_base *)kv;
    if (is_q8(out) || is_q8(q)) return ERR_UNSUPPORTED;
    if (layer < 0 || layer >= kb->n_layer || q->cols != kb->d_model || !same_shape(out, q) ||
        q->rows != batch->n_rows || !shape_ok(q, shape) || batch_ok(kv, batch) != ERR_OK)
        return ERR_INVALID;
    return ERR_OK;
}

err eng_attention(eng_backend *be, eng_tensor *out, const eng_tensor *q, const eng_kv *kv, int32_t layer,
                  const eng_batch *batch, eng_attn_shape shape) {
    err rc = attention_check(out, q, kv, layer, batch, shape);
    return rc != ERR_OK ? rc : OPS(be)->attention(be, out, q, kv, layer, batch, shape);
}

/* Both ops' checks before either runs: a refused call leaves the cache and qkv as they were. */
err eng_rope_kv_attention(eng_backend *be, eng_tensor *out, eng_tensor *qkv, eng_kv *kv, int32_t layer,
                          const eng_batch *batch, eng_attn_shape shape) {
    err rc = rope_kv_check(qkv, kv, layer, batch, shape);
    if (rc != ERR_OK) return rc;
    eng_tensor q = eng_tensor_cols(*qkv, 0, (int64_t)shape.n_head * shape.head_dim);
    if ((rc = attention_check(out, &q, kv, layer, batch, shape)) != ERR_OK) return rc;
    if (OPS(be)->rope_kv_attention) return OPS(be)->rope_kv_attention(be, out, qkv, kv, layer, batch, shape);
    rc = eng_rope_kv_store(be, qkv, kv, layer, batch, shape);
    return rc != ERR_OK ? rc : OPS(be)->attention(be, out, &q, kv, layer, batch, shape);
}

static int row_of(const eng_tensor *t, int64_t cols) { return t && t->rows == 1 && t->cols == cols; }

err eng_layers_decode(eng_backend *be, eng_tensor *x, eng_tensor *u, const eng_fused_layer *layers, int32_t n_layer,
                      int64_t n_inner, eng_kv *kv, const eng_batch *batch, eng_attn_shape shape, float eps) {
    const int64_t D = (int64_t)shape.n_head * shape.head_dim, F = n_inner;
    if (!OPS(be)->layers_decode) return ERR_UNSUPPORTED;
    const eng_kv_base *kb = (const eng_kv_base *)kv;
    if (!row_of(x, D) || !row_of(u, D + F + 3 * D) || n_layer <= 0 || n_layer > kb->n_layer || F <= 0 ||
        D != kb->d_model || batch->n_rows != 1 || !shape_ok(x, shape) || batch_ok(kv, batch) != ERR_OK)
        return ERR_INVALID;
    for (int32_t l = 0; l < n_layer; l++) {
        const eng_fused_layer *L = &layers[l];
        if (!row_of(L->ln_w, D) || !row_of(L->ln_b, D) || !row_of(L->b1, F + 3 * D) || !row_of(L->b2, D) ||
            !L->w1 || L->w1->rows != F + 3 * D || L->w1->cols != D || !L->w2 || L->w2->rows != D ||
            L->w2->cols != D + F)
            return ERR_INVALID;
        if (is_q8(L->w1) || is_q8(L->w2)) return ERR_UNSUPPORTED;
    }
    return OPS(be)->layers_decode(be, x, u, layers, n_layer, n_inner, kv, batch, shape, eps);
}

err eng_graphs_create(eng_backend *be, eng_graphs **out) {
    *out = NULL;
    return OPS(be)->graphs_create ? OPS(be)->graphs_create(be, out) : ERR_UNSUPPORTED;
}

void eng_graphs_destroy(eng_backend *be, eng_graphs *g) {
    if (g) OPS(be)->graphs_destroy(be, g);
}

err eng_graphs_begin(eng_backend *be, eng_graphs *g, const eng_kv *kv, const eng_batch *batch,
                     const int32_t *logit_rows, int32_t n_logits, eng_step *step) {
    *step = ENG_STEP_RUN;
    if (!g) return ERR_OK;
    if (batch->n_rows <= 0 || n_logits < 0 || batch_ok(kv, batch) != ERR_OK) return ERR_INVALID;
    return OPS(be)->graphs_begin(be, g, batch, logit_rows, n_logits, step);
}

err eng_graphs_end(eng_backend *be, eng_graphs *g, err ops_rc, eng_step *step) {
    if (!g || *step == ENG_STEP_DONE) {
        *step = ENG_STEP_DONE;
        return ops_rc;
    }
    return OPS(be)->graphs_end(be, g, ops_rc, step);
}

void eng_graphs_stats(const eng_graphs *g, eng_graph_stats *out) {
    if (g) *out = ((const eng_graphs_base *)g)->stats;
    else memset(out, 0, sizeof(*out));
}
