/* test_tok.c - unit tests for src/tok: the spec vectors (§5.4), both loaders, the regex corner cases, streaming
 * decode, errors, and round trips of the golden corpus.
 *
 * Expected ids not in the spec were produced by Hugging Face `tokenizers` 0.23 (its node binding) on a
 * tokenizer.json built from models/codegen-tokenizer the way this file builds one (see make_tokenizer_json). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "mapfile.h"
#include "testutil.h"
#include "tok.h"

static tok *g_files; /* loaded from vocab.json + merges.txt + added_tokens.json + special_tokens_map.json */
static tok *g_json;  /* loaded from a tokenizer.json built from the same files */
static char *g_json_dir;

/* ---- helpers ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        b->p = xrealloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* Appends the w bytes a tok_stream call wrote into out[cap]; fails if it claims more than cap. */
static void sb_out(sbuf *b, const char *out, size_t w, size_t cap) {
    assert_true(w <= cap);
    sb_add(b, out, w <= cap ? w : cap);
}

static void sb_fmt(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(tmp));
    sb_add(b, tmp, (size_t)n);
}

/* s[0..n) as a JSON string literal. */
static void sb_json_str(sbuf *b, const char *s, size_t n) {
    sb_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_add(b, e, 2);
        } else if (c < 0x20) {
            sb_fmt(b, "\\u%04x", c);
        } else {
            sb_add(b, (const char *)&c, 1);
        }
    }
    sb_str(b, "\"");
}

static char *read_source_file(const char *rel, size_t *len) {
    char *path = tu_source_path(rel);
    char *data = NULL;
    errbuf eb = {0};
    err rc = file_read_all(path, &data, len, (size_t)64 << 20, &eb);
    if (rc) fail_msg("%s", eb.msg);
    xfree(path);
    return data;
}

/* A tokenizer.json as HF `tokenizers` writes CodeGen's: model.vocab = vocab.json, model.merges as [a, b] pairs
 * (as tokenizers >= 0.20 writes them), and the 39 added tokens of spec §5.1 made here from the table, not read from
 * added_tokens.json, so the two loaders are checked against each other and against the spec. */
