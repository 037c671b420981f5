/* mapfile.c - mmap and whole-file reads with errors that name the path. */
#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"

err mapfile_open(mapfile *m, const char *path, errbuf *eb) {
    memset(m, 0, sizeof(*m));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errbuf_set(eb, ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errbuf_set(eb, ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return errbuf_set(eb, ERR_IO, "%s: mmap: %s", path, strerror(e));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return ERR_OK;
}

void mapfile_close(mapfile *m) {
    if (m->data) munmap((void *)m->data, m->size);
    memset(m, 0, sizeof(*m));
}

err file_read_all(const char *path, char **out, size_t *len, size_t max_len, errbuf *eb) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return errbuf_set(eb, ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 65536, n = 0;
    char *buf = xmalloc(cap + 1);
    if (!buf) {
        fclose(f);
        return errbuf_set(eb, ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max_len) {
                xfree(buf);
                fclose(f);
                return errbuf_set(eb, ERR_FORMAT, "%s: larger than %zu bytes", path, max_len);
            }
            cap *= 2;
            char *nb = xrealloc(buf, cap + 1);
            if (!nb) {
                xfree(buf);
                fclose(f);
                return errbuf_set(eb, ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        xfree(buf);
        return errbuf_set(eb, ERR_IO, "%s: read error", path);
    }
    if (n > max_len) {
        xfree(buf);
        return errbuf_set(eb, ERR_FORMAT, "%s: larger than %zu bytes", path, max_len);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return ERR_OK;
}
