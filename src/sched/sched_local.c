/* sched_local.c - the embedded engine behind sched_api.h: one engine thread, a bounded FIFO, one request at a time.
 *
 * DESIGN: HTTP threads never touch the model. They submit a request (copied), then block on the request's own event
 * queue. The engine thread pops requests in order and runs gen_run; its callbacks turn text pieces and sampled
 * tokens into events. Cancellation is a flag gen_run checks before every forward step, so a dropped client stops
 * costing engine time within one step. A request is freed when both sides have let go (reference count). */
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "sched_impl.h"

typedef struct ev_node {
    sched_event ev;
    struct ev_node *next;
} ev_node;

typedef struct lsched lsched;

typedef struct lreq {
    sched_req base;
    lsched *s;
    int32_t *prompt;
    size_t n_prompt;
    gen_params params;
    char *stops[GEN_MAX_STOP];
    atomic_int cancel;
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ev_node *head, *tail;
    /* engine thread only: tokens sampled since the last event */
    samp_result *pend;
    int32_t n_pend, cap_pend;
    int oom;
    uint64_t t_submit;
    struct lreq *qnext;
} lreq;

struct lsched {
    sched base;
    eng_model *em;
    const tok *tk;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lreq *qhead, *qtail;
    int32_t queued, running, queue_max;
    int stop;
    atomic_int healthy;
    uint64_t completed, rejected, cancelled, failed;
};

static void req_unref(lreq *r) {
    if (atomic_fetch_sub(&r->refs, 1) != 1) return;
    for (ev_node *n = r->head, *nx; n; n = nx) {
        nx = n->next;
        sched_event_fini(&n->ev);
        xfree(n);
    }
    for (int i = 0; i < GEN_MAX_STOP; i++) xfree(r->stops[i]);
    xfree(r->pend);
    xfree(r->prompt);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    xfree(r);
}

/* Appends an event (taking ownership of its buffers). Without memory for the node the event is dropped and the
 * request is marked so that its DONE becomes an ERROR. */
static void push_event(lreq *r, sched_event *ev) {
    ev_node *n = xcalloc(1, sizeof(*n));
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

static void take_pending(lreq *r, sched_event *ev) {
    ev->tokens = r->pend;
    ev->n_tokens = r->n_pend;
    r->pend = NULL;
    r->n_pend = r->cap_pend = 0;
}

static void on_token(void *ud, const samp_result *t) {
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

static int on_text(void *ud, const char *text, size_t len, const samp_result *t) {
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
    take_pending(r, &ev);
    push_event(r, &ev);
    return atomic_load(&r->cancel);
}

static void run_one(lsched *s, lreq *r) {
    sched_event ev = {0};
    uint64_t t0 = clock_ns();
    if (atomic_load(&r->cancel)) {
        ev.kind = SCHED_EV_DONE;
        ev.finish = GEN_FINISH_CANCELLED;
        ev.n_prompt = (int32_t)r->n_prompt;
        ev.queue_ns = t0 - r->t_submit;
        push_event(r, &ev);
        return;
    }
    gen_result res;
    errbuf eb = {0};
    r->params.cancel = &r->cancel;
    err rc = gen_run(s->em, s->tk, r->prompt, r->n_prompt, &r->params, on_text, on_token, r, &res, &eb);
    if (rc == ERR_OK && r->oom) rc = errbuf_set(&eb, ERR_NOMEM, "out of memory while streaming the completion");
    if (rc != ERR_OK) {
        ev.kind = SCHED_EV_ERROR;
        ev.code = rc;
        snprintf(ev.msg, sizeof(ev.msg), "%s", eb.msg);
        if (rc == ERR_CUDA) atomic_store(&s->healthy, 0);
        LOG_ERROR("engine: %s", eb.msg);
    } else {
        ev.kind = SCHED_EV_DONE;
        ev.finish = res.finish;
        ev.n_prompt = res.n_prompt;
        ev.n_generated = res.n_generated;
        ev.prefill_ns = res.prefill_ns;
        ev.decode_ns = res.decode_ns;
    }
    ev.queue_ns = t0 - r->t_submit;
    take_pending(r, &ev);
    pthread_mutex_lock(&s->mu);
    if (rc != ERR_OK) s->failed++;
    else if (res.finish == GEN_FINISH_CANCELLED) s->cancelled++;
    else s->completed++;
    pthread_mutex_unlock(&s->mu);
    push_event(r, &ev);
}

static void *engine_main(void *arg) {
    lsched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !s->qhead) pthread_cond_wait(&s->cv, &s->mu);
        lreq *r = s->qhead;
        if (r) {
            s->qhead = r->qnext;
            if (!s->qhead) s->qtail = NULL;
            s->queued--;
            s->running = 1;
        }
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (!r) break;
        if (stop) atomic_store(&r->cancel, 1);
        run_one(s, r);
        pthread_mutex_lock(&s->mu);
        s->running = 0;
        pthread_mutex_unlock(&s->mu);
        req_unref(r);
    }
    return NULL;
}

