/* srv.c - the daemon: listening, routing, the life of one request (body, ids, headers, log line, metrics).
 *
 * DESIGN: libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION), so a handler may block
 * while its request waits for the engine; the engine itself runs on the sched's thread, never here. A request's
 * state (srv_req) lives from MHD's first access-handler call to its completion callback, which writes the log line
 * and the metrics; a streamed response holds a second reference until MHD frees it. While blocked, a handler
 * polls its socket every SRV_POLL_MS for a client that went away and cancels its engine work.
 *
 * Signals: the process blocks SIGINT/SIGTERM in every thread (srv_block_signals) and srv_run takes them with
 * sigwait, so the server needs no global flags at all. */
#include "srv_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "rng.h"

#define SRV_POLL_MS 50

static const char *route_labels[SRV_ROUTE_COUNT] = {
    [SRV_ROUTE_V1_COMPLETIONS] = "/v1/completions",
    [SRV_ROUTE_V1_ENGINE_COMPLETIONS] = "/v1/engines/{engine}/completions",
    [SRV_ROUTE_V2_COMPLETIONS] = "/v2/completions",
    [SRV_ROUTE_V2_CODE_COMPLETIONS] = "/v2/code/completions",
    [SRV_ROUTE_MODELS] = "/v1/models",
    [SRV_ROUTE_TOKEN] = "/copilot_internal/v2/token",
    [SRV_ROUTE_HEALTHZ] = "/monitoring/healthz",
    [SRV_ROUTE_METRICS] = "/metrics",
    [SRV_ROUTE_OPENAPI] = "openapi",
    [SRV_ROUTE_DOCS] = "docs",
    [SRV_ROUTE_REDOC] = "redoc",
    [SRV_ROUTE_ASSETS] = "/docs-assets",
    [SRV_ROUTE_UNKNOWN] = "unknown",
};

const char *srv_route_label(srv_route r) { return route_labels[r]; }

sched *srv_engine(srv *s) { return atomic_load_explicit(&s->engine, memory_order_acquire); }

/* --- ids and seeds ------------------------------------------------------------------------------------------- */

uint64_t srv_random_u64(srv *s) {
    pthread_mutex_lock(&s->seed_mu);
    s->seed_state += 0x9e3779b97f4a7c15ull;
    uint64_t x = splitmix64(s->seed_state);
    pthread_mutex_unlock(&s->seed_mu);
    return x;
}

void srv_random_id(srv *s, char *out, size_t n) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t x = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (i % 8 == 0) x = srv_random_u64(s);
        out[i] = al[x % 62];
        x /= 62;
    }
    if (n) out[n - 1] = 0;
}

/* --- replies ------------------------------------------------------------------------------------------------- */

double srv_req_elapsed(const srv_req *r) { return (double)(clock_ns() - r->t_start) * 1e-9; }

void srv_add_headers(srv_req *r, struct MHD_Response *resp, const char *ctype) {
    char v[64];
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-ID", r->request_id);
    snprintf(v, sizeof(v), "%.6f", srv_req_elapsed(r));
    MHD_add_response_header(resp, "X-Process-Time", v);
    if (r->engine_s >= 0) {
        snprintf(v, sizeof(v), "%.6f", r->engine_s);
        MHD_add_response_header(resp, "X-Engine-Time", v);
    }
}

enum MHD_Result srv_reply(srv_req *r, int status, const char *ctype, char *body, size_t len, int retry_after) {
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, body, xfree);
    if (!resp) {
        xfree(body);
        return MHD_NO;
    }
    srv_add_headers(r, resp, ctype);
    if (retry_after > 0) {
        char v[16];
        snprintf(v, sizeof(v), "%d", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    r->status = status;
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* json_dumps allocates with malloc; we copy into xmalloc storage so every buffer we free goes through xfree. */
static char *dump_json(json_t *j, size_t *len) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!s) return NULL;
    size_t n = strlen(s);
    char *out = xmalloc(n + 1);
    if (out) memcpy(out, s, n + 1);
    free(s);
    *len = n;
    return out;
}

