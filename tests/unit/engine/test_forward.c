/* test_forward.c - the forward pass over a batch: sequences at different positions, with their own (scattered)
 * KV blocks, packed into one call, give the logits each gets alone; bad batches are refused. And the same fp32
 * checkpoint run with int8 weights (opts.dtype "int8") stays close to fp32, cpu and ref agree on it, and its
 * weight memory is what the int8 blocks take. Fused matmuls and the branched layer (CUDA's op lists, run here in
 * program order) give the plain layer's logits. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "forward.h"
#include "testutil.h"

#define V 51200

typedef struct world {
    char *dir;
    model *m;
    eng_backend *be;
} world;

static int setup(void **state) {
    world *w = xcalloc(1, sizeof(*w));
    tu_ckpt_spec spec = {2, 80, 4, 8, 256, V, ST_F32, 3};
    errbuf eb = {0};
    w->dir = tu_mkdtemp();
    if (tu_write_checkpoint(w->dir, &spec, &eb) || model_open(w->dir, &w->m, &eb) ||
        eng_backend_create("cpu", 2, &w->be, &eb)) {
        fprintf(stderr, "setup: %s\n", eb.msg);
        return -1;
    }
    *state = w;
    return 0;
}

static int teardown(void **state) {
    world *w = *state;
    eng_backend_destroy(w->be);
    model_close(w->m);
    tu_rmtree_free(w->dir);
    xfree(w);
    return 0;
}

/* Runs tokens [0, n) of one sequence alone (prefill n-1, then one decode) and returns the last logits. */
static void alone(eng_model *em, const int32_t *toks, int32_t n, const int32_t *blocks, int32_t nb, float *out) {
    int32_t pos[64];
    for (int32_t i = 0; i < n; i++) pos[i] = i;
    errbuf eb = {0};
    eng_seq s1 = {0, n - 1, 0, blocks, nb};
    eng_batch b1 = {1, &s1, n - 1, toks, pos};
    assert_int_equal(eng_model_forward(em, &b1, NULL, 0, NULL, &eb), ERR_OK);
    eng_seq s2 = {0, 1, n - 1, blocks, nb};
    eng_batch b2 = {1, &s2, 1, toks + n - 1, pos + n - 1};
    int32_t lr = 0;
    assert_int_equal(eng_model_forward(em, &b2, &lr, 1, out, &eb), ERR_OK);
}

