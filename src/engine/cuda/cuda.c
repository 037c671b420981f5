/* cuda.c - the CUDA backend: device and stream, memory, host transfers, errors, and the ops other than matmul
 * (cuda_matmul.c). Kernels live in the .cu files (cuda_kern.h); this file only validates, uploads the small host
 * arrays an op needs and launches.
 *
 * DESIGN
 * - One non-blocking stream per backend (and a side stream for concurrent branches, cuda_branch.c: ops issue to
 *   b->stream, whichever is current); every op only enqueues, and the host waits in exactly two places:
 *   reading a tensor back (eng_tensor_read_f32: the logits) and uploading weights. So a forward pass runs ahead
 *   of the GPU until its logits are read.
 * - Ops receive host arrays (token ids, positions, the batch's block tables). They are packed into int32 arrays,
 *   looked up by content in a small cache of device copies, and uploaded through a pinned ring only when new: a
 *   forward pass uploads each once, not once per layer, and never waits for the upload. Inside a step
 *   (cuda_graph.c) the step's arrays are already on the device at fixed addresses and the ops use those.
 * - Errors: every CUDA and cuBLAS status is checked. Out-of-memory returns ERR_NOMEM and leaves the backend usable;
 *   anything else is sticky (a kernel fault poisons the context): the backend records the first message, returns
 *   ERR_CUDA from every later op, and eng_backend_status reports it so the server can mark the engine unhealthy.
 *   Nothing here aborts.
 * - Activations follow the weights: f32 checkpoints run in f32 (exact parity with ref), f16/bf16 in that dtype
 *   with f32 accumulation everywhere (cuBLAS compute type, LayerNorm statistics, softmax). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cpu/cpu_impl.h" /* cpu__rope_angle: the RoPE table must match ref.c bit for bit */
#include "cuda_impl.h"

/* Matmuls of at most this many rows on half weights use the decode GEMV when SUGGESTD_CUDA_GEMV is unset: only
 * batch-1 decode. On an H100 cuBLAS wins from two rows up (2B decode at context 128, batch 2/4/8: 3.05/3.10/3.25 ms
 * on cuBLAS, 3.34/4.21/7.68 on the GEMV; NOTES.md v7). SUGGESTD_CUDA_GEMV=0 sends half weights to cuBLAS, =N up to
 * CUDA_GEMV_MAX_ROWS uses the GEMV up to N rows (the parity test sets 8 to cover every row count). */
#define CUDA_GEMV_DEFAULT 1

typedef struct cuda_kv {
    eng_kv_base base;
    void *k, *v; /* [n_layer][n_blocks][ENG_KV_BLOCK][d_model] of base.dtype, device */
} cuda_kv;

/* ---- errors ---------------------------------------------------------------------------------------------------- */

err cuda__capture_refuse(cuda_backend *b) {
    b->capture_broken = 1;
    return ERR_UNSUPPORTED;
}

/* During a capture nothing executes, so a failure there is the capture's: it is dropped and the ops run again
 * directly, where a real fault shows (and turns sticky). */
err cuda__fail(cuda_backend *b, cudaError_t e, const char *what) {
    if (b->capturing) {
        (void)cudaGetLastError();
        return cuda__capture_refuse(b);
    }
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        return ERR_NOMEM;
    }
    if (!b->sticky) {
        b->sticky = ERR_CUDA;
        snprintf(b->msg, sizeof(b->msg), "cuda:%d: %s: %s (%s)", b->device, what, cudaGetErrorString(e),
                 cudaGetErrorName(e));
    }
    return ERR_CUDA;
}

err cuda__fail_blas(cuda_backend *b, cublasStatus_t s, const char *what) {
    if (b->capturing) return cuda__capture_refuse(b);
    if (s == CUBLAS_STATUS_ALLOC_FAILED) return ERR_NOMEM;
    if (!b->sticky) {
        b->sticky = ERR_CUDA;
        snprintf(b->msg, sizeof(b->msg), "cuda:%d: %s: %s", b->device, what, cublasGetStatusString(s));
    }
    return ERR_CUDA;
}

static err cuda_status(const eng_backend *be, errbuf *eb) {
    const cuda_backend *b = (const cuda_backend *)be;
    if (!b->sticky) return ERR_OK;
    return errbuf_set(eb, b->sticky, "%s", b->msg);
}

/* The CUDA runtime's current device is per host thread; the engine may be driven from a thread other than the one
 * that created it, so every entry point selects the backend's device (a no-op when it already is current). */
static _Thread_local int tls_device = -1;

err cuda__enter(cuda_backend *b) {
    if (b->sticky) return b->sticky;
    if (tls_device != b->device) {
        CUDA_CHECK(b, cudaSetDevice(b->device));
        tls_device = b->device;
    }
    return ERR_OK;
}

#define ENTER(b)                                                                                                     \
    do {                                                                                                             \
        err rc_ = cuda__enter(b);                                                                                    \
        if (rc_ != ERR_OK) return rc_;                                                                               \
    } while (0)

/* ---- scratch and uploads --------------------------------------------------------------------------------------- */

err cuda__scratch(cuda_backend *b, int i, size_t bytes, void **out) {
    /* one set of scratch buffers, ordered by the main stream: an op on the side branch using one would race the main
     * branch's (attention's partials are scratch 0); no op forward.c puts there needs any */
    if (b->br.state == 1) return ERR_UNSUPPORTED;
    if (bytes > b->scratch_cap[i]) {
        if (b->capturing) return cuda__capture_refuse(b);
        b->epoch++; /* graphs holding the old buffer are stale */
        /* cudaFree waits for the device, so kernels still reading the old buffer finish first */
        if (b->scratch[i]) CUDA_CHECK(b, cudaFree(b->scratch[i]));
        b->scratch[i] = NULL;
        b->scratch_cap[i] = 0;
        size_t cap = bytes < ((size_t)1 << 20) ? (size_t)1 << 20 : bytes + bytes / 4;
        CUDA_CHECK(b, cudaMalloc(&b->scratch[i], cap));
        b->scratch_cap[i] = cap;
    }
    *out = b->scratch[i];
    return ERR_OK;
}

/* Asynchronous host -> device copy of n bytes through the pinned ring. A region is reused only after a stream
 * synchronize, so a pending copy never reads overwritten bytes. */
err cuda__upload(cuda_backend *b, void *dev, const void *src, size_t n) {
    if (b->capturing) return cuda__capture_refuse(b); /* would bake this step's pinned bytes into the graph */
    if (b->br.state == 1) return ERR_UNSUPPORTED;     /* the meta cache's slots are ordered by the main stream */
    const size_t need = (n + 255) & ~(size_t)255;
    if (b->pinned_off + need > b->pinned_cap) {
        CUDA_CHECK(b, cudaStreamSynchronize(b->br.main)); /* both branches' copies */
        if (b->br.side) CUDA_CHECK(b, cudaStreamSynchronize(b->br.side));
        b->pinned_off = 0;
        if (need > b->pinned_cap) {
            if (b->pinned) CUDA_CHECK(b, cudaFreeHost(b->pinned));
            b->pinned = NULL;
            b->pinned_cap = 0;
            size_t cap = need > ((size_t)1 << 20) ? need : (size_t)1 << 20;
            CUDA_CHECK(b, cudaMallocHost((void **)&b->pinned, cap));
            b->pinned_cap = cap;
        }
    }
    unsigned char *p = b->pinned + b->pinned_off;
    memcpy(p, src, n);
    b->pinned_off += need;
    CUDA_CHECK(b, cudaMemcpyAsync(dev, p, n, cudaMemcpyHostToDevice, b->stream));
    return ERR_OK;
}

