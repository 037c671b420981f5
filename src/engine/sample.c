/* sample.c - penalties, logprobs, greedy / temperature / top-k / top-p sampling on host logits.
 *
 * DESIGN: nucleus sampling needs the most probable ids in order, but only until their mass reaches top_p; we select
 * the best k with a bounded min-heap (k = 64, then 4x more when that mass is not enough) instead of sorting all
 * 51200 ids every token. */
#include "sample.h"

#include <math.h>
#include <string.h>

#include "alloc.h"

samp_params samp_params_default(void) {
    samp_params p = {0};
    p.temperature = 0.0f;
    p.top_p = 1.0f;
    p.repetition_penalty = 1.0f;
    return p;
}

err samp_params_check(const samp_params *p, errbuf *eb) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return errbuf_set(eb, ERR_INVALID, "temperature must be between 0 and 100");
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) return errbuf_set(eb, ERR_INVALID, "top_p must be in (0, 1]");
    if (p->top_k < 0) return errbuf_set(eb, ERR_INVALID, "top_k must be >= 0");
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return errbuf_set(eb, ERR_INVALID, "presence_penalty must be between -2 and 2");
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return errbuf_set(eb, ERR_INVALID, "frequency_penalty must be between -2 and 2");
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 100.0f))
        return errbuf_set(eb, ERR_INVALID, "repetition_penalty must be in (0, 100]");
    if (p->n_logprobs < 0 || p->n_logprobs > SAMP_MAX_LOGPROBS)
        return errbuf_set(eb, ERR_INVALID, "logprobs must be between 0 and %d", SAMP_MAX_LOGPROBS);
    return ERR_OK;
}

err samp_state_init(samp_state *s, int32_t n_vocab, int32_t n_valid, uint64_t seed) {
    memset(s, 0, sizeof(*s));
    if (n_vocab <= 0 || n_valid <= 0) return ERR_INVALID;
    s->n_vocab = n_vocab;
    s->n_valid = n_valid < n_vocab ? n_valid : n_vocab;
    rng_seed(&s->rng, seed);
    s->gen_count = xcalloc((size_t)n_vocab, sizeof(uint16_t));
    s->in_context = xcalloc((size_t)n_vocab, 1);
    s->scratch = xmalloc_array((size_t)n_vocab, sizeof(float));
    s->scratch_ids = xmalloc_array((size_t)n_vocab, sizeof(int32_t));
    if (!s->gen_count || !s->in_context || !s->scratch || !s->scratch_ids) {
        samp_state_fini(s);
        return ERR_NOMEM;
    }
    return ERR_OK;
}

void samp_state_fini(samp_state *s) {
    xfree(s->gen_count);
    xfree(s->in_context);
    xfree(s->scratch);
    xfree(s->scratch_ids);
    memset(s, 0, sizeof(*s));
}

void samp_state_add_prompt(samp_state *s, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < s->n_vocab) s->in_context[ids[i]] = 1;
}

/* Min-heap of (value, id) keeping the k largest; ties prefer the lower id. */
static int heap_less(const float *v, const int32_t *id, int a, int b) {
    return v[a] < v[b] || (v[a] == v[b] && id[a] > id[b]);
}

static void heap_sift_down(float *v, int32_t *id, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap_less(v, id, l, m)) m = l;
        if (r < n && heap_less(v, id, r, m)) m = r;
        if (m == i) return;
        float tv = v[i];
        v[i] = v[m];
        v[m] = tv;
        int32_t ti = id[i];
        id[i] = id[m];
        id[m] = ti;
        i = m;
    }
}

/* The k largest of x[0..n) into (vals, ids), sorted descending (ties: lower id first). Returns the count. */
static int top_k_select(const float *x, int32_t n, int k, float *vals, int32_t *ids) {
    if (k > n) k = n;
    int cnt = 0;
    for (int32_t i = 0; i < n; i++) {
        float xi = x[i];
        if (!(xi > -INFINITY)) continue; /* -inf and NaN are never candidates */
        if (cnt < k) {
            vals[cnt] = xi;
            ids[cnt] = i;
            cnt++;
            if (cnt == k)
                for (int j = k / 2 - 1; j >= 0; j--) heap_sift_down(vals, ids, k, j);
        } else if (xi > vals[0]) {
            vals[0] = xi;
            ids[0] = i;
            heap_sift_down(vals, ids, k, 0);
        }
    }
    if (cnt < k)
        for (int j = cnt / 2 - 1; j >= 0; j--) heap_sift_down(vals, ids, cnt, j);
    /* heap sort: repeatedly move the minimum to the end -> descending order */
    for (int end = cnt - 1; end > 0; end--) {
        float tv = vals[0];
        vals[0] = vals[end];
        vals[end] = tv;
        int32_t ti = ids[0];
        ids[0] = ids[end];
        ids[end] = ti;
        heap_sift_down(vals, ids, end, 0);
    }
    return cnt;
}