enum MHD_Result srv_reply_json(srv_req *r, int status, json_t *j) {
    size_t len = 0;
    char *body = j ? dump_json(j, &len) : NULL;
    json_decref(j);
    if (!body) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                                  "\"code\":null}}";
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (!resp) return MHD_NO;
        srv_add_headers(r, resp, "application/json");
        r->status = 503;
        enum MHD_Result ok = MHD_queue_response(r->conn, 503, resp);
        MHD_destroy_response(resp);
        return ok;
    }
    return srv_reply(r, status, "application/json", body, len, 0);
}

/* --- waiting on the engine ----------------------------------------------------------------------------------- */

int srv_client_gone(srv_req *r) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return 1;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 1;
    return 0;
}

int srv_wait_event(srv_req *r, sched_req *q, sched_event *ev, uint64_t deadline_ns) {
    for (;;) {
        /* events may arrive faster than SRV_POLL_MS forever (a long completion), so the checks run on a clock, not
         * only when the queue is quiet */
        int got = sched_next(q, ev, SRV_POLL_MS);
        uint64_t now = clock_ns();
        if (got && now - r->t_checked < (uint64_t)SRV_POLL_MS * 1000000ull) return 1;
        r->t_checked = now;
        const char *why = NULL;
        if (atomic_load(&r->s->stopping)) why = "server shutting down";
        else if (srv_client_gone(r)) why = "client disconnected", r->cancelled = 1;
        else if (now > deadline_ns) why = "request timed out";
        if (!why) {
            if (got) return 1;
            continue;
        }
        if (got) sched_event_fini(ev);
        snprintf(r->note, sizeof(r->note), "%s", why);
        break;
    }
    sched_cancel(q);
    return 0;
}

/* --- routing ------------------------------------------------------------------------------------------------- */

static int is_post(const char *m) { return !strcmp(m, MHD_HTTP_METHOD_POST); }
static int is_get(const char *m) { return !strcmp(m, MHD_HTTP_METHOD_GET) || !strcmp(m, MHD_HTTP_METHOD_HEAD); }

/* /v1/engines/{engine}/completions with a non-empty engine name without slashes */
static int match_engine_route(const char *url) {
    static const char pre[] = "/v1/engines/", suf[] = "/completions";
    size_t n = strlen(url);
    if (strncmp(url, pre, sizeof(pre) - 1) || n <= sizeof(pre) - 1 + sizeof(suf) - 1) return 0;
    if (strcmp(url + n - (sizeof(suf) - 1), suf)) return 0;
    const char *e = url + sizeof(pre) - 1, *end = url + n - (sizeof(suf) - 1);
    for (const char *p = e; p < end; p++)
        if (*p == '/') return 0;
    return end > e;
}

static int url_is(const char *url, const char *path) { return path && !strcmp(url, path); }

static srv_route route_of(srv *s, const char *url, int *want_post) {
    *want_post = 0;
    if (!strcmp(url, "/v1/completions")) return *want_post = 1, SRV_ROUTE_V1_COMPLETIONS;
    if (match_engine_route(url)) return *want_post = 1, SRV_ROUTE_V1_ENGINE_COMPLETIONS;
    if (!strcmp(url, "/v2/completions")) return *want_post = 1, SRV_ROUTE_V2_COMPLETIONS;
    if (!strcmp(url, "/v2/code/completions")) return *want_post = 1, SRV_ROUTE_V2_CODE_COMPLETIONS;
    if (!strcmp(url, "/v1/models")) return SRV_ROUTE_MODELS;
    if (!strcmp(url, "/copilot_internal/v2/token")) return SRV_ROUTE_TOKEN;
    if (!strcmp(url, "/monitoring/healthz")) return SRV_ROUTE_HEALTHZ;
    if (!strcmp(url, "/metrics")) return SRV_ROUTE_METRICS;
    int docs_on = s->s_docs || s->s_redoc;
    if (url_is(url, s->s_openapi) || (docs_on && !s->s_openapi && !strcmp(url, "/openapi.json")))
        return SRV_ROUTE_OPENAPI;
    if (url_is(url, s->s_docs)) return SRV_ROUTE_DOCS;
    if (url_is(url, s->s_redoc)) return SRV_ROUTE_REDOC;
    if (docs_on && !strncmp(url, "/docs-assets/", 13)) return SRV_ROUTE_ASSETS;
    return SRV_ROUTE_UNKNOWN;
}

static enum MHD_Result reply_static(srv_req *r, int status, const char *json) {
    char *b = xstrdup(json);
    if (!b) return MHD_NO;
    return srv_reply(r, status, "application/json", b, strlen(json), 0);
}