/* Device copy of ints[0..n): found by content among the recent uploads, else uploaded into the oldest slot. */
static err meta_get(cuda_backend *b, const int32_t *ints, size_t n, const int32_t **out) {
    for (int i = 0; i < CUDA_META_SLOTS; i++) {
        cuda_meta *m = &b->meta[i];
        if (m->dev && m->n == n && !memcmp(m->host, ints, n * sizeof(int32_t))) {
            *out = m->dev;
            return ERR_OK;
        }
    }
    cuda_meta *m = &b->meta[b->meta_next];
    b->meta_next = (b->meta_next + 1) % CUDA_META_SLOTS;
    if (n > m->cap || !m->dev) {
        size_t cap = n < 1024 ? 1024 : n + n / 2;
        int32_t *h = xmalloc_array(cap, sizeof(int32_t));
        if (!h) return ERR_NOMEM;
        xfree(m->host);
        m->host = h;
        m->n = 0;
        if (m->dev) CUDA_CHECK(b, cudaFree(m->dev));
        m->dev = NULL;
        m->cap = 0;
        CUDA_CHECK(b, cudaMalloc((void **)&m->dev, cap * sizeof(int32_t)));
        m->cap = cap;
    }
    m->n = 0; /* invalid until the upload is queued */
    err rc = cuda__upload(b, m->dev, ints, n * sizeof(int32_t));
    if (rc != ERR_OK) return rc;
    memcpy(m->host, ints, n * sizeof(int32_t));
    m->n = n;
    *out = m->dev;
    return ERR_OK;
}

/* Device copy of a per-step host array: the open step's fixed copy when ints is one of its arrays (by address),
 * else the meta cache. A capture may only use the step's: a meta slot is overwritten by later uploads. */
static err step_ints(cuda_backend *b, const int32_t *ints, size_t n, const int32_t **out) {
    const cuda_step *s = b->step;
    if (s && ints == s->tokens && n == (size_t)s->n_rows) *out = s->d_tokens;
    else if (s && ints == s->positions && n == (size_t)s->n_rows) *out = s->d_positions;
    else if (s && s->n_logits && ints == s->logit_rows && n == (size_t)s->n_logits) *out = s->d_logit_rows;
    else if (b->capturing) return cuda__capture_refuse(b);
    else return meta_get(b, ints, n, out);
    return ERR_OK;
}

static err hbuf_reserve(cuda_backend *b, size_t n) {
    if (n <= b->hbuf_cap) return ERR_OK;
    size_t cap = n + n / 2 + 256;
    int32_t *p = xrealloc(b->hbuf, cap * sizeof(int32_t));
    if (!p) return ERR_NOMEM;
    b->hbuf = p;
    b->hbuf_cap = cap;
    return ERR_OK;
}

/* ---- backend --------------------------------------------------------------------------------------------------- */

static void cuda_destroy(eng_backend *be) {
    cuda_backend *b = (cuda_backend *)be;
    if (!b) return;
    if (cudaSetDevice(b->device) == cudaSuccess) {
        tls_device = b->device;
        cuda__branch_free(b); /* first: back on the main stream if a failure left a branch open */
        if (b->stream) (void)cudaStreamSynchronize(b->stream);
        for (int i = 0; i < CUDA_META_SLOTS; i++) {
            if (b->meta[i].dev) (void)cudaFree(b->meta[i].dev);
            xfree(b->meta[i].host);
        }
        for (int i = 0; i < 3; i++)
            if (b->scratch[i]) (void)cudaFree(b->scratch[i]);
        if (b->rope_cs) (void)cudaFree(b->rope_cs);
        if (b->attn_tickets.p) (void)cudaFree(b->attn_tickets.p);
        if (b->persist_bar.p) (void)cudaFree(b->persist_bar.p);
        if (b->top_counts.p) (void)cudaFree(b->top_counts.p);
        if (b->pinned) (void)cudaFreeHost(b->pinned);
        if (b->blas) (void)cublasDestroy(b->blas);
        if (b->blas_ws) (void)cudaFree(b->blas_ws);
        if (b->stream) (void)cudaStreamDestroy(b->stream);
    }
    xfree(b->hbuf);
    xfree(b);
}