static void apply_penalties(samp_state *s, const samp_params *p, float *logits) {
    const int32_t n = s->n_valid;
    if (p->repetition_penalty != 1.0f)
        for (int32_t i = 0; i < n; i++)
            if (s->in_context[i]) logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty
                                                            : logits[i] * p->repetition_penalty;
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f)
        for (int32_t i = 0; i < n; i++)
            if (s->gen_count[i])
                logits[i] -= p->frequency_penalty * (float)s->gen_count[i] + p->presence_penalty;
}

/* The first index of the largest value (NaNs never win). One running maximum is a chain of dependent compares,
 * ~4 cycles an element, which over 51,200 logits was a quarter of a small model's decode step; eight independent
 * maxima, then a scan for the first index holding the winner, run several times faster and give the same answer. */
static int32_t argmax(const float *x, int32_t n) {
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float mx = m[0];
    for (int j = 1; j < 8; j++) mx = m[j] > mx ? m[j] : mx;
    for (i = 0; i < n; i++)
        if (x[i] == mx) return i;
    return 0; /* all NaN or n == 0 */
}

/* The draw samp_pick and samp_pick_top share: v[0..cnt) are candidate logits in descending order (ids beside
 * them), overwritten with their weights exp((v - mx) * inv_t); top_p's nucleus cut, then one uniform number. */
