/* test_elementwise.c -- binary, scalar, comparison, where, unary and
 * in-place ops: values against hand-computed numbers, gradients against
 * float64 central differences (cg_gradcheck), second derivatives
 * (gradcheck of a create_graph gradient whose grad_output is itself an
 * input), float32 against float64, int64 / bool paths, broadcasting,
 * non-contiguous views, NaN inputs, version counters and error statuses. */
#include <stdint.h>
#include <stdlib.h>

#include "cgtest.h"

/* ------------------------------------------------------------- helpers */
static cg_tensor *T64(int nd, const int64_t *sh, const double *v) {
    cg_tensor *t = NULL;
    cg_from_data(CG_FLOAT64, nd, sh, v, &t);
    return t;
}
static cg_tensor *T32(int nd, const int64_t *sh, const double *v) {
    int64_t n = 1;
    for (int d = 0; d < nd; ++d) n *= sh[d];
    float *f = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; ++i) f[i] = (float)v[i];
    cg_tensor *t = NULL;
    cg_from_data(CG_FLOAT32, nd, sh, f, &t);
    free(f);
    return t;
}
static cg_tensor *TI(int nd, const int64_t *sh, const int64_t *v) {
    cg_tensor *t = NULL;
    cg_from_data(CG_INT64, nd, sh, v, &t);
    return t;
}
static cg_tensor *TB(int nd, const int64_t *sh, const unsigned char *v) {
    cg_tensor *t = NULL;
    cg_from_data(CG_BOOL, nd, sh, v, &t);
    return t;
}
static cg_tensor *RG(cg_tensor *t) { /* set requires_grad, pass through */
    cg_tensor_set_requires_grad(t, 1);
    return t;
}
/* Positive float64 values in [0.5, 1.5), requires grad (log, sqrt, pow). */
static cg_tensor *pos64(int nd, const int64_t *sh) {
    cg_tensor *u = NULL, *t = NULL;
    cg_rand(CG_FLOAT64, nd, sh, &u);
    cg_add_scalar(u, 0.5, &t);
    cg_tensor_free(u);
    return RG(t);
}

/* All elements as doubles (row-major). Caller frees. */
static double *vals(const cg_tensor *t) {
    int64_t n = cg_tensor_numel(t);
    double *out = (double *)malloc(sizeof(double) * (size_t)(n ? n : 1));
    size_t sz = cg_dtype_size(cg_tensor_dtype(t));
    unsigned char *raw = (unsigned char *)malloc((size_t)(n ? n : 1) * sz);
    cg_tensor_copy_to(t, raw, (size_t)n * sz);
    for (int64_t i = 0; i < n; ++i) {
        switch (cg_tensor_dtype(t)) {
        case CG_FLOAT32: { float f; memcpy(&f, raw + i * 4, 4); out[i] = f; break; }
        case CG_FLOAT64: { double d; memcpy(&d, raw + i * 8, 8); out[i] = d; break; }
        case CG_INT64: { int64_t k; memcpy(&k, raw + i * 8, 8); out[i] = (double)k; break; }
        default: out[i] = raw[i] ? 1.0 : 0.0; break;
        }
    }
    free(raw);
    return out;
}

static int same_num(double g, double w, double tol) {
    if (isnan(w)) return isnan(g);
    if (isinf(w)) return g == w;
    return fabs(g - w) <= tol * (1.0 + fabs(w));
}

/* t has n elements equal to want (NaN matches NaN). */
#define CHECK_VALS(t, n, want, tol) check_vals_((t), (n), (want), (tol), #t, __LINE__)
static void check_vals_(const cg_tensor *t, int64_t n, const double *want, double tol,
                        const char *name, int line) {
    if (!t) {
        ++cgt_failed;
        fprintf(stderr, "%s:%d: FAIL: %s is NULL (%s)\n", __FILE__, line, name, cg_last_error());
        return;
    }
    if (cg_tensor_numel(t) != n) {
        ++cgt_failed;
        fprintf(stderr, "%s:%d: FAIL: %s has %lld elements, want %lld\n", __FILE__, line, name,
                (long long)cg_tensor_numel(t), (long long)n);
        return;
    }
    double *v = vals(t);
    for (int64_t i = 0; i < n; ++i)
        if (!same_num(v[i], want[i], tol)) {
            ++cgt_failed;
            fprintf(stderr, "%s:%d: FAIL: %s[%lld] = %.10g, want %.10g\n", __FILE__, line, name,
                    (long long)i, v[i], want[i]);
            free(v);
            return;
        }
    ++cgt_passed;
    free(v);
}

/* shape and dtype of t */
#define CHECK_META(t, dt, nd, ...) check_meta_((t), (dt), (nd), (const int64_t[]){__VA_ARGS__}, #t, __LINE__)
static void check_meta_(const cg_tensor *t, cg_dtype dt, int nd, const int64_t *sh,
                        const char *name, int line) {
    int ok = t && cg_tensor_dtype(t) == dt && cg_tensor_ndim(t) == nd;
    for (int d = 0; ok && d < nd; ++d) ok = cg_tensor_shape(t)[d] == sh[d];
    if (ok) {
        ++cgt_passed;
    } else {
        ++cgt_failed;
        fprintf(stderr, "%s:%d: FAIL: %s has wrong dtype/shape (dtype %s, ndim %d)\n", __FILE__,
                line, name, t ? cg_dtype_name(cg_tensor_dtype(t)) : "-", t ? cg_tensor_ndim(t) : -1);
    }
}

/* Gradient of sum(op(...)) w.r.t. x after backward, as values. */
static void free_all(int n, cg_tensor **ts) {
    for (int i = 0; i < n; ++i) {
        cg_tensor_free(ts[i]);
        ts[i] = NULL;
    }
}

/* ------------------------------------------------- gradcheck machinery */
typedef cg_status (*un_fn)(cg_tensor *, cg_tensor **);
typedef cg_status (*bin_fn)(cg_tensor *, cg_tensor *, cg_tensor **);
typedef cg_status (*scal_fn)(cg_tensor *, double, cg_tensor **);
enum { K_UN, K_BIN, K_SCAL, K_GELU, K_SOFTPLUS, K_CLAMP, K_WHERE };
typedef struct spec {
    int kind;
    un_fn un;
    bin_fn bin;
    scal_fn scal;
    double p, q;
    cg_tensor *cond;
} spec;

static cg_status apply(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    const spec *s = (const spec *)ctx;
    (void)n;
    switch (s->kind) {
    case K_UN: return s->un(in[0], out);
    case K_BIN: return s->bin(in[0], in[1], out);
    case K_SCAL: return s->scal(in[0], s->p, out);
    case K_GELU: return cg_gelu(in[0], (int)s->p, out);
    case K_SOFTPLUS: return cg_softplus(in[0], s->p, s->q, out);
    case K_CLAMP: return cg_clamp(in[0], s->p, s->q, out);
    default: return cg_where(s->cond, in[0], in[1], out);
    }
}

/* Second derivatives: inputs are the op's n inputs plus the grad_output v;
 * the function returns d/d(input wrt) of sum(op(...) * v), built with
 * create_graph so that gradcheck differentiates the backward itself. */
typedef struct ggctx {
    const spec *s;
    int n, wrt;
} ggctx;

static cg_status apply_grad(void *ctx, int n_all, cg_tensor *const *in, cg_tensor **out) {
    const ggctx *c = (const ggctx *)ctx;
    cg_tensor *y = NULL, *grads[4] = {0}, *diff[4];
    int nd = 0, slot = -1;
    for (int i = 0; i < c->n; ++i)
        if (cg_tensor_requires_grad(in[i])) {
            if (i == c->wrt) slot = nd;
            diff[nd++] = in[i];
        }
    int prev = cg_set_grad_enabled(1);
    cg_status st = apply((void *)c->s, c->n, in, &y);
    /* create_graph needs the graph kept (PyTorch's retain_graph default) */
    if (!st) st = cg_grad(1, &y, &in[c->n], nd, diff, 1, 1, 1, grads);
    cg_set_grad_enabled(prev);
    cg_tensor_free(y);
    (void)n_all;
    if (st) return st;
    *out = grads[slot];
    grads[slot] = NULL;
    free_all(nd, grads);
    if (!*out) return cg_zeros(CG_FLOAT64, cg_tensor_ndim(in[c->wrt]), cg_tensor_shape(in[c->wrt]), out);
    return CG_OK;
}

#define GC_EPS 1e-6
#define GC_ATOL 1e-5
#define GC_RTOL 1e-4

/* gradcheck of the op and of its gradient w.r.t. every input. */
#define CHECK_GRADS(s, n, ...) check_grads_((s), (n), (cg_tensor *[]){__VA_ARGS__}, 1, __LINE__)
/* first derivatives only (zero-gradient ops have no second-order graph) */
#define CHECK_GRAD1(s, n, ...) check_grads_((s), (n), (cg_tensor *[]){__VA_ARGS__}, 0, __LINE__)
static void check_grads_(const spec *s, int n, cg_tensor **in, int second, int line) {
    cg_status st = cg_gradcheck(apply, (void *)s, n, in, GC_EPS, GC_ATOL, GC_RTOL);
    if (st) {
        ++cgt_failed;
        fprintf(stderr, "%s:%d: FAIL: gradcheck: %s\n", __FILE__, line, cg_last_error());
    } else {
        ++cgt_passed;
    }
    if (second) {
        cg_tensor *y = NULL, *v = NULL, *all[5];
        int prev = cg_set_grad_enabled(0);
        st = apply((void *)s, n, in, &y);
        cg_set_grad_enabled(prev);
        if (!st) st = cg_randn(CG_FLOAT64, cg_tensor_ndim(y), cg_tensor_shape(y), &v);
        if (!st) st = cg_tensor_set_requires_grad(v, 1);
        for (int i = 0; i < n; ++i) all[i] = in[i];
        all[n] = v;
        for (int w = 0; w < n && !st; ++w) {
            if (!cg_tensor_requires_grad(in[w])) continue;
            ggctx c = {s, n, w};
            st = cg_gradcheck(apply_grad, &c, n + 1, all, GC_EPS, GC_ATOL, GC_RTOL);
        }
        if (st) {
            ++cgt_failed;
            fprintf(stderr, "%s:%d: FAIL: gradgradcheck: %s\n", __FILE__, line, cg_last_error());
        } else {
            ++cgt_passed;
        }
        cg_tensor_free(y);
        cg_tensor_free(v);
    }
    for (int i = 0; i < n; ++i) cg_tensor_free(in[i]);
}

