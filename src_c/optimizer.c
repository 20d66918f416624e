/* optimizer.c -- cg_optimizer: parameters, their state tensors and the
 * options of one fused update (SGD, Adam/AdamW or RMSprop), for C-only training. */
#include "cg_internal.h"
#include "cg_optim.h"

#include <stdio.h>

typedef enum opt_kind { OPT_SGD, OPT_ADAM, OPT_RMSPROP } opt_kind;

/* State of one parameter. Tensors owned; NULL until its first step. */
typedef struct opt_slot {
    cg_tensor *param;
    cg_tensor *buf[3]; /* SGD: momentum_buffer; Adam: exp_avg, exp_avg_sq, max_exp_avg_sq;
                          RMSprop: square_avg, grad_avg, momentum_buffer */
    int64_t steps;
    unsigned fresh; /* bit k: buf[k] made by this step, not yet used by an update */
    cg_tensor *gc;  /* during a step: the gradient as the fused loops read it (contiguous) */
} opt_slot;

struct cg_optimizer {
    opt_kind kind;
    cg_sgd_options sgd;
    cg_adam_options adam;
    cg_rmsprop_options rmsprop;
    int n;
    opt_slot *slots; /* n entries */
};

static const char *const SGD_NAMES[3] = {"momentum_buffer", NULL, NULL};
static const char *const ADAM_NAMES[3] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
static const char *const RMSPROP_NAMES[3] = {"square_avg", "grad_avg", "momentum_buffer"};

static cg_status opt_new(const char *fn, opt_kind kind, int n, cg_tensor *const *params,
                         cg_optimizer **out) {
    if (!out) return cg__err(CG_ERR_NULL, "%s: out pointer is NULL", fn);  /* fn: the caller's name */
    *out = NULL;
    if (n <= 0) return cg__err(CG_ERR_VALUE, "%s: optimizer got an empty parameter list (n = %d)", fn, n);
    if (!params) return cg__err(CG_ERR_NULL, "%s: params is NULL", fn);
    for (int i = 0; i < n; ++i) {
        const cg_tensor *p = params[i];
        if (!p) return cg__err(CG_ERR_NULL, "%s: parameter %d is NULL", fn, i);
        if (!cg__float_here(p))
            return cg__err(CG_ERR_DTYPE, "%s: parameter %d has dtype %s; float32 or float64 needed",
                           fn, i, cg_dtype_name(p->dtype));
        if (p->grad_fn)
            return cg__err(CG_ERR_VALUE, "%s: can't optimize a non-leaf tensor (parameter %d, made by '%s')",
                           fn, i, cg__node_name(p->grad_fn));
        if (!cg__is_contig(p))
            return cg__err(CG_ERR_VALUE, "%s: parameter %d is not contiguous", fn, i);
        for (int j = 0; j < i; ++j)
            if (params[j] == p)
                return cg__err(CG_ERR_VALUE, "%s: parameter %d is parameter %d again", fn, i, j);
    }
    cg_optimizer *o = calloc(1, sizeof *o);
    opt_slot *slots = calloc((size_t)n, sizeof *slots);
    if (!o || !slots) {
        free(o);
        free(slots);
        return cg__err(CG_ERR_NOMEM, "%s: out of memory for %d parameters", fn, n);
    }
    o->kind = kind;
    o->n = n;
    o->slots = slots;
    for (int i = 0; i < n; ++i) {
        cg_tensor_retain(params[i]);
        slots[i].param = params[i];
    }
    *out = o;
    return CG_OK;
}

cg_status cg_optimizer_new_sgd(int n, cg_tensor *const *params, const cg_sgd_options *options,
                               cg_optimizer **out) {
    static const char *fn = "cg_optimizer_new_sgd";
    if (out) *out = NULL;
    if (!options) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(cg__check_sgd_options(fn, options));
    CG_TRY(opt_new(fn, OPT_SGD, n, params, out));
    (*out)->sgd = *options;
    return CG_OK;
}

/* Adam and AdamW; fn: the public call's name, for messages. */
static cg_status adam_new(const char *fn, int n, cg_tensor *const *params,
                          const cg_adam_options *options, cg_optimizer **out) {
    if (out) *out = NULL;
    if (!options) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(cg__check_adam_options(fn, options));
    CG_TRY(opt_new(fn, OPT_ADAM, n, params, out));
    (*out)->adam = *options;
    return CG_OK;
}

