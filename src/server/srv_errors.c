/* srv_errors.c - THE one table from error codes to HTTP statuses, and the two body shapes errors take.
 *
 * /v1 (and the copilot routes) speak OpenAI's shape, which FauxPilot also used for its 400:
 *   {"error":{"message":"...","type":"invalid_request_error","param":null,"code":null}}
 * /v2 and the service routes speak FastAPI's: {"detail":"..."} for HTTP errors, and pydantic's list for 422:
 *   {"detail":[{"loc":["body","current_file","file_name"],"msg":"...","type":"..."}]}
 * A busy engine answers 429 and a loading or failed one 503, both with Retry-After.
 * Authentication failures have their own rows (auth_table) and body: {"error":"..."} on /v2, and OpenAI's object on
 * /v1 (so OpenAI clients show the message); see docs/AUTH.md for the mapping from the seed's 400/404. */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "srv_impl.h"

typedef struct err_row {
    err code;
    int status;
    const char *type; /* OpenAI error type */
    int retry_after;  /* seconds; 0 = no header */
} err_row;

static const err_row err_table[] = {
    {ERR_OK, 200, "", 0},
    {ERR_INVALID, 400, "invalid_request_error", 0},
    {ERR_FORMAT, 400, "invalid_request_error", 0},
    {ERR_UNAUTHORIZED, 401, "authentication_error", 0},
    {ERR_BUSY, 429, "server_overloaded", 1},
    {ERR_NOMEM, 503, "server_error", 1},
    {ERR_UNSUPPORTED, 503, "server_error", 5}, /* engine unhealthy or still loading */
    {ERR_CANCELLED, 503, "server_error", 1},   /* cancelled by shutdown */
    {ERR_TIMEOUT, 504, "timeout", 0},
    {ERR_UPSTREAM, 502, "server_error", 1},
    {ERR_IO, 500, "server_error", 0},
    {ERR_CUDA, 500, "server_error", 0},
};

/* Statuses raised by the HTTP layer itself, with their OpenAI type. */
typedef struct status_row {
    int status;
    const char *type;
} status_row;

static const status_row status_table[] = {
    {400, "invalid_request_error"}, {401, "authentication_error"}, {404, "not_found_error"},
    {405, "invalid_request_error"}, {413, "invalid_request_error"}, {422, "invalid_request_error"},
    {429, "server_overloaded"},     {500, "server_error"},          {503, "server_error"},
    {504, "timeout"},
};

/* auth.h outcomes -> status. 401 = no/bad credentials, 403 = a valid token whose user may not use suggestions. */
typedef struct auth_row {
    auth_outcome outcome;
    int status;
    const char *type;
} auth_row;

static const auth_row auth_table[] = {
    {AUTH_OUTCOME_MISSING, 401, "authentication_error"},
    {AUTH_OUTCOME_INVALID, 401, "authentication_error"},
    {AUTH_OUTCOME_FORBIDDEN, 403, "permission_error"},
    {AUTH_OUTCOME_RATE_LIMITED, 429, "rate_limit_exceeded"},
    {AUTH_OUTCOME_UNAVAILABLE, 503, "server_error"}, /* GitLab or its keys unreachable: not the client's fault */
};

static const err_row *row_of(err code) {
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].code == code) return &err_table[i];
    return &err_table[sizeof(err_table) / sizeof(err_table[0]) - 1];
}

static const char *type_of_status(int status) {
    for (size_t i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++)
        if (status_table[i].status == status) return status_table[i].type;
    return status >= 500 ? "server_error" : "invalid_request_error";
}

int srv_err_status(err code) { return row_of(code)->status; }

static json_t *body_of(srv_style style, int status, const char *type, const char *msg, const char *param) {
    if (style == SRV_STYLE_OPENAI)
        return json_pack("{s:{s:s,s:s,s:o,s:n}}", "error", "message", msg, "type", type, "param",
                         param ? json_string(param) : json_null(), "code");
    (void)status;
    return json_pack("{s:s}", "detail", msg);
}

char *srv_err_body_json(srv_style style, err code, const char *msg, size_t *len) {
    const err_row *row = row_of(code);
    json_t *j = body_of(style, row->status, row->type, msg, NULL);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) return NULL;
    *len = strlen(s);
    char *out = xmalloc(*len + 1);
    if (out) memcpy(out, s, *len + 1);
    free(s);
    return out;
}

static enum MHD_Result reply_body(srv_req *r, int status, json_t *j, int retry_after) {
    size_t len = 0;
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    char *out = NULL;
    if (s) {
        len = strlen(s);
        out = xmalloc(len + 1);
        if (out) memcpy(out, s, len + 1);
        free(s);
    }
    if (!out) return MHD_NO;
    return srv_reply(r, status, "application/json", out, len, retry_after);
}

enum MHD_Result srv_reply_err(srv_req *r, err code, const char *msg) {
    const err_row *row = row_of(code);
    if (!r->note[0]) snprintf(r->note, sizeof(r->note), "%s: %.120s", err_name(code), msg);
    return reply_body(r, row->status, body_of(r->style, row->status, row->type, msg, NULL), row->retry_after);
}

enum MHD_Result srv_reply_status(srv_req *r, int status, const char *msg, const char *param) {
    if (!r->note[0]) snprintf(r->note, sizeof(r->note), "%.150s", msg);
    int retry = status == 429 || status == 503 ? 1 : 0;
    return reply_body(r, status, body_of(r->style, status, type_of_status(status), msg, param), retry);
}

enum MHD_Result srv_reply_auth(srv_req *r, const auth_result *ar) {
    const auth_row *row = &auth_table[1];
    for (size_t i = 0; i < sizeof(auth_table) / sizeof(auth_table[0]); i++)
        if (auth_table[i].outcome == ar->outcome) row = &auth_table[i];
    /* the note is the outcome's name: the log line never carries the token or its header */
    snprintf(r->note, sizeof(r->note), "auth: %s", auth_outcome_name(ar->outcome));
    json_t *j = r->style == SRV_STYLE_OPENAI ? body_of(r->style, row->status, row->type, ar->message, NULL)
                                             : json_pack("{s:s}", "error", ar->message);
    return reply_body(r, row->status, j, ar->retry_after_s);
}

json_t *srv_v2_detail_item(json_t *loc, const char *msg, const char *type, json_t *ctx) {
    json_t *j = json_pack("{s:o,s:s,s:s}", "loc", loc, "msg", msg, "type", type);
    if (j && ctx) json_object_set_new(j, "ctx", ctx);
    else json_decref(ctx);
    return j;
}

enum MHD_Result srv_reply_422(srv_req *r, json_t *detail_items) {
    json_t *first = json_array_get(detail_items, 0);
    if (!r->note[0] && first)
        snprintf(r->note, sizeof(r->note), "422: %.140s", json_string_value(json_object_get(first, "msg")));
    return reply_body(r, 422, json_pack("{s:o}", "detail", detail_items), 0);
}
