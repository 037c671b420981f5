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

err gen_out_init(gen_out *o, const eng_model *em, const tok *tk, const gen_params *p, const int32_t *prompt,
                 size_t n_prompt, gen_text_fn on_text, gen_token_fn on_token, void *ud, errbuf *eb) {
    memset(o, 0, sizeof(*o));
    const int32_t V = eng_model_config(em)->vocab_size;
    const int32_t n_valid = tok_vocab_size(tk) < V ? tok_vocab_size(tk) : V;
    o->tk = tk;
    o->p = p;
    o->on_text = on_text;
    o->on_token = on_token;
    o->ud = ud;
    gen_stop_init(&o->st, p->stop, p->n_stop);
    tok_stream_init(&o->ts);
    if (samp_state_init(&o->ss, V, n_valid, p->seed) != ERR_OK) {
        gen_out_fini(o);
        return errbuf_set(eb, ERR_NOMEM, "out of memory");
    }
    samp_state_add_prompt(&o->ss, prompt, n_prompt);
    return ERR_OK;
}

void gen_out_fini(gen_out *o) {
    samp_state_fini(&o->ss);
    xfree(o->text.p);
    o->text.p = NULL;
}

/* Emits buf[emitted..end) (if any); a callback asking to stop ends the sequence as CANCELLED. */
static void out_emit(gen_out *o, size_t end, const samp_result *sr) {
    if (end <= o->emitted) return;
    int stop = o->on_text && o->on_text(o->ud, o->text.p + o->emitted, end - o->emitted, sr);
    o->emitted = end;
    if (stop && !o->done) {
        o->done = 1;
        o->finish = GEN_FINISH_CANCELLED;
    }
}

err gen_out_end(gen_out *o, gen_finish finish, errbuf *eb) {
    o->done = 1;
    o->finish = finish;
    if (finish == GEN_FINISH_CANCELLED || finish == GEN_FINISH_STOP) return ERR_OK;
    /* release held-back text (an incomplete stop prefix, an incomplete UTF-8 tail), up to a stop string in it */
    char piece[512];
    size_t np = tok_stream_flush(&o->ts, piece, sizeof(piece));
    if (xbuf_append(&o->text, piece, np) != 0) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    long hit = gen_stop_find(&o->st, o->text.p, o->text.len, o->emitted);
    size_t end = o->text.len;
    if (hit >= 0) {
        end = (size_t)hit;
        o->finish = GEN_FINISH_STOP;
    }
    out_emit(o, end, NULL);
    return ERR_OK;
}

/* Handles the token the sampler picked: EOS, text, stop strings, the length limit. */
static err accept(gen_out *o, const samp_result *sr_, int32_t *next, errbuf *eb) {
    const gen_params *p = o->p;
    samp_result sr = *sr_;
    o->n_generated++;
    if (o->on_token) o->on_token(o->ud, &sr);
    if (sr.id == tok_eos_id(o->tk) && !p->ignore_eos) return gen_out_end(o, GEN_FINISH_EOS, eb);
    char piece[512];
    size_t np = tok_stream_push(&o->ts, o->tk, sr.id, piece, sizeof(piece));
    if (xbuf_append(&o->text, piece, np) != 0) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    long hit = gen_stop_find(&o->st, o->text.p, o->text.len, o->emitted);
    if (hit >= 0) {
        out_emit(o, (size_t)hit, &sr);
        o->text.len = o->emitted = (size_t)hit;
        if (!o->done) o->done = 1, o->finish = GEN_FINISH_STOP;
        return ERR_OK;
    }
    out_emit(o, o->text.len - gen_stop_holdback(&o->st, o->text.p, o->text.len, o->emitted), &sr);
    if (o->done) return ERR_OK; /* the callback cancelled */
    if (o->n_generated >= p->max_tokens) return gen_out_end(o, GEN_FINISH_LENGTH, eb);
    *next = sr.id;
    return ERR_OK;
}

err gen_out_push(gen_out *o, float *logits, int32_t *next, errbuf *eb) {
    samp_result sr;
    samp_pick(&o->ss, &o->p->samp, logits, &sr);
    return accept(o, &sr, next, eb);
}

int gen_out_wants_top(const gen_out *o, const eng_model *em, float *inv_t) {
    if (!eng_model_logits_on_device(em) || !samp_top_serves(&o->p->samp)) return 0;
    *inv_t = samp_top_inv_t(&o->p->samp);
    return 1;
}

