"""The linear op of the C core (cg_linear in src_c/ops_matmul.c), which
F.linear and nn.Linear call: x @ w.T + b as one GEMM onto the bias forward
and one op backward. Values, gradients and second derivatives against
float64 central differences and PyTorch (check_op) over the layouts the
GEMM takes in place or copies, the shapes F.linear still composes, the
argument errors, and on the "cuda" device the same values as the CPU from
one kernel forward (the reference device in CI, see device_util.py)."""
import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as cF
from cgrad import _core
from device_util import assert_same_values, host, record_kernels
from oracle import F, check_op, check_third_derivative, to_numpy

# (specs, fn) with fn written for both libraries
CASES = {
    "2-D, bias": ([(5, 4), (3, 4), (3,)], lambda x, w, b: F(x).linear(x, w, b)),
    "no bias": ([(5, 4), (3, 4)], lambda x, w: F(x).linear(x, w)),
    "1-D input": ([(4,), (3, 4), (3,)], lambda x, w, b: F(x).linear(x, w, b)),
    "3-D input": ([(2, 3, 4), (5, 4), (5,)], lambda x, w, b: F(x).linear(x, w, b)),
    "4-D input, leading ones": ([(1, 2, 1, 3), (2, 3), (2,)],
                                lambda x, w, b: F(x).linear(x, w, b)),
    "transposed input": ([(4, 5), (3, 4), (3,)], lambda x, w, b: F(x).linear(x.T, w, b)),
    "rows that do not fold": ([(2, 6, 4), (3, 4), (3,)],
                              lambda x, w, b: F(x).linear(x[:, ::2], w, b)),
    "transposed weight": ([(5, 4), (4, 3), (3,)], lambda x, w, b: F(x).linear(x, w.T, b)),
    "sliced weight, strided bias": ([(5, 4), (3, 8), (6,)],
                                    lambda x, w, b: F(x).linear(x, w[:, ::2], b[::2])),
    "one feature each way": ([(5, 1), (1, 1), (1,)], lambda x, w, b: F(x).linear(x, w, b)),
    "squared (a Hessian with x-x and w-w blocks)": (
        [(3, 4), (2, 4), (2,)], lambda x, w, b: F(x).linear(x, w, b) ** 2),
    # shapes F.linear composes from matmul and add (as torch accepts them)
    "1-D weight": ([(5, 4), (4,)], lambda x, w: F(x).linear(x, w)),
    "bias broadcast from (1, N)": ([(5, 4), (3, 4), (1, 3)], lambda x, w, b: F(x).linear(x, w, b)),
    "bias of one element": ([(5, 4), (3, 4), (1,)], lambda x, w, b: F(x).linear(x, w, b)),
}


COMPOSED = ("1-D weight", "bias broadcast from (1, N)", "bias of one element")


@pytest.mark.parametrize("case", list(CASES))
def test_linear_values_and_derivatives(case, monkeypatch):
    specs, fn = CASES[case]
    calls = []
    op = _core.linear
    monkeypatch.setattr(_core, "linear", lambda *a: (calls.append(1), op(*a))[1])
    check_op(specs, fn)
    # the op ran for its shapes (the composition would pass check_op too)
    assert (len(calls) == 0) == (case in COMPOSED), (case, len(calls))


def test_linear_is_one_op_each_way_and_module_uses_it():
    lin = cgrad.nn.Linear(4, 3).double()
    x = cgrad.randn(2, 4, dtype=cgrad.float64, requires_grad=True)
    y = lin(x)
    assert y.grad_fn.name() == "linear"
    assert cF.linear(x, lin.weight).grad_fn.name() == "linear"
    # the shapes that compose keep matmul's ops
    assert cF.linear(x, lin.weight[0]).grad_fn.name() == "matmul"
    v = cgrad.ones_like(y).requires_grad_()
    gx, gw, gb = cgrad.autograd.grad(y, [x, lin.weight, lin.bias], grad_outputs=[v], create_graph=True)
    assert gx.grad_fn.name() == "matmul" and gw.grad_fn.name() == "matmul"
    assert gb.grad_fn.name() == "sum_to_shape"
    np.testing.assert_allclose(to_numpy(gb), [2.0, 2.0, 2.0])
    assert gw.is_contiguous()


def test_linear_third_derivative():
    # every derivative of linear's backward is recorded: the third
    # derivative of sum(linear(x, w, b)^4) in x against central differences
    rng = np.random.default_rng(5)
    w = cgrad.from_numpy(rng.standard_normal((3, 4)))
    b = cgrad.from_numpy(rng.standard_normal(3))
    x0 = rng.standard_normal((2, 4))
    u = cgrad.from_numpy(rng.standard_normal((2, 4)))

    def second(xa, create_graph):
        x = cgrad.from_numpy(xa).requires_grad_()
        y = cF.linear(x, w, b)
        (g1,) = cgrad.autograd.grad((y ** 4).sum(), [x], create_graph=True)
        (g2,) = cgrad.autograd.grad((g1 * u).sum(), [x], create_graph=create_graph)
        return x, g2

    check_third_derivative(second, x0, u)


