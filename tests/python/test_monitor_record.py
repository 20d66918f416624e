"""cgrad.monitor recording: what Run.watch writes equals what is computed
independently (NumPy on the same gradients and weights), for parameters
and modules; lr per group, clip fields, every-N, losses, events."""
import math
import warnings

import numpy as np
import pytest

import cgrad
from cgrad import monitor, nn
from monitor_standin import StandInSGD, batch, loss_of, mlp


class Oracle:
    """Registered after watch(): its hooks see what the monitor's see and
    keep float64 copies of gradients and weights per step."""

    def __init__(self, model, opt):
        self.names = [n for n, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.steps = []
        self._count = 0
        opt.register_step_pre_hook(self.pre)
        opt.register_step_post_hook(self.post)

    def pre(self, opt, args, kwargs):
        self._cur = {"grads": [None if p.grad is None else p.grad.numpy().astype(np.float64)
                               for p in self.params],
                     "w0": [p.detach().numpy().astype(np.float64) for p in self.params],
                     "lrs": [g["lr"] for g in opt.param_groups]}

    def post(self, opt, args, kwargs):
        self._cur["w1"] = [p.detach().numpy().astype(np.float64) for p in self.params]
        self._cur["step"] = self._count
        self._count += 1
        self.steps.append(self._cur)


def train(model, opt, run, n, x, y, clip_at=(), max_norm=0.05, log="after"):
    for i in range(n):
        opt.zero_grad()
        loss = loss_of(model, x, y)
        if log == "before":
            run.log_loss(loss)
        loss.backward()
        if i in clip_at:
            opt.clip_grad_norm_(max_norm)
        opt.step()
        if log == "after":
            run.log_loss(loss)


def read_all(path):
    with monitor.RunReader(path) as r:
        d = r.poll()
        return r, d


def module_members(model, layers):
    names = [l["name"] for l in layers if l["kind"] == "param"]
    out = {}
    for l in layers:
        if l["kind"] == "module":
            prefix = l["name"] + "."
            out[l["layer_id"]] = [i for i, n in enumerate(names) if n.startswith(prefix)]
    return out


def test_layer_values_equal_numpy(tmp_path):
    model = mlp((5, 7, 6, 3))
    opt = StandInSGD(model.parameters(), lr=0.2)
    x, y = batch(d_in=5)
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt)
        oracle = Oracle(model, opt)
        train(model, opt, run, 6, x, y)
    r, d = read_all(tmp_path / "a.cgrun")
    names = [l["name"] for l in r.layers]
    assert names[:6] == [n for n, _ in model.named_parameters()]
    assert [l["kind"] for l in r.layers] == ["param"] * 6 + ["module"] * 3
    assert names[6:] == ["0", "2", "4"]
    assert r.layers[0]["shape"] == [7, 5] and r.layers[0]["numel"] == 35
    assert d.steps["step"].tolist() == list(range(6))
    members = module_members(model, r.layers)
    for row, ref in enumerate(oracle.steps):
        g, w0, w1 = ref["grads"], ref["w0"], ref["w1"]
        for i in range(6):
            np.testing.assert_allclose(d.layer_grad_norm[row, i], np.linalg.norm(g[i]), rtol=1e-5)
            np.testing.assert_allclose(d.layer_grad_max[row, i], np.abs(g[i]).max(), rtol=1e-6)
            np.testing.assert_allclose(d.layer_weight_norm[row, i], np.linalg.norm(w0[i]), rtol=1e-5)
            np.testing.assert_allclose(d.layer_update_ratio[row, i],
                                       np.linalg.norm(w1[i] - w0[i]) / np.linalg.norm(w0[i]),
                                       rtol=1e-4)
            assert d.layer_nonfinite[row, i] == 0
        for lid, idx in members.items():
            gsq = sum(np.sum(g[i] ** 2) for i in idx)
            wsq = sum(np.sum(w0[i] ** 2) for i in idx)
            usq = sum(np.sum((w1[i] - w0[i]) ** 2) for i in idx)
            np.testing.assert_allclose(d.layer_grad_norm[row, lid], math.sqrt(gsq), rtol=1e-5)
            np.testing.assert_allclose(d.layer_grad_max[row, lid], max(np.abs(g[i]).max() for i in idx),
                                       rtol=1e-6)
            np.testing.assert_allclose(d.layer_weight_norm[row, lid], math.sqrt(wsq), rtol=1e-5)
            np.testing.assert_allclose(d.layer_update_ratio[row, lid], math.sqrt(usq / wsq), rtol=1e-4)
        total = math.sqrt(sum(np.sum(gi ** 2) for gi in g))
        np.testing.assert_allclose(d.steps["grad_norm"][row], total, rtol=1e-5)
        np.testing.assert_allclose(d.steps["grad_norm_clipped"][row], total, rtol=1e-5)
        assert math.isnan(d.steps["clip_max_norm"][row]) and d.steps["clipped"][row] == 0
        assert d.steps["nonfinite"][row] == 0 and d.steps["skipped"][row] == 0
        np.testing.assert_allclose(d.lr[row], [0.2])


