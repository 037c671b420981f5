/* cuda_branch.c - concurrent branches (eng.h): a side stream forked from the main one by an event and joined back
 * by another. Ops find the stream and cuBLAS handle to issue to in b->stream / b->blas, so switching branch is
 * swapping those two; the side has a cuBLAS handle of its own because a handle's workspace may not serve two GEMMs
 * at once. Inside a capture the event record / wait pairs become the graph's fork and join edges.
 *
 * Why (NOTES.md v11): decode attention takes ~10-24 us a layer for a few MB, bound by latency, while fc_out's
 * matmul does not depend on it and is bound by bandwidth; side by side, one hides the other. The GEMV sizes its
 * grid to one full wave, which would leave the attention CTAs no SM room until it ends, so GEMVs issued to the side
 * take at most side_warps warps an SM (SUGGESTD_CUDA_SIDE_WARPS; 0: a full wave). Capping the main branch's GEMVs
 * as well lost (NOTES.md v11), so they keep their full wave. */
#include <stdlib.h>

#include "cuda_impl.h"

/* GEMV warps an SM on the side, when the environment does not say: measured on an H100 (NOTES.md v11) */
#define SIDE_WARPS_DEFAULT 32

/* A warps cap from the environment: 0 (none) unless a positive number. */
static int env_warps(const char *name, int dflt) {
    const char *v = getenv(name);
    const int n = v && v[0] ? atoi(v) : dflt;
    return n > 0 ? n : 0;
}

/* Issue to the main stream again (whatever failed before: the next op must not land on the side). */
static void to_main(cuda_backend *b) {
    if (!b->br.main) return;
    b->stream = b->br.main;
    b->blas = b->br.main_blas;
}

/* Branches are an optimization: if the side's stream, events or cuBLAS handle cannot be made (out of memory, say),
 * the backend runs without them rather than failing. */
err cuda__branch_init(cuda_backend *b) {
    cuda_branch *br = &b->br;
    const char *e = getenv("SUGGESTD_CUDA_BRANCHES");
    br->main = b->stream;
    br->main_blas = b->blas;
    br->enabled = 0;
    br->side_warps = env_warps("SUGGESTD_CUDA_SIDE_WARPS", SIDE_WARPS_DEFAULT);
    if (e && e[0] == '0') return ERR_OK;
    cudaError_t ce = cudaStreamCreateWithFlags(&br->side, cudaStreamNonBlocking);
    if (ce == cudaSuccess) ce = cudaEventCreateWithFlags(&br->fork, cudaEventDisableTiming);
    if (ce == cudaSuccess) ce = cudaEventCreateWithFlags(&br->join, cudaEventDisableTiming);
    if (ce == cudaSuccess) ce = cudaMalloc(&br->side_ws, CUDA_BLAS_WS);
    cublasStatus_t s = ce == cudaSuccess ? cublasCreate(&br->side_blas) : CUBLAS_STATUS_NOT_INITIALIZED;
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(br->side_blas, br->side);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(br->side_blas, CUBLAS_DEFAULT_MATH);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetWorkspace(br->side_blas, br->side_ws, CUDA_BLAS_WS);
    if (s != CUBLAS_STATUS_SUCCESS) {
        (void)cudaGetLastError(); /* not sticky: nothing ran */
        cuda__branch_free(b);
        return ERR_OK;
    }
    br->enabled = 1;
    return ERR_OK;
}

void cuda__branch_free(cuda_backend *b) {
    cuda_branch *br = &b->br;
    to_main(b);
    br->state = 0;
    if (br->side) (void)cudaStreamSynchronize(br->side);
    if (br->side_blas) (void)cublasDestroy(br->side_blas);
    if (br->side_ws) (void)cudaFree(br->side_ws);
    if (br->fork) (void)cudaEventDestroy(br->fork);
    if (br->join) (void)cudaEventDestroy(br->join);
    if (br->side) (void)cudaStreamDestroy(br->side);
    br->side = NULL, br->side_blas = NULL, br->side_ws = NULL, br->fork = NULL, br->join = NULL;
}

err cuda__branch(eng_backend *be, eng_branch_op op) {
    cuda_backend *b = (cuda_backend *)be;
    cuda_branch *br = &b->br;
    if (!br->enabled) return ERR_OK;
    if (op == ENG_BRANCH_JOIN) {
        if (br->state == 0) return ERR_OK;
        const int was = br->state;
        br->state = 0;
        to_main(b);
        if (b->sticky) return b->sticky;
        cudaError_t e = cudaSuccess;
        if (was == 1) e = cudaEventRecord(br->join, br->side);
        if (e == cudaSuccess) e = cudaStreamWaitEvent(br->main, br->join, 0);
        if (e != cudaSuccess && b->capturing) { /* a failed capture: cuda_graph.c drops it and the ops run again */
            (void)cudaGetLastError();
            b->capture_broken = 1;
            return ERR_OK;
        }
        CUDA_CHECK(b, e);
        return ERR_OK;
    }
    err rc = cuda__enter(b);
    if (rc != ERR_OK) return rc;
    if (op == ENG_BRANCH_SIDE) {
        if (br->state != 0) return ERR_INVALID;
        CUDA_CHECK(b, cudaEventRecord(br->fork, br->main));
        CUDA_CHECK(b, cudaStreamWaitEvent(br->side, br->fork, 0));
        br->state = 1;
        b->stream = br->side;
        b->blas = br->side_blas;
        return ERR_OK;
    }
    if (br->state != 1) return ERR_INVALID;
    /* the join event first: if it fails, the state stays 1 and JOIN records it again (a capture must be joined) */
    CUDA_CHECK(b, cudaEventRecord(br->join, br->side));
    br->state = 2;
    to_main(b);
    return ERR_OK;
}

int cuda__has_branches(const eng_backend *be) { return ((const cuda_backend *)be)->br.enabled; }

int cuda__branch_warps(const cuda_backend *b) { return b->br.state == 1 ? b->br.side_warps : 0; }
