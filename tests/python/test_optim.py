"""cgrad.optim against torch.optim: same initial weights, same gradients each
step, same trajectory (float32 to float rounding, float64 near-exactly);
state names and state_dict layout; subclassing; hooks; step reports; bad
input."""
import math

import numpy as np
import pytest

import cgrad
import cgrad.optim as optim
from cgrad.nn.utils import clip_grad_norm_

STEPS = 25

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("Adam", dict(lr=0.02, betas=(0.3, 0.5), eps=1e-6, weight_decay=0.05, amsgrad=True,
                  maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.4, 0.9), maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, alpha=0.6, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, maximize=True, eps=1e-4)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1, initial_accumulator_value=0.3)),
    ("Adagrad", dict(lr=0.1, eps=1e-3, maximize=True)),
]

# PyTorch's vectorised kernels fuse multiply-adds (lerp, addcmul), so float32
# agrees to a few ulps per step; centered RMSprop's sqrt(v - m^2) amplifies
# that. cgrad's own loops round after every operation, in PyTorch's order.
TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-11, atol=1e-13)}


def _init_arrays(rng, dt):
    return [rng.standard_normal((4, 3)).astype(dt), rng.standard_normal(3).astype(dt)]


class _Problem:
    """A small tanh regression computed in torch: each step's gradients are
    taken at torch's parameters and fed to both optimizers."""

    def __init__(self, torch, dt, rng):
        self.torch = torch
        self.x = torch.tensor(rng.standard_normal((8, 4)).astype(dt))
        self.y = torch.tensor(rng.standard_normal((8, 3)).astype(dt))

    def grads(self, w, b):
        torch = self.torch
        w_ = w.detach().requires_grad_(True)
        b_ = b.detach().requires_grad_(True)
        loss = ((torch.tanh(self.x @ w_ + b_) - self.y) ** 2).mean() + 0.1 * (w_ ** 2).sum()
        gw, gb = torch.autograd.grad(loss, [w_, b_])
        return gw, gb


def _pair(torch, name, kwargs, dt, rng):
    arrays = _init_arrays(rng, dt)
    tp = [torch.tensor(a, requires_grad=True) for a in arrays]
    cp = [cgrad.tensor(a, requires_grad=True) for a in arrays]
    tkw = dict(kwargs, foreach=False)
    # Two groups: the bias learns at half the rate.
    lr = kwargs["lr"]
    topt = getattr(torch.optim, name)([{"params": [tp[0]]}, {"params": [tp[1]], "lr": lr / 2}],
                                      **tkw)
    copt = getattr(optim, name)([{"params": [cp[0]]}, {"params": [cp[1]], "lr": lr / 2}],
                                **tkw)  # foreach accepted (and ignored) as in PyTorch
    return tp, cp, topt, copt


def _feed(torch, tp, cp, grads):
    for t, c, g in zip(tp, cp, grads):
        t.grad = g.clone()
        c.grad = cgrad.tensor(g.numpy())


def _assert_close(c, t, dt, what):
    np.testing.assert_allclose(c.detach().numpy(), t.detach().numpy(), err_msg=what, **TOL[dt])


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_trajectory_matches_torch(torch, rng, name, kwargs, dt):
    prob = _Problem(torch, dt, rng)
    tp, cp, topt, copt = _pair(torch, name, kwargs, dt, rng)
    for k in range(STEPS):
        _feed(torch, tp, cp, prob.grads(*tp))
        topt.step()
        copt.step()
        for i in range(2):
            _assert_close(cp[i], tp[i], dt, f"{name} {kwargs} step {k} param {i}")
    # Same state, under PyTorch's names.
    for t, c in zip(tp, cp):
        ts, cs = topt.state[t], copt.state[c]
        assert set(ts) == set(cs), (set(ts), set(cs))
        for key in ts:
            if key == "step":
                assert float(cs[key].item()) == float(ts[key].item())
            else:
                _assert_close(cs[key], ts[key], dt, f"state {key}")
                assert cs[key].dtype == c.dtype


