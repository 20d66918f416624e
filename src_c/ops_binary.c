/* ops_binary.c -- broadcasting binary ops (arithmetic, minimum/maximum,
 * comparisons, where), the tensor-scalar ops, and the strided elementwise
 * iterator that ops_unary.c and ops_inplace.c share.
 *
 * Kernels are "row functions": one call handles one innermost row of the
 * (coalesced) iteration space with per-operand element strides, so the
 * dtype / op dispatch happens once per row, never per element. After
 * coalescing, a contiguous same-shape op or a tensor-with-one-element op is a
 * single row, and the row functions have branch-free flat loops for those
 * cases that the compiler can vectorise. */
/* The row loops below are written to be vectorised. GCC's -O2 cost model
 * ("very-cheap") vectorises almost none of them, and with trapping math it
 * will not turn float ternaries (relu, clamp, NaN-aware max) into vector
 * selects, so the elementwise files ask for both themselves instead of
 * depending on the build's flags (the library never enables FP traps).
 * Placed before the includes so header inlines get the same options
 * (mismatched options block inlining). Vector sqrt also needs
 * -fno-math-errno, which only works on the command line. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif
#include <stdio.h>

#include "cg_internal.h"
#include "cg_formula.h"

/* ------------------------------------------------------------- iterator
 * Defined here, declared in cg_internal.h; ops_unary.c and ops_inplace.c
 * use it too. */
void cg__iter_init(cg__iter *it, int ndim, const int64_t *shape, int nops,
                   int64_t (*strides)[CG_MAX_DIMS]) {
    /* Built innermost-first into rs / rst, then reversed. */
    int64_t rs[CG_MAX_DIMS];
    int64_t rst[CG_ITER_MAX_OPS][CG_MAX_DIMS];
    int m = 0;
    for (int d = ndim - 1; d >= 0; --d) {
        int64_t n = shape[d];
        if (n == 1) continue;
        if (m > 0) {
            int merge = 1;
            for (int k = 0; k < nops; ++k)
                if (strides[k][d] != rst[k][m - 1] * rs[m - 1]) {
                    merge = 0;
                    break;
                }
            if (merge) {
                rs[m - 1] *= n;
                continue;
            }
        }
        rs[m] = n;
        for (int k = 0; k < nops; ++k) rst[k][m] = strides[k][d];
        ++m;
    }
    if (m == 0) { /* one element (0-d or all dims 1) */
        rs[0] = 1;
        for (int k = 0; k < nops; ++k) rst[k][0] = 1;
        m = 1;
    }
    it->ndim = m;
    it->nops = nops;
    for (int i = 0; i < m; ++i) {
        it->shape[i] = rs[m - 1 - i];
        for (int k = 0; k < nops; ++k) it->st[k][i] = rst[k][m - 1 - i];
    }
}

