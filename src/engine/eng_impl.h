/* eng_impl.h - what a backend implements. Only engine/ and the backends include this. */
#ifndef SUGGESTD_ENGINE_ENG_IMPL_H
#define SUGGESTD_ENGINE_ENG_IMPL_H

#include "eng.h"

typedef struct eng_backend_ops {
    const char *name;
    err (*create)(int n_threads, eng_backend **out, errbuf *eb);
    void (*destroy)(eng_backend *be);
    const char *(*describe)(const eng_backend *be);
    /* Element type of the activations for a model whose weights are `weights` (f32 always on the CPU backends; the
     * weight dtype on CUDA, so fp32 checkpoints run in exact f32 and half checkpoints in half). */
    eng_dtype (*act_dtype)(eng_dtype weights);
    /* Non-zero when weight_from_host copies (the host buffer may be freed right after); zero when it borrows. */
    int copies_weights;
    /* Optional: ERR_OK while healthy; after a sticky failure (a CUDA error that poisons the context) the error and its
     * text, and every later op fails fast. NULL: always healthy. */
    err (*status)(const eng_backend *be, errbuf *eb);
    /* Optional: device-to-device copy bandwidth in GB/s (bytes read + bytes written) over buffers of `bytes`. */
    err (*copy_bandwidth)(eng_backend *be, size_t bytes, double *gbs);
    /* Optional: free memory of the device the backend allocates from (NULL: host RAM, read by eng.c). */
    err (*mem_available)(eng_backend *be, size_t *bytes);

    err (*tensor_alloc)(eng_backend *be, eng_dtype dtype, int64_t rows, int64_t cols, eng_tensor *out);
    void (*tensor_free)(eng_backend *be, eng_tensor *t);
    err (*weight_from_host)(eng_backend *be, const void *host, eng_dtype dtype, int64_t rows, int64_t cols,
                            eng_tensor *out);
    void (*weight_free)(eng_backend *be, eng_tensor *t);
    err (*read_f32)(eng_backend *be, const eng_tensor *t, float *dst);
    err (*write_f32)(eng_backend *be, eng_tensor *t, const float *src);
    /* Optional: eng_logits_top on the device (NULL: eng.c reads the rows and summarizes them on the host). */
    err (*logits_top)(eng_backend *be, const eng_tensor *logits, int32_t n_valid, const float *inv_t,
                      samp_top *out);

    err (*embed)(eng_backend *be, eng_tensor *y, const eng_tensor *wte, const int32_t *tokens, int32_t n_rows);
    err (*layernorm)(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *b,
                     float eps);
    err (*matmul)(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                  int accumulate);
    /* Optional: y = x . w^T + bias, gelu on columns [0, gelu_cols), in one op (CUDA fuses it at decode); NULL:
     * matmul, then gelu. */
    err (*matmul_gelu)(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                       const eng_tensor *bias, int64_t gelu_cols);
    /* Optional: eng_matmul_ln in one op (the normalized x rounded to x's dtype). Answers ERR_UNSUPPORTED, having
     * done nothing, where this call does not fit it (CUDA: prefill rows, f32 weights, unaligned views), and eng.c
     * then runs layernorm + matmul_gelu; NULL: always those two. */
    err (*matmul_ln)(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *ln_w,
                     const eng_tensor *ln_b, float eps, const eng_tensor *w, const eng_tensor *bias, int64_t gelu_cols);
    /* Optional: eng_matmul_late, answering ERR_UNSUPPORTED (nothing done) where it does not fit (eng.c then runs
     * matmul); has_late: whether it overlaps the op before for a one-row call of w [n, k] of a half dtype (NULL:
     * no). */
    err (*matmul_late)(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                       const eng_tensor *bias, int accumulate, int64_t k_late);
    int (*has_late)(const eng_backend *be, int64_t n, int64_t k, int64_t k_late);
    err (*gelu)(eng_backend *be, eng_tensor *x);
    err (*rope)(eng_backend *be, eng_tensor *x, const int32_t *positions, eng_attn_shape shape);
    err (*add)(eng_backend *be, eng_tensor *y, const eng_tensor *x);

    err (*kv_create)(eng_backend *be, int32_t n_layer, int32_t d_model, int32_t n_blocks, eng_dtype dtype,
                     eng_kv **out);
    void (*kv_destroy)(eng_backend *be, eng_kv *kv);
    err (*kv_store)(eng_backend *be, eng_kv *kv, int32_t layer, const eng_tensor *k, const eng_tensor *v,
                    const eng_batch *batch);
    /* Optional: eng_rope_kv_store in one op (NULL: rope, then kv_store). */
    err (*rope_kv_store)(eng_backend *be, eng_tensor *qkv, eng_kv *kv, int32_t layer, const eng_batch *batch,
                         eng_attn_shape shape);
    err (*attention)(eng_backend *be, eng_tensor *out, const eng_tensor *q, const eng_kv *kv, int32_t layer,
                     const eng_batch *batch, eng_attn_shape shape);
    /* Optional: eng_rope_kv_attention in one op where the backend can (NULL: rope_kv_store, then attention). */
    err (*rope_kv_attention)(eng_backend *be, eng_tensor *out, eng_tensor *qkv, eng_kv *kv, int32_t layer,
                             const eng_batch *batch, eng_attn_shape shape);

    /* Optional: eng_layers_decode (NULL: ERR_UNSUPPORTED); eng.c checked the shapes, x has one row. */
    err (*layers_decode)(eng_backend *be, eng_tensor *x, eng_tensor *u, const eng_fused_layer *layers,
                         int32_t n_layer, int64_t n_inner, eng_kv *kv, const eng_batch *batch, eng_attn_shape shape,
                         float eps);

    /* Optional (NULL on the CPU backends): concurrent branches, see eng.h; has_branches may say no at run time. */
    err (*branch)(eng_backend *be, eng_branch_op op);
    int (*has_branches)(const eng_backend *be);
    /* Optional (NULL on the CPU backends): step graphs, see eng.h. eng.c checks the batch before graphs_begin. */
    err (*graphs_create)(eng_backend *be, eng_graphs **out);
    void (*graphs_destroy)(eng_backend *be, eng_graphs *g);
    err (*graphs_begin)(eng_backend *be, eng_graphs *g, const eng_batch *batch, const int32_t *logit_rows,
                        int32_t n_logits, eng_step *step);
    err (*graphs_end)(eng_backend *be, eng_graphs *g, err ops_rc, eng_step *step);
} eng_backend_ops;

/* Every backend struct starts with this header so engine/ can find its ops. */
typedef struct eng_backend_base {
    const eng_backend_ops *ops;
} eng_backend_base;

/* Every KV struct starts with this header (sizes engine/ reports without asking the backend). */
typedef struct eng_kv_base {
    int32_t n_layer, d_model, n_blocks;
    eng_dtype dtype;
    size_t bytes;
} eng_kv_base;

/* Every step-graph cache starts with this header (counters engine/ reports without asking the backend). */
typedef struct eng_graphs_base {
    eng_graph_stats stats;
} eng_graphs_base;

extern const eng_backend_ops cpu__backend_ops; /* engine/cpu/cpu.c */
extern const eng_backend_ops ref__backend_ops; /* engine/cpu/ref.c */
#ifdef SUGGESTD_HAVE_CUDA
extern const eng_backend_ops cuda__backend_ops; /* engine/cuda/cuda.c */
#endif

/* The act_dtype of backends that keep every activation in f32 whatever the weights. */
static inline eng_dtype eng__act_dtype_f32(eng_dtype weights) {
    (void)weights;
    return ENG_F32;
}

#endif
