"""Losses (cgrad.nn.functional and the loss Modules): values and gradients
against PyTorch (float64 tight, float32 loose), float64 central differences
and second derivatives (oracle.check_op, cgrad.autograd.gradcheck), NumPy
references for the focal and Dice losses, extreme logits, and the errors."""
import warnings

import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as cF
from cgrad.autograd import gradcheck
from cgrad.nn.modules import loss as L
from oracle import Arg, Const, F, assert_close, check_op

REDUCTIONS = ["none", "mean", "sum"]
rng0 = np.random.default_rng(1234)


def t64(a, requires_grad=False):
    return cgrad.tensor(np.asarray(a, dtype=np.float64), dtype=cgrad.float64,
                        requires_grad=requires_grad)


def idx(a):
    return cgrad.tensor(np.asarray(a, dtype=np.int64))


@pytest.fixture(autouse=True)
def _no_kl_mean_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*reduction='mean' divides")
        warnings.filterwarnings("ignore", message="reduction: 'mean' divides")
        yield


# ------------------------------------------------------------------ regression
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,kw", [("l1_loss", {}), ("mse_loss", {}), ("huber_loss", {}),
                                     ("huber_loss", {"delta": 0.6}), ("smooth_l1_loss", {}),
                                     ("smooth_l1_loss", {"beta": 0.4}),
                                     ("smooth_l1_loss", {"beta": 0.0})])
def test_regression_losses_vs_torch_and_differences(name, kw, reduction):
    check_op([(3, 4), (3, 4)],
             lambda x, y: getattr(F(x), name)(x, y, reduction=reduction, **kw),
             low=-3.0, high=3.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["l1_loss", "mse_loss", "huber_loss"])
def test_regression_losses_with_elementwise_weight(name, reduction):
    w = rng0.uniform(0.1, 2.0, (3, 4))
    check_op([(3, 4), (3, 4), Const(w)],
             lambda x, y, w: getattr(F(x), name)(x, y, reduction=reduction, weight=w),
             low=-3.0, high=3.0)


def test_regression_broadcast_target_warns_like_torch():
    with pytest.warns(UserWarning, match="different to the input size"):
        out = check_op([(3, 4), (4,)], lambda x, y: F(x).mse_loss(x, y), gradgrad=False)
    assert out.shape == ()
    with pytest.raises(ValueError, match=r"mse_loss: input shape \(3, 4\) and target shape \(5,\)"):
        cF.mse_loss(t64(np.zeros((3, 4))), t64(np.zeros(5)))


def test_huber_is_quadratic_then_linear():
    d = np.array([-3.0, -1.0, -0.2, 0.0, 0.5, 2.5])
    out = cF.huber_loss(t64(d), t64(np.zeros(6)), reduction="none", delta=1.0).numpy()
    ref = np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)
    assert_close("huber", out, ref, 1e-15, 0)
    # smooth_l1 = huber / beta
    s = cF.smooth_l1_loss(t64(d), t64(np.zeros(6)), reduction="none", beta=2.0).numpy()
    h = cF.huber_loss(t64(d), t64(np.zeros(6)), reduction="none", delta=2.0).numpy()
    assert_close("smooth_l1 * beta == huber", s * 2.0, h, 1e-15, 1e-15)


# ------------------------------------------------------------------ BCE
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_vs_torch_and_differences(reduction, weighted):
    w = rng0.uniform(0.2, 2.0, (4,))
    specs = [Arg((3, 4), 0.05, 0.95), Arg((3, 4), 0.0, 1.0)] + ([Const(w)] if weighted else [])

    def fn(x, t, *w):
        return F(x).binary_cross_entropy(x, t, weight=w[0] if w else None, reduction=reduction)

    check_op(specs, fn)


