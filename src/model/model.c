/* model.c - open a CodeGen model directory: config.json, then the weights (model.safetensors, its sharded index,
 * pytorch_model.bin, or its sharded index, in that order of preference), and bind every weight the forward pass needs,
 * checked against the shapes the config implies.
 *
 * DESIGN. The weights are numbered "slots" in the CodeGen tensor order (wte; per layer ln_1.w, ln_1.b, qkv, out_proj,
 * fc_in.w, fc_in.b, fc_out.w, fc_out.b; ln_f.w, ln_f.b, lm_head.w, lm_head.b: 5 + 8 * n_layer in all). Each tensor
 * found in any shard is classified by name into a slot, an ignored buffer (attention masks), or an unknown name
 * (warned about, then ignored). Then every slot must be filled once, with its expected shape and the one dtype. One
 * table (slot_ptr / slot_name / slot_shape) describes the slots so the three steps cannot disagree. A weights file is
 * either a safetensors file (m->shards) or a pytorch_model.bin (pt.h; kept in the model_priv wrapper below, since
 * model.h's struct only has room for the former); both hand out st_tensors, so binding does not care which. With
 * tie_word_embeddings the lm_head.weight slot is filled with wte after binding (any lm_head.weight in the file is
 * skipped), so the later checks and the engine see an ordinary, filled slot. */
#include "model.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "mapfile.h"
#include "model_impl.h"
#include "pt.h"

#define CONFIG_MAX_BYTES (1u << 20)
#define INDEX_MAX_BYTES (64u << 20)
#define MAX_UNKNOWN_WARNINGS 10

enum { LAYER_SLOTS = 8, SLOT_IGNORED = -1, SLOT_UNKNOWN = -2 };

static const char *const layer_suffix[LAYER_SLOTS] = {
    "ln_1.weight",      "ln_1.bias",       "attn.qkv_proj.weight", "attn.out_proj.weight",
    "mlp.fc_in.weight", "mlp.fc_in.bias", "mlp.fc_out.weight",    "mlp.fc_out.bias",
};
/* Slot 0 and the four after the layers. */
static const char *const top_name[5] = {
    "transformer.wte.weight", "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight", "lm_head.bias",
};
/* Buffers some checkpoints carry that are not weights. */
static const char *const ignored_suffix[] = {".attn.causal_mask", ".attn.bias", ".attn.masked_bias"};

/* The model plus the pytorch_model.bin files; model_open allocates this and returns &pub. */
typedef struct model_priv {
    model pub;
    pt_file **pt;
    int32_t n_pt;
} model_priv;

static model_priv *priv(model *m) { return (model_priv *)m; }

/* Weights files numbered 0 .. n_shards + n_pt - 1: safetensors first, then pytorch_model.bin. */
static int32_t src_count(model *m) { return m->n_shards + priv(m)->n_pt; }
static const char *src_name(model *m, int32_t s) {
    return s < m->n_shards ? st_name(m->shards[s]) : pt_name(priv(m)->pt[s - m->n_shards]);
}
static size_t src_tensors(model *m, int32_t s) {
    return s < m->n_shards ? st_count(m->shards[s]) : pt_count(priv(m)->pt[s - m->n_shards]);
}
static const st_tensor *src_at(model *m, int32_t s, size_t i) {
    return s < m->n_shards ? st_at(m->shards[s], i) : pt_at(priv(m)->pt[s - m->n_shards], i);
}

static size_t slot_count(const model_config *c) { return 5 + (size_t)LAYER_SLOTS * (size_t)c->n_layer; }

