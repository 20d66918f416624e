/* clip.c -- gradient clipping: global p-norm, clip by norm (PyTorch's
 * clip_grad_norm_), clip by value, unit-wise adaptive clipping (AGC).
 * Norms accumulate in double whatever the tensors' dtype. Gradients are
 * written in place (their version counters bumped); a non-contiguous one is
 * processed on a contiguous copy that is copied back. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif
#include "cg_internal.h"
#include "optim_device.h"

static cg_status check_float(const char *fn, const char *what, int i, const cg_tensor *t) {
    if (!cg__float_here(t))
        return cg__err(CG_ERR_DTYPE, "%s: %s %d has dtype %s; float32 or float64 (float16 on a device) needed", fn, what,
                       i, cg_dtype_name(t->dtype));
    return CG_OK;
}

/* In-place writes through a stride-0 (expanded) view would hit one element
 * many times. */
static cg_status check_writable(const char *fn, int i, const cg_tensor *t) {
    if (t->layout) return CG_OK; /* its values are an owned contiguous block */
    for (int d = 0; d < t->ndim; ++d)
        if (t->strides[d] == 0 && t->shape[d] > 1)
            return cg__err(CG_ERR_VALUE, "%s: gradient %d is an expanded view (stride 0 on dim %d); "
                                         "it cannot be modified in place",
                           fn, i, d);
    return CG_OK;
}

/* The gradients an in-place clip writes: floating, writable, and the
 * row-sparse ones coalesced (clamping and a norm need each row once). */
static cg_status prepare_targets(const char *fn, int n, cg_tensor *const *grads) {
    for (int i = 0; i < n; ++i) {
        if (!grads[i]) continue;
        CG_TRY(check_float(fn, "gradient", i, grads[i]));
        CG_TRY(check_writable(fn, i, grads[i]));
    }
    for (int i = 0; i < n; ++i)
        if (grads[i] && grads[i]->layout) CG_TRY(cg__sparse_coalesce_inplace(grads[i]));
    return CG_OK;
}

/* p-norm of n contiguous elements, in double; NaN propagates through inf. */
#define PNORM(NAME, T)                                                                      \
    static double NAME(const T *restrict x, int64_t n, double p) {                          \
        if (isinf(p)) {                                                                     \
            double m = 0.0;                                                                 \
            int nan = 0;                                                                    \
            for (int64_t i = 0; i < n; ++i) {                                               \
                const double a = fabs((double)x[i]);                                        \
                nan |= a != a;                                                              \
                m = a > m ? a : m;                                                          \
            }                                                                               \
            return nan ? NAN : m;                                                           \
        }                                                                                   \
        double s = 0.0;                                                                     \
        if (p == 2.0) {                                                                     \
            for (int64_t i = 0; i < n; ++i) s += (double)x[i] * (double)x[i];              \
            return sqrt(s);                                                                 \
        }                                                                                   \
        if (p == 1.0) {                                                                     \
            for (int64_t i = 0; i < n; ++i) s += fabs((double)x[i]);                        \
            return s;                                                                       \
        }                                                                                   \
        for (int64_t i = 0; i < n; ++i) s += pow(fabs((double)x[i]), p);                    \
        return pow(s, 1.0 / p);                                                             \
    }
PNORM(pnorm_f32, float)
PNORM(pnorm_f64, double)

static double pnorm(const cg_tensor *c, double p) {
    return c->dtype == CG_FLOAT32 ? pnorm_f32(cg__ptr(c), c->numel, p)
                                  : pnorm_f64(cg__ptr(c), c->numel, p);
}

static cg_status check_norm_type(const char *fn, double p) {
    if (!(p > 0.0) || (isinf(p) && p < 0))
        return cg__err(CG_ERR_VALUE, "%s: norm_type must be > 0 or inf, got %g", fn, p);
    return CG_OK;
}

/* The elements a kernel reads or writes: a row-sparse tensor's stored rows
 * (coalesced by the caller), else the tensor itself. */
static cg_tensor *stored(cg_tensor *t) { return t->layout ? t->sp_values : t; }

/* Norms of one device's tensors ("pnorms": (norms float64 [k]; x_1..x_k),
 * f[0] = p), scattered into the list's slots. Empty tensors have norm 0 and
 * are not passed to the kernel. */
