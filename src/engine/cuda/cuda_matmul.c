/* cuda_matmul.c - y (+)= x . w^T + bias through cuBLAS (cublasGemmEx, f32 compute: no TF32, no f16 accumulation),
 * or, for decode (x->rows <= b->gemv, 1 by default), our own GEMV (cuda_gemv.cu) with the bias, the accumulate and
 * fc_in's GELU fused: one kernel instead of cuBLAS, a bias pre-fill and a gelu pass. int8 weights (ENG_Q8) always
 * take the GEMV at decode; for prefill they are dequantized into scratch for cuBLAS (the GEMM's own time dwarfs
 * that pass at prefill sizes).
 *
 * Row-major y[T, N] = x[T, K] . w[N, K]^T is, in cuBLAS's column-major terms, C[N, T] = op_T(W[K, N]) . X[K, T]
 * with the row strides as leading dimensions, so strided views (q/k/v columns of the fused buffer) need no copy.
 * cuBLAS takes A and B of one type, and C of that type or f32: the forward pass always fits (x and w in the
 * weight dtype, y too, or f32 logits). Other mixes - the parity tests' f32 activations against half weights -
 * widen the half operand into scratch and/or compute into an f32 scratch that an epilogue adds into y. */
#include <stdint.h>

#include "cuda_impl.h"

