/* ptpickle.c - a restricted pickle VM for torch state dicts (pytorch_model.bin's data.pkl).
 *
 * DESIGN. A pickle is a program; a general unpickler runs arbitrary callables (posix.system, builtins.eval). This VM
 * knows only the opcodes a torch state dict uses (protocol 2, plus FRAME / MEMOIZE / SHORT_BINUNICODE / STACK_GLOBAL
 * of protocol 4) and resolves only whitelisted globals: collections.OrderedDict (called with no arguments),
 * torch._utils._rebuild_tensor_v2 (which here builds a tensor description, nothing more) and the torch.*Storage classes
 * (only as the type inside a ("storage", type, key, location, numel) persistent id). Any other global is refused at
 * the GLOBAL / STACK_GLOBAL opcode, before anything could call it; the VM has no side effects outside its own memory.
 * Values live in one growing pool and are referred to by index, so memo entries and shared references cost nothing;
 * the pool, stack, marks and memo are capped. Strings point into the pickle bytes. Errors name the opcode offset. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "model_impl.h"

#define MAX_VALUES (1u << 22)
#define MAX_STACK (1u << 20)
#define MAX_MARKS 256u
#define MAX_MEMO (1u << 22)

typedef enum vkind {
    V_NONE, V_BOOL, V_INT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR
} vkind;

typedef enum gkind { G_ODICT, G_REBUILD, G_STORAGE } gkind;

typedef struct pval {
    vkind kind;
    int32_t g;            /* V_GLOBAL: gkind; V_STORAGE: dtype */
    int64_t i;            /* V_INT, V_BOOL; V_TENSOR: record index; V_STORAGE: numel */
    const char *s;        /* V_STR; V_STORAGE: key */
    size_t slen;
    uint32_t *items;      /* tuple / list elements; dict keys and values alternating */
    size_t n, cap;
} pval;

typedef struct vm {
    const unsigned char *p;
    size_t len, pos, op_at;
    const char *file;
    errbuf *eb;
    pval *v;
    size_t nv, capv;
    uint32_t *stack;
    size_t sp, caps;
    size_t marks[MAX_MARKS];
    size_t nmarks;
    uint32_t *memo; /* UINT32_MAX = unset */
    size_t nmemo, memo_set; /* slots allocated; slots set (len(memo) in Python) */
    pt__rec *recs;
    size_t nrecs, caprecs;
} vm;

static err fail(vm *m, err code, const char *what) {
    return errbuf_set(m->eb, code, "%s: pickle opcode 0x%02x at offset %zu: %s", m->file,
                      m->op_at < m->len ? m->p[m->op_at] : 0, m->op_at, what);
}

static err nomem(vm *m) { return fail(m, ERR_NOMEM, "out of memory"); }

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    if (nc > SIZE_MAX / elem) return 0;
    void *q = xrealloc(*p, nc * elem);
    if (!q) return 0;
    *p = q, *cap = nc;
    return 1;
}

static err newval(vm *m, vkind k, uint32_t *out) {
    if (m->nv >= MAX_VALUES) return fail(m, ERR_FORMAT, "too many objects");
    if (!grow((void **)&m->v, &m->capv, m->nv + 1, sizeof(pval))) return nomem(m);
    memset(&m->v[m->nv], 0, sizeof(pval));
    m->v[m->nv].kind = k;
    *out = (uint32_t)m->nv++;
    return ERR_OK;
}

static err push(vm *m, uint32_t x) {
    if (m->sp >= MAX_STACK) return fail(m, ERR_FORMAT, "stack too deep");
    if (!grow((void **)&m->stack, &m->caps, m->sp + 1, sizeof(uint32_t))) return nomem(m);
    m->stack[m->sp++] = x;
    return ERR_OK;
}

static err pushnew(vm *m, vkind k, uint32_t *out) {
    uint32_t x = 0;
    err rc = newval(m, k, &x);
    if (rc == ERR_OK) rc = push(m, x);
    if (out) *out = x;
    return rc;
}

