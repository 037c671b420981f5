/* gen.c - the single-sequence generation loop (see gen.h). */
#include "gen.h"

#include <string.h>

#include "alloc.h"
#include "clock.h"

const char *gen_finish_name(gen_finish f) {
    switch (f) {
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_STOP:
    case GEN_FINISH_EOS: return "stop";
    case GEN_FINISH_CANCELLED: return "cancelled";
    }
    return "?";
}

void gen_stop_init(gen_stop *st, const char *const *stops, int32_t n) {
    memset(st, 0, sizeof(*st));
    for (int32_t i = 0; i < n && st->n < GEN_MAX_STOP; i++)
        if (stops[i] && stops[i][0]) {
            st->s[st->n] = stops[i];
            st->len[st->n] = strlen(stops[i]);
            st->n++;
        }
}

long gen_stop_find(const gen_stop *st, const char *text, size_t len, size_t from) {
    long best = -1;
    for (int32_t i = 0; i < st->n; i++) {
        if (st->len[i] > len) continue;
        const char *p = memmem(text + from, len - from, st->s[i], st->len[i]);
        if (p && (best < 0 || p - text < best)) best = p - text;
    }
    return best;
}

size_t gen_stop_holdback(const gen_stop *st, const char *text, size_t len, size_t from) {
    size_t hold = 0;
    for (int32_t i = 0; i < st->n; i++) {
        size_t maxk = st->len[i] - 1;
        if (maxk > len - from) maxk = len - from;
        for (size_t k = maxk; k > hold; k--)
            if (!memcmp(text + len - k, st->s[i], k)) {
                hold = k;
                break;
            }
    }
    return hold;
}

err gen_check(const eng_model *em, size_t n_prompt, const gen_params *p, errbuf *eb) {
    const model_config *c = eng_model_config(em);
    if (n_prompt == 0) return errbuf_set(eb, ERR_INVALID, "the prompt is empty (it must have at least one token)");
    if (p->max_tokens < 0) return errbuf_set(eb, ERR_INVALID, "max_tokens must be >= 0");
    if ((int64_t)n_prompt + p->max_tokens > c->n_positions)
        return errbuf_set(eb, ERR_INVALID,
                          "prompt (%zu tokens) + max_tokens (%d) exceeds the model's context of %d tokens", n_prompt,
                          p->max_tokens, c->n_positions);
    int64_t cap = (int64_t)eng_kv_blocks(eng_model_kv((eng_model *)em)) * ENG_KV_BLOCK;
    if ((int64_t)n_prompt + p->max_tokens > cap)
        return errbuf_set(eb, ERR_INVALID, "prompt + max_tokens exceeds the KV cache (%lld tokens)", (long long)cap);
    return samp_params_check(&p->samp, eb);
}

/* Text emitted so far and the part still held back (incomplete stop string). */
typedef struct text_acc {
    char *buf;
    size_t len, cap, emitted;
} text_acc;

static err acc_append(text_acc *a, const char *s, size_t n) {
    if (a->len + n + 1 > a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 1024;
        while (nc < a->len + n + 1) nc *= 2;
        char *nb = xrealloc(a->buf, nc);
        if (!nb) return ERR_NOMEM;
        a->buf = nb;
        a->cap = nc;
    }
    memcpy(a->buf + a->len, s, n);
    a->len += n;
    return ERR_OK;
}

