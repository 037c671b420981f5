/* main.c - entry point: dispatches to a subcommand. The only place that exits the process. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "eng.h"

#ifndef SUGGESTD_VERSION
#define SUGGESTD_VERSION "0.0.0"
#endif

static void usage(FILE *f) {
    fprintf(f,
            "suggestd %s - self-hosted code completion (CodeGen) in one C program\n"
            "\n"
            "usage: suggestd <command> [options]\n"
            "\n"
            "commands:\n"
            "  complete   complete a prompt (from --prompt or stdin) and print only the completion\n"
            "  tokenize   print the token ids of stdin as a JSON array\n"
            "  bench      measure prefill and decode speed beside the memory-bandwidth floor\n"
            "  serve      the HTTP API (FauxPilot/OpenAI /v1, GitLab /v2)\n"
            "  config     print the effective serve configuration (secrets masked)\n"
            "  pull       download a model from the Hugging Face hub (ORG/NAME[@REVISION])\n"
            "  models     the CodeGen checkpoints: download size, memory, which are present\n"
            "\n"
            "  suggestd <command> --help    options of a command\n"
            "  suggestd --version           version and compiled-in backends\n",
            SUGGESTD_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("suggestd %s (backends: %s)\n", SUGGESTD_VERSION, eng_backends_compiled());
        return 0;
    }
    /* --model ORG/NAME for the commands that open a model directly (serve resolves its own, after listening) */
    static char model_arg[4200];
    int opens_model = !strcmp(cmd, "complete") || !strcmp(cmd, "tokenize") || !strcmp(cmd, "bench");
    if (opens_model && cli_model_args_resolve(cmd, argc - 1, argv + 1, model_arg, sizeof(model_arg))) return 1;
    if (!strcmp(cmd, "complete")) return cli_complete(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cli_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cli_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "pull")) return cli_pull(argc - 1, argv + 1);
    if (!strcmp(cmd, "models")) return cli_models(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cli_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "config")) return cli_config(argc - 1, argv + 1);
    fprintf(stderr, "suggestd: unknown command '%s' (try 'suggestd --help')\n", cmd);
    return 2;
}