def test_end_to_end_float64_grads_from_cgrad(torch, rng):
    """The gradients computed by cgrad's own tape on both sides."""
    arrays = _init_arrays(rng, "float64")
    x = rng.standard_normal((8, 4))
    tp = [torch.tensor(a, requires_grad=True) for a in arrays]
    cp = [cgrad.tensor(a, requires_grad=True) for a in arrays]
    topt = torch.optim.AdamW(tp, lr=0.05, amsgrad=True, foreach=False)
    copt = optim.AdamW(cp, lr=0.05, amsgrad=True)
    tx, cx = torch.tensor(x), cgrad.tensor(x)
    for _ in range(20):
        topt.zero_grad()
        copt.zero_grad()
        torch.tanh(tx @ tp[0] + tp[1]).pow(2).sum().backward()
        (cx @ cp[0] + cp[1]).tanh().pow(2).sum().backward()
        topt.step()
        copt.step()
    for t, c in zip(tp, cp):
        np.testing.assert_allclose(c.detach().numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_large_parameter_runs_without_gil(torch, rng):
    a = rng.standard_normal(40000).astype(np.float32)
    t = torch.tensor(a, requires_grad=True)
    c = cgrad.tensor(a, requires_grad=True)
    topt = torch.optim.Adam([t], lr=0.01, foreach=False)
    copt = optim.Adam([c], lr=0.01)
    for k in range(3):
        g = rng.standard_normal(40000).astype(np.float32)
        t.grad = torch.tensor(g)
        c.grad = cgrad.tensor(g)
        topt.step()
        copt.step()
    np.testing.assert_allclose(c.detach().numpy(), t.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_step_bumps_version_and_skips_params_without_grad():
    p = cgrad.ones(3, requires_grad=True)
    q = cgrad.ones(2, requires_grad=True)
    opt = optim.SGD([p, q], lr=0.5)
    p.grad = cgrad.tensor([1.0, 2.0, 3.0])
    v0, vq = p._version, q._version
    opt.step()
    assert p._version > v0 and q._version == vq
    np.testing.assert_allclose(p.detach().numpy(), [0.5, 0.0, -0.5])
    assert len(opt.state[q]) == 0


# -------------------------------------------------------------- state_dict
@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.05)), ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
])
def test_state_dict_round_trip_continues_exactly(rng, name, kwargs):
    arrays = _init_arrays(rng, "float32")
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in arrays]
             for _ in range(20)]
    a = [cgrad.tensor(x, requires_grad=True) for x in arrays]
    opt_a = getattr(optim, name)([{"params": [a[0]]}, {"params": [a[1]], "lr": 0.01}], **kwargs)
    for k in range(10):
        for p, g in zip(a, grads[k]):
            p.grad = cgrad.tensor(g)
        opt_a.step()
    sd = opt_a.state_dict()
    # PyTorch's layout: integer keys, index lists.
    assert sorted(sd["state"]) == [0, 1]
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert sd["param_groups"][1]["lr"] == 0.01
    b = [cgrad.tensor(p.detach().numpy().copy(), requires_grad=True) for p in a]
    opt_b = getattr(optim, name)([{"params": [b[0]]}, {"params": [b[1]]}], **kwargs)
    opt_b.load_state_dict(sd)
    assert opt_b.param_groups[1]["lr"] == 0.01
    for key, value in opt_a.state[a[0]].items():
        other = opt_b.state[b[0]][key]
        assert other is not value  # copied, not shared
        np.testing.assert_array_equal(other.numpy(), value.numpy())
    for k in range(10, 20):
        for p, q, g in zip(a, b, grads[k]):
            p.grad = cgrad.tensor(g)
            q.grad = cgrad.tensor(g)
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_state_dict_matches_torch_layout(torch, rng):
    arrays = _init_arrays(rng, "float32")
    tp = [torch.tensor(x, requires_grad=True) for x in arrays]
    cp = [cgrad.tensor(x, requires_grad=True) for x in arrays]
    topt = torch.optim.Adam(tp, lr=0.01)
    copt = optim.Adam(cp, lr=0.01)
    for t, c in zip(tp, cp):
        t.grad = torch.ones_like(t)
        c.grad = cgrad.ones_like(c)
    topt.step()
    copt.step()
    tsd, csd = topt.state_dict(), copt.state_dict()
    assert set(tsd["state"]) == set(csd["state"])
    assert set(tsd["state"][0]) == set(csd["state"][0])
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "params"):
        assert csd["param_groups"][0][key] == tsd["param_groups"][0][key]


