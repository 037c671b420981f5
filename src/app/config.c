/* config.c - the configuration table and its one loader (flags over environment over .env over defaults).
 *
 * DESIGN: values are kept as validated strings with their source; typed getters parse them again (cheap, and there
 * is one representation to print). Aliases are tried in table order and the first one set wins, so our
 * SUGGESTD_ names beat the seed's, which beat GitLab's later names. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "alloc.h"

#define ENV(...) {__VA_ARGS__}

static const cfg_entry table[CFG_COUNT] = {
    [CFG_MODEL] = {"model", ENV("SUGGESTD_MODEL"), CFG_TYPE_STRING, NULL, 0, 0,
                   "CodeGen model directory (config.json, model.safetensors, tokenizer); default models/demo when it "
                   "exists, else required"},
    [CFG_BACKEND] = {"backend", ENV("SUGGESTD_BACKEND"), CFG_TYPE_STRING, "cpu", 0, 0,
                     "engine backend: cpu, ref, or cuda / cuda:N (GPU N) in a build with CUDA"},
    [CFG_DEVICE] = {"device", ENV("SUGGESTD_DEVICE"), CFG_TYPE_STRING, NULL, 0, 0,
                    "same as backend (cpu | cuda | cuda:N); wins over it when set"},
    [CFG_THREADS] = {"threads", ENV("SUGGESTD_THREADS"), CFG_TYPE_INT, "0", 0, 1024,
                     "CPU threads for the engine, 0 = all cores"},
    [CFG_DTYPE] = {"dtype", ENV("SUGGESTD_DTYPE"), CFG_TYPE_STRING, "auto", 0, 0,
                   "weights: auto (as the checkpoint stores them) or int8 (matmul weights quantized at load with "
                   "per-row scales: codegen-350M f16 weights take 0.58x the memory and decode in ~0.6x the time; "
                   "CPU backends only)"},
    [CFG_HOST] = {"host", ENV("SUGGESTD_HOST", "FASTAPI_API_HOST"), CFG_TYPE_STRING, "0.0.0.0", 0, 0,
                  "address the API listens on (IPv4 literal)"},
    [CFG_PORT] = {"port", ENV("SUGGESTD_PORT", "FASTAPI_API_PORT"), CFG_TYPE_INT, "5000", 1, 65535,
                  "port the API listens on"},
    [CFG_METRICS_HOST] = {"metrics-host", ENV("SUGGESTD_METRICS_HOST", "FASTAPI_API_METRICS_HOST"), CFG_TYPE_STRING,
                          "0.0.0.0", 0, 0, "address of the separate metrics listener (when --metrics-port is set)"},
    [CFG_METRICS_PORT] = {"metrics-port", ENV("SUGGESTD_METRICS_PORT", "FASTAPI_API_METRICS_PORT"), CFG_TYPE_INT,
                          "0", 0, 65535,
                          "serve /metrics on this separate port (the seed used 8082); 0 = on the API port"},
    [CFG_QUEUE_MAX] = {"queue-max", ENV("SUGGESTD_QUEUE_MAX"), CFG_TYPE_INT, "64", 1, 100000,
                       "requests waiting for the engine at most; beyond it 429 with Retry-After"},
    [CFG_MAX_BATCH] = {"max-batch", ENV("SUGGESTD_MAX_BATCH"), CFG_TYPE_INT, "16", 1, 1024,
                       "requests that share one forward step at most (continuous batching); 1 = one at a time"},
    [CFG_STEP_TOKENS] = {"step-tokens", ENV("SUGGESTD_STEP_TOKENS"), CFG_TYPE_INT, "256", 16, 8192,
                         "tokens one forward step computes at most: one per decoding request plus prompt chunks, so "
                         "a long prompt never stalls running streams for more than one such step"},
    [CFG_PREFIX_CACHE] = {"prefix-cache", ENV("SUGGESTD_PREFIX_CACHE"), CFG_TYPE_BOOL, "true", 0, 0,
                          "keep the KV of finished prompts in 16-token blocks and reuse it for the next request "
                          "that starts the same (an editor's next keystroke)"},
    [CFG_KV_CACHE_TOKENS] = {"kv-cache-tokens", ENV("SUGGESTD_KV_CACHE_TOKENS"), CFG_TYPE_INT, "0", 0,
                             1L << 30,
                             "KV cache size in tokens, shared by all requests and the prefix cache; 0 = max-batch "
                             "full contexts, within kv-cache-percent of free memory"},
    [CFG_KV_CACHE_PERCENT] = {"kv-cache-percent", ENV("SUGGESTD_KV_CACHE_PERCENT"), CFG_TYPE_INT, "50", 1, 95,
                              "with kv-cache-tokens 0: the automatic KV cache takes at most this share of the memory "
                              "free after the weights (GPU memory on cuda, RAM on cpu), but always one full context"},
    [CFG_MAX_CONNECTIONS] = {"max-connections", ENV("SUGGESTD_MAX_CONNECTIONS"), CFG_TYPE_INT, "256", 1, 10000,
                             "simultaneous HTTP connections (one thread each)"},
    [CFG_MAX_BODY_BYTES] = {"max-body-bytes", ENV("SUGGESTD_MAX_BODY_BYTES"), CFG_TYPE_INT, "1048576", 1024,
                            1L << 30, "largest request body accepted; larger bodies get 413"},
    [CFG_MAX_N] = {"max-n", ENV("SUGGESTD_MAX_N"), CFG_TYPE_INT, "8", 1, 128, "largest `n` (choices per request)"},
    [CFG_REQUEST_TIMEOUT_S] = {"request-timeout", ENV("SUGGESTD_REQUEST_TIMEOUT_S"), CFG_TYPE_INT, "300", 1, 86400,
                               "seconds a completion may take (queue + engine) before it is cancelled (504)"},
    [CFG_IDLE_TIMEOUT_S] = {"idle-timeout", ENV("SUGGESTD_IDLE_TIMEOUT_S"), CFG_TYPE_INT, "60", 1, 86400,
                            "seconds an idle keep-alive connection stays open"},
    [CFG_LANG_PREFIX] = {"lang-prefix", ENV("SUGGESTD_LANG_PREFIX"), CFG_TYPE_BOOL, "false", 0, 0,
                         "prefix /v2 prompts with <lang> (for models fine-tuned on GitLab's prompt format)"},
    [CFG_V2_MAX_TOKENS] = {"v2-max-tokens", ENV("SUGGESTD_V2_MAX_TOKENS"), CFG_TYPE_INT, "32", 1, 4096,
                           "tokens generated for a /v2 completion (GitLab's service used 32)"},
    [CFG_LOG_PROMPTS] = {"log-prompts", ENV("SUGGESTD_LOG_PROMPTS"), CFG_TYPE_BOOL, "false", 0, 0,
                         "include prompts and completions in the request log (never by default)"},
    [CFG_WEB_DIR] = {"web-dir", ENV("SUGGESTD_WEB_DIR"), CFG_TYPE_STRING, "web/node_modules", 0, 0,
                     "folder holding the npm packages swagger-ui-dist and redoc, served locally for the docs pages"},
    [CFG_DOCS_URL] = {"docs-url", ENV("SUGGESTD_DOCS_URL", "DOCS_URL", "FASTAPI_DOCS_URL"), CFG_TYPE_STRING, NULL, 0,
                      0, "path of the Swagger UI page, e.g. /docs; unset = off"},
    [CFG_OPENAPI_URL] = {"openapi-url", ENV("SUGGESTD_OPENAPI_URL", "OPENAPI_URL", "FASTAPI_OPENAPI_URL"),
                         CFG_TYPE_STRING, NULL, 0, 0,
                         "path of the OpenAPI 3 document, e.g. /openapi.json; unset = off (/openapi.json when a "
                         "docs page is on)"},
    [CFG_REDOC_URL] = {"redoc-url", ENV("SUGGESTD_REDOC_URL", "REDOC_URL", "FASTAPI_REDOC_URL"), CFG_TYPE_STRING,
                       NULL, 0, 0, "path of the ReDoc page, e.g. /redoc; unset = off"},
    [CFG_BYPASS_AUTH] = {"bypass-external-auth", ENV("SUGGESTD_BYPASS_EXTERNAL_AUTH", "BYPASS_EXTERNAL_AUTH",
                                                     "AUTH_BYPASS_EXTERNAL"),
                         CFG_TYPE_BOOL, "false", 0, 0,
                         "serve WITHOUT checking tokens: anyone who reaches the port may use it (logged loudly)"},
    [CFG_GITLAB_API_URL] = {"gitlab-api-url", ENV("SUGGESTD_GITLAB_API_URL", "GITLAB_API_URL"), CFG_TYPE_STRING,
                            "https://gitlab.com/api/v4/", 0, 0,
                            "GitLab API base; tokens are checked with GET <base>ml/ai-assist"},
    [CFG_GITLAB_URL] = {"gitlab-url", ENV("SUGGESTD_GITLAB_URL", "GITLAB_URL"), CFG_TYPE_STRING,
                        "https://gitlab.com/", 0, 0,
                        "GitLab base for OIDC discovery (<base>/.well-known/openid-configuration)"},
    [CFG_AUTH_MODE] = {"auth-mode", ENV("SUGGESTD_AUTH_MODE"), CFG_TYPE_STRING, "auto", 0, 0,
                       "gitlab (tokens checked with GitLab; OIDC JWTs with X-Gitlab-Authentication-Type: oidc), "
                       "api-keys (only SUGGESTD_API_KEYS), gitlab+api-keys (a key, else GitLab); auto = api-keys "
                       "when keys are configured, else gitlab"},
    [CFG_API_KEYS] = {"api-keys", ENV("SUGGESTD_API_KEYS"), CFG_TYPE_SECRET, NULL, 0, 0,
                      "comma-separated API keys accepted as `Authorization: Bearer <key>`"},
    [CFG_API_KEYS_FILE] = {"api-keys-file", ENV("SUGGESTD_API_KEYS_FILE"), CFG_TYPE_STRING, NULL, 0, 0,
                           "file of API keys, one a line ('#' comments)"},
    [CFG_GITLAB_TIMEOUT_MS] = {"gitlab-timeout-ms", ENV("SUGGESTD_GITLAB_TIMEOUT_MS"), CFG_TYPE_INT, "10000", 100,
                               600000, "timeout of one GitLab call (token check, OIDC discovery, JWKS)"},
    [CFG_OIDC_AUDIENCE] = {"oidc-audience", ENV("SUGGESTD_OIDC_AUDIENCE"), CFG_TYPE_STRING,
                           "gitlab-code-suggestions", 0, 0, "the `aud` an OIDC JWT must carry"},
    [CFG_JWKS_TTL_S] = {"jwks-ttl", ENV("SUGGESTD_JWKS_TTL_S"), CFG_TYPE_INT, "86400", 60, 604800,
                        "seconds GitLab's OIDC signing keys are cached (refetched early for an unknown kid)"},
    [CFG_USE_LOCAL_CACHE] = {"use-local-cache", ENV("SUGGESTD_USE_LOCAL_CACHE", "USE_LOCAL_CACHE"), CFG_TYPE_BOOL,
                             "true", 0, 0, "cache auth decisions in process (false = Redis, shared by replicas)"},
    [CFG_CACHE_SECRET] = {"cache-secret", ENV("SUGGESTD_CACHE_SECRET"), CFG_TYPE_SECRET, NULL, 0, 0,
                          "HMAC secret of cache keys; required with Redis (the same on every replica); random per "
                          "process when unset with the local cache"},
    [CFG_AUTH_CACHE_MAX] = {"auth-cache-max", ENV("SUGGESTD_AUTH_CACHE_MAX"), CFG_TYPE_INT, "100000", 16, 100000000,
                            "decisions the local cache holds (least recently used go first)"},
    [CFG_AUTH_ALLOW_TTL_S] = {"auth-allow-ttl", ENV("SUGGESTD_AUTH_ALLOW_TTL_S"), CFG_TYPE_INT, "3600", 1, 86400,
                              "seconds an allowed decision is cached"},
    [CFG_AUTH_DENY_TTL_S] = {"auth-deny-ttl", ENV("SUGGESTD_AUTH_DENY_TTL_S"), CFG_TYPE_INT, "60", 0, 86400,
                             "seconds a denial (invalid token, user not allowed) is cached; 0 = not cached"},
    [CFG_REDIS_URL] = {"redis-url", ENV("SUGGESTD_REDIS_URL", "REDIS_URL"), CFG_TYPE_SECRET, NULL, 0, 0,
                       "redis://[:password@]host[:port][/db]; overrides the REDIS_HOST/PORT/PASS/DB settings"},
    [CFG_REDIS_HOST] = {"redis-host", ENV("SUGGESTD_REDIS_HOST", "REDIS_HOST"), CFG_TYPE_STRING, "redis", 0, 0,
                        "Redis host of the auth cache (the seed's compose service name by default)"},
    [CFG_REDIS_PORT] = {"redis-port", ENV("SUGGESTD_REDIS_PORT", "REDIS_PORT"), CFG_TYPE_INT, "6379", 1, 65535,
                        "Redis port"},
    [CFG_REDIS_PASS] = {"redis-pass", ENV("SUGGESTD_REDIS_PASS", "REDIS_PASS"), CFG_TYPE_SECRET, NULL, 0, 0,
                        "Redis password for the auth cache"},
    [CFG_REDIS_DB] = {"redis-db", ENV("SUGGESTD_REDIS_DB", "REDIS_DB"), CFG_TYPE_INT, "0", 0, 1000000,
                      "Redis database number"},
    [CFG_REDIS_TIMEOUT_MS] = {"redis-timeout-ms", ENV("SUGGESTD_REDIS_TIMEOUT_MS"), CFG_TYPE_INT, "200", 10, 60000,
                              "Redis connect and command timeout; past it the request is decided without the cache"},
    [CFG_REDIS_POOL] = {"redis-pool", ENV("SUGGESTD_REDIS_POOL"), CFG_TYPE_INT, "8", 1, 1024,
                        "Redis connections in the pool"},
    [CFG_RATE_LIMIT_RPM] = {"rate-limit", ENV("SUGGESTD_RATE_LIMIT_RPM"), CFG_TYPE_INT, "0", 0, 1000000,
                            "requests a minute per token (OIDC: per user); 0 = no limit; beyond it 429 with "
                            "Retry-After"},
    [CFG_RATE_LIMIT_BURST] = {"rate-limit-burst", ENV("SUGGESTD_RATE_LIMIT_BURST"), CFG_TYPE_INT, "0", 0, 1000000,
                              "token-bucket size (requests allowed at once); 0 = the per-minute rate"},
    [CFG_TRITON_HOST] = {"triton-host", ENV("SUGGESTD_TRITON_HOST", "TRITON_HOST"), CFG_TYPE_STRING, "triton", 0, 0,
                         "Triton gRPC host (remote engine; accepted now, used by a later release)"},
    [CFG_TRITON_PORT] = {"triton-port", ENV("SUGGESTD_TRITON_PORT", "TRITON_PORT"), CFG_TYPE_INT, "8001", 1, 65535,
                         "Triton gRPC port (accepted now, used by a later release)"},
    [CFG_TRITON_VERBOSITY] = {"triton-verbosity", ENV("SUGGESTD_TRITON_VERBOSITY", "TRITON_VERBOSITY"),
                              CFG_TYPE_BOOL, "false", 0, 0, "verbose Triton client (accepted now, used later)"},
    [CFG_API_EXTERNAL_PORT] = {"api-external-port", ENV("SUGGESTD_API_EXTERNAL_PORT", "API_EXTERNAL_PORT"),
                               CFG_TYPE_INT, "5000", 1, 65535,
                               "host port a compose file publishes the API on (not read by the server itself)"},
};

const cfg_entry *cfg_table(void) { return table; }

int cfg_parse_bool(const char *s) {
    static const char *yes[] = {"true", "1", "yes", "on"}, *no[] = {"false", "0", "no", "off"};
    if (!s) return -1;
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) return 1;
        if (!strcasecmp(s, no[i])) return 0;
    }
    return -1;
}

static int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

/* Checks v against the entry's type; returns ERR_OK or an errbuf naming `who` (the flag or variable). */
static err check_value(const cfg_entry *e, const char *v, const char *who, errbuf *eb) {
    if (e->type == CFG_TYPE_BOOL && cfg_parse_bool(v) < 0)
        return errbuf_set(eb, ERR_INVALID, "%s: expected true/false/1/0/yes/no/on/off, got '%s'", who, v);
    if (e->type == CFG_TYPE_INT) {
        long x;
        if (parse_long(v, &x) || x < e->lo || x > e->hi)
            return errbuf_set(eb, ERR_INVALID, "%s: expected an integer from %ld to %ld, got '%s'", who, e->lo, e->hi,
                              v);
    }
    return ERR_OK;
}

