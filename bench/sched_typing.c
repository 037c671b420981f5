/* sched_typing.c - sched_bench's "typing" mode: editors typing through their files, debounced and superseded like
 * an IDE, against the embedded scheduler (no HTTP). It is bench/load.c's editors model in-process, so that it runs
 * where the server's libraries are missing (the GPU machine) and no load generator competes with the engine:
 *
 *   - editor i opens its file at i * warmup / E seconds: one request over the whole prefix above the cursor (P
 *     tokens, computed from scratch: reported apart as "opens");
 *   - then it types at cps characters a second (each gap uniform 0.5-1.5x, plus an exponential pause of mean
 *     line_pause_ms after every 30th character, a line end); every chars_per_token characters the prompt grows by
 *     a token;
 *   - a gap longer than debounce_ms sends the prompt 100 ms after the key; the next key cancels it if it has not
 *     finished (superseded, as an IDE aborts the request);
 *   - multi_pct% of requests are multi-line (multi_tokens), the rest single-line (single_tokens).
 * Prompts are random ids and EOS is ignored: random weights never produce the newline a single-line request stops
 * at. So by default (line_stops) each single-line request stops where a real code model's completion of the line
 * stopped, drawn from LINE_LEN below; without line_stops every single-line request runs to single_tokens (an upper
 * bound).
 * Latency (submit -> DONE) and TTFT of completed requests lean to the requests that fit before the next key (line
 * ends), the ones a slow server loses are missing; so the headline single-line figures treat a superseded request
 * as censored at its cancel time (its latency is known to be longer) and estimate the quantiles with Kaplan-Meier,
 * which is unbiased here because the cancel times come from the typing alone, independent of the server. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "rng.h"
#include "sched_bench.h"

/* Tokens of 299 single-line completions (stop "\n", greedy, max_tokens 64) by models/demo, the one trained code
 * model here, through POST /v1/completions on random cursors in this repository's src/ (half at a line's start after
 * its indentation, half inside the line; up to 3000 characters above): LINE_LEN[i] completions took i + 1 tokens,
 * the last bucket 17 or more (75, 64 of them never stopped). Median 7, p75 17. 2026-11-26, see bench/RESULTS.md. */
static const int LINE_LEN[17] = {53, 34, 20, 10, 12, 18, 16, 15, 20, 6, 6, 4, 2, 4, 3, 1, 75};

/* A single-line request's length: the measured distribution, capped at max. */
static int line_len(rng *g, int max) {
    int total = 0;
    for (int i = 0; i < 17; i++) total += LINE_LEN[i];
    int r = (int)(rng_next(g) % (uint64_t)total), i = 0;
    while (r >= LINE_LEN[i]) r -= LINE_LEN[i++];
    return i + 1 < max ? i + 1 : max; /* the last bucket (17+) runs to the cap */
}

typedef struct sample {
    double ms, ttft; /* ms: to DONE, or to the cancel when superseded */
    int multi, done;
} sample;

typedef struct typing_run {
    sched *s;
    const typing_opts *o;
    uint64_t t0, t_end;
    pthread_mutex_t mu;
    sample *req;   /* typing requests, completed or superseded */
    double *opens; /* [editors] ms */
    int n_req, n_done, cap, sent, superseded;
    uint64_t gen_tokens;
} typing_run;

typedef struct typist {
    typing_run *tr;
    int id;
} typist;

static void sleep_until(uint64_t t) {
    for (uint64_t now = clock_ns(); now < t; now = clock_ns()) {
        uint64_t d = t - now;
        nanosleep(&(struct timespec){(time_t)(d / 1000000000u), (long)(d % 1000000000u)}, NULL);
    }
}

/* Submits ids[0..n) for max_tokens; NULL on failure (the bench then stops). */
static sched_req *submit(typing_run *tr, const int32_t *ids, int32_t n, int max_tokens) {
    sched_request rq = {ids, (size_t)n, {0}, 0};
    rq.params.max_tokens = max_tokens;
    rq.params.samp = samp_params_default();
    rq.params.ignore_eos = 1;
    sched_req *q = NULL;
    errbuf eb = {0};
    while (sched_submit(tr->s, &rq, &q, &eb) == ERR_BUSY) nanosleep(&(struct timespec){0, 1000000}, NULL);
    if (!q) fprintf(stderr, "sched_bench: %s\n", eb.msg);
    return q;
}

/* Waits for q's DONE until `until` (ns; 0 = no limit). 1 = done (ttft set), 0 = not yet, -1 = error. */
static int wait_done(sched_req *q, uint64_t until, uint64_t *ttft_ns, int32_t *n_gen) {
    for (;;) {
        int ms = 60000;
        if (until) {
            uint64_t now = clock_ns();
            if (now >= until) return 0;
            ms = (int)((until - now + 999999) / 1000000);
        }
        sched_event ev;
        if (!sched_next(q, &ev, ms)) {
            if (until) continue; /* re-checks the clock */
            return -1;
        }
        sched_ev_kind k = ev.kind;
        if (k == SCHED_EV_DONE) *ttft_ns = ev.ttft_ns, *n_gen = ev.n_generated;
        sched_event_fini(&ev);
        if (k == SCHED_EV_ERROR) return -1;
        if (k == SCHED_EV_DONE) return 1;
    }
}

