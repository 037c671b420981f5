/* eng.h - the compute engine: a table of backends (cpu, ref, cuda) that each implement the same small set of
 * tensor ops, a paged KV cache, and the CodeGen forward pass written as a list of those ops.
 *
 * DESIGN
 * - A forward call takes a *batch of sequences*, each at its own position with its own KV blocks. Row r of the
 *   activations belongs to exactly one sequence; the ops that mix rows (attention) get the batch layout, every other
 *   op is row-wise. The scheduler ([sched]) packs many requests into one call; the CLI packs one.
 * - The KV cache is paged: a pool of blocks of ENG_KV_BLOCK tokens per layer; each sequence names its blocks in a
 *   block table. Today the CLI gives each sequence consecutive blocks; [sched] will share and reuse them.
 * - Tensors are 2-D row-major views into backend memory; `stride` (in elements) lets q/k/v be column views of one
 *   fused qkv buffer. Weights may be borrowed from the checkpoint's mmap when the backend can read host memory.
 * - Every op returns err; the CUDA backend reports failures instead of aborting (eng_backend_status).
 */
#ifndef SUGGESTD_ENGINE_ENG_H
#define SUGGESTD_ENGINE_ENG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "sample.h"

/* ENG_Q8 is a weight-only type: see "int8 weights" below. */
typedef enum eng_dtype { ENG_F32 = 0, ENG_F16, ENG_BF16, ENG_Q8 } eng_dtype;

/* Bytes of one element (ENG_Q8: 1, the int8 value; its row scales are extra, see eng_q8_bytes). */
size_t eng_dtype_size(eng_dtype t);
/* "f32", "f16", "bf16", "int8". */
const char *eng_dtype_name(eng_dtype t);

/* A 2-D row-major view: element (r, c) is at data + (r * stride + c) * size(dtype). */
typedef struct eng_tensor {
    void *data;
    eng_dtype dtype;
    int64_t rows, cols, stride;
} eng_tensor;

/* Column view [c0, c0 + n) of t. */
static inline eng_tensor eng_tensor_cols(eng_tensor t, int64_t c0, int64_t n) {
    t.data = (char *)t.data + (size_t)c0 * eng_dtype_size(t.dtype);
    t.cols = n;
    return t;
}

/* Row view [r0, r0 + n) of t. */
static inline eng_tensor eng_tensor_rows(eng_tensor t, int64_t r0, int64_t n) {
    t.data = (char *)t.data + (size_t)(r0 * t.stride) * eng_dtype_size(t.dtype);
    t.rows = n;
    return t;
}

/* --- int8 weights (ENG_Q8) ------------------------------------------------------------------------------------
 * Weight-only, symmetric, per output channel: row n of a [N, K] matmul weight is K int8 values q[n][k] and one f32
 * scale s[n] = max_k |w[n][k]| / 127, with q = round(w / s) (to nearest, ties to even) clamped to [-127, 127]
 * (-128 unused, so the range is symmetric), w ~ s * q. One allocation holds both, so eng_tensor needs no extra field: the int8 rows (row-major,
 * stride == cols) from byte 0, then the N f32 scales from byte eng_q8_scale_offset(N, K) (64-byte aligned if the
 * block is). Because the scale is per output row it factors out of the dot product, y[t][n] = s[n] * sum_k x[t][k]
 * q[n][k] (+ bias): kernels widen q to f32, accumulate in f32 and scale once at the store.
 * ENG_Q8 is accepted only as the weight `w` of eng_matmul: any other operand of that type (activations, biases,
 * embeddings, LayerNorm, read/write_f32) is ERR_UNSUPPORTED, and eng_tensor_alloc and eng_kv_create refuse the type
 * (ERR_INVALID): make Q8 tensors with eng_weight_from_host from a block eng_q8_quantize wrote. Never take a row or column view of one (the scales are
 * found from rows and cols). Only the CPU backends (cpu, ref) implement it; cuda answers ERR_UNSUPPORTED. */
