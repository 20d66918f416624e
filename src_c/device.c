/* device.c -- the backend registry, device tensors and the copy between
 * devices. A device tensor is an ordinary tensor header (shape, strides,
 * offset, autograd links) over a storage whose memory is a backend buffer:
 * every op keeps its shape logic and tape recording, and only the loop over
 * the elements becomes a call of the backend's named kernel. */
#include "cg_internal.h"

typedef struct backend_slot {
    char name[32];
    cg_backend vt;
    void *ctx;
} backend_slot;

static backend_slot backends[CG_MAX_DEVICES]; /* slot 0 unused: the host */
static int n_backends = 1;

static const backend_slot *slot_of(int device) {
    return (device > 0 && device < n_backends) ? &backends[device] : NULL;
}

cg_status cg_backend_register(const char *name, const cg_backend *vt, void *ctx, int *device) {
    if (!name || !vt || !device) return cg__err(CG_ERR_NULL, "cg_backend_register: NULL argument");
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof backends[0].name || strcmp(name, "cpu") == 0)
        return cg__err(CG_ERR_VALUE, "cg_backend_register: '%s' is not a valid device name", name);
    if (!vt->alloc || !vt->release || !vt->kernel || !vt->to_host || !vt->from_host)
        return cg__err(CG_ERR_NULL, "cg_backend_register: device '%s': every vtable entry is required", name);
    int id = 0;
    for (int i = 1; i < n_backends; ++i)
        if (strcmp(backends[i].name, name) == 0) id = i;
    if (!id) {
        if (n_backends >= CG_MAX_DEVICES)
            return cg__err(CG_ERR_VALUE, "cg_backend_register: at most %d devices", CG_MAX_DEVICES - 1);
        id = n_backends++;
        memcpy(backends[id].name, name, n + 1);
    }
    backends[id].vt = *vt;
    backends[id].ctx = ctx;
    *device = id;
    return CG_OK;
}

cg_status cg_device_find(const char *name, int *device) {
    if (!name || !device) return cg__err(CG_ERR_NULL, "cg_device_find: NULL argument");
    if (strcmp(name, "cpu") == 0) {
        *device = CG_DEVICE_CPU;
        return CG_OK;
    }
    for (int i = 1; i < n_backends; ++i)
        if (strcmp(backends[i].name, name) == 0) {
            *device = i;
            return CG_OK;
        }
    return cg__err(CG_ERR_VALUE, "no device named '%s' is registered", name);
}

const char *cg_device_name(int device) {
    if (device == CG_DEVICE_CPU) return "cpu";
    const backend_slot *b = slot_of(device);
    return b ? b->name : NULL;
}

int cg_tensor_device(const cg_tensor *t) { return (t && t->storage) ? t->storage->device : 0; }
void *cg_tensor_device_handle(const cg_tensor *t) {
    return (t && t->storage && t->storage->device) ? t->storage->handle : NULL;
}
int64_t cg_tensor_offset(const cg_tensor *t) { return t ? t->offset : 0; }

const char *cg__device_label(int device) {
    const char *n = cg_device_name(device);
    return n ? n : "?";
}

cg_status cg__device_refused(const char *fn, const char *arg, const cg_tensor *t) {
    return cg__err(CG_ERR_UNSUPPORTED, "%s: not supported on device '%s' yet (argument '%s'); "
                                       "move the tensor to the cpu first",
                   fn, cg__device_label(cg__dev(t)), arg);
}

/* As in PyTorch, a 0-d host tensor may join tensors of any device (it is a
 * scalar): backends accept host 0-d inputs. */
cg_status cg__half_refused(const char *fn, const char *arg) {
    return cg__err(CG_ERR_DTYPE, "%s: argument '%s' is float16, which computes on a device only; on the cpu "
                                 "it is a storage type (move the tensor to 'cuda', or convert it with "
                                 ".float() first)", fn, arg);
}

