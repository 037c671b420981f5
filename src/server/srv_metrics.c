/* srv_metrics.c - Prometheus counters and histograms of the HTTP layer, plus the engine's queue, batch, KV cache
 * and prefix-cache figures.
 *
 * One mutex guards everything: a request touches it a few times (begin, each choice's end, end), far below the cost
 * of the request. The label sets are bounded: routes are templates (srv_route) and statuses come from a small
 * fixed-size list. Engine figures are read from sched_get_stats at scrape time, not copied per request, so they
 * stay exact whichever API drove the engine. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "srv_impl.h"

static const double bucket_le[SRV_METRICS_BUCKETS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                      0.5,   1,     2.5,  5,     10,  30,  60};
/* A decode step is milliseconds (a small model on a GPU) to a second or so (16B on CPU); a first token waits for the
 * queue and a prefill too, hence the tail to 10 s. Past that, the duration histograms (to 60 s) tell the story. */
static const double token_le[SRV_METRICS_TOKEN_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                           0.25,  0.5,    1,     2.5,  5,     10};

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
}

void srv_metrics_fini(srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

void srv_metrics_begin(srv_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->in_flight++;
    if ((uint64_t)m->in_flight > m->in_flight_peak) m->in_flight_peak = (uint64_t)m->in_flight;
    pthread_mutex_unlock(&m->mu);
}

/* Per-bucket counts here; render makes them cumulative. A value past the last bound counts only in +Inf (count). */
static void observe(const double *le, int n, uint64_t *bk, uint64_t *count, double *sum, double v) {
    for (int i = 0; i < n; i++)
        if (v <= le[i]) {
            bk[i]++;
            break;
        }
    (*count)++;
    *sum += v;
}

void srv_metrics_end(srv_metrics *m, srv_route route, int status, double latency_s, double engine_s,
                     int32_t prompt_tokens, int32_t completion_tokens, int cancelled) {
    pthread_mutex_lock(&m->mu);
    m->in_flight--;
    int si = -1;
    for (int i = 0; i < m->n_status; i++)
        if (m->status[i] == status) si = i;
    if (si < 0 && m->n_status < SRV_METRICS_MAX_STATUS) {
        si = m->n_status++;
        m->status[si] = status;
    }
    if (si >= 0) m->count[route][si]++;
    observe(bucket_le, SRV_METRICS_BUCKETS, m->lat_bucket[route], &m->lat_count[route], &m->lat_sum[route],
            latency_s);
    if (engine_s >= 0) observe(bucket_le, SRV_METRICS_BUCKETS, m->eng_bucket, &m->eng_count, &m->eng_sum, engine_s);
    m->prompt_tokens += (uint64_t)(prompt_tokens > 0 ? prompt_tokens : 0);
    m->completion_tokens += (uint64_t)(completion_tokens > 0 ? completion_tokens : 0);
    m->cancelled += cancelled ? 1 : 0;
    pthread_mutex_unlock(&m->mu);
}

/* Every choice counts, not only the first: each is one sequence the engine scheduled, and these histograms describe
 * the engine's latency under its real batch, whatever the client asked for. A choice that sampled nothing has no
 * first token; an engine that does not time decoding (0 ns) would only drag the histogram towards zero. */
void srv_metrics_choice(srv_metrics *m, const sched_event *done) {
    if (done->kind != SCHED_EV_DONE) return;
    pthread_mutex_lock(&m->mu);
    if (done->ttft_ns > 0)
        observe(token_le, SRV_METRICS_TOKEN_BUCKETS, m->ttft_bucket, &m->ttft_count, &m->ttft_sum,
                (double)done->ttft_ns * 1e-9);
    if (done->n_generated > 1 && done->decode_ns > 0) /* the first token comes out of the prefill, not a decode */
        observe(token_le, SRV_METRICS_TOKEN_BUCKETS, m->tpot_bucket, &m->tpot_count, &m->tpot_sum,
                (double)done->decode_ns * 1e-9 / (double)(done->n_generated - 1));
    pthread_mutex_unlock(&m->mu);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)n;
        char *np = xrealloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

static void histogram_le(sbuf *b, const char *name, const char *labels, const double *le, int n, const uint64_t *bk,
                         uint64_t count, double sum) {
    uint64_t cum = 0;
    for (int i = 0; i < n; i++) {
        cum += bk[i];
        sb_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, *labels ? "," : "", le[i],
                  (unsigned long long)cum);
    }
    sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, *labels ? "," : "", (unsigned long long)count);
    if (*labels)
        sb_printf(b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, sum, name, labels,
                  (unsigned long long)count);
    else sb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, sum, name, (unsigned long long)count);
}

