/* hub_http.c - the hub's HTTP side over libcurl: JSON GETs and resumable, verified file downloads.
 *
 * DESIGN: a download appends to FILE.part as bytes arrive (so an interrupted transfer keeps what it got) and feeds
 * the same bytes to a running sha256. A resumed transfer first re-hashes the .part file, then asks for the rest with
 * Range; a server that ignores Range (200 instead of 206) restarts the file from zero. HF_TOKEN goes out as
 * Authorization: Bearer; libcurl does not send that header on to another host after a redirect, so the token never
 * reaches the storage the hub redirects large files to. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "hub_impl.h"
#include "log.h"

err hub__url_encode(const char *s, int keep_slash, char *out, size_t cap, errbuf *eb) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    strchr("-_.~", *p) || (keep_slash && *p == '/');
        if (o + (plain ? 1 : 3) >= cap) return errbuf_set(eb, ERR_INVALID, "URL for '%.100s' is too long", s);
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = 0;
    return ERR_OK;
}

/* Keeps the status of the latest response (redirects included) and the hub's explanatory headers. */
static size_t on_header(char *p, size_t sz, size_t nm, void *ud) {
    hub__resp *r = ud;
    size_t n = sz * nm;
    char line[256];
    size_t k = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
    memcpy(line, p, k);
    line[k] = 0;
    while (k && (line[k - 1] == '\r' || line[k - 1] == '\n')) line[--k] = 0;
    long status;
    if (!strncmp(line, "HTTP/", 5) && sscanf(line, "HTTP/%*s %ld", &status) == 1) {
        r->status = status;
        r->error_code[0] = r->content_range[0] = 0;
        return n;
    }
    char *colon = strchr(line, ':');
    if (!colon) return n;
    *colon = 0;
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (!strcasecmp(line, "X-Error-Code")) snprintf(r->error_code, sizeof(r->error_code), "%s", v);
    else if (!strcasecmp(line, "Content-Range")) snprintf(r->content_range, sizeof(r->content_range), "%s", v);
    else if (!strcasecmp(line, "X-Linked-Etag")) {
        if (*v == 'W' && v[1] == '/') v += 2;
        if (*v == '"') v++;
        snprintf(r->linked_etag, sizeof(r->linked_etag), "%s", v);
        char *q = strchr(r->linked_etag, '"');
        if (q) *q = 0;
    }
    return n;
}

static struct curl_slist *auth_headers(const hub__ctx *cx) {
    struct curl_slist *h = NULL;
    if (cx->env->token) {
        char line[8192];
        if (snprintf(line, sizeof(line), "Authorization: Bearer %s", cx->env->token) < (int)sizeof(line))
            h = curl_slist_append(h, line);
    }
    return h;
}

static CURL *easy_new(const hub__ctx *cx, const char *url, struct curl_slist *hdrs, hub__resp *r, char *cerr) {
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L); /* large files live behind a redirect to storage */
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    /* a stalled connection (no byte for a minute) is an interruption to retry, not a hang */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "suggestd-pull");
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    (void)cx;
    return c;
}

static int transient(CURLcode rc) {
    return rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR || rc == CURLE_GOT_NOTHING ||
           rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM;
}

static err curl_error(const hub__ctx *cx, const char *url, CURLcode rc, const char *cerr, errbuf *eb) {
    const char *why = *cerr ? cerr : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return errbuf_set(eb, ERR_IO, "cannot resolve the hub's host for %s (offline? wrong HF_ENDPOINT?): %s",
                          cx->env->endpoint, why);
    case CURLE_COULDNT_CONNECT:
        return errbuf_set(eb, ERR_IO, "cannot connect to the hub at %s (offline? wrong HF_ENDPOINT?): %s",
                          cx->env->endpoint, why);
    case CURLE_OPERATION_TIMEDOUT: return errbuf_set(eb, ERR_TIMEOUT, "timed out talking to %s: %s", url, why);
    default: return errbuf_set(eb, ERR_IO, "%s: %s", url, why);
    }
}

/* The hub's status codes as one line each. It answers 401 both for gated/private repositories and for unknown ones
 * when no token is sent, telling them apart with X-Error-Code. */
