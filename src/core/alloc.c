/* alloc.c - allocation wrappers with a fault-injection counter for tests. */
#include "alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_countdown = -1;

static int should_fail(void) {
    long v = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (v < 0) return 0;
    if (v == 0) return 1;
    atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed);
    return 0;
}

void alloc_fail_after(long n) { atomic_store(&fail_countdown, n); }

void *xmalloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }

void *xcalloc(size_t count, size_t size) {
    if (should_fail()) return NULL;
    if (size && count > SIZE_MAX / size) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *xrealloc(void *p, size_t n) { return should_fail() ? NULL : realloc(p, n ? n : 1); }

void *xmalloc_array(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    return xmalloc(count * size);
}

void *xaligned_alloc(size_t align, size_t n) {
    if (should_fail()) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, align, n ? n : 1) != 0) return NULL;
    return p;
}

char *xstrndup(const char *s, size_t n) {
    char *d = xmalloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

void xfree(void *p) { free(p); }

int xbuf_append(xbuf *b, const void *data, size_t n) {
    if (b->max && n > b->max - b->len) {
        b->too_big = 1;
        return -1;
    }
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 1024;
        while (nc < b->len + n + 1) nc *= 2;
        char *np = xrealloc(b->p, nc);
        if (!np) return -1;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}
