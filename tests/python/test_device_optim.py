"""Optimizers, clipping, gradient statistics, GradScaler and the monitor's
statistics on "cuda" (the NumPy reference device here, CuPy on a GPU)
against the CPU backend: the same trajectories (float64 to ~1e-12), the
same norms, counts and statistics, state tensors on the parameter's device,
and clear errors for tensors on different devices."""
import ctypes
import math

import numpy as np
import pytest

import cgrad
from cgrad import _core, nn, optim
from cgrad.amp import GradScaler
from cgrad.nn.utils import clip_grad as clip
from device_util import host, record_copies_back

N_STEPS = 20
SHAPES = [(7, 5), (3,), ()]


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=2e-6, atol=1e-7)


def make_params(dev, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [cgrad.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True, device=dev)
            for s in SHAPES]


def noises(dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(N_STEPS)]


def set_grads(params, noise, dev):
    """grad = 2 p + noise, computed on the parameter's device: the
    trajectory depends on the weights the optimizer produced."""
    for p, n in zip(params, noise):
        p.grad = p.detach() * 2.0 + cgrad.tensor(n, device=dev)


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.05),
    "sgd_momentum_dampening": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.3),
    "sgd_nesterov_wd": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True,
                                            weight_decay=0.01),
    "sgd_maximize_wd": lambda ps: optim.SGD(ps, lr=0.01, weight_decay=0.1, maximize=True),
    "adam": lambda ps: optim.Adam(ps, lr=0.01),
    "adam_amsgrad_wd": lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.05),
    "adam_maximize_betas": lambda ps: optim.Adam(ps, lr=0.01, betas=(0.3, 0.9), maximize=True),
    "adam_decoupled": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1,
                                            decoupled_weight_decay=True),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
    "adamw_amsgrad_maximize": lambda ps: optim.AdamW(ps, lr=0.01, amsgrad=True, maximize=True),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=0.01),
    "rmsprop_centered": lambda ps: optim.RMSprop(ps, lr=0.01, centered=True),
    "rmsprop_momentum_wd": lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.9, weight_decay=0.01),
    "rmsprop_all": lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.3, centered=True, momentum=0.5,
                                            weight_decay=0.02, maximize=True),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.1),
    "adagrad_decay_wd_init": lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=0.05,
                                                      initial_accumulator_value=0.1),
    "adagrad_maximize": lambda ps: optim.Adagrad(ps, lr=0.1, maximize=True, eps=1e-6),
}


def state_tensors(opt, params):
    return [[(k, v) for k, v in sorted(opt.state[p].items()) if isinstance(v, cgrad.Tensor)]
            for p in params]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_trajectory_equals_cpu(name, dtype):
    noise = noises(dtype)
    runs = {}
    for dev in ("cpu", "cuda"):
        params = make_params(dev, dtype)
        opt = OPTIMIZERS[name](params)
        traj = []
        for k in range(N_STEPS):
            set_grads(params, noise[k], dev)
            opt.step()
            traj.append([host(p) for p in params])
        runs[dev] = (params, opt, traj)
    (pc, oc, tc), (pd, od, td) = runs["cpu"], runs["cuda"]
    for k in range(N_STEPS):
        for a, b in zip(tc[k], td[k]):
            assert a.dtype == b.dtype == np.dtype(dtype)
            np.testing.assert_allclose(b, a, **tol(dtype), err_msg=f"step {k}")
    for sc, sd, p in zip(state_tensors(oc, pc), state_tensors(od, pd), pd):
        assert [k for k, _ in sc] == [k for k, _ in sd]
        for (key, a), (_, b) in zip(sc, sd):
            if key == "step":  # PyTorch keeps it on the cpu (non-capturable)
                assert str(b.device) == "cpu" and a.item() == b.item() == N_STEPS
                continue
            assert b.device == p.device, f"state {key!r} lives on {b.device}"
            np.testing.assert_allclose(host(b), host(a), **tol(dtype), err_msg=key)


@pytest.mark.parametrize("name", ["sgd_nesterov_wd", "adam_amsgrad_wd", "rmsprop_all",
                                  "adagrad_decay_wd_init"])
def test_fused_update_norm_equals_cpu(name):
    """What the fused update measures for the monitor (the update's squared
    norm, the gradient's and the old weights' statistics) is the same on
    both devices."""
    noise = noises("float64")
    got = {}
    for dev in ("cpu", "cuda"):
        params = make_params(dev, "float64")
        opt = OPTIMIZERS[name](params)
        sink = _core._StatsSink(params)
        opt._stats_sink = sink
        measured = []
        for k in range(3):
            sink.begin(7)
            before = [host(p) for p in params]
            set_grads(params, noise[k], dev)
            opt.step()
            measured.append([sink.stats(i) for i in range(len(params))])
            for p, b, m in zip(params, before, measured[-1]):
                np.testing.assert_allclose(m[8], np.sum((host(p) - b) ** 2), rtol=1e-12, atol=1e-300)
                np.testing.assert_allclose(m[4], np.sum(b ** 2), rtol=1e-12)
                np.testing.assert_allclose(m[0], np.sum(host(p.grad) ** 2), rtol=1e-12)
        got[dev] = measured
    np.testing.assert_allclose(got["cuda"], got["cpu"], rtol=1e-12)


