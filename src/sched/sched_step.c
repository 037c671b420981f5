/* sched_step.c - the engine thread: continuous batching over the model's paged KV cache.
 *
 * DESIGN: one loop, one forward call per step.
 *   1. Requests that were cancelled or ran past their deadline leave (their seats and blocks go back first).
 *   2. Waiting requests are admitted in FIFO order while there is a seat (max_batch) and KV room for their whole
 *      prompt + max_tokens (reserved up front, so a running request never runs out of blocks and nothing is ever
 *      preempted). Admission first matches the prompt against the prefix cache: those blocks are shared, not
 *      computed. A request whose prompt another request is prefilling right now waits for it (n > 1 choices, a
 *      burst of identical prompts) and then shares its blocks, so a prompt is computed once.
 *   3. The step's rows: one per decoding sequence first, then prompt chunks in admission order up to the step's
 *      token budget, so a long prompt delays running streams by at most one bounded step.
 *   4. One eng_model_forward over all of it; every sequence that reached its last known token gets a logits row,
 *      which gen_out turns into a token, text events and maybe an end.
 *   5. Blocks that filled up are offered to the prefix cache; finished requests release theirs.
 * Each token's math is the same whether its row is alone or in a batch (row-wise ops; attention per sequence), so
 * batching changes no output beyond the float rounding of the matmul's blocking (none on the CPU backend's paths
 * up to 32 rows; the tests check greedy outputs are identical). */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "sched_local.h"

#define BT ENG_KV_BLOCK

err lsched_engine_init(lsched *s) {
    const int32_t V = eng_model_config(s->em)->vocab_size;
    int32_t rows = eng_model_max_rows(s->em);
    if (s->o.step_tokens > 0 && s->o.step_tokens < rows) rows = s->o.step_tokens;
    if (s->o.max_batch <= 0) s->o.max_batch = 16;
    /* every decoding sequence needs its row each step, and prompts need room beside them */
    if (s->o.max_batch > rows / 2) s->o.max_batch = rows / 2 > 0 ? rows / 2 : 1;
    s->step_rows = rows;
    const size_t B = (size_t)s->o.max_batch;
    s->st.queue_max = s->o.queue_max;
    s->st.max_batch = s->o.max_batch;
    s->seqs = xcalloc(B, sizeof(seq));
    s->bseqs = xcalloc(B, sizeof(eng_seq));
    s->row_tokens = xmalloc_array((size_t)rows, sizeof(int32_t));
    s->row_pos = xmalloc_array((size_t)rows, sizeof(int32_t));
    s->logit_rows = xmalloc_array(B, sizeof(int32_t));
    s->logit_seq = xmalloc_array(B, sizeof(int32_t));
    s->bseq_seq = xmalloc_array(B, sizeof(int32_t));
    s->logits = xmalloc_array(B * (size_t)V, sizeof(float));
    s->tops = xmalloc_array(B, sizeof(samp_top));
    s->inv_t = xmalloc_array(B, sizeof(float));
    if (!s->seqs || !s->bseqs || !s->row_tokens || !s->row_pos || !s->logit_rows || !s->logit_seq || !s->bseq_seq ||
        !s->logits || !s->tops || !s->inv_t)
        return ERR_NOMEM;
    return kvpool_create(eng_kv_blocks(eng_model_kv(s->em)), BT, &s->pool);
}

void lsched_engine_fini(lsched *s) {
    kvpool_destroy(s->pool);
    xfree(s->seqs);
    xfree(s->bseqs);
    xfree(s->row_tokens);
    xfree(s->row_pos);
    xfree(s->logit_rows);
    xfree(s->logit_seq);
    xfree(s->bseq_seq);
    xfree(s->logits);
    xfree(s->tops);
    xfree(s->inv_t);
}

/* ---- finishing ------------------------------------------------------------------------------------------------ */

