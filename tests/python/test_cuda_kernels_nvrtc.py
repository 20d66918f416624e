"""Every CUDA source of cgrad/backends/cuda_kernels.py compiles with NVRTC
through NvrtcBuilder, the path a GPU takes (CuPy's compile_using_nvrtc with
the builder's options), and the code it makes keeps float32 subnormals: no
flush-to-zero instruction anywhere (cupy.RawKernel would have added
-ftz=true, cupy/cupy#9576). No GPU is needed: the architecture is given, and
the binary is inspected instead of loaded. Skipped with a reason where CuPy
or its NVRTC library is not installed (`make venv` installs both when the
package registry has them)."""
import importlib.util
import os

import numpy as np
import pytest

from cgrad.backends import cuda_kernels
from device_util import requires_gpu


def _nvrtc_missing():
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed"
    try:
        import cupy
        cupy.cuda.nvrtc.getVersion()
    except Exception as e:  # the library is not there, or cupy does not import
        return f"CuPy's NVRTC cannot be used here ({type(e).__name__}: {e})"
    return None


_MISSING = _nvrtc_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

ARCH = "90"
NAMES = [(n, d) for n in cuda_kernels.NAMES for d in ("float32", "float64")] + \
        [(n, "float16") for n in cuda_kernels.HALF_NAMES]


@pytest.fixture
def cupy_target(monkeypatch):
    """Makes CuPy's compiler target ARCH as `kind` ("ptx" or "cubin")
    without asking a device for its architecture (the one call of the
    compile path that needs a driver); returns a setter of the kind."""
    import cupy
    import cupy.cuda.compiler as compiler
    kind = {"v": "ptx"}

    def arch_option(arch=None):
        assert arch == ARCH, arch
        return (f"-arch=compute_{arch}", "ptx") if kind["v"] == "ptx" else (f"-arch=sm_{arch}", "cubin")

    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc", arch_option)
    calls = []
    real = compiler.compile_using_nvrtc

    def counting(source, options=(), *args, **kwargs):
        calls.append(tuple(options))
        return real(source, options, *args, **kwargs)

    monkeypatch.setattr(compiler, "compile_using_nvrtc", counting)

    def target(k):
        kind["v"] = k
        return calls
    target.cupy = cupy
    return target


def builder(cupy, tmp_path):
    return cuda_kernels.NvrtcBuilder(cupy, arch=ARCH, load=lambda binary, entry: binary,
                                     cache_dir=str(tmp_path))


@pytest.mark.parametrize("name,dtype", NAMES)
def test_kernel_compiles_without_flushing_subnormals(tmp_path, cupy_target, name, dtype):
    calls = cupy_target("ptx")
    ptx = builder(cupy_target.cupy, tmp_path)(cuda_kernels.source(name, dtype),
                                              cuda_kernels.entry(name, dtype),
                                              cuda_kernels.NVCC_OPTIONS).decode()
    assert calls == [cuda_kernels.NVCC_OPTIONS]  # exactly the kernels' options: no -ftz=true
    entry = cuda_kernels.entry(name, dtype)
    assert f".entry {entry}" in ptx, f"{entry} is not in the PTX"
    # instructions with .ftz treat subnormal inputs and results as 0. CUDA's
    # exp and log (libdevice, in the MATH_CALLS kernels) use approximate
    # ex2 / rcp with .ftz on range-reduced arguments, whatever -ftz says
    # (their results are theirs); the kernels' own arithmetic is IEEE.
    libm = name in cuda_kernels.MATH_CALLS
    flushing = [line.strip() for line in ptx.splitlines()
                if ".ftz" in line and not (libm and ".approx.ftz." in line)]
    assert not flushing, f"{entry} flushes subnormals: {flushing[:3]}"
    if name not in cuda_kernels.MATH_CALLS:  # as test_cuda_kernels_nvcc.py: no contraction
        assert "fma.rn" not in ptx, f"{entry} contracts a multiply-add"


def test_float16_conversions_are_the_exact_and_nearest_even_ones(tmp_path, cupy_target):
    """amp_unscale's float16 source has no header: its conversions are the
    PTX cvt instructions (f16 -> f32 exact, f32 -> f16 round to nearest
    even), the ones cuda_fp16.h's __half2float / __float2half_rn make."""
    cupy_target("ptx")
    ptx = builder(cupy_target.cupy, tmp_path)(cuda_kernels.source("amp_unscale", "float16"),
                                              "cg_amp_unscale_f16", cuda_kernels.NVCC_OPTIONS).decode()
    assert "#include" not in cuda_kernels.source("amp_unscale", "float16")
    assert "cvt.f32.f16" in ptx and "cvt.rn.f16.f32" in ptx


