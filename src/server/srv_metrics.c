/* srv_metrics.c - Prometheus counters and histograms of the HTTP layer, plus the engine's queue gauges.
 *
 * One mutex guards everything: a request touches it twice (begin, end), far below the cost of the request. The
 * label sets are bounded: routes are templates (srv_route) and statuses come from a small fixed-size list. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "srv_impl.h"

static const double bucket_le[SRV_METRICS_BUCKETS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                      0.5,   1,     2.5,  5,     10,  30,  60};

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

static int bucket_of(double v) {
    for (int i = 0; i < SRV_METRICS_BUCKETS; i++)
        if (v <= bucket_le[i]) return i;
    return -1; /* only +Inf */
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
    int b = bucket_of(latency_s);
    if (b >= 0) m->lat_bucket[route][b]++;
    m->lat_count[route]++;
    m->lat_sum[route] += latency_s;
    if (engine_s >= 0) {
        b = bucket_of(engine_s);
        if (b >= 0) m->eng_bucket[b]++;
        m->eng_count++;
        m->eng_sum += engine_s;
    }
    m->prompt_tokens += (uint64_t)(prompt_tokens > 0 ? prompt_tokens : 0);
    m->completion_tokens += (uint64_t)(completion_tokens > 0 ? completion_tokens : 0);
    m->cancelled += cancelled ? 1 : 0;
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

static void histogram(sbuf *b, const char *name, const char *labels, const uint64_t *bk, uint64_t count, double sum) {
    uint64_t cum = 0;
    for (int i = 0; i < SRV_METRICS_BUCKETS; i++) {
        cum += bk[i];
        sb_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, *labels ? "," : "", bucket_le[i],
                  (unsigned long long)cum);
    }
    sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, *labels ? "," : "", (unsigned long long)count);
    if (*labels)
        sb_printf(b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, sum, name, labels,
                  (unsigned long long)count);
    else sb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, sum, name, (unsigned long long)count);
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

char *srv_metrics_render(srv_metrics *m, sched *engine, auth *a, size_t *len) {
    sbuf b = {xmalloc(8192), 0, 8192, 0};
    if (!b.p) return NULL;
    pthread_mutex_lock(&m->mu);
    sb_printf(&b, "# HELP suggestd_http_requests_total HTTP requests by route template and status.\n"
                  "# TYPE suggestd_http_requests_total counter\n");
    for (int r = 0; r < SRV_ROUTE_COUNT; r++)
        for (int i = 0; i < m->n_status; i++)
            if (m->count[r][i])
                sb_printf(&b, "suggestd_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                          srv_route_label((srv_route)r), m->status[i], (unsigned long long)m->count[r][i]);
    sb_printf(&b, "# HELP suggestd_http_request_duration_seconds Time from the request's first byte to its end.\n"
                  "# TYPE suggestd_http_request_duration_seconds histogram\n");
    for (int r = 0; r < SRV_ROUTE_COUNT; r++) {
        if (!m->lat_count[r]) continue;
        char labels[96];
        snprintf(labels, sizeof(labels), "route=\"%s\"", srv_route_label((srv_route)r));
        histogram(&b, "suggestd_http_request_duration_seconds", labels, m->lat_bucket[r], m->lat_count[r],
                  m->lat_sum[r]);
    }
    sb_printf(&b, "# HELP suggestd_engine_duration_seconds Time from submitting a completion to its last token.\n"
                  "# TYPE suggestd_engine_duration_seconds histogram\n");
    histogram(&b, "suggestd_engine_duration_seconds", "", m->eng_bucket, m->eng_count, m->eng_sum);
    sb_printf(&b,
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
    pthread_mutex_unlock(&m->mu);
    sched_stats st = {0};
    if (engine) sched_get_stats(engine, &st);
    sb_printf(&b,
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
              "suggestd_engine_requests_total{outcome=\"failed\"} %llu\n",
              engine && sched_healthy(engine) ? 1 : 0, st.queued, st.queue_max, st.running,
              (unsigned long long)st.completed, (unsigned long long)st.cancelled, (unsigned long long)st.rejected,
              (unsigned long long)st.failed);
    if (a) render_auth(&b, a);
    if (b.oom) {
        xfree(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
