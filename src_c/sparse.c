/* sparse.c -- row-sparse tensors: construction, parts, coalesce, densify,
 * sparse additions used by the engine when it accumulates gradients.
 *
 * A row-sparse tensor is an ordinary cg_tensor header (refcount, dtype,
 * dense shape, grad bookkeeping) with layout CG_SPARSE_ROWS, an empty
 * storage block and zero strides; its data are two owned contiguous parts.
 * Keeping the header lets every generic path (freeing, .grad slots, hooks,
 * shape checks) work unchanged, while CG_CHECK_T makes every op refuse it.
 *
 * On a backend device both parts live on the device and so does the
 * header's (empty) storage, so cg__dev() of the tensor is its parts'
 * device. The checks and sizes stay here; the loops over rows are the
 * backend's sparse_* kernels (docs/backend.md, "Sparse"); a count that
 * decides an output's size comes back to the host as one small result. */
#include <stdio.h>

#include "cg_internal.h"
#include "optim_device.h"

cg_status cg__sparse_refused(const char *fn, const char *arg) {
    return cg__err(CG_ERR_UNSUPPORTED,
                   "%s: argument '%s' is a row-sparse tensor, which this operation does not support "
                   "(convert it with to_dense() / cg_sparse_to_dense first)",
                   fn, arg);
}

cg_layout cg_tensor_layout(const cg_tensor *t) { return t ? t->layout : CG_STRIDED; }
int cg_tensor_is_sparse(const cg_tensor *t) { return t && t->layout == CG_SPARSE_ROWS; }
int64_t cg_sparse_nnz(const cg_tensor *t) {
    return cg_tensor_is_sparse(t) ? t->sp_indices->numel : -1;
}
int cg_sparse_is_coalesced(const cg_tensor *t) { return cg_tensor_is_sparse(t) && t->sp_coalesced; }

static int sorted_unique(const int64_t *idx, int64_t n) {
    for (int64_t k = 1; k < n; ++k)
        if (idx[k] <= idx[k - 1]) return 0;
    return 1;
}

/* Elements of one row: the product of the trailing dims. */
static int64_t row_size(int ndim, const int64_t *shape) {
    int64_t r = 1;
    for (int d = 1; d < ndim; ++d) r *= shape[d];
    return r;
}

/* The int64 a device kernel computes from t (kernel: (out int64 0-d; t)). */
static cg_status device_count(const char *kernel, cg_tensor *t, int n_i, const int64_t *iparam,
                              int64_t *value) {
    *value = 0;
    return cg__kernel_result(cg__dev(t), kernel, 0, 1, &t, 0, NULL, n_i, iparam, CG_INT64, 0, NULL, value);
}

static cg_status need_sparse(const char *fn, const cg_tensor *t) {
    if (t->layout != CG_SPARSE_ROWS)
        return cg__err(CG_ERR_VALUE, "%s: expected a row-sparse tensor, got a strided (dense) one", fn);
    return CG_OK;
}

cg_status cg__sparse_make(cg_tensor *indices, cg_tensor *values, int64_t num_rows, int coalesced,
                          cg_tensor **out) {
    int64_t zero = 0, R = row_size(values->ndim, values->shape);
    if (num_rows > 0 && R > 0 && num_rows > (INT64_MAX / 16) / R)
        return cg__err(CG_ERR_VALUE, "sparse tensor: %lld rows of %lld elements overflow",
                       (long long)num_rows, (long long)R);
    const int dev = cg__dev(values);
    int64_t sorted = coalesced;
    if (sorted < 0 && dev) CG_TRY(device_count("sparse_is_coalesced", indices, 0, NULL, &sorted));
    else if (sorted < 0) sorted = sorted_unique((const int64_t *)cg__ptr(indices), indices->numel);
    cg_tensor *t;
    CG_TRY(cg__new_on(dev, values->dtype, 1, &zero, 0, &t));
    t->ndim = values->ndim;
    t->shape[0] = num_rows;
    t->strides[0] = 0;
    for (int d = 1; d < values->ndim; ++d) {
        t->shape[d] = values->shape[d];
        t->strides[d] = 0;
    }
    t->numel = num_rows * R;
    t->layout = CG_SPARSE_ROWS;
    cg_tensor_retain(indices);
    cg_tensor_retain(values);
    t->sp_indices = indices;
    t->sp_values = values;
    t->sp_coalesced = (int)sorted;
    *out = t;
    return CG_OK;
}

