/* optim.c -- fused in-place optimizer updates (SGD, Adam/AdamW, RMSprop,
 * Adagrad). Each update is one pass over the parameter, its gradient and its
 * state buffers, where PyTorch's single-tensor step makes one pass per
 * tensor op. Per element the operations and their order are PyTorch's
 * (torch/optim/<name>.py, _single_tensor_<name>), computed in the tensors' dtype with
 * the scalars rounded to it, so the two libraries follow the same
 * trajectory to float rounding. */
/* Vectorisation options for the row loops: see the note in ops_binary.c. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif
#include "cg_internal.h"

/* ---------------------------------------------------------------- checks */
/* t must be a contiguous float tensor with ref's shape and dtype (ref == t
 * checks t alone). */
static cg_status check_operand(const char *fn, const char *name, const cg_tensor *t,
                               const cg_tensor *ref) {
    if (!t) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", fn, name);
    if (!cg__is_float(t->dtype))
        return cg__err(CG_ERR_DTYPE, "%s: '%s' must be float32 or float64, got %s", fn, name,
                       cg_dtype_name(t->dtype));
    if (t->dtype != ref->dtype)
        return cg__err(CG_ERR_DTYPE, "%s: '%s' has dtype %s but the parameter has dtype %s", fn,
                       name, cg_dtype_name(t->dtype), cg_dtype_name(ref->dtype));
    if (!cg__same_shape(t, ref)) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        return cg__err(CG_ERR_SHAPE, "%s: '%s' has shape %s but the parameter has shape %s", fn,
                       name, cg__shape_str(t->ndim, t->shape, b1, sizeof b1),
                       cg__shape_str(ref->ndim, ref->shape, b2, sizeof b2));
    }
    if (!cg__is_contig(t))
        return cg__err(CG_ERR_VALUE, "%s: '%s' is not contiguous; the fused update needs "
                                     "contiguous tensors (call contiguous() first)",
                       fn, name);
    return CG_OK;
}

/* Written tensors must not share memory: the loop reads and writes each
 * element once, and two buffers in one block would step on each other. */
static cg_status check_distinct(const char *fn, int n, cg_tensor *const *ts,
                                const char *const *names) {
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j)
            if (ts[i] && ts[j] && ts[i]->storage == ts[j]->storage)
                return cg__err(CG_ERR_VALUE, "%s: '%s' and '%s' share memory; each state "
                                             "buffer needs its own storage",
                               fn, names[i], names[j]);
    return CG_OK;
}

#define CHECK_GE0(fn, field, v)                                                             \
    do {                                                                                    \
        if (!((v) >= 0.0))                                                                  \
            return cg__err(CG_ERR_VALUE, "%s: invalid %s value: %g (must be >= 0)", fn,     \
                           field, (double)(v));                                             \
    } while (0)
#define CHECK_BETA(fn, field, v)                                                            \
    do {                                                                                    \
        if (!((v) >= 0.0 && (v) < 1.0))                                                     \
            return cg__err(CG_ERR_VALUE, "%s: invalid %s value: %g (must be in [0, 1))",    \
                           fn, field, (double)(v));                                         \
    } while (0)

static void bump(cg_tensor *t) {
    if (t) ++t->storage->version;
}

/* PyTorch's lerp (ATen lerp.h): a weight below 0.5 interpolates from the
 * start, a larger one from the end, for accuracy near both ends. */
/* sqrtf for float: correctly rounded like PyTorch's, and it vectorises. */
#define SQRT_float sqrtf
#define SQRT_double sqrt

#define LERP(T, s, e, w) ((w) < (T)0.5 ? (s) + (w) * ((e) - (s)) : (e) - ((e) - (s)) * ((T)1 - (w)))

/* ------------------------------------------------------------------- SGD */
#define SGD_KERNEL(NAME, T)                                                                 \
    static void NAME(int64_t n, T *restrict p, const T *restrict gr, T *restrict buf,       \
                     int init, const cg_sgd_options *o) {                                   \
        const T lr_neg = (T)(-o->lr), wd = (T)o->weight_decay, mom = (T)o->momentum;       \
        const T damp1 = (T)(1.0 - o->dampening);                                            \
        const int use_wd = o->weight_decay != 0.0, maximize = o->maximize;                  \
        const int use_mom = o->momentum != 0.0, nesterov = o->nesterov;                     \
        for (int64_t i = 0; i < n; ++i) {                                                   \
            T g = maximize ? -gr[i] : gr[i];                                                \
            if (use_wd) g = g + wd * p[i];                                                  \
            if (use_mom) {                                                                  \
                const T b = init ? g : buf[i] * mom + damp1 * g;                            \
                buf[i] = b;                                                                 \
                g = nesterov ? g + mom * b : b;                                             \
            }                                                                               \
            p[i] = p[i] + lr_neg * g;                                                       \
        }                                                                                   \
    }