def test_transposed_weight_gets_its_gradient_in_its_layout():
    # w = p.T (p stored (in, out)): the gradient of p is p's own layout,
    # contiguous, as matmul's backward gives x @ w.T
    p = cgrad.randn(4, 3, dtype=cgrad.float64, requires_grad=True)
    x = cgrad.randn(5, 4, dtype=cgrad.float64)
    cF.linear(x, p.T).sum().backward()
    assert p.grad.is_contiguous()
    np.testing.assert_allclose(to_numpy(p.grad), to_numpy(x).sum(0)[:, None] * np.ones((1, 3)))


def test_empty_inputs():
    # no rows: an empty result, zero gradients for w and b; no input
    # features: the bias in every row
    w = cgrad.randn(3, 4, dtype=cgrad.float64, requires_grad=True)
    b = cgrad.randn(3, dtype=cgrad.float64, requires_grad=True)
    y = cF.linear(cgrad.zeros(0, 4, dtype=cgrad.float64), w, b)
    assert y.shape == (0, 3)
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(w.grad), np.zeros((3, 4)))
    np.testing.assert_array_equal(to_numpy(b.grad), np.zeros(3))
    w0 = cgrad.zeros(3, 0, dtype=cgrad.float64, requires_grad=True)
    y = cF.linear(cgrad.zeros(2, 0, dtype=cgrad.float64), w0, b)
    np.testing.assert_array_equal(to_numpy(y), np.tile(to_numpy(b), (2, 1)))
    np.testing.assert_array_equal(to_numpy(cF.linear(cgrad.zeros(2, 0, dtype=cgrad.float64), w0)),
                                  np.zeros((2, 3)))


def test_nan_in_the_bias_reaches_its_column_only():
    x = cgrad.ones(2, 2, dtype=cgrad.float64)
    w = cgrad.ones(3, 2, dtype=cgrad.float64)
    y = to_numpy(cF.linear(x, w, cgrad.tensor([0.0, float("nan"), 1.0], dtype=cgrad.float64)))
    np.testing.assert_array_equal(np.isnan(y), [[False, True, False]] * 2)
    np.testing.assert_array_equal(y[:, [0, 2]], [[2.0, 3.0]] * 2)


@pytest.mark.parametrize("args,exc,match", [
    (lambda x, w, b: (x, w[:, :3], b), ValueError,
     "linear: input of shape \\(5, 4\\) has 4 features, weight of shape \\(3, 3\\) takes 3"),
    (lambda x, w, b: (x, w, b[:2]), ValueError, "cannot broadcast|broadcast"),
    (lambda x, w, b: (x.sum(), w, b), ValueError, "linear: input must have at least 1 dim"),
    (lambda x, w, b: (x.float(), w, b), TypeError,
     "linear: input, weight and bias must share one floating dtype \\(got float32, float64, float64\\)"),
    (lambda x, w, b: (x, w, b.float()), TypeError, "got float64, float64, float32"),
    (lambda x, w, b: (x.long(), w.long(), None), TypeError, "one floating dtype"),
])
def test_linear_errors_name_the_shapes_and_dtypes(args, exc, match):
    x = cgrad.zeros(5, 4, dtype=cgrad.float64, requires_grad=True)
    w = cgrad.zeros(3, 4, dtype=cgrad.float64, requires_grad=True)
    b = cgrad.zeros(3, dtype=cgrad.float64, requires_grad=True)
    with pytest.raises(exc, match=match):
        cF.linear(*args(x, w, b))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        _core.linear(x, w[0])
    with pytest.raises(ValueError, match="linear: bias must have shape \\(3,\\), got \\(2,\\)"):
        _core.linear(x, w, b[:2])
    assert x.grad is None and w.grad is None and b.grad is None


# ------------------------------------------------------------ "cuda" device
DEVICE_CASES = {
    "2-D, bias": ((6, 5), (4, 5), True, lambda x, w: (x, w)),
    "no bias": ((6, 5), (4, 5), False, lambda x, w: (x, w)),
    "1-D input": ((5,), (4, 5), True, lambda x, w: (x, w)),
    "3-D input": ((2, 3, 5), (4, 5), True, lambda x, w: (x, w)),
    "transposed operands": ((5, 6), (5, 4), True, lambda x, w: (x.T, w.T)),
    "rows that do not fold": ((2, 6, 5), (4, 5), True, lambda x, w: (x[:, ::2], w)),
    "no input features": ((3, 0), (4, 0), True, lambda x, w: (x, w)),
}


