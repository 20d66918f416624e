"""PrecisionSchedule: float64 first, float32 later, parameters, gradients and
optimizer state converted together, the switch recorded as an event."""
import numpy as np
import pytest

import cgrad
from cgrad import nn
from cgrad.nn import functional as F
from cgrad.optim import PrecisionSchedule, UpdateGuard

F32, F64 = cgrad.float32, cgrad.float64


def make_model(seed=0):
    cgrad.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def data(rng, n=16):
    return rng.standard_normal((n, 4)), rng.standard_normal((n, 3))


def train_step(model, opt, x, y, cast):
    opt.zero_grad()
    loss = F.mse_loss(model(cast(x)), cast(y))
    loss.backward()
    opt.step()
    return loss


def params_np(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def state_np(opt):
    return {(i, k): v.numpy().copy() for i, p in enumerate(opt._params())
            for k, v in opt.state[p].items() if isinstance(v, cgrad.Tensor)}


@pytest.mark.parametrize("make_opt", [
    lambda ps: cgrad.optim.Adam(ps, lr=0.01),
    lambda ps: cgrad.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    lambda ps: cgrad.optim.RMSprop(ps, lr=0.01, centered=True, momentum=0.5),
])
def test_switch_equals_converting_by_hand(rng, make_opt):
    xs = [data(rng) for _ in range(12)]
    a = make_model()
    opt_a = make_opt(a.parameters())
    sched = PrecisionSchedule(a, opt_a, PrecisionSchedule.steps({0: F64, 5: F32}))
    assert a[0].weight.dtype == F64 and sched.dtype == F64
    dtypes = []
    for x, y in xs:
        dtypes.append(sched.dtype)
        train_step(a, opt_a, x, y, sched.cast)

    b = make_model()
    b.double()
    opt_b = make_opt(b.parameters())
    for k, (x, y) in enumerate(xs):
        if k == 5:
            b.float()  # the optimizers cast their state lazily at the next step
        dt = F64 if k < 5 else F32
        train_step(b, opt_b, x, y, lambda t: cgrad.from_numpy(t).to(dt))

    assert dtypes == [F64] * 5 + [F32] * 7
    for pa, pb in zip(params_np(a), params_np(b)):
        assert pa.dtype == np.float32
        np.testing.assert_array_equal(pa, pb)
    sa, sb = state_np(opt_a), state_np(opt_b)
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key])
    (ev,) = sched.events
    assert (ev.step, ev.old_dtype, ev.new_dtype) == (5, F64, F32)
    assert ev.report_step == 4 and ev.n_params == 4 and "milestone" in ev.reason


def test_state_values_kept_and_next_step_is_a_float32_step(rng):
    model = make_model()
    opt = cgrad.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    before = {}
    # registered before the schedule's hook, so it sees the float64 state
    opt.register_step_post_hook(lambda o, a, k: before.update(state_np(o)))
    seen = []
    sched = PrecisionSchedule(model, opt, {0: F64, 3: F32}, on_switch=seen.append)
    for _ in range(3):
        train_step(model, opt, *data(rng), sched.cast)
    assert len(seen) == 1 and seen[0] is sched.events[0]
    after = state_np(opt)
    for key, v in before.items():
        if key[1] == "step":
            assert after[key].dtype == np.float32
            np.testing.assert_array_equal(after[key], v)
        else:
            assert v.dtype == np.float64 and after[key].dtype == np.float32
            np.testing.assert_array_equal(after[key], v.astype(np.float32))
    for p in model.parameters():
        assert p.dtype == F32 and p.grad.dtype == F32

    # a fresh float32 model + optimizer holding the converted values steps identically
    twin = make_model(seed=1)
    twin.float()
    twin.load_state_dict(model.state_dict())
    opt2 = cgrad.optim.Adam(twin.parameters(), lr=0.01, amsgrad=True)
    opt2.load_state_dict(opt.state_dict())
    x, y = data(rng)
    train_step(model, opt, x, y, sched.cast)
    train_step(twin, opt2, x, y, lambda t: cgrad.from_numpy(t.astype(np.float32)))
    for pa, pb in zip(params_np(model), params_np(twin)):
        np.testing.assert_array_equal(pa, pb)


