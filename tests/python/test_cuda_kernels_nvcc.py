"""Every CUDA source of cgrad/backends/cuda_kernels.py compiles with nvcc
(to PTX, with the options the RawKernels use): a compile error fails here,
on any machine with nvcc, GPU or not. Skipped with a reason without nvcc."""
import os
import shutil
import subprocess

import pytest

from cgrad.backends import cuda_kernels

NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not installed")

# atomicAdd on double needs sm_60; sm_80 is supported by every toolkit
# from CUDA 11 to 13.
ARCH = "sm_80"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", cuda_kernels.NAMES)
def test_kernel_compiles_to_ptx(tmp_path, name, dtype):
    src = tmp_path / f"{name}_{dtype}.cu"
    src.write_text(cuda_kernels.source(name, dtype))
    ptx = tmp_path / f"{name}_{dtype}.ptx"
    r = subprocess.run([NVCC, "--ptx", f"-arch={ARCH}", *cuda_kernels.NVCC_OPTIONS, str(src),
                        "-o", str(ptx)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"nvcc failed on {name} ({dtype}):\n{r.stderr}"
    text = ptx.read_text()
    entry = cuda_kernels.entry(name, dtype)
    assert f".entry {entry}" in text, f"{entry} is not in the PTX"
    # no fused multiply-add may appear: the host loops make none. CUDA's exp
    # and log are made of them (libdevice), so the kernels calling those
    # agree with the host to an ulp, not to the bit (cuda_kernels.MATH_CALLS)
    if name not in cuda_kernels.MATH_CALLS:
        assert "fma.rn" not in text, f"{entry} contracts a multiply-add"


def test_every_fused_kernel_has_a_source():
    assert set(cuda_kernels.NAMES) == {"sgd_update", "adam_update", "rmsprop_update",
                                       "adagrad_update", "scale", "clip_coef", "scale_by",
                                       "scale_by_multi", "sum_sq_multi", "sum_sq", "tensor_stats",
                                       "tensor_stats_multi", "amp_unscale_multi",
                                       "amp_unscale", "nll_loss", "nll_finish",
                                       "nll_loss_backward", "softmax_rows",
                                       "softmax_backward_rows", "relu", "threshold_backward",
                                       "adam_update_multi", "sgd_update_multi",
                                       "rmsprop_update_multi", "adagrad_update_multi"}
    assert "--fmad=false" in cuda_kernels.NVCC_OPTIONS