/* `device` arrives through eng_backend_create's n_threads argument ("cuda:N"; plain "cuda" is device 0). */
static err cuda_create(int device, eng_backend **out, errbuf *eb) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return errbuf_set(eb, ERR_UNSUPPORTED, "cuda: no usable NVIDIA GPU (%s); use --backend cpu",
                          e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
    }
    if (device < 0 || device >= n)
        return errbuf_set(eb, ERR_INVALID, "cuda:%d: no such device (%d GPU%s present)", device, n, n == 1 ? "" : "s");
    cuda_backend *b = xcalloc(1, sizeof(*b));
    if (!b) return errbuf_set(eb, ERR_NOMEM, "cuda backend: out of memory");
    b->base.ops = &cuda__backend_ops;
    b->device = device;
    struct cudaDeviceProp prop;
    err rc = cuda__enter(b);
    if (rc == ERR_OK && (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) rc = cuda__fail(b, e, "cudaGetDeviceProperties");
    if (rc == ERR_OK && (e = cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking)) != cudaSuccess)
        rc = cuda__fail(b, e, "cudaStreamCreate");
    if (rc == ERR_OK) {
        cublasStatus_t s = cublasCreate(&b->blas);
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(b->blas, b->stream);
        /* f32 GEMMs stay f32: no TF32 behind our back */
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(b->blas, CUBLAS_DEFAULT_MATH);
        if (s != CUBLAS_STATUS_SUCCESS) rc = cuda__fail_blas(b, s, "cublasCreate");
    }
    /* our own workspace (after cublasSetStream, which resets it): cuBLAS then never allocates inside a capture */
    if (rc == ERR_OK && (e = cudaMalloc(&b->blas_ws, CUDA_BLAS_WS)) != cudaSuccess)
        rc = cuda__fail(b, e, "cudaMalloc (cuBLAS workspace)");
    if (rc == ERR_OK) {
        cublasStatus_t s = cublasSetWorkspace(b->blas, b->blas_ws, CUDA_BLAS_WS);
        if (s != CUBLAS_STATUS_SUCCESS) rc = cuda__fail_blas(b, s, "cublasSetWorkspace");
    }
    if (rc == ERR_OK) rc = cuda__branch_init(b);
    if (rc != ERR_OK) {
        errbuf_set(eb, rc, "cuda:%d: %s", device, b->sticky ? b->msg : "out of memory");
        cuda_destroy((eng_backend *)b);
        return rc;
    }
    b->n_sms = prop.multiProcessorCount;
    {   /* the decode GEMV (cuda_gemv.cu) is on by default for one row: faster than cuBLAS at batch-1 decode on an
         * H100 (NOTES.md "v6"); the int8 and fused-GELU paths use it up to CUDA_GEMV_MAX_ROWS whatever this says */
        const char *g = getenv("SUGGESTD_CUDA_GEMV");
        const long n = g && g[0] ? strtol(g, NULL, 10) : CUDA_GEMV_DEFAULT;
        b->gemv = (int)(n < 0 ? 0 : n > CUDA_GEMV_MAX_ROWS ? CUDA_GEMV_MAX_ROWS : n);
        const char *f = getenv("SUGGESTD_CUDA_LN_FOLD"); /* =0: LayerNorm + GEMV as two launches (NOTES.md v8) */
        b->ln_fold = !(f && f[0] == '0');
    }
    {   /* SUGGESTD_CUDA_ATTN_MMA=0: prefill attention on the SIMT kernel (benchmarks compare both in one run); the
         * tensor-core kernel needs sm_80 (cp.async, m16n8k16) */
        const char *m = getenv("SUGGESTD_CUDA_ATTN_MMA");
        b->attn_mma = !(m && m[0] == '0') && prop.major >= 8 && cuda__attention_mma_code();
    }
    {   /* SUGGESTD_CUDA_ATTN_DECODE=0: decode rows on the SIMT kernel + combine (the same-run "before"); the split
         * plan's CTAs per SM can be tried with SUGGESTD_CUDA_ATTN_SPLIT_CTAS (NOTES.md v8) */
        const char *d = getenv("SUGGESTD_CUDA_ATTN_DECODE"), *c = getenv("SUGGESTD_CUDA_ATTN_SPLIT_CTAS");
        b->attn_decode = !(d && d[0] == '0');
        b->smem_optin = prop.sharedMemPerBlockOptin; /* the decode kernel's stages must fit (Turing: 64 KiB) */
        /* =0: RoPE and the KV store as two launches (one launch saves 0.03-0.04 ms a token: NOTES.md v11) */
        const char *rk = getenv("SUGGESTD_CUDA_ROPE_KV");
        b->rope_kv = !(rk && rk[0] == '0');
        /* =0: eng_rope_kv_attention as the two ops also for decode batches (NOTES.md v13) */
        const char *af = getenv("SUGGESTD_CUDA_ATTN_FOLD");
        b->attn_fold = !(af && af[0] == '0');
        b->attn_split_ctas = c && atoi(c) > 0 ? atoi(c) : 0; /* 0: by the batch (plan_decode_splits) */
    }
    snprintf(b->desc, sizeof(b->desc), "cuda:%d: %s, sm_%d%d, %d SMs, %.1f GiB", device, prop.name, prop.major,
             prop.minor, prop.multiProcessorCount, (double)prop.totalGlobalMem / (1024.0 * 1024 * 1024));
    *out = (eng_backend *)b;
    return ERR_OK;
}

/* cuda_kern.h. Per device (two backends may drive different cards), cached atomically as the GEMV's occupancy is
 * (engine threads may ask at once): 0 not asked yet, 1 off, 2 on. Asked at every launch: the device this thread's
 * ops last selected (tls_device) saves a runtime call there. */
int cuda__pdl_on(void) {
    static int cache[64];
    int dev = tls_device, v, major = 0;
    if (dev < 0 && cudaGetDevice(&dev) != cudaSuccess) return 0;
    v = dev < 64 ? __atomic_load_n(&cache[dev], __ATOMIC_RELAXED) : 0;
    if (!v) {
        const char *e = getenv("SUGGESTD_CUDA_PDL"); /* =0: every launch waits for the one before (NOTES.md v12) */
        /* the device must have it, and the code running must have been built for it: a build for sm_80 only runs
         * on an H100 as PTX compiled at load, where the waits are compiled out */
        v = (e && e[0] == '0') ||
                    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
                    major < 9 || !cuda__pdl_code()
                ? 1
                : 2;
        if (dev < 64) __atomic_store_n(&cache[dev], v, __ATOMIC_RELAXED);
    }
    return v == 2;
}

static const char *cuda_describe(const eng_backend *be) { return ((const cuda_backend *)be)->desc; }

/* f32 checkpoints keep exact f32 math; half checkpoints keep half activations (as HF does in fp16/bf16 mode). */
static eng_dtype cuda_act_dtype(eng_dtype weights) { return weights; }

/* ---- memory ---------------------------------------------------------------------------------------------------- */

static err cuda_tensor_alloc(eng_backend *be, eng_dtype dtype, int64_t rows, int64_t cols, eng_tensor *out) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    size_t esz = eng_dtype_size(dtype);
    if (cols && (uint64_t)rows > SIZE_MAX / 2 / esz / (uint64_t)cols) return ERR_NOMEM;
    size_t bytes = (size_t)rows * (size_t)cols * esz;
    void *p = NULL;
    CUDA_CHECK(b, cudaMalloc(&p, bytes ? bytes : 256));
    *out = (eng_tensor){.data = p, .dtype = dtype, .rows = rows, .cols = cols, .stride = cols};
    return ERR_OK;
}

static void cuda_tensor_free(eng_backend *be, eng_tensor *t) {
    cuda_backend *b = (cuda_backend *)be;
    if (tls_device != b->device && cudaSetDevice(b->device) == cudaSuccess) tls_device = b->device;
    cudaError_t e = cudaFree(t->data);
    if (e != cudaSuccess) cuda__fail(b, e, "cudaFree");
}

/* Copies: the host buffer may be freed as soon as this returns. */
static err cuda_weight_from_host(eng_backend *be, const void *host, eng_dtype dtype, int64_t rows, int64_t cols,
                                 eng_tensor *out) {
    cuda_backend *b = (cuda_backend *)be;
    size_t bytes;
    if (dtype == ENG_Q8) { /* int8 rows, padding, per-row scales: one block (eng.h "int8 weights") */
        ENTER(b);
        bytes = eng_q8_bytes(rows, cols);
        void *p = NULL;
        CUDA_CHECK(b, cudaMalloc(&p, bytes));
        *out = (eng_tensor){.data = p, .dtype = ENG_Q8, .rows = rows, .cols = cols, .stride = cols};
    } else {
        err rc = cuda_tensor_alloc(be, dtype, rows, cols, out);
        if (rc != ERR_OK) return rc;
        bytes = (size_t)rows * (size_t)cols * eng_dtype_size(dtype);
    }
    CUDA_CHECK(b, cudaMemcpyAsync(out->data, host, bytes, cudaMemcpyHostToDevice, b->stream));
    CUDA_CHECK(b, cudaStreamSynchronize(b->stream));
    return ERR_OK;
}

