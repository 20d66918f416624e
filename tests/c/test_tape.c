/* test_tape.c -- the tape's semantics through the public C API. */
#include <stdlib.h>

#include "cgtest.h"

static cg_tensor *vec64(int64_t n, const double *v) {
    cg_tensor *t = cgt_f64(1, &n, v);
    cg_tensor_set_requires_grad(t, 1);
    return t;
}

/* Leaves accumulate, second backward without retain fails naming the op,
 * retain_graph allows it. */
static void test_accumulate_and_retain(void) {
    double xv[3] = {1, 2, 3};
    cg_tensor *x = vec64(3, xv), *y = NULL, *l = NULL;
    CHECK_OK(cg_mul(x, x, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
    CHECK(cg_tensor_requires_grad(l) && !cg_tensor_is_leaf(l));
    CHECK(strcmp(cg_tensor_grad_fn_name(y), "mul") == 0);
    CHECK_OK(cg_backward(l, NULL, 1, 0));
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 2), 6.0, 1e-12);
    CHECK_OK(cg_backward(l, NULL, 0, 0)); /* retained: works, accumulates */
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 2), 12.0, 1e-12);
    CHECK_STATUS(cg_backward(l, NULL, 0, 0), CG_ERR_AUTOGRAD);
    CHECK(strstr(cg_last_error(), "second time") != NULL);
    cg_tensor_free(l);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

/* Backward needs a one-element root or an explicit gradient of its shape. */
static void test_root_checks(void) {
    double xv[2] = {1, 2};
    cg_tensor *x = vec64(2, xv), *y = NULL, *g = NULL, *c = NULL;
    CHECK_OK(cg_mul_scalar(x, 3.0, &y));
    CHECK_STATUS(cg_backward(y, NULL, 0, 0), CG_ERR_AUTOGRAD);
    int64_t three = 3;
    CHECK_OK(cg_ones(CG_FLOAT64, 1, &three, &g));
    CHECK_STATUS(cg_backward(y, g, 0, 0), CG_ERR_SHAPE);
    cg_tensor_free(g);
    g = NULL;
    int64_t two = 2;
    CHECK_OK(cg_full(CG_FLOAT64, 1, &two, 2.0, &g));
    CHECK_OK(cg_backward(y, g, 0, 0));
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 1), 6.0, 1e-12);
    CHECK_OK(cg_scalar(CG_FLOAT64, 1.0, &c)); /* constant: no grad */
    CHECK_STATUS(cg_backward(c, NULL, 0, 0), CG_ERR_AUTOGRAD);
    CHECK_STATUS(cg_backward(NULL, NULL, 0, 0), CG_ERR_NULL);
    cg_tensor_free(c);
    cg_tensor_free(g);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

