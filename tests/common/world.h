/* world.h - the setup the generation and scheduler suites share: a tiny random checkpoint written to a temp dir
 * and opened, the real CodeGen tokenizer (models/codegen-tokenizer), a cpu backend and the model placed on it. */
#ifndef SUGGESTD_TESTS_WORLD_H
#define SUGGESTD_TESTS_WORLD_H

#include "forward.h"
#include "testutil.h"
#include "tok.h"

typedef struct tu_world {
    char *dir;
    model *m;
    tok *tk;
    eng_backend *be;
    eng_model *em;
} tu_world;

/* Builds w from spec on a cpu backend of n_threads, the model placed with mo (NULL: defaults). Non-zero on failure,
 * with the reason on stderr; tu_world_close frees whatever was built either way. */
int tu_world_open(tu_world *w, const tu_ckpt_spec *spec, int n_threads, const eng_model_opts *mo);
void tu_world_close(tu_world *w);

#endif