static char *make_tokenizer_json(void) {
    size_t vlen, mlen;
    char *vocab = read_source_file("models/codegen-tokenizer/vocab.json", &vlen);
    char *merges = read_source_file("models/codegen-tokenizer/merges.txt", &mlen);
    sbuf b = {0};
    sb_str(&b, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[");
    sb_str(&b, "{\"id\":50256,\"content\":\"<|endoftext|>\",\"single_word\":false,\"lstrip\":false,"
               "\"rstrip\":false,\"normalized\":true,\"special\":true}");
    for (int id = 50257; id <= 50294; id++) {
        char content[32];
        int n = id <= 50286 ? 31 - (id - 50257) : 9 - (id - 50287);
        memset(content, id <= 50286 ? ' ' : '\t', (size_t)n);
        sb_fmt(&b, ",{\"id\":%d,\"content\":", id);
        sb_json_str(&b, content, (size_t)n);
        sb_str(&b, ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":false}");
    }
    sb_str(&b, "],\"normalizer\":null,"
               "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,"
               "\"use_regex\":true},"
               "\"post_processor\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":false,"
               "\"use_regex\":true},"
               "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,"
               "\"use_regex\":true},"
               "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":\"\","
               "\"end_of_word_suffix\":\"\",\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,"
               "\"vocab\":");
    sb_add(&b, vocab, vlen);
    sb_str(&b, ",\"merges\":[");
    const char *p = merges, *end = merges + mlen;
    int first = 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        if (eol > p && strncmp(p, "#version", 8) != 0) {
            const char *sp = memchr(p, ' ', (size_t)(eol - p));
            assert_non_null(sp);
            sb_str(&b, first ? "[" : ",[");
            sb_json_str(&b, p, (size_t)(sp - p));
            sb_str(&b, ",");
            sb_json_str(&b, sp + 1, (size_t)(eol - sp - 1));
            sb_str(&b, "]");
            first = 0;
        }
        p = nl ? nl + 1 : end;
    }
    sb_str(&b, "]}}");
    xfree(vocab);
    xfree(merges);
    return b.p;
}

static int group_setup(void **state) {
    (void)state;
    errbuf eb = {0};
    char *dir = tu_source_path("models/codegen-tokenizer");
    err rc = tok_load(dir, &g_files, &eb);
    xfree(dir);
    if (rc) {
        fprintf(stderr, "tok_load: %s\n", eb.msg);
        return -1;
    }
    g_json_dir = tu_mkdtemp();
    char *json = make_tokenizer_json();
    if (!g_json_dir || tu_write_file(g_json_dir, "tokenizer.json", json, strlen(json)) != 0) return -1;
    xfree(json);
    if (tok_load(g_json_dir, &g_json, &eb)) {
        fprintf(stderr, "tok_load(tokenizer.json): %s\n", eb.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    tok_destroy(g_files);
    tok_destroy(g_json);
    tu_rmtree_free(g_json_dir);
    return 0;
}

static int is_valid_utf8(const char *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else return 0;
        if (i + need >= n) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += need + 1;
    }
    return 1;
}

static void check_decode(const tok *t, const int32_t *ids, size_t n, const char *want, size_t want_len) {
    char *text;
    size_t len;
    assert_int_equal(tok_decode(t, ids, n, &text, &len), ERR_OK);
    assert_int_equal(len, want_len);
    assert_memory_equal(text, want, want_len);
    assert_int_equal(text[len], 0);
    xfree(text);
}

/* Encodes text with t, compares with want[0..n_want), and checks the round trip through tok_decode. */
static void check_encode(const tok *t, const char *text, size_t len, const int32_t *want, size_t n_want) {
    int32_t *ids;
    size_t n;
    errbuf eb = {0};
    err rc = tok_encode(t, text, len, &ids, &n, &eb);
    if (rc) fail_msg("tok_encode: %s", eb.msg);
    assert_non_null(ids);
    for (size_t i = 0; i < n && i < n_want; i++) {
        if (ids[i] != want[i]) print_error("token %zu of \"%.*s\"\n", i, (int)len, text);
        assert_int_equal(ids[i], want[i]);
    }
    assert_int_equal(n, n_want);
    check_decode(t, ids, n, text, len);
    xfree(ids);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), (sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t))
#define CHECK(t, lit, ...) check_encode((t), (lit), sizeof(lit) - 1, IDS(__VA_ARGS__))

/* ---- spec §5.4 ---- */

static void spec_vectors(const tok *t) {
    CHECK(t, "Hello world", 15496, 995);
    CHECK(t, " Hello world", 18435, 995);
    CHECK(t, "def hello():\n    return 1\n", 4299, 23748, 33529, 198, 50284, 7783, 352, 198);
    CHECK(t, "\tx\t\ty", 197, 87, 50294, 88);
    CHECK(t, "a  b", 64, 50286, 65);
    CHECK(t, "x                                        y", 87, 50257, 50279, 88); /* 40 spaces */
    CHECK(t, "<|endoftext|>def", 50256, 4299);
}

static void test_spec_vectors_files(void **state) {
    (void)state;
    spec_vectors(g_files);
}

static void test_spec_vectors_tokenizer_json(void **state) {
    (void)state;
    spec_vectors(g_json);
}

static void test_sizes_and_token_bytes(void **state) {
    (void)state;
    const tok *ts[2] = {g_files, g_json};
    for (int k = 0; k < 2; k++) {
        const tok *t = ts[k];
        assert_int_equal(tok_vocab_size(t), 50295);
        assert_int_equal(tok_eos_id(t), 50256);
        size_t len;
        const char *b = tok_token_bytes(t, 50256, &len);
        assert_int_equal(len, 13);
        assert_memory_equal(b, "<|endoftext|>", 13);
        b = tok_token_bytes(t, 50257, &len);
        assert_int_equal(len, 31);
        assert_int_equal(b[0], ' ');
        b = tok_token_bytes(t, 50294, &len);
        assert_int_equal(len, 2);
        assert_memory_equal(b, "\t\t", 2);
        b = tok_token_bytes(t, 220, &len); /* "Ġ" */
        assert_int_equal(len, 1);
        assert_int_equal(b[0], ' ');
        b = tok_token_bytes(t, 198, &len); /* "Ċ" */
        assert_int_equal(len, 1);
        assert_int_equal(b[0], '\n');
        b = tok_token_bytes(t, 18435, &len);
        assert_int_equal(len, 6);
        assert_memory_equal(b, " Hello", 6);
        assert_null(tok_token_bytes(t, 50295, &len));
        assert_int_equal(len, 0);
        assert_null(tok_token_bytes(t, -1, &len));
        assert_int_equal(len, 0);
    }
}

/* ---- regex corner cases (ids from HF tokenizers) ---- */

static void regex_cases(const tok *t) {
    /* contractions are case-sensitive; a run of punctuation swallows the apostrophe */
    CHECK(t, "I'm DON'T they're it'S ?'s", 40, 1101, 23917, 6, 51, 484, 821, 340, 6, 50, 5633, 6, 82);
    /* mixed whitespace runs go through \s+(?!\S) */
    CHECK(t, " \t \n\n\r\n x", 220, 197, 220, 628, 201, 198, 2124);
    /* Unicode spaces (U+3000, U+00A0, U+2028) are \s */
    CHECK(t, "a\xe3\x80\x80" "b\xc2\xa0 c\xe2\x80\xa8" "d", 64, 5099, 222, 65, 1849, 269, 447, 101, 67);
    /* \p{N} includes Arabic-Indic digits */
    CHECK(t, "x = 12345 + \xd9\xa3\xd9\xa4", 87, 796, 17031, 2231, 1343, 18923, 96, 149, 97);
    CHECK(t, "\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87", 41840, 102, 447,
          235, 8582, 240, 119, 40304, 220, 40792, 23877, 229);
    CHECK(t, "if (a) {\n\t\treturn;\n\t}\n", 361, 357, 64, 8, 1391, 198, 50294, 7783, 26, 198, 197, 92, 198);
    /* U+105C0 (Todhri, new in Unicode 16.0) is a letter for HF's Oniguruma: one word with the a and b */
    CHECK(t, "a\xf0\x90\x97\x80" "b", 64, 172, 238, 245, 222, 65);
}

static void test_regex_cases(void **state) {
    (void)state;
    regex_cases(g_files);
    regex_cases(g_json);
}

static void test_empty(void **state) {
    (void)state;
    int32_t *ids;
    size_t n = 99;
    assert_int_equal(tok_encode(g_files, "", 0, &ids, &n, NULL), ERR_OK);
    assert_int_equal(n, 0);
    xfree(ids);
    check_decode(g_files, NULL, 0, "", 0);
}

/* A long single word: the heap-based merge loop keeps this O(n log n). */
static void test_long_word(void **state) {
    (void)state;
    size_t len = 200000;
    char *s = xmalloc(len);
    for (size_t i = 0; i < len; i++) s[i] = (char)('a' + (i * 7 % 13 == 0));
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(g_files, s, len, &ids, &n, NULL), ERR_OK);
    assert_true(n > 0 && n < len);
    check_decode(g_files, ids, n, s, len);
    xfree(ids);
    xfree(s);
}