/* The stack floor: values above the innermost mark may be popped, none below it. */
static size_t floor_(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

static err pop(vm *m, uint32_t *x) {
    if (m->sp <= floor_(m)) return fail(m, ERR_FORMAT, "stack underflow");
    *x = m->stack[--m->sp];
    return ERR_OK;
}

static err top(vm *m, uint32_t *x) {
    if (m->sp <= floor_(m)) return fail(m, ERR_FORMAT, "stack underflow");
    *x = m->stack[m->sp - 1];
    return ERR_OK;
}

static err need(vm *m, size_t n) {
    if (m->len - m->pos < n) return fail(m, ERR_FORMAT, "truncated argument");
    return ERR_OK;
}

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static err add_item(vm *m, uint32_t c, uint32_t x) {
    pval *v = &m->v[c];
    if (!grow((void **)&v->items, &v->cap, v->n + 1, sizeof(uint32_t))) return nomem(m);
    v->items[v->n++] = x;
    return ERR_OK;
}

/* Pops everything above the innermost mark into a new container of kind k (tuple / list elements, or dict pairs
 * appended to an existing container when into != UINT32_MAX). */
static err pop_mark_into(vm *m, vkind k, uint32_t into) {
    if (!m->nmarks) return fail(m, ERR_FORMAT, "no MARK");
    size_t base = m->marks[--m->nmarks];
    uint32_t c = into;
    err rc = ERR_OK;
    if (c == UINT32_MAX && (rc = newval(m, k, &c)) != ERR_OK) return rc;
    if (m->v[c].kind == V_DICT && (m->sp - base) % 2)
        return fail(m, ERR_FORMAT, "SETITEMS with an odd number of items");
    for (size_t i = base; i < m->sp && rc == ERR_OK; i++) rc = add_item(m, c, m->stack[i]);
    m->sp = base;
    if (rc == ERR_OK && into == UINT32_MAX) rc = push(m, c);
    return rc;
}

static err make_tuple(vm *m, size_t n) {
    if (m->sp - floor_(m) < n) return fail(m, ERR_FORMAT, "stack underflow");
    uint32_t t = 0;
    err rc = newval(m, V_TUPLE, &t);
    for (size_t i = m->sp - n; i < m->sp && rc == ERR_OK; i++) rc = add_item(m, t, m->stack[i]);
    if (rc != ERR_OK) return rc;
    m->sp -= n;
    return push(m, t);
}

static const struct {
    const char *name;
    st_dtype dt;
} storages[] = {
    {"HalfStorage", ST_F16}, {"FloatStorage", ST_F32}, {"BFloat16Storage", ST_BF16}, {"ByteStorage", ST_U8},
    {"BoolStorage", ST_BOOL}, {"LongStorage", ST_I64}, {"IntStorage", ST_I32},       {"DoubleStorage", ST_F64},
};

static int str_is(const char *s, size_t n, const char *lit) { return strlen(lit) == n && !memcmp(s, lit, n); }

/* The whitelist. Anything else is refused here, naming the global. */
static err global(vm *m, const char *mod, size_t ml, const char *name, size_t nl) {
    uint32_t x = 0;
    int g = -1, dt = 0;
    if (str_is(mod, ml, "collections") && str_is(name, nl, "OrderedDict")) g = G_ODICT;
    else if (str_is(mod, ml, "torch._utils") && str_is(name, nl, "_rebuild_tensor_v2")) g = G_REBUILD;
    else if (str_is(mod, ml, "torch"))
        for (size_t i = 0; i < sizeof(storages) / sizeof(storages[0]); i++)
            if (str_is(name, nl, storages[i].name)) g = G_STORAGE, dt = storages[i].dt;
    if (g < 0) {
        char what[200];
        snprintf(what, sizeof(what), "global '%.*s.%.*s' is not allowed (a torch state dict needs only "
                 "collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage)",
                 (int)(ml > 60 ? 60 : ml), mod, (int)(nl > 60 ? 60 : nl), name);
        for (char *c = what; *c; c++)
            if ((unsigned char)*c < 0x20) *c = '?';
        return fail(m, ERR_UNSUPPORTED, what);
    }
    err rc = pushnew(m, V_GLOBAL, &x);
    if (rc == ERR_OK) m->v[x].g = g, m->v[x].i = dt;
    return rc;
}

static int as_int(const vm *m, uint32_t x, int64_t *out) {
    if (m->v[x].kind != V_INT && m->v[x].kind != V_BOOL) return 0;
    *out = m->v[x].i;
    return 1;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
static err rebuild_tensor(vm *m, const pval *args, uint32_t *out) {
    if (args->n < 6 || args->n > 7) return fail(m, ERR_FORMAT, "_rebuild_tensor_v2 takes 6 or 7 arguments");
    const pval *st = &m->v[args->items[0]], *sz = &m->v[args->items[2]], *sd = &m->v[args->items[3]];
    pt__rec r;
    memset(&r, 0, sizeof(r));
    if (st->kind != V_STORAGE) return fail(m, ERR_FORMAT, "_rebuild_tensor_v2: first argument is not a storage");
    if (!as_int(m, args->items[1], &r.storage_offset))
        return fail(m, ERR_FORMAT, "_rebuild_tensor_v2: storage offset is not an integer");
    if (sz->kind != V_TUPLE || sd->kind != V_TUPLE || sz->n != sd->n)
        return fail(m, ERR_FORMAT, "_rebuild_tensor_v2: size and stride are not tuples of one length");
    if (sz->n > ST_MAX_DIMS) return fail(m, ERR_UNSUPPORTED, "_rebuild_tensor_v2: too many dimensions");
    for (size_t d = 0; d < sz->n; d++)
        if (!as_int(m, sz->items[d], &r.shape[d]) || !as_int(m, sd->items[d], &r.stride[d]))
            return fail(m, ERR_FORMAT, "_rebuild_tensor_v2: size or stride entry is not an integer");
    r.n_dims = (int32_t)sz->n;
    r.dtype = (st_dtype)st->g;
    r.storage_numel = st->i;
    r.key = st->s, r.key_len = st->slen;
    if (!grow((void **)&m->recs, &m->caprecs, m->nrecs + 1, sizeof(pt__rec))) return nomem(m);
    m->recs[m->nrecs] = r;
    err rc = newval(m, V_TENSOR, out);
    if (rc == ERR_OK) m->v[*out].i = (int64_t)m->nrecs++;
    return rc;
}

static err reduce(vm *m) {
    uint32_t a = 0, f = 0, x = 0;
    err rc = pop(m, &a);
    if (rc == ERR_OK) rc = pop(m, &f);
    if (rc != ERR_OK) return rc;
    const pval *fv = &m->v[f];
    if (m->v[a].kind != V_TUPLE) return fail(m, ERR_FORMAT, "REDUCE arguments are not a tuple");
    if (fv->kind != V_GLOBAL) return fail(m, ERR_FORMAT, "REDUCE on something that is not a global");
    if (fv->g == G_ODICT) {
        if (m->v[a].n) return fail(m, ERR_UNSUPPORTED, "OrderedDict called with arguments");
        rc = newval(m, V_DICT, &x);
    } else if (fv->g == G_REBUILD) {
        pval args = m->v[a];
        rc = rebuild_tensor(m, &args, &x);
    } else {
        return fail(m, ERR_UNSUPPORTED, "a torch storage class may only appear in a persistent id");
    }
    return rc == ERR_OK ? push(m, x) : rc;
}

/* ("storage", torch.XStorage, key, location, numel) */
static err persid(vm *m) {
    uint32_t t = 0, x = 0;
    err rc = pop(m, &t);
    if (rc != ERR_OK) return rc;
    const pval *v = &m->v[t];
    int64_t numel;
    if (v->kind != V_TUPLE || v->n != 5 || m->v[v->items[0]].kind != V_STR ||
        !str_is(m->v[v->items[0]].s, m->v[v->items[0]].slen, "storage") || m->v[v->items[1]].kind != V_GLOBAL ||
        m->v[v->items[1]].g != G_STORAGE || m->v[v->items[2]].kind != V_STR || m->v[v->items[3]].kind != V_STR ||
        !as_int(m, v->items[4], &numel))
        return fail(m, ERR_FORMAT, "persistent id is not ('storage', torch.XStorage, key, location, numel)");
    const char *key = m->v[v->items[2]].s; /* copied out: newval may move the pool */
    size_t key_len = m->v[v->items[2]].slen;
    int32_t dt = (int32_t)m->v[v->items[1]].i;
    if ((rc = newval(m, V_STORAGE, &x)) != ERR_OK) return rc;
    m->v[x].g = dt, m->v[x].i = numel, m->v[x].s = key, m->v[x].slen = key_len;
    return push(m, x);
}

static err memo_put(vm *m, uint64_t idx) {
    if (idx >= MAX_MEMO) return fail(m, ERR_FORMAT, "memo index too large");
    uint32_t x = 0;
    err rc = top(m, &x);
    if (rc != ERR_OK) return rc;
    if (idx >= m->nmemo) {
        size_t cap = m->nmemo;
        if (!grow((void **)&m->memo, &cap, (size_t)idx + 1, sizeof(uint32_t))) return nomem(m);
        for (size_t i = m->nmemo; i < cap; i++) m->memo[i] = UINT32_MAX;
        m->nmemo = cap;
    }
    if (m->memo[idx] == UINT32_MAX) m->memo_set++;
    m->memo[idx] = x;
    return ERR_OK;
}

static err memo_get(vm *m, uint64_t idx) {
    if (idx >= m->nmemo || m->memo[idx] == UINT32_MAX) return fail(m, ERR_FORMAT, "memo index not set");
    return push(m, m->memo[idx]);
}

static err str_op(vm *m, int lenbytes) {
    err rc = need(m, (size_t)lenbytes);
    if (rc != ERR_OK) return rc;
    uint64_t n = le(m->p + m->pos, lenbytes);
    m->pos += (size_t)lenbytes;
    if (n > m->len - m->pos) return fail(m, ERR_FORMAT, "string runs past the end");
    uint32_t x = 0;
    if ((rc = pushnew(m, V_STR, &x)) != ERR_OK) return rc;
    m->v[x].s = (const char *)m->p + m->pos, m->v[x].slen = (size_t)n;
    m->pos += (size_t)n;
    return ERR_OK;
}

static err int_op(vm *m, int64_t val) {
    uint32_t x = 0;
    err rc = pushnew(m, V_INT, &x);
    if (rc == ERR_OK) m->v[x].i = val;
    return rc;
}

/* Reads "text\n" for GLOBAL. */
static err line(vm *m, const char **s, size_t *n) {
    const unsigned char *nl = memchr(m->p + m->pos, '\n', m->len - m->pos);
    if (!nl) return fail(m, ERR_FORMAT, "GLOBAL argument without a newline");
    *s = (const char *)m->p + m->pos;
    *n = (size_t)(nl - (m->p + m->pos));
    m->pos += *n + 1;
    return ERR_OK;
}

static err step(vm *m, int *done) {
    m->op_at = m->pos;
    if (m->pos >= m->len) return fail(m, ERR_FORMAT, "pickle ends without STOP");
    unsigned char op = m->p[m->pos++];
    err rc = ERR_OK;
    uint32_t a = 0, b = 0, c = 0;
    switch (op) {
    case 0x80: /* PROTO */
        if ((rc = need(m, 1)) != ERR_OK) return rc;
        if (m->p[m->pos] < 2 || m->p[m->pos] > 5) return fail(m, ERR_UNSUPPORTED, "pickle protocol must be 2 to 5");
        m->pos++;
        return ERR_OK;
    case 0x95: /* FRAME: a length hint, the opcodes follow inline */
        if ((rc = need(m, 8)) != ERR_OK) return rc;
        m->pos += 8;
        return ERR_OK;
    case 'c': { /* GLOBAL */
        const char *mod = NULL, *name = NULL;
        size_t ml = 0, nl = 0;
        if ((rc = line(m, &mod, &ml)) != ERR_OK || (rc = line(m, &name, &nl)) != ERR_OK) return rc;
        return global(m, mod, ml, name, nl);
    }
    case 0x93: /* STACK_GLOBAL */
        if ((rc = pop(m, &b)) != ERR_OK || (rc = pop(m, &a)) != ERR_OK) return rc;
        if (m->v[a].kind != V_STR || m->v[b].kind != V_STR)
            return fail(m, ERR_FORMAT, "STACK_GLOBAL needs two strings");
        return global(m, m->v[a].s, m->v[a].slen, m->v[b].s, m->v[b].slen);
    case '(': /* MARK */
        if (m->nmarks >= MAX_MARKS) return fail(m, ERR_FORMAT, "marks nested too deep");
        m->marks[m->nmarks++] = m->sp;
        return ERR_OK;
    case ')': return pushnew(m, V_TUPLE, NULL);
    case 't': return pop_mark_into(m, V_TUPLE, UINT32_MAX);
    case 0x85: return make_tuple(m, 1);
    case 0x86: return make_tuple(m, 2);
    case 0x87: return make_tuple(m, 3);
    case '}': return pushnew(m, V_DICT, NULL);
    case ']': return pushnew(m, V_LIST, NULL);
    case 's': /* SETITEM */
        if ((rc = pop(m, &b)) != ERR_OK || (rc = pop(m, &a)) != ERR_OK || (rc = top(m, &c)) != ERR_OK) return rc;
        if (m->v[c].kind != V_DICT) return fail(m, ERR_FORMAT, "SETITEM on something that is not a dict");
        if ((rc = add_item(m, c, a)) != ERR_OK) return rc;
        return add_item(m, c, b);
    case 'u': /* SETITEMS */
    case 'e': /* APPENDS */
        if (!m->nmarks || m->marks[m->nmarks - 1] == 0) return fail(m, ERR_FORMAT, "no MARK or no container");
        c = m->stack[m->marks[m->nmarks - 1] - 1];
        if (m->v[c].kind != (op == 'u' ? V_DICT : V_LIST))
            return fail(m, ERR_FORMAT, op == 'u' ? "SETITEMS on something that is not a dict"
                                                 : "APPENDS on something that is not a list");
        return pop_mark_into(m, m->v[c].kind, c);
    case 'a': /* APPEND */
        if ((rc = pop(m, &a)) != ERR_OK || (rc = top(m, &c)) != ERR_OK) return rc;
        if (m->v[c].kind != V_LIST) return fail(m, ERR_FORMAT, "APPEND on something that is not a list");
        return add_item(m, c, a);
    case 'X': return str_op(m, 4);      /* BINUNICODE */
    case 0x8c: return str_op(m, 1);     /* SHORT_BINUNICODE */
    case 'T': return str_op(m, 4);      /* BINSTRING */
    case 'U': return str_op(m, 1);      /* SHORT_BINSTRING */
    case 'J':                           /* BININT */
        if ((rc = need(m, 4)) != ERR_OK) return rc;
        m->pos += 4;
        return int_op(m, (int32_t)(uint32_t)le(m->p + m->pos - 4, 4));
    case 'K':                           /* BININT1 */
        if ((rc = need(m, 1)) != ERR_OK) return rc;
        return int_op(m, m->p[m->pos++]);
    case 'M':                           /* BININT2 */
        if ((rc = need(m, 2)) != ERR_OK) return rc;
        m->pos += 2;
        return int_op(m, (int64_t)le(m->p + m->pos - 2, 2));
    case 0x8a: {                        /* LONG1 */
        if ((rc = need(m, 1)) != ERR_OK) return rc;
        size_t n = m->p[m->pos++];
        if (n > 8) return fail(m, ERR_UNSUPPORTED, "integer wider than 64 bits");
        if ((rc = need(m, n)) != ERR_OK) return rc;
        uint64_t v = n ? le(m->p + m->pos, (int)n) : 0;
        if (n && n < 8 && (m->p[m->pos + n - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
        m->pos += n;
        return int_op(m, (int64_t)v);
    }
    case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
        if ((rc = pushnew(m, V_BOOL, &a)) == ERR_OK) m->v[a].i = op == 0x88;
        return rc;
    case 'N': return pushnew(m, V_NONE, NULL);
    case 'q':                           /* BINPUT */
        if ((rc = need(m, 1)) != ERR_OK) return rc;
        return memo_put(m, m->p[m->pos++]);
    case 'r':                           /* LONG_BINPUT */
        if ((rc = need(m, 4)) != ERR_OK) return rc;
        m->pos += 4;
        return memo_put(m, le(m->p + m->pos - 4, 4));
    case 0x94: return memo_put(m, m->memo_set); /* MEMOIZE: the next index, len(memo) */
    case 'h':                           /* BINGET */
        if ((rc = need(m, 1)) != ERR_OK) return rc;
        return memo_get(m, m->p[m->pos++]);
    case 'j':                           /* LONG_BINGET */
        if ((rc = need(m, 4)) != ERR_OK) return rc;
        m->pos += 4;
        return memo_get(m, le(m->p + m->pos - 4, 4));
    case 'Q': return persid(m);         /* BINPERSID */
    case 'R': return reduce(m);         /* REDUCE */
    case 'b':                           /* BUILD: only a dict's state (the state dict's _metadata), ignored */
        if ((rc = pop(m, &a)) != ERR_OK || (rc = top(m, &c)) != ERR_OK) return rc;
        if (m->v[c].kind != V_DICT) return fail(m, ERR_UNSUPPORTED, "BUILD on something that is not a dict");
        return ERR_OK;
    case '.':                           /* STOP */
        *done = 1;
        return ERR_OK;
    default: break;
    }
    return fail(m, ERR_UNSUPPORTED, "opcode not allowed in a torch state dict");
}

err pt__pickle_load(const unsigned char *p, size_t len, const char *file, pt__rec **recs, size_t *nrecs, errbuf *eb) {
    *recs = NULL, *nrecs = 0;
    vm m;
    memset(&m, 0, sizeof(m));
    m.p = p, m.len = len, m.file = file, m.eb = eb;
    int done = 0;
    err rc = ERR_OK;
    while (!done && rc == ERR_OK) rc = step(&m, &done);
    uint32_t root = 0;
    if (rc == ERR_OK) {
        m.op_at = m.pos ? m.pos - 1 : 0;
        if (m.sp != 1 || m.nmarks) rc = fail(&m, ERR_FORMAT, "STOP with other than one value on the stack");
        else if (m.v[root = m.stack[0]].kind != V_DICT)
            rc = fail(&m, ERR_FORMAT, "the pickle is not a dict of tensors (a state dict)");
    }
    pt__rec *out = NULL;
    size_t n = 0;
    if (rc == ERR_OK) {
        const pval *d = &m.v[root];
        out = xmalloc_array(d->n / 2 ? d->n / 2 : 1, sizeof(*out));
        if (!out) rc = nomem(&m);
        for (size_t i = 0; rc == ERR_OK && i + 1 < d->n; i += 2) {
            const pval *k = &m.v[d->items[i]], *v = &m.v[d->items[i + 1]];
            if (k->kind != V_STR) {
                rc = fail(&m, ERR_FORMAT, "a state dict key is not a string");
            } else if (v->kind != V_TENSOR) {
                char what[160];
                snprintf(what, sizeof(what), "state dict entry '%.*s' is not a tensor",
                         (int)(k->slen > 100 ? 100 : k->slen), k->s);
                rc = fail(&m, ERR_FORMAT, what);
            } else {
                out[n] = m.recs[v->i];
                out[n].name = k->s, out[n].name_len = k->slen;
                n++;
            }
        }
    }
    for (size_t i = 0; i < m.nv; i++) xfree(m.v[i].items);
    xfree(m.v);
    xfree(m.stack);
    xfree(m.memo);
    xfree(m.recs);
    if (rc != ERR_OK) {
        xfree(out);
        return rc;
    }
    *recs = out, *nrecs = n;
    return ERR_OK;
}
