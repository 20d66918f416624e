"""cgrad.monitor on the real cgrad.optim: clip numbers from clip_grad_norm_,
GradScaler skips (which run no step hooks) and loss-scale changes, lr
schedules, and Adam's update ratios against an independent copy."""
import math

import numpy as np
import pytest

from cgrad import monitor

optim = pytest.importorskip("cgrad.optim")
if not hasattr(optim, "Adam"):
    pytest.skip("cgrad.optim has no optimizers in this build", allow_module_level=True)
from cgrad.amp import GradScaler  # noqa: E402
from cgrad.nn.utils import clip_grad_norm_  # noqa: E402
from monitor_standin import batch, loss_of, mlp  # noqa: E402
from test_monitor_record import Oracle  # noqa: E402


def test_adam_clip_scaler_schedule(tmp_path):
    model = mlp((4, 8, 8, 3))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    scaler = GradScaler(init_scale=1024.0)
    sched = optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)
    x, y = batch()
    totals, losses, lrs = [], [], []
    path = tmp_path / "a.cgrun"
    with monitor.Run(path) as run:
        run.watch(model, opt, sched, scaler)
        oracle = Oracle(model, opt)
        for i in range(8):
            opt.zero_grad()
            loss = loss_of(model, x, y)
            losses.append(float(loss.item()))
            scaler.scale(loss).backward()
            if i == 4:
                model[0].weight.grad.numpy()[0, 0] = np.inf
            scaler.unscale_(opt)
            totals.append(float(clip_grad_norm_(model.parameters(), 0.1)))
            lrs.append(opt.param_groups[0]["lr"])
            scaler.step(opt)
            scaler.update()
            sched.step()
            run.log_loss(loss)
    with monitor.RunReader(path) as r:
        d = r.poll()
    s = d.steps
    assert s["step"].tolist() == list(range(8))
    np.testing.assert_allclose(s["loss"], losses, rtol=1e-6)
    np.testing.assert_allclose(d.lr[:, 0], lrs)
    ok = [i for i in range(8) if i != 4]
    np.testing.assert_allclose(s["grad_norm"][ok], np.array(totals)[ok], rtol=1e-6)  # returned as float32
    assert s["grad_norm"][4] == math.inf
    assert (s["clip_max_norm"] == 0.1).all() and (s["clipped"][ok] == 1).all()
    np.testing.assert_allclose(s["clip_coef"][ok], 0.1 / (np.array(totals)[ok] + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(s["grad_norm_clipped"][ok], 0.1, rtol=1e-4)
    # the skipped step: recorded from the report hook, with its bad gradient
    assert s["skipped"].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert "non-finite" in s["skip_reason"][4] and s["nonfinite"][4] == 1
    assert d.layer_nonfinite[4, 0] == 1 and (d.layer_update_ratio[4] == 0).all()
    assert s["loss_scale"].tolist() == [1024.0] * 5 + [512.0] * 3
    kinds = [(e["step"], e["kind"]) for e in d.events]
    assert kinds == [(3, "lr_change"), (4, "nonfinite"), (4, "nonfinite"), (4, "skipped"),
                     (5, "loss_scale"), (6, "lr_change")]
    # Adam's update ratio: the oracle saw only the steps that ran
    for ref in oracle.steps:
        row = ref["step"] if ref["step"] < 4 else ref["step"] + 1
        for i in range(len(ref["w0"])):
            w0, w1 = ref["w0"][i], ref["w1"][i]
            np.testing.assert_allclose(d.layer_update_ratio[row, i],
                                       np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rtol=1e-4)
            np.testing.assert_allclose(d.layer_grad_norm[row, i], np.linalg.norm(ref["grads"][i]),
                                       rtol=1e-5)
    assert r.meta["optimizer"] == "cgrad.optim.adam.Adam"
    assert r.meta["scheduler"].endswith("StepLR") and r.meta["scaler"].endswith("GradScaler")


def test_sgd_closure_loss_and_report_numbering(tmp_path):
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = batch()
    path = tmp_path / "c.cgrun"
    for _ in range(2):   # steps taken before watch() keep the optimizer's numbering
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    expected = []
    with monitor.Run(path) as run:
        run.watch(model, opt, every=2)
        for _ in range(4):
            def closure():
                opt.zero_grad()
                loss = loss_of(model, x, y)
                loss.backward()
                return loss
            expected.append(float(opt.step(closure).item()))
    with monitor.RunReader(path) as r:
        d = r.poll()
    assert d.steps["step"].tolist() == [2, 4]
    np.testing.assert_allclose(d.steps["loss"], [expected[0], expected[2]], rtol=1e-6)


def test_a_skip_right_after_a_step_that_raised_is_recorded(tmp_path):
    """A step whose body raised ran the ring's pre-hook but not its
    post-hook; a GradScaler skip that follows is still a recorded step of
    its own, and the step after it is numbered on."""
    model = mlp((4, 8, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = GradScaler(init_scale=256.0)
    x, y = batch()

    def boom(o, args, kwargs):
        raise RuntimeError("boom")

    path = tmp_path / "r.cgrun"
    with monitor.Run(path) as run:
        run.watch(model, opt, scaler=scaler)
        for i in range(3):
            opt.zero_grad()
            scaler.scale(loss_of(model, x, y)).backward()
            if i == 1:
                handle = opt.register_step_pre_hook(boom)  # after the ring's: the step raises
                with pytest.raises(RuntimeError, match="boom"):
                    opt.step()
                handle.remove()
                model[0].weight.grad.numpy()[0, 0] = np.inf
            scaler.step(opt)
            scaler.update()
    with monitor.RunReader(path) as r:
        d = r.poll()
    assert d.steps["step"].tolist() == [0, 1, 2]
    assert d.steps["skipped"].tolist() == [0, 1, 0]
    assert d.layer_nonfinite[1, 0] == 1
