/* optim_sparse.c -- optimizer updates for row-sparse gradients: SGD (with
 * PyTorch's sparse momentum buffer) and SparseAdam. Each loop visits the
 * gradient's rows (and the momentum buffer's) only, so a step on a
 * million-row embedding that a batch touched in 100 rows costs 100 rows.
 * Per element the operations are torch.optim's for sparse gradients, in the
 * tensors' dtype with the scalars rounded to it. */
#include "cg_internal.h"
#include "cg_optim.h"
#include "optim_device.h"

/* On a backend device every tensor of an update lives there (the parts of
 * the row-sparse ones too) and the row loop is one kernel per call
 * (docs/backend.md, "Sparse"); the checks, the coalescing and the sizing
 * of the new momentum buffer stay here. */

static int64_t row_len(const cg_tensor *t) {
    int64_t r = 1;
    for (int d = 1; d < t->ndim; ++d) r *= t->shape[d];
    return r;
}

static cg_status check_dense(const char *fn, const char *name, const cg_tensor *t,
                             const cg_tensor *ref) {
    if (!t) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", fn, name);
    if (t->layout) return cg__err(CG_ERR_VALUE, "%s: '%s' must be dense, got a row-sparse tensor", fn, name);
    if (!cg__float_here(t) || t->dtype != ref->dtype)
        return cg__err(CG_ERR_DTYPE, "%s: '%s' has dtype %s; the parameter's dtype (float32/float64) "
                                     "%s is needed", fn, name, cg_dtype_name(t->dtype), cg_dtype_name(ref->dtype));
    if (!cg__same_shape(t, ref)) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        return cg__err(CG_ERR_SHAPE, "%s: '%s' has shape %s but the parameter has shape %s", fn, name,
                       cg__shape_str(t->ndim, t->shape, b1, sizeof b1),
                       cg__shape_str(ref->ndim, ref->shape, b2, sizeof b2));
    }
    if (!cg__is_contig(t))
        return cg__err(CG_ERR_VALUE, "%s: '%s' is not contiguous (call contiguous() first)", fn, name);
    return CG_OK;
}

static cg_status check_sparse(const char *fn, const char *name, const cg_tensor *t,
                              const cg_tensor *ref) {
    if (!t) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", fn, name);
    if (!t->layout)
        return cg__err(CG_ERR_VALUE, "%s: '%s' must be a row-sparse tensor, got a dense one", fn, name);
    if (t->dtype != ref->dtype || !cg__same_shape(t, ref)) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        return cg__err(CG_ERR_SHAPE, "%s: '%s' (%s %s) does not match the parameter (%s %s)", fn, name,
                       cg__shape_str(t->ndim, t->shape, b1, sizeof b1), cg_dtype_name(t->dtype),
                       cg__shape_str(ref->ndim, ref->shape, b2, sizeof b2), cg_dtype_name(ref->dtype));
    }
    return CG_OK;
}

/* ------------------------------------------------------------------- SGD */
/* Merge of the coalesced gradient rows (gi, gv: n_g) with the coalesced
 * buffer rows (bi, bv: n_b; NULL on the first step) into the new buffer
 * (ui, uv), updating param on every union row. */
