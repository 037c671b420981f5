/* alloc.h - every heap allocation goes through these, so tests can fail the Nth one (SQLite-style fault injection).
 *
 * They return NULL on failure (never abort): callers turn that into ERR_NOMEM. Thread-safe. */
#ifndef SUGGESTD_CORE_ALLOC_H
#define SUGGESTD_CORE_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);           /* overflow-checked */
void *xrealloc(void *p, size_t n);
void *xmalloc_array(size_t count, size_t size);     /* overflow-checked malloc */
void *xaligned_alloc(size_t align, size_t n);       /* free with xfree; align is a power of two >= sizeof(void*) */
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void xfree(void *p);

/* A growable, always NUL-terminated byte buffer (HTTP bodies, streamed text). max > 0 caps len: an append that would
 * pass it sets too_big and fails, so a hostile peer cannot grow it without bound. Zero-initialize; free p. */
typedef struct xbuf {
    char *p;
    size_t len, cap, max;
    int too_big;
} xbuf;
/* Appends n bytes: 0, or -1 when the cap would be passed or memory ran out (b is unchanged then). */
int xbuf_append(xbuf *b, const void *data, size_t n);

/* Test hook: after n more successful allocations, every allocation fails until reset with a negative n. */
void alloc_fail_after(long n);

#endif
