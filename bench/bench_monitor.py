"""Overhead of cgrad.monitor's every-step recording on digits-size MLPs.

    python bench/bench_monitor.py [--quick]

For each MLP shape and batch size: the median time of a training step
(forward, cross-entropy, backward, SGD step, run.log_loss) without a run,
with run.watch(every=1), with every=1 but no update ratios
(update_ratio_every=0: no copy of the weights) and with every=10, measured
in interleaved blocks so that the noise of a shared machine hits all of
them alike.
Target (issue 5): at most 3% at every-step recording.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cgrad  # noqa: E402
from cgrad import monitor, nn  # noqa: E402
from cgrad.nn import functional as F  # noqa: E402


def make_sgd(params, lr):
    """cgrad.optim.SGD when it exists, else a plain SGD with the same hook
    API (param_groups, step pre/post hooks)."""
    try:
        from cgrad.optim import SGD
        return SGD(params, lr=lr)
    except ImportError:
        pass
    import collections
    import itertools

    class Handle:
        ids = itertools.count()

        def __init__(self, d):
            self.d, self.id = d, next(self.ids)

        def remove(self):
            self.d.pop(self.id, None)

    class HookedSGD:
        def __init__(self, params, lr):
            self.param_groups = [{"params": list(params), "lr": lr}]
            self.pre, self.post = collections.OrderedDict(), collections.OrderedDict()
            self.last_report = None

        def register_step_pre_hook(self, hook):
            h = Handle(self.pre)
            self.pre[h.id] = hook
            return h

        def register_step_post_hook(self, hook):
            h = Handle(self.post)
            self.post[h.id] = hook
            return h

        def zero_grad(self):
            for p in self.param_groups[0]["params"]:
                p.grad = None

        def step(self):
            for h in list(self.pre.values()):
                h(self, (), {})
            with cgrad.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        p.sub_(p.grad * g["lr"])
            for h in list(self.post.values()):
                h(self, (), {})

    return HookedSGD(params, lr)


def mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


MODES = {
    "off": None,
    "every=1": {"every": 1},
    "every=1 no ratio": {"every": 1, "update_ratio_every": 0},
    "every=10": {"every": 10},
}


def bench_case(sizes, batch, blocks, steps_per_block, tmpdir):
    cgrad.manual_seed(0)
    rng = np.random.default_rng(0)
    x = cgrad.from_numpy(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = cgrad.from_numpy(rng.integers(0, sizes[-1], batch).astype(np.int64))
    setups = {}
    for mode in MODES:
        model = mlp(sizes)
        opt = make_sgd(model.parameters(), lr=1e-3)
        run = None
        if mode != "off":
            run = monitor.Run(tmpdir, name="bench")
            run.watch(model, opt, **MODES[mode])
        setups[mode] = (model, opt, run)

    def step(model, opt, run):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if run is not None:
            run.log_loss(loss)

    for mode, s in setups.items():
        for _ in range(steps_per_block):
            step(*s)
    times = {m: [] for m in setups}
    for _ in range(blocks):
        for mode, s in setups.items():
            t0 = time.perf_counter()
            for _ in range(steps_per_block):
                step(*s)
            times[mode].append((time.perf_counter() - t0) / steps_per_block)
    out = {m: float(np.median(v)) for m, v in times.items()}
    out["hooks"] = hook_time(*setups["every=1"], steps_per_block)
    for _, _, run in setups.values():
        if run is not None:
            run.close()
    return out


def hook_time(model, opt, run, n):
    """The monitor's own work per recorded step (pre-hook, post-hook and
    log_loss called directly, after one backward), without the training
    step around it: less sensitive to a busy machine than the ratio."""
    w = run._watcher
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            w._pre_hook(opt, (), {})
            w._post_hook(opt, (), {})
            run.log_loss(1.0)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer blocks (a sanity run)")
    args = ap.parse_args()
    blocks = 5 if args.quick else 15
    cases = [((64, 64, 64, 10), 32, 200), ((64, 64, 64, 10), 128, 100),
             ((784, 512, 256, 10), 32, 20), ((784, 512, 256, 10), 128, 10)]
    backend = (f"C cg_tensor_stats up to {monitor.stats.C_STATS_MAX_NUMEL} elements, NumPy above"
               if monitor.stats._c_stats else "NumPy")
    print(f"cgrad.monitor overhead (median over {blocks} interleaved blocks; stats: {backend})")
    cols = [m for m in MODES if m != "off"]
    print(f"{'MLP':<16} {'batch':>5} {'off us':>8} " + " ".join(f"{m + ' us':>18} {'ratio':>6}" for m in cols)
          + f" {'hooks us':>9} {'(off+hooks)/off':>15}")
    with tempfile.TemporaryDirectory() as tmpdir:
        for sizes, batch, n in cases:
            t = bench_case(sizes, batch, blocks, n, tmpdir)
            off = t["off"]
            print(f"{'-'.join(map(str, sizes)):<16} {batch:>5} {off * 1e6:>8.1f} " +
                  " ".join(f"{t[m] * 1e6:>18.1f} {t[m] / off:>6.3f}" for m in cols) +
                  f" {t['hooks'] * 1e6:>9.1f} {(off + t['hooks']) / off:>15.3f}")


if __name__ == "__main__":
    main()
