/* test_model.c - config.json parsing and model directories: valid checkpoints in every float dtype, sharded ones,
 * and each way a directory can be wrong, with the code and a message naming the file and the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc.h"
#include "fp16.h"
#include "log.h"
#include "model.h"
#include "rng.h"
#include "testutil.h"

/* ---- helpers ---- */

static void check_msg(const errbuf *eb, const char *needle) {
    if (needle && !strstr(eb->msg, needle)) fail_msg("message \"%s\" does not contain \"%s\"", eb->msg, needle);
}

static void check_code(err got, err want, const errbuf *eb) {
    if (got != want) fail_msg("got %s, want %s (message: \"%s\")", err_name(got), err_name(want), eb->msg);
}

static const tu_ckpt_spec small = {
    .n_layer = 2, .n_embd = 32, .n_head = 4, .rotary_dim = 4, .n_positions = 64, .vocab_size = 96,
    .dtype = ST_F32, .seed = 1234,
};

/* Opens dir and expects failure with code want and both needles in the message. */
static void expect_open_fails(const char *dir, err want, const char *needle1, const char *needle2) {
    model *m = (model *)&want; /* must be reset to NULL */
    errbuf eb = {0};
    err rc = model_open(dir, &m, &eb);
    check_code(rc, want, &eb);
    assert_int_equal(eb.code, want);
    assert_null(m);
    check_msg(&eb, needle1);
    check_msg(&eb, needle2);
}

/* A checkpoint described tensor by tensor, so tests can drop, reshape, retype, add or move one. */
typedef struct gen_tensor {
    char name[96];
    st_dtype dtype;
    int n_dims;
    int64_t shape[4];
    int shard; /* 0 or 1; -1 drops the tensor */
} gen_tensor;

typedef struct gen_ckpt {
    gen_tensor t[64];
    int n;
} gen_ckpt;

