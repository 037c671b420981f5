/* sched_local.c - the embedded engine behind sched_api.h, request side: submit, events, cancel, release, stats.
 *
 * DESIGN: HTTP threads never touch the model. They submit a request (copied) to a bounded FIFO, then block on the
 * request's own event queue. The engine thread (sched_step.c) admits requests into running batches and turns their
 * text pieces and sampled tokens into events. Cancellation is a flag the engine reads before every forward step, so
 * a dropped client stops costing engine time within one step. A request is freed when both sides have let go. */
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "sched_local.h"

void lreq_unref(lreq *r) {
    if (atomic_fetch_sub(&r->refs, 1) != 1) return;
    for (ev_node *n = r->head, *nx; n; n = nx) {
        nx = n->next;
        sched_event_fini(&n->ev);
        xfree(n);
    }
    for (int i = 0; i < GEN_MAX_STOP; i++) xfree(r->stops[i]);
    xfree(r->final);
    xfree(r->pend);
    xfree(r->prompt);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    xfree(r);
}

/* Appends an event (taking ownership of its buffers). Without memory for a TEXT event's node the event is dropped
 * and the request is marked so that its DONE becomes an ERROR; the DONE / ERROR event uses the node reserved at
 * submit, so a client never waits for an end that was lost. */
void lreq_push_event(lreq *r, sched_event *ev) {
    ev_node *n = NULL;
    if (ev->kind != SCHED_EV_TEXT && r->final) {
        n = r->final;
        r->final = NULL;
    } else {
        n = xcalloc(1, sizeof(*n));
    }
    if (!n) {
        sched_event_fini(ev);
        r->oom = 1;
        return;
    }
    n->ev = *ev;
    pthread_mutex_lock(&r->mu);
    if (r->tail) r->tail->next = n;
    else r->head = n;
    r->tail = n;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void lreq_take_pending(lreq *r, sched_event *ev) {
    ev->tokens = r->pend;
    ev->n_tokens = r->n_pend;
    r->pend = NULL;
    r->n_pend = r->cap_pend = 0;
}

void lreq_on_token(void *ud, const samp_result *t) {
    lreq *r = ud;
    if (r->n_pend == r->cap_pend) {
        int32_t nc = r->cap_pend ? 2 * r->cap_pend : 8;
        samp_result *np = xrealloc(r->pend, (size_t)nc * sizeof(*np));
        if (!np) {
            r->oom = 1;
            return;
        }
        r->pend = np;
        r->cap_pend = nc;
    }
    r->pend[r->n_pend++] = *t;
}

int lreq_on_text(void *ud, const char *text, size_t len, const samp_result *t) {
    (void)t;
    lreq *r = ud;
    sched_event ev = {0};
    ev.kind = SCHED_EV_TEXT;
    ev.text = xstrndup(text, len);
    if (!ev.text) {
        r->oom = 1;
        return 1;
    }
    ev.len = len;
    lreq_take_pending(r, &ev);
    lreq_push_event(r, &ev);
    return atomic_load(&r->cancel);
}

static void l_destroy(sched *base) {
    lsched *s = (lsched *)base;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    for (lreq *r = s->qhead; r; r = r->qnext) atomic_store(&r->cancel, 1);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started) pthread_join(s->thread, NULL);
    lsched_engine_fini(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    xfree(s);
}

static err l_submit(sched *base, const sched_request *rq, sched_req **out, errbuf *eb) {
    lsched *s = (lsched *)base;
    *out = NULL;
    if (!atomic_load(&s->healthy)) return errbuf_set(eb, ERR_UNSUPPORTED, "the engine has failed; see the server log");
    err rc = gen_check(s->em, rq->n_prompt, &rq->params, eb);
    if (rc != ERR_OK) return rc;
    /* one bad id would fail the forward of every request in its batch: refuse it here, alone */
    const int32_t V = eng_model_config(s->em)->vocab_size;
    for (size_t i = 0; i < rq->n_prompt; i++)
        if (rq->prompt[i] < 0 || rq->prompt[i] >= V)
            return errbuf_set(eb, ERR_INVALID, "prompt token %zu is %d, outside the vocabulary (0..%d)", i,
                              rq->prompt[i], V - 1);
    lreq *r = xcalloc(1, sizeof(*r));
    if (!r) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    r->base.ops = s->base.ops;
    r->s = s;
    r->params = rq->params;
    r->params.cancel = NULL;
    r->prompt = xmalloc_array(rq->n_prompt, sizeof(int32_t));
    r->final = xcalloc(1, sizeof(ev_node));
    int oom = !r->prompt || !r->final;
    for (int i = 0; i < rq->params.n_stop && i < GEN_MAX_STOP; i++) {
        r->stops[i] = rq->params.stop[i] ? xstrdup(rq->params.stop[i]) : NULL;
        r->params.stop[i] = r->stops[i];
        oom |= rq->params.stop[i] && !r->stops[i];
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca; /* timed waits on the monotonic clock: a wall-clock jump must not stretch them */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_store(&r->refs, 1);
    if (oom) {
        lreq_unref(r);
        return errbuf_set(eb, ERR_NOMEM, "out of memory");
    }
    memcpy(r->prompt, rq->prompt, rq->n_prompt * sizeof(int32_t));
    r->n_prompt = rq->n_prompt;
    r->t_submit = clock_ns();
    r->deadline_ns = rq->deadline_ns;
    pthread_mutex_lock(&s->mu);
    if (s->stop || s->st.queued >= s->o.queue_max) {
        const int stopping = s->stop;
        s->st.rejected++;
        pthread_mutex_unlock(&s->mu);
        lreq_unref(r);
        return stopping ? errbuf_set(eb, ERR_BUSY, "the engine is shutting down")
                       : errbuf_set(eb, ERR_BUSY, "the engine queue is full (%d waiting)", s->o.queue_max);
    }
    atomic_fetch_add(&r->refs, 1); /* the engine's reference */
    if (s->qtail) s->qtail->qnext = r;
    else s->qhead = r;
    s->qtail = r;
    s->st.queued++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *out = &r->base;
    return ERR_OK;
}

static int l_next(sched_req *base, sched_event *ev, int timeout_ms) {
    lreq *r = (lreq *)base;
    pthread_mutex_lock(&r->mu);
    if (!r->head && timeout_ms != 0) {
        if (timeout_ms < 0) {
            while (!r->head) pthread_cond_wait(&r->cv, &r->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += timeout_ms / 1000;
            ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            while (!r->head)
                if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0) break;
        }
    }
    ev_node *n = r->head;
    if (n) {
        r->head = n->next;
        if (!r->head) r->tail = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (!n) return 0;
    *ev = n->ev;
    xfree(n);
    return 1;
}

static void l_cancel(sched_req *base) { atomic_store(&((lreq *)base)->cancel, 1); }

static void l_release(sched_req *base) {
    lreq *r = (lreq *)base;
    atomic_store(&r->cancel, 1);
    lreq_unref(r);
}

static void l_stats(sched *base, sched_stats *st) {
    lsched *s = (lsched *)base;
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    pthread_mutex_unlock(&s->mu);
}

static int l_healthy(sched *base) { return atomic_load(&((lsched *)base)->healthy); }
static int32_t l_n_ctx(sched *base) { return eng_model_config(((lsched *)base)->em)->n_positions; }

static const sched_ops local_ops = {l_destroy, l_submit, l_next, l_cancel, l_release, l_stats, l_healthy, l_n_ctx};

err sched_local_create(eng_model *em, const tok *tk, const sched_opts *opts, sched **out, errbuf *eb) {
    *out = NULL;
    lsched *s = xcalloc(1, sizeof(*s));
    if (!s) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    s->base.ops = &local_ops;
    s->em = em;
    s->tk = tk;
    s->o = opts ? *opts : sched_opts_default();
    if (s->o.queue_max <= 0) s->o.queue_max = 1;
    atomic_store(&s->healthy, 1);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    err rc = lsched_engine_init(s);
    if (rc != ERR_OK) {
        l_destroy(&s->base);
        return errbuf_set(eb, rc, "the engine's batch state: %s", err_name(rc));
    }
    if (pthread_create(&s->thread, NULL, lsched_engine_main, s) != 0) {
        l_destroy(&s->base);
        return errbuf_set(eb, ERR_NOMEM, "could not start the engine thread");
    }
    s->thread_started = 1;
    *out = &s->base;
    return ERR_OK;
}
