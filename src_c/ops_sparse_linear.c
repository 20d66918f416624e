/* ops_sparse_linear.c -- a linear layer with a fixed CSR connectivity:
 * y = x W^T (+ bias), W (out, in) stored as (indptr, indices, values).
 *
 * Three bilinear kernels share the structure, and each one's derivatives
 * are the other two, so the backward is written with differentiable ops and
 * higher derivatives work:
 *   A (x, v) -> (N, out):  y[n,o]  = sum_{k in row o} x[n,col k] v[k]
 *   AT(g, v) -> (N, in):   z[n,i]  = sum_{k: col k = i} g[n,row k] v[k]
 *   S (g, x) -> (nnz,):    s[k]    = sum_n g[n,row k] x[n,col k]
 *   dA = (AT(gy, v), S(gy, x)); dAT = (A(gz, v), S(g, gz)); dS = (A(x, gs), AT(g, gs)).
 * Every kernel walks the nnz connections once per sample: O(N * nnz).
 * On a backend device the three kernels are csr_a / csr_at / csr_s
 * (docs/backend.md, "Sparse"); the CSR structure is validated on a host
 * copy of indptr / indices, as the indexing ops check device indices. */
/* Vectorisation options for the AXPY loops: see the note in ops_binary.c. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif
#include "cg_internal.h"

enum { K_A = 0, K_AT = 1, K_S = 2 };

static cg_status csr_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static const cg_op OP_CSR[3] = {{"sparse_linear", csr_backward},
                                {"sparse_linear_t", csr_backward},
                                {"sparse_linear_sddmm", csr_backward}};
static const char *const CSR_KERNEL[3] = {"csr_a", "csr_at", "csr_s"};

/* The kernels work on transposed (feature-major) operands, xT (in, N),
 * gT (out, N): every connection is then one contiguous AXPY or dot of
 * length N (the batch), which vectorises, instead of N strided gathers. The
 * sums over k run in CSR order and the sums over n in batch order, as a
 * straightforward loop would. */
#define CSR_KERNELS(SUF, T)                                                                 \
    static void transpose_##SUF(int64_t rows, int64_t cols, const T *restrict src,          \
                                T *restrict dst) {                                          \
        for (int64_t i0 = 0; i0 < rows; i0 += 32)                                           \
            for (int64_t j0 = 0; j0 < cols; j0 += 32) {                                     \
                const int64_t i1 = i0 + 32 < rows ? i0 + 32 : rows;                         \
                const int64_t j1 = j0 + 32 < cols ? j0 + 32 : cols;                         \
                for (int64_t i = i0; i < i1; ++i)                                           \
                    for (int64_t j = j0; j < j1; ++j) dst[j * rows + i] = src[i * cols + j]; \
            }                                                                               \
    }                                                                                       \
    static void axpy_##SUF(int64_t n, T a, const T *restrict x, T *restrict y) {            \
        for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];                                  \
    }                                                                                       \
    /* Eight interleaved partial sums (a fixed order) so the loop vectorises. */           \
    static T dot_##SUF(int64_t n, const T *restrict x, const T *restrict y) {               \
        T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                \
        int64_t i = 0;                                                                      \
        for (; i + 8 <= n; i += 8)                                                          \
            for (int l = 0; l < 8; ++l) acc[l] += x[i + l] * y[i + l];                      \
        T s = 0;                                                                            \
        for (; i < n; ++i) s += x[i] * y[i];                                                \
        for (int l = 0; l < 8; ++l) s += acc[l];                                            \
        return s;                                                                           \
    }                                                                                       \
    /* yT[o] = sum_k v[k] xT[col k] */                                                      \
    static void csr_a_##SUF(int64_t N, int64_t outf, const int64_t *ip, const int64_t *col, \
                            const T *xT, const T *v, T *yT) {                               \
        for (int64_t o = 0; o < outf; ++o)                                                  \
            for (int64_t k = ip[o]; k < ip[o + 1]; ++k)                                     \
                axpy_##SUF(N, v[k], xT + col[k] * N, yT + o * N);                           \
    }                                                                                       \
    /* zT[col k] += v[k] gT[o] */                                                           \
    static void csr_at_##SUF(int64_t N, int64_t outf, const int64_t *ip, const int64_t *col, \
                             const T *gT, const T *v, T *zT) {                              \
        for (int64_t o = 0; o < outf; ++o)                                                  \
            for (int64_t k = ip[o]; k < ip[o + 1]; ++k)                                     \
                axpy_##SUF(N, v[k], gT + o * N, zT + col[k] * N);                           \
    }                                                                                       \
    /* s[k] = gT[o] . xT[col k] */                                                          \
    static void csr_s_##SUF(int64_t N, int64_t outf, const int64_t *ip, const int64_t *col, \
                            const T *gT, const T *xT, T *s) {                               \
        for (int64_t o = 0; o < outf; ++o)                                                  \
            for (int64_t k = ip[o]; k < ip[o + 1]; ++k)                                     \
                s[k] = dot_##SUF(N, gT + o * N, xT + col[k] * N);                           \
    }