def test_binary_cross_entropy_at_zero_and_one_matches_torch(torch):
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-300, 0.5])
    t = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.5])
    x = t64(p, True)
    out = cF.binary_cross_entropy(x, t64(t), reduction="none")
    out.sum().backward()
    xt = torch.tensor(p, requires_grad=True)
    ot = torch.nn.functional.binary_cross_entropy(xt, torch.tensor(t), reduction="none")
    ot.sum().backward()
    assert_close("bce value at 0/1 (log clamped at -100)", out.detach().numpy(), ot.detach().numpy(), 0, 1e-12)
    assert out.detach().numpy()[2] == 100.0
    assert_close("bce gradient at 0/1", x.grad.numpy(), xt.grad.numpy(), 0, 1e-12)
    assert np.isfinite(x.grad.numpy()).all()


def test_binary_cross_entropy_float32_vs_torch(torch):
    p = rng0.uniform(0.01, 0.99, (5, 3)).astype(np.float32)
    t = rng0.uniform(0, 1, (5, 3)).astype(np.float32)
    x = cgrad.tensor(p, requires_grad=True)
    cF.binary_cross_entropy(x, cgrad.tensor(t)).backward()
    xt = torch.tensor(p, requires_grad=True)
    ref = torch.nn.functional.binary_cross_entropy(xt, torch.tensor(t))
    ref.backward()
    assert x.grad.dtype is cgrad.float32
    assert_close("bce f32", cF.binary_cross_entropy(cgrad.tensor(p), cgrad.tensor(t)).numpy(),
                 ref.detach().numpy(), 1e-6, 1e-5)
    assert_close("bce f32 grad", x.grad.numpy(), xt.grad.numpy(), 1e-6, 1e-4)


def test_bce_gradcheck_including_target_and_weight():
    x = t64(rng0.uniform(0.1, 0.9, (2, 3)), True)
    t = t64(rng0.uniform(0, 1, (2, 3)), True)
    w = t64(rng0.uniform(0.5, 2, (3,)), True)
    assert gradcheck(lambda x, t, w: cF.binary_cross_entropy(x, t, weight=w.expand(2, 3)), (x, t, w))
    assert gradcheck(lambda x, t: cF.binary_cross_entropy(x, t, reduction="sum"), (x, t))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight,pos_weight", [(False, False), (True, False), (False, True), (True, True)])
def test_bce_with_logits_vs_torch_and_differences(reduction, weight, pos_weight):
    w = rng0.uniform(0.2, 2.0, (3, 4))
    pw = rng0.uniform(0.5, 3.0, (4,))
    specs = [Arg((3, 4), -4, 4), Arg((3, 4), 0.0, 1.0)]
    specs += [Const(w) if weight else None, Const(pw) if pos_weight else None]
    check_op(specs, lambda x, t, w, pw: F(x).binary_cross_entropy_with_logits(
        x, t, weight=w, pos_weight=pw, reduction=reduction))


def test_bce_with_logits_extreme_logits_stay_finite(torch):
    x = np.array([1e4, -1e4, 1e4, -1e4, 50.0, -50.0])
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.3, 0.7])
    pw = np.array([2.0] * 6)
    for dt, tdt in ((cgrad.float64, torch.float64), (cgrad.float32, torch.float32)):
        xc = cgrad.tensor(x, dtype=dt, requires_grad=True)
        out = cF.binary_cross_entropy_with_logits(xc, cgrad.tensor(t, dtype=dt),
                                                  pos_weight=cgrad.tensor(pw, dtype=dt), reduction="none")
        out.sum().backward()
        xt = torch.tensor(x, dtype=tdt, requires_grad=True)
        ot = torch.nn.functional.binary_cross_entropy_with_logits(
            xt, torch.tensor(t, dtype=tdt), pos_weight=torch.tensor(pw, dtype=tdt), reduction="none")
        ot.sum().backward()
        assert np.isfinite(out.detach().numpy()).all() and np.isfinite(xc.grad.numpy()).all()
        assert_close(f"bce logits extreme {dt}", out.detach().numpy(), ot.detach().numpy(), 1e-6, 1e-6)
        assert_close(f"bce logits extreme grad {dt}", xc.grad.numpy(), xt.grad.numpy(), 1e-6, 1e-6)