typedef struct norms_ctx {
    double p;
    double *out; /* n slots */
} norms_ctx;

static cg_status device_norms(int dev, int k, cg_tensor **ts, const int *idx, void *vctx) {
    norms_ctx *ctx = vctx;
    int *pos = malloc(sizeof *pos * (size_t)k);
    double *v = malloc(sizeof *v * (size_t)k);
    if (!pos || !v) {
        free(pos);
        free(v);
        return cg__err(CG_ERR_NOMEM, "pnorms: out of memory for %d norms", k);
    }
    int m = 0;
    for (int j = 0; j < k; ++j) {
        cg_tensor *t = stored(ts[j]);
        ctx->out[idx[j]] = 0.0;
        if (t->numel) {
            pos[m] = idx[j];
            ts[m++] = t; /* ts is the grouping's scratch array */
        }
    }
    cg_status st = CG_OK;
    if (m) {
        const int64_t shape = m;
        st = cg__kernel_result(dev, "pnorms", 0, m, ts, 1, &ctx->p, 0, NULL, CG_FLOAT64, 1, &shape, v);
        for (int j = 0; j < m && !st; ++j) ctx->out[pos[j]] = v[j];
    }
    free(pos);
    free(v);
    return st;
}

static cg_status total_norm(const char *fn, int n, cg_tensor *const *ts, double p,
                            double *out) {
    if (n < 0) return cg__err(CG_ERR_VALUE, "%s: n must be >= 0, got %d", fn, n);
    if (n > 0 && !ts) return cg__err(CG_ERR_NULL, "%s: tensor array is NULL", fn);
    CG_TRY(check_norm_type(fn, p));
    for (int i = 0; i < n; ++i)
        if (ts[i]) CG_TRY(check_float(fn, "tensor", i, ts[i]));
    /* A row-sparse tensor's norm is that of its coalesced rows (duplicate
     * rows sum first); coalescing in place keeps it the same tensor and
     * saves the optimizer that work. Then only nnz rows are read. */
    for (int i = 0; i < n; ++i)
        if (ts[i] && ts[i]->layout) CG_TRY(cg__sparse_coalesce_inplace(ts[i]));
    /* Per-tensor norms: the device tensors' first, one kernel per device
     * (one copy back to the host each), then the host ones in the loop. */
    double *dnorm = NULL;
    if (n > 0) {
        dnorm = malloc(sizeof *dnorm * (size_t)n);
        if (!dnorm) return cg__err(CG_ERR_NOMEM, "%s: out of memory for %d norms", fn, n);
        norms_ctx ctx = {p, dnorm};
        cg_status st = cg__for_device_groups(n, ts, device_norms, &ctx);
        if (st) {
            free(dnorm);
            return st;
        }
    }
    /* The p-norm of the per-tensor p-norms, as PyTorch's get_total_norm. */
    double acc = 0.0;
    int nan = 0;
    for (int i = 0; i < n; ++i) {
        if (!ts[i]) continue;
        double v;
        if (cg__dev(ts[i])) {
            v = dnorm[i];
        } else {
            cg_tensor *c = NULL;
            cg_status st = cg__contig(ts[i]->layout ? ts[i]->sp_values : ts[i], &c);
            if (st) {
                free(dnorm);
                return st;
            }
            v = pnorm(c, p);
            cg_tensor_free(c);
        }
        if (isinf(p)) {
            nan |= v != v;
            acc = v > acc ? v : acc;
        } else if (p == 2.0) {
            acc += v * v;
        } else if (p == 1.0) {
            acc += v;
        } else {
            acc += pow(v, p);
        }
    }
    free(dnorm);
    if (isinf(p)) *out = nan ? NAN : acc;
    else if (p == 2.0) *out = sqrt(acc);
    else if (p == 1.0) *out = acc;
    else *out = pow(acc, 1.0 / p);
    return CG_OK;
}

cg_status cg_total_norm(int n, cg_tensor *const *tensors, double norm_type, double *out) {
    if (!out) return cg__err(CG_ERR_NULL, "cg_total_norm: total_norm pointer is NULL");
    return total_norm("cg_total_norm", n, tensors, norm_type, out);
}

