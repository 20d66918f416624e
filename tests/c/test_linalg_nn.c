/* test_linalg_nn.c -- GEMM, matmul, linear, conv2d, pooling, dropout and nll_loss: values
 * against naive loops, gradients against central differences (first and
 * second order), float32 runs and error statuses. */
#include <stdint.h>
#include <stdlib.h>

#include "cgtest.h"

/* ------------------------------------------------------------ helpers */
/* Elements of t (any dtype, any strides) as a malloc'ed double array. */
static double *vals(cg_tensor *t) {
    int64_t n = cg_tensor_numel(t);
    double *out = (double *)malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    cg_tensor *d = NULL;
    if (!out) return NULL;
    if (cg_to_dtype(t, CG_FLOAT64, &d) != CG_OK ||
        cg_tensor_copy_to(d, out, (size_t)n * sizeof(double)) != CG_OK) {
        for (int64_t i = 0; i < n; ++i) out[i] = NAN;
    }
    cg_tensor_free(d);
    return out;
}

static int64_t numel_of(int nd, const int64_t *s) {
    int64_t n = 1;
    for (int i = 0; i < nd; ++i) n *= s[i];
    return n;
}

/* Max |got - want| / (1 + |want|) over n elements. */
static double max_rel_err(const double *got, const double *want, int64_t n) {
    double e = 0;
    for (int64_t i = 0; i < n; ++i) {
        double d = fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
        if (!(d <= e)) e = d; /* NaN wins */
    }
    return e;
}

static int same_shape(cg_tensor *t, int nd, const int64_t *s) {
    if (cg_tensor_ndim(t) != nd) return 0;
    for (int i = 0; i < nd; ++i)
        if (cg_tensor_shape(t)[i] != s[i]) return 0;
    return 1;
}

static cg_tensor *randn_t(cg_dtype dt, int nd, const int64_t *s, int requires_grad) {
    cg_tensor *t = NULL;
    if (cg_randn(dt, nd, s, &t) != CG_OK) return NULL;
    if (requires_grad) cg_tensor_set_requires_grad(t, 1);
    return t;
}

/* Second-order check. The wrapped function f gives y; gg_fn returns
 * S = sum_j sum(c_j * dL/dx_j) with L = sum(y * y) (so the upstream
 * gradient 2y itself depends on the inputs) and fixed c_j; gradcheck of S
 * then compares Hessian-vector products with central differences. */
typedef struct {
    cg_fn f;
    void *ctx;
} gg_ctx;

static cg_status gg_fn(void *vctx, int n, cg_tensor *const *ins, cg_tensor **out) {
    gg_ctx *c = (gg_ctx *)vctx;
    int prev = cg_set_grad_enabled(1);
    cg_tensor *y = NULL, *yy = NULL, *L = NULL, *S = NULL;
    cg_tensor *req[8], *grads[8] = {0};
    int nreq = 0;
    for (int i = 0; i < n && nreq < 8; ++i)
        if (cg_tensor_requires_grad(ins[i])) req[nreq++] = ins[i];
    cg_status st = c->f(c->ctx, n, ins, &y);
    if (!st) st = cg_mul(y, y, &yy);
    if (!st) st = cg_sum(yy, NULL, 0, 0, &L);
    if (!st) st = cg_grad(1, &L, NULL, nreq, req, 1, 1, 1, grads);
    for (int j = 0; j < nreq && !st; ++j) {
        if (!grads[j]) continue;
        int64_t m = cg_tensor_numel(grads[j]);
        double *w = (double *)malloc((size_t)(m > 0 ? m : 1) * sizeof(double));
        for (int64_t e = 0; e < m; ++e) w[e] = sin(1.0 + 0.7 * (double)e + 1.3 * j);
        cg_tensor *wt = NULL, *p = NULL, *s = NULL, *acc = NULL;
        st = cg_from_data(CG_FLOAT64, cg_tensor_ndim(grads[j]), cg_tensor_shape(grads[j]), w, &wt);
        free(w);
        if (!st) st = cg_mul(grads[j], wt, &p);
        if (!st) st = cg_sum(p, NULL, 0, 0, &s);
        if (!st) {
            if (S) {
                st = cg_add(S, s, &acc);
                cg_tensor_free(S);
                S = acc;
            } else {
                S = s;
                s = NULL;
            }
        }
        cg_tensor_free(wt);
        cg_tensor_free(p);
        cg_tensor_free(s);
    }
    for (int j = 0; j < nreq; ++j) cg_tensor_free(grads[j]);
    cg_tensor_free(L);
    cg_tensor_free(yy);
    cg_tensor_free(y);
    cg_set_grad_enabled(prev);
    if (st) {
        cg_tensor_free(S);
        return st;
    }
    if (!S) return cg_set_error(CG_ERR_VALUE, "gg_fn: no gradient");
    *out = S;
    return CG_OK;
}

static cg_status gradgradcheck(cg_fn f, void *ctx, int n, cg_tensor *const *ins) {
    gg_ctx c = {f, ctx};
    return cg_gradcheck(gg_fn, &c, n, ins, 1e-6, 1e-5, 1e-4);
}

#define GRADCHECK(f, ctx, n, ins) CHECK_OK(cg_gradcheck((f), (ctx), (n), (ins), 1e-6, 1e-6, 1e-5))
#define GRADGRADCHECK(f, ctx, n, ins) CHECK_OK(gradgradcheck((f), (ctx), (n), (ins)))

/* ================================================================ GEMM */
/* C = alpha op(A) op(B) + beta C by the definition, in double. */
static void naive_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
                       const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                       double *c, int64_t ldc) {
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (int64_t p = 0; p < k; ++p)
                s += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = alpha * s + (beta == 0 ? 0.0 : beta * c[i * ldc + j]);
        }
}

static unsigned lcg_state = 12345u;
static double lcg(void) { /* deterministic values in [-1, 1) */
    lcg_state = lcg_state * 1103515245u + 12345u;
    return ((lcg_state >> 8) & 0xFFFF) / 32768.0 - 1.0;
}

/* One GEMM configuration in float and double, with padded leading dims
 * (ld = cols + 3) so row strides are exercised. Returns 1 when both agree. */
static int gemm_case(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha, double beta) {
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    int64_t lda = ac + 3, ldb = bc + 3, ldc = n + 3;
    size_t na = (size_t)(ar * lda) + 1, nb = (size_t)(br * ldb) + 1, nc = (size_t)(m * ldc) + 1;
    double *a = malloc(na * 8), *b = malloc(nb * 8), *c0 = malloc(nc * 8), *cref = malloc(nc * 8);
    double *cd = malloc(nc * 8);
    float *af = malloc(na * 4), *bf = malloc(nb * 4), *cf = malloc(nc * 4);
    for (size_t i = 0; i < na; ++i) af[i] = (float)(a[i] = lcg());
    for (size_t i = 0; i < nb; ++i) bf[i] = (float)(b[i] = lcg());
    for (size_t i = 0; i < nc; ++i) c0[i] = lcg();
    /* beta == 0 must ignore whatever C holds, NaN included. */
    if (beta == 0)
        for (size_t i = 0; i < nc; ++i) c0[i] = NAN;
    for (size_t i = 0; i < nc; ++i) {
        cref[i] = cd[i] = c0[i];
        cf[i] = (float)c0[i];
    }
    naive_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cref, ldc);
    cg_builtin_dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cd, ldc);
    cg_builtin_sgemm(ta, tb, m, n, k, (float)alpha, af, lda, bf, ldb, (float)beta, cf, ldc);
    int ok = 1;
    double tol_d = 1e-13 * (double)(k + 1), tol_f = 2e-6 * (double)(k + 1);
    for (int64_t i = 0; i < m && ok; ++i)
        for (int64_t j = 0; j < ldc; ++j) {
            size_t e = (size_t)(i * ldc + j);
            if (j >= n) { /* padding between rows must be untouched */
                if (!(cd[e] == c0[e] || (isnan(cd[e]) && isnan(c0[e])))) ok = 0;
                continue;
            }
            if (!(fabs(cd[e] - cref[e]) <= tol_d * (1 + fabs(cref[e])))) ok = 0;
            if (!(fabs(cf[e] - cref[e]) <= tol_f * (1 + fabs(cref[e])))) ok = 0;
        }
    if (!ok)
        fprintf(stderr, "gemm mismatch ta=%d tb=%d m=%lld n=%lld k=%lld alpha=%g beta=%g\n", ta, tb,
                (long long)m, (long long)n, (long long)k, alpha, beta);
    free(a); free(b); free(c0); free(cref); free(cd); free(af); free(bf); free(cf);
    return ok;
}

static void test_gemm(void) {
    static const int64_t shapes[][3] = {
        {1, 1, 1},   {2, 3, 4},    {0, 5, 3},     {5, 0, 3},   {4, 5, 0},   {1, 17, 9},
        {17, 1, 9},  {5, 5, 5},    {6, 16, 8},    {12, 32, 7}, {13, 33, 1}, {17, 33, 65},
        {31, 7, 300}, {130, 70, 40}, {121, 45, 257}, {3, 3100, 5},
        /* matrix-vector shapes (direct loops, unrolled dot / axpy) */
        {1, 300, 71}, {300, 1, 71}, {1, 1, 1001}, {2, 1, 3},
        /* narrow n (computed as C^T into scratch) */
        {200, 10, 33}, {70, 5, 129}, {129, 2, 300}};
    static const double ab[][2] = {{1, 0}, {-0.5, 1}, {2, 0.7}, {0, 0.5}};
    int n_ok = 0, n_all = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
        for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb)
                for (size_t q = 0; q < sizeof ab / sizeof ab[0]; ++q) {
                    ++n_all;
                    n_ok += gemm_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], ab[q][0], ab[q][1]);
                }
    CHECK(n_ok == n_all);
    /* A bigger square product crossing every blocking boundary. */
    CHECK(gemm_case(0, 0, 300, 3200, 270, 1.0, 0.0));
    CHECK(gemm_case(1, 1, 250, 130, 520, 1.5, 0.25));
}

/* The threaded GEMM: same results as one thread (within rounding), edge
 * slabs and transposes included; the thread-count setting. */
