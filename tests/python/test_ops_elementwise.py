"""Elementwise ops: binary with broadcasting and scalars, unary, activations,
comparisons, where/clamp, dtype creation and promotion, elementwise errors."""
import math

import numpy as np
import pytest

import cgrad
from oracle import Arg, Const, F, check_op, lib, to_numpy

# Broadcast-compatible shape pairs: equal, trailing, both sides size-1,
# rank mismatch, 0-d on either side, size-1 leading.
BROADCAST_PAIRS = [
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((4,), (3, 4)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (3, 1)),
    ((2, 1, 4), (1, 3, 1)),
    ((), (3, 4)),
    ((3, 4), ()),
    ((1,), (2, 3)),
    ((5,), (5,)),
]


def _ids(pairs):
    return [f"{a}-{b}" for a, b in pairs]


# ------------------------------------------------------------------ binary
@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS, ids=_ids(BROADCAST_PAIRS))
def test_add(sa, sb): check_op([sa, sb], lambda x, y: x + y)


@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS, ids=_ids(BROADCAST_PAIRS))
def test_sub(sa, sb): check_op([sa, sb], lambda x, y: x - y)


@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS, ids=_ids(BROADCAST_PAIRS))
def test_mul(sa, sb): check_op([sa, sb], lambda x, y: x * y)


@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS, ids=_ids(BROADCAST_PAIRS))
def test_div(sa, sb): check_op([sa, Arg(sb, 0.5, 2.0)], lambda x, y: x / y)


@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS[:6], ids=_ids(BROADCAST_PAIRS[:6]))
def test_pow_tensor(sa, sb): check_op([Arg(sa, 0.5, 2.0), sb], lambda x, y: x ** y)


@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS[:6], ids=_ids(BROADCAST_PAIRS[:6]))
def test_maximum(sa, sb): check_op([sa, sb], lambda x, y: lib(x).maximum(x, y))


@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS[:6], ids=_ids(BROADCAST_PAIRS[:6]))
def test_minimum(sa, sb): check_op([sa, sb], lambda x, y: lib(x).minimum(x, y))


def test_maximum_method(): check_op([(3, 4), (4,)], lambda x, y: x.maximum(y))
def test_minimum_method(): check_op([(3, 4), (4,)], lambda x, y: x.minimum(y))
def test_pow_method(): check_op([Arg((3, 4), 0.5, 2), (3, 4)], lambda x, y: x.pow(y))
def test_mul_same_tensor_twice(): check_op([(3, 4)], lambda x: x * x)
def test_add_same_tensor_broadcast_self(): check_op([(3, 1)], lambda x: x + x.T)
def test_expression_chain(): check_op([(3, 4), (4,)], lambda x, y: (x * y + y) / (1 + y * y) - x)


def test_maximum_ties_split_like_torch():
    # Equal operands: PyTorch sends half the gradient to each side.
    a = cgrad.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = cgrad.tensor([1.0, 0.0, 3.0], requires_grad=True)
    cgrad.maximum(a, b).sum().backward()
    np.testing.assert_allclose(to_numpy(a.grad), [0.5, 1.0, 0.5])
    np.testing.assert_allclose(to_numpy(b.grad), [0.5, 0.0, 0.5])


# ------------------------------------------------------------------ scalars
SCALAR_CASES = {
    "x+2": (lambda x: x + 2, {}),
    "2+x": (lambda x: 2 + x, {}),
    "x+2.5": (lambda x: x + 2.5, {}),
    "x-2": (lambda x: x - 2, {}),
    "2-x": (lambda x: 2 - x, {}),
    "x*3": (lambda x: x * 3, {}),
    "3*x": (lambda x: 3 * x, {}),
    "x*-0.5": (lambda x: x * -0.5, {}),
    "x/2": (lambda x: x / 2, {}),
    "2/x": (lambda x: 2 / x, {"positive": True}),
    "-2.5/x": (lambda x: -2.5 / x, {"positive": True}),
    "x**2": (lambda x: x ** 2, {}),
    "x**3": (lambda x: x ** 3, {}),
    "x**0.5": (lambda x: x ** 0.5, {"positive": True}),
    "x**-1.5": (lambda x: x ** -1.5, {"positive": True}),
    "x**0": (lambda x: x ** 0, {}),
    "x**1": (lambda x: x ** 1, {}),
    "2**x": (lambda x: 2 ** x, {}),
    "0.5**x": (lambda x: 0.5 ** x, {}),
    "x.pow(2)": (lambda x: x.pow(2), {}),
    "-x": (lambda x: -x, {}),
}


