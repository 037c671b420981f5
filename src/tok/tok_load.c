/* tok_load.c - reads a Hugging Face tokenizer directory into a tok.
 *
 * DESIGN
 * Two sources, one builder. tokenizer.json (what HF `tokenizers` itself loads) wins when present: model.vocab,
 * model.merges ("a b" strings or [a, b] pairs) and added_tokens. Otherwise the slow-tokenizer files: vocab.json,
 * merges.txt, added_tokens.json (optional) and special_tokens_map.json (optional; <|endoftext|> is always special,
 * as GPT-2's tokenizer classes default it). Both parsers only collect (string, id) entries that point into the
 * parsed JSON or the file buffer; build() then makes the immutable tables: the id -> bytes blob, the merge-pair hash
 * (merged id = vocab[a + b], rank = index among merges, as HF's BpeBuilder does) and the added-token index.
 * Settings that would change the ids and that we do not implement (a normalizer, add_prefix_space, dropout,
 * lstrip/rstrip on added tokens, ...) are refused with ERR_UNSUPPORTED rather than ignored. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "alloc.h"
#include "log.h"
#include "mapfile.h"
#include "tok_impl.h"

#define TOK_MAX_FILE ((size_t)256 << 20)
#define EOT "<|endoftext|>"

typedef struct str {
    const char *s;
    size_t len;
} str;

typedef struct vent {
    str s;
    int32_t id;
    bool normalized; /* added tokens only: matched in HF's second pass */
} vent;

typedef struct ment {
    str a, b;
    size_t where; /* line number in merges.txt, or index in model.merges */
} ment;

typedef struct builder {
    vent *v;
    size_t nv, capv;
    ment *m;
    size_t nm, capm;
    vent *a; /* added tokens */
    size_t na, capa;
    str *sp; /* special tokens named by special_tokens_map.json, resolved in build() */
    size_t nsp, capsp;
    str unk;
    bool has_unk, fuse_unk, merges_json;
    bool hf_added_ids; /* tokenizer.json: ids come from HF's AddedVocabulary rules, not the file (resolve_hf_added) */
    char *vocab_path, *merges_path; /* for error messages */
    json_t *json[4];                /* parsed files the strs point into */
    int n_json;
    char *merges_buf;
} builder;

static void builder_fini(builder *bd) {
    xfree(bd->v);
    xfree(bd->m);
    xfree(bd->a);
    xfree(bd->sp);
    xfree(bd->vocab_path);
    xfree(bd->merges_path);
    for (int i = 0; i < bd->n_json; i++) json_decref(bd->json[i]);
    xfree(bd->merges_buf);
}

/* Makes room for one more element in the growing array whose pointer is at *slot (any object pointer type: it is
 * read and written with memcpy, so no aliasing rule is bent). On failure the array is left as it was. */
static bool grow(void *slot, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return true;
    size_t nc = *cap ? *cap * 2 : 256;
    if (nc > SIZE_MAX / elem) return false;
    void *p;
    memcpy(&p, slot, sizeof(p));
    void *q = xrealloc(p, nc * elem);
    if (!q) return false;
    memcpy(slot, &q, sizeof(q));
    *cap = nc;
    return true;
}

#define PUSH(arr, n, cap, val) (grow(&(arr), &(cap), (n), sizeof(*(arr))) ? ((arr)[(n)++] = (val), true) : false)

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static err nomem(errbuf *eb, const char *path) { return errbuf_set(eb, ERR_NOMEM, "%s: out of memory", path); }

/* ---- string -> id hash, used while loading ---- */

typedef struct smap_ent {
    const char *s; /* NULL in free slots */
    size_t len;
    int32_t id;
} smap_ent;

typedef struct smap {
    smap_ent *slots;
    size_t mask;
} smap;

static uint64_t str_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 31);
}

static bool smap_init(smap *m, size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    m->slots = xcalloc(cap, sizeof(*m->slots));
    m->mask = cap - 1;
    return m->slots != NULL;
}