static err cuda_read_f32(eng_backend *be, const eng_tensor *t, float *dst) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    if (t->rows == 0 || t->cols == 0) return ERR_OK;
    eng_tensor src = *t;
    if (t->dtype != ENG_F32) {
        void *p;
        err rc = cuda__scratch(b, 0, (size_t)t->rows * (size_t)t->cols * 4, &p);
        if (rc != ERR_OK) return rc;
        src = (eng_tensor){.data = p, .dtype = ENG_F32, .rows = t->rows, .cols = t->cols, .stride = t->cols};
        CUDA_CHECK(b, cuda__copy_rows(b->stream, src, *t, NULL, t->rows));
    }
    CUDA_CHECK(b, cudaMemcpy2DAsync(dst, (size_t)t->cols * 4, src.data, (size_t)src.stride * 4, (size_t)t->cols * 4,
                                    (size_t)t->rows, cudaMemcpyDeviceToHost, b->stream));
    CUDA_CHECK(b, cudaStreamSynchronize(b->stream));
    return ERR_OK;
}

static err cuda_write_f32(eng_backend *be, eng_tensor *t, const float *src) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    if (t->rows == 0 || t->cols == 0) return ERR_OK;
    void *p;
    err rc = cuda__scratch(b, 1, (size_t)t->rows * (size_t)t->cols * 4, &p);
    if (rc != ERR_OK) return rc;
    eng_tensor s = {.data = p, .dtype = ENG_F32, .rows = t->rows, .cols = t->cols, .stride = t->cols};
    CUDA_CHECK(b, cudaMemcpyAsync(p, src, (size_t)t->rows * (size_t)t->cols * 4, cudaMemcpyHostToDevice, b->stream));
    CUDA_CHECK(b, cuda__copy_rows(b->stream, *t, s, NULL, t->rows));
    CUDA_CHECK(b, cudaStreamSynchronize(b->stream)); /* src may change once we return */
    return ERR_OK;
}

/* ---- element ops ----------------------------------------------------------------------------------------------- */

static err cuda_embed(eng_backend *be, eng_tensor *y, const eng_tensor *wte, const int32_t *tokens, int32_t n_rows) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    if (n_rows == 0) return ERR_OK;
    const int32_t *d_tok;
    err rc = step_ints(b, tokens, (size_t)n_rows, &d_tok);
    if (rc != ERR_OK) return rc;
    CUDA_CHECK(b, cuda__copy_rows(b->stream, eng_tensor_rows(*y, 0, n_rows), *wte, d_tok, n_rows));
    return ERR_OK;
}

static err cuda_layernorm(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                          const eng_tensor *bb, float eps) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    CUDA_CHECK(b, cuda__layernorm(b->stream, *y, *x, *w, *bb, eps));
    return ERR_OK;
}

static err cuda_matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                       const eng_tensor *bias, int accumulate) {
    ENTER((cuda_backend *)be);
    return cuda__matmul(be, y, x, w, bias, accumulate);
}

static err cuda_matmul_gelu(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                            const eng_tensor *bias, int64_t gelu_cols) {
    ENTER((cuda_backend *)be);
    return cuda__matmul_gelu(be, y, x, w, bias, gelu_cols);
}

static err cuda_gelu(eng_backend *be, eng_tensor *x) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    CUDA_CHECK(b, cuda__gelu(b->stream, *x));
    return ERR_OK;
}

static err cuda_add(eng_backend *be, eng_tensor *y, const eng_tensor *x) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    CUDA_CHECK(b, cuda__add(b->stream, *y, *x));
    return ERR_OK;
}

/* (cos, sin) of every position < npos and pair, computed exactly as ref.c does, uploaded once per rotary_dim and
 * regrown (rarely) when a position beyond the table shows up. */
static err rope_table(cuda_backend *b, int32_t rd, int32_t max_pos) {
    if (b->rope_cs && b->rope_rd == rd && max_pos < b->rope_npos) return ERR_OK;
    if (b->capturing) return cuda__capture_refuse(b);
    int32_t npos = 2048;
    while (npos <= max_pos) npos *= 2;
    const int32_t half = rd / 2;
    float *h = xmalloc_array((size_t)npos * (size_t)half * 2, sizeof(float));
    if (!h) return ERR_NOMEM;
    for (int32_t p = 0; p < npos; p++)
        for (int32_t i = 0; i < half; i++) {
            float a = cpu__rope_angle(p, i, rd);
            h[((size_t)p * half + i) * 2] = cosf(a);
            h[((size_t)p * half + i) * 2 + 1] = sinf(a);
        }
    b->epoch++; /* graphs holding the old table are stale */
    err rc = ERR_OK;
    cudaError_t e = cudaSuccess;
    if (b->rope_cs) e = cudaFree(b->rope_cs); /* waits for kernels using the old table */
    b->rope_cs = NULL;
    b->rope_npos = 0;
    size_t bytes = (size_t)npos * (size_t)half * 2 * sizeof(float);
    if (e == cudaSuccess) e = cudaMalloc((void **)&b->rope_cs, bytes);
    if (e == cudaSuccess) e = cudaMemcpyAsync(b->rope_cs, h, bytes, cudaMemcpyHostToDevice, b->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(b->stream);
    if (e != cudaSuccess) rc = cuda__fail(b, e, "RoPE table upload");
    xfree(h);
    if (rc != ERR_OK) return rc;
    b->rope_rd = rd;
    b->rope_npos = npos;
    return ERR_OK;
}

/* The (cos, sin) table up to the rows' largest position, and the positions on the device. */
static err rope_prep(cuda_backend *b, const int32_t *positions, int64_t rows, int32_t rotary_dim,
                     const int32_t **d_pos) {
    int32_t max_pos = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (positions[r] < 0 || positions[r] >= (1 << 24)) return ERR_INVALID;
        if (positions[r] > max_pos) max_pos = positions[r];
    }
    err rc = rope_table(b, rotary_dim, max_pos);
    return rc != ERR_OK ? rc : step_ints(b, positions, (size_t)rows, d_pos);
}

static err cuda_rope(eng_backend *be, eng_tensor *x, const int32_t *positions, eng_attn_shape s) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    if (x->rows == 0 || s.rotary_dim == 0) return ERR_OK;
    const int32_t *d_pos = NULL;
    err rc = rope_prep(b, positions, x->rows, s.rotary_dim, &d_pos);
    if (rc != ERR_OK) return rc;
    CUDA_CHECK(b, cuda__rope(b->stream, *x, d_pos, b->rope_cs, s));
    return ERR_OK;
}

/* ---- KV cache and attention ------------------------------------------------------------------------------------ */

