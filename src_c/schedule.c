/*
 * schedule.c -- learning-rate schedules as pure functions of the step.
 *
 * Each expression is written in the order PyTorch's closed forms evaluate it
 * (torch/optim/lr_scheduler.py, _get_closed_form_lr), so the values agree to
 * the last bit where the libm calls agree; the Python schedulers call these.
 */
#include "cg_internal.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static int finite_nonneg(double x) { return isfinite(x) && x >= 0.0; }

/* The checks every schedule shares: pointers, base_lr (or max_lr), step. */
static cg_status common_args(const char *fn, const void *opt, const char *lr_name,
                             double base_lr, int64_t step, const double *lr) {
    if (!opt) return cg__err(CG_ERR_NULL, "%s: options pointer is NULL", fn);
    if (!lr) return cg__err(CG_ERR_NULL, "%s: out pointer is NULL", fn);
    if (!finite_nonneg(base_lr))
        return cg__err(CG_ERR_VALUE, "%s: %s must be finite and >= 0, got %g", fn, lr_name,
                       base_lr);
    if (step < 0)
        return cg__err(CG_ERR_VALUE, "%s: step must be >= 0, got %lld", fn, (long long)step);
    return CG_OK;
}

#define CHECK_COMMON(opt, base_lr, step, lr)                                           \
    CG_TRY(common_args(__func__, (opt), "base_lr", (base_lr), (step), (lr)))

static cg_status need_finite_nonneg(const char *fn, const char *name, double v) {
    if (!finite_nonneg(v))
        return cg__err(CG_ERR_VALUE, "%s: %s must be finite and >= 0, got %g", fn, name, v);
    return CG_OK;
}

static cg_status need_int_min(const char *fn, const char *name, int64_t v, int64_t lo) {
    if (v < lo)
        return cg__err(CG_ERR_VALUE, "%s: %s must be >= %lld, got %lld", fn, name,
                       (long long)lo, (long long)v);
    return CG_OK;
}

/* PyTorch's cosine from base_lr (pos 0) to eta_min (pos == len). */
static double cosine_between(double base_lr, double eta_min, double pos, double len) {
    return eta_min + (base_lr - eta_min) * (1 + cos(M_PI * pos / len)) / 2;
}

cg_status cg_lr_step(const cg_lr_step_options *opt, double base_lr, int64_t step, double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    CG_TRY(need_int_min(__func__, "step_size", opt->step_size, 1));
    CG_TRY(need_finite_nonneg(__func__, "gamma", opt->gamma));
    *lr = base_lr * pow(opt->gamma, (double)(step / opt->step_size));
    return CG_OK;
}

cg_status cg_lr_multistep(const cg_lr_multistep_options *opt, double base_lr, int64_t step,
                          double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    CG_TRY(need_finite_nonneg(__func__, "gamma", opt->gamma));
    CG_TRY(need_int_min(__func__, "n_milestones", opt->n_milestones, 0));
    if (opt->n_milestones > 0 && !opt->milestones)
        return cg__err(CG_ERR_NULL, "%s: milestones is NULL with n_milestones = %lld", __func__,
                       (long long)opt->n_milestones);
    int64_t passed = 0; /* bisect_right(milestones, step) */
    for (int64_t i = 0; i < opt->n_milestones; ++i) {
        int64_t m = opt->milestones[i];
        if (m < 0)
            return cg__err(CG_ERR_VALUE, "%s: milestones[%lld] must be >= 0, got %lld",
                           __func__, (long long)i, (long long)m);
        if (i > 0 && m < opt->milestones[i - 1])
            return cg__err(CG_ERR_VALUE,
                           "%s: milestones must be non-decreasing, got %lld after %lld at "
                           "index %lld",
                           __func__, (long long)m, (long long)opt->milestones[i - 1],
                           (long long)i);
        if (m <= step) ++passed;
    }
    *lr = base_lr * pow(opt->gamma, (double)passed);
    return CG_OK;
}

