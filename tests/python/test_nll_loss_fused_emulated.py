"""test_nll_loss.py's "cuda" device tests collected a second time with the
reference device on the GPU's fused path: nll_loss's RawKernels
(cgrad/backends/cuda_kernels.py) run on the CPU (tests/python/cuda_emu.py),
called by the C core's own kernel calls, and must give the CPU's values and
gradients as the array expressions do.

Skipped where no C++ compiler is installed, and on a real GPU (whose own
RawKernels the device tests run there)."""
import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as cF
import cuda_emu
from cgrad import cuda
from device_util import REAL_GPU, host
from test_nll_loss import (  # noqa: F401 (their tests run again here)
    test_cross_entropy_on_the_device_is_one_kernel_each_way,
    test_cross_entropy_on_the_device_matches_the_cpu, test_device_nll_loss_matches_torch,
    test_device_target_out_of_bounds_raises_and_keeps_the_graph_clean,
    test_ignored_targets_do_not_read_the_input, test_nll_loss_float16_on_the_device,
    test_nll_loss_on_the_device_second_derivative_matches_the_cpu)

pytestmark = [
    pytest.mark.skipif(cuda_emu.CXX is None,
                       reason="no C++ compiler (c++ or g++) to emulate the CUDA kernels with"),
    pytest.mark.skipif(REAL_GPU, reason="a real GPU runs its own RawKernels in the device tests"),
]


@pytest.fixture(autouse=True, scope="module")
def fused_path():
    with cuda_emu.kernels_of(cuda._init(), cuda_emu.raw_kernels()) as be:
        yield be


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_step_launches_the_nll_raw_kernels(dtype):
    dt = getattr(cgrad, dtype)
    x = cgrad.randn(16, 5, dtype=dt, device="cuda", requires_grad=True)
    t = cgrad.tensor(np.arange(16) % 5, device="cuda")
    names = ("nll_loss", "nll_finish", "nll_loss_backward")
    sfx = "f32" if dtype == "float32" else "f64"
    before = {n: cuda_emu.launches[f"cg_{n}_{sfx}"] for n in names}
    cF.cross_entropy(x, t).backward()
    assert {n: cuda_emu.launches[f"cg_{n}_{sfx}"] - before[n] for n in names} == dict.fromkeys(names, 1)
    want = np.exp(host(x.detach().log_softmax(1)))
    want[np.arange(16), np.arange(16) % 5] -= 1
    np.testing.assert_allclose(host(x.grad), want / 16, rtol=1e-5 if dtype == "float32" else 1e-12,
                               atol=1e-7)
