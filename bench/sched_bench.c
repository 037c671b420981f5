/* sched_bench.c - the embedded scheduler without HTTP, in one run on the same model and threads:
 *   throughput  closed-loop throughput of C concurrent requests, continuous batching against one at a time;
 *   prefix      an extended prompt after a long one (prefix reuse);
 *   editors     E simulated editors: each has its own long file prefix (P tokens) and keeps asking for a short
 *               single-line completion (G1 tokens) of a prompt that grows by a few tokens per keystroke, with a
 *               think time between requests; server-side latency p50/p95/p99 (submit -> done) and time to first
 *               token, with batching + prefix cache against one at a time without the cache. A closed loop:
 *               every request runs to its end, so it measures throughput under E concurrent editors;
 *   typing      E editors typing through their files like an IDE (debounced requests, superseded by the next key;
 *               sched_typing.c, load.c's model): single-line latency of what completes, batched + cache only.
 * bench/load.sh measures through the server; this one keeps the load generator's own CPU out of the figures (on
 * a small box it competes with the engine) and builds where the server's libraries are missing (the GPU machine).
 *
 *   sched_bench MODEL_DIR [--mode all|throughput|prefix|editors] [--threads N=1] [--backend cpu|cuda]
 *               [--max-batch B=16] [--clients C=16] [--requests R=128] [--prompt P=128] [--gen G=32]
 *               [--editors E=32] [--edits K=12] [--editor-prompt P=1536] [--editor-gen G1=8] [--think-ms T=100]
 *               [--seconds S=20] [--cps C=8] [--debounce-ms D=100] [--single-tokens N=16] [--multi-tokens N=64]
 *               [--multi-pct M=20] [--line-stops 1|0] (typing; --editors and --editor-prompt too)
 *
 * Prompts are random ids, greedy, EOS ignored, so every request computes what it asks for. One RESULT line per
 * figure. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "model.h"
#include "rng.h"
#include "sched_api.h"
#include "sched_bench.h"

typedef struct opts {
    const char *dir, *backend, *mode;
    int clients, requests, prompt, gen, threads, max_batch;
    int editors, edits, editor_prompt, editor_gen, think_ms;
    int seconds, cps, debounce_ms, single_tokens, multi_tokens, multi_pct, line_stops;
} opts;

typedef struct run {
    sched *s;
    const opts *o;
    int32_t n_vocab;
    pthread_mutex_t mu;
    int next; /* requests handed out */
    uint64_t tokens;
} run;

static int finish(sched_req *q, int32_t *n_cached) {
    int n = 0;
    for (;;) {
        sched_event ev;
        if (!sched_next(q, &ev, 60000)) return -1;
        sched_ev_kind k = ev.kind;
        if (k == SCHED_EV_DONE) n = ev.n_generated, *n_cached = ev.n_cached;
        sched_event_fini(&ev);
        if (k == SCHED_EV_ERROR) return -1;
        if (k == SCHED_EV_DONE) return n;
    }
}

static void *client(void *arg) {
    run *r = arg;
    int32_t *ids = malloc((size_t)r->o->prompt * sizeof(int32_t));
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int i = r->next < r->o->requests ? r->next++ : -1;
        pthread_mutex_unlock(&r->mu);
        if (i < 0) break;
        rng g;
        rng_seed(&g, 1000 + (uint64_t)i);
        for (int k = 0; k < r->o->prompt; k++) ids[k] = (int32_t)(rng_next(&g) % 50000);
        sched_request rq = {ids, (size_t)r->o->prompt, {0}, 0};
        rq.params.max_tokens = r->o->gen;
        rq.params.samp = samp_params_default();
        rq.params.ignore_eos = 1;
        sched_req *q = NULL;
        errbuf eb = {0};
        while (sched_submit(r->s, &rq, &q, &eb) == ERR_BUSY) nanosleep(&(struct timespec){0, 1000000}, NULL);
        if (!q) {
            fprintf(stderr, "sched_bench: %s\n", eb.msg);
            exit(1);
        }
        int32_t cached;
        int n = finish(q, &cached);
        sched_release(q);
        if (n < 0) {
            fprintf(stderr, "sched_bench: a request failed\n");
            exit(1);
        }
        pthread_mutex_lock(&r->mu);
        r->tokens += (uint64_t)n;
        pthread_mutex_unlock(&r->mu);
    }
    free(ids);
    return NULL;
}

