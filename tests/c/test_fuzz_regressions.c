/* test_fuzz_regressions.c -- bugs the fuzzer (tests/fuzz/) found in src_c,
 * each pinned by a direct test. */
#include <stdint.h>

#include "cgtest.h"

/* cg_full with a value an int64 cannot hold was undefined behaviour (a C
 * cast of inf/NaN); PyTorch refuses it. */
static void test_full_int64_out_of_range(void) {
    const double bad[4] = {INFINITY, -INFINITY, NAN, 1e30};
    int64_t two = 2;
    for (int i = 0; i < 4; ++i) {
        cg_tensor *t = (cg_tensor *)&two; /* must be reset to NULL */
        CHECK_STATUS(cg_full(CG_INT64, 1, &two, bad[i], &t), CG_ERR_VALUE);
        CHECK(t == NULL);
        CHECK(strstr(cg_last_error(), "int64") != NULL);
    }
    cg_tensor *t = NULL;
    CHECK_OK(cg_full(CG_INT64, 1, &two, -7.9, &t)); /* truncates toward zero */
    CHECK(cgt_at(t, 1) == -7.0);
    cg_tensor_free(t);
    t = NULL;
    CHECK_STATUS(cg_scalar(CG_INT64, NAN, &t), CG_ERR_VALUE);
}

/* Float -> int64 casts of NaN, inf and huge values are defined: INT64_MIN,
 * as x86 hardware (and PyTorch on x86) gives; in-range values truncate. */
