/* ops_shape.c -- views (reshape, permute, transpose, expand, squeeze,
 * unsqueeze, slice, select) and copies (cat, stack, contiguous, clone,
 * to_dtype).
 *
 * A view is a new header on the same storage (cg__view), so in-place writes
 * show through every view. Its autograd link is the recorded op: a view of a
 * leaf that requires grad is a non-leaf whose backward maps the gradient
 * back to the base's shape. */
/* Vectorisation options for the copy / cast / add loops; see ops_reduce.c. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-math-errno", "no-trapping-math")
#endif
#include <stdio.h>

#include "cg_internal.h"

/* Record op with one input a and output r; on failure r is freed. */
static cg_status record1(const cg_op *op, cg_tensor *a, cg_tensor *r, cg_node **node) {
    cg_status st = cg__record(op, 1, &a, 1, &r, node);
    if (st) cg_tensor_free(r);
    return st;
}

/* iparam[base] = ndim, iparam[base+1..] = shape. */
static void put_shape(cg_node *node, int base, int ndim, const int64_t *shape) {
    node->iparam[base] = ndim;
    for (int d = 0; d < ndim; ++d) node->iparam[base + 1 + d] = shape[d];
    if (node->n_iparam < base + 1 + ndim) node->n_iparam = base + 1 + ndim;
}

/* Last step of a view r of a whose backward needs a's shape: records op
 * (when grad is wanted) with a's shape at iparam[0..], then *out = r. */
static cg_status finish_shaped(const cg_op *op, cg_tensor *a, cg_tensor *r, cg_tensor **out) {
    if (cg__wants_grad1(a)) {
        cg_node *node;
        CG_TRY(record1(op, a, r, &node));
        put_shape(node, 0, a->ndim, a->shape);
    }
    *out = r;
    return CG_OK;
}

static int get_shape(const cg_node *node, int base, int64_t *shape) {
    int ndim = (int)node->iparam[base];
    for (int d = 0; d < ndim; ++d) shape[d] = node->iparam[base + 1 + d];
    return ndim;
}

/* ---------------------------------------------------------------- reshape */
/* Strides that let (ndim, shape) view a's memory, as PyTorch's
 * computeStride: runs of dims that are contiguous with each other may be
 * split or merged freely. Returns 0 when a copy is needed. */
