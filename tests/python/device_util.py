"""Which "cuda" the tests run on, and helpers to compare the two devices.

Imported by conftest.py before cgrad: on a machine without CuPy or without a
usable GPU, "cuda" runs on the NumPy reference device
(CGRAD_CUDA_REFERENCE=1), so every device test runs in CI. Tests that need
real GPU memory use ``requires_gpu``."""
import importlib.util
import os

import numpy as np
import pytest


def _real_gpu():
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


REAL_GPU = os.environ.get("CGRAD_CUDA_REFERENCE", "") in ("", "0") and _real_gpu()
if not REAL_GPU:
    os.environ["CGRAD_CUDA_REFERENCE"] = "1"

requires_gpu = pytest.mark.skipif(not REAL_GPU, reason="needs a real GPU (CuPy and an NVIDIA driver); "
                                                       "'cuda' runs on the NumPy reference device here")


def host(t):
    """A tensor's values as a NumPy array, whatever its device."""
    t = t.detach()
    return t.cpu().numpy().copy()


def assert_same_values(cpu, dev, rtol=1e-6, atol=1e-7):
    """dev (on 'cuda') holds what cpu holds: same shape, dtype and values."""
    assert str(dev.device).startswith("cuda"), dev.device
    assert cpu.shape == dev.shape and cpu.dtype == dev.dtype, (cpu.shape, dev.shape, cpu.dtype, dev.dtype)
    a, b = host(cpu), host(dev)
    if a.dtype.kind in "biu":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, equal_nan=True)


def record_kernels(monkeypatch, backend):
    """From now until monkeypatch undoes it, the names of backend's kernel
    calls are appended to the returned list."""
    names = []
    for name, k in dict(backend.kernels).items():
        monkeypatch.setitem(backend.kernels, name, lambda out, ins, f, i, k=k, name=name:
                            (names.append(name), k(out, ins, f, i)))
    return names


def record_copies_back(monkeypatch):
    """From now until monkeypatch undoes it, the shapes of the device -> host
    copies the C core asks the "cuda" backend for (each a sync on a GPU)
    are appended to the returned list."""
    import cgrad
    be = cgrad.cuda._init()
    shapes, orig = [], be.to_host
    monkeypatch.setattr(be, "to_host", lambda arr, h: (shapes.append(arr.shape), orig(arr, h))[1])
    return shapes