static err set_value(cfg *c, cfg_key k, const char *v, const char *src_kind, const char *name, errbuf *eb) {
    char who[96];
    snprintf(who, sizeof(who), "%s %s", src_kind, name);
    err rc = check_value(&table[k], v, who, eb);
    if (rc != ERR_OK) return rc;
    char *dup = xstrdup(v);
    if (!dup) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    xfree(c->value[k]);
    c->value[k] = dup;
    snprintf(c->source_buf[k], sizeof(c->source_buf[k]), "%s", who);
    c->source[k] = c->source_buf[k];
    return ERR_OK;
}

/* The first alias of k that `get` finds set. */
static const char *find_env(cfg_key k, const char *(*get)(void *, const char *), void *ud, const char **name) {
    for (int i = 0; i < CFG_MAX_ENV && table[k].env[i]; i++) {
        const char *v = get(ud, table[k].env[i]);
        if (v) {
            *name = table[k].env[i];
            return v;
        }
    }
    return NULL;
}

static const char *get_process_env(void *ud, const char *name) {
    (void)ud;
    return getenv(name);
}

/* .env: KEY=VALUE lines, '#' comments, optional `export `, optional matching quotes. Kept as parallel arrays. */
typedef struct dotenv {
    char **keys, **vals;
    int n;
} dotenv;

