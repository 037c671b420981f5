/* test_batch.c - continuous batching on the CPU backend with fp32 weights:
 *   - fidelity: 16 mixed requests (prompts of 5..150 tokens, different lengths, chunked prefill beside decodes)
 *     give exactly the greedy tokens each gives alone through gen_run, and the steps really were batched;
 *   - prefix cache: an extended prompt reuses all but the last block of the previous one, a repeated prompt too,
 *     and both outputs are identical to an uncached run; identical prompts submitted together compute once;
 *   - a deadline stops a request within a step (DONE, cancelled, deadline = 1);
 *   - 10,000 cancelled requests leave the block pool exactly as it started and the engine responsive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "alloc.h"
#include "clock.h"
#include "sched_api.h"
#include "testutil.h"
#include "world.h"

#define MAXGEN 64

typedef struct world {
    tu_world t;          /* t.em is behind the sched */
    eng_model *em_ref;   /* for gen_run alone */
    sched *s;
} world;

static int setup(void **state) {
    world *w = xcalloc(1, sizeof(*w));
    tu_ckpt_spec spec = {2, 64, 4, 8, 512, 51200, ST_F32, 23};
    errbuf eb = {0};
    eng_model_opts mo = {.max_rows = 64, .kv_dtype = -1, .n_kv_seqs = 16};
    sched_opts so = {.queue_max = 64, .max_batch = 16, .step_tokens = 48, .prefix_cache = 1};
    *state = w;
    if (tu_world_open(&w->t, &spec, 2, &mo)) return -1;
    if (eng_model_create(w->t.be, w->t.m, NULL, &w->em_ref, &eb) ||
        sched_local_create(w->t.em, w->t.tk, &so, &w->s, &eb)) {
        fprintf(stderr, "setup: %s\n", eb.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    world *w = *state;
    sched_destroy(w->s); /* before the model it steps */
    eng_model_destroy(w->em_ref);
    tu_world_close(&w->t);
    xfree(w);
    return 0;
}

static sched_request make_req(const int32_t *ids, size_t n, int32_t max_tokens) {
    sched_request r = {ids, n, {0}, 0};
    r.params.max_tokens = max_tokens;
    r.params.samp = samp_params_default();
    r.params.ignore_eos = 1;
    return r;
}

typedef struct out {
    int32_t ids[MAXGEN], n;
    sched_event done;
} out;

static void collect(sched_req *q, out *o) {
    memset(o, 0, sizeof(*o));
    for (;;) {
        sched_event ev;
        if (!sched_next(q, &ev, 20000)) fail_msg("no event within 20 s");
        for (int32_t i = 0; i < ev.n_tokens && o->n < MAXGEN; i++) o->ids[o->n++] = ev.tokens[i].id;
        if (ev.kind == SCHED_EV_ERROR) fail_msg("ERROR event: %s", ev.msg);
        if (ev.kind == SCHED_EV_DONE) {
            o->done = ev;
            o->done.tokens = NULL, o->done.text = NULL;
            sched_event_fini(&ev);
            return;
        }
        sched_event_fini(&ev);
    }
}

static void on_token(void *ud, const samp_result *t) {
    out *o = ud;
    if (o->n < MAXGEN) o->ids[o->n++] = t->id;
}

static void alone(world *w, const int32_t *ids, size_t n, int32_t max_tokens, out *o) {
    memset(o, 0, sizeof(*o));
    sched_request r = make_req(ids, n, max_tokens);
    gen_result res;
    errbuf eb = {0};
    if (gen_run(w->em_ref, w->t.tk, ids, n, &r.params, NULL, on_token, o, &res, &eb) != ERR_OK)
        fail_msg("gen_run: %s", eb.msg);
}

static void fill(int32_t *ids, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 33) % 50000;
}

static void wait_idle(world *w, sched_stats *st) {
    for (int i = 0; i < 20000; i++) {
        sched_get_stats(w->s, st);
        if (st->queued == 0 && st->running == 0) return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    fail_msg("the engine did not go idle");
}

static void test_batch_fidelity(void **state) {
    world *w = *state;
    enum { N = 16 };
    static int32_t prompts[N][160];
    size_t plen[N];
    int32_t maxt[N];
    out want[N], got[N];
    sched_req *q[N];
    for (int i = 0; i < N; i++) {
        plen[i] = 5 + (size_t)(i * 37) % 146;
        maxt[i] = 8 + (i * 13) % 33;
        fill(prompts[i], plen[i], 1000 + (uint64_t)i);
        alone(w, prompts[i], plen[i], maxt[i], &want[i]);
    }
    sched_stats before, after;
    wait_idle(w, &before);
    errbuf eb = {0};
    for (int i = 0; i < N; i++) {
        sched_request r = make_req(prompts[i], plen[i], maxt[i]);
        assert_int_equal(sched_submit(w->s, &r, &q[i], &eb), ERR_OK);
    }
    for (int i = 0; i < N; i++) {
        collect(q[i], &got[i]);
        sched_release(q[i]);
        assert_int_equal(got[i].done.finish, GEN_FINISH_LENGTH);
        assert_int_equal(got[i].n, maxt[i]);
        assert_int_equal(want[i].n, maxt[i]);
        if (memcmp(got[i].ids, want[i].ids, (size_t)maxt[i] * sizeof(int32_t)))
            fail_msg("request %d (prompt %zu tokens): batched output differs from its output alone", i, plen[i]);
    }
    wait_idle(w, &after);
    uint64_t steps = after.steps - before.steps, seqs = after.step_seqs - before.step_seqs;
    print_message("16 requests: %llu steps, %.1f sequences per step\n", (unsigned long long)steps,
                  (double)seqs / (double)steps);
    assert_true(seqs > 4 * steps); /* batched, not one after another */
    assert_int_equal(after.kv_blocks_used, 0);
}

static void test_prefix_reuse(void **state) {
    world *w = *state;
    static int32_t p[120];
    fill(p, 120, 77);
    errbuf eb = {0};
    out first, again, ext, want_ext, want;
    sched_req *q;
    alone(w, p, 100, 12, &want);
    alone(w, p, 107, 12, &want_ext);
    sched_request r = make_req(p, 100, 12);
    assert_int_equal(sched_submit(w->s, &r, &q, &eb), ERR_OK);
    collect(q, &first);
    sched_release(q);
    r = make_req(p, 107, 12); /* the next keystroke: the same text and a little more */
    assert_int_equal(sched_submit(w->s, &r, &q, &eb), ERR_OK);
    collect(q, &ext);
    sched_release(q);
    r = make_req(p, 100, 12);
    assert_int_equal(sched_submit(w->s, &r, &q, &eb), ERR_OK);
    collect(q, &again);
    sched_release(q);
    assert_int_equal(first.done.n_cached % 16, 0);
    assert_int_equal(ext.done.n_cached, 96);   /* all 6 full blocks of the 107 tokens but the last token's */
    assert_int_equal(again.done.n_cached, 96); /* (100 - 1) / 16 blocks: the last prompt token is recomputed */
    assert_memory_equal(first.ids, want.ids, 12 * sizeof(int32_t));
    assert_memory_equal(again.ids, want.ids, 12 * sizeof(int32_t));
    assert_memory_equal(ext.ids, want_ext.ids, 12 * sizeof(int32_t));
    sched_stats st;
    wait_idle(w, &st);
    assert_true(st.cached_tokens >= 192);
    assert_true(st.kv_blocks_cached > 0);
}

static void test_identical_prompts_compute_once(void **state) {
    world *w = *state;
    static int32_t p[100];
    fill(p, 100, 4242); /* a prompt the cache has never seen */
    sched_req *q[4];
    out o[4];
    errbuf eb = {0};
    for (int i = 0; i < 4; i++) {
        sched_request r = make_req(p, 100, 6);
        assert_int_equal(sched_submit(w->s, &r, &q[i], &eb), ERR_OK);
    }
    int32_t cached = 0;
    for (int i = 0; i < 4; i++) {
        collect(q[i], &o[i]);
        sched_release(q[i]);
        cached += o[i].done.n_cached;
        assert_memory_equal(o[i].ids, o[0].ids, 6 * sizeof(int32_t));
    }
    assert_int_equal(cached, 3 * 96); /* the first computed the prompt, the other three shared its blocks */
}

static void test_deadline(void **state) {
    world *w = *state;
    static int32_t p[40];
    fill(p, 40, 9);
    sched_request r = make_req(p, 40, 400);
    r.deadline_ns = clock_ns() + 20 * 1000000ull;
    sched_req *q;
    errbuf eb = {0};
    assert_int_equal(sched_submit(w->s, &r, &q, &eb), ERR_OK);
    out o;
    collect(q, &o);
    sched_release(q);
    assert_int_equal(o.done.finish, GEN_FINISH_CANCELLED);
    assert_int_equal(o.done.deadline, 1);
    assert_true(o.n < 400);
}

/* With every seat busy, a waiting request that is cancelled (or whose deadline passes) still leaves at once: it must
 * not hold a queue place until a seat frees. A prompt id outside the vocabulary is refused at submit. */
static void test_queue_reaped_while_full(void **state) {
    world *w = *state;
    static int32_t p[40], pb[16][30];
    fill(p, 40, 99);
    sched_req *busy[16], *waiting[3];
    errbuf eb = {0};
    for (int i = 0; i < 16; i++) { /* distinct prompts: identical ones would wait for each other's prefill */
        fill(pb[i], 30, 700 + (uint64_t)i);
        sched_request r = make_req(pb[i], 30, 470); /* the whole pool: 16 x 32 blocks */
        assert_int_equal(sched_submit(w->s, &r, &busy[i], &eb), ERR_OK);
    }
    for (int i = 0; i < 3; i++) {
        sched_request r = make_req(p, 10 + (size_t)i, 4);
        if (i == 2) r.deadline_ns = clock_ns() + 30 * 1000000ull;
        assert_int_equal(sched_submit(w->s, &r, &waiting[i], &eb), ERR_OK);
    }
    sched_cancel(waiting[1]);
    uint64_t t0 = clock_ns();
    out o1, o2;
    collect(waiting[1], &o1);
    collect(waiting[2], &o2);
    assert_true(clock_ns() - t0 < 2000000000ull); /* long before 16 x 470 tokens are done */
    assert_int_equal(o1.done.finish, GEN_FINISH_CANCELLED);
    assert_int_equal(o2.done.finish, GEN_FINISH_CANCELLED);
    assert_int_equal(o2.done.deadline, 1);
    assert_int_equal(o1.n + o2.n, 0);
    sched_stats st;
    sched_get_stats(w->s, &st);
    assert_int_equal(st.queued, 1); /* only waiting[0] still waits for a seat */
    for (int i = 0; i < 16; i++) sched_release(busy[i]);
    out o0;
    collect(waiting[0], &o0); /* gets its seat once the released ones leave */
    assert_int_equal(o0.done.finish, GEN_FINISH_LENGTH);
    for (int i = 0; i < 3; i++) sched_release(waiting[i]);
    int32_t bad[] = {5, 51200, 7};
    sched_request r = make_req(bad, 3, 2);
    sched_req *q = NULL;
    assert_int_equal(sched_submit(w->s, &r, &q, &eb), ERR_INVALID);
    assert_null(q);
    assert_non_null(strstr(eb.msg, "vocabulary"));
    wait_idle(w, &st);
}

static void test_cancel_10000(void **state) {
    world *w = *state;
    sched_stats st0, st;
    wait_idle(w, &st0);
    static int32_t p[64];
    fill(p, 64, 5);
    int submitted = 0;
    for (int i = 0; submitted < 10000; i++) {
        sched_request r = make_req(p + (i % 16), 20 + (size_t)(i % 29), 30);
        sched_req *q = NULL;
        errbuf eb = {0};
        if (sched_submit(w->s, &r, &q, &eb) != ERR_OK) { /* queue full: let the engine catch up */
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
            continue;
        }
        submitted++;
        if (i % 4 == 0) { /* some run a little before the client goes away */
            sched_event ev;
            if (sched_next(q, &ev, 50)) sched_event_fini(&ev);
        }
        if (i % 2) sched_cancel(q);
        sched_release(q);
    }
    wait_idle(w, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.kv_blocks_total, st0.kv_blocks_total);
    assert_int_equal(st.kv_blocks_used + st.kv_blocks_cached <= st.kv_blocks_total, 1);
    /* still responsive, and still exact */
    static int32_t x[30];
    fill(x, 30, 31337);
    out want, got;
    alone(w, x, 30, 10, &want);
    sched_request r = make_req(x, 30, 10);
    sched_req *q;
    errbuf eb = {0};
    assert_int_equal(sched_submit(w->s, &r, &q, &eb), ERR_OK);
    collect(q, &got);
    sched_release(q);
    assert_memory_equal(got.ids, want.ids, 10 * sizeof(int32_t));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_fidelity),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_identical_prompts_compute_once),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_queue_reaped_while_full),
        cmocka_unit_test(test_cancel_10000),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
