"""cgrad.ops.<name> resolves a registered C op once, to an OpHandle whose
calls go through cg_op_call_handle (no name lookup): it is cached, it keeps
its op alive across unregister, it is resolved again when its op goes, and
a registered op's entry keeps its saved tensors like a built-in's (in-place
modification is caught)."""
import ctypes
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cgrad
from cgrad.autograd import gradcheck, gradgradcheck

CC = shutil.which("cc") or shutil.which("gcc")

# hscale(x; c) = k c x with k the op's ctx (1 for v1, 10 for v2), saving
# nothing; hexp(x) = exp(x) whose backward reads only its output.
PLUGIN = r"""
#include "cgrad.h"
static double one = 1.0, ten = 10.0;
static cg_status scale_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    (void)n; (void)np;
    return cg_mul_scalar(x[0], *(const double *)ctx * p[0], out);
}
static cg_status scale_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                           cg_tensor *g, const int *needs, cg_tensor **gx) {
    (void)n; (void)x; (void)np; (void)y; (void)needs;
    return cg_mul_scalar(g, *(const double *)ctx * p[0], &gx[0]);
}
static cg_status exp_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    (void)ctx; (void)n; (void)np; (void)p;
    return cg_exp(x[0], out);
}
static cg_status exp_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                         cg_tensor *g, const int *needs, cg_tensor **gx) {
    (void)ctx; (void)n; (void)x; (void)np; (void)p; (void)needs;
    return cg_mul(g, y, &gx[0]);
}
static int reg_scale(double *k) {
    cg_status st = cg_op_register("hscale", 1, 1, scale_fwd, scale_bwd, k, NULL);
    if (!st) st = cg_op_set_saves("hscale", 0, 0);
    return (int)st;
}
int register_v1(void) {
    int st = reg_scale(&one);
    if (!st) st = (int)cg_op_register("hexp", 1, 0, exp_fwd, exp_bwd, NULL, NULL);
    if (!st) st = (int)cg_op_set_saves("hexp", 0, 1);
    return st;
}
int register_v2(void) { return reg_scale(&ten); }
int unregister_scale_from_c(void) { return (int)cg_op_unregister("hscale"); }
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("handle_ops")
    (d / "handle_ops.c").write_text(PLUGIN)
    out = d / "handle_ops.so"
    flags = subprocess.run([sys.executable, "-m", "cgrad", "--cflags"], capture_output=True, text=True,
                           check=True).stdout.split()
    subprocess.run([CC, "-shared", "-fPIC", "-O2", str(d / "handle_ops.c"), "-o", str(out)] + flags, check=True)
    assert cgrad.ops.load_library(out, init="register_v1") == ["hscale", "hexp"]
    so = ctypes.CDLL(str(out))
    for fn in ("register_v2", "unregister_scale_from_c"):
        getattr(so, fn).restype = ctypes.c_int
    yield so
    for name in ("hscale", "hexp"):
        if name in cgrad.ops.list_ops():
            cgrad.ops.unregister(name)


def test_attribute_is_a_cached_handle(lib):
    op = cgrad.ops.hscale
    assert isinstance(op, cgrad._core.OpHandle)
    assert op is cgrad.ops.hscale and op.__name__ == "hscale" and op.registered
    x = cgrad.tensor([1.0, -2.0, 0.5], requires_grad=True)
    y = op(x, 3.0)
    assert y.grad_fn.name() == "hscale"
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), [3.0, -6.0, 1.5])
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0, 3.0])
    np.testing.assert_allclose(op(x, params=(2.0,)).detach().numpy(), [2.0, -4.0, 1.0])
    with pytest.raises(TypeError):
        cgrad._core.OpHandle()


def test_handle_outlives_unregister_and_attribute_resolves_again(lib):
    old = cgrad.ops.hscale
    cgrad.ops.unregister("hscale")
    assert not old.registered and "unregistered" in repr(old)
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    np.testing.assert_allclose(old(x, 2.0).detach().numpy(), [2.0, 4.0])  # no lookup: still runs
    with pytest.raises(AttributeError, match="no op 'hscale'"):
        cgrad.ops.hscale
    assert lib.register_v2() == 0  # a new op under the same name (ctx 10)
    new = cgrad.ops.hscale
    assert new is not old and new.registered
    np.testing.assert_allclose(new(x, 2.0).detach().numpy(), [20.0, 40.0])
    np.testing.assert_allclose(old(x, 2.0).detach().numpy(), [2.0, 4.0])  # the op it was taken on
    # Unregistered from C behind cgrad.ops' back: the cached handle is not
    # handed out again.
    assert lib.unregister_scale_from_c() == 0
    with pytest.raises(AttributeError, match="no op 'hscale'"):
        cgrad.ops.hscale
    y = new(x, 1.0)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [10.0, 10.0])
    assert lib.register_v2() == 0


def test_gradcheck_and_double_backward_through_a_handle(lib):
    hexp = cgrad.ops.hexp
    x = cgrad.randn(4, dtype=cgrad.float64, requires_grad=True)
    assert gradcheck(lambda t: hexp(t), (x,))
    # The backward reads the output, which it gets linked to the entry: its
    # gradient is differentiable again (d2/dx2 exp = exp).
    assert gradgradcheck(lambda t: hexp(t), (x,))


def test_matches_torch(lib):
    torch = pytest.importorskip("torch")
    xv = np.array([-1.5, 0.0, 0.25, 2.0])
    x = cgrad.tensor(xv, requires_grad=True)
    (g,) = cgrad.autograd.grad(cgrad.ops.hexp(x).sum(), [x], create_graph=True)
    (g * x).sum().backward()
    xt = torch.tensor(xv, requires_grad=True)
    (gt,) = torch.autograd.grad(torch.exp(xt).sum(), [xt], create_graph=True)
    (gt * xt).sum().backward()
    np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-14)


def test_saved_output_modified_in_place_raises(lib):
    x = cgrad.tensor([0.5, 1.0], requires_grad=True)
    y = cgrad.ops.hexp(x)
    s = y.sum()
    with cgrad.no_grad():
        y.mul_(2.0)
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation: op 'hexp'"):
        s.backward()


def test_bad_calls_through_a_handle(lib):
    op, x = cgrad.ops.hscale, cgrad.randn(3)
    with pytest.raises(ValueError, match="op 'hscale' takes 1 tensor inputs and 1 params, got 1 and 0"):
        op(x)
    with pytest.raises(ValueError, match="got 2 and 1"):
        op(x, x, 1.0)
    with pytest.raises(TypeError, match="params given both positionally"):
        op(x, 1.0, params=(2.0,))
    with pytest.raises(TypeError, match="param 0 must be a number, got 'a'"):
        op(x, "a")
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['alpha'\\]"):
        op(x, 1.0, alpha=2)
    with pytest.raises(ValueError, match="at most 16 tensors"):
        op(*([x] * 17))