static void test_batch_equals_alone(void **state) {
    world *w = *state;
    errbuf eb = {0};
    eng_model *em = NULL;
    eng_model_opts mo = {.max_rows = 64, .n_kv_blocks = 32, .kv_dtype = -1};
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &em, &eb), ERR_OK);
    int32_t ta[40], tb[23], tc[7];
    for (int i = 0; i < 40; i++) ta[i] = (i * 131) % 50000;
    for (int i = 0; i < 23; i++) tb[i] = (i * 977 + 5) % 50000;
    for (int i = 0; i < 7; i++) tc[i] = (i * 3001 + 11) % 50000;
    /* scattered, interleaved blocks */
    int32_t ba[3] = {7, 2, 11}, bb[2] = {4, 9}, bc[1] = {0};
    float *ra = xmalloc(V * 4), *rb = xmalloc(V * 4), *rc = xmalloc(V * 4), *all = xmalloc(3 * V * 4);
    alone(em, ta, 40, ba, 3, ra);
    alone(em, tb, 23, bb, 2, rb);
    alone(em, tc, 7, bc, 1, rc);
    /* now all three again in fresh blocks, packed: a and b prefill in one call, then one call decoding a and b
     * while c prefills entirely - three sequences at three different positions */
    int32_t ba2[3] = {20, 5, 14}, bb2[2] = {1, 30}, bc2[1] = {25};
    int32_t toks[64], pos[64], r = 0;
    for (int i = 0; i < 39; i++) toks[r] = ta[i], pos[r++] = i;
    for (int i = 0; i < 22; i++) toks[r] = tb[i], pos[r++] = i;
    eng_seq s1[2] = {{0, 39, 0, ba2, 3}, {39, 22, 0, bb2, 2}};
    eng_batch b1 = {2, s1, r, toks, pos};
    assert_int_equal(eng_model_forward(em, &b1, NULL, 0, NULL, &eb), ERR_OK);
    r = 0;
    toks[r] = ta[39], pos[r++] = 39;
    for (int i = 0; i < 7; i++) toks[r] = tc[i], pos[r++] = i;
    toks[r] = tb[22], pos[r++] = 22;
    eng_seq s2[3] = {{0, 1, 39, ba2, 3}, {1, 7, 0, bc2, 1}, {8, 1, 22, bb2, 2}};
    eng_batch b2 = {3, s2, r, toks, pos};
    int32_t lrows[3] = {0, 7, 8};
    assert_int_equal(eng_model_forward(em, &b2, lrows, 3, all, &eb), ERR_OK);
    const float *want[3] = {ra, rc, rb};
    for (int k = 0; k < 3; k++) {
        double worst = 0;
        for (int i = 0; i < V; i++) worst = fmax(worst, fabs(all[(size_t)k * V + i] - want[k][i]));
        if (worst > 1e-4) fail_msg("sequence %d: batched logits differ from alone by %g", k, worst);
    }
    /* bad batches are refused: rows past the batch, a block table too short, positions out of order */
    eng_seq bad1 = {0, 5, 0, bc2, 1};
    eng_batch bb_1 = {1, &bad1, 4, toks, pos};
    assert_int_equal(eng_model_forward(em, &bb_1, NULL, 0, NULL, &eb), ERR_INVALID);
    eng_seq bad2 = {0, 1, 16, bc2, 1};
    int32_t p16 = 16;
    eng_batch bb_2 = {1, &bad2, 1, toks, &p16};
    assert_int_equal(eng_model_forward(em, &bb_2, NULL, 0, NULL, &eb), ERR_INVALID);
    int32_t badtok = V + 5;
    eng_seq s_ok = {0, 1, 0, bc2, 1};
    int32_t p0 = 0;
    eng_batch bb_3 = {1, &s_ok, 1, &badtok, &p0};
    assert_int_equal(eng_model_forward(em, &bb_3, NULL, 0, NULL, &eb), ERR_INVALID);
    xfree(ra), xfree(rb), xfree(rc), xfree(all);
    eng_model_destroy(em);
}

/* Prefills n tokens of one sequence and returns the logits of rows lr[0..nl). */
static void run_rows(eng_model *em, const int32_t *toks, int32_t n, const int32_t *lr, int32_t nl, float *out) {
    int32_t pos[64], blocks[4] = {0, 1, 2, 3};
    for (int32_t i = 0; i < n; i++) pos[i] = i;
    errbuf eb = {0};
    eng_seq s = {0, n, 0, blocks, 4};
    eng_batch b = {1, &s, n, toks, pos};
    if (eng_model_forward(em, &b, lr, nl, out, &eb) != ERR_OK) fail_msg("forward: %s", eb.msg);
}

static int32_t argmax(const float *v, int64_t n) {
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int32_t)i;
    return best;
}

/* int8 weights (per-row scales) against the fp32 checkpoint they came from, 40 positions: the quantization error
 * (uniform, half a step of max|w_row| / 127: ~0.4% of a weight's RMS) compounds through 2 layers and lm_head into
 * logit errors of ~1% of the logits' RMS. Limits (measured on avx512: max 0.043, RMS 0.010, argmax 38/40, both
 * misses near-ties): max |d logit| <= 8% of the position's RMS logit, RMS error <= 2%, greedy argmax equal at
 * >= 36 of 40 positions, and where it differs the two tokens' f32 logits are within 10% of the RMS logit (a
 * near-tie that quantization noise may flip, not a wrong model). */
