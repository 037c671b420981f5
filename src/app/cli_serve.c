/* cli_serve.c - `suggestd serve`: configuration table -> HTTP server -> model -> engine, until SIGINT/SIGTERM.
 *
 * The server listens before the model loads so /monitoring/healthz can answer 503 "loading" meanwhile. Shutdown
 * order is the reverse of the borrow order: the server (cancels in-flight requests, joins its threads) before the
 * engine, the engine before the model and tokenizer it borrows. */
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "cli.h"
#include "config.h"
#include "log.h"
#include "sched_api.h"
#include "srv.h"
#include "tok.h"

/* The auth settings of the table -> an auth (modes, cache store, rate limits). ERR_INVALID with the reason. */
static err open_auth(const cfg *c, auth **out, errbuf *eb) {
    const char *m = cfg_str(c, CFG_AUTH_MODE);
    int have_keys = cfg_str(c, CFG_API_KEYS) || cfg_str(c, CFG_API_KEYS_FILE);
    auth_mode mode;
    if (!m || !strcmp(m, "auto")) mode = have_keys ? AUTH_MODE_API_KEYS : AUTH_MODE_GITLAB;
    else if (!strcmp(m, "gitlab")) mode = AUTH_MODE_GITLAB;
    else if (!strcmp(m, "api-keys")) mode = AUTH_MODE_API_KEYS;
    else if (!strcmp(m, "gitlab+api-keys")) mode = AUTH_MODE_GITLAB_API_KEYS;
    else return errbuf_set(eb, ERR_INVALID, "SUGGESTD_AUTH_MODE: expected auto, gitlab, api-keys or gitlab+api-keys, "
                                            "got '%s'", m);
    auth_config ac = {
        .mode = mode,
        .gitlab_api_url = cfg_str(c, CFG_GITLAB_API_URL),
        .gitlab_url = cfg_str(c, CFG_GITLAB_URL),
        .gitlab_timeout_ms = (int)cfg_int(c, CFG_GITLAB_TIMEOUT_MS),
        .oidc_audience = cfg_str(c, CFG_OIDC_AUDIENCE),
        .jwks_ttl_s = (int)cfg_int(c, CFG_JWKS_TTL_S),
        .api_keys = cfg_str(c, CFG_API_KEYS),
        .api_keys_file = cfg_str(c, CFG_API_KEYS_FILE),
        .cache_secret = cfg_str(c, CFG_CACHE_SECRET),
        .use_local_cache = cfg_bool(c, CFG_USE_LOCAL_CACHE),
        .cache_max_entries = (size_t)cfg_int(c, CFG_AUTH_CACHE_MAX),
        .allow_ttl_s = (int)cfg_int(c, CFG_AUTH_ALLOW_TTL_S),
        .deny_ttl_s = (int)cfg_int(c, CFG_AUTH_DENY_TTL_S),
        .redis = {.url = cfg_str(c, CFG_REDIS_URL),
                  .host = cfg_str(c, CFG_REDIS_HOST),
                  .port = (int)cfg_int(c, CFG_REDIS_PORT),
                  .password = cfg_str(c, CFG_REDIS_PASS),
                  .db = (int)cfg_int(c, CFG_REDIS_DB),
                  .timeout_ms = (int)cfg_int(c, CFG_REDIS_TIMEOUT_MS),
                  .pool_size = (int)cfg_int(c, CFG_REDIS_POOL)},
        .rate_per_minute = (int)cfg_int(c, CFG_RATE_LIMIT_RPM),
        .rate_burst = (int)cfg_int(c, CFG_RATE_LIMIT_BURST),
    };
    err rc = auth_create(&ac, out, eb);
    if (rc == ERR_OK)
        LOG_INFO("authentication: %s, decision cache %s%s", m && strcmp(m, "auto") ? m
                 : mode == AUTH_MODE_API_KEYS ? "api-keys" : "gitlab", auth_store_kind(*out),
                 ac.rate_per_minute ? ", rate limited" : "");
    return rc;
}

/* --model ORG/NAME: pulled (when not complete) after the server listens, so healthz says "loading" meanwhile. A
 * pull can be long: SIGINT/SIGTERM are let through to end the process as usual (the next pull resumes). */
static int resolve_model(const char *arg, char *out, size_t cap) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    int rc = cli_model_resolve("serve", arg, out, cap);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    return rc;
}