# ------------------------------------------------------------------ NLL / CE
TARGETS = np.array([0, 4, 2, 1, 3, 4])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, -100, 2])
def test_nll_loss_vs_torch(reduction, weighted, ignore):
    target = TARGETS.copy()
    kw = {}
    if ignore is not None:
        target[[1, 3]] = ignore
        kw["ignore_index"] = ignore
    w = rng0.uniform(0.2, 2.0, (5,))
    check_op([(6, 5), Const(target), Const(w) if weighted else None],
             lambda x, t, w: F(x).nll_loss(x, t, weight=w, reduction=reduction, **kw))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 3])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_cross_entropy_class_indices_vs_torch(reduction, weighted, ignore, smoothing):
    target = TARGETS.copy()
    kw = {}
    if ignore is not None:
        target[[0, 2]] = ignore
        kw["ignore_index"] = ignore
    w = rng0.uniform(0.2, 2.0, (5,))
    check_op([(6, 5), Const(target), Const(w) if weighted else None],
             lambda x, t, w: F(x).cross_entropy(x, t, weight=w, reduction=reduction,
                                                label_smoothing=smoothing, **kw),
             low=-3, high=3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_spatial_targets(reduction):
    target = rng0.integers(0, 3, (2, 4, 5))
    target[0, 1, :2] = -100
    w = rng0.uniform(0.2, 2.0, (3,))
    check_op([(2, 3, 4, 5), Const(target), Const(w)],
             lambda x, t, w: F(x).cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=0.1),
             max_elems=24)
    check_op([(2, 3, 4, 5), Const(target)],
             lambda x, t: F(x).nll_loss(x, t, reduction=reduction), max_elems=24, gradgrad=False)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_unbatched(reduction):
    out = check_op([(5,), Const(np.array(3))],
                   lambda x, t: F(x).cross_entropy(x, t, reduction=reduction, label_smoothing=0.2))
    assert out.shape == ()
    check_op([(5,), Const(np.array(1))], lambda x, t: F(x).nll_loss(x, t, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets(reduction, weighted, smoothing):
    w = rng0.uniform(0.2, 2.0, (5,))
    check_op([(4, 5), Arg((4, 5), 0.0, 1.0), Const(w) if weighted else None],
             lambda x, t, w: F(x).cross_entropy(x, t, weight=w, reduction=reduction,
                                                label_smoothing=smoothing))
    # proper distributions, spatial layout
    check_op([(2, 5, 3), Const(np.moveaxis(rng0.dirichlet(np.ones(5), (2, 3)), -1, 1))],
             lambda x, t: F(x).cross_entropy(x, t, reduction=reduction), max_elems=16)


def test_cross_entropy_all_ignored_is_nan_like_torch():
    x = t64(rng0.standard_normal((3, 4)))
    t = idx([-100, -100, -100])
    assert np.isnan(cF.cross_entropy(x, t).item())
    assert np.isnan(cF.nll_loss(x, t).item())
    assert cF.cross_entropy(x, t, reduction="sum").item() == 0.0


def test_cross_entropy_extreme_logits_stay_finite(torch):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [0.0, 0.0, -1e4]])
    t = np.array([1, 1, 2])
    for dt, tdt in ((cgrad.float64, torch.float64), (cgrad.float32, torch.float32)):
        xc = cgrad.tensor(x, dtype=dt, requires_grad=True)
        out = cF.cross_entropy(xc, idx(t), label_smoothing=0.1)
        out.backward()
        xt = torch.tensor(x, dtype=tdt, requires_grad=True)
        ot = torch.nn.functional.cross_entropy(xt, torch.tensor(t), label_smoothing=0.1)
        ot.backward()
        assert np.isfinite(out.item()) and np.isfinite(xc.grad.numpy()).all()
        assert_close("ce extreme", out.item(), ot.item(), 1e-3, 1e-6)
        assert_close("ce extreme grad", xc.grad.numpy(), xt.grad.numpy(), 1e-6, 1e-5)


