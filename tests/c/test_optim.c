/* test_optim.c -- fused optimizer updates, clipping and tensor statistics
 * against straightforward reference loops (written from the update rules
 * in PyTorch's documentation), and their error statuses. */
#include <limits.h>
#include <stdlib.h>

#include "cgtest.h"

#define N 7
#define STEPS 5

static cg_tensor *make(cg_dtype dt, const double *v, int64_t n) {
    cg_tensor *t = NULL, *t64 = cgt_f64(1, &n, v);
    if (dt == CG_FLOAT64) return t64;
    cg_to_dtype(t64, dt, &t);
    cg_tensor_free(t64);
    return t;
}

/* Element i of a float32 or float64 tensor set to v. */
static void put(cg_tensor *t, int64_t i, double v) {
    if (cg_tensor_dtype(t) == CG_FLOAT32) ((float *)cg_tensor_data(t))[i] = (float)v;
    else ((double *)cg_tensor_data(t))[i] = v;
}

static void set_from(cg_tensor *t, const double *v) {
    int64_t n = cg_tensor_numel(t);
    for (int64_t i = 0; i < n; ++i) put(t, i, v[i]);
}

static double max_rel_err(const cg_tensor *t, const double *want, int64_t n) {
    double e = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        double d = fabs(cgt_at(t, i) - want[i]) / (1e-6 + fabs(want[i]));
        if (!(d <= e)) e = d;
    }
    return e;
}

static int bitwise_same(const cg_tensor *a, const cg_tensor *b) {
    return memcmp(cg_tensor_data((cg_tensor *)a), cg_tensor_data((cg_tensor *)b),
                  (size_t)cg_tensor_numel(a) * cg_dtype_size(cg_tensor_dtype(a))) == 0;
}

static const double P0[N] = {0.5, -1.25, 2.0, 0.0, -0.3, 1.7, -2.2};

/* The gradient at step k: a fixed pattern that changes sign and size. */
static void grad_at(int k, const double *p, double *g) {
    for (int i = 0; i < N; ++i) g[i] = 0.8 * p[i] + 0.3 * sin(1.0 + i + 2.0 * k);
}

static double tol_for(cg_dtype dt) { return dt == CG_FLOAT32 ? 2e-5 : 1e-12; }

/* ------------------------------------------------------------------- SGD */
static void check_sgd(cg_dtype dt, cg_sgd_options o) {
    double p[N], buf[N] = {0}, g[N];
    memcpy(p, P0, sizeof p);
    int64_t n = N;
    cg_tensor *tp = make(dt, P0, n), *tg = make(dt, P0, n), *tb = make(dt, P0, n);
    for (int k = 0; k < STEPS; ++k) {
        grad_at(k, p, g);
        for (int i = 0; i < N; ++i) {
            double d = o.maximize ? -g[i] : g[i];
            d += o.weight_decay * p[i];
            if (o.momentum != 0) {
                buf[i] = k == 0 ? d : o.momentum * buf[i] + (1 - o.dampening) * d;
                d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
            }
            p[i] -= o.lr * d;
        }
        double gc[N];
        for (int i = 0; i < N; ++i) gc[i] = cgt_at(tp, i);
        grad_at(k, gc, gc);
        set_from(tg, gc);
        uint64_t v0 = cg_tensor_version(tp);
        CHECK_OK(cg_sgd_update(tp, tg, o.momentum != 0 ? tb : NULL, k == 0, &o, NULL));
        CHECK(cg_tensor_version(tp) == v0 + 1);
    }
    CHECK(max_rel_err(tp, p, N) < tol_for(dt));
    cg_tensor_free(tp);
    cg_tensor_free(tg);
    cg_tensor_free(tb);
}

static void test_sgd(void) {
    for (int d = 0; d < 2; ++d) {
        cg_dtype dt = d ? CG_FLOAT64 : CG_FLOAT32;
        cg_sgd_options o = cg_sgd_default_options();
        o.lr = 0.1;
        check_sgd(dt, o);
        o.momentum = 0.9;
        o.dampening = 0.1;
        o.weight_decay = 0.01;
        check_sgd(dt, o);
        o.dampening = 0.0;
        o.nesterov = 1;
        o.maximize = 1;
        check_sgd(dt, o);
    }
}

/* ------------------------------------------------------------ Adam/AdamW */
static void check_adam(cg_dtype dt, cg_adam_options o) {
    double p[N], m[N] = {0}, v[N] = {0}, vmax[N] = {0}, g[N];
    memcpy(p, P0, sizeof p);
    int64_t n = N;
    double zero[N] = {0};
    cg_tensor *tp = make(dt, P0, n), *tg = make(dt, P0, n);
    cg_tensor *tm = make(dt, zero, n), *tv = make(dt, zero, n), *tvm = make(dt, zero, n);
    for (int k = 1; k <= STEPS; ++k) {
        grad_at(k, p, g);
        double bc1 = 1 - pow(o.beta1, k), bc2 = 1 - pow(o.beta2, k);
        for (int i = 0; i < N; ++i) {
            double d = o.maximize ? -g[i] : g[i];
            if (o.decoupled_weight_decay) p[i] *= 1 - o.lr * o.weight_decay;
            else d += o.weight_decay * p[i];
            m[i] = o.beta1 * m[i] + (1 - o.beta1) * d;
            v[i] = o.beta2 * v[i] + (1 - o.beta2) * d * d;
            vmax[i] = v[i] > vmax[i] ? v[i] : vmax[i];
            double vh = o.amsgrad ? vmax[i] : v[i];
            p[i] -= o.lr / bc1 * m[i] / (sqrt(vh) / sqrt(bc2) + o.eps);
        }
        double gc[N];
        for (int i = 0; i < N; ++i) gc[i] = cgt_at(tp, i);
        grad_at(k, gc, gc);
        set_from(tg, gc);
        uint64_t vm0 = cg_tensor_version(tm);
        CHECK_OK(cg_adam_update(tp, tg, tm, tv, tvm, k, &o, NULL));
        CHECK(cg_tensor_version(tm) == vm0 + 1);
    }
    CHECK(max_rel_err(tp, p, N) < tol_for(dt));
    CHECK(max_rel_err(tv, v, N) < tol_for(dt));
    cg_tensor_free(tp);
    cg_tensor_free(tg);
    cg_tensor_free(tm);
    cg_tensor_free(tv);
    cg_tensor_free(tvm);
}

static void test_adam(void) {
    for (int d = 0; d < 2; ++d) {
        cg_dtype dt = d ? CG_FLOAT64 : CG_FLOAT32;
        cg_adam_options o = cg_adam_default_options();
        o.lr = 0.05;
        check_adam(dt, o);
        o.weight_decay = 0.1;
        o.amsgrad = 1;
        check_adam(dt, o);
        o.maximize = 1;
        o.beta1 = 0.6; /* lerp weight 0.4 < 0.5: the other branch */
        check_adam(dt, o);
        cg_adam_options w = cg_adamw_default_options();
        w.lr = 0.05;
        w.weight_decay = 0.2;
        check_adam(dt, w);
    }
}

/* --------------------------------------------- updates on many at once */
/* cg_*_update_multi gives the bits of one cg_*_update per parameter (mixed
 * dtypes, sizes 7, 0, 3 and 130, every option set, a few steps), and a bad
 * entry fails the call before any parameter moves. The lists t[0..4]:
 * parameters, gradients and up to three state buffers (t[3], t[4] >= 0). */
enum { MULTI = 4 };
static const int64_t MULTI_N[MULTI] = {7, 0, 3, 130};

/* The lists' starting values from seed; bit k of zeroed: t[k] all zero. */
static void multi_state(cg_tensor *t[5][MULTI], int seed, unsigned zeroed) {
    for (int j = 0; j < MULTI; ++j) {
        const cg_dtype dt = j % 2 ? CG_FLOAT64 : CG_FLOAT32;
        const int64_t n = MULTI_N[j];
        for (int k = 0; k < 5; ++k) {
            CHECK_OK(cg_zeros(dt, 1, &n, &t[k][j]));
            for (int64_t i = 0; i < n && !(zeroed >> k & 1); ++i)
                put(t[k][j], i, k >= 3 ? fabs(sin(0.3 * (double)i + k + seed)) * 0.1
                                       : sin(0.7 * (double)i + 1.3 * k + j + seed));
        }
    }
}

static void multi_free(cg_tensor *t[5][MULTI]) {
    for (int k = 0; k < 5; ++k)
        for (int j = 0; j < MULTI; ++j) cg_tensor_free(t[k][j]);
}

static int multi_same(cg_tensor *a[5][MULTI], cg_tensor *b[5][MULTI]) {
    for (int k = 0; k < 5; ++k)
        for (int j = 0; j < MULTI; ++j)
            if (MULTI_N[j] && !bitwise_same(a[k][j], b[k][j])) return 0;
    return 1;
}

static int multi_finite(cg_tensor *t[5][MULTI]) {
    for (int k = 0; k < 5; ++k)
        for (int j = 0; j < MULTI; ++j)
            for (int64_t i = 0; i < MULTI_N[j]; ++i)
                if (!isfinite(cgt_at(t[k][j], i))) return 0;
    return 1;
}

/* One step of an update over the lists t: parameter j's own call (j >= 0)
 * or the multi call over all of them (j < 0). */
typedef cg_status (*multi_step_fn)(cg_tensor *t[5][MULTI], int j, int64_t step, const void *opts);

static void multi_expect(int ok, const char *what, const char *name, int seed) {
    if (ok) ++cgt_passed;
    else CGT_FAIL_("%s (%s, seed %d)", what, name, seed);
}

/* Steps first..first+2 with options opts, by one call per parameter on one
 * copy of the state and by the multi call on another: the same bits, all
 * finite, and each version of a written list (bit k of written: t[k])
 * bumped once a step, the others never. */

static void multi_vs_single(const char *name, multi_step_fn f, const void *opts, int seed,
                            unsigned zeroed, int64_t first, unsigned written) {
    cg_tensor *one[5][MULTI], *many[5][MULTI];
    multi_state(one, seed, zeroed);
    multi_state(many, seed, zeroed);
    for (int64_t step = first; step < first + 3; ++step) {
        for (int j = 0; j < MULTI; ++j) CHECK_OK(f(one, j, step, opts));
        CHECK_OK(f(many, -1, step, opts));
    }
    multi_expect(multi_same(one, many), "the bits of the single calls", name, seed);
    multi_expect(multi_finite(many), "finite", name, seed);
    int versions_ok = 1;
    for (int k = 0; k < 5; ++k)
        for (int j = 0; j < MULTI; ++j)
            versions_ok &= cg_tensor_version(many[k][j]) == (written >> k & 1 ? 3u : 0u) &&
                           cg_tensor_version(one[k][j]) == cg_tensor_version(many[k][j]);
    multi_expect(versions_ok, "versions bumped once a step, as by the single calls", name, seed);
    multi_free(one);
    multi_free(many);
}

/* The error checks' state: t and its copy ref; bad, a float64 (2,) that
 * fits no parameter; wrong_dtype, parameter 2's shape in float64; twin[k],
 * zeros of parameter 0's shape and dtype (another parameter's tensors, to
 * stand in for an entry). */
typedef struct {
    cg_tensor *t[5][MULTI], *ref[5][MULTI], *bad, *wrong_dtype, *twin[5];
} multi_fixture;

static void multi_fixture_init(multi_fixture *x, unsigned zeroed) {
    const int64_t two = 2;
    multi_state(x->t, 9, zeroed);
    multi_state(x->ref, 9, zeroed);
    CHECK_OK(cg_zeros(CG_FLOAT64, 1, &two, &x->bad));
    CHECK_OK(cg_zeros(CG_FLOAT64, 1, &MULTI_N[2], &x->wrong_dtype));
    for (int k = 0; k < 5; ++k) CHECK_OK(cg_zeros(CG_FLOAT32, 1, &MULTI_N[0], &x->twin[k]));
}