def test_report_grad_norm_on_cuda():
    params = make_params("cuda", "float64")
    opt = optim.SGD(params, lr=0.1, report_grad_norm=True)
    set_grads(params, noises("float64")[0], "cuda")
    want = math.sqrt(sum(float(np.sum(host(p.grad) ** 2)) for p in params))
    opt.step()
    assert opt.last_report.nonfinite == 0
    assert opt.last_report.grad_norm_before_clip == pytest.approx(want, rel=1e-12)


def test_state_dict_loaded_onto_cuda_continues_the_cpu_trajectory():
    noise = noises("float64")
    pc = make_params("cpu", "float64")
    oc = optim.Adam(pc, lr=0.01, amsgrad=True)
    for k in range(5):
        set_grads(pc, noise[k], "cpu")
        oc.step()
    pd = [cgrad.tensor(host(p), requires_grad=True, device="cuda") for p in pc]
    od = optim.Adam(pd, lr=0.01, amsgrad=True)
    od.load_state_dict(oc.state_dict())
    for p in pd:
        for key, v in od.state[p].items():
            assert str(v.device) == ("cpu" if key == "step" else "cuda:0"), key
    for k in range(5, 10):
        set_grads(pc, noise[k], "cpu")
        set_grads(pd, noise[k], "cuda")
        oc.step()
        od.step()
    for a, b in zip(pc, pd):
        np.testing.assert_allclose(host(b), host(a), rtol=1e-12, atol=1e-14)


def test_state_follows_a_parameter_moved_after_the_optimizer_was_built():
    """Adagrad makes its state at construction: when the parameter's data
    then moves to cuda, the state follows it at the next step."""
    p = cgrad.tensor(np.ones(4), requires_grad=True)
    opt = optim.Adagrad([p], lr=0.1, initial_accumulator_value=0.5)
    assert str(opt.state[p]["sum"].device) == "cpu"
    p.data = p.detach().to("cuda")
    p.grad = cgrad.tensor(np.arange(4.0), device="cuda")
    opt.step()
    assert str(opt.state[p]["sum"].device) == "cuda:0"
    s = 0.5 + np.arange(4.0) ** 2
    np.testing.assert_allclose(host(p), 1 - 0.1 * np.arange(4.0) / (np.sqrt(s) + 1e-10),
                               rtol=1e-15)
    np.testing.assert_allclose(host(opt.state[p]["sum"]), s)


# ------------------------------------------------------------- errors
def test_gradient_on_another_device_names_both():
    p = cgrad.tensor(np.ones((2, 2)), device="cuda")
    g = cgrad.tensor(np.ones((2, 2)))  # .grad refuses it; the kernels check again
    with pytest.raises(ValueError, match=r"cg_sgd_update(_stats)?: .*'param' is on 'cuda' and 'grad' on 'cpu'"):
        _core._sgd_update(p, g, None, False, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match=r"'param' is on 'cpu' and 'grad' on 'cuda'"):
        _core._adam_update(g, p, cgrad.zeros(2, 2, dtype=cgrad.float64),
                           cgrad.zeros(2, 2, dtype=cgrad.float64), None, 1, 0.1, 0.9, 0.99, 1e-8,
                           0.0, False, False, False)


@pytest.mark.parametrize("fn", ["sgd", "adam", "rmsprop", "adagrad"])
def test_state_on_another_device_names_both(fn):
    p = cgrad.tensor(np.ones(3), device="cuda")
    g = cgrad.tensor(np.ones(3), device="cuda")
    s = cgrad.tensor(np.zeros(3))  # a cpu state buffer
    s2 = cgrad.tensor(np.zeros(3), device="cuda")
    calls = {
        "sgd": lambda: _core._sgd_update(p, g, s, True, 0.1, 0.9, 0.0, 0.0, False, False),
        "adam": lambda: _core._adam_update(p, g, s2, s, None, 1, 0.1, 0.9, 0.99, 1e-8, 0.0,
                                           False, False, False),
        "rmsprop": lambda: _core._rmsprop_update(p, g, s, None, None, 0.1, 0.9, 1e-8, 0.0, 0.0,
                                                 False, False),
        "adagrad": lambda: _core._adagrad_update(p, g, s, 1, 0.1, 0.0, 0.0, 1e-10, 0.0, False),
    }
    with pytest.raises(ValueError, match=r"is on 'cuda' and '\w+' on 'cpu'"):
        calls[fn]()
    np.testing.assert_array_equal(host(p), 1.0)  # nothing was written


def test_a_0d_host_gradient_does_not_join_a_device_update():
    """Ops accept a 0-d host tensor next to device tensors (a scalar); an
    update writes its operands, so it refuses one."""
    p = cgrad.tensor(1.0, device="cuda")
    with pytest.raises(ValueError, match="'grad' on 'cpu'"):
        _core._sgd_update(p, cgrad.tensor(1.0), None, False, 0.1, 0.0, 0.0, 0.0, False, False)