static err status_error(const hub__ctx *cx, const hub__resp *r, const char *file, errbuf *eb) {
    const char *code = r->error_code;
    if (!strcmp(code, "RepoNotFound"))
        return errbuf_set(eb, ERR_INVALID, "model %s not found on %s (HTTP %ld; if it is private, set HF_TOKEN)",
                          cx->repo, cx->env->endpoint, r->status);
    if (!strcmp(code, "RevisionNotFound"))
        return errbuf_set(eb, ERR_INVALID, "revision '%s' not found in %s (HTTP %ld)", cx->rev, cx->repo, r->status);
    if (!strcmp(code, "EntryNotFound") && file)
        return errbuf_set(eb, ERR_INVALID, "%s is listed but the hub has no file %s at %s (HTTP %ld)", cx->repo, file,
                          cx->rev, r->status);
    switch (r->status) {
    case 401:
        return errbuf_set(eb, ERR_UNAUTHORIZED, cx->env->token
                              ? "%s: HF_TOKEN was refused (HTTP 401); check the token"
                              : "%s needs a Hugging Face token (HTTP 401: gated or private model); set HF_TOKEN",
                          cx->repo);
    case 403:
        return errbuf_set(eb, ERR_UNAUTHORIZED, "%s: access denied (HTTP 403%s%s); gated models need their terms "
                                                "accepted on the hub by the token's account", cx->repo,
                          *code ? ", " : "", code);
    case 404:
        return file ? errbuf_set(eb, ERR_INVALID, "%s: file %s not found at revision %s (HTTP 404)", cx->repo, file, cx->rev)
                    : errbuf_set(eb, ERR_INVALID, "model %s (revision %s) not found on %s (HTTP 404)", cx->repo, cx->rev,
                                 cx->env->endpoint);
    default:
        return errbuf_set(eb, ERR_UPSTREAM, "%s: the hub answered HTTP %ld%s%s%s%s", cx->repo, r->status,
                          file ? " for " : "", file ? file : "", *code ? ", " : "", code);
    }
}

static size_t on_body(char *p, size_t sz, size_t nm, void *ud) {
    return xbuf_append(ud, p, sz * nm) == 0 ? sz * nm : 0;
}

err hub__get(const hub__ctx *cx, const char *url, size_t max, char **body, size_t *len, errbuf *eb) {
    *body = NULL;
    *len = 0;
    hub__resp r = {0};
    char cerr[CURL_ERROR_SIZE] = {0};
    struct curl_slist *h = auth_headers(cx);
    h = curl_slist_append(h, "Accept: application/json");
    CURL *c = easy_new(cx, url, h, &r, cerr);
    if (!c) {
        curl_slist_free_all(h);
        return errbuf_set(eb, ERR_NOMEM, "cannot create a libcurl handle");
    }
    xbuf b = {.max = max};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    CURLcode rc = curl_easy_perform(c);
    err e = ERR_OK;
    if (b.too_big) e = errbuf_set(eb, ERR_FORMAT, "%s: answer larger than %zu bytes", url, max);
    else if (rc != CURLE_OK) e = curl_error(cx, url, rc, cerr, eb);
    else if (r.status < 200 || r.status >= 300) e = status_error(cx, &r, NULL, eb);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (e != ERR_OK) {
        xfree(b.p);
        return e;
    }
    if (!b.p) b.p = xstrdup("");
    *body = b.p;
    *len = b.len;
    return b.p ? ERR_OK : errbuf_set(eb, ERR_NOMEM, "out of memory");
}

/* ---- downloads ------------------------------------------------------------------------------------------------ */

typedef struct dl {
    const hub__dl *d;
    hub__resp r;
    int fd;
    EVP_MD_CTX *md;
    int64_t have, resumed_from;
    int checked; /* the current response's first body bytes were looked at */
    err werr;
    errbuf *eb;
    uint64_t t0;
    uint64_t last_report;
} dl;

static void report(dl *s, int state) {
    if (!s->d->progress) return;
    hub_progress p = {.file = s->d->file, .index = s->d->index, .count = s->d->count, .done = s->have,
                      .total = s->d->expect, .resumed_from = s->resumed_from,
                      .elapsed_s = (double)(clock_ns() - s->t0) / 1e9, .state = state};
    s->d->progress(s->d->progress_ud, &p);
}

static err restart_file(dl *s) {
    if (ftruncate(s->fd, 0) != 0)
        return errbuf_set(s->eb, ERR_IO, "truncating %s: %s", s->d->part_path, strerror(errno));
    EVP_DigestInit_ex(s->md, EVP_sha256(), NULL);
    s->have = s->resumed_from = 0;
    return ERR_OK;
}