def test_update_ratio_equals_lr_times_grad_for_sgd(tmp_path):
    # plain SGD: ||dw|| = lr * ||g||, an identity the oracle does not share
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.05)
    x, y = batch()
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt)
        train(model, opt, run, 3, x, y)
    _, d = read_all(tmp_path / "a.cgrun")
    n = 4
    np.testing.assert_allclose(d.layer_update_ratio[:, :n] * d.layer_weight_norm[:, :n],
                               0.05 * d.layer_grad_norm[:, :n], rtol=1e-4)


def test_lr_per_group_and_clip_fields(tmp_path):
    model = mlp()
    params = list(model.parameters())
    opt = StandInSGD([{"params": params[:2], "lr": 0.1}, {"params": params[2:], "lr": 0.03}])
    x, y = batch()
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt)
        oracle = Oracle(model, opt)
        train(model, opt, run, 4, x, y, clip_at=(1, 3), max_norm=0.05)
        opt.param_groups[1]["lr"] = 0.02
        train(model, opt, run, 1, x, y)
    r, d = read_all(tmp_path / "a.cgrun")
    assert r.meta["n_groups"] == 2
    np.testing.assert_allclose(d.lr, [[0.1, 0.03]] * 4 + [[0.1, 0.02]])
    for row in (1, 3):
        g = oracle.steps[row]["grads"]  # the oracle sees the clipped gradients
        after = math.sqrt(sum(np.sum(gi ** 2) for gi in g))
        assert d.steps["clipped"][row] == 1
        assert d.steps["clip_max_norm"][row] == pytest.approx(0.05)
        before = d.steps["grad_norm"][row]
        assert before > 0.05
        assert d.steps["clip_coef"][row] == pytest.approx(0.05 / (before + 1e-6), rel=1e-6)
        assert d.steps["grad_norm_clipped"][row] == pytest.approx(after, rel=1e-4)
        np.testing.assert_allclose(d.layer_grad_norm[row, :4],
                                   [np.linalg.norm(gi) for gi in g], rtol=1e-5)
    assert d.steps["clipped"][[0, 2, 4]].tolist() == [0, 0, 0]
    assert np.isnan(d.steps["clip_coef"][[0, 2, 4]]).all()


def test_every_n_and_skipped_steps(tmp_path):
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.1)
    x, y = batch()
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt, every=3)
        for i in range(11):
            opt.zero_grad()
            loss_of(model, x, y).backward()
            if i == 4:
                opt.skip_next = "non-finite gradients"
            opt.step()
    r, d = read_all(tmp_path / "a.cgrun")
    assert r.meta["every"] == "3"
    assert d.steps["step"].tolist() == [0, 3, 4, 6, 9]
    assert d.steps["skipped"].tolist() == [0, 0, 1, 0, 0]
    assert d.steps["skip_reason"][2] == "non-finite gradients"
    assert (d.layer_update_ratio[2] == 0).all()       # nothing moved
    assert (d.layer_update_ratio[[0, 1, 3, 4]] > 0).all()
    skipped = [e for e in d.events if e["kind"] == "skipped"]
    assert [(e["step"], e["message"]) for e in skipped] == [(4, "non-finite gradients")]
    assert np.isnan(d.steps["loss"]).all()            # no loss was given


