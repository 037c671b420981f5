/* world.c - see world.h. */
#include "world.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"

int tu_world_open(tu_world *w, const tu_ckpt_spec *spec, int n_threads, const eng_model_opts *mo) {
    memset(w, 0, sizeof(*w));
    errbuf eb = {0};
    w->dir = tu_mkdtemp();
    char *tdir = tu_source_path("models/codegen-tokenizer");
    int bad = tu_write_checkpoint(w->dir, spec, &eb) || model_open(w->dir, &w->m, &eb) ||
              tok_load(tdir, &w->tk, &eb) || eng_backend_create("cpu", n_threads, &w->be, &eb) ||
              eng_model_create(w->be, w->m, mo, &w->em, &eb);
    if (bad) fprintf(stderr, "setup: %s\n", eb.msg);
    xfree(tdir);
    return bad;
}

void tu_world_close(tu_world *w) {
    eng_model_destroy(w->em);
    if (w->be) eng_backend_destroy(w->be);
    if (w->tk) tok_destroy(w->tk);
    if (w->m) model_close(w->m);
    if (w->dir) tu_rmtree_free(w->dir);
    memset(w, 0, sizeof(*w));
}
