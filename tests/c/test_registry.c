/* test_registry.c -- the op registry from C: register, call, backward,
 * gradcheck, errors, unregister while recorded entries live. */
#include "cgtest.h"

static int ctx_freed = 0;
static void free_ctx(void *ctx) { (void)ctx; ++ctx_freed; }

/* cube(x; c) = c x^3, backward 3 c x^2 g (written with cg_ ops). */
static cg_status cube_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    cg_tensor *s = NULL, *c = NULL;
    cg_status st = cg_mul(x[0], x[0], &s);
    if (!st) st = cg_mul(s, x[0], &c);
    if (!st) st = cg_mul_scalar(c, p[0], out);
    cg_tensor_free(c); cg_tensor_free(s);
    (void)ctx; (void)n; (void)np;
    return st;
}
static cg_status cube_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                          cg_tensor *g, const int *needs, cg_tensor **gx) {
    cg_tensor *s = NULL, *t = NULL;
    cg_status st = cg_mul(x[0], x[0], &s);
    if (!st) st = cg_mul_scalar(s, 3.0 * p[0], &t);
    if (!st) st = cg_mul(t, g, &gx[0]);
    cg_tensor_free(t); cg_tensor_free(s);
    (void)ctx; (void)n; (void)np; (void)y; (void)needs;
    return st;
}
static cg_status square_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    (void)ctx; (void)n; (void)np; (void)p;
    return cg_mul(x[0], x[0], out);
}
static int saw_null_inputs = 0;
static cg_status scale_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                           cg_tensor *g, const int *needs, cg_tensor **gx) {
    (void)ctx; (void)n; (void)np; (void)needs;
    saw_null_inputs = x[0] == NULL && y == NULL;
    return cg_mul_scalar(g, p[0], &gx[0]);
}
static cg_status scale_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    (void)ctx; (void)n; (void)np;
    return cg_mul_scalar(x[0], p[0], out);
}
static cg_status bad_shape_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                               cg_tensor *g, const int *needs, cg_tensor **gx) {
    (void)ctx; (void)n; (void)x; (void)np; (void)p; (void)y; (void)needs; (void)g;
    return cg_scalar(CG_FLOAT64, 1.0, &gx[0]); /* wrong shape */
}

int main(void) {
    int64_t shape[1] = {3};
    double d[3] = {-1.0, 0.5, 2.0};
    cg_tensor *x = cgt_f64(1, shape, d), *y = NULL, *s = NULL;
    cg_tensor_set_requires_grad(x, 1);
    double c = 2.0;

    CHECK_OK(cg_op_register("cube", 1, 1, cube_fwd, cube_bwd, NULL, free_ctx));
    CHECK_STATUS(cg_op_register("cube", 1, 1, cube_fwd, cube_bwd, NULL, free_ctx), CG_ERR_VALUE);
    CHECK(ctx_freed == 1); /* the refused registration released its ctx */
    CHECK_STATUS(cg_op_register("9bad", 1, 0, cube_fwd, cube_bwd, NULL, NULL), CG_ERR_VALUE);
    CHECK_STATUS(cg_op_register("ok", 0, 0, cube_fwd, cube_bwd, NULL, NULL), CG_ERR_VALUE);
    CHECK_STATUS(cg_op_register("ok", 1, 0, NULL, cube_bwd, NULL, NULL), CG_ERR_NULL);
    CHECK(cg_op_count() == 1 && strcmp(cg_op_name(0), "cube") == 0 && cg_op_name(1) == NULL);

    CHECK_OK(cg_op_call("cube", 1, &x, 1, &c, &y));
    CHECK_CLOSE(cgt_at(y, 2), 16.0, 1e-12);
    CHECK(strcmp(cg_tensor_grad_fn_name(y), "cube") == 0);
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    CHECK_OK(cg_op_unregister("cube")); /* the recorded entry keeps the op alive */
    CHECK(cg_op_count() == 0 && ctx_freed == 1);
    CHECK_OK(cg_backward(s, NULL, 0, 0));
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 0), 6.0, 1e-12);  /* 3 * 2 * 1 */
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 2), 24.0, 1e-12); /* 3 * 2 * 4 */
    cg_tensor_free(s); cg_tensor_free(y);
    CHECK(ctx_freed == 2); /* last user gone: ctx released */
    CHECK_STATUS(cg_op_call("cube", 1, &x, 1, &c, &y), CG_ERR_VALUE);

    CHECK_OK(cg_op_register("cube", 1, 1, cube_fwd, cube_bwd, NULL, NULL));
    CHECK_OK(cg_op_gradcheck("cube", 1, &x, 1, &c, 1e-6, 1e-6, 1e-5));
    CHECK_STATUS(cg_op_call("cube", 1, &x, 0, NULL, &y), CG_ERR_VALUE); /* wrong param count */
    CHECK(y == NULL);
    CHECK_OK(cg_op_register("bad_shape", 1, 0, square_fwd, bad_shape_bwd, NULL, NULL));
    CHECK_OK(cg_op_call("bad_shape", 1, &x, 0, NULL, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    CHECK_STATUS(cg_backward(s, NULL, 0, 0), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "'bad_shape'") != NULL);
    cg_tensor_free(s); cg_tensor_free(y);
    CHECK_OK(cg_op_unregister("bad_shape"));
    /* An op that saves nothing: backward gets NULL inputs and output, and
     * the input it was called on can go away before backward. */
    CHECK_OK(cg_op_register("scale", 1, 1, scale_fwd, scale_bwd, NULL, NULL));
    CHECK_OK(cg_op_set_saves("scale", 0, 0));
    CHECK_STATUS(cg_op_set_saves("nope", 0, 0), CG_ERR_VALUE);
    {
        double k = 3.0;
        cg_tensor *h = NULL, *z = NULL, *t = NULL;
        CHECK_OK(cg_mul_scalar(x, 1.0, &h));
        CHECK_OK(cg_op_call("scale", 1, &h, 1, &k, &z));
        cg_tensor_free(h);
        CHECK_OK(cg_sum(z, NULL, 0, 0, &t));
        cg_tensor_set_grad(x, NULL);
        CHECK_OK(cg_backward(t, NULL, 0, 0));
        CHECK(saw_null_inputs);
        CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 1), 3.0, 1e-15);
        cg_tensor_free(t); cg_tensor_free(z);
    }
    CHECK_OK(cg_op_unregister("scale"));
    CHECK_OK(cg_op_unregister("cube"));
    CHECK_STATUS(cg_op_unregister("cube"), CG_ERR_VALUE);
    cg_tensor_free(x);
    return cgt_report(__FILE__);
}
