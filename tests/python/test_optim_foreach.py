"""The optimizers' foreach paths (the default for parameters on a device,
as PyTorch's; foreach=True on the cpu too): the parameters of a group that
share a step count (Adam, Adagrad), whose momentum buffers are all new or
all old (SGD), or all of them (RMSprop) go to cg_*_update_multi in one call
(one kernel call per device). It must give the bits of the per-parameter path
(foreach=False) for every option, on the cpu and on the "cuda" device
(the reference device in CI), with mixed dtypes, empty parameters and
parameters whose step counts differ; and a bad entry must fail the step
with no parameter, state or step count moved (and on the per-parameter
path, the failing parameter takes back its own step count)."""
import numpy as np
import pytest

import cgrad
from cgrad import optim
from device_util import host, record_kernels

CONFIGS = {
    "adam": dict(lr=0.01),
    "amsgrad, weight decay": dict(lr=0.01, amsgrad=True, weight_decay=0.05),
    "maximize, betas": dict(lr=0.01, betas=(0.3, 0.9), maximize=True),
    "decoupled": dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
}
SHAPES = [((7, 5), "float32"), ((3,), "float64"), ((0,), "float32"), ((), "float64"),
          ((130,), "float32")]


def make(dev, seed=0):
    rng = np.random.default_rng(seed)
    return [cgrad.tensor(rng.standard_normal(s).astype(dt), requires_grad=True, device=dev)
            for s, dt in SHAPES]


def snapshot(opt, params):
    """The parameters and their states, on the host (what assert_same_bits
    compares)."""
    return [host(p) for p in params], [[(key, host(v)) for key, v in sorted(opt.state[p].items())]
                                       for p in params]


def stepped_once(dev, opt_cls, kw, foreach):
    """make(dev)'s parameters and an optimizer that took one step with
    gradients of ones."""
    params = make(dev)
    opt = opt_cls(params, foreach=foreach, **kw)
    for p in params:
        p.grad = cgrad.ones_like(p)
    opt.step()
    return params, opt


def reference(dev, opt_cls, kw, pick=slice(None)):
    """snapshot of make(dev)'s parameters (those pick selects) after two
    per-parameter steps, with gradients of ones, then of threes."""
    params = make(dev)[pick]
    opt = opt_cls(params, foreach=False, **kw)
    for grad in (1.0, 3.0):
        for p in params:
            p.grad = cgrad.ones_like(p) * grad
        opt.step()
    return snapshot(opt, params)


def run(dev, kw, foreach, opt_cls=optim.Adam, steps=4):
    params = make(dev)
    opt = opt_cls(params, foreach=foreach, **kw)
    rng = np.random.default_rng(1)
    for k in range(steps):
        for j, p in enumerate(params):
            # parameter 1 has no gradient at the first step: its step count
            # then lags the others' (a second batch)
            p.grad = None if (j == 1 and k == 0) else (
                p.detach() * 2.0 + cgrad.tensor(rng.standard_normal(p.shape).astype(host(p).dtype),
                                                device=dev))
        opt.step()
    return snapshot(opt, params)


def assert_same_bits(run_a, run_b):
    """Two runs' parameters and states (run's results) hold the same bits."""
    (ps_a, st_a), (ps_b, st_b) = run_a, run_b
    for a, b in zip(ps_a, ps_b):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))
    for sa, sb in zip(st_a, st_b):
        assert [k for k, _ in sa] == [k for k, _ in sb]
        for (_, a), (_, b) in zip(sa, sb):
            np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


