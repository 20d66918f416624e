/* tensor.c -- storage, tensor headers, views, creation, inspection and the
 * iterative deallocation loop shared with tape entries. */
#include <stdio.h>

#include "cg_internal.h"

/* ------------------------------------------------------------------ free */
/* Freeing a tensor may free its grad_fn, which frees saved tensors, whose
 * grad_fn ... A chain of a million ops would overflow the C stack if this
 * recursed, so dead objects go on a thread-local worklist that one loop
 * drains. */
static __thread cg_tensor *dead_tensors;
static __thread cg_node *dead_nodes;
static __thread int draining;

/* Large blocks freed by one training step are asked for again, at the same
 * sizes, by the next one. Returning them to the OS and faulting fresh pages
 * in cost ~10% of an MLP step, so a few recently freed large blocks are kept
 * per thread and handed back on an exact size match. */
#define CG_CACHE_SLOTS 16
#define CG_CACHE_MIN_BYTES ((size_t)1 << 16)
#define CG_CACHE_MAX_TOTAL ((size_t)1 << 28)
static __thread cg_storage *cache_blocks[CG_CACHE_SLOTS];
static __thread size_t cache_total;

static int cache_put(cg_storage *s) {
    if (s->nbytes < CG_CACHE_MIN_BYTES || cache_total + s->nbytes > CG_CACHE_MAX_TOTAL) return 0;
    for (int i = 0; i < CG_CACHE_SLOTS; ++i)
        if (!cache_blocks[i]) {
            cache_blocks[i] = s;
            cache_total += s->nbytes;
            return 1;
        }
    return 0;
}

static cg_storage *cache_take(size_t nbytes) {
    if (nbytes < CG_CACHE_MIN_BYTES) return NULL;
    for (int i = 0; i < CG_CACHE_SLOTS; ++i)
        if (cache_blocks[i] && cache_blocks[i]->nbytes == nbytes) {
            cg_storage *s = cache_blocks[i];
            cache_blocks[i] = NULL;
            cache_total -= nbytes;
            return s;
        }
    return NULL;
}

static void storage_decref(cg_storage *s) {
    if (!s || --s->refcount > 0) return;
    if (s->device) {
        cg__device_release(s->device, s->handle);
        free(s);
        return;
    }
    if (s->release) s->release(s->release_ctx);
    else if (cache_put(s)) return;
    free(s); /* data of owned storage lives in the same block */
}

static void tensor_destroy(cg_tensor *t) {
    cg__hooks_free(t->hooks);
    storage_decref(t->storage);
    cg_tensor_free(t->sp_indices);
    cg_tensor_free(t->sp_values);
    cg_tensor_free(t->grad);
    cg__node_decref(t->grad_fn);
    free(t);
}

static void drain(void) {
    draining = 1;
    for (;;) {
        if (dead_tensors) {
            cg_tensor *t = dead_tensors;
            dead_tensors = t->free_next;
            tensor_destroy(t);
        } else if (dead_nodes) {
            cg_node *n = dead_nodes;
            dead_nodes = n->free_next;
            cg__node_destroy(n);
        } else {
            break;
        }
    }
    draining = 0;
}

void cg_tensor_retain(cg_tensor *t) {
    if (t) ++t->refcount;
}

void cg_tensor_free(cg_tensor *t) {
    if (!t || --t->refcount > 0) return;
    t->free_next = dead_tensors;
    dead_tensors = t;
    if (!draining) drain();
}

void cg__node_dispose(cg_node *n) {
    n->free_next = dead_nodes;
    dead_nodes = n;
    if (!draining) drain();
}

/* ---------------------------------------------------------------- shapes */
void cg__contig_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; --d) {
        strides[d] = s;
        s *= shape[d] > 0 ? shape[d] : 1;
    }
}

int cg__is_contig(const cg_tensor *t) {
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; --d) {
        if (t->shape[d] != 1 && t->strides[d] != s) return 0;
        s *= t->shape[d];
    }
    return 1;
}

const char *cg__shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t pos = 0;
    pos += (size_t)snprintf(buf + pos, n - pos, "(");
    for (int d = 0; d < ndim && pos < n; ++d)
        pos += (size_t)snprintf(buf + pos, n - pos, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (pos < n) pos += (size_t)snprintf(buf + pos, n - pos, ndim == 1 ? ",)" : ")");
    return buf;
}

