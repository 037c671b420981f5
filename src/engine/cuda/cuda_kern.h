/* cuda_kern.h - the kernel launchers of the CUDA backend, callable from C (cuda.c, cuda_matmul.c).
 *
 * Each launcher enqueues on `st` and returns cudaGetLastError() (launch errors only: faults inside a kernel surface
 * at the next synchronizing call). Tensors are eng_tensor views whose data points to device memory; device arrays of
 * indices are int32. Nothing here allocates or synchronizes. */
#ifndef SUGGESTD_ENGINE_CUDA_KERN_H
#define SUGGESTD_ENGINE_CUDA_KERN_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "eng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether kernels that support it launch with programmatic dependent launch (cuda_common.cuh cu_launch): on
 * devices of compute capability 9.0 and up, unless SUGGESTD_CUDA_PDL=0. Per device, asked once. */
int cuda__pdl_on(void);
/* Whether the kernels in use were compiled for sm_90 or newer (their waits are compiled in). */
int cuda__pdl_code(void);

/* dst[r] = src[idx ? idx[r] : r] for r < n_rows, converted to dst's dtype (cols from dst). */
cudaError_t cuda__copy_rows(cudaStream_t st, eng_tensor dst, eng_tensor src, const int32_t *idx, int64_t n_rows);
/* y = LayerNorm(x) * w + b, statistics in f32 (two passes); y may alias x. */
cudaError_t cuda__layernorm(cudaStream_t st, eng_tensor y, eng_tensor x, eng_tensor w, eng_tensor b, float eps);
/* x = gelu_new(x) in f32 with ref.c's operation order, stored back in x's dtype. */
cudaError_t cuda__gelu(cudaStream_t st, eng_tensor x);
/* y = y + x. */
cudaError_t cuda__add(cudaStream_t st, eng_tensor y, eng_tensor x);
/* y[r] = (accumulate ? y[r] : 0) + (s ? s[r] : 0) + (bias ? bias : 0), s an f32 [rows, ss] buffer. */
cudaError_t cuda__epilogue(cudaStream_t st, eng_tensor y, const float *s, int64_t ss, const eng_tensor *bias,
                           int accumulate);
/* GPT-J RoPE on x [T, n_head*head_dim]; cs: [n_pos][rotary_dim/2] pairs (cos, sin) computed on the host exactly as
 * ref.c computes them; pos: device [T] positions (all < n_pos). */
cudaError_t cuda__rope(cudaStream_t st, eng_tensor x, const int32_t *pos, const float *cs, eng_attn_shape s);
/* Writes k, v rows r < k.rows into the cache of one layer (kc, vc: [n_blocks*ENG_KV_BLOCK][d_model] of kvdt) at
 * slot[r] (= block * ENG_KV_BLOCK + position % ENG_KV_BLOCK). */
cudaError_t cuda__kv_store(cudaStream_t st, void *kc, void *vc, eng_dtype kvdt, eng_tensor k, eng_tensor v,
                           const int32_t *slot);

/* RoPE on q | k of qkv [T, 3 * n_head * head_dim] in place (s: q's heads, head_dim even), then k and v rows into
 * the cache at slot[r], as cuda__rope then cuda__kv_store would leave them. early: the next kernel may launch before
 * this one's wait (cu_pdl_trigger), for decode attention's prologue beside the GEMV before. */
cudaError_t cuda__rope_kv_store(cudaStream_t st, eng_tensor qkv, const int32_t *pos, const float *cs, eng_attn_shape s,
                                void *kc, void *vc, eng_dtype kvdt, const int32_t *slot, int early);

/* Decode matmul (cuda_gemv.cu): y[t] (+)= x[t] . w^T + bias for x.rows <= CUDA_GEMV_MAX_ROWS, w f16/bf16
 * (K % 8 == 0, stride % 8 == 0) or ENG_Q8 (K % 16 == 0, contiguous) [N, K] with 16-byte aligned data; x (16-byte
 * aligned, stride % 8 == 0), y, bias of any dtype; gelu_new on output columns [0, gelu) before the accumulate. f32
 * sums, one rounding into y. n_sms sizes the grid (one wave). With PDL the first weights are read before the wait
 * for the kernel before (cuda_common.cuh): w must not be written by the step's kernels (weights never are). */
#define CUDA_GEMV_MAX_ROWS 8
/* A LayerNorm the GEMV applies to x first (ln_1 / ln_f folded into the matmul that reads them): each CTA replaces
 * x[t] by (x[t] - mean_t) * rstd_t * w + b rounded to x's dtype, in shared memory, mean and rstd in f32 as
 * cuda__layernorm computes them. w, b [1, K] of one dtype, 16-byte aligned; x f16 or bf16 with x.rows * K <=
 * CUDA_GEMV_LN_MAX (its shared memory; cudaErrorInvalidValue otherwise). */
