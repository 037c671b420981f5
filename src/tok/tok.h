/* tok.h - GPT-2 byte-level BPE exactly as Hugging Face `tokenizers` runs CodeGen's tokenizer.
 *
 * Encode: added tokens (the 38 whitespace runs, <|endoftext|>) are split out first, leftmost-longest; each other
 * segment goes through the GPT-2 pre-tokenizer regex (Unicode letter/number/whitespace classes), the byte->unicode
 * map and BPE merges by rank. No BOS/EOS is added. Decode: token -> raw bytes; tok_stream holds back incomplete UTF-8
 * so a stream never emits half a character.
 * A tok is immutable after load and safe to share between threads. */
#ifndef SUGGESTD_TOK_TOK_H
#define SUGGESTD_TOK_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct tok tok;

/* Loads from a Hugging Face model directory: tokenizer.json if present, else vocab.json + merges.txt (+
 * added_tokens.json, special_tokens_map.json). Errors name the file. */
err tok_load(const char *dir, tok **out, errbuf *eb);
void tok_destroy(tok *t);

/* Number of ids with a string (50295 for CodeGen): ids >= this are padding rows of the model. */
int32_t tok_vocab_size(const tok *t);
/* Id of <|endoftext|> (50256 for CodeGen), -1 if absent. */
int32_t tok_eos_id(const tok *t);

/* Encodes len bytes of UTF-8 text. *ids is a heap array (xfree) of *n ids. Invalid UTF-8 -> ERR_INVALID with the
 * byte offset in eb. */
err tok_encode(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n, errbuf *eb);

/* The raw bytes a token stands for (after the byte-level map is undone); NULL and *len = 0 for ids without a
 * string. The pointer stays valid for the tok's lifetime. */
const char *tok_token_bytes(const tok *t, int32_t id, size_t *len);

/* Streaming decoder: feed ids, receive whole UTF-8 characters. Invalid sequences come out as U+FFFD, like HF's
 * decode with errors="replace". */
typedef struct tok_stream {
    unsigned char pend[8];
    int n_pend;
} tok_stream;

void tok_stream_init(tok_stream *s);
/* Appends the text of id to out (capacity cap, which must be >= tok_token_bytes' length + 8); returns the number of
 * bytes written. Bytes of an incomplete character at the end are kept for the next call. */
size_t tok_stream_push(tok_stream *s, const tok *t, int32_t id, char *out, size_t cap);
/* Emits whatever is pending (as U+FFFD for an incomplete character); returns bytes written (cap >= 8). */
size_t tok_stream_flush(tok_stream *s, char *out, size_t cap);

/* Convenience: decodes ids into a NUL-terminated heap string (xfree), with replacement of invalid UTF-8. */
err tok_decode(const tok *t, const int32_t *ids, size_t n, char **text, size_t *len);

#endif