/* create_graph: d2/dx2 x^3 = 6x through cg_grad. */
static void test_second_derivative(void) {
    double xv[1] = {2.0};
    cg_tensor *x = vec64(1, xv), *y = NULL, *l = NULL, *g1 = NULL, *g2 = NULL, *s = NULL;
    CHECK_OK(cg_pow_scalar(x, 3.0, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
    CHECK_OK(cg_grad(1, &l, NULL, 1, &x, 0, 1, 0, &g1));
    CHECK_CLOSE(cgt_at(g1, 0), 12.0, 1e-12);
    CHECK(cg_tensor_requires_grad(g1));
    CHECK(cg_tensor_grad(x) == NULL); /* cg_grad leaves .grad alone */
    CHECK_OK(cg_sum(g1, NULL, 0, 0, &s));
    CHECK_OK(cg_grad(1, &s, NULL, 1, &x, 0, 0, 0, &g2));
    CHECK_CLOSE(cgt_at(g2, 0), 12.0, 1e-12); /* 6x at x=2 */
    cg_tensor_free(g2);
    cg_tensor_free(s);
    cg_tensor_free(g1);
    cg_tensor_free(l);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

/* An input that is not used: error unless allow_unused. */
static void test_grad_unused(void) {
    double v[1] = {1.0};
    cg_tensor *x = vec64(1, v), *z = vec64(1, v), *y = NULL, *l = NULL;
    cg_tensor *ins[2], *gs[2] = {NULL, NULL};
    ins[0] = x;
    ins[1] = z;
    CHECK_OK(cg_exp(x, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
    CHECK_STATUS(cg_grad(1, &l, NULL, 2, ins, 1, 0, 0, gs), CG_ERR_AUTOGRAD);
    CHECK(gs[0] == NULL && gs[1] == NULL);
    CHECK_OK(cg_grad(1, &l, NULL, 2, ins, 1, 0, 1, gs));
    CHECK(gs[0] != NULL && gs[1] == NULL);
    CHECK_CLOSE(cgt_at(gs[0], 0), exp(1.0), 1e-12);
    cg_tensor_free(gs[0]);
    cg_tensor_free(l);
    cg_tensor_free(y);
    cg_tensor_free(z);
    cg_tensor_free(x);
}

/* A tensor saved for backward and then modified in place is detected. */
static void test_version_counter(void) {
    double xv[2] = {1, 2};
    cg_tensor *x = vec64(2, xv), *a = NULL, *b = NULL, *l = NULL;
    CHECK_OK(cg_mul_scalar(x, 2.0, &a)); /* non-leaf */
    CHECK_OK(cg_mul(a, a, &b));          /* saves a */
    CHECK_OK(cg_sum(b, NULL, 0, 0, &l));
    uint64_t v0 = cg_tensor_version(a);
    int prev = cg_set_grad_enabled(0);
    CHECK_OK(cg_mul_scalar_(a, 3.0));
    cg_set_grad_enabled(prev);
    CHECK(cg_tensor_version(a) == v0 + 1);
    CHECK_STATUS(cg_backward(l, NULL, 0, 0), CG_ERR_AUTOGRAD);
    CHECK(strstr(cg_last_error(), "in-place") != NULL);
    CHECK(strstr(cg_last_error(), "mul") != NULL);
    cg_tensor_free(l);
    cg_tensor_free(b);
    cg_tensor_free(a);
    cg_tensor_free(x);
}

/* In-place on a leaf that requires grad is refused while recording. */
static void test_inplace_leaf_refused(void) {
    double xv[2] = {1, 2};
    cg_tensor *x = vec64(2, xv);
    CHECK_STATUS(cg_add_scalar_(x, 1.0), CG_ERR_AUTOGRAD);
    int prev = cg_set_grad_enabled(0);
    CHECK_OK(cg_add_scalar_(x, 1.0));
    cg_set_grad_enabled(prev);
    CHECK_CLOSE(cgt_at(x, 0), 2.0, 1e-12);
    cg_tensor_free(x);
}

/* GAN pattern: an unrelated graph survives a backward. */
static void test_unrelated_survives(void) {
    double v[2] = {0.5, -1.0};
    cg_tensor *g_w = vec64(2, v), *d_w = vec64(2, v);
    cg_tensor *fake = NULL, *fake_det = NULL, *d_out = NULL, *d_loss = NULL, *g_loss = NULL, *g_out = NULL;
    CHECK_OK(cg_tanh(g_w, &fake));             /* G forward */
    CHECK_OK(cg_detach(fake, &fake_det));
    CHECK_OK(cg_mul(fake_det, d_w, &d_out));   /* D on a detached copy */
    CHECK_OK(cg_sum(d_out, NULL, 0, 0, &d_loss));
    CHECK_OK(cg_backward(d_loss, NULL, 0, 0)); /* D step */
    CHECK(cg_tensor_grad(g_w) == NULL);
    CHECK(cg_tensor_grad(d_w) != NULL);
    CHECK_OK(cg_mul(fake, d_w, &g_out));       /* then through G */
    CHECK_OK(cg_sum(g_out, NULL, 0, 0, &g_loss));
    CHECK_OK(cg_backward(g_loss, NULL, 0, 0));
    double t = tanh(0.5);
    CHECK_CLOSE(cgt_at(cg_tensor_grad(g_w), 0), (1 - t * t) * 0.5, 1e-12);
    cg_tensor_free(g_loss);
    cg_tensor_free(g_out);
    cg_tensor_free(d_loss);
    cg_tensor_free(d_out);
    cg_tensor_free(fake_det);
    cg_tensor_free(fake);
    cg_tensor_free(d_w);
    cg_tensor_free(g_w);
}

/* A chain of a million ops: forward, backward and free, no recursion. */
static void test_long_chain(void) {
    double v[1] = {1.0};
    cg_tensor *x = vec64(1, v), *y = x, *l = NULL;
    cg_tensor_retain(x);
    const int n = 1000000;
    for (int i = 0; i < n; ++i) {
        cg_tensor *z = NULL;
        if (cg_add_scalar(y, 1e-6, &z) != CG_OK) break;
        cg_tensor_free(y);
        y = z;
    }
    CHECK_CLOSE(cgt_at(y, 0), 2.0, 1e-6);
    CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 0), 1.0, 1e-12);
    cg_tensor_free(l);
    cg_tensor_free(y);
    /* And a chain freed without any backward. */
    y = x;
    cg_tensor_retain(x);
    for (int i = 0; i < n; ++i) {
        cg_tensor *z = NULL;
        if (cg_mul_scalar(y, 1.0, &z) != CG_OK) break;
        cg_tensor_free(y);
        y = z;
    }
    cg_tensor_free(y);
    cg_tensor_free(x);
    CHECK(1);
}

/* no-grad mode records nothing. */
static void test_grad_mode(void) {
    double v[1] = {1.0};
    cg_tensor *x = vec64(1, v), *y = NULL;
    CHECK(cg_is_grad_enabled());
    int prev = cg_set_grad_enabled(0);
    CHECK(prev == 1);
    CHECK_OK(cg_exp(x, &y));
    cg_set_grad_enabled(prev);
    CHECK(!cg_tensor_requires_grad(y) && cg_tensor_is_leaf(y));
    cg_tensor_free(y);
    cg_tensor_free(x);
}

/* Custom op: y = x^2 with a hand-written backward 2*x*g. */
typedef struct sq_ctx {
    cg_tensor *x;
} sq_ctx;

static cg_status square_backward(void *ctx, int n_out, cg_tensor *const *gout, int n_in,
                                 const int *needs, cg_tensor **gin) {
    sq_ctx *c = (sq_ctx *)ctx;
    cg_tensor *two_x = NULL;
    if (!needs[0]) return CG_OK;
    cg_status st = cg_mul_scalar(c->x, 2.0, &two_x);
    if (st) return st;
    st = cg_mul(two_x, gout[0], &gin[0]);
    cg_tensor_free(two_x);
    return st;
}

static void square_free(void *ctx) {
    sq_ctx *c = (sq_ctx *)ctx;
    cg_tensor_free(c->x);
    free(c);
}

static cg_status square_op(void *unused, int n, cg_tensor *const *in, cg_tensor **out) {
    cg_tensor *x = in[0], *y = NULL;
    int prev = cg_set_grad_enabled(0);
    cg_status st = cg_mul(x, x, &y);
    cg_set_grad_enabled(prev);
    if (st) return st;
    sq_ctx *c = (sq_ctx *)malloc(sizeof *c);
    if (!c) {
        cg_tensor_free(y);
        return cg_set_error(CG_ERR_NOMEM, "out of memory");
    }
    c->x = x;
    cg_tensor_retain(x);
    st = cg_record_custom("square", 1, &x, 1, &y, square_backward, c, square_free);
    if (st) {
        cg_tensor_free(y);
        return st;
    }
    *out = y;
    return CG_OK;
}

static void test_custom_op(void) {
    int64_t shape[2] = {2, 3};
    cg_manual_seed(1);
    cg_tensor *x = cgt_randn64(2, shape), *y = NULL;
    CHECK_OK(square_op(NULL, 1, &x, &y));
    CHECK(strcmp(cg_tensor_grad_fn_name(y), "square") == 0);
    CHECK_OK(cg_gradcheck(square_op, NULL, 1, &x, 1e-6, 1e-7, 1e-5));
    cg_tensor_free(y);
    cg_tensor_free(x);
}

/* gradcheck reports a wrong gradient, naming input and element. */
static cg_status wrong_backward(void *ctx, int n_out, cg_tensor *const *gout, int n_in,
                                const int *needs, cg_tensor **gin) {
    return cg_mul_scalar(gout[0], 3.0, &gin[0]); /* true derivative of identity is 1 */
}

static cg_status wrong_op(void *unused, int n, cg_tensor *const *in, cg_tensor **out) {
    cg_tensor *y = NULL;
    int prev = cg_set_grad_enabled(0);
    cg_status st = cg_clone(in[0], &y);
    cg_set_grad_enabled(prev);
    if (st) return st;
    st = cg_record_custom("wrong", 1, in, 1, &y, wrong_backward, NULL, NULL);
    if (st) {
        cg_tensor_free(y);
        return st;
    }
    *out = y;
    return CG_OK;
}

static void test_gradcheck_reports(void) {
    int64_t n = 4;
    cg_tensor *x = cgt_randn64(1, &n);
    CHECK_STATUS(cg_gradcheck(wrong_op, NULL, 1, &x, 1e-6, 1e-7, 1e-5), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "input 0") != NULL);
    cg_tensor_free(x);
}

/* Foreign memory: release runs once, when the last view goes. */
static int released = 0;
static void on_release(void *ctx) { released += *(int *)ctx; }

static void test_from_blob(void) {
    double buf[6] = {0, 1, 2, 3, 4, 5};
    int64_t shape[2] = {2, 3};
    int one = 1;
    cg_tensor *t = NULL, *tt = NULL;
    CHECK_OK(cg_from_blob(CG_FLOAT64, 2, shape, NULL, buf, on_release, &one, &t));
    CHECK_OK(cg_transpose(t, 0, 1, &tt));
    CHECK_CLOSE(cgt_at(tt, 1), 3.0, 0); /* tt[0][1] = t[1][0] */
    cg_tensor_free(t);
    CHECK(released == 0);
    cg_tensor_free(tt);
    CHECK(released == 1);
}

/* Errors for bad creation arguments; nothing aborts. */
static void test_creation_errors(void) {
    cg_tensor *t = NULL;
    int64_t bad[1] = {-1};
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_STATUS(cg_zeros(CG_FLOAT32, 1, bad, &t), CG_ERR_VALUE);
    CHECK(t == NULL);
    CHECK_STATUS(cg_zeros(CG_FLOAT32, 9, nine, &t), CG_ERR_SHAPE);
    CHECK_STATUS(cg_zeros((cg_dtype)42, 1, nine, &t), CG_ERR_DTYPE);
    CHECK_STATUS(cg_zeros(CG_FLOAT32, 1, nine, NULL), CG_ERR_NULL);
    int64_t one = 1;
    CHECK_OK(cg_zeros(CG_INT64, 1, &one, &t));
    CHECK_STATUS(cg_tensor_set_requires_grad(t, 1), CG_ERR_DTYPE);
    cg_tensor_free(t);
    cg_tensor_free(NULL);
}

/* Grad hooks: a doubling hook on a leaf, a post-accumulate counter, removal. */
static int post_calls = 0;
static cg_status double_hook(void *ctx, cg_tensor *grad, cg_tensor **replacement) {
    ++*(int *)ctx;
    return cg_mul_scalar(grad, 2.0, replacement);
}
static cg_status post_hook(void *ctx, cg_tensor *leaf) {
    ++post_calls;
    return cg_tensor_grad(leaf) ? CG_OK : cg_set_error(CG_ERR_VALUE, "no grad");
}
static cg_status failing_hook(void *ctx, cg_tensor *grad, cg_tensor **replacement) {
    return cg_set_error(CG_ERR_CALLBACK, "hook says no");
}

static void test_hooks(void) {
    double xv[2] = {1, 2};
    cg_tensor *x = vec64(2, xv), *y = NULL, *l = NULL;
    int calls = 0;
    int64_t h1 = 0, h2 = 0, h3 = 0;
    CHECK_OK(cg_tensor_register_hook(x, double_hook, &calls, NULL, &h1));
    CHECK_OK(cg_tensor_register_post_accumulate_hook(x, post_hook, NULL, NULL, &h2));
    CHECK_OK(cg_mul(x, x, &y));
    CHECK_OK(cg_add(y, x, &l)); /* x reaches l twice: the hook runs once */
    cg_tensor_free(y);
    y = l;
    l = NULL;
    CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 1, 0));
    CHECK(calls == 1 && post_calls == 1);
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 1), 2.0 * (2 * 2 + 1), 1e-12);
    CHECK_OK(cg_tensor_remove_hook(x, h1));
    CHECK_STATUS(cg_tensor_remove_hook(x, h1), CG_ERR_VALUE);
    CHECK_OK(cg_tensor_set_grad(x, NULL));
    CHECK_OK(cg_tensor_register_hook(x, failing_hook, NULL, NULL, &h3));
    CHECK_STATUS(cg_backward(l, NULL, 1, 0), CG_ERR_CALLBACK);
    CHECK(strstr(cg_last_error(), "hook says no") != NULL);
    CHECK_OK(cg_tensor_remove_hook(x, h3));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 1), 5.0, 1e-12);
    cg_tensor *c = NULL;
    CHECK_OK(cg_scalar(CG_FLOAT64, 1.0, &c));
    CHECK_STATUS(cg_tensor_register_hook(c, double_hook, &calls, NULL, &h1), CG_ERR_AUTOGRAD);
    cg_tensor_free(c);
    cg_tensor_free(l);
    cg_tensor_free(y);
    cg_tensor_free(x);
}

