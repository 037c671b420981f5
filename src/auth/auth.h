/* auth.h - who may use the completion routes: GitLab tokens, GitLab OIDC JWTs, API keys; a decision cache; rate
 * limits. No HTTP or JSON types: the server passes two header values in and maps the outcome to a status.
 *
 * One request, top to bottom (auth_check):
 *   1. parse `Authorization: Bearer <token>`                                  missing/malformed -> MISSING (401)
 *   2. API keys (when configured): constant-time compare                      match -> 5.
 *   3. `X-Gitlab-Authentication-Type: oidc`: verify the RS256 JWT against the cached JWKS; else GitLab token:
 *      decision cache (key = HMAC-SHA256(secret, token)) -> on a miss one GitLab call per token at a time
 *      (single flight) -> cache the answer (allowed 3600 s, denied 60 s)   invalid -> INVALID (401),
 *      not allowed -> FORBIDDEN (403), GitLab down/slow/garbled -> UNAVAILABLE (503, not cached)
 *   4. a store failure (Redis down) is a cache miss, counted; it never lets anyone in
 *   5. rate limit (token bucket per token or OIDC subject)                   empty -> RATE_LIMITED (429)
 *
 * Tokens never leave this module: not in logs, messages, metrics or errors; only their HMAC reaches the store.
 * An auth is thread-safe after auth_create; auth_check may block for up to the GitLab timeout. */
#ifndef SUGGESTD_AUTH_AUTH_H
#define SUGGESTD_AUTH_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "err.h"

typedef struct auth auth;

typedef enum auth_mode {
    AUTH_MODE_GITLAB,          /* GitLab tokens (and OIDC with the header) */
    AUTH_MODE_API_KEYS,        /* API keys only; nothing is sent to GitLab */
    AUTH_MODE_GITLAB_API_KEYS, /* an API key, else GitLab */
} auth_mode;

typedef enum auth_outcome {
    AUTH_OUTCOME_ALLOWED,
    AUTH_OUTCOME_MISSING,      /* no or malformed Authorization header */
    AUTH_OUTCOME_INVALID,      /* a token GitLab/the JWKS/the key list does not accept */
    AUTH_OUTCOME_FORBIDDEN,    /* a valid token whose user may not use code suggestions */
    AUTH_OUTCOME_RATE_LIMITED,
    AUTH_OUTCOME_UNAVAILABLE,  /* GitLab or its JWKS could not answer; nothing cached */
    AUTH_OUTCOME_COUNT
} auth_outcome;

typedef struct auth_result {
    auth_outcome outcome;
    int retry_after_s;   /* RATE_LIMITED, UNAVAILABLE */
    const char *message; /* static text for the error body; never contains the token */
} auth_result;

typedef struct auth_config {
    auth_mode mode;
    const char *gitlab_api_url;  /* "https://gitlab.com/api/v4/"; a missing final '/' is added */
    const char *gitlab_url;      /* "https://gitlab.com/" (OIDC discovery) */
    int gitlab_timeout_ms;       /* default 10000 */
    const char *oidc_audience;   /* default "gitlab-code-suggestions" */
    int jwks_ttl_s;              /* default 86400 */
    const char *api_keys;        /* comma-separated; may be NULL */
    const char *api_keys_file;   /* one key a line, '#' comments; may be NULL */
    const char *cache_secret;    /* HMAC secret; required with Redis; NULL = random per process (local) */
    int use_local_cache;         /* 1 = in-process LRU, 0 = Redis */
    size_t cache_max_entries;    /* local LRU bound; default 100000 */
    int allow_ttl_s, deny_ttl_s; /* defaults 3600, 60 */
    cache_redis_config redis;
    int rate_per_minute;         /* 0 = no rate limit */
    int rate_burst;              /* 0 = rate_per_minute */
} auth_config;

/* Reads the key list, creates the cache store. ERR_INVALID (text in eb) for: no API keys in api-keys mode, an
 * unreadable key file, Redis without a cache secret, a bad Redis URL. */
err auth_create(const auth_config *cfg, auth **out, errbuf *eb);
void auth_destroy(auth *a);

/* Decides one request. authorization and auth_type are the raw header values (NULL when absent). */
void auth_check(auth *a, const char *authorization, const char *auth_type, auth_result *res);

/* Counters for /metrics (no labels carry tokens). */
typedef struct auth_stats {
    uint64_t outcome[AUTH_OUTCOME_COUNT];
    uint64_t cache_hits, cache_misses, store_errors;
    uint64_t gitlab_calls, gitlab_errors, single_flight_waits;
    uint64_t jwks_fetches, rate_store_fallbacks;
} auth_stats;
void auth_get_stats(auth *a, auth_stats *st);
const char *auth_outcome_name(auth_outcome o);
const char *auth_store_kind(const auth *a);

#endif