#define CUDA_GEMV_LN_MAX 8192
typedef struct cuda__gemv_ln {
    eng_tensor w, b;
    float eps;
} cuda__gemv_ln;
/* ln: NULL, or the LayerNorm of x. warps_cap > 0: the grid leaves an SM at most that many of its warps, so kernels
 * on a concurrent branch find room beside it (cuda_branch.c); 0: one full wave. *one_ring (if not NULL): whether
 * every warp's weights fit its first ring, i.e. the kernel issues all of them before its PDL wait. */
cudaError_t cuda__gemv(cudaStream_t st, int n_sms, int warps_cap, eng_tensor y, eng_tensor x, eng_tensor w,
                       const eng_tensor *bias, int accumulate, int gelu, const cuda__gemv_ln *ln, int *one_ring);
/* The decode GEMV of one row whose columns [0, kl) the kernel launched just before writes (cuda_gemv_late.cu): with
 * PDL it streams the other columns' weights while that kernel still runs. y (+)= x . w^T + bias, x and w f16/bf16
 * (K, kl, w's stride multiples of 8, x and w 16-byte aligned), y and bias of any dtype; a CTA an SM. Only where
 * cuda__gemv_late_fits says so (cudaErrorInvalidValue otherwise). early: it lets the next kernel launch at its
 * start (cu_pdl_trigger). pdl = 0: launched without PDL, for when the kernel before triggered early itself. */
cudaError_t cuda__gemv_late(cudaStream_t st, int pdl, int early, int n_sms, size_t smem_max, eng_tensor y, eng_tensor x,
                            eng_tensor w, const eng_tensor *bias, int accumulate, int kl);
/* Whether the kernel takes w [n, k] split at kl on a device of n_sms SMs and smem_max bytes of opt-in shared memory
 * a block: its shared memory (the late weights of an SM's rows, x, partial sums) must fit, 1 KiB left. */
int cuda__gemv_late_fits(int n_sms, size_t smem_max, int64_t n, int64_t k, int64_t kl);
/* out [w.rows, w.cols] of dtype out_dt (f16 or bf16), contiguous = the int8 rows of w (contiguous, w.cols % 16 == 0)
 * times their scales[] (one per row): the prefill path's operand for cuBLAS, a panel of rows at a time. */
cudaError_t cuda__q8_dequant(cudaStream_t st, void *out, eng_dtype out_dt, eng_tensor w, const float *scales);

/* Every layer of a one-row decode step in one persistent kernel (cuda_persist.cu): weights of dtype dt (f16 or
 * bf16, as the activations), fused as forward.c fuses them (w1 = [fc_in; q; k; v] rows [F + 3D, D], b1 [F + 3D],
 * w2 = [out_proj | fc_out] [D, D + F], b2 = fc_out's bias), an f16 cache; x [D] in place. */
#define CUDA_PERSIST_MAX_LAYERS 48
typedef struct cuda__persist_layer {
    const void *w1, *b1, *w2, *b2, *ln_w, *ln_b;
    void *kc, *vc; /* the layer's cache (f16) */
} cuda__persist_layer;
typedef struct cuda__persist_args {
    cuda__persist_layer L[CUDA_PERSIST_MAX_LAYERS];
    int n_layer;
    void *x, *mlp, *q; /* [D], [F], [D] of the activation dtype (x read and written; mlp, q: scratch) */
    const int32_t *lay; /* the step's layout (cuda__layout) of one sequence of one token */
    const float2 *cs;   /* the RoPE table */
    float *part;        /* [H * S][hd + 4] */
    unsigned *bar;      /* [2]: an arrival count (zero between barriers), a generation */
    int64_t w1s, w2s;   /* row strides of w1, w2 (elements, multiples of 8) */
    int D, F, H, hd, rot, S, max_blocks; /* S: key splits a head; max_blocks >= the layout's blocks_cap */
    int R1, R2;                         /* set by cuda__persist */
    float eps, scale;
    int lpk;          /* set by cuda__persist: lanes a key row in attention (hd / 8 rounded up to a power of 2) */
    unsigned long long *trace; /* SUGGESTD_PERSIST_TRACE: phase stamps (cuda_persist.cu), else NULL */
} cuda__persist_args;
#define CUDA_PERSIST_MAX_BLOCKS 256 /* KV blocks of the sequence (4096 positions) */
#define CUDA_PERSIST_MAX_SPLITS 8   /* cuda__persist_args.S */
/* Whether the kernel of dtype dt fits one CTA on each of n_sms SMs, with smem_max bytes of shared memory a block. */
int cuda__persist_ok(int n_sms, size_t smem_max, int64_t D, int64_t F, int hd, eng_dtype dt);
/* Launches it on n_sms CTAs (where cuda__persist_ok says so; it sets a->R1, a->R2). */
cudaError_t cuda__persist(cudaStream_t st, int n_sms, cuda__persist_args *a, eng_dtype dt);

