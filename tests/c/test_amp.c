/* test_amp.c -- cg_amp_unscale_ (GradScaler's fused unscale and inf
 * check) against a reference loop: values scaled bit for bit as x * inv in
 * the gradient's arithmetic, NaN/inf counted before scaling, strided and
 * row-sparse gradients, versions, and the error statuses. */
#include <stdlib.h>

#include "cgtest.h"

static cg_tensor *make(cg_dtype dt, int ndim, const int64_t *shape, const double *v) {
    cg_tensor *t = NULL, *t64 = cgt_f64(ndim, shape, v);
    if (dt == CG_FLOAT64) return t64;
    cg_to_dtype(t64, dt, &t);
    cg_tensor_free(t64);
    return t;
}

/* The reference: the element as its dtype holds it, times inv rounded to
 * that dtype, in that dtype. */
static double scaled(cg_dtype dt, double x, double inv) {
    if (dt == CG_FLOAT32) return (double)((float)x * (float)inv);
    return x * inv;
}

static void test_dense(cg_dtype dt) {
    enum { N = 37 };
    double v[N];
    for (int i = 0; i < N; ++i) v[i] = (i % 5 - 2) * 1234.567 + 0.1 * i;
    v[3] = INFINITY;
    v[17] = -INFINITY;
    v[30] = NAN;
    int64_t n = N;
    cg_tensor *a = make(dt, 1, &n, v);
    double held[N];
    for (int i = 0; i < N; ++i) held[i] = cgt_at(a, i);
    const double inv = 1.0 / 65536.0 / 3.0; /* not a power of two: rounding shows */
    uint64_t v0 = cg_tensor_version(a);
    int64_t bad = -1;
    CHECK_OK(cg_amp_unscale_(1, &a, inv, &bad));
    CHECK(bad == 3);
    CHECK(cg_tensor_version(a) > v0);
    int same = 1;
    for (int i = 0; i < N; ++i) {
        double want = scaled(dt, held[i], inv), got = cgt_at(a, i);
        if (isnan(want) ? !isnan(got) : got != want) same = 0;
    }
    CHECK(same);
    cg_tensor_free(a);
}

/* A transposed (non-contiguous) gradient next to a contiguous one. */
static void test_strided(void) {
    int64_t shape[2] = {3, 4};
    double v[12];
    for (int i = 0; i < 12; ++i) v[i] = i - 5.5;
    v[7] = NAN;
    cg_tensor *base = make(CG_FLOAT32, 2, shape, v), *t = NULL;
    CHECK_OK(cg_transpose(base, 0, 1, &t));
    CHECK(!cg_tensor_is_contiguous(t));
    int64_t n = 5;
    double w[5] = {1, 2, 3, 4, INFINITY};
    cg_tensor *c = make(CG_FLOAT64, 1, &n, w);
    cg_tensor *gs[2] = {t, c};
    int64_t bad = 0;
    CHECK_OK(cg_amp_unscale_(2, gs, 0.25, &bad));
    CHECK(bad == 2);
    int same = 1;
    for (int i = 0; i < 12; ++i) { /* the base sees the scaled values */
        double got = cgt_at(base, i);
        if (i == 7 ? !isnan(got) : got != v[i] * 0.25) same = 0;
    }
    CHECK(same);
    CHECK(cgt_at(c, 3) == 1.0 && isinf(cgt_at(c, 4)));
    cg_tensor_free(t);
    cg_tensor_free(base);
    cg_tensor_free(c);
}

/* Uncoalesced rows: the stored rows are scaled, the non-finite elements
 * counted over the coalesced rows (row 1 twice: inf + -inf is one NaN). */