def test_cross_entropy_float32_vs_torch(torch):
    x = rng0.standard_normal((8, 6)).astype(np.float32)
    t = rng0.integers(0, 6, 8)
    w = rng0.uniform(0.5, 2, 6).astype(np.float32)
    xc = cgrad.tensor(x, requires_grad=True)
    out = cF.cross_entropy(xc, idx(t), weight=cgrad.tensor(w), label_smoothing=0.1)
    out.backward()
    xt = torch.tensor(x, requires_grad=True)
    ot = torch.nn.functional.cross_entropy(xt, torch.tensor(t), weight=torch.tensor(w), label_smoothing=0.1)
    ot.backward()
    assert out.dtype is cgrad.float32 and xc.grad.dtype is cgrad.float32
    assert_close("ce f32", out.item(), ot.item(), 1e-6, 1e-5)
    assert_close("ce f32 grad", xc.grad.numpy(), xt.grad.numpy(), 1e-6, 1e-4)


def test_cross_entropy_gradcheck():
    x = t64(rng0.standard_normal((4, 3)), True)
    t = idx([0, 2, -100, 1])
    w = t64([0.5, 1.0, 2.0])
    assert gradcheck(lambda x: cF.cross_entropy(x, t, weight=w, label_smoothing=0.2), (x,))
    assert gradcheck(lambda x: cF.nll_loss(x.log_softmax(1), t, reduction="none"), (x,))
    p = t64(rng0.dirichlet(np.ones(3), 4), True)
    assert gradcheck(lambda x, p: cF.cross_entropy(x, p), (x, p))


# ------------------------------------------------------------------ KL
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_vs_torch(reduction, log_target):
    if log_target:
        target = Arg((3, 4), -3.0, 0.0)
    else:
        target = Arg((3, 4), 0.05, 1.0)
    check_op([(3, 4), target], lambda x, t: F(x).kl_div(x, t, reduction=reduction, log_target=log_target),
             low=-3, high=0)


def test_kl_div_zero_target_is_zero_and_finite(torch):
    x = t64(np.log([[0.2, 0.3, 0.5]]), True)
    t = np.array([[0.0, 0.4, 0.6]])
    out = cF.kl_div(x, t64(t), reduction="batchmean")
    out.backward()
    ref = np.sum(t[t > 0] * (np.log(t[t > 0]) - np.log([0.3, 0.5])))
    assert_close("kl with a zero target", out.item(), ref, 1e-15, 1e-12)
    assert np.isfinite(x.grad.numpy()).all()
    with pytest.warns(UserWarning, match="batchmean"):
        cF.kl_div(x, t64(t))


# ------------------------------------------------------------------ focal
def np_log_softmax(x, axis=1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_focal(x, t, gamma, alpha=None, ignore_index=-100, reduction="mean"):
    """Multi-class focal loss written from the formula (class dim 1)."""
    logp = np_log_softmax(x)
    keep = t != ignore_index
    safe = np.where(keep, t, 0)
    logp_t = np.take_along_axis(logp, safe[:, None], 1)[:, 0]
    a = np.ones(x.shape[1]) if alpha is None else np.asarray(alpha, dtype=np.float64)
    loss = -a[safe] * (1 - np.exp(logp_t)) ** gamma * logp_t * keep
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / keep.sum()


def np_sigmoid_focal(x, t, alpha, gamma, reduction):
    """torchvision.ops.sigmoid_focal_loss, in NumPy."""
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma,alpha", [(2.0, None), (0.5, None), (3.0, [0.5, 1.0, 2.0, 0.25, 1.5]),
                                         (1.0, 0.25)])
def test_focal_loss_vs_numpy_formula(reduction, gamma, alpha):
    target = TARGETS.copy()
    target[4] = -100
    a = [alpha] * 5 if isinstance(alpha, float) else alpha
    check_op([(6, 5), Const(target)],
             lambda x, t: cF.focal_loss(x, t, gamma=gamma, alpha=alpha, reduction=reduction),
             np_fn=lambda x, t: np_focal(x, t, gamma, a, reduction=reduction),
             compare_torch=False, low=-3, high=3)