/* A request that never got a seat: its DONE (cancelled or expired) straight from the queue. */
static void finish_queued(lsched *s, lreq *r, int expired) {
    sched_event ev = {.kind = SCHED_EV_DONE, .finish = GEN_FINISH_CANCELLED, .deadline = expired};
    ev.n_prompt = (int32_t)r->n_prompt;
    ev.queue_ns = clock_ns() - r->t_submit;
    lreq_push_event(r, &ev);
    pthread_mutex_lock(&s->mu);
    s->st.cancelled++;
    s->st.deadline_expired += expired ? 1 : 0;
    pthread_mutex_unlock(&s->mu);
    lreq_unref(r);
}

/* Sends the request's last event (DONE, or ERROR when rc says so), gives its blocks back and frees the seat. */
static void finish_seq(lsched *s, int32_t i, err rc, const char *msg, int expired) {
    seq *q = &s->seqs[i];
    lreq *r = q->r;
    uint64_t now = clock_ns();
    if (rc == ERR_OK && r->oom) rc = ERR_NOMEM, msg = "out of memory while streaming the completion";
    sched_event ev = {0};
    if (rc != ERR_OK) {
        ev.kind = SCHED_EV_ERROR;
        ev.code = rc;
        snprintf(ev.msg, sizeof(ev.msg), "%s", msg);
    } else {
        ev.kind = SCHED_EV_DONE;
        ev.finish = q->out.done ? q->out.finish : GEN_FINISH_CANCELLED;
        ev.deadline = expired;
    }
    ev.n_prompt = q->n_prompt;
    ev.n_generated = q->out.n_generated;
    ev.n_cached = q->n_cached;
    ev.queue_ns = q->t_admit - r->t_submit;
    ev.prefill_ns = (q->t_first_logits ? q->t_first_logits : now) - q->t_admit;
    ev.decode_ns = q->t_first_logits ? now - q->t_first_logits : 0;
    ev.ttft_ns = q->t_first_token ? q->t_first_token - r->t_submit : 0;
    lreq_take_pending(r, &ev);
    lreq_push_event(r, &ev);
    pthread_mutex_lock(&s->mu);
    if (rc != ERR_OK) s->st.failed++;
    else if (ev.finish == GEN_FINISH_CANCELLED) s->st.cancelled++;
    else s->st.completed++;
    s->st.deadline_expired += expired ? 1 : 0;
    pthread_mutex_unlock(&s->mu);

    for (int32_t b = 0; b < q->n_blocks; b++) kvpool_release(s->pool, q->blocks[b]);
    s->reserved -= q->reserve;
    gen_out_fini(&q->out);
    xfree(q->tokens);
    xfree(q->blocks);
    lreq_unref(r);
    memmove(q, q + 1, (size_t)(s->n_seqs - i - 1) * sizeof(seq));
    s->n_seqs--;
}

/* ---- admission ------------------------------------------------------------------------------------------------ */

/* Is another sequence computing the first `n` tokens of this prompt right now? Then wait and share its blocks. */
static int prefill_in_flight(const lsched *s, const lreq *r, int32_t n) {
    for (int32_t i = 0; i < s->n_seqs; i++) {
        const seq *o = &s->seqs[i];
        if (o->n_done < o->n_prompt && o->n_prompt >= n && o->n_done < n &&
            !memcmp(o->tokens, r->prompt, (size_t)n * sizeof(int32_t)))
            return 1;
    }
    return 0;
}