/* Runs fn on a contiguous version of g and writes the result back when it
 * had to be copied. */
typedef void (*inplace_fn)(cg_tensor *c, const double *prm, int64_t *count);
static cg_status apply_inplace(cg_tensor *g, inplace_fn fn, const double *prm, int64_t *count) {
    if (g->layout) g = g->sp_values; /* row-sparse: the stored rows only */
    if (cg__is_contig(g)) {
        fn(g, prm, count);
    } else {
        cg_tensor *c = NULL;
        CG_TRY(cg__contig(g, &c));
        fn(c, prm, count);
        cg_status st = cg__copy_elems(g, c);
        cg_tensor_free(c);
        CG_TRY(st);
    }
    ++g->storage->version;
    return CG_OK;
}

static void scale_fn(cg_tensor *c, const double *prm, int64_t *count) {
    (void)count;
    const int64_t n = c->numel;
    if (c->dtype == CG_FLOAT32) {
        float *x = cg__ptr(c);
        const float k = (float)prm[0];
        for (int64_t i = 0; i < n; ++i) x[i] *= k;
    } else {
        double *x = cg__ptr(c);
        const double k = prm[0];
        for (int64_t i = 0; i < n; ++i) x[i] *= k;
    }
}

/* The device tensors of a list: those with elements, compacted into ts
 * (the grouping's scratch array); every one's version is bumped, as the
 * host path bumps every gradient it visits. */
static int device_targets(int k, cg_tensor **ts) {
    int m = 0;
    for (int j = 0; j < k; ++j) {
        cg_tensor *t = stored(ts[j]);
        ++t->storage->version;
        if (t->numel) ts[m++] = t;
    }
    return m;
}

/* "scale_": (g_1..g_k;) f[0] = the factor, each g multiplied in place in
 * its dtype (the factor rounded to it, as scale_fn). */
static cg_status device_scale(int dev, int k, cg_tensor **ts, const int *idx, void *ctx) {
    (void)idx;
    const int m = device_targets(k, ts);
    return m ? cg__kernel_result(dev, "scale_", m, 0, ts, 1, (const double *)ctx, 0, NULL,
                                 CG_FLOAT64, 0, NULL, NULL)
             : CG_OK;
}

/* "clamp_abs_": (g_1..g_k, changed int64 [k];) f[0] = the bound. */
typedef struct clamp_ctx {
    double bound;
    int64_t count;
} clamp_ctx;

static cg_status device_clamp(int dev, int k, cg_tensor **ts, const int *idx, void *vctx) {
    (void)idx;
    clamp_ctx *ctx = vctx;
    const int m = device_targets(k, ts);
    if (!m) return CG_OK;
    int64_t *counts = malloc(sizeof *counts * (size_t)m);
    if (!counts) return cg__err(CG_ERR_NOMEM, "clamp_abs_: out of memory for %d counts", m);
    const int64_t shape = m;
    cg_status st = cg__kernel_result(dev, "clamp_abs_", m, 0, ts, 1, &ctx->bound, 0, NULL, CG_INT64,
                                     1, &shape, counts);
    for (int j = 0; j < m && !st; ++j) ctx->count += counts[j];
    free(counts);
    return st;
}

cg_status cg_clip_grad_norm(int n, cg_tensor *const *grads, double max_norm, double norm_type,
                            int error_if_nonfinite, double *total_norm_out,
                            double *clip_coef_out) {
    static const char *fn = "cg_clip_grad_norm";
    if (!(max_norm >= 0.0))
        return cg__err(CG_ERR_VALUE, "%s: max_norm must be >= 0, got %g", fn, max_norm);
    double tn = 0.0;
    CG_TRY(total_norm(fn, n, grads, norm_type, &tn));
    if (total_norm_out) *total_norm_out = tn;
    for (int i = 0; i < n; ++i)
        if (grads[i]) CG_TRY(check_writable(fn, i, grads[i]));
    if (error_if_nonfinite && !isfinite(tn))
        return cg__err(CG_ERR_VALUE,
                       "%s: the total norm of order %g for gradients from the parameters is "
                       "non-finite (%g), so it cannot be clipped; set error_if_nonfinite=False to "
                       "scale them anyway",
                       fn, norm_type, tn);
    const double coef = max_norm / (tn + 1e-6);
    const double clamped = coef > 1.0 ? 1.0 : coef; /* NaN stays NaN, as PyTorch's clamp */
    if (clip_coef_out) *clip_coef_out = clamped;
    /* Multiplying by exactly 1 changes no value: skip the pass. */
    if (clamped == 1.0) return CG_OK;
    double factor = clamped;
    CG_TRY(cg__for_device_groups(n, grads, device_scale, &factor));
    for (int i = 0; i < n; ++i)
        if (grads[i] && !cg__dev(grads[i])) CG_TRY(apply_inplace(grads[i], scale_fn, &clamped, NULL));
    return CG_OK;
}

