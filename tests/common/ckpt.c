/* ckpt.c - the deterministic checkpoint writer (recipe in testutil.h). No cmocka here: tools/mkckpt uses it too. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "fp16.h"
#include "rng.h"
#include "testutil.h"

/* tu_write_file without the cmocka-linked helpers */
static int write_file(const char *dir, const char *name, const void *data, size_t len) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    int rc = fclose(f);
    return (w == len && rc == 0) ? 0 : -1;
}

typedef struct gen_tensor {
    char name[96];
    int64_t rows, cols; /* cols == 0: a vector of rows elements */
    double scale, offset;
} gen_tensor;

static void fill(void *dst, st_dtype dt, uint64_t seed, int k, size_t n, double scale, double offset) {
    uint64_t base = splitmix64(seed + (uint64_t)k);
    for (size_t i = 0; i < n; i++) {
        uint64_t z = splitmix64(base + i);
        double u = (double)(z >> 11) * (1.0 / 9007199254740992.0);
        float v = (float)((2.0 * u - 1.0) * scale + offset);
        if (dt == ST_F32) ((float *)dst)[i] = v;
        else if (dt == ST_F16) ((uint16_t *)dst)[i] = f32_to_fp16(v);
        else ((uint16_t *)dst)[i] = f32_to_bf16(v);
    }
}

err tu_write_checkpoint(const char *dir, const tu_ckpt_spec *s, errbuf *eb) {
    const int64_t D = s->n_embd, F = 4 * D, V = s->vocab_size;
    int n = 4 + 8 * s->n_layer + 1;
    gen_tensor *g = xcalloc((size_t)n, sizeof(*g));
    st_tensor *t = xcalloc((size_t)n, sizeof(*t));
    if (!g || !t) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    int k = 0;
#define ADD(nm, r, c, sc, off)                                                                                       \
    do {                                                                                                             \
        snprintf(g[k].name, sizeof(g[k].name), "%s", nm);                                                            \
        g[k].rows = (r), g[k].cols = (c), g[k].scale = (sc), g[k].offset = (off);                                    \
        k++;                                                                                                         \
    } while (0)
    ADD("transformer.wte.weight", V, D, 1.0, 0.0);
    for (int l = 0; l < s->n_layer; l++) {
        char nm[96];
#define LNAME(suffix) (snprintf(nm, sizeof(nm), "transformer.h.%d.%s", l, suffix), nm)
        ADD(LNAME("ln_1.weight"), D, 0, 0.2, 1.0);
        ADD(LNAME("ln_1.bias"), D, 0, 0.1, 0.0);
        ADD(LNAME("attn.qkv_proj.weight"), 3 * D, D, sqrt(3.0 / (double)D), 0.0);
        ADD(LNAME("attn.out_proj.weight"), D, D, sqrt(3.0 / (double)D), 0.0);
        ADD(LNAME("mlp.fc_in.weight"), F, D, sqrt(3.0 / (double)D), 0.0);
        ADD(LNAME("mlp.fc_in.bias"), F, 0, 0.1, 0.0);
        ADD(LNAME("mlp.fc_out.weight"), D, F, sqrt(3.0 / (double)F), 0.0);
        ADD(LNAME("mlp.fc_out.bias"), D, 0, 0.1, 0.0);
#undef LNAME
    }
    ADD("transformer.ln_f.weight", D, 0, 0.2, 1.0);
    ADD("transformer.ln_f.bias", D, 0, 0.1, 0.0);
    ADD("lm_head.weight", V, D, 4.0 * sqrt(3.0 / (double)D), 0.0);
    ADD("lm_head.bias", V, 0, 0.1, 0.0);
#undef ADD
    n = k;
    err rc = ERR_OK;
    for (int i = 0; i < n && rc == ERR_OK; i++) {
        size_t numel = (size_t)g[i].rows * (size_t)(g[i].cols ? g[i].cols : 1);
        t[i].name = g[i].name;
        t[i].dtype = s->dtype;
        t[i].n_dims = g[i].cols ? 2 : 1;
        t[i].shape[0] = g[i].rows;
        t[i].shape[1] = g[i].cols;
        t[i].nbytes = numel * st_dtype_size(s->dtype);
        void *buf = xmalloc(t[i].nbytes);
        if (!buf) rc = errbuf_set(eb, ERR_NOMEM, "out of memory");
        else fill(buf, s->dtype, s->seed, i, numel, g[i].scale, g[i].offset);
        t[i].data = buf;
    }
    if (rc == ERR_OK) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        rc = st_write(path, t, (size_t)n, eb);
    }
    for (int i = 0; i < n; i++) xfree((void *)t[i].data);
    xfree(t);
    xfree(g);
    if (rc != ERR_OK) return rc;
    const char *dtname = s->dtype == ST_F32 ? "float32" : s->dtype == ST_F16 ? "float16" : "bfloat16";
    char cfg[1024];
    int len = snprintf(cfg, sizeof(cfg),
                       "{\n  \"architectures\": [\"CodeGenForCausalLM\"],\n  \"model_type\": \"codegen\",\n"
                       "  \"activation_function\": \"gelu_new\",\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 50256,\n"
                       "  \"layer_norm_epsilon\": 1e-05,\n  \"n_ctx\": %d,\n  \"n_positions\": %d,\n  \"n_embd\": %d,\n"
                       "  \"n_head\": %d,\n  \"n_inner\": null,\n  \"n_layer\": %d,\n  \"rotary_dim\": %d,\n"
                       "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"%s\",\n  \"vocab_size\": %d\n}\n",
                       s->n_positions, s->n_positions, s->n_embd, s->n_head, s->n_layer, s->rotary_dim, dtname,
                       s->vocab_size);
    if (write_file(dir, "config.json", cfg, (size_t)len) != 0)
        return errbuf_set(eb, ERR_IO, "%s/config.json: write failed", dir);
    return ERR_OK;
}
