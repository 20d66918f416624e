/* test_device.c -- the backend vtable from C alone: a mock backend over
 * malloc'd memory that implements a few kernels (copy, add, mul, mul_scalar,
 * fill_, add_, sum, the 2-norm and value clipping ones), device placement,
 * copies both ways, the tape across devices (to_device is differentiable),
 * the errors a user gets (mixed devices, ops without a device kernel,
 * kernels the backend lacks), buffer lifetimes, nll_loss's bounds check of a device target
 * (copied back only when its upload does not settle it), clip by norm and by
 * value with their results left on the device, and float16 as a host
 * storage type. */
#include "cgtest.h"

typedef struct mock {
    int allocs, releases, to_host_calls;
    int64_t live_bytes;
    char last_kernel[32];
} mock;

typedef struct buf {
    size_t nbytes;
    unsigned char data[];
} buf;

static cg_status m_alloc(void *ctx, size_t nbytes, int zero, void **handle) {
    mock *m = (mock *)ctx;
    buf *b = (buf *)malloc(sizeof *b + nbytes + 1);
    if (!b) return CG_ERR_NOMEM;
    b->nbytes = nbytes;
    if (zero) memset(b->data, 0, nbytes);
    else memset(b->data, 0xAB, nbytes); /* garbage, as device memory would be */
    ++m->allocs;
    m->live_bytes += (int64_t)nbytes;
    *handle = b;
    return CG_OK;
}

static void m_release(void *ctx, void *handle) {
    mock *m = (mock *)ctx;
    ++m->releases;
    m->live_bytes -= (int64_t)((buf *)handle)->nbytes;
    free(handle);
}

/* Element i (row-major) of a float64 device tensor, through its strides. */
static double *at64(cg_tensor *t, int64_t i) {
    int nd = cg_tensor_ndim(t);
    const int64_t *sh = cg_tensor_shape(t), *st = cg_tensor_strides(t);
    int64_t off = cg_tensor_offset(t);
    for (int d = nd - 1; d >= 0; --d) {
        off += (i % sh[d]) * st[d];
        i /= sh[d];
    }
    return (double *)(void *)((buf *)cg_tensor_device_handle(t))->data + off;
}

/* Only float64 and same-shape (or 0-d host scalar) operands: enough to test
 * the contract. */
static double in64(cg_tensor *t, int64_t i) {
    if (cg_tensor_device(t) == CG_DEVICE_CPU) return cgt_at(t, 0); /* a 0-d host scalar */
    return *at64(t, cg_tensor_numel(t) == 1 ? 0 : i);
}