SGD_KERNEL(sgd_f32, float)
SGD_KERNEL(sgd_f64, double)

cg_sgd_options cg_sgd_default_options(void) {
    cg_sgd_options o = {1e-3, 0.0, 0.0, 0.0, 0, 0};
    return o;
}

cg_status cg_sgd_update(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_buffer,
                        int init_buffer, const cg_sgd_options *o) {
    static const char *fn = "cg_sgd_update";
    CG_CHECK_T(param);
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_operand(fn, "param", param, param));
    CG_TRY(check_operand(fn, "grad", grad, param));
    CHECK_GE0(fn, "learning rate", o->lr);
    CHECK_GE0(fn, "momentum", o->momentum);
    CHECK_GE0(fn, "weight_decay", o->weight_decay);
    if (!isfinite(o->dampening))
        return cg__err(CG_ERR_VALUE, "%s: invalid dampening value: %g", fn, o->dampening);
    if (o->nesterov && (o->momentum <= 0.0 || o->dampening != 0.0))
        return cg__err(CG_ERR_VALUE, "%s: Nesterov momentum requires a momentum and zero "
                                     "dampening (momentum %g, dampening %g)",
                       fn, o->momentum, o->dampening);
    if (o->momentum != 0.0) {
        CG_TRY(check_operand(fn, "momentum_buffer", momentum_buffer, param));
        cg_tensor *w[2] = {param, momentum_buffer};
        const char *names[2] = {"param", "momentum_buffer"};
        CG_TRY(check_distinct(fn, 2, w, names));
    } else {
        momentum_buffer = NULL;
    }
    const int64_t n = param->numel;
    if (param->dtype == CG_FLOAT32)
        sgd_f32(n, cg__ptr(param), cg__ptr(grad),
                momentum_buffer ? cg__ptr(momentum_buffer) : NULL, init_buffer, o);
    else
        sgd_f64(n, cg__ptr(param), cg__ptr(grad),
                momentum_buffer ? cg__ptr(momentum_buffer) : NULL, init_buffer, o);
    bump(param);
    bump(momentum_buffer);
    return CG_OK;
}

/* ------------------------------------------------------------ Adam/AdamW */
/* Scalars computed in double as PyTorch computes them in Python, then
 * rounded to T where PyTorch hands them to a kernel. */
typedef struct adam_scalars {
    double wd_factor;  /* 1 - lr * weight_decay (AdamW) */
    double bc2_sqrt;   /* sqrt(1 - beta2^step) */
    double step_size;  /* lr / (1 - beta1^step) */
} adam_scalars;

#define ADAM_KERNEL(NAME, T)                                                                \
    static void NAME(int64_t n, T *restrict p, const T *restrict gr, T *restrict m,         \
                     T *restrict v, T *restrict vmax, const cg_adam_options *o,             \
                     const adam_scalars *s) {                                               \
        const T wd = (T)o->weight_decay, wd_factor = (T)s->wd_factor;                       \
        const T w1 = (T)(1.0 - o->beta1), b2 = (T)o->beta2, c2 = (T)(1.0 - o->beta2);      \
        const T bc2_sqrt = (T)s->bc2_sqrt, eps = (T)o->eps, neg_step = (T)(-s->step_size); \
        const int use_wd = o->weight_decay != 0.0, decoupled = o->decoupled_weight_decay;   \
        const int maximize = o->maximize;                                                   \
        for (int64_t i = 0; i < n; ++i) {                                                   \
            T g = maximize ? -gr[i] : gr[i];                                                \
            T x = p[i];                                                                     \
            if (use_wd) {                                                                   \
                if (decoupled)                                                              \
                    x = x * wd_factor;                                                      \
                else                                                                        \
                    g = g + wd * x;                                                         \
            }                                                                               \
            const T mi = LERP(T, m[i], g, w1);                                              \
            const T vi = v[i] * b2 + c2 * g * g;                                            \
            m[i] = mi;                                                                      \
            v[i] = vi;                                                                      \
            T vd = vi;                                                                      \
            if (vmax) {                                                                     \
                /* torch.maximum: NaN wins */                                               \
                const T vm = vmax[i];                                                       \
                vd = (vm != vm || vm > vi) ? vm : vi;                                       \
                vmax[i] = vd;                                                               \
            }                                                                               \
            const T denom = SQRT_##T(vd) / bc2_sqrt + eps;                                   \
            p[i] = x + neg_step * mi / denom;                                               \
        }                                                                                   \
    }
ADAM_KERNEL(adam_f32, float)
ADAM_KERNEL(adam_f64, double)

