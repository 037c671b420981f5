/* test_gpu_parity.c - every op of the cuda backend against the ref backend (the scalar oracle), on random data of
 * awkward shapes, in every dtype combination the forward pass uses (f32 checkpoints: all f32; half checkpoints:
 * half activations and weights, f32 logits) plus the f32-activation mixes tests/parity uses for the CPU.
 *
 * Outputs are strided views inside larger tensors whose other cells hold a canary that must come back bit for bit
 * (guard cells). Tolerances per op say what the kernels promise: bit-identical where they do ref's f32 operations
 * (conversions, embed, add, RoPE), f32-accumulation error against ref's double sums elsewhere, plus one rounding of
 * the output where it is half. Worst errors are printed per op. Plain C (no cmocka): it runs on the GPU machine. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng.h"
#include "eng_impl.h" /* test_matmul_late calls the backend's op itself */
#include "fp16.h"
#include "gpu_check.h"
#include "rng.h"

int gc_failures;
static eng_backend *be_gpu, *be_ref;
static eng_backend *be_simt; /* cuda with SUGGESTD_CUDA_ATTN_MMA=0: prefill attention on the SIMT kernel */
static rng R;

static const eng_dtype dts[] = {ENG_F32, ENG_F16, ENG_BF16};

static float urand(float lo, float hi) { return lo + (hi - lo) * (float)rng_uniform(&R); }

static float *rand_vec(size_t n, float lo, float hi) {
    float *v = gc_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = urand(lo, hi);
    return v;
}

static void *host_weights(const float *v, size_t n, eng_dtype dt) {
    void *p = gc_malloc(n * eng_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        if (dt == ENG_F32) ((float *)p)[i] = v[i];
        else if (dt == ENG_F16) ((uint16_t *)p)[i] = f32_to_fp16(v[i]);
        else ((uint16_t *)p)[i] = f32_to_bf16(v[i]);
    }
    return p;
}

/* The int8 block (eng_q8_quantize) of host weights hw [N, K] of dtype wd: both backends get the same one. */
static void *host_q8(const void *hw, eng_dtype wd, int64_t N, int64_t K) {
    void *hq = gc_malloc(eng_q8_bytes(N, K));
    eng_q8_quantize(hq, hw, wd, N, K);
    return hq;
}

/* ---- guarded tensors ------------------------------------------------------------------------------------------- */

/* A [rows, cols] view at (1, 3) of a [rows + 2, cols + 5] tensor of dtype; the canary is read back after writing so
 * it is compared as stored. */
typedef struct gt {
    eng_backend *be;
    eng_tensor full, view;
    float *canary;
} gt;

/* aligned: the view at (1, 8) of a [rows + 2, >= cols + 13] tensor whose row stride is a multiple of 8 elements,
 * so the view starts on 16 bytes with a stride of whole 16-byte vectors, as the forward pass's activations do (the
 * decode GEMV needs that of x; a (1, 3) view would always send it to cuBLAS). */
static int gt_init_at(gt *g, eng_backend *be, eng_dtype dt, int64_t rows, int64_t cols, const float *data,
                      int aligned) {
    g->be = be;
    const int64_t c0 = aligned ? 8 : 3, fc = aligned ? (cols + 13 + 7) / 8 * 8 : cols + 5;
    if (eng_tensor_alloc(be, dt, rows + 2, fc, &g->full) != ERR_OK) return -1;
    size_t n = (size_t)(rows + 2) * (size_t)fc;
    g->canary = gc_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) g->canary[i] = -1000.25f - (float)(i % 251);
    if (eng_tensor_write_f32(be, &g->full, g->canary) != ERR_OK) return -1;
    if (eng_tensor_read_f32(be, &g->full, g->canary) != ERR_OK) return -1;
    g->view = eng_tensor_cols(eng_tensor_rows(g->full, 1, rows), c0, cols);
    if (data && eng_tensor_write_f32(be, &g->view, data) != ERR_OK) return -1;
    return 0;
}

static int gt_init(gt *g, eng_backend *be, eng_dtype dt, int64_t rows, int64_t cols, const float *data) {
    return gt_init_at(g, be, dt, rows, cols, data, 0);
}

/* 0 when every cell outside the view still holds its canary. */
static int gt_guard_ok(gt *g, const char *what) {
    size_t n = (size_t)g->full.rows * (size_t)g->full.cols;
    float *all = gc_malloc(n * sizeof(float));
    int bad = 0;
    if (eng_tensor_read_f32(g->be, &g->full, all) != ERR_OK) bad = 1;
    for (int64_t r = 0; r < g->full.rows && !bad; r++)
        for (int64_t c = 0; c < g->full.cols; c++) {
            const int64_t c0 = ((char *)g->view.data - (char *)g->full.data) / (int64_t)eng_dtype_size(g->full.dtype) -
                               g->full.stride;
            int inside = r >= 1 && r <= g->view.rows && c >= c0 && c < c0 + g->view.cols;
            size_t i = (size_t)(r * g->full.cols + c);
            if (!inside && memcmp(&all[i], &g->canary[i], 4)) {
                fprintf(stderr, "%s (%s): guard cell (%lld, %lld) of a [%lld, %lld] view overwritten: %g\n", what,
                        eng_backend_name(g->be), (long long)r - 1, (long long)(c - c0), (long long)g->view.rows,
                        (long long)g->view.cols, all[i]);
                bad = 1;
                break;
            }
        }
    free(all);
    return !bad;
}

static float *gt_read(gt *g) {
    float *out = gc_malloc((size_t)(g->view.rows * g->view.cols) * 4);
    if (eng_tensor_read_f32(g->be, &g->view, out) != ERR_OK) {
        free(out);
        return NULL;
    }
    return out;
}

static void gt_fini(gt *g) {
    eng_tensor_free(g->be, &g->full);
    free(g->canary);
}

/* ---- comparison ------------------------------------------------------------------------------------------------ */

typedef struct worst {
    const char *op;
    double rel, nmse;
    int cases;
} worst;

/* As tests/parity: rel_i = |got - want| / (|want| + floor * rms(want)) <= tol_rel, and nmse <= tol_nmse. */
static int close_ok(worst *w, const char *what, const float *got, const float *want, size_t n, double floor,
                    double tol_rel, double tol_nmse) {
    double ss = 0, se = 0, worst_rel = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) ss += (double)want[i] * want[i];
    double rms = n ? sqrt(ss / (double)n) : 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) != isnan(want[i])) {
            fprintf(stderr, "%s: element %zu: cuda %g, ref %g\n", what, i, got[i], want[i]);
            return 0;
        }
        if (isnan(got[i])) continue;
        double d = fabs((double)got[i] - want[i]);
        if (isinf(got[i]) && got[i] == want[i]) d = 0;
        se += d * d;
        double rel = d == 0 ? 0 : d / (fabs(want[i]) + floor * rms + 1e-30);
        if (rel > worst_rel) worst_rel = rel, at = i;
    }
    double nmse = ss > 0 ? se / ss : se;
    if (worst_rel > w->rel) w->rel = worst_rel;
    if (nmse > w->nmse) w->nmse = nmse;
    w->cases++;
    if (worst_rel > tol_rel || nmse > tol_nmse) {
        fprintf(stderr, "%s: worst relative error %.3g at %zu (cuda %.9g, ref %.9g; limit %.3g), nmse %.3g (limit %.3g)\n",
                what, worst_rel, at, got[at], want[at], tol_rel, nmse, tol_nmse);
        return 0;
    }
    return 1;
}

static void print_worst(const worst *w) {
    printf("  %-26s worst rel %.3g, worst nmse %.3g over %d cases\n", w->op, w->rel, w->nmse, w->cases);
}

/* One rounding of a result to dt, relative: half an ulp can become a full ulp when cuda and ref land on two sides of
 * a tie, so allow one ulp (2^-10 for f16, 2^-7 for bf16). */
static double round_tol(eng_dtype dt) { return dt == ENG_F16 ? 1.0 / 1024 : dt == ENG_BF16 ? 1.0 / 128 : 0; }

/* ---- conversions, embed ----------------------------------------------------------------------------------------- */

static void test_convert(void) {
    const int64_t rows = 5, cols = 77;
    size_t n = (size_t)(rows * cols);
    float *src = rand_vec(n, -3, 3), *a = gc_malloc(n * 4), *b = gc_malloc(n * 4);
    const float special[] = {0.0f, -0.0f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 65504.0f, 65519.0f, 65520.0f,
                             1e6f, -1e6f, INFINITY, -INFINITY, 5.96e-8f, 2.98e-8f, 2.99e-8f, 1e-9f, 6.1e-5f,
                             3.0e-5f, -4.5e-6f, 1.00000012f, 3.4e38f, 1e-40f, 1.0039062f, 1.0117188f};
    memcpy(src, special, sizeof(special));
    for (size_t i = sizeof(special) / sizeof(float); i < n; i += 7) src[i] *= powf(2.0f, (float)(i % 40) - 28);
    for (int d = 0; d < 3; d++) {
        eng_tensor tf[2], tv[2];
        eng_backend *bes[2] = {be_gpu, be_ref};
        float *outs[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            GC_OK(eng_tensor_alloc(bes[k], dts[d], rows, cols + 9, &tf[k]));
            tv[k] = eng_tensor_cols(tf[k], 5, cols);
            GC_OK(eng_tensor_write_f32(bes[k], &tv[k], src));
            GC_OK(eng_tensor_read_f32(bes[k], &tv[k], outs[k]));
        }
        for (size_t i = 0; i < n; i++)
            GC_CHECK(!memcmp(&a[i], &b[i], 4), "%s round trip of %.9g: cuda %.9g, ref %.9g", eng_dtype_name(dts[d]),
                     src[i], a[i], b[i]);
        for (int k = 0; k < 2; k++) eng_tensor_free(bes[k], &tf[k]);
    }
    free(src), free(a), free(b);
}

static void test_embed(void) {
    worst w = {.op = "embed"};
    const int64_t V = 50, D = 100;
    const int32_t n_rows = 9;
    float *wv = rand_vec((size_t)(V * D), -2, 2);
    int32_t tokens[9] = {0, 49, 3, 3, 17, 48, 1, 0, 25};
    for (int d = 0; d < 3; d++)
        for (int yd = 0; yd < 3; yd++) {
            void *host = host_weights(wv, (size_t)(V * D), dts[d]);
            float *out[2];
            eng_backend *bes[2] = {be_gpu, be_ref};
            for (int k = 0; k < 2; k++) {
                eng_tensor wte;
                gt y;
                GC_OK(eng_weight_from_host(bes[k], host, dts[d], V, D, &wte));
                GC_CHECK(!gt_init(&y, bes[k], dts[yd], n_rows, D, NULL), "gt_init");
                GC_OK(eng_embed(bes[k], &y.view, &wte, tokens, n_rows));
                out[k] = gt_read(&y);
                GC_CHECK(out[k] && gt_guard_ok(&y, "embed"), "embed guard");
                gt_fini(&y);
                eng_weight_free(bes[k], &wte);
            }
            GC_CHECK(close_ok(&w, "embed", out[0], out[1], (size_t)(n_rows * D), 0, 0, 0), "embed %s -> %s",
                     eng_dtype_name(dts[d]), eng_dtype_name(dts[yd]));
            free(out[0]), free(out[1]), free(host);
        }
    free(wv);
    print_worst(&w);
}

/* ---- layernorm --------------------------------------------------------------------------------------------------- */