def test_load_state_dict_errors(rng):
    p = cgrad.ones(3, requires_grad=True)
    q = cgrad.ones(2, requires_grad=True)
    sd = optim.SGD([p, q], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="size"):
        optim.SGD([p], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="number of parameter groups"):
        optim.SGD([{"params": [p]}, {"params": [q]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="state"):
        optim.SGD([p, q], lr=0.1).load_state_dict({"param_groups": []})


# ---------------------------------------------------------- precision switch
def test_state_follows_parameter_dtype(torch, rng):
    """p.data = p.data.double() mid-training: the state is cast at the next
    step, keeping its values; the trajectory continues like PyTorch's after
    its state_dict reload (which casts state to the parameter's dtype)."""
    arrays = _init_arrays(rng, "float32")
    grads = [[rng.standard_normal(a.shape) for a in arrays] for _ in range(10)]
    tp = [torch.tensor(x, requires_grad=True) for x in arrays]
    cp = [cgrad.tensor(x, requires_grad=True) for x in arrays]
    topt = torch.optim.Adam(tp, lr=0.05, amsgrad=True, foreach=False)
    copt = optim.Adam(cp, lr=0.05, amsgrad=True)
    for k in range(5):
        for t, c, g in zip(tp, cp, grads[k]):
            t.grad = torch.tensor(g, dtype=torch.float32)
            c.grad = cgrad.tensor(g, dtype=cgrad.float32)
        topt.step()
        copt.step()
    before = {k: v.numpy().astype(np.float64) for k, v in copt.state[cp[0]].items()}
    sd = topt.state_dict()
    for t in tp:
        t.data = t.data.double()
    topt = torch.optim.Adam(tp, lr=0.05, amsgrad=True, foreach=False)
    topt.load_state_dict(sd)
    for c in cp:
        c.data = c.data.double()
    assert cp[0].dtype == cgrad.float64
    for k in range(5, 10):
        for t, c, g in zip(tp, cp, grads[k]):
            t.grad = torch.tensor(g)
            c.grad = cgrad.tensor(g)
        if k == 5:
            copt.step()
            st = copt.state[cp[0]]
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                assert st[key].dtype == cgrad.float64
        else:
            copt.step()
        topt.step()
    assert set(before) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    for t, c in zip(tp, cp):
        np.testing.assert_allclose(c.detach().numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------ subclassing
class CosineSGD(optim.Optimizer):
    """Plain SGD whose learning rate follows a cosine from lr to 0 over
    total_steps, written the way a user would."""

    def __init__(self, params, lr=0.1, total_steps=10):
        super().__init__(params, dict(lr=lr, total_steps=total_steps))

    @cgrad.no_grad()
    def step(self, closure=None):
        loss = self._run_closure(closure)
        for group in self.param_groups:
            t = group.setdefault("t", 0)
            lr = group["lr"] * 0.5 * (1 + math.cos(math.pi * t / group["total_steps"]))
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
            group["t"] = t + 1
        return loss


def test_user_subclass_cosine_sgd_matches_torch_cosine_schedule(torch, rng):
    arrays = _init_arrays(rng, "float64")
    prob = _Problem(torch, "float64", rng)
    tp = [torch.tensor(a, requires_grad=True) for a in arrays]
    cp = [cgrad.tensor(a, requires_grad=True) for a in arrays]
    topt = torch.optim.SGD(tp, lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=10)
    copt = CosineSGD(cp, lr=0.3, total_steps=10)
    calls = []
    copt.register_step_post_hook(lambda o, a, k: calls.append(1))
    for _ in range(10):
        _feed(torch, tp, cp, prob.grads(*tp))
        topt.step()
        sched.step()
        copt.step()
    for t, c in zip(tp, cp):
        np.testing.assert_allclose(c.detach().numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert len(calls) == 10  # the subclass' step was wrapped with the hooks
    assert copt.last_report.step == 9 and copt.last_report.lr == [0.3]


def test_subclass_calling_super_step_runs_hooks_once():
    class Verbose(optim.SGD):
        def step(self, closure=None):
            return super().step(closure)

    p = cgrad.ones(2, requires_grad=True)
    opt = Verbose([p], lr=0.1)
    pre, reports = [], []
    opt.register_step_pre_hook(lambda o, a, k: pre.append(1))
    opt.register_report_hook(lambda o, r: reports.append(r))
    p.grad = cgrad.ones(2)
    opt.step()
    assert len(pre) == 1 and len(reports) == 1


def test_required_default_and_base_step():
    p = cgrad.ones(2, requires_grad=True)

    class NoLr(optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, dict(lr=optim.required))

    with pytest.raises(ValueError, match="lr"):
        NoLr([p])
    NoLr([{"params": [p], "lr": 0.1}])
    with pytest.raises(NotImplementedError):
        optim.Optimizer([p], {}).step()


# ------------------------------------------------------------------ hooks
def test_step_hooks_and_removal():
    p = cgrad.ones(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    seen = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", float(p[0].item()))))
    h2 = opt.register_step_post_hook(lambda o, a, k: seen.append(("post", float(p[0].item()))))
    p.grad = cgrad.ones(2)
    opt.step()
    assert seen == [("pre", 1.0), ("post", pytest.approx(0.9))]
    h1.remove()
    h2.remove()
    opt.step()
    assert len(seen) == 2


def test_pre_hook_can_replace_arguments_and_bad_return_raises():
    p = cgrad.ones(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = cgrad.ones(2)
    ran = []

    def closure():
        ran.append(1)
        return 42.0

    opt.register_step_pre_hook(lambda o, a, k: ((), {"closure": closure}))
    assert opt.step() == 42.0 and ran == [1]
    opt2 = optim.SGD([p], lr=0.1)
    opt2.register_step_pre_hook(lambda o, a, k: "nope")
    with pytest.raises(RuntimeError, match="pre-hook"):
        opt2.step()


def test_closure_runs_with_grad_enabled_and_loss_is_returned():
    p = cgrad.tensor([1.0, -2.0], requires_grad=True)
    opt = optim.Adam([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with cgrad.no_grad():
        loss = opt.step(closure)
    assert float(loss.item()) == 5.0
    assert p.grad is not None


def test_zero_grad():
    p = cgrad.ones(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = cgrad.ones(2)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), [0, 0])
    opt.zero_grad()
    assert p.grad is None


# ------------------------------------------------------------ step report
def test_report_picks_up_clipping_and_measures_when_asked():
    p = cgrad.tensor([3.0, 4.0], requires_grad=True)
    q = cgrad.tensor([1.0], requires_grad=True)
    opt = optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1)
    other = optim.SGD([q], lr=0.1)
    p.grad = cgrad.tensor([3.0, 4.0])
    total = clip_grad_norm_([p], max_norm=1.0)
    assert float(total.item()) == pytest.approx(5.0)
    other.step()  # does not own p: leaves the clip result alone
    assert other.last_report.clip is None
    opt.step()
    r = opt.last_report
    assert r.step == 0 and not r.skipped and r.clipped
    assert r.grad_norm_before_clip == pytest.approx(5.0)
    assert r.grad_norm_after_clip == pytest.approx(1.0, rel=1e-5)
    assert r.clip_coef == pytest.approx(1.0 / (5.0 + 1e-6))
    assert r.max_norm == 1.0 and r.lr == [0.1, 0.5]
    assert r.loss_scale is None and r.nonfinite is None  # nothing measured them
    opt.step()  # the clip result is used once
    assert opt.last_report.clip is None and opt.last_report.step == 1

    measured = optim.SGD([p, q], lr=0.1, report_grad_norm=True)
    p.grad = cgrad.tensor([3.0, 4.0])
    q.grad = cgrad.tensor([12.0])
    measured.step()
    r = measured.last_report
    assert r.grad_norm_before_clip == pytest.approx(13.0)
    assert r.grad_norm_after_clip == pytest.approx(13.0) and r.nonfinite == 0
    q.grad = cgrad.tensor([float("nan")])
    measured.step()
    assert measured.last_report.nonfinite == 1
    assert measured.last_report.grad_norm_after_clip == math.inf


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_negative_lr_names_value(name):
    p = cgrad.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"Invalid learning rate: -0\.5"):
        getattr(optim, name)([p], lr=-0.5)


@pytest.mark.parametrize("cls,kwargs,match", [
    (optim.Adam, dict(betas=(1.0, 0.999)), r"beta parameter at index 0: 1\.0"),
    (optim.Adam, dict(betas=(0.9, -0.1)), r"index 1: -0\.1"),
    (optim.Adam, dict(betas=0.9), "pair"),
    (optim.AdamW, dict(eps=-1e-8), "epsilon"),
    (optim.Adam, dict(weight_decay=-1.0), r"weight_decay value: -1\.0"),
    (optim.SGD, dict(lr=0.1, momentum=-0.5), r"momentum value: -0\.5"),
    (optim.SGD, dict(lr=0.1, nesterov=True), "Nesterov"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (optim.RMSprop, dict(alpha=-0.1), "alpha"),
    (optim.Adagrad, dict(lr_decay=-1.0), "lr_decay"),
    (optim.Adagrad, dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (optim.Adam, dict(lr=float("nan")), "lr"),
])
def test_bad_hyper_parameters(cls, kwargs, match):
    p = cgrad.ones(2, requires_grad=True)
    exc = TypeError if match == "pair" else ValueError
    with pytest.raises(exc, match=match):
        cls([p], **kwargs)


def test_bad_lr_type():
    p = cgrad.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="lr must be a number"):
        optim.SGD([p], lr="fast")


def test_bad_params():
    p = cgrad.ones(2, requires_grad=True)
    q = cgrad.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD({p}, lr=0.1)
    with pytest.raises(TypeError, match="only optimize Tensors.*ndarray"):
        optim.SGD([p, np.ones(2)], lr=0.1)
    nonleaf = p * 2
    with pytest.raises(ValueError, match="non-leaf.*mul"):
        optim.SGD([nonleaf], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p, q]}, {"params": [q]}], lr=0.1)
    with pytest.raises(ValueError, match="twice"):
        optim.SGD([p, q, p], lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": p})
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1"):
        opt.add_param_group({"params": [q], "lr": -1})
    with pytest.raises(TypeError, match="dict"):
        opt.add_param_group([q])
    opt.add_param_group({"params": q, "momentum": 0.5})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["momentum"] == 0.5


def test_kernel_errors_reach_python_as_exceptions():
    """The C update's own refusals reach Python as exceptions (the step's
    checks in cgrad/optim/_checks.py find these first; here the fused
    update is called directly)."""
    p = cgrad.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="'exp_avg' has shape \\(3,\\) but the parameter has shape"):
        cgrad._core._adam_update(p, cgrad.ones(2), cgrad.zeros(3), cgrad.zeros(2), None, 1, 0.1,
                                 0.9, 0.999, 1e-8, 0.0, False, False, False, None)
    t = cgrad.ones(3, 2).t()
    with pytest.raises(ValueError, match="'param' is not contiguous"):
        cgrad._core._sgd_update(t, cgrad.ones(2, 3), None, False, 0.1, 0.0, 0.0, 0.0, False,
                                False, None)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_a_step_checks_every_parameter_before_any_moves(name):
    """A corrupted state entry, a parameter whose data was replaced with a
    non-contiguous view or a float16 one on the cpu: the step raises before
    it updates anything, so the parameter listed first has not moved and
    has no new state and no step counted. A parameter without a gradient
    sits between them: the message names the bad one (its shape)."""
    kw = {"momentum": 0.9} if name == "SGD" else {}

    def fresh():
        a, b = cgrad.ones(3, requires_grad=True), cgrad.ones(2, 2, requires_grad=True)
        no_grad = cgrad.ones(5, requires_grad=True)
        return a, b, getattr(optim, name)([a, no_grad, b], lr=0.1, **kw)

    state_key = {"SGD": "momentum_buffer", "Adam": "exp_avg", "AdamW": "exp_avg_sq",
                 "RMSprop": "square_avg", "Adagrad": "sum"}[name]
    a, b, opt = fresh()
    a.grad, b.grad = cgrad.ones(3), cgrad.ones(2, 2)
    opt.step()
    opt.state[b][state_key] = cgrad.zeros(5)  # a corrupted state entry
    a.grad, b.grad = cgrad.ones(3), cgrad.ones(2, 2)
    before = a.detach().numpy().copy()
    with pytest.raises(RuntimeError, match=f"{name}: optimizer state '{state_key}' has shape "
                                           r"\(5,\) but its parameter has shape \(2, 2\)"):
        opt.step()
    np.testing.assert_array_equal(a.detach().numpy(), before)
    for replace, exc, msg in (
            (lambda: cgrad.ones(2, 2).t(), ValueError, r"a parameter of shape \(2, 2\) is not contiguous"),
            (lambda: cgrad.ones(2, 2, dtype=cgrad.float16), TypeError,
             "a float16 parameter is updated on a device only")):
        a, b, opt = fresh()
        b.data = replace()
        a.grad, b.grad = cgrad.ones(3), cgrad.ones(2, 2, dtype=b.dtype)
        with pytest.raises(exc, match=f"{name}: .*{msg}"):
            opt.step()
        np.testing.assert_array_equal(a.detach().numpy(), np.ones(3, np.float32))
        assert float(opt.state[a].get("step", 0)) == 0  # no step counted (Adagrad's state is made
        if name != "Adagrad":                          # with the optimizer, as PyTorch's)
            assert state_key not in opt.state[a]


# ------------------------------------------- order of operations, bit for bit
def _lerp32(s, e, w):
    w = np.float32(w)
    return s + w * (e - s) if w < 0.5 else e - (e - s) * (np.float32(1) - w)


@pytest.mark.parametrize("amsgrad,wd,decoupled,b1", [
    (False, 0.0, False, 0.9), (True, 0.1, False, 0.3), (False, 0.1, True, 0.9)])
def test_adam_float32_is_pytorchs_op_sequence_bit_for_bit(rng, amsgrad, wd, decoupled, b1):
    """NumPy float32, one rounding per PyTorch tensor op (torch/optim/adam.py,
    _single_tensor_adam): cgrad's fused loop gives the same bits."""
    f = np.float32
    lr, b2, eps = 0.01, 0.999, 1e-8
    p = rng.standard_normal(50).astype(f)
    c = cgrad.tensor(p, requires_grad=True)
    opt = optim.Adam([c], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=amsgrad,
                     decoupled_weight_decay=decoupled)
    m, v, vmax = (np.zeros(50, f) for _ in range(3))
    for step in range(1, 21):
        g = rng.standard_normal(50).astype(f)
        c.grad = cgrad.tensor(g)
        opt.step()
        if wd:
            if decoupled:
                p = p * f(1 - lr * wd)
            else:
                g = g + f(wd) * p
        m = _lerp32(m, g, 1 - b1)
        v = v * f(b2)
        v = v + (f(1 - b2) * g) * g
        step_size = lr / (1 - b1 ** step)
        bc2_sqrt = (1 - b2 ** step) ** 0.5
        if amsgrad:
            vmax = np.maximum(vmax, v)
        denom = np.sqrt(vmax if amsgrad else v) / f(bc2_sqrt) + f(eps)
        p = p + (f(-step_size) * m) / denom
        np.testing.assert_array_equal(c.detach().numpy(), p, err_msg=f"step {step}")


def test_centered_rmsprop_float32_bit_for_bit(rng):
    f = np.float32
    lr, alpha, eps, mom, wd = 0.01, 0.6, 1e-8, 0.5, 0.1
    p = rng.standard_normal(40).astype(f)
    c = cgrad.tensor(p, requires_grad=True)
    opt = optim.RMSprop([c], lr=lr, alpha=alpha, eps=eps, weight_decay=wd, momentum=mom,
                        centered=True)
    sq, ga, buf = (np.zeros(40, f) for _ in range(3))
    for step in range(20):
        g = rng.standard_normal(40).astype(f)
        c.grad = cgrad.tensor(g)
        opt.step()
        g = g + f(wd) * p
        sq = sq * f(alpha)
        sq = sq + (f(1 - alpha) * g) * g
        ga = _lerp32(ga, g, 1 - alpha)
        avg = np.sqrt(sq + (f(-1) * ga) * ga) + f(eps)
        buf = buf * f(mom) + (f(1) * g) / avg
        p = p + f(-lr) * buf
        np.testing.assert_array_equal(c.detach().numpy(), p, err_msg=f"step {step}")


def test_tensor_stats_one_pass(rng):
    a = rng.standard_normal((6, 5))
    a[1, 2], a[4, 0] = np.inf, np.nan
    finite = a[np.isfinite(a)]
    for dt in (cgrad.float32, cgrad.float64):
        t = cgrad.tensor(a, dtype=dt).t()  # non-contiguous view
        s = optim.tensor_stats(t)
        assert s.nonfinite == 2 and s.numel == 30
        assert s.sum_sq == pytest.approx(float((finite ** 2).sum()), rel=1e-6)
        assert s.max_abs == pytest.approx(float(np.abs(finite).max()), rel=1e-6)
        assert s.norm == pytest.approx(math.sqrt(s.sum_sq))
    with pytest.raises(TypeError, match="int64"):
        optim.tensor_stats(cgrad.tensor([1, 2]))


@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=0.05, amsgrad=True)),
                                         ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
                                         ("SGD", dict(lr=0.1, momentum=0.9))])