static enum MHD_Result dispatch(srv_req *r, const char *url) {
    srv *s = r->s;
    if (r->body_too_large) {
        char m[128];
        snprintf(m, sizeof(m), "request body exceeds the limit of %ld bytes", s->cfg.max_body_bytes);
        return srv_reply_status(r, 413, m, NULL);
    }
    switch (r->route) {
    case SRV_ROUTE_V1_COMPLETIONS:
    case SRV_ROUTE_V1_ENGINE_COMPLETIONS: return srv_v1_completions(r);
    case SRV_ROUTE_V2_COMPLETIONS:
    case SRV_ROUTE_V2_CODE_COMPLETIONS: return srv_v2_completions(r);
    case SRV_ROUTE_MODELS: return srv_v1_models(r);
    case SRV_ROUTE_TOKEN: return reply_static(r, 200, "{\"token\":\"1\",\"expires_at\":2600000000,\"refresh_in\":900}");
    case SRV_ROUTE_HEALTHZ: {
        sched *e = srv_engine(s);
        if (e && sched_healthy(e) && !atomic_load(&s->stopping)) return reply_static(r, 200, "{}");
        snprintf(r->note, sizeof(r->note), "%s", e ? "engine failed" : "loading");
        return reply_static(r, 503, "{}");
    }
    case SRV_ROUTE_METRICS: {
        size_t len;
        char *b = srv_metrics_render(&s->metrics, srv_engine(s), s->cfg.auth, &len);
        if (!b) return srv_reply_err(r, ERR_NOMEM, "out of memory");
        return srv_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", b, len, 0);
    }
    case SRV_ROUTE_OPENAPI: return srv_docs_openapi(r);
    case SRV_ROUTE_DOCS: return srv_docs_page(r, 0);
    case SRV_ROUTE_REDOC: return srv_docs_page(r, 1);
    case SRV_ROUTE_ASSETS: return srv_docs_asset(r, url);
    case SRV_ROUTE_UNKNOWN:
    case SRV_ROUTE_COUNT: break;
    }
    return srv_reply_status(r, 404, "Not Found", NULL);
}

/* The routes behind authentication: completions and the model list. Health, metrics, docs and the copilot token
 * stub stay open (orchestrators and scrapers carry no user token). */
static int needs_auth(srv_route rt) { return rt <= SRV_ROUTE_MODELS; }