static void l_destroy(sched *base) {
    lsched *s = (lsched *)base;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    for (lreq *r = s->qhead; r; r = r->qnext) atomic_store(&r->cancel, 1);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started) pthread_join(s->thread, NULL);
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
    lreq *r = xcalloc(1, sizeof(*r));
    if (!r) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    r->base.ops = s->base.ops;
    r->s = s;
    r->params = rq->params;
    r->params.cancel = NULL;
    r->prompt = xmalloc_array(rq->n_prompt, sizeof(int32_t));
    int oom = !r->prompt;
    for (int i = 0; i < rq->params.n_stop && i < GEN_MAX_STOP; i++) {
        r->stops[i] = xstrdup(rq->params.stop[i]);
        r->params.stop[i] = r->stops[i];
        oom |= !r->stops[i];
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_store(&r->refs, 1);
    if (oom) {
        req_unref(r);
        return errbuf_set(eb, ERR_NOMEM, "out of memory");
    }
    memcpy(r->prompt, rq->prompt, rq->n_prompt * sizeof(int32_t));
    r->n_prompt = rq->n_prompt;
    r->t_submit = clock_ns();
    pthread_mutex_lock(&s->mu);
    if (s->stop || s->queued >= s->queue_max) {
        s->rejected++;
        pthread_mutex_unlock(&s->mu);
        req_unref(r);
        return errbuf_set(eb, ERR_BUSY, "the engine queue is full (%d waiting)", s->queue_max);
    }
    atomic_fetch_add(&r->refs, 1); /* the engine's reference */
    if (s->qtail) s->qtail->qnext = r;
    else s->qhead = r;
    s->qtail = r;
    s->queued++;
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
            clock_gettime(CLOCK_REALTIME, &ts);
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
    req_unref(r);
}

static void l_stats(sched *base, sched_stats *st) {
    lsched *s = (lsched *)base;
    pthread_mutex_lock(&s->mu);
    st->queued = s->queued;
    st->running = s->running;
    st->queue_max = s->queue_max;
    st->completed = s->completed;
    st->rejected = s->rejected;
    st->cancelled = s->cancelled;
    st->failed = s->failed;
    pthread_mutex_unlock(&s->mu);
}

static int l_healthy(sched *base) { return atomic_load(&((lsched *)base)->healthy); }
static int32_t l_n_ctx(sched *base) { return eng_model_config(((lsched *)base)->em)->n_positions; }

static const sched_ops local_ops = {l_destroy, l_submit, l_next, l_cancel, l_release, l_stats, l_healthy, l_n_ctx};

err sched_local_create(eng_model *em, const tok *tk, int32_t queue_max, sched **out, errbuf *eb) {
    *out = NULL;
    lsched *s = xcalloc(1, sizeof(*s));
    if (!s) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    s->base.ops = &local_ops;
    s->em = em;
    s->tk = tk;
    s->queue_max = queue_max > 0 ? queue_max : 1;
    atomic_store(&s->healthy, 1);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, engine_main, s) != 0) {
        l_destroy(&s->base);
        return errbuf_set(eb, ERR_NOMEM, "could not start the engine thread");
    }
    s->thread_started = 1;
    *out = &s->base;
    return ERR_OK;
}