static int view_strides(const cg_tensor *a, int ndim, const int64_t *shape, int64_t *strides) {
    if (a->numel == 0 || a->ndim == 0) {
        cg__contig_strides(ndim, shape, strides);
        return 1;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = a->strides[a->ndim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int tensor_d = a->ndim - 1; tensor_d >= 0; --tensor_d) {
        tensor_numel *= a->shape[tensor_d];
        if (tensor_d == 0 || (a->shape[tensor_d - 1] != 1 &&
                              a->strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                --view_d;
            }
            if (view_numel != tensor_numel) return 0;
            if (tensor_d > 0) {
                chunk_base_stride = a->strides[tensor_d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

static cg_status reshape_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int64_t shape[CG_MAX_DIMS];
    int ndim = get_shape(node, 0, shape);
    return cg_reshape(gout[0], ndim, shape, &gin[0]);
}

static const cg_op OP_RESHAPE = {"reshape", reshape_backward};

cg_status cg_reshape(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    CG_TRY(cg__check_shape_arg("cg_reshape", ndim, shape));
    int64_t ns[CG_MAX_DIMS];
    int infer = -1;
    int64_t prod = 1;
    char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
    for (int d = 0; d < ndim; ++d) {
        ns[d] = shape[d];
        if (shape[d] == -1) {
            if (infer >= 0)
                return cg__err(CG_ERR_VALUE, "cg_reshape: only one dimension can be -1 in %s",
                               cg__shape_str(ndim, shape, b1, sizeof b1));
            infer = d;
        } else if (shape[d] < 0) {
            return cg__err(CG_ERR_VALUE, "cg_reshape: invalid size %lld in shape %s",
                           (long long)shape[d], cg__shape_str(ndim, shape, b1, sizeof b1));
        } else {
            if (shape[d] > 0 && prod > INT64_MAX / shape[d])
                return cg__err(CG_ERR_SHAPE, "cg_reshape: shape %s is too large",
                               cg__shape_str(ndim, shape, b1, sizeof b1));
            prod *= shape[d];
        }
    }
    if (infer >= 0) {
        if (prod == 0 || a->numel % prod != 0)
            return cg__err(CG_ERR_SHAPE, "cg_reshape: cannot reshape a tensor of shape %s (%lld elements) into shape %s",
                           cg__shape_str(a->ndim, a->shape, b1, sizeof b1), (long long)a->numel,
                           cg__shape_str(ndim, shape, b2, sizeof b2));
        ns[infer] = a->numel / prod;
    } else if (prod != a->numel) {
        return cg__err(CG_ERR_SHAPE, "cg_reshape: cannot reshape a tensor of shape %s (%lld elements) into shape %s",
                       cg__shape_str(a->ndim, a->shape, b1, sizeof b1), (long long)a->numel,
                       cg__shape_str(ndim, shape, b2, sizeof b2));
    }
    int64_t st_[CG_MAX_DIMS];
    cg_tensor *r;
    if (view_strides(a, ndim, ns, st_)) {
        CG_TRY(cg__view(a, ndim, ns, st_, a->offset, &r));
    } else {
        cg_tensor *c;
        CG_TRY(cg__contig(a, &c));
        cg__contig_strides(ndim, ns, st_);
        cg_status st = cg__view(c, ndim, ns, st_, c->offset, &r);
        cg_tensor_free(c);
        CG_TRY(st);
    }
    return finish_shaped(&OP_RESHAPE, a, r, out);
}

/* ---------------------------------------------------------------- permute */
static cg_status permute_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int n = (int)node->iparam[0];
    int inv[CG_MAX_DIMS];
    for (int d = 0; d < n; ++d) inv[node->iparam[1 + d]] = d;
    return cg_permute(gout[0], inv, &gin[0]);
}

static cg_status transpose_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return cg_transpose(gout[0], (int)node->iparam[0], (int)node->iparam[1], &gin[0]);
}

static const cg_op OP_PERMUTE = {"permute", permute_backward};
static const cg_op OP_TRANSPOSE = {"transpose", transpose_backward};

/* View of a with dims reordered: new dim i is old dim perm[i]. */
static cg_status permuted_view(cg_tensor *a, const int *perm, cg_tensor **out) {
    int64_t shape[CG_MAX_DIMS], strides[CG_MAX_DIMS];
    for (int d = 0; d < a->ndim; ++d) {
        shape[d] = a->shape[perm[d]];
        strides[d] = a->strides[perm[d]];
    }
    return cg__view(a, a->ndim, shape, strides, a->offset, out);
}

cg_status cg_permute(cg_tensor *a, const int *perm, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    if (a->ndim > 0 && !perm) return cg__err(CG_ERR_NULL, "cg_permute: perm is NULL");
    int p[CG_MAX_DIMS];
    unsigned char seen[CG_MAX_DIMS] = {0};
    for (int d = 0; d < a->ndim; ++d) {
        CG_TRY(cg__norm_dim("cg_permute", perm[d], a->ndim, &p[d]));
        if (seen[p[d]])
            return cg__err(CG_ERR_VALUE, "cg_permute: dim %d appears more than once in perm", perm[d]);
        seen[p[d]] = 1;
    }
    cg_tensor *r;
    CG_TRY(permuted_view(a, p, &r));
    if (cg__wants_grad1(a)) {
        cg_node *node;
        CG_TRY(record1(&OP_PERMUTE, a, r, &node));
        node->iparam[0] = a->ndim;
        for (int d = 0; d < a->ndim; ++d) node->iparam[1 + d] = p[d];
        node->n_iparam = 1 + a->ndim;
    }
    *out = r;
    return CG_OK;
}

cg_status cg_transpose(cg_tensor *a, int dim0, int dim1, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    int d0, d1;
    CG_TRY(cg__norm_dim("cg_transpose", dim0, a->ndim, &d0));
    CG_TRY(cg__norm_dim("cg_transpose", dim1, a->ndim, &d1));
    int p[CG_MAX_DIMS];
    for (int d = 0; d < a->ndim; ++d) p[d] = d;
    if (a->ndim) {
        p[d0] = d1;
        p[d1] = d0;
    }
    cg_tensor *r;
    CG_TRY(permuted_view(a, p, &r));
    if (cg__wants_grad1(a)) {
        cg_node *node;
        CG_TRY(record1(&OP_TRANSPOSE, a, r, &node));
        node->iparam[0] = d0;
        node->iparam[1] = d1;
        node->n_iparam = 2;
    }
    *out = r;
    return CG_OK;
}

/* ----------------------------------------------------------------- expand */
static cg_status expand_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int64_t shape[CG_MAX_DIMS];
    int ndim = get_shape(node, 0, shape);
    return cg_sum_to_shape(gout[0], ndim, shape, &gin[0]);
}

static const cg_op OP_EXPAND = {"expand", expand_backward};

cg_status cg_expand(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    CG_TRY(cg__check_shape_arg("cg_expand", ndim, shape));
    char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
    int lead = ndim - a->ndim;
    if (lead < 0)
        return cg__err(CG_ERR_SHAPE, "cg_expand: cannot expand shape %s to %s (fewer dims)",
                       cg__shape_str(a->ndim, a->shape, b1, sizeof b1),
                       cg__shape_str(ndim, shape, b2, sizeof b2));
    int64_t ns[CG_MAX_DIMS], st_[CG_MAX_DIMS];
    for (int i = 0; i < ndim; ++i) {
        int64_t t = shape[i];
        if (i < lead) {
            if (t < 0)
                return cg__err(CG_ERR_SHAPE, "cg_expand: size %lld is not allowed in a new leading dim (%d) of %s",
                               (long long)t, i, cg__shape_str(ndim, shape, b2, sizeof b2));
            ns[i] = t;
            st_[i] = 0;
            continue;
        }
        int64_t s = a->shape[i - lead];
        if (t == -1) t = s;
        if (t == s) {
            ns[i] = s;
            st_[i] = a->strides[i - lead];
        } else if (s == 1 && t >= 0) {
            ns[i] = t;
            st_[i] = 0;
        } else {
            return cg__err(CG_ERR_SHAPE, "cg_expand: cannot expand shape %s to %s (dim %d: %lld to %lld)",
                           cg__shape_str(a->ndim, a->shape, b1, sizeof b1),
                           cg__shape_str(ndim, shape, b2, sizeof b2), i, (long long)s,
                           (long long)shape[i]);
        }
    }
    cg_tensor *r;
    CG_TRY(cg__view(a, ndim, ns, st_, a->offset, &r));
    return finish_shaped(&OP_EXPAND, a, r, out);
}

/* ------------------------------------------------------ squeeze/unsqueeze */
static cg_status squeeze_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    if (!node->iparam[1]) { /* nothing was removed */
        cg_tensor_retain(gout[0]);
        gin[0] = gout[0];
        return CG_OK;
    }
    return cg_unsqueeze(gout[0], (int)node->iparam[0], &gin[0]);
}

static cg_status unsqueeze_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return cg_squeeze(gout[0], (int)node->iparam[0], &gin[0]);
}

