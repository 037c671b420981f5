/* srv_v1.c - FauxPilot/OpenAI completions (/v1/completions, /v1/engines/{engine}/completions) and /v1/models.
 *
 * Path of one request: parse and validate the body (FauxPilot's defaults, OpenAI's field semantics) -> tokenize
 * in this HTTP thread -> check the context (FauxPilot's 400 message) -> submit all n choices at once (seeds seed+i)
 * -> either collect every event and answer one JSON document, or stream one SSE event per engine event.
 *
 * DESIGN (streaming): the handler waits for the first event of choice 0 before it answers, so queueing, a full
 * queue or an engine failure before the first token still get a real status code. Then a callback response takes
 * over: MHD calls stream_read in this connection's thread whenever it can send; stream_read blocks on the engine
 * (polling the socket for a client that left) and formats the next `data: {json}\r\n\r\n` event. Choices are sent
 * one after another; a later choice's events wait in its own queue meanwhile. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "srv_impl.h"

/* --- choices: text + tokens as events arrive ------------------------------------------------------------------ */

void srv_choice_fini(srv_choice *c) {
    xfree(c->text.p);
    xfree(c->toks);
    memset(c, 0, sizeof(*c));
}

err srv_choice_add(srv_choice *c, const sched_event *ev) {
    if (ev->len && xbuf_append(&c->text, ev->text, ev->len) != 0) return ERR_NOMEM;
    if (ev->n_tokens) {
        if (c->n_toks + ev->n_tokens > c->cap_toks) {
            int32_t nc = c->cap_toks ? c->cap_toks * 2 : 16;
            while (nc < c->n_toks + ev->n_tokens) nc *= 2;
            samp_result *nt = xrealloc(c->toks, (size_t)nc * sizeof(*nt));
            if (!nt) return ERR_NOMEM;
            c->toks = nt;
            c->cap_toks = nc;
        }
        memcpy(c->toks + c->n_toks, ev->tokens, (size_t)ev->n_tokens * sizeof(samp_result));
        c->n_toks += ev->n_tokens;
    }
    return ERR_OK;
}

static err timed_out(srv_req *r, errbuf *eb) {
    if (!r->note[0]) snprintf(r->note, sizeof(r->note), "request timed out");
    return errbuf_set(eb, ERR_TIMEOUT, "the completion did not finish within the request timeout");
}

static err wait_failure(srv_req *r, errbuf *eb) {
    if (r->cancelled) return errbuf_set(eb, ERR_CANCELLED, "client disconnected");
    if (atomic_load(&r->s->stopping)) return errbuf_set(eb, ERR_CANCELLED, "the server is shutting down");
    return timed_out(r, eb);
}

/* Whether a DONE event still gets an answer (ERR_OK). The engine enforces the same deadline srv_wait_event checks, and
 * whichever notices first, the client must see one answer for one cause: a deadline stop is the request timeout (504,
 * or a cut stream), never a cancellation. Other cancellations are the client leaving or shutdown. */
static err done_failure(srv_req *r, const sched_event *ev, errbuf *eb) {
    if (ev->deadline) return timed_out(r, eb);
    if (ev->finish == GEN_FINISH_CANCELLED) return wait_failure(r, eb);
    return ERR_OK;
}

/* The prompt is counted once however many choices ran it, so its cached part is the best any choice got. */
static void note_cached(srv_req *r, int32_t n_cached) {
    if (n_cached > r->cached_tokens) r->cached_tokens = n_cached;
}

err srv_collect(srv_req *r, sched_req *q, uint64_t t_submit, uint64_t deadline_ns, srv_choice *c, errbuf *eb) {
    for (;;) {
        sched_event ev;
        if (!srv_wait_event(r, q, &ev, deadline_ns)) return wait_failure(r, eb);
        err rc = ERR_OK;
        if (ev.kind == SCHED_EV_ERROR) {
            rc = errbuf_set(eb, ev.code, "%s", ev.msg);
        } else if ((rc = srv_choice_add(c, &ev)) != ERR_OK) {
            errbuf_set(eb, rc, "out of memory");
        } else if (ev.kind == SCHED_EV_DONE) {
            c->finish = ev.finish;
            c->n_prompt = ev.n_prompt;
            c->n_gen = ev.n_generated;
            c->n_cached = ev.n_cached;
            note_cached(r, ev.n_cached);
            srv_metrics_choice(&r->s->metrics, &ev);
            double e = (double)(clock_ns() - t_submit) * 1e-9;
            r->engine_s = r->engine_s < 0 ? e : r->engine_s + e;
            rc = done_failure(r, &ev, eb);
        }
        int kind = ev.kind;
        sched_event_fini(&ev);
        if (rc != ERR_OK || kind == SCHED_EV_DONE) return rc;
    }
}

