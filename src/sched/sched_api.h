/* sched_api.h - how the API reaches a completion engine: submit a request, read its events, cancel it.
 *
 * The interface is an ops table (sched_impl.h) so that a remote engine (an existing Triton deployment, a later issue)
 * can stand where the embedded one stands. The embedded one (sched_local_create) runs continuous batching on one
 * engine thread: requests join and leave between forward steps, share KV blocks through a prefix cache, and wait in a
 * bounded queue.
 *
 * Threads: submit/next/cancel/release may be called from any thread (HTTP threads); a sched_req belongs to the
 * thread that submitted it, except sched_cancel, which any thread may call. */
#ifndef SUGGESTD_SCHED_SCHED_H
#define SUGGESTD_SCHED_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "forward.h"
#include "gen.h"
#include "tok.h"

typedef struct sched sched;
typedef struct sched_req sched_req;

/* What a caller submits; everything is copied by sched_submit (stop strings included). params.cancel is ignored:
 * use sched_cancel. */
typedef struct sched_request {
    const int32_t *prompt;
    size_t n_prompt;
    gen_params params;
    uint64_t deadline_ns; /* clock_ns() past which the engine stops the request (DONE, cancelled, deadline = 1); 0 = none */
} sched_request;

typedef enum sched_ev_kind { SCHED_EV_TEXT = 1, SCHED_EV_DONE, SCHED_EV_ERROR } sched_ev_kind;

typedef struct sched_event {
    sched_ev_kind kind;
    char *text; /* TEXT: completion text, whole UTF-8 characters; owned by the event */
    size_t len;
    samp_result *tokens; /* tokens sampled since the previous event (TEXT and DONE); owned by the event */
    int32_t n_tokens;
    gen_finish finish;               /* DONE */
    int32_t n_prompt, n_generated;   /* DONE */
    int32_t n_cached;                /* DONE: prompt tokens whose KV came from the prefix cache (not computed) */
    int deadline;                    /* DONE: stopped because its deadline passed (finish is CANCELLED) */
    uint64_t queue_ns, prefill_ns, decode_ns; /* DONE: time waiting for the engine, prefilling, decoding */
    uint64_t ttft_ns;                /* DONE: submit -> first token sampled (0 if none was) */
    err code;                        /* ERROR */
    char msg[512];                   /* ERROR */
} sched_event;

typedef struct sched_stats {
    int32_t queued, running, queue_max, max_batch;
    uint64_t completed, rejected, cancelled, failed, deadline_expired;
    uint64_t steps, step_seqs, step_rows; /* forward steps; sums of sequences and rows over them (averages) */
    uint64_t forward_ns, step_ns;         /* sums over steps: the forward alone; the whole step (+ sampling, events) */
    int32_t last_batch;                   /* sequences in the latest step */
    int32_t kv_blocks_total, kv_blocks_used, kv_blocks_cached; /* used: held by requests; cached: reusable, evictable */
    uint64_t prompt_tokens, cached_tokens; /* prefix hit rate = cached / prompt */
} sched_stats;

typedef struct sched_opts {
    int32_t queue_max;   /* requests waiting for a seat at most; beyond it ERR_BUSY (default 64) */
    int32_t max_batch;   /* sequences in one forward step at most (default 16); 1 = one request at a time */
    int32_t step_tokens; /* rows in one forward step at most: decode rows + prefill chunks (default: the model's max) */
    int prefix_cache;    /* keep full KV blocks when requests end and reuse them for prompts that start the same */
} sched_opts;

/* Defaults above (prefix cache on). */
sched_opts sched_opts_default(void);

/* The embedded engine: em and tk are borrowed and must outlive the sched. The model's KV pool is the block pool. */
err sched_local_create(eng_model *em, const tok *tk, const sched_opts *opts, sched **out, errbuf *eb);
/* Cancels everything queued or running, waits for the engine thread, frees. Requests not yet released stay valid
 * for sched_next (which then reports DONE/cancelled) and sched_release. */
void sched_destroy(sched *s);

/* Queues a request. ERR_BUSY when the queue is full (-> 429/503 with Retry-After), ERR_INVALID when the request
 * does not fit (context, parameters; message in eb), ERR_UNSUPPORTED when the engine is unhealthy. */
err sched_submit(sched *s, const sched_request *r, sched_req **out, errbuf *eb);
/* Waits up to timeout_ms (-1 = forever) for the next event. Returns 1 with *ev filled (release it with
 * sched_event_fini), 0 on timeout. After a DONE or ERROR event there are no more. */
int sched_next(sched_req *q, sched_event *ev, int timeout_ms);
void sched_event_fini(sched_event *ev);
/* Stops the request as soon as possible (before its next forward step); idempotent, any thread, as long as the
 * owner has not released q yet (cancel and release must not race). */
void sched_cancel(sched_req *q);
/* The caller is done with q (cancels it if still running). */
void sched_release(sched_req *q);

void sched_get_stats(sched *s, sched_stats *st);
/* 0 once the engine has failed in a way it cannot recover from (e.g. a sticky CUDA error). */
int sched_healthy(sched *s);
/* Context length and vocabulary bounds the API checks requests against. */
int32_t sched_n_ctx(sched *s);

#endif
