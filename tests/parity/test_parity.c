/* test_parity.c - every engine op of the cpu backend against the ref backend (the scalar oracle), at every SIMD
 * level this machine has, plus the shape checks eng.c does for all backends.
 *
 * Each op runs on random data of awkward shapes (odd K/N, row counts around the kernels' tile and block sizes,
 * strided column views as the forward pass uses on its fused qkv buffer). Outputs are views into larger tensors:
 * everything outside the view is a canary that must come back bit for bit. Tolerances are per op and say what the
 * cpu kernels promise: exact where they do the same f32 operations as ref (embed, add, RoPE, conversions), f32
 * accumulation error against ref's double sums elsewhere. The worst error seen per op is printed so a regression
 * shows before it fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng.h"
#include "fp16.h"
#include "rng.h"

/* ---- fixture: one cpu backend at one SIMD level, one ref backend ----------------------------------------------- */

static const char *const levels[] = {"scalar", "avx2", "avx512"};
static const char *cur_level;

typedef struct fixture {
    eng_backend *cpu, *ref;
    rng r;
} fixture;

static int group_setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    if (!f) return -1;
    errbuf eb = {0};
    setenv("SUGGESTD_CPU_SIMD", cur_level, 1);
    err e = eng_backend_create("cpu", 3, &f->cpu, &eb); /* 3 threads: uneven splits on any machine */
    unsetenv("SUGGESTD_CPU_SIMD");
    if (e == ERR_UNSUPPORTED) {
        print_message("level %s not available here: %s\n", cur_level, eb.msg);
        f->cpu = NULL;
    } else if (e != ERR_OK) {
        print_error("cpu backend: %s: %s\n", err_name(e), eb.msg);
        free(f);
        return -1;
    } else {
        print_message("%s\n", eng_backend_describe(f->cpu));
        if (!strstr(eng_backend_describe(f->cpu), cur_level)) {
            print_error("asked for %s, got '%s'\n", cur_level, eng_backend_describe(f->cpu));
            return -1;
        }
    }
    if (eng_backend_create("ref", 1, &f->ref, &eb) != ERR_OK) return -1;
    rng_seed(&f->r, 0x5eed);
    *state = f;
    return 0;
}

static int group_teardown(void **state) {
    fixture *f = *state;
    eng_backend_destroy(f->cpu);
    eng_backend_destroy(f->ref);
    free(f);
    return 0;
}

#define FIXTURE(state)                                                                                          \
    fixture *f = *(state);                                                                                      \
    if (!f->cpu) skip()

/* ---- data helpers ---------------------------------------------------------------------------------------------- */

static float urand(rng *r, float lo, float hi) { return lo + (hi - lo) * (float)rng_uniform(r); }

static float *rand_vec(rng *r, size_t n, float lo, float hi) {
    float *v = malloc(n * sizeof(float) + 1);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = urand(r, lo, hi);
    return v;
}

/* Host weights of dtype from f32 values (rounded like a checkpoint would be); exact-size allocation so ASan sees
 * any over-read. */
static void *host_weights(const float *v, size_t n, eng_dtype dt) {
    assert_true(dt != ENG_Q8); /* a Q8 block needs the shape: q8_weights */
    void *p = malloc(n * eng_dtype_size(dt));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        if (dt == ENG_F32)
            ((float *)p)[i] = v[i];
        else if (dt == ENG_F16)
            ((uint16_t *)p)[i] = f32_to_fp16(v[i]);
        else
            ((uint16_t *)p)[i] = f32_to_bf16(v[i]);
    }
    return p;
}

/* An ENG_Q8 block of [rows, cols] quantized from f32 values: exact size (int8 rows, padding, scales), so ASan sees
 * a kernel that reads past the last scale or treats padding as data. */
static void *q8_weights(const float *v, int64_t rows, int64_t cols) {
    void *p = malloc(eng_q8_bytes(rows, cols));
    assert_non_null(p);
    eng_q8_quantize(p, v, ENG_F32, rows, cols);
    return p;
}

/* A guarded tensor: a [rows, cols] view at (row 1, col 3) of a [rows + 2, cols + 5] allocation whose other cells
 * hold a canary pattern. The view's stride differs from its width, so kernels must honour strides. */
typedef struct gt {
    eng_backend *be;
    eng_tensor full, view;
    float *canary;
} gt;

static void gt_init(gt *g, eng_backend *be, int64_t rows, int64_t cols, const float *data) {
    g->be = be;
    assert_int_equal(eng_tensor_alloc(be, ENG_F32, rows + 2, cols + 5, &g->full), ERR_OK);
    assert_true(((uintptr_t)g->full.data & 63) == 0);
    size_t n = (size_t)(rows + 2) * (size_t)(cols + 5);
    g->canary = malloc(n * sizeof(float));
    assert_non_null(g->canary);
    for (size_t i = 0; i < n; i++) g->canary[i] = -1000.25f - (float)(i % 251);
    assert_int_equal(eng_tensor_write_f32(be, &g->full, g->canary), ERR_OK);
    g->view = eng_tensor_cols(eng_tensor_rows(g->full, 1, rows), 3, cols);
    if (data) assert_int_equal(eng_tensor_write_f32(be, &g->view, data), ERR_OK);
}

static void gt_read(gt *g, float *out) { assert_int_equal(eng_tensor_read_f32(g->be, &g->view, out), ERR_OK); }