err gen_run(eng_model *em, const tok *tk, const int32_t *prompt, size_t n_prompt, const gen_params *p,
            gen_text_fn on_text, gen_token_fn on_token, void *ud, gen_result *res, errbuf *eb) {
    memset(res, 0, sizeof(*res));
    err rc = gen_check(em, n_prompt, p, eb);
    if (rc != ERR_OK) return rc;
    const model_config *c = eng_model_config(em);
    const int32_t V = c->vocab_size, max_rows = eng_model_max_rows(em);
    const int32_t n_ctx = (int32_t)n_prompt + p->max_tokens;
    const int32_t n_blocks = (n_ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
    int32_t n_valid = tok_vocab_size(tk) < V ? tok_vocab_size(tk) : V;

    int32_t *blocks = xmalloc_array((size_t)n_blocks + 1, sizeof(int32_t));
    int32_t *pos = xmalloc_array((size_t)max_rows, sizeof(int32_t));
    float *logits = xmalloc_array((size_t)V, sizeof(float));
    samp_state ss;
    memset(&ss, 0, sizeof(ss));
    text_acc acc = {0};
    gen_stop st;
    gen_stop_init(&st, p->stop, p->n_stop);
    tok_stream ts;
    tok_stream_init(&ts);
    if (!blocks || !pos || !logits) {
        rc = errbuf_set(eb, ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = samp_state_init(&ss, V, n_valid, p->seed)) != ERR_OK) {
        errbuf_set(eb, rc, "out of memory");
        goto done;
    }
    samp_state_add_prompt(&ss, prompt, n_prompt);
    for (int32_t i = 0; i < n_blocks; i++) blocks[i] = i;
    res->n_prompt = (int32_t)n_prompt;

    /* prefill in chunks of max_rows; logits only for the last prompt token */
    uint64_t t0 = clock_ns();
    for (size_t done_rows = 0; done_rows < n_prompt;) {
        if (p->cancel && atomic_load(p->cancel)) {
            res->finish = GEN_FINISH_CANCELLED;
            goto done;
        }
        int32_t n = (int32_t)(n_prompt - done_rows < (size_t)max_rows ? n_prompt - done_rows : (size_t)max_rows);
        for (int32_t i = 0; i < n; i++) pos[i] = (int32_t)done_rows + i;
        eng_seq seq = {0, n, (int32_t)done_rows, blocks, n_blocks};
        eng_batch b = {1, &seq, n, prompt + done_rows, pos};
        int last = done_rows + (size_t)n == n_prompt;
        int32_t lr = n - 1;
        if ((rc = eng_model_forward(em, &b, &lr, last ? 1 : 0, logits, eb)) != ERR_OK) goto done;
        done_rows += (size_t)n;
    }
    uint64_t t1 = clock_ns();
    res->prefill_ns = t1 - t0;

    res->finish = GEN_FINISH_LENGTH;
    char piece[512];
    for (int32_t step = 0; step < p->max_tokens; step++) {
        samp_result sr;
        samp_pick(&ss, &p->samp, logits, &sr);
        res->n_generated++;
        if (on_token) on_token(ud, &sr);
        if (sr.id == tok_eos_id(tk) && !p->ignore_eos) {
            res->finish = GEN_FINISH_EOS;
            break;
        }
        size_t np = tok_stream_push(&ts, tk, sr.id, piece, sizeof(piece));
        if ((rc = acc_append(&acc, piece, np)) != ERR_OK) {
            errbuf_set(eb, rc, "out of memory");
            goto done;
        }
        size_t scan_from = acc.emitted;
        long hit = gen_stop_find(&st, acc.buf, acc.len, scan_from);
        if (hit >= 0) {
            if ((size_t)hit > acc.emitted && on_text &&
                on_text(ud, acc.buf + acc.emitted, (size_t)hit - acc.emitted, &sr)) {
                res->finish = GEN_FINISH_CANCELLED;
                goto done;
            }
            acc.emitted = acc.len = (size_t)hit;
            res->finish = GEN_FINISH_STOP;
            break;
        }
        size_t safe = acc.len - gen_stop_holdback(&st, acc.buf, acc.len, acc.emitted);
        if (safe > acc.emitted) {
            if (on_text && on_text(ud, acc.buf + acc.emitted, safe - acc.emitted, &sr)) {
                acc.emitted = safe;
                res->finish = GEN_FINISH_CANCELLED;
                goto done;
            }
            acc.emitted = safe;
        }
        if (step + 1 == p->max_tokens) break;
        if (p->cancel && atomic_load(p->cancel)) {
            res->finish = GEN_FINISH_CANCELLED;
            goto done;
        }
        /* decode: feed the sampled token */
        int32_t at = (int32_t)n_prompt + step;
        eng_seq seq = {0, 1, at, blocks, n_blocks};
        pos[0] = at;
        eng_batch b = {1, &seq, 1, &sr.id, pos};
        int32_t lr = 0;
        if ((rc = eng_model_forward(em, &b, &lr, 1, logits, eb)) != ERR_OK) goto done;
    }
    /* release held-back text (an incomplete stop prefix, an incomplete UTF-8 tail) unless a stop string ended it */
    if (res->finish != GEN_FINISH_STOP) {
        size_t np = tok_stream_flush(&ts, piece, sizeof(piece));
        if ((rc = acc_append(&acc, piece, np)) != ERR_OK) goto done;
        long hit = gen_stop_find(&st, acc.buf, acc.len, acc.emitted);
        size_t end = acc.len;
        if (hit >= 0) {
            end = (size_t)hit;
            res->finish = GEN_FINISH_STOP;
        }
        if (end > acc.emitted && on_text) on_text(ud, acc.buf + acc.emitted, end - acc.emitted, NULL);
        acc.emitted = end;
    }
    res->decode_ns = clock_ns() - t1;
done:
    samp_state_fini(&ss);
    xfree(acc.buf);
    xfree(logits);
    xfree(pos);
    xfree(blocks);
    return rc;
}
