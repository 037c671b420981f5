/* test_auth.c - auth's pieces without a network: HMAC key derivation (RFC 4231 vector, domains, secrets), the
 * bearer parser, API keys (constant-time match over digests), base64url, JWT verification with fixed RS256
 * vectors (signature, kid, alg none/HS256, exp/nbf, audience string/array), and auth_check in api-keys mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth_impl.h"
#include "jwt_vectors.h"

/* HMAC-SHA256(b"Jefe", b"decision\0what do ya want for nothing?"), computed with Python's hmac module */
#define EXPECTED_JEFE "1700985bf2fc7db700bbc3670293cf516a1c0b3169b47658ae3e67743bad2265"

static void hex(const uint8_t *b, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

static void test_hmac_key(void **state) {
    (void)state;
    uint8_t a[32], b[32], c[32], d[32];
    const uint8_t s1[] = "secret-1", s2[] = "secret-2";
    auth__hmac_key(s1, 8, "decision", "tok", 3, a);
    auth__hmac_key(s1, 8, "decision", "tok", 3, b);
    assert_memory_equal(a, b, 32); /* deterministic: replicas with one secret share keys */
    auth__hmac_key(s2, 8, "decision", "tok", 3, c);
    assert_memory_not_equal(a, c, 32);
    auth__hmac_key(s1, 8, "rate", "tok", 3, d);
    assert_memory_not_equal(a, d, 32);
    /* the exact construction: HMAC-SHA256(key="Jefe", "decision\0" + token); RFC 4231 case 2's key, our message */
    uint8_t e[32];
    char h[65];
    auth__hmac_key((const uint8_t *)"Jefe", 4, "decision", "what do ya want for nothing?", 28, e);
    hex(e, 32, h);
    assert_string_equal(h, EXPECTED_JEFE);
}

static void test_bearer(void **state) {
    (void)state;
    const char *t;
    size_t n;
    assert_int_equal(auth__parse_bearer("Bearer abc.DEF-1", &t, &n), 1);
    assert_int_equal(n, 9);
    assert_memory_equal(t, "abc.DEF-1", 9);
    assert_int_equal(auth__parse_bearer("bearer   xyz  ", &t, &n), 1);
    assert_int_equal(n, 3);
    assert_int_equal(auth__parse_bearer(NULL, &t, &n), 0);
    assert_int_equal(auth__parse_bearer("", &t, &n), 0);
    assert_int_equal(auth__parse_bearer("Bearer", &t, &n), 0);
    assert_int_equal(auth__parse_bearer("Bearer ", &t, &n), 0);
    assert_int_equal(auth__parse_bearer("Basic dXNlcg==", &t, &n), 0);
    assert_int_equal(auth__parse_bearer("Bearer a b", &t, &n), 0);
    assert_int_equal(auth__parse_bearer("Bearer a\r\nX-Evil: 1", &t, &n), 0);
    char big[AUTH_MAX_TOKEN + 16];
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'a', AUTH_MAX_TOKEN + 1);
    big[7 + AUTH_MAX_TOKEN + 1] = 0;
    assert_int_equal(auth__parse_bearer(big, &t, &n), 0);
}

static void test_api_keys(void **state) {
    (void)state;
    auth_keys k;
    errbuf eb = {0};
    assert_int_equal(auth__keys_load(&k, " alpha , beta,,gamma", NULL, &eb), ERR_OK);
    assert_int_equal(k.n, 3);
    assert_int_equal(auth__keys_match(&k, "alpha", 5), 1);
    assert_int_equal(auth__keys_match(&k, "gamma", 5), 1);
    assert_int_equal(auth__keys_match(&k, "alph", 4), 0);
    assert_int_equal(auth__keys_match(&k, "alphaa", 6), 0);
    assert_int_equal(auth__keys_match(&k, "", 0), 0);
    auth__keys_fini(&k);
    assert_int_equal(auth__keys_load(&k, NULL, "/nonexistent/keys", &eb), ERR_INVALID);
}

