/* srv_docs.c - the OpenAPI 3 document and the Swagger UI / ReDoc pages (off unless their URLs are configured).
 *
 * The pages load their scripts from this server (/docs-assets/...), served from the npm packages swagger-ui-dist
 * and redoc under the configured web dir: no CDN, so the docs work on an air-gapped host. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "srv_impl.h"

#define STR(...) #__VA_ARGS__

/* Written by hand to match srv_v1.c / srv_v2.c; docs/API.md is the prose version. */
static const char openapi_json[] = STR({
    "openapi": "3.0.3",
    "info": {"title": "suggestd", "version": "0.1.0",
             "description": "Self-hosted code completion: FauxPilot/OpenAI completions (/v1) and GitLab code suggestions (/v2). See docs/API.md."},
    "paths": {
        "/v1/completions": {"post": {"summary": "Create a completion (OpenAI/FauxPilot)", "operationId": "completions",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CompletionRequest"}}}},
            "responses": {"200": {"description": "A completion, or an SSE stream (data: {json} events, then data: [DONE]) when stream is true",
                                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Completion"}}, "text/event-stream": {}}},
                          "400": {"$ref": "#/components/responses/OpenAIError"}, "413": {"$ref": "#/components/responses/OpenAIError"},
                          "429": {"$ref": "#/components/responses/OpenAIError"}, "500": {"$ref": "#/components/responses/OpenAIError"},
                          "503": {"$ref": "#/components/responses/OpenAIError"}, "504": {"$ref": "#/components/responses/OpenAIError"}}}},
        "/v1/engines/{engine}/completions": {"post": {"summary": "Create a completion (FauxPilot/Copilot engine route: codegen, copilot-codex, ...)",
            "operationId": "engineCompletions",
            "parameters": [{"name": "engine", "in": "path", "required": true, "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CompletionRequest"}}}},
            "responses": {"200": {"description": "As /v1/completions", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Completion"}}}},
                          "400": {"$ref": "#/components/responses/OpenAIError"}}}},
        "/v2/completions": {"post": {"summary": "GitLab code suggestion", "operationId": "v2Completions",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2Request"}}}},
            "responses": {"200": {"description": "A suggestion", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2Completion"}}}},
                          "422": {"description": "Validation error (FastAPI shape)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidationError"}}}}}}},
        "/v2/code/completions": {"post": {"summary": "GitLab code suggestion (alias)", "operationId": "v2CodeCompletions",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2Request"}}}},
            "responses": {"200": {"description": "A suggestion", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2Completion"}}}},
                          "422": {"description": "Validation error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidationError"}}}}}}},
        "/v1/models": {"get": {"summary": "Served model names", "responses": {"200": {"description": "OpenAI model list"}}}},
        "/copilot_internal/v2/token": {"get": {"summary": "Fake Copilot token (copilot.vim)",
            "responses": {"200": {"description": "{\"token\":\"1\",\"expires_at\":2600000000,\"refresh_in\":900}"}}}},
        "/monitoring/healthz": {"get": {"summary": "Readiness", "responses": {"200": {"description": "{} when the model is loaded"}, "503": {"description": "{} while loading or after an engine failure"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}}}}
    },
    "components": {
        "responses": {"OpenAIError": {"description": "OpenAI error shape", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}}}},
        "schemas": {
            "CompletionRequest": {"type": "object", "properties": {
                "model": {"type": "string", "description": "any name; ignored"},
                "prompt": {"type": "string", "default": ""},
                "suffix": {"type": "string", "nullable": true, "description": "accepted; ignored until a fill-in-the-middle model is served"},
                "max_tokens": {"type": "integer", "default": 16, "minimum": 0},
                "temperature": {"type": "number", "default": 0.6, "minimum": 0, "maximum": 2, "description": "0 = greedy"},
                "top_p": {"type": "number", "default": 1, "minimum": 0, "maximum": 1},
                "top_k": {"type": "integer", "default": 0, "description": "extension; 0 = off"},
                "n": {"type": "integer", "default": 1, "minimum": 1, "description": "choices, seeds seed+i"},
                "stream": {"type": "boolean", "default": false},
                "logprobs": {"type": "integer", "nullable": true, "minimum": 0, "maximum": 20},
                "echo": {"type": "boolean", "default": false},
                "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 8}]},
                "presence_penalty": {"type": "number", "default": 0, "description": "OpenAI semantics (additive)"},
                "frequency_penalty": {"type": "number", "default": 0, "description": "OpenAI semantics (additive), NOT FauxPilot's repetition penalty"},
                "repetition_penalty": {"type": "number", "default": 1, "description": "FasterTransformer/HF multiplicative penalty (what FauxPilot's frequency_penalty meant); 1 = off"},
                "seed": {"type": "integer"}}},
            "Completion": {"type": "object", "properties": {
                "id": {"type": "string"}, "model": {"type": "string"}, "object": {"type": "string", "enum": ["text_completion"]},
                "created": {"type": "integer"},
                "choices": {"type": "array", "items": {"type": "object", "properties": {
                    "text": {"type": "string"}, "index": {"type": "integer"}, "finish_reason": {"type": "string", "enum": ["stop", "length"]},
                    "logprobs": {"type": "object", "nullable": true, "properties": {
                        "tokens": {"type": "array", "items": {"type": "string"}},
                        "token_logprobs": {"type": "array", "items": {"type": "number", "nullable": true}},
                        "top_logprobs": {"type": "array", "items": {"type": "object", "nullable": true, "additionalProperties": {"type": "number"}}},
                        "text_offset": {"type": "array", "items": {"type": "integer"}}}}}}},
                "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer", "description": "counted once for all n choices"},
                    "completion_tokens": {"type": "integer", "description": "summed over the choices"}, "total_tokens": {"type": "integer"},
                    "prompt_tokens_details": {"type": "object", "properties": {
                        "cached_tokens": {"type": "integer", "minimum": 0, "description": "prompt tokens whose KV came from the prefix cache (largest over the choices)"}}}}}}},
            "V2Request": {"type": "object", "required": ["current_file"], "properties": {
                "prompt_version": {"type": "integer", "default": 1},
                "project_path": {"type": "string", "maxLength": 255},
                "project_id": {"type": "integer"},
                "current_file": {"type": "object", "required": ["file_name", "content_above_cursor", "content_below_cursor"], "properties": {
                    "file_name": {"type": "string", "maxLength": 255},
                    "content_above_cursor": {"type": "string", "maxLength": 100000},
                    "content_below_cursor": {"type": "string", "maxLength": 100000},
                    "language_identifier": {"type": "string", "maxLength": 255}}}}},
            "V2Completion": {"type": "object", "properties": {
                "id": {"type": "string"}, "model": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
                "choices": {"type": "array", "items": {"type": "object", "properties": {"text": {"type": "string"}, "index": {"type": "integer"}, "finish_reason": {"type": "string"}}}}}},
            "OpenAIError": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": "string", "nullable": true}, "code": {"type": "string", "nullable": true}}}}},
            "ValidationError": {"type": "object", "properties": {"detail": {"type": "array", "items": {"type": "object", "properties": {
                "loc": {"type": "array", "items": {}}, "msg": {"type": "string"}, "type": {"type": "string"}}}}}}
        }
    }
});

