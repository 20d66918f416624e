# Device backends: the C core's cg_backend vtable filled with calls into a
# Python backend object (cgrad/backends/xp.py). The core keeps shapes, dtype
# promotion and the tape; the backend owns the buffers (Python objects, one
# reference held per C storage) and runs each named kernel on array views.

from cpython.ref cimport Py_XDECREF

cdef dict _device_backends = {}   # device id -> backend object (kept alive)
cdef cg_backend _backend_vtable

cdef object _np_scalar(cg_tensor *t):
    """A 0-d host tensor as a NumPy scalar (a scalar joining device tensors)."""
    cdef int code = cg_tensor_dtype(t)
    cdef void *p = cg_tensor_data(t)
    if code == CG_FLOAT32:
        return np.float32((<float *>p)[0])
    if code == CG_FLOAT64:
        return np.float64((<double *>p)[0])
    if code == CG_INT64:
        return np.int64((<int64_t *>p)[0])
    if code == CG_FLOAT16:
        return np.array([(<uint16_t *>p)[0]], dtype=np.uint16).view(np.float16)[0]
    return np.bool_((<unsigned char *>p)[0] != 0)

cdef object _device_view(object be, cg_tensor *t):
    if cg_tensor_is_sparse(t):  # its header's storage is empty: kernels take its parts
        raise TypeError("a row-sparse tensor reached a device kernel; device kernels take dense "
                        "tensors (pass its indices() and values(), or to_dense() it)")
    if cg_tensor_device(t) == CG_DEVICE_CPU:
        if cg_tensor_ndim(t) != 0:
            raise RuntimeError("a host tensor with dims reached a device kernel")
        return _np_scalar(t)
    cdef int i, n = cg_tensor_ndim(t)
    cdef const int64_t *sh = cg_tensor_shape(t)
    cdef const int64_t *st = cg_tensor_strides(t)
    cdef int code = cg_tensor_dtype(t)
    cdef int64_t isz = cg_dtype_size(<cg_dtype>code)
    return be.view(<object>cg_tensor_device_handle(t), code,
                   tuple([sh[i] for i in range(n)]), tuple([st[i] * isz for i in range(n)]),
                   cg_tensor_offset(t) * isz)

cdef cg_status _be_alloc(void *ctx, size_t nbytes, int zero, void **handle) noexcept with gil:
    try:
        buf = (<object>ctx).alloc(nbytes, bool(zero))
    except MemoryError as e:
        cg_set_error(CG_ERR_NOMEM, f"cannot allocate {nbytes} bytes on the device: {e}".encode())
        return CG_ERR_NOMEM
    except BaseException as e:
        return _stash_callback_error(e, "device allocation")
    Py_INCREF(buf)
    handle[0] = <void *>buf
    return CG_OK

cdef void _be_release(void *ctx, void *handle) noexcept with gil:
    try:
        (<object>ctx).free(<object>handle)
    except BaseException:
        pass  # accounting only; the buffer is released below either way
    Py_DECREF(<object>handle)

cdef cg_status _be_kernel(void *ctx, const char *name, int n_out, int n_tensors, cg_tensor * const *ts,
                          int n_f, const double *f, int n_i, const int64_t *ip) noexcept with gil:
    be = <object>ctx
    cdef int k
    try:
        arrays = [_device_view(be, ts[k]) for k in range(n_tensors)]
        be.run(name.decode(), n_out, arrays, [f[k] for k in range(n_f)], [ip[k] for k in range(n_i)])
    except NotImplementedError as e:
        cg_set_error(CG_ERR_UNSUPPORTED, str(e).encode("utf-8", "replace"))
        return CG_ERR_UNSUPPORTED
    except BaseException as e:
        return _stash_callback_error(e, f"device kernel '{name.decode()}'")
    return CG_OK

cdef object _host_array(void *p, const cg_tensor *t):
    cdef int n = cg_tensor_ndim(t)
    cdef const int64_t *sh = cg_tensor_shape(t)
    cdef int code = cg_tensor_dtype(t)
    cdef size_t nbytes = <size_t>cg_tensor_numel(t) * cg_dtype_size(<cg_dtype>code)
    cdef unsigned char[::1] mv = <unsigned char[:nbytes]><unsigned char *>p
    return np.asarray(mv).view(_CODE_TO_NP[code]).reshape(tuple([sh[i] for i in range(n)]))

