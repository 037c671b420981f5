/* cuda_graph.c - step graphs: a small forward step (decode rows of a few sequences) recorded once per batch shape
 * and replayed with one cudaGraphLaunch, instead of ~300-450 launches of a few microseconds of host time each.
 *
 * DESIGN
 * - What changes from step to step (token ids, positions, KV slots, block tables, the tile list, logit rows) is
 *   packed into one host array and copied by one host-to-device copy into this cache's staging buffer before the
 *   graph runs. While the step is open, the ops find those arrays there by the caller's host addresses
 *   (cuda.c: step_ints, batch_layout), so the graph reads fixed addresses and serves every step of its shape.
 * - The shape is the key: rows, logit rows, tiles of 64 and of 1 row, the block-table room (a power of two, so
 *   growing tables keep their offsets) and each tile kind's attention key budget (a power of two: the split plan
 *   is made for the budget, not the positions; chunks past a tile's keys exit early, reading its length from the
 *   tile list on the device). A 1-sequence decode is recaptured when its context crosses 256, 512, 1024, 2048.
 *   And whether every sequence has at most one token: only then does eng_rope_kv_attention fold RoPE and the KV
 *   store into the decode kernel (cuda.c), while 2-3 tokens of one sequence also make 1-row tiles, and replayed
 *   folded they would read keys that another CTA of the launch stores.
 * - A key is captured the second time it is seen: the first step runs op by op and sizes every scratch buffer,
 *   so a capture never allocates. An op that cannot be captured (a buffer would have to grow, an array it cannot
 *   place, any CUDA or cuBLAS failure) marks the capture broken; the capture is dropped and the ops run again for
 *   real. After GRAPH_MAX_FAILS failures a key stays op by op.
 * - A graph holds the addresses of the model's buffers (stable while this cache lives: the model owns both) and of
 *   the backend's scratch, RoPE table and this cache's staging buffer; replacing any of those bumps b->epoch, and
 *   graphs of an older epoch are recaptured.
 * - The capture is thread-local: other threads using CUDA meanwhile are not disturbed. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cuda_impl.h"

#define GRAPH_SLOTS 16     /* graphs kept per model, least recently used replaced */
#define GRAPH_MAX_ROWS 64  /* larger steps (prefill chunks) run op by op: their launches are not the cost */
#define GRAPH_MAX_FAILS 3

typedef struct graph_key {
    int32_t n_rows, n_logits, blocks_cap, n64, n1, keys64, keys1, single; /* single: no sequence of 2+ tokens */
} graph_key;

typedef struct graph_slot {
    graph_key key;
    int used;
    uint32_t seen, fails;
    cudaGraphExec_t exec;
    uint64_t epoch, last;
} graph_slot;

typedef struct cuda_graphs {
    eng_graphs_base base;
    int32_t *dev, *host; /* staging: device and host copies of the step's arrays */
    size_t dev_cap, host_cap;
    graph_slot slot[GRAPH_SLOTS];
    graph_slot *cur; /* the one being captured */
    uint64_t clock;
    cuda_step step;
} cuda_graphs;

static int32_t pow2_at_least(int32_t x, int32_t lo) {
    int32_t p = lo;
    while (p < x && p < (1 << 30)) p *= 2;
    return p;
}

err cuda__graphs_create(eng_backend *be, eng_graphs **out) {
    cuda_backend *b = (cuda_backend *)be;
    *out = NULL;
    const char *env = getenv("SUGGESTD_CUDA_GRAPHS");
    if (env && !strcmp(env, "0")) return ERR_UNSUPPORTED;
    err rc = cuda__enter(b);
    if (rc != ERR_OK) return rc;
    cuda_graphs *g = xcalloc(1, sizeof(*g));
    if (!g) return ERR_NOMEM;
    *out = (eng_graphs *)g;
    return ERR_OK;
}

static void slot_clear(graph_slot *s) {
    if (s->exec) (void)cudaGraphExecDestroy(s->exec); /* an in-flight launch is freed when it completes */
    memset(s, 0, sizeof(*s));
}

void cuda__graphs_destroy(eng_backend *be, eng_graphs *g_) {
    cuda_backend *b = (cuda_backend *)be;
    cuda_graphs *g = (cuda_graphs *)g_;
    (void)cuda__enter(b); /* on a failed context the frees below fail quietly too */
    for (int i = 0; i < GRAPH_SLOTS; i++) slot_clear(&g->slot[i]);
    if (g->dev) (void)cudaFree(g->dev);
    if (b->step == &g->step) b->step = NULL;
    xfree(g->host);
    xfree(g);
}

/* The slot of key k: its own, else an unused one, else the least recently used (its graph destroyed). */
static graph_slot *slot_for(cuda_graphs *g, const graph_key *k) {
    graph_slot *victim = NULL;
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        graph_slot *s = &g->slot[i];
        if (s->used && !memcmp(&s->key, k, sizeof(*k))) return s;
        if (!victim || (victim->used && (!s->used || s->last < victim->last))) victim = s;
    }
    slot_clear(victim);
    victim->key = *k;
    victim->used = 1;
    return victim;
}

