/* test_registry_handle.c -- registered ops called through handles
 * (cg_op_find / cg_op_call_handle) and what a call's tape entry keeps:
 * errors, a handle outliving cg_op_unregister, in-place modification of
 * saved inputs and outputs, calls that save more than a node's slots,
 * gradient checks, anomaly mode, observers and overrides by name. */
#include <pthread.h>

#include "cgtest.h"

static int ctx_freed = 0;
static void count_free(void *ctx) { (void)ctx; ++ctx_freed; }

/* cube(x; c) = c x^3 with backward 3 c x^2 g; ctx scales the result, so two
 * ops registered under the same name can be told apart. */
static cg_status cube_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    cg_tensor *s = NULL, *c = NULL;
    double k = ctx ? *(const double *)ctx : 1.0;
    cg_status st = cg_mul(x[0], x[0], &s);
    if (!st) st = cg_mul(s, x[0], &c);
    if (!st) st = cg_mul_scalar(c, k * p[0], out);
    cg_tensor_free(c);
    cg_tensor_free(s);
    (void)n; (void)np;
    return st;
}
static cg_status cube_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                          cg_tensor *g, const int *needs, cg_tensor **gx) {
    cg_tensor *s = NULL, *t = NULL;
    double k = ctx ? *(const double *)ctx : 1.0;
    cg_status st = cg_mul(x[0], x[0], &s);
    if (!st) st = cg_mul_scalar(s, 3.0 * k * p[0], &t);
    if (!st) st = cg_mul(t, g, &gx[0]);
    cg_tensor_free(t);
    cg_tensor_free(s);
    (void)n; (void)np; (void)y; (void)needs;
    return st;
}

/* exp with a backward that reads only its output: g * y. */
static cg_status exp_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    (void)ctx; (void)n; (void)np; (void)p;
    return cg_exp(x[0], out);
}
static cg_status exp_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                         cg_tensor *g, const int *needs, cg_tensor **gx) {
    (void)ctx; (void)n; (void)x; (void)np; (void)p; (void)needs;
    return cg_mul(g, y, &gx[0]);
}

/* wide(x0..x4; p0..p5) = sum_i p_i x_i^2 + p5: 5 saved inputs + the output
 * and 6 params, more than a node holds in itself. */
static cg_status wide_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    cg_tensor *acc = NULL;
    cg_status st = cg_scalar(CG_FLOAT64, p[5], &acc);
    for (int i = 0; i < n && !st; ++i) {
        cg_tensor *sq = NULL, *term = NULL, *sum = NULL;
        st = cg_mul(x[i], x[i], &sq);
        if (!st) st = cg_mul_scalar(sq, p[i], &term);
        if (!st) st = cg_add(acc, term, &sum);
        cg_tensor_free(sq);
        cg_tensor_free(term);
        cg_tensor_free(acc);
        acc = sum;
    }
    (void)ctx; (void)np;
    if (st) cg_tensor_free(acc);
    else *out = acc;
    return st;
}
static cg_status wide_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                          cg_tensor *g, const int *needs, cg_tensor **gx) {
    (void)ctx; (void)np;
    if (!y) return cg_set_error(CG_ERR_VALUE, "wide: the output was not passed");
    cg_status st = CG_OK;
    for (int i = 0; i < n && !st; ++i) {
        if (!needs[i]) continue;
        cg_tensor *t = NULL;
        st = cg_mul_scalar(x[i], 2.0 * p[i], &t);
        if (!st) st = cg_mul(t, g, &gx[i]);
        cg_tensor_free(t);
    }
    return st;
}

/* Backwards that return the wrong dtype, or a broadcast shape. */
static cg_status f32_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                         cg_tensor *g, const int *needs, cg_tensor **gx) {
    (void)ctx; (void)n; (void)x; (void)np; (void)p; (void)y; (void)needs;
    return cg_to_dtype(g, CG_FLOAT32, &gx[0]);
}
static cg_status bcast_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                           cg_tensor *g, const int *needs, cg_tensor **gx) {
    int64_t shape[2] = {2, 3};
    (void)ctx; (void)n; (void)x; (void)np; (void)p; (void)y; (void)needs; (void)g;
    return cg_full(CG_FLOAT64, 2, shape, 0.5, &gx[0]); /* (2, 3) for a (3,) input: summed to 1.0 each */
}
static cg_status to_int_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    (void)ctx; (void)n; (void)np; (void)p;
    return cg_to_dtype(x[0], CG_INT64, out);
}