static void test_b64url(void **state) {
    (void)state;
    uint8_t out[16];
    assert_int_equal(auth__b64url_decode("aGk", 3, out), 2);
    assert_memory_equal(out, "hi", 2);
    assert_int_equal(auth__b64url_decode("_-8", 3, out), 2);
    assert_int_equal(out[0], 0xff);
    assert_int_equal(auth__b64url_decode("a+b/", 4, out), -1); /* plain base64 is not base64url */
    assert_int_equal(auth__b64url_decode("QQ", 2, out), 1);
    assert_int_equal(auth__b64url_decode("QR", 2, out), -1); /* non-zero unused bits: not canonical */
    assert_int_equal(auth__b64url_decode("a", 1, out), -1);
    assert_int_equal(auth__b64url_decode("aGk=", 4, out), -1); /* JWS segments are unpadded */
}

static auth_jwks *load_jwks(void) {
    auth_jwks *k;
    errbuf eb = {0};
    assert_int_equal(auth__jwks_parse(JWKS, strlen(JWKS), &k, &eb), ERR_OK);
    assert_int_equal(auth__jwks_count(k), 1);
    return k;
}

#define AUD "gitlab-code-suggestions"
#define NOW 1700000100

static void test_jwt_vectors(void **state) {
    (void)state;
    auth_jwks *k = load_jwks();
    char sub[64];
    assert_int_equal(auth__jwt_verify(VALID, strlen(VALID), k, AUD, NOW, 0, sub, sizeof(sub)), AUTH_JWT_OK);
    assert_string_equal(sub, "42");
    assert_int_equal(auth__jwt_verify(AUD_ARRAY, strlen(AUD_ARRAY), k, AUD, NOW, 0, sub, sizeof(sub)), AUTH_JWT_OK);
    assert_int_equal(auth__jwt_verify(VALID, strlen(VALID), k, "other-audience", NOW, 0, NULL, 0),
                     AUTH_JWT_BAD_AUDIENCE);
    assert_int_equal(auth__jwt_verify(WRONG_AUD, strlen(WRONG_AUD), k, AUD, NOW, 0, NULL, 0), AUTH_JWT_BAD_AUDIENCE);
    assert_int_equal(auth__jwt_verify(WRONG_KEY, strlen(WRONG_KEY), k, AUD, NOW, 0, NULL, 0), AUTH_JWT_BAD_SIGNATURE);
    assert_int_equal(auth__jwt_verify(UNKNOWN_KID, strlen(UNKNOWN_KID), k, AUD, NOW, 0, NULL, 0),
                     AUTH_JWT_UNKNOWN_KID);
    assert_int_equal(auth__jwt_verify(NONE, strlen(NONE), k, AUD, NOW, 0, NULL, 0), AUTH_JWT_BAD_ALG);
    assert_int_equal(auth__jwt_verify(NO_EXP, strlen(NO_EXP), k, AUD, NOW, 0, NULL, 0), AUTH_JWT_MALFORMED);
    /* time: exp 1700003600, nbf 1699999990 */
    assert_int_equal(auth__jwt_verify(VALID, strlen(VALID), k, AUD, 1700003600, 0, NULL, 0), AUTH_JWT_EXPIRED);
    assert_int_equal(auth__jwt_verify(VALID, strlen(VALID), k, AUD, 1700003620, 30, NULL, 0), AUTH_JWT_OK);
    assert_int_equal(auth__jwt_verify(VALID, strlen(VALID), k, AUD, 1699999900, 0, NULL, 0), AUTH_JWT_NOT_YET_VALID);
    /* one flipped character of the payload breaks the signature */
    char t[sizeof(VALID)];
    memcpy(t, VALID, sizeof(VALID));
    char *p = strchr(t, '.') + 5;
    *p = *p == 'A' ? 'B' : 'A';
    assert_int_equal(auth__jwt_verify(t, strlen(t), k, AUD, NOW, 0, NULL, 0), AUTH_JWT_BAD_SIGNATURE);
    /* structure */
    assert_int_equal(auth__jwt_verify("a.b", 3, k, AUD, NOW, 0, NULL, 0), AUTH_JWT_MALFORMED);
    assert_int_equal(auth__jwt_verify("a.b.c.d", 7, k, AUD, NOW, 0, NULL, 0), AUTH_JWT_MALFORMED);
    assert_int_equal(auth__jwt_verify("..", 2, k, AUD, NOW, 0, NULL, 0), AUTH_JWT_MALFORMED);
    /* alg HS256 with any signature: refused before any key is used */
    char hs[sizeof(VALID) + 64];
    snprintf(hs, sizeof(hs), "%s.%s", "eyJhbGciOiJIUzI1NiIsImtpZCI6InRlc3Qta2lkIn0", strchr(VALID, '.') + 1);
    assert_int_equal(auth__jwt_verify(hs, strlen(hs), k, AUD, NOW, 0, NULL, 0), AUTH_JWT_BAD_ALG);
    auth__jwks_free(k);
}