static cg_status m_kernel(void *ctx, const char *name, int n_out, int n, cg_tensor *const *ts, int nf,
                          const double *f, int ni, const int64_t *ip) {
    mock *m = (mock *)ctx;
    (void)ni; (void)ip; (void)nf;
    snprintf(m->last_kernel, sizeof m->last_kernel, "%s", name);
    if (!strcmp(name, "nll_loss") && n == 4) { /* (loss, total weight; x (N, C), int64 target) */
        cg_tensor *x = ts[2], *t = ts[3];
        const int64_t N = cg_tensor_shape(x)[0], C = cg_tensor_shape(x)[1];
        const int64_t *tp = (const int64_t *)(const void *)((buf *)cg_tensor_device_handle(t))->data +
                            cg_tensor_offset(t);
        double s = 0, w = 0;
        for (int64_t k = 0; k < N; ++k) {
            if (tp[k] == ip[0]) continue;
            if (tp[k] < 0 || tp[k] >= C) /* the core's check must have refused it */
                return cg_set_error(CG_ERR_INDEX, "mock nll_loss: a target out of bounds");
            s += *at64(x, k * C + tp[k]);
            w += 1;
        }
        *at64(ts[1], 0) = w;
        *at64(ts[0], 0) = ip[1] == 1 ? -s / w : -s;
        return CG_OK;
    }
    if ((!strcmp(name, "copy") || !strcmp(name, "copy_")) && n == 2 &&
        cg_tensor_dtype(ts[0]) == CG_INT64 && cg_tensor_dtype(ts[1]) == CG_INT64 &&
        cg_tensor_device(ts[1]) != CG_DEVICE_CPU) { /* int64 device to device, bit for bit */
        for (int64_t i = 0; i < cg_tensor_numel(ts[0]); ++i) memcpy(at64(ts[0], i), at64(ts[1], i), 8);
        return CG_OK;
    }
    if (!strcmp(name, "clamp_abs_") && n_out == n && cg_tensor_dtype(ts[n - 1]) == CG_INT64) {
        /* (g_1..g_k, changed int64 [k];) */
        for (int k = 0; k < n - 1; ++k) {
            int64_t changed = 0;
            for (int64_t i = 0; i < cg_tensor_numel(ts[k]); ++i) {
                double *x = at64(ts[k], i);
                if (fabs(*x) > f[0]) {
                    *x = *x > 0 ? f[0] : -f[0];
                    ++changed;
                }
            }
            memcpy(at64(ts[n - 1], k), &changed, 8);
        }
        return CG_OK;
    }
    if (!strcmp(name, "sum") && n == 2 && cg_tensor_dtype(ts[1]) == CG_INT64 &&
        cg_tensor_ndim(ts[0]) == 0) { /* int64 counts */
        int64_t total = 0, v;
        for (int64_t i = 0; i < cg_tensor_numel(ts[1]); ++i) {
            memcpy(&v, at64(ts[1], i), 8);
            total += v;
        }
        memcpy(at64(ts[0], 0), &total, 8);
        return CG_OK;
    }
    for (int k = 0; k < n; ++k)
        if (cg_tensor_dtype(ts[k]) != CG_FLOAT64)
            return cg_set_error(CG_ERR_DTYPE, "mock backend: float64 only (and int64 for nll_loss's "
                                              "target, copies and the clip's counts)");
    cg_tensor *o = ts[0];
    int64_t N = cg_tensor_numel(o);
    if (!strcmp(name, "copy") || !strcmp(name, "copy_")) {
        for (int64_t i = 0; i < N; ++i) *at64(o, i) = in64(ts[1], i);
    } else if (!strcmp(name, "add") && n_out == 1 && n == 3) {
        for (int64_t i = 0; i < N; ++i) *at64(o, i) = in64(ts[1], i) + in64(ts[2], i);
    } else if (!strcmp(name, "mul") && n == 3) {
        for (int64_t i = 0; i < N; ++i) *at64(o, i) = in64(ts[1], i) * in64(ts[2], i);
    } else if (!strcmp(name, "mul_scalar")) {
        for (int64_t i = 0; i < N; ++i) *at64(o, i) = in64(ts[1], i) * f[0];
    } else if (!strcmp(name, "fill_")) {
        for (int64_t i = 0; i < N; ++i) *at64(o, i) = f[0];
    } else if (!strcmp(name, "add_")) {
        for (int64_t i = 0; i < N; ++i) *at64(o, i) += f[0] * in64(ts[1], i);
    } else if (!strcmp(name, "clip_norm_") && n_out == n && nf == 2 && f[0] == 2.0) {
        /* (g_1..g_k, result [2];): the 2-norm clip, result = (total, coef) */
        double ss = 0;
        for (int k = 0; k < n - 1; ++k)
            for (int64_t i = 0; i < cg_tensor_numel(ts[k]); ++i) ss += *at64(ts[k], i) * *at64(ts[k], i);
        const double total = sqrt(ss), c = f[1] / (total + 1e-6), coef = c > 1.0 ? 1.0 : c;
        for (int k = 0; k < n - 1; ++k)
            for (int64_t i = 0; i < cg_tensor_numel(ts[k]); ++i) *at64(ts[k], i) *= coef;
        *at64(ts[n - 1], 0) = total;
        *at64(ts[n - 1], 1) = coef;
    } else if (!strcmp(name, "pnorms") && n_out == 1 && f[0] == 2.0) { /* (norms [k]; x_1..x_k) */
        for (int k = 1; k < n; ++k) {
            double ss = 0;
            for (int64_t i = 0; i < cg_tensor_numel(ts[k]); ++i) ss += *at64(ts[k], i) * *at64(ts[k], i);
            *at64(ts[0], k - 1) = sqrt(ss);
        }
    } else if (!strcmp(name, "scale_")) { /* (g_1..g_k;) */
        for (int k = 0; k < n; ++k)
            for (int64_t i = 0; i < cg_tensor_numel(ts[k]); ++i) *at64(ts[k], i) *= f[0];
    } else if (!strcmp(name, "sum") && cg_tensor_ndim(o) == 0) {
        double s = 0;
        for (int64_t i = 0; i < cg_tensor_numel(ts[1]); ++i) s += in64(ts[1], i);
        *at64(o, 0) = s;
    } else {
        return CG_ERR_UNSUPPORTED; /* no message: the library writes one */
    }
    return CG_OK;
}