static cg_status call_cube(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    double c = 1.5;
    return cg_op_call_handle((cg_op_handle *)ctx, n, in, 1, &c, out);
}
static cg_status call_wide(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    static const double p[6] = {0.5, -1.0, 2.0, 0.25, 3.0, 7.0};
    return cg_op_call_handle((cg_op_handle *)ctx, n, in, 6, p, out);
}

static int released = 0;
static void count_release(void *ctx) { (void)ctx; ++released; }

static char observed[64];
static cg_status observe(void *ctx, const char *op_name, uint64_t seq, const char *location, int n_outputs,
                         cg_tensor *const *grad_outputs) {
    (void)ctx; (void)seq; (void)location; (void)n_outputs; (void)grad_outputs;
    if (strcmp(op_name, "sum") != 0) snprintf(observed, sizeof observed, "%s", op_name);
    return CG_OK;
}
static cg_status override_ones(void *ctx, const char *op_name, int n_inputs, cg_tensor *const *inputs,
                               int n_outputs, cg_tensor *const *outputs, cg_tensor *const *grad_outputs,
                               const int *needs, cg_tensor **gin) {
    (void)ctx; (void)op_name; (void)n_inputs; (void)n_outputs; (void)outputs; (void)needs;
    (void)grad_outputs;
    return cg_full(cg_tensor_dtype(inputs[0]), cg_tensor_ndim(inputs[0]), cg_tensor_shape(inputs[0]), 1.0,
                   &gin[0]);
}

static double one = 1.0, ten = 10.0;

/* Threads calling through one shared handle (forward and backward) while
 * the main thread unregisters the op: each returns its failure count. */
#define N_THREADS 4
#define N_CALLS 300
static void *hammer(void *arg) {
    cg_op_handle *h = (cg_op_handle *)arg;
    int64_t shape[1] = {4};
    double c = 2.0;
    long bad = 0;
    for (int i = 0; i < N_CALLS; ++i) {
        cg_tensor *a = NULL, *z = NULL, *t = NULL;
        if (cg_full(CG_FLOAT64, 1, shape, 1.0, &a) || cg_tensor_set_requires_grad(a, 1) ||
            cg_op_call_handle(h, 1, &a, 1, &c, &z) || cg_sum(z, NULL, 0, 0, &t) || cg_backward(t, NULL, 0, 0) ||
            cgt_at(cg_tensor_grad(a), 3) != 6.0)
            ++bad;
        cg_tensor_free(t);
        cg_tensor_free(z);
        cg_tensor_free(a);
    }
    return (void *)bad;
}

