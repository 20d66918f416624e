"""Reductions, softmax and matmul on the "cuda" device: values and gradients
checked against the CPU backend (float64 tight, float32 at float32
precision), over several dims / keepdim / strided inputs / empty dims,
with the NaN and tie rules of the C kernels; a small MLP trained one step
on both devices; gradients through the device against float64 central
differences and against PyTorch.

In CI "cuda" is the NumPy reference device (see device_util.py)."""
import numpy as np
import pytest

import cgrad
from cgrad._core import sum_to_size
from device_util import assert_same_values, host, record_kernels

F64 = dict(rtol=1e-12, atol=1e-12)
F32 = dict(rtol=2e-5, atol=2e-6)
DTYPES = [(cgrad.float64, F64), (cgrad.float32, F32)]


def _pair(shape, dtype=cgrad.float64, seed=0, data=None, grad=True):
    a = np.random.default_rng(seed).standard_normal(shape) if data is None else np.asarray(data)
    x = cgrad.tensor(a, dtype=dtype, requires_grad=grad)
    xd = cgrad.tensor(a, dtype=dtype, device="cuda", requires_grad=grad)
    return x, xd


def _check(fn, shape, dtype, tol, seed=0, data=None, prep=None):
    """fn on both devices: same values; then d sum(fn(x) * w) / dx equal."""
    x, xd = _pair(shape, dtype, seed, data)
    xi, xdi = (x, xd) if prep is None else (prep(x), prep(xd))
    y, yd = fn(xi), fn(xdi)
    assert yd.device == "cuda"
    assert_same_values(y, yd, **tol)
    w = np.random.default_rng(seed + 100).standard_normal(y.shape)
    (y * cgrad.tensor(w, dtype=dtype)).sum().backward()
    (yd * cgrad.tensor(w, dtype=dtype, device="cuda")).sum().backward()
    assert xd.grad.device == "cuda"
    assert_same_values(x.grad, xd.grad, **tol)


