/* fuzz_st.c - libFuzzer target: arbitrary bytes as a safetensors image and as a config.json.
 *
 * Neither parser may crash, read outside the input, or leak, whatever the bytes. On a successful parse every
 * tensor is looked up by name and its bytes are read, so a data pointer or size outside the buffer shows up under
 * ASan. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model.h"
#include "st.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    errbuf eb;
    if (st_parse(data, size, "fuzz.safetensors", &f, &eb) == ERR_OK) {
        volatile uint8_t sink = 0;
        size_t total = 0;
        for (size_t i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_at(f, i);
            if (st_find(f, t->name) != t) __builtin_trap();
            if (t->n_dims < 0 || t->n_dims > ST_MAX_DIMS) __builtin_trap();
            const uint8_t *p = t->data;
            if (t->nbytes) sink ^= p[0] ^ p[t->nbytes - 1];
            total += t->nbytes;
        }
        if (total > size) __builtin_trap();
        (void)sink;
        st_close(f);
    }
    model_config cfg;
    if (model_config_parse((const char *)data, size, &cfg, &eb) == ERR_OK) {
        if (cfg.n_head <= 0 || cfg.n_head % 4 || cfg.head_dim * cfg.n_head != cfg.n_embd) __builtin_trap();
        if (cfg.rotary_dim % 2 || cfg.rotary_dim > cfg.head_dim) __builtin_trap();
    }
    return 0;
}
