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

#endif