/* The *_tensor clips: their argument checks, and the one device of every
 * non-NULL grad (0 when any is on the host, they differ, or there is none):
 * only then does the result stay on a device. */
static cg_status tensor_form(const char *fn, int n, cg_tensor *const *grads, cg_tensor **result,
                             int *device) {
    if (!result) return cg__err(CG_ERR_NULL, "%s: result pointer is NULL", fn);
    *result = NULL;
    if (n < 0) return cg__err(CG_ERR_VALUE, "%s: n must be >= 0, got %d", fn, n);
    if (n > 0 && !grads) return cg__err(CG_ERR_NULL, "%s: grads array is NULL", fn);
    int dev = -1;
    for (int i = 0; i < n; ++i)
        if (grads[i]) dev = dev < 0 || dev == cg__dev(grads[i]) ? cg__dev(grads[i]) : 0;
    *device = dev < 0 ? 0 : dev;
    return CG_OK;
}

/* The one-device kernel's tensor list: device_targets over the non-NULL
 * grads, in a new array (free()d by the caller) with a slot after the m
 * targets for the kernel's result. */
static cg_status device_list(const char *fn, int n, cg_tensor *const *grads, cg_tensor ***ts,
                             int *m) {
    cg_tensor **a = malloc(sizeof *a * (size_t)(n + 1));
    if (!a) return cg__err(CG_ERR_NOMEM, "%s: out of memory for %d tensors", fn, n + 1);
    int k = 0;
    for (int i = 0; i < n; ++i)
        if (grads[i]) a[k++] = grads[i];
    *m = device_targets(k, a);
    *ts = a;
    return CG_OK;
}

/* A count made on the host, as the int64 0-d tensor the *_tensor clips
 * return. */
static cg_status host_count(int64_t count, cg_tensor **result) {
    return cg_from_data(CG_INT64, 0, NULL, &count, result);
}

/* *result = the int64 0-d sum of per-tensor counts left on the device
 * (freed here either way). */
static cg_status device_total(cg_tensor *counts, cg_status st, cg_tensor **result) {
    if (!st) st = cg_sum(counts, NULL, 0, 0, result); /* int64: not recorded */
    cg_tensor_free(counts);
    return st;
}

/* "clip_norm_": (g_1..g_k, result f64 [2];) f = (p, max_norm): the whole
 * clip on one device. The coefficient never reaches the host, so every
 * gradient is multiplied (by exactly 1 too, which changes no value) and
 * every version bumped, as PyTorch's clip_grad_norm_. */
cg_status cg_clip_grad_norm_tensor(int n, cg_tensor *const *grads, double max_norm,
                                   double norm_type, cg_tensor **result) {
    static const char *fn = "cg_clip_grad_norm_tensor";
    int dev;
    CG_TRY(tensor_form(fn, n, grads, result, &dev));
    const int64_t two = 2;
    if (!dev) {
        double r[2] = {0.0, 1.0};
        CG_TRY(cg_clip_grad_norm(n, grads, max_norm, norm_type, 0, &r[0], &r[1]));
        return cg_from_data(CG_FLOAT64, 1, &two, r, result);
    }
    if (!(max_norm >= 0.0))
        return cg__err(CG_ERR_VALUE, "%s: max_norm must be >= 0, got %g", fn, max_norm);
    CG_TRY(check_norm_type(fn, norm_type));
    CG_TRY(prepare_targets(fn, n, grads));
    cg_tensor **ts = NULL, *r = NULL;
    int m = 0;
    cg_status st = cg__new_on(dev, CG_FLOAT64, 1, &two, 1, &r);
    if (!st) st = device_list(fn, n, grads, &ts, &m);
    if (!st) {
        ts[m] = r;
        const double f[2] = {norm_type, max_norm};
        st = cg__kernel(dev, "clip_norm_", m + 1, m + 1, ts, 2, f, 0, NULL);
    }
    free(ts);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *result = r;
    return CG_OK;
}