/* 1: admitted; 0: not now (no KV room: stop admitting, FIFO); -1: waits on a shared prefill, try the next one. */
static int admit(lsched *s, lreq *r, errbuf *eb) {
    const int32_t n_prompt = (int32_t)r->n_prompt, n_ctx = n_prompt + r->params.max_tokens;
    const int32_t need = (n_ctx + BT - 1) / BT;
    int32_t *blocks = xmalloc_array((size_t)need, sizeof(int32_t));
    int32_t *tokens = xmalloc_array((size_t)n_ctx, sizeof(int32_t));
    if (!blocks || !tokens) {
        xfree(blocks);
        xfree(tokens);
        errbuf_set(eb, ERR_NOMEM, "out of memory");
        return -2;
    }
    /* the last prompt token is always computed: its logits are the first output */
    int32_t matched = s->o.prefix_cache ? kvpool_match(s->pool, r->prompt, (n_prompt - 1) / BT, blocks) : 0;
    int32_t next_block_end = (matched + 1) * BT < n_prompt ? (matched + 1) * BT : n_prompt;
    /* waiting pays only for a block this prompt may match: one before the block of its last token */
    int wait = s->o.prefix_cache && matched < (n_prompt - 1) / BT && next_block_end - matched * BT == BT &&
               prefill_in_flight(s, r, next_block_end);
    if (wait || kvpool_available(s->pool) - s->reserved < need - matched) {
        for (int32_t b = 0; b < matched; b++) kvpool_release(s->pool, blocks[b]);
        xfree(blocks);
        xfree(tokens);
        return wait ? -1 : 0;
    }
    seq *q = &s->seqs[s->n_seqs];
    memset(q, 0, sizeof(*q));
    if (gen_out_init(&q->out, s->em, s->tk, &r->params, r->prompt, r->n_prompt, lreq_on_text, lreq_on_token, r,
                     eb) != ERR_OK) {
        for (int32_t b = 0; b < matched; b++) kvpool_release(s->pool, blocks[b]);
        xfree(blocks);
        xfree(tokens);
        return -2;
    }
    memcpy(tokens, r->prompt, (size_t)n_prompt * sizeof(int32_t));
    q->r = r;
    q->tokens = tokens;
    q->n_tokens = q->n_prompt = n_prompt;
    q->n_done = q->n_cached = matched * BT;
    q->blocks = blocks;
    q->n_blocks = q->n_published = matched;
    q->cap_blocks = need;
    q->reserve = need - matched;
    q->t_admit = clock_ns();
    s->reserved += q->reserve;
    s->n_seqs++;
    pthread_mutex_lock(&s->mu);
    s->st.prompt_tokens += (uint64_t)n_prompt;
    s->st.cached_tokens += (uint64_t)q->n_cached;
    pthread_mutex_unlock(&s->mu);
    return 1;
}

static int expired(const lreq *r, uint64_t now) { return r->deadline_ns && now >= r->deadline_ns; }

/* Drops cancelled / expired waiting requests and admits what fits; returns 0 when the thread should stop. The
 * whole queue is walked every step: once one request cannot be admitted (no seat, no KV room) nothing behind it
 * is (FIFO, so a large request is not starved by small ones), but the ones behind it that were cancelled or ran
 * out of time still leave now, or they would hold queue places (429s) and miss their deadlines. */
static int admit_waiting(lsched *s) {
    uint64_t now = clock_ns();
    pthread_mutex_lock(&s->mu);
    int stop = s->stop, admitting = 1;
    lreq **link = &s->qhead, *prev = NULL;
    while (*link) {
        lreq *r = *link;
        int gone = stop || atomic_load(&r->cancel) || expired(r, now), got = 0;
        errbuf eb = {0};
        if (!gone) {
            if (s->n_seqs == s->o.max_batch) admitting = 0;
            if (admitting) {
                pthread_mutex_unlock(&s->mu); /* admit takes the lock for its counters */
                got = admit(s, r, &eb);
                pthread_mutex_lock(&s->mu);
                if (got == 0) admitting = 0;
            }
            if (!admitting || got == -1) { /* stays queued */
                prev = r;
                link = &r->qnext;
                continue;
            }
        }
        *link = r->qnext; /* leaves the queue: admitted, gone or failed */
        if (s->qtail == r) s->qtail = prev;
        r->qnext = NULL;
        s->st.queued--;
        pthread_mutex_unlock(&s->mu);
        if (gone) finish_queued(s, r, !stop && !atomic_load(&r->cancel));
        else if (got == -2) {
            sched_event ev = {.kind = SCHED_EV_ERROR, .code = eb.code ? eb.code : ERR_NOMEM};
            ev.n_prompt = (int32_t)r->n_prompt;
            snprintf(ev.msg, sizeof(ev.msg), "%s", eb.msg);
            lreq_push_event(r, &ev);
            lreq_unref(r);
            pthread_mutex_lock(&s->mu);
            s->st.failed++;
            pthread_mutex_unlock(&s->mu);
        }
        pthread_mutex_lock(&s->mu);
    }
    s->st.running = s->n_seqs;
    pthread_mutex_unlock(&s->mu);
    return !stop;
}

