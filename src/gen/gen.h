/* gen.h - one completion from prompt ids to text: chunked prefill, sampling, streaming UTF-8, stop strings,
 * max tokens and EOS. Used by `suggestd complete` and the tests today; [sched] will run many of these per step.
 *
 * Text reaches the callback as whole UTF-8 characters, never past a stop string: text that might be the start of a
 * stop string is held back until it is known not to be. */
#ifndef SUGGESTD_GEN_GEN_H
#define SUGGESTD_GEN_GEN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "forward.h"
#include "sample.h"
#include "tok.h"

#define GEN_MAX_STOP 8

typedef struct gen_params {
    int32_t max_tokens;  /* >= 0 */
    samp_params samp;
    uint64_t seed;
    int32_t n_stop;
    const char *stop[GEN_MAX_STOP]; /* borrowed, non-empty strings */
    int ignore_eos;      /* keep going past <|endoftext|> (benchmarks) */
    const atomic_int *cancel; /* optional: non-zero stops the run before the next forward (GEN_FINISH_CANCELLED) */
} gen_params;

typedef enum gen_finish { GEN_FINISH_LENGTH, GEN_FINISH_STOP, GEN_FINISH_EOS, GEN_FINISH_CANCELLED } gen_finish;
const char *gen_finish_name(gen_finish f); /* OpenAI's: "length", "stop" (stop string and EOS), "cancelled" */

typedef struct gen_result {
    gen_finish finish;
    int32_t n_prompt, n_generated;
    uint64_t prefill_ns, decode_ns;
} gen_result;

/* Called for each piece of text as it becomes safe to emit; tok is the token that completed it (its logprobs), or
 * NULL for text released at the end. Returning non-zero cancels. */
typedef int (*gen_text_fn)(void *ud, const char *text, size_t len, const samp_result *tok);
/* Called for every sampled token (before stop handling), e.g. to collect ids and logprobs; may be NULL. */
typedef void (*gen_token_fn)(void *ud, const samp_result *tok);

/* Checks prompt length + max_tokens against the context and the sampling params. */
err gen_check(const eng_model *em, size_t n_prompt, const gen_params *p, errbuf *eb);

/* --- stop strings (text level, across token boundaries) ------------------------------------------------------ */
typedef struct gen_stop {
    int32_t n;
    const char *s[GEN_MAX_STOP];
    size_t len[GEN_MAX_STOP];
} gen_stop;

void gen_stop_init(gen_stop *st, const char *const *stops, int32_t n);
/* text[0..len) is all text so far; text before `from` is known to contain no stop string start. Returns the
 * offset of the first stop string occurrence at or after from, or -1. */
long gen_stop_find(const gen_stop *st, const char *text, size_t len, size_t from);
/* Length of the longest suffix of text[from..len) that is a proper prefix of some stop string: text that must be
 * held back. */
size_t gen_stop_holdback(const gen_stop *st, const char *text, size_t len, size_t from);

/* --- one sequence's output: sample, stop, stream text ---------------------------------------------------------
 * What happens to each row of logits a sequence gets: sampling (penalties over the prompt and the output), EOS,
 * max_tokens, stop strings across token boundaries, whole-UTF-8 text pieces. gen_run drives one of these; the
 * scheduler ([sched]) drives one per request in a batch. */
typedef struct gen_out {
    const tok *tk;
    const gen_params *p; /* borrowed for the sequence's life */
    gen_text_fn on_text;
    gen_token_fn on_token;
    void *ud;
    samp_state ss;
    gen_stop st;
    tok_stream ts;
    xbuf text;      /* all text so far; text.p[0..emitted) went to on_text */
    size_t emitted;
    int32_t n_generated;
    int done;
    gen_finish finish;
} gen_out;

err gen_out_init(gen_out *o, const eng_model *em, const tok *tk, const gen_params *p, const int32_t *prompt,
                 size_t n_prompt, gen_text_fn on_text, gen_token_fn on_token, void *ud, errbuf *eb);
void gen_out_fini(gen_out *o);
/* Samples the next token from logits (modified in place) and handles it. Returns ERR_OK; then o->done says whether
 * the sequence has finished (o->finish), else *next is the token to feed. ERR_NOMEM (message in eb) on failure. */
err gen_out_push(gen_out *o, float *logits, int32_t *next, errbuf *eb);
/* Whether this sequence's next token should come from a summary of its logits row (eng_model_logits_top) rather
 * than the row: em computes summaries on its device and the sampling parameters allow them; *inv_t then is what
 * the summary needs. */
int gen_out_wants_top(const gen_out *o, const eng_model *em, float *inv_t);
/* gen_out_push from a summary. *served = 0 (and nothing else happened) when the sampler needs the whole row after
 * all (top_p's nucleus past the candidates): then call gen_out_push with it. */
err gen_out_push_top(gen_out *o, const samp_top *t, int32_t *next, int *served, errbuf *eb);
/* Ends the sequence without another token: LENGTH (max_tokens = 0) releases held-back text, CANCELLED drops it. */
err gen_out_end(gen_out *o, gen_finish finish, errbuf *eb);

/* Runs one sequence in KV blocks 0.. of the model's pool. */
err gen_run(eng_model *em, const tok *tk, const int32_t *prompt, size_t n_prompt, const gen_params *p,
            gen_text_fn on_text, gen_token_fn on_token, void *ud, gen_result *res, errbuf *eb);

#endif