static const char *openapi_path(srv *s) { return s->s_openapi ? s->s_openapi : "/openapi.json"; }

enum MHD_Result srv_docs_openapi(srv_req *r) {
    char *b = xstrdup(openapi_json);
    if (!b) return srv_reply_err(r, ERR_NOMEM, "out of memory");
    return srv_reply(r, 200, "application/json", b, strlen(b), 0);
}

enum MHD_Result srv_docs_page(srv_req *r, int redoc) {
    char *page = xmalloc(2048);
    if (!page) return srv_reply_err(r, ERR_NOMEM, "out of memory");
    int n;
    if (redoc)
        n = snprintf(page, 2048,
                     "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>suggestd - ReDoc</title>"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\n"
                     "<body><redoc spec-url=\"%s\"></redoc>\n"
                     "<script src=\"/docs-assets/redoc/redoc.standalone.js\"></script></body></html>\n",
                     openapi_path(r->s));
    else
        n = snprintf(page, 2048,
                     "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>suggestd - Swagger UI</title>"
                     "<link rel=\"stylesheet\" href=\"/docs-assets/swagger-ui/swagger-ui.css\"></head>\n"
                     "<body><div id=\"swagger-ui\"></div>\n"
                     "<script src=\"/docs-assets/swagger-ui/swagger-ui-bundle.js\"></script>\n"
                     "<script>window.ui = SwaggerUIBundle({url: \"%s\", dom_id: \"#swagger-ui\"});</script>\n"
                     "</body></html>\n",
                     openapi_path(r->s));
    return srv_reply(r, 200, "text/html; charset=utf-8", page, (size_t)n, 0);
}

static const char *mime_of(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".js")) return "application/javascript";
    if (!strcmp(dot, ".css")) return "text/css";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".png")) return "image/png";
    if (!strcmp(dot, ".map") || !strcmp(dot, ".json")) return "application/json";
    return "application/octet-stream";
}

/* /docs-assets/swagger-ui/<file> -> <web>/swagger-ui-dist/<file>; /docs-assets/redoc/<file> ->
 * <web>/redoc/bundles/<file>. File names are a plain [A-Za-z0-9._-] word: no paths, no "..". */
enum MHD_Result srv_docs_asset(srv_req *r, const char *url) {
    const char *rest = url + strlen("/docs-assets/"), *sub;
    if (!strncmp(rest, "swagger-ui/", 11)) rest += 11, sub = "swagger-ui-dist";
    else if (!strncmp(rest, "redoc/", 6)) rest += 6, sub = "redoc/bundles";
    else return srv_reply_status(r, 404, "Not Found", NULL);
    int ok = *rest && *rest != '.';
    for (const char *p = rest; *p && ok; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
             *p == '_' || *p == '-';
    if (!ok || strstr(rest, "..")) return srv_reply_status(r, 404, "Not Found", NULL);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s/%s", r->s->cfg.web_dir, sub, rest);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return srv_reply_status(r, 404, "asset not found (install swagger-ui-dist and redoc under the web dir)",
                                NULL);
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    srv_add_headers(r, resp, mime_of(rest));
    MHD_add_response_header(resp, "Cache-Control", "public, max-age=3600");
    r->status = 200;
    enum MHD_Result res = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return res;
}