static void test_int8_close_to_f32(void **state) {
    world *w = *state;
    errbuf eb = {0};
    eng_model *e32 = NULL, *e8 = NULL, *r8 = NULL;
    eng_model_opts mo = {.max_rows = 64, .n_kv_blocks = 8, .kv_dtype = -1};
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &e32, &eb), ERR_OK);
    mo.dtype = "int8";
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &e8, &eb), ERR_OK);
    assert_int_equal(eng_model_matmul_dtype(e8), ENG_Q8);
    assert_int_equal(eng_model_matmul_dtype(e32), ENG_F32);

    /* memory: the model owns exactly the int8 blocks; the total is those plus the f32 tensors left as they are */
    const model_config *c = eng_model_config(e8);
    const int64_t D = c->n_embd, F = c->n_inner;
    size_t q8 = (size_t)c->n_layer * (eng_q8_bytes(3 * D, D) + eng_q8_bytes(D, D) + eng_q8_bytes(F, D) +
                                      eng_q8_bytes(D, F)) + eng_q8_bytes(V, D);
    size_t own8 = 0, own32 = 0;
    eng_model_memory(e8, &own8, NULL, NULL);
    eng_model_memory(e32, &own32, NULL, NULL);
    assert_int_equal(own8, q8);
    assert_int_equal(own32, (size_t)c->n_layer * 3 * D * D * 4); /* the repacked qkv */
    size_t rest = (size_t)V * D * 4 + (size_t)V * 4 + 2 * (size_t)D * 4 +
                  (size_t)c->n_layer * (3 * (size_t)D * 4 + (size_t)F * 4); /* ln_1 w, b; fc_out_b; fc_in_b */
    assert_int_equal(eng_model_weight_bytes(e8), q8 + rest);
    print_message("weights: f32 %.2f MB, int8 %.2f MB\n", (double)eng_model_weight_bytes(e32) / 1e6,
                  (double)eng_model_weight_bytes(e8) / 1e6);

    enum { N = 40 };
    int32_t toks[N], lr[N];
    for (int i = 0; i < N; i++) toks[i] = (i * 7919 + 3) % 50000, lr[i] = i;
    float *a = xmalloc((size_t)N * V * 4), *b = xmalloc((size_t)N * V * 4);
    run_rows(e32, toks, N, lr, N, a);
    run_rows(e8, toks, N, lr, N, b);
    double worst_max = 0, worst_rms = 0;
    int agree = 0;
    for (int r = 0; r < N; r++) {
        const float *x = a + (size_t)r * V, *y = b + (size_t)r * V;
        double ss = 0, se = 0, mx = 0;
        for (int i = 0; i < V; i++) {
            double d = fabs((double)x[i] - y[i]);
            ss += (double)x[i] * x[i], se += d * d, mx = fmax(mx, d);
        }
        double rms = sqrt(ss / V);
        worst_max = fmax(worst_max, mx / rms), worst_rms = fmax(worst_rms, sqrt(se / V) / rms);
        int32_t ax = argmax(x, V), ay = argmax(y, V);
        agree += ax == ay;
        if (ax != ay && x[ax] - x[ay] > 0.1 * rms)
            fail_msg("position %d: int8 picks %d, f32 %d, f32 logits %.4g vs %.4g (RMS %.4g): not a near-tie", r, ay,
                     ax, x[ay], x[ax], rms);
    }
    print_message("int8 vs f32 logits over %d positions: max |d| %.4f x RMS, RMS error %.4f x RMS, argmax equal "
                  "%d/%d\n", N, worst_max, worst_rms, agree, N);
    if (worst_max > 0.08 || worst_rms > 0.02 || agree < N - 4)
        fail_msg("int8 logits too far from f32: max %.4g, rms %.4g (x RMS), argmax %d/%d", worst_max, worst_rms,
                 agree, N);

    /* the whole int8 model on the ref backend (the scalar oracle) gives the cpu backend's logits */
    eng_backend *ref = NULL;
    assert_int_equal(eng_backend_create("ref", 1, &ref, &eb), ERR_OK);
    assert_int_equal(eng_model_create(ref, w->m, &mo, &r8, &eb), ERR_OK);
    int32_t some[3] = {0, 17, N - 1};
    run_rows(r8, toks, N, some, 3, a);
    double worst = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < V; i++) worst = fmax(worst, fabs(a[(size_t)k * V + i] - b[(size_t)some[k] * V + i]));
    print_message("int8 cpu vs ref: max |d logit| %.3g\n", worst);
    if (worst > 1e-4) fail_msg("int8 cpu and ref logits differ by %g", worst);

    /* an unknown dtype is refused, naming what is accepted */
    eng_model *bad = NULL;
    mo.dtype = "int4";
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &bad, &eb), ERR_INVALID);
    assert_null(bad);
    assert_non_null(strstr(eb.msg, "int4"));
    assert_non_null(strstr(eb.msg, "int8"));

    xfree(a), xfree(b);
    eng_model_destroy(r8);
    eng_backend_destroy(ref);
    eng_model_destroy(e8);
    eng_model_destroy(e32);
}

