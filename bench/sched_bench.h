/* sched_bench.h - what sched_bench.c's modes share across files (the typing mode lives in sched_typing.c). */
#ifndef SUGGESTD_BENCH_SCHED_BENCH_H
#define SUGGESTD_BENCH_SCHED_BENCH_H

#include "model.h"
#include "sched_api.h"

typedef struct typing_opts {
    int editors, prompt;                /* editors, and the tokens above each one's cursor when it opens its file */
    double seconds, warmup_ms;          /* typing time after the opens, which are spread over warmup_ms */
    double cps, chars_per_token;        /* typing speed; characters that make one more prompt token */
    int debounce_ms, line_pause_ms;     /* idle time that sends a request; mean extra pause after a line */
    int multi_pct, single_tokens, multi_tokens;
    int line_stops; /* single-line requests stop where a real model's line ended (sched_typing.c LINE_LEN) */
} typing_opts;

/* The p-quantile of v[0..n) (sorted in place; nearest rank); 0 when n is 0. */
double bench_quantile(double *v, int n, double p);

/* Runs the typing simulation (sched_typing.c) on a fresh scheduler; prints its figures and RESULT lines under
 * `label` and returns the single-line latency p50 in ms. */
double typing(eng_model *em, const tok *tk, const typing_opts *o, int max_batch, int prefix_cache,
              const char *label);

#endif
