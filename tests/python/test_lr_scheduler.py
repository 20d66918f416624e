"""cgrad.optim.lr_scheduler against torch.optim.lr_scheduler, the C closed
forms, state_dict resume and bad input."""
import copy
import math
import pickle
import warnings

import pytest

from cgrad import _core
from cgrad.optim import lr_scheduler as L

LRS = [0.1, 0.03]  # two param groups with different lrs
STEPS = 300


class FakeOptimizer:
    """The least an optimizer needs to be scheduled: param_groups."""

    def __init__(self, lrs=LRS, momentum=None, betas=None):
        self.param_groups = []
        for lr in lrs:
            group = {"lr": lr}
            if momentum is not None:
                group["momentum"] = momentum
            if betas is not None:
                group["betas"] = betas
            self.param_groups.append(group)


def _torch_optimizer(torch, kind="sgd", lrs=LRS):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    if kind == "adam":
        return torch.optim.Adam(groups)
    return torch.optim.SGD(groups, momentum=0.9)


def _close(a, b, rel=1e-9, abs_=1e-13):
    return all(math.isclose(x, y, rel_tol=rel, abs_tol=abs_) for x, y in zip(a, b)) and len(a) == len(b)


def _momenta(opt):
    out = []
    for g in opt.param_groups:
        out.append(g["betas"][0] if "betas" in g else g.get("momentum"))
    return out


def compare_with_torch(make, steps=STEPS, kind="sgd", metrics=None, edit=None):
    """Build the same schedule on both sides and compare lr (and momentum)
    after construction and after every step. make(module, optimizer)."""
    torch = pytest.importorskip("torch")
    tlr = torch.optim.lr_scheduler
    topt = _torch_optimizer(torch, kind)
    copt = FakeOptimizer(momentum=0.9) if kind == "sgd" else FakeOptimizer(betas=(0.9, 0.999))
    tsched, csched = make(tlr, topt), make(L, copt)
    trace = []
    for i in range(steps + 1):
        t_lr = [float(x) for x in tsched.get_last_lr()]
        c_lr = csched.get_last_lr()
        assert _close(c_lr, t_lr), (i, c_lr, t_lr)
        assert _close(_momenta(copt), _momenta(topt)), (i, _momenta(copt), _momenta(topt))
        assert _close([g["lr"] for g in copt.param_groups], [g["lr"] for g in topt.param_groups])
        trace.append(c_lr)
        if i == steps:
            break
        if edit is not None and i == edit:  # a hand edit of the lr mid-run
            for opt in (topt, copt):
                opt.param_groups[0]["lr"] *= 0.5
        topt.step()
        if metrics is not None:
            tsched.step(metrics[i])
            csched.step(metrics[i])
        else:
            tsched.step()
            csched.step()
    return trace


def _varies(trace):
    return len({lr[0] for lr in trace}) > 1


