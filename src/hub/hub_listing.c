/* hub_listing.c - a repository's file listing as the hub's API returns it, and the files a CodeGen model needs.
 *
 * The listing is untrusted input: every path must pass hub_path_safe, sizes must be non-negative integers and LFS
 * ids 64 hex digits, or the listing is refused as a whole (a hub that sends one hostile name gets nothing
 * downloaded, rather than a model with a file quietly skipped). */
#include <jansson.h>
#include <string.h>

#include "alloc.h"
#include "hub.h"

void hub_listing_fini(hub_listing *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) xfree(l->files[i].path);
    xfree(l->files);
    memset(l, 0, sizeof(*l));
}

static err parse_sha(const char *path, json_t *lfs, char *out, errbuf *eb) {
    const char *oid = json_string_value(json_object_get(lfs, "oid"));
    if (!oid) oid = json_string_value(json_object_get(lfs, "sha256"));
    if (!oid || strlen(oid) != 64)
        return errbuf_set(eb, ERR_FORMAT, "hub listing: '%s' has an LFS entry without a 64-digit sha256 oid", path);
    for (int i = 0; i < 64; i++) {
        char c = oid[i];
        if (c >= 'A' && c <= 'F') c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return errbuf_set(eb, ERR_FORMAT, "hub listing: '%s' has a sha256 that is not hex", path);
        out[i] = c;
    }
    out[64] = 0;
    return ERR_OK;
}

static err parse_size(const char *path, json_t *v, int64_t *out, errbuf *eb) {
    if (!v) {
        *out = -1;
        return ERR_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return errbuf_set(eb, ERR_FORMAT, "hub listing: '%s' has a size that is not a non-negative integer", path);
    *out = (int64_t)json_integer_value(v);
    return ERR_OK;
}

/* One entry of either listing shape. *skip for folders. */
static err parse_entry(json_t *e, hub_file *f, int *skip, errbuf *eb) {
    *skip = 0;
    if (!json_is_object(e)) return errbuf_set(eb, ERR_FORMAT, "hub listing: an entry is not an object");
    const char *type = json_string_value(json_object_get(e, "type"));
    if (type && strcmp(type, "file")) {
        *skip = 1;
        return ERR_OK;
    }
    const char *path = json_string_value(json_object_get(e, "path"));
    if (!path) path = json_string_value(json_object_get(e, "rfilename"));
    if (!path) return errbuf_set(eb, ERR_FORMAT, "hub listing: an entry has no path");
    if (!hub_path_safe(path))
        return errbuf_set(eb, ERR_FORMAT, "hub listing names an unsafe file path '%.200s' (refused: it could write "
                                          "outside the model directory)", path);
    json_t *lfs = json_object_get(e, "lfs");
    err rc = parse_size(path, json_object_get(e, "size"), &f->size, eb);
    if (rc == ERR_OK && json_is_object(lfs)) {
        rc = parse_sha(path, lfs, f->sha256, eb);
        int64_t lfs_size = -1;
        if (rc == ERR_OK) rc = parse_size(path, json_object_get(lfs, "size"), &lfs_size, eb);
        if (rc == ERR_OK && lfs_size >= 0) f->size = lfs_size; /* the object's size, not the pointer file's */
    }
    if (rc != ERR_OK) return rc;
    f->path = xstrdup(path);
    return f->path ? ERR_OK : errbuf_set(eb, ERR_NOMEM, "out of memory reading the hub listing");
}

err hub_listing_parse(const char *json, size_t len, hub_listing *out, errbuf *eb) {
    memset(out, 0, sizeof(*out));
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) return errbuf_set(eb, ERR_FORMAT, "hub listing is not JSON: %s (line %d)", je.text, je.line);
    json_t *arr = json_is_array(root) ? root : json_object_get(root, "siblings");
    err rc = ERR_OK;
    if (!json_is_array(arr)) {
        rc = errbuf_set(eb, ERR_FORMAT, "hub listing is neither a file array nor an object with 'siblings'");
        goto out;
    }
    size_t n = json_array_size(arr);
    out->files = n ? xcalloc(n, sizeof(hub_file)) : NULL;
    if (n && !out->files) {
        rc = errbuf_set(eb, ERR_NOMEM, "out of memory reading the hub listing (%zu entries)", n);
        goto out;
    }
    for (size_t i = 0; i < n && rc == ERR_OK; i++) {
        int skip;
        rc = parse_entry(json_array_get(arr, i), &out->files[out->n], &skip, eb);
        if (rc == ERR_OK && !skip) out->n++;
    }
out:
    json_decref(root);
    if (rc != ERR_OK) hub_listing_fini(out);
    return rc;
}

static long find(const hub_listing *l, const char *name) {
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->files[i].path, name)) return (long)i;
    return -1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static void add(size_t *idx, size_t *n, long i) {
    if (i < 0) return;
    for (size_t k = 0; k < *n; k++)
        if (idx[k] == (size_t)i) return;
    idx[(*n)++] = (size_t)i;
}

/* Shards: every top-level file the index's format uses; the index names them, but it is not downloaded yet. */
static void add_shards(const hub_listing *l, size_t *idx, size_t *n, const char *prefix, const char *suffix) {
    for (size_t i = 0; i < l->n; i++) {
        const char *p = l->files[i].path;
        if (!strchr(p, '/') && !strncmp(p, prefix, strlen(prefix)) && ends_with(p, suffix)) add(idx, n, (long)i);
    }
}

static const char *const TOKENIZER_FILES[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                              "added_tokens.json", "special_tokens_map.json"};

err hub_listing_select(const hub_listing *l, size_t *idx, size_t *n_idx, errbuf *eb) {
    *n_idx = 0;
    long config = find(l, "config.json");
    if (config < 0) return errbuf_set(eb, ERR_FORMAT, "not a model repository: no config.json in its listing");
    if (find(l, "tokenizer.json") < 0 && (find(l, "vocab.json") < 0 || find(l, "merges.txt") < 0))
        return errbuf_set(eb, ERR_FORMAT, "the repository has no tokenizer (tokenizer.json, or vocab.json + merges.txt)");
    add(idx, n_idx, config);
    for (size_t t = 0; t < sizeof(TOKENIZER_FILES) / sizeof(*TOKENIZER_FILES); t++)
        add(idx, n_idx, find(l, TOKENIZER_FILES[t]));
    size_t before = *n_idx;
    long st_index = find(l, "model.safetensors.index.json"), pt_index = find(l, "pytorch_model.bin.index.json");
    if (find(l, "model.safetensors") >= 0) {
        add(idx, n_idx, find(l, "model.safetensors"));
    } else if (st_index >= 0) {
        add(idx, n_idx, st_index);
        add_shards(l, idx, n_idx, "", ".safetensors");
    } else if (find(l, "pytorch_model.bin") >= 0) {
        add(idx, n_idx, find(l, "pytorch_model.bin"));
    } else if (pt_index >= 0) {
        add(idx, n_idx, pt_index);
        add_shards(l, idx, n_idx, "pytorch_model", ".bin");
    }
    if (*n_idx == before || ((st_index >= 0 || pt_index >= 0) && *n_idx == before + 1 &&
                             (idx[before] == (size_t)st_index || idx[before] == (size_t)pt_index)))
        return errbuf_set(eb, ERR_FORMAT, "the repository has no weights (model.safetensors or pytorch_model.bin, "
                                          "single or sharded)");
    return ERR_OK;
}