/* Packs the step's arrays [tokens | positions | logit rows | layout] into the staging buffer and opens the step. */
static err stage(cuda_backend *b, cuda_graphs *g, const eng_batch *batch, const int32_t *logit_rows,
                 int32_t n_logits, graph_key *key) {
    const int32_t R = batch->n_rows;
    cuda__layout lo;
    cuda__layout_count(batch, &lo);
    lo.blocks_cap = pow2_at_least(lo.total_blocks, 64);
    const size_t head = 2 * (size_t)R + (size_t)n_logits, n = head + cuda__layout_ints(&lo);
    if (n > g->host_cap) {
        size_t cap = n + n / 2;
        int32_t *h = xrealloc(g->host, cap * sizeof(int32_t));
        if (!h) return ERR_NOMEM;
        g->host = h;
        g->host_cap = cap;
    }
    memcpy(g->host, batch->tokens, (size_t)R * sizeof(int32_t));
    memcpy(g->host + R, batch->positions, (size_t)R * sizeof(int32_t));
    if (n_logits) memcpy(g->host + 2 * R, logit_rows, (size_t)n_logits * sizeof(int32_t));
    cuda__layout_fill(batch, &lo, g->host + head);
    if (n > g->dev_cap) {
        b->epoch++; /* graphs holding the old buffer are stale */
        if (g->dev) CUDA_CHECK(b, cudaFree(g->dev)); /* waits for steps still reading it */
        g->dev = NULL;
        g->dev_cap = 0;
        size_t cap = n < 16384 ? 16384 : 2 * n;
        CUDA_CHECK(b, cudaMalloc((void **)&g->dev, cap * sizeof(int32_t)));
        g->dev_cap = cap;
    }
    err rc = cuda__upload(b, g->dev, g->host, n * sizeof(int32_t));
    if (rc != ERR_OK) return rc;
    lo.dev = g->dev + head;
    g->step = (cuda_step){.batch = batch, .tokens = batch->tokens, .positions = batch->positions,
                          .logit_rows = logit_rows, .n_rows = R, .n_logits = n_logits, .d_tokens = g->dev,
                          .d_positions = g->dev + R, .d_logit_rows = g->dev + 2 * R, .lo = lo};
    int32_t single = 1;
    for (int32_t i = 0; i < batch->n_seqs; i++) single &= batch->seqs[i].n_tokens <= 1;
    *key = (graph_key){R,     n_logits, lo.blocks_cap, lo.n64, lo.n1, lo.n64 ? cuda__keys_bucket(lo.max_keys64) : 0,
                       lo.n1 ? cuda__keys_bucket(lo.max_keys1) : 0, single};
    b->step = &g->step;
    return ERR_OK;
}

err cuda__graphs_begin(eng_backend *be, eng_graphs *g_, const eng_batch *batch, const int32_t *logit_rows,
                       int32_t n_logits, eng_step *step) {
    cuda_backend *b = (cuda_backend *)be;
    cuda_graphs *g = (cuda_graphs *)g_;
    *step = ENG_STEP_RUN;
    err rc = cuda__enter(b);
    if (rc != ERR_OK) return rc;
    if (b->step || b->capturing) return ERR_INVALID; /* steps do not nest */
    /* the ops tell the step's arrays apart by address, so they must be distinct */
    if (batch->n_rows > GRAPH_MAX_ROWS || batch->tokens == batch->positions ||
        (n_logits && (logit_rows == batch->tokens || logit_rows == batch->positions)))
        return ERR_OK; /* op by op, no step */
    graph_key key;
    if ((rc = stage(b, g, batch, logit_rows, n_logits, &key)) != ERR_OK) return rc;
    graph_slot *s = slot_for(g, &key);
    s->last = ++g->clock;
    if (s->exec && s->epoch == b->epoch) {
        b->step = NULL;
        CUDA_CHECK(b, cudaGraphLaunch(s->exec, b->stream));
        g->base.stats.replays++;
        *step = ENG_STEP_DONE;
        return ERR_OK;
    }
    if (s->exec) { /* made before a buffer it uses was replaced */
        (void)cudaGraphExecDestroy(s->exec);
        s->exec = NULL;
    }
    if (++s->seen < 2 || s->fails >= GRAPH_MAX_FAILS) return ERR_OK; /* op by op, step open */
    cudaError_t e = cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        s->fails++;
        return ERR_OK;
    }
    b->capturing = 1;
    b->capture_broken = 0;
    g->cur = s;
    *step = ENG_STEP_CAPTURE;
    return ERR_OK;
}

err cuda__graphs_end(eng_backend *be, eng_graphs *g_, err ops_rc, eng_step *step) {
    cuda_backend *b = (cuda_backend *)be;
    cuda_graphs *g = (cuda_graphs *)g_;
    if (*step != ENG_STEP_CAPTURE) {
        if (b->step == &g->step) b->step = NULL;
        *step = ENG_STEP_DONE;
        if (ops_rc == ERR_OK) g->base.stats.runs++;
        return ops_rc;
    }
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaStreamEndCapture(b->stream, &graph);
    b->capturing = 0;
    graph_slot *s = g->cur;
    g->cur = NULL;
    if (e == cudaSuccess && ops_rc == ERR_OK && !b->capture_broken && graph)
        e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) (void)cudaGraphDestroy(graph);
    if (e != cudaSuccess || !exec || ops_rc != ERR_OK || b->capture_broken) {
        /* nothing ran: the step stays open and the ops run again, for real */
        (void)cudaGetLastError();
        if (exec) (void)cudaGraphExecDestroy(exec);
        b->capture_broken = 0;
        s->fails++;
        *step = ENG_STEP_RUN;
        return ERR_OK;
    }
    s->exec = exec;
    s->epoch = b->epoch;
    b->step = NULL;
    *step = ENG_STEP_DONE;
    CUDA_CHECK(b, cudaGraphLaunch(exec, b->stream));
    g->base.stats.captures++;
    return ERR_OK;
}
