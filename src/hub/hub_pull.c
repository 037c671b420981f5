/* hub_pull.c - one model from the hub into SUGGESTD_MODELS_DIR/ORG/NAME, never looking complete before it is.
 *
 * DESIGN: everything lands in ORG/.NAME.partial first (each file as FILE.part until verified, then renamed to FILE);
 * the marker HUB_MARKER is written last and the staging directory is renamed to ORG/NAME. So at any moment ORG/NAME
 * is either absent or complete, and an interrupted pull resumes from the staging directory. The staging directory
 * remembers which ORG/NAME@REV it holds (.suggestd-pull) so a pull of another revision does not reuse its files.
 * A lock file (ORG/.NAME.lock, flock) keeps two pulls of one model (two replicas starting at once) apart. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "hub_impl.h"
#include "log.h"

#define PATH_CAP 4096
#define PULL_IDENT ".suggestd-pull"

/* snprintf into a path buffer; a path that does not fit is an error, never a truncated name. */
__attribute__((format(printf, 4, 5))) static err pathf(char *out, size_t cap, errbuf *eb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < cap ? ERR_OK : errbuf_set(eb, ERR_INVALID, "path too long: %.200s...", out);
}

static err mkdirs(const char *path, errbuf *eb) {
    char p[PATH_CAP];
    if (snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p)) return errbuf_set(eb, ERR_INVALID, "path too long");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return errbuf_set(eb, ERR_IO, "creating %s: %s", p, strerror(errno));
        if (!c) return ERR_OK;
        *s = c;
    }
}

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *f) {
    (void)st, (void)f;
    return type == FTW_DP ? rmdir(p) : unlink(p);
}

