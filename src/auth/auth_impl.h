/* auth_impl.h - what src/auth/'s files share (and the unit tests call): key derivation, API keys, the bearer
 * parser, the libcurl client, GitLab's ml/ai-assist check, JWT/JWKS and the OIDC key cache. Not a public header. */
#ifndef SUGGESTD_AUTH_AUTH_IMPL_H
#define SUGGESTD_AUTH_AUTH_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"

#define AUTH_MAX_TOKEN 4096

/* --- keys (auth_keys.c) ------------------------------------------------------------------------------------ */
/* HMAC-SHA256(secret, domain || 0x00 || token): the cache key of a token. domain separates uses ("decision",
 * "rate", "rate-sub") so one token's entries never collide across them. */
void auth__hmac_key(const uint8_t *secret, size_t secret_len, const char *domain, const char *token, size_t len,
                    uint8_t out[CACHE_KEY_LEN]);

/* API keys, kept only as SHA-256 digests. */
typedef struct auth_keys {
    uint8_t (*digest)[32];
    size_t n;
} auth_keys;
/* Reads a comma list and/or a file (one key a line, blank lines and '#' comments skipped; spaces trimmed). */
err auth__keys_load(auth_keys *k, const char *list, const char *file, errbuf *eb);
void auth__keys_fini(auth_keys *k);
/* 1 when token is one of the keys. Compares the token's digest with every key's by CRYPTO_memcmp and never stops
 * early, so the time depends on neither the token nor how much of a key it matches. */
int auth__keys_match(const auth_keys *k, const char *token, size_t len);

/* `Bearer <token>` (scheme any case, one or more spaces). 1 with *tok and *len pointing into header when it is well
 * formed: 1..AUTH_MAX_TOKEN visible ASCII characters (no spaces, no control characters), else 0. */
int auth__parse_bearer(const char *header, const char **tok, size_t *len);

/* --- HTTP client (auth_gitlab.c, libcurl) ---------------------------------------------------------------- */
/* libcurl's global state: one init per auth_create, one cleanup per auth_destroy (reference counted by libcurl). */
void auth__http_global_init(void);
void auth__http_global_cleanup(void);
/* GET url with an optional bearer. ERR_OK with *status and a heap body (xfree; at most 1 MiB); ERR_TIMEOUT;
 * ERR_UPSTREAM when there was no answer (connection refused, DNS, TLS, too large). */
err auth__http_get(const char *url, const char *bearer, size_t bearer_len, int timeout_ms, long *status, char **body,
                   size_t *len);
/* GitLab's ml/ai-assist for token: ALLOWED (200 + "user_is_allowed": true), FORBIDDEN (200 + not true, 403, 404),
 * INVALID (401 and other 4xx), UNAVAILABLE (5xx, timeout, no answer, malformed JSON). */
auth_outcome auth__gitlab_check(const char *check_url, const char *token, size_t len, int timeout_ms);

/* --- JWT / JWKS (auth_jwt.c, OpenSSL) -------------------------------------------------------------------- */
typedef struct auth_jwks auth_jwks;
/* Parses a JWKS document, keeping the RSA keys (kty RSA, use absent or "sig", modulus >= 2048 bits). */
err auth__jwks_parse(const char *json, size_t len, auth_jwks **out, errbuf *eb);
void auth__jwks_free(auth_jwks *k);
size_t auth__jwks_count(const auth_jwks *k);

typedef enum auth_jwt_status {
    AUTH_JWT_OK,
    AUTH_JWT_MALFORMED,
    AUTH_JWT_BAD_ALG,     /* anything but RS256, "none" included */
    AUTH_JWT_UNKNOWN_KID,
    AUTH_JWT_BAD_SIGNATURE,
    AUTH_JWT_EXPIRED,
    AUTH_JWT_NOT_YET_VALID,
    AUTH_JWT_BAD_AUDIENCE,
} auth_jwt_status;
const char *auth__jwt_status_name(auth_jwt_status s);
/* Verifies an RS256 JWT: structure, alg, signature (by kid; every key when the token has none), exp (required),
 * nbf, aud (string or array) with leeway_s of clock skew. On AUTH_JWT_OK copies the `sub` claim (or "") into sub. */
auth_jwt_status auth__jwt_verify(const char *jwt, size_t len, const auth_jwks *keys, const char *audience,
                                 int64_t now_s, int leeway_s, char *sub, size_t sub_cap);
/* base64url without padding (padding tolerated). Returns the decoded length, or -1 on a bad character. out must
 * hold len * 3 / 4 + 3 bytes. */
long auth__b64url_decode(const char *in, size_t len, uint8_t *out);

/* --- OIDC key cache (auth_oidc.c) ------------------------------------------------------------------------ */
typedef struct auth_oidc auth_oidc;
err auth__oidc_create(const char *gitlab_url, const char *audience, int timeout_ms, int ttl_s, auth_oidc **out,
                      errbuf *eb);
void auth__oidc_destroy(auth_oidc *o);
/* ALLOWED (sub filled), INVALID, or UNAVAILABLE when the keys could not be fetched. Fetches the discovery document
 * and JWKS when the cache is empty or older than ttl_s, and again (at most once a second) for an unknown kid. */
auth_outcome auth__oidc_check(auth_oidc *o, const char *jwt, size_t len, char *sub, size_t sub_cap,
                              uint64_t *fetches);

#endif