/* fuse_matmuls (forward.c: w1 = [fc_in; qkv], w2 = [out_proj | fc_out], one buffer att | mlp | qkv) computes the
 * same layer: the same dot products, w2's two halves summed in one accumulation instead of two. fp32 logits of 40
 * positions, prefill and the batched decode of test_batch_equals_alone's layout, within 1e-4 of the unfused model;
 * and with int8 (one scale per fused w2 row) still within the int8 limits' order. */
static void test_fused_matmuls_same(void **state) {
    world *w = *state;
    errbuf eb = {0};
    eng_model *ep = NULL, *ef = NULL;
    eng_model_opts mo = {.max_rows = 64, .n_kv_blocks = 8, .kv_dtype = -1, .fuse_matmuls = -1};
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &ep, &eb), ERR_OK);
    mo.fuse_matmuls = 1;
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &ef, &eb), ERR_OK);
    size_t wp = 0, wf = 0;
    eng_model_memory(ep, &wp, NULL, NULL);
    eng_model_memory(ef, &wf, NULL, NULL);
    /* the plain model borrows all but the repacked qkv; the fused one owns w1 and w2 (and its small b1) */
    assert_true(wf > wp);
    int32_t toks[40], lr[40];
    for (int i = 0; i < 40; i++) toks[i] = (i * 7919 + 13) % 50000, lr[i] = i;
    float *a = xmalloc((size_t)40 * V * 4), *b = xmalloc((size_t)40 * V * 4);
    run_rows(ep, toks, 40, lr, 40, a);
    run_rows(ef, toks, 40, lr, 40, b);
    double worst = 0;
    for (size_t i = 0; i < (size_t)40 * V; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    print_message("fused vs separate matmuls: max |logit diff| %.3g over 40 positions\n", worst);
    if (worst > 1e-4) fail_msg("fused matmuls change the logits by %g", worst);
    /* one decode row after the prefill (the GEMV's shape on CUDA) */
    int32_t blocks[4] = {0, 1, 2, 3}, p40 = 40, t40 = 777, l0 = 0;
    eng_seq s = {0, 1, 40, blocks, 4};
    eng_batch bt = {1, &s, 1, &t40, &p40};
    assert_int_equal(eng_model_forward(ep, &bt, &l0, 1, a, &eb), ERR_OK);
    assert_int_equal(eng_model_forward(ef, &bt, &l0, 1, b, &eb), ERR_OK);
    worst = 0;
    for (size_t i = 0; i < V; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    if (worst > 1e-4) fail_msg("fused matmuls change the decode logits by %g", worst);
    eng_model_destroy(ef);
    eng_model_destroy(ep);
    /* int8: the fused model quantizes w2's rows as one: still close to the separate int8 model */
    mo.dtype = "int8";
    mo.fuse_matmuls = -1;
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &ep, &eb), ERR_OK);
    mo.fuse_matmuls = 1;
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &ef, &eb), ERR_OK);
    run_rows(ep, toks, 40, lr, 40, a);
    run_rows(ef, toks, 40, lr, 40, b);
    double se = 0, ss = 0;
    for (size_t i = 0; i < (size_t)40 * V; i++) se += (a[i] - b[i]) * (a[i] - b[i]), ss += (double)a[i] * a[i];
    print_message("int8 fused vs separate: RMS logit diff %.3g x RMS\n", sqrt(se / ss));
    if (sqrt(se / ss) > 0.02) fail_msg("int8 fused matmuls move the logits by %.3g x RMS", sqrt(se / ss));
    eng_model_destroy(ef);
    eng_model_destroy(ep);
    xfree(a), xfree(b);
}