cg_status cg_sparse_rows(cg_tensor *indices, cg_tensor *values, int64_t num_rows, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(indices);
    CG_CHECK_TA(values); /* only copied here */
    char b[CG_SHAPE_STR_LEN];
    if (indices->dtype != CG_INT64 || indices->ndim != 1)
        return cg__err(CG_ERR_VALUE, "cg_sparse_rows: indices must be int64 of shape (nnz,), got %s of shape %s",
                       cg_dtype_name(indices->dtype), cg__shape_str(indices->ndim, indices->shape, b, sizeof b));
    if (!cg__is_float(values->dtype)) /* float16: storage on the host, as dense float16 */
        return cg__err(CG_ERR_DTYPE, "cg_sparse_rows: values must be float16, float32 or float64, got %s",
                       cg_dtype_name(values->dtype));
    if (values->ndim < 1 || values->shape[0] != indices->shape[0])
        return cg__err(CG_ERR_SHAPE, "cg_sparse_rows: values of shape %s do not match %lld indices",
                       cg__shape_str(values->ndim, values->shape, b, sizeof b), (long long)indices->shape[0]);
    if (num_rows < 0)
        return cg__err(CG_ERR_VALUE, "cg_sparse_rows: num_rows must be >= 0, got %lld", (long long)num_rows);
    if (values->requires_grad)
        return cg__err(CG_ERR_UNSUPPORTED, "cg_sparse_rows: values require grad, but sparse tensors carry no "
                                           "autograd history (pass values.detach())");
    cg_tensor *iv[2] = {indices, values};
    CG_TRY(cg__same_device("cg_sparse_rows", 2, iv, NULL));
    cg_tensor *ic = NULL, *vc = NULL, *hc = NULL;
    cg_status st = cg__contig(indices, &ic);
    if (!st) st = cg__contig(values, &vc);
    /* A device's indices are checked on a host copy (one transfer, as the
     * dense indexing ops check theirs), which also tells if they are sorted. */
    if (!st && cg__dev(ic)) {
        st = cg__new(CG_INT64, 1, ic->shape, 0, &hc);
        if (!st) st = cg__copy_elems(hc, ic);
    }
    if (!st) {
        const int64_t *ip = (const int64_t *)cg__ptr(hc ? hc : ic);
        for (int64_t k = 0; k < ic->numel; ++k)
            if (ip[k] < 0 || ip[k] >= num_rows) {
                st = cg__err(CG_ERR_INDEX, "cg_sparse_rows: index %lld (entry %lld) is out of range for %lld rows",
                             (long long)ip[k], (long long)k, (long long)num_rows);
                break;
            }
        if (!st) st = cg__sparse_make(ic, vc, num_rows, sorted_unique(ip, ic->numel), out);
    }
    cg_tensor_free(hc);
    cg_tensor_free(ic);
    cg_tensor_free(vc);
    return st;
}

cg_status cg_sparse_indices(cg_tensor *t, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TSD(t);
    CG_TRY(need_sparse("cg_sparse_indices", t));
    cg_tensor_retain(t->sp_indices);
    *out = t->sp_indices;
    return CG_OK;
}

cg_status cg_sparse_values(cg_tensor *t, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TSD(t);
    CG_TRY(need_sparse("cg_sparse_values", t));
    cg_tensor_retain(t->sp_values);
    *out = t->sp_values;
    return CG_OK;
}

/* ---------------------------------------------------------------- coalesce */
typedef struct keyed {
    int64_t key, pos;
} keyed;

