/*
 * ops_nn.c -- dropout.
 *
 * out = x * mask, mask[i] = 1/(1-p) with probability 1-p, else 0, drawn from
 * the process RNG (a 32-bit uniform per element, two per 64-bit draw, in
 * row-major order, so a seed gives the same mask for float32 and float64 and
 * with or without grad).
 * The mask is a constant of the op: the backward is g * mask (cg_mul), whose
 * own derivative is again a multiplication by the mask.
 * On a device the mask is drawn the same way on the host and copied over,
 * so a seed gives the same result on every device.
 */
#include "cg_internal.h"

static cg_status dropout_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *mask;
    CG_TRY(cg__saved(node, 0, &mask));
    cg_status st = cg_mul(gout[0], mask, &gin[0]);
    cg_tensor_free(mask);
    return st;
}

static const cg_op OP_DROPOUT = {"dropout", dropout_backward};

/* mask[i] = scale where the i-th 32-bit uniform u_i >= p, else 0; two
 * uniforms per 64-bit draw, in row-major order.
 * u >= p  <=>  bits >= ceil(p * 2^32). The mask value is selected by
 * and-ing the bit pattern of the scale with an all-ones/all-zeros word:
 * the keep decision is a coin flip, and compilers turn a ?: or a
 * multiply-by-bool into a mispredicted branch. */
static void draw_mask(cg_tensor *mask, double p, double scale) {
    int64_t n = mask->numel;
    uint64_t thr = (uint64_t)ceil(p * 4294967296.0);
    if (mask->dtype == CG_FLOAT32) {
        float *m = (float *)cg__ptr(mask);
        float s = (float)scale;
        uint32_t sbits;
        memcpy(&sbits, &s, sizeof sbits);
        for (int64_t i = 0; i < n; i += 2) {
            uint64_t bits = cg__rng_next();
            uint32_t lo = sbits & (0u - (uint32_t)((bits & 0xFFFFFFFFu) >= thr));
            uint32_t hi = sbits & (0u - (uint32_t)((bits >> 32) >= thr));
            memcpy(&m[i], &lo, sizeof lo);
            if (i + 1 < n) memcpy(&m[i + 1], &hi, sizeof hi);
        }
    } else {
        double *m = (double *)cg__ptr(mask);
        uint64_t sbits;
        memcpy(&sbits, &scale, sizeof sbits);
        for (int64_t i = 0; i < n; i += 2) {
            uint64_t bits = cg__rng_next();
            uint64_t lo = sbits & (0u - (uint64_t)((bits & 0xFFFFFFFFu) >= thr));
            uint64_t hi = sbits & (0u - (uint64_t)((bits >> 32) >= thr));
            memcpy(&m[i], &lo, sizeof lo);
            if (i + 1 < n) memcpy(&m[i + 1], &hi, sizeof hi);
        }
    }
}

/* y = x * mask on x's device, mask drawn on the host from the same stream
 * as the host op (so a seed gives one result on every device) and copied
 * over: one host-to-device transfer of numel elements per call. *mask
 * receives the device mask. */
static cg_status dropout_device(cg_tensor *x, double p, double scale, cg_tensor **mask,
                                cg_tensor **out) {
    int dev = cg__dev(x);
    cg_tensor *hm = NULL, *m = NULL, *r = NULL;
    cg_status st = cg__new(x->dtype, x->ndim, x->shape, 0, &hm);
    if (!st) {
        draw_mask(hm, p, scale);
        st = cg__new_on(dev, x->dtype, x->ndim, x->shape, 0, &m);
    }
    if (!st) st = cg__device_from_host(m, cg__ptr(hm));
    cg_tensor_free(hm);
    /* everything dropped: zeros, even where x is inf/NaN */
    if (!st) st = cg__new_on(dev, x->dtype, x->ndim, x->shape, p >= 1.0, &r);
    if (!st && p < 1.0 && r->numel) {
        static const double noprm[4] = {0, 0, 0, 0};
        cg_tensor *ts[3] = {r, x, m};
        st = cg__kernel(dev, "mul", 1, 3, ts, 4, noprm, 0, NULL);
    }
    if (st) {
        cg_tensor_free(m);
        cg_tensor_free(r);
        return st;
    }
    *mask = m;
    *out = r;
    return CG_OK;
}

cg_status cg_dropout(cg_tensor *x, double p, int training, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(x);
    if (!cg__is_float(x->dtype))
        return cg__err(CG_ERR_DTYPE, "cg_dropout: input must be float32 or float64, got %s",
                       cg_dtype_name(x->dtype));
    if (!(p >= 0.0 && p <= 1.0))
        return cg__err(CG_ERR_VALUE, "cg_dropout: probability p must be in [0, 1], got %g", p);
    if (!training || p == 0.0) {
        cg_tensor_retain(x);
        *out = x;
        return CG_OK;
    }
    double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
    cg_tensor *xc = NULL, *mask = NULL, *r = NULL;
    cg_status st;
    if (cg__dev(x)) {
        st = dropout_device(x, p, scale, &mask, &r);
        if (st) return st;
        goto record;
    }
    st = cg__contig(x, &xc);
    if (!st) st = cg__new(x->dtype, x->ndim, x->shape, 0, &mask);
    if (!st) st = cg__new(x->dtype, x->ndim, x->shape, 0, &r);
    if (st) goto done;
    draw_mask(mask, p, scale);
    int64_t n = x->numel;
    if (x->dtype == CG_FLOAT32) {
        float *y = (float *)cg__ptr(r);
        const float *m = (const float *)cg__ptr(mask), *xs = (const float *)cg__ptr(xc);
        if (p < 1.0)
            for (int64_t i = 0; i < n; ++i) y[i] = xs[i] * m[i];
        else /* everything dropped: zeros, even where x is inf/NaN */
            for (int64_t i = 0; i < n; ++i) y[i] = 0.0f;
    } else {
        double *y = (double *)cg__ptr(r);
        const double *m = (const double *)cg__ptr(mask), *xs = (const double *)cg__ptr(xc);
        if (p < 1.0)
            for (int64_t i = 0; i < n; ++i) y[i] = xs[i] * m[i];
        else
            for (int64_t i = 0; i < n; ++i) y[i] = 0.0;
    }
record:
    if (cg__wants_grad1(x)) {
        cg_node *node;
        st = cg__record(&OP_DROPOUT, 1, &x, 1, &r, &node);
        if (!st) st = cg__save(node, mask);
    }
done:
    cg_tensor_free(xc);
    cg_tensor_free(mask);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}