@pytest.mark.parametrize("dev,foreach", [("cpu", True), ("cuda", None), ("cuda", True)])
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_foreach_gives_the_bits_of_the_per_parameter_path(dev, foreach, cfg, monkeypatch):
    # (on the cpu the default is the loop per parameter, as PyTorch's)
    from cgrad import _core
    calls = []
    multi = _core._adam_update_multi
    monkeypatch.setattr(_core, "_adam_update_multi", lambda *a: (calls.append(len(a[0])), multi(*a)))
    ps_a, st_a = run(dev, CONFIGS[cfg], foreach)
    # the batched path ran: 4 steps, the first without parameter 1 (its step
    # count lags after it, so each later step makes two batches)
    assert calls == [len(SHAPES) - 1] + [len(SHAPES) - 1, 1] * 3, calls
    monkeypatch.undo()
    assert_same_bits((ps_a, st_a), run(dev, CONFIGS[cfg], False))


def test_adamw_foreach_matches_per_parameter():
    a, _ = run("cpu", dict(lr=0.02, amsgrad=True), True, optim.AdamW)
    b, _ = run("cpu", dict(lr=0.02, amsgrad=True), False, optim.AdamW)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_the_device_step_is_one_kernel_call(monkeypatch):
    params = make("cuda")
    opt = optim.Adam(params, lr=0.01)
    for p in params:
        p.grad = cgrad.ones_like(p)
    names = record_kernels(monkeypatch, cgrad.cuda._init())
    opt.step()
    assert names == ["adam_update_multi_"], names
    del names[:]
    optim.Adam(params, lr=0.01, foreach=False).step()
    assert names == ["adam_update_"] * sum(p.numel() > 0 for p in params), names  # none for an empty one


@pytest.mark.parametrize("dev", ["cpu", "cuda"])
def test_a_bad_entry_moves_nothing(dev):
    params = make(dev)
    opt = optim.Adam(params, lr=0.1, foreach=True)
    for p in params:
        p.grad = cgrad.ones_like(p)
    opt.step()
    before = [host(p) for p in params]
    state = [(host(opt.state[p]["exp_avg"]), opt.state[p]["step"].item()) for p in params]
    for p in params:
        p.grad = cgrad.ones_like(p)
    good = opt.state[params[3]]["exp_avg_sq"]
    bad = cgrad.zeros(2, dtype=cgrad.float64, device=dev)  # for a 0-d parameter
    opt.state[params[3]]["exp_avg_sq"] = bad
    with pytest.raises(RuntimeError, match="Adam: optimizer state 'exp_avg_sq' has shape \\(2,\\) "
                                           "but its parameter has shape \\(\\)"):
        opt.step()  # the step's own check of every parameter
    opt.state[params[3]]["exp_avg_sq"] = good
    # the multi-tensor call checks every entry too before it writes
    from cgrad import _core
    s = [opt.state[p] for p in params]
    with pytest.raises(ValueError, match="parameter 3"):
        _core._adam_update_multi(params, [p.grad for p in params], [x["exp_avg"] for x in s],
                                 [bad if k == 3 else x["exp_avg_sq"] for k, x in enumerate(s)],
                                 None, 2, 0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False)
    for p, b, (m, step) in zip(params, before, state):
        np.testing.assert_array_equal(host(p), b)
        np.testing.assert_array_equal(host(opt.state[p]["exp_avg"]), m)
        assert opt.state[p]["step"].item() == step


def test_multi_call_argument_errors():
    from cgrad import _core
    p = [cgrad.zeros(3)]
    with pytest.raises(ValueError, match="grads must list 1 tensors"):
        _core._adam_update_multi(p, [], p, p, None, 1, 0.1, 0.9, 0.99, 1e-8, 0.0, False, False, False)
    with pytest.raises(TypeError, match="exp_avgs\\[0\\] must be a Tensor, got int"):
        _core._adam_update_multi(p, [cgrad.ones(3)], [3], [cgrad.zeros(3)], None, 1, 0.1, 0.9, 0.99,
                                 1e-8, 0.0, False, False, False)
    with pytest.raises(ValueError, match="share memory"):
        _core._adam_update_multi(p * 2, [cgrad.ones(3)] * 2, [cgrad.zeros(3), cgrad.zeros(3)],
                                 [cgrad.zeros(3), cgrad.zeros(3)], None, 1, 0.1, 0.9, 0.99, 1e-8,
                                 0.0, False, False, False)


