/* cuda_impl.h - the CUDA backend's state, shared by cuda.c (device, memory, errors, element ops, attention) and
 * cuda_matmul.c (cuBLAS). Only these two files include it. */
#ifndef SUGGESTD_ENGINE_CUDA_IMPL_H
#define SUGGESTD_ENGINE_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>

#include "cuda_kern.h"
#include "eng_impl.h"

#define CUDA_META_SLOTS 8

/* A small int32 array (token ids, positions, the batch layout) already on the device: ops of one forward pass
 * ask for the same arrays layer after layer, so each is uploaded once and found again by content. */
typedef struct cuda_meta {
    int32_t *host, *dev;
    size_t n, cap;
} cuda_meta;

typedef struct cuda_backend {
    eng_backend_base base;
    int device, n_sms;
    cudaStream_t stream;
    cublasHandle_t blas;
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
    /* device scratch, grown on demand (two: a matmul may need a widened operand and an f32 result at once) */
    void *scratch[2];
    size_t scratch_cap[2];
    /* (cos, sin) table for RoPE: [rope_npos][rope_rd / 2] float pairs */
    float *rope_cs;
    int32_t rope_rd, rope_npos;
} cuda_backend;

/* Records a CUDA runtime failure of `what` on b and returns its code: ERR_NOMEM for an out-of-memory (the backend
 * stays usable), otherwise ERR_CUDA and the backend turns unhealthy for good. */
err cuda__fail(cuda_backend *b, cudaError_t e, const char *what);
err cuda__fail_blas(cuda_backend *b, cublasStatus_t s, const char *what);
/* Device scratch i of at least `bytes`, contents undefined, valid until the next call for the same i. */
err cuda__scratch(cuda_backend *b, int i, size_t bytes, void **out);

err cuda__matmul(eng_backend *be, eng_tensor *y, const eng_tensor *x, const eng_tensor *w, const eng_tensor *bias,
                 int accumulate);

#define CUDA_CHECK(b, call)                                                                                          \
    do {                                                                                                             \
        cudaError_t e_ = (call);                                                                                     \
        if (e_ != cudaSuccess) return cuda__fail((b), e_, #call);                                                    \
    } while (0)

#endif