cdef cg_status _be_to_host(void *ctx, const cg_tensor *t, void *dst) noexcept with gil:
    be = <object>ctx
    try:
        be.to_host(_device_view(be, <cg_tensor *>t), _host_array(dst, t))
    except BaseException as e:
        return _stash_callback_error(e, "copy from the device")
    return CG_OK

cdef cg_status _be_from_host(void *ctx, cg_tensor *t, const void *src) noexcept with gil:
    be = <object>ctx
    try:
        be.from_host(_device_view(be, t), _host_array(<void *>src, t))
    except BaseException as e:
        return _stash_callback_error(e, "copy to the device")
    return CG_OK

def _register_device(str name, object backend):
    """Makes backend the kernels of device `name`; returns the device id."""
    cdef int dev = 0
    _backend_vtable.alloc = _be_alloc
    _backend_vtable.release = _be_release
    _backend_vtable.kernel = _be_kernel
    _backend_vtable.to_host = _be_to_host
    _backend_vtable.from_host = _be_from_host
    bname = name.encode()
    _check(cg_backend_register(bname, &_backend_vtable, <void *>backend, &dev))
    _device_backends[dev] = backend  # the C registry borrows it
    return dev

cdef int _device_id(object device) except -1:
    """The C device id of a device spec ('cpu', 'cuda', 'cuda:0', device)."""
    spec = str(device)
    kind, _, index = spec.partition(":")
    if index not in ("", "0"):
        raise ValueError(f"device {spec!r}: only index 0 is supported")
    if kind == "cpu":
        return CG_DEVICE_CPU
    if kind != "cuda":
        raise ValueError(f"unknown device {spec!r}; expected 'cpu' or 'cuda'")
    cdef int dev = 0
    if cg_device_find(b"cuda", &dev) != CG_OK:
        from cgrad import cuda as _cuda
        _cuda._init()  # raises a RuntimeError that says why CUDA is unavailable
        _check(cg_device_find(b"cuda", &dev))
    return dev

cdef object _device_of(cg_tensor *t):
    cdef int dev = cg_tensor_device(t)
    if dev == CG_DEVICE_CPU:
        return _CPU
    return _DeviceCls(cg_device_name(dev).decode(), 0)

cdef Tensor _to_device(Tensor x, object device):
    cdef int dev = _device_id(device)
    cdef cg_tensor *r = NULL
    cdef cg_status st
    with nogil:
        st = cg_to_device(x.c, dev, &r)
    _check(st)
    return _wrap(r)

cdef Tensor _from_device_array(object arr, object be, int dev):
    """Zero-copy wrap of a backend array (CuPy, or NumPy on the reference)."""
    if arr.dtype not in _NP_TO_CODE:
        raise TypeError(f"unsupported dtype {arr.dtype}; supported: float32, float64, int64, bool")
    if arr.ndim > CG_MAX_DIMS:
        raise ValueError(f"at most {CG_MAX_DIMS} dims are supported, got {arr.ndim}")
    buf, strides = be.wrap(arr)
    cdef int64_t shape_c[8]
    cdef int64_t strides_c[8]
    cdef int i, n = arr.ndim
    for i in range(n):
        shape_c[i] = arr.shape[i]
        strides_c[i] = strides[i]
    cdef cg_tensor *t = NULL
    be.track(buf)  # counted while the tensor (or an export of it) keeps the view
    Py_INCREF(buf)
    _check(cg_from_handle(dev, <cg_dtype>_NP_TO_CODE[arr.dtype], n, shape_c, strides_c, 0,
                          <void *>buf, buf.nbytes, &t))
    return _wrap(t)

cdef object _device_backend(cg_tensor *t):
    return _device_backends[cg_tensor_device(t)]

cdef object _device_array(Tensor x):
    """The backend array viewing a device tensor (no copy)."""
    return _device_view(_device_backend(x.c), x.c)
