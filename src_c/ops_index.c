/* ops_index.c -- integer indexing: index_select / index_add, gather /
 * scatter_add, nonzero_flat and embedding.
 *
 * Each pair is the other's adjoint: the gradient of a selection is an
 * add-into-zeros (so repeated indices accumulate), and the gradient of an
 * add with respect to its source is a selection.
 *
 * On a device the checks stay here: the bounds check needs the index
 * values, so a device index is copied to the host for it (one
 * device-to-host transfer of the index per call, a sync on a GPU, as in
 * PyTorch's checked indexing); the kernels then read the device index. */
/* Vectorisation options for the copy / cast / add loops; see ops_reduce.c. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-math-errno", "no-trapping-math")
#endif
#include "cg_internal.h"
#include "optim_device.h"


/* Validated, non-negative copy of a 1-D int64 index (negative entries wrap
 * when wrap != 0). *idx: (numel,) malloc'd, caller frees; NULL for a device
 * index whose upload showed every value in [0, size) (no copy back). */
static cg_status read_index(const char *fn, cg_tensor *index, int64_t size, int dim, int wrap,
                            int64_t **idx, int64_t *len) {
    *idx = NULL;
    if (index->dtype != CG_INT64)
        return cg__err(CG_ERR_DTYPE, "%s: index must be int64 (got %s)", fn, cg_dtype_name(index->dtype));
    if (index->ndim > 1)
        return cg__err(CG_ERR_SHAPE, "%s: index must be 1-D (got %d dims)", fn, index->ndim);
    int64_t n = index->numel;
    if (cg__dev(index) && cg__int64_known_within(index, size, size)) {
        /* the device callers only check the values (their kernels read the
         * device index), and its upload from the host settles that */
        *len = n;
        return CG_OK;
    }
    int64_t *p = (int64_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (!p) return cg__err(CG_ERR_NOMEM, "%s: out of memory", fn);
    cg_tensor *h = NULL; /* a device index's host copy */
    if (cg__dev(index)) {
        cg_status st = cg__host_contig(index, &h);
        if (st) {
            free(p);
            return st;
        }
    }
    const int64_t *src = (const int64_t *)cg__ptr(h ? h : index);
    int64_t stride = h ? 1 : index->ndim ? index->strides[0] : 0;
    for (int64_t i = 0; i < n; ++i) {
        int64_t v = src[i * stride];
        if (v < -size || v >= size || (!wrap && v < 0)) {
            free(p);
            cg_tensor_free(h);
            return cg__err(CG_ERR_INDEX, "%s: index %lld is out of range for dim %d with size %lld", fn,
                           (long long)v, dim, (long long)size);
        }
        p[i] = v < 0 ? v + size : v;
    }
    cg_tensor_free(h);
    *idx = p;
    *len = n;
    return CG_OK;
}

/* a viewed as (outer, size, inner) around dim. */
static void split_dims(const cg_tensor *a, int dim, int64_t *outer, int64_t *inner) {
    *outer = *inner = 1;
    for (int k = 0; k < a->ndim; ++k) {
        if (k < dim) *outer *= a->shape[k];
        else if (k > dim) *inner *= a->shape[k];
    }
}

/* dst (outer, L, inner) <- src (outer, S, inner) rows idx. Single
 * elements (inner == 1) are copied through their own type. */
#define DEF_PICK(NAME, T)                                                      \
    static void NAME(T *restrict dst, const T *restrict src, const int64_t *idx, int64_t L, \
                     int64_t S, int64_t outer) {                               \
        for (int64_t o = 0; o < outer; ++o)                                    \
            for (int64_t j = 0; j < L; ++j) dst[o * L + j] = src[o * S + idx[j]]; \
    }
DEF_PICK(pick_f32, float)
DEF_PICK(pick_f64, double)
DEF_PICK(pick_i64, int64_t)
DEF_PICK(pick_u8, unsigned char)

static void select_rows(cg_dtype dt, char *dst, const char *src, const int64_t *idx, int64_t L,
                        int64_t S, int64_t outer, int64_t inner) {
    if (inner == 1) {
        switch (dt) {
        case CG_FLOAT32: pick_f32((float *)dst, (const float *)src, idx, L, S, outer); return;
        case CG_FLOAT64: pick_f64((double *)dst, (const double *)src, idx, L, S, outer); return;
        case CG_INT64: pick_i64((int64_t *)dst, (const int64_t *)src, idx, L, S, outer); return;
        default: pick_u8((unsigned char *)dst, (const unsigned char *)src, idx, L, S, outer); return;
        }
    }
    size_t row = (size_t)inner * cg_dtype_size(dt);
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < L; ++j)
            memcpy(dst + (size_t)(o * L + j) * row, src + (size_t)(o * S + idx[j]) * row, row);
}

