/* gpu_check.h - the few test macros the GPU tests need. The GPU machine has no cmocka, so these tests are plain C:
 * a failed check prints where and why (both values) and ends the current test function; main() counts failures. */
#ifndef SUGGESTD_GPU_CHECK_H
#define SUGGESTD_GPU_CHECK_H

#include <stdio.h>
#include <stdlib.h>

extern int gc_failures;

#define GC_FAIL(...)                                                                                                 \
    do {                                                                                                             \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                          \
        fprintf(stderr, __VA_ARGS__);                                                                                \
        fputc('\n', stderr);                                                                                         \
        gc_failures++;                                                                                               \
        return;                                                                                                      \
    } while (0)

#define GC_CHECK(cond, ...)                                                                                          \
    do {                                                                                                             \
        if (!(cond)) GC_FAIL(__VA_ARGS__);                                                                           \
    } while (0)

/* An err-returning call that must give `want`. */
#define GC_CALL(want, call)                                                                                          \
    do {                                                                                                             \
        err got_ = (call);                                                                                           \
        if (got_ != (want)) GC_FAIL("%s returned %s, expected %s", #call, err_name(got_), err_name(want));           \
    } while (0)

#define GC_OK(call) GC_CALL(ERR_OK, call)

/* Test code may stop on out-of-memory. */
static inline void *gc_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test: out of memory\n");
        exit(2);
    }
    return p;
}

#define GC_RUN(fn)                                                                                                   \
    do {                                                                                                             \
        int before_ = gc_failures;                                                                                   \
        fn();                                                                                                        \
        printf("%s %s\n", gc_failures == before_ ? "ok  " : "FAIL", #fn);                                            \
        fflush(stdout);                                                                                              \
    } while (0)

#endif