static void test_layernorm(void) {
    worst w = {.op = "layernorm"};
    const int64_t Ts[] = {1, 3, 33}, Ds[] = {40, 100, 1024, 6144};
    for (int ti = 0; ti < 3; ti++)
        for (int di = 0; di < 4; di++)
            for (int ad = 0; ad < 3; ad++)
                for (int alias = 0; alias < 2; alias++) {
                    const eng_dtype wd = dts[(ad + di) % 3], xd = dts[ad];
                    int64_t T = Ts[ti], D = Ds[di];
                    size_t n = (size_t)(T * D);
                    float *x = rand_vec(n, -1, 1), *wv = rand_vec((size_t)D, 0.8f, 1.2f),
                          *bv = rand_vec((size_t)D, -0.1f, 0.1f);
                    for (size_t i = 0; i < n; i++) x[i] = x[i] * 3 + 5;
                    void *hw = host_weights(wv, (size_t)D, wd), *hb = host_weights(bv, (size_t)D, wd);
                    float *out[2];
                    eng_backend *bes[2] = {be_gpu, be_ref};
                    for (int k = 0; k < 2; k++) {
                        eng_tensor tw, tb;
                        gt gx, gy;
                        GC_OK(eng_weight_from_host(bes[k], hw, wd, 1, D, &tw));
                        GC_OK(eng_weight_from_host(bes[k], hb, wd, 1, D, &tb));
                        GC_CHECK(!gt_init(&gx, bes[k], xd, T, D, x), "gt_init");
                        if (!alias) GC_CHECK(!gt_init(&gy, bes[k], xd, T, D, NULL), "gt_init");
                        gt *py = alias ? &gx : &gy;
                        GC_OK(eng_layernorm(bes[k], &py->view, &gx.view, &tw, &tb, 1e-5f));
                        out[k] = gt_read(py);
                        GC_CHECK(out[k] && gt_guard_ok(py, "layernorm"), "layernorm guard");
                        gt_fini(&gx);
                        if (!alias) gt_fini(&gy);
                        eng_weight_free(bes[k], &tw), eng_weight_free(bes[k], &tb);
                    }
                    char what[96];
                    snprintf(what, sizeof(what), "layernorm x=%s w=%s T=%lld D=%lld", eng_dtype_name(xd),
                             eng_dtype_name(wd), (long long)T, (long long)D);
                    GC_CHECK(close_ok(&w, what, out[0], out[1], n, 1.0, 5e-6 + round_tol(xd), 1e-11 + round_tol(xd) * round_tol(xd)),
                             "%s", what);
                    free(out[0]), free(out[1]), free(x), free(wv), free(bv), free(hw), free(hb);
                }
    print_worst(&w);
}

/* ---- matmul ------------------------------------------------------------------------------------------------------ */

/* The floor of a matmul's comparison, in units of the output's rms: an f32 dot of K terms rounds in units of its
 * terms, not of its result, so where the terms cancel (an output near 0, which at N = 1 is the whole rms) the rms
 * understates the error a correct sum may have. max(1, rms of the terms' root-sum-square / rms of want). Only for
 * an f32 y without GELU: a half y's rounding (relative to y itself) dwarfs the sum's error, and would be loosened
 * by it; GELU changes y's scale. */
static double dot_floor(const float *x, const float *wv, int64_t T, int64_t K, int64_t N, const float *want) {
    double terms = 0, ww = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            for (int64_t k = 0; k < K; k++) {
                const double p = (double)x[t * K + k] * wv[n * K + k];
                terms += p * p;
            }
            ww += (double)want[t * N + n] * want[t * N + n];
        }
    return ww > 0 && terms > ww ? sqrt(terms / ww) : 1.0;
}

static void matmul_case(worst *w, eng_dtype xd, eng_dtype wd, eng_dtype yd, int64_t T, int64_t K, int64_t N,
                        int use_bias, int accumulate) {
    float *x = rand_vec((size_t)(T * K), -1, 1), *wv = rand_vec((size_t)(N * K), -1, 1),
          *bv = rand_vec((size_t)N, -1, 1), *y0 = rand_vec((size_t)(T * N), -1, 1);
    void *hw = host_weights(wv, (size_t)(N * K), wd), *hb = host_weights(bv, (size_t)N, wd);
    float *out[2];
    eng_backend *bes[2] = {be_gpu, be_ref};
    for (int k = 0; k < 2; k++) {
        eng_tensor tw, tb;
        gt gx, gy;
        GC_OK(eng_weight_from_host(bes[k], hw, wd, N, K, &tw));
        GC_OK(eng_weight_from_host(bes[k], hb, wd, 1, N, &tb));
        GC_CHECK(!gt_init_at(&gx, bes[k], xd, T, K, x, 1) && !gt_init(&gy, bes[k], yd, T, N, y0), "gt_init");
        GC_OK(eng_matmul(bes[k], &gy.view, &gx.view, &tw, use_bias ? &tb : NULL, accumulate));
        out[k] = gt_read(&gy);
        GC_CHECK(out[k] && gt_guard_ok(&gy, "matmul y") && gt_guard_ok(&gx, "matmul x"), "matmul guard");
        gt_fini(&gx), gt_fini(&gy);
        eng_weight_free(bes[k], &tw), eng_weight_free(bes[k], &tb);
    }
    char what[160];
    snprintf(what, sizeof(what), "matmul x=%s w=%s y=%s T=%lld K=%lld N=%lld bias=%d acc=%d", eng_dtype_name(xd),
             eng_dtype_name(wd), eng_dtype_name(yd), (long long)T, (long long)K, (long long)N, use_bias, accumulate);
    /* f32 sums (cuBLAS, no TF32) against double, judged against the typical output magnitude; a half y adds its
     * rounding, and with bias + accumulate a second one (the bias is added into y first). */
    double rt = round_tol(yd) * (use_bias && accumulate ? 2 : 1);
    /* an f32 sum's error grows with K (and a GEMV sums in another order than cuBLAS): 2.4e-11 seen at K = 4104 */
    double sum_nmse = 1e-11 * (1.0 + (double)K / 1024.0);
    const double fl = yd == ENG_F32 ? dot_floor(x, wv, T, K, N, out[1]) : 1.0;
    GC_CHECK(close_ok(w, what, out[0], out[1], (size_t)(T * N), fl, 1e-5 + rt, sum_nmse * fl * fl + rt * rt), "%s",
             what);
    free(out[0]), free(out[1]), free(x), free(wv), free(bv), free(y0), free(hw), free(hb);
}

/* The decode GEMV's other paths: int8 weights (ENG_Q8, quantized once on the host: both backends get the same
 * block, so this checks the kernel, not the quantization) and fc_in's fused GELU (eng_matmul_gelu: ref runs matmul
 * then gelu, rounding y in between, so a half y may differ by about one more rounding). T > 8 takes the prefill path
 * (int8 dequantized for cuBLAS, then the gelu kernel). */
static void matmul_ext_case(worst *w, eng_dtype xd, eng_dtype yd, int64_t T, int64_t K, int64_t N, int q8, int gelu,
                            int use_bias, int accumulate) {
    /* GELU on all columns (fc_in), or on the first part only (fc_in fused with qkv_proj, forward.c) */
    const int64_t gelu_cols = (T + K) % 2 ? N : N / 2;
    float *x = rand_vec((size_t)(T * K), -1, 1), *wv = rand_vec((size_t)(N * K), -1, 1),
          *bv = rand_vec((size_t)N, -1, 1), *y0 = rand_vec((size_t)(T * N), -1, 1);
    const eng_dtype wd = xd == ENG_F32 ? ENG_F16 : xd;
    void *hw = host_weights(wv, (size_t)(N * K), wd), *hb = host_weights(bv, (size_t)N, wd);
    void *hq = q8 ? host_q8(hw, wd, N, K) : NULL;
    float *out[2];
    eng_backend *bes[2] = {be_gpu, be_ref};
    for (int k = 0; k < 2; k++) {
        eng_tensor tw, tb;
        gt gx, gy;
        GC_OK(eng_weight_from_host(bes[k], q8 ? hq : hw, q8 ? ENG_Q8 : wd, N, K, &tw));
        GC_OK(eng_weight_from_host(bes[k], hb, wd, 1, N, &tb));
        /* T = 3: x not 16-byte aligned, so the fallback (cuBLAS; int8 dequantized) runs at a decode size too */
        GC_CHECK(!gt_init_at(&gx, bes[k], xd, T, K, x, T != 3) && !gt_init(&gy, bes[k], yd, T, N, y0), "gt_init");
        if (gelu) GC_OK(eng_matmul_gelu(bes[k], &gy.view, &gx.view, &tw, use_bias ? &tb : NULL, gelu_cols));
        else GC_OK(eng_matmul(bes[k], &gy.view, &gx.view, &tw, use_bias ? &tb : NULL, accumulate));
        out[k] = gt_read(&gy);
        GC_CHECK(out[k] && gt_guard_ok(&gy, "matmul y") && gt_guard_ok(&gx, "matmul x"), "matmul guard");
        gt_fini(&gx), gt_fini(&gy);
        eng_weight_free(bes[k], &tw), eng_weight_free(bes[k], &tb);
    }
    char what[160];
    snprintf(what, sizeof(what), "matmul%s x=%s w=%s y=%s T=%lld K=%lld N=%lld bias=%d acc=%d", gelu ? "+gelu" : "",
             eng_dtype_name(xd), q8 ? "int8" : eng_dtype_name(wd), eng_dtype_name(yd), (long long)T, (long long)K,
             (long long)N, use_bias, gelu ? 0 : accumulate);
    /* the fallback on int8 (prefill, or x not aligned: T = 3) rounds the dequantized weights to half for cuBLAS:
     * one more rounding of each product */
    const int dequant = q8 && (T > 8 || T == 3);
    double rt = round_tol(yd) * (gelu || (use_bias && accumulate) ? 2 : 1) + (dequant ? round_tol(ENG_F16) : 0);
    double sum_nmse = 1e-11 * (1.0 + (double)K / 1024.0);
    const double fl = yd == ENG_F32 && !gelu ? dot_floor(x, wv, T, K, N, out[1]) : 1.0;
    GC_CHECK(close_ok(w, what, out[0], out[1], (size_t)(T * N), fl, 1e-5 + rt, sum_nmse * fl * fl + rt * rt), "%s",
             what);
    free(out[0]), free(out[1]), free(x), free(wv), free(bv), free(y0), free(hw), free(hb), free(hq);
}

static void test_matmul(void) {
    worst w[3] = {{.op = "matmul f32 x"}, {.op = "matmul half x, half y"}, {.op = "matmul half x, f32 y"}};
    const int64_t Ts[] = {1, 2, 3, 8, 33, 130};
    const int64_t KN[][2] = {{40, 72}, {72, 40}, {100, 160}, {1100, 68}, {33, 300}};
    for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++)
        for (size_t s = 0; s < sizeof(KN) / sizeof(KN[0]); s++)
            for (int mode = 0; mode < 4; mode++) {
                for (int d = 0; d < 3; d++) /* f32 activations with every weight dtype (the CPU's mix) */
                    matmul_case(&w[0], ENG_F32, dts[d], ENG_F32, Ts[ti], KN[s][0], KN[s][1], mode & 1, mode >> 1);
                for (int d = 1; d < 3; d++) { /* the forward pass of half checkpoints: half in, half or f32 out */
                    matmul_case(&w[1], dts[d], dts[d], dts[d], Ts[ti], KN[s][0], KN[s][1], mode & 1, mode >> 1);
                    matmul_case(&w[2], dts[d], dts[d], ENG_F32, Ts[ti], KN[s][0], KN[s][1], mode & 1, mode >> 1);
                }
            }
    /* decode shapes of a real layer's size (cuBLAS picks its GEMV-like kernels there) */
    for (int64_t T = 1; T <= 3; T++)
        for (int d = 1; d < 3; d++) {
            matmul_case(&w[1], dts[d], dts[d], dts[d], T, 1024, 3072, (int)(T & 1), (int)(T >> 1));
            matmul_case(&w[2], dts[d], dts[d], ENG_F32, T, 2560, 5120, 1, 0);
        }
    /* the decode GEMV (cuda_gemv.cu: T <= 8, half weights, K % 8 == 0): every T, odd N, K with a tail of a step
     * (256 elements) and without, a tiny K, and N = 8451, large enough for a warp to stream several rows through its
     * ring (one wave of warps); K = 100 and K = 1100 above stay on cuBLAS (K % 8 != 0). All bias/accumulate modes
     * over the T loop. */
    const int64_t GKN[][2] = {{8, 1}, {264, 37}, {1032, 1001}, {8200, 129}, {4104, 67}, {64, 8451}, {2048, 129},
                                {256, 1001}};
    for (int64_t T = 1; T <= 8; T++)
        for (size_t s = 0; s < sizeof(GKN) / sizeof(GKN[0]); s++)
            for (int d = 1; d < 3; d++) {
                const int mode = (int)((T + (int64_t)s) & 3);
                matmul_case(&w[0], ENG_F32, dts[d], ENG_F32, T, GKN[s][0], GKN[s][1], mode & 1, mode >> 1);
                matmul_case(&w[1], dts[d], dts[d], dts[d], T, GKN[s][0], GKN[s][1], mode & 1, mode >> 1);
                matmul_case(&w[2], dts[d], dts[d], ENG_F32, T, GKN[s][0], GKN[s][1], (mode + 1) & 1, mode >> 1);
            }
    for (int d = 0; d < 3; d++) print_worst(&w[d]);
    /* int8 weights and the fused GELU: every T of the GEMV and two prefill sizes, x half or f32 */
    worst we[2] = {{.op = "matmul int8 weights"}, {.op = "matmul + gelu"}};
    const int64_t EKN[][2] = {{16, 1}, {272, 37}, {2560, 1001}, {10240, 129}, {64, 8451}};
    const int64_t ETs[] = {1, 2, 3, 5, 8, 9, 130};
    for (size_t ti = 0; ti < sizeof(ETs) / sizeof(ETs[0]); ti++)
        for (size_t s = 0; s < sizeof(EKN) / sizeof(EKN[0]); s++) {
            const int64_t T = ETs[ti], K = EKN[s][0], N = EKN[s][1];
            const int mode = (int)((T + (int64_t)s) & 3);
            matmul_ext_case(&we[0], ENG_F16, ENG_F16, T, K, N, 1, 0, mode & 1, mode >> 1);
            matmul_ext_case(&we[0], ENG_F32, ENG_F32, T, K, N, 1, 0, (mode + 1) & 1, mode >> 1);
            matmul_ext_case(&we[1], ENG_F16, ENG_F16, T, K, N, s & 1, 1, 1, 0);
            matmul_ext_case(&we[1], ENG_BF16, ENG_BF16, T, K, N, 0, 1, 1, 0);
        }
    for (int d = 0; d < 2; d++) print_worst(&we[d]);
}

