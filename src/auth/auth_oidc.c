/* auth_oidc.c - GitLab's OIDC signing keys: discovery document -> jwks_uri -> JWKS, cached for ttl_s.
 *
 * DESIGN: one mutex guards the key set and is held across a fetch, so concurrent requests that find the cache
 * stale make one fetch (the others wait for it) — the single flight of the key cache. A token whose kid is unknown
 * forces a refetch (GitLab rotated its keys), but at most once a second, so a client inventing kids cannot turn
 * us into a load generator against GitLab. A failed fetch keeps the old keys. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "auth_impl.h"
#include "log.h"

#define REFRESH_MIN_MS 1000
#define LEEWAY_S 30

struct auth_oidc {
    char *discovery_url, *audience;
    int timeout_ms, ttl_s;
    pthread_mutex_t mu;
    auth_jwks *keys;
    int64_t fetched_ms, tried_ms; /* last success, last attempt (monotonic ms; 0 = never) */
};

static int64_t mono_ms(void) { return cache_now_ms(); }

err auth__oidc_create(const char *gitlab_url, const char *audience, int timeout_ms, int ttl_s, auth_oidc **out,
                      errbuf *eb) {
    *out = NULL;
    auth_oidc *o = xcalloc(1, sizeof(*o));
    if (!o) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    size_t n = strlen(gitlab_url);
    while (n && gitlab_url[n - 1] == '/') n--;
    o->discovery_url = xmalloc(n + 64);
    o->audience = xstrdup(audience);
    if (!o->discovery_url || !o->audience) {
        auth__oidc_destroy(o);
        return errbuf_set(eb, ERR_NOMEM, "out of memory");
    }
    snprintf(o->discovery_url, n + 64, "%.*s/.well-known/openid-configuration", (int)n, gitlab_url);
    o->timeout_ms = timeout_ms;
    o->ttl_s = ttl_s;
    pthread_mutex_init(&o->mu, NULL);
    *out = o;
    return ERR_OK;
}

void auth__oidc_destroy(auth_oidc *o) {
    if (!o) return;
    if (o->discovery_url && o->audience) pthread_mutex_destroy(&o->mu);
    auth__jwks_free(o->keys);
    xfree(o->discovery_url);
    xfree(o->audience);
    xfree(o);
}

/* Fetches discovery + JWKS; replaces the key set on success. Called with o->mu held. */
static int refresh(auth_oidc *o, uint64_t *fetches) {
    o->tried_ms = mono_ms();
    if (fetches) (*fetches)++;
    long status;
    char *body;
    size_t len;
    err rc = auth__http_get(o->discovery_url, NULL, 0, o->timeout_ms, &status, &body, &len);
    if (rc != ERR_OK || status != 200) {
        LOG_WARN("oidc: discovery %s: %s", o->discovery_url, rc != ERR_OK ? err_name(rc) : "HTTP error");
        xfree(body);
        return 0;
    }
    json_t *j = json_loadb(body, len, 0, NULL);
    xfree(body);
    const char *uri = json_string_value(json_object_get(j, "jwks_uri"));
    if (!uri || (strncmp(uri, "https://", 8) && strncmp(uri, "http://", 7))) {
        LOG_WARN("oidc: discovery document without a jwks_uri");
        json_decref(j);
        return 0;
    }
    rc = auth__http_get(uri, NULL, 0, o->timeout_ms, &status, &body, &len);
    json_decref(j); /* uri lives in j */
    if (rc != ERR_OK || status != 200) {
        LOG_WARN("oidc: JWKS fetch failed: %s", rc != ERR_OK ? err_name(rc) : "HTTP error");
        xfree(body);
        return 0;
    }
    auth_jwks *k;
    errbuf eb = {0};
    rc = auth__jwks_parse(body, len, &k, &eb);
    xfree(body);
    if (rc != ERR_OK) {
        LOG_WARN("oidc: %s", eb.msg);
        return 0;
    }
    auth__jwks_free(o->keys);
    o->keys = k;
    o->fetched_ms = mono_ms();
    LOG_INFO("oidc: %zu signing keys loaded", auth__jwks_count(k));
    return 1;
}

auth_outcome auth__oidc_check(auth_oidc *o, const char *jwt, size_t len, char *sub, size_t sub_cap,
                              uint64_t *fetches) {
    pthread_mutex_lock(&o->mu);
    int64_t now = mono_ms();
    if (!o->keys || now - o->fetched_ms > (int64_t)o->ttl_s * 1000) {
        if (!o->keys && o->tried_ms && now - o->tried_ms < REFRESH_MIN_MS) {
            pthread_mutex_unlock(&o->mu); /* GitLab just failed us: don't hammer it */
            return AUTH_OUTCOME_UNAVAILABLE;
        }
        refresh(o, fetches);
    }
    if (!o->keys) {
        pthread_mutex_unlock(&o->mu);
        return AUTH_OUTCOME_UNAVAILABLE;
    }
    auth_jwt_status st = auth__jwt_verify(jwt, len, o->keys, o->audience, (int64_t)time(NULL), LEEWAY_S, sub, sub_cap);
    if (st == AUTH_JWT_UNKNOWN_KID && mono_ms() - o->tried_ms >= REFRESH_MIN_MS && refresh(o, fetches))
        st = auth__jwt_verify(jwt, len, o->keys, o->audience, (int64_t)time(NULL), LEEWAY_S, sub, sub_cap);
    pthread_mutex_unlock(&o->mu);
    if (st != AUTH_JWT_OK) LOG_DEBUG("oidc: token refused (%s)", auth__jwt_status_name(st));
    return st == AUTH_JWT_OK ? AUTH_OUTCOME_ALLOWED : AUTH_OUTCOME_INVALID;
}