/* out (outer, S, inner) rows idx += src (outer, L, inner). */
#define DEF_ADD_ROWS(NAME, T)                                                  \
    static void NAME(T *out, const T *src, const int64_t *idx, int64_t L, int64_t S, \
                     int64_t outer, int64_t inner) {                           \
        for (int64_t o = 0; o < outer; ++o)                                    \
            for (int64_t j = 0; j < L; ++j) {                                  \
                T *d = out + (o * S + idx[j]) * inner;                         \
                const T *s = src + (o * L + j) * inner;                        \
                for (int64_t k = 0; k < inner; ++k) d[k] += s[k];              \
            }                                                                  \
    }
DEF_ADD_ROWS(add_rows_f32, float)
DEF_ADD_ROWS(add_rows_f64, double)

/* int64 adds in unsigned arithmetic: wraparound instead of undefined. */
static void add_rows_i64(int64_t *out, const int64_t *src, const int64_t *idx, int64_t L, int64_t S,
                         int64_t outer, int64_t inner) {
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < L; ++j) {
            int64_t *d = out + (o * S + idx[j]) * inner;
            const int64_t *s = src + (o * L + j) * inner;
            for (int64_t k = 0; k < inner; ++k) d[k] = (int64_t)((uint64_t)d[k] + (uint64_t)s[k]);
        }
}

static cg_status check_add_dtype(const char *fn, const cg_tensor *a, const cg_tensor *src) {
    if (a->dtype != src->dtype)
        return cg__err(CG_ERR_DTYPE, "%s: src has dtype %s but the tensor has %s", fn,
                       cg_dtype_name(src->dtype), cg_dtype_name(a->dtype));
    if (!cg__is_float(a->dtype) && a->dtype != CG_INT64)
        return cg__err(CG_ERR_DTYPE, "%s: unsupported dtype %s (expected float32, float64 or int64)", fn,
                       cg_dtype_name(a->dtype));
    return CG_OK;
}