cg_adam_options cg_adam_default_options(void) {
    cg_adam_options o = {1e-3, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0};
    return o;
}

cg_adam_options cg_adamw_default_options(void) {
    cg_adam_options o = cg_adam_default_options();
    o.weight_decay = 1e-2;
    o.decoupled_weight_decay = 1;
    return o;
}

cg_status cg_adam_update(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                         cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq, int64_t step,
                         const cg_adam_options *o) {
    static const char *fn = "cg_adam_update";
    CG_CHECK_T(param);
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_operand(fn, "param", param, param));
    CG_TRY(check_operand(fn, "grad", grad, param));
    CG_TRY(check_operand(fn, "exp_avg", exp_avg, param));
    CG_TRY(check_operand(fn, "exp_avg_sq", exp_avg_sq, param));
    if (o->amsgrad)
        CG_TRY(check_operand(fn, "max_exp_avg_sq", max_exp_avg_sq, param));
    else
        max_exp_avg_sq = NULL;
    cg_tensor *w[4] = {param, exp_avg, exp_avg_sq, max_exp_avg_sq};
    const char *names[4] = {"param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    CG_TRY(check_distinct(fn, 4, w, names));
    CHECK_GE0(fn, "learning rate", o->lr);
    CHECK_GE0(fn, "epsilon", o->eps);
    CHECK_BETA(fn, "beta1", o->beta1);
    CHECK_BETA(fn, "beta2", o->beta2);
    CHECK_GE0(fn, "weight_decay", o->weight_decay);
    if (step < 1)
        return cg__err(CG_ERR_VALUE, "%s: step must be >= 1 (the count including this step), got %lld",
                       fn, (long long)step);
    adam_scalars s;
    s.wd_factor = 1.0 - o->lr * o->weight_decay;
    s.step_size = o->lr / (1.0 - pow(o->beta1, (double)step));
    s.bc2_sqrt = pow(1.0 - pow(o->beta2, (double)step), 0.5);
    const int64_t n = param->numel;
    void *vmax = max_exp_avg_sq ? cg__ptr(max_exp_avg_sq) : NULL;
    if (param->dtype == CG_FLOAT32)
        adam_f32(n, cg__ptr(param), cg__ptr(grad), cg__ptr(exp_avg), cg__ptr(exp_avg_sq), vmax,
                 o, &s);
    else
        adam_f64(n, cg__ptr(param), cg__ptr(grad), cg__ptr(exp_avg), cg__ptr(exp_avg_sq), vmax,
                 o, &s);
    for (int i = 0; i < 4; ++i) bump(w[i]);
    return CG_OK;
}

/* --------------------------------------------------------------- RMSprop */
#define RMSPROP_KERNEL(NAME, T)                                                             \
    static void NAME(int64_t n, T *restrict p, const T *restrict gr, T *restrict sq,        \
                     T *restrict ga, T *restrict buf, const cg_rmsprop_options *o) {        \
        const T wd = (T)o->weight_decay, alpha = (T)o->alpha, c = (T)(1.0 - o->alpha);     \
        const T eps = (T)o->eps, mom = (T)o->momentum, lr_neg = (T)(-o->lr);               \
        const int use_wd = o->weight_decay != 0.0, maximize = o->maximize;                  \
        const int use_mom = o->momentum > 0.0;                                              \
        for (int64_t i = 0; i < n; ++i) {                                                   \
            T g = maximize ? -gr[i] : gr[i];                                                \
            if (use_wd) g = g + wd * p[i];                                                  \
            const T si = sq[i] * alpha + c * g * g;                                         \
            sq[i] = si;                                                                     \
            T avg;                                                                          \
            if (ga) {                                                                       \
                const T gi = LERP(T, ga[i], g, c);                                          \
                ga[i] = gi;                                                                 \
                avg = SQRT_##T(si + (T)(-1) * gi * gi);                                      \
            } else {                                                                        \
                avg = SQRT_##T(si);                                                          \
            }                                                                               \
            avg = avg + eps;                                                                \
            if (use_mom) {                                                                  \
                const T b = buf[i] * mom + g / avg;                                         \
                buf[i] = b;                                                                 \
                p[i] = p[i] + lr_neg * b;                                                   \
            } else {                                                                        \
                p[i] = p[i] + lr_neg * g / avg;                                             \
            }                                                                               \
        }                                                                                   \
    }
RMSPROP_KERNEL(rmsprop_f32, float)
RMSPROP_KERNEL(rmsprop_f64, double)

cg_rmsprop_options cg_rmsprop_default_options(void) {
    cg_rmsprop_options o = {1e-2, 0.99, 1e-8, 0.0, 0.0, 0, 0};
    return o;
}