enum MHD_Result srv_reply_collect_err(srv_req *r, err code, const char *msg) {
    if (code == ERR_CANCELLED && r->cancelled) {
        r->status = 499; /* nginx's "client closed request": nobody reads this answer */
        return MHD_NO;
    }
    return srv_reply_err(r, code, msg);
}

/* --- token strings and logprobs ------------------------------------------------------------------------------ */

static int utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!k || i + k > n || (k == 2 && c < 0xc2) || (k == 4 && c > 0xf4)) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return 0;
        if (k == 3 && ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f))) return 0;
        if (k == 4 && ((c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))) return 0;
        i += k;
    }
    return 1;
}

json_t *srv_token_string(const tok *tk, int32_t id) {
    size_t n;
    const char *b = tok_token_bytes(tk, id, &n);
    if (!b) return json_string("");
    if (utf8_valid((const unsigned char *)b, n)) return json_stringn(b, n);
    char buf[6 * 64 + 8];
    size_t o = (size_t)snprintf(buf, sizeof(buf), "bytes:");
    for (size_t i = 0; i < n && o + 5 < sizeof(buf); i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\\x%02x", (unsigned char)b[i]);
    return json_stringn(buf, o);
}

/* Unicode characters in bytes (partial characters count where they start), for OpenAI's character offsets. */
static size_t n_chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

typedef struct lp_acc {
    json_t *obj, *tokens, *token_logprobs, *top_logprobs, *text_offset;
} lp_acc;

static int lp_init(lp_acc *a) {
    a->tokens = json_array();
    a->token_logprobs = json_array();
    a->top_logprobs = json_array();
    a->text_offset = json_array();
    a->obj = json_object();
    if (!a->obj || !a->tokens || !a->token_logprobs || !a->top_logprobs || !a->text_offset) {
        json_decref(a->obj);
        json_decref(a->tokens);
        json_decref(a->token_logprobs);
        json_decref(a->top_logprobs);
        json_decref(a->text_offset);
        memset(a, 0, sizeof(*a));
        return -1;
    }
    /* OpenAI's key order */
    json_object_set_new(a->obj, "tokens", a->tokens);
    json_object_set_new(a->obj, "token_logprobs", a->token_logprobs);
    json_object_set_new(a->obj, "top_logprobs", a->top_logprobs);
    json_object_set_new(a->obj, "text_offset", a->text_offset);
    return 0;
}

/* Prompt tokens (echo): we do not compute prompt logprobs, so they are null. *char_off advances. */
static void lp_add_prompt(lp_acc *a, const tok *tk, const int32_t *ids, size_t n, size_t *char_off) {
    for (size_t i = 0; i < n; i++) {
        size_t bl;
        const char *b = tok_token_bytes(tk, ids[i], &bl);
        json_array_append_new(a->tokens, srv_token_string(tk, ids[i]));
        json_array_append_new(a->token_logprobs, json_null());
        json_array_append_new(a->top_logprobs, json_null());
        json_array_append_new(a->text_offset, json_integer((json_int_t)*char_off));
        *char_off += b ? n_chars(b, bl) : 0;
    }
}

/* Sampled tokens whose text starts before byte `limit` of the completion (*byte_pos is where the next token's
 * text starts): text cut by a stop string or EOS drops the tokens past the cut. */
static void lp_add_tokens(lp_acc *a, const tok *tk, const samp_result *t, int32_t n, int n_top, size_t limit,
                          size_t *byte_pos, size_t *char_off) {
    for (int32_t i = 0; i < n; i++) {
        size_t bl;
        const char *b = tok_token_bytes(tk, t[i].id, &bl);
        if (*byte_pos >= limit) return;
        json_array_append_new(a->tokens, srv_token_string(tk, t[i].id));
        json_array_append_new(a->token_logprobs, json_real(t[i].logprob));
        json_t *top = json_object();
        int32_t k = t[i].n_top < n_top ? t[i].n_top : n_top;
        for (int32_t j = 0; j < k && top; j++) {
            json_t *s = srv_token_string(tk, t[i].top_ids[j]);
            if (s) json_object_set_new(top, json_string_value(s), json_real(t[i].top_logprobs[j]));
            json_decref(s);
        }
        json_t *s = srv_token_string(tk, t[i].id); /* the sampled token is always there, as with OpenAI */
        if (s && top && !json_object_get(top, json_string_value(s)))
            json_object_set_new(top, json_string_value(s), json_real(t[i].logprob));
        json_decref(s);
        json_array_append_new(a->top_logprobs, top ? top : json_null());
        json_array_append_new(a->text_offset, json_integer((json_int_t)*char_off));
        *byte_pos += b ? bl : 0;
        *char_off += b ? n_chars(b, bl) : 0;
    }
}

/* --- request parsing ----------------------------------------------------------------------------------------- */

typedef struct v1_req {
    json_t *root;
    const char *model;
    const char *prompt;
    size_t prompt_len;
    int32_t max_tokens;
    int n;
    int stream, echo;
    int logprobs; /* -1 = off */
    int has_seed;
    uint64_t seed;
    gen_params gp;
    int32_t *ids;
    size_t n_ids;
    char id[40];
    long long created;
} v1_req;

/* A number field: absent or null -> keeps *out. Wrong type -> message. */
static const char *get_num(json_t *root, const char *key, double *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return NULL;
    if (!json_is_number(v)) return "must be a number";
    *out = json_number_value(v);
    return NULL;
}

static const char *get_int(json_t *root, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return NULL;
    long long x;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15)
        x = (long long)json_real_value(v);
    else return "must be an integer";
    if (x < lo || x > hi) return "is out of range";
    *out = x;
    return NULL;
}

