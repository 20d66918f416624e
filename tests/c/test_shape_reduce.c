/* test_shape_reduce.c -- reductions, shape ops and indexing: values against
 * hand-computed numbers, float64 gradcheck, second derivatives, float32
 * runs, views sharing storage and error statuses. */
#include <stdlib.h>

#include "cgtest.h"

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define NELEM(a) ((int64_t)(sizeof(a) / sizeof *(a)))

/* ---------------------------------------------------------------- helpers */
static cg_tensor *f64(int ndim, const int64_t *shape, const double *data) {
    return cgt_f64(ndim, shape, data);
}

static cg_tensor *f32(int ndim, const int64_t *shape, const double *data) {
    cg_tensor *t = cgt_f64(ndim, shape, data), *r = NULL;
    if (t && cg_to_dtype(t, CG_FLOAT32, &r) != CG_OK) r = NULL;
    cg_tensor_free(t);
    return r;
}

static cg_tensor *i64(int ndim, const int64_t *shape, const int64_t *data) {
    cg_tensor *t = NULL;
    if (cg_from_data(CG_INT64, ndim, shape, data, &t) != CG_OK) return NULL;
    return t;
}

/* Row-major elements of t equal want[0..n) within tol (relative + 1). */
static int vals_close(const cg_tensor *t, const double *want, int64_t n, double tol) {
    if (!t) {
        fprintf(stderr, "  tensor is NULL\n");
        return 0;
    }
    if (cg_tensor_numel(t) != n) {
        fprintf(stderr, "  numel %lld, want %lld\n", (long long)cg_tensor_numel(t), (long long)n);
        return 0;
    }
    for (int64_t i = 0; i < n; ++i) {
        double g = cgt_at(t, i), w = want[i];
        int ok = (isnan(w) && isnan(g)) || (isinf(w) && g == w) || fabs(g - w) <= tol * (1.0 + fabs(w));
        if (!ok) {
            fprintf(stderr, "  element %lld: got %.10g, want %.10g\n", (long long)i, g, w);
            return 0;
        }
    }
    return 1;
}

#define CHECK_VALS(t, tol, ...)                                                \
    do {                                                                       \
        const double w_[] = {__VA_ARGS__};                                     \
        CHECK(vals_close((t), w_, NELEM(w_), (tol)));                          \
    } while (0)

static int shape_is(const cg_tensor *t, int ndim, const int64_t *shape) {
    if (!t || cg_tensor_ndim(t) != ndim) return 0;
    for (int d = 0; d < ndim; ++d)
        if (cg_tensor_shape(t)[d] != shape[d]) return 0;
    return 1;
}

#define CHECK_SHAPE(t, ndim, ...) CHECK(shape_is((t), (ndim), SH(__VA_ARGS__)))
#define CHECK_SHAPE0(t) CHECK(shape_is((t), 0, NULL))

/* Element-wise agreement of two tensors of equal numel. */
static int same_vals(const cg_tensor *a, const cg_tensor *b, double tol) {
    if (!a || !b || cg_tensor_numel(a) != cg_tensor_numel(b)) return 0;
    for (int64_t i = 0; i < cg_tensor_numel(a); ++i) {
        double x = cgt_at(a, i), y = cgt_at(b, i);
        if (!(fabs(x - y) <= tol * (1.0 + fabs(y))) && !(isnan(x) && isnan(y))) {
            fprintf(stderr, "  element %lld: %.10g vs %.10g\n", (long long)i, x, y);
            return 0;
        }
    }
    return 1;
}

static void free_all(cg_tensor **ts, int n) {
    for (int i = 0; i < n; ++i) cg_tensor_free(ts[i]);
}

/* ------------------------------------------------- one closure for all ops */
enum {
    K_SUM, K_MEAN, K_VAR, K_MAX, K_MIN, K_LSE, K_SOFTMAX, K_LOG_SOFTMAX, K_SUM_TO,
    K_RESHAPE, K_PERMUTE, K_TRANSPOSE, K_EXPAND, K_SQUEEZE, K_SQUEEZE_ALL, K_UNSQUEEZE,
    K_SLICE, K_SELECT, K_CAT, K_STACK, K_CONTIG, K_CLONE, K_INDEX_SELECT, K_INDEX_ADD,
    K_GATHER, K_SCATTER_ADD, K_EMBEDDING
};

typedef struct opctx {
    int kind;
    int dims[CG_MAX_DIMS], ndims, keepdim, dim;
    double corr;
    int ndim; /* target shape (reshape, expand, sum_to_shape) or perm */
    int64_t shape[CG_MAX_DIMS];
    int perm[CG_MAX_DIMS];
    int64_t start, stop, step;
    cg_tensor *index;  /* int64 index for the indexing ops */
    int pre_transpose; /* transpose input 0 (dims 0, 1) first: non-contiguous input */
    int square;        /* return op(x)^2 so that linear ops get curvature */
} opctx;

static cg_status apply_op(const opctx *c, int n, cg_tensor *const *in, cg_tensor **out) {
    cg_tensor *x = in[0], *xt = NULL;
    cg_status st = CG_OK;
    if (c->pre_transpose) {
        st = cg_transpose(in[0], 0, 1, &xt);
        if (st) return st;
        x = xt;
    }
    const int *dims = c->ndims ? c->dims : NULL;
    cg_tensor *y = NULL;
    switch (c->kind) {
    case K_SUM: st = cg_sum(x, dims, c->ndims, c->keepdim, &y); break;
    case K_MEAN: st = cg_mean(x, dims, c->ndims, c->keepdim, &y); break;
    case K_VAR: st = cg_var(x, dims, c->ndims, c->corr, c->keepdim, &y); break;
    case K_MAX: st = cg_max(x, dims, c->ndims, c->keepdim, &y); break;
    case K_MIN: st = cg_min(x, dims, c->ndims, c->keepdim, &y); break;
    case K_LSE: st = cg_logsumexp(x, dims, c->ndims, c->keepdim, &y); break;
    case K_SOFTMAX: st = cg_softmax(x, c->dim, &y); break;
    case K_LOG_SOFTMAX: st = cg_log_softmax(x, c->dim, &y); break;
    case K_SUM_TO: st = cg_sum_to_shape(x, c->ndim, c->shape, &y); break;
    case K_RESHAPE: st = cg_reshape(x, c->ndim, c->shape, &y); break;
    case K_PERMUTE: st = cg_permute(x, c->perm, &y); break;
    case K_TRANSPOSE: st = cg_transpose(x, c->dims[0], c->dims[1], &y); break;
    case K_EXPAND: st = cg_expand(x, c->ndim, c->shape, &y); break;
    case K_SQUEEZE: st = cg_squeeze(x, c->dim, &y); break;
    case K_SQUEEZE_ALL: st = cg_squeeze_all(x, &y); break;
    case K_UNSQUEEZE: st = cg_unsqueeze(x, c->dim, &y); break;
    case K_SLICE: st = cg_slice(x, c->dim, c->start, c->stop, c->step, &y); break;
    case K_SELECT: st = cg_select(x, c->dim, c->start, &y); break;
    case K_CAT: {
        cg_tensor *ts[3] = {x, in[1 % n], in[2 % n]};
        st = cg_cat(n, ts, c->dim, &y);
        break;
    }
    case K_STACK: {
        cg_tensor *ts[3] = {x, in[1 % n], in[2 % n]};
        st = cg_stack(n, ts, c->dim, &y);
        break;
    }
    case K_CONTIG: st = cg_contiguous(x, &y); break;
    case K_CLONE: st = cg_clone(x, &y); break;
    case K_INDEX_SELECT: st = cg_index_select(x, c->dim, c->index, &y); break;
    case K_INDEX_ADD: st = cg_index_add(x, c->dim, c->index, in[1], &y); break;
    case K_GATHER: st = cg_gather(x, c->dim, c->index, &y); break;
    case K_SCATTER_ADD: st = cg_scatter_add(x, c->dim, c->index, in[1], &y); break;
    case K_EMBEDDING: st = cg_embedding(x, c->index, &y); break;
    default: st = CG_ERR_VALUE; break;
    }
    cg_tensor_free(xt);
    if (st) return st;
    if (c->square) {
        st = cg_mul(y, y, out);
        cg_tensor_free(y);
        return st;
    }
    *out = y;
    return CG_OK;
}

static cg_status op_fn(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    return apply_op((const opctx *)ctx, n, in, out);
}

/* Second derivative: inputs (x..., w); returns d sum(op(x) * w) / d x[0]
 * built with create_graph, so gradcheck differentiates the backward. */
static cg_status gg_fn(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    int prev = cg_set_grad_enabled(1);
    cg_tensor *y = NULL, *yw = NULL, *l = NULL;
    cg_status st = apply_op((const opctx *)ctx, n - 1, in, &y);
    if (!st) st = cg_mul(y, in[n - 1], &yw);
    if (!st) st = cg_sum(yw, NULL, 0, 0, &l);
    if (!st) st = cg_grad(1, &l, NULL, 1, in, 1, 1, 0, out); /* retained: the outer backward walks the forward graph again */
    cg_tensor_free(y);
    cg_tensor_free(yw);
    cg_tensor_free(l);
    cg_set_grad_enabled(prev);
    return st;
}

/* gradcheck of op on fresh float64 inputs of the given shapes (n inputs). */
static void gradcheck_op(const opctx *c, int n, const int *ndims, const int64_t (*shapes)[CG_MAX_DIMS],
                         int line) {
    cg_tensor *in[4] = {0};
    for (int i = 0; i < n; ++i) in[i] = cgt_randn64(ndims[i], shapes[i]);
    cg_status st = cg_gradcheck(op_fn, (void *)c, n, in, 1e-6, 1e-6, 1e-4);
    if (st == CG_OK) ++cgt_passed;
    else CGT_FAIL_("line %d: gradcheck (kind %d): %s", line, c->kind, cg_last_error());
    free_all(in, n);
}

