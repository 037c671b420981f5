/* forward.c - the CodeGen forward pass (spec: codegen-model.md §3) as a list of engine ops.
 *
 * DESIGN: weights stay where the checkpoint put them (mmap) except qkv_proj, which is repacked once at load from
 * HF's mp_num=4 [q v k] chunk layout into plain [Q; K; V] rows, so one GEMM yields per-head contiguous q, k and v.
 * With opts->dtype "int8" the five matmul weights of the model (qkv after its repack, out_proj, fc_in, fc_out,
 * lm_head: all of a CodeGen's bytes but the embedding's and a fraction of a percent; 85% of codegen-350M, 95% of
 * codegen-2B) are quantized at load, on the host, into ENG_Q8
 * blocks the model owns (eng.h, "int8 weights"); the CPU backends borrow them as they borrow the mmap. The
 * embedding stays as stored (a decode step reads one row of it, so quantizing it saves no bandwidth), and so do
 * LayerNorms and biases (tiny, and precision-sensitive).
 * Attention and MLP read the same LayerNorm output and both add into the residual stream x (the matmul op's
 * accumulate flag), which is the parallel GPT-J block without extra passes over memory.
 * On a backend with step graphs (CUDA) the op list of a small step is recorded once per batch shape and replayed
 * (eng.h, "step graphs"); the list itself is the same either way. On a backend with concurrent branches (CUDA) the
 * MLP's fc_out runs beside attention (layer_branched), which hides most of decode attention's latency. */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "pool.h"

typedef struct layer_w {
    eng_tensor ln_1_w, ln_1_b, qkv, out_proj, fc_in_w, fc_in_b, fc_out_w, fc_out_b;
    /* fused (see fuse_matmuls): w1 = [fc_in; qkv] rows with b1 = [fc_in_b; 0], w2 = [out_proj | fc_out] columns */
    eng_tensor w1, b1, w2;
} layer_w;

struct eng_model {
    eng_backend *be;
    const model *m;
    model_config cfg;
    eng_dtype wdt;      /* the checkpoint's dtype: embeddings, LayerNorms, biases (and matmul weights unless q8) */
    int q8;             /* matmul weights quantized to ENG_Q8 at load */
    int fused;          /* a layer's four matmuls as two over concatenated weights (eng_model_opts.fuse_matmuls) */
    int branches;       /* fused, on a backend with branches: the MLP's matmuls beside attention (layer_branched) */
    int fold_rope;      /* layer_branched: RoPE + KV store + attention as one op (eng_rope_kv_attention) */
    int late;           /* fused, one-row steps: no branches; w2's matmul overlaps attention (eng_matmul_late) */
    int persist;        /* fused, one-row steps: every layer as one op where the backend runs it (eng_layers_decode) */
    eng_fused_layer *fl; /* persist: the layers' weights as eng_layers_decode takes them */
    pool *load_pool;    /* q8, during eng_model_create only: threads that quantize (NULL: the calling thread) */
    eng_tensor wte, ln_f_w, ln_f_b, lm_head_w, lm_head_b;
    layer_w *layers;
    void **qkv_host; /* repacked qkv rows per layer (ENG_Q8 blocks when q8), host memory the backend may borrow */
    void **q8_host;  /* q8: [3 * n_layer + 1] int8 blocks of out_proj, fc_in, fc_out per layer, then lm_head */
    void **fused_host; /* fused: [3 * n_layer] host w1, b1, w2 per layer (int8 blocks with q8) the backend borrows */
    eng_kv *kv;
    eng_graphs *graphs; /* NULL when the backend has none */
    int32_t max_rows;
    int32_t n_logits; /* logits rows the last forward computed (eng_model_logits_top / _row read them) */
    /* activations [max_rows, ...] */
    eng_tensor x, h, qkv, att, mlp, sel, logits;
    eng_tensor u; /* fused: [max_rows, D + F + 3D] = att | mlp | qkv, so w1 writes mlp | qkv and w2 reads att | mlp */
    eng_tensor a; /* branches 2: [max_rows, D] f32, attention's out_proj result before it joins x */
    size_t weight_bytes_own, weight_bytes_all, workspace_bytes;
};

static eng_dtype to_eng_dtype(st_dtype t) { return t == ST_F32 ? ENG_F32 : t == ST_F16 ? ENG_F16 : ENG_BF16; }

/* HF splits qkv output rows into 4 chunks of [q | v | k], each D/4 wide; head h lives in chunk h / (H/4). */
static int64_t qkv_src_row(int which, int h, int d, int D, int H) {
    int hd = D / H, ld = D / 4, hpc = H / 4;
    int j = h / hpc, m = h % hpc;
    return (int64_t)j * 3 * ld + (int64_t)which * ld + (int64_t)m * hd + d;
}

