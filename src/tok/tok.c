/* tok.c - encode (added-token split, pre-tokenizer pieces, BPE) and decode (token bytes, streaming UTF-8).
 *
 * DESIGN
 * Encode follows HF `tokenizers` step by step (spec §5.2): added tokens are cut out of the raw text first,
 * leftmost-longest; each remaining segment is cut into pieces by the GPT-2 regex (tok_pretok.c); each piece's bytes
 * start as single-byte tokens and are merged by BPE. The merge loop is HF's Word::merge_all: a min-heap of candidate
 * pairs ordered by (rank, position); a popped entry whose pair has changed since it was pushed is skipped; a merge
 * pushes the two pairs it creates with its neighbours. That is O(m log m) for a piece of m bytes, so a megabyte of
 * one letter is no worse than a megabyte of code. All scratch memory is per call and grows by doubling, so there is
 * no per-byte allocation and a tok stays immutable (shareable between threads).
 *
 * Streaming decode replaces ill-formed UTF-8 like Python's bytes.decode(errors="replace"): one U+FFFD per maximal
 * subpart (a lead byte and the continuation bytes that were valid for it), one per stray byte; an incomplete
 * sequence at the end of a push is held in tok_stream.pend until the next push or the flush. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "tok_impl.h"

/* Always on (also in Release): a caller broke a documented contract, and carrying on would write out of bounds. */
#define TOK_CHECK(cond, msg)                                                                                       \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            LOG_ERROR("tok: %s (%s:%d)", msg, __FILE__, __LINE__);                                                 \
            abort();                                                                                               \
        }                                                                                                          \
    } while (0)

/* ---- byte <-> unicode map (GPT-2 bytes_to_unicode) ---- */

uint32_t tok__byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
    if (b <= 32) return 256u + (uint32_t)b;          /* 0..32   -> U+0100..U+0120 */
    if (b <= 160) return 256u + 33u + (uint32_t)(b - 127); /* 127..160 -> U+0121..U+0142 */
    return 256u + 33u + 34u;                         /* 173     -> U+0143 */
}

int tok__cp_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp >= 256 && cp <= 288) return (int)(cp - 256);
    if (cp >= 289 && cp <= 322) return (int)(cp - 289 + 127);
    if (cp == 323) return 173;
    return -1;
}

/* ---- merge-pair hash ---- */

static inline size_t pair_hash(uint64_t key, size_t mask) {
    key ^= key >> 29;
    key *= 0xBF58476D1CE4E5B9ull;
    key ^= key >> 32;
    return (size_t)key & mask;
}

err tok__pairmap_init(tok__pairmap *m, size_t n_expected) {
    size_t cap = 16;
    while (cap < n_expected * 2) cap *= 2;
    m->slots = xmalloc_array(cap, sizeof(*m->slots));
    if (!m->slots) return ERR_NOMEM;
    for (size_t i = 0; i < cap; i++) m->slots[i].key = TOK__PAIR_EMPTY;
    m->mask = cap - 1;
    m->n = 0;
    return ERR_OK;
}

void tok__pairmap_fini(tok__pairmap *m) {
    xfree(m->slots);
    memset(m, 0, sizeof(*m));
}

void tok__pairmap_put(tok__pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    TOK_CHECK(m->n * 2 < m->mask + 1, "pair map sized too small");
    for (size_t i = pair_hash(key, m->mask);; i = (i + 1) & m->mask) {
        tok__pair *p = &m->slots[i];
        if (p->key == TOK__PAIR_EMPTY) {
            p->key = key;
            m->n++;
        } else if (p->key != key) {
            continue;
        }
        p->rank = rank;
        p->id = id;
        return;
    }
}

const tok__pair *tok__pairmap_get(const tok__pairmap *m, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = pair_hash(key, m->mask);; i = (i + 1) & m->mask) {
        const tok__pair *p = &m->slots[i];
        if (p->key == key) return p;
        if (p->key == TOK__PAIR_EMPTY) return NULL;
    }
}

/* ---- encode ---- */