static const cg_op OP_SQUEEZE = {"squeeze", squeeze_backward};
static const cg_op OP_SQUEEZE_ALL = {"squeeze", reshape_backward};
static const cg_op OP_UNSQUEEZE = {"unsqueeze", unsqueeze_backward};

cg_status cg_squeeze(cg_tensor *a, int dim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    int d;
    CG_TRY(cg__norm_dim("cg_squeeze", dim, a->ndim, &d));
    int64_t shape[CG_MAX_DIMS], strides[CG_MAX_DIMS];
    int n = 0, removed = a->ndim > 0 && a->shape[d] == 1;
    for (int i = 0; i < a->ndim; ++i) {
        if (i == d && removed) continue;
        shape[n] = a->shape[i];
        strides[n++] = a->strides[i];
    }
    cg_tensor *r;
    CG_TRY(cg__view(a, n, shape, strides, a->offset, &r));
    if (cg__wants_grad1(a)) {
        cg_node *node;
        CG_TRY(record1(&OP_SQUEEZE, a, r, &node));
        node->iparam[0] = d;
        node->iparam[1] = removed;
        node->n_iparam = 2;
    }
    *out = r;
    return CG_OK;
}

cg_status cg_squeeze_all(cg_tensor *a, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    int64_t shape[CG_MAX_DIMS], strides[CG_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < a->ndim; ++i) {
        if (a->shape[i] == 1) continue;
        shape[n] = a->shape[i];
        strides[n++] = a->strides[i];
    }
    cg_tensor *r;
    CG_TRY(cg__view(a, n, shape, strides, a->offset, &r));
    return finish_shaped(&OP_SQUEEZE_ALL, a, r, out);
}

