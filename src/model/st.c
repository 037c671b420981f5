/* st.c - safetensors: validate a header, point tensors into the mapping, and write files for tests and tools.
 *
 * DESIGN. The file is untrusted input (a download), so st_parse checks every number before it is used to form a
 * pointer: the 8-byte header length against the file and a 100 MB cap, each tensor's byte range against the data
 * buffer, its element count times dtype size (overflow-checked) against that range, and finally, with the tensors
 * sorted by offset, that they tile the data buffer exactly (no overlap, no hole, nothing left over). Only then is
 * an st_file returned; users never see a half-valid file. Tensors are kept in offset (file) order for st_at, all
 * names live in one allocation, and st_find binary-searches an index sorted by name. jansson parses the header
 * (JSON_REJECT_DUPLICATES catches repeated names); its allocations go through xmalloc so the fault-injection tests
 * reach them too. */
#include "st.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "mapfile.h"
#include "model_impl.h"

#define ST_MAX_HEADER 100000000ull /* the reference reader's MAX_HEADER_SIZE */

struct st_file {
    mapfile map;        /* zeroed when parsed from caller memory (st_parse) */
    st_tensor *tensors; /* [n], sorted by data offset */
    size_t n;
    char *names;        /* the file name for messages, then every tensor name, each NUL-terminated */
    uint32_t *by_name;  /* [n] indices into tensors, sorted by name */
};

/* ---- jansson allocation hook (shared with config.c and model.c through model_impl.h) ---- */

static _Thread_local int json_oom_flag;
static pthread_once_t json_once = PTHREAD_ONCE_INIT;

static void *json_xmalloc(size_t n) {
    void *p = xmalloc(n);
    if (!p) json_oom_flag = 1;
    return p;
}

static void json_xfree(void *p) { xfree(p); }

static void json_install_hooks(void) { json_set_alloc_funcs(json_xmalloc, json_xfree); }

void model__json_begin(void) {
    pthread_once(&json_once, json_install_hooks);
    json_oom_flag = 0;
}

int model__json_oom(void) { return json_oom_flag; }

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtype_info[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},     [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},   [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_I32] = {"I32", 4},
    [ST_U32] = {"U32", 4},   [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8},
    [ST_U64] = {"U64", 8},
};

const char *st_dtype_name(st_dtype t) { return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].name : "?"; }

size_t st_dtype_size(st_dtype t) { return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].size : 0; }

static int dtype_from_name(const char *s, st_dtype *out) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        if (!strcmp(s, dtype_info[i].name)) {
            *out = (st_dtype)i;
            return 1;
        }
    }
    return 0;
}

/* ---- parsing ---- */

static uint64_t read_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Formats a shape as "[a, b, c]" for messages. */
static void shape_str(char *out, size_t cap, const int64_t *shape, int32_t n_dims) {
    size_t k = (size_t)snprintf(out, cap, "[");
    for (int32_t i = 0; i < n_dims && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

/* A JSON value that must be a non-negative integer; 0 if it is not one. */
static int json_uint(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* Fills t from one header entry; data_len is the size of the data buffer that follows the header. */
static err parse_entry(const char *file, const char *name, const json_t *v, const unsigned char *data0,
                       uint64_t data_len, st_tensor *t, errbuf *eb) {
    if (!json_is_object(v))
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", file, name);
    const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                 *jo = json_object_get(v, "data_offsets");
    if (!jd) return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': no \"dtype\"", file, name);
    if (!js) return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': no \"shape\"", file, name);
    if (!jo) return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': no \"data_offsets\"", file, name);
    if (!json_is_string(jd))
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': \"dtype\" is not a string", file, name);
    if (!dtype_from_name(json_string_value(jd), &t->dtype))
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype '%s'", file, name,
                          json_string_value(jd));

    if (!json_is_array(js)) return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': \"shape\" is not an array", file, name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return errbuf_set(eb, ERR_UNSUPPORTED, "%s: tensor '%s': %zu dimensions, at most %d supported", file, name,
                          nd, ST_MAX_DIMS);
    /* numel * size must fit in 64 bits; anything that large is also beyond any buffer, so overflow is an error. */
    uint64_t bytes = st_dtype_size(t->dtype);
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!json_uint(json_array_get(js, i), &d))
            return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': shape entry %zu is not a non-negative integer", file,
                              name, i);
        t->shape[i] = (int64_t)d;
        if (d && bytes > UINT64_MAX / d) overflow = 1;
        else bytes *= d;
    }
    t->n_dims = (int32_t)nd;
    for (size_t i = 0; i < nd; i++)
        if (t->shape[i] == 0) overflow = 0, bytes = 0; /* an empty tensor is 0 bytes whatever the other dims */

    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_uint(json_array_get(jo, 0), &b) ||
        !json_uint(json_array_get(jo, 1), &e))
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" is not [begin, end] (two non-negative "
                          "integers)", file, name);
    if (b > e)
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before begin",
                          file, name, b, e);
    if (e > data_len)
        return errbuf_set(eb, ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end beyond the %" PRIu64
                          " bytes of data", file, name, b, e, data_len);
    char sh[160];
    if (overflow) {
        shape_str(sh, sizeof(sh), t->shape, t->n_dims);
        return errbuf_set(eb, ERR_FORMAT, "%s: tensor '%s': shape %s overflows", file, name, sh);
    }
    if (bytes != e - b) {
        shape_str(sh, sizeof(sh), t->shape, t->n_dims);
        return errbuf_set(eb, ERR_FORMAT,
                          "%s: tensor '%s': shape %s of %s is %" PRIu64 " bytes but data_offsets [%" PRIu64
                          ", %" PRIu64 "] hold %" PRIu64, file, name, sh, st_dtype_name(t->dtype), bytes, b, e, e - b);
    }
    t->data = data0 + b;
    t->nbytes = (size_t)(e - b);
    return ERR_OK;
}

