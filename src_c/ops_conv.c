/*
 * ops_conv.c -- 2-D convolution and pooling.
 *
 * conv2d runs im2col + one GEMM per image and group:
 *   cols (C_in*kH*kW, Ho*Wo) of image n; group g uses rows [g*K, (g+1)*K),
 *   K = C_in/groups*kH*kW, and out[n, g*Og:(g+1)*Og] = W_g (Og, K) @ cols_g.
 * A 1x1 kernel with stride 1 and no padding uses the image itself as cols.
 *
 * Its derivatives are two more recorded ops, each differentiable through
 * conv2d and each other (as in PyTorch), so double backward works:
 *   conv2d_input_backward(g, w)  = dL/dx  (transposed conv: W^T @ g, col2im)
 *     d/dg <., h> = conv2d(h, w)          d/dw <., h> = conv2d_weight_backward(h, g)
 *   conv2d_weight_backward(x, g) = dL/dw  (sum over n of g_n @ cols_n^T)
 *     d/dx <., k> = conv2d_input_backward(g, k)   d/dg <., k> = conv2d(x, k)
 *
 * Pooling: max_pool2d records the argmax of each window (int64, index into
 * the H*W plane). Its backward scatters g to those positions
 * (max_pool2d_backward); the derivative of that scatter gathers at the same
 * positions (max_pool2d_gather), whose derivative is the scatter again.
 * avg_pool2d is linear; avg_pool2d_backward is its adjoint and vice versa.
 *
 * On a device every one of these ops keeps its checks and recording here
 * and runs the backend kernel of the same name on its outputs and inputs
 * (docs/backend.md, "Indexing, embedding, dropout, convolution and pooling").
 */
/* GCC's -O2 cost model ("very-cheap") leaves the im2col/col2im and pooling
 * row loops scalar (unknown trip counts need an epilogue): ask for the
 * dynamic model here instead of depending on the build's flags. Before the
 * includes so header inlines get the same options. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif
#include <stdio.h>

#include "cg_internal.h"

/* ------------------------------------------------------------ parameters */
typedef struct {
    int64_t sh, sw, ph, pw, dh, dw, groups;
} conv_params;

#define CONV_NPARAM 7 /* iparam[0..6] = conv_params, iparam[7..10] = a 4-D shape */

static void params_store(cg_node *node, const conv_params *p, const int64_t *shape4) {
    int64_t v[CONV_NPARAM] = {p->sh, p->sw, p->ph, p->pw, p->dh, p->dw, p->groups};
    for (int i = 0; i < CONV_NPARAM; ++i) node->iparam[i] = v[i];
    for (int i = 0; i < 4; ++i) node->iparam[CONV_NPARAM + i] = shape4 ? shape4[i] : 0;
    node->n_iparam = CONV_NPARAM + 4;
}

static conv_params params_load(const cg_node *node) {
    const int64_t *v = node->iparam;
    conv_params p = {v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
    return p;
}

/* Output length of one spatial dim (floor), may be <= 0 for bad input. */
static int64_t conv_out_len(int64_t in, int64_t k, int64_t s, int64_t pad, int64_t dil) {
    int64_t span = in + 2 * pad - dil * (k - 1) - 1;
    return span < 0 ? 0 : span / s + 1;
}

/* ------------------------------------------------------ typed dispatch */
static void gemm_dt(cg_dtype dt, int ta, int tb, int64_t m, int64_t n, int64_t k, const void *a,
                    int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
    if (dt == CG_FLOAT32)
        cg__sgemm(ta, tb, m, n, k, 1.0f, (const float *)a, lda, (const float *)b, ldb,
                  (float)beta, (float *)c, ldc);
    else
        cg__dgemm(ta, tb, m, n, k, 1.0, (const double *)a, lda, (const double *)b, ldb, beta,
                  (double *)c, ldc);
}

/* Geometry of one conv: image (C, H, W) -> (Ho, Wo) with a (kh, kw) kernel. */
typedef struct {
    int64_t C, H, W, kh, kw, Ho, Wo;
    conv_params p;
} conv_geom;

/* First and one-past-last output column whose input column
 * ow*sw + off lies in [0, W). */
static void valid_range(int64_t off, int64_t s, int64_t W, int64_t Wo, int64_t *lo, int64_t *hi) {
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = (W - 1 - off) < 0 ? 0 : (W - 1 - off) / s + 1;
    if (l > Wo) l = Wo;
    if (h > Wo) h = Wo;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/* im2col: x (C, H, W) contiguous -> cols (C*kh*kw, Ho*Wo); col2im: the
 * adjoint, adding cols into dx (C, H, W). */
#define DEFINE_IM2COL(T, SFX)                                                              \
    static void im2col_##SFX(const conv_geom *g, const T *x, T *cols) {                    \
        int64_t L = g->Ho * g->Wo;                                                         \
        for (int64_t c = 0; c < g->C; ++c)                                                 \
            for (int64_t ki = 0; ki < g->kh; ++ki)                                         \
                for (int64_t kj = 0; kj < g->kw; ++kj) {                                   \
                    T *row = cols + ((c * g->kh + ki) * g->kw + kj) * L;                   \
                    int64_t woff = kj * g->p.dw - g->p.pw, lo, hi;                         \
                    valid_range(woff, g->p.sw, g->W, g->Wo, &lo, &hi);                     \
                    for (int64_t oh = 0; oh < g->Ho; ++oh) {                               \
                        T *dst = row + oh * g->Wo;                                         \
                        int64_t ih = oh * g->p.sh - g->p.ph + ki * g->p.dh;                \
                        if (ih < 0 || ih >= g->H) {                                        \
                            memset(dst, 0, (size_t)g->Wo * sizeof(T));                     \
                            continue;                                                      \
                        }                                                                  \
                        const T *src = x + (c * g->H + ih) * g->W + woff;                  \
                        for (int64_t ow = 0; ow < lo; ++ow) dst[ow] = (T)0;                \
                        if (g->p.sw == 1)                                                  \
                            memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(T));     \
                        else                                                               \
                            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * g->p.sw]; \
                        for (int64_t ow = hi; ow < g->Wo; ++ow) dst[ow] = (T)0;            \
                    }                                                                      \
                }                                                                          \
    }                                                                                      \
    static void col2im_##SFX(const conv_geom *g, const T *cols, T *dx) {                   \
        int64_t L = g->Ho * g->Wo;                                                         \
        for (int64_t c = 0; c < g->C; ++c)                                                 \
            for (int64_t ki = 0; ki < g->kh; ++ki)                                         \
                for (int64_t kj = 0; kj < g->kw; ++kj) {                                   \
                    const T *row = cols + ((c * g->kh + ki) * g->kw + kj) * L;             \
                    int64_t woff = kj * g->p.dw - g->p.pw, lo, hi;                         \
                    valid_range(woff, g->p.sw, g->W, g->Wo, &lo, &hi);                     \
                    for (int64_t oh = 0; oh < g->Ho; ++oh) {                               \
                        int64_t ih = oh * g->p.sh - g->p.ph + ki * g->p.dh;                \
                        if (ih < 0 || ih >= g->H) continue;                                \
                        const T *src = row + oh * g->Wo;                                   \
                        T *dst = dx + (c * g->H + ih) * g->W + woff;                       \
                        if (g->p.sw == 1)                                                  \
                            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] += src[ow];       \
                        else                                                               \
                            for (int64_t ow = lo; ow < hi; ++ow) dst[ow * g->p.sw] += src[ow]; \
                    }                                                                      \
                }                                                                          \
    }

