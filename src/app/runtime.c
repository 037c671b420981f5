/* runtime.c - helpers the model-running subcommands share: open + place a model, parse numeric options. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

int cli_runtime_open(cli_runtime *rt, const char *model_dir, const char *backend, int threads,
                     const eng_model_opts *opts) {
    memset(rt, 0, sizeof(*rt));
    errbuf eb = {0};
    if (model_open(model_dir, &rt->m, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd: %s\n", eb.msg);
        return 1;
    }
    if (eng_backend_create(backend, threads, &rt->be, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd: %s\n", eb.msg);
        cli_runtime_close(rt);
        return 1;
    }
    if (eng_model_create(rt->be, rt->m, opts, &rt->em, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd: %s\n", eb.msg);
        cli_runtime_close(rt);
        return 1;
    }
    size_t w, kv, ws;
    eng_model_memory(rt->em, &w, &kv, &ws);
    if (eng_backend_copies_weights(rt->be)) /* device memory: worth a line at startup */
        LOG_INFO("model %s on %s: weights %.1f MB, KV cache %.1f MB, workspace %.1f MB", model_dir,
                 eng_backend_describe(rt->be), (double)w / 1e6, (double)kv / 1e6, (double)ws / 1e6);
    else
        LOG_DEBUG("model %s: %s, weights %.1f MB mapped + %.1f MB repacked, KV %.1f MB, workspace %.1f MB", model_dir,
              eng_backend_describe(rt->be), (double)model_weight_bytes(rt->m) / 1e6, (double)w / 1e6,
              (double)kv / 1e6, (double)ws / 1e6);
    return 0;
}

void cli_runtime_close(cli_runtime *rt) {
    eng_model_destroy(rt->em);
    eng_backend_destroy(rt->be);
    model_close(rt->m);
    memset(rt, 0, sizeof(*rt));
}

int cli_parse_int(const char *cmd, const char *name, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "suggestd %s: --%s expects an integer from %ld to %ld, got '%s'\n", cmd, name, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_parse_float(const char *cmd, const char *name, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "suggestd %s: --%s expects a number from %g to %g, got '%s'\n", cmd, name, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}