static void histogram(sbuf *b, const char *name, const char *labels, const uint64_t *bk, uint64_t count, double sum) {
    histogram_le(b, name, labels, bucket_le, SRV_METRICS_BUCKETS, bk, count, sum);
}

static void render_token_latency(sbuf *b, const srv_metrics *m) {
    sb_printf(b, "# HELP suggestd_engine_time_to_first_token_seconds Time from submitting a choice to its first "
                 "sampled token (queue + prefill).\n"
                 "# TYPE suggestd_engine_time_to_first_token_seconds histogram\n");
    histogram_le(b, "suggestd_engine_time_to_first_token_seconds", "", token_le, SRV_METRICS_TOKEN_BUCKETS,
                 m->ttft_bucket, m->ttft_count, m->ttft_sum);
    sb_printf(b, "# HELP suggestd_engine_time_per_output_token_seconds Decode time per token after the first, one "
                 "observation per choice.\n"
                 "# TYPE suggestd_engine_time_per_output_token_seconds histogram\n");
    histogram_le(b, "suggestd_engine_time_per_output_token_seconds", "", token_le, SRV_METRICS_TOKEN_BUCKETS,
                 m->tpot_bucket, m->tpot_count, m->tpot_sum);
}

/* Authentication counters (labels are outcome names, never tokens). */
static void render_auth(sbuf *b, auth *a) {
    auth_stats st;
    auth_get_stats(a, &st);
    sb_printf(b, "# HELP suggestd_auth_requests_total Authentication decisions by outcome.\n"
                 "# TYPE suggestd_auth_requests_total counter\n");
    for (int i = 0; i < AUTH_OUTCOME_COUNT; i++)
        sb_printf(b, "suggestd_auth_requests_total{outcome=\"%s\"} %llu\n", auth_outcome_name((auth_outcome)i),
                  (unsigned long long)st.outcome[i]);
    sb_printf(b,
              "# HELP suggestd_auth_cache_total Decision cache lookups of GitLab tokens.\n"
              "# TYPE suggestd_auth_cache_total counter\n"
              "suggestd_auth_cache_total{store=\"%s\",result=\"hit\"} %llu\n"
              "suggestd_auth_cache_total{store=\"%s\",result=\"miss\"} %llu\n"
              "# HELP suggestd_auth_store_errors_total Cache store failures (Redis down or slow); decided without it.\n"
              "# TYPE suggestd_auth_store_errors_total counter\nsuggestd_auth_store_errors_total %llu\n"
              "# HELP suggestd_auth_gitlab_requests_total Calls to GitLab's ml/ai-assist, and those that failed.\n"
              "# TYPE suggestd_auth_gitlab_requests_total counter\n"
              "suggestd_auth_gitlab_requests_total{result=\"answered\"} %llu\n"
              "suggestd_auth_gitlab_requests_total{result=\"failed\"} %llu\n"
              "# HELP suggestd_auth_single_flight_waits_total Requests that waited for another's GitLab call.\n"
              "# TYPE suggestd_auth_single_flight_waits_total counter\nsuggestd_auth_single_flight_waits_total %llu\n"
              "# HELP suggestd_auth_jwks_fetches_total OIDC discovery + JWKS fetches.\n"
              "# TYPE suggestd_auth_jwks_fetches_total counter\nsuggestd_auth_jwks_fetches_total %llu\n"
              "# HELP suggestd_auth_rate_limit_fallbacks_total Rate-limit checks done locally because the store failed.\n"
              "# TYPE suggestd_auth_rate_limit_fallbacks_total counter\nsuggestd_auth_rate_limit_fallbacks_total %llu\n",
              auth_store_kind(a), (unsigned long long)st.cache_hits, auth_store_kind(a),
              (unsigned long long)st.cache_misses, (unsigned long long)st.store_errors,
              (unsigned long long)(st.gitlab_calls - st.gitlab_errors), (unsigned long long)st.gitlab_errors,
              (unsigned long long)st.single_flight_waits, (unsigned long long)st.jwks_fetches,
              (unsigned long long)st.rate_store_fallbacks);
}