static int by_key_pos(const void *a, const void *b) {
    const keyed *x = (const keyed *)a, *y = (const keyed *)b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

#define ROW_SUM(NAME, T)                                                                    \
    static void NAME(T *restrict dst, const T *restrict src, int64_t n) {                  \
        for (int64_t j = 0; j < n; ++j) dst[j] += src[j];                                  \
    }
ROW_SUM(row_add_f32, float)
ROW_SUM(row_add_f64, double)

static void row_add(cg_dtype dt, void *dst, const void *src, int64_t n) {
    if (dt == CG_FLOAT32) row_add_f32((float *)dst, (const float *)src, n);
    else row_add_f64((double *)dst, (const double *)src, n);
}

/* coalesce_parts on a device: the unique count sizes the parts, which the
 * "sparse_coalesce" kernel fills (the same sums, in the same order). */
static cg_status coalesce_parts_device(cg_tensor *t, cg_tensor **idx_out, cg_tensor **val_out) {
    cg_tensor *iv = t->sp_indices, *vv = t->sp_values;
    const int dev = cg__dev(vv);
    int64_t u;
    CG_TRY(device_count("sparse_nunique", iv, 0, NULL, &u));
    int64_t vshape[CG_MAX_DIMS];
    memcpy(vshape, vv->shape, sizeof vshape);
    vshape[0] = u;
    cg_tensor *ni = NULL, *nv = NULL;
    cg_status st = cg__new_on(dev, CG_INT64, 1, &u, 0, &ni);
    if (!st) st = cg__new_on(dev, vv->dtype, vv->ndim, vshape, 0, &nv);
    if (!st && u) {
        cg_tensor *ts[4] = {ni, nv, iv, vv};
        st = cg__kernel(dev, "sparse_coalesce", 2, 4, ts, 0, NULL, 0, NULL);
    }
    if (st) {
        cg_tensor_free(ni);
        cg_tensor_free(nv);
        return st;
    }
    *idx_out = ni;
    *val_out = nv;
    return CG_OK;
}

/* Sorted unique indices and their summed rows; duplicates are summed in the
 * order they appear (a stable sort), so the sums equal index_add's. */
static cg_status coalesce_parts(cg_tensor *t, cg_tensor **idx_out, cg_tensor **val_out) {
    if (cg__dev(t)) return coalesce_parts_device(t, idx_out, val_out);
    if (t->dtype == CG_FLOAT16) return cg__half_refused("cg_sparse_coalesce", "t");
    const cg_tensor *iv = t->sp_indices, *vv = t->sp_values;
    int64_t nnz = iv->numel, R = row_size(vv->ndim, vv->shape);
    size_t esz = cg_dtype_size(vv->dtype);
    const int64_t *ip = (const int64_t *)cg__ptr(iv);
    keyed *order = (keyed *)malloc((size_t)(nnz ? nnz : 1) * sizeof *order);
    if (!order) return cg__err(CG_ERR_NOMEM, "coalesce: out of memory for %lld entries", (long long)nnz);
    for (int64_t k = 0; k < nnz; ++k) {
        order[k].key = ip[k];
        order[k].pos = k;
    }
    if (nnz > 1) qsort(order, (size_t)nnz, sizeof *order, by_key_pos);
    int64_t u = 0;
    for (int64_t k = 0; k < nnz; ++k) u += (k == 0 || order[k].key != order[k - 1].key);
    int64_t vshape[CG_MAX_DIMS];
    memcpy(vshape, vv->shape, sizeof vshape);
    vshape[0] = u;
    cg_tensor *ni = NULL, *nv = NULL;
    cg_status st = cg__new(CG_INT64, 1, &u, 0, &ni);
    if (!st) st = cg__new(vv->dtype, vv->ndim, vshape, 0, &nv);
    if (!st) {
        int64_t *op = (int64_t *)cg__ptr(ni);
        char *dst = (char *)cg__ptr(nv);
        const char *src = (const char *)cg__ptr(vv);
        int64_t w = -1;
        size_t rb = (size_t)R * esz;
        for (int64_t k = 0; k < nnz; ++k) {
            const char *row = src + (size_t)order[k].pos * rb;
            if (k == 0 || order[k].key != order[k - 1].key) {
                op[++w] = order[k].key;
                if (rb) memcpy(dst + (size_t)w * rb, row, rb);
            } else {
                row_add(vv->dtype, dst + (size_t)w * rb, row, R);
            }
        }
    }
    free(order);
    if (st) {
        cg_tensor_free(ni);
        cg_tensor_free(nv);
        return st;
    }
    *idx_out = ni;
    *val_out = nv;
    return CG_OK;
}

cg_status cg__sparse_coalesced(cg_tensor *t, cg_tensor **out) {
    if (t->sp_coalesced) {
        cg_tensor_retain(t);
        *out = t;
        return CG_OK;
    }
    cg_tensor *ni, *nv;
    CG_TRY(coalesce_parts(t, &ni, &nv));
    cg_status st = cg__sparse_make(ni, nv, t->shape[0], 1, out);
    cg_tensor_free(ni);
    cg_tensor_free(nv);
    return st;
}

cg_status cg__sparse_coalesce_inplace(cg_tensor *t) {
    if (t->sp_coalesced) return CG_OK;
    cg_tensor *ni, *nv;
    CG_TRY(coalesce_parts(t, &ni, &nv));
    cg_tensor_free(t->sp_indices);
    cg_tensor_free(t->sp_values);
    t->sp_indices = ni;
    t->sp_values = nv;
    t->sp_coalesced = 1;
    return CG_OK;
}

cg_status cg_sparse_coalesce(cg_tensor *t, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TSD(t);
    CG_TRY(need_sparse("cg_sparse_coalesce", t));
    return cg__sparse_coalesced(t, out);
}

/* ------------------------------------------------------------------ dense */
cg_status cg__sparse_add_into(cg_tensor *dense, const cg_tensor *sp) {
    const cg_tensor *iv = sp->sp_indices, *vv = sp->sp_values;
    int64_t nnz = iv->numel, R = row_size(vv->ndim, vv->shape);
    if (cg__dev(dense) != cg__dev(sp))
        return cg__err(CG_ERR_VALUE, "sparse add: the dense tensor is on '%s' but the row-sparse one on '%s'",
                       cg__device_label(cg__dev(dense)), cg__device_label(cg__dev(sp)));
    if (cg__dev(dense)) {
        if (!nnz || !R) return CG_OK;
        cg_tensor *ts[3] = {dense, sp->sp_indices, sp->sp_values};
        CG_TRY(cg__kernel(cg__dev(dense), "sparse_add_into_", 1, 3, ts, 0, NULL, 0, NULL));
        ++dense->storage->version;
        return CG_OK;
    }
    if (vv->dtype == CG_FLOAT16) return cg__half_refused("sparse add (to_dense, dense + sparse)", "values");
    size_t rb = (size_t)R * cg_dtype_size(vv->dtype);
    const int64_t *ip = (const int64_t *)cg__ptr(iv);
    char *d = (char *)cg__ptr(dense);
    const char *s = (const char *)cg__ptr(vv);
    for (int64_t k = 0; k < nnz; ++k) row_add(vv->dtype, d + (size_t)ip[k] * rb, s + (size_t)k * rb, R);
    if (nnz) ++dense->storage->version;
    return CG_OK;
}

cg_status cg_sparse_to_dense(cg_tensor *t, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TSD(t);
    if (t->layout == CG_STRIDED) {
        cg_tensor_retain(t);
        *out = t;
        return CG_OK;
    }
    cg_tensor *r;
    CG_TRY(cg__new_on(cg__dev(t), t->dtype, t->ndim, t->shape, 1, &r));
    cg_status st = cg__sparse_add_into(r, t);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    r->storage->version = 0;
    *out = r;
    return CG_OK;
}

/* On a device the parts are joined by the cat kernel (no autograd: the
 * parts never require grad). */
static cg_status concat_device(cg_tensor *a, cg_tensor *b, cg_tensor **out) {
    cg_tensor *is[2] = {a->sp_indices, b->sp_indices}, *vs[2] = {a->sp_values, b->sp_values};
    cg_tensor *ni = NULL, *nv = NULL;
    cg_status st = cg_cat(2, is, 0, &ni);
    if (!st) st = cg_cat(2, vs, 0, &nv);
    if (!st) st = cg__sparse_make(ni, nv, a->shape[0], -1, out);
    cg_tensor_free(ni);
    cg_tensor_free(nv);
    return st;
}

static cg_status concat(cg_tensor *a, cg_tensor *b, cg_tensor **out) {
    if (cg__dev(a)) return concat_device(a, b, out);
    const cg_tensor *ia = a->sp_indices, *ib = b->sp_indices, *va = a->sp_values, *vb = b->sp_values;
    int64_t na = ia->numel, nb = ib->numel, n = na + nb;
    int64_t vshape[CG_MAX_DIMS];
    memcpy(vshape, va->shape, sizeof vshape);
    vshape[0] = n;
    size_t rb = (size_t)row_size(va->ndim, va->shape) * cg_dtype_size(va->dtype);
    cg_tensor *ni = NULL, *nv = NULL;
    cg_status st = cg__new(CG_INT64, 1, &n, 0, &ni);
    if (!st) st = cg__new(va->dtype, va->ndim, vshape, 0, &nv);
    if (!st) {
        int64_t *ip = (int64_t *)cg__ptr(ni);
        memcpy(ip, cg__ptr(ia), (size_t)na * sizeof *ip);
        memcpy(ip + na, cg__ptr(ib), (size_t)nb * sizeof *ip);
        char *vp = (char *)cg__ptr(nv);
        if (rb) {
            memcpy(vp, cg__ptr(va), (size_t)na * rb);
            memcpy(vp + (size_t)na * rb, cg__ptr(vb), (size_t)nb * rb);
        }
        st = cg__sparse_make(ni, nv, a->shape[0], -1, out);
    }
    cg_tensor_free(ni);
    cg_tensor_free(nv);
    return st;
}

cg_status cg_sparse_add(cg_tensor *a, cg_tensor *b, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TSD(a);
    CG_CHECK_TSD(b);
    if (a->layout == CG_STRIDED && b->layout == CG_STRIDED) return cg_add(a, b, out);
    for (int k = 0; k < 2; ++k) { /* the dense side computes here: host float16 is storage only */
        const cg_tensor *t = k ? b : a;
        if (!t->layout && t->dtype == CG_FLOAT16 && !cg__dev(t)) return cg__half_refused(__func__, k ? "b" : "a");
    }
    cg_tensor *ab[2] = {a, b};
    CG_TRY(cg__same_device("cg_sparse_add", 2, ab, NULL));
    if (!cg__same_shape(a, b) || a->dtype != b->dtype) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        return cg__err(CG_ERR_SHAPE, "cg_sparse_add: a (%s %s) and b (%s %s) must have the same shape and dtype",
                       cg__shape_str(a->ndim, a->shape, b1, sizeof b1), cg_dtype_name(a->dtype),
                       cg__shape_str(b->ndim, b->shape, b2, sizeof b2), cg_dtype_name(b->dtype));
    }
    if (a->layout && b->layout) return concat(a, b, out);
    cg_tensor *dense = a->layout ? b : a, *sp = a->layout ? a : b;
    if (dense->requires_grad && cg__grad_mode())
        return cg__err(CG_ERR_UNSUPPORTED, "cg_sparse_add: adding a row-sparse tensor to a dense one that "
                                           "requires grad is not differentiable");
    cg_tensor *r;
    CG_TRY(cg__new_on(cg__dev(dense), dense->dtype, dense->ndim, dense->shape, 0, &r));
    cg_status st = cg__copy_elems(r, dense);
    if (!st) st = cg__sparse_add_into(r, sp);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    r->storage->version = 0;
    *out = r;
    return CG_OK;
}