static int cmp_by_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    uintptr_t px = (uintptr_t)x->data, py = (uintptr_t)y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* qsort has no context argument; the index sort only runs while the caller holds the array, so pass it via a
 * thread-local. */
static _Thread_local const st_tensor *sort_tensors;

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(sort_tensors[*(const uint32_t *)a].name, sort_tensors[*(const uint32_t *)b].name);
}

/* With the tensors sorted by offset, checks that they tile [0, data_len) exactly. */
static err check_tiling(const char *file, const st_file *f, const unsigned char *data0, uint64_t data_len,
                        errbuf *eb) {
    uint64_t pos = 0;
    for (size_t i = 0; i < f->n; i++) {
        const st_tensor *t = &f->tensors[i];
        uint64_t b = (uint64_t)((const unsigned char *)t->data - data0), e = b + t->nbytes;
        if (b < pos) {
            const st_tensor *p = &f->tensors[i - 1];
            uint64_t pb = (uint64_t)((const unsigned char *)p->data - data0);
            return errbuf_set(eb, ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor '%s' [%" PRIu64
                              ", %" PRIu64 "]", file, t->name, b, e, p->name, pb, pb + p->nbytes);
        }
        if (b > pos)
            return errbuf_set(eb, ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] leave a hole: bytes [%" PRIu64
                              ", %" PRIu64 ") of the data belong to no tensor", file, t->name, b, e, pos, b);
        pos = e;
    }
    if (pos != data_len)
        return errbuf_set(eb, ERR_FORMAT,
                          "%s: tensors cover %" PRIu64 " bytes of data but %" PRIu64 " follow the header (8 + header "
                          "length + data must equal the file size)", file, pos, data_len);
    return ERR_OK;
}

err st_parse(const void *buf, size_t len, const char *file, st_file **out, errbuf *eb) {
    *out = NULL;
    if (!file) file = "safetensors";
    if (len < 8)
        return errbuf_set(eb, ERR_FORMAT, "%s: %zu bytes, too short for the 8-byte header length", file, len);
    const unsigned char *p = buf;
    uint64_t hlen = read_le64(p);
    if (hlen > ST_MAX_HEADER)
        return errbuf_set(eb, ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes", file, hlen,
                          ST_MAX_HEADER);
    if (hlen > len - 8)
        return errbuf_set(eb, ERR_FORMAT, "%s: header length %" PRIu64 " runs beyond the file (%zu bytes)", file,
                          hlen, len);
    const char *hdr = (const char *)p + 8;
    if (hlen == 0 || hdr[0] != '{')
        return errbuf_set(eb, ERR_FORMAT, "%s: header is not a JSON object (does not start with '{')", file);
    const unsigned char *data0 = p + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;

    json_error_t jerr;
    model__json_begin();
    json_t *root = json_loadb(hdr, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (model__json_oom() || json_error_code(&jerr) == json_error_out_of_memory)
            return errbuf_set(eb, ERR_NOMEM, "%s: out of memory parsing the header", file);
        if (json_error_code(&jerr) == json_error_duplicate_key)
            return errbuf_set(eb, ERR_FORMAT, "%s: header names a tensor twice: %s (column %d)", file, jerr.text,
                              jerr.column);
        return errbuf_set(eb, ERR_FORMAT, "%s: header is not valid JSON: %s (column %d)", file, jerr.text,
                          jerr.column);
    }
    err rc = ERR_OK;
    st_file *f = NULL;
    if (!json_is_object(root)) {
        rc = errbuf_set(eb, ERR_FORMAT, "%s: header is not a JSON object", file);
        goto done;
    }

    /* First pass: count tensors, size the name block, check __metadata__. */
    size_t n = 0, names_len = strlen(file) + 1;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(val)) {
                rc = errbuf_set(eb, ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object", file);
                goto done;
            }
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = errbuf_set(eb, ERR_FORMAT, "%s: \"__metadata__\" entry '%s' is not a string", file, mk);
                    goto done;
                }
            }
            continue;
        }
        n++;
        names_len += strlen(key) + 1;
    }
    if (n > UINT32_MAX) { /* cannot happen under the 100 MB cap; keeps the uint32 index honest */
        rc = errbuf_set(eb, ERR_FORMAT, "%s: too many tensors", file);
        goto done;
    }

    f = xcalloc(1, sizeof(*f));
    if (!f) goto nomem;
    f->tensors = xcalloc(n, sizeof(*f->tensors));
    f->names = xmalloc(names_len);
    f->by_name = xmalloc_array(n, sizeof(*f->by_name));
    if (!f->tensors || !f->names || !f->by_name) goto nomem;

    size_t i = 0, off = strlen(file) + 1;
    memcpy(f->names, file, off);
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) continue;
        size_t kl = strlen(key) + 1;
        memcpy(f->names + off, key, kl);
        st_tensor *t = &f->tensors[i++];
        t->name = f->names + off;
        off += kl;
        rc = parse_entry(file, t->name, val, data0, data_len, t, eb);
        if (rc != ERR_OK) goto done;
    }
    f->n = n;

    qsort(f->tensors, n, sizeof(*f->tensors), cmp_by_offset);
    rc = check_tiling(file, f, data0, data_len, eb);
    if (rc != ERR_OK) goto done;

    for (size_t k = 0; k < n; k++) f->by_name[k] = (uint32_t)k;
    sort_tensors = f->tensors;
    qsort(f->by_name, n, sizeof(*f->by_name), cmp_by_name);
    sort_tensors = NULL;
    goto done;