void cg__iter_run(const cg__iter *it, char *const *base, const size_t *elsize, cg__row_fn fn,
                  const double *prm) {
    const int nd = it->ndim, nops = it->nops;
    const int64_t n = it->shape[nd - 1];
    int64_t s[CG_ITER_MAX_OPS], off[CG_ITER_MAX_OPS] = {0};
    char *p[CG_ITER_MAX_OPS];
    for (int k = 0; k < nops; ++k) s[k] = it->st[k][nd - 1];
    if (nd == 1) {
        fn(n, base, s, prm);
        return;
    }
    int64_t idx[CG_MAX_DIMS] = {0};
    for (;;) {
        for (int k = 0; k < nops; ++k) p[k] = base[k] + off[k] * (int64_t)elsize[k];
        fn(n, p, s, prm);
        int d = nd - 2;
        for (; d >= 0; --d) {
            if (++idx[d] < it->shape[d]) {
                for (int k = 0; k < nops; ++k) off[k] += it->st[k][d];
                break;
            }
            for (int k = 0; k < nops; ++k) off[k] -= it->st[k][d] * (it->shape[d] - 1);
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

cg_status cg__cast_tmp(cg_tensor *t, cg_dtype dtype, cg_tensor **out) {
    if (t->layout) return cg__sparse_refused("cast", "t");
    if (t->dtype == dtype) {
        cg_tensor_retain(t);
        *out = t;
        return CG_OK;
    }
    cg_tensor *c;
    CG_TRY(cg__new_on(cg__dev(t), dtype, t->ndim, t->shape, 0, &c));
    cg_status st = cg__copy_elems(c, t);
    if (st) {
        cg_tensor_free(c);
        return st;
    }
    *out = c;
    return CG_OK;
}

/* The device form of map1 / map2: out allocated on the device, then kernel
 * k on (out, inputs...) with the 4 kernel parameters. */
static cg_status map_device(int dev, const char *k, int n_in, cg_tensor *const *ins, cg_dtype odt,
                            int nd, const int64_t *shape, const double *prm, cg_tensor **out) {
    static const double noprm[4] = {0, 0, 0, 0};
    cg_tensor *r;
    CG_TRY(cg__new_on(dev, odt, nd, shape, 0, &r));
    cg_tensor *ts[CG_ITER_MAX_OPS] = {r};
    for (int i = 0; i < n_in; ++i) ts[1 + i] = ins[i];
    cg_status st = r->numel ? cg__kernel(dev, k, 1, 1 + n_in, ts, 4, prm ? prm : noprm, 0, NULL) : CG_OK;
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

cg_status cg__map1(const char *k, cg_tensor *a, cg_dtype cdt, cg_dtype odt, cg__row_fn row,
                   const double *prm, cg_tensor **out) {
    cg_tensor *ca, *r;
    CG_TRY(cg__cast_tmp(a, cdt, &ca));
    cg_status st;
    if (cg__dev(a)) {
        st = map_device(cg__dev(a), k, 1, &ca, odt, a->ndim, a->shape, prm, out);
        cg_tensor_free(ca);
        return st;
    }
    st = cg__new(odt, a->ndim, a->shape, 0, &r);
    if (st) {
        cg_tensor_free(ca);
        return st;
    }
    if (r->numel) {
        int64_t strides[2][CG_MAX_DIMS];
        memcpy(strides[0], r->strides, sizeof r->strides);
        memcpy(strides[1], ca->strides, sizeof ca->strides);
        cg__iter it;
        cg__iter_init(&it, r->ndim, r->shape, 2, strides);
        char *base[2] = {(char *)cg__ptr(r), (char *)cg__ptr(ca)};
        size_t es[2] = {cg_dtype_size(odt), cg_dtype_size(cdt)};
        cg__iter_run(&it, base, es, row, prm);
    }
    cg_tensor_free(ca);
    *out = r;
    return CG_OK;
}

cg_status cg__map2(const char *fn, const char *k, cg_tensor *a, cg_tensor *b, cg_dtype cdt,
                   cg_dtype odt, cg__row_fn row, const double *prm, cg_tensor **out) {
    int nd, dev;
    int64_t shape[CG_MAX_DIMS];
    cg_tensor *ab[2] = {a, b};
    CG_TRY(cg__same_device(fn, 2, ab, &dev));
    CG_TRY(cg__broadcast_shapes(fn, a->ndim, a->shape, b->ndim, b->shape, &nd, shape));
    cg_tensor *ca = NULL, *cb = NULL, *r = NULL;
    cg_status st = cg__cast_tmp(a, cdt, &ca);
    if (!st) st = cg__cast_tmp(b, cdt, &cb);
    if (!st && dev) {
        cg_tensor *ins[2] = {ca, cb};
        st = map_device(dev, k, 2, ins, odt, nd, shape, prm, out);
        cg_tensor_free(ca);
        cg_tensor_free(cb);
        return st;
    }
    if (!st) st = cg__new(odt, nd, shape, 0, &r);
    if (st) {
        cg_tensor_free(ca);
        cg_tensor_free(cb);
        return st;
    }
    if (r->numel) {
        int64_t strides[3][CG_MAX_DIMS];
        memcpy(strides[0], r->strides, sizeof r->strides);
        cg__broadcast_strides(ca, nd, shape, strides[1]);
        cg__broadcast_strides(cb, nd, shape, strides[2]);
        cg__iter it;
        cg__iter_init(&it, nd, shape, 3, strides);
        char *base[3] = {(char *)cg__ptr(r), (char *)cg__ptr(ca), (char *)cg__ptr(cb)};
        size_t es[3] = {cg_dtype_size(odt), cg_dtype_size(cdt), cg_dtype_size(cdt)};
        cg__iter_run(&it, base, es, row, prm);
    }
    cg_tensor_free(ca);
    cg_tensor_free(cb);
    *out = r;
    return CG_OK;
}

/* --------------------------------------------------------------- kernels */
/* o = EXPR(x, y). The first three branches are the coalesced fast paths:
 * all contiguous, x a single broadcast value, y a single broadcast value. */
#define BIN_ROW(NAME, T, TO, EXPR)                                                     \
    static void NAME(int64_t n, char *const *p, const int64_t *s, const double *prm) { \
        (void)prm;                                                                     \
        TO *restrict o = (TO *)p[0];                                                   \
        const T *a = (const T *)p[1];                                                  \
        const T *b = (const T *)p[2];                                                  \
        const int64_t so = s[0], sa = s[1], sb = s[2];                                 \
        if (so == 1 && sa == 1 && sb == 1) {                                           \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = a[i], y = b[i];                                            \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else if (so == 1 && sa == 0 && sb == 1) {                                    \
            const T x = a[0];                                                          \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T y = b[i];                                                      \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else if (so == 1 && sa == 1 && sb == 0) {                                    \
            const T y = b[0];                                                          \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = a[i];                                                      \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else {                                                                       \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = a[i * sa], y = b[i * sb];                                  \
                o[i * so] = (EXPR);                                                    \
            }                                                                          \
        }                                                                              \
    }

/* Same dtype in and out for f32 / f64 (EF) and int64 (EI). */
#define BIN_ROWS3(NAME, EF, EI)                   \
    BIN_ROW(NAME##_f32, float, float, EF)         \
    BIN_ROW(NAME##_f64, double, double, EF)       \
    BIN_ROW(NAME##_i64, int64_t, int64_t, EI)

/* Comparisons: bool (1 byte) out. */
#define CMP_ROWS(NAME, EXPR)                               \
    BIN_ROW(NAME##_f32, float, unsigned char, EXPR)        \
    BIN_ROW(NAME##_f64, double, unsigned char, EXPR)       \
    BIN_ROW(NAME##_i64, int64_t, unsigned char, EXPR)

/* Integer arithmetic wraps (two's complement) like PyTorch instead of being
 * undefined behaviour on overflow. */
#define WRAP(op) (int64_t)((uint64_t)x op (uint64_t)y)

static inline int64_t ipow_i64(int64_t x, int64_t e) {
    if (e < 0) return x == 1 ? 1 : (x == -1 ? ((e & 1) ? -1 : 1) : 0);
    uint64_t r = 1, b = (uint64_t)x;
    while (e) {
        if (e & 1) r *= b;
        b *= b;
        e >>= 1;
    }
    return (int64_t)r;
}

BIN_ROWS3(add, x + y, WRAP(+))
BIN_ROWS3(sub, x - y, WRAP(-))
BIN_ROWS3(mul, x * y, WRAP(*))
BIN_ROW(div_f32, float, float, x / y)
BIN_ROW(div_f64, double, double, x / y)
BIN_ROW(pow_f32, float, float, powf(x, y))
BIN_ROW(pow_f64, double, double, pow(x, y))
BIN_ROW(pow_i64, int64_t, int64_t, ipow_i64(x, y))
/* NaN in either operand propagates (x != x only for NaN). */
BIN_ROWS3(minimum, (x < y || x != x) ? x : y, x < y ? x : y)
BIN_ROWS3(maximum, (x > y || x != x) ? x : y, x > y ? x : y)
/* Share of the gradient that goes to x; ties split evenly (PyTorch). */
BIN_ROW(maxw_f32, float, float, (x > y || x != x) ? 1.0f : (x == y ? 0.5f : 0.0f))
BIN_ROW(maxw_f64, double, double, (x > y || x != x) ? 1.0 : (x == y ? 0.5 : 0.0))
BIN_ROW(minw_f32, float, float, (x < y || x != x) ? 1.0f : (x == y ? 0.5f : 0.0f))
BIN_ROW(minw_f64, double, double, (x < y || x != x) ? 1.0 : (x == y ? 0.5 : 0.0))
CMP_ROWS(eq, x == y)
CMP_ROWS(ne, x != y)
CMP_ROWS(lt, x < y)
CMP_ROWS(le, x <= y)
CMP_ROWS(gt, x > y)
CMP_ROWS(ge, x >= y)

/* o = c ? x : y with cond c a bool (1 byte) operand. */
#define WHERE_ROW(NAME, T)                                                             \
    static void NAME(int64_t n, char *const *p, const int64_t *s, const double *prm) { \
        (void)prm;                                                                     \
        T *restrict o = (T *)p[0];                                                     \
        const unsigned char *c = (const unsigned char *)p[1];                          \
        const T *a = (const T *)p[2];                                                  \
        const T *b = (const T *)p[3];                                                  \
        const int64_t so = s[0], sc = s[1], sa = s[2], sb = s[3];                      \
        if (so == 1 && sc == 1 && sa == 1 && sb == 1) {                                \
            for (int64_t i = 0; i < n; ++i) o[i] = c[i] ? a[i] : b[i];                 \
        } else if (so == 1 && sc == 1 && sa == 1 && sb == 0) {                         \
            const T y = b[0];                                                          \
            for (int64_t i = 0; i < n; ++i) o[i] = c[i] ? a[i] : y;                    \
        } else if (so == 1 && sc == 1 && sa == 0 && sb == 1) {                         \
            const T x = a[0];                                                          \
            for (int64_t i = 0; i < n; ++i) o[i] = c[i] ? x : b[i];                    \
        } else {                                                                       \
            for (int64_t i = 0; i < n; ++i)                                            \
                o[i * so] = c[i * sc] ? a[i * sa] : b[i * sb];                         \
        }                                                                              \
    }
WHERE_ROW(where_f32, float)
WHERE_ROW(where_f64, double)
WHERE_ROW(where_i64, int64_t)
WHERE_ROW(where_u8, unsigned char)

/* o = EXPR(x) with the scalar c = prm[0] (converted once per row). */
#define SCAL_ROW(NAME, T, EXPR)                                                        \
    static void NAME(int64_t n, char *const *p, const int64_t *s, const double *prm) { \
        T *restrict o = (T *)p[0];                                                     \
        const T *a = (const T *)p[1];                                                  \
        const T c = CG_FROM_DOUBLE(T, prm[0]);                                         \
        (void)c;                                                                       \
        const int64_t so = s[0], sa = s[1];                                            \
        if (so == 1 && sa == 1) {                                                      \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = a[i];                                                      \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else {                                                                       \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = a[i * sa];                                                 \
                o[i * so] = (EXPR);                                                    \
            }                                                                          \
        }                                                                              \
    }
#define SCAL_ROWS_F(NAME, EF, ED)           \
    SCAL_ROW(NAME##_f32, float, EF)         \
    SCAL_ROW(NAME##_f64, double, ED)

SCAL_ROWS_F(adds, x + c, x + c)
SCAL_ROW(adds_i64, int64_t, (int64_t)((uint64_t)x + (uint64_t)c))
SCAL_ROWS_F(muls, x * c, x * c)
SCAL_ROW(muls_i64, int64_t, (int64_t)((uint64_t)x * (uint64_t)c))
/* pow by a scalar: common exponents get exact / cheaper kernels. */
SCAL_ROWS_F(pows, powf(x, c), pow(x, c))
SCAL_ROW(pows_i64, int64_t, ipow_i64(x, c))
SCAL_ROWS_F(pow_sq, x * x, x * x)
SCAL_ROWS_F(pow_cube, x * x * x, x * x * x)
SCAL_ROWS_F(pow_sqrt, sqrtf(x), sqrt(x))
SCAL_ROWS_F(pow_rsqrt, 1.0f / sqrtf(x), 1.0 / sqrt(x))
SCAL_ROWS_F(pow_recip, 1.0f / x, 1.0 / x)
SCAL_ROWS_F(pow_one, ((void)x, 1.0f), ((void)x, 1.0)) /* pow(x, 0) == 1 even for NaN */
SCAL_ROWS_F(pow_id, x, x)

static cg__row_fn pick(cg_dtype d, cg__row_fn f32, cg__row_fn f64, cg__row_fn i64) {
    switch (d) {
    case CG_FLOAT32: return f32;
    case CG_FLOAT16: return f32; /* device only (host float16 is refused): a stand-in for the checks */
    case CG_FLOAT64: return f64;
    case CG_INT64: return i64;
    default: return NULL;
    }
}

/* ------------------------------------------------------ backward helpers */
/* iparam layout: per input i, CG_META_LEN entries: ndim, dtype, shape. */
#define CG_META_LEN (2 + CG_MAX_DIMS)

static void put_meta(cg_node *n, int i, const cg_tensor *t) {
    int64_t *m = n->iparam + i * CG_META_LEN;
    m[0] = t->ndim;
    m[1] = (int64_t)t->dtype;
    for (int d = 0; d < t->ndim; ++d) m[2 + d] = t->shape[d];
    if (n->n_iparam < (i + 1) * CG_META_LEN) n->n_iparam = (i + 1) * CG_META_LEN;
}

/* g (output-shaped, borrowed) -> new ref with input i's shape and dtype:
 * summed over broadcast dims, then cast. */
static cg_status to_input(cg_node *n, int i, cg_tensor *g, cg_tensor **out) {
    const int64_t *m = n->iparam + i * CG_META_LEN;
    int nd = (int)m[0];
    cg_dtype dt = (cg_dtype)m[1];
    const int64_t *shape = m + 2;
    int same = g->ndim == nd;
    for (int d = 0; same && d < nd; ++d) same = g->shape[d] == shape[d];
    cg_tensor *t = g;
    cg_tensor_retain(t);
    if (!same) {
        cg_tensor *s;
        cg_status st = cg_sum_to_shape(t, nd, shape, &s);
        cg_tensor_free(t);
        if (st) return st;
        t = s;
    }
    if (t->dtype != dt) {
        cg_tensor *c;
        cg_status st = cg_to_dtype(t, dt, &c);
        cg_tensor_free(t);
        if (st) return st;
        t = c;
    }
    *out = t;
    return CG_OK;
}

/* Records a binary op with input metadata; save: 0 nothing, 1 a and b,
 * 2 only what mul's cross terms need (b for a's grad, a for b's). */
static cg_status record2(const cg_op *op, cg_tensor *a, cg_tensor *b, cg_tensor *r, int save) {
    cg_tensor *ins[2] = {a, b};
    cg_node *node;
    CG_TRY(cg__record(op, 2, ins, 1, &r, &node));
    put_meta(node, 0, a);
    put_meta(node, 1, b);
    cg_status st = CG_OK;
    if (save == 1) {
        st = cg__save(node, a);
        if (!st) st = cg__save(node, b);
    } else if (save == 2) {
        st = cg__save(node, node->needs_grad[1] ? a : NULL);
        if (!st) st = cg__save(node, node->needs_grad[0] ? b : NULL);
    }
    return st;
}

/* ------------------------------------------------------------- backward */
static cg_status add_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    if (node->needs_grad[0]) CG_TRY(to_input(node, 0, gout[0], &gin[0]));
    if (node->needs_grad[1]) CG_TRY(to_input(node, 1, gout[0], &gin[1]));
    return CG_OK;
}

static cg_status sub_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    if (node->needs_grad[0]) CG_TRY(to_input(node, 0, gout[0], &gin[0]));
    if (node->needs_grad[1]) {
        cg_tensor *t;
        CG_TRY(to_input(node, 1, gout[0], &t));
        cg_status st = cg_neg(t, &gin[1]);
        cg_tensor_free(t);
        return st;
    }
    return CG_OK;
}

/* gin[i] = to_input(i, f(x, y)). */
static cg_status grad_of(cg_node *node, int i, bin_api f, cg_tensor *x, cg_tensor *y,
                         cg_tensor **gin) {
    cg_tensor *t;
    CG_TRY(f(x, y, &t));
    cg_status st = to_input(node, i, t, &gin[i]);
    cg_tensor_free(t);
    return st;
}

static cg_status mul_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *g = gout[0], *a = NULL, *b = NULL;
    cg_status st = CG_OK;
    if (node->needs_grad[0]) {
        st = cg__saved(node, 1, &b);
        if (!st) st = grad_of(node, 0, cg_mul, g, b, gin);
    }
    if (!st && node->needs_grad[1]) {
        st = cg__saved(node, 0, &a);
        if (!st) st = grad_of(node, 1, cg_mul, g, a, gin);
    }
    cg_tensor_free(a);
    cg_tensor_free(b);
    return st;
}

static cg_status div_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *a = NULL, *b = NULL, *q = NULL, *ab = NULL, *t = NULL, *u = NULL;
    cg_status st = cg__saved(node, 1, &b);
    if (!st) st = cg_div(gout[0], b, &q); /* g / b */
    if (!st && node->needs_grad[0]) st = to_input(node, 0, q, &gin[0]);
    if (!st && node->needs_grad[1]) {
        /* -g a / b^2 = -(g / b) * (a / b) */
        st = cg__saved(node, 0, &a);
        if (!st) st = cg_div(a, b, &ab);
        if (!st) st = cg_mul(q, ab, &t);
        if (!st) st = to_input(node, 1, t, &u);
        if (!st) st = cg_neg(u, &gin[1]);
    }
    cg_tensor_free(a);
    cg_tensor_free(b);
    cg_tensor_free(q);
    cg_tensor_free(ab);
    cg_tensor_free(t);
    cg_tensor_free(u);
    return st;
}

static cg_status pow_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    arena A = {{0}, 0, CG_OK};
    cg_tensor *g = gout[0], *a = NULL, *b = NULL, *r = NULL;
    A.st = cg__saved(node, 0, &a);
    if (!A.st) A.st = cg__saved(node, 1, &b);
    cg_tensor *zero = NULL;
    if (!A.st) {
        cg_status st = cg__scalar_like(g, g->dtype, 0.0, &r);
        zero = keep(&A, st, r);
    }
    if (!A.st && node->needs_grad[0]) {
        /* where(b == 0, 0, g * b * a^(b-1)): the mask avoids 0 * inf at a == 0. */
        cg_status st = cg_add_scalar(b, -1.0, &r);
        cg_tensor *bm1 = keep(&A, st, r);
        cg_tensor *t = A2(&A, cg_mul, b, A2(&A, cg_pow, a, bm1));
        cg_tensor *gt = A2(&A, cg_mul, g, t);
        cg_tensor *w = AW(&A, A2(&A, cg_eq, b, zero), zero, gt);
        if (!A.st) A.st = to_input(node, 0, w, &gin[0]);
    }
    if (!A.st && node->needs_grad[1]) {
        /* g * a^b * log(a), 0 where a == 0 and b >= 0 (PyTorch). */
        cg_tensor *af = a;
        if (!cg__is_float(a->dtype)) {
            cg_status st = cg_to_dtype(a, g->dtype, &r);
            af = keep(&A, st, r);
        }
        cg_tensor *t = A2(&A, cg_mul, A2(&A, cg_pow, af, b), A1(&A, cg_log, af));
        cg_tensor *gt = A2(&A, cg_mul, g, t);
        cg_tensor *m = A2(&A, cg_mul, A2(&A, cg_eq, af, zero), A2(&A, cg_ge, b, zero));
        cg_tensor *w = AW(&A, m, zero, gt);
        if (!A.st) A.st = to_input(node, 1, w, &gin[1]);
    }
    cg_status st = arena_done(&A, NULL, NULL);
    cg_tensor_free(a);
    cg_tensor_free(b);
    return st;
}

/* minimum / maximum: the gradient goes to the selected input, split evenly
 * on ties. The share w is piecewise constant in a and b, so computing it
 * with a plain kernel keeps higher derivatives correct. */
static cg_status minmax_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin,
                                 cg__row_fn w32, cg__row_fn w64) {
    cg_tensor *g = gout[0], *a = NULL, *b = NULL, *w = NULL, *gw = NULL, *rest = NULL;
    cg_status st = cg__saved(node, 0, &a);
    if (!st) st = cg__saved(node, 1, &b);
    if (!st)
        st = cg__map2(cg__node_name(node), w32 == maxw_f32 ? "maximum_weight" : "minimum_weight", a, b,
                      g->dtype, g->dtype, g->dtype == CG_FLOAT32 ? w32 : w64, NULL, &w);
    if (!st) st = cg_mul(g, w, &gw);
    if (!st && node->needs_grad[0]) st = to_input(node, 0, gw, &gin[0]);
    if (!st && node->needs_grad[1]) {
        st = cg_sub(g, gw, &rest);
        if (!st) st = to_input(node, 1, rest, &gin[1]);
    }
    cg_tensor_free(a);
    cg_tensor_free(b);
    cg_tensor_free(w);
    cg_tensor_free(gw);
    cg_tensor_free(rest);
    return st;
}
static cg_status maximum_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return minmax_backward(node, gout, gin, maxw_f32, maxw_f64);
}
static cg_status minimum_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return minmax_backward(node, gout, gin, minw_f32, minw_f64);
}

static cg_status where_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *g = gout[0], *cond = NULL, *zero = NULL, *t = NULL;
    cg_status st = cg__saved(node, 0, &cond);
    if (!st) st = cg__scalar_like(g, g->dtype, 0.0, &zero);
    if (!st && node->needs_grad[1]) {
        st = cg_where(cond, g, zero, &t);
        if (!st) st = to_input(node, 1, t, &gin[1]);
        cg_tensor_free(t);
        t = NULL;
    }
    if (!st && node->needs_grad[2]) {
        st = cg_where(cond, zero, g, &t);
        if (!st) st = to_input(node, 2, t, &gin[2]);
        cg_tensor_free(t);
    }
    cg_tensor_free(cond);
    cg_tensor_free(zero);
    return st;
}

static cg_status add_scalar_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor_retain(gout[0]);
    gin[0] = gout[0];
    return CG_OK;
}

static cg_status mul_scalar_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return cg_mul_scalar(gout[0], node->fparam[0], &gin[0]);
}

static cg_status pow_scalar_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    double p = node->fparam[0];
    cg_tensor *g = gout[0];
    if (p == 0.0) {
        const cg_out_meta *m = &node->out_meta[0];
        return cg__new_on(m->device, m->dtype, m->ndim, m->shape, 1, &gin[0]);
    }
    if (p == 1.0) {
        cg_tensor_retain(g);
        gin[0] = g;
        return CG_OK;
    }
    cg_tensor *a = NULL, *t = NULL, *u = NULL;
    cg_status st = cg__saved(node, 0, &a);
    if (p == 2.0) { /* 2 g a */
        if (!st) st = cg_mul(g, a, &t);
        if (!st) st = cg_mul_scalar(t, 2.0, &gin[0]);
    } else { /* g * (p * a^(p-1)) */
        if (!st) st = cg_pow_scalar(a, p - 1.0, &t);
        if (!st) st = cg_mul_scalar(t, p, &u);
        if (!st) st = cg_mul(g, u, &gin[0]);
    }
    cg_tensor_free(a);
    cg_tensor_free(t);
    cg_tensor_free(u);
    return st;
}

static const cg_op OP_ADD = {"add", add_backward};
static const cg_op OP_SUB = {"sub", sub_backward};
static const cg_op OP_MUL = {"mul", mul_backward};
static const cg_op OP_DIV = {"div", div_backward};
static const cg_op OP_POW = {"pow", pow_backward};
static const cg_op OP_MINIMUM = {"minimum", minimum_backward};
static const cg_op OP_MAXIMUM = {"maximum", maximum_backward};
static const cg_op OP_WHERE = {"where", where_backward};
static const cg_op OP_ADD_SCALAR = {"add_scalar", add_scalar_backward};
static const cg_op OP_MUL_SCALAR = {"mul_scalar", mul_scalar_backward};
static const cg_op OP_POW_SCALAR = {"pow_scalar", pow_scalar_backward};

/* ------------------------------------------------------------- forwards */
typedef struct bin_def {
    const char *fn;
    const cg_op *op;
    cg__row_fn f32, f64, i64;
    int ints_to_float; /* true division: integer inputs give float32 */
    int bool_ok;       /* bool x bool: computed in int64, result cast to bool */
    int save;          /* see record2 */
} bin_def;

static const bin_def DEF_ADD = {"cg_add", &OP_ADD, add_f32, add_f64, add_i64, 0, 1, 0};
static const bin_def DEF_SUB = {"cg_sub", &OP_SUB, sub_f32, sub_f64, sub_i64, 0, 0, 0};
static const bin_def DEF_MUL = {"cg_mul", &OP_MUL, mul_f32, mul_f64, mul_i64, 0, 1, 2};
static const bin_def DEF_DIV = {"cg_div", &OP_DIV, div_f32, div_f64, NULL, 1, 0, 1};
static const bin_def DEF_POW = {"cg_pow", &OP_POW, pow_f32, pow_f64, pow_i64, 0, 0, 1};
static const bin_def DEF_MINIMUM = {"cg_minimum", &OP_MINIMUM, minimum_f32, minimum_f64,
                                    minimum_i64, 0, 1, 1};
static const bin_def DEF_MAXIMUM = {"cg_maximum", &OP_MAXIMUM, maximum_f32, maximum_f64,
                                    maximum_i64, 0, 1, 1};

static cg_status binary(const bin_def *def, cg_tensor *a, cg_tensor *b, cg_tensor **out) {
    cg_dtype cdt = cg__promote(a->dtype, b->dtype);
    int to_bool = 0;
    if (!cg__is_float(cdt)) {
        if (def->ints_to_float) {
            cdt = CG_FLOAT32;
        } else if (cdt == CG_BOOL) {
            if (!def->bool_ok)
                return cg__err(CG_ERR_DTYPE, "%s: not supported for two bool tensors", def->fn);
            cdt = CG_INT64;
            to_bool = 1;
        }
    }
    cg__row_fn row = pick(cdt, def->f32, def->f64, def->i64);
    if (!row)
        return cg__err(CG_ERR_DTYPE, "%s: not supported for dtypes %s and %s", def->fn,
                       cg_dtype_name(a->dtype), cg_dtype_name(b->dtype));
    cg_tensor *r;
    CG_TRY(cg__map2(def->fn, def->fn + 3, a, b, cdt, cdt, row, NULL, &r));
    if (to_bool) { /* bool results never carry gradients */
        cg_tensor *c;
        cg_status st = cg__cast_tmp(r, CG_BOOL, &c);
        cg_tensor_free(r);
        if (st) return st;
        *out = c;
        return CG_OK;
    }
    if (cg__wants_grad2(a, b)) {
        cg_status st = record2(def->op, a, b, r, def->save);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    }
    *out = r;
    return CG_OK;
}

#define BINARY_API(NAME, DEF)                                       \
    cg_status NAME(cg_tensor *a, cg_tensor *b, cg_tensor **out) {   \
        CG_CHECK_OUT(out);                                          \
        CG_CHECK_TD(a);                                              \
        CG_CHECK_TD(b);                                              \
        return binary(&DEF, a, b, out);                             \
    }
BINARY_API(cg_add, DEF_ADD)
BINARY_API(cg_sub, DEF_SUB)
BINARY_API(cg_mul, DEF_MUL)
BINARY_API(cg_div, DEF_DIV)
BINARY_API(cg_pow, DEF_POW)
BINARY_API(cg_minimum, DEF_MINIMUM)
BINARY_API(cg_maximum, DEF_MAXIMUM)

/* Comparisons: compared in the promoted dtype (bools as int64), bool out,
 * never recorded. */
static cg_status compare(const char *fn, cg__row_fn f32, cg__row_fn f64, cg__row_fn i64,
                         cg_tensor *a, cg_tensor *b, cg_tensor **out) {
    cg_dtype cdt = cg__promote(a->dtype, b->dtype);
    if (cdt == CG_BOOL) cdt = CG_INT64;
    return cg__map2(fn, fn + 3, a, b, cdt, CG_BOOL, pick(cdt, f32, f64, i64), NULL, out);
}

#define COMPARE_API(NAME, K)                                                        \
    cg_status cg_##NAME(cg_tensor *a, cg_tensor *b, cg_tensor **out) {              \
        CG_CHECK_OUT(out);                                                          \
        CG_CHECK_TD(a);                                                              \
        CG_CHECK_TD(b);                                                              \
        return compare("cg_" #NAME, K##_f32, K##_f64, K##_i64, a, b, out);          \
    }
COMPARE_API(eq, eq)
COMPARE_API(ne, ne)
COMPARE_API(lt, lt)
COMPARE_API(le, le)
COMPARE_API(gt, gt)
COMPARE_API(ge, ge)

cg_status cg_where(cg_tensor *cond, cg_tensor *a, cg_tensor *b, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(cond);
    CG_CHECK_TD(a);
    CG_CHECK_TD(b);
    if (cond->dtype != CG_BOOL)
        return cg__err(CG_ERR_DTYPE, "cg_where: condition must be a bool tensor, got %s",
                       cg_dtype_name(cond->dtype));
    int n1, nd;
    int64_t s1[CG_MAX_DIMS], shape[CG_MAX_DIMS];
    CG_TRY(cg__broadcast_shapes("cg_where", cond->ndim, cond->shape, a->ndim, a->shape, &n1, s1));
    CG_TRY(cg__broadcast_shapes("cg_where", n1, s1, b->ndim, b->shape, &nd, shape));
    cg_dtype dt = cg__promote(a->dtype, b->dtype);
    int dev;
    cg_tensor *all[3] = {cond, a, b};
    CG_TRY(cg__same_device("cg_where", 3, all, &dev));
    cg_tensor *ca = NULL, *cb = NULL, *r = NULL;
    cg_status st = cg__cast_tmp(a, dt, &ca);
    if (!st) st = cg__cast_tmp(b, dt, &cb);
    if (!st) st = cg__new_on(dev, dt, nd, shape, 0, &r);
    if (!st && r->numel && dev) {
        cg_tensor *ts[4] = {r, cond, ca, cb};
        st = cg__kernel(dev, "where", 1, 4, ts, 0, NULL, 0, NULL);
    } else if (!st && r->numel) {
        int64_t strides[4][CG_MAX_DIMS];
        memcpy(strides[0], r->strides, sizeof r->strides);
        cg__broadcast_strides(cond, nd, shape, strides[1]);
        cg__broadcast_strides(ca, nd, shape, strides[2]);
        cg__broadcast_strides(cb, nd, shape, strides[3]);
        cg__iter it;
        cg__iter_init(&it, nd, shape, 4, strides);
        char *base[4] = {(char *)cg__ptr(r), (char *)cg__ptr(cond), (char *)cg__ptr(ca),
                         (char *)cg__ptr(cb)};
        size_t es[4] = {cg_dtype_size(dt), 1, cg_dtype_size(dt), cg_dtype_size(dt)};
        cg__row_fn row = dt == CG_BOOL ? where_u8 : pick(dt, where_f32, where_f64, where_i64);
        cg__iter_run(&it, base, es, row, NULL);
    }
    cg_tensor_free(ca);
    cg_tensor_free(cb);
    if (!st && cg__wants_grad2(a, b)) {
        cg_tensor *ins[3] = {cond, a, b};
        cg_node *node;
        st = cg__record(&OP_WHERE, 3, ins, 1, &r, &node);
        if (!st) {
            put_meta(node, 1, a);
            put_meta(node, 2, b);
            st = cg__save(node, cond);
        }
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

/* ---------------------------------------------------------- scalar ops */
static int is_integral(double s) { return s == floor(s) && fabs(s) < 9.2e18; }

/* Result dtype of tensor (op) python-number: floats keep their dtype;
 * integer / bool tensors stay int64 for an integral scalar, else float32. */
static cg_dtype scalar_dtype(cg_dtype a, double s) {
    if (cg__is_float(a)) return a;
    return is_integral(s) ? CG_INT64 : CG_FLOAT32;
}

static cg_status record_scalar(const cg_op *op, cg_tensor *a, cg_tensor *r, double s,
                               int save_a) {
    cg_node *node;
    CG_TRY(cg__record(op, 1, &a, 1, &r, &node));
    node->fparam[0] = s;
    return save_a ? cg__save(node, a) : CG_OK;
}

static cg_status scalar_op(const char *fn, const cg_op *op, cg_tensor *a, double s, cg_dtype dt,
                           cg__row_fn row, int save_a, cg_tensor **out) {
    if (!row)
        return cg__err(CG_ERR_DTYPE, "%s: not supported for dtype %s", fn, cg_dtype_name(a->dtype));
    double prm[1] = {s};
    cg_tensor *r;
    CG_TRY(cg__map1(fn + 3, a, dt, dt, row, prm, &r));
    if (cg__wants_grad1(a)) {
        cg_status st = record_scalar(op, a, r, s, save_a);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    }
    *out = r;
    return CG_OK;
}

cg_status cg_add_scalar(cg_tensor *a, double s, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    cg_dtype dt = scalar_dtype(a->dtype, s);
    return scalar_op("cg_add_scalar", &OP_ADD_SCALAR, a, s, dt, pick(dt, adds_f32, adds_f64, adds_i64),
                     0, out);
}

cg_status cg_mul_scalar(cg_tensor *a, double s, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    cg_dtype dt = scalar_dtype(a->dtype, s);
    return scalar_op("cg_mul_scalar", &OP_MUL_SCALAR, a, s, dt, pick(dt, muls_f32, muls_f64, muls_i64),
                     0, out);
}

cg_status cg_pow_scalar(cg_tensor *a, double p, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    cg_dtype dt = scalar_dtype(a->dtype, p);
    if (dt == CG_INT64 && p < 0)
        return cg__err(CG_ERR_VALUE, "cg_pow_scalar: integers to negative integer powers (%g) are not allowed", p);
    cg__row_fn row;
    if (dt == CG_INT64) row = pows_i64;
    else if (p == 2.0) row = pick(dt, pow_sq_f32, pow_sq_f64, NULL);
    else if (p == 3.0) row = pick(dt, pow_cube_f32, pow_cube_f64, NULL);
    else if (p == 0.5) row = pick(dt, pow_sqrt_f32, pow_sqrt_f64, NULL);
    else if (p == -0.5) row = pick(dt, pow_rsqrt_f32, pow_rsqrt_f64, NULL);
    else if (p == -1.0) row = pick(dt, pow_recip_f32, pow_recip_f64, NULL);
    else if (p == 1.0) row = pick(dt, pow_id_f32, pow_id_f64, NULL);
    else if (p == 0.0) row = pick(dt, pow_one_f32, pow_one_f64, NULL);
    else row = pick(dt, pows_f32, pows_f64, NULL);
    return scalar_op("cg_pow_scalar", &OP_POW_SCALAR, a, p, dt, row, p != 0.0 && p != 1.0, out);
}
