"""The examples in examples/custom_gradients/ run and pass their own checks
(each exits non-zero when a check fails)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "custom_gradients"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))


def run(args, cwd=EXAMPLES):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_examples_are_present():
    for name in ("01_square.py", "02_leaky_custom_gradient.py", "03_positive_weights.py", "04_ste_round.py",
                 "07_gradient_hooks.py",
                 "05_weighted_mse.py", "06_user_losses.py", "08_double_backward.py"):
        assert name in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_and_passes_its_checks(script):
    # run from the repository root, as a user would
    r = run([str(EXAMPLES / script)], cwd=ROOT)
    assert r.returncode == 0, f"{script} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "all checks passed" in r.stdout
    assert "[FAIL]" not in r.stdout


def test_a_failing_check_exits_non_zero():
    code = ("from _check import report, finish\n"
            "report('deliberately wrong', [1.0], [2.0])\n"
            "finish()\n")
    r = run(["-c", code])
    assert r.returncode == 1 and "[FAIL] deliberately wrong" in r.stdout