int cg__same_shape(const cg_tensor *a, const cg_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; ++d)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

cg_status cg__norm_dim(const char *fn, int dim, int ndim, int *out) {
    int n = ndim > 0 ? ndim : 1; /* a 0-d tensor accepts dim 0 / -1 like PyTorch */
    if (dim < -n || dim >= n)
        return cg__err(CG_ERR_INDEX, "%s: dim %d out of range for a %d-d tensor (expected %d..%d)",
                       fn, dim, ndim, -n, n - 1);
    *out = dim < 0 ? dim + n : dim;
    return CG_OK;
}

cg_status cg__broadcast_shapes(const char *fn, int na, const int64_t *sa, int nb,
                               const int64_t *sb, int *nout, int64_t *sout) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; ++i) {
        int ia = na - n + i, ib = nb - n + i;
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
            return cg__err(CG_ERR_SHAPE, "%s: shapes %s and %s cannot broadcast (dim %d: %lld vs %lld)",
                           fn, cg__shape_str(na, sa, b1, sizeof b1),
                           cg__shape_str(nb, sb, b2, sizeof b2), i - n, (long long)da,
                           (long long)db);
        }
        sout[i] = da == 1 ? db : da;
    }
    *nout = n;
    return CG_OK;
}

void cg__broadcast_strides(const cg_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    for (int i = 0; i < ndim; ++i) {
        int it = t->ndim - ndim + i;
        strides[i] = (it >= 0 && t->shape[it] == shape[i] && shape[i] != 1) ? t->strides[it] : 0;
    }
}

/* -------------------------------------------------------------- creation */
cg_status cg__check_shape_arg(const char *fn, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > CG_MAX_DIMS)
        return cg__err(CG_ERR_SHAPE, "%s: ndim %d outside [0, %d]", fn, ndim, CG_MAX_DIMS);
    if (ndim > 0 && !shape) return cg__err(CG_ERR_NULL, "%s: shape is NULL", fn);
    return CG_OK;
}

static cg_status check_shape(const char *fn, cg_dtype dtype, int ndim, const int64_t *shape,
                             int64_t *numel) {
    if (!cg__valid_dtype(dtype)) return cg__err(CG_ERR_DTYPE, "%s: invalid dtype %d", fn, (int)dtype);
    CG_TRY(cg__check_shape_arg(fn, ndim, shape));
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) {
        if (shape[d] < 0)
            return cg__err(CG_ERR_VALUE, "%s: negative size %lld in dim %d", fn,
                           (long long)shape[d], d);
        if (shape[d] > 0 && n > (INT64_MAX / 16) / shape[d])
            return cg__err(CG_ERR_VALUE, "%s: shape too large (overflows)", fn);
        n *= shape[d];
    }
    *numel = n;
    return CG_OK;
}

static cg_tensor *header_new(cg_dtype dtype, int ndim, const int64_t *shape, int64_t numel) {
    cg_tensor *t = (cg_tensor *)calloc(1, sizeof *t);
    if (!t) return NULL;
    t->refcount = 1;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; ++d) t->shape[d] = shape[d];
    t->numel = numel;
    return t;
}

#define CG_ALIGN 64

cg_status cg__new(cg_dtype dtype, int ndim, const int64_t *shape, int zero, cg_tensor **out) {
    int64_t numel;
    CG_TRY(check_shape("cg_empty", dtype, ndim, shape, &numel));
    size_t nbytes = (size_t)numel * cg_dtype_size(dtype);
    /* Storage header and data in one block, data 64-byte aligned. */
    size_t head = (sizeof(cg_storage) + CG_ALIGN - 1) / CG_ALIGN * CG_ALIGN;
    cg_tensor *t = header_new(dtype, ndim, shape, numel);
    cg_storage *s = t ? cache_take(nbytes) : NULL;
    char *block = s ? (char *)s : (char *)malloc(head + nbytes + CG_ALIGN);
    if (!block || !t) {
        free(block);
        free(t);
        return cg__err(CG_ERR_NOMEM, "cg_empty: cannot allocate %zu bytes", nbytes);
    }
    s = (cg_storage *)block;
    uintptr_t p = (uintptr_t)(block + sizeof(cg_storage));
    p = (p + CG_ALIGN - 1) / CG_ALIGN * CG_ALIGN;
    s->refcount = 1;
    s->data = (void *)p;
    s->nbytes = nbytes;
    s->version = 0;
    s->release = NULL;
    s->release_ctx = NULL;
    s->device = CG_DEVICE_CPU;
    s->handle = NULL;
    if (zero && nbytes) memset(s->data, 0, nbytes);
    t->storage = s;
    cg__contig_strides(ndim, shape, t->strides);
    *out = t;
    return CG_OK;
}

