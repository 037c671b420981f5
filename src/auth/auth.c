/* auth.c - one request's authentication, top to bottom (see auth.h), the decision cache and the single flight.
 *
 * DESIGN: the decision cache stores, under HMAC-SHA256(secret, "decision" 0 token), 1 (allowed), 2 (forbidden)
 * or 3 (invalid token) with the allowed or the denial TTL. UNAVAILABLE is never cached: GitLab being down must not
 * lock a user out for a minute. A store failure is a miss (counted; the store logs it): the request is decided by
 * GitLab as if there were no cache, and nobody is let in by a failing store.
 *
 * Single flight: concurrent misses for one token share one GitLab call. The first becomes the leader, the others
 * wait on its flight's condition variable and take its outcome. Flights live in a short list under one mutex
 * (a handful are in the air at a time); the last one out frees the flight.
 *
 * Rate limits count only requests that were let in, per token (GitLab tokens, API keys) or per OIDC subject,
 * in the store's buckets; with Redis down they fall back to this process's own buckets. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "auth_impl.h"
#include "log.h"

enum { DECISION_ALLOWED = 1, DECISION_FORBIDDEN = 2, DECISION_INVALID = 3 };

typedef struct flight {
    uint8_t key[CACHE_KEY_LEN];
    int refs, done;
    auth_outcome outcome;
    pthread_cond_t cv;
    struct flight *next;
} flight;

struct auth {
    auth_mode mode;
    char *check_url;
    int timeout_ms, allow_ttl_s, deny_ttl_s, rate_per_minute, rate_burst;
    uint8_t secret[64];
    size_t secret_len;
    auth_keys keys;
    cache *store;     /* decisions and, with Redis, rate buckets */
    cache *fallback;  /* rate buckets when the store is Redis and fails; NULL with the local store */
    auth_oidc *oidc;
    pthread_mutex_t flight_mu;
    flight *flights;
    _Atomic uint64_t outcome[AUTH_OUTCOME_COUNT];
    _Atomic uint64_t cache_hits, cache_misses, store_errors, gitlab_calls, gitlab_errors, sf_waits, rate_fallbacks;
    _Atomic uint64_t jwks_fetches;
    _Atomic int64_t store_err_logged_ms;
};

static const char *messages[AUTH_OUTCOME_COUNT] = {
    [AUTH_OUTCOME_ALLOWED] = "ok",
    [AUTH_OUTCOME_MISSING] = "missing or malformed Authorization header (expected: Bearer <token>)",
    [AUTH_OUTCOME_INVALID] = "invalid token",
    [AUTH_OUTCOME_FORBIDDEN] = "this user may not use code suggestions",
    [AUTH_OUTCOME_RATE_LIMITED] = "rate limit exceeded",
    [AUTH_OUTCOME_UNAVAILABLE] = "authentication service unavailable, try again",
};

const char *auth_outcome_name(auth_outcome o) {
    static const char *names[AUTH_OUTCOME_COUNT] = {"allowed", "missing", "invalid", "forbidden", "rate_limited",
                                                    "unavailable"};
    return (unsigned)o < AUTH_OUTCOME_COUNT ? names[o] : "?";
}

const char *auth_store_kind(const auth *a) { return cache_kind(a->store); }

