/* srv_impl.h - what the server's files share: the server and request structs, reply helpers, the error table,
 * metrics and the route handlers. Not a public header: only src/server/ includes it. */
#ifndef SUGGESTD_SERVER_SRV_IMPL_H
#define SUGGESTD_SERVER_SRV_IMPL_H

#include <microhttpd.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "srv.h"

/* Routes as metric labels (route templates, never raw paths, so the label set is bounded). */
typedef enum srv_route {
    SRV_ROUTE_V1_COMPLETIONS,
    SRV_ROUTE_V1_ENGINE_COMPLETIONS,
    SRV_ROUTE_V2_COMPLETIONS,
    SRV_ROUTE_V2_CODE_COMPLETIONS,
    SRV_ROUTE_MODELS,
    SRV_ROUTE_TOKEN,
    SRV_ROUTE_HEALTHZ,
    SRV_ROUTE_METRICS,
    SRV_ROUTE_OPENAPI,
    SRV_ROUTE_DOCS,
    SRV_ROUTE_REDOC,
    SRV_ROUTE_ASSETS,
    SRV_ROUTE_UNKNOWN,
    SRV_ROUTE_COUNT
} srv_route;

const char *srv_route_label(srv_route r);

/* Which error body shape a route speaks: OpenAI's {"error":{...}} on /v1, FastAPI's {"detail":...} elsewhere. */
typedef enum srv_style { SRV_STYLE_OPENAI, SRV_STYLE_FASTAPI } srv_style;

/* --- metrics (srv_metrics.c) --------------------------------------------------------------------------------- */
#define SRV_METRICS_MAX_STATUS 24
#define SRV_METRICS_BUCKETS 14
#define SRV_METRICS_TOKEN_BUCKETS 13 /* per-token latencies: milliseconds, not whole requests */