# ------------------------------------------------------------------ SGD
SGD_CONFIGS = {
    "plain": dict(lr=0.05),
    "momentum": dict(lr=0.05, momentum=0.9),
    "nesterov, weight decay": dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
    "dampening, maximize": dict(lr=0.05, momentum=0.9, dampening=0.3, maximize=True),
}


@pytest.mark.parametrize("dev,foreach", [("cpu", True), ("cuda", None), ("cuda", True)])
@pytest.mark.parametrize("cfg", list(SGD_CONFIGS))
def test_sgd_foreach_gives_the_bits_of_the_per_parameter_path(dev, foreach, cfg, monkeypatch):
    from cgrad import _core
    calls = []
    multi = _core._sgd_update_multi
    monkeypatch.setattr(_core, "_sgd_update_multi",
                        lambda *a: (calls.append((len(a[0]), a[3])), multi(*a)))
    kw = SGD_CONFIGS[cfg]
    ps_a, st_a = run(dev, kw, foreach, optim.SGD)
    n = len(SHAPES)
    if kw.get("momentum"):
        # parameter 1's buffer is made a step after the others': a batch of
        # its own (init_buffer set) at the second step
        assert calls == [(n - 1, True), (n - 1, False), (1, True), (n, False), (n, False)], calls
    else:
        assert calls == [(n - 1, False)] + [(n, False)] * 3, calls
    monkeypatch.undo()
    assert_same_bits((ps_a, st_a), run(dev, kw, False, optim.SGD))


def test_sgd_device_step_is_one_kernel_call(monkeypatch):
    params = make("cuda")
    opt = optim.SGD(params, lr=0.01, momentum=0.9)
    for p in params:
        p.grad = cgrad.ones_like(p)
    names = record_kernels(monkeypatch, cgrad.cuda._init())
    opt.step()
    opt.step()
    assert names == ["sgd_update_multi_"] * 2, names
    del names[:]
    optim.SGD(params, lr=0.01, foreach=False).step()
    assert names == ["sgd_update_"] * sum(p.numel() > 0 for p in params), names


@pytest.mark.parametrize("dev", ["cpu", "cuda"])
def test_sgd_bad_entry_moves_nothing(dev):
    params = make(dev)
    opt = optim.SGD(params, lr=0.1, momentum=0.9, foreach=True)
    for p in params:
        p.grad = cgrad.ones_like(p)
    opt.step()
    before = [host(p) for p in params]
    bufs = [host(opt.state[p]["momentum_buffer"]) for p in params]
    for p in params:
        p.grad = cgrad.ones_like(p)
    good = opt.state[params[4]]["momentum_buffer"]
    opt.state[params[4]]["momentum_buffer"] = cgrad.zeros(3, device=dev)  # the wrong shape
    with pytest.raises(RuntimeError, match="SGD: optimizer state 'momentum_buffer' has shape "
                                           "\\(3,\\) but its parameter has shape \\(130,\\)"):
        opt.step()  # checked before any parameter moves (the C call checks its entries too)
    opt.state[params[4]]["momentum_buffer"] = good
    for p, b, m in zip(params, before, bufs):
        np.testing.assert_array_equal(host(p), b)
        np.testing.assert_array_equal(host(opt.state[p]["momentum_buffer"]), m)


