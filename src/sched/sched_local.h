/* sched_local.h - the embedded engine's insides, shared by its two halves:
 *   sched_local.c  the request side: submit, events, cancel, release, stats (any thread);
 *   sched_step.c   the engine thread: admission, one batched forward step after another, finishing requests.
 * See sched_api.h for the contract and sched_step.c for the step loop. */
#ifndef SUGGESTD_SCHED_SCHED_LOCAL_H
#define SUGGESTD_SCHED_SCHED_LOCAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "kvpool.h"
#include "sched_impl.h"

typedef struct ev_node {
    sched_event ev;
    struct ev_node *next;
} ev_node;

typedef struct lsched lsched;

/* A request as both sides see it; freed when both have let go (refs). */
typedef struct lreq {
    sched_req base;
    lsched *s;
    int32_t *prompt;
    size_t n_prompt;
    gen_params params;
    char *stops[GEN_MAX_STOP];
    uint64_t t_submit, deadline_ns;
    atomic_int cancel;
    atomic_int refs;
    pthread_mutex_t mu; /* guards the event list */
    pthread_cond_t cv;
    ev_node *head, *tail;
    ev_node *final; /* allocated at submit for the DONE / ERROR event, so the last word never fails to arrive */
    /* engine thread only: tokens sampled since the last event */
    samp_result *pend;
    int32_t n_pend, cap_pend;
    int oom;
    struct lreq *qnext; /* waiting queue (s->mu) */
} lreq;

/* An admitted request: the engine thread's state of one sequence. */
typedef struct seq {
    lreq *r;
    gen_out out;
    int32_t *tokens;   /* prompt then generated ids; tokens[n_done .. n_tokens) still need their KV computed */
    int32_t n_tokens, n_done, n_prompt;
    int32_t *blocks;   /* block table: blocks[i] holds positions i*ENG_KV_BLOCK .. */
    int32_t n_blocks, cap_blocks, n_published;
    int32_t reserve;   /* blocks promised at admission and not yet allocated */
    int32_t n_cached;  /* prompt tokens matched in the prefix cache */
    uint64_t t_admit, t_first_logits, t_first_token;
} seq;

struct lsched {
    sched base;
    eng_model *em;
    const tok *tk;
    sched_opts o;
    int32_t step_rows; /* rows per forward step (o.step_tokens bounded by the model) */
    pthread_t thread;
    int thread_started;
    /* shared with request threads */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lreq *qhead, *qtail;
    int stop;
    atomic_int healthy;
    sched_stats st; /* published by the engine thread after each step */
    /* engine thread only */
    kvpool *pool;
    int32_t reserved; /* sum of seq.reserve */
    seq *seqs;        /* [o.max_batch] active sequences, in admission order */
    int32_t n_seqs;
    int32_t *row_tokens, *row_pos, *logit_rows, *logit_seq, *bseq_seq; /* *_seq: index into seqs */
    eng_seq *bseqs;
    float *logits;
    samp_top *tops; /* [max_batch] the step's logits rows summarized, where the model makes them on its device */
    float *inv_t;   /* [max_batch] what each row's summary needs (samp_top_inv_t) */
};

/* sched_local.c: events of a request (engine thread). */
void lreq_unref(lreq *r);
void lreq_push_event(lreq *r, sched_event *ev);
void lreq_take_pending(lreq *r, sched_event *ev);
void lreq_on_token(void *ud, const samp_result *t);
int lreq_on_text(void *ud, const char *text, size_t len, const samp_result *t);

/* sched_step.c: the engine thread's body, and its state's life. */
err lsched_engine_init(lsched *s);
void lsched_engine_fini(lsched *s);
void *lsched_engine_main(void *arg);

#endif
