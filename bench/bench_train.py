"""Optimizer step and gradient clipping: cgrad vs PyTorch vs the memory bound.

    python bench/bench_train.py            # full run (~30 s)
    python bench/bench_train.py --quick    # a few seconds, for smoke tests

Measures
  1. one Adam step on a 10M-element float32 parameter: cgrad's fused C loop,
     torch.optim.Adam with foreach=False, with its default, and fused=True;
     against the memory-bandwidth bound = bytes the update must touch
     (read p, g, m, v; write p, m, v: 28 bytes per element) / copy
     bandwidth measured with NumPy (np.copyto of a 400 MB array);
  2. clip_grad_norm_ over 100 parameters of 10,000 float32 elements
     (total norm and in-place scaling), cgrad vs torch (default foreach).

Median of several repetitions after a warm-up. Both libraries start from the
same numbers, and their results are compared before timing. Not a test:
nothing here asserts a speed.
"""
import argparse
import statistics
import time

import numpy as np

import cgrad
import cgrad.optim
from cgrad.nn.utils import clip_grad_norm_

try:
    import torch
    torch.set_num_threads(2)
except ImportError:
    torch = None


def median_time(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(reps):
    """Bytes per second of a large np.copyto (read + write counted)."""
    src = np.ones(100_000_000 // 4 * 4, dtype=np.float32)
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), reps)
    return 2 * src.nbytes / t


def bench_adam(n, reps):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n, dtype=np.float32)
    g0 = rng.standard_normal(n, dtype=np.float32)
    rows = []
    cp = cgrad.tensor(p0, requires_grad=True)
    cp.grad = cgrad.tensor(g0)
    copt = cgrad.optim.Adam([cp], lr=1e-3)
    rows.append(("cgrad Adam (fused C loop)", median_time(copt.step, reps)))
    if torch is not None:
        for label, kw in (("torch Adam foreach=False", dict(foreach=False)),
                          ("torch Adam default", dict()),
                          ("torch Adam fused=True", dict(fused=True))):
            tp = torch.tensor(p0, requires_grad=True)
            tp.grad = torch.tensor(g0)
            try:
                topt = torch.optim.Adam([tp], lr=1e-3, **kw)
                rows.append((label, median_time(topt.step, reps)))
            except (RuntimeError, ValueError) as e:  # fused not built for this CPU
                rows.append((label + f" (unavailable: {e})", float("nan")))
        # Same number of steps on both sides: compare the parameters.
        tp = torch.tensor(p0, requires_grad=True)
        tp.grad = torch.tensor(g0)
        topt = torch.optim.Adam([tp], lr=1e-3, foreach=False)
        cq = cgrad.tensor(p0, requires_grad=True)
        cq.grad = cgrad.tensor(g0)
        qopt = cgrad.optim.Adam([cq], lr=1e-3)
        for _ in range(3):
            topt.step()
            qopt.step()
        err = float(np.max(np.abs(cq.detach().numpy() - tp.detach().numpy())))
        print(f"adam check: max |cgrad - torch| after 3 steps = {err:.3g}")
    return rows


def bench_clip(reps):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(10_000, dtype=np.float32) for _ in range(100)]
    cps = [cgrad.zeros(10_000, requires_grad=True) for _ in grads]
    for p, g in zip(cps, grads):
        p.grad = cgrad.tensor(g)
    rows = [("cgrad clip_grad_norm_ (100 x 10k)",
             median_time(lambda: clip_grad_norm_(cps, 1e9), reps))]
    cn = float(clip_grad_norm_(cps, 1e9).item())
    if torch is not None:
        tps = [torch.zeros(10_000, requires_grad=True) for _ in grads]
        for p, g in zip(tps, grads):
            p.grad = torch.tensor(g)
        rows.append(("torch clip_grad_norm_ (100 x 10k)",
                     median_time(lambda: torch.nn.utils.clip_grad_norm_(tps, 1e9), reps)))
        tn = float(torch.nn.utils.clip_grad_norm_(tps, 1e9))
        print(f"clip check: total norm cgrad {cn:.7g}, torch {tn:.7g}")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 1_000_000 if args.quick else 10_000_000
    reps = 3 if args.quick else 10
    bw = copy_bandwidth(reps)
    bound = 28 * n / bw
    adam = bench_adam(n, reps)
    clip = bench_clip(reps * 5)
    print()
    print(f"| Adam step, {n / 1e6:g}M float32 | ms | x bandwidth bound |")
    print("|---|---:|---:|")
    print(f"| memory bound (28 B/elem at {bw / 1e9:.1f} GB/s copy) | {bound * 1e3:.2f} | 1.00 |")
    for label, t in adam:
        print(f"| {label} | {t * 1e3:.2f} | {t / bound:.2f} |")
    print()
    print("| clip_grad_norm_ | ms |")
    print("|---|---:|")
    for label, t in clip:
        print(f"| {label} | {t * 1e3:.3f} |")


if __name__ == "__main__":
    main()
