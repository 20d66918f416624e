"""Runs the CUDA sources of cgrad/backends/cuda_kernels.py on the CPU.

CI has no GPU, so a RawKernel's arithmetic, its launch and the arguments
the "cuda" backend passes it would otherwise only ever be compiled (by
test_cuda_kernels_nvcc.py). :class:`RawKernel` stands in for a kernel
cuda_kernels.NvrtcBuilder builds for a GPU (the same call: grid, block,
args): it compiles the same source with the host C++ compiler
under ``cuda_emu.h`` (the CUDA built-ins it uses, a warp's lanes as fibers
in lockstep) and runs it over the launch's grid on NumPy arrays.

It is stricter than CuPy's launch, which passes each argument's bytes as they are:
every argument must match its parameter's C type (an array of the pointee's
dtype, C-contiguous, writeable unless the pointer is const; a NumPy scalar
of exactly the scalar parameter's type, never a Python number). The kernel
runs on padded copies of the arrays: writes past an array's end are
reported, and the padding reads as (signalling) NaN, so reads past it
poison the result.

:func:`kernels_of` makes it the RawKernel provider of an ArrayBackend (the
reference device) within a block, so the C core's calls take the fused path
there.
"""
import atexit
import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter

import numpy as np

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emu.h")
CXX = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")

_C_TYPES = {"float": np.float32, "double": np.float64, "cg_half": np.float16,
            "long long": np.int64, "int": np.int32, "unsigned long long": np.uint64}
_PAD = 64  # bytes of padding each side of an array's copy
# The padding: signalling NaNs of the array's element size. A read of it
# makes a float result NaN; arithmetic on it gives a quiet NaN, other bits,
# so even a NaN written past the end shows.
_SNAN = {2: np.uint16(0x7D00), 4: np.uint32(0x7FA00000), 8: np.uint64(0x7FF4000000000000)}


def _padding(itemsize):
    return np.full(_PAD // itemsize, _SNAN[itemsize]).view(np.uint8)

launches = Counter()  # entry name -> kernels launched (tests check the fused path ran)

_build_dir = None
_libs = {}


def _dir():
    global _build_dir
    if _build_dir is None:
        _build_dir = tempfile.mkdtemp(prefix="cgrad-cuda-emu-")
        atexit.register(shutil.rmtree, _build_dir, True)
    return _build_dir


class Param:
    def __init__(self, text, typedefs):
        words = text.replace("*", " * ").split()
        self.const = "const" in words
        self.pointer = "*" in words
        self.name = words[-1]
        base = " ".join(w for w in words[:-1] if w not in ("const", "*"))
        self.ctype = typedefs.get(base, base)
        if self.ctype not in _C_TYPES:
            raise ValueError(f"parameter {text!r}: no NumPy dtype for C type {self.ctype!r}")
        self.dtype = np.dtype(_C_TYPES[self.ctype])
        self.cdecl = base + (" *" if self.pointer else "")


def signature(code, name):
    """The parameters of kernel `name` in CUDA source `code`."""
    typedefs = {m.group(2): m.group(1) for m in re.finditer(r"typedef\s+([\w ]+?)\s+(\w+)\s*;", code)}
    m = re.search(r'extern\s+"C"\s+__global__\s+void\s+' + re.escape(name) + r"\s*\((.*?)\)\s*\{",
                  code, re.S)
    if m is None:
        raise ValueError(f"no extern \"C\" __global__ kernel {name!r} in the source")
    return [Param(p, typedefs) for p in m.group(1).split(",")]


def _compile(code, name, params):
    key = hashlib.sha1((code + "\0" + name).encode()).hexdigest()[:16]
    lib = _libs.get(key)
    if lib is not None:
        return lib
    if CXX is None:
        raise RuntimeError("no C++ compiler (c++ or g++) to build the CUDA emulation with")
    d = _dir()
    call = ", ".join(f"*({p.cdecl} *)a[{k}]" for k, p in enumerate(params))
    src = os.path.join(d, f"{key}.cpp")
    with open(src, "w") as fh:
        fh.write(code)
        fh.write(f"\nstatic void cg_emu_invoke(void **a) {{ {name}({call}); }}\n")
    so = os.path.join(d, f"{key}.so")
    r = subprocess.run([CXX, "-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared",
                        "-fPIC", "-Wall", "-Werror", "-Wno-unused-function", "-I", d,
                        "-include", HEADER, src, "-o", so], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"the CUDA emulation of {name} does not compile:\n{r.stderr}")
    lib = ctypes.CDLL(so)
    lib.cg_emu_launch.argtypes = (ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p))
    lib.cg_emu_launch.restype = ctypes.c_int
    _libs[key] = lib
    return lib


