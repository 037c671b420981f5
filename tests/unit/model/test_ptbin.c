/* test_ptbin.c - pytorch_model.bin: the zip reader, the restricted pickle VM and model_open on .bin directories.
 *
 * Two kinds of fixture live in tests/unit/model/data:
 *  - torch_tiny_f16/ (pytorch_model.bin + config.json) was written by the real torch.save (torch 2.11, on the GPU
 *    machine) through tools/make_ptbin_torch.py; torch_save.log beside it is that script's output (torch's dtype,
 *    shape and sha256 prefix of every tensor). It carries torch's own container details (`pytorch_model/` top
 *    folder, .format_version, .storage_alignment, the `_metadata` BUILD) and uint8 causal_mask buffers.
 *  - the flat *.bin files were written by tools/make_ptbin.py (stdlib only, regenerable without torch), which
 *    produces torch.save's layout (stored entries padded to 64 bytes, a protocol-2 pickle with torch's GLOBALs and
 *    persistent ids); they add what torch alone does not give us: f32 through ZIP64, bf16 with a protocol-4 pickle,
 *    and the refusal fixtures (a pickle naming posix.system, builtins.eval through STACK_GLOBAL, out-of-range
 *    storage offsets, a wrong storage size, a transposed view, a deflated entry).
 * All tiny checkpoints follow the testutil.h weight recipe, so each must equal, byte for byte, the safetensors twin
 * that tu_write_checkpoint writes for the same spec. Truncations and corruptions are made here from the good files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc.h"
#include "forward.h"
#include "fp16.h"
#include "mapfile.h"
#include "model.h"
#include "pt.h"
#include "testutil.h"

/* Must match TINY in tools/make_ptbin.py and tools/make_ptbin_torch.py. */
static const tu_ckpt_spec tiny = {
    .n_layer = 2, .n_embd = 16, .n_head = 4, .rotary_dim = 2, .n_positions = 32, .vocab_size = 64,
    .dtype = ST_F16, .seed = 4242,
};

static void check_code(err got, err want, const errbuf *eb) {
    if (got != want) fail_msg("got %s, want %s (message: \"%s\")", err_name(got), err_name(want), eb->msg);
}

static void check_msg(const errbuf *eb, const char *needle) {
    if (needle && !strstr(eb->msg, needle)) fail_msg("message \"%s\" does not contain \"%s\"", eb->msg, needle);
}

static char *fixture(const char *name) {
    char rel[256];
    snprintf(rel, sizeof(rel), "tests/unit/model/data/%s", name);
    char *p = tu_source_path(rel);
    assert_non_null(p);
    return p;
}

/* The fixture's bytes in an exact-size heap buffer (so ASan sees any read past the end). */
static unsigned char *slurp(const char *name, size_t *len) {
    char *path = fixture(name), *text = NULL;
    errbuf eb = {0};
    check_code(file_read_all(path, &text, len, 1u << 20, &eb), ERR_OK, &eb);
    unsigned char *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    memcpy(b, text, *len);
    xfree(text);
    free(path);
    return b;
}

static void expect_parse_fails(const unsigned char *b, size_t len, err want, const char *n1, const char *n2) {
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, b, len);
    pt_file *f = (pt_file *)&want;
    errbuf eb = {0};
    err rc = pt_parse(copy, len, "x.bin", &f, &eb);
    check_code(rc, want, &eb);
    assert_null(f);
    check_msg(&eb, n1);
    check_msg(&eb, n2);
    free(copy);
}

static void expect_open_fails(const char *name, err want, const char *n1, const char *n2) {
    char *path = fixture(name);
    pt_file *f = (pt_file *)&want;
    errbuf eb = {0};
    err rc = pt_open(path, &f, &eb);
    check_code(rc, want, &eb);
    assert_null(f);
    check_msg(&eb, name); /* errors name the file */
    check_msg(&eb, n1);
    check_msg(&eb, n2);
    free(path);
}

/* ---- reading ---- */