static void test_gemm_threads(void) {
    int def = cg_get_num_threads();
    CHECK(def >= 1 && def <= 8);
    cg_set_num_threads(3);
    CHECK(cg_get_num_threads() == 3);
    cg_set_num_threads(100000);
    CHECK(cg_get_num_threads() == 64);
    cg_set_num_threads(-2);
    CHECK(cg_get_num_threads() == def);
    cg_set_num_threads(7);
    cg_set_num_threads(0);
    CHECK(cg_get_num_threads() == def);

    /* m < n splits columns, m > n rows; odd sizes leave partial tiles. */
    static const int64_t shapes[][3] = {
        {131, 517, 97}, {601, 45, 77}, {257, 263, 131}, {13, 2011, 61}, {997, 7, 301}, {128, 512, 784}};
    int n_ok = 0, n_all = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ldc = n + 3;
        size_t na = (size_t)(m * k), nb = (size_t)(k * n), nc = (size_t)(m * ldc);
        float *af = malloc(na * sizeof *af), *bf = malloc(nb * sizeof *bf);
        float *c1 = malloc(nc * sizeof *c1), *cn = malloc(nc * sizeof *cn);
        double *ad = malloc(na * sizeof *ad), *bd = malloc(nb * sizeof *bd);
        double *d1 = malloc(nc * sizeof *d1), *dn = malloc(nc * sizeof *dn);
        if (!af || !bf || !c1 || !cn || !ad || !bd || !d1 || !dn) abort();
        for (size_t i = 0; i < na; ++i) af[i] = (float)(ad[i] = lcg());
        for (size_t i = 0; i < nb; ++i) bf[i] = (float)(bd[i] = lcg());
        for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb)
                for (int nt = 2; nt <= 5; nt += 3) {
                    int64_t lda = ta ? m : k, ldb = tb ? k : n;
                    for (size_t i = 0; i < nc; ++i) {
                        double v = lcg();
                        c1[i] = cn[i] = (float)v;
                        d1[i] = dn[i] = v;
                    }
                    cg_set_num_threads(1);
                    cg_builtin_sgemm(ta, tb, m, n, k, 0.75f, af, lda, bf, ldb, -0.5f, c1, ldc);
                    cg_builtin_dgemm(ta, tb, m, n, k, 0.75, ad, lda, bd, ldb, -0.5, d1, ldc);
                    cg_set_num_threads(nt);
                    cg_builtin_sgemm(ta, tb, m, n, k, 0.75f, af, lda, bf, ldb, -0.5f, cn, ldc);
                    cg_builtin_dgemm(ta, tb, m, n, k, 0.75, ad, lda, bd, ldb, -0.5, dn, ldc);
                    int ok = 1;
                    double tf = 2e-6 * (double)(k + 1), td = 1e-13 * (double)(k + 1);
                    for (size_t i = 0; i < nc && ok; ++i) {
                        if ((int64_t)(i % (size_t)ldc) >= n) { /* padding: untouched */
                            ok = cn[i] == c1[i] && dn[i] == d1[i];
                            continue;
                        }
                        ok = fabs((double)cn[i] - c1[i]) <= tf * (1 + fabs((double)c1[i])) &&
                             fabs(dn[i] - d1[i]) <= td * (1 + fabs(d1[i]));
                    }
                    if (!ok)
                        fprintf(stderr, "threaded gemm mismatch ta=%d tb=%d m=%lld n=%lld k=%lld nt=%d\n",
                                ta, tb, (long long)m, (long long)n, (long long)k, nt);
                    n_ok += ok;
                    ++n_all;
                }
        free(af); free(bf); free(c1); free(cn); free(ad); free(bd); free(d1); free(dn);
    }
    CHECK(n_ok == n_all);
    /* Against the naive product (and beta == 0 ignoring NaN in C), threaded. */
    cg_set_num_threads(3);
    CHECK(gemm_case(0, 1, 263, 301, 67, 1.0, 0.0));
    CHECK(gemm_case(1, 0, 389, 97, 131, -1.5, 0.5));
    cg_set_num_threads(0);
    CHECK(cg_get_num_threads() == def);
}

