/* cuda_top.c - eng_logits_top on the device: cuda_sample.cu summarizes each logits row where it was computed and
 * only the summaries (sample.h, samp_top: ~0.5 KB a row) are copied back, instead of whole rows (200 KB each at
 * CodeGen's vocabulary; at a batch of 32 editors 6.5 MB a step over PCIe, plus the host's scans). */
#include "cuda_impl.h"

err cuda__logits_top_op(eng_backend *be, const eng_tensor *logits, int32_t n_valid, const float *inv_t,
                        samp_top *out) {
    cuda_backend *b = (cuda_backend *)be;
    err rc = cuda__enter(b);
    if (rc != ERR_OK) return rc;
    const size_t n = (size_t)logits->rows, off = (n * sizeof(float) + 255) & ~(size_t)255;
    void *p;
    /* scratch 1 is a matmul's f32 result inside a step; after the step it is free (stream order keeps it so) */
    if ((rc = cuda__scratch(b, 1, off + n * sizeof(samp_top), &p)) != ERR_OK) return rc;
    float *d_inv = p;
    samp_top *d_out = (samp_top *)((unsigned char *)p + off);
    if (inv_t && (rc = cuda__upload(b, d_inv, inv_t, n * sizeof(float))) != ERR_OK) return rc;
    CUDA_CHECK(b, cuda__logits_top(b->stream, *logits, n_valid, inv_t ? d_inv : NULL, d_out));
    CUDA_CHECK(b, cudaMemcpyAsync(out, d_out, n * sizeof(samp_top), cudaMemcpyDeviceToHost, b->stream));
    CUDA_CHECK(b, cudaStreamSynchronize(b->stream));
    return ERR_OK;
}