static err cuda_kv_create(eng_backend *be, int32_t n_layer, int32_t d_model, int32_t n_blocks, eng_dtype dtype,
                          eng_kv **out) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    if (dtype != ENG_F32 && dtype != ENG_F16) return ERR_UNSUPPORTED;
    size_t n = (size_t)n_layer * (size_t)n_blocks * ENG_KV_BLOCK * (size_t)d_model, bytes = n * eng_dtype_size(dtype);
    cuda_kv *kv = xcalloc(1, sizeof(*kv));
    if (!kv) return ERR_NOMEM;
    kv->base = (eng_kv_base){.n_layer = n_layer, .d_model = d_model, .n_blocks = n_blocks, .dtype = dtype,
                             .bytes = 2 * bytes};
    cudaError_t e = cudaMalloc(&kv->k, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&kv->v, bytes);
    /* zeroed like ref's, so a read of a never-written slot is deterministic */
    if (e == cudaSuccess) e = cudaMemsetAsync(kv->k, 0, bytes, b->stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(kv->v, 0, bytes, b->stream);
    if (e != cudaSuccess) {
        err rc = cuda__fail(b, e, "KV cache allocation");
        if (kv->k) (void)cudaFree(kv->k);
        if (kv->v) (void)cudaFree(kv->v);
        xfree(kv);
        return rc;
    }
    *out = (eng_kv *)kv;
    return ERR_OK;
}

static void cuda_kv_destroy(eng_backend *be, eng_kv *kv_) {
    cuda_backend *b = (cuda_backend *)be;
    cuda_kv *kv = (cuda_kv *)kv_;
    if (tls_device != b->device && cudaSetDevice(b->device) == cudaSuccess) tls_device = b->device;
    cudaError_t e = cudaFree(kv->k);
    if (e == cudaSuccess) e = cudaFree(kv->v);
    if (e != cudaSuccess) cuda__fail(b, e, "cudaFree (KV cache)");
    xfree(kv);
}

#define ATTN_TILE_ROWS CUDA_ATTN_TILE_ROWS /* the layout's tiles64 (cuda_impl.h) */

void cuda__layout_count(const eng_batch *batch, cuda__layout *lo) {
    int64_t total_blocks = 0, n64 = 0, n1 = 0;
    for (int32_t s = 0; s < batch->n_seqs; s++) {
        const eng_seq *q = &batch->seqs[s];
        total_blocks += q->n_blocks;
        if (q->n_tokens > CUDA_ATTN_ROW_TILES_MAX) n64 += (q->n_tokens + ATTN_TILE_ROWS - 1) / ATTN_TILE_ROWS;
        else n1 += q->n_tokens;
    }
    memset(lo, 0, sizeof(*lo));
    lo->n_rows = batch->n_rows, lo->total_blocks = lo->blocks_cap = (int32_t)total_blocks;
    lo->n64 = (int32_t)n64, lo->n1 = (int32_t)n1;
}

size_t cuda__layout_ints(const cuda__layout *lo) {
    return 4 + (size_t)lo->n_rows + (size_t)lo->blocks_cap + 4 * (size_t)(lo->n64 + lo->n1);
}

void cuda__layout_fill(const eng_batch *batch, cuda__layout *lo, int32_t *h) {
    int32_t *slot = h + 4, *blocks = slot + lo->n_rows, *t64 = blocks + lo->blocks_cap, *t1 = t64 + 4 * lo->n64;
    h[0] = lo->n_rows, h[1] = lo->blocks_cap, h[2] = lo->n64, h[3] = lo->n1;
    lo->max_keys64 = lo->max_keys1 = 0;
    int32_t off = 0, i64 = 0, i1 = 0;
    for (int32_t s = 0; s < batch->n_seqs; s++) {
        const eng_seq *q = &batch->seqs[s];
        memcpy(blocks + off, q->blocks, (size_t)q->n_blocks * sizeof(int32_t));
        for (int32_t t = 0; t < q->n_tokens; t++) {
            int32_t p = q->pos + t;
            slot[q->row0 + t] = q->blocks[p / ENG_KV_BLOCK] * ENG_KV_BLOCK + p % ENG_KV_BLOCK;
        }
        const int tiled = q->n_tokens > CUDA_ATTN_ROW_TILES_MAX;
        const int32_t per = tiled ? ATTN_TILE_ROWS : 1;
        for (int32_t t = 0; t < q->n_tokens; t += per) {
            int32_t nr = q->n_tokens - t < per ? q->n_tokens - t : per;
            int32_t *e = tiled ? t64 + 4 * i64++ : t1 + 4 * i1++;
            e[0] = q->row0 + t, e[1] = nr, e[2] = q->pos + t, e[3] = off;
            int32_t keys = q->pos + t + nr;
            if (tiled && keys > lo->max_keys64) lo->max_keys64 = keys;
            if (!tiled && keys > lo->max_keys1) lo->max_keys1 = keys;
        }
        off += q->n_blocks;
    }
    for (int32_t i = off; i < lo->blocks_cap; i++) blocks[i] = 0; /* unused room: defined bytes */
}

int32_t cuda__keys_bucket(int32_t keys) {
    int32_t b = 128;
    while (b < keys && b < (1 << 30)) b *= 2;
    return b;
}

/* The device layout of batch: the open step's (already on the device), else built and found in / sent to the meta
 * cache: kv_store and attention of every layer ask for the same one, so a forward uploads it once. */
static err batch_layout(cuda_backend *b, const eng_batch *batch, cuda__layout *lo) {
    if (b->step && batch == b->step->batch) {
        *lo = b->step->lo;
        return ERR_OK;
    }
    if (b->capturing) return cuda__capture_refuse(b);
    cuda__layout_count(batch, lo);
    size_t n = cuda__layout_ints(lo);
    err rc = hbuf_reserve(b, n);
    if (rc != ERR_OK) return rc;
    cuda__layout_fill(batch, lo, b->hbuf);
    return meta_get(b, b->hbuf, n, &lo->dev);
}

/* Byte offset of layer's K (or V) cache in the pool. */
static size_t kv_layer_off(const cuda_kv *kv, int32_t layer) {
    return (size_t)layer * kv->base.n_blocks * ENG_KV_BLOCK * kv->base.d_model * eng_dtype_size(kv->base.dtype);
}

static err cuda_kv_store(eng_backend *be, eng_kv *kv_, int32_t layer, const eng_tensor *k, const eng_tensor *v,
                         const eng_batch *batch) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    cuda_kv *kv = (cuda_kv *)kv_;
    cuda__layout lo;
    err rc = batch_layout(b, batch, &lo);
    if (rc != ERR_OK) return rc;
    size_t layer_off = kv_layer_off(kv, layer);
    CUDA_CHECK(b, cuda__kv_store(b->stream, (char *)kv->k + layer_off, (char *)kv->v + layer_off, kv->base.dtype, *k,
                                 *v, lo.dev + 4));
    return ERR_OK;
}

/* RoPE + KV store in one launch (the default; SUGGESTD_CUDA_ROPE_KV=0: off); otherwise, or for an odd head_dim or no
 * rotary dims, the two ops. */
