/* ptzip.c - pytorch_model.bin: torch's zip container, and the pt_file that ties the pickle's tensors to their bytes.
 *
 * DESIGN. torch.save writes a zip whose entries are all stored (uncompressed) under one top folder (`archive/`,
 * `pytorch_model/`, ...): `data.pkl`, `data/<key>` (raw little-endian storage bytes, each padded through its local
 * header's extra field to start on a 64-byte boundary so it can be mmapped in place), `version`, `byteorder`. Files
 * over 4 GiB use ZIP64 records. The file is untrusted, so the reader trusts only the central directory, checks every
 * number before forming a pointer (end record search bounded by the 64 KiB comment limit, the directory inside the
 * file, each local header and its data before the directory), and never decompresses: a compressed entry that is
 * needed is refused by name. The pickle (ptpickle.c) yields (name, dtype, shape, stride, storage key, offset); here
 * each becomes an st_tensor over `<top>/data/<key>`, once the storage's size, the offset and C-contiguous strides are
 * checked. */
#include "pt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "mapfile.h"
#include "model_impl.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define PT_MAX_PICKLE (256u << 20)

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static int cmp_name(const char *a, size_t al, const char *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al < bl ? -1 : al > bl);
}

static int cmp_entry(const void *x, const void *y) {
    const pt__zentry *a = x, *b = y;
    return cmp_name(a->name, a->name_len, b->name, b->name_len);
}

/* Finds the end-of-central-directory record: the last signature whose comment length reaches the end of the file.
 * The comment is at most 65535 bytes, so the search is bounded. */
static err find_eocd(const unsigned char *b, size_t len, const char *file, size_t *at, errbuf *eb) {
    if (len < 22) return errbuf_set(eb, ERR_FORMAT, "%s: %zu bytes, too short for a zip archive", file, len);
    size_t lo = len - 22 > 65535 ? len - 22 - 65535 : 0;
    for (size_t i = len - 22 + 1; i-- > lo;) {
        if (rd32(b + i) == SIG_EOCD && i + 22 + rd16(b + i + 20) == len) {
            *at = i;
            return ERR_OK;
        }
    }
    return errbuf_set(eb, ERR_FORMAT, "%s: not a zip archive (no end-of-central-directory record; truncated?)", file);
}

/* Reads the ZIP64 end record through its locator just before the classic end record. */
static err read_zip64(const unsigned char *b, size_t len, size_t eocd, const char *file, uint64_t *count,
                      uint64_t *cd_size, uint64_t *cd_off, errbuf *eb) {
    if (eocd < 20 || rd32(b + eocd - 20) != SIG_LOC64)
        return errbuf_set(eb, ERR_FORMAT, "%s: end record needs ZIP64 but no ZIP64 locator precedes it", file);
    const unsigned char *loc = b + eocd - 20;
    uint64_t off = rd64(loc + 8);
    if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", file);
    if (off > eocd - 20 || eocd - 20 - off < 56 || rd32(b + off) != SIG_EOCD64)
        return errbuf_set(eb, ERR_FORMAT, "%s: ZIP64 end record offset %" PRIu64 " is not a ZIP64 end record", file,
                          off);
    const unsigned char *r = b + off;
    if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32))
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", file);
    *count = rd64(r + 32);
    *cd_size = rd64(r + 40);
    *cd_off = rd64(r + 48);
    (void)len;
    /* The directory must end where the ZIP64 end record begins. */
    if (*cd_off > off || off - *cd_off < *cd_size)
        return errbuf_set(eb, ERR_FORMAT, "%s: central directory [%" PRIu64 ", +%" PRIu64 "] runs past the ZIP64 end "
                          "record at %" PRIu64, file, *cd_off, *cd_size, off);
    return ERR_OK;
}