/* Generated tokens per second of o->requests requests from o->clients concurrent clients. */
static double throughput(eng_model *em, const tok *tk, const opts *o, int max_batch) {
    sched_opts so = sched_opts_default();
    so.max_batch = max_batch;
    so.prefix_cache = 0;
    so.queue_max = o->clients;
    run r = {.o = o};
    errbuf eb = {0};
    if (sched_local_create(em, tk, &so, &r.s, &eb) != ERR_OK) {
        fprintf(stderr, "sched_bench: %s\n", eb.msg);
        exit(1);
    }
    pthread_mutex_init(&r.mu, NULL);
    pthread_t *t = malloc((size_t)o->clients * sizeof(pthread_t));
    uint64_t t0 = clock_ns();
    for (int i = 0; i < o->clients; i++) pthread_create(&t[i], NULL, client, &r);
    for (int i = 0; i < o->clients; i++) pthread_join(t[i], NULL);
    double s = (double)(clock_ns() - t0) * 1e-9;
    sched_stats st;
    sched_get_stats(r.s, &st);
    printf("  max_batch %2d: %d requests x (%d + %d tokens) in %.2f s: %.1f tokens/s, %.2f sequences per step\n",
           max_batch, o->requests, o->prompt, o->gen, s, (double)r.tokens / s,
           st.steps ? (double)st.step_seqs / (double)st.steps : 0.0);
    sched_destroy(r.s);
    pthread_mutex_destroy(&r.mu);
    free(t);
    return (double)r.tokens / s;
}

/* Time to the first token of a long prompt, then of the same prompt + 4 tokens (median of 5 pairs). */
static void prefix(eng_model *em, const tok *tk, double *first, double *second, int32_t *cached) {
    sched_opts so = sched_opts_default();
    sched *s = NULL;
    errbuf eb = {0};
    if (sched_local_create(em, tk, &so, &s, &eb) != ERR_OK) exit(1);
    const int n = eng_model_config(em)->n_positions - 8 < 1000 ? eng_model_config(em)->n_positions - 8 : 1000;
    int32_t *ids = malloc((size_t)(n + 4) * sizeof(int32_t));
    double a[5], b[5];
    for (int pair = 0; pair < 5; pair++) {
        rng g;
        rng_seed(&g, 77 + (uint64_t)pair);
        for (int k = 0; k < n + 4; k++) ids[k] = (int32_t)(rng_next(&g) % 50000);
        for (int which = 0; which < 2; which++) {
            sched_request rq = {ids, (size_t)(n + 4 * which), {0}, 0};
            rq.params.max_tokens = 1;
            rq.params.samp = samp_params_default();
            sched_req *q = NULL;
            uint64_t t0 = clock_ns();
            if (sched_submit(s, &rq, &q, &eb) != ERR_OK || finish(q, cached) < 0) exit(1);
            (which ? b : a)[pair] = (double)(clock_ns() - t0) * 1e-6;
            sched_release(q);
        }
    }
    for (int i = 0; i < 5; i++) /* insertion sort, 5 values */
        for (int j = i; j > 0 && a[j] < a[j - 1]; j--) {
            double x = a[j];
            a[j] = a[j - 1], a[j - 1] = x;
        }
    for (int i = 0; i < 5; i++)
        for (int j = i; j > 0 && b[j] < b[j - 1]; j--) {
            double x = b[j];
            b[j] = b[j - 1], b[j - 1] = x;
        }
    *first = a[2];
    *second = b[2];
    free(ids);
    sched_destroy(s);
}