static smap_ent *smap_slot(const smap *m, const char *s, size_t len) {
    for (size_t i = str_hash(s, len) & m->mask;; i = (i + 1) & m->mask) {
        smap_ent *e = &m->slots[i];
        if (!e->s || (e->len == len && memcmp(e->s, s, len) == 0)) return e;
    }
}

/* Later entries win, like a JSON object's duplicate keys in HF. The map never fills: sized for all entries. */
static void smap_put(smap *m, str k, int32_t id) {
    smap_ent *e = smap_slot(m, k.s, k.len);
    e->s = k.s;
    e->len = k.len;
    e->id = id;
}

static int32_t smap_get(const smap *m, const char *s, size_t len) {
    const smap_ent *e = smap_slot(m, s, len);
    return e->s ? e->id : -1;
}

/* ---- JSON helpers ---- */

static err load_json(builder *bd, const char *path, json_t **out, errbuf *eb) {
    char *buf;
    size_t len;
    err rc = file_read_all(path, &buf, &len, TOK_MAX_FILE, eb);
    if (rc) return rc;
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_ALLOW_NUL, &je);
    xfree(buf);
    if (!root) return errbuf_set(eb, ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    if (bd->n_json == (int)(sizeof(bd->json) / sizeof(bd->json[0]))) {
        json_decref(root);
        return errbuf_set(eb, ERR_FORMAT, "%s: too many files", path);
    }
    bd->json[bd->n_json++] = root;
    *out = root;
    return ERR_OK;
}

static bool json_id(const json_t *v, int32_t *id) {
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= TOK__MAX_ID) return false;
    *id = (int32_t)x;
    return true;
}

/* An object of token -> id (vocab.json, model.vocab, added_tokens.json) appended to arr. */
static err parse_token_ids(vent **arr, size_t *n, size_t *cap, const json_t *obj, const char *path,
                           const char *what, errbuf *eb) {
    if (!json_is_object(obj)) return errbuf_set(eb, ERR_FORMAT, "%s: %s is not a JSON object", path, what);
    const char *key;
    size_t klen;
    json_t *val;
    json_object_keylen_foreach((json_t *)obj, key, klen, val) {
        vent e = {{key, klen}, 0, true};
        if (!json_id(val, &e.id))
            return errbuf_set(eb, ERR_FORMAT, "%s: %s: id of \"%.*s\" is not an integer in [0, %d)", path, what,
                              (int)klen, key, TOK__MAX_ID);
        if (!PUSH(*arr, *n, *cap, e)) return nomem(eb, path);
    }
    return ERR_OK;
}

/* Splits "a b" at its one space, as HF's convert_merges_to_hashmap does (exactly two parts). */
static bool split_merge(const char *s, size_t len, ment *m) {
    const char *sp = memchr(s, ' ', len);
    if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) return false;
    m->a = (str){s, (size_t)(sp - s)};
    m->b = (str){sp + 1, len - (size_t)(sp + 1 - s)};
    return true;
}

/* ---- tokenizer.json ---- */

static bool json_null_or_absent(const json_t *v) { return !v || json_is_null(v); }