static inline size_t eng_q8_scale_offset(int64_t rows, int64_t cols) {
    return ((size_t)rows * (size_t)cols + 63) & ~(size_t)63;
}
/* Bytes of a Q8 block of rows x cols: int8 rows, padding to 64 bytes, rows f32 scales. */
static inline size_t eng_q8_bytes(int64_t rows, int64_t cols) {
    return eng_q8_scale_offset(rows, cols) + (size_t)rows * sizeof(float);
}
/* The per-row scales of a Q8 weight tensor (t->rows floats). */
static inline const float *eng_q8_scales(const eng_tensor *t) {
    return (const float *)(const void *)((const char *)t->data + eng_q8_scale_offset(t->rows, t->cols));
}
/* Quantizes rows x cols host weights of src_dt (f32, f16 or bf16; row-major, contiguous) into dst, a host block of
 * eng_q8_bytes(rows, cols) bytes aligned to 4 (64 keeps the scales on a cache line). An all-zero row gets scale 0
 * and zeros; a NaN weight gives q = 0, an infinite one an infinite scale. Per element |s * q - w| <= s / 2 (up to
 * f32 rounding of w / s). Host-side, on the calling thread. */
void eng_q8_quantize(void *dst, const void *src, eng_dtype src_dt, int64_t rows, int64_t cols);
/* The same for rows [r0, r1) only (dst and src are still the whole block and source): threads may quantize
 * disjoint row ranges of one block at once. */
void eng_q8_quantize_rows(void *dst, const void *src, eng_dtype src_dt, int64_t rows, int64_t cols, int64_t r0,
                          int64_t r1);

#define ENG_KV_BLOCK 16 /* tokens per KV block */

/* One sequence's part of a batch: rows [row0, row0 + n_tokens) of the activations are its new tokens, at
 * positions pos .. pos + n_tokens - 1. Its KV for positions < pos + n_tokens lives in blocks[0..] (block b holds
 * positions b*ENG_KV_BLOCK ..). The block table must cover pos + n_tokens positions. A step's sequences never
 * store into a slot another sequence of the step reads (shared prefix blocks are read-only, kvpool.h): a backend
 * may read a sequence's older keys while the step's stores run (CUDA with PDL, NOTES.md v12). */
typedef struct eng_seq {
    int32_t row0, n_tokens, pos;
    const int32_t *blocks;
    int32_t n_blocks;
} eng_seq;

typedef struct eng_batch {
    int32_t n_seqs;
    const eng_seq *seqs;
    int32_t n_rows;          /* sum of n_tokens */
    const int32_t *tokens;   /* [n_rows] token ids, host memory */
    const int32_t *positions;/* [n_rows] absolute position of each row, host memory */
} eng_batch;

/* Attention geometry shared by rope / kv / attention ops. */
typedef struct eng_attn_shape {
    int32_t n_head, head_dim, rotary_dim;
} eng_attn_shape;

typedef struct eng_backend eng_backend;
typedef struct eng_kv eng_kv;

/* Names compiled in, e.g. "cpu ref" (and "cuda" in a CUDA build). */
const char *eng_backends_compiled(void);

/* Creates a backend by name: "cpu" (optimized, threaded, SIMD chosen at run time), "ref" (slow scalar oracle), or in
 * a CUDA build "cuda" / "cuda:N" (GPU N, default 0). n_threads <= 0: all online CPUs (ignored by cuda).
 * Errors: ERR_INVALID for an unknown name, with the names in eb; ERR_CUDA / ERR_UNSUPPORTED when no usable GPU. */
err eng_backend_create(const char *name, int n_threads, eng_backend **out, errbuf *eb);
void eng_backend_destroy(eng_backend *be);
const char *eng_backend_name(const eng_backend *be);
/* A one-line description (e.g. "cpu: 2 threads, avx512"). */
const char *eng_backend_describe(const eng_backend *be);
/* Element type the backend keeps activations in for weights of dtype `weights` (f32 on the CPU backends; on CUDA
 * the weight dtype, so f32 checkpoints keep exact f32 math). */
eng_dtype eng_backend_act_dtype(const eng_backend *be, eng_dtype weights);
/* Non-zero when eng_weight_from_host copies the data (the host buffer may be freed right after). */
int eng_backend_copies_weights(const eng_backend *be);
/* ERR_OK while the backend is healthy. After a sticky failure (a CUDA error that leaves the device context unusable)
 * returns that error with its text in eb; every op then fails fast, and the owner should recreate the engine. */
err eng_backend_status(const eng_backend *be, errbuf *eb);
/* Measured device-to-device copy bandwidth (GB/s, bytes read + bytes written) of an accelerator backend, for
 * benchmarks' memory floor. ERR_UNSUPPORTED on the CPU backends (they measure host bandwidth themselves). */
err eng_backend_copy_bandwidth(eng_backend *be, size_t bytes, double *gbs);

