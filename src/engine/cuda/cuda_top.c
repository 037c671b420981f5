/* cuda_top.c - eng_logits_top on the device: cuda_sample.cu summarizes each logits row where it was computed and
 * only the summaries (sample.h, samp_top: ~0.5 KB a row) are copied back, instead of whole rows (200 KB each at
 * CodeGen's vocabulary; at a batch of 32 editors 6.5 MB a step over PCIe, plus the host's scans). */
#include "cuda_impl.h"

err cuda__logits_top_op(eng_backend *be, const eng_tensor *logits, int32_t n_valid, const float *inv_t,
                        samp_top *out) {
    cuda_backend *b = (cuda_backend *)be;
    err rc = cuda__enter(b);
    if (rc != ERR_OK) return rc;
    /* inv_t of up to CUDA_TOP_INV_ARGS rows goes to the kernel as an argument, not by an upload that would wait
     * for the step before it on the copy engine */
    const size_t n = (size_t)logits->rows, up = n > CUDA_TOP_INV_ARGS && inv_t ? n * sizeof(float) : 0;
    const size_t work = cuda__logits_top_work(logits->rows, n_valid);
    /* scratch 1 is a matmul's f32 result inside a step; after the step it is free (stream order keeps it so):
     * [work][out][inv_t], each part 256-byte aligned */
    const size_t o_out = (work + 255) & ~(size_t)255, o_inv = (o_out + n * sizeof(samp_top) + 255) & ~(size_t)255;
    void *p;
    int32_t *counters = NULL;
    if ((rc = cuda__scratch(b, 1, o_inv + up, &p)) != ERR_OK) return rc;
    if (work && (rc = cuda__counters(b, &b->top_counts, 2 * n, 0, &counters)) != ERR_OK) return rc;
    samp_top *d_out = (samp_top *)((unsigned char *)p + o_out);
    float *d_inv = up ? (float *)((unsigned char *)p + o_inv) : NULL;
    if (up && (rc = cuda__upload(b, d_inv, inv_t, up)) != ERR_OK) return rc;
    CUDA_CHECK(b, cuda__logits_top(b->stream, *logits, n_valid, d_inv, inv_t, p, counters, d_out));
    CUDA_CHECK(b, cudaMemcpyAsync(out, d_out, n * sizeof(samp_top), cudaMemcpyDeviceToHost, b->stream));
    CUDA_CHECK(b, cudaStreamSynchronize(b->stream));
    return ERR_OK;
}