/* Hook: counts calls and forwards to the built-in kernels. */
static int hook_s_calls, hook_d_calls;
static void hook_s(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                   int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    ++hook_s_calls;
    cg_builtin_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
static void hook_d(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
                   int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
    ++hook_d_calls;
    /* BLAS-style argument checks: a hook must be able to rely on them. */
    if (k < 1 || lda < (ta ? m : k) || ldb < (tb ? k : n) || ldc < n) hook_d_calls += 1000;
    cg_builtin_dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void test_gemm_hook(void) {
    int64_t sa[2] = {3, 4}, sb[2] = {4, 5}, s0[2] = {3, 0}, s1[2] = {0, 5};
    cg_tensor *a = randn_t(CG_FLOAT64, 2, sa, 0), *b = randn_t(CG_FLOAT64, 2, sb, 0);
    cg_tensor *af = NULL, *bf = NULL, *y = NULL, *yh = NULL, *e0 = NULL, *e1 = NULL, *ye = NULL;
    cg_tensor *bt = NULL;
    CHECK_OK(cg_to_dtype(a, CG_FLOAT32, &af));
    CHECK_OK(cg_to_dtype(b, CG_FLOAT32, &bf));
    CHECK_OK(cg_matmul(a, b, &y));
    cg_set_gemm(hook_s, hook_d);
    CHECK_OK(cg_matmul(a, b, &yh));
    CHECK(hook_d_calls == 1);
    cg_tensor_free(yh);
    yh = NULL;
    CHECK_OK(cg_matmul(af, bf, &yh));
    CHECK(hook_s_calls == 1);
    cg_tensor_free(yh);
    yh = NULL;
    /* Transposed views and strided vectors reach the hook with valid lds. */
    CHECK_OK(cg_transpose(b, 0, 1, &bt));
    {
        cg_tensor *ta = NULL, *prod = NULL;
        CHECK_OK(cg_transpose(a, 0, 1, &ta)); /* (4, 3) */
        CHECK_OK(cg_matmul(bt, ta, &prod));   /* (5, 4) @ (4, 3) */
        CHECK(hook_d_calls == 2);
        cg_tensor_free(prod);
        cg_tensor_free(ta);
    }
    /* k == 0 and empty outputs never reach the hook. */
    CHECK_OK(cg_zeros(CG_FLOAT64, 2, s0, &e0));
    CHECK_OK(cg_zeros(CG_FLOAT64, 2, s1, &e1));
    CHECK_OK(cg_matmul(e0, e1, &ye));
    CHECK(hook_d_calls == 2);
    CHECK(cg_tensor_numel(ye) == 15 && cgt_at(ye, 7) == 0.0);
    cg_set_gemm(NULL, NULL);
    CHECK_OK(cg_matmul(a, b, &yh));
    CHECK(hook_d_calls == 2);
    CHECK_CLOSE(cgt_at(yh, 6), cgt_at(y, 6), 1e-14);
    cg_tensor_free(yh);
    cg_tensor_free(ye);
    cg_tensor_free(e0);
    cg_tensor_free(e1);
    cg_tensor_free(bt);
    cg_tensor_free(y);
    cg_tensor_free(af);
    cg_tensor_free(bf);
    cg_tensor_free(a);
    cg_tensor_free(b);
}

/* ============================================================== matmul */
/* NumPy matmul of contiguous double data by loops; fills the out shape. */
static double *ref_matmul(int na, const int64_t *sa, const double *a, int nb, const int64_t *sb,
                          const double *b, int *no, int64_t *so) {
    int64_t m = na == 1 ? 1 : sa[na - 2], k = sa[na - 1], n = nb == 1 ? 1 : sb[nb - 1];
    int ba = na > 2 ? na - 2 : 0, bb = nb > 2 ? nb - 2 : 0, nbatch = ba > bb ? ba : bb;
    int64_t bs[8], nmat = 1;
    for (int d = 0; d < nbatch; ++d) {
        int ia = ba - nbatch + d, ib = bb - nbatch + d;
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
        bs[d] = da == 1 ? db : da;
        nmat *= bs[d];
    }
    *no = 0;
    for (int d = 0; d < nbatch; ++d) so[(*no)++] = bs[d];
    if (na > 1) so[(*no)++] = m;
    if (nb > 1) so[(*no)++] = n;
    double *o = (double *)calloc((size_t)(nmat * m * n + 1), sizeof(double));
    for (int64_t t = 0; t < nmat; ++t) {
        /* batch index of t, then the flat matrix index in a and b */
        int64_t idx[8], rem = t, ma = 0, mb = 0, fa = 1, fb = 1;
        for (int d = nbatch - 1; d >= 0; --d) {
            idx[d] = rem % bs[d];
            rem /= bs[d];
        }
        for (int d = nbatch - 1; d >= 0; --d) {
            int ia = ba - nbatch + d, ib = bb - nbatch + d;
            if (ia >= 0) {
                ma += (sa[ia] == 1 ? 0 : idx[d]) * fa;
                fa *= sa[ia];
            }
            if (ib >= 0) {
                mb += (sb[ib] == 1 ? 0 : idx[d]) * fb;
                fb *= sb[ib];
            }
        }
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
                double s = 0;
                for (int64_t p = 0; p < k; ++p)
                    s += a[ma * m * k + i * k + p] * b[mb * k * n + p * n + j];
                o[t * m * n + i * n + j] = s;
            }
    }
    return o;
}

/* matmul(a, b) equals the reference (data read back through any strides). */
static int matmul_matches(cg_tensor *a, cg_tensor *b, double tol) {
    cg_tensor *y = NULL;
    if (cg_matmul(a, b, &y) != CG_OK) {
        fprintf(stderr, "matmul failed: %s\n", cg_last_error());
        return 0;
    }
    double *av = vals(a), *bv = vals(b), *yv = vals(y);
    int no;
    int64_t so[8];
    double *r = ref_matmul(cg_tensor_ndim(a), cg_tensor_shape(a), av, cg_tensor_ndim(b),
                           cg_tensor_shape(b), bv, &no, so);
    int ok = same_shape(y, no, so) && cg_tensor_dtype(y) == cg_tensor_dtype(a) &&
             max_rel_err(yv, r, numel_of(no, so)) <= tol;
    free(av); free(bv); free(yv); free(r);
    cg_tensor_free(y);
    return ok;
}

typedef struct {
    int na, nb;
    int64_t sa[5], sb[5];
} mm_case;

static const mm_case MM_CASES[] = {
    {1, 1, {3}, {3}},
    {1, 2, {3}, {3, 4}},
    {2, 1, {2, 3}, {3}},
    {2, 2, {2, 3}, {3, 4}},
    {3, 2, {2, 2, 3}, {3, 4}},
    {2, 3, {2, 3}, {2, 3, 4}},
    {1, 3, {3}, {2, 3, 4}},
    {3, 1, {2, 4, 3}, {3}},
    {4, 3, {2, 1, 2, 3}, {3, 3, 2}},
    {3, 3, {1, 2, 3}, {2, 3, 2}},
};
#define N_MM_CASES ((int)(sizeof MM_CASES / sizeof MM_CASES[0]))

static cg_status f_matmul(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    return cg_matmul(in[0], in[1], out);
}

/* a^T @ b^T through transposed views (exercises the trans flags in backward). */
static cg_status f_matmul_tt(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    cg_tensor *at = NULL, *bt = NULL;
    cg_status st = cg_transpose(in[0], -1, -2, &at);
    if (!st) st = cg_transpose(in[1], -1, -2, &bt);
    if (!st) st = cg_matmul(at, bt, out);
    cg_tensor_free(at);
    cg_tensor_free(bt);
    return st;
}

static void test_matmul_values(void) {
    /* Hand-computed. */
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s3 = 3;
    double av[6] = {1, 2, 3, 4, 5, 6}, bv[6] = {7, 8, 9, 10, 11, 12}, v3[3] = {1, -1, 2};
    cg_tensor *a = cgt_f64(2, s23, av), *b = cgt_f64(2, s32, bv), *v = cgt_f64(1, &s3, v3);
    cg_tensor *y = NULL, *d = NULL, *yv = NULL, *vy = NULL;
    CHECK_OK(cg_matmul(a, b, &y));
    int64_t s22[2] = {2, 2};
    CHECK(same_shape(y, 2, s22));
    CHECK_CLOSE(cgt_at(y, 0), 58, 1e-14);
    CHECK_CLOSE(cgt_at(y, 1), 64, 1e-14);
    CHECK_CLOSE(cgt_at(y, 2), 139, 1e-14);
    CHECK_CLOSE(cgt_at(y, 3), 154, 1e-14);
    CHECK_OK(cg_matmul(v, v, &d)); /* 1 + 1 + 4 */
    CHECK(cg_tensor_ndim(d) == 0);
    CHECK_CLOSE(cgt_at(d, 0), 6, 1e-14);
    CHECK_OK(cg_matmul(a, v, &yv)); /* (2,) = [1-2+6, 4-5+12] */
    CHECK(cg_tensor_ndim(yv) == 1 && cg_tensor_shape(yv)[0] == 2);
    CHECK_CLOSE(cgt_at(yv, 0), 5, 1e-14);
    CHECK_CLOSE(cgt_at(yv, 1), 11, 1e-14);
    CHECK_OK(cg_matmul(v, b, &vy)); /* (2,) = [7-9+22, 8-10+24] */
    CHECK(cg_tensor_ndim(vy) == 1 && cg_tensor_shape(vy)[0] == 2);
    CHECK_CLOSE(cgt_at(vy, 0), 20, 1e-14);
    CHECK_CLOSE(cgt_at(vy, 1), 22, 1e-14);
    cg_tensor_free(y); cg_tensor_free(d); cg_tensor_free(yv); cg_tensor_free(vy);
    cg_tensor_free(a); cg_tensor_free(b); cg_tensor_free(v);

    /* Every rank combination and broadcast, float64 and float32. */
    for (int c = 0; c < N_MM_CASES; ++c) {
        const mm_case *mc = &MM_CASES[c];
        cg_tensor *x = randn_t(CG_FLOAT64, mc->na, mc->sa, 0), *z = randn_t(CG_FLOAT64, mc->nb, mc->sb, 0);
        cg_tensor *xf = NULL, *zf = NULL;
        CHECK(matmul_matches(x, z, 1e-13));
        CHECK_OK(cg_to_dtype(x, CG_FLOAT32, &xf));
        CHECK_OK(cg_to_dtype(z, CG_FLOAT32, &zf));
        CHECK(matmul_matches(xf, zf, 1e-5));
        cg_tensor_free(xf); cg_tensor_free(zf); cg_tensor_free(x); cg_tensor_free(z);
    }

    /* Larger shapes through the blocked kernel and the batch fold. */
    {
        int64_t sa3[3] = {3, 37, 50}, sb2[2] = {50, 41}, sb3[3] = {3, 50, 41}, sb1[3] = {1, 50, 41};
        cg_tensor *x = randn_t(CG_FLOAT32, 3, sa3, 0), *z2 = randn_t(CG_FLOAT32, 2, sb2, 0);
        cg_tensor *z3 = randn_t(CG_FLOAT32, 3, sb3, 0), *z1 = randn_t(CG_FLOAT32, 3, sb1, 0);
        CHECK(matmul_matches(x, z2, 1e-5)); /* folded into one (111, 50) GEMM */
        CHECK(matmul_matches(x, z3, 1e-5));
        CHECK(matmul_matches(x, z1, 1e-5)); /* batch dim 1 broadcast */
        /* Batch dims that do not step over the rows must not be folded:
         * a (3, 37, 50) view of a (37, 3, 50) tensor, and an expanded batch. */
        int64_t sp[3] = {37, 3, 50}, s1b[3] = {1, 37, 50};
        cg_tensor *xp = randn_t(CG_FLOAT32, 3, sp, 0), *xpt = NULL, *x1 = randn_t(CG_FLOAT32, 3, s1b, 0);
        cg_tensor *xe = NULL;
        CHECK_OK(cg_transpose(xp, 0, 1, &xpt));
        CHECK(matmul_matches(xpt, z2, 1e-5));
        CHECK_OK(cg_expand(x1, 3, sa3, &xe));
        CHECK(matmul_matches(xe, z2, 1e-5));
        cg_tensor_free(xp); cg_tensor_free(xpt); cg_tensor_free(x1); cg_tensor_free(xe);
        cg_tensor_free(x); cg_tensor_free(z2); cg_tensor_free(z3); cg_tensor_free(z1);
    }

    /* Non-contiguous operands: transposed, sliced with a step, expanded. */
    {
        int64_t sa[3] = {2, 5, 4}, sb[2] = {6, 5}, se[3] = {2, 4, 6}, s1[2] = {1, 6};
        cg_tensor *x = randn_t(CG_FLOAT64, 3, sa, 0), *z = randn_t(CG_FLOAT64, 2, sb, 0);
        cg_tensor *xt = NULL, *zt = NULL, *xs = NULL, *r1 = NULL, *re = NULL, *zs = NULL;
        CHECK_OK(cg_transpose(x, 1, 2, &xt));    /* (2, 4, 5) column-major matrices */
        CHECK_OK(cg_transpose(z, 0, 1, &zt));    /* (5, 6) */
        CHECK(matmul_matches(xt, zt, 1e-13));
        CHECK_OK(cg_slice(z, 1, 0, 5, 2, &zs));  /* (6, 3) with column stride 2 */
        CHECK_OK(cg_slice(x, 1, 0, 5, 2, &xs));  /* (2, 3, 4) rows stride 8 */
        {
            cg_tensor *zst = NULL;
            CHECK_OK(cg_transpose(zs, 0, 1, &zst)); /* (3, 6) */
            cg_tensor *xs2 = NULL;
            CHECK_OK(cg_transpose(xs, 1, 2, &xs2)); /* (2, 4, 3) */
            CHECK(matmul_matches(xs2, zst, 1e-13));
            cg_tensor_free(zst);
            cg_tensor_free(xs2);
        }
        CHECK_OK(cg_randn(CG_FLOAT64, 2, s1, &r1));
        CHECK_OK(cg_expand(r1, 3, se, &re)); /* (2, 4, 6) with zero strides */
        CHECK(matmul_matches(xt, zt, 1e-13));
        {
            cg_tensor *ret = NULL;
            CHECK_OK(cg_transpose(re, 1, 2, &ret)); /* (2, 6, 4) */
            CHECK(matmul_matches(re, ret, 1e-13));
            cg_tensor_free(ret);
        }
        /* A strided 1-D vector. */
        {
            int64_t s8 = 8, s4x4[2] = {4, 4};
            cg_tensor *v8 = randn_t(CG_FLOAT64, 1, &s8, 0), *vs = NULL, *m4 = randn_t(CG_FLOAT64, 2, s4x4, 0);
            CHECK_OK(cg_slice(v8, 0, 1, 8, 2, &vs));
            CHECK(matmul_matches(vs, m4, 1e-13));
            CHECK(matmul_matches(m4, vs, 1e-13));
            CHECK(matmul_matches(vs, vs, 1e-13));
            cg_tensor_free(v8); cg_tensor_free(vs); cg_tensor_free(m4);
        }
        cg_tensor_free(x); cg_tensor_free(z); cg_tensor_free(xt); cg_tensor_free(zt);
        cg_tensor_free(xs); cg_tensor_free(zs); cg_tensor_free(r1); cg_tensor_free(re);
    }

    /* Empty operands. */
    {
        int64_t s03[2] = {0, 3}, s34[2] = {3, 4}, s20[2] = {2, 0}, s05[2] = {0, 5}, s0 = 0;
        int64_t s04[2] = {0, 4}, s25[2] = {2, 5};
        cg_tensor *e = NULL, *f = NULL, *y1 = NULL, *g = NULL, *h = NULL, *y2 = NULL;
        cg_tensor *v0 = NULL, *d0 = NULL;
        CHECK_OK(cg_zeros(CG_FLOAT64, 2, s03, &e));
        CHECK_OK(cg_ones(CG_FLOAT64, 2, s34, &f));
        CHECK_OK(cg_matmul(e, f, &y1));
        CHECK(same_shape(y1, 2, s04));
        CHECK_OK(cg_ones(CG_FLOAT64, 2, s20, &g));
        CHECK_OK(cg_ones(CG_FLOAT64, 2, s05, &h));
        CHECK_OK(cg_matmul(g, h, &y2)); /* k == 0: zeros */
        CHECK(same_shape(y2, 2, s25) && cgt_at(y2, 0) == 0.0 && cgt_at(y2, 9) == 0.0);
        CHECK_OK(cg_ones(CG_FLOAT32, 1, &s0, &v0));
        CHECK_OK(cg_matmul(v0, v0, &d0));
        CHECK(cg_tensor_ndim(d0) == 0 && cgt_at(d0, 0) == 0.0);
        cg_tensor_free(e); cg_tensor_free(f); cg_tensor_free(y1); cg_tensor_free(g);
        cg_tensor_free(h); cg_tensor_free(y2); cg_tensor_free(v0); cg_tensor_free(d0);
    }
}

static void test_matmul_grad(void) {
    for (int c = 0; c < N_MM_CASES; ++c) {
        const mm_case *mc = &MM_CASES[c];
        cg_tensor *ins[2] = {cgt_randn64(mc->na, mc->sa), cgt_randn64(mc->nb, mc->sb)};
        GRADCHECK(f_matmul, NULL, 2, ins);
        GRADGRADCHECK(f_matmul, NULL, 2, ins);
        cg_tensor_free(ins[0]);
        cg_tensor_free(ins[1]);
    }
    /* Transposed views, batched with broadcast. */
    {
        int64_t sa[3] = {2, 3, 4}, sb[2] = {5, 3};
        cg_tensor *ins[2] = {cgt_randn64(3, sa), cgt_randn64(2, sb)};
        GRADCHECK(f_matmul_tt, NULL, 2, ins);
        GRADGRADCHECK(f_matmul_tt, NULL, 2, ins);
        cg_tensor_free(ins[0]);
        cg_tensor_free(ins[1]);
    }
    /* Only one side requires grad. */
    {
        int64_t sa[2] = {3, 4}, sb[2] = {4, 2};
        cg_tensor *ins[2] = {cgt_randn64(2, sa), NULL};
        cg_randn(CG_FLOAT64, 2, sb, &ins[1]);
        GRADCHECK(f_matmul, NULL, 2, ins);
        GRADGRADCHECK(f_matmul, NULL, 2, ins);
        cg_tensor_free(ins[0]);
        cg_tensor_free(ins[1]);
    }
    /* float32 backward: shapes and dtypes of the gradients, grad_fn name. */
    {
        int64_t sa[3] = {2, 3, 4}, sb[1] = {4};
        cg_tensor *a = randn_t(CG_FLOAT32, 3, sa, 1), *b = randn_t(CG_FLOAT32, 1, sb, 1);
        cg_tensor *y = NULL, *l = NULL;
        CHECK_OK(cg_matmul(a, b, &y));
        CHECK(cg_tensor_grad_fn_name(y) && strcmp(cg_tensor_grad_fn_name(y), "matmul") == 0);
        CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
        CHECK_OK(cg_backward(l, NULL, 0, 0));
        cg_tensor *ga = cg_tensor_grad(a), *gb = cg_tensor_grad(b);
        CHECK(ga && same_shape(ga, 3, sa) && cg_tensor_dtype(ga) == CG_FLOAT32);
        CHECK(gb && same_shape(gb, 1, sb) && cg_tensor_dtype(gb) == CG_FLOAT32);
        /* d sum(a @ b) / da[i, j, p] = b[p]; / db[p] = sum of a[..., p]. */
        if (ga && gb) {
            CHECK_CLOSE(cgt_at(ga, 5), cgt_at(b, 1), 1e-6);
            double s = 0;
            for (int i = 0; i < 6; ++i) s += cgt_at(a, i * 4 + 2);
            CHECK_CLOSE(cgt_at(gb, 2), s, 1e-5);
        }
        cg_tensor_free(l); cg_tensor_free(y); cg_tensor_free(a); cg_tensor_free(b);
    }
    /* No recording without grad. */
    {
        int64_t s[2] = {2, 2};
        cg_tensor *a = randn_t(CG_FLOAT64, 2, s, 1), *y = NULL;
        int prev = cg_set_grad_enabled(0);
        CHECK_OK(cg_matmul(a, a, &y));
        cg_set_grad_enabled(prev);
        CHECK(!cg_tensor_requires_grad(y) && cg_tensor_grad_fn_name(y) == NULL);
        cg_tensor_free(y); cg_tensor_free(a);
    }
}

static void test_matmul_errors(void) {
    int64_t s23[2] = {2, 3}, s45[2] = {4, 5}, s3 = 3;
    cg_tensor *a = NULL, *b = NULL, *af = NULL, *ai = NULL, *z = NULL, *y = NULL, *v = NULL;
    cg_tensor *ba = NULL, *bb = NULL;
    cg_randn(CG_FLOAT64, 2, s23, &a);
    cg_randn(CG_FLOAT64, 2, s45, &b);
    cg_randn(CG_FLOAT32, 2, s23, &af);
    cg_randn(CG_FLOAT64, 1, &s3, &v);
    cg_zeros(CG_INT64, 2, s23, &ai);
    cg_scalar(CG_FLOAT64, 2.0, &z);
    CHECK_STATUS(cg_matmul(a, b, &y), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "(2, 3)") && strstr(cg_last_error(), "(4, 5)"));
    CHECK(y == NULL);
    CHECK_STATUS(cg_matmul(v, b, &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_matmul(a, af, &y), CG_ERR_DTYPE);
    CHECK(strstr(cg_last_error(), "float64") && strstr(cg_last_error(), "float32"));
    CHECK_STATUS(cg_matmul(ai, ai, &y), CG_ERR_DTYPE);
    CHECK(strstr(cg_last_error(), "int64") != NULL);
    CHECK_STATUS(cg_matmul(z, a, &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_matmul(NULL, a, &y), CG_ERR_NULL);
    CHECK_STATUS(cg_matmul(a, NULL, &y), CG_ERR_NULL);
    CHECK_STATUS(cg_matmul(a, a, NULL), CG_ERR_NULL);
    {
        int64_t s1[3] = {2, 2, 3}, s2[3] = {3, 3, 2};
        cg_randn(CG_FLOAT64, 3, s1, &ba);
        cg_randn(CG_FLOAT64, 3, s2, &bb);
        CHECK_STATUS(cg_matmul(ba, bb, &y), CG_ERR_SHAPE); /* batch 2 vs 3 */
        CHECK(strstr(cg_last_error(), "(2, 2, 3)") && strstr(cg_last_error(), "(3, 3, 2)"));
    }
    cg_tensor_free(a); cg_tensor_free(b); cg_tensor_free(af); cg_tensor_free(ai);
    cg_tensor_free(z); cg_tensor_free(v); cg_tensor_free(ba); cg_tensor_free(bb);
}

/* ============================================================== conv2d */
typedef struct {
    int64_t stride[2], padding[2], dilation[2], groups;
} conv_cfg;

/* Direct convolution by definition: x (N, C, H, W), w (O, C/G, kh, kw). */
static double *ref_conv(const int64_t *xs, const double *x, const int64_t *ws, const double *w,
                        const double *bias, const conv_cfg *c, int64_t *os) {
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], O = ws[0], Cg = ws[1], kh = ws[2], kw = ws[3];
    int64_t Ho = (H + 2 * c->padding[0] - c->dilation[0] * (kh - 1) - 1) / c->stride[0] + 1;
    int64_t Wo = (W + 2 * c->padding[1] - c->dilation[1] * (kw - 1) - 1) / c->stride[1] + 1;
    int64_t Og = O / c->groups;
    os[0] = N; os[1] = O; os[2] = Ho; os[3] = Wo;
    double *y = (double *)calloc((size_t)(N * O * Ho * Wo + 1), sizeof(double));
    for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < O; ++o)
            for (int64_t oh = 0; oh < Ho; ++oh)
                for (int64_t ow = 0; ow < Wo; ++ow) {
                    double s = bias ? bias[o] : 0.0;
                    for (int64_t cc = 0; cc < Cg; ++cc) {
                        int64_t ci = (o / Og) * Cg + cc;
                        for (int64_t i = 0; i < kh; ++i)
                            for (int64_t j = 0; j < kw; ++j) {
                                int64_t ih = oh * c->stride[0] - c->padding[0] + i * c->dilation[0];
                                int64_t iw = ow * c->stride[1] - c->padding[1] + j * c->dilation[1];
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                s += x[((n * C + ci) * H + ih) * W + iw] *
                                     w[((o * Cg + cc) * kh + i) * kw + j];
                            }
                    }
                    y[((n * O + o) * Ho + oh) * Wo + ow] = s;
                }
    (void)C;
    return y;
}