static void copy_request_id(srv_req *r) {
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-ID");
    size_t n = h ? strlen(h) : 0;
    int ok = n > 0 && n < sizeof(r->request_id);
    for (size_t i = 0; ok && i < n; i++)
        if (h[i] < 0x21 || h[i] > 0x7e) ok = 0; /* printable ASCII only: it goes into headers and logs */
    if (ok) memcpy(r->request_id, h, n + 1);
    else {
        uint64_t a = srv_random_u64(r->s), b = srv_random_u64(r->s);
        snprintf(r->request_id, sizeof(r->request_id), "%016llx%016llx", (unsigned long long)a,
                 (unsigned long long)b);
    }
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
    (void)version;
    srv *s = cls;
    srv_req *r = *con_cls;
    if (!r) {
        r = xcalloc(1, sizeof(*r));
        if (!r) return MHD_NO;
        r->s = s;
        r->conn = conn;
        r->t_start = clock_ns();
        r->engine_s = -1;
        r->method = method;
        atomic_store(&r->refs, 1);
        *con_cls = r;
        srv_metrics_begin(&s->metrics);
        int want_post;
        r->route = route_of(s, url, &want_post);
        if (s->dm) {
            /* with a metrics port, /metrics lives only there, and that port serves nothing else but health */
            const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_DAEMON);
            int on_dm = ci && ci->daemon == s->dm;
            if (on_dm ? r->route != SRV_ROUTE_METRICS && r->route != SRV_ROUTE_HEALTHZ : r->route == SRV_ROUTE_METRICS)
                r->route = SRV_ROUTE_UNKNOWN;
        }
        r->style = !strncmp(url, "/v1/", 4) || !strncmp(url, "/copilot_internal/", 18) ? SRV_STYLE_OPENAI
                                                                                      : SRV_STYLE_FASTAPI;
        copy_request_id(r);
        if (r->route <= SRV_ROUTE_V2_CODE_COMPLETIONS) /* waiting on the engine is not idleness */
            MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->cfg.request_timeout_s + 5);
        if (r->route != SRV_ROUTE_UNKNOWN && (want_post ? !is_post(method) : !is_get(method))) {
            r->dispatched = 1;
            return srv_reply_status(r, 405, "Method Not Allowed", NULL);
        }
        /* authentication on the headers, before any body is read: an unauthenticated body is never buffered */
        if (s->cfg.auth && needs_auth(r->route)) {
            auth_result ar;
            auth_check(s->cfg.auth, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
                       MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Gitlab-Authentication-Type"), &ar);
            if (ar.outcome != AUTH_OUTCOME_ALLOWED) {
                r->dispatched = 1;
                return srv_reply_auth(r, &ar);
            }
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > (unsigned long long)s->cfg.max_body_bytes) {
            r->body_too_large = 1;
            r->dispatched = 1;
            return dispatch(r, url); /* answered before reading the body; MHD closes the connection after */
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->body_too_large || r->dispatched) return MHD_YES;
        if (r->body_len + n > (size_t)s->cfg.max_body_bytes) {
            r->body_too_large = 1; /* keep reading (and dropping) so the 413 can be sent cleanly */
            xfree(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t nc = r->body_cap ? r->body_cap : 1024;
            while (nc < r->body_len + n + 1) nc *= 2;
            char *nb = xrealloc(r->body, nc);
            if (!nb) return MHD_NO;
            r->body = nb;
            r->body_cap = nc;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        r->body[r->body_len] = 0;
        return MHD_YES;
    }
    if (r->dispatched) return MHD_YES;
    r->dispatched = 1;
    return dispatch(r, url);
}

void srv_req_unref(srv_req *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    xfree(r->body);
    xfree(r->log_prompt);
    xfree(r->log_completion);
    xfree(r);
}

/* One JSON line per request; prompts and completions are never in it. */
static void log_request(srv_req *r, double latency) {
    char when[80];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:i,s:f,s:i,s:i}", "time", when, "request_id", r->request_id, "method",
                          r->method ? r->method : "", "route", srv_route_label(r->route), "status", r->status,
                          "latency_s", latency, "prompt_tokens", (json_int_t)r->prompt_tokens, "completion_tokens",
                          (json_int_t)r->completion_tokens);
    if (!j) return;
    if (r->engine_s >= 0) json_object_set_new(j, "engine_s", json_real(r->engine_s));
    if (r->cached_tokens > 0) json_object_set_new(j, "cached_tokens", json_integer(r->cached_tokens));
    if (r->cancelled) json_object_set_new(j, "cancelled", json_true());
    if (r->note[0]) json_object_set_new(j, "note", json_string(r->note));
    if (r->log_prompt) json_object_set_new(j, "prompt", json_string(r->log_prompt));
    if (r->log_completion) json_object_set_new(j, "completion", json_string(r->log_completion));
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(j);
    if (!s) return;
    size_t n = strlen(s);
    s[n] = '\n'; /* json_dumps leaves room for the NUL we overwrite; write n + 1 bytes in one call */
    ssize_t w = write(STDERR_FILENO, s, n + 1);
    (void)w;
    free(s);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode tc) {
    srv *s = cls;
    srv_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (tc != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->streaming && !r->stream_done) {
        r->cancelled = 1;
        if (!r->note[0]) snprintf(r->note, sizeof(r->note), "client disconnected");
    }
    if (r->stream && r->stream_abort) r->stream_abort(r->stream);
    if (r->route <= SRV_ROUTE_V2_CODE_COMPLETIONS) /* back to the idle timeout for the next keep-alive request */
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->cfg.idle_timeout_s);
    if (!r->status) r->status = tc == MHD_REQUEST_TERMINATED_COMPLETED_OK ? 200 : 499;
    double lat = srv_req_elapsed(r);
    srv_metrics_end(&s->metrics, r->route, r->status, lat, r->engine_s, r->prompt_tokens, r->completion_tokens,
                    r->cancelled);
    if (log_enabled(LOG_LEVEL_INFO)) log_request(r, lat);
    srv_req_unref(r);
}

/* --- lifecycle ----------------------------------------------------------------------------------------------- */