def test_agc_parameter_and_gradient_on_different_devices():
    p = cgrad.tensor(np.ones((2, 3)))
    g = cgrad.tensor(np.ones((2, 3)), device="cuda")
    with pytest.raises(ValueError, match="gradient 0 is on device 'cuda' but its parameter on 'cpu'"):
        _core._clip_grad_agc([p], [g], 0.01, 1e-3)


# ----------------------------------------------------------- clipping
def grad_lists(dtype, seed=5, bad=None):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) * 3 for s in [(6, 4), (5,), (), (0, 3)]]
    if bad is not None:
        arrays[0][1, 2] = bad
    return arrays


def as_params(arrays, dev, transpose_first=False):
    params = []
    for a in arrays:
        p = cgrad.tensor(np.zeros(a.shape, a.dtype), requires_grad=True, device=dev)
        if transpose_first and a.ndim == 2 and not params:
            # a strided gradient: the transpose of a contiguous tensor
            p.grad = cgrad.tensor(np.ascontiguousarray(a.T), device=dev).t()
            assert not p.grad.is_contiguous()
        else:
            p.grad = cgrad.tensor(a, device=dev)
        params.append(p)
    return params


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("strided", [False, True])
def test_clip_grad_norm_equals_cpu(dtype, norm_type, strided):
    arrays = grad_lists(dtype)
    pc, pd = as_params(arrays, "cpu", strided), as_params(arrays, "cuda", strided)
    tc = clip.clip_grad_norm_(pc, 1.5, norm_type)
    rc = clip.last_clip_result()
    td = clip.clip_grad_norm_(pd, 1.5, norm_type)
    rd = clip.last_clip_result()
    assert rc.clipped and rd.clipped
    assert td.item() == pytest.approx(tc.item(), rel=1e-12)
    assert rd.clip_coef == pytest.approx(rc.clip_coef, rel=1e-12)
    for a, b in zip(pc, pd):
        assert str(b.grad.device) == "cuda:0"
        np.testing.assert_allclose(host(b.grad), host(a.grad), **tol(dtype))


def test_clip_grad_norm_over_both_devices_at_once():
    arrays = grad_lists("float64")
    pc = as_params(arrays, "cpu")
    mixed = as_params(arrays[:2], "cuda") + as_params(arrays[2:], "cpu")
    tc = clip.clip_grad_norm_(pc, 0.5)
    tm = clip.clip_grad_norm_(mixed, 0.5)
    assert tm.item() == pytest.approx(tc.item(), rel=1e-12)
    for a, b in zip(pc, mixed):
        np.testing.assert_allclose(host(b.grad), host(a.grad), rtol=1e-12)
    assert _core._total_norm([p.grad for p in mixed], 2.0) == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_clip_grad_norm_nonfinite(bad):
    arrays = grad_lists("float64", bad=bad)
    for norm_type in (2.0, math.inf):
        pc, pd = as_params(arrays, "cpu"), as_params(arrays, "cuda")
        tc = clip.clip_grad_norm_(pc, 1.0, norm_type).item()
        td = clip.clip_grad_norm_(pd, 1.0, norm_type).item()
        assert (math.isnan(tc) and math.isnan(td)) or tc == td
        for a, b in zip(pc, pd):
            np.testing.assert_array_equal(host(b.grad), host(a.grad))
        pd = as_params(arrays, "cuda")
        with pytest.raises(RuntimeError, match="non-finite"):
            clip.clip_grad_norm_(pd, 1.0, norm_type, error_if_nonfinite=True)


def test_clip_grad_norm_below_the_bound_changes_nothing():
    arrays = grad_lists("float32")
    pd = as_params(arrays, "cuda")
    versions = [p.grad._version for p in pd]
    clip.clip_grad_norm_(pd, 1e6)
    total = clip.last_clip_result().total_norm  # the double (the returned tensor is float32)
    assert not clip.last_clip_result().clipped
    assert total == pytest.approx(math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2))
                                                for a in arrays)), rel=1e-12)
    # the coefficient stays on the device, so every gradient is multiplied
    # (by exactly 1: no value changes), as PyTorch's clip_grad_norm_
    assert [p.grad._version for p in pd] == [v + 1 for v in versions]
    for a, p in zip(arrays, pd):
        np.testing.assert_array_equal(host(p.grad), a)