cg_status cg_lr_constant(const cg_lr_constant_options *opt, double base_lr, int64_t step,
                         double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    if (!(opt->factor >= 0.0 && opt->factor <= 1.0))
        return cg__err(CG_ERR_VALUE, "%s: factor must be in [0, 1], got %g", __func__,
                       opt->factor);
    CG_TRY(need_int_min(__func__, "total_iters", opt->total_iters, 1));
    double restored = step >= opt->total_iters ? (1 - opt->factor) : 0.0;
    *lr = base_lr * (opt->factor + restored);
    return CG_OK;
}

cg_status cg_lr_linear(const cg_lr_linear_options *opt, double base_lr, int64_t step,
                       double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    if (!(opt->start_factor > 0.0 && opt->start_factor <= 1.0))
        return cg__err(CG_ERR_VALUE, "%s: start_factor must be in (0, 1], got %g", __func__,
                       opt->start_factor);
    if (!(opt->end_factor >= 0.0 && opt->end_factor <= 1.0))
        return cg__err(CG_ERR_VALUE, "%s: end_factor must be in [0, 1], got %g", __func__,
                       opt->end_factor);
    CG_TRY(need_int_min(__func__, "total_iters", opt->total_iters, 1));
    int64_t done = step < opt->total_iters ? step : opt->total_iters;
    *lr = base_lr * (opt->start_factor + (opt->end_factor - opt->start_factor) * (double)done /
                                             (double)opt->total_iters);
    return CG_OK;
}

cg_status cg_lr_exponential(const cg_lr_exponential_options *opt, double base_lr, int64_t step,
                            double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    CG_TRY(need_finite_nonneg(__func__, "gamma", opt->gamma));
    *lr = base_lr * pow(opt->gamma, (double)step);
    return CG_OK;
}

cg_status cg_lr_cosine(const cg_lr_cosine_options *opt, double base_lr, int64_t step,
                       double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    CG_TRY(need_int_min(__func__, "T_max", opt->T_max, 1));
    CG_TRY(need_finite_nonneg(__func__, "eta_min", opt->eta_min));
    *lr = cosine_between(base_lr, opt->eta_min, (double)step, (double)opt->T_max);
    return CG_OK;
}

/* Position inside the cycle that epoch falls in. Cycle starts are exact
 * integers in double (sums of T_0 * T_mult^k), so no log() rounding decides
 * the cycle. */
static void warm_restart_cycle(const cg_lr_cosine_warm_restarts_options *opt, double epoch,
                               double *t_cur, double *t_i) {
    double len = (double)opt->T_0;
    if (opt->T_mult == 1) {
        *t_cur = fmod(epoch, len);
        *t_i = len;
        return;
    }
    double start = 0.0;
    while (epoch - start >= len && isfinite(len)) {
        start += len;
        len *= (double)opt->T_mult;
    }
    *t_cur = epoch - start;
    *t_i = len;
}

cg_status cg_lr_cosine_warm_restarts_at(const cg_lr_cosine_warm_restarts_options *opt,
                                        double base_lr, double epoch, double *lr,
                                        double *t_cur, double *t_i) {
    CG_TRY(common_args(__func__, opt, "base_lr", base_lr, 0, lr));
    if (!finite_nonneg(epoch))
        return cg__err(CG_ERR_VALUE, "%s: epoch must be finite and >= 0, got %g", __func__,
                       epoch);
    CG_TRY(need_int_min(__func__, "T_0", opt->T_0, 1));
    CG_TRY(need_int_min(__func__, "T_mult", opt->T_mult, 1));
    CG_TRY(need_finite_nonneg(__func__, "eta_min", opt->eta_min));
    double cur, len;
    warm_restart_cycle(opt, epoch, &cur, &len);
    *lr = cosine_between(base_lr, opt->eta_min, cur, len);
    if (t_cur) *t_cur = cur;
    if (t_i) *t_i = len;
    return CG_OK;
}