static void test_sparse(void) {
    int64_t ni = 3, vs[2] = {3, 2};
    double idx[3] = {1, 0, 1};
    double vals[6] = {INFINITY, 2.0, 3.0, 4.0, -INFINITY, 6.0};
    cg_tensor *i64 = NULL, *i_d = cgt_f64(1, &ni, idx);
    CHECK_OK(cg_to_dtype(i_d, CG_INT64, &i64));
    cg_tensor *values = make(CG_FLOAT32, 2, vs, vals), *sp = NULL;
    CHECK_OK(cg_sparse_rows(i64, values, 4, &sp));
    CHECK(!cg_sparse_is_coalesced(sp));
    uint64_t v0 = cg_tensor_version(values);
    int64_t bad = 0;
    CHECK_OK(cg_amp_unscale_(1, &sp, 0.5, &bad));
    CHECK(bad == 1);
    CHECK(cg_tensor_version(values) > v0);
    cg_tensor *stored = NULL;
    CHECK_OK(cg_sparse_values(sp, &stored));
    CHECK(cgt_at(stored, 1) == 1.0 && cgt_at(stored, 5) == 3.0 && isinf(cgt_at(stored, 4)));
    cg_tensor_free(stored);
    /* coalesced: counted over the same stored rows */
    cg_tensor *co = NULL;
    CHECK_OK(cg_sparse_coalesce(sp, &co));
    CHECK_OK(cg_amp_unscale_(1, &co, 2.0, &bad));
    CHECK(bad == 1);
    cg_tensor_free(co);
    cg_tensor_free(sp);
    cg_tensor_free(values);
    cg_tensor_free(i64);
    cg_tensor_free(i_d);
}

static void test_errors(void) {
    int64_t n = 4;
    double v[4] = {1, 2, 3, 4};
    cg_tensor *a = make(CG_FLOAT32, 1, &n, v), *k = NULL, *e = NULL, *one = NULL;
    CHECK_OK(cg_to_dtype(a, CG_INT64, &k));
    int64_t s1 = 1, s4[2] = {3, 4};
    CHECK_OK(cg_from_data(CG_FLOAT64, 1, &s1, v, &one));
    cg_tensor *row = NULL;
    CHECK_OK(cg_reshape(a, 2, (int64_t[]){1, 4}, &row));
    CHECK_OK(cg_expand(row, 2, s4, &e));
    int64_t bad = 7;
    CHECK_OK(cg_amp_unscale_(0, NULL, 0.5, &bad));
    CHECK(bad == 0);
    CHECK_OK(cg_amp_unscale_(1, &a, 1.0, NULL));
    CHECK_STATUS(cg_amp_unscale_(-1, &a, 0.5, &bad), CG_ERR_VALUE);
    CHECK_STATUS(cg_amp_unscale_(1, NULL, 0.5, &bad), CG_ERR_NULL);
    CHECK_STATUS(cg_amp_unscale_(1, &a, NAN, &bad), CG_ERR_VALUE);
    cg_tensor *with_null[2] = {a, NULL};
    CHECK_STATUS(cg_amp_unscale_(2, with_null, 0.5, &bad), CG_ERR_NULL);
    CHECK(strstr(cg_last_error(), "grads[1]") != NULL);
    cg_tensor *with_int[3] = {a, one, k};
    CHECK_STATUS(cg_amp_unscale_(3, with_int, 0.5, &bad), CG_ERR_DTYPE);
    CHECK(strstr(cg_last_error(), "grads[2]") != NULL && strstr(cg_last_error(), "int64") != NULL);
    cg_tensor *with_bcast[2] = {a, e};
    CHECK_STATUS(cg_amp_unscale_(2, with_bcast, 0.5, &bad), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "grads[1]") != NULL);
    /* a refused list is left untouched */
    CHECK(cgt_at(a, 3) == 4.0 && cgt_at(one, 0) == 1.0);
    cg_tensor_free(e);
    cg_tensor_free(row);
    cg_tensor_free(one);
    cg_tensor_free(k);
    cg_tensor_free(a);
}

int main(void) {
    test_dense(CG_FLOAT32);
    test_dense(CG_FLOAT64);
    test_strided();
    test_sparse();
    test_errors();
    return cgt_report("test_amp");
}
