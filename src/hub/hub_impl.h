/* hub_impl.h - what hub's files share: HTTP transfers over libcurl (hub_http.c) used by the pull (hub_pull.c). */
#ifndef SUGGESTD_HUB_IMPL_H
#define SUGGESTD_HUB_IMPL_H

#include "hub.h"

/* What one request is about, for the one-line error messages ("repository ORG/NAME not found", ...). */
typedef struct hub__ctx {
    const hub_env *env;
    const char *repo; /* ORG/NAME */
    const char *rev;
} hub__ctx;

/* The last response's status and the hub's headers that explain it. linked_etag is X-Linked-Etag (the LFS sha256 the
 * hub announces before redirecting to its storage), unquoted. */
typedef struct hub__resp {
    long status;
    char error_code[64];
    char linked_etag[80];
    char content_range[128];
} hub__resp;

/* GET url into a NUL-terminated heap buffer (xfree) of at most max bytes. HTTP errors become one-line messages. */
err hub__get(const hub__ctx *cx, const char *url, size_t max, char **body, size_t *len, errbuf *eb);

/* One file into part_path, resumed from what part_path holds (Range), retried `retries` times after an interrupted
 * transfer, then checked: size == expect (when >= 0) and sha256 == the listing's (or X-Linked-Etag's) when known.
 * A mismatch removes part_path. On success part_path holds exactly the file. */
typedef struct hub__dl {
    const char *url;
    const char *file; /* the name in the repository, for messages and progress */
    const char *part_path;
    int64_t expect;
    const char *sha256; /* "" when the listing has none */
    int retries;
    size_t index, count;
    hub_progress_fn progress;
    void *progress_ud;
} hub__dl;
err hub__download(const hub__ctx *cx, const hub__dl *d, errbuf *eb);

/* Percent-encodes s for a URL path; '/' kept when keep_slash. ERR_INVALID when it does not fit. */
err hub__url_encode(const char *s, int keep_slash, char *out, size_t cap, errbuf *eb);

#endif