/* The branched layer (forward.c layer_branched: fc_out beside attention, out_proj after the join or beside it into
 * an f32 buffer added after the join, or fc_out split by its inputs with the rest after the join), over views of the
 * fused weights. The CPU backend has no branches, so it runs the op list in program order: the same logits as the
 * fused layer within 1e-4, 40 positions of prefill and one decode row, in all three layouts; and the branch op's own
 * contract on a backend without branches. */
static void test_branched_layers_same(void **state) {
    world *w = *state;
    errbuf eb = {0};
    assert_int_equal(eng_backend_has_branches(w->be), 0);
    assert_int_equal(eng_branch(w->be, ENG_BRANCH_SIDE), ERR_OK); /* no-ops here */
    assert_int_equal(eng_branch(w->be, ENG_BRANCH_JOIN), ERR_OK);
    assert_int_equal(eng_branch(w->be, (eng_branch_op)7), ERR_INVALID);
    eng_model_opts mo = {.max_rows = 64, .n_kv_blocks = 8, .kv_dtype = -1, .fuse_matmuls = 1, .branches = -1};
    eng_model *ef = NULL;
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &ef, &eb), ERR_OK);
    int32_t toks[40], lr[40];
    for (int i = 0; i < 40; i++) toks[i] = (i * 7919 + 13) % 50000, lr[i] = i;
    float *a = xmalloc((size_t)40 * V * 4), *b = xmalloc((size_t)40 * V * 4);
    float *da = xmalloc((size_t)V * 4), *db = xmalloc((size_t)V * 4);
    int32_t blocks[4] = {0, 1, 2, 3}, p40 = 40, t40 = 777, l0 = 0;
    eng_seq s = {0, 1, 40, blocks, 4};
    eng_batch bt = {1, &s, 1, &t40, &p40};
    run_rows(ef, toks, 40, lr, 40, a);
    assert_int_equal(eng_model_forward(ef, &bt, &l0, 1, da, &eb), ERR_OK);
    for (int layout = 1; layout <= 2; layout++) {
        eng_model *eb_ = NULL;
        mo.branches = layout;
        assert_int_equal(eng_model_create(w->be, w->m, &mo, &eb_, &eb), ERR_OK);
        size_t ws_f = 0, ws_b = 0;
        eng_model_memory(ef, NULL, NULL, &ws_f);
        eng_model_memory(eb_, NULL, NULL, &ws_b);
        /* layout 2 keeps out_proj's result in an f32 [max_rows, d_model] buffer of its own */
        assert_true(ws_b == ws_f + (layout == 2 ? (size_t)64 * 80 * 4 : 0));
        run_rows(eb_, toks, 40, lr, 40, b);
        double worst = 0;
        for (size_t i = 0; i < (size_t)40 * V; i++) worst = fmax(worst, fabs(a[i] - b[i]));
        print_message("branched layers %d vs fused: max |logit diff| %.3g over 40 positions\n", layout, worst);
        if (worst > 1e-4) fail_msg("branched layers %d change the logits by %g", layout, worst);
        assert_int_equal(eng_model_forward(eb_, &bt, &l0, 1, db, &eb), ERR_OK);
        worst = 0;
        for (size_t i = 0; i < V; i++) worst = fmax(worst, fabs(da[i] - db[i]));
        if (worst > 1e-4) fail_msg("branched layers %d change the decode logits by %g", layout, worst);
        eng_model_destroy(eb_);
    }
    eng_model_destroy(ef);
    /* int8 weights have no w1/w2 views: the option is ignored there and the fused int8 model still runs */
    mo.dtype = "int8";
    mo.branches = 1;
    assert_int_equal(eng_model_create(w->be, w->m, &mo, &ef, &eb), ERR_OK);
    run_rows(ef, toks, 40, lr, 40, b);
    eng_model_destroy(ef);
    xfree(a), xfree(b), xfree(da), xfree(db);
}