cg_status cg_unsqueeze(cg_tensor *a, int dim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    int n = a->ndim + 1;
    if (dim < -n || dim >= n)
        return cg__err(CG_ERR_INDEX, "cg_unsqueeze: dim %d out of range for a %d-d tensor (expected %d..%d)",
                       dim, a->ndim, -n, n - 1);
    if (n > CG_MAX_DIMS)
        return cg__err(CG_ERR_SHAPE, "cg_unsqueeze: result would have %d dims (at most %d)", n, CG_MAX_DIMS);
    int d = dim < 0 ? dim + n : dim;
    int64_t shape[CG_MAX_DIMS], strides[CG_MAX_DIMS];
    for (int i = 0, j = 0; i < n; ++i) {
        if (i == d) {
            shape[i] = 1;
            strides[i] = d < a->ndim ? a->shape[d] * a->strides[d] : 1;
        } else {
            shape[i] = a->shape[j];
            strides[i] = a->strides[j++];
        }
    }
    cg_tensor *r;
    CG_TRY(cg__view(a, n, shape, strides, a->offset, &r));
    if (cg__wants_grad1(a)) {
        cg_node *node;
        CG_TRY(record1(&OP_UNSQUEEZE, a, r, &node));
        node->iparam[0] = d;
        node->n_iparam = 1;
    }
    *out = r;
    return CG_OK;
}

/* ---------------------------------------------------------- slice/select */
/* iparam of slice / select and their backward ops: [0] dim, [1] start,
 * [2] stop, [3] step, [4] select (1) or slice (0), [5] ndim, [6..] shape of
 * the full (un-sliced) tensor. */
enum { SP_DIM, SP_START, SP_STOP, SP_STEP, SP_SELECT, SP_SHAPE };

static void put_slice(cg_node *node, int dim, int64_t start, int64_t stop, int64_t step,
                      int select, int ndim, const int64_t *shape) {
    node->iparam[SP_DIM] = dim;
    node->iparam[SP_START] = start;
    node->iparam[SP_STOP] = stop;
    node->iparam[SP_STEP] = step;
    node->iparam[SP_SELECT] = select;
    node->n_iparam = SP_SHAPE;
    put_shape(node, SP_SHAPE, ndim, shape);
}

/* View of t restricted to [start, stop) by step along dim (select: the one
 * element start, dim removed). start/stop already normalised. */
static cg_status region_view(cg_tensor *t, int dim, int64_t start, int64_t stop, int64_t step,
                             int select, cg_tensor **out) {
    int64_t shape[CG_MAX_DIMS], strides[CG_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < t->ndim; ++i) {
        if (i == dim) {
            if (select) continue;
            shape[n] = stop > start ? (stop - start - 1) / step + 1 : 0;
            strides[n++] = t->strides[i] * step;
        } else {
            shape[n] = t->shape[i];
            strides[n++] = t->strides[i];
        }
    }
    return cg__view(t, n, shape, strides, t->offset + start * t->strides[dim], out);
}

