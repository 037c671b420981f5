/* mkckpt.c - writes a deterministic random CodeGen checkpoint (config.json + model.safetensors) into a directory.
 * Used by the integration tests and by scripts/run.sh until a trained model ships.
 * usage: mkckpt DIR [n_layer n_embd n_head rotary_dim n_positions f32|f16|bf16 seed] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

int main(int argc, char **argv) {
    if (argc != 2 && argc != 9) {
        fprintf(stderr, "usage: mkckpt DIR [n_layer n_embd n_head rotary_dim n_positions f32|f16|bf16 seed]\n");
        return 2;
    }
    tu_ckpt_spec s = {2, 64, 4, 8, 2048, 51200, ST_F32, 1};
    if (argc == 9) {
        s.n_layer = atoi(argv[2]);
        s.n_embd = atoi(argv[3]);
        s.n_head = atoi(argv[4]);
        s.rotary_dim = atoi(argv[5]);
        s.n_positions = atoi(argv[6]);
        s.dtype = !strcmp(argv[7], "f16") ? ST_F16 : !strcmp(argv[7], "bf16") ? ST_BF16 : ST_F32;
        s.seed = strtoull(argv[8], NULL, 10);
    }
    mkdir(argv[1], 0755);
    errbuf eb = {0};
    if (tu_write_checkpoint(argv[1], &s, &eb) != ERR_OK) {
        fprintf(stderr, "mkckpt: %s\n", eb.msg);
        return 1;
    }
    return 0;
}