static void test_small(void **state) {
    (void)state;
    char *path = fixture("small.bin");
    pt_file *f = NULL;
    errbuf eb = {0};
    check_code(pt_open(path, &f, &eb), ERR_OK, &eb);
    assert_int_equal(pt_count(f), 2);
    assert_string_equal(pt_name(f), path);
    const st_tensor *a = pt_find(f, "a"), *b = pt_find(f, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_equal(pt_at(f, 0), a); /* pickle order */
    assert_null(pt_at(f, 2));
    assert_null(pt_find(f, "c"));
    assert_int_equal(a->dtype, ST_F32);
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->nbytes, 24);
    const float *fa = a->data;
    for (int i = 0; i < 6; i++) assert_true(fa[i] == (float)(i + 2)); /* storage_offset 2 honoured */
    assert_int_equal((uintptr_t)fa % 8, 0);
    assert_int_equal(b->dtype, ST_F16);
    assert_int_equal(b->n_dims, 1);
    assert_int_equal(b->nbytes, 8);
    assert_int_equal((uintptr_t)b->data % 64, 0); /* torch pads records to 64 bytes; mapped in place */
    const uint16_t *hb = b->data;
    for (int i = 0; i < 4; i++) assert_true(fp16_to_f32(hb[i]) == (float)(i + 1));
    pt_close(f);
    pt_close(NULL);
    free(path);
}

/* Copies fixture `name` into dir as `as`. */
static void copy_fixture(const char *name, const char *dir, const char *as) {
    size_t len;
    unsigned char *b = slurp(name, &len);
    assert_int_equal(tu_write_file(dir, as, b, len), 0);
    free(b);
}

/* A directory with config.json for spec and the fixture as pytorch_model.bin; the safetensors twin in *twin. */
static char *bin_dir(const char *name, st_dtype dt, char **twin) {
    tu_ckpt_spec s = tiny;
    s.dtype = dt;
    errbuf eb = {0};
    *twin = tu_mkdtemp();
    assert_non_null(*twin);
    check_code(tu_write_checkpoint(*twin, &s, &eb), ERR_OK, &eb);
    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    check_code(tu_write_checkpoint(dir, &s, &eb), ERR_OK, &eb);
    char p[1024];
    snprintf(p, sizeof(p), "%s/model.safetensors", dir);
    assert_int_equal(unlink(p), 0);
    copy_fixture(name, dir, "pytorch_model.bin");
    return dir;
}

static void assert_same_tensor(const st_tensor *x, const st_tensor *y) {
    assert_non_null(x);
    assert_non_null(y);
    assert_string_equal(x->name, y->name);
    assert_int_equal(x->dtype, y->dtype);
    assert_int_equal(x->n_dims, y->n_dims);
    for (int d = 0; d < x->n_dims; d++) assert_int_equal(x->shape[d], y->shape[d]);
    assert_int_equal(x->nbytes, y->nbytes);
    if (memcmp(x->data, y->data, x->nbytes)) fail_msg("tensor '%s': bytes differ from the safetensors twin", x->name);
}

static void assert_same_model(const model *a, const model *b) {
    assert_int_equal(a->dtype, b->dtype);
    assert_int_equal(a->cfg.n_layer, b->cfg.n_layer);
    assert_same_tensor(a->wte, b->wte);
    for (int l = 0; l < a->cfg.n_layer; l++) {
        const model_layer *x = &a->layers[l], *y = &b->layers[l];
        assert_same_tensor(x->ln_1_w, y->ln_1_w);
        assert_same_tensor(x->ln_1_b, y->ln_1_b);
        assert_same_tensor(x->qkv, y->qkv);
        assert_same_tensor(x->out_proj, y->out_proj);
        assert_same_tensor(x->fc_in_w, y->fc_in_w);
        assert_same_tensor(x->fc_in_b, y->fc_in_b);
        assert_same_tensor(x->fc_out_w, y->fc_out_w);
        assert_same_tensor(x->fc_out_b, y->fc_out_b);
    }
    assert_same_tensor(a->ln_f_w, b->ln_f_w);
    assert_same_tensor(a->ln_f_b, b->ln_f_b);
    assert_same_tensor(a->lm_head_w, b->lm_head_w);
    assert_same_tensor(a->lm_head_b, b->lm_head_b);
    assert_int_equal(model_weight_bytes(a), model_weight_bytes(b));
}