cg_status cg_lr_cosine_warm_restarts(const cg_lr_cosine_warm_restarts_options *opt,
                                     double base_lr, int64_t step, double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    return cg_lr_cosine_warm_restarts_at(opt, base_lr, (double)step, lr, NULL, NULL);
}

/* ------------------------------------------------------------ one-cycle */
/* A phase anneals from value `from` to `to`, ending at step `end` (PyTorch's
 * _schedule_phases; ends are floats, the first one pct_start * total - 1). */
enum { OC_INITIAL, OC_MAX, OC_MIN };
enum { OC_MOM_MAX, OC_MOM_BASE };
typedef struct {
    double end;
    int lr_from, lr_to, mom_from, mom_to;
} oc_phase;

static int one_cycle_phases(const cg_lr_one_cycle_options *o, oc_phase ph[3]) {
    double total = (double)o->total_steps;
    double up_end = o->pct_start * total - 1;
    if (o->three_phase) {
        ph[0] = (oc_phase){up_end, OC_INITIAL, OC_MAX, OC_MOM_MAX, OC_MOM_BASE};
        ph[1] = (oc_phase){2 * o->pct_start * total - 2, OC_MAX, OC_INITIAL, OC_MOM_BASE,
                           OC_MOM_MAX};
        ph[2] = (oc_phase){total - 1, OC_INITIAL, OC_MIN, OC_MOM_MAX, OC_MOM_MAX};
        return 3;
    }
    ph[0] = (oc_phase){up_end, OC_INITIAL, OC_MAX, OC_MOM_MAX, OC_MOM_BASE};
    ph[1] = (oc_phase){total - 1, OC_MAX, OC_MIN, OC_MOM_BASE, OC_MOM_MAX};
    return 2;
}

static double anneal(cg_anneal how, double start, double end, double pct) {
    if (how == CG_ANNEAL_COS) return end + (start - end) / 2.0 * (cos(M_PI * pct) + 1);
    return (end - start) * pct + start;
}

static cg_status one_cycle_check(const char *fn, const cg_lr_one_cycle_options *o,
                                 int64_t step) {
    CG_TRY(need_int_min(fn, "total_steps", o->total_steps, 1));
    if (step > o->total_steps)
        return cg__err(CG_ERR_VALUE,
                       "%s: tried to step %lld times; the specified number of total steps "
                       "is %lld",
                       fn, (long long)step, (long long)o->total_steps);
    if (!(o->pct_start >= 0.0 && o->pct_start <= 1.0))
        return cg__err(CG_ERR_VALUE, "%s: pct_start must be in [0, 1], got %g", fn,
                       o->pct_start);
    if ((int)o->anneal_strategy < 0 || o->anneal_strategy >= CG_ANNEAL_COUNT)
        return cg__err(CG_ERR_VALUE, "%s: anneal_strategy must be CG_ANNEAL_COS or "
                       "CG_ANNEAL_LINEAR, got %d", fn, (int)o->anneal_strategy);
    if (!(isfinite(o->div_factor) && o->div_factor > 0))
        return cg__err(CG_ERR_VALUE, "%s: div_factor must be finite and > 0, got %g", fn,
                       o->div_factor);
    if (!(isfinite(o->final_div_factor) && o->final_div_factor > 0))
        return cg__err(CG_ERR_VALUE, "%s: final_div_factor must be finite and > 0, got %g", fn,
                       o->final_div_factor);
    if (!isfinite(o->base_momentum) || !isfinite(o->max_momentum))
        return cg__err(CG_ERR_VALUE, "%s: base_momentum and max_momentum must be finite, got "
                       "%g and %g", fn, o->base_momentum, o->max_momentum);
    return CG_OK;
}