@pytest.mark.parametrize("name", list(SCALAR_CASES))
def test_scalar_operand(name):
    fn, kw = SCALAR_CASES[name]
    check_op([(3, 4)], fn, **kw)


@pytest.mark.parametrize("shape", [(), (1,), (2, 3, 4)])
def test_scalar_operand_shapes(shape):
    check_op([shape], lambda x: 1.5 * x - x / 3 + 2 ** x)


# ------------------------------------------------------------------ unary
UNARY = {
    "exp": (lambda x: x.exp(), {}),
    "log": (lambda x: x.log(), {"positive": True}),
    "sqrt": (lambda x: x.sqrt(), {"positive": True}),
    "abs": (lambda x: x.abs(), {}),
    "abs_builtin": (lambda x: abs(x), {}),
    "neg": (lambda x: x.neg(), {}),
    "relu": (lambda x: x.relu(), {}),
    "sigmoid": (lambda x: x.sigmoid(), {}),
    "tanh": (lambda x: x.tanh(), {}),
    "sign": (lambda x: x.sign(), {}),
    "floor": (lambda x: x.floor(), {"low": -3.0, "high": 3.0}),
    "ceil": (lambda x: x.ceil(), {"low": -3.0, "high": 3.0}),
    "round": (lambda x: x.round(), {"low": -3.0, "high": 3.0}),
    "exp_large": (lambda x: x.exp(), {"low": -20.0, "high": 20.0, "rtol": 1e-4}),
    "log_small": (lambda x: x.log(), {"low": 1e-2, "high": 1.0, "rtol": 1e-4}),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_method(name):
    fn, kw = UNARY[name]
    check_op([(3, 4)], fn, **kw)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "abs", "neg", "relu", "sigmoid",
                                  "tanh", "sign", "floor", "ceil", "round"])
def test_unary_function(name):
    kw = {"positive": True} if name in ("log", "sqrt") else {}
    check_op([(2, 3)], lambda x: getattr(lib(x), name)(x), **kw)


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)])
def test_unary_shapes(shape): check_op([shape], lambda x: x.tanh() * x.exp())


def test_round_half_to_even():
    x = cgrad.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49, -0.51], dtype=cgrad.float64)
    np.testing.assert_array_equal(to_numpy(x.round()), np.round(to_numpy(x)))


def test_sign_of_zero_and_abs_grad_at_zero():
    x = cgrad.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    np.testing.assert_array_equal(to_numpy(x.sign()), [-1.0, 0.0, 1.0])
    x.abs().sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [-1.0, 0.0, 1.0])  # sign(0) = 0


def test_relu_grad_at_zero_is_zero():
    x = cgrad.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    x.relu().sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [0.0, 0.0, 1.0])


