# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True
"""The Tensor type over the C core: creation, operators, autograd entry points.

Every C call returns a cg_status; _check() turns a failure into the Python
exception that matches it, with the C message. Large kernels run without the
GIL; tiny ones keep it (releasing costs more than the work)."""

from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_GetName
from libc.stdint cimport int64_t, uint16_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.math cimport INFINITY

from cgrad._cgrad cimport *

import collections
import numpy as np
from cgrad._devices import device as _DeviceCls

_CPU = _DeviceCls("cpu")

# ------------------------------------------------------------------ errors
cdef object _EXC = {
    CG_ERR_NULL: ValueError,
    CG_ERR_SHAPE: ValueError,
    CG_ERR_DTYPE: TypeError,
    CG_ERR_INDEX: IndexError,
    CG_ERR_VALUE: ValueError,
    CG_ERR_NOMEM: MemoryError,
    CG_ERR_AUTOGRAD: RuntimeError,
    CG_ERR_UNSUPPORTED: NotImplementedError,
    CG_ERR_CALLBACK: RuntimeError,
}

# An exception raised by a Python callback (hook, custom backward) while C
# code was running: the callback stores it here and returns CG_ERR_CALLBACK,
# and _raise re-raises the original exception once control is back.
cdef object _callback_error = None

cdef cg_status _stash_callback_error(object exc, str where) noexcept:
    global _callback_error
    _callback_error = exc
    msg = f"{where}: {type(exc).__name__}: {exc}"
    cg_set_error(CG_ERR_CALLBACK, msg.encode("utf-8", "replace"))
    return CG_ERR_CALLBACK

cdef int _raise(cg_status st) except -1:
    global _callback_error
    if st == CG_ERR_CALLBACK and _callback_error is not None:
        exc = _callback_error
        _callback_error = None
        raise exc
    msg = cg_last_error().decode("utf-8", "replace")
    exc = _EXC.get(st, RuntimeError)
    raise exc(msg or cg_status_name(st).decode())

cdef inline int _check(cg_status st) except -1:
    if st != CG_OK:
        _raise(st)
    return 0

# Elements above which a kernel runs without the GIL.
DEF NOGIL_MIN = 32768

# ------------------------------------------------------------------ dtypes
cdef class dtype:
    """Element type: cgrad.float32, float64, int64, bool, float16 (float16
    computes on 'cuda'; on the cpu it is a storage type)."""
    cdef readonly int code
    cdef readonly str name
    cdef readonly int itemsize
    cdef readonly bint is_floating_point

    def __repr__(self):
        return "cgrad." + self.name

    def __reduce__(self):
        return (_dtype_from_code, (self.code,))

float32 = dtype.__new__(dtype)
float64 = dtype.__new__(dtype)
int64 = dtype.__new__(dtype)
bool_ = dtype.__new__(dtype)
float16 = dtype.__new__(dtype)
cdef list _DTYPES = [float32, float64, int64, bool_, float16]
for _code, _d in enumerate(_DTYPES):
    (<dtype>_d).code = _code
    (<dtype>_d).name = cg_dtype_name(<cg_dtype>_code).decode()
    (<dtype>_d).itemsize = cg_dtype_size(<cg_dtype>_code)
    (<dtype>_d).is_floating_point = _code in (CG_FLOAT32, CG_FLOAT64, CG_FLOAT16)

def _dtype_from_code(int code):
    return _DTYPES[code]

cdef dict _NP_TO_CODE = {
    np.dtype(np.float32): CG_FLOAT32,
    np.dtype(np.float64): CG_FLOAT64,
    np.dtype(np.int64): CG_INT64,
    np.dtype(np.bool_): CG_BOOL,
    np.dtype(np.float16): CG_FLOAT16,
}
cdef list _CODE_TO_NP = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64),
                         np.dtype(np.bool_), np.dtype(np.float16)]
cdef list _TYPESTR = ["<f4", "<f8", "<i8", "|b1", "<f2"]

cdef _default_float = float32

def set_default_dtype(d):
    """Dtype given to Python floats (float32 unless changed)."""
    global _default_float
    if d is not float32 and d is not float64:
        raise TypeError(f"default dtype must be cgrad.float32 or cgrad.float64, got {d!r}")
    _default_float = d

def get_default_dtype():
    return _default_float

cdef int _dtype_code(object d) except -1:
    if isinstance(d, dtype):
        return (<dtype>d).code
    if d is float:
        return (<dtype>_default_float).code
    if d is int:
        return CG_INT64
    if d is bool:
        return CG_BOOL
    try:
        nd = np.dtype(d)
    except Exception:
        raise TypeError(f"unsupported dtype {d!r}; use cgrad.float32, float64, float16, int64 or bool")
    if nd in _NP_TO_CODE:
        return _NP_TO_CODE[nd]
    raise TypeError(f"unsupported dtype {d!r}; use cgrad.float32, float64, float16, int64 or bool")

# ------------------------------------------------------------------ helpers
cdef inline Tensor _wrap(cg_tensor *t):
    cdef Tensor r = Tensor.__new__(Tensor)
    r.c = t
    return r

cdef int _fill_shape(object shape, int64_t *out) except -1:
    """Writes a shape tuple into out; returns ndim."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    cdef int n = len(shape)
    if n > CG_MAX_DIMS:
        raise ValueError(f"at most {CG_MAX_DIMS} dims are supported, got shape {tuple(shape)}")
    cdef int i
    for i in range(n):
        s = shape[i]
        if not isinstance(s, (int, np.integer)):
            raise TypeError(f"shape entries must be ints, got {s!r} in {tuple(shape)}")
        out[i] = s
    return n

cdef tuple _shape_args(tuple args):
    """f(2, 3) and f((2, 3)) both mean shape (2, 3)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return args

cdef int _fill_dims(object dim, int *out) except -2:
    """dim None -> 0 (all dims), int -> 1, tuple -> len."""
    if dim is None:
        return 0
    if isinstance(dim, (int, np.integer)):
        out[0] = dim
        return 1
    dims = tuple(dim)
    if len(dims) > CG_MAX_DIMS:
        raise IndexError(f"too many dims: {dims}")
    if len(dims) == 0:
        return 0
    cdef int i
    for i in range(len(dims)):
        out[i] = dims[i]
    return len(dims)

cdef void _release_pyobj(void *ctx) noexcept with gil:
    Py_DECREF(<object>ctx)

