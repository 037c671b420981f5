/* srv_v2.c - GitLab's code-suggestion routes (/v2/completions, /v2/code/completions).
 *
 * The body is GitLab's `current_file` document, validated the way its pydantic models did (every problem reported
 * at once as a FastAPI 422 list). The prompt is the text above the cursor, optionally behind a `<lang>` tag chosen
 * from the file extension (for models fine-tuned on that format), truncated from the left to fit the context with
 * room for the completion. The completion drops its trailing incomplete line, as GitLab's service did. */
#include <ctype.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "srv_impl.h"

#define V2_MAX_NAME 255
#define V2_MAX_CONTENT 100000

/* GitLab's table (extension without the dot, case-sensitive) */
static const struct {
    const char *ext, *lang;
} lang_table[] = {
    {"c", "c"},          {"h", "c"},         {"cpp", "cpp"},     {"hpp", "cpp"},     {"c++", "cpp"},
    {"h++", "cpp"},      {"cc", "cpp"},      {"hh", "cpp"},      {"C", "cpp"},       {"H", "cpp"},
    {"cs", "csharp"},    {"go", "go"},       {"java", "java"},   {"js", "js"},       {"php", "php"},
    {"php3", "php"},     {"php4", "php"},    {"php5", "php"},    {"phps", "php"},    {"phpt", "php"},
    {"py", "python"},    {"rb", "ruby"},     {"rs", "rust"},     {"scala", "scala"}, {"ts", "ts"},
    {"tsx", "ts"},       {"kt", "kotlin"},   {"kts", "kotlin"},
};

/* Python's PurePath(file_name).suffix without the dot: the last '.' of the last component, not at its start or end. */
const char *srv_v2_language(const char *file_name) {
    const char *name = strrchr(file_name, '/');
    name = name ? name + 1 : file_name;
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name || dot[1] == 0) return NULL;
    for (size_t i = 0; i < sizeof(lang_table) / sizeof(lang_table[0]); i++)
        if (!strcmp(dot + 1, lang_table[i].ext)) return lang_table[i].lang;
    return NULL;
}

/* GitLab's remove_incomplete_lines: keep through the last newline; text without one stays whole. */
size_t srv_v2_trim_incomplete(const char *text, size_t len) {
    for (size_t i = len; i > 0; i--)
        if (text[i - 1] == '\n') return i;
    return len;
}

static size_t n_codepoints(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

static json_t *loc2(const char *a, const char *b) { return b ? json_pack("[s,s,s]", "body", a, b) : json_pack("[s,s]", "body", a); }

/* Validates an optional/required string field of obj; appends pydantic-style problems to errs. */
static const char *check_str(json_t *obj, const char *key, int required, size_t max_chars, const char *parent,
                             json_t *errs, size_t *len) {
    json_t *v = json_object_get(obj, key);
    json_t *loc = parent ? loc2(parent, key) : loc2(key, NULL);
    if (!v || (json_is_null(v) && required)) {
        if (required) json_array_append_new(errs, srv_v2_detail_item(loc, "field required", "value_error.missing", NULL));
        else json_decref(loc);
        return NULL;
    }
    if (json_is_null(v)) {
        json_decref(loc);
        return NULL;
    }
    if (!json_is_string(v)) {
        json_array_append_new(errs, srv_v2_detail_item(loc, "str type expected", "type_error.str", NULL));
        return NULL;
    }
    size_t n = json_string_length(v);
    if (n_codepoints(json_string_value(v), n) > max_chars) {
        char m[96];
        snprintf(m, sizeof(m), "ensure this value has at most %zu characters", max_chars);
        json_array_append_new(errs, srv_v2_detail_item(loc, m, "value_error.any_str.max_length",
                                                       json_pack("{s:I}", "limit_value", (json_int_t)max_chars)));
        return NULL;
    }
    json_decref(loc);
    *len = n;
    return json_string_value(v);
}

static void check_int(json_t *obj, const char *key, json_t *errs) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v) || json_is_integer(v)) return;
    json_array_append_new(errs, srv_v2_detail_item(loc2(key, NULL), "value is not a valid integer",
                                                   "type_error.integer", NULL));
}