/* gradgradcheck: also differentiates w, the weight on the output. */
static void gradgradcheck_op(const opctx *c, int n, const int *ndims,
                             const int64_t (*shapes)[CG_MAX_DIMS], int line) {
    cg_tensor *in[5] = {0}, *y = NULL;
    for (int i = 0; i < n; ++i) in[i] = cgt_randn64(ndims[i], shapes[i]);
    cg_status st = apply_op(c, n, in, &y);
    if (!st) {
        in[n] = cgt_randn64(cg_tensor_ndim(y), cg_tensor_shape(y));
        st = cg_gradcheck(gg_fn, (void *)c, n + 1, in, 1e-6, 1e-5, 1e-3);
    }
    if (st == CG_OK) ++cgt_passed;
    else CGT_FAIL_("line %d: gradgradcheck (kind %d): %s", line, c->kind, cg_last_error());
    cg_tensor_free(y);
    free_all(in, n + 1);
}

/* One-input checks: GC(ctx, ndim, shape...) and GGC(...). */
#define GC(ctx, nd, ...)                                                       \
    do {                                                                       \
        int nd_[1] = {nd};                                                     \
        int64_t sh_[1][CG_MAX_DIMS] = {{__VA_ARGS__}};                         \
        gradcheck_op(&(ctx), 1, nd_, (const int64_t(*)[CG_MAX_DIMS])sh_, __LINE__); \
    } while (0)
#define GGC(ctx, nd, ...)                                                      \
    do {                                                                       \
        int nd_[1] = {nd};                                                     \
        int64_t sh_[1][CG_MAX_DIMS] = {{__VA_ARGS__}};                         \
        gradgradcheck_op(&(ctx), 1, nd_, (const int64_t(*)[CG_MAX_DIMS])sh_, __LINE__); \
    } while (0)

static opctx red(int kind, int ndims, int d0, int d1, int keepdim) {
    opctx c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.ndims = ndims;
    c.dims[0] = d0;
    c.dims[1] = d1;
    c.keepdim = keepdim;
    c.corr = 1.0;
    return c;
}

/* ------------------------------------------------------------- reductions */
static const double X23[6] = {1, 2, 3, 4, 5, 6}; /* (2, 3) */

static void test_sum_values(void) {
    cg_tensor *x = f64(2, SH(2, 3), X23), *y = NULL;
    CHECK_OK(cg_sum(x, NULL, 0, 0, &y));
    CHECK_SHAPE0(y);
    CHECK_VALS(y, 1e-15, 21);
    cg_tensor_free(y);
    int d0 = 0, dm1 = -1, both[2] = {1, 0};
    CHECK_OK(cg_sum(x, &d0, 1, 0, &y));
    CHECK_SHAPE(y, 1, 3);
    CHECK_VALS(y, 1e-15, 5, 7, 9);
    cg_tensor_free(y);
    CHECK_OK(cg_sum(x, &dm1, 1, 1, &y));
    CHECK_SHAPE(y, 2, 2, 1);
    CHECK_VALS(y, 1e-15, 6, 15);
    cg_tensor_free(y);
    CHECK_OK(cg_sum(x, both, 2, 1, &y));
    CHECK_SHAPE(y, 2, 1, 1);
    CHECK_VALS(y, 1e-15, 21);
    cg_tensor_free(y);
    /* Non-contiguous inputs: transposed (3, 2), expanded, stepped slice. */
    cg_tensor *xt = NULL, *e = NULL, *s = NULL, *x1 = NULL;
    CHECK_OK(cg_transpose(x, 0, 1, &xt));
    CHECK_OK(cg_sum(xt, &d0, 1, 0, &y));
    CHECK_VALS(y, 1e-15, 6, 15);
    cg_tensor_free(y);
    CHECK_OK(cg_sum(xt, &dm1, 1, 0, &y));
    CHECK_VALS(y, 1e-15, 5, 7, 9);
    cg_tensor_free(y);
    CHECK_OK(cg_sum(xt, NULL, 0, 0, &y));
    CHECK_VALS(y, 1e-15, 21);
    cg_tensor_free(y);
    CHECK_OK(cg_reshape(x, 3, SH(2, 1, 3), &x1));
    CHECK_OK(cg_expand(x1, 3, SH(2, 4, 3), &e));
    int d1 = 1, d02[2] = {0, 2};
    CHECK_OK(cg_sum(e, &d1, 1, 0, &y));
    CHECK_VALS(y, 1e-15, 4, 8, 12, 16, 20, 24);
    cg_tensor_free(y);
    CHECK_OK(cg_sum(e, d02, 2, 0, &y));
    CHECK_VALS(y, 1e-15, 21, 21, 21, 21);
    cg_tensor_free(y);
    CHECK_OK(cg_slice(x, 1, 0, 3, 2, &s)); /* columns 0 and 2 */
    CHECK_OK(cg_sum(s, &d0, 1, 0, &y));
    CHECK_VALS(y, 1e-15, 5, 9);
    cg_tensor_free(y);
    CHECK_OK(cg_sum(s, NULL, 0, 0, &y));
    CHECK_VALS(y, 1e-15, 14);
    cg_tensor_free(y);
    /* 3-D with interleaved kept / reduced dims (pack path). */
    double v[24];
    for (int i = 0; i < 24; ++i) v[i] = i;
    cg_tensor *z = f64(3, SH(2, 3, 4), v), *zp = NULL;
    int d2 = 2;
    CHECK_OK(cg_sum(z, d02, 2, 0, &y)); /* sum over i, k of 12i + 4j + k */
    CHECK_VALS(y, 1e-15, 60, 92, 124);
    cg_tensor_free(y);
    CHECK_OK(cg_permute(z, (const int[]){2, 0, 1}, &zp)); /* (4, 2, 3) */
    CHECK_OK(cg_sum(zp, &d2, 1, 0, &y));                   /* over j */
    CHECK_SHAPE(y, 2, 4, 2);
    CHECK_VALS(y, 1e-15, 12, 48, 15, 51, 18, 54, 21, 57);
    cg_tensor_free(y);
    CHECK_OK(cg_sum(zp, d02, 2, 0, &y)); /* over k, j -> per i */
    CHECK_VALS(y, 1e-15, 66, 210);
    cg_tensor_free(y);
    /* 0-d input, dim 0 allowed. */
    cg_tensor *sc = NULL;
    CHECK_OK(cg_scalar(CG_FLOAT64, 5.0, &sc));
    CHECK_OK(cg_sum(sc, &d0, 1, 0, &y));
    CHECK_SHAPE0(y);
    CHECK_VALS(y, 0, 5);
    cg_tensor_free(y);
    cg_tensor_free(sc);
    cg_tensor_free(z);
    cg_tensor_free(zp);
    cg_tensor_free(xt);
    cg_tensor_free(x1);
    cg_tensor_free(e);
    cg_tensor_free(s);
    cg_tensor_free(x);
}