static err load_tokenizer_json(builder *bd, const char *path, errbuf *eb) {
    json_t *root = NULL;
    err rc = load_json(bd, path, &root, eb);
    if (rc) return rc;
    if (!json_is_object(root)) return errbuf_set(eb, ERR_FORMAT, "%s: not a JSON object", path);
    bd->vocab_path = xstrdup(path);
    bd->merges_path = xstrdup(path);
    if (!bd->vocab_path || !bd->merges_path) return nomem(eb, path);
    bd->merges_json = true;
    bd->hf_added_ids = true;

    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return errbuf_set(eb, ERR_FORMAT, "%s: no \"model\" object", path);
    const json_t *v = json_object_get(model, "type");
    if (v && (!json_is_string(v) || strcmp(json_string_value(v), "BPE") != 0))
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: model.type is not \"BPE\"", path);
    static const char *const empty_ok[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        v = json_object_get(model, empty_ok[i]);
        if (!json_null_or_absent(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return errbuf_set(eb, ERR_UNSUPPORTED, "%s: model.%s is not supported", path, empty_ok[i]);
    }
    static const char *const false_ok[] = {"dropout", "byte_fallback", "ignore_merges"};
    for (size_t i = 0; i < 3; i++) {
        v = json_object_get(model, false_ok[i]);
        if (!json_null_or_absent(v) && !json_is_false(v))
            return errbuf_set(eb, ERR_UNSUPPORTED, "%s: model.%s is not supported", path, false_ok[i]);
    }
    v = json_object_get(model, "unk_token");
    if (json_is_string(v)) {
        bd->has_unk = true;
        bd->unk = (str){json_string_value(v), json_string_length(v)};
    }
    bd->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));

    if (!json_null_or_absent(json_object_get(root, "normalizer")))
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: a normalizer is not supported", path);
    const json_t *pt = json_object_get(root, "pre_tokenizer");
    v = json_object_get(pt, "type");
    if (!json_is_object(pt) || !json_is_string(v) || strcmp(json_string_value(v), "ByteLevel") != 0)
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: pre_tokenizer is not ByteLevel", path);
    if (!json_is_false(json_object_get(pt, "add_prefix_space")))
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: pre_tokenizer.add_prefix_space is not false", path);
    v = json_object_get(pt, "use_regex");
    if (v && !json_is_true(v))
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: pre_tokenizer.use_regex is not true", path);

    rc = parse_token_ids(&bd->v, &bd->nv, &bd->capv, json_object_get(model, "vocab"), path, "model.vocab", eb);
    if (rc) return rc;

    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) return errbuf_set(eb, ERR_FORMAT, "%s: model.merges is not an array", path);
    size_t i;
    json_t *e;
    json_array_foreach(merges, i, e) {
        ment m = {.where = i};
        bool ok;
        if (json_is_string(e)) {
            ok = split_merge(json_string_value(e), json_string_length(e), &m);
        } else {
            const json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1);
            ok = json_is_array(e) && json_array_size(e) == 2 && json_is_string(a) && json_is_string(b);
            if (ok) {
                m.a = (str){json_string_value(a), json_string_length(a)};
                m.b = (str){json_string_value(b), json_string_length(b)};
            }
        }
        if (!ok) return errbuf_set(eb, ERR_FORMAT, "%s: model.merges[%zu]: expected two symbols", path, i);
        if (!PUSH(bd->m, bd->nm, bd->capm, m)) return nomem(eb, path);
    }

    const json_t *added = json_object_get(root, "added_tokens");
    if (!json_null_or_absent(added) && !json_is_array(added))
        return errbuf_set(eb, ERR_FORMAT, "%s: added_tokens is not an array", path);
    json_array_foreach(added, i, e) {
        const json_t *content = json_object_get(e, "content");
        vent a;
        if (!json_is_string(content) || !json_id(json_object_get(e, "id"), &a.id))
            return errbuf_set(eb, ERR_FORMAT, "%s: added_tokens[%zu]: needs a string content and an id", path, i);
        a.s = (str){json_string_value(content), json_string_length(content)};
        const json_t *norm = json_object_get(e, "normalized");
        a.normalized = norm ? json_is_true(norm) : true; /* AddedToken's serde default */
        static const char *const flags[] = {"lstrip", "rstrip", "single_word"};
        for (size_t k = 0; k < 3; k++)
            if (json_is_true(json_object_get(e, flags[k])))
                return errbuf_set(eb, ERR_UNSUPPORTED, "%s: added_tokens[%zu]: %s is not supported", path, i,
                                  flags[k]);
        if (!PUSH(bd->a, bd->na, bd->capa, a)) return nomem(eb, path);
    }
    return ERR_OK;
}

/* ---- vocab.json + merges.txt (+ added_tokens.json, special_tokens_map.json) ---- */