def test_focal_loss_gamma_zero_is_cross_entropy():
    x = t64(rng0.standard_normal((6, 5)))
    t = idx([0, 1, -100, 3, 4, 2])
    for red in REDUCTIONS:
        assert_close(f"focal(gamma=0) == cross_entropy ({red})",
                     cF.focal_loss(x, t, gamma=0.0, reduction=red).numpy(),
                     cF.cross_entropy(x, t, reduction=red).numpy(), 1e-14, 1e-13)


def test_focal_loss_spatial_and_unbatched():
    x = rng0.standard_normal((2, 3, 4))
    t = rng0.integers(0, 3, (2, 4))
    flat_x = np.moveaxis(x, 1, -1).reshape(-1, 3)
    ref = np_focal(flat_x, t.reshape(-1), 2.0, reduction="none").reshape(2, 4)
    assert_close("spatial focal", cF.focal_loss(t64(x), idx(t), reduction="none").numpy(), ref, 1e-13, 1e-12)
    out = cF.focal_loss(t64(x[0, :, 0]), idx(t[0, 0]), reduction="none")
    assert out.shape == ()
    assert_close("unbatched focal", out.item(), ref[0, 0], 1e-13, 1e-12)
    assert gradcheck(lambda x: cF.focal_loss(x, idx(t), gamma=1.5, alpha=[1.0, 2.0, 0.5]), (t64(x, True),))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.6, 0.0), (0.5, 1.5)])
def test_sigmoid_focal_loss_vs_numpy_formula(reduction, alpha, gamma):
    check_op([Arg((3, 4), -4, 4), Arg((3, 4), 0.0, 1.0)],
             lambda x, t: cF.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction=reduction),
             np_fn=lambda x, t: np_sigmoid_focal(x, t, alpha, gamma, reduction),
             compare_torch=False)


def test_sigmoid_focal_loss_vs_torchvision():
    ops = pytest.importorskip("torchvision.ops")
    import torch

    x = rng0.uniform(-4, 4, (5, 3))
    t = (rng0.uniform(0, 1, (5, 3)) > 0.5).astype(np.float64)
    ref = ops.sigmoid_focal_loss(torch.tensor(x), torch.tensor(t), reduction="mean").item()
    assert_close("torchvision", cF.sigmoid_focal_loss(t64(x), t64(t), reduction="mean").item(), ref, 1e-12, 1e-10)


def test_focal_losses_extreme_logits_stay_finite():
    x = t64([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]], True)
    t = idx([0, 0])
    out = cF.focal_loss(x, t, gamma=2.0)
    out.backward()
    assert np.isfinite(out.item()) and np.isfinite(x.grad.numpy()).all()
    assert_close("confident wrong class loss ~ 2e4 / 2", out.item(), 1e4, 0, 1e-9)
    xb = t64([1e4, -1e4, 1e4, -1e4], True)
    tb = t64([1.0, 0.0, 0.0, 1.0])
    for gamma in (0.0, 2.0):
        ob = cF.sigmoid_focal_loss(xb, tb, gamma=gamma, reduction="sum")
        ob.backward()
        assert np.isfinite(ob.item()) and np.isfinite(xb.grad.numpy()).all()
        xb.grad = None
    xd = t64([[[1e4, -1e4]], [[-1e4, 1e4]], [[0.0, 1e4]]], True)  # (N=1, C=3, 2 pixels) after permute
    xd_nc = xd.permute(1, 0, 2)
    od = cF.dice_loss(xd_nc, idx([[0, 2]]), from_logits=True)
    od.backward()
    assert np.isfinite(od.item()) and np.isfinite(xd.grad.numpy()).all()
    ob = cF.dice_loss(t64([[1e4, -1e4]]), t64([[1.0, 0.0]]), mode="binary", from_logits=True)
    assert_close("binary dice of confident correct logits", ob.item(), 0.0, 1e-12, 0)


# ------------------------------------------------------------------ dice
def np_dice(p, onehot, smooth):
    """per (n, c): 1 - (2 sum p t + s) / (sum p + sum t + s), class dim 1."""
    n, c = p.shape[:2]
    p = p.reshape(n, c, -1)
    t = onehot.reshape(n, c, -1)
    return 1 - (2 * (p * t).sum(2) + smooth) / (p.sum(2) + t.sum(2) + smooth)