cg_status cg__same_device(const char *fn, int n, cg_tensor *const *ts, int *device) {
    int d = -1, first = -1;
    for (int i = 0; i < n; ++i) {
        if (!ts[i] || (ts[i]->ndim == 0 && cg__dev(ts[i]) == CG_DEVICE_CPU)) continue;
        int di = cg__dev(ts[i]);
        if (d < 0) {
            d = di;
            first = i;
        } else if (di != d) {
            return cg__err(CG_ERR_VALUE, "%s: expected all tensors on one device, but argument %d is on '%s' "
                                         "and argument %d on '%s'",
                           fn, first, cg__device_label(d), i, cg__device_label(di));
        }
    }
    if (device) *device = d < 0 ? 0 : d;
    return CG_OK;
}

cg_status cg__kernel(int device, const char *name, int n_out, int n_tensors, cg_tensor *const *ts,
                     int n_f, const double *f, int n_i, const int64_t *ip) {
    const backend_slot *b = slot_of(device);
    if (!b) return cg__err(CG_ERR_VALUE, "kernel '%s': device %d has no backend", name, device);
    cg_clear_error();
    cg_status st = b->vt.kernel(b->ctx, name, n_out, n_tensors, ts, n_f, f, n_i, ip);
    if (st && cg_last_error()[0] == '\0') {
        if (st == CG_ERR_UNSUPPORTED)
            return cg__err(st, "'%s' is not supported on device '%s'", name, b->name);
        return cg__err(st, "kernel '%s' failed on device '%s' (%s)", name, b->name, cg_status_name(st));
    }
    return st;
}

cg_status cg__scalar_like(const cg_tensor *like, cg_dtype dt, double value, cg_tensor **out) {
    if (dt != CG_FLOAT16 || !cg__dev(like)) return cg_scalar(dt, value, out);
    cg_tensor *s;
    CG_TRY(cg__new_on(cg__dev(like), dt, 0, NULL, 0, &s));
    cg_status st = cg__kernel(cg__dev(like), "fill_", 1, 1, &s, 1, &value, 0, NULL);
    if (st) {
        cg_tensor_free(s);
        return st;
    }
    *out = s;
    return CG_OK;
}

void cg__device_release(int device, void *handle) {
    const backend_slot *b = slot_of(device);
    if (b) b->vt.release(b->ctx, handle);
}

/* A storage over a backend buffer (the handle reference is taken over). */
static cg_status storage_on(int device, void *handle, size_t nbytes, cg_storage **out) {
    cg_storage *s = (cg_storage *)calloc(1, sizeof *s);
    if (!s) {
        cg__device_release(device, handle);
        return cg__err(CG_ERR_NOMEM, "device storage: out of memory");
    }
    s->refcount = 1;
    s->nbytes = nbytes;
    s->device = device;
    s->handle = handle;
    *out = s;
    return CG_OK;
}

cg_status cg__device_alloc(int device, size_t nbytes, int zero, cg_storage **out) {
    const backend_slot *b = slot_of(device);
    if (!b) return cg__err(CG_ERR_VALUE, "no device with id %d is registered", device);
    void *h = NULL;
    cg_clear_error();
    cg_status st = b->vt.alloc(b->ctx, nbytes, zero, &h);
    if (!st && !h) st = cg__err(CG_ERR_CALLBACK, "device '%s': alloc returned no buffer", b->name);
    if (st) {
        if (cg_last_error()[0] == '\0') cg__err(st, "cannot allocate %zu bytes on device '%s'", nbytes, b->name);
        return st;
    }
    return storage_on(device, h, nbytes, out);
}

cg_status cg_empty_on(int device, cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    return cg__new_on(device, dtype, ndim, shape, 0, out);
}

cg_status cg_zeros_on(int device, cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    return cg__new_on(device, dtype, ndim, shape, 1, out);
}