/* ---- one step ------------------------------------------------------------------------------------------------- */

/* Makes sure seq q has blocks for positions below end (within its reservation). */
static void grow_blocks(lsched *s, seq *q, int32_t end) {
    while (q->n_blocks * BT < end && q->n_blocks < q->cap_blocks) {
        int32_t id = kvpool_alloc(s->pool);
        if (id < 0) break; /* cannot happen: admission reserved it; the forward's checks would catch it */
        q->blocks[q->n_blocks++] = id;
        q->reserve--;
        s->reserved--;
    }
}

static void publish_full(lsched *s, seq *q) {
    if (!s->o.prefix_cache) return;
    for (; (q->n_published + 1) * BT <= q->n_done && q->n_published < q->n_blocks; q->n_published++) {
        int32_t b = q->n_published;
        kvpool_publish(s->pool, b ? q->blocks[b - 1] : -1, q->tokens + (size_t)b * BT, q->blocks[b]);
    }
}

/* Builds the batch: decoding sequences first (one row each), then prompt chunks up to the budget. Returns rows. */
static int32_t build_batch(lsched *s, int32_t *n_bseq, int32_t *n_logits) {
    int32_t rows = 0, nb = 0, nl = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = 0; i < s->n_seqs; i++) {
            seq *q = &s->seqs[i];
            const int decoding = q->n_done >= q->n_prompt;
            if (decoding != (pass == 0) || q->out.done) continue;
            int32_t n = q->n_tokens - q->n_done;
            if (n > s->step_rows - rows) n = s->step_rows - rows;
            if (n <= 0) continue;
            grow_blocks(s, q, q->n_done + n);
            for (int32_t j = 0; j < n; j++) {
                s->row_tokens[rows + j] = q->tokens[q->n_done + j];
                s->row_pos[rows + j] = q->n_done + j;
            }
            s->bseq_seq[nb] = i;
            s->bseqs[nb++] = (eng_seq){rows, n, q->n_done, q->blocks, q->n_blocks};
            if (q->n_done + n == q->n_tokens) {
                s->logit_rows[nl] = rows + n - 1;
                s->logit_seq[nl++] = i;
            }
            rows += n;
        }
    *n_bseq = nb;
    *n_logits = nl;
    return rows;
}

/* Counters for sched_get_stats; a step of 0 sequences (all left before it) counts no step. */
static void publish_stats(lsched *s, int32_t nb, int32_t rows, uint64_t forward_ns, uint64_t step_ns) {
    kvpool_stats ks;
    kvpool_get_stats(s->pool, &ks);
    pthread_mutex_lock(&s->mu);
    if (nb) {
        s->st.steps++;
        s->st.step_seqs += (uint64_t)nb;
        s->st.step_rows += (uint64_t)rows;
        s->st.forward_ns += forward_ns;
        s->st.step_ns += step_ns;
        s->st.last_batch = nb;
    }
    s->st.running = s->n_seqs;
    s->st.kv_blocks_total = ks.total;
    s->st.kv_blocks_used = ks.used;
    s->st.kv_blocks_cached = ks.cached;
    pthread_mutex_unlock(&s->mu);
}

/* Running requests that were cancelled or ran out of time leave, before admission so their seats and blocks go to
 * waiting requests in the same step. */
static void leave_cancelled(lsched *s) {
    uint64_t now = clock_ns();
    for (int32_t i = s->n_seqs - 1; i >= 0; i--) {
        lreq *r = s->seqs[i].r;
        if (atomic_load(&r->cancel) || expired(r, now)) {
            int late = !atomic_load(&r->cancel);
            gen_out_end(&s->seqs[i].out, GEN_FINISH_CANCELLED, NULL);
            finish_seq(s, i, ERR_OK, NULL, late);
        }
    }
}