static cg_status f_conv(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    const conv_cfg *c = (const conv_cfg *)ctx;
    return cg_conv2d(in[0], in[1], n > 2 ? in[2] : NULL, c->stride, c->padding, c->dilation,
                     c->groups, out);
}

typedef struct {
    int64_t xs[4], ws[4];
    conv_cfg cfg;
    int bias;
} conv_case;

static const conv_case CONV_CASES[] = {
    {{2, 3, 7, 6}, {4, 3, 3, 3}, {{1, 1}, {0, 0}, {1, 1}, 1}, 1},
    {{1, 2, 8, 9}, {3, 2, 3, 2}, {{2, 3}, {1, 2}, {1, 1}, 1}, 0},
    {{2, 4, 9, 8}, {6, 2, 3, 3}, {{1, 2}, {2, 1}, {2, 3}, 2}, 1},
    {{1, 4, 6, 6}, {4, 1, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 4}, 1},  /* depthwise */
    {{2, 3, 5, 4}, {5, 3, 1, 1}, {{1, 1}, {0, 0}, {1, 1}, 1}, 1},  /* pointwise */
    {{1, 2, 5, 5}, {2, 2, 5, 5}, {{1, 1}, {0, 0}, {1, 1}, 1}, 0},  /* 1x1 output */
    {{1, 1, 4, 4}, {2, 1, 2, 2}, {{3, 3}, {1, 1}, {1, 1}, 1}, 1},
};
#define N_CONV_CASES ((int)(sizeof CONV_CASES / sizeof CONV_CASES[0]))