err gen_out_push_top(gen_out *o, const samp_top *t, int32_t *next, int *served, errbuf *eb) {
    samp_result sr;
    *served = samp_pick_top(&o->ss, &o->p->samp, t, &sr);
    return *served ? accept(o, &sr, next, eb) : ERR_OK;
}

/* The next token from the last forward's one logits row: from its summary when `top` (gen_out_wants_top), the
 * row read into logits only if the sampler needs it after all. */
static err push(gen_out *o, eng_model *em, int top, float inv_t, float *logits, int32_t *next, errbuf *eb) {
    if (top) {
        samp_top t;
        int served = 0;
        err rc = eng_model_logits_top(em, o->ss.n_valid, &inv_t, &t, eb);
        if (rc == ERR_OK) rc = gen_out_push_top(o, &t, next, &served, eb);
        if (rc != ERR_OK || served) return rc;
        if ((rc = eng_model_logits_row(em, 0, logits, eb)) != ERR_OK) return rc;
    }
    return gen_out_push(o, logits, next, eb);
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

    int32_t *blocks = xmalloc_array((size_t)n_blocks + 1, sizeof(int32_t));
    int32_t *pos = xmalloc_array((size_t)max_rows, sizeof(int32_t));
    float *logits = xmalloc_array((size_t)V, sizeof(float));
    gen_out o;
    memset(&o, 0, sizeof(o));
    if (!blocks || !pos || !logits) {
        rc = errbuf_set(eb, ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = gen_out_init(&o, em, tk, p, prompt, n_prompt, on_text, on_token, ud, eb)) != ERR_OK) goto done;
    for (int32_t i = 0; i < n_blocks; i++) blocks[i] = i;
    res->n_prompt = (int32_t)n_prompt;
    float inv_t = 0;
    const int top = gen_out_wants_top(&o, em, &inv_t);
    float *const out = top ? NULL : logits; /* with summaries the rows stay on the device */

    /* prefill in chunks of max_rows; logits only for the last prompt token */
    uint64_t t0 = clock_ns();
    for (size_t done_rows = 0; done_rows < n_prompt;) {
        if (p->cancel && atomic_load(p->cancel)) {
            gen_out_end(&o, GEN_FINISH_CANCELLED, eb);
            goto done;
        }
        int32_t n = (int32_t)(n_prompt - done_rows < (size_t)max_rows ? n_prompt - done_rows : (size_t)max_rows);
        for (int32_t i = 0; i < n; i++) pos[i] = (int32_t)done_rows + i;
        eng_seq seq = {0, n, (int32_t)done_rows, blocks, n_blocks};
        eng_batch b = {1, &seq, n, prompt + done_rows, pos};
        int last = done_rows + (size_t)n == n_prompt;
        int32_t lr = n - 1;
        if ((rc = eng_model_forward(em, &b, &lr, last ? 1 : 0, out, eb)) != ERR_OK) goto done;
        done_rows += (size_t)n;
    }
    uint64_t t1 = clock_ns();
    res->prefill_ns = t1 - t0;
    if (p->max_tokens == 0 && (rc = gen_out_end(&o, GEN_FINISH_LENGTH, eb)) != ERR_OK) goto done;
    for (int32_t at = (int32_t)n_prompt; !o.done; at++) {
        int32_t next;
        if ((rc = push(&o, em, top, inv_t, logits, &next, eb)) != ERR_OK || o.done) break;
        if (p->cancel && atomic_load(p->cancel)) {
            gen_out_end(&o, GEN_FINISH_CANCELLED, eb);
            break;
        }
        /* decode: feed the sampled token */
        eng_seq seq = {0, 1, at, blocks, n_blocks};
        pos[0] = at;
        eng_batch b = {1, &seq, 1, &next, pos};
        int32_t lr = 0;
        if ((rc = eng_model_forward(em, &b, &lr, 1, out, eb)) != ERR_OK) goto done;
    }
    res->decode_ns = clock_ns() - t1;
done:
    res->finish = o.finish;
    res->n_generated = o.n_generated;
    gen_out_fini(&o);
    xfree(logits);
    xfree(pos);
    xfree(blocks);
    return rc;
}