def test_torch_state_dict_loads_and_continues(torch, rng, name, kwargs):
    """A torch.optim state_dict (tensors converted through NumPy) loads into
    the cgrad optimizer, which then continues torch's trajectory."""
    arrays = _init_arrays(rng, "float64")
    grads = [[rng.standard_normal(a.shape) for a in arrays] for _ in range(15)]
    tp = [torch.tensor(a, requires_grad=True) for a in arrays]
    topt = getattr(torch.optim, name)(tp, foreach=False, **kwargs)
    for k in range(5):
        for t, g in zip(tp, grads[k]):
            t.grad = torch.tensor(g)
        topt.step()
    sd = topt.state_dict()
    conv = {"param_groups": sd["param_groups"],
            "state": {i: {k: cgrad.tensor(v.numpy()) if isinstance(v, torch.Tensor) else v
                          for k, v in s.items()} for i, s in sd["state"].items()}}
    cp = [cgrad.tensor(t.detach().numpy(), requires_grad=True) for t in tp]
    copt = getattr(optim, name)(cp, **kwargs)
    copt.load_state_dict(conv)
    for k in range(5, 15):
        for t, c, g in zip(tp, cp, grads[k]):
            t.grad = torch.tensor(g)
            c.grad = cgrad.tensor(g)
        topt.step()
        copt.step()
    for t, c in zip(tp, cp):
        np.testing.assert_allclose(c.detach().numpy(), t.detach().numpy(), rtol=1e-11, atol=1e-13)


def test_group_added_later_and_empty_parameters(torch):
    p = cgrad.ones(2, requires_grad=True)
    e = cgrad.zeros(0, 3, requires_grad=True)
    opt = optim.Adagrad([p], lr=0.1, initial_accumulator_value=0.5)
    q = cgrad.ones(3, requires_grad=True)
    opt.add_param_group({"params": [q, e], "lr": 0.2})
    for t in (p, q):
        t.grad = cgrad.ones_like(t)
    e.grad = cgrad.zeros(0, 3)
    opt.step()
    assert float(opt.state[q]["sum"][0].item()) == 1.5
    tq = torch.ones(3, requires_grad=True)
    topt = torch.optim.Adagrad([tq], lr=0.2, initial_accumulator_value=0.5)
    tq.grad = torch.ones(3)
    topt.step()
    np.testing.assert_allclose(q.detach().numpy(), tq.detach().numpy(), rtol=1e-6)
    assert tuple(opt.state[e]["sum"].shape) == (0, 3)
    for cls in (optim.SGD, optim.Adam, optim.RMSprop):
        o = cls([e], lr=0.1)
        o.step()  # nothing to update, nothing to crash