/* ---- the golden corpus: both loaders agree, and every file round-trips ---- */

static void test_corpus_round_trip(void **state) {
    (void)state;
    char *dir = tu_source_path("tests/golden/corpus");
    DIR *d = opendir(dir);
    assert_non_null(d);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char rel[512];
        snprintf(rel, sizeof(rel), "tests/golden/corpus/%s", de->d_name);
        size_t len;
        char *text = read_source_file(rel, &len);
        int32_t *a, *b;
        size_t na, nb;
        errbuf eb = {0};
        if (tok_encode(g_files, text, len, &a, &na, &eb)) fail_msg("%s: %s", rel, eb.msg);
        if (tok_encode(g_json, text, len, &b, &nb, &eb)) fail_msg("%s: %s", rel, eb.msg);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) assert_int_equal(a[i], b[i]);
        check_decode(g_files, a, na, text, len);
        xfree(a);
        xfree(b);
        xfree(text);
        files++;
    }
    closedir(d);
    xfree(dir);
    assert_true(files >= 5);
}

/* ---- streaming decode ---- */

static void test_stream_split_chars(void **state) {
    (void)state;
    /* é中👩‍💻: 2-, 3- and 4-byte characters and a ZWJ sequence */
    static const char text[] = "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb";
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(g_files, text, sizeof(text) - 1, &ids, &n, NULL), ERR_OK);
    int split = 0;
    tok_stream st;
    tok_stream_init(&st);
    sbuf all = {0};
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *b = tok_token_bytes(g_files, ids[i], &len);
        if (!is_valid_utf8(b, len)) split++;
        char out[64];
        assert_true(len + 8 <= sizeof(out));
        size_t w = tok_stream_push(&st, g_files, ids[i], out, len + 8);
        assert_true(is_valid_utf8(out, w)); /* never half a character */
        sb_out(&all, out, w, sizeof(out));
    }
    char out[8];
    assert_int_equal(tok_stream_flush(&st, out, sizeof(out)), 0);
    assert_true(split > 0); /* the test means something only if some token splits a character */
    assert_int_equal(all.n, sizeof(text) - 1);
    assert_memory_equal(all.p, text, sizeof(text) - 1);
    xfree(all.p);
    xfree(ids);
}