static char *dup_opt(const char *s) { return s && *s ? xstrdup(s) : NULL; }

static struct MHD_Daemon *start_daemon(srv *s, const char *host, int port, errbuf *eb) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        errbuf_set(eb, ERR_INVALID, "host '%s' is not an IPv4 address", host);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ITC;
    /* An idle keep-alive connection closes after idle_timeout_s; while a completion waits on the engine its
     * connection's timeout is raised past request_timeout_s (on_access) and restored when it ends. */
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->cfg.idle_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_END);
    if (!d) errbuf_set(eb, ERR_IO, "cannot listen on %s:%d (%s)", host, port, errno ? strerror(errno) : "in use?");
    return d;
}

err srv_create(const srv_config *cfg, srv **out, errbuf *eb) {
    *out = NULL;
    srv *s = xcalloc(1, sizeof(*s));
    if (!s) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    s->s_host = dup_opt(cfg->host ? cfg->host : "0.0.0.0");
    s->s_metrics_host = dup_opt(cfg->metrics_host ? cfg->metrics_host : "0.0.0.0");
    s->s_model_name = dup_opt(cfg->model_name ? cfg->model_name : "codegen");
    s->s_web_dir = dup_opt(cfg->web_dir ? cfg->web_dir : "web/node_modules");
    s->s_docs = dup_opt(cfg->docs_url);
    s->s_openapi = dup_opt(cfg->openapi_url);
    s->s_redoc = dup_opt(cfg->redoc_url);
    s->cfg.host = s->s_host;
    s->cfg.metrics_host = s->s_metrics_host;
    s->cfg.model_name = s->s_model_name;
    s->cfg.web_dir = s->s_web_dir;
    s->cfg.docs_url = s->s_docs;
    s->cfg.openapi_url = s->s_openapi;
    s->cfg.redoc_url = s->s_redoc;
    if (s->cfg.max_connections <= 0) s->cfg.max_connections = 256;
    if (s->cfg.max_body_bytes <= 0) s->cfg.max_body_bytes = 1 << 20;
    if (s->cfg.max_n <= 0) s->cfg.max_n = 8;
    if (s->cfg.request_timeout_s <= 0) s->cfg.request_timeout_s = 300;
    if (s->cfg.idle_timeout_s <= 0) s->cfg.idle_timeout_s = 60;
    if (s->cfg.v2_max_tokens <= 0) s->cfg.v2_max_tokens = 32;
    pthread_mutex_init(&s->seed_mu, NULL);
    srv_metrics_init(&s->metrics);
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) seed = clock_ns() ^ (uint64_t)getpid() << 32;
    s->seed_state = seed;
    if (!s->s_host || !s->s_metrics_host || !s->s_model_name || !s->s_web_dir) {
        srv_destroy(s);
        return errbuf_set(eb, ERR_NOMEM, "out of memory");
    }
    s->d = start_daemon(s, s->s_host, cfg->port, eb);
    if (!s->d) {
        srv_destroy(s);
        return eb ? eb->code : ERR_IO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    if (cfg->metrics_port > 0) {
        s->dm = start_daemon(s, s->s_metrics_host, cfg->metrics_port, eb);
        if (!s->dm) {
            srv_destroy(s);
            return eb ? eb->code : ERR_IO;
        }
    }
    *out = s;
    return ERR_OK;
}

void srv_set_engine(srv *s, sched *engine, const tok *tk) {
    s->tk = tk;
    atomic_store_explicit(&s->engine, engine, memory_order_release);
}

int srv_port(const srv *s) { return s->port; }

void srv_block_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int srv_run(srv *s) {
    (void)s;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    return sig;
}

void srv_destroy(srv *s) {
    if (!s) return;
    atomic_store(&s->stopping, 1); /* blocked handlers notice within SRV_POLL_MS, cancel and answer 503 */
    if (s->dm) MHD_stop_daemon(s->dm);
    if (s->d) MHD_stop_daemon(s->d);
    srv_metrics_fini(&s->metrics);
    pthread_mutex_destroy(&s->seed_mu);
    xfree(s->s_host);
    xfree(s->s_metrics_host);
    xfree(s->s_model_name);
    xfree(s->s_web_dir);
    xfree(s->s_docs);
    xfree(s->s_openapi);
    xfree(s->s_redoc);
    xfree(s);
}