cg_status cg__new_on(int device, cg_dtype dtype, int ndim, const int64_t *shape, int zero,
                     cg_tensor **out) {
    if (device == CG_DEVICE_CPU) return cg__new(dtype, ndim, shape, zero, out);
    int64_t numel;
    CG_TRY(check_shape("cg_empty_on", dtype, ndim, shape, &numel));
    cg_storage *s;
    CG_TRY(cg__device_alloc(device, (size_t)numel * cg_dtype_size(dtype), zero, &s));
    return cg__tensor_over(s, dtype, ndim, shape, NULL, 0, out);
}

cg_status cg__tensor_over(cg_storage *s, cg_dtype dtype, int ndim, const int64_t *shape,
                          const int64_t *strides, int64_t offset, cg_tensor **out) {
    int64_t numel = 1;
    for (int d = 0; d < ndim; ++d) numel *= shape[d];
    cg_tensor *t = header_new(dtype, ndim, shape, numel);
    if (!t) {
        storage_decref(s);
        return cg__err(CG_ERR_NOMEM, "tensor header: out of memory");
    }
    if (strides)
        for (int d = 0; d < ndim; ++d) t->strides[d] = strides[d];
    else
        cg__contig_strides(ndim, shape, t->strides);
    t->offset = offset;
    t->storage = s;
    *out = t;
    return CG_OK;
}

cg_status cg__view(cg_tensor *base, int ndim, const int64_t *shape, const int64_t *strides,
                   int64_t offset, cg_tensor **out) {
    int64_t numel = 1;
    for (int d = 0; d < ndim; ++d) numel *= shape[d];
    cg_tensor *t = header_new(base->dtype, ndim, shape, numel);
    if (!t) return cg__err(CG_ERR_NOMEM, "cg_view: out of memory");
    for (int d = 0; d < ndim; ++d) t->strides[d] = strides[d];
    t->offset = offset;
    t->storage = base->storage;
    ++base->storage->refcount;
    *out = t;
    return CG_OK;
}

cg_status cg_empty(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    return cg__new(dtype, ndim, shape, 0, out);
}

cg_status cg_zeros(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    return cg__new(dtype, ndim, shape, 1, out);
}

static void fill_contig(cg_tensor *t, double v) {
    void *p = cg__ptr(t);
    int64_t n = t->numel;
    switch (t->dtype) {
    case CG_FLOAT32: { float f = (float)v; float *q = (float *)p; for (int64_t i = 0; i < n; ++i) q[i] = f; break; }
    case CG_FLOAT64: { double *q = (double *)p; for (int64_t i = 0; i < n; ++i) q[i] = v; break; }
    case CG_INT64: { int64_t k = cg__f2i64(v); int64_t *q = (int64_t *)p; for (int64_t i = 0; i < n; ++i) q[i] = k; break; }
    case CG_BOOL: memset(p, v != 0.0, (size_t)n); break;
    case CG_FLOAT16: { uint16_t h = cg__d2h(v); uint16_t *q = (uint16_t *)p; for (int64_t i = 0; i < n; ++i) q[i] = h; break; }
    default: break;
    }
}

cg_status cg_full(cg_dtype dtype, int ndim, const int64_t *shape, double value, cg_tensor **out) {
    CG_CHECK_OUT(out);
    cg_tensor *t;
    /* As PyTorch: a value that does not fit is an error, not a wrapped fill. */
    if (dtype == CG_INT64 && !(value > -9.2e18 && value < 9.2e18))
        return cg__err(CG_ERR_VALUE, "cg_full: value %g does not fit an int64 tensor", value);
    CG_TRY(cg__new(dtype, ndim, shape, 0, &t));
    fill_contig(t, value);
    *out = t;
    return CG_OK;
}

cg_status cg_ones(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out) {
    return cg_full(dtype, ndim, shape, 1.0, out);
}