/* ---- editors ------------------------------------------------------------------------------------------------- */

typedef struct editors_run {
    sched *s;
    const opts *o;
    double *lat, *ttft; /* [editors * edits] ms */
    uint64_t cached, prompt;
    pthread_mutex_t mu;
} editors_run;

typedef struct editor {
    editors_run *er;
    int id;
} editor;

/* One editor: its file prefix, then a request per keystroke burst (the prompt grows by 2 tokens each time), each
 * waited for, then a think time. */
static void *editor_main(void *arg) {
    editor *e = arg;
    editors_run *er = e->er;
    const opts *o = er->o;
    const int n_max = o->editor_prompt + 2 * o->edits;
    int32_t *ids = malloc((size_t)n_max * sizeof(int32_t));
    rng g;
    rng_seed(&g, 5000 + (uint64_t)e->id);
    for (int k = 0; k < n_max; k++) ids[k] = (int32_t)(rng_next(&g) % 50000);
    for (int r = 0; r < o->edits; r++) {
        sched_request rq = {ids, (size_t)(o->editor_prompt + 2 * r), {0}, 0};
        rq.params.max_tokens = o->editor_gen;
        rq.params.samp = samp_params_default();
        rq.params.ignore_eos = 1;
        sched_req *q = NULL;
        errbuf eb = {0};
        uint64_t t0 = clock_ns();
        while (sched_submit(er->s, &rq, &q, &eb) == ERR_BUSY) nanosleep(&(struct timespec){0, 1000000}, NULL);
        if (!q) {
            fprintf(stderr, "sched_bench: %s\n", eb.msg);
            exit(1);
        }
        uint64_t ttft = 0;
        int32_t cached = 0;
        for (int done = 0; !done;) {
            sched_event ev;
            if (!sched_next(q, &ev, 60000)) exit(1);
            if (ev.kind == SCHED_EV_ERROR) exit(1);
            if (ev.kind == SCHED_EV_DONE) done = 1, ttft = ev.ttft_ns, cached = ev.n_cached;
            sched_event_fini(&ev);
        }
        double ms = (double)(clock_ns() - t0) * 1e-6;
        sched_release(q);
        pthread_mutex_lock(&er->mu);
        er->lat[e->id * o->edits + r] = ms;
        er->ttft[e->id * o->edits + r] = (double)ttft * 1e-6;
        er->cached += (uint64_t)cached;
        er->prompt += rq.n_prompt;
        pthread_mutex_unlock(&er->mu);
        if (o->think_ms) nanosleep(&(struct timespec){o->think_ms / 1000, (long)(o->think_ms % 1000) * 1000000L}, NULL);
    }
    free(ids);
    return NULL;
}