static void *typist_main(void *arg) {
    typist *t = arg;
    typing_run *tr = t->tr;
    const typing_opts *o = tr->o;
    rng g;
    rng_seed(&g, 7000 + (uint64_t)t->id);
    const double secs = (double)(tr->t_end - tr->t0) * 1e-9;
    const int32_t n_max = o->prompt + (int32_t)(secs * o->cps / o->chars_per_token) + 2;
    int32_t *ids = malloc((size_t)n_max * sizeof(int32_t));
    if (!ids) exit(1);
    for (int32_t k = 0; k < n_max; k++) ids[k] = (int32_t)(rng_next(&g) % 50000);

    /* the file opens: its whole prefix computed once */
    sleep_until(tr->t0 + (uint64_t)((double)t->id * o->warmup_ms * 1e6 / o->editors));
    uint64_t s0 = clock_ns(), ttft;
    int32_t n_gen;
    sched_req *q = submit(tr, ids, o->prompt, o->single_tokens);
    if (!q || wait_done(q, 0, &ttft, &n_gen) != 1) exit(1);
    sched_release(q);
    tr->opens[t->id] = (double)(clock_ns() - s0) * 1e-6;

    uint64_t key = clock_ns();
    for (int typed = 0; key < tr->t_end; typed++) {
        const double unif = (double)(rng_next(&g) >> 11) * 0x1.0p-53;
        double gap_ms = 1000.0 / o->cps * (0.5 + unif);
        if (typed % 30 == 29) gap_ms += -log(1.0 - (double)(rng_next(&g) >> 11) * 0x1.0p-53) * o->line_pause_ms;
        const uint64_t next_key = key + (uint64_t)(gap_ms * 1e6);
        if (gap_ms > o->debounce_ms) {
            sleep_until(key + (uint64_t)o->debounce_ms * 1000000u);
            const int multi = (int)(rng_next(&g) % 100) < o->multi_pct;
            const int32_t n = o->prompt + (int32_t)((double)typed / o->chars_per_token);
            const uint64_t sent = clock_ns();
            const int len = multi ? o->multi_tokens : o->line_stops ? line_len(&g, o->single_tokens) : o->single_tokens;
            q = submit(tr, ids, n < n_max ? n : n_max, len);
            if (!q) exit(1);
            int r = wait_done(q, next_key, &ttft, &n_gen);
            const uint64_t end = clock_ns();
            if (r == 0) { /* the next key: the IDE drops the request */
                sched_cancel(q);
                r = wait_done(q, 0, &ttft, &n_gen) == 1 ? 0 : -1;
            }
            sched_release(q);
            if (r < 0) exit(1);
            pthread_mutex_lock(&tr->mu);
            tr->sent++;
            tr->gen_tokens += (uint64_t)n_gen;
            tr->superseded += r == 0;
            tr->n_done += r == 1;
            if (tr->n_req < tr->cap)
                tr->req[tr->n_req++] = (sample){(double)(end - sent) * 1e-6, (double)ttft * 1e-6, multi, r == 1};
            pthread_mutex_unlock(&tr->mu);
        }
        sleep_until(next_key);
        key = next_key;
    }
    free(ids);
    return NULL;
}

static int cmp_sample(const void *a, const void *b) {
    double x = ((const sample *)a)->ms, y = ((const sample *)b)->ms;
    return x < y ? -1 : x > y;
}

/* The Kaplan-Meier p-quantile of the latencies of v[0..n) (sorted here), superseded ones censored; -1 when the
 * estimate never reaches p (the slowest requests were all superseded: the quantile is beyond them). */