static cudaDataType_t cu_type(eng_dtype t) {
    return t == ENG_F16 ? CUDA_R_16F : t == ENG_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* An f32 copy of t in scratch i (contiguous, stride = cols). */
static err widen(cuda_backend *b, int i, const eng_tensor *t, eng_tensor *out) {
    void *p;
    err rc = cuda__scratch(b, i, (size_t)t->rows * (size_t)t->cols * 4, &p);
    if (rc != ERR_OK) return rc;
    *out = (eng_tensor){.data = p, .dtype = ENG_F32, .rows = t->rows, .cols = t->cols, .stride = t->cols};
    CUDA_CHECK(b, cuda__copy_rows(b->stream, *out, *t, NULL, t->rows));
    return ERR_OK;
}

/* Whether the GEMV can take this matmul: its 16-byte loads need K, the row strides and the base addresses in whole
 * vectors. */
static int gemv_fits(const cuda_backend *b, const eng_tensor *x, const eng_tensor *w) {
    const int64_t T = x->rows, K = x->cols;
    if (T < 1 || T > CUDA_GEMV_MAX_ROWS || K <= 0 || ((uintptr_t)w->data & 15) || x->stride % 8 ||
        ((uintptr_t)x->data & 15))
        return 0;
    if (w->dtype == ENG_Q8) return K % 16 == 0 && w->stride == K;
    return T <= b->gemv && (w->dtype == ENG_F16 || w->dtype == ENG_BF16) && K % 8 == 0 && w->stride % 8 == 0;
}

/* y (+)= x . w^T + bias on cuBLAS; w f32/f16/bf16. */
static err blas_matmul(cuda_backend *b, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                       const eng_tensor *bias, int accumulate) {
    const int64_t T = x->rows, K = x->cols, N = w->rows;
    eng_tensor xa = *x, wa = *w;
    err rc = ERR_OK;
    if (xa.dtype != wa.dtype) { /* widen whichever is the half operand */
        if (wa.dtype != ENG_F32) rc = widen(b, 0, w, &wa);
        else rc = widen(b, 0, x, &xa);
        if (rc != ERR_OK) return rc;
    }
    const eng_dtype ab = xa.dtype;
    const int direct = y->dtype == ab || (y->dtype == ENG_F32 && ab != ENG_F32);
    const float one = 1.0f, zero = 0.0f;
    const float *beta = &zero;
    void *c = y->data;
    int64_t ldc = y->stride;
    cudaDataType_t ct = cu_type(y->dtype);
    if (direct) {
        /* bias first, so cuBLAS adds the product into it (beta = 1) and rounds once when y starts from zero */
        if (bias) CUDA_CHECK(b, cuda__epilogue(b->stream, *y, NULL, 0, bias, accumulate));
        if (bias || accumulate) beta = &one;
    } else {
        rc = cuda__scratch(b, 1, (size_t)T * (size_t)N * 4, &c);
        if (rc != ERR_OK) return rc;
        ldc = N;
        ct = CUDA_R_32F;
    }
    cublasStatus_t s = cublasGemmEx(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)T, (int)K, &one, wa.data,
                                    cu_type(wa.dtype), (int)wa.stride, xa.data, cu_type(xa.dtype), (int)xa.stride,
                                    beta, c, ct, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return cuda__fail_blas(b, s, "cublasGemmEx");
    if (!direct) CUDA_CHECK(b, cuda__epilogue(b->stream, *y, (const float *)c, N, bias, accumulate));
    return ERR_OK;
}

/* Rows of an int8 weight dequantized at a time for cuBLAS: bounds the scratch (e.g. 2B's int8 lm_head would
 * otherwise need a 262 MB half copy whenever more than 8 logit rows are asked for). */
#define Q8_PANEL_ROWS 4096

static err matmul(cuda_backend *b, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                  int accumulate, int64_t gelu) {
    if (b->sticky) return b->sticky;
    const int64_t K = x->cols, N = w->rows;
    if (x->rows > INT32_MAX || K > INT32_MAX || N > INT32_MAX || x->stride > INT32_MAX || w->stride > INT32_MAX ||
        y->stride > INT32_MAX)
        return ERR_UNSUPPORTED;
    /* (cuda_impl.h) the GEMV lets the next kernel launch after its wait; cuBLAS's kernels are not ours to know */
    cuda__pdl_note(b, 0, 1);
    if (gemv_fits(b, x, w)) {
        int one_ring = 0;
        CUDA_CHECK(b, cuda__gemv(b->stream, b->n_sms, cuda__branch_warps(b), *y, *x, *w, bias, accumulate, (int)gelu,
                                 NULL, &one_ring));
        cuda__pdl_note(b, one_ring, 0);
        return ERR_OK;
    }
    if (w->dtype != ENG_Q8) {
        err rc = blas_matmul(b, y, x, w, bias, accumulate);
        if (rc == ERR_OK && gelu) CUDA_CHECK(b, cuda__gelu(b->stream, eng_tensor_cols(*y, 0, gelu)));
        return rc;
    }
    /* prefill on int8 weights: half copies of row panels for cuBLAS, each into its columns of y */
    if (K % 16 || w->stride != K) return ERR_UNSUPPORTED;
    const eng_dtype hd = x->dtype == ENG_BF16 ? ENG_BF16 : ENG_F16;
    const int64_t pr = N < Q8_PANEL_ROWS ? N : Q8_PANEL_ROWS;
    void *p;
    err rc = cuda__scratch(b, 2, (size_t)pr * (size_t)K * 2, &p);
    if (rc != ERR_OK) return rc;
    for (int64_t n0 = 0; n0 < N; n0 += pr) {
        const int64_t np = N - n0 < pr ? N - n0 : pr;
        /* the panel: rows [n0, n0 + np) of w as a Q8 block of their own (int8 rows, then their scales) */
        eng_tensor wp = {.data = (int8_t *)w->data + n0 * K, .dtype = ENG_Q8, .rows = np, .cols = K, .stride = K};
        CUDA_CHECK(b, cuda__q8_dequant(b->stream, p, hd, wp, eng_q8_scales(w) + n0));
        eng_tensor wh = {.data = p, .dtype = hd, .rows = np, .cols = K, .stride = K};
        eng_tensor yp = eng_tensor_cols(*y, n0, np), bp;
        if (bias) bp = eng_tensor_cols(*bias, n0, np);
        rc = blas_matmul(b, &yp, x, &wh, bias ? &bp : NULL, accumulate);
        if (rc != ERR_OK) return rc;
    }
    if (gelu) CUDA_CHECK(b, cuda__gelu(b->stream, eng_tensor_cols(*y, 0, gelu)));
    return ERR_OK;
}

err cuda__matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                 int accumulate) {
    return matmul((cuda_backend *)be, y, x, w, bias, accumulate, 0);
}