static void gen_add(gen_ckpt *g, const char *name, st_dtype dt, int nd, int64_t d0, int64_t d1) {
    assert_true(g->n < 64);
    gen_tensor *t = &g->t[g->n++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->dtype = dt;
    t->n_dims = nd;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shard = 0;
}

/* The CodeGen tensors for spec s in the canonical order. */
static void gen_codegen(gen_ckpt *g, const tu_ckpt_spec *s) {
    const int64_t D = s->n_embd, F = 4 * D, V = s->vocab_size;
    g->n = 0;
    gen_add(g, "transformer.wte.weight", s->dtype, 2, V, D);
    for (int l = 0; l < s->n_layer; l++) {
        char nm[96];
#define L(suffix) (snprintf(nm, sizeof(nm), "transformer.h.%d.%s", l, suffix), nm)
        gen_add(g, L("ln_1.weight"), s->dtype, 1, D, 0);
        gen_add(g, L("ln_1.bias"), s->dtype, 1, D, 0);
        gen_add(g, L("attn.qkv_proj.weight"), s->dtype, 2, 3 * D, D);
        gen_add(g, L("attn.out_proj.weight"), s->dtype, 2, D, D);
        gen_add(g, L("mlp.fc_in.weight"), s->dtype, 2, F, D);
        gen_add(g, L("mlp.fc_in.bias"), s->dtype, 1, F, 0);
        gen_add(g, L("mlp.fc_out.weight"), s->dtype, 2, D, F);
        gen_add(g, L("mlp.fc_out.bias"), s->dtype, 1, D, 0);
#undef L
    }
    gen_add(g, "transformer.ln_f.weight", s->dtype, 1, D, 0);
    gen_add(g, "transformer.ln_f.bias", s->dtype, 1, D, 0);
    gen_add(g, "lm_head.weight", s->dtype, 2, V, D);
    gen_add(g, "lm_head.bias", s->dtype, 1, V, 0);
}

static gen_tensor *gen_find(gen_ckpt *g, const char *name) {
    for (int i = 0; i < g->n; i++)
        if (!strcmp(g->t[i].name, name)) return &g->t[i];
    fail_msg("no tensor %s in the generator", name);
    return NULL;
}

/* Writes the tensors of one shard (zero-filled data) to dir/file. */
static void gen_write(const gen_ckpt *g, const char *dir, const char *file, int shard) {
    st_tensor ts[64];
    size_t n = 0;
    for (int i = 0; i < g->n; i++) {
        const gen_tensor *t = &g->t[i];
        if (t->shard != shard) continue;
        size_t numel = 1;
        for (int d = 0; d < t->n_dims; d++) numel *= (size_t)t->shape[d];
        st_tensor *o = &ts[n++];
        memset(o, 0, sizeof(*o));
        o->name = t->name;
        o->dtype = t->dtype;
        o->n_dims = t->n_dims;
        memcpy(o->shape, t->shape, sizeof(t->shape));
        o->nbytes = numel * st_dtype_size(t->dtype);
        o->data = calloc(1, o->nbytes + 1);
        assert_non_null(o->data);
    }
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    errbuf eb = {0};
    err rc = st_write(path, ts, n, &eb);
    for (size_t i = 0; i < n; i++) free((void *)ts[i].data);
    check_code(rc, ERR_OK, &eb);
}

/* A fresh directory holding config.json for s (written by testutil) and no weights. */
static char *dir_with_config(const tu_ckpt_spec *s) {
    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    errbuf eb = {0};
    check_code(tu_write_checkpoint(dir, s, &eb), ERR_OK, &eb);
    char path[1024];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    assert_int_equal(unlink(path), 0);
    return dir;
}

/* Writes an index mapping each tensor of g to shard file names[shard]. */
static void gen_write_index(const gen_ckpt *g, const char *dir, const char *const names[2]) {
    char idx[8192];
    size_t k = (size_t)snprintf(idx, sizeof(idx), "{\"metadata\": {\"total_size\": 1234}, \"weight_map\": {");
    int first = 1;
    for (int i = 0; i < g->n; i++) {
        if (g->t[i].shard < 0) continue;
        k += (size_t)snprintf(idx + k, sizeof(idx) - k, "%s\"%s\": \"%s\"", first ? "" : ", ", g->t[i].name,
                              names[g->t[i].shard]);
        first = 0;
    }
    k += (size_t)snprintf(idx + k, sizeof(idx) - k, "}}");
    assert_true(k < sizeof(idx));
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", idx, k), 0);
}

/* Writes the two shards of g and their index. */
static void gen_write_sharded(const gen_ckpt *g, const char *dir, const char *const names[2]) {
    gen_write(g, dir, names[0], 0);
    gen_write(g, dir, names[1], 1);
    gen_write_index(g, dir, names);
}

static uint64_t expected_weight_bytes(const tu_ckpt_spec *s) {
    const uint64_t D = (uint64_t)s->n_embd, F = 4 * D, V = (uint64_t)s->vocab_size, L = (uint64_t)s->n_layer;
    uint64_t numel = 2 * V * D + V + 2 * D + L * (2 * D + 3 * D * D + D * D + F * D + F + D * F + D);
    return numel * st_dtype_size(s->dtype);
}

/* Element i of tensor k as testutil writes it (see testutil.h). */
static float tu_value(const tu_ckpt_spec *s, int k, size_t i, double scale, double offset) {
    uint64_t z = splitmix64(splitmix64(s->seed + (uint64_t)k) + i);
    double u = (double)(z >> 11) * (1.0 / 9007199254740992.0);
    return (float)((2.0 * u - 1.0) * scale + offset);
}

static float load_elem(const st_tensor *t, size_t i) {
    const unsigned char *p = t->data;
    if (t->dtype == ST_F32) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return t->dtype == ST_F16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

static float round_to(st_dtype dt, float v) {
    if (dt == ST_F16) return fp16_to_f32(f32_to_fp16(v));
    if (dt == ST_BF16) return bf16_to_f32(f32_to_bf16(v));
    return v;
}

static void check_tensor(const model *m, const st_tensor *t, const char *name, int nd, int64_t d0, int64_t d1) {
    if (!t) fail_msg("slot for %s is empty", name);
    assert_string_equal(t->name, name);
    assert_int_equal(t->dtype, m->dtype);
    assert_int_equal(t->n_dims, nd);
    assert_int_equal(t->shape[0], d0);
    if (nd == 2) assert_int_equal(t->shape[1], d1);
    /* The pointer is the one st_find gives in exactly one shard. */
    int hits = 0;
    for (int32_t s = 0; s < m->n_shards; s++) hits += st_find(m->shards[s], name) == t;
    assert_int_equal(hits, 1);
}

/* Every slot of m holds the right tensor for spec s. */
static void check_model(const model *m, const tu_ckpt_spec *s) {
    const int64_t D = s->n_embd, F = 4 * D, V = s->vocab_size;
    assert_int_equal(m->cfg.n_layer, s->n_layer);
    assert_int_equal(m->cfg.n_embd, D);
    assert_int_equal(m->cfg.n_head, s->n_head);
    assert_int_equal(m->cfg.head_dim, D / s->n_head);
    assert_int_equal(m->cfg.rotary_dim, s->rotary_dim);
    assert_int_equal(m->cfg.n_inner, F);
    assert_int_equal(m->cfg.n_positions, s->n_positions);
    assert_int_equal(m->cfg.vocab_size, V);
    assert_int_equal(m->cfg.eos_token_id, 50256);
    assert_int_equal(m->cfg.bos_token_id, 1);
    assert_true(m->cfg.layer_norm_eps == 1e-5f);
    assert_int_equal(m->dtype, s->dtype);
    assert_non_null(m->layers);
    check_tensor(m, m->wte, "transformer.wte.weight", 2, V, D);
    for (int l = 0; l < s->n_layer; l++) {
        const model_layer *ly = &m->layers[l];
        char nm[96];
#define L(suffix) (snprintf(nm, sizeof(nm), "transformer.h.%d.%s", l, suffix), nm)
        check_tensor(m, ly->ln_1_w, L("ln_1.weight"), 1, D, 0);
        check_tensor(m, ly->ln_1_b, L("ln_1.bias"), 1, D, 0);
        check_tensor(m, ly->qkv, L("attn.qkv_proj.weight"), 2, 3 * D, D);
        check_tensor(m, ly->out_proj, L("attn.out_proj.weight"), 2, D, D);
        check_tensor(m, ly->fc_in_w, L("mlp.fc_in.weight"), 2, F, D);
        check_tensor(m, ly->fc_in_b, L("mlp.fc_in.bias"), 1, F, 0);
        check_tensor(m, ly->fc_out_w, L("mlp.fc_out.weight"), 2, D, F);
        check_tensor(m, ly->fc_out_b, L("mlp.fc_out.bias"), 1, D, 0);
#undef L
    }
    check_tensor(m, m->ln_f_w, "transformer.ln_f.weight", 1, D, 0);
    check_tensor(m, m->ln_f_b, "transformer.ln_f.bias", 1, D, 0);
    check_tensor(m, m->lm_head_w, "lm_head.weight", 2, V, D);
    check_tensor(m, m->lm_head_b, "lm_head.bias", 1, V, 0);
    assert_int_equal(model_weight_bytes(m), expected_weight_bytes(s));
}

/* ---- config.json ---- */

static const char cfg_350m[] =
    "{\"activation_function\": \"gelu_new\", \"architectures\": [\"CodeGenForCausalLM\"], \"attn_pdrop\": 0.0,"
    " \"bos_token_id\": 1, \"embd_pdrop\": 0.0, \"eos_token_id\": 50256, \"gradient_checkpointing\": false,"
    " \"initializer_range\": 0.02, \"layer_norm_epsilon\": 1e-05, \"model_type\": \"codegen\", \"n_ctx\": 2048,"
    " \"n_embd\": 1024, \"n_head\": 16, \"n_inner\": null, \"n_layer\": 20, \"n_positions\": 2048,"
    " \"resid_pdrop\": 0.0, \"rotary_dim\": 32, \"scale_attn_weights\": true, \"summary_activation\": null,"
    " \"tie_word_embeddings\": false, \"tokenizer_class\": \"GPT2Tokenizer\", \"torch_dtype\": \"float16\","
    " \"transformers_version\": \"4.21.0.dev0\", \"use_cache\": true, \"vocab_size\": 51200}";

static void test_config_350m(void **state) {
    (void)state;
    model_config c;
    errbuf eb = {0};
    check_code(model_config_parse(cfg_350m, strlen(cfg_350m), &c, &eb), ERR_OK, &eb);
    assert_int_equal(c.n_layer, 20);
    assert_int_equal(c.n_embd, 1024);
    assert_int_equal(c.n_head, 16);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.rotary_dim, 32);
    assert_int_equal(c.n_inner, 4096);
    assert_int_equal(c.n_positions, 2048);
    assert_int_equal(c.vocab_size, 51200);
    assert_int_equal(c.eos_token_id, 50256);
    assert_int_equal(c.bos_token_id, 1);
    assert_true(c.layer_norm_eps == 1e-5f);
    assert_string_equal(c.torch_dtype, "float16");
}

static void test_config_defaults(void **state) {
    (void)state;
    model_config c;
    errbuf eb = {0};
    /* Not NUL-terminated: only len bytes are read. */
    const char js[] = "{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}XXXX";
    check_code(model_config_parse(js, sizeof(js) - 5, &c, &eb), ERR_OK, &eb);
    assert_int_equal(c.n_positions, 64);
    assert_int_equal(c.n_inner, 128);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.eos_token_id, 50256);
    assert_int_equal(c.bos_token_id, 50256);
    assert_true(c.layer_norm_eps == 1e-5f);
    assert_string_equal(c.torch_dtype, "");
    assert_int_equal(c.tie_word_embeddings, 0); /* CodeGenConfig's default */

    const char js2[] = "{\"n_layer\":1,\"n_embd\":64,\"n_head\":8,\"rotary_dim\":null,\"n_positions\":16,\"n_ctx\":8,"
                       "\"vocab_size\":10,\"n_inner\":100,\"eos_token_id\":2,\"layer_norm_epsilon\":0.001,"
                       "\"torch_dtype\":null,\"activation_function\":null}";
    check_code(model_config_parse(js2, strlen(js2), &c, &eb), ERR_OK, &eb);
    assert_int_equal(c.rotary_dim, 8); /* null: the whole head */
    assert_int_equal(c.n_positions, 16);
    assert_int_equal(c.n_inner, 100);
    assert_int_equal(c.eos_token_id, 2);
    assert_true(c.layer_norm_eps == 0.001f);

    static const struct {
        const char *tie;
        int32_t want;
    } ties[] = {{"true", 1}, {"false", 0}, {"null", 0}};
    for (size_t i = 0; i < sizeof(ties) / sizeof(ties[0]); i++) {
        char js3[256];
        snprintf(js3, sizeof(js3),
                 "{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
                 "\"tie_word_embeddings\":%s}",
                 ties[i].tie);
        check_code(model_config_parse(js3, strlen(js3), &c, &eb), ERR_OK, &eb);
        assert_int_equal(c.tie_word_embeddings, ties[i].want);
    }
}