static void gt_check_guard(gt *g, const char *what) {
    size_t n = (size_t)g->full.rows * (size_t)g->full.cols;
    float *all = malloc(n * sizeof(float));
    assert_non_null(all);
    assert_int_equal(eng_tensor_read_f32(g->be, &g->full, all), ERR_OK);
    for (int64_t r = 0; r < g->full.rows; r++)
        for (int64_t c = 0; c < g->full.cols; c++) {
            int inside = r >= 1 && r <= g->view.rows && c >= 3 && c < 3 + g->view.cols;
            size_t i = (size_t)(r * g->full.cols + c);
            if (!inside && memcmp(&all[i], &g->canary[i], sizeof(float)) != 0)
                fail_msg("%s (%s): guard cell (%lld, %lld) of a [%lld, %lld] view was overwritten: %g", what,
                         eng_backend_name(g->be), (long long)r - 1, (long long)c - 3, (long long)g->view.rows,
                         (long long)g->view.cols, all[i]);
        }
    free(all);
}

static void gt_fini(gt *g) {
    eng_tensor_free(g->be, &g->full);
    free(g->canary);
}

/* ---- comparison ------------------------------------------------------------------------------------------------ */

/* Worst error per op over all cases of the current level, printed at the end of each test. */
typedef struct worst {
    const char *op;
    double rel, nmse;
    int cases;
} worst;

/* err_i = |got - want| / (|want| + floor * rms(want)) must stay <= tol_rel for every i and the normalized mean
 * squared error sum (got - want)^2 / sum want^2 <= tol_nmse. floor = 0 demands per-element relative accuracy;
 * floor = 1 measures errors against the typical magnitude (for sums that may cancel to near zero). */
static void check_close(worst *w, const char *what, const float *got, const float *want, size_t n, double floor,
                        double tol_rel, double tol_nmse) {
    double ss = 0, se = 0;
    for (size_t i = 0; i < n; i++) ss += (double)want[i] * want[i];
    double rms = n ? sqrt(ss / (double)n) : 0, worst_rel = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isnan(want[i])) {
            if (isnan(got[i]) && isnan(want[i])) continue;
            fail_msg("%s: element %zu: cpu %g, ref %g", what, i, got[i], want[i]);
        }
        double d = fabs((double)got[i] - want[i]);
        se += d * d;
        double rel = d == 0 ? 0 : d / (fabs(want[i]) + floor * rms + 1e-30);
        if (rel > worst_rel) worst_rel = rel, at = i;
    }
    double nmse = ss > 0 ? se / ss : se;
    if (worst_rel > w->rel) w->rel = worst_rel;
    if (nmse > w->nmse) w->nmse = nmse;
    w->cases++;
    if (worst_rel > tol_rel || nmse > tol_nmse)
        fail_msg("%s: worst relative error %.3g at element %zu (cpu %.9g, ref %.9g; limit %.3g), nmse %.3g "
                 "(limit %.3g)",
                 what, worst_rel, at, got[at], want[at], tol_rel, nmse, tol_nmse);
}

static void print_worst(const worst *w) {
    print_message("  [%s] %-22s worst rel %.3g, worst nmse %.3g over %d cases\n", cur_level, w->op, w->rel, w->nmse,
                  w->cases);
}

static const eng_dtype wdts[] = {ENG_F32, ENG_F16, ENG_BF16};

/* ---- conversions ----------------------------------------------------------------------------------------------- */

/* write_f32 then read_f32 through f32/f16/bf16 tensors (strided views) must agree bit for bit with ref, including
 * rounding ties, subnormals and overflow. */
static void test_convert(void **state) {
    FIXTURE(state);
    const int64_t rows = 5, cols = 77;
    size_t n = (size_t)(rows * cols);
    float *src = rand_vec(&f->r, n, -3, 3), *a = malloc(n * 4), *b = malloc(n * 4);
    const float special[] = {0.0f, -0.0f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 65504.0f, 65519.0f, 65520.0f,
                             1e6f, -1e6f, INFINITY, -INFINITY, 5.96e-8f, 2.98e-8f, 2.99e-8f, 1e-9f, 6.1e-5f,
                             3.0e-5f, -4.5e-6f, 1.00000012f, 3.4e38f, 1e-40f, 1.0039062f, 1.0117188f};
    memcpy(src, special, sizeof(special));
    for (size_t i = sizeof(special) / sizeof(float); i < n; i += 7) src[i] *= powf(2.0f, (float)(i % 40) - 28);
    for (int d = 0; d < 3; d++) {
        eng_tensor tf[2], tv[2];
        eng_backend *bes[2] = {f->cpu, f->ref};
        float *outs[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            assert_int_equal(eng_tensor_alloc(bes[k], wdts[d], rows, cols + 9, &tf[k]), ERR_OK);
            tv[k] = eng_tensor_cols(tf[k], 5, cols);
            assert_int_equal(eng_tensor_write_f32(bes[k], &tv[k], src), ERR_OK);
            assert_int_equal(eng_tensor_read_f32(bes[k], &tv[k], outs[k]), ERR_OK);
        }
        for (size_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], 4) != 0)
                fail_msg("%s round trip of %.9g: cpu %.9g, ref %.9g", eng_dtype_name(wdts[d]), src[i], a[i], b[i]);
        for (int k = 0; k < 2; k++) eng_tensor_free(bes[k], &tf[k]);
    }
    free(src), free(a), free(b);
}

/* ---- embed ----------------------------------------------------------------------------------------------------- */

static void test_embed(void **state) {
    FIXTURE(state);
    worst w = {.op = "embed"};
    const int64_t V = 50, D = 100;
    const int32_t n_rows = 9;
    float *wv = rand_vec(&f->r, (size_t)(V * D), -2, 2);
    int32_t tokens[9] = {0, 49, 3, 3, 17, 48, 1, 0, 25};
    for (int d = 0; d < 3; d++) {
        void *host = host_weights(wv, (size_t)(V * D), wdts[d]);
        float *out[2];
        eng_backend *bes[2] = {f->cpu, f->ref};
        for (int k = 0; k < 2; k++) {
            eng_tensor wte;
            gt y;
            assert_int_equal(eng_weight_from_host(bes[k], host, wdts[d], V, D, &wte), ERR_OK);
            gt_init(&y, bes[k], n_rows, D, NULL);
            assert_int_equal(eng_embed(bes[k], &y.view, &wte, tokens, n_rows), ERR_OK);
            out[k] = malloc((size_t)(n_rows * D) * 4);
            gt_read(&y, out[k]);
            gt_check_guard(&y, "embed");
            gt_fini(&y);
            eng_weight_free(bes[k], &wte);
        }
        check_close(&w, "embed", out[0], out[1], (size_t)(n_rows * D), 0, 0, 0);
        free(out[0]), free(out[1]), free(host);
    }
    free(wv);
    print_worst(&w);
}