/* Applies a ZIP64 extended-information extra field: each 0xFFFFFFFF size/offset is replaced, in order. */
static int zip64_extra(const unsigned char *x, size_t xl, uint32_t usz32, uint32_t csz32, uint32_t off32,
                       uint64_t *usz, uint64_t *csz, uint64_t *off) {
    while (xl >= 4) {
        uint16_t id = rd16(x), n = rd16(x + 2);
        if ((size_t)n > xl - 4) return 0;
        if (id == 0x0001) {
            const unsigned char *q = x + 4;
            size_t left = n;
            if (usz32 == 0xffffffffu) { if (left < 8) return 0; *usz = rd64(q), q += 8, left -= 8; }
            if (csz32 == 0xffffffffu) { if (left < 8) return 0; *csz = rd64(q), q += 8, left -= 8; }
            if (off32 == 0xffffffffu) { if (left < 8) return 0; *off = rd64(q); }
            return 1;
        }
        x += 4 + n, xl -= 4 + (size_t)n;
    }
    return usz32 != 0xffffffffu && csz32 != 0xffffffffu && off32 != 0xffffffffu;
}

err pt__zip_open(const unsigned char *b, size_t len, const char *file, pt__zip *z, errbuf *eb) {
    memset(z, 0, sizeof(*z));
    size_t eocd = 0;
    err rc = find_eocd(b, len, file, &eocd, eb);
    if (rc != ERR_OK) return rc;
    const unsigned char *e = b + eocd;
    uint64_t count = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0 || rd16(e + 8) != rd16(e + 10)) {
        if (rd16(e + 4) != 0xffff)
            return errbuf_set(eb, ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", file);
    }
    int has_loc64 = eocd >= 20 && rd32(b + eocd - 20) == SIG_LOC64;
    if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu || has_loc64) {
        rc = read_zip64(b, len, eocd, file, &count, &cd_size, &cd_off, eb);
        if (rc != ERR_OK) return rc;
    } else if (cd_off > eocd || eocd - cd_off < cd_size) {
        return errbuf_set(eb, ERR_FORMAT, "%s: central directory [%" PRIu64 ", +%" PRIu64 "] runs past the end record "
                          "at %zu (truncated?)", file, cd_off, cd_size, eocd);
    }
    if (count > cd_size / 46)
        return errbuf_set(eb, ERR_FORMAT, "%s: %" PRIu64 " entries cannot fit a %" PRIu64 "-byte central directory",
                          file, count, cd_size);
    z->e = xcalloc((size_t)count ? (size_t)count : 1, sizeof(*z->e));
    if (!z->e) return errbuf_set(eb, ERR_NOMEM, "%s: out of memory for the zip directory", file);
    const unsigned char *p = b + cd_off, *end = p + cd_size;
    for (uint64_t i = 0; i < count; i++) {
        if ((size_t)(end - p) < 46 || rd32(p) != SIG_CENTRAL) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: central directory entry %" PRIu64 " at offset %zu is malformed", file,
                            i, (size_t)(p - b));
            goto fail;
        }
        size_t nl = rd16(p + 28), xl = rd16(p + 30), cl = rd16(p + 32);
        if ((size_t)(end - p) - 46 < nl + xl + cl) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: central directory entry %" PRIu64 " runs past the directory", file, i);
            goto fail;
        }
        pt__zentry *ze = &z->e[z->n];
        ze->name = (const char *)p + 46;
        ze->name_len = nl;
        ze->flags = rd16(p + 8);
        ze->method = rd16(p + 10);
        uint32_t c32 = rd32(p + 20), u32 = rd32(p + 24), o32 = rd32(p + 42);
        uint64_t csz = c32, usz = u32, loff = o32;
        if (!zip64_extra(p + 46 + nl, xl, u32, c32, o32, &usz, &csz, &loff)) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: zip entry '%.*s': bad or missing ZIP64 extra field", file, (int)nl,
                            ze->name);
            goto fail;
        }
        /* The local header and the data must lie before the central directory. */
        if (loff > cd_off || cd_off - loff < 30 || rd32(b + loff) != SIG_LOCAL) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: zip entry '%.*s': local header offset %" PRIu64 " is not a local "
                            "header", file, (int)nl, ze->name, loff);
            goto fail;
        }
        uint64_t doff = loff + 30 + rd16(b + loff + 26) + rd16(b + loff + 28);
        if (doff > cd_off || cd_off - doff < csz) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: zip entry '%.*s': data [%" PRIu64 ", +%" PRIu64 "] runs past the "
                            "central directory at %" PRIu64, file, (int)nl, ze->name, doff, csz, cd_off);
            goto fail;
        }
        ze->data_off = doff, ze->csize = csz, ze->usize = usz;
        z->n++;
        p += 46 + nl + xl + cl;
    }
    qsort(z->e, z->n, sizeof(*z->e), cmp_entry);
    for (size_t i = 1; i < z->n; i++) {
        if (!cmp_entry(&z->e[i - 1], &z->e[i])) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: zip entry '%.*s' appears twice", file, (int)z->e[i].name_len,
                            z->e[i].name);
            goto fail;
        }
    }
    return ERR_OK;
