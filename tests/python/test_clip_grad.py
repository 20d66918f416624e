"""cgrad.nn.utils clipping against torch.nn.utils (and AGC against the timm
formula written in torch), the clip results, and bad input."""
import math

import numpy as np
import pytest

import cgrad
import cgrad.nn.utils as U

SHAPES = [(4, 3), (5,), (2, 2, 2)]


def _params(torch, rng, dt, scale=1.0, grads=True):
    arrays = [rng.standard_normal(s).astype(dt) for s in SHAPES]
    gs = [(scale * rng.standard_normal(s)).astype(dt) for s in SHAPES]
    tp = [torch.tensor(a, requires_grad=True) for a in arrays]
    cp = [cgrad.tensor(a, requires_grad=True) for a in arrays]
    if grads:
        for t, c, g in zip(tp, cp, gs):
            t.grad = torch.tensor(g)
            c.grad = cgrad.tensor(g)
    # A parameter without a gradient is skipped by both.
    tp.append(torch.ones(2, requires_grad=True))
    cp.append(cgrad.ones(2, requires_grad=True))
    return tp, cp


def _tol(dt):
    return dict(rtol=1e-6, atol=1e-7) if dt == "float32" else dict(rtol=1e-13, atol=1e-15)


def _same_grads(tp, cp, dt):
    for t, c in zip(tp, cp):
        if t.grad is None:
            assert c.grad is None
            continue
        np.testing.assert_allclose(c.grad.numpy(), t.grad.numpy(), **_tol(dt))


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 3.0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(torch, rng, dt, norm_type, max_norm):
    tp, cp = _params(torch, rng, dt)
    tn = torch.nn.utils.clip_grad_norm_(tp, max_norm, norm_type=norm_type, foreach=False)
    cn = U.clip_grad_norm_(cp, max_norm, norm_type=norm_type)
    assert cn.shape == () and cn.dtype == getattr(cgrad, dt)
    np.testing.assert_allclose(float(cn.item()), float(tn), **_tol(dt))
    _same_grads(tp, cp, dt)
    r = U.last_clip_result()
    assert r.kind == "norm" and r.clipped == (max_norm < 1)
    assert r.total_norm == pytest.approx(float(tn), rel=1e-6)
    if r.clipped:
        assert r.clip_coef == pytest.approx(max_norm / (float(tn) + 1e-6), rel=_tol(dt)["rtol"])
        assert r.total_norm_after == pytest.approx(max_norm, rel=1e-5)
    else:
        assert r.clip_coef == 1.0 and r.total_norm_after == r.total_norm


def test_clip_grad_norm_single_tensor_and_no_grads(torch, rng):
    t = torch.tensor(rng.standard_normal(6), requires_grad=True)
    c = cgrad.tensor(t.detach().numpy(), requires_grad=True)
    g = rng.standard_normal(6)
    t.grad, c.grad = torch.tensor(g), cgrad.tensor(g)
    assert float(U.clip_grad_norm_(c, 0.1).item()) == pytest.approx(
        float(torch.nn.utils.clip_grad_norm_(t, 0.1)))
    np.testing.assert_allclose(c.grad.numpy(), t.grad.numpy(), rtol=1e-13)
    empty = U.clip_grad_norm_([cgrad.ones(2, requires_grad=True)], 1.0)
    assert float(empty.item()) == 0.0 and not U.last_clip_result().clipped


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_clip_grad_norm_nonfinite(torch, rng, bad):
    tp, cp = _params(torch, rng, "float64")
    tp[0].grad[1, 1] = bad
    cp[0].grad[1, 1] = bad
    with pytest.raises(RuntimeError, match="non-finite"):
        U.clip_grad_norm_(cp, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(tp, 1.0, error_if_nonfinite=True)
    # Nothing was scaled by the refused call.
    np.testing.assert_array_equal(cp[1].grad.numpy(), tp[1].grad.numpy())
    tn = torch.nn.utils.clip_grad_norm_(tp, 1.0, foreach=False)
    cn = U.clip_grad_norm_(cp, 1.0)
    assert math.isnan(float(tn)) == math.isnan(float(cn.item()))
    for t, c in zip(tp, cp):
        if t.grad is not None:
            np.testing.assert_array_equal(c.grad.numpy(), t.grad.numpy())


def test_non_contiguous_gradient_is_clipped_in_place(torch, rng):
    a = rng.standard_normal((3, 4))
    t = torch.tensor(a.T.copy(), requires_grad=True)
    c = cgrad.tensor(a.T.copy(), requires_grad=True)
    t.grad = torch.tensor(a).t()
    c.grad = cgrad.tensor(a).t()
    assert not c.grad.is_contiguous()
    torch.nn.utils.clip_grad_norm_([t], 0.3)
    U.clip_grad_norm_([c], 0.3)
    np.testing.assert_allclose(c.grad.numpy(), t.grad.numpy(), rtol=1e-13)
    U.clip_grad_value_([c], 0.01)
    torch.nn.utils.clip_grad_value_([t], 0.01)
    np.testing.assert_allclose(c.grad.numpy(), t.grad.numpy(), rtol=1e-13)


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 3.0])
def test_get_total_norm_matches_torch(torch, rng, dt, norm_type):
    ts = [rng.standard_normal(s).astype(dt) for s in SHAPES]
    want = torch.nn.utils.get_total_norm([torch.tensor(x) for x in ts], norm_type)
    got = U.get_total_norm([cgrad.tensor(x) for x in ts], norm_type)
    np.testing.assert_allclose(float(got.item()), float(want), **_tol(dt))
    assert float(U.get_total_norm([]).item()) == 0.0
    with pytest.raises(RuntimeError, match="non-finite"):
        U.get_total_norm([cgrad.tensor([1.0, math.inf])], error_if_nonfinite=True)