static int32_t draw(samp_state *s, const samp_params *p, float mx, float inv_t, float *v, const int32_t *ids,
                    int32_t cnt) {
    double tot = 0.0;
    for (int32_t i = 0; i < cnt; i++) tot += (v[i] = (float)exp((double)(v[i] - mx) * inv_t));
    if (p->top_p < 1.0f) {
        double acc = 0.0;
        int32_t keep = cnt;
        for (int32_t i = 0; i < cnt; i++) {
            acc += v[i] / tot;
            if (acc >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        cnt = keep;
        tot = 0.0;
        for (int32_t i = 0; i < cnt; i++) tot += v[i];
    }
    double r = rng_uniform(&s->rng) * tot, acc = 0.0;
    for (int32_t i = 0; i < cnt; i++) {
        acc += v[i];
        if (r < acc) return ids[i];
    }
    return ids[cnt - 1];
}

/* The result and the bookkeeping both pickers share; top_v/top_i: the n_logprobs best (value, id), descending. */
static void record(samp_state *s, const samp_params *p, int32_t id, float logit, float lse, const float *top_v,
                   const int32_t *top_i, int n_top, samp_result *out) {
    out->id = id;
    out->logprob = p->want_logprob || p->n_logprobs > 0 ? logit - lse : 0.0f;
    out->n_top = 0;
    if (p->n_logprobs > 0) {
        for (int i = 0; i < n_top && i < p->n_logprobs; i++) {
            out->top_ids[i] = top_i[i];
            out->top_logprobs[i] = top_v[i] - lse;
        }
        out->n_top = n_top < p->n_logprobs ? n_top : p->n_logprobs;
    }
    if (s->gen_count[id] < UINT16_MAX) s->gen_count[id]++;
    s->in_context[id] = 1;
}

void samp_pick(samp_state *s, const samp_params *p, float *logits, samp_result *out) {
    const int32_t n = s->n_valid;
    for (int32_t i = n; i < s->n_vocab; i++) logits[i] = -INFINITY;
    apply_penalties(s, p, logits);

    int32_t arg = argmax(logits, n);
    float mx = logits[arg];
    /* log-sum-exp of the (penalized) distribution, only for logprobs: 51,200 exps are most of a small model's
     * per-token cost, and the one part of a step that batching cannot share */
    float lse = 0;
    if (p->want_logprob || p->n_logprobs > 0) {
        double sum = 0.0;
        for (int32_t i = 0; i < n; i++) sum += exp((double)(logits[i] - mx));
        lse = mx + (float)log(sum);
    }

    int32_t id = arg;
    if (p->temperature > 0.0f && p->top_k != 1) {
        const float inv_t = 1.0f / p->temperature;
        float *v = s->scratch;
        int32_t *ids = s->scratch_ids;
        int32_t cnt;
        if (p->top_k > 0 || p->top_p < 1.0f) {
            /* candidates in descending order: top_k of them, or enough to cover top_p */
            int k = p->top_k > 0 ? p->top_k : SAMP_TOP_K;
            for (;;) {
                cnt = top_k_select(logits, n, k, v, ids);
                if (p->top_p >= 1.0f || cnt == n) break;
                double mass = 0.0;
                for (int32_t i = 0; i < cnt; i++) mass += exp((double)(v[i] - mx) * inv_t);
                double total = 0.0;
                for (int32_t i = 0; i < n; i++) total += exp((double)(logits[i] - mx) * inv_t);
                if (mass / total >= p->top_p || (p->top_k > 0)) break;
                k *= 4;
            }
        } else {
            cnt = n;
            for (int32_t i = 0; i < n; i++) v[i] = logits[i], ids[i] = i;
        }
        id = draw(s, p, mx, inv_t, v, ids, cnt);
    }
    float tv[SAMP_MAX_LOGPROBS];
    int32_t ti[SAMP_MAX_LOGPROBS];
    int c = p->n_logprobs > 0 ? top_k_select(logits, n, p->n_logprobs, tv, ti) : 0;
    record(s, p, id, logits[id], lse, tv, ti, c, out);
}

/* ---- the summary path (samp_top) ----------------------------------------------------------------------------- */

int samp_top_serves(const samp_params *p) {
    if (p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) return 0;
    if (!(p->temperature > 0.0f) || p->top_k == 1) return 1; /* greedy */
    if (p->top_k > 0) return p->top_k <= SAMP_TOP_K;
    return p->top_p < 1.0f;
}

float samp_top_inv_t(const samp_params *p) {
    return samp_top_serves(p) && p->temperature > 0.0f && p->top_k == 0 && p->top_p < 1.0f ? 1.0f / p->temperature
                                                                                             : 0.0f;
}

int samp_pick_top(samp_state *s, const samp_params *p, const samp_top *t, samp_result *out) {
    if (!samp_top_serves(p) || t->n <= 0) return 0;
    const float mx = t->vals[0];
    const float lse = p->want_logprob || p->n_logprobs > 0 ? mx + (float)log(t->sum) : 0.0f;
    int32_t id = t->ids[0];
    float logit = mx;
    if (p->temperature > 0.0f && p->top_k != 1) {
        /* samp_pick's loop, first round: top_k candidates, or SAMP_TOP_K for top_p, which must cover top_p */
        const float inv_t = 1.0f / p->temperature;
        const int32_t k = p->top_k > 0 ? p->top_k : SAMP_TOP_K, cnt = k < t->n ? k : t->n;
        float v[SAMP_TOP_K];
        memcpy(v, t->vals, (size_t)cnt * sizeof(float));
        if (p->top_k == 0 && cnt != s->n_valid) {
            double mass = 0.0;
            for (int32_t i = 0; i < cnt; i++) mass += exp((double)(v[i] - mx) * inv_t);
            /* samp_pick would widen past the candidates; at the edge (within the sums' rounding, added in another
             * order than samp_pick's total) the row decides, so the choice stays samp_pick's */
            const double f = mass / t->sum_t;
            if (!(f >= p->top_p) || fabs(f - p->top_p) < 1e-9) return 0;
        }
        id = draw(s, p, mx, inv_t, v, t->ids, cnt);
        for (int32_t i = 0; i < cnt; i++)
            if (t->ids[i] == id) logit = t->vals[i];
    }
    record(s, p, id, logit, lse, t->vals, t->ids, t->n, out);
    return 1;
}

void samp_top_compute(const float *logits, int32_t n_valid, float inv_t, samp_top *t) {
    memset(t, 0, sizeof(*t));
    t->n = top_k_select(logits, n_valid, SAMP_TOP_K, t->vals, t->ids);
    if (t->n == 0) return;
    const float mx = t->vals[0];
    for (int32_t i = 0; i < n_valid; i++) {
        if (!(logits[i] > -INFINITY)) continue; /* -inf adds 0; NaN never counts */
        t->sum += exp((double)(logits[i] - mx));
        if (inv_t > 0.0f) t->sum_t += exp((double)(logits[i] - mx) * inv_t);
    }
}
