/* cli_config.c - `suggestd config`: the effective configuration of `serve` (same flags, environment and .env),
 * one NAME=value line per setting with where it came from; secrets are masked. */
#include <stdio.h>

#include "cli.h"
#include "config.h"

int cli_config(int argc, char **argv) {
    cfg c;
    int help = 0;
    errbuf eb = {0};
    if (cfg_load(&c, argc, argv, &help, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd config: %s\n", eb.msg);
        return 2;
    }
    if (help) {
        printf("usage: suggestd config [serve options]\n\nPrints the settings `suggestd serve` would use (secrets "
               "masked).\n\n");
        cfg_print_help(stdout);
    } else {
        cfg_print(&c, stdout);
    }
    cfg_fini(&c);
    return 0;
}
