/* step_trace.c - a timeline of what the GPU ran, for a machine with Nsight Compute but no Nsight Systems.
 *
 * A CUPTI activity tracer preloaded into any program (no rebuild of the program):
 *
 *   LD_PRELOAD=build-gpu/build/libstep_trace.so STEP_TRACE_OUT=trace.txt build-gpu/build/gpu_bench ...
 *
 * One line a record, times in ns on CUPTI's clock (the same for the GPU and host records):
 *   K start end stream graph grid block smem name      a kernel (also inside a graph, with PDL overlap shown as is)
 *   M start end stream bytes kind                      a copy (kind: CUPTI_ACTIVITY_MEMCPY_KIND_*, 1 HtoD, 2 DtoH)
 *   A start end name                                   a runtime API call on the host (cudaGraphLaunch, syncs)
 * Unlike Nsight Compute it does not serialize kernels, so it shows the gaps and the overlap of a real step.
 * scripts/step-trace.sh prints the last decode steps of gpu_bench from it. */
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>

#define BUF_BYTES ((size_t)8 << 20)

static FILE *out;

static void CUPTIAPI buf_requested(uint8_t **buf, size_t *size, size_t *max_records) {
    *buf = aligned_alloc(8, BUF_BYTES);
    *size = *buf ? BUF_BYTES : 0;
    *max_records = 0;
}

static void CUPTIAPI buf_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *r = NULL;
    while (out && cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
            fprintf(out, "K %llu %llu %u %u %d %d %d %s\n", (unsigned long long)k->start,
                    (unsigned long long)k->end, k->streamId, k->graphId, k->gridX * k->gridY * k->gridZ,
                    k->blockX * k->blockY * k->blockZ, k->dynamicSharedMemory + k->staticSharedMemory, k->name);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)r;
            fprintf(out, "M %llu %llu %u %llu %u\n", (unsigned long long)m->start, (unsigned long long)m->end,
                    m->streamId, (unsigned long long)m->bytes, (unsigned)m->copyKind);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_RUNTIME) {
            const CUpti_ActivityAPI *a = (const CUpti_ActivityAPI *)r;
            const char *name = NULL;
            if (cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name) != CUPTI_SUCCESS) name = "?";
            fprintf(out, "A %llu %llu %s\n", (unsigned long long)a->start, (unsigned long long)a->end, name);
        }
    }
    free(buf);
}

static void finish(void) {
    cuptiActivityFlushAll(1);
    if (out) fclose(out), out = NULL;
}

/* at load, before the program's first CUDA call (CUPTI's activity API may be set up before cuInit) */
__attribute__((constructor)) static void start(void) {
    const char *path = getenv("STEP_TRACE_OUT");
    if (!path || !(out = fopen(path, "w"))) return;
    const CUpti_ActivityKind kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                        CUPTI_ACTIVITY_KIND_RUNTIME};
    if (cuptiActivityRegisterCallbacks(buf_requested, buf_completed) != CUPTI_SUCCESS) {
        fprintf(stderr, "step_trace: cannot register with CUPTI\n");
        return;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (cuptiActivityEnable(kinds[i]) != CUPTI_SUCCESS)
            fprintf(stderr, "step_trace: cannot trace kind %d\n", (int)kinds[i]);
    atexit(finish);
}
