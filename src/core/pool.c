/* pool.c - fork/join thread pool.
 *
 * DESIGN: pool_run publishes (fn, ctx) and bumps a generation counter; workers that see a new generation run their
 * share and decrement `pending`; the caller runs share 0 and then waits for pending == 0. Workers spin on the
 * generation for a short while before sleeping on a condition variable, because a decode step issues hundreds of
 * dispatches a few microseconds apart and a futex wake-up per dispatch would cost more than the work. */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "alloc.h"

#define POOL_SPIN 20000

struct pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;
    atomic_int pending;
    atomic_int stop;
    pool_fn fn;
    void *ctx;
};

typedef struct worker_arg {
    pool *p;
    int ith;
} worker_arg;

static void *worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    xfree(arg);
    pool *p = wa.p;
    /* Generation 0 is the pool's creation. Reading gen here instead would race with a pool_run that bumps it
     * before this thread starts, and the worker would then wait for the next dispatch forever. */
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (atomic_load(&p->stop)) return NULL;
            if (++spins < POOL_SPIN) continue;
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        p->fn(p->ctx, wa.ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

err pool_create(int n_threads, pool **out) {
    *out = NULL;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    pool *p = xcalloc(1, sizeof(*p));
    if (!p) return ERR_NOMEM;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = xcalloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) {
        pool_destroy(p);
        return ERR_NOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = xmalloc(sizeof(*wa));
        if (!wa) {
            p->n = i;
            pool_destroy(p);
            return ERR_NOMEM;
        }
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            xfree(wa);
            p->n = i;
            pool_destroy(p);
            return ERR_NOMEM;
        }
    }
    *out = p;
    return ERR_OK;
}

void pool_destroy(pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        if (p->threads && p->threads[i]) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    xfree(p->threads);
    xfree(p);
}

int pool_size(const pool *p) { return p->n; }

void pool_run(pool *p, pool_fn fn, void *ctx) {
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) sched_yield();
}