int main(void) {
    int64_t shape[1] = {3};
    double d[3] = {-1.0, 0.5, 2.0};
    cg_tensor *x = cgt_f64(1, shape, d), *y = NULL, *s = NULL;
    cg_tensor_set_requires_grad(x, 1);
    double c = 2.0;
    cg_op_handle *h = NULL, *h2 = NULL;

    /* Errors: unknown name, NULLs, wrong counts. */
    h = (cg_op_handle *)&c;
    CHECK_STATUS(cg_op_find("nope", &h), CG_ERR_VALUE);
    CHECK(h == NULL && strstr(cg_last_error(), "'nope'") != NULL);
    CHECK_STATUS(cg_op_find(NULL, &h), CG_ERR_NULL);
    CHECK_STATUS(cg_op_find("nope", NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_op_call_handle(NULL, 1, &x, 1, &c, &y), CG_ERR_NULL);
    CHECK(y == NULL && strstr(cg_last_error(), "handle") != NULL);
    CHECK(cg_op_handle_is_registered(NULL) == 0);
    cg_op_handle_free(NULL);

    CHECK_OK(cg_op_register("cube", 1, 1, cube_fwd, cube_bwd, &one, count_free));
    CHECK_OK(cg_op_find("cube", &h));
    CHECK(cg_op_handle_is_registered(h) == 1);
    CHECK_STATUS(cg_op_call_handle(h, 2, &x, 1, &c, &y), CG_ERR_VALUE);
    CHECK(y == NULL && strstr(cg_last_error(), "op 'cube' takes 1 tensor inputs and 1 params, got 2 and 1"));
    CHECK_STATUS(cg_op_call_handle(h, 1, &x, 0, NULL, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_op_call_handle(h, 1, &x, 1, NULL, &y), CG_ERR_NULL);
    CHECK_STATUS(cg_op_call_handle(h, 1, NULL, 1, &c, &y), CG_ERR_NULL);
    {
        cg_tensor *none = NULL;
        CHECK_STATUS(cg_op_call_handle(h, 1, &none, 1, &c, &y), CG_ERR_NULL);
        CHECK(strstr(cg_last_error(), "input 0 is NULL") != NULL);
    }
    CHECK_STATUS(cg_op_call_handle(h, 1, &x, 1, &c, NULL), CG_ERR_NULL);

    /* A call through the handle records an entry named like the op. */
    CHECK_OK(cg_op_call_handle(h, 1, &x, 1, &c, &y));
    CHECK_CLOSE(cgt_at(y, 2), 16.0, 1e-12);
    CHECK(strcmp(cg_tensor_grad_fn_name(y), "cube") == 0);
    cg_tensor_free(y);
    y = NULL;

    /* The handle outlives cg_op_unregister: the op it was taken on still
     * runs, even after another op is registered under the same name. */
    CHECK_OK(cg_op_unregister("cube"));
    CHECK(cg_op_handle_is_registered(h) == 0 && ctx_freed == 0);
    CHECK_STATUS(cg_op_find("cube", &h2), CG_ERR_VALUE);
    CHECK_OK(cg_op_register("cube", 1, 1, cube_fwd, cube_bwd, &ten, count_free));
    CHECK_OK(cg_op_call_handle(h, 1, &x, 1, &c, &y));
    CHECK_CLOSE(cgt_at(y, 2), 16.0, 1e-12); /* the old op (ctx 1), not the new one (ctx 10) */
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    cg_op_handle_free(h);
    CHECK(ctx_freed == 0); /* the recorded entry still holds the old op */
    CHECK_OK(cg_backward(s, NULL, 0, 0));
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 0), 6.0, 1e-12);  /* 3 * 2 * 1 */
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 2), 24.0, 1e-12); /* 3 * 2 * 4 */
    cg_tensor_free(s);
    cg_tensor_free(y);
    CHECK(ctx_freed == 1); /* last user of the old op gone */
    CHECK_OK(cg_op_find("cube", &h));
    CHECK_OK(cg_op_call_handle(h, 1, &x, 1, &c, &y));
    CHECK_CLOSE(cgt_at(y, 2), 160.0, 1e-12); /* the new op */
    cg_tensor_free(y);

    /* gradcheck through the handle, and the C helper by name. */
    {
        cg_tensor *x64 = cgt_f64(1, shape, d);
        cg_tensor_set_requires_grad(x64, 1);
        CHECK_OK(cg_gradcheck(call_cube, h, 1, &x64, 1e-6, 1e-6, 1e-5));
        CHECK_OK(cg_op_gradcheck("cube", 1, &x64, 1, &c, 1e-6, 1e-6, 1e-5));
        cg_tensor_free(x64);
    }

    /* A saved input modified in place fails the backward, naming the op. */
    {
        double v[3] = {1.0, 2.0, 3.0};
        cg_tensor *a = cgt_f64(1, shape, v), *z = NULL, *t = NULL;
        cg_tensor_set_requires_grad(a, 1);
        CHECK_OK(cg_op_call_handle(h, 1, &a, 1, &c, &z));
        CHECK_OK(cg_sum(z, NULL, 0, 0, &t));
        int prev = cg_set_grad_enabled(0);
        CHECK_OK(cg_mul_scalar_(a, 2.0));
        cg_set_grad_enabled(prev);
        CHECK_STATUS(cg_backward(t, NULL, 0, 0), CG_ERR_AUTOGRAD);
        CHECK(strstr(cg_last_error(), "modified by an in-place operation") != NULL &&
              strstr(cg_last_error(), "'cube'") != NULL);
        cg_tensor_free(t);
        cg_tensor_free(z);
        cg_tensor_free(a);
    }
    cg_op_handle_free(h);
    CHECK_OK(cg_op_unregister("cube"));
    CHECK(ctx_freed == 2);

    /* A backward that reads its output: it gets the output linked to the
     * entry, so the gradient is differentiable again (d2/dx2 exp = exp), and
     * an in-place change of the output fails the backward. */
    CHECK_OK(cg_op_register("my_exp", 1, 0, exp_fwd, exp_bwd, NULL, NULL));
    CHECK_OK(cg_op_set_saves("my_exp", 0, 1));
    CHECK_OK(cg_op_find("my_exp", &h));
    {
        cg_tensor *z = NULL, *t = NULL, *g = NULL, *gs = NULL, *g2 = NULL;
        CHECK_OK(cg_op_call_handle(h, 1, &x, 0, NULL, &z));
        CHECK_OK(cg_sum(z, NULL, 0, 0, &t));
        CHECK_OK(cg_grad(1, &t, NULL, 1, &x, 1, 1, 0, &g)); /* retain: g's graph runs through it */
        CHECK_CLOSE(cgt_at(g, 1), exp(0.5), 1e-12);
        CHECK_OK(cg_sum(g, NULL, 0, 0, &gs));
        CHECK_OK(cg_grad(1, &gs, NULL, 1, &x, 0, 0, 0, &g2));
        CHECK_CLOSE(cgt_at(g2, 0), exp(-1.0), 1e-12);
        CHECK_CLOSE(cgt_at(g2, 2), exp(2.0), 1e-12);
        cg_tensor_free(g2); cg_tensor_free(gs); cg_tensor_free(g); cg_tensor_free(t); cg_tensor_free(z);

        CHECK_OK(cg_op_call_handle(h, 1, &x, 0, NULL, &z));
        CHECK_OK(cg_sum(z, NULL, 0, 0, &t));
        int prev = cg_set_grad_enabled(0);
        CHECK_OK(cg_fill_(z, 0.0));
        cg_set_grad_enabled(prev);
        CHECK_STATUS(cg_backward(t, NULL, 0, 0), CG_ERR_AUTOGRAD);
        CHECK(strstr(cg_last_error(), "'my_exp'") != NULL);
        cg_tensor_free(t); cg_tensor_free(z);
    }

    /* Anomaly mode and entry observers name the op by its registered name. */
    {
        double bad[3] = {1.0, 1000.0, 2.0};
        cg_tensor *b = cgt_f64(1, shape, bad), *z = NULL, *t = NULL;
        int64_t obs = 0;
        cg_tensor_set_requires_grad(b, 1);
        int was = cg_set_anomaly_mode(1);
        CHECK_OK(cg_op_call_handle(h, 1, &b, 0, NULL, &z)); /* exp(1000) = inf */
        CHECK(strstr(cg_anomaly_report(), "my_exp") != NULL);
        cg_set_anomaly_mode(was);
        cg_tensor_free(z);
        CHECK_OK(cg_op_call_handle(h, 1, &x, 0, NULL, &z));
        CHECK_OK(cg_sum(z, NULL, 0, 0, &t));
        CHECK_OK(cg_entry_hook_push(observe, NULL, NULL, &obs));
        observed[0] = '\0';
        CHECK_OK(cg_backward(t, NULL, 0, 0));
        CHECK_OK(cg_entry_hook_pop(obs));
        CHECK(strcmp(observed, "my_exp") == 0);
        cg_tensor_free(t); cg_tensor_free(z); cg_tensor_free(b);
    }

    /* A backward override pushed for the op's name replaces its backward. */
    {
        cg_tensor *z = NULL, *t = NULL;
        int64_t ov = 0;
        CHECK_OK(cg_override_push("my_exp", override_ones, NULL, NULL, &ov));
        CHECK_OK(cg_op_call_handle(h, 1, &x, 0, NULL, &z));
        CHECK_OK(cg_override_pop(ov));
        CHECK_OK(cg_sum(z, NULL, 0, 0, &t));
        cg_tensor_set_grad(x, NULL);
        CHECK_OK(cg_backward(t, NULL, 0, 0));
        CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 2), 1.0, 1e-15);
        cg_tensor_free(t); cg_tensor_free(z);
    }
    cg_op_handle_free(h);
    CHECK_OK(cg_op_unregister("my_exp"));

    /* More saved tensors and params than a node holds: the call keeps them
     * in a block of its own, with the same checks, freed by the backward. */
    CHECK_OK(cg_op_register("wide", 5, 6, wide_fwd, wide_bwd, NULL, NULL));
    CHECK_OK(cg_op_find("wide", &h));
    {
        cg_tensor *in[5];
        double v[5][3];
        for (int i = 0; i < 5; ++i) {
            for (int j = 0; j < 3; ++j) v[i][j] = 0.3 * (i + 1) - 0.7 * j;
            in[i] = cgt_f64(1, shape, v[i]);
            cg_tensor_set_requires_grad(in[i], 1);
        }
        CHECK_OK(cg_gradcheck(call_wide, h, 5, in, 1e-6, 1e-6, 1e-5));

        /* An input that does not require grad is held by the saved slot
         * only: the non-retained backward releases it. */
        double blob[3] = {1.0, -2.0, 0.5};
        cg_tensor *fixed = NULL, *z = NULL, *t = NULL;
        CHECK_OK(cg_from_blob(CG_FLOAT64, 1, shape, NULL, blob, count_release, NULL, &fixed));
        cg_tensor *mixed[5] = {in[0], in[1], in[2], fixed, in[4]};
        CHECK_OK(call_wide(h, 5, mixed, &z));
        cg_tensor_free(fixed);
        CHECK_OK(cg_sum(z, NULL, 0, 0, &t));
        CHECK(released == 0);
        for (int i = 0; i < 5; ++i) cg_tensor_set_grad(in[i], NULL);
        CHECK_OK(cg_backward(t, NULL, 0, 0));
        CHECK(released == 1);
        CHECK_CLOSE(cgt_at(cg_tensor_grad(in[2]), 0), 2.0 * 2.0 * v[2][0], 1e-12);
        CHECK(cg_tensor_grad(in[3]) == NULL);
        CHECK_STATUS(cg_backward(t, NULL, 0, 0), CG_ERR_AUTOGRAD); /* released: a second backward */
        CHECK(strstr(cg_last_error(), "second time") != NULL);
        cg_tensor_free(t); cg_tensor_free(z);

        /* In-place change of the fifth saved input. */
        CHECK_OK(call_wide(h, 5, in, &z));
        CHECK_OK(cg_sum(z, NULL, 0, 0, &t));
        int prev = cg_set_grad_enabled(0);
        CHECK_OK(cg_mul_scalar_(in[4], 3.0));
        cg_set_grad_enabled(prev);
        CHECK_STATUS(cg_backward(t, NULL, 0, 0), CG_ERR_AUTOGRAD);
        CHECK(strstr(cg_last_error(), "modified by an in-place operation") != NULL &&
              strstr(cg_last_error(), "'wide'") != NULL);
        cg_tensor_free(t); cg_tensor_free(z);
        for (int i = 0; i < 5; ++i) cg_tensor_free(in[i]);
    }
    cg_op_handle_free(h);
    CHECK_OK(cg_op_unregister("wide"));

    /* The engine checks returned gradients as for any custom entry. */
    CHECK_OK(cg_op_register("f32_grad", 1, 0, exp_fwd, f32_bwd, NULL, NULL));
    CHECK_OK(cg_op_call("f32_grad", 1, &x, 0, NULL, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    CHECK_STATUS(cg_backward(s, NULL, 0, 0), CG_ERR_DTYPE);
    CHECK(strstr(cg_last_error(), "'f32_grad'") != NULL && strstr(cg_last_error(), "input 0") != NULL);
    cg_tensor_free(s); cg_tensor_free(y);
    CHECK_OK(cg_op_unregister("f32_grad"));
    CHECK_OK(cg_op_register("bcast_grad", 1, 0, exp_fwd, bcast_bwd, NULL, NULL));
    CHECK_OK(cg_op_call("bcast_grad", 1, &x, 0, NULL, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    cg_tensor_set_grad(x, NULL);
    CHECK_OK(cg_backward(s, NULL, 0, 0));
    CHECK(cg_tensor_ndim(cg_tensor_grad(x)) == 1);
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 1), 1.0, 1e-15);
    cg_tensor_free(s); cg_tensor_free(y);
    CHECK_OK(cg_op_unregister("bcast_grad"));

    /* An integer output cannot carry a gradient. */
    CHECK_OK(cg_op_register("to_int", 1, 0, to_int_fwd, exp_bwd, NULL, NULL));
    CHECK_STATUS(cg_op_call("to_int", 1, &x, 0, NULL, &y), CG_ERR_DTYPE);
    CHECK(y == NULL && strstr(cg_last_error(), "'to_int'") != NULL);
    CHECK_OK(cg_op_unregister("to_int"));

    /* Concurrent calls through one handle, unregistered meanwhile. */
    ctx_freed = 0;
    CHECK_OK(cg_op_register("cube", 1, 1, cube_fwd, cube_bwd, &one, count_free));
    CHECK_OK(cg_op_find("cube", &h));
    {
        pthread_t th[N_THREADS];
        int started = 0;
        for (int i = 0; i < N_THREADS; ++i) started += pthread_create(&th[i], NULL, hammer, h) == 0;
        CHECK(started == N_THREADS);
        CHECK_OK(cg_op_unregister("cube"));
        long bad = 0;
        for (int i = 0; i < started; ++i) {
            void *r = NULL;
            pthread_join(th[i], &r);
            bad += (long)r;
        }
        CHECK(bad == 0);
        CHECK(ctx_freed == 0); /* the handle still holds it */
        cg_op_handle_free(h);
        CHECK(ctx_freed == 1);
    }

    cg_tensor_free(x);
    CHECK(cg_op_count() == 0);
    return cgt_report(__FILE__);
}
