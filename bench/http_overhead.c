/* http_overhead.c - what the HTTP layer adds to a completion: response latency minus engine time.
 *
 *   http_overhead URL [clients=16] [requests_per_client=200] [max_tokens=1]
 *
 * Each client is a thread with its own keep-alive connection (libcurl easy handle) that POSTs
 * {"prompt":"def f(x):","max_tokens":N,"temperature":0} to URL/v1/completions back to back. The server reports the
 * engine's share in X-Engine-Time (seconds from submitting to the engine, queue wait included, to the last event),
 * so latency - engine time is everything else: receiving and parsing the request, JSON, tokenizing, waking up,
 * building and sending the response, and the client's own work. Prints p50/p95/p99 of both. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"

typedef struct client {
    const char *url;
    const char *body;
    int n;
    double *overhead, *latency;
    int done, failed;
    double engine;
} client;

static size_t on_header(char *b, size_t size, size_t n, void *ud) {
    client *c = ud;
    size_t len = size * n;
    if (len > 15 && !strncasecmp(b, "X-Engine-Time:", 14)) c->engine = strtod(b + 14, NULL);
    return len;
}

static size_t on_body(char *b, size_t size, size_t n, void *ud) {
    (void)b;
    (void)ud;
    return size * n;
}

static void *run_client(void *arg) {
    client *c = arg;
    CURL *h = curl_easy_init();
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    for (int i = 0; i < c->n; i++) {
        c->engine = -1;
        uint64_t t0 = clock_ns();
        CURLcode rc = curl_easy_perform(h);
        double lat = (double)(clock_ns() - t0) * 1e-9;
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK || status != 200 || c->engine < 0) {
            c->failed++;
            continue;
        }
        c->latency[c->done] = lat;
        c->overhead[c->done] = lat - c->engine;
        c->done++;
    }
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p) {
    if (!n) return 0;
    int i = (int)(p / 100.0 * (n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: http_overhead URL [clients=16] [requests_per_client=200] [max_tokens=1]\n");
        return 2;
    }
    int nc = argc > 2 ? atoi(argv[2]) : 16, per = argc > 3 ? atoi(argv[3]) : 200, mt = argc > 4 ? atoi(argv[4]) : 1;
    if (nc < 1 || per < 1 || mt < 0) return 2;
    char url[1024], body[256];
    snprintf(url, sizeof(url), "%s/v1/completions", argv[1]);
    snprintf(body, sizeof(body), "{\"prompt\":\"def f(x):\",\"max_tokens\":%d,\"temperature\":0}", mt);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    client *cs = calloc((size_t)nc, sizeof(*cs));
    pthread_t *th = calloc((size_t)nc, sizeof(*th));
    for (int i = 0; i < nc; i++) {
        cs[i] = (client){url, body, per, calloc((size_t)per, sizeof(double)), calloc((size_t)per, sizeof(double)),
                         0, 0, 0};
    }
    uint64_t t0 = clock_ns();
    for (int i = 0; i < nc; i++) pthread_create(&th[i], NULL, run_client, &cs[i]);
    for (int i = 0; i < nc; i++) pthread_join(th[i], NULL);
    double wall = (double)(clock_ns() - t0) * 1e-9;
    int total = 0, failed = 0;
    for (int i = 0; i < nc; i++) total += cs[i].done, failed += cs[i].failed;
    double *ov = calloc((size_t)total + 1, sizeof(double)), *lat = calloc((size_t)total + 1, sizeof(double));
    int k = 0;
    for (int i = 0; i < nc; i++)
        for (int j = 0; j < cs[i].done; j++, k++) ov[k] = cs[i].overhead[j], lat[k] = cs[i].latency[j];
    qsort(ov, (size_t)total, sizeof(double), cmp);
    qsort(lat, (size_t)total, sizeof(double), cmp);
    printf("clients %d, requests %d ok / %d failed, %.1f req/s, max_tokens %d\n", nc, total, failed,
           total / wall, mt);
    printf("overhead (latency - X-Engine-Time) ms: p50 %.3f  p95 %.3f  p99 %.3f  max %.3f\n", pct(ov, total, 50) * 1e3,
           pct(ov, total, 95) * 1e3, pct(ov, total, 99) * 1e3, total ? ov[total - 1] * 1e3 : 0);
    printf("latency ms:                          p50 %.3f  p95 %.3f  p99 %.3f  max %.3f\n", pct(lat, total, 50) * 1e3,
           pct(lat, total, 95) * 1e3, pct(lat, total, 99) * 1e3, total ? lat[total - 1] * 1e3 : 0);
    for (int i = 0; i < nc; i++) free(cs[i].overhead), free(cs[i].latency);
    free(cs);
    free(th);
    free(ov);
    free(lat);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
