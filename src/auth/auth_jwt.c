/* auth_jwt.c - RS256 JWTs against a JWKS: base64url, the JOSE header, the claims, the signature (OpenSSL EVP).
 *
 * DESIGN: the order of checks is chosen so nothing is trusted before the signature: the header is read only for
 * `alg` (which must be exactly "RS256": "none", HS256 with the public key as secret and every other algorithm are
 * refused before any key is touched) and `kid`; the claims are decoded only after the signature verified. Keys are
 * built from the JWK's n and e with EVP_PKEY_fromdata, and a modulus under 2048 bits is refused at load. */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <string.h>

#include "alloc.h"
#include "auth_impl.h"

typedef struct jwk {
    char *kid; /* NULL when the JWK has none */
    EVP_PKEY *key;
} jwk;

struct auth_jwks {
    jwk *keys;
    size_t n;
};

static int b64_val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* RFC 7515 base64url: no padding, so '=' is rejected like any other foreign character; otherwise one token would
 * verify under many spellings (found by fuzz_jwt: "sig=" and "sig====" verified like "sig"). */
long auth__b64url_decode(const char *in, size_t len, uint8_t *out) {
    uint32_t acc = 0;
    int bits = 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_val((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    if (len % 4 == 1) return -1;
    /* Canonical encodings only: the bits left over after the last byte must be zero, or one token would have many
     * spellings (found by fuzz_jwt: flipping an unused bit of the signature's last character still verified). */
    if (bits && (acc & ((1u << bits) - 1))) return -1;
    return n;
}

/* Decodes a base64url JSON segment into an object (NULL if it is not one). */
static json_t *segment_json(const char *s, size_t len) {
    uint8_t *buf = xmalloc(len * 3 / 4 + 3);
    if (!buf) return NULL;
    long n = auth__b64url_decode(s, len, buf);
    json_t *j = n > 0 ? json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    xfree(buf);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static BIGNUM *bn_of(const char *b64) {
    size_t len = b64 ? strlen(b64) : 0;
    while (len && b64[len - 1] == '=') len--; /* JWKS comes from the trusted issuer: tolerate padded key numbers */
    if (!len || len > 4096) return NULL;
    uint8_t *buf = xmalloc(len * 3 / 4 + 3);
    if (!buf) return NULL;
    long n = auth__b64url_decode(b64, len, buf);
    BIGNUM *bn = n > 0 ? BN_bin2bn(buf, (int)n, NULL) : NULL;
    xfree(buf);
    return bn;
}

static EVP_PKEY *rsa_from_jwk(const char *n64, const char *e64) {
    BIGNUM *n = bn_of(n64), *e = bn_of(e64);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    if (!n || !e || BN_num_bits(n) < 2048) goto out;
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        goto out;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return pkey;
}

err auth__jwks_parse(const char *json, size_t len, auth_jwks **out, errbuf *eb) {
    *out = NULL;
    json_t *j = json_loadb(json, len, 0, NULL);
    json_t *arr = json_object_get(j, "keys");
    if (!json_is_array(arr)) {
        json_decref(j);
        return errbuf_set(eb, ERR_FORMAT, "JWKS: no \"keys\" array");
    }
    auth_jwks *k = xcalloc(1, sizeof(*k));
    if (k) k->keys = xcalloc(json_array_size(arr) + 1, sizeof(jwk));
    if (!k || !k->keys) {
        if (k) xfree(k);
        json_decref(j);
        return errbuf_set(eb, ERR_NOMEM, "out of memory");
    }
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *kty = json_string_value(json_object_get(e, "kty"));
        const char *use = json_string_value(json_object_get(e, "use"));
        const char *alg = json_string_value(json_object_get(e, "alg"));
        if (!kty || strcmp(kty, "RSA") || (use && strcmp(use, "sig")) || (alg && strcmp(alg, "RS256"))) continue;
        EVP_PKEY *pk = rsa_from_jwk(json_string_value(json_object_get(e, "n")),
                                    json_string_value(json_object_get(e, "e")));
        if (!pk) continue;
        const char *kid = json_string_value(json_object_get(e, "kid"));
        k->keys[k->n].key = pk;
        k->keys[k->n].kid = kid ? xstrdup(kid) : NULL;
        k->n++;
    }
    json_decref(j);
    *out = k;
    return ERR_OK;
}

void auth__jwks_free(auth_jwks *k) {
    if (!k) return;
    for (size_t i = 0; i < k->n; i++) {
        EVP_PKEY_free(k->keys[i].key);
        xfree(k->keys[i].kid);
    }
    xfree(k->keys);
    xfree(k);
}

size_t auth__jwks_count(const auth_jwks *k) { return k ? k->n : 0; }

const char *auth__jwt_status_name(auth_jwt_status s) {
    static const char *names[] = {"ok", "malformed", "bad alg", "unknown kid", "bad signature", "expired",
                                  "not yet valid", "bad audience"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static int verify_sig(EVP_PKEY *key, const char *input, size_t ilen, const uint8_t *sig, size_t slen) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(md, sig, slen, (const unsigned char *)input, ilen) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

static int audience_ok(json_t *aud, const char *want) {
    if (json_is_string(aud)) return !strcmp(json_string_value(aud), want);
    size_t i;
    json_t *v;
    if (json_is_array(aud)) json_array_foreach(aud, i, v) if (json_is_string(v) && !strcmp(json_string_value(v), want))
        return 1;
    return 0;
}

auth_jwt_status auth__jwt_verify(const char *jwt, size_t len, const auth_jwks *keys, const char *audience,
                                 int64_t now_s, int leeway_s, char *sub, size_t sub_cap) {
    const char *d1 = memchr(jwt, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - jwt)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - jwt)) || d1 == jwt || d2 == d1 + 1)
        return AUTH_JWT_MALFORMED;
    json_t *hdr = segment_json(jwt, (size_t)(d1 - jwt));
    if (!hdr) return AUTH_JWT_MALFORMED;
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    if (!alg || strcmp(alg, "RS256") || json_object_get(hdr, "crit")) {
        json_decref(hdr);
        return AUTH_JWT_BAD_ALG;
    }
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    size_t slen64 = len - (size_t)(d2 + 1 - jwt);
    uint8_t *sig = xmalloc(slen64 * 3 / 4 + 3);
    long slen = sig ? auth__b64url_decode(d2 + 1, slen64, sig) : -1;
    auth_jwt_status st = AUTH_JWT_UNKNOWN_KID;
    if (slen <= 0) st = AUTH_JWT_MALFORMED;
    for (size_t i = 0; keys && slen > 0 && i < keys->n; i++) {
        if (kid && (!keys->keys[i].kid || strcmp(kid, keys->keys[i].kid))) continue;
        st = AUTH_JWT_BAD_SIGNATURE;
        if (verify_sig(keys->keys[i].key, jwt, (size_t)(d2 - jwt), sig, (size_t)slen)) {
            st = AUTH_JWT_OK;
            break;
        }
    }
    xfree(sig);
    json_decref(hdr);
    if (st != AUTH_JWT_OK) return st;
    json_t *claims = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!claims) return AUTH_JWT_MALFORMED;
    json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
    if (!json_is_number(exp) || (nbf && !json_is_number(nbf))) st = AUTH_JWT_MALFORMED;
    else if ((double)now_s - leeway_s >= json_number_value(exp)) st = AUTH_JWT_EXPIRED;
    else if (nbf && (double)now_s + leeway_s < json_number_value(nbf)) st = AUTH_JWT_NOT_YET_VALID;
    else if (!audience_ok(json_object_get(claims, "aud"), audience)) st = AUTH_JWT_BAD_AUDIENCE;
    if (st == AUTH_JWT_OK && sub && sub_cap) {
        const char *s = json_string_value(json_object_get(claims, "sub"));
        snprintf(sub, sub_cap, "%s", s ? s : "");
    }
    json_decref(claims);
    return st;
}