/* The phase step falls into and its progress pct (PyTorch's get_lr loop). */
static cg_status one_cycle_locate(const char *fn, const cg_lr_one_cycle_options *o,
                                  int64_t step, oc_phase *phase, double *pct) {
    oc_phase ph[3];
    int n = one_cycle_phases(o, ph);
    double start = 0.0, s = (double)step;
    for (int i = 0; i < n; ++i) {
        if (s <= ph[i].end || i == n - 1) {
            if (ph[i].end == start)
                return cg__err(CG_ERR_VALUE,
                               "%s: phase %d has zero length at step %lld (pct_start = %g, "
                               "total_steps = %lld)",
                               fn, i, (long long)step, o->pct_start,
                               (long long)o->total_steps);
            *phase = ph[i];
            *pct = (s - start) / (ph[i].end - start);
            return CG_OK;
        }
        start = ph[i].end;
    }
    return cg__err(CG_ERR_VALUE, "%s: no phase for step %lld", fn, (long long)step);
}

cg_status cg_lr_one_cycle(const cg_lr_one_cycle_options *opt, double max_lr, int64_t step,
                          double *lr) {
    CG_TRY(common_args(__func__, opt, "max_lr", max_lr, step, lr));
    CG_TRY(one_cycle_check(__func__, opt, step));
    oc_phase phase;
    double pct;
    CG_TRY(one_cycle_locate(__func__, opt, step, &phase, &pct));
    double initial_lr = max_lr / opt->div_factor;
    double value[3] = {initial_lr, max_lr, initial_lr / opt->final_div_factor};
    *lr = anneal(opt->anneal_strategy, value[phase.lr_from], value[phase.lr_to], pct);
    return CG_OK;
}

cg_status cg_lr_one_cycle_momentum(const cg_lr_one_cycle_options *opt, int64_t step,
                                   double *momentum) {
    CG_TRY(common_args(__func__, opt, "max_lr", 0.0, step, momentum));
    CG_TRY(one_cycle_check(__func__, opt, step));
    oc_phase phase;
    double pct;
    CG_TRY(one_cycle_locate(__func__, opt, step, &phase, &pct));
    double value[2] = {opt->max_momentum, opt->base_momentum};
    *momentum = anneal(opt->anneal_strategy, value[phase.mom_from], value[phase.mom_to], pct);
    return CG_OK;
}

cg_status cg_lr_polynomial(const cg_lr_polynomial_options *opt, double base_lr, int64_t step,
                           double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    CG_TRY(need_int_min(__func__, "total_iters", opt->total_iters, 1));
    CG_TRY(need_finite_nonneg(__func__, "power", opt->power));
    int64_t done = step < opt->total_iters ? step : opt->total_iters;
    *lr = base_lr * pow(1.0 - (double)done / (double)opt->total_iters, opt->power);
    return CG_OK;
}

cg_status cg_lr_warmup_cosine(const cg_lr_warmup_cosine_options *opt, double base_lr,
                              int64_t step, double *lr) {
    CHECK_COMMON(opt, base_lr, step, lr);
    CG_TRY(need_int_min(__func__, "warmup_steps", opt->warmup_steps, 0));
    int64_t min_total = opt->warmup_steps > 1 ? opt->warmup_steps : 1;
    if (opt->total_steps < min_total)
        return cg__err(CG_ERR_VALUE,
                       "%s: total_steps must be >= max(warmup_steps, 1) = %lld, got %lld",
                       __func__, (long long)min_total, (long long)opt->total_steps);
    if (!(opt->warmup_start_factor >= 0.0 && opt->warmup_start_factor <= 1.0))
        return cg__err(CG_ERR_VALUE, "%s: warmup_start_factor must be in [0, 1], got %g",
                       __func__, opt->warmup_start_factor);
    CG_TRY(need_finite_nonneg(__func__, "eta_min", opt->eta_min));
    if (step < opt->warmup_steps) {
        double f = opt->warmup_start_factor;
        *lr = base_lr * (f + (1.0 - f) * (double)step / (double)opt->warmup_steps);
    } else if (step < opt->total_steps) {
        *lr = cosine_between(base_lr, opt->eta_min, (double)(step - opt->warmup_steps),
                             (double)(opt->total_steps - opt->warmup_steps));
    } else {
        *lr = opt->eta_min;
    }
    return CG_OK;
}