/* Ids of the single-byte tokens. */
static void byte_ids(const tok *t, int32_t ids[256]) {
    for (int b = 0; b < 256; b++) ids[b] = -1;
    for (int32_t id = 0; id < tok_vocab_size(t); id++) {
        size_t len;
        const char *p = tok_token_bytes(t, id, &len);
        if (p && len == 1 && ids[(unsigned char)p[0]] < 0) ids[(unsigned char)p[0]] = id;
    }
    for (int b = 0; b < 256; b++) assert_true(ids[b] >= 0);
}

/* Streams raw bytes one single-byte token each and flushes; expects Python's bytes.decode(errors="replace"). */
static void check_stream_bytes(const int32_t bid[256], const char *in, size_t n, const char *want) {
    tok_stream st;
    tok_stream_init(&st);
    sbuf all = {0};
    sb_add(&all, "", 0);
    int32_t ids[16];
    for (size_t i = 0; i < n; i++) {
        char out[16];
        ids[i] = bid[(unsigned char)in[i]];
        size_t w = tok_stream_push(&st, g_files, ids[i], out, 9);
        assert_true(is_valid_utf8(out, w));
        sb_out(&all, out, w, 9);
    }
    char out[8];
    sb_out(&all, out, tok_stream_flush(&st, out, sizeof(out)), sizeof(out));
    assert_int_equal(all.n, strlen(want));
    assert_memory_equal(all.p, want, all.n);
    check_decode(g_files, ids, n, want, strlen(want));
    xfree(all.p);
}

#define FFFD "\xef\xbf\xbd"