static err repack_qkv(const st_tensor *src, const model_config *c, void **out) {
    const int D = c->n_embd, H = c->n_head, hd = D / H;
    size_t row = (size_t)D * st_dtype_size(src->dtype);
    unsigned char *dst = xmalloc((size_t)3 * D * row);
    if (!dst) return ERR_NOMEM;
    const unsigned char *s = src->data;
    /* destination blocks: Q rows 0..D, K rows D..2D, V rows 2D..3D; source order inside a chunk is q, v, k */
    static const int which_for_block[3] = {0, 2, 1};
    for (int blk = 0; blk < 3; blk++)
        for (int h = 0; h < H; h++)
            for (int d = 0; d < hd; d++) {
                int64_t dr = (int64_t)blk * D + (int64_t)h * hd + d;
                memcpy(dst + dr * row, s + qkv_src_row(which_for_block[blk], h, d, D, H) * row, row);
            }
    *out = dst;
    return ERR_OK;
}

static err weight(eng_model *em, const st_tensor *t, eng_tensor *out) {
    int64_t rows = t->n_dims == 2 ? t->shape[0] : 1, cols = t->n_dims == 2 ? t->shape[1] : t->shape[0];
    err rc = eng_weight_from_host(em->be, t->data, em->wdt, rows, cols, out);
    size_t bytes = (size_t)rows * (size_t)cols * eng_dtype_size(em->wdt);
    if (rc == ERR_OK && eng_backend_copies_weights(em->be)) em->weight_bytes_own += bytes;
    if (rc == ERR_OK) em->weight_bytes_all += bytes;
    return rc;
}

typedef struct q8_job {
    void *dst;
    const void *src;
    eng_dtype dt;
    int64_t rows, cols;
} q8_job;

static void q8_work(void *ctx, int ith, int nth) {
    q8_job *j = ctx;
    long lo, hi;
    pool_split((long)j->rows, ith, nth, &lo, &hi);
    eng_q8_quantize_rows(j->dst, j->src, j->dt, j->rows, j->cols, lo, hi);
}

/* A matmul weight from host rows of the checkpoint's dtype (the mmap, or the repacked qkv): placed as it is, or
 * with q8 quantized into a 64-byte aligned ENG_Q8 block that *own keeps (NULL when the backend copied it). */
static err mm_weight(eng_model *em, const void *src, int64_t rows, int64_t cols, void **own, eng_tensor *out) {
    if (!em->q8) {
        err rc = eng_weight_from_host(em->be, src, em->wdt, rows, cols, out);
        size_t bytes = (size_t)rows * (size_t)cols * eng_dtype_size(em->wdt);
        if (rc == ERR_OK && eng_backend_copies_weights(em->be)) em->weight_bytes_own += bytes;
        if (rc == ERR_OK) em->weight_bytes_all += bytes;
        return rc;
    }
    const size_t bytes = eng_q8_bytes(rows, cols);
    void *q = xaligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!q) return ERR_NOMEM;
    q8_job job = {q, src, em->wdt, rows, cols};
    if (em->load_pool) /* rows split across the load threads: also spreads the page faults of the new block */
        pool_run(em->load_pool, q8_work, &job);
    else
        q8_work(&job, 0, 1);
    err rc = eng_weight_from_host(em->be, q, ENG_Q8, rows, cols, out);
    if (rc != ERR_OK || eng_backend_copies_weights(em->be)) {
        xfree(q);
        q = NULL;
    }
    if (rc == ERR_OK) em->weight_bytes_own += bytes, em->weight_bytes_all += bytes;
    *own = q;
    return rc;
}

/* Places a matmul weight from a host buffer the model made (host, rows x cols of wdt; taken over): as mm_weight
 * does, then keeps what the backend borrows in *keep (the buffer, or its int8 block) and frees the rest. */
static err own_weight(eng_model *em, void *host, int64_t rows, int64_t cols, void **keep, eng_tensor *out) {
    void *q = NULL;
    err rc = mm_weight(em, host, rows, cols, &q, out);
    if (em->q8) {
        xfree(host);
        *keep = q;
    } else if (rc == ERR_OK && !eng_backend_copies_weights(em->be)) {
        *keep = host;
        em->weight_bytes_own += (size_t)rows * (size_t)cols * eng_dtype_size(em->wdt);
    } else {
        xfree(host);
    }
    return rc;
}

/* The fused weights of layer l (fuse_matmuls): w1 = [fc_in rows; repacked qkv rows] [F + 3D, D] with
 * b1 = [fc_in_b; zeros], and w2 = [out_proj | fc_out] [D, D + F] (each row the two rows side by side), so that
 * [mlp | qkv] = h . w1^T + b1 and x += [att | mlp] . w2^T + fc_out_b. */