typedef struct bpe_sym {
    int32_t id; /* -1 once merged into its left neighbour */
    int32_t prev, next;
} bpe_sym;

typedef struct bpe_cand {
    int32_t rank, pos, new_id;
} bpe_cand;

typedef struct enc {
    const tok *t;
    int32_t *ids;
    size_t n, cap;
    bpe_sym *sym; /* scratch for one piece: sym_cap symbols, 3 * sym_cap heap entries */
    bpe_cand *heap;
    size_t sym_cap;
} enc;

static err enc_push(enc *e, int32_t id) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        int32_t *p = xrealloc(e->ids, cap * sizeof(*p));
        if (!p) return ERR_NOMEM;
        e->ids = p;
        e->cap = cap;
    }
    e->ids[e->n++] = id;
    return ERR_OK;
}

static inline bool cand_less(const bpe_cand *x, const bpe_cand *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(bpe_cand *h, size_t *n, bpe_cand c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(&c, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = c;
}

static bpe_cand heap_pop(bpe_cand *h, size_t *n) {
    bpe_cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static void push_cand(const tok *t, const bpe_sym *sym, bpe_cand *heap, size_t *nh, int32_t left) {
    int32_t right = sym[left].next;
    if (right < 0) return;
    const tok__pair *p = tok__pairmap_get(&t->merges, sym[left].id, sym[right].id);
    if (p) heap_push(heap, nh, (bpe_cand){p->rank, left, p->id});
}

/* BPE over one pre-tokenizer piece of m bytes; appends its ids. */
static err enc_piece(enc *e, const unsigned char *w, size_t m) {
    const tok *t = e->t;
    if (m > e->sym_cap) {
        size_t cap = e->sym_cap ? e->sym_cap : 64;
        while (cap < m) cap *= 2;
        bpe_sym *s = xmalloc_array(cap, sizeof(*s));
        bpe_cand *h = xmalloc_array(cap, 3 * sizeof(*h));
        if (!s || !h) {
            xfree(s);
            xfree(h);
            return ERR_NOMEM;
        }
        xfree(e->sym);
        xfree(e->heap);
        e->sym = s;
        e->heap = h;
        e->sym_cap = cap;
    }
    bpe_sym *sym = e->sym;

    /* One symbol per byte. A byte without a vocab entry (never for GPT-2) becomes unk_token or is dropped,
     * as in HF's BPE::merge_word. */
    int32_t ns = 0;
    bool prev_unk = false;
    for (size_t k = 0; k < m; k++) {
        int32_t id = t->byte_id[w[k]];
        if (id < 0) {
            if (t->unk_id < 0 || (t->fuse_unk && prev_unk)) continue;
            id = t->unk_id;
            prev_unk = true;
        } else {
            prev_unk = false;
        }
        sym[ns] = (bpe_sym){id, ns - 1, ns + 1};
        ns++;
    }
    if (ns == 0) return ERR_OK;
    sym[ns - 1].next = -1;

    size_t nh = 0;
    for (int32_t k = 0; k + 1 < ns; k++) push_cand(t, sym, e->heap, &nh, k);
    while (nh > 0) {
        bpe_cand c = heap_pop(e->heap, &nh);
        bpe_sym *l = &sym[c.pos];
        if (l->id < 0 || l->next < 0) continue;
        int32_t r = l->next;
        const tok__pair *p = tok__pairmap_get(&t->merges, l->id, sym[r].id);
        if (!p || p->id != c.new_id) continue; /* stale: this pair changed after the entry was pushed */
        l->id = c.new_id;
        l->next = sym[r].next;
        if (l->next >= 0) sym[l->next].prev = c.pos;
        sym[r].id = -1;
        if (l->prev >= 0) push_cand(t, sym, e->heap, &nh, l->prev);
        push_cand(t, sym, e->heap, &nh, c.pos);
    }

    for (int32_t k = 0; k >= 0; k = sym[k].next) {
        err rc = enc_push(e, sym[k].id);
        if (rc) return rc;
    }
    return ERR_OK;
}

/* Pre-tokenizes and encodes a segment that contains no added token. */
static err enc_segment(enc *e, const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t j = tok__pretok_next(s, n, i);
        err rc = enc_piece(e, s + i, j - i);
        if (rc) return rc;
        i = j;
    }
    return ERR_OK;
}

/* The longest token of set that starts at s, or NULL. */
static const tok__added *match_added(const tok *t, const tok__added_set *set, const unsigned char *s, size_t n) {
    for (uint32_t k = set->first[s[0]]; k < set->first[s[0] + 1]; k++) {
        const tok__added *a = &set->tok[k];
        if (a->len <= n && memcmp(t->added_data + a->off, s, a->len) == 0) return a;
    }
    return NULL;
}

/* Cuts the tokens of added set `pass` out of s[0..n) leftmost-longest (HF's Aho-Corasick, MatchKind::LeftmostLongest)
 * and hands the text between them to the next pass; after the last pass, to the pre-tokenizer. */
static err enc_added(enc *e, int pass, const unsigned char *s, size_t n) {
    if (pass == 2) return enc_segment(e, s, n);
    const tok__added_set *set = &e->t->added[pass];
    if (set->n == 0) return enc_added(e, pass + 1, s, n);
    size_t seg = 0;
    for (size_t i = 0; i < n;) {
        const tok__added *a = match_added(e->t, set, s + i, n - i);
        if (!a) {
            i++; /* tokens are valid UTF-8, so none starts on a continuation byte: no need to step by chars */
            continue;
        }
        err rc = enc_added(e, pass + 1, s + seg, i - seg);
        if (!rc) rc = enc_push(e, a->id);
        if (rc) return rc;
        i += a->len;
        seg = i;
    }
    return enc_added(e, pass + 1, s + seg, n - seg);
}

err tok_encode(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n, errbuf *eb) {
    *ids = NULL;
    *n = 0;
    if (!text && len) return errbuf_set(eb, ERR_INVALID, "tok_encode: NULL text");
    if (len > (size_t)INT32_MAX / 4) return errbuf_set(eb, ERR_INVALID, "text of %zu bytes is too long", len);
    const unsigned char *s = (const unsigned char *)text;
    size_t bad = tok__utf8_check(s, len);
    if (bad != len) return errbuf_set(eb, ERR_INVALID, "text is not valid UTF-8 at byte offset %zu", bad);

    enc e = {.t = t};
    err rc = enc_added(&e, 0, s, len);
    if (!rc && !e.ids) { /* an empty result is still a heap array */
        e.ids = xmalloc(sizeof(*e.ids));
        if (!e.ids) rc = ERR_NOMEM;
    }
    xfree(e.sym);
    xfree(e.heap);
    if (rc) {
        xfree(e.ids);
        return errbuf_set(eb, rc, "out of memory encoding %zu bytes", len);
    }
    *ids = e.ids;
    *n = e.n;
    return ERR_OK;
}

/* ---- decode ---- */

const char *tok_token_bytes(const tok *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->vocab_size || !t->tb_has[id]) {
        *len = 0;
        return NULL;
    }
    *len = t->tb_off[id + 1] - t->tb_off[id];
    return t->tb_data + t->tb_off[id];
}

/* UTF-8 decoder state: buf holds the bytes of an incomplete but so far valid sequence. */
typedef struct u8dec {
    unsigned char buf[4];
    int n, need;            /* bytes held, continuation bytes still needed */
    unsigned char lo, hi;   /* allowed range of the next continuation byte */
} u8dec;

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* Feeds one byte; writes at most 6 bytes (U+FFFD for a broken prefix, then U+FFFD for c) to out. */
static size_t u8_feed(u8dec *d, unsigned char c, char *out) {
    size_t w = 0;
    if (d->need > 0) {
        if (c >= d->lo && c <= d->hi) {
            d->buf[d->n++] = c;
            d->lo = 0x80;
            d->hi = 0xBF;
            if (--d->need == 0) {
                memcpy(out, d->buf, (size_t)d->n);
                w = (size_t)d->n;
                d->n = 0;
            }
            return w;
        }
        memcpy(out, REPLACEMENT, 3); /* the held prefix is one maximal subpart; c starts afresh */
        w = 3;
        d->n = 0;
        d->need = 0;
    }
    if (c < 0x80) {
        out[w++] = (char)c;
        return w;
    }
    d->lo = 0x80;
    d->hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) d->need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        d->need = 2;
        if (c == 0xE0) d->lo = 0xA0;
        else if (c == 0xED) d->hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        d->need = 3;
        if (c == 0xF0) d->lo = 0x90;
        else if (c == 0xF4) d->hi = 0x8F;
    } else {
        memcpy(out + w, REPLACEMENT, 3);
        return w + 3;
    }
    d->buf[0] = c;
    d->n = 1;
    return w;
}