static void test_config_errors(void **state) {
    (void)state;
    static const struct {
        const char *json;
        err want;
        const char *needle;
    } cases[] = {
        {"", ERR_FORMAT, "not valid JSON"},
        {"{\"n_layer\": 2,", ERR_FORMAT, "not valid JSON"},
        {"[1]", ERR_FORMAT, "not a JSON object"},
        {"{\"n_layer\":2,\"n_layer\":3}", ERR_FORMAT, "duplicate"},
        {"{\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT, "\"n_layer\""},
        {"{\"n_layer\":2,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT, "\"n_embd\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT, "\"n_head\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT, "\"rotary_dim\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"vocab_size\":100}", ERR_FORMAT, "n_positions"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64}", ERR_FORMAT, "\"vocab_size\""},
        {"{\"n_layer\":null,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "\"n_layer\""},
        {"{\"n_layer\":\"2\",\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "\"n_layer\" must be an integer"},
        {"{\"n_layer\":2,\"n_embd\":32.0,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "\"n_embd\" must be an integer"},
        {"{\"n_layer\":0,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "\"n_layer\" is 0"},
        {"{\"n_layer\":2,\"n_embd\":-32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "\"n_embd\" is -32"},
        {"{\"n_layer\":2,\"n_embd\":2097152,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "\"n_embd\" is 2097152"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":9223372036854775807}",
         ERR_FORMAT, "\"vocab_size\""},
        {"{\"n_layer\":2,\"n_embd\":30,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "n_embd 30 is not a multiple of n_head 4"},
        {"{\"n_layer\":2,\"n_embd\":36,\"n_head\":6,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100}", ERR_UNSUPPORTED,
         "n_head 6 is not a multiple of 4"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":3,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "rotary_dim 3"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":10,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "at most head_dim 8"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":0,\"n_ctx\":64,\"vocab_size\":100}", ERR_FORMAT,
         "\"rotary_dim\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,\"n_inner\":0}",
         ERR_FORMAT, "\"n_inner\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
         "\"activation_function\":\"relu\"}",
         ERR_UNSUPPORTED, "\"activation_function\" is \"relu\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
         "\"model_type\":\"gptj\"}",
         ERR_UNSUPPORTED, "\"model_type\" is \"gptj\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,\"model_type\":1}",
         ERR_FORMAT, "\"model_type\" must be a string"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
         "\"layer_norm_epsilon\":-1}",
         ERR_FORMAT, "layer_norm_epsilon"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
         "\"layer_norm_epsilon\":\"1e-5\"}",
         ERR_FORMAT, "layer_norm_epsilon"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
         "\"eos_token_id\":-1}",
         ERR_FORMAT, "\"eos_token_id\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
         "\"eos_token_id\":[1,2]}",
         ERR_FORMAT, "\"eos_token_id\""},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
         "\"torch_dtype\":\"a-very-long-dtype-name\"}",
         ERR_FORMAT, "torch_dtype"},
        {"{\"n_layer\":2,\"n_embd\":32,\"n_head\":4,\"rotary_dim\":4,\"n_ctx\":64,\"vocab_size\":100,"
         "\"tie_word_embeddings\":1}",
         ERR_FORMAT, "\"tie_word_embeddings\" must be true or false"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        model_config c;
        errbuf eb = {0};
        err rc = model_config_parse(cases[i].json, strlen(cases[i].json), &c, &eb);
        if (rc != cases[i].want)
            fail_msg("case %zu (%s): got %s, want %s: %s", i, cases[i].json, err_name(rc), err_name(cases[i].want),
                     eb.msg);
        check_msg(&eb, "config.json");
        check_msg(&eb, cases[i].needle);
        assert_int_equal(c.n_layer, 0); /* zeroed on failure */
    }
}