cg_status cg_rmsprop_update(cg_tensor *param, cg_tensor *grad, cg_tensor *square_avg,
                            cg_tensor *grad_avg, cg_tensor *momentum_buffer,
                            const cg_rmsprop_options *o) {
    static const char *fn = "cg_rmsprop_update";
    CG_CHECK_T(param);
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_operand(fn, "param", param, param));
    CG_TRY(check_operand(fn, "grad", grad, param));
    CG_TRY(check_operand(fn, "square_avg", square_avg, param));
    CHECK_GE0(fn, "learning rate", o->lr);
    CHECK_GE0(fn, "epsilon", o->eps);
    CHECK_GE0(fn, "momentum", o->momentum);
    CHECK_GE0(fn, "weight_decay", o->weight_decay);
    CHECK_GE0(fn, "alpha", o->alpha);
    if (o->centered)
        CG_TRY(check_operand(fn, "grad_avg", grad_avg, param));
    else
        grad_avg = NULL;
    if (o->momentum > 0.0)
        CG_TRY(check_operand(fn, "momentum_buffer", momentum_buffer, param));
    else
        momentum_buffer = NULL;
    cg_tensor *w[4] = {param, square_avg, grad_avg, momentum_buffer};
    const char *names[4] = {"param", "square_avg", "grad_avg", "momentum_buffer"};
    CG_TRY(check_distinct(fn, 4, w, names));
    const int64_t n = param->numel;
    void *ga = grad_avg ? cg__ptr(grad_avg) : NULL;
    void *buf = momentum_buffer ? cg__ptr(momentum_buffer) : NULL;
    if (param->dtype == CG_FLOAT32)
        rmsprop_f32(n, cg__ptr(param), cg__ptr(grad), cg__ptr(square_avg), ga, buf, o);
    else
        rmsprop_f64(n, cg__ptr(param), cg__ptr(grad), cg__ptr(square_avg), ga, buf, o);
    for (int i = 0; i < 4; ++i) bump(w[i]);
    return CG_OK;
}

/* --------------------------------------------------------------- Adagrad */
#define ADAGRAD_KERNEL(NAME, T)                                                             \
    static void NAME(int64_t n, T *restrict p, const T *restrict gr, T *restrict sum,       \
                     double clr, const cg_adagrad_options *o) {                             \
        const T wd = (T)o->weight_decay, eps = (T)o->eps, clr_neg = (T)(-clr);             \
        const int use_wd = o->weight_decay != 0.0, maximize = o->maximize;                  \
        for (int64_t i = 0; i < n; ++i) {                                                   \
            T g = maximize ? -gr[i] : gr[i];                                                \
            if (use_wd) g = g + wd * p[i];                                                  \
            const T si = sum[i] + g * g;                                                    \
            sum[i] = si;                                                                    \
            const T std = SQRT_##T(si) + eps;                                                \
            p[i] = p[i] + clr_neg * g / std;                                                \
        }                                                                                   \
    }
ADAGRAD_KERNEL(adagrad_f32, float)
ADAGRAD_KERNEL(adagrad_f64, double)

cg_adagrad_options cg_adagrad_default_options(void) {
    cg_adagrad_options o = {1e-2, 0.0, 0.0, 1e-10, 0.0, 0};
    return o;
}

cg_status cg_adagrad_update(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum,
                            int64_t step, const cg_adagrad_options *o) {
    static const char *fn = "cg_adagrad_update";
    CG_CHECK_T(param);
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_operand(fn, "param", param, param));
    CG_TRY(check_operand(fn, "grad", grad, param));
    CG_TRY(check_operand(fn, "state_sum", state_sum, param));
    cg_tensor *w[2] = {param, state_sum};
    const char *names[2] = {"param", "state_sum"};
    CG_TRY(check_distinct(fn, 2, w, names));
    CHECK_GE0(fn, "learning rate", o->lr);
    CHECK_GE0(fn, "lr_decay", o->lr_decay);
    CHECK_GE0(fn, "weight_decay", o->weight_decay);
    CHECK_GE0(fn, "epsilon", o->eps);
    CHECK_GE0(fn, "initial_accumulator_value", o->initial_accumulator_value);
    if (step < 1)
        return cg__err(CG_ERR_VALUE, "%s: step must be >= 1 (the count including this step), got %lld",
                       fn, (long long)step);
    const double clr = o->lr / (1.0 + (double)(step - 1) * o->lr_decay);
    const int64_t n = param->numel;
    if (param->dtype == CG_FLOAT32)
        adagrad_f32(n, cg__ptr(param), cg__ptr(grad), cg__ptr(state_sum), clr, o);
    else
        adagrad_f64(n, cg__ptr(param), cg__ptr(grad), cg__ptr(state_sum), clr, o);
    bump(param);
    bump(state_sum);
    return CG_OK;
}
