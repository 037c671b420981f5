/* load.c - [sched] load generator: editors typing through real source files, closed-loop throughput, and the cost
 * of a prompt extended by one keystroke (prefix reuse), against a running `suggestd serve` (POST /v1/completions).
 *
 *   load editors    [options]   simulated IDEs: debounced, superseded, single- and multi-line completions
 *   load throughput [options]   C closed-loop clients with fixed-size requests: requests/s, tokens/s
 *   load prefix     [options]   TTFT of a long prompt, then of the same prompt plus a few characters
 *   load --help                 every option, its default and the modes it applies to
 *
 * Output: human-readable lines, then one `RESULT name=value` line per figure for scripts (bench/load.sh).
 *
 * DESIGN. One thread drives every simulated client through libcurl's multi interface. The editors mode is a
 * simulation with timers (keystrokes, debounce) that must abort its own in-flight request at the next keystroke;
 * in one event loop that is a plain function call (curl_multi_remove_handle closes the connection, the server sees
 * the socket close within 50 ms and cancels the request), where a thread per editor would need cross-thread
 * aborts and locks around shared statistics. It also keeps the client cheap: on the 2-core dev box the server
 * needs the cores, and 16 busy client threads would distort exactly the latencies being measured. All times come
 * from one monotonic clock (clock_ns) taken in the loop; the loop wakes for the earliest timer or socket event, so
 * a timestamp is late by at most the time to process other ready transfers (microseconds here).
 *
 * Every request streams (stream: true) so that time to first token can be measured: TTFT is the arrival of the
 * first SSE event whose text is not empty (or of the first event at all when none has text, e.g. a single-line
 * completion that stops at once); latency is the arrival of `data: [DONE]`. The server sends its headers only after
 * the first token, so TTFT includes queueing and prefill. Token counts and the prefix-cache hit count come from the
 * final event's `usage` (`prompt_tokens_details.cached_tokens` when the server sends it); the same figures are
 * also read from GET /metrics before and after the run, when the server exports them. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "rng.h"

/* ---- configuration: one table drives parsing and --help ------------------------------------------------------ */

typedef struct config {
    const char *url, *src, *ext, *api_key, *truncate;
    double seconds, cps, warmup;
    long seed;
    /* editors */
    long editors, line_pause_ms, debounce_ms, max_prompt_chars, multi_pct, single_tokens, multi_tokens;
    /* throughput */
    long clients, prompt_tokens, max_tokens, requests;
    /* prefix */
    long prefix_tokens, extend_chars, repeats;
} config;

static config cfg = {
    .url = "http://127.0.0.1:5000", .src = "src", .ext = ".c,.h", .truncate = "jump",
    .seconds = 20, .cps = 8, .warmup = 1, .seed = 1,
    .editors = 8, .line_pause_ms = 400, .debounce_ms = 100, .max_prompt_chars = 3000, .multi_pct = 20,
    .single_tokens = 16, .multi_tokens = 64,
    .clients = 16, .prompt_tokens = 128, .max_tokens = 32, .requests = 0,
    .prefix_tokens = 1000, .extend_chars = 4, .repeats = 5,
};

typedef enum opt_type { OPT_LONG, OPT_DOUBLE, OPT_STRING } opt_type;

typedef struct opt {
    const char *name;
    opt_type type;
    void *ptr;
    double min, max;
    const char *modes; /* for --help only: options of other modes are accepted and ignored, so one command line
                          (bench/load.sh's) can serve every mode */
    const char *help;
} opt;

static const opt opts[] = {
    {"url", OPT_STRING, &cfg.url, 0, 0, "all", "server base URL"},
    {"api-key", OPT_STRING, &cfg.api_key, 0, 0, "all", "sent as Authorization: Bearer KEY (default: none)"},
    {"seconds", OPT_DOUBLE, &cfg.seconds, 0.1, 86400, "editors, throughput", "how long to run"},
    {"seed", OPT_LONG, &cfg.seed, 0, 1e15, "all", "random seed (files, offsets, typing, request kinds)"},
    {"src", OPT_STRING, &cfg.src, 0, 0, "all", "directory of source files to type and to build prompts from"},
    {"ext", OPT_STRING, &cfg.ext, 0, 0, "all", "comma-separated file name endings to use"},
    {"warmup", OPT_DOUBLE, &cfg.warmup, 0, 1000, "all", "warm-up requests before measuring (page in the model)"},
    {"editors", OPT_LONG, &cfg.editors, 1, 10000, "editors", "simulated editors"},
    {"cps", OPT_DOUBLE, &cfg.cps, 0.1, 1000, "editors", "typing speed, characters per second (mean)"},
    {"line-pause-ms", OPT_LONG, &cfg.line_pause_ms, 0, 600000, "editors", "extra pause after a line end (mean)"},
    {"debounce-ms", OPT_LONG, &cfg.debounce_ms, 0, 600000, "editors", "quiet time after a keystroke before asking"},
    {"max-prompt-chars", OPT_LONG, &cfg.max_prompt_chars, 16, 10000000, "editors",
     "prompt = text above the cursor, cut from the left to at most this"},
    {"truncate", OPT_STRING, &cfg.truncate, 0, 0, "editors",
     "jump: the window's start moves by half a window at a line start when it must (prefix stays put); "
     "slide: cut every prompt to exactly the last max-prompt-chars (defeats any prefix cache)"},
    {"multi-pct", OPT_LONG, &cfg.multi_pct, 0, 100, "editors", "percent of requests that are multi-line"},
    {"single-tokens", OPT_LONG, &cfg.single_tokens, 1, 1 << 20, "editors", "max_tokens of a single-line request"},
    {"multi-tokens", OPT_LONG, &cfg.multi_tokens, 1, 1 << 20, "editors", "max_tokens of a multi-line request"},
    {"clients", OPT_LONG, &cfg.clients, 1, 10000, "throughput", "concurrent closed-loop clients"},
    {"prompt-tokens", OPT_LONG, &cfg.prompt_tokens, 1, 1 << 20, "throughput", "prompt length (approximate)"},
    {"max-tokens", OPT_LONG, &cfg.max_tokens, 1, 1 << 20, "throughput", "max_tokens of each request"},
    {"requests", OPT_LONG, &cfg.requests, 0, 1e9, "throughput", "stop after this many requests (0: --seconds)"},
    {"prefix-tokens", OPT_LONG, &cfg.prefix_tokens, 1, 1 << 20, "prefix", "long prompt length (approximate)"},
    {"extend-chars", OPT_LONG, &cfg.extend_chars, 1, 1 << 20, "prefix", "characters the second prompt adds"},
    {"repeats", OPT_LONG, &cfg.repeats, 1, 10000, "prefix", "pairs of requests (different text each)"},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static void usage(FILE *f) {
    fprintf(f, "usage: load editors|throughput|prefix [--option value ...]\n\noptions (default):\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt *o = &opts[i];
        char def[64];
        if (o->type == OPT_LONG) snprintf(def, sizeof(def), "%ld", *(long *)o->ptr);
        else if (o->type == OPT_DOUBLE) snprintf(def, sizeof(def), "%g", *(double *)o->ptr);
        else snprintf(def, sizeof(def), "%s", *(const char **)o->ptr ? *(const char **)o->ptr : "-");
        fprintf(f, "  --%-17s %-22s [%s] %s\n", o->name, def, o->modes, o->help);
    }
}

/* Bad input is a message naming the option and exit status 2, before anything is sent. */
static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "load: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(load --help lists the options)\n");
    exit(2);
}