/* ---- valid directories ---- */

static void load_dtype(st_dtype dt) {
    tu_ckpt_spec s = small;
    s.dtype = dt;
    char *dir = tu_mkdtemp();
    errbuf eb = {0};
    check_code(tu_write_checkpoint(dir, &s, &eb), ERR_OK, &eb);
    model *m = NULL;
    check_code(model_open(dir, &m, &eb), ERR_OK, &eb);
    check_model(m, &s);
    assert_int_equal(m->n_shards, 1);
    const char *want_dtype = dt == ST_F32 ? "float32" : dt == ST_F16 ? "float16" : "bfloat16";
    assert_string_equal(m->cfg.torch_dtype, want_dtype);
    /* Data is used in place: spot-check values against testutil's recipe (wte is tensor 0, lm_head.bias the last). */
    const int last = 4 + 8 * s.n_layer;
    for (size_t i = 0; i < 5; i++) {
        assert_true(load_elem(m->wte, i) == round_to(dt, tu_value(&s, 0, i, 1.0, 0.0)));
        size_t j = (size_t)s.vocab_size - 1 - i;
        assert_true(load_elem(m->lm_head_b, j) == round_to(dt, tu_value(&s, last, j, 0.1, 0.0)));
        assert_true(load_elem(m->layers[1].ln_1_w, i) == round_to(dt, tu_value(&s, 1 + 8, i, 0.2, 1.0)));
    }
    model_close(m);
    tu_rmtree_free(dir);
}