/* ---- layernorm ------------------------------------------------------------------------------------------------- */

static void test_layernorm(void **state) {
    FIXTURE(state);
    worst w = {.op = "layernorm"};
    const int64_t Ts[] = {1, 3, 33}, Ds[] = {40, 100, 1024};
    for (int ti = 0; ti < 3; ti++)
        for (int di = 0; di < 3; di++)
            for (int d = 0; d < 3; d++)
                for (int alias = 0; alias < 2; alias++) {
                    int64_t T = Ts[ti], D = Ds[di];
                    size_t n = (size_t)(T * D);
                    float *x = rand_vec(&f->r, n, -1, 1), *wv = rand_vec(&f->r, (size_t)D, 0.8f, 1.2f),
                          *bv = rand_vec(&f->r, (size_t)D, -0.1f, 0.1f);
                    for (size_t i = 0; i < n; i++) x[i] = x[i] * 3 + 5; /* a mean far from 0 */
                    void *hw = host_weights(wv, (size_t)D, wdts[d]), *hb = host_weights(bv, (size_t)D, wdts[d]);
                    float *out[2];
                    eng_backend *bes[2] = {f->cpu, f->ref};
                    for (int k = 0; k < 2; k++) {
                        eng_tensor tw, tb;
                        gt gx, gy;
                        assert_int_equal(eng_weight_from_host(bes[k], hw, wdts[d], 1, D, &tw), ERR_OK);
                        assert_int_equal(eng_weight_from_host(bes[k], hb, wdts[d], 1, D, &tb), ERR_OK);
                        gt_init(&gx, bes[k], T, D, x);
                        if (!alias) gt_init(&gy, bes[k], T, D, NULL);
                        gt *py = alias ? &gx : &gy;
                        assert_int_equal(eng_layernorm(bes[k], &py->view, &gx.view, &tw, &tb, 1e-5f), ERR_OK);
                        out[k] = malloc(n * 4);
                        gt_read(py, out[k]);
                        gt_check_guard(py, "layernorm");
                        gt_fini(&gx);
                        if (!alias) gt_fini(&gy);
                    }
                    check_close(&w, "layernorm", out[0], out[1], n, 1.0, 5e-6, 1e-11); /* f32 sums of 1024 */
                    free(out[0]), free(out[1]), free(x), free(wv), free(bv), free(hw), free(hb);
                }
    print_worst(&w);
}

/* ---- matmul ---------------------------------------------------------------------------------------------------- */

/* One matmul case on both backends: x [T, K] and y [T, N] are strided guarded views; y starts random so
 * accumulate has something to add to. */
static void matmul_case(fixture *f, worst *w, eng_dtype dt, int64_t T, int64_t K, int64_t N, int use_bias,
                        int accumulate) {
    float *x = rand_vec(&f->r, (size_t)(T * K), -1, 1), *wv = rand_vec(&f->r, (size_t)(N * K), -1, 1),
          *bv = rand_vec(&f->r, (size_t)N, -1, 1), *y0 = rand_vec(&f->r, (size_t)(T * N), -1, 1);
    const eng_dtype bdt = dt == ENG_Q8 ? ENG_F32 : dt; /* Q8 is for weights only: its biases stay f32 */
    if (dt == ENG_Q8) {
        /* rows the quantizer treats specially: all zero (scale 0), a negative extreme, an outlier */
        memset(wv, 0, (size_t)K * sizeof(float));
        if (N > 1) wv[K + (K - 1) / 2] = -3.0f;
        if (N > 2) wv[2 * K] = 8.0f; /* its row s = 8/127: the other weights land on few levels */
    }
    void *hw = dt == ENG_Q8 ? q8_weights(wv, N, K) : host_weights(wv, (size_t)(N * K), dt),
         *hb = host_weights(bv, (size_t)N, bdt);
    float *out[2];
    eng_backend *bes[2] = {f->cpu, f->ref};
    for (int k = 0; k < 2; k++) {
        eng_tensor tw, tb;
        gt gx, gy;
        assert_int_equal(eng_weight_from_host(bes[k], hw, dt, N, K, &tw), ERR_OK);
        assert_int_equal(eng_weight_from_host(bes[k], hb, bdt, 1, N, &tb), ERR_OK);
        gt_init(&gx, bes[k], T, K, x);
        gt_init(&gy, bes[k], T, N, y0);
        assert_int_equal(eng_matmul(bes[k], &gy.view, &gx.view, &tw, use_bias ? &tb : NULL, accumulate), ERR_OK);
        out[k] = malloc((size_t)(T * N) * 4);
        gt_read(&gy, out[k]);
        gt_check_guard(&gy, "matmul y");
        gt_check_guard(&gx, "matmul x");
        gt_fini(&gx), gt_fini(&gy);
    }
    char what[128];
    snprintf(what, sizeof(what), "matmul %s T=%lld K=%lld N=%lld bias=%d acc=%d", eng_dtype_name(dt), (long long)T,
             (long long)K, (long long)N, use_bias, accumulate);
    /* f32 sums of K products against double: errors of a few sqrt(K) ulps of the typical term (the scalar level
     * sums serially: ~2e-6 at K = 1100), judged against the typical output magnitude (floor 1) since single
     * outputs may cancel to ~0. A wrong or missing term shows as > 1e-2. */
    check_close(w, what, out[0], out[1], (size_t)(T * N), 1.0, 1e-5, 1e-11);
    free(out[0]), free(out[1]), free(x), free(wv), free(bv), free(y0), free(hw), free(hb);
}

