"""The nll_loss op of the C core (src_c/ops_loss.c), which F.nll_loss and
F.cross_entropy's class-index path call: values, gradients and second
derivatives against float64 central differences and PyTorch (check_op),
the third derivative, the weight-gradient fallback, the argument errors,
and on the "cuda" device the same values as the CPU from one kernel each
way (the reference device in CI, see device_util.py)."""
import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as cF
from cgrad import _core
from device_util import assert_same_values, host, record_copies_back, record_kernels
from oracle import HAVE_TORCH, Const, F, check_op, check_third_derivative, to_numpy

T53 = Const(np.array([[1, 0, 2], [2, 2, 0]]))  # targets of a (2, 3, 3) input, spatial dim 3
W3 = Const(np.array([0.5, 2.0, 1.5]))

# (specs, fn) with fn(x, *consts) written for both libraries
CASES = {
    "mean": ([(5, 4), Const(np.array([3, 0, 1, 1, 2]))], lambda x, t: F(x).nll_loss(x, t)),
    "sum": ([(5, 4), Const(np.array([3, 0, 1, 1, 2]))],
            lambda x, t: F(x).nll_loss(x, t, reduction="sum")),
    "none, weight, ignore_index": (
        [(4, 3), Const(np.array([2, 1, 0, 1])), W3],
        lambda x, t, w: F(x).nll_loss(x, t, weight=w, ignore_index=1, reduction="none")),
    "weighted mean, ignore_index": (
        [(4, 3), Const(np.array([2, 1, 0, 1])), W3],
        lambda x, t, w: F(x).nll_loss(x, t, weight=w, ignore_index=1)),
    "spatial, weighted sum": ([(2, 3, 3), T53, W3],
                              lambda x, t, w: F(x).nll_loss(x, t, weight=w, reduction="sum")),
    "spatial none": ([(2, 3, 3), T53], lambda x, t: F(x).nll_loss(x, t, reduction="none")),
    "unbatched": ([(4,), Const(np.array(2))], lambda x, t: F(x).nll_loss(x, t)),
    "strided input": ([(4, 6), Const(np.array([0, 2, 1]))],
                      lambda x, t: F(x).nll_loss(x[:, ::2].T, t)),
    "cross_entropy, weight, ignore_index": (
        [(2, 3, 3), T53, W3],
        lambda x, t, w: F(x).cross_entropy(x, t, weight=w, ignore_index=0)),
    "cross_entropy none": ([(3, 5), Const(np.array([4, 0, 2]))],
                           lambda x, t: F(x).cross_entropy(x, t, reduction="none")),
    "cross_entropy label smoothing, ignore_index": (
        [(4, 3), Const(np.array([2, 1, 0, 1])), W3],
        lambda x, t, w: F(x).cross_entropy(x, t, weight=w, ignore_index=1, label_smoothing=0.2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_nll_loss_values_and_derivatives(case):
    specs, fn = CASES[case]
    check_op(specs, fn)


def test_nll_loss_is_one_op_each_way():
    x = cgrad.randn(3, 4, dtype=cgrad.float64, requires_grad=True)
    loss = cF.nll_loss(x, cgrad.tensor([0, 3, 1]))
    assert loss.grad_fn.name() == "nll_loss"
    v = cgrad.tensor(1.0, dtype=cgrad.float64, requires_grad=True)
    (g,) = cgrad.autograd.grad(loss, [x], grad_outputs=[v], create_graph=True)
    assert g.grad_fn.name() == "nll_loss_backward"
    # the gradient: -1/N at each target, 0 elsewhere
    want = np.zeros((3, 4))
    want[[0, 1, 2], [0, 3, 1]] = -1 / 3
    np.testing.assert_array_equal(to_numpy(g), want)


def test_cross_entropy_third_derivative():
    # the backward's derivative is nll_loss again: the third derivative of
    # cross_entropy (weighted, one ignored target) against central
    # differences of the second (float64)
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((3, 4))
    t = cgrad.tensor([1, 3, 2])
    w = cgrad.from_numpy(rng.random(4) + 0.5)
    u = cgrad.from_numpy(rng.standard_normal((3, 4)))

    def second(xa, create_graph):
        x = cgrad.from_numpy(xa).requires_grad_()
        loss = cF.cross_entropy(x, t, weight=w, ignore_index=2)
        (g1,) = cgrad.autograd.grad(loss * loss, [x], create_graph=True)
        (g2,) = cgrad.autograd.grad((g1 * u).sum(), [x], create_graph=create_graph)
        return x, g2

    check_third_derivative(second, x0, u)


def test_all_targets_ignored_mean_is_nan_with_zero_gradient():
    x = cgrad.randn(2, 3, dtype=cgrad.float64, requires_grad=True)
    loss = cF.nll_loss(x, cgrad.tensor([1, 1]), ignore_index=1)
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(to_numpy(x.grad), np.zeros((2, 3)))


def test_weight_that_requires_grad_gets_its_gradient():
    # the op gives the weight no gradient (as PyTorch's); F.nll_loss then
    # composes differentiable ops, checked here against central differences
    rng = np.random.default_rng(1)
    x = cgrad.from_numpy(rng.standard_normal((4, 3)))
    t = cgrad.tensor([2, 1, 0, 1])
    w0 = rng.random(3) + 0.5

    def loss_of(wa, **kw):
        return cF.nll_loss(x, t, weight=cgrad.from_numpy(wa), ignore_index=0, **kw)

    w = cgrad.from_numpy(w0).requires_grad_()
    cF.nll_loss(x, t, weight=w, ignore_index=0).backward()
    fd = np.zeros(3)
    for c in range(3):
        d = np.zeros(3)
        d[c] = 1e-6
        fd[c] = (loss_of(w0 + d).item() - loss_of(w0 - d).item()) / 2e-6
    np.testing.assert_allclose(to_numpy(w.grad), fd, rtol=1e-6, atol=1e-9)
    with pytest.raises(NotImplementedError, match="nll_loss: the gradient with respect to weight"):
        _core.nll_loss(x, t, w)


@pytest.mark.parametrize("call,exc,match", [
    (lambda x: _core.nll_loss(x, cgrad.tensor([0, 3, 1])), IndexError,
     "nll_loss: target 3 is out of bounds for 3 classes \\(ignore_index=-100\\)"),
    (lambda x: _core.nll_loss(x, cgrad.tensor([0, -1, 1])), IndexError, "target -1 is out of bounds"),
    (lambda x: _core.nll_loss(x, cgrad.tensor([0.0, 1.0, 1.0])), TypeError,
     "target must be int64 class indices, got float32"),
    (lambda x: _core.nll_loss(x, cgrad.tensor([0, 1])), ValueError,
     "target shape \\(2,\\) does not match input shape \\(3, 3\\) \\(expected \\(3,\\)\\)"),
    (lambda x: _core.nll_loss(x, cgrad.tensor([0, 1, 1]), cgrad.ones(2, dtype=cgrad.float64)),
     ValueError, "weight must have shape \\(3,\\), one entry per class, got \\(2,\\)"),
    (lambda x: _core.nll_loss(x, cgrad.tensor([0, 1, 1]), cgrad.ones(3)), TypeError,
     "weight must have the input's dtype float64, got float32"),
    (lambda x: _core.nll_loss(x, cgrad.tensor([0, 1, 1]), reduction="avg"), ValueError, "'avg'"),
    (lambda x: _core.nll_loss(x.sum(), cgrad.tensor(0)), ValueError, "class dimension"),
    (lambda x: _core.nll_loss(cgrad.tensor([[1, 2]]), cgrad.tensor([0])), TypeError,
     "input must be floating point"),
])
def test_nll_loss_errors(call, exc, match):
    x = cgrad.zeros(3, 3, dtype=cgrad.float64, requires_grad=True)
    with pytest.raises(exc, match=match):
        call(x)
    assert x.grad is None


# ------------------------------------------------------------ "cuda" device
DEVICE_CASES = {
    "mean": (dict(), (6, 5)),
    "sum, weight": (dict(reduction="sum", weight=True), (6, 5)),
    "none, ignore_index": (dict(reduction="none", ignore_index=2), (6, 5)),
    "weighted mean, ignore_index, spatial": (dict(weight=True, ignore_index=0), (3, 5, 4)),
    "unbatched": (dict(), (5,)),
}


def _targets(shape, seed):
    C = shape[1] if len(shape) > 1 else shape[0]
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    return np.random.default_rng(seed).integers(0, C, size=tshape), C


@pytest.mark.parametrize("dtype,tol", [(cgrad.float64, dict(rtol=1e-14, atol=1e-15)),
                                       (cgrad.float32, dict(rtol=1e-6, atol=1e-7))])
@pytest.mark.parametrize("case", list(DEVICE_CASES))
def test_cross_entropy_on_the_device_matches_the_cpu(case, dtype, tol):
    kw, shape = DEVICE_CASES[case]
    t, C = _targets(shape, 1)
    a = np.random.default_rng(0).standard_normal(shape)
    wa = np.random.default_rng(2).random(C) + 0.5
    losses, grads = [], []
    for dev in ("cpu", "cuda"):
        x = cgrad.tensor(a, dtype=dtype, device=dev, requires_grad=True)
        args = dict(kw)
        if args.pop("weight", False):
            args["weight"] = cgrad.tensor(wa, dtype=dtype, device=dev)
        loss = cF.cross_entropy(x, cgrad.tensor(t, device=dev), **args)
        v = np.random.default_rng(4).standard_normal(loss.shape)
        loss.backward(cgrad.tensor(v, dtype=dtype, device=dev))
        losses.append(loss)
        grads.append(x.grad)
    assert_same_values(losses[0], losses[1], **tol)
    assert_same_values(grads[0], grads[1], **tol)


def test_cross_entropy_on_the_device_is_one_kernel_each_way(monkeypatch):
    # log_softmax + nll_loss forward, their two fused backwards: where the
    # composition ran gather, neg, mean forward and mul_scalar, neg,
    # scatter_add backward
    x = cgrad.randn(8, 10, device="cuda", requires_grad=True)
    t = cgrad.tensor(np.arange(8) % 10, device="cuda")
    names = record_kernels(monkeypatch, cgrad.cuda._init())
    loss = cF.cross_entropy(x, t)
    assert names == ["log_softmax", "nll_loss"], names
    del names[:]
    loss.backward()
    assert names == ["nll_loss_backward", "log_softmax_backward"], names
    del names[:]
    (g,) = cgrad.autograd.grad(cF.cross_entropy(x, t), [x], create_graph=True)
    (gg,) = cgrad.autograd.grad((g * g).sum(), [x])  # second order on the device too
    assert gg.device == "cuda"


def test_nll_loss_on_the_device_second_derivative_matches_the_cpu():
    a = np.random.default_rng(5).standard_normal((4, 3))
    t, w = np.array([2, 0, 1, 0]), np.array([0.5, 2.0, 1.5])
    out = []
    for dev in ("cpu", "cuda"):
        x = cgrad.tensor(a, dtype=cgrad.float64, device=dev, requires_grad=True)
        loss = cF.cross_entropy(x, cgrad.tensor(t, device=dev), weight=cgrad.tensor(w, device=dev),
                                ignore_index=1)
        (g,) = cgrad.autograd.grad(loss * loss, [x], create_graph=True)
        (gg,) = cgrad.autograd.grad((g * g).sum(), [x])
        out.append(gg)
    assert_same_values(out[0], out[1], rtol=1e-12, atol=1e-14)


def test_nll_loss_float16_on_the_device():
    # float16 storage: each term rounded to float16, sums in double
    a = np.random.default_rng(6).standard_normal((16, 7))
    t = np.random.default_rng(7).integers(0, 7, size=16)
    xh = cgrad.tensor(a, dtype=cgrad.float16, device="cuda", requires_grad=True)
    loss = cF.nll_loss(xh, cgrad.tensor(t, device="cuda"))
    assert loss.dtype == cgrad.float16
    ah = a.astype(np.float16)
    np.testing.assert_allclose(host(loss), -ah[np.arange(16), t].astype(np.float64).mean(), rtol=1e-3)
    loss.backward()
    want = np.zeros((16, 7), dtype=np.float16)
    want[np.arange(16), t] = np.float16(-1 / 16)
    np.testing.assert_array_equal(host(xh.grad), want)


def test_device_target_out_of_bounds_raises_and_keeps_the_graph_clean():
    x = cgrad.zeros(2, 3, dtype=cgrad.float64, device="cuda", requires_grad=True)
    with pytest.raises(IndexError, match="target 7 is out of bounds for 3 classes"):
        cF.cross_entropy(x, cgrad.tensor([0, 7], device="cuda"))
    with pytest.raises(ValueError, match="expected all tensors on one device"):
        _core.nll_loss(x, cgrad.tensor([0, 1]))
    assert x.grad is None


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed (a test extra)")
def test_device_nll_loss_matches_torch():
    import torch
    a = np.random.default_rng(8).standard_normal((3, 4, 5))
    t = np.random.default_rng(9).integers(0, 4, size=(3, 5))
    w = np.array([0.3, 1.0, 2.0, 0.7])
    x = cgrad.tensor(a, device="cuda", requires_grad=True)
    loss = cF.nll_loss(x, cgrad.tensor(t, device="cuda"), weight=cgrad.tensor(w, device="cuda"),
                       ignore_index=3)
    loss.backward()
    xt = torch.tensor(a, requires_grad=True)
    lt = torch.nn.functional.nll_loss(xt, torch.tensor(t), weight=torch.tensor(w), ignore_index=3)
    lt.backward()
    np.testing.assert_allclose(host(loss), lt.item(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_ignored_targets_do_not_read_the_input(device, reduction):
    # a NaN or -inf log-probability at an ignored position (at its target's
    # class, and at class 0, where the device kernel points ignored entries)
    # does not reach the loss or the gradient
    a = np.random.default_rng(10).standard_normal((3, 4))
    a[1, :] = [-np.inf, np.nan, -np.inf, np.nan]
    x = cgrad.tensor(a, device=device, requires_grad=True)
    loss = cF.nll_loss(x, cgrad.tensor([2, 1, 3], device=device), ignore_index=1,
                       reduction=reduction)
    want = np.array([-a[0, 2], 0.0, -a[2, 3]])
    want = {"none": want, "mean": want.sum() / 2, "sum": want.sum()}[reduction]
    np.testing.assert_array_equal(host(loss), want)
    loss.sum().backward()
    g = np.zeros((3, 4))
    g[0, 2] = g[2, 3] = -0.5 if reduction == "mean" else -1.0
    np.testing.assert_array_equal(host(x.grad), g)


@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_a_target_uploaded_from_the_host_is_checked_without_a_copy_back(monkeypatch, ignore_index):
    """cross_entropy on "cuda" with a target moved there from the host: the
    bounds check uses what the upload saw, so forward and backward copy
    nothing back (on a GPU: no sync), and the values are the cpu's."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 4))
    t = np.array([0, 3, 2, -100, 1, 3]) if ignore_index == -100 else np.array([0, 3, 2, 1, 1, 3])
    y = cgrad.tensor(t).to("cuda")
    x = cgrad.tensor(a, device="cuda", requires_grad=True)
    shapes = record_copies_back(monkeypatch)
    loss = cF.cross_entropy(x, y, ignore_index=ignore_index)
    loss.backward()
    assert shapes == []
    xc = cgrad.tensor(a, requires_grad=True)
    lc = cF.cross_entropy(xc, cgrad.tensor(t), ignore_index=ignore_index)
    lc.backward()
    assert_same_values(lc.detach(), loss.detach(), rtol=1e-14, atol=0)
    assert_same_values(xc.grad, x.grad, rtol=1e-14, atol=1e-17)


@pytest.mark.parametrize("how", ["written in place", "made on the device",
                                 "negative, not ignore_index", "not below the class count"])
def test_a_device_target_not_known_from_its_upload_is_copied_back_and_checked(monkeypatch, how):
    """Where the upload's range does not settle it (the target was written
    on the device since, or made there, or has values the range cannot
    clear), the target is copied back and checked as before: an entry out
    of bounds raises IndexError naming it."""
    x = cgrad.zeros(3, 4, dtype=cgrad.float64, device="cuda", requires_grad=True)
    if how == "written in place":
        y = cgrad.tensor([0, 1, 2]).to("cuda")
        y[1] = 9
        bad = 9
    elif how == "made on the device":
        y = cgrad.full((3,), 5, dtype=cgrad.int64, device="cuda")
        bad = 5
    elif how == "negative, not ignore_index":
        y = cgrad.tensor([0, -1, 2]).to("cuda")
        bad = -1
    else:
        y = cgrad.tensor([0, 4, 2]).to("cuda")
        bad = 4
    shapes = record_copies_back(monkeypatch)
    with pytest.raises(IndexError, match=f"target {bad} is out of bounds for 4 classes"):
        cF.nll_loss(x, y)
    assert shapes == [(3,)]  # the one copy back, for the check
    assert x.grad is None


def test_a_target_changed_outside_cgrad_reads_nothing_out_of_bounds():
    """A target shared with NumPy (on the reference device, NumPy is the
    device's memory) and written there after its upload: cgrad cannot see
    that write, so no check runs; the kernels read no class out of
    bounds and the loss is NaN (the 'none' loss at that entry), no
    gradient is written for it."""
    y = cgrad.tensor([0, 1, 2]).to("cuda")
    shared = np.from_dlpack(y)
    shared[1] = 1 << 40  # far outside any (3, 4) input
    a = np.arange(12.0).reshape(3, 4)
    for reduction in ("mean", "sum", "none"):
        x = cgrad.tensor(a, device="cuda", requires_grad=True)
        loss = cF.nll_loss(x, y, reduction=reduction)
        got = host(loss)
        if reduction == "none":
            assert got[0] == -0.0 and np.isnan(got[1]) and got[2] == -10.0
            loss.sum().backward()
        else:
            assert np.isnan(got)
            loss.backward()
        g = host(x.grad)
        assert g[0, 0] != 0 and not g[1].any()  # nothing written for the bad entry


@pytest.mark.parametrize("targets", [[0, 3, 2, 1], [0, -100, 2, -100]])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_on_the_device_copies_nothing_back(monkeypatch, targets, reduction):
    """cross_entropy with label_smoothing on "cuda": the target's bounds are
    checked by nll_loss (from its upload's range), and the smoothing term
    masks ignored entries on the device whether or not there are any, so
    no copy comes back (with a class weight, whose gather by the masked
    target checks a device-made index, one does); values and gradients are
    the cpu's."""
    a = np.random.default_rng(5).standard_normal((4, 4))
    w = np.array([0.5, 1.0, 2.0, 1.5])
    for weight in (None, w):
        x = cgrad.tensor(a, device="cuda", requires_grad=True)
        y = cgrad.tensor(targets).to("cuda")
        wd = None if weight is None else cgrad.tensor(weight).to("cuda")
        shapes = record_copies_back(monkeypatch)
        loss = cF.cross_entropy(x, y, weight=wd, label_smoothing=0.2, reduction=reduction)
        (loss.sum() if reduction == "none" else loss).backward()
        assert shapes == ([] if weight is None else [(4,)])
        monkeypatch.undo()
        xc = cgrad.tensor(a, requires_grad=True)
        lc = cF.cross_entropy(xc, cgrad.tensor(targets),
                              weight=None if weight is None else cgrad.tensor(weight),
                              label_smoothing=0.2, reduction=reduction)
        (lc.sum() if reduction == "none" else lc).backward()
        assert_same_values(lc.detach(), loss.detach(), rtol=1e-14, atol=1e-16)
        assert_same_values(xc.grad, x.grad, rtol=1e-13, atol=1e-16)
