/* config.h - THE configuration table of `suggestd serve` (Redis-style: declared once, drives parsing, help, dumps).
 *
 * Each setting has one row: its flag, its environment names (ours first, then the seed's and GitLab's names as
 * aliases), a type, a default and a help line. Values come from, highest first: command-line flags, the process
 * environment, a `.env` file in the working directory, the default. Every value is validated once at load, so a bad
 * boolean or number stops startup with a message naming the variable and where it came from.
 *
 * A cfg is plain data after cfg_load: read it from any thread. */
#ifndef SUGGESTD_APP_CONFIG_H
#define SUGGESTD_APP_CONFIG_H

#include <stdio.h>

#include "err.h"

typedef enum cfg_type { CFG_TYPE_BOOL, CFG_TYPE_INT, CFG_TYPE_STRING, CFG_TYPE_SECRET } cfg_type;

/* The settings, in the order `serve --help` and `suggestd config` list them. */
typedef enum cfg_key {
    CFG_MODEL,
    CFG_BACKEND,
    CFG_DEVICE,
    CFG_THREADS,
    CFG_DTYPE,
    CFG_HOST,
    CFG_PORT,
    CFG_METRICS_HOST,
    CFG_METRICS_PORT,
    CFG_QUEUE_MAX,
    CFG_MAX_BATCH,
    CFG_STEP_TOKENS,
    CFG_PREFIX_CACHE,
    CFG_KV_CACHE_TOKENS,
    CFG_KV_CACHE_PERCENT,
    CFG_MAX_CONNECTIONS,
    CFG_MAX_BODY_BYTES,
    CFG_MAX_N,
    CFG_REQUEST_TIMEOUT_S,
    CFG_IDLE_TIMEOUT_S,
    CFG_LANG_PREFIX,
    CFG_V2_MAX_TOKENS,
    CFG_LOG_PROMPTS,
    CFG_WEB_DIR,
    CFG_DOCS_URL,
    CFG_OPENAPI_URL,
    CFG_REDOC_URL,
    CFG_BYPASS_AUTH,
    CFG_GITLAB_API_URL,
    CFG_GITLAB_URL,
    CFG_AUTH_MODE,
    CFG_API_KEYS,
    CFG_API_KEYS_FILE,
    CFG_GITLAB_TIMEOUT_MS,
    CFG_OIDC_AUDIENCE,
    CFG_JWKS_TTL_S,
    CFG_USE_LOCAL_CACHE,
    CFG_CACHE_SECRET,
    CFG_AUTH_CACHE_MAX,
    CFG_AUTH_ALLOW_TTL_S,
    CFG_AUTH_DENY_TTL_S,
    CFG_REDIS_URL,
    CFG_REDIS_HOST,
    CFG_REDIS_PORT,
    CFG_REDIS_PASS,
    CFG_REDIS_DB,
    CFG_REDIS_TIMEOUT_MS,
    CFG_REDIS_POOL,
    CFG_RATE_LIMIT_RPM,
    CFG_RATE_LIMIT_BURST,
    CFG_TRITON_HOST,
    CFG_TRITON_PORT,
    CFG_TRITON_VERBOSITY,
    CFG_API_EXTERNAL_PORT,
    CFG_COUNT
} cfg_key;

#define CFG_MAX_ENV 4

typedef struct cfg_entry {
    const char *flag;                /* "--port" without the dashes: "port" */
    const char *env[CFG_MAX_ENV];    /* ours first; NULL-terminated when shorter */
    cfg_type type;
    const char *def;                 /* textual default; NULL = unset (empty) */
    long lo, hi;                     /* INT range */
    const char *help;
} cfg_entry;

/* The table itself (CFG_COUNT rows, indexed by cfg_key). */
const cfg_entry *cfg_table(void);

typedef struct cfg {
    char *value[CFG_COUNT];       /* heap strings; NULL = unset */
    const char *source[CFG_COUNT]; /* "default", "flag --port", ".env TRITON_PORT", "env FASTAPI_API_PORT" */
    char source_buf[CFG_COUNT][96];
} cfg;

/* Loads defaults, then `.env` in the working directory (if present), then the environment, then argv (flags of the
 * table plus --help, which sets *help). argv[0] is the subcommand name. Returns ERR_INVALID with the offending name
 * in eb for unknown flags, missing flag values, bad booleans/integers, or a malformed .env line. */
err cfg_load(cfg *c, int argc, char **argv, int *help, errbuf *eb);
void cfg_fini(cfg *c);

const char *cfg_str(const cfg *c, cfg_key k); /* NULL when unset or empty */
long cfg_int(const cfg *c, cfg_key k);
int cfg_bool(const cfg *c, cfg_key k);

/* Parses true/false/1/0/yes/no/on/off (any case): 1 or 0, -1 if none of those. */
int cfg_parse_bool(const char *s);

/* `serve --help`: every setting with its flag, variables and default. */
void cfg_print_help(FILE *f);
/* `suggestd config`: effective values, secrets masked, with where each came from. */
void cfg_print(const cfg *c, FILE *f);

#endif
