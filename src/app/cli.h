/* cli.h - the subcommands of the suggestd binary. Each returns the process exit code; only main() exits. */
#ifndef SUGGESTD_APP_CLI_H
#define SUGGESTD_APP_CLI_H

#include "eng.h"
#include "forward.h"
#include "model.h"

int cli_complete(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_config(int argc, char **argv);

/* Shared by the subcommands that run a model: open dir, create the backend, place the model. Prints the error and
 * returns non-zero on failure. */
typedef struct cli_runtime {
    model *m;
    eng_backend *be;
    eng_model *em;
} cli_runtime;

int cli_runtime_open(cli_runtime *rt, const char *model_dir, const char *backend, int threads,
                     const eng_model_opts *opts);
void cli_runtime_close(cli_runtime *rt);

/* Parses an int/float option value or prints "suggestd CMD: --NAME expects ..." and returns -1. */
int cli_parse_int(const char *cmd, const char *name, const char *v, long lo, long hi, long *out);
int cli_parse_float(const char *cmd, const char *name, const char *v, double lo, double hi, double *out);

#endif
