/* test_hub.c - hub's pure parts without a network: ORG/NAME@REV, path safety for names a hub sends, the listing
 * JSON in both of the hub's shapes (and hostile ones), which files a model needs, URL encoding, the catalogue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hub_impl.h"

static void test_ref_parse(void **state) {
    (void)state;
    hub_ref r;
    errbuf eb = {0};
    assert_int_equal(hub_ref_parse("Salesforce/codegen-350M-mono", &r, &eb), ERR_OK);
    assert_string_equal(r.org, "Salesforce");
    assert_string_equal(r.name, "codegen-350M-mono");
    assert_string_equal(r.rev, "main");
    assert_int_equal(r.has_rev, 0);
    assert_int_equal(hub_ref_parse("Salesforce/codegen-350M-mono@refs/pr/3", &r, &eb), ERR_OK);
    assert_string_equal(r.rev, "refs/pr/3");
    assert_int_equal(r.has_rev, 1);
    assert_int_equal(hub_ref_parse("a_b/c.d@4c0e830ab1", &r, &eb), ERR_OK);
    assert_string_equal(r.name, "c.d");
    const char *bad[] = {"", "codegen", "/x", "x/", "a/b/c", "../b", "a/..", "a/.b", "a/b@", "a/b@../x", "a/b@/x",
                         "a b/c", "a/b c", "a@r/b", "a/b@x y", "-a/b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        eb.msg[0] = 0;
        if (hub_ref_parse(bad[i], &r, &eb) != ERR_INVALID) fail_msg("'%s' was accepted", bad[i]);
        assert_true(eb.msg[0] != 0);
    }
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name));
    long_name[1] = '/';
    long_name[299] = 0;
    assert_int_equal(hub_ref_parse(long_name, &r, NULL), ERR_INVALID);
}

static void test_path_safe(void **state) {
    (void)state;
    const char *good[] = {"config.json", "model-00001-of-00002.safetensors", "onnx/model.onnx", "a..b", ".gitattributes"};
    const char *bad[] = {"", "/etc/passwd", "../x", "a/../../x", "..", ".", "a/./b", "a//b", "a/", "a\\..\\b",
                         "C:evil", "a\nb", "x/.."};
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        if (!hub_path_safe(good[i])) fail_msg("'%s' refused", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        if (hub_path_safe(bad[i])) fail_msg("'%s' accepted", bad[i]);
    assert_false(hub_path_safe(NULL));
}

#define SHA "0cea415e4fa58e6f94bdc4d55ad6b08b738d1de13af11d09ba99e9f1f3f35c17"

static void test_listing_tree(void **state) {
    (void)state;
    const char *json =
        "[{\"type\":\"directory\",\"oid\":\"ff\",\"size\":0,\"path\":\"onnx\"},"
        "{\"type\":\"file\",\"oid\":\"aa\",\"size\":1200,\"path\":\"config.json\"},"
        "{\"type\":\"file\",\"oid\":\"bb\",\"size\":134,\"path\":\"pytorch_model.bin\","
        "\"lfs\":{\"oid\":\"" SHA "\",\"size\":797367631,\"pointerSize\":134}}]";
    hub_listing l;
    errbuf eb = {0};
    assert_int_equal(hub_listing_parse(json, strlen(json), &l, &eb), ERR_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.files[0].path, "config.json");
    assert_int_equal(l.files[0].size, 1200);
    assert_string_equal(l.files[0].sha256, "");
    assert_string_equal(l.files[1].path, "pytorch_model.bin");
    assert_int_equal(l.files[1].size, 797367631); /* the LFS object's size, not the pointer's */
    assert_string_equal(l.files[1].sha256, SHA);
    hub_listing_fini(&l);
    hub_listing_fini(NULL);
}