static const char *get_bool(json_t *root, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return NULL;
    if (!json_is_boolean(v)) return "must be a boolean";
    *out = json_is_true(v);
    return NULL;
}

static enum MHD_Result bad_param(srv_req *r, const char *param, const char *what, long long lo, long long hi) {
    char m[256];
    if (!strcmp(what, "is out of range"))
        snprintf(m, sizeof(m), "'%s' must be between %lld and %lld", param, lo, hi);
    else snprintf(m, sizeof(m), "'%s' %s", param, what);
    return srv_reply_status(r, 400, m, param);
}

/* Parses and validates; on failure it has replied (*handled = result). */
static int v1_parse(srv_req *r, v1_req *q, enum MHD_Result *res) {
    srv *s = r->s;
    json_error_t je;
    q->root = r->body ? json_loadb(r->body, r->body_len, 0, &je) : NULL;
    if (!q->root) {
        char m[300];
        if (!r->body) snprintf(m, sizeof(m), "the request body is empty; expected a JSON object");
        else snprintf(m, sizeof(m), "the body is not valid JSON: %s (at byte %d)", je.text, je.position);
        *res = srv_reply_status(r, 400, m, NULL);
        return -1;
    }
    if (!json_is_object(q->root)) {
        *res = srv_reply_status(r, 400, "the request body must be a JSON object", NULL);
        return -1;
    }
    json_t *root = q->root;
    const char *e;
    json_t *v = json_object_get(root, "model");
    if (v && !json_is_null(v) && !json_is_string(v)) return *res = bad_param(r, "model", "must be a string", 0, 0), -1;
    q->model = json_is_string(v) ? json_string_value(v) : NULL;

    v = json_object_get(root, "prompt");
    if (json_is_array(v) && json_array_size(v) == 1) v = json_array_get(v, 0);
    if (v && !json_is_null(v) && !json_is_string(v))
        return *res = bad_param(r, "prompt", "must be a string (one prompt per request)", 0, 0), -1;
    q->prompt = json_is_string(v) ? json_string_value(v) : "";
    q->prompt_len = json_is_string(v) ? json_string_length(v) : 0;

    v = json_object_get(root, "suffix");
    if (v && !json_is_null(v) && !json_is_string(v)) return *res = bad_param(r, "suffix", "must be a string", 0, 0), -1;

    long long x = 16;
    if ((e = get_int(root, "max_tokens", 0, 1 << 20, &x))) return *res = bad_param(r, "max_tokens", e, 0, 1 << 20), -1;
    q->max_tokens = (int32_t)x;
    x = 1;
    if ((e = get_int(root, "n", 1, s->cfg.max_n, &x))) return *res = bad_param(r, "n", e, 1, s->cfg.max_n), -1;
    q->n = (int)x;
    x = -1;
    if ((e = get_int(root, "logprobs", 0, SAMP_MAX_LOGPROBS, &x)))
        return *res = bad_param(r, "logprobs", e, 0, SAMP_MAX_LOGPROBS), -1;
    q->logprobs = (int)x;
    x = 0;
    if ((e = get_int(root, "top_k", 0, 1 << 20, &x))) return *res = bad_param(r, "top_k", e, 0, 1 << 20), -1;
    q->gp.samp = samp_params_default();
    q->gp.samp.top_k = (int32_t)x;
    json_t *sv = json_object_get(root, "seed");
    if (sv && !json_is_null(sv)) {
        if (!json_is_integer(sv)) return *res = bad_param(r, "seed", "must be an integer", 0, 0), -1;
        q->has_seed = 1;
        q->seed = (uint64_t)json_integer_value(sv);
    }
    if ((e = get_bool(root, "stream", &q->stream))) return *res = bad_param(r, "stream", e, 0, 0), -1;
    if ((e = get_bool(root, "echo", &q->echo))) return *res = bad_param(r, "echo", e, 0, 0), -1;

    double temperature = 0.6, top_p = 1.0, pp = 0, fp = 0, rp = 1;
    static const char *nums[] = {"temperature", "top_p", "presence_penalty", "frequency_penalty",
                                 "repetition_penalty"};
    double *dst[] = {&temperature, &top_p, &pp, &fp, &rp};
    for (int i = 0; i < 5; i++)
        if ((e = get_num(root, nums[i], dst[i]))) return *res = bad_param(r, nums[i], e, 0, 0), -1;
    /* OpenAI's limits for its own fields; FauxPilot's temperature 0 = greedy carries over */
    if (!(temperature >= 0 && temperature <= 2))
        return *res = srv_reply_status(r, 400, "'temperature' must be between 0 and 2", "temperature"), -1;
    if (!(top_p > 0 && top_p <= 1)) {
        if (top_p == 0) temperature = 0; /* top_p 0 keeps only the best token: greedy */
        else return *res = srv_reply_status(r, 400, "'top_p' must be between 0 and 1", "top_p"), -1;
        top_p = 1;
    }
    if (!(pp >= -2 && pp <= 2))
        return *res = srv_reply_status(r, 400, "'presence_penalty' must be between -2 and 2", "presence_penalty"), -1;
    if (!(fp >= -2 && fp <= 2))
        return *res = srv_reply_status(r, 400, "'frequency_penalty' must be between -2 and 2", "frequency_penalty"),
               -1;
    if (!(rp > 0 && rp <= 100))
        return *res = srv_reply_status(r, 400, "'repetition_penalty' must be greater than 0 (1 = off) and at most 100",
                                       "repetition_penalty"),
               -1;
    q->gp.samp.temperature = (float)temperature;
    q->gp.samp.top_p = (float)top_p;
    q->gp.samp.presence_penalty = (float)pp;
    q->gp.samp.frequency_penalty = (float)fp;
    q->gp.samp.repetition_penalty = (float)rp;
    q->gp.samp.n_logprobs = q->logprobs > 0 ? q->logprobs : 0;
    q->gp.samp.want_logprob = q->logprobs >= 0;
    q->gp.max_tokens = q->max_tokens;

    v = json_object_get(root, "stop");
    if (json_is_string(v)) {
        if (strlen(json_string_value(v)) != json_string_length(v))
            return *res = srv_reply_status(r, 400, "'stop' strings must not contain NUL", "stop"), -1;
        if (json_string_length(v)) q->gp.stop[q->gp.n_stop++] = json_string_value(v);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it) {
            if (!json_is_string(it)) return *res = bad_param(r, "stop", "must be a string or a list of strings", 0, 0), -1;
            if (!json_string_length(it)) continue;
            if (strlen(json_string_value(it)) != json_string_length(it))
                return *res = srv_reply_status(r, 400, "'stop' strings must not contain NUL", "stop"), -1;
            if (q->gp.n_stop == GEN_MAX_STOP) {
                char m[96];
                snprintf(m, sizeof(m), "'stop' may hold at most %d strings", GEN_MAX_STOP);
                return *res = srv_reply_status(r, 400, m, "stop"), -1;
            }
            q->gp.stop[q->gp.n_stop++] = json_string_value(it);
        }
    } else if (v && !json_is_null(v)) {
        return *res = bad_param(r, "stop", "must be a string or a list of strings", 0, 0), -1;
    }
    return 0;
}

