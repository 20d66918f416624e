"""UpdateGuard: steps with a non-finite or outlying loss / gradient norm are
skipped (parameters and optimizer state untouched), counted by reason and
reported in the optimizer's StepReport."""
import math

import numpy as np
import pytest

import cgrad
from cgrad import nn
from cgrad.nn import functional as F
from cgrad.nn.utils import clip_grad_norm_
from cgrad.optim import UpdateGuard
from cgrad.optim.guard import robust_z


def setup(seed=0):
    cgrad.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    rng = np.random.default_rng(seed)
    batches = [(cgrad.from_numpy(rng.standard_normal((32, 5)).astype(np.float32)),
                cgrad.from_numpy(rng.standard_normal((32, 1)).astype(np.float32)))
               for _ in range(8)]
    return model, batches


def forward_backward(model, opt, batch, grad_scale=1.0):
    opt.zero_grad()
    x, y = batch
    loss = F.mse_loss(model(x), y)
    loss.backward()
    if grad_scale != 1.0:
        with cgrad.no_grad():
            for p in model.parameters():
                p.grad.mul_(grad_scale)
    return loss


def snapshot(model, opt):
    ps = [p.detach().numpy().copy() for p in model.parameters()]
    st = [v.numpy().copy() for p in model.parameters() for v in opt.state[p].values()]
    return ps, st


def assert_same(a, b):
    for u, v in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(u, v)


def test_normal_steps_pass_and_match_a_plain_run():
    model, batches = setup()
    opt = cgrad.optim.Adam(model.parameters(), lr=0.01)
    guard = UpdateGuard(opt, window=20, warmup=5)
    ref, _ = setup()
    ref_opt = cgrad.optim.Adam(ref.parameters(), lr=0.01)
    for k in range(60):
        b = batches[k % len(batches)]
        assert guard.step(forward_backward(model, opt, b)) is None  # Adam.step returns None
        forward_backward(ref, ref_opt, b)
        ref_opt.step()
        assert guard.last.accepted and not opt.last_report.skipped
    assert guard.skipped == 0 and guard.accepted == 60 and set(guard.counts.values()) == {0}
    assert len(guard.loss_window) == 20 and len(guard.grad_norm_window) == 20
    assert_same(snapshot(model, opt), snapshot(ref, ref_opt))


@pytest.mark.parametrize("inject, kind", [
    ("loss_spike", "loss_outlier"),
    ("grad_spike", "grad_norm_outlier"),
    ("nan_loss", "nonfinite_loss"),
    ("inf_grad", "nonfinite_grad_norm"),
])
def test_injected_faults_are_skipped_and_counted(inject, kind):
    model, batches = setup()
    opt = cgrad.optim.Adam(model.parameters(), lr=0.01)
    reports = []
    opt.register_report_hook(lambda o, r: reports.append(r))
    guard = UpdateGuard(opt, window=30, warmup=10)
    for k in range(40):
        b = batches[k % len(batches)]
        bad = k in (25, 33)
        scale = {"grad_spike": 1e3, "inf_grad": math.inf}.get(inject, 1.0) if bad else 1.0
        loss = forward_backward(model, opt, b, grad_scale=scale)
        if bad and inject == "loss_spike":
            loss = loss * 50.0
        if bad and inject == "nan_loss":
            loss = loss * float("nan")
        before = snapshot(model, opt)
        window_before = list(guard.loss_window)
        out = guard.step(loss)
        if bad:
            assert out is None and not guard.last.accepted and guard.last.kind == kind
            assert_same(snapshot(model, opt), before)
            assert list(guard.loss_window) == window_before  # not learned from
            rep = opt.last_report
            assert rep.skipped and rep.reason == guard.last.reason and rep.step == k
        else:
            assert guard.last.accepted, (k, guard.last)
    assert guard.skipped == 2 and guard.counts[kind] == 2 and sum(guard.counts.values()) == 2
    assert [d.step for d in guard.decisions] == [25, 33]
    assert [r.step for r in reports if r.skipped] == [25, 33] and len(reports) == 40
    assert all(int(opt.state[p]["step"].item()) == 38 for p in model.parameters())


