/* gpu_bench.c - `suggestd bench` as a program of its own: the same code (src/app/cli_bench.c), linked without the
 * server side, so the GPU machine can run the benchmarks without hiredis, OpenSSL, curl or libmicrohttpd. */
#include "cli.h"

int main(int argc, char **argv) { return cli_bench(argc, argv); }