static void multi_fixture_free(multi_fixture *x) {
    multi_free(x->t);
    multi_free(x->ref);
    cg_tensor_free(x->bad);
    cg_tensor_free(x->wrong_dtype);
    for (int k = 0; k < 5; ++k) cg_tensor_free(x->twin[k]);
}

/* Nothing moved: t's bits those of ref, the twins still zero, no version
 * bumped. */
static int multi_unmoved(multi_fixture *x) {
    int ok = multi_same(x->t, x->ref);
    for (int k = 0; k < 5; ++k) {
        for (int j = 0; j < MULTI; ++j) ok &= cg_tensor_version(x->t[k][j]) == 0;
        ok &= cg_tensor_version(x->twin[k]) == 0;
        for (int64_t i = 0; i < MULTI_N[0]; ++i) ok &= cgt_at(x->twin[k], i) == 0.0;
    }
    return ok;
}

/* The list l with entry j replaced by e (out, for use in a call). */
static cg_tensor **with_entry(cg_tensor *out[MULTI], cg_tensor *const l[MULTI], int j,
                              cg_tensor *e) {
    memcpy(out, l, sizeof *out * MULTI);
    out[j] = e;
    return out;
}

/* l[k]: the fixture's list k with entry 3 the twin's (so entry 3 has
 * parameter 0's shape and dtype), then entry 3 of l[k_e] set to e. */
static void multi_twin(cg_tensor *l[5][MULTI], multi_fixture *x, int k_e, cg_tensor *e) {
    for (int k = 0; k < 5; ++k) with_entry(l[k], x->t[k], 3, x->twin[k]);
    l[k_e][3] = e;
}

/* A multi call that fails with status code, msg (unless NULL) in its
 * message, and moves nothing of the fixture named x where it is used. */
#define MULTI_FAILS(call, code, msg)                                           \
    do {                                                                       \
        CHECK_STATUS(call, code);                                              \
        const char *msg_ = (msg);                                              \
        if (msg_ && !strstr(cg_last_error(), msg_))                            \
            CGT_FAIL_("message '%s' lacks '%s'", cg_last_error(), msg_);       \
        CHECK(multi_unmoved(&x));                                              \
    } while (0)

/* Adam: t[2] exp_avg, t[3] exp_avg_sq, t[4] max_exp_avg_sq. */
static cg_status adam_multi_step(cg_tensor *t[5][MULTI], int j, int64_t step, const void *vo) {
    const cg_adam_options *o = (const cg_adam_options *)vo;
    if (j >= 0) return cg_adam_update(t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], step, o, NULL);
    return cg_adam_update_multi(MULTI, t[0], t[1], t[2], t[3], o->amsgrad ? t[4] : NULL, step, o);
}

static void test_adam_multi(void) {
    cg_adam_options opts[3] = {cg_adam_default_options(), cg_adam_default_options(),
                               cg_adamw_default_options()};
    opts[0].lr = 0.05;
    opts[1].lr = 0.02;
    opts[1].amsgrad = 1;
    opts[1].maximize = 1;
    opts[1].weight_decay = 0.1;
    opts[1].beta1 = 0.6;
    opts[2].lr = 0.05;
    for (int c = 0; c < 3; ++c)
        multi_vs_single("adam", adam_multi_step, &opts[c], c, 0, 1,
                        1u | 4u | 8u | (opts[c].amsgrad ? 16u : 0u));
    /* errors: status, message, and no parameter moved */
    cg_adam_options o = cg_adam_default_options();
    multi_fixture x;
    multi_fixture_init(&x, 0);
    cg_tensor **t0 = x.t[0], **t1 = x.t[1], **t2 = x.t[2], **t3 = x.t[3], *l[5][MULTI];
    MULTI_FAILS(cg_adam_update_multi(MULTI, t0, with_entry(l[1], t1, 3, x.bad), t2, t3,
                                     NULL, 1, &o), CG_ERR_SHAPE, "parameter 3");
    MULTI_FAILS(cg_adam_update_multi(MULTI, t0, t1, with_entry(l[2], t2, 3, t0[3]), t3,
                                     NULL, 1, &o), CG_ERR_VALUE, NULL);
    /* parameter 0 listed again as parameter 3 (with its own state buffers) */
    multi_twin(l, &x, 0, t0[0]);
    MULTI_FAILS(cg_adam_update_multi(MULTI, l[0], l[1], l[2], l[3], NULL, 1, &o), CG_ERR_VALUE,
                "share memory");
    MULTI_FAILS(cg_adam_update_multi(MULTI, t0, t1, t2, t3, NULL, 0, &o), CG_ERR_VALUE, NULL);
    MULTI_FAILS(cg_adam_update_multi(MULTI, t0, NULL, t2, t3, NULL, 1, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_adam_update_multi(-1, t0, t1, t2, t3, NULL, 1, &o), CG_ERR_VALUE, NULL);
    MULTI_FAILS(cg_adam_update_multi(INT_MAX / 5 + 1, t0, t1, t2, t3, NULL, 1, &o), CG_ERR_VALUE,
                "n must be in [0, 429496729]");
    o.amsgrad = 1;
    MULTI_FAILS(cg_adam_update_multi(MULTI, t0, t1, t2, t3, NULL, 1, &o), CG_ERR_NULL, NULL);
    CHECK_OK(cg_adam_update_multi(0, NULL, NULL, NULL, NULL, NULL, 1, &o));
    /* two views side by side in one storage are two parameters */
    {
        int64_t n8 = 8, n4 = 4;
        cg_tensor *base = NULL, *v0 = NULL, *v1 = NULL, *g[2] = {0}, *m[2] = {0}, *v[2] = {0};
        CHECK_OK(cg_zeros(CG_FLOAT64, 1, &n8, &base));
        CHECK_OK(cg_slice(base, 0, 0, 4, 1, &v0));
        CHECK_OK(cg_slice(base, 0, 4, 8, 1, &v1));
        for (int j = 0; j < 2; ++j) {
            CHECK_OK(cg_ones(CG_FLOAT64, 1, &n4, &g[j]));
            CHECK_OK(cg_zeros(CG_FLOAT64, 1, &n4, &m[j]));
            CHECK_OK(cg_zeros(CG_FLOAT64, 1, &n4, &v[j]));
        }
        cg_tensor *ps[2] = {v0, v1};
        o.amsgrad = 0;
        CHECK_OK(cg_adam_update_multi(2, ps, g, m, v, NULL, 1, &o));
        CHECK_CLOSE(cgt_at(base, 7), -o.lr, 1e-9); /* the first step moves each weight by lr */
        cg_tensor_free(base); cg_tensor_free(v0); cg_tensor_free(v1);
        for (int j = 0; j < 2; ++j) { cg_tensor_free(g[j]); cg_tensor_free(m[j]); cg_tensor_free(v[j]); }
    }
    multi_fixture_free(&x);
}

/* SGD: t[2] momentum buffers, the first step (0) initialising them. */
static cg_status sgd_multi_step(cg_tensor *t[5][MULTI], int j, int64_t step, const void *vo) {
    const cg_sgd_options *o = (const cg_sgd_options *)vo;
    if (j >= 0) return cg_sgd_update(t[0][j], t[1][j], t[2][j], step == 0, o, NULL);
    return cg_sgd_update_multi(MULTI, t[0], t[1], o->momentum != 0.0 ? t[2] : NULL, step == 0, o);
}

static void test_sgd_multi(void) {
    cg_sgd_options opts[3] = {cg_sgd_default_options(), cg_sgd_default_options(),
                              cg_sgd_default_options()};
    opts[0].lr = 0.05;
    opts[1].lr = 0.02;
    opts[1].momentum = 0.9;
    opts[1].dampening = 0.2;
    opts[1].maximize = 1;
    opts[2].lr = 0.05;
    opts[2].momentum = 0.8;
    opts[2].nesterov = 1;
    opts[2].weight_decay = 0.01;
    for (int c = 0; c < 3; ++c)
        multi_vs_single("sgd", sgd_multi_step, &opts[c], c, 0, 0,
                        1u | (opts[c].momentum != 0.0 ? 4u : 0u));
    /* errors: status, message, and no parameter moved */
    cg_sgd_options o = cg_sgd_default_options();
    o.momentum = 0.9;
    multi_fixture x;
    multi_fixture_init(&x, 0);
    cg_tensor **t0 = x.t[0], **t1 = x.t[1], **t2 = x.t[2], *l[5][MULTI];
    MULTI_FAILS(cg_sgd_update_multi(MULTI, t0, t1, with_entry(l[2], t2, 3, x.bad), 0, &o),
                CG_ERR_SHAPE, "'momentum_buffer' has shape (2,)");
    CHECK(strstr(cg_last_error(), "(parameter 3)") != NULL);
    MULTI_FAILS(cg_sgd_update_multi(MULTI, t0, t1, with_entry(l[2], t2, 3, t0[3]), 0, &o),
                CG_ERR_VALUE, NULL);
    multi_twin(l, &x, 0, t0[0]); /* parameter 0 listed again as parameter 3 */
    MULTI_FAILS(cg_sgd_update_multi(MULTI, l[0], l[1], l[2], 0, &o), CG_ERR_VALUE, "share memory");
    MULTI_FAILS(cg_sgd_update_multi(MULTI, t0, t1, NULL, 0, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_sgd_update_multi(MULTI, t0, NULL, t2, 0, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_sgd_update_multi(-1, t0, t1, t2, 0, &o), CG_ERR_VALUE, NULL);
    MULTI_FAILS(cg_sgd_update_multi(INT_MAX, t0, t1, t2, 0, &o), CG_ERR_VALUE, "got 2147483647");
    MULTI_FAILS(cg_sgd_update_multi(MULTI, t0, t1, t2, 0, NULL), CG_ERR_NULL, NULL);
    o.nesterov = 1;
    o.dampening = 0.5;
    MULTI_FAILS(cg_sgd_update_multi(MULTI, t0, t1, t2, 0, &o), CG_ERR_VALUE, "Nesterov");
    o = cg_sgd_default_options();
    CHECK_OK(cg_sgd_update_multi(0, NULL, NULL, NULL, 0, &o));
    /* without momentum the buffer list is not read */
    o.lr = 0.5;
    CHECK_OK(cg_sgd_update_multi(MULTI, t0, t1, NULL, 0, &o));
    CHECK_CLOSE(cgt_at(t0[3], 5), cgt_at(x.ref[0][3], 5) - 0.5 * cgt_at(x.ref[1][3], 5), 1e-15);
    multi_fixture_free(&x);
}

/* RMSprop: t[3] square_avg, t[4] grad_avg (starting at zero, so that the
 * centered variance stays >= 0), t[2] momentum_buffer. */
static cg_status rmsprop_multi_step(cg_tensor *t[5][MULTI], int j, int64_t step, const void *vo) {
    const cg_rmsprop_options *o = (const cg_rmsprop_options *)vo;
    if (j >= 0) return cg_rmsprop_update(t[0][j], t[1][j], t[3][j], t[4][j], t[2][j], o, NULL);
    return cg_rmsprop_update_multi(MULTI, t[0], t[1], t[3], o->centered ? t[4] : NULL,
                                   o->momentum > 0.0 ? t[2] : NULL, o);
}

static void test_rmsprop_multi(void) {
    cg_rmsprop_options opts[4] = {cg_rmsprop_default_options(), cg_rmsprop_default_options(),
                                  cg_rmsprop_default_options(), cg_rmsprop_default_options()};
    opts[1].lr = 0.02; /* alpha 0.99: lerp weight 0.01 < 0.5 */
    opts[1].centered = 1;
    opts[1].momentum = 0.9;
    opts[1].weight_decay = 0.1;
    opts[1].maximize = 1;
    opts[2].alpha = 0.3; /* lerp weight 0.7 >= 0.5: the other branch */
    opts[2].centered = 1;
    opts[2].momentum = 0.5;
    opts[3].alpha = 0.5; /* lerp weight 0.5: the >= 0.5 branch at its edge; no momentum */
    opts[3].centered = 1;
    opts[3].weight_decay = 0.01;
    opts[3].eps = 1e-3;
    for (int c = 0; c < 4; ++c)
        multi_vs_single("rmsprop", rmsprop_multi_step, &opts[c], c, 1u << 4, 1,
                        1u | 8u | (opts[c].centered ? 16u : 0u) |
                            (opts[c].momentum > 0.0 ? 4u : 0u));
    /* errors: status, message, and no parameter moved */
    cg_rmsprop_options o = cg_rmsprop_default_options();
    o.centered = 1;
    o.momentum = 0.9;
    multi_fixture x;
    multi_fixture_init(&x, 1u << 4);
    cg_tensor **t0 = x.t[0], **t1 = x.t[1], **t2 = x.t[2], **t3 = x.t[3], **t4 = x.t[4];
    cg_tensor *l[5][MULTI];
    MULTI_FAILS(cg_rmsprop_update_multi(-1, t0, t1, t3, t4, t2, &o), CG_ERR_VALUE, "n must be");
    MULTI_FAILS(cg_rmsprop_update_multi(INT_MAX / 5 + 1, t0, t1, t3, t4, t2, &o), CG_ERR_VALUE,
                "n must be in");
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, t3, t4, t2, NULL), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, NULL, t1, t3, t4, t2, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, NULL, t3, t4, t2, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, NULL, t4, t2, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, t3, NULL, t2, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, t3, t4, NULL, &o), CG_ERR_NULL, NULL);
    /* a bad entry: its index in the message */
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, with_entry(l[1], t1, 1, x.bad), t3, t4, t2, &o),
                CG_ERR_SHAPE, "'grad' has shape (2,)");
    CHECK(strstr(cg_last_error(), "(parameter 1)") != NULL);
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, t3, t4, with_entry(l[2], t2, 3, x.bad), &o),
                CG_ERR_SHAPE, "(parameter 3)");
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, t3, with_entry(l[4], t4, 2, x.wrong_dtype),
                                        t2, &o), CG_ERR_DTYPE, "(parameter 2)");
    CHECK(strstr(cg_last_error(), "grad_avg") != NULL);
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, with_entry(l[1], t1, 2, NULL), t3, t4, t2, &o),
                CG_ERR_NULL, "(parameter 2)");
    /* memory shared: within one entry, a state buffer across two, a
     * parameter listed twice */
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, with_entry(l[3], t3, 3, t0[3]), t4, t2, &o),
                CG_ERR_VALUE, "(parameter 3)");
    CHECK(strstr(cg_last_error(), "share memory") != NULL);
    for (int k = 0; k < 5; k += 4) { /* k 0: parameter 0 again; 4: parameter 0's grad_avg */
        multi_twin(l, &x, k, x.t[k][0]);
        MULTI_FAILS(cg_rmsprop_update_multi(MULTI, l[0], l[1], l[3], l[4], l[2], &o), CG_ERR_VALUE,
                    "share memory");
    }
    /* bad option values */
    cg_rmsprop_options b = o;
    b.lr = -0.01;
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, t3, t4, t2, &b),
                CG_ERR_VALUE, "learning rate");
    b = o;
    b.alpha = -0.5;
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, t3, t4, t2, &b), CG_ERR_VALUE, "alpha");
    b = o;
    b.eps = NAN;
    MULTI_FAILS(cg_rmsprop_update_multi(MULTI, t0, t1, t3, t4, t2, &b), CG_ERR_VALUE, "epsilon");
    CHECK_OK(cg_rmsprop_update_multi(0, NULL, NULL, NULL, NULL, NULL, &o));
    CHECK(multi_unmoved(&x));
    /* not centered, no momentum: those lists are not read (bad entries
     * and all), and the result is that of the plain single calls */
    b = cg_rmsprop_default_options();
    b.lr = 0.1;
    CHECK_OK(cg_rmsprop_update_multi(MULTI, t0, t1, t3, with_entry(l[4], t4, 1, x.bad),
                                     with_entry(l[2], t2, 3, x.bad), &b));
    for (int j = 0; j < MULTI; ++j)
        CHECK_OK(cg_rmsprop_update(x.ref[0][j], x.ref[1][j], x.ref[3][j], NULL, NULL, &b, NULL));
    CHECK(multi_same(x.t, x.ref));
    CHECK(cg_tensor_version(t0[3]) == 1 && cg_tensor_version(t3[3]) == 1);
    CHECK(cg_tensor_version(t2[3]) == 0 && cg_tensor_version(t4[3]) == 0);
    CHECK(cg_tensor_version(x.bad) == 0);
    multi_fixture_free(&x);
}