static void test_jwks_rejects_weak_and_foreign_keys(void **state) {
    (void)state;
    auth_jwks *k;
    errbuf eb = {0};
    const char *j = "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"kid\":\"tiny\"},"
                    "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"},{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}";
    assert_int_equal(auth__jwks_parse(j, strlen(j), &k, &eb), ERR_OK);
    assert_int_equal(auth__jwks_count(k), 0);
    auth__jwks_free(k);
    assert_int_equal(auth__jwks_parse("[]", 2, &k, &eb), ERR_FORMAT);
}

static void test_check_api_keys_mode(void **state) {
    (void)state;
    auth_config cfg = {.mode = AUTH_MODE_API_KEYS, .api_keys = "k-1,k-2", .use_local_cache = 1,
                       .cache_max_entries = 64, .rate_per_minute = 60, .rate_burst = 2};
    auth *a;
    errbuf eb = {0};
    assert_int_equal(auth_create(&cfg, &a, &eb), ERR_OK);
    auth_result r;
    auth_check(a, "Bearer k-1", NULL, &r);
    assert_int_equal(r.outcome, AUTH_OUTCOME_ALLOWED);
    auth_check(a, "Bearer k-3", NULL, &r);
    assert_int_equal(r.outcome, AUTH_OUTCOME_INVALID);
    assert_null(strstr(r.message, "k-3"));
    auth_check(a, NULL, NULL, &r);
    assert_int_equal(r.outcome, AUTH_OUTCOME_MISSING);
    auth_check(a, "Bearer k-1", NULL, &r);
    assert_int_equal(r.outcome, AUTH_OUTCOME_ALLOWED);
    auth_check(a, "Bearer k-1", NULL, &r); /* burst 2 spent */
    assert_int_equal(r.outcome, AUTH_OUTCOME_RATE_LIMITED);
    assert_true(r.retry_after_s >= 1);
    auth_stats st;
    auth_get_stats(a, &st);
    assert_int_equal(st.outcome[AUTH_OUTCOME_ALLOWED], 2);
    assert_int_equal(st.gitlab_calls, 0);
    auth_destroy(a);
    auth_config none = {.mode = AUTH_MODE_API_KEYS, .use_local_cache = 1};
    assert_int_equal(auth_create(&none, &a, &eb), ERR_INVALID);
    auth_config redis = {.mode = AUTH_MODE_GITLAB, .use_local_cache = 0};
    assert_int_equal(auth_create(&redis, &a, &eb), ERR_INVALID); /* Redis without a shared secret */
    assert_non_null(strstr(eb.msg, "SUGGESTD_CACHE_SECRET"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_key),    cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_api_keys),    cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_jwt_vectors), cmocka_unit_test(test_jwks_rejects_weak_and_foreign_keys),
        cmocka_unit_test(test_check_api_keys_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