/* The copies move 8-byte elements (float64 or int64) bit for bit. */
static cg_status m_to_host(void *ctx, const cg_tensor *t, void *dst) {
    ++((mock *)ctx)->to_host_calls;
    for (int64_t i = 0; i < cg_tensor_numel(t); ++i)
        memcpy((char *)dst + 8 * i, at64((cg_tensor *)t, i), 8);
    return CG_OK;
}

static cg_status m_from_host(void *ctx, cg_tensor *t, const void *src) {
    (void)ctx;
    for (int64_t i = 0; i < cg_tensor_numel(t); ++i) memcpy(at64(t, i), (const char *)src + 8 * i, 8);
    return CG_OK;
}

int main(void) {
    static mock m;
    cg_backend vt = {m_alloc, m_release, m_kernel, m_to_host, m_from_host};
    int dev = -1, again = -1, found = -1;
    CHECK_STATUS(cg_backend_register("cpu", &vt, &m, &dev), CG_ERR_VALUE);
    cg_backend bad = vt;
    bad.kernel = NULL;
    CHECK_STATUS(cg_backend_register("mock", &bad, &m, &dev), CG_ERR_NULL);
    CHECK_OK(cg_backend_register("mock", &vt, &m, &dev));
    CHECK(dev > 0);
    CHECK_OK(cg_backend_register("mock", &vt, &m, &again)); /* replacing keeps the id */
    CHECK(again == dev);
    CHECK_OK(cg_device_find("mock", &found));
    CHECK(found == dev);
    CHECK_STATUS(cg_device_find("tpu", &found), CG_ERR_VALUE);
    CHECK(strcmp(cg_device_name(dev), "mock") == 0 && strcmp(cg_device_name(0), "cpu") == 0);
    CHECK(cg_device_name(CG_MAX_DEVICES - 1) == NULL);

    {   /* placement and copies both ways */
        int64_t shape[2] = {2, 3};
        double vals[6] = {1, 2, 3, 4, 5, 6}, back[6] = {0};
        cg_tensor *h = NULL, *d = NULL, *z = NULL, *h2 = NULL;
        CHECK_OK(cg_from_data(CG_FLOAT64, 2, shape, vals, &h));
        CHECK_OK(cg_to_device(h, dev, &d));
        CHECK(cg_tensor_device(d) == dev && cg_tensor_data(d) == NULL && cg_tensor_device_handle(d) != NULL);
        CHECK(cg_tensor_device(h) == CG_DEVICE_CPU && cg_tensor_device_handle(h) == NULL);
        CHECK_OK(cg_tensor_copy_to(d, back, sizeof back));
        CHECK(memcmp(back, vals, sizeof back) == 0);
        CHECK_OK(cg_zeros_on(dev, CG_FLOAT64, 2, shape, &z));
        CHECK(cgt_at(z, 5) == 0.0);
        cg_tensor *tr = NULL; /* a strided view copied back to the host */
        CHECK_OK(cg_transpose(d, 0, 1, &tr));
        CHECK_OK(cg_to_device(tr, CG_DEVICE_CPU, &h2));
        CHECK(cgt_at(h2, 1) == 4.0 && cgt_at(h2, 2) == 2.0);
        double v;
        cg_tensor *e = NULL;
        CHECK_OK(cg_select(d, 1, 2, &e));
        cg_tensor *e0 = NULL;
        CHECK_OK(cg_select(e, 0, 1, &e0)); /* d[1, 2] */
        CHECK_OK(cg_tensor_item(e0, &v));
        CHECK(v == 6.0);
        cg_tensor_free(e0);
        cg_tensor_free(e);
        cg_tensor_free(tr);
        cg_tensor_free(h2);
        cg_tensor_free(z);
        cg_tensor_free(d);
        cg_tensor_free(h);
        CHECK(m.live_bytes == 0 && m.allocs == m.releases);
    }

    {   /* the tape across devices: y = sum((to_device(x) * 3) + x_d), x on the host */
        int64_t n = 4;
        cg_tensor *x = NULL, *xd = NULL, *a = NULL, *b = NULL, *s = NULL;
        CHECK_OK(cg_full(CG_FLOAT64, 1, &n, 2.0, &x));
        CHECK_OK(cg_tensor_set_requires_grad(x, 1));
        CHECK_OK(cg_to_device(x, dev, &xd));
        CHECK(strcmp(cg_tensor_grad_fn_name(xd), "to_device") == 0);
        CHECK_OK(cg_mul_scalar(xd, 3.0, &a));
        CHECK(strcmp(m.last_kernel, "mul_scalar") == 0);
        CHECK_OK(cg_add(a, xd, &b));
        CHECK_OK(cg_sum(b, NULL, 0, 0, &s));
        CHECK(cg_tensor_device(s) == dev);
        CHECK_OK(cg_backward(s, NULL, 0, 0)); /* seed ones made on the device */
        cg_tensor *g = cg_tensor_grad(x);
        CHECK(g && cg_tensor_device(g) == CG_DEVICE_CPU);
        for (int i = 0; i < 4; ++i) CHECK(cgt_at(g, i) == 4.0);
        cg_tensor_free(s);
        cg_tensor_free(b);
        cg_tensor_free(a);
        cg_tensor_free(xd);
        cg_tensor_free(x);
    }

    {   /* errors: mixed devices, ops without a device kernel, kernels the backend lacks */
        int64_t n = 3;
        cg_tensor *h = NULL, *d = NULL, *r = NULL, *s = NULL;
        CHECK_OK(cg_ones(CG_FLOAT64, 1, &n, &h));
        CHECK_OK(cg_to_device(h, dev, &d));
        CHECK_STATUS(cg_add(d, h, &r), CG_ERR_VALUE);
        CHECK(strstr(cg_last_error(), "'mock'") && strstr(cg_last_error(), "'cpu'"));
        CHECK(r == NULL);
        CHECK_STATUS(cg_sparse_to_dense(NULL, &r), CG_ERR_NULL);
        CHECK_STATUS(cg_exp(d, &r), CG_ERR_UNSUPPORTED); /* the mock has no exp kernel */
        CHECK(strstr(cg_last_error(), "'exp'") && strstr(cg_last_error(), "'mock'"));
        cg_tensor *hi = NULL; /* row-sparse parts on two devices */
        CHECK_OK(cg_zeros(CG_INT64, 1, &n, &hi));
        CHECK_STATUS(cg_sparse_rows(hi, d, 3, &r), CG_ERR_VALUE);
        CHECK(strstr(cg_last_error(), "'mock'") && strstr(cg_last_error(), "'cpu'"));
        CHECK(r == NULL);
        cg_tensor_free(hi);
        CHECK_OK(cg_scalar(CG_FLOAT64, 2.0, &s)); /* a 0-d host tensor joins as a scalar */
        CHECK_OK(cg_mul(d, s, &r));
        CHECK(cg_tensor_device(r) == dev && cgt_at(r, 2) == 2.0);
        cg_tensor *g = NULL;
        CHECK_OK(cg_tensor_set_requires_grad(d, 1));
        CHECK_STATUS(cg_tensor_set_grad(d, h), CG_ERR_VALUE); /* a grad on another device */
        cg_tensor_free(g);
        cg_tensor_free(s);
        cg_tensor_free(r);
        cg_tensor_free(d);
        cg_tensor_free(h);
        CHECK(m.live_bytes == 0);
    }

    {   /* zero-copy wrap of a backend buffer, and its bounds check */
        void *hb = NULL;
        CHECK_OK(m_alloc(&m, 6 * sizeof(double), 1, &hb));
        int64_t shape[2] = {2, 2}, strides[2] = {3, 1};
        cg_tensor *w = NULL;
        CHECK_OK(cg_from_handle(dev, CG_FLOAT64, 2, shape, strides, 1, hb, 6 * sizeof(double), &w));
        ((double *)(void *)((buf *)hb)->data)[5] = 7.0; /* element [1, 1] = 1 + 3 + 1 */
        CHECK(cgt_at(w, 3) == 7.0);
        cg_tensor_free(w);
        void *hb2 = NULL;
        CHECK_OK(m_alloc(&m, 4 * sizeof(double), 1, &hb2));
        int rel = m.releases;
        CHECK_STATUS(cg_from_handle(dev, CG_FLOAT64, 2, shape, strides, 1, hb2, 4 * sizeof(double), &w),
                     CG_ERR_VALUE); /* needs 6 elements */
        CHECK(m.releases == rel + 1); /* the handle was released on failure */
        CHECK(m.live_bytes == 0);
    }

    {   /* nll_loss's bounds check of a device target: none copied back for
         * one cg_to_device uploaded (its range noted then), one copy when
         * it was written on the device since or made there */
        int64_t xs[2] = {3, 2}, n3 = 3;
        double xv[6] = {-1, -2, -3, -4, -5, -6};
        int64_t tv[3] = {1, 0, 1}, bad[3] = {1, 2, 0};
        cg_tensor *xh = NULL, *th = NULL, *badh = NULL, *x = NULL, *t = NULL, *tz = NULL, *l = NULL;
        CHECK_OK(cg_from_data(CG_FLOAT64, 2, xs, xv, &xh));
        CHECK_OK(cg_from_data(CG_INT64, 1, &n3, tv, &th));
        CHECK_OK(cg_from_data(CG_INT64, 1, &n3, bad, &badh));
        CHECK_OK(cg_to_device(xh, dev, &x));
        CHECK_OK(cg_to_device(th, dev, &t));
        int copies = m.to_host_calls;
        CHECK_OK(cg_nll_loss(x, t, NULL, -100, CG_REDUCTION_MEAN, &l));
        CHECK(m.to_host_calls == copies); /* settled by the upload's range */
        CHECK(*at64(l, 0) == (2.0 + 3.0 + 6.0) / 3.0);
        cg_tensor_free(l);
        l = NULL;
        CHECK_OK(cg_copy_(t, badh)); /* written on the device: 2 is out of bounds */
        CHECK_STATUS(cg_nll_loss(x, t, NULL, -100, CG_REDUCTION_MEAN, &l), CG_ERR_INDEX);
        CHECK(strstr(cg_last_error(), "target 2 is out of bounds for 2 classes"));
        CHECK(m.to_host_calls == copies + 1 && l == NULL);
        cg_tensor *t2 = NULL; /* uploaded, but 2 >= C: its range does not settle it */
        CHECK_OK(cg_to_device(badh, dev, &t2));
        CHECK_OK(cg_nll_loss(x, t2, NULL, 2, CG_REDUCTION_MEAN, &l)); /* 2 is ignore_index */
        CHECK(m.to_host_calls == copies + 2 && *at64(l, 0) == (2.0 + 5.0) / 2.0);
        cg_tensor_free(l);
        l = NULL;
        CHECK_OK(cg_zeros_on(dev, CG_INT64, 1, &n3, &tz)); /* made on the device */
        CHECK_OK(cg_nll_loss(x, tz, NULL, -100, CG_REDUCTION_SUM, &l));
        CHECK(m.to_host_calls == copies + 3 && *at64(l, 0) == 1.0 + 3.0 + 5.0);
        cg_tensor *fr[] = {xh, th, badh, x, t, t2, tz, l};
        for (int k = 0; k < 8; ++k) cg_tensor_free(fr[k]);
    }

    {   /* clip by norm on the device: the result stays there, nothing is
         * copied back; over two devices the host path and a host result */
        int64_t n2 = 2, n0 = 0;
        double av[2] = {3, 0}, bv[2] = {0, 4}, r2[2];
        cg_tensor *ah = NULL, *bh = NULL, *a = NULL, *b = NULL, *e = NULL, *r = NULL;
        CHECK_OK(cg_from_data(CG_FLOAT64, 1, &n2, av, &ah));
        CHECK_OK(cg_from_data(CG_FLOAT64, 1, &n2, bv, &bh));
        CHECK_OK(cg_to_device(ah, dev, &a));
        CHECK_OK(cg_to_device(bh, dev, &b));
        CHECK_OK(cg_zeros_on(dev, CG_FLOAT64, 1, &n0, &e)); /* empty: not passed to the kernel */
        cg_tensor *gs[4] = {a, NULL, e, b};
        int copies = m.to_host_calls;
        uint64_t va = cg_tensor_version(a);
        CHECK_OK(cg_clip_grad_norm_tensor(4, gs, 1.0, 2.0, &r));
        CHECK(m.to_host_calls == copies && strcmp(m.last_kernel, "clip_norm_") == 0);
        CHECK(cg_tensor_device(r) == dev && cg_tensor_numel(r) == 2);
        CHECK(*at64(r, 0) == 5.0 && *at64(r, 1) == 1.0 / (5.0 + 1e-6));
        CHECK_CLOSE(*at64(a, 0), 0.6, 1e-6);
        CHECK_CLOSE(*at64(b, 1), 0.8, 1e-6);
        CHECK(cg_tensor_version(a) == va + 1);
        cg_tensor_free(r);
        r = NULL;
        va = cg_tensor_version(a);
        CHECK_OK(cg_clip_grad_norm_tensor(4, gs, 10.0, 2.0, &r)); /* below the bound: times 1 */
        CHECK(*at64(r, 1) == 1.0 && cg_tensor_version(a) == va + 1);
        cg_tensor_free(r);
        r = NULL;
        CHECK_STATUS(cg_clip_grad_norm_tensor(4, gs, -1.0, 2.0, &r), CG_ERR_VALUE);
        CHECK(r == NULL && strstr(cg_last_error(), "max_norm"));
        CHECK_STATUS(cg_clip_grad_norm_tensor(4, gs, 1.0, 0.0, &r), CG_ERR_VALUE);
        CHECK_STATUS(cg_clip_grad_norm_tensor(4, gs, 1.0, 2.0, NULL), CG_ERR_NULL);
        cg_tensor *mixed[2] = {a, bh}; /* two devices: the norm is copied back */
        CHECK_OK(cg_clip_grad_norm_tensor(2, mixed, 0.5, 2.0, &r));
        CHECK(cg_tensor_device(r) == CG_DEVICE_CPU && m.to_host_calls > copies);
        CHECK_OK(cg_tensor_copy_to(r, r2, sizeof r2));
        CHECK_CLOSE(r2[0], sqrt(0.6 * 0.6 + 16.0), 1e-5);
        CHECK_CLOSE(r2[1], 0.5 / (r2[0] + 1e-6), 1e-12);
        cg_tensor *fr[] = {ah, bh, a, b, e, r};
        for (int k = 0; k < 6; ++k) cg_tensor_free(fr[k]);
    }

    {   /* clip by value on the device: the count is summed there, nothing
         * copied back; over two devices a host count */
        int64_t n3 = 3, n0 = 0, count = -1;
        double av[3] = {3, -0.5, -2}, bv[3] = {0.25, 1, 9};
        cg_tensor *ah = NULL, *bh = NULL, *a = NULL, *b = NULL, *e = NULL, *r = NULL;
        CHECK_OK(cg_from_data(CG_FLOAT64, 1, &n3, av, &ah));
        CHECK_OK(cg_from_data(CG_FLOAT64, 1, &n3, bv, &bh));
        CHECK_OK(cg_to_device(ah, dev, &a));
        CHECK_OK(cg_to_device(bh, dev, &b));
        CHECK_OK(cg_zeros_on(dev, CG_FLOAT64, 1, &n0, &e));
        cg_tensor *gs[4] = {a, NULL, e, b};
        int copies = m.to_host_calls;
        uint64_t va = cg_tensor_version(a), ve = cg_tensor_version(e);
        CHECK_OK(cg_clip_grad_value_tensor(4, gs, 1.0, &r));
        CHECK(m.to_host_calls == copies && strcmp(m.last_kernel, "sum") == 0);
        CHECK(cg_tensor_device(r) == dev && cg_tensor_ndim(r) == 0 &&
              cg_tensor_dtype(r) == CG_INT64);
        CHECK(cg_tensor_version(a) == va + 1 && cg_tensor_version(e) == ve + 1);
        CHECK(*at64(a, 0) == 1.0 && *at64(a, 1) == -0.5 && *at64(a, 2) == -1.0 && *at64(b, 2) == 1.0);
        CHECK_OK(cg_tensor_copy_to(r, &count, sizeof count));
        CHECK(count == 3); /* 3, -2 and 9 */
        cg_tensor_free(r);
        r = NULL;
        CHECK_STATUS(cg_clip_grad_value_tensor(4, gs, -1.0, &r), CG_ERR_VALUE);
        CHECK(r == NULL && strstr(cg_last_error(), "clip_value"));
        CHECK_STATUS(cg_clip_grad_value_tensor(4, gs, 1.0, NULL), CG_ERR_NULL);
        CHECK_STATUS(cg_clip_grad_value_tensor(-1, gs, 1.0, &r), CG_ERR_VALUE);
        cg_tensor *mixed[2] = {a, bh}; /* two devices: a host count */
        CHECK_OK(cg_clip_grad_value_tensor(2, mixed, 0.5, &r));
        CHECK(cg_tensor_device(r) == CG_DEVICE_CPU);
        CHECK_OK(cg_tensor_copy_to(r, &count, sizeof count));
        CHECK(count == 4); /* a: 1 and -1 (-0.5 stays); bh: 1 and 9 (0.25 stays) */
        cg_tensor *fr[] = {ah, bh, a, b, e, r};
        for (int k = 0; k < 6; ++k) cg_tensor_free(fr[k]);
    }

    {   /* float16: storage on the host, exact casts, computation refused there */
        int64_t n = 4;
        double vals[4] = {1.0, -2.5, 65504.0, 1e-7};
        cg_tensor *x = NULL, *h = NULL, *back = NULL, *r = NULL;
        CHECK_OK(cg_from_data(CG_FLOAT64, 1, &n, vals, &x));
        CHECK_OK(cg_to_dtype(x, CG_FLOAT16, &h));
        CHECK(cg_dtype_size(CG_FLOAT16) == 2 && strcmp(cg_dtype_name(CG_FLOAT16), "float16") == 0);
        CHECK_OK(cg_to_dtype(h, CG_FLOAT64, &back));
        CHECK(cgt_at(back, 0) == 1.0 && cgt_at(back, 1) == -2.5 && cgt_at(back, 2) == 65504.0);
        CHECK_CLOSE(cgt_at(back, 3), 1.1920928955078125e-07, 1e-15); /* nearest subnormal */
        CHECK_STATUS(cg_add(h, h, &r), CG_ERR_DTYPE);
        CHECK(strstr(cg_last_error(), "float16"));
        CHECK_STATUS(cg_sum(h, NULL, 0, 0, &r), CG_ERR_DTYPE);
        cg_stats st;
        CHECK_OK(cg_tensor_stats(h, &st)); /* statistics read it through a float32 copy */
        CHECK(st.nonfinite == 0 && st.max_abs == 65504.0);
        cg_tensor_free(back);
        cg_tensor_free(h);
        cg_tensor_free(x);
    }
    return cgt_report(__FILE__);
}
