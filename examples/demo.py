"""make demo: train on real data with customised backprop, and watch it.

    python examples/demo.py [--epochs 30] [--no-monitor]

scikit-learn's bundled 8x8 digits (no download), an MLP 64 -> 128 -> 64 -> 10
trained with
- a custom loss: label-smoothed cross-entropy as a cgrad.autograd.Function
  whose backward is derived by hand, (softmax(z) - smoothed targets) / N,
  and validated against float64 finite differences the first time it runs
  (check_mode = True);
- AdamW, a warmup + cosine learning-rate schedule (WarmupCosineLR) and
  global-norm gradient clipping (clip_grad_norm_), tight enough that the
  early, large-gradient steps are clipped;
- a gradient policy: the first layer's bias is frozen (cgrad.policy),
  explained at start-up.

Every optimizer step is recorded by cgrad.monitor to runs/demo.cgrun. With
a display the monitor (cgrad-monitor) opens live beside the training; without
one, runs/demo.png is rendered headless (cgrad-monitor --snapshot) and its
path printed.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import cgrad
from cgrad import nn
from cgrad.nn.utils import clip_grad_norm_
from cgrad.optim.lr_scheduler import WarmupCosineLR
from cgrad.policy import GradientPolicies
from cgrad.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_digits import load_data  # noqa: E402  (the standardised split)

SEED = 0
SMOOTHING = 0.1
RUNS = Path(__file__).resolve().parent.parent / "runs"


class SmoothedCrossEntropy(cgrad.autograd.Function):
    """mean over the batch of -sum_k q_k log softmax(z)_k, with
    q = (1 - eps) one_hot(y) + eps / K. Backward by hand:
    d loss / d z = (softmax(z) - q) / N."""

    check_mode = True  # gradchecked against float64 finite differences on first use

    @staticmethod
    def forward(ctx, logits, target, eps):
        n, k = logits.shape
        q = np.full((n, k), eps / k)
        q[np.arange(n), target.numpy()] += 1.0 - eps
        q = cgrad.tensor(q, dtype=logits.dtype)
        log_p = logits.log_softmax(1)
        ctx.save_for_backward(log_p, q)
        return -(q * log_p).sum() / n

    @staticmethod
    def backward(ctx, g):
        log_p, q = ctx.saved_tensors
        return g * (log_p.exp() - q) / log_p.shape[0], None, None


def smoothed_cross_entropy(logits, target, eps=SMOOTHING):
    return SmoothedCrossEntropy.apply(logits, target, eps)


def accuracy(model, x, y):
    model.eval()
    with cgrad.no_grad():
        predicted = model(cgrad.from_numpy(x)).argmax(dim=1).numpy()
    model.train()
    return float((predicted == y).mean())


def have_display():
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def monitor_command(*args):
    return [sys.executable, "-m", "cgrad.viz.app", *args]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--no-monitor", action="store_true", help="record only; no window, no snapshot")
    parser.add_argument("--runs", type=Path, default=RUNS, help="directory for demo.cgrun and demo.png")
    args = parser.parse_args(argv)

    cgrad.manual_seed(SEED)
    x_train, x_test, y_train, y_test = load_data()
    loader = DataLoader((x_train, y_train), batch_size=64, shuffle=True, seed=SEED)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = cgrad.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    sched = WarmupCosineLR(opt, warmup_steps=2 * len(loader), total_steps=args.epochs * len(loader),
                           eta_min=3e-5)
    policies = GradientPolicies(model).freeze("0.bias")
    policies.attach(opt)
    print("gradient policy on", "\n".join(policies.explain(model[0].bias)))

    args.runs.mkdir(parents=True, exist_ok=True)
    path = args.runs / "demo.cgrun"
    viewer = None
    start = time.perf_counter()
    with cgrad.monitor.Run(path, config={"model": "MLP 64-128-64-10", "optimizer": "AdamW",
                                         "schedule": "warmup+cosine", "max_norm": 0.5,
                                         "loss": f"smoothed CE (eps={SMOOTHING})"},
                           overwrite=True) as run:
        run.watch(model, opt, scheduler=sched)
        if have_display() and not args.no_monitor:
            viewer = subprocess.Popen(monitor_command(str(path)))
        first = True
        for epoch in range(1, args.epochs + 1):
            for xb, yb in loader:
                opt.zero_grad()
                loss = smoothed_cross_entropy(model(xb), yb)
                if first:  # check_mode just ran gradcheck on the hand-written backward
                    print("custom loss: SmoothedCrossEntropy.backward agrees with float64 finite differences")
                    first = False
                loss.backward()
                clip_grad_norm_(model.parameters(), max_norm=0.5)
                run.log_loss(loss)
                opt.step()
                sched.step()
            if epoch % 5 == 0 or epoch == 1:
                rep = opt.last_report
                print(f"epoch {epoch:3d}  loss {loss.item():.4f}  lr {rep.lr[0]:.2e}  "
                      f"grad norm {rep.grad_norm_before_clip:.3f}{' (clipped)' if rep.clipped else ''}  "
                      f"test accuracy {accuracy(model, x_test, y_test):.4f}")
    print(f"trained in {time.perf_counter() - start:.1f} s; test accuracy "
          f"{accuracy(model, x_test, y_test):.4f}; recorded to {path}")
    if args.no_monitor:
        return 0
    if viewer is not None:
        print("the monitor window stays open; close it to finish")
        viewer.wait()
        return 0
    png = args.runs / "demo.png"
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    done = subprocess.run(monitor_command(str(path), "--snapshot", str(png), "--size", "1600x1000"),
                          env=env)
    if done.returncode != 0:
        print("could not render the snapshot (see the message above)", file=sys.stderr)
        return done.returncode
    print(f"no display: the monitor's view of the run is in {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