cg_status cg_optimizer_new_adam(int n, cg_tensor *const *params, const cg_adam_options *options,
                                cg_optimizer **out) {
    return adam_new("cg_optimizer_new_adam", n, params, options, out);
}

cg_status cg_optimizer_new_adamw(int n, cg_tensor *const *params, const cg_adam_options *options,
                                 cg_optimizer **out) {
    cg_adam_options o = options ? *options : cg_adamw_default_options();
    o.decoupled_weight_decay = 1;
    return adam_new("cg_optimizer_new_adamw", n, params, &o, out);
}

cg_status cg_optimizer_new_rmsprop(int n, cg_tensor *const *params, const cg_rmsprop_options *options,
                                   cg_optimizer **out) {
    static const char *fn = "cg_optimizer_new_rmsprop";
    if (out) *out = NULL;
    if (!options) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    const cg_rmsprop_options *o = options;
    const char *bad = !(o->lr >= 0.0) ? "learning rate" : !(o->eps >= 0.0) ? "epsilon"
                    : !(o->momentum >= 0.0) ? "momentum" : !(o->weight_decay >= 0.0) ? "weight_decay"
                    : !(o->alpha >= 0.0) ? "alpha" : NULL;
    if (bad) {
        double v = bad[0] == 'l' ? o->lr : bad[0] == 'e' ? o->eps : bad[0] == 'm' ? o->momentum
                 : bad[0] == 'w' ? o->weight_decay : o->alpha;
        return cg__err(CG_ERR_VALUE, "%s: invalid %s value: %g", fn, bad, v);
    }
    CG_TRY(opt_new(fn, OPT_RMSPROP, n, params, out));
    (*out)->rmsprop = *options;
    return CG_OK;
}

/* Zeros shaped like p on p's device (the state a fresh parameter starts
 * with: it lives where the fused update runs). */
static cg_status zeros_like(const cg_tensor *p, cg_tensor **out) {
    return cg_zeros_on(cg__dev(p), p->dtype, p->ndim, p->shape, out);
}

/* Whether the update reads state buffer k (see the *_NAMES). */
static int state_needed(const cg_optimizer *o, int k) {
    switch (o->kind) {
    case OPT_SGD: return k == 0 && o->sgd.momentum != 0.0;
    case OPT_RMSPROP: return k == 0 || (k == 1 && o->rmsprop.centered) ||
                             (k == 2 && o->rmsprop.momentum > 0.0);
    default: return k < 2 || o->adam.amsgrad;
    }
}

/* Frees the buffers made by this step that no update has used, so a failed
 * step leaves the state as it was. */
static void drop_fresh(cg_optimizer *o) {
    for (int i = 0; i < o->n; ++i) {
        opt_slot *s = &o->slots[i];
        for (int k = 0; k < 3; ++k)
            if (s->fresh & (1u << k)) {
                cg_tensor_free(s->buf[k]);
                s->buf[k] = NULL;
            }
        s->fresh = 0;
    }
}

/* One parameter's dense update (its state made by prepare); ms (NULL: the
 * plain calls) measures as the cg_*_update_stats calls do. */
static cg_status step_one(cg_optimizer *o, opt_slot *s, cg_tensor *grad, cg_update_stats *ms) {
    cg_tensor *const *b = s->buf;
    if (o->kind == OPT_SGD) {
        const int first = (s->fresh & 1u) != 0; /* the buffer starts as the gradient */
        CG_TRY(ms ? cg_sgd_update_stats(s->param, grad, b[0], first, &o->sgd, ms)
                  : cg_sgd_update(s->param, grad, b[0], first, &o->sgd, NULL));
    } else if (o->kind == OPT_RMSPROP) {
        CG_TRY(ms ? cg_rmsprop_update_stats(s->param, grad, b[0], b[1], b[2], &o->rmsprop, ms)
                  : cg_rmsprop_update(s->param, grad, b[0], b[1], b[2], &o->rmsprop, NULL));
    } else {
        CG_TRY(ms ? cg_adam_update_stats(s->param, grad, b[0], b[1], b[2], s->steps + 1, &o->adam, ms)
                  : cg_adam_update(s->param, grad, b[0], b[1], b[2], s->steps + 1, &o->adam, NULL));
    }
    s->fresh = 0;
    ++s->steps;
    return CG_OK;
}

