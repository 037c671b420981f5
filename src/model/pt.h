/* pt.h - pytorch_model.bin reader: torch's zip container (ZIP64 too) and a restricted pickle, tensors used in place.
 *
 * pt_open maps the file, reads the zip's central directory, runs `<top>/data.pkl` through a pickle VM that knows only
 * the opcodes and the globals a torch state dict needs (collections.OrderedDict, torch._utils._rebuild_tensor_v2 and
 * the torch.*Storage classes; anything else, e.g. posix.system, is refused before it is acted on), and points each
 * tensor at its bytes inside the stored (uncompressed) entry `<top>/data/<key>`. Tensors come back as st_tensors, so
 * model.c binds them exactly as it binds safetensors. Every offset is checked; errors name the file and the tensor,
 * the zip entry, or the pickle opcode offset. A pt_file is read-only after open. */
#ifndef SUGGESTD_MODEL_PT_H
#define SUGGESTD_MODEL_PT_H

#include <stddef.h>

#include "err.h"
#include "st.h"

typedef struct pt_file pt_file;

err pt_open(const char *path, pt_file **out, errbuf *eb);
/* Parses a pytorch_model.bin image already in memory (used by pt_open and the fuzzer); buf must outlive the result. */
err pt_parse(const void *buf, size_t len, const char *name_for_errors, pt_file **out, errbuf *eb);
void pt_close(pt_file *f);
/* The path given to pt_open (or the name given to pt_parse); owned by f. */
const char *pt_name(const pt_file *f);
/* Tensors in pickle order (st_tensor.data points into the mapping; valid until pt_close). pt_find by name. */
size_t pt_count(const pt_file *f);
const st_tensor *pt_at(const pt_file *f, size_t i);
const st_tensor *pt_find(const pt_file *f, const char *name);

#endif
