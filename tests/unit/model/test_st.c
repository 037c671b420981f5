/* test_st.c - safetensors reader and writer: round trips, and every kind of malformed file giving the right code
 * and a message that names the file and the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc.h"
#include "mapfile.h"
#include "st.h"
#include "testutil.h"

#define NAME "t.safetensors"

/* ---- helpers ---- */

static void check_msg(const errbuf *eb, const char *needle) {
    if (needle && !strstr(eb->msg, needle)) fail_msg("message \"%s\" does not contain \"%s\"", eb->msg, needle);
}

static void check_code(err got, err want, const errbuf *eb) {
    if (got != want) fail_msg("got %s, want %s (message: \"%s\")", err_name(got), err_name(want), eb->msg);
}

/* A safetensors image: 8-byte length, hlen bytes of header (the string, then spaces), data_len bytes of data. */
static unsigned char *image(const char *header, size_t hlen, size_t data_len, size_t *len) {
    size_t hl = strlen(header);
    if (hlen < hl) hlen = hl;
    *len = 8 + hlen + data_len;
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, ' ', hlen - hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hlen + i] = (unsigned char)(i * 7 + 1);
    return b;
}

/* Parses header + data_len bytes of data and expects failure with code want and both needles in the message. */
static void expect_bad(const char *header, size_t data_len, err want, const char *needle1, const char *needle2) {
    size_t len;
    unsigned char *b = image(header, 0, data_len, &len);
    st_file *f = (st_file *)&len; /* must be reset to NULL */
    errbuf eb = {0};
    err rc = st_parse(b, len, NAME, &f, &eb);
    check_code(rc, want, &eb);
    assert_int_equal(eb.code, want);
    assert_null(f);
    check_msg(&eb, NAME);
    check_msg(&eb, needle1);
    check_msg(&eb, needle2);
    free(b);
}

static st_file *expect_good(const char *header, size_t hlen, size_t data_len, unsigned char **img) {
    size_t len;
    *img = image(header, hlen, data_len, &len);
    st_file *f = NULL;
    errbuf eb = {0};
    err rc = st_parse(*img, len, NAME, &f, &eb);
    check_code(rc, ERR_OK, &eb);
    assert_non_null(f);
    return f;
}

static char *join(const char *dir, const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof(buf), "%s/%s", dir, name);
    return buf;
}

static void write_raw(const char *dir, const char *name, const void *data, size_t len) {
    assert_int_equal(tu_write_file(dir, name, data, len), 0);
}

/* ---- dtypes ---- */

static void test_dtype_table(void **state) {
    (void)state;
    assert_string_equal(st_dtype_name(ST_F16), "F16");
    assert_string_equal(st_dtype_name(ST_BF16), "BF16");
    assert_string_equal(st_dtype_name(ST_F32), "F32");
    assert_string_equal(st_dtype_name(ST_BOOL), "BOOL");
    assert_string_equal(st_dtype_name(ST_U64), "U64");
    assert_string_equal(st_dtype_name(ST_DTYPE_COUNT), "?");
    assert_int_equal(st_dtype_size(ST_F16), 2);
    assert_int_equal(st_dtype_size(ST_BF16), 2);
    assert_int_equal(st_dtype_size(ST_F32), 4);
    assert_int_equal(st_dtype_size(ST_F64), 8);
    assert_int_equal(st_dtype_size(ST_U8), 1);
    assert_int_equal(st_dtype_size(ST_DTYPE_COUNT), 0);
}

/* ---- round trips ---- */

