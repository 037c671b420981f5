/* test_gpu_golden.c - the cuda backend against HF transformers on the tiny random checkpoints of tests/golden.
 *
 * Same goldens and checkpoint recipe as tests/golden/test_golden_model.c (which runs cpu and ref):
 *   - tiny-fp32 runs in f32 (activations follow the weights): greedy continuations through gen_run must be
 *     identical to HF's, and teacher-forced top-5 logprobs within 1e-4 of HF's fp32 math;
 *   - tiny-fp16 runs in f16 activations with an f16 KV cache (HF's fp16 mode): its teacher-forced top-5 logprobs
 *     must be within 5e-2 of HF's own fp16-mode run (the two round in different places; CPU vs HF fp16 mode is
 *     held to 3e-2 with f32 activations); the distance to HF's fp32 math and the greedy agreement are printed;
 *   - step graphs: the same prefill and decode steps (batch 1 and small batches of growing block tables, across the
 *     attention key budgets 128 / 256) on a model with graphs and one without (SUGGESTD_CUDA_GRAPHS=0) give the
 *     same logits (the same kernels and split plan: bit for bit expected), and the graphs were replayed.
 * Plain C + jansson (no cmocka): it runs on the GPU machine. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "fp16.h"
#include "gen.h"
#include "gpu_check.h"
#include "testutil.h"
#include "tok.h"

#define N_VALID 50295

int gc_failures;
static const char *backend_name = "cuda";

typedef struct fixture {
    json_t *golden;
    char *dir;
    model *m;
    tok *tk;
} fixture;

static int load_fixture(fixture *fx, const char *name) {
    memset(fx, 0, sizeof(*fx));
    char rel[256];
    snprintf(rel, sizeof(rel), "tests/golden/data/%s.json", name);
    char *path = tu_source_path(rel);
    json_error_t je;
    fx->golden = json_load_file(path, 0, &je);
    xfree(path);
    if (!fx->golden) return -1;
    json_t *c = json_object_get(fx->golden, "config");
    const char *dt = json_string_value(json_object_get(c, "dtype"));
    tu_ckpt_spec spec = {
        (int32_t)json_integer_value(json_object_get(c, "n_layer")),
        (int32_t)json_integer_value(json_object_get(c, "n_embd")),
        (int32_t)json_integer_value(json_object_get(c, "n_head")),
        (int32_t)json_integer_value(json_object_get(c, "rotary_dim")),
        (int32_t)json_integer_value(json_object_get(c, "n_positions")),
        (int32_t)json_integer_value(json_object_get(c, "vocab_size")),
        !strcmp(dt, "float16") ? ST_F16 : ST_F32,
        (uint64_t)json_integer_value(json_object_get(c, "seed")),
    };
    errbuf eb = {0};
    fx->dir = tu_mkdtemp();
    if (!fx->dir || tu_write_checkpoint(fx->dir, &spec, &eb) != ERR_OK) {
        fprintf(stderr, "checkpoint: %s\n", eb.msg);
        return -1;
    }
    if (model_open(fx->dir, &fx->m, &eb) != ERR_OK) {
        fprintf(stderr, "model_open: %s\n", eb.msg);
        return -1;
    }
    char *tdir = tu_source_path("models/codegen-tokenizer");
    err rc = tok_load(tdir, &fx->tk, &eb);
    xfree(tdir);
    return rc == ERR_OK ? 0 : -1;
}

static void free_fixture(fixture *fx) {
    tok_destroy(fx->tk);
    model_close(fx->m);
    tu_rmtree_free(fx->dir);
    json_decref(fx->golden);
}

typedef struct collect {
    int32_t ids[64];
    samp_result res[64];
    int n;
} collect;

static void on_token(void *ud, const samp_result *r) {
    collect *c = ud;
    if (c->n < 64) c->res[c->n] = *r, c->ids[c->n++] = r->id;
}

static int32_t *json_ids(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *ids = xmalloc_array(*n ? *n : 1, sizeof(int32_t));
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

/* Largest |ours - golden| over every golden (id, logprob) of every step. */
static double top5_diff(json_t *steps, int n_steps, const float *lp, int32_t V) {
    double worst = 0;
    for (int s = 0; s < n_steps; s++) {
        json_t *top = json_array_get(steps, (size_t)s);
        for (size_t j = 0; j < json_array_size(top); j++) {
            json_t *e = json_array_get(top, j);
            int32_t id = (int32_t)json_integer_value(json_array_get(e, 0));
            double d = fabs(lp[(size_t)s * V + id] - json_real_value(json_array_get(e, 1)));
            if (d > worst) worst = d;
        }
    }
    return worst;
}