def test_sgd_multi_call_argument_errors():
    from cgrad import _core
    p = [cgrad.zeros(3)]
    g = [cgrad.ones(3)]
    with pytest.raises(ValueError, match="grads must list 1 tensors"):
        _core._sgd_update_multi(p, [], None, False, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="momentum_buffers must list 1 tensors, one per parameter, got None"):
        _core._sgd_update_multi(p, g, None, False, 0.1, 0.9, 0.0, 0.0, False, False)
    with pytest.raises(TypeError, match="momentum_buffers\\[0\\] must be a Tensor, got int"):
        _core._sgd_update_multi(p, g, [3], False, 0.1, 0.9, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"):
        _core._sgd_update_multi(p, g, None, False, 0.1, 0.0, 0.0, 0.0, True, False)
    with pytest.raises(ValueError, match="share memory"):
        _core._sgd_update_multi(p * 2, g * 2, None, False, 0.1, 0.0, 0.0, 0.0, False, False)
    # without momentum the buffers are not read: None or anything of length n
    _core._sgd_update_multi(p, g, None, False, 0.5, 0.0, 0.0, 0.0, False, False)
    np.testing.assert_array_equal(p[0].numpy(), [-0.5] * 3)


@pytest.mark.parametrize("dev,foreach", [("cpu", True), ("cuda", None)])
def test_sgd_failed_first_step_leaves_no_buffers(dev, foreach):
    # the buffers a failed first step made are dropped: the next step
    # starts them from its gradient (as a fresh optimizer's first step)
    params, fresh = make(dev), make(dev)
    alias = params[0].detach().requires_grad_()  # a second leaf over parameter 0's memory
    # dampening: a zero buffer kept would give 0.5 g where the first step gives g
    opt = optim.SGD(params + [alias], lr=0.1, momentum=0.9, dampening=0.5, foreach=foreach)
    grads = [cgrad.ones_like(p) * (j + 1) for j, p in enumerate(params)]
    for p, q, g in zip(params, fresh, grads):
        p.grad, q.grad = g, g
    alias.grad = cgrad.ones_like(alias)
    with pytest.raises(ValueError, match="share memory"):
        opt.step()
    assert all("momentum_buffer" not in opt.state[p] for p in params + [alias])
    for p, q in zip(params, fresh):
        np.testing.assert_array_equal(host(p), host(q))
    opt.param_groups[0]["params"].pop()
    opt.step()
    ref = optim.SGD(fresh, lr=0.1, momentum=0.9, dampening=0.5, foreach=False)
    ref.step()
    for p, q in zip(params, fresh):
        np.testing.assert_array_equal(host(p), host(q))
        np.testing.assert_array_equal(host(opt.state[p]["momentum_buffer"]),
                                      host(ref.state[q]["momentum_buffer"]))


# ------------------------------------------------------ RMSprop, Adagrad
RMSPROP_CONFIGS = {
    "plain": dict(lr=0.01),
    "centered, momentum": dict(lr=0.01, centered=True, momentum=0.9),
    "weight decay, maximize, small alpha": dict(lr=0.01, alpha=0.3, weight_decay=0.05,
                                                maximize=True),
    "all": dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.02),
}
ADAGRAD_CONFIGS = {
    "plain": dict(lr=0.1),
    "lr decay, weight decay, initial sum": dict(lr=0.1, lr_decay=0.05, weight_decay=0.02,
                                                initial_accumulator_value=0.3),
    "maximize, eps": dict(lr=0.1, eps=1e-3, maximize=True),
}
N = len(SHAPES)
# (optimizer, its multi binding, a config, the batch sizes of run's 4 steps):
# RMSprop's update does not read the step count, so a group is one batch;
# Adagrad's learning rate does, so parameter 1's lagging count makes a
# batch of its own after the first step (as Adam's)
STATELESS_STEP = [N - 1] + [N] * 3
LAGGING_STEP = [N - 1] + [N - 1, 1] * 3
MULTI_CASES = [pytest.param(optim.RMSprop, "_rmsprop_update_multi", kw, STATELESS_STEP,
                            id=f"rmsprop: {name}") for name, kw in RMSPROP_CONFIGS.items()] + \
              [pytest.param(optim.Adagrad, "_adagrad_update_multi", kw, LAGGING_STEP,
                            id=f"adagrad: {name}") for name, kw in ADAGRAD_CONFIGS.items()]


