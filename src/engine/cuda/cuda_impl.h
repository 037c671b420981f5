/* cuda_impl.h - the CUDA backend's state, shared by its C files: cuda.c (device, memory, errors, element ops,
 * attention), cuda_matmul.c (cuBLAS and the GEMV), cuda_graph.c, cuda_branch.c and cuda_top.c. Nothing outside
 * engine/cuda includes it. */
#ifndef SUGGESTD_ENGINE_CUDA_IMPL_H
#define SUGGESTD_ENGINE_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>

#include "cuda_kern.h"
#include "eng_impl.h"

#define CUDA_META_SLOTS 8
#define CUDA_BLAS_WS ((size_t)32 << 20) /* cuBLAS workspace bytes (NVIDIA suggests 32 MiB on Hopper) */

/* A small int32 array (token ids, positions, the batch layout) already on the device: ops of one forward pass
 * ask for the same arrays layer after layer, so each is uploaded once and found again by content. */
typedef struct cuda_meta {
    int32_t *host, *dev;
    size_t n, cap;
} cuda_meta;

/* The batch as the KV kernels read it, one int32 array:
 *   [0] n_rows  [1] blocks_cap  [2] tiles of CUDA_ATTN_TILE_ROWS (64) rows  [3] tiles of 1 row
 *   slot[n_rows]            cache slot of each row (block * ENG_KV_BLOCK + position % ENG_KV_BLOCK)
 *   blocks[blocks_cap]      every sequence's block table, concatenated (total_blocks used, the rest unused room)
 *   tiles64[4 * n64], tiles1[4 * n1]   {row0, n_rows, pos0, offset of the sequence's table in blocks}
 * Sequences with at least 4 new rows (prefill chunks) go into tiles of 64 rows that share K/V reads (the tensor-core
 * kernel's CTA; the SIMT kernel cuts them into 8-row blocks); decode rows get tiles of one. blocks_cap >
 * total_blocks lets a step graph keep its offsets while block tables grow. */
typedef struct cuda__layout {
    const int32_t *dev; /* the array on the device */
    int32_t n_rows, total_blocks, blocks_cap, n64, n1, max_keys64, max_keys1;
} cuda__layout;

/* Counts (n_rows, total_blocks, n64, n1; blocks_cap = total_blocks) for batch. */
void cuda__layout_count(const eng_batch *batch, cuda__layout *lo);
/* Ints the array of a counted layout takes. */
size_t cuda__layout_ints(const cuda__layout *lo);
/* Writes the array into h (cuda__layout_ints of it) and sets max_keys64 / max_keys1. */
void cuda__layout_fill(const eng_batch *batch, cuda__layout *lo, int32_t *h);
/* The attention key budget the split plan is made for: keys rounded up to a power of two (at least 128), so that
 * steps of one graph share a plan whatever their positions. */
int32_t cuda__keys_bucket(int32_t keys);

/* An open step (cuda_graph.c): the caller's per-step host arrays, recognised by address, and their fixed device
 * copies, which the ops use instead of uploading (during a capture they must). */
typedef struct cuda_step {
    const eng_batch *batch;
    const int32_t *tokens, *positions, *logit_rows;
    int32_t n_rows, n_logits;
    const int32_t *d_tokens, *d_positions, *d_logit_rows;
    cuda__layout lo;
} cuda_step;

/* Concurrent branches (eng.h): a side stream with its own cuBLAS handle and workspace (two GEMMs may then run at
 * once), and the events that fork and join it. */
typedef struct cuda_branch {
    int enabled;                /* SUGGESTD_CUDA_BRANCHES=0: off (eng_backend_has_branches says 0) */
    int state;                  /* 0: no branch open, 1: issuing to the side, 2: side running, issuing to main */
    int side_warps;             /* GEMV warps an SM on the side branch (0: a full wave), see cuda_branch.c */
    cudaStream_t main, side;
    cublasHandle_t main_blas, side_blas;
    void *side_ws;
    cudaEvent_t fork, join;
} cuda_branch;

/* Device counters that are zero between launches: kernels merging their blocks' work take tickets from them and
 * leave them 0 again (cuda__counters). */
