/* fuzz_pt.c - libFuzzer target: arbitrary bytes as a pytorch_model.bin (zip reader + pickle VM) and, directly, as a
 * data.pkl for the restricted pickle VM (so the fuzzer reaches the VM without first building a valid zip).
 *
 * Neither may crash, read outside the input, leak, or accept a tensor whose bytes lie outside the input. On success
 * every tensor is looked up by name and its first and last bytes are read, so a bad pointer shows up under ASan.
 * Seeds: tests/unit/model/data/ (-seed_corpus or as corpus directory). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "model_impl.h"
#include "pt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pt_file *f = NULL;
    errbuf eb;
    if (pt_parse(data, size, "fuzz.bin", &f, &eb) == ERR_OK) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < pt_count(f); i++) {
            const st_tensor *t = pt_at(f, i);
            if (pt_find(f, t->name) != t) __builtin_trap();
            if (t->n_dims < 0 || t->n_dims > ST_MAX_DIMS) __builtin_trap();
            const uint8_t *p = t->data;
            if (t->nbytes) {
                if (p < data || p + t->nbytes > data + size) __builtin_trap();
                sink ^= p[0] ^ p[t->nbytes - 1];
            }
        }
        (void)sink;
        pt_close(f);
    }
    pt__rec *recs = NULL;
    size_t n = 0;
    if (pt__pickle_load(data, size, "fuzz.pkl", &recs, &n, &eb) == ERR_OK) {
        for (size_t i = 0; i < n; i++) {
            const pt__rec *r = &recs[i];
            const uint8_t *nm = (const uint8_t *)r->name, *key = (const uint8_t *)r->key;
            if (r->name_len && (nm < data || nm + r->name_len > data + size)) __builtin_trap();
            if (r->key_len && (key < data || key + r->key_len > data + size)) __builtin_trap();
            if (r->n_dims < 0 || r->n_dims > ST_MAX_DIMS) __builtin_trap();
        }
        xfree(recs);
    }
    return 0;
}