static cg_status region_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status embed_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static const cg_op OP_SLICE = {"slice", region_backward};
static const cg_op OP_SELECT = {"select", region_backward};
static const cg_op OP_SLICE_BACKWARD = {"slice_backward", embed_backward};
static const cg_op OP_SELECT_BACKWARD = {"select_backward", embed_backward};

/* Zeros of the full shape with g written into the region: the adjoint of
 * slice / select, recorded so that its own gradient (slicing again) exists. */
static cg_status embed(cg_tensor *g, int dim, int64_t start, int64_t stop, int64_t step,
                       int select, int ndim, const int64_t *shape, cg_tensor **out) {
    cg_tensor *z, *v = NULL;
    CG_TRY(cg__new_on(cg__dev(g), g->dtype, ndim, shape, 1, &z));
    cg_status st = region_view(z, dim, start, stop, step, select, &v);
    if (!st && !cg__same_shape(v, g)) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        st = cg__err(CG_ERR_SHAPE, "%s: gradient of shape %s does not fit the region of shape %s",
                     select ? "select_backward" : "slice_backward",
                     cg__shape_str(g->ndim, g->shape, b1, sizeof b1),
                     cg__shape_str(v->ndim, v->shape, b2, sizeof b2));
    }
    if (!st) st = cg__copy_elems(v, g);
    cg_tensor_free(v);
    if (!st && cg__wants_grad1(g)) {
        cg_node *node;
        st = cg__record(select ? &OP_SELECT_BACKWARD : &OP_SLICE_BACKWARD, 1, &g, 1, &z, &node);
        if (!st) put_slice(node, dim, start, stop, step, select, ndim, shape);
    }
    if (st) {
        cg_tensor_free(z);
        return st;
    }
    *out = z;
    return CG_OK;
}

static cg_status region_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int64_t shape[CG_MAX_DIMS];
    int ndim = get_shape(node, SP_SHAPE, shape);
    return embed(gout[0], (int)node->iparam[SP_DIM], node->iparam[SP_START],
                 node->iparam[SP_STOP], node->iparam[SP_STEP], (int)node->iparam[SP_SELECT], ndim,
                 shape, &gin[0]);
}

static cg_status embed_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int dim = (int)node->iparam[SP_DIM];
    if (node->iparam[SP_SELECT]) return cg_select(gout[0], dim, node->iparam[SP_START], &gin[0]);
    return cg_slice(gout[0], dim, node->iparam[SP_START], node->iparam[SP_STOP],
                    node->iparam[SP_STEP], &gin[0]);
}

static cg_status region_op(cg_tensor *a, int d, int64_t start, int64_t stop, int64_t step,
                           int select, cg_tensor **out) {
    cg_tensor *r;
    CG_TRY(region_view(a, d, start, stop, step, select, &r));
    if (cg__wants_grad1(a)) {
        cg_node *node;
        CG_TRY(record1(select ? &OP_SELECT : &OP_SLICE, a, r, &node));
        put_slice(node, d, start, stop, step, select, a->ndim, a->shape);
    }
    *out = r;
    return CG_OK;
}

static int64_t clamp_index(int64_t i, int64_t n) {
    if (i < 0) {
        i += n;
        if (i < 0) i = 0;
    }
    return i > n ? n : i;
}

cg_status cg_slice(cg_tensor *a, int dim, int64_t start, int64_t stop, int64_t step,
                   cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    if (a->ndim == 0)
        return cg__err(CG_ERR_INDEX, "cg_slice: cannot slice a 0-d tensor");
    int d;
    CG_TRY(cg__norm_dim("cg_slice", dim, a->ndim, &d));
    if (step <= 0)
        return cg__err(CG_ERR_VALUE, "cg_slice: step must be positive (got %lld)", (long long)step);
    int64_t n = a->shape[d];
    start = clamp_index(start, n);
    stop = clamp_index(stop, n);
    if (stop < start) stop = start;
    return region_op(a, d, start, stop, step, 0, out);
}

