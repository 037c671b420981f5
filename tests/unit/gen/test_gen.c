/* test_gen.c - stop strings at text level, across token boundaries; generation on a tiny checkpoint: max tokens,
 * stop, context overflow, seeded sampling, streaming pieces that are whole UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "gen.h"
#include "testutil.h"
#include "world.h"

static void test_stop_find_and_holdback(void **s) {
    (void)s;
    const char *stops[] = {"\n\n", "def ", "", "END"};
    gen_stop st;
    gen_stop_init(&st, stops, 4);
    assert_int_equal(st.n, 3); /* the empty string is ignored */
    const char *t = "x = 1\nreturn x\n\ndef f";
    assert_int_equal(gen_stop_find(&st, t, strlen(t), 0), 14);
    assert_int_equal(gen_stop_find(&st, "abc", 3, 0), -1);
    /* a trailing "\n" or "de" or "EN" may start a stop string: hold it back */
    assert_int_equal(gen_stop_holdback(&st, "abc\n", 4, 0), 1);
    assert_int_equal(gen_stop_holdback(&st, "abc de", 6, 0), 2);
    assert_int_equal(gen_stop_holdback(&st, "xEN", 3, 0), 2);
    assert_int_equal(gen_stop_holdback(&st, "abc", 3, 0), 0);
    /* never hold back text before `from` */
    assert_int_equal(gen_stop_holdback(&st, "xd", 2, 1), 1);
    assert_int_equal(gen_stop_holdback(&st, "xd", 2, 2), 0);
    /* first occurrence wins over a longer stop that starts later */
    const char *stops2[] = {"cd", "b"};
    gen_stop_init(&st, stops2, 2);
    assert_int_equal(gen_stop_find(&st, "abcd", 4, 0), 1);
}

typedef struct sink {
    char text[8192];
    size_t len;
    int pieces;
    int32_t ids[256];
    int n_ids;
} sink;

static int on_text(void *ud, const char *t, size_t n, const samp_result *r) {
    (void)r;
    sink *k = ud;
    /* each piece is whole UTF-8: it does not end inside a multi-byte character */
    if (n) {
        size_t i = n;
        while (i > 0 && ((unsigned char)t[i - 1] & 0xC0) == 0x80) i--;
        if (i > 0) {
            unsigned char lead = (unsigned char)t[i - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            assert_true(n - (i - 1) == need || lead < 0x80 || lead == 0xEF);
        }
    }
    memcpy(k->text + k->len, t, n);
    k->len += n;
    k->pieces++;
    return 0;
}

static void on_token(void *ud, const samp_result *r) {
    sink *k = ud;
    if (k->n_ids < 256) k->ids[k->n_ids++] = r->id;
}

typedef struct world {
    tu_world t;
} world;

static int setup(void **state) {
    world *w = xcalloc(1, sizeof(*w));
    tu_ckpt_spec spec = {2, 64, 4, 8, 128, 51200, ST_F32, 99};
    *state = w;
    return tu_world_open(&w->t, &spec, 2, NULL) ? -1 : 0;
}

static int teardown(void **state) {
    world *w = *state;
    tu_world_close(&w->t);
    xfree(w);
    return 0;
}

static void run(world *w, const char *prompt, gen_params *gp, sink *k, gen_result *res, err want) {
    int32_t *ids = NULL;
    size_t n = 0;
    errbuf eb = {0};
    assert_int_equal(tok_encode(w->t.tk, prompt, strlen(prompt), &ids, &n, &eb), ERR_OK);
    memset(k, 0, sizeof(*k));
    err rc = gen_run(w->t.em, w->t.tk, ids, n, gp, on_text, on_token, k, res, &eb);
    if (rc != want) fail_msg("gen_run: %s (%s)", err_name(rc), eb.msg);
    xfree(ids);
}

static void test_generation(void **state) {
    world *w = *state;
    gen_params gp = {0};
    gp.samp = samp_params_default();
    gp.max_tokens = 20;
    gp.ignore_eos = 1;
    sink a, b;
    gen_result res;
    run(w, "def f(x):", &gp, &a, &res, ERR_OK);
    assert_int_equal(res.n_generated, 20);
    assert_int_equal(res.finish, GEN_FINISH_LENGTH);
    /* the streamed text is exactly the decode of the generated ids */
    char *whole = NULL;
    size_t wl = 0;
    assert_int_equal(tok_decode(w->t.tk, a.ids, (size_t)a.n_ids, &whole, &wl), ERR_OK);
    assert_int_equal(wl, a.len);
    assert_memory_equal(whole, a.text, wl);

    /* a stop string taken from the middle of that text cuts there, even across token boundaries */
    if (wl >= 6) {
        char stop[4];
        memcpy(stop, whole + wl / 2, 3);
        stop[3] = 0;
        const char *first = strstr(whole, stop);
        gp.stop[0] = stop;
        gp.n_stop = 1;
        run(w, "def f(x):", &gp, &b, &res, ERR_OK);
        assert_int_equal(res.finish, GEN_FINISH_STOP);
        assert_int_equal(b.len, (size_t)(first - whole));
        assert_memory_equal(b.text, whole, b.len);
        gp.n_stop = 0;
    }
    xfree(whole);

    /* seeded sampling is reproducible */
    gp.samp.temperature = 0.8f;
    gp.seed = 1234;
    run(w, "import os", &gp, &a, &res, ERR_OK);
    run(w, "import os", &gp, &b, &res, ERR_OK);
    assert_int_equal(a.n_ids, b.n_ids);
    assert_memory_equal(a.ids, b.ids, sizeof(int32_t) * (size_t)a.n_ids);

    /* prompt + max_tokens beyond the context (128 here) is refused up front */
    gp.max_tokens = 127;
    run(w, "x = 1 + 2", &gp, &a, &res, ERR_INVALID);
    gp.max_tokens = 0;
    run(w, "x", &gp, &a, &res, ERR_OK);
    assert_int_equal(a.len, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_find_and_holdback),
        cmocka_unit_test(test_generation),
    };
    return cmocka_run_group_tests_name("gen", tests, setup, teardown);
}
