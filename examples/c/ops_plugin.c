/* ops_plugin.c -- custom ops written in C, registered in cgrad's op
 * registry and called from Python (and from C through cg_op_call).
 *
 *     cc -shared -fPIC ops_plugin.c -o ops_plugin.so $(python -m cgrad --cflags)
 *
 *     >>> cgrad.ops.load_library("ops_plugin.so")
 *     ['softsign', 'scaled_square']
 *     >>> y = cgrad.ops.softsign(x)
 *
 * The library is not linked against libcgrad: loaded by cgrad.ops, its cg_
 * calls resolve to the core inside the Python extension. Backwards are
 * written with cg_ ops, so they are differentiable (double backward). */
#include "cgrad.h"

/* softsign(x) = x / (1 + |x|); d/dx = 1 / (1 + |x|)^2 */
static cg_status softsign_forward(void *ctx, int n, cg_tensor *const *x, int np, const double *p,
                                  cg_tensor **out) {
    cg_tensor *a = NULL, *d = NULL;
    cg_status st = cg_abs(x[0], &a);
    if (!st) st = cg_add_scalar(a, 1.0, &d);
    if (!st) st = cg_div(x[0], d, out);
    cg_tensor_free(d);
    cg_tensor_free(a);
    (void)ctx; (void)n; (void)np; (void)p;
    return st;
}

static cg_status softsign_backward(void *ctx, int n, cg_tensor *const *x, int np, const double *p,
                                   cg_tensor *y, cg_tensor *g, const int *needs, cg_tensor **gx) {
    cg_tensor *a = NULL, *d = NULL, *d2 = NULL;
    cg_status st = CG_OK;
    if (!needs[0]) return CG_OK;
    st = cg_abs(x[0], &a);
    if (!st) st = cg_add_scalar(a, 1.0, &d);
    if (!st) st = cg_mul(d, d, &d2);
    if (!st) st = cg_div(g, d2, &gx[0]);
    cg_tensor_free(d2);
    cg_tensor_free(d);
    cg_tensor_free(a);
    (void)ctx; (void)n; (void)np; (void)p; (void)y;
    return st;
}

/* scaled_square(x; c) = c * x^2; d/dx = 2 c x */
static cg_status sq_forward(void *ctx, int n, cg_tensor *const *x, int np, const double *p,
                            cg_tensor **out) {
    cg_tensor *s = NULL;
    cg_status st = cg_mul(x[0], x[0], &s);
    if (!st) st = cg_mul_scalar(s, p[0], out);
    cg_tensor_free(s);
    (void)ctx; (void)n; (void)np;
    return st;
}

/* ctx points at the derivative's factor: 2 is right; the test registers a
 * wrong copy with 3 to see gradcheck fail. */
static cg_status sq_backward(void *ctx, int n, cg_tensor *const *x, int np, const double *p,
                             cg_tensor *y, cg_tensor *g, const int *needs, cg_tensor **gx) {
    cg_tensor *t = NULL;
    cg_status st = CG_OK;
    if (!needs[0]) return CG_OK;
    st = cg_mul_scalar(x[0], *(const double *)ctx * p[0], &t);
    if (!st) st = cg_mul(t, g, &gx[0]);
    cg_tensor_free(t);
    (void)n; (void)np; (void)y;
    return st;
}

static double two = 2.0, three = 3.0;

int cgrad_register_ops(void) {
    cg_status st = cg_op_register("softsign", 1, 0, softsign_forward, softsign_backward, NULL, NULL);
    if (!st) st = cg_op_register("scaled_square", 1, 1, sq_forward, sq_backward, &two, NULL);
    return (int)st;
}

/* A second init function, for tests: an op whose backward is wrong. */
int cgrad_register_wrong_ops(void) {
    return (int)cg_op_register("wrong_square", 1, 1, sq_forward, sq_backward, &three, NULL);
}
