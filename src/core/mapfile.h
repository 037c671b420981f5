/* mapfile.h - read-only mmap of a whole file; checkpoints are used in place (zero copy). */
#ifndef SUGGESTD_CORE_MAPFILE_H
#define SUGGESTD_CORE_MAPFILE_H

#include <stddef.h>

#include "err.h"

typedef struct mapfile {
    const unsigned char *data; /* NULL for an empty file */
    size_t size;
} mapfile;

/* Maps path read-only. On failure *m is zeroed and eb names the path and the reason. */
err mapfile_open(mapfile *m, const char *path, errbuf *eb);
void mapfile_close(mapfile *m); /* no-op on a zeroed mapfile */

/* Reads a whole (small) file into a NUL-terminated heap buffer (free with xfree). */
err file_read_all(const char *path, char **out, size_t *len, size_t max_len, errbuf *eb);

#endif
