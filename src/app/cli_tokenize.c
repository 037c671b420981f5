/* cli_tokenize.c - `suggestd tokenize`: standard input -> token ids as one JSON array. */
#include <getopt.h>
#include <stdio.h>
#include <unistd.h>

#include "alloc.h"
#include "cli.h"
#include "tok.h"

int cli_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = NULL;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'm') dir = optarg;
        else if (c == 'h') {
            printf("usage: suggestd tokenize --model DIR < text\n\nPrints the token ids of standard input as one "
                   "JSON array. DIR holds tokenizer.json or vocab.json + merges.txt.\n");
            return 0;
        } else return 2;
    }
    if (!dir || optind < argc) {
        fprintf(stderr, "usage: suggestd tokenize --model DIR < text\n");
        return 2;
    }
    errbuf eb = {0};
    tok *tk = NULL;
    if (tok_load(dir, &tk, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd tokenize: %s\n", eb.msg);
        return 1;
    }
    size_t cap = 65536, n = 0;
    char *buf = xmalloc(cap);
    ssize_t r = 0;
    while (buf && (r = read(STDIN_FILENO, buf + n, cap - n)) > 0) {
        n += (size_t)r;
        if (n == cap) {
            char *nb = xrealloc(buf, cap *= 2);
            if (!nb) xfree(buf);
            buf = nb;
        }
    }
    if (!buf || r < 0) {
        fprintf(stderr, "suggestd tokenize: could not read standard input\n");
        xfree(buf);
        tok_destroy(tk);
        return 1;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 0;
    if (tok_encode(tk, buf, n, &ids, &n_ids, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd tokenize: %s\n", eb.msg);
        rc = 1;
    } else {
        putchar('[');
        for (size_t i = 0; i < n_ids; i++) printf(i ? ",%d" : "%d", ids[i]);
        printf("]\n");
    }
    xfree(ids);
    xfree(buf);
    tok_destroy(tk);
    return rc;
}