/* Adagrad: t[3] state_sum. */
static cg_status adagrad_multi_step(cg_tensor *t[5][MULTI], int j, int64_t step, const void *vo) {
    const cg_adagrad_options *o = (const cg_adagrad_options *)vo;
    if (j >= 0) return cg_adagrad_update(t[0][j], t[1][j], t[3][j], step, o, NULL);
    return cg_adagrad_update_multi(MULTI, t[0], t[1], t[3], step, o);
}

static void test_adagrad_multi(void) {
    cg_adagrad_options plain = cg_adagrad_default_options(), all = cg_adagrad_default_options();
    plain.lr = 0.3;
    all.lr = 0.1;
    all.lr_decay = 0.25;
    all.weight_decay = 0.05;
    all.maximize = 1;
    multi_vs_single("adagrad", adagrad_multi_step, &plain, 0, 0, 1, 1u | 8u);
    multi_vs_single("adagrad", adagrad_multi_step, &all, 1, 0, 1, 1u | 8u);
    multi_vs_single("adagrad", adagrad_multi_step, &all, 2, 0, 7, 1u | 8u); /* steps 7..9 */
    /* errors: status, message, and no parameter moved */
    cg_adagrad_options o = cg_adagrad_default_options();
    multi_fixture x;
    multi_fixture_init(&x, 0);
    cg_tensor **t0 = x.t[0], **t1 = x.t[1], **t3 = x.t[3], *l[5][MULTI];
    MULTI_FAILS(cg_adagrad_update_multi(-1, t0, t1, t3, 1, &o), CG_ERR_VALUE, "n must be");
    MULTI_FAILS(cg_adagrad_update_multi(INT_MAX / 5 + 1, t0, t1, t3, 1, &o), CG_ERR_VALUE,
                "n must be in");
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, t3, 1, NULL), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, NULL, t1, t3, 1, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, NULL, t3, 1, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, NULL, 1, &o), CG_ERR_NULL, NULL);
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, t3, 0, &o), CG_ERR_VALUE, "step");
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, t3, -3, &o), CG_ERR_VALUE, "step");
    cg_adagrad_options b = o;
    b.lr = -0.01;
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, t3, 1, &b), CG_ERR_VALUE, "learning rate");
    b = o;
    b.lr_decay = -1;
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, t3, 1, &b), CG_ERR_VALUE, "lr_decay");
    b = o;
    b.eps = NAN;
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, t3, 1, &b), CG_ERR_VALUE, "epsilon");
    /* a bad entry: its index in the message */
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, with_entry(l[1], t1, 1, x.bad), t3, 1, &o),
                CG_ERR_SHAPE, "'grad' has shape (2,)");
    CHECK(strstr(cg_last_error(), "(parameter 1)") != NULL);
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, with_entry(l[3], t3, 3, x.bad), 1, &o),
                CG_ERR_SHAPE, "(parameter 3)");
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, with_entry(l[1], t1, 2, x.wrong_dtype),
                                        t3, 1, &o), CG_ERR_DTYPE, "(parameter 2)");
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, with_entry(l[3], t3, 2, NULL), 1, &o),
                CG_ERR_NULL, "(parameter 2)");
    /* memory shared: within one entry, a state buffer across two, a
     * parameter listed twice */
    MULTI_FAILS(cg_adagrad_update_multi(MULTI, t0, t1, with_entry(l[3], t3, 3, t0[3]), 1, &o),
                CG_ERR_VALUE, "(parameter 3)");
    CHECK(strstr(cg_last_error(), "share memory") != NULL);
    for (int k = 0; k < 4; k += 3) { /* k 0: parameter 0 again; 3: parameter 0's state_sum */
        multi_twin(l, &x, k, x.t[k][0]);
        MULTI_FAILS(cg_adagrad_update_multi(MULTI, l[0], l[1], l[3], 1, &o), CG_ERR_VALUE,
                    "share memory");
    }
    CHECK_OK(cg_adagrad_update_multi(0, NULL, NULL, NULL, 1, &o));
    CHECK(multi_unmoved(&x));
    /* one gradient read by two parameters is fine: only written tensors
     * must not overlap */
    o.lr = 0.1;
    multi_twin(l, &x, 1, t1[0]);
    CHECK_OK(cg_adagrad_update_multi(MULTI, l[0], l[1], l[3], 1, &o));
    CHECK_OK(cg_adagrad_update(x.ref[0][0], x.ref[1][0], x.ref[3][0], 1, &o, NULL));
    CHECK(bitwise_same(t0[0], x.ref[0][0]) && bitwise_same(t3[0], x.ref[3][0]));
    CHECK(cgt_at(x.twin[0], 2) != 0.0 && cg_tensor_version(x.twin[0]) == 1);
    CHECK(cg_tensor_version(t1[0]) == 0 && cg_tensor_version(t0[3]) == 0);
    multi_fixture_free(&x);
}

/* --------------------------------------------------------------- RMSprop */
static void check_rmsprop(cg_dtype dt, cg_rmsprop_options o) {
    double p[N], sq[N] = {0}, ga[N] = {0}, buf[N] = {0}, g[N], zero[N] = {0};
    memcpy(p, P0, sizeof p);
    int64_t n = N;
    cg_tensor *tp = make(dt, P0, n), *tg = make(dt, P0, n), *ts = make(dt, zero, n);
    cg_tensor *tga = make(dt, zero, n), *tb = make(dt, zero, n);
    for (int k = 0; k < STEPS; ++k) {
        grad_at(k, p, g);
        for (int i = 0; i < N; ++i) {
            double d = (o.maximize ? -g[i] : g[i]) + o.weight_decay * p[i];
            sq[i] = o.alpha * sq[i] + (1 - o.alpha) * d * d;
            double avg = sq[i];
            if (o.centered) {
                ga[i] = o.alpha * ga[i] + (1 - o.alpha) * d;
                avg -= ga[i] * ga[i];
            }
            avg = sqrt(avg) + o.eps;
            if (o.momentum > 0) {
                buf[i] = o.momentum * buf[i] + d / avg;
                p[i] -= o.lr * buf[i];
            } else {
                p[i] -= o.lr * d / avg;
            }
        }
        double gc[N];
        for (int i = 0; i < N; ++i) gc[i] = cgt_at(tp, i);
        grad_at(k, gc, gc);
        set_from(tg, gc);
        CHECK_OK(cg_rmsprop_update(tp, tg, ts, tga, tb, &o, NULL));
    }
    CHECK(max_rel_err(tp, p, N) < tol_for(dt));
    cg_tensor_free(tp);
    cg_tensor_free(tg);
    cg_tensor_free(ts);
    cg_tensor_free(tga);
    cg_tensor_free(tb);
}

static void test_rmsprop(void) {
    for (int d = 0; d < 2; ++d) {
        cg_dtype dt = d ? CG_FLOAT64 : CG_FLOAT32;
        cg_rmsprop_options o = cg_rmsprop_default_options();
        check_rmsprop(dt, o);
        o.centered = 1;
        o.momentum = 0.5;
        o.weight_decay = 0.05;
        check_rmsprop(dt, o);
        o.maximize = 1;
        o.alpha = 0.3;
        check_rmsprop(dt, o);
    }
}