static void test_sum_dtypes(void) {
    cg_tensor *xi = i64(2, SH(2, 2), (const int64_t[]){1, 2, 3, 40}), *y = NULL, *b = NULL, *x = NULL;
    int d0 = 0;
    CHECK_OK(cg_sum(xi, &d0, 1, 0, &y));
    CHECK(cg_tensor_dtype(y) == CG_INT64);
    CHECK_VALS(y, 0, 4, 42);
    cg_tensor_free(y);
    CHECK_OK(cg_to_dtype(xi, CG_BOOL, &b));
    CHECK_OK(cg_sum(b, NULL, 0, 0, &y)); /* bool sums count, as int64 */
    CHECK(cg_tensor_dtype(y) == CG_INT64);
    CHECK_VALS(y, 0, 4);
    cg_tensor_free(y);
    CHECK_STATUS(cg_mean(xi, NULL, 0, 0, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_var(xi, NULL, 0, 1.0, 0, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_logsumexp(xi, NULL, 0, 0, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_softmax(xi, 0, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_log_softmax(b, 0, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_max(b, NULL, 0, 0, &y), CG_ERR_DTYPE);
    CHECK_OK(cg_max(xi, &d0, 1, 0, &y));
    CHECK(cg_tensor_dtype(y) == CG_INT64);
    CHECK_VALS(y, 0, 3, 40);
    cg_tensor_free(y);
    CHECK_OK(cg_min(xi, NULL, 0, 0, &y));
    CHECK_VALS(y, 0, 1);
    cg_tensor_free(y);
    /* float32: 2e7 ones; a plain float running sum stalls at 2^24. */
    int64_t n = 20000000;
    CHECK_OK(cg_ones(CG_FLOAT32, 1, &n, &x));
    CHECK_OK(cg_sum(x, NULL, 0, 0, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 2e7);
    cg_tensor_free(y);
    CHECK_OK(cg_mean(x, NULL, 0, 0, &y));
    CHECK_VALS(y, 0, 1.0);
    cg_tensor_free(y);
    cg_tensor_free(x);
    /* float32 column sums over many rows keep their accuracy too. */
    CHECK_OK(cg_full(CG_FLOAT32, 2, SH(5000000, 2), 0.1, &x));
    CHECK_OK(cg_sum(x, &d0, 1, 0, &y));
    CHECK_VALS(y, 1e-7, 5000000 * (double)0.1f, 5000000 * (double)0.1f);
    cg_tensor_free(y);
    cg_tensor_free(x);
    cg_tensor_free(b);
    cg_tensor_free(xi);
}

static void test_empty_reductions(void) {
    cg_tensor *x = NULL, *y = NULL;
    int d0 = 0, d1 = 1;
    CHECK_OK(cg_zeros(CG_FLOAT64, 2, SH(0, 3), &x));
    CHECK_OK(cg_sum(x, &d0, 1, 0, &y));
    CHECK_SHAPE(y, 1, 3);
    CHECK_VALS(y, 0, 0, 0, 0);
    cg_tensor_free(y);
    CHECK_OK(cg_sum(x, NULL, 0, 0, &y));
    CHECK_VALS(y, 0, 0);
    cg_tensor_free(y);
    CHECK_OK(cg_mean(x, &d0, 1, 0, &y));
    CHECK_VALS(y, 0, NAN, NAN, NAN);
    cg_tensor_free(y);
    CHECK_OK(cg_logsumexp(x, &d0, 1, 0, &y));
    CHECK_VALS(y, 0, -INFINITY, -INFINITY, -INFINITY);
    cg_tensor_free(y);
    CHECK_STATUS(cg_max(x, &d0, 1, 0, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_min(x, NULL, 0, 0, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_argmax(x, 0, 0, 0, &y), CG_ERR_VALUE);
    CHECK(y == NULL);
    CHECK_OK(cg_max(x, &d1, 1, 0, &y)); /* nothing to reduce into: empty result */
    CHECK_SHAPE(y, 1, 0);
    cg_tensor_free(y);
    CHECK_OK(cg_softmax(x, 0, &y));
    CHECK_SHAPE(y, 2, 0, 3);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

static void test_mean_var(void) {
    cg_tensor *x = f64(2, SH(2, 3), X23), *y = NULL;
    int d0 = 0, d1 = 1;
    CHECK_OK(cg_mean(x, NULL, 0, 0, &y));
    CHECK_VALS(y, 1e-15, 3.5);
    cg_tensor_free(y);
    CHECK_OK(cg_mean(x, &d1, 1, 1, &y));
    CHECK_SHAPE(y, 2, 2, 1);
    CHECK_VALS(y, 1e-15, 2, 5);
    cg_tensor_free(y);
    CHECK_OK(cg_var(x, NULL, 0, 1.0, 0, &y)); /* sum of squares 17.5 */
    CHECK_VALS(y, 1e-14, 3.5);
    cg_tensor_free(y);
    CHECK_OK(cg_var(x, NULL, 0, 0.0, 0, &y));
    CHECK_VALS(y, 1e-14, 17.5 / 6.0);
    cg_tensor_free(y);
    CHECK_OK(cg_var(x, &d0, 1, 1.0, 0, &y));
    CHECK_VALS(y, 1e-14, 4.5, 4.5, 4.5);
    cg_tensor_free(y);
    CHECK_OK(cg_var(x, &d1, 1, 0.0, 1, &y));
    CHECK_VALS(y, 1e-14, 2.0 / 3.0, 2.0 / 3.0);
    cg_tensor_free(y);
    CHECK_STATUS(cg_var(x, NULL, 0, -1.0, 0, &y), CG_ERR_VALUE);
    /* float32 agrees */
    cg_tensor *x32 = f32(2, SH(2, 3), X23);
    CHECK_OK(cg_var(x32, &d0, 1, 1.0, 0, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 1e-6, 4.5, 4.5, 4.5);
    cg_tensor_free(y);
    CHECK_OK(cg_mean(x32, &d0, 1, 0, &y));
    CHECK_VALS(y, 1e-6, 2.5, 3.5, 4.5);
    cg_tensor_free(y);
    cg_tensor_free(x32);
    cg_tensor_free(x);
}

static void test_max_min_arg(void) {
    const double v[6] = {1, 5, 5, 7, 0, 7};
    cg_tensor *x = f64(2, SH(2, 3), v), *y = NULL, *xt = NULL;
    int d0 = 0, d1 = 1;
    CHECK_OK(cg_max(x, &d1, 1, 0, &y));
    CHECK_VALS(y, 0, 5, 7);
    cg_tensor_free(y);
    CHECK_OK(cg_max(x, &d0, 1, 1, &y));
    CHECK_SHAPE(y, 2, 1, 3);
    CHECK_VALS(y, 0, 7, 5, 7);
    cg_tensor_free(y);
    CHECK_OK(cg_min(x, NULL, 0, 0, &y));
    CHECK_VALS(y, 0, 0);
    cg_tensor_free(y);
    CHECK_OK(cg_min(x, &d0, 1, 0, &y));
    CHECK_VALS(y, 0, 1, 0, 5);
    cg_tensor_free(y);
    CHECK_OK(cg_argmax(x, 1, 0, 0, &y));
    CHECK(cg_tensor_dtype(y) == CG_INT64);
    CHECK_VALS(y, 0, 1, 0); /* first occurrence */
    cg_tensor_free(y);
    CHECK_OK(cg_argmin(x, -1, 1, 0, &y));
    CHECK_SHAPE(y, 2, 2, 1);
    CHECK_VALS(y, 0, 0, 1);
    cg_tensor_free(y);
    CHECK_OK(cg_argmax(x, 0, 0, 1, &y)); /* flattened */
    CHECK_SHAPE0(y);
    CHECK_VALS(y, 0, 3);
    cg_tensor_free(y);
    CHECK_OK(cg_argmax(x, 0, 0, 0, &y));
    CHECK_VALS(y, 0, 1, 0, 1);
    cg_tensor_free(y);
    /* transposed (3, 2): [[1,7],[5,0],[5,7]]: row-major flat positions */
    CHECK_OK(cg_transpose(x, 0, 1, &xt));
    CHECK_OK(cg_argmax(xt, 0, 0, 1, &y));
    CHECK_VALS(y, 0, 1);
    cg_tensor_free(y);
    CHECK_OK(cg_argmin(xt, 0, 0, 1, &y));
    CHECK_VALS(y, 0, 3);
    cg_tensor_free(y);
    CHECK_OK(cg_argmax(xt, 1, 0, 0, &y));
    CHECK_VALS(y, 0, 1, 0, 1);
    cg_tensor_free(y);
    CHECK_OK(cg_max(xt, &d0, 1, 0, &y));
    CHECK_VALS(y, 0, 5, 7);
    cg_tensor_free(y);
    CHECK_OK(cg_argmin(x, 0, 1, 1, &y)); /* flattened, keepdim: all-ones shape */
    CHECK_SHAPE(y, 2, 1, 1);
    CHECK_VALS(y, 0, 4);
    cg_tensor_free(y);
    CHECK_STATUS(cg_argmax(x, 2, 0, 0, &y), CG_ERR_INDEX);
    /* NaN propagates */
    const double vn[4] = {1, NAN, 3, 2};
    cg_tensor *xn = f64(2, SH(2, 2), vn);
    CHECK_OK(cg_max(xn, NULL, 0, 0, &y));
    CHECK(isnan(cgt_at(y, 0)));
    cg_tensor_free(y);
    CHECK_OK(cg_max(xn, &d0, 1, 0, &y));
    CHECK(cgt_at(y, 0) == 3 && isnan(cgt_at(y, 1)));
    cg_tensor_free(y);
    CHECK_OK(cg_argmax(xn, 0, 0, 1, &y));
    CHECK_VALS(y, 0, 1);
    cg_tensor_free(y);
    cg_tensor_free(xn);
    /* float32 */
    cg_tensor *x32 = f32(2, SH(2, 3), v);
    CHECK_OK(cg_max(x32, &d1, 1, 0, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 5, 7);
    cg_tensor_free(y);
    CHECK_OK(cg_argmin(x32, 0, 0, 0, &y));
    CHECK_VALS(y, 0, 0, 1, 0);
    cg_tensor_free(y);
    /* long rows exercise the 8-lane loop */
    double lv[37];
    for (int i = 0; i < 37; ++i) lv[i] = (i * 17) % 37 - 18.0;
    cg_tensor *xl = f64(1, SH(37), lv);
    CHECK_OK(cg_max(xl, NULL, 0, 0, &y));
    CHECK_VALS(y, 0, 18);
    cg_tensor_free(y);
    CHECK_OK(cg_min(xl, NULL, 0, 0, &y));
    CHECK_VALS(y, 0, -18);
    cg_tensor_free(y);
    CHECK_OK(cg_argmax(xl, 0, 0, 0, &y));
    CHECK_VALS(y, 0, 13); /* 13 * 17 = 221 = 6 * 37 - 1 */
    cg_tensor_free(y);
    cg_tensor_free(xl);
    cg_tensor_free(x32);
    cg_tensor_free(xt);
    cg_tensor_free(x);
}

/* max/min gradient is split evenly among ties. */
static void test_max_ties_grad(void) {
    const double v[4] = {1, 3, 3, 2};
    cg_tensor *x = f64(1, SH(4), v), *y = NULL;
    cg_tensor_set_requires_grad(x, 1);
    CHECK_OK(cg_max(x, NULL, 0, 0, &y));
    CHECK(strcmp(cg_tensor_grad_fn_name(y), "max") == 0);
    CHECK_OK(cg_backward(y, NULL, 0, 0));
    CHECK_VALS(cg_tensor_grad(x), 1e-15, 0, 0.5, 0.5, 0);
    cg_tensor_free(y);
    cg_tensor_set_grad(x, NULL);
    CHECK_OK(cg_min(x, NULL, 0, 0, &y));
    CHECK_OK(cg_backward(y, NULL, 0, 0));
    CHECK_VALS(cg_tensor_grad(x), 1e-15, 1, 0, 0, 0);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

static void test_lse_softmax_values(void) {
    const double v[3] = {1, 2, 3};
    cg_tensor *x = f64(1, SH(3), v), *y = NULL;
    CHECK_OK(cg_logsumexp(x, NULL, 0, 0, &y));
    CHECK_VALS(y, 1e-14, 3.40760596444438);
    cg_tensor_free(y);
    CHECK_OK(cg_softmax(x, 0, &y));
    CHECK_VALS(y, 1e-12, 0.0900305731703805, 0.244728471054798, 0.665240955774822);
    cg_tensor_free(y);
    CHECK_OK(cg_log_softmax(x, -1, &y));
    CHECK_VALS(y, 1e-12, -2.40760596444438, -1.40760596444438, -0.40760596444438);
    cg_tensor_free(y);
    /* stability: huge and very negative values */
    const double big[4] = {1000, 1000, -1000, -1001};
    cg_tensor *xb = f64(2, SH(2, 2), big);
    int d1 = 1;
    CHECK_OK(cg_logsumexp(xb, &d1, 1, 0, &y));
    CHECK_VALS(y, 1e-14, 1000 + log(2.0), -1000 + log(1 + exp(-1.0)));
    cg_tensor_free(y);
    CHECK_OK(cg_softmax(xb, 1, &y));
    CHECK_VALS(y, 1e-12, 0.5, 0.5, 1 / (1 + exp(-1.0)), 1 - 1 / (1 + exp(-1.0)));
    cg_tensor_free(y);
    CHECK_OK(cg_log_softmax(xb, 1, &y));
    CHECK_VALS(y, 1e-12, -log(2.0), -log(2.0), -log(1 + exp(-1.0)), -1 - log(1 + exp(-1.0)));
    cg_tensor_free(y);
    /* softmax along dim 0 of a (2, 3): the strided (inner > 1) path */
    cg_tensor *x2 = f64(2, SH(2, 3), X23);
    CHECK_OK(cg_softmax(x2, 0, &y));
    double a = 1 / (1 + exp(3.0));
    CHECK_VALS(y, 1e-12, a, a, a, 1 - a, 1 - a, 1 - a);
    cg_tensor_free(y);
    CHECK_OK(cg_log_softmax(x2, 0, &y));
    CHECK_VALS(y, 1e-12, log(a), log(a), log(a), log(1 - a), log(1 - a), log(1 - a));
    cg_tensor_free(y);
    int d0 = 0;
    CHECK_OK(cg_logsumexp(x2, &d0, 1, 1, &y));
    CHECK_SHAPE(y, 2, 1, 3);
    CHECK_VALS(y, 1e-12, 4 + log(1 + exp(-3.0)), 5 + log(1 + exp(-3.0)), 6 + log(1 + exp(-3.0)));
    cg_tensor_free(y);
    /* all -inf: logsumexp -inf */
    const double ninf[2] = {-INFINITY, -INFINITY};
    cg_tensor *xi = f64(1, SH(2), ninf);
    CHECK_OK(cg_logsumexp(xi, NULL, 0, 0, &y));
    CHECK(isinf(cgt_at(y, 0)) && cgt_at(y, 0) < 0);
    cg_tensor_free(y);
    /* float32 against float64 */
    cg_tensor *x32 = f32(2, SH(2, 3), X23), *y64 = NULL;
    CHECK_OK(cg_softmax(x32, 1, &y));
    CHECK_OK(cg_softmax(x2, 1, &y64));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32 && same_vals(y, y64, 1e-6));
    cg_tensor_free(y);
    cg_tensor_free(y64);
    CHECK_OK(cg_log_softmax(x32, 0, &y));
    CHECK_OK(cg_log_softmax(x2, 0, &y64));
    CHECK(same_vals(y, y64, 1e-6));
    cg_tensor_free(y);
    cg_tensor_free(y64);
    CHECK_OK(cg_logsumexp(x32, NULL, 0, 0, &y));
    CHECK_OK(cg_logsumexp(x2, NULL, 0, 0, &y64));
    CHECK(same_vals(y, y64, 1e-6));
    cg_tensor_free(y);
    cg_tensor_free(y64);
    CHECK_STATUS(cg_softmax(x2, 2, &y), CG_ERR_INDEX);
    cg_tensor_free(x32);
    cg_tensor_free(xi);
    cg_tensor_free(x2);
    cg_tensor_free(xb);
    cg_tensor_free(x);
}

static void test_reduce_errors(void) {
    cg_tensor *x = f64(2, SH(2, 3), X23), *y = NULL;
    int dup[2] = {1, -1}, bad = 2, badn = -3;
    CHECK_STATUS(cg_sum(x, dup, 2, 0, &y), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "more than once") != NULL);
    CHECK_STATUS(cg_mean(x, &bad, 1, 0, &y), CG_ERR_INDEX);
    CHECK_STATUS(cg_max(x, &badn, 1, 0, &y), CG_ERR_INDEX);
    CHECK_STATUS(cg_sum(NULL, NULL, 0, 0, &y), CG_ERR_NULL);
    CHECK_STATUS(cg_sum(x, NULL, 0, 0, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_logsumexp(x, dup, 2, 0, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_var(x, dup, 2, 1.0, 0, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_sum_to_shape(x, 1, SH(4), &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_sum_to_shape(x, 3, SH(1, 2, 3), &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_sum_to_shape(x, 2, SH(2, 2), &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_softmax(NULL, 0, &y), CG_ERR_NULL);
    CHECK(y == NULL);
    cg_tensor_free(x);
}

static void test_sum_to_shape(void) {
    cg_tensor *x = f64(2, SH(2, 3), X23), *y = NULL;
    CHECK_OK(cg_sum_to_shape(x, 1, SH(3), &y));
    CHECK_SHAPE(y, 1, 3);
    CHECK_VALS(y, 0, 5, 7, 9);
    cg_tensor_free(y);
    CHECK_OK(cg_sum_to_shape(x, 2, SH(2, 1), &y));
    CHECK_SHAPE(y, 2, 2, 1);
    CHECK_VALS(y, 0, 6, 15);
    cg_tensor_free(y);
    CHECK_OK(cg_sum_to_shape(x, 0, NULL, &y));
    CHECK_SHAPE0(y);
    CHECK_VALS(y, 0, 21);
    cg_tensor_free(y);
    CHECK_OK(cg_sum_to_shape(x, 2, SH(2, 3), &y));
    CHECK(y == x); /* same shape: the tensor itself */
    cg_tensor_free(y);
    cg_tensor *x32 = f32(2, SH(2, 3), X23);
    CHECK_OK(cg_sum_to_shape(x32, 2, SH(1, 3), &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 5, 7, 9);
    cg_tensor_free(y);
    cg_tensor_free(x32);
    cg_tensor_free(x);
}

static void test_reduce_gradcheck(void) {
    opctx c;
    c = red(K_SUM, 0, 0, 0, 0);               GC(c, 2, 3, 4);
    c = red(K_SUM, 1, 0, 0, 0);               GC(c, 2, 3, 4);
    c = red(K_SUM, 1, -1, 0, 1);              GC(c, 3, 2, 3, 4);
    c = red(K_SUM, 2, 0, 2, 0);               GC(c, 3, 2, 3, 4);
    c = red(K_SUM, 1, 1, 0, 0); c.pre_transpose = 1; GC(c, 2, 3, 4);
    c = red(K_MEAN, 0, 0, 0, 0);              GC(c, 2, 3, 4);
    c = red(K_MEAN, 2, -1, 0, 1);             GC(c, 3, 2, 3, 4);
    c = red(K_VAR, 0, 0, 0, 0);               GC(c, 2, 3, 4);
    c = red(K_VAR, 1, 1, 0, 1); c.corr = 0.0; GC(c, 2, 3, 4);
    c = red(K_VAR, 2, 0, -1, 0);              GC(c, 3, 2, 3, 4);
    c = red(K_MAX, 0, 0, 0, 0);               GC(c, 2, 3, 4);
    c = red(K_MAX, 1, -1, 0, 1);              GC(c, 3, 2, 3, 4);
    c = red(K_MIN, 2, 0, 2, 0);               GC(c, 3, 2, 3, 4);
    c = red(K_MIN, 1, 0, 0, 0); c.pre_transpose = 1; GC(c, 2, 3, 4);
    c = red(K_LSE, 0, 0, 0, 0);               GC(c, 2, 3, 4);
    c = red(K_LSE, 2, 1, 2, 1);               GC(c, 3, 2, 3, 4);
    c = red(K_LSE, 1, -3, 0, 0);              GC(c, 3, 2, 3, 4);
    c = red(K_SOFTMAX, 0, 0, 0, 0); c.dim = -1; GC(c, 2, 3, 4);
    c = red(K_SOFTMAX, 0, 0, 0, 0); c.dim = 1;  GC(c, 3, 2, 3, 4);
    c = red(K_SOFTMAX, 0, 0, 0, 0); c.dim = 0; c.pre_transpose = 1; GC(c, 2, 3, 4);
    c = red(K_LOG_SOFTMAX, 0, 0, 0, 0); c.dim = 0; GC(c, 2, 3, 4);
    c = red(K_LOG_SOFTMAX, 0, 0, 0, 0); c.dim = -1; GC(c, 3, 2, 3, 4);
    c = red(K_SUM_TO, 0, 0, 0, 0); c.ndim = 1; c.shape[0] = 4; GC(c, 3, 2, 3, 4);
    c = red(K_SUM_TO, 0, 0, 0, 0); c.ndim = 2; c.shape[0] = 3; c.shape[1] = 1; GC(c, 3, 2, 3, 4);
    c = red(K_SUM_TO, 0, 0, 0, 0); c.ndim = 3; c.shape[0] = 1; c.shape[1] = 3; c.shape[2] = 1; GC(c, 3, 2, 3, 4);
    /* second derivatives */
    c = red(K_SUM, 1, 1, 0, 0);               GGC(c, 2, 3, 4);
    c = red(K_SUM, 1, 1, 0, 0); c.square = 1; GGC(c, 2, 3, 4);
    c = red(K_MEAN, 2, 0, 1, 1); c.square = 1; GGC(c, 3, 2, 3, 4);
    c = red(K_VAR, 1, 1, 0, 0);               GGC(c, 2, 3, 4);
    c = red(K_VAR, 0, 0, 0, 0); c.corr = 0.0; GGC(c, 2, 3, 4);
    c = red(K_SOFTMAX, 0, 0, 0, 0); c.dim = 1; GGC(c, 2, 3, 4);
    c = red(K_SOFTMAX, 0, 0, 0, 0); c.dim = 0; GGC(c, 3, 3, 2, 2);
    c = red(K_LOG_SOFTMAX, 0, 0, 0, 0); c.dim = -1; GGC(c, 2, 3, 4);
    c = red(K_LSE, 1, 1, 0, 0);               GGC(c, 2, 3, 4);
    c = red(K_LSE, 0, 0, 0, 1);               GGC(c, 3, 2, 2, 3);
    c = red(K_MAX, 1, 0, 0, 0);               GGC(c, 2, 3, 4);
    c = red(K_MAX, 1, 0, 0, 0); c.square = 1; GGC(c, 2, 3, 4);
    c = red(K_MIN, 0, 0, 0, 1); c.square = 1; GGC(c, 2, 3, 4);
    c = red(K_SUM_TO, 0, 0, 0, 0); c.ndim = 1; c.shape[0] = 4; c.square = 1; GGC(c, 2, 3, 4);
}

/* A float32 backward matches the float64 one. */
static void test_reduce_grad_f32(void) {
    const double v[6] = {0.5, -1.0, 2.0, 0.25, 3.0, -2.0};
    int kinds[5] = {K_SOFTMAX, K_LOG_SOFTMAX, K_LSE, K_VAR, K_MEAN};
    for (int k = 0; k < 5; ++k) {
        opctx c = red(kinds[k], 1, 1, 0, 0);
        c.dim = 1;
        cg_tensor *x64 = f64(2, SH(2, 3), v), *x32 = f32(2, SH(2, 3), v);
        cg_tensor_set_requires_grad(x64, 1);
        cg_tensor_set_requires_grad(x32, 1);
        cg_tensor *y64 = NULL, *y32 = NULL, *w64 = NULL, *w32 = NULL, *p64 = NULL, *p32 = NULL,
                  *l64 = NULL, *l32 = NULL;
        CHECK_OK(apply_op(&c, 1, &x64, &y64));
        CHECK_OK(apply_op(&c, 1, &x32, &y32));
        CHECK_OK(cg_arange(CG_FLOAT64, 1, 1 + (double)cg_tensor_numel(y64), 1, &w64));
        CHECK_OK(cg_to_dtype(w64, CG_FLOAT32, &w32));
        cg_tensor *w64r = NULL, *w32r = NULL;
        CHECK_OK(cg_reshape(w64, cg_tensor_ndim(y64), cg_tensor_shape(y64), &w64r));
        CHECK_OK(cg_reshape(w32, cg_tensor_ndim(y32), cg_tensor_shape(y32), &w32r));
        CHECK_OK(cg_mul(y64, w64r, &p64));
        CHECK_OK(cg_mul(y32, w32r, &p32));
        CHECK_OK(cg_sum(p64, NULL, 0, 0, &l64));
        CHECK_OK(cg_sum(p32, NULL, 0, 0, &l32));
        CHECK_OK(cg_backward(l64, NULL, 0, 0));
        CHECK_OK(cg_backward(l32, NULL, 0, 0));
        CHECK(cg_tensor_dtype(cg_tensor_grad(x32)) == CG_FLOAT32);
        CHECK(same_vals(cg_tensor_grad(x32), cg_tensor_grad(x64), 1e-5));
        cg_tensor *all[14] = {x64, x32, y64, y32, w64, w32, p64, p32, l64, l32, w64r, w32r, NULL, NULL};
        free_all(all, 12);
    }
}

/* ------------------------------------------------------------ shape ops */
static void test_reshape(void) {
    cg_tensor *x = f64(2, SH(2, 3), X23), *y = NULL, *t = NULL, *z = NULL;
    CHECK_OK(cg_reshape(x, 3, SH(3, -1, 1), &y));
    CHECK_SHAPE(y, 3, 3, 2, 1);
    CHECK(cg_tensor_data(y) == cg_tensor_data(x)); /* a view */
    CHECK_VALS(y, 0, 1, 2, 3, 4, 5, 6);
    cg_tensor_free(y);
    CHECK_STATUS(cg_reshape(x, 0, NULL, &y), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "(2, 3)") != NULL);
    /* transposed: merging dims needs a copy, splitting a dim does not */
    CHECK_OK(cg_transpose(x, 0, 1, &t)); /* (3, 2) */
    CHECK_OK(cg_reshape(t, 1, SH(6), &y));
    CHECK_VALS(y, 0, 1, 4, 2, 5, 3, 6);
    CHECK(cg_tensor_data(y) != cg_tensor_data(x));
    cg_tensor_free(y);
    CHECK_OK(cg_reshape(t, 3, SH(3, 1, 2), &y));
    CHECK(cg_tensor_data(y) == cg_tensor_data(x));
    CHECK_VALS(y, 0, 1, 4, 2, 5, 3, 6);
    cg_tensor_free(y);
    /* 0-d <-> (1, 1) */
    cg_tensor *s = NULL;
    CHECK_OK(cg_scalar(CG_FLOAT64, 4.0, &s));
    CHECK_OK(cg_reshape(s, 2, SH(1, -1), &y));
    CHECK_SHAPE(y, 2, 1, 1);
    CHECK_OK(cg_reshape(y, 0, NULL, &z));
    CHECK_SHAPE0(z);
    CHECK_VALS(z, 0, 4);
    cg_tensor_free(z);
    cg_tensor_free(y);
    cg_tensor_free(s);
    /* empty */
    cg_tensor *e = NULL;
    CHECK_OK(cg_zeros(CG_FLOAT32, 2, SH(0, 4), &e));
    CHECK_OK(cg_reshape(e, 3, SH(2, 0, 2), &y));
    CHECK_SHAPE(y, 3, 2, 0, 2);
    cg_tensor_free(y);
    CHECK_STATUS(cg_reshape(e, 2, SH(-1, 0), &y), CG_ERR_SHAPE);
    cg_tensor_free(e);
    /* errors */
    CHECK_STATUS(cg_reshape(x, 1, SH(4), &y), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "(2, 3)") && strstr(cg_last_error(), "(4,)"));
    CHECK_STATUS(cg_reshape(x, 2, SH(-1, -1), &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_reshape(x, 2, SH(-1, 4), &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_reshape(x, 2, SH(-2, 3), &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_reshape(x, 9, SH(1, 1, 1, 1, 1, 1, 2, 3, 1), &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_reshape(NULL, 1, SH(6), &y), CG_ERR_NULL);
    CHECK(y == NULL);
    cg_tensor_free(t);
    cg_tensor_free(x);
}

static void test_permute_expand_squeeze(void) {
    double v[24];
    for (int i = 0; i < 24; ++i) v[i] = i;
    cg_tensor *x = f64(3, SH(2, 3, 4), v), *y = NULL, *z = NULL;
    CHECK_OK(cg_permute(x, (const int[]){2, 0, -2}, &y));
    CHECK_SHAPE(y, 3, 4, 2, 3);
    CHECK(!cg_tensor_is_contiguous(y));
    CHECK_CLOSE(cgt_at(y, 1), 4, 0); /* y[0,0,1] = x[0,1,0] */
    CHECK_CLOSE(cgt_at(y, 7), 5, 0); /* y[1,0,1] = x[0,1,1] */
    cg_tensor_free(y);
    CHECK_STATUS(cg_permute(x, (const int[]){0, 0, 1}, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_permute(x, (const int[]){0, 3, 1}, &y), CG_ERR_INDEX);
    CHECK_OK(cg_transpose(x, -1, 0, &y));
    CHECK_SHAPE(y, 3, 4, 3, 2);
    CHECK_CLOSE(cgt_at(y, 1), 12, 0);
    cg_tensor_free(y);
    CHECK_STATUS(cg_transpose(x, 0, 3, &y), CG_ERR_INDEX);
    /* expand: -1 keeps, new leading dims, stride 0 */
    cg_tensor *c = f64(2, SH(3, 1), (const double[]){1, 2, 3});
    CHECK_OK(cg_expand(c, 3, SH(2, -1, 2), &y));
    CHECK_SHAPE(y, 3, 2, 3, 2);
    CHECK(cg_tensor_strides(y)[0] == 0 && cg_tensor_strides(y)[2] == 0);
    CHECK_VALS(y, 0, 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3);
    cg_tensor_free(y);
    CHECK_STATUS(cg_expand(c, 2, SH(4, 2), &y), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "(3, 1)") != NULL);
    CHECK_STATUS(cg_expand(c, 1, SH(3), &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_expand(c, 3, SH(-1, 3, 1), &y), CG_ERR_SHAPE);
    /* squeeze / unsqueeze */
    CHECK_OK(cg_squeeze(c, 1, &y));
    CHECK_SHAPE(y, 1, 3);
    CHECK_OK(cg_unsqueeze(y, 0, &z));
    CHECK_SHAPE(z, 2, 1, 3);
    cg_tensor_free(z);
    CHECK_OK(cg_unsqueeze(y, -1, &z));
    CHECK_SHAPE(z, 2, 3, 1);
    cg_tensor_free(z);
    CHECK_STATUS(cg_unsqueeze(y, 2, &z), CG_ERR_INDEX);
    cg_tensor_free(y);
    CHECK_OK(cg_squeeze(c, 0, &y)); /* size 3: no-op */
    CHECK_SHAPE(y, 2, 3, 1);
    cg_tensor_free(y);
    CHECK_STATUS(cg_squeeze(c, 2, &y), CG_ERR_INDEX);
    cg_tensor *o = NULL;
    CHECK_OK(cg_zeros(CG_FLOAT64, 4, SH(1, 2, 1, 3), &o));
    CHECK_OK(cg_squeeze_all(o, &y));
    CHECK_SHAPE(y, 2, 2, 3);
    cg_tensor_free(y);
    cg_tensor_free(o);
    CHECK_OK(cg_zeros(CG_FLOAT64, 8, SH(1, 1, 1, 1, 1, 1, 1, 2), &o));
    CHECK_STATUS(cg_unsqueeze(o, 0, &y), CG_ERR_SHAPE);
    cg_tensor_free(o);
    cg_tensor_free(c);
    cg_tensor_free(x);
}

static void test_slice_select(void) {
    double v[12];
    for (int i = 0; i < 12; ++i) v[i] = i;
    cg_tensor *x = f64(2, SH(3, 4), v), *y = NULL;
    CHECK_OK(cg_slice(x, 1, 1, 100, 2, &y)); /* columns 1, 3 */
    CHECK_SHAPE(y, 2, 3, 2);
    CHECK_VALS(y, 0, 1, 3, 5, 7, 9, 11);
    cg_tensor_free(y);
    CHECK_OK(cg_slice(x, 0, -2, INT64_MAX, 1, &y)); /* last two rows */
    CHECK_VALS(y, 0, 4, 5, 6, 7, 8, 9, 10, 11);
    cg_tensor_free(y);
    CHECK_OK(cg_slice(x, -1, -100, -3, 1, &y)); /* column 0 */
    CHECK_SHAPE(y, 2, 3, 1);
    CHECK_VALS(y, 0, 0, 4, 8);
    cg_tensor_free(y);
    CHECK_OK(cg_slice(x, 0, 2, 1, 1, &y)); /* empty */
    CHECK_SHAPE(y, 2, 0, 4);
    cg_tensor_free(y);
    CHECK_OK(cg_slice(x, 0, 5, 9, 1, &y));
    CHECK_SHAPE(y, 2, 0, 4);
    cg_tensor_free(y);
    CHECK_STATUS(cg_slice(x, 0, 0, 2, 0, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_slice(x, 0, 0, 2, -1, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_slice(x, 2, 0, 2, 1, &y), CG_ERR_INDEX);
    CHECK_OK(cg_select(x, 1, -1, &y));
    CHECK_SHAPE(y, 1, 3);
    CHECK_VALS(y, 0, 3, 7, 11);
    cg_tensor_free(y);
    CHECK_OK(cg_select(x, 0, 1, &y));
    CHECK_VALS(y, 0, 4, 5, 6, 7);
    cg_tensor_free(y);
    CHECK_STATUS(cg_select(x, 0, 3, &y), CG_ERR_INDEX);
    CHECK(strstr(cg_last_error(), "3") != NULL);
    CHECK_STATUS(cg_select(x, 0, -4, &y), CG_ERR_INDEX);
    CHECK(y == NULL);
    cg_tensor_free(x);
}

/* Views share storage: in-place writes through a view show in the base. */
static void test_views_share_storage(void) {
    cg_tensor *base = NULL, *s = NULL, *c = NULL, *r = NULL, *t = NULL, *e = NULL, *b1 = NULL;
    CHECK_OK(cg_zeros(CG_FLOAT32, 2, SH(3, 4), &base));
    CHECK_OK(cg_slice(base, 1, 1, 3, 1, &s));
    CHECK_OK(cg_fill_(s, 7.0));
    CHECK_VALS(base, 0, 0, 7, 7, 0, 0, 7, 7, 0, 0, 7, 7, 0);
    CHECK(cg_tensor_version(base) == cg_tensor_version(s) && cg_tensor_version(base) > 0);
    CHECK_OK(cg_select(base, 0, 2, &c));
    CHECK_OK(cg_fill_(c, -1.0));
    CHECK_VALS(base, 0, 0, 7, 7, 0, 0, 7, 7, 0, -1, -1, -1, -1);
    CHECK_OK(cg_reshape(base, 1, SH(12), &r));
    CHECK_OK(cg_transpose(base, 0, 1, &t));
    CHECK_OK(cg_slice(t, 0, 0, 1, 1, &b1)); /* column 0 of base, as a (1, 3) */
    CHECK_OK(cg_fill_(b1, 5.0));
    CHECK_VALS(r, 0, 5, 7, 7, 0, 5, 7, 7, 0, 5, -1, -1, -1);
    CHECK_OK(cg_expand(c, 2, SH(2, 4), &e));
    CHECK_OK(cg_fill_(c, 3.0));
    CHECK_VALS(e, 0, 3, 3, 3, 3, 3, 3, 3, 3);
    cg_tensor *all[7] = {base, s, c, r, t, e, b1};
    free_all(all, 7);
}

/* A view of a leaf that requires grad is a non-leaf linked through its op. */
static void test_view_autograd(void) {
    cg_tensor *x = f64(2, SH(2, 3), X23), *v = NULL, *w = NULL, *l = NULL, *d = NULL;
    cg_tensor_set_requires_grad(x, 1);
    CHECK_OK(cg_slice(x, 1, 1, 3, 1, &v));
    CHECK(!cg_tensor_is_leaf(v) && cg_tensor_requires_grad(v));
    CHECK(strcmp(cg_tensor_grad_fn_name(v), "slice") == 0);
    CHECK_OK(cg_select(v, 0, 1, &w)); /* x[1, 1:3] */
    CHECK_OK(cg_sum(w, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_VALS(cg_tensor_grad(x), 0, 0, 0, 0, 0, 1, 1);
    CHECK_OK(cg_detach(v, &d));
    CHECK(cg_tensor_is_leaf(d) && !cg_tensor_requires_grad(d));
    /* no grad mode: views are not recorded */
    cg_tensor *u = NULL;
    int prev = cg_set_grad_enabled(0);
    CHECK_OK(cg_transpose(x, 0, 1, &u));
    cg_set_grad_enabled(prev);
    CHECK(cg_tensor_is_leaf(u) && !cg_tensor_requires_grad(u));
    cg_tensor *all[6] = {x, v, w, l, d, u};
    free_all(all, 6);
}

static void test_cat_stack(void) {
    cg_tensor *a = f64(2, SH(2, 2), (const double[]){1, 2, 3, 4});
    cg_tensor *b = f64(2, SH(2, 1), (const double[]){5, 6});
    cg_tensor *y = NULL, *bt = NULL, *at = NULL;
    cg_tensor *ab[2] = {a, b};
    CHECK_OK(cg_cat(2, ab, 1, &y));
    CHECK_SHAPE(y, 2, 2, 3);
    CHECK_VALS(y, 0, 1, 2, 5, 3, 4, 6);
    cg_tensor_free(y);
    CHECK_STATUS(cg_cat(2, ab, 0, &y), CG_ERR_SHAPE);
    CHECK_OK(cg_transpose(b, 0, 1, &bt)); /* (1, 2), non-contiguous */
    CHECK_OK(cg_transpose(a, 0, 1, &at));
    cg_tensor *ab2[3] = {a, bt, at};
    CHECK_OK(cg_cat(3, ab2, -2, &y));
    CHECK_SHAPE(y, 2, 5, 2);
    CHECK_VALS(y, 0, 1, 2, 3, 4, 5, 6, 1, 3, 2, 4);
    cg_tensor_free(y);
    CHECK_OK(cg_cat(1, ab, 0, &y));
    CHECK_VALS(y, 0, 1, 2, 3, 4);
    CHECK(y != a);
    cg_tensor_free(y);
    cg_tensor *aa[2] = {a, at};
    CHECK_OK(cg_stack(2, aa, 0, &y));
    CHECK_SHAPE(y, 3, 2, 2, 2);
    CHECK_VALS(y, 0, 1, 2, 3, 4, 1, 3, 2, 4);
    cg_tensor_free(y);
    CHECK_OK(cg_stack(2, aa, -1, &y));
    CHECK_SHAPE(y, 3, 2, 2, 2);
    CHECK_VALS(y, 0, 1, 1, 2, 3, 3, 2, 4, 4);
    cg_tensor_free(y);
    CHECK_OK(cg_stack(2, aa, 1, &y));
    CHECK_VALS(y, 0, 1, 2, 1, 3, 3, 4, 2, 4);
    cg_tensor_free(y);
    CHECK_STATUS(cg_stack(2, ab, 0, &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_stack(2, aa, 3, &y), CG_ERR_INDEX);
    cg_tensor *a32 = NULL, *s0 = NULL, *e = NULL;
    CHECK_OK(cg_to_dtype(a, CG_FLOAT32, &a32));
    cg_tensor *mixed[2] = {a, a32};
    CHECK_STATUS(cg_cat(2, mixed, 0, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_stack(2, mixed, 0, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_cat(0, ab, 0, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_cat(2, NULL, 0, &y), CG_ERR_NULL);
    cg_tensor *withnull[2] = {a, NULL};
    CHECK_STATUS(cg_cat(2, withnull, 0, &y), CG_ERR_NULL);
    CHECK_OK(cg_scalar(CG_FLOAT64, 1.0, &s0));
    cg_tensor *ss[2] = {s0, s0};
    CHECK_STATUS(cg_cat(2, ss, 0, &y), CG_ERR_SHAPE);
    CHECK_OK(cg_stack(2, ss, 0, &y)); /* 0-d stack into (2,) */
    CHECK_SHAPE(y, 1, 2);
    CHECK_VALS(y, 0, 1, 1);
    cg_tensor_free(y);
    /* float32 and empty pieces */
    CHECK_OK(cg_zeros(CG_FLOAT32, 2, SH(0, 2), &e));
    cg_tensor *ae[3] = {e, a32, e};
    CHECK_OK(cg_cat(3, ae, 0, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 1, 2, 3, 4);
    cg_tensor_free(y);
    cg_tensor *all[7] = {a, b, bt, at, a32, s0, e};
    free_all(all, 7);
}

static void test_copies_and_cast(void) {
    cg_tensor *x = f64(2, SH(2, 3), X23), *y = NULL, *t = NULL;
    CHECK_OK(cg_contiguous(x, &y));
    CHECK(y == x);
    cg_tensor_free(y);
    CHECK_OK(cg_to_dtype(x, CG_FLOAT64, &y));
    CHECK(y == x);
    cg_tensor_free(y);
    CHECK_OK(cg_clone(x, &y));
    CHECK(y != x && cg_tensor_data(y) != cg_tensor_data(x));
    CHECK_VALS(y, 0, 1, 2, 3, 4, 5, 6);
    cg_tensor_free(y);
    CHECK_OK(cg_transpose(x, 0, 1, &t));
    CHECK_OK(cg_contiguous(t, &y));
    CHECK(cg_tensor_is_contiguous(y));
    CHECK_VALS(y, 0, 1, 4, 2, 5, 3, 6);
    cg_tensor_free(y);
    CHECK_OK(cg_to_dtype(t, CG_FLOAT32, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 1, 4, 2, 5, 3, 6);
    cg_tensor_free(y);
    CHECK_OK(cg_to_dtype(x, CG_INT64, &y));
    CHECK(cg_tensor_dtype(y) == CG_INT64);
    CHECK_VALS(y, 0, 1, 2, 3, 4, 5, 6);
    cg_tensor_free(y);
    CHECK_STATUS(cg_to_dtype(x, CG_DTYPE_COUNT, &y), CG_ERR_DTYPE);
    /* gradient of a cast is cast back */
    cg_tensor *x32 = NULL, *l = NULL;
    cg_tensor_set_requires_grad(x, 1);
    CHECK_OK(cg_to_dtype(x, CG_FLOAT32, &x32));
    CHECK(strcmp(cg_tensor_grad_fn_name(x32), "to_dtype") == 0);
    CHECK_OK(cg_sum(x32, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK(cg_tensor_dtype(cg_tensor_grad(x)) == CG_FLOAT64);
    CHECK_VALS(cg_tensor_grad(x), 0, 1, 1, 1, 1, 1, 1);
    cg_tensor *xi = NULL;
    CHECK_OK(cg_to_dtype(x, CG_INT64, &xi)); /* not differentiable */
    CHECK(!cg_tensor_requires_grad(xi));
    cg_tensor *all[5] = {x, t, x32, l, xi};
    free_all(all, 5);
}

static void test_shape_gradcheck(void) {
    opctx c;
    memset(&c, 0, sizeof c);
    c.kind = K_RESHAPE; c.ndim = 2; c.shape[0] = 4; c.shape[1] = -1;         GC(c, 3, 2, 3, 4);
    c.pre_transpose = 1;                                                     GC(c, 3, 2, 3, 4);
    memset(&c, 0, sizeof c);
    c.kind = K_PERMUTE; c.perm[0] = 2; c.perm[1] = 0; c.perm[2] = 1;         GC(c, 3, 2, 3, 4);
    c.kind = K_TRANSPOSE; c.dims[0] = 0; c.dims[1] = -1;                     GC(c, 3, 2, 3, 4);
    memset(&c, 0, sizeof c);
    c.kind = K_EXPAND; c.ndim = 3; c.shape[0] = 2; c.shape[1] = 3; c.shape[2] = -1; GC(c, 2, 1, 4);
    c.kind = K_SQUEEZE; c.dim = 1;                                           GC(c, 3, 2, 1, 3);
    c.kind = K_SQUEEZE; c.dim = 0;                                           GC(c, 2, 2, 3);
    c.kind = K_SQUEEZE_ALL;                                                  GC(c, 4, 1, 2, 1, 3);
    c.kind = K_UNSQUEEZE; c.dim = -1;                                        GC(c, 2, 2, 3);
    c.kind = K_SLICE; c.dim = 1; c.start = 1; c.stop = 5; c.step = 2;        GC(c, 2, 3, 5);
    c.pre_transpose = 1;                                                     GC(c, 2, 5, 3);
    c.pre_transpose = 0;
    c.kind = K_SELECT; c.dim = -1; c.start = -2;                             GC(c, 3, 2, 3, 4);
    c.kind = K_CONTIG; c.pre_transpose = 1;                                  GC(c, 2, 3, 4);
    c.kind = K_CLONE;                                                        GC(c, 2, 3, 4);
    c.pre_transpose = 0;
    /* multi-input: cat and stack */
    {
        opctx k;
        memset(&k, 0, sizeof k);
        k.kind = K_CAT;
        k.dim = 1;
        int nd[3] = {2, 2, 2};
        int64_t sh[3][CG_MAX_DIMS] = {{2, 3}, {2, 1}, {2, 2}};
        gradcheck_op(&k, 3, nd, (const int64_t(*)[CG_MAX_DIMS])sh, __LINE__);
        gradgradcheck_op(&k, 3, nd, (const int64_t(*)[CG_MAX_DIMS])sh, __LINE__);
        k.kind = K_STACK;
        k.dim = -1;
        int64_t sh2[3][CG_MAX_DIMS] = {{2, 3}, {2, 3}, {2, 3}};
        gradcheck_op(&k, 3, nd, (const int64_t(*)[CG_MAX_DIMS])sh2, __LINE__);
        gradgradcheck_op(&k, 3, nd, (const int64_t(*)[CG_MAX_DIMS])sh2, __LINE__);
    }
    /* second derivatives of the views (their backward ops are recorded) */
    memset(&c, 0, sizeof c);
    c.kind = K_SLICE; c.dim = 0; c.start = 0; c.stop = 3; c.step = 2; c.square = 1; GGC(c, 2, 4, 3);
    c.kind = K_SELECT; c.dim = 1; c.start = 1;                               GGC(c, 2, 4, 3);
    c.kind = K_EXPAND; c.ndim = 3; c.shape[0] = 2; c.shape[1] = -1; c.shape[2] = 3; GGC(c, 2, 4, 1);
    c.kind = K_RESHAPE; c.ndim = 1; c.shape[0] = -1; c.pre_transpose = 1;    GGC(c, 2, 4, 3);
    c.pre_transpose = 0;
    c.kind = K_PERMUTE; c.perm[0] = 1; c.perm[1] = 0;                        GGC(c, 2, 4, 3);
    c.kind = K_UNSQUEEZE; c.dim = 0;                                         GGC(c, 2, 4, 3);
}

/* 1,000 chained reshapes / transposes (half through the copy path). */
static void test_long_view_chain(void) {
    double v[24];
    for (int i = 0; i < 24; ++i) v[i] = i * 0.5 - 3;
    cg_tensor *x = f64(2, SH(4, 6), v), *y = x, *w = NULL, *p = NULL, *l = NULL;
    cg_tensor_set_requires_grad(x, 1);
    cg_tensor_retain(y);
    int ok = 1;
    for (int i = 0; i < 250 && ok; ++i) {
        cg_tensor *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        ok = cg_transpose(y, 0, 1, &a) == CG_OK;                     /* (6, 4) view */
        ok = ok && cg_reshape(a, 1, SH(24), &b) == CG_OK;            /* copy */
        ok = ok && cg_reshape(b, 2, SH(6, 4), &c) == CG_OK;          /* view */
        ok = ok && cg_transpose(c, 1, 0, &d) == CG_OK;               /* (4, 6) = y */
        cg_tensor_free(y);
        cg_tensor_free(a);
        cg_tensor_free(b);
        cg_tensor_free(c);
        y = d;
    }
    CHECK(ok);
    CHECK_SHAPE(y, 2, 4, 6);
    CHECK(same_vals(y, x, 0));
    CHECK_OK(cg_arange(CG_FLOAT64, 0, 24, 1, &w));
    cg_tensor *w2 = NULL;
    CHECK_OK(cg_reshape(w, 2, SH(4, 6), &w2));
    CHECK_OK(cg_mul(y, w2, &p));
    CHECK_OK(cg_sum(p, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK(same_vals(cg_tensor_grad(x), w, 0));
    cg_tensor *all[6] = {x, y, w, w2, p, l};
    free_all(all, 6);
}

/* -------------------------------------------------------------- indexing */
static void test_index_select_add(void) {
    double v[12];
    for (int i = 0; i < 12; ++i) v[i] = i;
    cg_tensor *x = f64(2, SH(3, 4), v), *y = NULL;
    cg_tensor *idx = i64(1, SH(4), (const int64_t[]){2, 0, -1, 2});
    CHECK_OK(cg_index_select(x, 0, idx, &y));
    CHECK_SHAPE(y, 2, 4, 4);
    CHECK_VALS(y, 0, 8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11, 8, 9, 10, 11);
    cg_tensor_free(y);
    CHECK_OK(cg_index_select(x, -1, idx, &y)); /* inner == 1 path */
    CHECK_SHAPE(y, 2, 3, 4);
    CHECK_VALS(y, 0, 2, 0, 3, 2, 6, 4, 7, 6, 10, 8, 11, 10);
    cg_tensor_free(y);
    cg_tensor *x32 = f32(2, SH(3, 4), v);
    CHECK_OK(cg_index_select(x32, 1, idx, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 2, 0, 3, 2, 6, 4, 7, 6, 10, 8, 11, 10);
    cg_tensor_free(y);
    /* index_add accumulates repeated indices */
    cg_tensor *z = NULL, *src = NULL;
    CHECK_OK(cg_zeros(CG_FLOAT64, 2, SH(3, 2), &z));
    CHECK_OK(cg_ones(CG_FLOAT64, 2, SH(4, 2), &src));
    CHECK_OK(cg_index_add(z, 0, idx, src, &y));
    CHECK_VALS(y, 0, 1, 1, 0, 0, 3, 3);
    CHECK_VALS(z, 0, 0, 0, 0, 0, 0, 0); /* out of place */
    cg_tensor_free(y);
    cg_tensor *zi = NULL, *si = NULL;
    CHECK_OK(cg_zeros(CG_INT64, 1, SH(3), &zi));
    CHECK_OK(cg_ones(CG_INT64, 1, SH(4), &si));
    CHECK_OK(cg_index_add(zi, 0, idx, si, &y));
    CHECK(cg_tensor_dtype(y) == CG_INT64);
    CHECK_VALS(y, 0, 1, 0, 3);
    cg_tensor_free(y);
    /* errors */
    cg_tensor *bad = i64(1, SH(2), (const int64_t[]){0, 7}), *fidx = NULL, *idx2 = NULL;
    CHECK_STATUS(cg_index_select(x, 1, bad, &y), CG_ERR_INDEX);
    CHECK(strstr(cg_last_error(), "7") && strstr(cg_last_error(), "4"));
    cg_tensor *neg = i64(1, SH(1), (const int64_t[]){-5});
    CHECK_STATUS(cg_index_select(x, 1, neg, &y), CG_ERR_INDEX);
    CHECK_OK(cg_to_dtype(idx, CG_FLOAT64, &fidx));
    CHECK_STATUS(cg_index_select(x, 0, fidx, &y), CG_ERR_DTYPE);
    CHECK_OK(cg_reshape(idx, 2, SH(2, 2), &idx2));
    CHECK_STATUS(cg_index_select(x, 0, idx2, &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_index_select(x, 2, idx, &y), CG_ERR_INDEX);
    CHECK_STATUS(cg_index_add(z, 0, idx, x, &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_index_add(z, 0, idx, si, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_index_add(z, 0, bad, src, &y), CG_ERR_INDEX);
    CHECK(y == NULL);
    cg_tensor *all[12] = {x, idx, x32, z, src, zi, si, bad, neg, fidx, idx2, NULL};
    free_all(all, 11);
}

static void test_gather_scatter(void) {
    cg_tensor *x = f64(2, SH(2, 3), X23), *y = NULL;
    cg_tensor *idx = i64(2, SH(2, 2), (const int64_t[]){2, 0, 1, 1});
    CHECK_OK(cg_gather(x, 1, idx, &y)); /* out[i][j] = x[i][idx[i][j]] */
    CHECK_SHAPE(y, 2, 2, 2);
    CHECK_VALS(y, 0, 3, 1, 5, 5);
    cg_tensor_free(y);
    cg_tensor *idx0 = i64(2, SH(1, 3), (const int64_t[]){1, 0, 1});
    CHECK_OK(cg_gather(x, 0, idx0, &y)); /* out[0][j] = x[idx[0][j]][j] */
    CHECK_VALS(y, 0, 4, 2, 6);
    cg_tensor_free(y);
    cg_tensor *xt = NULL;
    CHECK_OK(cg_transpose(x, 0, 1, &xt)); /* (3, 2): [[1,4],[2,5],[3,6]] */
    CHECK_OK(cg_gather(xt, 0, idx, &y)); /* out[i][j] = xt[idx[i][j]][j] */
    CHECK_VALS(y, 0, 3, 4, 2, 5);
    cg_tensor_free(y);
    /* scatter_add: the adjoint, repeated indices accumulate */
    cg_tensor *z = NULL, *src = NULL;
    CHECK_OK(cg_zeros(CG_FLOAT64, 2, SH(2, 3), &z));
    CHECK_OK(cg_ones(CG_FLOAT64, 2, SH(2, 2), &src));
    CHECK_OK(cg_scatter_add(z, 1, idx, src, &y));
    CHECK_VALS(y, 0, 1, 0, 1, 0, 2, 0);
    cg_tensor_free(y);
    cg_tensor *big = NULL; /* src larger than index: only the index's box is used */
    CHECK_OK(cg_ones(CG_FLOAT64, 2, SH(2, 4), &big));
    CHECK_OK(cg_scatter_add(x, 1, idx, big, &y));
    CHECK_VALS(y, 0, 2, 2, 4, 4, 7, 6);
    cg_tensor_free(y);
    /* float32, int64 and 0-d */
    cg_tensor *x32 = f32(2, SH(2, 3), X23), *s32 = NULL, *xi = NULL, *x0 = NULL, *i0 = NULL;
    CHECK_OK(cg_gather(x32, 1, idx, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 3, 1, 5, 5);
    cg_tensor_free(y);
    CHECK_OK(cg_ones(CG_FLOAT32, 2, SH(2, 2), &s32));
    CHECK_OK(cg_scatter_add(x32, 1, idx, s32, &y));
    CHECK_VALS(y, 0, 2, 2, 4, 4, 7, 6);
    cg_tensor_free(y);
    cg_tensor *i22 = i64(1, SH(2), (const int64_t[]){2, 2});
    CHECK_OK(cg_index_add(x32, 1, i22, s32, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 1, 2, 5, 4, 5, 8);
    cg_tensor_free(y);
    cg_tensor_free(i22);
    CHECK_OK(cg_to_dtype(x, CG_INT64, &xi));
    CHECK_OK(cg_gather(xi, 0, idx0, &y));
    CHECK(cg_tensor_dtype(y) == CG_INT64);
    CHECK_VALS(y, 0, 4, 2, 6);
    cg_tensor_free(y);
    CHECK_OK(cg_scalar(CG_FLOAT64, 9.0, &x0));
    CHECK_OK(cg_zeros(CG_INT64, 0, NULL, &i0));
    CHECK_OK(cg_gather(x0, 0, i0, &y));
    CHECK_SHAPE0(y);
    CHECK_VALS(y, 0, 9);
    cg_tensor_free(y);
    cg_tensor *tmp4[4] = {x32, s32, xi, x0};
    free_all(tmp4, 4);
    cg_tensor_free(i0);
    /* errors */
    cg_tensor *oob = i64(2, SH(1, 1), (const int64_t[]){3}), *negi = i64(2, SH(1, 1), (const int64_t[]){-1});
    cg_tensor *flat = i64(1, SH(2), (const int64_t[]){0, 1}), *wide = NULL;
    CHECK_STATUS(cg_gather(x, 1, oob, &y), CG_ERR_INDEX);
    CHECK(strstr(cg_last_error(), "3") != NULL);
    CHECK_STATUS(cg_gather(x, 1, negi, &y), CG_ERR_INDEX);
    CHECK_STATUS(cg_gather(x, 1, flat, &y), CG_ERR_SHAPE);
    CHECK_OK(cg_zeros(CG_INT64, 2, SH(3, 1), &wide));
    CHECK_STATUS(cg_gather(x, 1, wide, &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_scatter_add(z, 1, oob, src, &y), CG_ERR_INDEX);
    CHECK_STATUS(cg_scatter_add(z, 1, idx, flat, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_scatter_add(z, 3, idx, src, &y), CG_ERR_INDEX);
    cg_tensor *small = NULL;
    CHECK_OK(cg_ones(CG_FLOAT64, 2, SH(2, 1), &small));
    CHECK_STATUS(cg_scatter_add(z, 1, idx, small, &y), CG_ERR_SHAPE);
    CHECK(y == NULL);
    cg_tensor *all[13] = {x, idx, idx0, xt, z, src, big, oob, negi, flat, wide, small, NULL};
    free_all(all, 12);
}

static void test_nonzero_embedding(void) {
    cg_tensor *x = f64(2, SH(2, 3), (const double[]){0, 1, 0, 2, 0, 3}), *m = NULL, *zero = NULL,
              *y = NULL;
    CHECK_OK(cg_zeros(CG_FLOAT64, 0, NULL, &zero));
    CHECK_OK(cg_ne(x, zero, &m));
    CHECK_OK(cg_nonzero_flat(m, &y));
    CHECK(cg_tensor_dtype(y) == CG_INT64);
    CHECK_SHAPE(y, 1, 3);
    CHECK_VALS(y, 0, 1, 3, 5);
    cg_tensor_free(y);
    cg_tensor *mt = NULL;
    CHECK_OK(cg_transpose(m, 0, 1, &mt)); /* [[0,1],[1,0],[0,1]] */
    CHECK_OK(cg_nonzero_flat(mt, &y));
    CHECK_VALS(y, 0, 1, 2, 5);
    cg_tensor_free(y);
    CHECK_STATUS(cg_nonzero_flat(x, &y), CG_ERR_DTYPE);
    /* embedding: (*idx, dim) */
    double wv[8] = {0, 1, 10, 11, 20, 21, 30, 31};
    cg_tensor *w = f64(2, SH(4, 2), wv), *w32 = f32(2, SH(4, 2), wv);
    cg_tensor *ix = i64(2, SH(2, 2), (const int64_t[]){3, 0, 3, 1});
    CHECK_OK(cg_embedding(w, ix, &y));
    CHECK_SHAPE(y, 3, 2, 2, 2);
    CHECK_VALS(y, 0, 30, 31, 0, 1, 30, 31, 10, 11);
    cg_tensor_free(y);
    CHECK_OK(cg_embedding(w32, ix, &y));
    CHECK(cg_tensor_dtype(y) == CG_FLOAT32);
    CHECK_VALS(y, 0, 30, 31, 0, 1, 30, 31, 10, 11);
    cg_tensor_free(y);
    /* repeated indices accumulate in the gradient */
    cg_tensor *l = NULL;
    cg_tensor_set_requires_grad(w, 1);
    CHECK_OK(cg_embedding(w, ix, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_VALS(cg_tensor_grad(w), 0, 1, 1, 1, 1, 0, 0, 2, 2);
    cg_tensor_free(l);
    cg_tensor_free(y);
    cg_tensor *oob = i64(1, SH(1), (const int64_t[]){4}), *neg = i64(1, SH(1), (const int64_t[]){-1});
    CHECK_STATUS(cg_embedding(w, oob, &y), CG_ERR_INDEX);
    CHECK(strstr(cg_last_error(), "4") != NULL);
    CHECK_STATUS(cg_embedding(w, neg, &y), CG_ERR_INDEX);
    CHECK_STATUS(cg_embedding(w, w, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_embedding(oob, ix, &y), CG_ERR_SHAPE); /* 1-D weight */
    CHECK_STATUS(cg_embedding(x, NULL, &y), CG_ERR_NULL);
    cg_tensor *all[10] = {x, m, zero, mt, w, w32, ix, oob, neg, NULL};
    free_all(all, 9);
}

static void test_index_gradcheck(void) {
    cg_tensor *idx = i64(1, SH(5), (const int64_t[]){2, 0, -1, 2, 1});
    cg_tensor *gidx = i64(2, SH(2, 3), (const int64_t[]){1, 0, 2, 2, 2, 0});
    cg_tensor *eidx = i64(3, SH(2, 2, 1), (const int64_t[]){3, 0, 3, 3});
    opctx c;
    memset(&c, 0, sizeof c);
    c.kind = K_INDEX_SELECT; c.index = idx; c.dim = 0;                  GC(c, 2, 3, 4);
    c.dim = -1;                                                         GC(c, 3, 2, 2, 3);
    c.square = 1;                                                       GGC(c, 2, 4, 3);
    c.square = 0;
    c.kind = K_GATHER; c.index = gidx; c.dim = 1;                       GC(c, 2, 2, 4);
    c.dim = 0;                                                          GC(c, 2, 3, 3);
    c.square = 1;                                                       GGC(c, 2, 3, 3);
    c.square = 0;
    c.kind = K_EMBEDDING; c.index = eidx;                               GC(c, 2, 4, 3);
    c.square = 1;                                                       GGC(c, 2, 4, 3);
    c.square = 0;
    {
        int nd[2] = {2, 2};
        opctx k;
        memset(&k, 0, sizeof k);
        k.kind = K_INDEX_ADD;
        k.index = idx;
        k.dim = 1;
        int64_t sh[2][CG_MAX_DIMS] = {{2, 3}, {2, 5}};
        gradcheck_op(&k, 2, nd, (const int64_t(*)[CG_MAX_DIMS])sh, __LINE__);
        gradgradcheck_op(&k, 2, nd, (const int64_t(*)[CG_MAX_DIMS])sh, __LINE__);
        k.kind = K_SCATTER_ADD;
        k.index = gidx;
        k.dim = 1;
        int64_t sh2[2][CG_MAX_DIMS] = {{3, 3}, {2, 4}}; /* src larger than index */
        gradcheck_op(&k, 2, nd, (const int64_t(*)[CG_MAX_DIMS])sh2, __LINE__);
        gradgradcheck_op(&k, 2, nd, (const int64_t(*)[CG_MAX_DIMS])sh2, __LINE__);
    }
    cg_tensor_free(idx);
    cg_tensor_free(gidx);
    cg_tensor_free(eidx);
}

int main(void) {
    cg_manual_seed(1234);
    test_sum_values();
    test_sum_dtypes();
    test_empty_reductions();
    test_mean_var();
    test_max_min_arg();
    test_max_ties_grad();
    test_lse_softmax_values();
    test_reduce_errors();
    test_sum_to_shape();
    test_reduce_gradcheck();
    test_reduce_grad_f32();
    test_reshape();
    test_permute_expand_squeeze();
    test_slice_select();
    test_views_share_storage();
    test_view_autograd();
    test_cat_stack();
    test_copies_and_cast();
    test_shape_gradcheck();
    test_long_view_chain();
    test_index_select_add();
    test_gather_scatter();
    test_nonzero_embedding();
    test_index_gradcheck();
    return cgt_report(__FILE__);
}