static err cuda_rope_kv_store(eng_backend *be, eng_tensor *qkv, eng_kv *kv_, int32_t layer, const eng_batch *batch,
                              eng_attn_shape s) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    const int64_t D = (int64_t)s.n_head * s.head_dim;
    eng_tensor k = eng_tensor_cols(*qkv, D, D), v = eng_tensor_cols(*qkv, 2 * D, D);
    if (!b->rope_kv || s.head_dim % 2 || s.rotary_dim == 0) {
        eng_tensor qk = eng_tensor_cols(*qkv, 0, 2 * D);
        err rc = cuda_rope(be, &qk, batch->positions, (eng_attn_shape){2 * s.n_head, s.head_dim, s.rotary_dim});
        return rc != ERR_OK ? rc : cuda_kv_store(be, kv_, layer, &k, &v, batch);
    }
    if (qkv->rows == 0) return ERR_OK;
    cuda_kv *kv = (cuda_kv *)kv_;
    const int32_t *d_pos = NULL;
    err rc = rope_prep(b, batch->positions, qkv->rows, s.rotary_dim, &d_pos);
    cuda__layout lo;
    if (rc == ERR_OK) rc = batch_layout(b, batch, &lo);
    if (rc != ERR_OK) return rc;
    size_t layer_off = kv_layer_off(kv, layer);
    /* decode attention, which comes next, may launch at once and copy its old keys beside the GEMV before, where
     * that GEMV has issued all its weights already (its CTAs need no more room): 350M 0.59 -> 0.55 ms a token in the
     * late layout; at 2B (GEMV rings refilled) the early CTAs cost 0.2 ms (NOTES.md v16) */
    const int early = b->gemv_one_ring && cuda__pdl_on();
    CUDA_CHECK(b, cuda__rope_kv_store(b->stream, *qkv, d_pos, b->rope_cs, s, (char *)kv->k + layer_off,
                                      (char *)kv->v + layer_off, kv->base.dtype, lo.dev + 4, early));
    cuda__pdl_note(b, 0, early);
    return ERR_OK;
}

/* Splits a key budget into chunks so that blocks x heads x chunks fills the GPU about twice (blocks_per_tile: the
 * kernel's blocks per tile, 8 for the SIMT kernel on 64-row tiles). The budget is the launch's longest key range
 * rounded up (cuda__keys_bucket), not the positions themselves, so a step graph keeps its plan while the context
 * grows inside the budget: chunks past a tile's keys exit at once. */
static void plan_splits(const cuda_backend *b, cuda__attn_args *a, int32_t budget, int32_t blocks_per_tile) {
    const int64_t base = (int64_t)a->n_tiles * blocks_per_tile * a->n_head, want = 2 * (int64_t)b->n_sms;
    int64_t splits = base >= want ? 1 : (want + base - 1) / base;
    const int64_t max_splits = (budget + 127) / 128;
    if (splits > max_splits) splits = max_splits;
    if (splits < 1) splits = 1;
    int64_t chunk = (budget + splits - 1) / splits;
    chunk = (chunk + 127) / 128 * 128;
    a->chunk = (int32_t)chunk;
    a->n_splits = (int32_t)((budget + chunk - 1) / chunk);
}

/* The decode kernel's plan: chunks of CUDA_ATTN_DECODE_KEYS granules so that tiles x heads x chunks is about
 * attn_split_ctas CTAs per SM (4: a 2B step at context 1024 in 16 chunks of 64 keys, 512 CTAs, each copying its
 * 20 KB at once; fewer, larger chunks leave SMs with one CTA more than others, and each CTA's copy is one memory
 * round trip anyway). Many tiles (batched decode) need no split: each CTA then streams its keys through its
 * double-buffered stages. Like plan_splits, made for the key budget, not the positions.
 * A single sequence aims at 2 CTAs an SM unless SUGGESTD_CUDA_ATTN_SPLIT_CTAS says: it shares the SMs with fc_out's
 * GEMV on the side branch, and half the chunks measured faster at every shape (H100, ctx 1024: 350M 0.70 -> 0.67,
 * 2B 2.54 -> 2.51, 6B 5.95 -> 5.66 ms; without branches no slower: 0.72, 2.76, 5.87), while 8 sequences at ctx 1536
 * lost (4.68 -> 5.19 ms; NOTES.md v11). Measured through the variable; not yet run as the default. */
static void plan_decode_splits(const cuda_backend *b, cuda__attn_args *a, int32_t budget) {
    const int per_sm = b->attn_split_ctas > 0 ? b->attn_split_ctas : a->n_tiles == 1 ? 2 : 4;
    const int64_t g = CUDA_ATTN_DECODE_KEYS, base = (int64_t)a->n_tiles * a->n_head,
                  want = (int64_t)per_sm * b->n_sms;
    int64_t splits = base >= want ? 1 : (want + base - 1) / base;
    const int64_t max_splits = (budget + g - 1) / g;
    if (splits > max_splits) splits = max_splits;
    if (splits < 1) splits = 1;
    int64_t chunk = (budget + splits - 1) / splits;
    chunk = (chunk + g - 1) / g * g;
    a->chunk = (int32_t)chunk;
    a->n_splits = (int32_t)((budget + chunk - 1) / chunk);
}

err cuda__counters(cuda_backend *b, cuda_counters *c, size_t n, int in_graphs, int32_t **out) {
    if (n > c->cap) {
        if (b->capturing) return cuda__capture_refuse(b);
        if (in_graphs) b->epoch++; /* graphs holding the old buffer are stale */
        if (c->p) CUDA_CHECK(b, cudaFree(c->p)); /* waits for kernels using it */
        c->p = NULL;
        c->cap = 0;
        size_t cap = n < 4096 ? 4096 : n + n / 4;
        CUDA_CHECK(b, cudaMalloc((void **)&c->p, cap * sizeof(int32_t)));
        c->cap = cap;
        CUDA_CHECK(b, cudaMemsetAsync(c->p, 0, cap * sizeof(int32_t), b->stream));
    }
    *out = c->p;
    return ERR_OK;
}

/* Whether decode rows of this layer's cache can take the decode kernel (cuda_attn.cu). */
static int decode_kernel_ok(const cuda_backend *b, const cuda_kv *kv, size_t layer_off, int32_t head_dim) {
    return b->attn_decode && kv->base.dtype == ENG_F16 && cuda__attention_decode_ok(head_dim) &&
           cuda__attention_decode_smem(head_dim) + 1024 <= b->smem_optin && kv->base.d_model % 8 == 0 &&
           (uintptr_t)((const char *)kv->k + layer_off) % 16 == 0 &&
           (uintptr_t)((const char *)kv->v + layer_off) % 16 == 0;
}

/* eng_attention; fold: the RoPE + KV store folded into the decode kernel (cuda_rope_kv_attention checked that it
 * applies: every tile is a decode row, the decode kernel takes them, the RoPE table covers the positions), q being
 * qkv's q view. */