static void test_matmul(void **state) {
    FIXTURE(state);
    worst w[3] = {{.op = "matmul f32"}, {.op = "matmul f16"}, {.op = "matmul bf16"}};
    const int64_t Ts[] = {1, 2, 3, 7, 8, 31, 32, 33, 64, 130}; /* both sides of CPU_MM_PACK_T (32) */
    const int64_t KN[][2] = {{40, 72}, {72, 40}, {100, 160}, {160, 100}, {1100, 68}, {33, 300}};
    for (int d = 0; d < 3; d++)
        for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++)
            for (size_t s = 0; s < sizeof(KN) / sizeof(KN[0]); s++)
                for (int mode = 0; mode < 4; mode++)
                    matmul_case(f, &w[d], wdts[d], Ts[ti], KN[s][0], KN[s][1], mode & 1, mode >> 1);
    /* ENG_Q8 (int8 weights, per-row scales, applied at the store): streamed (T < 32) and packed (T >= 32) paths,
     * odd K and N (vector tails, partial tiles and panels), K past one packed column block (1024), N past one row
     * block (128). ref computes s[n] * sum x q in double; the kernels sum x q in f32 and scale once, so the
     * tolerance is the f32 one. */
    {
        worst wq = {.op = "matmul int8"};
        const int64_t KNq[][2] = {{40, 72}, {100, 160}, {1100, 68}, {33, 300}, {17, 1}, {1, 33}, {1027, 131}, {5, 3}};
        for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++)
            for (size_t s = 0; s < sizeof(KNq) / sizeof(KNq[0]); s++)
                for (int mode = 0; mode < 4; mode++)
                    matmul_case(f, &wq, ENG_Q8, Ts[ti], KNq[s][0], KNq[s][1], mode & 1, mode >> 1);
        print_worst(&wq);
    }
    /* K = 0 (only a backend-allocated weight can be that): y = y + bias exactly, streamed and packed */
    float bv[40], y0[40 * 40];
    for (int i = 0; i < 40; i++) bv[i] = urand(&f->r, -1, 1);
    for (int i = 0; i < 40 * 40; i++) y0[i] = urand(&f->r, -1, 1);
    for (int64_t T = 1; T <= 40; T += 39) {
        float *out[2];
        eng_backend *bes[2] = {f->cpu, f->ref};
        for (int k = 0; k < 2; k++) {
            eng_tensor tw, tx, tb;
            gt gy;
            assert_int_equal(eng_tensor_alloc(bes[k], ENG_F32, 40, 0, &tw), ERR_OK);
            assert_int_equal(eng_tensor_alloc(bes[k], ENG_F32, T, 0, &tx), ERR_OK);
            assert_int_equal(eng_weight_from_host(bes[k], bv, ENG_F32, 1, 40, &tb), ERR_OK);
            gt_init(&gy, bes[k], T, 40, y0);
            assert_int_equal(eng_matmul(bes[k], &gy.view, &tx, &tw, &tb, 1), ERR_OK);
            out[k] = malloc((size_t)(T * 40) * 4);
            gt_read(&gy, out[k]);
            gt_check_guard(&gy, "matmul K=0");
            gt_fini(&gy);
            eng_tensor_free(bes[k], &tw), eng_tensor_free(bes[k], &tx);
        }
        check_close(&w[0], "matmul K=0", out[0], out[1], (size_t)(T * 40), 0, 0, 0);
        free(out[0]), free(out[1]);
    }
    /* decode shapes big enough to be split across threads */
    for (int d = 0; d < 3; d++)
        for (int64_t T = 1; T <= 4; T++) matmul_case(f, &w[d], wdts[d], T, 1024, 400, 1, T & 1);
    for (int d = 0; d < 3; d++) print_worst(&w[d]);
}

/* ---- gelu ------------------------------------------------------------------------------------------------------ */

static void test_gelu(void **state) {
    FIXTURE(state);
    worst w = {.op = "gelu"};
    const int64_t T = 33, D = 1001;
    size_t n = (size_t)(T * D);
    float *x = rand_vec(&f->r, n, -12, 12);
    for (size_t i = 0; i < n; i += 3) x[i] *= 0.05f; /* dense near 0, where tanh switches branch */
    const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-6f, 0.625f, -0.7f, 9.0f, -9.0f, 40.0f, -40.0f, 1e4f,
                             -1e4f};
    memcpy(x, special, sizeof(special));
    float *out[2];
    eng_backend *bes[2] = {f->cpu, f->ref};
    for (int k = 0; k < 2; k++) {
        gt g;
        gt_init(&g, bes[k], T, D, x);
        assert_int_equal(eng_gelu(bes[k], &g.view), ERR_OK);
        out[k] = malloc(n * 4);
        gt_read(&g, out[k]);
        gt_check_guard(&g, "gelu");
        gt_fini(&g);
    }
    /* gelu(u) = 0.5 u (1 + tanh(.)): the cpu tanh may differ from libm tanhf by < 1e-6 relative, which is an error
     * below 1e-6 * (|gelu| + |u|/2) in the output. Where 1 + tanh cancels (u << 0) both sides are f32 noise on a
     * value that is ~0 next to u, so the error is judged against |u|/2 there. */
    double worst_rel = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)out[0][i] - out[1][i]);
        double scale = fabs((double)out[1][i]) + 0.5 * fabs((double)x[i]) * (x[i] < 0 ? 1 : 0) + 1e-38;
        double rel = d / scale;
        if (rel > worst_rel) worst_rel = rel;
        if (rel > 1e-6) fail_msg("gelu(%.9g): cpu %.9g, ref %.9g (rel %.3g)", x[i], out[0][i], out[1][i], rel);
    }
    w.rel = worst_rel;
    w.cases = 1;
    check_close(&w, "gelu nmse", out[0], out[1], n, 1.0, 1e-6, 1e-13);
    free(out[0]), free(out[1]), free(x);
    print_worst(&w);
}