static const st_tensor **slot_ptr(model *m, size_t k) {
    size_t nl = (size_t)LAYER_SLOTS * (size_t)m->cfg.n_layer;
    if (k == 0) return &m->wte;
    if (k <= nl) {
        model_layer *ly = &m->layers[(k - 1) / LAYER_SLOTS];
        const st_tensor **p[LAYER_SLOTS] = {&ly->ln_1_w,   &ly->ln_1_b,  &ly->qkv,      &ly->out_proj,
                                            &ly->fc_in_w,  &ly->fc_in_b, &ly->fc_out_w, &ly->fc_out_b};
        return p[(k - 1) % LAYER_SLOTS];
    }
    const st_tensor **p[4] = {&m->ln_f_w, &m->ln_f_b, &m->lm_head_w, &m->lm_head_b};
    return p[k - 1 - nl];
}

static void slot_name(const model_config *c, size_t k, char *buf, size_t cap) {
    size_t nl = (size_t)LAYER_SLOTS * (size_t)c->n_layer;
    if (k == 0) snprintf(buf, cap, "%s", top_name[0]);
    else if (k <= nl)
        snprintf(buf, cap, "transformer.h.%zu.%s", (k - 1) / LAYER_SLOTS, layer_suffix[(k - 1) % LAYER_SLOTS]);
    else snprintf(buf, cap, "%s", top_name[k - nl]);
}