/* Requests per second of the editors' run; prints the latency percentiles under `label`. */
static double editors(eng_model *em, const tok *tk, const opts *o, int max_batch, int prefix_cache, const char *label) {
    sched_opts so = sched_opts_default();
    so.max_batch = max_batch;
    so.prefix_cache = prefix_cache;
    so.queue_max = o->editors;
    const int n = o->editors * o->edits;
    editors_run er = {.o = o, .lat = calloc((size_t)n, sizeof(double)), .ttft = calloc((size_t)n, sizeof(double))};
    errbuf eb = {0};
    if (!er.lat || !er.ttft || sched_local_create(em, tk, &so, &er.s, &eb) != ERR_OK) {
        fprintf(stderr, "sched_bench: %s\n", eb.msg[0] ? eb.msg : "out of memory");
        exit(1);
    }
    pthread_mutex_init(&er.mu, NULL);
    pthread_t *t = malloc((size_t)o->editors * sizeof(pthread_t));
    editor *ed = malloc((size_t)o->editors * sizeof(editor));
    uint64_t t0 = clock_ns();
    for (int i = 0; i < o->editors; i++) {
        ed[i] = (editor){&er, i};
        pthread_create(&t[i], NULL, editor_main, &ed[i]);
    }
    for (int i = 0; i < o->editors; i++) pthread_join(t[i], NULL);
    double secs = (double)(clock_ns() - t0) * 1e-9;
    const double p50 = bench_quantile(er.lat, n, 0.5), p95 = bench_quantile(er.lat, n, 0.95),
                 p99 = bench_quantile(er.lat, n, 0.99), t50 = bench_quantile(er.ttft, n, 0.5);
    printf("  editors %-14s %d x %d requests (%d-token file + typing, %d tokens): latency p50 %.1f p95 %.1f p99 %.1f "
           "ms, TTFT p50 %.1f ms, %.1f requests/s, cached %.0f%%\n",
           label, o->editors, o->edits, o->editor_prompt, o->editor_gen, p50, p95, p99, t50, (double)n / secs,
           er.prompt ? 100.0 * (double)er.cached / (double)er.prompt : 0.0);
    printf("RESULT editors_%s_latency_p50_ms=%.2f\nRESULT editors_%s_latency_p95_ms=%.2f\n", label, p50, label, p95);
    printf("RESULT editors_%s_requests_per_s=%.2f\n", label, (double)n / secs);
    sched_stats st;
    sched_get_stats(er.s, &st);
    const double steps = st.steps ? (double)st.steps : 1.0;
    printf("  engine         %llu steps: %.1f sequences and %.1f rows a step, forward %.2f ms, whole step %.2f ms\n",
           (unsigned long long)st.steps, (double)st.step_seqs / steps, (double)st.step_rows / steps,
           (double)st.forward_ns * 1e-6 / steps, (double)st.step_ns * 1e-6 / steps);
    sched_destroy(er.s);
    pthread_mutex_destroy(&er.mu);
    free(t);
    free(ed);
    free(er.lat);
    free(er.ttft);
    return (double)n / secs;
}

static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.backend = "cpu", .mode = "all", .clients = 16, .requests = 128, .prompt = 128, .gen = 32,
                .threads = 1, .max_batch = 16, .editors = 32, .edits = 12, .editor_prompt = 1536, .editor_gen = 8,
                .think_ms = 100, .seconds = 20, .cps = 8, .debounce_ms = 100, .single_tokens = 16, .multi_tokens = 64,
                .multi_pct = 20, .line_stops = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            o->dir = a;
            continue;
        }
        if (i + 1 >= argc) return fprintf(stderr, "sched_bench: %s needs a value\n", a), -1;
        const char *v = argv[++i];
        if (!strcmp(a, "--backend") || !strcmp(a, "--mode")) {
            *(!strcmp(a, "--mode") ? &o->mode : &o->backend) = v;
            continue;
        }
        int *dst = !strcmp(a, "--clients") ? &o->clients : !strcmp(a, "--requests") ? &o->requests
                 : !strcmp(a, "--prompt") ? &o->prompt : !strcmp(a, "--gen") ? &o->gen
                 : !strcmp(a, "--threads") ? &o->threads : !strcmp(a, "--max-batch") ? &o->max_batch
                 : !strcmp(a, "--editors") ? &o->editors : !strcmp(a, "--edits") ? &o->edits
                 : !strcmp(a, "--editor-prompt") ? &o->editor_prompt : !strcmp(a, "--editor-gen") ? &o->editor_gen
                 : !strcmp(a, "--think-ms") ? &o->think_ms : !strcmp(a, "--seconds") ? &o->seconds
                 : !strcmp(a, "--cps") ? &o->cps : !strcmp(a, "--debounce-ms") ? &o->debounce_ms
                 : !strcmp(a, "--single-tokens") ? &o->single_tokens : !strcmp(a, "--multi-tokens") ? &o->multi_tokens
                 : !strcmp(a, "--multi-pct") ? &o->multi_pct : !strcmp(a, "--line-stops") ? &o->line_stops : NULL;
        char *end;
        long x = strtol(v, &end, 10);
        const int zero_ok = dst == &o->think_ms || dst == &o->multi_pct || dst == &o->line_stops;
        if (!dst || *end || x < (zero_ok ? 0 : 1) || x > 100000 || (dst == &o->multi_pct && x > 100) ||
            (dst == &o->line_stops && x > 1))
            return fprintf(stderr, "sched_bench: bad option %s %s (see the top of bench/sched_bench.c)\n", a, v), -1;
        *dst = (int)x;
    }
    if (!o->dir)
        return fprintf(stderr, "usage: sched_bench MODEL_DIR [--mode all|throughput|prefix|editors|typing]\n"), -1;
    const char *m = o->mode;
    if (strcmp(m, "all") && strcmp(m, "throughput") && strcmp(m, "prefix") && strcmp(m, "editors") &&
        strcmp(m, "typing"))
        return fprintf(stderr, "sched_bench: --mode all, throughput, prefix, editors or typing, not '%s'\n", o->mode),
               -1;
    return 0;
}