static void strip_ws(const char **s, size_t *n) {
    while (*n && isspace((unsigned char)**s)) (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

enum MHD_Result srv_v2_completions(srv_req *r) {
    srv *s = r->s;
    json_error_t je;
    json_t *root = r->body ? json_loadb(r->body, r->body_len, 0, &je) : NULL;
    if (!root) {
        json_t *errs = json_array();
        if (!r->body) json_array_append_new(errs, srv_v2_detail_item(json_pack("[s]", "body"), "field required",
                                                                      "value_error.missing", NULL));
        else
            json_array_append_new(errs, srv_v2_detail_item(json_pack("[s,i]", "body", je.position), je.text,
                                                           "value_error.jsondecode", NULL));
        return srv_reply_422(r, errs);
    }
    json_t *errs = json_array();
    if (!json_is_object(root)) {
        json_array_append_new(errs, srv_v2_detail_item(json_pack("[s]", "body"), "value is not a valid dict",
                                                       "type_error.dict", NULL));
        json_decref(root);
        return srv_reply_422(r, errs);
    }
    size_t n_path = 0, n_name = 0, n_above = 0, n_below = 0, n_li = 0;
    check_int(root, "prompt_version", errs);
    check_int(root, "project_id", errs);
    check_str(root, "project_path", 0, V2_MAX_NAME, NULL, errs, &n_path);
    json_t *cf = json_object_get(root, "current_file");
    const char *name = NULL, *above = NULL;
    if (!cf || json_is_null(cf)) {
        json_array_append_new(errs, srv_v2_detail_item(loc2("current_file", NULL), "field required",
                                                       "value_error.missing", NULL));
    } else if (!json_is_object(cf)) {
        json_array_append_new(errs, srv_v2_detail_item(loc2("current_file", NULL), "value is not a valid dict",
                                                       "type_error.dict", NULL));
    } else {
        name = check_str(cf, "file_name", 1, V2_MAX_NAME, "current_file", errs, &n_name);
        above = check_str(cf, "content_above_cursor", 1, V2_MAX_CONTENT, "current_file", errs, &n_above);
        check_str(cf, "content_below_cursor", 1, V2_MAX_CONTENT, "current_file", errs, &n_below);
        check_str(cf, "language_identifier", 0, V2_MAX_NAME, "current_file", errs, &n_li);
    }
    if (json_array_size(errs)) {
        json_decref(root);
        return srv_reply_422(r, errs);
    }
    json_decref(errs);

    sched *e = srv_engine(s);
    if (!e || !sched_healthy(e)) {
        json_decref(root);
        return srv_reply_err(r, ERR_UNSUPPORTED, e ? "the engine has failed; see the server log"
                                                   : "the model is still loading; retry shortly");
    }
    strip_ws(&name, &n_name);
    char fname[V2_MAX_NAME * 4 + 1];
    memcpy(fname, name, n_name);
    fname[n_name] = 0;
    const char *lang = srv_v2_language(fname);

    /* prompt = [<lang>] + the last tokens of the text above the cursor that leave room for the completion */
    int32_t max_tokens = s->cfg.v2_max_tokens;
    int32_t n_ctx = sched_n_ctx(e);
    if (max_tokens >= n_ctx) max_tokens = n_ctx / 2;
    int32_t *pre = NULL, *body = NULL;
    size_t n_pre = 0, n_body = 0;
    errbuf eb = {0};
    err rc = ERR_OK;
    if (s->cfg.lang_prefix && lang) {
        char tag[32];
        int tl = snprintf(tag, sizeof(tag), "<%s>", lang);
        rc = tok_encode(s->tk, tag, (size_t)tl, &pre, &n_pre, &eb);
    }
    if (rc == ERR_OK && n_above) rc = tok_encode(s->tk, above, n_above, &body, &n_body, &eb);
    size_t budget = (size_t)(n_ctx - max_tokens);
    size_t keep = n_body;
    if (n_pre + keep > budget) keep = budget > n_pre ? budget - n_pre : 0;
    size_t n_ids = n_pre + keep;
    int32_t *ids = rc == ERR_OK ? xmalloc_array(n_ids ? n_ids : 1, sizeof(int32_t)) : NULL;
    if (rc == ERR_OK && !ids) rc = errbuf_set(&eb, ERR_NOMEM, "out of memory");
    if (ids) {
        if (n_pre) memcpy(ids, pre, n_pre * sizeof(int32_t));
        if (keep) memcpy(ids + n_pre, body + (n_body - keep), keep * sizeof(int32_t));
        if (!n_ids) ids[0] = tok_eos_id(s->tk), n_ids = 1; /* nothing above the cursor: start a file */
    }
    if (s->cfg.log_prompts) r->log_prompt = xstrndup(above ? above : "", n_above);
    xfree(pre);
    xfree(body);
    json_decref(root);
    if (rc != ERR_OK) {
        xfree(ids);
        return srv_reply_err(r, rc, eb.msg);
    }
    r->prompt_tokens = (int32_t)n_ids;

    uint64_t deadline = r->t_start + (uint64_t)s->cfg.request_timeout_s * 1000000000ull;
    sched_request sr = {ids, n_ids, {0}, deadline};
    sr.params.max_tokens = max_tokens;
    sr.params.samp = samp_params_default();
    sr.params.samp.temperature = 0.2f; /* GitLab's service settings */
    sr.params.samp.top_p = 0.98f;
    sr.params.seed = srv_random_u64(s);
    sched_req *q = NULL;
    uint64_t t_submit = clock_ns();
    rc = sched_submit(e, &sr, &q, &eb);
    xfree(ids);
    if (rc != ERR_OK) return srv_reply_err(r, rc, eb.msg);
    srv_choice c = {0};
    rc = srv_collect(r, q, t_submit, deadline, &c, &eb);
    sched_release(q);
    if (rc != ERR_OK) {
        srv_choice_fini(&c);
        return srv_reply_collect_err(r, rc, eb.msg);
    }
    r->completion_tokens = c.n_gen;
    if (s->cfg.log_prompts) r->log_completion = xstrndup(c.text.p ? c.text.p : "", c.text.len);
    size_t keep_len = srv_v2_trim_incomplete(c.text.p ? c.text.p : "", c.text.len);
    char id[40];
    srv_random_id(s, id + 5, 30);
    memcpy(id, "cmpl-", 5);
    json_t *choice = json_pack("{s:s%,s:i,s:s}", "text", c.text.p ? c.text.p : "", keep_len, "index", 0, "finish_reason",
                               gen_finish_name(c.finish));
    srv_choice_fini(&c);
    json_t *resp = json_pack("{s:s,s:s,s:s,s:I,s:[o]}", "id", id, "model", s->cfg.model_name, "object",
                             "text_completion", "created", (json_int_t)time(NULL), "choices", choice);
    return srv_reply_json(r, 200, resp);
}