/* Backward override: every "exp" recorded while pushed gets 2*g. */
static int ov_freed = 0;
static void ov_free(void *ctx) { ++ov_freed; }
static cg_status twice(void *ctx, const char *op, int n_in, cg_tensor *const *in, int n_out,
                       cg_tensor *const *out, cg_tensor *const *gout, const int *needs,
                       cg_tensor **gin) {
    if (strcmp(op, "exp") != 0 || n_in != 1 || n_out != 1) return cg_set_error(CG_ERR_VALUE, "bad call");
    return cg_mul_scalar(gout[0], 2.0, &gin[0]);
}

static void test_override(void) {
    double xv[2] = {0.0, 1.0};
    cg_tensor *x = vec64(2, xv), *y = NULL, *z = NULL, *l = NULL, *s = NULL;
    int64_t h = 0;
    CHECK_OK(cg_override_push("exp", twice, NULL, ov_free, &h));
    CHECK_OK(cg_exp(x, &y));
    CHECK_STATUS(cg_override_pop(h + 1), CG_ERR_VALUE);
    CHECK_OK(cg_override_pop(h));
    CHECK(ov_freed == 0); /* y's entry still uses it */
    CHECK_OK(cg_exp(x, &z)); /* recorded after the pop: built-in derivative */
    CHECK_OK(cg_add(y, z, &s));
    CHECK_OK(cg_sum(s, NULL, 0, 0, &l));
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_CLOSE(cgt_at(cg_tensor_grad(x), 1), 2.0 + exp(1.0), 1e-12);
    cg_tensor_free(l);
    cg_tensor_free(s);
    cg_tensor_free(z);
    cg_tensor_free(y);
    CHECK(ov_freed == 1);
    CHECK_STATUS(cg_override_push(NULL, twice, NULL, NULL, &h), CG_ERR_NULL);
    cg_tensor_free(x);
}