/* --------------------------------------------------------------- Adagrad */
static void check_adagrad(cg_dtype dt, cg_adagrad_options o) {
    double p[N], s[N], g[N], init[N];
    memcpy(p, P0, sizeof p);
    for (int i = 0; i < N; ++i) s[i] = init[i] = o.initial_accumulator_value;
    int64_t n = N;
    cg_tensor *tp = make(dt, P0, n), *tg = make(dt, P0, n), *ts = make(dt, init, n);
    for (int k = 1; k <= STEPS; ++k) {
        grad_at(k, p, g);
        double clr = o.lr / (1 + (k - 1) * o.lr_decay);
        for (int i = 0; i < N; ++i) {
            double d = (o.maximize ? -g[i] : g[i]) + o.weight_decay * p[i];
            s[i] += d * d;
            p[i] -= clr * d / (sqrt(s[i]) + o.eps);
        }
        double gc[N];
        for (int i = 0; i < N; ++i) gc[i] = cgt_at(tp, i);
        grad_at(k, gc, gc);
        set_from(tg, gc);
        CHECK_OK(cg_adagrad_update(tp, tg, ts, k, &o, NULL));
    }
    CHECK(max_rel_err(tp, p, N) < tol_for(dt));
    CHECK(max_rel_err(ts, s, N) < tol_for(dt));
    cg_tensor_free(tp);
    cg_tensor_free(tg);
    cg_tensor_free(ts);
}

static void test_adagrad(void) {
    for (int d = 0; d < 2; ++d) {
        cg_dtype dt = d ? CG_FLOAT64 : CG_FLOAT32;
        cg_adagrad_options o = cg_adagrad_default_options();
        o.lr = 0.3;
        check_adagrad(dt, o);
        o.lr_decay = 0.1;
        o.weight_decay = 0.02;
        o.initial_accumulator_value = 0.5;
        o.maximize = 1;
        check_adagrad(dt, o);
    }
}

/* ----------------------------------------------------------- bad input */
static void test_update_errors(void) {
    int64_t n3 = 3, n2 = 2, sh[2] = {2, 3};
    cg_tensor *p = NULL, *g = NULL, *g2 = NULL, *g64 = NULL, *gi = NULL, *m = NULL, *v = NULL;
    cg_tensor *mat = NULL, *tr = NULL;
    cg_zeros(CG_FLOAT32, 1, &n3, &p);
    cg_zeros(CG_FLOAT32, 1, &n3, &g);
    cg_zeros(CG_FLOAT32, 1, &n2, &g2);
    cg_zeros(CG_FLOAT64, 1, &n3, &g64);
    cg_zeros(CG_INT64, 1, &n3, &gi);
    cg_zeros(CG_FLOAT32, 1, &n3, &m);
    cg_zeros(CG_FLOAT32, 1, &n3, &v);
    cg_zeros(CG_FLOAT32, 2, sh, &mat);
    cg_transpose(mat, 0, 1, &tr);
    cg_sgd_options s = cg_sgd_default_options();
    CHECK_STATUS(cg_sgd_update(p, g2, NULL, 0, &s, NULL), CG_ERR_SHAPE);
    CHECK_STATUS(cg_sgd_update(p, g64, NULL, 0, &s, NULL), CG_ERR_DTYPE);
    CHECK_STATUS(cg_sgd_update(gi, gi, NULL, 0, &s, NULL), CG_ERR_DTYPE);
    CHECK_STATUS(cg_sgd_update(p, NULL, NULL, 0, &s, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_sgd_update(p, g, NULL, 0, NULL, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_sgd_update(tr, tr, NULL, 0, &s, NULL), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "contiguous") != NULL);
    s.lr = -0.1;
    CHECK_STATUS(cg_sgd_update(p, g, NULL, 0, &s, NULL), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "-0.1") != NULL);
    s = cg_sgd_default_options();
    s.nesterov = 1;
    CHECK_STATUS(cg_sgd_update(p, g, NULL, 0, &s, NULL), CG_ERR_VALUE);
    s.momentum = 0.9;
    CHECK_STATUS(cg_sgd_update(p, g, NULL, 0, &s, NULL), CG_ERR_NULL); /* buffer missing */
    CHECK_STATUS(cg_sgd_update(p, g, p, 0, &s, NULL), CG_ERR_VALUE);   /* buffer is the param */
    uint64_t v0 = cg_tensor_version(p);
    cg_adam_options a = cg_adam_default_options();
    a.beta1 = 1.0;
    CHECK_STATUS(cg_adam_update(p, g, m, v, NULL, 1, &a, NULL), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "beta1") != NULL);
    a = cg_adam_default_options();
    a.eps = NAN;
    CHECK_STATUS(cg_adam_update(p, g, m, v, NULL, 1, &a, NULL), CG_ERR_VALUE);
    a = cg_adam_default_options();
    CHECK_STATUS(cg_adam_update(p, g, m, v, NULL, 0, &a, NULL), CG_ERR_VALUE);
    a.amsgrad = 1;
    CHECK_STATUS(cg_adam_update(p, g, m, v, NULL, 1, &a, NULL), CG_ERR_NULL);
    a.amsgrad = 0;
    CHECK_STATUS(cg_adam_update(p, g, m, m, NULL, 1, &a, NULL), CG_ERR_VALUE);
    CHECK(cg_tensor_version(p) == v0); /* nothing written on failure */
    cg_rmsprop_options r = cg_rmsprop_default_options();
    r.centered = 1;
    CHECK_STATUS(cg_rmsprop_update(p, g, m, NULL, NULL, &r, NULL), CG_ERR_NULL);
    r.centered = 0;
    r.alpha = -1;
    CHECK_STATUS(cg_rmsprop_update(p, g, m, NULL, NULL, &r, NULL), CG_ERR_VALUE);
    cg_adagrad_options d = cg_adagrad_default_options();
    d.lr_decay = -1;
    CHECK_STATUS(cg_adagrad_update(p, g, m, 1, &d, NULL), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "lr_decay") != NULL);
    cg_tensor *all[] = {p, g, g2, g64, gi, m, v, mat, tr};
    for (size_t i = 0; i < sizeof all / sizeof *all; ++i) cg_tensor_free(all[i]);
}

/* ------------------------------------------------------------- clipping */
static void test_total_norm_and_clip(void) {
    double a[3] = {3, -4, 1}, b[2] = {-2, 0.5};
    int64_t n3 = 3, n2 = 2;
    cg_tensor *ta = make(CG_FLOAT32, a, n3), *tb = make(CG_FLOAT64, b, n2);
    cg_tensor *ts[2] = {ta, tb};
    double ps[4] = {1.0, 2.0, 3.0, INFINITY};
    for (int k = 0; k < 4; ++k) {
        double p = ps[k], want;
        if (isinf(p)) {
            want = 4;
        } else {
            double s = 0;
            for (int i = 0; i < 3; ++i) s += pow(fabs(a[i]), p);
            for (int i = 0; i < 2; ++i) s += pow(fabs(b[i]), p);
            want = pow(s, 1 / p);
        }
        double got = -1;
        CHECK_OK(cg_total_norm(2, ts, p, &got));
        CHECK_CLOSE(got, want, 1e-12);
    }
    double got = -1;
    CHECK_OK(cg_total_norm(0, NULL, 2.0, &got));
    CHECK(got == 0.0);
    CHECK_STATUS(cg_total_norm(2, ts, -1.0, &got), CG_ERR_VALUE);
    CHECK_STATUS(cg_total_norm(2, ts, 2.0, NULL), CG_ERR_NULL);

    /* Clip by norm: total sqrt(30.25), max 1 -> every element scaled. */
    double tn = 0, coef = 0, total = sqrt(9 + 16 + 1 + 4 + 0.25);
    uint64_t va = cg_tensor_version(ta);
    CHECK_OK(cg_clip_grad_norm(2, ts, 1.0, 2.0, 0, &tn, &coef));
    CHECK_CLOSE(tn, total, 1e-12);
    CHECK_CLOSE(coef, 1.0 / (total + 1e-6), 1e-12);
    CHECK_CLOSE(cgt_at(ta, 1), -4 * coef, 1e-6);
    CHECK_CLOSE(cgt_at(tb, 0), -2 * coef, 1e-12);
    CHECK(cg_tensor_version(ta) == va + 1);
    /* Already within the bound: coefficient 1, nothing written. */
    va = cg_tensor_version(ta);
    CHECK_OK(cg_clip_grad_norm(2, ts, 10.0, 2.0, 0, &tn, &coef));
    CHECK(coef == 1.0 && cg_tensor_version(ta) == va);
    CHECK_STATUS(cg_clip_grad_norm(2, ts, -1.0, 2.0, 0, &tn, &coef), CG_ERR_VALUE);
    /* Non-finite total norm. */
    ((double *)cg_tensor_data(tb))[1] = INFINITY;
    CHECK_STATUS(cg_clip_grad_norm(2, ts, 1.0, 2.0, 1, &tn, &coef), CG_ERR_VALUE);
    CHECK(isinf(tn) && strstr(cg_last_error(), "non-finite") != NULL);
    CHECK_OK(cg_clip_grad_norm(2, ts, 1.0, 2.0, 0, &tn, &coef));
    CHECK(coef == 0.0);

    /* Clip by value, through a non-contiguous view too. */
    double c[6] = {-3, 0.5, 2, -0.1, NAN, 1.5};
    int64_t sh[2] = {2, 3};
    cg_tensor *tc = cgt_f64(2, sh, c), *tt = NULL;
    CHECK_OK(cg_transpose(tc, 0, 1, &tt));
    int64_t nclip = -1;
    cg_tensor *one[1] = {tt};
    CHECK_OK(cg_clip_grad_value(1, one, 1.0, &nclip));
    CHECK(nclip == 3);
    CHECK(cgt_at(tc, 0) == -1.0 && cgt_at(tc, 2) == 1.0 && cgt_at(tc, 5) == 1.0);
    CHECK(cgt_at(tc, 1) == 0.5 && isnan(cgt_at(tc, 4)));
    CHECK_STATUS(cg_clip_grad_value(1, one, -1.0, &nclip), CG_ERR_VALUE);
    cg_tensor *ex = NULL, *ex1 = NULL;
    int64_t big[2] = {4, 3};
    CHECK_OK(cg_select(tc, 0, 0, &ex1));
    CHECK_OK(cg_expand(ex1, 2, big, &ex));
    cg_tensor *exs[1] = {ex};
    CHECK_STATUS(cg_clip_grad_value(1, exs, 1.0, NULL), CG_ERR_VALUE);
    int64_t ni = 2;
    cg_tensor *ti = NULL;
    cg_zeros(CG_INT64, 1, &ni, &ti);
    cg_tensor *tis[1] = {ti};
    CHECK_STATUS(cg_clip_grad_value(1, tis, 1.0, NULL), CG_ERR_DTYPE);
    cg_tensor *free_list[] = {ta, tb, tc, tt, ex, ex1, ti};
    for (size_t i = 0; i < sizeof free_list / sizeof *free_list; ++i) cg_tensor_free(free_list[i]);
}