/* prm[0]: the bound; count += elements that changed. */
static void clamp_fn(cg_tensor *c, const double *prm, int64_t *count) {
    const int64_t n = c->numel;
    int64_t changed = 0;
    if (c->dtype == CG_FLOAT32) {
        float *x = cg__ptr(c);
        const float hi = (float)prm[0], lo = -hi;
        for (int64_t i = 0; i < n; ++i) {
            const float v = x[i];
            const float r = v < lo ? lo : (v > hi ? hi : v);
            changed += r != v && v == v;
            x[i] = r;
        }
    } else {
        double *x = cg__ptr(c);
        const double hi = prm[0], lo = -hi;
        for (int64_t i = 0; i < n; ++i) {
            const double v = x[i];
            const double r = v < lo ? lo : (v > hi ? hi : v);
            changed += r != v && v == v;
            x[i] = r;
        }
    }
    *count += changed;
}

cg_status cg_clip_grad_value(int n, cg_tensor *const *grads, double clip_value,
                             int64_t *n_clipped) {
    static const char *fn = "cg_clip_grad_value";
    if (n_clipped) *n_clipped = 0;
    if (n < 0) return cg__err(CG_ERR_VALUE, "%s: n must be >= 0, got %d", fn, n);
    if (n > 0 && !grads) return cg__err(CG_ERR_NULL, "%s: grads array is NULL", fn);
    if (!(clip_value >= 0.0))
        return cg__err(CG_ERR_VALUE, "%s: clip_value must be >= 0, got %g", fn, clip_value);
    /* Clamping is not linear: duplicate rows must be summed first. */
    CG_TRY(prepare_targets(fn, n, grads));
    clamp_ctx dc = {clip_value, 0};
    CG_TRY(cg__for_device_groups(n, grads, device_clamp, &dc));
    int64_t count = dc.count;
    for (int i = 0; i < n; ++i)
        if (grads[i] && !cg__dev(grads[i])) CG_TRY(apply_inplace(grads[i], clamp_fn, &clip_value, &count));
    if (n_clipped) *n_clipped = count;
    return CG_OK;
}

/* "clamp_abs_" on one device with its counts left there, then summed
 * there. */
cg_status cg_clip_grad_value_tensor(int n, cg_tensor *const *grads, double clip_value,
                                    cg_tensor **n_clipped) {
    static const char *fn = "cg_clip_grad_value_tensor";
    int dev;
    CG_TRY(tensor_form(fn, n, grads, n_clipped, &dev));
    if (!dev) {
        int64_t count = 0;
        CG_TRY(cg_clip_grad_value(n, grads, clip_value, &count));
        return host_count(count, n_clipped);
    }
    if (!(clip_value >= 0.0))
        return cg__err(CG_ERR_VALUE, "%s: clip_value must be >= 0, got %g", fn, clip_value);
    CG_TRY(prepare_targets(fn, n, grads));
    cg_tensor **ts = NULL;
    int m = 0;
    CG_TRY(device_list(fn, n, grads, &ts, &m));
    const int64_t shape = m;
    cg_tensor *counts = NULL;
    cg_status st = cg__new_on(dev, CG_INT64, 1, &shape, 1, &counts);
    if (!st && m) {
        ts[m] = counts;
        st = cg__kernel(dev, "clamp_abs_", m + 1, m + 1, ts, 1, &clip_value, 0, NULL);
    }
    free(ts);
    return device_total(counts, st, n_clipped);
}

