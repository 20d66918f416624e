/* header_use.c -- compiled as C99 and (renamed) as C++11 by
 * tests/c/test_header.sh with -pedantic -Werror: the public header must
 * compile cleanly in both languages, and this program uses enough of it
 * (types, enums, function pointers, option structs) to exercise the
 * declarations, then runs a forward + backward. */
#include "cgrad.h"

#include <stdio.h>

static cg_status twice(void *ctx, int n_inputs, cg_tensor *const *inputs, cg_tensor **out) {
    (void)ctx;
    (void)n_inputs;
    return cg_mul_scalar(inputs[0], 2.0, out);
}

int main(void) {
    int64_t shape[1] = {3};
    cg_tensor *x = NULL, *y = NULL, *loss = NULL;
    cg_lr_cosine_options cos_opt = {10, 0.0};
    double lr = 0.0, grad[3] = {0.0, 0.0, 0.0};
    cg_fn fn = twice;
    cg_status st;

    cg_manual_seed(1);
    st = cg_randn(CG_FLOAT64, 1, shape, &x);
    if (st == CG_OK) st = cg_tensor_set_requires_grad(x, 1);
    if (st == CG_OK) st = cg_gradcheck(fn, NULL, 1, &x, 1e-6, 1e-7, 1e-5);
    if (st == CG_OK) st = fn(NULL, 1, &x, &y);
    if (st == CG_OK) st = cg_sum(y, NULL, 0, 0, &loss);
    if (st == CG_OK) st = cg_backward(loss, NULL, 0, 0);
    if (st == CG_OK) st = cg_tensor_copy_to(cg_tensor_grad(x), grad, sizeof grad);
    if (st == CG_OK) st = cg_lr_cosine(&cos_opt, 0.1, 5, &lr);
    if (st != CG_OK) {
        fprintf(stderr, "header_use: %s: %s\n", cg_status_name(st), cg_last_error());
        return 1;
    }
    if (grad[0] != 2.0 || grad[1] != 2.0 || grad[2] != 2.0 || lr < 0.0499 || lr > 0.0501) {
        fprintf(stderr, "header_use: wrong values: grad %g %g %g, lr %g\n", grad[0], grad[1],
                grad[2], lr);
        return 1;
    }
    printf("header_use: cgrad %s, lr(5) = %.4f\n", CG_VERSION_STRING, lr);
    cg_tensor_free(loss);
    cg_tensor_free(y);
    cg_tensor_free(x);
    return 0;
}