static void test_load_f32(void **state) {
    (void)state;
    load_dtype(ST_F32);
}

static void test_load_f16(void **state) {
    (void)state;
    load_dtype(ST_F16);
}

static void test_load_bf16(void **state) {
    (void)state;
    load_dtype(ST_BF16);
}

static void test_load_ignores_buffers_and_unknowns(void **state) {
    (void)state;
    char *dir = dir_with_config(&small);
    gen_ckpt g;
    gen_codegen(&g, &small);
    gen_add(&g, "transformer.h.0.attn.causal_mask", ST_U8, 2, 8, 8);
    gen_add(&g, "transformer.h.1.attn.masked_bias", ST_F32, 0, 0, 0);
    gen_add(&g, "transformer.h.1.attn.bias", ST_BOOL, 2, 8, 8);
    gen_add(&g, "transformer.h.2.ln_1.weight", ST_F32, 1, 32, 0);  /* layer beyond n_layer */
    gen_add(&g, "transformer.h.01.ln_1.weight", ST_F32, 1, 32, 0); /* not a canonical layer number */
    gen_add(&g, "rotary.inv_freq", ST_F32, 1, 2, 0);
    gen_write(&g, dir, "model.safetensors", 0);
    log_set_level(LOG_LEVEL_ERROR); /* the warnings are expected */
    model *m = NULL;
    errbuf eb = {0};
    check_code(model_open(dir, &m, &eb), ERR_OK, &eb);
    log_set_level(LOG_LEVEL_INFO);
    check_model(m, &small);
    assert_int_equal(st_count(m->shards[0]), (size_t)g.n);
    model_close(m);
    tu_rmtree_free(dir);
}

