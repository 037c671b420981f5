/* test_sample.c - greedy, masking of padded ids, logprobs, temperature/top-k/top-p draws, penalties. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sample.h"

#define V 16
#define VALID 12

static void fill(float *l, const float *src) { memcpy(l, src, sizeof(float) * V); }

static const float base[V] = {1.0f, 3.0f, 2.0f, 0.5f, -1.0f, 2.5f, 0.0f, 0.0f,
                              -2.0f, 1.5f, 0.25f, -0.5f, 9.0f, 9.0f, 9.0f, 9.0f}; /* ids >= 12: padding */

static void test_greedy_masks_padding(void **s) {
    (void)s;
    samp_state st;
    assert_int_equal(samp_state_init(&st, V, VALID, 1), ERR_OK);
    samp_params p = samp_params_default();
    p.n_logprobs = 3;
    float l[V];
    fill(l, base);
    samp_result r;
    samp_pick(&st, &p, l, &r);
    assert_int_equal(r.id, 1);
    /* logprobs from log_softmax over the 12 real ids */
    double sum = 0;
    for (int i = 0; i < VALID; i++) sum += exp(base[i]);
    assert_true(fabs(r.logprob - (3.0 - log(sum))) < 1e-5);
    assert_int_equal(r.n_top, 3);
    assert_int_equal(r.top_ids[0], 1);
    assert_int_equal(r.top_ids[1], 5);
    assert_int_equal(r.top_ids[2], 2);
    assert_true(r.top_logprobs[0] >= r.top_logprobs[1] && r.top_logprobs[1] >= r.top_logprobs[2]);
    samp_state_fini(&st);
}

/* The chosen id's logprob alone (OpenAI's logprobs: 0), or nothing at all when nobody asked (no exps spent). */
static void test_logprob_only_when_asked(void **s) {
    (void)s;
    samp_state st;
    assert_int_equal(samp_state_init(&st, V, VALID, 1), ERR_OK);
    samp_params p = samp_params_default();
    p.want_logprob = 1;
    float l[V];
    fill(l, base);
    samp_result r;
    samp_pick(&st, &p, l, &r);
    double sum = 0;
    for (int i = 0; i < VALID; i++) sum += exp(base[i]);
    assert_int_equal(r.id, 1);
    assert_true(fabs(r.logprob - (3.0 - log(sum))) < 1e-5);
    assert_int_equal(r.n_top, 0);
    p.want_logprob = 0;
    fill(l, base);
    samp_pick(&st, &p, l, &r);
    assert_int_equal(r.id, 1);
    assert_true(r.logprob == 0.0f);
    samp_state_fini(&st);
}

static void test_seeded_sampling_reproducible(void **s) {
    (void)s;
    samp_params p = samp_params_default();
    p.temperature = 1.0f;
    int seq[2][50];
    for (int run = 0; run < 2; run++) {
        samp_state st;
        assert_int_equal(samp_state_init(&st, V, VALID, 77), ERR_OK);
        for (int i = 0; i < 50; i++) {
            float l[V];
            fill(l, base);
            samp_result r;
            samp_pick(&st, &p, l, &r);
            assert_true(r.id < VALID);
            seq[run][i] = r.id;
        }
        samp_state_fini(&st);
    }
    assert_memory_equal(seq[0], seq[1], sizeof(seq[0]));
}

/* Empirical frequencies follow softmax(logits / T). */
static void test_temperature_distribution(void **s) {
    (void)s;
    samp_params p = samp_params_default();
    p.temperature = 2.0f;
    samp_state st;
    assert_int_equal(samp_state_init(&st, V, VALID, 5), ERR_OK);
    int counts[V] = {0};
    const int N = 60000;
    for (int i = 0; i < N; i++) {
        float l[V];
        fill(l, base);
        samp_result r;
        samp_pick(&st, &p, l, &r);
        counts[r.id]++;
        memset(st.gen_count, 0, sizeof(uint16_t) * V); /* keep draws independent of history */
    }
    double z = 0;
    for (int i = 0; i < VALID; i++) z += exp(base[i] / 2.0);
    for (int i = 0; i < VALID; i++) {
        double want = exp(base[i] / 2.0) / z;
        assert_true(fabs((double)counts[i] / N - want) < 0.01);
    }
    for (int i = VALID; i < V; i++) assert_int_equal(counts[i], 0);
    samp_state_fini(&st);
}

