/* auth_overhead.c - what authentication adds to a request when the decision is cached: auth_check on a token
 * whose answer is in the local LRU or in Redis on loopback, timed call by call (p50/p99/max).
 *
 * A tiny stand-in GitLab (a thread answering {"user_is_allowed":true} on a loopback socket) answers the one
 * warm-up call per token; every timed call is a cache hit (the bench checks that GitLab saw no more calls).
 *
 * usage: auth_overhead [N] [REDIS_PORT] [THREADS]
 *   N          timed calls per thread (default 200000 local, N/10 Redis)
 *   REDIS_PORT also measure the Redis store against redis-server on 127.0.0.1:REDIS_PORT
 *   THREADS    concurrent callers (default 1) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"

static atomic_int gitlab_calls;

static void *fake_gitlab(void *arg) {
    int ls = *(int *)arg;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 24\r\n"
                               "Connection: close\r\n\r\n{\"user_is_allowed\":true}";
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) return NULL;
        char buf[8192];
        size_t n = 0;
        while (n < sizeof(buf) - 1) {
            ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);
            if (r <= 0) break;
            n += (size_t)r;
            buf[n] = 0;
            if (strstr(buf, "\r\n\r\n")) break;
        }
        atomic_fetch_add(&gitlab_calls, 1);
        ssize_t w = write(c, resp, sizeof(resp) - 1);
        (void)w;
        close(c);
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct run {
    auth *a;
    int n, id;
    uint64_t *lat;
    int not_allowed;
} run;

static void *caller(void *arg) {
    run *r = arg;
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Bearer bench-token-%d", r->id);
    for (int i = 0; i < r->n; i++) {
        auth_result res;
        uint64_t t0 = clock_ns();
        auth_check(r->a, hdr, NULL, &res);
        r->lat[i] = clock_ns() - t0;
        r->not_allowed += res.outcome != AUTH_OUTCOME_ALLOWED;
    }
    return NULL;
}

static void measure(const char *name, auth *a, int n, int threads) {
    run *rs = calloc((size_t)threads, sizeof(run));
    pthread_t *ts = calloc((size_t)threads, sizeof(pthread_t));
    uint64_t *all = malloc((size_t)n * (size_t)threads * sizeof(uint64_t));
    for (int t = 0; t < threads; t++) { /* warm: one GitLab call per token, then only hits */
        char hdr[64];
        snprintf(hdr, sizeof(hdr), "Bearer bench-token-%d", t);
        auth_result res;
        auth_check(a, hdr, NULL, &res);
    }
    int calls0 = atomic_load(&gitlab_calls);
    uint64_t t0 = clock_ns();
    for (int t = 0; t < threads; t++) {
        rs[t] = (run){a, n, t, all + (size_t)t * (size_t)n, 0};
        pthread_create(&ts[t], NULL, caller, &rs[t]);
    }
    int bad = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(ts[t], NULL);
        bad += rs[t].not_allowed;
    }
    double wall = (double)(clock_ns() - t0) * 1e-9;
    size_t total = (size_t)n * (size_t)threads;
    qsort(all, total, sizeof(uint64_t), cmp_u64);
    printf("%-28s threads %d  calls %zu  %.0f/s  p50 %.4f ms  p99 %.4f ms  p99.9 %.4f ms  max %.3f ms  "
           "(GitLab calls during run: %d, not allowed: %d)\n",
           name, threads, total, (double)total / wall, (double)all[total / 2] * 1e-6,
           (double)all[total * 99 / 100] * 1e-6, (double)all[total * 999 / 1000] * 1e-6,
           (double)all[total - 1] * 1e-6, atomic_load(&gitlab_calls) - calls0, bad);
    free(all);
    free(ts);
    free(rs);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200000;
    int redis_port = argc > 2 ? atoi(argv[2]) : 0;
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 64) || getsockname(ls, (struct sockaddr *)&sa, &sl)) {
        perror("fake gitlab");
        return 1;
    }
    pthread_t gt;
    pthread_create(&gt, NULL, fake_gitlab, &ls);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v4/", ntohs(sa.sin_port));

    auth_config cfg = {.mode = AUTH_MODE_GITLAB, .gitlab_api_url = url, .gitlab_url = url, .use_local_cache = 1,
                       .cache_max_entries = 100000};
    auth *a;
    errbuf eb = {0};
    if (auth_create(&cfg, &a, &eb) != ERR_OK) {
        fprintf(stderr, "auth_create: %s\n", eb.msg);
        return 1;
    }
    measure("local cache hit", a, n, threads);
    auth_destroy(a);
    cfg.rate_per_minute = 1000000000;
    if (auth_create(&cfg, &a, &eb) != ERR_OK) return 1;
    measure("local hit + rate limit", a, n, threads);
    auth_destroy(a);
    if (redis_port) {
        char rurl[64];
        snprintf(rurl, sizeof(rurl), "redis://127.0.0.1:%d/0", redis_port);
        auth_config rc = {.mode = AUTH_MODE_GITLAB, .gitlab_api_url = url, .gitlab_url = url, .use_local_cache = 0,
                          .cache_secret = "bench-secret", .redis = {.url = rurl, .timeout_ms = 200, .pool_size = 8}};
        if (auth_create(&rc, &a, &eb) != ERR_OK) {
            fprintf(stderr, "auth_create (redis): %s\n", eb.msg);
            return 1;
        }
        measure("redis cache hit", a, n / 10, threads);
        auth_destroy(a);
        rc.rate_per_minute = 1000000000;
        if (auth_create(&rc, &a, &eb) != ERR_OK) return 1;
        measure("redis hit + rate limit", a, n / 10, threads);
        auth_destroy(a);
    }
    return 0;
}