static err parse_merges_txt(builder *bd, const char *path, errbuf *eb) {
    size_t len;
    err rc = file_read_all(path, &bd->merges_buf, &len, TOK_MAX_FILE, eb);
    if (rc) return rc;
    const char *p = bd->merges_buf, *end = p + len;
    for (size_t line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        size_t n = (size_t)(eol - p);
        if (n && p[n - 1] == '\r') n--;
        if (!(n >= 8 && memcmp(p, "#version", 8) == 0)) {
            ment m = {.where = line};
            if (!split_merge(p, n, &m))
                return errbuf_set(eb, ERR_FORMAT, "%s: line %zu: expected two symbols", path, line);
            if (!PUSH(bd->m, bd->nm, bd->capm, m)) return nomem(eb, path);
        }
        p = nl ? nl + 1 : end;
    }
    return ERR_OK;
}

/* A special_tokens_map.json value: "tok", {"content": "tok", ...} or a list of those. */
static err add_special_value(builder *bd, const json_t *v, const char *path, const char *key, errbuf *eb) {
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            err rc = add_special_value(bd, e, path, key, eb);
            if (rc) return rc;
        }
        return ERR_OK;
    }
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return errbuf_set(eb, ERR_FORMAT, "%s: %s: expected a token string", path, key);
    str s = {json_string_value(v), json_string_length(v)};
    return PUSH(bd->sp, bd->nsp, bd->capsp, s) ? ERR_OK : nomem(eb, path);
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 || errno != ENOENT;
}

static err load_files(builder *bd, const char *dir, errbuf *eb) {
    bd->vocab_path = path_join(dir, "vocab.json");
    bd->merges_path = path_join(dir, "merges.txt");
    char *added_path = path_join(dir, "added_tokens.json");
    char *special_path = path_join(dir, "special_tokens_map.json");
    err rc = ERR_OK;
    json_t *root = NULL;
    if (!bd->vocab_path || !bd->merges_path || !added_path || !special_path) {
        rc = nomem(eb, dir);
        goto out;
    }
    str eot = {EOT, sizeof(EOT) - 1};
    if (!PUSH(bd->sp, bd->nsp, bd->capsp, eot)) {
        rc = nomem(eb, dir);
        goto out;
    }
    if ((rc = load_json(bd, bd->vocab_path, &root, eb))) goto out;
    if ((rc = parse_token_ids(&bd->v, &bd->nv, &bd->capv, root, bd->vocab_path, "vocabulary", eb))) goto out;
    if ((rc = parse_merges_txt(bd, bd->merges_path, eb))) goto out;
    if (file_exists(added_path)) {
        if ((rc = load_json(bd, added_path, &root, eb))) goto out;
        if ((rc = parse_token_ids(&bd->a, &bd->na, &bd->capa, root, added_path, "added tokens", eb))) goto out;
    }
    if (file_exists(special_path)) {
        if ((rc = load_json(bd, special_path, &root, eb))) goto out;
        if (!json_is_object(root)) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: not a JSON object", special_path);
            goto out;
        }
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
            if ((rc = add_special_value(bd, v, special_path, key, eb))) goto out;
        }
    }
out:
    xfree(added_path);
    xfree(special_path);
    return rc;
}

/* ---- build the tables ---- */

static err merge_error(const builder *bd, const ment *m, str sym, errbuf *eb) {
    if (bd->merges_json)
        return errbuf_set(eb, ERR_FORMAT, "%s: model.merges[%zu]: \"%.*s\" is not in the vocabulary",
                          bd->merges_path, m->where, (int)sym.len, sym.s);
    return errbuf_set(eb, ERR_FORMAT, "%s: line %zu: \"%.*s\" is not in the vocabulary", bd->merges_path, m->where,
                      (int)sym.len, sym.s);
}

