/* gradcheck.c -- float64 central differences against the tape's gradient. */
#include "cg_internal.h"

/* L = sum(fn(inputs) * v): the scalar whose gradient is compared. */
static cg_status projected(cg_fn fn, void *ctx, int n, cg_tensor *const *inputs, cg_tensor *v,
                           cg_tensor **loss) {
    cg_tensor *y = NULL, *yv = NULL;
    cg_status st = fn(ctx, n, inputs, &y);
    if (st) return st;
    if (!y) return cg__err(CG_ERR_CALLBACK, "cg_gradcheck: fn returned no tensor");
    if (v) {
        st = cg_mul(y, v, &yv);
        if (!st) st = cg_sum(yv, NULL, 0, 0, loss);
    } else {
        st = cg_sum(y, NULL, 0, 0, loss);
    }
    cg_tensor_free(yv);
    cg_tensor_free(y);
    return st;
}

cg_status cg_gradcheck(cg_fn fn, void *ctx, int n_inputs, cg_tensor *const *inputs, double eps,
                       double atol, double rtol) {
    if (!fn || n_inputs < 1 || !inputs) return cg__err(CG_ERR_NULL, "cg_gradcheck: bad arguments");
    if (!(eps > 0)) eps = 1e-6;
    int n_diff = 0;
    for (int i = 0; i < n_inputs; ++i) {
        if (!inputs[i]) return cg__err(CG_ERR_NULL, "cg_gradcheck: input %d is NULL", i);
        if (inputs[i]->requires_grad) {
            if (inputs[i]->dtype != CG_FLOAT64)
                return cg__err(CG_ERR_DTYPE, "cg_gradcheck: input %d is %s; gradcheck needs float64", i,
                               cg_dtype_name(inputs[i]->dtype));
            if (!cg__is_contig(inputs[i]) || inputs[i]->grad_fn)
                return cg__err(CG_ERR_VALUE, "cg_gradcheck: input %d must be a contiguous leaf", i);
            ++n_diff;
        }
    }
    if (!n_diff) return cg__err(CG_ERR_VALUE, "cg_gradcheck: no input requires grad");

    /* Random projection so every output element matters, fixed per call. */
    cg_tensor *y0 = NULL, *v = NULL;
    int prev = cg_set_grad_enabled(0);
    cg_status st = fn(ctx, n_inputs, inputs, &y0);
    cg_set_grad_enabled(prev);
    if (st) return st;
    if (!y0) return cg__err(CG_ERR_CALLBACK, "cg_gradcheck: fn returned no tensor");
    if (!cg__is_float(y0->dtype)) {
        cg_tensor_free(y0);
        return cg__err(CG_ERR_DTYPE, "cg_gradcheck: fn output must be floating point");
    }
    st = cg__new(y0->dtype, y0->ndim, y0->shape, 0, &v);
    if (!st)
        for (int64_t i = 0; i < v->numel; ++i) cg__store(cg__ptr(v), v->dtype, i, 0.5 + cg__rng_uniform());
    cg_tensor_free(y0);
    if (st) return st;

    cg_tensor **diff = (cg_tensor **)calloc((size_t)n_inputs, sizeof *diff);
    cg_tensor **grads = (cg_tensor **)calloc((size_t)n_inputs, sizeof *grads);
    int *which = (int *)calloc((size_t)n_inputs, sizeof *which);
    cg_tensor *loss = NULL;
    if (!diff || !grads || !which) {
        st = cg__err(CG_ERR_NOMEM, "cg_gradcheck: out of memory");
        goto done;
    }
    int k = 0;
    for (int i = 0; i < n_inputs; ++i)
        if (inputs[i]->requires_grad) {
            diff[k] = inputs[i];
            which[k++] = i;
        }
    prev = cg_set_grad_enabled(1);
    st = projected(fn, ctx, n_inputs, inputs, v, &loss);
    if (!st) st = cg_grad(1, &loss, NULL, k, diff, 0, 0, 1, grads);
    cg_set_grad_enabled(prev);
    for (int j = 0; j < k && !st; ++j) /* a row-sparse gradient is compared densely */
        if (grads[j] && grads[j]->layout) {
            cg_tensor *d = NULL;
            st = cg_sparse_to_dense(grads[j], &d);
            cg_tensor_free(grads[j]);
            grads[j] = d;
        }
    if (st) goto done;

    prev = cg_set_grad_enabled(0);
    for (int j = 0; j < k && !st; ++j) {
        double *x = (double *)cg__ptr(diff[j]);
        cg_tensor *g = grads[j];
        for (int64_t e = 0; e < diff[j]->numel && !st; ++e) {
            double orig = x[e], lp = 0, lm = 0;
            cg_tensor *l = NULL;
            x[e] = orig + eps;
            st = projected(fn, ctx, n_inputs, inputs, v, &l);
            if (!st) lp = cg__load(cg__ptr(l), l->dtype, 0);
            cg_tensor_free(l);
            l = NULL;
            x[e] = orig - eps;
            if (!st) st = projected(fn, ctx, n_inputs, inputs, v, &l);
            if (!st) lm = cg__load(cg__ptr(l), l->dtype, 0);
            cg_tensor_free(l);
            x[e] = orig;
            if (st) break;
            double numeric = (lp - lm) / (2 * eps);
            double analytic = 0.0;
            if (g) {
                int64_t idx[CG_MAX_DIMS] = {0}, rem = e, off = 0;
                for (int d = g->ndim - 1; d >= 0; --d) {
                    idx[d] = rem % g->shape[d];
                    rem /= g->shape[d];
                    off += idx[d] * g->strides[d];
                }
                analytic = cg__load(cg__ptr(g), g->dtype, off);
            }
            if (!(fabs(analytic - numeric) <= atol + rtol * fabs(numeric)))
                st = cg__err(CG_ERR_VALUE,
                             "cg_gradcheck: gradient mismatch for input %d at flat element %lld: "
                             "analytic %.10g, numeric %.10g",
                             which[j], (long long)e, analytic, numeric);
        }
    }
    cg_set_grad_enabled(prev);
done:
    cg_tensor_free(loss);
    if (grads)
        for (int j = 0; j < n_inputs; ++j) cg_tensor_free(grads[j]);
    free(grads);
    free(diff);
    free(which);
    cg_tensor_free(v);
    return st;
}