CSR_KERNELS(f32, float)
CSR_KERNELS(f64, double)

/* out = kernel(a, b) on contiguous operands (see csr_apply for shapes). */
#define CSR_RUN(SUF, T)                                                                     \
    static cg_status csr_run_##SUF(int kind, int64_t N, int64_t in, int64_t outf,           \
                                   const int64_t *ip, const int64_t *col, const T *a,       \
                                   const T *b, T *out) {                                    \
        const int64_t wa = kind == K_A ? in : outf; /* a: (N, wa) */                        \
        const int64_t wo = kind == K_A ? outf : in; /* A/AT result: (N, wo) */              \
        const int64_t nb = kind == K_S ? N * in : 0;                                        \
        T *aT = (T *)malloc(sizeof(T) * (size_t)(N * wa + nb + (kind == K_S ? 0 : N * wo) + 1)); \
        if (!aT) return cg__err(CG_ERR_NOMEM, "sparse_linear: out of memory");               \
        transpose_##SUF(N, wa, a, aT);                                                      \
        if (kind == K_S) {                                                                  \
            T *bT = aT + N * wa;                                                            \
            transpose_##SUF(N, in, b, bT);                                                  \
            csr_s_##SUF(N, outf, ip, col, aT, bT, out);                                     \
        } else {                                                                            \
            T *rT = aT + N * wa;                                                            \
            memset(rT, 0, sizeof(T) * (size_t)(N * wo));                                    \
            if (kind == K_A) csr_a_##SUF(N, outf, ip, col, aT, b, rT);                      \
            else csr_at_##SUF(N, outf, ip, col, aT, b, rT);                                 \
            transpose_##SUF(wo, N, rT, out);                                                \
        }                                                                                   \
        free(aT);                                                                           \
        return CG_OK;                                                                       \
    }
CSR_RUN(f32, float)
CSR_RUN(f64, double)

/* Runs kernel `kind` on (a, b) and records it when either requires grad.
 * indptr / indices: validated contiguous int64; in, outf: the layer sizes. */