static err build_merges(tok *t, const builder *bd, const smap *vocab, errbuf *eb) {
    if (bd->nm > (size_t)INT32_MAX) return errbuf_set(eb, ERR_FORMAT, "%s: too many merges", bd->merges_path);
    if (tok__pairmap_init(&t->merges, bd->nm)) return nomem(eb, bd->merges_path);
    char *cat = NULL;
    size_t cat_cap = 0;
    for (size_t i = 0; i < bd->nm; i++) {
        const ment *m = &bd->m[i];
        int32_t a = smap_get(vocab, m->a.s, m->a.len), b = smap_get(vocab, m->b.s, m->b.len);
        if (a < 0 || b < 0) {
            xfree(cat);
            return merge_error(bd, m, a < 0 ? m->a : m->b, eb);
        }
        size_t n = m->a.len + m->b.len;
        if (n > cat_cap) {
            char *c = xrealloc(cat, n * 2);
            if (!c) {
                xfree(cat);
                return nomem(eb, bd->merges_path);
            }
            cat = c;
            cat_cap = n * 2;
        }
        memcpy(cat, m->a.s, m->a.len);
        memcpy(cat + m->a.len, m->b.s, m->b.len);
        int32_t id = smap_get(vocab, cat, n);
        if (id < 0) {
            err rc = merge_error(bd, m, (str){cat, n}, eb);
            xfree(cat);
            return rc;
        }
        tok__pairmap_put(&t->merges, a, b, (int32_t)i, id);
    }
    xfree(cat);
    return ERR_OK;
}

/* id -> raw bytes. A vocab string maps back through the inverse byte map; one with a char outside the byte
 * alphabet is taken as its own UTF-8 (HF's ByteLevel decoder does the same). Added tokens are their content. */
static err build_token_bytes(tok *t, const builder *bd, errbuf *eb) {
    size_t n_ids = (size_t)t->vocab_size;
    const str **src = xcalloc(n_ids ? n_ids : 1, sizeof(*src));
    uint8_t *is_added = xcalloc(n_ids ? n_ids : 1, 1);
    t->tb_off = xcalloc(n_ids + 1, sizeof(*t->tb_off));
    t->tb_has = xcalloc(n_ids ? n_ids : 1, 1);
    err rc = ERR_OK;
    if (!src || !is_added || !t->tb_off || !t->tb_has) {
        rc = nomem(eb, bd->vocab_path);
        goto out;
    }
    for (size_t i = 0; i < bd->nv; i++) src[bd->v[i].id] = &bd->v[i].s;
    for (size_t i = 0; i < bd->na; i++) {
        src[bd->a[i].id] = &bd->a[i].s;
        is_added[bd->a[i].id] = 1;
    }
    size_t total = 0;
    for (size_t id = 0; id < n_ids; id++)
        if (src[id]) total += src[id]->len;
    if (total > UINT32_MAX) {
        rc = errbuf_set(eb, ERR_FORMAT, "%s: token strings too large", bd->vocab_path);
        goto out;
    }
    t->tb_data = xmalloc(total ? total : 1);
    if (!t->tb_data) {
        rc = nomem(eb, bd->vocab_path);
        goto out;
    }
    uint32_t w = 0;
    for (size_t id = 0; id < n_ids; id++) {
        t->tb_off[id] = w;
        if (!src[id]) continue;
        t->tb_has[id] = 1;
        const unsigned char *s = (const unsigned char *)src[id]->s;
        size_t len = src[id]->len, k = 0;
        uint32_t w0 = w;
        bool raw = is_added[id];
        while (!raw && k < len) {
            uint32_t cp;
            k += (size_t)tok__utf8_next(s + k, len - k, &cp);
            int b = tok__cp_to_byte(cp);
            if (b < 0) raw = true;
            else t->tb_data[w++] = (char)b;
        }
        if (raw) {
            memcpy(t->tb_data + w0, s, len);
            w = w0 + (uint32_t)len;
        }
    }
    t->tb_off[n_ids] = w;
out:
    xfree(src);
    xfree(is_added);
    return rc;
}

typedef struct added_sort {
    tok__added a;
    unsigned char first;
    size_t order;
} added_sort;

static int added_cmp(const void *x, const void *y) {
    const added_sort *a = x, *b = y;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->a.len != b->a.len) return a->a.len > b->a.len ? -1 : 1; /* longest first */
    return a->order < b->order ? -1 : a->order > b->order;
}