static err attention_run(cuda_backend *b, eng_tensor *out, const eng_tensor *q, const cuda_kv *kv, int32_t layer,
                         const eng_batch *batch, eng_attn_shape shape, int fold) {
    cuda__layout lo;
    err rc = batch_layout(b, batch, &lo);
    if (rc != ERR_OK) return rc;
    size_t layer_off = kv_layer_off(kv, layer);
    const int32_t *blocks = lo.dev + 4 + lo.n_rows;
    /* prefill tiles on an f16 cache: tensor cores (cuda_attn_mma.cu); the k/v checks hold for every cache this file
     * allocates (d_model = n_head * head_dim, head_dim % 16 == 0) but are cheap */
    const int mma = b->attn_mma && kv->base.dtype == ENG_F16 && cuda__attention_mma_ok(shape.head_dim) &&
                    kv->base.d_model % 8 == 0 && (uintptr_t)((const char *)kv->k + layer_off) % 16 == 0 &&
                    (uintptr_t)((const char *)kv->v + layer_off) % 16 == 0;
    /* decode rows on an f16 cache: the decode kernel (cuda_attn.cu), split merge included; same alignment needs */
    const int dec = decode_kernel_ok(b, kv, layer_off, shape.head_dim);
    int launched = 0;
    for (int pass = 0; pass < 2; pass++) {
        cuda__attn_args a = {
            .out = *out, .q = *q, .k = (const char *)kv->k + layer_off, .v = (const char *)kv->v + layer_off,
            .kvdt = kv->base.dtype, .d_model = kv->base.d_model, .n_head = shape.n_head,
            .head_dim = shape.head_dim, .blocks = blocks, .scale = 1.0f / sqrtf((float)shape.head_dim),
        };
        a.rows = pass == 0 ? ATTN_TILE_ROWS : 1;
        a.n_tiles = pass == 0 ? lo.n64 : lo.n1;
        a.tiles = blocks + lo.blocks_cap + (pass == 0 ? 0 : 4 * lo.n64);
        if (a.n_tiles == 0) continue;
        const int use_mma = pass == 0 && mma, use_dec = pass == 1 && dec;
        const int32_t budget = cuda__keys_bucket(pass == 0 ? lo.max_keys64 : lo.max_keys1);
        if (use_dec) plan_decode_splits(b, &a, budget);
        else plan_splits(b, &a, budget, pass == 0 && !use_mma ? ATTN_TILE_ROWS / 8 : 1);
        size_t pf = cuda__attention_part_floats(&a);
        if (pf) {
            void *p;
            rc = cuda__scratch(b, 0, pf * sizeof(float), &p);
            if (rc != ERR_OK) return rc;
            a.part = p;
        }
        if (use_dec && a.n_splits > 1) {
            rc = cuda__counters(b, &b->attn_tickets, (size_t)a.n_tiles * (size_t)a.n_head, 1, &a.tickets);
            if (rc != ERR_OK) return rc;
        }
        if (fold && use_dec)
            a.rope_cs = b->rope_cs, a.rotary_dim = shape.rotary_dim, a.slot = lo.dev + 4;
        if (use_mma) CUDA_CHECK(b, cuda__attention_mma(b->stream, &a));
        else if (use_dec) CUDA_CHECK(b, cuda__attention_decode(b->stream, &a));
        else CUDA_CHECK(b, cuda__attention(b->stream, &a));
        launched = 1;
    }
    /* these kernels (and the tensor-core one, launched without PDL) let the next launch only after their wait */
    if (launched) cuda__pdl_note(b, 0, 0);
    return ERR_OK;
}

static err cuda_attention(eng_backend *be, eng_tensor *out, const eng_tensor *q, const eng_kv *kv_, int32_t layer,
                          const eng_batch *batch, eng_attn_shape shape) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    if (shape.head_dim % 2 || shape.head_dim > 256) return ERR_UNSUPPORTED;
    return attention_run(b, out, q, (const cuda_kv *)kv_, layer, batch, shape, 0);
}

/* eng_layers_decode: one token of one sequence through every layer in one persistent kernel (cuda_persist.cu), for
 * models whose weight slices fit the SMs' shared memory (350M). */
static err cuda_layers_decode(eng_backend *be, eng_tensor *x, eng_tensor *u, const eng_fused_layer *ls,
                              int32_t n_layer, int64_t F, eng_kv *kv_, const eng_batch *batch, eng_attn_shape s,
                              float eps) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    cuda_kv *kv = (cuda_kv *)kv_;
    const int64_t D = (int64_t)s.n_head * s.head_dim;
    const eng_dtype dt = x->dtype;
    const int S = b->n_sms / s.n_head < CUDA_PERSIST_MAX_SPLITS ? b->n_sms / s.n_head : CUDA_PERSIST_MAX_SPLITS;
    /* (S: key splits a head, a CTA each) */
    if (n_layer > CUDA_PERSIST_MAX_LAYERS || batch->n_seqs != 1 || batch->seqs[0].n_tokens != 1 ||
        batch->seqs[0].n_blocks > CUDA_PERSIST_MAX_BLOCKS || kv->base.dtype != ENG_F16 || u->dtype != dt ||
        D % 8 || F % 8 || S < 1 || b->br.state != 0 || ((uintptr_t)x->data & 15) || ((uintptr_t)u->data & 15))
        return ERR_UNSUPPORTED;
    const int64_t key[4] = {D, F, s.head_dim, dt};
    if (memcmp(key, b->persist_key, sizeof(key))) {
        b->persist_fits = cuda__persist_ok(b->n_sms, b->smem_optin, D, F, s.head_dim, dt);
        memcpy(b->persist_key, key, sizeof(key));
    }
    if (!b->persist_fits) return ERR_UNSUPPORTED;
    cuda__persist_args a;
    memset(&a, 0, sizeof(a));
    for (int32_t l = 0; l < n_layer; l++) {
        const eng_fused_layer *L = &ls[l];
        const eng_tensor *t[] = {L->ln_w, L->ln_b, L->w1, L->b1, L->w2, L->b2};
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
            if (t[i]->dtype != dt || ((uintptr_t)t[i]->data & 15)) return ERR_UNSUPPORTED;
        if (L->w1->stride % 8 || L->w2->stride % 8 || L->w1->stride != ls[0].w1->stride ||
            L->w2->stride != ls[0].w2->stride)
            return ERR_UNSUPPORTED; /* (one stride each in the kernel's arguments) */
        const size_t off = kv_layer_off(kv, l);
        a.L[l] = (cuda__persist_layer){L->w1->data, L->b1->data, L->w2->data, L->b2->data, L->ln_w->data,
                                       L->ln_b->data, (char *)kv->k + off, (char *)kv->v + off};
    }
    err rc = s.rotary_dim > 0 ? rope_table(b, s.rotary_dim, batch->positions[0]) : ERR_OK;
    cuda__layout lo;
    void *part = NULL;
    int32_t *bar = NULL;
    if (rc == ERR_OK) rc = batch_layout(b, batch, &lo);
    if (rc == ERR_OK && lo.blocks_cap > CUDA_PERSIST_MAX_BLOCKS) return ERR_UNSUPPORTED; /* (the kernel's table) */
    if (rc == ERR_OK) rc = cuda__scratch(b, 0, (size_t)s.n_head * S * (s.head_dim + 4) * sizeof(float), &part);
    if (rc == ERR_OK) rc = cuda__counters(b, &b->persist_bar, 2, 1, &bar);
    if (rc != ERR_OK) return rc;
    a.n_layer = n_layer;
    a.x = x->data, a.mlp = (char *)u->data + D * 2, a.q = (char *)u->data + (D + F) * 2;
    a.lay = lo.dev, a.cs = (const float2 *)b->rope_cs, a.part = part, a.bar = (unsigned *)bar;
    a.w1s = ls[0].w1->stride, a.w2s = ls[0].w2->stride;
    a.D = (int)D, a.F = (int)F, a.H = s.n_head, a.hd = s.head_dim, a.rot = s.rotary_dim, a.S = S;
    a.eps = eps, a.scale = 1.0f / sqrtf((float)s.head_dim);
    CUDA_CHECK(b, cuda__persist(b->stream, b->n_sms, &a, dt));
    cuda__pdl_note(b, 0, 0); /* it lets the next kernel launch after its wait */
    return ERR_OK;
}

