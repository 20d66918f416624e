"""cgrad vs PyTorch (CPU) vs a hand-written NumPy reference, in one process.

    python bench/bench_core.py            # full run (~1-2 minutes)
    python bench/bench_core.py --quick    # a few seconds, for smoke tests

Measures
  1. per-op overhead: a chain of 10,000 elementwise ops (alternating
     `y * c` and `y + d`) on a one-element float32 tensor, forward and
     backward, in microseconds per op;
  2. training steps/s of an MLP 784-512-256-10 (ReLU, cross-entropy,
     batch 128, float32, Adam: cgrad.optim.Adam, torch.optim.Adam, and
     PyTorch's Adam formula written in NumPy);
  3. the same for a small MLP 64-64-64-10 at batch 32 (overhead-bound);
  4. a small CNN (conv 1->8 3x3, ReLU, max-pool 2, conv 8->16 3x3, ReLU,
     max-pool 2, linear 400->10) on 32 28x28 images, Adam: cgrad.nn against
     torch.nn with the same weights (no NumPy column).

Every number is the median of several timed repetitions after a warm-up.
All three implementations start from the same weights and data; their
first-step losses and gradients are compared before anything is timed.
PyTorch runs with torch.set_num_threads(2); the column is left out when it
is not installed. The Markdown table goes to stdout and to
bench/results/latest.md.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import cgrad
from cgrad.nn import functional as F

try:
    import torch
    torch.set_num_threads(2)
except ImportError:
    torch = None

RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"
CHAIN_MUL, CHAIN_ADD = 1.0001, 0.0001
LR = 1e-3
BETAS, EPS = (0.9, 0.999), 1e-8


# ------------------------------------------------------------ shared data

def make_problem(sizes, batch, seed=0):
    """He-initialised float32 weights (in, out) and biases, inputs, labels."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append((rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32))
        params.append(np.zeros(fan_out, dtype=np.float32))
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return params, x, y


# ------------------------------------------------------------ cgrad