def np_softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smooth", [1.0, 1e-3])
def test_dice_multiclass_vs_numpy(reduction, smooth):
    target = rng0.integers(0, 3, (2, 4, 4))
    onehot = np.moveaxis(np.eye(3)[target], -1, 1)
    red = {"none": lambda a: a, "mean": np.mean, "sum": np.sum}[reduction]
    # probabilities vs class indices
    check_op([Arg((2, 3, 4, 4), 0.0, 1.0), Const(target)],
             lambda p, t: cF.dice_loss(p, t, smooth=smooth, reduction=reduction),
             np_fn=lambda p, t: red(np_dice(p, onehot, smooth)), compare_torch=False, max_elems=24)
    # logits through softmax vs a one-hot float target: the same numbers
    check_op([Arg((2, 3, 4, 4), -2.0, 2.0), Const(onehot)],
             lambda x, t: cF.dice_loss(x, t, smooth=smooth, reduction=reduction, from_logits=True),
             np_fn=lambda x, t: red(np_dice(np_softmax(x), t, smooth)), compare_torch=False, max_elems=24)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dice_binary_and_soft_targets_vs_numpy(reduction):
    red = {"none": lambda a: a, "mean": np.mean, "sum": np.sum}[reduction]
    out = check_op([Arg((3, 5, 2), -3, 3), Arg((3, 5, 2), 0.0, 1.0)],
                   lambda x, t: cF.dice_loss(x, t, reduction=reduction, mode="binary", from_logits=True),
                   np_fn=lambda x, t: red(np_dice((1 / (1 + np.exp(-x)))[:, None], t[:, None], 1.0)[:, 0]),
                   compare_torch=False)
    if reduction == "none":
        assert out.shape == (3,)


def test_dice_known_values():
    p = t64([[[1.0, 1.0, 0.0, 0.0]]])  # (N=1, 1, 4): binary via one class
    t = t64([[[1.0, 0.0, 0.0, 0.0]]])
    # 2*1 / (2 + 1) with smooth 0
    assert_close("dice", cF.dice_loss(p, t, smooth=0.0).item(), 1 - 2 / 3, 1e-15, 0)
    # empty prediction and target: loss 0 with smooth > 0
    z = t64(np.zeros((1, 1, 4)))
    assert cF.dice_loss(z, z).item() == 0.0
    # perfect prediction of classes 0/1 from indices
    probs = t64(np.moveaxis(np.eye(2)[[[0, 1, 1]]], -1, 1))
    assert cF.dice_loss(probs, idx([[0, 1, 1]]), smooth=0.0).item() == 0.0


# ------------------------------------------------------------------ modules
def _module_cases():
    x = rng0.standard_normal((4, 3))
    y = rng0.standard_normal((4, 3))
    p = rng0.uniform(0.05, 0.95, (4, 3))
    b = rng0.uniform(0, 1, (4, 3))
    t = np.array([0, 2, 1, 2])
    w = rng0.uniform(0.5, 2, 3)
    return [
        (L.L1Loss(reduction="sum"), lambda: cF.l1_loss(t64(x), t64(y), reduction="sum"), (x, y)),
        (L.MSELoss(), lambda: cF.mse_loss(t64(x), t64(y)), (x, y)),
        (L.HuberLoss(delta=0.5), lambda: cF.huber_loss(t64(x), t64(y), delta=0.5), (x, y)),
        (L.SmoothL1Loss(beta=0.3), lambda: cF.smooth_l1_loss(t64(x), t64(y), beta=0.3), (x, y)),
        (L.BCELoss(weight=t64(w)), lambda: cF.binary_cross_entropy(t64(p), t64(b), weight=t64(w)), (p, b)),
        (L.BCEWithLogitsLoss(pos_weight=t64(w)),
         lambda: cF.binary_cross_entropy_with_logits(t64(x), t64(b), pos_weight=t64(w)), (x, b)),
        (L.CrossEntropyLoss(weight=t64(w), label_smoothing=0.1, ignore_index=1),
         lambda: cF.cross_entropy(t64(x), idx(t), weight=t64(w), label_smoothing=0.1, ignore_index=1), (x, t)),
        (L.NLLLoss(reduction="none"), lambda: cF.nll_loss(t64(x), idx(t), reduction="none"), (x, t)),
        (L.KLDivLoss(reduction="batchmean", log_target=True),
         lambda: cF.kl_div(t64(x), t64(y), reduction="batchmean", log_target=True), (x, y)),
        (L.FocalLoss(gamma=1.5, alpha=t64(w)), lambda: cF.focal_loss(t64(x), idx(t), gamma=1.5, alpha=t64(w)), (x, t)),
        (L.FocalLoss(mode="binary", alpha=0.25),
         lambda: cF.sigmoid_focal_loss(t64(x), t64(b), alpha=0.25, reduction="mean"), (x, b)),
        (L.FocalLoss(mode="binary"),
         lambda: cF.sigmoid_focal_loss(t64(x), t64(b), alpha=-1, reduction="mean"), (x, b)),
        (L.DiceLoss(from_logits=True), lambda: cF.dice_loss(t64(x), idx(t[:4]), from_logits=True), (x, t)),
    ]