cg_status cg_from_handle(int device, cg_dtype dtype, int ndim, const int64_t *shape,
                         const int64_t *strides, int64_t offset, void *handle, size_t nbytes,
                         cg_tensor **out) {
    if (!out) {
        cg__device_release(device, handle);
        return cg__err(CG_ERR_NULL, "cg_from_handle: out pointer is NULL");
    }
    *out = NULL;
    cg_status st = CG_OK;
    if (!slot_of(device)) st = cg__err(CG_ERR_VALUE, "cg_from_handle: no device with id %d is registered", device);
    else if (!handle) st = cg__err(CG_ERR_NULL, "cg_from_handle: handle is NULL");
    else if (!cg__valid_dtype(dtype)) st = cg__err(CG_ERR_DTYPE, "cg_from_handle: invalid dtype %d", (int)dtype);
    else st = cg__check_shape_arg("cg_from_handle", ndim, shape);
    int64_t lo = offset, hi = offset, numel = 1; /* element span the view touches */
    int64_t cst[CG_MAX_DIMS];
    if (!st) {
        cg__contig_strides(ndim, shape, cst);
        for (int d = 0; d < ndim && !st; ++d) {
            if (shape[d] < 0) st = cg__err(CG_ERR_VALUE, "cg_from_handle: negative size %lld", (long long)shape[d]);
            numel *= shape[d];
        }
        if (!st && numel > 0)
            for (int d = 0; d < ndim; ++d) {
                int64_t s = strides ? strides[d] : cst[d];
                if (s >= 0) hi += s * (shape[d] - 1);
                else lo += s * (shape[d] - 1);
            }
        size_t es = cg_dtype_size(dtype);
        if (!st && numel > 0 && (offset < 0 || lo < 0 || (size_t)(hi + 1) * es > nbytes))
            st = cg__err(CG_ERR_VALUE, "cg_from_handle: the view (offset %lld, elements %lld..%lld) lies outside "
                                       "the buffer of %zu bytes", (long long)offset, (long long)lo,
                         (long long)hi, nbytes);
    }
    if (st) {
        cg__device_release(device, handle);
        return st;
    }
    cg_storage *s = NULL;
    CG_TRY(storage_on(device, handle, nbytes, &s));
    return cg__tensor_over(s, dtype, ndim, shape, strides, offset, out);
}

cg_status cg__device_to_host(const cg_tensor *t, void *dst) {
    const backend_slot *b = slot_of(cg__dev(t));
    if (!b) return cg__err(CG_ERR_VALUE, "tensor on an unregistered device");
    if (!t->numel) return CG_OK;
    cg_clear_error();
    cg_status st = b->vt.to_host(b->ctx, t, dst);
    if (st && cg_last_error()[0] == '\0') cg__err(st, "copy from device '%s' to the host failed", b->name);
    return st;
}

cg_status cg__device_from_host(cg_tensor *t, const void *src) {
    const backend_slot *b = slot_of(cg__dev(t));
    if (!b) return cg__err(CG_ERR_VALUE, "tensor on an unregistered device");
    if (!t->numel) return CG_OK;
    cg_clear_error();
    cg_status st = b->vt.from_host(b->ctx, t, src);
    if (st && cg_last_error()[0] == '\0') cg__err(st, "copy from the host to device '%s' failed", b->name);
    return st;
}

/* dst and src have the same shape; either is on a device. */
cg_status cg__device_copy(cg_tensor *dst, const cg_tensor *src) {
    int dd = cg__dev(dst), sd = cg__dev(src);
    if (dd == sd) {
        cg_tensor *ts[2] = {dst, (cg_tensor *)src};
        return cg__kernel(dd, "copy", 1, 2, ts, 0, NULL, 0, NULL);
    }
    cg_tensor *h = NULL, *tmp = NULL;
    cg_status st;
    if (sd == CG_DEVICE_CPU) { /* host -> device: a contiguous host copy in dst's dtype */
        st = cg__new(dst->dtype, dst->ndim, dst->shape, 0, &h);
        if (!st) st = cg__copy_elems(h, src);
        if (!st && cg__is_contig(dst)) {
            st = cg__device_from_host(dst, cg__ptr(h));
        } else if (!st) {
            st = cg__new_on(dd, dst->dtype, dst->ndim, dst->shape, 0, &tmp);
            if (!st) st = cg__device_from_host(tmp, cg__ptr(h));
            if (!st) st = cg__device_copy(dst, tmp);
        }
    } else if (dd == CG_DEVICE_CPU) { /* device -> host, in src's dtype, then cast on the host */
        st = cg__new(src->dtype, src->ndim, src->shape, 0, &h);
        if (!st) st = cg__device_to_host(src, cg__ptr(h));
        if (!st) st = cg__copy_elems(dst, h);
    } else { /* device -> device: through the host */
        st = cg__new(src->dtype, src->ndim, src->shape, 0, &h);
        if (!st) st = cg__device_to_host(src, cg__ptr(h));
        if (!st) st = cg__device_copy(dst, h);
    }
    cg_tensor_free(h);
    cg_tensor_free(tmp);
    return st;
}