/* Greedy decoding on the CPU backend: the prompt, then n tokens, each the argmax of the last logits. */
static void greedy(const model *m, const int32_t *prompt, int32_t n_prompt, int32_t *out, int n) {
    enum { CTX = 2 * ENG_KV_BLOCK };
    assert_true(n_prompt > 0 && n_prompt + n <= CTX && n_prompt + n <= m->cfg.n_positions);
    eng_backend *be = NULL;
    eng_model *em = NULL;
    errbuf eb = {0};
    check_code(eng_backend_create("cpu", 1, &be, &eb), ERR_OK, &eb);
    eng_model_opts mo = {.max_rows = CTX, .kv_dtype = -1};
    check_code(eng_model_create(be, m, &mo, &em, &eb), ERR_OK, &eb);
    const int32_t V = m->cfg.vocab_size, blocks[2] = {0, 1};
    float *logits = malloc((size_t)V * sizeof(float));
    assert_non_null(logits);
    int32_t toks[CTX], pos[CTX];
    memcpy(toks, prompt, (size_t)n_prompt * sizeof(*toks));
    int32_t n_tok = n_prompt;
    for (int32_t i = 0; i < CTX; i++) pos[i] = i;
    int32_t row0 = 0, n_rows = n_tok;
    for (int step = 0; step < n; step++) {
        eng_seq s = {0, n_rows, row0, blocks, 2};
        eng_batch b = {1, &s, n_rows, toks + row0, pos + row0};
        int32_t lr = n_rows - 1;
        check_code(eng_model_forward(em, &b, &lr, 1, logits, &eb), ERR_OK, &eb);
        int32_t best = 0;
        for (int32_t v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        out[step] = best;
        toks[n_tok] = best;
        row0 = n_tok++, n_rows = 1;
    }
    free(logits);
    eng_model_destroy(em);
    eng_backend_destroy(be);
}

static const int32_t prompt0[] = {3, 17, 42, 5};

/* The same greedy tokens from both models, for n new tokens after the prompt. */
static void check_same_tokens(const model *mb, const model *ms, const int32_t *prompt, int32_t n_prompt, int n) {
    int32_t gb[32], gs[32];
    assert_true(n <= 32);
    greedy(mb, prompt, n_prompt, gb, n);
    greedy(ms, prompt, n_prompt, gs, n);
    for (int i = 0; i < n; i++)
        if (gb[i] != gs[i])
            fail_msg("prompt of %d tokens, greedy token %d: .bin gives %d, safetensors %d", (int)n_prompt, i, gb[i],
                     gs[i]);
}

static void check_twin(const char *name, st_dtype dt) {
    char *twin, *dir = bin_dir(name, dt, &twin);
    model *mb = NULL, *ms = NULL;
    errbuf eb = {0};
    check_code(model_open(dir, &mb, &eb), ERR_OK, &eb);
    check_code(model_open(twin, &ms, &eb), ERR_OK, &eb);
    assert_same_model(mb, ms);
    /* Equal tensors imply equal tokens; check the whole path anyway. */
    check_same_tokens(mb, ms, prompt0, 4, 12);
    model_close(mb);
    model_close(ms);

    /* The .bin carries the uint8 causal_mask buffers CodeGen checkpoints have; model_open skipped them. */
    char p[1024];
    snprintf(p, sizeof(p), "%s/pytorch_model.bin", dir);
    pt_file *f = NULL;
    check_code(pt_open(p, &f, &eb), ERR_OK, &eb);
    assert_int_equal(pt_count(f), 5 + 9 * (size_t)tiny.n_layer);
    const st_tensor *mask = pt_find(f, "transformer.h.1.attn.causal_mask");
    assert_non_null(mask);
    assert_int_equal(mask->dtype, ST_U8);
    assert_int_equal(mask->n_dims, 4);
    assert_int_equal(mask->shape[3], tiny.n_positions);
    const unsigned char *mk = mask->data;
    assert_int_equal(mk[0], 1);
    assert_int_equal(mk[1], 0);
    assert_int_equal(mk[tiny.n_positions], 1);
    pt_close(f);
    tu_rmtree_free(dir);
    tu_rmtree_free(twin);
}

static void test_twin_f16(void **state) { (void)state, check_twin("tiny_f16.bin", ST_F16); }
static void test_twin_f32_zip64(void **state) { (void)state, check_twin("tiny_f32_zip64.bin", ST_F32); }
static void test_twin_bf16_proto4(void **state) { (void)state, check_twin("tiny_bf16_proto4.bin", ST_BF16); }

/* The real torch.save output (tools/make_ptbin_torch.py): a model directory as torch wrote it, config.json included. */
#define TORCH_F16_DIR "torch_tiny_f16"
#define TORCH_F16_BIN TORCH_F16_DIR "/pytorch_model.bin"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

/* Every tensor torch wrote, in pickle order, against the safetensors twin; the masks are CodeGen's uint8 tril. */
static void test_torch_f16_tensors(void **state) {
    (void)state;
    char *bin = fixture(TORCH_F16_BIN), *twin = tu_mkdtemp();
    assert_non_null(twin);
    errbuf eb = {0};
    check_code(tu_write_checkpoint(twin, &tiny, &eb), ERR_OK, &eb);
    char p[1024];
    snprintf(p, sizeof(p), "%s/model.safetensors", twin);
    st_file *sf = NULL;
    check_code(st_open(p, &sf, &eb), ERR_OK, &eb);
    pt_file *f = NULL;
    check_code(pt_open(bin, &f, &eb), ERR_OK, &eb);
    const int64_t P = tiny.n_positions;
    assert_int_equal(pt_count(f), st_count(sf) + (size_t)tiny.n_layer);
    size_t k = 0, masks = 0;
    for (size_t i = 0; i < pt_count(f); i++) {
        const st_tensor *t = pt_at(f, i);
        assert_int_equal((uintptr_t)t->data % 64, 0); /* torch's .storage_alignment: each storage mapped in place */
        if (ends_with(t->name, ".attn.causal_mask")) {
            char want[64];
            snprintf(want, sizeof(want), "transformer.h.%zu.attn.causal_mask", masks);
            assert_string_equal(t->name, want);
            snprintf(want, sizeof(want), "transformer.h.%zu.attn.out_proj.weight", masks);
            assert_true(i > 0);
            assert_string_equal(pt_at(f, i - 1)->name, want); /* right after out_proj, as CodeGen registers it */
            assert_int_equal(t->dtype, ST_U8);
            assert_int_equal(t->n_dims, 4);
            assert_int_equal(t->shape[0], 1);
            assert_int_equal(t->shape[1], 1);
            assert_int_equal(t->shape[2], P);
            assert_int_equal(t->shape[3], P);
            assert_int_equal(t->nbytes, (size_t)(P * P));
            const unsigned char *mk = t->data;
            for (int64_t r = 0; r < P; r++)
                for (int64_t c = 0; c < P; c++)
                    if (mk[r * P + c] != (c <= r)) fail_msg("%s[%d][%d] = %d", t->name, (int)r, (int)c, mk[r * P + c]);
            masks++;
            continue;
        }
        assert_same_tensor(t, st_at(sf, k)); /* same name, order, dtype, shape and bytes */
        assert_ptr_equal(pt_find(f, t->name), t);
        k++;
    }
    assert_int_equal(k, st_count(sf));
    assert_int_equal(masks, (size_t)tiny.n_layer);
    pt_close(f);
    st_close(sf);
    free(bin);
    tu_rmtree_free(twin);
}

/* model_open on the directory torch wrote (its own config.json) skips the masks, binds the same weights as the
 * safetensors twin, and greedy decoding gives the same tokens for several prompts. */
static void test_torch_f16_model(void **state) {
    (void)state;
    char *dir = fixture(TORCH_F16_DIR), *twin = tu_mkdtemp();
    assert_non_null(twin);
    errbuf eb = {0};
    check_code(tu_write_checkpoint(twin, &tiny, &eb), ERR_OK, &eb);
    model *mb = NULL, *ms = NULL;
    check_code(model_open(dir, &mb, &eb), ERR_OK, &eb);
    check_code(model_open(twin, &ms, &eb), ERR_OK, &eb);
    assert_int_equal(mb->n_shards, 0); /* read from pytorch_model.bin, nothing else */
    assert_string_equal(mb->cfg.torch_dtype, "float16");
    assert_int_equal(mb->cfg.n_positions, tiny.n_positions);
    assert_int_equal(mb->cfg.rotary_dim, tiny.rotary_dim);
    assert_same_model(mb, ms); /* every bound tensor byte-identical; weight bytes equal, so no mask counted */
    static const int32_t bos[] = {1}, mixed[] = {60, 2, 2, 9, 33, 33, 0, 63, 14, 7};
    check_same_tokens(mb, ms, prompt0, 4, 12);
    check_same_tokens(mb, ms, bos, 1, 24);
    check_same_tokens(mb, ms, mixed, 10, 16);
    model_close(mb);
    model_close(ms);
    free(dir);
    tu_rmtree_free(twin);
}

/* pytorch_model.bin.index.json with the same weight_map format as safetensors'. */
static void test_sharded_index(void **state) {
    (void)state;
    char *twin, *dir = bin_dir("tiny_f16.bin", ST_F16, &twin);
    char p[1024];
    snprintf(p, sizeof(p), "%s/pytorch_model.bin", dir);
    char q[1024];
    snprintf(q, sizeof(q), "%s/pytorch_model-00001-of-00001.bin", dir);
    assert_int_equal(rename(p, q), 0);
    pt_file *f = NULL;
    errbuf eb = {0};
    check_code(pt_open(q, &f, &eb), ERR_OK, &eb);
    size_t cap = 64 * 1024, k = 0;
    char *json = malloc(cap);
    assert_non_null(json);
    k += (size_t)snprintf(json + k, cap - k, "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {");
    for (size_t i = 0; i < pt_count(f); i++)
        k += (size_t)snprintf(json + k, cap - k, "%s\"%s\": \"pytorch_model-00001-of-00001.bin\"", i ? ", " : "",
                              pt_at(f, i)->name);
    k += (size_t)snprintf(json + k, cap - k, "}}");
    assert_true(k < cap);
    pt_close(f);
    assert_int_equal(tu_write_file(dir, "pytorch_model.bin.index.json", json, k), 0);
    model *mb = NULL, *ms = NULL;
    check_code(model_open(dir, &mb, &eb), ERR_OK, &eb);
    check_code(model_open(twin, &ms, &eb), ERR_OK, &eb);
    assert_same_model(mb, ms);
    model_close(mb);
    model_close(ms);

    /* An index naming a tensor its shard lacks. */
    memcpy(strstr(json, "wte.weight"), "wte.wEight", 10);
    assert_int_equal(tu_write_file(dir, "pytorch_model.bin.index.json", json, k), 0);
    mb = (model *)&eb;
    err rc = model_open(dir, &mb, &eb);
    check_code(rc, ERR_FORMAT, &eb);
    assert_null(mb);
    check_msg(&eb, "wte.wEight");
    check_msg(&eb, "pytorch_model-00001-of-00001.bin");
    free(json);
    tu_rmtree_free(dir);
    tu_rmtree_free(twin);
}

/* safetensors wins when both are present. */
static void test_prefers_safetensors(void **state) {
    (void)state;
    char *twin;
    char *dir = bin_dir("evil_system.bin", ST_F16, &twin);
    copy_fixture("tiny_f16.bin", twin, "pytorch_model.bin");
    model *m = NULL;
    errbuf eb = {0};
    check_code(model_open(twin, &m, &eb), ERR_OK, &eb); /* the bad .bin beside it is never read */
    model_close(m);
    tu_rmtree_free(dir);
    tu_rmtree_free(twin);
}

/* ---- refusals ---- */

static void test_refuses_globals(void **state) {
    (void)state;
    unlink("/tmp/suggestd-pwned");
    expect_open_fails("evil_system.bin", ERR_UNSUPPORTED, "global 'posix.system' is not allowed", "offset");
    expect_open_fails("evil_eval_proto4.bin", ERR_UNSUPPORTED, "global 'builtins.eval' is not allowed", "offset");
    /* Through model_open too: no model, no side effect. */
    char *twin, *dir = bin_dir("evil_system.bin", ST_F16, &twin);
    model *m = (model *)&state;
    errbuf eb = {0};
    err rc = model_open(dir, &m, &eb);
    check_code(rc, ERR_UNSUPPORTED, &eb);
    assert_null(m);
    check_msg(&eb, "pytorch_model.bin");
    check_msg(&eb, "posix.system");
    struct stat sb;
    assert_int_not_equal(stat("/tmp/suggestd-pwned", &sb), 0);
    tu_rmtree_free(dir);
    tu_rmtree_free(twin);
}

static void test_refuses_bad_storage(void **state) {
    (void)state;
    expect_open_fails("bad_offset.bin", ERR_FORMAT, "tensor 'a'", "storage offset 6 + 6 elements run past the 8");
    expect_open_fails("bad_numel.bin", ERR_FORMAT, "tensor 'a'", "holds 32 bytes but the pickle says 9 elements");
    expect_open_fails("noncontig.bin", ERR_UNSUPPORTED, "tensor 'a'", "not C-contiguous");
    expect_open_fails("compressed.bin", ERR_UNSUPPORTED, "archive/data/1", "compressed");
}

static void test_truncated(void **state) {
    (void)state;
    const char *names[] = {"tiny_f16.bin", "tiny_f32_zip64.bin", "small.bin", TORCH_F16_BIN};
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        size_t len;
        unsigned char *b = slurp(names[k], &len);
        for (size_t cut = 0; cut < len; cut += (cut < 256 || len - cut < 512) ? 1 : 61) {
            unsigned char *copy = malloc(cut ? cut : 1);
            assert_non_null(copy);
            memcpy(copy, b, cut);
            pt_file *f = NULL;
            errbuf eb = {0};
            err rc = pt_parse(copy, cut, "t.bin", &f, &eb);
            if (rc == ERR_OK) fail_msg("%s cut to %zu of %zu bytes parsed", names[k], cut, len);
            assert_null(f);
            assert_true(strstr(eb.msg, "t.bin") != NULL);
            free(copy);
        }
        free(b);
    }
    unsigned char none[4] = {0};
    expect_parse_fails(none, 4, ERR_FORMAT, "too short", NULL);
}

