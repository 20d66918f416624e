"""cgrad.ops: custom ops written in C, registered once, called from Python.

A shared library registers its ops with cg_op_register (include/cgrad.h)
from an init function; Python loads it and calls them like built-ins:

    // myops.c -- cc -shared -fPIC myops.c -o myops.so $(python -m cgrad --cflags)
    #include "cgrad.h"
    static cg_status fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p,
                         cg_tensor **out) { return cg_mul_scalar(x[0], p[0], out); }
    static cg_status bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p,
                         cg_tensor *y, cg_tensor *g, const int *needs, cg_tensor **gx) {
        return cg_mul_scalar(g, p[0], &gx[0]);
    }
    int cgrad_register_ops(void) { return cg_op_register("scale", 1, 1, fwd, bwd, NULL, NULL); }

    >>> cgrad.ops.load_library("myops.so")
    ['scale']
    >>> y = cgrad.ops.scale(x, 3.0)          # or cgrad.ops.call("scale", x, params=(3.0,))
    >>> cgrad.ops.gradcheck("scale", x64, params=(3.0,))   # cg_gradcheck, in C

`cgrad.ops.<name>` is an OpHandle resolved once (cg_op_find) and cached:
calls through it skip the registry's name lookup and lock, as a C caller
of cg_op_call_handle does; keep it in a variable in a hot loop
(`scale = cgrad.ops.scale`). A handle keeps its op alive, so one held
across cgrad.ops.unregister still runs the op it was taken on;
cgrad.ops.<name> itself resolves again once its op is unregistered.

The library is not linked against libcgrad: its cg_ symbols resolve to the
copy inside cgrad's extension module, which cgrad loads with RTLD_GLOBAL,
so the op records on the same tape as every other op. A C program that
links libcgrad calls the same registry with cg_op_call.
"""
import ctypes
import os

from cgrad import _core

__all__ = ["load_library", "call", "list_ops", "info", "unregister", "gradcheck"]

_loaded = {}
_handles = {}  # name -> OpHandle, dropped when its op is no longer registered


def load_library(path, init="cgrad_register_ops"):
    """Loads a shared library and calls its init function (int init(void),
    returning a cg_status). Returns the names of the ops it registered.
    Loading the same file twice does nothing and returns []."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"cgrad.ops.load_library: {path} does not exist")
    key = os.path.realpath(path)
    if key in _loaded:
        return []
    try:
        lib = ctypes.CDLL(key)
    except OSError as e:
        raise OSError(f"cgrad.ops.load_library: cannot load {path}: {e}") from None
    try:
        fn = getattr(lib, init)
    except AttributeError:
        raise AttributeError(f"cgrad.ops.load_library: {path} has no function {init}()") from None
    fn.restype = ctypes.c_int
    fn.argtypes = []
    before = set(_core._op_names())
    status = fn()
    if status != 0:
        raise RuntimeError(f"cgrad.ops.load_library: {init}() in {path} failed with status {status}: "
                           f"{_core._last_error()}")
    _loaded[key] = lib
    return [n for n in _core._op_names() if n not in before]


def call(name, *tensors, params=()):
    """Calls registered op name on tensors with scalar params."""
    if not isinstance(name, str):
        raise TypeError(f"cgrad.ops.call: name must be a string, got {type(name).__name__}")
    return _core._op_call(name, tuple(tensors), tuple(params))


def list_ops():
    """Names of the registered ops, in registration order."""
    return _core._op_names()


def info(name):
    """(number of tensor inputs, number of params) of op name."""
    return _core._op_info(name)


def unregister(name):
    _core._op_unregister(name)
    _handles.pop(name, None)


def gradcheck(name, *inputs, params=(), eps=1e-6, atol=1e-5, rtol=1e-3):
    """The C gradcheck (cg_op_gradcheck) of op name at float64 inputs;
    True, or GradcheckError naming the input, element and both values."""
    return _core._op_gradcheck(name, tuple(inputs), tuple(params), eps, atol, rtol)


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(name)
    op = _handles.get(name)
    if op is not None and op.registered:  # one C call, no lock: the cached handle is current
        return op
    try:
        op = _core._op_find(name)
    except ValueError:
        _handles.pop(name, None)
        raise AttributeError(f"cgrad.ops has no op {name!r} (registered: {', '.join(_core._op_names()) or 'none'})") from None
    _handles[name] = op
    return op