#define SGD_SPARSE(NAME, T)                                                                 \
    static int64_t NAME(T *restrict p, int64_t R, const int64_t *gi, const T *gv,           \
                        int64_t n_g, const int64_t *bi, const T *bv, int64_t n_b,           \
                        int64_t *ui, T *uv, const cg_sgd_options *o) {                      \
        const T lr_neg = (T)(-o->lr), wd = (T)o->weight_decay, mom = (T)o->momentum;       \
        const T damp1 = (T)(1.0 - o->dampening);                                            \
        const int use_mom = o->momentum != 0.0, first = bi == NULL;                         \
        int64_t a = 0, b = 0, u = 0;                                                        \
        while (a < n_g || (use_mom && b < n_b)) {                                           \
            int has_g = a < n_g, has_b = use_mom && !first && b < n_b;                      \
            int64_t row;                                                                    \
            if (has_g && has_b) {                                                           \
                if (gi[a] < bi[b]) has_b = 0;                                               \
                else if (bi[b] < gi[a]) has_g = 0;                                          \
            }                                                                               \
            row = has_g ? gi[a] : bi[b];                                                    \
            T *pr = p + row * R;                                                            \
            const T *gr = has_g ? gv + a * R : NULL;                                        \
            const T *br = has_b ? bv + b * R : NULL;                                        \
            T *ur = use_mom ? uv + u * R : NULL;                                            \
            for (int64_t j = 0; j < R; ++j) {                                               \
                T g = 0;                                                                    \
                if (has_g) {                                                                \
                    g = o->maximize ? -gr[j] : gr[j];                                       \
                    if (o->weight_decay != 0.0) g = g + wd * pr[j];                         \
                }                                                                           \
                T upd = g;                                                                  \
                if (use_mom) {                                                              \
                    T buf;                                                                  \
                    if (first) buf = g;                                                     \
                    else if (has_b && has_g) buf = br[j] * mom + damp1 * g;                 \
                    else if (has_b) buf = br[j] * mom;                                      \
                    else buf = damp1 * g;                                                   \
                    ur[j] = buf;                                                            \
                    upd = o->nesterov ? g + mom * buf : buf;                                \
                }                                                                           \
                pr[j] = pr[j] + lr_neg * upd;                                               \
            }                                                                               \
            if (use_mom) ui[u++] = row;                                                     \
            a += has_g;                                                                     \
            b += has_b;                                                                     \
        }                                                                                   \
        return u;                                                                           \
    }
SGD_SPARSE(sgd_sparse_f32, float)
SGD_SPARSE(sgd_sparse_f64, double)

cg_status cg_sgd_sparse_update(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_in,
                               const cg_sgd_options *o, cg_tensor **momentum_out) {
    static const char *fn = "cg_sgd_sparse_update";
    if (momentum_out) *momentum_out = NULL;
    CG_CHECK_TD(param);
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_dense(fn, "param", param, param));
    CG_TRY(check_sparse(fn, "grad", grad, param));
    CG_TRY(cg__check_sgd_options(fn, o));
    int dev;
    cg_tensor *all[3] = {param, grad, momentum_in};
    static const char *const names[3] = {"param", "grad", "momentum_in"};
    CG_TRY(cg__train_same_device(fn, 3, all, names, &dev));
    const int use_mom = o->momentum != 0.0;
    if (use_mom) {
        if (!momentum_out) return cg__err(CG_ERR_NULL, "%s: momentum_out is NULL (momentum %g)", fn, o->momentum);
        if (momentum_in) {
            CG_TRY(check_sparse(fn, "momentum_in", momentum_in, param));
            if (!momentum_in->sp_coalesced)
                return cg__err(CG_ERR_VALUE, "%s: momentum_in must be coalesced (the buffer a previous "
                                             "call returned)", fn);
        }
    }
    cg_tensor *gc = NULL, *ui = NULL, *uv = NULL;
    CG_TRY(cg__sparse_coalesced(grad, &gc));
    const int64_t R = row_len(param), n_g = gc->sp_indices->numel;
    const int64_t n_b = (use_mom && momentum_in) ? momentum_in->sp_indices->numel : 0;
    int64_t cap = use_mom ? n_g + n_b : 0;
    int64_t vshape[CG_MAX_DIMS];
    memcpy(vshape, param->shape, sizeof vshape);
    vshape[0] = cap;
    cg_status st = cg__new_on(dev, CG_INT64, 1, &cap, 0, &ui);
    if (!st) st = cg__new_on(dev, param->dtype, param->ndim, vshape, 0, &uv);
    if (st) goto done;
    /* The momentum buffer is made before param is written, over the union's
     * cap rows, and trimmed to its u rows after: a failure leaves param as
     * it was (the step is whole or not at all). Its parts are the prefix of
     * ui and uv (views, contiguous either way). */
    cg_tensor *mom = NULL, *ti = NULL, *tv = NULL;
    if (use_mom) {
        int64_t ist[1] = {1}, vst[CG_MAX_DIMS];
        cg__contig_strides(param->ndim, vshape, vst);
        st = cg__view(ui, 1, &cap, ist, 0, &ti);
        if (!st) st = cg__view(uv, param->ndim, vshape, vst, 0, &tv);
        if (!st) st = cg__sparse_make(ti, tv, param->shape[0], 1, &mom);
        cg_tensor_free(ti); /* mom holds them */
        cg_tensor_free(tv);
        if (st) goto done;
    }
    int64_t u = 0;
    if (dev) {
        const int has_b = use_mom && momentum_in;
        cg_tensor *ts[7] = {param, ui, uv, gc->sp_indices, gc->sp_values,
                            has_b ? momentum_in->sp_indices : NULL, has_b ? momentum_in->sp_values : NULL};
        const double f[4] = {o->lr, o->momentum, o->dampening, o->weight_decay};
        const int64_t iv[2] = {o->maximize, o->nesterov}, one = 1;
        st = cg__kernel_result(dev, "sgd_sparse_update_", 3, has_b ? 4 : 2, ts, 4, f, 2, iv, CG_INT64, 1, &one, &u);
        if (st) {
            cg_tensor_free(mom);
            goto done;
        }
        goto updated;
    }
    const int64_t *gi = (const int64_t *)cg__ptr(gc->sp_indices);
    const int64_t *bi = (use_mom && momentum_in) ? (const int64_t *)cg__ptr(momentum_in->sp_indices) : NULL;
    const void *bv = bi ? cg__ptr(momentum_in->sp_values) : NULL;
    if (param->dtype == CG_FLOAT32)
        u = sgd_sparse_f32((float *)cg__ptr(param), R, gi, (const float *)cg__ptr(gc->sp_values), n_g, bi,
                           (const float *)bv, n_b, (int64_t *)cg__ptr(ui), (float *)cg__ptr(uv), o);
    else
        u = sgd_sparse_f64((double *)cg__ptr(param), R, gi, (const double *)cg__ptr(gc->sp_values), n_g, bi,
                           (const double *)bv, n_b, (int64_t *)cg__ptr(ui), (double *)cg__ptr(uv), o);
