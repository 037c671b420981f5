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
int cli_pull(int argc, char **argv);
int cli_models(int argc, char **argv);

/* --model ARG: an existing path is used as is; otherwise ORG/NAME[@REV] is SUGGESTD_MODELS_DIR/ORG/NAME, pulled from
 * the hub first unless complete. The directory goes to out. Prints "suggestd CMD: ..." and returns 1 on failure. */
int cli_model_resolve(const char *cmd, const char *arg, char *out, size_t cap);
/* The same for the value of the first --model (or --model=) in argv, which is rewritten to point into buf. */
int cli_model_args_resolve(const char *cmd, int argc, char **argv, char *buf, size_t cap);

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
