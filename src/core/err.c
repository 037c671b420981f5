/* err.c - error names and errbuf formatting. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *err_name(err e) {
    static const char *names[] = {
        "ERR_OK",     "ERR_NOMEM",   "ERR_IO",        "ERR_FORMAT",       "ERR_INVALID",  "ERR_UNSUPPORTED",
        "ERR_CUDA",   "ERR_TIMEOUT", "ERR_CANCELLED", "ERR_UNAUTHORIZED", "ERR_UPSTREAM", "ERR_BUSY",
    };
    if ((unsigned)e < sizeof(names) / sizeof(names[0])) return names[e];
    return "ERR_?";
}

err errbuf_set(errbuf *eb, err code, const char *fmt, ...) {
    if (eb) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(eb->msg, sizeof(eb->msg), fmt, ap);
        va_end(ap);
        eb->code = code;
    }
    return code;
}

void errbuf_prefix(errbuf *eb, const char *fmt, ...) {
    if (!eb) return;
    char head[256], old[sizeof(eb->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    memcpy(old, eb->msg, sizeof(old));
    /* head, then as much of the old message as fits */
    size_t hl = strnlen(head, sizeof(head)), cap = sizeof(eb->msg) - 1;
    if (hl > cap) hl = cap;
    memcpy(eb->msg, head, hl);
    size_t ol = strnlen(old, sizeof(old));
    if (ol > cap - hl) ol = cap - hl;
    memcpy(eb->msg + hl, old, ol);
    eb->msg[hl + ol] = 0;
}