typedef struct srv_metrics {
    pthread_mutex_t mu;
    int n_status;
    int status[SRV_METRICS_MAX_STATUS];
    uint64_t count[SRV_ROUTE_COUNT][SRV_METRICS_MAX_STATUS];
    uint64_t lat_bucket[SRV_ROUTE_COUNT][SRV_METRICS_BUCKETS]; /* cumulative at render time, per-bucket here */
    uint64_t lat_count[SRV_ROUTE_COUNT];
    double lat_sum[SRV_ROUTE_COUNT];
    uint64_t eng_bucket[SRV_METRICS_BUCKETS], eng_count;
    double eng_sum;
    uint64_t ttft_bucket[SRV_METRICS_TOKEN_BUCKETS], ttft_count; /* submit -> first token, per choice */
    double ttft_sum;
    uint64_t tpot_bucket[SRV_METRICS_TOKEN_BUCKETS], tpot_count; /* decode time per token after the first */
    double tpot_sum;
    uint64_t prompt_tokens, completion_tokens, cancelled, in_flight_peak;
    int64_t in_flight;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_fini(srv_metrics *m);
void srv_metrics_begin(srv_metrics *m);
/* One finished request. engine_s < 0 when the request did not reach the engine. */
void srv_metrics_end(srv_metrics *m, srv_route route, int status, double latency_s, double engine_s,
                     int32_t prompt_tokens, int32_t completion_tokens, int cancelled);
/* One choice's DONE event: time to first token and per-token decode latency (each skipped when it does not apply). */
void srv_metrics_choice(srv_metrics *m, const sched_event *done);
/* Prometheus text exposition (heap string, xfree). sched may be NULL (loading), auth NULL (bypass). */
char *srv_metrics_render(srv_metrics *m, sched *engine, auth *a, size_t *len);

/* --- the server ---------------------------------------------------------------------------------------------- */
struct srv {
    srv_config cfg;    /* strings below are owned copies */
    char *s_host, *s_metrics_host, *s_model_name, *s_web_dir, *s_docs, *s_openapi, *s_redoc;
    struct MHD_Daemon *d, *dm;
    int port;
    _Atomic(sched *) engine;
    const tok *tk;
    atomic_int stopping;
    srv_metrics metrics;
    pthread_mutex_t seed_mu;
    uint64_t seed_state; /* for ids and unseeded requests */
};

typedef struct srv_req srv_req;

struct srv_req {
    srv *s;
    struct MHD_Connection *conn;
    srv_route route;
    srv_style style;
    const char *method;
    uint64_t t_start;
    uint64_t t_checked; /* last client/deadline check while waiting on the engine */
    char request_id[80];
    char *body;
    size_t body_len, body_cap;
    int body_too_large;
    int dispatched;
    atomic_int refs;
    /* outcome, for the log line and metrics */
    int status;
    int32_t prompt_tokens, completion_tokens;
    int32_t cached_tokens; /* prompt tokens the prefix cache supplied (largest over the choices) */
    double engine_s; /* submit -> done, < 0 = n/a */
    int cancelled;
    char note[160];  /* short reason for errors (never prompt text) */
    char *log_prompt, *log_completion; /* only with log_prompts on (off by default) */
    int streaming, stream_done; /* a stream's headers went out / its last byte was produced */
    void *stream;    /* srv_v1 stream state while a streamed response is alive */
    void (*stream_abort)(void *stream);
};

void srv_req_unref(srv_req *r);

/* Seconds since the request began. */
double srv_req_elapsed(const srv_req *r);

/* Replies with a JSON/text body (takes ownership of body, heap from xmalloc). Adds Content-Type, X-Request-ID,
 * X-Process-Time, X-Engine-Time (when engine_s >= 0) and Retry-After (when retry_after > 0). */
enum MHD_Result srv_reply(srv_req *r, int status, const char *ctype, char *body, size_t len, int retry_after);
/* Serializes j (consumed) compactly and replies with it. */
enum MHD_Result srv_reply_json(srv_req *r, int status, json_t *j);
/* Adds the common headers to a response built elsewhere (streams, files). */
void srv_add_headers(srv_req *r, struct MHD_Response *resp, const char *ctype);

/* Waits for the next event of q. Returns 1 with *ev filled; 0 when the client went away, the server is stopping or
 * the request timed out (r->cancelled / r->note say which; q is cancelled). */
int srv_wait_event(srv_req *r, sched_req *q, sched_event *ev, uint64_t deadline_ns);
/* 1 when the client has closed its side of the connection. */
int srv_client_gone(srv_req *r);

/* A fresh 64-bit seed and a 29-char [A-Za-z0-9] id (OpenAI's "cmpl-" ids). */
uint64_t srv_random_u64(srv *s);
void srv_random_id(srv *s, char *out, size_t n);

/* The engine, or NULL while loading. */
sched *srv_engine(srv *s);

/* --- errors (srv_errors.c): THE table from codes to HTTP statuses and bodies ------------------------------- */
/* Replies for an engine/sched error code in the route's style. */
enum MHD_Result srv_reply_err(srv_req *r, err code, const char *msg);
/* Replies with an explicit status in the route's style (400 bad request, 404, 405, 413, ...). param may be NULL. */
enum MHD_Result srv_reply_status(srv_req *r, int status, const char *msg, const char *param);
/* FastAPI/pydantic 422: {"detail":[{"loc":[...],"msg":...,"type":...}]}; loc is a JSON array (consumed). */
json_t *srv_v2_detail_item(json_t *loc, const char *msg, const char *type, json_t *ctx);
enum MHD_Result srv_reply_422(srv_req *r, json_t *detail_items);
/* The error body for a failure after a stream's headers went out: {"error":{...}} (heap JSON). */
char *srv_err_body_json(srv_style style, err code, const char *msg, size_t *len);
int srv_err_status(err code);
/* Replies for a request auth_check did not let in: 401/403/429/503 with {"error": ...} (OpenAI's object shape on
 * /v1, a plain message elsewhere) and Retry-After where the outcome has one. */
enum MHD_Result srv_reply_auth(srv_req *r, const auth_result *ar);

/* --- routes ------------------------------------------------------------------------------------------------- */
enum MHD_Result srv_v1_completions(srv_req *r);
enum MHD_Result srv_v2_completions(srv_req *r);
enum MHD_Result srv_v1_models(srv_req *r);
enum MHD_Result srv_docs_openapi(srv_req *r);
enum MHD_Result srv_docs_page(srv_req *r, int redoc);
enum MHD_Result srv_docs_asset(srv_req *r, const char *url);

/* v2 helpers exposed for tests/docs: language of a file name (NULL if unknown), incomplete-line trimming. */
const char *srv_v2_language(const char *file_name);
size_t srv_v2_trim_incomplete(const char *text, size_t len);

/* Shared completion machinery (srv_v1.c). One choice's text and sampled tokens as they arrive. */
typedef struct srv_choice {
    xbuf text;
    samp_result *toks;
    int32_t n_toks, cap_toks;
    gen_finish finish;
    int32_t n_prompt, n_gen, n_cached;
} srv_choice;

void srv_choice_fini(srv_choice *c);
/* Appends an event's text and tokens to c. ERR_NOMEM on allocation failure. */
err srv_choice_add(srv_choice *c, const sched_event *ev);
/* Reads q's events into c until DONE. Returns ERR_OK; the engine's code for an ERROR event (message in eb);
 * ERR_CANCELLED when the client left (r->cancelled) or the server is stopping; ERR_TIMEOUT past the deadline, whether
 * this thread saw it first or the engine did (DONE with deadline = 1). Records the engine time (submit -> done) in
 * r->engine_s, the DONE event's latencies in the metrics and the largest n_cached in r->cached_tokens. */
err srv_collect(srv_req *r, sched_req *q, uint64_t t_submit, uint64_t deadline_ns, srv_choice *c, errbuf *eb);
/* Replies for a failed srv_collect/sched_submit: nothing (MHD_NO, connection closed) when the client left. */
enum MHD_Result srv_reply_collect_err(srv_req *r, err code, const char *msg);
/* A token's display string: its bytes when they are valid UTF-8, else "bytes:\\xNN..." like OpenAI. */
json_t *srv_token_string(const tok *tk, int32_t id);

#endif