updated:
    ++param->storage->version;
    if (use_mom) {
        /* the union has u <= cap rows */
        ti = mom->sp_indices;
        tv = mom->sp_values;
        ti->shape[0] = ti->numel = u;
        tv->shape[0] = u;
        tv->numel = u * R;
        *momentum_out = mom;
    }
done:
    cg_tensor_free(gc);
    cg_tensor_free(ui);
    cg_tensor_free(uv);
    return st;
}

/* ------------------------------------------------------------ SparseAdam */
#define SPARSE_ADAM(NAME, T, SQRT)                                                          \
    static void NAME(T *restrict p, T *restrict m, T *restrict v, int64_t R,                \
                     const int64_t *gi, const T *gv, int64_t n_g, double step_size,        \
                     const cg_adam_options *o) {                                            \
        const T omb1 = (T)(1.0 - o->beta1), omb2 = (T)(1.0 - o->beta2), eps = (T)o->eps;   \
        const T neg_step = (T)(-step_size);                                                 \
        for (int64_t a = 0; a < n_g; ++a) {                                                 \
            const int64_t off = gi[a] * R;                                                  \
            const T *gr = gv + a * R;                                                       \
            for (int64_t j = 0; j < R; ++j) {                                               \
                const T g = o->maximize ? -gr[j] : gr[j];                                   \
                const T m_old = m[off + j], v_old = v[off + j];                            \
                const T u1 = (g - m_old) * omb1;                                            \
                m[off + j] = m_old + u1;                                                    \
                const T u2 = (g * g - v_old) * omb2;                                        \
                v[off + j] = v_old + u2;                                                    \
                const T numer = u1 + m_old;                                                 \
                const T denom = SQRT(u2 + v_old) + eps;                                     \
                p[off + j] = p[off + j] + neg_step * (numer / denom);                       \
            }                                                                               \
        }                                                                                   \
    }
