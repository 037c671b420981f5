/* cuda_matmul.c - y (+)= x . w^T + bias through cuBLAS (cublasGemmEx, f32 compute: no TF32, no f16 accumulation),
 * or, for decode (x->rows <= CUDA_GEMV_MAX_ROWS), our own GEMV (cuda_gemv.cu) with the bias, the accumulate and
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
    return b->gemv && (w->dtype == ENG_F16 || w->dtype == ENG_BF16) && K % 8 == 0 && w->stride % 8 == 0;
}

static err matmul(cuda_backend *b, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                  int accumulate, int gelu) {
    if (b->sticky) return b->sticky;
    const int64_t T = x->rows, K = x->cols, N = w->rows;
    if (T > INT32_MAX || K > INT32_MAX || N > INT32_MAX || x->stride > INT32_MAX || w->stride > INT32_MAX ||
        y->stride > INT32_MAX)
        return ERR_UNSUPPORTED;
    if (gemv_fits(b, x, w)) {
        CUDA_CHECK(b, cuda__gemv(b->stream, b->n_sms, b->gemv_flags, *y, *x, *w, bias, accumulate, gelu));
        return ERR_OK;
    }
    eng_tensor xa = *x, wa = *w;
    err rc = ERR_OK;
    if (w->dtype == ENG_Q8) { /* prefill on int8 weights: a half copy for cuBLAS */
        if (K % 16 || w->stride != K) return ERR_UNSUPPORTED;
        const eng_dtype hd = x->dtype == ENG_BF16 ? ENG_BF16 : ENG_F16;
        void *p;
        rc = cuda__scratch(b, 2, (size_t)N * (size_t)K * 2, &p);
        if (rc != ERR_OK) return rc;
        CUDA_CHECK(b, cuda__q8_dequant(b->stream, p, hd, *w));
        wa = (eng_tensor){.data = p, .dtype = hd, .rows = N, .cols = K, .stride = K};
    }
    if (xa.dtype != wa.dtype) { /* widen whichever is the half operand */
        const eng_tensor w0 = wa; /* widen reads its input after writing its output */
        if (wa.dtype != ENG_F32) rc = widen(b, 0, &w0, &wa);
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
    if (gelu) CUDA_CHECK(b, cuda__gelu(b->stream, *y));
    return ERR_OK;
}

err cuda__matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                 int accumulate) {
    return matmul((cuda_backend *)be, y, x, w, bias, accumulate, 0);
}

err cuda__matmul_gelu(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w,
                      const eng_tensor *bias) {
    return matmul((cuda_backend *)be, y, x, w, bias, 0, 1);
}