typedef struct cuda_counters {
    int32_t *p;
    size_t cap;
} cuda_counters;

typedef struct cuda_backend {
    eng_backend_base base;
    int device, n_sms;
    int gemv; /* decode matmuls of <= gemv rows on half weights use cuda__gemv (int8 always do, up to CUDA_GEMV_MAX_ROWS) */
    int ln_fold; /* matmul_ln on the GEMV (SUGGESTD_CUDA_LN_FOLD=0: off, LayerNorm kernel + GEMV) */
    size_t smem_optin; /* the device's opt-in shared memory a block (kernels whose stages need more fall back) */
    int rope_kv;       /* eng_rope_kv_store in one launch (SUGGESTD_CUDA_ROPE_KV=0: rope, then kv_store) */
    int attn_fold;     /* eng_rope_kv_attention of decode batches in the decode kernel (SUGGESTD_CUDA_ATTN_FOLD=0: off) */
    int attn_mma; /* prefill tiles on f16 caches use the tensor-core attention (SUGGESTD_CUDA_ATTN_MMA=0: off) */
    int attn_decode;     /* decode rows on f16 caches use cuda__attention_decode (SUGGESTD_CUDA_ATTN_DECODE=0: off) */
    int attn_split_ctas; /* CTAs per SM the decode split plan aims at (SUGGESTD_CUDA_ATTN_SPLIT_CTAS; 0: by batch) */
    /* PDL bookkeeping of the main stream's launches, in issue order (cu_pdl_trigger, NOTES.md v16; cuda__pdl_note:
     * ops on the side branch leave it alone):
     * gemv_one_ring: the last GEMV issued all its weights before its wait, so kernels launched beside it cannot
     *   slow it: eng_rope_kv_store then lets decode attention launch early;
     * pdl_early: the last kernel let the next one launch before its own wait (RoPE + KV store when it does,
     *   matmul_late), or is not ours (cuBLAS), so the kernel two back may still run: cuda__gemv_late, whose
     *   prologue reads activations, launches without PDL then. Ops whose kernels trigger after their wait (GEMVs,
     *   attention) clear it; the others leave it as it was, which is safe either way. */
    int gemv_one_ring, pdl_early;
    int ln_one_ring; /* the last LayerNorm GEMV's gemv_one_ring: the next layer's, after matmul_late, will be alike */
    cuda_counters attn_tickets; /* the decode kernel's split counters */
    cuda_counters persist_bar;  /* cuda_persist.cu's grid barrier */
    int64_t persist_key[4];     /* the last (D, F, head_dim, dtype) cuda__persist_ok was asked about, */
    int persist_fits;           /* and its answer (an occupancy query: not every step) */
    cuda_counters top_counts;   /* logits_top's candidate counts and tickets */
    /* the stream and cuBLAS handle ops issue to: the main ones, or the side branch's between ENG_BRANCH_SIDE and
     * ENG_BRANCH_MAIN (cuda_branch.c) */
    cudaStream_t stream;
    cublasHandle_t blas;
    cuda_branch br;
    char desc[320];
    /* sticky failure: once set, every op returns it (the context may be unusable) */
    err sticky;
    char msg[384];
    /* uploads of small host arrays go through a pinned ring so they stay asynchronous */
    unsigned char *pinned;
    size_t pinned_cap, pinned_off;
    cuda_meta meta[CUDA_META_SLOTS];
    int meta_next;
    int32_t *hbuf; /* host scratch for building the batch layout */
    size_t hbuf_cap;
    /* device scratch, grown on demand (three: a matmul may need a widened operand and an f32 result at once, and
     * an int8 weight dequantized for cuBLAS) */
    void *scratch[3];
    size_t scratch_cap[3];
    /* (cos, sin) table for RoPE: [rope_npos][rope_rd / 2] float pairs */
    float *rope_cs;
    int32_t rope_rd, rope_npos;
    void *blas_ws; /* cuBLAS workspace, ours so a capture never makes cuBLAS allocate */
    /* step graphs (cuda_graph.c): the open step, whether the stream is capturing and whether an op refused to be
     * captured; epoch counts replacements of the buffers above that a graph may point to (scratch, RoPE table) */
    const cuda_step *step;
    int capturing, capture_broken;
    uint64_t epoch;
} cuda_backend;

