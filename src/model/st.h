/* st.h - safetensors reader: one file, mmapped, tensors used in place (zero copy).
 *
 * st_open validates everything before returning: header length against the file and a 100 MB cap, the header is a
 * JSON object, every entry has a known dtype, a shape whose element count times the dtype size equals its byte
 * range, offsets inside the data buffer, no two tensors overlapping, no duplicate names, and the data buffer fully
 * covered. Errors name the file and the tensor. */
#ifndef SUGGESTD_MODEL_ST_H
#define SUGGESTD_MODEL_ST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64,
    ST_DTYPE_COUNT
} st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    const char *name;      /* owned by the st_file */
    st_dtype dtype;
    int32_t n_dims;
    int64_t shape[ST_MAX_DIMS];
    const void *data;      /* inside the mapping; valid until st_close. 8-aligned when the writer padded the
                              header as the reference writer (and st_write) do; other files may be unaligned */
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

const char *st_dtype_name(st_dtype t);   /* "F16" ... */
size_t st_dtype_size(st_dtype t);

err st_open(const char *path, st_file **out, errbuf *eb);
/* Parses a safetensors image already in memory (used by st_open and by the fuzzer). buf must outlive the result. */
err st_parse(const void *buf, size_t len, const char *name_for_errors, st_file **out, errbuf *eb);
void st_close(st_file *f);
/* The path given to st_open (or the name given to st_parse), for messages; owned by f. */
const char *st_name(const st_file *f);
/* Tensors in data-offset (file) order; st_at returns NULL past the end. st_find is a binary search by name. */
size_t st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, size_t i);
const st_tensor *st_find(const st_file *f, const char *name);

/* Writes a safetensors file (8-byte aligned header, tensors in the given order). Used by tests and tools. */
err st_write(const char *path, const st_tensor *tensors, size_t n, errbuf *eb);

#endif
