/* srv.h - the HTTP API (FauxPilot/OpenAI /v1, GitLab /v2, models, health, metrics, docs) on libmicrohttpd.
 *
 * The server reaches the engine only through sched_api.h: HTTP threads parse JSON, tokenize, submit, and wait for
 * events; the model runs on the engine's own thread. The server starts listening before the model is loaded
 * (health answers 503 until srv_set_engine), so orchestrators see a live process while weights load.
 *
 * Lifetime: srv_create -> [srv_set_engine] -> srv_run (returns on SIGINT/SIGTERM) -> srv_destroy. No HTTP or JSON
 * types appear here. */
#ifndef SUGGESTD_SERVER_SRV_H
#define SUGGESTD_SERVER_SRV_H

#include <stdint.h>

#include "auth.h"
#include "err.h"
#include "sched_api.h"
#include "tok.h"

typedef struct srv srv;

/* Everything the server reads from the configuration table; strings are copied by srv_create. NULL/0 = off. */
typedef struct srv_config {
    const char *host;          /* IPv4 literal, "0.0.0.0" = all */
    int port;                  /* 0 = any free port (see srv_port) */
    const char *metrics_host;
    int metrics_port;          /* 0 = /metrics on the API port */
    int max_connections;
    long max_body_bytes;
    int max_n;
    int request_timeout_s;
    int idle_timeout_s;
    int lang_prefix;           /* /v2: "<lang>" before the prompt */
    int v2_max_tokens;
    int log_prompts;
    const char *model_name;    /* reported in /v1/models and responses */
    const char *web_dir;       /* holds swagger-ui-dist/ and redoc/ */
    const char *docs_url, *openapi_url, *redoc_url;
    auth *auth;                /* borrowed, outlives the server; NULL = no authentication (bypass) */
} srv_config;

/* Binds and starts serving (health 503 until an engine is set). ERR_IO with the address in eb when it can't bind. */
err srv_create(const srv_config *cfg, srv **out, errbuf *eb);

/* Hands the server its engine and tokenizer; both are borrowed and must outlive srv_destroy. Thread-safe with
 * in-flight requests (they see either no engine -> 503, or this one). Call once. */
void srv_set_engine(srv *s, sched *engine, const tok *tk);

/* The port actually bound (useful with port 0). */
int srv_port(const srv *s);

/* Blocks until SIGINT or SIGTERM. The caller must have blocked both signals in every thread (pthread_sigmask before
 * creating any thread) so that they are delivered here; srv_block_signals does that. Returns the signal number. */
int srv_run(srv *s);
/* Blocks SIGINT/SIGTERM (for sigwait in srv_run) and ignores SIGPIPE in the calling thread and threads it creates
 * later. Call first thing in the serving process. */
void srv_block_signals(void);

/* Graceful stop: stops accepting, cancels in-flight requests, waits for connection threads, frees. NULL is a no-op.
 * The engine must still be alive (destroy it after). */
void srv_destroy(srv *s);

#endif
