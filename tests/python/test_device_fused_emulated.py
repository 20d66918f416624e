"""The device optimizer, clipping, statistics and GradScaler tests
(test_device_optim.py, collected here a second time) with the "cuda"
reference device taking the GPU's fused path: its RawKernels run on the
CPU (tests/python/cuda_emu.py), called by the C core's own kernel calls.
So the trajectories, norms, counts and statistics a GPU computes with its
fused kernels are checked against the CPU backend here too; and, below,
against the reference device's array expressions bit for bit.

Skipped where no C++ compiler is installed, and on a real GPU (whose own
RawKernels the device tests run there)."""
import numpy as np
import pytest

import cgrad
import cuda_emu
from cgrad import cuda
from cgrad.backends import cuda_kernels
from cgrad.monitor import stats
from cgrad.nn.utils import clip_grad as clip
from device_util import REAL_GPU, host
from test_device_optim import *  # noqa: F401,F403 (their tests run again here)
from test_device_optim import OPTIMIZERS, make_params, noises, set_grads, state_tensors

pytestmark = cuda_emu.fused_path_marks(REAL_GPU)


@pytest.fixture(autouse=True, scope="module")
def fused_path():
    """The reference "cuda" device's optimizer, clipping and statistics
    kernels take the fused RawKernel path for this module's tests."""
    with cuda_emu.kernels_of(cuda._init(), cuda_emu.raw_kernels()) as be:
        yield be


def trajectory(name, dtype, n_steps=6):
    params = make_params("cuda", dtype)
    opt = OPTIMIZERS[name](params)
    noise = noises(dtype)
    traj = []
    for k in range(n_steps):
        set_grads(params, noise[k], "cuda")
        opt.step()
        traj.append([host(p) for p in params])
    return traj, [[host(v) for _, v in s] for s in state_tensors(opt, params)]


def bits(a):
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)




@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_trajectory_has_the_array_paths_bits(fused_path, name, dtype):
    kind = next(k for k in ("sgd", "adam", "rmsprop", "adagrad") if name.startswith(k))  # adamw: adam
    # every built-in optimizer's foreach step: one launch for all the
    # parameters (of one dtype) a step
    entry = cuda_kernels.entry(f"{kind}_update_multi", dtype)
    before = cuda_emu.launches[entry]
    fused = trajectory(name, dtype)
    assert cuda_emu.launches[entry] - before == 6
    with cuda_emu.kernels_of(fused_path, None):
        arrays = trajectory(name, dtype)
    for step, (a, b) in enumerate(zip(arrays[0], fused[0])):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(bits(y), bits(x), err_msg=f"step {step}")
    for sa, sb in zip(arrays[1], fused[1]):
        for x, y in zip(sa, sb):
            np.testing.assert_array_equal(bits(y), bits(x), err_msg="state")


@pytest.mark.parametrize("dtypes", [("float32",) * 3, ("float32", "float64", "float32")])
def test_clip_grad_norm_runs_the_fused_kernels(dtypes):
    """Gradients of one dtype: the sums of squares in one sum_sq_multi
    launch, the coefficient, one scale_by_multi; of several dtypes: a
    sum_sq and a scale_by per gradient."""
    rng = np.random.default_rng(3)
    params = []
    for s, dt in zip([(40, 30), (30,), ()], dtypes):
        p = cgrad.tensor(np.zeros(s, dt), requires_grad=True, device="cuda")
        p.grad = cgrad.tensor(rng.standard_normal(s).astype(dt) * 10, device="cuda")
        params.append(p)
    want = np.sqrt(sum(np.sum(host(p.grad).astype(np.float64) ** 2) for p in params))
    names = [(n, dt) for n in ("sum_sq_multi", "scale_by_multi", "sum_sq", "scale_by")
             for dt in ("float32", "float64")] + [("clip_coef", "float64")]
    before = {k: cuda_emu.launches[cuda_kernels.entry(*k)] for k in names}
    total = clip.clip_grad_norm_(params, 1.0)
    assert total.item() == pytest.approx(want, rel=1e-6)
    ran = {k: cuda_emu.launches[cuda_kernels.entry(*k)] - before[k] for k in names}
    ran = {k: v for k, v in ran.items() if v}
    if len(set(dtypes)) == 1:
        assert ran == {("sum_sq_multi", "float32"): 1, ("scale_by_multi", "float32"): 1,
                       ("clip_coef", "float64"): 1}
    else:  # a norm per gradient, the coefficient, a scaling per gradient reading it
        assert ran == {("sum_sq", "float32"): 2, ("sum_sq", "float64"): 1, ("scale_by", "float32"): 2,
                       ("scale_by", "float64"): 1, ("clip_coef", "float64"): 1}
    after = np.sqrt(sum(np.sum(host(p.grad).astype(np.float64) ** 2) for p in params))
    assert after == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, np.inf, 3.0])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_clip_grad_norm_has_the_array_paths_bits(fused_path, norm_type, dtype):
    """The RawKernels of a clip by norm left on the device (clip_coef,
    scale_by) give the array expressions' total, coefficient and gradients
    bit for bit, NaN too (float16: the array path, the coefficient read on
    the device all the same)."""
    rng = np.random.default_rng(4)
    arrays = [(rng.standard_normal(s) * 5).astype(dtype) for s in [(30, 20), (7,), ()]]
    got = []
    for kernels in (fused_path.raw_kernels, None):
        with cuda_emu.kernels_of(fused_path, kernels):
            for bad in (None, np.nan):
                arrs = [a.copy() for a in arrays]
                if bad is not None:
                    arrs[1][3] = bad
                params = [cgrad.tensor(np.zeros(a.shape, a.dtype), requires_grad=True, device="cuda")
                          for a in arrs]
                for p, a in zip(params, arrs):
                    p.grad = cgrad.tensor(a, device="cuda")
                both = cgrad._core._clip_grad_norm_tensor([p.grad for p in params], 1.0, norm_type)
                got.append([host(both)] + [host(p.grad) for p in params])
    half = len(got) // 2
    for f, a in zip(got[:half], got[half:]):
        for x, y in zip(a, f):
            np.testing.assert_array_equal(bits(y), bits(x))
    assert 0 < got[0][0][1] < 1 and np.isnan(got[1][0][0])