/* Contiguous copy of a (a fresh tensor the op may write to). */
static cg_status fresh_copy(cg_tensor *a, cg_tensor **out) {
    CG_TRY(cg__new(a->dtype, a->ndim, a->shape, 0, out));
    cg_status st = cg__copy_elems(*out, a);
    if (st) {
        cg_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

/* ------------------------------------------------- index_select/index_add */
/* iparam: [0] dim, [1] input ndim, [2..] input shape. saved 0: index. */
static void put_dim_shape(cg_node *node, int dim, const cg_tensor *a) {
    node->iparam[0] = dim;
    node->iparam[1] = a->ndim;
    for (int d = 0; d < a->ndim; ++d) node->iparam[2 + d] = a->shape[d];
    node->n_iparam = 2 + a->ndim;
}

/* Last step of the index ops: when st is OK and grad is wanted, records op
 * over the nin tensors ins with dim d and shp's shape, saving index; then
 * *out = r, or r is freed and the failure returned. */
static cg_status finish_indexed(cg_status st, const cg_op *op, int nin, cg_tensor **ins, int d,
                                const cg_tensor *shp, cg_tensor *index, cg_tensor *r,
                                cg_tensor **out) {
    if (!st && cg__wants_gradn(nin, ins)) {
        cg_node *node;
        st = cg__record(op, nin, ins, 1, &r, &node);
        if (!st) {
            put_dim_shape(node, d, shp);
            st = cg__save(node, index);
        }
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

static int get_dim_shape(const cg_node *node, int64_t *shape) {
    int ndim = (int)node->iparam[1];
    for (int d = 0; d < ndim; ++d) shape[d] = node->iparam[2 + d];
    return ndim;
}

/* Zeros shaped like the recorded input, then ADD(zeros, g). */
static cg_status add_into_zeros(cg_node *node, cg_tensor *g,
                                cg_status (*add)(cg_tensor *, int, cg_tensor *, cg_tensor *, cg_tensor **),
                                cg_tensor **out) {
    int64_t shape[CG_MAX_DIMS];
    int ndim = get_dim_shape(node, shape);
    cg_tensor *index = NULL, *z = NULL;
    cg_status st = cg__saved(node, 0, &index);
    if (!st) st = cg__new_on(cg__dev(g), g->dtype, ndim, shape, 1, &z);
    if (!st) st = add(z, (int)node->iparam[0], index, g, out);
    cg_tensor_free(index);
    cg_tensor_free(z);
    return st;
}

static cg_status index_select_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return add_into_zeros(node, gout[0], cg_index_add, &gin[0]);
}

static cg_status index_add_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    if (node->needs_grad[0]) {
        cg_tensor_retain(gout[0]);
        gin[0] = gout[0];
    }
    if (node->needs_grad[1]) {
        cg_tensor *index;
        CG_TRY(cg__saved(node, 0, &index));
        cg_status st = cg_index_select(gout[0], (int)node->iparam[0], index, &gin[1]);
        cg_tensor_free(index);
        return st;
    }
    return CG_OK;
}

static const cg_op OP_INDEX_SELECT = {"index_select", index_select_backward};
static const cg_op OP_INDEX_ADD = {"index_add", index_add_backward};

cg_status cg_index_select(cg_tensor *a, int dim, cg_tensor *index, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    CG_CHECK_TD(index);
    int dev;
    cg_tensor *ai[2] = {a, index};
    CG_TRY(cg__same_device("cg_index_select", 2, ai, &dev));
    if (a->ndim == 0) return cg__err(CG_ERR_SHAPE, "cg_index_select: cannot index a 0-d tensor");
    int d;
    CG_TRY(cg__norm_dim("cg_index_select", dim, a->ndim, &d));
    int64_t *idx, L;
    CG_TRY(read_index("cg_index_select", index, a->shape[d], d, 1, &idx, &L));
    int64_t shape[CG_MAX_DIMS], outer, inner;
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = L;
    split_dims(a, d, &outer, &inner);
    cg_tensor *c = NULL, *r = NULL;
    cg_status st;
    if (dev) { /* idx was the bounds check; the kernel wraps the device index itself */
        free(idx);
        st = cg__new_on(dev, a->dtype, a->ndim, shape, 0, &r);
        if (!st && r->numel) {
            cg_tensor *ts[3] = {r, a, index};
            int64_t ip[1] = {d};
            st = cg__kernel(dev, "index_select", 1, 3, ts, 0, NULL, 1, ip);
        }
        return finish_indexed(st, &OP_INDEX_SELECT, 1, &a, d, a, index, r, out);
    }
    st = cg__contig(a, &c);
    if (!st) st = cg__new(a->dtype, a->ndim, shape, 0, &r);
    if (!st && r->numel)
        select_rows(a->dtype, (char *)cg__ptr(r), (const char *)cg__ptr(c), idx, L, a->shape[d],
                    outer, inner);
    free(idx);
    cg_tensor_free(c);
    return finish_indexed(st, &OP_INDEX_SELECT, 1, &a, d, a, index, r, out);
}

cg_status cg_index_add(cg_tensor *a, int dim, cg_tensor *index, cg_tensor *src, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    CG_CHECK_TD(index);
    CG_CHECK_TD(src);
    int dev;
    cg_tensor *all[3] = {a, index, src};
    CG_TRY(cg__same_device("cg_index_add", 3, all, &dev));
    if (a->ndim == 0) return cg__err(CG_ERR_SHAPE, "cg_index_add: cannot index a 0-d tensor");
    int d;
    CG_TRY(cg__norm_dim("cg_index_add", dim, a->ndim, &d));
    CG_TRY(check_add_dtype("cg_index_add", a, src));
    int64_t *idx, L;
    CG_TRY(read_index("cg_index_add", index, a->shape[d], d, 1, &idx, &L));
    int ok = src->ndim == a->ndim;
    for (int k = 0; ok && k < a->ndim; ++k)
        if (src->shape[k] != (k == d ? L : a->shape[k])) ok = 0;
    if (!ok) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        free(idx);
        return cg__err(CG_ERR_SHAPE, "cg_index_add: src has shape %s; expected the tensor's shape %s with %lld in dim %d",
                       cg__shape_str(src->ndim, src->shape, b1, sizeof b1),
                       cg__shape_str(a->ndim, a->shape, b2, sizeof b2), (long long)L, d);
    }
    cg_tensor *ins[2] = {a, src};
    if (dev) {
        free(idx);
        cg_tensor *r = NULL;
        cg_status st = cg__new_on(dev, a->dtype, a->ndim, a->shape, 0, &r);
        if (!st && r->numel) {
            cg_tensor *ts[4] = {r, a, index, src};
            int64_t ip[1] = {d};
            st = cg__kernel(dev, "index_add", 1, 4, ts, 0, NULL, 1, ip);
        }
        return finish_indexed(st, &OP_INDEX_ADD, 2, ins, d, a, index, r, out);
    }
    int64_t outer, inner;
    split_dims(a, d, &outer, &inner);
    cg_tensor *r = NULL, *sc = NULL;
    cg_status st = fresh_copy(a, &r);
    if (!st) st = cg__contig(src, &sc);
    if (!st) {
        void *o = cg__ptr(r);
        const void *s = cg__ptr(sc);
        int64_t S = a->shape[d];
        if (a->dtype == CG_FLOAT32) add_rows_f32((float *)o, (const float *)s, idx, L, S, outer, inner);
        else if (a->dtype == CG_FLOAT64) add_rows_f64((double *)o, (const double *)s, idx, L, S, outer, inner);
        else add_rows_i64((int64_t *)o, (const int64_t *)s, idx, L, S, outer, inner);
    }
    free(idx);
    cg_tensor_free(sc);
    return finish_indexed(st, &OP_INDEX_ADD, 2, ins, d, a, index, r, out);
}

/* --------------------------------------------------- gather/scatter_add */
/* Shapes of a 0-d tensor are treated as (1,) so one loop serves all. */
typedef struct gplan {
    int nd;
    int64_t ishape[CG_MAX_DIMS]; /* index shape */
    int64_t tstride[CG_MAX_DIMS]; /* strides of the indexed tensor, 0 at dim */
    int64_t tdim_stride, tdim_size;
    int64_t ostride[CG_MAX_DIMS]; /* strides of the other operand (out or src) */
} gplan;

static cg_status check_gather_shapes(const char *fn, const cg_tensor *t, int d,
                                     const cg_tensor *index, const cg_tensor *other,
                                     const char *other_name) {
    char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
    if (index->dtype != CG_INT64)
        return cg__err(CG_ERR_DTYPE, "%s: index must be int64 (got %s)", fn, cg_dtype_name(index->dtype));
    if (index->ndim != t->ndim)
        return cg__err(CG_ERR_SHAPE, "%s: index has %d dims but the tensor has %d", fn, index->ndim, t->ndim);
    for (int k = 0; k < t->ndim; ++k) {
        if (k != d && index->shape[k] > t->shape[k])
            return cg__err(CG_ERR_SHAPE, "%s: index shape %s exceeds the tensor's shape %s in dim %d", fn,
                           cg__shape_str(index->ndim, index->shape, b1, sizeof b1),
                           cg__shape_str(t->ndim, t->shape, b2, sizeof b2), k);
        if (other && (other->ndim != t->ndim || index->shape[k] > other->shape[k]))
            return cg__err(CG_ERR_SHAPE, "%s: index shape %s exceeds %s shape %s", fn,
                           cg__shape_str(index->ndim, index->shape, b1, sizeof b1), other_name,
                           cg__shape_str(other->ndim, other->shape, b2, sizeof b2));
    }
    if (other && other->ndim != t->ndim)
        return cg__err(CG_ERR_SHAPE, "%s: %s has %d dims but the tensor has %d", fn, other_name,
                       other->ndim, t->ndim);
    return CG_OK;
}

static void make_gplan(const cg_tensor *t, int d, const cg_tensor *index, const int64_t *ostrides,
                       gplan *g) {
    if (t->ndim == 0) {
        g->nd = 1;
        g->ishape[0] = 1;
        g->tstride[0] = 0;
        g->tdim_stride = 0;
        g->tdim_size = 1;
        g->ostride[0] = 0;
        return;
    }
    g->nd = t->ndim;
    for (int k = 0; k < t->ndim; ++k) {
        g->ishape[k] = index->shape[k];
        g->tstride[k] = k == d ? 0 : t->strides[k];
        g->ostride[k] = ostrides[k];
    }
    g->tdim_stride = t->strides[d];
    g->tdim_size = t->shape[d];
}

static inline void gwalk(const gplan *g, int64_t *idx, int64_t *toff, int64_t *ooff) {
    for (int k = g->nd - 1; k >= 0; --k) {
        *toff += g->tstride[k];
        *ooff += g->ostride[k];
        if (++idx[k] < g->ishape[k]) return;
        *toff -= g->tstride[k] * g->ishape[k];
        *ooff -= g->ostride[k] * g->ishape[k];
        idx[k] = 0;
    }
}

static cg_status bad_gather_index(const char *fn, int64_t v, int d, int64_t size) {
    return cg__err(CG_ERR_INDEX, "%s: index %lld is out of bounds for dim %d with size %lld", fn,
                   (long long)v, d, (long long)size);
}

/* The device form of the bounds check the host loops make as they go: the
 * first out-of-range value in row-major order fails (index copied to the
 * host for it), unless the index's upload from the host showed every value
 * in [0, size) (no copy back: no wait for a GPU). */
static cg_status check_index_values(const char *fn, cg_tensor *index, int d, int64_t size) {
    if (cg__int64_known_within(index, size, size)) return CG_OK;
    cg_tensor *h;
    CG_TRY(cg__host_contig(index, &h));
    const int64_t *p = (const int64_t *)cg__ptr(h);
    cg_status st = CG_OK;
    for (int64_t i = 0; i < h->numel; ++i)
        if (p[i] < 0 || p[i] >= size) {
            st = bad_gather_index(fn, p[i], d, size);
            break;
        }
    cg_tensor_free(h);
    return st;
}

/* gather / scatter_add on a device: the checks done, out allocated there
 * and kernel name run on (out, a, index[, src]). */
static cg_status gather_device(const char *fn, const char *kernel, int dev, cg_tensor *a, int d,
                               cg_tensor *index, cg_tensor *src, cg_tensor **out) {
    int64_t size = a->ndim ? a->shape[d] : 1;
    cg_tensor *r = NULL;
    cg_status st = check_index_values(fn, index, d, size);
    if (!st && src) st = cg__new_on(dev, a->dtype, a->ndim, a->shape, 0, &r);
    else if (!st) st = cg__new_on(dev, a->dtype, index->ndim, index->shape, 0, &r);
    if (!st && r->numel) {
        cg_tensor *ts[4] = {r, a, index, src};
        int64_t ip[1] = {d};
        st = cg__kernel(dev, kernel, 1, src ? 4 : 3, ts, 0, NULL, 1, ip);
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

/* out[p] = t[p with dim replaced by index[p]], over every position p of the
 * (contiguous) index; out is contiguous with index's shape. */
#define DEF_GATHER(NAME, T)                                                    \
    static cg_status NAME(const T *t, const int64_t *index, T *out, int64_t n, const gplan *g, int d) { \
        int64_t idx[CG_MAX_DIMS] = {0}, toff = 0, ooff = 0;                    \
        for (int64_t p = 0; p < n; ++p) {                                      \
            int64_t v = index[p];                                              \
            if (v < 0 || v >= g->tdim_size)                                    \
                return bad_gather_index("cg_gather", v, d, g->tdim_size);      \
            out[p] = t[toff + v * g->tdim_stride];                             \
            gwalk(g, idx, &toff, &ooff);                                       \
        }                                                                      \
        return CG_OK;                                                          \
    }
DEF_GATHER(gather_f32, float)
DEF_GATHER(gather_f64, double)
DEF_GATHER(gather_i64, int64_t)
DEF_GATHER(gather_u8, unsigned char)

/* t[p with dim replaced by index[p]] += src[p]; t contiguous fresh copy,
 * src read through its strides (ostride). */
#define DEF_SCATTER_ADD(NAME, T, ADD)                                          \
    static cg_status NAME(T *t, const int64_t *index, const T *src, int64_t n, const gplan *g, int d) { \
        int64_t idx[CG_MAX_DIMS] = {0}, toff = 0, soff = 0;                    \
        for (int64_t p = 0; p < n; ++p) {                                      \
            int64_t v = index[p];                                              \
            if (v < 0 || v >= g->tdim_size)                                    \
                return bad_gather_index("cg_scatter_add", v, d, g->tdim_size); \
            T *q = t + toff + v * g->tdim_stride;                              \
            *q = ADD(*q, src[soff]);                                           \
            gwalk(g, idx, &toff, &soff);                                       \
        }                                                                      \
        return CG_OK;                                                          \
    }
#define PLAIN_ADD(x, y) ((x) + (y))
#define WRAP_ADD(x, y) ((int64_t)((uint64_t)(x) + (uint64_t)(y)))
DEF_SCATTER_ADD(scatter_add_f32, float, PLAIN_ADD)
DEF_SCATTER_ADD(scatter_add_f64, double, PLAIN_ADD)
DEF_SCATTER_ADD(scatter_add_i64, int64_t, WRAP_ADD)

static cg_status gather_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return add_into_zeros(node, gout[0], cg_scatter_add, &gin[0]);
}

/* d src = gather(g) padded with zeros where src is larger than index. */
static cg_status scatter_add_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    if (node->needs_grad[0]) {
        cg_tensor_retain(gout[0]);
        gin[0] = gout[0];
    }
    if (!node->needs_grad[1]) return CG_OK;
    int64_t sshape[CG_MAX_DIMS];
    int ndim = get_dim_shape(node, sshape);
    cg_tensor *index, *gs;
    CG_TRY(cg__saved(node, 0, &index));
    cg_status st = cg_gather(gout[0], (int)node->iparam[0], index, &gs);
    cg_tensor_free(index);
    CG_TRY(st);
    for (int k = 0; k < ndim && !st; ++k) {
        if (gs->shape[k] == sshape[k]) continue;
        int64_t zshape[CG_MAX_DIMS];
        memcpy(zshape, gs->shape, sizeof zshape);
        zshape[k] = sshape[k] - gs->shape[k];
        cg_tensor *z = NULL, *padded = NULL;
        st = cg__new_on(cg__dev(gs), gs->dtype, ndim, zshape, 1, &z);
        if (!st) {
            cg_tensor *parts[2] = {gs, z};
            st = cg_cat(2, parts, k, &padded);
        }
        cg_tensor_free(z);
        cg_tensor_free(gs);
        gs = padded;
    }
    if (st) {
        cg_tensor_free(gs);
        return st;
    }
    gin[1] = gs;
    return CG_OK;
}

static const cg_op OP_GATHER = {"gather", gather_backward};
static const cg_op OP_SCATTER_ADD = {"scatter_add", scatter_add_backward};

cg_status cg_gather(cg_tensor *a, int dim, cg_tensor *index, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    CG_CHECK_TD(index);
    int d, dev;
    cg_tensor *ai[2] = {a, index};
    CG_TRY(cg__same_device("cg_gather", 2, ai, &dev));
    CG_TRY(cg__norm_dim("cg_gather", dim, a->ndim, &d));
    CG_TRY(check_gather_shapes("cg_gather", a, d, index, NULL, NULL));
    cg_tensor *ic = NULL, *r = NULL;
    if (dev) {
        cg_status st = gather_device("cg_gather", "gather", dev, a, d, index, NULL, &r);
        return finish_indexed(st, &OP_GATHER, 1, &a, d, a, index, r, out);
    }
    cg_status st = cg__contig(index, &ic);
    if (!st) st = cg__new(a->dtype, index->ndim, index->shape, 0, &r);
    if (!st && r->numel) {
        gplan g;
        make_gplan(a, d, index, r->strides, &g);
        const int64_t *ip = (const int64_t *)cg__ptr(ic);
        void *o = cg__ptr(r);
        const void *t = cg__ptr(a);
        int64_t n = r->numel;
        switch (a->dtype) {
        case CG_FLOAT32: st = gather_f32((const float *)t, ip, (float *)o, n, &g, d); break;
        case CG_FLOAT64: st = gather_f64((const double *)t, ip, (double *)o, n, &g, d); break;
        case CG_INT64: st = gather_i64((const int64_t *)t, ip, (int64_t *)o, n, &g, d); break;
        default: st = gather_u8((const unsigned char *)t, ip, (unsigned char *)o, n, &g, d); break;
        }
    }
    st = finish_indexed(st, &OP_GATHER, 1, &a, d, a, ic, r, out);
    cg_tensor_free(ic);
    return st;
}

cg_status cg_scatter_add(cg_tensor *a, int dim, cg_tensor *index, cg_tensor *src, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    CG_CHECK_TD(index);
    CG_CHECK_TD(src);
    int d, dev;
    cg_tensor *all[3] = {a, index, src};
    CG_TRY(cg__same_device("cg_scatter_add", 3, all, &dev));
    CG_TRY(cg__norm_dim("cg_scatter_add", dim, a->ndim, &d));
    CG_TRY(check_add_dtype("cg_scatter_add", a, src));
    CG_TRY(check_gather_shapes("cg_scatter_add", a, d, index, src, "src"));
    cg_tensor *ic = NULL, *r = NULL;
    cg_tensor *ins[2] = {a, src};
    if (dev) {
        cg_status st = gather_device("cg_scatter_add", "scatter_add", dev, a, d, index, src, &r);
        return finish_indexed(st, &OP_SCATTER_ADD, 2, ins, d, src, index, r, out);
    }
    cg_status st = cg__contig(index, &ic);
    if (!st) st = fresh_copy(a, &r);
    if (!st && index->numel) {
        gplan g;
        make_gplan(r, d, index, src->strides, &g);
        const int64_t *ip = (const int64_t *)cg__ptr(ic);
        int64_t n = index->numel;
        if (a->dtype == CG_FLOAT32)
            st = scatter_add_f32((float *)cg__ptr(r), ip, (const float *)cg__ptr(src), n, &g, d);
        else if (a->dtype == CG_FLOAT64)
            st = scatter_add_f64((double *)cg__ptr(r), ip, (const double *)cg__ptr(src), n, &g, d);
        else
            st = scatter_add_i64((int64_t *)cg__ptr(r), ip, (const int64_t *)cg__ptr(src), n, &g, d);
    }
    st = finish_indexed(st, &OP_SCATTER_ADD, 2, ins, d, src, ic, r, out);
    cg_tensor_free(ic);
    return st;
}

/* ------------------------------------------------------------- nonzero */
/* The output's length depends on the data: the device counts (one int64
 * comes back to the host to size the output), then writes the positions. */
static cg_status nonzero_device(cg_tensor *mask, cg_tensor **out) {
    int dev = cg__dev(mask);
    cg_tensor *cnt = NULL, *r = NULL;
    int64_t count = 0;
    cg_status st = cg__new_on(dev, CG_INT64, 0, NULL, 0, &cnt);
    if (!st) {
        cg_tensor *ts[2] = {cnt, mask};
        st = cg__kernel(dev, "count_nonzero", 1, 2, ts, 0, NULL, 0, NULL);
    }
    if (!st) st = cg__device_to_host(cnt, &count);
    cg_tensor_free(cnt);
    if (!st) st = cg__new_on(dev, CG_INT64, 1, &count, 0, &r);
    if (!st && count) {
        cg_tensor *ts[2] = {r, mask};
        st = cg__kernel(dev, "nonzero_flat", 1, 2, ts, 0, NULL, 0, NULL);
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

cg_status cg_nonzero_flat(cg_tensor *mask, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(mask);
    if (mask->dtype != CG_BOOL)
        return cg__err(CG_ERR_DTYPE, "cg_nonzero_flat: mask must be bool (got %s)", cg_dtype_name(mask->dtype));
    if (cg__dev(mask)) return nonzero_device(mask, out);
    cg_tensor *c;
    CG_TRY(cg__contig(mask, &c));
    const unsigned char *m = (const unsigned char *)cg__ptr(c);
    int64_t n = c->numel, count = 0;
    for (int64_t i = 0; i < n; ++i) count += m[i] != 0;
    cg_tensor *r;
    cg_status st = cg__new(CG_INT64, 1, &count, 0, &r);
    if (st) {
        cg_tensor_free(c);
        return st;
    }
    int64_t *p = (int64_t *)cg__ptr(r);
    for (int64_t i = 0, k = 0; i < n; ++i)
        if (m[i]) p[k++] = i;
    cg_tensor_free(c);
    *out = r;
    return CG_OK;
}

/* ----------------------------------------------------------- embedding */
/* iparam: [0] num, [1] dim. saved 0: indices flattened to (N,). */
static cg_status embedding_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int64_t num = node->iparam[0], D = node->iparam[1];
    cg_tensor *flat = NULL, *g2 = NULL, *z = NULL;
    cg_status st = cg__saved(node, 0, &flat);
    if (!st) {
        int64_t shape2[2] = {flat->numel, D};
        st = cg_reshape(gout[0], 2, shape2, &g2);
    }
    if (!st) {
        int64_t wshape[2] = {num, D};
        st = cg__new_on(cg__dev(gout[0]), gout[0]->dtype, 2, wshape, 1, &z);
    }
    if (!st) st = cg_index_add(z, 0, flat, g2, &gin[0]);
    cg_tensor_free(flat);
    cg_tensor_free(g2);
    cg_tensor_free(z);
    return st;
}

/* The device branch of the sparse gradient (the references flat and gc are
 * taken over): the kept count comes back to the host to size the parts, which
 * "embedding_sparse_grad" fills. */
static cg_status embedding_sparse_grad_device(cg_tensor *flat, cg_tensor *gc, int64_t num, int64_t D,
                                              int64_t pad, cg_tensor **out) {
    const int dev = cg__dev(gc);
    int64_t keep = flat->numel;
    cg_tensor *ni = NULL, *nv = NULL, *g2 = NULL;
    cg_status st = CG_OK;
    if (pad >= 0)
        st = cg__kernel_result(dev, "sparse_count_ne", 0, 1, &flat, 0, NULL, 1, &pad, CG_INT64, 0, NULL, &keep);
    int64_t shape2[2] = {flat->numel, D}, vshape[2] = {keep, D};
    if (!st) st = cg_reshape(gc, 2, shape2, &g2);
    if (!st) st = cg__new_on(dev, CG_INT64, 1, &keep, 0, &ni);
    if (!st) st = cg__new_on(dev, gc->dtype, 2, vshape, 0, &nv);
    if (!st && keep) {
        cg_tensor *ts[4] = {ni, nv, flat, g2};
        st = cg__kernel(dev, "embedding_sparse_grad", 2, 4, ts, 0, NULL, 1, &pad);
    }
    if (!st) st = cg__sparse_make(ni, nv, num, -1, out);
    cg_tensor_free(flat);
    cg_tensor_free(gc);
    cg_tensor_free(g2);
    cg_tensor_free(ni);
    cg_tensor_free(nv);
    return st;
}

/* iparam as above, [2] padding_idx (-1: none). The gradient is row-sparse:
 * a copy of the flattened indices and of the gradient rows, the padding
 * rows left out (PyTorch's embedding_sparse_backward). */
static cg_status embedding_sparse_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    if (cg__grad_mode())
        return cg__err(CG_ERR_UNSUPPORTED,
                       "embedding(sparse=True): create_graph through a row-sparse gradient is not "
                       "supported; use sparse=False for higher-order gradients");
    int64_t num = node->iparam[0], D = node->iparam[1], pad = node->iparam[2];
    cg_tensor *flat = NULL, *gc = NULL, *ni = NULL, *nv = NULL;
    cg_status st = cg__saved(node, 0, &flat);
    if (!st) st = cg__contig(gout[0], &gc);
    if (!st && cg__dev(gc)) return embedding_sparse_grad_device(flat, gc, num, D, pad, &gin[0]);
    int64_t N = flat ? flat->numel : 0, keep = 0;
    const int64_t *ip = flat ? (const int64_t *)cg__ptr(flat) : NULL;
    if (!st)
        for (int64_t i = 0; i < N; ++i) keep += ip[i] != pad;
    if (!st) st = cg__new(CG_INT64, 1, &keep, 0, &ni);
    if (!st) {
        int64_t vshape[2] = {keep, D};
        st = cg__new(gc->dtype, 2, vshape, 0, &nv);
    }
    if (!st) {
        size_t rb = (size_t)D * cg_dtype_size(gc->dtype);
        int64_t *op = (int64_t *)cg__ptr(ni);
        char *vp = (char *)cg__ptr(nv);
        const char *gp = (const char *)cg__ptr(gc);
        for (int64_t i = 0, k = 0; i < N; ++i) {
            if (ip[i] == pad) continue;
            op[k] = ip[i];
            if (rb) memcpy(vp + (size_t)k * rb, gp + (size_t)i * rb, rb);
            ++k;
        }
        st = cg__sparse_make(ni, nv, num, -1, &gin[0]);
    }
    cg_tensor_free(flat);
    cg_tensor_free(gc);
    cg_tensor_free(ni);
    cg_tensor_free(nv);
    return st;
}

static const cg_op OP_EMBEDDING = {"embedding", embedding_backward};
static const cg_op OP_EMBEDDING_SPARSE = {"embedding", embedding_sparse_backward};

static cg_status embedding_impl(cg_tensor *weight, cg_tensor *indices, int sparse, int64_t padding_idx,
                                cg_tensor **out) {
    if (weight->ndim != 2)
        return cg__err(CG_ERR_SHAPE, "cg_embedding: weight must be 2-D (num, dim), got %d dims", weight->ndim);
    if (indices->dtype != CG_INT64)
        return cg__err(CG_ERR_DTYPE, "cg_embedding: indices must be int64 (got %s)", cg_dtype_name(indices->dtype));
    if (indices->ndim + 1 > CG_MAX_DIMS)
        return cg__err(CG_ERR_SHAPE, "cg_embedding: indices have %d dims; the result would exceed %d",
                       indices->ndim, CG_MAX_DIMS);
    int dev;
    cg_tensor *wi[2] = {weight, indices};
    CG_TRY(cg__same_device("cg_embedding", 2, wi, &dev));
    int64_t num = weight->shape[0], D = weight->shape[1], N = indices->numel;
    cg_tensor *ic = NULL, *flat = NULL, *wc = NULL, *r = NULL, *hv = NULL;
    cg_status st = cg__contig(indices, &ic);
    if (!st) st = cg__view(ic, 1, &N, (const int64_t[]){1}, ic->offset, &flat);
    /* the bounds check reads a device index on the host (a copy back),
     * unless its upload from the host settles it (device.c); the device
     * kernel reads no row out of range should memory shared outside cgrad
     * change since (a NumPy / CuPy take: it raises, or wraps) */
    const int known = !st && cg__dev(flat) && cg__int64_known_within(flat, num, num);
    if (!st && !known) st = cg__host_contig(flat, &hv);
    if (!st && !known) {
        const int64_t *ip = (const int64_t *)cg__ptr(hv);
        for (int64_t i = 0; i < N; ++i)
            if (ip[i] < 0 || ip[i] >= num) {
                st = cg__err(CG_ERR_INDEX, "cg_embedding: index %lld is out of range for %lld embeddings",
                             (long long)ip[i], (long long)num);
                break;
            }
    }
    cg_tensor_free(hv);
    if (!st && dev && !cg__dev(flat)) { /* a 0-d host index joined device weights */
        cg_tensor *moved = NULL;
        st = cg_to_device(flat, dev, &moved);
        cg_tensor_free(flat);
        flat = moved;
    }
    if (!st && !dev) st = cg__contig(weight, &wc);
    if (!st) {
        int64_t shape[CG_MAX_DIMS];
        for (int k = 0; k < indices->ndim; ++k) shape[k] = indices->shape[k];
        shape[indices->ndim] = D;
        st = cg__new_on(dev, weight->dtype, indices->ndim + 1, shape, 0, &r);
    }
    if (!st && r->numel && dev) {
        cg_tensor *ts[3] = {r, weight, flat};
        st = cg__kernel(dev, "embedding", 1, 3, ts, 0, NULL, 0, NULL);
    } else if (!st && r->numel) {
        select_rows(weight->dtype, (char *)cg__ptr(r), (const char *)cg__ptr(wc),
                    (const int64_t *)cg__ptr(flat), N, num, 1, D);
    }
    cg_tensor_free(wc);
    cg_tensor_free(ic);
    if (!st && cg__wants_grad1(weight)) {
        cg_node *node;
        st = cg__record(sparse ? &OP_EMBEDDING_SPARSE : &OP_EMBEDDING, 1, &weight, 1, &r, &node);
        if (!st) {
            node->iparam[0] = num;
            node->iparam[1] = D;
            node->iparam[2] = padding_idx;
            node->n_iparam = 3;
            st = cg__save(node, flat);
        }
    }
    cg_tensor_free(flat);
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

cg_status cg_embedding(cg_tensor *weight, cg_tensor *indices, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(weight);
    CG_CHECK_TD(indices);
    return embedding_impl(weight, indices, 0, -1, out);
}

cg_status cg_embedding_sparse(cg_tensor *weight, cg_tensor *indices, int64_t padding_idx,
                              cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(weight);
    CG_CHECK_TD(indices);
    if (weight->ndim == 2 && padding_idx >= weight->shape[0])
        return cg__err(CG_ERR_INDEX, "cg_embedding_sparse: padding_idx %lld is out of range for %lld embeddings",
                       (long long)padding_idx, (long long)weight->shape[0]);
    if (!cg__is_float(weight->dtype)) /* the row-sparse gradient's dtypes (float16: on a device) */
        return cg__err(CG_ERR_DTYPE, "cg_embedding_sparse: weight must be float16 (on a device), "
                                     "float32 or float64 (got %s)", cg_dtype_name(weight->dtype));
    return embedding_impl(weight, indices, 1, padding_idx < 0 ? -1 : padding_idx, out);
}