def test_clip_grad_norm_copies_nothing_back(monkeypatch):
    """A training step with clipping and a report: clip_grad_norm_ leaves
    its norm on the device (a copy back is a wait for a GPU), the returned
    norm is a device tensor of the gradients' dtype, and the ClipResult and
    the StepReport copy the two numbers back once, when first read; the
    values are the cpu's."""
    arrays = grad_lists("float32")
    got = {}
    for dev in ("cpu", "cuda"):
        params = as_params(arrays, dev)
        opt = optim.SGD(params, lr=0.1, momentum=0.9)
        copies = record_copies_back(monkeypatch)
        total = clip.clip_grad_norm_(params, 1.5)
        opt.step()
        res, rep = clip.last_clip_result(), opt.last_report
        assert res.pending == (dev == "cuda") and rep.clip is res
        if dev == "cuda":
            assert copies == []
            assert str(total.device) == "cuda:0" and total.dtype == cgrad.float32
            assert total.shape == () and not total.requires_grad
            assert rep.max_norm == 1.5
            coef = rep.clip_coef  # one copy back: the (total, coef) pair
            assert copies == [(2,)] and not res.pending
            assert (rep.clipped, rep.grad_norm_before_clip) == (res.clipped, res.total_norm)
            assert copies == [(2,)]
        else:
            coef = rep.clip_coef
        got[dev] = (host(total), coef, rep.grad_norm_after_clip, [host(p) for p in params])
        monkeypatch.undo()
    c, d = got["cpu"], got["cuda"]
    assert d[0] == c[0] and d[1] == pytest.approx(c[1], rel=1e-12)
    assert d[2] == pytest.approx(c[2], rel=1e-12) and 0 < d[1] < 1
    for a, b in zip(c[3], d[3]):
        np.testing.assert_allclose(b, a, **tol("float32"))


@pytest.mark.parametrize("kind", ["value", "agc"])
def test_clip_grad_value_and_agc_copy_nothing_back(monkeypatch, kind):
    """clip_grad_value_ and clip_grad_agc_ leave their counts on the device:
    a step after either copies nothing back; the ClipResult's clipped and
    n_clipped, and the StepReport's clipped, read the one count back when
    first looked at (AGC's per-parameter counts are summed there); the
    gradients and the counts are the cpu's, and every device gradient's
    version moves (the count is not read)."""
    arrays = grad_lists("float32")
    got = {}
    for dev in ("cpu", "cuda"):
        params = as_params(arrays, dev)
        opt = optim.Adam(params, lr=0.1)
        versions = [p.grad._version for p in params]
        copies = record_copies_back(monkeypatch)
        if kind == "value":
            clip.clip_grad_value_(params, 0.5)
        else:
            clip.clip_grad_agc_(params, 0.05)
        opt.step()
        res, rep = clip.last_clip_result(), opt.last_report
        assert res.pending == (dev == "cuda") and rep.clip is res
        if dev == "cuda":
            assert copies == []
            assert all(p.grad._version > v for p, v in zip(params, versions))
            assert rep.clip_coef is None and rep.grad_norm_before_clip is None  # no norm: no copy
            assert copies == []
            clipped = rep.clipped  # one copy back: the count
            assert copies == [()] and not res.pending
        else:
            clipped = rep.clipped
        got[dev] = (clipped, res.n_clipped, res.n_total, [host(p.grad) for p in params])
        monkeypatch.undo()
    c, d = got["cpu"], got["cuda"]
    assert d[:3] == c[:3] and c[0] and c[1] > 0
    for a, b in zip(c[3], d[3]):
        np.testing.assert_allclose(b, a, **tol("float32"))


def test_clip_grad_value_on_several_devices_counts_on_the_cpu(monkeypatch):
    """Gradients on the cpu and a device: the count is made on the host (the
    C core's cg_clip_grad_value), the result not pending."""
    arrays = grad_lists("float64")
    params = as_params(arrays[:2], "cpu") + as_params(arrays[2:], "cuda")
    want = sum(int(np.sum(np.abs(a) > 0.5)) for a in arrays)
    clip.clip_grad_value_(params, 0.5)
    res = clip.last_clip_result()
    assert not res.pending and res.n_clipped == want and res.clipped


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0, 3.0])
def test_clip_grad_norm_of_float16_gradients_equals_cpu_in_float32(norm_type):
    """float16 gradients (device storage) are clipped in their dtype: the
    norm in double, the coefficient rounded to float16 and every product
    rounded once, the cpu's float32 arithmetic on the same values
    rounded to float16."""
    rng = np.random.default_rng(9)
    arrays = [(rng.standard_normal(s) * 4).astype(np.float16) for s in [(9, 3), (4,)]]
    pd = as_params(arrays, "cuda")
    total = clip.clip_grad_norm_(pd, 2.0, norm_type)
    coef = clip.last_clip_result().clip_coef
    want = _core._total_norm([cgrad.tensor(a.astype(np.float64)) for a in arrays], norm_type)
    assert total.dtype == cgrad.float16
    assert clip.last_clip_result().total_norm == pytest.approx(want, rel=1e-12)
    assert coef == pytest.approx(2.0 / (want + 1e-6), rel=1e-12)
    k = np.float16(coef)
    for a, p in zip(arrays, pd):
        np.testing.assert_array_equal(host(p.grad), (a.astype(np.float32) * np.float32(k)).astype(np.float16))


