"""The training examples in examples/ run from the repository root and print
results that hold up: each number below is parsed from the example's own
output and checked against what the example claims."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")  # the examples' data sets ship with scikit-learn

ROOT = Path(__file__).resolve().parents[2]


def run(script, *args):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    r = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{script} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def number(out, pattern):
    m = re.search(pattern, out)
    assert m, f"{pattern!r} not found in:\n{out}"
    return float(m.group(1))


def test_focal_vs_ce_recall():
    out = run("focal_vs_ce.py")
    ce = number(out, r"cross-entropy\s+minority recall ([\d.]+)")
    focal = number(out, r"focal\s+minority recall ([\d.]+)")
    focal_precision = number(out, r"focal\s+minority recall [\d.]+\s+precision ([\d.]+)")
    assert number(out, r"train: \d+ tumours, \d+ malignant \(([\d.]+)%\)") < 10  # imbalanced
    assert focal > ce and focal >= 0.75, out
    assert focal_precision >= 0.9, out


def test_huber_vs_mse_mae():
    out = run("huber_vs_mse.py")
    mse = number(out, r"MSE\s+test MAE ([\d.]+)")
    huber = number(out, r"Huber\s+test MAE ([\d.]+)")
    clean = number(out, r"MSE, clean data\s+test MAE ([\d.]+)")
    assert huber < 0.7 * mse, out       # the outliers wreck the squared-error fit
    assert huber < 1.25 * clean, out    # Huber gets close to training on clean data


def test_digits_adamw_cosine_accuracy_and_clipping():
    out = run("digits_adamw_cosine.py")
    assert number(out, r"final test accuracy ([\d.]+)") >= 0.95, out
    assert number(out, r"clipping: (\d+) of") > 0, out
    assert number(out, r"final lr ([\d.e+-]+)") == pytest.approx(3e-5)
    assert "epoch 20" in out


def test_rnn_clipping_diverges_without_and_trains_with():
    out = run("rnn_clipping.py", "--quick")
    without = number(out, r"without clipping\s+test MSE ([\d.]+)")
    with_clip = number(out, r"with clipping\s+test MSE ([\d.]+)")
    baseline = number(out, r"predicting the mean scores test MSE ([\d.]+)")
    assert without > 0.6 * baseline, out   # stalled near the trivial answer
    assert with_clip < 0.1 * baseline, out  # learned the task
    assert number(out, r"without clipping: grad norm max ([\d.e+]+)") > 1000, out
    assert re.search(r"clip event at step 0: norm [\d.e+]+ -> 1 \(coef", out), out
    assert number(out, r"(\d+) of 1000 steps clipped") > 100, out


def test_precision_schedule_switch_event_and_accuracy():
    out = run("precision_schedule.py")
    assert re.search(r"switch after step 100: cgrad.float64 -> cgrad.float32 \(milestone at step 100; "
                     r"4 parameters, 8 optimizer state tensors\)", out), out
    assert "weight cgrad.float32, grad cgrad.float32, exp_avg cgrad.float32" in out
    assert "1 event(s)" in out
    mixed = number(out, r"float64 -> float32 test accuracy ([\d.]+)")
    ref = number(out, r"float32 throughout test accuracy ([\d.]+)")
    assert mixed >= 0.94 and abs(mixed - ref) <= 0.02, out


def test_custom_optimizer_lion_trains_digits():
    out = run("custom_optimizer.py")
    assert number(out, r"max difference ([\d.e+-]+)") < 1e-7, out
    assert number(out, r"final test accuracy ([\d.]+)") >= 0.93, out
    assert "state_dict holds 4 momentum buffers" in out
