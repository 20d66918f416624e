/* ops_loss.c -- nll_loss: the negative log-likelihood of class-index
 * targets (PyTorch's nll_loss op, with its weight, ignore_index and
 * reduction), and its backward as an op of its own.
 *
 * input (N, C, d1, ...) or (C,), target int64 of the input's shape without
 * the class dim, weight (C,) or NULL:
 *   loss[n, d] = -weight[t] * input[n, t, d], t = target[n, d]
 *   (0 where t == ignore_index); 'sum' adds them, 'mean' divides the sum by
 *   the total weight of the targets not ignored (NaN when that is 0).
 * One op where the composition took four recorded ops forward (gather, mul,
 * neg, mean) and four backward (mul_scalar, neg, a zero fill and a
 * scatter_add), with one bounds check of the target where gather and
 * scatter_add made one each. On a device that check needs no copy back for
 * a target uploaded from the host (cg_to_device notes its values' range,
 * true until it is written); any other device target is copied to the host
 * for it (one sync per forward, as in ops_index.c).
 *
 * Sums are taken in double: each term w * x rounded to the input's dtype
 * (the 'none' element), then added. The backward writes -w[t] * g (divided
 * by the total weight for 'mean') at each target; as it is linear in g its
 * derivative is nll_loss again, on the upstream gradient, so every order of
 * derivative is recorded. weight takes no gradient (as in PyTorch). */
#include "cg_internal.h"

typedef struct {
    int64_t outer, C, inner; /* input read as (outer, C, inner), target as (outer, inner) */
    int cdim;                /* the input's class dim: 1, or 0 for an input (C,) */
} nll_layout;

static cg_status nll_layout_of(const char *fn, const cg_tensor *x, const cg_tensor *t,
                               nll_layout *L) {
    char b1[96], b2[96], b3[96];
    if (x->ndim < 1)
        return cg__err(CG_ERR_SHAPE, "%s: input must have a class dimension ((C,), (N, C) or "
                                     "(N, C, d1, ...)), got a 0-d tensor", fn);
    L->cdim = x->ndim == 1 ? 0 : 1;
    L->C = x->shape[L->cdim];
    L->outer = L->cdim ? x->shape[0] : 1;
    L->inner = 1;
    int64_t expect[CG_MAX_DIMS];
    int ne = 0;
    for (int d = 0; d < x->ndim; ++d) {
        if (d == L->cdim) continue;
        expect[ne++] = x->shape[d];
        if (d > 1) L->inner *= x->shape[d];
    }
    int same = t->ndim == ne;
    for (int d = 0; same && d < ne; ++d) same = t->shape[d] == expect[d];
    if (!same)
        return cg__err(CG_ERR_SHAPE, "%s: target shape %s does not match input shape %s (expected %s)",
                       fn, cg__shape_str(t->ndim, t->shape, b1, sizeof b1),
                       cg__shape_str(x->ndim, x->shape, b2, sizeof b2),
                       cg__shape_str(ne, expect, b3, sizeof b3));
    return CG_OK;
}

/* The first target (row-major) outside [0, C) that is not ignore_index fails. */
static cg_status check_targets(const char *fn, const int64_t *t, int64_t n, int64_t C,
                               int64_t ignore) {
    for (int64_t k = 0; k < n; ++k)
        if (t[k] != ignore && (t[k] < 0 || t[k] >= C))
            return cg__err(CG_ERR_INDEX, "%s: target %lld is out of bounds for %lld classes "
                                         "(ignore_index=%lld)",
                           fn, (long long)t[k], (long long)C, (long long)ignore);
    return CG_OK;
}

/* per (the 'none' loss, or NULL) and the double sums of the terms and of
 * the weights over the targets not ignored. */