/* Query rows per prefill tile of the batch layout: the tensor-core kernel's CTA (cuda_attn_mma.cu). */
#define CUDA_ATTN_TILE_ROWS 64
/* A sequence with at most this many rows in a step gets tiles of 1 row (more: of CUDA_ATTN_TILE_ROWS). The decode
 * kernel relies on it: keys below n_keys - CUDA_ATTN_ROW_TILES_MAX of a 1-row tile are from earlier steps. */
#define CUDA_ATTN_ROW_TILES_MAX 3

/* One attention launch: tiles of up to `rows` (1 or CUDA_ATTN_TILE_ROWS) consecutive query rows of one sequence.
 * tiles: device int4 {row0, n_rows, pos0, blocks offset}; blocks: the sequences' block tables, concatenated. Keys
 * are split into n_splits chunks of `chunk` keys (a multiple of 128; of CUDA_ATTN_DECODE_KEYS for the decode kernel);
 * with n_splits > 1 the partial results go to part and a second kernel combines them (the decode kernel: its last
 * CTA per tile and head). */
typedef struct cuda__attn_args {
    eng_tensor out, q;
    const void *k, *v; /* this layer's cache */
    eng_dtype kvdt;
    int32_t d_model, n_head, head_dim;
    const int32_t *tiles, *blocks;
    int32_t n_tiles, rows, n_splits, chunk;
    float *part; /* n_tiles * n_splits * n_head * rows * (head_dim + 2) floats when n_splits > 1 */
    int32_t *tickets; /* cuda__attention_decode with n_splits > 1: n_tiles * n_head counters, 0 before and after */
    float scale;
    /* cuda__attention_decode only, where rope_cs is set: RoPE and the KV store folded in (eng_rope_kv_attention),
     * for single-token sequences (a tile's row is its sequence's only one). q is then the q view of qkv rows (k and v
     * at +d_model and +2 d_model elements of the same row), unrotated; q and the newest key are rotated as
     * cuda__rope_kv_store rotates them (rope_cs: its (cos, sin) table, rotary_dim even), and the CTA whose chunk holds
     * the newest key stores that row's k and v at slot[row] first. k and v (the cache) are written then. */
    const float *rope_cs;
    int32_t rotary_dim;
    const int32_t *slot;
} cuda__attn_args;
/* The SIMT kernel (cuda_attn.cu): any kvdt, even head_dim <= 256. */
cudaError_t cuda__attention(cudaStream_t st, const cuda__attn_args *a);
/* The tensor-core kernel (cuda_attn_mma.cu) for prefill tiles: rows == CUDA_ATTN_TILE_ROWS, kvdt f16, head_dim
 * accepted by cuda__attention_mma_ok, k and v 16-byte aligned, d_model % 8 == 0, compute capability >= 8.0. Same
 * results layout and split plan as cuda__attention. */
cudaError_t cuda__attention_mma(cudaStream_t st, const cuda__attn_args *a);
int cuda__attention_mma_ok(int head_dim);
/* Whether the tensor-core kernel's code for the current device was compiled for sm_80+ (not an empty fallback). */
int cuda__attention_mma_code(void);
/* The decode kernel (cuda_attn.cu) for tiles of one row (rows == 1) on f16 caches, head_dim accepted by
 * cuda__attention_decode_ok, k and v 16-byte aligned, d_model % 8 == 0, compute capability >= 7.5. Key splits are
 * merged in the same launch (no combine kernel) through `part` and `tickets`. Chunks: any multiple of
 * CUDA_ATTN_DECODE_KEYS. */
#define CUDA_ATTN_DECODE_KEYS 32
cudaError_t cuda__attention_decode(cudaStream_t st, const cuda__attn_args *a);
int cuda__attention_decode_ok(int head_dim);
/* The second kernel of a split launch (both kernels use it): merges part into out. */
cudaError_t cuda__attention_combine(cudaStream_t st, const cuda__attn_args *a);
/* Floats of `part` one launch needs. */
size_t cuda__attention_part_floats(const cuda__attn_args *a);

/* Dynamic shared memory the decode kernel needs at head_dim (cuda.c checks it against the device's opt-in limit:
 * 6B's and 16B's 256 need ~68 KiB, more than Turing's 64). */
size_t cuda__attention_decode_smem(int head_dim);

/* out[r] (device) = the samp_top summary of logits row r over ids < n_valid, sum_t with inv_t[r] (0: none) from
 * inv_t (device) or, when that is NULL, inv_t_host (up to CUDA_TOP_INV_ARGS rows, passed as an argument; NULL: none)
 * (cuda_sample.cu). work: cuda__logits_top_work bytes of device memory (16-byte aligned); counters: 2 * rows ints,
 * zero before the launch and left zero by it. */
#define CUDA_TOP_INV_ARGS 64
size_t cuda__logits_top_work(int64_t rows, int32_t n_valid);
cudaError_t cuda__logits_top(cudaStream_t st, eng_tensor logits, int32_t n_valid, const float *inv_t,
                             const float *inv_t_host, void *work, int32_t *counters, samp_top *out);

#ifdef __cplusplus
}
#endif

#endif
