"""The monitor's update-to-weight ratio from the optimizers' fused kernels
(Optimizer._track_update_sq, cg_*_update's update_sum_sq): equal to the
update measured on float64 copies of the weights, for every built-in
optimizer; a subclass that overrides step() falls back to copying; watching
changes no weight by a single bit."""
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
        assert run._watcher._upd is not None, "a built-in optimizer takes the fused path"
        oracle = Oracle(params, opt)
        train(model, opt, 5, run, skip_grad_of=params[1])
    assert opt._update_sq is None, "closing the run switches the measurement off"
    with monitor.RunReader(path) as r:
        d = r.poll()
        assert d.n_steps == 5
        check_ratios(d, oracle, len(params), members_of(r.layers))
        assert (d.layer_update_ratio[[1, 3], 1] == 0).all(), "a parameter without grad moved 0"


def test_subclass_overriding_step_takes_the_copy_path(tmp_path):
    model = mlp((5, 7, 6, 3))
    params = list(model.parameters())
    opt = SGDWithProjection(params, lr=0.5)
    assert not opt._provides_update_sq() and optim.SGD(params)._provides_update_sq()
    path = tmp_path / "s.cgrun"
    with monitor.Run(path) as run:
        run.watch(model, opt)
        assert run._watcher._upd is None
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


def test_update_norm_out_of_the_kernel():
    rng = np.random.default_rng(3)
    w = rng.standard_normal(3000).astype(np.float32)
    g = rng.standard_normal(3000).astype(np.float32)
    p, grad = cgrad.from_numpy(w.copy()), cgrad.from_numpy(g)
    u = cgrad._core._sgd_update(p, grad, None, False, 0.1, 0.0, 0.0, 0.0, False, False, True)
    want = np.sum((p.numpy().astype(np.float64) - w.astype(np.float64)) ** 2)
    np.testing.assert_allclose(u, want, rtol=1e-12)
    assert cgrad._core._sgd_update(p, grad, None, False, 0.1, 0.0, 0.0, 0.0, False, False) is None


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