DEFINE_IM2COL(float, f)
DEFINE_IM2COL(double, d)

static void im2col_dt(cg_dtype dt, const conv_geom *g, const void *x, void *cols) {
    if (dt == CG_FLOAT32) im2col_f(g, (const float *)x, (float *)cols);
    else im2col_d(g, (const double *)x, (double *)cols);
}
static void col2im_dt(cg_dtype dt, const conv_geom *g, const void *cols, void *dx) {
    if (dt == CG_FLOAT32) col2im_f(g, (const float *)cols, (float *)dx);
    else col2im_d(g, (const double *)cols, (double *)dx);
}

/* The image is its own cols matrix. */
static int is_pointwise(const conv_geom *g) {
    return g->kh == 1 && g->kw == 1 && g->p.sh == 1 && g->p.sw == 1 && g->p.ph == 0 &&
           g->p.pw == 0;
}

static cg_status alloc_cols(const conv_geom *g, cg_dtype dt, void **cols) {
    *cols = NULL;
    if (is_pointwise(g)) return CG_OK;
    size_t n = (size_t)(g->C * g->kh * g->kw) * (size_t)(g->Ho * g->Wo);
    *cols = malloc(n * cg_dtype_size(dt) + 1);
    if (!*cols) return cg__err(CG_ERR_NOMEM, "cg_conv2d: cannot allocate the %zu-element im2col buffer", n);
    return CG_OK;
}

/* The device form of the three conv kernels: out (shape, zero-filled when
 * zero) and, unless skip, kernel name on (out, a, b[, c]) with the conv
 * parameters as ints. */
static cg_status conv_device(const char *name, int dev, cg_dtype dt, const int64_t *shape, int zero,
                             int skip, cg_tensor *a, cg_tensor *b, cg_tensor *c,
                             const conv_params *p, cg_tensor **out) {
    cg_tensor *r;
    CG_TRY(cg__new_on(dev, dt, 4, shape, zero, &r));
    if (!skip) {
        int64_t ip[CONV_NPARAM] = {p->sh, p->sw, p->ph, p->pw, p->dh, p->dw, p->groups};
        cg_tensor *ts[4] = {r, a, b, c};
        cg_status st = cg__kernel(dev, name, 1, c ? 4 : 3, ts, 0, NULL, CONV_NPARAM, ip);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    }
    *out = r;
    return CG_OK;
}

/* ------------------------------------------------------------ kernels */
/* out (N, O, Ho, Wo) = conv(x (N, C, H, W), w (O, C/groups, kh, kw)) [+ bias]. */
static cg_status conv_fwd_kernel(cg_tensor *x, cg_tensor *w, cg_tensor *bias,
                                 const conv_params *p, cg_tensor **out) {
    cg_dtype dt = x->dtype;
    int64_t N = x->shape[0], O = w->shape[0], G = p->groups;
    conv_geom g = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3], 0, 0, *p};
    g.Ho = conv_out_len(g.H, g.kh, p->sh, p->ph, p->dh);
    g.Wo = conv_out_len(g.W, g.kw, p->sw, p->pw, p->dw);
    int64_t oshape[4] = {N, O, g.Ho, g.Wo};
    int64_t L = g.Ho * g.Wo, Og = O / G, K = g.C / G * g.kh * g.kw;
    size_t esz = cg_dtype_size(dt);
    if (cg__dev(x))
        return conv_device("conv2d", cg__dev(x), dt, oshape, 0, N * O * L == 0, x, w, bias, p, out);

    cg_tensor *xc = NULL, *wc = NULL, *bc = NULL, *r = NULL;
    void *cols = NULL;
    cg_status st = cg__new(dt, 4, oshape, 0, &r);
    if (!st) st = cg__contig(x, &xc);
    if (!st) st = cg__contig(w, &wc);
    if (!st && bias) st = cg__contig(bias, &bc);
    if (!st && N * O * L > 0) st = alloc_cols(&g, dt, &cols);
    if (st) goto fail;
    if (N * O * L > 0) {
        const char *xp = (const char *)cg__ptr(xc), *wp = (const char *)cg__ptr(wc);
        char *rp = (char *)cg__ptr(r);
        for (int64_t n = 0; n < N; ++n) {
            const char *xn = xp + (size_t)(n * g.C * g.H * g.W) * esz;
            const char *cn = xn;
            if (cols) {
                im2col_dt(dt, &g, xn, cols);
                cn = (const char *)cols;
            }
            for (int64_t gi = 0; gi < G; ++gi)
                gemm_dt(dt, 0, 0, Og, L, K, wp + (size_t)(gi * Og * K) * esz, K,
                        cn + (size_t)(gi * K * L) * esz, L, 0.0,
                        rp + (size_t)((n * O + gi * Og) * L) * esz, L);
        }
        if (bc) {
            for (int64_t n = 0; n < N; ++n)
                for (int64_t o = 0; o < O; ++o) {
                    int64_t base = (n * O + o) * L;
                    if (dt == CG_FLOAT32) {
                        float *q = (float *)rp + base, bv = ((const float *)cg__ptr(bc))[o];
                        for (int64_t i = 0; i < L; ++i) q[i] += bv;
                    } else {
                        double *q = (double *)rp + base, bv = ((const double *)cg__ptr(bc))[o];
                        for (int64_t i = 0; i < L; ++i) q[i] += bv;
                    }
                }
        }
    }
    free(cols);
    cg_tensor_free(xc);
    cg_tensor_free(wc);
    cg_tensor_free(bc);
    *out = r;
    return CG_OK;