cg_status cg_select(cg_tensor *a, int dim, int64_t index, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    if (a->ndim == 0)
        return cg__err(CG_ERR_INDEX, "cg_select: cannot index a 0-d tensor");
    int d;
    CG_TRY(cg__norm_dim("cg_select", dim, a->ndim, &d));
    int64_t n = a->shape[d];
    if (index < -n || index >= n)
        return cg__err(CG_ERR_INDEX, "cg_select: index %lld is out of range for dim %d with size %lld",
                       (long long)index, d, (long long)n);
    if (index < 0) index += n;
    return region_op(a, d, index, index + 1, 1, 1, out);
}

/* -------------------------------------------------------------- cat/stack */
/* Copy src into the region of the contiguous dst that (dim, off, len,
 * select) describes; dst is (outer, dst_len, inner) around dim and src fills
 * src_len positions of the middle dim starting at off. */
static cg_status copy_into(cg_tensor *dst, cg_tensor *src, int dim, int select, int64_t outer,
                           int64_t dst_len, int64_t off, int64_t src_len, int64_t inner) {
    size_t esz = cg_dtype_size(dst->dtype);
    if (cg__is_contig(src) && !cg__dev(dst)) {
        size_t chunk = (size_t)(src_len * inner) * esz;
        char *d = (char *)cg__ptr(dst) + (size_t)(off * inner) * esz;
        const char *s = (const char *)cg__ptr(src);
        size_t dstep = (size_t)(dst_len * inner) * esz;
        for (int64_t o = 0; o < outer; ++o) memcpy(d + (size_t)o * dstep, s + (size_t)o * chunk, chunk);
        return CG_OK;
    }
    cg_tensor *region;
    CG_TRY(region_view(dst, dim, off, off + src_len, 1, select, &region));
    cg_status st = cg__copy_elems(region, src);
    cg_tensor_free(region);
    return st;
}

static cg_status cat_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int dim = (int)node->iparam[0];
    const int64_t *sizes = (const int64_t *)node->extra;
    int64_t off = 0;
    for (int i = 0; i < node->n_inputs; ++i) {
        if (node->needs_grad[i])
            CG_TRY(cg_slice(gout[0], dim, off, off + sizes[i], 1, &gin[i]));
        off += sizes[i];
    }
    return CG_OK;
}

static cg_status stack_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int dim = (int)node->iparam[0];
    for (int i = 0; i < node->n_inputs; ++i)
        if (node->needs_grad[i]) CG_TRY(cg_select(gout[0], dim, i, &gin[i]));
    return CG_OK;
}

static const cg_op OP_CAT = {"cat", cat_backward};
static const cg_op OP_STACK = {"stack", stack_backward};

static cg_status check_list(const char *fn, int n, cg_tensor *const *ts) {
    if (!ts) return cg__err(CG_ERR_NULL, "%s: tensors is NULL", fn);
    if (n < 1) return cg__err(CG_ERR_VALUE, "%s: expected at least one tensor (got %d)", fn, n);
    for (int i = 0; i < n; ++i) {
        if (!ts[i]) return cg__err(CG_ERR_NULL, "%s: tensor %d is NULL", fn, i);
        if (ts[i]->dtype != ts[0]->dtype)
            return cg__err(CG_ERR_DTYPE, "%s: tensor %d has dtype %s but tensor 0 has %s", fn, i,
                           cg_dtype_name(ts[i]->dtype), cg_dtype_name(ts[0]->dtype));
    }
    return CG_OK;
}