SCHEDULES = {
    "lambda": lambda M, o: M.LambdaLR(o, [lambda e: 0.97 ** e, lambda e: 1.0 / (1 + e)]),
    "multiplicative": lambda M, o: M.MultiplicativeLR(o, lambda e: 0.99 if e % 3 else 1.01),
    "step": lambda M, o: M.StepLR(o, step_size=17, gamma=0.7),
    "multistep": lambda M, o: M.MultiStepLR(o, milestones=[30, 80, 80, 200], gamma=0.5),
    "constant": lambda M, o: M.ConstantLR(o, factor=0.25, total_iters=40),
    "linear_up": lambda M, o: M.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=120),
    "linear_down": lambda M, o: M.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=250),
    "exponential": lambda M, o: M.ExponentialLR(o, gamma=0.985),
    "cosine": lambda M, o: M.CosineAnnealingLR(o, T_max=70, eta_min=1e-3),
    "cosine_zero_min": lambda M, o: M.CosineAnnealingLR(o, T_max=100),
    "warm_restarts": lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=25, eta_min=1e-4),
    "warm_restarts_mult": lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-4),
    "one_cycle": lambda M, o: M.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=STEPS),
    "one_cycle_linear": lambda M, o: M.OneCycleLR(o, max_lr=0.8, epochs=10, steps_per_epoch=30,
                                                   anneal_strategy="linear", pct_start=0.25),
    "one_cycle_three_phase": lambda M, o: M.OneCycleLR(o, max_lr=1.0, total_steps=STEPS,
                                                        three_phase=True, base_momentum=[0.8, 0.7],
                                                        max_momentum=0.95, div_factor=10.0,
                                                        final_div_factor=100.0),
    "one_cycle_no_momentum": lambda M, o: M.OneCycleLR(o, max_lr=1.0, total_steps=STEPS,
                                                        cycle_momentum=False),
    "polynomial": lambda M, o: M.PolynomialLR(o, total_iters=200, power=2.0),
    "polynomial_sqrt": lambda M, o: M.PolynomialLR(o, total_iters=150, power=0.5),
    "sequential": lambda M, o: M.SequentialLR(
        o, [M.LinearLR(o, start_factor=0.01, total_iters=20), M.CosineAnnealingLR(o, T_max=280)],
        milestones=[20]),
    "sequential3": lambda M, o: M.SequentialLR(
        o, [M.ConstantLR(o, factor=0.5, total_iters=10), M.ExponentialLR(o, gamma=0.99),
            M.StepLR(o, step_size=30, gamma=0.3)], milestones=[50, 120]),
    "sequential_restarts": lambda M, o: M.SequentialLR(
        o, [M.LinearLR(o, start_factor=0.2, total_iters=15),
            M.CosineAnnealingWarmRestarts(o, T_0=40, T_mult=2)], milestones=[15]),
    "chained": lambda M, o: M.ChainedScheduler(
        [M.ConstantLR(o, factor=0.1, total_iters=30), M.ExponentialLR(o, gamma=0.99)]),
    "chained_cosine": lambda M, o: M.ChainedScheduler(
        [M.LinearLR(o, start_factor=0.3, total_iters=25), M.CosineAnnealingLR(o, T_max=60, eta_min=1e-3),
         M.MultiStepLR(o, milestones=[100, 150], gamma=0.5)]),
    "chained_poly_step": lambda M, o: M.ChainedScheduler(
        [M.StepLR(o, step_size=20, gamma=0.8), M.PolynomialLR(o, total_iters=250, power=1.5)]),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_matches_torch(name):
    trace = compare_with_torch(SCHEDULES[name])
    assert _varies(trace)


def test_one_cycle_cycles_adam_betas_like_torch():
    trace = compare_with_torch(SCHEDULES["one_cycle_three_phase"], kind="adam")
    assert _varies(trace)


