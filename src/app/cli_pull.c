/* cli_pull.c - `suggestd pull ORG/NAME[@REV]`, its progress display, and `--model ORG/NAME` for the other commands
 * (a model name that is not a directory means SUGGESTD_MODELS_DIR/ORG/NAME, pulled first when not complete). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "hub.h"

typedef struct pull_view {
    int tty;
    int quiet;
    uint64_t last_line_ns; /* of the last log line about a file in progress (non-tty) */
} pull_view;

static void human(double bytes, char *out, size_t cap) {
    const char *unit[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (bytes >= 1000 && u < 4) bytes /= 1000, u++;
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
}

static void hms(double s, char *out, size_t cap) {
    long t = s < 0 ? 0 : s > 359999 ? 359999 : (long)(s + 0.5);
    int n = t >= 3600 ? snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60)
                      : snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
    (void)n; /* at most 99:59:59 */
}

/* done, total, speed and ETA of one file, e.g. "356.2 MB / 797.4 MB  12.3 MB/s  ETA 0:36". */
static void stats(const hub_progress *p, char *out, size_t cap) {
    char done[32], total[32], speed[32], eta[48] = "";
    double rate = p->elapsed_s > 0 ? (double)(p->done - p->resumed_from) / p->elapsed_s : 0;
    human((double)p->done, done, sizeof(done));
    human(p->total >= 0 ? (double)p->total : 0, total, sizeof(total));
    human(rate, speed, sizeof(speed));
    if (rate > 0 && p->total >= 0) {
        char t[32];
        hms((double)(p->total - p->done) / rate, t, sizeof(t));
        snprintf(eta, sizeof(eta), "  ETA %s", t);
    }
    snprintf(out, cap, "%s / %s  %s/s%s", done, total, speed, eta);
}

