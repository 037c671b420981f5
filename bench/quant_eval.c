/* quant_eval.c - what int8 weights cost and buy on the CPU backend: one model directory loaded twice, as the
 * checkpoint stores it (auto) and with its matmul weights quantized to int8 at load (forward.h opts.dtype), run over
 * the same held-out code. See bench/RESULTS.md "int8 weights".
 *
 *   quant_eval [--model DIR (models/demo)] [--tokens N (4096)] [--window W (256)] [--threads N (all)]
 *              [--decode-tokens N (64)] [FILE...]
 *
 * Reports, for both: weight memory (every weight the forward pass reads, as placed: eng_model_weight_bytes), decode
 * ms/token at batch 1 (median of --decode-tokens single-token steps after a 128-token prompt, the two models' steps
 * interleaved so background load hits both alike), prefill ms of that prompt (median of 3, interleaved), perplexity over the corpus tokens, and between them the
 * next-token agreement (argmax of int8 == argmax of auto, every scored position). Output: human-readable lines, then
 * one `RESULT name=value` line per figure.
 *
 * Corpus: FILE arguments, or by default a fixed list of Python files of this system's /usr/lib/python3.N that the
 * demo model never trained on: tools/train_demo.py holds out a file when sha256(path relative to the stdlib) % 20 ==
 * 0, and every file below passes that test (checked by hand with that rule when the list was made; this program
 * does not re-check it). Files are tokenized whole and read in order until --tokens; each is cut into windows of --window tokens
 * (the demo's training length is 256) that start at position 0, and every position of a window but the last is
 * scored on the next token, as the model's held-out loss was measured. */
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "forward.h"
#include "model.h"
#include "tok.h"

/* Held out by train_demo.py's rule (sha256(relpath) % 20 == 0); ones that still exist in 3.13 first. */
static const char *const heldout[] = {
    "signal.py",           "unittest/signals.py", "_sitebuiltins.py",  "importlib/metadata/_itertools.py",
    "dbm/__init__.py",     "email/parser.py",     "xml/sax/saxutils.py", "email/generator.py",
    "traceback.py",        "functools.py",        "chunk.py",          "uu.py",
};

static void die(const char *what, const char *msg) {
    fprintf(stderr, "quant_eval: %s: %s\n", what, msg);
    exit(1);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? xmalloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        xfree(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) *len = (size_t)n;
    return buf;
}

/* The stdlib directory: the first /usr/lib/python3.N holding the corpus' first file. */
static int find_stdlib(char *out, size_t cap) {
    glob_t g;
    int found = 0;
    if (glob("/usr/lib/python3.*", 0, NULL, &g) != 0) return 0;
    for (size_t i = 0; i < g.gl_pathc && !found; i++) {
        char probe[1024];
        snprintf(probe, sizeof(probe), "%s/%s", g.gl_pathv[i], heldout[0]);
        FILE *f = fopen(probe, "r");
        if (f) {
            fclose(f);
            snprintf(out, cap, "%s", g.gl_pathv[i]);
            found = 1;
        }
    }
    globfree(&g);
    return found;
}