@pytest.mark.parametrize("case", range(13))
def test_loss_modules_match_functionals(case):
    module, ref, (a, b) = _module_cases()[case]
    tb = idx(b) if b.dtype.kind == "i" else t64(b)
    out = module(t64(a), tb)
    assert_close(type(module).__name__, out.numpy(), ref().numpy(), 0, 0)
    repr(module)


def test_loss_module_weights_are_buffers():
    w = cgrad.tensor([1.0, 2.0, 3.0])
    m = L.CrossEntropyLoss(weight=w)
    assert "weight" in m.state_dict()
    m.double()
    assert m.weight.dtype is cgrad.float64
    x = cgrad.randn(4, 3, dtype=cgrad.float64, requires_grad=True)
    m(x, idx([0, 1, 2, 0])).backward()
    assert x.grad.shape == (4, 3)
    assert set(L.BCEWithLogitsLoss(pos_weight=w).state_dict()) == {"pos_weight"}


def test_loss_modules_match_torch_modules(torch):
    x = rng0.standard_normal((5, 4))
    t = rng0.integers(0, 4, 5)
    w = rng0.uniform(0.5, 2, 4)
    m = L.CrossEntropyLoss(weight=t64(w), ignore_index=2, label_smoothing=0.2)
    tm = torch.nn.CrossEntropyLoss(weight=torch.tensor(w), ignore_index=2, label_smoothing=0.2)
    assert_close("CrossEntropyLoss", m(t64(x), idx(t)).item(), tm(torch.tensor(x), torch.tensor(t)).item(), 1e-14, 1e-12)
    m = L.HuberLoss(reduction="sum", delta=0.3)
    tm = torch.nn.HuberLoss(reduction="sum", delta=0.3)
    y = rng0.standard_normal((5, 4))
    assert_close("HuberLoss", m(t64(x), t64(y)).item(), tm(torch.tensor(x), torch.tensor(y)).item(), 1e-14, 1e-12)


def test_legacy_size_average_reduce_map_like_torch(torch):
    x, y = rng0.standard_normal(6), rng0.standard_normal(6)
    for sa, rd in [(False, None), (None, False), (True, True)]:
        with pytest.warns(UserWarning, match="deprecated"):
            out = cF.mse_loss(t64(x), t64(y), size_average=sa, reduce=rd).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = torch.nn.functional.mse_loss(torch.tensor(x), torch.tensor(y), size_average=sa, reduce=rd)
        assert_close(f"legacy {sa} {rd}", out, ref.numpy(), 1e-15, 1e-14)