static void test_agc(void) {
    /* Two units: row 0 gradient small relative to its weight, row 1 large. */
    double w[4] = {3, 4, 0.0, 0.0}, g[4] = {0.01, 0.0, 1.0, 1.0};
    int64_t sh[2] = {2, 2};
    cg_tensor *tw = cgt_f64(2, sh, w), *tg = cgt_f64(2, sh, g);
    cg_tensor *ws[1] = {tw}, *gs[1] = {tg};
    int64_t nclip = -1, nunits = -1;
    CHECK_OK(cg_clip_grad_agc(1, ws, gs, 0.1, 1e-3, &nclip, &nunits));
    CHECK(nclip == 1 && nunits == 2);
    CHECK(cgt_at(tg, 0) == 0.01);
    /* row 1: max_norm = 0.1 * 1e-3, scaled by max_norm / sqrt(2) */
    CHECK_CLOSE(cgt_at(tg, 2), 1.0 * 1e-4 / sqrt(2.0), 1e-12);
    CHECK_STATUS(cg_clip_grad_agc(1, ws, gs, 0.0, 1e-3, NULL, NULL), CG_ERR_VALUE);
    int64_t n4 = 4;
    cg_tensor *flat = NULL;
    cg_zeros(CG_FLOAT64, 1, &n4, &flat);
    cg_tensor *fs[1] = {flat};
    CHECK_STATUS(cg_clip_grad_agc(1, ws, fs, 0.1, 1e-3, NULL, NULL), CG_ERR_SHAPE);
    cg_tensor_free(tw);
    cg_tensor_free(tg);
    cg_tensor_free(flat);
}

static void test_stats(void) {
    double v[6] = {1, -3, NAN, 2, INFINITY, -0.5};
    int64_t sh[2] = {2, 3};
    cg_tensor *t = cgt_f64(2, sh, v), *t32 = NULL, *tt = NULL;
    cg_stats s;
    CHECK_OK(cg_tensor_stats(t, &s));
    CHECK_CLOSE(s.sum_sq, 1 + 9 + 4 + 0.25, 1e-15);
    CHECK(s.max_abs == 3.0 && s.nonfinite == 2 && s.numel == 6);
    CHECK_OK(cg_to_dtype(t, CG_FLOAT32, &t32));
    CHECK_OK(cg_transpose(t32, 0, 1, &tt));
    CHECK_OK(cg_tensor_stats(tt, &s));
    CHECK_CLOSE(s.sum_sq, 14.25, 1e-7);
    CHECK(s.max_abs == 3.0 && s.nonfinite == 2);
    CHECK_STATUS(cg_tensor_stats(t, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_tensor_stats(NULL, &s), CG_ERR_NULL);
    cg_tensor_free(t);
    cg_tensor_free(t32);
    cg_tensor_free(tt);
}

/* Inputs of the update-measuring tests (test_update_stats): a size
 * spanning several blocks of the fused loop. */
enum { UPD_N = 2 * 2048 + 77 }; /* optim.c's UPD_BLOCK is 2048 */

static cg_tensor *filled(cg_dtype dt, double scale, double phase) {
    double *v = malloc(sizeof *v * UPD_N);
    for (int i = 0; i < UPD_N; ++i) v[i] = scale * sin(0.1 * i + phase);
    int64_t n = UPD_N;
    cg_tensor *t = make(dt, v, n);
    free(v);
    return t;
}

static double sq_dist(const cg_tensor *a, const cg_tensor *b) {
    double s = 0.0;
    for (int64_t i = 0; i < cg_tensor_numel(a); ++i) {
        const double d = cgt_at(a, i) - cgt_at(b, i);
        s += d * d;
    }
    return s;
}

/* One step of optimizer `which` (0 SGD nesterov + wd, 1 AdamW amsgrad, 2
 * RMSprop centered + momentum, 3 Adagrad with lr decay) on p with state s:
 * the plain call (update_sum_sq usq) or, with us, the _stats call. */
static cg_status update_which(int which, cg_tensor *p, cg_tensor *g, cg_tensor **s, int step,
                              double *usq, cg_update_stats *us) {
    if (which == 0) {
        cg_sgd_options o = cg_sgd_default_options();
        o.lr = 0.1, o.momentum = 0.9, o.weight_decay = 1e-2, o.nesterov = 1;
        return us ? cg_sgd_update_stats(p, g, s[0], step == 1, &o, us)
                  : cg_sgd_update(p, g, s[0], step == 1, &o, usq);
    }
    if (which == 1) {
        cg_adam_options o = cg_adamw_default_options();
        o.lr = 1e-2, o.amsgrad = 1;
        return us ? cg_adam_update_stats(p, g, s[0], s[1], s[2], step, &o, us)
                  : cg_adam_update(p, g, s[0], s[1], s[2], step, &o, usq);
    }
    if (which == 2) {
        cg_rmsprop_options o = cg_rmsprop_default_options();
        o.centered = 1, o.momentum = 0.5;
        return us ? cg_rmsprop_update_stats(p, g, s[0], s[1], s[2], &o, us)
                  : cg_rmsprop_update(p, g, s[0], s[1], s[2], &o, usq);
    }
    cg_adagrad_options o = cg_adagrad_default_options();
    o.lr_decay = 0.1;
    return us ? cg_adagrad_update_stats(p, g, s[0], step, &o, us)
              : cg_adagrad_update(p, g, s[0], step, &o, usq);
}

/* The reference: one plain loop in double, the definition of the stats. */
static void ref_stats(const cg_tensor *t, cg_stats *s) {
    const int64_t n = cg_tensor_numel(t);
    s->sum_sq = 0.0;
    s->max_abs = 0.0;
    s->nonfinite = 0;
    s->numel = n;
    cg_tensor *c = NULL;
    cg_contiguous((cg_tensor *)t, &c);
    for (int64_t i = 0; i < n; ++i) {
        const double v = cgt_at(c, i);
        if (!isfinite(v)) {
            ++s->nonfinite;
            continue;
        }
        s->sum_sq += v * v;
        if (fabs(v) > s->max_abs) s->max_abs = fabs(v);
    }
    cg_tensor_free(c);
}

static int close_stats(const cg_stats *a, const cg_stats *b, double rel) {
    const double tol = rel * (1.0 + b->sum_sq);
    return (a->sum_sq == b->sum_sq || fabs(a->sum_sq - b->sum_sq) <= tol) && a->max_abs == b->max_abs &&
           a->nonfinite == b->nonfinite && a->numel == b->numel;
}

static int same_stats(const cg_stats *a, const cg_stats *b) { return close_stats(a, b, 1e-12); }

/* The fused updates' float32 sums of squares come from float lanes
 * (gradstats.c): within 1e-6 of the double reference; float64 ones and
 * every max, count and numel as exactly as cg_tensor_stats. */
static double fused_rel(cg_dtype dt) { return dt == CG_FLOAT32 ? 1e-6 : 1e-12; }

/* A tensor of n values with non-finite ones at a few positions (lanes,
 * block edges and the tail all get some), large and tiny magnitudes. */
static cg_tensor *stats_input(cg_dtype dt, int64_t n, int seed) {
    double *v = malloc(sizeof *v * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; ++i) {
        v[i] = sin(0.37 * (double)i + seed) * (1.0 + (double)(i % 11));
        if ((i * 7 + seed) % 13 == 0) v[i] = NAN;
        if ((i * 5 + seed) % 29 == 0) v[i] = (i & 1) ? INFINITY : -INFINITY;
        if (i % 31 == 3) v[i] = -0.0;
        if (i % 97 == 5 && seed % 3 == 0) /* its square overflows T (not the double sum) */
            v[i] = dt == CG_FLOAT32 ? -3.0e38 : -1.0e150;
        if (i % 89 == 7) v[i] = 1e-40;                                  /* a float denormal */
    }
    cg_tensor *t = make(dt, v, n);
    free(v);
    return t;
}

static void test_stats_vs_reference(void) {
    static const int64_t sizes[] = {0, 1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 65, 1000, 4099};
    const cg_dtype dts[2] = {CG_FLOAT32, CG_FLOAT64};
    for (int d = 0; d < 2; ++d)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; ++k) {
            cg_tensor *t = stats_input(dts[d], sizes[k], (int)k);
            cg_stats got, want;
            ref_stats(t, &want);
            CHECK_OK(cg_tensor_stats(t, &got));
            CHECK(same_stats(&got, &want));
            cg_tensor_free(t);
        }
    /* a finite element whose square overflows double: the sum is inf */
    double huge[3] = {1.0, 1e300, -2.0};
    cg_tensor *th = make(CG_FLOAT64, huge, 3);
    cg_stats sh;
    CHECK_OK(cg_tensor_stats(th, &sh));
    CHECK(isinf(sh.sum_sq) && sh.max_abs == 1e300 && sh.nonfinite == 0);
    cg_tensor_free(th);
    /* all non-finite: nothing to sum */
    double bad[5] = {NAN, INFINITY, -INFINITY, NAN, NAN};
    cg_tensor *tb = make(CG_FLOAT32, bad, 5);
    cg_stats s;
    CHECK_OK(cg_tensor_stats(tb, &s));
    CHECK(s.sum_sq == 0.0 && s.max_abs == 0.0 && s.nonfinite == 5 && s.numel == 5);
    cg_tensor_free(tb);
}

/* All finite (the unmasked loop) over the same sizes: the same numbers as
 * the reference, including a denormal, -0.0 and a square beyond float. */
static void test_stats_finite_vs_reference(void) {
    static const int64_t sizes[] = {1, 2, 7, 16, 17, 33, 1000, 4099};
    const cg_dtype dts[2] = {CG_FLOAT32, CG_FLOAT64};
    for (int d = 0; d < 2; ++d)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; ++k) {
            const int64_t n = sizes[k];
            double *v = malloc(sizeof *v * (size_t)n);
            for (int64_t i = 0; i < n; ++i) {
                v[i] = sin(0.37 * (double)i + (double)k) * (1.0 + (double)(i % 11));
                if (i % 31 == 3) v[i] = -0.0;
                if (i % 89 == 7) v[i] = 1e-40;
                if (i % 97 == 5) v[i] = dts[d] == CG_FLOAT32 ? -3.0e38 : -1.0e150;
            }
            cg_tensor *t = make(dts[d], v, n);
            free(v);
            cg_stats got, want;
            ref_stats(t, &want);
            CHECK_OK(cg_tensor_stats(t, &got));
            CHECK(same_stats(&got, &want) && got.nonfinite == 0);
            cg_tensor_free(t);
        }
}

/* update_sum_sq and cg_*_update_stats, for every optimizer and both
 * dtypes: the update bit for bit as the plain call's; the squared distance
 * between the weights before and after; the
 * gradient's and the old weights' statistics as the reference computes
 * them (over blocks of 2048 and a partial one, with a non-finite gradient
 * element in one block only); the update norm as update_sum_sq; a failing
 * call leaves *stats alone; what selects. */