/* ------------------------------------------------------------ to_device */
/* A row-sparse gradient moves back row-sparse (its parts moved), as a
 * weight gets it when nothing moves it. */
static cg_status to_device_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return cg_to_device(gout[0], (int)node->iparam[0], &gin[0]);
}
static const cg_op OP_TO_DEVICE = {"to_device", to_device_backward};

int cg__op_takes_sparse_grads(const cg_op *op) { return op == &OP_TO_DEVICE; }

/* A row-sparse tensor's parts moved to device (no history: sparse tensors
 * never require grad). */
static cg_status sparse_to_device(cg_tensor *t, int device, cg_tensor **out) {
    cg_tensor *ni = NULL, *nv = NULL;
    cg_status st = cg_to_device(t->sp_indices, device, &ni);
    if (!st) st = cg_to_device(t->sp_values, device, &nv);
    if (!st) st = cg__sparse_make(ni, nv, t->shape[0], t->sp_coalesced, out);
    cg_tensor_free(ni);
    cg_tensor_free(nv);
    return st;
}

/* Notes the range of the int64 values of host tensor h, just uploaded into
 * the fresh device tensor d (a non-contiguous h is not scanned: nothing is
 * noted). One pass over what the upload read anyway. */
static void note_int64_range(cg_tensor *d, const cg_tensor *h) {
    if (h->dtype != CG_INT64 || !cg__is_contig(h)) return;
    const int64_t *v = (const int64_t *)cg__ptr(h);
    int64_t lo = INT64_MAX, hi = INT64_MIN, max_neg = 0;
    for (int64_t k = 0; k < h->numel; ++k) {
        const int64_t x = v[k];
        if (x < lo) lo = x;
        if (x > hi) hi = x;
        if (x < 0 && (max_neg == 0 || x > max_neg)) max_neg = x;
    }
    cg_storage *s = d->storage;
    s->range_min = lo;
    s->range_max = hi;
    s->range_max_neg = max_neg;
    s->range_version = s->version;
    s->has_range = 1;
}

int cg__int64_known_within(const cg_tensor *t, int64_t n, int64_t except) {
    const cg_storage *s = t->storage;
    if (t->dtype != CG_INT64 || !s->has_range || s->range_version != s->version) return 0;
    if (s->range_max >= n) return 0;
    /* no negative value, or every negative one is `except` */
    return s->range_min >= 0 || (s->range_min == except && s->range_max_neg == except);
}

cg_status cg_to_device(cg_tensor *t, int device, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TSD(t);
    if (device != CG_DEVICE_CPU && !slot_of(device))
        return cg__err(CG_ERR_VALUE, "cg_to_device: no device with id %d is registered", device);
    if (cg__dev(t) == device) {
        cg_tensor_retain(t);
        *out = t;
        return CG_OK;
    }
    if (t->layout) return sparse_to_device(t, device, out);
    cg_tensor *r;
    CG_TRY(cg__new_on(device, t->dtype, t->ndim, t->shape, 0, &r));
    cg_status st = cg__copy_elems(r, t);
    if (!st && device != CG_DEVICE_CPU && !cg__dev(t)) note_int64_range(r, t);
    if (!st && cg__wants_grad1(t)) {
        cg_node *node;
        st = cg__record(&OP_TO_DEVICE, 1, &t, 1, &r, &node);
        if (!st) {
            node->iparam[0] = cg__dev(t);
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

cg_status cg__host_contig(cg_tensor *t, cg_tensor **out) {
    if (!cg__dev(t)) return cg__contig(t, out);
    CG_TRY(cg__new(t->dtype, t->ndim, t->shape, 0, out));
    cg_status st = cg__copy_elems(*out, t);
    if (st) {
        cg_tensor_free(*out);
        *out = NULL;
    }
    return st;
}