static const char *get_dotenv(void *ud, const char *name) {
    dotenv *d = ud;
    for (int i = d->n - 1; i >= 0; i--)
        if (!strcmp(d->keys[i], name)) return d->vals[i];
    return NULL;
}

static void dotenv_free(dotenv *d) {
    for (int i = 0; i < d->n; i++) {
        xfree(d->keys[i]);
        xfree(d->vals[i]);
    }
    xfree(d->keys);
    xfree(d->vals);
    memset(d, 0, sizeof(*d));
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

static err dotenv_load(dotenv *d, const char *path, errbuf *eb) {
    memset(d, 0, sizeof(*d));
    FILE *f = fopen(path, "r");
    if (!f) return ERR_OK; /* optional */
    char line[8192];
    int lineno = 0, cap = 0;
    err rc = ERR_OK;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        if (!strncmp(s, "export ", 7)) s = trim(s + 7);
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = errbuf_set(eb, ERR_INVALID, "%s:%d: expected KEY=VALUE", path, lineno);
            break;
        }
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        size_t vl = strlen(v);
        if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
            v[vl - 1] = 0;
            v++;
        } else {
            char *hash = strstr(v, " #"); /* inline comment after an unquoted value */
            if (hash) *hash = 0, v = trim(v);
        }
        if (d->n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nk = xrealloc(d->keys, (size_t)cap * sizeof(char *));
            if (nk) d->keys = nk;
            char **nv = xrealloc(d->vals, (size_t)cap * sizeof(char *));
            if (nv) d->vals = nv;
            if (!nk || !nv) {
                rc = errbuf_set(eb, ERR_NOMEM, "out of memory");
                break;
            }
        }
        d->keys[d->n] = xstrdup(k);
        d->vals[d->n] = xstrdup(v);
        d->n++;
        if (!d->keys[d->n - 1] || !d->vals[d->n - 1]) {
            rc = errbuf_set(eb, ERR_NOMEM, "out of memory");
            break;
        }
    }
    fclose(f);
    return rc;
}

