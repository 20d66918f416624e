"""Overhead of cgrad.monitor's every-step recording.

    python bench/bench_monitor.py [--quick]

Cases: the digits MLP of examples/train_digits.py (64-128-10, batch 64)
with SGD momentum and with Adam, and 784-512-256-10 at batch 128. For each:
the median time of a training step (zero_grad, forward, cross-entropy,
backward, optimizer.step, run.log_loss) without a run, with only the C
statistics pass in a pre-hook (no run: the floor of measuring gradients
and weights outside the update), with run.watch(every=1), with every=1
but no update ratios and with every=10,
measured in interleaved blocks so that the noise of a shared machine hits
all of them alike (medians, and the fastest block of each: on a loaded
machine the least disturbed measurement); then the pieces of one recorded step on the training
thread (the separate stats C call alone, for reference; opt.step() with
the monitor's hooks off and on; log_loss; best of 7) and the writer
thread's cost per step (best of 7 rounds of claiming 1000 ring slots as
one chunk; "encode": the NumPy work that turns the chunk into one chunks
row, all of it with the GIL held; "writer": encode plus the SQLite insert
and commit, whose sqlite3_step calls release the GIL).
With --instructions (needs valgrind): the whole training step counted in
instructions instead of seconds, which a shared machine does not disturb.
Each case runs in a process of its own under callgrind
(--separate-threads), once with 50 warm-up steps alone and once with 500
steps after them; the difference over 500 is a step's instructions on the
training thread and on the other threads (the writer), without the
monitor and with run.watch(every=1) + run.log_loss(loss).
Target (issue 5): at most 3% at every-step recording on the digits MLP.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cgrad  # noqa: E402
from cgrad import monitor, nn  # noqa: E402
from cgrad.monitor.writer import _ring_columns  # noqa: E402
from cgrad.nn import functional as F  # noqa: E402


def make_opt(kind, params):
    from cgrad import optim
    if kind == "sgd":
        return optim.SGD(params, lr=1e-2, momentum=0.9)
    return optim.Adam(params, lr=1e-3)


def mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


WITH_PIECES = True

MODES = {
    "off": None,
    # no run: a pre-hook doing only the one C statistics call over every
    # gradient and weight, i.e. the floor of any monitor measuring them
    # outside the optimizer's own update pass
    "stats pass": "stats",
    "every=1": {"every": 1},
    "every=1 no ratio": {"every": 1, "update_ratio_every": 0},
    "every=10": {"every": 10},
}


def bench_case(sizes, batch, kind, blocks, steps_per_block, tmpdir):
    cgrad.manual_seed(0)
    rng = np.random.default_rng(0)
    x = cgrad.from_numpy(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = cgrad.from_numpy(rng.integers(0, sizes[-1], batch).astype(np.int64))
    setups = {}
    for mode in MODES:
        model = mlp(sizes)
        opt = make_opt(kind, model.parameters())
        run = None
        if MODES[mode] == "stats":
            params = list(model.parameters())
            buf = np.empty((2 * len(params), 4))
            opt.register_step_pre_hook(
                lambda o, a, k: cgrad._core._tensor_stats_many([t for p in params for t in (p.grad, p)],
                                                               buf))
        elif mode != "off":
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
    out.update({("min", m): float(np.min(v)) for m, v in times.items()})
    if WITH_PIECES:
        out.update(pieces(*setups["every=1"], max(steps_per_block, 50)))
    for _, _, run in setups.values():
        if run is not None:
            run.close()
    return out


def best_of(fn, n, repeat=7):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def pieces(model, opt, run, n):
    """The monitor's own work per recorded step, piece by piece (called
    directly after one backward, without the rest of the training step):
    less sensitive to a busy machine than the step ratios. 'bare' and
    'watched' are opt.step() with the monitor's hooks taken off and put
    back: with a built-in optimizer the statistics are measured inside
    the fused updates, so their cost shows only in that difference."""
    w = run._watcher
    tensors = [t for p in w._params for t in (p.grad, p)]
    buf = np.empty((len(tensors), 4))
    out = {"stats": best_of(lambda: cgrad._core._tensor_stats_many(tensors, buf), n)}
    hooks = (dict(opt._step_pre_hooks), dict(opt._step_post_hooks))

    def set_hooks(on):
        for d, saved in zip((opt._step_pre_hooks, opt._step_post_hooks), hooks):
            d.clear()
            if on:
                d.update(saved)
    bare, watched = [], []
    for _ in range(3):  # alternated, best of each
        set_hooks(False)
        bare.append(best_of(opt.step, n, repeat=3))
        set_hooks(True)
        watched.append(best_of(opt.step, n, repeat=3))
    out["bare"], out["watched"] = min(bare), min(watched)

    def pre_post():
        opt.step()
    out["log"] = best_of(lambda: run.log_loss(1.0), n)
    # the writer thread: claiming 1000 recorded steps and writing them in
    # one commit (its own claims are paused meanwhile), best of 7 rounds
    writer = run._writer
    writer.remove_source(w._source)
    run.flush()
    idle_heartbeat, writer._last_commit = writer._last_commit, float("inf")  # no commit of its own
    chunk = w._claim(force=True)
    if chunk is not None:
        writer.submit_chunk(chunk)
    run.flush()
    k = 1000
    for key in ("claim", "encode", "writer"):
        out[key] = float("inf")
    for _ in range(7):
        for _ in range(k):
            pre_post()
            run.log_loss(1.0)
        t0 = time.perf_counter()
        chunk = w._claim(force=True)
        t1 = time.perf_counter()
        _ring_columns(chunk, [])
        t2 = time.perf_counter()
        writer._write([("chunk", chunk)], "running", time.time())  # encodes again, then SQLite
        t3 = time.perf_counter()
        out["claim"] = min(out["claim"], (t1 - t0) / k)
        out["encode"] = min(out["encode"], (t2 - t1) / k)
        out["writer"] = min(out["writer"], (t3 - t2) / k)
    writer._last_commit = idle_heartbeat
    writer.add_source(w._source)
    return out


def child(mode, kind, steps):
    """The training loop counted by --instructions (run under callgrind)."""
    cgrad.manual_seed(0)
    rng = np.random.default_rng(0)
    x = cgrad.from_numpy(rng.standard_normal((64, 64)).astype(np.float32))
    y = cgrad.from_numpy(rng.integers(0, 10, 64).astype(np.int64))
    model = mlp((64, 128, 10))
    opt = make_opt(kind, model.parameters())
    with tempfile.TemporaryDirectory() as tmpdir:
        run = None
        if mode == "every=1":
            run = monitor.Run(tmpdir, name="bench")
            run.watch(model, opt, every=1)
        for _ in range(50 + steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if run is not None:
                run.log_loss(loss)
        if run is not None:
            run.close()  # the writer's last commit is counted too


def instructions(steps=500):
    """Per-step instructions (training thread, other threads) of each case."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind")
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    print(f"instructions per training step of the digits MLP (callgrind, {steps} steps)")
    print(f"{'opt':>4} {'off':>10} {'every=1 train':>14} {'writer':>8} {'train/off':>10} "
          f"{'all/off':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        def count(mode, kind, n):
            out = os.path.join(tmp, f"{mode}-{kind}-{n}.cg")
            subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                            f"--callgrind-out-file={out}", sys.executable, os.path.abspath(__file__),
                            "--child", mode, kind, str(n)],
                           env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            per_thread = {}
            for f in glob.glob(out + "-*"):
                with open(f) as fh:
                    for line in fh:
                        if line.startswith("summary:"):
                            per_thread[int(f.rsplit("-", 1)[1])] = int(line.split()[1])
            main_thread = per_thread.pop(min(per_thread))
            return main_thread, sum(per_thread.values())
        for kind in ("sgd", "adam"):
            res = {}
            for mode in ("off", "every=1"):
                m0, o0 = count(mode, kind, 0)
                m1, o1 = count(mode, kind, steps)
                res[mode] = ((m1 - m0) / steps, (o1 - o0) / steps)
            off = res["off"][0] + res["off"][1]
            train, writer = res["every=1"]
            print(f"{kind:>4} {off:>10.0f} {train:>14.0f} {writer:>8.0f} "
                  f"{train / res['off'][0]:>10.4f} {(train + writer) / off:>8.4f}", flush=True)