/* Expected shape of slot k: nn.Linear weights are [out, in], vectors [n]. Returns n_dims. */
static int slot_shape(const model_config *c, size_t k, int64_t dims[2]) {
    const int64_t D = c->n_embd, F = c->n_inner, V = c->vocab_size;
    size_t nl = (size_t)LAYER_SLOTS * (size_t)c->n_layer;
    if (k == 0) return dims[0] = V, dims[1] = D, 2;
    if (k > nl) {
        switch (k - nl) {
        case 1: case 2: return dims[0] = D, 1;
        case 3: return dims[0] = V, dims[1] = D, 2;
        default: return dims[0] = V, 1;
        }
    }
    switch ((k - 1) % LAYER_SLOTS) {
    case 0: case 1: case 7: return dims[0] = D, 1;
    case 2: return dims[0] = 3 * D, dims[1] = D, 2;
    case 3: return dims[0] = D, dims[1] = D, 2;
    case 4: return dims[0] = F, dims[1] = D, 2;
    case 5: return dims[0] = F, 1;
    default: return dims[0] = D, dims[1] = F, 2;
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !memcmp(s + n - m, suffix, m);
}

/* Maps a tensor name to its slot, SLOT_IGNORED or SLOT_UNKNOWN. Layer numbers must be canonical ("3", not "03")
 * and below n_layer. */
static long classify(const model_config *c, const char *name) {
    for (size_t i = 0; i < sizeof(ignored_suffix) / sizeof(ignored_suffix[0]); i++)
        if (ends_with(name, ignored_suffix[i])) return SLOT_IGNORED;
    size_t nl = (size_t)LAYER_SLOTS * (size_t)c->n_layer;
    if (!strcmp(name, top_name[0])) return 0;
    for (size_t i = 1; i < 5; i++)
        if (!strcmp(name, top_name[i])) return (long)(nl + i);
    static const char prefix[] = "transformer.h.";
    if (strncmp(name, prefix, sizeof(prefix) - 1)) return SLOT_UNKNOWN;
    const char *p = name + sizeof(prefix) - 1;
    long layer = 0;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.')) return SLOT_UNKNOWN;
    for (; *p >= '0' && *p <= '9'; p++) {
        layer = layer * 10 + (*p - '0');
        if (layer >= c->n_layer) return SLOT_UNKNOWN;
    }
    if (*p++ != '.') return SLOT_UNKNOWN;
    for (long j = 0; j < LAYER_SLOTS; j++)
        if (!strcmp(p, layer_suffix[j])) return 1 + layer * LAYER_SLOTS + j;
    return SLOT_UNKNOWN;
}

static void shape_str(char *out, size_t cap, const int64_t *shape, int n_dims) {
    size_t k = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < n_dims && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static err nomem(errbuf *eb, const char *what) { return errbuf_set(eb, ERR_NOMEM, "%s: out of memory", what); }

static err load_config(model *m, errbuf *eb) {
    char *path = path_join(m->dir, "config.json"), *text = NULL;
    if (!path) return nomem(eb, m->dir);
    size_t len = 0;
    err rc = file_read_all(path, &text, &len, CONFIG_MAX_BYTES, eb);
    if (rc == ERR_OK) rc = model__config_parse_named(text, len, path, &m->cfg, eb);
    xfree(text);
    xfree(path);
    return rc;
}

/* A shard name from an index must name a file in the model directory itself. */
static int plain_file_name(const char *s) { return *s && !strchr(s, '/') && !strstr(s, ".."); }

/* Opens every distinct shard the index names, once, and checks each listed tensor is in its shard. is_pt: the shards
 * are pytorch_model-*.bin files (pytorch_model.bin.index.json, the same weight_map format). */
static err open_sharded(model *m, const char *index_path, int is_pt, errbuf *eb) {
    char *text = NULL;
    size_t len = 0;
    err rc = file_read_all(index_path, &text, &len, INDEX_MAX_BYTES, eb);
    if (rc != ERR_OK) return rc;
    json_error_t jerr;
    model__json_begin();
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    xfree(text);
    if (!root) {
        if (model__json_oom() || json_error_code(&jerr) == json_error_out_of_memory) return nomem(eb, index_path);
        return errbuf_set(eb, ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", index_path, jerr.text,
                          jerr.line, jerr.column);
    }
    const char **files = NULL;
    const json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(wm)) {
        rc = errbuf_set(eb, ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    files = xmalloc_array(json_object_size(wm), sizeof(*files));
    if (!files) {
        rc = nomem(eb, index_path);
        goto done;
    }
    size_t n_files = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)wm, key, val) {
        const char *fn = json_string_value(val);
        if (!fn) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: weight_map entry for tensor '%s' is not a string", index_path, key);
            goto done;
        }
        if (!plain_file_name(fn)) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': shard name '%s' is not a plain file name", index_path,
                            key, fn);
            goto done;
        }
        size_t i = 0;
        while (i < n_files && strcmp(files[i], fn)) i++;
        if (i == n_files) files[n_files++] = fn;
    }
    if (n_files > INT32_MAX) {
        rc = errbuf_set(eb, ERR_FORMAT, "%s: too many shards", index_path);
        goto done;
    }
    model_priv *mp = priv(m);
    if (is_pt) mp->pt = xcalloc(n_files, sizeof(*mp->pt));
    else m->shards = xcalloc(n_files, sizeof(*m->shards));
    if (is_pt ? !mp->pt : !m->shards) {
        rc = nomem(eb, index_path);
        goto done;
    }
    if (is_pt) mp->n_pt = (int32_t)n_files;
    else m->n_shards = (int32_t)n_files;
    for (size_t i = 0; i < n_files; i++) {
        char *path = path_join(m->dir, files[i]);
        rc = !path ? nomem(eb, index_path) : is_pt ? pt_open(path, &mp->pt[i], eb) : st_open(path, &m->shards[i], eb);
        xfree(path);
        if (rc != ERR_OK) goto done;
    }
    json_object_foreach((json_t *)wm, key, val) {
        const char *fn = json_string_value(val);
        size_t i = 0;
        while (strcmp(files[i], fn)) i++;
        if (is_pt ? !pt_find(mp->pt[i], key) : !st_find(m->shards[i], key)) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: weight_map puts tensor '%s' in %s, which does not contain it",
                            index_path, key, is_pt ? pt_name(mp->pt[i]) : st_name(m->shards[i]));
            goto done;
        }
    }
done:
    xfree(files);
    json_decref(root);
    return rc;
}

/* Opens model.safetensors, or else the shards of model.safetensors.index.json, or else pytorch_model.bin, or else
 * the shards of pytorch_model.bin.index.json. *where names the one that was used (for messages about missing
 * tensors). */
