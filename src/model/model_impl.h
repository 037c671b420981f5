/* model_impl.h - internals shared by st.c, config.c and model.c (not part of the public API). */
#ifndef SUGGESTD_MODEL_MODEL_IMPL_H
#define SUGGESTD_MODEL_MODEL_IMPL_H

#include <stddef.h>

#include "err.h"
#include "model.h"

/* Routes jansson's allocations through xmalloc/xfree (once per process, so fault injection covers JSON parsing)
 * and clears this thread's out-of-memory flag. Call before every jansson call whose failure must be told apart
 * from a syntax error; then model__json_oom() says whether an allocation failed since. */
void model__json_begin(void);
int model__json_oom(void);

/* model_config_parse with the file name used in messages ("<dir>/config.json" from model_open). */
err model__config_parse_named(const char *json, size_t len, const char *name, model_config *cfg, errbuf *eb);

#endif