err auth_create(const auth_config *cfg, auth **out, errbuf *eb) {
    *out = NULL;
    auth *a = xcalloc(1, sizeof(*a));
    if (!a) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    pthread_mutex_init(&a->flight_mu, NULL);
    auth__http_global_init();
    a->mode = cfg->mode;
    a->timeout_ms = cfg->gitlab_timeout_ms > 0 ? cfg->gitlab_timeout_ms : 10000;
    a->allow_ttl_s = cfg->allow_ttl_s > 0 ? cfg->allow_ttl_s : 3600;
    a->deny_ttl_s = cfg->deny_ttl_s >= 0 ? cfg->deny_ttl_s : 60;
    a->rate_per_minute = cfg->rate_per_minute > 0 ? cfg->rate_per_minute : 0;
    a->rate_burst = cfg->rate_burst > 0 ? cfg->rate_burst : a->rate_per_minute;
    err rc = ERR_OK;
    if (cfg->mode != AUTH_MODE_GITLAB) {
        rc = auth__keys_load(&a->keys, cfg->api_keys, cfg->api_keys_file, eb);
        if (rc == ERR_OK && !a->keys.n)
            rc = errbuf_set(eb, ERR_INVALID, "API-key authentication needs SUGGESTD_API_KEYS or SUGGESTD_API_KEYS_FILE");
    }
    if (rc == ERR_OK && cfg->mode != AUTH_MODE_API_KEYS) {
        const char *base = cfg->gitlab_api_url ? cfg->gitlab_api_url : "https://gitlab.com/api/v4/";
        size_t n = strlen(base);
        a->check_url = xmalloc(n + 16);
        if (!a->check_url) rc = errbuf_set(eb, ERR_NOMEM, "out of memory");
        else snprintf(a->check_url, n + 16, "%s%sml/ai-assist", base, n && base[n - 1] == '/' ? "" : "/");
        if (rc == ERR_OK)
            rc = auth__oidc_create(cfg->gitlab_url ? cfg->gitlab_url : "https://gitlab.com/",
                                   cfg->oidc_audience ? cfg->oidc_audience : "gitlab-code-suggestions", a->timeout_ms,
                                   cfg->jwks_ttl_s > 0 ? cfg->jwks_ttl_s : 86400, &a->oidc, eb);
    }
    if (rc == ERR_OK) {
        if (cfg->cache_secret && *cfg->cache_secret) {
            /* a longer secret is hashed by HMAC anyway; 64 bytes keep all of its entropy */
            a->secret_len = strlen(cfg->cache_secret) < sizeof(a->secret) ? strlen(cfg->cache_secret) : sizeof(a->secret);
            memcpy(a->secret, cfg->cache_secret, a->secret_len);
        } else if (!cfg->use_local_cache) {
            rc = errbuf_set(eb, ERR_INVALID, "USE_LOCAL_CACHE=false (Redis) needs SUGGESTD_CACHE_SECRET, the same on "
                                             "every replica, so that they share cached decisions");
        } else {
            a->secret_len = 32;
            if (RAND_bytes(a->secret, (int)a->secret_len) != 1) rc = errbuf_set(eb, ERR_IO, "RAND_bytes failed");
        }
    }
    size_t max = cfg->cache_max_entries ? cfg->cache_max_entries : 100000;
    if (rc == ERR_OK) {
        if (cfg->use_local_cache) rc = cache_local_create(max, &a->store, eb);
        else {
            rc = cache_redis_create(&cfg->redis, &a->store, eb);
            if (rc == ERR_OK) rc = cache_local_create(max < 10000 ? max : 10000, &a->fallback, eb);
        }
    }
    if (rc != ERR_OK) {
        auth_destroy(a);
        return rc;
    }
    *out = a;
    return ERR_OK;
}

void auth_destroy(auth *a) {
    if (!a) return;
    cache_destroy(a->store);
    cache_destroy(a->fallback);
    auth__oidc_destroy(a->oidc);
    auth__keys_fini(&a->keys);
    OPENSSL_cleanse(a->secret, sizeof(a->secret));
    xfree(a->check_url);
    pthread_mutex_destroy(&a->flight_mu);
    xfree(a);
    auth__http_global_cleanup();
}

void auth_get_stats(auth *a, auth_stats *st) {
    memset(st, 0, sizeof(*st));
    for (int i = 0; i < AUTH_OUTCOME_COUNT; i++) st->outcome[i] = atomic_load(&a->outcome[i]);
    st->cache_hits = atomic_load(&a->cache_hits);
    st->cache_misses = atomic_load(&a->cache_misses);
    st->store_errors = atomic_load(&a->store_errors);
    st->gitlab_calls = atomic_load(&a->gitlab_calls);
    st->gitlab_errors = atomic_load(&a->gitlab_errors);
    st->single_flight_waits = atomic_load(&a->sf_waits);
    st->jwks_fetches = atomic_load(&a->jwks_fetches);
    st->rate_store_fallbacks = atomic_load(&a->rate_fallbacks);
}

/* Counts a store failure; logs at most one line every 10 s (the store logs reconnects itself). */
static void store_failed(auth *a, const char *what) {
    atomic_fetch_add(&a->store_errors, 1);
    int64_t now = cache_now_ms(), last = atomic_load(&a->store_err_logged_ms);
    if (now - last >= 10000 && atomic_compare_exchange_strong(&a->store_err_logged_ms, &last, now))
        LOG_WARN("auth: %s cache %s failed; deciding without the cache", cache_kind(a->store), what);
}

static auth_outcome outcome_of_decision(int v) {
    return v == DECISION_ALLOWED ? AUTH_OUTCOME_ALLOWED
           : v == DECISION_FORBIDDEN ? AUTH_OUTCOME_FORBIDDEN
                                     : AUTH_OUTCOME_INVALID;
}

