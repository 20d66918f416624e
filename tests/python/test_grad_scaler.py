"""cgrad.amp.GradScaler against torch.amp.GradScaler on CPU: the
scale/unscale_/step/update sequence with injected inf/NaN gradients, skipped
steps in the step report, state_dict, errors."""
import math

import numpy as np
import pytest

import cgrad
import cgrad.optim as optim
from cgrad.amp import GradScaler
from cgrad.nn.utils import clip_grad_norm_


def _setup(torch, rng):
    w0 = rng.standard_normal((3, 2)).astype(np.float32)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    tw = torch.tensor(w0, requires_grad=True)
    cw = cgrad.tensor(w0, requires_grad=True)
    return tw, cw, torch.tensor(x), cgrad.tensor(x)


@pytest.mark.parametrize("explicit_unscale", [False, True])
def test_sequence_matches_torch(torch, rng, explicit_unscale):
    tw, cw, tx, cx = _setup(torch, rng)
    topt = torch.optim.SGD([tw], lr=0.05, momentum=0.9)
    copt = optim.SGD([cw], lr=0.05, momentum=0.9)
    kw = dict(init_scale=2.0 ** 10, growth_factor=4.0, backoff_factor=0.25, growth_interval=3)
    ts = torch.amp.GradScaler("cpu", **kw)
    cs = GradScaler(**kw)
    inject = {4: math.inf, 8: -math.inf, 9: math.nan}
    reports = []
    copt.register_report_hook(lambda o, r: reports.append(r))
    for k in range(14):
        topt.zero_grad()
        copt.zero_grad()
        ts.scale(torch.tanh(tx @ tw).pow(2).sum()).backward()
        closs = cs.scale((cx @ cw).tanh().pow(2).sum())
        closs.backward()
        if k in inject:
            tw.grad[1, 0] = inject[k]
            cw.grad[1, 0] = inject[k]
        scale_used = cs.get_scale()
        assert scale_used == ts.get_scale()
        if explicit_unscale:
            ts.unscale_(topt)
            cs.unscale_(copt)
            np.testing.assert_allclose(cw.grad.numpy(), tw.grad.numpy(), rtol=1e-5, atol=1e-6)
            torch.nn.utils.clip_grad_norm_([tw], 1.0)
            clip_grad_norm_([cw], 1.0)
        before = cw.detach().numpy().copy()
        ts.step(topt)
        cs.step(copt)
        ts.update()
        cs.update()
        assert cs.get_scale() == ts.get_scale(), k
        assert cs._get_growth_tracker() == ts._get_growth_tracker()
        r = copt.last_report
        assert r.loss_scale == scale_used and r.skipped == (k in inject), k
        if k in inject:
            np.testing.assert_array_equal(cw.detach().numpy(), before)
            assert r.nonfinite == 1 and "non-finite" in r.reason
        else:
            assert r.nonfinite == 0 and r.reason is None
        if explicit_unscale and not r.skipped:
            assert r.grad_norm_before_clip is not None
        np.testing.assert_allclose(cw.detach().numpy(), tw.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
    assert len(reports) == 14 and [r.step for r in reports] == list(range(14))
    assert cs.state_dict() == ts.state_dict()


def test_growth_stops_at_float32_overflow(torch):
    cs = GradScaler(init_scale=2.0 ** 127, growth_interval=1)
    ts = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1)
    for scaler, lib, opt_mod in ((cs, cgrad, optim), (ts, torch, torch.optim)):
        p = lib.ones(1, requires_grad=True)
        opt = opt_mod.SGD([p], lr=0.1)
        scaler.scale(p.sum()).backward()
        scaler.step(opt)
        scaler.update()
    assert cs.get_scale() == ts.get_scale() == 2.0 ** 127


def test_state_dict_round_trip_and_update_with_new_scale(torch):
    cs = GradScaler(init_scale=8.0, growth_interval=5)
    p = cgrad.ones(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    for _ in range(3):
        cs.scale(p.sum()).backward()
        cs.step(opt)
        cs.update()
        opt.zero_grad()
    sd = cs.state_dict()
    assert sd == {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                  "growth_interval": 5, "_growth_tracker": 3}
    other = GradScaler()
    other.load_state_dict(sd)
    assert other.state_dict() == sd
    ts = torch.amp.GradScaler("cpu")
    ts.load_state_dict(sd)
    assert ts.state_dict() == sd
    cs.update(new_scale=3.0)
    assert cs.get_scale() == 3.0
    cs.scale(p.sum()).backward()
    cs.step(opt)
    cs.update(new_scale=cgrad.tensor(5.0))
    assert cs.get_scale() == 5.0
    with pytest.raises(RuntimeError, match="empty"):
        GradScaler().load_state_dict({})


def test_disabled_scaler_is_transparent():
    cs = GradScaler(enabled=False)
    p = cgrad.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.5)
    loss = (p * p).sum()
    assert cs.scale(loss) is loss
    loss.backward()
    cs.unscale_(opt)
    cs.step(opt)
    cs.update()
    np.testing.assert_allclose(p.detach().numpy(), [0.0, 0.0])
    assert cs.get_scale() == 1.0 and cs.state_dict() == {}
    assert opt.last_report.loss_scale is None


def test_scale_lists_of_outputs():
    cs = GradScaler(init_scale=4.0)
    a, b = cgrad.tensor(1.0), cgrad.tensor(2.0)
    out = cs.scale([a, (b,)])
    assert float(out[0].item()) == 4.0 and float(out[1][0].item()) == 8.0
    with pytest.raises(TypeError, match="outputs"):
        cs.scale(3.0)


def test_errors_follow_torch():
    p = cgrad.ones(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    cs = GradScaler()
    with pytest.raises(RuntimeError, match="scale"):
        cs.unscale_(opt)
    with pytest.raises(RuntimeError, match="scale"):
        cs.update()
    cs.scale(p.sum()).backward()
    with pytest.raises(RuntimeError, match="No inf checks"):
        cs.update()
    cs.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        cs.unscale_(opt)
    with pytest.raises(RuntimeError, match="Closure"):
        cs.step(opt, closure=lambda: 0.0)
    cs.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        cs.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        cs.unscale_(opt)
    cs.update()


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(init_scale=0.0), ValueError, "init_scale must be positive and finite, got 0.0"),
    (dict(init_scale=math.inf), ValueError, "init_scale"),
    (dict(growth_factor=1.0), ValueError, "growth factor must be > 1.0, got 1.0"),
    (dict(backoff_factor=1.5), ValueError, "backoff factor must be in \\(0, 1\\), got 1.5"),
    (dict(growth_interval=0), ValueError, "growth_interval must be a positive integer, got 0"),
    (dict(growth_interval=2.5), ValueError, "growth_interval"),
    (dict(init_scale="big"), TypeError, "init_scale must be a number"),
    (dict(device="tpu"), ValueError, "device must be 'cpu' or 'cuda'"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        GradScaler(**kwargs)