/* Memory the backend could still allocate: free GPU memory (CUDA), MemAvailable of the host (CPU backends). */
err eng_backend_mem_available(eng_backend *be, size_t *bytes);

/* --- memory ------------------------------------------------------------------------------------------------ */
/* Allocates a rows x cols tensor (stride = cols) of dtype in backend memory; contents undefined. */
err eng_tensor_alloc(eng_backend *be, eng_dtype dtype, int64_t rows, int64_t cols, eng_tensor *out);
void eng_tensor_free(eng_backend *be, eng_tensor *t);
/* Makes a weight tensor from host memory (rows x cols, row-major, contiguous). The backend may borrow `host` (the
 * CPU backends do, so the caller keeps it alive and unchanged until eng_weight_free) or copy it (CUDA). */
err eng_weight_from_host(eng_backend *be, const void *host, eng_dtype dtype, int64_t rows, int64_t cols,
                         eng_tensor *out);
void eng_weight_free(eng_backend *be, eng_tensor *t);
/* Copies a tensor to host memory as f32 (dst holds rows*cols floats, row-major contiguous). */
err eng_tensor_read_f32(eng_backend *be, const eng_tensor *t, float *dst);
/* Copies host f32 data (rows*cols) into a tensor, converting to its dtype. */
err eng_tensor_write_f32(eng_backend *be, eng_tensor *t, const float *src);
/* Summarizes each row of logits [n, V] (sample.h, samp_top) over ids < n_valid, with inv_t[r] for row r's sum_t
 * (0: not needed), into out[n] on the host. Where the backend has its own (CUDA) it runs on the device and only
 * the summaries are copied back; otherwise the rows are read and summarized here (samp_top_compute). */
err eng_logits_top(eng_backend *be, const eng_tensor *logits, int32_t n_valid, const float *inv_t, samp_top *out);
/* Whether eng_logits_top runs on the backend's device (worth using instead of reading whole rows). */
int eng_backend_has_logits_top(const eng_backend *be);

/* --- ops (all sizes must agree; ERR_INVALID otherwise) ------------------------------------------------------ */
/* y[r] = wte[tokens[r]] for r < n_rows. */
err eng_embed(eng_backend *be, eng_tensor *y, const eng_tensor *wte, const int32_t *tokens, int32_t n_rows);
/* y = LayerNorm(x) * w + b, biased variance, statistics in f32. y may alias x. */
err eng_layernorm(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *b,
                  float eps);
/* y (+)= x . w^T + bias. x [T, K], w [N, K], bias [1, N] or NULL, y [T, N]. accumulate != 0 adds into y.
 * f32 accumulation. This is where the weights are streamed: once per call whatever T is. w may be ENG_Q8 (scaled
 * per row, see "int8 weights"; ERR_UNSUPPORTED on backends without it); no other operand may. w is a constant: a
 * backend may start reading it before the ops ahead have finished (CUDA with PDL), so no op of the step writes it. */
err eng_matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
               int accumulate);
/* y = x . w^T + bias with gelu_new applied to y's columns [0, gelu_cols) (fc_in: all of them; fc_in fused with
 * qkv_proj: fc_in's): eng_matmul then eng_gelu, or one fused op where the backend has it (CUDA at decode: the GELU
 * in the matmul's epilogue, before y is rounded, so half results may differ in the last bit). */
err eng_matmul_gelu(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                    int64_t gelu_cols);
/* y = LN(x) . w^T + bias with gelu_new on y's columns [0, gelu_cols), where LN(x) is eng_layernorm(x; ln_w, ln_b,
 * eps) rounded to x's dtype: a LayerNorm and the matmul that reads it (ln_1 -> fc_in|qkv, ln_f -> lm_head) as one op
 * where the backend has it (CUDA at decode: the GEMV normalizes x as it loads it, one launch fewer). Otherwise
 * eng_layernorm into h, then eng_matmul_gelu from h: h (x's shape and dtype; may be x itself) is scratch, undefined
 * afterwards. Like eng_matmul_gelu, a fused half result may differ from the two ops' in the last bit. */
err eng_matmul_ln(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *ln_w, const eng_tensor *ln_b,
                  float eps, eng_tensor *h, const eng_tensor *w, const eng_tensor *bias, int64_t gelu_cols);
