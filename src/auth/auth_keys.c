/* auth_keys.c - cache-key derivation (HMAC-SHA256), API keys with a constant-time check, the bearer parser. */
#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "auth_impl.h"

void auth__hmac_key(const uint8_t *secret, size_t secret_len, const char *domain, const char *token, size_t len,
                    uint8_t out[CACHE_KEY_LEN]) {
    /* the domain and a NUL go first, so "rate" + token can never equal "decision" + another token */
    size_t dl = strlen(domain);
    uint8_t buf[64 + AUTH_MAX_TOKEN + 1];
    if (dl > 64) dl = 64;
    if (len > AUTH_MAX_TOKEN) len = AUTH_MAX_TOKEN;
    memcpy(buf, domain, dl);
    buf[dl] = 0;
    memcpy(buf + dl + 1, token, len);
    unsigned int n = CACHE_KEY_LEN;
    HMAC(EVP_sha256(), secret, (int)secret_len, buf, dl + 1 + len, out, &n);
    OPENSSL_cleanse(buf, sizeof(buf));
}

static err keys_add(auth_keys *k, const char *s, size_t n, errbuf *eb) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (!n || *s == '#') return ERR_OK;
    uint8_t (*d)[32] = xrealloc(k->digest, (k->n + 1) * sizeof(*d));
    if (!d) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    k->digest = d;
    SHA256((const unsigned char *)s, n, k->digest[k->n]);
    k->n++;
    return ERR_OK;
}

err auth__keys_load(auth_keys *k, const char *list, const char *file, errbuf *eb) {
    memset(k, 0, sizeof(*k));
    err rc = ERR_OK;
    for (const char *p = list; p && *p && rc == ERR_OK;) {
        size_t n = strcspn(p, ",");
        rc = keys_add(k, p, n, eb);
        p += n + (p[n] == ',');
    }
    if (rc == ERR_OK && file) {
        FILE *f = fopen(file, "r");
        if (!f) rc = errbuf_set(eb, ERR_INVALID, "SUGGESTD_API_KEYS_FILE: cannot open %s", file);
        char line[AUTH_MAX_TOKEN + 2];
        while (rc == ERR_OK && f && fgets(line, sizeof(line), f)) rc = keys_add(k, line, strcspn(line, "\r\n"), eb);
        OPENSSL_cleanse(line, sizeof(line));
        if (f) fclose(f);
    }
    if (rc != ERR_OK) auth__keys_fini(k);
    return rc;
}

void auth__keys_fini(auth_keys *k) {
    if (k->digest) OPENSSL_cleanse(k->digest, k->n * sizeof(*k->digest));
    xfree(k->digest);
    memset(k, 0, sizeof(*k));
}

int auth__keys_match(const auth_keys *k, const char *token, size_t len) {
    uint8_t d[32];
    SHA256((const unsigned char *)token, len, d);
    int match = 0;
    for (size_t i = 0; i < k->n; i++) match |= CRYPTO_memcmp(d, k->digest[i], sizeof(d)) == 0;
    return match;
}

int auth__parse_bearer(const char *h, const char **tok, size_t *len) {
    if (!h || strncasecmp(h, "bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ') h++;
    size_t n = 0;
    while (h[n] > 0x20 && h[n] < 0x7f) n++;
    if (!n || n > AUTH_MAX_TOKEN) return 0;
    const char *rest = h + n;
    while (*rest == ' ' || *rest == '\t') rest++;
    if (*rest) return 0; /* a second word or a control character */
    *tok = h;
    *len = n;
    return 1;
}