@pytest.mark.parametrize("where", ["before", "after", "closure", "explicit"])
def test_loss_lands_on_its_step(tmp_path, where):
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.1)
    x, y = batch()
    expected = []
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt)
        for i in range(5):
            opt.zero_grad()
            if where == "closure":
                def closure():
                    loss = loss_of(model, x, y)
                    loss.backward()
                    return loss
                expected.append(float(opt.step(closure).item()))
                continue
            loss = loss_of(model, x, y)
            expected.append(float(loss.item()))
            if where == "before":
                run.log_loss(loss)
            loss.backward()
            opt.step()
            if where == "after":
                run.log_loss(loss)
            if where == "explicit":
                run.log(i, loss=loss, acc=i / 10)
    _, d = read_all(tmp_path / "a.cgrun")
    np.testing.assert_allclose(d.steps["loss"], expected, rtol=1e-6)
    assert len(set(expected)) == 5
    if where == "explicit":
        steps, values = d.scalars["acc"]
        assert steps.tolist() == list(range(5))
        np.testing.assert_allclose(values, np.arange(5) / 10)


def test_log_without_watch_and_scalars_any_order(tmp_path):
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.log(10, val=1.5)
        run.log(2, val=0.5, other=3)
        run.log(0, loss=2.0)
        run.log_loss(1.0, step=1)
        run.log(5, val=float("nan"))
    _, d = read_all(tmp_path / "a.cgrun")
    assert d.steps["step"].tolist() == [0, 1]
    assert d.steps["loss"].tolist() == [2.0, 1.0]
    s, v = d.scalars["val"]
    assert s.tolist() == [10, 2, 5] and v[:2].tolist() == [1.5, 0.5] and math.isnan(v[2])
    assert d.scalars["other"][1].tolist() == [3.0]


def test_events_user_precision_lr_scale_nonfinite(tmp_path):
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.1)
    opt.loss_scale = 1024.0
    x, y = batch()
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt)
        oracle = Oracle(model, opt)
        train(model, opt, run, 2, x, y)
        run.event("checkpoint", "saved to ckpt.pt")
        run.event("note", "explicit", step=7, value=3.5)
        model.to(cgrad.float64)                       # precision switch mid-run
        train(model, opt, run, 2, x, y)               # steps 2, 3
        opt.param_groups[0]["lr"] = 0.095             # drift: no event
        train(model, opt, run, 1, x, y)               # step 4
        opt.param_groups[0]["lr"] = 0.01              # a 9.5x drop
        opt.loss_scale = 512.0
        train(model, opt, run, 1, x, y)               # step 5
        opt.zero_grad()
        loss_of(model, x, y).backward()
        g = model[0].weight.grad.numpy()
        g[0, 0], g[1, 1] = np.inf, np.nan            # step 6: bad gradient, skipped
        opt.skip_next = "non-finite gradients"
        opt.step()
        train(model, opt, run, 1, x, y)               # step 7 heals
    r, d = read_all(tmp_path / "a.cgrun")
    ev = {(e["kind"], e["step"]): e for e in d.events}
    assert ev[("checkpoint", 1)]["message"] == "saved to ckpt.pt"
    assert ev[("note", 7)]["value"] == 3.5
    prec = ev[("precision", 2)]["message"]
    assert "float32 -> float64" in prec
    assert [k for k in ev if k[0] == "precision"] == [("precision", 2)]
    assert [k for k in ev if k[0] == "lr_change"] == [("lr_change", 5)]
    assert ev[("lr_change", 5)]["value"] == pytest.approx(0.01)
    assert ev[("loss_scale", 5)]["value"] == 512.0
    np.testing.assert_allclose(d.steps["loss_scale"], [1024] * 5 + [512] * 3)
    # values are still right in float64
    g2 = oracle.steps[2]["grads"]
    np.testing.assert_allclose(d.layer_grad_norm[2, :4], [np.linalg.norm(a) for a in g2], rtol=1e-10)
    # the non-finite step: counts per layer, finite-only norms, global +inf
    bad = oracle.steps[6]["grads"][0]
    finite = bad[np.isfinite(bad)]
    assert d.layer_nonfinite[6].tolist()[:5] == [2, 0, 0, 0, 2]  # 0.weight ... module '0'
    np.testing.assert_allclose(d.layer_grad_norm[6, 0], np.linalg.norm(finite), rtol=1e-10)
    np.testing.assert_allclose(d.layer_grad_max[6, 0], np.abs(finite).max())
    assert d.steps["nonfinite"][6] == 2 and d.steps["grad_norm"][6] == np.inf
    assert d.steps["skipped"][6] == 1
    nf = [e for e in d.events if e["kind"] == "nonfinite"]
    assert [(e["step"], e["layer_id"]) for e in nf] == [(6, 0), (6, 4)]
    assert r.layers[nf[0]["layer_id"]]["name"] == "0.weight"
    assert d.layer_nonfinite[7].tolist() == [0] * 6