/* tokenizer.json's added tokens get their ids as HF's AddedVocabulary::add_tokens gives them, in list order: the
 * vocab id when the content is in model.vocab, else one past the largest added id, starting at the number of vocab
 * entries. The file's "id" is only checked (HF warns too): for files HF wrote, the two agree. Duplicates and empty
 * contents are skipped, as HF does. */
static void resolve_hf_added(builder *bd, const smap *vocab) {
    size_t n = 0;
    int32_t max_added = -1;
    int32_t n_vocab = (int32_t)bd->nv;
    for (size_t i = 0; i < bd->na; i++) {
        vent a = bd->a[i];
        bool dup = a.s.len == 0;
        for (size_t k = 0; k < n && !dup; k++)
            dup = bd->a[k].s.len == a.s.len && memcmp(bd->a[k].s.s, a.s.s, a.s.len) == 0;
        if (dup) continue;
        int32_t id = smap_get(vocab, a.s.s, a.s.len);
        if (id < 0) id = (max_added < 0 || (max_added < n_vocab && n_vocab > 0)) ? n_vocab : max_added + 1;
        if (id != a.id)
            LOG_WARN("%s: added token \"%.*s\" has id %d in the file but %d by HF's rules; using %d",
                     bd->vocab_path, (int)a.s.len, a.s.s, a.id, id, id);
        a.id = id;
        if (id > max_added) max_added = id;
        bd->a[n++] = a;
    }
    bd->na = n;
}

/* Resolves the special tokens named in special_tokens_map.json (and <|endoftext|>) into added tokens: an id from
 * the vocab, else a new id after the largest (transformers' add_special_tokens does the same). */
static err resolve_specials(builder *bd, const smap *vocab, int32_t *max_id, errbuf *eb) {
    for (size_t i = 0; i < bd->nsp; i++) {
        str s = bd->sp[i];
        bool have = false;
        for (size_t k = 0; k < bd->na && !have; k++)
            have = bd->a[k].s.len == s.len && memcmp(bd->a[k].s.s, s.s, s.len) == 0;
        if (have || s.len == 0) continue;
        vent a = {s, smap_get(vocab, s.s, s.len), false}; /* special tokens: normalized: false */
        if (a.id < 0) {
            if (i == 0 && s.len == sizeof(EOT) - 1 && memcmp(s.s, EOT, s.len) == 0) continue; /* the default */
            a.id = ++*max_id;
        }
        if (!PUSH(bd->a, bd->na, bd->capa, a)) return nomem(eb, bd->vocab_path);
    }
    return ERR_OK;
}

static err build_added(tok *t, const builder *bd, errbuf *eb) {
    added_sort *tmp = xcalloc(bd->na ? bd->na : 1, sizeof(*tmp));
    smap seen = {0};
    size_t total = 0, n = 0;
    for (size_t i = 0; i < bd->na; i++) total += bd->a[i].s.len;
    t->added_data = xmalloc(total ? total : 1);
    if (!tmp || !t->added_data || !smap_init(&seen, bd->na)) {
        xfree(tmp);
        xfree(seen.slots);
        return nomem(eb, bd->vocab_path);
    }
    uint32_t w = 0;
    for (size_t i = 0; i < bd->na; i++) {
        str s = bd->a[i].s;
        if (s.len == 0 || smap_get(&seen, s.s, s.len) >= 0) continue; /* empty or duplicate: first one wins */
        smap_put(&seen, s, bd->a[i].id);
        memcpy(t->added_data + w, s.s, s.len);
        tmp[n++] = (added_sort){{w, (uint32_t)s.len, bd->a[i].id}, (unsigned char)s.s[0], i};
        w += (uint32_t)s.len;
        if (s.len == sizeof(EOT) - 1 && memcmp(s.s, EOT, s.len) == 0) t->eos_id = bd->a[i].id;
    }
    xfree(seen.slots);
    qsort(tmp, n, sizeof(*tmp), added_cmp);
    for (int pass = 0; pass < 2; pass++) {
        tok__added_set *set = &t->added[pass];
        set->tok = xcalloc(n ? n : 1, sizeof(*set->tok));
        if (!set->tok) {
            xfree(tmp);
            return nomem(eb, bd->vocab_path);
        }
        size_t k = 0;
        for (int b = 0; b < 256; b++) {
            set->first[b] = (uint32_t)set->n;
            for (; k < n && tmp[k].first == b; k++)
                if (bd->a[tmp[k].order].normalized == (pass == 1)) set->tok[set->n++] = tmp[k].a;
        }
        set->first[256] = (uint32_t)set->n;
    }
    xfree(tmp);
    return ERR_OK;
}

