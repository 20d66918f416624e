"""cgrad.cuda: the GPU device "cuda".

Tensors move there with ``x.to("cuda")``, ``x.cuda()``, ``model.to("cuda")``
or ``cgrad.zeros(..., device="cuda")``; the tape stays in C and the kernels
are CuPy's (cgrad/backends/xp.py). CuPy is imported the first time the
device is used, so cgrad imports and runs without CuPy or a GPU.

On a machine without a GPU the same backend can run over NumPy as a
*reference device*: set ``CGRAD_CUDA_REFERENCE=1`` in the environment (or
call :func:`use_reference_device` before the first use). Every "cuda" code
path then runs, on host memory, which is how CI tests the GPU backend.
"""
import os

_backend = None        # the ArrayBackend of "cuda", once initialised
_device_id = None
_reference = None      # True / False once initialised
_error = None          # why CUDA is unavailable (a message), once known


def _want_reference():
    return os.environ.get("CGRAD_CUDA_REFERENCE", "") not in ("", "0")


def _make_backend():
    from cgrad.backends.xp import ArrayBackend
    if _want_reference():
        import numpy
        import scipy.special
        return ArrayBackend(numpy, "cuda", scipy.special, is_gpu=False), True
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("CUDA is not available: CuPy is not installed (pip install cupy-cuda13x, or "
                           "cupy-cuda12x for a CUDA 12 driver); "
                           f"import failed with: {e}. Set CGRAD_CUDA_REFERENCE=1 to run 'cuda' on the "
                           "NumPy reference device instead.") from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, driver too old, ...
        raise RuntimeError(f"CUDA is not available: the CUDA driver could not be used ({e}). Is an "
                           "NVIDIA driver installed? Set CGRAD_CUDA_REFERENCE=1 to run 'cuda' on the "
                           "NumPy reference device instead.") from None
    if n < 1:
        raise RuntimeError("CUDA is not available: no GPU was found")
    import cupyx.scipy.special
    return ArrayBackend(cupy, "cuda", cupyx.scipy.special, is_gpu=True), False


def _init():
    """Registers the "cuda" backend on first use; raises RuntimeError with
    the reason when it cannot."""
    global _backend, _device_id, _reference, _error
    if _backend is not None:
        return _backend
    if _error is not None and not _want_reference():
        raise RuntimeError(_error)
    try:
        backend, reference = _make_backend()
    except RuntimeError as e:
        _error = str(e)
        raise
    from cgrad import _core
    _device_id = _core._register_device("cuda", backend)
    _backend, _reference = backend, reference
    return backend


def use_reference_device():
    """Run "cuda" on the NumPy reference device (host memory). Must be called
    before the device is first used."""
    if _backend is not None and not _reference:
        raise RuntimeError("use_reference_device: 'cuda' already runs on a GPU in this process")
    os.environ["CGRAD_CUDA_REFERENCE"] = "1"
    _init()


def is_available():
    """True when tensors can be placed on "cuda" (a GPU, or the reference
    device when it was asked for)."""
    try:
        _init()
    except RuntimeError:
        return False
    return True


def is_reference():
    """True when "cuda" runs on the NumPy reference device, not a GPU."""
    return bool(is_available() and _reference)


def device_count():
    """Devices usable as "cuda" (cgrad uses device 0 only)."""
    return 1 if is_available() else 0


def current_device():
    _init()
    return 0


def get_device_name(device=None):
    b = _init()
    if not b.is_gpu:
        return "cgrad reference device (NumPy, host memory)"
    props = b.xp.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def synchronize(device=None):
    """Waits for every kernel queued on the device."""
    _init().synchronize()


def memory_allocated(device=None):
    """Bytes held by live tensors on the device (0 when CUDA is not
    available, as in PyTorch)."""
    return _backend.allocated if is_available() else 0


def max_memory_allocated(device=None):
    """Peak of memory_allocated since start or reset_peak_memory_stats (0
    when CUDA is not available)."""
    return _backend.peak if is_available() else 0


def reset_peak_memory_stats(device=None):
    b = _init()
    b.peak = b.allocated


def memory_stats(device=None):
    """A dict of allocator counters (PyTorch's key names where they exist);
    empty when CUDA is not available, as in PyTorch."""
    if not is_available():
        return {}
    b = _backend
    stats = {"allocated_bytes.all.current": b.allocated, "allocated_bytes.all.peak": b.peak,
             "num_alloc_retries": 0, "allocation.all.allocated": b.n_allocs}
    if b.is_gpu:
        pool = b.xp.get_default_memory_pool()
        stats["reserved_bytes.all.current"] = pool.total_bytes()
        stats["pool.used_bytes"] = pool.used_bytes()
    return stats


def memory_reserved(device=None):
    """Bytes the device allocator holds (live tensors plus cached blocks);
    on the reference device nothing is cached, so it is memory_allocated.
    0 when CUDA is not available."""
    if not is_available():
        return 0
    if _backend.is_gpu:
        return _backend.xp.get_default_memory_pool().total_bytes()
    return _backend.allocated


def empty_cache():
    """Returns the allocator's cached, unused blocks to the driver (CuPy's
    memory pool); live tensors are untouched. A no-op on the reference
    device and when CUDA is not available, as in PyTorch."""
    if is_available() and _backend.is_gpu:
        _backend.xp.get_default_memory_pool().free_all_blocks()