cdef Tensor _from_numpy(object arr):
    """Zero-copy wrap of a NumPy array (kept alive by the storage)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(arr).__name__}")
    nd = arr.dtype
    if nd not in _NP_TO_CODE:
        raise TypeError(f"from_numpy: unsupported numpy dtype {nd}; supported: float32, float64, int64, bool")
    if not nd.isnative:
        raise TypeError(f"from_numpy: non-native byte order {nd.str} is not supported")
    if arr.ndim > CG_MAX_DIMS:
        raise ValueError(f"from_numpy: at most {CG_MAX_DIMS} dims are supported, got {arr.ndim}")
    if not arr.flags.writeable:
        raise ValueError("from_numpy: the array is read-only; pass a writeable array (e.g. arr.copy())")
    if not arr.flags.aligned:
        raise ValueError("from_numpy: the array's memory is not aligned to its item size; pass a copy")
    cdef int64_t shape[8]
    cdef int64_t strides[8]
    cdef int i, ndim = arr.ndim
    cdef int itemsize = nd.itemsize
    for i in range(ndim):
        shape[i] = arr.shape[i]
        if arr.strides[i] % itemsize != 0:
            raise ValueError(f"from_numpy: stride {arr.strides[i]} is not a multiple of the item size {itemsize}")
        strides[i] = arr.strides[i] // itemsize
    cdef uintptr_t ptr = arr.__array_interface__["data"][0]
    cdef cg_tensor *t = NULL
    Py_INCREF(arr)
    cdef cg_status st = cg_from_blob(<cg_dtype>_NP_TO_CODE[nd], ndim, shape, strides, <void *>ptr,
                                     _release_pyobj, <void *>arr, &t)
    if st != CG_OK:
        Py_DECREF(arr)
        _raise(st)
    return _wrap(t)

def from_numpy(arr):
    """Tensor sharing memory with a NumPy array (float32/float64/int64/bool)."""
    return _from_numpy(arr)

cdef object _to_numpy_input(object data, object dt):
    """Python data -> contiguous NumPy array of a supported dtype (a copy)."""
    if isinstance(data, Tensor):
        data = (<Tensor>data).detach().numpy()
    elif isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in data):
        data = [x.detach().numpy() if isinstance(x, Tensor) else x for x in data]
    is_np = isinstance(data, np.ndarray) or isinstance(data, np.generic)
    try:
        arr = np.array(data, copy=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot build a tensor from {type(data).__name__}: {e}") from None
    if arr.dtype == object or arr.dtype.kind in "USVOMmc":
        raise TypeError(f"cannot build a tensor from data of numpy dtype {arr.dtype}")
    if dt is not None:
        target = _CODE_TO_NP[_dtype_code(dt)]
    elif arr.dtype.kind == "f":
        if is_np:
            target = (np.dtype(np.float64) if arr.dtype.itemsize >= 8 else
                      np.dtype(np.float16) if arr.dtype.itemsize == 2 else np.dtype(np.float32))
        else:
            target = _CODE_TO_NP[(<dtype>_default_float).code]
    elif arr.dtype.kind in "iu":
        target = np.dtype(np.int64)
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"value {int(arr.max())} does not fit in int64")
    elif arr.dtype.kind == "b":
        target = np.dtype(np.bool_)
    else:
        raise TypeError(f"cannot build a tensor from data of numpy dtype {arr.dtype}")
    if arr.ndim > CG_MAX_DIMS:
        raise ValueError(f"at most {CG_MAX_DIMS} dims are supported, got {arr.ndim}")
    # (np.ascontiguousarray would turn a 0-d array into 1-d)
    return np.asarray(arr, dtype=target, order="C")

cdef Tensor _tensor_from_data(object data, object dt, bint requires_grad):
    arr = _to_numpy_input(data, dt)
    cdef int64_t shape[8]
    cdef int ndim = _fill_shape(arr.shape, shape)
    cdef cg_tensor *t = NULL
    cdef uintptr_t ptr = arr.__array_interface__["data"][0]
    _check(cg_from_data(<cg_dtype>_NP_TO_CODE[arr.dtype], ndim, shape, <void *>ptr, &t))
    cdef Tensor r = _wrap(t)
    if requires_grad:
        r.requires_grad_(True)
    return r

def tensor(data, dtype=None, requires_grad=False, device=None):
    """New tensor holding a copy of data (nested lists, scalars, arrays;
    a CuPy array or a tensor on 'cuda' is copied on the device)."""
    cdef Tensor t
    if device is None and isinstance(data, Tensor):
        device = (<Tensor>data).device
    if device is None and hasattr(data, "__cuda_array_interface__"):
        device = "cuda"
    if device is not None and _device_id(device) != CG_DEVICE_CPU:
        if isinstance(data, Tensor) or hasattr(data, "__dlpack_device__") and not isinstance(data, np.ndarray):
            t = from_dlpack(data.detach() if isinstance(data, Tensor) else data)
            t = t.to(device)
            t = t.to(dtype, copy=True) if dtype is not None else t.clone()
            if requires_grad:
                t.requires_grad_(True)
            return t
        t = _tensor_from_data(data, dtype, False).to(device)
        if requires_grad:
            t.requires_grad_(True)
        return t
    return _tensor_from_data(data, dtype, requires_grad)

def as_tensor(data, dtype=None, device=None):
    """Like tensor(), but shares memory when it can: a Tensor of the right
    dtype and device is returned as it is, a NumPy array on the cpu and a
    device array (CuPy on a GPU; NumPy on the reference device) on 'cuda'
    are wrapped without a copy."""
    cdef int dev
    if isinstance(data, Tensor):
        t = <Tensor>data
        if device is not None:
            t = t.to(device)
        return t if dtype is None else t.to(dtype)
    if device is not None and _device_id(device) != CG_DEVICE_CPU:
        dev = _device_id(device)
        be = _device_backends[dev]
        if be.is_native(data):
            t = _from_device_array(data, be, dev)
            return t if dtype is None else t.to(dtype)
        return tensor(data, dtype=dtype, device=device)
    if isinstance(data, np.ndarray) and (dtype is None or _CODE_TO_NP[_dtype_code(dtype)] == data.dtype):
        try:
            return _from_numpy(data)
        except (TypeError, ValueError):
            pass
    return tensor(data, dtype=dtype)

def from_dlpack(ext):
    """Tensor sharing memory with an object that speaks DLPack (NumPy, CuPy,
    PyTorch, JAX arrays; a capsule is not accepted). Host arrays land on the
    cpu, CUDA arrays on 'cuda', without a copy."""
    if isinstance(ext, Tensor):
        return ext
    if not hasattr(ext, "__dlpack_device__"):
        raise TypeError(f"from_dlpack expects an object with __dlpack__ and __dlpack_device__, "
                        f"got {type(ext).__name__}")
    kind, index = ext.__dlpack_device__()
    cdef int dev
    if kind == 1:  # kDLCPU
        return _from_numpy(np.from_dlpack(ext))
    if kind in (2, 13):  # kDLCUDA, kDLCUDAManaged
        if index != 0:
            raise ValueError(f"from_dlpack: only CUDA device 0 is supported, got device {index}")
        dev = _device_id("cuda")
        be = _device_backends[dev]
        return _from_device_array(be.from_dlpack(ext), be, dev)
    raise ValueError(f"from_dlpack: unsupported DLPack device type {kind}")

cdef Tensor _scalar_like(object value, Tensor ref):
    """0-d tensor for a Python number in an op with ref (PyTorch promotion)."""
    cdef int code = cg_tensor_dtype(ref.c)
    if isinstance(value, bool):
        if code == CG_BOOL:
            code = CG_BOOL
    elif isinstance(value, (int, np.integer)):
        if code == CG_BOOL:
            code = CG_INT64
    elif isinstance(value, (float, np.floating)):
        if code == CG_BOOL or code == CG_INT64:
            code = (<dtype>_default_float).code
    else:
        raise TypeError(f"unsupported operand type {type(value).__name__}")
    cdef cg_tensor *t = NULL
    cdef int dev = cg_tensor_device(ref.c)
    cdef cg_status st
    if code == CG_FLOAT16 and dev != CG_DEVICE_CPU:  # host float16 cannot be computed with
        _check(cg_empty_on(dev, CG_FLOAT16, 0, NULL, &t))
        st = cg_fill_(t, float(value))
        if st != CG_OK:
            cg_tensor_free(t)
            _raise(st)
        return _wrap(t)
    _check(cg_scalar(<cg_dtype>code, float(value), &t))
    return _wrap(t)

cdef Tensor _as_tensor(object x, Tensor ref):
    if isinstance(x, Tensor):
        return <Tensor>x
    if isinstance(x, (bool, int, float, np.integer, np.floating)):
        return _scalar_like(x, ref)
    if isinstance(x, (list, tuple, np.ndarray)):
        return _tensor_from_data(x, None, False)
    raise TypeError(f"expected a Tensor or a number, got {type(x).__name__}")

cdef inline bint _is_number(object x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)

ctypedef cg_status (*unary_fn)(cg_tensor *, cg_tensor **) noexcept nogil
ctypedef cg_status (*binary_fn)(cg_tensor *, cg_tensor *, cg_tensor **) noexcept nogil

cdef inline Tensor _unary(unary_fn f, Tensor a):
    cdef cg_tensor *r = NULL
    cdef cg_status st
    if cg_tensor_numel(a.c) >= NOGIL_MIN:
        with nogil:
            st = f(a.c, &r)
    else:
        st = f(a.c, &r)
    _check(st)
    return _wrap(r)

cdef inline Tensor _binary(binary_fn f, Tensor a, Tensor b):
    cdef cg_tensor *r = NULL
    cdef cg_status st
    if cg_tensor_numel(a.c) >= NOGIL_MIN or cg_tensor_numel(b.c) >= NOGIL_MIN:
        with nogil:
            st = f(a.c, b.c, &r)
    else:
        st = f(a.c, b.c, &r)
    _check(st)
    return _wrap(r)

cdef inline Tensor _scalar_op(cg_status (*f)(cg_tensor *, double, cg_tensor **) noexcept nogil,
                              Tensor a, double s):
    cdef cg_tensor *r = NULL
    cdef cg_status st
    if cg_tensor_numel(a.c) >= NOGIL_MIN:
        with nogil:
            st = f(a.c, s, &r)
    else:
        st = f(a.c, s, &r)
    _check(st)
    return _wrap(r)

cdef Tensor _logical(object a, object b, binary_fn f, str op):
    """a & b, a | b, a ^ b on bool tensors (bool Python values allowed)."""
    for v in (a, b):
        if isinstance(v, Tensor):
            if cg_tensor_dtype((<Tensor>v).c) != CG_BOOL:
                raise TypeError(f"{op} is supported on bool tensors only, got {v.dtype!r}")
        elif not isinstance(v, bool):
            raise TypeError(f"{op} is supported on bool tensors only, got {type(v).__name__}")
    return _binop(f, a, b)

cdef inline bint _float_tensor(Tensor a):
    cdef int d = cg_tensor_dtype(a.c)
    return d == CG_FLOAT32 or d == CG_FLOAT64 or d == CG_FLOAT16

cdef Tensor _binop(binary_fn f, object a, object b):
    """a op b where either side may be a Python number or array."""
    cdef Tensor ta, tb
    if isinstance(a, Tensor):
        ta = <Tensor>a
        tb = _as_tensor(b, ta)
    else:
        tb = <Tensor>b
        ta = _as_tensor(a, tb)
    return _binary(f, ta, tb)

MaxResult = collections.namedtuple("max", ["values", "indices"])
MinResult = collections.namedtuple("min", ["values", "indices"])

class GradFn:
    """The tape entry that produced a tensor (PyTorch's grad_fn)."""
    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name

    def __repr__(self):
        return f"<{self._name} backward>"


cdef class Tensor:
    """An n-d array on the tape: float32/float64 (differentiable), int64, bool."""
    cdef cg_tensor *c
    cdef object __weakref__
    # NumPy binary operators defer to ours (np.float64(2) * t -> t.__rmul__).
    __array_ufunc__ = None

    def __cinit__(self):
        self.c = NULL

    def __dealloc__(self):
        cg_tensor_free(self.c)
        self.c = NULL

    def __init__(self, *args, **kwargs):
        raise TypeError("create tensors with cgrad.tensor(...), cgrad.zeros(...), ...")

    # ------------------------------------------------------------ metadata
    @property
    def shape(self):
        cdef const int64_t *s = cg_tensor_shape(self.c)
        return tuple([s[i] for i in range(cg_tensor_ndim(self.c))])

    def size(self, dim=None):
        if dim is None:
            return self.shape
        cdef int n = cg_tensor_ndim(self.c)
        if not -max(n, 1) <= dim < max(n, 1):
            raise IndexError(f"dim {dim} out of range for a {n}-d tensor")
        return self.shape[dim] if n else 1

    @property
    def dtype(self):
        return _DTYPES[cg_tensor_dtype(self.c)]

    @property
    def ndim(self):
        return cg_tensor_ndim(self.c)

    def dim(self):
        return cg_tensor_ndim(self.c)

    def numel(self):
        return cg_tensor_numel(self.c)

    def __len__(self):
        if cg_tensor_ndim(self.c) == 0:
            raise TypeError("len() of a 0-d tensor")
        return cg_tensor_shape(self.c)[0]

    def stride(self, dim=None):
        cdef const int64_t *s = cg_tensor_strides(self.c)
        st = tuple([s[i] for i in range(cg_tensor_ndim(self.c))])
        return st if dim is None else st[dim]

    def is_contiguous(self):
        return bool(cg_tensor_is_contiguous(self.c))

    def is_floating_point(self):
        return _float_tensor(self)

    @property
    def device(self):
        return _device_of(self.c)

    @property
    def is_cuda(self):
        return cg_tensor_device(self.c) != CG_DEVICE_CPU

    @property
    def _version(self):
        return cg_tensor_version(self.c)

    def data_ptr(self):
        """Address of the first element (a device address for 'cuda')."""
        if cg_tensor_device(self.c) != CG_DEVICE_CPU:
            return _device_backend(self.c).data_ptr(_device_array(self))
        return <uintptr_t>cg_tensor_data(self.c)

    # ------------------------------------------------------------ row-sparse
    @property
    def is_sparse(self):
        """True for a row-sparse tensor (a sparse COO tensor with one sparse
        dim, e.g. the gradient of Embedding(sparse=True)'s weight)."""
        return bool(cg_tensor_is_sparse(self.c))

    @property
    def layout(self):
        return "sparse_coo" if cg_tensor_is_sparse(self.c) else "strided"

    def indices(self):
        """The int64 row indices, shape (1, nnz) as PyTorch's indices() of a
        sparse tensor with one sparse dim (shares memory)."""
        cdef cg_tensor *r = NULL
        _check(cg_sparse_indices(self.c, &r))
        return _wrap(r).reshape(1, -1)

    def _indices(self):
        return self.indices()

    def values(self):
        """The stored rows, shape (nnz, *shape[1:]) (shares memory)."""
        cdef cg_tensor *r = NULL
        _check(cg_sparse_values(self.c, &r))
        return _wrap(r)

    def _values(self):
        return self.values()

    def _nnz(self):
        if not cg_tensor_is_sparse(self.c):
            raise RuntimeError("_nnz() needs a sparse tensor, got a strided one")
        return cg_sparse_nnz(self.c)

    def is_coalesced(self):
        if not cg_tensor_is_sparse(self.c):
            raise RuntimeError("is_coalesced() needs a sparse tensor, got a strided one")
        return bool(cg_sparse_is_coalesced(self.c))

    def coalesce(self):
        """Sorted unique row indices with duplicate rows summed."""
        cdef cg_tensor *r = NULL
        _check(cg_sparse_coalesce(self.c, &r))
        return _wrap(r)

    def to_dense(self):
        """The dense tensor (a strided tensor returns itself)."""
        cdef cg_tensor *r = NULL
        cdef cg_status st
        with nogil:
            st = cg_sparse_to_dense(self.c, &r)
        _check(st)
        return _wrap(r)

    # ------------------------------------------------------------ autograd
    @property
    def requires_grad(self):
        return bool(cg_tensor_requires_grad(self.c))

    @requires_grad.setter
    def requires_grad(self, value):
        _check(cg_tensor_set_requires_grad(self.c, bool(value)))

    def requires_grad_(self, requires_grad=True):
        _check(cg_tensor_set_requires_grad(self.c, bool(requires_grad)))
        return self

    @property
    def is_leaf(self):
        return bool(cg_tensor_is_leaf(self.c))

    @property
    def grad_fn(self):
        cdef const char *name = cg_tensor_grad_fn_name(self.c)
        if name == NULL:
            return None
        return GradFn(name.decode())

    @property
    def grad(self):
        cdef cg_tensor *g = cg_tensor_grad(self.c)
        if g == NULL:
            return None
        cg_tensor_retain(g)
        return _wrap(g)

    @grad.setter
    def grad(self, value):
        if value is None:
            _check(cg_tensor_set_grad(self.c, NULL))
            return
        if not isinstance(value, Tensor):
            raise TypeError(f"grad must be a Tensor or None, got {type(value).__name__}")
        _check(cg_tensor_set_grad(self.c, (<Tensor>value).c))

    def register_hook(self, hook):
        """hook(grad) -> Tensor or None, called with the gradient flowing into
        this tensor during backward; a returned tensor replaces the gradient.
        Returns a handle whose remove() unregisters it."""
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        cdef int64_t handle = 0
        Py_INCREF(hook)
        _check(cg_tensor_register_hook(self.c, _grad_hook_tramp, <void *>hook, _release_pyobj, &handle))
        return RemovableHandle(self, handle)

    def register_post_accumulate_grad_hook(self, hook):
        """hook(tensor) called after .grad of this leaf was updated by backward."""
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        cdef int64_t handle = 0
        Py_INCREF(hook)
        _check(cg_tensor_register_post_accumulate_hook(self.c, _post_hook_tramp, <void *>hook,
                                                       _release_pyobj, &handle))
        return RemovableHandle(self, handle)

    def detach(self):
        cdef cg_tensor *r = NULL
        _check(cg_detach(self.c, &r))
        return _wrap(r)

    @staticmethod
    def _make_subclass(cls, Tensor data not None, requires_grad=False):
        """An instance of the Tensor subclass cls sharing data's storage, a
        leaf detached from data's history (how nn.Parameter is built, as in
        PyTorch)."""
        if not (isinstance(cls, type) and issubclass(cls, Tensor)):
            raise TypeError(f"_make_subclass: {cls!r} is not a subclass of cgrad.Tensor")
        cdef Tensor r = Tensor.__new__(cls)
        cdef cg_tensor *c = NULL
        _check(cg_detach(data.c, &c))
        r.c = c
        if requires_grad:
            _check(cg_tensor_set_requires_grad(r.c, 1))
        return r

    @property
    def data(self):
        """A detached tensor sharing this tensor's storage (PyTorch's .data)."""
        return self.detach()

    @data.setter
    def data(self, value):
        """Make this tensor use value's data, keeping its identity,
        requires_grad and hooks (PyTorch's `p.data = x`, used by Module.to).
        The gradient is kept when it still matches shape and dtype, dropped
        otherwise."""
        if not isinstance(value, Tensor):
            raise TypeError(f"data must be a Tensor, got {type(value).__name__}")
        if not cg_tensor_is_leaf(self.c):
            raise RuntimeError("data can only be assigned on a leaf tensor")
        _check(cg_tensor_set_data(self.c, (<Tensor>value).c))

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's .grad."""
        cdef cg_tensor *g = NULL
        cdef Tensor tg
        if gradient is not None:
            tg = _as_tensor(gradient, self)
            if tg.dtype is not self.dtype and _float_tensor(tg) and _float_tensor(self):
                tg = tg.to(self.dtype)  # as PyTorch: the gradient takes the output's dtype
            g = tg.c
        cdef int retain = bool(create_graph) if retain_graph is None else bool(retain_graph)
        cdef int create = bool(create_graph)
        cdef cg_status st
        with nogil:
            st = cg_backward(self.c, g, retain, create)
        _check(st)

    # ------------------------------------------------------------ NumPy
    @property
    def __array_interface__(self):
        _refuse_sparse_numpy(self)
        _refuse_device_numpy(self)
        if cg_tensor_requires_grad(self.c):
            raise RuntimeError("Can't call numpy() on a tensor that requires grad. Use tensor.detach().numpy() instead.")
        cdef int n = cg_tensor_ndim(self.c)
        cdef int code = cg_tensor_dtype(self.c)
        cdef int isz = cg_dtype_size(<cg_dtype>code)
        cdef const int64_t *st = cg_tensor_strides(self.c)
        return {
            "shape": self.shape,
            "typestr": _TYPESTR[code],
            "data": (<uintptr_t>cg_tensor_data(self.c), False),
            "strides": tuple([st[i] * isz for i in range(n)]),
            "version": 3,
        }

    def numpy(self):
        """A NumPy array sharing memory with this tensor (keeps it alive)."""
        return np.asarray(self)

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(_ArrayView(self))
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        if copy:
            arr = arr.copy()
        return arr

    def item(self):
        cdef double v
        _check(cg_tensor_item(self.c, &v))
        cdef int code = cg_tensor_dtype(self.c)
        if code == CG_INT64:
            return int(v)
        if code == CG_BOOL:
            return bool(v)
        return v

    def tolist(self):
        return self.detach().cpu().numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if cg_tensor_numel(self.c) != 1:
            raise RuntimeError(f"the truth value of a tensor with {cg_tensor_numel(self.c)} elements is ambiguous")
        return bool(self.item())

    def __index__(self):
        if cg_tensor_dtype(self.c) != CG_INT64 or cg_tensor_numel(self.c) != 1:
            raise TypeError("only one-element int64 tensors can be used as an index")
        return int(self.item())

    def __repr__(self):
        if cg_tensor_is_sparse(self.c):
            return _sparse_repr(self)
        cdef bint on_device = cg_tensor_device(self.c) != CG_DEVICE_CPU
        arr = (self.detach().cpu() if on_device else self.detach()).numpy()
        body = np.array2string(arr, separator=", ", precision=4, prefix="tensor(")
        extra = f", device='{self.device}'" if on_device else ""
        if cg_tensor_dtype(self.c) not in (CG_FLOAT32, CG_INT64, CG_BOOL):
            extra += f", dtype={self.dtype!r}"
        elif cg_tensor_dtype(self.c) == CG_FLOAT32 and _default_float is not float32:
            extra += f", dtype={self.dtype!r}"
        if self.grad_fn is not None:
            extra += f", grad_fn=<{self.grad_fn.name()}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __reduce__(self):
        if cg_tensor_is_sparse(self.c):  # its parts, from host memory; rebuilt on its device
            return (_rebuild_sparse, (self.indices().cpu().numpy().copy(),
                                      self.values().cpu().numpy().copy(), self.shape, str(self.device)))
        if cg_tensor_device(self.c) != CG_DEVICE_CPU:
            return (_rebuild_on_device, (self.detach().cpu().numpy().copy(), self.dtype,
                                         self.requires_grad, str(self.device)))
        return (tensor, (self.detach().numpy().copy(), self.dtype, self.requires_grad))

    # ------------------------------------------------------------ operators
    def __add__(a, b):
        if isinstance(a, Tensor) and isinstance(b, Tensor) and (
                cg_tensor_is_sparse((<Tensor>a).c) or cg_tensor_is_sparse((<Tensor>b).c)):
            return _sparse_add(<Tensor>a, <Tensor>b)
        if isinstance(a, Tensor) and _is_number(b) and _float_tensor(<Tensor>a):
            return _scalar_op(cg_add_scalar, <Tensor>a, b)
        return _binop(cg_add, a, b)

    def __radd__(self, other):
        if _is_number(other) and _float_tensor(self):
            return _scalar_op(cg_add_scalar, self, other)
        return _binop(cg_add, other, self)

    def __sub__(a, b):
        if isinstance(a, Tensor) and _is_number(b) and _float_tensor(<Tensor>a):
            return _scalar_op(cg_add_scalar, <Tensor>a, -b)
        return _binop(cg_sub, a, b)

    def __rsub__(self, other):
        return _binop(cg_sub, other, self)

    def __mul__(a, b):
        if isinstance(a, Tensor) and _is_number(b) and _float_tensor(<Tensor>a):
            return _scalar_op(cg_mul_scalar, <Tensor>a, b)
        return _binop(cg_mul, a, b)

    def __rmul__(self, other):
        if _is_number(other) and _float_tensor(self):
            return _scalar_op(cg_mul_scalar, self, other)
        return _binop(cg_mul, other, self)

    def __truediv__(a, b):
        return _binop(cg_div, a, b)

    def __rtruediv__(self, other):
        return _binop(cg_div, other, self)

    def __pow__(a, b, mod):
        if mod is not None:
            raise TypeError("pow() with a modulus is not supported")
        if isinstance(a, Tensor) and _is_number(b):
            if not _float_tensor(<Tensor>a) and isinstance(b, (int, np.integer)) and b < 0:
                raise ValueError(f"integers to negative integer powers are not allowed (exponent {b})")
            if _float_tensor(<Tensor>a):
                return _scalar_op(cg_pow_scalar, <Tensor>a, b)
        return _binop(cg_pow, a, b)

    def __rpow__(self, other, mod):
        return _binop(cg_pow, other, self)

    def __matmul__(a, b):
        return _binop(cg_matmul, a, b)

    def __rmatmul__(self, other):
        return _binop(cg_matmul, other, self)

    def __neg__(self):
        return _unary(cg_neg, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _unary(cg_abs, self)

    def __eq__(a, b):
        return _binop(cg_eq, a, b)

    def __ne__(a, b):
        return _binop(cg_ne, a, b)

    def __lt__(a, b):
        return _binop(cg_lt, a, b)

    def __le__(a, b):
        return _binop(cg_le, a, b)

    def __gt__(a, b):
        return _binop(cg_gt, a, b)

    def __ge__(a, b):
        return _binop(cg_ge, a, b)

    def __hash__(self):
        # identity, as object's (__eq__ is elementwise), computed as CPython's
        # _Py_HashPointer (the address rotated by 4 bits, since objects are
        # 16-byte aligned) without a call to id(): optimizer state is a dict
        # keyed by tensor, looked up for every parameter at every step
        cdef size_t a = <size_t><void *>self
        cdef Py_hash_t h = <Py_hash_t>((a >> 4) | (a << (8 * sizeof(size_t) - 4)))
        return -2 if h == -1 else h

    # Logical operators on bool tensors (masks).
    def __and__(a, b):
        return _logical(a, b, cg_minimum, "&")

    def __rand__(self, other):
        return _logical(self, other, cg_minimum, "&")

    def __or__(a, b):
        return _logical(a, b, cg_maximum, "|")

    def __ror__(self, other):
        return _logical(self, other, cg_maximum, "|")

    def __xor__(a, b):
        return _logical(a, b, cg_ne, "^")

    def __rxor__(self, other):
        return _logical(self, other, cg_ne, "^")

    def __invert__(self):
        if cg_tensor_dtype(self.c) != CG_BOOL:
            raise TypeError(f"~ is supported on bool tensors only, got {self.dtype!r}")
        return _binop(cg_eq, self, False)

    def logical_not(self):
        return self.__invert__()

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    # ------------------------------------------------------------ in-place
    def add_(self, other, alpha=1):
        cdef Tensor o
        cdef cg_status st
        cdef double a
        if _is_number(other):
            _check(cg_add_scalar_(self.c, float(other) * alpha))
        else:
            o = _as_tensor(other, self)
            a = alpha
            with nogil:
                st = cg_add_(self.c, o.c, a)
            _check(st)
        return self

    def sub_(self, other, alpha=1):
        return self.add_(other, -alpha)

    def mul_(self, other):
        cdef Tensor o
        cdef cg_status st
        if _is_number(other):
            _check(cg_mul_scalar_(self.c, float(other)))
        else:
            o = _as_tensor(other, self)
            with nogil:
                st = cg_mul_(self.c, o.c)
            _check(st)
        return self

    def div_(self, other):
        if _is_number(other):
            _check(cg_mul_scalar_(self.c, 1.0 / float(other)))
            return self
        return self.mul_(1.0 / _as_tensor(other, self))

    def zero_(self):
        if cg_tensor_is_sparse(self.c):
            _check(cg_sparse_zero_(self.c))
            return self
        _check(cg_zero_(self.c))
        return self

    def fill_(self, value):
        _check(cg_fill_(self.c, float(value)))
        return self

    def copy_(self, src):
        cdef Tensor s = _as_tensor(src, self)
        cdef cg_status st
        with nogil:
            st = cg_copy_(self.c, s.c)
        _check(st)
        return self

    # ------------------------------------------------------------ indexing
    def __getitem__(self, idx):
        return _getitem(self, idx)

    def __setitem__(self, idx, value):
        view = _getitem(self, idx)
        if not isinstance(view, Tensor) or (<Tensor>view).c == NULL:
            raise IndexError("assignment target is not a tensor")
        if _has_advanced(idx):
            raise NotImplementedError("assignment through index tensors is not supported yet; use basic slicing")
        view.copy_(value)

    def __iter__(self):
        if cg_tensor_ndim(self.c) == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(cg_tensor_shape(self.c)[0]):
            yield self.select(0, i)

    # ------------------------------------------------------------ elementwise
    def exp(self): return _unary(cg_exp, self)
    def log(self): return _unary(cg_log, self)
    def sqrt(self): return _unary(cg_sqrt, self)
    def abs(self): return _unary(cg_abs, self)
    def sign(self): return _unary(cg_sign, self)
    def round(self): return _unary(cg_round, self)
    def floor(self): return _unary(cg_floor, self)
    def ceil(self): return _unary(cg_ceil, self)
    def neg(self): return _unary(cg_neg, self)
    def relu(self): return _unary(cg_relu, self)
    def sigmoid(self): return _unary(cg_sigmoid, self)
    def tanh(self): return _unary(cg_tanh, self)

    def add(self, other, alpha=1):
        if alpha != 1:
            other = _as_tensor(other, self) * alpha
        return self + other

    def sub(self, other, alpha=1):
        if alpha != 1:
            other = _as_tensor(other, self) * alpha
        return self - other

    def mul(self, other): return self * other
    def div(self, other): return self / other
    def pow(self, exponent): return self ** exponent
    def matmul(self, other): return _binop(cg_matmul, self, other)
    def maximum(self, other): return _binop(cg_maximum, self, other)
    def minimum(self, other): return _binop(cg_minimum, self, other)
    def eq(self, other): return _binop(cg_eq, self, other)
    def ne(self, other): return _binop(cg_ne, self, other)
    def lt(self, other): return _binop(cg_lt, self, other)
    def le(self, other): return _binop(cg_le, self, other)
    def gt(self, other): return _binop(cg_gt, self, other)
    def ge(self, other): return _binop(cg_ge, self, other)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        cdef double lo = -INFINITY if min is None else float(min)
        cdef double hi = INFINITY if max is None else float(max)
        cdef cg_tensor *r = NULL
        _check(cg_clamp(self.c, lo, hi, &r))
        return _wrap(r)

    clip = clamp

    def leaky_relu(self, negative_slope=0.01):
        return _scalar_op(cg_leaky_relu, self, negative_slope)

    def elu(self, alpha=1.0):
        return _scalar_op(cg_elu, self, alpha)

    def gelu(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        cdef cg_tensor *r = NULL
        _check(cg_gelu(self.c, approximate == "tanh", &r))
        return _wrap(r)

    def softplus(self, beta=1.0, threshold=20.0):
        cdef cg_tensor *r = NULL
        _check(cg_softplus(self.c, beta, threshold, &r))
        return _wrap(r)

    # ------------------------------------------------------------ reductions
    def sum(self, dim=None, bint keepdim=False, dtype=None):
        cdef int dims[8]
        cdef int n = _fill_dims(dim, dims)
        cdef cg_tensor *r = NULL
        cdef cg_status st
        src = self if dtype is None else self.to(dtype)
        cdef Tensor s = <Tensor>src
        with nogil:
            st = cg_sum(s.c, dims if n else NULL, n, keepdim, &r)
        _check(st)
        return _wrap(r)

    def mean(self, dim=None, bint keepdim=False):
        cdef int dims[8]
        cdef int n = _fill_dims(dim, dims)
        cdef cg_tensor *r = NULL
        cdef cg_status st
        with nogil:
            st = cg_mean(self.c, dims if n else NULL, n, keepdim, &r)
        _check(st)
        return _wrap(r)

    def var(self, dim=None, unbiased=None, keepdim=False, correction=None):
        cdef int dims[8]
        cdef int n = _fill_dims(dim, dims)
        cdef double corr = 1.0
        if correction is not None:
            corr = correction
        elif unbiased is not None:
            corr = 1.0 if unbiased else 0.0
        cdef cg_tensor *r = NULL
        _check(cg_var(self.c, dims if n else NULL, n, corr, keepdim, &r))
        return _wrap(r)

    def std(self, dim=None, unbiased=None, keepdim=False, correction=None):
        return self.var(dim, unbiased, keepdim, correction).sqrt()

    def amax(self, dim=None, keepdim=False):
        cdef int dims[8]
        cdef int n = _fill_dims(dim, dims)
        cdef cg_tensor *r = NULL
        _check(cg_max(self.c, dims if n else NULL, n, keepdim, &r))
        return _wrap(r)

    def amin(self, dim=None, keepdim=False):
        cdef int dims[8]
        cdef int n = _fill_dims(dim, dims)
        cdef cg_tensor *r = NULL
        _check(cg_min(self.c, dims if n else NULL, n, keepdim, &r))
        return _wrap(r)

    def max(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return _binop(cg_maximum, self, dim)
        if dim is None:
            return self.amax()
        # As in PyTorch: the gradient of the values goes to the returned index.
        idx = self.argmax(dim, True)
        values = self.gather(dim, idx)
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return MaxResult(values, idx)

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return _binop(cg_minimum, self, dim)
        if dim is None:
            return self.amin()
        idx = self.argmin(dim, True)
        values = self.gather(dim, idx)
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return MinResult(values, idx)

    def argmax(self, dim=None, keepdim=False):
        cdef cg_tensor *r = NULL
        _check(cg_argmax(self.c, 0 if dim is None else dim, keepdim, dim is None, &r))
        return _wrap(r)

    def argmin(self, dim=None, keepdim=False):
        cdef cg_tensor *r = NULL
        _check(cg_argmin(self.c, 0 if dim is None else dim, keepdim, dim is None, &r))
        return _wrap(r)

    def logsumexp(self, dim, keepdim=False):
        cdef int dims[8]
        cdef int n = _fill_dims(dim, dims)
        cdef cg_tensor *r = NULL
        _check(cg_logsumexp(self.c, dims if n else NULL, n, keepdim, &r))
        return _wrap(r)

    def softmax(self, int dim):
        cdef cg_tensor *r = NULL
        cdef cg_status st
        with nogil:
            st = cg_softmax(self.c, dim, &r)
        _check(st)
        return _wrap(r)

    def log_softmax(self, int dim):
        cdef cg_tensor *r = NULL
        cdef cg_status st
        with nogil:
            st = cg_log_softmax(self.c, dim, &r)
        _check(st)
        return _wrap(r)

    def all(self):
        return bool((self != 0).sum().item() == self.numel())

    def any(self):
        return bool((self != 0).sum().item() > 0)

    # ------------------------------------------------------------ shape
    def reshape(self, *shape):
        cdef int64_t s[8]
        cdef int n = _fill_shape(_shape_args(shape), s)
        cdef cg_tensor *r = NULL
        _check(cg_reshape(self.c, n, s, &r))
        return _wrap(r)

    view = reshape

    def view_as(self, other):
        return self.reshape(other.shape)

    def reshape_as(self, other):
        return self.reshape(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self.shape
        n = len(shape)
        if n == 0:
            return self.reshape(1)
        s = start_dim + n if start_dim < 0 else start_dim
        e = end_dim + n if end_dim < 0 else end_dim
        if not (0 <= s < n and 0 <= e < n) or s > e:
            raise IndexError(f"flatten: bad dims start_dim={start_dim} end_dim={end_dim} for a {n}-d tensor")
        mid = 1
        for k in shape[s:e + 1]:
            mid *= k
        return self.reshape(shape[:s] + (mid,) + shape[e + 1:])

    def permute(self, *dims):
        dims = _shape_args(dims)
        cdef int nd = cg_tensor_ndim(self.c)
        if len(dims) != nd:
            raise ValueError(f"permute: expected {nd} dims, got {len(dims)}: {tuple(dims)}")
        cdef int p[8]
        for i in range(nd):
            p[i] = dims[i]
        cdef cg_tensor *r = NULL
        _check(cg_permute(self.c, p, &r))
        return _wrap(r)

    def transpose(self, int dim0, int dim1):
        cdef cg_tensor *r = NULL
        _check(cg_transpose(self.c, dim0, dim1, &r))
        return _wrap(r)

    def t(self):
        cdef int nd = cg_tensor_ndim(self.c)
        if nd > 2:
            raise ValueError(f"t() expects a tensor with <= 2 dims, got {nd}; use transpose")
        if nd < 2:
            return self
        return self.transpose(0, 1)

    @property
    def T(self):
        cdef int nd = cg_tensor_ndim(self.c)
        if nd < 2:
            return self
        return self.permute(*reversed(range(nd)))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def expand(self, *sizes):
        cdef int64_t s[8]
        cdef int n = _fill_shape(_shape_args(sizes), s)
        cdef cg_tensor *r = NULL
        _check(cg_expand(self.c, n, s, &r))
        return _wrap(r)

    def expand_as(self, other):
        return self.expand(other.shape)

    def squeeze(self, dim=None):
        cdef cg_tensor *r = NULL
        if dim is None:
            _check(cg_squeeze_all(self.c, &r))
        else:
            _check(cg_squeeze(self.c, dim, &r))
        return _wrap(r)

    def unsqueeze(self, int dim):
        cdef cg_tensor *r = NULL
        _check(cg_unsqueeze(self.c, dim, &r))
        return _wrap(r)

    def select(self, int dim, int64_t index):
        cdef cg_tensor *r = NULL
        _check(cg_select(self.c, dim, index, &r))
        return _wrap(r)

    def narrow(self, int dim, int64_t start, int64_t length):
        return _slice(self, dim, start, start + length, 1)

    def contiguous(self):
        cdef cg_tensor *r = NULL
        _check(cg_contiguous(self.c, &r))
        return _wrap(r)

    def clone(self):
        if cg_tensor_is_sparse(self.c):
            return sparse_coo_tensor(self.indices().clone(), self.values().clone(), self.shape)
        cdef cg_tensor *r = NULL
        cdef cg_status st
        with nogil:
            st = cg_clone(self.c, &r)
        _check(st)
        return _wrap(r)

    def to(self, *args, dtype=None, device=None, copy=False):
        """to(dtype), to(device), to(device, dtype), to(other_tensor):
        differentiable copies (self when nothing changes and copy=False)."""
        for a in args:
            if isinstance(a, (str, _DeviceCls)):
                device = a
            elif isinstance(a, Tensor):
                device, dtype = a.device, a.dtype
            else:
                dtype = a
        cdef Tensor moved
        if device is not None and _device_id(device) != cg_tensor_device(self.c):
            moved = _to_device(self, device)  # a row-sparse tensor: its parts, as PyTorch's sparse.to("cuda")
            return moved if dtype is None else moved.to(dtype)
        if dtype is None:
            return self.clone() if copy else self
        cdef int code = _dtype_code(dtype)
        if cg_tensor_is_sparse(self.c):  # the stored rows change dtype
            if code == <int>cg_tensor_dtype(self.c) and not copy:
                return self
            return sparse_coo_tensor(self.indices(), self.values().to(dtype, copy=copy), self.shape)
        if code == <int>cg_tensor_dtype(self.c) and not copy:
            return self
        cdef cg_tensor *r = NULL
        _check(cg_to_dtype(self.c, <cg_dtype>code, &r))
        out = _wrap(r)
        return out.clone() if copy and out.c == self.c else out

    def type(self, dtype):
        return self.to(dtype)

    def float(self): return self.to(float32)
    def half(self): return self.to(float16)
    def double(self): return self.to(float64)
    def long(self): return self.to(int64)
    def bool(self): return self.to(bool_)

    def cpu(self):
        """A copy on the host (self when already there); differentiable."""
        return self.to("cpu")

    def cuda(self, device=None):
        """A copy on the GPU device (self when already there); differentiable."""
        return self.to("cuda" if device is None else (f"cuda:{device}" if isinstance(device, int) else device))

    @property
    def __cuda_array_interface__(self):
        """CUDA Array Interface (version 3) of a tensor on "cuda": CuPy,
        Numba and PyTorch read the memory without a copy."""
        if cg_tensor_device(self.c) == CG_DEVICE_CPU:
            raise AttributeError("__cuda_array_interface__ is only defined for tensors on 'cuda'; "
                                 "this one is on the cpu")
        if cg_tensor_requires_grad(self.c):
            raise RuntimeError("Can't export a tensor that requires grad; use tensor.detach() first")
        return _device_backend(self.c).cuda_array_interface(_device_array(self))

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """DLPack capsule (zero-copy) for NumPy, CuPy, PyTorch, JAX."""
        if cg_tensor_requires_grad(self.c):
            raise RuntimeError("Can't export a tensor that requires grad; use tensor.detach() first")
        _refuse_sparse_numpy(self)
        arr = _device_array(self) if cg_tensor_device(self.c) != CG_DEVICE_CPU else np.asarray(self)
        kw = {} if stream is None else {"stream": stream}
        if max_version is not None:
            try:
                return arr.__dlpack__(max_version=max_version, **kw)
            except TypeError:
                pass
        return arr.__dlpack__(**kw)

    def __dlpack_device__(self):
        if cg_tensor_device(self.c) != CG_DEVICE_CPU:
            return _device_array(self).__dlpack_device__()
        return (1, 0)  # kDLCPU

    def gather(self, int dim, index):
        cdef Tensor idx = _index_tensor(index, self)
        cdef cg_tensor *r = NULL
        _check(cg_gather(self.c, dim, idx.c, &r))
        return _wrap(r)

    def index_select(self, int dim, index):
        cdef Tensor idx = _index_tensor(index, self)
        cdef cg_tensor *r = NULL
        _check(cg_index_select(self.c, dim, idx.c, &r))
        return _wrap(r)

    def scatter_add(self, int dim, index, src):
        cdef Tensor idx = _index_tensor(index, self)
        cdef Tensor s = _as_tensor(src, self)
        cdef cg_tensor *r = NULL
        _check(cg_scatter_add(self.c, dim, idx.c, s.c, &r))
        return _wrap(r)

    def index_add(self, int dim, index, source):
        cdef Tensor idx = _index_tensor(index, self)
        cdef Tensor s = _as_tensor(source, self)
        cdef cg_tensor *r = NULL
        _check(cg_index_add(self.c, dim, idx.c, s.c, &r))
        return _wrap(r)

    def masked_fill(self, mask, value):
        return where(mask, _scalar_like(value, self), self)

    def split(self, split_size, dim=0):
        n = self.size(dim)
        sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else []) \
            if isinstance(split_size, int) else list(split_size)
        out, start = [], 0
        for s in sizes:
            out.append(_slice(self, dim, start, start + s, 1))
            start += s
        return tuple(out)

    def chunk(self, chunks, dim=0):
        n = self.size(dim)
        return self.split(-(-n // chunks), dim)


# ------------------------------------------------------------------ views for NumPy
cdef class _ArrayView:
    """Exposes a tensor's memory to NumPy even when it requires grad (used by
    __array__, which PyTorch also allows for detached reads)."""
    cdef Tensor t

    def __cinit__(self, Tensor t):
        self.t = t

    @property
    def __array_interface__(self):
        _refuse_sparse_numpy(self.t)
        _refuse_device_numpy(self.t)
        cdef cg_tensor *c = self.t.c
        cdef int n = cg_tensor_ndim(c)
        cdef int code = cg_tensor_dtype(c)
        cdef int isz = cg_dtype_size(<cg_dtype>code)
        cdef const int64_t *st = cg_tensor_strides(c)
        cdef const int64_t *sh = cg_tensor_shape(c)
        return {
            "shape": tuple([sh[i] for i in range(n)]),
            "typestr": _TYPESTR[code],
            "data": (<uintptr_t>cg_tensor_data(c), False),
            "strides": tuple([st[i] * isz for i in range(n)]),
            "version": 3,
        }


# ------------------------------------------------------------------ hooks
cdef class RemovableHandle:
    """Returned by register_hook; remove() unregisters the hook."""
    cdef Tensor t
    cdef readonly int64_t id

    def __cinit__(self, Tensor t, int64_t id):
        self.t = t
        self.id = id

    def remove(self):
        if self.t is None:
            return
        cg_tensor_remove_hook(self.t.c, self.id)  # already gone: nothing to do
        self.t = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

cdef cg_status _grad_hook_tramp(void *ctx, cg_tensor *grad, cg_tensor **replacement) noexcept with gil:
    cdef Tensor r
    try:
        cg_tensor_retain(grad)
        out = (<object>ctx)(_wrap(grad))
        if out is None:
            return CG_OK
        if not isinstance(out, Tensor):
            raise TypeError(f"a gradient hook must return a Tensor or None, got {type(out).__name__}")
        r = <Tensor>out
        cg_tensor_retain(r.c)
        replacement[0] = r.c
        return CG_OK
    except BaseException as e:
        return _stash_callback_error(e, "gradient hook")

cdef cg_status _post_hook_tramp(void *ctx, cg_tensor *leaf) noexcept with gil:
    try:
        cg_tensor_retain(leaf)
        (<object>ctx)(_wrap(leaf))
        return CG_OK
    except BaseException as e:
        return _stash_callback_error(e, "post-accumulate-grad hook")


# ------------------------------------------------------------------ backward overrides
class OverrideCtx:
    """What a backward override sees: the op's name, its inputs and outputs,
    and which inputs need a gradient."""
    __slots__ = ("op", "inputs", "outputs", "needs_input_grad")

    def __init__(self, op, inputs, outputs, needs_input_grad):
        self.op = op
        self.inputs = inputs
        self.outputs = outputs
        self.needs_input_grad = needs_input_grad

    def __repr__(self):
        return f"<OverrideCtx op={self.op!r} inputs={len(self.inputs)} outputs={len(self.outputs)}>"

cdef cg_status _override_tramp(void *ctx, const char *op_name, int n_inputs, cg_tensor **inputs,
                               int n_outputs, cg_tensor **outputs, cg_tensor **grad_outputs,
                               const int *needs, cg_tensor **grad_inputs) noexcept with gil:
    cdef int i
    cdef Tensor g
    name = op_name.decode()
    try:
        octx = OverrideCtx(name, tuple([_wrap_retained(inputs[i]) for i in range(n_inputs)]),
                           tuple([_wrap_retained(outputs[i]) for i in range(n_outputs)]),
                           tuple([bool(needs[i]) for i in range(n_inputs)]))
        res = (<object>ctx)(octx, *[_wrap_retained(grad_outputs[i]) for i in range(n_outputs)])
        if not isinstance(res, (tuple, list)):
            res = (res,)
        res = tuple(res)
        if len(res) > n_inputs and all(r is None for r in res[n_inputs:]):
            res = res[:n_inputs]
        if len(res) != n_inputs:
            raise ValueError(f"backward override of '{name}' returned {len(res)} gradients for "
                             f"{n_inputs} inputs")
        for i in range(n_inputs):
            r = res[i]
            if r is None or not needs[i]:
                continue
            if not isinstance(r, Tensor):
                raise TypeError(f"backward override of '{name}' returned {type(r).__name__} for input {i}")
            g = <Tensor>r
            cg_tensor_retain(g.c)
            grad_inputs[i] = g.c
        return CG_OK
    except BaseException as e:
        for i in range(n_inputs):
            cg_tensor_free(grad_inputs[i])
            grad_inputs[i] = NULL
        return _stash_callback_error(e, f"backward override of '{name}'")

class override_backward:
    """``with override_backward("relu", fn):`` gives every op named "relu"
    recorded inside the block the derivative ``fn(ctx, *grad_outputs)``
    instead of the built-in one (``"*"`` matches every op). ``ctx.inputs``,
    ``ctx.outputs``, ``ctx.needs_input_grad`` and ``ctx.op`` describe the
    entry; fn returns one gradient (or None) per input. Entries keep the
    override after the block ends; ops recorded after it are unaffected."""

    def __init__(self, op, fn):
        if not isinstance(op, str) or not op:
            raise TypeError(f"override_backward: op must be an op name such as 'relu', got {op!r}")
        if not callable(fn):
            raise TypeError(f"override_backward: fn must be callable, got {type(fn).__name__}")
        self.op = op
        self.fn = fn
        self._handle = None

    def __enter__(self):
        cdef int64_t handle = 0
        fn = self.fn
        Py_INCREF(fn)
        _check(cg_override_push(self.op.encode(), <cg_override_fn>_override_tramp, <void *>fn, _release_pyobj, &handle))
        self._handle = handle
        return self

    def __exit__(self, *exc):
        if self._handle is not None:
            _check(cg_override_pop(self._handle))
            self._handle = None
        return False


# ------------------------------------------------------------------ indexing
cdef Tensor _index_tensor(object index, Tensor like=None):
    """index as a Tensor; lists and arrays are built on like's device."""
    if isinstance(index, Tensor):
        return <Tensor>index
    arr = np.asarray(index)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # x[[]]: an empty list selects nothing
    if arr.dtype.kind not in "iub":
        raise IndexError(f"index arrays must be integer or bool, got dtype {arr.dtype}")
    cdef Tensor t = _tensor_from_data(arr, None, False)
    if like is not None and cg_tensor_device(like.c) != CG_DEVICE_CPU:
        t = _to_device(t, like.device)
    return t

cdef Tensor _slice(Tensor x, int dim, int64_t start, int64_t stop, int64_t step):
    cdef cg_tensor *r = NULL
    _check(cg_slice(x.c, dim, start, stop, step, &r))
    return _wrap(r)

cdef bint _is_advanced(object e):
    return isinstance(e, (Tensor, list, np.ndarray)) and not isinstance(e, (str, bytes))

cdef bint _has_advanced(object idx):
    if not isinstance(idx, tuple):
        idx = (idx,)
    for e in idx:
        if _is_advanced(e):
            return True
    return False

cdef object _getitem(Tensor x, object idx):
    if not isinstance(idx, tuple):
        idx = (idx,)
    # How many tensor dims the index consumes (Ellipsis fills the rest).
    consumed = 0
    n_ellipsis = 0
    for e in idx:
        if e is None:
            continue
        if e is Ellipsis:
            n_ellipsis += 1
        elif isinstance(e, (Tensor, np.ndarray)) and _index_tensor(e).dtype is bool_:
            consumed += _index_tensor(e).ndim
        else:
            consumed += 1
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    nd = x.ndim
    if consumed > nd:
        raise IndexError(f"too many indices for a tensor of dimension {nd} (got {consumed})")
    cdef Tensor r = x
    cdef int d = 0
    cdef cg_tensor *pos = NULL
    advanced = []  # (dim in r, index tensor)
    for e in idx:
        if e is None:
            r = r.unsqueeze(d)
            d += 1
        elif e is Ellipsis:
            d += nd - consumed
        elif isinstance(e, bool):
            raise IndexError("indexing with a Python bool is not supported")
        elif isinstance(e, (int, np.integer)) or (isinstance(e, Tensor) and (<Tensor>e).ndim == 0
                                                   and (<Tensor>e).dtype is int64):
            r = r.select(d, int(e))
        elif isinstance(e, slice):
            step = 1 if e.step is None else e.step
            if step <= 0:
                raise ValueError(f"slice step must be positive, got {step}")
            start = 0 if e.start is None else int(e.start)
            stop = (1 << 62) if e.stop is None else int(e.stop)
            r = _slice(r, d, start, stop, step)
            d += 1
        elif _is_advanced(e):
            it = _index_tensor(e, x)
            advanced.append((d, it))
            d += it.ndim if it.dtype is bool_ else 1
        else:
            raise IndexError(f"unsupported index {e!r} of type {type(e).__name__}")
    if not advanced:
        return r
    if len(advanced) > 1:
        dims = [a[0] for a in advanced]
        if any(a[1].dtype is bool_ for a in advanced) or dims != list(range(dims[0], dims[0] + len(dims))):
            raise NotImplementedError("several index tensors are supported only when they are adjacent integer tensors")
        # Adjacent integer indices: merge those dims and use a linear index.
        d0 = dims[0]
        sizes = r.shape[d0:d0 + len(dims)]
        bshape = np.broadcast_shapes(*[a[1].shape for a in advanced])
        lin = None
        for (dd, it), size in zip(advanced, sizes):
            it = where(it < 0, it + size, it)
            if ((it < 0) | (it >= size)).any():
                raise IndexError(f"index out of range for dim {dd} of size {size}")
            lin = it if lin is None else lin * size + it
        lin = lin.expand(*bshape) if bshape else lin
        merged = 1
        for s in sizes:
            merged *= s
        r = r.reshape(r.shape[:d0] + (merged,) + r.shape[d0 + len(dims):])
        return _take(r, d0, lin)
    d0, it = advanced[0]
    if it.dtype is bool_:
        k = it.ndim
        if r.shape[d0:d0 + k] != it.shape:
            raise IndexError(f"boolean mask of shape {it.shape} does not match the indexed dims {r.shape[d0:d0 + k]}")
        merged = 1
        for s in it.shape:
            merged *= s
        r = r.reshape(r.shape[:d0] + (merged,) + r.shape[d0 + k:])
        _check(cg_nonzero_flat((<Tensor>it).c, &pos))
        return r.index_select(d0, _wrap(pos))
    return _take(r, d0, it)

cdef Tensor _take(Tensor r, int d, Tensor it):
    """r indexed along dim d by an integer tensor of any shape."""
    if it.dtype is not int64:
        raise IndexError(f"index tensors must be int64 or bool, got {it.dtype!r}")
    flat = it.reshape(-1)
    out = r.index_select(d, flat)
    shape = r.shape
    return out.reshape(shape[:d] + it.shape + shape[d + 1:])


# ------------------------------------------------------------------ functions
def where(condition, input, other):
    """condition ? input : other, broadcasting all three."""
    cdef Tensor c, a, b
    if isinstance(input, Tensor):
        a = <Tensor>input
        b = _as_tensor(other, a)
    elif isinstance(other, Tensor):
        b = <Tensor>other
        a = _as_tensor(input, b)
    else:
        raise TypeError("where: input or other must be a Tensor")
    c = condition if isinstance(condition, Tensor) else _tensor_from_data(condition, bool_, False)
    cdef cg_tensor *r = NULL
    _check(cg_where(c.c, a.c, b.c, &r))
    return _wrap(r)

cdef int _fill_tensor_array(object tensors, cg_tensor **arr, list keep) except -1:
    cdef int i = 0
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"expected a sequence of Tensors, got {type(t).__name__} at position {i}")
        keep.append(t)
        arr[i] = (<Tensor>t).c
        i += 1
    return i

ctypedef cg_status (*seq_fn)(int, cg_tensor **, int, cg_tensor **) noexcept nogil

cdef Tensor _join(seq_fn f, str name, object tensors, int dim):
    """cat / stack: a C array of the tensors' handles for one call."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name}: expected a non-empty sequence of tensors")
    cdef cg_tensor **arr = <cg_tensor **>malloc(len(tensors) * sizeof(cg_tensor *))
    cdef cg_tensor *r = NULL
    cdef list keep = []
    if arr == NULL:
        raise MemoryError()
    try:
        n = _fill_tensor_array(tensors, arr, keep)
        _check(f(n, arr, dim, &r))
    finally:
        free(arr)
    return _wrap(r)

def cat(tensors, int dim=0):
    return _join(<seq_fn>cg_cat, "cat", tensors, dim)

concatenate = cat

def stack(tensors, int dim=0):
    return _join(<seq_fn>cg_stack, "stack", tensors, dim)

def _rebuild_on_device(arr, dt, requires_grad, device):
    return tensor(arr, dtype=dt, requires_grad=requires_grad, device=device)

def _creation(int which, tuple shape, object dt, object requires_grad, double value=0.0, device=None):
    cdef int64_t s[8]
    cdef int n = _fill_shape(_shape_args(shape), s)
    cdef int code = (<dtype>_default_float).code if dt is None else _dtype_code(dt)
    cdef cg_tensor *r = NULL
    cdef int dev = CG_DEVICE_CPU if device is None else _device_id(device)
    if dev != CG_DEVICE_CPU and which in (0, 1, 2, 3):  # made on the device
        if which == 0:
            _check(cg_zeros_on(dev, <cg_dtype>code, n, s, &r))
        else:
            _check(cg_empty_on(dev, <cg_dtype>code, n, s, &r))
            if which != 2:
                st = cg_fill_(r, 1.0 if which == 1 else value)
                if st != CG_OK:
                    cg_tensor_free(r)
                    _raise(st)
        out = _wrap(r)
        if requires_grad:
            out.requires_grad_(True)
        return out
    if which == 0:
        _check(cg_zeros(<cg_dtype>code, n, s, &r))
    elif which == 1:
        _check(cg_ones(<cg_dtype>code, n, s, &r))
    elif which == 2:
        _check(cg_empty(<cg_dtype>code, n, s, &r))
    elif which == 3:
        _check(cg_full(<cg_dtype>code, n, s, value, &r))
    elif which == 4:
        _check(cg_randn(<cg_dtype>code, n, s, &r))
    elif which == 5:
        _check(cg_rand(<cg_dtype>code, n, s, &r))
    out = _wrap(r)
    if dev != CG_DEVICE_CPU:  # random numbers: the host generator's stream, then moved
        out = _to_device(out, device)
    if requires_grad:
        out.requires_grad_(True)
    return out

def zeros(*shape, dtype=None, requires_grad=False, device=None):
    return _creation(0, shape, dtype, requires_grad, device=device)

def ones(*shape, dtype=None, requires_grad=False, device=None):
    return _creation(1, shape, dtype, requires_grad, device=device)

def empty(*shape, dtype=None, requires_grad=False, device=None):
    return _creation(2, shape, dtype, requires_grad, device=device)

def full(shape, fill_value, dtype=None, requires_grad=False, device=None):
    if dtype is None:
        if isinstance(fill_value, bool):
            dtype = bool_
        elif isinstance(fill_value, (int, np.integer)):
            dtype = int64
    return _creation(3, (shape,), dtype, requires_grad, float(fill_value), device=device)

def randn(*shape, dtype=None, requires_grad=False, device=None):
    return _creation(4, shape, dtype, requires_grad, device=device)

def rand(*shape, dtype=None, requires_grad=False, device=None):
    return _creation(5, shape, dtype, requires_grad, device=device)

def randint(low, high=None, size=None, dtype=None, device=None):
    if high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint: size is required")
    cdef int64_t s[8]
    cdef int n = _fill_shape(tuple(size) if isinstance(size, (tuple, list)) else (size,), s)
    cdef cg_tensor *r = NULL
    _check(cg_randint(low, high, n, s, &r))
    out = _wrap(r)
    out = out if dtype is None else out.to(dtype)
    return out if device is None else out.to(device)

def randperm(n, device=None):
    cdef cg_tensor *r = NULL
    _check(cg_randperm(n, &r))
    out = _wrap(r)
    return out if device is None else out.to(device)

def arange(start, end=None, step=1, dtype=None, requires_grad=False, device=None):
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = int64 if all(isinstance(v, (int, np.integer)) for v in (start, end, step)) else _default_float
    cdef cg_tensor *r = NULL
    _check(cg_arange(<cg_dtype>_dtype_code(dtype), start, end, step, &r))
    out = _wrap(r)
    if device is not None:
        out = out.to(device)
    if requires_grad:
        out.requires_grad_(True)
    return out

def manual_seed(seed):
    """Seeds cgrad's generator (rand, randn, dropout, randint, randperm)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    cg_manual_seed(<uint64_t>(seed & 0xFFFFFFFFFFFFFFFF))

def get_rng_state():
    """The generator's state as a 4-element int64 tensor (its 256 bits), for
    checkpoints; set_rng_state(state) restores it."""
    cdef uint64_t st[4]
    cg_rng_get_state(st)
    words = np.array([st[0], st[1], st[2], st[3]], dtype=np.uint64).view(np.int64)
    return from_numpy(words.copy())

def set_rng_state(new_state):
    """Restores a state returned by get_rng_state()."""
    arr = np.asarray(new_state.numpy() if isinstance(new_state, Tensor) else new_state)
    if arr.shape != (4,) or arr.dtype.kind not in "iu":
        raise ValueError(f"set_rng_state: expected 4 integer words from get_rng_state(), got shape {arr.shape} dtype {arr.dtype}")
    words = arr.astype(np.int64).view(np.uint64)
    cdef uint64_t st[4]
    for i in range(4):
        st[i] = <uint64_t>int(words[i])
    _check(cg_rng_set_state(st))

# ------------------------------------------------------------------ grad mode
def is_grad_enabled():
    return bool(cg_is_grad_enabled())

def _set_grad_enabled(enabled):
    """Sets grad mode for this thread; returns the previous setting."""
    return bool(cg_set_grad_enabled(bool(enabled)))

def autograd_grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
                  allow_unused=False):
    """Gradients of outputs with respect to inputs (PyTorch's autograd.grad)."""
    single_in = isinstance(inputs, Tensor)
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins = [inputs] if single_in else list(inputs)
    if grad_outputs is None:
        gouts = [None] * len(outs)
    elif isinstance(grad_outputs, Tensor):
        gouts = [grad_outputs]
    else:
        gouts = list(grad_outputs)
    if len(gouts) != len(outs):
        raise ValueError(f"grad_outputs has {len(gouts)} entries but there are {len(outs)} outputs")
    for k, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"outputs[{k}] is {type(o).__name__}, not a Tensor")
    for k, t in enumerate(ins):
        if not isinstance(t, Tensor):
            raise TypeError(f"inputs[{k}] is {type(t).__name__}, not a Tensor")
    gouts = [None if g is None else _as_tensor(g, <Tensor>o) for g, o in zip(gouts, outs)]
    cdef int no = len(outs), ni = len(ins)
    cdef cg_tensor **co = <cg_tensor **>malloc(no * sizeof(cg_tensor *))
    cdef cg_tensor **cgo = <cg_tensor **>malloc(no * sizeof(cg_tensor *))
    cdef cg_tensor **ci = <cg_tensor **>malloc(ni * sizeof(cg_tensor *))
    cdef cg_tensor **cr = <cg_tensor **>malloc(ni * sizeof(cg_tensor *))
    cdef int i
    cdef cg_status st
    cdef int retain = bool(create_graph) if retain_graph is None else bool(retain_graph)
    cdef int create = bool(create_graph), unused = bool(allow_unused)
    if co == NULL or cgo == NULL or ci == NULL or cr == NULL:
        free(co); free(cgo); free(ci); free(cr)
        raise MemoryError()
    try:
        for i in range(no):
            co[i] = (<Tensor>outs[i]).c
            cgo[i] = NULL if gouts[i] is None else (<Tensor>gouts[i]).c
        for i in range(ni):
            ci[i] = (<Tensor>ins[i]).c
            cr[i] = NULL
        with nogil:
            st = cg_grad(no, co, cgo, ni, ci, retain, create, unused, cr)
        _check(st)
        result = tuple([None if cr[i] == NULL else _wrap(cr[i]) for i in range(ni)])
    finally:
        free(co); free(cgo); free(ci); free(cr)
    return result

# ------------------------------------------------------------------ nn kernels
cdef void _pair(object v, int64_t *out, str what) except *:
    if isinstance(v, (int, np.integer)):
        out[0] = v
        out[1] = v
    else:
        v = tuple(v)
        if len(v) != 2:
            raise ValueError(f"{what} must be an int or a pair, got {v!r}")
        out[0] = v[0]
        out[1] = v[1]

def conv2d(Tensor input not None, Tensor weight not None, bias=None, stride=1, padding=0, dilation=1, groups=1):
    cdef int64_t s[2]
    cdef int64_t p[2]
    cdef int64_t d[2]
    _pair(stride, s, "stride")
    _pair(padding, p, "padding")
    _pair(dilation, d, "dilation")
    cdef cg_tensor *b = NULL
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias must be a Tensor or None, got {type(bias).__name__}")
        b = (<Tensor>bias).c
    cdef cg_tensor *r = NULL
    cdef cg_status st
    cdef int64_t g = groups
    with nogil:
        st = cg_conv2d(input.c, weight.c, b, s, p, d, g, &r)
    _check(st)
    return _wrap(r)

def linear(Tensor input not None, Tensor weight not None, Tensor bias=None):
    """The linear op of the C core, input @ weight.T + bias in one GEMM
    (cgrad.nn.functional.linear calls it for a 2-D weight and a 1-D or no
    bias)."""
    cdef cg_tensor *r = NULL
    cdef cg_tensor *b = NULL if bias is None else bias.c
    cdef cg_status st
    if cg_tensor_numel(input.c) >= NOGIL_MIN or cg_tensor_numel(weight.c) >= NOGIL_MIN:
        with nogil:
            st = cg_linear(input.c, weight.c, b, &r)
    else:
        st = cg_linear(input.c, weight.c, b, &r)
    _check(st)
    return _wrap(r)

def max_pool2d(Tensor input not None, kernel_size, stride=None, padding=0):
    cdef int64_t k[2]
    cdef int64_t s[2]
    cdef int64_t p[2]
    _pair(kernel_size, k, "kernel_size")
    _pair(kernel_size if stride is None else stride, s, "stride")
    _pair(padding, p, "padding")
    cdef cg_tensor *r = NULL
    cdef cg_status st
    with nogil:
        st = cg_max_pool2d(input.c, k, s, p, &r)
    _check(st)
    return _wrap(r)

def avg_pool2d(Tensor input not None, kernel_size, stride=None, padding=0, count_include_pad=True):
    cdef int64_t k[2]
    cdef int64_t s[2]
    cdef int64_t p[2]
    _pair(kernel_size, k, "kernel_size")
    _pair(kernel_size if stride is None else stride, s, "stride")
    _pair(padding, p, "padding")
    cdef cg_tensor *r = NULL
    cdef cg_status st
    cdef int cip = bool(count_include_pad)
    with nogil:
        st = cg_avg_pool2d(input.c, k, s, p, cip, &r)
    _check(st)
    return _wrap(r)

def dropout(Tensor input not None, double p=0.5, training=True):
    cdef cg_tensor *r = NULL
    _check(cg_dropout(input.c, p, bool(training), &r))
    return _wrap(r)

_REDUCTIONS = {"none": CG_REDUCTION_NONE, "mean": CG_REDUCTION_MEAN, "sum": CG_REDUCTION_SUM}

def nll_loss(Tensor input not None, Tensor target not None, Tensor weight=None,
             int64_t ignore_index=-100, reduction="mean"):
    """The nll_loss op of the C core (cgrad.nn.functional.nll_loss checks
    and converts its arguments, then calls this)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"nll_loss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    cdef cg_tensor *r = NULL
    cdef cg_tensor *w = NULL if weight is None else weight.c
    _check(cg_nll_loss(input.c, target.c, w, ignore_index, _REDUCTIONS[reduction], &r))
    return _wrap(r)

def embedding(input, Tensor weight not None):
    cdef Tensor idx = _index_tensor(input, weight)
    cdef cg_tensor *r = NULL
    _check(cg_embedding(weight.c, idx.c, &r))
    return _wrap(r)

def sum_to_size(Tensor x not None, *shape):
    cdef int64_t s[8]
    cdef int n = _fill_shape(_shape_args(shape), s)
    cdef cg_tensor *r = NULL
    _check(cg_sum_to_shape(x.c, n, s, &r))
    return _wrap(r)

# ------------------------------------------------------------------ BLAS
ctypedef void (*f_sgemm)(char *ta, char *tb, int *m, int *n, int *k, float *alpha, float *a,
                         int *lda, float *b, int *ldb, float *beta, float *c, int *ldc) noexcept nogil
ctypedef void (*f_dgemm)(char *ta, char *tb, int *m, int *n, int *k, double *alpha, double *a,
                         int *lda, double *b, int *ldb, double *beta, double *c, int *ldc) noexcept nogil

cdef f_sgemm _blas_sgemm = NULL
cdef f_dgemm _blas_dgemm = NULL
DEF INT_MAX = 2147483647

cdef inline bint _fits(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) noexcept nogil:
    return (m > 0 and n > 0 and k > 0 and m < INT_MAX and n < INT_MAX and k < INT_MAX
            and lda < INT_MAX and ldb < INT_MAX and ldc < INT_MAX)

# Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the
# operands and the sizes, keep the transposition flags.
cdef void _sgemm_blas(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      float *c, int64_t ldc) noexcept nogil:
    if not _fits(m, n, k, lda, ldb, ldc):
        cg_builtin_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    cdef char cta = b'T' if ta else b'N'
    cdef char ctb = b'T' if tb else b'N'
    cdef int im = <int>m, jn = <int>n, kk = <int>k
    cdef int ilda = <int>lda, ildb = <int>ldb, ildc = <int>ldc
    _blas_sgemm(&ctb, &cta, &jn, &im, &kk, &alpha, <float *>b, &ildb, <float *>a, &ilda, &beta, c, &ildc)

cdef void _dgemm_blas(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
                      const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                      double *c, int64_t ldc) noexcept nogil:
    if not _fits(m, n, k, lda, ldb, ldc):
        cg_builtin_dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    cdef char cta = b'T' if ta else b'N'
    cdef char ctb = b'T' if tb else b'N'
    cdef int im = <int>m, jn = <int>n, kk = <int>k
    cdef int ilda = <int>lda, ildb = <int>ldb, ildc = <int>ldc
    _blas_dgemm(&ctb, &cta, &jn, &im, &kk, &alpha, <double *>b, &ildb, <double *>a, &ilda, &beta, c, &ildc)

cdef object _blas_name = None

def use_blas(enabled=True):
    """Route matmul/conv GEMMs through SciPy's BLAS (default when SciPy is
    importable) or, with enabled=False, through cgrad's built-in kernel.
    Returns the name of the GEMM now in use."""
    global _blas_sgemm, _blas_dgemm, _blas_name
    if not enabled:
        cg_set_gemm(NULL, NULL)
        _blas_name = None
        return "builtin"
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        cg_set_gemm(NULL, NULL)
        _blas_name = None
        return "builtin"
    caps = cython_blas.__pyx_capi__
    _blas_sgemm = <f_sgemm>PyCapsule_GetPointer(caps["sgemm"], PyCapsule_GetName(caps["sgemm"]))
    _blas_dgemm = <f_dgemm>PyCapsule_GetPointer(caps["dgemm"], PyCapsule_GetName(caps["dgemm"]))
    cg_set_gemm(_sgemm_blas, _dgemm_blas)
    _blas_name = "scipy.linalg.cython_blas"
    return _blas_name

def gemm_backend():
    return _blas_name or "builtin"

__version__ = CG_VERSION_STRING.decode()

# ------------------------------------------------------------------ custom Functions
include "_function.pxi"

# ------------------------------------------------------------------ LR schedules
include "_schedule.pxi"

# ------------------------------------------------------------------ anomaly mode, observers
include "_anomaly.pxi"
include "_observe.pxi"

# ------------------------------------------------------------------ optimizer updates, clipping, stats
include "_train.pxi"
include "_monitor.pxi"

# ------------------------------------------------------------------ row-sparse tensors, sparse linear
include "_sparse.pxi"
include "_ops.pxi"
include "_device.pxi"