/* The first bytes of a response decide whether they continue the .part file or replace it. */
static err check_resume(dl *s) {
    if (s->have == 0) return ERR_OK;
    if (s->r.status == 200) {
        LOG_INFO("%s: the server ignored the Range request; downloading from the start", s->d->file);
        return restart_file(s);
    }
    char want[64];
    snprintf(want, sizeof(want), "bytes %lld-", (long long)s->have);
    if (strncmp(s->r.content_range, want, strlen(want)))
        return errbuf_set(s->eb, ERR_FORMAT, "%s: asked for bytes from %lld, the server sent '%s'", s->d->file,
                          (long long)s->have, s->r.content_range);
    return ERR_OK;
}

static size_t on_file_data(char *p, size_t sz, size_t nm, void *ud) {
    dl *s = ud;
    size_t n = sz * nm;
    if (s->r.status < 200 || s->r.status >= 300) return n; /* an error page: the status says it all */
    if (!s->checked) {
        s->checked = 1;
        if ((s->werr = check_resume(s)) != ERR_OK) return 0;
    }
    if (s->d->expect >= 0 && s->have + (int64_t)n > s->d->expect) {
        s->werr = errbuf_set(s->eb, ERR_FORMAT, "%s: the hub sent more than the listed %lld bytes", s->d->file,
                             (long long)s->d->expect);
        return 0;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(s->fd, p + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            s->werr = errbuf_set(s->eb, ERR_IO, "writing %s: %s", s->d->part_path, strerror(errno));
            return 0;
        }
        off += (size_t)w;
    }
    EVP_DigestUpdate(s->md, p, n);
    s->have += (int64_t)n;
    return n;
}

static int on_xfer(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    dl *s = ud;
    uint64_t now = clock_ns();
    if (now - s->last_report >= 100000000ull) { /* 10 updates a second are plenty for a bar */
        s->last_report = now;
        report(s, HUB_PROGRESS_DATA);
    }
    return 0;
}

/* Feeds what the .part file already holds to the hash, so the final digest covers the whole file. */
static err hash_existing(dl *s) {
    int rfd = open(s->d->part_path, O_RDONLY | O_CLOEXEC);
    if (rfd < 0) return errbuf_set(s->eb, ERR_IO, "reading %s: %s", s->d->part_path, strerror(errno));
    char *buf = xmalloc(1 << 20);
    err e = buf ? ERR_OK : errbuf_set(s->eb, ERR_NOMEM, "out of memory");
    int64_t left = s->have;
    while (e == ERR_OK && left > 0) {
        ssize_t r = read(rfd, buf, left < (1 << 20) ? (size_t)left : (size_t)(1 << 20));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) e = errbuf_set(s->eb, ERR_IO, "reading %s: %s", s->d->part_path, r ? strerror(errno) : "short");
        else {
            EVP_DigestUpdate(s->md, buf, (size_t)r);
            left -= r;
        }
    }
    xfree(buf);
    close(rfd);
    return e;
}

/* One HTTP attempt from s->have on. *retry says the failure was an interruption worth another attempt. */
static err attempt(const hub__ctx *cx, dl *s, int *retry) {
    *retry = 0;
    char cerr[CURL_ERROR_SIZE] = {0};
    struct curl_slist *h = auth_headers(cx);
    h = curl_slist_append(h, "Accept-Encoding: identity");
    char etag_keep[sizeof(s->r.linked_etag)];
    snprintf(etag_keep, sizeof(etag_keep), "%s", s->r.linked_etag);
    memset(&s->r, 0, sizeof(s->r));
    snprintf(s->r.linked_etag, sizeof(s->r.linked_etag), "%s", etag_keep);
    CURL *c = easy_new(cx, s->d->url, h, &s->r, cerr);
    if (!c) {
        curl_slist_free_all(h);
        return errbuf_set(s->eb, ERR_NOMEM, "cannot create a libcurl handle");
    }
    char range[64];
    snprintf(range, sizeof(range), "%lld-", (long long)s->have);
    if (s->have > 0) curl_easy_setopt(c, CURLOPT_RANGE, range);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_file_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    s->checked = 0;
    s->werr = ERR_OK;
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (s->werr != ERR_OK) return s->werr;
    if (rc == CURLE_OK && s->r.status == 416 && s->have > 0) {
        LOG_INFO("%s: the server refused to resume at byte %lld; downloading from the start", s->d->file,
                 (long long)s->have);
        *retry = 1;
        err e = restart_file(s);
        return e != ERR_OK ? e : errbuf_set(s->eb, ERR_IO, "%s: resume refused (HTTP 416)", s->d->file);
    }
    if (rc == CURLE_OK && (s->r.status < 200 || s->r.status >= 300)) return status_error(cx, &s->r, s->d->file, s->eb);
    if (rc == CURLE_OK && s->d->expect >= 0 && s->have < s->d->expect) {
        *retry = 1;
        return errbuf_set(s->eb, ERR_IO, "%s: the transfer ended at %lld of %lld bytes", s->d->file,
                          (long long)s->have, (long long)s->d->expect);
    }
    if (rc != CURLE_OK) {
        *retry = transient(rc);
        return curl_error(cx, s->d->url, rc, cerr, s->eb);
    }
    return ERR_OK;
}