class CgradImpl:
    name = "cgrad"

    def chain(self, n):
        x = cgrad.tensor(1.0, requires_grad=True)
        start = time.perf_counter()
        y = x
        for _ in range(n // 2):
            y = y * CHAIN_MUL
            y = y + CHAIN_ADD
        mid = time.perf_counter()
        y.backward()
        end = time.perf_counter()
        return mid - start, end - mid, x.grad.item()

    def mlp(self, params, x, y):
        params = [cgrad.tensor(p, requires_grad=True) for p in params]
        x, y = cgrad.from_numpy(x), cgrad.from_numpy(y)

        def loss_fn():
            h = x
            for i in range(0, len(params) - 2, 2):
                h = F.relu(h @ params[i] + params[i + 1])
            return F.cross_entropy(h @ params[-2] + params[-1], y)

        opt = cgrad.optim.Adam(params, lr=LR, betas=BETAS, eps=EPS)

        def step():
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss

        def first_grads():
            loss = loss_fn()
            loss.backward()
            grads = [p.grad.numpy().copy() for p in params]
            for p in params:
                p.grad = None
            return loss.item(), grads

        return step, first_grads


# ------------------------------------------------------------ PyTorch

class TorchImpl:
    name = "torch"

    def chain(self, n):
        x = torch.tensor(1.0, requires_grad=True)
        start = time.perf_counter()
        y = x
        for _ in range(n // 2):
            y = y * CHAIN_MUL
            y = y + CHAIN_ADD
        mid = time.perf_counter()
        y.backward()
        end = time.perf_counter()
        return mid - start, end - mid, x.grad.item()

    def mlp(self, params, x, y):
        params = [torch.tensor(p, requires_grad=True) for p in params]
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        tF = torch.nn.functional

        def loss_fn():
            h = x
            for i in range(0, len(params) - 2, 2):
                h = tF.relu(h @ params[i] + params[i + 1])
            return tF.cross_entropy(h @ params[-2] + params[-1], y)

        opt = torch.optim.Adam(params, lr=LR, betas=BETAS, eps=EPS)

        def step():
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss

        def first_grads():
            loss = loss_fn()
            loss.backward()
            grads = [p.grad.numpy().copy() for p in params]
            for p in params:
                p.grad = None
            return loss.item(), grads

        return step, first_grads


# ------------------------------------------------------------ NumPy

class NumpyImpl:
    """Hand-written forward/backward: what the engines' bookkeeping is measured against."""
    name = "numpy"

    def chain(self, n):
        x = np.ones(1, dtype=np.float32)
        start = time.perf_counter()
        y, tape = x, []
        for _ in range(n // 2):
            y = y * np.float32(CHAIN_MUL)
            tape.append(lambda g: g * np.float32(CHAIN_MUL))
            y = y + np.float32(CHAIN_ADD)
            tape.append(lambda g: g)
        mid = time.perf_counter()
        g = np.ones_like(y)
        for backward in reversed(tape):
            g = backward(g)
        end = time.perf_counter()
        return mid - start, end - mid, float(g[0])

    def mlp(self, params, x, y):
        params = [p.copy() for p in params]
        batch = x.shape[0]
        rows = np.arange(batch)

        def loss_and_grads():
            acts = [x]
            for i in range(0, len(params) - 2, 2):
                acts.append(np.maximum(acts[-1] @ params[i] + params[i + 1], 0))
            logits = acts[-1] @ params[-2] + params[-1]
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            loss = -log_probs[rows, y].mean()
            grad = np.exp(log_probs)
            grad[rows, y] -= 1
            grad /= batch
            grads = [None] * len(params)
            for i in range(len(params) - 2, -1, -2):
                grads[i] = acts[i // 2].T @ grad
                grads[i + 1] = grad.sum(axis=0)
                if i:
                    grad = (grad @ params[i].T) * (acts[i // 2] > 0)
            return loss, grads

        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        t = [0]
        b1, b2 = np.float32(BETAS[0]), np.float32(BETAS[1])

        def step():  # PyTorch's Adam (foreach=False), in place
            loss, grads = loss_and_grads()
            t[0] += 1
            bc1 = 1 - BETAS[0] ** t[0]
            bc2_sqrt = np.float32((1 - BETAS[1] ** t[0]) ** 0.5)
            for p, g, mi, vi in zip(params, grads, m, v):
                mi *= b1
                mi += (1 - b1) * g
                vi *= b2
                vi += (1 - b2) * g * g
                denom = np.sqrt(vi) / bc2_sqrt + np.float32(EPS)
                p -= np.float32(LR / bc1) * mi / denom
            return loss

        def first_grads():
            loss, grads = loss_and_grads()
            return float(loss), grads

        return step, first_grads


# ------------------------------------------------------------ small CNN

def make_cnn_problem(batch=32, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(8, 1, 3, 3), (8,), (16, 8, 3, 3), (16,), (10, 400), (10,)]
    fans = [9, 9, 72, 72, 400, 400]
    params = [(rng.uniform(-1, 1, s) / np.sqrt(f)).astype(np.float32) for s, f in zip(shapes, fans)]
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    return params, x, y


def cnn_step_fn(lib, params, x, y):
    """One Adam step of the small CNN written with lib's functional API."""
    if lib == "cgrad":
        ps = [cgrad.tensor(p, requires_grad=True) for p in params]
        xs, ys, fn, opt_cls = cgrad.from_numpy(x), cgrad.from_numpy(y), F, cgrad.optim.Adam
    else:
        ps = [torch.tensor(p, requires_grad=True) for p in params]
        xs, ys, fn, opt_cls = torch.from_numpy(x), torch.from_numpy(y), torch.nn.functional, torch.optim.Adam
    opt = opt_cls(ps, lr=LR, betas=BETAS, eps=EPS)

    def step():
        h = fn.max_pool2d(fn.relu(fn.conv2d(xs, ps[0], ps[1])), 2)
        h = fn.max_pool2d(fn.relu(fn.conv2d(h, ps[2], ps[3])), 2)
        loss = fn.cross_entropy(fn.linear(h.reshape(h.shape[0], -1), ps[4], ps[5]), ys)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    return step


# ------------------------------------------------------------ timing

# Repetitions are interleaved across implementations (cgrad, torch, numpy,
# cgrad, ...) so that a burst of load from elsewhere on the machine hits all
# of them alike instead of one whole column.

def median_times(fns, reps, rep_seconds, warmup=3):
    """{name: median seconds per call} for {name: fn}.

    Repetitions are interleaved across implementations. Each one calls the
    function about rep_seconds' worth of times (calibrated on the warm-up
    calls), which bounds the run time whatever the speed of the machine.
    """
    calls = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        for _ in range(warmup):
            fn()
        per_call = (time.perf_counter() - start) / warmup
        calls[name] = max(1, min(10_000, round(rep_seconds / max(per_call, 1e-9))))
    samples = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            # Untimed lead-in: the previous library's BLAS/OpenMP threads keep
            # spinning for a while after their last call (2 cores are shared).
            for _ in range(max(1, calls[name] // 3)):
                fn()
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def bench_chain(impls, n, reps):
    """{name: (forward us/op, backward us/op, gradient)}."""
    for impl in impls:
        impl.chain(n)  # warm-up
    runs = {impl.name: [] for impl in impls}
    for _ in range(reps):
        for impl in impls:
            runs[impl.name].append(impl.chain(n))
    return {name: (statistics.median(r[0] for r in rs) / n * 1e6,
                   statistics.median(r[1] for r in rs) / n * 1e6, rs[-1][2])
            for name, rs in runs.items()}


def check_same_problem(impls, params, x, y):
    """First-step loss and gradients must agree, or the timings compare different work."""
    ref_loss, ref_grads = NumpyImpl().mlp(params, x, y)[1]()
    problems = []
    for impl in impls:
        loss, grads = impl.mlp(params, x, y)[1]()
        if not np.isclose(loss, ref_loss, rtol=1e-4):
            problems.append(f"{impl.name}: loss {loss:.6g} vs numpy {ref_loss:.6g}")
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            if not np.allclose(g, r, rtol=1e-3, atol=1e-5):
                problems.append(f"{impl.name}: grad of param {i} differs by "
                                f"{np.abs(g - r).max():.3g} from numpy")
    # Then a few Adam steps: the trajectories must stay together too.
    steps = 5
    ref_step = NumpyImpl().mlp(params, x, y)[0]
    ref_losses = [float(ref_step()) for _ in range(steps)]
    for impl in impls:
        step = impl.mlp(params, x, y)[0]
        losses = [step().item() for _ in range(steps)]
        if not np.allclose(losses, ref_losses, rtol=1e-3):
            problems.append(f"{impl.name}: losses over {steps} Adam steps {losses} vs numpy {ref_losses}")
    return problems


def run(quick):
    impls = [CgradImpl()] + ([TorchImpl()] if torch is not None else []) + [NumpyImpl()]
    reps = 3 if quick else 11
    chain_n = 2_000 if quick else 10_000
    rows, notes = [], []

    chain = bench_chain(impls, chain_n, reps)
    expected_grad = CHAIN_MUL ** (chain_n // 2)
    for name, (_, _, grad) in chain.items():
        if not np.isclose(grad, expected_grad, rtol=1e-3):
            notes.append(f"op chain: {name} gradient {grad:.6g}, expected {expected_grad:.6g}")
    rows.append((f"op chain forward ({chain_n:,} ops, 1 element)", "us/op",
                 {k: v[0] for k, v in chain.items()}, False))
    rows.append((f"op chain backward ({chain_n:,} ops, 1 element)", "us/op",
                 {k: v[1] for k, v in chain.items()}, False))

    rep_seconds = 0.03 if quick else 0.3
    for sizes, batch in [((784, 512, 256, 10), 128), ((64, 64, 64, 10), 32)]:
        params, x, y = make_problem(sizes, batch)
        notes += check_same_problem([i for i in impls if i.name != "numpy"], params, x, y)
        step_fns = {impl.name: impl.mlp(params, x, y)[0] for impl in impls}
        times = median_times(step_fns, reps, rep_seconds)
        steps = {name: 1.0 / t for name, t in times.items()}
        label = f"MLP {'-'.join(map(str, sizes))}, batch {batch}, Adam step"
        rows.append((label, "steps/s", steps, True))

    params, x, y = make_cnn_problem()
    cnn = {"cgrad": cnn_step_fn("cgrad", params, x, y)}
    if torch is not None:
        cnn["torch"] = cnn_step_fn("torch", params, x, y)
        first = {k: [fn().item() for _ in range(3)] for k, fn in
                 (("cgrad", cnn_step_fn("cgrad", params, x, y)), ("torch", cnn_step_fn("torch", params, x, y)))}
        if not np.allclose(first["cgrad"], first["torch"], rtol=1e-4):
            notes.append(f"small CNN: losses of 3 Adam steps differ: {first}")
    times = median_times(cnn, reps, rep_seconds)
    rows.append(("small CNN (2 conv + linear), batch 32, 28x28, Adam step", "steps/s",
                 {name: 1.0 / t for name, t in times.items()}, True))
    return rows, notes, impls


def format_table(rows, notes, impls):
    names = [impl.name for impl in impls]
    others = [n for n in ("torch", "numpy") if n in names]
    header = ["benchmark", "unit"] + names + [f"cgrad/{n} (time)" for n in others]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, unit, result, higher_is_better in rows:
        cells = [label, unit] + ["-" if n not in result else
                                 f"{result[n]:.2f}" if result[n] < 100 else f"{result[n]:.0f}" for n in names]
        for other in others:
            if other not in result:
                cells.append("-")
                continue
            # Ratio of times: > 1 means cgrad is slower.
            ratio = result[other] / result["cgrad"] if higher_is_better else result["cgrad"] / result[other]
            cells.append(f"{ratio:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    env = [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- python {platform.python_version()}, numpy {np.__version__}, cgrad {cgrad.__version__}"
        f" (gemm: {cgrad.gemm_backend() if hasattr(cgrad, 'gemm_backend') else '?'})"
        + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ", torch not installed"),
        f"- {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "- numbers are medians of repeated runs after a warm-up; ratio columns divide "
        "cgrad's time by the other's (> 1: cgrad is slower)",
    ]
    checks = [f"- CHECK FAILED: {n}" for n in notes] or [
        "- checked before timing: first-step losses and gradients, and the losses of 5 Adam "
        "steps, agree across implementations"]
    return "\n".join(["# cgrad benchmark", ""] + lines + [""] + env + checks) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke tests")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown file to write")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows, notes, impls = run(args.quick)
    report = format_table(rows, notes, impls)
    report += f"- total bench time: {time.perf_counter() - start:.0f} s\n"
    print(report, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    return 1 if notes else 0


if __name__ == "__main__":
    sys.exit(main())