/* Runs one forward over the active sequences and hands out the logits. */
static void step(lsched *s) {
    if (s->n_seqs == 0) {
        publish_stats(s, 0, 0, 0, 0);
        return;
    }
    const uint64_t t0 = clock_ns();
    int32_t nb, nl;
    const int32_t rows = build_batch(s, &nb, &nl);
    const int32_t V = eng_model_config(s->em)->vocab_size;
    eng_batch b = {nb, s->bseqs, rows, s->row_tokens, s->row_pos};
    errbuf eb = {0};
    /* where the model summarizes logits on its device (CUDA), only the summaries come back (rows on demand) */
    const int on_device = eng_model_logits_on_device(s->em);
    err rc = eng_model_forward(s->em, &b, s->logit_rows, nl, on_device ? NULL : s->logits, &eb);
    if (rc == ERR_OK && on_device && nl) {
        for (int32_t k = 0; k < nl; k++)
            if (!gen_out_wants_top(&s->seqs[s->logit_seq[k]].out, s->em, &s->inv_t[k])) s->inv_t[k] = 0;
        rc = eng_model_logits_top(s->em, s->seqs[s->logit_seq[0]].out.ss.n_valid, s->inv_t, s->tops, &eb);
    }
    if (rc != ERR_OK) {
        LOG_ERROR("engine: %s", eb.msg);
        if (rc == ERR_CUDA) atomic_store(&s->healthy, 0);
        while (s->n_seqs) finish_seq(s, s->n_seqs - 1, rc, eb.msg, 0);
        publish_stats(s, 0, 0, 0, 0);
        return;
    }
    uint64_t now = clock_ns();
    const uint64_t forward_ns = now - t0;
    for (int32_t k = 0; k < nb; k++) {
        seq *q = &s->seqs[s->bseq_seq[k]];
        q->n_done += s->bseqs[k].n_tokens;
        publish_full(s, q);
    }
    for (int32_t k = 0; k < nl; k++) {
        seq *q = &s->seqs[s->logit_seq[k]];
        if (!q->t_first_logits) q->t_first_logits = now;
        int32_t next = 0;
        float inv_t;
        int served = 0;
        rc = ERR_OK;
        if (q->r->params.max_tokens == 0) rc = gen_out_end(&q->out, GEN_FINISH_LENGTH, &eb), served = 1;
        else if (on_device && gen_out_wants_top(&q->out, s->em, &inv_t))
            rc = gen_out_push_top(&q->out, &s->tops[k], &next, &served, &eb);
        if (rc == ERR_OK && !served && on_device) rc = eng_model_logits_row(s->em, k, s->logits + (size_t)k * V, &eb);
        if (rc == ERR_OK && !served) rc = gen_out_push(&q->out, s->logits + (size_t)k * V, &next, &eb);
        if (!q->t_first_token && q->out.n_generated) q->t_first_token = now;
        if (rc == ERR_CUDA) atomic_store(&s->healthy, 0); /* a row read failed: the next forward fails them all */
        if (rc != ERR_OK) gen_out_end(&q->out, GEN_FINISH_CANCELLED, NULL), q->r->oom = 1;
        else if (!q->out.done) q->tokens[q->n_tokens++] = next;
    }
    for (int32_t i = s->n_seqs - 1; i >= 0; i--)
        if (s->seqs[i].out.done) finish_seq(s, i, ERR_OK, NULL, 0);
    publish_stats(s, nb, rows, forward_ns, clock_ns() - t0);
}

void *lsched_engine_main(void *arg) {
    lsched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !s->qhead && s->n_seqs == 0) pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
        leave_cancelled(s);
        if (!admit_waiting(s)) break;
        step(s);
    }
    /* stopping: everything still running or waiting ends as cancelled */
    for (int32_t i = s->n_seqs - 1; i >= 0; i--) {
        gen_out_end(&s->seqs[i].out, GEN_FINISH_CANCELLED, NULL);
        finish_seq(s, i, ERR_OK, NULL, 0);
    }
    admit_waiting(s);
    return NULL;
}
