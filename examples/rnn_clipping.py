"""Gradient clipping on an RNN: the adding problem over long sequences.

    python examples/rnn_clipping.py [--quick]

The adding problem (Hochreiter & Schmidhuber 1997): each of T = 50 steps
carries a random value in [0, 1] and a marker; exactly two steps are
marked, and the target is the sum of their values, so the network has to
carry information across the whole sequence. Predicting the mean (1.0)
scores an MSE of 1/6 = 0.167. The model is an IRNN (Le et al. 2015): a
ReLU RNN with identity-initialised recurrent weights, which remembers well
but whose gradients explode.

The same model, batches and Adam (lr 0.01) are trained twice. In both runs
the first steps make the recurrence expansive and the gradient norm jumps
to tens of thousands. Without clipping those gradients go into Adam's
second-moment estimate, which forgets them only by a factor beta2 = 0.999
per step: the effective step size collapses and the network stalls at the
trivial answer. With clip_grad_norm_(max_norm=1.0) the same run learns the
task. Every step's StepReport records the clip (norm before and after, the
coefficient); the first clip events and a summary are printed.
"""
import argparse
import math
import time

import numpy as np

import cgrad
from cgrad import nn
from cgrad.nn import functional as F
from cgrad.nn.utils import clip_grad_norm_

SEED = 0
T, HIDDEN, BATCH = 50, 32, 32


def adding_batch(rng, n):
    """x: (T, n, 2) values and markers; y: (n, 1) the sum of the marked values."""
    values = rng.uniform(0, 1, (T, n))
    markers = np.zeros((T, n))
    cols = np.arange(n)
    markers[rng.integers(0, T // 2, n), cols] = 1  # one mark in each half
    markers[rng.integers(T // 2, T, n), cols] = 1
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values * markers).sum(axis=0)[:, None].astype(np.float32)
    return cgrad.from_numpy(x), cgrad.from_numpy(y)


class IRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(2, HIDDEN, nonlinearity="relu")
        self.head = nn.Linear(HIDDEN, 1)
        with cgrad.no_grad():
            self.rnn.weight_hh_l0.copy_(cgrad.from_numpy(np.eye(HIDDEN, dtype=np.float32)))
            self.rnn.bias_hh_l0.zero_()
            self.rnn.bias_ih_l0.zero_()

    def forward(self, x):
        _, h = self.rnn(x)
        return self.head(h[0])


def train(clip, steps, x_test, y_test):
    cgrad.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = IRNN()
    # report_grad_norm: the report measures the norm even when nothing clips
    opt = cgrad.optim.Adam(model.parameters(), lr=0.01, report_grad_norm=True)
    reports = []
    for _ in range(steps):
        x, y = adding_batch(rng, BATCH)
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        if clip:
            clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
        reports.append(opt.last_report)
    with cgrad.no_grad():
        test_mse = F.mse_loss(model(x_test), y_test).item()
    return test_mse, reports


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 steps instead of 2000 (tests)")
    steps = 1000 if parser.parse_args().quick else 2000
    start = time.perf_counter()
    x_test, y_test = adding_batch(np.random.default_rng(SEED + 1), 500)
    print(f"adding problem, T={T}; predicting the mean scores test MSE {1 / 6:.4f}")
    results = {}
    for clip in (False, True):
        mse, reports = train(clip, steps, x_test, y_test)
        name = "with clipping" if clip else "without clipping"
        norms = [r.grad_norm_before_clip for r in reports]
        big = sum(1 for v in norms if not math.isfinite(v) or v > 10)
        print(f"{name}: grad norm max {max(norms):.3g}, {big} of {steps} steps above 10")
        if clip:
            events = [r for r in reports if r.clipped]
            for r in events[:4]:
                print(f"  clip event at step {r.step}: norm {r.grad_norm_before_clip:.4g} -> "
                      f"{r.grad_norm_after_clip:.4g} (coef {r.clip_coef:.3g})")
            print(f"  {len(events)} of {steps} steps clipped (max_norm {events[0].max_norm})")
        results[name] = mse
    for name, mse in results.items():
        print(f"{name:17s} test MSE {mse:.4f}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