static void test_load_sharded(void **state) {
    (void)state;
    char *dir = dir_with_config(&small);
    gen_ckpt g;
    gen_codegen(&g, &small);
    for (int i = g.n / 2; i < g.n; i++) g.t[i].shard = 1;
    static const char *const names[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    gen_write_sharded(&g, dir, names);
    model *m = NULL;
    errbuf eb = {0};
    check_code(model_open(dir, &m, &eb), ERR_OK, &eb);
    check_model(m, &small);
    assert_int_equal(m->n_shards, 2);
    assert_non_null(strstr(st_name(m->shards[0]), names[0]));
    assert_non_null(strstr(st_name(m->shards[1]), names[1]));
    assert_ptr_equal(st_find(m->shards[0], "transformer.wte.weight"), m->wte);
    assert_ptr_equal(st_find(m->shards[1], "lm_head.bias"), m->lm_head_b);
    model_close(m);
    tu_rmtree_free(dir);
}

/* Rewrites dir/config.json with "tie_word_embeddings": true. */
static void config_tied(const char *dir, const tu_ckpt_spec *s) {
    char js[512];
    int n = snprintf(js, sizeof(js),
                     "{\"model_type\": \"codegen\", \"n_layer\": %d, \"n_embd\": %d, \"n_head\": %d, "
                     "\"rotary_dim\": %d, \"n_positions\": %d, \"vocab_size\": %d, \"bos_token_id\": 1, "
                     "\"tie_word_embeddings\": true, \"torch_dtype\": \"float32\"}",
                     s->n_layer, s->n_embd, s->n_head, s->rotary_dim, s->n_positions, s->vocab_size);
    assert_true(n > 0 && (size_t)n < sizeof(js));
    assert_int_equal(tu_write_file(dir, "config.json", js, (size_t)n), 0);
}

/* tie_word_embeddings: lm_head.weight is wte, whether the file lacks it (a safetensors save of a tied model) or also
 * holds it (torch.save keeps both names); lm_head.bias is still read from the file. */
static void test_load_tied(void **state) {
    (void)state;
    const int64_t D = small.n_embd, V = small.vocab_size;
    for (int with_copy = 0; with_copy < 2; with_copy++) {
        char *dir = dir_with_config(&small);
        config_tied(dir, &small);
        gen_ckpt g;
        gen_codegen(&g, &small);
        if (!with_copy) gen_find(&g, "lm_head.weight")->shard = -1;
        gen_write(&g, dir, "model.safetensors", 0);
        model *m = NULL;
        errbuf eb = {0};
        check_code(model_open(dir, &m, &eb), ERR_OK, &eb);
        assert_int_equal(m->cfg.tie_word_embeddings, 1);
        check_tensor(m, m->wte, "transformer.wte.weight", 2, V, D);
        assert_ptr_equal(m->lm_head_w, m->wte);
        check_tensor(m, m->lm_head_b, "lm_head.bias", 1, V, 0);
        check_tensor(m, m->layers[1].fc_out_w, "transformer.h.1.mlp.fc_out.weight", 2, D, 4 * D);
        /* one [V, D] matrix fewer than the untied model (f32 here) */
        assert_int_equal(model_weight_bytes(m), expected_weight_bytes(&small) - (uint64_t)(V * D) * 4);
        model_close(m);

        /* a tied model still needs wte (named as missing, not lm_head) and the lm_head bias */
        gen_find(&g, "transformer.wte.weight")->shard = -1;
        gen_write(&g, dir, "model.safetensors", 0);
        expect_open_fails(dir, ERR_FORMAT, "missing tensor 'transformer.wte.weight'", NULL);
        gen_find(&g, "transformer.wte.weight")->shard = 0;
        gen_find(&g, "lm_head.bias")->shard = -1;
        gen_write(&g, dir, "model.safetensors", 0);
        expect_open_fails(dir, ERR_FORMAT, "missing tensor 'lm_head.bias'", NULL);
        tu_rmtree_free(dir);
    }
    /* untied (the default), a missing lm_head.weight is an error */
    char *dir = dir_with_config(&small);
    gen_ckpt g;
    gen_codegen(&g, &small);
    gen_find(&g, "lm_head.weight")->shard = -1;
    gen_write(&g, dir, "model.safetensors", 0);
    expect_open_fails(dir, ERR_FORMAT, "missing tensor 'lm_head.weight'", NULL);
    tu_rmtree_free(dir);
}

/* ---- broken directories ---- */

static void test_missing_files(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    expect_open_fails(dir, ERR_IO, "config.json", NULL);
    tu_rmtree_free(dir);

    expect_open_fails("/nonexistent/suggestd/model", ERR_IO, "/nonexistent/suggestd/model/config.json", NULL);

    dir = dir_with_config(&small);
    expect_open_fails(dir, ERR_IO, "model.safetensors", NULL);
    tu_rmtree_free(dir);
}

static void test_bad_config_in_dir(void **state) {
    (void)state;
    tu_ckpt_spec s = small;
    s.n_head = 2; /* 32 / 2 = 16, but not a multiple of 4 */
    char *dir = tu_mkdtemp();
    errbuf eb = {0};
    check_code(tu_write_checkpoint(dir, &s, &eb), ERR_OK, &eb);
    expect_open_fails(dir, ERR_UNSUPPORTED, "config.json", "n_head 2 is not a multiple of 4");
    assert_int_equal(tu_write_file(dir, "config.json", "{oops", 5), 0);
    expect_open_fails(dir, ERR_FORMAT, "config.json", "not valid JSON");
    tu_rmtree_free(dir);
}

static void test_bad_safetensors_in_dir(void **state) {
    (void)state;
    char *dir = dir_with_config(&small);
    assert_int_equal(tu_write_file(dir, "model.safetensors", "\x10\0\0\0", 4), 0);
    expect_open_fails(dir, ERR_FORMAT, "model.safetensors", "too short");
    tu_rmtree_free(dir);
}

static void test_missing_tensor(void **state) {
    (void)state;
    char *dir = dir_with_config(&small);
    gen_ckpt g;
    gen_codegen(&g, &small);
    gen_find(&g, "transformer.h.1.mlp.fc_in.bias")->shard = -1;
    gen_write(&g, dir, "model.safetensors", 0);
    expect_open_fails(dir, ERR_FORMAT, "model.safetensors: missing tensor 'transformer.h.1.mlp.fc_in.bias'", NULL);

    gen_codegen(&g, &small);
    gen_find(&g, "lm_head.bias")->shard = -1;
    gen_write(&g, dir, "model.safetensors", 0);
    expect_open_fails(dir, ERR_FORMAT, "missing tensor 'lm_head.bias'", NULL);
    tu_rmtree_free(dir);
}

static void test_wrong_shape(void **state) {
    (void)state;
    char *dir = dir_with_config(&small);
    gen_ckpt g;
    gen_codegen(&g, &small);
    gen_find(&g, "transformer.h.1.mlp.fc_in.weight")->shape[1] = 33;
    gen_write(&g, dir, "model.safetensors", 0);
    expect_open_fails(dir, ERR_FORMAT, "model.safetensors: tensor 'transformer.h.1.mlp.fc_in.weight'",
                      "has shape [128, 33], but config.json implies [128, 32]");

    gen_codegen(&g, &small);
    gen_tensor *t = gen_find(&g, "transformer.ln_f.bias");
    t->n_dims = 2, t->shape[0] = 1, t->shape[1] = 32;
    gen_write(&g, dir, "model.safetensors", 0);
    expect_open_fails(dir, ERR_FORMAT, "'transformer.ln_f.bias' has shape [1, 32], but config.json implies [32]", NULL);

    /* The config disagrees with every tensor: the first one is named. */
    tu_ckpt_spec s = small;
    s.vocab_size = 97;
    gen_codegen(&g, &s);
    gen_write(&g, dir, "model.safetensors", 0);
    expect_open_fails(dir, ERR_FORMAT, "'transformer.wte.weight' has shape [97, 32], but config.json implies [96, 32]",
                      NULL);
    tu_rmtree_free(dir);
}

static void test_dtypes_rejected(void **state) {
    (void)state;
    char *dir = dir_with_config(&small);
    gen_ckpt g;
    gen_codegen(&g, &small);
    gen_find(&g, "transformer.h.0.attn.out_proj.weight")->dtype = ST_F16;
    gen_write(&g, dir, "model.safetensors", 0);
    expect_open_fails(dir, ERR_UNSUPPORTED, "tensor 'transformer.h.0.attn.out_proj.weight' is F16",
                      "'transformer.wte.weight' is F32");

    tu_ckpt_spec s = small;
    s.dtype = ST_I32;
    gen_codegen(&g, &s);
    gen_write(&g, dir, "model.safetensors", 0);
    expect_open_fails(dir, ERR_UNSUPPORTED, "'transformer.wte.weight' is I32", "F32, F16 or BF16");
    tu_rmtree_free(dir);
}

static void test_sharded_errors(void **state) {
    (void)state;
    static const char *const names[2] = {"a.safetensors", "b.safetensors"};
    gen_ckpt g;
    gen_codegen(&g, &small);
    for (int i = g.n / 2; i < g.n; i++) g.t[i].shard = 1;

    /* The index names a shard that is not there. */
    char *dir = dir_with_config(&small);
    gen_write_sharded(&g, dir, names);
    char path[1024];
    snprintf(path, sizeof(path), "%s/b.safetensors", dir);
    assert_int_equal(unlink(path), 0);
    expect_open_fails(dir, ERR_IO, "b.safetensors", NULL);
    tu_rmtree_free(dir);

    /* Shard names that leave the directory. */
    dir = dir_with_config(&small);
    static const char *const evil[2] = {"a.safetensors", "../b.safetensors"};
    gen_write(&g, dir, "a.safetensors", 0);
    char idx[256];
    int n = snprintf(idx, sizeof(idx),
                     "{\"weight_map\": {\"transformer.wte.weight\": \"%s\", \"lm_head.bias\": \"%s\"}}", evil[0],
                     evil[1]);
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", idx, (size_t)n), 0);
    expect_open_fails(dir, ERR_FORMAT, "model.safetensors.index.json", "'../b.safetensors' is not a plain file name");
    n = snprintf(idx, sizeof(idx), "{\"weight_map\": {\"lm_head.bias\": \"/etc/passwd\"}}");
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", idx, (size_t)n), 0);
    expect_open_fails(dir, ERR_FORMAT, "'/etc/passwd' is not a plain file name", "lm_head.bias");
    n = snprintf(idx, sizeof(idx), "{\"weight_map\": {\"lm_head.bias\": \"..\"}}");
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", idx, (size_t)n), 0);
    expect_open_fails(dir, ERR_FORMAT, "not a plain file name", NULL);
    n = snprintf(idx, sizeof(idx), "{\"weight_map\": {\"lm_head.bias\": \"\"}}");
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", idx, (size_t)n), 0);
    expect_open_fails(dir, ERR_FORMAT, "not a plain file name", NULL);

    /* Malformed indexes. */
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", "{\"weight_map\":", 14), 0);
    expect_open_fails(dir, ERR_FORMAT, "model.safetensors.index.json", "not valid JSON");
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", "{\"metadata\":{}}", 15), 0);
    expect_open_fails(dir, ERR_FORMAT, "model.safetensors.index.json", "weight_map");
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x\":1}}", 22), 0);
    expect_open_fails(dir, ERR_FORMAT, "tensor 'x'", "not a string");
    /* An empty weight_map opens nothing and misses everything. */
    assert_int_equal(tu_write_file(dir, "model.safetensors.index.json", "{\"weight_map\":{}}", 17), 0);
    expect_open_fails(dir, ERR_FORMAT, "model.safetensors.index.json: missing tensor 'transformer.wte.weight'", NULL);
    tu_rmtree_free(dir);

    /* The index puts a tensor in a shard that does not hold it. */
    dir = dir_with_config(&small);
    gen_write_sharded(&g, dir, names);
    gen_find(&g, "lm_head.bias")->shard = 0; /* the data stays in b; the index now says a */
    gen_write_index(&g, dir, names);
    gen_find(&g, "lm_head.bias")->shard = 1;
    expect_open_fails(dir, ERR_FORMAT, "weight_map puts tensor 'lm_head.bias' in", "a.safetensors, which does not");
    tu_rmtree_free(dir);

    /* A tensor in two shards. */
    dir = dir_with_config(&small);
    gen_codegen(&g, &small);
    for (int i = g.n / 2; i < g.n; i++) g.t[i].shard = 1;
    gen_write_sharded(&g, dir, names);
    gen_find(&g, "transformer.wte.weight")->shard = 1;
    gen_write(&g, dir, "b.safetensors", 1);
    expect_open_fails(dir, ERR_FORMAT, "tensor 'transformer.wte.weight' is also in", NULL);
    tu_rmtree_free(dir);
}