@pytest.mark.parametrize("dtype,tol", [(cgrad.float64, dict(rtol=1e-12, atol=1e-12)),
                                       (cgrad.float32, dict(rtol=1e-5, atol=1e-5))])
@pytest.mark.parametrize("case", list(DEVICE_CASES))
def test_linear_on_the_device_matches_the_cpu(case, dtype, tol, monkeypatch):
    xs, ws, with_bias, view = DEVICE_CASES[case]
    rng = np.random.default_rng(0)
    xa, wa = rng.standard_normal(xs), rng.standard_normal(ws)
    ba = rng.standard_normal(view(xa, wa)[1].shape[0])  # out_features after the view
    res = []
    for dev in ("cpu", "cuda"):
        leaves = [cgrad.tensor(a, dtype=dtype, device=dev, requires_grad=True) for a in (xa, wa, ba)]
        x, w = view(leaves[0], leaves[1])
        names = record_kernels(monkeypatch, cgrad.cuda._init()) if dev == "cuda" else []
        y = cF.linear(x, w, leaves[2] if with_bias else None)
        if dev == "cuda" and y.numel() and (xs[-1] or with_bias):
            assert names == ["linear"], names
        g = np.random.default_rng(1).standard_normal(y.shape)
        y.backward(cgrad.tensor(g, dtype=dtype, device=dev))
        res.append([y] + [leaf.grad for leaf in leaves[:2 + with_bias]])
    for c, d in zip(*res):
        assert_same_values(c, d, **tol)


def test_linear_module_step_on_the_device_is_one_kernel_forward(monkeypatch):
    lin, lind = cgrad.nn.Linear(5, 4).double(), cgrad.nn.Linear(5, 4).double()
    lind.load_state_dict(lin.state_dict())
    lind.to("cuda")
    xa = np.random.default_rng(2).standard_normal((3, 5))
    names = record_kernels(monkeypatch, cgrad.cuda._init())
    y = lind(cgrad.tensor(xa, dtype=cgrad.float64, device="cuda")).sum()
    assert names == ["linear", "sum"], names
    names.clear()
    y.backward()
    assert sorted(names) == ["matmul", "sum"], names  # no input gradient asked for
    lin(cgrad.tensor(xa, dtype=cgrad.float64)).sum().backward()
    for p, q in ((lin.weight, lind.weight), (lin.bias, lind.bias)):
        assert_same_values(p.grad, q.grad, rtol=1e-12, atol=1e-12)


def test_linear_second_derivative_on_the_device_matches_the_cpu():
    rng = np.random.default_rng(3)
    arrs = [rng.standard_normal(s) for s in ((3, 4), (2, 4), (2,), (3, 4))]
    res = []
    for dev in ("cpu", "cuda"):
        x, w, b = (cgrad.tensor(a, dtype=cgrad.float64, device=dev, requires_grad=True)
                   for a in arrs[:3])
        u = cgrad.tensor(arrs[3], dtype=cgrad.float64, device=dev)
        y = cF.linear(x, w, b)
        (gx,) = cgrad.autograd.grad((y * y).sum(), [x], create_graph=True)
        (gx * u).sum().backward()
        res.append([gx, x.grad, w.grad, b.grad])
    for c, d in zip(*res):
        assert_same_values(c, d, rtol=1e-12, atol=1e-12)


def test_linear_float16_on_the_device():
    rng = np.random.default_rng(4)
    xa, wa, ba = (rng.standard_normal(s).astype(np.float16) for s in ((8, 16), (5, 16), (5,)))
    x, w, b = (cgrad.tensor(a, dtype=cgrad.float16, device="cuda", requires_grad=True)
               for a in (xa, wa, ba))
    y = cF.linear(x, w, b)
    assert y.dtype == cgrad.float16
    want = xa.astype(np.float64) @ wa.astype(np.float64).T + ba
    np.testing.assert_allclose(host(y).astype(np.float64), want, rtol=1e-2, atol=2e-2)
    y.sum().backward()
    np.testing.assert_allclose(host(b.grad), np.full(5, 8.0))


def test_linear_device_errors():
    x = cgrad.zeros(2, 3, dtype=cgrad.float64, device="cuda", requires_grad=True)
    w = cgrad.zeros(4, 3, dtype=cgrad.float64)
    with pytest.raises(ValueError, match="cg_linear.*device|linear.*device"):
        cF.linear(x, w)
    with pytest.raises(ValueError, match="has 3 features, weight of shape \\(4, 2\\) takes 2"):
        cF.linear(x, w.to("cuda")[:, :2])
    assert x.grad is None