DIMS = [None, 0, -1, 1, (0, 2), (2, 0), (0, 1, 2)]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("op", ["sum", "mean", "amax", "amin", "logsumexp"])
def test_reductions_over_dims_match_cpu(op, dim, keepdim, dtype, tol):
    if op == "logsumexp" and dim is None:
        dim = (0, 1, 2)
    if dim is None:
        _check(lambda t: getattr(t, op)(), (3, 4, 5), dtype, tol)
    else:
        _check(lambda t: getattr(t, op)(dim, keepdim=keepdim), (3, 4, 5), dtype, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("dim,correction", [(None, 1), (0, 0), (1, 1), ((0, 2), 2.5), (-1, 0)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_var_and_std_match_cpu(dim, correction, keepdim, dtype, tol):
    _check(lambda t: t.var(dim, correction=correction, keepdim=keepdim), (3, 4, 5), dtype, tol)
    _check(lambda t: t.std(dim, correction=correction, keepdim=keepdim), (3, 4, 5), dtype, tol, seed=1)


def test_var_with_correction_at_least_the_count_is_inf_or_nan_as_on_cpu():
    x, xd = _pair((2, 3))
    for corr in (3, 5):
        assert_same_values(x.var(1, correction=corr), xd.var(1, correction=corr))
    c, cd = _pair((2, 3), data=np.ones((2, 3)), grad=False)
    assert np.isnan(host(cd.var(1, correction=3))).all()
    assert_same_values(c.var(1, correction=3), cd.var(1, correction=3))


@pytest.mark.parametrize("op", ["sum", "mean", "amax", "var", "logsumexp"])
@pytest.mark.parametrize("layout", ["transposed", "expanded", "sliced"])
def test_reductions_of_strided_inputs_match_cpu(op, layout):
    prep = {"transposed": lambda t: t.transpose(0, 2),
            "expanded": lambda t: t[:, :1].expand(3, 6, 5),
            "sliced": lambda t: t[::2, 1:]}[layout]
    _check(lambda t: getattr(t, op)((0, 1)), (3, 4, 5), cgrad.float64, F64, prep=prep)
    _check(lambda t: getattr(t, op)(-1, keepdim=True), (3, 4, 5), cgrad.float64, F64, prep=prep)


def test_integer_and_bool_sums_and_extrema():
    a = np.array([[3, -7, 2**62], [2**62, 5, 2**62]], dtype=np.int64)
    x, xd = cgrad.tensor(a), cgrad.tensor(a, device="cuda")
    for f in (lambda t: t.sum(), lambda t: t.sum(0), lambda t: t.sum(1, keepdim=True),
              lambda t: t.amax(1), lambda t: t.amin(0), lambda t: t.argmax(1), lambda t: t.argmin()):
        y, yd = f(x), f(xd)
        assert yd.dtype == cgrad.int64
        assert_same_values(y, yd)
    assert host(xd.sum(0))[2] == -2**63  # wraps, as on the cpu
    b = a > 0
    bc, bd = cgrad.tensor(b), cgrad.tensor(b, device="cuda")
    assert bd.sum().dtype == cgrad.int64
    assert_same_values(bc.sum(), bd.sum())
    assert_same_values(bc.sum(0), bd.sum(0))


def test_zero_dim_tensor_reductions():
    for v in (2.5, -np.inf, np.nan):
        x, xd = _pair((), data=v, grad=False)
        for f in (lambda t: t.sum(), lambda t: t.mean(), lambda t: t.amax(), lambda t: t.argmax(),
                  lambda t: t.logsumexp(0), lambda t: t.softmax(0), lambda t: t.log_softmax(-1),
                  lambda t: t.sum(0, keepdim=True)):
            assert_same_values(f(x), f(xd))
    _check(lambda t: t.sum() * t.logsumexp(0) + t.softmax(0), (), cgrad.float64, F64)


# --------------------------------------------------------- max/min ties, NaN
def test_max_min_gradient_is_shared_by_ties():
    data = [[1.0, 3.0, 3.0, -2.0], [0.5, 0.5, 0.5, 0.5], [-1.0, -4.0, 2.0, -4.0]]
    for op in ("amax", "amin"):
        for dim in (None, 1, 0):
            f = (lambda t: getattr(t, op)()) if dim is None else (lambda t: getattr(t, op)(dim))
            _check(f, None, cgrad.float64, F64, data=data)


def test_nan_propagates_through_max_min_logsumexp_softmax():
    data = np.array([[1.0, np.nan, 3.0], [np.inf, 1.0, 2.0], [-np.inf, -np.inf, -np.inf]])
    x, xd = _pair(None, data=data, grad=False)
    for f in (lambda t: t.amax(1), lambda t: t.amin(1), lambda t: t.amax(0), lambda t: t.amax(),
              lambda t: t.logsumexp(1), lambda t: t.logsumexp(0), lambda t: t.softmax(1),
              lambda t: t.log_softmax(1), lambda t: t.softmax(0), lambda t: t.sum(1), lambda t: t.var(0)):
        assert_same_values(f(x), f(xd))
    got = host(xd.amax(1))
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf
    assert host(xd.logsumexp(1))[2] == -np.inf


def test_argmax_argmin_first_index_and_first_nan():
    data = np.array([[1.0, 5.0, 5.0, 0.0, 5.0],
                     [2.0, np.nan, 7.0, np.nan, -1.0],
                     [-3.0, -3.0, -3.0, -3.0, -3.0],
                     [0.0, 9.0, -9.0, -9.0, 9.0]])
    for dtype in (cgrad.float64, cgrad.float32):
        x, xd = _pair(None, dtype, data=data, grad=False)
        for op in ("argmax", "argmin"):
            for kw in ({}, {"dim": 1}, {"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": 0, "keepdim": True}):
                y, yd = getattr(x, op)(**kw), getattr(xd, op)(**kw)
                assert yd.dtype == cgrad.int64 and yd.device == "cuda"
                assert_same_values(y, yd)
        np.testing.assert_array_equal(host(xd.argmax(1)), [1, 1, 0, 1])
        np.testing.assert_array_equal(host(xd.argmin(1)), [3, 1, 0, 2])
        assert host(xd.argmax()) == 6  # the first NaN of the flattened tensor
    # row-major position over a strided (transposed) input
    x, xd = _pair((3, 4, 5), seed=7, grad=False)
    for op in ("argmax", "argmin"):
        for kw in ({}, {"dim": 0}, {"dim": 2, "keepdim": True}):
            assert_same_values(getattr(x.transpose(0, 2), op)(**kw), getattr(xd.transpose(0, 2), op)(**kw))


def test_max_min_with_dim_return_values_and_indices():
    x, xd = _pair((3, 4, 5), seed=3, grad=False)
    for op in ("max", "min"):
        for dim, keep in ((1, False), (-1, True), (0, False)):
            try:
                r = getattr(x, op)(dim, keepdim=keep)
                rd = getattr(xd, op)(dim, keepdim=keep)
            except NotImplementedError as e:  # gather (indexing) has no device kernel yet
                assert "cuda" in str(e)
                pytest.skip(f"{op}(dim) needs gather on the device: {e}")
            assert_same_values(r.values, rd.values)
            assert_same_values(r.indices, rd.indices)


# ------------------------------------------------------------ empty dims
def test_empty_reductions_give_identities_as_on_cpu():
    for shape, dim in (((2, 0), 1), ((2, 0, 3), (1, 2)), ((0, 3), 1), ((0, 3), 0), ((2, 0), None)):
        x, xd = _pair(shape, grad=False)
        for op in ("sum", "mean", "var", "logsumexp"):
            if op == "logsumexp" and dim is None:
                continue
            y = getattr(x, op)() if dim is None else getattr(x, op)(dim)
            yd = getattr(xd, op)() if dim is None else getattr(xd, op)(dim)
            assert_same_values(y, yd)
    x, xd = _pair((0, 3), grad=False)
    for op in ("amax", "amin", "argmax", "argmin"):
        assert_same_values(getattr(x, op)(1), getattr(xd, op)(1))  # nothing to reduce into
    x, xd = _pair((2, 0), grad=False)
    for op in ("amax", "amin", "argmax", "argmin"):
        with pytest.raises(ValueError, match="zero-size dim"):
            getattr(x, op)(1)
        with pytest.raises(ValueError, match="zero-size dim"):
            getattr(xd, op)(1)
    for d in (0, 1):
        assert_same_values(x.softmax(d), xd.softmax(d))
        assert_same_values(x.log_softmax(d), xd.log_softmax(d))


def test_empty_sum_gradient_flows_on_the_device():
    x, xd = _pair((2, 0, 3))
    x.sum(1).sum().backward()
    xd.sum(1).sum().backward()
    assert xd.grad.device == "cuda" and xd.grad.shape == (2, 0, 3)
    assert_same_values(x.grad, xd.grad)


# ------------------------------------------------------------ sum_to_shape
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("bshape", [(5,), (1, 5), (4, 1), (3, 1, 5), (1, 1, 1), ()])
def test_broadcast_backward_sums_to_the_operand_shape(bshape, dtype, tol):
    a, ad = _pair((3, 4, 5), dtype)
    b, bd = _pair(bshape, dtype, seed=1)
    y, yd = a * b + b, ad * bd + bd
    assert_same_values(y, yd, **tol)
    w = np.random.default_rng(5).standard_normal(y.shape)
    (y * cgrad.tensor(w, dtype=dtype)).sum().backward()
    (yd * cgrad.tensor(w, dtype=dtype, device="cuda")).sum().backward()
    assert bd.grad.device == "cuda" and bd.grad.shape == bshape
    assert_same_values(b.grad, bd.grad, **tol)
    assert_same_values(a.grad, ad.grad, **tol)


def test_sum_to_size_values_gradients_and_errors():
    _check(lambda t: sum_to_size(t, 4, 1), (2, 4, 3), cgrad.float64, F64)
    _check(lambda t: sum_to_size(t, 3), (2, 4, 3), cgrad.float64, F64, prep=lambda t: t.transpose(0, 1))
    i = np.arange(12).reshape(3, 4)
    assert_same_values(sum_to_size(cgrad.tensor(i), 1, 4), sum_to_size(cgrad.tensor(i, device="cuda"), 1, 4))
    assert_same_values(sum_to_size(cgrad.tensor(i > 4), 3, 1), sum_to_size(cgrad.tensor(i > 4, device="cuda"), 3, 1))
    xd = cgrad.zeros(3, 4, device="cuda")
    assert sum_to_size(xd, 3, 4) is not None
    with pytest.raises(ValueError, match="cannot sum shape"):
        sum_to_size(xd, 2, 4)


# ------------------------------------------------------------ softmax
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_matches_cpu(op, dim, dtype, tol):
    _check(lambda t: getattr(t, op)(dim), (3, 4, 5), dtype, tol)
    _check(lambda t: getattr(cgrad.nn.functional, op)(t, dim), (2, 3, 4), dtype, tol, seed=2,
           prep=lambda t: t.transpose(0, 2))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_backward_is_one_kernel_and_twice_differentiable(op, monkeypatch):
    x, xd = _pair((3, 5))
    yd = getattr(xd, op)(1).sum(0).sum()
    names = record_kernels(monkeypatch, cgrad.cuda._init())
    yd.backward()
    assert names == [f"{op}_backward"], names
    monkeypatch.undo()
    getattr(x, op)(1).sum().backward()
    assert_same_values(x.grad, xd.grad, rtol=1e-12, atol=1e-14)
    out = []
    for p in (x, xd):
        p.grad = None
        (g,) = cgrad.autograd.grad([(getattr(p, op)(1) ** 2).sum()], [p], create_graph=True)
        (g * g).sum().backward()
        out.append(p.grad)
    assert_same_values(out[0], out[1], rtol=1e-10, atol=1e-12)


def test_softmax_with_large_and_minus_inf_logits():
    data = np.array([[1000.0, 1001.0, -np.inf, 999.0], [-1e4, 0.0, 1e4, 5.0]])
    for op in ("softmax", "log_softmax"):
        _check(lambda t: getattr(t, op)(1), None, cgrad.float64, F64, data=data)
        _check(lambda t: getattr(t, op)(1), None, cgrad.float32, F32, data=data)


def test_dtype_errors_match_cpu():
    i, idev = cgrad.tensor([[1, 2], [3, 4]]), cgrad.tensor([[1, 2], [3, 4]], device="cuda")
    for f in (lambda t: t.mean(), lambda t: t.var(), lambda t: t.logsumexp(0), lambda t: t.softmax(0),
              lambda t: t.log_softmax(1), lambda t: t @ t):
        with pytest.raises(TypeError) as ec:
            f(i)
        with pytest.raises(TypeError) as ed:
            f(idev)
        assert str(ec.value) == str(ed.value)
    xd = cgrad.zeros(2, 3, device="cuda")
    with pytest.raises(IndexError):
        xd.sum(2)
    with pytest.raises(ValueError, match="more than once"):
        xd.sum((1, 1))
    with pytest.raises(ValueError, match="correction"):
        xd.var(correction=-1)


# ------------------------------------------------------------ matmul
MATMUL_SHAPES = [((4,), (4,)), ((4,), (4, 3)), ((2, 4), (4,)), ((2, 4), (4, 3)),
                 ((5, 2, 4), (4, 3)), ((2, 4), (5, 4, 3)), ((5, 2, 4), (5, 4, 3)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((6, 2, 4), (4,)), ((4,), (6, 4, 3)),
                 ((1, 4), (4, 1))]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul_shapes_match_cpu(sa, sb, dtype, tol):
    a, ad = _pair(sa, dtype)
    b, bd = _pair(sb, dtype, seed=1)
    y, yd = a @ b, ad @ bd
    assert yd.device == "cuda" and yd.shape == y.shape
    assert_same_values(y, yd, **tol)
    w = np.random.default_rng(2).standard_normal(y.shape)
    (y * cgrad.tensor(w, dtype=dtype)).sum().backward()
    (yd * cgrad.tensor(w, dtype=dtype, device="cuda")).sum().backward()
    assert ad.grad.device == "cuda" and bd.grad.device == "cuda"
    assert_same_values(a.grad, ad.grad, **tol)
    assert_same_values(b.grad, bd.grad, **tol)


def test_matmul_of_transposed_expanded_and_sliced_operands():
    a, ad = _pair((4, 6))
    b, bd = _pair((3, 4), seed=1)
    for f in (lambda p, q: p.T @ q.T, lambda p, q: q[:, ::2] @ p[::2, :],
              lambda p, q: p.unsqueeze(0).expand(2, 4, 6).transpose(1, 2) @ q.T,
              lambda p, q: q @ p[:, 1:4]):
        y, yd = f(a, b), f(ad, bd)
        assert_same_values(y, yd, **F64)
        y.sum().backward()
        yd.sum().backward()
    assert_same_values(a.grad, ad.grad, **F64)
    assert_same_values(b.grad, bd.grad, **F64)


def test_matmul_with_empty_dims():
    for sa, sb in (((2, 0), (0, 3)), ((0, 4), (4, 3)), ((2, 4), (4, 0)), ((0,), (0,)), ((3, 2, 0), (0, 5))):
        a, ad = _pair(sa)
        b, bd = _pair(sb, seed=1)
        y, yd = a @ b, ad @ bd
        assert_same_values(y, yd)
        y.sum().backward()
        yd.sum().backward()
        assert_same_values(a.grad, ad.grad)
        assert_same_values(b.grad, bd.grad)


def test_matmul_errors_name_the_devices_and_shapes():
    ad, b = cgrad.ones(2, 3, device="cuda"), cgrad.ones(3, 4)
    with pytest.raises(ValueError, match="cg_matmul.*'cuda'.*'cpu'"):
        ad @ b
    with pytest.raises(ValueError, match="cg_matmul.*'cpu'.*'cuda'"):
        b.T @ ad.T
    with pytest.raises(ValueError, match="not aligned"):
        ad @ cgrad.ones(2, 4, device="cuda")
    with pytest.raises(TypeError, match="same floating dtype"):
        ad @ cgrad.ones(3, 4, dtype=cgrad.float64, device="cuda")
    with pytest.raises(ValueError, match="at least 1 dim"):
        ad @ cgrad.tensor(2.0)
    with pytest.raises(ValueError, match="cannot broadcast"):
        cgrad.ones(2, 2, 3, device="cuda") @ cgrad.ones(3, 3, 4, device="cuda")


def test_matmul_second_derivative_on_the_device():
    a, ad = _pair((3, 4))
    b, bd = _pair((4, 2), seed=1)
    out = []
    for p, q in ((a, b), (ad, bd)):
        y = (p @ q).tanh().sum()
        (ga,) = cgrad.autograd.grad([y], [p], create_graph=True)
        (ga * ga).sum().backward()
        out.append(q.grad)
    assert out[1].device == "cuda"
    assert_same_values(out[0], out[1], rtol=1e-10, atol=1e-12)


def test_linear_backward_takes_no_copy_on_the_device(monkeypatch):
    # x @ w.T: w's gradient is computed in w's layout, so it becomes w.grad
    # as it is: the backward is 3 kernels (bias sum, two GEMMs), no copy
    lin, lind = cgrad.nn.Linear(4, 5).double(), cgrad.nn.Linear(4, 5).double()
    lind.load_state_dict(lin.state_dict())
    lind.to("cuda")
    x, xd = _pair((2, 3, 4))
    lin(x).sum().backward()
    y = lind(xd).sum()
    names = record_kernels(monkeypatch, cgrad.cuda._init())
    y.backward()
    assert sorted(names) == ["matmul", "matmul", "sum"], names
    assert lind.weight.grad.is_contiguous()
    for p, q in ((lin.weight, lind.weight), (lin.bias, lind.bias), (x, xd)):
        assert_same_values(p.grad, q.grad, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------ an MLP step
@pytest.mark.parametrize("dtype,tol", [(cgrad.float64, dict(rtol=1e-10, atol=1e-12)),
                                       (cgrad.float32, dict(rtol=1e-4, atol=1e-5))])
def test_small_mlp_forward_backward_matches_cpu(dtype, tol):
    rng = np.random.default_rng(11)
    xs, ys = rng.standard_normal((16, 8)), rng.integers(0, 3, 16)
    params = [rng.standard_normal((8, 32)) / 3, rng.standard_normal(32) / 10,
              rng.standard_normal((32, 3)) / 6, rng.standard_normal(3) / 10]
    onehot = np.eye(3)[ys]
    results = []
    for dev in ("cpu", "cuda"):
        w1, b1, w2, b2 = [cgrad.tensor(p, dtype=dtype, device=dev, requires_grad=True) for p in params]
        x = cgrad.tensor(xs, dtype=dtype, device=dev)
        t = cgrad.tensor(onehot, dtype=dtype, device=dev)
        h = (x @ w1 + b1).relu()
        logits = h @ w2 + b2
        loss = -(logits.log_softmax(1) * t).sum(1).mean() + 1e-3 * (w1 * w1).sum()
        loss.backward()
        results.append((loss, logits, [w1.grad, b1.grad, w2.grad, b2.grad]))
    (lc, zc, gc), (ld, zd, gd) = results
    assert ld.device == "cuda"
    assert_same_values(lc, ld, **tol)
    assert_same_values(zc, zd, **tol)
    for g, gdev in zip(gc, gd):
        assert gdev.device == "cuda"
        assert_same_values(g, gdev, **tol)


# ------------------------------------------------- central differences, torch
def _through_device(fn):
    """fn run on 'cuda', seen from the cpu: gradcheck perturbs host inputs
    (it reads them with .numpy()), and .to / .cpu are differentiable, so the
    gradients checked are the device's."""
    return lambda *xs: fn(*[x.to("cuda") for x in xs]).cpu()


@pytest.mark.parametrize("fn,shapes", [
    (lambda x: x.sum((0, 2)), [(2, 3, 4)]),
    (lambda x: x.mean(1, keepdim=True), [(2, 3, 4)]),
    (lambda x: x.var(0, correction=1), [(3, 4)]),
    (lambda x: x.amax(1), [(3, 4)]),
    (lambda x: x.logsumexp((0, 1)), [(3, 4)]),
    (lambda x: x.softmax(0), [(3, 4)]),
    (lambda x: x.log_softmax(1), [(3, 4)]),
    (lambda a, b: a @ b, [(2, 3, 4), (4, 2)]),
    (lambda a, b: a @ b, [(4,), (3, 4, 2)]),
    (lambda a, b: sum_to_size(a * b, 1, 4), [(3, 4), (4,)]),
])
def test_device_gradients_pass_gradcheck(fn, shapes):
    rng = np.random.default_rng(0)
    xs = [cgrad.tensor(rng.standard_normal(s), dtype=cgrad.float64, requires_grad=True) for s in shapes]
    assert cgrad.autograd.gradcheck(_through_device(fn), xs)


def test_device_gradients_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((5, 3, 4)), rng.standard_normal((4, 6))
    ad = cgrad.tensor(a, device="cuda", requires_grad=True)
    bd = cgrad.tensor(b, device="cuda", requires_grad=True)
    at = torch.tensor(a, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    y = (ad @ bd).log_softmax(-1).amax(1).sum() + (ad @ bd).var(0, correction=1).logsumexp(1).mean()
    yt = (at @ bt).log_softmax(-1).amax(1).sum() + (at @ bt).var(0, correction=1).logsumexp(1).mean()
    y.backward()
    yt.backward()
    np.testing.assert_allclose(host(y), yt.item(), rtol=1e-12)
    np.testing.assert_allclose(host(ad.grad), at.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(bd.grad), bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn,shapes", [
    (lambda x: x.softmax(1), [(2, 3)]),
    (lambda x: x.log_softmax(0), [(3, 2)]),
    (lambda x: x.logsumexp(1), [(2, 3)]),
    (lambda x: x.var(1, correction=1), [(2, 3)]),
    (lambda a, b: (a @ b).tanh(), [(2, 3), (3, 2)]),
])
def test_device_second_derivatives_pass_gradgradcheck(fn, shapes):
    rng = np.random.default_rng(1)
    xs = [cgrad.tensor(rng.standard_normal(s), dtype=cgrad.float64, requires_grad=True) for s in shapes]
    assert cgrad.autograd.gradgradcheck(_through_device(fn), xs)
