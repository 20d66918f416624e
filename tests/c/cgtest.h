/* cgtest.h -- a tiny C test harness: checks count failures, main returns
 * non-zero when any failed, and the last line reads "N passed, N failed". */
#ifndef CGTEST_H
#define CGTEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"

static int cgt_passed = 0, cgt_failed = 0;

#define CGT_FAIL_(...)                                                         \
    do {                                                                       \
        ++cgt_failed;                                                          \
        fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                  \
        fprintf(stderr, __VA_ARGS__);                                          \
        fprintf(stderr, "\n");                                                 \
    } while (0)

/* CHECK(cond): plain condition. */
#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) ++cgt_passed;                                                \
        else CGT_FAIL_("%s", #cond);                                           \
    } while (0)

/* CHECK_OK(call): call must return CG_OK. */
#define CHECK_OK(call)                                                         \
    do {                                                                       \
        cg_status st_ = (call);                                                \
        if (st_ == CG_OK) ++cgt_passed;                                        \
        else CGT_FAIL_("%s -> %s: %s", #call, cg_status_name(st_), cg_last_error()); \
    } while (0)

/* CHECK_STATUS(call, code): call must fail with that status and a message. */
#define CHECK_STATUS(call, code)                                               \
    do {                                                                       \
        cg_status st_ = (call);                                                \
        if (st_ == (code) && cg_last_error()[0] != '\0') ++cgt_passed;         \
        else CGT_FAIL_("%s -> %s (want %s), message '%s'", #call,              \
                       cg_status_name(st_), cg_status_name(code), cg_last_error()); \
    } while (0)

#define CHECK_CLOSE(got, want, tol)                                            \
    do {                                                                       \
        double g_ = (double)(got), w_ = (double)(want);                        \
        if (fabs(g_ - w_) <= (tol) * (1.0 + fabs(w_))) ++cgt_passed;           \
        else CGT_FAIL_("%s = %.10g, want %.10g", #got, g_, w_);                \
    } while (0)

/* Element i (row-major) of any tensor as double. */
static inline double cgt_at(const cg_tensor *t, int64_t i) {
    int64_t n = cg_tensor_numel(t);
    if (i < 0 || i >= n) return NAN;
    double v = NAN;
    size_t sz = cg_dtype_size(cg_tensor_dtype(t));
    unsigned char buf[8];
    unsigned char *all = (unsigned char *)malloc((size_t)n * sz + 1);
    if (!all) return NAN;
    if (cg_tensor_copy_to(t, all, (size_t)n * sz) == CG_OK) {
        memcpy(buf, all + (size_t)i * sz, sz);
        switch (cg_tensor_dtype(t)) {
        case CG_FLOAT32: { float f; memcpy(&f, buf, 4); v = f; break; }
        case CG_FLOAT64: { double d; memcpy(&d, buf, 8); v = d; break; }
        case CG_INT64: { int64_t k; memcpy(&k, buf, 8); v = (double)k; break; }
        case CG_BOOL: v = buf[0] ? 1.0 : 0.0; break;
        default: break;
        }
    }
    free(all);
    return v;
}

/* Float64 tensor from a literal list (shape given). */
static inline cg_tensor *cgt_f64(int ndim, const int64_t *shape, const double *data) {
    cg_tensor *t = NULL;
    if (cg_from_data(CG_FLOAT64, ndim, shape, data, &t) != CG_OK) return NULL;
    return t;
}

/* Random float64 tensor with requires_grad set (for gradcheck). */
static inline cg_tensor *cgt_randn64(int ndim, const int64_t *shape) {
    cg_tensor *t = NULL;
    if (cg_randn(CG_FLOAT64, ndim, shape, &t) != CG_OK) return NULL;
    cg_tensor_set_requires_grad(t, 1);
    return t;
}

static inline int cgt_report(const char *name) {
    printf("%s: %d passed, %d failed\n", name, cgt_passed, cgt_failed);
    return cgt_failed == 0 ? 0 : 1;
}

#endif