nomem:
    rc = errbuf_set(eb, ERR_NOMEM, "%s: out of memory for the tensor table", file);
done:
    json_decref(root);
    if (rc != ERR_OK) {
        st_close(f);
        return rc;
    }
    *out = f;
    return ERR_OK;
}

err st_open(const char *path, st_file **out, errbuf *eb) {
    *out = NULL;
    mapfile map;
    err rc = mapfile_open(&map, path, eb);
    if (rc != ERR_OK) return rc;
    rc = st_parse(map.data, map.size, path, out, eb);
    if (rc != ERR_OK) {
        mapfile_close(&map);
        return rc;
    }
    (*out)->map = map;
    return ERR_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    mapfile_close(&f->map);
    xfree(f->tensors);
    xfree(f->names);
    xfree(f->by_name);
    xfree(f);
}

const char *st_name(const st_file *f) { return f ? f->names : NULL; }

size_t st_count(const st_file *f) { return f ? f->n : 0; }

const st_tensor *st_at(const st_file *f, size_t i) { return f && i < f->n ? &f->tensors[i] : NULL; }

const st_tensor *st_find(const st_file *f, const char *name) {
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

/* ---- writing ---- */

/* Builds the header object: __metadata__ first (as transformers writes it), then the tensors in the given order
 * with contiguous offsets. */
static err build_header(const char *path, const st_tensor *ts, size_t n, json_t **out, errbuf *eb) {
    *out = NULL;
    json_t *root = json_object(), *meta = json_object(), *fmt = json_string("pt");
    if (!root || !meta || !fmt || json_object_set(meta, "format", fmt) || json_object_set(root, "__metadata__", meta))
        goto nomem;
    json_decref(meta), meta = NULL;
    json_decref(fmt), fmt = NULL;
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = &ts[i];
        if (!t->name || !strcmp(t->name, "__metadata__") || json_object_get(root, t->name)) {
            json_decref(root);
            return errbuf_set(eb, ERR_INVALID, "%s: tensor %zu: name '%s' is missing, reserved or repeated", path, i,
                              t->name ? t->name : "(null)");
        }
        size_t numel = 1;
        int ok = (unsigned)t->dtype < ST_DTYPE_COUNT && t->n_dims >= 0 && t->n_dims <= ST_MAX_DIMS;
        for (int32_t d = 0; ok && d < t->n_dims; d++) {
            if (t->shape[d] < 0) ok = 0;
            else if (t->shape[d] && numel > SIZE_MAX / (uint64_t)t->shape[d]) ok = 0;
            else numel *= (size_t)t->shape[d];
        }
        if (ok && st_dtype_size(t->dtype) && numel > SIZE_MAX / st_dtype_size(t->dtype)) ok = 0;
        if (!ok || numel * st_dtype_size(t->dtype) != t->nbytes || (t->nbytes && !t->data)) {
            json_decref(root);
            return errbuf_set(eb, ERR_INVALID, "%s: tensor '%s': dtype, shape, nbytes (%zu) or data inconsistent",
                              path, t->name, t->nbytes);
        }
        /* The *_new calls take the reference even when they fail, so a NULL or a failed step leaks nothing. */
        json_t *ent = json_object(), *shape = json_array(), *offs = json_array();
        int bad = !ent || !shape || !offs;
        for (int32_t d = 0; !bad && d < t->n_dims; d++) bad = json_array_append_new(shape, json_integer(t->shape[d]));
        bad = bad || json_array_append_new(offs, json_integer((json_int_t)off)) ||
              json_array_append_new(offs, json_integer((json_int_t)(off + t->nbytes))) ||
              json_object_set_new(ent, "dtype", json_string(st_dtype_name(t->dtype))) ||
              json_object_set(ent, "shape", shape) || json_object_set(ent, "data_offsets", offs);
        json_decref(shape);
        json_decref(offs);
        if (bad || json_object_set_new(root, t->name, ent)) {
            if (bad) json_decref(ent);
            if (model__json_oom()) goto nomem;
            json_decref(root);
            return errbuf_set(eb, ERR_INVALID, "%s: tensor '%s': name is not valid UTF-8", path, t->name);
        }
        off += t->nbytes;
    }
    *out = root;
    return ERR_OK;
nomem:
    json_decref(fmt);
    json_decref(meta);
    json_decref(root);
    return errbuf_set(eb, ERR_NOMEM, "%s: out of memory building the header", path);
}