fail:
    free(cols);
    cg_tensor_free(xc);
    cg_tensor_free(wc);
    cg_tensor_free(bc);
    cg_tensor_free(r);
    return st;
}

/* dx (xshape) = conv_transpose(gy (N, O, Ho, Wo), w (O, C/G, kh, kw)). */
static cg_status conv_dx_kernel(cg_tensor *gy, cg_tensor *w, const int64_t *xshape,
                                const conv_params *p, cg_tensor **out) {
    cg_dtype dt = gy->dtype;
    int64_t N = xshape[0], O = w->shape[0], G = p->groups;
    conv_geom g = {xshape[1], xshape[2], xshape[3], w->shape[2], w->shape[3], gy->shape[2],
                   gy->shape[3], *p};
    int64_t L = g.Ho * g.Wo, Og = O / G, K = g.C / G * g.kh * g.kw;
    size_t esz = cg_dtype_size(dt);
    int64_t numel = N * g.C * g.H * g.W;
    if (cg__dev(gy))
        return conv_device("conv2d_input_backward", cg__dev(gy), dt, xshape, 0, numel == 0, gy, w,
                           NULL, p, out);
    cg_tensor *gc = NULL, *wc = NULL, *r = NULL;
    void *cols = NULL;
    int pointwise = is_pointwise(&g);
    cg_status st = cg__new(dt, 4, xshape, !pointwise, &r);
    if (!st) st = cg__contig(gy, &gc);
    if (!st) st = cg__contig(w, &wc);
    if (!st && r->numel > 0) st = alloc_cols(&g, dt, &cols);
    if (st) goto fail;
    if (r->numel > 0) {
        const char *gp = (const char *)cg__ptr(gc), *wp = (const char *)cg__ptr(wc);
        char *rp = (char *)cg__ptr(r);
        for (int64_t n = 0; n < N; ++n) {
            char *dxn = rp + (size_t)(n * g.C * g.H * g.W) * esz;
            char *cn = cols ? (char *)cols : dxn;
            for (int64_t gi = 0; gi < G; ++gi)
                gemm_dt(dt, 1, 0, K, L, Og, wp + (size_t)(gi * Og * K) * esz, K,
                        gp + (size_t)((n * O + gi * Og) * L) * esz, L, 0.0,
                        cn + (size_t)(gi * K * L) * esz, L);
            if (cols) col2im_dt(dt, &g, cols, dxn);
        }
    }
    free(cols);
    cg_tensor_free(gc);
    cg_tensor_free(wc);
    *out = r;
    return CG_OK;
fail:
    free(cols);
    cg_tensor_free(gc);
    cg_tensor_free(wc);
    cg_tensor_free(r);
    return st;
}

/* dw (wshape) = sum_n gy_n (O, L) @ cols(x_n)^T, per group. */
static cg_status conv_dw_kernel(cg_tensor *x, cg_tensor *gy, const int64_t *wshape,
                                const conv_params *p, cg_tensor **out) {
    cg_dtype dt = x->dtype;
    int64_t N = x->shape[0], O = wshape[0], G = p->groups;
    conv_geom g = {x->shape[1], x->shape[2], x->shape[3], wshape[2], wshape[3], gy->shape[2],
                   gy->shape[3], *p};
    int64_t L = g.Ho * g.Wo, Og = O / G, K = g.C / G * g.kh * g.kw;
    size_t esz = cg_dtype_size(dt);
    if (cg__dev(x)) {
        int skip = O * wshape[1] * g.kh * g.kw == 0 || N * L == 0;
        return conv_device("conv2d_weight_backward", cg__dev(x), dt, wshape, skip, skip, x, gy, NULL, p, out);
    }
    cg_tensor *xc = NULL, *gc = NULL, *r = NULL;
    void *cols = NULL;
    cg_status st = cg__new(dt, 4, wshape, 1, &r);
    if (!st) st = cg__contig(x, &xc);
    if (!st) st = cg__contig(gy, &gc);
    if (!st && r->numel > 0 && N * L > 0) st = alloc_cols(&g, dt, &cols);
    if (st) goto fail;
    if (r->numel > 0 && N * L > 0) {
        const char *xp = (const char *)cg__ptr(xc), *gp = (const char *)cg__ptr(gc);
        char *rp = (char *)cg__ptr(r);
        for (int64_t n = 0; n < N; ++n) {
            const char *xn = xp + (size_t)(n * g.C * g.H * g.W) * esz;
            const char *cn = xn;
            if (cols) {
                im2col_dt(dt, &g, xn, cols);
                cn = (const char *)cols;
            }
            for (int64_t gi = 0; gi < G; ++gi)
                gemm_dt(dt, 0, 1, Og, K, L, gp + (size_t)((n * O + gi * Og) * L) * esz, L,
                        cn + (size_t)(gi * K * L) * esz, L, n == 0 ? 0.0 : 1.0,
                        rp + (size_t)(gi * Og * K) * esz, K);
        }
    }
    free(cols);
    cg_tensor_free(xc);
    cg_tensor_free(gc);
    *out = r;
    return CG_OK;
fail:
    free(cols);
    cg_tensor_free(xc);
    cg_tensor_free(gc);
    cg_tensor_free(r);
    return st;
}

/* ----------------------------------------------------------- recorded ops */
static cg_status conv2d_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status conv_dx_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status conv_dw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static const cg_op OP_CONV2D = {"conv2d", conv2d_backward};
static const cg_op OP_CONV_DX = {"conv2d_input_backward", conv_dx_backward};
static const cg_op OP_CONV_DW = {"conv2d_weight_backward", conv_dw_backward};

