"""Host overhead per device op: what cgrad spends around the kernels of the
"cuda" device, measured on the NumPy reference device (no GPU needed).

    python bench/bench_device_overhead.py             # about a minute
    python bench/bench_device_overhead.py --quick     # seconds
    python bench/bench_device_overhead.py --json out.json

On a GPU small ops are bound by host time per op (PyTorch spends ~5-10 us
of host time per op). Every cgrad device op goes C core -> _be_kernel
(cgrad/_device.pxi) -> an array view per tensor -> the k_<name> kernel of
cgrad/backends/. For each op below the benchmark

  1. records the kernel calls the op makes (one call of the op, after a
     warm-up: the steady state), by wrapping the backend's kernels;
  2. times the op through cgrad (median of many repetitions);
  3. times the recorded kernel calls replayed directly on prebuilt arrays of
     the same shapes, dtypes and strides: the same NumPy calls, i.e. the
     kernels' own work;

and prints the difference, the host overhead, per op and per kernel call.
The overhead covers everything else: the Python API, the C core (checks,
shapes, tape), output allocation and freeing, the views and the dispatch.
The last column times the op on host tensors (the C kernels): the part of
the overhead that any device pays is at most that.

The ops: add, mul, matmul (64x64 float32), relu forward + backward, sum,
a Linear(64, 64) forward + backward on a batch of 32, one Adam step on a
1k parameter, clip_grad_norm_ over gradients of the MLP's shapes, and the
whole MLP step of bench_gpu.py (784-512-256-10,
batch 128, Adam). Not a test: nothing here asserts a speed.

"cuda" runs on the reference device unless CGRAD_CUDA_REFERENCE=0 is set
(then on a GPU, with CuPy: each repetition ends with a sync, and the
replayed kernels are CuPy calls; the difference is still cgrad's host time
when the GPU keeps up).
"""
import argparse
import json
import os
import sys