# ------------------------------------------------------------------ errors
def test_bad_reduction_names_the_value():
    x = t64(np.zeros((2, 3)))
    for call in (lambda: cF.mse_loss(x, x, reduction="avg"),
                 lambda: cF.cross_entropy(x, idx([0, 1]), reduction="avg"),
                 lambda: cF.kl_div(x, x, reduction="avg"),
                 lambda: cF.focal_loss(x, idx([0, 1]), reduction="avg"),
                 lambda: cF.dice_loss(x, idx([0, 1]), reduction="avg"),
                 lambda: L.MSELoss(reduction="avg")):
        with pytest.raises(ValueError, match="'avg'"):
            call()


def test_out_of_range_class_index_raises_index_error():
    x = t64(np.zeros((3, 4)))
    with pytest.raises(IndexError, match="target 7 is out of bounds for 4 classes"):
        cF.cross_entropy(x, idx([0, 7, 1]))
    with pytest.raises(IndexError, match="target -3"):
        cF.nll_loss(x, idx([0, -3, 1]))
    with pytest.raises(IndexError, match="target 4"):
        cF.focal_loss(x, idx([4, 0, 1]))
    with pytest.raises(IndexError, match="target 9"):
        cF.dice_loss(t64(np.zeros((1, 4, 2))), idx([[9, 0]]))


def test_bad_shapes_and_dtypes():
    x = t64(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"target shape \(2,\)"):
        cF.cross_entropy(x, idx([0, 1]))
    with pytest.raises(TypeError, match="int64"):
        cF.nll_loss(x, t64([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        cF.cross_entropy(x, idx([0, 1, 2]), weight=t64([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"must be int64.*must have the input's shape \(3, 4\)"):
        cF.cross_entropy(x, t64(np.zeros((3, 5))))
    with pytest.raises(TypeError, match=r"float64 target of shape \(3,\)"):
        cF.cross_entropy(x, t64([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="ignore_index"):
        cF.cross_entropy(x, t64(np.zeros((3, 4))), ignore_index=1)
    with pytest.raises(ValueError, match="label_smoothing.*1.5"):
        cF.cross_entropy(x, idx([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"target size \(4,\)"):
        cF.binary_cross_entropy_with_logits(x, t64(np.zeros(4)))
    with pytest.raises(ValueError, match="pos_weight shape"):
        cF.binary_cross_entropy_with_logits(x, x, pos_weight=t64(np.ones(3)))
    with pytest.raises(ValueError, match="input should be between 0 and 1, got 1.5"):
        cF.binary_cross_entropy(t64([0.5, 1.5]), t64([0.0, 1.0]))
    with pytest.raises(ValueError, match="target should be between 0 and 1"):
        cF.binary_cross_entropy(t64([0.5, 0.5]), t64([0.0, 2.0]))
    with pytest.raises(TypeError, match="floating-point"):
        cF.mse_loss(idx([1, 2]), idx([1, 2]))
    with pytest.raises(TypeError, match="must be a cgrad.Tensor"):
        cF.mse_loss([1.0, 2.0], t64([1.0, 2.0]))
    with pytest.raises(ValueError, match="delta must be positive, got 0"):
        cF.huber_loss(x, x, delta=0)
    with pytest.raises(ValueError, match="beta must be non-negative, got -1"):
        cF.smooth_l1_loss(x, x, beta=-1)
    with pytest.raises(ValueError, match="gamma must be non-negative"):
        cF.focal_loss(x, idx([0, 1, 2]), gamma=-1)
    with pytest.raises(ValueError, match="mode must be"):
        cF.dice_loss(x, x, mode="multilabel")
    with pytest.raises(ValueError, match="binary target shape"):
        cF.dice_loss(x, t64(np.zeros(3)), mode="binary")
    with pytest.raises(ValueError, match="0-d"):
        cF.cross_entropy(t64(1.0), idx(0))
    with pytest.raises(ValueError, match="needs a 0-d target"):
        cF.cross_entropy(t64(np.zeros(4)), idx([1]))
    with pytest.raises(ValueError, match="binary mode takes alpha"):
        L.FocalLoss(mode="binary", alpha=t64([1.0, 2.0]))
    with pytest.raises(ValueError, match="mode must be"):
        L.FocalLoss(mode="multilabel")