def test_warmup_accepts_outliers_until_enough_history():
    model, batches = setup()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.01)
    guard = UpdateGuard(opt, window=8, warmup=5, check_grad_norm=False)
    for k in range(5):  # spikes during the warmup go in (nothing to compare with yet)
        forward_backward(model, opt, batches[k])
        guard.step(1000.0 if k == 2 else 1.0 + 0.01 * k)
    assert guard.skipped == 0 and len(guard.loss_window) == 5
    # 4 of 5 values near 1: median/MAD shrug off the 1000 that got in
    forward_backward(model, opt, batches[5])
    assert guard.step(500.0) is None and guard.last.kind == "loss_outlier"
    assert guard.last.loss_z > 6
    # but non-finite values are rejected even in the warmup
    fresh = UpdateGuard(opt, window=8, warmup=5)
    forward_backward(model, opt, batches[0])
    fresh.step(float("inf"))
    assert fresh.counts["nonfinite_loss"] == 1


def test_window_keeps_the_last_accepted_values_and_reset():
    model, batches = setup()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.0)
    guard = UpdateGuard(opt, window=4, warmup=3, check_grad_norm=False)
    for v in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]:
        forward_backward(model, opt, batches[0])
        guard.step(v)
    assert list(guard.loss_window) == [3.0, 4.0, 5.0, 6.0] and guard.skipped == 0
    # window [3, 4, 5, 6]: median 4.5, MAD 1, scale 1.4826: 4.5 + 6 * 1.4826 = 13.3
    forward_backward(model, opt, batches[0])
    guard.step(13.0)
    assert guard.last.accepted and guard.last.loss_z == pytest.approx(8.5 / 1.4826)
    forward_backward(model, opt, batches[0])
    guard.step(30.0)
    assert not guard.last.accepted  # window now [4, 5, 6, 13]: median 5.5, MAD 1
    guard.reset()
    assert len(guard.loss_window) == 0 and guard.skipped == 1
    forward_backward(model, opt, batches[0])
    guard.step(30.0)
    assert guard.last.accepted


def test_downward_outliers_are_accepted():
    model, batches = setup()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.0)
    guard = UpdateGuard(opt, window=10, warmup=5, check_grad_norm=False)
    for k in range(10):
        forward_backward(model, opt, batches[0])
        guard.step(10.0 + 0.1 * (k % 3))
    forward_backward(model, opt, batches[0])
    guard.step(0.01)
    assert guard.last.accepted and guard.last.loss_z < -6


def test_grad_norm_is_the_clip_total_and_the_report_keeps_the_clip():
    model, batches = setup()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.01)
    guard = UpdateGuard(opt, warmup=2, window=4)
    forward_backward(model, opt, batches[0])
    expected = float(cgrad.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item())
    total = clip_grad_norm_(model.parameters(), 0.01)
    guard.step(1.0)
    assert guard.last.grad_norm == pytest.approx(float(total.item()), rel=1e-6)
    assert guard.last.grad_norm == pytest.approx(expected, rel=1e-5)
    rep = opt.last_report
    assert rep.clip is not None and rep.clipped and rep.grad_norm_before_clip == guard.last.grad_norm
    # without clipping, one get_total_norm pass over the gradients
    forward_backward(model, opt, batches[1])
    expected = float(cgrad.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item())
    guard.step(1.0)
    assert guard.last.grad_norm == pytest.approx(expected, rel=1e-6)
    # a skipped step's report also carries the clip it saw
    forward_backward(model, opt, batches[2])
    clip_grad_norm_(model.parameters(), 0.01)
    guard.step(float("nan"))
    assert opt.last_report.skipped and opt.last_report.clip is not None


def test_with_a_grad_scaler():
    model, batches = setup()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.01)
    scaler = cgrad.amp.GradScaler(init_scale=2.0 ** 10)
    guard = UpdateGuard(opt, warmup=2, window=4)
    for k in range(4):
        opt.zero_grad()
        x, y = batches[k]
        loss = F.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        if k == 2:
            with cgrad.no_grad():
                model[0].bias.grad.fill_(float("inf"))
        scaler.unscale_(opt)
        expected = float(cgrad.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item())
        before = snapshot(model, opt)
        guard.step(loss)
        scaler.update()
        if k == 2:
            assert guard.last.kind == "nonfinite_grad_norm" and opt.last_report.skipped
            assert_same(snapshot(model, opt), before)
            assert scaler.get_scale() == 2.0 ** 9  # the scaler backed off
        else:
            assert guard.last.accepted and guard.last.grad_norm == pytest.approx(expected)
    assert guard.counts["nonfinite_grad_norm"] == 1


def test_robust_z_fallbacks():
    assert robust_z(5.0, [1.0, 2.0, 3.0]) == pytest.approx(3.0 / 1.4826)
    # more than half the window equal: MAD 0, mean absolute deviation used
    w = [1.0, 1.0, 1.0, 5.0]
    assert robust_z(3.0, w) == pytest.approx(2.0 / (1.253314 * 1.0))
    # a flat window: 1e-6 * |median| floor, so a tiny rise is no outlier
    assert robust_z(1.0 + 1e-9, [1.0] * 5) < 6
    assert robust_z(1.1, [1.0] * 5) > 6