# ------------------------------------------------------------ activations
ACTIVATIONS = {
    "relu": (lambda x: F(x).relu(x), {}),
    "leaky_relu": (lambda x: F(x).leaky_relu(x), {}),
    "leaky_relu_0.2": (lambda x: F(x).leaky_relu(x, 0.2), {}),
    "leaky_relu_kw": (lambda x: F(x).leaky_relu(x, negative_slope=1.5), {}),
    "elu": (lambda x: F(x).elu(x), {}),
    "elu_alpha": (lambda x: F(x).elu(x, alpha=0.7), {}),
    "gelu": (lambda x: F(x).gelu(x), {"low": -4.0, "high": 4.0}),
    "gelu_tanh": (lambda x: F(x).gelu(x, approximate="tanh"), {"low": -4.0, "high": 4.0}),
    "sigmoid": (lambda x: F(x).sigmoid(x), {"low": -8.0, "high": 8.0}),
    "tanh": (lambda x: F(x).tanh(x), {"low": -4.0, "high": 4.0}),
    "softplus": (lambda x: F(x).softplus(x), {"low": -5.0, "high": 5.0}),
    "softplus_beta": (lambda x: F(x).softplus(x, beta=2.0), {"low": -3.0, "high": 3.0}),
    # beta*x crosses the threshold inside the range: both branches and the switch
    "softplus_threshold": (lambda x: F(x).softplus(x, beta=2.0, threshold=3.0),
                           {"low": -1.0, "high": 4.0}),
    "softplus_large": (lambda x: F(x).softplus(x), {"low": 15.0, "high": 40.0}),
    "sigmoid_extreme": (lambda x: F(x).sigmoid(x), {"low": -40.0, "high": 40.0,
                                                   "gradgrad": False}),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation(name):
    fn, kw = ACTIVATIONS[name]
    check_op([(4, 5)], fn, **kw)


def test_elu_gradgrad_negative_side(): check_op([Arg((3, 4), -3.0, -0.1)], lambda x: F(x).elu(x))


def test_activation_extreme_values_finite():
    x = cgrad.tensor([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=cgrad.float32)
    assert np.isfinite(to_numpy(F(x).sigmoid(x))).all()
    assert np.isfinite(to_numpy(F(x).softplus(x))).all()
    assert np.isfinite(to_numpy(F(x).tanh(x))).all()
    np.testing.assert_allclose(to_numpy(F(x).softplus(x))[[0, 4]], [0.0, 1000.0])
    np.testing.assert_allclose(to_numpy(F(x).sigmoid(x))[[0, 4]], [0.0, 1.0])


# ------------------------------------------------------ clamp, where, misc
CLAMP = {
    "both": lambda x: x.clamp(-0.5, 0.7),
    "min_kw": lambda x: x.clamp(min=0.1),
    "max_kw": lambda x: x.clamp(max=-0.3),
    "function": lambda x: lib(x).clamp(x, min=-1.0, max=1.0),
}


@pytest.mark.parametrize("name", list(CLAMP))
def test_clamp(name): check_op([(4, 5)], CLAMP[name])


def test_clamp_gradient_at_bound_is_one():
    # PyTorch passes the gradient where x == bound (inside [lo, hi]).
    x = cgrad.tensor([-1.0, 0.0, 1.0, 2.0], requires_grad=True)
    x.clamp(0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [0.0, 1.0, 1.0, 0.0])


_COND = np.random.default_rng(1).random((3, 4)) > 0.5


def test_where(): check_op([Const(_COND), (3, 4), (3, 4)], lambda c, a, b: lib(a).where(c, a, b))
def test_where_broadcast(): check_op([Const(_COND[:, :1]), (4,), (3, 1)], lambda c, a, b: lib(a).where(c, a, b))
def test_where_from_comparison(): check_op([(3, 4)], lambda x: lib(x).where(x > 0, x, x * 0.1))


def test_where_cond_must_be_bool():
    a = cgrad.ones(3)
    with pytest.raises(TypeError, match="bool|dtype"):
        cgrad.where(cgrad.ones(3), a, a)


# ------------------------------------------------------------ comparisons
CMP = ["eq", "ne", "lt", "le", "gt", "ge"]
CMP_OPS = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__", "gt": "__gt__",
           "ge": "__ge__"}
NP_CMP = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
          "gt": np.greater, "ge": np.greater_equal}


@pytest.mark.parametrize("name", CMP)
@pytest.mark.parametrize("form", ["operator", "method", "function", "scalar", "rscalar"])
def test_comparison(name, form):
    rng = np.random.default_rng(3)
    a = rng.integers(-2, 3, size=(3, 4)).astype(np.float32)  # integer values: ties happen
    b = rng.integers(-2, 3, size=(4,)).astype(np.float32)
    ta, tb = cgrad.tensor(a, requires_grad=True), cgrad.tensor(b)
    if form == "operator":
        out, ref = getattr(ta, CMP_OPS[name])(tb), NP_CMP[name](a, b)
    elif form == "method":
        out, ref = getattr(ta, name)(tb), NP_CMP[name](a, b)
    elif form == "function":
        out, ref = getattr(cgrad, name)(ta, tb), NP_CMP[name](a, b)
    elif form == "scalar":
        out, ref = getattr(ta, CMP_OPS[name])(1.0), NP_CMP[name](a, 1.0)
    else:  # 1 <op> tensor goes through the reflected method
        op = {"eq": lambda t: 1 == t, "ne": lambda t: 1 != t, "lt": lambda t: 1 < t,
              "le": lambda t: 1 <= t, "gt": lambda t: 1 > t, "ge": lambda t: 1 >= t}[name]
        out, ref = op(ta), NP_CMP[name](1.0, a)
    assert out.dtype == cgrad.bool
    assert not out.requires_grad
    assert to_numpy(out).dtype == np.bool_
    np.testing.assert_array_equal(to_numpy(out), ref)