static cg_status csr_apply(int kind, cg_tensor *a, cg_tensor *b, cg_tensor *indptr,
                           cg_tensor *indices, int64_t in, int64_t outf, cg_tensor **out) {
    *out = NULL;
    const int64_t N = a->shape[0];
    const int64_t nnz = indices->numel;
    int64_t shape[2];
    int nd = 2;
    if (kind == K_A) shape[0] = N, shape[1] = outf;
    else if (kind == K_AT) shape[0] = N, shape[1] = in;
    else shape[0] = nnz, nd = 1;
    cg_tensor *ac = NULL, *bc = NULL, *r = NULL;
    const int dev = cg__dev(a);
    cg_status st = cg__contig(a, &ac);
    if (!st) st = cg__contig(b, &bc);
    if (!st) st = cg__new_on(dev, a->dtype, nd, shape, 1, &r);
    if (!st && N > 0 && nnz > 0 && dev) {
        cg_tensor *ts[5] = {r, ac, bc, indptr, indices};
        st = cg__kernel(dev, CSR_KERNEL[kind], 1, 5, ts, 0, NULL, 0, NULL);
    } else if (!st && N > 0 && nnz > 0) {
        const int64_t *ip = (const int64_t *)cg__ptr(indptr), *col = (const int64_t *)cg__ptr(indices);
        if (a->dtype == CG_FLOAT32)
            st = csr_run_f32(kind, N, in, outf, ip, col, (const float *)cg__ptr(ac),
                             (const float *)cg__ptr(bc), (float *)cg__ptr(r));
        else
            st = csr_run_f64(kind, N, in, outf, ip, col, (const double *)cg__ptr(ac),
                             (const double *)cg__ptr(bc), (double *)cg__ptr(r));
    }
    cg_tensor_free(ac);
    cg_tensor_free(bc);
    if (!st && cg__wants_grad2(a, b)) {
        cg_tensor *ins[2] = {a, b};
        cg_node *node;
        st = cg__record(&OP_CSR[kind], 2, ins, 1, &r, &node);
        if (!st) st = cg__save(node, a);
        if (!st) st = cg__save(node, b);
        if (!st) st = cg__save(node, indptr);
        if (!st) st = cg__save(node, indices);
        if (!st) {
            node->iparam[0] = kind;
            node->iparam[1] = in;
            node->iparam[2] = outf;
            node->n_iparam = 3;
        }
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

static cg_status csr_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    const int kind = (int)node->iparam[0];
    const int64_t in = node->iparam[1], outf = node->iparam[2];
    cg_tensor *a = NULL, *b = NULL, *ip = NULL, *col = NULL;
    cg_status st = cg__saved(node, 0, &a);
    if (!st) st = cg__saved(node, 1, &b);
    if (!st) st = cg__saved(node, 2, &ip);
    if (!st) st = cg__saved(node, 3, &col);
    cg_tensor *g = gout[0];
    if (!st && kind == K_A) { /* a = x, b = v */
        if (node->needs_grad[0]) st = csr_apply(K_AT, g, b, ip, col, in, outf, &gin[0]);
        if (!st && node->needs_grad[1]) st = csr_apply(K_S, g, a, ip, col, in, outf, &gin[1]);
    } else if (!st && kind == K_AT) { /* a = g_y, b = v */
        if (node->needs_grad[0]) st = csr_apply(K_A, g, b, ip, col, in, outf, &gin[0]);
        if (!st && node->needs_grad[1]) st = csr_apply(K_S, a, g, ip, col, in, outf, &gin[1]);
    } else if (!st) { /* K_S: a = g_y, b = x */
        if (node->needs_grad[0]) st = csr_apply(K_A, b, g, ip, col, in, outf, &gin[0]);
        if (!st && node->needs_grad[1]) st = csr_apply(K_AT, a, g, ip, col, in, outf, &gin[1]);
    }
    cg_tensor_free(a);
    cg_tensor_free(b);
    cg_tensor_free(ip);
    cg_tensor_free(col);
    return st;
}

static cg_status check_structure(cg_tensor *x, cg_tensor *indptr, cg_tensor *indices,
                                 cg_tensor *values, cg_tensor *bias, int64_t outf) {
    static const char *fn = "cg_sparse_linear";
    char b[CG_SHAPE_STR_LEN];
    if (!cg__is_float(x->dtype) || x->ndim != 2)
        return cg__err(CG_ERR_VALUE, "%s: x must be a 2-D float tensor (N, in_features), got %s of shape %s",
                       fn, cg_dtype_name(x->dtype), cg__shape_str(x->ndim, x->shape, b, sizeof b));
    if (outf < 0) return cg__err(CG_ERR_VALUE, "%s: out_features must be >= 0, got %lld", fn, (long long)outf);
    if (indptr->dtype != CG_INT64 || indptr->ndim != 1 || indptr->shape[0] != outf + 1)
        return cg__err(CG_ERR_VALUE, "%s: indptr must be int64 of shape (%lld,) (out_features + 1), got %s of shape %s",
                       fn, (long long)(outf + 1), cg_dtype_name(indptr->dtype),
                       cg__shape_str(indptr->ndim, indptr->shape, b, sizeof b));
    if (indices->dtype != CG_INT64 || indices->ndim != 1)
        return cg__err(CG_ERR_VALUE, "%s: indices must be int64 of shape (nnz,), got %s of shape %s", fn,
                       cg_dtype_name(indices->dtype), cg__shape_str(indices->ndim, indices->shape, b, sizeof b));
    const int64_t nnz = indices->shape[0];
    if (values->dtype != x->dtype || values->ndim != 1 || values->shape[0] != nnz)
        return cg__err(CG_ERR_VALUE, "%s: values must be %s of shape (%lld,), got %s of shape %s", fn,
                       cg_dtype_name(x->dtype), (long long)nnz, cg_dtype_name(values->dtype),
                       cg__shape_str(values->ndim, values->shape, b, sizeof b));
    if (bias && (bias->dtype != x->dtype || bias->ndim != 1 || bias->shape[0] != outf))
        return cg__err(CG_ERR_VALUE, "%s: bias must be %s of shape (%lld,), got %s of shape %s", fn,
                       cg_dtype_name(x->dtype), (long long)outf, cg_dtype_name(bias->dtype),
                       cg__shape_str(bias->ndim, bias->shape, b, sizeof b));
    return CG_OK;
}

static cg_status check_csr(cg_tensor *ip_t, cg_tensor *col_t, int64_t in, int64_t outf) {
    static const char *fn = "cg_sparse_linear";
    const int64_t *ip = (const int64_t *)cg__ptr(ip_t), *col = (const int64_t *)cg__ptr(col_t);
    const int64_t nnz = col_t->numel;
    if (ip[0] != 0 || ip[outf] != nnz)
        return cg__err(CG_ERR_VALUE, "%s: indptr must start at 0 and end at nnz=%lld, got %lld and %lld", fn,
                       (long long)nnz, (long long)ip[0], (long long)ip[outf]);
    for (int64_t o = 0; o < outf; ++o)
        if (ip[o + 1] < ip[o])
            return cg__err(CG_ERR_VALUE, "%s: indptr must be non-decreasing, but indptr[%lld]=%lld > indptr[%lld]=%lld",
                           fn, (long long)o, (long long)ip[o], (long long)(o + 1), (long long)ip[o + 1]);
    for (int64_t k = 0; k < nnz; ++k)
        if (col[k] < 0 || col[k] >= in)
            return cg__err(CG_ERR_INDEX, "%s: column index %lld (connection %lld) is out of range for %lld input features",
                           fn, (long long)col[k], (long long)k, (long long)in);
    return CG_OK;
}

/* check_csr on host copies of a device's indptr / indices. */
static cg_status check_csr_device(cg_tensor *ip_t, cg_tensor *col_t, int64_t in, int64_t outf) {
    cg_tensor *hi = NULL, *hc = NULL;
    cg_status st = cg__new(CG_INT64, 1, ip_t->shape, 0, &hi);
    if (!st) st = cg__copy_elems(hi, ip_t);
    if (!st) st = cg__new(CG_INT64, 1, col_t->shape, 0, &hc);
    if (!st) st = cg__copy_elems(hc, col_t);
    if (!st) st = check_csr(hi, hc, in, outf);
    cg_tensor_free(hi);
    cg_tensor_free(hc);
    return st;
}

cg_status cg_sparse_linear(cg_tensor *x, cg_tensor *indptr, cg_tensor *indices, cg_tensor *values,
                           cg_tensor *bias, int64_t out_features, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(x);
    CG_CHECK_TD(indptr);
    CG_CHECK_TD(indices);
    CG_CHECK_TD(values);
    if (bias) CG_CHECK_TD(bias);
    CG_TRY(check_structure(x, indptr, indices, values, bias, out_features));
    if (indptr->requires_grad || indices->requires_grad)
        return cg__err(CG_ERR_VALUE, "cg_sparse_linear: indptr/indices cannot require grad");
    cg_tensor *all[5] = {x, indptr, indices, values, bias};
    int dev;
    CG_TRY(cg__same_device("cg_sparse_linear", 5, all, &dev)); /* all >= 1-D: no host scalar joins */
    cg_tensor *ip = NULL, *col = NULL, *y = NULL;
    cg_status st = cg__contig(indptr, &ip);
    if (!st) st = cg__contig(indices, &col);
    if (!st && dev) st = check_csr_device(ip, col, x->shape[1], out_features);
    else if (!st) st = check_csr(ip, col, x->shape[1], out_features);
    if (!st) st = csr_apply(K_A, x, values, ip, col, x->shape[1], out_features, &y);
    if (!st && bias) {
        cg_tensor *yb = NULL;
        st = cg_add(y, bias, &yb);
        cg_tensor_free(y);
        y = yb;
    }
    cg_tensor_free(ip);
    cg_tensor_free(col);
    if (st) {
        cg_tensor_free(y);
        return st;
    }
    *out = y;
    return CG_OK;
}