/* One step of eng_rope_kv_attention on kv[0] and of rope_kv_store + attention on kv[1], same input: same output. */
static void rka_step(eng_backend *be, eng_kv *kv[2], eng_tensor qkv[2], eng_tensor out[2], const eng_batch *b,
                     const float *in, eng_attn_shape sh) {
    const int64_t D = (int64_t)sh.n_head * sh.head_dim;
    float got[2][4 * 16];
    for (int k = 0; k < 2; k++) {
        eng_tensor x = eng_tensor_rows(qkv[k], 0, b->n_rows), o = eng_tensor_rows(out[k], 0, b->n_rows);
        assert_int_equal(eng_tensor_write_f32(be, &x, in), ERR_OK);
        if (k == 0) {
            assert_int_equal(eng_rope_kv_attention(be, &o, &x, kv[k], 0, b, sh), ERR_OK);
        } else {
            eng_tensor q = eng_tensor_cols(x, 0, D);
            assert_int_equal(eng_rope_kv_store(be, &x, kv[k], 0, b, sh), ERR_OK);
            assert_int_equal(eng_attention(be, &o, &q, kv[k], 0, b, sh), ERR_OK);
        }
        assert_int_equal(eng_tensor_read_f32(be, &o, got[k]), ERR_OK);
    }
    assert_memory_equal(got[0], got[1], (size_t)b->n_rows * D * sizeof(float));
}

/* eng_rope_kv_attention on a backend without the fold (cpu: the two ops behind its checks) gives rope_kv_store then
 * attention's output and cache (later steps read the stored keys); bad shapes and positions are refused before
 * anything is stored (a refused decode at position 3 leaves slot 3 unwritten for the step at 4 to read). The folded
 * CUDA kernel is checked against ref in test_gpu_parity's rope_kv_attention. */
static void test_rope_kv_attention_op(void **state) {
    world *w = *state;
    const eng_attn_shape sh = {2, 8, 4}; /* 2 heads of 8, 4 rotary dims */
    const int64_t D = 16;
    eng_kv *kv[2];
    eng_tensor qkv[2], out[2];
    float in[4 * 48];
    for (int i = 0; i < 4 * 48; i++) in[i] = (float)((i * 37) % 23) / 11.0f - 1.0f;
    int32_t blocks[1] = {0}, toks[2] = {0, 0}, pos[2] = {0, 1}, p2 = 2, p3 = 3, p4 = 4;
    for (int k = 0; k < 2; k++) {
        assert_int_equal(eng_kv_create(w->be, 1, (int32_t)D, 1, ENG_F32, &kv[k]), ERR_OK);
        assert_int_equal(eng_tensor_alloc(w->be, ENG_F32, 2, 3 * D, &qkv[k]), ERR_OK);
        assert_int_equal(eng_tensor_alloc(w->be, ENG_F32, 2, D, &out[k]), ERR_OK);
    }
    eng_seq s = {0, 2, 0, blocks, 1}, s2 = {0, 1, 2, blocks, 1}, s3 = {0, 1, 3, blocks, 1}, s4 = {0, 1, 4, blocks, 1};
    eng_batch b = {1, &s, 2, toks, pos}, b2 = {1, &s2, 1, toks, &p2}, b3 = {1, &s3, 1, toks, &p3},
              b4 = {1, &s4, 1, toks, &p4};
    rka_step(w->be, kv, qkv, out, &b, in, sh);       /* a prefill of 2 rows */
    rka_step(w->be, kv, qkv, out, &b2, in + 96, sh); /* a decode reading them */
    eng_tensor one = eng_tensor_rows(qkv[0], 0, 1), narrow = eng_tensor_cols(qkv[0], 0, 3 * D - 8);
    eng_tensor out1 = eng_tensor_rows(out[0], 0, 1), half_out = eng_tensor_cols(out1, 0, 8);
    assert_int_equal(eng_tensor_write_f32(w->be, &one, in + 144), ERR_OK);
    assert_int_equal(eng_rope_kv_attention(w->be, &half_out, &one, kv[0], 0, &b3, sh), ERR_INVALID);
    assert_int_equal(eng_rope_kv_attention(w->be, &out[0], &narrow, kv[0], 0, &b, sh), ERR_INVALID);
    assert_int_equal(eng_rope_kv_attention(w->be, &out1, &one, kv[0], 1, &b3, sh), ERR_INVALID); /* layer */
    int32_t bad = 5;
    b3.positions = &bad; /* not the sequence's position */
    assert_int_equal(eng_rope_kv_attention(w->be, &out1, &one, kv[0], 0, &b3, sh), ERR_INVALID);
    rka_step(w->be, kv, qkv, out, &b4, in + 48, sh); /* reads slot 3 as never written on both */
    for (int k = 0; k < 2; k++) {
        eng_tensor_free(w->be, &qkv[k]), eng_tensor_free(w->be, &out[k]);
        eng_kv_destroy(w->be, kv[k]);
    }
}