/* A row-sparse gradient (Embedding(sparse=True)): SGD keeps a row-sparse
 * momentum buffer as PyTorch's (its layout checked by check_grads). */
static cg_status step_sparse(cg_optimizer *o, opt_slot *s, cg_tensor *grad) {
    cg_tensor *nb = NULL;
    CG_TRY(cg_sgd_sparse_update(s->param, grad, s->buf[0], &o->sgd, &nb));
    if (nb) {
        cg_tensor_free(s->buf[0]);
        s->buf[0] = nb;
    }
    ++s->steps;
    return CG_OK;
}

/* Every gradient's layout against the update it goes to, before any
 * parameter moves, so a step refused for one parameter has moved none:
 * Adam and RMSprop refuse a row-sparse gradient (as PyTorch's), and SGD's
 * momentum buffer keeps the layout of the gradient it was made from. */
static cg_status check_grads(const char *fn, const cg_optimizer *o) {
    for (int i = 0; i < o->n; ++i) {
        const opt_slot *s = &o->slots[i];
        const cg_tensor *g = s->param->grad;
        if (!g) continue;
        const int sparse = cg_tensor_is_sparse(g);
        if (sparse && o->kind != OPT_SGD)
            return cg__err(CG_ERR_UNSUPPORTED, "%s: parameter %d has a row-sparse gradient; %s does "
                                               "not support sparse gradients (use "
                                               "cg_sparse_adam_update)", fn, i,
                           o->kind == OPT_ADAM ? "Adam" : "RMSprop");
        if (o->kind == OPT_SGD && s->buf[0] && cg_tensor_is_sparse(s->buf[0]) != sparse)
            return cg__err(CG_ERR_VALUE, "%s: parameter %d has a %s momentum buffer but a %s "
                                         "gradient; keep one gradient layout per parameter",
                           fn, i, sparse ? "dense" : "row-sparse", sparse ? "row-sparse" : "dense");
    }
    return CG_OK;
}

/* The update's own checks of parameter i's operands (its state, its
 * gradient as the loop reads it), the index added to the message: they
 * fail when the parameter was replaced (cg_tensor_set_data) by one of
 * another shape, dtype or device, or by a view of its own gradient. */
static cg_status check_operands(const char *fn, const cg_optimizer *o, const opt_slot *s, int i) {
    cg_tensor *const *b = s->buf;
    cg_status st = o->kind == OPT_SGD ? cg__sgd_check(fn, s->param, s->gc, b[0], &o->sgd)
                 : o->kind == OPT_RMSPROP
                     ? cg__rmsprop_check(fn, s->param, s->gc, b[0], b[1], b[2], &o->rmsprop)
                     : cg__adam_check(fn, s->param, s->gc, b[0], b[1], b[2], &o->adam);
    if (!st) return CG_OK;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", cg_last_error());
    return cg__err(st, "%s (parameter %d)", msg, i);
}

/* Drops the step's gradient references (the contiguous copies). */
static void drop_grads(cg_optimizer *o) {
    for (int i = 0; i < o->n; ++i) {
        cg_tensor_free(o->slots[i].gc);
        o->slots[i].gc = NULL;
    }
}

/* Everything a step can fail on before it writes, for every parameter
 * before the first moves: the gradients' layouts (check_grads), the state
 * buffers a fresh parameter starts with (zeros on its device) and the
 * dense gradients as the fused loops read them (contiguous, in slot gc).
 * On failure nothing made here is kept. */
static cg_status prepare(const char *fn, cg_optimizer *o) {
    CG_TRY(check_grads(fn, o));
    cg_status st = CG_OK;
    for (int i = 0; !st && i < o->n; ++i) {
        opt_slot *s = &o->slots[i];
        cg_tensor *g = s->param->grad;
        if (!g || g->layout) continue;
        for (int k = 0; !st && k < 3; ++k)
            if (state_needed(o, k) && !s->buf[k]) {
                st = zeros_like(s->param, &s->buf[k]);
                if (!st) s->fresh |= 1u << k;
            }
        if (!st) st = cg__contig(g, &s->gc);
        if (!st) st = check_operands(fn, o, s, i);
    }
    if (st) {
        drop_fresh(o);
        drop_grads(o);
    }
    return st;
}

