/* testutil.h - helpers shared by the test suites.
 *
 * Deterministic checkpoints: element i of tensor k (k = index in the CodeGen tensor order below) is
 *   z = splitmix64(splitmix64(seed + k) + i);  u = (z >> 11) * 2^-53;  v = (2u - 1) * scale_k + offset_k
 * computed in double, rounded to f32 (then to f16/bf16, round-to-nearest-even). tools/make_goldens.py computes the
 * same bits with numpy, builds the HF model from them and writes the goldens, so the (large) checkpoints never need
 * to be committed. Tensor order: wte; for each layer ln_1.weight, ln_1.bias, attn.qkv_proj.weight,
 * attn.out_proj.weight, mlp.fc_in.weight, mlp.fc_in.bias, mlp.fc_out.weight, mlp.fc_out.bias; ln_f.weight,
 * ln_f.bias, lm_head.weight, lm_head.bias. Scales: LayerNorm weight 0.2 around 1, LayerNorm/linear biases 0.1,
 * wte 1, linear weights sqrt(3/in) (unit variance out), lm_head 4*sqrt(3/D) (peaked logits, so greedy argmax is
 * decided by clear margins). */
#ifndef SUGGESTD_TESTUTIL_H
#define SUGGESTD_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "st.h"

typedef struct tu_ckpt_spec {
    int32_t n_layer, n_embd, n_head, rotary_dim, n_positions, vocab_size;
    st_dtype dtype; /* ST_F32, ST_F16 or ST_BF16 */
    uint64_t seed;
} tu_ckpt_spec;

/* Makes a fresh empty directory under $TMPDIR (or /tmp); returns a heap path (free with tu_rmtree_free). */
char *tu_mkdtemp(void);
/* Removes the directory tree and frees the path. */
void tu_rmtree_free(char *path);
/* Writes len bytes to dir/name; returns 0 on success. */
int tu_write_file(const char *dir, const char *name, const void *data, size_t len);
/* Writes config.json + model.safetensors for spec into dir. */
err tu_write_checkpoint(const char *dir, const tu_ckpt_spec *spec, errbuf *eb);
/* Path of a file under the source tree (SUGGESTD_SOURCE_DIR/rel); heap string. */
char *tu_source_path(const char *rel);

#endif