static void rmtree(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static int read_small(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = 0;
    return 0;
}

int hub_model_complete(const char *dir, char *rev, size_t rev_cap) {
    char p[PATH_CAP];
    if (snprintf(p, sizeof(p), "%s/%s", dir, HUB_MARKER) >= (int)sizeof(p)) return 0;
    json_t *m = json_load_file(p, 0, NULL);
    const char *r = json_string_value(json_object_get(m, "revision"));
    int ok = r && json_is_array(json_object_get(m, "files"));
    if (ok && rev) snprintf(rev, rev_cap, "%s", r);
    json_decref(m);
    return ok;
}

static err fsync_path(const char *path, errbuf *eb) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errbuf_set(eb, ERR_IO, "opening %s: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? ERR_OK : errbuf_set(eb, ERR_IO, "syncing %s: %s", path, strerror(errno));
}

/* The marker lists what was verified, so `suggestd models` and a later pull can tell what is there. */
static err write_marker(const char *staging, const hub_ref *r, const hub_listing *l, const size_t *idx, size_t n,
                        errbuf *eb) {
    json_t *files = json_array();
    for (size_t i = 0; i < n; i++) {
        const hub_file *f = &l->files[idx[i]];
        json_array_append_new(files, json_pack("{s:s, s:I, s:s?}", "path", f->path, "size", (json_int_t)f->size,
                                               "sha256", *f->sha256 ? f->sha256 : NULL));
    }
    char repo[2 * HUB_NAME_MAX + 2];
    snprintf(repo, sizeof(repo), "%s/%s", r->org, r->name);
    json_t *m = json_pack("{s:s, s:s, s:o}", "repo", repo, "revision", r->rev, "files", files);
    char tmp[PATH_CAP], fin[PATH_CAP];
    err e = pathf(tmp, sizeof(tmp), eb, "%s/%s.tmp", staging, HUB_MARKER);
    if (e == ERR_OK) e = pathf(fin, sizeof(fin), eb, "%s/%s", staging, HUB_MARKER);
    if (e != ERR_OK) {
        json_decref(m);
        return e;
    }
    int rc = m ? json_dump_file(m, tmp, JSON_INDENT(2)) : -1;
    json_decref(m);
    if (rc != 0) return errbuf_set(eb, ERR_IO, "writing %s failed", tmp);
    e = fsync_path(tmp, eb);
    if (e == ERR_OK && rename(tmp, fin) != 0) e = errbuf_set(eb, ERR_IO, "renaming %s: %s", tmp, strerror(errno));
    return e;
}

/* A staging directory left by a pull of another revision holds files that must not be mistaken for these. */
static err prepare_staging(const char *staging, const hub_ref *r, errbuf *eb) {
    char ident_path[PATH_CAP], want[512], have[512];
    snprintf(want, sizeof(want), "%s/%s@%s\n", r->org, r->name, r->rev);
    err e = pathf(ident_path, sizeof(ident_path), eb, "%s/%s", staging, PULL_IDENT);
    if (e != ERR_OK) return e;
    struct stat st;
    if (stat(staging, &st) == 0 && (read_small(ident_path, have, sizeof(have)) != 0 || strcmp(have, want))) {
        LOG_INFO("discarding an earlier partial download of another revision in %s", staging);
        rmtree(staging);
    }
    e = mkdirs(staging, eb);
    if (e != ERR_OK) return e;
    FILE *f = fopen(ident_path, "w");
    if (!f || fputs(want, f) < 0 || fclose(f) != 0) return errbuf_set(eb, ERR_IO, "writing %s", ident_path);
    return ERR_OK;
}

static err fetch_listing(const hub__ctx *cx, const hub_ref *r, hub_listing *l, errbuf *eb) {
    char rev_enc[3 * HUB_REV_MAX + 1], url[PATH_CAP];
    err e = hub__url_encode(r->rev, 0, rev_enc, sizeof(rev_enc), eb);
    if (e != ERR_OK) return e;
    snprintf(url, sizeof(url), "%s/api/models/%s/%s/tree/%s", cx->env->endpoint, r->org, r->name, rev_enc);
    char *body;
    size_t len;
    e = hub__get(cx, url, 32u << 20, &body, &len, eb);
    if (e != ERR_OK) return e;
    e = hub_listing_parse(body, len, l, eb);
    xfree(body);
    return e;
}

static err fetch_file(const hub__ctx *cx, const hub_pull_opts *o, const hub_ref *r, const char *staging,
                      const hub_file *f, size_t i, size_t n, errbuf *eb) {
    char fin[PATH_CAP], part[PATH_CAP], url[PATH_CAP], rev_enc[3 * HUB_REV_MAX + 1], path_enc[3200];
    if (snprintf(fin, sizeof(fin), "%s/%s", staging, f->path) >= (int)sizeof(fin) ||
        snprintf(part, sizeof(part), "%s.part", fin) >= (int)sizeof(part))
        return errbuf_set(eb, ERR_INVALID, "path for %s is too long", f->path);
    struct stat st;
    if (stat(fin, &st) == 0 && (f->size < 0 || st.st_size == f->size)) { /* verified by an earlier pull */
        if (o->progress) {
            hub_progress p = {f->path, i, n, st.st_size, f->size, st.st_size, 0, HUB_PROGRESS_DONE};
            o->progress(o->progress_ud, &p);
        }
        return ERR_OK;
    }
    err e = hub__url_encode(r->rev, 0, rev_enc, sizeof(rev_enc), eb);
    if (e == ERR_OK) e = hub__url_encode(f->path, 1, path_enc, sizeof(path_enc), eb);
    if (e != ERR_OK) return e;
    if (snprintf(url, sizeof(url), "%s/%s/%s/resolve/%s/%s", cx->env->endpoint, r->org, r->name, rev_enc, path_enc) >=
        (int)sizeof(url))
        return errbuf_set(eb, ERR_INVALID, "URL for %s is too long", f->path);
    hub__dl d = {.url = url, .file = f->path, .part_path = part, .expect = f->size, .sha256 = f->sha256,
                 .retries = o->retries, .index = i, .count = n, .progress = o->progress,
                 .progress_ud = o->progress_ud};
    e = hub__download(cx, &d, eb);
    if (e == ERR_OK && rename(part, fin) != 0) e = errbuf_set(eb, ERR_IO, "renaming %s: %s", part, strerror(errno));
    return e;
}

/* Swaps the verified staging directory into place; an older complete pull (another revision) is replaced. */
static err install(const char *staging, const char *dir, const char *parent, errbuf *eb) {
    struct stat st;
    char old[PATH_CAP];
    old[0] = 0;
    if (stat(dir, &st) == 0) {
        if (!hub_model_complete(dir, NULL, 0))
            return errbuf_set(eb, ERR_IO, "%s exists but is not a complete pull (no %s); move it away first", dir,
                              HUB_MARKER);
        err e = pathf(old, sizeof(old), eb, "%s.old.%ld", staging, (long)getpid());
        if (e != ERR_OK) return e;
        if (rename(dir, old) != 0) return errbuf_set(eb, ERR_IO, "moving %s aside: %s", dir, strerror(errno));
    }
    if (rename(staging, dir) != 0) return errbuf_set(eb, ERR_IO, "renaming %s to %s: %s", staging, dir, strerror(errno));
    if (*old) rmtree(old);
    return fsync_path(parent, eb);
}

/* Downloads the selected files into the staging directory and swaps it into place; runs under the model's lock. */
static err pull_files(const hub__ctx *cx, const hub_ref *r, const hub_pull_opts *o, const hub_listing *l,
                      const size_t *idx, size_t n, const char *dir, const char *parent, errbuf *eb) {
    char staging[PATH_CAP];
    err e = pathf(staging, sizeof(staging), eb, "%s/.%s.partial", parent, r->name);
    if (e == ERR_OK) e = prepare_staging(staging, r, eb);
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) total += l->files[idx[i]].size > 0 ? l->files[idx[i]].size : 0;
    if (e == ERR_OK) LOG_INFO("pulling %s@%s: %zu files, %.1f MB into %s", cx->repo, r->rev, n, (double)total / 1e6, dir);
    for (size_t i = 0; e == ERR_OK && i < n; i++) e = fetch_file(cx, o, r, staging, &l->files[idx[i]], i, n, eb);
    if (e == ERR_OK) e = write_marker(staging, r, l, idx, n, eb);
    if (e == ERR_OK) e = install(staging, dir, parent, eb);
    return e;
}