/* The step of cg_optimizer_step / _step_stats (stats: NULL or n entries). */
static cg_status optimizer_step(const char *fn, cg_optimizer *opt, cg_update_stats *stats) {
    if (!opt) return cg__err(CG_ERR_NULL, "%s: optimizer is NULL", fn);
    if (stats)
        for (int i = 0; i < opt->n; ++i)
            if (stats[i].what & ~(CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE))
                return cg__err(CG_ERR_VALUE, "%s: stats[%d].what = %d has bits other than "
                                             "CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | "
                                             "CG_MEASURE_UPDATE", fn, i, stats[i].what);
    cg_status st = prepare(fn, opt);
    for (int i = 0; !st && i < opt->n; ++i) {
        opt_slot *s = &opt->slots[i];
        cg_tensor *g = s->param->grad;
        cg_update_stats *ms = stats ? &stats[i] : NULL, local;
        if (ms) {
            memset(&local, 0, sizeof local);
            local.what = ms->what;
        }
        if (!g || g->layout) {
            /* not updated (update 0), or a row-sparse update, which does
             * not measure: unknown (NAN) */
            if (ms && (ms->what & CG_MEASURE_GRAD) && g) st = cg_tensor_stats(g, &local.grad);
            if (!st && ms && (ms->what & CG_MEASURE_WEIGHT)) st = cg_tensor_stats(s->param, &local.weight);
            if (ms && (ms->what & CG_MEASURE_UPDATE)) local.update_sum_sq = g ? NAN : 0.0;
            if (!st && g) st = step_sparse(opt, s, g);
        } else {
            st = step_one(opt, s, s->gc, ms ? &local : NULL);
        }
        if (!st && ms) *ms = local;
    }
    if (st) drop_fresh(opt); /* the buffers of the parameters not reached */
    drop_grads(opt);
    return st;
}

cg_status cg_optimizer_step(cg_optimizer *opt) {
    return optimizer_step("cg_optimizer_step", opt, NULL);
}

cg_status cg_optimizer_step_stats(cg_optimizer *opt, cg_update_stats *stats) {
    if (!stats) return cg__err(CG_ERR_NULL, "cg_optimizer_step_stats: stats is NULL");
    return optimizer_step("cg_optimizer_step_stats", opt, stats);
}

void cg_optimizer_zero_grad(cg_optimizer *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n; ++i) cg_tensor_set_grad(opt->slots[i].param, NULL);
}

cg_status cg_optimizer_set_lr(cg_optimizer *opt, double lr) {
    if (!opt) return cg__err(CG_ERR_NULL, "cg_optimizer_set_lr: optimizer is NULL");
    if (!(lr >= 0.0)) return cg__err(CG_ERR_VALUE, "cg_optimizer_set_lr: invalid learning rate: %g", lr);
    if (opt->kind == OPT_SGD) opt->sgd.lr = lr;
    else if (opt->kind == OPT_RMSPROP) opt->rmsprop.lr = lr;
    else opt->adam.lr = lr;
    return CG_OK;
}

double cg_optimizer_get_lr(const cg_optimizer *opt) {
    if (!opt) return NAN;
    return opt->kind == OPT_SGD ? opt->sgd.lr : opt->kind == OPT_RMSPROP ? opt->rmsprop.lr : opt->adam.lr;
}

cg_tensor *cg_optimizer_state(const cg_optimizer *opt, int i, const char *name) {
    if (!opt || !name || i < 0 || i >= opt->n) return NULL;
    const char *const *names = opt->kind == OPT_SGD ? SGD_NAMES : opt->kind == OPT_RMSPROP ? RMSPROP_NAMES
                                                                                            : ADAM_NAMES;
    for (int k = 0; k < 3; ++k)
        if (names[k] && strcmp(names[k], name) == 0) return opt->slots[i].buf[k];
    return NULL;
}

int64_t cg_optimizer_param_steps(const cg_optimizer *opt, int i) {
    if (!opt || i < 0 || i >= opt->n) return -1;
    return opt->slots[i].steps;
}

void cg_optimizer_free(cg_optimizer *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n; ++i) {
        for (int k = 0; k < 3; ++k) cg_tensor_free(opt->slots[i].buf[k]);
        cg_tensor_free(opt->slots[i].param);
    }
    free(opt->slots);
    free(opt);
}