SPARSE_ADAM(sparse_adam_f32, float, sqrtf)
SPARSE_ADAM(sparse_adam_f64, double, sqrt)

cg_status cg_sparse_adam_update(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                                cg_tensor *exp_avg_sq, int64_t step, const cg_adam_options *o) {
    static const char *fn = "cg_sparse_adam_update";
    CG_CHECK_TD(param);
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_dense(fn, "param", param, param));
    CG_TRY(check_sparse(fn, "grad", grad, param));
    CG_TRY(check_dense(fn, "exp_avg", exp_avg, param));
    CG_TRY(check_dense(fn, "exp_avg_sq", exp_avg_sq, param));
    int dev;
    cg_tensor *all[4] = {param, grad, exp_avg, exp_avg_sq};
    static const char *const names[4] = {"param", "grad", "exp_avg", "exp_avg_sq"};
    CG_TRY(cg__train_same_device(fn, 4, all, names, &dev));
    if (exp_avg->storage == param->storage || exp_avg_sq->storage == param->storage ||
        exp_avg->storage == exp_avg_sq->storage)
        return cg__err(CG_ERR_VALUE, "%s: param, exp_avg and exp_avg_sq must not share memory", fn);
    if (o->weight_decay != 0.0 || o->amsgrad || o->decoupled_weight_decay)
        return cg__err(CG_ERR_VALUE, "%s: SparseAdam has no weight_decay/amsgrad (got weight_decay %g, "
                                     "amsgrad %d)", fn, o->weight_decay, o->amsgrad);
    CG_TRY(cg__check_adam_options(fn, o));
    if (step < 1) return cg__err(CG_ERR_VALUE, "%s: step must be >= 1, got %lld", fn, (long long)step);
    cg_tensor *gc;
    CG_TRY(cg__sparse_coalesced(grad, &gc));
    const int64_t R = row_len(param), n_g = gc->sp_indices->numel;
    if (n_g) {
        const double bc1 = 1.0 - pow(o->beta1, (double)step), bc2 = 1.0 - pow(o->beta2, (double)step);
        const double step_size = o->lr * sqrt(bc2) / bc1;
        const int64_t *gi = dev ? NULL : (const int64_t *)cg__ptr(gc->sp_indices);
        cg_status st = CG_OK;
        if (dev) {
            cg_tensor *ts[5] = {param, exp_avg, exp_avg_sq, gc->sp_indices, gc->sp_values};
            const double f[4] = {step_size, o->beta1, o->beta2, o->eps};
            const int64_t iv[1] = {o->maximize};
            st = cg__kernel(dev, "sparse_adam_update_", 3, 5, ts, 4, f, 1, iv);
        } else if (param->dtype == CG_FLOAT32)
            sparse_adam_f32((float *)cg__ptr(param), (float *)cg__ptr(exp_avg), (float *)cg__ptr(exp_avg_sq),
                            R, gi, (const float *)cg__ptr(gc->sp_values), n_g, step_size, o);
        else
            sparse_adam_f64((double *)cg__ptr(param), (double *)cg__ptr(exp_avg),
                            (double *)cg__ptr(exp_avg_sq), R, gi, (const double *)cg__ptr(gc->sp_values),
                            n_g, step_size, o);
        if (st) {
            cg_tensor_free(gc);
            return st;
        }
        ++param->storage->version;
        ++exp_avg->storage->version;
        ++exp_avg_sq->storage->version;
    }
    cg_tensor_free(gc);
    return CG_OK;
}

/* --------------------------------------------------------------- Adagrad */
/* torch.optim.Adagrad's sparse branch: sum += g^2 on the gradient's rows,
 * param += -clr * g / (sqrt(sum) + eps) there. Weight decay (which PyTorch
 * refuses with sparse gradients) is lazy, as for SGD. */