static err fused_layer(eng_model *em, const model_layer *ml, void *packed_qkv, layer_w *L, void **keep) {
    const model_config *c = &em->cfg;
    const int64_t D = c->n_embd, F = c->n_inner;
    const size_t es = eng_dtype_size(em->wdt);
    unsigned char *w1 = xmalloc((size_t)(F + 3 * D) * (size_t)D * es), *b1 = xcalloc((size_t)(F + 3 * D), es);
    unsigned char *w2 = xmalloc((size_t)D * (size_t)(D + F) * es);
    if (!w1 || !b1 || !w2) {
        xfree(w1), xfree(b1), xfree(w2);
        return ERR_NOMEM;
    }
    memcpy(w1, ml->fc_in_w->data, (size_t)F * (size_t)D * es);
    memcpy(w1 + (size_t)F * (size_t)D * es, packed_qkv, (size_t)3 * (size_t)D * (size_t)D * es);
    memcpy(b1, ml->fc_in_b->data, (size_t)F * es);
    for (int64_t n = 0; n < D; n++) {
        memcpy(w2 + (size_t)n * (size_t)(D + F) * es, (const unsigned char *)ml->out_proj->data + (size_t)n * D * es,
               (size_t)D * es);
        memcpy(w2 + ((size_t)n * (size_t)(D + F) + (size_t)D) * es,
               (const unsigned char *)ml->fc_out_w->data + (size_t)n * F * es, (size_t)F * es);
    }
    err rc = own_weight(em, w1, F + 3 * D, D, &keep[0], &L->w1);
    if (rc == ERR_OK) rc = eng_weight_from_host(em->be, b1, em->wdt, 1, F + 3 * D, &L->b1);
    if (rc == ERR_OK && !eng_backend_copies_weights(em->be)) keep[1] = b1;
    else xfree(b1);
    if (rc == ERR_OK) rc = own_weight(em, w2, D, D + F, &keep[2], &L->w2);
    else xfree(w2);
    return rc;
}

void eng_model_destroy(eng_model *em) {
    if (!em) return;
    eng_backend *be = em->be;
    eng_graphs_destroy(be, em->graphs); /* first: its graphs point into everything below */
    eng_tensor *acts[] = {&em->x, &em->h, &em->qkv, &em->att, &em->mlp, &em->sel, &em->logits, &em->u, &em->a};
    for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) eng_tensor_free(be, acts[i]);
    eng_kv_destroy(be, em->kv);
    if (em->layers)
        for (int l = 0; l < em->cfg.n_layer; l++) {
            layer_w *L = &em->layers[l];
            eng_tensor *ws[] = {&L->ln_1_w,   &L->ln_1_b,   &L->qkv, &L->out_proj, &L->fc_in_w, &L->fc_in_b,
                                &L->fc_out_w, &L->fc_out_b, &L->w1,  &L->b1,       &L->w2};
            for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++) eng_weight_free(be, ws[i]);
            if (em->qkv_host) xfree(em->qkv_host[l]);
        }
    if (em->q8_host)
        for (int i = 0; i < 3 * em->cfg.n_layer + 1; i++) xfree(em->q8_host[i]);
    xfree(em->q8_host);
    if (em->fused_host)
        for (int i = 0; i < 3 * em->cfg.n_layer; i++) xfree(em->fused_host[i]);
    xfree(em->fused_host);
    eng_tensor *top[] = {&em->wte, &em->ln_f_w, &em->ln_f_b, &em->lm_head_w, &em->lm_head_b};
    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++) eng_weight_free(be, top[i]);
    xfree(em->qkv_host);
    xfree(em->layers);
    xfree(em->fl);
    xfree(em);
}