/* ---- matmul_ln: the LayerNorm folded into the decode GEMV -------------------------------------------------------- */

/* eng_matmul_ln on cuda against ref's layernorm + matmul (+ gelu). cuda folds the LayerNorm into the GEMV where
 * it takes the matmul (T <= 8 on aligned x, half or int8 weights) for half x of at most CUDA_GEMV_LN_MAX = 8192
 * elements; otherwise the LayerNorm kernel writes h and matmul_gelu reads it. Whether h was left untouched tells
 * which ran: *folded counts the folded calls, and with the defaults (SUGGESTD_CUDA_LN_FOLD and SUGGESTD_CUDA_GEMV
 * unset) each case checks it went the way expected. x is offset (mean ~5, std ~1.7) so the statistics matter.
 * Tolerance: both sides round LN(x) to x's dtype, from f32 statistics summed in different orders, so an element
 * now and then lands on the other side of a rounding tie: one ulp of x's dtype (times |LN(x)| < 2 and |w| < 1) in
 * a sum of rms sqrt(K / 3), a few times per row; plus matmul_ext_case's tolerance (ref rounds y before the gelu,
 * cuda after it; int8 fallbacks round the dequantized weights). gelu: 0 (lm_head), half the columns (fc_in|qkv)
 * or all. */
#define LN_FOLD_MAX 8192
static int ln_fold_default(void) {
    const char *f = getenv("SUGGESTD_CUDA_LN_FOLD"), *g = getenv("SUGGESTD_CUDA_GEMV");
    return !strncmp(eng_backend_name(be_gpu), "cuda", 4) && !(f && f[0]) && !(g && g[0]);
}

/* 1 when every cell of g's view still holds its canary. */
static int gt_view_untouched(gt *g) {
    const size_t n = (size_t)g->full.rows * (size_t)g->full.cols;
    float *all = gc_malloc(n * sizeof(float));
    int same = eng_tensor_read_f32(g->be, &g->full, all) == ERR_OK;
    const int64_t c0 = ((char *)g->view.data - (char *)g->full.data) / (int64_t)eng_dtype_size(g->full.dtype) -
                       g->full.stride;
    for (int64_t r = 1; r <= g->view.rows && same; r++)
        for (int64_t c = c0; c < c0 + g->view.cols && same; c++) {
            const size_t i = (size_t)(r * g->full.cols + c);
            same = !memcmp(&all[i], &g->canary[i], 4);
        }
    free(all);
    return same;
}

static void matmul_ln_case(worst *w, int *folded, eng_dtype xd, eng_dtype yd, int64_t T, int64_t K, int64_t N,
                           int q8, int64_t gelu_cols, int aligned, int alias) {
    float *x = rand_vec((size_t)(T * K), -1, 1), *wv = rand_vec((size_t)(N * K), -1, 1),
          *bv = rand_vec((size_t)N, -1, 1), *gv = rand_vec((size_t)K, 0.8f, 1.2f),
          *lbv = rand_vec((size_t)K, -0.1f, 0.1f);
    for (size_t i = 0; i < (size_t)(T * K); i++) x[i] = x[i] * 3 + 5;
    const eng_dtype wd = xd == ENG_F32 ? ENG_F16 : xd;
    void *hw = host_weights(wv, (size_t)(N * K), wd), *hb = host_weights(bv, (size_t)N, wd),
         *hg = host_weights(gv, (size_t)K, wd), *hlb = host_weights(lbv, (size_t)K, wd);
    void *hq = q8 ? host_q8(hw, wd, N, K) : NULL;
    float *out[2];
    eng_backend *bes[2] = {be_gpu, be_ref};
    for (int k = 0; k < 2; k++) {
        eng_tensor tw, tb, tg, tlb;
        gt gx, gy, gh;
        GC_OK(eng_weight_from_host(bes[k], q8 ? hq : hw, q8 ? ENG_Q8 : wd, N, K, &tw));
        GC_OK(eng_weight_from_host(bes[k], hb, wd, 1, N, &tb));
        GC_OK(eng_weight_from_host(bes[k], hg, wd, 1, K, &tg));
        GC_OK(eng_weight_from_host(bes[k], hlb, wd, 1, K, &tlb));
        GC_CHECK(!gt_init_at(&gx, bes[k], xd, T, K, x, aligned) && !gt_init(&gy, bes[k], yd, T, N, NULL), "gt_init");
        if (!alias) GC_CHECK(!gt_init_at(&gh, bes[k], xd, T, K, NULL, 1), "gt_init");
        eng_tensor *h = alias ? &gx.view : &gh.view;
        GC_OK(eng_matmul_ln(bes[k], &gy.view, &gx.view, &tg, &tlb, 1e-5f, h, &tw, &tb, gelu_cols));
        if (k == 0 && !alias) {
            const int fold = gt_view_untouched(&gh);
            const int want = T <= 8 && aligned && xd != ENG_F32 && T * K <= LN_FOLD_MAX;
            *folded += fold;
            GC_CHECK(!ln_fold_default() || fold == want, "matmul_ln T=%lld K=%lld %s: expected %s", (long long)T,
                     (long long)K, eng_dtype_name(xd), want ? "the fold (h untouched)" : "LayerNorm + matmul");
        }
        out[k] = gt_read(&gy);
        GC_CHECK(out[k] && gt_guard_ok(&gy, "matmul_ln y") && gt_guard_ok(&gx, "matmul_ln x") &&
                     (alias || gt_guard_ok(&gh, "matmul_ln h")),
                 "matmul_ln guard");
        gt_fini(&gx), gt_fini(&gy);
        if (!alias) gt_fini(&gh);
        eng_weight_free(bes[k], &tw), eng_weight_free(bes[k], &tb), eng_weight_free(bes[k], &tg);
        eng_weight_free(bes[k], &tlb);
    }
    char what[200];
    snprintf(what, sizeof(what), "matmul_ln x=%s w=%s y=%s T=%lld K=%lld N=%lld gelu=%lld%s%s", eng_dtype_name(xd),
             q8 ? "int8" : eng_dtype_name(wd), eng_dtype_name(yd), (long long)T, (long long)K, (long long)N,
             (long long)gelu_cols, aligned ? "" : " unaligned", alias ? " h=x" : "");
    const int dequant = q8 && (T > 8 || !aligned);
    const double rt = round_tol(yd) * (gelu_cols ? 2 : 1) + (dequant ? round_tol(ENG_F16) : 0);
    const double lt = 8 * round_tol(xd) / sqrt((double)K / 3), sum_nmse = 1e-11 * (1.0 + (double)K / 1024.0);
    GC_CHECK(close_ok(w, what, out[0], out[1], (size_t)(T * N), 1.0, 1e-5 + rt + lt, sum_nmse + rt * rt + lt * lt / 16),
             "%s", what);
    free(out[0]), free(out[1]), free(x), free(wv), free(bv), free(gv), free(lbv), free(hw), free(hb), free(hg),
        free(hlb), free(hq);
}

static void test_matmul_ln(void) {
    worst w[4] = {{.op = "matmul_ln half x, half y"}, {.op = "matmul_ln half x, f32 y"}, {.op = "matmul_ln int8 w"},
                  {.op = "matmul_ln fallbacks"}};
    int folded = 0;
    /* K with a tail of a 256-column step and without; 8192 the fold's limit at T = 1, 10240 (fc_out's) past it; N
     * odd, and 8451 for warps streaming several rows; every T of the GEMV */
    const int64_t KN[][2] = {{16, 1}, {264, 37}, {1032, 1001}, {2560, 129}, {8192, 67}, {10240, 67}, {64, 8451}};
    const int64_t n_kn = (int64_t)(sizeof(KN) / sizeof(KN[0]));
    for (int64_t T = 1; T <= 8; T++)
        for (int64_t s = 0; s < n_kn; s++) {
            const int64_t K = KN[s][0], N = KN[s][1], m = (T + s) % 3;
            const int64_t gelu = m == 0 ? 0 : m == 1 ? N / 2 : N;
            for (int d = 1; d < 3; d++) {
                matmul_ln_case(&w[0], &folded, dts[d], dts[d], T, K, N, 0, gelu, 1, 0);
                matmul_ln_case(&w[1], &folded, dts[d], ENG_F32, T, K, N, 0, (T + s) % 2 ? 0 : gelu, 1,
                               (T + s) % 4 == 1);
            }
            if (K % 16 == 0)
                matmul_ln_case(&w[2], &folded, dts[1 + (T & 1)], (T & 2) ? ENG_F32 : ENG_F16, T, K, N, 1, gelu, 1, 0);
        }
    /* 2B's fc_in|qkv (GELU on fc_in's 10240 columns) and N = 6000: on an H100 these take the kernel's CTAs of 16
     * warps (more rows than CTAs of 4 would hold at one row a warp) */
    matmul_ln_case(&w[0], &folded, ENG_F16, ENG_F16, 1, 2560, 17920, 0, 10240, 1, 0);
    matmul_ln_case(&w[1], &folded, ENG_BF16, ENG_F32, 1, 2560, 6000, 0, 0, 1, 0);
    matmul_ln_case(&w[2], &folded, ENG_F16, ENG_F16, 1, 2560, 17920, 1, 10240, 1, 0);
    /* the fallbacks (LayerNorm kernel, then matmul_gelu): x not 16-byte aligned, prefill rows (cuBLAS; int8
     * dequantized), f32 x */
    const int64_t FT[] = {3, 9, 33};
    for (size_t i = 0; i < sizeof(FT) / sizeof(FT[0]); i++) {
        const int64_t T = FT[i];
        matmul_ln_case(&w[3], &folded, ENG_F16, ENG_F16, T, 1032, 1001, 0, 500, T > 8, 0);
        matmul_ln_case(&w[3], &folded, ENG_BF16, ENG_F32, T, 2560, 129, 0, 0, T > 8, T == 9);
        matmul_ln_case(&w[3], &folded, ENG_F16, ENG_F16, T, 272, 37, 1, 37, T > 8, 0);
        matmul_ln_case(&w[3], &folded, ENG_F32, ENG_F32, T % 8, 264, 37, 0, 18, 1, 0);
    }
    for (int d = 0; d < 4; d++) print_worst(&w[d]);
    printf("  matmul_ln: %d cases folded into the GEMV\n", folded);
    GC_CHECK(!ln_fold_default() || folded > 0, "no matmul_ln case was folded");
}

#define OPS(be) (((const eng_backend_base *)(be))->ops)

/* ---- matmul_late: the decode GEMV whose first columns the op before writes --------------------------------------- */