fail:
    pt__zip_fini(z);
    return rc;
}

void pt__zip_fini(pt__zip *z) {
    xfree(z->e);
    z->e = NULL;
    z->n = 0;
}

const pt__zentry *pt__zip_find(const pt__zip *z, const char *name, size_t nl) {
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_name(name, nl, z->e[mid].name, z->e[mid].name_len);
        if (!c) return &z->e[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

/* ---- pt_file ---- */

struct pt_file {
    mapfile map;        /* zeroed when parsed from caller memory */
    st_tensor *tensors; /* [n], pickle order */
    size_t n;
    char *names;        /* the file name, then every tensor name, NUL-terminated */
    uint32_t *by_name;  /* [n] sorted by name */
};

/* An entry whose bytes we read directly: it must be stored, not compressed or encrypted. */
/* tensor: the tensor it is read for (in messages), or NULL. */
static err entry_bytes(const unsigned char *b, const pt__zentry *ze, const char *file, const char *tensor,
                       const unsigned char **out, errbuf *eb) {
    char who[160] = "";
    if (tensor) snprintf(who, sizeof(who), "tensor '%s': ", tensor);
    if (ze->flags & 1)
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: %szip entry '%.*s' is encrypted", file, who, (int)ze->name_len,
                          ze->name);
    if (ze->method != 0)
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: %szip entry '%.*s' is compressed (method %u); torch writes stored "
                          "entries, re-save it with torch.save", file, who, (int)ze->name_len, ze->name, ze->method);
    if (ze->csize != ze->usize)
        return errbuf_set(eb, ERR_FORMAT, "%s: %szip entry '%.*s' is stored but its sizes differ (%" PRIu64 " vs %"
                          PRIu64 ")", file, who, (int)ze->name_len, ze->name, ze->csize, ze->usize);
    *out = b + ze->data_off;
    return ERR_OK;
}

/* The top folder: the one entry named `<top>/data.pkl` with a single slash. */
static err find_top(const pt__zip *z, const char *file, size_t *top_len, const pt__zentry **pkl, errbuf *eb) {
    *pkl = NULL;
    for (size_t i = 0; i < z->n; i++) {
        const pt__zentry *e = &z->e[i];
        static const char tail[] = "/data.pkl";
        size_t tl = sizeof(tail) - 1;
        if (e->name_len <= tl || memcmp(e->name + e->name_len - tl, tail, tl)) continue;
        if (memchr(e->name, '/', e->name_len - tl)) continue;
        if (*pkl)
            return errbuf_set(eb, ERR_FORMAT, "%s: more than one top folder holds a data.pkl ('%.*s', '%.*s')", file,
                              (int)(*pkl)->name_len, (*pkl)->name, (int)e->name_len, e->name);
        *pkl = e;
        *top_len = e->name_len - tl;
    }
    if (!*pkl) return errbuf_set(eb, ERR_FORMAT, "%s: no '<folder>/data.pkl' entry; not a torch.save zip", file);
    return ERR_OK;
}