static int have_complete(const char *dir, const hub_ref *r) {
    char rev[HUB_REV_MAX + 1];
    return hub_model_complete(dir, rev, sizeof(rev)) && (!r->has_rev || !strcmp(rev, r->rev));
}

/* Takes the model's lock (waiting for another pull of it); -1 with eb set on failure. */
static int lock_model(const char *parent, const hub_ref *r, errbuf *eb) {
    char lock_path[PATH_CAP];
    if (mkdirs(parent, eb) != ERR_OK || pathf(lock_path, sizeof(lock_path), eb, "%s/.%s.lock", parent, r->name) != ERR_OK)
        return -1;
    int lk = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lk < 0) {
        errbuf_set(eb, ERR_IO, "creating %s: %s", lock_path, strerror(errno));
        return -1;
    }
    if (flock(lk, LOCK_EX | LOCK_NB) != 0) {
        LOG_INFO("another pull of %s/%s is running; waiting for it", r->org, r->name);
        flock(lk, LOCK_EX);
    }
    return lk;
}

/* Listing and selection come first, so a missing, gated or hostile repository leaves nothing on disk. */
static err pull(const hub__ctx *cx, const hub_ref *r, const hub_pull_opts *o, const char *dir, int *already,
                errbuf *eb) {
    char parent[PATH_CAP];
    hub_listing l = {0};
    size_t n = 0, *idx = NULL;
    err e = fetch_listing(cx, r, &l, eb);
    if (e == ERR_OK && !(idx = xcalloc(l.n ? l.n : 1, sizeof(size_t)))) e = errbuf_set(eb, ERR_NOMEM, "out of memory");
    if (e == ERR_OK && (e = hub_listing_select(&l, idx, &n, eb)) != ERR_OK) errbuf_prefix(eb, "%s@%s: ", cx->repo, r->rev);
    if (e == ERR_OK) e = pathf(parent, sizeof(parent), eb, "%s/%s", o->env->models_dir, r->org);
    int lk = e == ERR_OK ? lock_model(parent, r, eb) : -1;
    if (lk < 0 && e == ERR_OK) e = eb ? eb->code : ERR_IO;
    if (e == ERR_OK && have_complete(dir, r)) *already = 1; /* the pull we waited for did it */
    else if (e == ERR_OK) e = pull_files(cx, r, o, &l, idx, n, dir, parent, eb);
    if (lk >= 0) close(lk); /* releases the lock; the file stays (removing it would race a waiting pull) */
    xfree(idx);
    hub_listing_fini(&l);
    return e;
}

err hub_pull(const hub_ref *r, const hub_pull_opts *o, char *dir_out, size_t cap, int *already, errbuf *eb) {
    *already = 0;
    err e = hub_model_dir(o->env->models_dir, r, dir_out, cap, eb);
    if (e != ERR_OK) return e;
    if (have_complete(dir_out, r)) {
        *already = 1;
        return ERR_OK;
    }
    char repo[2 * HUB_NAME_MAX + 2];
    snprintf(repo, sizeof(repo), "%s/%s", r->org, r->name);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    hub__ctx cx = {.env = o->env, .repo = repo, .rev = r->rev};
    e = pull(&cx, r, o, dir_out, already, eb);
    curl_global_cleanup();
    return e;
}