static void test_update_stats(void) {
    const cg_dtype dts[2] = {CG_FLOAT32, CG_FLOAT64};
    for (int d = 0; d < 2; ++d)
        for (int which = 0; which < 4; ++which) {
            const cg_dtype dt = dts[d];
            cg_tensor *pa = filled(dt, 1.0, 0.0), *pb = filled(dt, 1.0, 0.0);
            cg_tensor *pc = filled(dt, 1.0, 0.0);
            cg_tensor *before = filled(dt, 1.0, 0.0), *g = filled(dt, 0.5, 1.3);
            cg_tensor *sa[3], *sb[3], *sc[3];
            for (int k = 0; k < 3; ++k)
                sa[k] = filled(dt, 0.0, 0.0), sb[k] = filled(dt, 0.0, 0.0), sc[k] = filled(dt, 0.0, 0.0);
            for (int step = 1; step <= 3; ++step) {
                if (step == 3) /* one non-finite gradient element, in the second block */
                    put(g, 2500, dt == CG_FLOAT32 ? NAN : INFINITY);
                CHECK_OK(cg_copy_(before, pb));
                cg_update_stats us;
                us.what = CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE;
                CHECK_OK(update_which(which, pa, g, sa, step, NULL, NULL));
                CHECK_OK(update_which(which, pb, g, sb, step, NULL, &us));
                double u = -1.0;
                CHECK_OK(update_which(which, pc, g, sc, step, &u, NULL));
                CHECK(bitwise_same(pa, pb) && bitwise_same(pa, pc));
                cg_stats wg, ww;
                ref_stats(g, &wg);
                ref_stats(before, &ww);
                CHECK(us.what == 7);
                CHECK(close_stats(&us.grad, &wg, fused_rel(dt)));
                CHECK(close_stats(&us.weight, &ww, fused_rel(dt)));
                CHECK(us.grad.nonfinite == (step == 3));
                if (step < 3) {
                    const double want = sq_dist(pb, before);
                    CHECK(want > 0.0);
                    CHECK_CLOSE(us.update_sum_sq, want, fused_rel(dt));
                    CHECK_CLOSE(u, want, 1e-12);
                } else { /* a weight went non-finite */
                    CHECK(!isfinite(us.update_sum_sq) && !isfinite(u));
                }
            }
            double u = 7.0; /* a failing call leaves it alone */
            cg_sgd_options bad = cg_sgd_default_options();
            bad.lr = -1.0;
            CHECK_STATUS(cg_sgd_update(pb, g, NULL, 0, &bad, &u), CG_ERR_VALUE);
            CHECK(u == 7.0);
            cg_tensor *all[] = {pa, pb, pc, before, g, sa[0], sa[1], sa[2], sb[0], sb[1], sb[2],
                                sc[0], sc[1], sc[2]};
            for (size_t i = 0; i < sizeof all / sizeof *all; ++i) cg_tensor_free(all[i]);
        }
    /* what selects; a failing call or a NULL stats changes nothing */
    cg_tensor *p = filled(CG_FLOAT32, 1.0, 0.0), *g = filled(CG_FLOAT32, 0.5, 1.3);
    cg_sgd_options o = cg_sgd_default_options();
    cg_update_stats us;
    memset(&us, 0x5a, sizeof us);
    us.what = CG_MEASURE_GRAD;
    CHECK_OK(cg_sgd_update_stats(p, g, NULL, 0, &o, &us));
    cg_stats wg;
    ref_stats(g, &wg);
    CHECK(close_stats(&us.grad, &wg, 1e-6) && us.weight.numel == 0 && us.weight.sum_sq == 0.0 &&
          us.update_sum_sq == 0.0 && us.what == CG_MEASURE_GRAD);
    us.what = 0;
    CHECK_OK(cg_sgd_update_stats(p, g, NULL, 0, &o, &us));
    CHECK(us.grad.numel == 0 && us.weight.numel == 0);
    /* an old weight that is not finite: counted, left out of the sums */
    ((float *)cg_tensor_data(p))[1100] = INFINITY;
    cg_tensor *old = filled(CG_FLOAT32, 1.0, 0.0);
    CHECK_OK(cg_copy_(old, p));
    us.what = CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE;
    CHECK_OK(cg_sgd_update_stats(p, g, NULL, 0, &o, &us));
    cg_stats wo;
    ref_stats(old, &wo);
    CHECK(close_stats(&us.weight, &wo, 1e-6) && us.weight.nonfinite == 1 && us.grad.numel == 0);
    cg_tensor_free(old);
    cg_update_stats keep;
    memset(&keep, 0x33, sizeof keep);
    keep.what = 7;
    cg_update_stats copy = keep;
    o.lr = -1.0;
    CHECK_STATUS(cg_sgd_update_stats(p, g, NULL, 0, &o, &keep), CG_ERR_VALUE);
    CHECK(memcmp(&keep, &copy, sizeof keep) == 0);
    CHECK(strstr(cg_last_error(), "cg_sgd_update_stats") != NULL);
    o.lr = 0.1;
    CHECK_STATUS(cg_sgd_update_stats(p, g, NULL, 0, &o, NULL), CG_ERR_NULL);
    cg_adam_options ao = cg_adam_default_options();
    CHECK_STATUS(cg_adam_update_stats(p, g, NULL, NULL, NULL, 1, &ao, &us), CG_ERR_NULL);
    cg_rmsprop_options ro = cg_rmsprop_default_options();
    CHECK_STATUS(cg_rmsprop_update_stats(p, g, NULL, NULL, NULL, &ro, NULL), CG_ERR_NULL);
    cg_adagrad_options gO = cg_adagrad_default_options();
    CHECK_STATUS(cg_adagrad_update_stats(p, g, NULL, 1, &gO, NULL), CG_ERR_NULL);
    cg_tensor_free(p);
    cg_tensor_free(g);
}

/* The float lanes of the fused float32 statistics hand a block to the
 * double loop when a square could overflow or underflow float: a finite
 * gradient element of 3e38 (its square is 9e76), a gradient of 1e-30
 * everywhere, an update of 1e-21 next to weights of 1 (max |w| is fine,
 * the update's squares underflow float), one update element of 1e17 (its
 * square fits a float, but the kernels only see the update's lane sum,
 * which puts it beyond 2^99). Those sums then match the double reference
 * to 1e-12, relative, however small; the lanes alone would give inf, 0,
 * a denormal and a float rounding. */
static void test_update_stats_lanes_ranges(void) {
    for (int which = 0; which < 4; ++which) {
        cg_tensor *p = filled(CG_FLOAT32, 1.0, 0.0), *g = filled(CG_FLOAT32, 0.5, 1.3);
        float *pv = cg_tensor_data(p), *gv = cg_tensor_data(g);
        if (which == 0) gv[5] = 3.0e38f;
        if (which == 3) gv[7] = 1.0e18f;
        for (int i = 0; which == 1 && i < UPD_N; ++i) gv[i] = 1e-30f * (float)sin(0.3 * i + 0.1);
        for (int i = 0; which == 2 && i < UPD_N; ++i) {
            gv[i] = i < UPD_N / 2 ? 0.0f : 1e-20f * (float)(1 + i % 3);
            if (i >= UPD_N / 2) pv[i] = 1e-20f;
        }
        cg_tensor *before = filled(CG_FLOAT32, 1.0, 0.0);
        CHECK_OK(cg_copy_(before, p));
        cg_sgd_options o = cg_sgd_default_options();
        o.lr = 0.1;
        cg_update_stats us;
        us.what = CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE;
        CHECK_OK(cg_sgd_update_stats(p, g, NULL, 0, &o, &us));
        cg_stats wg, ww;
        ref_stats(g, &wg);
        ref_stats(before, &ww);
        CHECK(us.grad.max_abs == wg.max_abs && us.grad.nonfinite == 0 && us.weight.nonfinite == 0);
        CHECK(wg.sum_sq > 0.0 && isfinite(wg.sum_sq));
        CHECK(fabs(us.grad.sum_sq - wg.sum_sq) <= 1e-12 * wg.sum_sq);
        CHECK(fabs(us.weight.sum_sq - ww.sum_sq) <= 1e-6 * ww.sum_sq);
        const double want = sq_dist(p, before);
        CHECK(want > 0.0 && isfinite(want));
        if (which >= 2) CHECK(fabs(us.update_sum_sq - want) <= 1e-12 * want);
        else CHECK(fabs(us.update_sum_sq - want) <= 1e-6 * want);
        cg_tensor_free(before);
        cg_tensor_free(p);
        cg_tensor_free(g);
    }
}

/* The measuring kernels (optim.c KERNEL_LOOP) measure the old weights and
 * the update inside the update's loop and re-measure a block exactly from
 * the old weights they saved when the lanes cannot give the numbers: an
 * old weight that is not finite (counted, left out of the sums; the update
 * sum not finite), one whose float32 square float cannot hold (1e25: the
 * weight sum then as exact as the double reference), with and without the
 * update norm, for all four optimizers and both dtypes, against the plain
 * call (bit for bit) and the double reference (max, count and numel
 * exact; the sums within fused_rel, the other blocks being summed in
 * lanes). */
static void test_update_stats_measuring_fallbacks(void) {
    const cg_dtype dts[2] = {CG_FLOAT32, CG_FLOAT64};
    for (int d = 0; d < 2; ++d)
        for (int which = 0; which < 4; ++which)
            for (int kase = 0; kase < 4; ++kase) {
                const cg_dtype dt = dts[d];
                cg_tensor *pa = filled(dt, 1.0, 0.0), *pb = filled(dt, 1.0, 0.0);
                cg_tensor *before = filled(dt, 1.0, 0.0), *g = filled(dt, 0.5, 1.3);
                cg_tensor *sa[3], *sb[3];
                for (int k = 0; k < 3; ++k) sa[k] = filled(dt, 0.0, 0.0), sb[k] = filled(dt, 0.0, 0.0);
                const int nonfinite = kase < 2, with_update = kase % 2 == 0;
                const double bad = nonfinite ? INFINITY : 1e25;
                for (int i = 2100; i < 2100 + 3 * (1 - nonfinite) + 1; ++i) { /* second block */
                    put(pa, i, bad);
                    put(pb, i, bad);
                }
                CHECK_OK(cg_copy_(before, pb));
                cg_update_stats us;
                us.what = CG_MEASURE_WEIGHT | (with_update ? CG_MEASURE_UPDATE : 0);
                CHECK_OK(update_which(which, pa, g, sa, 1, NULL, NULL));
                CHECK_OK(update_which(which, pb, g, sb, 1, NULL, &us));
                CHECK(bitwise_same(pa, pb));
                cg_stats ww;
                ref_stats(before, &ww);
                /* 1e50 in a float lane would be inf; the other blocks' lanes: fused_rel */
                CHECK(close_stats(&us.weight, &ww, fused_rel(dt)) && isfinite(us.weight.sum_sq));
                CHECK(us.weight.nonfinite == nonfinite && us.grad.numel == 0);
                if (!with_update) CHECK(us.update_sum_sq == 0.0);
                else if (nonfinite) CHECK(!isfinite(us.update_sum_sq));
                else {
                    const double want = sq_dist(pb, before);
                    CHECK(want > 0.0 && isfinite(want));
                    CHECK_CLOSE(us.update_sum_sq, want, fused_rel(dt));
                }
                cg_tensor *all[] = {pa, pb, before, g, sa[0], sa[1], sa[2], sb[0], sb[1], sb[2]};
                for (size_t i = 0; i < sizeof all / sizeof *all; ++i) cg_tensor_free(all[i]);
            }
}

/* The gradient measured inside the measuring kernels (with the weights):
 * non-finite elements, a float32 square that overflows a float lane and a
 * gradient whose squares all underflow one take the exact loop; the
 * update keeps its bits. */
static void test_update_stats_grad_in_kernel(void) {
    const cg_dtype dts[2] = {CG_FLOAT32, CG_FLOAT64};
    for (int d = 0; d < 2; ++d)
        for (int which = 0; which < 4; ++which)
            for (int kase = 0; kase < 3; ++kase) {
                const cg_dtype dt = dts[d];
                cg_tensor *pa = filled(dt, 1.0, 0.0), *pb = filled(dt, 1.0, 0.0);
                cg_tensor *g = filled(dt, kase == 2 ? 1e-30 : 0.5, 1.3);
                cg_tensor *sa[3], *sb[3];
                for (int k = 0; k < 3; ++k) sa[k] = filled(dt, 0.0, 0.0), sb[k] = filled(dt, 0.0, 0.0);
                const double big = dt == CG_FLOAT32 ? 3e38 : 1e150;
                for (int i = 2100; i < 2103 && kase < 2; ++i) /* the second block */
                    put(g, i, kase == 0 ? (i == 2101 ? NAN : INFINITY) : big);
                cg_stats want;
                ref_stats(g, &want);
                cg_update_stats us;
                us.what = CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE;
                CHECK_OK(update_which(which, pa, g, sa, 1, NULL, NULL));
                CHECK_OK(update_which(which, pb, g, sb, 1, NULL, &us));
                CHECK(bitwise_same(pa, pb));
                const double rel = kase == 0 ? fused_rel(dt) : 1e-12; /* exact blocks: double */
                CHECK(us.grad.max_abs == want.max_abs && us.grad.nonfinite == want.nonfinite &&
                      us.grad.numel == want.numel);
                CHECK(fabs(us.grad.sum_sq - want.sum_sq) <= rel * want.sum_sq);
                CHECK(kase != 0 || us.grad.nonfinite == 3);
                CHECK(kase == 0 || (isfinite(us.grad.sum_sq) && us.grad.sum_sq > 0.0));
                cg_tensor *all[] = {pa, pb, g, sa[0], sa[1], sa[2], sb[0], sb[1], sb[2]};
                for (size_t i = 0; i < sizeof all / sizeof *all; ++i) cg_tensor_free(all[i]);
            }
}

