/* cli_models.c - `suggestd models`: the CodeGen checkpoints on the hub, what each costs to download and to run, and
 * which are complete in SUGGESTD_MODELS_DIR. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "hub.h"

static int is_local(const hub_env *env, const hub_catalog_entry *e, char *dir, size_t cap) {
    hub_ref r;
    return hub_ref_parse(e->repo, &r, NULL) == ERR_OK && hub_model_dir(env->models_dir, &r, dir, cap, NULL) == ERR_OK &&
           hub_model_complete(dir, NULL, 0);
}

static int print_json(const hub_env *env) {
    size_t n;
    const hub_catalog_entry *cat = hub_catalog(&n);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const hub_catalog_entry *e = &cat[i];
        char dir[4096];
        int local = is_local(env, e, dir, sizeof(dir));
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s, s:I, s:i, s:i, s:s, s:I, s:I, s:I, s:I, s:b, s:s?}", "name", e->repo,
                           "size", e->size, "flavor", e->flavor, "params", (json_int_t)e->params, "n_layer", e->n_layer,
                           "n_embd", e->n_embd, "hub_dtype", e->dtype, "download_bytes",
                           (json_int_t)e->download_bytes, "kv_cache_bytes", (json_int_t)hub_catalog_kv_bytes(e),
                           "mem_fp16_bytes", (json_int_t)hub_catalog_mem_bytes(e, 2), "mem_int8_bytes",
                           (json_int_t)hub_catalog_mem_bytes(e, 1), "local", local, "path", local ? dir : NULL));
    }
    json_t *root = json_pack("{s:s, s:o}", "models_dir", env->models_dir, "models", arr);
    char *s = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!s) return 1;
    puts(s);
    free(s);
    return 0;
}

static void print_table(const hub_env *env) {
    size_t n;
    const hub_catalog_entry *cat = hub_catalog(&n);
    printf("%-30s %8s %10s %10s %10s  %s\n", "MODEL", "PARAMS", "DOWNLOAD", "FP16 MEM", "INT8 MEM", "LOCAL");
    for (size_t i = 0; i < n; i++) {
        const hub_catalog_entry *e = &cat[i];
        char dir[4096];
        printf("%-30s %7.2fB %7.2f GB %7.2f GB %7.2f GB  %s\n", e->repo, (double)e->params / 1e9,
               (double)e->download_bytes / 1e9, (double)hub_catalog_mem_bytes(e, 2) / 1e9,
               (double)hub_catalog_mem_bytes(e, 1) / 1e9, is_local(env, e, dir, sizeof(dir)) ? "complete" : "-");
    }
    printf("\nDOWNLOAD: pytorch_model.bin on the hub's main branch (fp16; fp32 for 350M-nl and 2B-nl).\n"
           "MEM: weights (params x 2 bytes fp16; x 1 byte int8, embedding kept fp16) + a KV cache for one 2048-token context in fp16\n"
           "     (2 x n_layer x n_embd x 2048 x 2 bytes); activations and the runtime add a little more.\n"
           "LOCAL: complete in %s.  Get one with: suggestd pull Salesforce/codegen-350M-mono\n",
           env->models_dir);
}

int cli_models(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') json = 1;
        else if (c == 'h') {
            printf("usage: suggestd models [--json]\n\nThe CodeGen checkpoints, download size, memory needed (fp16, "
                   "int8) and which are complete in SUGGESTD_MODELS_DIR.\n");
            return 0;
        } else {
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "suggestd models: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    hub_env env;
    errbuf eb = {0};
    if (hub_env_load(&env, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd models: %s\n", eb.msg);
        return 2;
    }
    if (json) return print_json(&env);
    print_table(&env);
    return 0;
}