static void test_listing_siblings(void **state) {
    (void)state;
    const char *json = "{\"id\":\"x/y\",\"siblings\":[{\"rfilename\":\"config.json\"},"
                       "{\"rfilename\":\"model.safetensors\",\"size\":10,\"lfs\":{\"sha256\":\"" SHA "\",\"size\":10}}]}";
    hub_listing l;
    assert_int_equal(hub_listing_parse(json, strlen(json), &l, NULL), ERR_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.files[0].size, -1);
    assert_string_equal(l.files[1].sha256, SHA);
    hub_listing_fini(&l);
}

static void test_listing_hostile(void **state) {
    (void)state;
    const char *bad[] = {
        "[{\"type\":\"file\",\"size\":4,\"path\":\"../../escape.safetensors\"}]",
        "[{\"type\":\"file\",\"size\":4,\"path\":\"/etc/cron.d/x\"}]",
        "[{\"type\":\"file\",\"size\":4,\"path\":\"a/../../b\"}]",
        "[{\"type\":\"file\",\"size\":-4,\"path\":\"config.json\"}]",
        "[{\"type\":\"file\",\"size\":\"4\",\"path\":\"config.json\"}]",
        "[{\"type\":\"file\",\"size\":4,\"path\":\"m.bin\",\"lfs\":{\"oid\":\"abc\",\"size\":4}}]",
        "[{\"type\":\"file\",\"size\":4,\"path\":\"m.bin\",\"lfs\":{\"oid\":\"" SHA "\",\"size\":-1}}]",
        "[{\"type\":\"file\",\"size\":4}]",
        "[3]",
        "{\"siblings\":7}",
        "{oops",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        hub_listing l;
        errbuf eb = {0};
        if (hub_listing_parse(bad[i], strlen(bad[i]), &l, &eb) != ERR_FORMAT) fail_msg("accepted: %s", bad[i]);
        assert_true(eb.msg[0] != 0);
        assert_null(l.files);
    }
    char sha_upper[65];
    for (int i = 0; i < 64; i++) sha_upper[i] = SHA[i] >= 'a' ? (char)(SHA[i] - 32) : SHA[i];
    sha_upper[64] = 0;
    char json[256];
    snprintf(json, sizeof(json), "[{\"path\":\"m.bin\",\"size\":4,\"lfs\":{\"oid\":\"%s\"}}]", sha_upper);
    hub_listing l;
    assert_int_equal(hub_listing_parse(json, strlen(json), &l, NULL), ERR_OK);
    assert_string_equal(l.files[0].sha256, SHA); /* compared in lower case */
    hub_listing_fini(&l);
}

/* Builds a listing of names (sizes 1) and returns the selected names joined by ','. */
static err select_names(const char *const *names, size_t n, char *out, size_t cap) {
    hub_file files[16] = {0};
    for (size_t i = 0; i < n; i++) files[i].path = (char *)names[i];
    hub_listing l = {files, n};
    size_t idx[16], k;
    err e = hub_listing_select(&l, idx, &k, NULL);
    out[0] = 0;
    for (size_t i = 0; e == ERR_OK && i < k; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? "," : "", names[idx[i]]);
    return e;
}