cg_status cg_scalar(cg_dtype dtype, double value, cg_tensor **out) {
    return cg_full(dtype, 0, NULL, value, out);
}

cg_status cg_from_data(cg_dtype dtype, int ndim, const int64_t *shape, const void *data,
                       cg_tensor **out) {
    CG_CHECK_OUT(out);
    cg_tensor *t;
    CG_TRY(cg__new(dtype, ndim, shape, 0, &t));
    if (t->numel) {
        if (!data) {
            cg_tensor_free(t);
            return cg__err(CG_ERR_NULL, "cg_from_data: data is NULL");
        }
        memcpy(t->storage->data, data, t->storage->nbytes);
    }
    *out = t;
    return CG_OK;
}

cg_status cg_from_blob(cg_dtype dtype, int ndim, const int64_t *shape, const int64_t *strides,
                       void *data, cg_release_fn release, void *release_ctx, cg_tensor **out) {
    CG_CHECK_OUT(out);
    int64_t numel;
    CG_TRY(check_shape("cg_from_blob", dtype, ndim, shape, &numel));
    if (!data && numel) return cg__err(CG_ERR_NULL, "cg_from_blob: data is NULL");
    cg_storage *s = (cg_storage *)calloc(1, sizeof *s);
    cg_tensor *t = header_new(dtype, ndim, shape, numel);
    if (!s || !t) {
        free(s);
        free(t);
        return cg__err(CG_ERR_NOMEM, "cg_from_blob: out of memory");
    }
    s->refcount = 1;
    s->data = data;
    s->release = release;
    s->release_ctx = release_ctx;
    t->storage = s;
    if (strides)
        for (int d = 0; d < ndim; ++d) t->strides[d] = strides[d];
    else
        cg__contig_strides(ndim, shape, t->strides);
    *out = t;
    return CG_OK;
}

cg_status cg_arange(cg_dtype dtype, double start, double end, double step, cg_tensor **out) {
    CG_CHECK_OUT(out);
    if (step == 0.0 || isnan(step) || isnan(start) || isnan(end) || isinf(start) || isinf(end))
        return cg__err(CG_ERR_VALUE, "cg_arange: invalid range start=%g end=%g step=%g", start, end, step);
    double count = ceil((end - start) / step);
    if (count < 0) count = 0;
    if (count > 1e12) return cg__err(CG_ERR_VALUE, "cg_arange: %g elements is too many", count);
    int64_t n = (int64_t)count;
    cg_tensor *t = NULL;
    CG_TRY(cg__new(dtype, 1, &n, 0, &t));
    void *p = cg__ptr(t);
    for (int64_t i = 0; i < n; ++i) cg__store(p, dtype, i, start + (double)i * step);
    *out = t;
    return CG_OK;
}

/* ------------------------------------------------------------ inspection */
cg_dtype cg_tensor_dtype(const cg_tensor *t) { return t ? t->dtype : CG_DTYPE_COUNT; }
int cg_tensor_ndim(const cg_tensor *t) { return t ? t->ndim : 0; }
const int64_t *cg_tensor_shape(const cg_tensor *t) { return t ? t->shape : NULL; }
const int64_t *cg_tensor_strides(const cg_tensor *t) { return t ? t->strides : NULL; }
int64_t cg_tensor_numel(const cg_tensor *t) { return t ? t->numel : 0; }
/* A sparse tensor has no dense data to point at. */
void *cg_tensor_data(const cg_tensor *t) {
    return (t && !t->layout && !t->storage->device) ? cg__ptr(t) : NULL;
}
int cg_tensor_is_contiguous(const cg_tensor *t) { return (t && !t->layout) ? cg__is_contig(t) : 0; }
uint64_t cg_tensor_version(const cg_tensor *t) { return t ? t->storage->version : 0; }

cg_status cg_tensor_item(const cg_tensor *t, double *out) {
    CG_CHECK_TA(t);
    if (!out) return cg__err(CG_ERR_NULL, "cg_tensor_item: out is NULL");
    if (t->numel != 1)
        return cg__err(CG_ERR_VALUE, "cg_tensor_item: a tensor with %lld elements cannot be converted to a scalar",
                       (long long)t->numel);
    if (cg__dev(t)) {
        unsigned char buf[8];
        CG_TRY(cg__device_to_host(t, buf));
        *out = cg__load(buf, t->dtype, 0);
        return CG_OK;
    }
    *out = cg__load(cg__ptr(t), t->dtype, 0);
    return CG_OK;
}