/* Finds the last occurrence of a 4-byte little-endian signature. */
static size_t find_sig(const unsigned char *b, size_t len, uint32_t sig) {
    for (size_t i = len - 4 + 1; i-- > 0;)
        if (((uint32_t)b[i] | (uint32_t)b[i + 1] << 8 | (uint32_t)b[i + 2] << 16 | (uint32_t)b[i + 3] << 24) == sig)
            return i;
    fail_msg("signature %08x not found", sig);
    return 0;
}

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void test_corrupt_zip(void **state) {
    (void)state;
    size_t len;
    unsigned char *b = slurp("tiny_f32_zip64.bin", &len);
    unsigned char *c = malloc(len);
    assert_non_null(c);
    size_t loc = find_sig(b, len, 0x07064b50u), rec = find_sig(b, len, 0x06064b50u),
           cd = find_sig(b, len, 0x02014b50u);
    /* ZIP64 locator pointing elsewhere. */
    memcpy(c, b, len);
    put64(c + loc + 8, rec + 1);
    expect_parse_fails(c, len, ERR_FORMAT, "ZIP64 end record offset", NULL);
    /* ZIP64 directory offset past the end record. */
    memcpy(c, b, len);
    put64(c + rec + 48, rec - 10);
    expect_parse_fails(c, len, ERR_FORMAT, "central directory", NULL);
    /* The last entry's ZIP64 local offset made huge. */
    memcpy(c, b, len);
    size_t nl = (size_t)(c[cd + 28] | c[cd + 29] << 8);
    put64(c + cd + 46 + nl + 4 + 16, UINT64_MAX - 8);
    expect_parse_fails(c, len, ERR_FORMAT, "local header offset", NULL);
    /* A ZIP64 extra field cut short. */
    memcpy(c, b, len);
    c[cd + 46 + nl + 2] = 8;
    expect_parse_fails(c, len, ERR_FORMAT, "ZIP64 extra field", NULL);
    free(b);

    /* Classic archive: the data.pkl entry's local header moved, and an entry renamed to a duplicate. */
    b = slurp("small.bin", &len);
    c = realloc(c, len);
    assert_non_null(c);
    size_t first = find_sig(b, len, 0x06054b50u);
    uint32_t cdo = (uint32_t)b[first + 16] | (uint32_t)b[first + 17] << 8 | (uint32_t)b[first + 18] << 16 |
                   (uint32_t)b[first + 19] << 24;
    memcpy(c, b, len);
    c[cdo + 42] = 5;
    expect_parse_fails(c, len, ERR_FORMAT, "archive/data.pkl", "local header");
    memcpy(c, b, len);
    c[first + 16] ^= 0x40; /* directory offset wrong */
    expect_parse_fails(c, len, ERR_FORMAT, NULL, NULL);
    free(c);
    free(b);
}