static err build(tok *t, builder *bd, errbuf *eb) {
    smap vocab = {0};
    err rc = ERR_OK;
    if (!smap_init(&vocab, bd->nv)) return nomem(eb, bd->vocab_path);
    int32_t max_id = -1;
    for (size_t i = 0; i < bd->nv; i++) {
        smap_put(&vocab, bd->v[i].s, bd->v[i].id);
        if (bd->v[i].id > max_id) max_id = bd->v[i].id;
    }
    if (bd->hf_added_ids) resolve_hf_added(bd, &vocab);
    for (size_t i = 0; i < bd->na; i++)
        if (bd->a[i].id > max_id) max_id = bd->a[i].id;
    if ((rc = resolve_specials(bd, &vocab, &max_id, eb))) goto out;
    if (max_id >= TOK__MAX_ID) {
        rc = errbuf_set(eb, ERR_FORMAT, "%s: too many tokens", bd->vocab_path);
        goto out;
    }
    t->vocab_size = max_id + 1;
    t->eos_id = -1;

    if ((rc = build_token_bytes(t, bd, eb))) goto out;
    if ((rc = build_merges(t, bd, &vocab, eb))) goto out;
    if ((rc = build_added(t, bd, eb))) goto out;

    for (int b = 0; b < 256; b++) { /* byte -> its one-char vocab string (cp < 0x800: at most 2 UTF-8 bytes) */
        uint32_t cp = tok__byte_to_cp(b);
        char u[2] = {(char)cp, 0};
        size_t n = 1;
        if (cp >= 0x80) {
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
            n = 2;
        }
        t->byte_id[b] = smap_get(&vocab, u, n);
    }

    if (t->eos_id < 0) t->eos_id = smap_get(&vocab, EOT, sizeof(EOT) - 1);

    t->unk_id = -1;
    t->fuse_unk = bd->fuse_unk;
    if (bd->has_unk) {
        t->unk_id = smap_get(&vocab, bd->unk.s, bd->unk.len);
        if (t->unk_id < 0) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: unk_token \"%.*s\" is not in the vocabulary", bd->vocab_path,
                            (int)bd->unk.len, bd->unk.s);
            goto out;
        }
    }

    /* The public header promises that a push writes at most the token's length + 8 bytes. */
    t->stream_slack = 0;
    for (int32_t id = 0; id < t->vocab_size; id++) {
        size_t len;
        const char *b = tok_token_bytes(t, id, &len);
        int32_t s = b ? tok__stream_slack_of((const unsigned char *)b, len) : 0;
        if (s > 8) {
            rc = errbuf_set(eb, ERR_UNSUPPORTED, "%s: token %d would decode to more than its length + 8 bytes",
                            bd->vocab_path, id);
            goto out;
        }
        if (s > t->stream_slack) t->stream_slack = s;
    }
out:
    xfree(vocab.slots);
    return rc;
}

err tok_load(const char *dir, tok **out, errbuf *eb) {
    *out = NULL;
    builder bd = {0};
    char *tj = path_join(dir, "tokenizer.json");
    if (!tj) return nomem(eb, dir);
    err rc = file_exists(tj) ? load_tokenizer_json(&bd, tj, eb) : load_files(&bd, dir, eb);
    xfree(tj);
    tok *t = NULL;
    if (!rc) {
        t = xcalloc(1, sizeof(*t));
        if (!t) rc = nomem(eb, dir);
    }
    if (!rc) rc = build(t, &bd, eb);
    builder_fini(&bd);
    if (rc) {
        tok_destroy(t);
        return rc;
    }
    *out = t;
    return ERR_OK;
}