err st_write(const char *path, const st_tensor *tensors, size_t n, errbuf *eb) {
    model__json_begin();
    json_t *root;
    err rc = build_header(path, tensors, n, &root, eb);
    if (rc != ERR_OK) return rc;
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) return errbuf_set(eb, ERR_NOMEM, "%s: out of memory writing the header", path);
    size_t tl = strlen(text), hlen = (tl + 8 + 7) / 8 * 8 - 8; /* pad so the data starts 8-aligned */
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    static const char spaces[8] = "        ";

    FILE *fp = fopen(path, "wb");
    if (!fp) {
        xfree(text);
        return errbuf_set(eb, ERR_IO, "%s: %s", path, strerror(errno));
    }
    int ok = fwrite(lenbuf, 1, 8, fp) == 8 && fwrite(text, 1, tl, fp) == tl &&
             fwrite(spaces, 1, hlen - tl, fp) == hlen - tl;
    for (size_t i = 0; ok && i < n; i++)
        if (tensors[i].nbytes) ok = fwrite(tensors[i].data, 1, tensors[i].nbytes, fp) == tensors[i].nbytes;
    int e = ok ? 0 : errno;
    if (fclose(fp) != 0 && ok) ok = 0, e = errno;
    xfree(text);
    if (!ok) {
        unlink(path);
        return errbuf_set(eb, ERR_IO, "%s: write failed: %s", path, e ? strerror(e) : "short write");
    }
    return ERR_OK;
}
