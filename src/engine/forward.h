/* forward.h - a CodeGen model placed on a backend, and its forward pass over a batch of sequences.
 *
 * eng_model owns the backend copies (or borrowed views) of the weights, the KV block pool and the activation
 * buffers for up to max_rows tokens per call. It does not own the backend or the host model: both must outlive it.
 * One thread at a time. */
#ifndef SUGGESTD_ENGINE_FORWARD_H
#define SUGGESTD_ENGINE_FORWARD_H

#include "eng.h"
#include "model.h"

typedef struct eng_model_opts {
    int32_t max_rows;   /* tokens per forward call (prefill chunk + decodes); 0 -> 512 */
    int32_t n_kv_blocks;/* KV pool size in blocks of ENG_KV_BLOCK; 0 -> enough for n_kv_seqs full contexts */
    int kv_dtype;       /* -1: the backend's activation dtype (f32 on CPU), or ENG_F32 / ENG_F16 */
    int32_t n_kv_seqs;  /* with n_kv_blocks = 0: full contexts the pool holds; 0 -> 1 */
    double kv_mem_fraction; /* with n_kv_blocks = 0 and > 0: n_kv_seqs contexts at most this share of the backend's
                             * free memory (after weights), but always one full context */
    const char *dtype;  /* weights: NULL, "" or "auto" = as the checkpoint stores them; "int8" = the matmul weights
                         * (qkv, out_proj, fc_in, fc_out, lm_head) quantized at load to ENG_Q8, per-row scales (CPU
                         * backends only); embeddings, LayerNorms and biases keep the checkpoint's dtype.
                         * Anything else: ERR_INVALID from eng_model_create, naming the accepted values. */
    int fuse_matmuls;   /* a layer's four matmuls as two, over weights concatenated at load (w1 = [fc_in; qkv]
                         * from the LayerNorm output, w2 = [out_proj | fc_out] into the residual): half the launches,
                         * each twice the size, for the CUDA decode GEMV (2B decode 3.32 -> 3.08 ms on an H100).
                         * The weights are copied (a CPU backend would otherwise borrow the mmap) and with int8 a w2
                         * row shares one scale across both halves. 1: on; -1: off; 0: auto = on where the backend
                         * copies the weights (CUDA) and the weights are not int8. SUGGESTD_FUSE_MATMULS=0 or 1 in the
                         * environment decides where the caller left it at auto. */
    int branches;       /* with fused matmuls, the MLP's fc_out beside attention on a concurrent branch (eng.h,
                         * "concurrent branches"): 1 with out_proj after the join, 2 with out_proj beside it too and
                         * its result added after the join (forward.c layer_branched). 0: auto = on where the backend
                         * runs branches concurrently, 1 for d_model 2048-4095 (2B), else 2 (350M, 6B, 16B; NOTES.md
                         * v11, v13; SUGGESTD_BRANCHES=0|1|2 decides there); -1: off. 1 and 2 also on a backend
                         * without branches, which runs the same op list in program order (so the CPU tests check
                         * it). Ignored (off) unless the matmuls are fused and the weights are not int8. */
} eng_model_opts;

typedef struct eng_model eng_model;

err eng_model_create(eng_backend *be, const model *m, const eng_model_opts *opts, eng_model **out, errbuf *eb);
void eng_model_destroy(eng_model *em);

const model_config *eng_model_config(const eng_model *em);
eng_kv *eng_model_kv(eng_model *em);
int32_t eng_model_max_rows(const eng_model *em);
eng_backend *eng_model_backend(eng_model *em);
/* How many steps ran from step graphs (all zero on backends without them). */
void eng_model_graph_stats(const eng_model *em, eng_graph_stats *out);
/* Bytes the model holds on the backend: weights it copied, repacked or quantized, KV pool, activations. */
void eng_model_memory(const eng_model *em, size_t *weights, size_t *kv, size_t *workspace);
/* Bytes of all the weights the forward pass reads, as placed: borrowed checkpoint tensors plus the model's own
 * (repacked qkv, int8 blocks with their scales). The size of the model in memory, whichever dtype it runs in. */
size_t eng_model_weight_bytes(const eng_model *em);
/* The dtype of the matmul weights as placed: the checkpoint's, or ENG_Q8 with opts->dtype "int8". */
eng_dtype eng_model_matmul_dtype(const eng_model *em);

/* Runs the batch (batch->n_rows <= max_rows) through all layers, storing its K/V, and writes the f32 logits of
 * rows logit_rows[0..n_logits) into logits ([n_logits][vocab_size], host memory). n_logits <= max_rows.
 * logits NULL: they stay where they were computed, for eng_model_logits_top / eng_model_logits_row, until the
 * next forward. */
err eng_model_forward(eng_model *em, const eng_batch *batch, const int32_t *logit_rows, int32_t n_logits,
                      float *logits, errbuf *eb);
/* The last forward's logits rows summarized for sampling (eng_logits_top: on a GPU only ~0.5 KB a row crosses
 * PCIe instead of 200 KB). inv_t[i]: row i's samp_top_inv_t. */
err eng_model_logits_top(eng_model *em, int32_t n_valid, const float *inv_t, samp_top *out, errbuf *eb);
/* Row i of the last forward's logits (f32, vocab_size floats), for a sampler the summary cannot serve. */
err eng_model_logits_row(eng_model *em, int32_t i, float *dst, errbuf *eb);
/* Whether the summary is computed on the device (else reading whole rows costs no more). */
int eng_model_logits_on_device(const eng_model *em);

#endif