def test_clip_grad_norm_of_empty_device_gradients():
    pd = as_params([np.zeros((0, 3), np.float32), np.zeros((0,), np.float32)], "cuda")
    total = clip.clip_grad_norm_(pd, 1.0)
    assert str(total.device) == "cuda:0" and host(total) == 0.0
    assert clip.last_clip_result().clip_coef == 1.0 and not clip.last_clip_result().clipped
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        _core._clip_grad_norm_tensor([p.grad for p in pd], -1.0, 2.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("strided", [False, True])
def test_clip_grad_value_equals_cpu(dtype, strided):
    arrays = grad_lists(dtype, bad=math.nan)
    pc, pd = as_params(arrays, "cpu", strided), as_params(arrays, "cuda", strided)
    nc = _core._clip_grad_value([p.grad for p in pc], 1.0)
    versions = [p.grad._version for p in pd]
    nd = _core._clip_grad_value([p.grad for p in pd], 1.0)
    assert nc == nd > 0
    assert [p.grad._version for p in pd] == [v + 1 for v in versions]
    for a, b in zip(pc, pd):
        np.testing.assert_array_equal(host(b.grad), host(a.grad))
    clip.clip_grad_value_(pd, 0.5)
    assert clip.last_clip_result().n_clipped > 0
    assert np.nanmax(np.abs(host(pd[0].grad))) == pytest.approx(0.5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_clip_grad_agc_equals_cpu(dtype):
    runs = {}
    for dev in ("cpu", "cuda"):
        rng = np.random.default_rng(9)
        params = []
        for s in [(6, 4), (5,), (3, 2, 2)]:
            p = cgrad.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True, device=dev)
            g = rng.standard_normal(s).astype(dtype)
            g[0] *= 50  # the first unit is clipped
            p.grad = cgrad.tensor(g, device=dev)
            params.append(p)
        clip.clip_grad_agc_(params, clip_factor=0.05)
        runs[dev] = (params, clip.last_clip_result())
    (pc, rc), (pd, rd) = runs["cpu"], runs["cuda"]
    assert rc.n_clipped == rd.n_clipped > 0 and rc.n_total == rd.n_total == 6 + 1 + 3
    for a, b in zip(pc, pd):
        np.testing.assert_allclose(host(b.grad), host(a.grad), **tol(dtype))


def test_agc_nan_gradient_unit_becomes_nan_on_both():
    g = np.ones((2, 3))
    g[1, 0] = math.nan
    out = {}
    for dev in ("cpu", "cuda"):
        w = cgrad.tensor(np.ones((2, 3)), device=dev)
        gt = cgrad.tensor(g, device=dev)
        out[dev] = (_core._clip_grad_agc([w], [gt], 0.01, 1e-3), host(gt))
    assert out["cpu"][0] == out["cuda"][0] == (2, 2)
    np.testing.assert_array_equal(out["cuda"][1], out["cpu"][1])


# --------------------------------------------------------- statistics
def stat_arrays(dtype):
    rng = np.random.default_rng(11)
    a = rng.standard_normal((9, 13)).astype(dtype)
    a[0, 0], a[3, 4], a[8, 12] = np.inf, np.nan, -np.inf
    b = rng.standard_normal(40).astype(dtype) * 1e3
    return [a, b, np.zeros((0, 4), dtype), np.array(-2.5, dtype), np.full(3, np.nan, dtype)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tensor_stats_equal_cpu(dtype):
    for a in stat_arrays(dtype):
        c = _core._tensor_stats(cgrad.tensor(a))
        d = _core._tensor_stats(cgrad.tensor(a, device="cuda"))
        assert d[2:] == c[2:] and d[1] == c[1]
        assert d[0] == pytest.approx(c[0], rel=1e-12)
        fin = a[np.isfinite(a)].astype(np.float64)
        assert d[0] == pytest.approx(float(np.sum(fin * fin)), rel=1e-12)
        assert d[1] == (float(np.max(np.abs(fin))) if fin.size else 0.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tensor_stats_many_mixed_devices_strided_and_none(dtype):
    arrays = stat_arrays(dtype)
    cpu = [cgrad.tensor(a) for a in arrays]
    dev = [cgrad.tensor(a, device="cuda") for a in arrays]
    mixed = [dev[0], None, cpu[1], dev[2], dev[3], cpu[4], dev[0].t(), None]
    ref = [cpu[0], None, cpu[1], cpu[2], cpu[3], cpu[4], cpu[0].t(), None]
    out_c, out_m = np.empty((len(ref), 4)), np.empty((len(mixed), 4))
    _core._tensor_stats_many(ref, out_c)
    _core._tensor_stats_many(mixed, out_m)
    np.testing.assert_allclose(out_m, out_c, rtol=1e-12)
    np.testing.assert_array_equal(out_m[[1, 7]], 0.0)
    assert out_m[0, 2] == 3 and out_m[5, 2] == 3


def test_tensor_stats_refuse_integers_on_cuda():
    t = cgrad.tensor(np.arange(4), device="cuda")
    with pytest.raises(TypeError, match="float32 or float64 needed, got int64"):
        _core._tensor_stats(t)
    with pytest.raises(TypeError, match="tensor 1: float32 or float64 needed, got int64"):
        _core._tensor_stats_many([cgrad.tensor(np.ones(2), device="cuda"), t], np.empty((2, 4)))


def test_monitor_stats_helpers_on_cuda():
    from cgrad.monitor import stats
    arrays = stat_arrays("float32")
    dev = [cgrad.tensor(a, device="cuda") for a in arrays]
    got = stats.many_stats(dev)
    want = stats.many_stats([cgrad.tensor(a) for a in arrays])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert stats.grad_stats(dev[1]) == pytest.approx(tuple(want[1]), rel=1e-12)


# ---------------------------------------------------------- GradScaler
def scaler_run(dev, bad_steps=(), n=6, growth_interval=3):
    params = make_params(dev, "float32")
    opt = optim.SGD(params, lr=0.01, momentum=0.9)
    scaler = GradScaler(init_scale=2.0 ** 10, growth_interval=growth_interval, device=dev)
    noise = noises("float32")
    scales, skipped = [], []
    for k in range(n):
        scaler.scale(cgrad.tensor(1.0, device=dev))  # sets the scale, as scale(loss) does
        loss_scale = scaler.get_scale()
        for p, z in zip(params, noise[k]):
            g = (p.detach() * 2.0 + cgrad.tensor(z, device=dev)) * loss_scale
            if k in bad_steps and p.ndim == 2:
                g = g * cgrad.tensor(np.where(np.arange(5) == 1, np.inf, 1.0).astype(np.float32),
                                     device=dev)
            p.grad = g
        scaler.step(opt)
        skipped.append(opt.last_report.skipped)
        scaler.update()
        scales.append(scaler.get_scale())
    return params, scales, skipped, opt


def test_grad_scaler_on_cuda_equals_cpu():
    pc, sc, kc, _ = scaler_run("cpu", bad_steps=(2,))
    pd, sd, kd, od = scaler_run("cuda", bad_steps=(2,))
    assert sd == sc and kd == kc
    for a, b in zip(pc, pd):
        np.testing.assert_allclose(host(b), host(a), rtol=2e-6, atol=1e-7)
        assert str(b.grad.device) == "cuda:0"
    assert od.state[pd[0]]["momentum_buffer"].device == pd[0].device


def test_grad_scaler_inf_skips_the_step_and_halves_the_scale():
    before = [host(p) for p in make_params("cuda", "float32")]
    params, scales, skipped, opt = scaler_run("cuda", bad_steps=(0,), n=1)
    assert skipped == [True] and scales == [2.0 ** 9]
    assert opt.last_report.nonfinite == 7  # one inf column of the (7, 5) gradient
    assert "non-finite" in opt.last_report.reason
    for a, p in zip(before, params):
        np.testing.assert_array_equal(host(p), a)


def test_grad_scaler_grows_after_growth_interval_on_cuda():
    _, scales, skipped, _ = scaler_run("cuda", n=7, growth_interval=3)
    assert not any(skipped)
    assert scales == [2.0 ** 10, 2.0 ** 10, 2.0 ** 11, 2.0 ** 11, 2.0 ** 11, 2.0 ** 12, 2.0 ** 12]


def test_grad_scaler_unscale_then_clip_on_cuda():
    params = make_params("cuda", "float64")
    opt = optim.Adam(params, lr=0.01)
    scaler = GradScaler(init_scale=8.0, device="cuda")
    grads = noises("float64")[0]
    assert scaler.scale(cgrad.tensor(2.0, device="cuda")).item() == 16.0
    for p, z in zip(params, grads):
        p.grad = cgrad.tensor(z * 8.0, device="cuda")
    scaler.unscale_(opt)
    for p, z in zip(params, grads):
        np.testing.assert_allclose(host(p.grad), z, rtol=1e-15)
    total = clip.clip_grad_norm_(params, 0.1).item()
    assert total == pytest.approx(math.sqrt(sum(float(np.sum(z ** 2)) for z in grads)), rel=1e-12)
    scaler.step(opt)
    scaler.update()
    assert opt.last_report.loss_scale == 8.0 and opt.last_report.clipped


def test_grad_scaler_device_argument():
    assert GradScaler(device="cuda:0").is_enabled()
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        GradScaler(device="tpu")


# ------------------------------------------------------ LR schedulers
def test_lr_scheduler_with_a_cuda_optimizer():
    noise = noises("float64")
    got = {}
    for dev in ("cpu", "cuda"):
        params = make_params(dev, "float64")
        opt = optim.SGD(params, lr=0.1, momentum=0.9)
        sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=N_STEPS)
        lrs = []
        for k in range(N_STEPS):
            set_grads(params, noise[k], dev)
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        got[dev] = (lrs, [host(p) for p in params])
    assert got["cuda"][0] == got["cpu"][0]
    for a, b in zip(got["cpu"][1], got["cuda"][1]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------ monitor
class TwoLayer(nn.Module):
    def __init__(self, dev):
        super().__init__()
        rng = np.random.default_rng(21)
        self.first = nn.Module()
        self.first.weight = nn.Parameter(cgrad.tensor(rng.standard_normal((6, 4)), device=dev))
        self.first.bias = nn.Parameter(cgrad.tensor(rng.standard_normal(6), device=dev))
        self.second = nn.Module()
        self.second.weight = nn.Parameter(cgrad.tensor(rng.standard_normal((3, 6)), device=dev))


def test_monitor_records_the_same_layer_statistics_on_cuda(tmp_path):
    from cgrad import monitor
    rng = np.random.default_rng(4)
    grads = [[rng.standard_normal(s) for s in [(6, 4), (6,), (3, 6)]] for _ in range(4)]
    grads[2][1][3] = np.nan  # a non-finite gradient element at step 2
    deltas = {}
    for dev in ("cpu", "cuda"):
        model = TwoLayer(dev)
        params = list(model.parameters())
        opt = optim.Adam(params, lr=0.01)
        path = tmp_path / f"{dev}.cgrun"
        with monitor.Run(path) as run:
            run.watch(model, opt)
            assert run._watcher._sink is not None  # the fused update norms
            for k in range(4):
                for p, g in zip(params, grads[k]):
                    p.grad = cgrad.tensor(g, device=dev)
                opt.step()
                run.log_loss(1.0 / (k + 1))
        with monitor.RunReader(path) as r:
            deltas[dev] = r.poll()
    dc, dd = deltas["cpu"], deltas["cuda"]
    assert dd.n_steps == dc.n_steps == 4
    for field in ("layer_grad_norm", "layer_grad_max", "layer_nonfinite", "layer_weight_norm",
                  "layer_update_ratio"):
        np.testing.assert_allclose(getattr(dd, field), getattr(dc, field), rtol=1e-10,
                                   equal_nan=True, err_msg=field)
    assert np.nansum(dd.layer_nonfinite[2]) > 0


# --------------------------------------- the C optimizer object (cg_optimizer)
class _Sgd(ctypes.Structure):
    _fields_ = [("lr", ctypes.c_double), ("momentum", ctypes.c_double),
                ("dampening", ctypes.c_double), ("weight_decay", ctypes.c_double),
                ("nesterov", ctypes.c_int), ("maximize", ctypes.c_int)]


class _Adam(ctypes.Structure):
    _fields_ = [("lr", ctypes.c_double), ("beta1", ctypes.c_double), ("beta2", ctypes.c_double),
                ("eps", ctypes.c_double), ("weight_decay", ctypes.c_double),
                ("decoupled_weight_decay", ctypes.c_int), ("amsgrad", ctypes.c_int),
                ("maximize", ctypes.c_int)]


class _Rmsprop(ctypes.Structure):
    _fields_ = [("lr", ctypes.c_double), ("alpha", ctypes.c_double), ("eps", ctypes.c_double),
                ("weight_decay", ctypes.c_double), ("momentum", ctypes.c_double),
                ("centered", ctypes.c_int), ("maximize", ctypes.c_int)]


class CApi:
    """The public C API of the loaded extension through ctypes (the same
    library, so the same device registry as cgrad's "cuda")."""

    def __init__(self):
        lib = self.lib = ctypes.CDLL(_core.__file__)
        vp, i64p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64)
        for name, args in [("cg_from_data", [ctypes.c_int, ctypes.c_int, i64p, vp, ctypes.POINTER(vp)]),
                           ("cg_to_device", [vp, ctypes.c_int, ctypes.POINTER(vp)]),
                           ("cg_tensor_set_requires_grad", [vp, ctypes.c_int]),
                           ("cg_tensor_set_grad", [vp, vp]),
                           ("cg_tensor_copy_to", [vp, vp, ctypes.c_size_t]),
                           ("cg_device_find", [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
                           ("cg_optimizer_new_sgd", [ctypes.c_int, ctypes.POINTER(vp), vp, ctypes.POINTER(vp)]),
                           ("cg_optimizer_new_adam", [ctypes.c_int, ctypes.POINTER(vp), vp, ctypes.POINTER(vp)]),
                           ("cg_optimizer_new_rmsprop", [ctypes.c_int, ctypes.POINTER(vp), vp, ctypes.POINTER(vp)]),
                           ("cg_optimizer_step", [vp])]:
            getattr(lib, name).argtypes = args
            getattr(lib, name).restype = ctypes.c_int
        lib.cg_tensor_free.argtypes = [vp]
        lib.cg_tensor_free.restype = None
        lib.cg_optimizer_free.argtypes = [vp]
        lib.cg_optimizer_free.restype = None
        lib.cg_optimizer_state.argtypes = [vp, ctypes.c_int, ctypes.c_char_p]
        lib.cg_optimizer_state.restype = vp
        lib.cg_tensor_device.argtypes = [vp]
        lib.cg_tensor_device.restype = ctypes.c_int
        lib.cg_last_error.restype = ctypes.c_char_p
        cgrad.tensor(0.0, device="cuda")  # registers the device
        dev = ctypes.c_int()
        self.ok(lib.cg_device_find(b"cuda", ctypes.byref(dev)))
        self.cuda = dev.value

    def ok(self, st):
        assert st == 0, self.lib.cg_last_error().decode()

    def tensor(self, a, device):
        a = np.ascontiguousarray(a, dtype=np.float64)
        shape = (ctypes.c_int64 * max(a.ndim, 1))(*a.shape)
        t = ctypes.c_void_p()
        self.ok(self.lib.cg_from_data(1, a.ndim, shape, a.ctypes.data, ctypes.byref(t)))
        if device:
            d = ctypes.c_void_p()
            self.ok(self.lib.cg_to_device(t, device, ctypes.byref(d)))
            self.lib.cg_tensor_free(t)
            t = d
        return t

    def values(self, t, shape):
        out = np.empty(shape)
        self.ok(self.lib.cg_tensor_copy_to(t, out.ctypes.data, out.nbytes))
        return out


C_OPTIMIZERS = {
    "sgd_nesterov": ("cg_optimizer_new_sgd", _Sgd(0.05, 0.9, 0.0, 0.01, 1, 0), ["momentum_buffer"]),
    "adam_amsgrad": ("cg_optimizer_new_adam", _Adam(0.01, 0.9, 0.99, 1e-8, 0.1, 1, 1, 0),
                     ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "rmsprop_centered": ("cg_optimizer_new_rmsprop", _Rmsprop(0.01, 0.9, 1e-8, 0.0, 0.5, 1, 1),
                         ["square_avg", "grad_avg", "momentum_buffer"]),
}


@pytest.mark.parametrize("name", sorted(C_OPTIMIZERS))
def test_c_optimizer_object_steps_on_cuda(name):
    api = CApi()
    new, options, state_names = C_OPTIMIZERS[name]
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((4, 3))
    gs = [rng.standard_normal((4, 3)) for _ in range(6)]
    got = {}
    for device in (0, api.cuda):
        p = api.tensor(w0, device)
        api.ok(api.lib.cg_tensor_set_requires_grad(p, 1))
        arr = (ctypes.c_void_p * 1)(p)
        opt = ctypes.c_void_p()
        api.ok(getattr(api.lib, new)(1, arr, ctypes.byref(options), ctypes.byref(opt)))
        try:
            for g in gs:
                gt = api.tensor(g, device)
                api.ok(api.lib.cg_tensor_set_grad(p, gt))
                api.lib.cg_tensor_free(gt)
                api.ok(api.lib.cg_optimizer_step(opt))
            states = []
            for s in state_names:
                st = api.lib.cg_optimizer_state(opt, 0, s.encode())
                assert st, s
                assert api.lib.cg_tensor_device(st) == device, f"state {s} is on device {device}"
                states.append(api.values(st, (4, 3)))
            got[device] = (api.values(p, (4, 3)), states)
        finally:
            api.lib.cg_optimizer_free(opt)
            api.lib.cg_tensor_free(p)
    (wc, sc), (wd, sd) = got[0], got[api.cuda]
    np.testing.assert_allclose(wd, wc, rtol=1e-12, atol=1e-14)
    for a, b in zip(sc, sd):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


# ----------------------------------------- training end to end (real backward)
def _device_reductions_or_skip():
    try:
        (cgrad.tensor(np.ones(2), device="cuda") @ cgrad.tensor(np.ones(2), device="cuda")).sum()
    except NotImplementedError as e:
        pytest.skip(f"reductions / matmul have no device kernels in this build: {e}")


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_mlp_training_with_scaler_clipping_and_adamw_matches_cpu(dtype, rtol):
    """Forward and backward on the device, GradScaler (with an overflowing
    step), clip_grad_norm_, AdamW and a scheduler: the same weights, loss
    scales and skipped steps as on the cpu."""
    _device_reductions_or_skip()
    rng = np.random.default_rng(12)
    xs, ys = rng.standard_normal((16, 8)), np.eye(3)[rng.integers(0, 3, 16)]
    init = [rng.standard_normal((8, 16)) / 3, rng.standard_normal(16) / 10,
            rng.standard_normal((16, 3)) / 4, rng.standard_normal(3) / 10]
    runs = {}
    for dev in ("cpu", "cuda"):
        ps = [cgrad.tensor(a.astype(dtype), requires_grad=True, device=dev) for a in init]
        x, t = cgrad.tensor(xs.astype(dtype), device=dev), cgrad.tensor(ys.astype(dtype), device=dev)
        opt = optim.AdamW(ps, lr=0.01, amsgrad=True)
        sched = optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        scaler = GradScaler(init_scale=2.0 ** 8, growth_interval=4, device=dev)
        scales, skipped, losses = [], [], []
        for k in range(10):
            opt.zero_grad()
            h = (x @ ps[0] + ps[1]).relu()
            loss = -((h @ ps[2] + ps[3]).log_softmax(1) * t).sum(1).mean()
            scaled = scaler.scale(loss)
            if k == 5:
                scaled = scaled * 1e300 * 1e300  # overflows: inf gradients, a skipped step
            scaled.backward()
            scaler.unscale_(opt)
            clip.clip_grad_norm_(ps, 0.5)
            scaler.step(opt)
            scaler.update()
            sched.step()
            scales.append(scaler.get_scale())
            skipped.append(opt.last_report.skipped)
            losses.append(loss.item())
        runs[dev] = ([host(p) for p in ps], scales, skipped, losses, ps, opt)
    (wc, sc, kc, lc, _, _), (wd, sd, kd, ld, pd, od) = runs["cpu"], runs["cuda"]
    assert sd == sc and kd == kc and kc[5] and sum(kc) == 1
    np.testing.assert_allclose(ld, lc, rtol=rtol)
    for a, b in zip(wc, wd):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * 1e-2)
    for p in pd:
        assert all(v.device == p.device for k, v in od.state[p].items() if k != "step")
