"""Overhead of cgrad.monitor's every-step recording.

    python bench/bench_monitor.py [--quick]

Cases: the digits MLP of examples/train_digits.py (64-128-10, batch 64)
with SGD momentum and with Adam, and 784-512-256-10 at batch 128. For each:
the median time of a training step (zero_grad, forward, cross-entropy,
backward, optimizer.step, run.log_loss) without a run, with only the C
statistics pass in a pre-hook (no run: the floor of measuring gradients
and weights outside the update), with run.watch(every=1), with every=1
but no update ratios and with every=10,
measured in interleaved blocks (in alternating order) so that the noise of
a shared machine hits all of them alike: the median block, the fastest
block, and the 10th percentile of single steps (the steps nothing
disturbed); then the pieces of one recorded step on the training
thread (the separate stats C call alone, for reference; opt.step() with
the monitor's hooks off and on; log_loss; best of 7) and the writer
thread's cost per step (best of 7 rounds of claiming 1000 ring slots as
one chunk; "encode": the NumPy work that turns the chunk into one chunks
row, all of it with the GIL held; "writer": encode plus the SQLite insert
and commit, whose sqlite3_step calls release the GIL).
With --instructions (needs valgrind and a C compiler): the training
step counted in instructions instead of seconds, which a shared machine
does not disturb. Each case runs in a process of its own under callgrind
(--separate-threads, collection off at start); after 50 warm-up steps a
client request (a two-line C library built on the fly) turns collection on
for the training thread over 500 steps and off again, so the count is
those steps alone, without start-up, warm-up or close, without the
monitor and with run.watch(every=1) + run.log_loss(loss). The writer
thread is not counted there: it commits every COMMIT_INTERVAL_S of wall
time, which callgrind stretches some 50x, so its instructions per step
would be inflated as much; its cost per step is the "writer" column of
the pieces table.
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


def batch_of(sizes, batch):
    """A fixed batch (inputs, class labels) for an MLP of these sizes."""
    cgrad.manual_seed(0)
    rng = np.random.default_rng(0)
    x = cgrad.from_numpy(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = cgrad.from_numpy(rng.integers(0, sizes[-1], batch).astype(np.int64))
    return x, y


def train_step(model, opt, run, x, y):
    """The step every case times: zero_grad, forward, loss, backward, step
    and, when a run records, log_loss."""
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    if run is not None:
        run.log_loss(loss)


def bench_case(sizes, batch, kind, blocks, steps_per_block, tmpdir):
    x, y = batch_of(sizes, batch)
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
        train_step(model, opt, run, x, y)

    for mode, s in setups.items():
        for _ in range(steps_per_block):
            step(*s)
    times = {m: [] for m in setups}
    each = {m: [] for m in setups}  # every step's own time
    clock = time.perf_counter
    for b in range(blocks):
        order = list(setups.items())
        for mode, s in (order if b % 2 == 0 else order[::-1]):
            t0 = clock()
            for _ in range(steps_per_block):
                t1 = clock()
                step(*s)
                each[mode].append(clock() - t1)
            times[mode].append((clock() - t0) / steps_per_block)
    out = {m: float(np.median(v)) for m, v in times.items()}
    out.update({("min", m): float(np.min(v)) for m, v in times.items()})
    # the 10th percentile of single steps: the steps no interrupt or
    # neighbour slowed, which a loaded machine still has plenty of
    out.update({("p10", m): float(np.percentile(v, 10)) for m, v in each.items()})
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


TOGGLE_C = """#include <valgrind/callgrind.h>
void cg_bench_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
"""


def child(mode, kind, steps, toggle_lib):
    """The training loop counted by --instructions (run under callgrind):
    collection is on for the `steps` steps after 50 warm-up ones."""
    import ctypes

    toggle = ctypes.CDLL(toggle_lib).cg_bench_toggle
    x, y = batch_of((64, 128, 10), 64)
    model = mlp((64, 128, 10))
    opt = make_opt(kind, model.parameters())
    with tempfile.TemporaryDirectory() as tmpdir:
        run = None
        if mode == "every=1":
            run = monitor.Run(tmpdir, name="bench")
            run.watch(model, opt, every=1)
        for it in range(50 + steps):
            if it == 50:
                toggle()
            train_step(model, opt, run, x, y)
        toggle()
        if run is not None:
            run.close()


def instructions(steps=500):
    """Per-step instructions of the training thread, off and every=1."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind")
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        sys.exit("--instructions needs a C compiler (cc) for its callgrind client request")
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    # no address-space randomisation where setarch can turn it off: the same
    # heap layout in every run (otherwise malloc's paths vary by a few k per step)
    fixed = ["setarch", os.uname().machine, "-R"] if shutil.which("setarch") else []
    print(f"instructions per training step of the digits MLP on the training thread "
          f"(callgrind, {steps} steps after 50)")
    print(f"{'opt':>4} {'off':>10} {'every=1':>10} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = os.path.join(tmp, "toggle.c"), os.path.join(tmp, "libtoggle.so")
        with open(src, "w") as f:
            f.write(TOGGLE_C)
        built = subprocess.run([cc, "-O2", "-shared", "-fPIC", src, "-o", lib],
                               capture_output=True, text=True)
        if built.returncode != 0:
            sys.exit(f"--instructions: cannot build the callgrind toggle ({cc}): "
                     f"{built.stderr.strip()[:300]}")

        def count(mode, kind):
            out = os.path.join(tmp, f"{mode}-{kind}.cg")
            subprocess.run(fixed + ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                                    "--collect-atstart=no", f"--callgrind-out-file={out}",
                                    sys.executable, os.path.abspath(__file__),
                                    "--child", mode, kind, str(steps), lib],
                           env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            per_thread = {}
            for f in glob.glob(out + "-*"):
                with open(f) as fh:
                    for line in fh:
                        if line.startswith("summary:"):
                            per_thread[int(f.rsplit("-", 1)[1])] = int(line.split()[1])
            return per_thread[min(per_thread)] / steps  # thread 1: the training thread
        for kind in ("sgd", "adam"):
            off, on = count("off", kind), count("every=1", kind)
            print(f"{kind:>4} {off:>10.0f} {on:>10.0f} {on / off:>7.4f}", flush=True)


def main():
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
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
            p10 = t[("p10", "off")]
            print(f"{'  p10 of single steps':<26} {p10 * 1e6:>8.1f} " +
                  " ".join(f"{t[('p10', m)] * 1e6:>18.1f} {t[('p10', m)] / p10:>6.3f}" for m in cols),
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