static err verify(dl *s) {
    const hub__dl *d = s->d;
    if (d->expect >= 0 && s->have != d->expect)
        return errbuf_set(s->eb, ERR_FORMAT, "%s: size mismatch: %lld bytes, the listing says %lld", d->file,
                          (long long)s->have, (long long)d->expect);
    const char *want = *d->sha256 ? d->sha256 : strlen(s->r.linked_etag) == 64 ? s->r.linked_etag : NULL;
    if (!want) return ERR_OK; /* a small git file: its size is what the listing gives to check */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(s->md, md, &mdlen);
    char got[65];
    for (unsigned i = 0; i < 32 && i < mdlen; i++) snprintf(got + 2 * i, 3, "%02x", md[i]);
    if (strcasecmp(got, want))
        return errbuf_set(s->eb, ERR_FORMAT, "%s: sha256 mismatch (expected %s, got %s); the download was deleted",
                          d->file, want, got);
    return ERR_OK;
}

static err open_part(dl *s) {
    s->fd = open(s->d->part_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (s->fd < 0) return errbuf_set(s->eb, ERR_IO, "creating %s: %s", s->d->part_path, strerror(errno));
    struct stat st;
    if (fstat(s->fd, &st) != 0) return errbuf_set(s->eb, ERR_IO, "%s: %s", s->d->part_path, strerror(errno));
    s->have = st.st_size;
    if (s->d->expect >= 0 && s->have > s->d->expect) return restart_file(s); /* not a prefix of this file */
    s->resumed_from = s->have;
    return s->have ? hash_existing(s) : ERR_OK;
}

static err download_into(const hub__ctx *cx, dl *s) {
    err e = open_part(s);
    if (e != ERR_OK) return e;
    if (s->have) LOG_DEBUG("%s: resuming at byte %lld", s->d->file, (long long)s->have);
    report(s, HUB_PROGRESS_START);
    for (int n = 0;; n++) {
        if (s->d->expect >= 0 && s->have == s->d->expect && s->have > 0) break; /* the .part holds it all */
        int retry;
        e = attempt(cx, s, &retry);
        if (e == ERR_OK) break;
        if (!retry || n >= s->d->retries) {
            if (retry && s->have > 0)
                errbuf_prefix(s->eb, "interrupted (%lld bytes kept; run the pull again to resume): ", (long long)s->have);
            return e;
        }
        LOG_WARN("%s; retrying from byte %lld (%d of %d)", s->eb->msg, (long long)s->have, n + 1, s->d->retries);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 250000000L * (n < 3 ? n + 1 : 4)};
        nanosleep(&ts, NULL);
    }
    e = verify(s);
    if (e != ERR_OK) return e;
    if (fsync(s->fd) != 0) return errbuf_set(s->eb, ERR_IO, "syncing %s: %s", s->d->part_path, strerror(errno));
    report(s, HUB_PROGRESS_DONE);
    return ERR_OK;
}

err hub__download(const hub__ctx *cx, const hub__dl *d, errbuf *eb) {
    dl s = {.d = d, .fd = -1, .eb = eb, .t0 = clock_ns()};
    s.md = EVP_MD_CTX_new();
    if (!s.md) return errbuf_set(eb, ERR_NOMEM, "cannot create a sha256 context");
    EVP_DigestInit_ex(s.md, EVP_sha256(), NULL);
    err e = download_into(cx, &s);
    if (s.fd >= 0) close(s.fd);
    EVP_MD_CTX_free(s.md);
    if (e == ERR_FORMAT) unlink(d->part_path); /* wrong bytes are never worth resuming */
    return e;
}