static const spec S_ADD = {K_BIN, NULL, cg_add, NULL, 0, 0, NULL};
static const spec S_SUB = {K_BIN, NULL, cg_sub, NULL, 0, 0, NULL};
static const spec S_MUL = {K_BIN, NULL, cg_mul, NULL, 0, 0, NULL};
static const spec S_DIV = {K_BIN, NULL, cg_div, NULL, 0, 0, NULL};
static const spec S_POW = {K_BIN, NULL, cg_pow, NULL, 0, 0, NULL};
static const spec S_MIN = {K_BIN, NULL, cg_minimum, NULL, 0, 0, NULL};
static const spec S_MAX = {K_BIN, NULL, cg_maximum, NULL, 0, 0, NULL};

/* ================================================================ binary */
static void test_binary_values(void) {
    int64_t s31[2] = {3, 1}, s4[1] = {4}, s23[2] = {2, 3};
    double a31[3] = {1, 2, 3}, b4[4] = {10, 20, 30, 40};
    cg_tensor *a = T64(2, s31, a31), *b = T64(1, s4, b4), *r = NULL;
    /* (3,1) op (4,) -> (3,4) */
    CHECK_OK(cg_add(a, b, &r));
    CHECK_META(r, CG_FLOAT64, 2, 3, 4);
    double add_w[12] = {11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43};
    CHECK_VALS(r, 12, add_w, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_sub(a, b, &r));
    double sub_w[12] = {-9, -19, -29, -39, -8, -18, -28, -38, -7, -17, -27, -37};
    CHECK_VALS(r, 12, sub_w, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_mul(b, a, &r)); /* (4,) op (3,1) */
    double mul_w[12] = {10, 20, 30, 40, 20, 40, 60, 80, 30, 60, 90, 120};
    CHECK_VALS(r, 12, mul_w, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_div(a, b, &r));
    double div_w[12] = {0.1, 0.05, 1.0 / 30, 0.025, 0.2, 0.1, 2.0 / 30, 0.05, 0.3, 0.15, 0.1, 0.075};
    CHECK_VALS(r, 12, div_w, 1e-15);
    cg_tensor_free(r);
    cg_tensor_free(a);
    cg_tensor_free(b);

    /* 0-d with (2,3), both orders */
    double m23[6] = {1, -2, 3, -4, 5, -6};
    cg_tensor *s = NULL, *m = T64(2, s23, m23);
    cg_scalar(CG_FLOAT64, 2.0, &s);
    CHECK_OK(cg_sub(s, m, &r));
    CHECK_META(r, CG_FLOAT64, 2, 2, 3);
    double w1[6] = {1, 4, -1, 6, -3, 8};
    CHECK_VALS(r, 6, w1, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_pow(m, s, &r));
    double w2[6] = {1, 4, 9, 16, 25, 36};
    CHECK_VALS(r, 6, w2, 1e-15);
    cg_tensor_free(r);
    CHECK_OK(cg_pow(s, m, &r)); /* 2^m */
    double w3[6] = {2, 0.25, 8, 0.0625, 32, 0.015625};
    CHECK_VALS(r, 6, w3, 1e-15);
    cg_tensor_free(r);
    CHECK_OK(cg_maximum(m, s, &r));
    double w4[6] = {2, 2, 3, 2, 5, 2};
    CHECK_VALS(r, 6, w4, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_minimum(s, m, &r));
    double w5[6] = {1, -2, 2, -4, 2, -6};
    CHECK_VALS(r, 6, w5, 0);
    cg_tensor_free(r);
    /* 0-d op 0-d stays 0-d */
    CHECK_OK(cg_mul(s, s, &r));
    CHECK(cg_tensor_ndim(r) == 0);
    CHECK_CLOSE(cgt_at(r, 0), 4.0, 0);
    cg_tensor_free(r);
    cg_tensor_free(s);
    cg_tensor_free(m);
}

static void test_binary_float32(void) {
    /* float32 computed in float32, compared with float64 on the same data,
     * including a size that is not a multiple of any vector width and a
     * broadcast (row vector) operand. */
    int64_t sh[2] = {37, 29}, row[1] = {29};
    cg_tensor *a64 = NULL, *b64 = NULL, *r64 = NULL, *a32 = NULL, *b32 = NULL, *r32 = NULL;
    bin_fn ops[7] = {cg_add, cg_sub, cg_mul, cg_div, cg_pow, cg_minimum, cg_maximum};
    cg_manual_seed(3);
    for (int k = 0; k < 7; ++k) {
        for (int bc = 0; bc < 2; ++bc) {
            cg_rand(CG_FLOAT64, 2, sh, &a64);
            cg_tensor *t = NULL;
            cg_rand(CG_FLOAT64, bc ? 1 : 2, bc ? row : sh, &t);
            cg_add_scalar(t, 0.5, &b64);
            cg_tensor_free(t);
            cg_to_dtype(a64, CG_FLOAT32, &a32);
            cg_to_dtype(b64, CG_FLOAT32, &b32);
            CHECK_OK(ops[k](a64, b64, &r64));
            CHECK_OK(ops[k](a32, b32, &r32));
            CHECK(cg_tensor_dtype(r32) == CG_FLOAT32);
            double *w = vals(r64);
            CHECK_VALS(r32, 37 * 29, w, 1e-6);
            free(w);
            cg_tensor *all[6] = {a64, b64, r64, a32, b32, r32};
            free_all(6, all);
        }
    }
}

static void test_binary_grads(void) {
    int64_t s31[2] = {3, 1}, s4[1] = {4}, s23[2] = {2, 3};
    cg_manual_seed(11);
    const spec *arith[4] = {&S_ADD, &S_SUB, &S_MUL, &S_DIV};
    for (int k = 0; k < 4; ++k) {
        CHECK_GRADS(arith[k], 2, cgt_randn64(2, s31), pos64(1, s4)); /* broadcast both ways */
        CHECK_GRADS(arith[k], 2, cgt_randn64(2, s23), pos64(0, NULL)); /* 0-d rhs */
        CHECK_GRADS(arith[k], 2, cgt_randn64(2, s23), pos64(2, s23));  /* same shape */
    }
    CHECK_GRADS(&S_POW, 2, pos64(2, s31), cgt_randn64(1, s4));
    CHECK_GRADS(&S_POW, 2, pos64(2, s23), cgt_randn64(0, NULL));
    CHECK_GRADS(&S_MIN, 2, cgt_randn64(2, s31), cgt_randn64(1, s4));
    CHECK_GRADS(&S_MAX, 2, cgt_randn64(2, s31), cgt_randn64(1, s4));
    CHECK_GRADS(&S_MAX, 2, cgt_randn64(0, NULL), cgt_randn64(2, s23));
    /* one side constant: only the other gets a gradient */
    cg_tensor *c = NULL;
    cg_randn(CG_FLOAT64, 1, s4, &c);
    CHECK_GRADS(&S_MUL, 2, cgt_randn64(2, s31), c);
}