/* Last step of the three conv ops: when grad is wanted, records op over the
 * nin tensors ins, saving ins[0] and ins[1], and stores p and shape; then
 * *out = r. On failure r is freed. */
static cg_status record_conv(const cg_op *op, int nin, cg_tensor **ins, const conv_params *p,
                             const int64_t *shape, cg_tensor *r, cg_tensor **out) {
    if (cg__wants_gradn(nin, ins)) {
        cg_node *node;
        cg_status st = cg__record(op, nin, ins, 1, &r, &node);
        if (!st) st = cg__save(node, ins[0]);
        if (!st) st = cg__save(node, ins[1]);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
        params_store(node, p, shape);
    }
    *out = r;
    return CG_OK;
}

/* conv2d without argument checks (callers pass consistent tensors). */
static cg_status conv_forward(cg_tensor *x, cg_tensor *w, cg_tensor *bias, const conv_params *p,
                              cg_tensor **out) {
    cg_tensor *r;
    CG_TRY(conv_fwd_kernel(x, w, bias, p, &r));
    cg_tensor *ins[3] = {x, w, bias};
    return record_conv(&OP_CONV2D, bias ? 3 : 2, ins, p, NULL, r, out);
}

/* dL/dx of conv2d for upstream gy: inputs (gy, w). */
static cg_status conv_input_grad(cg_tensor *gy, cg_tensor *w, const int64_t *xshape,
                                 const conv_params *p, cg_tensor **out) {
    cg_tensor *r;
    CG_TRY(conv_dx_kernel(gy, w, xshape, p, &r));
    cg_tensor *ins[2] = {gy, w};
    return record_conv(&OP_CONV_DX, 2, ins, p, xshape, r, out);
}

/* dL/dw of conv2d for upstream gy: inputs (x, gy). */
static cg_status conv_weight_grad(cg_tensor *x, cg_tensor *gy, const int64_t *wshape,
                                  const conv_params *p, cg_tensor **out) {
    cg_tensor *r;
    CG_TRY(conv_dw_kernel(x, gy, wshape, p, &r));
    cg_tensor *ins[2] = {x, gy};
    return record_conv(&OP_CONV_DW, 2, ins, p, wshape, r, out);
}

static cg_status conv2d_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    conv_params p = params_load(node);
    cg_tensor *x = NULL, *w = NULL, *g = gout[0];
    cg_status st = cg__saved(node, 0, &x);
    if (!st) st = cg__saved(node, 1, &w);
    if (!st && node->needs_grad[0]) st = conv_input_grad(g, w, x->shape, &p, &gin[0]);
    if (!st && node->needs_grad[1]) st = conv_weight_grad(x, g, w->shape, &p, &gin[1]);
    if (!st && node->n_inputs > 2 && node->needs_grad[2]) {
        int dims[3] = {0, 2, 3};
        st = cg_sum(g, dims, 3, 0, &gin[2]);
    }
    cg_tensor_free(x);
    cg_tensor_free(w);
    return st;
}

static cg_status conv_dx_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    conv_params p = params_load(node);
    cg_tensor *gy = NULL, *w = NULL, *h = gout[0];
    cg_status st = cg__saved(node, 0, &gy);
    if (!st) st = cg__saved(node, 1, &w);
    if (!st && node->needs_grad[0]) st = conv_forward(h, w, NULL, &p, &gin[0]);
    if (!st && node->needs_grad[1]) st = conv_weight_grad(h, gy, w->shape, &p, &gin[1]);
    cg_tensor_free(gy);
    cg_tensor_free(w);
    return st;
}

static cg_status conv_dw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    conv_params p = params_load(node);
    cg_tensor *x = NULL, *gy = NULL, *k = gout[0];
    cg_status st = cg__saved(node, 0, &x);
    if (!st) st = cg__saved(node, 1, &gy);
    if (!st && node->needs_grad[0]) st = conv_input_grad(gy, k, x->shape, &p, &gin[0]);
    if (!st && node->needs_grad[1]) st = conv_forward(x, k, NULL, &p, &gin[1]);
    cg_tensor_free(x);
    cg_tensor_free(gy);
    return st;
}