static void test_cast_nonfinite_to_int64(void) {
    const double v[6] = {NAN, INFINITY, -INFINITY, 1e300, -2.75, 3.5};
    int64_t six = 6, got[6];
    cg_tensor *x = cgt_f64(1, &six, v), *y = NULL;
    CHECK_OK(cg_to_dtype(x, CG_INT64, &y));
    CHECK_OK(cg_tensor_copy_to(y, got, sizeof got));
    for (int i = 0; i < 4; ++i) CHECK(got[i] == INT64_MIN);
    CHECK(got[4] == -2 && got[5] == 3);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

/* clamp of int64 data with a bound of +inf below or -inf above (a C cast
 * of the bound was undefined): infinities saturate. NaN bounds are refused
 * before any kernel runs. */
static void test_clamp_int64_infinite_bounds(void) {
    const int64_t v[3] = {-5, 0, 9};
    int64_t three = 3, got[3];
    cg_tensor *x = NULL, *y = NULL;
    CHECK_OK(cg_from_data(CG_INT64, 1, &three, v, &x));
    CHECK_OK(cg_clamp(x, -INFINITY, INFINITY, &y));
    CHECK_OK(cg_tensor_copy_to(y, got, sizeof got));
    CHECK(got[0] == -5 && got[1] == 0 && got[2] == 9);
    cg_tensor_free(y);
    y = NULL;
    CHECK_OK(cg_clamp(x, INFINITY, INFINITY, &y)); /* lo above everything */
    CHECK_OK(cg_tensor_copy_to(y, got, sizeof got));
    CHECK(got[0] == INT64_MAX && got[1] == INT64_MAX && got[2] == INT64_MAX);
    cg_tensor_free(y);
    y = NULL;
    CHECK_OK(cg_clamp(x, -INFINITY, -INFINITY, &y)); /* hi below everything */
    CHECK_OK(cg_tensor_copy_to(y, got, sizeof got));
    CHECK(got[0] == INT64_MIN && got[2] == INT64_MIN);
    cg_tensor_free(y);
    y = NULL;
    CHECK_STATUS(cg_clamp(x, NAN, 4.0, &y), CG_ERR_VALUE);
    CHECK(y == NULL);
    cg_tensor_free(x);
}

/* Scalar ops on int64 data with a NaN or infinite scalar were undefined
 * (the kernel cast the scalar); now the scalar converts as a cast does. */
static void test_int64_scalar_nonfinite(void) {
    const int64_t v[2] = {1, 2};
    int64_t two = 2;
    cg_tensor *x = NULL, *y = NULL;
    CHECK_OK(cg_from_data(CG_INT64, 1, &two, v, &x));
    cg_status st = cg_add_scalar(x, NAN, &y); /* any status, defined behaviour */
    CHECK(st == CG_OK ? y != NULL : y == NULL);
    cg_tensor_free(y);
    y = NULL;
    st = cg_mul_scalar(x, INFINITY, &y);
    CHECK(st == CG_OK ? y != NULL : y == NULL);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

/* backward(x, gradient = x, create_graph) on a leaf made x its own .grad:
 * a reference cycle that leaked x (and broke cg_tensor_set_grad's rule that
 * a tensor is never its own grad). Now .grad is a copy. */
static void test_leaf_is_not_its_own_grad(void) {
    const double v[3] = {1, -2, 3};
    int64_t three = 3;
    for (int create = 0; create <= 1; ++create) {
        cg_tensor *x = cgt_f64(1, &three, v);
        CHECK_OK(cg_tensor_set_requires_grad(x, 1));
        CHECK_OK(cg_backward(x, x, 0, create));
        cg_tensor *g = cg_tensor_grad(x);
        CHECK(g != NULL && g != x);
        CHECK(cgt_at(g, 1) == -2.0);
        CHECK_OK(cg_tensor_set_grad(x, NULL)); /* a create_graph grad links back to x */
        cg_tensor_free(x); /* LeakSanitizer checks the rest */
    }
}

/* A custom op's backward returned a gradient whose shape did not match its
 * input, and the engine passed it on to the producer's backward, which read
 * past it (ASan: avg_pool2d's backward reading a 0-d gradient). Now every
 * custom gradient is checked against its input: a broadcast shape is summed
 * down (as PyTorch), another shape or dtype fails the backward. */
enum { BAD_SCALAR, BAD_BROADCAST, BAD_DTYPE };
static cg_status bad_grad_backward(void *ctx, int n_out, cg_tensor *const *gout, int n_in,
                                   const int *needs, cg_tensor **gin) {
    int mode = *(const int *)ctx;
    (void)n_out, (void)n_in, (void)needs;
    if (mode == BAD_SCALAR) return cg_sum(gout[0], NULL, 0, 0, &gin[0]);
    if (mode == BAD_DTYPE) return cg_to_dtype(gout[0], CG_FLOAT32, &gin[0]);
    /* BAD_BROADCAST: (4, 2, 3) for a (2, 3) input, every slice = gout */
    int64_t shape[3] = {4, 2, 3};
    return cg_expand(gout[0], 3, shape, &gin[0]);
}
static void no_free(void *ctx) { (void)ctx; }

static cg_status bad_grad_op(cg_tensor *x, int *mode, cg_tensor **out) {
    int prev = cg_set_grad_enabled(0);
    cg_status st = cg_mul_scalar(x, 2.0, out);
    cg_set_grad_enabled(prev);
    if (st) return st;
    st = cg_record_custom("bad_grad", 1, &x, 1, out, bad_grad_backward, mode, no_free);
    if (st) {
        cg_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

static void test_custom_gradient_shape_checked(void) {
    int64_t shape[2] = {2, 3};
    for (int mode = BAD_SCALAR; mode <= BAD_DTYPE; ++mode) {
        for (int via_node = 0; via_node < 2; ++via_node) {
            cg_tensor *x = cgt_randn64(2, shape), *z = NULL, *y = NULL, *loss = NULL;
            CHECK_OK(cg_tensor_set_requires_grad(x, 1));
            if (via_node) CHECK_OK(cg_exp(x, &z)); /* the producer whose backward trusted it */
            CHECK_OK(bad_grad_op(via_node ? z : x, &mode, &y));
            CHECK_OK(cg_sum(y, NULL, 0, 0, &loss));
            cg_status st = cg_backward(loss, NULL, 0, 0);
            if (mode == BAD_BROADCAST) {
                CHECK_OK(st);
                cg_tensor *g = cg_tensor_grad(x);
                CHECK(g != NULL && cg_tensor_ndim(g) == 2 && cg_tensor_numel(g) == 6);
                for (int64_t i = 0; g && i < 6; ++i) {
                    double want = via_node ? 4.0 * exp(cgt_at(x, i)) : 4.0;
                    CHECK_CLOSE(cgt_at(g, i), want, 1e-12);
                }
            } else {
                CHECK_STATUS(st, mode == BAD_SCALAR ? CG_ERR_SHAPE : CG_ERR_DTYPE);
                CHECK(strstr(cg_last_error(), "bad_grad") != NULL);
                CHECK(strstr(cg_last_error(), "input 0") != NULL);
                CHECK(cg_tensor_grad(x) == NULL);
            }
            cg_tensor_free(loss);
            cg_tensor_free(y);
            cg_tensor_free(z);
            cg_tensor_free(x);
        }
    }
}

/* max_pool2d / avg_pool2d of an input with an empty image, e.g. (3, 0, 3)
 * with padding 1, produced output windows that lay on padding alone: their
 * values were never written (valgrind: uninitialised values read by anomaly
 * mode's scan of the output). Refused now, as PyTorch does; an empty batch
 * still gives an empty output. */
static void test_pool_empty_image_refused(void) {
    int64_t k[2] = {2, 2}, st[2] = {1, 1}, pad[2] = {1, 1};
    int64_t s3[3] = {3, 0, 3}, s4[4] = {2, 1, 3, 0}, s4b[4] = {0, 1, 3, 3};
    cg_tensor *x = NULL, *y = (cg_tensor *)&k;
    CHECK_OK(cg_zeros(CG_FLOAT32, 3, s3, &x));
    CHECK_STATUS(cg_max_pool2d(x, k, st, pad, &y), CG_ERR_SHAPE);
    CHECK(y == NULL);
    CHECK(strstr(cg_last_error(), "(3, 0, 3)") != NULL);
    y = (cg_tensor *)&k;
    CHECK_STATUS(cg_avg_pool2d(x, k, st, pad, 1, &y), CG_ERR_SHAPE);
    CHECK(y == NULL);
    cg_tensor_free(x);
    x = NULL;
    CHECK_OK(cg_zeros(CG_FLOAT64, 4, s4, &x));
    CHECK_STATUS(cg_max_pool2d(x, k, st, pad, &y), CG_ERR_SHAPE);
    cg_tensor_free(x);
    x = NULL;
    CHECK_OK(cg_zeros(CG_FLOAT64, 4, s4b, &x)); /* empty batch: fine */
    CHECK_OK(cg_max_pool2d(x, k, st, pad, &y));
    CHECK(y != NULL && cg_tensor_numel(y) == 0 && cg_tensor_shape(y)[2] == 4);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

int main(void) {
    test_full_int64_out_of_range();
    test_cast_nonfinite_to_int64();
    test_clamp_int64_infinite_bounds();
    test_int64_scalar_nonfinite();
    test_leaf_is_not_its_own_grad();
    test_custom_gradient_shape_checked();
    test_pool_empty_image_refused();
    return cgt_report("test_fuzz_regressions");
}