/* -log softmax(row)[target] and argmax, in double. */
static double nll_row(const float *row, int64_t V, int32_t target, int32_t *amax) {
    int32_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (row[i] > row[best]) best = (int32_t)i;
    double m = row[best], s = 0;
    for (int64_t i = 0; i < V; i++) s += exp((double)row[i] - m);
    *amax = best;
    return -((double)row[target] - m - log(s));
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *dir = "models/demo";
    long n_tokens = 4096, window = 256, threads = 0, n_decode = 64;
    int first_file = argc;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) n_tokens = atol(argv[++i]);
        else if (!strcmp(argv[i], "--window") && i + 1 < argc) window = atol(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atol(argv[++i]);
        else if (!strcmp(argv[i], "--decode-tokens") && i + 1 < argc) n_decode = atol(argv[++i]);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: quant_eval [--model DIR] [--tokens N] [--window W] [--threads N] "
                            "[--decode-tokens N] [FILE...]\n");
            return 2;
        } else {
            first_file = i;
            break;
        }
    }
    if (n_tokens < 2 || window < 2 || window > 2048 || n_decode < 1 || 128 + n_decode > 2048) die("options", "out of range");

    errbuf eb = {0};
    model *m = NULL;
    tok *tk = NULL;
    eng_backend *be = NULL;
    if (model_open(dir, &m, &eb) != ERR_OK) die(dir, eb.msg);
    if (tok_load(dir, &tk, &eb) != ERR_OK) die(dir, eb.msg);
    if (eng_backend_create("cpu", (int)threads, &be, &eb) != ERR_OK) die("cpu backend", eb.msg);
    const int64_t V = m->cfg.vocab_size;
    const int64_t ctx = window > 128 + n_decode ? window : 128 + n_decode;
    if (ctx > m->cfg.n_positions) die("options", "window (or 128 + decode tokens) exceeds the model's context");

    /* both models: same activations and KV pool sizes */
    eng_model *em[2] = {NULL, NULL};
    const char *names[2] = {"auto", "int8"};
    for (int k = 0; k < 2; k++) {
        eng_model_opts mo = {.max_rows = (int32_t)ctx, .n_kv_blocks = (int32_t)((ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK),
                             .kv_dtype = -1, .dtype = names[k]};
        uint64_t t0 = clock_ns();
        if (eng_model_create(be, m, &mo, &em[k], &eb) != ERR_OK) die(names[k], eb.msg);
        printf("load %-4s %8.1f ms%s\n", names[k], (double)(clock_ns() - t0) / 1e6,
               k ? " (quantizing the matmul weights, a thread per CPU)" : "");
    }

    /* corpus */
    char stdlib[512] = "";
    const char *paths[64];
    char pathbuf[64][1024];
    int n_files = 0;
    if (first_file < argc) {
        for (int i = first_file; i < argc && n_files < 64; i++) paths[n_files++] = argv[i];
    } else {
        if (!find_stdlib(stdlib, sizeof(stdlib))) die("corpus", "no /usr/lib/python3.N with the held-out files; give FILEs");
        for (size_t i = 0; i < sizeof(heldout) / sizeof(heldout[0]); i++) {
            snprintf(pathbuf[n_files], sizeof(pathbuf[0]), "%s/%s", stdlib, heldout[i]);
            paths[n_files] = pathbuf[n_files];
            n_files++;
        }
    }
    int32_t *toks = xmalloc_array((size_t)n_tokens, sizeof(int32_t));
    int64_t *file_start = xmalloc_array((size_t)n_files + 1, sizeof(int64_t));
    if (!toks || !file_start) die("corpus", "out of memory");
    int64_t have = 0;
    int used = 0;
    for (int f = 0; f < n_files && have < n_tokens; f++) {
        size_t len;
        char *text = read_file(paths[f], &len);
        if (!text) {
            fprintf(stderr, "quant_eval: skipping %s (cannot read it)\n", paths[f]);
            continue;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        if (tok_encode(tk, text, len, &ids, &n, &eb) != ERR_OK) die(paths[f], eb.msg);
        size_t take = (size_t)(n_tokens - have) < n ? (size_t)(n_tokens - have) : n;
        if (take >= 2) {
            memcpy(toks + have, ids, take * sizeof(int32_t));
            file_start[used++] = have;
            have += (int64_t)take;
            printf("corpus   %s: %zu tokens%s\n", paths[f], take, take < n ? " (cut)" : "");
        }
        xfree(ids);
        xfree(text);
    }
    file_start[used] = have;
    if (have < 2) die("corpus", "no tokens");

    /* perplexity and agreement: windows of each file, every row's logits */
    float *logits[2] = {xmalloc_array((size_t)window * (size_t)V, sizeof(float)),
                        xmalloc_array((size_t)window * (size_t)V, sizeof(float))};
    int32_t *rows = xmalloc_array((size_t)window, sizeof(int32_t)), *pos = xmalloc_array((size_t)ctx, sizeof(int32_t));
    int32_t *blocks = xmalloc_array((size_t)(ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK, sizeof(int32_t));
    if (!logits[0] || !logits[1] || !rows || !pos || !blocks) die("eval", "out of memory");
    const int32_t n_blocks = (int32_t)((ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK);
    for (int32_t i = 0; i < n_blocks; i++) blocks[i] = i;
    for (int32_t i = 0; i < ctx; i++) pos[i] = i;
    for (int32_t i = 0; i < window; i++) rows[i] = i;
    double nll[2] = {0, 0};
    int64_t scored = 0, agree = 0, correct[2] = {0, 0};
    for (int f = 0; f < used; f++)
        for (int64_t w0 = file_start[f]; w0 + 1 < file_start[f + 1]; w0 += window) {
            int32_t n = (int32_t)(file_start[f + 1] - w0 < window ? file_start[f + 1] - w0 : window);
            if (n < 2) break;
            for (int k = 0; k < 2; k++) {
                eng_seq s = {0, n, 0, blocks, n_blocks};
                eng_batch b = {1, &s, n, toks + w0, pos};
                if (eng_model_forward(em[k], &b, rows, n - 1, logits[k], &eb) != ERR_OK) die(names[k], eb.msg);
            }
            for (int32_t i = 0; i + 1 < n; i++) {
                int32_t target = toks[w0 + i + 1], am[2];
                for (int k = 0; k < 2; k++) {
                    nll[k] += nll_row(logits[k] + (size_t)i * (size_t)V, V, target, &am[k]);
                    correct[k] += am[k] == target;
                }
                agree += am[0] == am[1];
                scored++;
            }
        }

    /* decode speed: a 128-token prompt, then single-token steps, the two models interleaved */
    double *ms[2] = {xmalloc_array((size_t)n_decode, sizeof(double)), xmalloc_array((size_t)n_decode, sizeof(double))};
    if (!ms[0] || !ms[1]) die("decode", "out of memory");
    int32_t *dtoks = xmalloc_array((size_t)(128 + n_decode), sizeof(int32_t));
    if (!dtoks) die("decode", "out of memory");
    for (int64_t i = 0; i < 128 + n_decode; i++) dtoks[i] = toks[i % have];
    float *one = logits[0];
    double pre[2][3];
    for (int rep = 0; rep < 3; rep++) /* the prompt, 3 times each, interleaved: prefill ms is the median */
        for (int k = 0; k < 2; k++) {
            eng_seq s = {0, 128, 0, blocks, n_blocks};
            eng_batch b = {1, &s, 128, dtoks, pos};
            int32_t lr = 127;
            uint64_t t0 = clock_ns();
            if (eng_model_forward(em[k], &b, &lr, 1, one, &eb) != ERR_OK) die(names[k], eb.msg);
            pre[k][rep] = (double)(clock_ns() - t0) / 1e6;
        }
    for (int32_t i = 0; i < n_decode; i++)
        for (int k = 0; k < 2; k++) {
            int32_t p = 128 + i, lr = 0;
            eng_seq s = {0, 1, p, blocks, n_blocks};
            eng_batch b = {1, &s, 1, dtoks + p, pos + p};
            uint64_t t0 = clock_ns();
            if (eng_model_forward(em[k], &b, &lr, 1, one, &eb) != ERR_OK) die(names[k], eb.msg);
            ms[k][i] = (double)(clock_ns() - t0) / 1e6;
        }

    double wmb[2], dec[2], ppl[2], acc[2], pf[2];
    for (int k = 0; k < 2; k++) {
        qsort(pre[k], 3, sizeof(double), cmp_double);
        pf[k] = pre[k][1];
        qsort(ms[k], (size_t)n_decode, sizeof(double), cmp_double);
        wmb[k] = (double)eng_model_weight_bytes(em[k]) / 1e6;
        dec[k] = ms[k][n_decode / 2];
        ppl[k] = exp(nll[k] / (double)scored);
        acc[k] = (double)correct[k] / (double)scored;
    }
    printf("model %s (%s checkpoint), %s, %lld tokens scored in windows of %ld\n", dir, st_dtype_name(m->dtype),
           eng_backend_describe(be), (long long)scored, window);
    printf("%-28s %12s %12s %8s\n", "", "auto", "int8", "ratio");
    printf("%-28s %12.2f %12.2f %8.3f\n", "weight memory MB", wmb[0], wmb[1], wmb[1] / wmb[0]);
    printf("%-28s %12.4f %12.4f %8.3f\n", "decode ms/token (median)", dec[0], dec[1], dec[1] / dec[0]);
    printf("%-28s %12.3f %12.3f %8.3f\n", "prefill ms, 128 tokens", pf[0], pf[1], pf[1] / pf[0]);
    printf("%-28s %12.4f %12.4f %8.4f\n", "perplexity", ppl[0], ppl[1], ppl[1] / ppl[0]);
    printf("%-28s %12.4f %12.4f\n", "top-1 accuracy (next token)", acc[0], acc[1]);
    printf("%-28s %12.4f (%lld of %lld positions)\n", "argmax agreement", (double)agree / (double)scored,
           (long long)agree, (long long)scored);
    printf("RESULT tokens=%lld\nRESULT files=%d\n", (long long)scored, used);
    printf("RESULT weights_mb_auto=%.3f\nRESULT weights_mb_int8=%.3f\n", wmb[0], wmb[1]);
    printf("RESULT decode_ms_auto=%.4f\nRESULT decode_ms_int8=%.4f\n", dec[0], dec[1]);
    printf("RESULT prefill_ms_auto=%.3f\nRESULT prefill_ms_int8=%.3f\n", pf[0], pf[1]);
    printf("RESULT ppl_auto=%.4f\nRESULT ppl_int8=%.4f\n", ppl[0], ppl[1]);
    printf("RESULT top1_auto=%.4f\nRESULT top1_int8=%.4f\n", acc[0], acc[1]);
    printf("RESULT agreement=%.4f\n", (double)agree / (double)scored);

    xfree(ms[0]), xfree(ms[1]), xfree(dtoks), xfree(logits[0]), xfree(logits[1]), xfree(rows), xfree(pos);
    xfree(blocks), xfree(toks), xfree(file_start);
    eng_model_destroy(em[0]);
    eng_model_destroy(em[1]);
    eng_backend_destroy(be);
    tok_destroy(tk);
    model_close(m);
    return 0;
}
