/* auth_gitlab.c - the HTTP client (libcurl) and GitLab's token check, GET {GITLAB_API_URL}ml/ai-assist.
 *
 * One easy handle per call: a check happens once per token per cache TTL, so connection reuse buys little, and a
 * handle of our own per call needs no locking. CURLOPT_NOSIGNAL because we run on many threads; the timeout covers
 * the whole exchange (connect, TLS, answer). The bearer goes out only in the Authorization header, which we build
 * from a token auth__parse_bearer already limited to visible ASCII, so it cannot smuggle a second header. */
#include <curl/curl.h>
#include <jansson.h>
#include <string.h>

#include "alloc.h"
#include "auth_impl.h"

#define MAX_BODY (1 << 20)

/* Collects the answer; the cap (MAX_BODY) aborts the transfer of an oversized one. */
static size_t on_data(char *data, size_t size, size_t nmemb, void *ud) {
    return xbuf_append(ud, data, size * nmemb) == 0 ? size * nmemb : 0;
}

void auth__http_global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void auth__http_global_cleanup(void) { curl_global_cleanup(); }

err auth__http_get(const char *url, const char *bearer, size_t bearer_len, int timeout_ms, long *status, char **body,
                   size_t *len) {
    *status = 0;
    *body = NULL;
    *len = 0;
    CURL *c = curl_easy_init();
    if (!c) return ERR_NOMEM;
    xbuf b = {.max = MAX_BODY};
    struct curl_slist *hdrs = NULL;
    char auth_hdr[32 + AUTH_MAX_TOKEN];
    if (bearer) {
        if (bearer_len > AUTH_MAX_TOKEN) bearer_len = AUTH_MAX_TOKEN;
        snprintf(auth_hdr, sizeof(auth_hdr), "Authorization: Bearer %.*s", (int)bearer_len, bearer);
        hdrs = curl_slist_append(hdrs, auth_hdr);
    }
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L); /* never carry the bearer to another host */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "suggestd-auth");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode cr = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    memset(auth_hdr, 0, sizeof(auth_hdr));
    if (cr != CURLE_OK) {
        xfree(b.p);
        return cr == CURLE_OPERATION_TIMEDOUT ? ERR_TIMEOUT : ERR_UPSTREAM;
    }
    *body = b.p;
    *len = b.len;
    return ERR_OK;
}

auth_outcome auth__gitlab_check(const char *check_url, const char *token, size_t len, int timeout_ms) {
    long status;
    char *body;
    size_t blen;
    err rc = auth__http_get(check_url, token, len, timeout_ms, &status, &body, &blen);
    if (rc != ERR_OK) return AUTH_OUTCOME_UNAVAILABLE;
    auth_outcome out;
    if (status == 200) {
        json_t *j = body ? json_loadb(body, blen, 0, NULL) : NULL;
        if (!json_is_object(j)) out = AUTH_OUTCOME_UNAVAILABLE; /* garbled: GitLab (or a proxy) is broken */
        else out = json_is_true(json_object_get(j, "user_is_allowed")) ? AUTH_OUTCOME_ALLOWED : AUTH_OUTCOME_FORBIDDEN;
        json_decref(j);
    } else if (status == 403 || status == 404) out = AUTH_OUTCOME_FORBIDDEN; /* valid token, no feature/access */
    else if (status >= 400 && status < 500 && status != 408 && status != 429) out = AUTH_OUTCOME_INVALID;
    else out = AUTH_OUTCOME_UNAVAILABLE;
    xfree(body);
    return out;
}