/* --- the handler --------------------------------------------------------------------------------------------- */

typedef struct v1_stream {
    srv_req *r;
    v1_req q;          /* owns root and ids */
    sched_req *reqs[128];
    uint64_t t_submit;
    uint64_t deadline;
    int cur;           /* choice being streamed */
    int finished;      /* [DONE] (or the error event) is queued */
    int failed;        /* end with an error after flushing out */
    sched_event pending; /* the first event, read before the headers went out */
    int has_pending;
    int started;       /* the current choice has sent its first chunk */
    size_t byte_pos, char_off; /* logprobs bookkeeping for the current choice */
    size_t text_total;
    int32_t completion_tokens;
    xbuf out;          /* SSE bytes produced; out.p[out_pos..out.len) not yet handed to libmicrohttpd */
    size_t out_pos;
} v1_stream;

static void release_all(sched_req **reqs, int n) {
    for (int i = 0; i < n; i++) {
        sched_release(reqs[i]);
        reqs[i] = NULL;
    }
}

static const char *model_of(srv_req *r, const v1_req *q) { return q->model ? q->model : r->s->cfg.model_name; }

/* {"id","model","object","created","choices":[...]} — FauxPilot's key order. */
static json_t *envelope(srv_req *r, const v1_req *q, json_t *choices) {
    return json_pack("{s:s,s:s,s:s,s:I,s:o}", "id", q->id, "model", model_of(r, q), "object", "text_completion",
                     "created", (json_int_t)q->created, "choices", choices);
}