cg_status cg__sparse_accumulate(cg_tensor **acc, cg_tensor *g) {
    if (!*acc) {
        *acc = g;
        return CG_OK;
    }
    cg_tensor *sum;
    cg_status st = cg_sparse_add(*acc, g, &sum);
    cg_tensor_free(g);
    if (st) return st;
    cg_tensor_free(*acc);
    *acc = sum;
    return CG_OK;
}

cg_status cg_sparse_zero_(cg_tensor *t) {
    CG_CHECK_TSD(t);
    CG_TRY(need_sparse("cg_sparse_zero_", t));
    int64_t zero = 0, vshape[CG_MAX_DIMS];
    memcpy(vshape, t->sp_values->shape, sizeof vshape);
    vshape[0] = 0;
    cg_tensor *ni = NULL, *nv = NULL;
    cg_status st = cg__new_on(cg__dev(t), CG_INT64, 1, &zero, 0, &ni);
    if (!st) st = cg__new_on(cg__dev(t), t->dtype, t->sp_values->ndim, vshape, 0, &nv);
    if (st) {
        cg_tensor_free(ni);
        return st;
    }
    cg_tensor_free(t->sp_indices);
    cg_tensor_free(t->sp_values);
    t->sp_indices = ni;
    t->sp_values = nv;
    t->sp_coalesced = 1;
    ++t->storage->version;
    return CG_OK;
}
