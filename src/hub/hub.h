/* hub.h - the Hugging Face hub client behind `suggestd pull`: list a model repository, download what a CodeGen
 * model needs into SUGGESTD_MODELS_DIR/ORG/NAME (resumable, verified), and the CodeGen catalogue.
 *
 * A pulled model is complete only when its directory holds the marker file HUB_MARKER: files are downloaded into a
 * staging directory (ORG/.NAME.partial), each as FILE.part renamed to FILE once its size and sha256 check out, the
 * marker is written last and the staging directory is renamed into place. An interrupted pull leaves only the
 * staging directory, which the next pull resumes (HTTP Range from each .part file).
 *
 * Not thread-safe across calls that share a hub_env; one pull per model at a time is enforced with a lock file. */
#ifndef SUGGESTD_HUB_H
#define SUGGESTD_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define HUB_NAME_MAX 96  /* the hub's limit for an organisation or repository name */
#define HUB_REV_MAX 128
#define HUB_MARKER ".suggestd-complete"
#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"

/* ORG/NAME[@REVISION]; rev is "main" when none was given (has_rev 0). */
typedef struct hub_ref {
    char org[HUB_NAME_MAX + 1];
    char name[HUB_NAME_MAX + 1];
    char rev[HUB_REV_MAX + 1];
    int has_rev;
} hub_ref;

/* Parses "ORG/NAME" or "ORG/NAME@REV". Names: letters, digits, '-', '_', '.', not starting with '.' or '-';
 * a revision: a branch, tag, commit or refs/pr/N (no "..", no leading '/'). ERR_INVALID with the reason. */
err hub_ref_parse(const char *s, hub_ref *out, errbuf *eb);

/* 1 when a path from a listing may be created under the model directory: relative, no "." / ".." / empty
 * components, no backslash or control characters. A hostile hub must not write outside the model dir. */
int hub_path_safe(const char *path);

/* One file of a repository listing. sha256 is the LFS object id (lowercase hex) or "" for a small (git) file. */
typedef struct hub_file {
    char *path;
    int64_t size; /* -1 when the listing does not say */
    char sha256[65];
} hub_file;

typedef struct hub_listing {
    hub_file *files;
    size_t n;
} hub_listing;

/* Parses GET /api/models/{repo}/tree/{rev} (an array of {type, path, size, oid, lfs: {oid, size}}) or
 * /api/models/{repo}/revision/{rev} ({siblings: [{rfilename, size?, lfs?}]}). Folders are skipped. An unsafe path
 * or a malformed size or sha256 refuses the whole listing (ERR_FORMAT). Free with hub_listing_fini. */
err hub_listing_parse(const char *json, size_t len, hub_listing *out, errbuf *eb);
void hub_listing_fini(hub_listing *l);

/* Picks what a model needs, in download order, as indices into l (idx has room for l->n): config.json, the
 * tokenizer files present (tokenizer.json, or vocab.json + merges.txt [+ added_tokens.json ...]), and the weights:
 * model.safetensors, else model.safetensors.index.json + every *.safetensors, else pytorch_model.bin, else
 * pytorch_model.bin.index.json + every pytorch_model*.bin. Only top-level files. ERR_FORMAT when config, tokenizer
 * or weights are missing. */
err hub_listing_select(const hub_listing *l, size_t *idx, size_t *n_idx, errbuf *eb);

/* Settings from the environment: HF_ENDPOINT (default HUB_DEFAULT_ENDPOINT, trailing '/' dropped), HF_TOKEN (borrowed
 * from the environment; NULL when unset or empty), SUGGESTD_MODELS_DIR (default $HOME/.cache/suggestd/models). */
typedef struct hub_env {
    char endpoint[1024];
    const char *token;
    char models_dir[3072];
} hub_env;
err hub_env_load(hub_env *e, errbuf *eb);

/* models_dir/ORG/NAME into out. ERR_INVALID when it does not fit. */
err hub_model_dir(const char *models_dir, const hub_ref *r, char *out, size_t cap, errbuf *eb);

/* 1 when dir holds a complete pull (its HUB_MARKER parses); the marker's revision goes to rev (may be NULL). */
int hub_model_complete(const char *dir, char *rev, size_t rev_cap);

/* Progress of one file, for a progress bar or log lines. done and total are bytes of the whole file (total -1 when
 * unknown); resumed_from is what a .part file already held. state: HUB_PROGRESS_START, _DATA or _DONE. */
enum { HUB_PROGRESS_START, HUB_PROGRESS_DATA, HUB_PROGRESS_DONE };
typedef struct hub_progress {
    const char *file;
    size_t index, count;
    int64_t done, total, resumed_from;
    double elapsed_s; /* since this file's transfer started */
    int state;
} hub_progress;
typedef void (*hub_progress_fn)(void *ud, const hub_progress *p);

typedef struct hub_pull_opts {
    const hub_env *env;
    int retries;          /* extra attempts per file after an interrupted transfer (resumed with Range) */
    hub_progress_fn progress; /* may be NULL */
    void *progress_ud;
} hub_pull_opts;

/* Pulls r into models_dir/ORG/NAME and writes that path to dir_out. Already complete (and at r->rev when one was
 * given): returns at once with *already = 1. Errors: ERR_IO (offline, DNS, connection, disk), ERR_UNAUTHORIZED
 * (401/403: gated or private), ERR_INVALID (repository, revision or file not found), ERR_FORMAT (bad listing, size
 * or sha256 mismatch), ERR_UPSTREAM (other HTTP statuses); the message is one line. Never leaves a directory that
 * hub_model_complete accepts unless every file was verified. */
err hub_pull(const hub_ref *r, const hub_pull_opts *o, char *dir_out, size_t cap, int *already, errbuf *eb);

/* The CodeGen catalogue (12 repositories as named on the hub). download_bytes: pytorch_model.bin on main
 * (codegen-model.md §4). Memory estimate for weights of `weight_bytes` bytes each plus one 2048-token KV cache in
 * fp16: params * weight_bytes + 2 (K, V) * n_layer * n_embd * 2048 * 2. */
typedef struct hub_catalog_entry {
    const char *repo;
    const char *size;   /* "350M", "2B", "6B", "16B" */
    const char *flavor; /* "mono", "multi", "nl" */
    int64_t params;
    int32_t n_layer, n_embd;
    int64_t download_bytes;
    const char *dtype; /* of the .bin on main: "float16" or "float32" */
} hub_catalog_entry;

const hub_catalog_entry *hub_catalog(size_t *n);
int64_t hub_catalog_kv_bytes(const hub_catalog_entry *e);
int64_t hub_catalog_mem_bytes(const hub_catalog_entry *e, int weight_bytes);

#endif