def test_clip_grads_with_norm_matches_torch(torch, rng):
    tp, cp = _params(torch, rng, "float64")
    total = torch.nn.utils.get_total_norm([t.grad for t in tp if t.grad is not None])
    torch.nn.utils.clip_grads_with_norm_(tp, 0.7, total)
    U.clip_grads_with_norm_(cp, 0.7, float(total))
    _same_grads(tp, cp, "float64")
    assert U.last_clip_result().clipped


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_clip_grad_value_matches_torch(torch, rng, dt):
    tp, cp = _params(torch, rng, dt, scale=2.0)
    torch.nn.utils.clip_grad_value_(tp, 1.5, foreach=False)
    assert U.clip_grad_value_(cp, 1.5) is None
    _same_grads(tp, cp, dt)
    r = U.last_clip_result()
    before = sum(int((np.abs(t.grad.numpy()) == np.float32(1.5) if dt == "float32"
                      else np.abs(t.grad.numpy()) == 1.5).sum())
                 for t in tp if t.grad is not None)
    assert r.kind == "value" and r.clipped and r.n_clipped == before
    assert r.n_total == sum(int(np.prod(s)) for s in SHAPES)


def _timm_agc(torch, params, clip_factor, eps):
    """timm.utils.agc.adaptive_clip_grad (norm_type 2), written out."""
    def unitwise_norm(x):
        if x.ndim <= 1:
            return x.norm(2.0)
        return x.norm(2.0, dim=tuple(range(1, x.ndim)), keepdim=True)

    for p in params:
        if p.grad is None:
            continue
        p_data, g_data = p.detach(), p.grad.detach()
        max_norm = unitwise_norm(p_data).clamp_(min=eps).mul_(clip_factor)
        grad_norm = unitwise_norm(g_data)
        clipped_grad = g_data * (max_norm / grad_norm.clamp(min=1e-6))
        new_grads = torch.where(grad_norm < max_norm, g_data, clipped_grad)
        p.grad.detach().copy_(new_grads)


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_agc_matches_timm_formula(torch, rng, dt):
    tp, cp = _params(torch, rng, dt, scale=0.3)
    # One unit whose weight row is zero: the eps floor decides.
    tp[0].data[2] = 0
    cp[0].data = cgrad.tensor(tp[0].detach().numpy())
    norms_before = [np.linalg.norm(c.grad.numpy().reshape(c.shape[0], -1), axis=1)
                    if c.grad is not None and c.ndim > 1 else None for c in cp]
    _timm_agc(torch, tp, 0.1, 1e-3)
    U.clip_grad_agc_(cp, clip_factor=0.1, eps=1e-3)
    _same_grads(tp, cp, dt)
    r = U.last_clip_result()
    assert r.kind == "agc" and r.n_total == 4 + 1 + 2 and r.clipped
    assert 0 < r.n_clipped <= r.n_total
    assert norms_before[0] is not None


def test_step_report_takes_agc_and_value_results():
    import cgrad.optim as optim
    p = cgrad.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = cgrad.tensor([[5.0, 0.0], [0.0, 0.001]])
    U.clip_grad_agc_([p], clip_factor=0.1)
    opt.step()
    assert opt.last_report.clipped and opt.last_report.clip.kind == "agc"
    assert opt.last_report.clip.n_clipped == 1
    p.grad = cgrad.tensor([[0.5, 0.0], [0.0, 0.001]])
    U.clip_grad_value_([p], 10.0)
    opt.step()
    assert not opt.last_report.clipped and opt.last_report.clip.kind == "value"


def test_bad_input():
    p = cgrad.ones(3, requires_grad=True)
    p.grad = cgrad.ones(3)
    with pytest.raises(ValueError, match="max_norm must be >= 0, got -1"):
        U.clip_grad_norm_([p], -1.0)
    with pytest.raises(ValueError, match="norm_type must be > 0 or inf, got 0"):
        U.clip_grad_norm_([p], 1.0, norm_type=0)
    with pytest.raises(ValueError, match="norm_type"):
        U.clip_grad_norm_([p], 1.0, norm_type=-math.inf)
    with pytest.raises(TypeError, match="norm_type"):
        U.clip_grad_norm_([p], 1.0, norm_type="fro")
    with pytest.raises(TypeError, match="max_norm must be a number"):
        U.clip_grad_norm_([p], "big")
    with pytest.raises(TypeError, match="parameter 1 is a list"):
        U.clip_grad_norm_([p, [1.0]], 1.0)
    with pytest.raises(TypeError, match="iterable"):
        U.clip_grad_value_(3, 1.0)
    with pytest.raises(ValueError, match="clip_value must be >= 0, got -0.5"):
        U.clip_grad_value_([p], -0.5)
    with pytest.raises(ValueError, match="clip_factor must be > 0"):
        U.clip_grad_agc_([p], clip_factor=0.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        U.clip_grad_agc_([p], eps=-1.0)
    np.testing.assert_array_equal(p.grad.numpy(), [1, 1, 1])  # untouched by the refusals