static void test_write_roundtrip(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    float f32[6] = {1, 2, 3, 4, 5, 6};
    uint16_t f16[4] = {0x3c00, 0x4000, 0x4200, 0x4400}, bf16[4] = {0x3f80, 0x4000, 0x4040, 0x4080};
    int32_t scalar = -7;
    double f64 = 3.25;
    uint8_t bools[3] = {1, 0, 1};
    st_tensor ts[] = {
        {.name = "a.f32", .dtype = ST_F32, .n_dims = 2, .shape = {2, 3}, .data = f32, .nbytes = sizeof(f32)},
        {.name = "b.f16", .dtype = ST_F16, .n_dims = 1, .shape = {4}, .data = f16, .nbytes = sizeof(f16)},
        {.name = "c.empty", .dtype = ST_U8, .n_dims = 2, .shape = {0, 5}, .data = NULL, .nbytes = 0},
        {.name = "d.bf16", .dtype = ST_BF16, .n_dims = 2, .shape = {2, 2}, .data = bf16, .nbytes = sizeof(bf16)},
        {.name = "e.scalar", .dtype = ST_I32, .n_dims = 0, .data = &scalar, .nbytes = 4},
        {.name = "f.f64", .dtype = ST_F64, .n_dims = 1, .shape = {1}, .data = &f64, .nbytes = 8},
        {.name = "g.bool", .dtype = ST_BOOL, .n_dims = 1, .shape = {3}, .data = bools, .nbytes = 3},
    };
    size_t n = sizeof(ts) / sizeof(ts[0]);
    const char *path = join(dir, "rt.safetensors");
    errbuf eb = {0};
    err rc = st_write(path, ts, n, &eb);
    check_code(rc, ERR_OK, &eb);

    /* The header is padded with spaces so the data starts 8-aligned, and carries the transformers metadata. */
    char *raw;
    size_t raw_len;
    assert_int_equal(file_read_all(path, &raw, &raw_len, 1 << 20, &eb), ERR_OK);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)raw[i];
    assert_int_equal((8 + hlen) % 8, 0);
    assert_int_equal(raw_len, 8 + hlen + sizeof(f32) + sizeof(f16) + sizeof(bf16) + 4 + 8 + 3);
    assert_int_equal(raw[8], '{');
    assert_non_null(strstr(raw + 8, "\"__metadata__\":{\"format\":\"pt\"}"));
    xfree(raw);

    st_file *f = NULL;
    rc = st_open(path, &f, &eb);
    check_code(rc, ERR_OK, &eb);
    assert_string_equal(st_name(f), path);
    assert_int_equal(st_count(f), n);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_find(f, ts[i].name);
        if (!t) fail_msg("tensor %s not found", ts[i].name);
        assert_string_equal(t->name, ts[i].name);
        assert_int_equal(t->dtype, ts[i].dtype);
        assert_int_equal(t->n_dims, ts[i].n_dims);
        for (int d = 0; d < t->n_dims; d++) assert_int_equal(t->shape[d], ts[i].shape[d]);
        assert_int_equal(t->nbytes, ts[i].nbytes);
        if (t->nbytes) assert_memory_equal(t->data, ts[i].data, t->nbytes);
    }
    /* st_at walks the file in data order: offsets never decrease and the tensors are contiguous. */
    const unsigned char *prev_end = NULL;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_at(f, i);
        assert_non_null(t);
        if (prev_end) assert_ptr_equal(t->data, prev_end);
        prev_end = (const unsigned char *)t->data + t->nbytes;
    }
    assert_null(st_at(f, n));
    assert_null(st_find(f, "nope"));
    assert_null(st_find(f, "a.f3"));
    assert_null(st_find(f, ""));
    st_close(f);
    tu_rmtree_free(dir);
}

static void test_parse_any_order_padding_metadata(void **state) {
    (void)state;
    unsigned char *img;
    /* Entries listed out of offset order, metadata in the middle, header right-padded with spaces. */
    st_file *f = expect_good("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                             "\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"},"
                             "\"a\":{\"dtype\":\"U8\",\"shape\":[2,4],\"data_offsets\":[0,8]}}",
                             203, 16, &img);
    assert_int_equal(st_count(f), 2);
    assert_string_equal(st_at(f, 0)->name, "a");
    assert_string_equal(st_at(f, 1)->name, "b");
    assert_ptr_equal(st_find(f, "a")->data, img + 8 + 203);
    assert_ptr_equal(st_find(f, "b")->data, img + 8 + 203 + 8);
    assert_null(st_find(f, "__metadata__"));
    st_close(f);
    free(img);

    /* Empty header object, no data. */
    f = expect_good("{}", 0, 0, &img);
    assert_int_equal(st_count(f), 0);
    assert_null(st_at(f, 0));
    assert_null(st_find(f, "a"));
    st_close(f);
    free(img);

    /* Zero-size tensors may share an offset; a 0-rank tensor has one element. */
    f = expect_good("{\"e1\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[0,0]},"
                    "\"e2\":{\"dtype\":\"F32\",\"shape\":[3,0,2],\"data_offsets\":[0,0]},"
                    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                    "\"e3\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                    0, 4, &img);
    assert_int_equal(st_count(f), 4);
    assert_int_equal(st_find(f, "s")->n_dims, 0);
    assert_int_equal(st_find(f, "s")->nbytes, 4);
    assert_int_equal(st_find(f, "e2")->n_dims, 3);
    st_close(f);
    free(img);
}

static void test_many_tensors_find(void **state) {
    (void)state;
    enum { N = 1200 };
    char *dir = tu_mkdtemp();
    static char names[N][32];
    static st_tensor ts[N];
    static float vals[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "transformer.h.%d.w", (i * 7919) % N); /* not in name order */
        vals[i] = (float)i;
        ts[i] = (st_tensor){
            .name = names[i], .dtype = ST_F32, .n_dims = 1, .shape = {1}, .data = &vals[i], .nbytes = 4};
    }
    errbuf eb = {0};
    const char *path = join(dir, "many.safetensors");
    check_code(st_write(path, ts, N, &eb), ERR_OK, &eb);
    st_file *f = NULL;
    check_code(st_open(path, &f, &eb), ERR_OK, &eb);
    assert_int_equal(st_count(f), N);
    for (int i = 0; i < N; i++) {
        const st_tensor *t = st_find(f, names[i]);
        if (!t) fail_msg("%s not found", names[i]);
        float v;
        memcpy(&v, t->data, 4);
        assert_int_equal((int)v, i);
        assert_ptr_equal(st_at(f, (size_t)i), t); /* written contiguously in this order */
    }
    assert_null(st_find(f, "transformer.h.1200.w"));
    assert_null(st_find(f, "transformer.h.-1.w"));
    st_close(f);
    tu_rmtree_free(dir);
}