int main(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o)) return 2;
    model *m = NULL;
    tok *tk = NULL;
    eng_backend *be = NULL;
    eng_model *em = NULL;
    errbuf eb = {0};
    eng_model_opts mo = {.max_rows = 256, .kv_dtype = -1, .n_kv_seqs = o.max_batch, .kv_mem_fraction = 0.9};
    if (model_open(o.dir, &m, &eb) || tok_load(o.dir, &tk, &eb) ||
        eng_backend_create(o.backend, o.threads, &be, &eb) || eng_model_create(be, m, &mo, &em, &eb)) {
        fprintf(stderr, "sched_bench: %s\n", eb.msg);
        return 1;
    }
    printf("sched_bench: %s on %s\n", o.dir, eng_backend_describe(be));
    const int all = !strcmp(o.mode, "all");
    if (all || !strcmp(o.mode, "throughput")) {
        double one = throughput(em, tk, &o, 1), many = throughput(em, tk, &o, o.max_batch);
        printf("RESULT tokens_per_s_batch1=%.1f\nRESULT tokens_per_s_batch%d=%.1f\nRESULT batching_speedup=%.2f\n",
               one, o.max_batch, many, many / one);
    }
    if (all || !strcmp(o.mode, "prefix")) {
        double first, second;
        int32_t cached;
        prefix(em, tk, &first, &second, &cached);
        printf("  prefix: long prompt %.2f ms, the same + 4 tokens %.2f ms (%d cached): ratio %.3f\n", first, second,
               cached, second / first);
        printf("RESULT prefix_first_ms=%.2f\nRESULT prefix_second_ms=%.2f\nRESULT prefix_ratio=%.3f\n", first,
               second, second / first);
    }
    if (all || !strcmp(o.mode, "editors")) {
        double many = editors(em, tk, &o, o.max_batch, 1, "batched"), one = editors(em, tk, &o, 1, 0, "one");
        printf("RESULT editors_speedup=%.2f\n", many / one);
    }
    if (all || !strcmp(o.mode, "typing")) {
        typing_opts to = {.editors = o.editors, .prompt = o.editor_prompt, .seconds = o.seconds, .warmup_ms = 1000,
                          .cps = o.cps, .chars_per_token = 4, .debounce_ms = o.debounce_ms, .line_pause_ms = 400,
                          .multi_pct = o.multi_pct, .single_tokens = o.single_tokens, .multi_tokens = o.multi_tokens,
                          .line_stops = o.line_stops};
        typing(em, tk, &to, o.max_batch, 1, o.line_stops ? "batched" : "batched_full");
    }
    eng_model_destroy(em);
    eng_backend_destroy(be);
    tok_destroy(tk);
    model_close(m);
    return 0;
}