cg_status cg_conv2d(cg_tensor *x, cg_tensor *weight, cg_tensor *bias, const int64_t stride[2],
                    const int64_t padding[2], const int64_t dilation[2], int64_t groups,
                    cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(x);
    CG_CHECK_TD(weight);
    if (bias) CG_CHECK_TD(bias);
    cg_tensor *all[3] = {x, weight, bias};
    CG_TRY(cg__same_device("cg_conv2d", 3, all, NULL));
    char s1[CG_SHAPE_STR_LEN], s2[CG_SHAPE_STR_LEN];
    if (!cg__is_float(x->dtype) || weight->dtype != x->dtype || (bias && bias->dtype != x->dtype))
        return cg__err(CG_ERR_DTYPE,
                       "cg_conv2d: input, weight and bias must share one floating dtype (got %s, %s, %s)",
                       cg_dtype_name(x->dtype), cg_dtype_name(weight->dtype),
                       bias ? cg_dtype_name(bias->dtype) : "none");
    if (x->ndim != 4)
        return cg__err(CG_ERR_SHAPE, "cg_conv2d: input must be 4-D (N, C_in, H, W), got shape %s",
                       cg__shape_str(x->ndim, x->shape, s1, sizeof s1));
    if (weight->ndim != 4)
        return cg__err(CG_ERR_SHAPE,
                       "cg_conv2d: weight must be 4-D (C_out, C_in/groups, kH, kW), got shape %s",
                       cg__shape_str(weight->ndim, weight->shape, s1, sizeof s1));
    conv_params p = {stride ? stride[0] : 1, stride ? stride[1] : 1,
                     padding ? padding[0] : 0, padding ? padding[1] : 0,
                     dilation ? dilation[0] : 1, dilation ? dilation[1] : 1, groups};
    if (p.sh < 1 || p.sw < 1)
        return cg__err(CG_ERR_VALUE, "cg_conv2d: stride must be >= 1, got (%lld, %lld)",
                       (long long)p.sh, (long long)p.sw);
    if (p.ph < 0 || p.pw < 0)
        return cg__err(CG_ERR_VALUE, "cg_conv2d: padding must be >= 0, got (%lld, %lld)",
                       (long long)p.ph, (long long)p.pw);
    if (p.dh < 1 || p.dw < 1)
        return cg__err(CG_ERR_VALUE, "cg_conv2d: dilation must be >= 1, got (%lld, %lld)",
                       (long long)p.dh, (long long)p.dw);
    if (groups < 1)
        return cg__err(CG_ERR_VALUE, "cg_conv2d: groups must be >= 1, got %lld", (long long)groups);
    int64_t C = x->shape[1], O = weight->shape[0], kh = weight->shape[2], kw = weight->shape[3];
    if (C % groups != 0)
        return cg__err(CG_ERR_SHAPE, "cg_conv2d: input channels %lld (input shape %s) not divisible by groups %lld",
                       (long long)C, cg__shape_str(4, x->shape, s1, sizeof s1), (long long)groups);
    if (O % groups != 0)
        return cg__err(CG_ERR_SHAPE, "cg_conv2d: output channels %lld (weight shape %s) not divisible by groups %lld",
                       (long long)O, cg__shape_str(4, weight->shape, s1, sizeof s1), (long long)groups);
    if (weight->shape[1] != C / groups)
        return cg__err(CG_ERR_SHAPE,
                       "cg_conv2d: weight shape %s expects %lld input channels per group, but input %s "
                       "has %lld channels in %lld group(s)",
                       cg__shape_str(4, weight->shape, s1, sizeof s1), (long long)weight->shape[1],
                       cg__shape_str(4, x->shape, s2, sizeof s2), (long long)C, (long long)groups);
    if (kh < 1 || kw < 1)
        return cg__err(CG_ERR_SHAPE, "cg_conv2d: kernel size must be >= 1, weight shape %s",
                       cg__shape_str(4, weight->shape, s1, sizeof s1));
    if (bias && (bias->ndim != 1 || bias->shape[0] != O))
        return cg__err(CG_ERR_SHAPE, "cg_conv2d: bias must have shape (%lld,), got %s", (long long)O,
                       cg__shape_str(bias->ndim, bias->shape, s1, sizeof s1));
    int64_t eh = p.dh * (kh - 1) + 1, ew = p.dw * (kw - 1) + 1;
    if (x->shape[2] + 2 * p.ph < eh || x->shape[3] + 2 * p.pw < ew)
        return cg__err(CG_ERR_SHAPE,
                       "cg_conv2d: padded input size (%lld x %lld) is smaller than the dilated "
                       "kernel (%lld x %lld); input %s, weight %s",
                       (long long)(x->shape[2] + 2 * p.ph), (long long)(x->shape[3] + 2 * p.pw),
                       (long long)eh, (long long)ew, cg__shape_str(4, x->shape, s1, sizeof s1),
                       cg__shape_str(4, weight->shape, s2, sizeof s2));
    return conv_forward(x, weight, bias, &p, out);
}

/* ================================================================ pooling */
typedef struct {
    int64_t P, H, W, Ho, Wo; /* P: planes (product of the leading dims) */
    int64_t kh, kw, sh, sw, ph, pw;
} pool_geom;

/* iparam layout: 0..5 kernel/stride/padding, 6 count_include_pad,
 * 7 input ndim, 8.. input shape. */
#define POOL_IP_SHAPE 8

static void pool_store(cg_node *node, const pool_geom *g, int cip, int ndim, const int64_t *xshape) {
    int64_t v[7] = {g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, cip};
    for (int i = 0; i < 7; ++i) node->iparam[i] = v[i];
    node->iparam[7] = ndim;
    for (int i = 0; i < ndim; ++i) node->iparam[POOL_IP_SHAPE + i] = xshape[i];
    node->n_iparam = POOL_IP_SHAPE + ndim;
}

static pool_geom pool_load(const cg_node *node, int *cip, int *ndim, int64_t *xshape) {
    const int64_t *v = node->iparam;
    *cip = (int)v[6];
    *ndim = (int)v[7];
    for (int i = 0; i < *ndim; ++i) xshape[i] = v[POOL_IP_SHAPE + i];
    pool_geom g = {1, xshape[*ndim - 2], xshape[*ndim - 1], 0, 0, v[0], v[1], v[2], v[3], v[4], v[5]};
    for (int i = 0; i < *ndim - 2; ++i) g.P *= xshape[i];
    g.Ho = conv_out_len(g.H, g.kh, g.sh, g.ph, 1);
    g.Wo = conv_out_len(g.W, g.kw, g.sw, g.pw, 1);
    return g;
}

/* Checks x and the window arguments; fills g. */
static cg_status pool_check(const char *fn, cg_tensor *x, const int64_t kernel[2],
                            const int64_t stride[2], const int64_t padding[2], pool_geom *g) {
    char s1[CG_SHAPE_STR_LEN];
    if (!kernel) return cg__err(CG_ERR_NULL, "%s: kernel is NULL", fn);
    if (!cg__is_float(x->dtype))
        return cg__err(CG_ERR_DTYPE, "%s: input must be float32 or float64, got %s", fn,
                       cg_dtype_name(x->dtype));
    if (x->ndim != 4 && x->ndim != 3)
        return cg__err(CG_ERR_SHAPE, "%s: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape %s",
                       fn, cg__shape_str(x->ndim, x->shape, s1, sizeof s1));
    g->kh = kernel[0];
    g->kw = kernel[1];
    g->sh = stride ? stride[0] : g->kh; /* PyTorch: stride defaults to the kernel */
    g->sw = stride ? stride[1] : g->kw;
    g->ph = padding ? padding[0] : 0;
    g->pw = padding ? padding[1] : 0;
    if (g->kh < 1 || g->kw < 1)
        return cg__err(CG_ERR_VALUE, "%s: kernel size must be >= 1, got (%lld, %lld)", fn,
                       (long long)g->kh, (long long)g->kw);
    if (g->sh < 1 || g->sw < 1)
        return cg__err(CG_ERR_VALUE, "%s: stride must be >= 1, got (%lld, %lld)", fn,
                       (long long)g->sh, (long long)g->sw);
    if (g->ph < 0 || g->pw < 0 || 2 * g->ph > g->kh || 2 * g->pw > g->kw)
        return cg__err(CG_ERR_VALUE,
                       "%s: padding (%lld, %lld) must be >= 0 and at most half the kernel (%lld, %lld)",
                       fn, (long long)g->ph, (long long)g->pw, (long long)g->kh, (long long)g->kw);
    int nd = x->ndim;
    g->H = x->shape[nd - 2];
    g->W = x->shape[nd - 1];
    g->P = 1;
    for (int i = 0; i < nd - 2; ++i) g->P *= x->shape[i];
    /* An empty image would leave every output window on padding alone,
     * with nothing to take the max / mean of (PyTorch refuses it too; only
     * a 4-D input's batch may be 0). */
    for (int i = nd == 4 ? 1 : 0; i < nd; ++i)
        if (x->shape[i] == 0)
            return cg__err(CG_ERR_SHAPE, "%s: input of shape %s has a zero-size dim %d; only the batch "
                           "dim of a 4-D input may be 0", fn, cg__shape_str(nd, x->shape, s1, sizeof s1), i);
    if (g->H + 2 * g->ph < g->kh || g->W + 2 * g->pw < g->kw)
        return cg__err(CG_ERR_SHAPE, "%s: padded input (%lld x %lld) of shape %s is smaller than the kernel (%lld x %lld)",
                       fn, (long long)(g->H + 2 * g->ph), (long long)(g->W + 2 * g->pw),
                       cg__shape_str(nd, x->shape, s1, sizeof s1), (long long)g->kh, (long long)g->kw);
    g->Ho = conv_out_len(g->H, g->kh, g->sh, g->ph, 1);
    g->Wo = conv_out_len(g->W, g->kw, g->sw, g->pw, 1);
    return CG_OK;
}