static void test_stats_many(void) {
    int64_t sh[2] = {37, 53};
    cg_tensor *a = stats_input(CG_FLOAT32, 37 * 53, 1), *a2 = NULL, *strided = NULL;
    CHECK_OK(cg_reshape(a, 2, sh, &a2));
    CHECK_OK(cg_transpose(a2, 0, 1, &strided)); /* not contiguous */
    cg_tensor *b = stats_input(CG_FLOAT64, 1001, 2), *empty = stats_input(CG_FLOAT32, 0, 3);
    cg_tensor *ints = NULL;
    CHECK_OK(cg_zeros(CG_INT64, 1, &sh[0], &ints));
    cg_tensor *ts[5] = {a, NULL, strided, empty, b};
    cg_stats got[5], want;
    memset(got, 0xff, sizeof got);
    CHECK_OK(cg_tensor_stats_many(5, ts, got));
    for (int i = 0; i < 5; ++i) {
        if (!ts[i]) {
            CHECK(got[i].sum_sq == 0.0 && got[i].max_abs == 0.0 && got[i].nonfinite == 0 &&
                  got[i].numel == 0);
            continue;
        }
        ref_stats(ts[i], &want);
        CHECK(same_stats(&got[i], &want));
        cg_stats one;
        CHECK_OK(cg_tensor_stats(ts[i], &one)); /* the same numbers as one at a time */
        CHECK(memcmp(&one, &got[i], sizeof one) == 0);
    }
    CHECK(got[2].nonfinite == got[0].nonfinite && got[2].max_abs == got[0].max_abs);
    /* a bad entry: its index in the message, every slot zeroed */
    cg_tensor *withint[3] = {a, ints, b};
    CHECK_STATUS(cg_tensor_stats_many(3, withint, got), CG_ERR_DTYPE);
    CHECK(strstr(cg_last_error(), "tensor 1") != NULL);
    CHECK(got[0].numel == 0 && got[2].numel == 0 && got[0].sum_sq == 0.0);
    CHECK_OK(cg_tensor_stats_many(0, NULL, NULL));
    CHECK_STATUS(cg_tensor_stats_many(2, NULL, got), CG_ERR_NULL);
    CHECK_STATUS(cg_tensor_stats_many(2, ts, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_tensor_stats_many(-1, ts, got), CG_ERR_VALUE);
    cg_tensor *all[] = {a, a2, strided, b, empty, ints};
    for (size_t i = 0; i < sizeof all / sizeof *all; ++i) cg_tensor_free(all[i]);
}

/* ------------------------------------------------------ optimizer object */
/* mean((x @ w - y)^2) recorded on the tape. */
static double regression_loss(cg_tensor *x, cg_tensor *w, cg_tensor *y, int backward) {
    cg_tensor *xw = NULL, *d = NULL, *d2 = NULL, *l = NULL;
    double v = NAN;
    if (cg_matmul(x, w, &xw) == CG_OK && cg_sub(xw, y, &d) == CG_OK && cg_mul(d, d, &d2) == CG_OK &&
        cg_mean(d2, NULL, 0, 0, &l) == CG_OK) {
        cg_tensor_item(l, &v);
        if (backward && cg_backward(l, NULL, 0, 0) != CG_OK) v = NAN;
    }
    cg_tensor_free(l);
    cg_tensor_free(d2);
    cg_tensor_free(d);
    cg_tensor_free(xw);
    return v;
}

static void test_optimizer_object_trains_from_c(void) {
    int64_t xs[2] = {16, 3}, ws[1] = {3};
    cg_manual_seed(3);
    cg_tensor *x = NULL, *w = NULL, *y = NULL, *wtrue = NULL;
    CHECK_OK(cg_randn(CG_FLOAT64, 2, xs, &x));
    double wt[3] = {1.5, -2.0, 0.5};
    wtrue = cgt_f64(1, ws, wt);
    CHECK_OK(cg_matmul(x, wtrue, &y));
    CHECK_OK(cg_zeros(CG_FLOAT64, 1, ws, &w));
    CHECK_OK(cg_tensor_set_requires_grad(w, 1));
    cg_adam_options o = cg_adamw_default_options();
    o.lr = 0.05;
    cg_optimizer *opt = NULL;
    CHECK_OK(cg_optimizer_new_adamw(1, &w, &o, &opt));
    CHECK(cg_optimizer_state(opt, 0, "exp_avg") == NULL);
    double first = regression_loss(x, w, y, 0), last = first;
    for (int k = 0; k < 300; ++k) {
        cg_optimizer_zero_grad(opt);
        last = regression_loss(x, w, y, 1);
        CHECK_OK(cg_optimizer_step(opt));
    }
    CHECK(last < 1e-2 * first);
    CHECK(cg_optimizer_param_steps(opt, 0) == 300);
    CHECK(cg_optimizer_param_steps(opt, 1) == -1);
    CHECK(cg_optimizer_state(opt, 0, "exp_avg") != NULL);
    CHECK(cg_optimizer_state(opt, 0, "max_exp_avg_sq") == NULL);
    CHECK(cg_optimizer_state(opt, 0, "nope") == NULL);
    CHECK_CLOSE(cgt_at(w, 0), 1.5, 0.05);
    CHECK_CLOSE(cgt_at(w, 1), -2.0, 0.05);
    /* Same numbers as the kernel called by hand. */
    cg_tensor *w2 = NULL, *m = NULL, *v = NULL, *g = NULL;
    double w0[3] = {0.3, -0.1, 0.2}, gv[3] = {0.5, -1.0, 0.25};
    w2 = cgt_f64(1, ws, w0);
    cg_tensor *wa = cgt_f64(1, ws, w0);
    CHECK_OK(cg_tensor_set_requires_grad(wa, 1));
    cg_zeros(CG_FLOAT64, 1, ws, &m);
    cg_zeros(CG_FLOAT64, 1, ws, &v);
    g = cgt_f64(1, ws, gv);
    cg_optimizer *o2 = NULL;
    CHECK_OK(cg_optimizer_new_adamw(1, &wa, NULL, &o2));
    CHECK_OK(cg_optimizer_set_lr(o2, 0.1));
    CHECK(cg_optimizer_get_lr(o2) == 0.1);
    cg_adam_options ref = cg_adamw_default_options();
    ref.lr = 0.1;
    for (int k = 1; k <= 4; ++k) {
        CHECK_OK(cg_tensor_set_grad(wa, g));
        CHECK_OK(cg_optimizer_step(o2));
        CHECK_OK(cg_adam_update(w2, g, m, v, NULL, k, &ref, NULL));
    }
    for (int i = 0; i < 3; ++i) CHECK(cgt_at(wa, i) == cgt_at(w2, i));
    /* SGD with momentum through the object. */
    cg_sgd_options so = cg_sgd_default_options();
    so.lr = 0.1;
    so.momentum = 0.9;
    cg_optimizer *o3 = NULL;
    CHECK_OK(cg_optimizer_new_sgd(1, &wa, &so, &o3));
    CHECK_OK(cg_optimizer_step(o3));
    CHECK(cg_optimizer_state(o3, 0, "momentum_buffer") != NULL);
    CHECK_CLOSE(cgt_at(cg_optimizer_state(o3, 0, "momentum_buffer"), 1), -1.0, 1e-15);
    cg_optimizer_zero_grad(o3);
    CHECK(cg_tensor_grad(wa) == NULL);
    CHECK_OK(cg_optimizer_step(o3)); /* no gradient: nothing to do */
    CHECK(cg_optimizer_param_steps(o3, 0) == 1);
    /* Bad input. */
    cg_optimizer *bad = (cg_optimizer *)&bad;
    CHECK_STATUS(cg_optimizer_new_adamw(0, &wa, NULL, &bad), CG_ERR_VALUE);
    CHECK(bad == NULL);
    cg_tensor *dup[2] = {wa, wa};
    CHECK_STATUS(cg_optimizer_new_adamw(2, dup, NULL, &bad), CG_ERR_VALUE);
    cg_tensor *nonleaf = NULL;
    CHECK_OK(cg_mul(wa, wa, &nonleaf));
    CHECK_STATUS(cg_optimizer_new_sgd(1, &nonleaf, &so, &bad), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "non-leaf") != NULL);
    so.lr = -1;
    CHECK_STATUS(cg_optimizer_new_sgd(1, &wa, &so, &bad), CG_ERR_VALUE);
    CHECK_STATUS(cg_optimizer_new_sgd(1, &wa, NULL, &bad), CG_ERR_NULL);
    /* a NULL out is named by the public call, not by its internal helper */
    const cg_adam_options ao = cg_adam_default_options();
    CHECK_STATUS(cg_optimizer_new_adam(1, &wa, &ao, NULL), CG_ERR_NULL);
    CHECK(strstr(cg_last_error(), "cg_optimizer_new_adam: out pointer is NULL") != NULL);
    CHECK_STATUS(cg_optimizer_new_adamw(0, &wa, NULL, &bad), CG_ERR_VALUE);  /* AdamW: its own name */
    CHECK(strstr(cg_last_error(), "cg_optimizer_new_adamw: optimizer got an empty parameter list") != NULL);
    CHECK_STATUS(cg_optimizer_set_lr(o2, NAN), CG_ERR_VALUE);
    CHECK_STATUS(cg_optimizer_step(NULL), CG_ERR_NULL);
    CHECK(isnan(cg_optimizer_get_lr(NULL)));
    cg_optimizer_zero_grad(NULL);
    cg_optimizer_free(NULL);
    cg_optimizer_free(opt);
    cg_optimizer_free(o2);
    cg_optimizer_free(o3);
    cg_tensor *all[] = {x, w, y, wtrue, w2, wa, m, v, g, nonleaf};
    for (size_t i = 0; i < sizeof all / sizeof *all; ++i) cg_tensor_free(all[i]);
}

/* A step that fails its checks for one parameter moves none: a, listed
 * first, keeps its value, step count and (absent) state when b's data was
 * replaced with a non-contiguous view or with another shape; a step that
 * fails after making the fresh state of a leaves no state behind. */