/* Teacher-forced log_softmax over the real tokens at positions n_prompt-1 .. n-2, in double. */
static float *teacher_forced(eng_model *em, const int32_t *ids, int32_t n, int32_t n_prompt, errbuf *eb) {
    const int32_t V = eng_model_config(em)->vocab_size, max_rows = eng_model_max_rows(em);
    const int32_t n_steps = n - n_prompt;
    float *out = xmalloc_array((size_t)n_steps * V, sizeof(float));
    int32_t blocks[256], *pos = xmalloc_array((size_t)n, sizeof(int32_t));
    int32_t *lrows = xmalloc_array((size_t)max_rows, sizeof(int32_t));
    float *logits = xmalloc_array((size_t)max_rows * V, sizeof(float));
    for (int32_t i = 0; i < 256; i++) blocks[i] = i;
    for (int32_t i = 0; i < n; i++) pos[i] = i;
    for (int32_t done = 0; done < n - 1 && out;) {
        int32_t rows = n - 1 - done < max_rows ? n - 1 - done : max_rows, nl = 0;
        for (int32_t r = 0; r < rows; r++)
            if (done + r >= n_prompt - 1) lrows[nl++] = r;
        eng_seq seq = {0, rows, done, blocks, (n + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK};
        eng_batch b = {1, &seq, rows, ids + done, pos + done};
        if (eng_model_forward(em, &b, lrows, nl, logits, eb) != ERR_OK) {
            xfree(out);
            out = NULL;
            break;
        }
        for (int32_t k = 0; k < nl; k++) {
            const float *row = logits + (size_t)k * V;
            float *dst = out + (size_t)(done + lrows[k] - (n_prompt - 1)) * V;
            double mx = -INFINITY, sum = 0;
            for (int32_t i = 0; i < N_VALID; i++) mx = row[i] > mx ? row[i] : mx;
            for (int32_t i = 0; i < N_VALID; i++) sum += exp(row[i] - mx);
            for (int32_t i = 0; i < V; i++) dst[i] = (float)(row[i] - mx - log(sum));
        }
        done += rows;
    }
    xfree(logits);
    xfree(lrows);
    xfree(pos);
    return out;
}

/* strict: greedy must match and top-5 within tol of HF fp32 math; else top-5 within tol of HF fp16 mode. */
static void run_model(const char *name, int strict, double tol) {
    fixture fx;
    GC_CHECK(load_fixture(&fx, name) == 0, "could not set up %s", name);
    errbuf eb = {0};
    eng_backend *be = NULL;
    eng_model *em = NULL;
    GC_CHECK(eng_backend_create(backend_name, 0, &be, &eb) == ERR_OK, "backend: %s", eb.msg);
    eng_model_opts mo = {.max_rows = 256, .kv_dtype = -1};
    GC_CHECK(eng_model_create(be, fx.m, &mo, &em, &eb) == ERR_OK, "eng_model_create: %s", eb.msg);
    size_t wb, kvb, wsb;
    eng_model_memory(em, &wb, &kvb, &wsb);
    printf("  %s on %s: weights %.1f MB, KV %.1f MB, workspace %.1f MB\n", name, eng_backend_describe(be),
           (double)wb / 1e6, (double)kvb / 1e6, (double)wsb / 1e6);
    const int32_t V = fx.m->cfg.vocab_size;
    size_t ci;
    json_t *cs;
    json_array_foreach(json_object_get(fx.golden, "cases"), ci, cs) {
        char what[128];
        snprintf(what, sizeof(what), "%s/%s/%s", name, backend_name, json_string_value(json_object_get(cs, "name")));
        size_t n_prompt, n_greedy;
        int32_t *prompt = json_ids(json_object_get(cs, "prompt_ids"), &n_prompt);
        int32_t *greedy = json_ids(json_object_get(cs, "greedy"), &n_greedy);
        gen_params gp = {0};
        gp.max_tokens = (int32_t)n_greedy;
        gp.samp = samp_params_default();
        gp.samp.n_logprobs = 5;
        gp.ignore_eos = 1;
        collect col = {0};
        gen_result res;
        GC_CHECK(gen_run(em, fx.tk, prompt, n_prompt, &gp, NULL, on_token, &col, &res, &eb) == ERR_OK,
                 "%s: gen_run: %s", what, eb.msg);
        size_t same = 0;
        while (same < n_greedy && same < (size_t)col.n && col.ids[same] == greedy[same]) same++;
        if (strict)
            GC_CHECK(same == n_greedy, "%s: greedy token %zu is %d, HF %d", what, same,
                     same < (size_t)col.n ? col.ids[same] : -1, greedy[same]);
        int32_t n_all = (int32_t)(n_prompt + n_greedy);
        int32_t *all = xmalloc_array((size_t)n_all, sizeof(int32_t));
        memcpy(all, prompt, n_prompt * sizeof(int32_t));
        memcpy(all + n_prompt, greedy, n_greedy * sizeof(int32_t));
        float *lp = teacher_forced(em, all, n_all, (int32_t)n_prompt, &eb);
        GC_CHECK(lp, "%s: forward: %s", what, eb.msg);
        double d32 = top5_diff(json_object_get(cs, "top5"), (int)n_greedy, lp, V), d16 = -1;
        if (json_object_get(cs, "top5_fp16_mode"))
            d16 = top5_diff(json_object_get(cs, "top5_fp16_mode"), (int)n_greedy, lp, V);
        printf("  %-30s greedy %zu/%zu same as HF; max |logprob diff| %.2e vs HF fp32 math, %.2e vs HF fp16 mode\n",
               what, same, n_greedy, d32, d16);
        if (strict) GC_CHECK(d32 <= tol, "%s: logprobs %.2e from HF fp32 math (limit %.0e)", what, d32, tol);
        else if (d16 >= 0) GC_CHECK(d16 <= tol, "%s: logprobs %.2e from HF fp16 mode (limit %.0e)", what, d16, tol);
        xfree(lp);
        xfree(all);
        xfree(prompt);
        xfree(greedy);
    }
    errbuf st = {0};
    GC_CHECK(eng_backend_status(be, &st) == ERR_OK, "backend unhealthy: %s", st.msg);
    eng_model_destroy(em);
    eng_backend_destroy(be);
    free_fixture(&fx);
}

/* ---- step graphs ----------------------------------------------------------------------------------------------- */

#define GS_SEQS 3
#define GS_BLOCKS 40 /* per sequence */

typedef struct gs_side {
    eng_backend *be;
    eng_model *em;
} gs_side;

static int gs_open(gs_side *sd, model *m, int graphs, errbuf *eb) {
    memset(sd, 0, sizeof(*sd));
    if (!graphs) setenv("SUGGESTD_CUDA_GRAPHS", "0", 1);
    eng_model_opts mo = {.max_rows = 64, .n_kv_blocks = GS_SEQS * GS_BLOCKS, .kv_dtype = -1};
    int ok = eng_backend_create(backend_name, 0, &sd->be, eb) == ERR_OK &&
             eng_model_create(sd->be, m, &mo, &sd->em, eb) == ERR_OK;
    unsetenv("SUGGESTD_CUDA_GRAPHS");
    return ok ? 0 : -1;
}

static void gs_close(gs_side *sd) {
    eng_model_destroy(sd->em);
    eng_backend_destroy(sd->be);
}

typedef struct gs_state {
    int32_t len[GS_SEQS], table[GS_SEQS][GS_BLOCKS];
    uint64_t rng;
    double worst;
} gs_state;

/* One step on both sides: sequence s gets n_new[s] tokens (0: not in the batch); logits of every row compared. */
static int gs_step(gs_state *st, gs_side sd[2], const int32_t *n_new, int32_t V, errbuf *eb) {
    eng_seq seqs[GS_SEQS];
    int32_t toks[64], pos[64], lrows[64], n_seqs = 0, rows = 0;
    for (int s = 0; s < GS_SEQS; s++) {
        if (!n_new[s]) continue;
        int32_t need = (st->len[s] + n_new[s] + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK; /* tables grow with the sequence */
        seqs[n_seqs++] = (eng_seq){rows, n_new[s], st->len[s], st->table[s], need};
        for (int32_t t = 0; t < n_new[s]; t++, rows++) {
            st->rng = st->rng * 6364136223846793005ull + 1442695040888963407ull;
            toks[rows] = (int32_t)((st->rng >> 33) % 50000), pos[rows] = st->len[s] + t, lrows[rows] = rows;
        }
        st->len[s] += n_new[s];
    }
    eng_batch b = {n_seqs, seqs, rows, toks, pos};
    float *lg[2];
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        lg[i] = xmalloc_array((size_t)rows * V, sizeof(float));
        if (eng_model_forward(sd[i].em, &b, lrows, rows, lg[i], eb) != ERR_OK) rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < (size_t)rows * V; i++) {
        double d = fabs((double)lg[0][i] - lg[1][i]);
        if (!(d <= st->worst)) st->worst = d; /* a NaN sticks */
    }
    xfree(lg[0]);
    xfree(lg[1]);
    return rc;
}

static void graphs_case(const char *name, double tol) {
    fixture fx;
    GC_CHECK(load_fixture(&fx, name) == 0, "could not set up %s", name);
    errbuf eb = {0};
    gs_side sd[2];
    GC_CHECK(gs_open(&sd[0], fx.m, 1, &eb) == 0 && gs_open(&sd[1], fx.m, 0, &eb) == 0, "%s: %s", name, eb.msg);
    const int32_t V = fx.m->cfg.vocab_size;
    gs_state st = {.rng = 42};
    for (int s = 0; s < GS_SEQS; s++)
        for (int i = 0; i < GS_BLOCKS; i++) st.table[s][i] = (GS_SEQS - 1 - s) * GS_BLOCKS + (i * 7) % GS_BLOCKS;
    /* prefill: 100, 230 and 9 tokens, in chunks of up to 64 rows (those run as graphs too when seen twice) */
    const int32_t prompt[GS_SEQS] = {100, 230, 9};
    for (int s = 0; s < GS_SEQS; s++)
        for (int32_t done = 0; done < prompt[s];) {
            int32_t n[GS_SEQS] = {0};
            n[s] = prompt[s] - done < 64 ? prompt[s] - done : 64;
            GC_CHECK(gs_step(&st, sd, n, V, &eb) == 0, "%s: prefill: %s", name, eb.msg);
            done += n[s];
        }
    /* decode: batch 1 (sequence 0, context 100 -> 260, across the key budgets 128 and 256) and every third step a
     * batch of three (1, 2 and 1 new tokens) */
    for (int i = 0; i < 120; i++) {
        int32_t n1[GS_SEQS] = {1, 0, 0}, n3[GS_SEQS] = {1, 2, 1};
        GC_CHECK(gs_step(&st, sd, i % 3 == 2 ? n3 : n1, V, &eb) == 0, "%s: decode step %d: %s", name, i,
                 eb.msg);
    }
    /* two sequences of one token, then one sequence of two: the same tiles (two of 1 row), but only the first may
     * fold RoPE and the KV store into decode attention (the pair's second token reads the key its first stores), so the
     * graph key tells them apart (cuda_graph.c); each shape is seen three times, so both are captured and replayed */
    for (int i = 0; i < 6; i++) {
        int32_t two[GS_SEQS] = {1, 1, 0}, pair[GS_SEQS] = {0, 2, 0};
        GC_CHECK(gs_step(&st, sd, i % 2 ? pair : two, V, &eb) == 0, "%s: mixed step %d: %s", name, i, eb.msg);
    }
    eng_graph_stats gs[2];
    eng_model_graph_stats(sd[0].em, &gs[0]);
    eng_model_graph_stats(sd[1].em, &gs[1]);
    printf("  %-30s graphs: %llu replays, %llu captures, %llu steps op by op; without: %llu/%llu/%llu; "
           "max |logit diff| %.3g\n",
           name, (unsigned long long)gs[0].replays, (unsigned long long)gs[0].captures,
           (unsigned long long)gs[0].runs, (unsigned long long)gs[1].replays, (unsigned long long)gs[1].captures,
           (unsigned long long)gs[1].runs, st.worst);
    GC_CHECK(st.worst <= tol, "%s: logits with graphs differ by %.3g (limit %.0e)", name, st.worst, tol);
    GC_CHECK(gs[0].replays >= 100 && gs[0].captures >= 3, "%s: graphs were not used (%llu replays, %llu captures)",
             name, (unsigned long long)gs[0].replays, (unsigned long long)gs[0].captures);
    GC_CHECK(gs[1].replays == 0 && gs[1].captures == 0, "%s: SUGGESTD_CUDA_GRAPHS=0 still made graphs", name);
    for (int i = 0; i < 2; i++) {
        errbuf bst = {0};
        GC_CHECK(eng_backend_status(sd[i].be, &bst) == ERR_OK, "backend unhealthy: %s", bst.msg);
        gs_close(&sd[i]);
    }
    free_fixture(&fx);
}

static void test_graphs(void) {
    if (strncmp(backend_name, "cuda", 4)) return; /* graphs are the CUDA backend's */
    graphs_case("tiny-fp32", 1e-3); /* expected 0: the limits only allow another cuBLAS kernel */
    graphs_case("tiny-fp16", 5e-2);
}

static void test_fp32(void) { run_model("tiny-fp32", 1, 1e-4); }
static void test_fp16(void) { run_model("tiny-fp16", 0, 5e-2); }

int main(int argc, char **argv) {
    if (argc > 1) backend_name = argv[1]; /* e.g. cuda:1, or cpu to check the harness */
    eng_backend *probe = NULL;
    errbuf eb = {0};
    if (eng_backend_create(backend_name, 0, &probe, &eb) != ERR_OK) {
        fprintf(stderr, "test_gpu_golden: %s\n", eb.msg);
        return 77;
    }
    eng_backend_destroy(probe);
    GC_RUN(test_fp32);
    GC_RUN(test_fp16);
    GC_RUN(test_graphs);
    printf("%s: %d failure%s\n", gc_failures ? "FAILED" : "PASSED", gc_failures, gc_failures == 1 ? "" : "s");
    return gc_failures ? 1 : 0;
}