int cli_serve(int argc, char **argv) {
    srv_block_signals(); /* before any thread exists, so SIGINT/SIGTERM reach srv_run's sigwait */
    cfg c;
    int help = 0;
    errbuf eb = {0};
    if (cfg_load(&c, argc, argv, &help, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd serve: %s\n", eb.msg);
        return 2;
    }
    if (help) {
        cfg_print_help(stdout);
        cfg_fini(&c);
        return 0;
    }
    const char *model_dir = cfg_str(&c, CFG_MODEL);
    if (!model_dir) {
        fprintf(stderr, "suggestd serve: --model DIR (or SUGGESTD_MODEL) is required (models/demo does not exist)\n");
        cfg_fini(&c);
        return 2;
    }
    auth *au = NULL;
    if (cfg_bool(&c, CFG_BYPASS_AUTH)) {
        LOG_WARN("!!! AUTHENTICATION IS OFF (BYPASS_EXTERNAL_AUTH=true): anyone who can reach the port can use the "
                 "completion routes; never expose this server beyond a trusted network !!!");
    } else if (open_auth(&c, &au, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd serve: %s\n", eb.msg);
        cfg_fini(&c);
        return 2;
    }
    char name_buf[256];
    snprintf(name_buf, sizeof(name_buf), "%s", model_dir);
    size_t nl = strlen(name_buf);
    while (nl > 1 && name_buf[nl - 1] == '/') name_buf[--nl] = 0;
    srv_config sc = {
        .host = cfg_str(&c, CFG_HOST),
        .port = (int)cfg_int(&c, CFG_PORT),
        .metrics_host = cfg_str(&c, CFG_METRICS_HOST),
        .metrics_port = (int)cfg_int(&c, CFG_METRICS_PORT),
        .max_connections = (int)cfg_int(&c, CFG_MAX_CONNECTIONS),
        .max_body_bytes = cfg_int(&c, CFG_MAX_BODY_BYTES),
        .max_n = (int)cfg_int(&c, CFG_MAX_N),
        .request_timeout_s = (int)cfg_int(&c, CFG_REQUEST_TIMEOUT_S),
        .idle_timeout_s = (int)cfg_int(&c, CFG_IDLE_TIMEOUT_S),
        .lang_prefix = cfg_bool(&c, CFG_LANG_PREFIX),
        .v2_max_tokens = (int)cfg_int(&c, CFG_V2_MAX_TOKENS),
        .log_prompts = cfg_bool(&c, CFG_LOG_PROMPTS),
        .model_name = basename(name_buf),
        .web_dir = cfg_str(&c, CFG_WEB_DIR),
        .docs_url = cfg_str(&c, CFG_DOCS_URL),
        .openapi_url = cfg_str(&c, CFG_OPENAPI_URL),
        .redoc_url = cfg_str(&c, CFG_REDOC_URL),
        .auth = au,
    };
    srv *s = NULL;
    if (srv_create(&sc, &s, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd serve: %s\n", eb.msg);
        auth_destroy(au);
        cfg_fini(&c);
        return 1;
    }
    LOG_INFO("listening on http://%s:%d (model %s loading)", sc.host ? sc.host : "0.0.0.0", srv_port(s), model_dir);
    if (sc.metrics_port) LOG_INFO("metrics on http://%s:%d/metrics", sc.metrics_host, sc.metrics_port);

    int rc = 1;
    tok *tk = NULL;
    sched *engine = NULL;
    cli_runtime rt = {0};
    sched_opts so = sched_opts_default();
    so.queue_max = (int32_t)cfg_int(&c, CFG_QUEUE_MAX);
    so.max_batch = (int32_t)cfg_int(&c, CFG_MAX_BATCH);
    so.step_tokens = (int32_t)cfg_int(&c, CFG_STEP_TOKENS);
    so.prefix_cache = cfg_bool(&c, CFG_PREFIX_CACHE);
    /* one step's rows are the activations' rows; the KV pool holds max-batch full contexts unless sized */
    int64_t kv_tokens = cfg_int(&c, CFG_KV_CACHE_TOKENS);
    eng_model_opts mo = {.max_rows = so.step_tokens, .n_kv_seqs = so.max_batch, .kv_dtype = -1,
                         .dtype = cfg_str(&c, CFG_DTYPE), /* auto | int8: checked by eng_model_create */
                         .n_kv_blocks = (int32_t)((kv_tokens + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK),
                         .kv_mem_fraction = (double)cfg_int(&c, CFG_KV_CACHE_PERCENT) / 100.0};
    const char *device = cfg_str(&c, CFG_DEVICE) ? cfg_str(&c, CFG_DEVICE) : cfg_str(&c, CFG_BACKEND);
    char resolved[4096];
    if (resolve_model(model_dir, resolved, sizeof(resolved))) goto out;
    model_dir = resolved;
    if (cli_runtime_open(&rt, model_dir, device, (int)cfg_int(&c, CFG_THREADS), &mo)) goto out;
    if (tok_load(model_dir, &tk, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd serve: %s\n", eb.msg);
        goto out;
    }
    if (sched_local_create(rt.em, tk, &so, &engine, &eb) != ERR_OK) {
        fprintf(stderr, "suggestd serve: %s\n", eb.msg);
        goto out;
    }
    srv_set_engine(s, engine, tk);
    LOG_INFO("ready: model %s, context %d tokens", model_dir, sched_n_ctx(engine));
    int sig = srv_run(s);
    LOG_INFO("signal %d: stopping (in-flight requests are cancelled)", sig);
    rc = 0;
out:
    srv_destroy(s);
    sched_destroy(engine);
    tok_destroy(tk);
    cli_runtime_close(&rt);
    auth_destroy(au); /* after the server: its handlers borrow it */
    cfg_fini(&c);
    return rc;
}
