/* sample.h - turning one row of logits into the next token.
 *
 * Order of operations (documented in docs/API-SEMANTICS.md once the API lands):
 *   1. ids >= n_valid (CodeGen's padded vocabulary rows) are masked out: never emitted, not in logprobs;
 *   2. repetition_penalty (FasterTransformer / HF multiplicative: logit > 0 ? logit / p : logit * p) over every id
 *      in the context (prompt + generated); 1 = off;
 *   3. OpenAI penalties over generated ids: logit -= frequency_penalty * count + presence_penalty * (count > 0);
 *   4. logprobs are reported from log_softmax of these logits (temperature 1, no truncation);
 *   5. temperature 0 -> argmax (ties to the lowest id); else logits / temperature, top-k, top-p, and a draw from
 *      the seeded generator.
 * Logits are modified in place. */
#ifndef SUGGESTD_ENGINE_SAMPLE_H
#define SUGGESTD_ENGINE_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "rng.h"

#define SAMP_MAX_LOGPROBS 20

typedef struct samp_params {
    float temperature;        /* 0 = greedy */
    float top_p;              /* (0, 1]; 1 = off */
    int32_t top_k;            /* 0 = off */
    float presence_penalty;   /* OpenAI, additive, [-2, 2] */
    float frequency_penalty;  /* OpenAI, additive, [-2, 2] */
    float repetition_penalty; /* FasterTransformer/HF multiplicative, > 0; 1 = off */
    int32_t n_logprobs;       /* top alternatives to report, 0..SAMP_MAX_LOGPROBS */
    int want_logprob;         /* report the chosen id's logprob (implied by n_logprobs > 0); else it reads 0 */
} samp_params;

/* Defaults: greedy, no penalties, no logprobs. */
samp_params samp_params_default(void);
/* ERR_INVALID with a message naming the field when a value is out of range. */
err samp_params_check(const samp_params *p, errbuf *eb);

typedef struct samp_result {
    int32_t id;
    float logprob; /* of id (when asked for) */
    int32_t n_top;
    int32_t top_ids[SAMP_MAX_LOGPROBS];
    float top_logprobs[SAMP_MAX_LOGPROBS];
} samp_result;

/* Per-sequence sampling state: the generator and the counts the penalties need. */
typedef struct samp_state {
    rng rng;
    int32_t n_vocab;        /* logits row length */
    int32_t n_valid;        /* ids < n_valid can be emitted */
    uint16_t *gen_count;    /* [n_vocab] times each id was generated */
    uint8_t *in_context;    /* [n_vocab] id seen in prompt or output (repetition penalty) */
    float *scratch;         /* [n_vocab] */
    int32_t *scratch_ids;   /* [n_vocab] */
} samp_state;

err samp_state_init(samp_state *s, int32_t n_vocab, int32_t n_valid, uint64_t seed);
void samp_state_fini(samp_state *s);
/* Records prompt ids (for the repetition penalty). */
void samp_state_add_prompt(samp_state *s, const int32_t *ids, size_t n);

/* Picks the next id from logits[n_vocab] (modified in place) and records it as generated. */
void samp_pick(samp_state *s, const samp_params *p, float *logits, samp_result *out);

/* A logits row summarized where it was computed, so that on a GPU only this crosses PCIe (about 0.5 KB instead of
 * 200 KB a row): the SAMP_TOP_K largest logits of ids < n_valid, descending (ties: lower id first; -inf and NaN
 * never count), and the two sums a log-softmax and a temperature softmax need. */
#define SAMP_TOP_K 64
typedef struct samp_top {
    int32_t n; /* candidates: min(SAMP_TOP_K, finite valid logits) */
    float vals[SAMP_TOP_K];
    int32_t ids[SAMP_TOP_K];
    double sum;   /* sum of exp(logit - vals[0]) over ids < n_valid */
    double sum_t; /* sum of exp((logit - vals[0]) * inv_t) for the inv_t the summary was asked for (0 if none) */
} samp_top;

/* Whether samp_pick_top can stand in for samp_pick under p: no penalties (they change logits outside the
 * candidates), and greedy, top_k <= SAMP_TOP_K, or top_p (the nucleus may still reach past the candidates: then
 * samp_pick_top says so). Sampling the whole vocabulary (temperature > 0, no top_k, no top_p) needs the row. */
int samp_top_serves(const samp_params *p);
/* The inv_t a summary needs for p: 1 / temperature when top_p decides over the whole distribution, else 0. */
float samp_top_inv_t(const samp_params *p);
/* samp_pick from a summary. 1: *out set and the id recorded, the same choice samp_pick makes on the row (logprobs
 * may differ in the last float bit: the sums are added in another order); 0: nothing changed (no random number
 * drawn), the row is needed (top_p's nucleus reaches past the candidates, or p is not served). */
int samp_pick_top(samp_state *s, const samp_params *p, const samp_top *t, samp_result *out);
/* The summary of logits[0..n_valid) on the CPU: backends without their own, and the tests. */
void samp_top_compute(const float *logits, int32_t n_valid, float inv_t, samp_top *t);

#endif