static err open_weights(model *m, char **where, errbuf *eb) {
    char *single = path_join(m->dir, "model.safetensors"), *index = path_join(m->dir, "model.safetensors.index.json");
    char *bin = path_join(m->dir, "pytorch_model.bin"), *bin_index = path_join(m->dir, "pytorch_model.bin.index.json");
    model_priv *mp = priv(m);
    err rc;
    if (!single || !index || !bin || !bin_index) {
        rc = nomem(eb, m->dir);
    } else if (access(single, F_OK) == 0) {
        m->shards = xcalloc(1, sizeof(*m->shards));
        if (!m->shards) {
            rc = nomem(eb, single);
        } else {
            m->n_shards = 1;
            rc = st_open(single, &m->shards[0], eb);
        }
        *where = single, single = NULL;
    } else if (access(index, F_OK) == 0) {
        rc = open_sharded(m, index, 0, eb);
        *where = index, index = NULL;
    } else if (access(bin, F_OK) == 0) {
        mp->pt = xcalloc(1, sizeof(*mp->pt));
        if (!mp->pt) {
            rc = nomem(eb, bin);
        } else {
            mp->n_pt = 1;
            rc = pt_open(bin, &mp->pt[0], eb);
        }
        *where = bin, bin = NULL;
    } else if (access(bin_index, F_OK) == 0) {
        rc = open_sharded(m, bin_index, 1, eb);
        *where = bin_index, bin_index = NULL;
    } else {
        rc = errbuf_set(eb, ERR_IO, "%s: %s (and no model.safetensors.index.json, pytorch_model.bin or "
                        "pytorch_model.bin.index.json)", single, strerror(errno));
    }
    xfree(single);
    xfree(index);
    xfree(bin);
    xfree(bin_index);
    return rc;
}

/* Puts every tensor of every shard into its slot, then checks all slots are filled with the right shape and one
 * float dtype. */