def test_comparison_int_vs_float():
    a = cgrad.tensor([1, 2, 3])
    np.testing.assert_array_equal(to_numpy(a < 2.5), [True, True, False])
    np.testing.assert_array_equal(to_numpy(a == cgrad.tensor([1.0, 0.0, 3.0])), [True, False, True])


# ----------------------------------------------------------------- dtypes
def test_default_dtypes():
    assert cgrad.tensor([1.0, 2.0]).dtype == cgrad.float32
    assert cgrad.tensor(1.5).dtype == cgrad.float32
    assert cgrad.tensor([1, 2]).dtype == cgrad.int64
    assert cgrad.tensor([True, False]).dtype == cgrad.bool
    assert cgrad.tensor([1, 2.5]).dtype == cgrad.float32
    assert cgrad.tensor(np.zeros(3)).dtype == cgrad.float64  # numpy keeps its dtype
    assert cgrad.tensor(np.zeros(3, np.float32)).dtype == cgrad.float32
    assert cgrad.tensor(np.arange(3)).dtype == cgrad.int64
    assert cgrad.tensor([1.0], dtype=cgrad.float64).dtype == cgrad.float64
    assert cgrad.zeros(2, 3).dtype == cgrad.float32
    assert cgrad.ones(2).dtype == cgrad.float32
    assert cgrad.randn(2).dtype == cgrad.float32
    assert cgrad.rand(2).dtype == cgrad.float32
    assert cgrad.arange(5).dtype == cgrad.int64
    assert cgrad.arange(0.0, 1.0, 0.25).dtype == cgrad.float32
    assert cgrad.zeros(2, dtype=cgrad.float64).dtype == cgrad.float64


def test_tensor_from_scalar_is_0d():
    for data in (2.0, 3, True, np.float64(1.5), np.array(2.5), np.array(7)):
        t = cgrad.tensor(data)
        assert t.shape == () and t.ndim == 0 and t.numel() == 1, (data, t.shape)
        assert to_numpy(t).shape == ()
    assert cgrad.tensor(2.0, dtype=cgrad.float64, requires_grad=True).shape == ()


def test_float32_float64_promotes_to_float64():
    a = cgrad.tensor([1.0, 2.0], dtype=cgrad.float32, requires_grad=True)
    b = cgrad.tensor([[3.0], [4.0]], dtype=cgrad.float64, requires_grad=True)
    for out in (a + b, b + a, a * b, a - b, a / b, cgrad.maximum(a, b)):
        assert out.dtype == cgrad.float64
    (a * b).sum().backward()
    assert a.grad.dtype == cgrad.float32  # gradient keeps each input's dtype
    assert b.grad.dtype == cgrad.float64
    np.testing.assert_allclose(to_numpy(a.grad), [7.0, 7.0])
    np.testing.assert_allclose(to_numpy(b.grad), [[3.0], [3.0]])


def test_scalar_keeps_tensor_float_dtype():
    for dt in (cgrad.float32, cgrad.float64):
        x = cgrad.ones(3, dtype=dt)
        for out in (x + 1.5, 2 * x, x / 3, x ** 2, 1 - x, 2.0 ** x):
            assert out.dtype == dt


def test_int_tensor_arithmetic():
    i = cgrad.tensor([1, 2, 3])
    assert (i + 1).dtype == cgrad.int64
    assert (i * i).dtype == cgrad.int64
    np.testing.assert_array_equal(to_numpy(i * 2 + 1), [3, 5, 7])
    f = i + 0.5  # int tensor + Python float -> default float dtype
    assert f.dtype == cgrad.float32
    np.testing.assert_allclose(to_numpy(f), [1.5, 2.5, 3.5])
    q = i / 2  # true division
    assert q.dtype == cgrad.float32
    np.testing.assert_allclose(to_numpy(q), [0.5, 1.0, 1.5])
    assert (i + cgrad.ones(3)).dtype == cgrad.float32
    assert (i + cgrad.ones(3, dtype=cgrad.float64)).dtype == cgrad.float64


