/* test_golden_tok.c - our token ids equal HF tokenizers' on the corpus and edge strings, through both loaders
 * (tokenizer.json, and vocab.json + merges.txt + added_tokens.json), and decode round-trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "alloc.h"
#include "mapfile.h"
#include "testutil.h"
#include "tok.h"

static json_t *golden;

static int setup(void **state) {
    (void)state;
    char *path = tu_source_path("tests/golden/data/tokenizer-golden.json");
    json_error_t je;
    golden = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!golden) fprintf(stderr, "%s: %s\n", path, je.text);
    xfree(path);
    return golden ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    json_decref(golden);
    return 0;
}

/* Compares ids with the golden array; prints the first difference with context. */
static void check_ids(const char *what, const int32_t *ids, size_t n, json_t *want) {
    size_t wn = json_array_size(want);
    size_t i = 0;
    for (; i < n && i < wn; i++)
        if (ids[i] != (int32_t)json_integer_value(json_array_get(want, i))) break;
    if (i < n || i < wn) {
        fprintf(stderr, "%s: first difference at token %zu (ours %zu tokens, HF %zu):\n  ours:", what, i, n, wn);
        for (size_t j = i >= 3 ? i - 3 : 0; j < i + 4 && j < n; j++) fprintf(stderr, " %d", ids[j]);
        fprintf(stderr, "\n  HF:  ");
        for (size_t j = i >= 3 ? i - 3 : 0; j < i + 4 && j < wn; j++)
            fprintf(stderr, " %lld", json_integer_value(json_array_get(want, j)));
        fprintf(stderr, "\n");
        fail_msg("%s: token ids differ from HF", what);
    }
}

static void run_all(const char *dir) {
    errbuf eb = {0};
    tok *t = NULL;
    if (tok_load(dir, &t, &eb) != ERR_OK) fail_msg("tok_load(%s): %s", dir, eb.msg);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(golden, "files"), i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        char rel[512];
        snprintf(rel, sizeof(rel), "tests/golden/corpus/%s", name);
        char *path = tu_source_path(rel), *text = NULL;
        size_t len = 0;
        assert_int_equal(file_read_all(path, &text, &len, 1 << 24, &eb), ERR_OK);
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(tok_encode(t, text, len, &ids, &n, &eb), ERR_OK);
        check_ids(name, ids, n, json_object_get(f, "ids"));
        char *back = NULL;
        size_t blen = 0;
        assert_int_equal(tok_decode(t, ids, n, &back, &blen), ERR_OK);
        assert_int_equal(blen, len);
        assert_memory_equal(back, text, len);
        xfree(back);
        xfree(ids);
        xfree(text);
        xfree(path);
    }
    json_array_foreach(json_object_get(golden, "strings"), i, f) {
        const char *text = json_string_value(json_object_get(f, "text"));
        size_t len = json_string_length(json_object_get(f, "text"));
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(tok_encode(t, text, len, &ids, &n, &eb), ERR_OK);
        char what[64];
        snprintf(what, sizeof(what), "%s: string #%zu", dir, i);
        check_ids(what, ids, n, json_object_get(f, "ids"));
        xfree(ids);
    }
    tok_destroy(t);
}

/* The shipped directory has tokenizer.json (written by HF tokenizers), so this exercises that loader. */
static void test_tokenizer_json(void **state) {
    (void)state;
    char *dir = tu_source_path("models/codegen-tokenizer");
    run_all(dir);
    xfree(dir);
}

/* The same directory without tokenizer.json exercises vocab.json + merges.txt + added_tokens.json. */
static void test_vocab_merges(void **state) {
    (void)state;
    char *tmp = tu_mkdtemp();
    assert_non_null(tmp);
    const char *files[] = {"vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json"};
    for (size_t k = 0; k < sizeof(files) / sizeof(files[0]); k++) {
        char rel[256];
        snprintf(rel, sizeof(rel), "models/codegen-tokenizer/%s", files[k]);
        char *src = tu_source_path(rel), *data = NULL;
        size_t len = 0;
        errbuf eb = {0};
        assert_int_equal(file_read_all(src, &data, &len, 1 << 24, &eb), ERR_OK);
        assert_int_equal(tu_write_file(tmp, files[k], data, len), 0);
        xfree(data);
        xfree(src);
    }
    run_all(tmp);
    tu_rmtree_free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_json),
        cmocka_unit_test(test_vocab_merges),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