os.environ.setdefault("CGRAD_CUDA_REFERENCE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import bench_gpu  # noqa: E402
import cgrad  # noqa: E402
import cgrad.nn as nn  # noqa: E402
from cgrad.nn.utils import clip_grad_norm_  # noqa: E402


# ----------------------------------------------------------------- recording
class KernelRecorder:
    """Within the block every kernel call of backend `be` is also recorded as
    (kernel, outs, ins, f, i) with its arrays cloned (same layout), so the
    calls can be replayed without cgrad."""

    def __init__(self, be):
        self.be = be
        self.calls = []
        self.names = []

    def __enter__(self):
        self._saved = dict(self.be.kernels)
        for name, k in self._saved.items():
            self.be.kernels[name] = self._recording(name, k)
        return self

    def __exit__(self, *exc):
        self.be.kernels.clear()
        self.be.kernels.update(self._saved)

    def _recording(self, name, k):
        def kernel(out, ins, f, i):
            self.names.append(name)
            self.calls.append((k, [self._clone(a) for a in out], [self._clone(a) for a in ins], list(f), list(i)))
            k(out, ins, f, i)
        return kernel

    def _clone(self, a):
        """A copy of array a with a's strides and offset inside a copy of its
        whole buffer (a broadcast or transposed view stays one); scalars as
        they are."""
        xp = self.be.xp
        if not isinstance(a, xp.ndarray):
            return a
        root = a
        while isinstance(root.base, xp.ndarray):
            root = root.base
        copy = root.copy()
        offset = self.be.data_ptr(a) - self.be.data_ptr(root)
        if self.be.is_gpu:
            return xp.ndarray(a.shape, a.dtype, copy.data + offset, a.strides)
        return np.ndarray(a.shape, a.dtype, copy, offset, a.strides)


def replay(calls):
    """Runs the recorded kernel calls once (the kernels' own work)."""
    for k, out, ins, f, i in calls:
        k(out, ins, f, i)


def per_call(fn, sync, reps, target_s):
    """Median seconds per call (bench_gpu's timer, calibrated on 20 warm-up calls)."""
    return bench_gpu.median_time(fn, reps, sync, warmup=20, rep_seconds=target_s)


# ----------------------------------------------------------------- the ops
def make_ops(dev):
    """[(label, fn)]: each fn runs the op once on device dev."""
    cgrad.manual_seed(0)
    a = cgrad.randn(64, 64).to(dev)
    b = cgrad.randn(64, 64).to(dev)
    x = cgrad.randn(64, 64).to(dev).requires_grad_()
    g = cgrad.randn(64, 64).to(dev)

    def relu_fwd_bwd():
        x.grad = None
        x.relu().backward(g)

    lin = nn.Linear(64, 64).to(dev)
    lx = cgrad.randn(32, 64).to(dev)
    lg = cgrad.randn(32, 64).to(dev)

    def linear_fwd_bwd():
        lin.weight.grad = lin.bias.grad = None
        lin(lx).backward(lg)

    p = nn.Parameter(cgrad.randn(1000).to(dev))
    p.grad = cgrad.randn(1000).to(dev)
    adam = cgrad.optim.Adam([p], lr=1e-3)

    rng = np.random.default_rng(0)
    mlp = bench_gpu.make_mlp().to(dev)
    mx = cgrad.from_numpy(rng.standard_normal((128, 784)).astype(np.float32)).to(dev)
    my = cgrad.from_numpy(rng.integers(0, 10, 128).astype(np.int64)).to(dev)
    mlp_step = bench_gpu.cgrad_step(mlp, mx, my)

    cps = [nn.Parameter(cgrad.randn(*q.shape).to(dev)) for q in mlp.parameters()]
    for q in cps:
        q.grad = cgrad.randn(*q.shape).to(dev)

    return [("add 64x64", lambda: a + b),
            ("mul 64x64", lambda: a * b),
            ("matmul 64x64", lambda: a @ b),
            ("relu fwd+bwd 64x64", relu_fwd_bwd),
            ("sum 64x64", lambda: a.sum()),
            ("Linear(64,64) fwd+bwd, batch 32", linear_fwd_bwd),
            ("Adam step, 1k param", adam.step),
            ("clip_grad_norm_, the MLP's 6 gradients", lambda: clip_grad_norm_(cps, 1e9)),
            ("MLP step (bench_gpu: 784-512-256-10, batch 128)", mlp_step)]


def measure(reps, target_s):
    be = cgrad.cuda._init()
    sync = be.synchronize
    rows = []
    for (label, fn), (_, host_fn) in zip(make_ops("cuda"), make_ops("cpu")):
        fn()  # steady state: gradients, optimizer state exist
        with KernelRecorder(be) as rec:
            fn()
        calls = rec.calls
        t_op = per_call(fn, sync, reps, target_s)
        if be.is_gpu:
            t_direct = per_call(lambda: replay(calls), sync, reps, target_s)
        else:
            with np.errstate(all="ignore"):  # as the kernels run: NaN / inf are no errors
                t_direct = per_call(lambda: replay(calls), sync, reps, target_s)
        t_host = per_call(host_fn, lambda: None, reps, target_s)
        rows.append({"op": label, "kernels": len(calls), "names": rec.names,
                     "cgrad_us": t_op * 1e6, "direct_us": t_direct * 1e6, "cpu_us": t_host * 1e6})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a smoke test)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    reps, target_s = (5, 0.005) if args.quick else (21, 0.01)
    rows = measure(reps, target_s)
    where = "reference device (NumPy, host memory)" if cgrad.cuda.is_reference() else cgrad.cuda.get_device_name()
    print(f"# host overhead per device op: 'cuda' on the {where}\n")
    print(f"- cgrad {cgrad.__file__}, numpy {np.__version__}; median of {reps} repetitions\n")
    print("| op | kernels | cgrad cuda us | kernels alone us | overhead us | overhead per kernel us "
          "| cgrad cpu us |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        over = r["cgrad_us"] - r["direct_us"]
        print(f"| {r['op']} | {r['kernels']} | {r['cgrad_us']:.1f} | {r['direct_us']:.1f} | {over:.1f} "
              f"| {over / max(r['kernels'], 1):.2f} | {r['cpu_us']:.1f} |")
    print("\n(cgrad cpu: the same op on host tensors, C kernels: what cgrad's Python API, core and tape "
          "cost on any device, plus the host kernels' work)")
    print()
    for r in rows:
        print(f"- {r['op']}: {' '.join(r['names'])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
