/* fuzz_hub.c - libFuzzer: a hub's file listing and the model names users type are untrusted input of `suggestd
 * pull`. The first byte picks the parser: the listing JSON (then the file selection, whose names must all be safe
 * paths), or ORG/NAME@REV. Neither may crash, leak or read out of bounds, and no selected file may escape the model
 * directory. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "hub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    errbuf eb = {0};
    if (data[0] & 1) {
        hub_listing l;
        if (hub_listing_parse(s, n, &l, &eb) != ERR_OK) return 0;
        size_t *idx = xmalloc_array(l.n + 1, sizeof(size_t)), n_idx = 0;
        if (idx && hub_listing_select(&l, idx, &n_idx, &eb) == ERR_OK)
            for (size_t i = 0; i < n_idx; i++)
                if (!hub_path_safe(l.files[idx[i]].path)) abort(); /* a selected name must never escape */
        xfree(idx);
        hub_listing_fini(&l);
    } else {
        char *z = xstrndup(s, n); /* names arrive as C strings (argv) */
        hub_ref r;
        if (z && hub_ref_parse(z, &r, &eb) == ERR_OK &&
            (strchr(r.org, '/') || strchr(r.name, '/') || r.org[0] == '.' || r.name[0] == '.' || !r.org[0] || !r.name[0]))
            abort(); /* an accepted name is one path component each: no separators, never "." or ".." */
        xfree(z);
    }
    return 0;
}