def test_cubin_is_cached_on_disk_and_reused(tmp_path, cupy_target):
    calls = cupy_target("cubin")
    src, entry = cuda_kernels.source("scale", "float32"), cuda_kernels.entry("scale", "float32")
    first = builder(cupy_target.cupy, tmp_path)(src, entry, cuda_kernels.NVCC_OPTIONS)
    assert first[:4] == b"\x7fELF"  # a cubin, ready to load
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 1 and files[0].startswith("cgrad-") and files[0].endswith(".bin")
    assert (tmp_path / files[0]).read_bytes() == first
    # a new process's builder finds it: no compile
    again = builder(cupy_target.cupy, tmp_path)(src, entry, cuda_kernels.NVCC_OPTIONS)
    assert again == first and len(calls) == 1
    # other options (or source, or architecture) are another kernel
    builder(cupy_target.cupy, tmp_path)(src, entry, cuda_kernels.NVCC_OPTIONS + ("-lineinfo",))
    assert len(calls) == 2 and len(os.listdir(tmp_path)) == 2


def test_unwritable_cache_only_costs_the_compile(tmp_path, cupy_target):
    calls = cupy_target("cubin")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder would be")
    b = cuda_kernels.NvrtcBuilder(cupy_target.cupy, arch=ARCH, load=lambda binary, entry: binary,
                                  cache_dir=str(blocker))
    src, entry = cuda_kernels.source("relu", "float64"), cuda_kernels.entry("relu", "float64")
    assert b(src, entry, cuda_kernels.NVCC_OPTIONS)[:4] == b"\x7fELF"
    assert b(src, entry, cuda_kernels.NVCC_OPTIONS)[:4] == b"\x7fELF"
    assert len(calls) == 2 and blocker.read_text().startswith("a file")


def test_in_memory_cache_setting_writes_nothing(tmp_path, cupy_target, monkeypatch):
    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")
    cupy_target("cubin")
    src, entry = cuda_kernels.source("relu", "float32"), cuda_kernels.entry("relu", "float32")
    assert builder(cupy_target.cupy, tmp_path)(src, entry, cuda_kernels.NVCC_OPTIONS)[:4] == b"\x7fELF"
    assert os.listdir(tmp_path) == []


def test_compile_error_names_the_kernel(tmp_path, cupy_target):
    cupy_target("ptx")
    with pytest.raises(Exception, match="cg_broken"):
        builder(cupy_target.cupy, tmp_path)('extern "C" __global__ void cg_broken() { undefined_x; }',
                                            "cg_broken", cuda_kernels.NVCC_OPTIONS)


@requires_gpu
def test_float32_subnormals_survive_the_gpu_kernels():
    """On a GPU the fused kernels keep what the host keeps: relu passes a
    subnormal through, clipping's scale makes one, where -ftz=true would
    give 0 (and compare a subnormal as 0)."""
    import cgrad
    import cgrad.nn.functional as F
    tiny = np.array([1e-40, -3e-42, 2e-38, 1.0, -1e-45], np.float32)
    for dev in ("cpu", "cuda"):
        x = cgrad.tensor(tiny, device=dev)
        got = F.relu(x).cpu().numpy()
        assert got.view(np.uint32).tolist() == np.maximum(tiny, 0).view(np.uint32).tolist(), dev
    # gradients of norm 2 clipped to 1e-38: the scale and the result are subnormal
    grads = []
    for dev in ("cpu", "cuda"):
        p = cgrad.tensor(np.ones(4, np.float32), device=dev, requires_grad=True)
        p.grad = cgrad.tensor(np.ones(4, np.float32), device=dev)
        cgrad.nn.utils.clip_grad_norm_([p], max_norm=1e-38)
        grads.append(p.grad.cpu().numpy())
    assert 0 < grads[0][0] < np.finfo(np.float32).tiny
    assert grads[1].view(np.uint32).tolist() == grads[0].view(np.uint32).tolist()


def test_the_gpu_backend_builds_its_kernels_this_way(tmp_path, cupy_target, monkeypatch):
    """The "cuda" backend over CuPy (as cgrad.cuda makes it on a GPU) gets
    its fused kernels from NvrtcBuilder: the device's architecture asked,
    exactly NVCC_OPTIONS compiled, the cubin cached and loaded into a
    cupy.cuda.Module, whose Function is the kernel (both stood in for here:
    they need a driver)."""
    import cupyx.scipy.special
    from cgrad.backends.xp import ArrayBackend
    cupy = cupy_target.cupy
    calls = cupy_target("cubin")
    loaded = []

    class Device:
        compute_capability = ARCH

    class Module:
        def load(self, binary):
            loaded.append(binary)

        def get_function(self, name):
            return ("kernel", name)

    monkeypatch.setattr(cupy.cuda, "Device", Device)
    monkeypatch.setattr(cupy.cuda, "Module", Module)
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path))
    be = ArrayBackend(cupy, "cuda", cupyx.scipy.special, is_gpu=True)
    k = be.raw_kernels.get("relu", "float32")
    assert k == ("kernel", "cg_relu_f32") and be.raw_kernels.get("relu", "float32") is k
    assert calls == [cuda_kernels.NVCC_OPTIONS]
    assert len(loaded) == 1 and loaded[0][:4] == b"\x7fELF"
    assert [f.read_bytes() for f in tmp_path.iterdir()] == loaded