def test_loss_argument_rules():
    model, batches = setup()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1)
    guard = UpdateGuard(opt)
    forward_backward(model, opt, batches[0])
    with pytest.raises(ValueError, match="needs the loss"):
        guard.step()
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        guard.step(cgrad.ones(2))
    with pytest.raises(TypeError, match="'abc'"):
        guard.step("abc")
    norm_only = UpdateGuard(opt, check_loss=False)
    norm_only.step()
    assert norm_only.last.accepted and norm_only.last.loss is None
    nothing = UpdateGuard(opt, check_loss=False, check_grad_norm=False)
    opt.zero_grad()
    with cgrad.no_grad():
        for p in model.parameters():
            p.grad = cgrad.full(p.shape, float("nan"))
    before = [p.detach().numpy().copy() for p in model.parameters()]
    nothing.step()  # nothing checked: the step runs
    assert nothing.last.accepted and np.isnan(model[0].weight.detach().numpy()).all()
    assert not np.isnan(before[0]).any()


@pytest.mark.parametrize("kwargs, words", [
    (dict(z_threshold=0), "z_threshold"),
    (dict(z_threshold=-1.0), "z_threshold"),
    (dict(z_threshold=True), "z_threshold"),
    (dict(window=1), "window"),
    (dict(window=2.5), "window"),
    (dict(warmup=1), "warmup"),
    (dict(window=10, warmup=11), "cannot exceed"),
    (dict(norm_type=-2), "norm_type"),
])
def test_bad_arguments(kwargs, words):
    model, _ = setup()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises((ValueError, TypeError), match=words):
        UpdateGuard(opt, **kwargs)


def test_not_an_optimizer():
    with pytest.raises(TypeError, match="optimizer must be"):
        UpdateGuard(object())


def test_state_dict_roundtrip(tmp_path):
    model, batches = setup()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.01)
    guard = UpdateGuard(opt, window=5, warmup=3)
    for k in range(7):
        forward_backward(model, opt, batches[k])
        guard.step(float("nan") if k == 4 else 1.0 + 0.1 * k)
    cgrad.save({"guard": guard.state_dict()}, tmp_path / "g.safetensors")
    other = UpdateGuard(opt, window=5, warmup=3)
    other.load_state_dict(cgrad.load(tmp_path / "g.safetensors")["guard"])
    assert list(other.loss_window) == list(guard.loss_window)
    assert list(other.grad_norm_window) == list(guard.grad_norm_window)
    assert other.counts == guard.counts and other.skipped == 1 and other.accepted == 6
    with pytest.raises(ValueError, match="loss_window"):
        other.load_state_dict({})


def test_guard_norm_reaches_the_step_report():
    w = cgrad.tensor([1.0, 2.0], requires_grad=True)
    opt = cgrad.optim.SGD([w], lr=0.1)
    guard = cgrad.optim.UpdateGuard(opt, warmup=2)
    (w * w).sum().backward()
    guard.step((w * w).sum())
    assert opt.last_report.grad_norm_before_clip == pytest.approx(2 * (1 + 4) ** 0.5)
    w.grad = cgrad.tensor([float("nan"), 0.0])
    guard.step(cgrad.tensor(1.0))
    rep = opt.last_report
    assert rep.skipped and "non-finite" in rep.reason
    assert not math.isfinite(rep.grad_norm_before_clip)


def test_guard_norm_reaches_the_step_report_under_a_clip_by_value_on_a_device():
    """A clip by value on a device leaves its count there (the report's
    clipped pending); the guard's norm, measured after it, still fills the
    report's norms, and clipped reads the count back."""
    w = cgrad.tensor([1.0, 2.0], requires_grad=True, device="cuda")
    opt = cgrad.optim.SGD([w], lr=0.1)
    guard = cgrad.optim.UpdateGuard(opt, warmup=2)
    (w * w).sum().backward()  # gradient (2, 4), clamped to (1.5, 1.5)
    cgrad.nn.utils.clip_grad_value_([w], 1.5)
    assert cgrad.nn.utils.last_clip_result().pending
    guard.step(1.0)
    rep = opt.last_report
    assert rep.grad_norm_before_clip == rep.grad_norm_after_clip == pytest.approx(1.5 * 2 ** 0.5)
    assert rep.clip.kind == "value" and rep.clipped and rep.clip.n_clipped == 2
