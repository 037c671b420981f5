/* config.c - CodeGen config.json -> model_config, with HF CodeGenConfig's defaults and the limits the kernels rely on.
 *
 * Sizes are checked here once so every later layer can multiply them without overflow worries: each is positive
 * and at most 1<<20, so products of two fit easily in 64 bits. Structural limits (n_head % 4 for mp_num = 4, an
 * even rotary_dim no larger than head_dim) are the ones codegen-model.md §1 lists. */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "model.h"
#include "model_impl.h"

#define CFG_MAX_SIZE (1 << 20)

/* Reads an optional integer key into *out and sets *found; absent or null leaves *out alone. A value that is not
 * an integer in [lo, hi] is an error. */
static err get_int(const json_t *root, const char *key, const char *name, int64_t lo, int64_t hi, int32_t *out,
                   int *found, errbuf *eb) {
    const json_t *v = json_object_get(root, key);
    *found = 0;
    if (!v || json_is_null(v)) return ERR_OK;
    if (!json_is_integer(v)) return errbuf_set(eb, ERR_FORMAT, "%s: \"%s\" must be an integer", name, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return errbuf_set(eb, ERR_FORMAT, "%s: \"%s\" is %lld, outside [%lld, %lld]", name, key, (long long)x,
                          (long long)lo, (long long)hi);
    *out = (int32_t)x;
    *found = 1;
    return ERR_OK;
}

/* A required size: present, an integer, in [1, CFG_MAX_SIZE]. */
static err get_size(const json_t *root, const char *key, const char *name, int32_t *out, errbuf *eb) {
    int found;
    err rc = get_int(root, key, name, 1, CFG_MAX_SIZE, out, &found, eb);
    if (rc == ERR_OK && !found) rc = errbuf_set(eb, ERR_FORMAT, "%s: missing required field \"%s\"", name, key);
    return rc;
}

/* An optional string key must, if present and not null, equal want; anything else is a model we do not run. */
static err check_string(const json_t *root, const char *key, const char *want, const char *name, errbuf *eb) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return ERR_OK;
    if (!json_is_string(v)) return errbuf_set(eb, ERR_FORMAT, "%s: \"%s\" must be a string", name, key);
    if (strcmp(json_string_value(v), want))
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: \"%s\" is \"%s\"; only \"%s\" (CodeGen) is supported", name,
                          key, json_string_value(v), want);
    return ERR_OK;
}

static err parse_fields(const json_t *root, const char *name, model_config *c, errbuf *eb) {
    err rc;
    int found;
    if ((rc = check_string(root, "model_type", "codegen", name, eb)) ||
        (rc = check_string(root, "activation_function", "gelu_new", name, eb)) ||
        (rc = get_size(root, "n_layer", name, &c->n_layer, eb)) ||
        (rc = get_size(root, "n_embd", name, &c->n_embd, eb)) ||
        (rc = get_size(root, "n_head", name, &c->n_head, eb)) ||
        (rc = get_size(root, "vocab_size", name, &c->vocab_size, eb)))
        return rc;

    /* n_positions, falling back to the older n_ctx. */
    if ((rc = get_int(root, "n_positions", name, 1, CFG_MAX_SIZE, &c->n_positions, &found, eb))) return rc;
    if (!found && (rc = get_int(root, "n_ctx", name, 1, CFG_MAX_SIZE, &c->n_positions, &found, eb))) return rc;
    if (!found) return errbuf_set(eb, ERR_FORMAT, "%s: missing required field \"n_positions\" (or \"n_ctx\")", name);

    if (c->n_embd % c->n_head)
        return errbuf_set(eb, ERR_FORMAT, "%s: n_embd %d is not a multiple of n_head %d", name, c->n_embd, c->n_head);
    c->head_dim = c->n_embd / c->n_head;
    if (c->n_head % 4)
        return errbuf_set(eb, ERR_UNSUPPORTED,
                          "%s: n_head %d is not a multiple of 4 (CodeGen splits qkv_proj into mp_num = 4 chunks)",
                          name, c->n_head);

    /* rotary_dim is required; null means rotary on the whole head, as in HF's CodeGenAttention. */
    if (!json_object_get(root, "rotary_dim"))
        return errbuf_set(eb, ERR_FORMAT, "%s: missing required field \"rotary_dim\"", name);
    c->rotary_dim = c->head_dim;
    if ((rc = get_int(root, "rotary_dim", name, 1, CFG_MAX_SIZE, &c->rotary_dim, &found, eb))) return rc;
    if (c->rotary_dim % 2 || c->rotary_dim > c->head_dim)
        return errbuf_set(eb, ERR_FORMAT, "%s: rotary_dim %d must be even and at most head_dim %d", name,
                          c->rotary_dim, c->head_dim);

    c->n_inner = 4 * c->n_embd;
    c->eos_token_id = 50256;
    c->bos_token_id = 50256;
    if ((rc = get_int(root, "n_inner", name, 1, 4 * CFG_MAX_SIZE, &c->n_inner, &found, eb)) ||
        (rc = get_int(root, "eos_token_id", name, 0, INT32_MAX, &c->eos_token_id, &found, eb)) ||
        (rc = get_int(root, "bos_token_id", name, 0, INT32_MAX, &c->bos_token_id, &found, eb)))
        return rc;

    c->layer_norm_eps = 1e-5f;
    const json_t *ev = json_object_get(root, "layer_norm_epsilon");
    if (ev && !json_is_null(ev)) {
        double e = json_is_number(ev) ? json_number_value(ev) : -1.0;
        if (!(e > 0.0 && e < 1.0))
            return errbuf_set(eb, ERR_FORMAT, "%s: \"layer_norm_epsilon\" must be a number in (0, 1)", name);
        c->layer_norm_eps = (float)e;
    }

    /* HF's CodeGenConfig defaults to untied; a tied model's lm_head.weight is its wte. */
    const json_t *tv = json_object_get(root, "tie_word_embeddings");
    if (tv && !json_is_null(tv) && !json_is_boolean(tv))
        return errbuf_set(eb, ERR_FORMAT, "%s: \"tie_word_embeddings\" must be true or false", name);
    c->tie_word_embeddings = json_is_true(tv);

    const json_t *dv = json_object_get(root, "torch_dtype");
    if (dv && !json_is_null(dv)) {
        if (!json_is_string(dv) || strlen(json_string_value(dv)) >= sizeof(c->torch_dtype))
            return errbuf_set(eb, ERR_FORMAT, "%s: \"torch_dtype\" must be a short string such as \"float16\"",
                              name);
        strcpy(c->torch_dtype, json_string_value(dv));
    }
    return ERR_OK;
}

err model__config_parse_named(const char *json, size_t len, const char *name, model_config *cfg, errbuf *eb) {
    memset(cfg, 0, sizeof(*cfg));
    json_error_t jerr;
    model__json_begin();
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (model__json_oom() || json_error_code(&jerr) == json_error_out_of_memory)
            return errbuf_set(eb, ERR_NOMEM, "%s: out of memory parsing JSON", name);
        return errbuf_set(eb, ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", name, jerr.text, jerr.line,
                          jerr.column);
    }
    err rc = json_is_object(root) ? parse_fields(root, name, cfg, eb)
                                  : errbuf_set(eb, ERR_FORMAT, "%s: not a JSON object", name);
    json_decref(root);
    if (rc != ERR_OK) memset(cfg, 0, sizeof(*cfg));
    return rc;
}

err model_config_parse(const char *json, size_t len, model_config *cfg, errbuf *eb) {
    return model__config_parse_named(json, len, "config.json", cfg, eb);
}
