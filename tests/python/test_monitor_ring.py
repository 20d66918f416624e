"""cgrad.monitor's ring (cgrad/_monitor.pxi): a recorded step is one slot
the writer claims in bulk. What the file holds does not depend on how the
slots travel: a ring of 2 slots that spills to the writer's queue every
other step, a loss that arrives after its row was written, and the loss
held back while it has not arrived."""
import numpy as np

from cgrad import monitor
from cgrad.monitor import watch
from monitor_standin import StandInSGD, batch, loss_of, mlp, train_steps


def read(path):
    with monitor.RunReader(path) as r:
        return r.poll()


def test_a_tiny_ring_spills_and_keeps_every_step(tmp_path, monkeypatch):
    x, y = batch()
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.05)
    with monitor.Run(tmp_path / "big.cgrun") as run:
        run.watch(model, opt)
        want = train_steps(model, opt, run, 9, x, y)
    big = read(tmp_path / "big.cgrun")

    monkeypatch.setattr(watch, "ring_capacity", lambda n_params, n_groups: 2)
    model = mlp()                                     # the same seed: the same run
    opt = StandInSGD(model.parameters(), lr=0.05)
    with monitor.Run(tmp_path / "tiny.cgrun") as run:
        run.watch(model, opt)
        spilled = []
        orig = run._watcher._spill
        run._watcher._spill = lambda: (spilled.append(run._ring.head), orig())
        got = train_steps(model, opt, run, 9, x, y)
    tiny = read(tmp_path / "tiny.cgrun")
    assert spilled, "a ring of 2 slots must have spilled"
    np.testing.assert_allclose(got, want)
    assert tiny.steps["step"].tolist() == list(range(9))
    np.testing.assert_allclose(tiny.steps["loss"], want, rtol=1e-6)
    for f in ("grad_norm", "grad_max", "nonfinite", "weight_norm", "update_ratio"):
        a, b = getattr(tiny, f"layer_{f}"), getattr(big, f"layer_{f}")
        assert not np.isnan(a[:, :2]).any()
        np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)
    for k in ("grad_norm", "grad_norm_clipped", "nonfinite"):
        np.testing.assert_allclose(tiny.steps[k], big.steps[k], rtol=1e-6)


def test_loss_after_its_row_was_written_is_an_update(tmp_path):
    x, y = batch()
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.05)
    path = tmp_path / "late.cgrun"
    with monitor.Run(path) as run, monitor.RunReader(path) as r:
        run.watch(model, opt)
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
        assert run.flush()                    # step 0 is written without its loss
        first = r.poll()
        assert first.steps["step"].tolist() == [0] and np.isnan(first.steps["loss"]).all()
        run.log_loss(loss)                    # arrives late: an UPDATE of steps.loss
        assert run.flush()
        assert not r.poll()                   # a reader that read step 0 keeps NaN
    d = read(path)
    np.testing.assert_allclose(d.steps["loss"], [float(loss.item())], rtol=1e-6)


def test_the_last_row_waits_for_its_loss(tmp_path):
    """The writer's claim leaves the last slot while it has no loss (for
    HOLD_S), so a loss logged right after step() lands in its row."""
    x, y = batch()
    model = mlp()
    opt = StandInSGD(model.parameters(), lr=0.05)
    with monitor.Run(tmp_path / "hold.cgrun") as run:
        run.watch(model, opt)
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
        assert run._watcher._claim(force=False) is None      # held: no loss yet
        run.log_loss(loss)
        chunk = run._watcher._claim(force=False)
        assert chunk is not None and chunk["i"][:, 0].tolist() == [0]
        np.testing.assert_allclose(chunk["f"][:, 1], [float(loss.item())], rtol=1e-6)
        run._writer.submit_chunk(chunk)
    d = read(tmp_path / "hold.cgrun")
    assert d.steps["step"].tolist() == [0]
    np.testing.assert_allclose(d.steps["loss"], [float(loss.item())], rtol=1e-6)
    assert not np.isnan(d.layer_grad_norm).any()


def test_a_report_without_the_fields_records_what_was_measured(tmp_path):
    """An optimizer whose last_report carries only its step (or none at
    all): the ring records the measured global norm, NULL clip fields."""
    x, y = batch()

    class Bare:
        def __init__(self, step):
            self.step = step

    class Sparse(StandInSGD):
        tag = True

        @property
        def last_report(self):  # what the hooks read: a bare report, or none
            rep = self._rep
            return Bare(rep.step) if rep is not None and self.tag else None

        @last_report.setter
        def last_report(self, rep):
            self._rep = rep

    for tag in (True, False):
        model = mlp()
        opt = Sparse(model.parameters(), lr=0.05)
        opt.tag = tag
        path = tmp_path / f"bare{tag}.cgrun"
        norms = []
        with monitor.Run(path) as run:
            run.watch(model, opt)
            for _ in range(3):
                opt.zero_grad()
                loss = loss_of(model, x, y)
                loss.backward()
                norms.append(np.sqrt(sum(float((p.grad.numpy().astype(np.float64) ** 2).sum())
                                         for p in model.parameters())))
                opt.step()
                run.log_loss(loss)
        d = read(path)
        assert d.steps["step"].tolist() == [0, 1, 2]
        np.testing.assert_allclose(d.steps["grad_norm"], norms, rtol=1e-6)
        np.testing.assert_allclose(d.steps["grad_norm_clipped"], norms, rtol=1e-6)
        assert np.isnan(d.steps["clip_max_norm"]).all() and np.isnan(d.steps["loss_scale"]).all()
        assert (d.steps["clipped"] == 0).all() and (d.steps["skipped"] == 0).all()