@pytest.mark.parametrize("name", ["sgd_nesterov_wd", "adam_amsgrad_wd", "rmsprop_all",
                                  "adagrad_decay_wd_init"])
def test_float16_parameters_take_the_array_path(fused_path, name):
    """The update and statistics RawKernels have float32/float64 sources
    only: a float16 parameter (device storage) takes the array path on a
    GPU too (it raised KeyError there), with the same bits."""
    traj = []
    for kernels in (fused_path.raw_kernels, None):
        with cuda_emu.kernels_of(fused_path, kernels):
            params = [cgrad.tensor(np.linspace(-1, 1, 12, dtype=np.float16).reshape(3, 4),
                                   requires_grad=True, device="cuda")]
            opt = OPTIMIZERS[name](params)
            for k in range(3):
                params[0].grad = cgrad.tensor(np.full((3, 4), 0.25 * (k + 1), np.float16), device="cuda")
                opt.step()
            traj.append((host(params[0]), stats.many_stats([params[0].grad])))
    np.testing.assert_array_equal(bits(traj[0][0]), bits(traj[1][0]))
    np.testing.assert_array_equal(traj[0][1], traj[1][1])


def test_monitor_statistics_run_the_fused_kernel():
    x = np.random.default_rng(2).standard_normal((50, 20)).astype(np.float32)
    x[4, 4] = np.nan
    entry = cuda_kernels.entry("tensor_stats", "float32")
    before = cuda_emu.launches[entry]
    got = stats.many_stats([cgrad.tensor(x, device="cuda")])
    assert cuda_emu.launches[entry] - before == 1
    np.testing.assert_allclose(got, stats.many_stats([cgrad.tensor(x)]), rtol=1e-12)
    # a model's layers: one launch for all of them
    xs = [x, x[:7].copy(), np.float32([[2.5]])]
    multi = cuda_kernels.entry("tensor_stats_multi", "float32")
    before = cuda_emu.launches[multi], cuda_emu.launches[entry]
    got = stats.many_stats([cgrad.tensor(a, device="cuda") for a in xs])
    assert (cuda_emu.launches[multi], cuda_emu.launches[entry]) == (before[0] + 1, before[1])
    np.testing.assert_allclose(got, stats.many_stats([cgrad.tensor(a) for a in xs]), rtol=1e-12)


def test_grad_scaler_float16_unscale_runs_the_fused_kernel():
    from cgrad import _core
    g = (np.random.default_rng(8).standard_normal(300) * 1000).astype(np.float16)
    g[7] = np.inf
    entry = cuda_kernels.entry("amp_unscale", "float16")
    before = cuda_emu.launches[entry]
    d = [cgrad.tensor(g, device="cuda")]
    assert _core._amp_unscale_(d, 1 / 1024) == 1
    assert cuda_emu.launches[entry] - before == 1
    # float16 is storage on the host: PyTorch's float32 opmath, rounded once
    want = (g.astype(np.float32) * np.float32(1 / 1024)).astype(np.float16)
    np.testing.assert_array_equal(host(d[0]).view(np.uint16), want.view(np.uint16))
    # a model's float16 gradients: one amp_unscale_multi launch, the same bits
    multi = cuda_kernels.entry("amp_unscale_multi", "float16")
    before = cuda_emu.launches[multi], cuda_emu.launches[entry]
    ds = [cgrad.tensor(g, device="cuda"), cgrad.tensor(g[:50].copy(), device="cuda")]
    assert _core._amp_unscale_(ds, 1 / 1024) == 2
    assert (cuda_emu.launches[multi], cuda_emu.launches[entry]) == (before[0] + 1, before[1])
    for x, w in zip(ds, (want, want[:50])):
        np.testing.assert_array_equal(host(x).view(np.uint16), w.view(np.uint16))