#define DEF_NLL(name, T)                                                                   \
    static void name(const T *restrict x, const int64_t *restrict t, const T *restrict w,  \
                     T *restrict per, const nll_layout *L, int64_t ignore, double *lsum,   \
                     double *wsum) {                                                       \
        double ls = 0.0, ws = 0.0;                                                         \
        for (int64_t o = 0; o < L->outer; ++o)                                             \
            for (int64_t i = 0; i < L->inner; ++i) {                                       \
                const int64_t k = o * L->inner + i, c = t[k];                              \
                if (c == ignore) {                                                         \
                    if (per) per[k] = (T)0;                                                \
                    continue;                                                              \
                }                                                                          \
                const double wv = w ? (double)w[c] : 1.0;                                  \
                const T term = (T)(wv * (double)x[(o * L->C + c) * L->inner + i]);         \
                if (per) per[k] = -term;                                                   \
                ls += (double)term;                                                        \
                ws += wv;                                                                  \
            }                                                                              \
        *lsum = ls;                                                                        \
        *wsum = ws;                                                                        \
    }
DEF_NLL(nll_f32, float)
DEF_NLL(nll_f64, double)

/* r (zero-filled, the input's shape) gets -w[t] * g (/ tw for 'mean') at
 * each target not ignored; g is one value (g_one) or one per target. */
#define DEF_NLLBW(name, T)                                                                 \
    static void name(const T *restrict g, int g_one, const int64_t *restrict t,            \
                     const T *restrict w, double tw, int mean, T *restrict r,              \
                     const nll_layout *L, int64_t ignore) {                                \
        for (int64_t o = 0; o < L->outer; ++o)                                             \
            for (int64_t i = 0; i < L->inner; ++i) {                                       \
                const int64_t k = o * L->inner + i, c = t[k];                              \
                if (c == ignore) continue;                                                 \
                double v = -((w ? (double)w[c] : 1.0) * (double)g[g_one ? 0 : k]);        \
                if (mean) v /= tw;                                                         \
                r[(o * L->C + c) * L->inner + i] = (T)v;                                   \
            }                                                                              \
    }
DEF_NLLBW(nllbw_f32, float)
DEF_NLLBW(nllbw_f64, double)

static cg_status nll_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status nllbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static const cg_op OP_NLL = {"nll_loss", nll_backward};
static const cg_op OP_NLLBW = {"nll_loss_backward", nllbw_backward};

/* Saves (target, total weight[, weight]), the options and the number of
 * classes on node. */
static cg_status save_nll(cg_node *node, cg_tensor *t, cg_tensor *tw, cg_tensor *w,
                          int64_t ignore, int reduction, int64_t C) {
    node->iparam[0] = ignore;
    node->iparam[1] = reduction;
    node->iparam[2] = w != NULL;
    node->iparam[3] = C;
    node->n_iparam = 4;
    cg_status st = cg__save(node, t);
    if (!st) st = cg__save(node, tw);
    if (!st && w) st = cg__save(node, w);
    return st;
}

static cg_status load_nll(cg_node *node, cg_tensor **t, cg_tensor **tw, cg_tensor **w) {
    cg_status st = cg__saved(node, 0, t);
    if (!st) st = cg__saved(node, 1, tw);
    if (!st && node->iparam[2]) st = cg__saved(node, 2, w);
    return st;
}

/* The forward on checked arguments; checked: the target's values were
 * bounds-checked when first saved (the derivative of the backward). */
