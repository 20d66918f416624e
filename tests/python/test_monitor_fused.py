"""The monitor's statistics from the optimizers' fused kernels
(Optimizer._stats_sink, cg_*_update_stats): the update-to-weight ratio
equals the update measured on float64 copies of the weights, and the
gradient / weight statistics equal a separate pass over them, for every
built-in optimizer; a subclass that overrides step() falls back to its own
pass and weight copies; watching changes no weight by a single bit."""
import math

import numpy as np
import pytest

import cgrad
from cgrad import monitor, optim
from monitor_standin import batch, loss_of, mlp

OPTIMIZERS = {
    "sgd_momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda ps: optim.Adam(ps, lr=1e-2, amsgrad=True),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-2),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01),
}


class SGDWithProjection(optim.SGD):
    """A user optimizer: SGD, then the weights shrink by 10% (a move the
    fused kernel never sees)."""

    def step(self, closure=None):
        out = super().step(closure)
        with cgrad.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    p.mul_(0.9)
        return out


class Oracle:
    """Float64 copies of the weights around each step (hooks registered
    after the monitor's, so they see the same step)."""

    def __init__(self, params, opt):
        self.params, self.steps = params, []
        opt.register_step_pre_hook(self.pre)
        opt.register_step_post_hook(self.post)

    def pre(self, opt, args, kwargs):
        self._w0 = [p.detach().numpy().astype(np.float64) for p in self.params]

    def post(self, opt, args, kwargs):
        w1 = [p.detach().numpy().astype(np.float64) for p in self.params]
        self.steps.append((self._w0, w1))


def train(model, opt, n, run=None, skip_grad_of=None):
    x, y = batch(d_in=5)
    for i in range(n):
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        if skip_grad_of is not None and i % 2:
            skip_grad_of.grad = None  # a parameter the step leaves alone
        opt.step()
        if run is not None:
            run.log_loss(loss)


def check_ratios(d, oracle, n_params, members):
    for row, (w0, w1) in enumerate(oracle.steps):
        for i in range(n_params):
            want = np.linalg.norm(w1[i] - w0[i]) / np.linalg.norm(w0[i])
            np.testing.assert_allclose(d.layer_update_ratio[row, i], want, rtol=1e-4, atol=1e-12)
        for lid, idx in members.items():
            usq = sum(np.sum((w1[i] - w0[i]) ** 2) for i in idx)
            wsq = sum(np.sum(w0[i] ** 2) for i in idx)
            np.testing.assert_allclose(d.layer_update_ratio[row, lid], math.sqrt(usq / wsq),
                                       rtol=1e-4)


def members_of(layers):
    names = [l["name"] for l in layers if l["kind"] == "param"]
    return {l["layer_id"]: [i for i, n in enumerate(names) if n.startswith(l["name"] + ".")]
            for l in layers if l["kind"] == "module"}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_update_ratio_equals_weight_copies(tmp_path, name):
    model = mlp((5, 7, 6, 3))
    params = list(model.parameters())
    opt = OPTIMIZERS[name](params)
    path = tmp_path / "f.cgrun"
    with monitor.Run(path) as run:
        run.watch(model, opt)
        assert run._watcher._sink is not None, "a built-in optimizer takes the fused path"
        oracle = Oracle(params, opt)
        train(model, opt, 5, run, skip_grad_of=params[1])
        sink = run._watcher._sink
        assert opt._stats_sink is sink and sink.what == 0, "attached, disarmed between steps"
    assert opt._stats_sink is None, "closing the run takes its sink off the optimizer"
    with monitor.RunReader(path) as r:
        d = r.poll()
        assert d.n_steps == 5
        check_ratios(d, oracle, len(params), members_of(r.layers))
        assert (d.layer_update_ratio[[1, 3], 1] == 0).all(), "a parameter without grad moved 0"


def test_subclass_overriding_step_takes_the_copy_path(tmp_path):
    model = mlp((5, 7, 6, 3))
    params = list(model.parameters())
    opt = SGDWithProjection(params, lr=0.5)
    assert not opt._provides_fused_stats() and optim.SGD(params)._provides_fused_stats()
    path = tmp_path / "s.cgrun"
    with monitor.Run(path) as run:
        run.watch(model, opt)
        assert run._watcher._sink is None
        oracle = Oracle(params, opt)
        train(model, opt, 4, run)
    with monitor.RunReader(path) as r:
        d = r.poll()
        check_ratios(d, oracle, len(params), members_of(r.layers))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("every,ratio_every", [(1, 1), (2, 3)])