/* eng_matmul, where the op issued just before writes only x's columns [0, k_late) (0 < k_late < x's cols) and older
 * ops the rest: a backend may start on the other columns while that op still runs (CUDA at decode with PDL: the
 * layer's [att | mlp] . w2^T during attention, cuda_gemv_late.cu). Same result as eng_matmul but for the summation
 * order. eng_backend_has_late says whether the backend overlaps a one-row call of w [n, k] split at k_late (else
 * eng_matmul_late is just eng_matmul there). */
err eng_matmul_late(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                    int accumulate, int64_t k_late);
int eng_backend_has_late(const eng_backend *be, int64_t n, int64_t k, int64_t k_late);
/* x = gelu_new(x), in place. */
err eng_gelu(eng_backend *be, eng_tensor *x);
/* GPT-J interleaved RoPE, in place, on the first rotary_dim dims of every head of x [T, n_head*head_dim];
 * row r is at position positions[r]. inv_freq_i = 10000^(-2i/rotary_dim), angles in f32. */
err eng_rope(eng_backend *be, eng_tensor *x, const int32_t *positions, eng_attn_shape shape);
/* y = x + y (row-wise, same shapes). */
err eng_add(eng_backend *be, eng_tensor *y, const eng_tensor *x);

/* --- KV cache and attention -------------------------------------------------------------------------------- */
/* A pool of n_blocks blocks of ENG_KV_BLOCK positions for n_layer layers of width d_model, keys and values in
 * dtype (f32 or f16). */
err eng_kv_create(eng_backend *be, int32_t n_layer, int32_t d_model, int32_t n_blocks, eng_dtype dtype,
                  eng_kv **out);
void eng_kv_destroy(eng_backend *be, eng_kv *kv);
int32_t eng_kv_blocks(const eng_kv *kv);
size_t eng_kv_bytes(const eng_kv *kv);
/* Stores k, v rows [n_rows, d_model] of this batch into layer's cache at each row's (sequence, position). */
err eng_kv_store(eng_backend *be, eng_kv *kv, int32_t layer, const eng_tensor *k, const eng_tensor *v,
                 const eng_batch *batch);
/* RoPE on q and k of qkv [T, 3 * d_model] = q | k | v (in place, at batch->positions; shape: q's heads), then k and
 * v stored as eng_kv_store stores them: the same results as eng_rope on q | k followed by eng_kv_store, in one
 * launch where the backend has it (CUDA; SUGGESTD_CUDA_ROPE_KV=0 there runs the two ops). */
err eng_rope_kv_store(eng_backend *be, eng_tensor *qkv, eng_kv *kv, int32_t layer, const eng_batch *batch,
                      eng_attn_shape shape);
/* Causal attention for every row: out[r] = softmax(q[r] . K^T / sqrt(head_dim)) V over its sequence's positions
 * 0..positions[r], K/V read from the cache (store first). Scores and softmax in f32; probabilities are rounded to
 * the cache dtype before the value product, as HF does. */
err eng_attention(eng_backend *be, eng_tensor *out, const eng_tensor *q, const eng_kv *kv, int32_t layer,
                  const eng_batch *batch, eng_attn_shape shape);
/* eng_rope_kv_store on qkv, then eng_attention of its q columns into out: the same out and cache, but qkv's q and k
 * columns are left undefined (rotated or not), since a backend may rotate q and k where it reads them instead of in
 * place. CUDA does that for a batch of single-token sequences (decode): RoPE and the KV store go into the decode
 * attention kernel, one launch a layer fewer (SUGGESTD_CUDA_ATTN_FOLD=0: the two ops). */
err eng_rope_kv_attention(eng_backend *be, eng_tensor *out, eng_tensor *qkv, eng_kv *kv, int32_t layer,
                          const eng_batch *batch, eng_attn_shape shape);

/* Every layer of a one-row step (batch-1 decode) in one op, on a backend that has it: the CUDA backend runs small
 * models' layers as one persistent kernel (cuda_persist.cu). The layers as forward.c fuses them: x += attention and
 * MLP of LN(x) with [mlp | q | k | v] = LN(x) . w1^T + b1 (GELU on mlp, RoPE on q and k, k and v stored at the row's
 * position) and x += [att | mlp] . w2^T + b2. x [1, D] in place, u [1, D + F + 3D] scratch (undefined after).
 * Answers ERR_UNSUPPORTED, having done nothing, where the backend does not run this call; the caller then runs the
 * layers op by op. Same results as those ops but for the summation order. */