static cg_status nll_fwd(cg_tensor *x, cg_tensor *t, cg_tensor *w, int64_t ignore, int reduction,
                         int checked, cg_tensor **out) {
    const char *fn = "nll_loss";
    nll_layout L = {0, 0, 0, 0};
    CG_TRY(nll_layout_of(fn, x, t, &L));
    const int dev = cg__dev(x);
    cg_tensor *r = NULL, *tw = NULL, *th = NULL, *xc = NULL, *wc = NULL;
    cg_status st = CG_OK;
    /* the host loop reads a host copy; a device target is copied back for
     * its bounds check unless its upload showed every value in range (the
     * kernels skip a target out of range, giving NaN, should memory shared
     * outside cgrad have changed since) */
    if (!dev || (!checked && !cg__int64_known_within(t, L.C, ignore))) {
        st = cg__host_contig(t, &th);
        if (!st && !checked) st = check_targets(fn, (const int64_t *)cg__ptr(th), th->numel, L.C, ignore);
    }
    const int none = reduction == CG_REDUCTION_NONE;
    if (!st) st = cg__new_on(dev, x->dtype, none ? t->ndim : 0, t->shape, 0, &r);
    if (!st) st = cg__new_on(dev, x->dtype, 0, NULL, 0, &tw);
    if (!st && dev) {
        int64_t ip[3] = {ignore, reduction, L.cdim};
        cg_tensor *ts[5] = {r, tw, x, t, w};
        st = cg__kernel(dev, "nll_loss", 2, w ? 5 : 4, ts, 0, NULL, 3, ip);
    } else if (!st) {
        st = cg__contig(x, &xc);
        if (!st && w) st = cg__contig(w, &wc);
        double ls = 0.0, ws = 0.0;
        const int64_t *tp = st ? NULL : (const int64_t *)cg__ptr(th);
        if (!st && x->dtype == CG_FLOAT32) {
            nll_f32((const float *)cg__ptr(xc), tp, wc ? (const float *)cg__ptr(wc) : NULL,
                    none ? (float *)cg__ptr(r) : NULL, &L, ignore, &ls, &ws);
            *(float *)cg__ptr(tw) = (float)ws;
            if (!none) *(float *)cg__ptr(r) = (float)(reduction == CG_REDUCTION_MEAN ? -ls / ws : -ls);
        } else if (!st) {
            nll_f64((const double *)cg__ptr(xc), tp, wc ? (const double *)cg__ptr(wc) : NULL,
                    none ? (double *)cg__ptr(r) : NULL, &L, ignore, &ls, &ws);
            *(double *)cg__ptr(tw) = ws;
            if (!none) *(double *)cg__ptr(r) = reduction == CG_REDUCTION_MEAN ? -ls / ws : -ls;
        }
    }
    cg_tensor_free(th);
    cg_tensor_free(xc);
    cg_tensor_free(wc);
    if (!st && cg__wants_grad1(x)) {
        cg_node *node;
        st = cg__record(&OP_NLL, 1, &x, 1, &r, &node);
        if (!st) st = save_nll(node, t, tw, w, ignore, reduction, L.C);
    }
    cg_tensor_free(tw);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

/* d loss / d input for upstream g (the loss's shape), recorded with its own
 * derivative when g requires grad. */
static cg_status nll_bw(cg_tensor *g, cg_tensor *t, cg_tensor *tw, cg_tensor *w, int64_t ignore,
                        int reduction, int64_t C, cg_tensor **out) {
    const char *fn = "nll_loss_backward";
    int64_t shape[CG_MAX_DIMS];
    const int cdim = t->ndim ? 1 : 0, ndim = t->ndim + 1;
    for (int d = 0, s = 0; d < ndim; ++d) shape[d] = d == cdim ? C : t->shape[s++];
    const int dev = cg__dev(t);
    if (cg__dev(g) != dev || g->dtype != tw->dtype)
        return cg__err(CG_ERR_VALUE, "%s: the gradient (%s on '%s') does not match the loss (%s on '%s')",
                       fn, cg_dtype_name(g->dtype), cg__device_label(cg__dev(g)),
                       cg_dtype_name(tw->dtype), cg__device_label(dev));
    cg_tensor *r = NULL;
    cg_status st = cg__new_on(dev, g->dtype, ndim, shape, 1, &r);
    nll_layout L = {cdim ? shape[0] : 1, C, 1, cdim};
    for (int d = 2; d < ndim; ++d) L.inner *= shape[d];
    if (!st && dev && r->numel) {
        int64_t ip[3] = {ignore, reduction, cdim};
        cg_tensor *ts[5] = {r, g, t, tw, w};
        st = cg__kernel(dev, fn, 1, w ? 5 : 4, ts, 0, NULL, 3, ip);
    } else if (!st && !dev) {
        cg_tensor *gc = NULL, *tc = NULL, *wc = NULL;
        st = cg__contig(g, &gc);
        if (!st) st = cg__contig(t, &tc);
        if (!st && w) st = cg__contig(w, &wc);
        const int mean = reduction == CG_REDUCTION_MEAN, one = reduction != CG_REDUCTION_NONE;
        if (!st && g->dtype == CG_FLOAT32)
            nllbw_f32((const float *)cg__ptr(gc), one, (const int64_t *)cg__ptr(tc),
                      wc ? (const float *)cg__ptr(wc) : NULL, (double)*(const float *)cg__ptr(tw),
                      mean, (float *)cg__ptr(r), &L, ignore);
        else if (!st)
            nllbw_f64((const double *)cg__ptr(gc), one, (const int64_t *)cg__ptr(tc),
                      wc ? (const double *)cg__ptr(wc) : NULL, *(const double *)cg__ptr(tw),
                      mean, (double *)cg__ptr(r), &L, ignore);
        cg_tensor_free(gc);
        cg_tensor_free(tc);
        cg_tensor_free(wc);
    }
    if (!st && cg__wants_grad1(g)) {
        cg_node *node;
        st = cg__record(&OP_NLLBW, 1, &g, 1, &r, &node);
        if (!st) st = save_nll(node, t, tw, w, ignore, reduction, C);
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

static cg_status nll_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *t = NULL, *tw = NULL, *w = NULL;
    cg_status st = load_nll(node, &t, &tw, &w);
    if (!st && node->needs_grad[0])
        st = nll_bw(gout[0], t, tw, w, node->iparam[0], (int)node->iparam[1], node->iparam[3], &gin[0]);
    cg_tensor_free(t);
    cg_tensor_free(tw);
    cg_tensor_free(w);
    return st;
}

static cg_status nllbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *t = NULL, *tw = NULL, *w = NULL;
    cg_status st = load_nll(node, &t, &tw, &w);
    if (!st) st = nll_fwd(gout[0], t, w, node->iparam[0], (int)node->iparam[1], 1, &gin[0]);
    cg_tensor_free(t);
    cg_tensor_free(tw);
    cg_tensor_free(w);
    return st;
}

cg_status cg_nll_loss(cg_tensor *input, cg_tensor *target, cg_tensor *weight, int64_t ignore_index,
                      cg_reduction reduction, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(input);
    CG_CHECK_TD(target);
    if (weight) CG_CHECK_TD(weight);
    const char *fn = "nll_loss";
    if (!cg__is_float(input->dtype))
        return cg__err(CG_ERR_DTYPE, "%s: input must be floating point (log-probabilities), got %s", fn,
                       cg_dtype_name(input->dtype));
    if (target->dtype != CG_INT64)
        return cg__err(CG_ERR_DTYPE, "%s: target must be int64 class indices, got %s", fn,
                       cg_dtype_name(target->dtype));
    if (reduction != CG_REDUCTION_NONE && reduction != CG_REDUCTION_MEAN && reduction != CG_REDUCTION_SUM)
        return cg__err(CG_ERR_VALUE, "%s: reduction must be CG_REDUCTION_NONE, _MEAN or _SUM, got %d", fn,
                       (int)reduction);
    const int dev = cg__dev(input);
    cg_tensor *others[2] = {target, weight};
    static const char *const names[2] = {"target", "weight"};
    for (int k = 0; k < 2; ++k)
        if (others[k] && cg__dev(others[k]) != dev)
            return cg__err(CG_ERR_VALUE, "%s: expected all tensors on one device, but 'input' is on '%s' "
                                         "and '%s' on '%s'",
                           fn, cg__device_label(dev), names[k], cg__device_label(cg__dev(others[k])));
    if (weight) {
        char buf[96];
        const int cdim = input->ndim > 1 ? 1 : 0;
        if (weight->dtype != input->dtype)
            return cg__err(CG_ERR_DTYPE, "%s: weight must have the input's dtype %s, got %s", fn,
                           cg_dtype_name(input->dtype), cg_dtype_name(weight->dtype));
        if (input->ndim && (weight->ndim != 1 || weight->shape[0] != input->shape[cdim]))
            return cg__err(CG_ERR_SHAPE, "%s: weight must have shape (%lld,), one entry per class, got %s",
                           fn, (long long)input->shape[cdim],
                           cg__shape_str(weight->ndim, weight->shape, buf, sizeof buf));
        if (cg__wants_grad1(weight))
            return cg__err(CG_ERR_UNSUPPORTED, "%s: the gradient with respect to weight is not "
                                               "implemented (as in PyTorch); detach the weight", fn);
    }
    return nll_fwd(input, target, weight, ignore_index, (int)reduction, 0, out);
}
