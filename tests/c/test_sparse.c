/* Row-sparse tensors: build, parts, coalesce, densify, the sparse embedding
 * backward against the dense one, accumulation into .grad, the sparse
 * optimizer updates, clipping over the stored rows, the CSR linear op, and
 * the errors for everything that cannot take a sparse tensor. */
#include "cgtest.h"

static cg_tensor *i64(int64_t n, const int64_t *v) {
    cg_tensor *t = NULL;
    cg_from_data(CG_INT64, 1, &n, v, &t);
    return t;
}

static double at(const cg_tensor *t, int64_t i) { return cgt_at(t, i); }

/* A sparse (4, 2) tensor with rows 3, 0, 3 (uncoalesced). */
static cg_tensor *sample(void) {
    int64_t idx[3] = {3, 0, 3}, vs[2] = {3, 2};
    double vals[6] = {1, 2, 3, 4, 5, 6};
    cg_tensor *i = i64(3, idx), *v = cgt_f64(2, vs, vals), *s = NULL;
    cg_sparse_rows(i, v, 4, &s);
    cg_tensor_free(i);
    cg_tensor_free(v);
    return s;
}

static void test_build_coalesce_densify(void) {
    cg_tensor *s = sample();
    CHECK(s && cg_tensor_is_sparse(s) && cg_tensor_layout(s) == CG_SPARSE_ROWS);
    CHECK(cg_tensor_ndim(s) == 2 && cg_tensor_shape(s)[0] == 4 && cg_tensor_shape(s)[1] == 2);
    CHECK(cg_tensor_numel(s) == 8 && cg_sparse_nnz(s) == 3 && !cg_sparse_is_coalesced(s));
    CHECK(cg_tensor_data(s) == NULL && !cg_tensor_is_contiguous(s));
    cg_tensor *d = NULL, *c = NULL, *ci = NULL, *cv = NULL, *c2 = NULL;
    CHECK_OK(cg_sparse_to_dense(s, &d));
    double want[8] = {3, 4, 0, 0, 0, 0, 6, 8};
    for (int k = 0; k < 8; ++k) CHECK_CLOSE(at(d, k), want[k], 0);
    CHECK_OK(cg_sparse_coalesce(s, &c));
    CHECK(cg_sparse_is_coalesced(c) && cg_sparse_nnz(c) == 2);
    CHECK_OK(cg_sparse_indices(c, &ci));
    CHECK_OK(cg_sparse_values(c, &cv));
    CHECK(at(ci, 0) == 0 && at(ci, 1) == 3);
    CHECK(at(cv, 0) == 3 && at(cv, 1) == 4 && at(cv, 2) == 6 && at(cv, 3) == 8);
    CHECK_OK(cg_sparse_coalesce(c, &c2));
    CHECK(c2 == c); /* already coalesced: the same tensor */
    cg_tensor *sum = NULL, *dsum = NULL;
    CHECK_OK(cg_sparse_add(s, c, &sum));
    CHECK(cg_tensor_is_sparse(sum) && cg_sparse_nnz(sum) == 5);
    CHECK_OK(cg_sparse_add(d, s, &dsum));
    CHECK(!cg_tensor_is_sparse(dsum));
    for (int k = 0; k < 8; ++k) CHECK_CLOSE(at(dsum, k), 2 * want[k], 0);
    cg_tensor *det = NULL;
    CHECK_OK(cg_detach(s, &det));
    CHECK(cg_tensor_is_sparse(det) && cg_sparse_nnz(det) == 3);
    CHECK_OK(cg_sparse_zero_(det));
    CHECK(cg_sparse_nnz(det) == 0 && cg_sparse_nnz(s) == 3);
    cg_tensor *objs[] = {d, c, ci, cv, c2, sum, dsum, det, s};
    for (size_t k = 0; k < sizeof objs / sizeof *objs; ++k) cg_tensor_free(objs[k]);
}