/* Window rows [*h0, *h1) of output row oh, clipped to the input. */
static inline void pool_window(int64_t o, int64_t s, int64_t pad, int64_t k, int64_t n,
                               int64_t *lo, int64_t *hi) {
    int64_t a = o * s - pad, b = a + k;
    *lo = a < 0 ? 0 : a;
    *hi = b > n ? n : b;
}

#define DEFINE_MAXPOOL(T, SFX)                                                             \
    static void maxpool_##SFX(const pool_geom *g, const T *x, T *y, int64_t *idx) {        \
        for (int64_t pl = 0; pl < g->P; ++pl) {                                            \
            const T *xp = x + pl * g->H * g->W;                                            \
            for (int64_t oh = 0; oh < g->Ho; ++oh) {                                       \
                int64_t h0, h1;                                                            \
                pool_window(oh, g->sh, g->ph, g->kh, g->H, &h0, &h1);                      \
                for (int64_t ow = 0; ow < g->Wo; ++ow) {                                   \
                    int64_t w0, w1;                                                        \
                    pool_window(ow, g->sw, g->pw, g->kw, g->W, &w0, &w1);                  \
                    int64_t bi = h0 * g->W + w0;                                           \
                    T best = xp[bi];                                                       \
                    int nan_any = 0;                                                       \
                    /* Branch-free: on random data the comparison is */                    \
                    /* unpredictable, and compilers turn selects into jumps. */             \
                    for (int64_t ih = h0; ih < h1; ++ih)                                   \
                        for (int64_t iw = w0; iw < w1; ++iw) {                             \
                            int64_t pos = ih * g->W + iw;                                  \
                            T v = xp[pos];                                                 \
                            bi ^= (bi ^ pos) & -(int64_t)(v > best);                       \
                            best = v > best ? v : best;                                    \
                            nan_any |= v != v;                                             \
                        }                                                                  \
                    if (nan_any) /* NaN propagates; PyTorch keeps the last one */          \
                        for (int64_t ih = h0; ih < h1; ++ih)                               \
                            for (int64_t iw = w0; iw < w1; ++iw)                           \
                                if (xp[ih * g->W + iw] != xp[ih * g->W + iw]) {            \
                                    bi = ih * g->W + iw;                                   \
                                    best = xp[bi];                                         \
                                }                                                          \
                    *y++ = best;                                                           \
                    *idx++ = bi;                                                           \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    /* dx plane += g at idx (dx zeroed by the caller). */                                  \
    static void maxpool_scatter_##SFX(const pool_geom *g, const T *gy, const int64_t *idx, \
                                      T *dx) {                                             \
        int64_t L = g->Ho * g->Wo;                                                         \
        for (int64_t pl = 0; pl < g->P; ++pl) {                                            \
            T *dp = dx + pl * g->H * g->W;                                                 \
            const T *gp = gy + pl * L;                                                     \
            const int64_t *ip = idx + pl * L;                                              \
            for (int64_t o = 0; o < L; ++o) dp[ip[o]] += gp[o];                            \
        }                                                                                  \
    }                                                                                      \
    static void maxpool_gather_##SFX(const pool_geom *g, const T *h, const int64_t *idx,   \
                                     T *y) {                                               \
        int64_t L = g->Ho * g->Wo;                                                         \
        for (int64_t pl = 0; pl < g->P; ++pl) {                                            \
            const T *hp = h + pl * g->H * g->W;                                            \
            const int64_t *ip = idx + pl * L;                                              \
            T *yp = y + pl * L;                                                            \
            for (int64_t o = 0; o < L; ++o) yp[o] = hp[ip[o]];                             \
        }                                                                                  \
    }                                                                                      \
    static void avgpool_##SFX(const pool_geom *g, int cip, const T *x, T *y) {             \
        for (int64_t pl = 0; pl < g->P; ++pl) {                                            \
            const T *xp = x + pl * g->H * g->W;                                            \
            for (int64_t oh = 0; oh < g->Ho; ++oh) {                                       \
                int64_t h0, h1;                                                            \
                pool_window(oh, g->sh, g->ph, g->kh, g->H, &h0, &h1);                      \
                for (int64_t ow = 0; ow < g->Wo; ++ow) {                                   \
                    int64_t w0, w1;                                                        \
                    pool_window(ow, g->sw, g->pw, g->kw, g->W, &w0, &w1);                  \
                    T s = 0;                                                               \
                    for (int64_t ih = h0; ih < h1; ++ih)                                   \
                        for (int64_t iw = w0; iw < w1; ++iw) s += xp[ih * g->W + iw];      \
                    *y++ = s / (T)avg_divisor(g, cip, oh, ow);                             \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    /* dx (zeroed by the caller) += g / divisor over each window. */                       \
    static void avgpool_bwd_##SFX(const pool_geom *g, int cip, const T *gy, T *dx) {       \
        for (int64_t pl = 0; pl < g->P; ++pl) {                                            \
            T *dp = dx + pl * g->H * g->W;                                                 \
            for (int64_t oh = 0; oh < g->Ho; ++oh) {                                       \
                int64_t h0, h1;                                                            \
                pool_window(oh, g->sh, g->ph, g->kh, g->H, &h0, &h1);                      \
                for (int64_t ow = 0; ow < g->Wo; ++ow) {                                   \
                    int64_t w0, w1;                                                        \
                    pool_window(ow, g->sw, g->pw, g->kw, g->W, &w0, &w1);                  \
                    T v = *gy++ / (T)avg_divisor(g, cip, oh, ow);                          \
                    for (int64_t ih = h0; ih < h1; ++ih)                                   \
                        for (int64_t iw = w0; iw < w1; ++iw) dp[ih * g->W + iw] += v;      \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }

/* PyTorch's divisor: the window clipped to the padded input when padding
 * counts, else clipped to the input. */
static inline int64_t avg_divisor(const pool_geom *g, int cip, int64_t oh, int64_t ow) {
    int64_t h0 = oh * g->sh - g->ph, w0 = ow * g->sw - g->pw;
    int64_t h1 = h0 + g->kh, w1 = w0 + g->kw;
    if (h1 > g->H + g->ph) h1 = g->H + g->ph;
    if (w1 > g->W + g->pw) w1 = g->W + g->pw;
    if (cip) return (h1 - h0) * (w1 - w0);
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    if (h1 > g->H) h1 = g->H;
    if (w1 > g->W) w1 = g->W;
    return (h1 - h0) * (w1 - w0);
}

DEFINE_MAXPOOL(float, f)
DEFINE_MAXPOOL(double, d)

static cg_status maxpool_gather_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status maxpool_scatter_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status avgpool_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status avgpool_bwd_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
/* max_pool2d and the gather are the same map given idx: one backward. */
static const cg_op OP_MAXPOOL = {"max_pool2d", maxpool_gather_backward};
static const cg_op OP_MAXPOOL_GATHER = {"max_pool2d_gather", maxpool_gather_backward};
static const cg_op OP_MAXPOOL_BWD = {"max_pool2d_backward", maxpool_scatter_backward};
static const cg_op OP_AVGPOOL = {"avg_pool2d", avgpool_backward};
static const cg_op OP_AVGPOOL_BWD = {"avg_pool2d_backward", avgpool_bwd_backward};

/* Output shape: the input's leading dims, then (Ho, Wo). */
static void pool_out_shape(int ndim, const int64_t *xshape, const pool_geom *g, int64_t *oshape) {
    for (int i = 0; i < ndim - 2; ++i) oshape[i] = xshape[i];
    oshape[ndim - 2] = g->Ho;
    oshape[ndim - 1] = g->Wo;
}

/* The device form of the pooling kernels: kernel name on (outs..., ins...)
 * with the window as ints (kh, kw, sh, sw, ph, pw, count_include_pad). */
static cg_status pool_kernel(const char *name, int dev, int n_out, int n_tensors, cg_tensor **ts,
                             const pool_geom *g, int cip) {
    if (!ts[0]->numel) return CG_OK;
    int64_t ip[7] = {g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, cip};
    return cg__kernel(dev, name, n_out, n_tensors, ts, 0, NULL, 7, ip);
}

/* Records a one-input op whose backward needs the pool geometry (and idx). */
static cg_status pool_record(const cg_op *op, cg_tensor *in, cg_tensor *r, cg_tensor *idx,
                             const pool_geom *g, int cip, int ndim, const int64_t *xshape) {
    if (!cg__wants_grad1(in)) return CG_OK;
    cg_node *node;
    CG_TRY(cg__record(op, 1, &in, 1, &r, &node));
    if (idx) CG_TRY(cg__save(node, idx));
    pool_store(node, g, cip, ndim, xshape);
    return CG_OK;
}

/* y (out shape) = h (x shape) gathered at idx; recorded as max_pool2d_gather. */
static cg_status maxpool_gather(cg_tensor *h, cg_tensor *idx, const pool_geom *g, int ndim,
                                const int64_t *xshape, cg_tensor **out) {
    int64_t oshape[CG_MAX_DIMS];
    pool_out_shape(ndim, xshape, g, oshape);
    cg_tensor *hc, *r;
    int dev = cg__dev(h);
    CG_TRY(cg__contig(h, &hc));
    cg_status st = cg__new_on(dev, h->dtype, ndim, oshape, 0, &r);
    if (st) {
        cg_tensor_free(hc);
        return st;
    }
    if (dev) {
        cg_tensor *ts[3] = {r, hc, idx};
        st = pool_kernel("max_pool2d_gather", dev, 1, 3, ts, g, 0);
    } else if (h->dtype == CG_FLOAT32)
        maxpool_gather_f(g, (const float *)cg__ptr(hc), (const int64_t *)cg__ptr(idx), (float *)cg__ptr(r));
    else
        maxpool_gather_d(g, (const double *)cg__ptr(hc), (const int64_t *)cg__ptr(idx), (double *)cg__ptr(r));
    cg_tensor_free(hc);
    if (!st) st = pool_record(&OP_MAXPOOL_GATHER, h, r, idx, g, 0, ndim, xshape);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

/* dx (x shape) = gy scattered to idx; recorded as max_pool2d_backward. */
static cg_status maxpool_scatter(cg_tensor *gy, cg_tensor *idx, const pool_geom *g, int ndim,
                                 const int64_t *xshape, cg_tensor **out) {
    cg_tensor *gc, *r;
    int dev = cg__dev(gy);
    CG_TRY(cg__contig(gy, &gc));
    cg_status st = cg__new_on(dev, gy->dtype, ndim, xshape, !dev, &r);
    if (st) {
        cg_tensor_free(gc);
        return st;
    }
    if (dev) {
        cg_tensor *ts[3] = {r, gc, idx};
        st = pool_kernel("max_pool2d_backward", dev, 1, 3, ts, g, 0);
    } else if (gy->dtype == CG_FLOAT32)
        maxpool_scatter_f(g, (const float *)cg__ptr(gc), (const int64_t *)cg__ptr(idx), (float *)cg__ptr(r));
    else
        maxpool_scatter_d(g, (const double *)cg__ptr(gc), (const int64_t *)cg__ptr(idx), (double *)cg__ptr(r));
    cg_tensor_free(gc);
    if (!st) st = pool_record(&OP_MAXPOOL_BWD, gy, r, idx, g, 0, ndim, xshape);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

static cg_status maxpool_gather_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int cip, ndim;
    int64_t xshape[CG_MAX_DIMS];
    pool_geom g = pool_load(node, &cip, &ndim, xshape);
    cg_tensor *idx;
    CG_TRY(cg__saved(node, 0, &idx));
    cg_status st = maxpool_scatter(gout[0], idx, &g, ndim, xshape, &gin[0]);
    cg_tensor_free(idx);
    return st;
}

static cg_status maxpool_scatter_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int cip, ndim;
    int64_t xshape[CG_MAX_DIMS];
    pool_geom g = pool_load(node, &cip, &ndim, xshape);
    cg_tensor *idx;
    CG_TRY(cg__saved(node, 0, &idx));
    cg_status st = maxpool_gather(gout[0], idx, &g, ndim, xshape, &gin[0]);
    cg_tensor_free(idx);
    return st;
}

cg_status cg_max_pool2d(cg_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                        const int64_t padding[2], cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(x);
    pool_geom g = {0};
    CG_TRY(pool_check("cg_max_pool2d", x, kernel, stride, padding, &g));
    int64_t oshape[CG_MAX_DIMS];
    pool_out_shape(x->ndim, x->shape, &g, oshape);
    int dev = cg__dev(x);
    cg_tensor *xc = NULL, *r = NULL, *idx = NULL;
    cg_status st = cg__contig(x, &xc);
    if (!st) st = cg__new_on(dev, x->dtype, x->ndim, oshape, 0, &r);
    if (!st) st = cg__new_on(dev, CG_INT64, x->ndim, oshape, 0, &idx);
    if (!st && dev) {
        cg_tensor *ts[3] = {r, idx, xc};
        st = pool_kernel("max_pool2d", dev, 2, 3, ts, &g, 0);
        if (!st) st = pool_record(&OP_MAXPOOL, x, r, idx, &g, 0, x->ndim, x->shape);
    } else if (!st) {
        if (x->dtype == CG_FLOAT32)
            maxpool_f(&g, (const float *)cg__ptr(xc), (float *)cg__ptr(r), (int64_t *)cg__ptr(idx));
        else
            maxpool_d(&g, (const double *)cg__ptr(xc), (double *)cg__ptr(r), (int64_t *)cg__ptr(idx));
        st = pool_record(&OP_MAXPOOL, x, r, idx, &g, 0, x->ndim, x->shape);
    }
    cg_tensor_free(xc);
    cg_tensor_free(idx);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

/* y = avg_pool2d(x) (recorded as avg_pool2d), the checks already done. */
static cg_status avgpool_forward(cg_tensor *x, const pool_geom *g, int cip, cg_tensor **out) {
    int64_t oshape[CG_MAX_DIMS];
    pool_out_shape(x->ndim, x->shape, g, oshape);
    cg_tensor *xc, *r;
    int dev = cg__dev(x);
    CG_TRY(cg__contig(x, &xc));
    cg_status st = cg__new_on(dev, x->dtype, x->ndim, oshape, 0, &r);
    if (!st) {
        if (dev) {
            cg_tensor *ts[2] = {r, xc};
            st = pool_kernel("avg_pool2d", dev, 1, 2, ts, g, cip);
        } else if (x->dtype == CG_FLOAT32)
            avgpool_f(g, cip, (const float *)cg__ptr(xc), (float *)cg__ptr(r));
        else
            avgpool_d(g, cip, (const double *)cg__ptr(xc), (double *)cg__ptr(r));
        if (!st) st = pool_record(&OP_AVGPOOL, x, r, NULL, g, cip, x->ndim, x->shape);
        if (st) cg_tensor_free(r);
    }
    cg_tensor_free(xc);
    if (!st) *out = r;
    return st;
}

/* dx (x shape) = adjoint of avg_pool2d applied to gy (recorded). */
static cg_status avgpool_adjoint(cg_tensor *gy, const pool_geom *g, int cip, int ndim,
                                 const int64_t *xshape, cg_tensor **out) {
    cg_tensor *gc, *r;
    int dev = cg__dev(gy);
    CG_TRY(cg__contig(gy, &gc));
    cg_status st = cg__new_on(dev, gy->dtype, ndim, xshape, !dev, &r);
    if (!st) {
        if (dev) {
            cg_tensor *ts[2] = {r, gc};
            st = pool_kernel("avg_pool2d_backward", dev, 1, 2, ts, g, cip);
        } else if (gy->dtype == CG_FLOAT32)
            avgpool_bwd_f(g, cip, (const float *)cg__ptr(gc), (float *)cg__ptr(r));
        else
            avgpool_bwd_d(g, cip, (const double *)cg__ptr(gc), (double *)cg__ptr(r));
        if (!st) st = pool_record(&OP_AVGPOOL_BWD, gy, r, NULL, g, cip, ndim, xshape);
        if (st) cg_tensor_free(r);
    }
    cg_tensor_free(gc);
    if (!st) *out = r;
    return st;
}

static cg_status avgpool_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int cip, ndim;
    int64_t xshape[CG_MAX_DIMS];
    pool_geom g = pool_load(node, &cip, &ndim, xshape);
    return avgpool_adjoint(gout[0], &g, cip, ndim, xshape, &gin[0]);
}

static cg_status avgpool_bwd_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int cip, ndim;
    int64_t xshape[CG_MAX_DIMS];
    pool_geom g = pool_load(node, &cip, &ndim, xshape);
    return avgpool_forward(gout[0], &g, cip, &gin[0]);
}

cg_status cg_avg_pool2d(cg_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                        const int64_t padding[2], int count_include_pad, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(x);
    pool_geom g = {0};
    CG_TRY(pool_check("cg_avg_pool2d", x, kernel, stride, padding, &g));
    return avgpool_forward(x, &g, count_include_pad != 0, out);
}
