/* hub_ref.c - names and places: ORG/NAME@REV, path safety for names a hub sends, the environment, model dirs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"

static int name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
}

/* A name lands in a file system path: no separators, and never "." or ".." (hence no leading '.'). */
static err parse_name(const char *what, const char *s, size_t n, char *out, errbuf *eb) {
    if (n == 0) return errbuf_set(eb, ERR_INVALID, "empty %s name", what);
    if (n > HUB_NAME_MAX) return errbuf_set(eb, ERR_INVALID, "%s name longer than %d characters", what, HUB_NAME_MAX);
    if (s[0] == '.' || s[0] == '-')
        return errbuf_set(eb, ERR_INVALID, "%s name '%.*s' may not start with '%c'", what, (int)n, s, s[0]);
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]))
            return errbuf_set(eb, ERR_INVALID, "%s name '%.*s' has a character other than letters, digits, '-', '_', '.'",
                              what, (int)n, s);
    memcpy(out, s, n);
    out[n] = 0;
    return ERR_OK;
}

/* Revisions go into a URL (percent-encoded) and into the marker, never into a path, but stay conservative. */
static err parse_rev(const char *s, char *out, errbuf *eb) {
    size_t n = strlen(s);
    if (n == 0) return errbuf_set(eb, ERR_INVALID, "empty revision after '@'");
    if (n > HUB_REV_MAX) return errbuf_set(eb, ERR_INVALID, "revision longer than %d characters", HUB_REV_MAX);
    if (s[0] == '/' || s[0] == '-' || strstr(s, ".."))
        return errbuf_set(eb, ERR_INVALID, "revision '%s' is not a branch, tag, commit or refs/pr/N", s);
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]) && s[i] != '/')
            return errbuf_set(eb, ERR_INVALID, "revision '%s' has a character other than letters, digits, '-_./'", s);
    memcpy(out, s, n + 1);
    return ERR_OK;
}

err hub_ref_parse(const char *s, hub_ref *out, errbuf *eb) {
    memset(out, 0, sizeof(*out));
    if (!s) return errbuf_set(eb, ERR_INVALID, "no model name");
    const char *slash = strchr(s, '/');
    const char *at = strchr(s, '@');
    if (!slash || (at && at < slash))
        return errbuf_set(eb, ERR_INVALID, "'%s' is not ORG/NAME[@REVISION] (e.g. Salesforce/codegen-350M-mono)", s);
    const char *name = slash + 1;
    size_t name_len = at ? (size_t)(at - name) : strlen(name);
    if (memchr(name, '/', name_len))
        return errbuf_set(eb, ERR_INVALID, "'%s' is not ORG/NAME[@REVISION]: more than one '/' before '@'", s);
    err rc = parse_name("organisation", s, (size_t)(slash - s), out->org, eb);
    if (rc == ERR_OK) rc = parse_name("repository", name, name_len, out->name, eb);
    if (rc == ERR_OK && at) rc = parse_rev(at + 1, out->rev, eb);
    if (rc != ERR_OK) return rc;
    out->has_rev = at != NULL;
    if (!at) strcpy(out->rev, "main");
    return ERR_OK;
}

int hub_path_safe(const char *path) {
    if (!path || !*path || path[0] == '/' || strlen(path) > 1024) return 0;
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '\\' || *p == ':') return 0;
    const char *c = path;
    for (;;) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) return 0;
        if (!e) return 1;
        c = e + 1;
    }
}

err hub_env_load(hub_env *e, errbuf *eb) {
    memset(e, 0, sizeof(*e));
    const char *ep = getenv("HF_ENDPOINT");
    if (!ep || !*ep) ep = HUB_DEFAULT_ENDPOINT;
    if (strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
        return errbuf_set(eb, ERR_INVALID, "HF_ENDPOINT must start with http:// or https://, got '%s'", ep);
    if (snprintf(e->endpoint, sizeof(e->endpoint), "%s", ep) >= (int)sizeof(e->endpoint))
        return errbuf_set(eb, ERR_INVALID, "HF_ENDPOINT is too long");
    for (size_t n = strlen(e->endpoint); n > 0 && e->endpoint[n - 1] == '/'; n--) e->endpoint[n - 1] = 0;
    const char *tok = getenv("HF_TOKEN");
    e->token = tok && *tok ? tok : NULL;
    const char *md = getenv("SUGGESTD_MODELS_DIR");
    int n;
    if (md && *md) {
        n = snprintf(e->models_dir, sizeof(e->models_dir), "%s", md);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return errbuf_set(eb, ERR_INVALID, "neither SUGGESTD_MODELS_DIR nor HOME is set: nowhere to put models");
        n = snprintf(e->models_dir, sizeof(e->models_dir), "%s/.cache/suggestd/models", home);
    }
    if (n >= (int)sizeof(e->models_dir)) return errbuf_set(eb, ERR_INVALID, "SUGGESTD_MODELS_DIR is too long");
    return ERR_OK;
}

err hub_model_dir(const char *models_dir, const hub_ref *r, char *out, size_t cap, errbuf *eb) {
    if (snprintf(out, cap, "%s/%s/%s", models_dir, r->org, r->name) >= (int)cap)
        return errbuf_set(eb, ERR_INVALID, "model directory path for %s/%s is too long", r->org, r->name);
    return ERR_OK;
}