/* Strided element copy with cast. Generic N-d loop over dst's shape with
 * the innermost dim unrolled per dtype pair for the common same-dtype case. */
cg_status cg__copy_elems(cg_tensor *dst, const cg_tensor *src) {
    if (dst->layout || src->layout) return cg__sparse_refused("copy", dst->layout ? "dst" : "src");
    if (dst->numel != src->numel || dst->ndim != src->ndim)
        return cg__err(CG_ERR_SHAPE, "copy: element count mismatch");
    int64_t n = dst->numel;
    if (n == 0) return CG_OK;
    if (dst->storage->device || src->storage->device) return cg__device_copy(dst, src);
    char *dp = (char *)cg__ptr(dst);
    const char *sp = (const char *)cg__ptr(src);
    size_t dsz = cg_dtype_size(dst->dtype), ssz = cg_dtype_size(src->dtype);
    if (dst->dtype == src->dtype && cg__is_contig(dst) && cg__is_contig(src)) {
        memcpy(dp, sp, (size_t)n * dsz);
        return CG_OK;
    }
    int nd = dst->ndim;
    if (nd == 0) {
        cg__store(dp, dst->dtype, 0, cg__load(sp, src->dtype, 0));
        return CG_OK;
    }
    int64_t idx[CG_MAX_DIMS] = {0};
    int64_t inner = dst->shape[nd - 1];
    int64_t ds = dst->strides[nd - 1], ss = src->strides[nd - 1];
    do {
        int64_t doff = 0, soff = 0;
        for (int d = 0; d < nd - 1; ++d) {
            doff += idx[d] * dst->strides[d];
            soff += idx[d] * src->strides[d];
        }
        if (dst->dtype == src->dtype && dsz == 8) {
            int64_t *q = (int64_t *)dp + doff;
            const int64_t *r = (const int64_t *)sp + soff;
            for (int64_t i = 0; i < inner; ++i) q[i * ds] = r[i * ss];
        } else if (dst->dtype == src->dtype && dsz == 2) {
            uint16_t *q = (uint16_t *)dp + doff;
            const uint16_t *r = (const uint16_t *)sp + soff;
            for (int64_t i = 0; i < inner; ++i) q[i * ds] = r[i * ss];
        } else if (dst->dtype == src->dtype && dsz == 4) {
            float *q = (float *)dp + doff;
            const float *r = (const float *)sp + soff;
            for (int64_t i = 0; i < inner; ++i) q[i * ds] = r[i * ss];
        } else {
            void *q = dp + (size_t)doff * dsz;
            const void *r = sp + (size_t)soff * ssz;
            for (int64_t i = 0; i < inner; ++i)
                cg__store(q, dst->dtype, i * ds, cg__load(r, src->dtype, i * ss));
        }
        idx[nd - 1] = inner - 1;
    } while (cg__next_index(nd, dst->shape, idx));
    return CG_OK;
}

cg_status cg__contig(cg_tensor *t, cg_tensor **out) {
    if (t->layout) return cg__sparse_refused("contiguous", "t");
    if (cg__is_contig(t)) {
        cg_tensor_retain(t);
        *out = t;
        return CG_OK;
    }
    cg_tensor *c;
    CG_TRY(cg__new_on(cg__dev(t), t->dtype, t->ndim, t->shape, 0, &c));
    cg_status st = cg__copy_elems(c, t);
    if (st) {
        cg_tensor_free(c);
        return st;
    }
    *out = c;
    return CG_OK;
}

cg_status cg_tensor_copy_to(const cg_tensor *t, void *dst, size_t nbytes) {
    CG_CHECK_TA(t);
    size_t want = (size_t)t->numel * cg_dtype_size(t->dtype);
    if (nbytes != want)
        return cg__err(CG_ERR_VALUE, "cg_tensor_copy_to: nbytes %zu != numel*itemsize %zu", nbytes, want);
    if (!want) return CG_OK;
    if (!dst) return cg__err(CG_ERR_NULL, "cg_tensor_copy_to: dst is NULL");
    cg_tensor *tmp;
    CG_TRY(cg_from_blob(t->dtype, t->ndim, t->shape, NULL, dst, NULL, NULL, &tmp));
    cg_status st = cg__copy_elems(tmp, t);
    cg_tensor_free(tmp);
    return st;
}