def main():
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer blocks (a sanity run)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions under callgrind instead (needs valgrind; minutes)")
    ap.add_argument("--steps-only", action="store_true",
                    help="only the step table (e.g. to compare an older cgrad on PYTHONPATH)")
    args = ap.parse_args()
    if args.instructions:
        instructions()
        return
    global WITH_PIECES
    WITH_PIECES = not args.steps_only
    blocks = 5 if args.quick else 21
    cases = [((64, 128, 10), 64, "sgd", 200), ((64, 128, 10), 64, "adam", 200),
             ((784, 512, 256, 10), 128, "sgd", 10)]
    print(f"cgrad.monitor overhead (median over {blocks} interleaved blocks); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at start")
    cols = [m for m in MODES if m != "off"]
    print(f"{'MLP':<15} {'batch':>5} {'opt':>4} {'off us':>8} " +
          " ".join(f"{m + ' us':>18} {'ratio':>6}" for m in cols))
    piece_rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for sizes, batch, kind, n in cases:
            t = bench_case(sizes, batch, kind, blocks, n, tmpdir)
            off = t["off"]
            name = "-".join(map(str, sizes))
            print(f"{name:<15} {batch:>5} {kind:>4} {off * 1e6:>8.1f} " +
                  " ".join(f"{t[m] * 1e6:>18.1f} {t[m] / off:>6.3f}" for m in cols), flush=True)
            lo = t[("min", "off")]
            print(f"{'  fastest block':<26} {lo * 1e6:>8.1f} " +
                  " ".join(f"{t[('min', m)] * 1e6:>18.1f} {t[('min', m)] / lo:>6.3f}" for m in cols),
                  flush=True)
            piece_rows.append((name, batch, kind, off, t))
    if not WITH_PIECES:
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
        return
    print("\npieces of one recorded step (best of 7, us; sum/off against the fastest 'off' "
          "block): training thread | writer thread")
    print(f"{'MLP':<15} {'opt':>4} {'stats C':>8} {'step bare':>10} {'watched':>8} {'log':>6} "
          f"{'sum':>7} {'sum/off':>8} | {'claim':>7} {'encode':>7} {'writer':>7}")
    for name, batch, kind, off, t in piece_rows:
        off = t[("min", "off")]  # the fastest block: the least disturbed step time
        total = t["watched"] - t["bare"] + t["log"]
        print(f"{name:<15} {kind:>4} {t['stats'] * 1e6:>8.2f} {t['bare'] * 1e6:>10.2f} "
              f"{t['watched'] * 1e6:>8.2f} {t['log'] * 1e6:>6.2f} {total * 1e6:>7.2f} "
              f"{total / off:>8.3f} | {t['claim'] * 1e6:>7.2f} {t['encode'] * 1e6:>7.2f} "
              f"{t['writer'] * 1e6:>7.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
