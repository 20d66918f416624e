"""Device tests of the ops with RawKernels outside the optimizers (nll_loss,
softmax / log_softmax and their backward, relu, threshold_backward),
collected a second time with the reference "cuda" device on the GPU's
fused path: the RawKernels (cgrad/backends/cuda_kernels.py) run on the CPU
(tests/python/cuda_emu.py), called by the C core's own kernel calls, and
must give the CPU's values and gradients as the array expressions do.
(test_device_fused_emulated.py does the same for the optimizers.)

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
    test_a_device_target_not_known_from_its_upload_is_copied_back_and_checked,
    test_a_target_changed_outside_cgrad_reads_nothing_out_of_bounds,
    test_a_target_uploaded_from_the_host_is_checked_without_a_copy_back,
    test_cross_entropy_on_the_device_is_one_kernel_each_way,
    test_cross_entropy_on_the_device_matches_the_cpu, test_device_nll_loss_matches_torch,
    test_device_target_out_of_bounds_raises_and_keeps_the_graph_clean,
    test_ignored_targets_do_not_read_the_input, test_nll_loss_float16_on_the_device,
    test_nll_loss_on_the_device_second_derivative_matches_the_cpu)
from test_device_core import (  # noqa: F401
    test_parametrised_activations_match_cpu, test_unary_matches_cpu_with_gradients)
from test_device_reduce import (  # noqa: F401
    test_nan_propagates_through_max_min_logsumexp_softmax, test_small_mlp_forward_backward_matches_cpu,
    test_softmax_backward_is_one_kernel_and_twice_differentiable, test_softmax_matches_cpu,
    test_softmax_with_large_and_minus_inf_logits)

pytestmark = cuda_emu.fused_path_marks(REAL_GPU)


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mlp_step_launches_the_row_and_activation_kernels(dtype):
    dt = getattr(cgrad, dtype)
    sfx = "f32" if dtype == "float32" else "f64"
    model = cgrad.nn.Sequential(cgrad.nn.Linear(6, 8), cgrad.nn.ReLU(), cgrad.nn.Linear(8, 3))
    model.to(dt).to("cuda")
    x = cgrad.randn(5, 6, dtype=dt, device="cuda")
    t = cgrad.tensor([0, 2, 1, 1, 0], device="cuda")
    names = ("relu", "softmax_rows", "nll_loss", "nll_loss_backward", "softmax_backward_rows",
             "threshold_backward")
    before = {n: cuda_emu.launches[f"cg_{n}_{sfx}"] for n in names}
    cF.cross_entropy(model(x), t).backward()
    assert {n: cuda_emu.launches[f"cg_{n}_{sfx}"] - before[n] for n in names} == dict.fromkeys(names, 1)