static _Thread_local const st_tensor *sort_tensors;

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(sort_tensors[*(const uint32_t *)a].name, sort_tensors[*(const uint32_t *)b].name);
}

/* Binds one pickle record to its storage entry: checks size, offset and contiguity. */
static err bind_rec(const unsigned char *b, const pt__zip *z, const char *top, size_t top_len, const char *file,
                    const pt__rec *r, st_tensor *t, errbuf *eb) {
    char ename[512];
    int en = snprintf(ename, sizeof(ename), "%.*s/data/%.*s", (int)top_len, top, (int)r->key_len, r->key);
    if (en < 0 || (size_t)en >= sizeof(ename))
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': storage key too long", file, t->name);
    const pt__zentry *ze = pt__zip_find(z, ename, (size_t)en);
    if (!ze)
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': no zip entry '%s' for its storage", file, t->name, ename);
    const unsigned char *data;
    err rc = entry_bytes(b, ze, file, t->name, &data, eb);
    if (rc != ERR_OK) return rc;
    uint64_t esz = st_dtype_size(r->dtype);
    if (r->storage_numel < 0 || (uint64_t)r->storage_numel > ze->usize / esz ||
        (uint64_t)r->storage_numel * esz != ze->usize)
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': storage '%s' holds %" PRIu64 " bytes but the pickle says %"
                          PRId64 " elements of %s", file, t->name, ename, ze->usize, r->storage_numel,
                          st_dtype_name(r->dtype));
    /* C-contiguous: for dims of size > 1, stride == product of the later dims. Count elements on the way. */
    uint64_t numel = 1, expect = 1;
    int empty = 0, overflow = 0;
    for (int32_t d = r->n_dims - 1; d >= 0; d--) {
        if (r->shape[d] < 0)
            return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': negative size in dim %d", file, t->name, (int)d);
        if (r->shape[d] == 0) empty = 1;
        if (r->shape[d] > 1 && (uint64_t)r->stride[d] != expect && !empty)
            return errbuf_set(eb, ERR_UNSUPPORTED, "%s: tensor '%s': stride %" PRId64 " in dim %d is not C-contiguous "
                              "(expected %" PRIu64 ")", file, t->name, r->stride[d], (int)d, expect);
        uint64_t s = (uint64_t)r->shape[d];
        if (s && expect > UINT64_MAX / s) overflow = 1;
        else expect *= s;
        t->shape[d] = r->shape[d];
    }
    numel = empty ? 0 : expect;
    if (overflow && !empty) return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': shape overflows", file, t->name);
    if (r->storage_offset < 0 || (uint64_t)r->storage_offset > (uint64_t)r->storage_numel ||
        numel > (uint64_t)r->storage_numel - (uint64_t)r->storage_offset)
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': storage offset %" PRId64 " + %" PRIu64 " elements run past "
                          "the %" PRId64 " elements of '%s'", file, t->name, r->storage_offset, numel,
                          r->storage_numel, ename);
    t->dtype = r->dtype;
    t->n_dims = r->n_dims;
    t->data = data + (uint64_t)r->storage_offset * esz;
    t->nbytes = (size_t)(numel * esz);
    return ERR_OK;
}

