/* testutil.c - temp dirs and files for the test suites. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"

char *tu_mkdtemp(void) {
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof(tmpl), "%s/suggestd-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpl)) return NULL;
    return xstrdup(tmpl);
}

void tu_rmtree_free(char *path) {
    if (!path) return;
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
    xfree(path);
}

int tu_write_file(const char *dir, const char *name, const void *data, size_t len) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    int rc = fclose(f);
    return (w == len && rc == 0) ? 0 : -1;
}

char *tu_source_path(const char *rel) {
    const char *root = getenv("SUGGESTD_SOURCE_DIR");
#ifdef SUGGESTD_SOURCE_DIR
    if (!root) root = SUGGESTD_SOURCE_DIR;
#endif
    if (!root) root = ".";
    size_t n = strlen(root) + strlen(rel) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", root, rel);
    return p;
}