/* -------------------------------------------------------------- autograd */
int cg_tensor_requires_grad(const cg_tensor *t) { return t ? t->requires_grad : 0; }
int cg_tensor_is_leaf(const cg_tensor *t) { return t ? t->grad_fn == NULL : 0; }
cg_tensor *cg_tensor_grad(const cg_tensor *t) { return t ? t->grad : NULL; }
const char *cg_tensor_grad_fn_name(const cg_tensor *t) {
    return (t && t->grad_fn) ? cg__node_name(t->grad_fn) : NULL;
}

cg_status cg_tensor_set_requires_grad(cg_tensor *t, int requires_grad) {
    CG_CHECK_TA(t);
    if (t->grad_fn)
        return cg__err(CG_ERR_AUTOGRAD,
                       "requires_grad can only be changed on leaf tensors (this one comes from '%s'); use detach()",
                       cg__node_name(t->grad_fn));
    if (requires_grad && !cg__is_float(t->dtype))
        return cg__err(CG_ERR_DTYPE, "only floating point tensors can require grad (got %s)",
                       cg_dtype_name(t->dtype));
    t->requires_grad = requires_grad != 0;
    return CG_OK;
}

cg_status cg_tensor_set_grad(cg_tensor *t, cg_tensor *grad) {
    CG_CHECK_TA(t);
    if (grad) {
        if (grad == t) return cg__err(CG_ERR_VALUE, "a tensor cannot be its own grad");
        if (!grad->layout && cg__dev(grad) != cg__dev(t))
            return cg__err(CG_ERR_VALUE, "assigned grad is on device '%s' but the tensor is on '%s'",
                           cg_device_name(cg__dev(grad)), cg_device_name(cg__dev(t)));
        if (!cg__same_shape(t, grad)) {
            char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
            return cg__err(CG_ERR_SHAPE, "assigned grad has shape %s but the tensor has shape %s",
                           cg__shape_str(grad->ndim, grad->shape, b1, sizeof b1),
                           cg__shape_str(t->ndim, t->shape, b2, sizeof b2));
        }
        if (grad->dtype != t->dtype)
            return cg__err(CG_ERR_DTYPE, "assigned grad has dtype %s but the tensor has dtype %s",
                           cg_dtype_name(grad->dtype), cg_dtype_name(t->dtype));
        cg_tensor_retain(grad);
    }
    cg_tensor *old = t->grad;
    t->grad = grad;
    cg_tensor_free(old);
    return CG_OK;
}

cg_status cg_tensor_set_data(cg_tensor *t, cg_tensor *src) {
    CG_CHECK_TA(t);
    CG_CHECK_TA(src);
    if (t->grad_fn)
        return cg__err(CG_ERR_AUTOGRAD, "set_data: only a leaf tensor's data can be replaced (this one "
                                        "was produced by '%s')", cg__node_name(t->grad_fn));
    if (t->requires_grad && !cg__is_float(src->dtype))
        return cg__err(CG_ERR_DTYPE, "set_data: a tensor that requires grad needs floating data, got %s",
                       cg_dtype_name(src->dtype));
    if (t == src) return CG_OK;
    cg_storage *old = t->storage;
    ++src->storage->refcount;
    t->storage = src->storage;
    t->dtype = src->dtype;
    t->ndim = src->ndim;
    memcpy(t->shape, src->shape, sizeof t->shape);
    memcpy(t->strides, src->strides, sizeof t->strides);
    t->offset = src->offset;
    t->numel = src->numel;
    if (t->grad && (!cg__same_shape(t, t->grad) || t->grad->dtype != t->dtype ||
                    (!t->grad->layout && cg__dev(t->grad) != cg__dev(t)))) {
        cg_tensor_free(t->grad);
        t->grad = NULL;
    }
    storage_decref(old);
    return CG_OK;
}

cg_status cg_detach(cg_tensor *t, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TSD(t);
    if (t->layout) /* a new header over the same parts */
        return cg__sparse_make(t->sp_indices, t->sp_values, t->shape[0], t->sp_coalesced, out);
    return cg__view(t, t->ndim, t->shape, t->strides, t->offset, out);
}