@pytest.mark.parametrize("dev,foreach", [("cpu", True), ("cuda", None), ("cuda", True)])
@pytest.mark.parametrize("opt_cls,binding,kw,batches", MULTI_CASES)
def test_rmsprop_adagrad_foreach_give_the_bits_of_the_per_parameter_path(
        dev, foreach, opt_cls, binding, kw, batches, monkeypatch):
    from cgrad import _core
    calls = []
    multi = getattr(_core, binding)
    monkeypatch.setattr(_core, binding, lambda *a: (calls.append(len(a[0])), multi(*a)))
    ps_a, st_a = run(dev, kw, foreach, opt_cls)
    assert calls == batches, calls
    monkeypatch.undo()
    assert_same_bits((ps_a, st_a), run(dev, kw, False, opt_cls))


@pytest.mark.parametrize("opt_cls,kw,kernel", [
    (optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.9), "rmsprop_update"),
    (optim.Adagrad, dict(lr=0.01), "adagrad_update")])
def test_rmsprop_adagrad_device_step_is_one_kernel_call(opt_cls, kw, kernel, monkeypatch):
    params = make("cuda")
    opt = opt_cls(params, **kw)
    for p in params:
        p.grad = cgrad.ones_like(p)
    names = record_kernels(monkeypatch, cgrad.cuda._init())
    opt.step()
    opt.step()
    assert names == [kernel + "_multi_"] * 2, names
    per_parameter = opt_cls(params, foreach=False, **kw)   # (Adagrad fills its sums here)
    del names[:]
    per_parameter.step()
    assert names == [kernel + "_"] * sum(p.numel() > 0 for p in params), names


@pytest.mark.parametrize("dev", ["cpu", "cuda"])
@pytest.mark.parametrize("opt_cls,kw,key", [
    (optim.RMSprop, dict(lr=0.1, centered=True, momentum=0.9), "grad_avg"),
    (optim.RMSprop, dict(lr=0.1), "square_avg"),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.1), "sum")])
def test_rmsprop_adagrad_bad_entry_moves_nothing(dev, opt_cls, kw, key):
    params, opt = stepped_once(dev, opt_cls, kw, True)
    before = snapshot(opt, params)
    for p in params:
        p.grad = cgrad.ones_like(p) * 3.0
    good = opt.state[params[4]][key]
    opt.state[params[4]][key] = cgrad.zeros(3, device=dev)  # the wrong shape
    with pytest.raises(RuntimeError, match=f"{opt_cls.__name__}: optimizer state '{key}' has shape "
                                           "\\(3,\\) but its parameter has shape \\(130,\\)"):
        opt.step()  # checked before any parameter moves (the C call checks its entries too)
    opt.state[params[4]][key] = good
    assert_same_bits(snapshot(opt, params), before)    # step counts included
    opt.step()      # and the next step is the step that failed
    assert_same_bits(snapshot(opt, params), reference(dev, opt_cls, kw))


