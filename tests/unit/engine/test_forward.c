/* test_forward.c - the forward pass over a batch: sequences at different positions, with their own (scattered)
 * KV blocks, packed into one call, give the logits each gets alone; bad batches are refused. */
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

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_batch_equals_alone)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