/* eng_matmul_late on cuda against ref's matmul. Right before it a matmul writes x's late columns [0, kl) (xl = z .
 * wz^T, a GEMV streaming 4 MB or more, so where PDL lets the kernel start early it runs beside that one, and its
 * wait is what orders the two). The backend's op is called itself: where the kernel should take the call (one
 * aligned row, half x and w, eng_backend_has_late for the shape) it must answer ERR_OK, else ERR_UNSUPPORTED, and
 * then eng_matmul runs, as eng.c would. Tolerance: matmul_case's (another summation order), and matmul_ln's term
 * for x's elements that the two backends' first matmul rounded to the other side of a tie. */
#define LATE_KZ 2048
static void matmul_late_case(worst *w, int *took, int *expect, eng_dtype xd, eng_dtype yd, int64_t T, int64_t K,
                             int64_t kl, int64_t N, int use_bias, int accumulate, int aligned) {
    float *x = rand_vec((size_t)(T * K), -1, 1), *z = rand_vec((size_t)(T * LATE_KZ), -1, 1),
          *zw = rand_vec((size_t)(kl * LATE_KZ), -1.0f / 16, 1.0f / 16), *wv = rand_vec((size_t)(N * K), -1, 1),
          *bv = rand_vec((size_t)N, -1, 1), *y0 = rand_vec((size_t)(T * N), -1, 1);
    const eng_dtype wd = xd == ENG_F32 ? ENG_F16 : xd;
    void *hw = host_weights(wv, (size_t)(N * K), wd), *hb = host_weights(bv, (size_t)N, wd),
         *hz = host_weights(zw, (size_t)(kl * LATE_KZ), wd);
    float *out[2];
    eng_backend *bes[2] = {be_gpu, be_ref};
    const int want = eng_backend_has_late(be_gpu, N, K, kl) && T == 1 && aligned && xd != ENG_F32;
    *expect += want;
    for (int k = 0; k < 2; k++) {
        eng_tensor tw, tb, tz;
        gt gx, gy, gz;
        GC_OK(eng_weight_from_host(bes[k], hw, wd, N, K, &tw));
        GC_OK(eng_weight_from_host(bes[k], hb, wd, 1, N, &tb));
        GC_OK(eng_weight_from_host(bes[k], hz, wd, kl, LATE_KZ, &tz));
        GC_CHECK(!gt_init_at(&gx, bes[k], xd, T, K, x, aligned) && !gt_init(&gy, bes[k], yd, T, N, y0) &&
                     !gt_init_at(&gz, bes[k], xd, T, LATE_KZ, z, 1),
                 "gt_init");
        eng_tensor xl = eng_tensor_cols(gx.view, 0, kl);
        GC_OK(eng_matmul(bes[k], &xl, &gz.view, &tz, NULL, 0));
        const eng_tensor *b = use_bias ? &tb : NULL;
        if (k == 0) {
            const err rc = OPS(be_gpu)->matmul_late(be_gpu, &gy.view, &gx.view, &tw, b, accumulate, kl);
            GC_CHECK(rc == (want ? ERR_OK : ERR_UNSUPPORTED), "matmul_late T=%lld K=%lld kl=%lld: %s, expected %s",
                     (long long)T, (long long)K, (long long)kl, err_name(rc), want ? "OK" : "UNSUPPORTED");
            *took += rc == ERR_OK;
            if (rc == ERR_UNSUPPORTED) GC_OK(eng_matmul(be_gpu, &gy.view, &gx.view, &tw, b, accumulate));
        } else {
            GC_OK(eng_matmul(be_ref, &gy.view, &gx.view, &tw, b, accumulate));
        }
        out[k] = gt_read(&gy);
        GC_CHECK(out[k] && gt_guard_ok(&gy, "matmul_late y") && gt_guard_ok(&gx, "matmul_late x"),
                 "matmul_late guard");
        gt_fini(&gx), gt_fini(&gy), gt_fini(&gz);
        eng_weight_free(bes[k], &tw), eng_weight_free(bes[k], &tb), eng_weight_free(bes[k], &tz);
    }
    char what[200];
    snprintf(what, sizeof(what), "matmul_late x=%s w=%s y=%s T=%lld K=%lld kl=%lld N=%lld bias=%d acc=%d%s",
             eng_dtype_name(xd), eng_dtype_name(wd), eng_dtype_name(yd), (long long)T, (long long)K, (long long)kl,
             (long long)N, use_bias, accumulate, aligned ? "" : " unaligned");
    const double rt = round_tol(yd) * (use_bias && accumulate ? 2 : 1), sum_nmse = 1e-11 * (1.0 + (double)K / 1024.0);
    const double lt = 8 * round_tol(xd) / sqrt((double)K / 3);
    GC_CHECK(close_ok(w, what, out[0], out[1], (size_t)(T * N), 1.0, 1e-5 + rt + lt, sum_nmse + rt * rt + lt * lt / 16),
             "%s", what);
    free(out[0]), free(out[1]), free(x), free(z), free(zw), free(wv), free(bv), free(y0), free(hw), free(hb), free(hz);
}

static void test_matmul_late(void) {
    if (!OPS(be_gpu)->matmul_late) {
        printf("  matmul_late                skipped: the backend has no such op\n");
        return;
    }
    worst w[2] = {{.op = "matmul_late half y"}, {.op = "matmul_late f32 y"}};
    int took = 0, expect = 0;
    /* {K, kl, N}: 350M's and 2B's layer ([att | mlp] . [out_proj | fc_out]^T), rows that leave the last CTA short,
     * an early part that ends inside a warp's 32 chunks, a late part of one chunk, tiny shapes */
    const int64_t S[][3] = {{5120, 1024, 1024}, {12800, 2560, 2560}, {1032, 520, 1001}, {8200, 8, 133},
                            {264, 256, 37}, {16, 8, 1}, {2056, 1024, 4099}};
    for (size_t s = 0; s < sizeof(S) / sizeof(S[0]); s++)
        for (int d = 1; d < 3; d++) {
            const int mode = (int)((s + (size_t)d) & 3);
            matmul_late_case(&w[0], &took, &expect, dts[d], dts[d], 1, S[s][0], S[s][1], S[s][2], mode & 1,
                             mode >> 1, 1);
            matmul_late_case(&w[1], &took, &expect, dts[d], ENG_F32, 1, S[s][0], S[s][1], S[s][2], 1, 1, 1);
        }
    /* what it refuses: two rows, unaligned x, f32 x, a late part not a multiple of 8 */
    matmul_late_case(&w[0], &took, &expect, ENG_F16, ENG_F16, 2, 5120, 1024, 1024, 1, 1, 1);
    matmul_late_case(&w[0], &took, &expect, ENG_F16, ENG_F16, 1, 1032, 520, 101, 1, 1, 0);
    matmul_late_case(&w[1], &took, &expect, ENG_F32, ENG_F32, 1, 1032, 520, 101, 1, 0, 1);
    matmul_late_case(&w[0], &took, &expect, ENG_BF16, ENG_BF16, 1, 1032, 522, 101, 0, 1, 1);
    for (int i = 0; i < 2; i++) print_worst(&w[i]);
    printf("  matmul_late: %d of %d cases took the kernel%s\n", took, 32,
           expect ? "" : " (no PDL here: every case falls back)");
    GC_CHECK(took == expect, "matmul_late: %d cases took the kernel, expected %d", took, expect);
    GC_CHECK(!eng_backend_has_late(be_gpu, 2560, 12800, 2560) || expect == 28, "matmul_late: %d cases expected to "
             "take the kernel on a device that takes 2B's shape, want 28", expect);
}

/* ---- gelu, rope, add --------------------------------------------------------------------------------------------- */

static void test_gelu(void) {
    worst w = {.op = "gelu"};
    const int64_t T = 33, D = 1001;
    size_t n = (size_t)(T * D);
    for (int d = 0; d < 3; d++) {
        float *x = rand_vec(n, -12, 12);
        for (size_t i = 0; i < n; i += 3) x[i] *= 0.05f;
        const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-6f, 0.625f, -0.7f, 9.0f, -9.0f, 40.0f, -40.0f,
                                 1e4f, -1e4f};
        memcpy(x, special, sizeof(special));
        float *out[2];
        eng_backend *bes[2] = {be_gpu, be_ref};
        for (int k = 0; k < 2; k++) {
            gt g;
            GC_CHECK(!gt_init(&g, bes[k], dts[d], T, D, x), "gt_init");
            GC_OK(eng_gelu(bes[k], &g.view));
            out[k] = gt_read(&g);
            GC_CHECK(out[k] && gt_guard_ok(&g, "gelu"), "gelu guard");
            gt_fini(&g);
        }
        /* CUDA's tanhf is within 2 ulp of libm's; where 1 + tanh cancels (u << 0) judge against |u|/2 as the CPU
         * test does. Half outputs add one rounding. */
        const double tol = 1e-6 + round_tol(dts[d]);
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double)out[0][i] - out[1][i]);
            double scale = fabs((double)out[1][i]) + 0.5 * fabs((double)x[i]) * (x[i] < 0 ? 1 : 0) + 1e-38;
            if (e / scale > w.rel) w.rel = e / scale;
            GC_CHECK(e / scale <= tol, "gelu %s (%.9g): cuda %.9g, ref %.9g", eng_dtype_name(dts[d]), x[i], out[0][i],
                     out[1][i]);
        }
        w.cases++;
        free(out[0]), free(out[1]), free(x);
    }
    print_worst(&w);
}

static void test_rope(void) {
    worst w = {.op = "rope"};
    const int32_t geo[][3] = {{4, 16, 8}, {3, 40, 24}, {2, 64, 32}, {2, 64, 64}, {3, 40, 0}, {32, 80, 64}, {2, 256, 64}};
    for (size_t gi = 0; gi < sizeof(geo) / sizeof(geo[0]); gi++)
        for (int d = 0; d < 3; d++) {
            eng_attn_shape sh = {.n_head = geo[gi][0], .head_dim = geo[gi][1], .rotary_dim = geo[gi][2]};
            const int64_t T = 37, D = (int64_t)sh.n_head * sh.head_dim;
            size_t n = (size_t)(T * D);
            float *x = rand_vec(n, -2, 2);
            int32_t pos[37];
            for (int64_t r = 0; r < T; r++) pos[r] = r < 3 ? (int32_t)r : (int32_t)(rng_next(&R) % 2048);
            pos[T - 1] = 2047;
            pos[T - 2] = 5000; /* past the first table: it grows */
            float *out[2];
            eng_backend *bes[2] = {be_gpu, be_ref};
            for (int k = 0; k < 2; k++) {
                gt g;
                GC_CHECK(!gt_init(&g, bes[k], dts[d], T, D, x), "gt_init");
                GC_OK(eng_rope(bes[k], &g.view, pos, sh));
                out[k] = gt_read(&g);
                GC_CHECK(out[k] && gt_guard_ok(&g, "rope"), "rope guard");
                gt_fini(&g);
            }
            /* same table values (host libm), same f32 products, no fma: bit-identical */
            GC_CHECK(close_ok(&w, "rope", out[0], out[1], n, 0, 0, 0), "rope %s heads=%d hd=%d rd=%d",
                     eng_dtype_name(dts[d]), sh.n_head, sh.head_dim, sh.rotary_dim);
            free(out[0]), free(out[1]), free(x);
        }
    eng_tensor t;
    int32_t bad[2] = {0, -1};
    GC_OK(eng_tensor_alloc(be_gpu, ENG_F32, 2, 8, &t));
    GC_CALL(ERR_INVALID, eng_rope(be_gpu, &t, bad, (eng_attn_shape){1, 8, 8}));
    eng_tensor_free(be_gpu, &t);
    print_worst(&w);
}

static void test_add(void) {
    worst w = {.op = "add"};
    const int64_t shapes[][2] = {{1, 40}, {7, 100}, {64, 1024}, {33, 77}};
    for (size_t s = 0; s < 4; s++)
        for (int d = 0; d < 3; d++) {
            int64_t T = shapes[s][0], D = shapes[s][1];
            size_t n = (size_t)(T * D);
            float *x = rand_vec(n, -1, 1), *y = rand_vec(n, -1, 1), *out[2];
            eng_backend *bes[2] = {be_gpu, be_ref};
            for (int k = 0; k < 2; k++) {
                gt gx, gy;
                GC_CHECK(!gt_init(&gx, bes[k], dts[(d + s) % 3], T, D, x) && !gt_init(&gy, bes[k], dts[d], T, D, y),
                         "gt_init");
                GC_OK(eng_add(bes[k], &gy.view, &gx.view));
                out[k] = gt_read(&gy);
                GC_CHECK(out[k] && gt_guard_ok(&gy, "add"), "add guard");
                gt_fini(&gx), gt_fini(&gy);
            }
            GC_CHECK(close_ok(&w, "add", out[0], out[1], n, 0, 0, 0), "add %s", eng_dtype_name(dts[d]));
            free(out[0]), free(out[1]), free(x), free(y);
        }
    print_worst(&w);
}