/* Hand-computed gradients (backward into .grad). */
static void test_binary_grad_values(void) {
    int64_t s2[1] = {2}, s22[2] = {2, 2};
    double av[2] = {2, 3}, bv[2] = {4, 0.5};
    cg_tensor *a = RG(T64(1, s2, av)), *b = RG(T64(1, s2, bv)), *r = NULL, *l = NULL;
    /* div: d/da = 1/b, d/db = -a/b^2 */
    CHECK_OK(cg_div(a, b, &r));
    CHECK(strcmp(cg_tensor_grad_fn_name(r), "div") == 0);
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double ga[2] = {0.25, 2}, gb[2] = {-2.0 / 16, -3 / 0.25};
    CHECK_VALS(cg_tensor_grad(a), 2, ga, 1e-15);
    CHECK_VALS(cg_tensor_grad(b), 2, gb, 1e-15);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_set_grad(a, NULL);
    cg_tensor_set_grad(b, NULL);
    /* pow: d/da = b a^(b-1), d/db = a^b log a */
    CHECK_OK(cg_pow(a, b, &r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double pa[2] = {4 * 8, 0.5 / sqrt(3.0)}, pb[2] = {16 * log(2.0), sqrt(3.0) * log(3.0)};
    CHECK_VALS(cg_tensor_grad(a), 2, pa, 1e-14);
    CHECK_VALS(cg_tensor_grad(b), 2, pb, 1e-14);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_free(a);
    cg_tensor_free(b);

    /* pow at a == 0: a-grad 0 where b == 0, b-grad 0 where b >= 0 */
    double a0[2] = {0, 0}, b0[2] = {0, 2};
    a = RG(T64(1, s2, a0));
    b = RG(T64(1, s2, b0));
    CHECK_OK(cg_pow(a, b, &r));
    double pw[2] = {1, 0};
    CHECK_VALS(r, 2, pw, 0);
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double z2[2] = {0, 0};
    CHECK_VALS(cg_tensor_grad(a), 2, z2, 0);
    CHECK_VALS(cg_tensor_grad(b), 2, z2, 0);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_free(a);
    cg_tensor_free(b);

    /* maximum / minimum: ties split the gradient evenly */
    double xv[4] = {1, 5, 3, 3}, yv[4] = {2, 4, 3, 7};
    cg_tensor *x = RG(T64(2, s22, xv)), *y = RG(T64(2, s22, yv));
    CHECK_OK(cg_maximum(x, y, &r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double gx[4] = {0, 1, 0.5, 0}, gy[4] = {1, 0, 0.5, 1};
    CHECK_VALS(cg_tensor_grad(x), 4, gx, 0);
    CHECK_VALS(cg_tensor_grad(y), 4, gy, 0);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_set_grad(x, NULL);
    cg_tensor_set_grad(y, NULL);
    CHECK_OK(cg_minimum(x, y, &r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_VALS(cg_tensor_grad(x), 4, gy, 0);
    CHECK_VALS(cg_tensor_grad(y), 4, gx, 0);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_free(x);
    cg_tensor_free(y);

    /* broadcast grads are summed back: (2,2) + (2,) -> grad of b is column sums */
    double m[4] = {1, 2, 3, 4}, v2[2] = {10, 20};
    x = RG(T64(2, s22, m));
    y = RG(T64(1, s2, v2));
    CHECK_OK(cg_mul(x, y, &r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double gxm[4] = {10, 20, 10, 20}, gym[2] = {4, 6};
    CHECK_VALS(cg_tensor_grad(x), 4, gxm, 0);
    CHECK_VALS(cg_tensor_grad(y), 2, gym, 0);
    CHECK_META(cg_tensor_grad(y), CG_FLOAT64, 1, 2);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_free(x);
    cg_tensor_free(y);

    /* mixed float dtypes: float32 input gets a float32 gradient */
    double fv[2] = {1.5, -2};
    cg_tensor *f = RG(T32(1, s2, fv)), *d = RG(T64(1, s2, bv));
    CHECK_OK(cg_mul(f, d, &r));
    CHECK(cg_tensor_dtype(r) == CG_FLOAT64);
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_META(cg_tensor_grad(f), CG_FLOAT32, 1, 2);
    CHECK_VALS(cg_tensor_grad(f), 2, bv, 0);
    CHECK_META(cg_tensor_grad(d), CG_FLOAT64, 1, 2);
    CHECK_VALS(cg_tensor_grad(d), 2, fv, 0);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_free(f);
    cg_tensor_free(d);
}

static void test_binary_int_bool(void) {
    int64_t s3[1] = {3}, s31[2] = {3, 1}, s2[1] = {2};
    int64_t iv[3] = {7, -3, 4}, jv[3] = {2, 2, -3};
    cg_tensor *i = TI(1, s3, iv), *j = TI(1, s3, jv), *r = NULL;
    CHECK_OK(cg_add(i, j, &r));
    CHECK_META(r, CG_INT64, 1, 3);
    double w1[3] = {9, -1, 1};
    CHECK_VALS(r, 3, w1, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_sub(i, j, &r));
    double w2[3] = {5, -5, 7};
    CHECK_VALS(r, 3, w2, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_mul(i, j, &r));
    double w3[3] = {14, -6, -12};
    CHECK_VALS(r, 3, w3, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_div(i, j, &r)); /* true division -> float32 */
    CHECK_META(r, CG_FLOAT32, 1, 3);
    double w4[3] = {3.5, -1.5, -4.0 / 3};
    CHECK_VALS(r, 3, w4, 1e-6);
    cg_tensor_free(r);
    CHECK_OK(cg_maximum(i, j, &r));
    CHECK_META(r, CG_INT64, 1, 3);
    double w5[3] = {7, 2, 4};
    CHECK_VALS(r, 3, w5, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_minimum(i, j, &r));
    double w6[3] = {2, -3, -3};
    CHECK_VALS(r, 3, w6, 0);
    cg_tensor_free(r);
    int64_t ev[3] = {10, 3, 0}, bv[3] = {2, -3, 5};
    cg_tensor *e = TI(1, s3, ev), *bb = TI(1, s3, bv);
    CHECK_OK(cg_pow(bb, e, &r)); /* 2^10, (-3)^3, 5^0 */
    CHECK_META(r, CG_INT64, 1, 3);
    double w7[3] = {1024, -27, 1};
    CHECK_VALS(r, 3, w7, 0);
    cg_tensor_free(r);
    /* int64 wraps on overflow instead of trapping */
    int64_t big[1] = {INT64_MAX}, one[1] = {1};
    int64_t s1[1] = {1};
    cg_tensor *bg = TI(1, s1, big), *on = TI(1, s1, one);
    CHECK_OK(cg_add(bg, on, &r));
    int64_t wrapped = 0;
    cg_tensor_copy_to(r, &wrapped, 8);
    CHECK(wrapped == INT64_MIN);
    cg_tensor_free(r);
    cg_tensor_free(bg);
    cg_tensor_free(on);

    /* int64 broadcast (3,1) x (3,) */
    cg_tensor *ic = TI(2, s31, iv);
    CHECK_OK(cg_mul(ic, j, &r));
    CHECK_META(r, CG_INT64, 2, 3, 3);
    double w8[9] = {14, 14, -21, -6, -6, 9, 8, 8, -12};
    CHECK_VALS(r, 9, w8, 0);
    cg_tensor_free(r);
    cg_tensor_free(ic);

    /* int64 with float32 -> float32; int64 with float64 -> float64 */
    double fv[3] = {0.5, 0.25, 2};
    cg_tensor *f = T32(1, s3, fv), *d = T64(1, s3, fv);
    CHECK_OK(cg_add(i, f, &r));
    CHECK_META(r, CG_FLOAT32, 1, 3);
    double w9[3] = {7.5, -2.75, 6};
    CHECK_VALS(r, 3, w9, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_mul(d, i, &r));
    CHECK_META(r, CG_FLOAT64, 1, 3);
    double w10[3] = {3.5, -0.75, 8};
    CHECK_VALS(r, 3, w10, 0);
    cg_tensor_free(r);
    /* float32 + float64 -> float64 */
    CHECK_OK(cg_add(f, d, &r));
    CHECK_META(r, CG_FLOAT64, 1, 3);
    cg_tensor_free(r);

    /* bool: bool + bool stays bool (or), bool * bool (and), bool + int64 -> int64 */
    unsigned char p[2] = {1, 0}, q[2] = {1, 1};
    cg_tensor *bp = TB(1, s2, p), *bq = TB(1, s2, q);
    CHECK_OK(cg_add(bp, bq, &r));
    CHECK_META(r, CG_BOOL, 1, 2);
    double wb[2] = {1, 1};
    CHECK_VALS(r, 2, wb, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_mul(bp, bq, &r));
    double wa[2] = {1, 0};
    CHECK_VALS(r, 2, wa, 0);
    cg_tensor_free(r);
    CHECK_STATUS(cg_sub(bp, bq, &r), CG_ERR_DTYPE);
    CHECK(r == NULL);
    CHECK_STATUS(cg_pow(bp, bq, &r), CG_ERR_DTYPE);
    int64_t two[2] = {5, 6};
    cg_tensor *it = TI(1, s2, two);
    CHECK_OK(cg_add(bp, it, &r));
    CHECK_META(r, CG_INT64, 1, 2);
    double wi[2] = {6, 6};
    CHECK_VALS(r, 2, wi, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_div(bp, bq, &r));
    CHECK_META(r, CG_FLOAT32, 1, 2);
    cg_tensor_free(r);
    cg_tensor *all[9] = {i, j, e, bb, f, d, bp, bq, it};
    free_all(9, all);
}

static void test_binary_noncontig(void) {
    /* transposed, sliced and expanded views against contiguous copies */
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s6[1] = {6}, s31[2] = {3, 1}, s34[2] = {3, 4};
    double av[6] = {1, 2, 3, 4, 5, 6}, bv[6] = {10, 20, 30, 40, 50, 60};
    cg_tensor *a = T64(2, s23, av), *b = T64(2, s32, bv), *at = NULL, *r = NULL;
    CHECK_OK(cg_transpose(a, 0, 1, &at)); /* (3,2) view: [[1,4],[2,5],[3,6]] */
    CHECK(!cg_tensor_is_contiguous(at));
    CHECK_OK(cg_add(at, b, &r));
    double w[6] = {11, 24, 32, 45, 53, 66};
    CHECK_VALS(r, 6, w, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_mul(at, at, &r)); /* both strided */
    double w2[6] = {1, 16, 4, 25, 9, 36};
    CHECK_VALS(r, 6, w2, 0);
    cg_tensor_free(r);
    /* step slice of a 1-D tensor */
    cg_tensor *v = T64(1, s6, bv), *sl = NULL, *ex = NULL, *col = NULL;
    CHECK_OK(cg_slice(v, 0, 0, 6, 2, &sl)); /* 10, 30, 50 */
    CHECK_OK(cg_sub(sl, sl, &r));
    double z3[3] = {0, 0, 0};
    CHECK_VALS(r, 3, z3, 0);
    cg_tensor_free(r);
    /* expanded (stride 0) column against a transposed matrix */
    double cv[3] = {1, 2, 3};
    cg_tensor *c = T64(2, s31, cv);
    CHECK_OK(cg_expand(c, 2, s34, &ex)); /* (3,4) with stride 0 on dim 1 */
    CHECK_OK(cg_reshape(sl, 2, s31, &col));
    CHECK_OK(cg_mul(ex, col, &r)); /* (3,4) * (3,1) of a strided slice */
    double w3[12] = {10, 10, 10, 10, 60, 60, 60, 60, 150, 150, 150, 150};
    CHECK_VALS(r, 12, w3, 0);
    cg_tensor_free(r);
    /* gradient through a non-contiguous input keeps the input's shape */
    cg_tensor *g = RG(T64(2, s23, av)), *gt = NULL, *l = NULL;
    CHECK_OK(cg_transpose(g, 0, 1, &gt));
    CHECK_OK(cg_mul(gt, b, &r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double gw[6] = {10, 30, 50, 20, 40, 60}; /* b transposed */
    CHECK_VALS(cg_tensor_grad(g), 6, gw, 0);
    cg_tensor *all[12] = {a, b, at, v, sl, ex, col, c, g, gt, l, r};
    free_all(12, all);

    /* 4-d permuted + broadcast operand against the same op on contiguous copies */
    int64_t s4d[4] = {2, 3, 4, 5}, sb[3] = {4, 1, 5};
    int perm[4] = {0, 2, 1, 3};
    cg_tensor *x = NULL, *xp = NULL, *xc = NULL, *y = NULL, *r1 = NULL, *r2 = NULL;
    cg_manual_seed(5);
    cg_randn(CG_FLOAT64, 4, s4d, &x);
    cg_randn(CG_FLOAT64, 3, sb, &y);
    CHECK_OK(cg_permute(x, perm, &xp)); /* (2,4,3,5) */
    CHECK_OK(cg_contiguous(xp, &xc));
    CHECK_OK(cg_sub(xp, y, &r1));
    CHECK_OK(cg_sub(xc, y, &r2));
    CHECK_META(r1, CG_FLOAT64, 4, 2, 4, 3, 5);
    double *w4 = vals(r2);
    CHECK_VALS(r1, 120, w4, 0);
    free(w4);
    cg_tensor *all2[6] = {x, xp, xc, y, r1, r2};
    free_all(6, all2);
}

static void test_binary_empty_and_errors(void) {
    int64_t s03[2] = {0, 3}, s3[1] = {3}, s23[2] = {2, 3}, s4[1] = {4};
    cg_tensor *e = NULL, *v = NULL, *r = NULL, *m = NULL, *w = NULL;
    cg_zeros(CG_FLOAT32, 2, s03, &e);
    cg_ones(CG_FLOAT32, 1, s3, &v);
    CHECK_OK(cg_add(e, v, &r));
    CHECK_META(r, CG_FLOAT32, 2, 0, 3);
    cg_tensor_free(r);
    CHECK_OK(cg_gt(e, v, &r));
    CHECK_META(r, CG_BOOL, 2, 0, 3);
    cg_tensor_free(r);
    cg_ones(CG_FLOAT64, 2, s23, &m);
    cg_ones(CG_FLOAT64, 1, s4, &w);
    CHECK_STATUS(cg_add(m, w, &r), CG_ERR_SHAPE);
    CHECK(r == NULL);
    CHECK(strstr(cg_last_error(), "cg_add") && strstr(cg_last_error(), "(2, 3)") &&
          strstr(cg_last_error(), "(4,)"));
    CHECK_STATUS(cg_mul(m, w, &r), CG_ERR_SHAPE);
    CHECK_STATUS(cg_div(m, w, &r), CG_ERR_SHAPE);
    CHECK_STATUS(cg_pow(m, w, &r), CG_ERR_SHAPE);
    CHECK_STATUS(cg_maximum(m, w, &r), CG_ERR_SHAPE);
    CHECK_STATUS(cg_eq(m, w, &r), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "cg_eq") != NULL);
    CHECK_STATUS(cg_add(NULL, w, &r), CG_ERR_NULL);
    CHECK_STATUS(cg_sub(m, NULL, &r), CG_ERR_NULL);
    CHECK_STATUS(cg_mul(m, m, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_add_scalar(NULL, 1.0, &r), CG_ERR_NULL);
    CHECK_STATUS(cg_lt(m, NULL, &r), CG_ERR_NULL);
    CHECK_STATUS(cg_where(NULL, m, m, &r), CG_ERR_NULL);
    cg_tensor *all[4] = {e, v, m, w};
    free_all(4, all);
}

/* ========================================================== comparisons */
static void test_compare_where(void) {
    int64_t s3[1] = {3}, s31[2] = {3, 1}, s4[1] = {4};
    double av[3] = {1, NAN, 3}, bv[3] = {1, 2, 2};
    cg_tensor *a = RG(T64(1, s3, av)), *b = T64(1, s3, bv), *r = NULL;
    bin_fn cmp[6] = {cg_eq, cg_ne, cg_lt, cg_le, cg_gt, cg_ge};
    double want[6][3] = {{1, 0, 0}, {0, 1, 1}, {0, 0, 0}, {1, 0, 0}, {0, 0, 1}, {1, 0, 1}};
    for (int k = 0; k < 6; ++k) {
        CHECK_OK(cmp[k](a, b, &r));
        CHECK_META(r, CG_BOOL, 1, 3);
        CHECK(!cg_tensor_requires_grad(r)); /* never recorded */
        CHECK_VALS(r, 3, want[k], 0);
        cg_tensor_free(r);
    }
    /* int64 vs float32, broadcast (3,1) vs (4,) */
    int64_t iv[3] = {0, 1, 2};
    double fv[4] = {0.5, 1, 1.5, -1};
    cg_tensor *i = TI(2, s31, iv), *f = T32(1, s4, fv);
    CHECK_OK(cg_lt(i, f, &r));
    CHECK_META(r, CG_BOOL, 2, 3, 4);
    double wl[12] = {1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0};
    CHECK_VALS(r, 12, wl, 0);
    cg_tensor_free(r);
    /* int64 vs int64 */
    int64_t jv[3] = {2, 1, 0};
    cg_tensor *j = TI(1, s3, jv), *i1 = TI(1, s3, iv);
    CHECK_OK(cg_ge(i1, j, &r));
    double wg[3] = {0, 1, 1};
    CHECK_VALS(r, 3, wg, 0);
    cg_tensor_free(r);

    /* where: cond (3,1), a (4,), b 0-d -> (3,4); gradient to a where cond */
    unsigned char cv[3] = {1, 0, 1};
    double a4[4] = {1, 2, 3, 4};
    cg_tensor *cond = TB(2, s31, cv), *x = RG(T64(1, s4, a4)), *y = NULL, *l = NULL;
    cg_scalar(CG_FLOAT64, -7.0, &y);
    cg_tensor_set_requires_grad(y, 1);
    CHECK_OK(cg_where(cond, x, y, &r));
    CHECK_META(r, CG_FLOAT64, 2, 3, 4);
    double ww[12] = {1, 2, 3, 4, -7, -7, -7, -7, 1, 2, 3, 4};
    CHECK_VALS(r, 12, ww, 0);
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double gx[4] = {2, 2, 2, 2};
    CHECK_VALS(cg_tensor_grad(x), 4, gx, 0);
    CHECK_META(cg_tensor_grad(y), CG_FLOAT64, 0);
    CHECK_CLOSE(cgt_at(cg_tensor_grad(y), 0), 4.0, 0);
    cg_tensor_free(r);
    cg_tensor_free(l);
    /* where with int64 and float32 branches -> float32; bool branches stay bool */
    int64_t i4[4] = {1, 2, 3, 4};
    cg_tensor *ii = TI(1, s4, i4);
    double f4[4] = {0.5, 0.5, 0.5, 0.5};
    cg_tensor *ff = T32(1, s4, f4);
    CHECK_OK(cg_where(cond, ii, ff, &r));
    CHECK_META(r, CG_FLOAT32, 2, 3, 4);
    double wm[12] = {1, 2, 3, 4, 0.5, 0.5, 0.5, 0.5, 1, 2, 3, 4};
    CHECK_VALS(r, 12, wm, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_where(cond, cond, cond, &r));
    CHECK_META(r, CG_BOOL, 2, 3, 1);
    cg_tensor_free(r);
    /* flat fast paths: contiguous condition with a 0-d branch on either side */
    unsigned char c4[4] = {0, 1, 1, 0};
    cg_tensor *cond4 = TB(1, s4, c4);
    CHECK_OK(cg_where(cond4, x, y, &r));
    double wf1[4] = {-7, 2, 3, -7};
    CHECK_VALS(r, 4, wf1, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_where(cond4, y, x, &r));
    double wf2[4] = {1, -7, -7, 4};
    CHECK_VALS(r, 4, wf2, 0);
    cg_tensor_free(r);
    cg_tensor_free(cond4);
    /* errors: non-bool condition, shape mismatch */
    CHECK_STATUS(cg_where(x, x, y, &r), CG_ERR_DTYPE);
    int64_t s2[1] = {2};
    unsigned char c2[2] = {1, 0};
    cg_tensor *cond2 = TB(1, s2, c2);
    CHECK_STATUS(cg_where(cond2, x, y, &r), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "cg_where") != NULL);

    /* gradcheck + second derivatives through where with broadcasting */
    spec sw = {K_WHERE, NULL, NULL, NULL, 0, 0, cond};
    CHECK_GRADS(&sw, 2, cgt_randn64(1, s4), cgt_randn64(2, s31));
    cg_tensor *all[12] = {a, b, i, f, j, i1, cond, x, y, ii, ff, cond2};
    free_all(12, all);
}

/* =========================================================== scalar ops */
static const spec S_ADDS = {K_SCAL, NULL, NULL, cg_add_scalar, 2.5, 0, NULL};
static const spec S_MULS = {K_SCAL, NULL, NULL, cg_mul_scalar, -1.5, 0, NULL};

static void test_scalar_ops(void) {
    int64_t s3[1] = {3}, s23[2] = {2, 3};
    double xv[3] = {1, 4, 9};
    cg_tensor *x = T32(1, s3, xv), *r = NULL;
    CHECK_OK(cg_add_scalar(x, 0.1, &r)); /* float32 + double stays float32 */
    CHECK_META(r, CG_FLOAT32, 1, 3);
    double w1[3] = {(float)1 + (float)0.1, (float)4 + (float)0.1, (float)9 + (float)0.1};
    CHECK_VALS(r, 3, w1, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_mul_scalar(x, -2, &r));
    double w2[3] = {-2, -8, -18};
    CHECK_VALS(r, 3, w2, 0);
    cg_tensor_free(r);
    double exps[8] = {2, 3, 0.5, -0.5, -1, 1, 0, 1.5};
    for (int k = 0; k < 8; ++k) {
        CHECK_OK(cg_pow_scalar(x, exps[k], &r));
        CHECK(cg_tensor_dtype(r) == CG_FLOAT32);
        double w[3];
        for (int e = 0; e < 3; ++e) w[e] = pow(xv[e], exps[k]);
        CHECK_VALS(r, 3, w, 1e-6);
        cg_tensor_free(r);
    }
    cg_tensor_free(x);
    /* integer tensors: integral scalars keep int64, fractional -> float32 */
    int64_t iv[3] = {1, -2, 3};
    cg_tensor *i = TI(1, s3, iv);
    CHECK_OK(cg_add_scalar(i, 2, &r));
    CHECK_META(r, CG_INT64, 1, 3);
    double w3[3] = {3, 0, 5};
    CHECK_VALS(r, 3, w3, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_mul_scalar(i, 0.5, &r));
    CHECK_META(r, CG_FLOAT32, 1, 3);
    double w4[3] = {0.5, -1, 1.5};
    CHECK_VALS(r, 3, w4, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_pow_scalar(i, 3, &r));
    CHECK_META(r, CG_INT64, 1, 3);
    double w5[3] = {1, -8, 27};
    CHECK_VALS(r, 3, w5, 0);
    cg_tensor_free(r);
    CHECK_STATUS(cg_pow_scalar(i, -1, &r), CG_ERR_VALUE);
    cg_tensor_free(i);
    /* NaN input does not crash and propagates */
    double nv[3] = {NAN, INFINITY, -INFINITY};
    cg_tensor *n = T64(1, s3, nv);
    CHECK_OK(cg_mul_scalar(n, 2, &r));
    double w6[3] = {NAN, INFINITY, -INFINITY};
    CHECK_VALS(r, 3, w6, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_pow_scalar(n, 0, &r)); /* x^0 == 1 even for NaN */
    double w7[3] = {1, 1, 1};
    CHECK_VALS(r, 3, w7, 0);
    cg_tensor_free(r);
    cg_tensor_free(n);

    /* gradients */
    cg_manual_seed(21);
    CHECK_GRADS(&S_ADDS, 1, cgt_randn64(2, s23));
    CHECK_GRADS(&S_MULS, 1, cgt_randn64(2, s23));
    double ps[7] = {2, 3, 0.5, -0.5, -1, 1, 1.7};
    for (int k = 0; k < 7; ++k) {
        spec sp = {K_SCAL, NULL, NULL, cg_pow_scalar, ps[k], 0, NULL};
        CHECK_GRADS(&sp, 1, pos64(2, s23));
    }
    spec sp0 = {K_SCAL, NULL, NULL, cg_pow_scalar, 0.0, 0, NULL};
    CHECK_GRAD1(&sp0, 1, cgt_randn64(2, s23));
    /* pow_scalar(x, 0) is recorded with a zero gradient */
    cg_tensor *g = RG(T64(1, s3, xv)), *l = NULL;
    CHECK_OK(cg_pow_scalar(g, 0, &r));
    CHECK(cg_tensor_requires_grad(r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double z3[3] = {0, 0, 0};
    CHECK_VALS(cg_tensor_grad(g), 3, z3, 0);
    cg_tensor *all[3] = {g, l, r};
    free_all(3, all);
}

/* ================================================================ unary */
static const spec S_NEG = {K_UN, cg_neg, NULL, NULL, 0, 0, NULL};
static const spec S_EXP = {K_UN, cg_exp, NULL, NULL, 0, 0, NULL};
static const spec S_LOG = {K_UN, cg_log, NULL, NULL, 0, 0, NULL};
static const spec S_SQRT = {K_UN, cg_sqrt, NULL, NULL, 0, 0, NULL};
static const spec S_ABS = {K_UN, cg_abs, NULL, NULL, 0, 0, NULL};
static const spec S_SIGN = {K_UN, cg_sign, NULL, NULL, 0, 0, NULL};
static const spec S_ROUND = {K_UN, cg_round, NULL, NULL, 0, 0, NULL};
static const spec S_FLOOR = {K_UN, cg_floor, NULL, NULL, 0, 0, NULL};
static const spec S_CEIL = {K_UN, cg_ceil, NULL, NULL, 0, 0, NULL};
static const spec S_RELU = {K_UN, cg_relu, NULL, NULL, 0, 0, NULL};
static const spec S_SIGMOID = {K_UN, cg_sigmoid, NULL, NULL, 0, 0, NULL};
static const spec S_TANH = {K_UN, cg_tanh, NULL, NULL, 0, 0, NULL};
static const spec S_LEAKY = {K_SCAL, NULL, NULL, cg_leaky_relu, 0.1, 0, NULL};
static const spec S_ELU = {K_SCAL, NULL, NULL, cg_elu, 1.3, 0, NULL};
static const spec S_GELU = {K_GELU, NULL, NULL, NULL, 0, 0, NULL};
static const spec S_GELU_T = {K_GELU, NULL, NULL, NULL, 1, 0, NULL};
static const spec S_SOFTPLUS = {K_SOFTPLUS, NULL, NULL, NULL, 1.0, 20.0, NULL};
static const spec S_SOFTPLUS2 = {K_SOFTPLUS, NULL, NULL, NULL, 2.0, 1.0, NULL};
static const spec S_CLAMP = {K_CLAMP, NULL, NULL, NULL, -0.5, 0.7, NULL};
static const spec S_CLAMP_LO = {K_CLAMP, NULL, NULL, NULL, -0.5, INFINITY, NULL};

static void test_unary_values(void) {
    int64_t s5[1] = {5};
    double xv[5] = {-2.5, -0.5, 0, 0.5, 1.5};
    cg_tensor *x = T64(1, s5, xv), *r = NULL;
    const double e = exp(1.0);
    struct {
        const spec *s;
        double w[5];
    } cases[] = {
        {&S_NEG, {2.5, 0.5, 0, -0.5, -1.5}},
        {&S_EXP, {exp(-2.5), exp(-0.5), 1, exp(0.5), exp(1.5)}},
        {&S_ABS, {2.5, 0.5, 0, 0.5, 1.5}},
        {&S_SIGN, {-1, -1, 0, 1, 1}},
        {&S_ROUND, {-2, -0.0, 0, 0, 2}}, /* half to even */
        {&S_FLOOR, {-3, -1, 0, 0, 1}},
        {&S_CEIL, {-2, 0, 0, 1, 2}},
        {&S_RELU, {0, 0, 0, 0.5, 1.5}},
        {&S_LEAKY, {-0.25, -0.05, 0, 0.5, 1.5}},
        {&S_ELU, {1.3 * (exp(-2.5) - 1), 1.3 * (exp(-0.5) - 1), 0, 0.5, 1.5}},
        /* x * Phi(x): Phi(-2.5)=0.006209665325776132, Phi(-0.5)=0.3085375387259869,
         * Phi(0.5)=0.6914624612740131, Phi(1.5)=0.9331927987311419 */
        {&S_GELU, {-2.5 * 0.006209665325776132, -0.5 * 0.3085375387259869, 0,
                   0.5 * 0.6914624612740131, 1.5 * 0.9331927987311419}},
        {&S_SIGMOID, {1 / (1 + exp(2.5)), 1 / (1 + exp(0.5)), 0.5, 1 / (1 + exp(-0.5)),
                      1 / (1 + exp(-1.5))}},
        {&S_TANH, {tanh(-2.5), tanh(-0.5), 0, 0.46211715726000974, tanh(1.5)}},
        {&S_SOFTPLUS, {log1p(exp(-2.5)), log1p(exp(-0.5)), log(2.0), log1p(exp(0.5)),
                       log1p(exp(1.5))}},
        /* beta 2, threshold 1: linear where 2x > 1 */
        {&S_SOFTPLUS2, {log1p(exp(-5.0)) / 2, log1p(exp(-1.0)) / 2, log(2.0) / 2,
                        log1p(e) / 2, 1.5}},
        {&S_CLAMP, {-0.5, -0.5, 0, 0.5, 0.7}},
        {&S_CLAMP_LO, {-0.5, -0.5, 0, 0.5, 1.5}},
    };
    int ncases = (int)(sizeof cases / sizeof cases[0]);
    for (int k = 0; k < ncases; ++k) {
        r = NULL;
        CHECK_OK(apply((void *)cases[k].s, 1, &x, &r));
        CHECK_META(r, CG_FLOAT64, 1, 5);
        CHECK_VALS(r, 5, cases[k].w, 1e-14);
        cg_tensor_free(r);
    }
    /* round: more half-way cases */
    double hv[5] = {0.5, 1.5, 2.5, -1.5, -2.5};
    cg_tensor *h = T64(1, s5, hv);
    CHECK_OK(cg_round(h, &r));
    double hw[5] = {0, 2, 2, -2, -2};
    CHECK_VALS(r, 5, hw, 0);
    cg_tensor_free(r);
    cg_tensor_free(h);
    /* gelu tanh form at 1: 0.5 (1 + tanh(sqrt(2/pi) 1.044715)) */
    double one = 1.0;
    int64_t s1[1] = {1};
    cg_tensor *o = T64(1, s1, &one);
    CHECK_OK(cg_gelu(o, 1, &r));
    CHECK_CLOSE(cgt_at(r, 0), 0.8411919906082768, 1e-14);
    cg_tensor_free(r);
    CHECK_OK(cg_gelu(o, 0, &r));
    CHECK_CLOSE(cgt_at(r, 0), 0.8413447460685429, 1e-14);
    cg_tensor_free(r);
    cg_tensor_free(o);
    /* log and sqrt on positive values */
    double pv[5] = {1, e, 4, 0.25, 100};
    cg_tensor *p = T64(1, s5, pv);
    CHECK_OK(cg_log(p, &r));
    double lw[5] = {0, 1, log(4.0), log(0.25), log(100.0)};
    CHECK_VALS(r, 5, lw, 1e-15);
    cg_tensor_free(r);
    CHECK_OK(cg_sqrt(p, &r));
    double sw[5] = {1, sqrt(e), 2, 0.5, 10};
    CHECK_VALS(r, 5, sw, 1e-15);
    cg_tensor_free(r);
    cg_tensor_free(p);
    cg_tensor_free(x);

    /* softplus stays finite and accurate far out */
    double fv[5] = {-100, -30, 30, 100, 1000};
    cg_tensor *f = T64(1, s5, fv);
    spec sp_hi = {K_SOFTPLUS, NULL, NULL, NULL, 1.0, 1e9, NULL}; /* never linear */
    CHECK_OK(apply(&sp_hi, 1, &f, &r));
    double fw[5] = {exp(-100.0), exp(-30.0), 30 + log1p(exp(-30.0)), 100, 1000};
    CHECK_VALS(r, 5, fw, 1e-14);
    cg_tensor_free(r);
    cg_tensor_free(f);
}

static void test_unary_special_inputs(void) {
    /* NaN and infinities don't crash and follow PyTorch */
    int64_t s3[1] = {3};
    double nv[3] = {NAN, INFINITY, -INFINITY};
    cg_tensor *x = T64(1, s3, nv), *r = NULL;
    const spec *all[] = {&S_NEG, &S_EXP, &S_LOG, &S_SQRT, &S_ABS, &S_SIGN, &S_ROUND,
                         &S_FLOOR, &S_CEIL, &S_RELU, &S_SIGMOID, &S_TANH, &S_LEAKY, &S_ELU,
                         &S_GELU, &S_GELU_T, &S_SOFTPLUS, &S_CLAMP};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; ++k) {
        CHECK_OK(apply((void *)all[k], 1, &x, &r));
        CHECK(isnan(cgt_at(r, 0)) || all[k] == &S_SIGN); /* NaN propagates (sign gives 0) */
        cg_tensor_free(r);
        r = NULL;
    }
    CHECK_OK(cg_sigmoid(x, &r));
    double sw[3] = {NAN, 1, 0};
    CHECK_VALS(r, 3, sw, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_tanh(x, &r));
    double tw[3] = {NAN, 1, -1};
    CHECK_VALS(r, 3, tw, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_exp(x, &r));
    double ew[3] = {NAN, INFINITY, 0};
    CHECK_VALS(r, 3, ew, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_relu(x, &r));
    double rw[3] = {NAN, INFINITY, 0};
    CHECK_VALS(r, 3, rw, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_clamp(x, -1, 1, &r));
    double cw[3] = {NAN, 1, -1};
    CHECK_VALS(r, 3, cw, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_softplus(x, 1, 20, &r));
    double spw[3] = {NAN, INFINITY, 0};
    CHECK_VALS(r, 3, spw, 0);
    cg_tensor_free(r);
    /* float32 sigmoid of a large negative number: 0, not NaN */
    double big[3] = {-200, 200, 0};
    cg_tensor *b32 = T32(1, s3, big);
    CHECK_OK(cg_sigmoid(b32, &r));
    double bw[3] = {0, 1, 0.5};
    CHECK_VALS(r, 3, bw, 0);
    cg_tensor_free(r);
    cg_tensor_free(b32);
    cg_tensor_free(x);
}

static void test_unary_float32(void) {
    /* every op: float32 result matches float64 on the same values, for a
     * contiguous tensor and a transposed view */
    const spec *all[] = {&S_NEG, &S_EXP, &S_LOG, &S_SQRT, &S_ABS, &S_SIGN, &S_ROUND,
                         &S_FLOOR, &S_CEIL, &S_RELU, &S_SIGMOID, &S_TANH, &S_LEAKY, &S_ELU,
                         &S_GELU, &S_GELU_T, &S_SOFTPLUS, &S_SOFTPLUS2, &S_CLAMP};
    int64_t sh[2] = {33, 31};
    cg_manual_seed(9);
    cg_tensor *n = NULL, *x64 = NULL, *x32 = NULL, *t64 = NULL, *t32 = NULL;
    cg_randn(CG_FLOAT64, 2, sh, &n);
    cg_mul_scalar(n, 3.0, &x64);
    cg_to_dtype(x64, CG_FLOAT32, &x32);
    cg_to_dtype(x32, CG_FLOAT64, &t64); /* exactly the float32 values, in float64 */
    cg_tensor_free(x64);
    x64 = t64;
    cg_transpose(x32, 0, 1, &t32);
    cg_transpose(x64, 0, 1, &t64);
    for (size_t k = 0; k < sizeof all / sizeof all[0]; ++k) {
        int logish = all[k] == &S_LOG || all[k] == &S_SQRT;
        for (int view = 0; view < 2; ++view) {
            cg_tensor *a64 = view ? t64 : x64, *a32 = view ? t32 : x32;
            cg_tensor *p64 = NULL, *p32 = NULL, *r64 = NULL, *r32 = NULL;
            if (logish) { /* positive inputs */
                cg_abs(a64, &p64);
                cg_abs(a32, &p32);
            } else {
                cg_tensor_retain(a64);
                cg_tensor_retain(a32);
                p64 = a64;
                p32 = a32;
            }
            CHECK_OK(apply((void *)all[k], 1, &p64, &r64));
            CHECK_OK(apply((void *)all[k], 1, &p32, &r32));
            CHECK(cg_tensor_dtype(r32) == CG_FLOAT32);
            CHECK_META(r32, CG_FLOAT32, 2, view ? 31 : 33, view ? 33 : 31);
            double *w = vals(r64);
            CHECK_VALS(r32, 33 * 31, w, 2e-6);
            free(w);
            cg_tensor *tmp[4] = {p64, p32, r64, r32};
            free_all(4, tmp);
        }
    }
    cg_tensor *tmp[5] = {n, x64, x32, t64, t32};
    free_all(5, tmp);
}

/* float32 exp / log / tanh / sigmoid / elu / softplus over their whole
 * range (tails, overflow, subnormal results) against float64, within a few
 * float32 ulp. */
static void test_unary_float32_range(void) {
    enum { N = 4001 };
    static double xs[N];
    for (int i = 0; i < N; ++i) xs[i] = -105.0 + 200.0 * i / (N - 1); /* [-105, 95] */
    int64_t n[1] = {N};
    cg_tensor *x32 = T32(1, n, xs), *x64 = NULL, *p32 = NULL, *p64 = NULL;
    cg_to_dtype(x32, CG_FLOAT64, &x64); /* the exact float32 inputs */
    cg_abs(x32, &p32);
    cg_abs(x64, &p64);
    const spec *ops[] = {&S_EXP, &S_LOG, &S_TANH, &S_SIGMOID, &S_ELU, &S_SOFTPLUS};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; ++k) {
        cg_tensor *in32 = ops[k] == &S_LOG ? p32 : x32, *in64 = ops[k] == &S_LOG ? p64 : x64;
        cg_tensor *r32 = NULL, *r64 = NULL;
        CHECK_OK(apply((void *)ops[k], 1, &in32, &r32));
        CHECK_OK(apply((void *)ops[k], 1, &in64, &r64));
        double *g = vals(r32), *w = vals(r64);
        int bad = -1;
        for (int i = 0; i < N && bad < 0; ++i) {
            double want = (double)(float)w[i]; /* float32-representable reference */
            if (isinf(want)) {
                if (g[i] != want) bad = i;
            } else if (fabs(g[i] - w[i]) > 4 * 1.2e-7 * fabs(w[i]) + 3e-45) { /* + 2 subnormal ulp */
                bad = i;
            }
        }
        if (bad >= 0) {
            ++cgt_failed;
            fprintf(stderr, "%s:%d: FAIL: float32 op %zu at x=%g: %.9g, want %.9g\n", __FILE__,
                    __LINE__, k, xs[bad], g[bad], w[bad]);
        } else {
            ++cgt_passed;
        }
        free(g);
        free(w);
        cg_tensor_free(r32);
        cg_tensor_free(r64);
    }
    /* subnormal inputs / outputs */
    double sub[4] = {1e-40, 3e-45, -87.5, -100};
    int64_t s4[1] = {4};
    cg_tensor *t = T32(1, s4, sub), *r = NULL;
    CHECK_OK(cg_log(t, &r));
    CHECK_CLOSE(cgt_at(r, 0), log((double)(float)1e-40), 1e-6);
    CHECK_CLOSE(cgt_at(r, 1), log((double)(float)3e-45), 1e-6);
    cg_tensor_free(r);
    CHECK_OK(cg_exp(t, &r));
    CHECK(fabs(cgt_at(r, 2) - exp(-87.5)) <= 1.5e-45 + 1e-6 * exp(-87.5));
    CHECK(fabs(cgt_at(r, 3) - exp(-100.0)) <= 1.5e-45);
    cg_tensor_free(r);
    cg_tensor *tmp[5] = {x32, x64, p32, p64, t};
    free_all(5, tmp);
}

static void test_unary_grads(void) {
    int64_t s23[2] = {2, 3}, s4[1] = {4};
    cg_manual_seed(17);
    const spec *smooth[] = {&S_NEG, &S_EXP, &S_ABS, &S_RELU, &S_SIGMOID, &S_TANH, &S_LEAKY,
                            &S_ELU, &S_GELU, &S_GELU_T, &S_SOFTPLUS, &S_SOFTPLUS2, &S_CLAMP,
                            &S_CLAMP_LO};
    for (size_t k = 0; k < sizeof smooth / sizeof smooth[0]; ++k) {
        CHECK_GRADS(smooth[k], 1, cgt_randn64(2, s23));
        CHECK_GRADS(smooth[k], 1, cgt_randn64(0, NULL));
    }
    CHECK_GRADS(&S_LOG, 1, pos64(2, s23));
    CHECK_GRADS(&S_SQRT, 1, pos64(1, s4));
    const spec *flat[] = {&S_SIGN, &S_ROUND, &S_FLOOR, &S_CEIL};
    for (size_t k = 0; k < 4; ++k) CHECK_GRAD1(flat[k], 1, cgt_randn64(2, s23));

    /* hand-checked gradients: relu at 0 gives 0; clamp passes the bounds */
    int64_t s5[1] = {5};
    double xv[5] = {-2, -1, 0, 1, 2};
    cg_tensor *x = RG(T64(1, s5, xv)), *r = NULL, *l = NULL;
    CHECK_OK(cg_relu(x, &r));
    CHECK(strcmp(cg_tensor_grad_fn_name(r), "relu") == 0);
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double gr[5] = {0, 0, 0, 1, 1};
    CHECK_VALS(cg_tensor_grad(x), 5, gr, 0);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_set_grad(x, NULL);
    CHECK_OK(cg_clamp(x, -1, 1, &r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double gc[5] = {0, 1, 1, 1, 0};
    CHECK_VALS(cg_tensor_grad(x), 5, gc, 0);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_set_grad(x, NULL);
    CHECK_OK(cg_leaky_relu(x, 0.2, &r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    double gl[5] = {0.2, 0.2, 0.2, 1, 1};
    CHECK_VALS(cg_tensor_grad(x), 5, gl, 0);
    cg_tensor_free(r);
    cg_tensor_free(l);
    cg_tensor_set_grad(x, NULL);
    /* zero-gradient ops are still recorded and give zeros */
    un_fn zf[4] = {cg_sign, cg_round, cg_floor, cg_ceil};
    const char *zn[4] = {"sign", "round", "floor", "ceil"};
    for (int k = 0; k < 4; ++k) {
        CHECK_OK(zf[k](x, &r));
        CHECK(cg_tensor_grad_fn_name(r) && strcmp(cg_tensor_grad_fn_name(r), zn[k]) == 0);
        CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
        CHECK_OK(cg_backward(l, NULL, 0, 0));
        double z[5] = {0, 0, 0, 0, 0};
        CHECK_VALS(cg_tensor_grad(x), 5, z, 0);
        cg_tensor_free(r);
        cg_tensor_free(l);
        cg_tensor_set_grad(x, NULL);
    }
    /* float32 gradient stays float32 */
    double fv[4] = {-1, 0.5, 2, -0.25};
    cg_tensor *f = RG(T32(1, s4, fv));
    CHECK_OK(cg_tanh(f, &r));
    CHECK_OK(cg_sum(r, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_META(cg_tensor_grad(f), CG_FLOAT32, 1, 4);
    double gt[4];
    for (int k = 0; k < 4; ++k) gt[k] = 1 - tanh(fv[k]) * tanh(fv[k]);
    CHECK_VALS(cg_tensor_grad(f), 4, gt, 1e-6);
    cg_tensor *tmp[4] = {x, f, r, l};
    free_all(4, tmp);
}

/* Backward kernels in float32 against float64 on the same values, with
 * kinks and ties in the data (0 for relu-like ops, equal pairs for
 * minimum / maximum, the clamp bounds). */
static void grads_of(const spec *s, int n, cg_tensor **in, cg_tensor **g) {
    cg_tensor *y = NULL, *l = NULL;
    for (int i = 0; i < n; ++i) cg_tensor_set_grad(in[i], NULL);
    CHECK_OK(apply((void *)s, n, in, &y));
    cg_tensor *w = NULL, *yw = NULL; /* weights 1..k so the gradient is not uniform */
    cg_arange(cg_tensor_dtype(y), 1, 1 + (double)cg_tensor_numel(y), 1, &w);
    cg_tensor *w2 = NULL;
    cg_reshape(w, cg_tensor_ndim(y), cg_tensor_shape(y), &w2);
    CHECK_OK(cg_mul(y, w2, &yw));
    CHECK_OK(cg_sum(yw, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    for (int i = 0; i < n; ++i) {
        g[i] = cg_tensor_grad(in[i]);
        cg_tensor_retain(g[i]);
    }
    cg_tensor *tmp[5] = {y, l, w, yw, w2};
    free_all(5, tmp);
}

static void test_float32_grads(void) {
    int64_t s8[1] = {8};
    double xv[8] = {-2, -0.5, 0, 0, 0.3, 0.7, 1.5, -0.7};
    double yv[8] = {1, -0.5, 0, 2, 0.3, -1, 1.5, 0.25};
    const spec *un[] = {&S_NEG, &S_EXP, &S_ABS, &S_RELU, &S_SIGMOID, &S_TANH, &S_LEAKY, &S_ELU,
                        &S_GELU, &S_GELU_T, &S_SOFTPLUS, &S_SOFTPLUS2, &S_CLAMP, &S_SIGN};
    const spec *bin[] = {&S_ADD, &S_SUB, &S_MUL, &S_DIV, &S_MIN, &S_MAX};
    for (size_t k = 0; k < sizeof un / sizeof un[0] + sizeof bin / sizeof bin[0]; ++k) {
        int is_bin = k >= sizeof un / sizeof un[0];
        const spec *s = is_bin ? bin[k - sizeof un / sizeof un[0]] : un[k];
        int n = is_bin ? 2 : 1;
        const double *yy = s == &S_DIV ? xv : yv; /* avoid dividing by 0 */
        cg_tensor *a64[2] = {RG(T64(1, s8, xv)), RG(T64(1, s8, s == &S_DIV ? yv : yy))};
        cg_tensor *a32[2] = {RG(T32(1, s8, xv)), RG(T32(1, s8, s == &S_DIV ? yv : yy))};
        if (s == &S_DIV) { /* divide by y with y != 0 */
            double d[8] = {1, -0.5, 0.2, 2, 0.3, -1, 1.5, 0.25};
            cg_tensor_free(a64[1]);
            cg_tensor_free(a32[1]);
            a64[1] = RG(T64(1, s8, d));
            a32[1] = RG(T32(1, s8, d));
        }
        cg_tensor *g64[2] = {0}, *g32[2] = {0};
        grads_of(s, n, a64, g64);
        grads_of(s, n, a32, g32);
        for (int i = 0; i < n; ++i) {
            CHECK_META(g32[i], CG_FLOAT32, 1, 8);
            double *w = vals(g64[i]);
            CHECK_VALS(g32[i], 8, w, 1e-5);
            free(w);
        }
        free_all(2, a64);
        free_all(2, a32);
        free_all(n, g64);
        free_all(n, g32);
    }
}

/* A saved output modified in place (under no-grad) is detected at backward. */
static void test_saved_output_version(void) {
    int64_t s3[1] = {3};
    double xv[3] = {0.1, 0.2, 0.3};
    cg_tensor *x = RG(T64(1, s3, xv)), *y = NULL, *l = NULL;
    CHECK_OK(cg_exp(x, &y));
    uint64_t v0 = cg_tensor_version(y);
    CHECK_STATUS(cg_mul_scalar_(y, 2.0), CG_ERR_AUTOGRAD); /* grad mode on */
    CHECK(cg_tensor_version(y) == v0);
    int prev = cg_set_grad_enabled(0);
    CHECK_OK(cg_mul_scalar_(y, 2.0));
    cg_set_grad_enabled(prev);
    CHECK(cg_tensor_version(y) == v0 + 1);
    CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
    CHECK_STATUS(cg_backward(l, NULL, 0, 0), CG_ERR_AUTOGRAD);
    CHECK(strstr(cg_last_error(), "exp") != NULL);
    cg_tensor *tmp[3] = {x, y, l};
    free_all(3, tmp);
}

static void test_unary_int_and_errors(void) {
    int64_t s4[1] = {4};
    int64_t iv[4] = {-3, 0, 2, INT64_MIN};
    cg_tensor *i = TI(1, s4, iv), *r = NULL;
    CHECK_OK(cg_neg(i, &r));
    CHECK_META(r, CG_INT64, 1, 4);
    int64_t got[4];
    cg_tensor_copy_to(r, got, sizeof got);
    CHECK(got[0] == 3 && got[1] == 0 && got[2] == -2 && got[3] == INT64_MIN); /* wraps */
    cg_tensor_free(r);
    CHECK_OK(cg_abs(i, &r));
    cg_tensor_copy_to(r, got, sizeof got);
    CHECK(got[0] == 3 && got[1] == 0 && got[2] == 2);
    cg_tensor_free(r);
    CHECK_OK(cg_sign(i, &r));
    double ws[4] = {-1, 0, 1, -1};
    CHECK_VALS(r, 4, ws, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_relu(i, &r));
    double wr[4] = {0, 0, 2, 0};
    CHECK_VALS(r, 4, wr, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_round(i, &r));
    CHECK_META(r, CG_INT64, 1, 4);
    cg_tensor_free(r);
    CHECK_OK(cg_clamp(i, -1, INFINITY, &r));
    CHECK_META(r, CG_INT64, 1, 4);
    double wc[4] = {-1, 0, 2, -1};
    CHECK_VALS(r, 4, wc, 0);
    cg_tensor_free(r);
    CHECK_OK(cg_clamp(i, -1.5, 1.5, &r)); /* fractional bounds promote */
    CHECK_META(r, CG_FLOAT32, 1, 4);
    double wcf[4] = {-1.5, 0, 1.5, -1.5};
    CHECK_VALS(r, 4, wcf, 0);
    cg_tensor_free(r);
    /* float-only ops refuse integers and bools */
    un_fn fonly[5] = {cg_exp, cg_log, cg_sqrt, cg_sigmoid, cg_tanh};
    for (int k = 0; k < 5; ++k) {
        CHECK_STATUS(fonly[k](i, &r), CG_ERR_DTYPE);
        CHECK(r == NULL);
    }
    CHECK(strstr(cg_last_error(), "cg_tanh") && strstr(cg_last_error(), "int64"));
    CHECK_STATUS(cg_gelu(i, 0, &r), CG_ERR_DTYPE);
    CHECK_STATUS(cg_leaky_relu(i, 0.1, &r), CG_ERR_DTYPE);
    CHECK_STATUS(cg_elu(i, 1.0, &r), CG_ERR_DTYPE);
    CHECK_STATUS(cg_softplus(i, 1, 20, &r), CG_ERR_DTYPE);
    unsigned char bv[4] = {1, 0, 1, 0};
    cg_tensor *b = TB(1, s4, bv);
    CHECK_STATUS(cg_neg(b, &r), CG_ERR_DTYPE);
    CHECK_STATUS(cg_abs(b, &r), CG_ERR_DTYPE);
    CHECK_STATUS(cg_relu(b, &r), CG_ERR_DTYPE);
    /* bad parameters, NULLs */
    double fv[4] = {0, 1, 2, 3};
    cg_tensor *f = T64(1, s4, fv);
    CHECK_STATUS(cg_gelu(f, 2, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_softplus(f, 0.0, 20, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_clamp(f, NAN, 1, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_leaky_relu(f, NAN, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_exp(NULL, &r), CG_ERR_NULL);
    CHECK_STATUS(cg_exp(f, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_clamp(NULL, 0, 1, &r), CG_ERR_NULL);
    /* empty and 0-d */
    int64_t s0[1] = {0};
    cg_tensor *e = NULL, *s = NULL;
    cg_zeros(CG_FLOAT32, 1, s0, &e);
    CHECK_OK(cg_gelu(e, 0, &r));
    CHECK_META(r, CG_FLOAT32, 1, 0);
    cg_tensor_free(r);
    cg_scalar(CG_FLOAT32, -4.0, &s);
    CHECK_OK(cg_abs(s, &r));
    CHECK(cg_tensor_ndim(r) == 0);
    CHECK_CLOSE(cgt_at(r, 0), 4.0, 0);
    cg_tensor_free(r);
    cg_tensor *tmp[5] = {i, b, f, e, s};
    free_all(5, tmp);
}

/* ============================================================== in-place */
static void test_inplace_values(void) {
    int64_t s23[2] = {2, 3}, s3[1] = {3};
    double av[6] = {1, 2, 3, 4, 5, 6}, bv[3] = {10, 20, 30};
    cg_tensor *a = T64(2, s23, av), *b = T64(1, s3, bv);
    uint64_t v0 = cg_tensor_version(a);
    CHECK_OK(cg_add_(a, b, 0.5)); /* a += 0.5 b, b broadcast over rows */
    CHECK(cg_tensor_version(a) == v0 + 1);
    double w1[6] = {6, 12, 18, 9, 15, 21};
    CHECK_VALS(a, 6, w1, 0);
    CHECK_OK(cg_mul_(a, b));
    double w2[6] = {60, 240, 540, 90, 300, 630};
    CHECK_VALS(a, 6, w2, 0);
    CHECK_OK(cg_add_scalar_(a, -60));
    CHECK_OK(cg_mul_scalar_(a, 0.5));
    double w3[6] = {0, 90, 240, 15, 120, 285};
    CHECK_VALS(a, 6, w3, 0);
    CHECK(cg_tensor_version(a) == v0 + 4);
    CHECK_OK(cg_fill_(a, 2.5));
    double w4[6] = {2.5, 2.5, 2.5, 2.5, 2.5, 2.5};
    CHECK_VALS(a, 6, w4, 0);
    CHECK_OK(cg_zero_(a));
    double w5[6] = {0, 0, 0, 0, 0, 0};
    CHECK_VALS(a, 6, w5, 0);
    CHECK(cg_tensor_version(a) == v0 + 6);
    /* a 0-d source broadcast over the target */
    cg_tensor *s0 = NULL;
    cg_scalar(CG_FLOAT64, 3.0, &s0);
    CHECK_OK(cg_add_(a, s0, 2.0));
    CHECK_OK(cg_mul_(a, s0));
    double w45[6] = {18, 18, 18, 18, 18, 18};
    CHECK_VALS(a, 6, w45, 0);
    CHECK_OK(cg_copy_(a, s0));
    double w46[6] = {3, 3, 3, 3, 3, 3};
    CHECK_VALS(a, 6, w46, 0);
    cg_tensor_free(s0);
    CHECK_OK(cg_zero_(a));
    v0 = cg_tensor_version(a) - 6;
    /* copy_ with broadcast and a float32 -> float64 cast */
    cg_tensor *b32 = T32(1, s3, bv);
    CHECK_OK(cg_copy_(a, b32));
    double w6[6] = {10, 20, 30, 10, 20, 30};
    CHECK_VALS(a, 6, w6, 0);
    CHECK(cg_tensor_version(a) == v0 + 7);
    /* float64 -> float32, int64 -> float, float -> int64 (truncates), bool */
    double fv[3] = {1.25, -2.75, 3.5};
    cg_tensor *f64 = T64(1, s3, fv), *dst32 = NULL, *di = NULL, *db = NULL;
    cg_zeros(CG_FLOAT32, 1, s3, &dst32);
    CHECK_OK(cg_copy_(dst32, f64));
    CHECK_VALS(dst32, 3, fv, 0);
    cg_zeros(CG_INT64, 1, s3, &di);
    CHECK_OK(cg_copy_(di, f64));
    double wi[3] = {1, -2, 3};
    CHECK_VALS(di, 3, wi, 0);
    CHECK_OK(cg_copy_(a, di));
    double w7[6] = {1, -2, 3, 1, -2, 3};
    CHECK_VALS(a, 6, w7, 0);
    cg_zeros(CG_BOOL, 1, s3, &db);
    CHECK_OK(cg_copy_(db, f64));
    double wb[3] = {1, 1, 1};
    CHECK_VALS(db, 3, wb, 0);
    CHECK_OK(cg_fill_(db, 0));
    double wz[3] = {0, 0, 0};
    CHECK_VALS(db, 3, wz, 0);
    /* int64 targets */
    CHECK_OK(cg_add_(di, di, 3)); /* self-alias: x += 3x */
    double wi2[3] = {4, -8, 12};
    CHECK_VALS(di, 3, wi2, 0);
    CHECK_OK(cg_mul_scalar_(di, -1));
    CHECK_OK(cg_add_scalar_(di, 1));
    double wi3[3] = {-3, 9, -11};
    CHECK_VALS(di, 3, wi3, 0);
    CHECK_STATUS(cg_add_(di, f64, 1.0), CG_ERR_DTYPE);   /* float into int64 */
    CHECK_STATUS(cg_add_scalar_(di, 0.5), CG_ERR_DTYPE);
    CHECK_STATUS(cg_add_(di, di, 0.5), CG_ERR_DTYPE);    /* fractional alpha */
    CHECK_STATUS(cg_fill_(di, NAN), CG_ERR_VALUE);
    CHECK_STATUS(cg_add_scalar_(db, 1), CG_ERR_DTYPE);   /* bool arithmetic */
    /* float32 target with a float64 source: computed into float32 */
    CHECK_OK(cg_add_(dst32, f64, 2.0));
    double w8[3] = {3.75, -8.25, 10.5};
    CHECK_VALS(dst32, 3, w8, 0);
    cg_tensor *tmp[7] = {a, b, b32, f64, dst32, di, db};
    free_all(7, tmp);
}

static void test_inplace_views(void) {
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s22[2] = {2, 2};
    double av[6] = {1, 2, 3, 4, 5, 6};
    cg_tensor *a = T64(2, s23, av), *at = NULL, *b = NULL, *sl = NULL, *ex = NULL;
    /* write through a transposed view */
    CHECK_OK(cg_transpose(a, 0, 1, &at));
    cg_arange(CG_FLOAT64, 0, 6, 1, &b);
    cg_tensor *b32 = NULL;
    CHECK_OK(cg_reshape(b, 2, s32, &b32)); /* [[0,1],[2,3],[4,5]] */
    uint64_t v0 = cg_tensor_version(a);
    CHECK_OK(cg_add_(at, b32, 1.0));
    CHECK(cg_tensor_version(a) == v0 + 1); /* the storage's counter: shared by views */
    double w1[6] = {1, 4, 7, 5, 8, 11};
    CHECK_VALS(a, 6, w1, 0);
    /* a column slice */
    CHECK_OK(cg_slice(a, 1, 1, 3, 1, &sl)); /* (2,2): [[4,7],[8,11]] */
    CHECK_OK(cg_mul_scalar_(sl, 10));
    double w2[6] = {1, 40, 70, 5, 80, 110};
    CHECK_VALS(a, 6, w2, 0);
    CHECK_OK(cg_zero_(sl)); /* non-contiguous zero_ */
    double w3[6] = {1, 0, 0, 5, 0, 0};
    CHECK_VALS(a, 6, w3, 0);
    CHECK_OK(cg_fill_(at, -1)); /* non-contiguous fill_ */
    double w4[6] = {-1, -1, -1, -1, -1, -1};
    CHECK_VALS(a, 6, w4, 0);
    /* a += a.T overlaps: reads must see the old values */
    double sq[4] = {1, 2, 3, 4};
    cg_tensor *m = T64(2, s22, sq), *mt = NULL;
    CHECK_OK(cg_transpose(m, 0, 1, &mt));
    CHECK_OK(cg_add_(m, mt, 1.0));
    double w5[4] = {2, 5, 5, 8};
    CHECK_VALS(m, 4, w5, 0);
    CHECK_OK(cg_copy_(m, mt)); /* m = m.T: a symmetric result stays */
    CHECK_VALS(m, 4, w5, 0);
    /* expanded target: refused */
    int64_t s1[2] = {1, 3}, s43[2] = {4, 3};
    cg_tensor *row = NULL;
    cg_ones(CG_FLOAT64, 2, s1, &row);
    CHECK_OK(cg_expand(row, 2, s43, &ex));
    CHECK_STATUS(cg_add_scalar_(ex, 1), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "cg_add_scalar_") && strstr(cg_last_error(), "overlap"));
    CHECK_STATUS(cg_fill_(ex, 1), CG_ERR_VALUE);
    CHECK_STATUS(cg_copy_(ex, row), CG_ERR_VALUE);
    /* expanded source is fine */
    cg_tensor *dst = NULL;
    cg_zeros(CG_FLOAT64, 2, s43, &dst);
    CHECK_OK(cg_add_(dst, ex, 2));
    double w6[12] = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};
    CHECK_VALS(dst, 12, w6, 0);
    cg_tensor *tmp[11] = {a, at, b, b32, sl, ex, m, mt, row, dst, NULL};
    free_all(10, tmp);
}

static void test_inplace_refusals(void) {
    int64_t s3[1] = {3}, s4[1] = {4}, s23[2] = {2, 3};
    double xv[3] = {1, 2, 3};
    cg_tensor *w = RG(T64(1, s3, xv)), *b = T64(1, s3, xv), *c = NULL, *m = NULL;
    uint64_t v0 = cg_tensor_version(w);
    CHECK_STATUS(cg_add_(w, b, 1.0), CG_ERR_AUTOGRAD);
    CHECK(strcmp(cg_last_error(),
                 "cg_add_: in-place op on a tensor that requires grad while grad mode is on; "
                 "wrap the update in no-grad") == 0);
    CHECK_STATUS(cg_mul_(w, b), CG_ERR_AUTOGRAD);
    CHECK_STATUS(cg_add_scalar_(w, 1), CG_ERR_AUTOGRAD);
    CHECK_STATUS(cg_mul_scalar_(w, 1), CG_ERR_AUTOGRAD);
    CHECK_STATUS(cg_zero_(w), CG_ERR_AUTOGRAD);
    CHECK_STATUS(cg_fill_(w, 1), CG_ERR_AUTOGRAD);
    CHECK_STATUS(cg_copy_(w, b), CG_ERR_AUTOGRAD);
    CHECK(strstr(cg_last_error(), "cg_copy_") != NULL);
    CHECK(cg_tensor_version(w) == v0);
    CHECK_VALS(w, 3, xv, 0);
    /* under no-grad: an optimizer-style update works */
    int prev = cg_set_grad_enabled(0);
    CHECK_OK(cg_add_(w, b, -0.5));
    cg_set_grad_enabled(prev);
    double w1[3] = {0.5, 1, 1.5};
    CHECK_VALS(w, 3, w1, 0);
    CHECK(cg_tensor_version(w) == v0 + 1);
    /* shape errors: source must broadcast to the target's shape */
    cg_ones(CG_FLOAT64, 1, s4, &c);
    cg_ones(CG_FLOAT64, 2, s23, &m);
    CHECK_STATUS(cg_add_(b, c, 1.0), CG_ERR_SHAPE);
    CHECK_STATUS(cg_add_(b, m, 1.0), CG_ERR_SHAPE); /* would grow the target */
    CHECK(strstr(cg_last_error(), "(2, 3)") && strstr(cg_last_error(), "(3,)"));
    CHECK_STATUS(cg_mul_(b, m), CG_ERR_SHAPE);
    CHECK_STATUS(cg_copy_(b, m), CG_ERR_SHAPE);
    CHECK_VALS(b, 3, xv, 0);
    /* NULL */
    CHECK_STATUS(cg_add_(NULL, b, 1), CG_ERR_NULL);
    CHECK_STATUS(cg_add_(b, NULL, 1), CG_ERR_NULL);
    CHECK_STATUS(cg_mul_(NULL, b), CG_ERR_NULL);
    CHECK_STATUS(cg_zero_(NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_fill_(NULL, 0), CG_ERR_NULL);
    CHECK_STATUS(cg_copy_(b, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_add_scalar_(NULL, 0), CG_ERR_NULL);
    CHECK_STATUS(cg_mul_scalar_(NULL, 0), CG_ERR_NULL);
    /* empty target: fine, version still bumps */
    int64_t s0[1] = {0};
    cg_tensor *e = NULL;
    cg_zeros(CG_FLOAT32, 1, s0, &e);
    uint64_t ve = cg_tensor_version(e);
    CHECK_OK(cg_add_scalar_(e, 1));
    CHECK(cg_tensor_version(e) == ve + 1);
    cg_tensor *tmp[5] = {w, b, c, m, e};
    free_all(5, tmp);
}

static void test_inplace_large(void) {
    /* long contiguous rows (the optimizer path) in float32 against float64 */
    int64_t n[1] = {100003};
    cg_tensor *p = NULL, *g = NULL, *p64 = NULL, *g64 = NULL;
    cg_manual_seed(1);
    cg_randn(CG_FLOAT32, 1, n, &p);
    cg_randn(CG_FLOAT32, 1, n, &g);
    cg_to_dtype(p, CG_FLOAT64, &p64);
    cg_to_dtype(g, CG_FLOAT64, &g64);
    CHECK_OK(cg_mul_scalar_(p, 0.9f));
    CHECK_OK(cg_add_(p, g, -0.01));
    CHECK_OK(cg_mul_scalar_(p64, (double)0.9f));
    CHECK_OK(cg_add_(p64, g64, -0.01));
    double *w = vals(p64);
    CHECK_VALS(p, n[0], w, 1e-6);
    free(w);
    cg_tensor *tmp[4] = {p, g, p64, g64};
    free_all(4, tmp);
}

int main(void) {
    test_binary_values();
    test_binary_float32();
    test_binary_grads();
    test_binary_grad_values();
    test_binary_int_bool();
    test_binary_noncontig();
    test_binary_empty_and_errors();
    test_compare_where();
    test_scalar_ops();
    test_unary_values();
    test_unary_special_inputs();
    test_unary_float32();
    test_unary_float32_range();
    test_unary_grads();
    test_float32_grads();
    test_saved_output_version();
    test_unary_int_and_errors();
    test_inplace_values();
    test_inplace_views();
    test_inplace_refusals();
    test_inplace_large();
    return cgt_report(__FILE__);
}