static int find_flag(const char *name, size_t len) {
    for (int k = 0; k < CFG_COUNT; k++)
        if (strlen(table[k].flag) == len && !strncmp(table[k].flag, name, len)) return k;
    return -1;
}

err cfg_load(cfg *c, int argc, char **argv, int *help, errbuf *eb) {
    memset(c, 0, sizeof(*c));
    *help = 0;
    err rc = ERR_OK;
    for (int k = 0; k < CFG_COUNT; k++) {
        c->source[k] = "default";
        const char *def = table[k].def;
        if (k == CFG_MODEL && access("models/demo/config.json", R_OK) == 0) def = "models/demo";
        if (def && !(c->value[k] = xstrdup(def))) return errbuf_set(eb, ERR_NOMEM, "out of memory");
    }
    dotenv d;
    if ((rc = dotenv_load(&d, ".env", eb)) != ERR_OK) goto out;
    for (int k = 0; k < CFG_COUNT; k++) {
        const char *name, *v;
        if ((v = find_env((cfg_key)k, get_dotenv, &d, &name)) && (rc = set_value(c, k, v, ".env", name, eb)))
            goto out;
        if ((v = find_env((cfg_key)k, get_process_env, NULL, &name)) && (rc = set_value(c, k, v, "env", name, eb)))
            goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            rc = errbuf_set(eb, ERR_INVALID, "unexpected argument '%s'", a);
            goto out;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        int k = find_flag(name, nl);
        if (k < 0) {
            rc = errbuf_set(eb, ERR_INVALID, "unknown option '--%.*s' (see --help)", (int)nl, name);
            goto out;
        }
        const char *v;
        if (eq) v = eq + 1;
        else if (table[k].type == CFG_TYPE_BOOL && (i + 1 >= argc || cfg_parse_bool(argv[i + 1]) < 0)) v = "true";
        else if (i + 1 < argc) v = argv[++i];
        else {
            rc = errbuf_set(eb, ERR_INVALID, "--%s needs a value", table[k].flag);
            goto out;
        }
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", table[k].flag);
        if ((rc = set_value(c, (cfg_key)k, v, "flag", flag, eb)) != ERR_OK) goto out;
    }
out:
    dotenv_free(&d);
    if (rc != ERR_OK) cfg_fini(c);
    return rc;
}