static int out_append(v1_stream *st, const char *s, size_t n) { return xbuf_append(&st->out, s, n); }

/* Appends `data: <j>\r\n\r\n` (j consumed). */
static int out_event(v1_stream *st, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!s) return -1;
    int rc = out_append(st, "data: ", 6) || out_append(st, s, strlen(s)) || out_append(st, "\r\n\r\n", 4);
    free(s);
    return rc;
}

/* One SSE chunk for the current choice from an engine event. */
static int stream_chunk(v1_stream *st, const sched_event *ev) {
    srv_req *r = st->r;
    const tok *tk = r->s->tk;
    v1_req *q = &st->q;
    json_t *lp = json_null();
    int first = !st->started;
    st->started = 1;
    if (q->logprobs >= 0) {
        lp_acc a;
        if (lp_init(&a)) return -1;
        if (first) st->char_off = n_chars(q->prompt, q->prompt_len);
        if (first && q->echo) {
            size_t off = 0;
            lp_add_prompt(&a, tk, q->ids, q->n_ids, &off);
        }
        st->text_total += ev->len;
        /* a TEXT event's tokens all have text in the stream by now; DONE's tokens only up to the cut */
        size_t limit = ev->kind == SCHED_EV_TEXT ? (size_t)-1 : st->text_total;
        lp_add_tokens(&a, tk, ev->tokens, ev->n_tokens, q->logprobs, limit, &st->byte_pos, &st->char_off);
        if (ev->kind == SCHED_EV_DONE && json_array_size(a.tokens) == 0 && !(first && q->echo)) {
            json_decref(a.obj);
        } else {
            json_decref(lp);
            lp = a.obj;
        }
    } else {
        st->text_total += ev->len;
    }
    json_t *text;
    if (first && q->echo) {
        char *t = xmalloc(q->prompt_len + ev->len + 1);
        if (!t) return json_decref(lp), -1;
        memcpy(t, q->prompt, q->prompt_len);
        if (ev->len) memcpy(t + q->prompt_len, ev->text, ev->len);
        text = json_stringn(t, q->prompt_len + ev->len);
        xfree(t);
    } else {
        text = json_stringn(ev->text ? ev->text : "", ev->len);
    }
    json_t *fin = ev->kind == SCHED_EV_DONE ? json_string(gen_finish_name(ev->finish)) : json_null();
    json_t *choice = json_pack("{s:o,s:i,s:o,s:o}", "text", text, "index", st->cur, "finish_reason", fin,
                               "logprobs", lp);
    json_t *env = envelope(r, q, json_pack("[o]", choice));
    if (env && ev->kind == SCHED_EV_DONE && st->cur == q->n - 1)
        json_object_set_new(env, "usage",
                            json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", (int)q->n_ids, "completion_tokens",
                                      (int)st->completion_tokens, "total_tokens",
                                      (int)(q->n_ids + (size_t)st->completion_tokens), "prompt_tokens_details",
                                      "cached_tokens", (int)r->cached_tokens));
    return out_event(st, env);
}