/* ------------------------------------------------------------------- AGC */
/* Squared L2 norm of each of `units` consecutive rows of `len` elements. */
static void unit_sumsq(const cg_tensor *c, int64_t units, int64_t len, double *out) {
    for (int64_t u = 0; u < units; ++u) {
        double s = 0.0;
        if (c->dtype == CG_FLOAT32) {
            const float *x = (const float *)cg__ptr(c) + u * len;
            for (int64_t i = 0; i < len; ++i) s += (double)x[i] * (double)x[i];
        } else {
            const double *x = (const double *)cg__ptr(c) + u * len;
            for (int64_t i = 0; i < len; ++i) s += x[i] * x[i];
        }
        out[u] = s;
    }
}

static void scale_row(cg_tensor *c, int64_t u, int64_t len, double k) {
    if (c->dtype == CG_FLOAT32) {
        float *x = (float *)cg__ptr(c) + u * len;
        const float kf = (float)k;
        for (int64_t i = 0; i < len; ++i) x[i] *= kf;
    } else {
        double *x = (double *)cg__ptr(c) + u * len;
        for (int64_t i = 0; i < len; ++i) x[i] *= k;
    }
}

/* "agc_": (g, clipped int64 [1]; w contiguous) f = (clipping, eps),
 * i[0] = units: agc_one's arithmetic on the device. The count comes back
 * into *n_clipped, or stays in `count` (a zero-filled int64 [1] on the
 * device; g's version then bumped unseen, as clip_norm_'s). */
static cg_status agc_device(int dev, cg_tensor *w, cg_tensor *g, int64_t units, double clipping,
                            double eps, int64_t *n_clipped, cg_tensor *count) {
    if (g->numel == 0) return CG_OK;
    cg_tensor *wc = NULL;
    CG_TRY(cg__contig(w, &wc));
    const double f[2] = {clipping, eps};
    const int64_t one = 1;
    int64_t clipped = 0;
    cg_status st;
    if (count) {
        cg_tensor *ts[3] = {g, count, wc};
        st = cg__kernel(dev, "agc_", 2, 3, ts, 2, f, 1, &units);
    } else {
        cg_tensor *ts[2] = {g, wc};
        st = cg__kernel_result(dev, "agc_", 1, 1, ts, 2, f, 1, &units, CG_INT64, 1, &one, &clipped);
    }
    cg_tensor_free(wc);
    CG_TRY(st);
    *n_clipped += clipped;
    if (clipped) ++g->storage->version;
    return CG_OK;
}

static cg_status agc_one(cg_tensor *w, cg_tensor *g, double clipping, double eps,
                         int64_t *n_clipped, int64_t *n_units, cg_tensor *count) {
    const int64_t units = g->ndim <= 1 ? 1 : g->shape[0];
    if (count) ++g->storage->version; /* every one, as nothing is read back */
    if (units == 0) return CG_OK;
    const int64_t len = g->numel / units;
    if (cg__dev(g)) {
        CG_TRY(agc_device(cg__dev(g), w, g, units, clipping, eps, n_clipped, count));
        *n_units += units;
        return CG_OK;
    }
    cg_tensor *wc = NULL;
    CG_TRY(cg__contig(w, &wc));
    double *norms = malloc(sizeof(double) * (size_t)units * 2);
    if (!norms) {
        cg_tensor_free(wc);
        return cg__err(CG_ERR_NOMEM, "cg_clip_grad_agc: out of memory for %lld unit norms",
                       (long long)units);
    }
    double *wn = norms, *gn = norms + units;
    unit_sumsq(wc, units, len, wn);
    unit_sumsq(g, units, len, gn);
    cg_tensor_free(wc);
    int changed = 0;
    for (int64_t u = 0; u < units; ++u) {
        const double wnorm = sqrt(wn[u]), gnorm = sqrt(gn[u]);
        const double max_norm = clipping * (wnorm > eps ? wnorm : eps);
        if (gnorm < max_norm) continue; /* NaN norms fall through: scaled to NaN */
        scale_row(g, u, len, max_norm / (gnorm > 1e-6 ? gnorm : 1e-6));
        ++*n_clipped;
        changed = 1;
    }
    *n_units += units;
    free(norms);
    if (changed) ++g->storage->version;
    return CG_OK;
}