err cuda__matmul_gelu(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                      const eng_tensor *bias, int64_t gelu_cols) {
    return matmul((cuda_backend *)be, y, x, w, bias, 0, gelu_cols);
}

/* The LayerNorm before fc_in|qkv and lm_head folded into the GEMV (NOTES.md "v8"): at decode the LayerNorm kernel
 * is one latency-bound launch per layer on a single row; instead each GEMV CTA normalizes x into its shared memory
 * (a few KB, L1/L2 hits) while its first weights are in flight. Only where the GEMV takes the matmul anyway, on half
 * activations of at most CUDA_GEMV_LN_MAX elements (2B: 3 rows; more would cost the GEMV occupancy); otherwise eng.c
 * runs the LayerNorm kernel and matmul_gelu. */
err cuda__matmul_ln(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *ln_w, const eng_tensor *ln_b,
                    float eps, const eng_tensor *w, const eng_tensor *bias, int64_t gelu_cols) {
    cuda_backend *b = (cuda_backend *)be;
    err rc = cuda__enter(b);
    if (rc != ERR_OK) return rc;
    if (!b->ln_fold || !gemv_fits(b, x, w) || ((uintptr_t)ln_w->data & 15) || ((uintptr_t)ln_b->data & 15) ||
        ln_w->dtype != ln_b->dtype || x->dtype == ENG_F32 || x->rows * x->cols > CUDA_GEMV_LN_MAX ||
        w->rows > INT32_MAX)
        return ERR_UNSUPPORTED;
    const cuda__gemv_ln ln = {*ln_w, *ln_b, eps};
    int one_ring = 0;
    CUDA_CHECK(b, cuda__gemv(b->stream, b->n_sms, cuda__branch_warps(b), *y, *x, *w, bias, 0, (int)gelu_cols,
                             &ln, &one_ring));
    cuda__pdl_note(b, one_ring, 0);
    if (b->br.state != 1) b->ln_one_ring = one_ring;
    return ERR_OK;
}

/* The layer's second matmul at decode, x += [att | mlp] . [out_proj | fc_out]^T + b, as attention's PDL dependent
 * (cuda_gemv_late.cu): fc_out's columns stream while attention runs. Only with PDL (without it the kernel would wait
 * for attention like any GEMV, and the branched layout is faster) and where the kernel fits. */
static int late_ok(const cuda_backend *b, int64_t n, int64_t k, int64_t k_late) {
    return cuda__pdl_on() && b->gemv >= 1 && cuda__gemv_late_fits(b->n_sms, b->smem_optin, n, k, k_late);
}

err cuda__matmul_late(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                      int accumulate, int64_t k_late) {
    cuda_backend *b = (cuda_backend *)be;
    err rc = cuda__enter(b);
    if (rc != ERR_OK) return rc;
    if (x->rows != 1 || !late_ok(b, w->rows, w->cols, k_late) || !gemv_fits(b, x, w) || x->dtype == ENG_F32)
        return ERR_UNSUPPORTED;
    /* after a kernel that let this one launch before its own wait, the one that wrote x's early columns may still
     * run: no PDL then (cuda_impl.h, pdl_early) */
    const int early = b->ln_one_ring && cuda__pdl_on();
    CUDA_CHECK(b, cuda__gemv_late(b->stream, !b->pdl_early, early, b->n_sms, b->smem_optin, *y, *x, *w, bias,
                                  accumulate, (int)k_late));
    cuda__pdl_note(b, 0, early);
    return ERR_OK;
}

int cuda__has_late(const eng_backend *be, int64_t n, int64_t k, int64_t k_late) {
    cuda_backend *b = (cuda_backend *)be; /* cuda__enter: the PDL answer is per device */
    return cuda__enter(b) == ERR_OK && late_ok(b, n, k, k_late);
}