def test_int_plus_float_tensor_gradient():
    i = cgrad.tensor([[1], [2]])
    x = cgrad.tensor([0.5, 1.5, 2.5], requires_grad=True)
    out = i * x
    assert out.dtype == cgrad.float32
    out.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [3.0, 3.0, 3.0])


def test_bool_tensor_arithmetic_promotes():
    m = cgrad.tensor([True, False, True])
    x = cgrad.tensor([1.0, 2.0, 3.0])
    out = x * m
    assert out.dtype == cgrad.float32
    np.testing.assert_allclose(to_numpy(out), [1.0, 0.0, 3.0])


def test_to_dtype_roundtrip():
    x = cgrad.tensor([1.7, -2.2, 3.0])
    assert x.double().dtype == cgrad.float64
    assert x.to(cgrad.float64).float().dtype == cgrad.float32
    np.testing.assert_array_equal(to_numpy(x.long()), [1, -2, 3])  # truncation like torch
    assert x.long().dtype == cgrad.int64


def test_cast_is_differentiable():
    # a float32 output of float64 inputs: differences need a large eps (exact
    # for these polynomials) to rise above float32 rounding
    check_op([(3, 4)], lambda x: x.float() * 2, keeps_dtype=False, eps=1e-2,
             atol=1e-3, rtol=1e-3, gradgrad=False)
    check_op([(3, 4)], lambda x: (x.float().double() * x), keeps_dtype=False, eps=1e-2,
             atol=1e-3, rtol=1e-3, gradgrad=False)


def test_int_tensor_cannot_require_grad():
    with pytest.raises((TypeError, RuntimeError), match="float|grad"):
        cgrad.tensor([1, 2, 3], requires_grad=True)
    t = cgrad.tensor([1, 2, 3])
    with pytest.raises((TypeError, RuntimeError), match="float|grad"):
        t.requires_grad_()


# ----------------------------------------------------------------- errors
def test_broadcast_shape_mismatch_raises():
    a, b = cgrad.ones(3, 4), cgrad.ones(5)
    for op in (lambda: a + b, lambda: a - b, lambda: a * b, lambda: a / b, lambda: a ** b,
               lambda: cgrad.maximum(a, b), lambda: a < b, lambda: cgrad.where(a > 0, a, b)):
        with pytest.raises(ValueError, match=r"broadcast|shape|size"):
            op()


def test_shape_error_message_names_shapes():
    with pytest.raises(ValueError) as info:
        cgrad.ones(2, 3) + cgrad.ones(4, 3)
    msg = str(info.value)
    assert "2" in msg and "4" in msg


def test_unsupported_operand_type():
    x = cgrad.ones(3)
    for bad in ("a", object(), [1, 2, 3j]):
        with pytest.raises(TypeError):
            x + bad


def test_nan_propagates():
    nan = float("nan")
    x = cgrad.tensor([1.0, nan, -1.0], requires_grad=True)
    for out, mask in ((x.exp(), [0, 1, 0]), (x * 2, [0, 1, 0]), (x.relu(), [0, 1, 0]),
                      (x.sigmoid(), [0, 1, 0]), (x.tanh(), [0, 1, 0]), (x + x, [0, 1, 0])):
        np.testing.assert_array_equal(np.isnan(to_numpy(out)), np.array(mask, bool))
    y = (x * x).sum()
    assert math.isnan(y.item())
    y.backward()  # no error: gradient is NaN only where the input is
    np.testing.assert_array_equal(np.isnan(to_numpy(x.grad)), [False, True, False])


def test_domain_errors_give_nan_inf_not_exceptions():
    x = cgrad.tensor([-1.0, 0.0, 4.0])
    np.testing.assert_array_equal(np.isnan(to_numpy(x.log())), [True, False, False])
    assert to_numpy(x.log())[1] == -np.inf
    np.testing.assert_array_equal(np.isnan(to_numpy(x.sqrt())), [True, False, False])
    r = to_numpy(1 / x)
    assert r[1] == np.inf and r[0] == -1.0


def test_empty_elementwise():
    a = cgrad.zeros(0, 3, requires_grad=True)
    b = cgrad.ones(3)
    out = (a * b).exp() + 1
    assert out.shape == (0, 3)
    out.sum().backward()
    assert a.grad.shape == (0, 3)
    assert (cgrad.ones(0) + cgrad.ones(1)).shape == (0,)
    with pytest.raises(ValueError):
        cgrad.ones(0) + cgrad.ones(2)