static void test_set_data(void) {
    int64_t shape[1] = {3}, shape2[2] = {2, 2};
    double d[3] = {1, 2, 3}, d4[4] = {1, 1, 1, 1};
    cg_tensor *p = cgt_f64(1, shape, d), *y = NULL, *s = NULL, *f32 = NULL, *m = NULL;
    cg_tensor_set_requires_grad(p, 1);
    CHECK_OK(cg_mul(p, p, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    CHECK_OK(cg_to_dtype(p, CG_FLOAT32, &f32));
    cg_tensor *f32d = NULL;
    CHECK_OK(cg_detach(f32, &f32d));
    CHECK_OK(cg_tensor_set_data(p, f32d));
    CHECK(cg_tensor_dtype(p) == CG_FLOAT32 && cg_tensor_requires_grad(p) && cg_tensor_is_leaf(p));
    CHECK_STATUS(cg_backward(s, NULL, 0, 0), CG_ERR_AUTOGRAD); /* mul saved the old p */
    CHECK(strstr(cg_last_error(), "data replaced") != NULL);
    m = cgt_f64(2, shape2, d4);
    CHECK_OK(cg_tensor_set_data(p, m)); /* any shape, like PyTorch */
    CHECK(cg_tensor_numel(p) == 4 && cg_tensor_grad(p) == NULL);
    cg_tensor *idx = NULL;
    CHECK_OK(cg_arange(CG_INT64, 0, 3, 1, &idx));
    CHECK_STATUS(cg_tensor_set_data(p, idx), CG_ERR_DTYPE); /* requires grad: floating only */
    CHECK_STATUS(cg_tensor_set_data(y, m), CG_ERR_AUTOGRAD);  /* not a leaf */
    CHECK_STATUS(cg_tensor_set_data(NULL, m), CG_ERR_NULL);
    cg_tensor_free(idx); cg_tensor_free(m); cg_tensor_free(f32d); cg_tensor_free(f32);
    cg_tensor_free(s); cg_tensor_free(y); cg_tensor_free(p);
}

int main(void) {
    test_set_data();
    test_override();
    test_hooks();
    test_accumulate_and_retain();
    test_root_checks();
    test_second_derivative();
    test_grad_unused();
    test_version_counter();
    test_inplace_leaf_refused();
    test_unrelated_survives();
    test_long_chain();
    test_grad_mode();
    test_custom_op();
    test_gradcheck_reports();
    test_from_blob();
    test_creation_errors();
    return cgt_report(__FILE__);
}