typedef struct eng_fused_layer {
    const eng_tensor *ln_w, *ln_b; /* [1, D] */
    const eng_tensor *w1, *b1;     /* [F + 3D, D] (fc_in, then q, k, v rows, heads contiguous), [1, F + 3D] */
    const eng_tensor *w2, *b2;     /* [D, D + F] (out_proj | fc_out columns), [1, D] */
} eng_fused_layer;
err eng_layers_decode(eng_backend *be, eng_tensor *x, eng_tensor *u, const eng_fused_layer *layers, int32_t n_layer,
                      int64_t n_inner, eng_kv *kv, const eng_batch *batch, eng_attn_shape shape, float eps);

/* --- concurrent branches (optional: the CUDA backend) ------------------------------------------------------
 * Decode attention is latency-bound: it leaves most of the memory bandwidth idle for ~10 us a layer, while the MLP's
 * matmuls do not depend on it. A backend with branches runs such ops side by side:
 *   ENG_BRANCH_SIDE  ops issued after this run on a side branch, ordered after everything issued before;
 *   ENG_BRANCH_MAIN  ops issued after this run on the main branch again, concurrently with the side's;
 *   ENG_BRANCH_JOIN  ops issued after this run after both branches.
 * The op list must also be right run in program order (what backends without branches do): ops of one branch may
 * not touch what the other writes. JOIN with no branch open does nothing, so it also closes a branch left open by a
 * failed op; a backend with branches answers every other misuse (SIDE inside a branch, MAIN outside one) with
 * ERR_INVALID, one without does not check. Inside a step graph the branches are recorded as parallel paths of the
 * graph. On CUDA an op on the side that needs the backend's scratch or an upload answers ERR_UNSUPPORTED (those
 * are ordered by the main stream). */
typedef enum eng_branch_op { ENG_BRANCH_SIDE = 0, ENG_BRANCH_MAIN, ENG_BRANCH_JOIN } eng_branch_op;
err eng_branch(eng_backend *be, eng_branch_op op);
/* Whether branches run concurrently on this backend (worth splitting work for); without, eng_branch does nothing. */
int eng_backend_has_branches(const eng_backend *be);

/* --- step graphs (optional: the CUDA backend) ---------------------------------------------------------------
 * A small forward step (decode rows of a few sequences) costs the host more than the GPU: ~300-450 ops of a few
 * microseconds each. A backend with graphs records the op list of a step once and replays it with one launch.
 * The caller (forward.c) brackets its op list: begin stages the step's host inputs (tokens, positions, logit rows,
 * the batch's block tables) at fixed device addresses with one copy, then either replays the graph made for this
 * step's shape (ENG_STEP_DONE: skip the ops) or asks for the ops (ENG_STEP_RUN: run them, they execute now;
 * ENG_STEP_CAPTURE: run them, they are recorded and execute at end). end closes the step and may ask for the ops
 * once more (ENG_STEP_RUN again) when a capture could not be made; loop until ENG_STEP_DONE.
 * A graph remembers every buffer address the ops used, so one eng_graphs belongs to one model (weights, KV pool,
 * activations) and is destroyed before any of them. */
typedef struct eng_graphs eng_graphs;
typedef enum eng_step { ENG_STEP_DONE = 0, ENG_STEP_RUN, ENG_STEP_CAPTURE } eng_step;
typedef struct eng_graph_stats {
    uint64_t replays, captures, runs; /* steps replayed, captured (and launched), run op by op inside begin/end */
} eng_graph_stats;

/* ERR_UNSUPPORTED (*out = NULL) on backends without graphs, or when the environment has SUGGESTD_CUDA_GRAPHS=0. */
err eng_graphs_create(eng_backend *be, eng_graphs **out);
void eng_graphs_destroy(eng_backend *be, eng_graphs *g);
/* The batch is checked as eng_kv_store checks it (a replay runs no op's checks); token ids and logit rows must
 * already be valid. The host arrays stay untouched until end. */
err eng_graphs_begin(eng_backend *be, eng_graphs *g, const eng_kv *kv, const eng_batch *batch,
                     const int32_t *logit_rows, int32_t n_logits, eng_step *step);
/* ops_rc: what the op list returned. g may be NULL (no graphs): then *step = ENG_STEP_DONE and ops_rc comes back. */
err eng_graphs_end(eng_backend *be, eng_graphs *g, err ops_rc, eng_step *step);
void eng_graphs_stats(const eng_graphs *g, eng_graph_stats *out);

#endif