static void test_select(void **state) {
    (void)state;
    char got[512];
    /* what Salesforce/codegen-350M-mono's main branch holds */
    const char *codegen[] = {".gitattributes", "README.md", "added_tokens.json", "config.json", "merges.txt",
                             "pytorch_model.bin", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
                             "vocab.json"};
    assert_int_equal(select_names(codegen, 10, got, sizeof(got)), ERR_OK);
    assert_string_equal(got, "config.json,tokenizer.json,tokenizer_config.json,vocab.json,merges.txt,"
                             "added_tokens.json,special_tokens_map.json,pytorch_model.bin");
    const char *both[] = {"config.json", "tokenizer.json", "pytorch_model.bin", "model.safetensors"};
    assert_int_equal(select_names(both, 4, got, sizeof(got)), ERR_OK);
    assert_string_equal(got, "config.json,tokenizer.json,model.safetensors");
    const char *sharded[] = {"config.json", "vocab.json", "merges.txt", "model-00002-of-00002.safetensors",
                             "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                             "onnx/model.safetensors", "pytorch_model.bin"};
    assert_int_equal(select_names(sharded, 8, got, sizeof(got)), ERR_OK);
    assert_string_equal(got, "config.json,vocab.json,merges.txt,model.safetensors.index.json,"
                             "model-00002-of-00002.safetensors,model-00001-of-00002.safetensors");
    const char *bin_sharded[] = {"config.json", "tokenizer.json", "pytorch_model.bin.index.json",
                                 "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "other.bin"};
    assert_int_equal(select_names(bin_sharded, 6, got, sizeof(got)), ERR_OK);
    assert_string_equal(got, "config.json,tokenizer.json,pytorch_model.bin.index.json,"
                             "pytorch_model-00001-of-00002.bin,pytorch_model-00002-of-00002.bin");
    const char *no_config[] = {"tokenizer.json", "model.safetensors"};
    assert_int_equal(select_names(no_config, 2, got, sizeof(got)), ERR_FORMAT);
    const char *no_tok[] = {"config.json", "vocab.json", "model.safetensors"};
    assert_int_equal(select_names(no_tok, 3, got, sizeof(got)), ERR_FORMAT);
    const char *no_weights[] = {"config.json", "tokenizer.json", "model.safetensors.index.json"};
    assert_int_equal(select_names(no_weights, 3, got, sizeof(got)), ERR_FORMAT);
    const char *nested[] = {"config.json", "tokenizer.json", "sub/model.safetensors"};
    assert_int_equal(select_names(nested, 3, got, sizeof(got)), ERR_FORMAT);
}

static void test_url_encode(void **state) {
    (void)state;
    char out[64];
    assert_int_equal(hub__url_encode("refs/pr/3", 0, out, sizeof(out), NULL), ERR_OK);
    assert_string_equal(out, "refs%2Fpr%2F3");
    assert_int_equal(hub__url_encode("a b/c+d.json", 1, out, sizeof(out), NULL), ERR_OK);
    assert_string_equal(out, "a%20b/c%2Bd.json");
    assert_int_equal(hub__url_encode("////////", 0, out, 10, NULL), ERR_INVALID);
}

static void test_catalog(void **state) {
    (void)state;
    size_t n;
    const hub_catalog_entry *c = hub_catalog(&n);
    assert_int_equal(n, 12);
    assert_string_equal(c[0].repo, "Salesforce/codegen-350M-mono");
    assert_string_equal(c[11].repo, "Salesforce/codegen-16B-nl");
    assert_int_equal(hub_catalog_kv_bytes(&c[0]), 160LL << 20); /* codegen-model.md §9: 160 MiB at 2048 */
    assert_int_equal(hub_catalog_kv_bytes(&c[11]), 1632LL << 20);
    assert_int_equal(hub_catalog_mem_bytes(&c[0], 2), 356712448LL * 2 + (160LL << 20));
    assert_int_equal(hub_catalog_mem_bytes(&c[0], 1), 356712448LL + 51200LL * 1024 + (160LL << 20));
    for (size_t i = 0; i < n; i++) {
        hub_ref r;
        assert_int_equal(hub_ref_parse(c[i].repo, &r, NULL), ERR_OK);
        /* the .bin holds every parameter (plus 1-byte masks) at 2 or 4 bytes each */
        int64_t per = strcmp(c[i].dtype, "float32") ? 2 : 4;
        assert_true(c[i].download_bytes > c[i].params * per);
        assert_true(c[i].download_bytes < c[i].params * per + (int64_t)c[i].n_layer * 4194304 + 200000);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_parse),      cmocka_unit_test(test_path_safe),
        cmocka_unit_test(test_listing_tree),   cmocka_unit_test(test_listing_siblings),
        cmocka_unit_test(test_listing_hostile), cmocka_unit_test(test_select),
        cmocka_unit_test(test_url_encode),     cmocka_unit_test(test_catalog),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
