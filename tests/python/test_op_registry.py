"""The C op registry from Python: a shared library of C ops (examples/c/
ops_plugin.c) loaded with cgrad.ops.load_library, called like built-ins,
recorded on the same tape, gradchecked in C."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cgrad
from cgrad.autograd import GradcheckError

ROOT = Path(__file__).resolve().parents[2]
CC = shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("ops") / "ops_plugin.so"
    flags = subprocess.run([sys.executable, "-m", "cgrad", "--cflags"], capture_output=True, text=True,
                           check=True).stdout.split()
    subprocess.run([CC, "-shared", "-fPIC", "-O2", str(ROOT / "examples" / "c" / "ops_plugin.c"), "-o",
                    str(out)] + flags, check=True)
    names = cgrad.ops.load_library(out)
    return out, names


def test_load_registers_and_lists(plugin):
    path, names = plugin
    assert names == ["softsign", "scaled_square"] or set(names) <= set(cgrad.ops.list_ops())
    assert {"softsign", "scaled_square"} <= set(cgrad.ops.list_ops())
    assert cgrad.ops.info("scaled_square") == (1, 1)
    assert cgrad.ops.load_library(path) == []  # the same file again: nothing new


def test_forward_backward_on_the_same_tape(plugin):
    xv = np.array([-2.0, -0.5, 0.0, 1.5])
    x = cgrad.tensor(xv, requires_grad=True)
    y = cgrad.ops.softsign(x)
    assert y.grad_fn.name() == "softsign"
    z = (y * cgrad.ops.scaled_square(x, 3.0)).sum()  # mixes built-in and registered ops
    z.backward()
    s, ds = xv / (1 + abs(xv)), 1 / (1 + abs(xv)) ** 2
    np.testing.assert_allclose(y.detach().numpy(), s)
    np.testing.assert_allclose(x.grad.numpy(), ds * 3 * xv ** 2 + s * 6 * xv, rtol=1e-12)


def test_call_form_and_no_grad(plugin):
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    with cgrad.no_grad():
        y = cgrad.ops.call("scaled_square", x, params=(0.5,))
    assert not y.requires_grad
    np.testing.assert_allclose(y.numpy(), [0.5, 2.0])


def test_c_gradcheck_and_double_backward(plugin):
    x = cgrad.randn(5, dtype=cgrad.float64, requires_grad=True)
    assert cgrad.ops.gradcheck("softsign", x)
    assert cgrad.ops.gradcheck("scaled_square", x, params=(1.7,))
    assert cgrad.autograd.gradgradcheck(lambda t: cgrad.ops.softsign(t), (x,))


def test_a_wrong_backward_fails_the_c_gradcheck(plugin):
    import ctypes

    lib = ctypes.CDLL(str(plugin[0]))
    lib.cgrad_register_wrong_ops.restype = ctypes.c_int
    if "wrong_square" not in cgrad.ops.list_ops():
        assert lib.cgrad_register_wrong_ops() == 0
    x = cgrad.randn(3, dtype=cgrad.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match="gradient mismatch for input 0"):
        cgrad.ops.gradcheck("wrong_square", x, params=(1.0,))
    cgrad.ops.unregister("wrong_square")
    assert "wrong_square" not in cgrad.ops.list_ops()


def test_bad_input(plugin):
    x = cgrad.randn(3)
    with pytest.raises(ValueError, match="no op named 'nope'"):
        cgrad.ops.call("nope", x)
    with pytest.raises(ValueError, match="takes 1 tensor inputs and 1 params"):
        cgrad.ops.call("scaled_square", x)
    with pytest.raises(TypeError, match="input 0 must be a Tensor"):
        cgrad.ops.call("softsign", [1.0, 2.0])
    with pytest.raises(AttributeError, match="no op 'missing'"):
        cgrad.ops.missing
    with pytest.raises(FileNotFoundError):
        cgrad.ops.load_library("/nonexistent/lib.so")
    copy = plugin[0].with_name("ops_plugin_copy.so")
    shutil.copyfile(plugin[0], copy)
    with pytest.raises(AttributeError, match="has no function no_such_init"):
        cgrad.ops.load_library(copy, init="no_such_init")
    with pytest.raises(RuntimeError, match="already registered"):
        cgrad.ops.load_library(copy)  # registers 'softsign' again: refused, named
