/* fuzz_jwt.c - libFuzzer: JWKS documents and JWTs are attacker-controlled input of the OIDC mode. The first byte
 * picks the parser: JWKS parsing, or verifying the rest as a JWT against a fixed key set. Neither may crash, leak
 * or read out of bounds; a random token must never verify. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth_impl.h"
#pragma GCC diagnostic ignored "-Wunused-const-variable"
#include "../unit/auth/jwt_vectors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static auth_jwks *keys;
    if (!keys && auth__jwks_parse(JWKS, sizeof(JWKS) - 1, &keys, NULL) != ERR_OK) abort();
    if (size == 0) return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        auth_jwks *k = NULL;
        if (auth__jwks_parse(s, n, &k, NULL) == ERR_OK) auth__jwks_free(k);
    } else {
        char sub[64];
        /* a forged token cannot verify: anything OK must be one of the fixed valid vectors */
        if (auth__jwt_verify(s, n, keys, "gitlab-code-suggestions", 1700000100, 30, sub, sizeof(sub)) == AUTH_JWT_OK &&
            !(n == sizeof(VALID) - 1 && !memcmp(s, VALID, n)) && !(n == sizeof(AUD_ARRAY) - 1 && !memcmp(s, AUD_ARRAY, n)))
            abort();
    }
    return 0;
}