/* ---- rope ------------------------------------------------------------------------------------------------------ */

static void test_rope(void **state) {
    FIXTURE(state);
    worst w = {.op = "rope"};
    const int32_t geo[][3] = {{4, 16, 8}, {3, 40, 24}, {2, 64, 32}, {2, 64, 64}, {3, 40, 0}, {5, 16, 16}};
    for (size_t gi = 0; gi < sizeof(geo) / sizeof(geo[0]); gi++) {
        eng_attn_shape sh = {.n_head = geo[gi][0], .head_dim = geo[gi][1], .rotary_dim = geo[gi][2]};
        const int64_t T = 37, D = (int64_t)sh.n_head * sh.head_dim;
        size_t n = (size_t)(T * D);
        float *x = rand_vec(&f->r, n, -2, 2);
        int32_t pos[37];
        for (int64_t r = 0; r < T; r++) pos[r] = r < 3 ? (int32_t)r : (int32_t)(rng_next(&f->r) % 2048);
        pos[T - 1] = 2047;
        float *out[2];
        eng_backend *bes[2] = {f->cpu, f->ref};
        for (int k = 0; k < 2; k++) {
            gt g;
            gt_init(&g, bes[k], T, D, x);
            assert_int_equal(eng_rope(bes[k], &g.view, pos, sh), ERR_OK);
            out[k] = malloc(n * 4);
            gt_read(&g, out[k]);
            gt_check_guard(&g, "rope");
            gt_fini(&g);
        }
        /* same angles (shared helper), same products and sums: bit-identical */
        check_close(&w, "rope", out[0], out[1], n, 0, 0, 0);
        free(out[0]), free(out[1]), free(x);
    }
    /* negative positions are refused by both backends */
    eng_attn_shape sh = {.n_head = 1, .head_dim = 8, .rotary_dim = 8};
    int32_t bad[2] = {0, -1};
    eng_backend *bes[2] = {f->cpu, f->ref};
    for (int k = 0; k < 2; k++) {
        eng_tensor t;
        assert_int_equal(eng_tensor_alloc(bes[k], ENG_F32, 2, 8, &t), ERR_OK);
        assert_int_equal(eng_rope(bes[k], &t, bad, sh), ERR_INVALID);
        eng_tensor_free(bes[k], &t);
    }
    print_worst(&w);
}

/* ---- add ------------------------------------------------------------------------------------------------------- */

static void test_add(void **state) {
    FIXTURE(state);
    worst w = {.op = "add"};
    const int64_t shapes[][2] = {{1, 40}, {7, 100}, {64, 1024}, {33, 77}};
    for (size_t s = 0; s < 4; s++) {
        int64_t T = shapes[s][0], D = shapes[s][1];
        size_t n = (size_t)(T * D);
        float *x = rand_vec(&f->r, n, -1, 1), *y = rand_vec(&f->r, n, -1, 1), *out[2];
        eng_backend *bes[2] = {f->cpu, f->ref};
        for (int k = 0; k < 2; k++) {
            gt gx, gy;
            gt_init(&gx, bes[k], T, D, x);
            gt_init(&gy, bes[k], T, D, y);
            assert_int_equal(eng_add(bes[k], &gy.view, &gx.view), ERR_OK);
            out[k] = malloc(n * 4);
            gt_read(&gy, out[k]);
            gt_check_guard(&gy, "add");
            gt_fini(&gx), gt_fini(&gy);
        }
        check_close(&w, "add", out[0], out[1], n, 0, 0, 0);
        free(out[0]), free(out[1]), free(x), free(y);
    }
    print_worst(&w);
}

/* ---- kv_store + attention -------------------------------------------------------------------------------------- */

#define N_BLOCKS 64
#define N_SEQS 3

/* Three sequences with shuffled, non-consecutive block tables run through steps of (prefill chunk | decode)
 * sizes that cross block boundaries; each step stores K/V and runs attention, and the outputs are compared. q, k, v
 * are column views of one fused [rows, 3 * d_model] buffer, like the forward pass. */