@pytest.mark.parametrize("name", ["step", "cosine", "linear_up", "polynomial", "exponential"])
def test_hand_edit_mid_run_is_respected_like_torch(name):
    compare_with_torch(SCHEDULES[name], edit=60)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(mode="max", factor=0.5, patience=3, threshold=0.01, threshold_mode="abs"),
    dict(mode="min", factor=0.3, patience=2, cooldown=4, min_lr=[1e-3, 5e-4], threshold=1e-3),
    dict(mode="max", factor=0.2, patience=0, threshold_mode="rel", eps=1e-3, min_lr=1e-4),
])
def test_plateau_matches_torch(kwargs):
    # A scripted metric: improves, stalls, improves a little, oscillates.
    metrics = []
    for i in range(STEPS):
        if i < 40:
            m = 1.0 / (1 + i)
        elif i < 120:
            m = 0.03 + 0.001 * math.sin(i)
        elif i < 160:
            m = 0.03 - 0.0002 * (i - 120)
        else:
            m = 0.02 + 0.01 * ((i // 7) % 2)
        metrics.append(m if kwargs.get("mode", "min") == "min" else -m)
    trace = compare_with_torch(lambda M, o: M.ReduceLROnPlateau(o, **kwargs), metrics=metrics)
    assert len({lr[0] for lr in trace}) > 2  # it did reduce


def test_warm_restarts_fractional_epochs_match_torch():
    torch = pytest.importorskip("torch")
    for T_mult in (1, 2, 3):
        topt = _torch_optimizer(torch)
        copt = FakeOptimizer()
        ts = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(topt, T_0=7, T_mult=T_mult, eta_min=1e-3)
        cs = L.CosineAnnealingWarmRestarts(copt, T_0=7, T_mult=T_mult, eta_min=1e-3)
        iters = 9
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for epoch in range(40):
                for i in range(iters):
                    topt.step()
                    ts.step(epoch + i / iters)
                    cs.step(epoch + i / iters)
                    assert _close(cs.get_last_lr(), ts.get_last_lr(), rel=1e-9), (T_mult, epoch, i)
                    assert math.isclose(cs.T_cur, ts.T_cur, rel_tol=1e-12, abs_tol=1e-12)
                    assert cs.T_i == ts.T_i and cs.last_epoch == ts.last_epoch
            # Mixing: plain steps after a fractional one keep the offset, as in torch.
            for _ in range(30):
                topt.step()
                ts.step()
                cs.step()
                assert _close(cs.get_last_lr(), ts.get_last_lr(), rel=1e-9)
                assert math.isclose(cs.T_cur, ts.T_cur, rel_tol=1e-12, abs_tol=1e-12)


def test_warm_restarts_exact_cycle_boundary():
    # epoch 242 starts cycle 5 of T_0=2, T_mult=3 (2 * (3^5 - 1) / 2): lr is the
    # restart value. torch's log()-based search lands one cycle early here.
    cs = L.CosineAnnealingWarmRestarts(FakeOptimizer(), T_0=2, T_mult=3)
    cs.step(242)
    assert cs.T_cur == 0 and cs.T_i == 486
    assert cs.get_last_lr() == LRS
    cs.step(241.5)
    assert cs.T_i == 162 and cs.T_cur == 161.5


def test_warmup_cosine_matches_torch_composition():
    torch = pytest.importorskip("torch")
    warmup, total, f0, eta_min = 30, 250, 0.1, 1e-4
    topt = _torch_optimizer(torch)
    tlr = torch.optim.lr_scheduler
    ts = tlr.SequentialLR(topt, [tlr.LinearLR(topt, start_factor=f0, total_iters=warmup),
                                 tlr.CosineAnnealingLR(topt, T_max=total - warmup, eta_min=eta_min)],
                          milestones=[warmup])
    copt = FakeOptimizer()
    cs = L.WarmupCosineLR(copt, warmup_steps=warmup, total_steps=total, warmup_start_factor=f0,
                          eta_min=eta_min)
    for step in range(total + 1):
        assert _close(cs.get_last_lr(), ts.get_last_lr(), rel=1e-9), step
        topt.step()
        ts.step()
        cs.step()
    for _ in range(50):  # constant after total_steps (torch's cosine would turn back up)
        assert cs.get_last_lr() == [eta_min, eta_min]
        cs.step()


def test_warmup_cosine_values():
    cs = L.WarmupCosineLR(FakeOptimizer([1.0]), warmup_steps=10, total_steps=110, eta_min=0.01)
    assert cs.get_last_lr() == [0.0]
    assert cs.lr_at(5) == [0.5]
    assert cs.lr_at(10) == [1.0]
    assert math.isclose(cs.lr_at(60)[0], 0.505, rel_tol=1e-14)
    assert cs.lr_at(110) == [0.01] and cs.lr_at(10**9) == [0.01]


# ------------------------------------------------------------------ C closed forms
def _c_value(kind, base_lr, step, s):
    if kind == "step":
        return _core._lr_step(base_lr, step, s.step_size, s.gamma)
    if kind == "multistep":
        return _core._lr_multistep(base_lr, step, sorted(s.milestones.elements()), s.gamma)
    if kind == "constant":
        return _core._lr_constant(base_lr, step, s.factor, s.total_iters)
    if kind == "linear_up":
        return _core._lr_linear(base_lr, step, s.start_factor, s.end_factor, s.total_iters)
    if kind == "exponential":
        return _core._lr_exponential(base_lr, step, s.gamma)
    if kind == "cosine":
        return _core._lr_cosine(base_lr, step, s.T_max, s.eta_min)
    if kind == "polynomial":
        return _core._lr_polynomial(base_lr, step, s.total_iters, s.power)
    if kind in ("warm_restarts", "warm_restarts_mult"):
        return _core._lr_cosine_warm_restarts(base_lr, step, s.T_0, s.T_mult, s.eta_min)[0]
    if kind == "warmup_cosine":
        return _core._lr_warmup_cosine(base_lr, step, s.warmup_steps, s.total_steps,
                                       s.warmup_start_factor, s.eta_min)
    raise AssertionError(kind)


C_ONLY = {"warmup_cosine": lambda M, o: M.WarmupCosineLR(o, 25, 240, warmup_start_factor=0.05,
                                                          eta_min=2e-4)}


@pytest.mark.parametrize("kind", ["step", "multistep", "constant", "linear_up", "exponential",
                                  "cosine", "polynomial", "warm_restarts", "warm_restarts_mult",
                                  "warmup_cosine"])
def test_python_values_are_the_c_closed_forms(kind):
    opt = FakeOptimizer()
    s = {**SCHEDULES, **C_ONLY}[kind](L, opt)
    for step in range(STEPS):
        want = [_c_value(kind, b, step, s) for b in s.base_lrs]
        assert s.get_last_lr() == want, step  # exact: the same C call
        assert s.lr_at(step) == want
        s.step()


def test_one_cycle_values_are_the_c_closed_forms():
    opt = FakeOptimizer(momentum=0.9)
    s = SCHEDULES["one_cycle_three_phase"](L, opt)
    for step in range(STEPS + 1):
        for group, lr in zip(opt.param_groups, s.get_last_lr()):
            want = _core._lr_one_cycle(group["max_lr"], step, STEPS, 0.3, "cos", 10.0, 100.0, True,
                                       group["base_momentum"], group["max_momentum"])
            assert (lr, group["momentum"]) == want
        if step < STEPS:
            s.step()
    with pytest.raises(ValueError, match="tried to step 301 times"):
        s.step()


def test_closed_form_has_no_drift_where_torch_recursion_does():
    # 20000 steps of ExponentialLR: the closed form is base * gamma^t exactly.
    s = L.ExponentialLR(FakeOptimizer([1.0]), gamma=0.9995)
    for _ in range(20000):
        s.step()
    assert s.get_last_lr() == [0.9995 ** 20000]


def test_step_with_epoch_jumps_in_closed_form():
    s = L.CosineAnnealingLR(FakeOptimizer(), T_max=50, eta_min=1e-3)
    s.step(37)
    assert s.last_epoch == 37
    assert s.get_last_lr() == s.lr_at(37)
    s.step()
    assert s.get_last_lr() == s.lr_at(38)


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("name", sorted(set(SCHEDULES) | set(C_ONLY)))
def test_state_dict_resume_equals_uninterrupted_run(name):
    make = {**SCHEDULES, **C_ONLY}[name]
    opt = FakeOptimizer(momentum=0.9)
    sched = make(L, opt)
    full = []
    for _ in range(STEPS):
        full.append(list(sched.get_last_lr()))
        sched.step()
    full.append(list(sched.get_last_lr()))

    for cut in (1, 57, 211):
        opt = FakeOptimizer(momentum=0.9)
        sched = make(L, opt)
        for _ in range(cut):
            sched.step()
        saved = pickle.dumps((sched.state_dict(), copy.deepcopy(opt.param_groups)))
        # A fresh process: new optimizer and scheduler, then load both states.
        state, groups = pickle.loads(saved)
        opt2 = FakeOptimizer(momentum=0.9)
        sched2 = make(L, opt2)
        opt2.param_groups = groups
        sched2.load_state_dict(state)
        resumed = [list(sched2.get_last_lr())]
        for _ in range(STEPS - cut):
            sched2.step()
            resumed.append(list(sched2.get_last_lr()))
        assert resumed == full[cut:], (name, cut)


def test_lambda_state_dict_keeps_callable_objects():
    class Decay:
        def __init__(self):
            self.rate = 0.9

        def __call__(self, epoch):
            return self.rate ** epoch

    s = L.LambdaLR(FakeOptimizer(), [Decay(), lambda e: 1.0])
    for _ in range(5):
        s.step()
    state = s.state_dict()
    assert state["lr_lambdas"][0] == {"rate": 0.9} and state["lr_lambdas"][1] is None
    state["lr_lambdas"][0]["rate"] = 0.5
    s2 = L.LambdaLR(FakeOptimizer(), [Decay(), lambda e: 1.0])
    s2.load_state_dict(state)
    assert s2.lr_lambdas[0].rate == 0.5 and s2.last_epoch == 5
    s2.step()
    assert s2.get_last_lr()[0] == pytest.approx(LRS[0] * 0.5 ** 6, rel=1e-15)


def test_plateau_state_dict_resume():
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.5, 0.6, 0.7, 0.8, 0.9] * 5
    opt = FakeOptimizer()
    s = L.ReduceLROnPlateau(opt, patience=2, cooldown=1)
    full = []
    for m in metrics:
        s.step(m)
        full.append(list(s.get_last_lr()))
    opt = FakeOptimizer()
    s = L.ReduceLROnPlateau(opt, patience=2, cooldown=1)
    for m in metrics[:20]:
        s.step(m)
    state, groups = copy.deepcopy((s.state_dict(), opt.param_groups))
    opt2 = FakeOptimizer()
    s2 = L.ReduceLROnPlateau(opt2, patience=2, cooldown=1)
    opt2.param_groups = groups
    s2.load_state_dict(state)
    rest = []
    for m in metrics[20:]:
        s2.step(m)
        rest.append(list(s2.get_last_lr()))
    assert rest == full[20:]
    assert len({lr[0] for lr in full}) > 2


def test_base_class_bookkeeping():
    opt = FakeOptimizer()
    s = L.StepLR(opt, step_size=2)
    assert s.last_epoch == 0 and s.base_lrs == LRS
    assert [g["initial_lr"] for g in opt.param_groups] == LRS
    s.step()
    s.step()
    assert s.last_epoch == 2 and s.get_last_lr() == pytest.approx([0.01, 0.003], rel=1e-15)
    assert "optimizer" not in s.state_dict()
    with pytest.warns(UserWarning, match="get_last_lr"):
        s.get_lr()
    # Resuming through the constructor needs initial_lr in the groups.
    with pytest.raises(ValueError, match="initial_lr"):
        L.StepLR(FakeOptimizer(), step_size=2, last_epoch=3)
    s3 = L.StepLR(opt, step_size=2, last_epoch=3)
    assert s3.last_epoch == 4


def test_order_warning_when_scheduler_steps_before_optimizer():
    class WithStep(FakeOptimizer):
        def step(self):
            return "stepped"

    opt = WithStep()
    s = L.ExponentialLR(opt, gamma=0.9)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        s.step()
    opt = WithStep()
    s = L.ExponentialLR(opt, gamma=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert opt.step() == "stepped"
        s.step()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("make, exc, match", [
    (lambda o: L.StepLR(o, step_size=0), ValueError, "step_size must be >= 1, got 0"),
    (lambda o: L.StepLR(o, step_size=2.5), TypeError, "step_size must be an integer, got 2.5"),
    (lambda o: L.StepLR(o, step_size=3, gamma=float("nan")), ValueError, "gamma"),
    (lambda o: L.StepLR(o, step_size=3, gamma="0.1"), TypeError, "gamma must be a real number"),
    (lambda o: L.MultiStepLR(o, milestones=[3, -1]), ValueError, r"milestones\[1\] must be >= 0, got -1"),
    (lambda o: L.MultiStepLR(o, milestones=5), TypeError, "milestones must be an iterable"),
    (lambda o: L.ConstantLR(o, factor=1.5), ValueError, "factor must be in \\[0, 1\\], got 1.5"),
    (lambda o: L.ConstantLR(o, total_iters=0), ValueError, "total_iters must be >= 1, got 0"),
    (lambda o: L.LinearLR(o, start_factor=0.0), ValueError, "start_factor must be in \\(0, 1\\], got 0"),
    (lambda o: L.LinearLR(o, end_factor=2.0), ValueError, "end_factor must be in \\[0, 1\\], got 2"),
    (lambda o: L.ExponentialLR(o, gamma=-0.5), ValueError, "gamma must be finite and >= 0, got -0.5"),
    (lambda o: L.CosineAnnealingLR(o, T_max=0), ValueError, "T_max must be >= 1, got 0"),
    (lambda o: L.CosineAnnealingLR(o, T_max=10, eta_min=-1.0), ValueError, "eta_min must be finite and >= 0, got -1"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "Expected positive integer T_0, but got 0"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=5.0), ValueError, "T_0, but got 5.0"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0), ValueError, "T_mult >= 1, but got 0"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=5, eta_min="x"), ValueError, "eta_min"),
    (lambda o: L.PolynomialLR(o, total_iters=10, power=-1.0), ValueError, "power must be finite and >= 0, got -1"),
    (lambda o: L.OneCycleLR(o, max_lr=1.0), ValueError, "total_steps OR"),
    (lambda o: L.OneCycleLR(o, max_lr=1.0, total_steps=0), ValueError, "total_steps, but got 0"),
    (lambda o: L.OneCycleLR(o, max_lr=1.0, epochs=2, steps_per_epoch=-3), ValueError, "steps_per_epoch, but got -3"),
    (lambda o: L.OneCycleLR(o, max_lr=1.0, total_steps=10, pct_start=1.5), ValueError, "pct_start, but got 1.5"),
    (lambda o: L.OneCycleLR(o, max_lr=1.0, total_steps=10, anneal_strategy="exp"), ValueError, "'exp'"),
    (lambda o: L.OneCycleLR(o, max_lr=[1.0], total_steps=10), ValueError, "max_lr must have the same length"),
    (lambda o: L.OneCycleLR(o, max_lr=1.0, total_steps=10, div_factor=0.0, cycle_momentum=False), ValueError, "div_factor must be finite and > 0"),
    (lambda o: L.OneCycleLR(o, max_lr=1.0, total_steps=10, pct_start=0.1, cycle_momentum=False), ValueError, "zero length"),
    (lambda o: L.WarmupCosineLR(o, warmup_steps=10, total_steps=5), ValueError, "total_steps must be >= max"),
    (lambda o: L.WarmupCosineLR(o, warmup_steps=-1, total_steps=5), ValueError, "warmup_steps must be >= 0, got -1"),
    (lambda o: L.WarmupCosineLR(o, 2, 10, warmup_start_factor=1.5), ValueError, "warmup_start_factor must be in"),
    (lambda o: L.LambdaLR(o, [lambda e: 1.0]), ValueError, "Expected 2 lr_lambdas, but got 1"),
    (lambda o: L.MultiplicativeLR(o, 0.5), TypeError, "lr_lambda should be a function, but got float"),
    (lambda o: L.ReduceLROnPlateau(o, factor=1.0), ValueError, "Factor should be in \\[0, 1\\), got 1.0"),
    (lambda o: L.ReduceLROnPlateau(o, mode="up"), ValueError, "mode 'up' is unknown"),
    (lambda o: L.ReduceLROnPlateau(o, threshold_mode="x"), ValueError, "threshold mode 'x' is unknown"),
    (lambda o: L.ReduceLROnPlateau(o, patience=-1), ValueError, "patience must be >= 0, got -1"),
    (lambda o: L.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "expected 2 min_lrs, got 1"),
    (lambda o: L.SequentialLR(o, [], milestones=[]), ValueError, "at least one scheduler"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(o, 3)], milestones=[]), ValueError, "one more"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 2), L.ReduceLROnPlateau(o)], milestones=[3]), ValueError, "ReduceLROnPlateau"),
    (lambda o: L.SequentialLR(o, [L.StepLR(FakeOptimizer(), 2)], milestones=[]), ValueError, "same optimizer"),
    (lambda o: L.ChainedScheduler([]), ValueError, "at least one scheduler"),
    (lambda o: L.ChainedScheduler([L.StepLR(o, 2), "x"]), TypeError, "index 1 should have `optimizer`"),
    (lambda o: L.StepLR(object(), 2), TypeError, "needs param_groups"),
    (lambda o: L.StepLR(o, 2, last_epoch=-2), ValueError, "last_epoch must be >= -1, got -2"),
])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make(FakeOptimizer())