static void parse_args(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2)) die_usage("unexpected argument '%s'", a);
        a += 2;
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const opt *o = NULL;
        for (size_t k = 0; k < N_OPTS; k++)
            if (strlen(opts[k].name) == nlen && !strncmp(opts[k].name, a, nlen)) o = &opts[k];
        if (!o) die_usage("unknown option '--%.*s'", (int)nlen, a);
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) die_usage("--%s needs a value", o->name);
        if (o->type == OPT_STRING) {
            *(const char **)o->ptr = v;
            continue;
        }
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(d))
            die_usage("--%s: '%s' is not a number", o->name, v);
        if (o->type == OPT_LONG && d != floor(d)) die_usage("--%s: '%s' is not an integer", o->name, v);
        if (d < o->min || d > o->max) die_usage("--%s: %s is outside [%g, %g]", o->name, v, o->min, o->max);
        if (o->type == OPT_LONG) *(long *)o->ptr = (long)d;
        else *(double *)o->ptr = d;
    }
    if (strcmp(cfg.truncate, "jump") && strcmp(cfg.truncate, "slide"))
        die_usage("--truncate: '%s' is neither jump nor slide", cfg.truncate);
    if (strncmp(cfg.url, "http://", 7) && strncmp(cfg.url, "https://", 8))
        die_usage("--url: '%s' does not start with http:// or https://", cfg.url);
    if (!*cfg.ext) die_usage("--ext is empty");
}

/* ---- small helpers ------------------------------------------------------------------------------------------- */

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "load: out of memory\n");
        exit(1);
    }
    return p;
}

static void *xrealloc_or_die(void *p, size_t size) {
    void *q = realloc(p, size ? size : 1);
    if (!q) {
        fprintf(stderr, "load: out of memory\n");
        exit(1);
    }
    return q;
}

typedef struct dvec {
    double *v;
    size_t n, cap;
} dvec;

static void dvec_push(dvec *d, double x) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->v = xrealloc_or_die(d->v, d->cap * sizeof(double));
    }
    d->v[d->n++] = x;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted vector (as bench/http_overhead.c); NAN when empty. */
static double pct(const dvec *d, double p) {
    if (!d->n) return NAN;
    size_t i = (size_t)(p / 100.0 * (double)(d->n - 1) + 0.5);
    return d->v[i];
}

static void dvec_sort(dvec *d) {
    if (d->n) qsort(d->v, d->n, sizeof(double), cmp_double);
}

/* One figure, machine-readable; NAN (nothing measured) is written "na" so scripts can tell it from 0. The lines
 * are kept and printed together at the end, after the human-readable report. */
static char *g_results;
static size_t g_results_len;

static void result(const char *name, double v) {
    char line[160];
    int n = isnan(v) ? snprintf(line, sizeof(line), "RESULT %s=na\n", name)
                     : snprintf(line, sizeof(line), "RESULT %s=%.6g\n", name, v);
    if (n < 0 || (size_t)n >= sizeof(line)) return;
    g_results = xrealloc_or_die(g_results, g_results_len + (size_t)n + 1);
    memcpy(g_results + g_results_len, line, (size_t)n + 1);
    g_results_len += (size_t)n;
}

static void results_flush(void) {
    if (g_results) fputs(g_results, stdout);
    free(g_results);
    g_results = NULL;
    g_results_len = 0;
}

static double seconds_since(uint64_t t0, uint64_t t1) { return (double)(t1 - t0) * 1e-9; }

/* ---- corpus: the source files, read once ---------------------------------------------------------------------- */

typedef struct src_file {
    char *path, *text;
    size_t len;
} src_file;

typedef struct corpus {
    src_file *f;
    size_t n, cap;
    char *all; /* every file joined, for prompts of a given length (throughput, prefix) */
    size_t all_len;
} corpus;

static int has_ext(const char *name) {
    size_t nl = strlen(name);
    const char *e = cfg.ext;
    while (*e) {
        size_t el = strcspn(e, ",");
        if (el && nl > el && !strncmp(name + nl - el, e, el)) return 1;
        e += el + (e[el] == ',');
    }
    return 0;
}

static void corpus_walk(corpus *c, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "load: cannot open directory %s: %s\n", dir, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        size_t plen = strlen(dir) + strlen(de->d_name) + 2;
        char *path = xcalloc(plen, 1);
        snprintf(path, plen, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st)) {
            free(path);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            corpus_walk(c, path);
            free(path);
            continue;
        }
        if (!S_ISREG(st.st_mode) || !has_ext(de->d_name) || st.st_size < 64 || st.st_size > (64 << 20)) {
            free(path);
            continue;
        }
        FILE *f = fopen(path, "rb");
        char *text = xcalloc((size_t)st.st_size + 1, 1);
        size_t got = f ? fread(text, 1, (size_t)st.st_size, f) : 0;
        if (f) fclose(f);
        /* prompts must be valid UTF-8 without NULs (the server answers 400 otherwise); skip files that are not */
        json_t *probe = got == (size_t)st.st_size ? json_stringn(text, got) : NULL;
        if (!probe || memchr(text, 0, got)) {
            fprintf(stderr, "load: skipping %s (unreadable, or not UTF-8 text)\n", path);
            json_decref(probe);
            free(text);
            free(path);
            continue;
        }
        json_decref(probe);
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 64;
            c->f = xrealloc_or_die(c->f, c->cap * sizeof(src_file));
        }
        c->f[c->n++] = (src_file){path, text, got};
    }
    closedir(d);
}