static void show_bar(const hub_progress *p) {
    char s[128], bar[31];
    double f = p->total > 0 ? (double)p->done / (double)p->total : 1;
    int fill = (int)(f * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '-';
    bar[30] = 0;
    stats(p, s, sizeof(s));
    fprintf(stderr, "\r[%zu/%zu] %-24.24s %3d%% [%s] %s\033[K", p->index + 1, p->count, p->file, (int)(f * 100), bar,
            s);
    if (p->state == HUB_PROGRESS_DONE) fputc('\n', stderr);
    fflush(stderr);
}

/* Without a terminal: a line per file when it is done, plus a start line and one every 30 s for large or resumed
 * ones, so a log shows that a long download is alive. */
static void show_lines(pull_view *v, const hub_progress *p) {
    char s[128], size[32];
    uint64_t now = clock_ns();
    int long_one = p->total >= 100 * 1000 * 1000 || p->resumed_from > 0;
    human(p->total >= 0 ? (double)p->total : 0, size, sizeof(size));
    if (p->state == HUB_PROGRESS_START && long_one) {
        v->last_line_ns = now;
        char from[32];
        human((double)p->resumed_from, from, sizeof(from));
        fprintf(stderr, "suggestd pull: [%zu/%zu] %s (%s)%s%s\n", p->index + 1, p->count, p->file, size,
                p->resumed_from ? ", resuming at " : "", p->resumed_from ? from : "");
    } else if (p->state == HUB_PROGRESS_DONE) {
        fprintf(stderr, "suggestd pull: [%zu/%zu] %s done (%s, %.1f s)\n", p->index + 1, p->count, p->file, size,
                p->elapsed_s);
    } else if (p->state == HUB_PROGRESS_DATA && now - v->last_line_ns >= 30000000000ull) {
        v->last_line_ns = now;
        stats(p, s, sizeof(s));
        fprintf(stderr, "suggestd pull: [%zu/%zu] %s %s\n", p->index + 1, p->count, p->file, s);
    }
}

static void on_progress(void *ud, const hub_progress *p) {
    pull_view *v = ud;
    if (v->quiet) return;
    if (v->tty) show_bar(p);
    else show_lines(v, p);
}

/* Pulls r (progress on stderr); the model directory goes to dir. Prints the error as "suggestd CMD: ...". */
static int pull_ref(const char *cmd, const hub_ref *r, int retries, int quiet, char *dir, size_t cap) {
    errbuf eb = {0};
    hub_env env;
    if (hub_env_load(&env, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd %s: %s\n", cmd, eb.msg);
        return 1;
    }
    pull_view v = {.tty = isatty(STDERR_FILENO), .quiet = quiet};
    hub_pull_opts o = {.env = &env, .retries = retries, .progress = on_progress, .progress_ud = &v};
    int already = 0;
    if (hub_pull(r, &o, dir, cap, &already, &eb) != ERR_OK) {
        if (v.tty && !quiet) fputc('\n', stderr);
        fprintf(stderr, "suggestd %s: pulling %s/%s failed: %s\n", cmd, r->org, r->name, eb.msg);
        return 1;
    }
    if (!quiet)
        fprintf(stderr, "suggestd %s: %s/%s%s%s %s %s\n", cmd, r->org, r->name, r->has_rev ? "@" : "",
                r->has_rev ? r->rev : "", already ? "is already complete in" : "complete in", dir);
    return 0;
}

int cli_model_resolve(const char *cmd, const char *arg, char *out, size_t cap) {
    struct stat st;
    hub_ref r;
    if (stat(arg, &st) == 0 || hub_ref_parse(arg, &r, NULL) != ERR_OK) { /* a path: the loader reports problems */
        snprintf(out, cap, "%s", arg);
        return 0;
    }
    return pull_ref(cmd, &r, 3, 0, out, cap);
}

int cli_model_args_resolve(const char *cmd, int argc, char **argv, char *buf, size_t cap) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) return 0;
        if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            if (cli_model_resolve(cmd, argv[i + 1], buf, cap)) return 1;
            argv[i + 1] = buf;
            return 0;
        }
        if (!strncmp(argv[i], "--model=", 8)) {
            int n = snprintf(buf, cap, "--model=");
            if (cli_model_resolve(cmd, argv[i] + 8, buf + n, cap - (size_t)n)) return 1;
            argv[i] = buf;
            return 0;
        }
    }
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: suggestd pull [options] ORG/NAME[@REVISION]\n"
               "\n"
               "Downloads a model from the Hugging Face hub into $SUGGESTD_MODELS_DIR/ORG/NAME (default\n"
               "~/.cache/suggestd/models): config.json, the tokenizer files and the weights (safetensors if the\n"
               "repository has them, else pytorch_model.bin), each checked against the hub's size and sha256.\n"
               "An interrupted pull resumes where it stopped. Prints the model directory on stdout.\n"
               "\n"
               "  --retries N   extra attempts after an interrupted transfer, resumed each time (default 3)\n"
               "  --quiet       no progress output\n"
               "\n"
               "environment: HF_TOKEN (gated or private models), HF_ENDPOINT (a mirror; default %s),\n"
               "             SUGGESTD_MODELS_DIR\n",
            HUB_DEFAULT_ENDPOINT);
}

int cli_pull(int argc, char **argv) {
    static const struct option opts[] = {{"retries", required_argument, 0, 'r'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    long retries = 3;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (cli_parse_int("pull", "retries", optarg, 0, 100, &retries)) return 2;
            break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "suggestd pull: expected one ORG/NAME[@REVISION]\n");
        usage(stderr);
        return 2;
    }
    hub_ref r;
    errbuf eb = {0};
    if (hub_ref_parse(argv[optind], &r, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd pull: %s\n", eb.msg);
        return 2;
    }
    char dir[4096];
    if (pull_ref("pull", &r, (int)retries, quiet, dir, sizeof(dir))) return 1;
    printf("%s\n", dir);
    return 0;
}