/* The HTTP layer's own series; the caller holds m->mu. */
static void render_http(sbuf *b, const srv_metrics *m) {
    sb_printf(b, "# HELP suggestd_http_requests_total HTTP requests by route template and status.\n"
                 "# TYPE suggestd_http_requests_total counter\n");
    for (int r = 0; r < SRV_ROUTE_COUNT; r++)
        for (int i = 0; i < m->n_status; i++)
            if (m->count[r][i])
                sb_printf(b, "suggestd_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                          srv_route_label((srv_route)r), m->status[i], (unsigned long long)m->count[r][i]);
    sb_printf(b, "# HELP suggestd_http_request_duration_seconds Time from the request's first byte to its end.\n"
                 "# TYPE suggestd_http_request_duration_seconds histogram\n");
    for (int r = 0; r < SRV_ROUTE_COUNT; r++) {
        if (!m->lat_count[r]) continue;
        char labels[96];
        snprintf(labels, sizeof(labels), "route=\"%s\"", srv_route_label((srv_route)r));
        histogram(b, "suggestd_http_request_duration_seconds", labels, m->lat_bucket[r], m->lat_count[r],
                  m->lat_sum[r]);
    }
    sb_printf(b, "# HELP suggestd_engine_duration_seconds Time from submitting a completion to its last token.\n"
                 "# TYPE suggestd_engine_duration_seconds histogram\n");
    histogram(b, "suggestd_engine_duration_seconds", "", m->eng_bucket, m->eng_count, m->eng_sum);
    render_token_latency(b, m);
    sb_printf(b,
              "# HELP suggestd_prompt_tokens_total Prompt tokens of completion requests.\n"
              "# TYPE suggestd_prompt_tokens_total counter\nsuggestd_prompt_tokens_total %llu\n"
              "# HELP suggestd_completion_tokens_total Tokens generated.\n"
              "# TYPE suggestd_completion_tokens_total counter\nsuggestd_completion_tokens_total %llu\n"
              "# HELP suggestd_http_requests_cancelled_total Requests whose client went away before the answer.\n"
              "# TYPE suggestd_http_requests_cancelled_total counter\nsuggestd_http_requests_cancelled_total %llu\n"
              "# HELP suggestd_http_requests_in_flight Requests being served now.\n"
              "# TYPE suggestd_http_requests_in_flight gauge\nsuggestd_http_requests_in_flight %lld\n",
              (unsigned long long)m->prompt_tokens, (unsigned long long)m->completion_tokens,
              (unsigned long long)m->cancelled, (long long)m->in_flight);
}

/* Queue and request outcomes. */
static void render_engine_queue(sbuf *b, sched *engine, const sched_stats *st) {
    sb_printf(b,
              "# HELP suggestd_engine_ready 1 when the model is loaded and healthy.\n"
              "# TYPE suggestd_engine_ready gauge\nsuggestd_engine_ready %d\n"
              "# HELP suggestd_queue_depth Requests waiting for the engine.\n"
              "# TYPE suggestd_queue_depth gauge\nsuggestd_queue_depth %d\n"
              "# HELP suggestd_queue_max Bound of the engine queue.\n"
              "# TYPE suggestd_queue_max gauge\nsuggestd_queue_max %d\n"
              "# HELP suggestd_engine_running Requests the engine is running now.\n"
              "# TYPE suggestd_engine_running gauge\nsuggestd_engine_running %d\n"
              "# HELP suggestd_engine_requests_total Engine requests by outcome.\n"
              "# TYPE suggestd_engine_requests_total counter\n"
              "suggestd_engine_requests_total{outcome=\"completed\"} %llu\n"
              "suggestd_engine_requests_total{outcome=\"cancelled\"} %llu\n"
              "suggestd_engine_requests_total{outcome=\"rejected\"} %llu\n"
              "suggestd_engine_requests_total{outcome=\"failed\"} %llu\n"
              "# HELP suggestd_engine_deadline_expired_total Requests the engine stopped at their request timeout.\n"
              "# TYPE suggestd_engine_deadline_expired_total counter\nsuggestd_engine_deadline_expired_total %llu\n",
              engine && sched_healthy(engine) ? 1 : 0, st->queued, st->queue_max, st->running,
              (unsigned long long)st->completed, (unsigned long long)st->cancelled, (unsigned long long)st->rejected,
              (unsigned long long)st->failed, (unsigned long long)st->deadline_expired);
}

/* Batching: averages are rate(step_sequences) / rate(steps), so the sums are exported rather than a mean that hides
 * when it was taken. */
static void render_engine_batch(sbuf *b, const sched_stats *st) {
    sb_printf(b,
              "# HELP suggestd_engine_batch_size Sequences in the engine's latest forward step.\n"
              "# TYPE suggestd_engine_batch_size gauge\nsuggestd_engine_batch_size %d\n"
              "# HELP suggestd_engine_max_batch Most sequences one forward step may hold (--max-batch).\n"
              "# TYPE suggestd_engine_max_batch gauge\nsuggestd_engine_max_batch %d\n"
              "# HELP suggestd_engine_steps_total Forward steps run.\n"
              "# TYPE suggestd_engine_steps_total counter\nsuggestd_engine_steps_total %llu\n"
              "# HELP suggestd_engine_step_sequences_total Sequences summed over forward steps (/steps: mean batch).\n"
              "# TYPE suggestd_engine_step_sequences_total counter\nsuggestd_engine_step_sequences_total %llu\n"
              "# HELP suggestd_engine_step_rows_total Token rows summed over forward steps (prefill + decode).\n"
              "# TYPE suggestd_engine_step_rows_total counter\nsuggestd_engine_step_rows_total %llu\n"
              "# HELP suggestd_engine_forward_seconds_total Time in the model's forward passes, summed over steps.\n"
              "# TYPE suggestd_engine_forward_seconds_total counter\nsuggestd_engine_forward_seconds_total %.6f\n"
              "# HELP suggestd_engine_step_seconds_total Time in engine steps (forward, sampling, events), summed.\n"
              "# TYPE suggestd_engine_step_seconds_total counter\nsuggestd_engine_step_seconds_total %.6f\n",
              st->last_batch, st->max_batch, (unsigned long long)st->steps, (unsigned long long)st->step_seqs,
              (unsigned long long)st->step_rows, (double)st->forward_ns * 1e-9, (double)st->step_ns * 1e-9);
}

/* KV blocks and the prefix cache. The ratio is over the process's life, for a dashboard's single number; a windowed
 * hit rate is rate(cached_prompt_tokens) / rate(prompt_tokens). No prompt yet reads 0, not NaN, so alerts stay
 * quiet. */
static void render_engine_kv(sbuf *b, const sched_stats *st) {
    double ratio = st->prompt_tokens ? (double)st->cached_tokens / (double)st->prompt_tokens : 0;
    sb_printf(b,
              "# HELP suggestd_engine_kv_blocks_capacity KV cache blocks in the pool.\n"
              "# TYPE suggestd_engine_kv_blocks_capacity gauge\nsuggestd_engine_kv_blocks_capacity %d\n"
              "# HELP suggestd_engine_kv_blocks_used KV cache blocks held by running requests.\n"
              "# TYPE suggestd_engine_kv_blocks_used gauge\nsuggestd_engine_kv_blocks_used %d\n"
              "# HELP suggestd_engine_kv_blocks_cached KV cache blocks kept for prefix reuse (evictable).\n"
              "# TYPE suggestd_engine_kv_blocks_cached gauge\nsuggestd_engine_kv_blocks_cached %d\n"
              "# HELP suggestd_engine_prompt_tokens_total Prompt tokens the engine admitted (each choice counts).\n"
              "# TYPE suggestd_engine_prompt_tokens_total counter\nsuggestd_engine_prompt_tokens_total %llu\n"
              "# HELP suggestd_engine_cached_prompt_tokens_total Prompt tokens whose KV came from the prefix cache.\n"
              "# TYPE suggestd_engine_cached_prompt_tokens_total counter\n"
              "suggestd_engine_cached_prompt_tokens_total %llu\n"
              "# HELP suggestd_engine_prefix_cache_hit_ratio Cached / admitted prompt tokens since the start.\n"
              "# TYPE suggestd_engine_prefix_cache_hit_ratio gauge\nsuggestd_engine_prefix_cache_hit_ratio %.6f\n",
              st->kv_blocks_total, st->kv_blocks_used, st->kv_blocks_cached, (unsigned long long)st->prompt_tokens,
              (unsigned long long)st->cached_tokens, ratio);
}

char *srv_metrics_render(srv_metrics *m, sched *engine, auth *a, size_t *len) {
    sbuf b = {xmalloc(16384), 0, 16384, 0};
    if (!b.p) return NULL;
    pthread_mutex_lock(&m->mu);
    render_http(&b, m);
    pthread_mutex_unlock(&m->mu);
    sched_stats st = {0};
    if (engine) sched_get_stats(engine, &st);
    render_engine_queue(&b, engine, &st);
    render_engine_batch(&b, &st);
    render_engine_kv(&b, &st);
    if (a) render_auth(&b, a);
    if (b.oom) {
        xfree(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