/* ---- files too short or with a bad header length ---- */

static void test_bad_file_sizes(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    errbuf eb = {0};
    st_file *f = NULL;

    write_raw(dir, "empty.safetensors", "", 0);
    err rc = st_open(join(dir, "empty.safetensors"), &f, &eb);
    check_code(rc, ERR_FORMAT, &eb);
    assert_null(f);
    check_msg(&eb, "empty.safetensors");
    check_msg(&eb, "too short");

    write_raw(dir, "short.safetensors", "\x02\0\0\0\0", 5);
    rc = st_open(join(dir, "short.safetensors"), &f, &eb);
    check_code(rc, ERR_FORMAT, &eb);
    check_msg(&eb, "short.safetensors");
    check_msg(&eb, "5 bytes");

    rc = st_open(join(dir, "absent.safetensors"), &f, &eb);
    check_code(rc, ERR_IO, &eb);
    check_msg(&eb, "absent.safetensors");

    /* A directory is not a checkpoint. */
    rc = st_open(dir, &f, &eb);
    check_code(rc, ERR_IO, &eb);
    assert_null(f);

    /* Header length beyond the file. */
    unsigned char b[24] = {100};
    memcpy(b + 8, "{}", 2);
    write_raw(dir, "beyond.safetensors", b, sizeof(b));
    rc = st_open(join(dir, "beyond.safetensors"), &f, &eb);
    check_code(rc, ERR_FORMAT, &eb);
    check_msg(&eb, "beyond.safetensors");
    check_msg(&eb, "header length 100 runs beyond the file (24 bytes)");

    /* Header length with the top bit set (would overflow 8 + N). */
    memset(b, 0xff, 8);
    write_raw(dir, "huge.safetensors", b, sizeof(b));
    rc = st_open(join(dir, "huge.safetensors"), &f, &eb);
    check_code(rc, ERR_FORMAT, &eb);
    check_msg(&eb, "huge.safetensors");

    /* Header length over the 100 MB cap although the (sparse) file is large enough. */
    const char *big = join(dir, "big.safetensors");
    FILE *fp = fopen(big, "wb");
    assert_non_null(fp);
    uint64_t n = 100000001;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    assert_int_equal(fwrite(len8, 1, 8, fp), 8);
    assert_int_equal(fputc('{', fp), '{');
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(truncate(big, 8 + 100000001 + 16), 0);
    rc = st_open(big, &f, &eb);
    check_code(rc, ERR_FORMAT, &eb);
    check_msg(&eb, "big.safetensors");
    check_msg(&eb, "100000001 exceeds the limit of 100000000");
    assert_null(f);
    tu_rmtree_free(dir);
}

/* ---- malformed headers ---- */