/* Records a CUDA runtime failure of `what` on b and returns its code: ERR_NOMEM for an out-of-memory (the backend
 * stays usable), otherwise ERR_CUDA and the backend turns unhealthy for good. */
err cuda__fail(cuda_backend *b, cudaError_t e, const char *what);
err cuda__fail_blas(cuda_backend *b, cublasStatus_t s, const char *what);
/* Device scratch i of at least `bytes`, contents undefined, valid until the next call for the same i. */
err cuda__scratch(cuda_backend *b, int i, size_t bytes, void **out);
/* Selects b's device on this thread; b->sticky when unhealthy. */
err cuda__enter(cuda_backend *b);
/* At least n counters of c, zero (grown outside a capture only, zeroed once: users leave them 0). in_graphs: step
 * graphs may hold c's buffer, so growing it makes them stale. */
err cuda__counters(cuda_backend *b, cuda_counters *c, size_t n, int in_graphs, int32_t **out);
/* Asynchronous host -> device copy of n bytes through the pinned ring (src may change once this returns). */
err cuda__upload(cuda_backend *b, void *dev, const void *src, size_t n);
/* What an op returns when it cannot be captured (it would allocate, synchronize or upload): marks the capture
 * broken, so cuda_graph.c drops it and the ops run again directly. */
err cuda__capture_refuse(cuda_backend *b);

/* cuda_branch.c: resources made at create (when enabled), freed at destroy; the eng op; the GEMV's warps cap for
 * the branch now issued to (0: none). */
err cuda__branch_init(cuda_backend *b);
void cuda__branch_free(cuda_backend *b);
err cuda__branch(eng_backend *be, eng_branch_op op);
int cuda__has_branches(const eng_backend *be);
int cuda__branch_warps(const cuda_backend *b);
/* The PDL bookkeeping after an op's launch (cuda_backend.gemv_one_ring, pdl_early), for the main stream only: a
 * kernel on the side branch is not the one before the main stream's next. */
static inline void cuda__pdl_note(cuda_backend *b, int one_ring, int early) {
    if (b->br.state != 1) b->gemv_one_ring = one_ring, b->pdl_early = early;
}

err cuda__graphs_create(eng_backend *be, eng_graphs **out);
void cuda__graphs_destroy(eng_backend *be, eng_graphs *g);
err cuda__graphs_begin(eng_backend *be, eng_graphs *g, const eng_batch *batch, const int32_t *logit_rows,
                       int32_t n_logits, eng_step *step);
err cuda__graphs_end(eng_backend *be, eng_graphs *g, err ops_rc, eng_step *step);

/* eng_logits_top: summaries computed on the device, copied back to out (cuda_top.c). */
err cuda__logits_top_op(eng_backend *be, const eng_tensor *logits, int32_t n_valid, const float *inv_t,
                        samp_top *out);
err cuda__matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                 int accumulate);
/* y = x . w^T + bias, gelu_new on columns [0, gelu_cols): fused into the GEMV's epilogue at decode, cuBLAS + the
 * gelu kernel otherwise. */
err cuda__matmul_gelu(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                      int64_t gelu_cols);
/* The matmul_ln op: the LayerNorm folded into the decode GEMV; ERR_UNSUPPORTED (nothing done) where the GEMV does
 * not take this matmul, or with SUGGESTD_CUDA_LN_FOLD=0. */
err cuda__matmul_ln(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *ln_w, const eng_tensor *ln_b,
                    float eps, const eng_tensor *w, const eng_tensor *bias, int64_t gelu_cols);
/* The matmul_late op (cuda_gemv_late.cu) where PDL is on and the kernel fits; ERR_UNSUPPORTED otherwise. */
err cuda__matmul_late(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                      int accumulate, int64_t k_late);
int cuda__has_late(const eng_backend *be, int64_t n, int64_t k, int64_t k_late);

#define CUDA_CHECK(b, call)                                                                                          \
    do {                                                                                                             \
        cudaError_t e_ = (call);                                                                                     \
        if (e_ != cudaSuccess) return cuda__fail((b), e_, #call);                                                    \
    } while (0)

#endif
