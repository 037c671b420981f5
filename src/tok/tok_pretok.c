/* tok_pretok.c - the GPT-2 pre-tokenizer regex, hand-compiled, plus the UTF-8 and Unicode-class helpers it needs.
 *
 * DESIGN
 * HF `tokenizers` (pre_tokenizers/byte_level.rs) splits each segment with Oniguruma running
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * by repeated leftmost search. The three classes L, N and \s are disjoint and every code point falls in exactly one
 * of them or in "other" = [^\s\p{L}\p{N}], so some alternative matches at every position and the matches tile the
 * segment. What a backtracking engine does at position i with first char c:
 *   1. c == '\'' followed by s|t|m|d, or re|ve|ll: that contraction (case-sensitive).
 *   2-4. c == ' ' (U+0020 only) followed by a char of class X != \s: the space plus the longest run of class X.
 *        c of class L, N or other: the longest run of that class (the optional space matches empty). A run of
 *        "other" swallows apostrophes, so "?'s" is "?'" + "s", exactly as the regex does.
 *   5. c in \s: take the longest whitespace run [i, j). At the end of the segment that is the match. Otherwise a
 *      non-space follows and (?!\S) forces the engine back one char: [i, j - last char) if that is non-empty.
 *   6. Else (a single whitespace char before a non-space): that char.
 * The lookahead sees the end of the segment, not the text after it: added tokens were split out first. */
#include "tok_impl.h"

int tok__uclass(uint32_t cp) {
    if (cp < 256) return tok__uclass_latin1[cp];
    size_t lo = 0, hi = tok__n_uranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < tok__uranges[mid].lo) hi = mid;
        else if (cp > tok__uranges[mid].hi) lo = mid + 1;
        else return (int)tok__uranges[mid].cls;
    }
    return TOK_UC_OTHER;
}

size_t tok__utf8_check(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;      /* overlong */
            else if (c == 0xED) hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;      /* overlong */
            else if (c == 0xF4) hi = 0x8F; /* > U+10FFFF */
        } else return i;
        if (n - i <= need) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += need + 1;
    }
    return n;
}

int tok__utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    if (c >= 0xC0 && c < 0xE0 && n >= 2) {
        *cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c < 0xF0 && n >= 3) {
        *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    if (c >= 0xF0 && n >= 4) {
        *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
              ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return 4;
    }
    *cp = c; /* ASCII, or (never for checked input) a truncated sequence: one byte at a time */
    return 1;
}

/* Class of the char at s[i] and its length. */
static inline int class_at(const unsigned char *s, size_t n, size_t i, int *len) {
    if (s[i] < 0x80) {
        *len = 1;
        return tok__uclass_latin1[s[i]];
    }
    uint32_t cp;
    *len = tok__utf8_next(s + i, n - i, &cp);
    return tok__uclass(cp);
}

size_t tok__pretok_next(const unsigned char *s, size_t n, size_t i) {
    /* 1. contractions */
    if (s[i] == '\'' && i + 1 < n) {
        unsigned char a = s[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            unsigned char b = s[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }

    int len;
    int cls = class_at(s, n, i, &len);
    size_t j = i;

    /* 2-4. " ?X+" with X one of L, N, other */
    if (s[i] == ' ' && i + 1 < n) {
        int len2;
        int cls2 = class_at(s, n, i + 1, &len2);
        if (cls2 != TOK_UC_S) {
            cls = cls2;
            len = len2;
            j = i + 1;
        }
    }
    if (cls != TOK_UC_S) {
        j += (size_t)len;
        while (j < n && class_at(s, n, j, &len) == cls) j += (size_t)len;
        return j;
    }

    /* 5-6. whitespace: the run, minus its last char when a non-space follows */
    size_t last = i; /* start of the run's last char */
    j = i + (size_t)len;
    while (j < n && class_at(s, n, j, &len) == TOK_UC_S) {
        last = j;
        j += (size_t)len;
    }
    if (j == n) return n;
    return last > i ? last : j;
}