static void stream_fail(v1_stream *st, err code, const char *msg) {
    size_t len;
    char *b = srv_err_body_json(SRV_STYLE_OPENAI, code, msg, &len);
    if (b) {
        out_append(st, "data: ", 6);
        out_append(st, b, len);
        out_append(st, "\r\n\r\n", 4);
        xfree(b);
    }
    st->r->status = srv_err_status(code);
    snprintf(st->r->note, sizeof(st->r->note), "%s after headers: %.100s", err_name(code), msg);
    st->finished = 1;
    st->failed = 1;
}

/* Produces more output into st->out; -1 when the stream must be cut (client gone, shutdown). */
static int stream_produce(v1_stream *st) {
    srv_req *r = st->r;
    sched_event ev;
    if (st->has_pending) {
        ev = st->pending;
        st->has_pending = 0;
    } else if (!srv_wait_event(r, st->reqs[st->cur], &ev, st->deadline)) {
        return -1;
    }
    int rc = 0;
    if (ev.kind == SCHED_EV_TEXT) r->completion_tokens += ev.n_tokens; /* exact again at DONE */
    if (ev.kind == SCHED_EV_ERROR) {
        stream_fail(st, ev.code, ev.msg);
    } else {
        if (ev.kind == SCHED_EV_DONE) {
            st->completion_tokens += ev.n_generated;
            r->completion_tokens = st->completion_tokens;
            note_cached(r, ev.n_cached);
            srv_metrics_choice(&r->s->metrics, &ev);
            errbuf eb = {0};
            if (done_failure(r, &ev, &eb) != ERR_OK) { /* cut, as when srv_wait_event gives up after the headers */
                sched_event_fini(&ev);
                return -1;
            }
        }
        if (stream_chunk(st, &ev)) {
            stream_fail(st, ERR_NOMEM, "out of memory");
        } else if (ev.kind == SCHED_EV_DONE) {
            double e = (double)(clock_ns() - st->t_submit) * 1e-9;
            r->engine_s = e;
            st->cur++;
            st->byte_pos = st->char_off = st->text_total = 0;
            st->started = 0;
            if (st->cur == st->q.n) {
                rc = out_append(st, "data: [DONE]\r\n\r\n", 16);
                st->finished = 1;
            }
        }
    }
    sched_event_fini(&ev);
    return rc;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    v1_stream *st = cls;
    while (st->out_pos == st->out.len) {
        st->out_pos = st->out.len = 0;
        if (st->finished) {
            st->r->stream_done = 1;
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (stream_produce(st)) {
            release_all(st->reqs, st->q.n);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = st->out.len - st->out_pos;
    if (n > max) n = max;
    memcpy(buf, st->out.p + st->out_pos, n);
    st->out_pos += n;
    return (ssize_t)n;
}

static void v1_req_fini(v1_req *q) {
    json_decref(q->root);
    xfree(q->ids);
    memset(q, 0, sizeof(*q));
}

static void stream_free(void *cls) {
    v1_stream *st = cls;
    release_all(st->reqs, st->q.n);
    if (st->has_pending) sched_event_fini(&st->pending);
    srv_req *r = st->r;
    if (r->stream == st) r->stream = NULL;
    v1_req_fini(&st->q);
    xfree(st->out.p);
    xfree(st);
    srv_req_unref(r);
}

/* Called from MHD's completion callback: the client is gone; stop the engine work now. */
static void stream_abort(void *cls) {
    v1_stream *st = cls;
    for (int i = 0; i < st->q.n; i++)
        if (st->reqs[i]) sched_cancel(st->reqs[i]);
}

/* A first event that ends the request before any output: it still gets a status code, the same one the whole-body
 * path would give (an engine error's, or the timeout's 504 when the engine stopped it at the deadline in the queue).
 * A DONE that is answered is left for stream_produce, which records it. */
static err first_event_failure(srv_req *r, const sched_event *ev, errbuf *eb) {
    if (ev->kind == SCHED_EV_ERROR) return errbuf_set(eb, ev->code, "%s", ev->msg);
    if (ev->kind != SCHED_EV_DONE) return ERR_OK;
    err code = done_failure(r, ev, eb);
    if (code != ERR_OK) srv_metrics_choice(&r->s->metrics, ev);
    return code;
}

static enum MHD_Result start_stream(srv_req *r, v1_req *q, sched_req **reqs, uint64_t t_submit, uint64_t deadline) {
    v1_stream *st = xcalloc(1, sizeof(*st));
    if (!st) {
        release_all(reqs, q->n);
        v1_req_fini(q);
        return srv_reply_err(r, ERR_NOMEM, "out of memory");
    }
    st->r = r;
    st->q = *q;
    memset(q, 0, sizeof(*q));
    memcpy(st->reqs, reqs, sizeof(sched_req *) * (size_t)st->q.n);
    st->t_submit = t_submit;
    st->deadline = deadline;
    /* wait for the first event so that errors before the first token still get their status code */
    errbuf eb = {0};
    int got = srv_wait_event(r, st->reqs[0], &st->pending, deadline);
    err code = got ? first_event_failure(r, &st->pending, &eb) : wait_failure(r, &eb);
    if (code != ERR_OK) {
        enum MHD_Result res = srv_reply_collect_err(r, code, eb.msg);
        if (got) sched_event_fini(&st->pending);
        release_all(st->reqs, st->q.n);
        v1_req_fini(&st->q);
        xfree(st);
        return res;
    }
    st->has_pending = 1;
    r->engine_s = (double)(clock_ns() - t_submit) * 1e-9; /* time to the first event, for the header */
    atomic_fetch_add(&r->refs, 1); /* the stream's; dropped in stream_free */
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, st,
                                                                  stream_free);
    if (!resp) {
        stream_free(st);
        return MHD_NO;
    }
    r->stream = st;
    r->stream_abort = stream_abort;
    r->streaming = 1;
    srv_add_headers(r, resp, "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    r->status = 200;
    enum MHD_Result ok = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result reply_whole(srv_req *r, v1_req *q, sched_req **reqs, uint64_t t_submit, uint64_t deadline) {
    const tok *tk = r->s->tk;
    json_t *choices = json_array();
    int32_t completion = 0;
    enum MHD_Result res;
    for (int i = 0; i < q->n; i++) {
        srv_choice c = {0};
        errbuf eb = {0};
        err rc = srv_collect(r, reqs[i], t_submit, deadline, &c, &eb);
        if (rc != ERR_OK) {
            srv_choice_fini(&c);
            json_decref(choices);
            release_all(reqs, q->n);
            return srv_reply_collect_err(r, rc, eb.msg);
        }
        completion += c.n_gen;
        if (r->s->cfg.log_prompts && i == 0 && !r->log_completion) r->log_completion = xstrndup(c.text.p ? c.text.p : "", c.text.len);
        json_t *lp = json_null();
        if (q->logprobs >= 0) {
            lp_acc a;
            if (!lp_init(&a)) {
                size_t char_off = 0, byte_pos = 0;
                if (q->echo) lp_add_prompt(&a, tk, q->ids, q->n_ids, &char_off);
                else char_off = n_chars(q->prompt, q->prompt_len);
                lp_add_tokens(&a, tk, c.toks, c.n_toks, q->logprobs, c.text.len, &byte_pos, &char_off);
                json_decref(lp);
                lp = a.obj;
            }
        }
        json_t *text;
        if (q->echo) {
            char *t = xmalloc(q->prompt_len + c.text.len + 1);
            text = t ? (memcpy(t, q->prompt, q->prompt_len), memcpy(t + q->prompt_len, c.text.p ? c.text.p : "", c.text.len),
                        json_stringn(t, q->prompt_len + c.text.len))
                     : NULL;
            xfree(t);
        } else {
            text = json_stringn(c.text.p ? c.text.p : "", c.text.len);
        }
        json_array_append_new(choices, json_pack("{s:o,s:i,s:s,s:o}", "text", text, "index", i, "finish_reason",
                                                 gen_finish_name(c.finish), "logprobs", lp));
        srv_choice_fini(&c);
    }
    release_all(reqs, q->n);
    r->completion_tokens = completion;
    json_t *env = envelope(r, q, choices);
    if (env)
        json_object_set_new(env, "usage",
                            json_pack("{s:i,s:i,s:i,s:{s:i}}", "completion_tokens", (int)completion, "prompt_tokens",
                                      (int)q->n_ids, "total_tokens", (int)(q->n_ids + (size_t)completion),
                                      "prompt_tokens_details", "cached_tokens", (int)r->cached_tokens));
    res = srv_reply_json(r, 200, env);
    return res;
}

enum MHD_Result srv_v1_completions(srv_req *r) {
    srv *s = r->s;
    sched *e = srv_engine(s);
    if (!e) return srv_reply_err(r, ERR_UNSUPPORTED, "the model is still loading; retry shortly");
    if (!sched_healthy(e)) return srv_reply_err(r, ERR_UNSUPPORTED, "the engine has failed; see the server log");
    v1_req q = {0};
    enum MHD_Result res;
    if (v1_parse(r, &q, &res)) {
        v1_req_fini(&q);
        return res;
    }
    errbuf eb = {0};
    err rc;
    if (q.prompt_len == 0) {
        /* an empty prompt starts from <|endoftext|>, as OpenAI's models do */
        q.ids = xmalloc(sizeof(int32_t));
        if (q.ids) q.ids[0] = tok_eos_id(s->tk), q.n_ids = 1;
        rc = q.ids ? ERR_OK : ERR_NOMEM;
    } else {
        rc = tok_encode(s->tk, q.prompt, q.prompt_len, &q.ids, &q.n_ids, &eb);
    }
    if (rc != ERR_OK) {
        v1_req_fini(&q);
        return rc == ERR_NOMEM ? srv_reply_err(r, rc, "out of memory") : srv_reply_status(r, 400, eb.msg, "prompt");
    }
    r->prompt_tokens = (int32_t)q.n_ids;
    if (s->cfg.log_prompts) r->log_prompt = xstrndup(q.prompt, q.prompt_len);
    int32_t n_ctx = sched_n_ctx(e);
    if ((long long)q.n_ids + q.max_tokens > n_ctx) {
        char m[400];
        snprintf(m, sizeof(m),
                 "This model's maximum context length is %d, however you requested %lld tokens (%zu in your prompt; "
                 "%d for the completion). Please reduce your prompt; or completion length.",
                 n_ctx, (long long)q.n_ids + q.max_tokens, q.n_ids, q.max_tokens);
        v1_req_fini(&q);
        return srv_reply_status(r, 400, m, NULL);
    }
    memcpy(q.id, "cmpl-", 5);
    srv_random_id(s, q.id + 5, 30); /* "cmpl-" + 29 of [A-Za-z0-9], as OpenAI and FauxPilot */
    q.created = (long long)time(NULL);
    uint64_t base = q.has_seed ? q.seed : 0;
    sched_req *reqs[128] = {0};
    uint64_t t_submit = clock_ns();
    uint64_t deadline = r->t_start + (uint64_t)s->cfg.request_timeout_s * 1000000000ull;
    for (int i = 0; i < q.n; i++) {
        sched_request sr = {q.ids, q.n_ids, q.gp, deadline};
        sr.params.seed = q.has_seed ? base + (uint64_t)i : srv_random_u64(s);
        if ((rc = sched_submit(e, &sr, &reqs[i], &eb)) != ERR_OK) {
            release_all(reqs, i);
            v1_req_fini(&q);
            return rc == ERR_INVALID ? srv_reply_status(r, 400, eb.msg, NULL) : srv_reply_err(r, rc, eb.msg);
        }
    }
    if (q.stream) return start_stream(r, &q, reqs, t_submit, deadline);
    res = reply_whole(r, &q, reqs, t_submit, deadline);
    v1_req_fini(&q);
    return res;
}

enum MHD_Result srv_v1_models(srv_req *r) {
    json_t *data = json_array();
    const char *names[] = {r->s->cfg.model_name, "codegen", "fastertransformer"};
    for (int i = 0; i < 3; i++) {
        if (i > 0 && !strcmp(names[i], names[0])) continue;
        json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}", "id", names[i], "object", "model", "created", 0,
                                              "owned_by", "suggestd"));
    }
    return srv_reply_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}