#define ADAGRAD_SPARSE(NAME, T, SQRT)                                                       \
    static void NAME(T *restrict p, T *restrict sum, int64_t R, const int64_t *gi,          \
                     const T *gv, int64_t n_g, double clr, const cg_adagrad_options *o) {   \
        const T wd = (T)o->weight_decay, eps = (T)o->eps, clr_neg = (T)(-clr);             \
        for (int64_t a = 0; a < n_g; ++a) {                                                 \
            const int64_t off = gi[a] * R;                                                  \
            const T *gr = gv + a * R;                                                       \
            for (int64_t j = 0; j < R; ++j) {                                               \
                T g = o->maximize ? -gr[j] : gr[j];                                         \
                if (o->weight_decay != 0.0) g = g + wd * p[off + j];                        \
                const T s = sum[off + j] + g * g;                                           \
                sum[off + j] = s;                                                           \
                p[off + j] = p[off + j] + clr_neg * (g / (SQRT(s) + eps));                  \
            }                                                                               \
        }                                                                                   \
    }
ADAGRAD_SPARSE(adagrad_sparse_f32, float, sqrtf)
ADAGRAD_SPARSE(adagrad_sparse_f64, double, sqrt)

cg_status cg_adagrad_sparse_update(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum,
                                   int64_t step, const cg_adagrad_options *o) {
    static const char *fn = "cg_adagrad_sparse_update";
    CG_CHECK_TD(param);
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_dense(fn, "param", param, param));
    CG_TRY(check_sparse(fn, "grad", grad, param));
    CG_TRY(check_dense(fn, "state_sum", state_sum, param));
    int dev;
    cg_tensor *all[3] = {param, grad, state_sum};
    static const char *const dnames[3] = {"param", "grad", "state_sum"};
    CG_TRY(cg__train_same_device(fn, 3, all, dnames, &dev));
    if (state_sum->storage == param->storage)
        return cg__err(CG_ERR_VALUE, "%s: param and state_sum must not share memory", fn);
    const double opts[5] = {o->lr, o->lr_decay, o->weight_decay, o->eps, o->initial_accumulator_value};
    const char *names[5] = {"learning rate", "lr_decay", "weight_decay", "epsilon",
                            "initial_accumulator_value"};
    for (int k = 0; k < 5; ++k)
        if (!(opts[k] >= 0.0))
            return cg__err(CG_ERR_VALUE, "%s: invalid %s value: %g (must be >= 0)", fn, names[k], opts[k]);
    if (step < 1) return cg__err(CG_ERR_VALUE, "%s: step must be >= 1, got %lld", fn, (long long)step);
    cg_tensor *gc;
    CG_TRY(cg__sparse_coalesced(grad, &gc));
    const int64_t R = row_len(param), n_g = gc->sp_indices->numel;
    const double clr = o->lr / (1.0 + (double)(step - 1) * o->lr_decay);
    if (dev) {
        cg_status st = CG_OK;
        if (n_g) {
            cg_tensor *ts[4] = {param, state_sum, gc->sp_indices, gc->sp_values};
            const double f[3] = {clr, o->weight_decay, o->eps};
            const int64_t iv[1] = {o->maximize};
            st = cg__kernel(dev, "adagrad_sparse_update_", 2, 4, ts, 3, f, 1, iv);
        }
        if (!st && n_g) {
            ++param->storage->version;
            ++state_sum->storage->version;
        }
        cg_tensor_free(gc);
        return st;
    }
    const int64_t *gi = (const int64_t *)cg__ptr(gc->sp_indices);
    if (param->dtype == CG_FLOAT32)
        adagrad_sparse_f32((float *)cg__ptr(param), (float *)cg__ptr(state_sum), R, gi,
                           (const float *)cg__ptr(gc->sp_values), n_g, clr, o);
    else
        adagrad_sparse_f64((double *)cg__ptr(param), (double *)cg__ptr(state_sum), R, gi,
                           (const double *)cg__ptr(gc->sp_values), n_g, clr, o);
    if (n_g) {
        ++param->storage->version;
        ++state_sum->storage->version;
    }
    cg_tensor_free(gc);
    return CG_OK;
}