static void test_stream_invalid(void **state) {
    (void)state;
    int32_t bid[256];
    byte_ids(g_files, bid);
    check_stream_bytes(bid, "\xe2\x28\xa1", 3, FFFD "(" FFFD);
    check_stream_bytes(bid, "\xf0\x80\x80", 3, FFFD FFFD FFFD);
    check_stream_bytes(bid, "\xed\xa0\x80", 3, FFFD FFFD FFFD);
    check_stream_bytes(bid, "\xe2\x82", 2, FFFD);
    check_stream_bytes(bid, "\xc3", 1, FFFD);
    check_stream_bytes(bid, "\xff" "A", 2, FFFD "A");
    check_stream_bytes(bid, "\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80");
    check_stream_bytes(bid, "\xc0\xaf", 2, FFFD FFFD);
    check_stream_bytes(bid, "\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD);
    check_stream_bytes(bid, "\xf0\x9f\x98" "A", 4, FFFD "A");
    /* ids without a string produce nothing and keep the pending bytes */
    tok_stream st;
    tok_stream_init(&st);
    char out[16];
    assert_int_equal(tok_stream_push(&st, g_files, bid[0xe4], out, 9), 0);
    assert_int_equal(tok_stream_push(&st, g_files, 60000, out, 8), 0);
    assert_int_equal(tok_stream_push(&st, g_files, bid[0xb8], out, 9), 0);
    assert_int_equal(tok_stream_push(&st, g_files, bid[0xad], out, 9), 3);
    assert_memory_equal(out, "\xe4\xb8\xad", 3);
}

/* ---- errors ---- */

static void test_invalid_utf8(void **state) {
    (void)state;
    static const struct {
        const char *s;
        size_t len, offset;
    } cases[] = {
        {"ab\xff" "cd", 5, 2},  {"abc\xe2\x82", 5, 3},       {"x\xc0\xaf", 3, 1},
        {"\xed\xa0\x80", 3, 0}, {"ok \xf4\x90\x80\x80", 7, 3}, {"\xc3\xa9\x80", 3, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        errbuf eb = {0};
        assert_int_equal(tok_encode(g_files, cases[i].s, cases[i].len, &ids, &n, &eb), ERR_INVALID);
        assert_null(ids);
        assert_int_equal(n, 0);
        char want[64];
        snprintf(want, sizeof(want), "offset %zu", cases[i].offset);
        if (!strstr(eb.msg, want)) fail_msg("\"%s\" lacks \"%s\"", eb.msg, want);
    }
}

static void expect_load_error(const char *dir, err code, const char *needle1, const char *needle2) {
    tok *t = (tok *)1;
    errbuf eb = {0};
    err rc = tok_load(dir, &t, &eb);
    assert_int_equal(rc, code);
    assert_null(t);
    if (needle1 && !strstr(eb.msg, needle1)) fail_msg("\"%s\" lacks \"%s\"", eb.msg, needle1);
    if (needle2 && !strstr(eb.msg, needle2)) fail_msg("\"%s\" lacks \"%s\"", eb.msg, needle2);
}

static void write_str(const char *dir, const char *name, const char *s) {
    assert_int_equal(tu_write_file(dir, name, s, strlen(s)), 0);
}

static void test_load_errors(void **state) {
    (void)state;
    expect_load_error("/nonexistent/suggestd-tok", ERR_IO, "/nonexistent/suggestd-tok/vocab.json", NULL);

    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    write_str(dir, "vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}");
    expect_load_error(dir, ERR_IO, "merges.txt", NULL);

    write_str(dir, "merges.txt", "#version: 0.2\na b\nab\n");
    expect_load_error(dir, ERR_FORMAT, "merges.txt: line 3", "expected two symbols");

    write_str(dir, "merges.txt", "#version: 0.2\na b\nb c\n");
    expect_load_error(dir, ERR_FORMAT, "merges.txt: line 3", "\"c\" is not in the vocabulary");

    write_str(dir, "merges.txt", "#version: 0.2\na b\nb a\n");
    expect_load_error(dir, ERR_FORMAT, "merges.txt: line 3", "\"ba\" is not in the vocabulary");

    write_str(dir, "merges.txt", "#version: 0.2\na b\n");
    write_str(dir, "vocab.json", "{\n\"a\": 0,\n\"b\": }");
    expect_load_error(dir, ERR_FORMAT, "vocab.json: line 3", NULL);

    write_str(dir, "vocab.json", "{\"a\": 0, \"b\": \"one\"}");
    expect_load_error(dir, ERR_FORMAT, "vocab.json", "\"b\"");

    write_str(dir, "vocab.json", "[1, 2]");
    expect_load_error(dir, ERR_FORMAT, "vocab.json", "not a JSON object");

    /* a minimal valid directory loads, and the special token is split out */
    write_str(dir, "vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|endoftext|>\": 3}");
    write_str(dir, "added_tokens.json", "{\"  \": 4}");
    tok *t;
    errbuf eb = {0};
    if (tok_load(dir, &t, &eb)) fail_msg("%s", eb.msg);
    assert_int_equal(tok_vocab_size(t), 5);
    assert_int_equal(tok_eos_id(t), 3);
    CHECK(t, "ab<|endoftext|>a  b", 2, 3, 0, 4, 1);
    tok_destroy(t);

    write_str(dir, "added_tokens.json", "{\"  \": -4}");
    expect_load_error(dir, ERR_FORMAT, "added_tokens.json", NULL);

    /* tokenizer.json wins over the other files */
    write_str(dir, "tokenizer.json", "{\"model\": {\"vocab\": {}}}");
    expect_load_error(dir, ERR_UNSUPPORTED, "tokenizer.json", "pre_tokenizer");
    write_str(dir, "tokenizer.json",
              "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
              " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}");
    expect_load_error(dir, ERR_FORMAT, "tokenizer.json: model.merges[0]", "expected two symbols");
    write_str(dir, "tokenizer.json",
              "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true},"
              " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_load_error(dir, ERR_UNSUPPORTED, "tokenizer.json", "add_prefix_space");
    write_str(dir, "tokenizer.json",
              "{\"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\", "
              "\"add_prefix_space\": false}, \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_load_error(dir, ERR_UNSUPPORTED, "tokenizer.json", "normalizer");
    write_str(dir, "tokenizer.json", "{\"model\": ");
    expect_load_error(dir, ERR_FORMAT, "tokenizer.json: line 1", NULL);
    tu_rmtree_free(dir);
}

/* ---- small handcrafted tokenizer.json files (ids from HF tokenizers on the same files) ---- */

static const char TINY[] =
    "{\"version\":\"1.0\",\"added_tokens\":["
    "{\"id\":14,\"content\":\"xy\",\"special\":false,\"lstrip\":false,\"rstrip\":false,\"single_word\":false,"
    "\"normalized\":true},"
    "{\"id\":15,\"content\":\"xyz\",\"special\":false,\"lstrip\":false,\"rstrip\":false,\"single_word\":false,"
    "\"normalized\":true},"
    "{\"id\":16,\"content\":\"yzw\",\"special\":true,\"lstrip\":false,\"rstrip\":false,\"single_word\":false,"
    "\"normalized\":false}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
    "\"trim_offsets\":true,\"use_regex\":true},"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"fuse_unk\":false,"
    "\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"d\":3,\"\\u0120\":4,\"ab\":5,\"bc\":6,\"abc\":7,\"\\u0120a\":8,\"w\":9,"
    "\"\\u0120ab\":10,\"aa\":11,\"aaa\":12,\"aaaa\":13},"
    "\"merges\":[\"b c\",\"a b\",\"ab c\",\"\\u0120 a\",\"\\u0120a b\",\"a a\",\"aa a\",\"aa aa\"]}}";

/* Same shape with an unk token, [a, b] merges and added-token ids that HF reassigns (it numbers added tokens from
 * the vocab size on, whatever the file says). */
static const char TINY_UNK[] =
    "{\"added_tokens\":["
    "{\"id\":7,\"content\":\"ab\",\"special\":false,\"normalized\":true},"
    "{\"id\":8,\"content\":\"bca\",\"special\":false,\"normalized\":true}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":%s,"
    "\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"\\u0120\":3,\"<unk>\":4,\"ab\":5,\"<unk>a\":6},"
    "\"merges\":[[\"a\",\"b\"],[\"<unk>\",\"a\"]]}}";

static tok *load_json_string(const char *json) {
    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    write_str(dir, "tokenizer.json", json);
    tok *t;
    errbuf eb = {0};
    if (tok_load(dir, &t, &eb)) fail_msg("%s", eb.msg);
    tu_rmtree_free(dir);
    return t;
}

static void test_tiny_tokenizer_json(void **state) {
    (void)state;
    tok *t = load_json_string(TINY);
    assert_int_equal(tok_vocab_size(t), 17);
    assert_int_equal(tok_eos_id(t), -1);
    CHECK(t, "abc", 0, 6);  /* "b c" (rank 0) before "a b" (rank 1) */
    CHECK(t, "abab", 5, 5); /* every occurrence of a pair merges */
    CHECK(t, "d ab ab", 3, 4, 5, 4, 5);
    CHECK(t, "abcd", 0, 6, 3);
    CHECK(t, "a b c d", 0, 4, 1, 4, 2, 4, 3);
    CHECK(t, "aaaaaaa", 13, 12); /* lowest rank first, leftmost first among equal ranks */
    /* "yzw" has normalized: false, so HF cuts it out before looking for "xy"/"xyz"; the lone "x" has no vocab
     * entry and no unk token, so it vanishes (and the round trip does not hold) */
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(t, "xyzw", 4, &ids, &n, NULL), ERR_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 16);
    xfree(ids);
    CHECK(t, " ab xy yzw xyz", 4, 5, 4, 14, 4, 16, 4, 15);
    tok_destroy(t);

    char json[2048];
    snprintf(json, sizeof(json), TINY_UNK, "true");
    t = load_json_string(json);
    assert_int_equal(tok_vocab_size(t), 8);
    static const struct {
        const char *s;
        int32_t fused[8], unfused[8];
        size_t n_fused, n_unfused;
    } cases[] = {
        {"qqa", {6}, {4, 6}, 1, 2},
        {"aqqb", {0, 4, 1}, {0, 4, 4, 1}, 3, 4},
        {"abca", {5, 2, 0}, {5, 2, 0}, 3, 3},
        {"qa qqa aqa", {6, 3, 6, 3, 0, 6}, {6, 3, 4, 6, 3, 0, 6}, 6, 7},
        {"zab ca", {4, 5, 3, 2, 0}, {4, 5, 3, 2, 0}, 5, 5},
    };
    for (int fuse = 1; fuse >= 0; fuse--) {
        if (!fuse) {
            tok_destroy(t);
            snprintf(json, sizeof(json), TINY_UNK, "false");
            t = load_json_string(json);
        }
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            const int32_t *want = fuse ? cases[i].fused : cases[i].unfused;
            size_t n_want = fuse ? cases[i].n_fused : cases[i].n_unfused;
            assert_int_equal(tok_encode(t, cases[i].s, strlen(cases[i].s), &ids, &n, NULL), ERR_OK);
            assert_int_equal(n, n_want);
            for (size_t k = 0; k < n; k++) assert_int_equal(ids[k], want[k]);
            xfree(ids);
        }
    }
    tok_destroy(t);
}

/* ---- allocation failures: every one is reported, nothing leaks (ASan checks the leaks) ---- */

static void test_alloc_failures(void **state) {
    (void)state;
    static const char text[] = "def f(x):\n    return x + 1  # \xc3\xa9\xe4\xb8\xad <|endoftext|>\n";
    int32_t *want;
    size_t n_want;
    assert_int_equal(tok_encode(g_files, text, sizeof(text) - 1, &want, &n_want, NULL), ERR_OK);
    for (long k = 0; k < 40; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        alloc_fail_after(k);
        err rc = tok_encode(g_files, text, sizeof(text) - 1, &ids, &n, NULL);
        char *s = NULL;
        err rc2 = rc ? ERR_NOMEM : tok_decode(g_files, ids, n, &s, NULL);
        alloc_fail_after(-1);
        assert_true(rc == ERR_OK || rc == ERR_NOMEM);
        assert_true(rc2 == ERR_OK || rc2 == ERR_NOMEM);
        if (!rc) {
            assert_int_equal(n, n_want);
            assert_memory_equal(ids, want, n * sizeof(*ids));
        }
        xfree(ids);
        xfree(s);
    }
    xfree(want);

    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    write_str(dir, "tokenizer.json", TINY);
    for (long k = 0; k < 60; k++) {
        tok *t = NULL;
        alloc_fail_after(k);
        err rc = tok_load(dir, &t, NULL);
        alloc_fail_after(-1);
        assert_true(rc == ERR_OK || rc == ERR_NOMEM);
        assert_true((rc == ERR_OK) == (t != NULL));
        tok_destroy(t);
    }
    tu_rmtree_free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_vectors_files),
        cmocka_unit_test(test_spec_vectors_tokenizer_json),
        cmocka_unit_test(test_sizes_and_token_bytes),
        cmocka_unit_test(test_regex_cases),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_long_word),
        cmocka_unit_test(test_corpus_round_trip),
        cmocka_unit_test(test_stream_split_chars),
        cmocka_unit_test(test_stream_invalid),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_tiny_tokenizer_json),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
