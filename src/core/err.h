/* err.h - the one error enum every fallible call returns, and a caller-owned buffer for the detail text.
 *
 * Detail text never lives in globals: a call that fails writes a sentence naming the file, tensor or byte that was
 * wrong into the errbuf its caller passed (which may be NULL when the caller only wants the code). */
#ifndef SUGGESTD_CORE_ERR_H
#define SUGGESTD_CORE_ERR_H

#include <stddef.h>

typedef enum err {
    ERR_OK = 0,
    ERR_NOMEM,        /* an allocation sized by a request or a model failed */
    ERR_IO,           /* open/read/mmap failed */
    ERR_FORMAT,       /* a file or message is malformed */
    ERR_INVALID,      /* a caller passed something out of range */
    ERR_UNSUPPORTED,  /* well formed, but not something we run (dtype, architecture) */
    ERR_CUDA,         /* a CUDA call failed */
    ERR_TIMEOUT,
    ERR_CANCELLED,
    ERR_UNAUTHORIZED,
    ERR_UPSTREAM,     /* a service we call answered badly */
    ERR_BUSY,
} err;

/* "ERR_FORMAT" etc., for logs and tests. */
const char *err_name(err e);

typedef struct errbuf {
    err code;
    char msg[512];
} errbuf;

/* Records code and a printf-style message in eb (if non-NULL) and returns code, so callers can write
 * `return errbuf_set(eb, ERR_FORMAT, "%s: header length %llu exceeds the file", path, n);` */
err errbuf_set(errbuf *eb, err code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes an existing message ("model dir: " + old) so outer layers can add context. */
void errbuf_prefix(errbuf *eb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