/* Pickle bytes corrupted in place: every single-byte change either still parses or fails cleanly. */
static void test_pickle_mutations(void **state) {
    (void)state;
    size_t len;
    unsigned char *b = slurp("small.bin", &len);
    /* data.pkl is the first record: its bytes start at 64. Flip each one through a few values. */
    size_t pkl_len = 246;
    const unsigned char vals[] = {0x00, 0x2e, 0x28, 0x74, 0x80, 0xff, 'c', 'R', 'Q'};
    size_t ok = 0, bad = 0;
    for (size_t i = 64; i < 64 + pkl_len; i++) {
        for (size_t v = 0; v < sizeof(vals); v++) {
            unsigned char *c = malloc(len);
            assert_non_null(c);
            memcpy(c, b, len);
            c[i] = vals[v];
            pt_file *f = NULL;
            errbuf eb = {0};
            if (pt_parse(c, len, "m.bin", &f, &eb) == ERR_OK) ok++, pt_close(f);
            else bad++, assert_null(f), assert_non_null(strstr(eb.msg, "m.bin"));
            free(c);
        }
    }
    assert_true(bad > 0);
    (void)ok;
    free(b);
}

static void alloc_failures(const char *name) {
    char *path = fixture(name);
    for (int n = 0; n < 10000; n++) {
        alloc_fail_after(n);
        pt_file *f = NULL;
        errbuf eb = {0};
        err rc = pt_open(path, &f, &eb);
        alloc_fail_after(-1);
        if (rc == ERR_OK) {
            assert_true(pt_count(f) > 0);
            pt_close(f);
            break;
        }
        check_code(rc, ERR_NOMEM, &eb);
        assert_null(f);
    }
    free(path);
}

static void test_alloc_failures(void **state) {
    (void)state;
    alloc_failures("tiny_f16.bin");
    alloc_failures(TORCH_F16_BIN);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small),
        cmocka_unit_test(test_twin_f16),
        cmocka_unit_test(test_twin_f32_zip64),
        cmocka_unit_test(test_twin_bf16_proto4),
        cmocka_unit_test(test_torch_f16_tensors),
        cmocka_unit_test(test_torch_f16_model),
        cmocka_unit_test(test_sharded_index),
        cmocka_unit_test(test_prefers_safetensors),
        cmocka_unit_test(test_refuses_globals),
        cmocka_unit_test(test_refuses_bad_storage),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt_zip),
        cmocka_unit_test(test_pickle_mutations),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