static void test_conv_values(void) {
    /* Hand-computed: 3x3 ramp, 2x2 ones kernel, bias 0.5. */
    {
        int64_t xs[4] = {1, 1, 3, 3}, ws[4] = {1, 1, 2, 2}, bs = 1, os[4] = {1, 1, 2, 2};
        double xv[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wv[4] = {1, 1, 1, 1}, bv[1] = {0.5};
        cg_tensor *x = cgt_f64(4, xs, xv), *w = cgt_f64(4, ws, wv), *b = cgt_f64(1, &bs, bv), *y = NULL;
        CHECK_OK(cg_conv2d(x, w, b, NULL, NULL, NULL, 1, &y));
        CHECK(same_shape(y, 4, os));
        CHECK_CLOSE(cgt_at(y, 0), 12.5, 1e-14);
        CHECK_CLOSE(cgt_at(y, 1), 16.5, 1e-14);
        CHECK_CLOSE(cgt_at(y, 2), 24.5, 1e-14);
        CHECK_CLOSE(cgt_at(y, 3), 28.5, 1e-14);
        cg_tensor_free(y); cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(b);
    }
    for (int c = 0; c < N_CONV_CASES; ++c) {
        const conv_case *cc = &CONV_CASES[c];
        int64_t bs = cc->ws[0], os[4];
        cg_tensor *x = randn_t(CG_FLOAT64, 4, cc->xs, 0), *w = randn_t(CG_FLOAT64, 4, cc->ws, 0);
        cg_tensor *b = cc->bias ? randn_t(CG_FLOAT64, 1, &bs, 0) : NULL, *y = NULL;
        double *xv = vals(x), *wv = vals(w), *bv = b ? vals(b) : NULL;
        double *ref = ref_conv(cc->xs, xv, cc->ws, wv, bv, &cc->cfg, os);
        CHECK_OK(cg_conv2d(x, w, b, cc->cfg.stride, cc->cfg.padding, cc->cfg.dilation, cc->cfg.groups, &y));
        if (y) {
            double *yv = vals(y);
            CHECK(same_shape(y, 4, os));
            CHECK(max_rel_err(yv, ref, numel_of(4, os)) < 1e-13);
            free(yv);
        }
        /* float32 */
        cg_tensor *xf = NULL, *wf = NULL, *bf = NULL, *yf = NULL;
        cg_to_dtype(x, CG_FLOAT32, &xf);
        cg_to_dtype(w, CG_FLOAT32, &wf);
        if (b) cg_to_dtype(b, CG_FLOAT32, &bf);
        CHECK_OK(cg_conv2d(xf, wf, bf, cc->cfg.stride, cc->cfg.padding, cc->cfg.dilation, cc->cfg.groups, &yf));
        if (yf) {
            double *yv = vals(yf);
            CHECK(cg_tensor_dtype(yf) == CG_FLOAT32);
            CHECK(max_rel_err(yv, ref, numel_of(4, os)) < 1e-5);
            free(yv);
        }
        free(xv); free(wv); free(bv); free(ref);
        cg_tensor_free(y); cg_tensor_free(yf); cg_tensor_free(xf); cg_tensor_free(wf); cg_tensor_free(bf);
        cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(b);
    }
    /* Non-contiguous input (a transposed view) and a larger float32 case. */
    {
        int64_t xs[4] = {2, 8, 20, 18}, ws[4] = {16, 8, 3, 3}, os[4];
        conv_cfg cfg = {{1, 1}, {1, 1}, {1, 1}, 1};
        cg_tensor *x = randn_t(CG_FLOAT32, 4, xs, 0), *w = randn_t(CG_FLOAT32, 4, ws, 0);
        cg_tensor *xt = NULL, *y = NULL, *yt = NULL;
        double *xv = vals(x), *wv = vals(w);
        double *ref = ref_conv(xs, xv, ws, wv, NULL, &cfg, os);
        CHECK_OK(cg_conv2d(x, w, NULL, cfg.stride, cfg.padding, cfg.dilation, 1, &y));
        if (y) {
            double *yv = vals(y);
            CHECK(max_rel_err(yv, ref, numel_of(4, os)) < 2e-5);
            free(yv);
        }
        CHECK_OK(cg_transpose(x, 2, 3, &xt)); /* (2, 8, 18, 20) view */
        CHECK_OK(cg_conv2d(xt, w, NULL, cfg.stride, cfg.padding, cfg.dilation, 1, &yt));
        int64_t ost[4] = {2, 16, 18, 20};
        CHECK(yt && same_shape(yt, 4, ost));
        free(xv); free(wv); free(ref);
        cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(xt); cg_tensor_free(y); cg_tensor_free(yt);
    }
    /* Empty batch. */
    {
        int64_t xs[4] = {0, 2, 5, 5}, ws[4] = {3, 2, 3, 3}, os[4] = {0, 3, 3, 3};
        cg_tensor *x = NULL, *w = randn_t(CG_FLOAT64, 4, ws, 0), *y = NULL;
        cg_zeros(CG_FLOAT64, 4, xs, &x);
        CHECK_OK(cg_conv2d(x, w, NULL, NULL, NULL, NULL, 1, &y));
        CHECK(y && same_shape(y, 4, os));
        cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(y);
    }
}

static void test_conv_grad(void) {
    for (int c = 0; c < N_CONV_CASES; ++c) {
        const conv_case *cc = &CONV_CASES[c];
        int64_t bs = cc->ws[0];
        cg_tensor *ins[3] = {cgt_randn64(4, cc->xs), cgt_randn64(4, cc->ws),
                             cc->bias ? cgt_randn64(1, &bs) : NULL};
        int n = cc->bias ? 3 : 2;
        GRADCHECK(f_conv, (void *)&cc->cfg, n, ins);
        GRADGRADCHECK(f_conv, (void *)&cc->cfg, n, ins);
        for (int i = 0; i < 3; ++i) cg_tensor_free(ins[i]);
    }
    /* Only the input (or only the weight) requires grad. */
    {
        const conv_case *cc = &CONV_CASES[2];
        cg_tensor *ins[2] = {cgt_randn64(4, cc->xs), NULL};
        cg_randn(CG_FLOAT64, 4, cc->ws, &ins[1]);
        GRADCHECK(f_conv, (void *)&cc->cfg, 2, ins);
        GRADGRADCHECK(f_conv, (void *)&cc->cfg, 2, ins);
        cg_tensor_set_requires_grad(ins[0], 0);
        cg_tensor_set_requires_grad(ins[1], 1);
        GRADCHECK(f_conv, (void *)&cc->cfg, 2, ins);
        GRADGRADCHECK(f_conv, (void *)&cc->cfg, 2, ins);
        cg_tensor_free(ins[0]);
        cg_tensor_free(ins[1]);
    }
    /* float32 backward shapes / dtypes and op names. */
    {
        int64_t xs[4] = {2, 4, 6, 5}, ws[4] = {6, 2, 3, 3}, bs = 6;
        int64_t st[2] = {2, 1}, pd[2] = {1, 1};
        cg_tensor *x = randn_t(CG_FLOAT32, 4, xs, 1), *w = randn_t(CG_FLOAT32, 4, ws, 1);
        cg_tensor *b = randn_t(CG_FLOAT32, 1, &bs, 1), *y = NULL, *l = NULL;
        CHECK_OK(cg_conv2d(x, w, b, st, pd, NULL, 2, &y));
        CHECK(y && strcmp(cg_tensor_grad_fn_name(y), "conv2d") == 0);
        CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
        CHECK_OK(cg_backward(l, NULL, 0, 0));
        CHECK(cg_tensor_grad(x) && same_shape(cg_tensor_grad(x), 4, xs) &&
              cg_tensor_dtype(cg_tensor_grad(x)) == CG_FLOAT32);
        CHECK(cg_tensor_grad(w) && same_shape(cg_tensor_grad(w), 4, ws));
        /* d sum(y) / d bias[o] = N * Ho * Wo = 2 * 3 * 5 */
        CHECK(cg_tensor_grad(b) && fabs(cgt_at(cg_tensor_grad(b), 4) - 30.0) < 1e-5);
        cg_tensor_free(l); cg_tensor_free(y); cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(b);
    }
}

static void test_conv_errors(void) {
    int64_t xs[4] = {1, 4, 5, 5}, ws[4] = {2, 4, 3, 3}, x3s[3] = {4, 5, 5}, w3s[3] = {2, 4, 3};
    int64_t wbad[4] = {2, 3, 3, 3}, wbig[4] = {2, 4, 7, 7}, bs = 3;
    cg_tensor *x = NULL, *w = NULL, *x3 = NULL, *w3 = NULL, *wb = NULL, *wg = NULL, *b = NULL;
    cg_tensor *xf = NULL, *xi = NULL, *y = NULL;
    cg_randn(CG_FLOAT64, 4, xs, &x);
    cg_randn(CG_FLOAT64, 4, ws, &w);
    cg_randn(CG_FLOAT64, 3, x3s, &x3);
    cg_randn(CG_FLOAT64, 3, w3s, &w3);
    cg_randn(CG_FLOAT64, 4, wbad, &wb);
    cg_randn(CG_FLOAT64, 4, wbig, &wg);
    cg_randn(CG_FLOAT64, 1, &bs, &b);
    cg_randn(CG_FLOAT32, 4, xs, &xf);
    cg_zeros(CG_INT64, 4, xs, &xi);
    int64_t s0[2] = {0, 1}, pneg[2] = {-1, 0}, d0[2] = {1, 0};
    CHECK_STATUS(cg_conv2d(x3, w, NULL, NULL, NULL, NULL, 1, &y), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "(4, 5, 5)") != NULL);
    CHECK_STATUS(cg_conv2d(x, w3, NULL, NULL, NULL, NULL, 1, &y), CG_ERR_SHAPE);
    CHECK_STATUS(cg_conv2d(x, wb, NULL, NULL, NULL, NULL, 1, &y), CG_ERR_SHAPE);
    CHECK(strstr(cg_last_error(), "(2, 3, 3, 3)") && strstr(cg_last_error(), "(1, 4, 5, 5)"));
    CHECK_STATUS(cg_conv2d(x, w, NULL, NULL, NULL, NULL, 3, &y), CG_ERR_SHAPE); /* 4 % 3 */
    CHECK_STATUS(cg_conv2d(x, wb, NULL, NULL, NULL, NULL, 4, &y), CG_ERR_SHAPE); /* 2 % 4 */
    CHECK_STATUS(cg_conv2d(x, w, NULL, NULL, NULL, NULL, 0, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_conv2d(x, w, NULL, s0, NULL, NULL, 1, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_conv2d(x, w, NULL, NULL, pneg, NULL, 1, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_conv2d(x, w, NULL, NULL, NULL, d0, 1, &y), CG_ERR_VALUE);
    CHECK_STATUS(cg_conv2d(x, wg, NULL, NULL, NULL, NULL, 1, &y), CG_ERR_SHAPE); /* kernel > input */
    CHECK(strstr(cg_last_error(), "kernel") != NULL);
    CHECK_STATUS(cg_conv2d(x, w, b, NULL, NULL, NULL, 1, &y), CG_ERR_SHAPE); /* bias (3,) for 2 */
    CHECK_STATUS(cg_conv2d(xf, w, NULL, NULL, NULL, NULL, 1, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_conv2d(xi, w, NULL, NULL, NULL, NULL, 1, &y), CG_ERR_DTYPE);
    CHECK_STATUS(cg_conv2d(NULL, w, NULL, NULL, NULL, NULL, 1, &y), CG_ERR_NULL);
    CHECK_STATUS(cg_conv2d(x, NULL, NULL, NULL, NULL, NULL, 1, &y), CG_ERR_NULL);
    CHECK_STATUS(cg_conv2d(x, w, NULL, NULL, NULL, NULL, 1, NULL), CG_ERR_NULL);
    CHECK(y == NULL);
    cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(x3); cg_tensor_free(w3);
    cg_tensor_free(wb); cg_tensor_free(wg); cg_tensor_free(b); cg_tensor_free(xf); cg_tensor_free(xi);
}

/* ============================================================= pooling */
typedef struct {
    int64_t k[2], s[2], p[2];
    int cip;
} pool_cfg;

/* Reference pooling by definition; max: padding is -inf; avg: PyTorch's
 * divisor (window positions inside the padded input, or inside the input). */
static double *ref_pool(int is_max, const int64_t *xs, const double *x, const pool_cfg *c,
                        int64_t *os) {
    int64_t P = xs[0] * xs[1], H = xs[2], W = xs[3];
    int64_t Ho = (H + 2 * c->p[0] - c->k[0]) / c->s[0] + 1, Wo = (W + 2 * c->p[1] - c->k[1]) / c->s[1] + 1;
    os[0] = xs[0]; os[1] = xs[1]; os[2] = Ho; os[3] = Wo;
    double *y = (double *)calloc((size_t)(P * Ho * Wo + 1), sizeof(double));
    for (int64_t pl = 0; pl < P; ++pl)
        for (int64_t oh = 0; oh < Ho; ++oh)
            for (int64_t ow = 0; ow < Wo; ++ow) {
                double best = -INFINITY, sum = 0;
                int64_t n_pad = 0, n_in = 0;
                for (int64_t i = 0; i < c->k[0]; ++i)
                    for (int64_t j = 0; j < c->k[1]; ++j) {
                        int64_t ih = oh * c->s[0] - c->p[0] + i, iw = ow * c->s[1] - c->p[1] + j;
                        if (ih < H + c->p[0] && iw < W + c->p[1]) ++n_pad;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        double v = x[(pl * H + ih) * W + iw];
                        ++n_in;
                        sum += v;
                        if (v > best) best = v;
                    }
                y[(pl * Ho + oh) * Wo + ow] = is_max ? best : sum / (double)(c->cip ? n_pad : n_in);
            }
    return y;
}

static cg_status f_maxpool(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    const pool_cfg *c = (const pool_cfg *)ctx;
    return cg_max_pool2d(in[0], c->k, c->s, c->p, out);
}
static cg_status f_avgpool(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    const pool_cfg *c = (const pool_cfg *)ctx;
    return cg_avg_pool2d(in[0], c->k, c->s, c->p, c->cip, out);
}

static const pool_cfg POOL_CASES[] = {
    {{2, 2}, {2, 2}, {0, 0}, 1},
    {{3, 3}, {1, 1}, {1, 1}, 1}, /* overlapping windows */
    {{3, 3}, {2, 2}, {1, 1}, 0},
    {{3, 2}, {2, 1}, {1, 1}, 1},
    {{2, 3}, {3, 2}, {1, 0}, 0},
};
#define N_POOL_CASES ((int)(sizeof POOL_CASES / sizeof POOL_CASES[0]))

static void test_pool(void) {
    /* Hand-computed: 4x4 ramp 0..15. */
    {
        int64_t xs[4] = {1, 1, 4, 4}, k[2] = {2, 2}, k3[2] = {3, 3}, s2[2] = {2, 2}, p1[2] = {1, 1};
        double xv[16];
        for (int i = 0; i < 16; ++i) xv[i] = i;
        cg_tensor *x = cgt_f64(4, xs, xv), *y = NULL, *a = NULL, *a0 = NULL;
        CHECK_OK(cg_max_pool2d(x, k, NULL, NULL, &y)); /* stride defaults to the kernel */
        CHECK(cg_tensor_numel(y) == 4);
        CHECK(cgt_at(y, 0) == 5 && cgt_at(y, 1) == 7 && cgt_at(y, 2) == 13 && cgt_at(y, 3) == 15);
        CHECK_OK(cg_avg_pool2d(x, k3, s2, p1, 1, &a)); /* top-left window: (0+1+4+5)/9 */
        CHECK_CLOSE(cgt_at(a, 0), 10.0 / 9.0, 1e-14);
        CHECK_OK(cg_avg_pool2d(x, k3, s2, p1, 0, &a0)); /* (0+1+4+5)/4 */
        CHECK_CLOSE(cgt_at(a0, 0), 2.5, 1e-14);
        cg_tensor_free(x); cg_tensor_free(y); cg_tensor_free(a); cg_tensor_free(a0);
    }
    /* Padding is -inf for max: all-negative input. */
    {
        int64_t xs[4] = {1, 1, 2, 2}, k[2] = {2, 2}, s[2] = {1, 1}, p[2] = {1, 1};
        double xv[4] = {-4, -3, -2, -1};
        cg_tensor *x = cgt_f64(4, xs, xv), *y = NULL;
        CHECK_OK(cg_max_pool2d(x, k, s, p, &y)); /* 3x3 output, corners see one element */
        CHECK(cg_tensor_numel(y) == 9 && cgt_at(y, 0) == -4 && cgt_at(y, 8) == -1 && cgt_at(y, 4) == -1);
        cg_tensor_free(x); cg_tensor_free(y);
    }
    int64_t xs[4] = {2, 3, 7, 6};
    for (int c = 0; c < N_POOL_CASES; ++c) {
        const pool_cfg *pc = &POOL_CASES[c];
        for (int is_max = 0; is_max < 2; ++is_max) {
            cg_fn f = is_max ? f_maxpool : f_avgpool;
            cg_tensor *x = randn_t(CG_FLOAT64, 4, xs, 0), *y = NULL, *xf = NULL, *yf = NULL;
            int64_t os[4];
            double *xv = vals(x), *ref = ref_pool(is_max, xs, xv, pc, os);
            CHECK_OK(f((void *)pc, 1, &x, &y));
            if (y) {
                double *yv = vals(y);
                CHECK(same_shape(y, 4, os) && max_rel_err(yv, ref, numel_of(4, os)) < 1e-14);
                free(yv);
            }
            cg_to_dtype(x, CG_FLOAT32, &xf);
            CHECK_OK(f((void *)pc, 1, &xf, &yf));
            if (yf) {
                double *yv = vals(yf);
                CHECK(cg_tensor_dtype(yf) == CG_FLOAT32 && max_rel_err(yv, ref, numel_of(4, os)) < 1e-6);
                free(yv);
            }
            free(xv); free(ref);
            cg_tensor_free(x); cg_tensor_free(y); cg_tensor_free(xf); cg_tensor_free(yf);
            /* Gradients (random inputs: no ties in max windows). */
            int64_t gs[4] = {1, 2, 5, 6};
            cg_tensor *g = cgt_randn64(4, gs);
            GRADCHECK(f, (void *)pc, 1, &g);
            GRADGRADCHECK(f, (void *)pc, 1, &g);
            cg_tensor_free(g);
        }
    }
    /* Max gradient goes to the argmax; overlapping windows add up. */
    {
        int64_t xs2[4] = {1, 1, 3, 3}, k[2] = {2, 2}, s[2] = {1, 1};
        double xv[9] = {0, 1, 0, 2, 9, 3, 0, 1, 0};
        cg_tensor *x = cgt_f64(4, xs2, xv), *y = NULL, *l = NULL;
        cg_tensor_set_requires_grad(x, 1);
        CHECK_OK(cg_max_pool2d(x, k, s, NULL, &y)); /* every window's max is the 9 */
        CHECK(y && strcmp(cg_tensor_grad_fn_name(y), "max_pool2d") == 0);
        CHECK_OK(cg_sum(y, NULL, 0, 0, &l));
        CHECK_OK(cg_backward(l, NULL, 0, 0));
        CHECK(cg_tensor_grad(x) && cgt_at(cg_tensor_grad(x), 4) == 4.0 && cgt_at(cg_tensor_grad(x), 0) == 0.0);
        cg_tensor_free(x); cg_tensor_free(y); cg_tensor_free(l);
    }
    /* 3-D input (C, H, W). */
    {
        int64_t xs3[3] = {2, 4, 4}, k[2] = {2, 2}, os3[3] = {2, 2, 2};
        cg_tensor *x = randn_t(CG_FLOAT32, 3, xs3, 0), *y = NULL;
        CHECK_OK(cg_avg_pool2d(x, k, NULL, NULL, 1, &y));
        CHECK(y && same_shape(y, 3, os3));
        CHECK_CLOSE(cgt_at(y, 0), (cgt_at(x, 0) + cgt_at(x, 1) + cgt_at(x, 4) + cgt_at(x, 5)) / 4, 1e-6);
        cg_tensor_free(x); cg_tensor_free(y);
    }
    /* Errors. */
    {
        int64_t s4[4] = {1, 1, 4, 4}, s2[2] = {4, 4}, k2[2] = {2, 2}, k5[2] = {5, 5}, p2[2] = {2, 0};
        int64_t k0[2] = {0, 2}, st0[2] = {1, 0};
        cg_tensor *x = NULL, *x2 = NULL, *xi = NULL, *y = NULL;
        cg_randn(CG_FLOAT64, 4, s4, &x);
        cg_randn(CG_FLOAT64, 2, s2, &x2);
        cg_zeros(CG_INT64, 4, s4, &xi);
        CHECK_STATUS(cg_max_pool2d(x, k2, NULL, p2, &y), CG_ERR_VALUE); /* pad > k/2 */
        CHECK_STATUS(cg_avg_pool2d(x, k2, NULL, p2, 1, &y), CG_ERR_VALUE);
        CHECK_STATUS(cg_max_pool2d(x, k0, NULL, NULL, &y), CG_ERR_VALUE);
        CHECK_STATUS(cg_max_pool2d(x, k2, st0, NULL, &y), CG_ERR_VALUE);
        CHECK_STATUS(cg_max_pool2d(x, k5, NULL, NULL, &y), CG_ERR_SHAPE);
        CHECK_STATUS(cg_max_pool2d(x2, k2, NULL, NULL, &y), CG_ERR_SHAPE);
        CHECK_STATUS(cg_avg_pool2d(x2, k2, NULL, NULL, 0, &y), CG_ERR_SHAPE);
        CHECK_STATUS(cg_max_pool2d(xi, k2, NULL, NULL, &y), CG_ERR_DTYPE);
        CHECK_STATUS(cg_max_pool2d(x, NULL, NULL, NULL, &y), CG_ERR_NULL);
        CHECK_STATUS(cg_max_pool2d(NULL, k2, NULL, NULL, &y), CG_ERR_NULL);
        CHECK_STATUS(cg_avg_pool2d(x, k2, NULL, NULL, 0, NULL), CG_ERR_NULL);
        CHECK(y == NULL);
        cg_tensor_free(x); cg_tensor_free(x2); cg_tensor_free(xi);
    }
}

/* ============================================================= dropout */
static cg_status f_dropout(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    cg_manual_seed(7); /* the same mask on every call */
    return cg_dropout(in[0], *(const double *)ctx, 1, out);
}

static void test_dropout(void) {
    int64_t n = 200000;
    double p = 0.3;
    cg_tensor *x = NULL, *y = NULL, *y2 = NULL;
    CHECK_OK(cg_ones(CG_FLOAT32, 1, &n, &x));
    cg_manual_seed(42);
    CHECK_OK(cg_dropout(x, p, 1, &y));
    double *yv = vals(y);
    int64_t zeros = 0, bad = 0;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (yv[i] == 0) ++zeros;
        else if (fabs(yv[i] - 1.0 / 0.7) > 1e-6) ++bad;
        sum += yv[i];
    }
    CHECK(bad == 0);
    CHECK(fabs((double)zeros / (double)n - p) < 0.005);  /* ~ 5 sigma */
    CHECK(fabs(sum / (double)n - 1.0) < 0.01);           /* mean kept */
    /* Same seed, same mask; float64 draws the same mask as float32. */
    cg_tensor *xd = NULL, *yd = NULL;
    CHECK_OK(cg_ones(CG_FLOAT64, 1, &n, &xd));
    cg_manual_seed(42);
    CHECK_OK(cg_dropout(x, p, 1, &y2));
    cg_manual_seed(42);
    CHECK_OK(cg_dropout(xd, p, 1, &yd));
    double *y2v = vals(y2), *ydv = vals(yd);
    int same = 1, same_d = 1;
    for (int64_t i = 0; i < n; ++i) {
        if (y2v[i] != yv[i]) same = 0;
        if ((ydv[i] == 0) != (yv[i] == 0)) same_d = 0;
    }
    CHECK(same);
    CHECK(same_d);
    free(yv); free(y2v); free(ydv);
    cg_tensor_free(y); cg_tensor_free(y2); cg_tensor_free(yd); cg_tensor_free(xd);

    /* Identity when not training or p == 0; zeros when p == 1. */
    {
        cg_tensor *i1 = NULL, *i2 = NULL, *z = NULL;
        CHECK_OK(cg_dropout(x, 0.5, 0, &i1));
        CHECK(i1 == x);
        CHECK_OK(cg_dropout(x, 0.0, 1, &i2));
        CHECK(i2 == x);
        CHECK_OK(cg_dropout(x, 1.0, 1, &z));
        CHECK(z && cgt_at(z, 0) == 0.0 && cgt_at(z, n - 1) == 0.0);
        cg_tensor_free(i1); cg_tensor_free(i2); cg_tensor_free(z);
    }
    /* Gradient is the mask: with x = 1, dy/dx == y. */
    {
        int64_t s[2] = {30, 40};
        cg_tensor *a = NULL, *b = NULL, *l = NULL;
        cg_ones(CG_FLOAT64, 2, s, &a);
        cg_tensor_set_requires_grad(a, 1);
        CHECK_OK(cg_dropout(a, 0.5, 1, &b));
        CHECK(b && strcmp(cg_tensor_grad_fn_name(b), "dropout") == 0);
        CHECK_OK(cg_sum(b, NULL, 0, 0, &l));
        CHECK_OK(cg_backward(l, NULL, 0, 0));
        double *bv = vals(b), *gv = vals(cg_tensor_grad(a));
        int eq = 1;
        for (int i = 0; i < 1200; ++i)
            if (bv[i] != gv[i]) eq = 0;
        CHECK(eq);
        free(bv); free(gv);
        cg_tensor_free(a); cg_tensor_free(b); cg_tensor_free(l);
    }
    /* gradcheck with a fixed seed inside the function; p = 1 too. */
    {
        int64_t s[2] = {4, 5};
        double pp = 0.4, p1 = 1.0;
        cg_tensor *a = cgt_randn64(2, s);
        GRADCHECK(f_dropout, &pp, 1, &a);
        GRADGRADCHECK(f_dropout, &pp, 1, &a);
        GRADCHECK(f_dropout, &p1, 1, &a);
        cg_tensor_free(a);
    }
    /* Errors. */
    {
        int64_t s = 3;
        cg_tensor *xi = NULL, *e = NULL;
        cg_zeros(CG_INT64, 1, &s, &xi);
        CHECK_STATUS(cg_dropout(x, -0.1, 1, &e), CG_ERR_VALUE);
        CHECK_STATUS(cg_dropout(x, 1.5, 1, &e), CG_ERR_VALUE);
        CHECK_STATUS(cg_dropout(x, NAN, 1, &e), CG_ERR_VALUE);
        CHECK_STATUS(cg_dropout(xi, 0.5, 1, &e), CG_ERR_DTYPE);
        CHECK_STATUS(cg_dropout(NULL, 0.5, 1, &e), CG_ERR_NULL);
        CHECK_STATUS(cg_dropout(x, 0.5, 1, NULL), CG_ERR_NULL);
        CHECK(e == NULL);
        cg_tensor_free(xi);
    }
    cg_tensor_free(x);
}

/* ------------------------------------------------------------ nll_loss */
typedef struct {
    cg_tensor *target, *weight;
    int64_t ignore;
    cg_reduction reduction;
} nll_cfg;

static cg_status f_nll(void *ctx, int n, cg_tensor *const *ins, cg_tensor **out) {
    const nll_cfg *c = (const nll_cfg *)ctx;
    (void)n;
    return cg_nll_loss(ins[0], c->target, c->weight, c->ignore, c->reduction, out);
}

static void test_nll_loss(void) {
    /* input (2, 3, 2): targets with one ignored entry (class 1 = ignore) */
    int64_t xs[3] = {2, 3, 2}, ts[2] = {2, 2}, cs = 3;
    const int64_t tv[4] = {2, 1, 0, 2};
    const double wv[3] = {0.5, 2.0, 1.5};
    cg_tensor *t = NULL, *w = NULL, *x = cgt_randn64(3, xs);
    CHECK_OK(cg_from_data(CG_INT64, 2, ts, tv, &t));
    CHECK_OK(cg_from_data(CG_FLOAT64, 1, &cs, wv, &w));
    double *xv = vals(x);
    /* naive loop: loss[n, d] = -w[t] x[n, t, d], t != 1 */
    double per[4], lsum = 0.0, wsum = 0.0;
    for (int k = 0; k < 4; ++k) {
        int64_t nn = k / 2, d = k % 2, c = tv[k];
        per[k] = c == 1 ? 0.0 : -wv[c] * xv[(nn * 3 + c) * 2 + d];
        if (c != 1) {
            lsum += per[k];
            wsum += wv[c];
        }
    }
    cg_reduction reds[3] = {CG_REDUCTION_NONE, CG_REDUCTION_MEAN, CG_REDUCTION_SUM};
    for (int r = 0; r < 3; ++r) {
        cg_tensor *y = NULL;
        CHECK_OK(cg_nll_loss(x, t, w, 1, reds[r], &y));
        if (!y) continue;
        double *yv = vals(y);
        if (r == 0) CHECK(same_shape(y, 2, ts) && max_rel_err(yv, per, 4) < 1e-15);
        else CHECK(cg_tensor_ndim(y) == 0 && fabs(yv[0] - (r == 1 ? lsum / wsum : lsum)) < 1e-14);
        CHECK(strcmp(cg_tensor_grad_fn_name(y), "nll_loss") == 0);
        free(yv);
        cg_tensor_free(y);
        nll_cfg cfg = {t, r == 2 ? NULL : w, r == 0 ? -100 : 1, reds[r]};
        cg_tensor *ins[1] = {x};
        GRADCHECK(f_nll, &cfg, 1, ins);
        GRADGRADCHECK(f_nll, &cfg, 1, ins);
    }
    /* an input (C,) with a 0-d target; 'mean' of nothing counted is NaN */
    {
        cg_tensor *x1 = cgt_randn64(1, &cs), *t0 = NULL, *y = NULL;
        CHECK_OK(cg_scalar(CG_INT64, 2, &t0));
        nll_cfg cfg = {t0, NULL, -100, CG_REDUCTION_MEAN};
        cg_tensor *ins[1] = {x1};
        GRADCHECK(f_nll, &cfg, 1, ins);
        CHECK_OK(cg_nll_loss(x1, t0, NULL, 2, CG_REDUCTION_MEAN, &y));
        CHECK(y && isnan(cgt_at(y, 0)));
        cg_tensor_free(y);
        cg_tensor_free(t0);
        cg_tensor_free(x1);
    }
    /* errors: status and message, nothing allocated */
    {
        cg_tensor *y = NULL, *bad = NULL, *tf = NULL, *w2 = NULL, *wf = NULL, *tshort = NULL;
        const int64_t bv[4] = {0, 3, 0, 0};
        int64_t two = 2;
        CHECK_OK(cg_from_data(CG_INT64, 2, ts, bv, &bad));
        CHECK_STATUS(cg_nll_loss(x, bad, NULL, -100, CG_REDUCTION_MEAN, &y), CG_ERR_INDEX);
        CHECK(strstr(cg_last_error(), "target 3 is out of bounds for 3 classes") != NULL);
        CHECK(y == NULL);
        CHECK_OK(cg_nll_loss(x, bad, NULL, 3, CG_REDUCTION_MEAN, &y)); /* 3 is ignored */
        cg_tensor_free(y);
        CHECK_OK(cg_zeros(CG_FLOAT64, 2, ts, &tf));
        CHECK_STATUS(cg_nll_loss(x, tf, NULL, -100, CG_REDUCTION_MEAN, &y), CG_ERR_DTYPE);
        CHECK_STATUS(cg_nll_loss(t, t, NULL, -100, CG_REDUCTION_MEAN, &y), CG_ERR_DTYPE);
        CHECK_OK(cg_zeros(CG_INT64, 1, &two, &tshort));
        CHECK_STATUS(cg_nll_loss(x, tshort, NULL, -100, CG_REDUCTION_MEAN, &y), CG_ERR_SHAPE);
        CHECK(strstr(cg_last_error(), "expected (2, 2)") != NULL);
        CHECK_OK(cg_ones(CG_FLOAT64, 1, &two, &w2));
        CHECK_STATUS(cg_nll_loss(x, t, w2, -100, CG_REDUCTION_MEAN, &y), CG_ERR_SHAPE);
        CHECK_OK(cg_ones(CG_FLOAT32, 1, &cs, &wf));
        CHECK_STATUS(cg_nll_loss(x, t, wf, -100, CG_REDUCTION_MEAN, &y), CG_ERR_DTYPE);
        CHECK_STATUS(cg_nll_loss(x, t, NULL, -100, (cg_reduction)7, &y), CG_ERR_VALUE);
        CHECK_STATUS(cg_nll_loss(x, NULL, NULL, -100, CG_REDUCTION_MEAN, &y), CG_ERR_NULL);
        cg_tensor_set_requires_grad(w, 1);
        CHECK_STATUS(cg_nll_loss(x, t, w, -100, CG_REDUCTION_MEAN, &y), CG_ERR_UNSUPPORTED);
        CHECK(y == NULL);
        cg_tensor_free(bad); cg_tensor_free(tf); cg_tensor_free(tshort); cg_tensor_free(w2);
        cg_tensor_free(wf);
    }
    free(xv);
    cg_tensor_free(x); cg_tensor_free(t); cg_tensor_free(w);
}

/* ------------------------------------------------------------ linear */
/* How f_linear lays out its leaf inputs before cg_linear: x as stored, as
 * the transpose of a stored (K, M), or every other row of a stored
 * (B, 2T, K) (rows that do not fold); w as stored or the transpose of a
 * stored (K, N); the bias as stored or every other element. */
typedef struct {
    int x_mode, w_trans, b_mode; /* b_mode: 0 none, 1 plain, 2 strided */
} lin_cfg;

static cg_status lin_views(const lin_cfg *c, cg_tensor *const *in, cg_tensor **x,
                           cg_tensor **w, cg_tensor **b) {
    cg_status st = CG_OK;
    *x = *w = *b = NULL;
    if (c->x_mode == 1) st = cg_transpose(in[0], 0, 1, x);
    else if (c->x_mode == 2) st = cg_slice(in[0], 1, 0, cg_tensor_shape(in[0])[1], 2, x);
    else { cg_tensor_retain(in[0]); *x = in[0]; }
    if (!st && c->w_trans) st = cg_transpose(in[1], 0, 1, w);
    else if (!st) { cg_tensor_retain(in[1]); *w = in[1]; }
    if (!st && c->b_mode == 2) st = cg_slice(in[2], 0, 0, cg_tensor_shape(in[2])[0], 2, b);
    else if (!st && c->b_mode == 1) { cg_tensor_retain(in[2]); *b = in[2]; }
    return st;
}

static cg_status f_linear(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    cg_tensor *x, *w, *b;
    (void)n;
    cg_status st = lin_views((const lin_cfg *)ctx, in, &x, &w, &b);
    if (!st) st = cg_linear(x, w, b, out);
    cg_tensor_free(x);
    cg_tensor_free(w);
    cg_tensor_free(b);
    return st;
}

typedef struct {
    lin_cfg cfg;
    int xnd;
    int64_t xs[3], ws[2], bs; /* stored shapes of the leaves */
} lin_case;

static const lin_case LIN_CASES[] = {
    {{0, 0, 1}, 2, {5, 4}, {3, 4}, 3},
    {{0, 0, 0}, 2, {5, 4}, {3, 4}, 0},
    {{0, 0, 1}, 1, {4}, {3, 4}, 3},
    {{0, 0, 1}, 3, {2, 3, 4}, {5, 4}, 5},
    {{1, 0, 1}, 2, {4, 5}, {3, 4}, 3},       /* x = (4, 5)^T */
    {{2, 0, 2}, 3, {2, 6, 4}, {3, 4}, 6},    /* rows that do not fold, strided bias */
    {{0, 1, 1}, 2, {5, 4}, {4, 3}, 3},       /* w = (4, 3)^T */
    {{0, 0, 1}, 3, {1, 5, 1}, {1, 1}, 1},
};
#define N_LIN_CASES ((int)(sizeof LIN_CASES / sizeof LIN_CASES[0]))

static void test_linear(void) {
    for (int ci = 0; ci < N_LIN_CASES; ++ci) {
        const lin_case *lc = &LIN_CASES[ci];
        cg_tensor *in[3] = {cgt_randn64(lc->xnd, lc->xs), cgt_randn64(2, lc->ws),
                            lc->cfg.b_mode ? cgt_randn64(1, &lc->bs) : NULL};
        int nin = lc->cfg.b_mode ? 3 : 2;
        cg_tensor *x, *w, *b, *y = NULL;
        CHECK_OK(lin_views(&lc->cfg, in, &x, &w, &b));
        CHECK_OK(cg_linear(x, w, b, &y));
        if (!y) continue;
        /* naive loop over the logical elements */
        int64_t K = cg_tensor_shape(w)[1], N = cg_tensor_shape(w)[0];
        int64_t M = cg_tensor_numel(x) / K;
        double *xv = vals(x), *wv = vals(w), *bv = b ? vals(b) : NULL, *yv = vals(y);
        double *want = (double *)malloc((size_t)(M * N) * sizeof(double));
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
                double acc = bv ? bv[j] : 0.0;
                for (int64_t k = 0; k < K; ++k) acc += xv[i * K + k] * wv[j * K + k];
                want[i * N + j] = acc;
            }
        CHECK(cg_tensor_ndim(y) == cg_tensor_ndim(x));
        CHECK(cg_tensor_shape(y)[cg_tensor_ndim(y) - 1] == N);
        CHECK(max_rel_err(yv, want, M * N) < 1e-14);
        CHECK(strcmp(cg_tensor_grad_fn_name(y), "linear") == 0);
        GRADCHECK(f_linear, (void *)&lc->cfg, nin, in);
        GRADGRADCHECK(f_linear, (void *)&lc->cfg, nin, in);
        /* float32 agrees with the float64 result */
        cg_tensor *in32[3] = {NULL, NULL, NULL}, *x32, *w32, *b32, *y32 = NULL;
        for (int k = 0; k < nin; ++k) CHECK_OK(cg_to_dtype(in[k], CG_FLOAT32, &in32[k]));
        CHECK_OK(lin_views(&lc->cfg, in32, &x32, &w32, &b32));
        CHECK_OK(cg_linear(x32, w32, b32, &y32));
        if (y32) {
            double *y32v = vals(y32);
            CHECK(max_rel_err(y32v, want, M * N) < 1e-5);
            free(y32v);
        }
        cg_tensor_free(y32); cg_tensor_free(x32); cg_tensor_free(w32); cg_tensor_free(b32);
        for (int k = 0; k < nin; ++k) cg_tensor_free(in32[k]);
        free(xv); free(wv); free(bv); free(yv); free(want);
        cg_tensor_free(y); cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(b);
        for (int k = 0; k < nin; ++k) cg_tensor_free(in[k]);
    }
    /* no input features: the bias in every row; its gradient the row sum */
    {
        int64_t xs[2] = {4, 0}, ws[2] = {3, 0}, bs = 3;
        cg_tensor *x = NULL, *w = NULL, *b = cgt_randn64(1, &bs), *y = NULL, *s = NULL;
        CHECK_OK(cg_zeros(CG_FLOAT64, 2, xs, &x));
        CHECK_OK(cg_zeros(CG_FLOAT64, 2, ws, &w));
        CHECK_OK(cg_linear(x, w, b, &y));
        if (y) {
            for (int64_t i = 0; i < 12; ++i) CHECK(cgt_at(y, i) == cgt_at(b, i % 3));
            CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
            CHECK_OK(cg_backward(s, NULL, 0, 0));
            cg_tensor *gb = cg_tensor_grad(b);
            CHECK(gb && cgt_at(gb, 0) == 4.0 && cgt_at(gb, 2) == 4.0);
        }
        cg_tensor_free(s); cg_tensor_free(y);
        CHECK_OK(cg_linear(x, w, NULL, &y));
        CHECK(y && cgt_at(y, 5) == 0.0);
        cg_tensor_free(y); cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(b);
    }
    /* errors: status and message, nothing allocated */
    {
        int64_t xs[2] = {5, 4}, ws[2] = {3, 4}, w1 = 4, bs = 3, b2s = 2;
        cg_tensor *x = cgt_randn64(2, xs), *w = cgt_randn64(2, ws), *y = NULL;
        cg_tensor *wv = cgt_randn64(1, &w1), *b2 = cgt_randn64(1, &b2s), *b = cgt_randn64(1, &bs);
        cg_tensor *x0 = NULL, *w32 = NULL;
        CHECK_STATUS(cg_linear(b, w, NULL, &y), CG_ERR_SHAPE);
        CHECK(strstr(cg_last_error(), "input of shape (3,) has 3 features, weight of shape (3, 4) takes 4") != NULL);
        CHECK_STATUS(cg_linear(x, wv, NULL, &y), CG_ERR_SHAPE);
        CHECK(strstr(cg_last_error(), "weight must be 2-D") != NULL);
        CHECK_STATUS(cg_linear(x, w, b2, &y), CG_ERR_SHAPE);
        CHECK(strstr(cg_last_error(), "bias must have shape (3,)") != NULL);
        CHECK_OK(cg_scalar(CG_FLOAT64, 1.0, &x0));
        CHECK_STATUS(cg_linear(x0, w, NULL, &y), CG_ERR_SHAPE);
        CHECK_OK(cg_to_dtype(w, CG_FLOAT32, &w32));
        CHECK_STATUS(cg_linear(x, w32, b, &y), CG_ERR_DTYPE);
        CHECK(strstr(cg_last_error(), "float64, float32, float64") != NULL);
        CHECK_STATUS(cg_linear(x, NULL, b, &y), CG_ERR_NULL);
        CHECK_STATUS(cg_linear(x, w, b, NULL), CG_ERR_NULL);
        CHECK(y == NULL);
        cg_tensor_free(x); cg_tensor_free(w); cg_tensor_free(wv); cg_tensor_free(b2);
        cg_tensor_free(b); cg_tensor_free(x0); cg_tensor_free(w32);
    }
}

int main(void) {
    cg_manual_seed(1234);
    test_gemm();
    test_gemm_threads();
    test_gemm_hook();
    test_matmul_values();
    test_matmul_grad();
    test_matmul_errors();
    test_conv_values();
    test_conv_grad();
    test_conv_errors();
    test_pool();
    test_dropout();
    test_nll_loss();
    test_linear();
    return cgt_report(__FILE__);
}