cg_status cg_cat(int n, cg_tensor *const *tensors, int dim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_TRY(check_list("cg_cat", n, tensors));
    int dev;
    CG_TRY(cg__same_device("cg_cat", n, tensors, &dev));
    cg_tensor *t0 = tensors[0];
    if (t0->ndim == 0)
        return cg__err(CG_ERR_SHAPE, "cg_cat: zero-dimensional tensors cannot be concatenated");
    int d;
    CG_TRY(cg__norm_dim("cg_cat", dim, t0->ndim, &d));
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, t0->shape, sizeof shape);
    shape[d] = 0;
    char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
    for (int i = 0; i < n; ++i) {
        cg_tensor *t = tensors[i];
        int ok = t->ndim == t0->ndim;
        for (int k = 0; ok && k < t0->ndim; ++k)
            if (k != d && t->shape[k] != t0->shape[k]) ok = 0;
        if (!ok)
            return cg__err(CG_ERR_SHAPE, "cg_cat: tensor %d has shape %s, incompatible with tensor 0's %s along dim %d",
                           i, cg__shape_str(t->ndim, t->shape, b1, sizeof b1),
                           cg__shape_str(t0->ndim, t0->shape, b2, sizeof b2), d);
        shape[d] += t->shape[d];
    }
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < d; ++k) outer *= shape[k];
    for (int k = d + 1; k < t0->ndim; ++k) inner *= shape[k];
    cg_tensor *r;
    CG_TRY(cg__new_on(dev, t0->dtype, t0->ndim, shape, 0, &r));
    int64_t off = 0;
    cg_status st = CG_OK;
    if (r->numel)
        for (int i = 0; i < n && !st; ++i) {
            st = copy_into(r, tensors[i], d, 0, outer, shape[d], off, tensors[i]->shape[d], inner);
            off += tensors[i]->shape[d];
        }
    if (!st && cg__wants_gradn(n, tensors)) {
        int64_t *sizes = (int64_t *)malloc((size_t)n * sizeof(int64_t));
        if (!sizes) {
            st = cg__err(CG_ERR_NOMEM, "cg_cat: out of memory");
        } else {
            for (int i = 0; i < n; ++i) sizes[i] = tensors[i]->shape[d];
            cg_node *node;
            st = cg__record(&OP_CAT, n, tensors, 1, &r, &node);
            if (st) {
                free(sizes);
            } else {
                node->iparam[0] = d;
                node->n_iparam = 1;
                node->extra = sizes;
                node->extra_free = free;
            }
        }
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

cg_status cg_stack(int n, cg_tensor *const *tensors, int dim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_TRY(check_list("cg_stack", n, tensors));
    int dev;
    CG_TRY(cg__same_device("cg_stack", n, tensors, &dev));
    cg_tensor *t0 = tensors[0];
    int nd = t0->ndim + 1;
    if (dim < -nd || dim >= nd)
        return cg__err(CG_ERR_INDEX, "cg_stack: dim %d out of range for %d-d inputs (expected %d..%d)",
                       dim, t0->ndim, -nd, nd - 1);
    if (nd > CG_MAX_DIMS)
        return cg__err(CG_ERR_SHAPE, "cg_stack: result would have %d dims (at most %d)", nd, CG_MAX_DIMS);
    int d = dim < 0 ? dim + nd : dim;
    char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
    for (int i = 1; i < n; ++i)
        if (!cg__same_shape(tensors[i], t0))
            return cg__err(CG_ERR_SHAPE, "cg_stack: tensor %d has shape %s but tensor 0 has %s", i,
                           cg__shape_str(tensors[i]->ndim, tensors[i]->shape, b1, sizeof b1),
                           cg__shape_str(t0->ndim, t0->shape, b2, sizeof b2));
    int64_t shape[CG_MAX_DIMS];
    int64_t outer = 1, inner = 1;
    for (int k = 0, j = 0; k < nd; ++k) {
        if (k == d) {
            shape[k] = n;
            continue;
        }
        shape[k] = t0->shape[j++];
        if (k < d) outer *= shape[k];
        else inner *= shape[k];
    }
    cg_tensor *r;
    CG_TRY(cg__new_on(dev, t0->dtype, nd, shape, 0, &r));
    cg_status st = CG_OK;
    if (r->numel)
        for (int i = 0; i < n && !st; ++i) {
            /* each input is (outer, 1, inner) placed at i of (outer, n, inner) */
            st = copy_into(r, tensors[i], d, 1, outer, n, i, 1, inner);
        }
    if (!st && cg__wants_gradn(n, tensors)) {
        cg_node *node;
        st = cg__record(&OP_STACK, n, tensors, 1, &r, &node);
        if (!st) {
            node->iparam[0] = d;
            node->n_iparam = 1;
        }
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

/* ------------------------------------------------- contiguous/clone/cast */
static cg_status identity_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor_retain(gout[0]);
    gin[0] = gout[0];
    return CG_OK;
}

static cg_status to_dtype_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return cg_to_dtype(gout[0], (cg_dtype)node->iparam[0], &gin[0]);
}

static const cg_op OP_CONTIGUOUS = {"contiguous", identity_backward};
static const cg_op OP_CLONE = {"clone", identity_backward};
static const cg_op OP_TO_DTYPE = {"to_dtype", to_dtype_backward};

static cg_status copy_op(const cg_op *op, cg_tensor *a, cg_tensor **out) {
    cg_tensor *r;
    CG_TRY(cg__new_on(cg__dev(a), a->dtype, a->ndim, a->shape, 0, &r));
    cg_status st = cg__copy_elems(r, a);
    if (!st && cg__wants_grad1(a)) {
        cg_node *node;
        st = cg__record(op, 1, &a, 1, &r, &node);
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

cg_status cg_contiguous(cg_tensor *a, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    if (cg__is_contig(a)) {
        cg_tensor_retain(a);
        *out = a;
        return CG_OK;
    }
    return copy_op(&OP_CONTIGUOUS, a, out);
}

cg_status cg_clone(cg_tensor *a, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    return copy_op(&OP_CLONE, a, out);
}

cg_status cg_to_dtype(cg_tensor *a, cg_dtype dtype, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TA(a);
    if (!cg__valid_dtype(dtype))
        return cg__err(CG_ERR_DTYPE, "cg_to_dtype: invalid dtype %d", (int)dtype);
    if (dtype == a->dtype) {
        cg_tensor_retain(a);
        *out = a;
        return CG_OK;
    }
    cg_tensor *r;
    CG_TRY(cg__new_on(cg__dev(a), dtype, a->ndim, a->shape, 0, &r));
    cg_status st = CG_OK;
    int64_t n = a->numel;
    /* The float casts are hot (mixed precision): plain loops. */
    if (cg__dev(a)) {
        st = cg__copy_elems(r, a);
    } else if (cg__is_contig(a) && a->dtype == CG_FLOAT32 && dtype == CG_FLOAT64) {
        const float *s = (const float *)cg__ptr(a);
        double *d = (double *)cg__ptr(r);
        for (int64_t i = 0; i < n; ++i) d[i] = s[i];
    } else if (cg__is_contig(a) && a->dtype == CG_FLOAT64 && dtype == CG_FLOAT32) {
        const double *s = (const double *)cg__ptr(a);
        float *d = (float *)cg__ptr(r);
        for (int64_t i = 0; i < n; ++i) d[i] = (float)s[i];
    } else if (cg__is_contig(a) && a->dtype == CG_BOOL && cg__is_float(dtype)) {
        const unsigned char *s = (const unsigned char *)cg__ptr(a);
        if (dtype == CG_FLOAT32) {
            float *d = (float *)cg__ptr(r);
            for (int64_t i = 0; i < n; ++i) d[i] = s[i] ? 1.0f : 0.0f;
        } else {
            double *d = (double *)cg__ptr(r);
            for (int64_t i = 0; i < n; ++i) d[i] = s[i] ? 1.0 : 0.0;
        }
    } else {
        st = cg__copy_elems(r, a);
    }
    if (!st && cg__is_float(dtype) && cg__is_float(a->dtype) && cg__wants_grad1(a)) {
        cg_node *node;
        st = cg__record(&OP_TO_DTYPE, 1, &a, 1, &r, &node);
        if (!st) {
            node->iparam[0] = a->dtype;
            node->n_iparam = 1;
        }
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}