static void test_bad_header_json(void **state) {
    (void)state;
    expect_bad("{not json}", 0, ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, ERR_FORMAT, "not valid JSON",
               NULL);
    expect_bad("[1, 2, 3]", 0, ERR_FORMAT, "not a JSON object", NULL);
    expect_bad("\"str\"", 0, ERR_FORMAT, "not a JSON object", NULL);
    expect_bad(" {}", 0, ERR_FORMAT, "does not start with '{'", NULL);
    expect_bad("", 0, ERR_FORMAT, "not a JSON object", NULL);
    expect_bad("{} {}", 0, ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{\"a\xff\":{}}", 0, ERR_FORMAT, "not valid JSON", NULL);           /* not UTF-8 */
    expect_bad("{\"a\\u0000b\":{}}", 0, ERR_FORMAT, "not valid JSON", NULL);       /* NUL in a name */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, ERR_FORMAT, "names a tensor twice", "duplicate object key near '\"a\"'");
    expect_bad("{\"__metadata__\":{\"format\":1}}", 0, ERR_FORMAT, "__metadata__", "format");
    expect_bad("{\"__metadata__\":[]}", 0, ERR_FORMAT, "__metadata__", NULL);

    /* A NUL byte inside the header. */
    size_t len;
    unsigned char *b = image("{}", 4, 0, &len);
    b[9] = 0;
    st_file *f = NULL;
    errbuf eb = {0};
    check_code(st_parse(b, len, NAME, &f, &eb), ERR_FORMAT, &eb);
    assert_null(f);
    free(b);
}

static void test_bad_entries(void **state) {
    (void)state;
    expect_bad("{\"w\":5}", 0, ERR_FORMAT, "tensor 'w'", "not a JSON object");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, ERR_FORMAT, "tensor 'w'", "data_offsets");
    expect_bad("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ERR_FORMAT, "tensor 'w'", "dtype");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, ERR_FORMAT, "tensor 'w'", "shape");
    expect_bad("{\"w\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ERR_FORMAT, "tensor 'w'", "dtype");
    expect_bad("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, ERR_UNSUPPORTED, "tensor 'w'",
               "unsupported dtype 'F8_E4M3'");
    expect_bad("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ERR_UNSUPPORTED, "tensor 'w'",
               "'f32'");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}", 4, ERR_FORMAT, "tensor 'w'", "shape");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, ERR_FORMAT, "tensor 'w'",
               "shape entry 0");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1.0],\"data_offsets\":[0,4]}}", 4, ERR_FORMAT, "tensor 'w'",
               "shape entry 1");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, ERR_FORMAT, "tensor 'w'",
               "shape entry 0");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, ERR_UNSUPPORTED,
               "tensor 'w'", "9 dimensions");
    /* 8 dimensions is the most we take. */
    unsigned char *img;
    st_file *f =
        expect_good("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 0, 4, &img);
    assert_int_equal(st_find(f, "w")->n_dims, 8);
    st_close(f);
    free(img);
}

static void test_bad_offsets(void **state) {
    (void)state;
    expect_bad("{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, ERR_FORMAT,
               "tensor 'lm_head.weight'", "data_offsets [0, 16] end beyond the 8 bytes of data");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, ERR_FORMAT, "tensor 'w'",
               "end before begin");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8, ERR_FORMAT, "tensor 'w'",
               "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, ERR_FORMAT, "tensor 'w'",
               "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, ERR_FORMAT, "tensor 'w'",
               "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, ERR_FORMAT, "tensor 'w'",
               "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,9223372036854775807]}}", 4, ERR_FORMAT,
               "tensor 'w'", "end beyond");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4, ERR_FORMAT,
               "not valid JSON", NULL);
    /* Overlap, holes, and a data buffer not fully covered. */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, ERR_FORMAT, "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8, ERR_FORMAT, "overlap", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               12, ERR_FORMAT, "tensor 'b'", "hole: bytes [4, 8)");
    expect_bad("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, ERR_FORMAT, "tensor 'b'", "hole");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, ERR_FORMAT,
               "tensors cover 4 bytes of data but 8 follow", NULL);
    expect_bad("{}", 3, ERR_FORMAT, "cover 0 bytes", NULL);
    /* Shape and byte range disagree. */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, ERR_FORMAT, "tensor 'w'",
               "shape [3] of F32 is 12 bytes but data_offsets [0, 8] hold 8");
    expect_bad("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 4, ERR_FORMAT, "tensor 'w'",
               "8 bytes");
    /* Element counts that overflow 64 bits must not wrap around to the range's size. */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0, ERR_FORMAT,
               "tensor 'w'", "overflows");
    expect_bad("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0, ERR_FORMAT,
               "tensor 'w'", "overflows");
    expect_bad("{\"w\":{\"dtype\":\"F16\",\"shape\":[9223372036854775807],\"data_offsets\":[0,0]}}", 0, ERR_FORMAT,
               "tensor 'w'", NULL);
}

/* ---- the writer's own checks ---- */