def test_anomaly_event(tmp_path):
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.1)
    x, y = batch()
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt)
        train(model, opt, run, 1, x, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with cgrad.autograd.detect_anomaly():
                (model[0].bias - 1e3).log()       # NaN made in the forward
                report = cgrad.autograd.anomaly_report()
        train(model, opt, run, 2, x, y)
    _, d = read_all(tmp_path / "a.cgrun")
    assert report and "log" in report
    an = [e for e in d.events if e["kind"] == "anomaly"]
    assert [(e["step"], e["message"]) for e in an] == [(1, report)]


def test_optimizer_params_outside_model_and_unwatch(tmp_path):
    model = mlp()
    extra = nn.Parameter(cgrad.ones(3))
    opt = StandInSGD(list(model.parameters()) + [extra], lr=0.1)
    x, y = batch()
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt)
        opt.zero_grad()
        (loss_of(model, x, y) + (extra * extra).sum()).backward()
        opt.step()
        run.unwatch()
        train(model, opt, run, 2, x, y)   # only the losses: log_loss counts steps itself
        run.watch(model, opt)
        train(model, opt, run, 1, x, y)
    r, d = read_all(tmp_path / "a.cgrun")
    assert r.layers[4]["name"] == "param_groups.0.4" and r.layers[4]["shape"] == [3]
    assert d.layer_grad_norm[0, 4] == pytest.approx(2 * math.sqrt(3), rel=1e-6)
    assert d.steps["step"].tolist() == [0, 1, 2, 3]
    assert np.isnan(d.layer_grad_norm[1:3]).all() and not np.isnan(d.steps["loss"][1:]).any()