static void test_optimizer_step_checks_every_parameter_first(void) {
    int64_t as = 3, bs[2] = {2, 2}, b3[2] = {3, 2};
    double av[3] = {1, 2, 3}, bv[4] = {1, 2, 3, 4}, ones[6] = {1, 1, 1, 1, 1, 1};
    cg_tensor *a = cgt_f64(1, &as, av), *b = cgt_f64(2, bs, bv);
    cg_tensor *ga = cgt_f64(1, &as, ones), *gb = cgt_f64(2, bs, ones), *gb3 = cgt_f64(2, b3, ones);
    cg_tensor *bt = NULL, *b_wide = cgt_f64(2, b3, ones);
    cg_tensor_set_requires_grad(a, 1);
    cg_tensor_set_requires_grad(b, 1);
    cg_tensor *ps[2] = {a, b};
    cg_adam_options ao = cg_adam_default_options();
    cg_sgd_options so = cg_sgd_default_options();
    so.momentum = 0.9;
    cg_rmsprop_options ro = cg_rmsprop_default_options();
    ro.centered = 1;
    cg_optimizer *opts[3] = {NULL, NULL, NULL};
    CHECK_OK(cg_optimizer_new_adam(2, ps, &ao, &opts[0]));
    CHECK_OK(cg_optimizer_new_sgd(2, ps, &so, &opts[1]));
    CHECK_OK(cg_optimizer_new_rmsprop(2, ps, &ro, &opts[2]));
    static const char *const first_state[3] = {"exp_avg", "momentum_buffer", "square_avg"};
    /* b replaced by its own transpose: same shape, not contiguous */
    CHECK_OK(cg_transpose(b, 0, 1, &bt));
    cg_tensor *bt_copy = NULL;
    CHECK_OK(cg_transpose(b, 0, 1, &bt_copy));
    CHECK_OK(cg_tensor_set_data(b, bt_copy));
    cg_tensor_free(bt_copy);
    for (int k = 0; k < 3; ++k) {
        CHECK_OK(cg_tensor_set_grad(a, ga));
        CHECK_OK(cg_tensor_set_grad(b, gb));
        CHECK_STATUS(cg_optimizer_step(opts[k]), CG_ERR_VALUE);
        CHECK(strstr(cg_last_error(), "cg_optimizer_step: 'param' is not contiguous") &&
              strstr(cg_last_error(), "(parameter 1)"));
        CHECK(cgt_at(a, 0) == 1 && cgt_at(a, 2) == 3);
        CHECK(cg_optimizer_param_steps(opts[k], 0) == 0);
        CHECK(!cg_optimizer_state(opts[k], 0, first_state[k])); /* a's fresh state dropped */
    }
    /* b contiguous again: the first step runs for both */
    cg_tensor *b_back = cgt_f64(2, bs, bv);
    CHECK_OK(cg_tensor_set_data(b, b_back));
    cg_tensor_free(b_back);
    for (int k = 0; k < 3; ++k) {
        CHECK_OK(cg_tensor_set_grad(a, ga));
        CHECK_OK(cg_tensor_set_grad(b, gb));
        CHECK_OK(cg_optimizer_step(opts[k]));
        CHECK(cg_optimizer_param_steps(opts[k], 0) == 1 && cg_optimizer_param_steps(opts[k], 1) == 1);
    }
    /* b made (3, 2): its state is (2, 2) now; nothing moves */
    double a_now = cgt_at(a, 0);
    CHECK_OK(cg_tensor_set_data(b, b_wide));
    CHECK(cg_tensor_grad(b) == NULL); /* set_data dropped the (2, 2) gradient */
    for (int k = 0; k < 3; ++k) {
        CHECK_OK(cg_tensor_set_grad(a, ga));
        CHECK_OK(cg_tensor_set_grad(b, gb3));
        CHECK_STATUS(cg_optimizer_step(opts[k]), CG_ERR_SHAPE);
        CHECK(strstr(cg_last_error(), "has shape (2, 2) but the parameter has shape (3, 2) "
                                      "(parameter 1)"));
        CHECK(cgt_at(a, 0) == a_now && cg_optimizer_param_steps(opts[k], 0) == 1);
    }
    for (int k = 0; k < 3; ++k) cg_optimizer_free(opts[k]);
    cg_tensor *all[] = {a, b, ga, gb, gb3, bt, b_wide};
    for (size_t i = 0; i < sizeof all / sizeof *all; ++i) cg_tensor_free(all[i]);
}

/* RMSprop through the object: the same numbers as the kernel by hand, the
 * centered/momentum state created as needed, and it trains. */
/* cg_optimizer_step_stats: the same parameters, bit for bit, as
 * cg_optimizer_step on a twin optimizer; per parameter the gradient's and
 * the old weights' statistics and the squared update, as the reference
 * finds them; `what` per entry (0: nothing); a parameter without a
 * gradient (zero grad stats, its weights, update 0); bad input. */
static void test_optimizer_step_stats(void) {
    for (int kind = 0; kind < 3; ++kind) {
        const cg_dtype dts[3] = {CG_FLOAT32, CG_FLOAT64, CG_FLOAT32};
        cg_tensor *pa[3], *pb[3], *g[3];
        for (int i = 0; i < 3; ++i) {
            pa[i] = filled(dts[i], 1.0, 0.3 * i), pb[i] = filled(dts[i], 1.0, 0.3 * i);
            g[i] = filled(dts[i], 0.5, 1.3 + i);
            CHECK_OK(cg_tensor_set_requires_grad(pa[i], 1));
            CHECK_OK(cg_tensor_set_requires_grad(pb[i], 1));
        }
        cg_optimizer *oa = NULL, *ob = NULL;
        if (kind == 0) {
            cg_sgd_options o = cg_sgd_default_options();
            o.lr = 0.1, o.momentum = 0.9;
            CHECK_OK(cg_optimizer_new_sgd(3, pa, &o, &oa));
            CHECK_OK(cg_optimizer_new_sgd(3, pb, &o, &ob));
        } else if (kind == 1) {
            cg_adam_options o = cg_adamw_default_options();
            o.lr = 1e-2;
            CHECK_OK(cg_optimizer_new_adamw(3, pa, &o, &oa));
            CHECK_OK(cg_optimizer_new_adamw(3, pb, &o, &ob));
        } else {
            cg_rmsprop_options o = cg_rmsprop_default_options();
            o.momentum = 0.5;
            CHECK_OK(cg_optimizer_new_rmsprop(3, pa, &o, &oa));
            CHECK_OK(cg_optimizer_new_rmsprop(3, pb, &o, &ob));
        }
        for (int step = 0; step < 3; ++step) {
            for (int i = 0; i < 2; ++i) { /* parameter 2 never gets a gradient */
                CHECK_OK(cg_tensor_set_grad(pa[i], g[i]));
                CHECK_OK(cg_tensor_set_grad(pb[i], g[i]));
            }
            cg_tensor *before[3];
            for (int i = 0; i < 3; ++i) {
                before[i] = filled(dts[i], 0.0, 0.0);
                CHECK_OK(cg_copy_(before[i], pb[i]));
            }
            cg_update_stats st[3];
            memset(st, 0x5a, sizeof st);
            st[0].what = st[2].what = CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE;
            st[1].what = step == 1 ? 0 : CG_MEASURE_UPDATE;
            CHECK_OK(cg_optimizer_step(oa));
            CHECK_OK(cg_optimizer_step_stats(ob, st));
            for (int i = 0; i < 3; ++i) CHECK(bitwise_same(pa[i], pb[i]));
            cg_stats wg, ww;
            ref_stats(g[0], &wg);
            ref_stats(before[0], &ww);
            CHECK(close_stats(&st[0].grad, &wg, 1e-6) && close_stats(&st[0].weight, &ww, 1e-6));
            const double u0 = sq_dist(pb[0], before[0]);
            CHECK(u0 > 0.0);
            CHECK_CLOSE(st[0].update_sum_sq, u0, 1e-6);
            CHECK(st[1].grad.numel == 0 && st[1].weight.numel == 0);
            if (step == 1) CHECK(st[1].update_sum_sq == 0.0 && st[1].what == 0);
            else CHECK_CLOSE(st[1].update_sum_sq, sq_dist(pb[1], before[1]), 1e-12);
            ref_stats(before[2], &ww);
            CHECK(st[2].grad.numel == 0 && st[2].grad.sum_sq == 0.0 && same_stats(&st[2].weight, &ww));
            CHECK(st[2].update_sum_sq == 0.0 && bitwise_same(pb[2], before[2]));
            for (int i = 0; i < 3; ++i) cg_tensor_free(before[i]);
        }
        /* bad input: nothing is updated */
        cg_tensor *keep = filled(dts[0], 0.0, 0.0);
        CHECK_OK(cg_copy_(keep, pb[0]));
        cg_update_stats bad[3] = {{0}};
        bad[2].what = 8;
        CHECK_STATUS(cg_optimizer_step_stats(ob, bad), CG_ERR_VALUE);
        CHECK(strstr(cg_last_error(), "stats[2].what = 8") != NULL);
        CHECK(bitwise_same(keep, pb[0]));
        CHECK_STATUS(cg_optimizer_step_stats(ob, NULL), CG_ERR_NULL);
        CHECK_STATUS(cg_optimizer_step_stats(NULL, bad), CG_ERR_NULL);
        cg_tensor_free(keep);
        cg_optimizer_free(oa);
        cg_optimizer_free(ob);
        for (int i = 0; i < 3; ++i) {
            cg_tensor_free(pa[i]);
            cg_tensor_free(pb[i]);
            cg_tensor_free(g[i]);
        }
    }
}

static void test_optimizer_object_rmsprop(void) {
    int64_t ws[1] = {3};
    double w0[3] = {0.3, -0.1, 0.2}, gv[3] = {0.5, -1.0, 0.25};
    cg_tensor *wa = cgt_f64(1, ws, w0), *wb = cgt_f64(1, ws, w0), *g = cgt_f64(1, ws, gv);
    cg_tensor *sq = NULL, *ga = NULL, *mb = NULL;
    CHECK_OK(cg_tensor_set_requires_grad(wa, 1));
    cg_zeros(CG_FLOAT64, 1, ws, &sq);
    cg_zeros(CG_FLOAT64, 1, ws, &ga);
    cg_zeros(CG_FLOAT64, 1, ws, &mb);
    cg_rmsprop_options o = cg_rmsprop_default_options();
    o.lr = 0.05;
    o.centered = 1;
    o.momentum = 0.9;
    o.weight_decay = 0.01;
    cg_optimizer *opt = NULL;
    CHECK_OK(cg_optimizer_new_rmsprop(1, &wa, &o, &opt));
    for (int k = 0; k < 5; ++k) {
        CHECK_OK(cg_tensor_set_grad(wa, g));
        CHECK_OK(cg_optimizer_step(opt));
        CHECK_OK(cg_rmsprop_update(wb, g, sq, ga, mb, &o, NULL));
    }
    for (int i = 0; i < 3; ++i) CHECK(cgt_at(wa, i) == cgt_at(wb, i));
    CHECK(cg_optimizer_state(opt, 0, "square_avg") != NULL);
    CHECK(cg_optimizer_state(opt, 0, "grad_avg") != NULL);
    CHECK(cg_optimizer_state(opt, 0, "momentum_buffer") != NULL);
    CHECK(cg_optimizer_state(opt, 0, "exp_avg") == NULL);
    CHECK_OK(cg_optimizer_set_lr(opt, 0.2));
    CHECK(cg_optimizer_get_lr(opt) == 0.2);
    cg_rmsprop_options plain = cg_rmsprop_default_options();
    cg_optimizer *o2 = NULL;
    CHECK_OK(cg_optimizer_new_rmsprop(1, &wa, &plain, &o2));
    CHECK_OK(cg_optimizer_step(o2));
    CHECK(cg_optimizer_state(o2, 0, "grad_avg") == NULL);        /* not centered */
    CHECK(cg_optimizer_state(o2, 0, "momentum_buffer") == NULL); /* no momentum */
    cg_optimizer *bad = NULL;
    plain.alpha = -0.5;
    CHECK_STATUS(cg_optimizer_new_rmsprop(1, &wa, &plain, &bad), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "alpha") != NULL && bad == NULL);
    CHECK_STATUS(cg_optimizer_new_rmsprop(1, &wa, NULL, &bad), CG_ERR_NULL);
    cg_optimizer_free(opt);
    cg_optimizer_free(o2);
    cg_tensor *all[] = {wa, wb, g, sq, ga, mb};
    for (size_t i = 0; i < sizeof all / sizeof *all; ++i) cg_tensor_free(all[i]);
}

int main(void) {
    test_optimizer_object_rmsprop();
    test_optimizer_step_stats();
    test_optimizer_object_trains_from_c();
    test_optimizer_step_checks_every_parameter_first();
    test_sgd();
    test_adam();
    test_adam_multi();
    test_sgd_multi();
    test_rmsprop_multi();
    test_adagrad_multi();
    test_rmsprop();
    test_adagrad();
    test_update_errors();
    test_total_norm_and_clip();
    test_agc();
    test_stats();
    test_stats_vs_reference();
    test_stats_finite_vs_reference();
    test_update_stats();
    test_update_stats_lanes_ranges();
    test_update_stats_measuring_fallbacks();
    test_update_stats_grad_in_kernel();
    test_stats_many();
    return cgt_report(__FILE__);
}