class RawKernel:
    """A kernel built from (code, name, options), run on the CPU."""

    def __init__(self, code, name, options=()):
        if "--fmad=false" not in options:
            raise ValueError(f"{name}: compiled without --fmad=false, the device may contract "
                             "multiply-adds the host does not (options {options!r})")
        self.name = name
        self.params = signature(code, name)
        self._lib = _compile(code, name, self.params)

    def __call__(self, grid, block, args, shared_mem=0):
        if len(grid) != 1 or len(block) != 1:
            raise ValueError(f"{self.name}: only 1-D launches are emulated, got {grid} x {block}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        copies = {}     # (address, nbytes) -> [original array, padded copy, written]
        keep, slots = [], []
        for k, (a, p) in enumerate(zip(args, self.params)):
            where = f"{self.name} argument {k} ({p.name}: {'const ' * p.const}{p.cdecl})"
            if p.pointer:
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{where}: expected an array, got {type(a).__name__}")
                if a.dtype != p.dtype:
                    raise TypeError(f"{where}: expected a {p.dtype} array, got {a.dtype}")
                if not a.flags.c_contiguous:
                    raise ValueError(f"{where}: the array is not C-contiguous (strides {a.strides})")
                if not p.const and not a.flags.writeable:
                    raise ValueError(f"{where}: the array is read-only")
                addr = a.__array_interface__["data"][0]
                for (b, nb), c in copies.items():
                    if (b, nb) != (addr, a.nbytes) and addr < b + nb and b < addr + a.nbytes:
                        raise ValueError(f"{where}: overlaps another argument without being it")
                c = copies.get((addr, a.nbytes))
                if c is None:
                    canary = _padding(a.itemsize)
                    pad = np.concatenate([canary, a.reshape(-1).view(np.uint8), canary])
                    c = copies[(addr, a.nbytes)] = [a, pad, False]
                c[2] |= not p.const
                slot = ctypes.c_void_p(c[1].ctypes.data + _PAD)
            else:
                if not isinstance(a, np.generic):
                    raise TypeError(f"{where}: expected a NumPy {p.dtype} scalar, got "
                                    f"{type(a).__name__} {a!r} (CuPy would pass its bytes as they are)")
                if a.dtype != p.dtype:
                    raise TypeError(f"{where}: expected a {p.dtype} scalar, got {a.dtype} {a!r}")
                slot = ctypes.create_string_buffer(a.tobytes(), a.dtype.itemsize)
            keep.append(slot)
            slots.append(ctypes.addressof(slot))
        argv = (ctypes.c_void_p * len(slots))(*slots)
        rc = self._lib.cg_emu_launch(int(grid[0]), int(block[0]), argv)
        if rc == 1:
            raise RuntimeError(f"{self.name}: the lanes of a warp diverged at a shuffle")
        if rc != 0:
            raise RuntimeError(f"{self.name}: bad launch {grid} x {block}")
        for a, pad, written in copies.values():
            canary = _padding(a.itemsize)
            if (pad[:_PAD] != canary).any() or (pad[_PAD + a.nbytes:] != canary).any():
                raise RuntimeError(f"{self.name} wrote past the end of an array of {a.size} "
                                   f"{a.dtype} elements")
            if written:
                a.reshape(-1).view(np.uint8)[...] = pad[_PAD:_PAD + a.nbytes]
        launches[self.name] += 1




def raw_kernels():
    """A cuda_kernels.RawKernels whose kernels run here."""
    from cgrad.backends.cuda_kernels import RawKernels
    return RawKernels(RawKernel)


@contextlib.contextmanager
def kernels_of(backend, kernels):
    """backend.raw_kernels is `kernels` within the block: raw_kernels() for
    the fused path run here, None for the array expressions."""
    was = backend.raw_kernels
    backend.raw_kernels = kernels
    try:
        yield backend
    finally:
        backend.raw_kernels = was


def fused_path_marks(real_gpu):
    """The pytestmark of a module that reruns device tests on the fused path
    here: skipped without a C++ compiler, and on a real GPU (whose own
    RawKernels the device tests run there)."""
    import pytest
    return [pytest.mark.skipif(CXX is None,
                               reason="no C++ compiler (c++ or g++) to emulate the CUDA kernels with"),
            pytest.mark.skipif(real_gpu, reason="a real GPU runs its own RawKernels in the device tests")]
