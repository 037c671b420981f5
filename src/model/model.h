/* model.h - a CodeGen checkpoint on the host: config.json plus mmapped weights, validated against the config.
 *
 * A model directory is a Hugging Face one: config.json and, first found wins, model.safetensors, a sharded
 * model.safetensors.index.json, pytorch_model.bin (zip + restricted pickle, read in place) or a sharded
 * pytorch_model.bin.index.json. model_open checks that every tensor CodeGen needs is present with the shape the
 * config implies and a float dtype (F32, F16 or BF16, all the same), ignores the causal_mask / masked_bias buffers,
 * and reports anything else unexpected. With "tie_word_embeddings": true in config.json, lm_head_w is wte (as HF
 * ties them: a lm_head.weight in the file is ignored, and may be absent); lm_head.bias is still required. Errors name
 * the file and the tensor. The model is read-only after open
 * and may be shared between threads. */
#ifndef SUGGESTD_MODEL_MODEL_H
#define SUGGESTD_MODEL_MODEL_H

#include <stdint.h>

#include "err.h"
#include "st.h"

typedef struct model_config {
    int32_t n_layer, n_embd, n_head, head_dim, rotary_dim, n_inner, n_positions, vocab_size;
    int32_t eos_token_id, bos_token_id;
    float layer_norm_eps;
    int32_t tie_word_embeddings; /* 1: lm_head.weight is transformer.wte.weight (the file need not hold it) */
    char torch_dtype[16]; /* as written in config.json ("float16"), "" if absent */
} model_config;

typedef struct model_layer {
    const st_tensor *ln_1_w, *ln_1_b; /* [D] */
    const st_tensor *qkv;             /* [3D, D], HF mp_num=4 q,v,k layout (see engine/forward.c for the repack) */
    const st_tensor *out_proj;        /* [D, D] */
    const st_tensor *fc_in_w, *fc_in_b;   /* [F, D], [F] */
    const st_tensor *fc_out_w, *fc_out_b; /* [D, F], [D] */
} model_layer;

typedef struct model {
    model_config cfg;
    st_dtype dtype;            /* the one float dtype of all weights */
    const st_tensor *wte;      /* [V, D] */
    const st_tensor *ln_f_w, *ln_f_b;
    const st_tensor *lm_head_w, *lm_head_b; /* [V, D], [V] */
    model_layer *layers;       /* [n_layer] */
    /* private: the open shards */
    st_file **shards;
    int32_t n_shards;
    char *dir;
} model;

/* Parses config.json text (CodeGen fields; defaults as HF's CodeGenConfig: n_inner null -> 4*n_embd,
 * eos_token_id 50256, layer_norm_epsilon 1e-5, tie_word_embeddings false). Checks n_embd % n_head == 0,
 * n_head % 4 == 0, rotary_dim even and <= head_dim, all sizes positive and sane. */
err model_config_parse(const char *json, size_t len, model_config *cfg, errbuf *eb);

err model_open(const char *dir, model **out, errbuf *eb);
void model_close(model *m);
/* Bytes of all weights (what a decode step must at least read, plus wte); a tied lm_head counts once. */
uint64_t model_weight_bytes(const model *m);

#endif
