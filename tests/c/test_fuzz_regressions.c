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

int main(void) {
    test_full_int64_out_of_range();
    test_cast_nonfinite_to_int64();
    test_clamp_int64_infinite_bounds();
    test_int64_scalar_nonfinite();
    test_leaf_is_not_its_own_grad();
    return cgt_report("test_fuzz_regressions");
}
