/* pool.h - a fixed thread pool for data-parallel kernels: pool_run() calls fn(ctx, ith, nth) once on each of the
 * nth workers (the caller is worker 0) and returns when all are done.
 *
 * One pool belongs to one engine thread; pool_run() is not re-entrant and must not be called from two threads at
 * once. Workers spin briefly before sleeping so the many small dispatches of a decode step stay cheap. */
#ifndef SUGGESTD_CORE_POOL_H
#define SUGGESTD_CORE_POOL_H

#include "err.h"

typedef struct pool pool;
typedef void (*pool_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0 means one per online CPU. */
err pool_create(int n_threads, pool **out);
void pool_destroy(pool *p);
int pool_size(const pool *p);
void pool_run(pool *p, pool_fn fn, void *ctx);

/* Splits [0, n) into nth nearly equal contiguous parts; part ith is [*lo, *hi). */
static inline void pool_split(long n, int ith, int nth, long *lo, long *hi) {
    long q = n / nth, r = n % nth;
    *lo = ith * q + (ith < r ? ith : r);
    *hi = *lo + q + (ith < r ? 1 : 0);
}

#endif