def test_watching_changes_no_weight(tmp_path, name, every, ratio_every):
    runs = []
    for watched in (False, True):
        model = mlp((5, 7, 6, 3))
        opt = OPTIMIZERS[name](list(model.parameters()))
        if watched:
            with monitor.Run(tmp_path / f"{name}.cgrun", overwrite=True) as run:
                run.watch(model, opt, every=every, update_ratio_every=ratio_every)
                train(model, opt, 6, run)
        else:
            train(model, opt, 6)
        runs.append([p.detach().numpy().copy() for p in model.parameters()])
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()


def finite_stats(x):
    x = np.asarray(x, dtype=np.float64).ravel()
    ok = np.isfinite(x)
    return (float(np.sum(x[ok] ** 2)), float(np.max(np.abs(x[ok]), initial=0.0)),
            int((~ok).sum()), x.size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 1023, 3000])
def test_fused_statistics_out_of_the_kernel(dtype, n):
    """Blocks of 1024 and a partial last one: gradient, old weights and
    update as a separate float64 computation finds them."""
    rng = np.random.default_rng(n)
    w = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    p, grad = cgrad.from_numpy(w.copy()), cgrad.from_numpy(g)
    sink = cgrad._core._StatsSink([p])
    sink.begin(7)
    assert cgrad._core._sgd_update(p, grad, None, False, 0.1, 0.0, 0.0, 0.0, False, False,
                                   sink) is None
    assert sink.seen(0) == 1
    got = sink.stats(0)
    # float32 sums of squares come from float lanes (cgrad.h: below 1.1e-6)
    rtol = 1.1e-6 if dtype == np.float32 else 1e-12
    for have, want in zip(got[:4] + got[4:8], finite_stats(g) + finite_stats(w)):
        np.testing.assert_allclose(have, want, rtol=rtol)
    want_u = np.sum((p.numpy().astype(np.float64) - w.astype(np.float64)) ** 2)
    np.testing.assert_allclose(got[8], want_u, rtol=rtol)
    # measuring changes no bit of the update
    p2 = cgrad.from_numpy(w.copy())
    cgrad._core._sgd_update(p2, grad, None, False, 0.1, 0.0, 0.0, 0.0, False, False)
    assert p2.numpy().tobytes() == p.numpy().tobytes()


def test_fused_statistics_count_non_finite_gradients():
    g = np.linspace(-1, 1, 2500)
    g[[3, 1500, 2499]] = [np.nan, np.inf, -np.inf]
    w = np.ones(2500)
    p, grad = cgrad.from_numpy(w.copy()), cgrad.from_numpy(g)
    sink = cgrad._core._StatsSink([p])
    sink.begin(1 | 2)  # no update norm asked for
    cgrad._core._adam_update(p, grad, cgrad.zeros(2500, dtype=cgrad.float64),
                             cgrad.zeros(2500, dtype=cgrad.float64), None, 1, 1e-3, 0.9, 0.999,
                             1e-8, 0.0, False, False, False, sink)
    got = sink.stats(0)
    np.testing.assert_allclose(got[:4], finite_stats(g), rtol=1e-12)
    assert got[4:8] == (2500.0, 1.0, 0, 2500) and got[8] == 0.0


def test_sink_arming_and_bad_input():
    p, q = cgrad.ones(4), cgrad.ones(4)
    sink = cgrad._core._StatsSink([p])
    with pytest.raises(ValueError, match="unknown measure bits in 8"):
        sink.begin(8)
    with pytest.raises(IndexError, match="index 1 out of range for 1 parameters"):
        sink.seen(1)
    with pytest.raises(TypeError, match="parameter 0 must be a cgrad.Tensor, got list"):
        cgrad._core._StatsSink([[1.0]])
    g = cgrad.ones(4)
    cgrad._core._sgd_update(p, g, None, False, 0.1, 0.0, 0.0, 0.0, False, False, sink)
    assert sink.seen(0) == 0, "not armed: nothing measured"
    sink.begin(7)
    cgrad._core._sgd_update(q, g, None, False, 0.1, 0.0, 0.0, 0.0, False, False, sink)
    assert sink.seen(0) == 0, "q is not watched"
    with pytest.raises(TypeError):
        cgrad._core._sgd_update(p, g, None, False, 0.1, 0.0, 0.0, 0.0, False, False, "sink")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_statistics_equal_the_separate_pass(tmp_path, name):
    """Same model, same steps: the fused path (built-in step) and the
    pre-hook pass (a subclass overriding step) record the same gradient
    and weight statistics."""
    got = []
    for fused in (True, False):
        model = mlp((5, 7, 6, 3))
        params = list(model.parameters())
        opt = OPTIMIZERS[name](params)
        if not fused:
            opt.__class__ = type("Own", (type(opt),), {"step": lambda self, c=None:
                                                        super(type(self), self).step(c)})
        assert opt._provides_fused_stats() == fused
        with monitor.Run(tmp_path / f"{fused}.cgrun") as run:
            run.watch(model, opt)
            assert (run._watcher._sink is not None) == fused
            train(model, opt, 4, run, skip_grad_of=params[1])
        with monitor.RunReader(tmp_path / f"{fused}.cgrun") as r:
            got.append(r.poll())
    a, b = got
    for key in ("layer_grad_norm", "layer_grad_max", "layer_nonfinite", "layer_weight_norm",
                "layer_update_ratio"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-5, equal_nan=True,
                                   err_msg=key)
    np.testing.assert_allclose(a.steps["grad_norm"], b.steps["grad_norm"], rtol=1e-5)