static int cmp_file(const void *a, const void *b) {
    return strcmp(((const src_file *)a)->path, ((const src_file *)b)->path);
}

static void corpus_load(corpus *c) {
    corpus_walk(c, cfg.src);
    if (!c->n) {
        fprintf(stderr, "load: no files ending in %s under %s (set --src and --ext)\n", cfg.ext, cfg.src);
        exit(2);
    }
    /* readdir's order is the file system's; sorted, the same seed picks the same files everywhere */
    qsort(c->f, c->n, sizeof(src_file), cmp_file);
    for (size_t i = 0; i < c->n; i++) c->all_len += c->f[i].len;
    c->all = xcalloc(c->all_len + 1, 1);
    size_t off = 0;
    for (size_t i = 0; i < c->n; i++) memcpy(c->all + off, c->f[i].text, c->f[i].len), off += c->f[i].len;
}

static void corpus_free(corpus *c) {
    for (size_t i = 0; i < c->n; i++) free(c->f[i].path), free(c->f[i].text);
    free(c->f);
    free(c->all);
}

static int utf8_cont(char ch) { return ((unsigned char)ch & 0xC0) == 0x80; }

/* len characters of the joined corpus from off, wrapping around, cut so that no UTF-8 character is split; the
 * caller frees. Used for prompts "N tokens long" (throughput, prefix). */
static char *corpus_slice(const corpus *c, size_t off, size_t len, size_t *out_len) {
    char *s = xcalloc(len + 8, 1);
    off %= c->all_len;
    while (utf8_cont(c->all[off])) off = (off + 1) % c->all_len;
    size_t n = 0;
    while (n < len) {
        size_t take = c->all_len - off < len - n ? c->all_len - off : len - n;
        memcpy(s + n, c->all + off, take);
        n += take;
        off = (off + take) % c->all_len;
    }
    while (n < len + 4 && utf8_cont(c->all[off])) s[n++] = c->all[off], off = (off + 1) % c->all_len;
    *out_len = n;
    return s;
}

/* ---- transfers: one streamed completion each ------------------------------------------------------------------ */

typedef enum xfer_state { XFER_RUNNING, XFER_OK, XFER_FAILED } xfer_state;

typedef struct xfer {
    CURL *h;
    char *body;
    uint64_t t_start, t_first_event, t_first_text, t_done;
    xfer_state state;
    int got_done_marker;
    long status;
    long prompt_tokens, completion_tokens, cached_tokens; /* from usage; -1 when absent */
    int n_events;
    char *buf; /* received bytes not yet split into lines; the whole body when the status is not 200 */
    size_t len, cap;
    char err[256];
    int kind;    /* the caller's: request class */
    void *owner; /* the caller's: who to tell */
} xfer;

static struct curl_slist *g_headers;
static char g_completions_url[1024], g_metrics_url[1024];

static void xfer_fail(xfer *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void xfer_fail(xfer *x, const char *fmt, ...) {
    if (x->state == XFER_FAILED) return;
    x->state = XFER_FAILED;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, sizeof(x->err), fmt, ap);
    va_end(ap);
}

/* One SSE line: `data: {...}` or `data: [DONE]`; everything else (blank separators) is ignored. */
static void xfer_sse_line(xfer *x, char *line, size_t n) {
    if (n && line[n - 1] == '\r') line[--n] = 0;
    if (n < 6 || strncmp(line, "data: ", 6)) return;
    const char *p = line + 6;
    uint64_t now = clock_ns();
    if (!strcmp(p, "[DONE]")) {
        x->got_done_marker = 1;
        x->t_done = now;
        return;
    }
    json_error_t je;
    json_t *ev = json_loadb(p, n - 6, 0, &je);
    if (!ev) return xfer_fail(x, "unparsable SSE event: %s", je.text);
    json_t *e = json_object_get(ev, "error");
    if (e) {
        const char *m = json_string_value(json_object_get(e, "message"));
        xfer_fail(x, "error event: %s", m ? m : "(no message)");
        json_decref(ev);
        return;
    }
    x->n_events++;
    if (!x->t_first_event) x->t_first_event = now;
    json_t *ch = json_array_get(json_object_get(ev, "choices"), 0);
    const char *text = json_string_value(json_object_get(ch, "text"));
    if (text && *text && !x->t_first_text) x->t_first_text = now;
    json_t *u = json_object_get(ev, "usage");
    if (json_is_object(u)) {
        json_t *v;
        if ((v = json_object_get(u, "prompt_tokens")) && json_is_integer(v)) x->prompt_tokens = (long)json_integer_value(v);
        if ((v = json_object_get(u, "completion_tokens")) && json_is_integer(v))
            x->completion_tokens = (long)json_integer_value(v);
        json_t *det = json_object_get(u, "prompt_tokens_details");
        if ((v = json_object_get(det, "cached_tokens")) && json_is_integer(v))
            x->cached_tokens = (long)json_integer_value(v);
    }
    json_decref(ev);
}

static size_t xfer_on_body(char *b, size_t size, size_t nmemb, void *ud) {
    xfer *x = ud;
    size_t n = size * nmemb;
    if (!x->status) curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->len + n + 1 > x->cap) {
        x->cap = (x->len + n + 1) * 2;
        x->buf = xrealloc_or_die(x->buf, x->cap);
    }
    memcpy(x->buf + x->len, b, n);
    x->len += n;
    x->buf[x->len] = 0;
    if (x->status != 200) return n; /* an error body: kept whole for the message */
    size_t start = 0;
    for (size_t i = 0; i < x->len; i++) {
        if (x->buf[i] != '\n') continue;
        x->buf[i] = 0;
        xfer_sse_line(x, x->buf + start, i - start);
        start = i + 1;
    }
    memmove(x->buf, x->buf + start, x->len - start);
    x->len -= start;
    x->buf[x->len] = 0;
    return n;
}

