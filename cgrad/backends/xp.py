"""The device backend written against an array namespace ``xp``.

The C core keeps every op's shape logic, dtype promotion and tape recording;
for a tensor on a backend device it allocates the outputs through
:meth:`ArrayBackend.alloc` and calls :meth:`ArrayBackend.run` with a kernel
name, the output arrays (to be written in place), the input arrays and the
kernel's scalar parameters (``docs/backend.md`` lists them all). This module
implements those kernels once, for any ``xp`` that follows NumPy's API:

- ``xp = cupy``: the "cuda" device on a GPU (cuBLAS through ``matmul``,
  CuPy ufuncs and reductions, RawKernels where fusion pays: see
  ``cgrad/backends/cuda_kernels.py``);
- ``xp = numpy``: the reference device that machines without a GPU run, so
  the same code path is tested in CI against the CPU backend.

Buffers are 1-D uint8 arrays; a tensor is a strided view of one. Inputs may
also be NumPy scalars: a 0-d host tensor joins device tensors as a scalar,
as in PyTorch.
"""
import sys
import weakref

import numpy as np

from cgrad.backends.xp_elementwise import ElementwiseKernels
from cgrad.backends.xp_nn import NNKernels
from cgrad.backends.xp_optim import _RAW_DTYPES, OptimKernels
from cgrad.backends.xp_reduce import ReduceKernels
from cgrad.backends.xp_sparse import SparseKernels



def _call(kernel, out, ins, f, i):
    kernel(out, ins, f, i)


# The reference device's kernel calls: NaN / inf results are part of the
# kernels' contracts, as in C, so NumPy's floating-point warnings are off.
# The decorator form costs half of a `with np.errstate(...)` block per call.
_call_quietly = np.errstate(all="ignore")(_call)


def _cupy_view(cupy):
    """make_view for CuPy: cupy.ndarray takes a memory pointer, not a buffer
    and an offset."""
    ndarray = cupy.ndarray

    def make_view(shape, dtype, buf, offset, strides):
        return ndarray(shape, dtype, buf.data + offset if offset else buf.data, strides)
    return make_view