# --------------------------------------------------- NumPy scalar operands
NP_SCALARS = [np.float64(2.5), np.float32(-1.5), np.int64(3)]


@pytest.mark.parametrize("s", NP_SCALARS, ids=lambda s: type(s).__name__)
def test_numpy_scalar_operand_right(s):
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    out = x * s + s
    assert isinstance(out, cgrad.Tensor) and out.dtype == cgrad.float32  # like a Python number
    out.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [float(s)] * 2)


@pytest.mark.parametrize("s", NP_SCALARS, ids=lambda s: type(s).__name__)
def test_numpy_scalar_operand_left(s):
    # NumPy's scalar __mul__ runs first: the Tensor must make NumPy defer
    # (PyTorch sets __array_priority__) instead of being turned into an array.
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    out = s * x - s
    assert isinstance(out, cgrad.Tensor), type(out)
    assert out.dtype == cgrad.float32 and out.requires_grad
    out.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [float(s)] * 2)
    plain = s * cgrad.tensor([1.0, 2.0])
    assert isinstance(plain, cgrad.Tensor), type(plain)


# ------------------------------------------------------------ in-place ops
def test_inplace_values_and_broadcasting():
    a = cgrad.zeros(2, 3)
    assert a.add_(cgrad.tensor([1.0, 2.0, 3.0])) is a
    np.testing.assert_array_equal(to_numpy(a), [[1, 2, 3], [1, 2, 3]])
    a.add_(cgrad.ones(3), alpha=2)
    a.add_(0.5)
    a.sub_(cgrad.ones(2, 1))
    a.mul_(2)
    np.testing.assert_array_equal(to_numpy(a), [[5, 7, 9], [5, 7, 9]])
    a.mul_(cgrad.tensor([[1.0], [0.0]]))
    np.testing.assert_array_equal(to_numpy(a), [[5, 7, 9], [0, 0, 0]])
    assert a.fill_(7) is a and (to_numpy(a) == 7).all()
    assert a.zero_() is a and (to_numpy(a) == 0).all()
    a.copy_(cgrad.tensor([[1, 2, 3], [4, 5, 6]]))  # casts int64 -> float32
    assert a.dtype == cgrad.float32
    np.testing.assert_array_equal(to_numpy(a), [[1, 2, 3], [4, 5, 6]])
    a.copy_(cgrad.tensor([9.0, 8.0, 7.0]))
    np.testing.assert_array_equal(to_numpy(a), [[9, 8, 7], [9, 8, 7]])


def test_inplace_operators_keep_identity():
    x = cgrad.ones(3)
    alias = x
    x += 2
    x -= cgrad.tensor([1.0, 0.0, 0.0])
    x *= 2
    assert x is alias
    np.testing.assert_array_equal(to_numpy(alias), [4.0, 6.0, 6.0])


def test_inplace_on_view_writes_base():
    base = cgrad.zeros(3, 4)
    base[:, 1].add_(1.0)
    base[2].mul_(0.0).add_(5.0)
    base.T[0].fill_(-1.0)
    expect = np.zeros((3, 4))
    expect[:, 1] += 1
    expect[2] = 5
    expect[:, 0] = -1
    np.testing.assert_array_equal(to_numpy(base), expect)


def test_inplace_refused_on_requires_grad_with_grad_mode():
    w = cgrad.ones(3, requires_grad=True)
    for op in (lambda: w.add_(1.0), lambda: w.mul_(2.0), lambda: w.zero_(), lambda: w.fill_(1.0),
               lambda: w.sub_(cgrad.ones(3)), lambda: w.copy_(cgrad.ones(3))):
        with pytest.raises(RuntimeError, match="grad"):
            op()
    with pytest.raises(RuntimeError, match="grad"):
        w += 1
    np.testing.assert_array_equal(to_numpy(w), [1.0, 1.0, 1.0])  # nothing was written


def test_inplace_allowed_under_no_grad():
    w = cgrad.ones(3, requires_grad=True)
    with cgrad.no_grad():
        w -= 0.5
        w.mul_(cgrad.tensor([1.0, 2.0, 4.0]))
    assert w.requires_grad and w.is_leaf
    np.testing.assert_array_equal(to_numpy(w), [0.5, 1.0, 2.0])
    (w * w).sum().backward()
    np.testing.assert_array_equal(to_numpy(w.grad), [1.0, 2.0, 4.0])