err eng_model_create(eng_backend *be, const model *m, const eng_model_opts *opts, eng_model **out, errbuf *eb) {
    *out = NULL;
    const char *want = opts && opts->dtype && *opts->dtype ? opts->dtype : "auto";
    int q8 = !strcmp(want, "int8");
    if (!q8 && strcmp(want, "auto"))
        return errbuf_set(eb, ERR_INVALID,
                          "weight dtype '%s': expected auto (as the checkpoint stores them, %s) or int8", want,
                          eng_dtype_name(to_eng_dtype(m->dtype)));
    eng_model *em = xcalloc(1, sizeof(*em));
    if (!em) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    em->be = be;
    em->m = m;
    em->cfg = m->cfg;
    em->wdt = to_eng_dtype(m->dtype);
    em->q8 = q8;
    /* fused matmuls (forward.h): measured faster on the CUDA decode path (NOTES.md v7); on the CPU unmeasured, and
     * for int8 the shared w2 row scale would change the numbers, so there they stay opt-in */
    const char *fe = getenv("SUGGESTD_FUSE_MATMULS");
    const int fo = opts ? opts->fuse_matmuls : 0;
    em->fused = fo > 0                        ? 1
              : fo < 0                        ? 0
              : fe && (fe[0] == '0' || fe[0] == '1') ? fe[0] == '1'
                                              : eng_backend_copies_weights(be) && !q8;
    const int bo = opts ? opts->branches : 0;
    /* the branched layer slices w1 and w2 into views, which int8 weights (one block, rows of scales) do not have */
    if (em->fused && !q8 && (bo == 1 || bo == 2)) {
        em->branches = bo;
    } else if (em->fused && !q8 && bo == 0 && eng_backend_has_branches(be)) {
        /* which split (layer_branched), as measured on an H100 (NOTES.md v11, v13): out_proj beside fc_out (2) for
         * 350M, 6B and 16B, after the join (1) for 2B, the one shape where 2 (which also folds RoPE into attention)
         * measured slower; SUGGESTD_BRANCHES=0|1|2 overrides (0: no branches) */
        const char *bl = getenv("SUGGESTD_BRANCHES");
        const int64_t d = m->cfg.n_embd;
        em->branches = bl && bl[0] >= '0' && bl[0] <= '2' ? bl[0] - '0' : d >= 2048 && d < 4096 ? 1 : 2;
    }
    /* the folded op where it measured faster (H100, ctx 1024, NOTES.md v13): in layout 2 at 350M (0.617 -> 0.600 ms)
     * and 6B (5.61 -> 5.49); not at 16B (12.24 -> 13.26) nor in layout 1 (2B: 2.37 -> 2.46-2.50) */
    em->fold_rope = em->branches == 2 && m->cfg.n_embd < 6144;
    /* one-row steps (batch-1 decode) without branches, w2's matmul streaming fc_out beside attention in one kernel
     * (eng_matmul_late) where the backend overlaps it: measured faster than the branches at 2B and (with its early
     * launches, NOTES.md v16) 350M on an H100, slower at 6B (v15); SUGGESTD_LATE=0|1 overrides (an explicit
     * opts->branches turns the default off). Steps of more rows keep the layout above. */
    const char *le = getenv("SUGGESTD_LATE");
    const int64_t ld = m->cfg.n_embd;
    em->late = em->fused && !q8 && eng_backend_has_late(be, ld, ld + m->cfg.n_inner, ld) &&
               (le && (le[0] == '0' || le[0] == '1') ? le[0] == '1' : bo == 0 && ld < 4096);
    /* one-row steps as one op where the backend takes it (eng_layers_decode: on CUDA one persistent kernel, which
     * fits 350M on a 132-SM part: 0.489 ms a token at context 1024 against the ops' 0.56, NOTES.md v17; refused
     * elsewhere, and the ops run); SUGGESTD_PERSIST=0 turns it off */
    const char *pe = getenv("SUGGESTD_PERSIST");
    em->persist = em->fused && !q8 && !(pe && pe[0] == '0');
    const model_config *c = &em->cfg;
    const int64_t D = c->n_embd, F = c->n_inner, V = c->vocab_size;
    em->max_rows = opts && opts->max_rows > 0 ? opts->max_rows : 512;
    const int64_t ctx_blocks = (c->n_positions + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
    const int64_t n_seqs = opts && opts->n_kv_seqs > 0 ? opts->n_kv_seqs : 1;
    if (!(opts && opts->n_kv_blocks > 0) && ctx_blocks * n_seqs > INT32_MAX) {
        xfree(em);
        return errbuf_set(eb, ERR_INVALID, "KV cache of %lld full contexts is too large", (long long)n_seqs);
    }
    int32_t n_blocks = opts && opts->n_kv_blocks > 0 ? opts->n_kv_blocks : (int32_t)(ctx_blocks * n_seqs);
    int kvd = opts ? opts->kv_dtype : -1;
    /* By default K/V are kept in the backend's activation dtype, as HF keeps them in the hidden dtype: f32 on the
     * CPU backends (exact to 1e-5 against HF's fp32 math), f16 where activations are f16 (and bf16: the KV cache has
     * no bf16 form). */
    const eng_dtype adt = eng_backend_act_dtype(be, em->wdt);
    eng_dtype kv_dtype = kvd >= 0 ? (eng_dtype)kvd : adt == ENG_BF16 ? ENG_F16 : adt;

    err rc = ERR_OK;
    em->layers = xcalloc((size_t)c->n_layer, sizeof(layer_w));
    em->qkv_host = xcalloc((size_t)c->n_layer, sizeof(void *));
    em->q8_host = q8 ? xcalloc((size_t)(3 * c->n_layer + 1), sizeof(void *)) : NULL;
    em->fused_host = em->fused ? xcalloc((size_t)(3 * c->n_layer), sizeof(void *)) : NULL;
    if (!em->layers || !em->qkv_host || (q8 && !em->q8_host) || (em->fused && !em->fused_host)) rc = ERR_NOMEM;
    void *unused_own = NULL;
    /* Quantizing is the whole cost of an int8 load (~10 ns a weight on one thread): one thread per CPU for the
     * duration of the load. Without the pool it runs on this thread. */
    if (q8 && rc == ERR_OK && pool_create(0, &em->load_pool) != ERR_OK) em->load_pool = NULL;
#define OWN(i) (q8 ? &em->q8_host[(i)] : &unused_own)
#define W(t, dst)                                                                                                    \
    if (rc == ERR_OK) rc = weight(em, (t), (dst))
    W(m->wte, &em->wte);
    W(m->ln_f_w, &em->ln_f_w);
    W(m->ln_f_b, &em->ln_f_b);
    if (rc == ERR_OK)
        rc = mm_weight(em, m->lm_head_w->data, m->lm_head_w->shape[0], m->lm_head_w->shape[1], OWN(3 * c->n_layer),
                       &em->lm_head_w);
    W(m->lm_head_b, &em->lm_head_b);
    for (int l = 0; l < c->n_layer && rc == ERR_OK; l++) {
        const model_layer *ml = &m->layers[l];
        layer_w *L = &em->layers[l];
        W(ml->ln_1_w, &L->ln_1_w);
        W(ml->ln_1_b, &L->ln_1_b);
        if (em->fused) {
            W(ml->fc_out_b, &L->fc_out_b);
            void *packed = NULL;
            if (rc == ERR_OK) rc = repack_qkv(ml->qkv, c, &packed);
            if (rc == ERR_OK) rc = fused_layer(em, ml, packed, L, &em->fused_host[3 * l]);
            xfree(packed);
            continue;
        }
        if (rc == ERR_OK) rc = mm_weight(em, ml->out_proj->data, D, D, OWN(3 * l), &L->out_proj);
        if (rc == ERR_OK) rc = mm_weight(em, ml->fc_in_w->data, F, D, OWN(3 * l + 1), &L->fc_in_w);
        W(ml->fc_in_b, &L->fc_in_b);
        if (rc == ERR_OK) rc = mm_weight(em, ml->fc_out_w->data, D, F, OWN(3 * l + 2), &L->fc_out_w);
        W(ml->fc_out_b, &L->fc_out_b);
        void *packed = NULL;
        if (rc == ERR_OK) rc = repack_qkv(ml->qkv, c, &packed);
        if (rc == ERR_OK && q8) { /* quantized from the repacked rows, which are then dropped */
            rc = mm_weight(em, packed, 3 * D, D, &em->qkv_host[l], &L->qkv);
            xfree(packed);
        } else if (rc == ERR_OK) {
            em->qkv_host[l] = packed;
            rc = eng_weight_from_host(be, packed, em->wdt, 3 * D, D, &L->qkv);
            em->weight_bytes_own += (size_t)3 * D * D * eng_dtype_size(em->wdt);
            em->weight_bytes_all += (size_t)3 * D * D * eng_dtype_size(em->wdt);
            if (eng_backend_copies_weights(be)) { /* the backend has its own copy: drop the repacked host rows now */
                xfree(em->qkv_host[l]);
                em->qkv_host[l] = NULL;
            }
        }
    }
#undef OWN
#undef W
    if (rc == ERR_OK && em->persist) {
        em->fl = xcalloc((size_t)c->n_layer, sizeof(eng_fused_layer));
        if (!em->fl) rc = ERR_NOMEM;
        for (int l = 0; l < c->n_layer && rc == ERR_OK; l++) {
            const layer_w *L = &em->layers[l];
            em->fl[l] = (eng_fused_layer){&L->ln_1_w, &L->ln_1_b, &L->w1, &L->b1, &L->w2, &L->fc_out_b};
        }
    }
    pool_destroy(em->load_pool);
    em->load_pool = NULL;
    /* An automatic size takes at most a share of what is free once the weights are placed (never less than one
     * context: a pool that cannot hold one request is useless, and the allocation then fails with a clear error). */
    size_t avail = 0;
    if (rc == ERR_OK && !(opts && opts->n_kv_blocks > 0) && opts && opts->kv_mem_fraction > 0 &&
        eng_backend_mem_available(be, &avail) == ERR_OK) {
        double block_bytes = 2.0 * (double)c->n_layer * ENG_KV_BLOCK * (double)D * (double)eng_dtype_size(kv_dtype);
        double fit = opts->kv_mem_fraction * (double)avail / block_bytes;
        if (fit < (double)n_blocks) n_blocks = fit > (double)ctx_blocks ? (int32_t)fit : (int32_t)ctx_blocks;
    }
    if (rc == ERR_OK) rc = eng_kv_create(be, c->n_layer, (int32_t)D, n_blocks, kv_dtype, &em->kv);
    const int64_t R = em->max_rows;
    struct {
        eng_tensor *t;
        int64_t rows, cols;
    } acts[] = {{&em->x, R, D}, {&em->h, R, D}, {&em->sel, R, D}, {&em->u, R, em->fused ? D + F + 3 * D : 0},
                {&em->qkv, R, em->fused ? 0 : 3 * D}, {&em->att, R, em->fused ? 0 : D}, {&em->mlp, R, em->fused ? 0 : F}};
    for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]) && rc == ERR_OK; i++) {
        if (acts[i].cols == 0) continue; /* the buffers the other layout uses */
        rc = eng_tensor_alloc(be, adt, acts[i].rows, acts[i].cols, acts[i].t);
        em->workspace_bytes += (size_t)acts[i].rows * acts[i].cols * eng_dtype_size(adt);
    }
    if (rc == ERR_OK && em->branches == 2) {
        rc = eng_tensor_alloc(be, ENG_F32, R, D, &em->a);
        em->workspace_bytes += (size_t)R * D * 4;
    }
    if (rc == ERR_OK) rc = eng_tensor_alloc(be, ENG_F32, R, V, &em->logits);
    em->workspace_bytes += (size_t)R * V * 4;
    /* optional: without graphs every step runs op by op */
    if (rc == ERR_OK && eng_graphs_create(be, &em->graphs) != ERR_OK) em->graphs = NULL;
    if (rc != ERR_OK) {
        errbuf st = {0};
        eng_backend_status(be, &st);
        eng_model_destroy(em);
        if (q8 && rc == ERR_UNSUPPORTED)
            return errbuf_set(eb, rc, "weight dtype int8: backend %s does not run int8 weights (use --dtype auto)",
                              eng_backend_name(be));
        return errbuf_set(eb, rc, "placing the model on backend %s: %s%s%s", eng_backend_name(be), err_name(rc),
                          st.code ? ": " : "", st.code ? st.msg : "");
    }
    *out = em;
    return ERR_OK;
}