static void test_errors(void) {
    cg_tensor *s = sample(), *r = NULL, *ones = NULL;
    int64_t sh[2] = {4, 2};
    cg_ones(CG_FLOAT64, 2, sh, &ones);
    CHECK_STATUS(cg_exp(s, &r), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_add(s, ones, &r), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_mul(ones, s, &r), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_sum(s, NULL, 0, 0, &r), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_reshape(s, 1, (int64_t[]){8}, &r), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_matmul(s, ones, &r), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_add_(ones, s, 1.0), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_contiguous(s, &r), CG_ERR_UNSUPPORTED);
    double v;
    CHECK_STATUS(cg_tensor_item(s, &v), CG_ERR_UNSUPPORTED);
    double buf[8];
    CHECK_STATUS(cg_tensor_copy_to(s, buf, sizeof buf), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_tensor_set_data(ones, s), CG_ERR_UNSUPPORTED);
    cg_adam_options ao = cg_adam_default_options();
    CHECK_STATUS(cg_adam_update(ones, s, ones, ones, NULL, 1, &ao, NULL), CG_ERR_UNSUPPORTED);
    CHECK_STATUS(cg_sparse_values(ones, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_sparse_coalesce(ones, &r), CG_ERR_VALUE);
    CHECK(cg_sparse_nnz(ones) == -1 && !cg_tensor_is_sparse(ones) && !cg_tensor_is_sparse(NULL));
    /* construction */
    int64_t bad[2] = {0, 4};
    cg_tensor *bi = i64(2, bad), *vals = NULL;
    cg_ones(CG_FLOAT64, 2, (int64_t[]){2, 2}, &vals);
    CHECK_STATUS(cg_sparse_rows(bi, vals, 4, &r), CG_ERR_INDEX);
    CHECK_STATUS(cg_sparse_rows(bi, ones, 5, &r), CG_ERR_SHAPE);
    CHECK_STATUS(cg_sparse_rows(vals, vals, 5, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_sparse_rows(bi, vals, -1, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_sparse_rows(NULL, vals, 5, &r), CG_ERR_NULL);
    CHECK(r == NULL);
    cg_tensor_free(bi);
    cg_tensor_free(vals);
    cg_tensor_free(ones);
    cg_tensor_free(s);
}

static void test_embedding_sparse_backward_vs_dense(void) {
    int64_t ws[2] = {5, 3}, idx[6] = {4, 1, 4, 0, 2, 4}, is[2] = {2, 3};
    cg_tensor *w1 = cgt_randn64(2, ws), *w2 = NULL, *ind = NULL;
    cg_tensor *w1d = NULL;
    cg_detach(w1, &w1d);
    cg_clone(w1d, &w2);
    cg_tensor_set_requires_grad(w2, 1);
    cg_from_data(CG_INT64, 2, is, idx, &ind);
    cg_tensor *o1 = NULL, *o2 = NULL, *q1 = NULL, *q2 = NULL, *l1 = NULL, *l2 = NULL;
    /* loss = sum(out^2), twice over (accumulation across two backwards) */
    for (int rep = 0; rep < 2; ++rep) {
        CHECK_OK(cg_embedding_sparse(w1, ind, -1, &o1));
        CHECK_OK(cg_embedding(w2, ind, &o2));
        cg_mul(o1, o1, &q1);
        cg_mul(o2, o2, &q2);
        cg_sum(q1, NULL, 0, 0, &l1);
        cg_sum(q2, NULL, 0, 0, &l2);
        CHECK_OK(cg_backward(l1, NULL, 0, 0));
        CHECK_OK(cg_backward(l2, NULL, 0, 0));
        cg_tensor *fr[] = {o1, o2, q1, q2, l1, l2};
        for (int k = 0; k < 6; ++k) cg_tensor_free(fr[k]);
    }
    cg_tensor *g = cg_tensor_grad(w1), *gd = NULL;
    CHECK(cg_tensor_is_sparse(g) && cg_sparse_nnz(g) == 12);
    CHECK_OK(cg_sparse_to_dense(g, &gd));
    for (int k = 0; k < 15; ++k) CHECK(at(gd, k) == at(cg_tensor_grad(w2), k)); /* bitwise */
    cg_tensor_free(gd);
    /* padding_idx 4 leaves its rows out */
    cg_tensor_set_grad(w1, NULL);
    CHECK_OK(cg_embedding_sparse(w1, ind, 4, &o1));
    cg_sum(o1, NULL, 0, 0, &l1);
    CHECK_OK(cg_backward(l1, NULL, 0, 0));
    CHECK(cg_sparse_nnz(cg_tensor_grad(w1)) == 3);
    cg_tensor_free(o1);
    cg_tensor_free(l1);
    /* create_graph is refused with a message */
    CHECK_OK(cg_embedding_sparse(w1, ind, -1, &o1));
    cg_mul(o1, o1, &q1);
    cg_sum(q1, NULL, 0, 0, &l1);
    CHECK_STATUS(cg_backward(l1, NULL, 1, 1), CG_ERR_UNSUPPORTED);
    CHECK(strstr(cg_last_error(), "create_graph") != NULL);
    CHECK_STATUS(cg_embedding_sparse(w1, ind, 5, &o2), CG_ERR_INDEX);
    cg_tensor *fr[] = {o1, q1, l1, w1, w1d, w2, ind};
    for (int k = 0; k < 7; ++k) cg_tensor_free(fr[k]);
}

static void test_sparse_optimizers_and_clip(void) {
    int64_t ps[2] = {4, 2};
    double p0[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    cg_tensor *p = cgt_f64(2, ps, p0), *g = sample(), *buf = NULL, *buf2 = NULL;
    cg_sgd_options o = cg_sgd_default_options();
    o.lr = 0.5;
    o.momentum = 0.9;
    CHECK_OK(cg_sgd_sparse_update(p, g, NULL, &o, &buf)); /* buf = g (coalesced) */
    CHECK(cg_tensor_is_sparse(buf) && cg_sparse_nnz(buf) == 2 && cg_sparse_is_coalesced(buf));
    /* rows 0 and 3 move by 0.5 * g; rows 1, 2 untouched */
    CHECK_CLOSE(at(p, 0), 1 - 0.5 * 3, 0);
    CHECK_CLOSE(at(p, 7), 8 - 0.5 * 8, 0);
    CHECK(at(p, 2) == 3 && at(p, 5) == 6);
    /* second step with a gradient on row 1 only: buf rows 0, 3 decay */
    int64_t r1[1] = {1}, vs[2] = {1, 2};
    double v1[2] = {10, 20};
    cg_tensor *i1 = i64(1, r1), *vv = cgt_f64(2, vs, v1), *g2 = NULL;
    cg_sparse_rows(i1, vv, 4, &g2);
    CHECK_OK(cg_sgd_sparse_update(p, g2, buf, &o, &buf2));
    CHECK(cg_sparse_nnz(buf2) == 3);
    CHECK_CLOSE(at(p, 0), 1 - 0.5 * 3 - 0.5 * 0.9 * 3, 1e-15);
    CHECK_CLOSE(at(p, 2), 3 - 0.5 * 10, 1e-15);
    cg_tensor *none = NULL;
    CHECK_STATUS(cg_sgd_sparse_update(p, p, NULL, &o, &none), CG_ERR_VALUE);
    CHECK(none == NULL);
    CHECK_STATUS(cg_sgd_update(p, g, NULL, 0, &o, NULL), CG_ERR_UNSUPPORTED);
    /* SparseAdam: only the gradient's rows of param and moments change */
    cg_tensor *m = NULL, *v = NULL;
    cg_zeros(CG_FLOAT64, 2, ps, &m);
    cg_zeros(CG_FLOAT64, 2, ps, &v);
    cg_adam_options ao = cg_adam_default_options();
    ao.lr = 0.1;
    double before1 = at(p, 2);
    CHECK_OK(cg_sparse_adam_update(p, g, m, v, 1, &ao));
    CHECK(at(p, 2) == before1 && at(m, 2) == 0 && at(v, 3) == 0);
    CHECK_CLOSE(at(m, 0), 0.1 * 3, 1e-15);   /* (1 - beta1) * g */
    CHECK_CLOSE(at(v, 0), 0.001 * 9, 1e-15); /* (1 - beta2) * g^2 */
    ao.weight_decay = 0.1;
    CHECK_STATUS(cg_sparse_adam_update(p, g, m, v, 1, &ao), CG_ERR_VALUE);
    ao.weight_decay = 0;
    CHECK_STATUS(cg_sparse_adam_update(p, g, m, v, 0, &ao), CG_ERR_VALUE);
    /* Adagrad: sum += g^2 on rows 0 and 3 only */
    cg_tensor *acc = NULL;
    cg_zeros(CG_FLOAT64, 2, ps, &acc);
    cg_adagrad_options go = cg_adagrad_default_options();
    go.lr = 0.1;
    double p2 = at(p, 2), p0v = at(p, 0);
    CHECK_OK(cg_adagrad_sparse_update(p, g, acc, 1, &go));
    CHECK(at(acc, 0) == 9 && at(acc, 6) == 36 && at(acc, 2) == 0 && at(p, 2) == p2);
    CHECK_CLOSE(at(p, 0), p0v - 0.1 * 3 / (3 + 1e-10), 1e-14);
    CHECK_STATUS(cg_adagrad_sparse_update(p, g, acc, 0, &go), CG_ERR_VALUE);
    CHECK_STATUS(cg_adagrad_update(p, g, acc, 1, &go, NULL), CG_ERR_UNSUPPORTED);
    cg_tensor_free(acc);
    /* clip by norm over the coalesced rows: norm of [[3,4],[6,8]] = sqrt(125) */
    double tn = 0, coef = 0;
    cg_tensor *gs[1] = {g};
    CHECK_OK(cg_total_norm(1, gs, 2.0, &tn));
    CHECK_CLOSE(tn, sqrt(125.0), 1e-15);
    CHECK(cg_sparse_is_coalesced(g));
    CHECK_OK(cg_clip_grad_norm(1, gs, 1.0, 2.0, 0, &tn, &coef));
    cg_tensor *gd = NULL;
    cg_sparse_to_dense(g, &gd);
    CHECK_CLOSE(at(gd, 6), 6 * coef, 1e-15);
    int64_t nclip = 0;
    CHECK_OK(cg_clip_grad_value(1, gs, 0.5, &nclip));
    CHECK(nclip == 2); /* 6*coef = 0.537 and 8*coef = 0.716 exceed 0.5 */
    cg_stats st;
    CHECK_OK(cg_tensor_stats(g, &st));
    CHECK(st.numel == 8 && st.nonfinite == 0);
    cg_tensor *fr[] = {p, g, buf, buf2, i1, vv, g2, m, v, gd};
    for (int k = 0; k < 10; ++k) cg_tensor_free(fr[k]);
}

/* The CSR linear op against the dense product, and its gradcheck. */
static int64_t IP[4] = {0, 2, 2, 5}, COL[5] = {0, 3, 1, 2, 3};
static cg_status sl_fn(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    (void)ctx;
    (void)n;
    cg_tensor *ip = i64(4, IP), *col = i64(5, COL), *y = NULL, *t = NULL;
    cg_status st = cg_sparse_linear(in[0], ip, col, in[1], in[2], 3, &y);
    if (!st) st = cg_tanh(y, &t);
    cg_tensor_free(y);
    cg_tensor_free(ip);
    cg_tensor_free(col);
    *out = t;
    return st;
}

/* The C optimizer object over a sparse embedding: SGD with momentum keeps a
 * row-sparse buffer, Adam refuses. */
static void test_optimizer_object(void) {
    int64_t ws[2] = {6, 2}, idx[3] = {1, 4, 4};
    double w0[12] = {0};
    cg_tensor *w = cgt_f64(2, ws, w0), *ind = i64(3, idx), *o = NULL, *l = NULL;
    cg_tensor_set_requires_grad(w, 1);
    cg_sgd_options so = cg_sgd_default_options();
    so.lr = 0.1;
    so.momentum = 0.5;
    cg_optimizer *opt = NULL, *adam = NULL;
    CHECK_OK(cg_optimizer_new_sgd(1, &w, &so, &opt));
    for (int k = 0; k < 2; ++k) {
        cg_optimizer_zero_grad(opt);
        cg_embedding_sparse(w, ind, -1, &o);
        cg_sum(o, NULL, 0, 0, &l);
        CHECK_OK(cg_backward(l, NULL, 0, 0));
        CHECK_OK(cg_optimizer_step(opt));
        cg_tensor_free(o);
        cg_tensor_free(l);
    }
    cg_tensor *buf = cg_optimizer_state(opt, 0, "momentum_buffer");
    CHECK(cg_tensor_is_sparse(buf) && cg_sparse_nnz(buf) == 2);
    /* row 4: g = 2; step 1 moves -0.2, step 2 buffer 0.5*2 + 2 = 3 moves -0.3 */
    CHECK_CLOSE(at(w, 8), -0.5, 1e-15);
    CHECK(at(w, 0) == 0 && at(w, 4) == 0);
    /* cg_optimizer_step_stats: a row-sparse gradient measured before the
     * update (rows 1 and 4, 4 twice: g = 1 1 2 2; weights 0 except row 4
     * at -0.5 -0.5, row 1 at -0.25 -0.25), its update not measured (NAN) */
    cg_update_stats us = {0};
    us.what = CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE;
    cg_optimizer_zero_grad(opt);
    cg_embedding_sparse(w, ind, -1, &o);
    cg_sum(o, NULL, 0, 0, &l);
    CHECK_OK(cg_backward(l, NULL, 0, 0));
    CHECK_OK(cg_optimizer_step_stats(opt, &us));
    CHECK_CLOSE(us.grad.sum_sq, 10.0, 1e-15);
    CHECK(us.grad.max_abs == 2.0 && us.grad.nonfinite == 0 && us.grad.numel == 12);
    CHECK_CLOSE(us.weight.sum_sq, 0.625, 1e-15);
    CHECK(us.weight.numel == 12 && isnan(us.update_sum_sq));
    CHECK_CLOSE(at(w, 8), -0.5 - 0.1 * (0.5 * 3 + 2), 1e-15);
    cg_tensor_free(o);
    cg_tensor_free(l);
    cg_adam_options ao = cg_adam_default_options();
    CHECK_OK(cg_optimizer_new_adam(1, &w, &ao, &adam));
    CHECK_STATUS(cg_optimizer_step(adam), CG_ERR_UNSUPPORTED);
    cg_optimizer_free(opt);
    cg_optimizer_free(adam);
    cg_tensor_free(w);
    cg_tensor_free(ind);
}

/* A step refused for one parameter's gradient layout moves no parameter:
 * the dense parameter listed before the sparse one keeps its value, gets no
 * state and no step count, and the next good step is the first. */
static void test_refused_step_moves_nothing(void) {
    int64_t ds = 3, ws[2] = {5, 2}, idx[2] = {1, 3};
    double d0[3] = {1, 2, 3}, w0[10] = {0}, ones[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    cg_tensor *d = cgt_f64(1, &ds, d0), *w = cgt_f64(2, ws, w0), *ind = i64(2, idx);
    cg_tensor_set_requires_grad(d, 1);
    cg_tensor_set_requires_grad(w, 1);
    cg_tensor *ps[2] = {d, w};
    /* d's gradient is ones, w's the sparse gradient of an embedding lookup,
     * or a dense one (dense: 1) */
    cg_tensor *gd = cgt_f64(1, &ds, ones), *gw = cgt_f64(2, ws, ones);
#define GIVE_GRADS(dense)                                                     \
    do {                                                                      \
        cg_tensor *o_ = NULL, *l_ = NULL;                                     \
        cg_tensor_set_grad(w, NULL);                                          \
        if (dense) CHECK_OK(cg_tensor_set_grad(w, gw));                       \
        else {                                                                \
            CHECK_OK(cg_embedding_sparse(w, ind, -1, &o_));                   \
            CHECK_OK(cg_sum(o_, NULL, 0, 0, &l_));                            \
            CHECK_OK(cg_backward(l_, NULL, 0, 0));                            \
        }                                                                     \
        CHECK_OK(cg_tensor_set_grad(d, gd));                                  \
        cg_tensor_free(o_);                                                   \
        cg_tensor_free(l_);                                                   \
    } while (0)
    cg_adam_options ao = cg_adam_default_options();
    cg_rmsprop_options ro = cg_rmsprop_default_options();
    cg_optimizer *adam = NULL, *rms = NULL, *sgd = NULL;
    CHECK_OK(cg_optimizer_new_adam(2, ps, &ao, &adam));
    CHECK_OK(cg_optimizer_new_rmsprop(2, ps, &ro, &rms));
    GIVE_GRADS(0);
    cg_optimizer *refusing[2] = {adam, rms};
    for (int k = 0; k < 2; ++k) {
        CHECK_STATUS(cg_optimizer_step(refusing[k]), CG_ERR_UNSUPPORTED);
        CHECK(strstr(cg_last_error(), "cg_optimizer_step: parameter 1 has a row-sparse gradient"));
        cg_update_stats st[2] = {{0}, {0}};
        CHECK_STATUS(cg_optimizer_step_stats(refusing[k], st), CG_ERR_UNSUPPORTED);
        CHECK(strstr(cg_last_error(), "cg_optimizer_step_stats: parameter 1"));
        CHECK(at(d, 0) == 1 && at(d, 1) == 2 && at(d, 2) == 3);
        CHECK(cg_optimizer_param_steps(refusing[k], 0) == 0);
    }
    CHECK(!cg_optimizer_state(adam, 0, "exp_avg") && !cg_optimizer_state(rms, 0, "square_avg"));
    /* SGD with momentum: the buffer keeps the layout of its first gradient */
    cg_sgd_options so = cg_sgd_default_options();
    so.lr = 0.5;
    so.momentum = 0.9;
    for (int first_dense = 0; first_dense < 2; ++first_dense) {
        const double d_after_one = 1 - 0.5; /* first step: buffer = g = 1 */
        CHECK_OK(cg_optimizer_new_sgd(2, ps, &so, &sgd));
        GIVE_GRADS(first_dense);
        CHECK_OK(cg_optimizer_step(sgd));
        CHECK(at(d, 0) == d_after_one);
        CHECK(cg_tensor_is_sparse(cg_optimizer_state(sgd, 1, "momentum_buffer")) == !first_dense);
        GIVE_GRADS(!first_dense);
        CHECK_STATUS(cg_optimizer_step(sgd), CG_ERR_VALUE);
        CHECK(strstr(cg_last_error(), first_dense ? "parameter 1 has a dense momentum buffer but "
                                                    "a row-sparse gradient"
                                                  : "parameter 1 has a row-sparse momentum buffer "
                                                    "but a dense gradient"));
        CHECK(at(d, 0) == d_after_one && cg_optimizer_param_steps(sgd, 0) == 1);
        GIVE_GRADS(first_dense);
        CHECK_OK(cg_optimizer_step(sgd)); /* buffer 0.9 * 1 + 1 */
        CHECK_CLOSE(at(d, 0), d_after_one - 0.5 * 1.9, 1e-15);
        cg_optimizer_free(sgd);
        sgd = NULL;
        double back[3] = {1, 2, 3};
        cg_tensor *fresh = cgt_f64(1, &ds, back);
        CHECK_OK(cg_tensor_set_data(d, fresh));
        cg_tensor_free(fresh);
    }
#undef GIVE_GRADS
    cg_optimizer_free(adam);
    cg_optimizer_free(rms);
    cg_tensor *fr[] = {d, w, ind, gd, gw};
    for (int k = 0; k < 5; ++k) cg_tensor_free(fr[k]);
}

static cg_status emb_fn(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    (void)n;
    cg_tensor *o = NULL, *q = NULL;
    cg_status st = cg_embedding_sparse(in[0], (cg_tensor *)ctx, -1, &o);
    if (!st) st = cg_mul(o, o, &q);
    cg_tensor_free(o);
    *out = q;
    return st;
}

static void test_gradcheck_sparse_embedding(void) {
    int64_t ws[2] = {4, 3}, idx[5] = {3, 0, 3, 3, 1};
    cg_tensor *w = cgt_randn64(2, ws), *ind = i64(5, idx);
    CHECK_OK(cg_gradcheck(emb_fn, ind, 1, &w, 1e-6, 1e-7, 1e-5));
    cg_tensor_free(w);
    cg_tensor_free(ind);
}

static void test_sparse_linear(void) {
    int64_t xs[2] = {2, 4}, vs[1] = {5}, bs[1] = {3};
    double xv[8] = {1, 2, 3, 4, -1, 0.5, 2, 0}, vv[5] = {0.1, 0.2, 0.3, 0.4, 0.5};
    double bv[3] = {1, 2, 3};
    cg_tensor *x = cgt_f64(2, xs, xv), *v = cgt_f64(1, vs, vv), *b = cgt_f64(1, bs, bv);
    cg_tensor *ip = i64(4, IP), *col = i64(5, COL), *y = NULL;
    CHECK_OK(cg_sparse_linear(x, ip, col, v, b, 3, &y));
    /* W = [[.1 0 0 .2], [0 0 0 0], [0 .3 .4 .5]] */
    CHECK_CLOSE(at(y, 0), 1 + 0.1 * 1 + 0.2 * 4, 1e-15);
    CHECK_CLOSE(at(y, 1), 2, 0);
    CHECK_CLOSE(at(y, 2), 3 + 0.3 * 2 + 0.4 * 3 + 0.5 * 4, 1e-15);
    CHECK_CLOSE(at(y, 5), 3 + 0.3 * 0.5 + 0.4 * 2, 1e-15);
    cg_tensor *ins[3] = {cgt_randn64(2, xs), cgt_randn64(1, vs), cgt_randn64(1, bs)};
    CHECK_OK(cg_gradcheck(sl_fn, NULL, 3, ins, 1e-6, 1e-7, 1e-5));
    int64_t badcol[5] = {0, 4, 1, 2, 3}, badip[4] = {0, 3, 2, 5};
    cg_tensor *bc = i64(5, badcol), *bi = i64(4, badip), *r = NULL;
    CHECK_STATUS(cg_sparse_linear(x, ip, bc, v, b, 3, &r), CG_ERR_INDEX);
    CHECK_STATUS(cg_sparse_linear(x, bi, col, v, b, 3, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_sparse_linear(x, ip, col, v, b, 2, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_sparse_linear(x, ip, col, b, b, 3, &r), CG_ERR_VALUE);
    CHECK_STATUS(cg_sparse_linear(x, ip, col, v, v, 3, &r), CG_ERR_VALUE);
    CHECK(r == NULL);
    cg_tensor *fr[] = {x, v, b, ip, col, y, ins[0], ins[1], ins[2], bc, bi};
    for (int k = 0; k < 11; ++k) cg_tensor_free(fr[k]);
}

int main(void) {
    test_build_coalesce_densify();
    test_errors();
    test_embedding_sparse_backward_vs_dense();
    test_sparse_optimizers_and_clip();
    test_gradcheck_sparse_embedding();
    test_optimizer_object();
    test_refused_step_moves_nothing();
    test_sparse_linear();
    return cgt_report("test_sparse");
}
