"""A chain of 1,000 applications of a Python custom autograd Function on a
16-element float32 tensor: forward and backward microseconds per call,
cgrad.autograd.Function against torch.autograd.Function in one process.

    python bench/bench_custom.py
"""
import statistics
import time

import cgrad
from cgrad.autograd import Function

try:
    import torch
    torch.set_num_threads(2)
except ImportError:
    torch = None

CHAIN = 1000
SCALE = 1.0001


def make_functions():
    class CgScale(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * SCALE

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * SCALE

    fns = {"cgrad": (cgrad, CgScale)}
    if torch is not None:
        class TorchScale(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * SCALE

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return g * SCALE

        fns["torch"] = (torch, TorchScale)
    return fns


def run_once(lib, fn):
    x = lib.ones(16, requires_grad=True)
    t0 = time.perf_counter()
    y = x
    for _ in range(CHAIN):
        y = fn.apply(y)
    t1 = time.perf_counter()
    y.sum().backward()
    t2 = time.perf_counter()
    expected = SCALE ** CHAIN
    assert abs(x.grad[0].item() - expected) < 1e-3 * expected, (lib.__name__, x.grad[0].item())
    return (t1 - t0) / CHAIN * 1e6, (t2 - t1) / CHAIN * 1e6


def main(repeats=7):
    fns = make_functions()
    times = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved so load changes hit both sides
        for name, (lib, fn) in fns.items():
            times[name].append(run_once(lib, fn))
    rows = {name: (statistics.median(f for f, _ in t), statistics.median(b for _, b in t))
            for name, t in times.items()}
    print("| custom Function chain (1,000 calls, 16 elements) | forward us/call | backward us/call |")
    print("|---|---|---|")
    for name, (f, b) in rows.items():
        print(f"| {name} | {f:.2f} | {b:.2f} |")
    if "torch" in rows:
        (cf, cb), (tf, tb) = rows["cgrad"], rows["torch"]
        print(f"\ncgrad/torch (time): forward {cf / tf:.3f}, backward {cb / tb:.3f}, total {(cf + cb) / (tf + tb):.3f}")


if __name__ == "__main__":
    main()