/* A new streamed completion; the body is taken over (freed with the transfer). */
static xfer *xfer_create(json_t *body, int kind, void *owner) {
    xfer *x = xcalloc(1, sizeof(*x));
    x->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!x->body) {
        fprintf(stderr, "load: cannot encode a request body\n");
        exit(1);
    }
    x->kind = kind;
    x->owner = owner;
    x->prompt_tokens = x->completion_tokens = x->cached_tokens = -1;
    x->h = curl_easy_init();
    if (!x->h) {
        fprintf(stderr, "load: curl_easy_init failed\n");
        exit(1);
    }
    curl_easy_setopt(x->h, CURLOPT_URL, g_completions_url);
    curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, g_headers);
    curl_easy_setopt(x->h, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, xfer_on_body);
    curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(x->h, CURLOPT_NOSIGNAL, 1L);
    return x;
}

static void xfer_destroy(xfer *x) {
    if (!x) return;
    curl_easy_cleanup(x->h);
    free(x->body);
    free(x->buf);
    free(x);
}

/* TTFT and latency in seconds. */
static double xfer_ttft(const xfer *x) {
    uint64_t t = x->t_first_text ? x->t_first_text : x->t_first_event;
    return t ? seconds_since(x->t_start, t) : NAN;
}
static double xfer_latency(const xfer *x) { return seconds_since(x->t_start, x->t_done); }

/* ---- the event loop ------------------------------------------------------------------------------------------- */

typedef void (*on_done_fn)(xfer *x, void *ud);

typedef struct loop {
    CURLM *m;
    int active;
} loop;

static void loop_init(loop *l) {
    l->m = curl_multi_init();
    if (!l->m) {
        fprintf(stderr, "load: curl_multi_init failed\n");
        exit(1);
    }
    l->active = 0;
}

static void loop_fini(loop *l) { curl_multi_cleanup(l->m); }

static void loop_start(loop *l, xfer *x) {
    x->t_start = clock_ns();
    curl_multi_add_handle(l->m, x->h);
    l->active++;
}

/* Stops a transfer wherever it is: removing a handle mid-transfer closes its connection, which the server takes
 * as a cancellation. The caller still owns x. */
static void loop_abort(loop *l, xfer *x) {
    curl_multi_remove_handle(l->m, x->h);
    l->active--;
}

/* Runs transfers for up to timeout_ms, calling on_done (which owns the xfer from then on) for each that ended. */
static void loop_run(loop *l, int timeout_ms, on_done_fn on_done, void *ud) {
    int still;
    curl_multi_perform(l->m, &still);
    if (timeout_ms > 0) {
        curl_multi_poll(l->m, NULL, 0, timeout_ms, NULL);
        curl_multi_perform(l->m, &still);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(l->m, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *h = msg->easy_handle;
        CURLcode rc = msg->data.result;
        xfer *x = NULL;
        curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&x);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
        curl_multi_remove_handle(l->m, h);
        l->active--;
        if (!x->t_done) x->t_done = clock_ns();
        if (rc != CURLE_OK) {
            xfer_fail(x, "curl: %s", curl_easy_strerror(rc));
        } else if (x->status != 200) {
            json_t *b = json_loadb(x->buf ? x->buf : "", x->len, 0, NULL);
            json_t *e = json_object_get(b, "error");
            const char *m = json_string_value(json_is_object(e) ? json_object_get(e, "message") : e);
            if (!m) m = json_string_value(json_object_get(b, "detail"));
            xfer_fail(x, "HTTP %ld: %.200s", x->status, m ? m : "(no message)");
            json_decref(b);
        } else if (!x->got_done_marker) {
            xfer_fail(x, "stream ended without [DONE]");
        } else if (x->state == XFER_RUNNING) {
            x->state = XFER_OK;
        }
        on_done(x, ud);
    }
}

static void on_done_keep(xfer *x, void *ud) { *(xfer **)ud = x; }

/* One request start to end (calibration, warm-up, the prefix pairs). */
static xfer *run_one(loop *l, json_t *body) {
    xfer *x = xfer_create(body, 0, NULL), *done = NULL;
    loop_start(l, x);
    while (!done) loop_run(l, 1000, on_done_keep, &done);
    return done;
}

static json_t *completion_body(const char *prompt, size_t len, long max_tokens, const char *stop) {
    json_t *p = json_stringn(prompt, len);
    if (!p) {
        fprintf(stderr, "load: a prompt is not valid UTF-8\n");
        exit(1);
    }
    json_t *b = json_pack("{s:o,s:I,s:i,s:b}", "prompt", p, "max_tokens", (json_int_t)max_tokens, "temperature", 0,
                          "stream", 1);
    if (stop) json_object_set_new(b, "stop", json_pack("[s]", stop));
    return b;
}

/* ---- /metrics: the server's own counters, for the hit rate and server-side cancellations ---------------------- */

typedef struct metrics {
    int ok, have_cached, have_engine_prompt;
    double prompt_tokens, engine_prompt_tokens, cached_tokens, eng_completed, eng_cancelled, http_cancelled;
    double steps, step_seqs, step_rows;
    char cached_name[128];
} metrics;

static size_t on_metrics_body(char *b, size_t size, size_t n, void *ud) {
    xfer *x = ud; /* only its buffer */
    size_t len = size * n;
    if (x->len + len + 1 > x->cap) {
        x->cap = (x->len + len + 1) * 2;
        x->buf = xrealloc_or_die(x->buf, x->cap);
    }
    memcpy(x->buf + x->len, b, len);
    x->len += len;
    x->buf[x->len] = 0;
    return len;
}

/* The scheduler's counters are being added while this tool is written, so every one is optional. The cached-token
 * counter is the first whose name says both "cached" and "token" (a block gauge is not a token count), so the
 * tool keeps working if its name settles differently. */