def test_matches_torch_doing_the_same_conversion(torch, rng):
    model = make_model()
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    tmodel.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
    tmodel.double()
    opt = cgrad.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.1)
    topt = torch.optim.AdamW(tmodel.parameters(), lr=0.02, weight_decay=0.1, foreach=False)
    sched = PrecisionSchedule(model, opt, PrecisionSchedule.steps({0: F64, 6: F32}))
    for k in range(12):
        x, y = data(rng)
        if k == 6:  # torch's way: convert the module, reload the state (casts it)
            tmodel.float()
            topt.load_state_dict(topt.state_dict())
            for p, tp in zip(opt._params(), tmodel.parameters()):
                for key in ("exp_avg", "exp_avg_sq"):
                    ts = topt.state[tp][key]
                    assert ts.dtype == torch.float32 and opt.state[p][key].dtype == F32
                    np.testing.assert_allclose(opt.state[p][key].numpy(), ts.numpy(), rtol=1e-6, atol=1e-9)
        train_step(model, opt, x, y, sched.cast)
        tdt = torch.float64 if k < 6 else torch.float32
        topt.zero_grad()
        tloss = torch.nn.functional.mse_loss(tmodel(torch.tensor(x, dtype=tdt)), torch.tensor(y, dtype=tdt))
        tloss.backward()
        topt.step()
    for p, tp in zip(params_np(model), tmodel.parameters()):
        assert tp.dtype == torch.float32
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_until_a_condition_on_the_loss(rng):
    model = make_model()
    opt = cgrad.optim.Adam(model.parameters(), lr=0.05)
    x, y = data(rng)

    def converged(step, report, loss):
        return loss is not None and loss < 0.5

    sched = PrecisionSchedule(model, opt, PrecisionSchedule.until(converged))
    losses, dtypes = [], []
    for _ in range(60):
        def closure():
            opt.zero_grad()
            loss = F.mse_loss(model(sched.cast(x)), sched.cast(y))
            loss.backward()
            return loss
        dtypes.append(sched.dtype)
        losses.append(opt.step(closure).item())
    (ev,) = sched.events
    k = ev.step
    assert losses[k - 1] < 0.5 and all(v >= 0.5 for v in losses[:k - 1])
    assert dtypes[:k] == [F64] * k and set(dtypes[k:]) == {F32}
    assert "converged" in ev.reason
    assert sched.schedule.met_at == k


def test_callable_schedule_sees_the_report_and_observed_loss(rng):
    model = make_model()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def fn(step, report, loss):
        calls.append((step, None if report is None else report.step, loss))
        return F32 if step >= 2 else F64
    sched = PrecisionSchedule(model, opt, fn)
    for _ in range(3):
        loss = train_step(model, opt, *data(rng), sched.cast)
        sched.observe_loss(loss)
    assert calls[0] == (0, None, None)
    assert [c[:2] for c in calls[1:]] == [(1, 0), (2, 1), (3, 2)]
    assert calls[2][2] is not None and sched.events[0].step == 2


def test_skipped_steps_do_not_count(rng):
    model = make_model()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1)
    sched = PrecisionSchedule(model, opt, {0: F64, 2: F32})
    guard = UpdateGuard(opt, z_threshold=float("inf"))
    for k in range(4):
        x, y = data(rng)
        opt.zero_grad()
        loss = F.mse_loss(model(sched.cast(x)), sched.cast(y))
        loss.backward()
        guard.step(loss * float("nan") if k == 1 else loss)
    assert guard.skipped == 1
    assert sched.steps == 3 and sched.events[0].step == 2
    assert sched.events[0].report_step == 2  # the third step() call: one was skipped


def test_cast_helper():
    model = make_model()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1)
    sched = PrecisionSchedule(model, opt, {0: F32})
    x64 = np.ones((2, 4))
    t = sched.cast(x64)
    assert isinstance(t, cgrad.Tensor) and t.dtype == F32
    idx = np.arange(3)
    assert sched.cast(idx) is idx
    i = cgrad.arange(3)
    assert sched.cast(i) is i
    a, (b, c) = sched.cast([cgrad.ones(2, dtype=F64), (x64, "s")])
    assert a.dtype == F32 and b.dtype == F32 and c == "s"
    assert sched.cast({"x": x64})["x"].dtype == F32
    frozen = np.ones(3)
    frozen.flags.writeable = False
    assert sched.cast(frozen).dtype == F32
    import collections
    Pair = collections.namedtuple("Pair", "x y")
    p = sched.cast(Pair(x64, idx))
    assert isinstance(p, Pair) and p.x.dtype == F32 and p.y is idx
    sched.switch(F64)
    f64 = np.ones(2, np.float64)
    f64.flags.writeable = False
    assert sched.cast(f64).dtype == F64