/* ---- kv_store + attention ---------------------------------------------------------------------------------------- */

#define N_BLOCKS 240
#define N_SEQS 3

/* test_rope_kv: attention_step stores through eng_rope_kv_store (RoPE on q | k over these rotary dims, then the
 * cache) instead of eng_kv_store, and q | k | v must come out bit-identical to ref's rope + store */
static int rope_kv_rd = -1;
/* test_rope_kv_attention: with rope_kv_rd, both backends run eng_rope_kv_attention instead (cuda: RoPE and the store
 * folded into the decode kernel for batches of single-token sequences; ref: the two ops), outputs compared; q and k
 * are undefined after it, and the stored keys are checked by the later steps' attention over them */
static int rope_kv_fold;

/* One step of kv_store + attention on `gpu` and ref with fresh random q, k, v (column views of one fused buffer),
 * outputs compared. */
static void attention_step(worst *w, eng_backend *gpu, eng_kv *kv[2], const eng_batch *batch, eng_dtype kvdt,
                           eng_dtype qd, eng_attn_shape sh, int in_place, const char *what) {
    const int32_t dm = sh.n_head * sh.head_dim, layer = 1, n_rows = batch->n_rows;
    size_t n = (size_t)n_rows * (size_t)dm;
    float *qkv = rand_vec((size_t)n_rows * 3 * (size_t)dm, -1, 1), *out[2], *roped[2] = {NULL, NULL};
    for (size_t i = 0; i < (size_t)n_rows * 3 * (size_t)dm; i += 5) qkv[i] *= 4;
    eng_backend *bes[2] = {gpu, be_ref};
    for (int k = 0; k < 2; k++) {
        gt g, go;
        GC_CHECK(!gt_init(&g, bes[k], qd, n_rows, 3 * dm, qkv), "gt_init");
        eng_tensor q = eng_tensor_cols(g.view, 0, dm), kt = eng_tensor_cols(g.view, dm, dm),
                   vt = eng_tensor_cols(g.view, 2 * dm, dm);
        if (rope_kv_rd >= 0 && rope_kv_fold) {
            const eng_attn_shape rs = {sh.n_head, sh.head_dim, rope_kv_rd < sh.head_dim ? rope_kv_rd : sh.head_dim};
            GC_CHECK(!gt_init(&go, bes[k], qd, n_rows, dm, NULL), "gt_init");
            GC_OK(eng_rope_kv_attention(bes[k], &go.view, &g.view, kv[k], layer, batch, rs));
            out[k] = gt_read(&go);
            GC_CHECK(out[k] && gt_guard_ok(&go, "rope_kv_attention out"), "rope_kv_attention guard");
            GC_CHECK(gt_guard_ok(&g, "rope_kv_attention qkv"), "rope_kv_attention qkv guard");
            gt_fini(&go), gt_fini(&g);
            continue;
        }
        if (rope_kv_rd >= 0) {
            const eng_attn_shape rs = {sh.n_head, sh.head_dim, rope_kv_rd < sh.head_dim ? rope_kv_rd : sh.head_dim};
            GC_OK(eng_rope_kv_store(bes[k], &g.view, kv[k], layer, batch, rs));
            roped[k] = gt_read(&g);
            GC_CHECK(roped[k], "read q | k | v");
        } else {
            GC_OK(eng_kv_store(bes[k], kv[k], layer, &kt, &vt, batch));
        }
        if (in_place) {
            GC_OK(eng_attention(bes[k], &q, &q, kv[k], layer, batch, sh));
            out[k] = gc_malloc(n * 4);
            GC_OK(eng_tensor_read_f32(bes[k], &q, out[k]));
        } else {
            GC_CHECK(!gt_init(&go, bes[k], qd, n_rows, dm, NULL), "gt_init");
            GC_OK(eng_attention(bes[k], &go.view, &q, kv[k], layer, batch, sh));
            out[k] = gt_read(&go);
            GC_CHECK(out[k] && gt_guard_ok(&go, "attention out"), "attention guard");
            gt_fini(&go);
        }
        GC_CHECK(gt_guard_ok(&g, "attention qkv"), "attention qkv guard");
        gt_fini(&g);
    }
    /* f32 cache: f32 vs double. f16 cache: ref rounds the normalized probabilities to f16, cuda (flash
     * formulation) does not: up to 2^-11 relative per probability, which over a few dominant keys reaches
     * ~2.5e-3 of the typical output (seen on an H200: 2.7e-3, nmse 1.4e-7). The tensor-core kernel (default
     * backend, f16 cache, head_dim % 16 == 0, prefill tiles) rounds the unnormalized probabilities (<= 1) to f16
     * too, independently of ref's rounding, so the difference is up to two such roundings; with an f32 q it also
     * rounds q to f16 for the MMA, a score error of ~2^-12 |q||k| / sqrt(head_dim), as large as P's here (scores
     * of std ~1.3): 8e-3 for that mix (seen on an H100: 4.5e-3, nmse 1.4e-7, and 7.08e-3 on another draw of the
     * same shapes, at head_dim 256; f16 q 2.5e-3; the SIMT kernel 1.7e-3 on the same cases). Half q/out add one
     * rounding. */
    const int mma = gpu != be_simt && kvdt == ENG_F16 && sh.head_dim % 16 == 0;
    double tol = (kvdt == ENG_F32 ? 2e-5 : mma && qd == ENG_F32 ? 8e-3 : 4e-3) + round_tol(qd);
    GC_CHECK(close_ok(w, what, out[0], out[1], n, 1.0, tol, tol * tol / 4), "%s", what);
    if (rope_kv_rd >= 0 && !rope_kv_fold)
        GC_CHECK(!memcmp(roped[0], roped[1], (size_t)n_rows * 3 * (size_t)dm * sizeof(float)),
                 "%s: q | k | v after rope_kv_store differ from ref's", what);
    free(out[0]), free(out[1]), free(qkv), free(roped[0]), free(roped[1]);
}

/* Three sequences with shuffled block tables go through steps of prefill chunks and decodes; the third grows past
 * 1,200 positions so decode rows are split over the context. */