static cg_status check_agc(const char *fn, int n, cg_tensor *const *params,
                           cg_tensor *const *grads, double clipping, double eps) {
    if (n < 0) return cg__err(CG_ERR_VALUE, "%s: n must be >= 0, got %d", fn, n);
    if (n > 0 && (!params || !grads))
        return cg__err(CG_ERR_NULL, "%s: params or grads array is NULL", fn);
    if (!(clipping > 0.0))
        return cg__err(CG_ERR_VALUE, "%s: clipping must be > 0, got %g", fn, clipping);
    if (!(eps >= 0.0)) return cg__err(CG_ERR_VALUE, "%s: eps must be >= 0, got %g", fn, eps);
    for (int i = 0; i < n; ++i) {
        if (!grads[i]) continue;
        if (!params[i]) return cg__err(CG_ERR_NULL, "%s: parameter %d is NULL", fn, i);
        if (grads[i]->layout || params[i]->layout)
            return cg__err(CG_ERR_UNSUPPORTED, "%s: %s %d is row-sparse; adaptive clipping takes dense "
                                               "gradients and parameters", fn,
                           grads[i]->layout ? "gradient" : "parameter", i);
        CG_TRY(check_float(fn, "gradient", i, grads[i]));
        CG_TRY(check_float(fn, "parameter", i, params[i]));
        if (!cg__same_shape(params[i], grads[i])) {
            char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
            return cg__err(CG_ERR_SHAPE, "%s: gradient %d has shape %s but its parameter has shape %s",
                           fn, i, cg__shape_str(grads[i]->ndim, grads[i]->shape, b1, sizeof b1),
                           cg__shape_str(params[i]->ndim, params[i]->shape, b2, sizeof b2));
        }
        if (!cg__is_contig(grads[i]))
            return cg__err(CG_ERR_VALUE, "%s: gradient %d is not contiguous", fn, i);
        if (cg__dev(grads[i]) != cg__dev(params[i])) {
            const char *dg = cg_device_name(cg__dev(grads[i])), *dp = cg_device_name(cg__dev(params[i]));
            return cg__err(CG_ERR_VALUE, "%s: gradient %d is on device '%s' but its parameter on '%s'",
                           fn, i, dg ? dg : "?", dp ? dp : "?");
        }
    }
    return CG_OK;
}

cg_status cg_clip_grad_agc(int n, cg_tensor *const *params, cg_tensor *const *grads,
                           double clipping, double eps, int64_t *n_clipped, int64_t *n_units) {
    static const char *fn = "cg_clip_grad_agc";
    if (n_clipped) *n_clipped = 0;
    if (n_units) *n_units = 0;
    CG_TRY(check_agc(fn, n, params, grads, clipping, eps));
    int64_t clipped = 0, units = 0;
    for (int i = 0; i < n; ++i)
        if (grads[i]) CG_TRY(agc_one(params[i], grads[i], clipping, eps, &clipped, &units, NULL));
    if (n_clipped) *n_clipped = clipped;
    if (n_units) *n_units = units;
    return CG_OK;
}

/* Each unit's "agc_" count left in its element of one int64 [k] tensor on
 * the device, summed there. */
cg_status cg_clip_grad_agc_tensor(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                  double clipping, double eps, cg_tensor **n_clipped,
                                  int64_t *n_units) {
    static const char *fn = "cg_clip_grad_agc_tensor";
    if (n_units) *n_units = 0;
    int dev;
    CG_TRY(tensor_form(fn, n, grads, n_clipped, &dev));
    if (!dev) {
        int64_t count = 0;
        CG_TRY(cg_clip_grad_agc(n, params, grads, clipping, eps, &count, n_units));
        return host_count(count, n_clipped);
    }
    CG_TRY(check_agc(fn, n, params, grads, clipping, eps));
    const int64_t shape = n;
    int64_t clipped = 0, units = 0;
    cg_tensor *counts = NULL;
    cg_status st = cg__new_on(dev, CG_INT64, 1, &shape, 1, &counts);
    for (int i = 0; i < n && !st; ++i) {
        if (!grads[i]) continue;
        const int64_t one = 1, unit_stride = 1;
        cg_tensor *c = NULL;
        st = cg__view(counts, 1, &one, &unit_stride, i, &c);
        if (!st) st = agc_one(params[i], grads[i], clipping, eps, &clipped, &units, c);
        cg_tensor_free(c);
    }
    if (!st && n_units) *n_units = units;
    return device_total(counts, st, n_clipped);
}