def test_closure_step_records_the_closures_gradients(tmp_path):
    """step(closure): the gradients measured are those the closure made and
    the update applied, not the ones before it."""
    model = mlp((5, 7, 6, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    x, y = batch(d_in=5)
    norms = []

    def closure():
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        norms.append(math.sqrt(sum(float((p.grad.numpy().astype(np.float64) ** 2).sum())
                                   for p in model.parameters())))
        return loss

    with monitor.Run(tmp_path / "c.cgrun") as run:
        run.watch(model, opt)
        for _ in range(3):
            opt.step(closure)
    with monitor.RunReader(tmp_path / "c.cgrun") as r:
        d = r.poll()
    np.testing.assert_allclose(d.steps["grad_norm"], norms, rtol=1e-5)
    assert np.isfinite(d.steps["loss"]).all()


def test_two_runs_watching_one_optimizer(tmp_path):
    """Each run gets the right update norms, whichever steps each records."""
    model = mlp((5, 7, 6, 3))
    params = list(model.parameters())
    opt = optim.Adam(params, lr=1e-2)
    with monitor.Run(tmp_path / "a.cgrun") as a, monitor.Run(tmp_path / "b.cgrun") as b:
        a.watch(model, opt)
        b.watch(model, opt, update_ratio_every=2)
        oracle = Oracle(params, opt)
        train(model, opt, 4)
    members = None
    for path, rows in (("a.cgrun", [0, 1, 2, 3]), ("b.cgrun", [0, 2])):
        with monitor.RunReader(tmp_path / path) as r:
            d = r.poll()
            members = members_of(r.layers)
            measured = ~np.isnan(d.layer_update_ratio).all(axis=1)
            assert np.nonzero(measured)[0].tolist() == rows
            sub = type("D", (), {"layer_update_ratio": d.layer_update_ratio[rows]})
            check_ratios(sub, type("O", (), {"steps": [oracle.steps[i] for i in rows]}),
                         len(params), members)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adagrad(ps, lr=0.1)])
def test_a_row_sparse_gradient_is_measured_and_its_ratio_unknown(tmp_path, make):
    """Embedding(sparse=True) with a fused optimizer: the sparse update
    measures nothing, so the watcher measures that gradient itself (its
    stored rows) and leaves its update ratio unknown; the dense layer's
    numbers still come from its fused update."""
    from cgrad import nn
    emb, lin = nn.Embedding(10, 4, sparse=True), nn.Linear(4, 2)
    model = nn.Sequential(emb, lin)
    opt = make(list(model.parameters()))
    idx = cgrad.tensor([[1, 3], [3, 7]])
    norms = []
    with monitor.Run(tmp_path / "s.cgrun") as run:
        run.watch(model, opt)
        for _ in range(3):
            opt.zero_grad()
            loss = model(idx).sum()
            loss.backward()
            g = emb.weight.grad.coalesce().values().numpy().astype(np.float64)
            norms.append(math.sqrt(float((g ** 2).sum())))
            opt.step()
            run.log_loss(loss)
    with monitor.RunReader(tmp_path / "s.cgrun") as r:
        d = r.poll()
        names = [l["name"] for l in r.layers]
    e, w = names.index("0.weight"), names.index("1.weight")
    np.testing.assert_allclose(d.layer_grad_norm[:, e], norms, rtol=1e-6)
    assert np.isnan(d.layer_update_ratio[:, e]).all()
    assert np.isfinite(d.layer_update_ratio[:, w]).all() and (d.layer_update_ratio[:, w] > 0).all()