static void metrics_read(metrics *out) {
    memset(out, 0, sizeof(*out));
    xfer tmp = {0};
    CURL *h = curl_easy_init();
    if (!h) return;
    curl_easy_setopt(h, CURLOPT_URL, g_metrics_url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, g_headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_metrics_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &tmp);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (status != 200 || !tmp.buf) {
        free(tmp.buf);
        return;
    }
    out->ok = 1;
    for (char *line = strtok(tmp.buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (*line == '#') continue;
        char *sp = strrchr(line, ' ');
        if (!sp) continue;
        double v = strtod(sp + 1, NULL);
        *sp = 0;
        if (!strcmp(line, "suggestd_prompt_tokens_total")) out->prompt_tokens = v;
        else if (!strcmp(line, "suggestd_engine_prompt_tokens_total"))
            out->engine_prompt_tokens = v, out->have_engine_prompt = 1;
        else if (!strcmp(line, "suggestd_engine_requests_total{outcome=\"completed\"}")) out->eng_completed = v;
        else if (!strcmp(line, "suggestd_engine_requests_total{outcome=\"cancelled\"}")) out->eng_cancelled = v;
        else if (!strcmp(line, "suggestd_http_requests_cancelled_total")) out->http_cancelled = v;
        else if (!strcmp(line, "suggestd_engine_steps_total")) out->steps = v;
        else if (!strcmp(line, "suggestd_engine_step_sequences_total")) out->step_seqs = v;
        else if (!strcmp(line, "suggestd_engine_step_rows_total")) out->step_rows = v;
        else if (!out->have_cached && strstr(line, "cached") && strstr(line, "token") && !strchr(line, '{') &&
                 !strstr(line, "block")) {
            out->have_cached = 1;
            out->cached_tokens = v;
            snprintf(out->cached_name, sizeof(out->cached_name), "%s", line);
        }
    }
    free(tmp.buf);
}

/* The server's view of a run, from the counters' differences: what it cancelled (superseded requests should be),
 * how full its forward steps were (batching), and the prefix hit rate. The hit rate's denominator is the
 * engine's prompt-token counter when it has one: the HTTP counter also counts prompts cancelled in the queue,
 * which were never prefilled and so could never hit. */
static void metrics_report(const char *mode, const metrics *a, const metrics *b) {
    char name[96];
    double hit = NAN, batch = NAN, rows = NAN;
    if (!a->ok || !b->ok) {
        printf("server /metrics: not readable (figures from responses only)\n");
    } else {
        printf("server /metrics: engine completed %.0f, cancelled %.0f; HTTP requests cancelled %.0f\n",
               b->eng_completed - a->eng_completed, b->eng_cancelled - a->eng_cancelled,
               b->http_cancelled - a->http_cancelled);
        double steps = b->steps - a->steps;
        if (steps > 0) {
            batch = (b->step_seqs - a->step_seqs) / steps;
            rows = (b->step_rows - a->step_rows) / steps;
            printf("server /metrics: %.0f forward steps, %.2f sequences and %.1f rows per step (mean)\n", steps,
                   batch, rows);
        } else {
            printf("server /metrics: no forward-step counters (suggestd_engine_steps_total) moved\n");
        }
        int eng = b->have_engine_prompt && b->engine_prompt_tokens > a->engine_prompt_tokens;
        double dp = eng ? b->engine_prompt_tokens - a->engine_prompt_tokens : b->prompt_tokens - a->prompt_tokens;
        if (!b->have_cached) {
            printf("server /metrics: no cached-token counter (prefix cache not reported)\n");
        } else {
            double dc = b->cached_tokens - a->cached_tokens;
            hit = dp > 0 ? dc / dp : NAN;
            printf("server /metrics: %s +%.0f of %.0f prompt tokens (%s) -> prefix hit rate %.3f\n", b->cached_name,
                   dc, dp, eng ? "prefilled by the engine" : "received over HTTP", hit);
        }
    }
    snprintf(name, sizeof(name), "%s_prefix_hit_rate_metrics", mode);
    result(name, hit);
    snprintf(name, sizeof(name), "%s_mean_batch", mode);
    result(name, batch);
    snprintf(name, sizeof(name), "%s_mean_step_rows", mode);
    result(name, rows);
    snprintf(name, sizeof(name), "%s_server_cancelled", mode);
    result(name, a->ok && b->ok ? b->eng_cancelled - a->eng_cancelled : NAN);
}

/* ---- calibration and warm-up ---------------------------------------------------------------------------------- */

/* Characters of this corpus per prompt token, measured by the server's own tokenizer (usage.prompt_tokens) over
 * four stretches of the corpus, so that "N tokens" of source text is N tokens within a few percent. A stretch too
 * long for a small model's context (HTTP 400) is halved and tried again. */
static double calibrate(loop *l, const corpus *c) {
    double chars = 0, tokens = 0;
    size_t want = 1000;
    for (int i = 0; i < 4;) {
        size_t len;
        char *s = corpus_slice(c, c->all_len / 8 + (size_t)i * (c->all_len / 4), want, &len);
        xfer *x = run_one(l, completion_body(s, len, 1, NULL));
        free(s);
        if (x->state != XFER_OK && x->status == 400 && want > 100) {
            want /= 2;
            xfer_destroy(x);
            continue;
        }
        if (x->state != XFER_OK) {
            fprintf(stderr, "load: the first requests to %s failed: %s\n", g_completions_url, x->err);
            exit(1);
        }
        if (x->prompt_tokens > 0) chars += (double)len, tokens += (double)x->prompt_tokens;
        xfer_destroy(x);
        i++;
    }
    if (tokens > 0) return chars / tokens;
    fprintf(stderr, "load: the responses have no usage.prompt_tokens; assuming 3 characters a token\n");
    return 3.0;
}

/* The first requests after startup page in the weights and grow buffers; they are not what is being measured. */
static void warm_up(loop *l, const corpus *c) {
    for (long i = 0; i < (long)cfg.warmup; i++) {
        size_t len;
        char *s = corpus_slice(c, (size_t)i * 7919, 600, &len);
        xfer *x = run_one(l, completion_body(s, len, 8, NULL));
        free(s);
        if (x->state != XFER_OK) {
            fprintf(stderr, "load: warm-up request failed: %s\n", x->err);
            xfer_destroy(x);
            exit(1);
        }
        xfer_destroy(x);
    }
}

/* ---- editors -------------------------------------------------------------------------------------------------- */

enum { KIND_SINGLE = 0, KIND_MULTI = 1 };

typedef struct editor {
    const src_file *f;
    size_t cursor, win_start;
    uint64_t next_key, last_key; /* the next keystroke; the latest one (debounce runs from it) */
    int armed;                   /* typed since the last request: a request goes out debounce after last_key */
    xfer *inflight;
} editor;

typedef struct ed_stats {
    long sent, completed, superseded, errors, cut_at_end;
    long gen_tokens, prompt_tokens_usage, cached_tokens, with_cached;
    dvec lat[2], ttft[2];
    char first_err[256];
} ed_stats;

static void editor_open(editor *e, const corpus *c, rng *r) {
    e->f = &c->f[(size_t)(rng_uniform(r) * (double)c->n) % c->n];
    size_t pos = (size_t)(rng_uniform(r) * (double)e->f->len);
    while (pos > 0 && e->f->text[pos - 1] != '\n') pos--; /* people start typing at a line start */
    e->cursor = pos;
    e->win_start = 0;
}

/* Mean keystroke interval, uniform in [0.5, 1.5] of it, plus the pause after a line end: some intervals fall
 * under the debounce (no request), most over it (a request that the next keystroke then supersedes). */
static uint64_t key_interval(rng *r, int line_end) {
    double s = (0.5 + rng_uniform(r)) / cfg.cps;
    if (line_end) s += (0.5 + rng_uniform(r)) * (double)cfg.line_pause_ms * 1e-3;
    return (uint64_t)(s * 1e9);
}

/* One keystroke: a character, or a newline with the next line's indentation (editors auto-indent). */
static int editor_type(editor *e, const corpus *c, rng *r) {
    const char *t = e->f->text;
    size_t n = e->f->len;
    if (e->cursor >= n) {
        editor_open(e, c, r);
        return 0;
    }
    char ch = t[e->cursor++];
    while (e->cursor < n && utf8_cont(t[e->cursor])) e->cursor++;
    if (ch == '\n')
        while (e->cursor < n && (t[e->cursor] == ' ' || t[e->cursor] == '\t')) e->cursor++;
    return ch == '\n';
}

/* The prompt window [win_start, cursor). "jump" keeps the start still until the window overflows, then moves it
 * to a line start half a window back from the cursor: the prompt's beginning, and so the prefix a cache can
 * reuse, changes once every max/2 characters typed, as editors that truncate by lines do. "slide" changes the
 * first token at every keystroke once the file is longer than the window: no prefix can ever be reused. */
static void editor_window(editor *e) {
    size_t max = (size_t)cfg.max_prompt_chars;
    const char *t = e->f->text;
    if (!strcmp(cfg.truncate, "slide")) {
        e->win_start = e->cursor > max ? e->cursor - max : 0;
    } else if (e->cursor - e->win_start > max || e->win_start > e->cursor) {
        size_t s = e->cursor > max / 2 ? e->cursor - max / 2 : 0, k = s;
        while (k > 0 && k < e->cursor && t[k - 1] != '\n') k++; /* the next line start, if the window has one */
        e->win_start = k < e->cursor ? k : s;
    }
    while (e->win_start < e->cursor && utf8_cont(t[e->win_start])) e->win_start++;
}

static void ed_on_done(xfer *x, void *ud) {
    ed_stats *st = ud;
    editor *e = x->owner;
    e->inflight = NULL;
    if (x->state != XFER_OK) {
        st->errors++;
        if (!st->first_err[0]) snprintf(st->first_err, sizeof(st->first_err), "%s", x->err);
    } else {
        st->completed++;
        dvec_push(&st->lat[x->kind], xfer_latency(x));
        dvec_push(&st->ttft[x->kind], xfer_ttft(x));
        if (x->completion_tokens > 0) st->gen_tokens += x->completion_tokens;
        if (x->cached_tokens >= 0 && x->prompt_tokens > 0) {
            st->with_cached++;
            st->cached_tokens += x->cached_tokens;
            st->prompt_tokens_usage += x->prompt_tokens;
        }
    }
    xfer_destroy(x);
}

static void print_dist(const char *label, const char *key, dvec *lat, dvec *ttft) {
    dvec_sort(lat);
    dvec_sort(ttft);
    printf("%-12s n %-6zu latency ms p50 %8.1f p95 %8.1f p99 %8.1f | TTFT ms p50 %8.1f p95 %8.1f p99 %8.1f\n", label,
           lat->n, pct(lat, 50) * 1e3, pct(lat, 95) * 1e3, pct(lat, 99) * 1e3, pct(ttft, 50) * 1e3,
           pct(ttft, 95) * 1e3, pct(ttft, 99) * 1e3);
    const char *what[2] = {"latency", "ttft"};
    dvec *v[2] = {lat, ttft};
    const int ps[3] = {50, 95, 99};
    for (int w = 0; w < 2; w++)
        for (int p = 0; p < 3; p++) {
            char name[96];
            snprintf(name, sizeof(name), "editors_%s_%s_p%d_ms", key, what[w], ps[p]);
            result(name, pct(v[w], ps[p]) * 1e3);
        }
}

static int mode_editors(loop *l, const corpus *c) {
    rng r;
    rng_seed(&r, (uint64_t)cfg.seed);
    long ne = cfg.editors;
    editor *ed = xcalloc((size_t)ne, sizeof(editor));
    ed_stats st = {0};
    uint64_t debounce = (uint64_t)cfg.debounce_ms * 1000000ull;
    metrics m0, m1;
    metrics_read(&m0);
    uint64_t t0 = clock_ns(), end = t0 + (uint64_t)(cfg.seconds * 1e9);
    for (long i = 0; i < ne; i++) {
        editor_open(&ed[i], c, &r);
        /* editors start within the first second, not in lock step */
        ed[i].next_key = t0 + (uint64_t)(rng_uniform(&r) * 1e9);
    }
    for (;;) {
        uint64_t now = clock_ns();
        if (now >= end) break;
        uint64_t wake = end;
        for (long i = 0; i < ne; i++) {
            editor *e = &ed[i];
            if (now >= e->next_key) {
                if (e->inflight) { /* the user typed on: the completion shown would be stale */
                    loop_abort(l, e->inflight);
                    xfer_destroy(e->inflight);
                    e->inflight = NULL;
                    st.superseded++;
                }
                int line_end = editor_type(e, c, &r);
                e->last_key = now;
                e->armed = 1;
                e->next_key = now + key_interval(&r, line_end);
            }
            if (e->armed && now >= e->last_key + debounce && e->cursor > 0) {
                editor_window(e);
                int multi = rng_uniform(&r) * 100.0 < (double)cfg.multi_pct;
                json_t *b = multi ? completion_body(e->f->text + e->win_start, e->cursor - e->win_start,
                                                    cfg.multi_tokens, NULL)
                                  : completion_body(e->f->text + e->win_start, e->cursor - e->win_start,
                                                    cfg.single_tokens, "\n");
                e->inflight = xfer_create(b, multi ? KIND_MULTI : KIND_SINGLE, e);
                loop_start(l, e->inflight);
                e->armed = 0;
                st.sent++;
            }
            if (e->next_key < wake) wake = e->next_key;
            if (e->armed && e->last_key + debounce < wake) wake = e->last_key + debounce;
        }
        now = clock_ns();
        int ms = wake > now ? (int)((wake - now + 999999) / 1000000) : 0;
        loop_run(l, ms, ed_on_done, &st);
    }
    double wall = seconds_since(t0, clock_ns());
    for (long i = 0; i < ne; i++)
        if (ed[i].inflight) {
            loop_abort(l, ed[i].inflight);
            xfer_destroy(ed[i].inflight);
            st.cut_at_end++;
        }
    metrics_read(&m1);

    printf("editors %ld, %.1f s, %.1f chars/s, debounce %ld ms, line pause %ld ms, prompt <= %ld chars (%s), "
           "%ld%% multi-line\n",
           ne, wall, cfg.cps, cfg.debounce_ms, cfg.line_pause_ms, cfg.max_prompt_chars, cfg.truncate, cfg.multi_pct);
    printf("requests: sent %ld, completed %ld, superseded %ld, errors %ld, still running at the end %ld\n", st.sent,
           st.completed, st.superseded, st.errors, st.cut_at_end);
    if (st.first_err[0]) printf("first error: %s\n", st.first_err);
    print_dist("single-line", "single", &st.lat[KIND_SINGLE], &st.ttft[KIND_SINGLE]);
    print_dist("multi-line", "multi", &st.lat[KIND_MULTI], &st.ttft[KIND_MULTI]);
    printf("completed %.2f requests/s, %.1f generated tokens/s\n", (double)st.completed / wall,
           (double)st.gen_tokens / wall);
    double hit = st.with_cached ? (double)st.cached_tokens / (double)st.prompt_tokens_usage : NAN;
    if (st.with_cached)
        printf("prefix hit rate (usage.prompt_tokens_details, %ld completed): %.3f\n", st.with_cached, hit);
    else printf("prefix hit rate: responses carry no usage.prompt_tokens_details.cached_tokens\n");
    metrics_report("editors", &m0, &m1);
    result("editors_sent", (double)st.sent);
    result("editors_completed", (double)st.completed);
    result("editors_superseded", (double)st.superseded);
    result("editors_errors", (double)st.errors);
    result("editors_completed_per_s", (double)st.completed / wall);
    result("editors_tokens_per_s", (double)st.gen_tokens / wall);
    result("editors_prefix_hit_rate", hit);
    for (int k = 0; k < 2; k++) free(st.lat[k].v), free(st.ttft[k].v);
    free(ed);
    return st.errors ? 1 : 0;
}

/* ---- throughput ----------------------------------------------------------------------------------------------- */

typedef struct tp_state {
    loop *l;
    const corpus *c;
    size_t prompt_chars, next_off;
    long started, completed, errors, gen_tokens, prompt_tokens;
    uint64_t end;
    int stopping;
    dvec lat, ttft;
    char first_err[256];
} tp_state;

/* Each request takes the next stretch of the corpus, so no two prompts share a prefix: this mode measures batching,
 * and a prefix cache must not make it look faster than it is. */
static void tp_start(tp_state *s) {
    size_t len;
    char *p = corpus_slice(s->c, s->next_off, s->prompt_chars, &len);
    s->next_off += s->prompt_chars + 1;
    loop_start(s->l, xfer_create(completion_body(p, len, cfg.max_tokens, NULL), 0, NULL));
    free(p);
    s->started++;
}

static void tp_on_done(xfer *x, void *ud) {
    tp_state *s = ud;
    if (x->state != XFER_OK) {
        s->errors++;
        if (!s->first_err[0]) snprintf(s->first_err, sizeof(s->first_err), "%s", x->err);
    } else {
        s->completed++;
        dvec_push(&s->lat, xfer_latency(x));
        dvec_push(&s->ttft, xfer_ttft(x));
        if (x->completion_tokens > 0) s->gen_tokens += x->completion_tokens;
        if (x->prompt_tokens > 0) s->prompt_tokens += x->prompt_tokens;
    }
    xfer_destroy(x);
    /* closed loop: the client sends its next request as soon as one ends, until time or the count is up */
    if (cfg.requests ? s->started < cfg.requests : clock_ns() < s->end) tp_start(s);
}

static int mode_throughput(loop *l, const corpus *c, double cpt) {
    tp_state s = {.l = l, .c = c};
    s.prompt_chars = (size_t)((double)cfg.prompt_tokens * cpt + 0.5);
    rng r;
    rng_seed(&r, (uint64_t)cfg.seed);
    s.next_off = (size_t)(rng_uniform(&r) * (double)c->all_len);
    metrics m0, m1;
    metrics_read(&m0);
    uint64_t t0 = clock_ns();
    s.end = t0 + (uint64_t)(cfg.seconds * 1e9);
    for (long i = 0; i < cfg.clients && (!cfg.requests || s.started < cfg.requests); i++) tp_start(&s);
    /* after the deadline no new requests start, and the loop drains the ones in flight: every request that was
     * started counts, and the wall time runs to the last one's end */
    while (l->active) loop_run(l, 100, tp_on_done, &s);
    double wall = seconds_since(t0, clock_ns());
    metrics_read(&m1);
    dvec_sort(&s.lat);
    dvec_sort(&s.ttft);
    printf("clients %ld, prompt ~%ld tokens (%zu chars, mean %.1f tokens measured), max_tokens %ld, %.1f s\n",
           cfg.clients, cfg.prompt_tokens, s.prompt_chars,
           s.completed ? (double)s.prompt_tokens / (double)s.completed : NAN, cfg.max_tokens, wall);
    printf("requests: completed %ld, errors %ld\n", s.completed, s.errors);
    if (s.first_err[0]) printf("first error: %s\n", s.first_err);
    printf("%.2f requests/s, %.1f generated tokens/s\n", (double)s.completed / wall, (double)s.gen_tokens / wall);
    printf("latency ms p50 %.1f p95 %.1f p99 %.1f | TTFT ms p50 %.1f p95 %.1f\n", pct(&s.lat, 50) * 1e3,
           pct(&s.lat, 95) * 1e3, pct(&s.lat, 99) * 1e3, pct(&s.ttft, 50) * 1e3, pct(&s.ttft, 95) * 1e3);
    metrics_report("throughput", &m0, &m1);
    result("throughput_completed", (double)s.completed);
    result("throughput_errors", (double)s.errors);
    result("throughput_requests_per_s", (double)s.completed / wall);
    result("throughput_tokens_per_s", (double)s.gen_tokens / wall);
    result("throughput_latency_p50_ms", pct(&s.lat, 50) * 1e3);
    result("throughput_latency_p95_ms", pct(&s.lat, 95) * 1e3);
    result("throughput_ttft_p50_ms", pct(&s.ttft, 50) * 1e3);
    free(s.lat.v);
    free(s.ttft.v);
    return s.errors ? 1 : 0;
}

/* ---- prefix --------------------------------------------------------------------------------------------------- */

static int mode_prefix(loop *l, const corpus *c, double cpt) {
    size_t chars = (size_t)((double)cfg.prefix_tokens * cpt + 0.5);
    rng r;
    rng_seed(&r, (uint64_t)cfg.seed);
    dvec first = {0}, second = {0}, ratio = {0}, cached = {0};
    int errors = 0;
    metrics m0, m1;
    metrics_read(&m0);
    printf("prefix: prompt ~%ld tokens (%zu chars), then the same + %ld chars; max_tokens 1; %ld pairs\n",
           cfg.prefix_tokens, chars, cfg.extend_chars, cfg.repeats);
    for (long i = 0; i < cfg.repeats; i++) {
        /* a fresh stretch of text each time: the first prompt of a pair must find nothing in the cache */
        size_t off = (size_t)(rng_uniform(&r) * (double)c->all_len), len, len2;
        char *a = corpus_slice(c, off, chars, &len);
        char *b = corpus_slice(c, off, chars + (size_t)cfg.extend_chars, &len2);
        xfer *x1 = run_one(l, completion_body(a, len, 1, NULL));
        xfer *x2 = x1->state == XFER_OK ? run_one(l, completion_body(b, len2, 1, NULL)) : NULL;
        if (x1->state != XFER_OK || x2->state != XFER_OK) {
            printf("pair %ld: failed: %s\n", i + 1, x1->state != XFER_OK ? x1->err : x2->err);
            errors++;
        } else {
            double t1 = xfer_ttft(x1), t2 = xfer_ttft(x2);
            dvec_push(&first, t1);
            dvec_push(&second, t2);
            dvec_push(&ratio, t2 / t1);
            if (x2->cached_tokens >= 0) dvec_push(&cached, (double)x2->cached_tokens);
            printf("pair %ld: %ld prompt tokens TTFT %.1f ms, %ld tokens TTFT %.1f ms (cached %ld), ratio %.3f\n",
                   i + 1, x1->prompt_tokens, t1 * 1e3, x2->prompt_tokens, t2 * 1e3, x2->cached_tokens, t2 / t1);
        }
        xfer_destroy(x1);
        xfer_destroy(x2);
        free(a);
        free(b);
    }
    metrics_read(&m1);
    dvec_sort(&first);
    dvec_sort(&second);
    dvec_sort(&ratio);
    dvec_sort(&cached);
    printf("median TTFT: long prompt %.1f ms, extended %.1f ms; median ratio %.3f\n", pct(&first, 50) * 1e3,
           pct(&second, 50) * 1e3, pct(&ratio, 50));
    metrics_report("prefix", &m0, &m1);
    result("prefix_first_ttft_ms", pct(&first, 50) * 1e3);
    result("prefix_second_ttft_ms", pct(&second, 50) * 1e3);
    result("prefix_ratio", pct(&ratio, 50));
    result("prefix_second_cached_tokens", pct(&cached, 50));
    result("prefix_errors", errors);
    free(first.v), free(second.v), free(ratio.v), free(cached.v);
    return errors ? 1 : 0;
}

/* ---- main ----------------------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "editors") && strcmp(mode, "throughput") && strcmp(mode, "prefix"))
        die_usage("unknown mode '%s' (editors, throughput or prefix)", mode);
    parse_args(argc, argv);
    size_t ul = strlen(cfg.url);
    while (ul && cfg.url[ul - 1] == '/') ul--; /* "http://h:p/" and "http://h:p" are the same server */
    if (ul > 900) die_usage("--url is too long");
    snprintf(g_completions_url, sizeof(g_completions_url), "%.*s/v1/completions", (int)ul, cfg.url);
    snprintf(g_metrics_url, sizeof(g_metrics_url), "%.*s/metrics", (int)ul, cfg.url);

    corpus c = {0};
    corpus_load(&c);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    g_headers = curl_slist_append(NULL, "Content-Type: application/json");
    /* libcurl would wait for "100 Continue" before sending a long prompt's body: a delay the editor never has */
    g_headers = curl_slist_append(g_headers, "Expect:");
    char auth_hdr[1100];
    if (cfg.api_key) {
        snprintf(auth_hdr, sizeof(auth_hdr), "Authorization: Bearer %.1000s", cfg.api_key);
        g_headers = curl_slist_append(g_headers, auth_hdr);
    }
    loop l;
    loop_init(&l);
    printf("load %s: %s, %zu source files (%zu bytes) under %s\n", mode, cfg.url, c.n, c.all_len, cfg.src);
    double cpt = calibrate(&l, &c);
    printf("%.2f characters a token (measured by the server's tokenizer)\n", cpt);
    warm_up(&l, &c);
    int rc = !strcmp(mode, "editors")      ? mode_editors(&l, &c)
             : !strcmp(mode, "throughput") ? mode_throughput(&l, &c, cpt)
                                           : mode_prefix(&l, &c, cpt);
    loop_fini(&l);
    curl_slist_free_all(g_headers);
    curl_global_cleanup();
    corpus_free(&c);
    results_flush();
    return rc;
}
