/* model_load.c - how long opening a checkpoint takes, per format: model_open (parse + validate; safetensors or
 * pytorch_model.bin, mmapped in place) and placing it on the cpu backend (which borrows the mapped weights), for
 * each model directory given, so a .bin and its safetensors twin are compared in one run.
 *
 *   model_load DIR [DIR...] [--repeats N=10]
 *
 * Warm page cache (the first open is untimed): this measures our parsing, validation and copying, not the disk.
 * Prints the median and one RESULT line per directory, and the ratio of each to the first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "forward.h"
#include "model.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One open + place + free; returns ms, or -1 with the message printed. */
static double once(const char *dir, eng_backend *be, double *open_ms) {
    model *m = NULL;
    eng_model *em = NULL;
    errbuf eb = {0};
    uint64_t t0 = clock_ns();
    if (model_open(dir, &m, &eb) != ERR_OK) {
        fprintf(stderr, "model_load: %s\n", eb.msg);
        return -1;
    }
    uint64_t t1 = clock_ns();
    eng_model_opts mo = {.max_rows = 64, .kv_dtype = -1};
    if (eng_model_create(be, m, &mo, &em, &eb) != ERR_OK) {
        fprintf(stderr, "model_load: %s\n", eb.msg);
        model_close(m);
        return -1;
    }
    uint64_t t2 = clock_ns();
    eng_model_destroy(em);
    model_close(m);
    *open_ms = (double)(t1 - t0) * 1e-6;
    return (double)(t2 - t0) * 1e-6;
}

int main(int argc, char **argv) {
    int repeats = 10, n_dirs = 0;
    const char *dirs[16];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--repeats") && i + 1 < argc) {
            repeats = atoi(argv[++i]);
            if (repeats < 1 || repeats > 1000) return fprintf(stderr, "model_load: --repeats 1..1000\n"), 2;
        } else if (argv[i][0] == '-' || n_dirs == 16) {
            return fprintf(stderr, "usage: model_load DIR [DIR...] (at most 16) [--repeats N]\n"), 2;
        } else {
            dirs[n_dirs++] = argv[i];
        }
    }
    if (!n_dirs) return fprintf(stderr, "usage: model_load DIR [DIR...] [--repeats N]\n"), 2;
    eng_backend *be = NULL;
    errbuf eb = {0};
    if (eng_backend_create("cpu", 1, &be, &eb) != ERR_OK) return fprintf(stderr, "model_load: %s\n", eb.msg), 1;
    double first = 0;
    for (int d = 0; d < n_dirs; d++) {
        double *t = malloc((size_t)repeats * sizeof(double)), *o = malloc((size_t)repeats * sizeof(double)), x;
        if (!t || !o || once(dirs[d], be, &x) < 0) return 1; /* warm-up: page cache */
        for (int r = 0; r < repeats; r++)
            if ((t[r] = once(dirs[d], be, &o[r])) < 0) return 1;
        qsort(t, (size_t)repeats, sizeof(double), cmp_double);
        qsort(o, (size_t)repeats, sizeof(double), cmp_double);
        double med = t[repeats / 2];
        if (d == 0) first = med;
        printf("%-40s open %8.2f ms, open + place %8.2f ms (median of %d)  x%.2f of the first\n", dirs[d],
               o[repeats / 2], med, repeats, med / first);
        printf("RESULT load_ms_%d=%.3f\n", d, med);
        free(t);
        free(o);
    }
    eng_backend_destroy(be);
    return 0;
}
