# Device backends: the C core's cg_backend vtable filled with calls into a
# Python backend object (cgrad/backends/xp.py). The core keeps shapes, dtype
# promotion and the tape; the backend owns the buffers (Python objects, one
# reference held per C storage) and runs each named kernel on array views.

from cpython.ref cimport Py_XDECREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM

cdef dict _device_backends = {}   # device id -> backend object (kept alive)
cdef dict _device_dispatch = {}   # device id -> its _DeviceDispatch (the vtable's ctx, kept alive)
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

cdef class _DeviceDispatch:
    """What the vtable calls need of a device's backend object, looked up
    once at registration (a kernel call then costs no attribute lookups): the
    backend, its kernel table (the live dict, so a kernel replaced there is
    the one called), its view constructor and its kernel call wrapper."""
    cdef object be
    cdef dict kernels
    cdef object make_view  # (shape, dtype, buffer, byte offset, byte strides or None) -> array
    cdef object invoke     # None: kernels are called as they are; else invoke(kernel, out, ins, f, i)

    def __init__(self, be):
        self.be = be
        self.kernels = be.kernels
        self.make_view = be.make_view
        self.invoke = be.invoke

cdef tuple _int_tuple(int n, const int64_t *v, int64_t scale):
    """(v[0] * scale, ..., v[n-1] * scale), built in place."""
    cdef tuple r = PyTuple_New(n)
    cdef int i
    cdef object x  # an object: SET_ITEM steals the reference taken here
    for i in range(n):
        x = v[i] * scale
        Py_INCREF(x)
        PyTuple_SET_ITEM(r, i, x)
    return r

cdef object _device_view(_DeviceDispatch dv, cg_tensor *t):
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
    cdef int64_t row = 1
    for i in range(n - 1, -1, -1):  # row-major with no empty dim: the constructor's default strides
        if st[i] != row or sh[i] == 0:
            row = -1
            break
        row *= sh[i]
    strides = None if row >= 0 else _int_tuple(n, st, isz)
    return dv.make_view(_int_tuple(n, sh, 1), _CODE_TO_NP[code], <object>cg_tensor_device_handle(t),
                        cg_tensor_offset(t) * isz, strides)

cdef cg_status _be_alloc(void *ctx, size_t nbytes, int zero, void **handle) noexcept with gil:
    try:
        buf = (<_DeviceDispatch>ctx).be.alloc(nbytes, bool(zero))
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
        (<_DeviceDispatch>ctx).be.free(<object>handle)
    except BaseException:
        pass  # accounting only; the buffer is released below either way
    Py_DECREF(<object>handle)

cdef cg_status _be_kernel(void *ctx, const char *name, int n_out, int n_tensors, cg_tensor * const *ts,
                          int n_f, const double *f, int n_i, const int64_t *ip) noexcept with gil:
    cdef _DeviceDispatch dv = <_DeviceDispatch>ctx
    cdef int k
    try:
        kname = name.decode()
        kernel = dv.kernels.get(kname)
        out = [_device_view(dv, ts[k]) for k in range(n_out)]
        ins = [_device_view(dv, ts[k]) for k in range(n_out, n_tensors)]
        fs = [f[k] for k in range(n_f)]
        iv = [ip[k] for k in range(n_i)]
        if kernel is None:  # run() says that the device lacks it
            dv.be.run(kname, n_out, out + ins, fs, iv)
        elif dv.invoke is None:
            kernel(out, ins, fs, iv)
        else:
            dv.invoke(kernel, out, ins, fs, iv)
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
    cdef _DeviceDispatch dv = <_DeviceDispatch>ctx
    try:
        dv.be.to_host(_device_view(dv, <cg_tensor *>t), _host_array(dst, t))
    except BaseException as e:
        return _stash_callback_error(e, "copy from the device")
    return CG_OK

cdef cg_status _be_from_host(void *ctx, cg_tensor *t, const void *src) noexcept with gil:
    cdef _DeviceDispatch dv = <_DeviceDispatch>ctx
    try:
        dv.be.from_host(_device_view(dv, t), _host_array(<void *>src, t))
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
    dispatch = _DeviceDispatch(backend)
    _check(cg_backend_register(bname, &_backend_vtable, <void *>dispatch, &dev))
    _device_backends[dev] = backend
    _device_dispatch[dev] = dispatch  # the C registry borrows it
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
    return _device_view(_device_dispatch[cg_tensor_device(x.c)], x.c)