def test_watch_bad_arguments(tmp_path):
    model = mlp()
    opt = StandInSGD(model.parameters())
    with monitor.Run(tmp_path / "a.cgrun") as run:
        with pytest.raises(TypeError, match="model must be a cgrad.nn.Module, got list"):
            run.watch([1, 2], opt)
        with pytest.raises(TypeError, match="optimizer must be .* got dict"):
            run.watch(model, {"lr": 1})
        with pytest.raises(TypeError, match="has no register_step_pre_hook"):
            class NoHooks:
                param_groups = [{"params": []}]
            run.watch(model, NoHooks())
        with pytest.raises(TypeError, match="scheduler must be"):
            run.watch(model, opt, scheduler=3)
        with pytest.raises(TypeError, match="scaler must be"):
            run.watch(model, opt, scaler="x")
        with pytest.raises(ValueError, match="every must be >= 1, got 0"):
            run.watch(model, opt, every=0)
        with pytest.raises(TypeError, match="every must be an int, got float"):
            run.watch(model, opt, every=2.0)
        run.watch(model, opt)
        with pytest.raises(RuntimeError, match="already watches"):
            run.watch(model, opt)
        with pytest.raises(TypeError, match="log: acc must be a number, got str"):
            run.log(0, acc="high")
        with pytest.raises(ValueError, match="one-element tensor"):
            run.log(0, acc=cgrad.ones(2))
        # watched, log_loss without a step reads its value in C: the same errors
        with pytest.raises(TypeError, match=r"log: loss must be a number, got str \('low'\)"):
            run.log_loss("low")
        with pytest.raises(TypeError, match="log: loss must be a number, got bool"):
            run.log_loss(True)
        with pytest.raises(ValueError, match=r"a tensor of shape \(2,\)"):
            run.log_loss(cgrad.ones(2))
        with pytest.raises(ValueError, match="step must be >= 0, got -1"):
            run.log(-1, acc=1.0)
        with pytest.raises(TypeError, match="step must be an int, got float"):
            run.log_loss(1.0, step=1.5)
        with pytest.raises(ValueError, match="kind must be a non-empty str"):
            run.event("", "x")
        with pytest.raises(TypeError, match="message must be a str, got int"):
            run.event("k", 3)
    with pytest.raises(RuntimeError, match="is closed"):
        run.log(0, a=1.0)
    with pytest.raises(TypeError, match="config must be a dict"):
        monitor.Run(tmp_path / "b.cgrun", config=[1, 2])


def test_hooks_removed_on_close(tmp_path):
    model = mlp()
    opt = StandInSGD(model.parameters())
    x, y = batch()
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt)
        train(model, opt, run, 1, x, y)
    assert not opt._pre and not opt._post
    opt.zero_grad()
    loss_of(model, x, y).backward()
    opt.step()  # training goes on without the run


@pytest.mark.parametrize("k, measured", [(3, [0, 3, 6]), (0, [])])
def test_update_ratio_every(tmp_path, k, measured):
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.1)
    x, y = batch()
    with monitor.Run(tmp_path / "a.cgrun") as run:
        run.watch(model, opt, update_ratio_every=k)
        oracle = Oracle(model, opt)
        train(model, opt, run, 7, x, y)
    r, d = read_all(tmp_path / "a.cgrun")
    assert r.meta["update_ratio_every"] == str(k)
    has = ~np.isnan(d.layer_update_ratio).any(axis=1)
    assert np.flatnonzero(has).tolist() == measured
    assert np.isnan(d.layer_update_ratio[~has]).all()
    for row in measured:
        w0, w1 = oracle.steps[row]["w0"][0], oracle.steps[row]["w1"][0]
        np.testing.assert_allclose(d.layer_update_ratio[row, 0],
                                   np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rtol=1e-4)
    assert not np.isnan(d.layer_weight_norm).any()   # the weight norm is always there
    with pytest.raises(ValueError, match="update_ratio_every must be >= 0, got -1"):
        with monitor.Run(tmp_path / "b.cgrun") as run:
            run.watch(model, opt, update_ratio_every=-1)


def test_cosine_tail_is_not_an_lr_change(tmp_path):
    """A cosine schedule's last steps halve an lr that is already ~0: no event;
    the restart of a warm-restart schedule is one."""
    model = cgrad.nn.Linear(3, 1)
    opt = cgrad.optim.SGD(model.parameters(), lr=1.0)
    sched = cgrad.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=50)
    x = cgrad.ones(4, 3)
    with cgrad.monitor.Run(tmp_path / "cos.cgrun") as run:
        run.watch(model, opt)
        for _ in range(80):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
            sched.step()
    from cgrad.monitor.reader import RunReader

    with RunReader(tmp_path / "cos.cgrun") as r:
        events = [e for e in r.poll().events if e["kind"] == "lr_change"]
    assert [e["step"] for e in events] == [50]