def test_bad_optimizer_groups_and_steps():
    with pytest.raises(ValueError, match="must be a dict with an 'lr'"):
        L.StepLR(type("O", (), {"param_groups": [{"momentum": 0.9}]})(), 2)
    with pytest.raises(TypeError, match="lr'\\] must be a real number"):
        L.StepLR(FakeOptimizer(["fast", 0.1]), 2)
    with pytest.raises(ValueError, match="base_lr must be finite and >= 0, got -0.1"):
        L.CosineAnnealingLR(FakeOptimizer([-0.1]), T_max=5)
    with pytest.raises(ValueError, match="momentum or beta1"):
        L.OneCycleLR(FakeOptimizer(), max_lr=1.0, total_steps=10)
    s = L.CosineAnnealingLR(FakeOptimizer(), T_max=5)
    with pytest.raises(ValueError, match="epoch must be >= 0, got -3"):
        s.step(-3)
    with pytest.raises(TypeError, match="epoch must be an integer"):
        s.step(1.5)
    with pytest.raises(ValueError, match="step must be >= 0"):
        s.lr_at(-1)
    w = L.CosineAnnealingWarmRestarts(FakeOptimizer(), T_0=5)
    with pytest.raises(ValueError, match="non-negative epoch, but got -1"):
        w.step(-1)
    with pytest.raises(ValueError, match="non-negative epoch, but got inf"):
        w.step(float("inf"))
    p = L.ReduceLROnPlateau(FakeOptimizer())
    with pytest.raises(TypeError, match="metrics must be convertible to float"):
        p.step("low")
    with pytest.raises(ValueError, match="step_size"):
        _core._lr_step(0.1, 0, 0, 0.5)  # the C check reaches Python as ValueError