void cfg_fini(cfg *c) {
    for (int k = 0; k < CFG_COUNT; k++) xfree(c->value[k]);
    memset(c, 0, sizeof(*c));
}

const char *cfg_str(const cfg *c, cfg_key k) { return c->value[k] && c->value[k][0] ? c->value[k] : NULL; }

long cfg_int(const cfg *c, cfg_key k) {
    long v = 0;
    if (c->value[k]) parse_long(c->value[k], &v);
    return v;
}

int cfg_bool(const cfg *c, cfg_key k) { return cfg_parse_bool(c->value[k]) == 1; }

static const char *type_name(cfg_type t) {
    switch (t) {
    case CFG_TYPE_BOOL: return "bool";
    case CFG_TYPE_INT: return "int";
    case CFG_TYPE_STRING: return "string";
    case CFG_TYPE_SECRET: return "secret";
    }
    return "?";
}

void cfg_print_help(FILE *f) {
    fprintf(f, "usage: suggestd serve [--model DIR] [--host 0.0.0.0] [--port 5000] [options]\n"
               "\n"
               "Serves the FauxPilot/OpenAI and GitLab code-suggestion APIs over HTTP.\n"
               "Each setting comes from its flag, else its environment variables (first listed wins), else a .env\n"
               "file in the working directory, else its default. Booleans accept true/false/1/0/yes/no/on/off.\n"
               "\n");
    for (int k = 0; k < CFG_COUNT; k++) {
        const cfg_entry *e = &table[k];
        char head[64];
        snprintf(head, sizeof(head), "--%s %s", e->flag, e->type == CFG_TYPE_BOOL ? "[BOOL]" : "VALUE");
        fprintf(f, "  %-30s %s\n", head, e->help);
        fprintf(f, "  %-30s %s, default %s; env", "", type_name(e->type), e->def ? e->def : "(unset)");
        for (int i = 0; i < CFG_MAX_ENV && e->env[i]; i++) fprintf(f, "%s %s", i ? "," : "", e->env[i]);
        fprintf(f, "\n");
    }
}

void cfg_print(const cfg *c, FILE *f) {
    for (int k = 0; k < CFG_COUNT; k++) {
        const cfg_entry *e = &table[k];
        const char *v = c->value[k] ? c->value[k] : "";
        if (e->type == CFG_TYPE_SECRET && *v) v = "********";
        fprintf(f, "%s=%s  # %s\n", e->env[0], v, c->source[k] ? c->source[k] : "default");
    }
}