static void test_top_k_top_p(void **s) {
    (void)s;
    samp_state st;
    assert_int_equal(samp_state_init(&st, V, VALID, 9), ERR_OK);
    samp_params p = samp_params_default();
    p.temperature = 1.0f;
    p.top_k = 2;
    for (int i = 0; i < 2000; i++) {
        float l[V];
        fill(l, base);
        samp_result r;
        samp_pick(&st, &p, l, &r);
        assert_true(r.id == 1 || r.id == 5);
    }
    /* probabilities 0.4, 0.3, 0.2, 0.1 (others -inf-ish): top_p 0.5 keeps the first two */
    p.top_k = 0;
    p.top_p = 0.5f;
    float q[V];
    for (int i = 0; i < V; i++) q[i] = -1e30f;
    q[3] = logf(0.4f), q[7] = logf(0.3f), q[0] = logf(0.2f), q[9] = logf(0.1f);
    int seen[V] = {0};
    for (int i = 0; i < 4000; i++) {
        float l[V];
        memcpy(l, q, sizeof(q));
        samp_result r;
        samp_pick(&st, &p, l, &r);
        seen[r.id]++;
    }
    assert_true(seen[3] > 0 && seen[7] > 0);
    assert_int_equal(seen[3] + seen[7], 4000);
    samp_state_fini(&st);
}

static void test_penalties(void **s) {
    (void)s;
    samp_state st;
    assert_int_equal(samp_state_init(&st, V, VALID, 1), ERR_OK);
    int32_t prompt[] = {1, 4};
    samp_state_add_prompt(&st, prompt, 2);
    samp_params p = samp_params_default();
    p.repetition_penalty = 2.0f;
    float l[V];
    fill(l, base);
    samp_result r;
    samp_pick(&st, &p, l, &r);
    /* id 1: 3.0 / 2 = 1.5 < 2.5 (id 5) -> greedy picks 5; id 4: -1 * 2 = -2 */
    assert_int_equal(r.id, 5);
    assert_true(l[1] == 1.5f && l[4] == -2.0f);
    /* OpenAI penalties count generated ids: id 5 was generated once */
    p = samp_params_default();
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.6f;
    fill(l, base);
    samp_pick(&st, &p, l, &r);
    assert_true(fabsf(l[5] - (2.5f - 0.5f - 0.6f)) < 1e-6f);
    assert_int_equal(r.id, 1);
    samp_state_fini(&st);
}

static void test_params_check(void **s) {
    (void)s;
    errbuf eb = {0};
    samp_params p = samp_params_default();
    assert_int_equal(samp_params_check(&p, &eb), ERR_OK);
    p.top_p = 0;
    assert_int_equal(samp_params_check(&p, &eb), ERR_INVALID);
    assert_non_null(strstr(eb.msg, "top_p"));
    p = samp_params_default();
    p.temperature = -1;
    assert_int_equal(samp_params_check(&p, &eb), ERR_INVALID);
    p = samp_params_default();
    p.n_logprobs = SAMP_MAX_LOGPROBS + 1;
    assert_int_equal(samp_params_check(&p, &eb), ERR_INVALID);
    p = samp_params_default();
    p.presence_penalty = NAN;
    assert_int_equal(samp_params_check(&p, &eb), ERR_INVALID);
}

/* samp_pick_top on samp_top_compute's summary makes samp_pick's choices: the same ids and logprobs over runs of
 * 60 picks with one generator each (so a single extra or missing draw would shift every later pick), for greedy,
 * logprobs, top_k and top_p at several temperatures, over rows with ties (quantized values) and -inf entries, and
 * a vocabulary with padding. Where top_p's nucleus reaches past the candidates it answers 0 and the row is used. */