int32_t tok__stream_slack_of(const unsigned char *b, size_t n) {
    /* From a fresh state every push writes at most what decoding b alone writes (the trailing incomplete sequence
     * held back); a pending prefix adds at most one U+FFFD (3 bytes). See tok_impl.h. */
    u8dec d = {0};
    char tmp[8];
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += u8_feed(&d, b[i], tmp);
    return (int32_t)(3 + (int64_t)w - (int64_t)n);
}

void tok_stream_init(tok_stream *s) { memset(s, 0, sizeof(*s)); }

/* Rebuilds the decoder state from the held bytes (always a valid incomplete prefix, so nothing is written). */
static void stream_restore(const tok_stream *s, u8dec *d) {
    char tmp[8];
    memset(d, 0, sizeof(*d));
    for (int i = 0; i < s->n_pend; i++) {
        size_t w = u8_feed(d, s->pend[i], tmp);
        TOK_CHECK(w == 0, "tok_stream holds a complete or invalid sequence");
    }
}

size_t tok_stream_push(tok_stream *s, const tok *t, int32_t id, char *out, size_t cap) {
    size_t len;
    const char *b = tok_token_bytes(t, id, &len);
    TOK_CHECK(cap >= len + 8, "tok_stream_push: cap is below the token length + 8");
    u8dec d;
    stream_restore(s, &d);
    size_t w = 0;
    char tmp[8];
    for (size_t i = 0; i < len; i++) {
        size_t k = u8_feed(&d, (unsigned char)b[i], tmp);
        TOK_CHECK(w + k <= cap, "tok_stream_push: output exceeds the promised bound");
        memcpy(out + w, tmp, k);
        w += k;
    }
    memcpy(s->pend, d.buf, (size_t)d.n);
    s->n_pend = d.n;
    return w;
}