static err bind_tensors(model *m, const char *where, errbuf *eb) {
    const model_config *c = &m->cfg;
    size_t n_slots = slot_count(c), n_unknown = 0;
    m->layers = xcalloc((size_t)c->n_layer, sizeof(*m->layers));
    int32_t *src = xmalloc_array(n_slots, sizeof(*src)); /* the shard each slot came from */
    if (!m->layers || !src) {
        xfree(src);
        return nomem(eb, where);
    }
    err rc = ERR_OK;
    char name[128], want[64], got[160];
    const size_t lm_head_slot = n_slots - 2;
    for (int32_t s = 0; s < src_count(m) && rc == ERR_OK; s++) {
        for (size_t i = 0; i < src_tensors(m, s); i++) {
            const st_tensor *t = src_at(m, s, i);
            long k = classify(c, t->name);
            if (k == SLOT_IGNORED) continue;
            /* tied: torch.save keeps both names of the one weight; safetensors writers drop lm_head.weight */
            if (c->tie_word_embeddings && (size_t)k == lm_head_slot) {
                LOG_DEBUG("%s: '%s' is tied to transformer.wte.weight: ignoring the copy in the file", src_name(m, s),
                          t->name);
                continue;
            }
            if (k == SLOT_UNKNOWN) {
                if (++n_unknown <= MAX_UNKNOWN_WARNINGS)
                    LOG_WARN("%s: ignoring unexpected tensor '%s'", src_name(m, s), t->name);
                continue;
            }
            const st_tensor **slot = slot_ptr(m, (size_t)k);
            if (*slot) {
                rc = errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s' is also in %s", src_name(m, s), t->name,
                                src_name(m, src[k]));
                break;
            }
            *slot = t;
            src[k] = s;
        }
    }
    if (n_unknown > MAX_UNKNOWN_WARNINGS)
        LOG_WARN("%s: ignored %zu more unexpected tensors", where, n_unknown - MAX_UNKNOWN_WARNINGS);
    if (rc == ERR_OK && c->tie_word_embeddings && m->wte) { /* HF's tie_weights(): the output layer is wte */
        m->lm_head_w = m->wte;
        src[lm_head_slot] = src[0];
    }

    for (size_t k = 0; k < n_slots && rc == ERR_OK; k++) {
        if (!*slot_ptr(m, k)) {
            slot_name(c, k, name, sizeof(name));
            rc = errbuf_set(eb, ERR_FORMAT, "%s: missing tensor '%s'", where, name);
        }
    }
    const st_tensor *first = m->wte;
    if (rc == ERR_OK && first->dtype != ST_F32 && first->dtype != ST_F16 && first->dtype != ST_BF16)
        rc = errbuf_set(eb, ERR_UNSUPPORTED, "%s: tensor '%s' is %s; weights must be F32, F16 or BF16",
                        src_name(m, src[0]), first->name, st_dtype_name(first->dtype));
    for (size_t k = 0; k < n_slots && rc == ERR_OK; k++) {
        const st_tensor *t = *slot_ptr(m, k);
        const char *file = src_name(m, src[k]);
        int64_t dims[2];
        int nd = slot_shape(c, k, dims);
        if (t->n_dims != nd || t->shape[0] != dims[0] || (nd == 2 && t->shape[1] != dims[1])) {
            shape_str(want, sizeof(want), dims, nd);
            shape_str(got, sizeof(got), t->shape, t->n_dims);
            rc = errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s' has shape %s, but config.json implies %s", file, t->name,
                            got, want);
        } else if (t->dtype != first->dtype) {
            rc = errbuf_set(eb, ERR_UNSUPPORTED,
                            "%s: tensor '%s' is %s but '%s' is %s; all weights must share one dtype", file, t->name,
                            st_dtype_name(t->dtype), first->name, st_dtype_name(first->dtype));
        }
    }
    if (rc == ERR_OK) m->dtype = first->dtype;
    xfree(src);
    return rc;
}

err model_open(const char *dir, model **out, errbuf *eb) {
    *out = NULL;
    model_priv *mp = xcalloc(1, sizeof(*mp));
    if (!mp) return nomem(eb, dir);
    model *m = &mp->pub;
    char *where = NULL;
    err rc = (m->dir = xstrdup(dir)) ? ERR_OK : nomem(eb, dir);
    if (rc == ERR_OK) rc = load_config(m, eb);
    if (rc == ERR_OK) rc = open_weights(m, &where, eb);
    if (rc == ERR_OK) rc = bind_tensors(m, where, eb);
    xfree(where);
    if (rc != ERR_OK) {
        model_close(m);
        return rc;
    }
    LOG_DEBUG("%s: CodeGen %d layers, n_embd %d, %s, %d shard(s), %" PRIu64 " weight bytes", dir, m->cfg.n_layer,
              m->cfg.n_embd, st_dtype_name(m->dtype), src_count(m), model_weight_bytes(m));
    *out = m;
    return ERR_OK;
}

void model_close(model *m) {
    if (!m) return;
    for (int32_t i = 0; i < m->n_shards; i++) st_close(m->shards[i]);
    xfree(m->shards);
    for (int32_t i = 0; i < priv(m)->n_pt; i++) pt_close(priv(m)->pt[i]);
    xfree(priv(m)->pt);
    xfree(m->layers);
    xfree(m->dir);
    xfree(priv(m));
}

uint64_t model_weight_bytes(const model *m) {
    if (!m || !m->layers) return 0;
    uint64_t sum = 0;
    for (size_t k = 0; k < slot_count(&m->cfg); k++) {
        const st_tensor *t = *slot_ptr((model *)m, k);
        if (t && (k == 0 || t != m->wte)) sum += t->nbytes; /* a tied lm_head is wte: counted once */
    }
    return sum;
}