static void attention_case(fixture *f, worst *w, eng_dtype kvdt, int32_t n_head, int32_t head_dim, int in_place) {
    const int32_t dm = n_head * head_dim, layer = 1;
    const eng_attn_shape sh = {.n_head = n_head, .head_dim = head_dim, .rotary_dim = head_dim};
    /* tokens per step for each sequence: prefill chunks then decodes; the long one passes 300 positions */
    const int32_t steps[][N_SEQS] = {{20, 16, 3}, {1, 5, 30}, {17, 1, 0}, {1, 0, 250}, {0, 1, 1}, {2, 27, 1}};
    int32_t blocks[N_SEQS][N_BLOCKS / N_SEQS];
    int32_t perm[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS; i++) perm[i] = i;
    for (int i = N_BLOCKS - 1; i > 0; i--) {
        int j = (int)(rng_next(&f->r) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int s = 0; s < N_SEQS; s++)
        for (int b = 0; b < N_BLOCKS / N_SEQS; b++) blocks[s][b] = perm[b * N_SEQS + s];
    eng_kv *kv[2];
    eng_backend *bes[2] = {f->cpu, f->ref};
    for (int k = 0; k < 2; k++) assert_int_equal(eng_kv_create(bes[k], 2, dm, N_BLOCKS, kvdt, &kv[k]), ERR_OK);
    assert_int_equal(eng_kv_bytes(kv[0]), eng_kv_bytes(kv[1]));
    int32_t pos[N_SEQS] = {0, 0, 0};
    for (size_t st = 0; st < sizeof(steps) / sizeof(steps[0]); st++) {
        eng_seq seqs[N_SEQS];
        int32_t positions[400], tokens[400], n_rows = 0, order[N_SEQS] = {2, 0, 1}; /* rows not in seq order */
        for (int oi = 0; oi < N_SEQS; oi++) {
            int s = order[oi];
            seqs[s] = (eng_seq){.row0 = n_rows, .n_tokens = steps[st][s], .pos = pos[s], .blocks = blocks[s],
                                .n_blocks = N_BLOCKS / N_SEQS};
            for (int32_t t = 0; t < steps[st][s]; t++) positions[n_rows] = pos[s] + t, tokens[n_rows++] = 0;
        }
        eng_batch batch = {.n_seqs = N_SEQS, .seqs = seqs, .n_rows = n_rows, .tokens = tokens, .positions = positions};
        size_t n = (size_t)n_rows * (size_t)dm;
        float *qkv = rand_vec(&f->r, (size_t)n_rows * 3 * (size_t)dm, -1, 1), *out[2];
        for (size_t i = 0; i < (size_t)n_rows * 3 * (size_t)dm; i += 5) qkv[i] *= 4; /* some peaked softmaxes */
        for (int k = 0; k < 2; k++) {
            gt g, go;
            gt_init(&g, bes[k], n_rows, 3 * dm, qkv);
            eng_tensor q = eng_tensor_cols(g.view, 0, dm), kt = eng_tensor_cols(g.view, dm, dm),
                       vt = eng_tensor_cols(g.view, 2 * dm, dm);
            assert_int_equal(eng_kv_store(bes[k], kv[k], layer, &kt, &vt, &batch), ERR_OK);
            out[k] = malloc(n * 4 + 4);
            if (in_place) {
                assert_int_equal(eng_attention(bes[k], &q, &q, kv[k], layer, &batch, sh), ERR_OK);
                assert_int_equal(eng_tensor_read_f32(bes[k], &q, out[k]), ERR_OK);
            } else {
                gt_init(&go, bes[k], n_rows, dm, NULL);
                assert_int_equal(eng_attention(bes[k], &go.view, &q, kv[k], layer, &batch, sh), ERR_OK);
                gt_read(&go, out[k]);
                gt_check_guard(&go, "attention out");
                gt_fini(&go);
            }
            gt_check_guard(&g, "attention qkv");
            gt_fini(&g);
        }
        char what[160];
        snprintf(what, sizeof(what), "attention kv=%s heads=%d hd=%d step %zu%s", eng_dtype_name(kvdt), n_head,
                 head_dim, st, in_place ? " in place" : "");
        /* f32 cache: f32 vs double sums; exp(s - max) turns a rounding error in a score s into |s - max| times that
         * relative error in its probability. f16 cache: both round probabilities to f16, and a probability near a
         * rounding tie may land one f16 ulp (2^-11 relative) apart. */
        if (kvdt == ENG_F32)
            check_close(w, what, out[0], out[1], n, 1.0, 1e-5, 1e-11);
        else
            check_close(w, what, out[0], out[1], n, 1.0, 2e-3, 1e-7);
        free(out[0]), free(out[1]), free(qkv);
        for (int s = 0; s < N_SEQS; s++) pos[s] += steps[st][s];
    }
    for (int k = 0; k < 2; k++) eng_kv_destroy(bes[k], kv[k]);
}

static void test_attention(void **state) {
    FIXTURE(state);
    worst w[2] = {{.op = "attention kv f32"}, {.op = "attention kv f16"}};
    const int32_t geo[][2] = {{3, 16}, {3, 40}, {2, 64}, {1, 80}};
    for (int d = 0; d < 2; d++)
        for (size_t g = 0; g < sizeof(geo) / sizeof(geo[0]); g++)
            attention_case(f, &w[d], d ? ENG_F16 : ENG_F32, geo[g][0], geo[g][1], 0);
    attention_case(f, &w[1], ENG_F16, 2, 64, 1);
    for (int d = 0; d < 2; d++) print_worst(&w[d]);
}

/* ---- eng.c validation ------------------------------------------------------------------------------------------ */

/* Shape mismatches never reach a backend: eng.c answers ERR_INVALID. */
static void test_validation(void **state) {
    (void)state;
    eng_backend *be;
    errbuf eb = {0};
    assert_int_equal(eng_backend_create("nope", 1, &be, &eb), ERR_INVALID);
    assert_non_null(strstr(eb.msg, "ref"));
    assert_int_equal(eng_backend_create("ref", 1, &be, &eb), ERR_OK);
    eng_tensor t;
    float host[64] = {0};
    assert_int_equal(eng_tensor_alloc(be, ENG_F32, -1, 4, &t), ERR_INVALID);
    assert_int_equal(eng_weight_from_host(be, NULL, ENG_F32, 2, 2, &t), ERR_INVALID);
    assert_int_equal(eng_weight_from_host(be, host, ENG_F32, 0, 2, &t), ERR_INVALID);

    eng_tensor x, y, y2, w, w2, bias, bias2, lw;
    assert_int_equal(eng_tensor_alloc(be, ENG_F32, 3, 8, &x), ERR_OK);
    assert_int_equal(eng_tensor_alloc(be, ENG_F32, 3, 4, &y), ERR_OK);
    assert_int_equal(eng_tensor_alloc(be, ENG_F32, 2, 4, &y2), ERR_OK);
    assert_int_equal(eng_weight_from_host(be, host, ENG_F32, 4, 8, &w), ERR_OK);
    assert_int_equal(eng_weight_from_host(be, host, ENG_F32, 4, 7, &w2), ERR_OK);
    assert_int_equal(eng_weight_from_host(be, host, ENG_F32, 1, 4, &bias), ERR_OK);
    assert_int_equal(eng_weight_from_host(be, host, ENG_F32, 1, 5, &bias2), ERR_OK);
    assert_int_equal(eng_weight_from_host(be, host, ENG_F32, 1, 8, &lw), ERR_OK);

    assert_int_equal(eng_matmul(be, &y, &x, &w, &bias, 0), ERR_OK);
    assert_int_equal(eng_matmul(be, &y, &x, &w2, NULL, 0), ERR_INVALID);    /* K mismatch */
    assert_int_equal(eng_matmul(be, &y2, &x, &w, NULL, 0), ERR_INVALID);    /* T mismatch */
    assert_int_equal(eng_matmul(be, &x, &x, &w, NULL, 0), ERR_INVALID);     /* N mismatch */
    assert_int_equal(eng_matmul(be, &y, &x, &w, &bias2, 0), ERR_INVALID);  /* bias length */
    assert_int_equal(eng_matmul(be, &y, &x, &w, &y, 0), ERR_INVALID);      /* bias not a row */

    int32_t tok_ok[3] = {0, 3, 1}, tok_bad[3] = {0, 4, 1}, tok_neg[3] = {-1, 0, 0};
    assert_int_equal(eng_embed(be, &y, &w, tok_ok, 3), ERR_INVALID);  /* width 4 vs 8 */
    assert_int_equal(eng_embed(be, &x, &w, tok_ok, 3), ERR_OK);
    assert_int_equal(eng_embed(be, &x, &w, tok_bad, 3), ERR_INVALID); /* token >= rows */
    assert_int_equal(eng_embed(be, &x, &w, tok_neg, 3), ERR_INVALID);
    assert_int_equal(eng_embed(be, &x, &w, tok_ok, 4), ERR_INVALID);  /* more rows than y */

    assert_int_equal(eng_layernorm(be, &x, &x, &lw, &lw, 1e-5f), ERR_OK);
    assert_int_equal(eng_layernorm(be, &y, &x, &lw, &lw, 1e-5f), ERR_INVALID);
    assert_int_equal(eng_layernorm(be, &x, &x, &bias, &lw, 1e-5f), ERR_INVALID);
    assert_int_equal(eng_layernorm(be, &x, &x, &lw, &bias, 1e-5f), ERR_INVALID);
    assert_int_equal(eng_layernorm(be, &x, &x, &x, &lw, 1e-5f), ERR_INVALID);

    assert_int_equal(eng_add(be, &y, &x), ERR_INVALID);
    assert_int_equal(eng_add(be, &y, &y2), ERR_INVALID);

    int32_t pos3[3] = {0, 1, 2};
    assert_int_equal(eng_rope(be, &x, pos3, (eng_attn_shape){2, 4, 4}), ERR_OK);
    assert_int_equal(eng_rope(be, &x, pos3, (eng_attn_shape){2, 4, 3}), ERR_INVALID); /* odd rotary_dim */
    assert_int_equal(eng_rope(be, &x, pos3, (eng_attn_shape){2, 4, 6}), ERR_INVALID); /* rotary > head_dim */
    assert_int_equal(eng_rope(be, &x, pos3, (eng_attn_shape){2, 3, 2}), ERR_INVALID); /* cols != heads * hd */
    assert_int_equal(eng_rope(be, &x, pos3, (eng_attn_shape){0, 8, 2}), ERR_INVALID);

    /* ENG_Q8 is a matmul-weight type only */
    assert_int_equal(eng_dtype_size(ENG_Q8), 1);
    assert_string_equal(eng_dtype_name(ENG_Q8), "int8");
    assert_int_equal(eng_tensor_alloc(be, ENG_Q8, 4, 8, &t), ERR_INVALID);
    float wsrc[32];
    for (int i = 0; i < 32; i++) wsrc[i] = (float)(i % 7) - 3.0f;
    void *qb = malloc(eng_q8_bytes(4, 8));
    assert_non_null(qb);
    eng_q8_quantize(qb, wsrc, ENG_F32, 4, 8);
    eng_tensor wq, wq_view, wq_row;
    assert_int_equal(eng_weight_from_host(be, qb, ENG_Q8, 4, 8, &wq), ERR_OK);
    assert_int_equal(eng_matmul(be, &y, &x, &wq, &bias, 0), ERR_OK);
    assert_int_equal(eng_matmul(be, &y, &x, &wq, &wq, 0), ERR_UNSUPPORTED);        /* Q8 bias */
    wq_row = eng_tensor_rows(wq, 0, 1);
    assert_int_equal(eng_matmul(be, &y, &x, &wq, &wq_row, 0), ERR_UNSUPPORTED);    /* Q8 bias, shaped right */
    wq_view = eng_tensor_cols(wq, 0, 4);
    assert_int_equal(eng_matmul(be, &y, &y, &wq_view, NULL, 0), ERR_INVALID);      /* a view: scales unknown */
    assert_int_equal(eng_embed(be, &x, &wq, tok_ok, 3), ERR_UNSUPPORTED);          /* Q8 embedding */
    assert_int_equal(eng_layernorm(be, &x, &x, &wq_row, &lw, 1e-5f), ERR_UNSUPPORTED);
    assert_int_equal(eng_add(be, &wq, &wq), ERR_UNSUPPORTED);
    assert_int_equal(eng_gelu(be, &wq), ERR_UNSUPPORTED);
    float rd[32];
    assert_int_equal(eng_tensor_read_f32(be, &wq, rd), ERR_UNSUPPORTED);
    assert_int_equal(eng_tensor_write_f32(be, &wq, rd), ERR_UNSUPPORTED);
    eng_weight_free(be, &wq);
    free(qb);

    eng_kv *kv;
    assert_int_equal(eng_kv_create(be, 1, 8, 4, ENG_Q8, &kv), ERR_INVALID);
    assert_int_equal(eng_kv_create(be, 1, 8, 4, ENG_BF16, &kv), ERR_INVALID);
    assert_int_equal(eng_kv_create(be, 0, 8, 4, ENG_F16, &kv), ERR_INVALID);
    assert_int_equal(eng_kv_create(be, 1, 0, 4, ENG_F16, &kv), ERR_INVALID);
    assert_int_equal(eng_kv_create(be, 1, 8, 0, ENG_F16, &kv), ERR_INVALID);
    assert_int_equal(eng_kv_create(be, 2, 8, 4, ENG_F16, &kv), ERR_OK);
    assert_int_equal(eng_kv_blocks(kv), 4);
    assert_int_equal(eng_kv_bytes(kv), 2 * 2 * 4 * ENG_KV_BLOCK * 8 * 2);

    int32_t blk[2] = {3, 1}, blk_bad[2] = {3, 4};
    eng_seq seq = {.row0 = 0, .n_tokens = 3, .pos = 14, .blocks = blk, .n_blocks = 2};
    int32_t positions[3] = {14, 15, 16}, tokens[3] = {0, 0, 0};
    eng_batch b = {.n_seqs = 1, .seqs = &seq, .n_rows = 3, .tokens = tokens, .positions = positions};
    eng_attn_shape sh = {2, 4, 4};
    assert_int_equal(eng_kv_store(be, kv, 1, &x, &x, &b), ERR_OK);
    assert_int_equal(eng_attention(be, &x, &x, kv, 1, &b, sh), ERR_OK);
    assert_int_equal(eng_kv_store(be, kv, 2, &x, &x, &b), ERR_INVALID);  /* layer */
    assert_int_equal(eng_kv_store(be, kv, -1, &x, &x, &b), ERR_INVALID);
    assert_int_equal(eng_kv_store(be, kv, 0, &y, &y, &b), ERR_INVALID);  /* width != d_model */
    assert_int_equal(eng_kv_store(be, kv, 0, &x, &y, &b), ERR_INVALID);  /* k, v differ */
    b.n_rows = 2;
    assert_int_equal(eng_kv_store(be, kv, 0, &x, &x, &b), ERR_INVALID);  /* rows != batch rows */
    b.n_rows = 3;
    positions[2] = 17;
    assert_int_equal(eng_kv_store(be, kv, 0, &x, &x, &b), ERR_INVALID);  /* positions disagree with seq */
    positions[2] = 16;
    seq.blocks = blk_bad;
    assert_int_equal(eng_kv_store(be, kv, 0, &x, &x, &b), ERR_INVALID);  /* block out of the pool */
    seq.blocks = blk;
    seq.n_blocks = 1;
    assert_int_equal(eng_kv_store(be, kv, 0, &x, &x, &b), ERR_INVALID);  /* table too short for pos 16 */
    seq.n_blocks = 2;
    seq.n_tokens = 2;
    assert_int_equal(eng_kv_store(be, kv, 0, &x, &x, &b), ERR_INVALID);  /* rows not covered */
    seq.n_tokens = 3;
    seq.row0 = 1;
    assert_int_equal(eng_kv_store(be, kv, 0, &x, &x, &b), ERR_INVALID);  /* past the last row */
    seq.row0 = 0;
    assert_int_equal(eng_attention(be, &x, &x, kv, 2, &b, sh), ERR_INVALID);                      /* layer */
    assert_int_equal(eng_attention(be, &y, &x, kv, 0, &b, sh), ERR_INVALID);                      /* out shape */
    assert_int_equal(eng_attention(be, &y, &y, kv, 0, &b, (eng_attn_shape){1, 4, 4}), ERR_INVALID); /* d_model */
    assert_int_equal(eng_attention(be, &x, &x, kv, 0, &b, (eng_attn_shape){4, 4, 4}), ERR_INVALID); /* geometry */
    b.n_rows = 2;
    assert_int_equal(eng_attention(be, &x, &x, kv, 0, &b, sh), ERR_INVALID); /* rows */
    b.n_rows = 3;

    eng_kv_destroy(be, kv);
    eng_tensor_free(be, &x), eng_tensor_free(be, &y), eng_tensor_free(be, &y2);
    eng_backend_destroy(be);
}

/* The cpu backend refuses an unknown SIMD level by name, and answers the per-backend questions as a CPU backend. */
static void test_simd_env(void **state) {
    (void)state;
    eng_backend *be = NULL;
    errbuf eb = {0};
    setenv("SUGGESTD_CPU_SIMD", "sse9", 1);
    assert_int_equal(eng_backend_create("cpu", 1, &be, &eb), ERR_INVALID);
    unsetenv("SUGGESTD_CPU_SIMD");
    assert_non_null(strstr(eb.msg, "sse9"));
    assert_int_equal(eng_backend_create("cpu", 0, &be, &eb), ERR_OK);
    print_message("default: %s\n", eng_backend_describe(be));
    assert_int_equal(eng_backend_act_dtype(be, ENG_F16), ENG_F32);
    assert_int_equal(eng_backend_copies_weights(be), 0); /* weights are borrowed from the mmap */
    assert_int_equal(eng_backend_status(be, &eb), ERR_OK);
    double gbs;
    assert_int_equal(eng_backend_copy_bandwidth(be, 1 << 20, &gbs), ERR_UNSUPPORTED);
    eng_backend_destroy(be);
}

int main(void) {
    const struct CMUnitTest common[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_simd_env),
    };
    const struct CMUnitTest per_level[] = {
        cmocka_unit_test(test_convert),   cmocka_unit_test(test_embed), cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_matmul),    cmocka_unit_test(test_gelu),  cmocka_unit_test(test_rope),
        cmocka_unit_test(test_add),       cmocka_unit_test(test_attention),
    };
    int failed = cmocka_run_group_tests_name("validation", common, NULL, NULL);
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "parity cpu/%s vs ref", levels[i]);
        cur_level = levels[i];
        failed += cmocka_run_group_tests_name(name, per_level, group_setup, group_teardown);
    }
    return failed ? 1 : 0;
}