static void test_null_model(void **state) {
    (void)state;
    model_close(NULL);
    assert_int_equal(model_weight_bytes(NULL), 0);
    model *m = NULL;
    assert_int_equal(model_open("/nonexistent/suggestd", &m, NULL), ERR_IO);
    assert_null(m);
}

/* ---- fault injection ---- */

static void alloc_fail_loop(const char *dir, const tu_ckpt_spec *s) {
    int ok_at = -1;
    for (long n = 0; n < 5000 && ok_at < 0; n++) {
        model *m = NULL;
        errbuf eb = {0};
        alloc_fail_after(n);
        err rc = model_open(dir, &m, &eb);
        alloc_fail_after(-1);
        if (rc == ERR_OK) {
            ok_at = (int)n;
            check_model(m, s);
            model_close(m);
        } else {
            if (rc != ERR_NOMEM) fail_msg("fail after %ld: got %s: %s", n, err_name(rc), eb.msg);
            assert_null(m);
        }
    }
    assert_true(ok_at > 0);
}

static void test_alloc_failures(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    errbuf eb = {0};
    check_code(tu_write_checkpoint(dir, &small, &eb), ERR_OK, &eb);
    alloc_fail_loop(dir, &small);
    tu_rmtree_free(dir);

    dir = dir_with_config(&small);
    gen_ckpt g;
    gen_codegen(&g, &small);
    for (int i = g.n / 2; i < g.n; i++) g.t[i].shard = 1;
    static const char *const names[2] = {"a.safetensors", "b.safetensors"};
    gen_write_sharded(&g, dir, names);
    alloc_fail_loop(dir, &small);
    tu_rmtree_free(dir);

    /* model_config_parse alone. */
    int ok_at = -1;
    for (long n = 0; n < 1000 && ok_at < 0; n++) {
        model_config c;
        alloc_fail_after(n);
        err rc = model_config_parse(cfg_350m, strlen(cfg_350m), &c, &eb);
        alloc_fail_after(-1);
        if (rc == ERR_OK) ok_at = (int)n;
        else check_code(rc, ERR_NOMEM, &eb);
    }
    assert_true(ok_at > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_350m),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_load_f32),
        cmocka_unit_test(test_load_f16),
        cmocka_unit_test(test_load_bf16),
        cmocka_unit_test(test_load_ignores_buffers_and_unknowns),
        cmocka_unit_test(test_load_sharded),
        cmocka_unit_test(test_load_tied),
        cmocka_unit_test(test_missing_files),
        cmocka_unit_test(test_bad_config_in_dir),
        cmocka_unit_test(test_bad_safetensors_in_dir),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_dtypes_rejected),
        cmocka_unit_test(test_sharded_errors),
        cmocka_unit_test(test_null_model),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