/* GitLab's answer for token, with at most one call in the air per key. */
static auth_outcome gitlab_single_flight(auth *a, const uint8_t key[CACHE_KEY_LEN], const char *tok, size_t len) {
    pthread_mutex_lock(&a->flight_mu);
    flight *f = a->flights;
    while (f && memcmp(f->key, key, CACHE_KEY_LEN)) f = f->next;
    if (f) {
        f->refs++;
        atomic_fetch_add(&a->sf_waits, 1);
        while (!f->done) pthread_cond_wait(&f->cv, &a->flight_mu);
        auth_outcome o = f->outcome;
        if (--f->refs == 0) {
            pthread_cond_destroy(&f->cv);
            xfree(f);
        }
        pthread_mutex_unlock(&a->flight_mu);
        return o;
    }
    f = xcalloc(1, sizeof(*f));
    if (f) {
        memcpy(f->key, key, CACHE_KEY_LEN);
        f->refs = 1;
        pthread_cond_init(&f->cv, NULL);
        f->next = a->flights;
        a->flights = f;
    }
    pthread_mutex_unlock(&a->flight_mu);

    atomic_fetch_add(&a->gitlab_calls, 1);
    auth_outcome o = auth__gitlab_check(a->check_url, tok, len, a->timeout_ms);
    if (o == AUTH_OUTCOME_UNAVAILABLE) atomic_fetch_add(&a->gitlab_errors, 1);
    else {
        int v = o == AUTH_OUTCOME_ALLOWED ? DECISION_ALLOWED
                : o == AUTH_OUTCOME_FORBIDDEN ? DECISION_FORBIDDEN
                                              : DECISION_INVALID;
        if (cache_set(a->store, key, v, v == DECISION_ALLOWED ? a->allow_ttl_s : a->deny_ttl_s) != ERR_OK)
            store_failed(a, "write");
    }
    if (!f) return o; /* no memory for a flight: this caller just didn't share */
    pthread_mutex_lock(&a->flight_mu);
    f->outcome = o;
    f->done = 1;
    flight **pp = &a->flights;
    while (*pp != f) pp = &(*pp)->next;
    *pp = f->next;
    pthread_cond_broadcast(&f->cv);
    if (--f->refs == 0) {
        pthread_cond_destroy(&f->cv);
        xfree(f);
    }
    pthread_mutex_unlock(&a->flight_mu);
    return o;
}

static auth_outcome check_gitlab_token(auth *a, const char *tok, size_t len) {
    uint8_t key[CACHE_KEY_LEN];
    auth__hmac_key(a->secret, a->secret_len, "decision", tok, len, key);
    int found = 0, v = 0;
    if (cache_get(a->store, key, &found, &v) != ERR_OK) store_failed(a, "read");
    else if (found && v >= DECISION_ALLOWED && v <= DECISION_INVALID) {
        atomic_fetch_add(&a->cache_hits, 1);
        return outcome_of_decision(v);
    }
    atomic_fetch_add(&a->cache_misses, 1);
    return gitlab_single_flight(a, key, tok, len);
}

static auth_outcome rate_limit(auth *a, const char *domain, const char *id, size_t len, int *retry_after_s) {
    if (!a->rate_per_minute) return AUTH_OUTCOME_ALLOWED;
    uint8_t key[CACHE_KEY_LEN];
    auth__hmac_key(a->secret, a->secret_len, domain, id, len, key);
    int allowed = 1;
    int64_t retry_ms = 0;
    if (cache_rate_take(a->store, key, a->rate_per_minute, a->rate_burst, &allowed, &retry_ms) != ERR_OK) {
        store_failed(a, "rate limit");
        atomic_fetch_add(&a->rate_fallbacks, 1);
        if (!a->fallback || cache_rate_take(a->fallback, key, a->rate_per_minute, a->rate_burst, &allowed,
                                            &retry_ms) != ERR_OK)
            allowed = 1;
    }
    if (allowed) return AUTH_OUTCOME_ALLOWED;
    *retry_after_s = (int)((retry_ms + 999) / 1000);
    if (*retry_after_s < 1) *retry_after_s = 1;
    return AUTH_OUTCOME_RATE_LIMITED;
}

void auth_check(auth *a, const char *authorization, const char *auth_type, auth_result *res) {
    memset(res, 0, sizeof(*res));
    const char *tok;
    size_t len;
    auth_outcome o;
    const char *rl_domain = "rate";
    char sub[256];
    const char *rl_id = NULL;
    size_t rl_len = 0;
    if (!auth__parse_bearer(authorization, &tok, &len)) o = AUTH_OUTCOME_MISSING;
    else if (a->mode != AUTH_MODE_GITLAB && auth__keys_match(&a->keys, tok, len)) o = AUTH_OUTCOME_ALLOWED;
    else if (a->mode == AUTH_MODE_API_KEYS) o = AUTH_OUTCOME_INVALID;
    else if (auth_type && !strcasecmp(auth_type, "oidc")) {
        uint64_t fetches = 0;
        o = auth__oidc_check(a->oidc, tok, len, sub, sizeof(sub), &fetches);
        atomic_fetch_add(&a->jwks_fetches, fetches);
        if (o == AUTH_OUTCOME_ALLOWED && sub[0]) rl_domain = "rate-sub", rl_id = sub, rl_len = strlen(sub);
    } else o = check_gitlab_token(a, tok, len);
    if (o == AUTH_OUTCOME_ALLOWED) {
        if (!rl_id) rl_id = tok, rl_len = len;
        o = rate_limit(a, rl_domain, rl_id, rl_len, &res->retry_after_s);
    }
    if (o == AUTH_OUTCOME_UNAVAILABLE) res->retry_after_s = 5;
    res->outcome = o;
    res->message = messages[o];
    atomic_fetch_add(&a->outcome[o], 1);
}
