/* fuzz_tok.c - libFuzzer target for src/tok.
 *
 * Loads models/codegen-tokenizer once (under $SUGGESTD_SOURCE_DIR, else the SUGGESTD_SOURCE_DIR the build defines,
 * else the current directory), then for each input:
 *   1. encodes the bytes: well-formed UTF-8 must encode to ids < tok_vocab_size that decode back to the same bytes;
 *      anything else must give ERR_INVALID naming the offset that a separate validator here finds, and then the
 *      well-formed prefix is encoded;
 *   2. reads the bytes as little-endian 16-bit ids (some past the vocabulary) and decodes them through tok_stream
 *      with exactly the promised output capacity (token length + 8, in a heap buffer so ASan sees an overrun):
 *      every push must emit whole UTF-8 characters, and the concatenation must equal tok_decode's.
 * Any violation aborts. Build: clang -fsanitize=fuzzer,address,undefined, linked with tok and core. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "tok.h"

static tok *g_tok;

static void load_once(void) {
    if (g_tok) return;
    const char *root = getenv("SUGGESTD_SOURCE_DIR");
#ifdef SUGGESTD_SOURCE_DIR
    if (!root || !*root) root = SUGGESTD_SOURCE_DIR;
#endif
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/models/codegen-tokenizer", root && *root ? root : ".");
    errbuf eb = {0};
    if (tok_load(dir, &g_tok, &eb)) {
        fprintf(stderr, "fuzz_tok: %s (set SUGGESTD_SOURCE_DIR to the source tree)\n", eb.msg);
        abort();
    }
}

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_tok: %s\n", what);
        abort();
    }
}

/* Independent of src/tok: RFC 3629 well-formedness. Returns n, or the offset of the first ill-formed sequence. */
static size_t utf8_prefix(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t need;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) need = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) need = 2, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) need = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (n - i <= need) return i;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += need + 1;
    }
    return n;
}

static int utf8_ok(const uint8_t *s, size_t n) { return utf8_prefix(s, n) == n; }

/* Encodes well-formed text: ids in range, and decode gives the bytes back. */
static void encode_valid(const uint8_t *data, size_t size) {
    int32_t *ids;
    size_t n;
    errbuf eb = {0};
    check(tok_encode(g_tok, (const char *)data, size, &ids, &n, &eb) == ERR_OK, "well-formed UTF-8 was rejected");
    for (size_t i = 0; i < n; i++) check(ids[i] >= 0 && ids[i] < tok_vocab_size(g_tok), "id out of range");
    char *text;
    size_t len;
    check(tok_decode(g_tok, ids, n, &text, &len) == ERR_OK, "tok_decode failed");
    check(len == size && memcmp(text, data, size) == 0, "encode/decode round trip differs");
    xfree(text);
    xfree(ids);
}

/* Ill-formed input must give ERR_INVALID naming the offset; its well-formed prefix is encoded too, so random bytes
 * still exercise the encoder. */
static void fuzz_encode(const uint8_t *data, size_t size) {
    size_t ok = utf8_prefix(data, size);
    if (ok == size) {
        encode_valid(data, size);
        return;
    }
    int32_t *ids;
    size_t n;
    errbuf eb = {0};
    check(tok_encode(g_tok, (const char *)data, size, &ids, &n, &eb) == ERR_INVALID,
          "ill-formed UTF-8 was not rejected");
    check(ids == NULL && n == 0, "rejected input left output");
    char want[48];
    snprintf(want, sizeof(want), "offset %zu", ok);
    check(strstr(eb.msg, want) != NULL, "error message lacks the offset of the first ill-formed byte");
    encode_valid(data, ok);
}

static void fuzz_decode(const uint8_t *data, size_t size) {
    size_t n = size / 2;
    int32_t *ids = xmalloc_array(n ? n : 1, sizeof(*ids));
    check(ids != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(data[2 * i] | data[2 * i + 1] << 8); /* 0..65535 */

    size_t cap = 8;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        tok_token_bytes(g_tok, ids[i], &len);
        cap += len + 8;
    }
    char *all = xmalloc(cap);
    check(all != NULL, "out of memory");
    size_t all_n = 0;
    tok_stream st;
    tok_stream_init(&st);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        tok_token_bytes(g_tok, ids[i], &len);
        char *out = xmalloc(len + 8);
        check(out != NULL, "out of memory");
        size_t w = tok_stream_push(&st, g_tok, ids[i], out, len + 8);
        check(w <= len + 8, "push wrote past cap");
        check(utf8_ok((const uint8_t *)out, w), "push emitted a partial or invalid character");
        memcpy(all + all_n, out, w);
        all_n += w;
        xfree(out);
    }
    size_t w = tok_stream_flush(&st, all + all_n, 8);
    check(utf8_ok((const uint8_t *)all + all_n, w), "flush emitted an invalid character");
    all_n += w;

    char *text;
    size_t len;
    check(tok_decode(g_tok, ids, n, &text, &len) == ERR_OK, "tok_decode failed");
    check(len == all_n && memcmp(text, all, len) == 0, "tok_decode differs from the stream");
    xfree(text);
    xfree(all);
    xfree(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    fuzz_encode(data, size);
    fuzz_decode(data, size);
    return 0;
}
