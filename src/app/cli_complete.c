/* cli_complete.c - `suggestd complete`: prints exactly the completion text of one prompt, streamed. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cli.h"
#include "gen.h"
#include "tok.h"

static void usage(FILE *f) {
    fprintf(f, "usage: suggestd complete --model DIR [options]\n"
               "\n"
               "Completes a prompt and prints only the completion (no newline added).\n"
               "The prompt comes from --prompt, or from standard input when --prompt is absent.\n"
               "\n"
               "  --model DIR          Hugging Face CodeGen model directory (config.json, model.safetensors, tokenizer)\n"
               "  --prompt TEXT        the prompt\n"
               "  --max-tokens N       tokens to generate at most (default 64)\n"
               "  --temperature T      0 = greedy (default 0)\n"
               "  --top-p P            nucleus sampling mass, (0, 1] (default 1)\n"
               "  --top-k K            keep the K most likely tokens, 0 = off (default 0)\n"
               "  --repetition-penalty R  multiplicative (FasterTransformer-style), 1 = off (default 1)\n"
               "  --seed S             seed for sampling (default 0)\n"
               "  --stop STRING        stop before this text; repeatable (up to %d)\n"
               "  --backend NAME       cpu, ref, or cuda[:N] in a CUDA build (default cpu)\n"
               "  --device NAME        same as --backend (cpu | cuda | cuda:N)\n"
               "  --threads N          CPU threads (default: all)\n"
               "  --dtype auto|int8    weights as the checkpoint stores them (auto, default), or int8: matmul weights\n"
               "                       quantized at load, per-row scales: half their f16 bytes (CPU backends only)\n",
            GEN_MAX_STOP);
}

static int write_text(void *ud, const char *text, size_t len, const samp_result *tok) {
    (void)ud;
    (void)tok;
    if (fwrite(text, 1, len, stdout) != len) return 1;
    fflush(stdout);
    return 0;
}

static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = xrealloc(buf, cap *= 2);
            if (!nb) {
                xfree(buf);
                return NULL;
            }
            buf = nb;
        }
        ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
        if (r < 0) {
            xfree(buf);
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    *len = n;
    return buf;
}

int cli_complete(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"prompt", required_argument, 0, 'p'},
        {"max-tokens", required_argument, 0, 'n'},  {"temperature", required_argument, 0, 't'},
        {"top-p", required_argument, 0, 'P'},       {"top-k", required_argument, 0, 'k'},
        {"seed", required_argument, 0, 's'},        {"stop", required_argument, 0, 'S'},
        {"backend", required_argument, 0, 'b'},     {"threads", required_argument, 0, 'j'},
        {"device", required_argument, 0, 'b'},     {"dtype", required_argument, 0, 'd'},
        {"repetition-penalty", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model_dir = NULL, *prompt = NULL, *backend = "cpu", *dtype = "auto";
    long threads = 0, v;
    double d;
    gen_params gp = {0};
    gp.max_tokens = 64;
    gp.samp = samp_params_default();
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n':
            if (cli_parse_int("complete", "max-tokens", optarg, 0, 1 << 20, &v)) return 2;
            gp.max_tokens = (int32_t)v;
            break;
        case 't':
            if (cli_parse_float("complete", "temperature", optarg, 0, 100, &d)) return 2;
            gp.samp.temperature = (float)d;
            break;
        case 'P':
            if (cli_parse_float("complete", "top-p", optarg, 1e-9, 1, &d)) return 2;
            gp.samp.top_p = (float)d;
            break;
        case 'k':
            if (cli_parse_int("complete", "top-k", optarg, 0, 1 << 20, &v)) return 2;
            gp.samp.top_k = (int32_t)v;
            break;
        case 'r':
            if (cli_parse_float("complete", "repetition-penalty", optarg, 1e-3, 100, &d)) return 2;
            gp.samp.repetition_penalty = (float)d;
            break;
        case 's': {
            char *end;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (!*optarg || *end) {
                fprintf(stderr, "suggestd complete: --seed expects a non-negative integer, got '%s'\n", optarg);
                return 2;
            }
            gp.seed = s;
            break;
        }
        case 'S':
            if (gp.n_stop == GEN_MAX_STOP) {
                fprintf(stderr, "suggestd complete: at most %d --stop strings\n", GEN_MAX_STOP);
                return 2;
            }
            if (!*optarg) {
                fprintf(stderr, "suggestd complete: --stop needs a non-empty string\n");
                return 2;
            }
            gp.stop[gp.n_stop++] = optarg;
            break;
        case 'b': backend = optarg; break;
        case 'd': dtype = optarg; break;
        case 'j':
            if (cli_parse_int("complete", "threads", optarg, 0, 1024, &threads)) return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "suggestd complete: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_dir) {
        fprintf(stderr, "suggestd complete: --model DIR is required\n");
        usage(stderr);
        return 2;
    }
    errbuf eb = {0};
    tok *tk = NULL;
    cli_runtime rt = {0};
    /* the model first: a wrong directory is reported as such, not as a missing tokenizer file */
    eng_model_opts mo = {.kv_dtype = -1, .dtype = dtype}; /* the engine checks dtype and names the values */
    if (cli_runtime_open(&rt, model_dir, backend, (int)threads, &mo)) return 1;
    if (tok_load(model_dir, &tk, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd complete: %s\n", eb.msg);
        cli_runtime_close(&rt);
        return 1;
    }
    char *owned = NULL;
    size_t plen;
    if (prompt) {
        plen = strlen(prompt);
    } else {
        owned = read_stdin(&plen);
        if (!owned) {
            fprintf(stderr, "suggestd complete: could not read the prompt from standard input\n");
            tok_destroy(tk);
            cli_runtime_close(&rt);
            return 1;
        }
        prompt = owned;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 1;
    if (tok_encode(tk, prompt, plen, &ids, &n_ids, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd complete: prompt: %s\n", eb.msg);
        goto out;
    }
    if (gen_check(rt.em, n_ids, &gp, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd complete: %s\n", eb.msg);
        rc = 2;
        goto out;
    }
    gen_result res;
    if (gen_run(rt.em, tk, ids, n_ids, &gp, write_text, NULL, NULL, &res, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd complete: %s\n", eb.msg);
        goto out;
    }
    rc = 0;
out:
    cli_runtime_close(&rt);
    xfree(ids);
    xfree(owned);
    tok_destroy(tk);
    return rc;
}