size_t tok_stream_flush(tok_stream *s, char *out, size_t cap) {
    if (s->n_pend == 0) return 0;
    TOK_CHECK(cap >= 3, "tok_stream_flush: cap < 3");
    memcpy(out, REPLACEMENT, 3);
    s->n_pend = 0;
    return 3;
}

err tok_decode(const tok *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    *text = NULL;
    if (len) *len = 0;
    /* Each push writes at most its token's length + 8 (checked at load); the flush at most 3. */
    size_t cap = 16;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        tok_token_bytes(t, ids[i], &l);
        if (cap > SIZE_MAX - l - 8) return ERR_NOMEM;
        cap += l + 8;
    }
    char *buf = xmalloc(cap);
    if (!buf) return ERR_NOMEM;
    tok_stream st;
    tok_stream_init(&st);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += tok_stream_push(&st, t, ids[i], buf + w, cap - w);
    w += tok_stream_flush(&st, buf + w, cap - w);
    buf[w] = 0;
    *text = buf;
    if (len) *len = w;
    return ERR_OK;
}

/* ---- accessors ---- */

int32_t tok_vocab_size(const tok *t) { return t->vocab_size; }

int32_t tok_eos_id(const tok *t) { return t->eos_id; }

void tok_destroy(tok *t) {
    if (!t) return;
    tok__pairmap_fini(&t->merges);
    xfree(t->tb_off);
    xfree(t->tb_has);
    xfree(t->tb_data);
    xfree(t->added[0].tok);
    xfree(t->added[1].tok);
    xfree(t->added_data);
    xfree(t);
}