def test_other_optimizer_params_and_state_dict_roundtrip(rng, tmp_path):
    model = make_model()
    extra = cgrad.zeros(3, requires_grad=True)
    opt = cgrad.optim.Adam([*model.parameters(), extra], lr=0.01)
    sched = PrecisionSchedule(model, opt, {0: F64, 2: F32})
    assert extra.dtype == F64
    for _ in range(2):
        x, y = data(rng)
        opt.zero_grad()
        loss = F.mse_loss(model(sched.cast(x)) + extra, sched.cast(y))
        loss.backward()
        opt.step()
    assert extra.dtype == F32 and extra.grad.dtype == F32
    assert opt.state[extra]["exp_avg"].dtype == F32
    assert sched.events[0].n_params == 5 and sched.events[0].n_state == 10

    sd = sched.state_dict()
    assert sd == {"steps": 2, "dtype": "float32", "last_loss": None}
    m2 = make_model()
    opt2 = cgrad.optim.SGD(m2.parameters(), lr=0.1)
    s2 = PrecisionSchedule(m2, opt2, {0: F64, 2: F32})
    assert m2[0].weight.dtype == F64
    cgrad.save(sd, tmp_path / "sched.safetensors")
    s2.load_state_dict(cgrad.load(tmp_path / "sched.safetensors"))
    assert s2.steps == 2 and s2.dtype == F32 and m2[0].weight.dtype == F32
    sched.remove()
    opt.step()
    assert sched.steps == 2


def test_manual_switch_and_hook_removal():
    model = make_model()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1)
    sched = PrecisionSchedule(model, opt, {0: F32})
    got = []
    h = sched.register_switch_hook(got.append)
    assert sched.switch(F32) is None and not sched.events
    ev = sched.switch(F64, reason="by hand")
    assert ev.reason == "by hand" and got == [ev] and model[2].bias.dtype == F64
    h.remove()
    sched.switch(F32)
    assert len(got) == 1 and len(sched.events) == 2


@pytest.mark.parametrize("schedule, exc, words", [
    ({5: F32}, ValueError, "include step 0"),
    ({0: F64, -1: F32}, ValueError, "-1"),
    ({0: F64, 1.5: F32}, ValueError, "1.5"),
    ({0: cgrad.int64}, TypeError, "int64"),
    ({0: "float32"}, TypeError, "'float32'"),
    ({}, TypeError, "non-empty"),
    (42, TypeError, "int"),
    (lambda s, r, l: cgrad.int64, TypeError, "at step 0"),
    (lambda s, r, l: None, TypeError, "None"),
])
def test_bad_schedules_raise(schedule, exc, words):
    model = make_model()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(exc, match=words):
        PrecisionSchedule(model, opt, schedule)


def test_bad_schedule_found_later_and_bad_arguments(rng):
    model = make_model()
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1)
    sched = PrecisionSchedule(model, opt, lambda s, r, l: F64 if s == 0 else "half")
    x, y = data(rng)
    with pytest.raises(TypeError, match=r"dtype at step 1 .*'half'"):
        train_step(model, opt, x, y, sched.cast)
    with pytest.raises(TypeError, match="model"):
        PrecisionSchedule(object(), opt, {0: F32})
    with pytest.raises(TypeError, match="optimizer"):
        PrecisionSchedule(model, [1], {0: F32})
    with pytest.raises(TypeError, match="on_switch"):
        PrecisionSchedule(model, opt, {0: F32}, on_switch=3)
    with pytest.raises(TypeError, match="condition"):
        PrecisionSchedule.until(5)
    with pytest.raises(TypeError, match="switch"):
        sched.switch("float32")
    with pytest.raises(ValueError, match="dtype"):
        sched.load_state_dict({"steps": 1, "dtype": "float16"})
