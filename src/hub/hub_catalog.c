/* hub_catalog.c - the CodeGen (v1) checkpoints on the hub, with what they cost to download and to run.
 *
 * Parameter counts and shapes: codegen-model.md §1; download sizes: the pytorch_model.bin on main of each repository
 * (§4: fp16 except 350M-nl and 2B-nl, which are fp32). Tokenizer and config files add about 3.4 MB. */
#include "hub.h"

#define P350M 356712448LL
#define P2B 2779356160LL
#define P6B 7064213504LL
#define P16B 16032155648LL

static const hub_catalog_entry CATALOG[] = {
    {"Salesforce/codegen-350M-mono", "350M", "mono", P350M, 20, 1024, 797367631LL, "float16"},
    {"Salesforce/codegen-350M-multi", "350M", "multi", P350M, 20, 1024, 797367631LL, "float16"},
    {"Salesforce/codegen-350M-nl", "350M", "nl", P350M, 20, 1024, 1510792527LL, "float32"},
    {"Salesforce/codegen-2B-mono", "2B", "mono", P2B, 32, 2560, 5693021687LL, "float16"},
    {"Salesforce/codegen-2B-multi", "2B", "multi", P2B, 32, 2560, 5693021687LL, "float16"},
    {"Salesforce/codegen-2B-nl", "2B", "nl", P2B, 32, 2560, 11251735455LL, "float32"},
    {"Salesforce/codegen-6B-mono", "6B", "mono", P6B, 33, 4096, 14266935361LL, "float16"},
    {"Salesforce/codegen-6B-multi", "6B", "multi", P6B, 33, 4096, 14266935361LL, "float16"},
    {"Salesforce/codegen-6B-nl", "6B", "nl", P6B, 33, 4096, 14266935361LL, "float16"},
    {"Salesforce/codegen-16B-mono", "16B", "mono", P16B, 34, 6144, 32207017423LL, "float16"},
    {"Salesforce/codegen-16B-multi", "16B", "multi", P16B, 34, 6144, 32207017423LL, "float16"},
    {"Salesforce/codegen-16B-nl", "16B", "nl", P16B, 34, 6144, 32207017423LL, "float16"},
};

const hub_catalog_entry *hub_catalog(size_t *n) {
    *n = sizeof(CATALOG) / sizeof(*CATALOG);
    return CATALOG;
}

/* One full context (n_positions 2048) of K and V for every layer, kept in fp16. */
int64_t hub_catalog_kv_bytes(const hub_catalog_entry *e) {
    return 2LL * e->n_layer * e->n_embd * 2048LL * 2LL;
}

/* int8 quantizes the matmul weights only; the token embedding (51200 x n_embd, CodeGen's padded vocabulary) stays
 * fp16, one more byte per element than the params x 1 estimate (measured: 0.41 GB of weights for 350M). */
int64_t hub_catalog_mem_bytes(const hub_catalog_entry *e, int weight_bytes) {
    int64_t w = e->params * weight_bytes;
    if (weight_bytes == 1) w += 51200LL * e->n_embd;
    return w + hub_catalog_kv_bytes(e);
}