err pt_parse(const void *buf, size_t len, const char *file, pt_file **out, errbuf *eb) {
    *out = NULL;
    if (!file) file = "pytorch_model.bin";
    const unsigned char *b = buf;
    pt__zip z;
    err rc = pt__zip_open(b, len, file, &z, eb);
    if (rc != ERR_OK) return rc;
    pt__rec *recs = NULL;
    size_t n = 0, top_len = 0;
    pt_file *f = NULL;
    const pt__zentry *pkl;
    const unsigned char *pk;
    rc = find_top(&z, file, &top_len, &pkl, eb);
    if (rc == ERR_OK) rc = entry_bytes(b, pkl, file, NULL, &pk, eb);
    if (rc == ERR_OK && pkl->usize > PT_MAX_PICKLE)
        rc = errbuf_set(eb, ERR_FORMAT, "%s: '%.*s' is %" PRIu64 " bytes, over the %u-byte limit", file,
                        (int)pkl->name_len, pkl->name, pkl->usize, PT_MAX_PICKLE);
    if (rc == ERR_OK) {
        char pname[600];
        snprintf(pname, sizeof(pname), "%s: %.*s", file, (int)(pkl->name_len > 500 ? 500 : pkl->name_len), pkl->name);
        rc = pt__pickle_load(pk, (size_t)pkl->usize, pname, &recs, &n, eb);
    }
    if (rc != ERR_OK) goto done;
    if (n > UINT32_MAX) {
        rc = errbuf_set(eb, ERR_FORMAT, "%s: too many tensors", file);
        goto done;
    }
    size_t names_len = strlen(file) + 1;
    for (size_t i = 0; i < n; i++) names_len += recs[i].name_len + 1;
    f = xcalloc(1, sizeof(*f));
    if (f) {
        f->tensors = xcalloc(n ? n : 1, sizeof(*f->tensors));
        f->names = xmalloc(names_len);
        f->by_name = xmalloc_array(n ? n : 1, sizeof(*f->by_name));
    }
    if (!f || !f->tensors || !f->names || !f->by_name) {
        rc = errbuf_set(eb, ERR_NOMEM, "%s: out of memory for the tensor table", file);
        goto done;
    }
    size_t off = strlen(file) + 1;
    memcpy(f->names, file, off);
    for (size_t i = 0; i < n; i++) {
        st_tensor *t = &f->tensors[i];
        if (memchr(recs[i].name, 0, recs[i].name_len)) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: tensor %zu: name contains a NUL byte", file, i);
            goto done;
        }
        memcpy(f->names + off, recs[i].name, recs[i].name_len);
        f->names[off + recs[i].name_len] = 0;
        t->name = f->names + off;
        off += recs[i].name_len + 1;
        rc = bind_rec(b, &z, pkl->name, top_len, file, &recs[i], t, eb);
        if (rc != ERR_OK) goto done;
        f->n++;
    }
    for (size_t k = 0; k < n; k++) f->by_name[k] = (uint32_t)k;
    sort_tensors = f->tensors;
    qsort(f->by_name, n, sizeof(*f->by_name), cmp_by_name);
    sort_tensors = NULL;
    for (size_t k = 1; k < n; k++) {
        if (!strcmp(f->tensors[f->by_name[k]].name, f->tensors[f->by_name[k - 1]].name)) {
            rc = errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s' appears twice", file, f->tensors[f->by_name[k]].name);
            goto done;
        }
    }
done:
    xfree(recs);
    pt__zip_fini(&z);
    if (rc != ERR_OK) {
        pt_close(f);
        return rc;
    }
    *out = f;
    return ERR_OK;
}

err pt_open(const char *path, pt_file **out, errbuf *eb) {
    *out = NULL;
    mapfile map;
    err rc = mapfile_open(&map, path, eb);
    if (rc != ERR_OK) return rc;
    rc = pt_parse(map.data, map.size, path, out, eb);
    if (rc != ERR_OK) {
        mapfile_close(&map);
        return rc;
    }
    (*out)->map = map;
    return ERR_OK;
}

void pt_close(pt_file *f) {
    if (!f) return;
    mapfile_close(&f->map);
    xfree(f->tensors);
    xfree(f->names);
    xfree(f->by_name);
    xfree(f);
}

const char *pt_name(const pt_file *f) { return f ? f->names : NULL; }

size_t pt_count(const pt_file *f) { return f ? f->n : 0; }

const st_tensor *pt_at(const pt_file *f, size_t i) { return f && i < f->n ? &f->tensors[i] : NULL; }

const st_tensor *pt_find(const pt_file *f, const char *name) {
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}