/* RoPE + KV store + attention. A batch of single-token sequences (decode) on the decode kernel, with rotary dims,
 * has them in one launch: every CTA rotates its head's q as it loads it, and the one whose chunk holds the newest
 * key rotates and stores that row's k and v first, so no other CTA's keys depend on this launch's stores (a
 * sequence of several tokens would read keys another CTA stores: two ops there). Otherwise the two ops. */
static err cuda_rope_kv_attention(eng_backend *be, eng_tensor *out, eng_tensor *qkv, eng_kv *kv_, int32_t layer,
                                  const eng_batch *batch, eng_attn_shape s) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    const cuda_kv *kv = (const cuda_kv *)kv_;
    const int64_t D = (int64_t)s.n_head * s.head_dim;
    eng_tensor q = eng_tensor_cols(*qkv, 0, D);
    /* (eng.c checked that rotary_dim is even; the decode kernel takes head_dim % 8 == 0 only) */
    int fold = b->attn_fold && s.rotary_dim > 0 && qkv->rows > 0 &&
               decode_kernel_ok(b, kv, kv_layer_off(kv, layer), s.head_dim);
    int32_t max_pos = 0;
    for (int32_t i = 0; fold && i < batch->n_seqs; i++) { /* a sequence without tokens this step has no tile */
        if (batch->seqs[i].n_tokens > 1) fold = 0;
        else if (batch->seqs[i].n_tokens == 1 && batch->seqs[i].pos > max_pos) max_pos = batch->seqs[i].pos;
    }
    if (!fold) {
        err rc = cuda_rope_kv_store(be, qkv, kv_, layer, batch, s);
        return rc != ERR_OK ? rc : cuda_attention(be, out, &q, kv_, layer, batch, s);
    }
    if (max_pos >= (1 << 24)) return ERR_INVALID; /* as rope_prep */
    err rc = rope_table(b, s.rotary_dim, max_pos);
    return rc != ERR_OK ? rc : attention_run(b, out, &q, kv, layer, batch, s, 1);
}

/* ---- measurement ------------------------------------------------------------------------------------------------ */

/* Best of 10 cudaMemcpy device-to-device copies of `bytes`, timed with events after a warm-up; counts the bytes read
 * and the bytes written, as the usual STREAM-style copy figure does. */
static err cuda_copy_bandwidth(eng_backend *be, size_t bytes, double *gbs) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    void *src = NULL, *dst = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    cudaError_t e = cudaMalloc(&src, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&dst, bytes);
    if (e == cudaSuccess) e = cudaMemsetAsync(src, 1, bytes, b->stream);
    if (e == cudaSuccess) e = cudaEventCreate(&e0);
    if (e == cudaSuccess) e = cudaEventCreate(&e1);
    float best = 0;
    for (int it = 0; it < 11 && e == cudaSuccess; it++) {
        float ms = 0;
        e = cudaEventRecord(e0, b->stream);
        if (e == cudaSuccess) e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, b->stream);
        if (e == cudaSuccess) e = cudaEventRecord(e1, b->stream);
        if (e == cudaSuccess) e = cudaEventSynchronize(e1);
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
        if (e == cudaSuccess && it > 0 && (best == 0 || ms < best)) best = ms;
    }
    if (e0) (void)cudaEventDestroy(e0);
    if (e1) (void)cudaEventDestroy(e1);
    if (src) (void)cudaFree(src);
    if (dst) (void)cudaFree(dst);
    if (e != cudaSuccess) return cuda__fail(b, e, "copy bandwidth probe");
    *gbs = best > 0 ? 2.0 * (double)bytes / ((double)best * 1e6) : 0;
    return ERR_OK;
}

static err cuda_mem_available(eng_backend *be, size_t *bytes) {
    cuda_backend *b = (cuda_backend *)be;
    ENTER(b);
    size_t free_b = 0, total = 0;
    cudaError_t e = cudaMemGetInfo(&free_b, &total);
    if (e != cudaSuccess) return cuda__fail(b, e, "cudaMemGetInfo");
    *bytes = free_b;
    return ERR_OK;
}

const eng_backend_ops cuda__backend_ops = {
    .name = "cuda",
    .create = cuda_create,
    .destroy = cuda_destroy,
    .describe = cuda_describe,
    .act_dtype = cuda_act_dtype,
    .copies_weights = 1,
    .status = cuda_status,
    .copy_bandwidth = cuda_copy_bandwidth,
    .mem_available = cuda_mem_available,
    .tensor_alloc = cuda_tensor_alloc,
    .tensor_free = cuda_tensor_free,
    .weight_from_host = cuda_weight_from_host,
    .weight_free = cuda_tensor_free,
    .read_f32 = cuda_read_f32,
    .write_f32 = cuda_write_f32,
    .logits_top = cuda__logits_top_op,
    .embed = cuda_embed,
    .layernorm = cuda_layernorm,
    .matmul = cuda_matmul,
    .matmul_gelu = cuda_matmul_gelu,
    .matmul_ln = cuda__matmul_ln,
    .matmul_late = cuda__matmul_late,
    .has_late = cuda__has_late,
    .gelu = cuda_gelu,
    .rope = cuda_rope,
    .add = cuda_add,
    .kv_create = cuda_kv_create,
    .kv_destroy = cuda_kv_destroy,
    .kv_store = cuda_kv_store,
    .rope_kv_store = cuda_rope_kv_store,
    .layers_decode = cuda_layers_decode,
    .rope_kv_attention = cuda_rope_kv_attention,
    .attention = cuda_attention,
    .branch = cuda__branch,
    .has_branches = cuda__has_branches,
    .graphs_create = cuda__graphs_create,
    .graphs_destroy = cuda__graphs_destroy,
    .graphs_begin = cuda__graphs_begin,
    .graphs_end = cuda__graphs_end,
};