/* eng_matmul_late: the split point must leave both parts non-empty; without the backend op (the CPU) it is
 * eng_matmul, accumulate and bias included, bit for bit. */
static void test_matmul_late_op(void **state) {
    world *w = *state;
    eng_tensor x, wt, b, y[2];
    float xv[2 * 24], wv[5 * 24], bv[5], y0[2 * 5];
    for (int i = 0; i < 2 * 24; i++) xv[i] = (float)((i * 29) % 17) / 8.0f - 1.0f;
    for (int i = 0; i < 5 * 24; i++) wv[i] = (float)((i * 13) % 11) / 5.0f - 1.0f;
    for (int i = 0; i < 5; i++) bv[i] = (float)i / 4.0f;
    for (int i = 0; i < 10; i++) y0[i] = (float)i - 3.0f;
    assert_int_equal(eng_tensor_alloc(w->be, ENG_F32, 2, 24, &x), ERR_OK);
    assert_int_equal(eng_tensor_alloc(w->be, ENG_F32, 5, 24, &wt), ERR_OK);
    assert_int_equal(eng_tensor_alloc(w->be, ENG_F32, 1, 5, &b), ERR_OK);
    assert_int_equal(eng_tensor_write_f32(w->be, &x, xv), ERR_OK);
    assert_int_equal(eng_tensor_write_f32(w->be, &wt, wv), ERR_OK);
    assert_int_equal(eng_tensor_write_f32(w->be, &b, bv), ERR_OK);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(eng_tensor_alloc(w->be, ENG_F32, 2, 5, &y[k]), ERR_OK);
        assert_int_equal(eng_tensor_write_f32(w->be, &y[k], y0), ERR_OK);
    }
    assert_int_equal(eng_matmul_late(w->be, &y[0], &x, &wt, &b, 1, 0), ERR_INVALID);
    assert_int_equal(eng_matmul_late(w->be, &y[0], &x, &wt, &b, 1, 24), ERR_INVALID);
    eng_tensor narrow = eng_tensor_cols(x, 0, 16);
    assert_int_equal(eng_matmul_late(w->be, &y[0], &narrow, &wt, &b, 1, 8), ERR_INVALID); /* K differs from w's */
    assert_int_equal(eng_matmul_late(w->be, &y[0], &x, &wt, &b, 1, 8), ERR_OK);
    assert_int_equal(eng_matmul(w->be, &y[1], &x, &wt, &b, 1), ERR_OK);
    float got[2][10];
    for (int k = 0; k < 2; k++) assert_int_equal(eng_tensor_read_f32(w->be, &y[k], got[k]), ERR_OK);
    assert_memory_equal(got[0], got[1], sizeof(got[0]));
    assert_true(got[0][0] != y0[0]); /* it did accumulate something */
    for (int k = 0; k < 2; k++) eng_tensor_free(w->be, &y[k]);
    eng_tensor_free(w->be, &x), eng_tensor_free(w->be, &wt), eng_tensor_free(w->be, &b);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_matmul_late_op),
                                       cmocka_unit_test(test_batch_equals_alone),
                                       cmocka_unit_test(test_int8_close_to_f32),
                                       cmocka_unit_test(test_fused_matmuls_same),
                                       cmocka_unit_test(test_branched_layers_same),
                                       cmocka_unit_test(test_rope_kv_attention_op)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