class ArrayBackend(ElementwiseKernels, ReduceKernels, NNKernels, OptimKernels, SparseKernels):
    """Kernels of one device over the array namespace ``xp``. The kernels
    themselves live in mixin classes, one per family (xp_elementwise.py,
    ...): every method named ``k_<kernel>`` is a kernel.

    ``special`` provides ``erf`` (``scipy.special`` for NumPy,
    ``cupyx.scipy.special`` for CuPy)."""

    def __init__(self, xp, name, special, is_gpu):
        self.xp = xp
        self.name = name
        self.special = special
        self.is_gpu = is_gpu
        self.allocated = 0       # bytes held by live buffers
        self.peak = 0
        self.n_allocs = 0
        # What the C core's kernel calls use (cgrad/_device.pxi reads them
        # once): make_view(shape, dtype, buffer, byte offset, byte strides or
        # None for row-major) is a strided view of a buffer (NumPy's ndarray
        # constructor itself takes exactly these); invoke(kernel, out, ins,
        # f, i) runs a kernel, None: call it as it is.
        self.make_view = _cupy_view(xp) if is_gpu else np.ndarray
        self.invoke = None if is_gpu else _call_quietly
        self._new_buffer = (xp.empty, xp.zeros)
        # The fused training kernels (cuda_kernels.RawKernels, each compiled
        # on first use) on a GPU; None: every kernel is array expressions.
        # tests/python/cuda_emu.py sets CPU-run RawKernels on the reference
        # device to test the GPU's fused path without a GPU.
        self.raw_kernels = None
        if is_gpu:
            from cgrad.backends.cuda_kernels import NvrtcBuilder, RawKernels
            self.raw_kernels = RawKernels(NvrtcBuilder(xp))
        self.kernels = {}
        for attr in dir(self):
            if attr.startswith("k_"):
                self.kernels[attr[2:]] = getattr(self, attr)
        for cls in type(self).__mro__:
            reg = cls.__dict__.get("_register_kernels")
            if reg is not None:
                reg(self)

    def _raw_float(self, *arrays):
        """A RawKernel of cuda_kernels.py applies to these operands: the
        backend has RawKernels (a GPU), the first is float32 or float64 and
        every one (None skipped) is C-contiguous, as the kernels index
        them; otherwise the array expressions run."""
        return (self.raw_kernels is not None and arrays[0].dtype in _RAW_DTYPES
                and all(a is None or a.flags.c_contiguous for a in arrays))

    # ----------------------------------------------------------- buffers
    def alloc(self, nbytes, zero):
        buf = self._new_buffer[zero](nbytes, np.uint8)
        self.track(buf)
        self.n_allocs += 1
        return buf

    def track(self, buf):
        """Counts buf in memory_allocated until free() (or, when an exported
        view outlives the tensors, until the buffer itself dies)."""
        self.allocated += buf.nbytes
        if self.allocated > self.peak:
            self.peak = self.allocated

    def _untrack(self, nbytes):
        self.allocated -= nbytes

    # References to buf inside free(): the library's, the caller's
    # temporary, free's argument and getrefcount's own.
    _FREE_REFS = 4

    def free(self, buf):
        """The library dropped its reference to buf. Anything else still
        holding it (a DLPack or CUDA Array Interface export) keeps the memory
        in use: it is counted until the buffer dies."""
        if sys.getrefcount(buf) > self._FREE_REFS:
            weakref.finalize(buf, self._untrack, buf.nbytes)
        else:
            self.allocated -= buf.nbytes

    def wrap(self, arr):
        """(buffer, strides in elements) viewing arr at offset 0 without a
        copy when arr is C- or F-contiguous; any other layout is copied to a
        C-contiguous array first."""
        xp = self.xp
        if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
            arr = xp.ascontiguousarray(arr)
        isz = arr.dtype.itemsize
        order = "C" if arr.flags.c_contiguous else "F"
        buf = arr.reshape(-1, order=order).view(xp.uint8)
        return buf, tuple(s // isz for s in arr.strides)

    def to_host(self, arr, host):
        """host[...] = arr (host: a NumPy array of arr's shape and dtype)."""
        host[...] = arr.get() if self.is_gpu else arr

    def from_host(self, arr, host):
        arr[...] = self.xp.asarray(host) if self.is_gpu else host

    def synchronize(self):
        if self.is_gpu:
            self.xp.cuda.Device().synchronize()

    # ----------------------------------------------------------- dispatch
    def run(self, name, n_out, arrays, f, i):
        """Runs kernel `name` on arrays (the n_out outputs first). The C
        core's calls take the same path without this frame (_device.pxi)."""
        k = self.kernels.get(name)
        if k is None:
            raise NotImplementedError(f"'{name}' is not supported on device '{self.name}'")
        (self.invoke or _call)(k, arrays[:n_out], arrays[n_out:], f, i)

    # ---------------------------------------------------------- interop
    def is_native(self, obj):
        """obj is an array of this backend's namespace (zero-copy import)."""
        return isinstance(obj, self.xp.ndarray)

    def from_dlpack(self, ext):
        return self.xp.from_dlpack(ext)

    def cuda_array_interface(self, arr):
        if self.is_gpu:
            return arr.__cuda_array_interface__
        # The reference device's memory is host memory: the same dict, with
        # the host pointer (what "device" means there).
        ai = arr.__array_interface__
        return {"shape": ai["shape"], "typestr": ai["typestr"], "data": ai["data"],
                "strides": ai.get("strides"), "version": 3, "stream": None}

    def data_ptr(self, arr):
        return arr.data.ptr if self.is_gpu else arr.__array_interface__["data"][0]