static double km_quantile(sample *v, int n, double p) {
    qsort(v, (size_t)n, sizeof(sample), cmp_sample);
    double surv = 1.0;
    for (int i = 0; i < n; i++) {
        if (v[i].done) surv *= 1.0 - 1.0 / (double)(n - i); /* n - i requests still running at this time */
        if (1.0 - surv >= p - 1e-12) return v[i].ms;
    }
    return -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_quantile(double *v, int n, double p) {
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[(int)(p * (double)(n - 1) + 0.5)];
}

double typing(eng_model *em, const tok *tk, const typing_opts *o, int max_batch, int prefix_cache,
              const char *label) {
    sched_opts so = sched_opts_default();
    so.max_batch = max_batch;
    so.prefix_cache = prefix_cache;
    so.queue_max = o->editors;
    typing_run tr = {.o = o};
    /* at most one request a key, with room to spare: a key every 0.5 / cps seconds at the fastest */
    tr.cap = (int)(o->editors * ((o->seconds + o->warmup_ms / 1000.0) * o->cps * 2 + 16));
    tr.req = calloc((size_t)tr.cap, sizeof(sample));
    tr.opens = calloc((size_t)o->editors, sizeof(double));
    errbuf eb = {0};
    if (!tr.req || !tr.opens || sched_local_create(em, tk, &so, &tr.s, &eb) != ERR_OK) {
        fprintf(stderr, "sched_bench: %s\n", eb.msg[0] ? eb.msg : "out of memory");
        exit(1);
    }
    pthread_mutex_init(&tr.mu, NULL);
    pthread_t *th = malloc((size_t)o->editors * sizeof(pthread_t));
    typist *ty = malloc((size_t)o->editors * sizeof(typist));
    tr.t0 = clock_ns();
    tr.t_end = tr.t0 + (uint64_t)((o->warmup_ms + o->seconds * 1000.0) * 1e6);
    for (int i = 0; i < o->editors; i++) {
        ty[i] = (typist){&tr, i};
        pthread_create(&th[i], NULL, typist_main, &ty[i]);
    }
    for (int i = 0; i < o->editors; i++) pthread_join(th[i], NULL);
    const double secs = (double)(clock_ns() - tr.t0) * 1e-9;

    /* single-line requests first (completed or not), for the Kaplan-Meier estimate; then the plain quantiles */
    sample *one = malloc(((size_t)tr.n_req + 1) * sizeof(sample));
    double *v = malloc(((size_t)tr.n_req + 1) * sizeof(double));
    int n1 = 0, ns = 0, nm = 0;
    for (int i = 0; i < tr.n_req; i++)
        if (!tr.req[i].multi) one[n1++] = tr.req[i];
    const double km50 = km_quantile(one, n1, 0.5), km95 = km_quantile(one, n1, 0.95);
    for (int i = 0; i < n1; i++)
        if (one[i].done) v[ns++] = one[i].ms;
    const double s50 = bench_quantile(v, ns, 0.5), s95 = bench_quantile(v, ns, 0.95),
                 s99 = bench_quantile(v, ns, 0.99);
    ns = 0;
    for (int i = 0; i < n1; i++)
        if (one[i].done) v[ns++] = one[i].ttft;
    const double t50 = bench_quantile(v, ns, 0.5), t95 = bench_quantile(v, ns, 0.95);
    for (int i = 0; i < tr.n_req; i++)
        if (tr.req[i].multi && tr.req[i].done) v[nm++] = tr.req[i].ms;
    const double m50 = bench_quantile(v, nm, 0.5), m95 = bench_quantile(v, nm, 0.95);
    const double open50 = bench_quantile(tr.opens, o->editors, 0.5),
                 open_max = bench_quantile(tr.opens, o->editors, 1.0);
    sched_stats st;
    sched_get_stats(tr.s, &st);
    const double steps = st.steps ? (double)st.steps : 1.0;
    char k50[32], k95[32];
    snprintf(k50, sizeof(k50), km50 < 0 ? "beyond the longest" : "%.1f", km50);
    snprintf(k95, sizeof(k95), km95 < 0 ? "beyond the longest" : "%.1f", km95);
    printf("  typing %-15s %d editors x %.0f s (%d-token files, %.0f chars/s, debounce %d ms): %d sent, %d completed, "
           "%d superseded\n", label, o->editors, o->seconds, o->prompt, o->cps, o->debounce_ms, tr.sent, tr.n_done,
           tr.superseded);
    printf("    single-line (%s %d tokens), %d sent: latency p50 %s p95 %s ms (Kaplan-Meier, superseded = censored)\n",
           o->line_stops ? "measured line lengths, at most" : "always", o->single_tokens, n1, k50, k95);
    printf("    single-line completed (%d): latency p50 %.1f p95 %.1f p99 %.1f ms, TTFT p50 %.1f p95 %.1f ms\n", ns,
           s50, s95, s99, t50, t95);
    printf("    multi-line (%d tokens): %d done, latency p50 %.1f p95 %.1f ms; file opens p50 %.1f max %.1f ms\n",
           o->multi_tokens, nm, m50, m95, open50, open_max);
    printf("    %.1f tokens/s generated, prefix hit rate %.3f; engine %llu steps: %.1f sequences and %.1f rows a step, "
           "forward %.2f ms\n", (double)tr.gen_tokens / secs,
           st.prompt_tokens ? (double)st.cached_tokens / (double)st.prompt_tokens : 0.0,
           (unsigned long long)st.steps, (double)st.step_seqs / steps, (double)st.step_rows / steps,
           (double)st.forward_ns * 1e-6 / steps);
    printf("RESULT typing_%s_single_km_p50_ms=%.2f\nRESULT typing_%s_single_km_p95_ms=%.2f\n", label, km50, label,
           km95);
    printf("RESULT typing_%s_single_done_p50_ms=%.2f\nRESULT typing_%s_single_done_p95_ms=%.2f\n", label, s50, label,
           s95);
    printf("RESULT typing_%s_ttft_p50_ms=%.2f\nRESULT typing_%s_completed=%d\nRESULT typing_%s_superseded=%d\n", label,
           t50, label, tr.n_done, label, tr.superseded);
    free(one);
    sched_destroy(tr.s);
    pthread_mutex_destroy(&tr.mu);
    free(th);
    free(ty);
    free(v);
    free(tr.req);
    free(tr.opens);
    return km50;
}