static void test_write_errors(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    float v[2] = {1, 2};
    errbuf eb = {0};
    st_tensor t = {.name = "w", .dtype = ST_F32, .n_dims = 1, .shape = {2}, .data = v, .nbytes = 8};
    check_code(st_write(join(dir, "no/such/dir.safetensors"), &t, 1, &eb), ERR_IO, &eb);
    check_msg(&eb, "no/such/dir.safetensors");

    st_tensor bad = t;
    bad.nbytes = 4;
    check_code(st_write(join(dir, "x.safetensors"), &bad, 1, &eb), ERR_INVALID, &eb);
    check_msg(&eb, "'w'");
    bad = t;
    bad.dtype = ST_DTYPE_COUNT;
    check_code(st_write(join(dir, "x.safetensors"), &bad, 1, &eb), ERR_INVALID, &eb);
    bad = t;
    bad.n_dims = ST_MAX_DIMS + 1;
    check_code(st_write(join(dir, "x.safetensors"), &bad, 1, &eb), ERR_INVALID, &eb);
    bad = t;
    bad.shape[0] = -2;
    check_code(st_write(join(dir, "x.safetensors"), &bad, 1, &eb), ERR_INVALID, &eb);
    bad = t;
    bad.data = NULL;
    check_code(st_write(join(dir, "x.safetensors"), &bad, 1, &eb), ERR_INVALID, &eb);
    st_tensor two[2] = {t, t};
    check_code(st_write(join(dir, "x.safetensors"), two, 2, &eb), ERR_INVALID, &eb);
    check_msg(&eb, "repeated");
    bad = t;
    bad.name = "__metadata__";
    check_code(st_write(join(dir, "x.safetensors"), &bad, 1, &eb), ERR_INVALID, &eb);
    bad = t;
    bad.name = "bad\xff";
    check_code(st_write(join(dir, "x.safetensors"), &bad, 1, &eb), ERR_INVALID, &eb);
    assert_int_not_equal(access(join(dir, "x.safetensors"), F_OK), 0);

    /* No tensors at all is a valid (empty) file. */
    check_code(st_write(join(dir, "empty.safetensors"), NULL, 0, &eb), ERR_OK, &eb);
    st_file *f = NULL;
    check_code(st_open(join(dir, "empty.safetensors"), &f, &eb), ERR_OK, &eb);
    assert_int_equal(st_count(f), 0);
    st_close(f);
    tu_rmtree_free(dir);
}

static void test_null_handles(void **state) {
    (void)state;
    st_close(NULL);
    assert_int_equal(st_count(NULL), 0);
    assert_null(st_at(NULL, 0));
    assert_null(st_find(NULL, "a"));
    assert_null(st_name(NULL));
    /* A NULL errbuf is allowed: the caller only wants the code. */
    st_file *f = NULL;
    assert_int_equal(st_parse("abc", 3, NAME, &f, NULL), ERR_FORMAT);
    assert_null(f);
}

/* ---- fault injection: every allocation failing in turn gives ERR_NOMEM, never a crash or a leak ---- */

static void test_alloc_failures(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    float v[6] = {0};
    st_tensor ts[3] = {
        {.name = "a", .dtype = ST_F32, .n_dims = 2, .shape = {2, 2}, .data = v, .nbytes = 16},
        {.name = "b", .dtype = ST_F32, .n_dims = 1, .shape = {1}, .data = v, .nbytes = 4},
        {.name = "c", .dtype = ST_F32, .n_dims = 0, .data = v, .nbytes = 4},
    };
    char path[1024];
    snprintf(path, sizeof(path), "%s/fa.safetensors", dir);
    errbuf eb = {0};
    int ok_at = -1;
    for (long n = 0; n < 1000 && ok_at < 0; n++) {
        alloc_fail_after(n);
        err rc = st_write(path, ts, 3, &eb);
        alloc_fail_after(-1);
        if (rc == ERR_OK) ok_at = (int)n;
        else check_code(rc, ERR_NOMEM, &eb);
    }
    assert_true(ok_at > 0);
    ok_at = -1;
    for (long n = 0; n < 1000 && ok_at < 0; n++) {
        st_file *f = NULL;
        alloc_fail_after(n);
        err rc = st_open(path, &f, &eb);
        alloc_fail_after(-1);
        if (rc == ERR_OK) {
            ok_at = (int)n;
            assert_int_equal(st_count(f), 3);
            st_close(f);
        } else {
            check_code(rc, ERR_NOMEM, &eb);
            assert_null(f);
        }
    }
    assert_true(ok_at > 0);
    tu_rmtree_free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_write_roundtrip),
        cmocka_unit_test(test_parse_any_order_padding_metadata),
        cmocka_unit_test(test_many_tensors_find),
        cmocka_unit_test(test_bad_file_sizes),
        cmocka_unit_test(test_bad_header_json),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_null_handles),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