def test_inplace_errors():
    a = cgrad.zeros(2, 3)
    with pytest.raises(ValueError, match="broadcast|shape"):
        a.add_(cgrad.ones(2, 3, 1))
    with pytest.raises(ValueError, match="broadcast|shape"):
        a.copy_(cgrad.ones(3, 3))
    with pytest.raises(TypeError):
        cgrad.tensor([1, 2]).add_(0.5)  # float result cannot go into int64
    with pytest.raises((ValueError, RuntimeError)):
        cgrad.zeros(3, 1).expand(3, 4).add_(1.0)  # overlapping writes


def test_modified_saved_tensor_detected():
    p = cgrad.ones(3, requires_grad=True)
    q = cgrad.ones(3)
    r = p * q
    q.mul_(3)
    with pytest.raises(RuntimeError, match="in-place|modified|version"):
        r.sum().backward()


# ------------------------------------------------------------- creation
def test_creation_shapes_dtypes_flags():
    assert cgrad.zeros(2, 3).shape == (2, 3) and cgrad.zeros((2, 3)).shape == (2, 3)
    assert cgrad.ones(4).shape == (4,) and cgrad.empty(2, 2).shape == (2, 2)
    assert cgrad.zeros(()).shape == () or cgrad.zeros(()).numel() == 1
    assert (to_numpy(cgrad.ones(2, 2, dtype=cgrad.float64)) == 1).all()
    assert (to_numpy(cgrad.zeros(3, dtype=cgrad.int64)) == 0).all()
    f = cgrad.full((2, 3), 2.5)
    assert f.dtype == cgrad.float32 and (to_numpy(f) == 2.5).all()
    assert cgrad.full((2,), 3, dtype=cgrad.float64).dtype == cgrad.float64
    for make in (lambda: cgrad.zeros(2, requires_grad=True), lambda: cgrad.ones(2, requires_grad=True),
                 lambda: cgrad.randn(2, requires_grad=True), lambda: cgrad.rand(2, requires_grad=True),
                 lambda: cgrad.empty(2, requires_grad=True)):
        t = make()
        assert t.requires_grad and t.is_leaf and t.grad is None and t.grad_fn is None
    src = cgrad.ones(2, 3, dtype=cgrad.float64)
    assert cgrad.zeros_like(src).dtype == cgrad.float64 and cgrad.zeros_like(src).shape == (2, 3)
    assert (to_numpy(cgrad.ones_like(src)) == 1).all()


def test_arange_matches_numpy():
    for args in ((5,), (2, 7), (0, 10, 3), (5, 0, -2), (0.0, 1.0, 0.1), (-1.5, 1.5, 0.5), (3.5,)):
        t = cgrad.arange(*args)
        ref = np.arange(*args)
        assert t.shape == ref.shape, args
        np.testing.assert_allclose(to_numpy(t), ref, rtol=1e-6, atol=1e-7)
        expect_dtype = cgrad.int64 if all(isinstance(a, int) for a in args) else cgrad.float32
        assert t.dtype == expect_dtype, args
    assert cgrad.arange(4, dtype=cgrad.float64).dtype == cgrad.float64
    with pytest.raises(ValueError):
        cgrad.arange(0, 5, 0)


def test_random_creation_statistics_and_seed():
    cgrad.manual_seed(7)
    a = to_numpy(cgrad.randn(20000))
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1) < 0.05
    u = to_numpy(cgrad.rand(20000))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    r = cgrad.randint(-2, 3, (1000,))
    assert r.dtype == cgrad.int64 and set(np.unique(to_numpy(r))) == {-2, -1, 0, 1, 2}
    cgrad.manual_seed(7)
    np.testing.assert_array_equal(to_numpy(cgrad.randn(20000)), a)
    assert cgrad.randn(2, 3, dtype=cgrad.float64).dtype == cgrad.float64


def test_creation_errors():
    with pytest.raises(ValueError):
        cgrad.zeros(-1, 2)
    with pytest.raises(ValueError):
        cgrad.randint(3, 3, (2,))
    with pytest.raises(TypeError):
        cgrad.zeros(2, dtype="float32x")