def test_rmsprop_adagrad_multi_call_argument_errors():
    from cgrad import _core
    p, g, s = [cgrad.zeros(3)], [cgrad.ones(3)], [cgrad.zeros(3)]
    rms = _core._rmsprop_update_multi
    with pytest.raises(ValueError, match="grads must list 1 tensors"):
        rms(p, [], s, None, None, 0.1, 0.9, 1e-8, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="grad_avgs must list 1 tensors, one per parameter, got None"):
        rms(p, g, s, None, None, 0.1, 0.9, 1e-8, 0.0, 0.0, True, False)
    with pytest.raises(ValueError, match="momentum_buffers must list 1 tensors, one per parameter, got None"):
        rms(p, g, s, None, None, 0.1, 0.9, 1e-8, 0.0, 0.5, False, False)
    with pytest.raises(TypeError, match="square_avgs\\[0\\] must be a Tensor, got int"):
        rms(p, g, [3], None, None, 0.1, 0.9, 1e-8, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="cg_rmsprop_update_multi: invalid alpha value: -0.5"):
        rms(p, g, s, None, None, 0.1, -0.5, 1e-8, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="share memory"):
        rms(p * 2, g * 2, [cgrad.zeros(3), cgrad.zeros(3)], None, None, 0.1, 0.9, 1e-8, 0.0,
            0.0, False, False)
    ada = _core._adagrad_update_multi
    with pytest.raises(ValueError, match="state_sums must list 1 tensors"):
        ada(p, g, [], 1, 0.1, 0.0, 0.0, 1e-10, 0.0, False)
    with pytest.raises(ValueError, match="cg_adagrad_update_multi: step must be >= 1 .* got 0"):
        ada(p, g, s, 0, 0.1, 0.0, 0.0, 1e-10, 0.0, False)
    with pytest.raises(ValueError, match="share memory"):
        ada(p * 2, g * 2, s * 2, 1, 0.1, 0.0, 0.0, 1e-10, 0.0, False)
    # the step's lr: lr / (1 + (step - 1) * lr_decay) = 0.1 / 2; sum 1, so
    # the step is 0.05 * 1 / (1 + eps)
    ada(p, g, s, 3, 0.1, 0.5, 0.0, 0.0, 0.0, False)
    np.testing.assert_array_equal(p[0].numpy(), np.float32([-0.05] * 3))
    np.testing.assert_array_equal(s[0].numpy(), [1.0] * 3)


@pytest.mark.parametrize("dev", ["cpu", "cuda"])
@pytest.mark.parametrize("opt_cls,kw,key", [
    (optim.Adam, dict(lr=0.1), "exp_avg_sq"),
    (optim.RMSprop, dict(lr=0.1, centered=True), "grad_avg"),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.1), "sum")])
def test_a_failed_per_parameter_update_keeps_its_step_count(dev, opt_cls, kw, key):
    # foreach=False, a failure the step's checks do not foresee (the fused
    # update's own: a state buffer sharing the parameter's memory): the
    # parameters before the bad one move (a loop), the bad one moves
    # nothing and takes back its step count, so its next step is the step
    # that failed
    params, opt = stepped_once(dev, opt_cls, kw, False)
    last = params[4]
    before = host(last)
    for p in params:
        p.grad = cgrad.ones_like(p) * 3.0
    good = opt.state[last][key]
    opt.state[last][key] = last.detach()  # the parameter's own memory
    with pytest.raises(ValueError, match="share memory"):
        opt.step()
    assert [opt.state[p]["step"].item() for p in params] == [2, 2, 2, 2, 1]
    np.testing.assert_array_equal(host(last), before)
    opt.state[last][key] = good
    for p in params[:4]:
        p.grad = None
    opt.step()
    assert_same_bits(snapshot(opt, [last]), reference(dev, opt_cls, kw, slice(4, 5)))


@pytest.mark.parametrize("opt_cls", [optim.SparseAdam, optim.Adagrad])
def test_a_failed_sparse_update_keeps_its_step_count(opt_cls):
    from cgrad import nn
    emb = nn.Embedding(6, 2, sparse=True)
    opt = opt_cls(emb.parameters(), lr=0.1)
    emb(cgrad.tensor([1, 4])).sum().backward()
    opt.step()
    state = opt.state[emb.weight]
    count = int(state["step"].item() if opt_cls is optim.Adagrad else state["step"])
    key = "exp_avg" if opt_cls is optim.SparseAdam else "sum"
    good, before = state[key], emb.weight.detach().numpy().copy()
    state[key] = emb.weight.detach()     # the parameter's own memory
    with pytest.raises(ValueError, match="share memory"):
        opt.step()
    after = int(state["step"].item() if opt_cls is optim.Adagrad else state["step"])
    assert after == count == 1
    np.testing.assert_array_equal(emb.weight.detach().numpy(), before)
    state[key] = good