const model_config *eng_model_config(const eng_model *em) { return &em->cfg; }
eng_kv *eng_model_kv(eng_model *em) { return em->kv; }
int32_t eng_model_max_rows(const eng_model *em) { return em->max_rows; }
eng_backend *eng_model_backend(eng_model *em) { return em->be; }
void eng_model_graph_stats(const eng_model *em, eng_graph_stats *out) { eng_graphs_stats(em->graphs, out); }

size_t eng_model_weight_bytes(const eng_model *em) { return em->weight_bytes_all; }
eng_dtype eng_model_matmul_dtype(const eng_model *em) { return em->q8 ? ENG_Q8 : em->wdt; }

void eng_model_memory(const eng_model *em, size_t *weights, size_t *kv, size_t *workspace) {
    if (weights) *weights = em->weight_bytes_own;
    if (kv) *kv = eng_kv_bytes(em->kv);
    if (workspace) *workspace = em->workspace_bytes;
}

#define TRY(call)                                                                                                    \
    do {                                                                                                             \
        err rc_ = (call);                                                                                            \
        if (rc_ != ERR_OK) return forward_failed(em, rc_, #call, eb);                                                \
    } while (0)

/* The op's name, and the backend's own text when it has a sticky failure (CUDA). */
static err forward_failed(eng_model *em, err rc, const char *call, errbuf *eb) {
    errbuf st = {0};
    eng_backend_status(em->be, &st);
    return errbuf_set(eb, rc, "forward: %s failed: %s%s%s", call, err_name(rc), st.code ? ": " : "",
                      st.code ? st.msg : "");
}

/* One fused layer with the MLP's fc_out on a side branch (eng.h, "concurrent branches"), over views of the fused
 * weights: w1 = [fc_in; qkv] rows, w2 = [out_proj | fc_out] columns. Decode attention is latency-bound and leaves
 * the memory idle, while fc_out, which does not need it, is bandwidth-bound: side by side one hides the other.
 *   [mlp | qkv] = LN(x) . w1^T + b1 (GELU on mlp), then
 *   side: x += mlp . fc_out^T + b         main: RoPE + KV store, attention
 *   branches 1: join; x += att . out_proj^T
 *   branches 2: main also a = att . out_proj^T into f32 (em->a); join; x += a
 * 2 takes out_proj off the path after the join (an add is shorter), 1 keeps it off the main branch: which is faster
 * depends on whether fc_out or attention + out_proj is longer (NOTES.md v11). Both branches write x only through
 * fc_out's accumulate and the ops after the join; a is f32 so that x + a rounds once, as out_proj's accumulate does.
 * Where em->fold_rope says, RoPE, the KV store and attention are one op (eng_rope_kv_attention: on CUDA one launch
 * instead of two at decode), measured faster there; elsewhere the folded attention, which then starts straight
 * after w1, measured slower (NOTES.md v13), so the two ops. */
static err layer_branched(eng_model *em, const layer_w *L, int32_t l, const eng_batch *batch, eng_tensor *x,
                          eng_tensor *h, eng_tensor *u, errbuf *eb) {
    const model_config *c = &em->cfg;
    const int64_t D = c->n_embd, F = c->n_inner;
    eng_backend *be = em->be;
    const eng_attn_shape shape = {c->n_head, c->head_dim, c->rotary_dim};
    eng_tensor att = eng_tensor_cols(*u, 0, D), mlp = eng_tensor_cols(*u, D, F);
    eng_tensor qkv = eng_tensor_cols(*u, D + F, 3 * D), q = eng_tensor_cols(qkv, 0, D);
    eng_tensor mlp_qkv = eng_tensor_cols(*u, D, F + 3 * D);
    eng_tensor out_proj = eng_tensor_cols(L->w2, 0, D), fc_out = eng_tensor_cols(L->w2, D, F);
    eng_tensor a = em->branches == 2 ? eng_tensor_rows(em->a, 0, x->rows) : (eng_tensor){0};
    TRY(eng_matmul_ln(be, &mlp_qkv, x, &L->ln_1_w, &L->ln_1_b, c->layer_norm_eps, h, &L->w1, &L->b1, F));
    TRY(eng_branch(be, ENG_BRANCH_SIDE));
    TRY(eng_matmul(be, x, &mlp, &fc_out, &L->fc_out_b, 1));
    TRY(eng_branch(be, ENG_BRANCH_MAIN));
    if (em->fold_rope) {
        TRY(eng_rope_kv_attention(be, &att, &qkv, em->kv, l, batch, shape));
    } else {
        TRY(eng_rope_kv_store(be, &qkv, em->kv, l, batch, shape));
        TRY(eng_attention(be, &att, &q, em->kv, l, batch, shape));
    }
    if (em->branches == 2) TRY(eng_matmul(be, &a, &att, &out_proj, NULL, 0));
    TRY(eng_branch(be, ENG_BRANCH_JOIN));
    if (em->branches == 2) TRY(eng_add(be, x, &a));
    else TRY(eng_matmul(be, x, &att, &out_proj, NULL, 1));
    return ERR_OK;
}

/* The op list of one step, up to the logits in em->logits (rows 0..n_logits). */
static err forward_ops(eng_model *em, const eng_batch *batch, const int32_t *logit_rows, int32_t n_logits,
                       errbuf *eb) {
    const model_config *c = &em->cfg;
    const int64_t R = batch->n_rows, D = c->n_embd;
    eng_backend *be = em->be;
    const eng_attn_shape shape = {c->n_head, c->head_dim, c->rotary_dim};
    const int64_t F = c->n_inner;
    eng_tensor x = eng_tensor_rows(em->x, 0, R), h = eng_tensor_rows(em->h, 0, R);
    /* fused: views into u = [att | mlp | qkv]; otherwise three buffers (u is not allocated then) */
    eng_tensor u = em->fused ? eng_tensor_rows(em->u, 0, R) : (eng_tensor){0};
    eng_tensor qkv = em->fused ? eng_tensor_cols(u, D + F, 3 * D) : eng_tensor_rows(em->qkv, 0, R);
    eng_tensor att = em->fused ? eng_tensor_cols(u, 0, D) : eng_tensor_rows(em->att, 0, R);
    eng_tensor mlp = em->fused ? eng_tensor_cols(u, D, F) : eng_tensor_rows(em->mlp, 0, R);
    eng_tensor mlp_qkv = em->fused ? eng_tensor_cols(u, D, F + 3 * D) : u;
    eng_tensor att_mlp = em->fused ? eng_tensor_cols(u, 0, D + F) : u;
    eng_tensor q = eng_tensor_cols(qkv, 0, D);

    TRY(eng_embed(be, &x, &em->wte, batch->tokens, (int32_t)R));
    int done = 0; /* the layers ran as one op */
    if (em->persist && R == 1) {
        err rc = eng_layers_decode(be, &x, &u, em->fl, c->n_layer, F, em->kv, batch, shape, c->layer_norm_eps);
        if (rc != ERR_OK && rc != ERR_UNSUPPORTED) return forward_failed(em, rc, "eng_layers_decode", eb);
        done = rc == ERR_OK;
    }
    for (int32_t l = 0; l < c->n_layer && !done; l++) {
        const layer_w *L = &em->layers[l];
        if (em->branches && !(em->late && R == 1)) {
            err rc = layer_branched(em, L, l, batch, &x, &h, &u, eb);
            if (rc != ERR_OK) return rc;
            continue;
        }
        if (em->fused) { /* two matmuls: [mlp | qkv] from LN(x) (GELU on the mlp part), then x += [att | mlp] . w2^T;
                          * the LayerNorm goes into the first (h: its output where the backend cannot fold it) */
            TRY(eng_matmul_ln(be, &mlp_qkv, &x, &L->ln_1_w, &L->ln_1_b, c->layer_norm_eps, &h, &L->w1, &L->b1, F));
            /* (RoPE + KV store not folded into attention: the folded kernel, launched early, holds SMs while w1
             * streams; at 2B that measured 0.35 ms a token slower, NOTES.md v15) */
            TRY(eng_rope_kv_store(be, &qkv, em->kv, l, batch, shape));
            TRY(eng_attention(be, &att, &q, em->kv, l, batch, shape));
            if (em->late) TRY(eng_matmul_late(be, &x, &att_mlp, &L->w2, &L->fc_out_b, 1, D));
            else TRY(eng_matmul(be, &x, &att_mlp, &L->w2, &L->fc_out_b, 1));
            continue;
        }
        /* attention branch (h feeds two matmuls here, so the LayerNorm stays an op of its own) */
        TRY(eng_layernorm(be, &h, &x, &L->ln_1_w, &L->ln_1_b, c->layer_norm_eps));
        TRY(eng_matmul(be, &qkv, &h, &L->qkv, NULL, 0));
        TRY(eng_rope_kv_store(be, &qkv, em->kv, l, batch, shape)); /* q and k side by side, then the cache */
        TRY(eng_attention(be, &att, &q, em->kv, l, batch, shape));
        TRY(eng_matmul(be, &x, &att, &L->out_proj, NULL, 1));
        /* MLP branch, on the same normalized input */
        TRY(eng_matmul_gelu(be, &mlp, &h, &L->fc_in_w, &L->fc_in_b, F));
        TRY(eng_matmul(be, &x, &mlp, &L->fc_out_w, &L->fc_out_b, 1));
    }
    if (n_logits == 0) return ERR_OK;
    /* Only the requested rows go through ln_f and lm_head; the embed op doubles as a row gather. */
    eng_tensor sel = eng_tensor_rows(em->sel, 0, n_logits), out = eng_tensor_rows(em->logits, 0, n_logits);
    TRY(eng_embed(be, &sel, &x, logit_rows, n_logits));
    TRY(eng_matmul_ln(be, &out, &sel, &em->ln_f_w, &em->ln_f_b, c->layer_norm_eps, &sel, &em->lm_head_w,
                      &em->lm_head_b, 0));
    return ERR_OK;
}

err eng_model_forward(eng_model *em, const eng_batch *batch, const int32_t *logit_rows, int32_t n_logits,
                      float *logits, errbuf *eb) {
    const model_config *c = &em->cfg;
    const int64_t R = batch->n_rows;
    if (R <= 0 || R > em->max_rows || n_logits < 0 || n_logits > em->max_rows)
        return errbuf_set(eb, ERR_INVALID, "forward: %lld rows, %d logit rows (max %d)", (long long)R, n_logits,
                          em->max_rows);
    for (int32_t i = 0; i < n_logits; i++)
        if (logit_rows[i] < 0 || logit_rows[i] >= R)
            return errbuf_set(eb, ERR_INVALID, "forward: logit row %d outside the batch", logit_rows[i]);
    for (int64_t r = 0; r < R; r++)
        if (batch->tokens[r] < 0 || batch->tokens[r] >= c->vocab_size)
            return errbuf_set(eb, ERR_INVALID, "forward: token id %d outside the vocabulary (%d)", batch->tokens[r],
                              c->vocab_size);
    eng_backend *be = em->be;
    em->n_logits = 0; /* until this step's are there */
    /* Replay a graph of this step's shape, or run (and maybe record) the op list; see eng.h, "step graphs". */
    eng_step step = ENG_STEP_RUN;
    if (em->graphs) TRY(eng_graphs_begin(be, em->graphs, em->kv, batch, logit_rows, n_logits, &step));
    while (step != ENG_STEP_DONE) {
        err rc = forward_ops(em, batch, logit_rows, n_logits, eb);
        err jr = eng_branch(be, ENG_BRANCH_JOIN); /* closes a branch a failed op left open (else a no-op) */
        if (rc == ERR_OK && jr != ERR_OK) rc = forward_failed(em, jr, "eng_branch", eb);
        err end = eng_graphs_end(be, em->graphs, rc, &step);
        if (end != ERR_OK) return rc != ERR_OK ? rc : forward_failed(em, end, "eng_graphs_end", eb);
    }
    em->n_logits = n_logits;
    if (n_logits == 0 || !logits) return ERR_OK;
    eng_tensor out = eng_tensor_rows(em->logits, 0, n_logits);
    TRY(eng_tensor_read_f32(be, &out, logits));
    return ERR_OK;
}

err eng_model_logits_top(eng_model *em, int32_t n_valid, const float *inv_t, samp_top *out, errbuf *eb) {
    if (n_valid <= 0 || n_valid > em->cfg.vocab_size)
        return errbuf_set(eb, ERR_INVALID, "logits top: %d valid ids of %d", n_valid, em->cfg.vocab_size);
    eng_tensor rows = eng_tensor_rows(em->logits, 0, em->n_logits);
    TRY(eng_logits_top(em->be, &rows, n_valid, inv_t, out));
    return ERR_OK;
}

err eng_model_logits_row(eng_model *em, int32_t i, float *dst, errbuf *eb) {
    if (i < 0 || i >= em->n_logits)
        return errbuf_set(eb, ERR_INVALID, "logits row %d of %d", i, em->n_logits);
    eng_tensor row = eng_tensor_rows(em->logits, i, 1);
    TRY(eng_tensor_read_f32(em->be, &row, dst));
    return ERR_OK;
}

int eng_model_logits_on_device(const eng_model *em) { return eng_backend_has_logits_top(em->be); }
