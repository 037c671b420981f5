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


/* ---- pytorch_model.bin internals (ptzip.c, ptpickle.c) ---- */
#include <stdint.h>

#include "st.h"

/* One central-directory entry; name points into the image (not NUL-terminated). */
typedef struct pt__zentry {
    const char *name;
    size_t name_len;
    uint16_t method, flags;
    uint64_t data_off, csize, usize; /* data_off: absolute offset of the entry's bytes in the image */
} pt__zentry;

typedef struct pt__zip {
    pt__zentry *e; /* [n], sorted by name */
    size_t n;
} pt__zip;

/* Reads the central directory of a zip image (ZIP64 too), locating each entry's data through its local header; every
 * offset and length is checked against the image. Errors name `file`. */
err pt__zip_open(const unsigned char *buf, size_t len, const char *file, pt__zip *z, errbuf *eb);
void pt__zip_fini(pt__zip *z);
const pt__zentry *pt__zip_find(const pt__zip *z, const char *name, size_t name_len);

/* One tensor the pickle describes. name and key point into the pickle bytes (not NUL-terminated). */
typedef struct pt__rec {
    const char *name, *key;
    size_t name_len, key_len;
    st_dtype dtype;       /* from the storage class */
    int32_t n_dims;
    int64_t shape[ST_MAX_DIMS], stride[ST_MAX_DIMS];
    int64_t storage_offset, storage_numel; /* in elements */
} pt__rec;

/* Runs the restricted pickle VM over a torch state-dict pickle; on success *recs (xfree) holds *n tensors. Errors
 * name `file` and the opcode offset. */
err pt__pickle_load(const unsigned char *p, size_t len, const char *file, pt__rec **recs, size_t *n, errbuf *eb);

#endif