static void attention_case(worst *w, eng_dtype kvdt, eng_dtype qd, int32_t n_head, int32_t head_dim, int in_place) {
    const int32_t dm = n_head * head_dim;
    const eng_attn_shape sh = {.n_head = n_head, .head_dim = head_dim, .rotary_dim = head_dim};
    const int32_t steps[][N_SEQS] = {{20, 16, 3}, {1, 5, 200}, {17, 1, 500}, {1, 0, 500},
                                     {0, 1, 1},   {2, 27, 1},  {8, 1, 4},    {1, 1, 1}};
    int32_t blocks[N_SEQS][N_BLOCKS / N_SEQS], perm[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS; i++) perm[i] = i;
    for (int i = N_BLOCKS - 1; i > 0; i--) {
        int j = (int)(rng_next(&R) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int s = 0; s < N_SEQS; s++)
        for (int b = 0; b < N_BLOCKS / N_SEQS; b++) blocks[s][b] = perm[b * N_SEQS + s];
    eng_kv *kv[2];
    eng_backend *bes[2] = {be_gpu, be_ref};
    for (int k = 0; k < 2; k++) GC_OK(eng_kv_create(bes[k], 2, dm, N_BLOCKS, kvdt, &kv[k]));
    GC_CHECK(eng_kv_bytes(kv[0]) == eng_kv_bytes(kv[1]), "kv bytes differ");
    int32_t pos[N_SEQS] = {0, 0, 0};
    for (size_t st = 0; st < sizeof(steps) / sizeof(steps[0]); st++) {
        eng_seq seqs[N_SEQS];
        int32_t positions[1000], tokens[1000], n_rows = 0, order[N_SEQS] = {2, 0, 1};
        for (int oi = 0; oi < N_SEQS; oi++) {
            int s = order[oi];
            seqs[s] = (eng_seq){.row0 = n_rows, .n_tokens = steps[st][s], .pos = pos[s], .blocks = blocks[s],
                                .n_blocks = N_BLOCKS / N_SEQS};
            for (int32_t t = 0; t < steps[st][s]; t++) positions[n_rows] = pos[s] + t, tokens[n_rows++] = 0;
        }
        eng_batch batch = {.n_seqs = N_SEQS, .seqs = seqs, .n_rows = n_rows, .tokens = tokens, .positions = positions};
        char what[160];
        snprintf(what, sizeof(what), "attention kv=%s q=%s heads=%d hd=%d step %zu%s", eng_dtype_name(kvdt),
                 eng_dtype_name(qd), n_head, head_dim, st, in_place ? " in place" : "");
        attention_step(w, be_gpu, kv, &batch, kvdt, qd, sh, in_place, what);
        for (int s = 0; s < N_SEQS; s++) pos[s] += steps[st][s];
    }
    for (int k = 0; k < 2; k++) eng_kv_destroy(bes[k], kv[k]);
}

/* A batched decode step (the scheduler's): n_seqs sequences of one new row each, contexts from 1 to ~1,600 keys in
 * scrambled blocks, so tiles x heads fill the GPU with few or no key splits (cuda: the decode kernel's streaming
 * stages rather than its in-launch split merge). The contexts are stored first, by kv_store alone. */
static void decode_batch_case(worst *w, eng_dtype qd, int32_t n_head, int32_t head_dim, int32_t n_seqs) {
    const eng_attn_shape sh = {.n_head = n_head, .head_dim = head_dim, .rotary_dim = head_dim};
    const int32_t dm = n_head * head_dim;
    int32_t ctx[64], nb[64], total = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        ctx[s] = s % 5 == 0 ? 1 + 3 * s : 1000 + 37 * s % 600;
        nb[s] = ctx[s] / ENG_KV_BLOCK + 1;
        total += nb[s];
    }
    int32_t *perm = gc_malloc((size_t)total * sizeof(int32_t)), *pos = gc_malloc(256 * sizeof(int32_t));
    int32_t toks[64] = {0}, dpos[64];
    for (int32_t i = 0; i < total; i++) perm[i] = i;
    for (int32_t i = total - 1; i > 0; i--) {
        int32_t j = (int32_t)(rng_next(&R) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    eng_kv *kv[2];
    eng_backend *bes[2] = {be_gpu, be_ref};
    for (int k = 0; k < 2; k++) GC_OK(eng_kv_create(bes[k], 2, dm, total, ENG_F16, &kv[k]));
    eng_seq seqs[64];
    for (int32_t s = 0, off = 0; s < n_seqs; off += nb[s], s++)
        seqs[s] = (eng_seq){.row0 = s, .n_tokens = 1, .pos = ctx[s], .blocks = perm + off, .n_blocks = nb[s]};
    for (int32_t s = 0; s < n_seqs; s++)
        for (int32_t p0 = 0; p0 < ctx[s]; p0 += 256) { /* the context, 256 rows at a time */
            const int32_t n = ctx[s] - p0 < 256 ? ctx[s] - p0 : 256;
            eng_seq one = seqs[s];
            one.row0 = 0, one.n_tokens = n, one.pos = p0;
            for (int32_t t = 0; t < n; t++) pos[t] = p0 + t;
            eng_batch b = {.n_seqs = 1, .seqs = &one, .n_rows = n, .tokens = toks, .positions = pos};
            float *kvr = rand_vec((size_t)n * 2 * (size_t)dm, -1, 1);
            for (int k = 0; k < 2; k++) {
                gt g;
                GC_CHECK(!gt_init(&g, bes[k], qd, n, 2 * dm, kvr), "gt_init");
                eng_tensor kt = eng_tensor_cols(g.view, 0, dm), vt = eng_tensor_cols(g.view, dm, dm);
                GC_OK(eng_kv_store(bes[k], kv[k], 1, &kt, &vt, &b));
                gt_fini(&g);
            }
            free(kvr);
        }
    for (int32_t s = 0; s < n_seqs; s++) dpos[s] = ctx[s];
    eng_batch batch = {.n_seqs = n_seqs, .seqs = seqs, .n_rows = n_seqs, .tokens = toks, .positions = dpos};
    char what[160];
    snprintf(what, sizeof(what), "batched decode attention q=%s heads=%d hd=%d seqs=%d", eng_dtype_name(qd), n_head,
             head_dim, n_seqs);
    attention_step(w, be_gpu, kv, &batch, ENG_F16, qd, sh, 0, what);
    for (int k = 0; k < 2; k++) eng_kv_destroy(bes[k], kv[k]);
    free(perm), free(pos);
}

#define PF_MAX_SEQS 4

/* The prefill tiles' edges (cuda_attn_mma.cu: 64-row tiles, 64- or 32-key tiles, causal diagonal, key splits): one
 * sequence's chunk of n_new rows at position pos0, its first pos0 positions stored (and attended, also compared) by
 * an earlier step, in a batch with n_dec decode sequences of different contexts (their rows stay on the SIMT
 * kernel); scrambled block tables shared out of one pool. */
static void prefill_case(worst *w, eng_backend *gpu, eng_dtype kvdt, eng_dtype qd, int32_t n_head, int32_t head_dim,
                         int32_t pos0, int32_t n_new, int32_t n_dec) {
    const eng_attn_shape sh = {.n_head = n_head, .head_dim = head_dim, .rotary_dim = head_dim};
    const int32_t n_seqs = 1 + n_dec;
    int32_t ctx[PF_MAX_SEQS], nb[PF_MAX_SEQS], total = 0;
    ctx[0] = pos0;
    for (int32_t s = 1; s < n_seqs; s++) ctx[s] = 9 + 131 * s; /* 140, 271, 402 */
    for (int32_t s = 0; s < n_seqs; s++) {
        nb[s] = (ctx[s] + (s ? 1 : n_new) + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK + 1;
        total += nb[s];
    }
    int32_t *perm = gc_malloc((size_t)total * sizeof(int32_t));
    for (int32_t i = 0; i < total; i++) perm[i] = i;
    for (int32_t i = total - 1; i > 0; i--) {
        int32_t j = (int32_t)(rng_next(&R) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    eng_kv *kv[2];
    eng_backend *bes[2] = {gpu, be_ref};
    for (int k = 0; k < 2; k++) GC_OK(eng_kv_create(bes[k], 2, n_head * head_dim, total, kvdt, &kv[k]));
    const int32_t max_rows = pos0 + n_new + 1000 * n_dec;
    int32_t *positions = gc_malloc((size_t)max_rows * sizeof(int32_t)), *tokens = gc_malloc((size_t)max_rows * 4);
    for (int step = 0; step < 2; step++) {
        /* step 0: every sequence's context (the prefix); step 1: the chunk and one decode row each. Rows: the
         * first decode sequence, then the prefill, then the other decode sequences. */
        eng_seq seqs[PF_MAX_SEQS];
        int32_t n_rows = 0;
        for (int32_t oi = 0; oi < n_seqs; oi++) {
            const int32_t s = oi == 0 && n_dec ? 1 : oi == 1 && n_dec ? 0 : oi;
            const int32_t n_tok = step == 0 ? ctx[s] : s ? 1 : n_new, at = step == 0 ? 0 : ctx[s];
            seqs[s] = (eng_seq){.row0 = n_rows, .n_tokens = n_tok, .pos = at, .blocks = perm + (s ? nb[0] : 0),
                                .n_blocks = nb[s]};
            for (int32_t p = 1; p < s; p++) seqs[s].blocks += nb[p];
            for (int32_t t = 0; t < n_tok; t++) positions[n_rows] = at + t, tokens[n_rows++] = 0;
        }
        if (n_rows == 0) continue;
        eng_batch batch = {.n_seqs = n_seqs, .seqs = seqs, .n_rows = n_rows, .tokens = tokens, .positions = positions};
        char what[200];
        snprintf(what, sizeof(what), "prefill attention %s kv=%s q=%s heads=%d hd=%d pos0=%d new=%d decodes=%d %s",
                 gpu == be_simt ? "simt" : "default", eng_dtype_name(kvdt), eng_dtype_name(qd), n_head, head_dim,
                 pos0, n_new, n_dec, step == 0 ? "(prefix)" : "(chunk)");
        attention_step(w, gpu, kv, &batch, kvdt, qd, sh, 0, what);
    }
    for (int k = 0; k < 2; k++) eng_kv_destroy(bes[k], kv[k]);
    free(perm), free(positions), free(tokens);
}

static void test_attention(void) {
    worst w[3] = {{.op = "attention kv f32"}, {.op = "attention kv f16"}, {.op = "attention kv f16, q f16"}};
    const int32_t geo[][2] = {{3, 16}, {3, 40}, {2, 64}, {2, 80}, {1, 256}};
    for (size_t g = 0; g < sizeof(geo) / sizeof(geo[0]); g++) {
        attention_case(&w[0], ENG_F32, ENG_F32, geo[g][0], geo[g][1], 0);
        attention_case(&w[1], ENG_F16, ENG_F32, geo[g][0], geo[g][1], 0);
        attention_case(&w[2], ENG_F16, ENG_F16, geo[g][0], geo[g][1], 0);
    }
    attention_case(&w[1], ENG_F16, ENG_F32, 2, 64, 1);
    attention_case(&w[2], ENG_F16, ENG_F16, 2, 80, 1);
    decode_batch_case(&w[2], ENG_F16, 32, 80, 24); /* 2B heads: 768 tiles x heads, unsplit */
    decode_batch_case(&w[1], ENG_F32, 16, 256, 9); /* 6B heads: 144, a few chunks each */
    decode_batch_case(&w[2], ENG_F16, 16, 64, 40);
    for (int d = 0; d < 3; d++) print_worst(&w[d]);
}

/* eng_rope_kv_store (one launch on CUDA unless SUGGESTD_CUDA_ROPE_KV=0; main sets 1) against ref's rope + store:
 * q | k | v bit-identical after it, and attention over the caches it wrote within attention's tolerance; CodeGen's
 * rotary dims (32 of 64, 64 of 80 and of 256) and all of them. */
static void test_rope_kv(void) {
    worst w[2] = {{.op = "rope_kv_store kv f32"}, {.op = "rope_kv_store kv f16"}};
    const int32_t geo[][3] = {{2, 64, 32}, {2, 80, 64}, {1, 256, 64}, {3, 40, 40}};
    for (size_t g = 0; g < sizeof(geo) / sizeof(geo[0]); g++) {
        rope_kv_rd = geo[g][2];
        attention_case(&w[0], ENG_F32, ENG_F32, geo[g][0], geo[g][1], 0);
        attention_case(&w[1], ENG_F16, ENG_F16, geo[g][0], geo[g][1], 0);
    }
    rope_kv_rd = -1;
    for (int d = 0; d < 2; d++) print_worst(&w[d]);
}

/* eng_rope_kv_attention against ref's rope + store + attention, on test_rope_kv's shapes: attention_case's steps of
 * single-token sequences (a sequence of no tokens beside them included) and decode_batch_case's batches take the
 * folded decode kernel on f16 caches; the other steps, and f32 caches, the two ops. */
static void test_rope_kv_attention(void) {
    worst w[2] = {{.op = "rope_kv_attention kv f32"}, {.op = "rope_kv_attention kv f16"}};
    const int32_t geo[][3] = {{2, 64, 32}, {2, 80, 64}, {1, 256, 64}, {3, 40, 40}};
    rope_kv_fold = 1;
    for (size_t g = 0; g < sizeof(geo) / sizeof(geo[0]); g++) {
        rope_kv_rd = geo[g][2];
        attention_case(&w[0], ENG_F32, ENG_F32, geo[g][0], geo[g][1], 0);
        attention_case(&w[1], ENG_F16, ENG_F16, geo[g][0], geo[g][1], 0);
        attention_case(&w[1], ENG_F16, ENG_F32, geo[g][0], geo[g][1], 0);
    }
    rope_kv_rd = 32;
    decode_batch_case(&w[1], ENG_F16, 32, 80, 24);
    rope_kv_rd = 64;
    decode_batch_case(&w[1], ENG_F16, 16, 256, 9);
    decode_batch_case(&w[1], ENG_F16, 16, 64, 40);
    rope_kv_rd = -1, rope_kv_fold = 0;
    for (int d = 0; d < 2; d++) print_worst(&w[d]);
}

/* f16 caches with head_dim % 16 == 0 run prefill tiles on tensor cores (be_gpu) and, for comparison, on the SIMT
 * kernel (be_simt); 1 and 5 new rows are decode rows / a short tile, 63 / 64 / 65 the tile edge, 130 and 300 several
 * tiles and key tiles with splits; pos0 75 puts the diagonal mid key tile and mid block. The last cases have tiles x
 * heads >= 2 x SMs on an H100/H200, so they run unsplit. */
static void test_attention_prefill(void) {
    worst w[3] = {{.op = "prefill attn kv f16 (mma)"}, {.op = "prefill attn kv f16, q f16"},
                  {.op = "prefill attn kv f16 (simt)"}};
    const int32_t geo[][2] = {{2, 16}, {2, 64}, {2, 80}, {1, 256}}, news[] = {1, 5, 63, 64, 65, 130, 300};
    for (size_t g = 0; g < sizeof(geo) / sizeof(geo[0]); g++)
        for (size_t ni = 0; ni < sizeof(news) / sizeof(news[0]); ni++)
            for (int32_t pos0 = 0; pos0 <= 75; pos0 += 75) {
                const int32_t n_dec = (int32_t)((ni + g) % 3); /* 0, 1 or 2 decode sequences alongside */
                prefill_case(&w[0], be_gpu, ENG_F16, ENG_F32, geo[g][0], geo[g][1], pos0, news[ni], n_dec);
                prefill_case(&w[1], be_gpu, ENG_F16, ENG_F16, geo[g][0], geo[g][1], pos0, news[ni], 2 - n_dec);
                if (be_simt) prefill_case(&w[2], be_simt, ENG_F16, ENG_F32, geo[g][0], geo[g][1], pos0, news[ni], n_dec);
            }
    prefill_case(&w[1], be_gpu, ENG_F16, ENG_F16, 32, 80, 0, 600, 1);  /* the 2B head shape, 10 tiles x 32 heads */
    prefill_case(&w[0], be_gpu, ENG_F16, ENG_F32, 24, 256, 40, 704, 0); /* 11 tiles x 24 heads */
    if (be_simt) prefill_case(&w[2], be_simt, ENG_F16, ENG_F16, 32, 80, 0, 600, 1);
    for (int d = 0; d < 3; d++) print_worst(&w[d]);
}

/* ---- backend creation and health --------------------------------------------------------------------------------- */

static void test_backend(void) {
    eng_backend *be = NULL;
    errbuf eb = {0};
    GC_CALL(ERR_INVALID, eng_backend_create("cuda:99", 0, &be, &eb));
    GC_CHECK(strstr(eb.msg, "no such device"), "message: %s", eb.msg);
    GC_CALL(ERR_INVALID, eng_backend_create("cuda:x", 0, &be, &eb));
    GC_OK(eng_backend_create("cuda:0", 0, &be, &eb));
    GC_OK(eng_backend_status(be, &eb));
    GC_CHECK(eng_backend_act_dtype(be, ENG_F32) == ENG_F32 && eng_backend_act_dtype(be, ENG_F16) == ENG_F16,
             "act dtype follows the weights");
    GC_CHECK(eng_backend_copies_weights(be), "cuda copies weights");
    /* an allocation far beyond any GPU is ERR_NOMEM and leaves the backend healthy */
    eng_tensor t;
    GC_CALL(ERR_NOMEM, eng_tensor_alloc(be, ENG_F32, (int64_t)1 << 22, (int64_t)1 << 20, &t));
    GC_OK(eng_backend_status(be, &eb));
    GC_OK(eng_tensor_alloc(be, ENG_F32, 4, 4, &t));
    eng_tensor_free(be, &t);
    eng_backend_destroy(be);
}

/* eng_branch on CUDA: the contract (SIDE inside a branch and MAIN outside one are ERR_INVALID, JOIN outside one
 * does nothing), and ops on both branches land before anything issued after the join: 50 adds y += x on the side
 * while z += x runs on the main branch, then the reads (f32, so the host's sums in the same order are exact). A
 * JOIN straight after SIDE (a failed op's path in forward.c) also waits for the side's work. */
static void test_branch(void) {
    if (!eng_backend_has_branches(be_gpu)) {
        printf("  branch                     skipped: no branches (SUGGESTD_CUDA_BRANCHES=0)\n");
        return;
    }
    GC_OK(eng_branch(be_gpu, ENG_BRANCH_JOIN));
    GC_CALL(ERR_INVALID, eng_branch(be_gpu, ENG_BRANCH_MAIN));
    GC_OK(eng_branch(be_gpu, ENG_BRANCH_SIDE));
    GC_CALL(ERR_INVALID, eng_branch(be_gpu, ENG_BRANCH_SIDE));
    GC_OK(eng_branch(be_gpu, ENG_BRANCH_MAIN));
    GC_CALL(ERR_INVALID, eng_branch(be_gpu, ENG_BRANCH_MAIN));
    GC_OK(eng_branch(be_gpu, ENG_BRANCH_JOIN));
    const int64_t T = 64, D = 1024;
    const size_t n = (size_t)(T * D);
    float *x = rand_vec(n, -1, 1), *y = rand_vec(n, -1, 1), *z = rand_vec(n, -1, 1);
    for (int direct = 0; direct < 2; direct++) {
        gt gx, gy, gz;
        GC_CHECK(!gt_init(&gx, be_gpu, ENG_F32, T, D, x) && !gt_init(&gy, be_gpu, ENG_F32, T, D, y) &&
                     !gt_init(&gz, be_gpu, ENG_F32, T, D, z),
                 "gt_init");
        GC_OK(eng_branch(be_gpu, ENG_BRANCH_SIDE));
        for (int i = 0; i < 50; i++) GC_OK(eng_add(be_gpu, &gy.view, &gx.view));
        if (!direct) {
            GC_OK(eng_branch(be_gpu, ENG_BRANCH_MAIN));
            GC_OK(eng_add(be_gpu, &gz.view, &gx.view));
        }
        GC_OK(eng_branch(be_gpu, ENG_BRANCH_JOIN));
        float *oy = gt_read(&gy), *oz = gt_read(&gz);
        GC_CHECK(oy && oz && gt_guard_ok(&gy, "branch y") && gt_guard_ok(&gz, "branch z"), "branch reads");
        size_t bad = 0;
        for (size_t i = 0; oy && oz && i < n; i++) {
            float wy = y[i], wz = direct ? z[i] : z[i] + x[i];
            for (int k = 0; k < 50; k++) wy += x[i];
            bad += oy[i] != wy || oz[i] != wz;
        }
        GC_CHECK(bad == 0, "branch%s: %zu of %zu elements differ from the host's sums", direct ? " (join only)" : "",
                 bad, 2 * n);
        free(oy), free(oz);
        gt_fini(&gx), gt_fini(&gy), gt_fini(&gz);
    }
    free(x), free(y), free(z);
    printf("  branch                     side and main adds joined: exact over %d cases\n", 2);
}

/* eng_logits_top on the device against samp_top_compute on the same rows read back (the CPU path): the same
 * candidates in the same order (ties on a 1/16 grid, so many equal values straddle the K-th; -inf and NaN
 * entries; a padded vocabulary), sums within n_valid ulps. Rows of f32 and half logits, 1 to 65 rows (past 64
 * inv_t is uploaded, not passed as an argument), a vocabulary of 51,200 (CodeGen's: split over blocks), 50, 3 and
 * 8,191 (one block) and 8,193 (an empty last slice). Flat rows (every logit one of two values) have more candidates
 * than the split path sorts, so its merging block summarizes the row alone; a coarse grid gives it ~1,600 to sort.
 * Rows whose K-th value is a zero with -0s and +0s around it check that the two tie (by id, as the CPU's float
 * compare has it) on both paths, and that the values come back with their sign. Views are strided (gt), as the
 * model's logits rows are not. */
static void test_logits_top(void) {
    worst w = {.op = "logits top (sums)"};
    const struct {
        int64_t rows, V;
        int32_t n_valid;
        int flat;
    } cases[] = {{1, 51200, 50295, 0}, {7, 51200, 51200, 0}, {64, 51200, 50295, 0}, {65, 51200, 51200, 0},
                 {5, 50, 50, 0},       {3, 3, 2, 0},         {2, 300, 200, 0},      {2, 8200, 8191, 0},
                 {3, 51200, 51200, 1}, {1, 51200, 8192, 1},   {2, 51200, 51200, 2},  {1, 8200, 8193, 0},
                 {2, 51200, 51200, 3}, {2, 6000, 6000, 3}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        for (int d = 0; d < 2; d++) {
            const int64_t T = cases[c].rows, V = cases[c].V;
            const eng_dtype dt = d ? ENG_F16 : ENG_F32;
            float *x = rand_vec((size_t)(T * V), -8, 8);
            for (int64_t i = 0; i < T * V; i++) {
                x[i] = floorf(x[i] * 16.0f) / 16.0f;
                if (i % 1013 == 7) x[i] = -INFINITY;
                if (i % 4099 == 11) x[i] = NAN;
                if (i % 2003 == 5) x[i] += 30.0f; /* peaks */
                if (cases[c].flat == 1 && isfinite(x[i])) x[i] = i % 3 ? 0.5f : -0.0f;
                if (cases[c].flat == 2) x[i] = floorf(x[i] * 2.0f) / 2.0f; /* ~1,600 ties at the threshold */
                if (cases[c].flat == 3) { /* a few 1s, then -0s and +0s straddling the K-th: equal, so by id */
                    const int64_t p1 = V >= 8192 ? 1000 : 200, p2 = V >= 8192 ? 397 : 97;
                    x[i] = i % p1 == 3 ? 1.0f : i % p2 == p2 / 2 ? ((i / p2) % 2 ? 0.0f : -0.0f) : -1.0f;
                }
            }
            float *inv_t = rand_vec((size_t)T, 0.3f, 3.0f);
            inv_t[0] = 0; /* a row that asks for no sum_t */
            gt g;
            GC_CHECK(!gt_init(&g, be_gpu, dt, T, V, x), "gt_init");
            samp_top *got = gc_malloc((size_t)T * sizeof(samp_top));
            GC_OK(eng_logits_top(be_gpu, &g.view, cases[c].n_valid, inv_t, got));
            float *rows = gt_read(&g);
            GC_CHECK(rows && gt_guard_ok(&g, "logits top"), "logits top guard");
            for (int64_t r = 0; r < T; r++) {
                samp_top want;
                samp_top_compute(rows + r * V, cases[c].n_valid, inv_t[r], &want);
                const samp_top *o = &got[r];
                GC_CHECK(o->n == want.n, "logits top [%lld x %lld] %s row %lld: %d candidates, want %d", (long long)T,
                         (long long)V, eng_dtype_name(dt), (long long)r, o->n, want.n);
                for (int i = 0; i < want.n; i++)
                    GC_CHECK(o->ids[i] == want.ids[i] && o->vals[i] == want.vals[i] &&
                                 signbit(o->vals[i]) == signbit(want.vals[i]),
                             "logits top row %lld candidate %d: id %d (%g), want %d (%g)", (long long)r, i, o->ids[i],
                             o->vals[i], want.ids[i], want.vals[i]);
                const double e1 = fabs(o->sum - want.sum) / want.sum;
                const double e2 = want.sum_t > 0 ? fabs(o->sum_t - want.sum_t) / want.sum_t : fabs(o->sum_t);
                if (e1 > w.rel) w.rel = e1;
                if (e2 > w.rel) w.rel = e2;
                /* the same terms summed in another order (slices, then the slices' sums): the CPU's running sum
                 * of n positive terms is within n ulps of the exact one (seen up to 1.1e-12 at 51,200 ids) */
                const double lim = (double)cases[c].n_valid * DBL_EPSILON;
                GC_CHECK(e1 < lim && e2 < lim, "logits top row %lld sums %.17g %.17g, want %.17g %.17g",
                         (long long)r, o->sum, o->sum_t, want.sum, want.sum_t);
            }
            w.cases++;
            gt_fini(&g);
            free(got), free(rows), free(x), free(inv_t);
        }
    print_worst(&w);
}

/* ---- eng_layers_decode (cuda_persist.cu) ------------------------------------------------------------------------ */

/* host_weights of random values in [c - s, c + s] placed on the GPU backend; -1 if that failed (reported). */
static int rand_weight(eng_tensor *t, eng_dtype dt, int64_t rows, int64_t cols, float c, float s) {
    float *v = rand_vec((size_t)(rows * cols), c - s, c + s);
    void *h = host_weights(v, (size_t)(rows * cols), dt);
    memset(t, 0, sizeof(*t));
    err rc = eng_weight_from_host(be_gpu, h, dt, rows, cols, t);
    free(v), free(h);
    if (rc == ERR_OK) return 0;
    fprintf(stderr, "FAIL %s:%d: eng_weight_from_host: %s\n", __FILE__, __LINE__, err_name(rc));
    gc_failures++;
    return -1;
}

/* A tensor's values as f32 (gc_malloc'd), NULL if the read failed (reported). */
static float *read_all(eng_tensor *t) {
    float *v = gc_malloc((size_t)(t->rows * t->cols) * sizeof(float));
    err rc = eng_tensor_read_f32(be_gpu, t, v);
    if (rc == ERR_OK) return v;
    fprintf(stderr, "FAIL %s:%d: read: %s\n", __FILE__, __LINE__, err_name(rc));
    gc_failures++;
    free(v);
    return NULL;
}

/* Two decode steps of n_layer fused layers (random weights; a context of ctx random keys whose values have a mean
 * per head dim, so attention moves x; the cache's blocks in reverse order) through eng_layers_decode and through
 * the ops forward.c runs otherwise (matmul_ln, rope_kv_store, attention, matmul), both on the GPU with caches filled
 * alike. Compared after each step: x, the last layer's mlp and rotated q columns of u, and every layer's cache as
 * attention sees it (a sharp random query over both caches, which reads the keys and values the step stored). All
 * must agree to the half roundings of the two summation orders. may_refuse: the device may not hold the kernel
 * (350M's slices need a 132-SM part): skipped then. */
static void layers_case(worst *w, eng_dtype dt, int32_t n_layer, int32_t n_head, int32_t hd, int32_t rd,
                        int32_t ctx, int may_refuse) {
    const int64_t D = (int64_t)n_head * hd, F = 4 * D;
    const eng_attn_shape sh = {n_head, hd, rd};
    const int32_t nb = (ctx + 2) / ENG_KV_BLOCK + 1;
    int32_t *blocks = gc_malloc((size_t)nb * 4), *pos = gc_malloc(256 * 4), toks[256] = {0};
    for (int32_t i = 0; i < nb; i++) blocks[i] = nb - 1 - i;
    eng_kv *kv[2];
    for (int k = 0; k < 2; k++) GC_OK(eng_kv_create(be_gpu, n_layer, (int32_t)D, nb, ENG_F16, &kv[k]));
    eng_tensor *Wt = gc_malloc((size_t)n_layer * 6 * sizeof(eng_tensor));
    eng_fused_layer *fl = gc_malloc((size_t)n_layer * sizeof(eng_fused_layer));
    float *vmean = rand_vec((size_t)D, -1, 1);
    for (int32_t l = 0; l < n_layer; l++) {
        eng_tensor *t = Wt + 6 * l;
        /* w2: out_proj's columns as large as fc_out's together, so that attention's share of x is not noise */
        float *w2 = rand_vec((size_t)(D * (D + F)), -1, 1);
        const float so = 2.0f / sqrtf((float)D), sf = 1.0f / sqrtf((float)F);
        for (int64_t r = 0; r < D; r++)
            for (int64_t c = 0; c < D + F; c++) w2[r * (D + F) + c] *= c < D ? so : sf;
        void *w2h = host_weights(w2, (size_t)(D * (D + F)), dt);
        err rc = eng_weight_from_host(be_gpu, w2h, dt, D, D + F, &t[4]);
        free(w2), free(w2h);
        GC_CHECK(rc == ERR_OK, "eng_weight_from_host w2");
        if (rand_weight(&t[0], dt, 1, D, 1.0f, 0.2f) || rand_weight(&t[1], dt, 1, D, 0.0f, 0.2f) ||
            rand_weight(&t[2], dt, F + 3 * D, D, 0.0f, 2.0f / sqrtf((float)D)) ||
            rand_weight(&t[3], dt, 1, F + 3 * D, 0.0f, 0.1f) || rand_weight(&t[5], dt, 1, D, 0.0f, 0.1f))
            return;
        fl[l] = (eng_fused_layer){&t[0], &t[1], &t[2], &t[3], &t[4], &t[5]};
        for (int32_t p0 = 0; p0 < ctx; p0 += 256) { /* the context, the same keys in both caches */
            const int32_t n = ctx - p0 < 256 ? ctx - p0 : 256;
            eng_seq one = {.row0 = 0, .n_tokens = n, .pos = p0, .blocks = blocks, .n_blocks = nb};
            for (int32_t i = 0; i < n; i++) pos[i] = p0 + i;
            eng_batch b = {.n_seqs = 1, .seqs = &one, .n_rows = n, .tokens = toks, .positions = pos};
            float *kvr = rand_vec((size_t)n * 2 * (size_t)D, -1, 1);
            for (int32_t i = 0; i < n; i++)
                for (int64_t d = 0; d < D; d++) kvr[(size_t)i * 2 * D + D + d] += 2.0f * vmean[d];
            eng_tensor kt;
            GC_OK(eng_tensor_alloc(be_gpu, ENG_F16, n, 2 * D, &kt));
            GC_OK(eng_tensor_write_f32(be_gpu, &kt, kvr));
            eng_tensor kk = eng_tensor_cols(kt, 0, D), vv = eng_tensor_cols(kt, D, D);
            for (int k = 0; k < 2; k++) GC_OK(eng_kv_store(be_gpu, kv[k], l, &kk, &vv, &b));
            eng_tensor_free(be_gpu, &kt);
            free(kvr);
        }
    }
    eng_tensor x[2], u[2], h, probe, po[2];
    for (int k = 0; k < 2; k++) {
        GC_OK(eng_tensor_alloc(be_gpu, dt, 1, D, &x[k]));
        GC_OK(eng_tensor_alloc(be_gpu, dt, 1, D + F + 3 * D, &u[k]));
        GC_OK(eng_tensor_alloc(be_gpu, dt, 1, D, &po[k]));
    }
    GC_OK(eng_tensor_alloc(be_gpu, dt, 1, D, &h));
    GC_OK(eng_tensor_alloc(be_gpu, dt, 1, D, &probe));
    /* every layer rounds x, att, mlp and q | k | v to dt, in either order of summation: a few ulps of dt, grown
     * by the layers (estimate: 8 roundings a layer) */
    const double tol = 8.0 * n_layer * round_tol(dt);
    char what[200];
    for (int step = 0; step < 2; step++) {
        eng_seq one = {.row0 = 0, .n_tokens = 1, .pos = ctx + step, .blocks = blocks, .n_blocks = nb};
        pos[0] = ctx + step;
        eng_batch b = {.n_seqs = 1, .seqs = &one, .n_rows = 1, .tokens = toks, .positions = pos};
        float *xv = rand_vec((size_t)D, -2, 2);
        for (int k = 0; k < 2; k++) GC_OK(eng_tensor_write_f32(be_gpu, &x[k], xv));
        free(xv);
        /* k = 1 first: one op, which must take this call (or, where allowed, refuse it having done nothing) */
        err rc = eng_layers_decode(be_gpu, &x[1], &u[1], fl, n_layer, F, kv[1], &b, sh, 1e-5f);
        if (rc == ERR_UNSUPPORTED && may_refuse && step == 0) {
            printf("  layers_decode %s heads=%d hd=%d: refused on this device, skipped\n", eng_dtype_name(dt),
                   n_head, hd);
            break;
        }
        GC_CHECK(rc == ERR_OK, "eng_layers_decode: %s", err_name(rc));
        /* k = 0: the ops (forward.c's fused layer without branches) */
        eng_tensor att = eng_tensor_cols(u[0], 0, D), att_mlp = eng_tensor_cols(u[0], 0, D + F);
        eng_tensor mlp_qkv = eng_tensor_cols(u[0], D, F + 3 * D), qkv = eng_tensor_cols(u[0], D + F, 3 * D);
        eng_tensor q = eng_tensor_cols(qkv, 0, D);
        for (int32_t l = 0; l < n_layer; l++) {
            GC_OK(eng_matmul_ln(be_gpu, &mlp_qkv, &x[0], fl[l].ln_w, fl[l].ln_b, 1e-5f, &h, fl[l].w1, fl[l].b1, F));
            GC_OK(eng_rope_kv_store(be_gpu, &qkv, kv[0], l, &b, sh));
            GC_OK(eng_attention(be_gpu, &att, &q, kv[0], l, &b, sh));
            GC_OK(eng_matmul(be_gpu, &x[0], &att_mlp, fl[l].w2, fl[l].b2, 1));
        }
        /* x; u's mlp and q columns (the last layer's; att is not kept by the op) */
        const int64_t cols[][2] = {{0, D}, {D, F}, {D + F, D}};
        for (int c = 0; c < 3; c++) {
            eng_tensor t0 = c == 0 ? x[0] : eng_tensor_cols(u[0], cols[c][0], cols[c][1]);
            eng_tensor t1 = c == 0 ? x[1] : eng_tensor_cols(u[1], cols[c][0], cols[c][1]);
            float *o0 = read_all(&t0), *o1 = read_all(&t1);
            snprintf(what, sizeof(what), "layers_decode %s layers=%d heads=%d hd=%d rd=%d ctx=%d step %d: %s",
                     eng_dtype_name(dt), n_layer, n_head, hd, rd, ctx, step, c == 0 ? "x" : c == 1 ? "mlp" : "q");
            GC_CHECK(o0 && o1 && close_ok(w, what, o1, o0, (size_t)cols[c][1], 1.0, tol, tol * tol), "%s", what);
            free(o0), free(o1);
        }
        /* the caches: a sharp query's attention over each layer's keys 0 .. pos, the step's own included */
        float *pv = rand_vec((size_t)D, -4, 4);
        GC_OK(eng_tensor_write_f32(be_gpu, &probe, pv));
        free(pv);
        for (int32_t l = 0; l < n_layer; l++) {
            float *o[2];
            for (int k = 0; k < 2; k++) {
                GC_OK(eng_attention(be_gpu, &po[k], &probe, kv[k], l, &b, sh));
                o[k] = read_all(&po[k]);
            }
            snprintf(what, sizeof(what), "layers_decode %s heads=%d hd=%d rd=%d ctx=%d step %d: cache of layer %d",
                     eng_dtype_name(dt), n_head, hd, rd, ctx, step, l);
            GC_CHECK(o[0] && o[1] && close_ok(w, what, o[1], o[0], (size_t)D, 1.0, tol, tol * tol), "%s", what);
            free(o[0]), free(o[1]);
        }
    }
    /* refused, having done nothing: f32 activations */
    eng_tensor xf, uf;
    GC_OK(eng_tensor_alloc(be_gpu, ENG_F32, 1, D, &xf));
    GC_OK(eng_tensor_alloc(be_gpu, ENG_F32, 1, D + F + 3 * D, &uf));
    float *xv = rand_vec((size_t)D, -1, 1), *after;
    GC_OK(eng_tensor_write_f32(be_gpu, &xf, xv));
    eng_seq one = {.row0 = 0, .n_tokens = 1, .pos = ctx + 2, .blocks = blocks, .n_blocks = nb};
    pos[0] = ctx + 2;
    eng_batch b = {.n_seqs = 1, .seqs = &one, .n_rows = 1, .tokens = toks, .positions = pos};
    GC_CALL(ERR_UNSUPPORTED, eng_layers_decode(be_gpu, &xf, &uf, fl, n_layer, F, kv[1], &b, sh, 1e-5f));
    after = read_all(&xf);
    GC_CHECK(after && !memcmp(after, xv, (size_t)D * sizeof(float)), "layers_decode: a refused call changed x");
    free(after), free(xv);
    eng_tensor_free(be_gpu, &xf), eng_tensor_free(be_gpu, &uf), eng_tensor_free(be_gpu, &h);
    eng_tensor_free(be_gpu, &probe);
    for (int k = 0; k < 2; k++) {
        eng_tensor_free(be_gpu, &x[k]), eng_tensor_free(be_gpu, &u[k]), eng_tensor_free(be_gpu, &po[k]);
        eng_kv_destroy(be_gpu, kv[k]);
    }
    for (int32_t i = 0; i < 6 * n_layer; i++) eng_weight_free(be_gpu, &Wt[i]);
    free(Wt), free(fl), free(blocks), free(pos), free(vmean);
}

static void test_layers_decode(void) {
    worst w[2] = {{.op = "layers_decode f16"}, {.op = "layers_decode bf16"}};
    layers_case(&w[0], ENG_F16, 3, 4, 40, 16, 37, 0);    /* tests/golden's tiny shape */
    layers_case(&w[0], ENG_F16, 2, 16, 64, 32, 1000, 1); /* 350M's (132 SMs hold it) */
    layers_case(&w[1], ENG_BF16, 2, 8, 64, 64, 200, 0);
    layers_case(&w[0], ENG_F16, 1, 3, 128, 0, 5, 0); /* no rotary dims; most splits without keys */
    print_worst(&w[0]), print_worst(&w[1]);
}

/* test_gpu_parity [BACKEND [TEST...]]: BACKEND defaults to cuda (cpu checks the harness on a machine without a
 * GPU); TESTs (convert, embed, layernorm, matmul, matmul_ln, matmul_late, gelu, rope, add, attention, attention_prefill,
 * logits_top, rope_kv, rope_kv_attention; backend, branch and layers_decode on cuda) pick a subset, e.g. for a
 * compute-sanitizer run. */
static int wanted(int argc, char **argv, const char *name) {
    if (argc <= 2) return 1;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], name)) return 1;
    return 0;
}

#define RUN_IF(name)                                                                                                 \
    if (wanted(argc, argv, #name)) GC_RUN(test_##name)

int main(int argc, char **argv) {
    errbuf eb = {0};
    const char *name = argc > 1 ? argv[1] : "cuda";
    setenv("SUGGESTD_CUDA_GEMV", "8", 0); /* the GEMV for every row count it has (the default takes it for 1 row) */
    setenv("SUGGESTD_CUDA_ROPE_KV", "1", 0); /* the one-launch RoPE + KV store, unless the caller says 0 */
    if (eng_backend_create(name, 0, &be_gpu, &eb) != ERR_OK) {
        fprintf(stderr, "test_gpu_parity: %s\n", eb.msg);
        return 77; /* skipped: no GPU */
    }
    if (eng_backend_create("ref", 1, &be_ref, &eb) != ERR_OK) return 1;
    if (!strncmp(name, "cuda", 4)) { /* the same device with the tensor-core attention off */
        setenv("SUGGESTD_CUDA_ATTN_MMA", "0", 1);
        if (eng_backend_create(name, 0, &be_simt, &eb) != ERR_OK) return 1;
        unsetenv("SUGGESTD_CUDA_ATTN_MMA");
    }
    printf("%s\n", eng_backend_describe(be_gpu));
    rng_seed(&R, 0x5eed);
    if (!strncmp(name, "cuda", 4)) RUN_IF(backend);
    if (!strncmp(name, "cuda", 4)) RUN_IF(branch);
    (void)eng_branch(be_gpu, ENG_BRANCH_JOIN); /* a failed check above may have left one open */
    RUN_IF(convert);
    RUN_IF(embed);
    RUN_IF(layernorm);
    RUN_IF(matmul);
    RUN_IF(matmul_ln);
    RUN_IF(matmul_late);
    RUN_IF(gelu);
    RUN_IF(rope);
    RUN_IF(add);
    RUN_IF(attention);
    RUN_IF(attention_prefill);
    RUN_IF(logits_top);
    RUN_IF(rope_kv);
    RUN_IF(rope_kv_attention);
    if (!strncmp(name, "cuda", 4)) RUN_IF(layers_decode);
    errbuf st = {0};
    if (eng_backend_status(be_gpu, &st) != ERR_OK) {
        fprintf(stderr, "backend unhealthy at the end: %s\n", st.msg);
        gc_failures++;
    }
    if (be_simt && eng_backend_status(be_simt, &st) != ERR_OK) {
        fprintf(stderr, "SIMT backend unhealthy at the end: %s\n", st.msg);
        gc_failures++;
    }
    eng_backend_destroy(be_simt);
    eng_backend_destroy(be_gpu);
    eng_backend_destroy(be_ref);
    printf("%s: %d failure%s\n", gc_failures ? "FAILED" : "PASSED", gc_failures, gc_failures == 1 ? "" : "s");
    return gc_failures ? 1 : 0;
}