static void test_top_summary_same_choices(void **s) {
    (void)s;
    enum { NV = 3000, NVALID = 2950, PICKS = 60 };
    static float row[NV], a[NV];
    const struct {
        float t, top_p;
        int top_k, n_logprobs;
    } cases[] = {{0, 1, 0, 0}, {0, 1, 0, 5}, {0.7f, 1, 10, 3}, {1.0f, 1, 64, 0}, {1.3f, 0.9f, 0, 2},
                 {0.5f, 0.5f, 0, 0}, {2.0f, 0.99f, 0, 1}, {1.0f, 0.95f, 40, 0}, {0.8f, 0.3f, 0, 20}};
    int fallbacks = 0, served = 0;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        samp_params p = samp_params_default();
        p.temperature = cases[c].t, p.top_p = cases[c].top_p, p.top_k = cases[c].top_k;
        p.n_logprobs = cases[c].n_logprobs, p.want_logprob = 1;
        assert_true(samp_top_serves(&p));
        samp_state s1, s2;
        assert_int_equal(samp_state_init(&s1, NV, NVALID, 42 + c), ERR_OK);
        assert_int_equal(samp_state_init(&s2, NV, NVALID, 42 + c), ERR_OK);
        uint64_t x = 99 + c;
        for (int k = 0; k < PICKS; k++) {
            /* peaked rows (a few large logits) and flat ones (top_p past 64 candidates), values on a 1/8 grid */
            for (int i = 0; i < NV; i++) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                row[i] = floorf((float)((x >> 40) % 1000) / 1000.0f * 4.0f * 8.0f) / 8.0f;
                if (k % 3 != 0 && (x >> 16) % 200 == 0) row[i] += 12.0f; /* peaked: ~15 ids far ahead */
                if ((x >> 20) % 97 == 0) row[i] = -INFINITY;
            }
            samp_result r1, r2;
            memcpy(a, row, sizeof(row));
            samp_pick(&s1, &p, a, &r1);
            samp_top t;
            samp_top_compute(row, NVALID, samp_top_inv_t(&p), &t);
            if (samp_pick_top(&s2, &p, &t, &r2)) {
                served++;
            } else {
                fallbacks++;
                memcpy(a, row, sizeof(row));
                samp_pick(&s2, &p, a, &r2);
            }
            assert_int_equal(r1.id, r2.id);
            assert_true(r1.logprob == r2.logprob);
            assert_int_equal(r1.n_top, r2.n_top);
            for (int i = 0; i < r1.n_top; i++) {
                assert_int_equal(r1.top_ids[i], r2.top_ids[i]);
                assert_true(r1.top_logprobs[i] == r2.top_logprobs[i]);
            }
        }
        samp_state_fini(&s1);
        samp_state_fini(&s2);
    }
    printf("summary served %d picks, %d fell back to the row\n", served, fallbacks);
    assert_true(served > 400);
    assert_true(fallbacks > 0); /* the flat rows under top_p 0.99 / 0.9 */
    /* penalties and whole-vocabulary sampling are not served */
    samp_params p = samp_params_default();
    p.repetition_penalty = 1.2f;
    assert_false(samp_top_serves(&p));
    p = samp_params_default();
    p.temperature = 1.0f;
    assert_false(samp_top_serves(&p));
    p.top_k = SAMP_TOP_K + 1;
    assert_false(samp_top_serves(&p));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_masks_padding),     cmocka_unit_test(test_seeded_sampling_reproducible),
        cmocka_unit_test(test_temperature_distribution), cmocka_unit_test(test_top_k_top_p),
        cmocka_unit_test(test_penalties),                cmocka_unit_test(test_params_check),
        cmocka_unit_test(test_logprob_only_when_asked), cmocka_unit_test(test_top_summary_same_choices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
